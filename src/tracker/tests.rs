use super::rules::{aged_out, new_peer_state, session_end, session_end_pinged};
use super::*;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::backend::InterfaceFilter;
use crate::event::{ChangedField, Event, EventKind};
use crate::model::DriverKind;
use crate::model::{Interface, Peer, PingStatus, Pings, PublicKey, Snapshot};

const T0: i64 = 1_767_607_200; // 2026-01-05T10:00:00Z

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(T0 + secs, 0).unwrap()
}

fn key(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

fn settings() -> Settings {
    Settings {
        connect_threshold: TimeDelta::seconds(180),
        endpoint_updates: true,
        announce_on_start: Announce::Connected,
        host: "vpn1".into(),
        filter: Default::default(),
    }
}

fn peer(n: u8, hs: Option<i64>, rx: u64, tx: u64) -> Peer {
    Peer {
        public_key: key(n),
        endpoint: Some(format!("198.51.100.{n}:51820").parse().unwrap()),
        allowed_ips: vec![format!("10.8.0.{n}/32").parse().unwrap()].into(),
        persistent_keepalive: 0,
        has_preshared_key: false,
        last_handshake: hs.map(at),
        rx_bytes: rx,
        tx_bytes: tx,
    }
}

fn iface(name: &str, peers: Vec<Peer>) -> Interface {
    Interface {
        name: name.into(),
        public_key: Some(key(200)),
        listen_port: 51820,
        fwmark: 0,
        driver: DriverKind::Userspace,
        addresses: Vec::new(),
        mtu: None,
        peers,
    }
}

fn snap(interfaces: Vec<Interface>) -> Snapshot {
    let mut s = Snapshot {
        interfaces,
        unreadable: Vec::new(),
    };
    s.normalize();
    s
}

/// `entity.kind:identifier` of each event, for compact assertions.
fn names(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let who = match &e.peer {
                Some(p) => format!("{}", p.peer.public_key.0[0]),
                None => e.interface.name.clone(),
            };
            format!("{}:{}", e.filter_name(), who)
        })
        .collect()
}

/// Baseline with `announce_on_start: none`, then one more poll.
fn step(first: &Snapshot, first_at: i64, second: &Snapshot, second_at: i64) -> (State, Vec<Event>) {
    let quiet = Settings {
        announce_on_start: Announce::None,
        ..settings()
    };
    let (state, events) = track(None, first, at(first_at), &quiet);
    assert!(events.is_empty());
    track(Some(state), second, at(second_at), &settings())
}

#[test]
fn connected_iff_handshake_within_threshold() {
    let thr = TimeDelta::seconds(180);
    assert!(is_connected(Some(at(0)), at(180), thr));
    assert!(!is_connected(Some(at(0)), at(181), thr));
    assert!(
        is_connected(Some(at(500)), at(0), thr),
        "future counts as age 0"
    );
    assert!(!is_connected(None, at(0), thr));
}

#[test]
fn first_start_connected_announces_connected_peers_only() {
    let s = snap(vec![iface(
        "wg0",
        vec![
            peer(1, Some(-10), 5, 6),
            peer(2, None, 0, 0),
            peer(3, Some(-400), 0, 0),
        ],
    )]);
    let (state, events) = track(None, &s, at(0), &settings());
    assert_eq!(names(&events), ["peer.connect:1"]);
    let session = events[0].session.unwrap();
    assert_eq!(session.started_at, at(-10));
    assert_eq!(events[0].time, at(-10));
    assert_eq!(
        (session.rx_bytes, session.tx_bytes),
        (0, 0),
        "bytes counted from now"
    );
    assert_eq!(state.connected_count(), 1);
    assert_eq!(state.peer_count(), 3);
}

#[test]
fn first_start_all_creates_everything_then_connects() {
    let s = snap(vec![iface(
        "wg0",
        vec![peer(2, None, 0, 0), peer(1, Some(-10), 0, 0)],
    )]);
    let all = Settings {
        announce_on_start: Announce::All,
        ..settings()
    };
    let (_, events) = track(None, &s, at(0), &all);
    assert_eq!(
        names(&events),
        [
            "interface.create:wg0",
            "peer.create:1",
            "peer.connect:1",
            "peer.create:2"
        ]
    );
}

#[test]
fn first_start_none_is_silent_but_remembers_connections() {
    let s = snap(vec![iface("wg0", vec![peer(1, Some(-10), 0, 0)])]);
    let (state, events) = step(&s, 0, &s, 169);
    assert!(events.is_empty());
    assert!(state.is_peer_connected("wg0", &key(1)));
    let (_, events) = track(Some(state), &s, at(171), &settings());
    assert_eq!(names(&events), ["peer.disconnect:1"]);
    assert_eq!(events[0].time, at(170), "ends when the handshake aged out");
}

