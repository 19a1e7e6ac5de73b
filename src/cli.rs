//! The command line: clap definitions and each command's output.
//!
//! This is the only module (with `demo`) that prints to stdout; everything it
//! runs lives in the library. Exit codes: 0 success, 1 runtime failure or a
//! refused action, 2 invalid configuration. Errors go to stderr as
//! `error: ...`, every line prefixed with `<3>` when stderr is the journal
//! ([`print_error`]), so `ExecStartPre=wghook check` logs them as errors.
//! `-c FILE` is global: it may stand before or after any command.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, TimeDelta, Utc};
use clap::{CommandFactory as _, Parser, Subcommand};
use serde::Serialize;

use crate::config::{self, Config};
use crate::daemon::{self, RunOptions};
use crate::event::PeerLabel;
use crate::logging::{self, stderr_is_journal, LogFormat};
use crate::model::{Interface, Peer};
use crate::tracker;

/// wghook: WireGuard peer events as webhooks.
#[derive(Debug, Parser)]
#[command(name = "wghook", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Configuration file (before or after the command: `wghook outbox
    /// retry -c FILE` works as well as `wghook -c FILE outbox retry`).
    #[arg(short, long, global = true, value_name = "FILE", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Log format: auto is journald under systemd or when stderr is not a
    /// terminal, else human. Overrides the configuration's log.format.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, RUST_LOG syntax (info, debug, wghook=debug,warn).
    /// Overrides the configuration's log.level; RUST_LOG overrides it.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: poll WireGuard, derive events, deliver webhooks.
    Run,
    /// Validate the configuration file; print every error and exit non-zero if any.
    Check,
    /// Poll once and show interfaces and peers with their connected state.
    Peers {
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Play a built-in scenario on a simulated host, delivering to a built-in receiver.
    Demo,
    /// List undelivered events (pending and given up) per webhook; re-queue or purge them.
    Outbox {
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<OutboxAction>,
    },
    /// Send a sample event through each webhook exactly as a real one would go
    /// (format, headers, auth, signature); print status, latency and the start
    /// of each answer. Exits 1 if any webhook failed.
    Test {
        /// Only this webhook (by name; `default` for a `webhook:` section).
        #[arg(long, value_name = "NAME")]
        webhook: Option<String>,
        /// The sample event to send.
        #[arg(long, value_name = "EVENT", default_value = "peer.connect",
              value_parser = clap::builder::PossibleValuesParser::new(crate::event::filter::EVENT_NAMES))]
        event: String,
    },
    /// Print a shell completion script (e.g. `wghook completions bash >
    /// /usr/share/bash-completion/completions/wghook`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; e.g. `wghook man | man -l -`).
    Man,
    /// Print the JSON Schema of the configuration file, for editors (the
    /// .deb installs it as /usr/share/wghook/wghook.schema.json).
    Schema,
}

