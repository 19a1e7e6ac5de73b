//! Sending events to webhooks without losing any.
//!
//! Flow: the poll loop calls [`Delivery::commit`] with the events of a poll
//! and the tracker state they came from; both are written to the outbox in
//! one transaction ([`outbox::Store::commit_poll`]) before the call returns.
//! Then each webhook whose `events` filter matches gets the event in its own
//! queue, served by its own task ([`scheduler::Queue`] picks what may go:
//! per-peer and per-interface order, bounded parallelism). Outcomes go to a
//! writer thread that records them in the outbox in batches (group commit).
//!
//! Invariants: `commit` never waits on a receiver; an event leaves the outbox
//! only after a 2xx, when given up (kept as a dead letter), or when the bound
//! drops it (ERROR logged, as is each dead letter the bound deletes); every
//! attempt is settled, even one whose task panicked (a failed attempt,
//! retried per the schedule); a delivery that was in flight at a crash is
//! sent again after the restart, with the same `webhook-id`.

pub mod auth;
pub mod http;
pub mod retry;
pub mod scheduler;
pub mod signing;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::{event_matches, DeliverySettings, RetrySettings, Webhook};
use crate::event::Event;
use crate::metrics::Metrics;
use crate::outbox::{self, Outcome, Store, StoreError};
use crate::tracker::{Changes, State};
use http::{AttemptResult, HttpSender};
use retry::{classify, Decision, Schedule};
use scheduler::CROSS_WAIT;
use scheduler::{Item, Queue};

/// Jitter applied to every retry delay (+/-20 %).
const JITTER: f64 = 0.2;

/// Most outcomes written in one transaction.
const MAX_BATCH: usize = 2_000;

/// What a webhook's task sends with: the [`HttpSender`] (a stand-in in tests).
trait Transport: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn send<'a>(&'a self, event: &'a Event, now: DateTime<Utc>) -> BoxFuture<'a, http::Attempt>;
}

impl Transport for HttpSender {
    fn name(&self) -> &str {
        HttpSender::name(self)
    }

    fn send<'a>(&'a self, event: &'a Event, now: DateTime<Utc>) -> BoxFuture<'a, http::Attempt> {
        Box::pin(HttpSender::send(self, event, now))
    }
}

/// The engine's clocks. Due times, retry delays, `max_event_age` and the
/// order bound run on the monotonic clock, so a wall clock stepped back
/// does not delay retries and one stepped forward does not give events up;
/// the wall clock only stamps what is stored and shown (`webhook-timestamp`,
/// the outbox's times).
#[derive(Clone, Copy)]
struct Clocks {
    origin: tokio::time::Instant,
    wall: fn() -> DateTime<Utc>,
}

impl Clocks {
    fn new(wall: fn() -> DateTime<Utc>) -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            wall,
        }
    }

    /// Milliseconds since the engine started, on the monotonic clock.
    fn mono_ms(&self) -> i64 {
        self.origin.elapsed().as_millis() as i64
    }

    fn wall(&self) -> DateTime<Utc> {
        (self.wall)()
    }

    /// A stored pending delivery on this run's monotonic clock: its age and
    /// its wait are taken from the wall times it was stored with, the wait
    /// capped at `max_delay` (a clock stepped back before this start must
    /// not postpone it) and neither below zero.
    fn item(&self, p: outbox::Pending, max_delay: Duration) -> Item {
        let (mono, wall) = (self.mono_ms(), self.wall());
        let age = (wall - p.created_at).num_milliseconds().max(0);
        let wait = (p.next_attempt - wall)
            .num_milliseconds()
            .clamp(0, max_delay.as_millis() as i64);
        Item {
            seq: p.seq,
            event: Arc::new(p.event),
            created_at: p.created_at,
            born: mono.saturating_sub(age),
            attempts: p.attempts,
            due: mono.saturating_add(wait),
        }
    }
}