#[test]
fn new_handshake_connects_and_aging_disconnects_with_session_figures() {
    let before = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
    let after = snap(vec![iface("wg0", vec![peer(1, Some(3), 1860, 10824)])]);
    let (state, events) = step(&before, 0, &after, 5);
    assert_eq!(names(&events), ["peer.connect:1"]);
    assert_eq!(events[0].time, at(3));
    let s = events[0].session.unwrap();
    assert_eq!((s.started_at, s.ended_at), (at(3), None));
    assert_eq!((s.rx_bytes, s.tx_bytes), (1860, 10824));

    let later = snap(vec![iface("wg0", vec![peer(1, Some(3), 5000, 20000)])]);
    let (state, events) = track(Some(state), &later, at(183), &settings());
    assert!(events.is_empty(), "180 s is still connected");
    let (state, events) = track(Some(state), &later, at(184), &settings());
    assert_eq!(names(&events), ["peer.disconnect:1"]);
    assert_eq!(events[0].time, at(183));
    let s = events[0].session.unwrap();
    assert_eq!((s.started_at, s.ended_at), (at(3), Some(at(183))));
    assert_eq!((s.rx_bytes, s.tx_bytes), (5000, 20000));
    assert!(!state.is_peer_connected("wg0", &key(1)));
}

#[test]
fn rehandshakes_within_threshold_never_flap() {
    let mut state = None;
    let mut all = Vec::new();
    // A handshake every 120 s, polled every 5 s for an hour.
    for t in (0..3600).step_by(5) {
        let hs = t - t % 120;
        let s = snap(vec![iface(
            "wg0",
            vec![peer(1, Some(hs), t as u64, t as u64)],
        )]);
        let (next, events) = track(state, &s, at(t), &settings());
        state = Some(next);
        all.extend(events);
    }
    assert_eq!(names(&all), ["peer.connect:1"]);
}

#[test]
fn gap_rule_reports_the_downtime_between_two_handshakes() {
    let before = snap(vec![iface("wg0", vec![peer(1, Some(0), 100, 100)])]);
    let after = snap(vec![iface("wg0", vec![peer(1, Some(500), 300, 400)])]);
    let (_, events) = step(&before, 0, &after, 510);
    assert_eq!(names(&events), ["peer.disconnect:1", "peer.connect:1"]);
    assert_eq!(events[0].time, at(180));
    assert_eq!(events[0].session.unwrap().ended_at, Some(at(180)));
    assert_eq!(events[1].time, at(500));
    let s = events[1].session.unwrap();
    assert_eq!(
        (s.rx_bytes, s.tx_bytes),
        (200, 300),
        "from the previous counters"
    );
    assert!(events[0].sequence < events[1].sequence);
}

#[test]
fn gap_rule_across_a_restart_uses_the_saved_state() {
    let before = snap(vec![iface("wg0", vec![peer(1, Some(0), 0, 0)])]);
    let (state, _) = track(None, &before, at(0), &settings());
    let saved = serde_json::to_string(&state).unwrap();
    let restored: State = serde_json::from_str(&saved).unwrap();
    assert_eq!(restored, state);
    // Daemon down for an hour; the peer re-connected 10 s ago.
    let after = snap(vec![iface("wg0", vec![peer(1, Some(3590), 0, 0)])]);
    let (_, events) = track(Some(restored), &after, at(3600), &settings());
    assert_eq!(names(&events), ["peer.disconnect:1", "peer.connect:1"]);
}

#[test]
fn connect_and_disconnect_between_two_polls_are_both_reported() {
    let before = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
    let after = snap(vec![iface("wg0", vec![peer(1, Some(100), 10, 10)])]);
    let (state, events) = step(&before, 0, &after, 1000);
    assert_eq!(names(&events), ["peer.connect:1", "peer.disconnect:1"]);
    assert_eq!(events[0].time, at(100));
    assert_eq!(events[1].time, at(280));
    assert!(!state.is_peer_connected("wg0", &key(1)));
    let (_, events) = track(Some(state), &after, at(1005), &settings());
    assert!(events.is_empty(), "reported once");
}

#[test]
fn counter_reset_restarts_the_session_without_events() {
    let before = snap(vec![iface("wg0", vec![peer(1, Some(0), 1000, 1000)])]);
    let reset = snap(vec![iface("wg0", vec![peer(1, Some(10), 50, 60)])]);
    let (state, events) = step(&before, 0, &reset, 12);
    assert!(events.is_empty(), "{:?}", names(&events));
    let p = &state.interfaces["wg0"].peers[&key(1)];
    assert!(p.connected);
    assert_eq!(p.session_start, Some(at(10)), "LastSessionStart moves");
    let (_, events) = track(Some(state), &reset, at(300), &settings());
    let s = events[0].session.unwrap();
    assert_eq!(s.started_at, at(10));
    assert_eq!(
        (s.rx_bytes, s.tx_bytes),
        (50, 60),
        "measured from the reset"
    );
}

