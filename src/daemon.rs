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
    config: Config,
    backend: Box<dyn Backend>,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics_server = MetricsServer::start(&config).await?;
    let mut daemon = Daemon::start(config, backend, metrics_server.metrics.clone())?;
    let mut watchdog = watchdog_interval().map(|every| {
        // Already half of WATCHDOG_USEC, as systemd recommends.
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut ticker = poll_ticker(&daemon.config);
    tokio::pin!(shutdown);
    let result = loop {
        if options.max_polls.is_some_and(|max| daemon.polls >= max) {
            break Ok(());
        }
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            Some(()) = recv_opt(&mut hangup) => {
                let interval = daemon.config.monitor.interval;
                if let Err(e) = daemon.reload().await {
                    break Err(e);
                }
                if daemon.config.monitor.interval != interval {
                    ticker = poll_ticker(&daemon.config);
                }
            }
            _ = tick_opt(&mut watchdog) => {
                if let Some(n) = &daemon.notifier {
                    n.watchdog();
                }
            }
            _ = ticker.tick() => {
                let now = match options.clock {
                    Clock::System => Utc::now(),
                    Clock::Virtual { start, step } => start + step * (daemon.polls as i32),
                };
                if let Err(e) = daemon.poll(now).await {
                    break Err(e);
                }
            }
        }
    };
    daemon.stop(options.max_polls.is_some()).await;
    metrics_server.stop().await;
    result
}

