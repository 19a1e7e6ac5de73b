use super::*;
use crate::model::PublicKey;
use crate::model::{DriverKind, Interface, Peer, Snapshot};
use crate::tracker::{track_changes, Announce, Settings};
use crate::tracker::{Changes, State};
use chrono::TimeDelta;

pub(super) fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_607_200 + secs, 0).unwrap()
}

fn settings() -> Settings {
    Settings {
        connect_threshold: TimeDelta::seconds(180),
        endpoint_updates: true,
        announce_on_start: Announce::All,
        host: "h".into(),
        filter: Default::default(),
    }
}

fn snapshot(peers: &[(u8, Option<i64>, u64)]) -> Snapshot {
    Snapshot {
        interfaces: vec![Interface {
            name: "wg0".into(),
            public_key: Some(PublicKey([9; 32])),
            listen_port: 51820,
            driver: DriverKind::Userspace,
            peers: peers
                .iter()
                .map(|&(n, hs, rx)| Peer {
                    public_key: PublicKey([n; 32]),
                    last_handshake: hs.map(at),
                    rx_bytes: rx,
                    tx_bytes: rx,
                    allowed_ips: vec![format!("10.0.0.{n}/32").parse().unwrap()].into(),
                    ..Peer::default()
                })
                .collect(),
            ..Interface::default()
        }],
        unreadable: vec![],
    }
}

/// The state with byte counters cleared (they are not saved every poll).
fn without_counters(mut s: State) -> State {
    for i in s.interfaces.values_mut() {
        for p in i.peers.values_mut() {
            p.peer.rx_bytes = 0;
            p.peer.tx_bytes = 0;
        }
    }
    s
}

fn hooks(events: &[Event], names: &[&str]) -> Vec<Vec<String>> {
    events
        .iter()
        .map(|_| names.iter().map(|n| n.to_string()).collect())
        .collect()
}

#[test]
fn incremental_saves_restore_the_tracker_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    assert!(
        store.load_state().unwrap().is_none(),
        "no state before the first commit"
    );
    let polls = [
        (0, snapshot(&[(1, None, 0), (2, Some(-5), 10)])),
        (5, snapshot(&[(1, Some(4), 100), (2, Some(-5), 20)])),
        (10, snapshot(&[(1, Some(4), 200), (3, None, 0)])),
        (400, snapshot(&[(1, Some(4), 300), (3, Some(399), 5)])),
        (405, snapshot(&[(3, Some(399), 9)])),
    ];
    let mut state = None;
    for (t, snap) in &polls {
        let tracked = track_changes(state.take(), snap, at(*t), &settings());
        let routes = hooks(&tracked.events, &["a"]);
        store
            .commit_poll(
                &tracked.events,
                &routes,
                &tracked.state,
                &tracked.changes,
                at(*t),
                1000,
            )
            .unwrap();
        let loaded = store.load_state().unwrap().unwrap();
        assert_eq!(
            without_counters(loaded),
            without_counters(tracked.state.clone()),
            "after poll at {t}"
        );
        state = Some(tracked.state);
    }
    // And the file survives reopening.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let loaded = store.load_state().unwrap().unwrap();
    assert_eq!(without_counters(loaded), without_counters(state.unwrap()));
}

/// Commits `events` (for webhook `a`) with no state change.
fn commit_events(store: &mut Store, events: &[Event]) {
    let routes = hooks(events, &["a"]);
    store
        .commit_poll(
            events,
            &routes,
            &State::empty(),
            &Changes::default(),
            at(0),
            1000,
        )
        .unwrap();
}

/// Regression: the daemon and a `wghook outbox` command opening a new
/// database at the same moment both wrote its schema row, and one
/// failed with "UNIQUE constraint failed: meta.key".
#[test]
fn opening_a_new_database_from_several_processes_at_once_succeeds() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            let opens: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        Store::open(dir.path()).map(drop)
                    })
                })
                .collect();
            for open in opens {
                if let Err(e) = open.join().unwrap() {
                    panic!("{e}");
                }
            }
        });
    }
}

/// Regression: one unreadable `tracker_peers` row made `load_state`
/// fail, so the daemon could not start, and `purge` could not clear it.
#[test]
fn an_unreadable_state_row_is_quarantined_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let snap = snapshot(&[(1, Some(-5), 10), (2, Some(-5), 20), (3, None, 0)]);
    let tracked = track_changes(None, &snap, at(0), &settings());
    let routes = hooks(&tracked.events, &["a"]);
    store
        .commit_poll(
            &tracked.events,
            &routes,
            &tracked.state,
            &tracked.changes,
            at(0),
            1000,
        )
        .unwrap();
    store
        .conn
        .execute(
            "UPDATE tracker_peers SET data = '{not json' WHERE key = ?1",
            [PublicKey([2; 32]).0.to_vec()],
        )
        .unwrap();
    store
        .conn
        .execute(
            "UPDATE tracker_peers SET key = x'0102' WHERE key = ?1",
            [PublicKey([3; 32]).0.to_vec()],
        )
        .unwrap();
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    let loaded = store
        .load_state()
        .expect("loads despite two bad rows")
        .unwrap();
    assert_eq!(loaded.peer_count(), 1, "the good peer");
    assert_eq!(store.take_quarantined(), 2);
    let moved: Vec<(String, String)> = store
        .conn
        .prepare("SELECT source, reason FROM quarantine ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert_eq!(store.quarantined_count().unwrap(), 2);
    assert!(moved.iter().all(|(t, _)| t == "tracker_peers"), "{moved:?}");
    // Once moved, loading again is clean.
    assert_eq!(store.load_state().unwrap().unwrap().peer_count(), 1);
    assert_eq!(store.take_quarantined(), 0);
}