#[test]
fn handshake_going_to_never_while_connected_disconnects() {
    let before = snap(vec![iface("wg0", vec![peer(1, Some(0), 10, 10)])]);
    let after = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
    let (_, events) = step(&before, 0, &after, 5);
    assert_eq!(names(&events), ["peer.disconnect:1"]);
    assert_eq!(events[0].time, at(5));
}

#[test]
fn peer_appears_connected_and_vanishes() {
    let empty = snap(vec![iface("wg0", vec![])]);
    let added = snap(vec![iface("wg0", vec![peer(1, Some(4), 0, 0)])]);
    let (state, events) = step(&empty, 0, &added, 5);
    assert_eq!(names(&events), ["peer.create:1", "peer.connect:1"]);
    assert_eq!(events[0].sequence, 1);
    assert_eq!(events[1].sequence, 2);
    let (state, events) = track(Some(state), &empty, at(10), &settings());
    assert_eq!(names(&events), ["peer.disconnect:1", "peer.delete:1"]);
    assert_eq!(events[0].time, at(10), "cut short by the removal");
    assert_eq!(events[1].sequence, 4);
    assert_eq!(state.peer_count(), 0);
}

#[test]
fn config_changes_give_updates_with_changed_fields() {
    let before = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
    let mut p = peer(1, None, 0, 0);
    p.allowed_ips.push("10.9.0.0/24".parse().unwrap());
    p.persistent_keepalive = 25;
    p.has_preshared_key = true;
    p.endpoint = Some("203.0.113.9:4000".parse().unwrap());
    let after = snap(vec![iface("wg0", vec![p.clone()])]);
    let (state, events) = step(&before, 0, &after, 5);
    assert_eq!(names(&events), ["peer.update:1"]);
    assert_eq!(
        events[0].changed,
        [
            ChangedField::Endpoint,
            ChangedField::AllowedIps,
            ChangedField::PersistentKeepalive,
            ChangedField::PresharedKey
        ]
    );
    assert_eq!(
        events[0].peer.as_ref().unwrap().peer,
        p,
        "shows the new config"
    );
    assert_eq!(events[0].peer.as_ref().unwrap().updated_at, at(5));
    let (_, events) = track(Some(state), &after, at(10), &settings());
    assert!(events.is_empty());
}

#[test]
fn first_endpoint_learnt_at_the_first_handshake_comes_with_the_connect() {
    let mut fresh = peer(1, None, 0, 0);
    fresh.endpoint = None;
    let before = snap(vec![iface("wg0", vec![fresh])]);
    let after = snap(vec![iface("wg0", vec![peer(1, Some(4), 0, 0)])]);
    let (state, events) = step(&before, 0, &after, 5);
    assert_eq!(names(&events), ["peer.connect:1"], "no update before it");
    let endpoint = Some("198.51.100.1:51820".parse().unwrap());
    assert_eq!(events[0].peer.as_ref().unwrap().peer.endpoint, endpoint);
    assert_eq!(
        state.interfaces["wg0"].peers[&key(1)].peer.endpoint,
        endpoint,
        "and is remembered"
    );
    let (_, events) = track(Some(state), &after, at(10), &settings());
    assert!(events.is_empty(), "reported once");
}

#[test]
fn endpoint_set_without_a_handshake_is_an_update() {
    let mut fresh = peer(1, None, 0, 0);
    fresh.endpoint = None;
    let before = snap(vec![iface("wg0", vec![fresh])]);
    let after = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
    let (_, events) = step(&before, 0, &after, 5);
    assert_eq!(names(&events), ["peer.update:1"]);
    assert_eq!(events[0].changed, [ChangedField::Endpoint]);
}

#[test]
fn endpoint_that_disappears_is_an_update_showing_none() {
    // A peer re-created without an endpoint between two polls.
    let before = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
    let mut gone = peer(1, None, 0, 0);
    gone.endpoint = None;
    let after = snap(vec![iface("wg0", vec![gone])]);
    let (state, events) = step(&before, 0, &after, 5);
    assert_eq!(names(&events), ["peer.update:1"]);
    assert_eq!(events[0].changed, [ChangedField::Endpoint]);
    assert_eq!(events[0].peer.as_ref().unwrap().peer.endpoint, None);
    assert_eq!(state.interfaces["wg0"].peers[&key(1)].peer.endpoint, None);
}

#[test]
fn first_endpoint_is_silent_when_endpoint_updates_are_off() {
    let quiet = Settings {
        endpoint_updates: false,
        ..settings()
    };
    let mut fresh = peer(1, None, 0, 0);
    fresh.endpoint = None;
    let before = snap(vec![iface("wg0", vec![fresh])]);
    let (state, _) = track(None, &before, at(0), &quiet);
    let after = snap(vec![iface("wg0", vec![peer(1, Some(4), 0, 0)])]);
    let (state, events) = track(Some(state), &after, at(5), &quiet);
    assert_eq!(names(&events), ["peer.connect:1"]);
    let mut gone = peer(1, Some(4), 0, 0);
    gone.endpoint = None;
    let (_, events) = track(
        Some(state),
        &snap(vec![iface("wg0", vec![gone])]),
        at(9),
        &quiet,
    );
    assert!(events.is_empty(), "{:?}", names(&events));
}

