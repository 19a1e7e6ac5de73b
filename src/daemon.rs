//! The daemon: poll, track, deliver, until told to stop.
//!
//! [`run`] owns the loop. Each tick reads a snapshot from the backend, passes
//! it with the previous tracker state to [`tracker::track`], logs the events
//! and hands them to [`Delivery`], which never blocks the loop. A failed poll
//! is logged and skipped; the tracker state is untouched by it, so a transient
//! error never looks like peers vanishing. Shutdown is a future passed in, so
//! tests and the demo can stop the daemon the way a signal does.

use std::future::Future;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::MissedTickBehavior;

use crate::backend::auto::AutoBackend;
use crate::backend::netlink::KernelBackend;
use crate::backend::sim::{Scenario, SimBackend};
use crate::backend::uapi::UapiBackend;
use crate::backend::Backend;
use crate::config::{BackendKind, Config};
use crate::delivery::http::HttpSender;
use crate::delivery::outbox::Store;
use crate::delivery::Delivery;
use crate::event::{Event, RenderContext};
use crate::tracker::{self, State};

/// Where `now` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// The wall clock (production).
    #[default]
    System,
    /// Starts at `start` and advances by `step` per poll, whatever the real
    /// time: lets the demo show minutes of WireGuard life in seconds.
    Virtual {
        start: DateTime<Utc>,
        step: TimeDelta,
    },
}

/// Knobs for [`run`] that are not configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub clock: Clock,
    /// Stop by itself after this many polls (the demo).
    pub max_polls: Option<u64>,
}

/// The host name stamped on events: configured, else the kernel's.
pub fn host_name(config: &Config) -> String {
    if let Some(host) = &config.monitor.host {
        return host.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Builds the configured backend; fails with a message naming what is
/// missing (kernel module, CAP_NET_ADMIN, scenario file).
pub async fn build_backend(config: &Config) -> anyhow::Result<Box<dyn Backend>> {
    let m = &config.monitor;
    let uapi = || UapiBackend::new(m.uapi_dirs.clone(), m.uapi_timeout);
    Ok(match m.backend {
        BackendKind::Userspace => Box::new(uapi()),
        BackendKind::Kernel => Box::new(KernelBackend::connect().await?),
        BackendKind::Auto => Box::new(AutoBackend::new(uapi()).await),
        BackendKind::Simulated => {
            let path = m
                .scenario
                .as_deref()
                .context("monitor.backend is simulated but monitor.scenario is not set")?;
            Box::new(SimBackend::new(Scenario::load(path)?))
        }
    })
}

/// The context every webhook renders with (names from the configuration).
pub fn render_context(config: &Config) -> RenderContext {
    RenderContext {
        peer_labels: config.peers.clone(),
        ..RenderContext::default()
    }
}

/// Runs the daemon until `shutdown` resolves (or `max_polls` is reached).
pub async fn run(
    config: Config,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let backend = build_backend(&config).await?;
    run_with_backend(config, backend, options, shutdown).await
}

/// [`run`] with a backend built by the caller (tests inject their own).
pub async fn run_with_backend(
    config: Config,
    mut backend: Box<dyn Backend>,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let host = host_name(&config);
    let settings = config.tracker_settings(host.clone());
    let filter = config.filter();
    let ctx = render_context(&config);
    let senders = config
        .webhooks
        .iter()
        .map(|hook| HttpSender::new(hook, ctx.clone()).map(|s| (hook.clone(), s)))
        .collect::<Result<Vec<_>, _>>()?;
    let store = Store::open(&config.monitor.state_dir)?;
    let saved = store.load_state()?;
    let store = Arc::new(Mutex::new(store));
    let delivery = Delivery::start(Arc::clone(&store), senders, &config.delivery)?;
    if delivery.webhook_count() == 0 {
        tracing::warn!("no webhook configured: events are only logged");
    }
    tracing::info!(
        backend = backend.name(),
        host = %host,
        interval_ms = config.monitor.interval.as_millis() as u64,
        connect_threshold_s = config.monitor.connect_threshold.as_secs(),
        webhooks = delivery.webhook_count(),
        "wghook started"
    );

    let mut ticker = tokio::time::interval(config.monitor.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    if let Some(saved) = &saved {
        tracing::info!(
            peers = saved.peer_count(),
            connected = saved.connected_count(),
            "restored the tracker state saved by the previous run; changes since then are reported once"
        );
    }
    let mut state: Option<State> = saved;
    let mut polls: u64 = 0;
    loop {
        if options.max_polls.is_some_and(|max| polls >= max) {
            break;
        }
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = ticker.tick() => {}
        }
        let now = match options.clock {
            Clock::System => Utc::now(),
            Clock::Virtual { start, step } => start + step * (polls as i32),
        };
        polls += 1;
        let snapshot = match backend.poll(now, &filter).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::warn!(backend = backend.name(), error = %e, "poll failed; skipping it");
                continue;
            }
        };
        let first = polls == 1;
        let tracker::Tracked {
            state: next,
            events,
            changes,
        } = tracker::track_changes(state.take(), &snapshot, now, &settings);
        if first {
            tracing::info!(
                interfaces = snapshot.interfaces.len(),
                peers = snapshot.peer_count(),
                connected = next.connected_count(),
                "first poll done"
            );
        }
        for event in &events {
            log_event(event);
        }
        if let Err(e) = delivery.commit(events, &next, &changes) {
            // Without a durable outbox nothing can be promised: stop, and let
            // the service manager restart us (the saved state is the last
            // committed poll, so nothing is missed).
            delivery.shutdown().await;
            return Err(anyhow::Error::new(e).context("cannot write to the outbox"));
        }
        state = Some(next);
    }
    if options.max_polls.is_some() {
        tracing::info!(polls, "done: delivering what is queued");
        delivery.drain(config.delivery.shutdown_timeout).await;
    } else {
        tracing::info!(polls, "stopping: finishing in-flight deliveries");
        delivery.shutdown().await;
    }
    Ok(())
}

fn log_event(event: &Event) {
    let peer = event
        .peer
        .as_ref()
        .map(|p| p.peer.public_key.to_base64())
        .unwrap_or_default();
    tracing::info!(
        event = %event.filter_name(),
        interface = %event.interface.name,
        peer = %peer,
        event_id = %event.id,
        "event"
    );
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            // Signal handlers could not be installed; Ctrl-C is the best we can do.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
