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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;
use uuid::Uuid;

use crate::event::Event;
use crate::model::PublicKey;
use crate::tracker::{Changes, InterfaceState, PeerState, State, STATE_VERSION};

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

/// The value of `key` in the meta table, if set.
/// Creates `path` with mode 0600 if missing; makes it (and existing -wal and
/// -shm files) 0600 otherwise.
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if suffix.is_empty() || e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e)
            }
            _ => {}
        }
    }
    Ok(())
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

fn read_meta(conn: &Connection, key: &str) -> Result<Option<String>, rusqlite::Error> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

impl Store {
    /// Opens (creating if needed) the outbox in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        // Setting up a new database (WAL mode, tables) can meet another
        // process doing the same; SQLite then answers "busy" at once rather
        // than wait, so the set-up is tried again for up to the busy timeout.
        let give_up = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match Self::open_unnamed(dir) {
                Err(e) if e.is_retriable() && std::time::Instant::now() < give_up => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other.map_err(|e| e.at(&dir.join(DB_FILE))),
            }
        }
    }

    fn open_unnamed(dir: &Path) -> Result<Self, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: dir.join(DB_FILE),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| {
            open_err(format!(
                "cannot create the state directory: {e} (set monitor.state_dir to a writable directory)"
            ))
        })?;
        let path = dir.join(DB_FILE);
        // Owner only, whatever the umask: SQLite gives its -wal and -shm
        // files the database file's mode. An existing file is tightened.
        restrict(&path).map_err(|e| {
            open_err(format!(
                "cannot create or restrict to 0600: {e} (set monitor.state_dir to a writable directory)"
            ))
        })?;
        let conn = Connection::open(&path).map_err(|e| {
            open_err(format!(
                "cannot open: {e} (set monitor.state_dir to a writable directory)"
            ))
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS events(
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 id TEXT NOT NULL UNIQUE,
                 name TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS deliveries(
                 seq INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
                 webhook TEXT NOT NULL,
                 state TEXT NOT NULL CHECK (state IN ('pending', 'given_up')),
                 attempts INTEGER NOT NULL DEFAULT 0,
                 next_attempt INTEGER NOT NULL,
                 last_status INTEGER,
                 last_error TEXT,
                 PRIMARY KEY (seq, webhook));
             CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries(state, seq);
             CREATE TABLE IF NOT EXISTS tracker_interfaces(name TEXT PRIMARY KEY, data TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS quarantine(
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 at INTEGER NOT NULL,
                 source TEXT NOT NULL,
                 row TEXT NOT NULL,
                 reason TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS tracker_peers(
                 interface TEXT NOT NULL,
                 key BLOB NOT NULL,
                 data TEXT NOT NULL,
                 PRIMARY KEY (interface, key));",
        )?;
        let version = read_meta(&conn, "schema")?;
        match version.as_deref().map(str::parse::<i64>) {
            None => {
                // Another process may be creating the database too.
                conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(Ok(SCHEMA_VERSION)) => {}
            Some(_) => {
                return Err(open_err(format!(
                    "written by another wghook version (schema {}); this one reads schema {SCHEMA_VERSION}",
                    version.unwrap_or_default()
                )))
            }
        }
        Ok(Self {
            conn,
            path,
            quarantined: std::cell::Cell::new(0),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tracker state saved by the last commit, or `None` before the first.
    pub fn load_state(&self) -> Result<Option<State>, StoreError> {
        self.load_state_unnamed().map_err(|e| e.at(&self.path))
    }

    fn load_state_unnamed(&self) -> Result<Option<State>, StoreError> {
        let saved = read_meta(&self.conn, "state_version")?;
        match saved.as_deref().map(str::parse::<u32>) {
            None => return Ok(None),
            Some(Ok(v)) if v == STATE_VERSION => {}
            Some(_) => {
                // A state from an incompatible version: start afresh rather than misreport.
                tracing::warn!(
                    "saved tracker state has another format; starting as on a first start"
                );
                return Ok(None);
            }
        }
        let mut state = State::empty();
        // A row that cannot be read is moved to the quarantine table (and
        // logged once): the rest of the state loads, and the daemon starts.
        let mut bad: Vec<(&str, i64, String, String)> = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT rowid, name, data FROM tracker_interfaces")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Value>(1)?,
                r.get::<_, Value>(2)?,
            ))
        })?;
        for row in rows {
            let (rowid, name, data) = row?;
            let read = text(&name)
                .zip(text(&data))
                .ok_or_else(|| "not text".to_string());
            match read.and_then(|(name, data)| {
                serde_json::from_str::<InterfaceState>(&data)
                    .map(|iface| (name, iface))
                    .map_err(|e| e.to_string())
            }) {
                Ok((name, mut iface)) => {
                    iface.peers.clear();
                    state.interfaces.insert(name, iface);
                }
                Err(why) => bad.push(("tracker_interfaces", rowid, describe(&name), why)),
            }
        }
        let mut stmt = self
            .conn
            .prepare("SELECT rowid, interface, key, data FROM tracker_peers")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Value>(1)?,
                r.get::<_, Value>(2)?,
                r.get::<_, Value>(3)?,
            ))
        })?;
        for row in rows {
            let (rowid, iface, key, data) = row?;
            let read = (|| {
                let iface = text(&iface).ok_or("the interface is not text")?;
                let key = match &key {
                    Value::Blob(b) => PublicKey::from_slice(b).map_err(|e| e.to_string())?,
                    _ => return Err("the key is not a blob".to_string()),
                };
                let data = text(&data).ok_or("the data is not text")?;
                let peer: PeerState = serde_json::from_str(&data).map_err(|e| e.to_string())?;
                Ok::<_, String>((iface, key, peer))
            })();
            match read {
                Ok((iface, key, peer)) => {
                    if let Some(i) = state.interfaces.get_mut(&iface) {
                        i.peers.insert(key, peer);
                    }
                }
                Err(why) => bad.push(("tracker_peers", rowid, describe(&iface), why)),
            }
        }
        drop(stmt);
        for (table, rowid, about, why) in bad {
            self.quarantine(table, rowid, &why)?;
            tracing::warn!(
                database = %self.path.display(), table, rowid, interface = %about, reason = %why,
                "unreadable tracker state row moved to the quarantine table; that peer or interface is tracked afresh"
            );
        }
        let meta = read_meta(&self.conn, "tracker_meta")?;
        if let Some(meta) = meta {
            match serde_json::from_str::<TrackerMeta>(&meta) {
                Ok(meta) => {
                    state.filter = meta.filter;
                    state.unbaselined = meta.unbaselined;
                }
                Err(e) => {
                    let rowid: i64 = self.conn.query_row(
                        "SELECT rowid FROM meta WHERE key = 'tracker_meta'",
                        [],
                        |r| r.get(0),
                    )?;
                    self.quarantine("meta", rowid, &e.to_string())?;
                    tracing::warn!(
                        database = %self.path.display(), reason = %e,
                        "unreadable tracker filter moved to the quarantine table; the configured filter applies"
                    );
                }
            }
        }
        Ok(Some(state))
    }

    /// Commits one poll: its events with a delivery row per webhook that wants
    /// it (`routes[i]` for `events[i]`), the tracker state changes, then the
    /// bound. One transaction.
    pub fn commit_poll(
        &mut self,
        events: &[Event],
        routes: &[Vec<String>],
        state: &State,
        changes: &Changes,
        now: DateTime<Utc>,
        max_pending: u64,
    ) -> Result<Committed, StoreError> {
        self.commit_poll_unnamed(events, routes, state, changes, now, max_pending)
            .map_err(|e| e.at(&self.path))
    }

    fn commit_poll_unnamed(
        &mut self,
        events: &[Event],
        routes: &[Vec<String>],
        state: &State,
        changes: &Changes,
        now: DateTime<Utc>,
        max_pending: u64,
    ) -> Result<Committed, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Committed::default();
        {
            let mut insert_event = tx.prepare_cached(
                "INSERT INTO events(id, name, created_at, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut insert_delivery = tx.prepare_cached(
                "INSERT INTO deliveries(seq, webhook, state, attempts, next_attempt)
                 VALUES (?1, ?2, 'pending', 0, ?3)",
            )?;
            for (event, hooks) in events.iter().zip(routes) {
                if hooks.is_empty() {
                    out.seqs.push(None);
                    continue;
                }
                let body = serde_json::to_string(event).map_err(|e| StoreError::Corrupt {
                    path: PathBuf::new(),
                    what: format!("event {}", event.id),
                    message: e.to_string(),
                })?;
                insert_event.execute(params![
                    event.id.to_string(),
                    event.filter_name(),
                    millis(now),
                    body
                ])?;
                let seq = tx.last_insert_rowid();
                for hook in hooks {
                    insert_delivery.execute(params![seq, hook, millis(now)])?;
                }
                out.seqs.push(Some(seq));
            }
        }
        save_state(&tx, state, changes)?;
        (out.dropped, out.dead_letters_dropped) = enforce_bound(&tx, max_pending)?;
        tx.commit()?;
        Ok(out)
    }

    /// Records the outcomes of attempts, in one transaction.
    pub fn record(&mut self, outcomes: &[Outcome]) -> Result<(), StoreError> {
        self.record_unnamed(outcomes).map_err(|e| e.at(&self.path))
    }

    fn record_unnamed(&mut self, outcomes: &[Outcome]) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut delete =
                tx.prepare_cached("DELETE FROM deliveries WHERE seq = ?1 AND webhook = ?2")?;
            let mut orphan = tx.prepare_cached(
                "DELETE FROM events WHERE seq = ?1 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE seq = ?1)",
            )?;
            let mut retry = tx.prepare_cached(
                "UPDATE deliveries SET attempts = ?3, next_attempt = ?4, last_status = ?5, last_error = ?6
                 WHERE seq = ?1 AND webhook = ?2 AND state = 'pending'",
            )?;
            let mut gave_up = tx.prepare_cached(
                "UPDATE deliveries SET state = 'given_up', attempts = ?3, last_status = ?4, last_error = ?5
                 WHERE seq = ?1 AND webhook = ?2",
            )?;
            for outcome in outcomes {
                match outcome {
                    Outcome::Delivered { seq, webhook } => {
                        delete.execute(params![seq, webhook])?;
                        orphan.execute(params![seq])?;
                    }
                    Outcome::Retry {
                        seq,
                        webhook,
                        attempts,
                        next_attempt,
                        last_status,
                        last_error,
                    } => {
                        retry.execute(params![
                            seq,
                            webhook,
                            attempts,
                            millis(*next_attempt),
                            last_status,
                            last_error
                        ])?;
                    }
                    Outcome::GaveUp {
                        seq,
                        webhook,
                        attempts,
                        last_status,
                        last_error,
                    } => {
                        gave_up.execute(params![
                            seq,
                            webhook,
                            attempts,
                            last_status,
                            last_error
                        ])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The pending deliveries of one webhook, oldest first.
    pub fn pending(&self, webhook: &str) -> Result<Vec<Pending>, StoreError> {
        self.pending_unnamed(webhook).map_err(|e| e.at(&self.path))
    }

    fn pending_unnamed(&self, webhook: &str) -> Result<Vec<Pending>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT d.seq, e.body, e.created_at, d.attempts, d.next_attempt
             FROM deliveries d JOIN events e ON e.seq = d.seq
             WHERE d.webhook = ?1 AND d.state = 'pending' ORDER BY d.seq",
        )?;
        let rows = stmt.query_map([webhook], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, body, created, attempts, next) = row?;
            match serde_json::from_str::<Event>(&body) {
                Ok(event) => out.push(Pending {
                    seq,
                    event,
                    created_at: from_millis(created),
                    attempts,
                    next_attempt: from_millis(next),
                }),
                Err(e) => {
                    // Moved aside, reported once: one bad row must not stop
                    // the delivery of the others.
                    self.quarantine("events", seq, &e.to_string())?;
                    tracing::error!(
                        database = %self.path.display(), seq, webhook, error = %e,
                        "unreadable event moved from the outbox to the quarantine table; it cannot be delivered"
                    );
                }
            }
        }
        Ok(out)
    }

    /// Webhook names that have pending deliveries, with their counts.
    pub fn pending_webhooks(&self) -> Result<HashMap<String, u64>, StoreError> {
        self.pending_webhooks_unnamed()
            .map_err(|e| e.at(&self.path))
    }

    fn pending_webhooks_unnamed(&self) -> Result<HashMap<String, u64>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT webhook, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY webhook",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every pending and given-up delivery (optionally of one webhook).
    pub fn list(&self, webhook: Option<&str>) -> Result<Vec<Listed>, StoreError> {
        self.list_unnamed(webhook).map_err(|e| e.at(&self.path))
    }

    fn list_unnamed(&self, webhook: Option<&str>) -> Result<Vec<Listed>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT d.webhook, d.state, e.id, e.name, e.body, e.created_at, d.attempts,
                    d.next_attempt, d.last_status, d.last_error
             FROM deliveries d JOIN events e ON e.seq = d.seq
             WHERE ?1 IS NULL OR d.webhook = ?1
             ORDER BY d.webhook, d.state, d.seq",
        )?;
        let rows = stmt.query_map([webhook], |r| {
            let state: String = r.get(1)?;
            let next: i64 = r.get(7)?;
            let body: String = r.get(4)?;
            Ok(Listed {
                webhook: r.get(0)?,
                next_attempt: (state == "pending").then(|| from_millis(next)),
                state,
                id: r.get(2)?,
                event: r.get(3)?,
                identifier: serde_json::from_str::<Event>(&body)
                    .map(|e| e.identifier())
                    .unwrap_or_default(),
                created_at: from_millis(r.get(5)?),
                attempts: r.get(6)?,
                last_status: r.get(8)?,
                last_error: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Puts given-up deliveries back in the queue (all of them, or those of
    /// one webhook, or the given event ids). Returns how many. Runs in
    /// batches of [`CLI_BATCH`] (see the module doc), each durable on its own.
    pub fn requeue(
        &mut self,
        webhook: Option<&str>,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.requeue_unnamed(webhook, ids, now)
            .map_err(|e| e.at(&self.path))
    }

    fn requeue_unnamed(
        &mut self,
        webhook: Option<&str>,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        const UPDATE: &str =
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt = ?1
             WHERE rowid IN (SELECT rowid FROM deliveries
                 WHERE state = 'given_up' AND (?2 IS NULL OR webhook = ?2)
                   AND (?3 IS NULL OR seq = (SELECT seq FROM events WHERE id = ?3))
                 LIMIT ?4)";
        if ids.is_empty() {
            return self.in_batches(|tx| {
                let n = tx.prepare_cached(UPDATE)?.execute(params![
                    millis(now),
                    webhook,
                    None::<String>,
                    CLI_BATCH as i64
                ])?;
                Ok((n, n < CLI_BATCH))
            });
        }
        let mut ids = ids.iter();
        self.in_batches(|tx| {
            let mut stmt = tx.prepare_cached(UPDATE)?;
            let mut n = 0;
            for id in ids.by_ref().take(CLI_BATCH) {
                // One event: its rows of every webhook, a handful.
                n += stmt.execute(params![millis(now), webhook, id, i64::MAX])?;
            }
            Ok((n, ids.len() == 0))
        })
    }

    /// Deletes every pending and given-up delivery of the events in the
    /// outbox when it starts, and those events (events committed meanwhile
    /// stay). Returns the number of deliveries removed. Runs in batches of
    /// [`CLI_BATCH`] events (see the module doc), each durable on its own.
    pub fn purge(&mut self) -> Result<usize, StoreError> {
        self.purge_unnamed().map_err(|e| e.at(&self.path))
    }

    fn purge_unnamed(&mut self) -> Result<usize, StoreError> {
        let last: Option<i64> = self
            .conn
            .query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))?;
        let Some(last) = last else {
            return Ok(0);
        };
        self.in_batches(|tx| {
            let seqs: Vec<i64> = tx
                .prepare_cached("SELECT seq FROM events WHERE seq <= ?1 ORDER BY seq LIMIT ?2")?
                .query_map(params![last, CLI_BATCH as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut deliveries = tx.prepare_cached("DELETE FROM deliveries WHERE seq = ?1")?;
            let mut events = tx.prepare_cached("DELETE FROM events WHERE seq = ?1")?;
            let mut n = 0;
            for seq in &seqs {
                n += deliveries.execute([seq])?;
                events.execute([seq])?;
            }
            Ok((n, seqs.len() < CLI_BATCH))
        })
    }

    /// Runs `batch` in one write transaction after another until it reports
    /// it is done, pausing between them; returns the sum of its counts.
    fn in_batches(
        &mut self,
        mut batch: impl FnMut(&Transaction<'_>) -> Result<(usize, bool), StoreError>,
    ) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (n, done) = batch(&tx)?;
            tx.commit()?;
            total += n;
            if done {
                return Ok(total);
            }
            std::thread::sleep(CLI_BATCH_PAUSE);
        }
    }

    /// Moves row `rowid` of `table` into the quarantine table (with its
    /// content as JSON and `why`), in one transaction. Events leave with
    /// their deliveries.
    fn quarantine(&self, table: &str, rowid: i64, why: &str) -> Result<(), StoreError> {
        // Each column as an SQL literal (quote()), whatever its type.
        let columns = match table {
            "events" => "quote(seq), quote(id), quote(name), quote(created_at), quote(body)",
            "tracker_interfaces" => "quote(name), quote(data)",
            "tracker_peers" => "quote(interface), quote(key), quote(data)",
            _ => "quote(key), quote(value)",
        };
        let tx = self.conn.unchecked_transaction()?;
        let row: String = tx.query_row(
            &format!("SELECT json_array({columns}) FROM {table} WHERE rowid = ?1"),
            [rowid],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO quarantine(at, source, row, reason) VALUES (?1, ?2, ?3, ?4)",
            params![millis(Utc::now()), table, row, why],
        )?;
        if table == "events" {
            tx.execute("DELETE FROM deliveries WHERE seq = ?1", [rowid])?;
        }
        tx.execute(&format!("DELETE FROM {table} WHERE rowid = ?1"), [rowid])?;
        tx.commit()?;
        self.quarantined.set(self.quarantined.get() + 1);
        Ok(())
    }

    /// Rows in the quarantine table.
    pub fn quarantined_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM quarantine", [], |r| r.get(0))
            .map_err(|e| StoreError::from(e).at(&self.path))
    }

    /// Rows moved to quarantine since the last call (for the metric).
    pub fn take_quarantined(&self) -> u64 {
        self.quarantined.replace(0)
    }

    /// SQLite's `data_version`: it changes when another connection (a
    /// `wghook outbox` command) committed to the database, never for this
    /// connection's own writes. The running daemon polls it to see `purge`
    /// and `retry` at once.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.data_version_unnamed().map_err(|e| e.at(&self.path))
    }

    fn data_version_unnamed(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Number of given-up deliveries of one webhook.
    pub fn given_up_count(&self, webhook: &str) -> Result<u64, StoreError> {
        self.given_up_count_unnamed(webhook)
            .map_err(|e| e.at(&self.path))
    }

    fn given_up_count_unnamed(&self, webhook: &str) -> Result<u64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM deliveries WHERE webhook = ?1 AND state = 'given_up'",
            [webhook],
            |r| r.get(0),
        )?)
    }

    /// Number of events with at least one pending delivery.
    pub fn pending_count(&self) -> Result<u64, StoreError> {
        self.pending_count_unnamed().map_err(|e| e.at(&self.path))
    }

    fn pending_count_unnamed(&self) -> Result<u64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(DISTINCT seq) FROM deliveries WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }
}

