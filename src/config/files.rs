//! The files a configuration names, read in one step before validation
//! (secret files) and one after it (wg-quick names, the scenario), through
//! [`Sources`], the seam tests replace.

use std::path::{Path, PathBuf};

use std::collections::HashMap;

use crate::event::PeerLabel;
use crate::model::PublicKey;
use crate::monitor::Monitor;
use crate::settings::{Check, ConfigError, SecretFiles};

/// What the configuration reads besides its own text.
pub trait Sources {
    /// The text of a secret file (bounded, regular files only), or why not.
    fn secret(&self, path: &Path) -> Result<String, String>;
    /// The peer names of the wg-quick files `patterns` match.
    fn names(&self, patterns: &[PathBuf]) -> crate::names::Loaded;
    /// Loads the scenario at `path` as `run` will, so that whatever `run`
    /// would refuse (a step out of range, an unknown peer) fails `check`.
    fn scenario(&self, path: &Path) -> Result<(), String>;
}

/// The real files.
pub struct Disk;

impl Sources for Disk {
    fn secret(&self, path: &Path) -> Result<String, String> {
        crate::files::read_bounded_text(path, crate::files::MAX_SECRET_FILE)
            .map_err(|e| e.to_string())
    }

    fn names(&self, patterns: &[PathBuf]) -> crate::names::Loaded {
        crate::names::load(patterns)
    }

    fn scenario(&self, path: &Path) -> Result<(), String> {
        use crate::backend::sim::{Scenario, ScenarioError};
        Scenario::load(path).map(|_| ()).map_err(|e| match e {
            ScenarioError::Read { source, .. } => {
                format!("cannot read {}: {source}", path.display())
            }
            other => other.to_string(),
        })
    }
}

/// Reads every secret file of `names` (relative to the configuration's
/// directory).
pub(super) fn read_secrets<'n>(
    names: impl Iterator<Item = &'n str>,
    check: &Check,
    sources: &dyn Sources,
) -> SecretFiles {
    let mut out = SecretFiles::default();
    for name in names {
        if name.is_empty() {
            continue;
        }
        let path = check.resolve(Path::new(name));
        let read = sources.secret(&path);
        out.insert(path, read);
    }
    out
}

/// Reads the wg-quick files of `monitor.names_from` into the peers' names
/// (the `peers:` map wins: a file's name only fills an empty name) and
/// loads the scenario. A literal file that cannot be read is an error at
/// its item, a malformed file an error at its own line.
pub(super) fn read_named_files(
    monitor: &mut Monitor,
    peers: &mut HashMap<PublicKey, PeerLabel>,
    sources: &dyn Sources,
    check: &mut Check,
) {
    let patterns = &monitor.names_from;
    if !patterns.is_empty() {
        let loaded = sources.names(patterns);
        for warning in &loaded.warnings {
            tracing::warn!(file = %check.file().display(), "{warning}");
        }
        for error in loaded.errors {
            match error {
                crate::names::NamesError::Unreadable {
                    pattern,
                    path,
                    reason,
                } => {
                    let key = format!("monitor.names_from[{pattern}]");
                    let message = format!("cannot read {}: {reason}", path.display());
                    check.error_at(check.key_line(&key), &key, message);
                }
                crate::names::NamesError::Malformed {
                    path,
                    line,
                    message,
                } => check.push(ConfigError {
                    file: path,
                    line: Some(line),
                    key: String::new(),
                    message: format!("{message} (in a wg-quick file of monitor.names_from)"),
                }),
            }
        }
        for (key, name) in loaded.names {
            let label = peers.entry(key).or_default();
            if label.name.is_empty() {
                label.name = name;
            }
        }
    }
    if let Some(path) = &monitor.scenario {
        if let Err(message) = sources.scenario(path) {
            let key = "monitor.scenario";
            check.error_at(check.key_line(key), key, message);
            monitor.scenario = None;
        }
    }
}