#[test]
fn roaming_can_be_ignored() {
    let before = snap(vec![iface("wg0", vec![peer(1, Some(0), 0, 0)])]);
    let mut p = peer(1, Some(0), 0, 0);
    p.endpoint = Some("203.0.113.9:4000".parse().unwrap());
    let after = snap(vec![iface("wg0", vec![p])]);
    let quiet = Settings {
        endpoint_updates: false,
        announce_on_start: Announce::None,
        ..settings()
    };
    let (state, _) = track(None, &before, at(0), &quiet);
    let (state, events) = track(Some(state), &after, at(5), &quiet);
    assert!(events.is_empty());
    let endpoint = state.interfaces["wg0"].peers[&key(1)].peer.endpoint;
    assert_eq!(
        endpoint,
        Some("203.0.113.9:4000".parse().unwrap()),
        "still tracked"
    );
}

#[test]
fn interface_lifecycle_and_order_within_a_poll() {
    let empty = snap(vec![]);
    let mut wg1 = iface("wg1", vec![peer(2, Some(1), 0, 0), peer(1, None, 0, 0)]);
    let wg0 = iface("wg0", vec![peer(9, None, 0, 0)]);
    let (state, events) = step(&empty, 0, &snap(vec![wg1.clone(), wg0.clone()]), 5);
    assert_eq!(
        names(&events),
        [
            "interface.create:wg0",
            "peer.create:9",
            "interface.create:wg1",
            "peer.create:1",
            "peer.create:2",
            "peer.connect:2"
        ]
    );
    let mut ids: Vec<_> = events.iter().map(|e| e.id).collect();
    let sorted = ids.clone();
    ids.sort();
    assert_eq!(ids, sorted, "ids are time-ordered within a poll");

    wg1.listen_port = 51900;
    wg1.fwmark = 7;
    let (state, events) = track(
        Some(state),
        &snap(vec![wg1, wg0.clone()]),
        at(10),
        &settings(),
    );
    assert_eq!(names(&events), ["interface.update:wg1"]);
    assert_eq!(
        events[0].changed,
        [ChangedField::ListenPort, ChangedField::Fwmark]
    );
    assert_eq!(events[0].interface.listen_port, 51900);
    assert_eq!(events[0].sequence, 2);

    let (state, events) = track(Some(state), &snap(vec![wg0]), at(15), &settings());
    assert_eq!(
        names(&events),
        [
            "peer.delete:1",
            "peer.disconnect:2",
            "peer.delete:2",
            "interface.delete:wg1"
        ]
    );
    assert_eq!(state.interfaces.len(), 1);
}

#[test]
fn unreadable_interface_keeps_its_state() {
    let s = snap(vec![iface("wg0", vec![peer(1, Some(0), 0, 0)])]);
    let (state, _) = track(None, &s, at(0), &settings());
    let blind = Snapshot {
        interfaces: Vec::new(),
        unreadable: vec!["wg0".into()],
    };
    let (state, events) = track(Some(state), &blind, at(5), &settings());
    assert!(events.is_empty());
    assert!(state.is_peer_connected("wg0", &key(1)));
    let (_, events) = track(Some(state), &s, at(10), &settings());
    assert!(events.is_empty(), "nothing reported twice");
}

