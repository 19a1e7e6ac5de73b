//! The outbox side of the engine: the writer thread that records outcomes
//! (group commit) and the watcher that notices `wghook outbox` commands.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::outbox::{Outcome, Store, StoreError};

use super::types::*;

/// Most outcomes written in one transaction.
pub(super) const MAX_BATCH: usize = 2_000;

/// Checks every [`OUTBOX_SYNC_EVERY`] whether another process changed the
/// outbox (SQLite's `data_version`); if so, sends each webhook's task its
/// pending deliveries as they are now. Reads and sends under the store's
/// lock, like the writer's confirmations, so each task sees both in the
/// database's order.
pub(super) async fn watch_outbox(
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
            let now = clocks.now();
            for (name, acks, max_delay) in hooks.iter() {
                let pending = db
                    .pending(name)?
                    .into_iter()
                    .map(|p| pending_item(p, *max_delay, now))
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
pub(super) fn write_outcomes(store: &Mutex<Store>, rx: &std::sync::mpsc::Receiver<Record>) {
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
