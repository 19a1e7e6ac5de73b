//! The command line: clap definitions and each command's output.
//!
//! This is the only module (with `demo`) that prints to stdout; everything it
//! runs lives in the library. Exit codes: 0 success, 1 runtime failure,
//! 2 invalid configuration.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, TimeDelta, Utc};
use clap::{CommandFactory as _, Parser, Subcommand};
use serde::Serialize;

use crate::config::{self, Config};
use crate::daemon::{self, RunOptions};
use crate::event::PeerLabel;
use crate::logging::LogFormat;
use crate::model::{Interface, Peer};
use crate::tracker;

/// wghook: WireGuard peer events as webhooks.
#[derive(Debug, Parser)]
#[command(name = "wghook", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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
    Run(ConfigArg),
    /// Validate the configuration file; print every error and exit non-zero if any.
    Check(ConfigArg),
    /// Poll once and show interfaces and peers with their connected state.
    Peers {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Play a built-in scenario on a simulated host, delivering to a built-in receiver.
    Demo,
    /// List undelivered events (pending and given up) per webhook; re-queue or purge them.
    Outbox {
        #[command(flatten)]
        config: ConfigArg,
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
        #[command(flatten)]
        config: ConfigArg,
        /// Only this webhook (by name; `default` for a `webhook:` section).
        #[arg(long, value_name = "NAME")]
        webhook: Option<String>,
        /// The sample event to send.
        #[arg(long, value_name = "EVENT", default_value = "peer.connect",
              value_parser = clap::builder::PossibleValuesParser::new(config::EVENT_NAMES))]
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
}

/// What `wghook outbox` does besides listing.
#[derive(Debug, Subcommand)]
pub enum OutboxAction {
    /// Put given-up events back in the queue: all of them, one webhook's, or
    /// the given event ids. A running daemon sends them after its next restart.
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

/// `-c FILE`, shared by the commands that read the configuration.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(short, long, value_name = "FILE", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
}

