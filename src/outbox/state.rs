//! The tracker's saved state: loading it, writing what changed.

use std::path::PathBuf;

use rusqlite::types::Value;
use rusqlite::{params, Transaction};
use serde::Serialize;

use crate::model::PublicKey;
use crate::tracker::{Changes, InterfaceState, PeerState, State, STATE_VERSION};

use super::{describe, read_meta, text, Store, StoreError};

impl Store {
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
}

/// Writes what the tracker changed (everything when `changes.all`).
pub(super) fn save_state(
    tx: &Transaction<'_>,
    state: &State,
    changes: &Changes,
) -> Result<(), StoreError> {
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
