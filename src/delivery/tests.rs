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
    until_in_steps(what, Duration::from_millis(5), done).await;
}

async fn until_in_steps(what: &str, step: Duration, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(1)))
            .await
            .unwrap();
        tokio::time::sleep(step).await;
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

// ---- Outages (issue 13): one probe at a time while the receiver is down,
// everything released at the first answer.

/// A receiver that is down (`down` answers every request) until `up` is
/// set, then answers `up_answer`. Each request takes `latency` of tokio
/// time; the receiver records how many requests it had at once.
struct Receiver {
    up: std::sync::atomic::AtomicBool,
    down: fn() -> AttemptResult,
    up_answer: fn(&Event) -> AttemptResult,
    latency: Duration,
    in_flight: AtomicUsize,
    /// Most requests at once that began while down / up.
    most_down: AtomicUsize,
    most_up: AtomicUsize,
    /// Every request: when it began, the event, whether the receiver was
    /// up, how many requests it had then (this one included).
    log: Mutex<Vec<(tokio::time::Instant, uuid::Uuid, bool, usize)>>,
    /// The events answered 2xx, in the order the requests began.
    delivered: Mutex<Vec<uuid::Uuid>>,
}

impl Receiver {
    fn new(down: fn() -> AttemptResult, up_answer: fn(&Event) -> AttemptResult) -> Arc<Self> {
        Arc::new(Self {
            up: false.into(),
            down,
            up_answer,
            latency: Duration::from_millis(1),
            in_flight: AtomicUsize::new(0),
            most_down: AtomicUsize::new(0),
            most_up: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            delivered: Mutex::new(Vec::new()),
        })
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    fn attempts(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Requests made while the receiver was down, from `from` on: when
    /// each began and how many the receiver then had.
    fn down_from(&self, from: tokio::time::Instant) -> Vec<(tokio::time::Instant, usize)> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|a| !a.2 && a.0 >= from)
            .map(|a| (a.0, a.3))
            .collect()
    }

    /// Most requests at once, among those begun while down from `from` on.
    fn most_down_from(&self, from: tokio::time::Instant) -> usize {
        self.down_from(from).iter().map(|a| a.1).max().unwrap_or(0)
    }

    fn delivered(&self) -> Vec<uuid::Uuid> {
        self.delivered.lock().unwrap().clone()
    }
}

impl Transport for Receiver {
    fn name(&self) -> &str {
        "default"
    }

    fn send<'a>(&'a self, event: &'a Event, _now: DateTime<Utc>) -> BoxFuture<'a, Attempt> {
        let up = self.is_up();
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let most = if up { &self.most_up } else { &self.most_down };
        most.fetch_max(now, Ordering::SeqCst);
        self.log
            .lock()
            .unwrap()
            .push((tokio::time::Instant::now(), event.id, up, now));
        let result = if up {
            (self.up_answer)(event)
        } else {
            (self.down)()
        };
        if up && matches!(result, AttemptResult::Status { code, .. } if (200..300).contains(&code))
        {
            self.delivered.lock().unwrap().push(event.id);
        }
        Box::pin(async move {
            tokio::time::sleep(self.latency).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Attempt {
                result,
                elapsed: self.latency,
            }
        })
    }
}

fn refused() -> AttemptResult {
    AttemptResult::Failed("connection refused".into())
}

fn ok(_: &Event) -> AttemptResult {
    AttemptResult::Status {
        code: 200,
        body: String::new(),
        retry_after: None,
    }
}

/// One webhook named `default` with the retry section `retry` (lines
/// indented four spaces) and `delivery` lines.
fn config_retry(retry: &str, delivery: &str) -> crate::config::Config {
    let text = format!(
        "webhook:\n  url: http://127.0.0.1:9/hook\n\
         delivery:\n  retry:\n{retry}{delivery}"
    );
    crate::config::parse_str(&text, std::path::Path::new("/etc/wghook/test.yaml"))
        .unwrap_or_else(|e| panic!("{e}"))
}

struct Outage {
    _dir: tempfile::TempDir,
    store: Arc<Mutex<Store>>,
    receiver: Arc<Receiver>,
    delivery: Delivery,
}