/// A monotonic instant (ms) as a `DateTime`, for the retry policy, which
/// counts in `DateTime`s and only ever subtracts them.
fn on_timeline(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Messages from the poll loop to one webhook's task.
enum Msg {
    Push(Vec<Item>),
    Drop(Vec<i64>),
    /// Finish everything queued (retries included), then stop.
    Drain,
}

struct Hook {
    name: String,
    events: Vec<String>,
    tx: mpsc::UnboundedSender<Msg>,
    /// The task's other channel: the writer's confirmations and the
    /// outbox's contents after a `wghook outbox` command, in the order the
    /// database saw them.
    acks: mpsc::UnboundedSender<Ack>,
    max_delay: Duration,
    stats: Arc<QueueStats>,
}

/// What the outbox tells a webhook's task.
enum Ack {
    /// The outcome of `seq` (delivered or given up) is on disk.
    Settled(i64),
    /// Another process changed the outbox (`wghook outbox purge` or
    /// `retry`): these are the webhook's pending deliveries now, and its
    /// given-up count.
    Sync { pending: Vec<Item>, given_up: u64 },
}

/// How often the outbox is checked for changes by `wghook outbox`.
pub const OUTBOX_SYNC_EVERY: Duration = Duration::from_secs(1);

/// One webhook's queue figures, kept current by its task.
#[derive(Debug, Default)]
pub struct QueueStats {
    pending: AtomicU64,
    given_up: AtomicU64,
    /// Commit time (Unix ms) of the oldest pending event; 0 when none.
    oldest_ms: AtomicI64,
}

/// A webhook's queue figures at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSnapshot {
    pub webhook: String,
    pub pending: u64,
    pub given_up: u64,
    pub oldest: Option<DateTime<Utc>>,
}

/// The outbox and one delivery task per webhook.
pub struct Delivery {
    store: Arc<Mutex<Store>>,
    hooks: Vec<Hook>,
    tasks: JoinSet<()>,
    outcomes: Option<std::sync::mpsc::Sender<Record>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Checks the outbox for changes made by `wghook outbox` commands.
    watcher: Option<tokio::task::JoinHandle<()>>,
    settings: DeliverySettings,
    metrics: Option<Metrics>,
    clocks: Clocks,
}

/// Locks the store; a poisoned lock (a panic while holding it) still holds a
/// consistent database, since every change is one SQLite transaction.
pub fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

impl Delivery {
    /// Starts one task per webhook, each with the deliveries it still has
    /// pending in the outbox. Must be called inside a tokio runtime.
    pub fn start(
        store: Arc<Mutex<Store>>,
        webhooks: Vec<(Webhook, HttpSender)>,
        settings: &DeliverySettings,
        metrics: Option<Metrics>,
    ) -> Result<Self, StoreError> {
        let webhooks = webhooks
            .into_iter()
            .map(|(hook, sender)| (hook, Arc::new(sender) as Arc<dyn Transport>))
            .collect::<Vec<_>>();
        {
            let db = lock(&store);
            let configured: Vec<&str> = webhooks.iter().map(|(w, _)| w.name.as_str()).collect();
            for (name, count) in db.pending_webhooks()? {
                if !configured.contains(&name.as_str()) {
                    tracing::warn!(
                        webhook = %name,
                        pending = count,
                        "the outbox holds events for a webhook that is no longer configured; \
                         they stay there (see `wghook outbox`, `wghook outbox purge`)"
                    );
                }
            }
        }
        Self::start_with(store, webhooks, settings, metrics)
    }

    /// A delivery with no webhooks and no warnings: what the daemon holds
    /// for the moment a reload swaps the old webhooks for the new ones.
    pub fn idle(store: Arc<Mutex<Store>>, settings: &DeliverySettings) -> Result<Self, StoreError> {
        Self::start_with(store, Vec::new(), settings, None)
    }

    fn start_with(
        store: Arc<Mutex<Store>>,
        webhooks: Vec<(Webhook, Arc<dyn Transport>)>,
        settings: &DeliverySettings,
        metrics: Option<Metrics>,
    ) -> Result<Self, StoreError> {
        Self::start_clocked(store, webhooks, settings, metrics, Clocks::new(Utc::now))
    }

