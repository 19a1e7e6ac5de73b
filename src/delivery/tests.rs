use super::*;
use crate::tracker::{Changes, State};
use futures::future::BoxFuture;
use http::{Attempt, AttemptResult};
use std::sync::atomic::AtomicI64;
use std::sync::atomic::AtomicUsize;

/// A sender answering from a script: call n gets `script(n, event)`,
/// and panics (inside the delivery task) where the script says `None`.
struct Scripted {
    calls: AtomicUsize,
    script: Script,
}

type Script = fn(usize, &Event) -> Option<AttemptResult>;

impl Transport for Scripted {
    fn name(&self) -> &str {
        "default"
    }

    fn send<'a>(&'a self, event: &'a Event, _now: DateTime<Utc>) -> BoxFuture<'a, Attempt> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let result = (self.script)(n, event);
        Box::pin(async move {
            let Some(result) = result else {
                panic!("scripted panic in attempt {n}");
            };
            Attempt {
                result,
                elapsed: Duration::ZERO,
            }
        })
    }
}

fn status(code: u16) -> Option<AttemptResult> {
    Some(AttemptResult::Status {
        code,
        body: String::new(),
        retry_after: None,
    })
}

/// One webhook named `default`, retried after 20 ms, and `delivery` lines.
fn config(delivery: &str) -> crate::config::Config {
    let text = format!(
        "webhook:\n  url: http://127.0.0.1:9/hook\n\
         delivery:\n  retry:\n    delays: [0s, 20ms]\n{delivery}"
    );
    crate::config::parse_str(&text, std::path::Path::new("/etc/wghook/test.yaml"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// An interface event; each `n` its own interface, so none waits for another.
fn event(n: u8) -> Event {
    let t = DateTime::from_timestamp(1_767_607_200 + i64::from(n), 0).unwrap();
    crate::event::test_interface_event(n.into(), t)
}

struct Running {
    _dir: tempfile::TempDir,
    store: Arc<Mutex<Store>>,
    sender: Arc<Scripted>,
    delivery: Delivery,
}

fn start(delivery: &str, script: Script) -> Running {
    start_on(delivery, script, Utc::now)
}

/// [`start`] with the wall clock `wall`.
fn start_on(delivery: &str, script: Script, wall: fn() -> DateTime<Utc>) -> Running {
    let cfg = config(delivery);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Mutex::new(Store::open(dir.path()).unwrap()));
    let sender = Arc::new(Scripted {
        calls: AtomicUsize::new(0),
        script,
    });
    let hook = cfg.webhooks[0].clone();
    let transport: Arc<dyn Transport> = sender.clone();
    let delivery = Delivery::start_clocked(
        Arc::clone(&store),
        vec![(hook, transport)],
        &cfg.delivery,
        None,
        Clocks::new(wall),
    )
    .unwrap();
    Running {
        _dir: dir,
        store,
        sender,
        delivery,
    }
}

/// Waits (10 s at most, on the tokio clock, which these tests pause)
/// until `done` holds. Each turn first lets a millisecond of real time
/// pass with the tokio clock held (a blocking task keeps paused time
/// from advancing by itself), so that the outbox writer, a thread of its
/// own, keeps up: the 10 s are the engine's time, not the writer's.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(1)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Regression: a panic inside a delivery task was dropped with its
/// `JoinError`, leaving the event in flight (never retried, never
/// settled) until a restart.
#[tokio::test(start_paused = true)]
async fn a_panicking_attempt_counts_as_failed_and_is_retried() {
    let r = start("", |n, _| if n == 0 { None } else { status(200) });
    r.delivery
        .commit(vec![event(1)], &State::empty(), &Changes::default())
        .unwrap();
    let store = &r.store;
    until("the retry after the panic to be delivered", || {
        r.sender.calls.load(Ordering::SeqCst) >= 2 && lock(store).pending_count().unwrap() == 0
    })
    .await;
    assert_eq!(
        r.sender.calls.load(Ordering::SeqCst),
        2,
        "one panic, one retry"
    );
    r.delivery.shutdown().await;
}

/// Regression: dead letters deleted by the bound were not logged and the
/// webhook's in-memory given-up figure (the metric) kept counting them.
#[tokio::test(start_paused = true)]
async fn dead_letters_deleted_by_the_bound_leave_the_given_up_figure() {
    let r = start("  max_pending_events: 2\n", |_, _| status(400));
    let events: Vec<Event> = (0..4).map(event).collect();
    for (i, e) in events.iter().enumerate() {
        r.delivery
            .commit(vec![e.clone()], &State::empty(), &Changes::default())
            .unwrap();
        let id = e.id.to_string();
        let store = &r.store;
        until("the event to be given up", || {
            lock(store)
                .list(None)
                .unwrap()
                .iter()
                .any(|l| l.id == id && l.state == "given_up")
        })
        .await;
        // The bound runs at commit: two dead letters are kept, then the new one.
        let want = (i as u64 + 1).min(3);
        assert_eq!(lock(store).given_up_count("default").unwrap(), want);
        assert_eq!(r.delivery.queues()[0].given_up, want, "after event {i}");
    }
    let kept: Vec<String> = lock(&r.store)
        .list(None)
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert!(!kept.contains(&events[0].id.to_string()), "the oldest went");
    r.delivery.shutdown().await;
}

/// Commits one interface event; returns its id.
fn commit_one(r: &Running) -> uuid::Uuid {
    let e = event(1);
    let id = e.id;
    r.delivery
        .commit(vec![e], &State::empty(), &Changes::default())
        .unwrap();
    id
}

/// The state of event `id` in the outbox (`pending`, `given_up`), or
/// `None` once delivered.
fn state_of(store: &Mutex<Store>, id: uuid::Uuid) -> Option<String> {
    let id = id.to_string();
    lock(store)
        .list(None)
        .unwrap()
        .into_iter()
        .find(|l| l.id == id)
        .map(|l| l.state)
}

/// A peer event of interface `n`'s interface.
fn peer_event(n: u8, kind: crate::event::EventKind) -> Event {
    let mut e = event(n);
    let item = scheduler::tests_support::kind_item(0, &e.interface.name, Some(7), kind, 0, 0);
    e.kind = kind;
    e.entity = crate::event::Entity::Peer;
    e.peer = item.event.peer.clone();
    e.id = uuid::Uuid::now_v7();
    e
}

/// Regression: an `interface.update` a receiver kept answering 500 held
/// back every later event of every peer of that interface for up to
/// `max_event_age` (72 h).
#[tokio::test(start_paused = true)]
async fn an_interface_update_refused_forever_does_not_hold_back_its_peers() {
    let r = start("", |_, e| {
        if e.peer.is_none() {
            status(500)
        } else {
            status(200)
        }
    });
    let mut update = event(1);
    update.kind = crate::event::EventKind::Update;
    let connect = peer_event(1, crate::event::EventKind::Connect);
    let disconnect = peer_event(1, crate::event::EventKind::Disconnect);
    let ids = (update.id, connect.id, disconnect.id);
    r.delivery
        .commit(
            vec![update, connect, disconnect],
            &State::empty(),
            &Changes::default(),
        )
        .unwrap();
    let store = &r.store;
    until("the peer's events to be delivered", || {
        state_of(store, ids.1).is_none() && state_of(store, ids.2).is_none()
    })
    .await;
    assert_eq!(state_of(store, ids.0).as_deref(), Some("pending"));
    r.delivery.shutdown().await;
}

/// Regression: a request that cannot be made (a template failing for
/// this event, a URL or header the HTTP stack refuses) was retried for
/// `max_event_age` as if the network were down.
#[tokio::test(start_paused = true)]
async fn an_attempt_that_cannot_be_made_is_given_up_at_once() {
    let r = start("", |_, _| {
        Some(AttemptResult::Invalid("cannot render the body".into()))
    });
    let id = commit_one(&r);
    let store = &r.store;
    until("the event to be given up", || {
        state_of(store, id).as_deref() == Some("given_up")
    })
    .await;
    assert_eq!(r.sender.calls.load(Ordering::SeqCst), 1, "one attempt");
    r.delivery.shutdown().await;
}

/// The wall clock of the step tests: the real one moved by `STEP_H` hours.
static STEP_H: AtomicI64 = AtomicI64::new(0);

fn stepped() -> DateTime<Utc> {
    Utc::now() + chrono::TimeDelta::hours(STEP_H.load(Ordering::SeqCst))
}

/// A wall clock stepped forward past `max_event_age` (72 h) between an
/// event's commit and its retry must not give the event up: ages are
/// monotonic.
#[tokio::test(start_paused = true)]
async fn a_wall_clock_step_forward_does_not_give_events_up() {
    let r = start_on(
        "",
        |n, _| {
            if n == 0 {
                STEP_H.store(100, Ordering::SeqCst);
                status(500)
            } else {
                status(200)
            }
        },
        stepped,
    );
    let id = commit_one(&r);
    let store = &r.store;
    until("the retry to be delivered", || {
        r.sender.calls.load(Ordering::SeqCst) >= 2 && state_of(store, id).is_none()
    })
    .await;
    STEP_H.store(0, Ordering::SeqCst);
    r.delivery.shutdown().await;
}

/// A retry stored while the wall clock was an hour ahead (stepped back
/// since, or before this start) waits at most the schedule's largest
/// step, not the hour.
#[tokio::test(start_paused = true)]
async fn a_stored_retry_far_ahead_waits_at_most_the_largest_step() {
    {
        let clocks = Clocks::new(Utc::now);
        let e = event(1);
        let now = Utc::now();
        let item = pending_item(
            outbox::Pending {
                seq: 1,
                event: e,
                created_at: now + chrono::TimeDelta::hours(1),
                attempts: 1,
                next_attempt: now + chrono::TimeDelta::hours(1),
            },
            Duration::from_secs(30),
            clocks.now(),
        );
        let mono = clocks.mono_ms();
        assert!(item.due - mono <= 30_000, "due in {} ms", item.due - mono);
        assert!(item.born <= mono, "an event is never born in the future");
    }
}

/// The wall clock of the backward step test: the real one moved back by
/// `BACK_H` hours.
static BACK_H: AtomicI64 = AtomicI64::new(0);

fn stepped_back() -> DateTime<Utc> {
    Utc::now() - chrono::TimeDelta::hours(BACK_H.load(Ordering::SeqCst))
}

/// A wall clock stepped back an hour between an attempt and its retry
/// does not delay the retry by an hour: due times are monotonic.
#[tokio::test(start_paused = true)]
async fn a_wall_clock_step_back_does_not_delay_retries() {
    let r = start_on(
        "",
        |n, _| {
            if n == 0 {
                status(500)
            } else {
                status(200)
            }
        },
        stepped_back,
    );
    let id = commit_one(&r);
    let store = &r.store;
    until("the first attempt", || {
        r.sender.calls.load(Ordering::SeqCst) >= 1
    })
    .await;
    BACK_H.store(1, Ordering::SeqCst);
    // The retry is due 20 ms after the failure; `until` allows 10 s.
    until("the retry to be delivered", || {
        r.sender.calls.load(Ordering::SeqCst) >= 2 && state_of(store, id).is_none()
    })
    .await;
    r.delivery.shutdown().await;
}