/// What `wghook outbox` does besides listing.
#[derive(Debug, Subcommand)]
pub enum OutboxAction {
    /// Put given-up events back in the queue: all of them, one webhook's, or
    /// the given event ids. A running daemon sends them within about a second.
    Retry {
        /// Only this webhook's.
        #[arg(long, value_name = "NAME")]
        webhook: Option<String>,
        /// Event ids (the webhook-id header); none means all given-up events.
        ids: Vec<String>,
    },
    /// Delete every pending and given-up event from the outbox.
    Purge {
        /// Confirm: without it nothing is deleted.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs the parsed command line.
pub async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let arg = cli.config;
    match cli.command {
        Command::Run => {
            let Some(cfg) = load(&arg)? else {
                return Ok(ExitCode::from(2));
            };
            daemon::run(cfg, RunOptions::default(), daemon::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => Ok(match load(&arg)? {
            Some(cfg) => {
                println!(
                    "{}: ok ({} webhook{}, backend {}, poll every {:?}, connect threshold {:?})",
                    cfg.path.display(),
                    cfg.webhooks.len(),
                    if cfg.webhooks.len() == 1 { "" } else { "s" },
                    cfg.monitor.backend.as_str(),
                    cfg.monitor.interval,
                    cfg.monitor.connect_threshold,
                );
                if cfg.webhooks.is_empty() {
                    println!("note: no webhook is configured; events will only be logged");
                }
                ExitCode::SUCCESS
            }
            None => ExitCode::from(2),
        }),
        Command::Peers { json } => {
            let Some(cfg) = load(&arg)? else {
                return Ok(ExitCode::from(2));
            };
            peers(&cfg, json).await
        }
        Command::Demo => {
            crate::demo::run().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Outbox { json, action } => {
            let Some(cfg) = load(&arg)? else {
                return Ok(ExitCode::from(2));
            };
            outbox(&cfg, json, action)
        }
        Command::Test { webhook, event } => {
            let Some(cfg) = load(&arg)? else {
                return Ok(ExitCode::from(2));
            };
            test_webhooks(&cfg, webhook.as_deref(), &event).await
        }
        Command::Completions { shell } => {
            // Generated into memory first: clap_complete panics on a write
            // error (e.g. a closed pipe) instead of returning it.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "wghook", &mut script);
            let mut out = std::io::stdout().lock();
            out.write_all(&script)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let mut out = std::io::stdout().lock();
            out.write_all(&man_page()?)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            let mut out = std::io::stdout().lock();
            out.write_all(config::schema::schema_json().as_bytes())?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One `.SS` per (sub)command with its arguments, recursively.
fn render_command(page: &mut clap_mangen::roff::Roff, parent: &str, cmd: &clap::Command) {
    use clap_mangen::roff::{bold, italic, roman};

    if cmd.get_name() == "help" || cmd.is_hide_set() {
        return;
    }
    let path = format!("{parent} {}", cmd.get_name());
    page.control("SS", [path.as_str()]);
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        page.text([roman(about.to_string())]);
    }
    for arg in cmd
        .get_arguments()
        .filter(|a| !a.is_global_set() && !a.is_hide_set())
    {
        let mut head = Vec::new();
        if let Some(short) = arg.get_short() {
            head.push(bold(format!("-{short}")));
            head.push(roman(", "));
        }
        let value_name = arg
            .get_value_names()
            .and_then(|n| n.first())
            .map_or_else(|| arg.get_id().as_str().to_uppercase(), |n| n.to_string());
        match arg.get_long() {
            Some(long) => {
                head.push(bold(format!("--{long}")));
                if arg.get_action().takes_values() {
                    head.push(roman(" "));
                    head.push(italic(value_name));
                }
            }
            None => head.push(italic(value_name)),
        }
        page.control("TP", []).text(head);
        let mut help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() {
            help.push_str(&format!(" [default: {}]", defaults.join(", ")));
        }
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_string())
            .collect();
        if !values.is_empty() && arg.get_long().is_none() {
            if !help.is_empty() && !help.ends_with('.') {
                help.push('.');
            }
            help.push_str(&format!(" One of: {}.", values.join(", ")));
        }
        page.text([roman(help)]);
    }
    for sub in cmd.get_subcommands() {
        render_command(page, &path, sub);
    }
}

/// The manual page, in roff: generated from the clap definitions (name,
/// synopsis, options, commands), plus the sections an operator looks for.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    use clap_mangen::roff::{bold, italic, roman, Roff};

    let man = clap_mangen::Man::new(Cli::command()).manual("wghook manual");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut commands = Roff::new();
    commands.control("SH", ["COMMANDS"]);
    for sub in Cli::command().get_subcommands() {
        render_command(&mut commands, "wghook", sub);
    }
    commands.to_writer(&mut out)?;
    let mut extra = Roff::new();
    extra
        .control("SH", ["FILES"])
        .control("TP", [])
        .text([italic(config::DEFAULT_PATH)])
        .text([roman(
            "The configuration (YAML). Validate it with wghook check; \
             the example shipped with the package documents every key.",
        )])
        .control("TP", [])
        .text([italic("/var/lib/wghook")])
        .text([roman(
            "State directory: pending events and the saved tracker state.",
        )])
        .control("TP", [])
        .text([italic("/run/wireguard, /var/run/wireguard")])
        .text([roman(
            "Where userspace WireGuard implementations put their UAPI sockets.",
        )])
        .control("SH", ["ENVIRONMENT"])
        .control("TP", [])
        .text([bold("RUST_LOG")])
        .text([roman(
            "Log filter; overrides --log-level and the configuration's log.level.",
        )])
        .control("TP", [])
        .text([bold("NOTIFY_SOCKET"), roman(", "), bold("WATCHDOG_USEC")])
        .text([roman(
            "Set by systemd for Type=notify services: readiness, status and watchdog \
             notifications are sent there.",
        )])
        .control("TP", [])
        .text([bold("JOURNAL_STREAM")])
        .text([roman(
            "Set by systemd when stderr goes to the journal: --log-format auto then \
             writes journald lines.",
        )])
        .control("SH", ["SIGNALS"])
        .control("TP", [])
        .text([bold("SIGHUP")])
        .text([roman(
            "Re-read the configuration; if it is invalid, keep the running one and log why.",
        )])
        .control("TP", [])
        .text([bold("SIGTERM"), roman(", "), bold("SIGINT")])
        .text([roman("Stop after finishing in-flight deliveries.")])
        .control("SH", ["EXIT STATUS"])
        .text([roman(
            "0 on success, 1 on a runtime failure, 2 when the configuration is invalid.",
        )])
        .control("SH", ["SEE ALSO"])
        .text([roman("systemctl(1), journalctl(1), wg(8)")]);
    extra.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// Loads the configuration; on validation errors prints each and returns `None`.
fn load(path: &Path) -> anyhow::Result<Option<Config>> {
    match config::load(path) {
        Ok(cfg) => Ok(Some(cfg)),
        Err(errors) => {
            let journal = stderr_is_journal();
            let mut out = String::new();
            for e in &errors.0 {
                out.push_str(&error_text(&e.to_string(), journal));
            }
            out.push_str(&error_line(
                &format!(
                    "{} error{} in {}",
                    errors.0.len(),
                    if errors.0.len() == 1 { "" } else { "s" },
                    path.display()
                ),
                journal,
            ));
            // One write: the lines of one run stay together.
            let _ = std::io::stderr().lock().write_all(out.as_bytes());
            Ok(None)
        }
    }
}

/// `message` as printed on stderr, ending in a line break; each line starts
/// with `<3>` (syslog "error", as `sd-daemon(3)` prefixes) when stderr is
/// the journal, so the journal records it as an error.
pub fn error_line(message: &str, journal: bool) -> String {
    let prefix = if journal {
        logging::priority(tracing::Level::ERROR)
    } else {
        ""
    };
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = logging::write_prefixed(&mut out, prefix, message);
    out
}

/// `error: MESSAGE`, see [`error_line`].
pub fn error_text(message: &str, journal: bool) -> String {
    error_line(&format!("error: {message}"), journal)
}

/// Prints `error: MESSAGE` to stderr, `<3>`-prefixed when stderr is the
/// journal (for `main` and every command's errors).
pub fn print_error(message: &str) {
    let text = error_text(message, stderr_is_journal());
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// One row of `wghook peers --json`.
#[derive(Debug, Serialize)]
struct PeerRow<'a> {
    public_key: &'a crate::model::PublicKey,
    name: &'a str,
    user: &'a str,
    /// The `peers.KEY.labels` of the configuration.
    labels: &'a std::collections::BTreeMap<String, String>,
    connected: bool,
    /// The ping check's answer; absent when ping checks are off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pingable: Option<bool>,
    last_handshake: Option<DateTime<Utc>>,
    handshake_age_seconds: Option<i64>,
    endpoint: Option<std::net::SocketAddr>,
    allowed_ips: &'a crate::model::AllowedIps,
    rx_bytes: u64,
    tx_bytes: u64,
}

/// One interface of `wghook peers`: its peers as rows (text) or
/// [`LazyPeers`] (`--json`).
#[derive(Serialize)]
struct InterfaceRow<'a, P> {
    name: &'a str,
    backend: &'static str,
    public_key: Option<String>,
    listen_port: u16,
    peers: P,
}

/// `wghook peers`: exit 1 (after printing what could be read) if an
/// interface could not be read.
async fn peers(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let mut backend = daemon::build_backend(cfg).await?;
    let now = Utc::now();
    let snapshot = backend.poll(now, &cfg.filter()).await?;
    let threshold = TimeDelta::from_std(cfg.monitor.connect_threshold)?;
    let no_label = PeerLabel::default();
    // With ping checks on, "connected" is what the daemon would decide:
    // handshake valid or answering ping (one round, now).
    let pings = if cfg.monitor.ping_checks {
        let mut pinger = crate::ping::Pinger::new(cfg.monitor.ping_interval)?;
        Some(
            pinger
                .refresh(&snapshot, &cfg.ping_addresses, now)
                .await
                .clone(),
        )
    } else {
        None
    };
    // An interface or a peer a backend reports twice is listed once (the
    // first report wins), as the tracker keeps one state per key.
    let mut seen_interfaces = std::collections::HashSet::new();
    let interfaces: Vec<&Interface> = snapshot
        .interfaces
        .iter()
        .filter(|i| seen_interfaces.insert(i.name.as_str()))
        .collect();
    let maker = |i: &'_ Interface| RowMaker {
        now,
        threshold,
        labels: &cfg.peers,
        no_label: &no_label,
        pings: pings.as_ref().map(|p| p.get(&i.name)),
    };
    let mut out = String::new();
    if json {
        let rows: Vec<_> = interfaces
            .iter()
            .map(|i| {
                let peers = LazyPeers {
                    peers: &i.peers,
                    keep: first_of_each(&i.peers),
                    maker: maker(i),
                };
                interface_row(i, peers)
            })
            .collect();
        // Streamed: at 65,536 peers the text is about 30 MB. The JSON
        // encoder escapes control characters (`\u001b`).
        // Indented for a person at a terminal; compact for a script (half
        // the bytes and the time at 65,536 peers).
        let stdout = std::io::stdout();
        let pretty = std::io::IsTerminal::is_terminal(&stdout);
        let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        if pretty {
            serde_json::to_writer_pretty(&mut w, &rows)?;
        } else {
            serde_json::to_writer(&mut w, &rows)?;
        }
        w.write_all(b"\n")?;
        w.flush()?;
    } else {
        if interfaces.is_empty() && snapshot.unreadable.is_empty() {
            out.push_str(&format!(
                "no WireGuard interface found (backend {})\n",
                backend.name()
            ));
        }
        for i in &interfaces {
            let maker = maker(i);
            let rows: Vec<PeerRow> = first_of_each(&i.peers)
                .into_iter()
                .map(|n| maker.row(&i.peers[n as usize]))
                .collect();
            let iface = interface_row(i, rows);
            out.push_str(&format!(
                "interface {} ({}, port {}, key {})\n",
                printable(iface.name),
                iface.backend,
                iface.listen_port,
                iface.public_key.as_deref().unwrap_or("none")
            ));
            if iface.peers.is_empty() {
                out.push_str("  (no peers)\n\n");
                continue;
            }
            out.push_str(&peer_table(&iface.peers, pings.is_some()));
            out.push('\n');
        }
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    if snapshot.unreadable.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for name in &snapshot.unreadable {
        print_error(&format!(
            "interface {}: could not be read (see the log)",
            printable(name)
        ));
    }
    Ok(ExitCode::FAILURE)
}

/// `s` with control characters (C0, DEL, C1) and the Unicode bidirectional
/// overrides written as `\u{1b}`, so that a name cannot move the cursor,
/// recolour or retitle the terminal, or reorder what follows it. Names are
/// kept as configured everywhere else (webhook payloads carry them as JSON;
/// the log's formatter escapes them); this is for text printed to a terminal.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The peers of one interface as a table; a PING column with ping checks on.
fn peer_table(peers: &[PeerRow<'_>], ping_checks: bool) -> String {
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    let mut row = |cells: [&str; 9]| {
        let [key, name, user, state, ping, handshake, endpoint, rx, tx] = cells;
        out.push_str(&format!(
            "  {key:<44}  {name:<16}  {user:<16}  {state:<9}  "
        ));
        if ping_checks {
            out.push_str(&format!("{ping:<4}  "));
        }
        out.push_str(&format!(
            "{handshake:>9}  {endpoint:<24}  {rx:>12}  {tx:>12}\n"
        ));
    };
    row([
        "PEER",
        "NAME",
        "USER",
        "STATE",
        "PING",
        "HANDSHAKE",
        "ENDPOINT",
        "RX",
        "TX",
    ]);
    for p in peers {
        row([
            &p.public_key.to_base64(),
            &or_dash(&printable(p.name)),
            &or_dash(&printable(p.user)),
            if p.connected { "connected" } else { "-" },
            match p.pingable {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            },
            &p.handshake_age_seconds.map_or("never".to_string(), age),
            &p.endpoint.map_or("-".to_string(), |e| e.to_string()),
            &p.rx_bytes.to_string(),
            &p.tx_bytes.to_string(),
        ]);
    }
    out
}

/// Makes the `wghook peers` row of a peer.
struct RowMaker<'a> {
    now: DateTime<Utc>,
    threshold: TimeDelta,
    labels: &'a std::collections::HashMap<crate::model::PublicKey, PeerLabel>,
    no_label: &'a PeerLabel,
    pings: Option<
        Option<&'a std::collections::HashMap<crate::model::PublicKey, crate::model::PingStatus>>,
    >,
}

impl<'a> RowMaker<'a> {
    fn row(&self, p: &'a Peer) -> PeerRow<'a> {
        let label = self.labels.get(&p.public_key).unwrap_or(self.no_label);
        let pingable = self.pings.map(|iface| {
            iface
                .and_then(|m| m.get(&p.public_key))
                .is_some_and(|s| s.pingable)
        });
        PeerRow {
            public_key: &p.public_key,
            name: &label.name,
            user: &label.user,
            labels: &label.labels,
            connected: tracker::is_connected(p.last_handshake, self.now, self.threshold)
                || pingable == Some(true),
            pingable,
            last_handshake: p.last_handshake,
            handshake_age_seconds: p
                .last_handshake
                .map(|h| (self.now - h).num_seconds().max(0)),
            endpoint: p.endpoint,
            allowed_ips: &p.allowed_ips,
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
        }
    }
}

/// Positions of the peers to list: a key listed twice counts once (the
/// first), as the tracker keeps one state per key.
fn first_of_each(peers: &[Peer]) -> Vec<u32> {
    let mut seen = std::collections::HashSet::with_capacity(peers.len());
    (0u32..)
        .zip(peers)
        .filter(|(_, p)| seen.insert(&p.public_key))
        .map(|(i, _)| i)
        .collect()
}

/// The peers of one interface for `--json`, each row made as it is
/// written: at 65,536 peers the rows never exist all at once.
struct LazyPeers<'a> {
    peers: &'a [Peer],
    keep: Vec<u32>,
    maker: RowMaker<'a>,
}

impl Serialize for LazyPeers<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.keep
                .iter()
                .map(|&i| self.maker.row(&self.peers[i as usize])),
        )
    }
}

fn interface_row<'a, P>(iface: &'a Interface, peers: P) -> InterfaceRow<'a, P> {
    InterfaceRow {
        name: &iface.name,
        backend: iface.driver.as_str(),
        public_key: iface.public_key.map(|k| k.to_base64()),
        listen_port: iface.listen_port,
        peers,
    }
}

