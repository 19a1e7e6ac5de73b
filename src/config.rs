//! The configuration: one YAML file turned into a validated [`Config`].
//!
//! Two stages. First the text is parsed into a small tree of scalars, lists
//! and mappings that remembers the line of every node (YAML syntax errors stop
//! here: nothing after a syntax error can be trusted). Then that tree is
//! walked once, key by key, into the typed [`Config`]; every problem found on
//! the way (unknown key, wrong type, bad duration or URL, unset environment
//! variable, conflicting aliases, ...) is recorded and the walk goes on, so
//! one run of `wghook check` reports **all** of them, each as
//! `FILE:LINE: KEY: MESSAGE`.
//!
//! Invariants:
//! - A [`Config`] exists only if there was no error at all.
//! - `${VAR}` in a scalar *value* is replaced from the environment before the
//!   value is interpreted; `$${` stands for a literal `${`. Keys are never
//!   substituted.
//! - A webhook secret is held in a [`Secret`], whose `Debug` and `Display`
//!   print `<redacted>`, and no error message ever quotes a secret's value.
//! - A URL (webhook `url`, `auth.oauth2.token_url`) can be a secret itself
//!   (userinfo, a Slack path, a token in the query): errors quote at most its
//!   scheme and host, and `Debug` shows it through [`redacted_url`].
//! - [`parse_str`] touches nothing but its arguments and the environment;
//!   [`load`] additionally reads the file, loads the scenario
//!   `monitor.scenario` names (as `run` would), and reads the peer names of the wg-quick
//!   files `monitor.names_from` names into [`Config::peers`] (entries of the
//!   `peers:` map keep their own name; see [`crate::names`]).
//! - Relative paths in the file are taken relative to the file's directory.
//! - Secret files (`secret_file`, `bearer_file`, `password_file`,
//!   `client_secret_file`, `signing_secret_file`) are read by [`parse_str`]
//!   as well as [`load`]: the configuration cannot exist without them.
//! - Webhook templates (`body`, `headers`, a templated `url`) are compiled
//!   here, once, and must render for a sample of every event kind.

use std::collections::HashMap;
use std::env::VarError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::TimeDelta;
use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle};

use crate::backend::InterfaceFilter;
use crate::delivery::signing::SigningKey;
use crate::event::template::{Mode, Template};
use crate::event::PeerLabel;
use crate::model::PublicKey;
use crate::tracker::{Announce, Settings};

/// Where the daemon looks for its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/wghook/wghook.yaml";

/// The name given to the single webhook of a `webhook:` section.
pub const DEFAULT_WEBHOOK_NAME: &str = "default";

/// Default poll interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Shortest poll interval accepted: polling faster only burns CPU, since
/// handshakes happen at most every few seconds.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Default connect threshold: WireGuard's REJECT_AFTER_TIME.
pub const DEFAULT_CONNECT_THRESHOLD: Duration = Duration::from_secs(180);
/// WireGuard's REKEY_AFTER_TIME: a live peer may go this long without a new
/// handshake, so a connect threshold below it makes idle peers flap.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// Default webhook request timeout (wg-portal's).
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout for one UAPI socket exchange.
pub const DEFAULT_UAPI_TIMEOUT: Duration = Duration::from_secs(2);
/// Where wireguard-go and boringtun put their sockets, in lookup order.
pub const DEFAULT_UAPI_DIRS: [&str; 2] = ["/var/run/wireguard", "/run/wireguard"];
/// Longest duration accepted anywhere: keeps timer arithmetic far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default time between two rounds of ping checks (wg-portal's).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Shortest interval between ping rounds: each round waits up to a second
/// for answers.
pub const MIN_PING_INTERVAL: Duration = Duration::from_secs(1);

/// Upper bound on tree nodes, so aliases of aliases cannot exhaust memory.
const MAX_NODES: usize = 100_000;
/// Linux interface names are at most this long (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;

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

/// One entry of the `interfaces:` map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfaceLabel {
    /// Display name (`interface.display_name`, wg-portal's `DisplayName`);
    /// empty: the interface's name is shown.
    pub name: String,
}

/// The `metrics:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Where `GET /metrics` is served; `None` (the default): off.
    pub listen: Option<std::net::SocketAddr>,
    /// Per-peer series (labels interface, public_key, name); off on hosts
    /// where one series per peer is too many.
    pub per_peer_metrics: bool,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: None,
            per_peer_metrics: true,
        }
    }
}

/// The `log:` section (the command line and `RUST_LOG` take precedence).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSettings {
    /// A `RUST_LOG`-style filter, e.g. `info` or `wghook=debug,warn`.
    pub level: Option<String>,
    pub format: Option<crate::logging::LogFormat>,
}

/// Default directory of the outbox database (systemd's `StateDirectory=`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/wghook";
/// Default bound of the outbox.
pub const DEFAULT_MAX_PENDING_EVENTS: u64 = 100_000;
/// Default time in-flight requests get at shutdown.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of requests in flight per webhook.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
/// Default age after which an undelivered event is given up.
pub const DEFAULT_MAX_EVENT_AGE: Duration = Duration::from_secs(72 * 3600);
/// The default retry steps: 0, 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h
/// (the last repeats).
pub const DEFAULT_RETRY_DELAYS: [Duration; 9] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
    Duration::from_secs(7200),
    Duration::from_secs(14400),
];

/// Event names an `events` filter may use (`*` stands for any part).
pub const EVENT_NAMES: [&str; 8] = [
    "peer.create",
    "peer.update",
    "peer.delete",
    "peer.connect",
    "peer.disconnect",
    "interface.create",
    "interface.update",
    "interface.delete",
];

/// The `delivery:` section: the durable outbox and how it retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// Past this many undelivered events the oldest are dropped (ERROR logged).
    pub max_pending_events: u64,
    /// How long in-flight requests may finish at shutdown.
    pub shutdown_timeout: Duration,
    /// Requests in flight per webhook (different peers only: one peer's events
    /// are always sent one after the other).
    pub max_in_flight: usize,
    /// The retry schedule every webhook uses unless it overrides it.
    pub retry: RetrySettings,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_pending_events: DEFAULT_MAX_PENDING_EVENTS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            retry: RetrySettings::default(),
        }
    }
}

/// A retry schedule: delay before each attempt (the last repeats), and the
/// age after which an event is given up. Jitter of +/-20 % is always applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySettings {
    pub delays: Vec<Duration>,
    pub max_event_age: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            delays: DEFAULT_RETRY_DELAYS.to_vec(),
            max_event_age: DEFAULT_MAX_EVENT_AGE,
        }
    }
}

/// True if the event name (`peer.connect`) matches one of the patterns
/// (`peer.*`, `*.delete`, `*`); an empty list matches everything.
pub fn event_matches(patterns: &[String], name: &str) -> bool {
    if patterns.is_empty() {
        return true;
    }
    let (entity, kind) = name.split_once('.').unwrap_or((name, ""));
    patterns.iter().any(|p| {
        if p == "*" {
            return true;
        }
        let (pe, pk) = p.split_once('.').unwrap_or((p.as_str(), "*"));
        (pe == "*" || pe == entity) && (pk == "*" || pk == kind)
    })
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

/// Which backend reads the interfaces (`monitor.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendKind {
    /// Kernel interfaces over netlink when available, plus UAPI sockets.
    #[default]
    Auto,
    /// Only UAPI sockets (wireguard-go, boringtun).
    Userspace,
    /// Only the kernel module, over netlink.
    Kernel,
    /// A scripted scenario (`monitor.scenario`), for tests and the demo.
    Simulated,
}

impl BackendKind {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Userspace => "userspace",
            BackendKind::Kernel => "kernel",
            BackendKind::Simulated => "simulated",
        }
    }
}

/// One webhook receiver. `Debug` shows the URL redacted ([`redacted_url`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Unique among the webhooks; `default` for a single `webhook:` section.
    pub name: String,
    /// An http or https URL.
    pub url: reqwest::Url,
    /// Sent verbatim as the `Authorization` header; `None` sends none.
    pub secret: Option<Secret>,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Which events go to this webhook (`peer.connect`, `peer.*`, ...); empty
    /// means all.
    pub events: Vec<String>,
    /// This webhook's retry schedule (the `delivery.retry` one unless overridden).
    pub retry: RetrySettings,
    /// Requests in flight at once (`delivery.max_in_flight` unless overridden).
    pub max_in_flight: usize,
    /// The body format when no `body` template is given.
    pub format: Format,
    /// wg-portal formats: add `ChangedFields` to `update` bodies.
    pub extended: bool,
    /// A template that replaces the format (`body:`).
    pub body: Option<Template>,
    /// `POST` (default) or `GET` (still with the body, as Defguard sends).
    pub method: HttpMethod,
    /// Free text shown by `wghook test`.
    pub description: Option<String>,
    /// Extra headers, in file order; values are templates (they may hold
    /// secrets: [`Template`]'s `Debug` never shows them).
    pub headers: Vec<(String, Template)>,
    /// Set when `url` is a template: each event's URL is rendered from it
    /// (then [`Webhook::url`] is the URL of a sample `peer.connect`, for display).
    pub url_template: Option<Template>,
    /// Authentication other than a verbatim `secret` (`auth:`); never both.
    pub auth: Option<Auth>,
    /// Standard Webhooks keys (`signing_secret`); several while rotating.
    pub signing_secrets: Vec<SigningKey>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Exhaustive, so a new field cannot be forgotten here.
        let Webhook {
            name,
            url,
            secret,
            timeout,
            events,
            retry,
            max_in_flight,
            format,
            extended,
            body,
            method,
            description,
            headers,
            url_template,
            auth,
            signing_secrets,
        } = self;
        f.debug_struct("Webhook")
            .field("name", name)
            .field("url", &redacted_url(url))
            .field("secret", secret)
            .field("timeout", timeout)
            .field("events", events)
            .field("retry", retry)
            .field("max_in_flight", max_in_flight)
            .field("format", format)
            .field("extended", extended)
            .field("body", body)
            .field("method", method)
            .field("description", description)
            .field("headers", headers)
            .field("url_template", url_template)
            .field("auth", auth)
            .field("signing_secrets", signing_secrets)
            .finish()
    }
}

/// The body format of a webhook (`format:`), see `wire-format.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// wg-portal's webhook bodies (the default).
    #[default]
    WgPortal,
    /// wg-portal 2.1's: connect/disconnect as entity `peer_metric`.
    WgPortalV2,
    /// Standard Webhooks: `{"type", "timestamp", "data"}`.
    Standard,
}

/// The HTTP method of a webhook (`method:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HttpMethod {
    #[default]
    Post,
    /// GET with the body, as Defguard's webhooks do.
    Get,
}

/// How a webhook authenticates (`auth:`), besides a verbatim `secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer TOKEN`.
    Bearer(Secret),
    /// `Authorization: Basic base64(username:password)`.
    Basic { username: String, password: Secret },
    /// An OAuth 2.0 client-credentials token, cached until shortly before
    /// it expires.
    OAuth2(OAuth2),
}

/// `auth.oauth2`: where and how to get a token. `Debug` shows the token URL
/// redacted and the client secret as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuth2 {
    pub token_url: reqwest::Url,
    pub client_id: String,
    pub client_secret: Secret,
    /// Space-separated scopes; sent only when set.
    pub scope: Option<String>,
    /// How the client authenticates to the token endpoint.
    pub client_auth: ClientAuth,
}

impl fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let OAuth2 {
            token_url,
            client_id,
            client_secret,
            scope,
            client_auth,
        } = self;
        f.debug_struct("OAuth2")
            .field("token_url", &redacted_url(token_url))
            .field("client_id", client_id)
            .field("client_secret", client_secret)
            .field("scope", scope)
            .field("client_auth", client_auth)
            .finish()
    }
}

/// How client id and secret reach the token endpoint (`auth.oauth2.client_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`, which every server must accept).
    #[default]
    Basic,
    /// In the form body (`client_secret_post`).
    Body,
}

/// A value that must never be printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One problem in the configuration, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file, as it was given.
    pub file: PathBuf,
    /// 1-based line; `None` when the problem is the file as a whole.
    pub line: Option<usize>,
    /// Dotted path of the key, e.g. `webhooks[1].url`; empty for the file as a whole.
    pub key: String,
    /// Lowercase, says what is wrong and what to write instead.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `FILE:LINE: KEY: MESSAGE`, leaving out the parts that are not known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one configuration file, in line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates the configuration file at `path`; also checks that
/// the files it names exist. An unreadable file is one error naming it.
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
    compile_text(&text, path, &|name| std::env::var(name), true)
}

/// Validates configuration text; `path` is only used in messages, as
/// [`Config::path`] and as the base of relative paths. Reads nothing but the
/// environment (for `${VAR}`).
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    compile_text(text, path, &|name| std::env::var(name), false)
}

impl Config {
    /// The tracker's settings from the `monitor:` section.
    pub fn tracker_settings(&self, host: String) -> Settings {
        Settings {
            // Cannot fail: durations are at most MAX_DURATION.
            connect_threshold: TimeDelta::from_std(self.monitor.connect_threshold)
                .unwrap_or(TimeDelta::MAX),
            endpoint_updates: self.monitor.endpoint_updates,
            announce_on_start: self.monitor.announce_on_start,
            host,
            filter: self.filter(),
        }
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
        InterfaceFilter {
            include: self.monitor.interfaces.clone(),
            exclude: self.monitor.exclude.clone(),
        }
    }
}

/// How `${VAR}` is looked up (the process environment, or a table in tests).
type EnvLookup<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

/// Both stages: text -> tree -> Config, or every error found.
fn compile_text(
    text: &str,
    path: &Path,
    env: EnvLookup<'_>,
    check_files: bool,
) -> Result<Config, ConfigErrors> {
    let root = parse_tree(text).map_err(|(line, message)| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: Some(line),
            key: String::new(),
            message,
        }])
    })?;
    let mut compiler = Compiler {
        file: path,
        env,
        check_files,
        errors: Vec::new(),
        file_names: HashMap::new(),
    };
    let config = compiler.config(root.as_ref());
    let mut errors = compiler.errors;
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => {
            // Stable: errors on one line keep the order they were found in.
            // The configuration file's come first, then those of the files
            // it names (wg-quick files of `monitor.names_from`).
            errors.sort_by(|a, b| {
                (a.file != path, &a.file, a.line).cmp(&(b.file != path, &b.file, b.line))
            });
            Err(ConfigErrors(errors))
        }
    }
}

// ---------------------------------------------------------------------------
// Stage 1: YAML text -> tree of nodes with lines.
// ---------------------------------------------------------------------------

/// A YAML node and the line it starts on. Deliberately not `Debug`: scalars
/// may hold secrets.
#[derive(Clone)]
struct Node {
    line: usize,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    /// The text as written (after YAML escapes); `plain` when unquoted, which
    /// is what makes `null`, `~` and the empty scalar mean "nothing".
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// Number of nodes in this subtree.
    fn size(&self) -> usize {
        match &self.kind {
            Kind::Scalar { .. } => 1,
            Kind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Kind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }

    /// What kind of value this is, for "expected X, found Y" (never the value
    /// itself, which could be a misplaced secret).
    fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "nothing",
            Kind::Scalar { .. } => "a single value",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// A collection being built while its events arrive.
struct Frame {
    line: usize,
    anchor: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>, Option<Node>),
}

impl Frame {
    fn push(&mut self, node: Node) {
        match &mut self.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map(entries, pending) => match pending.take() {
                Some(key) => entries.push((key, node)),
                None => *pending = Some(node),
            },
        }
    }

    fn finish(self) -> Node {
        let kind = match self.kind {
            FrameKind::Seq(items) => Kind::Seq(items),
            FrameKind::Map(entries, _) => Kind::Map(entries),
        };
        Node {
            line: self.line,
            kind,
        }
    }
}

