//! Prometheus metrics: the WireGuard peers wghook sees and wghook's own work.
//!
//! [`Metrics`] is a cheap, cloneable handle (an `Arc` inside) that the daemon
//! updates and [`serve`] exposes over HTTP at `GET /metrics` in the
//! OpenMetrics text format.
//!
//! Two kinds of series:
//! - **Host state**, rebuilt from scratch by every [`Metrics::observe_poll`]:
//!   per peer `wireguard_peer_connected`, `wireguard_peer_last_handshake_seconds`,
//!   `wireguard_peer_receive_bytes_total`, `wireguard_peer_transmit_bytes_total`
//!   (labels `interface`, `public_key`, `name`), and per interface
//!   `wireguard_interface_peers` and `wireguard_interface_connected_peers`.
//!   A poll replaces the whole table at once, so a peer or interface that
//!   vanished disappears from the next scrape, and a scrape never sees half a
//!   poll. The table is a plain vector of numbers turned into text only when
//!   scraped, so a poll of 100,000 peers costs a few milliseconds.
//! - **wghook's own** counters and gauges: `wghook_poll_duration_seconds`,
//!   `wghook_poll_errors_total`, `wghook_dropped_events_total`,
//!   `wghook_outbox_quarantined_rows_total`, `wghook_events_total{kind}`,
//!   `wghook_deliveries_total{webhook,outcome}`, `wghook_pending_events{webhook}`,
//!   `wghook_given_up_events{webhook}`, `wghook_oldest_pending_age_seconds{webhook}`,
//!   `wghook_webhook_healthy{webhook}`.
//!
//! Invariants: with `per_peer_metrics: false` no series carries a peer's
//! key or name (label cardinality stays at the number of interfaces); label
//! values are escaped by the encoder, so a peer name cannot forge a series;
//! nothing here holds a secret.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::event::{Event, PeerLabel};
use crate::model::{PublicKey, Snapshot};
use crate::tracker::State;

/// The `metrics:` section as written.
#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RawMetrics {
    /// `IP:PORT` serving Prometheus `GET /metrics` (default: off).
    pub listen: Option<crate::settings::Text>,
    /// Per-peer series (default true); off on hosts where one series per peer is too many.
    pub per_peer_metrics: Option<crate::settings::Text<crate::settings::kind::Flag>>,
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

/// Validates `metrics:`; a value in error keeps its default.
pub fn validate(raw: Option<&RawMetrics>, check: &mut crate::settings::Check) -> MetricsSettings {
    let mut out = MetricsSettings::default();
    let Some(raw) = raw else {
        return out;
    };
    if let Some(t) = &raw.listen {
        if let Some(text) = check.text(t) {
            match text.trim().parse::<SocketAddr>() {
                Ok(addr) => out.listen = Some(addr),
                Err(_) => {
                    let message = format!(
                        "invalid address {text:?} (use IP:PORT, e.g. 127.0.0.1:9586 or [::1]:9586)"
                    );
                    check.error(t, message);
                }
            }
        }
    }
    if let Some(t) = &raw.per_peer_metrics {
        if let Some(b) = check.boolean(t) {
            out.per_peer_metrics = b;
        }
    }
    out
}

/// The `Content-Type` of a scrape: OpenMetrics text, which Prometheus prefers.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Length of a base64 public key (32 bytes, padded).
const KEY_B64_LEN: usize = 44;