    fn start_clocked(
        store: Arc<Mutex<Store>>,
        webhooks: Vec<(Webhook, Arc<dyn Transport>)>,
        settings: &DeliverySettings,
        metrics: Option<Metrics>,
        clocks: Clocks,
    ) -> Result<Self, StoreError> {
        let (out_tx, out_rx) = std::sync::mpsc::channel::<Record>();
        let writer_store = Arc::clone(&store);
        let writer = std::thread::Builder::new()
            .name("wghook-outbox".into())
            .spawn(move || write_outcomes(&writer_store, &out_rx))
            .map_err(|e| StoreError::Open {
                path: lock(&store).path().to_path_buf(),
                message: format!("cannot start the writer thread: {e}"),
            })?;

        let mut tasks = JoinSet::new();
        let mut hooks = Vec::with_capacity(webhooks.len());
        {
            let db = lock(&store);
            for (hook, sender) in webhooks {
                let mut queue = Queue::default();
                let schedule = schedule(&hook.retry);
                for p in db.pending(&hook.name)? {
                    queue.push(clocks.item(p, schedule.max_delay()));
                }
                if !queue.is_empty() {
                    tracing::info!(webhook = %hook.name, pending = queue.len(), "resuming deliveries from the outbox");
                }
                let stats = Arc::new(QueueStats::default());
                stats
                    .given_up
                    .store(db.given_up_count(&hook.name)?, Ordering::Relaxed);
                let (tx, rx) = mpsc::unbounded_channel();
                let (ack_tx, ack_rx) = mpsc::unbounded_channel();
                let max_delay = schedule.max_delay();
                let worker = Worker {
                    stats: Arc::clone(&stats),
                    metrics: metrics.clone(),
                    sender,
                    schedule,
                    clocks,
                    max_in_flight: hook.max_in_flight,
                    queue,
                    outcomes: out_tx.clone(),
                    shutdown_timeout: settings.shutdown_timeout,
                    ack_tx: ack_tx.clone(),
                    awaiting: 0,
                };
                tasks.spawn(worker.run(rx, ack_rx));
                hooks.push(Hook {
                    name: hook.name,
                    events: hook.events,
                    tx,
                    acks: ack_tx,
                    max_delay,
                    stats,
                });
            }
        }
        let watcher = (!hooks.is_empty()).then(|| {
            let targets: Arc<[_]> = hooks
                .iter()
                .map(|h| (h.name.clone(), h.acks.clone(), h.max_delay))
                .collect();
            tokio::spawn(watch_outbox(Arc::clone(&store), targets, clocks))
        });
        Ok(Self {
            store,
            hooks,
            tasks,
            outcomes: Some(out_tx),
            writer: Some(writer),
            watcher,
            settings: settings.clone(),
            metrics,
            clocks,
        })
    }

    /// Number of webhooks events go to.
    pub fn webhook_count(&self) -> usize {
        self.hooks.len()
    }

    /// Each webhook's queue figures.
    pub fn queues(&self) -> Vec<QueueSnapshot> {
        self.hooks
            .iter()
            .map(|h| {
                let oldest = h.stats.oldest_ms.load(Ordering::Relaxed);
                QueueSnapshot {
                    webhook: h.name.clone(),
                    pending: h.stats.pending.load(Ordering::Relaxed),
                    given_up: h.stats.given_up.load(Ordering::Relaxed),
                    oldest: (oldest != 0)
                        .then(|| DateTime::from_timestamp_millis(oldest))
                        .flatten(),
                }
            })
            .collect()
    }