/// Writes what the tracker changed (everything when `changes.all`).
fn save_state(tx: &Transaction<'_>, state: &State, changes: &Changes) -> Result<(), StoreError> {
    let to_json = |what: &str, v: &dyn erased::Json| {
        v.json().map_err(|e| StoreError::Corrupt {
            path: PathBuf::new(),
            what: what.to_string(),
            message: e.to_string(),
        })
    };
    if changes.all {
        tx.execute("DELETE FROM tracker_peers", [])?;
        tx.execute("DELETE FROM tracker_interfaces", [])?;
    }
    let mut put_iface =
        tx.prepare_cached("INSERT OR REPLACE INTO tracker_interfaces(name, data) VALUES (?1, ?2)")?;
    let mut put_peer = tx.prepare_cached(
        "INSERT OR REPLACE INTO tracker_peers(interface, key, data) VALUES (?1, ?2, ?3)",
    )?;
    let mut del_iface = tx.prepare_cached("DELETE FROM tracker_interfaces WHERE name = ?1")?;
    let mut del_iface_peers =
        tx.prepare_cached("DELETE FROM tracker_peers WHERE interface = ?1")?;
    let mut del_peer =
        tx.prepare_cached("DELETE FROM tracker_peers WHERE interface = ?1 AND key = ?2")?;

    for name in &changes.removed_interfaces {
        del_iface.execute([name])?;
        del_iface_peers.execute([name])?;
    }
    for (iface, key) in &changes.removed_peers {
        del_peer.execute(params![iface, &key.0[..]])?;
    }
    let write_iface =
        |name: &str, i: &InterfaceState, put_iface: &mut rusqlite::CachedStatement<'_>| {
            let shell = InterfaceShell {
                info: &i.info,
                sequence: i.sequence,
            };
            let data = to_json("interface state", &shell)?;
            put_iface.execute(params![name, data])?;
            Ok::<_, StoreError>(())
        };
    if changes.all {
        for (name, i) in &state.interfaces {
            write_iface(name, i, &mut put_iface)?;
            for (key, p) in &i.peers {
                put_peer.execute(params![name, &key.0[..], to_json("peer state", p)?])?;
            }
        }
    } else {
        for name in &changes.interfaces {
            if let Some(i) = state.interfaces.get(name) {
                write_iface(name, i, &mut put_iface)?;
            }
        }
        for (name, key) in &changes.peers {
            if let Some(p) = state.interfaces.get(name).and_then(|i| i.peers.get(key)) {
                put_peer.execute(params![name, &key.0[..], to_json("peer state", p)?])?;
            }
        }
    }
    tx.execute(
        "INSERT OR REPLACE INTO meta(key, value) VALUES ('state_version', ?1)",
        [STATE_VERSION.to_string()],
    )?;
    if changes.all || changes.meta {
        let meta = TrackerMeta {
            filter: state.filter.clone(),
            unbaselined: state.unbaselined.clone(),
        };
        tx.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('tracker_meta', ?1)",
            [to_json("tracker state's filter", &meta)?],
        )?;
    }
    Ok(())
}

