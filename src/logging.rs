//! Log output: which format, which filter, set up once per process.
//!
//! Formats ([`LogFormat`]):
//! - `human`: timestamps, levels, colours on a terminal (the `tracing` default);
//! - `journald`: one line per event, no timestamp (journald stamps each line
//!   itself), prefixed with the syslog priority the way `sd-daemon(3)` does
//!   (`<3>` error, `<4>` warn, `<6>` info, `<7>` debug and trace), so
//!   `journalctl -p warning` works;
//! - `json`: one JSON object per line, for log shippers;
//! - `auto`: `journald` under systemd (`JOURNAL_STREAM` is set, or stderr is
//!   not a terminal), else `human`.
//!
//! The filter is a `RUST_LOG`-style directive list (`info`,
//! `wghook=debug,warn`). Precedence: the `RUST_LOG` environment variable,
//! then `--log-level`, then the configuration's `log.level`, then the
//! command's default. Likewise the format: `--log-format`, then the
//! configuration's `log.format`, then `auto`.
//!
//! Invariants: logs go to stderr only (stdout belongs to command output);
//! [`init`] installs the global subscriber at most once; the configuration
//! can change the filter and the format later through [`apply_config`] (at
//! start and on reload), but never overrides what the environment or a flag
//! set.

use std::fmt;
use std::io::IsTerminal as _;
use std::sync::OnceLock;

use tracing::{Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `journald` under systemd or when stderr is not a terminal, else `human`.
    #[default]
    Auto,
    /// Timestamps, levels and colours, for a terminal.
    Human,
    /// `<N>`-prefixed lines without timestamps, for the journal.
    Journald,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The name used on the command line and in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Auto => "auto",
            LogFormat::Human => "human",
            LogFormat::Journald => "journald",
            LogFormat::Json => "json",
        }
    }
}

impl crate::settings::kind::Named for LogFormat {
    const ALL: &'static [Self] = &[
        LogFormat::Auto,
        LogFormat::Human,
        LogFormat::Journald,
        LogFormat::Json,
    ];
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// The `log:` section as written.
#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    /// A `RUST_LOG`-style filter, e.g. `info` or `wghook=debug,warn`.
    pub level: Option<crate::settings::Text>,
    /// auto, human, journald or json.
    pub format: Option<crate::settings::Text<crate::settings::kind::Pick<LogFormat>>>,
}

/// The `log:` section (the command line and `RUST_LOG` take precedence).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSettings {
    /// A `RUST_LOG`-style filter, e.g. `info` or `wghook=debug,warn`.
    pub level: Option<String>,
    pub format: Option<LogFormat>,
}

/// Validates `log:`; a value in error is left unset.
pub fn validate(raw: Option<&RawLog>, check: &mut crate::settings::Check) -> LogSettings {
    let mut out = LogSettings::default();
    let Some(raw) = raw else {
        return out;
    };
    if let Some(t) = &raw.level {
        if let Some(text) = check.text(t) {
            match check_filter(text.trim()) {
                Ok(()) => out.level = Some(text.trim().to_string()),
                Err(e) => {
                    let message = format!(
                        "invalid log filter {text:?}: {e} (use e.g. info or wghook=debug,warn)"
                    );
                    check.error(t, message);
                }
            }
        }
    }
    if let Some(t) = &raw.format {
        out.format = check.pick(t);
    }
    out
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    /// Parses `auto`, `human`, `journald` or `json` (for the configuration).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(LogFormat::Auto),
            "human" => Ok(LogFormat::Human),
            "journald" => Ok(LogFormat::Journald),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?}: expected auto, human, journald or json"
            )),
        }
    }
}

/// A format with `auto` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Concrete {
    Human,
    Journald,
    Json,
}