    /// Commits a poll (events, routed to the webhooks that want them, and the
    /// tracker state) to the outbox, then hands the events to the webhooks'
    /// tasks. Returns once the commit is durable; never waits on a receiver.
    /// On an error nothing was committed; [`StoreError::is_retriable`] tells
    /// whether the same poll may be committed again (another process held
    /// the database).
    pub fn commit(
        &self,
        events: Vec<Event>,
        state: &State,
        changes: &Changes,
    ) -> Result<(), StoreError> {
        if events.is_empty() && changes.is_empty() {
            return Ok(());
        }
        // Delivery bookkeeping runs on the real clocks, whatever clock the
        // poll used (the demo's runs fast).
        let now = self.clocks.wall();
        let mono = self.clocks.mono_ms();
        let routes: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                let name = e.filter_name();
                self.hooks
                    .iter()
                    .filter(|h| event_matches(&h.events, &name))
                    .map(|h| h.name.clone())
                    .collect()
            })
            .collect();
        let committed = lock(&self.store).commit_poll(
            &events,
            &routes,
            state,
            changes,
            now,
            self.settings.max_pending_events,
        )?;
        if !committed.dropped.is_empty() {
            for d in &committed.dropped {
                tracing::error!(
                    event_id = %d.id,
                    event = %d.name,
                    max_pending_events = self.settings.max_pending_events,
                    "outbox full: dropped the oldest undelivered event"
                );
            }
            if let Some(m) = &self.metrics {
                m.dropped(committed.dropped.len() as u64);
            }
            let seqs: Vec<i64> = committed.dropped.iter().map(|d| d.seq).collect();
            for hook in &self.hooks {
                let _ = hook.tx.send(Msg::Drop(seqs.clone()));
            }
        }
        self.forget_dead_letters(&committed.dead_letters_dropped);
        let mut batches: Vec<Vec<Item>> = vec![Vec::new(); self.hooks.len()];
        for ((event, seq), route) in events.into_iter().zip(committed.seqs).zip(&routes) {
            let Some(seq) = seq else { continue };
            let event = Arc::new(event);
            for (i, hook) in self.hooks.iter().enumerate() {
                if route.contains(&hook.name) {
                    batches[i].push(Item {
                        seq,
                        event: Arc::clone(&event),
                        created_at: now,
                        born: mono,
                        attempts: 0,
                        due: mono,
                    });
                }
            }
        }
        for (hook, batch) in self.hooks.iter().zip(batches) {
            if !batch.is_empty() {
                // A closed channel means the task ended, which only happens at shutdown.
                let _ = hook.tx.send(Msg::Push(batch));
            }
        }
        Ok(())
    }

    /// Logs each dead letter the bound deleted (lost for good: ERROR), counts
    /// them with the dropped events, and lowers the webhooks' given-up figures.
    fn forget_dead_letters(&self, deleted: &[outbox::DroppedDeadLetter]) {
        for d in deleted {
            tracing::error!(
                webhook = %d.webhook,
                event_id = %d.id,
                event = %d.name,
                max_pending_events = self.settings.max_pending_events,
                "too many given-up events: deleted the oldest dead letter"
            );
            if let Some(hook) = self.hooks.iter().find(|h| h.name == d.webhook) {
                let _ =
                    hook.stats
                        .given_up
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                            Some(n.saturating_sub(1))
                        });
            }
        }
        if let (Some(m), false) = (&self.metrics, deleted.is_empty()) {
            m.dropped(deleted.len() as u64);
        }
    }

    /// Stops the tasks: in-flight requests get `shutdown_timeout` to finish,
    /// their outcomes are recorded; what is still pending stays in the outbox
    /// for the next start.
    pub async fn shutdown(mut self) {
        self.stop_watcher();
        self.hooks.clear(); // closes the channels: tasks stop taking new work
        while self.tasks.join_next().await.is_some() {}
        self.stop_writer().await;
    }

    /// Delivers everything queued (for runs that end by themselves, like the
    /// demo), waiting at most `timeout`; what is left stays in the outbox.
    pub async fn drain(mut self, timeout: Duration) {
        self.stop_watcher();
        for hook in &self.hooks {
            let _ = hook.tx.send(Msg::Drain);
        }
        let drained = tokio::time::timeout(timeout, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("not everything was delivered in time; the rest stays in the outbox");
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        self.hooks.clear();
        self.stop_writer().await;
    }

    fn stop_watcher(&mut self) {
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
    }

    async fn stop_writer(&mut self) {
        self.outcomes.take();
        if let Some(writer) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }
}

fn schedule(retry: &RetrySettings) -> Schedule {
    Schedule {
        delays: retry.delays.clone(),
        max_event_age: retry.max_event_age,
        jitter: JITTER,
    }
}

/// An outcome for the writer, and where to confirm it once it is durable.
struct Record {
    outcome: Outcome,
    ack: Option<mpsc::UnboundedSender<Ack>>,
}

/// Checks every [`OUTBOX_SYNC_EVERY`] whether another process changed the
/// outbox (SQLite's `data_version`); if so, sends each webhook's task its
/// pending deliveries as they are now. Reads and sends under the store's
/// lock, like the writer's confirmations, so each task sees both in the
/// database's order.
async fn watch_outbox(
    store: Arc<Mutex<Store>>,
    hooks: Arc<[(String, mpsc::UnboundedSender<Ack>, Duration)]>,
    clocks: Clocks,
) {
    let mut seen = lock(&store).data_version().ok();
    let mut ticks = tokio::time::interval(OUTBOX_SYNC_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let store = Arc::clone(&store);
        let hooks = Arc::clone(&hooks);
        let last = seen;
        // SQLite calls block: off the runtime's threads.
        let read = tokio::task::spawn_blocking(move || {
            let db = lock(&store);
            let version = db.data_version()?;
            if Some(version) == last {
                return Ok(version);
            }
            for (name, acks, max_delay) in hooks.iter() {
                let pending = db
                    .pending(name)?
                    .into_iter()
                    .map(|p| clocks.item(p, *max_delay))
                    .collect();
                let given_up = db.given_up_count(name)?;
                let _ = acks.send(Ack::Sync { pending, given_up });
            }
            Ok::<_, StoreError>(version)
        })
        .await;
        match read {
            Ok(Ok(version)) => seen = Some(version),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot check the outbox for changes by `wghook outbox`")
            }
            Err(_) => return,
        }
    }
}

