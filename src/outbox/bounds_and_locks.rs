use super::tests::at;
use super::*;
use crate::tracker::{Changes, State};

fn event(n: u32) -> Event {
    crate::event::test_interface_event(n, at(i64::from(n)))
}

/// Commits `n` events for webhook `a`; returns their seqs.
fn commit(store: &mut Store, n: u32, max_pending: u64) -> (Vec<i64>, Committed) {
    let events: Vec<Event> = (0..n).map(event).collect();
    let routes = vec![vec!["a".to_string()]; events.len()];
    let c = store
        .commit_poll(
            &events,
            &routes,
            &State::empty(),
            &Changes::default(),
            at(0),
            max_pending,
        )
        .unwrap();
    (c.seqs.iter().flatten().copied().collect(), c)
}

fn give_up(store: &mut Store, seqs: &[i64]) {
    let outcomes: Vec<Outcome> = seqs
        .iter()
        .map(|&seq| Outcome::GaveUp {
            seq,
            webhook: "a".into(),
            attempts: 1,
            last_status: Some(400),
            last_error: "HTTP 400".into(),
        })
        .collect();
    store.record(&outcomes).unwrap();
}

/// Regression: dead letters beyond `max_pending_events` were deleted
/// silently; they are now returned (for the ERROR log and the counts)
/// and never count against the pending bound.
#[test]
fn dead_letters_are_bounded_apart_from_pending_events_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let (dead, _) = commit(&mut store, 3, 3);
    give_up(&mut store, &dead);
    // Three dead letters and three pending: nothing over either bound.
    let (pending, c) = commit(&mut store, 3, 3);
    assert!(c.dropped.is_empty() && c.dead_letters_dropped.is_empty());
    // A fourth dead letter: the oldest one goes, reported; pending stay.
    give_up(&mut store, &pending[..1]);
    let (_, c) = commit(&mut store, 0, 3);
    assert!(c.dropped.is_empty(), "dead letters are not pending events");
    assert_eq!(
        c.dead_letters_dropped
            .iter()
            .map(|d| (d.seq, d.webhook.as_str()))
            .collect::<Vec<_>>(),
        [(dead[0], "a")]
    );
    assert_eq!(store.given_up_count("a").unwrap(), 3);
    assert_eq!(store.pending("a").unwrap().len(), 2);
    let rows: i64 = store
        .conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 5, "the deleted dead letter's event row went too");
}

/// Regression: a poll commit that met the write lock of `wghook outbox
/// retry/purge` failed with a plain database error, which stopped the
/// daemon; it is `Busy` now, retriable, and nothing of it was written.
#[test]
fn a_commit_meeting_another_writer_is_busy_and_can_be_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Store::open(dir.path()).unwrap();
    daemon.conn.busy_timeout(Duration::from_millis(50)).unwrap();
    let cli = Store::open(dir.path()).unwrap();
    cli.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let events = vec![event(1)];
    let routes = vec![vec!["a".to_string()]];
    let mut commit = || {
        daemon.commit_poll(
            &events,
            &routes,
            &State::empty(),
            &Changes::default(),
            at(0),
            100,
        )
    };
    let err = commit().unwrap_err();
    assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
    assert!(err.is_retriable());
    assert!(err.to_string().contains("wghook outbox"), "{err}");
    cli.conn.execute_batch("ROLLBACK").unwrap();
    commit().unwrap();
    assert_eq!(cli.pending("a").unwrap().len(), 1, "committed once");
    let sql = StoreError::from(rusqlite::Error::InvalidQuery);
    assert!(!sql.is_retriable());
}

/// `wghook outbox purge` and `retry` go in batches: another connection
/// sees their progress (so it could write in between), and the result is
/// the same as one big transaction's.
#[test]
fn purge_and_requeue_commit_in_short_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let total = CLI_BATCH * 5 / 2;
    let (seqs, _) = commit(&mut store, total as u32, 1_000_000);
    give_up(&mut store, &seqs);
    let path = dir.path().to_path_buf();

    let count = |state: &'static str| {
        move |observer: &Store| -> usize {
            let n: i64 = observer
                .conn
                .query_row(
                    "SELECT COUNT(*) FROM deliveries WHERE state = ?1",
                    [state],
                    |r| r.get(0),
                )
                .unwrap();
            n as usize
        }
    };
    // Runs `work` in another thread, recording every count of `state`
    // rows a second connection sees meanwhile.
    let watch = |work: Box<dyn FnOnce(&mut Store) -> usize + Send>,
                 seen: &dyn Fn(&Store) -> usize|
     -> (usize, Vec<usize>) {
        let observer = Store::open(&path).unwrap();
        let mut worker = Store::open(&path).unwrap();
        let handle = std::thread::spawn(move || work(&mut worker));
        let mut counts = Vec::new();
        while !handle.is_finished() {
            counts.push(seen(&observer));
            std::thread::sleep(Duration::from_millis(1));
        }
        (handle.join().unwrap(), counts)
    };

    let (n, counts) = watch(
        Box::new(|s| s.requeue(None, &[], at(1)).unwrap()),
        &count("pending"),
    );
    assert_eq!(n, total);
    assert_eq!(store.pending("a").unwrap().len(), total);
    assert!(
        counts.iter().any(|&c| c > 0 && c < total),
        "no partial progress seen: {counts:?}"
    );

    let (n, counts) = watch(Box::new(|s| s.purge().unwrap()), &count("pending"));
    assert_eq!(n, total);
    assert!(store.list(None).unwrap().is_empty());
    assert!(
        counts.iter().any(|&c| c > 0 && c < total),
        "no partial progress seen: {counts:?}"
    );
}