/// `42s`, `3m05s`, `2h07m`: a handshake age at a glance.
fn age(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `wghook test`: one sample event through each selected webhook, sent as
/// the daemon would (no outbox, no retries). Exit 1 if any was not delivered,
/// 2 if there is nothing to test.
async fn test_webhooks(cfg: &Config, only: Option<&str>, event: &str) -> anyhow::Result<ExitCode> {
    use crate::delivery::http::{AttemptResult, HttpSender};
    use crate::event::template;

    let hooks: Vec<&crate::delivery::settings::Webhook> = cfg
        .webhooks
        .iter()
        .filter(|h| only.is_none_or(|name| h.name == name))
        .collect();
    if hooks.is_empty() {
        let names: Vec<&str> = cfg.webhooks.iter().map(|h| h.name.as_str()).collect();
        match only {
            Some(name) if !names.is_empty() => print_error(&format!(
                "no webhook named {name:?} in {} (configured: {})",
                cfg.path.display(),
                names.join(", ")
            )),
            _ => print_error(&format!(
                "no webhook is configured in {}",
                cfg.path.display()
            )),
        }
        return Ok(ExitCode::from(2));
    }
    let mut ctx = daemon::render_context(cfg);
    let sample_key = crate::model::PublicKey::from_base64(template::SAMPLE_PEER_KEY)?;
    ctx.peer_labels
        .entry(sample_key)
        .or_insert_with(template::sample_label);
    let host = daemon::host_name(cfg);
    let mut failed = 0usize;
    for hook in &hooks {
        let sample = template::sample_event(event, &host, Utc::now())
            .ok_or_else(|| anyhow::anyhow!("unknown event {event:?}"))?;
        let sender = HttpSender::new(hook, ctx.clone())?;
        let mut title = hook.name.clone();
        if let Some(d) = sender.description() {
            title.push_str(&format!(" ({d})"));
        }
        if !hook.events.matches_name(event) {
            println!("{title}: note: its events filter does not take {event}; sending anyway");
        }
        let target = match sender.prepare(&sample) {
            // Scheme, host and port only: paths and queries may hold tokens.
            Ok(p) => format!("{} {}", p.method, p.url.origin().ascii_serialization()),
            Err(_) => String::new(),
        };
        let attempt = sender.send(&sample, Utc::now()).await;
        let ms = attempt.elapsed.as_millis();
        match &attempt.result {
            AttemptResult::Status { code, body, .. } => {
                let verdict = if attempt.delivered() { "ok" } else { "FAILED" };
                println!(
                    "{title}: {verdict}: {target} -> HTTP {code} in {ms} ms: {}",
                    first_bytes(body)
                );
            }
            AttemptResult::Failed(reason) | AttemptResult::Invalid(reason) => {
                println!("{title}: FAILED: {target} after {ms} ms: {reason}");
            }
        }
        if !attempt.delivered() {
            failed += 1;
        }
    }
    println!(
        "{} webhook{} tested with a sample {event}, {failed} failed",
        hooks.len(),
        if hooks.len() == 1 { "" } else { "s" }
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The first 200 characters of an answer, on one line.
fn first_bytes(body: &str) -> String {
    if body.trim().is_empty() {
        return "(empty answer)".into();
    }
    let line: String = body
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line,
    }
}

/// `wghook outbox`: list, re-queue or purge. Exit 1 when an action is
/// refused (purge without `--yes`, an unknown webhook or event id). The
/// database is never created here: without one there is nothing to show.
fn outbox(cfg: &Config, json: bool, action: Option<OutboxAction>) -> anyhow::Result<ExitCode> {
    use crate::outbox::{Store, DB_FILE};
    let db = cfg.monitor.state_dir.join(DB_FILE);
    let store = if db.exists() {
        Some(Store::open(&cfg.monitor.state_dir)?)
    } else {
        None
    };
    let no_outbox = || {
        format!(
            "no outbox yet: {} does not exist (the daemon creates it when it starts)",
            db.display()
        )
    };
    // The outbox's rows (of one webhook); none without a database.
    let list = |webhook: Option<&str>| match &store {
        Some(store) => store.list(webhook),
        None => Ok(Vec::new()),
    };
    match action {
        None => {
            let rows = list(None)?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else if store.is_none() {
                writeln!(out, "{}", no_outbox())?;
            } else if rows.is_empty() {
                writeln!(out, "the outbox is empty: every event was delivered")?;
            } else {
                writeln!(
                    out,
                    "{:<12} {:<9} {:<36} {:<17} {:>8}  LAST",
                    "WEBHOOK", "STATE", "ID", "EVENT", "ATTEMPTS"
                )?;
                for r in &rows {
                    let last = match (&r.last_status, &r.last_error) {
                        (_, Some(e)) => e.clone(),
                        (Some(s), None) => format!("HTTP {s}"),
                        (None, None) => "-".into(),
                    };
                    writeln!(
                        out,
                        "{:<12} {:<9} {:<36} {:<17} {:>8}  {last}",
                        r.webhook, r.state, r.id, r.event, r.attempts
                    )?;
                }
            }
            if let (false, Some(store)) = (json, &store) {
                let n = store.quarantined_count()?;
                if n > 0 {
                    writeln!(
                        out,
                        "{n} unreadable row{} moved aside: see the quarantine table of {}",
                        if n == 1 { " was" } else { "s were" },
                        store.path().display()
                    )?;
                }
            }
        }
        Some(OutboxAction::Retry { webhook, ids }) => {
            // Only what the arguments name needs checking.
            let rows = if webhook.is_some() || !ids.is_empty() {
                list(webhook.as_deref())?
            } else {
                Vec::new()
            };
            let problems = retry_problems(cfg, &rows, webhook.as_deref(), &ids);
            if !problems.is_empty() {
                for p in &problems {
                    print_error(p);
                }
                return Ok(ExitCode::FAILURE);
            }
            let n = match store {
                Some(mut store) => store.requeue(webhook.as_deref(), &ids, Utc::now())?,
                None => 0,
            };
            println!(
                "{n} given-up deliver{} re-queued",
                if n == 1 { "y" } else { "ies" }
            );
        }
        Some(OutboxAction::Purge { yes }) => {
            if !yes {
                print_error("purge deletes every undelivered event; add --yes to confirm");
                return Ok(ExitCode::FAILURE);
            }
            let n = match store {
                Some(mut store) => store.purge()?,
                None => 0,
            };
            println!("{n} deliver{} deleted", if n == 1 { "y" } else { "ies" });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Why `outbox retry` refuses: a webhook neither configured nor in the
/// outbox, ids without a given-up delivery (of that webhook). `rows` are the
/// outbox's rows of `webhook` (all rows without one). Empty: go on.
fn retry_problems(
    cfg: &Config,
    rows: &[crate::outbox::Listed],
    webhook: Option<&str>,
    ids: &[String],
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(name) = webhook {
        let known = cfg.webhooks.iter().any(|h| h.name == name) || !rows.is_empty();
        if !known {
            let names: Vec<&str> = cfg.webhooks.iter().map(|h| h.name.as_str()).collect();
            problems.push(format!(
                "no webhook named {name:?} in {} or its outbox (configured: {})",
                cfg.path.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
            return problems;
        }
    }
    for id in ids {
        let found = rows.iter().any(|r| r.id == *id && r.state == "given_up");
        if !found {
            let of = webhook
                .map(|w| format!(" of webhook {w:?}"))
                .unwrap_or_default();
            problems.push(format!(
                "no given-up delivery with id {id:?}{of} (see wghook outbox); nothing was re-queued"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(42), "42s");
        assert_eq!(age(185), "3m05s");
        assert_eq!(age(7620), "2h07m");
    }

    #[test]
    fn error_lines_carry_the_journal_priority_only_for_the_journal() {
        assert_eq!(
            error_text("a.yaml:2: webhook.url: bad\nsecond line", true),
            "<3>error: a.yaml:2: webhook.url: bad\n<3>second line\n"
        );
        assert_eq!(
            error_text("a.yaml:2: webhook.url: bad\nsecond line", false),
            "error: a.yaml:2: webhook.url: bad\nsecond line\n"
        );
        assert_eq!(
            error_line("2 errors in a.yaml", true),
            "<3>2 errors in a.yaml\n"
        );
        assert_eq!(error_line("", true), "<3>\n");
    }

    /// Regression (audit): `wghook outbox retry -c FILE` was refused.
    #[test]
    fn the_config_flag_goes_before_or_after_any_command() {
        for args in [
            &["wghook", "outbox", "retry", "-c", "f.yaml"][..],
            &["wghook", "outbox", "-c", "f.yaml", "retry"],
            &["wghook", "-c", "f.yaml", "outbox", "purge", "--yes"],
            &["wghook", "check", "--config", "f.yaml"],
            &["wghook", "peers", "--json", "-c", "f.yaml"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.config, Path::new("f.yaml"), "{args:?}");
        }
        let cli = Cli::try_parse_from(["wghook", "run"]).unwrap();
        assert_eq!(cli.config, Path::new(config::DEFAULT_PATH));
    }

    #[test]
    fn the_peer_table_shows_user_and_ping_only_with_ping_checks() {
        let labels = std::collections::BTreeMap::new();
        let (key, ips) = (crate::model::PublicKey([7; 32]), Default::default());
        let row = |pingable| PeerRow {
            public_key: &key,
            name: "laptop",
            user: "alice@example.com",
            labels: &labels,
            connected: true,
            pingable,
            last_handshake: None,
            handshake_age_seconds: Some(42),
            endpoint: None,
            allowed_ips: &ips,
            rx_bytes: 1,
            tx_bytes: 2,
        };
        let table = peer_table(&[row(None)], false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "PEER",
                "NAME",
                "USER",
                "STATE",
                "HANDSHAKE",
                "ENDPOINT",
                "RX",
                "TX"
            ]
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells[1..4], ["laptop", "alice@example.com", "connected"]);

        let table = peer_table(&[row(Some(true)), row(Some(false))], true);
        let lines: Vec<&str> = table.lines().collect();
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(header[3..6], ["STATE", "PING", "HANDSHAKE"]);
        let ping = |line: &str| line.split_whitespace().nth(4).map(str::to_string);
        assert_eq!(ping(lines[1]).as_deref(), Some("yes"));
        assert_eq!(ping(lines[2]).as_deref(), Some("no"));
    }

    #[test]
    fn printable_escapes_what_can_drive_a_terminal_and_keeps_the_rest() {
        assert!(matches!(
            printable("alice-laptop"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(printable("Zoë 🚀 東京"), "Zoë 🚀 東京");
        assert_eq!(
            printable("a\x1b[2Jb\u{9b}31mc\td\ne\x7ff\u{202e}g\u{2066}"),
            "a\\u{1b}[2Jb\\u{9b}31mc\\u{9}d\\u{a}e\\u{7f}f\\u{202e}g\\u{2066}"
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn log_flags_are_global_and_typed() {
        let cli = Cli::try_parse_from([
            "wghook",
            "check",
            "--log-format",
            "json",
            "--log-level",
            "wghook=debug",
        ])
        .unwrap();
        assert_eq!(cli.log_format, Some(LogFormat::Json));
        assert_eq!(cli.log_level.as_deref(), Some("wghook=debug"));
        assert!(Cli::try_parse_from(["wghook", "--log-format", "syslog", "check"]).is_err());
    }

    #[test]
    fn completions_name_every_command() {
        let mut out = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "wghook",
            &mut out,
        );
        let script = String::from_utf8(out).unwrap();
        for word in [
            "run",
            "check",
            "peers",
            "completions",
            "man",
            "--log-format",
        ] {
            assert!(script.contains(word), "bash completion lacks {word}");
        }
    }

    #[test]
    fn man_page_is_roff_with_commands_options_and_files() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(page.contains(".TH wghook 1"), "{page}");
        for needle in [
            ".SH NAME",
            ".SH SYNOPSIS",
            "log\\-format",
            ".SH COMMANDS",
            ".SS \"wghook peers\"",
            "json",
            ".SH FILES",
            "/etc/wghook/wghook.yaml",
            ".SH SIGNALS",
            ".SH \"EXIT STATUS\"",
        ] {
            assert!(page.contains(needle), "man page lacks {needle}:\n{page}");
        }
    }
}