/// The writer thread: records outcomes, as many per transaction as are
/// waiting (group commit), then confirms them, until every sender is gone.
fn write_outcomes(store: &Mutex<Store>, rx: &std::sync::mpsc::Receiver<Record>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let outcomes: Vec<Outcome> = batch.iter().map(|r| r.outcome.clone()).collect();
        // Confirmed while the lock is held, so that a task sees these and
        // the outbox watcher's reads in the order the database saw them.
        let mut db = lock(store);
        if let Err(e) = db.record(&outcomes) {
            // The deliveries stay pending in the file: at worst they are
            // sent again after a restart (receivers dedupe on webhook-id).
            tracing::error!(error = %e, outcomes = batch.len(), "cannot record delivery outcomes");
        }
        for r in batch {
            if let (Some(ack), Outcome::Delivered { seq, .. } | Outcome::GaveUp { seq, .. }) =
                (r.ack, r.outcome)
            {
                let _ = ack.send(Ack::Settled(seq));
            }
        }
        drop(db);
    }
}

/// One webhook's task.
struct Worker {
    stats: Arc<QueueStats>,
    metrics: Option<Metrics>,
    sender: Arc<dyn Transport>,
    schedule: Schedule,
    clocks: Clocks,
    max_in_flight: usize,
    queue: Queue,
    outcomes: std::sync::mpsc::Sender<Record>,
    shutdown_timeout: Duration,
    /// Settled deliveries keep their place (and hold back their peer) until
    /// the writer confirms the outcome is on disk: a crash in between can
    /// only re-send what was in flight.
    ack_tx: mpsc::UnboundedSender<Ack>,
    awaiting: usize,
}

/// The attempt of a delivery whose task panicked: failed, so the delivery is
/// retried per the schedule instead of staying in flight until a restart.
fn panicked(webhook: &str, event: &Event) -> http::Attempt {
    // The panic message stays out of the log: it could quote anything.
    tracing::error!(
        webhook,
        event_id = %event.id,
        "the delivery task panicked (a bug in wghook, please report it); \
         counting the attempt as failed"
    );
    http::Attempt {
        result: AttemptResult::Failed("internal error: the delivery task panicked".into()),
        elapsed: Duration::ZERO,
    }
}