/// Regression: `last_handshake_time_sec=8210266876700` (99 s before
/// chrono's last instant) then the peer vanishing made `hs + threshold`
/// panic. Every path that derives a time from a handshake saturates.
#[test]
fn handshakes_at_the_end_of_time_do_not_overflow() {
    let reported = DateTime::from_timestamp(8_210_266_876_700, 0).unwrap();
    let extremes = [reported, DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC];
    let thresholds = [TimeDelta::seconds(180), TimeDelta::MAX];
    for hs in extremes {
        for threshold in thresholds {
            let s = Settings {
                connect_threshold: threshold,
                ..settings()
            };
            let mut far = peer(1, None, 0, 0);
            far.last_handshake = Some(hs);
            let with = |peers: Vec<Peer>| snap(vec![iface("wg0", peers)]);
            let ctx = format!("handshake {hs}, threshold {threshold}");

            // First start, then the peer vanishes.
            let (state, _) = track(None, &with(vec![far.clone()]), at(0), &s);
            let (_, events) = track(Some(state.clone()), &with(vec![]), at(5), &s);
            assert_eq!(
                names(&events[events.len() - 1..]),
                ["peer.delete:1"],
                "{ctx}"
            );
            assert!(events.iter().all(|e| e.time <= at(5)), "{ctx}");

            // The interface vanishes.
            let (_, events) = track(Some(state), &snap(vec![]), at(5), &s);
            assert_eq!(
                names(&events[events.len() - 1..]),
                ["interface.delete:wg0"],
                "{ctx}"
            );

            // A new peer (connect, and disconnect if aged out).
            let (state, events) = track(
                Some(track(None, &with(vec![]), at(0), &s).0),
                &with(vec![far.clone()]),
                at(5),
                &s,
            );
            assert_eq!(
                names(&events[..2]),
                ["peer.create:1", "peer.connect:1"],
                "{ctx}"
            );

            // Pings: the session ends at the later of aging out and the last answer.
            let down = pings(&[(1, false, Some(3))]);
            let gone = track_changes_with_pings(
                Some(state.clone()),
                &with(vec![]),
                Some(&down),
                at(9),
                &s,
            );
            assert!(gone.events.iter().all(|e| e.time <= at(9)), "{ctx}");
            let kept = {
                let mut p = far.clone();
                p.last_handshake = Some(at(1));
                p.rx_bytes = 0;
                p
            };
            let _ =
                track_changes_with_pings(Some(state), &with(vec![kept]), Some(&down), at(400), &s);

            // Gap rule: a connected peer's handshake jumps.
            let (state, _) = track(None, &with(vec![peer(1, Some(0), 0, 0)]), at(0), &s);
            let (state, _) = track(Some(state), &with(vec![far.clone()]), at(5), &s);
            // And back from the extreme to an ordinary time (a reset).
            let _ = track(
                Some(state),
                &with(vec![peer(1, Some(6), 0, 0)]),
                at(400),
                &s,
            );

            // Connected and gone between two polls.
            let (state, _) = track(None, &with(vec![peer(1, None, 0, 0)]), at(0), &s);
            let _ = track(Some(state), &with(vec![far.clone()]), at(5), &s);
        }
    }
}

#[test]
fn session_end_saturates_instead_of_overflowing() {
    let last = DateTime::<Utc>::MAX_UTC;
    let hs = last - TimeDelta::seconds(99);
    assert_eq!(aged_out(hs, TimeDelta::seconds(180)), last);
    assert_eq!(
        aged_out(hs, TimeDelta::seconds(9)),
        hs + TimeDelta::seconds(9)
    );
    assert_eq!(session_end(Some(hs), at(0), TimeDelta::seconds(180)), at(0));
    assert_eq!(
        session_end_pinged(Some(hs), Some(at(-3)), at(0), TimeDelta::seconds(180)),
        at(0)
    );
    let first = DateTime::<Utc>::MIN_UTC;
    assert_eq!(
        aged_out(first + TimeDelta::seconds(1), -TimeDelta::seconds(5)),
        first
    );
}

/// Logs written while `f` runs (DEBUG and up), as text.
fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

#[test]
fn duplicate_peer_keys_keep_the_first_with_one_warning() {
    let all = Settings {
        announce_on_start: Announce::All,
        ..settings()
    };
    let mut twin = peer(1, Some(-400), 50, 50);
    twin.allowed_ips = vec!["10.99.0.0/16".parse().unwrap()].into();
    // First start.
    let first = snap(vec![iface("wg0", vec![peer(1, None, 0, 0), twin.clone()])]);
    let ((state, events), logs) = logs_of(|| track(None, &first, at(0), &all));
    assert_eq!(names(&events), ["interface.create:wg0", "peer.create:1"]);
    assert_eq!(
        state.interfaces["wg0"].peers[&key(1)].peer,
        peer(1, None, 0, 0)
    );
    assert_eq!(logs.matches("WARN").count(), 1, "{logs}");
    assert!(logs.contains("interface=wg0"), "{logs}");

    // A new interface.
    let dup = snap(vec![
        iface("wg0", vec![peer(1, None, 0, 0)]),
        iface("wg1", vec![peer(2, None, 0, 0), peer(2, Some(0), 9, 9)]),
    ]);
    let (state, events) = track(Some(state), &dup, at(1), &all);
    assert_eq!(names(&events), ["interface.create:wg1", "peer.create:2"]);

    // A known interface: a new key twice, a known key twice.
    let mut again = dup.clone();
    again.interfaces[0].peers = vec![
        peer(1, None, 0, 0),
        peer(3, None, 0, 0),
        twin,
        peer(3, Some(0), 9, 9),
    ];
    let ((state, events), logs) = logs_of(|| track(Some(state), &again, at(2), &all));
    assert_eq!(names(&events), ["peer.create:3"]);
    assert_eq!(logs.matches("WARN").count(), 2, "one per interface: {logs}");
    let wg0 = &state.interfaces["wg0"].peers;
    assert_eq!(wg0.len(), 2);
    assert_eq!(wg0[&key(1)].peer, peer(1, None, 0, 0));
    assert_eq!(wg0[&key(3)].peer, peer(3, None, 0, 0));

    // No churn while the backend keeps listing them twice.
    let (state2, events) = track(Some(state.clone()), &again, at(3), &all);
    assert!(events.is_empty(), "{:?}", names(&events));
    assert_eq!(state2.interfaces, state.interfaces);
}

