//! Sending events to webhooks.
//!
//! [`Delivery`] is the poller's only handle on sending: `submit` never
//! blocks, so a slow or dead receiver never delays a poll. Each webhook has
//! its own queue and task, so a dead receiver does not hold back a live one;
//! within a webhook, events go out in the order they were submitted.
//!
//! This is the simple form: one attempt per event, failures logged with the
//! reason and the event id. Durable queuing and retries replace the queue
//! behind the same `submit`/`shutdown` interface.

pub mod http;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::event::Event;
use http::HttpSender;

/// Per-webhook queues and their sending tasks.
pub struct Delivery {
    queues: Vec<mpsc::UnboundedSender<Arc<Event>>>,
    tasks: JoinSet<()>,
}

impl Delivery {
    /// Starts one sending task per webhook. Must be called inside a tokio runtime.
    pub fn start(senders: Vec<HttpSender>) -> Self {
        let mut tasks = JoinSet::new();
        let mut queues = Vec::with_capacity(senders.len());
        for sender in senders {
            let (tx, rx) = mpsc::unbounded_channel();
            queues.push(tx);
            tasks.spawn(send_loop(sender, rx));
        }
        Self { queues, tasks }
    }

    /// Number of webhooks events go to.
    pub fn webhook_count(&self) -> usize {
        self.queues.len()
    }

    /// Queues `events` for every webhook; returns at once.
    pub fn submit(&self, events: &[Event]) {
        for event in events {
            let event = Arc::new(event.clone());
            for queue in &self.queues {
                // A closed queue means its task ended, which only happens at shutdown.
                let _ = queue.send(Arc::clone(&event));
            }
        }
    }

    /// Stops taking events and lets queued and in-flight requests finish, for
    /// at most `timeout`; what is left after that is abandoned and logged.
    pub async fn shutdown(mut self, timeout: Duration) {
        self.queues.clear();
        let drained = tokio::time::timeout(timeout, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                timeout_secs = timeout.as_secs_f64(),
                "shutdown timeout reached; unsent events are dropped"
            );
            self.tasks.abort_all();
        }
    }
}

async fn send_loop(sender: HttpSender, mut queue: mpsc::UnboundedReceiver<Arc<Event>>) {
    while let Some(event) = queue.recv().await {
        let attempt = sender.send(&event, Utc::now()).await;
        let elapsed_ms = attempt.elapsed.as_millis() as u64;
        if attempt.delivered() {
            tracing::debug!(
                webhook = sender.name(),
                event_id = %event.id,
                event = %event.filter_name(),
                status = %attempt.reason(),
                elapsed_ms,
                "delivered"
            );
        } else {
            tracing::warn!(
                webhook = sender.name(),
                event_id = %event.id,
                event = %event.filter_name(),
                reason = %attempt.reason(),
                elapsed_ms,
                "delivery failed"
            );
        }
    }
}
