//! The vocabulary every module's settings are written in: where a value
//! stood in the configuration file, and how a problem with it is reported.
//!
//! Each module owns its settings (the delivery engine its webhooks and
//! retries, [`crate::monitor`] what is watched, logging and metrics theirs):
//! a *raw* struct that derives `Deserialize` and `JsonSchema` with
//! `deny_unknown_fields`, and a `validate` step that turns it into the
//! settings the module runs with. This module sits below all of them and
//! depends on none: it holds
//! - [`Text`], a scalar as written (after `${VAR}`), with its line and key,
//!   and the [`kind`]s that say what it should hold (for the schema and for
//!   "expected a duration, found a list");
//! - [`Check`], which collects every problem as `FILE:LINE: KEY: MESSAGE` and
//!   interprets [`Text`]s (durations, numbers, choices, URLs, paths);
//! - [`Secret`], a value whose `Debug` and `Display` never show it.
//!
//! Invariants: nothing here reads a file or the clock; a message never
//! quotes a secret's value or a URL's path.

mod check;
mod error;
pub mod kind;
mod text;

pub use check::{
    format_duration, join_key, or_list, parse_duration, unknown_key_message, Check, MAX_DURATION,
};
pub use error::{ConfigError, ConfigErrors};
pub use text::{OneOrMany, Secret, Text, ONE_OR_MANY, TEXT};

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The secret files a configuration names (`secret_file`, `bearer_file`,
/// ...), read in one step before validation, so that validation reads
/// nothing: by absolute path, the text or why it could not be read.
/// `Debug` shows the paths only.
#[derive(Default)]
pub struct SecretFiles(HashMap<PathBuf, Result<String, String>>);

impl SecretFiles {
    /// Records what reading `path` gave.
    pub fn insert(&mut self, path: PathBuf, read: Result<String, String>) {
        self.0.insert(path, read);
    }

    /// The text of `path`, or why it could not be read.
    pub fn get(&self, path: &Path) -> Result<&str, String> {
        match self.0.get(path) {
            Some(Ok(text)) => Ok(text),
            Some(Err(e)) => Err(e.clone()),
            None => Err("not read".into()),
        }
    }
}

impl fmt::Debug for SecretFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}
