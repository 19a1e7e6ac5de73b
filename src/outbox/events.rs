//! Events and their deliveries: commit, outcomes, listing, the CLI's bulk writes, the bound.

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use rusqlite::{params, Transaction, TransactionBehavior};
use uuid::Uuid;

use crate::event::Event;
use crate::tracker::{Changes, State};

use super::state::save_state;
use super::{
    from_millis, millis, Committed, Dropped, DroppedDeadLetter, Listed, Outcome, Pending, Store,
    StoreError, CLI_BATCH, CLI_BATCH_PAUSE,
};

impl Store {
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