/// The tracker state's fields that are not per interface or peer: the filter
/// it was built under and the interfaces still to baseline. Absent in files
/// written by older versions (the state then loads with none).
#[derive(Serialize, serde::Deserialize)]
struct TrackerMeta {
    filter: Option<crate::backend::InterfaceFilter>,
    #[serde(default)]
    unbaselined: std::collections::BTreeSet<String>,
}

/// An interface's state without its peers (they have rows of their own).
#[derive(Serialize)]
struct InterfaceShell<'a> {
    info: &'a crate::event::InterfaceInfo,
    sequence: u64,
}

/// Drops the oldest pending events beyond `max_pending`, and the oldest
/// given-up records (dead letters, counted apart) beyond the same number, so
/// the file stays bounded. Returns both, for the caller to log and count.
fn enforce_bound(
    tx: &Transaction<'_>,
    max_pending: u64,
) -> Result<(Vec<Dropped>, Vec<DroppedDeadLetter>), StoreError> {
    let pending: u64 = tx.query_row(
        "SELECT COUNT(DISTINCT seq) FROM deliveries WHERE state = 'pending'",
        [],
        |r| r.get(0),
    )?;
    let mut dropped = Vec::new();
    if pending > max_pending {
        let excess = pending - max_pending;
        let mut stmt = tx.prepare(
            "SELECT e.seq, e.id, e.name FROM events e
             WHERE e.seq IN (SELECT DISTINCT seq FROM deliveries WHERE state = 'pending'
                             ORDER BY seq LIMIT ?1)
             ORDER BY e.seq",
        )?;
        let rows = stmt.query_map([excess], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (seq, id, name) = row?;
            dropped.push(Dropped {
                seq,
                id: Uuid::parse_str(&id).unwrap_or_default(),
                name,
            });
        }
        let mut del =
            tx.prepare_cached("DELETE FROM deliveries WHERE seq = ?1 AND state = 'pending'")?;
        let mut orphan = tx.prepare_cached(
            "DELETE FROM events WHERE seq = ?1 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE seq = ?1)",
        )?;
        for d in &dropped {
            del.execute([d.seq])?;
            orphan.execute([d.seq])?;
        }
    }
    let given_up: u64 = tx.query_row(
        "SELECT COUNT(*) FROM deliveries WHERE state = 'given_up'",
        [],
        |r| r.get(0),
    )?;
    let mut dead = Vec::new();
    if given_up > max_pending {
        let mut stmt = tx.prepare(
            "SELECT d.seq, d.webhook, e.id, e.name FROM deliveries d JOIN events e ON e.seq = d.seq
             WHERE d.state = 'given_up' ORDER BY d.seq, d.webhook LIMIT ?1",
        )?;
        let rows = stmt.query_map([given_up - max_pending], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        for row in rows {
            let (seq, webhook, id, name) = row?;
            dead.push(DroppedDeadLetter {
                seq,
                id: Uuid::parse_str(&id).unwrap_or_default(),
                name,
                webhook,
            });
        }
        let mut del = tx.prepare_cached(
            "DELETE FROM deliveries WHERE seq = ?1 AND webhook = ?2 AND state = 'given_up'",
        )?;
        let mut orphan = tx.prepare_cached(
            "DELETE FROM events WHERE seq = ?1 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE seq = ?1)",
        )?;
        for d in &dead {
            del.execute(params![d.seq, d.webhook])?;
            orphan.execute([d.seq])?;
        }
    }
    Ok((dropped, dead))
}

/// Serialising through a trait object, so one closure serves every type.
mod erased {
    pub trait Json {
        fn json(&self) -> serde_json::Result<String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> serde_json::Result<String> {
            serde_json::to_string(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DriverKind, Interface, Peer, Snapshot};
    use crate::tracker::{track_changes, Announce, Settings};
    use chrono::TimeDelta;

    pub(super) fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_607_200 + secs, 0).unwrap()
    }

    fn settings() -> Settings {
        Settings {
            connect_threshold: TimeDelta::seconds(180),
            endpoint_updates: true,
            announce_on_start: Announce::All,
            host: "h".into(),
            filter: Default::default(),
        }
    }

    fn snapshot(peers: &[(u8, Option<i64>, u64)]) -> Snapshot {
        Snapshot {
            interfaces: vec![Interface {
                name: "wg0".into(),
                public_key: Some(PublicKey([9; 32])),
                listen_port: 51820,
                driver: DriverKind::Userspace,
                peers: peers
                    .iter()
                    .map(|&(n, hs, rx)| Peer {
                        public_key: PublicKey([n; 32]),
                        last_handshake: hs.map(at),
                        rx_bytes: rx,
                        tx_bytes: rx,
                        allowed_ips: vec![format!("10.0.0.{n}/32").parse().unwrap()],
                        ..Peer::default()
                    })
                    .collect(),
                ..Interface::default()
            }],
            unreadable: vec![],
        }
    }

    /// The state with byte counters cleared (they are not saved every poll).
    fn without_counters(mut s: State) -> State {
        for i in s.interfaces.values_mut() {
            for p in i.peers.values_mut() {
                p.peer.rx_bytes = 0;
                p.peer.tx_bytes = 0;
            }
        }
        s
    }

    fn hooks(events: &[Event], names: &[&str]) -> Vec<Vec<String>> {
        events
            .iter()
            .map(|_| names.iter().map(|n| n.to_string()).collect())
            .collect()
    }

    #[test]
    fn incremental_saves_restore_the_tracker_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert!(
            store.load_state().unwrap().is_none(),
            "no state before the first commit"
        );
        let polls = [
            (0, snapshot(&[(1, None, 0), (2, Some(-5), 10)])),
            (5, snapshot(&[(1, Some(4), 100), (2, Some(-5), 20)])),
            (10, snapshot(&[(1, Some(4), 200), (3, None, 0)])),
            (400, snapshot(&[(1, Some(4), 300), (3, Some(399), 5)])),
            (405, snapshot(&[(3, Some(399), 9)])),
        ];
        let mut state = None;
        for (t, snap) in &polls {
            let tracked = track_changes(state.take(), snap, at(*t), &settings());
            let routes = hooks(&tracked.events, &["a"]);
            store
                .commit_poll(
                    &tracked.events,
                    &routes,
                    &tracked.state,
                    &tracked.changes,
                    at(*t),
                    1000,
                )
                .unwrap();
            let loaded = store.load_state().unwrap().unwrap();
            assert_eq!(
                without_counters(loaded),
                without_counters(tracked.state.clone()),
                "after poll at {t}"
            );
            state = Some(tracked.state);
        }
        // And the file survives reopening.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let loaded = store.load_state().unwrap().unwrap();
        assert_eq!(without_counters(loaded), without_counters(state.unwrap()));
    }

    /// Commits `events` (for webhook `a`) with no state change.
    fn commit_events(store: &mut Store, events: &[Event]) {
        let routes = hooks(events, &["a"]);
        store
            .commit_poll(
                events,
                &routes,
                &State::empty(),
                &Changes::default(),
                at(0),
                1000,
            )
            .unwrap();
    }

    /// Regression: the daemon and a `wghook outbox` command opening a new
    /// database at the same moment both wrote its schema row, and one
    /// failed with "UNIQUE constraint failed: meta.key".
    #[test]
    fn opening_a_new_database_from_several_processes_at_once_succeeds() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let barrier = std::sync::Barrier::new(8);
            std::thread::scope(|s| {
                let opens: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            Store::open(dir.path()).map(drop)
                        })
                    })
                    .collect();
                for open in opens {
                    if let Err(e) = open.join().unwrap() {
                        panic!("{e}");
                    }
                }
            });
        }
    }

    /// Regression: one unreadable `tracker_peers` row made `load_state`
    /// fail, so the daemon could not start, and `purge` could not clear it.
    #[test]
    fn an_unreadable_state_row_is_quarantined_and_the_rest_loads() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let snap = snapshot(&[(1, Some(-5), 10), (2, Some(-5), 20), (3, None, 0)]);
        let tracked = track_changes(None, &snap, at(0), &settings());
        let routes = hooks(&tracked.events, &["a"]);
        store
            .commit_poll(
                &tracked.events,
                &routes,
                &tracked.state,
                &tracked.changes,
                at(0),
                1000,
            )
            .unwrap();
        store
            .conn
            .execute(
                "UPDATE tracker_peers SET data = '{not json' WHERE key = ?1",
                [PublicKey([2; 32]).0.to_vec()],
            )
            .unwrap();
        store
            .conn
            .execute(
                "UPDATE tracker_peers SET key = x'0102' WHERE key = ?1",
                [PublicKey([3; 32]).0.to_vec()],
            )
            .unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let loaded = store
            .load_state()
            .expect("loads despite two bad rows")
            .unwrap();
        assert_eq!(loaded.peer_count(), 1, "the good peer");
        assert_eq!(store.take_quarantined(), 2);
        let moved: Vec<(String, String)> = store
            .conn
            .prepare("SELECT source, reason FROM quarantine ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(moved.len(), 2, "{moved:?}");
        assert_eq!(store.quarantined_count().unwrap(), 2);
        assert!(moved.iter().all(|(t, _)| t == "tracker_peers"), "{moved:?}");
        // Once moved, loading again is clean.
        assert_eq!(store.load_state().unwrap().unwrap().peer_count(), 1);
        assert_eq!(store.take_quarantined(), 0);
    }

    #[test]
    fn an_unreadable_event_is_quarantined_and_the_others_are_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let events: Vec<Event> = (0..3)
            .map(|n| crate::event::test_interface_event(n, at(0)))
            .collect();
        commit_events(&mut store, &events);
        store
            .conn
            .execute(
                "UPDATE events SET body = 'garbage' WHERE id = ?1",
                [events[1].id.to_string()],
            )
            .unwrap();
        let pending = store.pending("a").unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(store.take_quarantined(), 1);
        assert_eq!(store.pending("a").unwrap().len(), 2);
        assert_eq!(store.take_quarantined(), 0, "reported once");
    }

    /// Every outbox error names the database file.
    #[test]
    fn errors_name_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.conn.execute_batch("DROP TABLE deliveries").unwrap();
        let err = store.pending("a").unwrap_err().to_string();
        assert!(
            err.contains(&dir.path().join(DB_FILE).display().to_string()),
            "{err}"
        );
    }

    /// The database and its WAL files are the owner's alone, whatever the
    /// umask (they hold the tracker state and the events).
    #[test]
    fn the_database_and_its_wal_files_are_0600_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: umask only changes the process's file creation mask.
        let old = unsafe { libc::umask(0) };
        let opened = Store::open(dir.path());
        unsafe { libc::umask(old) };
        let mut store = opened.unwrap();
        let events = vec![crate::event::test_interface_event(1, at(0))];
        commit_events(&mut store, &events);
        for name in [DB_FILE, "wghook.db-wal", "wghook.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
        }
    }

    #[test]
    fn deliveries_are_pending_until_delivered_or_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let tracked = track_changes(
            None,
            &snapshot(&[(1, Some(0), 0), (2, None, 0)]),
            at(0),
            &settings(),
        );
        let n = tracked.events.len();
        assert_eq!(n, 4, "interface create, 2 peer creates, 1 connect");
        let routes = hooks(&tracked.events, &["a", "b"]);
        let c = store
            .commit_poll(
                &tracked.events,
                &routes,
                &tracked.state,
                &tracked.changes,
                at(0),
                1000,
            )
            .unwrap();
        let seqs: Vec<i64> = c.seqs.iter().map(|s| s.unwrap()).collect();
        assert_eq!(store.pending("a").unwrap().len(), n);
        assert_eq!(store.pending_count().unwrap(), n as u64);
        let first = &store.pending("a").unwrap()[0];
        assert_eq!(first.event, tracked.events[0], "the event round-trips");

        store
            .record(&[
                Outcome::Delivered {
                    seq: seqs[0],
                    webhook: "a".into(),
                },
                Outcome::Retry {
                    seq: seqs[1],
                    webhook: "a".into(),
                    attempts: 1,
                    next_attempt: at(5),
                    last_status: Some(503),
                    last_error: "HTTP 503".into(),
                },
                Outcome::GaveUp {
                    seq: seqs[2],
                    webhook: "a".into(),
                    attempts: 1,
                    last_status: Some(400),
                    last_error: "HTTP 400".into(),
                },
            ])
            .unwrap();
        let a = store.pending("a").unwrap();
        assert_eq!(
            a.iter().map(|p| p.seq).collect::<Vec<_>>(),
            [seqs[1], seqs[3]]
        );
        assert_eq!((a[0].attempts, a[0].next_attempt), (1, at(5)));
        assert_eq!(
            store.pending("b").unwrap().len(),
            n,
            "webhooks progress independently"
        );

        let listed = store.list(Some("a")).unwrap();
        let given_up: Vec<_> = listed.iter().filter(|l| l.state == "given_up").collect();
        assert_eq!(given_up.len(), 1);
        assert_eq!(given_up[0].last_status, Some(400));
        assert_eq!(given_up[0].id, tracked.events[2].id.to_string());

        assert_eq!(
            store.requeue(Some("b"), &[], at(9)).unwrap(),
            0,
            "b gave up nothing"
        );
        assert_eq!(
            store
                .requeue(None, &[given_up[0].id.clone()], at(9))
                .unwrap(),
            1
        );
        assert_eq!(store.pending("a").unwrap().len(), 3);

        // Delivered to both: the event row goes.
        store
            .record(&[Outcome::Delivered {
                seq: seqs[0],
                webhook: "b".into(),
            }])
            .unwrap();
        let ids: i64 = store
            .conn
            .query_row(
                "SELECT COUNT(*) FROM events WHERE seq = ?1",
                [seqs[0]],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(ids, 0);

        assert_eq!(store.purge().unwrap(), 6);
        assert!(store.list(None).unwrap().is_empty());
    }

    #[test]
    fn the_bound_drops_the_oldest_pending_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut state = None;
        let mut all_ids = Vec::new();
        let mut dropped = Vec::new();
        for round in 0..15u8 {
            // Ten new peers per poll: ten create events.
            let peers: Vec<(u8, Option<i64>, u64)> =
                (0..(round + 1) * 10).map(|n| (n, None, 0)).collect();
            let t = i64::from(round) * 5;
            let tracked = track_changes(state.take(), &snapshot(&peers), at(t), &settings());
            let events: Vec<Event> = tracked
                .events
                .iter()
                .filter(|e| e.peer.is_some())
                .cloned()
                .collect();
            all_ids.extend(events.iter().map(|e| e.id));
            let routes = hooks(&events, &["a"]);
            let c = store
                .commit_poll(
                    &events,
                    &routes,
                    &tracked.state,
                    &tracked.changes,
                    at(t),
                    100,
                )
                .unwrap();
            dropped.extend(c.dropped);
            state = Some(tracked.state);
        }
        assert_eq!(all_ids.len(), 150);
        assert_eq!(dropped.len(), 50);
        assert_eq!(
            dropped.iter().map(|d| d.id).collect::<Vec<_>>(),
            all_ids[..50]
        );
        let kept: Vec<String> = store
            .pending("a")
            .unwrap()
            .iter()
            .map(|p| p.event.id.to_string())
            .collect();
        let newest: Vec<String> = all_ids[50..].iter().map(|u| u.to_string()).collect();
        assert_eq!(kept, newest);
    }

    /// Regression: a changed `monitor.interfaces`/`exclude`, or an interface
    /// unreadable on the first start, made a restart report fake deletes and
    /// creates. The filter and the unread interfaces are saved with the state.
    #[test]
    fn the_tracker_filter_and_unread_interfaces_survive_a_restart() {
        use crate::backend::InterfaceFilter;
        let wg = |name: &str, n: u8| Interface {
            name: name.into(),
            peers: vec![Peer {
                public_key: PublicKey([n; 32]),
                last_handshake: Some(at(-5)),
                ..Peer::default()
            }],
            ..Interface::default()
        };
        let under = |exclude: &[&str]| Settings {
            announce_on_start: Announce::Connected,
            filter: InterfaceFilter {
                include: vec![],
                exclude: exclude.iter().map(|s| s.to_string()).collect(),
            },
            ..settings()
        };
        let dir = tempfile::tempdir().unwrap();
        let commit = |tracked: &crate::tracker::Tracked, t: i64| {
            let mut store = Store::open(dir.path()).unwrap();
            let routes = hooks(&tracked.events, &["a"]);
            store
                .commit_poll(
                    &tracked.events,
                    &routes,
                    &tracked.state,
                    &tracked.changes,
                    at(t),
                    1000,
                )
                .unwrap();
        };
        let restart = || Store::open(dir.path()).unwrap().load_state().unwrap();

        // First start watching all but wg2; wg1 cannot be read.
        let first = Snapshot {
            interfaces: vec![wg("wg0", 1)],
            unreadable: vec!["wg1".into()],
        };
        let tracked = track_changes(None, &first, at(0), &under(&["wg2"]));
        commit(&tracked, 0);
        let saved = restart().unwrap();
        assert_eq!(saved.filter, Some(under(&["wg2"]).filter));
        assert_eq!(saved.unbaselined.iter().collect::<Vec<_>>(), ["wg1"]);

        // Restart watching everything: wg1 readable now, wg2 let in.
        let all = Snapshot {
            interfaces: vec![wg("wg0", 1), wg("wg1", 2), wg("wg2", 3)],
            unreadable: vec![],
        };
        let tracked = track_changes(Some(saved), &all, at(10), &under(&[]));
        let names: Vec<_> = tracked.events.iter().map(|e| e.filter_name()).collect();
        assert_eq!(
            names,
            ["peer.connect", "peer.connect"],
            "baselines, not creates"
        );
        commit(&tracked, 10);
        let saved = restart().unwrap();
        assert_eq!(
            without_counters(saved.clone()),
            without_counters(tracked.state)
        );

        // Restart excluding wg0: forgotten silently, rows gone.
        let rest = Snapshot {
            interfaces: vec![wg("wg1", 2), wg("wg2", 3)],
            unreadable: vec![],
        };
        let tracked = track_changes(Some(saved), &rest, at(20), &under(&["wg0"]));
        assert!(tracked.events.is_empty(), "{:?}", tracked.events);
        commit(&tracked, 20);
        let saved = restart().unwrap();
        assert_eq!(saved.interfaces.keys().collect::<Vec<_>>(), ["wg1", "wg2"]);
        assert_eq!(saved.filter, Some(under(&["wg0"]).filter));
        let tracked = track_changes(Some(saved), &rest, at(25), &under(&["wg0"]));
        assert!(tracked.events.is_empty() && tracked.changes.is_empty());
    }

    #[test]
    fn an_unusable_state_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let err = Store::open(&file).unwrap_err().to_string();
        assert!(err.contains("not-a-dir"), "{err}");
        assert!(err.contains("monitor.state_dir"), "{err}");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::tracker::Changes;
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
}

/// The bound on dead letters and writes that meet another process's lock.
#[cfg(test)]
mod bounds_and_locks {
    use super::tests::at;
    use super::*;

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
}
