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
use crate::metrics::Metrics;
use crate::notify::{watchdog_interval, Notifier};
use crate::ping::Pinger;
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
///
/// SIGHUP reloads the configuration: an invalid file is logged and the old
/// configuration kept; a valid one is applied (webhooks, filters, interval,
/// thresholds, backend) without losing the tracker state or pending events.
pub async fn run_with_backend(
    mut config: Config,
    mut backend: Box<dyn Backend>,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let _ = crate::logging::apply_config(config.log.level.as_deref(), config.log.format, "info");
    let host = host_name(&config);
    let mut settings = config.tracker_settings(host.clone());
    let mut filter = config.filter();
    let mut pinger = start_pinger(&config)?;

    let store = Store::open(&config.monitor.state_dir)?;
    let saved = store.load_state()?;
    let store = Arc::new(Mutex::new(store));

    let metrics = config
        .metrics
        .listen
        .map(|listen| (listen, Metrics::new(config.metrics.per_peer_metrics)));
    let (metrics_stop, metrics_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut metrics_task = None;
    if let Some((listen, m)) = &metrics {
        // Bind now, so a bad address fails the start rather than a task.
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} for metrics (metrics.listen)"))?;
        let m = m.clone();
        metrics_task = Some(tokio::spawn(async move {
            let stop = async {
                let _ = metrics_stop_rx.await;
            };
            if let Err(e) = crate::metrics::serve_listener(listener, m, stop).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        }));
    }
    let metrics = metrics.map(|(_, m)| m);

    let mut delivery = start_delivery(&config, &store, metrics.clone())?;
    if delivery.webhook_count() == 0 {
        tracing::warn!("no webhook configured: events are only logged");
    }
    tracing::info!(
        backend = backend.name(),
        host = %host,
        interval_ms = config.monitor.interval.as_millis() as u64,
        connect_threshold_s = config.monitor.connect_threshold.as_secs(),
        webhooks = delivery.webhook_count(),
        state = %config.monitor.state_dir.display(),
        "wghook started"
    );
    if let Some(saved) = &saved {
        tracing::info!(
            peers = saved.peer_count(),
            connected = saved.connected_count(),
            "restored the tracker state saved by the previous run; changes since then are reported once"
        );
    }

    let notifier = Notifier::from_env();
    let mut watchdog = watchdog_interval().map(|every| {
        // Already half of WATCHDOG_USEC, as systemd recommends.
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();

    let mut ticker = tokio::time::interval(config.monitor.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut state: Option<State> = saved;
    let mut polls: u64 = 0;
    let mut ready = false;
    loop {
        if options.max_polls.is_some_and(|max| polls >= max) {
            break;
        }
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(()) = recv_opt(&mut hangup) => {
                if let Some(n) = &notifier {
                    n.reloading();
                }
                match crate::config::load(&config.path) {
                    Err(errors) => {
                        tracing::error!(file = %config.path.display(), "reload failed; keeping the running configuration:\n{errors}");
                    }
                    Ok(new) => {
                        let _ = crate::logging::apply_config(new.log.level.as_deref(), new.log.format, "info");
                        if new.monitor.backend != config.monitor.backend
                            || new.monitor.scenario != config.monitor.scenario
                            || new.monitor.uapi_dirs != config.monitor.uapi_dirs
                            || new.monitor.uapi_timeout != config.monitor.uapi_timeout
                        {
                            match build_backend(&new).await {
                                Ok(b) => backend = b,
                                Err(e) => {
                                    tracing::error!(error = %format!("{e:#}"), "reload failed: the new backend cannot start; keeping the running configuration");
                                    if let Some(n) = &notifier { n.ready(); }
                                    continue;
                                }
                            }
                        }
                        if new.monitor.state_dir != config.monitor.state_dir || new.metrics != config.metrics {
                            tracing::warn!("monitor.state_dir and metrics changes take effect at the next restart");
                        }
                        // Pending events stay in the outbox; the new
                        // delivery picks them up (and re-enables webhooks
                        // disabled by a 410, and re-queued dead letters).
                        let placeholder = Delivery::start(Arc::clone(&store), Vec::new(), &config.delivery, None)?;
                        std::mem::replace(&mut delivery, placeholder).shutdown().await;
                        delivery = match start_delivery(&new, &store, metrics.clone()) {
                            Ok(d) => d,
                            Err(e) => {
                                tracing::error!(error = %format!("{e:#}"), "reload failed: cannot start the new webhooks; keeping the running configuration");
                                delivery = start_delivery(&config, &store, metrics.clone())?;
                                if let Some(n) = &notifier { n.ready(); }
                                continue;
                            }
                        };
                        if let Some(m) = &metrics {
                            for hook in &config.webhooks {
                                if !new.webhooks.iter().any(|h| h.name == hook.name) {
                                    m.forget_webhook(&hook.name);
                                }
                            }
                        }
                        if new.monitor.interval != config.monitor.interval {
                            ticker = tokio::time::interval(new.monitor.interval);
                            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
                        }
                        match (&mut pinger, new.monitor.ping_checks) {
                            (Some(p), true) => p.set_interval(new.monitor.ping_interval),
                            (Some(_), false) => pinger = None,
                            (None, true) => {
                                pinger = start_pinger(&new).unwrap_or_else(|e| {
                                    tracing::error!(error = %format!("{e:#}"), "ping checks stay off");
                                    None
                                });
                            }
                            (None, false) => {}
                        }
                        let host = host_name(&new);
                        settings = new.tracker_settings(host);
                        filter = new.filter();
                        config = new;
                        tracing::info!(
                            webhooks = delivery.webhook_count(),
                            interval_ms = config.monitor.interval.as_millis() as u64,
                            "configuration reloaded"
                        );
                    }
                }
                if let Some(n) = &notifier {
                    n.ready();
                }
                continue;
            }
            _ = tick_opt(&mut watchdog) => {
                if let Some(n) = &notifier {
                    n.watchdog();
                }
                continue;
            }
            _ = ticker.tick() => {}
        }
        let now = match options.clock {
            Clock::System => Utc::now(),
            Clock::Virtual { start, step } => start + step * (polls as i32),
        };
        polls += 1;
        let started = std::time::Instant::now();
        let snapshot = match backend.poll(now, &filter).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::warn!(backend = backend.name(), error = %e, "poll failed; skipping it");
                if let Some(m) = &metrics {
                    m.poll_error();
                }
                continue;
            }
        };
        let tracker::Tracked {
            state: next,
            events,
            changes,
        } = match pinger.as_mut() {
            Some(p) => {
                let pings = p.refresh(&snapshot, &config.ping_addresses, now).await;
                tracker::track_changes_with_pings(
                    state.take(),
                    &snapshot,
                    Some(pings),
                    now,
                    &settings,
                )
            }
            None => tracker::track_changes(state.take(), &snapshot, now, &settings),
        };
        if polls == 1 {
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
        if let Some(m) = &metrics {
            m.events(&events);
        }
        if let Err(e) = delivery.commit(events, &next, &changes) {
            // Without a durable outbox nothing can be promised: stop, and let
            // the service manager restart us (the saved state is the last
            // committed poll, so nothing is missed).
            delivery.shutdown().await;
            let _ = metrics_stop.send(());
            return Err(anyhow::Error::new(e).context("cannot write to the outbox"));
        }
        let queues = delivery.queues();
        if let Some(m) = &metrics {
            m.observe_poll(started.elapsed(), &snapshot, &next, &config.peers);
            let now = Utc::now();
            for q in &queues {
                let age = q.oldest.and_then(|t| (now - t).to_std().ok());
                m.set_queue(&q.webhook, q.pending, q.given_up, age);
            }
        }
        if let Some(n) = &notifier {
            if !ready {
                n.ready();
                ready = true;
            }
            let pending: u64 = queues.iter().map(|q| q.pending).sum();
            n.status(&format!(
                "watching {} interface{}, {} peers ({} connected), {} pending",
                snapshot.interfaces.len(),
                if snapshot.interfaces.len() == 1 {
                    ""
                } else {
                    "s"
                },
                next.peer_count(),
                next.connected_count(),
                pending
            ));
        }
        state = Some(next);
    }
    if let Some(n) = &notifier {
        n.stopping();
    }
    if options.max_polls.is_some() {
        tracing::info!(polls, "done: delivering what is queued");
        delivery.drain(config.delivery.shutdown_timeout).await;
    } else {
        tracing::info!(polls, "stopping: finishing in-flight deliveries");
        delivery.shutdown().await;
    }
    let _ = metrics_stop.send(());
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    Ok(())
}

/// The pinger when `monitor.ping_checks` is on; fails naming the missing
/// sysctl or capability.
fn start_pinger(config: &Config) -> anyhow::Result<Option<Pinger>> {
    if !config.monitor.ping_checks {
        return Ok(None);
    }
    let pinger = Pinger::new(config.monitor.ping_interval).context("monitor.ping_checks is on")?;
    tracing::info!(
        socket = pinger.socket_kind(),
        ping_interval_s = config.monitor.ping_interval.as_secs(),
        "ping checks on: a peer that answers counts as connected"
    );
    Ok(Some(pinger))
}

/// Senders for every configured webhook, and their delivery tasks.
fn start_delivery(
    config: &Config,
    store: &Arc<Mutex<Store>>,
    metrics: Option<Metrics>,
) -> anyhow::Result<Delivery> {
    let ctx = render_context(config);
    let senders = config
        .webhooks
        .iter()
        .map(|hook| HttpSender::new(hook, ctx.clone()).map(|s| (hook.clone(), s)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Delivery::start(
        Arc::clone(store),
        senders,
        &config.delivery,
        metrics,
    )?)
}

async fn recv_opt(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn tick_opt(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
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
