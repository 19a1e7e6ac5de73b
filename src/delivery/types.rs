//! The plain things the delivery engine's parts share: clocks, the
//! messages between the poll loop, the tasks and the writer, queue figures.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::http::{self, HttpSender};
use super::scheduler::Item;
use crate::event::Event;
use crate::outbox::{self, Outcome, Store};

/// What a webhook's task sends with: the [`HttpSender`] (a stand-in in tests).
pub(super) trait Transport: Send + Sync + 'static {
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
pub(super) struct Clocks {
    pub(super) origin: tokio::time::Instant,
    pub(super) wall: fn() -> DateTime<Utc>,
}

impl Clocks {
    pub(super) fn new(wall: fn() -> DateTime<Utc>) -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            wall,
        }
    }

    /// Milliseconds since the engine started, on the monotonic clock.
    pub(super) fn mono_ms(&self) -> i64 {
        self.origin.elapsed().as_millis() as i64
    }

    pub(super) fn wall(&self) -> DateTime<Utc> {
        (self.wall)()
    }

    /// Both clocks, read once.
    pub(super) fn now(&self) -> Now {
        Now {
            mono: self.mono_ms(),
            wall: self.wall(),
        }
    }
}

/// One reading of the engine's clocks. The engine reads them only where
/// it meets the outside (a commit, a turn of a webhook's task, an attempt's
/// outcome, a read of the outbox) and passes the reading to its logic, as
/// the poll loop passes `now` to the tracker.
#[derive(Clone, Copy)]
pub(super) struct Now {
    /// Milliseconds since the engine started, on the monotonic clock.
    pub(super) mono: i64,
    pub(super) wall: DateTime<Utc>,
}

/// A stored pending delivery on this run's monotonic clock at `now`: its
/// age and its wait are taken from the wall times it was stored with, the
/// wait capped at `max_delay` (a clock stepped back before this start must
/// not postpone it) and neither below zero.
pub(super) fn pending_item(p: outbox::Pending, max_delay: Duration, now: Now) -> Item {
    let Now { mono, wall } = now;
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

/// A monotonic instant (ms) as a `DateTime`, for the retry policy, which
/// counts in `DateTime`s and only ever subtracts them.
pub(super) fn on_timeline(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Messages from the poll loop to one webhook's task.
pub(super) enum Msg {
    Push(Vec<Item>),
    Drop(Vec<i64>),
    /// Finish everything queued (retries included), then stop.
    Drain,
}

/// What the outbox tells a webhook's task.
pub(super) enum Ack {
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
    pub(super) pending: AtomicU64,
    pub(super) given_up: AtomicU64,
    /// Commit time (Unix ms) of the oldest pending event; 0 when none.
    pub(super) oldest_ms: AtomicI64,
}

/// A webhook's queue figures at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSnapshot {
    pub webhook: String,
    pub pending: u64,
    pub given_up: u64,
    pub oldest: Option<DateTime<Utc>>,
}

/// Locks the store; a poisoned lock (a panic while holding it) still holds a
/// consistent database, since every change is one SQLite transaction.
pub fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

/// An outcome for the writer, and where to confirm it once it is durable.
pub(super) struct Record {
    pub(super) outcome: Outcome,
    pub(super) ack: Option<mpsc::UnboundedSender<Ack>>,
}