/// A handle on all metrics; clones share them.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    hosts: Arc<HostCollector>,
    poll_duration: Histogram,
    poll_errors: Counter,
    dropped: Counter,
    quarantined: Counter,
    events: Family<KindLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    pending: Family<WebhookLabels, Gauge>,
    given_up: Family<WebhookLabels, Gauge>,
    oldest_age: Family<WebhookLabels, Gauge<f64, AtomicU64>>,
    healthy: Family<WebhookLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    webhook: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: String,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.inner.hosts.current();
        f.debug_struct("Metrics")
            .field("per_peer_metrics", &self.inner.hosts.per_peer)
            .field("interfaces", &table.interfaces.len())
            .field("peers", &table.peers.len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// All metrics, empty. With `per_peer_metrics` false, only interface
    /// totals are exported for the host, never a series per peer.
    pub fn new(per_peer_metrics: bool) -> Self {
        let mut registry = Registry::default();
        let hosts = Arc::new(HostCollector {
            per_peer: per_peer_metrics,
            table: Mutex::new(Arc::new(HostTable::default())),
        });
        registry.register_collector(Box::new(hosts.clone()));

        // 1ms .. ~16s: a UAPI poll of a few peers takes well under 1ms, a
        // netlink dump of 100,000 peers about a second.
        let poll_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register_with_unit(
            "wghook_poll_duration",
            "Time one successful poll took: read, track and commit (failed polls count in wghook_poll_errors_total)",
            Unit::Seconds,
            poll_duration.clone(),
        );
        let poll_errors = Counter::default();
        registry.register(
            "wghook_poll_errors",
            "Polls that failed (the tracker state was left untouched)",
            poll_errors.clone(),
        );
        let dropped = Counter::default();
        registry.register(
            "wghook_dropped_events",
            "Undelivered events dropped because the outbox was full (max_pending_events)",
            dropped.clone(),
        );
        let quarantined = Counter::default();
        registry.register(
            "wghook_outbox_quarantined_rows",
            "Outbox rows that could not be read, moved to its quarantine table",
            quarantined.clone(),
        );
        let events = Family::<KindLabels, Counter>::default();
        registry.register(
            "wghook_events",
            "Events derived, by kind (entity.kind, e.g. peer.connect)",
            events.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "wghook_deliveries",
            "Delivery attempts, by webhook and outcome",
            deliveries.clone(),
        );
        let pending = Family::<WebhookLabels, Gauge>::default();
        registry.register(
            "wghook_pending_events",
            "Events waiting to be delivered, by webhook",
            pending.clone(),
        );
        let given_up = Family::<WebhookLabels, Gauge>::default();
        registry.register(
            "wghook_given_up_events",
            "Events no longer retried (retries exhausted or rejected), by webhook",
            given_up.clone(),
        );
        let oldest_age = Family::<WebhookLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "wghook_oldest_pending_age",
            "Age of the oldest event waiting to be delivered (0 when none), by webhook",
            Unit::Seconds,
            oldest_age.clone(),
        );
        let healthy = Family::<WebhookLabels, Gauge>::default();
        registry.register(
            "wghook_webhook_healthy",
            "1 while the webhook's receiver answers, 0 while it looks down (one probe at a time), by webhook",
            healthy.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                hosts,
                poll_duration,
                poll_errors,
                dropped,
                quarantined,
                events,
                deliveries,
                pending,
                given_up,
                oldest_age,
                healthy,
            }),
        }
    }

    /// Records a successful poll: its duration, and the host as it now is.
    /// Replaces every per-peer and per-interface series; `state` is the
    /// tracker state after this poll (it says which peers are connected),
    /// `names` the configured peer names.
    pub fn observe_poll(
        &self,
        duration: Duration,
        snapshot: &Snapshot,
        state: &State,
        names: &HashMap<PublicKey, PeerLabel>,
    ) {
        self.inner.poll_duration.observe(duration.as_secs_f64());
        let table = HostTable::build(snapshot, state, names, self.inner.hosts.per_peer);
        self.inner.hosts.replace(table);
    }

    /// Records a failed poll (its duration is not observed: a timeout would
    /// skew the histogram; the host series keep the last good poll).
    pub fn poll_error(&self) {
        self.inner.poll_errors.inc();
    }

    /// Counts events dropped by the outbox bound.
    pub fn dropped(&self, n: u64) {
        self.inner.dropped.inc_by(n);
    }

    /// Counts outbox rows moved to quarantine.
    pub fn quarantined(&self, n: u64) {
        self.inner.quarantined.inc_by(n);
    }

    /// Counts derived events by kind (`peer.connect`, `interface.delete`, ...).
    pub fn events(&self, events: &[Event]) {
        for event in events {
            let labels = KindLabels {
                kind: event.filter_name(),
            };
            self.inner.events.get_or_create(&labels).inc();
        }
    }

    /// Counts one delivery attempt to `webhook` with its `outcome`
    /// (`delivered`, `retry`, `given_up`, ... as the delivery layer names them).
    pub fn delivery(&self, webhook: &str, outcome: &str) {
        let labels = DeliveryLabels {
            webhook: webhook.to_string(),
            outcome: outcome.to_string(),
        };
        self.inner.deliveries.get_or_create(&labels).inc();
    }

    /// Sets the queue gauges of one webhook: events pending, events given up,
    /// and the age of the oldest pending one (`None`: nothing pending, 0).
    pub fn set_queue(
        &self,
        webhook: &str,
        pending: u64,
        given_up: u64,
        oldest_age: Option<Duration>,
    ) {
        let labels = WebhookLabels {
            webhook: webhook.to_string(),
        };
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.inner
            .pending
            .get_or_create(&labels)
            .set(clamp(pending));
        self.inner
            .given_up
            .get_or_create(&labels)
            .set(clamp(given_up));
        self.inner
            .oldest_age
            .get_or_create(&labels)
            .set(oldest_age.map_or(0.0, |d| d.as_secs_f64()));
    }

    /// Drops the queue gauges of a webhook removed from the configuration
    /// (its delivery counters stay: counters only ever go up).
    pub fn forget_webhook(&self, webhook: &str) {
        let labels = WebhookLabels {
            webhook: webhook.to_string(),
        };
        self.inner.pending.remove(&labels);
        self.inner.given_up.remove(&labels);
        self.inner.oldest_age.remove(&labels);
        self.inner.healthy.remove(&labels);
    }

    /// Sets whether a webhook's receiver answers (1) or looks down (0).
    pub fn set_healthy(&self, webhook: &str, healthy: bool) {
        let labels = WebhookLabels {
            webhook: webhook.to_string(),
        };
        self.inner
            .healthy
            .get_or_create(&labels)
            .set(i64::from(healthy));
    }

    /// All metrics in the OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry) {
            // Writing to a String cannot fail; a collector error is a bug.
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// The host as the last successful poll saw it, reduced to numbers.
#[derive(Default)]
struct HostTable {
    interfaces: Vec<InterfaceRow>,
    /// Empty when per-peer metrics are off.
    peers: Vec<PeerRow>,
}