fn poll_ticker(config: &Config) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(config.monitor.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

/// The Prometheus endpoint, when `metrics.listen` is set.
struct MetricsServer {
    metrics: Option<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds now, so a bad address fails the start rather than a task.
    async fn start(config: &Config) -> anyhow::Result<Self> {
        let Some(listen) = config.metrics.listen else {
            return Ok(Self {
                metrics: None,
                stop: None,
                task: None,
            });
        };
        let metrics = Metrics::new(config.metrics.per_peer_metrics);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} for metrics (metrics.listen)"))?;
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = metrics.clone();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = stop_rx.await;
            };
            if let Err(e) = crate::metrics::serve_listener(listener, served, stop).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
        Ok(Self {
            metrics: Some(metrics),
            stop: Some(stop),
            task: Some(task),
        })
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Everything the poll loop works with.
struct Daemon {
    config: Config,
    backend: Box<dyn Backend>,
    settings: tracker::Settings,
    filter: crate::backend::InterfaceFilter,
    pinger: Option<Pinger>,
    store: Arc<Mutex<Store>>,
    metrics: Option<Metrics>,
    delivery: Delivery,
    notifier: Option<Notifier>,
    /// The tracker state after the last committed poll (or the saved one).
    state: Option<State>,
    polls: u64,
    ready: bool,
}

impl Daemon {
    fn start(
        config: Config,
        backend: Box<dyn Backend>,
        metrics: Option<Metrics>,
    ) -> anyhow::Result<Self> {
        let _ =
            crate::logging::apply_config(config.log.level.as_deref(), config.log.format, "info");
        let host = host_name(&config);
        let pinger = start_pinger(&config)?;
        let store = Store::open(&config.monitor.state_dir)?;
        let saved = store.load_state()?;
        let store = Arc::new(Mutex::new(store));
        let delivery = start_delivery(&config, &store, metrics.clone())?;
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
        Ok(Self {
            settings: config.tracker_settings(host),
            filter: config.filter(),
            config,
            backend,
            pinger,
            store,
            metrics,
            delivery,
            notifier: Notifier::from_env(),
            state: saved,
            polls: 0,
            ready: false,
        })
    }

    /// One poll: read, track, commit to the outbox, then metrics and
    /// sd_notify. A failed read is logged and skipped (the state untouched);
    /// only an outbox that cannot be written is fatal.
    async fn poll(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        self.polls += 1;
        let started = std::time::Instant::now();
        let snapshot = match self.backend.poll(now, &self.filter).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::warn!(backend = self.backend.name(), error = %e, "poll failed; skipping it");
                if let Some(m) = &self.metrics {
                    m.poll_error();
                }
                return Ok(());
            }
        };
        let prev = self.state.take();
        let tracker::Tracked {
            state: next,
            events,
            changes,
        } = match self.pinger.as_mut() {
            Some(p) => {
                let pings = p.refresh(&snapshot, &self.config.ping_addresses, now).await;
                tracker::track_changes_with_pings(prev, &snapshot, Some(pings), now, &self.settings)
            }
            None => tracker::track_changes(prev, &snapshot, now, &self.settings),
        };
        if self.polls == 1 {
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
        if let Some(m) = &self.metrics {
            m.events(&events);
        }
        // Without a durable outbox nothing can be promised: stop, and let the
        // service manager restart us (the saved state is the last committed
        // poll, so nothing is missed).
        self.delivery
            .commit(events, &next, &changes)
            .context("cannot write to the outbox")?;
        let queues = self.delivery.queues();
        if let Some(m) = &self.metrics {
            m.observe_poll(started.elapsed(), &snapshot, &next, &self.config.peers);
            let now = Utc::now();
            for q in &queues {
                let age = q.oldest.and_then(|t| (now - t).to_std().ok());
                m.set_queue(&q.webhook, q.pending, q.given_up, age);
            }
        }
        if let Some(n) = &self.notifier {
            if !self.ready {
                n.ready();
                self.ready = true;
            }
            let pending: u64 = queues.iter().map(|q| q.pending).sum();
            let interfaces = snapshot.interfaces.len();
            n.status(&format!(
                "watching {interfaces} interface{}, {} peers ({} connected), {pending} pending",
                if interfaces == 1 { "" } else { "s" },
                next.peer_count(),
                next.connected_count(),
            ));
        }
        self.state = Some(next);
        Ok(())
    }

    /// SIGHUP: re-reads the file; keeps running on the old configuration if
    /// anything in the new one cannot be applied. Fails only if the old
    /// webhooks cannot be restarted either.
    async fn reload(&mut self) -> anyhow::Result<()> {
        if let Some(n) = &self.notifier {
            n.reloading();
        }
        let result = self.apply(crate::config::load(&self.config.path)).await;
        if let Some(n) = &self.notifier {
            n.ready();
        }
        result
    }

    async fn apply(
        &mut self,
        loaded: Result<Config, crate::config::ConfigErrors>,
    ) -> anyhow::Result<()> {
        let new = match loaded {
            Ok(new) => new,
            Err(errors) => {
                tracing::error!(file = %self.config.path.display(), "reload failed; keeping the running configuration:\n{errors}");
                return Ok(());
            }
        };
        let _ = crate::logging::apply_config(new.log.level.as_deref(), new.log.format, "info");
        let old = &self.config.monitor;
        if new.monitor.backend != old.backend
            || new.monitor.scenario != old.scenario
            || new.monitor.uapi_dirs != old.uapi_dirs
            || new.monitor.uapi_timeout != old.uapi_timeout
        {
            match build_backend(&new).await {
                Ok(b) => self.backend = b,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "reload failed: the new backend cannot start; keeping the running configuration");
                    return Ok(());
                }
            }
        }
        if new.monitor.state_dir != self.config.monitor.state_dir
            || new.metrics != self.config.metrics
        {
            tracing::warn!("monitor.state_dir and metrics changes take effect at the next restart");
        }
        // Pending events stay in the outbox; the new delivery picks them up
        // (and re-enables webhooks disabled by a 410, and re-queued dead
        // letters). The old one finishes its in-flight requests first, so
        // nothing is sent twice at once.
        let idle = Delivery::start(
            Arc::clone(&self.store),
            Vec::new(),
            &self.config.delivery,
            None,
        )?;
        std::mem::replace(&mut self.delivery, idle).shutdown().await;
        self.delivery = match start_delivery(&new, &self.store, self.metrics.clone()) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reload failed: cannot start the new webhooks; keeping the running configuration");
                self.delivery = start_delivery(&self.config, &self.store, self.metrics.clone())?;
                return Ok(());
            }
        };
        if let Some(m) = &self.metrics {
            for hook in &self.config.webhooks {
                if !new.webhooks.iter().any(|h| h.name == hook.name) {
                    m.forget_webhook(&hook.name);
                }
            }
        }
        match (&mut self.pinger, new.monitor.ping_checks) {
            (Some(p), true) => p.set_interval(new.monitor.ping_interval),
            (Some(_), false) => self.pinger = None,
            (None, true) => {
                self.pinger = start_pinger(&new).unwrap_or_else(|e| {
                    tracing::error!(error = %format!("{e:#}"), "ping checks stay off");
                    None
                });
            }
            (None, false) => {}
        }
        self.settings = new.tracker_settings(host_name(&new));
        self.filter = new.filter();
        self.config = new;
        tracing::info!(
            webhooks = self.delivery.webhook_count(),
            interval_ms = self.config.monitor.interval.as_millis() as u64,
            "configuration reloaded"
        );
        Ok(())
    }

    /// Stops delivery: `drain` (runs that end by themselves, like the demo)
    /// delivers what is queued first; otherwise in-flight requests finish
    /// and the rest waits in the outbox for the next start.
    async fn stop(self, drain: bool) {
        if let Some(n) = &self.notifier {
            n.stopping();
        }
        if drain {
            tracing::info!(polls = self.polls, "done: delivering what is queued");
            self.delivery
                .drain(self.config.delivery.shutdown_timeout)
                .await;
        } else {
            tracing::info!(
                polls = self.polls,
                "stopping: finishing in-flight deliveries"
            );
            self.delivery.shutdown().await;
        }
    }
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
