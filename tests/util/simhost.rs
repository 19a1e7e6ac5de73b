//! A simulated host: a scenario file and a wghook configuration on the
//! simulated backend, written into a directory the test owns, with the
//! webhooks, delivery, monitor and other sections the test adds.
//!
//! The configuration is laid out in this order (tests that assert line
//! numbers rely on it):
//!
//! ```text
//! {webhooks}                  the `webhook:`/`webhooks:` block, if any
//! delivery:                   only if delivery lines were given
//! {delivery}
//! monitor:
//!   backend: simulated
//!   scenario: DIR/scenario.yaml
//! {monitor}                   extra `monitor:` lines (`state_dir` included)
//! {sections}                  further top-level sections (`peers:`...)
//! ```

use std::path::{Path, PathBuf};

/// A simulated host to be written; see the module's documentation.
#[must_use]
pub struct SimHost {
    dir: PathBuf,
    scenario: String,
    webhooks: String,
    delivery: String,
    monitor: String,
    sections: String,
}

/// What [`SimHost::write`] wrote.
pub struct Written {
    /// `DIR/wghook.yaml`.
    pub config: PathBuf,
    /// `DIR/scenario.yaml`.
    pub scenario: PathBuf,
}

impl SimHost {
    /// A host in `dir` playing `scenario` (the text of a scenario file).
    pub fn new(dir: &Path, scenario: &str) -> Self {
        Self {
            dir: dir.to_path_buf(),
            scenario: scenario.to_string(),
            webhooks: String::new(),
            delivery: String::new(),
            monitor: String::new(),
            sections: String::new(),
        }
    }

    /// The `webhook:` or `webhooks:` block, first in the file.
    pub fn webhooks(mut self, block: &str) -> Self {
        self.webhooks.push_str(block);
        self
    }

    /// Lines under `delivery:` (2-space indented).
    pub fn delivery(mut self, lines: &str) -> Self {
        self.delivery.push_str(lines);
        self
    }

    /// Lines under `monitor:` (2-space indented), after `backend` and
    /// `scenario`.
    pub fn monitor(mut self, lines: &str) -> Self {
        self.monitor.push_str(lines);
        self
    }

    /// `monitor.state_dir: DIR/state` (the outbox's directory).
    pub fn state_dir(self) -> Self {
        let line = format!("  state_dir: {}\n", self.dir.join("state").display());
        self.monitor(&line)
    }

    /// Top-level sections after `monitor:` (`peers:`, `metrics:`...).
    pub fn sections(mut self, yaml: &str) -> Self {
        self.sections.push_str(yaml);
        self
    }

    /// Writes (or overwrites) `scenario.yaml` and `wghook.yaml`.
    pub fn write(&self) -> Written {
        let scenario = self.dir.join("scenario.yaml");
        std::fs::write(&scenario, &self.scenario).unwrap();
        let delivery = if self.delivery.is_empty() {
            String::new()
        } else {
            format!("delivery:\n{}", self.delivery)
        };
        let text = format!(
            "{}{delivery}monitor:\n  backend: simulated\n  scenario: {}\n{}{}",
            self.webhooks,
            scenario.display(),
            self.monitor,
            self.sections
        );
        let config = self.dir.join("wghook.yaml");
        std::fs::write(&config, text).unwrap();
        Written { config, scenario }
    }
}
