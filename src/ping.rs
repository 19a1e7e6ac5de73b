//! Optional ICMP echo checks of peers (`monitor.ping_checks`).
//!
//! Each round sends one echo request to every peer's target address and
//! waits up to [`PING_TIMEOUT`] for the answers; the results go with the
//! snapshot into the tracker ([`crate::tracker::track_changes_with_pings`]),
//! where a peer that answers counts as connected even without a recent
//! handshake, as in wg-portal.
//!
//! Split as everywhere else: [`targets`] (snapshot -> addresses) and
//! [`merge`] (round answers -> [`Pings`]) are pure; [`Pinger`] holds the
//! sockets and does the I/O. The daemon runs rounds in a [`PingTask`] of
//! their own, never inside a poll: a poll takes the latest completed
//! results, so a slow round (unanswered peers) cannot stretch it.
//!
//! Invariants:
//! - Sockets are opened once, at start ([`Pinger::new`]): unprivileged ICMP
//!   sockets (`SOCK_DGRAM`, allowed by `net.ipv4.ping_group_range`) where the
//!   host allows them, else raw sockets (root or `CAP_NET_RAW`). If neither
//!   opens for IPv4 the daemon does not start, and the error says which
//!   sysctl or capability is missing. IPv6 is optional (hosts without IPv6):
//!   then IPv6 targets are simply never pingable, with one warning.
//! - A target is the peer's `ping_address` if configured, else the address
//!   of its first allowed IP that can be pinged (not `0.0.0.0`/`::`, which
//!   Linux answers locally, nor multicast). Peers with neither are never
//!   pingable.
//! - Rounds never overlap: an address is pinged at most once per round, with
//!   the round's sequence number, so answers cannot be attributed to the
//!   wrong request.
//! - A full round runs every `ping_interval`; between rounds only peers
//!   without any result yet (new peers, the first poll) are pinged, so a new
//!   peer is not reported down for a whole interval.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::StreamExt as _;
use surge_ping::{Client, PingIdentifier, PingSequence, ICMP};
use tokio::sync::watch;

use crate::model::{PingStatus, Pings, PublicKey, Snapshot};

/// How long a round waits for answers.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Echo requests in flight at once (bounds the burst on hosts with many peers).
const MAX_IN_FLIGHT: usize = 512;

/// The echo payload: recognisable in a packet capture.
const PAYLOAD: &[u8; 16] = b"wghook ping chk\0";

/// Why ping checks cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    /// Neither an unprivileged nor a raw ICMP socket could be opened.
    #[error(
        "cannot open an ICMP socket for ping checks ({reason}); allow unprivileged ping \
         sockets for wghook's group with `sysctl net.ipv4.ping_group_range=\"GID GID\"` \
         (or \"0 2147483647\" for all), or grant CAP_NET_RAW (systemd: \
         AmbientCapabilities=CAP_NET_RAW), or set monitor.ping_checks: false"
    )]
    Socket {
        /// The system's reason, e.g. `permission denied`.
        reason: String,
    },
}

impl PingError {
    fn socket(e: &std::io::Error) -> Self {
        // surge-ping wraps EACCES/EPERM in advice of its own; ours replaces it.
        let reason = match e.raw_os_error() {
            Some(_) => e.to_string(),
            None => e.kind().to_string(),
        };
        PingError::Socket { reason }
    }
}

/// One address to ping and the peer it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub interface: String,
    pub peer: PublicKey,
    pub address: IpAddr,
}

/// Where each peer of the snapshot is pinged: its configured address, else
/// its first allowed IP's address that can be pinged. Peers without either
/// are left out (and so never pingable).
pub fn targets(snapshot: &Snapshot, configured: &HashMap<PublicKey, IpAddr>) -> Vec<Target> {
    let mut out = Vec::with_capacity(snapshot.peer_count());
    for iface in &snapshot.interfaces {
        for peer in &iface.peers {
            let address = configured.get(&peer.public_key).copied().or_else(|| {
                peer.allowed_ips
                    .iter()
                    .map(|net| net.addr())
                    .find(|a| !a.is_unspecified() && !a.is_multicast())
            });
            if let Some(address) = address {
                out.push(Target {
                    interface: iface.name.clone(),
                    peer: peer.public_key,
                    address,
                });
            }
        }
    }
    out
}