struct InterfaceRow {
    name: String,
    peers: u64,
    connected: u64,
}

struct PeerRow {
    /// Index into [`HostTable::interfaces`].
    interface: usize,
    key: [u8; KEY_B64_LEN],
    name: Option<Arc<str>>,
    connected: bool,
    /// Unix seconds; 0 when the peer never completed a handshake (as `wg show dump`).
    last_handshake: i64,
    rx_bytes: u64,
    tx_bytes: u64,
}

impl PeerRow {
    fn key(&self) -> &str {
        // Base64 output is ASCII; the fallback is never taken.
        std::str::from_utf8(&self.key).unwrap_or_default()
    }
}

impl HostTable {
    fn build(
        snapshot: &Snapshot,
        state: &State,
        names: &HashMap<PublicKey, PeerLabel>,
        per_peer: bool,
    ) -> Self {
        let mut table = HostTable {
            interfaces: Vec::with_capacity(snapshot.interfaces.len()),
            peers: Vec::with_capacity(if per_peer { snapshot.peer_count() } else { 0 }),
        };
        // Names are shared between polls' rows only through this map, so a
        // name is allocated once per poll, not once per series.
        let mut shared_names: HashMap<&str, Arc<str>> = HashMap::new();
        for (index, iface) in snapshot.interfaces.iter().enumerate() {
            let tracked = state.interfaces.get(&iface.name);
            let mut connected = 0u64;
            for peer in &iface.peers {
                let is_connected = tracked
                    .and_then(|t| t.peers.get(&peer.public_key))
                    .is_some_and(|p| p.connected);
                connected += u64::from(is_connected);
                if !per_peer {
                    continue;
                }
                let mut key = [0u8; KEY_B64_LEN];
                // 32 bytes always encode to exactly 44; on the impossible
                // error the key stays zeroed rather than panicking.
                let _ = B64.encode_slice(peer.public_key.0, &mut key);
                let name = names
                    .get(&peer.public_key)
                    .filter(|l| !l.name.is_empty())
                    .map(|l| {
                        shared_names
                            .entry(l.name.as_str())
                            .or_insert_with(|| Arc::from(l.name.as_str()))
                            .clone()
                    });
                table.peers.push(PeerRow {
                    interface: index,
                    key,
                    name,
                    connected: is_connected,
                    last_handshake: peer.last_handshake.map_or(0, |t| t.timestamp()),
                    rx_bytes: peer.rx_bytes,
                    tx_bytes: peer.tx_bytes,
                });
            }
            table.interfaces.push(InterfaceRow {
                name: iface.name.clone(),
                peers: iface.peers.len() as u64,
                connected,
            });
        }
        table
    }
}