/// Decides `auto` from what the process knows about its stderr.
fn concrete(format: LogFormat, journal_stream: bool, stderr_is_terminal: bool) -> Concrete {
    match format {
        LogFormat::Human => Concrete::Human,
        LogFormat::Journald => Concrete::Journald,
        LogFormat::Json => Concrete::Json,
        LogFormat::Auto if journal_stream || !stderr_is_terminal => Concrete::Journald,
        LogFormat::Auto => Concrete::Human,
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A filter (from `RUST_LOG`, `--log-level` or `log.level`) does not parse.
    #[error("invalid log filter {filter:?} from {source_name}: {reason}")]
    Filter {
        filter: String,
        source_name: &'static str,
        reason: String,
    },
    /// A global subscriber was already installed.
    #[error("logging is already initialised")]
    AlreadyInitialised,
    /// The live subscriber could not be updated.
    #[error("cannot update the log settings: {0}")]
    Reload(String),
}

/// Checks a `RUST_LOG`-style filter (for validating `log.level`).
pub fn check_filter(filter: &str) -> Result<(), String> {
    EnvFilter::builder()
        .parse(filter)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn parse_filter(filter: &str, source_name: &'static str) -> Result<EnvFilter, LogError> {
    EnvFilter::builder()
        .parse(filter)
        .map_err(|e| LogError::Filter {
            filter: filter.to_string(),
            source_name,
            reason: e.to_string(),
        })
}

/// Where the filter in force came from, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FilterSource {
    Env,
    Flag,
    Config,
    Default,
}

impl FilterSource {
    fn name(self) -> &'static str {
        match self {
            FilterSource::Env => "RUST_LOG",
            FilterSource::Flag => "--log-level",
            FilterSource::Config => "log.level",
            FilterSource::Default => "the default",
        }
    }
}