#[test]
fn an_unreadable_event_is_quarantined_and_the_others_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let events: Vec<Event> = (0..3)
        .map(|n| crate::event::test_interface_event(n, at(0)))
        .collect();
    commit_events(&mut store, &events);
    store
        .conn
        .execute(
            "UPDATE events SET body = 'garbage' WHERE id = ?1",
            [events[1].id.to_string()],
        )
        .unwrap();
    let pending = store.pending("a").unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(store.take_quarantined(), 1);
    assert_eq!(store.pending("a").unwrap().len(), 2);
    assert_eq!(store.take_quarantined(), 0, "reported once");
}

/// Every outbox error names the database file.
#[test]
fn errors_name_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.conn.execute_batch("DROP TABLE deliveries").unwrap();
    let err = store.pending("a").unwrap_err().to_string();
    assert!(
        err.contains(&dir.path().join(DB_FILE).display().to_string()),
        "{err}"
    );
}

/// The database and its WAL files are the owner's alone, whatever the
/// umask (they hold the tracker state and the events).
#[test]
fn the_database_and_its_wal_files_are_0600_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: umask only changes the process's file creation mask.
    let old = unsafe { libc::umask(0) };
    let opened = Store::open(dir.path());
    unsafe { libc::umask(old) };
    let mut store = opened.unwrap();
    let events = vec![crate::event::test_interface_event(1, at(0))];
    commit_events(&mut store, &events);
    for name in [DB_FILE, "wghook.db-wal", "wghook.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
    }
}

#[test]
fn deliveries_are_pending_until_delivered_or_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let tracked = track_changes(
        None,
        &snapshot(&[(1, Some(0), 0), (2, None, 0)]),
        at(0),
        &settings(),
    );
    let n = tracked.events.len();
    assert_eq!(n, 4, "interface create, 2 peer creates, 1 connect");
    let routes = hooks(&tracked.events, &["a", "b"]);
    let c = store
        .commit_poll(
            &tracked.events,
            &routes,
            &tracked.state,
            &tracked.changes,
            at(0),
            1000,
        )
        .unwrap();
    let seqs: Vec<i64> = c.seqs.iter().map(|s| s.unwrap()).collect();
    assert_eq!(store.pending("a").unwrap().len(), n);
    assert_eq!(store.pending_count().unwrap(), n as u64);
    let first = &store.pending("a").unwrap()[0];
    assert_eq!(first.event, tracked.events[0], "the event round-trips");

    store
        .record(&[
            Outcome::Delivered {
                seq: seqs[0],
                webhook: "a".into(),
            },
            Outcome::Retry {
                seq: seqs[1],
                webhook: "a".into(),
                attempts: 1,
                next_attempt: at(5),
                last_status: Some(503),
                last_error: "HTTP 503".into(),
            },
            Outcome::GaveUp {
                seq: seqs[2],
                webhook: "a".into(),
                attempts: 1,
                last_status: Some(400),
                last_error: "HTTP 400".into(),
            },
        ])
        .unwrap();
    let a = store.pending("a").unwrap();
    assert_eq!(
        a.iter().map(|p| p.seq).collect::<Vec<_>>(),
        [seqs[1], seqs[3]]
    );
    assert_eq!((a[0].attempts, a[0].next_attempt), (1, at(5)));
    assert_eq!(
        store.pending("b").unwrap().len(),
        n,
        "webhooks progress independently"
    );

    let listed = store.list(Some("a")).unwrap();
    let given_up: Vec<_> = listed.iter().filter(|l| l.state == "given_up").collect();
    assert_eq!(given_up.len(), 1);
    assert_eq!(given_up[0].last_status, Some(400));
    assert_eq!(given_up[0].id, tracked.events[2].id.to_string());

    assert_eq!(
        store.requeue(Some("b"), &[], at(9)).unwrap(),
        0,
        "b gave up nothing"
    );
    assert_eq!(
        store
            .requeue(None, &[given_up[0].id.clone()], at(9))
            .unwrap(),
        1
    );
    assert_eq!(store.pending("a").unwrap().len(), 3);

    // Delivered to both: the event row goes.
    store
        .record(&[Outcome::Delivered {
            seq: seqs[0],
            webhook: "b".into(),
        }])
        .unwrap();
    let ids: i64 = store
        .conn
        .query_row(
            "SELECT COUNT(*) FROM events WHERE seq = ?1",
            [seqs[0]],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ids, 0);

    assert_eq!(store.purge().unwrap(), 6);
    assert!(store.list(None).unwrap().is_empty());
}

