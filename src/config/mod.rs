//! The configuration: one YAML file turned into a validated [`Config`].
//!
//! This module only *loads*: it reads the file, parses the YAML into a tree
//! that remembers lines ([`yaml`]), deserializes each module's raw settings
//! from it with `${VAR}` substituted ([`de`]), reads the secret files they
//! name, and collects every problem at once, each as `FILE:LINE: KEY:
//! MESSAGE`. The settings types and their validation belong to the modules
//! that use them ([`crate::monitor`], [`crate::delivery::settings`],
//! [`crate::labels`], [`crate::metrics`], [`crate::logging`]), the way a
//! component's configuration lives beside the component; the keys, the
//! "did you mean" hints and the JSON Schema ([`schema`]) all come from those
//! types.
//!
//! Invariants:
//! - A [`Config`] exists only if there was no error at all.
//! - `${VAR}` in a scalar *value* is replaced from the environment before the
//!   value is interpreted; `$${` stands for a literal `${`. Keys are never
//!   substituted.
//! - No error message quotes a secret's value; URLs are quoted at most by
//!   scheme and host.
//! - Validation reads nothing: secret files are read in one step before it,
//!   the wg-quick files of `monitor.names_from` and the scenario of
//!   `monitor.scenario` in one step after it ([`load`] only), all through
//!   [`Sources`], which tests replace. Nothing here reads the clock.
//! - Relative paths in the file are taken relative to the file's directory.

mod de;
mod files;
pub mod schema;
mod yaml;

use std::collections::HashMap;
use std::env::VarError;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

pub use crate::settings::{ConfigError, ConfigErrors, Secret};
pub use files::{Disk, Sources};

use crate::delivery::settings::{
    validate_delivery, DeliverySettings, RawDelivery, RawWebhook, Webhook,
};
use crate::delivery::webhook_settings::validate_webhooks;
use crate::event::PeerLabel;
use crate::labels::{InterfaceLabel, RawInterfaces, RawPeers};
use crate::logging::{LogSettings, RawLog};
use crate::metrics::{MetricsSettings, RawMetrics};
use crate::model::{InterfaceFilter, PublicKey};
use crate::monitor::{Monitor, RawMonitor};
use crate::settings::{Check, SecretFiles};
use crate::tracker::Settings;

/// Where the configuration is read from unless `-c` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/wghook/wghook.yaml";

/// The whole file as written: each section is the raw settings of the
/// module that owns it.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(title = "wghook configuration")]
pub struct RawConfig {
    /// One webhook receiver (wg-portal's form); or use `webhooks`.
    pub webhook: Option<RawWebhook>,
    /// Several webhook receivers, each with a unique `name`.
    pub webhooks: Option<Vec<RawWebhook>>,
    /// What is watched and how.
    pub monitor: Option<RawMonitor>,
    /// Names, users, labels and ping addresses of peers, by public key (base64).
    pub peers: Option<RawPeers>,
    /// Display names of interfaces, by interface name.
    pub interfaces: Option<RawInterfaces>,
    /// The outbox and its retries.
    pub delivery: Option<RawDelivery>,
    /// Prometheus metrics.
    pub metrics: Option<RawMetrics>,
    /// Logging (the command line and RUST_LOG take precedence).
    pub log: Option<RawLog>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from (for messages and reloads).
    pub path: PathBuf,
    /// What is watched and how (`monitor:`).
    pub monitor: Monitor,
    /// Where events are sent; empty means events are only logged.
    pub webhooks: Vec<Webhook>,
    /// Names for peers, by public key (`peers:`, completed by the wg-quick
    /// files of `monitor.names_from` when read with [`load`]).
    pub peers: HashMap<PublicKey, PeerLabel>,
    /// Where ping checks send their echo requests instead of the peer's first
    /// allowed IP (`peers.KEY.ping_address`).
    pub ping_addresses: HashMap<PublicKey, std::net::IpAddr>,
    /// Names for interfaces, by interface name (`interfaces:`); see
    /// [`Config::interface_names`].
    pub interface_labels: HashMap<String, InterfaceLabel>,
    /// The outbox and its retries (`delivery:`).
    pub delivery: DeliverySettings,
    /// Prometheus metrics (`metrics:`).
    pub metrics: MetricsSettings,
    /// Logging (`log:`).
    pub log: LogSettings,
}