fn start_outage(cfg: &crate::config::Config, receiver: Arc<Receiver>) -> Outage {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Mutex::new(Store::open(dir.path()).unwrap()));
    let hook = cfg.webhooks[0].clone();
    let transport: Arc<dyn Transport> = receiver.clone();
    let delivery = Delivery::start_clocked(
        Arc::clone(&store),
        vec![(hook, transport)],
        &cfg.delivery,
        None,
        Clocks::new(Utc::now),
    )
    .unwrap();
    Outage {
        _dir: dir,
        store,
        receiver,
        delivery,
    }
}

/// Event `i` of peer `peer` of interface `wg1`.
fn nth_peer_event(peer: u8, i: u32) -> Event {
    let mut e = event(1);
    let item = scheduler::tests_support::kind_item(
        0,
        &e.interface.name,
        Some(peer),
        crate::event::EventKind::Update,
        0,
        0,
    );
    e.kind = crate::event::EventKind::Update;
    e.entity = crate::event::Entity::Peer;
    e.peer = item.event.peer.clone();
    e.sequence = u64::from(i);
    e.id = uuid::Uuid::now_v7();
    e
}

/// Commits `per_peer` events for each of `peers` peers, interleaved, in
/// polls of `per_poll` events `gap` of tokio time apart; returns each
/// peer's events in commit order.
async fn commit_peers(
    delivery: &Delivery,
    peers: u8,
    per_peer: u32,
    per_poll: usize,
    gap: Duration,
) -> HashMap<u8, Vec<uuid::Uuid>> {
    let mut order: HashMap<u8, Vec<uuid::Uuid>> = HashMap::new();
    let mut all = Vec::new();
    for i in 0..per_peer {
        for p in 1..=peers {
            let e = nth_peer_event(p, i);
            order.entry(p).or_default().push(e.id);
            all.push(e);
        }
    }
    for poll in all.chunks(per_poll) {
        delivery
            .commit(poll.to_vec(), &State::empty(), &Changes::default())
            .unwrap();
        tokio::time::sleep(gap).await;
    }
    order
}

/// Asserts that each peer's delivered events came in commit order, each once.
fn assert_peer_order(delivered: &[uuid::Uuid], order: &HashMap<u8, Vec<uuid::Uuid>>) {
    let peer_of: HashMap<uuid::Uuid, u8> = order
        .iter()
        .flat_map(|(p, ids)| ids.iter().map(move |id| (*id, *p)))
        .collect();
    let mut seen: HashMap<u8, Vec<uuid::Uuid>> = HashMap::new();
    for id in delivered {
        if let Some(p) = peer_of.get(id) {
            seen.entry(*p).or_default().push(*id);
        }
    }
    for (p, ids) in order {
        assert!(
            seen.get(p) == Some(ids),
            "peer {p}: delivered out of order or not exactly once"
        );
    }
}

/// [`until`] in steps of 1 ms of tokio time: while the engine waits for
/// the writer thread (real time), the tokio clock moves 1 ms per turn, not
/// 5, so that the time measured is the engine's own waits (probe and retry
/// timers, the receiver's latency), not the database's.
async fn until_fine(what: &str, done: impl Fn() -> bool) {
    until_in_steps(what, Duration::from_millis(1), done).await;
}

fn pending(store: &Mutex<Store>) -> u64 {
    lock(store).pending_count().unwrap()
}

use std::collections::HashMap;

