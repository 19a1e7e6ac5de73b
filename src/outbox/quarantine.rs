//! Rows that cannot be read are moved aside, not lost.

use chrono::Utc;
use rusqlite::params;

use super::{millis, Store, StoreError};

impl Store {
    /// Moves row `rowid` of `table` into the quarantine table (with its
    /// content as JSON and `why`), in one transaction. Events leave with
    /// their deliveries.
    pub(super) fn quarantine(&self, table: &str, rowid: i64, why: &str) -> Result<(), StoreError> {
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
}