/// The filter text and its source, by precedence.
fn choose_filter<'a>(
    env: Option<&'a str>,
    flag: Option<&'a str>,
    default_level: &'a str,
) -> (&'a str, FilterSource) {
    let given = |s: &Option<&'a str>| s.filter(|s| !s.trim().is_empty());
    if let Some(env) = given(&env) {
        (env, FilterSource::Env)
    } else if let Some(flag) = given(&flag) {
        (flag, FilterSource::Flag)
    } else {
        (default_level, FilterSource::Default)
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;
type Filtered = tracing_subscriber::layer::Layered<reload::Layer<BoxedLayer, Registry>, Registry>;

/// The live subscriber's settings, set by [`init`].
static HANDLE: OnceLock<LogHandle> = OnceLock::new();

/// Applies the configuration's `log.level` and `log.format` to the logging
/// [`init`] set up (call it after loading the configuration and after each
/// reload). A level is ignored when `RUST_LOG` or `--log-level` set the
/// filter, a format when `--log-format` set it; `None` means the default
/// (`default_level`, `auto`). An invalid level changes nothing and is
/// returned. Does nothing when [`init`] was not called (tests).
pub fn apply_config(
    level: Option<&str>,
    format: Option<LogFormat>,
    default_level: &str,
) -> Result<(), LogError> {
    match HANDLE.get() {
        Some(handle) => handle.apply_config(level, format, default_level),
        None => Ok(()),
    }
}

/// Changes the log settings after [`init`], within the precedence rules.
struct LogHandle {
    filter: reload::Handle<EnvFilter, Filtered>,
    layer: reload::Handle<BoxedLayer, Registry>,
    filter_source: FilterSource,
    format_from_flag: bool,
    journal_stream: bool,
    stderr_is_terminal: bool,
    /// Builds the output layer for a format (stderr, or a test buffer).
    make_layer: Box<dyn Fn(Concrete) -> BoxedLayer + Send + Sync>,
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle")
            .field("filter_source", &self.filter_source)
            .field("format_from_flag", &self.format_from_flag)
            .finish_non_exhaustive()
    }
}

impl LogHandle {
    /// See the free function [`apply_config`].
    fn apply_config(
        &self,
        level: Option<&str>,
        format: Option<LogFormat>,
        default_level: &str,
    ) -> Result<(), LogError> {
        if self.filter_source > FilterSource::Flag {
            let (text, source) = match level.filter(|l| !l.trim().is_empty()) {
                Some(level) => (level, FilterSource::Config),
                None => (default_level, FilterSource::Default),
            };
            let filter = parse_filter(text, source.name())?;
            self.filter
                .reload(filter)
                .map_err(|e| LogError::Reload(e.to_string()))?;
        }
        if !self.format_from_flag {
            let format = concrete(
                format.unwrap_or_default(),
                self.journal_stream,
                self.stderr_is_terminal,
            );
            self.layer
                .reload((self.make_layer)(format))
                .map_err(|e| LogError::Reload(e.to_string()))?;
        }
        Ok(())
    }
}

/// Installs the global subscriber writing to stderr. `format` and `filter`
/// are the command-line flags (`None` when not given); the filter is taken
/// from `RUST_LOG` if set, else `filter`, else `default_level` (until
/// [`apply_config`] brings the configuration's).
pub fn init(
    format: Option<LogFormat>,
    filter: Option<&str>,
    default_level: &str,
) -> Result<(), LogError> {
    let env = std::env::var("RUST_LOG").ok();
    let (text, filter_source) = choose_filter(env.as_deref(), filter, default_level);
    let env_filter = parse_filter(text, filter_source.name())?;
    let journal_stream = std::env::var_os("JOURNAL_STREAM").is_some();
    let stderr_is_terminal = std::io::stderr().is_terminal();
    let settings = Settings {
        filter_source,
        format_from_flag: format.is_some_and(|f| f != LogFormat::Auto),
        format: format.unwrap_or_default(),
        journal_stream,
        stderr_is_terminal,
    };
    let make_layer = move |format| output_layer_to(format, stderr_is_terminal, std::io::stderr);
    let (subscriber, handle) = build(env_filter, settings, make_layer);
    subscriber
        .try_init()
        .map_err(|_| LogError::AlreadyInitialised)?;
    HANDLE.set(handle).map_err(|_| LogError::AlreadyInitialised)
}

/// What [`init`] found out, for [`build`].
struct Settings {
    filter_source: FilterSource,
    format_from_flag: bool,
    format: LogFormat,
    journal_stream: bool,
    stderr_is_terminal: bool,
}

/// The subscriber with reloadable output and filter, and its handle.
fn build(
    env_filter: EnvFilter,
    settings: Settings,
    make_layer: impl Fn(Concrete) -> BoxedLayer + Send + Sync + 'static,
) -> (
    tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Filtered>, Filtered>,
    LogHandle,
) {
    let output = concrete(
        settings.format,
        settings.journal_stream,
        settings.stderr_is_terminal,
    );
    let (layer, layer_handle) = reload::Layer::new(make_layer(output));
    let (env_filter, filter_handle) = reload::Layer::new(env_filter);
    let subscriber = tracing_subscriber::registry().with(layer).with(env_filter);
    let handle = LogHandle {
        filter: filter_handle,
        layer: layer_handle,
        filter_source: settings.filter_source,
        format_from_flag: settings.format_from_flag,
        journal_stream: settings.journal_stream,
        stderr_is_terminal: settings.stderr_is_terminal,
        make_layer: Box::new(make_layer),
    };
    (subscriber, handle)
}

/// The formatting layer for a format, writing to `writer`.
fn output_layer_to<W>(format: Concrete, ansi: bool, writer: W) -> BoxedLayer
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let base = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        Concrete::Human => base.with_ansi(ansi).boxed(),
        Concrete::Journald => base
            .with_ansi(false)
            .event_format(JournaldFormat::default())
            .boxed(),
        Concrete::Json => base
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
    }
}

/// True if stderr is the journal: systemd sets `JOURNAL_STREAM` to the
/// `DEVICE:INODE` of the stream it connects to stderr, and stderr still is
/// that stream (not redirected since).
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(meta) => journal_stream_matches(&var.to_string_lossy(), meta.dev(), meta.ino()),
        Err(_) => false,
    }
}

