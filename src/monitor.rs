//! The `monitor:` settings: which interfaces are watched, how often, from
//! which backend, and how a poll becomes events. Raw as written
//! ([`RawMonitor`]), validated into [`Monitor`]; the tracker, the backends,
//! the ping checks and the daemon read their parts of it.
//!
//! Validation reads nothing: the scenario file and the wg-quick files of
//! `names_from` are read by [`crate::config`] after it.

use std::path::PathBuf;
use std::time::Duration;

use chrono::TimeDelta;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::backend::BackendKind;
use crate::model::InterfaceFilter;
use crate::settings::kind::{Dur, Flag, Named, Pick};
use crate::settings::{Check, Text};
use crate::tracker::{Announce, Settings};

/// Default time between two polls.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Shortest poll interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Default `connect_threshold`: WireGuard's REJECT_AFTER_TIME.
pub const DEFAULT_CONNECT_THRESHOLD: Duration = Duration::from_secs(180);
/// WireGuard's REKEY_AFTER_TIME: a threshold below it makes idle peers flap.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// Default timeout of one UAPI socket exchange.
pub const DEFAULT_UAPI_TIMEOUT: Duration = Duration::from_secs(2);
/// Where wireguard-go and boringtun put their sockets.
pub const DEFAULT_UAPI_DIRS: [&str; 2] = ["/var/run/wireguard", "/run/wireguard"];
/// Default time between two rounds of ping checks.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Shortest ping interval accepted: ping checks are not a flood.
pub const MIN_PING_INTERVAL: Duration = Duration::from_secs(1);
/// Default directory of the outbox database (systemd's `StateDirectory=`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/wghook";
/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;

/// The `monitor:` section as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RawMonitor {
    /// Time between two polls (default 5s, at least 100ms).
    pub interval: Option<Text<Dur>>,
    /// A peer is connected iff its latest handshake is at most this old
    /// (default 180s, WireGuard's REJECT_AFTER_TIME).
    pub connect_threshold: Option<Text<Dur>>,
    /// wg-portal's name for `connect_threshold`.
    pub rekey_timeout_interval: Option<Text<Dur>>,
    /// Interface names to watch (`*` wildcard); none: all.
    pub interfaces: Option<Vec<Text>>,
    /// Interface names never to watch, applied after `interfaces`.
    pub exclude: Option<Vec<Text>>,
    /// Where interfaces are read from: auto, userspace, kernel or simulated.
    pub backend: Option<Text<Pick<BackendKind>>>,
    /// The scripted scenario file; required iff `backend: simulated`.
    pub scenario: Option<Text>,
    /// What the first poll without saved state reports: connected, all or none.
    pub announce_on_start: Option<Text<Pick<Announce>>>,
    /// Report endpoint changes (roaming) as peer updates (default true).
    pub endpoint_updates: Option<Text<Flag>>,
    /// Directories searched for UAPI sockets, in order.
    pub uapi_dirs: Option<Vec<Text>>,
    /// Timeout of one UAPI socket exchange (default 2s).
    pub uapi_timeout: Option<Text<Dur>>,
    /// Host name stamped on events (default: the system's).
    pub host: Option<Text>,
    /// Directory of the outbox database (default `$STATE_DIRECTORY`, else /var/lib/wghook).
    pub state_dir: Option<Text>,
    /// wg-quick files (glob patterns) whose `# Name = ...` comments name peers.
    pub names_from: Option<Vec<Text>>,
    /// Ping every peer; a peer that answers counts as connected (default false).
    pub ping_checks: Option<Text<Flag>>,
    /// Time between two rounds of ping checks (default 30s, at least 1s).
    pub ping_interval: Option<Text<Dur>>,
}