fn watching(include: &[&str], exclude: &[&str]) -> Settings {
    Settings {
        filter: InterfaceFilter {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        },
        ..settings()
    }
}

#[test]
fn an_interface_leaving_the_filter_is_forgotten_without_events() {
    let both = snap(vec![
        iface("wg0", vec![peer(1, Some(-5), 0, 0)]),
        iface("wg1", vec![peer(2, Some(-5), 0, 0)]),
    ]);
    let (state, _) = track(None, &both, at(0), &settings());
    // The backend no longer returns wg1 (it applies the filter too).
    let narrow = watching(&[], &["wg1"]);
    let only_wg0 = snap(vec![iface("wg0", vec![peer(1, Some(-5), 0, 0)])]);
    let (tracked, logs) = logs_of(|| track_changes(Some(state), &only_wg0, at(5), &narrow));
    assert!(tracked.events.is_empty(), "{:?}", names(&tracked.events));
    assert_eq!(tracked.state.interfaces.keys().collect::<Vec<_>>(), ["wg0"]);
    assert_eq!(tracked.changes.removed_interfaces, ["wg1"], "its rows go");
    assert!(tracked.changes.meta, "the new filter is saved");
    assert_eq!(tracked.state.filter.as_ref(), Some(&narrow.filter));
    assert!(
        logs.contains("INFO") && logs.contains("no longer watched"),
        "{logs}"
    );
    assert!(logs.contains("interface=wg1"), "{logs}");

    // A backend that still returns it: ignored, not re-created.
    let (state, events) = track(Some(tracked.state), &both, at(6), &narrow);
    assert!(events.is_empty(), "{:?}", names(&events));
    assert!(!state.interfaces.contains_key("wg1"));

    // Let back in: a first start for wg1 (announce_on_start: connected).
    let (state, events) = track(Some(state), &both, at(10), &settings());
    assert_eq!(names(&events), ["peer.connect:2"]);
    assert!(state.is_peer_connected("wg1", &key(2)));
    let (_, events) = track(Some(state), &both, at(15), &settings());
    assert!(events.is_empty(), "{:?}", names(&events));
}

#[test]
fn an_interface_entering_the_filter_is_baselined_per_announce_on_start() {
    let wg0 = iface("wg0", vec![]);
    let wg1 = iface("wg1", vec![peer(2, Some(-5), 0, 0), peer(3, None, 0, 0)]);
    for (announce, expected) in [
        (Announce::Connected, vec!["peer.connect:2"]),
        (Announce::None, vec![]),
        (
            Announce::All,
            vec![
                "interface.create:wg1",
                "peer.create:2",
                "peer.connect:2",
                "peer.create:3",
            ],
        ),
    ] {
        let narrow = Settings {
            announce_on_start: announce,
            ..watching(&["wg0"], &[])
        };
        let wide = Settings {
            announce_on_start: announce,
            ..settings()
        };
        let (state, _) = track(None, &snap(vec![wg0.clone()]), at(0), &narrow);
        let t = track_changes(
            Some(state),
            &snap(vec![wg0.clone(), wg1.clone()]),
            at(5),
            &wide,
        );
        assert_eq!(names(&t.events), expected, "{announce:?}");
        assert!(t.state.is_peer_connected("wg1", &key(2)));
        // Saved incrementally: the interface and its peers are listed.
        assert_eq!(t.changes.interfaces, ["wg1"]);
        assert_eq!(t.changes.peers.len(), 2);
    }
}

#[test]
fn an_interface_created_after_the_filter_widened_is_created() {
    let narrow = watching(&["wg0"], &[]);
    let wg0 = iface("wg0", vec![]);
    let (state, _) = track(None, &snap(vec![wg0.clone()]), at(0), &narrow);
    let (state, events) = track(Some(state), &snap(vec![wg0.clone()]), at(5), &settings());
    assert!(events.is_empty());
    let wg1 = iface("wg1", vec![peer(2, None, 0, 0)]);
    let (_, events) = track(Some(state), &snap(vec![wg0, wg1]), at(10), &settings());
    assert_eq!(names(&events), ["interface.create:wg1", "peer.create:2"]);
}