/// What a round pings: every target's address when a full round is `due`,
/// else only those of targets without a result yet (new peers); each
/// address once.
fn to_ping(all: &[Target], results: &Pings, due: bool) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = all
        .iter()
        .filter(|t| {
            due || !results
                .get(&t.interface)
                .is_some_and(|peers| peers.contains_key(&t.peer))
        })
        .map(|t| t.address)
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    addresses
}

/// The results after a round at `now`: a target whose address was pinged
/// gets `answers[address]` (and `last_ping = now` if answered, else its
/// previous `last_ping`); a target not pinged this time keeps its previous
/// status; peers that are no longer targets are dropped.
pub fn merge(
    prev: &Pings,
    targets: &[Target],
    answers: &HashMap<IpAddr, bool>,
    now: DateTime<Utc>,
) -> Pings {
    let mut out = Pings::new();
    for t in targets {
        let before = prev
            .get(&t.interface)
            .and_then(|peers| peers.get(&t.peer))
            .copied();
        let status = match (answers.get(&t.address), before) {
            (Some(true), _) => PingStatus {
                pingable: true,
                last_ping: Some(now),
            },
            (Some(false), before) => PingStatus {
                pingable: false,
                last_ping: before.and_then(|b| b.last_ping),
            },
            (None, Some(before)) => before,
            (None, None) => continue,
        };
        out.entry(t.interface.clone())
            .or_default()
            .insert(t.peer, status);
    }
    out
}

/// The ICMP sockets and the latest results.
pub struct Pinger {
    v4: Client,
    v6: Option<Client>,
    /// `unprivileged` or `raw`, for the start message.
    kind: &'static str,
    interval: Duration,
    next_round: Option<Instant>,
    ident: PingIdentifier,
    seq: u16,
    results: Pings,
}

impl std::fmt::Debug for Pinger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinger")
            .field("kind", &self.kind)
            .field("ipv6", &self.v6.is_some())
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Pinger {
    /// Opens the ICMP sockets (unprivileged first, raw as a fallback). Must
    /// be called within a tokio runtime.
    pub fn new(interval: Duration) -> Result<Self, PingError> {
        let open = |kind: ICMP| Client::new(&surge_ping::Config::builder().kind(kind).build());
        let v4 = open(ICMP::V4).map_err(|e| PingError::socket(&e))?;
        let v6 = match open(ICMP::V6) {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open an ICMPv6 socket: IPv6 peers are never pingable");
                None
            }
        };
        let kind = if v4.get_socket().get_type() == socket2::Type::DGRAM {
            "unprivileged"
        } else {
            "raw"
        };
        Ok(Self {
            v4,
            v6,
            kind,
            interval,
            next_round: None,
            ident: PingIdentifier(rand::random()),
            seq: 0,
            results: Pings::new(),
        })
    }

    /// `unprivileged` (ICMP datagram sockets) or `raw`.
    pub fn socket_kind(&self) -> &'static str {
        self.kind
    }

    /// Applies a new `ping_interval` from the next round on.
    pub fn set_interval(&mut self, interval: Duration) {
        if interval != self.interval {
            self.interval = interval;
            self.next_round = None;
        }
    }

    /// The latest results.
    pub fn results(&self) -> &Pings {
        &self.results
    }

    /// Pings what is due for this poll (everything once per interval, else
    /// only peers without a result yet) and returns the results for the
    /// tracker, stamped with the poll's `now`.
    pub async fn refresh(
        &mut self,
        snapshot: &Snapshot,
        configured: &HashMap<PublicKey, IpAddr>,
        now: DateTime<Utc>,
    ) -> &Pings {
        let all = targets(snapshot, configured);
        let due = self.next_round.is_none_or(|at| Instant::now() >= at);
        let addresses = to_ping(&all, &self.results, due);
        if due {
            self.next_round = Some(Instant::now() + self.interval);
        }
        let answers = if addresses.is_empty() {
            HashMap::new()
        } else {
            self.round(addresses).await
        };
        self.results = merge(&self.results, &all, &answers, now);
        &self.results
    }

    /// One echo request to each address; whether each was answered in time.
    pub async fn round(&mut self, addresses: Vec<IpAddr>) -> HashMap<IpAddr, bool> {
        self.seq = self.seq.wrapping_add(1);
        let seq = PingSequence(self.seq);
        let count = addresses.len();
        let started = Instant::now();
        let this = &*self;
        let answers: HashMap<IpAddr, bool> = futures::stream::iter(addresses)
            .map(|address| async move { (address, this.ping(address, seq).await) })
            .buffer_unordered(MAX_IN_FLIGHT)
            .collect()
            .await;
        tracing::debug!(
            addresses = count,
            answered = answers.values().filter(|a| **a).count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "ping round done"
        );
        answers
    }

    /// True if `address` answered within [`PING_TIMEOUT`].
    async fn ping(&self, address: IpAddr, seq: PingSequence) -> bool {
        let client = match address {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => match &self.v6 {
                Some(client) => client,
                None => return false,
            },
        };
        let mut pinger = client.pinger(address, self.ident).await;
        pinger.timeout(PING_TIMEOUT);
        match pinger.ping(seq, PAYLOAD).await {
            Ok(_) => true,
            Err(surge_ping::SurgeError::Timeout { .. }) => false,
            Err(e) => {
                tracing::debug!(address = %address, error = %e, "ping failed");
                false
            }
        }
    }
}

