//! One webhook's task: takes what its queue lets go, sends it, settles it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::health::{Change, Health};
use super::http::{self, AttemptResult};
use super::retry::{classify, Decision, Schedule};
use super::scheduler::CROSS_WAIT;
use super::scheduler::{Item, Queue};
use crate::event::Event;
use crate::metrics::Metrics;
use crate::outbox::Outcome;

use super::types::*;

/// One webhook's task.
pub(super) struct Worker {
    pub(super) stats: Arc<QueueStats>,
    pub(super) metrics: Option<Metrics>,
    pub(super) sender: Arc<dyn Transport>,
    pub(super) schedule: Schedule,
    pub(super) clocks: Clocks,
    pub(super) max_in_flight: usize,
    pub(super) queue: Queue,
    pub(super) outcomes: std::sync::mpsc::Sender<Record>,
    pub(super) shutdown_timeout: Duration,
    /// Settled deliveries keep their place (and hold back their peer) until
    /// the writer confirms the outcome is on disk: a crash in between can
    /// only re-send what was in flight.
    pub(super) ack_tx: mpsc::UnboundedSender<Ack>,
    pub(super) awaiting: usize,
    /// Whether the receiver looks down (then one probe at a time).
    pub(super) health: Health,
}

/// The attempt of a delivery whose task panicked: failed, so the delivery is
/// retried per the schedule instead of staying in flight until a restart.
pub(super) fn panicked(webhook: &str, event: &Event) -> http::Attempt {
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
    pub(super) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        mut acks: mpsc::UnboundedReceiver<Ack>,
    ) {
        let mut in_flight: JoinSet<(i64, http::Attempt)> = JoinSet::new();
        let mut disabled = false;
        let mut draining = false;
        self.publish_health();
        loop {
            self.publish_stats();
            if draining
                && (self.queue.is_empty() || disabled)
                && in_flight.is_empty()
                && self.awaiting == 0
            {
                return;
            }
            let now = self.clocks.now();
            let limit = self.health.limit(self.max_in_flight);
            if !disabled {
                if self.health.is_down() {
                    self.expire(now);
                }
                while in_flight.len() + self.awaiting < limit && self.health.may_send(now.mono) {
                    let Some(item) = self.queue.take_due(now.mono) else {
                        break;
                    };
                    self.health.sending(item.seq);
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
                    let wall = now.wall;
                    in_flight.spawn(async move {
                        let attempt = AssertUnwindSafe(sender.send(&item.event, wall))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| panicked(sender.name(), &item.event));
                        (item.seq, attempt)
                    });
                }
            }
            let send_at = (!disabled && in_flight.len() + self.awaiting < limit)
                .then(|| self.queue.next_due())
                .flatten()
                .map(|at| at.max(self.health.next_probe().unwrap_or(i64::MIN)));
            // While down, events still age out (no attempt tells them to).
            let expire_at = (!disabled && self.health.is_down())
                .then(|| self.queue.oldest_idle_born())
                .flatten()
                .map(|born| born.saturating_add(self.max_event_age_ms()));
            let wake = send_at.into_iter().chain(expire_at).min().map(|at| {
                let ms = (at - now.mono).max(0);
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
                        disabled |= self.settle(seq, attempt, self.clocks.now());
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
                    self.settle(seq, attempt, self.clocks.now());
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

    pub(super) fn acked(&mut self, ack: Ack) {
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
    pub(super) fn sync(&mut self, pending: Vec<Item>, given_up: u64) {
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
    pub(super) fn confirmed(&mut self, seq: i64) {
        self.awaiting = self.awaiting.saturating_sub(1);
        self.queue.remove(seq);
    }

    pub(super) fn publish_stats(&self) {
        self.stats
            .pending
            .store(self.queue.len() as u64, Ordering::Relaxed);
        let oldest = self.queue.oldest().map_or(0, |t| t.timestamp_millis());
        self.stats.oldest_ms.store(oldest, Ordering::Relaxed);
    }

    fn max_event_age_ms(&self) -> i64 {
        i64::try_from(self.schedule.max_event_age.as_millis()).unwrap_or(i64::MAX)
    }

    /// While the receiver is down, gives up the events (not in flight) that
    /// are `max_event_age` old: no failed attempt of theirs would.
    fn expire(&mut self, now: Now) {
        let cutoff = now.mono.saturating_sub(self.max_event_age_ms());
        let webhook = self.sender.name().to_string();
        while let Some(item) = self.queue.take_born_by(cutoff) {
            tracing::error!(
                webhook = %webhook, event_id = %item.event.id, event = %item.event.filter_name(),
                attempts = item.attempts,
                "giving up on the event (older than max_event_age; the receiver is down); \
                 `wghook outbox retry` re-sends it"
            );
            self.stats.given_up.fetch_add(1, Ordering::Relaxed);
            let outcome = Outcome::GaveUp {
                seq: item.seq,
                webhook: webhook.clone(),
                attempts: item.attempts,
                last_status: None,
                last_error: "older than max_event_age while the receiver was down".into(),
            };
            self.record(item.seq, outcome);
        }
    }

    /// Hands a settled outcome to the writer; a delivered or given-up one
    /// keeps its place until the writer confirms it.
    fn record(&mut self, seq: i64, outcome: Outcome) {
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
    }

    /// Applies what an outcome says about the receiver.
    fn health_changed(&mut self, change: Change, mono: i64) {
        let webhook = self.sender.name();
        match change {
            Change::None => return,
            Change::WentDown { next_probe } => tracing::warn!(
                webhook,
                pending = self.queue.len(),
                next_probe_in_ms = (next_probe - mono).max(0),
                "the receiver looks down: sending one request at a time until it answers"
            ),
            Change::CameBack { release } => {
                for &seq in &release {
                    self.queue.release(seq, mono);
                }
                tracing::info!(
                    webhook,
                    pending = self.queue.len(),
                    "the receiver answered again: sending everything due"
                );
            }
        }
        self.publish_health();
    }

    fn publish_health(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.set_healthy(self.sender.name(), !self.health.is_down());
        }
    }

    /// Applies an attempt's outcome; returns true if the webhook must be disabled.
    pub(super) fn settle(&mut self, seq: i64, attempt: http::Attempt, now: Now) -> bool {
        let disable = self.settle_item(seq, attempt, now);
        self.health.done(seq);
        disable
    }

    fn settle_item(&mut self, seq: i64, attempt: http::Attempt, now: Now) -> bool {
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
        let Now { wall: now, mono } = now;
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
                let change =
                    self.health
                        .failed(seq, mono, retry_after, &self.schedule, rand::random());
                self.health_changed(change, mono);
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
        // The receiver answered (2xx, or a status that gives the event
        // up): it is up, whatever it thought of this event.
        let answered = matches!(outcome, Outcome::Delivered { .. })
            || matches!(
                (&outcome, &attempt.result),
                (Outcome::GaveUp { .. }, AttemptResult::Status { code, .. })
                    if classify(Some(*code), None) == Decision::GiveUp
            );
        if answered {
            let change = self.health.answered(seq);
            self.health_changed(change, mono);
        }
        self.record(seq, outcome);
        disable
    }
}

pub(super) async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