/// Issue 13: 10,000 events queued while the receiver was down went out,
/// after it came back, each on its own backoff step (34 s for 50 events),
/// and while it was down every event's retry timer fired on its own:
/// `max_in_flight` requests at a time against a dead receiver.
#[tokio::test(start_paused = true)]
async fn a_receiver_down_gets_one_probe_at_a_time_and_everything_when_back() {
    // The default steps: each event's own retries would be 30 s apart
    // by the end of the outage.
    let cfg = config_retry("    delays: [0s, 5s, 30s, 2m, 10m]\n", "");
    let o = start_outage(&cfg, Receiver::new(refused, ok));
    let began = tokio::time::Instant::now();
    // 100 peers x 100 events, in 20 polls of 500 over the outage's first 10 s.
    let order = commit_peers(&o.delivery, 100, 100, 500, Duration::from_millis(500)).await;
    tokio::time::sleep_until(began + Duration::from_secs(60)).await;
    // The first poll finds the receiver down with up to max_in_flight
    // requests (nothing said it was down yet); after that, one at a time.
    let max = cfg.webhooks[0].max_in_flight;
    assert!(o.receiver.most_down.load(Ordering::SeqCst) <= max);
    let settled = began + Duration::from_millis(500);
    assert_eq!(
        o.receiver.most_down_from(settled),
        1,
        "one request at a time while the receiver is down"
    );
    // A probe every 3 s (+/-20 %): about 20 in a minute.
    let probes = o.receiver.down_from(settled).len();
    assert!(
        (2..=30).contains(&probes),
        "{probes} attempts over a minute's outage"
    );
    assert_eq!(pending(&o.store), 10_000);

    o.receiver.up.store(true, Ordering::SeqCst);
    let back = tokio::time::Instant::now();
    let store = &o.store;
    until_fine("everything to be delivered", || pending(store) == 0).await;
    let took = back.elapsed();
    assert!(
        took <= Duration::from_secs(5),
        "took {took:?} after the receiver came back"
    );
    assert!(
        o.receiver.most_up.load(Ordering::SeqCst) <= cfg.webhooks[0].max_in_flight,
        "never more than max_in_flight"
    );
    assert_peer_order(&o.receiver.delivered(), &order);
    o.delivery.shutdown().await;
}

/// Issue 13: after a restart in the middle of an outage, the events kept
/// the retry times they had stored (30 s and more away) although the
/// receiver was back: a restart must not undo the quick recovery. Events
/// that had failed are due at once after a restart.
#[tokio::test(start_paused = true)]
async fn after_a_restart_in_an_outage_failed_events_are_due_at_once() {
    let cfg = config_retry("    delays: [0s, 5s, 30s, 2m, 10m]\n", "");
    let o = start_outage(&cfg, Receiver::new(refused, ok));
    let order = commit_peers(&o.delivery, 20, 10, 50, Duration::from_millis(100)).await;
    // Long enough for many events to have failed and been given later
    // retry times by their own schedules.
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(pending(&o.store), 200);
    let Outage {
        _dir,
        store,
        receiver,
        delivery,
    } = o;
    delivery.shutdown().await;

    receiver.up.store(true, Ordering::SeqCst);
    let transport: Arc<dyn Transport> = receiver.clone();
    let restarted = Delivery::start_clocked(
        Arc::clone(&store),
        vec![(cfg.webhooks[0].clone(), transport)],
        &cfg.delivery,
        None,
        Clocks::new(Utc::now),
    )
    .unwrap();
    let back = tokio::time::Instant::now();
    until_fine("everything to be delivered", || pending(&store) == 0).await;
    assert!(
        back.elapsed() <= Duration::from_secs(5),
        "took {:?} after the restart",
        back.elapsed()
    );
    assert_peer_order(&receiver.delivered(), &order);
    restarted.shutdown().await;
}

/// The first event of the queue (the first probe) is one the receiver
/// refuses with 500 whether it is up or not: the webhook must come back
/// anyway, and stay up while that event keeps failing.
fn poison_or_ok(e: &Event) -> AttemptResult {
    let code = if e.sequence == POISON { 500 } else { 200 };
    AttemptResult::Status {
        code,
        body: String::new(),
        retry_after: None,
    }
}

const POISON: u64 = 4242;