/// Runs the parsed command line.
pub async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(arg) => {
            let Some(cfg) = load(&arg)? else {
                return Ok(ExitCode::from(2));
            };
            daemon::run(cfg, RunOptions::default(), daemon::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(arg) => Ok(match load(&arg)? {
            Some(cfg) => {
                println!(
                    "{}: ok ({} webhook{}, backend {:?}, poll every {:?}, connect threshold {:?})",
                    cfg.path.display(),
                    cfg.webhooks.len(),
                    if cfg.webhooks.len() == 1 { "" } else { "s" },
                    cfg.monitor.backend,
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
        Command::Peers { config, json } => {
            let Some(cfg) = load(&config)? else {
                return Ok(ExitCode::from(2));
            };
            peers(&cfg, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            crate::demo::run().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Outbox {
            config,
            json,
            action,
        } => {
            let Some(cfg) = load(&config)? else {
                return Ok(ExitCode::from(2));
            };
            outbox(&cfg, json, action)
        }
        Command::Test {
            config,
            webhook,
            event,
        } => {
            let Some(cfg) = load(&config)? else {
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
fn load(arg: &ConfigArg) -> anyhow::Result<Option<Config>> {
    match config::load(&arg.config) {
        Ok(cfg) => Ok(Some(cfg)),
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            eprintln!(
                "{} error{} in {}",
                errors.0.len(),
                if errors.0.len() == 1 { "" } else { "s" },
                arg.config.display()
            );
            Ok(None)
        }
    }
}

/// One row of `wghook peers --json`.
#[derive(Debug, Serialize)]
struct PeerRow<'a> {
    public_key: String,
    name: &'a str,
    user: &'a str,
    connected: bool,
    /// The ping check's answer; absent when ping checks are off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pingable: Option<bool>,
    last_handshake: Option<DateTime<Utc>>,
    handshake_age_seconds: Option<i64>,
    endpoint: Option<String>,
    allowed_ips: Vec<String>,
    rx_bytes: u64,
    tx_bytes: u64,
}

/// One interface of `wghook peers --json`.
#[derive(Debug, Serialize)]
struct InterfaceRow<'a> {
    name: &'a str,
    backend: &'static str,
    public_key: Option<String>,
    listen_port: u16,
    peers: Vec<PeerRow<'a>>,
}

async fn peers(cfg: &Config, json: bool) -> anyhow::Result<()> {
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
    let rows: Vec<InterfaceRow> = snapshot
        .interfaces
        .iter()
        .map(|i| {
            let ping = pings.as_ref().map(|p| p.get(&i.name));
            interface_row(i, now, threshold, &cfg.peers, &no_label, ping)
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for name in &snapshot.unreadable {
        println!("interface {name}: could not be read (see the log)");
    }
    if rows.is_empty() {
        println!("no WireGuard interface found (backend {})", backend.name());
    }
    for iface in &rows {
        println!(
            "interface {} ({}, port {}, key {})",
            iface.name,
            iface.backend,
            iface.listen_port,
            iface.public_key.as_deref().unwrap_or("none")
        );
        if iface.peers.is_empty() {
            println!("  (no peers)\n");
            continue;
        }
        println!(
            "  {:<44}  {:<16}  {:<9}  {:>9}  {:<24}  {:>12}  {:>12}",
            "PEER", "NAME", "STATE", "HANDSHAKE", "ENDPOINT", "RX", "TX"
        );
        for p in &iface.peers {
            println!(
                "  {:<44}  {:<16}  {:<9}  {:>9}  {:<24}  {:>12}  {:>12}",
                p.public_key,
                if p.name.is_empty() { "-" } else { p.name },
                if p.connected { "connected" } else { "-" },
                p.handshake_age_seconds.map_or("never".to_string(), age),
                p.endpoint.as_deref().unwrap_or("-"),
                p.rx_bytes,
                p.tx_bytes
            );
        }
        println!();
    }
    Ok(())
}

fn interface_row<'a>(
    iface: &'a Interface,
    now: DateTime<Utc>,
    threshold: TimeDelta,
    labels: &'a std::collections::HashMap<crate::model::PublicKey, PeerLabel>,
    no_label: &'a PeerLabel,
    pings: Option<
        Option<&std::collections::HashMap<crate::model::PublicKey, crate::model::PingStatus>>,
    >,
) -> InterfaceRow<'a> {
    let peer_row = |p: &'a Peer| {
        let label = labels.get(&p.public_key).unwrap_or(no_label);
        let pingable = pings.map(|iface| {
            iface
                .and_then(|m| m.get(&p.public_key))
                .is_some_and(|s| s.pingable)
        });
        PeerRow {
            public_key: p.public_key.to_base64(),
            name: &label.name,
            user: &label.user,
            connected: tracker::is_connected(p.last_handshake, now, threshold)
                || pingable == Some(true),
            pingable,
            last_handshake: p.last_handshake,
            handshake_age_seconds: p.last_handshake.map(|h| (now - h).num_seconds().max(0)),
            endpoint: p.endpoint.map(|e| e.to_string()),
            allowed_ips: p.allowed_ips.iter().map(|n| n.to_string()).collect(),
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
        }
    };
    InterfaceRow {
        name: &iface.name,
        backend: iface.driver.as_str(),
        public_key: iface.public_key.map(|k| k.to_base64()),
        listen_port: iface.listen_port,
        peers: iface.peers.iter().map(peer_row).collect(),
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

    let hooks: Vec<&config::Webhook> = cfg
        .webhooks
        .iter()
        .filter(|h| only.is_none_or(|name| h.name == name))
        .collect();
    if hooks.is_empty() {
        let names: Vec<&str> = cfg.webhooks.iter().map(|h| h.name.as_str()).collect();
        match only {
            Some(name) if !names.is_empty() => eprintln!(
                "error: no webhook named {name:?} in {} (configured: {})",
                cfg.path.display(),
                names.join(", ")
            ),
            _ => eprintln!("error: no webhook is configured in {}", cfg.path.display()),
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
        if !config::event_matches(&hook.events, event) {
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
            AttemptResult::Failed(reason) => {
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

/// `wghook outbox`: list, re-queue or purge.
fn outbox(cfg: &Config, json: bool, action: Option<OutboxAction>) -> anyhow::Result<ExitCode> {
    use crate::delivery::outbox::Store;
    let mut store = Store::open(&cfg.monitor.state_dir)?;
    match action {
        None => {
            let rows = store.list(None)?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
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
        }
        Some(OutboxAction::Retry { webhook, ids }) => {
            let n = store.requeue(webhook.as_deref(), &ids, Utc::now())?;
            println!(
                "{n} given-up deliver{} re-queued",
                if n == 1 { "y" } else { "ies" }
            );
        }
        Some(OutboxAction::Purge { yes }) => {
            if !yes {
                eprintln!("error: purge deletes every undelivered event; add --yes to confirm");
                return Ok(ExitCode::from(2));
            }
            let n = store.purge()?;
            println!("{n} deliver{} deleted", if n == 1 { "y" } else { "ies" });
        }
    }
    Ok(ExitCode::SUCCESS)
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
