//! Opening the outbox: the file, its mode, the schema.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::{read_meta, Store, StoreError, BUSY_TIMEOUT, DB_FILE, SCHEMA_VERSION};

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
}