/// Parses one YAML document into a tree. `Ok(None)` for an empty file.
/// On a syntax error returns its line and message.
fn parse_tree(text: &str) -> Result<Option<Node>, (usize, String)> {
    let mut options = Options::default();
    options.set_emit_comments(false);
    let parser = Parser::new_from_str_with_options(text, options);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root = None;
    let mut documents = 0;
    let mut nodes = 0usize;
    for item in parser {
        let (event, span) = item.map_err(|e| {
            (
                e.marker().line(),
                format!(
                    "invalid YAML: {} (column {})",
                    e.info().replace('\n', "; "),
                    e.marker().col() + 1
                ),
            )
        })?;
        let line = span.start.line();
        let (node, anchor) = match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err((line, "only one YAML document is allowed per file".into()));
                }
                continue;
            }
            Event::Scalar(text, style, anchor, _) => {
                let kind = Kind::Scalar {
                    text: text.into_owned(),
                    plain: style == ScalarStyle::Plain,
                };
                (Node { line, kind }, anchor)
            }
            Event::SequenceStart(_, anchor, _) => {
                stack.push(Frame {
                    line,
                    anchor,
                    kind: FrameKind::Seq(Vec::new()),
                });
                continue;
            }
            Event::MappingStart(_, anchor, _) => {
                stack.push(Frame {
                    line,
                    anchor,
                    kind: FrameKind::Map(Vec::new(), None),
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = stack.pop() else {
                    return Err((line, "invalid YAML: unbalanced collection".into()));
                };
                let anchor = frame.anchor;
                (frame.finish(), anchor)
            }
            Event::Alias(id) => {
                let Some(target) = anchors.get(&id) else {
                    return Err((line, "invalid YAML: alias to an unknown anchor".into()));
                };
                nodes += target.size();
                if nodes > MAX_NODES {
                    return Err((line, "the document is too large (aliases?)".into()));
                }
                let mut node = target.clone();
                node.line = line;
                (node, 0)
            }
            _ => continue,
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err((line, "the document is too large".into()));
        }
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            Some(frame) => frame.push(node),
            None => root = Some(node),
        }
    }
    Ok(root)
}

// ---------------------------------------------------------------------------
// Stage 2: tree -> Config, collecting every error.
// ---------------------------------------------------------------------------

const TOP_KEYS: &[&str] = &[
    "webhook",
    "webhooks",
    "monitor",
    "peers",
    "interfaces",
    "delivery",
    "metrics",
    "log",
];
const METRICS_KEYS: &[&str] = &["listen", "per_peer_metrics"];
const LOG_KEYS: &[&str] = &["level", "format"];
const WEBHOOK_KEYS: &[&str] = &[
    "name",
    "url",
    "secret",
    "authentication",
    "timeout",
    "events",
    "retry",
    "max_in_flight",
    "description",
    "format",
    "extended",
    "body",
    "method",
    "headers",
    "auth",
    "signing_secret",
    "secret_file",
    "authentication_file",
    "signing_secret_file",
];
const AUTH_KEYS: &[&str] = &["bearer", "bearer_file", "basic", "oauth2"];
const BASIC_KEYS: &[&str] = &["username", "password", "password_file"];
const OAUTH2_KEYS: &[&str] = &[
    "token_url",
    "client_id",
    "client_secret",
    "client_secret_file",
    "scope",
    "client_auth",
];
/// Headers wghook sets itself: a `headers` entry may not replace them.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-length",
    "host",
    "transfer-encoding",
];
const DELIVERY_KEYS: &[&str] = &[
    "max_pending_events",
    "shutdown_timeout",
    "max_in_flight",
    "retry",
];
const RETRY_KEYS: &[&str] = &["delays", "max_event_age"];
const MONITOR_KEYS: &[&str] = &[
    "interval",
    "connect_threshold",
    "rekey_timeout_interval",
    "interfaces",
    "exclude",
    "backend",
    "scenario",
    "announce_on_start",
    "endpoint_updates",
    "uapi_dirs",
    "uapi_timeout",
    "host",
    "state_dir",
    "names_from",
    "ping_checks",
    "ping_interval",
];
const PEER_KEYS: &[&str] = &["name", "user", "labels", "ping_address"];
const INTERFACE_KEYS: &[&str] = &["name"];

/// One key of a mapping.
struct Entry<'n> {
    key: String,
    key_line: usize,
    value: &'n Node,
}

/// A mapping whose keys were checked (strings, no duplicates, known).
struct MapView<'n> {
    path: String,
    /// Line of the key that holds this mapping (where "required" errors go).
    line: usize,
    entries: Vec<Entry<'n>>,
}

impl<'n> MapView<'n> {
    fn empty(path: &str, line: usize) -> Self {
        Self {
            path: path.to_string(),
            line,
            entries: Vec::new(),
        }
    }

    /// The value of `key`, unless absent or null.
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value)
            .filter(|v| !v.is_null())
    }

    fn key_line(&self, key: &str) -> usize {
        self.entries
            .iter()
            .find(|e| e.key == key)
            .map_or(self.line, |e| e.key_line)
    }

    fn child(&self, key: &str) -> String {
        join_key(&self.path, key)
    }
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

struct Compiler<'a> {
    file: &'a Path,
    env: EnvLookup<'a>,
    check_files: bool,
    errors: Vec<ConfigError>,
    /// Peer names read from `monitor.names_from` (only when `check_files`).
    file_names: HashMap<PublicKey, String>,
}