/// True if `JOURNAL_STREAM`'s value (`DEVICE:INODE`, decimal) names `dev`
/// and `ino`.
fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino)
}

/// Writes each line of `text` behind `prefix`, each ending in a line break;
/// an empty `text` is one empty line. journald reads a priority prefix per
/// line, so every line of a multi-line message needs it.
pub(crate) fn write_prefixed(out: &mut impl fmt::Write, prefix: &str, text: &str) -> fmt::Result {
    for line in text.lines().chain(text.is_empty().then_some("")) {
        out.write_str(prefix)?;
        out.write_str(line)?;
        out.write_char('\n')?;
    }
    Ok(())
}

/// The `sd-daemon(3)` priority prefix for a level.
pub(crate) fn priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// `<N>target: message key=value`: the default line without timestamp and
/// level, behind the syslog priority journald reads.
struct JournaldFormat {
    inner: Format<Full, ()>,
}

impl Default for JournaldFormat {
    fn default() -> Self {
        JournaldFormat {
            inner: tracing_subscriber::fmt::format()
                .without_time()
                .with_level(false)
                .with_target(true)
                .with_ansi(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JournaldFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        // journald reads the priority per line: a message spanning lines
        // (a reload's list of config errors) gets it on every line, so
        // `journalctl -p warning` shows all of them.
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        write_prefixed(&mut writer, priority(*event.metadata().level()), &line)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A `MakeWriter` collecting everything written.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Logs one event per level through a format and returns the output.
    fn log_with(format: Concrete) -> String {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(output_layer_to(format, false, buffer.clone()))
            .with(EnvFilter::new("trace"));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(interface = "wg0", "lost");
            tracing::warn!("careful");
            tracing::info!(peers = 3, "polled");
            tracing::debug!("detail");
            tracing::trace!("noise");
        });
        buffer.text()
    }

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(journal_stream_matches("8:12345\n", 8, 12345));
        assert!(
            !journal_stream_matches("8:12345", 8, 12346),
            "another stream"
        );
        assert!(!journal_stream_matches("9:12345", 8, 12345));
        for bad in ["", "8", "8:", ":12345", "x:y", "8:12345:1"] {
            assert!(!journal_stream_matches(bad, 8, 12345), "{bad:?}");
        }
    }

    #[test]
    fn journald_lines_carry_the_syslog_priority_and_no_timestamp() {
        let out = log_with(Concrete::Journald);
        let lines: Vec<&str> = out.lines().collect();
        let target = module_path!();
        assert_eq!(
            lines,
            [
                format!("<3>{target}: lost interface=\"wg0\""),
                format!("<4>{target}: careful"),
                format!("<6>{target}: polled peers=3"),
                format!("<7>{target}: detail"),
                format!("<7>{target}: noise"),
            ]
        );
    }