#[test]
fn a_state_without_a_saved_filter_takes_the_current_one() {
    let wg0 = iface("wg0", vec![]);
    let (mut state, _) = track(None, &snap(vec![wg0.clone()]), at(0), &settings());
    state.filter = None; // saved by an older wghook
    let wg1 = iface("wg1", vec![peer(2, None, 0, 0)]);
    let t = track_changes(Some(state), &snap(vec![wg0, wg1]), at(5), &settings());
    assert_eq!(names(&t.events), ["interface.create:wg1", "peer.create:2"]);
    assert!(t.changes.meta, "the filter is saved from now on");
}

#[test]
fn an_interface_unreadable_on_the_first_start_is_baselined_when_readable() {
    let wg0 = iface("wg0", vec![]);
    let blind = Snapshot {
        unreadable: vec!["wg1".into()],
        ..snap(vec![wg0.clone()])
    };
    let first = track_changes(None, &blind, at(0), &settings());
    assert!(first.events.is_empty());
    assert!(first.state.unbaselined.contains("wg1"));
    // Still unreadable: remembered, nothing to save.
    let still = track_changes(Some(first.state), &blind, at(5), &settings());
    assert!(still.changes.is_empty(), "{:?}", still.changes);
    // Restart in between: the saved state remembers it.
    let json = serde_json::to_string(&still.state).unwrap();
    let restored: State = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, still.state);

    let wg1 = iface(
        "wg1",
        vec![peer(2, Some(8), 0, 0), peer(3, Some(-900), 0, 0)],
    );
    let readable = snap(vec![wg0.clone(), wg1.clone()]);
    let t = track_changes(Some(restored), &readable, at(10), &settings());
    assert_eq!(
        names(&t.events),
        ["peer.connect:2"],
        "no create, no replayed history"
    );
    assert!(t.state.unbaselined.is_empty());
    assert!(t.changes.meta);
    let (_, events) = track(Some(t.state), &readable, at(15), &settings());
    assert!(events.is_empty());
}

#[test]
fn an_unread_interface_that_vanishes_is_created_when_it_comes_back() {
    let wg0 = iface("wg0", vec![]);
    let blind = Snapshot {
        unreadable: vec!["wg1".into()],
        ..snap(vec![wg0.clone()])
    };
    let (state, _) = track(None, &blind, at(0), &settings());
    let gone = track_changes(Some(state), &snap(vec![wg0.clone()]), at(5), &settings());
    assert!(gone.events.is_empty());
    assert!(gone.state.unbaselined.is_empty());
    assert!(gone.changes.meta);
    let wg1 = iface("wg1", vec![peer(2, None, 0, 0)]);
    let (_, events) = track(Some(gone.state), &snap(vec![wg0, wg1]), at(10), &settings());
    assert_eq!(names(&events), ["interface.create:wg1", "peer.create:2"]);
}

#[test]
fn events_carry_host_and_no_secrets() {
    let empty = snap(vec![iface("wg0", vec![])]);
    let mut p = peer(1, None, 0, 0);
    p.has_preshared_key = true;
    let (_, events) = step(&empty, 0, &snap(vec![iface("wg0", vec![p])]), 5);
    assert_eq!(events[0].host, "vpn1");
    assert_eq!(events[0].time, at(5));
    let json = serde_json::to_string(&events[0]).unwrap();
    assert!(json.contains("\"has_preshared_key\":true"));
}

#[test]
fn peer_order_changes_are_not_events_and_the_map_stays_consistent() {
    let peers: Vec<Peer> = (1..=6).map(|n| peer(n, Some(-5), 0, 0)).collect();
    let (mut state, _) = track(
        None,
        &snap(vec![iface("wg0", peers.clone())]),
        at(0),
        &settings(),
    );
    // wireguard-go lists peers in a different order on every call.
    for rotation in 1..6 {
        let mut shuffled = peers.clone();
        shuffled.rotate_left(rotation);
        shuffled.swap(0, 3);
        let (next, events) = track(
            Some(state),
            &snap(vec![iface("wg0", shuffled)]),
            at(1),
            &settings(),
        );
        assert!(events.is_empty(), "{:?}", names(&events));
        state = next;
    }
    // Remove from the middle, add one: lookups stay right.
    let mut fewer = peers.clone();
    fewer.remove(2);
    fewer.push(peer(9, None, 0, 0));
    let (state, events) = track(
        Some(state),
        &snap(vec![iface("wg0", fewer)]),
        at(2),
        &settings(),
    );
    assert_eq!(
        names(&events),
        ["peer.disconnect:3", "peer.delete:3", "peer.create:9"]
    );
    let map = &state.interfaces["wg0"].peers;
    assert_eq!(map.len(), 6);
    for n in [1, 2, 4, 5, 6, 9] {
        assert_eq!(map[&key(n)].peer.public_key, key(n));
    }
    assert!(map.get(&key(3)).is_none());
    let json = serde_json::to_string(&state).unwrap();
    assert_eq!(serde_json::from_str::<State>(&json).unwrap(), state);
}