/// The `monitor:` section: what is watched and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    /// Time between two polls.
    pub interval: Duration,
    /// A peer is connected iff its latest handshake is at most this old.
    pub connect_threshold: Duration,
    /// Interface name patterns to watch (`*` wildcard); empty means all.
    pub interfaces: Vec<String>,
    /// Interface name patterns never to watch, applied after `interfaces`.
    pub exclude: Vec<String>,
    /// Where interfaces are read from.
    pub backend: BackendKind,
    /// The scripted scenario; set iff `backend` is [`BackendKind::Simulated`].
    pub scenario: Option<PathBuf>,
    /// What the first poll without saved state reports.
    pub announce_on_start: Announce,
    /// Report endpoint changes (roaming) as peer `update`s.
    pub endpoint_updates: bool,
    /// Directories searched for UAPI sockets, in order.
    pub uapi_dirs: Vec<PathBuf>,
    /// Timeout of one UAPI socket exchange.
    pub uapi_timeout: Duration,
    /// Host name stamped on events; `None` means the system host name.
    pub host: Option<String>,
    /// Where the outbox database (events, delivery progress, tracker state)
    /// lives: `$STATE_DIRECTORY` under systemd, else `/var/lib/wghook`.
    pub state_dir: PathBuf,
    /// wg-quick files (glob patterns allowed) whose `# Name = ...` comments
    /// name peers; relative to the configuration file's directory.
    pub names_from: Vec<PathBuf>,
    /// Ping every peer each `ping_interval`; a peer that answers counts as
    /// connected even without a recent handshake (as in wg-portal).
    pub ping_checks: bool,
    /// Time between two rounds of ping checks.
    pub ping_interval: Duration,
}

impl Default for Monitor {
    /// The values used for keys that are not given.
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            connect_threshold: DEFAULT_CONNECT_THRESHOLD,
            interfaces: Vec::new(),
            exclude: Vec::new(),
            backend: BackendKind::Auto,
            scenario: None,
            announce_on_start: Announce::Connected,
            endpoint_updates: true,
            uapi_dirs: DEFAULT_UAPI_DIRS.iter().map(PathBuf::from).collect(),
            uapi_timeout: DEFAULT_UAPI_TIMEOUT,
            host: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            names_from: Vec::new(),
            ping_checks: false,
            ping_interval: DEFAULT_PING_INTERVAL,
        }
    }
}

impl Named for Announce {
    const ALL: &'static [Self] = &[Announce::Connected, Announce::All, Announce::None];
    fn name(self) -> &'static str {
        match self {
            Announce::Connected => "connected",
            Announce::All => "all",
            Announce::None => "none",
        }
    }
}

impl Monitor {
    /// The tracker's settings.
    pub fn tracker_settings(&self, host: String) -> Settings {
        Settings {
            // Cannot fail: durations are at most MAX_DURATION.
            connect_threshold: TimeDelta::from_std(self.connect_threshold)
                .unwrap_or(TimeDelta::MAX),
            endpoint_updates: self.endpoint_updates,
            announce_on_start: self.announce_on_start,
            host,
            filter: self.filter(),
        }
    }

    /// Which interfaces to watch (`interfaces` minus `exclude`).
    pub fn filter(&self) -> InterfaceFilter {
        InterfaceFilter {
            include: self.interfaces.clone(),
            exclude: self.exclude.clone(),
        }
    }
}