impl Worker {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        mut acks: mpsc::UnboundedReceiver<Ack>,
    ) {
        let mut in_flight: JoinSet<(i64, http::Attempt)> = JoinSet::new();
        let mut disabled = false;
        let mut draining = false;
        loop {
            self.publish_stats();
            if draining
                && (self.queue.is_empty() || disabled)
                && in_flight.is_empty()
                && self.awaiting == 0
            {
                return;
            }
            if !disabled {
                let now_ms = self.clocks.mono_ms();
                while in_flight.len() + self.awaiting < self.max_in_flight {
                    let Some(item) = self.queue.take_due(now_ms) else {
                        break;
                    };
                    // Logged once: at its first attempt (retries go ahead too).
                    if item.attempts == 0 && self.queue.went_ahead(item.seq) {
                        tracing::warn!(
                            webhook = self.sender.name(),
                            event_id = %item.event.id,
                            event = %item.event.filter_name(),
                            wait_s = CROSS_WAIT.as_secs(),
                            "sending ahead of an earlier interface or peer event that is still being retried"
                        );
                    }
                    let sender = Arc::clone(&self.sender);
                    let wall = self.clocks.wall();
                    in_flight.spawn(async move {
                        let attempt = AssertUnwindSafe(sender.send(&item.event, wall))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| panicked(sender.name(), &item.event));
                        (item.seq, attempt)
                    });
                }
            }
            let wake = (!disabled && in_flight.len() + self.awaiting < self.max_in_flight)
                .then(|| self.queue.next_due())
                .flatten()
                .map(|at| {
                    let ms = (at - self.clocks.mono_ms()).max(0);
                    Duration::from_millis(ms as u64)
                });
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Push(items)) => items.into_iter().for_each(|i| self.queue.push(i)),
                    Some(Msg::Drop(seqs)) => {
                        for seq in seqs {
                            self.queue.remove(seq);
                        }
                    }
                    Some(Msg::Drain) => draining = true,
                    None => break,
                },
                // A task aborted at the shutdown timeout is not settled (it
                // stays pending in the outbox).
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Ok((seq, attempt)) = done {
                        disabled |= self.settle(seq, attempt);
                    }
                }
                Some(ack) = acks.recv() => self.acked(ack),
                _ = sleep_opt(wake) => {}
            }
        }
        // Shutdown: let in-flight requests finish, within the timeout.
        let drained = tokio::time::timeout(self.shutdown_timeout, async {
            while let Some(done) = in_flight.join_next().await {
                if let Ok((seq, attempt)) = done {
                    self.settle(seq, attempt);
                }
            }
            while self.awaiting > 0 {
                match acks.recv().await {
                    Some(ack) => self.acked(ack),
                    None => break,
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                webhook = self.sender.name(),
                in_flight = in_flight.len(),
                "shutdown timeout reached; unfinished requests will be sent again after the next start"
            );
            in_flight.abort_all();
        }
    }

    fn acked(&mut self, ack: Ack) {
        match ack {
            Ack::Settled(seq) => self.confirmed(seq),
            Ack::Sync { pending, given_up } => self.sync(pending, given_up),
        }
    }

    /// Takes the outbox as it is now, after a `wghook outbox` command:
    /// deliveries no longer pending (purged) leave the queue, even while in
    /// flight (their outcome is then not recorded); deliveries pending anew
    /// (re-queued dead letters) join it. Outcomes confirmed before this
    /// read are already applied (same channel, same order as the database).
    fn sync(&mut self, pending: Vec<Item>, given_up: u64) {
        let keep: std::collections::HashSet<i64> = pending.iter().map(|i| i.seq).collect();
        let gone: Vec<i64> = self.queue.seqs().filter(|s| !keep.contains(s)).collect();
        let added = pending
            .iter()
            .filter(|i| !self.queue.contains(i.seq))
            .count();
        for seq in &gone {
            self.queue.remove(*seq);
        }
        for item in pending {
            self.queue.push(item);
        }
        self.stats.given_up.store(given_up, Ordering::Relaxed);
        tracing::info!(
            webhook = self.sender.name(),
            removed = gone.len(),
            added,
            "the outbox was changed by `wghook outbox`; queue updated"
        );
    }

    /// The writer has made a delivered or given-up outcome durable.
    fn confirmed(&mut self, seq: i64) {
        self.awaiting = self.awaiting.saturating_sub(1);
        self.queue.remove(seq);
    }

    fn publish_stats(&self) {
        self.stats
            .pending
            .store(self.queue.len() as u64, Ordering::Relaxed);
        let oldest = self.queue.oldest().map_or(0, |t| t.timestamp_millis());
        self.stats.oldest_ms.store(oldest, Ordering::Relaxed);
    }

    /// Applies an attempt's outcome; returns true if the webhook must be disabled.
    fn settle(&mut self, seq: i64, attempt: http::Attempt) -> bool {
        let Some(item) = self.queue.get(seq).cloned() else {
            return false; // dropped by the bound while in flight
        };
        let webhook = self.sender.name().to_string();
        let (status, decision) = match &attempt.result {
            AttemptResult::Status {
                code, retry_after, ..
            } => (Some(*code), classify(Some(*code), *retry_after)),
            AttemptResult::Failed(_) => (None, classify(None, None)),
            AttemptResult::Invalid(_) => (None, Decision::GiveUp),
        };
        let reason = attempt.reason();
        let event_id = item.event.id;
        let event = item.event.filter_name();
        let elapsed_ms = attempt.elapsed.as_millis() as u64;
        let attempts = item.attempts + 1;
        let (now, mono) = (self.clocks.wall(), self.clocks.mono_ms());
        let give_up = |why: &str| {
            tracing::error!(
                webhook = %webhook, event_id = %event_id, event = %event, attempts,
                reason = %reason, "giving up on the event ({why}); `wghook outbox retry` re-sends it"
            );
            Outcome::GaveUp {
                seq,
                webhook: webhook.clone(),
                attempts,
                last_status: status,
                last_error: reason.clone(),
            }
        };
        let mut disable = false;
        let outcome = match decision {
            Decision::Delivered => {
                tracing::debug!(webhook = %webhook, event_id = %event_id, event = %event, status = %reason, elapsed_ms, "delivered");
                Outcome::Delivered {
                    seq,
                    webhook: webhook.clone(),
                }
            }
            Decision::GiveUp if matches!(attempt.result, AttemptResult::Invalid(_)) => {
                give_up("it cannot be sent as configured; retrying would not help")
            }
            Decision::GiveUp => give_up("the receiver rejected it"),
            Decision::Retry { retry_after } => {
                let unit: f64 = rand::random();
                let next = self.schedule.next_attempt(
                    on_timeline(mono),
                    on_timeline(item.born),
                    attempts,
                    retry_after,
                    unit,
                );
                match next.map(|next| next.timestamp_millis().saturating_sub(mono)) {
                    Some(wait_ms) => {
                        self.queue
                            .retry(seq, attempts, mono.saturating_add(wait_ms));
                        tracing::warn!(
                            webhook = %webhook, event_id = %event_id, event = %event, attempts,
                            reason = %reason, retry_in_ms = wait_ms,
                            "delivery failed; will retry"
                        );
                        Outcome::Retry {
                            seq,
                            webhook: webhook.clone(),
                            attempts,
                            next_attempt: now + chrono::TimeDelta::milliseconds(wait_ms),
                            last_status: status,
                            last_error: reason.clone(),
                        }
                    }
                    None => give_up("older than max_event_age"),
                }
            }
            Decision::Disable => {
                disable = true;
                self.queue.retry(seq, attempts, mono);
                tracing::error!(
                    webhook = %webhook, event_id = %event_id,
                    "the receiver answered 410 Gone: webhook disabled until the configuration is reloaded; \
                     its events stay in the outbox"
                );
                Outcome::Retry {
                    seq,
                    webhook: webhook.clone(),
                    attempts,
                    next_attempt: now,
                    last_status: status,
                    last_error: reason.clone(),
                }
            }
        };
        let label = match &outcome {
            Outcome::Delivered { .. } => "delivered",
            Outcome::GaveUp { .. } => {
                self.stats.given_up.fetch_add(1, Ordering::Relaxed);
                "given_up"
            }
            Outcome::Retry { .. } if disable => "disabled",
            Outcome::Retry { .. } => "retry",
        };
        if let Some(metrics) = &self.metrics {
            metrics.delivery(&webhook, label);
        }
        let ack = matches!(outcome, Outcome::Delivered { .. } | Outcome::GaveUp { .. });
        let record = Record {
            outcome,
            ack: ack.then(|| self.ack_tx.clone()),
        };
        if ack {
            self.awaiting += 1;
        }
        if let Err(lost) = self.outcomes.send(record) {
            // The writer is gone (only at shutdown): the delivery stays
            // pending on disk and goes again after the next start.
            if lost.0.ack.is_some() {
                self.confirmed(seq);
            }
        }
        disable
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::{Changes, State};
    use http::{Attempt, AttemptResult};
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

    /// Waits (10 s at most) until `done` holds.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Regression: a panic inside a delivery task was dropped with its
    /// `JoinError`, leaving the event in flight (never retried, never
    /// settled) until a restart.
    #[tokio::test]
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
    #[tokio::test]
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
    #[tokio::test]
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
    #[tokio::test]
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
    #[tokio::test]
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
    #[tokio::test]
    async fn a_stored_retry_far_ahead_waits_at_most_the_largest_step() {
        {
            let clocks = Clocks::new(Utc::now);
            let e = event(1);
            let now = Utc::now();
            let item = clocks.item(
                outbox::Pending {
                    seq: 1,
                    event: e,
                    created_at: now + chrono::TimeDelta::hours(1),
                    attempts: 1,
                    next_attempt: now + chrono::TimeDelta::hours(1),
                },
                Duration::from_secs(30),
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
    #[tokio::test]
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
}
