//! The command line: clap definitions and each command's output.
//!
//! This is the only module (with `demo`) that prints to stdout; everything it
//! runs lives in the library. Exit codes: 0 success, 1 runtime failure,
//! 2 invalid configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, TimeDelta, Utc};
use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::config::{self, Config};
use crate::daemon::{self, RunOptions};
use crate::event::PeerLabel;
use crate::model::{Interface, Peer};
use crate::tracker;

/// wghook: WireGuard peer events as webhooks.
#[derive(Debug, Parser)]
#[command(name = "wghook", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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
    }
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
    let rows: Vec<InterfaceRow> = snapshot
        .interfaces
        .iter()
        .map(|i| interface_row(i, now, threshold, &cfg.peers, &no_label))
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
) -> InterfaceRow<'a> {
    let peer_row = |p: &'a Peer| {
        let label = labels.get(&p.public_key).unwrap_or(no_label);
        PeerRow {
            public_key: p.public_key.to_base64(),
            name: &label.name,
            user: &label.user,
            connected: tracker::is_connected(p.last_handshake, now, threshold),
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
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
