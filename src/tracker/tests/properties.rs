use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

/// Handshake age (or never), rx, tx, keepalive step; `None`: absent.
type PeerSpec = Option<(Option<i64>, u64, u64, u8)>;
/// Which of the 2 interfaces exist, and the pool of 6 peers.
type Spec = (Vec<bool>, Vec<PeerSpec>);

/// One peer of a pool of 6, on one of 2 interfaces: present or not,
/// handshake offset from now (or never), counters.
fn peer_strategy() -> impl Strategy<Value = PeerSpec> {
    proptest::option::of((
        proptest::option::of(0i64..600),
        0u64..1000,
        0u64..1000,
        0u8..3,
    ))
}

fn snapshot_strategy() -> impl Strategy<Value = Spec> {
    (
        proptest::collection::vec(any::<bool>(), 2),
        proptest::collection::vec(peer_strategy(), 6),
    )
}

fn build(now: i64, spec: &Spec) -> Snapshot {
    let (ifaces, peers) = spec;
    let mut out = Vec::new();
    for (i, present) in ifaces.iter().enumerate() {
        if !present {
            continue;
        }
        let mut list = Vec::new();
        for (n, p) in peers.iter().enumerate() {
            if n % 2 != i {
                continue;
            }
            if let Some((age, rx, tx, ka)) = p {
                let mut peer = peer(n as u8, age.map(|a| now - a), *rx, *tx);
                peer.persistent_keepalive = u16::from(*ka) * 25;
                list.push(peer);
            }
        }
        out.push(iface(&format!("wg{i}"), list));
    }
    snap(out)
}

fn connected_in(s: &Snapshot, now: i64) -> BTreeSet<(String, u8)> {
    s.interfaces
        .iter()
        .flat_map(|i| {
            i.peers
                .iter()
                .filter(|p| is_connected(p.last_handshake, at(now), TimeDelta::seconds(180)))
                .map(|p| (i.name.clone(), p.public_key.0[0]))
        })
        .collect()
}

proptest! {
    /// The list-plus-index map behaves like a plain map through
    /// inserts, removals (which move the last entry) and reorders.
    #[test]
    fn peer_map_matches_a_btree_map(
        ops in proptest::collection::vec((0u8..3, 0u8..24, any::<u64>()), 1..200)
    ) {
        let mut map = PeerMap::default();
        let mut model = std::collections::BTreeMap::new();
        for (op, n, rx) in ops {
            match op {
                0 => {
                    let p = new_peer_state(&peer(n, None, rx, 0), at(0), false);
                    map.insert(key(n), p.clone());
                    model.insert(key(n), p);
                }
                1 => prop_assert_eq!(map.remove(&key(n)), model.remove(&key(n))),
                _ => map.reorder((0..24).rev().map(|k| key(k.max(n) ^ 1))),
            }
            prop_assert_eq!(map.len(), model.len());
            for k in 0..24 {
                prop_assert_eq!(map.get(&key(k)), model.get(&key(k)));
            }
        }
    }

    #[test]
    fn identical_snapshots_give_no_events(spec in snapshot_strategy(), announce in 0..3u8) {
        let settings = Settings {
            announce_on_start: [Announce::Connected, Announce::All, Announce::None][announce as usize],
            ..settings()
        };
        let s = build(0, &spec);
        let (state, _) = track(None, &s, at(0), &settings);
        let (state2, events) = track(Some(state.clone()), &s, at(0), &settings);
        prop_assert!(events.is_empty(), "{:?}", names(&events));
        prop_assert_eq!(state2, state);
    }

    /// The fast path for idle peers (skipped when ping results are
    /// given, even empty ones) changes nothing the full path would not.
    #[test]
    fn the_idle_peer_shortcut_matches_the_full_path(
        specs in proptest::collection::vec((snapshot_strategy(), 0i64..400, 0i64..400), 1..8)
    ) {
        let no_pings = Pings::new();
        let (mut fast, mut full) = (None, None);
        let mut now = 0;
        for (spec, dt, again) in &specs {
            now += dt;
            let s = build(now, spec);
            // Each snapshot twice: the second time mostly idle peers.
            for t in [now, now + again] {
                let a = track_changes_with_pings(fast.take(), &s, None, at(t), &settings());
                let b = track_changes_with_pings(full.take(), &s, Some(&no_pings), at(t), &settings());
                let strip = |events: Vec<Event>| -> Vec<Event> {
                    events.into_iter().map(|e| Event { id: Uuid::nil(), ..e }).collect()
                };
                prop_assert_eq!(&a.state, &b.state);
                prop_assert_eq!(&a.changes, &b.changes);
                prop_assert_eq!(strip(a.events), strip(b.events));
                fast = Some(a.state);
                full = Some(b.state);
            }
            now += again;
        }
    }

    #[test]
    fn replaying_events_reproduces_the_connected_set(
        specs in proptest::collection::vec((snapshot_strategy(), 1i64..400), 1..8)
    ) {
        let mut state = None;
        let mut replay: BTreeSet<(String, u8)> = BTreeSet::new();
        let mut now = 0;
        let mut last = Snapshot::default();
        for (spec, dt) in &specs {
            now += dt;
            let s = build(now, spec);
            let (next, events) = track(state.take(), &s, at(now), &settings());
            for e in &events {
                let Some(p) = &e.peer else { continue };
                let k = (e.interface.name.clone(), p.peer.public_key.0[0]);
                match e.kind {
                    EventKind::Connect => prop_assert!(replay.insert(k), "double connect"),
                    EventKind::Disconnect => prop_assert!(replay.remove(&k), "disconnect without connect"),
                    EventKind::Delete => prop_assert!(!replay.contains(&k), "deleted while connected"),
                    _ => {}
                }
            }
            state = Some(next);
            last = s;
        }
        prop_assert_eq!(&replay, &connected_in(&last, now));
        let state = state.unwrap();
        prop_assert_eq!(state.connected_count(), replay.len());
    }
}