#[test]
fn the_bound_drops_the_oldest_pending_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut state = None;
    let mut all_ids = Vec::new();
    let mut dropped = Vec::new();
    for round in 0..15u8 {
        // Ten new peers per poll: ten create events.
        let peers: Vec<(u8, Option<i64>, u64)> =
            (0..(round + 1) * 10).map(|n| (n, None, 0)).collect();
        let t = i64::from(round) * 5;
        let tracked = track_changes(state.take(), &snapshot(&peers), at(t), &settings());
        let events: Vec<Event> = tracked
            .events
            .iter()
            .filter(|e| e.peer.is_some())
            .cloned()
            .collect();
        all_ids.extend(events.iter().map(|e| e.id));
        let routes = hooks(&events, &["a"]);
        let c = store
            .commit_poll(
                &events,
                &routes,
                &tracked.state,
                &tracked.changes,
                at(t),
                100,
            )
            .unwrap();
        dropped.extend(c.dropped);
        state = Some(tracked.state);
    }
    assert_eq!(all_ids.len(), 150);
    assert_eq!(dropped.len(), 50);
    assert_eq!(
        dropped.iter().map(|d| d.id).collect::<Vec<_>>(),
        all_ids[..50]
    );
    let kept: Vec<String> = store
        .pending("a")
        .unwrap()
        .iter()
        .map(|p| p.event.id.to_string())
        .collect();
    let newest: Vec<String> = all_ids[50..].iter().map(|u| u.to_string()).collect();
    assert_eq!(kept, newest);
}

/// Regression: a changed `monitor.interfaces`/`exclude`, or an interface
/// unreadable on the first start, made a restart report fake deletes and
/// creates. The filter and the unread interfaces are saved with the state.
#[test]
fn the_tracker_filter_and_unread_interfaces_survive_a_restart() {
    use crate::backend::InterfaceFilter;
    let wg = |name: &str, n: u8| Interface {
        name: name.into(),
        peers: vec![Peer {
            public_key: PublicKey([n; 32]),
            last_handshake: Some(at(-5)),
            ..Peer::default()
        }],
        ..Interface::default()
    };
    let under = |exclude: &[&str]| Settings {
        announce_on_start: Announce::Connected,
        filter: InterfaceFilter {
            include: vec![],
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        },
        ..settings()
    };
    let dir = tempfile::tempdir().unwrap();
    let commit = |tracked: &crate::tracker::Tracked, t: i64| {
        let mut store = Store::open(dir.path()).unwrap();
        let routes = hooks(&tracked.events, &["a"]);
        store
            .commit_poll(
                &tracked.events,
                &routes,
                &tracked.state,
                &tracked.changes,
                at(t),
                1000,
            )
            .unwrap();
    };
    let restart = || Store::open(dir.path()).unwrap().load_state().unwrap();

    // First start watching all but wg2; wg1 cannot be read.
    let first = Snapshot {
        interfaces: vec![wg("wg0", 1)],
        unreadable: vec!["wg1".into()],
    };
    let tracked = track_changes(None, &first, at(0), &under(&["wg2"]));
    commit(&tracked, 0);
    let saved = restart().unwrap();
    assert_eq!(saved.filter, Some(under(&["wg2"]).filter));
    assert_eq!(saved.unbaselined.iter().collect::<Vec<_>>(), ["wg1"]);

    // Restart watching everything: wg1 readable now, wg2 let in.
    let all = Snapshot {
        interfaces: vec![wg("wg0", 1), wg("wg1", 2), wg("wg2", 3)],
        unreadable: vec![],
    };
    let tracked = track_changes(Some(saved), &all, at(10), &under(&[]));
    let names: Vec<_> = tracked.events.iter().map(|e| e.filter_name()).collect();
    assert_eq!(
        names,
        ["peer.connect", "peer.connect"],
        "baselines, not creates"
    );
    commit(&tracked, 10);
    let saved = restart().unwrap();
    assert_eq!(
        without_counters(saved.clone()),
        without_counters(tracked.state)
    );

    // Restart excluding wg0: forgotten silently, rows gone.
    let rest = Snapshot {
        interfaces: vec![wg("wg1", 2), wg("wg2", 3)],
        unreadable: vec![],
    };
    let tracked = track_changes(Some(saved), &rest, at(20), &under(&["wg0"]));
    assert!(tracked.events.is_empty(), "{:?}", tracked.events);
    commit(&tracked, 20);
    let saved = restart().unwrap();
    assert_eq!(saved.interfaces.keys().collect::<Vec<_>>(), ["wg1", "wg2"]);
    assert_eq!(saved.filter, Some(under(&["wg0"]).filter));
    let tracked = track_changes(Some(saved), &rest, at(25), &under(&["wg0"]));
    assert!(tracked.events.is_empty() && tracked.changes.is_empty());
}

#[test]
fn an_unusable_state_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let err = Store::open(&file).unwrap_err().to_string();
    assert!(err.contains("not-a-dir"), "{err}");
    assert!(err.contains("monitor.state_dir"), "{err}");
}