/// Encodes the current [`HostTable`] at each scrape.
struct HostCollector {
    per_peer: bool,
    /// Swapped whole by each poll; a scrape clones the `Arc` and encodes
    /// without holding the lock.
    table: Mutex<Arc<HostTable>>,
}

impl fmt::Debug for HostCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostCollector")
            .field("per_peer", &self.per_peer)
            .finish_non_exhaustive()
    }
}

impl HostCollector {
    fn current(&self) -> Arc<HostTable> {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, table: HostTable) {
        let old = std::mem::replace(
            &mut *self.table.lock().unwrap_or_else(PoisonError::into_inner),
            Arc::new(table),
        );
        // Free the old table (100,000 rows) outside the lock.
        drop(old);
    }
}

/// The descriptor of one metric family.
struct Desc<'a> {
    name: &'a str,
    help: &'a str,
    unit: Option<&'a Unit>,
}

/// Encodes a gauge family with one sample per row.
fn encode_gauges<'a, R, L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    desc: Desc,
    rows: &'a [R],
    labels: impl Fn(&'a R) -> L,
    value: impl Fn(&R) -> i64,
) -> fmt::Result {
    let mut family =
        encoder.encode_descriptor(desc.name, desc.help, desc.unit, MetricType::Gauge)?;
    for row in rows {
        let label_set = labels(row);
        ConstGauge::new(value(row)).encode(family.encode_family(&label_set)?)?;
    }
    Ok(())
}

/// Encodes a counter family with one sample per row.
fn encode_counters<'a, R, L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    desc: Desc,
    rows: &'a [R],
    labels: impl Fn(&'a R) -> L,
    value: impl Fn(&R) -> u64,
) -> fmt::Result {
    let mut family =
        encoder.encode_descriptor(desc.name, desc.help, desc.unit, MetricType::Counter)?;
    for row in rows {
        let label_set = labels(row);
        ConstCounter::new(value(row)).encode(family.encode_family(&label_set)?)?;
    }
    Ok(())
}

/// The labels of a peer's series.
fn peer_labels<'a>(table: &'a HostTable, p: &'a PeerRow) -> [(&'static str, &'a str); 3] {
    let interface = table
        .interfaces
        .get(p.interface)
        .map_or("", |i| i.name.as_str());
    [
        ("interface", interface),
        ("public_key", p.key()),
        ("name", p.name.as_deref().unwrap_or("")),
    ]
}

impl Collector for HostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let table = self.current();
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        encode_gauges(
            &mut encoder,
            Desc {
                name: "wireguard_interface_peers",
                help: "Peers configured on the interface.",
                unit: None,
            },
            &table.interfaces,
            |i| [("interface", i.name.as_str())],
            |i| count(i.peers),
        )?;
        encode_gauges(
            &mut encoder,
            Desc {
                name: "wireguard_interface_connected_peers",
                help:
                    "Peers of the interface connected now (handshake within the connect threshold).",
                unit: None,
            },
            &table.interfaces,
            |i| [("interface", i.name.as_str())],
            |i| count(i.connected),
        )?;
        if !self.per_peer {
            return Ok(());
        }
        encode_gauges(
            &mut encoder,
            Desc {
                name: "wireguard_peer_connected",
                help:
                    "1 if the peer is connected (handshake within the connect threshold), else 0.",
                unit: None,
            },
            &table.peers,
            |p| peer_labels(&table, p),
            |p| i64::from(p.connected),
        )?;
        encode_gauges(
            &mut encoder,
            Desc {
                name: "wireguard_peer_last_handshake",
                help: "Unix time of the peer's latest handshake (0: never).",
                unit: Some(&Unit::Seconds),
            },
            &table.peers,
            |p| peer_labels(&table, p),
            |p| p.last_handshake,
        )?;
        encode_counters(
            &mut encoder,
            Desc {
                name: "wireguard_peer_receive",
                help: "Bytes received from the peer (the interface's counter).",
                unit: Some(&Unit::Bytes),
            },
            &table.peers,
            |p| peer_labels(&table, p),
            |p| p.rx_bytes,
        )?;
        encode_counters(
            &mut encoder,
            Desc {
                name: "wireguard_peer_transmit",
                help: "Bytes sent to the peer (the interface's counter).",
                unit: Some(&Unit::Bytes),
            },
            &table.peers,
            |p| peer_labels(&table, p),
            |p| p.tx_bytes,
        )
    }
}

