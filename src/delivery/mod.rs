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
//!
//! Rooms: `types` (the plain things the parts share), `worker` (one
//! webhook's task), `health` (whether a receiver looks down: one probe at
//! a time), `watcher` (the writer thread and the outbox watcher).

pub mod auth;
pub mod http;
pub mod retry;
pub mod scheduler;
pub mod settings;
pub mod signing;
pub mod webhook_settings;

mod health;
mod net;
mod types;
mod watcher;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::event::filter::EventFilter;
use crate::event::Event;
use crate::metrics::Metrics;
use crate::outbox::{self, Store, StoreError};
use crate::tracker::{Changes, State};
use health::Health;
use http::HttpSender;
use retry::Schedule;
use scheduler::{Item, Queue};
use settings::{DeliverySettings, RetrySettings, Webhook};
use types::*;
pub use types::{lock, QueueSnapshot, QueueStats, OUTBOX_SYNC_EVERY};
use watcher::{watch_outbox, write_outcomes};
use worker::Worker;

/// Jitter applied to every retry delay (+/-20 %).
const JITTER: f64 = 0.2;

struct Hook {
    name: String,
    events: EventFilter,
    tx: mpsc::UnboundedSender<Msg>,
    /// The task's other channel: the writer's confirmations and the
    /// outbox's contents after a `wghook outbox` command, in the order the
    /// database saw them.
    acks: mpsc::UnboundedSender<Ack>,
    max_delay: Duration,
    stats: Arc<QueueStats>,
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
            let now = clocks.now();
            for (hook, sender) in webhooks {
                let mut queue = Queue::default();
                let schedule = schedule(&hook.retry);
                for p in db.pending(&hook.name)? {
                    let mut item = pending_item(p, schedule.max_delay(), now);
                    // Events that had failed are due at once, not at their
                    // stored retry times: wghook may have stopped in an
                    // outage the receiver is over by now. If it is not, two
                    // failures take the webhook down again (at most
                    // `max_in_flight` requests before that), as at any start.
                    if item.attempts > 0 {
                        item.due = now.mono;
                    }
                    queue.push(item);
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
                    health: Health::default(),
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
        let Now { wall: now, mono } = self.clocks.now();
        let routes: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                self.hooks
                    .iter()
                    .filter(|h| h.events.matches(e))
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