impl Config {
    /// The tracker's settings from the `monitor:` section.
    pub fn tracker_settings(&self, host: String) -> Settings {
        self.monitor.tracker_settings(host)
    }

    /// Display names by interface name, for
    /// [`RenderContext::interface_names`](crate::event::RenderContext::interface_names):
    /// the non-empty `interfaces.NAME.name` entries.
    pub fn interface_names(&self) -> HashMap<String, String> {
        self.interface_labels
            .iter()
            .filter(|(_, label)| !label.name.is_empty())
            .map(|(interface, label)| (interface.clone(), label.name.clone()))
            .collect()
    }

    /// Which interfaces to watch (`monitor.interfaces` minus `monitor.exclude`).
    pub fn filter(&self) -> InterfaceFilter {
        self.monitor.filter()
    }
}

/// Reads and validates the configuration file at `path`; also checks that
/// the files it names exist (the scenario, the wg-quick files of
/// `names_from`). An unreadable file is one error naming it.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text =
        crate::files::read_bounded_text(path, crate::files::MAX_CONFIG_FILE).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: None,
                key: String::new(),
                message: format!("cannot read the configuration file: {e}"),
            }])
        })?;
    compile(&text, path, &|name| std::env::var(name), &Disk, true)
}

/// Validates configuration text; `path` is only used in messages, as
/// [`Config::path`] and as the base of relative paths. Reads the
/// environment (for `${VAR}`) and the secret files the text names: the
/// configuration cannot exist without them.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    compile(text, path, &|name| std::env::var(name), &Disk, false)
}

/// All the stages: text -> tree -> raw settings -> secret files ->
/// validation -> (with `check_files`) names and scenario; a [`Config`] or
/// every problem found. `env` looks up `${VAR}` and `STATE_DIRECTORY`;
/// `sources` reads files.
pub fn compile(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Result<String, VarError>,
    sources: &dyn Sources,
    check_files: bool,
) -> Result<Config, ConfigErrors> {
    let root = yaml::parse_tree(text).map_err(|(line, message)| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: Some(line),
            key: String::new(),
            message,
        }])
    })?;
    let state = de::State::new(path, env);
    let raw: Option<RawConfig> = de::deserialize(root.as_ref(), &state);
    let (errors, lines) = state.finish();
    let mut check = Check::new(path, lines, errors);
    let Some(raw) = raw else {
        return Err(ConfigErrors(check.into_errors()));
    };
    let hooks = raw.webhook.iter().chain(raw.webhooks.iter().flatten());
    let names = hooks.flat_map(|hook| hook.secret_file_names());
    let secrets = files::read_secrets(names, &check, sources);
    let mut config = validate(&raw, path, env, &secrets, &mut check);
    if check_files {
        let Config { monitor, peers, .. } = &mut config;
        files::read_named_files(monitor, peers, sources, &mut check);
    }
    if check.failed() {
        return Err(ConfigErrors(check.into_errors()));
    }
    Ok(config)
}

/// Every module validates its own section, in the file's usual order.
fn validate(
    raw: &RawConfig,
    path: &Path,
    env: &dyn Fn(&str) -> Result<String, VarError>,
    secrets: &SecretFiles,
    check: &mut Check,
) -> Config {
    let delivery = validate_delivery(raw.delivery.as_ref(), check);
    let webhooks = validate_webhooks(
        raw.webhook.as_ref(),
        raw.webhooks.as_ref(),
        &delivery,
        secrets,
        check,
    );
    // systemd's StateDirectory= (the first, if several).
    let state_directory = env("STATE_DIRECTORY")
        .ok()
        .and_then(|v| v.split(':').next().map(PathBuf::from))
        .filter(|p| p.is_absolute());
    let monitor = crate::monitor::validate(raw.monitor.as_ref(), state_directory, check);
    let labels = crate::labels::validate(raw.peers.as_ref(), raw.interfaces.as_ref(), check);
    let metrics = crate::metrics::validate(raw.metrics.as_ref(), check);
    let log = crate::logging::validate(raw.log.as_ref(), check);
    Config {
        path: path.to_path_buf(),
        monitor,
        webhooks,
        peers: labels.peers,
        ping_addresses: labels.ping_addresses,
        interface_labels: labels.interfaces,
        delivery,
        metrics,
        log,
    }
}

#[cfg(test)]
mod tests;
