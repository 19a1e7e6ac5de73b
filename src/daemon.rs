//! The daemon: poll, track, deliver, until told to stop.
//!
//! [`run`] owns the loop. Each tick reads a snapshot from the backend, passes
//! it with the previous tracker state to [`tracker::track`], logs the events
//! and hands them to [`Delivery`], which never blocks the loop. A failed poll
//! is logged and skipped; the tracker state is untouched by it, so a transient
//! error never looks like peers vanishing. Shutdown is a future passed in, so
//! tests and the demo can stop the daemon the way a signal does.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::MissedTickBehavior;

use crate::backend::auto::AutoBackend;
use crate::backend::netlink::KernelBackend;
use crate::backend::sim::{Scenario, SimBackend};
use crate::backend::uapi::UapiBackend;
use crate::backend::BackendKind;
use crate::backend::{Backend, POLL_DEADLINE, POLL_GRACE};
use crate::clock::ClockSteps;
use crate::config::Config;
use crate::delivery::http::HttpSender;
use crate::delivery::Delivery;
use crate::event::{Event, RenderContext};
use crate::metrics::Metrics;
use crate::notify::{watchdog_interval, Notifier};
use crate::outbox::Store;
use crate::ping::{PingTask, Pinger};
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
    /// The log level when neither the configuration nor a flag sets one
    /// (`None`: info). The demo keeps its log to warnings.
    pub default_log_level: Option<&'static str>,
}

/// The host name stamped on events: configured, else the kernel's.
pub fn host_name(config: &Config) -> String {
    if let Some(host) = &config.monitor.host {
        return host.clone();
    }
    // gethostname(2) rather than /proc/sys/kernel/hostname: the shipped unit's
    // ProcSubset=pid hides /proc/sys.
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|s| s.trim().to_string())
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
        interface_names: config.interface_names(),
        ..RenderContext::default()
    }
}

/// Runs the daemon until `shutdown` resolves (or `max_polls` is reached).
pub async fn run(
    config: Config,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // SIGHUP's default action ends the process: take it over before the
    // (possibly slow) start. tokio keeps the handler installed for good; a
    // SIGHUP before the loop runs is simply not acted on.
    let _early_hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
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
    let log_level = options.default_log_level.unwrap_or("info");
    let mut daemon = Daemon::start(config, backend, metrics_server.metrics.clone(), log_level)?;
    daemon.detect_steps = matches!(options.clock, Clock::System);
    // The watchdog is fed from a task of its own, whatever a poll does, for
    // as long as the loop below shows progress (its heartbeat).
    let heartbeat = Heartbeat::new();
    let watchdog = match (daemon.notifier.clone(), watchdog_interval()) {
        (Some(notifier), Some(every)) => Some(tokio::spawn(feed_watchdog(
            notifier,
            every,
            heartbeat.clone(),
            STALLED_AFTER,
        ))),
        _ => None,
    };
    let mut beat = tokio::time::interval(BEAT_EVERY);
    beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut ticker = poll_ticker(&daemon.config);
    tokio::pin!(shutdown);
    let result = loop {
        heartbeat.beat();
        if options.max_polls.is_some_and(|max| daemon.polls >= max) {
            break Ok(());
        }
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            Some(()) = recv_opt(&mut hangup) => {
                let interval = daemon.config.monitor.interval;
                // A reload waits for the old webhooks' in-flight requests
                // (up to shutdown_timeout): the loop is alive meanwhile.
                let reloaded = {
                    let reload = daemon.reload();
                    tokio::pin!(reload);
                    loop {
                        tokio::select! {
                            r = &mut reload => break r,
                            _ = beat.tick() => heartbeat.beat(),
                        }
                    }
                };
                if let Err(e) = reloaded {
                    break Err(e);
                }
                if daemon.config.monitor.interval != interval {
                    ticker = poll_ticker(&daemon.config);
                }
            }
            _ = beat.tick() => {}
            _ = ticker.tick() => {
                let now = match options.clock {
                    Clock::System => Utc::now(),
                    Clock::Virtual { start, step } => start + step * (daemon.polls as i32),
                };
                if let Err(e) = daemon.poll(now).await {
                    break Err(e);
                }
                release_free_memory();
            }
        }
    };
    if let Some(w) = watchdog {
        w.abort();
    }
    daemon.stop(options.max_polls.is_some()).await;
    metrics_server.stop().await;
    result
}