/// A source of ping rounds: [`Pinger`], or a stand-in in tests.
pub trait Round: Send + 'static {
    /// Pings each address once; whether each answered in time.
    fn round(&mut self, addresses: Vec<IpAddr>) -> BoxFuture<'_, HashMap<IpAddr, bool>>;
}

impl Round for Pinger {
    fn round(&mut self, addresses: Vec<IpAddr>) -> BoxFuture<'_, HashMap<IpAddr, bool>> {
        Box::pin(Pinger::round(self, addresses))
    }
}

/// Ping rounds in a task of their own, so that a long round (10,000 peers
/// that do not answer take about 20 s) never stretches a poll: each poll
/// hands the task its targets and takes the latest completed results.
///
/// The task pings every target once per `ping_interval`, and a new target
/// (a peer without a result) as soon as a poll names it.
pub struct PingTask {
    targets: watch::Sender<Arc<Vec<Target>>>,
    results: watch::Receiver<Arc<Pings>>,
    interval: watch::Sender<Duration>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PingTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PingTask")
            .field("interval", &*self.interval.borrow())
            .finish_non_exhaustive()
    }
}

impl PingTask {
    /// Starts the task on `prober` (inside a tokio runtime).
    pub fn spawn(prober: impl Round, interval: Duration) -> Self {
        let (targets, targets_rx) = watch::channel(Arc::new(Vec::new()));
        let (results_tx, results) = watch::channel(Arc::new(Pings::new()));
        let (interval, interval_rx) = watch::channel(interval);
        let task = tokio::spawn(run_rounds(prober, targets_rx, results_tx, interval_rx));
        Self {
            targets,
            results,
            interval,
            task,
        }
    }

    /// Hands over this poll's targets (peers of `snapshot`) and returns the
    /// latest completed results. Never waits for a round.
    pub fn update(
        &self,
        snapshot: &Snapshot,
        configured: &HashMap<PublicKey, IpAddr>,
    ) -> Arc<Pings> {
        let next = targets(snapshot, configured);
        self.targets.send_if_modified(|current| {
            let changed = **current != next;
            if changed {
                *current = Arc::new(next);
            }
            changed
        });
        Arc::clone(&self.results.borrow())
    }

    /// Applies a new `ping_interval` from the next round on.
    pub fn set_interval(&self, interval: Duration) {
        self.interval.send_if_modified(|current| {
            let changed = *current != interval;
            *current = interval;
            changed
        });
    }
}