/// Validates `monitor:` (`raw` absent: the defaults); `state_directory` is
/// systemd's `$STATE_DIRECTORY`, the default `state_dir`. Every problem goes
/// to `check`; a value in error keeps its default.
pub fn validate(
    raw: Option<&RawMonitor>,
    state_directory: Option<PathBuf>,
    check: &mut Check,
) -> Monitor {
    let mut out = Monitor::default();
    if let Some(dir) = state_directory {
        out.state_dir = dir;
    }
    let Some(m) = raw else {
        return out;
    };
    if let Some(t) = &m.interval {
        if let Some(d) = check.duration_at_least(t, MIN_INTERVAL) {
            out.interval = d;
        }
    }
    let threshold = check.aliased(
        ("connect_threshold", m.connect_threshold.as_ref()),
        ("rekey_timeout_interval", m.rekey_timeout_interval.as_ref()),
    );
    if let Some(t) = threshold {
        if let Some(d) = check.duration_at_least(t, Duration::from_nanos(1)) {
            if d < REKEY_AFTER_TIME {
                tracing::warn!(
                    file = %check.file().display(),
                    line = t.line,
                    connect_threshold_ms = d.as_millis() as u64,
                    "{} is below WireGuard's 120 s rekey interval; idle peers will \
                     flap between connect and disconnect",
                    t.key
                );
            }
            out.connect_threshold = d;
        }
    }
    for (items, target) in [
        (&m.interfaces, &mut out.interfaces),
        (&m.exclude, &mut out.exclude),
    ] {
        if let Some(list) = check.list(items.as_ref(), interface_pattern) {
            *target = list;
        }
    }
    let backend = match &m.backend {
        Some(t) => check.pick(t),
        None => Some(BackendKind::Auto),
    };
    if let Some(backend) = backend {
        out.backend = backend;
    }
    out.scenario = scenario(m, backend, check);
    if let Some(t) = &m.announce_on_start {
        if let Some(a) = check.pick(t) {
            out.announce_on_start = a;
        }
    }
    if let Some(t) = &m.endpoint_updates {
        if let Some(b) = check.boolean(t) {
            out.endpoint_updates = b;
        }
    }
    if let Some(items) = &m.uapi_dirs {
        match check.list(Some(items), |c, t| c.path(t)) {
            Some(dirs) if dirs.is_empty() => {
                let message = "must name at least one directory (remove the key for the defaults)";
                let key = "monitor.uapi_dirs";
                check.error_at(check.key_line(key), key, message);
            }
            Some(dirs) => out.uapi_dirs = dirs,
            None => {}
        }
    }
    if let Some(t) = &m.uapi_timeout {
        if let Some(d) = check.duration_at_least(t, Duration::from_nanos(1)) {
            out.uapi_timeout = d;
        }
    }
    if let Some(t) = &m.state_dir {
        if let Some(dir) = check.path(t) {
            out.state_dir = dir;
        }
    }
    if let Some(t) = &m.ping_checks {
        if let Some(b) = check.boolean(t) {
            out.ping_checks = b;
        }
    }
    if let Some(t) = &m.ping_interval {
        if let Some(d) = check.duration_at_least(t, MIN_PING_INTERVAL) {
            out.ping_interval = d;
        }
    }
    if let Some(items) = &m.names_from {
        if let Some(patterns) = check.list(Some(items), names_pattern) {
            out.names_from = patterns;
        }
    }
    if let Some(t) = &m.host {
        if let Some(host) = check.text(t) {
            if host.trim().is_empty() {
                check.error(
                    t,
                    "must not be empty (remove it to use the system host name)",
                );
            } else {
                out.host = Some(host.trim().to_string());
            }
        }
    }
    out
}

/// `monitor.scenario`: required iff the backend is simulated (`backend` is
/// `None` when it was invalid: then nothing is said about the scenario).
fn scenario(m: &RawMonitor, backend: Option<BackendKind>, check: &mut Check) -> Option<PathBuf> {
    let simulated = backend == Some(BackendKind::Simulated);
    let Some(t) = &m.scenario else {
        if simulated {
            let message = "required when monitor.backend is simulated (a scenario file)";
            check.error_at(
                check.key_line("monitor.backend"),
                "monitor.scenario",
                message,
            );
        }
        return None;
    };
    let path = check.path(t)?;
    if backend.is_some() && !simulated {
        let message =
            "only used when monitor.backend is simulated (remove it, or set backend: simulated)";
        check.error(t, message);
        return None;
    }
    Some(path)
}

fn interface_pattern(check: &mut Check, t: &Text) -> Option<String> {
    let text = check.text(t)?;
    match interface_name_problem(&text, true) {
        Some(problem) => {
            check.error(t, format!("invalid interface name {text:?} ({problem})"));
            None
        }
        None => Some(text),
    }
}

/// One `names_from` item: a path or glob pattern.
fn names_pattern(check: &mut Check, t: &Text) -> Option<PathBuf> {
    let p = check.path(t)?;
    let text = p.to_string_lossy();
    if let Err(e) = glob::Pattern::new(&text) {
        let message = format!(
            "invalid pattern {text:?}: {} at position {} (use e.g. /etc/wireguard/*.conf)",
            e.msg, e.pos
        );
        check.error(t, message);
        return None;
    }
    Some(p)
}

/// Why `name` cannot be an interface name; with `pattern`, a `*` glob of
/// names is allowed too (and not held to the length limit).
pub fn interface_name_problem(name: &str, pattern: bool) -> Option<&'static str> {
    if name.is_empty() {
        Some("must not be empty")
    } else if name.chars().any(|c| c.is_whitespace() || c == '/') {
        Some("interface names contain no spaces or /")
    } else if name.contains('*') {
        (!pattern).then_some("an exact name, not a pattern")
    } else if name.len() > MAX_IFNAME_LEN {
        Some("interface names are at most 15 characters")
    } else {
        None
    }
}