impl Compiler<'_> {
    fn error(&mut self, line: usize, key: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: Some(line),
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn wrong_type(&mut self, node: &Node, path: &str, expected: &str) {
        let message = if path.is_empty() {
            format!(
                "the file must be a mapping of {}, found {}",
                TOP_KEYS.join(", "),
                node.describe()
            )
        } else {
            format!("expected {expected}, found {}", node.describe())
        };
        self.error(node.line, path, message);
    }

    /// The whole file. `None` only if the result could not be assembled;
    /// errors are in `self.errors` either way.
    fn config(&mut self, root: Option<&Node>) -> Option<Config> {
        let top = self.map(root, "", 1, Some(TOP_KEYS))?;
        let delivery = self.delivery(top.get("delivery"), top.key_line("delivery"));
        let webhooks = self.webhooks(&top, &delivery);
        let monitor = self.monitor(top.get("monitor"), top.key_line("monitor"));
        let (mut peers, ping_addresses) = self.peers(top.get("peers"), top.key_line("peers"));
        // The `peers:` map wins: a file's name only fills an empty name.
        for (key, name) in std::mem::take(&mut self.file_names) {
            let label = peers.entry(key).or_default();
            if label.name.is_empty() {
                label.name = name;
            }
        }
        let interface_labels = self.interfaces(top.get("interfaces"), top.key_line("interfaces"));
        let metrics = self.metrics(top.get("metrics"), top.key_line("metrics"));
        let log = self.log(top.get("log"), top.key_line("log"));
        Some(Config {
            path: self.file.to_path_buf(),
            monitor,
            webhooks,
            peers,
            ping_addresses,
            interface_labels,
            delivery,
            metrics,
            log,
        })
    }

    /// Checks that `node` (absent or null = empty) is a mapping with string
    /// keys, no duplicates and, if `known` is given, only known keys.
    fn map<'n>(
        &mut self,
        node: Option<&'n Node>,
        path: &str,
        line: usize,
        known: Option<&[&str]>,
    ) -> Option<MapView<'n>> {
        let Some(node) = node.filter(|n| !n.is_null()) else {
            return Some(MapView::empty(path, line));
        };
        let Kind::Map(entries) = &node.kind else {
            self.wrong_type(node, path, "a mapping");
            return None;
        };
        let mut view = MapView::empty(path, line);
        for (key, value) in entries {
            let Kind::Scalar { text, .. } = &key.kind else {
                self.error(key.line, path, "keys must be plain strings");
                continue;
            };
            // Free-form keys (public keys, which hold `/`, `+`, `=`) are quoted.
            let key_path = match known {
                Some(_) => join_key(path, text),
                None => format!("{path}.{text:?}"),
            };
            if let Some(first) = view.entries.iter().find(|e| &e.key == text) {
                let message = format!("duplicate key (first at line {})", first.key_line);
                self.error(key.line, &key_path, message);
                continue;
            }
            if let Some(known) = known {
                if !known.contains(&text.as_str()) {
                    self.error(key.line, &key_path, unknown_key_message(text, known));
                    continue;
                }
            }
            view.entries.push(Entry {
                key: text.clone(),
                key_line: key.line,
                value,
            });
        }
        Some(view)
    }

    /// A key that has an alias: returns the value and the key it was given
    /// under; both given is an error.
    fn aliased<'n>(
        &mut self,
        m: &MapView<'n>,
        key: &str,
        alias: &str,
    ) -> Option<(&'n Node, String)> {
        match (m.get(key), m.get(alias)) {
            (Some(value), Some(_)) => {
                let message = format!(
                    "both {key} (line {}) and its alias {alias} are set; keep one",
                    m.key_line(key)
                );
                self.error(m.key_line(alias), &m.child(alias), message);
                Some((value, m.child(key)))
            }
            (Some(value), None) => Some((value, m.child(key))),
            (None, Some(value)) => Some((value, m.child(alias))),
            (None, None) => None,
        }
    }

    /// The text of a scalar value with `${VAR}` substituted.
    fn text(&mut self, node: &Node, path: &str, expected: &str) -> Option<String> {
        match &node.kind {
            Kind::Scalar { text, .. } => self.substitute(text, node.line, path),
            _ => {
                self.wrong_type(node, path, expected);
                None
            }
        }
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        self.text(node, path, "a string")
    }

    /// Replaces every `${VAR}`; `$${` is a literal `${`. Reports every
    /// unset or malformed variable of the value, never the value itself.
    fn substitute(&mut self, text: &str, line: usize, path: &str) -> Option<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut ok = true;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let tail = &rest[pos..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(inner) = tail.strip_prefix("${") {
                let Some(end) = inner.find('}') else {
                    self.error(
                        line,
                        path,
                        "unterminated ${ (close it with }, or write $${ for a literal ${)",
                    );
                    return None;
                };
                let name = &inner[..end];
                rest = &inner[end + 1..];
                if !is_env_name(name) {
                    let message = format!(
                        "invalid environment variable name {name:?} in ${{...}} \
                         (use letters, digits and _; write $${{ for a literal ${{)"
                    );
                    self.error(line, path, message);
                    ok = false;
                    continue;
                }
                match (self.env)(name) {
                    Ok(value) => out.push_str(&value),
                    Err(VarError::NotPresent) => {
                        self.error(
                            line,
                            path,
                            format!("environment variable {name} is not set"),
                        );
                        ok = false;
                    }
                    Err(VarError::NotUnicode(_)) => {
                        let message = format!("environment variable {name} is not valid UTF-8");
                        self.error(line, path, message);
                        ok = false;
                    }
                }
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        ok.then_some(out)
    }

    fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        let text = self.text(node, path, "true or false")?;
        match text.as_str() {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => {
                let message = format!("expected true or false, found {text:?}");
                self.error(node.line, path, message);
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let text = self.text(node, path, "a duration")?;
        match parse_duration(&text) {
            Some(d) if d > MAX_DURATION => {
                let message = format!("duration {text:?} is too long (at most 8760h)");
                self.error(node.line, path, message);
                None
            }
            Some(d) => Some(d),
            None => {
                let message = format!("invalid duration {text:?} (use e.g. 5s, 1m, 1h30m)");
                self.error(node.line, path, message);
                None
            }
        }
    }

    /// A duration of at least `min` (which is at least 1 ns, so never zero).
    fn duration_at_least(&mut self, node: &Node, path: &str, min: Duration) -> Option<Duration> {
        let d = self.duration(node, path)?;
        if d >= min {
            return Some(d);
        }
        let message = if min <= Duration::from_nanos(1) {
            "must be greater than 0".to_string()
        } else {
            format!(
                "must be at least {} (got {})",
                format_duration(min),
                format_duration(d)
            )
        };
        self.error(node.line, path, message);
        None
    }

    fn choice<T: Copy>(&mut self, node: &Node, path: &str, choices: &[(&str, T)]) -> Option<T> {
        let text = self.text(node, path, "a string")?;
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
            return Some(*value);
        }
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        let message = format!("invalid value {text:?} (use {})", or_list(&names));
        self.error(node.line, path, message);
        None
    }

    /// A list (absent or null = empty) of items read by `item`.
    fn list<T>(
        &mut self,
        node: Option<&Node>,
        path: &str,
        mut item: impl FnMut(&mut Self, &Node, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Some(node) = node else {
            return Some(Vec::new());
        };
        let Kind::Seq(items) = &node.kind else {
            self.wrong_type(node, path, "a list");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, child) in items.iter().enumerate() {
            match item(self, child, &format!("{path}[{i}]")) {
                Some(value) => out.push(value),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A path; relative ones are taken from the configuration file's directory.
    fn path(&mut self, node: &Node, path: &str) -> Option<PathBuf> {
        let text = self.string(node, path)?;
        if text.is_empty() {
            self.error(node.line, path, "must not be empty");
            return None;
        }
        let p = PathBuf::from(text);
        Some(match self.file.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p,
        })
    }

    fn interface_pattern(&mut self, node: &Node, path: &str) -> Option<String> {
        let text = self.string(node, path)?;
        match interface_name_problem(&text, true) {
            Some(problem) => {
                let message = format!("invalid interface name {text:?} ({problem})");
                self.error(node.line, path, message);
                None
            }
            None => Some(text),
        }
    }

    // --- webhooks ---------------------------------------------------------

    fn webhooks(&mut self, top: &MapView<'_>, delivery: &DeliverySettings) -> Vec<Webhook> {
        let single = top.get("webhook");
        let list = top.get("webhooks");
        if single.is_some() && list.is_some() {
            let message = format!(
                "both webhook (line {}) and webhooks are set; use webhook for one receiver \
                 or a webhooks list for several",
                top.key_line("webhook")
            );
            self.error(top.key_line("webhooks"), "webhooks", message);
            return Vec::new();
        }
        if let Some(node) = single {
            return self
                .webhook(node, "webhook", top.key_line("webhook"), false, delivery)
                .map(|(hook, _)| hook)
                .into_iter()
                .collect();
        }
        // Every item is read (so all its errors are reported) before names are compared.
        let Some(hooks) = self.list(list, "webhooks", |c, node, path| {
            Some(c.webhook(node, path, node.line, true, delivery))
        }) else {
            return Vec::new();
        };
        let mut out: Vec<Webhook> = Vec::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for (i, hook) in hooks.into_iter().enumerate() {
            let Some((hook, name_line)) = hook else {
                continue;
            };
            if let Some(first) = first_line.get(&hook.name) {
                let message = format!(
                    "duplicate webhook name {:?} (first at line {first})",
                    hook.name
                );
                self.error(name_line, &format!("webhooks[{i}].name"), message);
                continue;
            }
            first_line.insert(hook.name.clone(), name_line);
            out.push(hook);
        }
        out
    }

    /// One webhook and the line of its name (for duplicate names).
    fn webhook(
        &mut self,
        node: &Node,
        path: &str,
        line: usize,
        in_list: bool,
        delivery: &DeliverySettings,
    ) -> Option<(Webhook, usize)> {
        let m = self.map(Some(node), path, line, Some(WEBHOOK_KEYS))?;
        let mut ok = true;

        let name = match m.get("name") {
            Some(node) => self.webhook_name(node, &m.child("name")),
            None if in_list => {
                let message = "required in a webhooks list (letters, digits, _ and -)";
                self.error(m.key_line("name"), &m.child("name"), message);
                None
            }
            None => Some(DEFAULT_WEBHOOK_NAME.to_string()),
        };
        ok &= name.is_some();

        let url = match m.get("url") {
            Some(node) => self.webhook_url(node, &m.child("url")),
            None => {
                self.error(
                    m.key_line("url"),
                    &m.child("url"),
                    "required (an http or https URL)",
                );
                None
            }
        };
        ok &= url.is_some();

        let secret = self.secret_entry(&m, "secret", Some("authentication"), true);
        ok &= secret.is_some();
        let secret = secret.flatten();

        let timeout = match m.get("timeout") {
            Some(node) => {
                self.duration_at_least(node, &m.child("timeout"), Duration::from_nanos(1))
            }
            None => Some(DEFAULT_WEBHOOK_TIMEOUT),
        };
        ok &= timeout.is_some();

        let events = self.list(m.get("events"), &m.child("events"), Self::event_pattern);
        ok &= events.is_some();
        let retry = self.retry(
            m.get("retry"),
            &m.child("retry"),
            m.key_line("retry"),
            &delivery.retry,
        );
        ok &= retry.is_some();
        let max_in_flight = match m.get("max_in_flight") {
            Some(node) => self
                .integer(node, &m.child("max_in_flight"), 1, 1024)
                .map(|n| n as usize),
            None => Some(delivery.max_in_flight),
        };
        ok &= max_in_flight.is_some();

        let extras = self.webhook_extras(&m, secret.is_some());
        ok &= extras.is_some();

        // reqwest sends a URL's user info as `Authorization: Basic`; a
        // secret or auth would add a second Authorization header.
        if let (Some((url, _)), Some(extras)) = (&url, &extras) {
            let authorization = [
                "secret",
                "authentication",
                "secret_file",
                "authentication_file",
            ]
            .into_iter()
            .filter(|_| secret.is_some())
            .chain(["auth"].into_iter().filter(|_| extras.auth.is_some()))
            .find(|key| m.get(key).is_some());
            if let (true, Some(key)) = (has_userinfo(url), authorization) {
                let message = format!(
                    "the URL has a user name or password, sent as Basic authorization, and {key} \
                     (line {}) sets the Authorization header too; keep one (remove the user \
                     info from the URL, or remove {key})",
                    m.key_line(key)
                );
                self.error(m.key_line("url"), &m.child("url"), message);
                ok = false;
            }
        }

        match (name, url, timeout, events, retry, max_in_flight, extras) {
            (
                Some(name),
                Some((url, url_template)),
                Some(timeout),
                Some(events),
                Some(retry),
                Some(max_in_flight),
                Some(extras),
            ) if ok => {
                let hook = Webhook {
                    name,
                    url,
                    secret,
                    timeout,
                    events,
                    retry,
                    max_in_flight,
                    format: extras.format,
                    extended: extras.extended,
                    body: extras.body,
                    method: extras.method,
                    description: extras.description,
                    headers: extras.headers,
                    url_template,
                    auth: extras.auth,
                    signing_secrets: extras.signing_secrets,
                };
                Some((hook, m.key_line("name")))
            }
            _ => None,
        }
    }

    /// The keys of issue 5 (formats, templates, auth, signing), all read so
    /// that every error is reported. `has_secret`: a verbatim secret is set.
    fn webhook_extras(&mut self, m: &MapView<'_>, has_secret: bool) -> Option<WebhookExtras> {
        let mut ok = true;
        let mut out = WebhookExtras::default();

        if let Some(node) = m.get("format") {
            let choices = [
                ("wg-portal", Format::WgPortal),
                ("wg-portal-v2", Format::WgPortalV2),
                ("standard", Format::Standard),
            ];
            match self.choice(node, &m.child("format"), &choices) {
                Some(f) => out.format = f,
                None => ok = false,
            }
            if m.get("body").is_some() {
                let message = format!(
                    "both format and body (line {}) are set; body replaces the format, keep one",
                    m.key_line("body")
                );
                self.error(node.line, &m.child("format"), message);
                ok = false;
            }
        }
        if let Some(node) = m.get("extended") {
            match self.boolean(node, &m.child("extended")) {
                Some(b) => out.extended = b,
                None => ok = false,
            }
            if out.extended && (out.format == Format::Standard || m.get("body").is_some()) {
                let message = "only used with format wg-portal or wg-portal-v2 (remove it)";
                self.error(node.line, &m.child("extended"), message);
                ok = false;
            }
        }
        if let Some(node) = m.get("method") {
            let key = m.child("method");
            match self
                .string(node, &key)
                .map(|t| t.trim().to_ascii_uppercase())
            {
                Some(t) if t == "POST" => out.method = HttpMethod::Post,
                Some(t) if t == "GET" => out.method = HttpMethod::Get,
                Some(t) => {
                    self.error(
                        node.line,
                        &key,
                        format!("invalid value {t:?} (use POST or GET)"),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        if let Some(node) = m.get("description") {
            match self.string(node, &m.child("description")) {
                Some(text) => {
                    out.description = Some(text.trim().to_string()).filter(|t| !t.is_empty())
                }
                None => ok = false,
            }
        }

        let mut json_body = true;
        if let Some(node) = m.get("headers") {
            match self.headers(node, &m.child("headers"), m.key_line("headers")) {
                Some((headers, json)) => {
                    out.headers = headers;
                    json_body = json;
                }
                None => ok = false,
            }
        }
        if let Some(node) = m.get("body") {
            let mode = if json_body { Mode::Json } else { Mode::Text };
            match self.template(node, &m.child("body"), mode, |out| {
                if mode != Mode::Json {
                    return Ok(());
                }
                serde_json::from_str::<serde::de::IgnoredAny>(out)
                    .map(|_| ())
                    .map_err(|e| {
                        format!(
                            "the body is not valid JSON ({e}); quote text fields (\"{{{{ peer.name }}}}\"), \
                             use |tojson for lists, or set a Content-Type header that is not JSON"
                        )
                    })
            }) {
                Some(t) => out.body = Some(t),
                None => ok = false,
            }
        }

        if let Some(node) = m.get("auth") {
            if has_secret {
                let key = if m.get("secret").is_some() {
                    "secret"
                } else {
                    "authentication"
                };
                let message = format!(
                    "both {key} (line {}) and auth are set; keep one",
                    m.key_line(key)
                );
                self.error(m.key_line("auth"), &m.child("auth"), message);
                ok = false;
            }
            match self.auth(node, &m.child("auth"), m.key_line("auth")) {
                Some(auth) => out.auth = Some(auth),
                None => ok = false,
            }
        }

        for (key, from_file) in [("signing_secret", false), ("signing_secret_file", true)] {
            let Some(node) = m.get(key) else { continue };
            for (item, path) in one_or_many(node, &m.child(key)) {
                let value = if from_file {
                    self.secret_file(item, &path, false)
                } else {
                    self.text(item, &path, "a string or a list of strings")
                        .map(|t| Some(Secret::new(t)))
                };
                let Some(Some(value)) = value else {
                    ok = false;
                    continue;
                };
                match SigningKey::parse(value.expose()) {
                    Ok(k) => out.signing_secrets.push(k),
                    Err(e) => {
                        self.error(item.line, &path, e.to_string());
                        ok = false;
                    }
                }
            }
        }
        ok.then_some(out)
    }

    /// A webhook URL; with `{{`/`{%` in it, a template rendered per event.
    fn webhook_url(&mut self, node: &Node, path: &str) -> Option<(reqwest::Url, Option<Template>)> {
        let is_template = matches!(&node.kind, Kind::Scalar { text, .. }
            if text.contains("{{") || text.contains("{%"));
        if !is_template {
            return self.url(node, path).map(|url| (url, None));
        }
        let template = self.template(node, path, Mode::Url, |out| {
            check_url(out.trim()).map(|_| ())
        })?;
        let sample = crate::event::template::sample_event(
            "peer.connect",
            "example-host",
            chrono::Utc::now(),
        )
        .and_then(|e| {
            template
                .render(&e, &crate::event::template::sample_context())
                .ok()
        })
        .and_then(|out| check_url(out.trim()).ok());
        match sample {
            Some(url) => Some((url, Some(template))),
            None => {
                self.error(
                    node.line,
                    path,
                    "the URL template does not render a valid URL",
                );
                None
            }
        }
    }

    /// Compiles and checks a template (`${VAR}` substituted first);
    /// `validate` judges each sample output.
    fn template(
        &mut self,
        node: &Node,
        path: &str,
        mode: Mode,
        validate: impl FnMut(&str) -> Result<(), String>,
    ) -> Option<Template> {
        let source = self.text(node, path, "a string (a template)")?;
        let result = Template::compile(&source, mode).and_then(|t| t.check(validate).map(|()| t));
        match result {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(node.line, path, format!("invalid template: {e}"));
                None
            }
        }
    }

    /// `headers:`: name -> template. Also tells whether the body is JSON
    /// (no Content-Type header, or one that says json).
    fn headers(
        &mut self,
        node: &Node,
        path: &str,
        line: usize,
    ) -> Option<(Vec<(String, Template)>, bool)> {
        let m = self.map(Some(node), path, line, None)?;
        let mut ok = true;
        let mut out: Vec<(String, Template)> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        let mut json = true;
        for entry in &m.entries {
            let key = format!("{path}.{:?}", entry.key);
            let name = entry.key.trim().to_ascii_lowercase();
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                let message = "invalid header name (letters, digits and -, e.g. X-Event)";
                self.error(entry.key_line, &key, message);
                ok = false;
                continue;
            }
            if RESERVED_HEADERS.contains(&name.as_str()) {
                let message = if name == "authorization" {
                    "set by wghook: use secret or auth for the Authorization header"
                } else {
                    "set by wghook; it cannot be replaced"
                };
                self.error(entry.key_line, &key, message);
                ok = false;
                continue;
            }
            if let Some(first) = seen.iter().find(|n| n.eq_ignore_ascii_case(&name)) {
                let message = format!("the same header as {first:?} (header names ignore case)");
                self.error(entry.key_line, &key, message);
                ok = false;
                continue;
            }
            seen.push(entry.key.trim().to_string());
            if entry.value.is_null() {
                self.error(
                    entry.key_line,
                    &key,
                    "expected a value (a string or a template)",
                );
                ok = false;
                continue;
            }
            let Some(template) = self.template(entry.value, &key, Mode::Text, |_| Ok(())) else {
                ok = false;
                continue;
            };
            if name == "content-type" {
                if let Kind::Scalar { text, .. } = &entry.value.kind {
                    json = text.to_ascii_lowercase().contains("json");
                }
            }
            out.push((entry.key.trim().to_string(), template));
        }
        ok.then_some((out, json))
    }

    /// `auth:`: exactly one of bearer, basic, oauth2.
    fn auth(&mut self, node: &Node, path: &str, line: usize) -> Option<Auth> {
        let m = self.map(Some(node), path, line, Some(AUTH_KEYS))?;
        let given: Vec<&str> = ["bearer", "basic", "oauth2"]
            .into_iter()
            .filter(|k| m.get(k).is_some() || (*k == "bearer" && m.get("bearer_file").is_some()))
            .collect();
        match given.as_slice() {
            [] => {
                let message = "give one of bearer (or bearer_file), basic or oauth2";
                self.error(line, path, message);
                None
            }
            ["bearer"] => {
                let key = if m.get("bearer").is_some() {
                    "bearer"
                } else {
                    "bearer_file"
                };
                match self.secret_entry(&m, "bearer", None, true)? {
                    Some(token) if token.expose().starts_with("Bearer ") => {
                        let message = "give the token alone: wghook adds \"Bearer \"";
                        self.error(m.key_line(key), &m.child(key), message);
                        None
                    }
                    Some(token) => Some(Auth::Bearer(token)),
                    None => {
                        self.error(m.key_line(key), &m.child(key), "must not be empty");
                        None
                    }
                }
            }
            ["basic"] => self.basic(m.get("basic")?, &m.child("basic"), m.key_line("basic")),
            [_] => self.oauth2(m.get("oauth2")?, &m.child("oauth2"), m.key_line("oauth2")),
            [first, second, ..] => {
                let message = format!(
                    "both {first} (line {}) and {second} are set; give one",
                    m.key_line(first)
                );
                self.error(m.key_line(second), &m.child(second), message);
                None
            }
        }
    }

    fn basic(&mut self, node: &Node, path: &str, line: usize) -> Option<Auth> {
        let m = self.map(Some(node), path, line, Some(BASIC_KEYS))?;
        let username = match m.get("username") {
            Some(node) => {
                let key = m.child("username");
                let name = self.string(node, &key)?;
                if name.contains(':') {
                    self.error(
                        node.line,
                        &key,
                        "must not contain : (HTTP Basic separates user and password with it)",
                    );
                    return None;
                }
                Some(name)
            }
            None => {
                self.error(line, &m.child("username"), "required");
                None
            }
        };
        let password = self.secret_entry(&m, "password", None, false);
        let password = match password {
            Some(Some(p)) => Some(p),
            Some(None) => {
                self.error(line, &m.child("password"), "required (or password_file)");
                None
            }
            None => None,
        };
        Some(Auth::Basic {
            username: username?,
            password: password?,
        })
    }

    fn oauth2(&mut self, node: &Node, path: &str, line: usize) -> Option<Auth> {
        let m = self.map(Some(node), path, line, Some(OAUTH2_KEYS))?;
        let mut ok = true;
        let token_url = match m.get("token_url") {
            Some(node) => self.url(node, &m.child("token_url")),
            None => {
                self.error(
                    line,
                    &m.child("token_url"),
                    "required (the token endpoint's URL)",
                );
                None
            }
        };
        ok &= token_url.is_some();
        let client_id = match m.get("client_id") {
            Some(node) => self.string(node, &m.child("client_id")),
            None => {
                self.error(line, &m.child("client_id"), "required");
                None
            }
        };
        ok &= client_id.is_some();
        let client_secret = match self.secret_entry(&m, "client_secret", None, false) {
            Some(Some(s)) => Some(s),
            Some(None) => {
                self.error(
                    line,
                    &m.child("client_secret"),
                    "required (or client_secret_file)",
                );
                None
            }
            None => None,
        };
        ok &= client_secret.is_some();
        let scope = match m.get("scope") {
            Some(node) => self
                .string(node, &m.child("scope"))
                .map(|s| Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            None => Some(None),
        };
        ok &= scope.is_some();
        let client_auth = match m.get("client_auth") {
            Some(node) => self.choice(
                node,
                &m.child("client_auth"),
                &[("basic", ClientAuth::Basic), ("body", ClientAuth::Body)],
            ),
            None => Some(ClientAuth::Basic),
        };
        ok &= client_auth.is_some();
        if let (Some(url), Some(ClientAuth::Basic)) = (&token_url, client_auth) {
            if has_userinfo(url) {
                // reqwest would send the user info as a second Basic header.
                let message = "the token URL has a user name or password, and client_auth basic \
                               sends the client credentials as the Authorization header; remove \
                               the user info from the URL (or set client_auth: body)";
                self.error(m.key_line("token_url"), &m.child("token_url"), message);
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        Some(Auth::OAuth2(OAuth2 {
            token_url: token_url?,
            client_id: client_id?,
            client_secret: client_secret?,
            scope: scope?,
            client_auth: client_auth?,
        }))
    }

    /// A secret given as `key` (or `alias`) or read from `key_file` (or
    /// `alias_file`). `Some(None)`: none given (or empty); `None`: an error
    /// was recorded. `header`: the value is sent as a header as it is.
    fn secret_entry(
        &mut self,
        m: &MapView<'_>,
        key: &str,
        alias: Option<&str>,
        header: bool,
    ) -> Option<Option<Secret>> {
        let file_key = format!("{key}_file");
        let value = match alias {
            Some(alias) => self.aliased(m, key, alias),
            None => m.get(key).map(|n| (n, m.child(key))),
        };
        let file = match alias {
            Some(alias) => self.aliased(m, &file_key, &format!("{alias}_file")),
            None => m.get(&file_key).map(|n| (n, m.child(&file_key))),
        };
        match (value, file) {
            (Some((value, value_key)), Some((file, file_key))) => {
                let message = format!(
                    "both {} (line {}) and {} are set; keep one",
                    value_key.rsplit('.').next().unwrap_or(&value_key),
                    value.line,
                    file_key.rsplit('.').next().unwrap_or(&file_key),
                );
                self.error(file.line, &file_key, message);
                None
            }
            (Some((node, key)), None) if header => self.secret(node, &key),
            (Some((node, key)), None) => {
                let value = self.text(node, &key, "a string")?;
                Some(Some(Secret::new(value)).filter(|s| !s.expose().is_empty()))
            }
            (None, Some((node, key))) => self.secret_file(node, &key, header),
            (None, None) => Some(None),
        }
    }

    /// Reads a secret file (relative to the configuration's directory); one
    /// trailing line break is not part of the secret.
    fn secret_file(&mut self, node: &Node, path: &str, header: bool) -> Option<Option<Secret>> {
        let file = self.path(node, path)?;
        let text = match crate::files::read_bounded_text(&file, crate::files::MAX_SECRET_FILE) {
            Ok(text) => text,
            Err(e) => {
                let message = format!("cannot read secret file {}: {e}", file.display());
                self.error(node.line, path, message);
                return None;
            }
        };
        let value = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if value.is_empty() {
            let message = format!("secret file {} is empty", file.display());
            self.error(node.line, path, message);
            return None;
        }
        if header && reqwest::header::HeaderValue::from_str(value).is_err() {
            let message = format!(
                "secret file {} contains characters not allowed in an HTTP header \
                 (line breaks or other control characters)",
                file.display()
            );
            self.error(node.line, path, message);
            return None;
        }
        Some(Some(Secret::new(value.to_string())))
    }

    fn webhook_name(&mut self, node: &Node, path: &str) -> Option<String> {
        let name = self.string(node, path)?;
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid {
            return Some(name);
        }
        let message = format!("invalid name {name:?} (use letters, digits, _ and -)");
        self.error(node.line, path, message);
        None
    }

    fn url(&mut self, node: &Node, path: &str) -> Option<reqwest::Url> {
        let text = self.string(node, path)?;
        if text.trim().is_empty() {
            self.error(node.line, path, "required (an http or https URL)");
            return None;
        }
        match reqwest::Url::parse(text.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
            Ok(url) => {
                // Only the scheme is quoted: the rest may hold credentials.
                let message = format!(
                    "unsupported URL scheme {:?} (use http or https)",
                    url.scheme()
                );
                self.error(node.line, path, message);
                None
            }
            Err(e) => {
                // Never the text itself: after `${VAR}` it may hold
                // credentials, and a path or query may be the secret.
                let message = format!(
                    "invalid URL{}: {e} (use e.g. https://example.com/hook)",
                    unparsed_url_origin(text.trim())
                        .map(|o| format!(" {o:?}"))
                        .unwrap_or_default()
                );
                self.error(node.line, path, message);
                None
            }
        }
    }

    /// `Some(None)`: no secret (absent or empty, as wg-portal writes it).
    /// Errors never quote the value.
    fn secret(&mut self, node: &Node, path: &str) -> Option<Option<Secret>> {
        let value = self.text(node, path, "a string")?;
        if value.is_empty() {
            return Some(None);
        }
        if reqwest::header::HeaderValue::from_str(&value).is_err() {
            let message = "contains characters not allowed in an HTTP header \
                           (line breaks or other control characters)";
            self.error(node.line, path, message);
            return None;
        }
        Some(Some(Secret::new(value)))
    }

    /// A whole number in `min..=max`.
    fn integer(&mut self, node: &Node, path: &str, min: u64, max: u64) -> Option<u64> {
        let text = self.text(node, path, "a number")?;
        match text.trim().replace('_', "").parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let message =
                    format!("expected a whole number from {min} to {max}, found {text:?}");
                self.error(node.line, path, message);
                None
            }
        }
    }

    /// One `events` filter entry: `peer.connect`, `peer.*`, `*.delete` or `*`.
    fn event_pattern(&mut self, node: &Node, path: &str) -> Option<String> {
        let text = self.string(node, path)?;
        let text = text.trim().to_string();
        let known = text == "*"
            || EVENT_NAMES
                .iter()
                .any(|name| event_matches(std::slice::from_ref(&text), name));
        let (entity, kind) = text.split_once('.').unwrap_or((&text, ""));
        let well_formed = text == "*"
            || (matches!(entity, "*" | "peer" | "interface")
                && matches!(
                    kind,
                    "*" | "create" | "update" | "delete" | "connect" | "disconnect"
                ));
        if known && well_formed {
            return Some(text);
        }
        let message = format!(
            "unknown event {text:?} (use {}, or * as a part, e.g. peer.*)",
            EVENT_NAMES.join(", ")
        );
        self.error(node.line, path, message);
        None
    }

    /// A `retry:` mapping; keys not given keep the values of `base`.
    fn retry(
        &mut self,
        node: Option<&Node>,
        path: &str,
        line: usize,
        base: &RetrySettings,
    ) -> Option<RetrySettings> {
        let m = self.map(node, path, line, Some(RETRY_KEYS))?;
        let mut out = base.clone();
        let mut ok = true;
        if let Some(node) = m.get("delays") {
            let key = m.child("delays");
            match self.list(Some(node), &key, Self::duration) {
                Some(delays) if delays.is_empty() => {
                    self.error(
                        node.line,
                        &key,
                        "must list at least one delay (e.g. [0s, 5s, 30s])",
                    );
                    ok = false;
                }
                Some(delays) => out.delays = delays,
                None => ok = false,
            }
        }
        if let Some(node) = m.get("max_event_age") {
            match self.duration_at_least(node, &m.child("max_event_age"), Duration::from_secs(1)) {
                Some(d) => out.max_event_age = d,
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    // --- delivery ---------------------------------------------------------

    fn delivery(&mut self, node: Option<&Node>, line: usize) -> DeliverySettings {
        let mut out = DeliverySettings::default();
        let Some(m) = self.map(node, "delivery", line, Some(DELIVERY_KEYS)) else {
            return out;
        };
        if let Some(node) = m.get("max_pending_events") {
            if let Some(n) = self.integer(node, &m.child("max_pending_events"), 1, 100_000_000) {
                out.max_pending_events = n;
            }
        }
        if let Some(node) = m.get("shutdown_timeout") {
            if let Some(d) = self.duration(node, &m.child("shutdown_timeout")) {
                out.shutdown_timeout = d;
            }
        }
        if let Some(node) = m.get("max_in_flight") {
            if let Some(n) = self.integer(node, &m.child("max_in_flight"), 1, 1024) {
                out.max_in_flight = n as usize;
            }
        }
        if let Some(retry) = self.retry(
            m.get("retry"),
            &m.child("retry"),
            m.key_line("retry"),
            &RetrySettings::default(),
        ) {
            out.retry = retry;
        }
        out
    }

    // --- monitor ----------------------------------------------------------

    fn monitor(&mut self, node: Option<&Node>, line: usize) -> Monitor {
        let mut out = Monitor::default();
        if let Some(dir) = (self.env)("STATE_DIRECTORY")
            .ok()
            .and_then(|v| v.split(':').next().map(PathBuf::from))
            .filter(|p| p.is_absolute())
        {
            // systemd's StateDirectory= (the first, if several).
            out.state_dir = dir;
        }
        let Some(m) = self.map(node, "monitor", line, Some(MONITOR_KEYS)) else {
            return out;
        };

        if let Some(node) = m.get("interval") {
            if let Some(d) = self.duration_at_least(node, &m.child("interval"), MIN_INTERVAL) {
                out.interval = d;
            }
        }
        if let Some((node, key)) = self.aliased(&m, "connect_threshold", "rekey_timeout_interval") {
            if let Some(d) = self.duration_at_least(node, &key, Duration::from_nanos(1)) {
                if d < REKEY_AFTER_TIME {
                    tracing::warn!(
                        file = %self.file.display(),
                        line = node.line,
                        connect_threshold_ms = d.as_millis() as u64,
                        "{key} is below WireGuard's 120 s rekey interval; idle peers will \
                         flap between connect and disconnect"
                    );
                }
                out.connect_threshold = d;
            }
        }
        for (key, target) in [
            ("interfaces", &mut out.interfaces),
            ("exclude", &mut out.exclude),
        ] {
            if let Some(list) = self.list(m.get(key), &m.child(key), Self::interface_pattern) {
                *target = list;
            }
        }
        let backend_choices = [
            ("auto", BackendKind::Auto),
            ("userspace", BackendKind::Userspace),
            ("kernel", BackendKind::Kernel),
            ("simulated", BackendKind::Simulated),
        ];
        let backend = match m.get("backend") {
            Some(node) => self.choice(node, &m.child("backend"), &backend_choices),
            None => Some(BackendKind::Auto),
        };
        if let Some(backend) = backend {
            out.backend = backend;
        }
        out.scenario = self.scenario(&m, backend);

        let announce_choices = [
            ("connected", Announce::Connected),
            ("all", Announce::All),
            ("none", Announce::None),
        ];
        if let Some(node) = m.get("announce_on_start") {
            if let Some(a) = self.choice(node, &m.child("announce_on_start"), &announce_choices) {
                out.announce_on_start = a;
            }
        }
        if let Some(node) = m.get("endpoint_updates") {
            if let Some(b) = self.boolean(node, &m.child("endpoint_updates")) {
                out.endpoint_updates = b;
            }
        }
        if let Some(node) = m.get("uapi_dirs") {
            let key = m.child("uapi_dirs");
            match self.list(Some(node), &key, Self::path) {
                Some(dirs) if dirs.is_empty() => {
                    let message =
                        "must name at least one directory (remove the key for the defaults)";
                    self.error(node.line, &key, message);
                }
                Some(dirs) => out.uapi_dirs = dirs,
                None => {}
            }
        }
        if let Some(node) = m.get("uapi_timeout") {
            let key = m.child("uapi_timeout");
            if let Some(d) = self.duration_at_least(node, &key, Duration::from_nanos(1)) {
                out.uapi_timeout = d;
            }
        }
        if let Some(node) = m.get("state_dir") {
            if let Some(dir) = self.path(node, &m.child("state_dir")) {
                out.state_dir = dir;
            }
        }
        if let Some(node) = m.get("ping_checks") {
            if let Some(b) = self.boolean(node, &m.child("ping_checks")) {
                out.ping_checks = b;
            }
        }
        if let Some(node) = m.get("ping_interval") {
            let key = m.child("ping_interval");
            if let Some(d) = self.duration_at_least(node, &key, MIN_PING_INTERVAL) {
                out.ping_interval = d;
            }
        }
        if let Some(node) = m.get("names_from") {
            let key = m.child("names_from");
            if let Some(items) = self.list(Some(node), &key, Self::names_pattern) {
                out.names_from = items.iter().map(|(p, _)| p.clone()).collect();
                if self.check_files {
                    self.load_names(&items, &key);
                }
            }
        }
        if let Some(node) = m.get("host") {
            let key = m.child("host");
            if let Some(host) = self.string(node, &key) {
                if host.trim().is_empty() {
                    let message = "must not be empty (remove it to use the system host name)";
                    self.error(node.line, &key, message);
                } else {
                    out.host = Some(host.trim().to_string());
                }
            }
        }
        out
    }

    /// One `monitor.names_from` item: a path or glob pattern, and its line.
    fn names_pattern(&mut self, node: &Node, path: &str) -> Option<(PathBuf, usize)> {
        let p = self.path(node, path)?;
        let text = p.to_string_lossy();
        if let Err(e) = glob::Pattern::new(&text) {
            let message = format!(
                "invalid pattern {text:?}: {} at position {} (use e.g. /etc/wireguard/*.conf)",
                e.msg, e.pos
            );
            self.error(node.line, path, message);
            return None;
        }
        Some((p, node.line))
    }

    /// Reads the peer names of the `names_from` files into `file_names`;
    /// a literal file that cannot be read is an error at its item, a
    /// malformed file an error at its own line (see [`crate::names`]).
    fn load_names(&mut self, items: &[(PathBuf, usize)], key: &str) {
        let patterns: Vec<PathBuf> = items.iter().map(|(p, _)| p.clone()).collect();
        let loaded = crate::names::load(&patterns);
        for warning in &loaded.warnings {
            tracing::warn!(file = %self.file.display(), "{warning}");
        }
        for error in loaded.errors {
            match error {
                crate::names::NamesError::Unreadable {
                    pattern,
                    path,
                    reason,
                } => {
                    let line = items.get(pattern).map_or(1, |(_, line)| *line);
                    let message = format!("cannot read {}: {reason}", path.display());
                    self.error(line, &format!("{key}[{pattern}]"), message);
                }
                crate::names::NamesError::Malformed {
                    path,
                    line,
                    message,
                } => self.errors.push(ConfigError {
                    file: path,
                    line: Some(line),
                    key: String::new(),
                    message: format!("{message} (in a wg-quick file of monitor.names_from)"),
                }),
            }
        }
        self.file_names = loaded.names;
    }

    /// `monitor.scenario`: required iff the backend is simulated (`backend`
    /// is `None` when it was invalid: then nothing is said about the scenario).
    fn scenario(&mut self, m: &MapView<'_>, backend: Option<BackendKind>) -> Option<PathBuf> {
        let key = m.child("scenario");
        let simulated = backend == Some(BackendKind::Simulated);
        let Some(node) = m.get("scenario") else {
            if simulated {
                let message = "required when monitor.backend is simulated (a scenario file)";
                self.error(m.key_line("backend"), &key, message);
            }
            return None;
        };
        let path = self.path(node, &key)?;
        if backend.is_some() && !simulated {
            let message = "only used when monitor.backend is simulated (remove it, or set backend: simulated)";
            self.error(node.line, &key, message);
            return None;
        }
        if self.check_files {
            // Loaded as `run` will load it, so that whatever `run` would
            // refuse (a step out of range, an unknown peer) fails `check`.
            use crate::backend::sim::{Scenario, ScenarioError};
            if let Err(e) = Scenario::load(&path) {
                let message = match e {
                    ScenarioError::Read { source, .. } => {
                        format!("cannot read {}: {source}", path.display())
                    }
                    other => other.to_string(),
                };
                self.error(node.line, &key, message);
                return None;
            }
        }
        Some(path)
    }

    // --- metrics and log --------------------------------------------------

    fn metrics(&mut self, node: Option<&Node>, line: usize) -> MetricsSettings {
        let mut out = MetricsSettings::default();
        let Some(m) = self.map(node, "metrics", line, Some(METRICS_KEYS)) else {
            return out;
        };
        if let Some(node) = m.get("listen") {
            let key = m.child("listen");
            if let Some(text) = self.string(node, &key) {
                match text.trim().parse::<std::net::SocketAddr>() {
                    Ok(addr) => out.listen = Some(addr),
                    Err(_) => {
                        let message = format!(
                            "invalid address {text:?} (use IP:PORT, e.g. 127.0.0.1:9586 or [::1]:9586)"
                        );
                        self.error(node.line, &key, message);
                    }
                }
            }
        }
        if let Some(node) = m.get("per_peer_metrics") {
            if let Some(b) = self.boolean(node, &m.child("per_peer_metrics")) {
                out.per_peer_metrics = b;
            }
        }
        out
    }

    fn log(&mut self, node: Option<&Node>, line: usize) -> LogSettings {
        use crate::logging::LogFormat;
        let mut out = LogSettings::default();
        let Some(m) = self.map(node, "log", line, Some(LOG_KEYS)) else {
            return out;
        };
        if let Some(node) = m.get("level") {
            let key = m.child("level");
            if let Some(text) = self.string(node, &key) {
                match crate::logging::check_filter(text.trim()) {
                    Ok(()) => out.level = Some(text.trim().to_string()),
                    Err(e) => {
                        let message = format!(
                            "invalid log filter {text:?}: {e} (use e.g. info or wghook=debug,warn)"
                        );
                        self.error(node.line, &key, message);
                    }
                }
            }
        }
        if let Some(node) = m.get("format") {
            let choices = [
                ("auto", LogFormat::Auto),
                ("human", LogFormat::Human),
                ("journald", LogFormat::Journald),
                ("json", LogFormat::Json),
            ];
            out.format = self.choice(node, &m.child("format"), &choices);
        }
        out
    }

    // --- interfaces -------------------------------------------------------

    /// The `interfaces:` map: interface name -> `{ name: DISPLAY NAME }`.
    fn interfaces(&mut self, node: Option<&Node>, line: usize) -> HashMap<String, InterfaceLabel> {
        let mut out = HashMap::new();
        let Some(m) = self.map(node, "interfaces", line, None) else {
            return out;
        };
        for entry in &m.entries {
            // Quoted as in `map` (free-form keys).
            let path = format!("interfaces.{:?}", entry.key);
            let problem = if entry.key.chars().any(char::is_control) {
                Some("interface names contain no spaces or /")
            } else {
                interface_name_problem(&entry.key, false)
            };
            if let Some(problem) = problem {
                self.error(
                    entry.key_line,
                    &path,
                    format!("invalid interface name ({problem})"),
                );
            }
            let Some(m) = self.map(
                Some(entry.value),
                &path,
                entry.key_line,
                Some(INTERFACE_KEYS),
            ) else {
                continue;
            };
            let mut label = InterfaceLabel::default();
            if let Some(node) = m.get("name") {
                match self.string(node, &m.child("name")) {
                    Some(name) => label.name = name,
                    None => continue,
                }
            }
            if problem.is_none() {
                out.insert(entry.key.clone(), label);
            }
        }
        out
    }

    // --- peers ------------------------------------------------------------

    /// Labels and ping addresses by public key.
    fn peers(
        &mut self,
        node: Option<&Node>,
        line: usize,
    ) -> (
        HashMap<PublicKey, PeerLabel>,
        HashMap<PublicKey, std::net::IpAddr>,
    ) {
        let mut out = HashMap::new();
        let mut ping_addresses = HashMap::new();
        let Some(m) = self.map(node, "peers", line, None) else {
            return (out, ping_addresses);
        };
        let mut first_line: HashMap<PublicKey, usize> = HashMap::new();
        for entry in &m.entries {
            // Quoted as in `map`: base64 keys hold `/`, `+` and `=`.
            let path = format!("peers.{:?}", entry.key);
            let key = match PublicKey::from_base64(&entry.key) {
                Ok(key) => Some(key),
                Err(e) => {
                    let message = format!(
                        "invalid public key ({e}); use the 44-character base64 form `wg show` prints"
                    );
                    self.error(entry.key_line, &path, message);
                    None
                }
            };
            let label = self.peer_label(entry.value, &path, entry.key_line);
            let (Some(key), Some((label, ping_address))) = (key, label) else {
                continue;
            };
            if let Some(first) = first_line.get(&key) {
                let message = format!("the same public key as line {first}");
                self.error(entry.key_line, &path, message);
                continue;
            }
            first_line.insert(key, entry.key_line);
            out.insert(key, label);
            if let Some(address) = ping_address {
                ping_addresses.insert(key, address);
            }
        }
        (out, ping_addresses)
    }

    /// One entry of `peers:`: its names and labels, and its ping address.
    fn peer_label(
        &mut self,
        node: &Node,
        path: &str,
        line: usize,
    ) -> Option<(PeerLabel, Option<std::net::IpAddr>)> {
        let m = self.map(Some(node), path, line, Some(PEER_KEYS))?;
        let mut label = PeerLabel::default();
        let mut ok = true;
        for (key, target) in [("name", &mut label.name), ("user", &mut label.user)] {
            if let Some(node) = m.get(key) {
                match self.string(node, &m.child(key)) {
                    Some(value) => *target = value,
                    None => ok = false,
                }
            }
        }
        if let Some(node) = m.get("labels") {
            let key = m.child("labels");
            match self.map(Some(node), &key, m.key_line("labels"), None) {
                Some(labels) => {
                    for entry in &labels.entries {
                        let path = format!("{key}.{:?}", entry.key);
                        let valid = !entry.key.is_empty()
                            && entry
                                .key
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                        if !valid {
                            let message = "invalid label name (use letters, digits, _, - and .)";
                            self.error(entry.key_line, &path, message);
                            ok = false;
                            continue;
                        }
                        match self.string(entry.value, &path) {
                            Some(value) => {
                                label.labels.insert(entry.key.clone(), value);
                            }
                            None => ok = false,
                        }
                    }
                }
                None => ok = false,
            }
        }
        let mut ping_address = None;
        if let Some(node) = m.get("ping_address") {
            let key = m.child("ping_address");
            match self.string(node, &key) {
                Some(text) => match text.trim().parse::<std::net::IpAddr>() {
                    Ok(address) => ping_address = Some(address),
                    Err(_) => {
                        let message =
                            format!("invalid IP address {text:?} (use e.g. 10.8.0.2 or fd00::2)");
                        self.error(node.line, &key, message);
                        ok = false;
                    }
                },
                None => ok = false,
            }
        }
        ok.then_some((label, ping_address))
    }
}

/// What [`Compiler::webhook_extras`] reads.
#[derive(Default)]
struct WebhookExtras {
    format: Format,
    extended: bool,
    body: Option<Template>,
    method: HttpMethod,
    description: Option<String>,
    headers: Vec<(String, Template)>,
    auth: Option<Auth>,
    signing_secrets: Vec<SigningKey>,
}

/// A value given alone or as a list: each item with its key path.
fn one_or_many<'n>(node: &'n Node, path: &str) -> Vec<(&'n Node, String)> {
    match &node.kind {
        Kind::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| (item, format!("{path}[{i}]")))
            .collect(),
        _ => vec![(node, path.to_string())],
    }
}

/// An http or https URL, or why not (the message quotes only the scheme).
fn check_url(text: &str) -> Result<reqwest::Url, String> {
    match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(url),
        Ok(url) => Err(format!(
            "the URL's scheme {:?} is not http or https",
            url.scheme()
        )),
        Err(e) => Err(format!("not a valid URL ({e})")),
    }
}

/// True if `url` has user info (`https://user:pass@host/`), which reqwest
/// sends as an `Authorization: Basic` header.
fn has_userinfo(url: &reqwest::Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// What of a URL that did not parse may be quoted in a message: the scheme
/// and host (`https://hooks.example.com`), if they look like a scheme and a
/// host; `None` if not. Never the userinfo, port, path, query or fragment.
fn unparsed_url_origin(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return None;
    }
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or("");
    // The userinfo ends at the last `@` of the authority.
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        // An IPv6 literal: up to its `]`, which must be there.
        Some(inner) => {
            let (address, _) = inner.split_once(']')?;
            if address.is_empty()
                || !address
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
            {
                return None;
            }
            &host_port[..address.len() + 2]
        }
        None => host_port.split(':').next().unwrap_or(""),
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')));
    host_ok.then(|| format!("{}://{host}", scheme.to_ascii_lowercase()))
}

/// Why `name` cannot be an interface name; with `pattern`, a `*` glob of
/// names is allowed too (and not held to the length limit).
fn interface_name_problem(name: &str, pattern: bool) -> Option<&'static str> {
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

/// A URL as it may be shown (logs, `Debug`, messages): scheme, host and an
/// explicit port, then `/…` when there is more. Userinfo, path, query and
/// fragment can hold credentials (a Slack or Discord webhook URL is its own
/// secret), so they are never shown.
pub fn redacted_url(url: &reqwest::Url) -> String {
    let mut out = format!("{}://", url.scheme());
    // IPv6 hosts come bracketed.
    out.push_str(url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    let more = url.path() != "/" || url.query().is_some() || url.fragment().is_some();
    out.push_str(if more { "/…" } else { "/" });
    out
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `a, b or c`.
fn or_list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn unknown_key_message(key: &str, known: &[&str]) -> String {
    let closest = known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .min_by_key(|(d, _)| *d);
    match closest {
        Some((d, k)) if d <= 2 || (d <= 3 && key.len() > 8) => {
            format!("unknown key (did you mean {k}?)")
        }
        _ => format!("unknown key (known keys: {})", known.join(", ")),
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses `500ms`, `5s`, `3m`, `1h30m`, `1.5h` (Go's units: ns, us, µs, ms,
/// s, m, h, in any combination) or a bare integer meaning seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().ok().map(Duration::from_secs);
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        rest = after;
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3600 * NANOS_PER_SEC,
            _ => return None,
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty()) || int.len() > 19 || frac.len() > 18 {
            return None;
        }
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let frac_value: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
        let part = int
            .checked_mul(unit_nanos)?
            .checked_add(frac_value.checked_mul(unit_nanos)? / scale)?;
        total = total.checked_add(part)?;
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).ok()?;
    let nanos = u32::try_from(total % NANOS_PER_SEC).ok()?;
    Some(Duration::new(secs, nanos))
}

/// Shows a duration the way it is written in the file (`100ms`, `2m30s`).
fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        if d.subsec_nanos().is_multiple_of(1_000_000) && d.as_secs() == 0 {
            return format!("{}ms", d.subsec_millis());
        }
        return format!("{d:?}");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "Fb5TaziAs1WrPBjC/MFbWsIelVXvi0hDKZ3YQM9wmU8=";
    /// Never set by anything: `${...}` of it must fail.
    const UNSET_VAR: &str = "WGHOOK_TEST_UNSET_6B1D0E";

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        parse_str(text, Path::new(DEFAULT_PATH))
    }

    fn ok(text: &str) -> Config {
        match parse(text) {
            Ok(config) => config,
            Err(errors) => panic!("unexpected errors:\n{errors}"),
        }
    }

    fn error_lines(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn the_wg_portal_seed_minimal_form_is_accepted_as_is() {
        let config = ok(
            "webhook:\n  url: https://your-service.example.com/webhook\n  \
                         secret: \"Basic dXNlcm5hbWU6cGFzc3dvcmQ=\"\n",
        );
        assert_eq!(config.webhooks.len(), 1);
        let hook = &config.webhooks[0];
        assert_eq!(hook.name, "default");
        assert_eq!(
            hook.url.as_str(),
            "https://your-service.example.com/webhook"
        );
        assert_eq!(
            hook.secret.as_ref().map(Secret::expose),
            Some("Basic dXNlcm5hbWU6cGFzc3dvcmQ=")
        );
        assert_eq!(hook.timeout, Duration::from_secs(10));
        assert_eq!(config.monitor, Monitor::default());
        assert_eq!(config.path, Path::new(DEFAULT_PATH));
    }

    #[test]
    fn authentication_is_an_alias_of_secret() {
        let config = ok("webhook:\n  url: http://127.0.0.1:8080/hook\n  authentication: \"Bearer abc\"\n  timeout: 10\n");
        let hook = &config.webhooks[0];
        assert_eq!(hook.secret.as_ref().map(Secret::expose), Some("Bearer abc"));
        assert_eq!(
            hook.timeout,
            Duration::from_secs(10),
            "a bare integer is seconds"
        );
    }

    #[test]
    fn an_empty_secret_sends_no_authorization_as_in_wg_portal() {
        let config = ok("webhook:\n  url: https://h.example/x\n  authentication: \"\"\n");
        assert_eq!(config.webhooks[0].secret, None);
    }

    #[test]
    fn rekey_timeout_interval_is_an_alias_of_connect_threshold() {
        let config = ok("monitor:\n  rekey_timeout_interval: 5m\n");
        assert_eq!(config.monitor.connect_threshold, Duration::from_secs(300));
        // Below REKEY_AFTER_TIME is only a logged note, not an error.
        let config = ok("monitor:\n  connect_threshold: 90s\n");
        assert_eq!(config.monitor.connect_threshold, Duration::from_secs(90));
    }

    #[test]
    fn an_empty_file_or_empty_sections_give_the_defaults() {
        for text in [
            "",
            "# nothing\n",
            "monitor:\npeers:\nwebhooks:\n",
            "monitor: {}\nwebhooks: []\n",
        ] {
            let config = ok(text);
            assert!(config.webhooks.is_empty(), "{text:?}");
            assert!(config.peers.is_empty(), "{text:?}");
            let m = &config.monitor;
            assert_eq!(m.interval, Duration::from_secs(5));
            assert_eq!(m.connect_threshold, Duration::from_secs(180));
            assert!(m.interfaces.is_empty() && m.exclude.is_empty());
            assert_eq!(m.backend, BackendKind::Auto);
            assert_eq!(m.scenario, None);
            assert_eq!(m.announce_on_start, Announce::Connected);
            assert!(m.endpoint_updates);
            assert_eq!(
                m.uapi_dirs,
                [
                    PathBuf::from("/var/run/wireguard"),
                    PathBuf::from("/run/wireguard")
                ]
            );
            assert_eq!(m.uapi_timeout, Duration::from_secs(2));
            assert_eq!(m.host, None);
        }
    }

    #[test]
    fn every_key_is_read() {
        let text = format!(
            "webhooks:\n\
             \x20 - name: ops\n    url: https://ops.example.com/wg\n    secret: \"Bearer abc\"\n    timeout: 1m30s\n    \
             events: [peer.connect, \"interface.*\"]\n    retry: {{ delays: [1s, 1m], max_event_age: 2h }}\n    \
             max_in_flight: 2\n\
             \x20 - name: audit_2\n    url: http://10.0.0.1:9000/\n    retry: {{ max_event_age: 30m }}\n\
             delivery:\n  max_pending_events: 1_000\n  shutdown_timeout: 3s\n  max_in_flight: 8\n  \
             retry:\n    delays: [0s, 7s]\n    max_event_age: 1h\n\
             monitor:\n  interval: 500ms\n  connect_threshold: 4m\n  interfaces: [wg0, \"wg*\"]\n  \
             exclude: [wg-test*]\n  backend: simulated\n  scenario: scenario.yaml\n  \
             announce_on_start: all\n  endpoint_updates: false\n  uapi_dirs: [/run/wg, rel]\n  \
             uapi_timeout: 250ms\n  host: myhost\n\
             peers:\n  \"{ALICE}\": {{ name: alice-laptop, user: alice }}\n"
        );
        let config =
            parse_str(&text, Path::new("/etc/wghook/conf.yaml")).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = config.webhooks.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["ops", "audit_2"]);
        assert_eq!(config.webhooks[0].timeout, Duration::from_secs(90));
        assert_eq!(config.webhooks[1].secret, None);
        assert_eq!(config.webhooks[1].timeout, DEFAULT_WEBHOOK_TIMEOUT);
        let secs = Duration::from_secs;
        assert_eq!(
            config.delivery,
            DeliverySettings {
                max_pending_events: 1000,
                shutdown_timeout: secs(3),
                max_in_flight: 8,
                retry: RetrySettings {
                    delays: vec![secs(0), secs(7)],
                    max_event_age: secs(3600),
                },
            }
        );
        let [ops, audit] = &config.webhooks[..] else {
            panic!("two webhooks expected")
        };
        assert_eq!(ops.events, ["peer.connect", "interface.*"]);
        assert_eq!(
            (
                ops.retry.delays.as_slice(),
                ops.retry.max_event_age,
                ops.max_in_flight
            ),
            ([secs(1), secs(60)].as_slice(), secs(7200), 2)
        );
        // Keys a webhook leaves out come from the delivery section.
        assert!(audit.events.is_empty());
        assert_eq!(
            (
                audit.retry.delays.as_slice(),
                audit.retry.max_event_age,
                audit.max_in_flight
            ),
            ([secs(0), secs(7)].as_slice(), secs(1800), 8)
        );
        let m = &config.monitor;
        assert_eq!(m.interval, Duration::from_millis(500));
        assert_eq!(m.connect_threshold, Duration::from_secs(240));
        assert_eq!(m.interfaces, ["wg0", "wg*"]);
        assert_eq!(m.exclude, ["wg-test*"]);
        assert_eq!(m.backend, BackendKind::Simulated);
        // Relative paths are taken from the configuration file's directory.
        assert_eq!(
            m.scenario.as_deref(),
            Some(Path::new("/etc/wghook/scenario.yaml"))
        );
        assert_eq!(
            m.uapi_dirs,
            [PathBuf::from("/run/wg"), PathBuf::from("/etc/wghook/rel")]
        );
        assert_eq!(m.announce_on_start, Announce::All);
        assert!(!m.endpoint_updates);
        assert_eq!(m.uapi_timeout, Duration::from_millis(250));
        assert_eq!(m.host.as_deref(), Some("myhost"));
        let alice = PublicKey::from_base64(ALICE).unwrap();
        assert_eq!(
            config.peers.get(&alice),
            Some(&PeerLabel {
                name: "alice-laptop".into(),
                user: "alice".into(),
                ..PeerLabel::default()
            })
        );

        let settings = config.tracker_settings("h1".into());
        assert_eq!(settings.connect_threshold, TimeDelta::seconds(240));
        assert!(!settings.endpoint_updates);
        assert_eq!(settings.announce_on_start, Announce::All);
        assert_eq!(settings.host, "h1");
        let filter = config.filter();
        assert!(filter.allows("wg0") && filter.allows("wg7"));
        assert!(!filter.allows("wg-test1") && !filter.allows("eth0"));
    }

    #[test]
    fn delivery_defaults_and_webhook_overrides() {
        let config = ok("webhooks:\n  - name: a\n    url: https://a.example\n  \
             - name: b\n    url: https://b.example\n    max_in_flight: 1\n    \
             retry: { delays: [10s] }\n");
        let d = &config.delivery;
        assert_eq!(d.max_pending_events, 100_000);
        assert_eq!(d.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(d.max_in_flight, 16);
        assert_eq!(d.retry.max_event_age, Duration::from_secs(72 * 3600));
        assert_eq!(d.retry.delays, DEFAULT_RETRY_DELAYS);
        assert_eq!(DEFAULT_RETRY_DELAYS[1], Duration::from_secs(5));
        assert_eq!(DEFAULT_RETRY_DELAYS[8], Duration::from_secs(4 * 3600));
        let [a, b] = &config.webhooks[..] else {
            panic!("two webhooks expected")
        };
        assert_eq!((a.max_in_flight, &a.retry), (16, &d.retry));
        assert_eq!(b.max_in_flight, 1);
        assert_eq!(b.retry.delays, [Duration::from_secs(10)]);
        assert_eq!(
            b.retry.max_event_age, d.retry.max_event_age,
            "a key left out of a webhook's retry keeps the delivery one"
        );
        // The webhook's own keys override a delivery section that is set.
        let config = ok(
            "delivery:\n  max_in_flight: 3\n  retry: { max_event_age: 1h }\n\
             webhook:\n  url: https://a.example\n  retry: { delays: [1s] }\n",
        );
        let hook = &config.webhooks[0];
        assert_eq!(hook.max_in_flight, 3);
        assert_eq!(
            hook.retry,
            RetrySettings {
                delays: vec![Duration::from_secs(1)],
                max_event_age: Duration::from_secs(3600),
            }
        );
    }

    #[test]
    fn durations_are_go_style_or_bare_seconds() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("500ms", ms(500)),
            ("5s", ms(5_000)),
            ("3m", ms(180_000)),
            ("1h30m", ms(5_400_000)),
            ("2h", ms(7_200_000)),
            ("10", ms(10_000)),
            ("1.5s", ms(1_500)),
            ("0.5h", ms(1_800_000)),
            ("1m30s250ms", ms(90_250)),
            ("100us", Duration::from_micros(100)),
            (" 7s ", ms(7_000)),
        ] {
            assert_eq!(parse_duration(text), Some(want), "{text:?}");
        }
        for text in [
            "",
            "5x",
            "-5s",
            "1h30",
            "s",
            "5 s",
            "1..5s",
            ".s",
            "5S",
            "1e3s",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(text), None, "{text:?}");
        }
        assert_eq!(format_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(format_duration(Duration::from_secs(150)), "2m30s");
    }

    #[test]
    fn environment_variables_are_substituted_before_interpretation() {
        let var = "WGHOOK_TEST_CONFIG_SUBST_4F2A91";
        std::env::set_var(format!("{var}_SECRET"), "Bearer from-env");
        std::env::set_var(format!("{var}_HOST"), "hooks.example.com");
        std::env::set_var(format!("{var}_INTERVAL"), "250ms");
        let text = format!(
            "webhook:\n  url: https://${{{var}_HOST}}/wg\n  secret: \"${{{var}_SECRET}}\"\n\
             monitor:\n  interval: ${{{var}_INTERVAL}}\n  host: \"cost$$5-$${{{var}_HOST}}\"\n"
        );
        let config = ok(&text);
        let hook = &config.webhooks[0];
        assert_eq!(hook.url.as_str(), "https://hooks.example.com/wg");
        assert_eq!(
            hook.secret.as_ref().map(Secret::expose),
            Some("Bearer from-env")
        );
        assert_eq!(config.monitor.interval, Duration::from_millis(250));
        // `$${` is a literal `${`; a lone `$` stays as it is.
        assert_eq!(
            config.monitor.host,
            Some(format!("cost$$5-${{{var}_HOST}}"))
        );
    }

    #[test]
    fn substitution_uses_the_given_lookup_and_reports_each_problem() {
        let lookup = |name: &str| match name {
            "A" => Ok("1".to_string()),
            _ => Err(VarError::NotPresent),
        };
        let text = "monitor:\n  host: \"${A}-${B}-${C}-${not ok}\"\n  interfaces: [\"wg${A}\"]\n";
        let errors = compile_text(text, Path::new("f.yaml"), &lookup, false).unwrap_err();
        let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "f.yaml:2: monitor.host: environment variable B is not set",
                "f.yaml:2: monitor.host: environment variable C is not set",
                "f.yaml:2: monitor.host: invalid environment variable name \"not ok\" in ${...} \
                 (use letters, digits and _; write $${ for a literal ${)",
            ]
        );
        let config = compile_text(
            "monitor:\n  interfaces: [\"wg${A}\"]\n",
            Path::new("f.yaml"),
            &lookup,
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.monitor.interfaces, ["wg1"]);
    }

    /// Each broken configuration and exactly the errors it must produce.
    #[test]
    fn broken_configurations_produce_exactly_these_errors() {
        let f = DEFAULT_PATH;
        let table: Vec<(String, Vec<String>)> = vec![
            (
                "colour: blue\n".into(),
                vec![format!("{f}:1: colour: unknown key (known keys: webhook, webhooks, monitor, peers, interfaces, delivery, metrics, log)")],
            ),
            (
                "webhok:\n  url: https://x.example\n".into(),
                vec![format!("{f}:1: webhok: unknown key (did you mean webhook?)")],
            ),
            (
                "monitor:\n  intervall: 5s\n".into(),
                vec![format!("{f}:2: monitor.intervall: unknown key (did you mean interval?)")],
            ),
            (
                "webhook:\n  url: https://x.example\n  retries: 3\n".into(),
                vec![format!(
                    "{f}:3: webhook.retries: unknown key (known keys: name, url, secret, authentication, timeout, \
                     events, retry, max_in_flight, description, format, extended, body, method, headers, auth, \
                     signing_secret, secret_file, authentication_file, signing_secret_file)"
                )],
            ),
            (
                "webhook:\n  url: https://x.example\n  body: \"{{ peer.name \"\n".into(),
                vec![format!(
                    "{f}:3: webhook.body: invalid template: syntax error: unexpected end of input, \
                     expected end of variable block (template line 1)"
                )],
            ),
            (
                "webhook:\n  url: https://x.example\n  body: '{\"text\": \"{{ peer.nmae }}\"}'\n".into(),
                vec![format!(
                    "{f}:3: webhook.body: invalid template: unknown field \"peer.nmae\" (peer has: name, user, \
                     public_key, endpoint, allowed_ips, persistent_keepalive, has_preshared_key, last_handshake, \
                     rx_bytes, tx_bytes, pingable, last_ping, created_at, updated_at, labels)"
                )],
            ),
            (
                "webhook:\n  url: https://x.example\n  body: '{\"text\": {{ peer.name }}}'\n".into(),
                vec![format!(
                    "{f}:3: webhook.body: invalid template: the body is not valid JSON (expected value at line 1 \
                     column 10); quote text fields (\"{{{{ peer.name }}}}\"), use |tojson for lists, or set a \
                     Content-Type header that is not JSON, for a sample peer.create event"
                )],
            ),
            (
                "webhook:\n  url: \"{{ host }}/hook\"\n  format: slack\n  method: PUT\n  extended: maybe\n".into(),
                vec![
                    format!(
                        "{f}:2: webhook.url: invalid template: not a valid URL (relative URL without a base), \
                         for a sample peer.create event"
                    ),
                    format!("{f}:3: webhook.format: invalid value \"slack\" (use wg-portal, wg-portal-v2 or standard)"),
                    format!("{f}:4: webhook.method: invalid value \"PUT\" (use POST or GET)"),
                    format!("{f}:5: webhook.extended: expected true or false, found \"maybe\""),
                ],
            ),
            (
                "webhook:\n  url: https://x.example\n  format: standard\n  extended: true\n  body: x\n".into(),
                vec![
                    format!("{f}:3: webhook.format: both format and body (line 5) are set; body replaces the format, keep one"),
                    format!("{f}:4: webhook.extended: only used with format wg-portal or wg-portal-v2 (remove it)"),
                    format!(
                        "{f}:5: webhook.body: invalid template: the body is not valid JSON (expected value at line 1 \
                         column 1); quote text fields (\"{{{{ peer.name }}}}\"), use |tojson for lists, or set a \
                         Content-Type header that is not JSON, for a sample peer.create event"
                    ),
                ],
            ),
            (
                "webhooks:\n  - name: a\n    url: https://x.example\n    secret: \"Bearer s3cr3t\"\n    auth: { bearer: s3cr3t }\n  \
                 - name: b\n    url: https://x.example\n    auth: { bearer: s3cr3t, basic: { username: u, password: p } }\n  \
                 - name: c\n    url: https://x.example\n    auth: { bearer: \"Bearer s3cr3t\" }\n  \
                 - name: d\n    url: https://x.example\n    auth: { basic: { username: \"a:b\" } }\n  \
                 - name: e\n    url: https://x.example\n    auth: { oauth2: { client_id: x, client_secret: s3cr3t, client_auth: jwt } }\n  \
                 - name: f\n    url: https://x.example\n    auth: {}\n"
                    .into(),
                vec![
                    format!("{f}:5: webhooks[0].auth: both secret (line 4) and auth are set; keep one"),
                    format!("{f}:8: webhooks[1].auth.basic: both bearer (line 8) and basic are set; give one"),
                    format!("{f}:11: webhooks[2].auth.bearer: give the token alone: wghook adds \"Bearer \""),
                    format!(
                        "{f}:14: webhooks[3].auth.basic.username: must not contain : \
                         (HTTP Basic separates user and password with it)"
                    ),
                    format!("{f}:17: webhooks[4].auth.oauth2.token_url: required (the token endpoint's URL)"),
                    format!("{f}:17: webhooks[4].auth.oauth2.client_auth: invalid value \"jwt\" (use basic or body)"),
                    format!("{f}:20: webhooks[5].auth: give one of bearer (or bearer_file), basic or oauth2"),
                ],
            ),
            (
                "webhook:\n  url: https://x.example\n  signing_secret: [whsec_AAAA, s3cr3t, \"whsec_s3cr3t!\"]\n  \
                 secret_file: /nonexistent/wghook-secret\n  headers:\n    Authorization: x\n    \"bad name\": x\n    \
                 webhook-id: x\n    X-Ok: \"{{ nope }}\"\n    x-ok: y\n".into(),
                vec![
                    format!(
                        "{f}:3: webhook.signing_secret[0]: the key is 3 bytes long; use 24 to 64 random bytes \
                         (e.g. whsec_$(head -c 32 /dev/urandom | base64))"
                    ),
                    format!(
                        "{f}:3: webhook.signing_secret[1]: must start with whsec_ (a Standard Webhooks secret: \
                         whsec_ and base64 of 24 to 64 random bytes)"
                    ),
                    format!("{f}:3: webhook.signing_secret[2]: the part after whsec_ is not valid base64"),
                    format!(
                        "{f}:4: webhook.secret_file: cannot read secret file /nonexistent/wghook-secret: \
                         No such file or directory (os error 2)"
                    ),
                    format!(
                        "{f}:6: webhook.headers.\"Authorization\": set by wghook: use secret or auth for the \
                         Authorization header"
                    ),
                    format!(
                        "{f}:7: webhook.headers.\"bad name\": invalid header name (letters, digits and -, e.g. X-Event)"
                    ),
                    format!("{f}:8: webhook.headers.\"webhook-id\": set by wghook; it cannot be replaced"),
                    format!(
                        "{f}:9: webhook.headers.\"X-Ok\": invalid template: unknown field \"nope\" (known fields: \
                         id, event, entity, kind, type, host, time, timestamp, sequence, identifier, changed, \
                         interface, peer, session)"
                    ),
                    format!(
                        "{f}:10: webhook.headers.\"x-ok\": the same header as \"X-Ok\" (header names ignore case)"
                    ),
                ],
            ),
            (
                "webhook:\n  url: https://x.example\n  events: [peer.connect, peer.conect, interface.*]\n  max_in_flight: 0\n".into(),
                vec![
                    format!("{f}:3: webhook.events[1]: unknown event \"peer.conect\" (use peer.create, peer.update, peer.delete, peer.connect, peer.disconnect, interface.create, interface.update, interface.delete, or * as a part, e.g. peer.*)"),
                    format!("{f}:4: webhook.max_in_flight: expected a whole number from 1 to 1024, found \"0\""),
                ],
            ),
            (
                "delivery:\n  max_pending_events: lots\n  retry:\n    delays: []\n    max_event_age: 0s\n".into(),
                vec![
                    format!("{f}:2: delivery.max_pending_events: expected a whole number from 1 to 100000000, found \"lots\""),
                    format!("{f}:4: delivery.retry.delays: must list at least one delay (e.g. [0s, 5s, 30s])"),
                    format!("{f}:5: delivery.retry.max_event_age: must be at least 1s (got 0s)"),
                ],
            ),
            (
                "metrics:\n  listen: localhost\nlog:\n  level: \"wghook=loud\"\n  format: xml\n".into(),
                vec![
                    format!("{f}:2: metrics.listen: invalid address \"localhost\" (use IP:PORT, e.g. 127.0.0.1:9586 or [::1]:9586)"),
                    format!("{f}:4: log.level: invalid log filter \"wghook=loud\": error parsing level filter: expected one of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\", or a number 0-5 (use e.g. info or wghook=debug,warn)"),
                    format!("{f}:5: log.format: invalid value \"xml\" (use auto, human, journald or json)"),
                ],
            ),
            (
                "monitor: [wg0]\n".into(),
                vec![format!("{f}:1: monitor: expected a mapping, found a list")],
            ),
            (
                "monitor:\n  interfaces: wg0\n  endpoint_updates: yes\n".into(),
                vec![
                    format!("{f}:2: monitor.interfaces: expected a list, found a single value"),
                    format!("{f}:3: monitor.endpoint_updates: expected true or false, found \"yes\""),
                ],
            ),
            (
                "webhook:\n  url: [https://x.example]\n".into(),
                vec![format!("{f}:2: webhook.url: expected a string, found a list")],
            ),
            (
                "- webhook\n".into(),
                vec![format!(
                    "{f}:1: the file must be a mapping of webhook, webhooks, monitor, peers, interfaces, delivery, metrics, log, found a list"
                )],
            ),
            (
                "monitor:\n  interval: 5x\n".into(),
                vec![format!("{f}:2: monitor.interval: invalid duration \"5x\" (use e.g. 5s, 1m, 1h30m)")],
            ),
            (
                "monitor:\n  interval: 20ms\n  connect_threshold: 0s\n  uapi_timeout: 9000h\n".into(),
                vec![
                    format!("{f}:2: monitor.interval: must be at least 100ms (got 20ms)"),
                    format!("{f}:3: monitor.connect_threshold: must be greater than 0"),
                    format!("{f}:4: monitor.uapi_timeout: duration \"9000h\" is too long (at most 8760h)"),
                ],
            ),
            (
                "webhook:\n  url: not a url\n".into(),
                vec![format!(
                    "{f}:2: webhook.url: invalid URL: relative URL without a base \
                     (use e.g. https://example.com/hook)"
                )],
            ),
            (
                "webhook:\n  url: ftp://files.example.com/drop\n".into(),
                vec![format!("{f}:2: webhook.url: unsupported URL scheme \"ftp\" (use http or https)")],
            ),
            (
                "webhook:\n  secret: x\n".into(),
                vec![format!("{f}:1: webhook.url: required (an http or https URL)")],
            ),
            (
                "webhook:\n  url: https://x.example\n  secret: \"Bearer a\"\n  authentication: \"Bearer b\"\n".into(),
                vec![format!(
                    "{f}:4: webhook.authentication: both secret (line 3) and its alias authentication are set; keep one"
                )],
            ),
            (
                "webhook:\n  url: https://a.example\nwebhooks:\n  - name: b\n    url: https://b.example\n".into(),
                vec![format!(
                    "{f}:3: webhooks: both webhook (line 1) and webhooks are set; use webhook for one \
                     receiver or a webhooks list for several"
                )],
            ),
            (
                "webhooks:\n  - name: ops\n    url: https://a.example\n  - name: ops\n    url: https://b.example\n  \
                 - url: https://c.example\n  - name: \"two words\"\n    url: https://d.example\n"
                    .into(),
                vec![
                    format!("{f}:4: webhooks[1].name: duplicate webhook name \"ops\" (first at line 2)"),
                    format!("{f}:6: webhooks[2].name: required in a webhooks list (letters, digits, _ and -)"),
                    format!("{f}:7: webhooks[3].name: invalid name \"two words\" (use letters, digits, _ and -)"),
                ],
            ),
            (
                format!("webhook:\n  url: https://x.example\n  secret: \"Bearer ${{{UNSET_VAR}}}\"\n"),
                vec![format!("{f}:3: webhook.secret: environment variable {UNSET_VAR} is not set")],
            ),
            (
                "monitor:\n  host: \"${HOME\"\n".into(),
                vec![format!(
                    "{f}:2: monitor.host: unterminated ${{ (close it with }}, or write $${{ for a literal ${{)"
                )],
            ),
            (
                format!("peers:\n  not-a-key: {{ name: x }}\n  \"AAAA\": {{ name: y }}\n  \"{ALICE}\": {{ nme: z }}\n"),
                vec![
                    format!(
                        "{f}:2: peers.\"not-a-key\": invalid public key (key is not valid base64); \
                         use the 44-character base64 form `wg show` prints"
                    ),
                    format!(
                        "{f}:3: peers.\"AAAA\": invalid public key (key is 3 bytes long, expected 32); \
                         use the 44-character base64 form `wg show` prints"
                    ),
                    format!("{f}:4: peers.\"{ALICE}\".nme: unknown key (did you mean name?)"),
                ],
            ),
            (
                format!(
                    "peers:\n  \"{ALICE}\":\n    ping_address: 10.0.0.300\n    labels:\n      \"two words\": x\n      \
                     team: [a]\n      site: berlin\n"
                ),
                vec![
                    format!(
                        "{f}:3: peers.\"{ALICE}\".ping_address: invalid IP address \"10.0.0.300\" \
                         (use e.g. 10.8.0.2 or fd00::2)"
                    ),
                    format!(
                        "{f}:5: peers.\"{ALICE}\".labels.\"two words\": invalid label name (use letters, digits, _, - and .)"
                    ),
                    format!("{f}:6: peers.\"{ALICE}\".labels.\"team\": expected a string, found a list"),
                ],
            ),
            (
                "monitor:\n  ping_checks: maybe\n  ping_interval: 500ms\n  names_from: [\"/etc/wireguard/[wg*.conf\", \"\"]\n"
                    .into(),
                vec![
                    format!("{f}:2: monitor.ping_checks: expected true or false, found \"maybe\""),
                    format!("{f}:3: monitor.ping_interval: must be at least 1s (got 500ms)"),
                    format!(
                        "{f}:4: monitor.names_from[0]: invalid pattern \"/etc/wireguard/[wg*.conf\": \
                         invalid range pattern at position 15 (use e.g. /etc/wireguard/*.conf)"
                    ),
                    format!("{f}:4: monitor.names_from[1]: must not be empty"),
                ],
            ),
            (
                "monitor:\n  backend: simulated\n".into(),
                vec![format!(
                    "{f}:2: monitor.scenario: required when monitor.backend is simulated (a scenario file)"
                )],
            ),
            (
                "monitor:\n  backend: kernel\n  scenario: /tmp/s.yaml\n".into(),
                vec![format!(
                    "{f}:3: monitor.scenario: only used when monitor.backend is simulated \
                     (remove it, or set backend: simulated)"
                )],
            ),
            (
                "monitor:\n  backend: netlink\n  announce_on_start: yes\n".into(),
                vec![
                    format!("{f}:2: monitor.backend: invalid value \"netlink\" (use auto, userspace, kernel or simulated)"),
                    format!("{f}:3: monitor.announce_on_start: invalid value \"yes\" (use connected, all or none)"),
                ],
            ),
            (
                "monitor:\n  interval: 1s\n  interval: 2s\n".into(),
                vec![format!("{f}:3: monitor.interval: duplicate key (first at line 2)")],
            ),
            (
                "monitor:\n  interfaces: [\"\", \"a very long interface\", averylonginterfacename]\n  uapi_dirs: []\n".into(),
                vec![
                    format!("{f}:2: monitor.interfaces[0]: invalid interface name \"\" (must not be empty)"),
                    format!(
                        "{f}:2: monitor.interfaces[1]: invalid interface name \"a very long interface\" \
                         (interface names contain no spaces or /)"
                    ),
                    format!(
                        "{f}:2: monitor.interfaces[2]: invalid interface name \"averylonginterfacename\" \
                         (interface names are at most 15 characters)"
                    ),
                    format!(
                        "{f}:3: monitor.uapi_dirs: must name at least one directory (remove the key for the defaults)"
                    ),
                ],
            ),
            (
                "webhook:\n  url: https://x.example\n bad: 1\n".into(),
                vec![format!(
                    "{f}:3: invalid YAML: while parsing a block mapping, did not find expected key (column 2)"
                )],
            ),
            (
                "monitor: [wg0\nwebhook: 1\n".into(),
                vec![format!("{f}:2: invalid YAML: illegal placement of ':' indicator (column 8)")],
            ),
            (
                "monitor: {}\n---\nmonitor: {}\n".into(),
                vec![format!("{f}:2: only one YAML document is allowed per file")],
            ),
        ];
        for (text, want) in &table {
            assert_eq!(&error_lines(text), want, "for:\n{text}");
        }
    }

    /// Every duration ends up in timer or clock arithmetic (`Instant +`,
    /// `DateTime +`): values that would overflow it are refused at check,
    /// whatever the key.
    #[test]
    fn durations_beyond_a_year_are_refused_for_every_key() {
        let f = DEFAULT_PATH;
        for value in [
            "999999999999999h",
            "18446744073709551615",
            "99999999999999999999s",
            "8761h",
        ] {
            let text = format!(
                "webhook:\n  url: https://x.example\n  timeout: {value}\n  retry: {{ delays: [{value}], max_event_age: {value} }}\n\
                 monitor:\n  interval: {value}\n  connect_threshold: {value}\n  uapi_timeout: {value}\n  \
                 ping_interval: {value}\ndelivery:\n  shutdown_timeout: {value}\n"
            );
            let errors = error_lines(&text);
            let keys = [
                (3, "webhook.timeout"),
                (4, "webhook.retry.delays[0]"),
                (4, "webhook.retry.max_event_age"),
                (6, "monitor.interval"),
                (7, "monitor.connect_threshold"),
                (8, "monitor.uapi_timeout"),
                (9, "monitor.ping_interval"),
                (11, "delivery.shutdown_timeout"),
            ];
            assert_eq!(errors.len(), keys.len(), "{value}: {errors:#?}");
            for (line, key) in keys {
                let too_long =
                    format!("{f}:{line}: {key}: duration \"{value}\" is too long (at most 8760h)");
                let invalid = format!("{f}:{line}: {key}: invalid duration \"{value}\"");
                assert!(
                    errors
                        .iter()
                        .any(|e| *e == too_long || e.starts_with(&invalid)),
                    "{value}: no error for {key} in {errors:#?}"
                );
            }
        }
    }

    /// Regression (issue 11): a URL with user info and a secret or auth sent
    /// two Authorization headers.
    #[test]
    fn url_user_info_with_secret_or_auth_is_refused() {
        let f = DEFAULT_PATH;
        let both = |key: &str, line: usize| {
            format!(
                "the URL has a user name or password, sent as Basic authorization, and {key} \
                 (line {line}) sets the Authorization header too; keep one (remove the user info \
                 from the URL, or remove {key})"
            )
        };
        let text = "webhooks:\n\
            \x20 - name: a\n    url: https://u-s3cr3t:p-s3cr3t@x.example/hook\n    secret: \"Bearer t\"\n\
            \x20 - name: b\n    url: https://u-s3cr3t@x.example/hook\n    auth: { bearer: t }\n\
            \x20 - name: c\n    url: \"https://u-s3cr3t:p@x.example/{{ event }}\"\n    authentication: t\n\
            \x20 - name: d\n    url: https://x.example/hook\n    auth: { oauth2: { token_url: \"https://id-s3cr3t:pw@idp.example/token\", client_id: i, client_secret: s } }\n";
        assert_eq!(
            error_lines(text),
            [
                format!("{f}:3: webhooks[0].url: {}", both("secret", 4)),
                format!("{f}:6: webhooks[1].url: {}", both("auth", 7)),
                format!("{f}:9: webhooks[2].url: {}", both("authentication", 10)),
                format!(
                    "{f}:13: webhooks[3].auth.oauth2.token_url: the token URL has a user name or \
                     password, and client_auth basic sends the client credentials as the \
                     Authorization header; remove the user info from the URL (or set client_auth: body)"
                ),
            ]
        );
        // Alone, the user info is the one Authorization header; an empty
        // secret sends none; client_auth body sends no Basic header.
        ok("webhook:\n  url: https://u:p@x.example/hook\n  secret: \"\"\n");
        ok("webhook:\n  url: https://x.example/hook\n  auth: { oauth2: { token_url: \"https://i:p@idp.example/t\", client_id: i, client_secret: s, client_auth: body } }\n");
    }

    #[test]
    fn three_errors_are_all_reported_with_their_lines() {
        let text = "webhook:\n  url: not a url\n  secret: s3cr3t-value\nmonitor:\n  interval: 5x\n  colour: blue\n";
        let errors = parse(text).unwrap_err();
        let found: Vec<(Option<usize>, &str)> =
            errors.0.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (Some(2), "webhook.url"),
                (Some(5), "monitor.interval"),
                (Some(6), "monitor.colour")
            ]
        );
        assert!(errors.0.iter().all(|e| e.file == Path::new(DEFAULT_PATH)));
        // Display: one error per line.
        assert_eq!(errors.to_string().lines().count(), 3);
        assert!(errors
            .to_string()
            .starts_with("/etc/wghook/wghook.yaml:2: webhook.url: invalid URL"));
    }

    /// Regression (audit): an unparseable URL was quoted whole, after
    /// `${VAR}` substitution, credentials and secret paths included.
    #[test]
    fn unparseable_urls_quote_only_scheme_and_host() {
        let lookup = |name: &str| match name {
            "HOOK" => Ok("https://admin:s3cr3t@[bad/x".to_string()),
            _ => Err(VarError::NotPresent),
        };
        let errors = |text: &str| -> Vec<String> {
            match compile_text(text, Path::new("f.yaml"), &lookup, false) {
                Ok(_) => panic!("accepted: {text}"),
                Err(e) => e.0.iter().map(ToString::to_string).collect(),
            }
        };
        let hint = "(use e.g. https://example.com/hook)";
        for (url, want) in [
            (
                "${HOOK}".to_string(),
                format!("f.yaml:2: webhook.url: invalid URL: invalid IPv6 address {hint}"),
            ),
            (
                "https://hooks.slack.com:99999/services/T0/B0/s3cr3t?token=s3cr3t".into(),
                format!(
                    "f.yaml:2: webhook.url: invalid URL \"https://hooks.slack.com\": \
                     invalid port number {hint}"
                ),
            ),
            (
                "HTTPS://u:s3cr3t@Hooks.example.com:1x/s3cr3t".into(),
                format!(
                    "f.yaml:2: webhook.url: invalid URL \"https://Hooks.example.com\": \
                     invalid port number {hint}"
                ),
            ),
            (
                "https://[fd00::1]:70000/s3cr3t".into(),
                format!(
                    "f.yaml:2: webhook.url: invalid URL \"https://[fd00::1]\": invalid port number {hint}"
                ),
            ),
            (
                "s3cr3t token".into(),
                format!("f.yaml:2: webhook.url: invalid URL: relative URL without a base {hint}"),
            ),
            (
                "https://s3cr3t host/x".into(),
                format!("f.yaml:2: webhook.url: invalid URL: invalid international domain name {hint}"),
            ),
        ] {
            let text = format!("webhook:\n  url: \"{url}\"\n");
            assert_eq!(errors(&text), [want], "for {url}");
        }
        // The token URL of oauth2 goes through the same check.
        let text = "webhook:\n  url: https://x.example\n  auth:\n    oauth2:\n      \
                    token_url: \"https://id:s3cr3t@idp.example.com:0x/t?k=s3cr3t\"\n      \
                    client_id: a\n      client_secret: b\n";
        assert_eq!(
            errors(text),
            [format!(
                "f.yaml:5: webhook.auth.oauth2.token_url: invalid URL \"https://idp.example.com\": \
                 invalid port number {hint}"
            )]
        );
    }

    /// Regression (audit): `Debug` of a webhook printed its URL whole.
    #[test]
    fn debug_shows_urls_without_userinfo_path_or_query() {
        let config = ok(
            "webhooks:\n  - name: slack\n    url: \"https://u:pw-s3cr3t@hooks.slack.com/services/T0/B0/s3cr3t?k=s3cr3t#s3cr3t\"\n  \
             - name: plain\n    url: http://[fd00::1]:8080/\n    \
             auth: { oauth2: { token_url: \"https://idp.example.com/t/s3cr3t\", client_id: a, client_secret: b } }\n",
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(
            debug.contains("url: \"https://hooks.slack.com/…\""),
            "{debug}"
        );
        assert!(debug.contains("url: \"http://[fd00::1]:8080/\""), "{debug}");
        assert!(
            debug.contains("token_url: \"https://idp.example.com/…\""),
            "{debug}"
        );
        assert_eq!(
            redacted_url(&reqwest::Url::parse("https://h.example:8443").unwrap()),
            "https://h.example:8443/"
        );
    }

    #[test]
    fn secrets_are_redacted_and_never_quoted_in_errors() {
        let secret = Secret::new("s3cr3t-value".into());
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{secret}"), "<redacted>");
        let config = ok("webhook:\n  url: https://x.example\n  secret: s3cr3t-value\n");
        assert!(!format!("{config:?}").contains("s3cr3t"), "{config:?}");

        for text in [
            "webhook:\n  url: https://x.example\n  secret: \"s3cr3t-value\\nX-Evil: 1\"\n",
            "webhook:\n  url: https://x.example\n  secret: [s3cr3t-value]\n",
            "webhook:\n  url: https://x.example\n  secret: s3cr3t-value\n  authentication: s3cr3t-value\n",
            "webhook:\n  url: https://x.example\n  secret: \"s3cr3t-value ${WGHOOK_TEST_UNSET_6B1D0E}\"\n",
            "webhook:\n  url: https://x.example\n  secret: \"s3cr3t-value ${\"\n",
            "webhook:\n  url: https://x.example\n  authentication: { s3cr3t-value: 1 }\n",
            "webhook: s3cr3t-value\n",
            "webhooks: s3cr3t-value\n",
            "webhooks:\n  - s3cr3t-value\n",
            "monitor: s3cr3t-value\n",
            "s3cr3t-value\n",
        ] {
            let errors = error_lines(text);
            assert!(!errors.is_empty());
            for e in &errors {
                assert!(!e.contains("s3cr3t"), "secret in {e:?}");
            }
        }
        assert_eq!(
            error_lines("webhook:\n  url: https://x.example\n  secret: \"s3cr3t-value\\nX-Evil: 1\"\n"),
            [format!(
                "{DEFAULT_PATH}:3: webhook.secret: contains characters not allowed in an HTTP header \
                 (line breaks or other control characters)"
            )]
        );
    }

    #[test]
    fn anchors_and_aliases_are_followed() {
        let config = ok(
            "webhooks:\n  - name: a\n    url: https://a.example\n    secret: &s \"Bearer x\"\n  \
                         - name: b\n    url: https://b.example\n    secret: *s\n",
        );
        assert_eq!(
            config.webhooks[1].secret.as_ref().map(Secret::expose),
            Some("Bearer x")
        );
    }

    #[test]
    fn load_names_an_unreadable_file() {
        let errors = load(Path::new("/nonexistent/wghook.yaml")).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].line, None);
        assert_eq!(
            errors.to_string(),
            "/nonexistent/wghook.yaml: cannot read the configuration file: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn load_checks_that_the_scenario_exists_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("wghook.yaml");
        std::fs::write(
            &config_path,
            "monitor:\n  backend: simulated\n  scenario: s.yaml\n",
        )
        .unwrap();

        let errors = load(&config_path).unwrap_err();
        let scenario = dir.path().join("s.yaml");
        assert_eq!(
            errors.to_string(),
            format!(
                "{}:3: monitor.scenario: cannot read {}: No such file or directory (os error 2)",
                config_path.display(),
                scenario.display()
            )
        );
        // parse_str does not look at the file system.
        let text = std::fs::read_to_string(&config_path).unwrap();
        assert!(parse_str(&text, &config_path).is_ok());

        // Regression (issue 11): a step out of range passed `check`, then
        // `run` panicked (exit 101) loading the scenario.
        std::fs::write(
            &scenario,
            "steps:\n  - at: 999999999999999h\n    add_interface: { name: wg0 }\n",
        )
        .unwrap();
        assert_eq!(
            load(&config_path).unwrap_err().to_string(),
            format!(
                "{}:3: monitor.scenario: scenario {}: offset \"999999999999999h\" is too late \
                 (at most 8760h, a year) at line 2, column 9",
                config_path.display(),
                scenario.display()
            )
        );

        std::fs::write(&scenario, "steps: []\n").unwrap();
        let config = load(&config_path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.monitor.scenario, Some(scenario));
        assert_eq!(config.path, config_path);
    }

    #[test]
    fn every_webhook_key_of_formats_auth_and_templates_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t0ken\n").unwrap();
        std::fs::write(
            dir.path().join("whsec"),
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\r\n",
        )
        .unwrap();
        let lookup = |name: &str| match name {
            "CREDENTIALS_DIRECTORY" => Ok(dir.path().display().to_string()),
            _ => Err(VarError::NotPresent),
        };
        let text = "webhooks:\n\
             \x20 - name: defguard\n    url: https://idm.example.com/hook\n    method: get\n    \
             description: \" Defguard users \"\n    format: wg-portal-v2\n    extended: true\n    \
             headers:\n      X-Defguard-Event: \"{{ entity }}_{{ event }}\"\n    \
             auth: { bearer_file: \"${CREDENTIALS_DIRECTORY}/token\" }\n    \
             signing_secret_file: whsec\n    \
             signing_secret: [\"whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"]\n\
             \x20 - name: cymmetri\n    url: \"https://idm.example.com/webhook/{{ entity }}/{{ event }}\"\n    \
             format: standard\n    \
             auth: { oauth2: { token_url: https://idp.example.com/token, client_id: wg, client_secret: s, scope: \"a b\", client_auth: body } }\n\
             \x20 - name: ntfy\n    url: https://ntfy.sh/wg\n    headers: { Content-Type: text/plain }\n    \
             body: \"{{ peer.name }} {{ event }}\"\n    auth: { basic: { username: u, password: p } }\n";
        let config = compile_text(text, &dir.path().join("wghook.yaml"), &lookup, true)
            .unwrap_or_else(|e| panic!("{e}"));
        let [defguard, cymmetri, ntfy] = &config.webhooks[..] else {
            panic!("three webhooks expected")
        };
        assert_eq!(defguard.method, HttpMethod::Get);
        assert_eq!(defguard.description.as_deref(), Some("Defguard users"));
        assert_eq!(defguard.format, Format::WgPortalV2);
        assert!(defguard.extended);
        assert_eq!(defguard.headers.len(), 1);
        assert_eq!(defguard.headers[0].0, "X-Defguard-Event");
        assert_eq!(
            defguard.auth,
            Some(Auth::Bearer(Secret::new("t0ken".into()))),
            "the trailing newline of the file is not part of the secret"
        );
        assert_eq!(
            defguard.signing_secrets,
            [
                SigningKey::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap(),
                SigningKey::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap(),
            ]
        );
        assert_eq!(defguard.url_template, None);

        assert!(cymmetri.url_template.is_some());
        assert_eq!(
            cymmetri.url.as_str(),
            "https://idm.example.com/webhook/peer/connect"
        );
        assert_eq!(cymmetri.format, Format::Standard);
        assert_eq!(cymmetri.method, HttpMethod::Post);
        let Some(Auth::OAuth2(o)) = &cymmetri.auth else {
            panic!("oauth2 expected")
        };
        assert_eq!(o.token_url.as_str(), "https://idp.example.com/token");
        assert_eq!(
            (o.client_id.as_str(), o.client_secret.expose()),
            ("wg", "s")
        );
        assert_eq!(o.scope.as_deref(), Some("a b"));
        assert_eq!(o.client_auth, ClientAuth::Body);

        assert!(ntfy.body.as_ref().is_some_and(|b| b.mode() == Mode::Text));
        assert_eq!(
            ntfy.auth,
            Some(Auth::Basic {
                username: "u".into(),
                password: Secret::new("p".into())
            })
        );
        // Defaults.
        let plain = ok("webhook:\n  url: https://x.example\n");
        let hook = &plain.webhooks[0];
        assert_eq!(
            (hook.format, hook.method, hook.extended),
            (Format::WgPortal, HttpMethod::Post, false)
        );
        assert!(hook.body.is_none() && hook.headers.is_empty() && hook.auth.is_none());
        assert!(hook.signing_secrets.is_empty() && hook.description.is_none());
    }

    #[test]
    fn secret_files_are_checked_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wghook.yaml");
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        std::fs::write(dir.path().join("broken"), "s3cr3t\nX-Evil: 1\n").unwrap();
        std::fs::write(dir.path().join("ok"), "Bearer s3cr3t").unwrap();
        let errors = |text: &str| -> Vec<String> {
            match parse_str(text, &path) {
                Ok(_) => panic!("accepted: {text}"),
                Err(e) => e.0.iter().map(ToString::to_string).collect(),
            }
        };
        let f = path.display();
        let d = dir.path().display();
        assert_eq!(
            errors("webhook:\n  url: https://x.example\n  secret_file: empty\n"),
            [format!(
                "{f}:3: webhook.secret_file: secret file {d}/empty is empty"
            )]
        );
        assert_eq!(
            errors("webhook:\n  url: https://x.example\n  authentication_file: broken\n"),
            [format!(
                "{f}:3: webhook.authentication_file: secret file {d}/broken contains characters not allowed \
                 in an HTTP header (line breaks or other control characters)"
            )]
        );
        assert_eq!(
            errors("webhook:\n  url: https://x.example\n  secret: x\n  secret_file: ok\n"),
            [format!("{f}:4: webhook.secret_file: both secret (line 3) and secret_file are set; keep one")]
        );
        assert_eq!(
            errors("webhook:\n  url: https://x.example\n  auth: { basic: { username: u } }\n"),
            [format!(
                "{f}:3: webhook.auth.basic.password: required (or password_file)"
            )]
        );
        // A file that is fine: relative to the configuration's directory, read as is.
        let config = parse_str(
            "webhook:\n  url: https://x.example\n  secret_file: ok\n",
            &path,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.webhooks[0].secret.as_ref().map(Secret::expose),
            Some("Bearer s3cr3t")
        );
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }

    #[test]
    fn new_webhook_errors_never_quote_secrets() {
        for text in [
            "webhook:\n  url: https://x.example\n  auth: { bearer: \"s3cr3t\\nX\" }\n",
            "webhook:\n  url: https://x.example\n  auth: { bearer: \"Bearer s3cr3t\" }\n",
            "webhook:\n  url: https://x.example\n  auth: { oauth2: { token_url: x, client_id: a, client_secret: s3cr3t } }\n",
            "webhook:\n  url: https://x.example\n  signing_secret: whsec_s3cr3t\n",
            "webhook:\n  url: https://x.example\n  signing_secret: s3cr3t\n",
            "webhook:\n  url: https://x.example\n  headers: { X-Key: \"s3cr3t {{ nope }}\" }\n",
            "webhook:\n  url: https://x.example\n  headers: { X-Key: \"s3cr3t {{ \" }\n",
            "webhook:\n  url: https://x.example\n  auth: { basic: { username: a, password: [s3cr3t] } }\n",
        ] {
            let errors = error_lines(text);
            assert!(!errors.is_empty());
            for e in &errors {
                assert!(!e.contains("s3cr3t"), "secret in {e:?}");
            }
        }
        let config = ok(
            "webhook:\n  url: https://x.example\n  headers: { X-Key: s3cr3t }\n  \
             auth: { oauth2: { token_url: https://i.example/t, client_id: a, client_secret: s3cr3t } }\n  \
             signing_secret: whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\n",
        );
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cr3t") && !debug.contains("C2FVsBQ"),
            "{debug}"
        );
    }

    #[test]
    fn the_shipped_example_configuration_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wghook.yaml");
        let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.webhooks.len(), 1);
        assert_eq!(config.monitor.interval, DEFAULT_INTERVAL);
    }

    /// Every key the compiler knows, by section, for the documentation test.
    const ALL_KEY_LISTS: &[(&str, &[&str])] = &[
        ("top level", TOP_KEYS),
        ("webhook", WEBHOOK_KEYS),
        ("webhook.auth", AUTH_KEYS),
        ("webhook.auth.basic", BASIC_KEYS),
        ("webhook.auth.oauth2", OAUTH2_KEYS),
        ("delivery", DELIVERY_KEYS),
        ("retry", RETRY_KEYS),
        ("monitor", MONITOR_KEYS),
        ("peers.KEY", PEER_KEYS),
        ("interfaces.NAME", INTERFACE_KEYS),
        ("metrics", METRICS_KEYS),
        ("log", LOG_KEYS),
    ];

    /// Regression (audit): the shipped example lacked `metrics:` and `log:`.
    /// It is the reference the man page points at, so every key the
    /// compiler accepts must appear in it (as `key:`, active or commented).
    #[test]
    fn the_shipped_example_documents_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wghook.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mentions = |key: &str| {
            text.match_indices(&format!("{key}:")).any(|(i, _)| {
                !text[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        };
        let mut missing = Vec::new();
        for (section, keys) in ALL_KEY_LISTS {
            for key in *keys {
                if !mentions(key) {
                    missing.push(format!("{section}: {key}"));
                }
            }
        }
        assert!(missing.is_empty(), "config/wghook.yaml lacks {missing:?}");
        // Top-level keys start a line, active or commented out.
        for key in TOP_KEYS {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{key}:"))
                        || l.starts_with(&format!("# {key}:"))),
                "config/wghook.yaml has no top-level {key}:"
            );
        }
    }

    #[test]
    fn ping_checks_and_peer_labels_are_read() {
        let config = ok(&format!(
            "monitor:\n  ping_checks: true\n  ping_interval: 1m\n\
             peers:\n  \"{ALICE}\":\n    name: a\n    ping_address: \" fd00::2 \"\n    \
             labels: {{ team: ops, site.code: ber-1 }}\n"
        ));
        assert!(config.monitor.ping_checks);
        assert_eq!(config.monitor.ping_interval, Duration::from_secs(60));
        let alice = PublicKey::from_base64(ALICE).unwrap();
        let label = &config.peers[&alice];
        assert_eq!(label.name, "a");
        let labels: Vec<(&str, &str)> = label
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(labels, [("site.code", "ber-1"), ("team", "ops")]);
        assert_eq!(
            config.ping_addresses.get(&alice),
            Some(&"fd00::2".parse::<std::net::IpAddr>().unwrap())
        );
        // Off by default.
        let config = ok("");
        assert!(!config.monitor.ping_checks);
        assert_eq!(config.monitor.ping_interval, DEFAULT_PING_INTERVAL);
        assert!(config.ping_addresses.is_empty());
    }

    /// Regression (audit): `interface.display_name` was promised, but no key
    /// set it.
    #[test]
    fn the_interfaces_map_names_interfaces() {
        let config =
            ok("interfaces:\n  wg0: { name: Office VPN }\n  wg1: {}\n  wg2: { name: \"\" }\n");
        assert_eq!(
            config.interface_names(),
            HashMap::from([("wg0".to_string(), "Office VPN".to_string())])
        );
        assert_eq!(config.interface_labels.len(), 3);
        assert!(ok("").interface_names().is_empty());
        assert_eq!(
            error_lines(
                "interfaces:\n  \"wg*\": { name: a }\n  averylonginterfacename: { name: b }\n  \
                 wg0: { nme: c }\n  wg1: { name: [d] }\n  wg2: office\n  wg1: { name: e }\n"
            ),
            [
                format!(
                    "{DEFAULT_PATH}:2: interfaces.\"wg*\": invalid interface name (an exact name, not a pattern)"
                ),
                format!(
                    "{DEFAULT_PATH}:3: interfaces.\"averylonginterfacename\": invalid interface name \
                     (interface names are at most 15 characters)"
                ),
                format!("{DEFAULT_PATH}:4: interfaces.\"wg0\".nme: unknown key (did you mean name?)"),
                format!("{DEFAULT_PATH}:5: interfaces.\"wg1\".name: expected a string, found a list"),
                format!("{DEFAULT_PATH}:6: interfaces.\"wg2\": expected a mapping, found a single value"),
                format!("{DEFAULT_PATH}:7: interfaces.\"wg1\": duplicate key (first at line 5)"),
            ]
        );
    }

    #[test]
    fn load_merges_names_from_wg_quick_files_and_the_peers_map_wins() {
        let dir = tempfile::tempdir().unwrap();
        let wg = dir.path().join("wireguard");
        std::fs::create_dir(&wg).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wg-quick/wg0.conf"),
            wg.join("wg0.conf"),
        )
        .unwrap();
        let bob = "amDFZkwcutgFado44vU29t75ZgBBND5UbSxmUB4qKlY=";
        let config_path = dir.path().join("wghook.yaml");
        std::fs::write(
            &config_path,
            format!(
                "monitor:\n  names_from: [\"wireguard/*.conf\"]\n\
                 peers:\n  \"{ALICE}\": {{ name: from-yaml }}\n  \"{bob}\": {{ user: bob@example.com }}\n"
            ),
        )
        .unwrap();
        let config = load(&config_path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.monitor.names_from,
            [dir.path().join("wireguard/*.conf")]
        );
        let alice = PublicKey::from_base64(ALICE).unwrap();
        let bob = PublicKey::from_base64(bob).unwrap();
        assert_eq!(config.peers[&alice].name, "from-yaml", "the peers map wins");
        assert_eq!(
            config.peers[&bob].name, "Bob's phone",
            "a file fills an empty name"
        );
        assert_eq!(config.peers[&bob].user, "bob@example.com");
        assert_eq!(config.peers.len(), 2, "carol has no name: no entry");
        // parse_str reads no file.
        let text = std::fs::read_to_string(&config_path).unwrap();
        let config = parse_str(&text, &config_path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.peers[&bob].name, "");
    }

    #[test]
    fn load_reports_unreadable_and_malformed_names_files() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("wg1.conf");
        std::fs::write(
            &bad,
            "[Interface]\nListenPort = 1\n\n[Peer]\n# Name = x\nAllowedIPs = 10.0.0.2/32\n",
        )
        .unwrap();
        let config_path = dir.path().join("wghook.yaml");
        std::fs::write(
            &config_path,
            "monitor:\n  interval: 5x\n  names_from:\n    - wg1.conf\n    - missing.conf\n",
        )
        .unwrap();
        let errors = load(&config_path).unwrap_err();
        let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                format!(
                    "{}:2: monitor.interval: invalid duration \"5x\" (use e.g. 5s, 1m, 1h30m)",
                    config_path.display()
                ),
                format!(
                    "{}:5: monitor.names_from[1]: cannot read {}: No such file or directory (os error 2)",
                    config_path.display(),
                    dir.path().join("missing.conf").display()
                ),
                format!(
                    "{}:4: [Peer] section without PublicKey (in a wg-quick file of monitor.names_from)",
                    bad.display()
                ),
            ]
        );
    }

    #[test]
    fn an_error_without_line_or_key_leaves_them_out() {
        let e = ConfigError {
            file: PathBuf::from("a.yaml"),
            line: None,
            key: "monitor".into(),
            message: "m".into(),
        };
        assert_eq!(e.to_string(), "a.yaml: monitor: m");
        let e = ConfigError {
            line: Some(3),
            key: String::new(),
            ..e
        };
        assert_eq!(e.to_string(), "a.yaml:3: m");
    }
}