    #[test]
    fn every_line_of_a_multi_line_journald_message_carries_the_priority() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(output_layer_to(Concrete::Journald, false, buffer.clone()))
            .with(EnvFilter::new("trace"));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("reload failed:\nfirst error\nsecond error");
        });
        let out = buffer.text();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines.iter().all(|l| l.starts_with("<3>")), "{out}");
        assert_eq!(lines[2], "<3>second error");
    }

    #[test]
    fn json_lines_are_objects_with_level_and_fields() {
        let out = log_with(Concrete::Json);
        let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(first["level"], "ERROR");
        assert_eq!(first["message"], "lost");
        assert_eq!(first["interface"], "wg0");
        assert!(first["timestamp"].is_string());
        assert_eq!(out.lines().count(), 5);
    }

    #[test]
    fn human_lines_have_a_timestamp_and_level() {
        let out = log_with(Concrete::Human);
        let first = out.lines().next().unwrap();
        assert!(first.contains("ERROR"), "{first}");
        // RFC 3339 timestamp first: "2025-01-02T03:04:05.678Z ..."
        assert!(
            first.as_bytes()[4] == b'-' && first.as_bytes()[10] == b'T',
            "{first}"
        );
    }

    /// A subscriber as [`init`] builds it, writing to a buffer.
    fn built(
        filter: &str,
        filter_source: FilterSource,
        format: Option<LogFormat>,
    ) -> (impl Subscriber + Send + Sync, LogHandle, Buffer) {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let settings = Settings {
            filter_source,
            format_from_flag: format.is_some(),
            format: format.unwrap_or(LogFormat::Human),
            journal_stream: false,
            stderr_is_terminal: true,
        };
        let (subscriber, handle) = build(EnvFilter::new(filter), settings, move |f| {
            output_layer_to(f, false, out.clone())
        });
        (subscriber, handle, buffer)
    }

    #[test]
    fn the_configuration_sets_level_and_format_unless_a_flag_did() {
        let (subscriber, handle, buffer) = built("info", FilterSource::Default, None);
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("hidden");
            handle
                .apply_config(Some("debug"), Some(LogFormat::Journald), "info")
                .unwrap();
            tracing::debug!("shown");
            // An invalid level is refused and changes nothing.
            assert!(handle.apply_config(Some("x=loud"), None, "info").is_err());
            tracing::debug!("still shown");
        });
        let out = buffer.text();
        assert!(!out.contains("hidden"), "{out}");
        let target = module_path!();
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                format!("<7>{target}: shown"),
                format!("<7>{target}: still shown")
            ]
        );
    }

    #[test]
    fn flags_win_over_the_configuration() {
        let (subscriber, handle, buffer) =
            built("warn", FilterSource::Flag, Some(LogFormat::Journald));
        tracing::subscriber::with_default(subscriber, || {
            handle
                .apply_config(Some("debug"), Some(LogFormat::Json), "info")
                .unwrap();
            tracing::info!("hidden");
            tracing::warn!("kept");
        });
        let target = module_path!();
        assert_eq!(buffer.text(), format!("<4>{target}: kept\n"));
    }

    #[test]
    fn auto_means_journald_under_systemd_or_off_a_terminal() {
        assert_eq!(concrete(LogFormat::Auto, true, true), Concrete::Journald);
        assert_eq!(concrete(LogFormat::Auto, false, false), Concrete::Journald);
        assert_eq!(concrete(LogFormat::Auto, false, true), Concrete::Human);
        assert_eq!(concrete(LogFormat::Human, true, false), Concrete::Human);
        assert_eq!(concrete(LogFormat::Json, true, true), Concrete::Json);
    }

    #[test]
    fn rust_log_beats_the_flag_which_beats_the_default() {
        assert_eq!(
            choose_filter(Some("debug"), Some("warn"), "info"),
            ("debug", FilterSource::Env)
        );
        assert_eq!(
            choose_filter(None, Some("warn"), "info"),
            ("warn", FilterSource::Flag)
        );
        assert_eq!(
            choose_filter(Some(" "), None, "info"),
            ("info", FilterSource::Default)
        );
        // The configuration only applies below the flag.
        assert!(FilterSource::Flag < FilterSource::Config);
        assert!(FilterSource::Config < FilterSource::Default);
    }

    #[test]
    fn filters_are_checked() {
        assert!(check_filter("info").is_ok());
        assert!(check_filter("wghook=debug,warn").is_ok());
        assert!(check_filter("wghook=loud").is_err());
        let err = parse_filter("wghook=loud", "--log-level").unwrap_err();
        assert!(err.to_string().contains("--log-level"), "{err}");
    }

    #[test]
    fn formats_parse_from_their_names() {
        for f in [
            LogFormat::Auto,
            LogFormat::Human,
            LogFormat::Journald,
            LogFormat::Json,
        ] {
            assert_eq!(f.as_str().parse::<LogFormat>(), Ok(f));
        }
        assert!("syslog".parse::<LogFormat>().is_err());
    }
}
