use super::*;
use crate::tracker::Changes;
use crate::tracker::State;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const HOOKS: [&str; 2] = ["a", "b"];

#[derive(Debug, Clone)]
enum Op {
    /// A poll with `n` events, each routed to the webhooks in `mask`.
    Commit {
        n: usize,
        mask: u8,
    },
    Delivered {
        hook: usize,
        pick: usize,
    },
    Retry {
        hook: usize,
        pick: usize,
    },
    GiveUp {
        hook: usize,
        pick: usize,
    },
    Requeue {
        hook: Option<usize>,
    },
    /// Close and reopen the database (a restart).
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..4, 0u8..4).prop_map(|(n, mask)| Op::Commit { n, mask }),
        (0usize..2, 0usize..16).prop_map(|(hook, pick)| Op::Delivered { hook, pick }),
        (0usize..2, 0usize..16).prop_map(|(hook, pick)| Op::Retry { hook, pick }),
        (0usize..2, 0usize..16).prop_map(|(hook, pick)| Op::GiveUp { hook, pick }),
        proptest::option::of(0usize..2).prop_map(|hook| Op::Requeue { hook }),
        Just(Op::Reopen),
    ]
}

fn event(n: u32) -> Event {
    let t = DateTime::from_timestamp(1_700_000_000 + i64::from(n), 0).unwrap();
    crate::event::test_interface_event(n, t)
}

/// What the outbox must hold: per webhook, seq -> (pending?, attempts).
type Model = [BTreeMap<i64, (bool, u32)>; 2];

fn pick(model: &Model, hook: usize, pick: usize, pending: bool) -> Option<i64> {
    let seqs: Vec<i64> = model[hook]
        .iter()
        .filter(|(_, (p, _))| *p == pending)
        .map(|(s, _)| *s)
        .collect();
    (!seqs.is_empty()).then(|| seqs[pick % seqs.len()])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The outbox agrees with a simple model through commits, outcomes,
    /// re-queues and restarts; an event row lives exactly as long as a
    /// delivery row refers to it.
    #[test]
    fn outbox_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut model: Model = Default::default();
        let state = State::empty();
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut counter = 0u32;
        for op in ops {
            match op {
                Op::Commit { n, mask } => {
                    let events: Vec<Event> = (0..n).map(|_| { counter += 1; event(counter) }).collect();
                    let routes: Vec<Vec<String>> = events
                        .iter()
                        .map(|_| (0..2).filter(|h| mask & (1 << h) != 0).map(|h| HOOKS[h].to_string()).collect())
                        .collect();
                    let c = store.commit_poll(&events, &routes, &state, &Changes::default(), now, 1_000_000).unwrap();
                    prop_assert!(c.dropped.is_empty());
                    for (seq, route) in c.seqs.iter().zip(&routes) {
                        prop_assert_eq!(seq.is_some(), !route.is_empty());
                        for h in 0..2 {
                            if route.iter().any(|r| r == HOOKS[h]) {
                                model[h].insert(seq.unwrap(), (true, 0));
                            }
                        }
                    }
                }
                Op::Delivered { hook, pick: p } => {
                    if let Some(seq) = pick(&model, hook, p, true) {
                        store.record(&[Outcome::Delivered { seq, webhook: HOOKS[hook].into() }]).unwrap();
                        model[hook].remove(&seq);
                    }
                }
                Op::Retry { hook, pick: p } => {
                    if let Some(seq) = pick(&model, hook, p, true) {
                        let attempts = model[hook][&seq].1 + 1;
                        store.record(&[Outcome::Retry {
                            seq, webhook: HOOKS[hook].into(), attempts,
                            next_attempt: now, last_status: Some(503), last_error: "HTTP 503".into(),
                        }]).unwrap();
                        model[hook].insert(seq, (true, attempts));
                    }
                }
                Op::GiveUp { hook, pick: p } => {
                    if let Some(seq) = pick(&model, hook, p, true) {
                        let attempts = model[hook][&seq].1 + 1;
                        store.record(&[Outcome::GaveUp {
                            seq, webhook: HOOKS[hook].into(), attempts,
                            last_status: Some(400), last_error: "HTTP 400".into(),
                        }]).unwrap();
                        model[hook].insert(seq, (false, attempts));
                    }
                }
                Op::Requeue { hook } => {
                    let n = store.requeue(hook.map(|h| HOOKS[h]), &[], now).unwrap();
                    let mut expected = 0;
                    for (h, hook_model) in model.iter_mut().enumerate() {
                        if hook.is_none_or(|x| x == h) {
                            for v in hook_model.values_mut().filter(|v| !v.0) {
                                *v = (true, 0);
                                expected += 1;
                            }
                        }
                    }
                    prop_assert_eq!(n, expected);
                }
                Op::Reopen => {
                    drop(store);
                    store = Store::open(dir.path()).unwrap();
                }
            }
            for h in 0..2 {
                let pending: Vec<(i64, u32)> = store.pending(HOOKS[h]).unwrap().iter().map(|p| (p.seq, p.attempts)).collect();
                let want: Vec<(i64, u32)> = model[h].iter().filter(|(_, v)| v.0).map(|(s, v)| (*s, v.1)).collect();
                prop_assert_eq!(pending, want);
                prop_assert_eq!(store.given_up_count(HOOKS[h]).unwrap(), model[h].values().filter(|v| !v.0).count() as u64);
            }
            let rows: BTreeSet<i64> = {
                let mut stmt = store.conn.prepare("SELECT seq FROM events").unwrap();
                let seqs = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
                seqs
            };
            let referenced: BTreeSet<i64> = model.iter().flat_map(|m| m.keys().copied()).collect();
            prop_assert_eq!(rows, referenced);
        }
    }
}