/// Ping results for interface `wg0`: (peer, pingable, last answered ping).
fn pings(results: &[(u8, bool, Option<i64>)]) -> Pings {
    let peers = results
        .iter()
        .map(|&(n, pingable, last)| {
            let status = PingStatus {
                pingable,
                last_ping: last.map(at),
            };
            (key(n), status)
        })
        .collect();
    Pings::from([("wg0".to_string(), peers)])
}

#[test]
fn pingable_without_handshake_is_connected_when_ping_checks_are_on() {
    let s = settings();
    let never = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
    let (base, events) = track(None, &never, at(0), &s);
    assert!(events.is_empty());

    // Ping checks off: an answering peer without handshake stays down.
    let off = track_changes(Some(base.clone()), &never, at(10), &s);
    assert!(off.events.is_empty());
    assert!(!off.state.is_peer_connected("wg0", &key(1)));

    let up = pings(&[(1, true, Some(10))]);
    let on = track_changes_with_pings(Some(base), &never, Some(&up), at(10), &s);
    assert_eq!(names(&on.events), ["peer.connect:1"]);
    let connect = &on.events[0];
    assert_eq!(
        connect.time,
        at(10),
        "the session starts at the answered ping"
    );
    let info = connect.peer.as_ref().unwrap();
    assert!(info.pingable);
    assert_eq!(info.last_ping, Some(at(10)));
    assert_eq!(info.peer.last_handshake, None);
    assert!(on.state.is_peer_connected("wg0", &key(1)));
    assert_eq!(on.changes.peers, [("wg0".to_string(), key(1))]);

    // Still answering: nothing new.
    let up = pings(&[(1, true, Some(40))]);
    let same = track_changes_with_pings(Some(on.state), &never, Some(&up), at(40), &s);
    assert!(same.events.is_empty());

    // No answer any more: disconnected at the last answered ping.
    let down = pings(&[(1, false, Some(40))]);
    let gone = track_changes_with_pings(Some(same.state), &never, Some(&down), at(70), &s);
    assert_eq!(names(&gone.events), ["peer.disconnect:1"]);
    let disconnect = &gone.events[0];
    assert_eq!(disconnect.time, at(40));
    let info = disconnect.peer.as_ref().unwrap();
    assert!(!info.pingable);
    assert_eq!(info.last_ping, Some(at(40)));
    assert_eq!(
        disconnect.session.map(|s| (s.started_at, s.ended_at)),
        Some((at(10), Some(at(40))))
    );
}

#[test]
fn ping_keeps_a_session_whose_handshake_aged_out() {
    let s = settings();
    let one = snap(vec![iface("wg0", vec![peer(1, Some(0), 5, 5)])]);
    let (base, _) = track(None, &one, at(0), &s);
    assert!(base.is_peer_connected("wg0", &key(1)));
    // 200 s after the handshake (threshold 180 s), but it answers ping.
    let up = pings(&[(1, true, Some(200))]);
    let kept = track_changes_with_pings(Some(base), &one, Some(&up), at(200), &s);
    assert!(kept.events.is_empty(), "{:?}", names(&kept.events));
    assert!(kept.state.is_peer_connected("wg0", &key(1)));
    // Then it stops answering: the session ends at the last answer, not
    // when the handshake aged out.
    let down = pings(&[(1, false, Some(200))]);
    let gone = track_changes_with_pings(Some(kept.state), &one, Some(&down), at(230), &s);
    assert_eq!(names(&gone.events), ["peer.disconnect:1"]);
    assert_eq!(gone.events[0].time, at(200));
    assert_eq!(gone.events[0].session.unwrap().started_at, at(0));
}

#[test]
fn pingable_peers_are_connected_on_first_start_and_when_new() {
    let s = settings();
    let up = pings(&[(1, true, Some(0)), (2, true, Some(30))]);
    let first = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
    let start = track_changes_with_pings(None, &first, Some(&up), at(0), &s);
    assert_eq!(names(&start.events), ["peer.connect:1"]);

    let both = snap(vec![iface(
        "wg0",
        vec![peer(1, None, 0, 0), peer(2, None, 0, 0)],
    )]);
    let next = track_changes_with_pings(Some(start.state), &both, Some(&up), at(30), &s);
    assert_eq!(names(&next.events), ["peer.create:2", "peer.connect:2"]);
    assert_eq!(next.events[1].time, at(30));
    // A create carries the ping status too.
    assert!(next.events[0].peer.as_ref().unwrap().pingable);
}

#[test]
fn ping_results_of_other_interfaces_do_not_count() {
    let s = settings();
    let never = snap(vec![iface("wg1", vec![peer(1, None, 0, 0)])]);
    let (base, _) = track(None, &never, at(0), &s);
    let up = pings(&[(1, true, Some(10))]); // for wg0
    let t = track_changes_with_pings(Some(base), &never, Some(&up), at(10), &s);
    assert!(t.events.is_empty());
}
mod properties;