/// Serves `GET /metrics` on `listen` until `shutdown` resolves. Fails at
/// once, naming the address, when it cannot be bound.
pub async fn serve(
    listen: SocketAddr,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {listen} for metrics (metrics.listen): {e}"),
        )
    })?;
    serve_listener(listener, metrics, shutdown).await
}

/// At most this many metrics connections are served at once; more are
/// closed as soon as they are accepted, so a flood of connections costs a
/// bounded number of file descriptors.
pub const MAX_CONNECTIONS: usize = 32;

/// A connection must send its request head within this time.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection is closed after this long, whatever it is doing (a
/// scrape of 100,000 peers takes well under a second).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// [`serve`] on a listener bound by the caller (tests bind `127.0.0.1:0`).
///
/// Bounded so that the port cannot starve the daemon of file descriptors
/// or time: at most [`MAX_CONNECTIONS`] at once, [`HEADER_TIMEOUT`] to send
/// a request head, [`CONNECTION_TIMEOUT`] in all, one request per
/// connection. An accept error (EMFILE) pauses accepting briefly instead of
/// spinning.
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(listen = %addr, "serving metrics at /metrics");
    }
    let app = router(metrics);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: cannot accept a connection; pausing 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::debug!(
                max = MAX_CONNECTIONS,
                "metrics: too many connections; closing a new one"
            );
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let _permit = permit;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false);
            let served = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, served).await;
        });
    }
    connections.shutdown().await;
    Ok(())
}