/// Gives the memory a poll freed back to the system. A poll's snapshot
/// (about 14 MB at 100,000 peers) is built, compared and dropped every
/// interval; glibc keeps such freed memory in its arenas, so without this
/// the resident size stays at the poll's peak between polls. Costs well
/// under a millisecond when there is little to give back.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own allocator state.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How often the idle poll loop shows it is alive.
const BEAT_EVERY: Duration = Duration::from_secs(1);

/// A loop silent for longer than this is wedged: the watchdog task stops
/// feeding systemd, which then restarts the service. The longest the loop
/// may legitimately be busy: a poll ([`POLL_DEADLINE`] + [`POLL_GRACE`]),
/// then an outbox commit that waits for a busy database (5 s), with room
/// to spare.
const STALLED_AFTER: Duration = Duration::from_secs(30);

/// When the poll loop last made progress (ms since it started).
#[derive(Clone)]
struct Heartbeat {
    origin: std::time::Instant,
    last_ms: Arc<AtomicU64>,
}

impl Heartbeat {
    fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn beat(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long ago the last beat was.
    fn age(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Sends `WATCHDOG=1` every `every` while the poll loop's heartbeat is
/// younger than `stalled_after`: a poll waiting on hung sockets does not
/// starve the watchdog, but a loop that stopped for good is restarted.
async fn feed_watchdog(
    notifier: Arc<Notifier>,
    every: Duration,
    heartbeat: Heartbeat,
    stalled_after: Duration,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stalled = false;
    loop {
        ticks.tick().await;
        let age = heartbeat.age();
        if age <= stalled_after {
            notifier.watchdog();
            stalled = false;
        } else if !stalled {
            stalled = true;
            tracing::error!(
                silent_s = age.as_secs(),
                "the poll loop has made no progress: no longer feeding the watchdog, so systemd restarts the service"
            );
        }
    }
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
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(listen = %addr, "metrics served at http://{addr}/metrics");
        }
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
    pinger: Option<PingTask>,
    store: Arc<Mutex<Store>>,
    metrics: Option<Metrics>,
    delivery: Delivery,
    notifier: Option<Arc<Notifier>>,
    /// The default log level (a reload re-applies it when `log.level` goes).
    log_level: &'static str,
    /// The tracker state after the last committed poll (or the saved one).
    state: Option<State>,
    polls: u64,
    ready: bool,
    /// Whether `now` is the wall clock, so that steps can be told (not the
    /// demo's virtual clock).
    detect_steps: bool,
    /// The monotonic and wall clocks at the previous poll.
    last_clock: Option<(std::time::Instant, DateTime<Utc>)>,
    /// A step seen before a poll that then failed: applied at the next.
    pending_step: Option<TimeDelta>,
    steps: ClockSteps,
}

impl Daemon {
    fn start(
        config: Config,
        backend: Box<dyn Backend>,
        metrics: Option<Metrics>,
        log_level: &'static str,
    ) -> anyhow::Result<Self> {
        let _ =
            crate::logging::apply_config(config.log.level.as_deref(), config.log.format, log_level);
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
            config,
            backend,
            pinger,
            store,
            metrics,
            delivery,
            notifier: Notifier::from_env().map(Arc::new),
            log_level,
            state: saved,
            polls: 0,
            ready: false,
            detect_steps: false,
            last_clock: None,
            pending_step: None,
            steps: ClockSteps::default(),
        })
    }