#[tokio::test(start_paused = true)]
async fn a_poisonous_event_does_not_keep_the_webhook_down() {
    let cfg = config_retry("    delays: [0s, 1s, 2s]\n", "");
    let o = start_outage(&cfg, Receiver::new(refused, poison_or_ok));
    let mut poison = nth_peer_event(200, 0);
    poison.sequence = POISON;
    let poison_id = poison.id;
    o.delivery
        .commit(vec![poison], &State::empty(), &Changes::default())
        .unwrap();
    let began = tokio::time::Instant::now();
    let order = commit_peers(&o.delivery, 10, 20, 50, Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let settled = began + Duration::from_millis(500);
    assert_eq!(o.receiver.most_down_from(settled), 1);
    let probes = o.receiver.down_from(settled).len();
    assert!(probes <= 8, "{probes} attempts over a 10 s outage");

    o.receiver.up.store(true, Ordering::SeqCst);
    let back = tokio::time::Instant::now();
    let store = &o.store;
    until("all but the poison to be delivered", || pending(store) == 1).await;
    assert!(
        back.elapsed() <= Duration::from_secs(5),
        "took {:?}",
        back.elapsed()
    );
    assert_peer_order(&o.receiver.delivered(), &order);

    // The poison keeps failing (every ~2 s) while new events flow at once,
    // several at a time: the webhook stays up.
    for round in 0..10u32 {
        let e = nth_peer_event(1, 1000 + round);
        let id = e.id;
        let batch: Vec<Event> = (0..8)
            .map(|p| nth_peer_event(p + 2, 1000 + round))
            .collect();
        let at = tokio::time::Instant::now();
        o.delivery
            .commit(
                std::iter::once(e).chain(batch).collect(),
                &State::empty(),
                &Changes::default(),
            )
            .unwrap();
        until("the new events to be delivered", || {
            pending(store) == 1 && o.receiver.delivered().contains(&id)
        })
        .await;
        assert!(
            at.elapsed() < Duration::from_millis(500),
            "round {round}: new events waited {:?}",
            at.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let poison_tries = o
        .receiver
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.1 == poison_id && a.2)
        .count();
    assert!(
        poison_tries >= 3,
        "the poison is still retried ({poison_tries})"
    );
    assert_eq!(state_of(store, poison_id).as_deref(), Some("pending"));
    o.delivery.shutdown().await;
}

fn busy() -> AttemptResult {
    AttemptResult::Status {
        code: 503,
        body: String::new(),
        retry_after: Some(Duration::from_secs(10)),
    }
}

/// While the receiver is down, its `Retry-After` spaces the probes.
#[tokio::test(start_paused = true)]
async fn retry_after_spaces_the_probes_while_down() {
    let cfg = config_retry("    delays: [0s, 1s, 2s, 60s]\n", "");
    let o = start_outage(&cfg, Receiver::new(busy, ok));
    let began = tokio::time::Instant::now();
    commit_peers(&o.delivery, 10, 10, 100, Duration::ZERO).await;
    tokio::time::sleep_until(began + Duration::from_secs(35)).await;
    // The first requests (the receiver was not known to be down), then
    // one every 10 s (Retry-After beats the 1 s and 2 s steps).
    let settled = began + Duration::from_millis(500);
    assert_eq!(o.receiver.most_down_from(settled), 1);
    let probes: Vec<_> = o.receiver.down_from(settled).iter().map(|a| a.0).collect();
    assert!((2..=3).contains(&probes.len()), "{} probes", probes.len());
    assert!(probes[0] - began >= Duration::from_secs(10));
    for pair in probes.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_secs(10), "probes {gap:?} apart");
    }
    o.receiver.up.store(true, Ordering::SeqCst);
    let store = &o.store;
    // The next probe is due within the 60 s step (+20 %).
    tokio::time::sleep(Duration::from_secs(72)).await;
    until("everything to be delivered", || pending(store) == 0).await;
    o.delivery.shutdown().await;
}

/// While the receiver is down, events are still given up at
/// `max_event_age`, without a request each.
#[tokio::test(start_paused = true)]
async fn max_event_age_gives_events_up_while_down() {
    let cfg = config_retry("    delays: [0s, 1s, 2s]\n    max_event_age: 5s\n", "");
    let o = start_outage(&cfg, Receiver::new(refused, ok));
    let began = tokio::time::Instant::now();
    commit_peers(&o.delivery, 20, 10, 200, Duration::ZERO).await;
    let store = &o.store;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pending(store), 200, "not yet");
    until("every event to be given up", || {
        lock(store).given_up_count("default").unwrap() == 200
    })
    .await;
    let took = began.elapsed();
    assert!(
        took <= Duration::from_secs(7),
        "given up after {took:?} (max_event_age 5 s)"
    );
    // The first requests, then a probe at ~1 s, ~3 s, ~5 s.
    let settled = began + Duration::from_millis(500);
    let probes = o.receiver.down_from(settled).len();
    assert!(probes <= 4, "{probes} probes while down");
    assert_eq!(o.receiver.most_down_from(settled), 1);
    assert!(o.receiver.attempts() <= 20);
    o.delivery.shutdown().await;
}
