//! The durable outbox: one SQLite file holding the events still to deliver,
//! each webhook's progress on them, and the tracker's saved state.
//!
//! Invariants:
//! - the events of one poll, their delivery rows and the tracker state they
//!   came from are written in **one transaction** ([`Store::commit_poll`]):
//!   after a crash the database holds both or neither;
//! - an event row exists while at least one delivery row (pending or given
//!   up) refers to it;
//! - the bound (`max_pending_events`) is enforced at commit: the oldest
//!   pending events are dropped and returned, so the caller can log them;
//!   given-up records (dead letters) do not count against it, but are kept
//!   to the same number: the oldest beyond it are deleted and returned too;
//! - WAL journal with `synchronous=FULL`: a committed poll survives a crash
//!   or power loss; other processes (the `wghook outbox` CLI) may read and
//!   write the file while the daemon runs. Every write takes the write lock
//!   up front (`BEGIN IMMEDIATE`); the CLI's bulk writes go in short batches
//!   ([`CLI_BATCH`] rows) with a pause between them, so the daemon's poll
//!   commit never waits long. A write that still finds the file locked past
//!   the busy timeout fails with [`StoreError::Busy`], which is retriable.
//!
//! This module is synchronous; the daemon drives it from a dedicated thread.
//!
//! Rooms: `open` (the file and its schema), `events` (events, deliveries,
//! the bound), `state` (the tracker's saved state), `quarantine` (rows that
//! cannot be read).

mod events;
mod open;
mod quarantine;
mod state;

#[cfg(test)]
mod bounds_and_locks;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use uuid::Uuid;

use crate::event::Event;

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "wghook.db";

const SCHEMA_VERSION: i64 = 1;

/// How long a write waits for another process's write lock before failing
/// with [`StoreError::Busy`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows the CLI's bulk writes ([`Store::requeue`], [`Store::purge`]) change
/// per transaction: each holds the write lock for milliseconds only.
pub const CLI_BATCH: usize = 500;

/// The CLI's pause between two batches, so a waiting daemon gets the lock.
const CLI_BATCH_PAUSE: Duration = Duration::from_millis(10);

/// Why the outbox could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("outbox {path}: {message}")]
    Open { path: PathBuf, message: String },
    /// Another process (`wghook outbox retry`/`purge`) held the write lock
    /// longer than the busy timeout. Nothing was written: try again.
    #[error("outbox {path}: the database is locked by another process (is `wghook outbox` running?): {source}")]
    Busy {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("outbox {path}: database error: {source}")]
    Sql {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("outbox {path}: holds a record that cannot be read ({what}): {message}")]
    Corrupt {
        path: PathBuf,
        what: String,
        message: String,
    },
}

impl StoreError {
    /// True when the same operation may succeed if tried again
    /// ([`StoreError::Busy`]): the transaction was rolled back as a whole.
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Busy { .. })
    }

    /// The same error naming the database file `path` (every error a
    /// [`Store`] method returns names it).
    fn at(mut self, file: &Path) -> Self {
        match &mut self {
            StoreError::Open { path, .. }
            | StoreError::Busy { path, .. }
            | StoreError::Sql { path, .. }
            | StoreError::Corrupt { path, .. } => {
                if path.as_os_str().is_empty() {
                    *path = file.to_path_buf();
                }
            }
        }
        self
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Busy {
                    path: PathBuf::new(),
                    source: e,
                }
            }
            _ => StoreError::Sql {
                path: PathBuf::new(),
                source: e,
            },
        }
    }
}

/// A delivery still to make, loaded at start.
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: i64,
    pub event: Event,
    /// When the event was committed (the start of `max_event_age`).
    pub created_at: DateTime<Utc>,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
}

/// What one attempt (or the giving up) did to a delivery row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        seq: i64,
        webhook: String,
    },
    /// Failed; try again at `next_attempt`.
    Retry {
        seq: i64,
        webhook: String,
        attempts: u32,
        next_attempt: DateTime<Utc>,
        last_status: Option<u16>,
        last_error: String,
    },
    /// Failed for good (dead letter): kept for `wghook outbox retry`.
    GaveUp {
        seq: i64,
        webhook: String,
        attempts: u32,
        last_status: Option<u16>,
        last_error: String,
    },
}

/// An event dropped because the outbox was full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub seq: i64,
    pub id: Uuid,
    pub name: String,
}

/// A given-up delivery (dead letter) deleted to keep the bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedDeadLetter {
    pub seq: i64,
    pub id: Uuid,
    pub name: String,
    pub webhook: String,
}

/// What a poll's commit did.
#[derive(Debug, Default)]
pub struct Committed {
    /// The outbox sequence number of each event, in input order (`None`:
    /// no webhook wanted it, nothing stored).
    pub seqs: Vec<Option<i64>>,
    /// Events dropped to keep the bound, oldest first.
    pub dropped: Vec<Dropped>,
    /// Dead letters deleted because there were more than the bound, oldest
    /// first (they do not count against the pending bound).
    pub dead_letters_dropped: Vec<DroppedDeadLetter>,
}

/// One row of `wghook outbox`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub webhook: String,
    pub state: String,
    pub id: String,
    pub event: String,
    pub identifier: String,
    pub created_at: DateTime<Utc>,
    pub attempts: u32,
    pub next_attempt: Option<DateTime<Utc>>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// The outbox database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Rows moved to the quarantine table and not yet counted in metrics.
    quarantined: std::cell::Cell<u64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A column read as text, if it is text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Text(t) => Some(t.clone()),
        _ => None,
    }
}

/// A column for a log line (what a row was about).
fn describe(v: &Value) -> String {
    text(v).unwrap_or_else(|| "(not text)".to_string())
}

/// The value of `key` in the meta table, if set.
fn read_meta(conn: &Connection, key: &str) -> Result<Option<String>, rusqlite::Error> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}