fn router(metrics: Metrics) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                // Encoding 100,000 peers takes a while: keep it off the
                // threads that run the poll loop and the deliveries.
                match tokio::task::spawn_blocking(move || metrics.encode()).await {
                    Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
                    Err(e) => {
                        tracing::error!(error = %e, "metrics encoding failed");
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                }
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{DateTime, TimeDelta, TimeZone as _, Utc};

    use super::*;
    use crate::model::{Interface, Peer};
    use crate::tracker::{self, Announce, Settings};

    /// One sample of a scrape: metric name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// Parses the Prometheus/OpenMetrics text format (samples only).
    fn parse(text: &str) -> Vec<Sample> {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().expect("sample value");
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    (name.to_string(), parse_labels(body))
                }
            };
            samples.push((name, labels, value));
        }
        samples
    }

    fn parse_labels(mut body: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        while !body.is_empty() {
            let (key, rest) = body.split_once("=\"").expect("label key");
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next().expect("unterminated label value") {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().expect("escape").1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.to_string(), value);
            body = rest[end + 1..].trim_start_matches(',');
        }
        labels
    }

    /// The value of the sample with exactly these labels.
    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|s| s.2)
    }

    fn count(samples: &[Sample], name: &str) -> usize {
        samples.iter().filter(|s| s.0 == name).count()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    fn key(n: u32) -> PublicKey {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&n.to_be_bytes());
        PublicKey(k)
    }

    fn peer(n: u32, handshake_ago: Option<i64>, rx: u64, tx: u64) -> Peer {
        Peer {
            public_key: key(n),
            last_handshake: handshake_ago.map(|s| now() - TimeDelta::seconds(s)),
            rx_bytes: rx,
            tx_bytes: tx,
            ..Peer::default()
        }
    }

    fn interface(name: &str, peers: Vec<Peer>) -> Interface {
        Interface {
            name: name.to_string(),
            peers,
            ..Interface::default()
        }
    }

    fn settings() -> Settings {
        Settings {
            connect_threshold: TimeDelta::seconds(180),
            endpoint_updates: true,
            announce_on_start: Announce::Connected,
            host: "test".to_string(),
            filter: Default::default(),
        }
    }

    /// wg0: peer 1 connected (handshake 10s ago), peer 2 stale (1h ago),
    /// peer 3 never; wg1: peer 4 connected.
    fn scenario() -> Snapshot {
        Snapshot {
            interfaces: vec![
                interface(
                    "wg0",
                    vec![
                        peer(1, Some(10), 1000, 2000),
                        peer(2, Some(3600), 5, 6),
                        peer(3, None, 0, 0),
                    ],
                ),
                interface("wg1", vec![peer(4, Some(0), 7, 8)]),
            ],
            unreadable: Vec::new(),
        }
    }

    fn names() -> HashMap<PublicKey, PeerLabel> {
        HashMap::from([(
            key(1),
            PeerLabel {
                name: "alice \"laptop\"".to_string(),
                user: "alice".to_string(),
                ..PeerLabel::default()
            },
        )])
    }

    fn observed(per_peer: bool, snapshot: &Snapshot) -> (Metrics, Vec<Event>) {
        let metrics = Metrics::new(per_peer);
        let (state, events) = tracker::track(None, snapshot, now(), &settings());
        metrics.observe_poll(Duration::from_millis(3), snapshot, &state, &names());
        (metrics, events)
    }

    #[test]
    fn a_known_poll_gives_the_expected_peer_and_interface_values() {
        let (metrics, _) = observed(true, &scenario());
        let text = metrics.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let s = parse(&text);
        let k1 = key(1).to_base64();
        let alice = [
            ("interface", "wg0"),
            ("public_key", k1.as_str()),
            ("name", "alice \"laptop\""),
        ];
        assert_eq!(value(&s, "wireguard_peer_connected", &alice), Some(1.0));
        let handshake = (now() - TimeDelta::seconds(10)).timestamp() as f64;
        assert_eq!(
            value(&s, "wireguard_peer_last_handshake_seconds", &alice),
            Some(handshake)
        );
        assert_eq!(
            value(&s, "wireguard_peer_receive_bytes_total", &alice),
            Some(1000.0)
        );
        assert_eq!(
            value(&s, "wireguard_peer_transmit_bytes_total", &alice),
            Some(2000.0)
        );
        let k2 = key(2).to_base64();
        let stale = [("interface", "wg0"), ("public_key", &k2), ("name", "")];
        assert_eq!(value(&s, "wireguard_peer_connected", &stale), Some(0.0));
        let k3 = key(3).to_base64();
        let never = [("interface", "wg0"), ("public_key", &k3), ("name", "")];
        assert_eq!(
            value(&s, "wireguard_peer_last_handshake_seconds", &never),
            Some(0.0)
        );
        let k4 = key(4).to_base64();
        let wg1 = [("interface", "wg1"), ("public_key", &k4), ("name", "")];
        assert_eq!(value(&s, "wireguard_peer_connected", &wg1), Some(1.0));
        assert_eq!(count(&s, "wireguard_peer_connected"), 4);

        assert_eq!(
            value(&s, "wireguard_interface_peers", &[("interface", "wg0")]),
            Some(3.0)
        );
        assert_eq!(
            value(
                &s,
                "wireguard_interface_connected_peers",
                &[("interface", "wg0")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &s,
                "wireguard_interface_connected_peers",
                &[("interface", "wg1")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "wghook_poll_duration_seconds_count", &[]),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "wghook_poll_duration_seconds_sum", &[]),
            Some(0.003)
        );
        assert_eq!(
            value(
                &s,
                "wghook_poll_duration_seconds_bucket",
                &[("le", "0.004")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &s,
                "wghook_poll_duration_seconds_bucket",
                &[("le", "0.002")]
            ),
            Some(0.0)
        );
    }

    #[test]
    fn vanished_peers_and_interfaces_disappear_at_the_next_poll() {
        let first = scenario();
        let (metrics, _) = observed(true, &first);
        let mut second = first.clone();
        second.interfaces.truncate(1);
        second.interfaces[0].peers.remove(0);
        let (state, _) = tracker::track(None, &second, now(), &settings());
        metrics.observe_poll(Duration::from_millis(1), &second, &state, &names());
        let s = parse(&metrics.encode());
        assert_eq!(count(&s, "wireguard_peer_connected"), 2);
        assert!(!s
            .iter()
            .any(|(_, l, _)| l.get("interface").is_some_and(|i| i == "wg1")));
        assert!(!s
            .iter()
            .any(|(_, l, _)| l.get("public_key") == Some(&key(1).to_base64())));
        assert_eq!(
            value(&s, "wireguard_interface_peers", &[("interface", "wg0")]),
            Some(2.0)
        );
        assert_eq!(
            value(&s, "wghook_poll_duration_seconds_count", &[]),
            Some(2.0)
        );
    }

    #[test]
    fn without_per_peer_metrics_no_series_names_a_peer() {
        let (metrics, _) = observed(false, &scenario());
        let text = metrics.encode();
        assert!(!text.contains("public_key"), "{text}");
        assert!(!text.contains("wireguard_peer_"), "{text}");
        assert!(!text.contains("alice"), "{text}");
        let s = parse(&text);
        assert_eq!(
            value(&s, "wireguard_interface_peers", &[("interface", "wg0")]),
            Some(3.0)
        );
        assert_eq!(
            value(
                &s,
                "wireguard_interface_connected_peers",
                &[("interface", "wg1")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn wghook_counts_its_own_work() {
        let (metrics, events) = observed(true, &scenario());
        // The first poll announces the two connected peers.
        metrics.events(&events);
        metrics.poll_error();
        metrics.poll_error();
        metrics.dropped(3);
        metrics.delivery("ops", "delivered");
        metrics.delivery("ops", "delivered");
        metrics.delivery("ops", "retry");
        metrics.set_queue("ops", 4, 1, Some(Duration::from_millis(2500)));
        metrics.set_queue("audit", 0, 0, None);
        let s = parse(&metrics.encode());
        assert_eq!(value(&s, "wghook_poll_errors_total", &[]), Some(2.0));
        assert_eq!(value(&s, "wghook_dropped_events_total", &[]), Some(3.0));
        assert_eq!(
            value(&s, "wghook_events_total", &[("kind", "peer.connect")]),
            Some(2.0)
        );
        let ops_ok = [("webhook", "ops"), ("outcome", "delivered")];
        assert_eq!(value(&s, "wghook_deliveries_total", &ops_ok), Some(2.0));
        let ops_retry = [("webhook", "ops"), ("outcome", "retry")];
        assert_eq!(value(&s, "wghook_deliveries_total", &ops_retry), Some(1.0));
        let ops = [("webhook", "ops")];
        assert_eq!(value(&s, "wghook_pending_events", &ops), Some(4.0));
        assert_eq!(value(&s, "wghook_given_up_events", &ops), Some(1.0));
        assert_eq!(
            value(&s, "wghook_oldest_pending_age_seconds", &ops),
            Some(2.5)
        );
        let audit = [("webhook", "audit")];
        assert_eq!(
            value(&s, "wghook_oldest_pending_age_seconds", &audit),
            Some(0.0)
        );

        metrics.forget_webhook("ops");
        let s = parse(&metrics.encode());
        assert_eq!(value(&s, "wghook_pending_events", &ops), None);
        assert_eq!(value(&s, "wghook_pending_events", &audit), Some(0.0));
        assert_eq!(value(&s, "wghook_deliveries_total", &ops_ok), Some(2.0));
    }

    #[test]
    fn a_webhook_health_is_a_gauge_forgotten_with_the_webhook() {
        let metrics = Metrics::new(true);
        metrics.set_healthy("ops", true);
        metrics.set_healthy("audit", true);
        metrics.set_healthy("audit", false);
        let s = parse(&metrics.encode());
        let (ops, audit) = ([("webhook", "ops")], [("webhook", "audit")]);
        assert_eq!(value(&s, "wghook_webhook_healthy", &ops), Some(1.0));
        assert_eq!(value(&s, "wghook_webhook_healthy", &audit), Some(0.0));
        metrics.forget_webhook("audit");
        let s = parse(&metrics.encode());
        assert_eq!(value(&s, "wghook_webhook_healthy", &audit), None);
    }

    #[tokio::test]
    async fn serve_answers_a_real_scrape_and_stops_on_shutdown() {
        let (metrics, _) = observed(true, &scenario());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_listener(listener, metrics, async {
            let _ = stopped.await;
        }));

        let client = reqwest::Client::new();
        let response = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()[reqwest::header::CONTENT_TYPE],
            CONTENT_TYPE
        );
        let s = parse(&response.text().await.unwrap());
        assert_eq!(
            value(&s, "wireguard_interface_peers", &[("interface", "wg0")]),
            Some(3.0)
        );
        assert_eq!(count(&s, "wireguard_peer_receive_bytes_total"), 4);

        let missing = client
            .get(format!("http://{addr}/other"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);

        stop.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server stops on shutdown")
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn serve_fails_clearly_when_the_address_is_taken() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve(addr, Metrics::new(true), std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        assert!(err.to_string().contains("metrics.listen"), "{err}");
    }
}