    /// One poll: read, track, commit to the outbox, then metrics and
    /// sd_notify. A failed read, or an outbox that cannot be written, is
    /// logged and the poll skipped (the state as last committed). Returns
    /// the number of events committed.
    async fn poll(&mut self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        self.polls += 1;
        let started = std::time::Instant::now();
        if self.detect_steps {
            if let Some((mono, wall)) = self.last_clock {
                if let Some(step) = crate::clock::step_between(now - wall, started - mono) {
                    tracing::warn!(
                        step_s = step.num_seconds(),
                        "the wall clock was stepped between two polls; handshakes stamped before \
                         the step are shifted by it, so no peer connects or disconnects because of it"
                    );
                    let total = self.pending_step.unwrap_or_default() + step;
                    self.pending_step = Some(total);
                }
            }
            self.last_clock = Some((started, now));
        }
        let read = tokio::time::timeout(
            POLL_DEADLINE + POLL_GRACE,
            self.backend.poll(now, &self.settings.filter),
        )
        .await;
        let snapshot = match read {
            Ok(Ok(snapshot)) => snapshot,
            failed => {
                let reason = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!(
                        "no answer within {:?} (the poll deadline)",
                        POLL_DEADLINE + POLL_GRACE
                    ),
                };
                crate::faults::poll_failed(self.backend.name(), &reason);
                if let Some(m) = &self.metrics {
                    m.poll_error();
                }
                return Ok(0);
            }
        };
        let mut snapshot = snapshot;
        if let Some(step) = self.pending_step.take() {
            self.steps.stepped(step, &snapshot, self.state.as_mut());
        }
        self.steps.apply(&mut snapshot);
        crate::faults::poll_succeeded(self.backend.name());
        crate::faults::interfaces_read(snapshot.interfaces.iter().map(|i| i.name.as_str()));
        let prev = self.state.take();
        let tracker::Tracked {
            state: next,
            events,
            changes,
        } = match self.pinger.as_mut() {
            Some(p) => {
                // The latest completed round: rounds run in their own task.
                let pings = p.update(&snapshot, &self.config.ping_addresses);
                tracker::track_changes_with_pings(
                    prev,
                    &snapshot,
                    Some(&pings),
                    now,
                    &self.settings,
                )
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
        let committed = events.len();
        if let Some(m) = &self.metrics {
            m.events(&events);
        }
        // Events exist only once committed. If the outbox cannot be written
        // (disk full, database locked by a long `wghook outbox` command),
        // this poll is dropped: the tracker goes back to the state last
        // committed, and the next poll derives the same changes again.
        if let Err(e) = self.delivery.commit(events, &next, &changes) {
            tracing::error!(
                error = %e,
                "cannot write to the outbox; this poll is dropped and the next one reports its changes"
            );
            if let Some(m) = &self.metrics {
                m.poll_error();
            }
            let restored = crate::delivery::lock(&self.store)
                .load_state()
                .context("cannot read the tracker state back from the outbox")?;
            self.state = restored;
            return Ok(0);
        }
        let queues = self.delivery.queues();
        if let Some(m) = &self.metrics {
            m.quarantined(crate::delivery::lock(&self.store).take_quarantined());
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
        self.backend.recycle(snapshot);
        Ok(committed)
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
            // READY means "first poll done": a reload before it must not say so.
            if self.ready {
                n.ready();
            }
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
        // Everything that can fail is built before anything changes, so a
        // failed reload leaves the running configuration whole.
        let old = &self.config.monitor;
        let backend = if new.monitor.backend != old.backend
            || new.monitor.scenario != old.scenario
            || new.monitor.uapi_dirs != old.uapi_dirs
            || new.monitor.uapi_timeout != old.uapi_timeout
        {
            match build_backend(&new).await {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "reload failed: the new backend cannot start; keeping the running configuration");
                    return Ok(());
                }
            }
        } else {
            None
        };
        let senders = match build_senders(&new) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reload failed: cannot set up the new webhooks; keeping the running configuration");
                return Ok(());
            }
        };
        let _ =
            crate::logging::apply_config(new.log.level.as_deref(), new.log.format, self.log_level);
        if let Some(b) = backend {
            self.backend = b;
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
        let idle = Delivery::idle(Arc::clone(&self.store), &self.config.delivery)?;
        std::mem::replace(&mut self.delivery, idle).shutdown().await;
        self.delivery = match Delivery::start(
            Arc::clone(&self.store),
            senders,
            &new.delivery,
            self.metrics.clone(),
        ) {
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
fn start_pinger(config: &Config) -> anyhow::Result<Option<PingTask>> {
    if !config.monitor.ping_checks {
        return Ok(None);
    }
    let pinger = Pinger::new(config.monitor.ping_interval).context("monitor.ping_checks is on")?;
    tracing::info!(
        socket = pinger.socket_kind(),
        ping_interval_s = config.monitor.ping_interval.as_secs(),
        "ping checks on: a peer that answers counts as connected"
    );
    Ok(Some(PingTask::spawn(pinger, config.monitor.ping_interval)))
}

/// A sender for every configured webhook.
fn build_senders(
    config: &Config,
) -> anyhow::Result<Vec<(crate::delivery::settings::Webhook, HttpSender)>> {
    let ctx = render_context(config);
    Ok(config
        .webhooks
        .iter()
        .map(|hook| HttpSender::new(hook, ctx.clone()).map(|s| (hook.clone(), s)))
        .collect::<Result<Vec<_>, _>>()?)
}

/// Senders for every configured webhook, and their delivery tasks.
fn start_delivery(
    config: &Config,
    store: &Arc<Mutex<Store>>,
    metrics: Option<Metrics>,
) -> anyhow::Result<Delivery> {
    Ok(Delivery::start(
        Arc::clone(store),
        build_senders(config)?,
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

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called (inside the runtime), not when the future is first polled, so a
/// signal during the start is not fatal but a clean stop.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move { wait_for_shutdown(term, int).await }
}

async fn wait_for_shutdown(
    term: std::io::Result<tokio::signal::unix::Signal>,
    int: std::io::Result<tokio::signal::unix::Signal>,
) {
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::os::unix::net::UnixDatagram;
    use std::path::Path;

    use super::*;
    use crate::backend::{BackendError, InterfaceFilter, PollFuture};
    use crate::model::{DriverKind, Interface, Peer, PublicKey, Snapshot};

    /// A backend playing a fixed list of poll results (the last repeats).
    struct Script(VecDeque<Result<Snapshot, String>>);

    impl Backend for Script {
        fn name(&self) -> &'static str {
            "script"
        }
        fn poll<'a>(&'a mut self, _: DateTime<Utc>, _: &'a InterfaceFilter) -> PollFuture<'a> {
            let next = if self.0.len() > 1 {
                self.0.pop_front()
            } else {
                self.0.front().cloned()
            };
            Box::pin(async move {
                match next.unwrap_or_else(|| Ok(Snapshot::default())) {
                    Ok(s) => Ok(s),
                    Err(e) => Err(BackendError::Io {
                        context: "scripted".into(),
                        source: std::io::Error::other(e),
                    }),
                }
            })
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("in range")
    }

    /// `wg0` with one peer whose latest handshake is at `hs` (if any).
    fn snapshot(hs: Option<i64>) -> Snapshot {
        Snapshot {
            interfaces: vec![Interface {
                name: "wg0".into(),
                public_key: Some(PublicKey([200; 32])),
                listen_port: 51820,
                driver: DriverKind::Userspace,
                peers: vec![Peer {
                    public_key: PublicKey([1; 32]),
                    allowed_ips: vec!["10.8.0.1/32".parse().expect("valid")].into(),
                    last_handshake: hs.map(at),
                    ..Peer::default()
                }],
                ..Interface::default()
            }],
            unreadable: Vec::new(),
        }
    }

    fn unreadable() -> Snapshot {
        Snapshot {
            interfaces: Vec::new(),
            unreadable: vec!["wg0".into()],
        }
    }

    /// A daemon on `script`, with its configuration file and state in `dir`.
    fn daemon(dir: &Path, script: Vec<Result<Snapshot, String>>) -> Daemon {
        let path = dir.join("wghook.yaml");
        let text = format!(
            "monitor:\n  backend: userspace\n  state_dir: {}\n",
            dir.join("state").display()
        );
        std::fs::write(&path, text).expect("write config");
        let config = crate::config::load(&path).expect("valid config");
        Daemon::start(config, Box::new(Script(script.into())), None, "info").expect("starts")
    }

    /// A notification socket the daemon talks to, and the test reads.
    fn notify_socket(dir: &Path, daemon: &mut Daemon) -> UnixDatagram {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        daemon.notifier = Notifier::from_socket(path.as_os_str()).map(Arc::new);
        assert!(daemon.notifier.is_some());
        socket
    }

    fn received(socket: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[tokio::test]
    async fn ready_is_sent_after_the_first_successful_poll_and_not_by_an_early_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut d = daemon(
            dir.path(),
            vec![Err("no socket yet".into()), Ok(snapshot(Some(0)))],
        );
        let socket = notify_socket(dir.path(), &mut d);

        assert_eq!(d.poll(at(1)).await.expect("poll"), 0);
        d.reload().await.expect("reload");
        let early = received(&socket);
        assert!(early.iter().all(|m| !m.contains("READY=1")), "{early:?}");
        assert!(
            early.iter().any(|m| m.starts_with("RELOADING=1")),
            "{early:?}"
        );

        assert_eq!(d.poll(at(2)).await.expect("poll"), 1, "the connect");
        let after = received(&socket);
        assert_eq!(
            after.first().map(String::as_str),
            Some("READY=1"),
            "{after:?}"
        );
        assert!(
            after
                .iter()
                .any(|m| m.starts_with("STATUS=watching 1 interface, 1 peers (1 connected)")),
            "{after:?}"
        );

        d.reload().await.expect("reload");
        let reloaded = received(&socket);
        assert_eq!(
            reloaded.last().map(String::as_str),
            Some("READY=1"),
            "{reloaded:?}"
        );
    }

    #[tokio::test]
    async fn failed_polls_and_unreadable_interfaces_keep_the_state_and_the_loop_going() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut d = daemon(
            dir.path(),
            vec![
                Ok(snapshot(Some(0))),
                Err("socket vanished".into()),
                Ok(unreadable()),
                Ok(snapshot(Some(0))),
                Ok(snapshot(None)),
            ],
        );
        assert_eq!(
            d.poll(at(1)).await.expect("poll"),
            1,
            "first start: connect"
        );
        assert_eq!(
            d.poll(at(2)).await.expect("poll"),
            0,
            "failed poll: nothing"
        );
        assert_eq!(
            d.poll(at(3)).await.expect("poll"),
            0,
            "unreadable: no delete"
        );
        assert_eq!(d.poll(at(4)).await.expect("poll"), 0, "back: nothing new");
        assert_eq!(d.state.as_ref().map(State::connected_count), Some(1));
        // A handshake that goes back to "never" is a reset of the peer
        // (removed and re-added): it is still reported, so the loop is alive.
        assert!(d.poll(at(5)).await.expect("poll") > 0);
    }

    #[tokio::test]
    async fn a_poll_the_outbox_cannot_take_is_reported_again_by_the_next_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut d = daemon(
            dir.path(),
            vec![
                Ok(snapshot(None)),
                Ok(snapshot(Some(10))),
                Ok(snapshot(Some(10))),
            ],
        );
        assert_eq!(
            d.poll(at(1)).await.expect("poll"),
            0,
            "baseline, nothing connected"
        );

        // Another process holds the database's write lock past the busy timeout.
        let db = dir.path().join("state").join("wghook.db");
        let blocker = rusqlite::Connection::open(&db).expect("open db");
        blocker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        assert_eq!(d.poll(at(11)).await.expect("not fatal"), 0, "dropped");
        blocker.execute_batch("ROLLBACK").expect("unlock");

        assert_eq!(d.poll(at(12)).await.expect("poll"), 1, "the connect, once");
        assert_eq!(d.state.as_ref().map(State::connected_count), Some(1));
    }

    /// Regression: one unreadable `tracker_peers` row stopped the daemon at
    /// start ("outbox holds a record that cannot be read").
    #[tokio::test]
    async fn the_daemon_starts_on_a_state_with_an_unreadable_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut d = daemon(dir.path(), vec![Ok(snapshot(Some(0)))]);
        assert_eq!(d.poll(at(1)).await.expect("poll"), 1);
        drop(d);
        let db = dir.path().join("state").join("wghook.db");
        let conn = rusqlite::Connection::open(&db).expect("open db");
        assert_eq!(
            conn.execute("UPDATE tracker_peers SET data = 'garbage'", [])
                .expect("corrupt"),
            1
        );
        drop(conn);
        let mut d = daemon(dir.path(), vec![Ok(snapshot(Some(0)))]);
        // The peer is tracked afresh; the daemon runs.
        d.poll(at(2)).await.expect("poll");
        assert_eq!(d.state.as_ref().map(State::peer_count), Some(1));
    }

    /// Polls at wall time `wall`, as if `mono` seconds of monotonic time had
    /// passed since the previous poll (the test cannot wait them).
    async fn poll_after(d: &mut Daemon, mono: u64, wall: i64) -> usize {
        if let Some((_, prev)) = d.last_clock {
            let earlier = std::time::Instant::now() - Duration::from_secs(mono);
            d.last_clock = Some((earlier, prev));
        }
        d.poll(at(wall)).await.expect("poll")
    }

    /// Regression: a wall clock stepped forward by an hour made every
    /// handshake look an hour old (a disconnect for every peer); stepped
    /// back, it made them look in the future (disconnects late by an hour).
    #[tokio::test]
    async fn a_clock_step_neither_disconnects_peers_nor_delays_real_disconnects() {
        for step in [3600i64, -3600] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut d = daemon(dir.path(), vec![Ok(snapshot(Some(0)))]);
            d.detect_steps = true;
            assert_eq!(poll_after(&mut d, 0, 1).await, 1, "the connect");
            assert_eq!(poll_after(&mut d, 10, 11).await, 0);
            // The step: 10 s pass, the wall clock says 10 s + step.
            assert_eq!(
                poll_after(&mut d, 10, 21 + step).await,
                0,
                "step {step}: no disconnect"
            );
            assert_eq!(d.state.as_ref().map(State::connected_count), Some(1));
            assert_eq!(
                poll_after(&mut d, 100, 121 + step).await,
                0,
                "still connected"
            );
            // 181 s after the handshake, on the present clock: the threshold
            // (180 s) passed.
            assert_eq!(
                poll_after(&mut d, 60, 181 + step).await,
                1,
                "step {step}: the real disconnect, on time"
            );
            assert_eq!(d.state.as_ref().map(State::connected_count), Some(0));
        }
    }
}
