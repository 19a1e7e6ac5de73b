//! `wghook demo`: the whole pipeline on a simulated host, delivering to a
//! receiver built into the same process, which prints what it gets.
//!
//! The demo uses the real code paths: the embedded scenario is written to a
//! temporary file and loaded like `monitor.scenario`, the configuration goes
//! through the normal parser, and webhooks travel over real HTTP on
//! 127.0.0.1. Only the clock is virtual (15 s of WireGuard time per poll), so
//! ten minutes of a VPN host's life take a few seconds. This module is CLI
//! output code: it prints to stdout.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use chrono::{TimeDelta, Utc};
use tokio::net::TcpListener;

use crate::backend::sim::{key_for, Scenario};
use crate::config;
use crate::daemon::{self, Clock, RunOptions};
use crate::event::PeerLabel;

/// The scenario the demo plays (also shipped as `config/demo-scenario.yaml`).
pub const SCENARIO: &str = include_str!("../config/demo-scenario.yaml");

/// Simulated time per poll.
const STEP: TimeDelta = TimeDelta::seconds(15);
/// Real time per poll.
const INTERVAL: &str = "250ms";
/// The secret the demo webhook sends; the receiver checks it arrived verbatim.
const DEMO_SECRET: &str = "Bearer demo-secret";

/// What the built-in receiver has seen.
#[derive(Default)]
struct Received {
    count: usize,
    by_event: std::collections::BTreeMap<String, usize>,
    bad_auth: usize,
}

/// Runs the demo to the end; returns the number of webhooks received.
pub async fn run() -> anyhow::Result<usize> {
    let scenario = Scenario::parse(SCENARIO, "built-in demo scenario")?;
    let dir = std::env::temp_dir().join(format!("wghook-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let scenario_path = dir.join("scenario.yaml");
    std::fs::write(&scenario_path, SCENARIO)
        .with_context(|| format!("cannot write {}", scenario_path.display()))?;
    let result = run_in(&scenario, &scenario_path).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(scenario: &Scenario, scenario_path: &Path) -> anyhow::Result<usize> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot open the demo receiver on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let received = Arc::new(Mutex::new(Received::default()));
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(Arc::clone(&received));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });

    let text = format!(
        "webhook:\n  url: http://{addr}/wg-webhook\n  secret: \"{DEMO_SECRET}\"\n  timeout: 5s\n\
         monitor:\n  interval: {INTERVAL}\n  backend: simulated\n  scenario: {}\n  \
         announce_on_start: all\n  host: demo-host\n",
        scenario_path.display()
    );
    let mut cfg = config::parse_str(&text, Path::new("<demo>"))?;
    for (peer, user) in [
        ("alice", "alice"),
        ("bob", "bob"),
        ("carol", "carol"),
        ("dave", "dave"),
    ] {
        cfg.peers.insert(
            key_for(peer),
            PeerLabel {
                name: format!("{peer}-laptop"),
                user: user.to_string(),
                ..PeerLabel::default()
            },
        );
    }
    // The demo's outbox lives (and dies) with its temporary directory.
    if let Some(dir) = scenario_path.parent() {
        cfg.monitor.state_dir = dir.join("state");
    }
    let threshold = TimeDelta::from_std(cfg.monitor.connect_threshold)?;
    // Play every step, then two more polls so the last changes are seen.
    let polls = (scenario.duration().num_seconds() / STEP.num_seconds()) as u64 + 3;
    println!(
        "wghook demo: simulated host with {} scenario steps over {} min of WireGuard time \
         (one poll = {} s, connect threshold {} s), webhooks to http://{addr}/wg-webhook\n",
        scenario.steps.len(),
        scenario.duration().num_minutes(),
        STEP.num_seconds(),
        threshold.num_seconds()
    );
    let options = RunOptions {
        clock: Clock::Virtual {
            start: Utc::now(),
            step: STEP,
        },
        max_polls: Some(polls),
        default_log_level: Some("warn"),
    };
    daemon::run(cfg, options, std::future::pending()).await?;

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .context("demo receiver did not stop")???;
    let seen = received
        .lock()
        .map_err(|_| anyhow::anyhow!("receiver state poisoned"))?;
    println!("\ndemo finished: {} webhooks received", seen.count);
    for (event, n) in &seen.by_event {
        println!("  {event:<20} {n}");
    }
    if seen.bad_auth > 0 {
        anyhow::bail!(
            "{} webhooks arrived without the configured secret",
            seen.bad_auth
        );
    }
    Ok(seen.count)
}

/// The built-in receiver: prints each webhook and answers 204.
async fn receive(
    State(received): State<Arc<Mutex<Received>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let auth_ok = header("authorization") == DEMO_SECRET;
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let kind = format!(
        "{}.{}",
        parsed["entity"].as_str().unwrap_or("?"),
        parsed["event"].as_str().unwrap_or("?")
    );
    let n = {
        let Ok(mut seen) = received.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR;
        };
        seen.count += 1;
        *seen.by_event.entry(kind.clone()).or_default() += 1;
        if !auth_ok {
            seen.bad_auth += 1;
        }
        seen.count
    };
    println!(
        "#{n} {method} {uri}  {kind}  webhook-id={} authorization={}",
        header("webhook-id"),
        if auth_ok { "ok" } else { "MISSING OR WRONG" }
    );
    println!("   {}", String::from_utf8_lossy(&body));
    StatusCode::NO_CONTENT
}