impl Drop for PingTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run_rounds(
    mut prober: impl Round,
    mut targets: watch::Receiver<Arc<Vec<Target>>>,
    results: watch::Sender<Arc<Pings>>,
    mut interval: watch::Receiver<Duration>,
) {
    let mut latest = Pings::new();
    let mut next_round: Option<tokio::time::Instant> = None;
    loop {
        let all = Arc::clone(&targets.borrow_and_update());
        let due = next_round.is_none_or(|at| tokio::time::Instant::now() >= at);
        if due {
            next_round = Some(tokio::time::Instant::now() + *interval.borrow_and_update());
        }
        let addresses = to_ping(&all, &latest, due);
        if !addresses.is_empty() || due {
            let answers = if addresses.is_empty() {
                HashMap::new()
            } else {
                prober.round(addresses).await
            };
            latest = merge(&latest, &all, &answers, Utc::now());
            results.send_replace(Arc::new(latest.clone()));
        }
        let wake = next_round.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            changed = targets.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            changed = interval.changed() => {
                if changed.is_err() {
                    return;
                }
                next_round = None;
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Interface, Peer};

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_607_200 + secs, 0).unwrap()
    }

    fn peer(n: u8, allowed: &[&str]) -> Peer {
        Peer {
            public_key: key(n),
            allowed_ips: allowed.iter().map(|a| a.parse().unwrap()).collect(),
            ..Peer::default()
        }
    }

    fn snapshot(peers: Vec<Peer>) -> Snapshot {
        Snapshot {
            interfaces: vec![Interface {
                name: "wg0".into(),
                peers,
                ..Interface::default()
            }],
            unreadable: Vec::new(),
        }
    }

    fn target(n: u8, address: &str) -> Target {
        Target {
            interface: "wg0".into(),
            peer: key(n),
            address: address.parse().unwrap(),
        }
    }

    #[test]
    fn targets_are_the_configured_address_or_the_first_pingable_allowed_ip() {
        let s = snapshot(vec![
            peer(1, &["10.8.0.2/32", "10.9.0.0/24"]),
            peer(2, &["0.0.0.0/0", "::/0"]),
            peer(3, &["0.0.0.0/0", "fd00::3/128"]),
            peer(4, &[]),
            peer(5, &["10.8.0.5/32"]),
            peer(6, &["224.0.0.0/4"]),
        ]);
        let configured = HashMap::from([
            (key(5), "192.168.1.5".parse().unwrap()),
            (key(4), "fd00::4".parse().unwrap()),
        ]);
        assert_eq!(
            targets(&s, &configured),
            [
                target(1, "10.8.0.2"),
                target(3, "fd00::3"),
                target(4, "fd00::4"),
                target(5, "192.168.1.5"),
            ]
        );
    }

    #[test]
    fn merge_stamps_answers_keeps_the_last_ping_and_forgets_removed_peers() {
        let prev = merge(
            &Pings::new(),
            &[
                target(1, "10.0.0.1"),
                target(2, "10.0.0.2"),
                target(3, "10.0.0.3"),
            ],
            &HashMap::from([
                ("10.0.0.1".parse().unwrap(), true),
                ("10.0.0.2".parse().unwrap(), true),
                ("10.0.0.3".parse().unwrap(), false),
            ]),
            at(0),
        );
        let status = |p: &Pings, n: u8| p.get("wg0").and_then(|m| m.get(&key(n))).copied();
        assert_eq!(
            status(&prev, 3),
            Some(PingStatus {
                pingable: false,
                last_ping: None
            })
        );
        // Peer 1 stops answering, peer 2 is not pinged this time (not due),
        // peer 3 is gone, peer 4 is new and answers.
        let next = merge(
            &prev,
            &[
                target(1, "10.0.0.1"),
                target(2, "10.0.0.2"),
                target(4, "10.0.0.4"),
            ],
            &HashMap::from([
                ("10.0.0.1".parse().unwrap(), false),
                ("10.0.0.4".parse().unwrap(), true),
            ]),
            at(30),
        );
        assert_eq!(
            status(&next, 1),
            Some(PingStatus {
                pingable: false,
                last_ping: Some(at(0))
            })
        );
        assert_eq!(status(&next, 2), status(&prev, 2));
        assert_eq!(status(&next, 3), None);
        assert_eq!(
            status(&next, 4),
            Some(PingStatus {
                pingable: true,
                last_ping: Some(at(30))
            })
        );
    }

    #[test]
    fn the_missing_capability_error_names_the_sysctl_and_the_capability() {
        let e = PingError::socket(&std::io::Error::from_raw_os_error(1));
        let text = e.to_string();
        assert!(
            text.starts_with(
                "cannot open an ICMP socket for ping checks (Operation not permitted (os error 1)); "
            ),
            "{text}"
        );
        let custom = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "long advice");
        assert!(PingError::socket(&custom)
            .to_string()
            .contains("(permission denied)"));
        assert!(text.contains("net.ipv4.ping_group_range"), "{text}");
        assert!(text.contains("CAP_NET_RAW"), "{text}");
        assert!(text.contains("monitor.ping_checks: false"), "{text}");
    }

    /// Real sockets: needs root, CAP_NET_RAW or a ping_group_range that
    /// holds the test's group (wghook's tests run as root).
    #[tokio::test]
    async fn loopback_answers_and_is_stamped_with_the_polls_time() {
        let mut pinger = Pinger::new(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
        let s = snapshot(vec![peer(1, &["10.8.0.2/32"])]);
        let configured = HashMap::from([(key(1), "127.0.0.1".parse().unwrap())]);
        let kind = pinger.socket_kind();
        let results = pinger.refresh(&s, &configured, at(5)).await;
        assert_eq!(
            results["wg0"][&key(1)],
            PingStatus {
                pingable: true,
                last_ping: Some(at(5))
            },
            "socket kind {kind}"
        );
        // Not due again for 30 s: a second poll reuses the result.
        let results = pinger.refresh(&s, &configured, at(10)).await;
        assert_eq!(results["wg0"][&key(1)].last_ping, Some(at(5)));
    }

    /// A prober whose rounds last as long as `answer` takes.
    struct Slow(tokio::sync::mpsc::UnboundedSender<usize>, Duration);

    impl Round for Slow {
        fn round(&mut self, addresses: Vec<IpAddr>) -> BoxFuture<'_, HashMap<IpAddr, bool>> {
            let _ = self.0.send(addresses.len());
            let wait = self.1;
            Box::pin(async move {
                tokio::time::sleep(wait).await;
                addresses.into_iter().map(|a| (a, true)).collect()
            })
        }
    }

    fn one_peer() -> Snapshot {
        Snapshot {
            interfaces: vec![Interface {
                name: "wgping".into(),
                peers: vec![Peer {
                    public_key: PublicKey([9; 32]),
                    allowed_ips: vec!["10.9.0.2/32".parse().unwrap()].into(),
                    ..Peer::default()
                }],
                ..Interface::default()
            }],
            unreadable: Vec::new(),
        }
    }

    /// Regression: ping rounds ran inside the poll, so 10,000 peers that
    /// do not answer (about 20 s a round) stretched every poll by as much.
    /// Now a poll takes the latest completed results and never waits.
    #[tokio::test(start_paused = true)]
    async fn a_slow_round_never_holds_up_a_poll() {
        let (tx, mut rounds) = tokio::sync::mpsc::unbounded_channel();
        let task = PingTask::spawn(Slow(tx, Duration::from_secs(20)), Duration::from_secs(60));
        let snapshot = one_peer();
        let polled = tokio::time::Instant::now();
        let first = task.update(&snapshot, &HashMap::new());
        assert!(first.is_empty(), "no round finished yet");
        assert_eq!(polled.elapsed(), Duration::ZERO, "the poll did not wait");
        assert_eq!(
            rounds.recv().await,
            Some(1),
            "the new peer is pinged at once"
        );
        // While the round runs, polls go on with what is known.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(task.update(&snapshot, &HashMap::new()).is_empty());
        tokio::time::sleep(Duration::from_secs(16)).await;
        let done = task.update(&snapshot, &HashMap::new());
        assert_eq!(
            done.get("wgping")
                .and_then(|p| p.get(&PublicKey([9; 32])))
                .map(|s| s.pingable),
            Some(true),
            "the completed round's result: {done:?}"
        );
    }
}
