//! The simulated backend: a scripted WireGuard host for the demo and tests.
//!
//! A [`Scenario`] is a list of steps, each at an offset from the scenario's
//! start (the `now` of the first poll). Every poll applies the steps that are
//! due and returns the resulting host. Invariants: steps apply in file order
//! for equal offsets; a step naming an unknown interface or peer, or an
//! offset that is not at most [`MAX_OFFSET`] (a year), is an error when the
//! scenario is loaded (and so at `wghook check`), never at poll time.
//!
//! ```yaml
//! steps:
//!   - at: 0s
//!     add_interface: { name: wg0, listen_port: 51820 }
//!   - at: 0s
//!     add_peer: { interface: wg0, peer: alice, allowed_ips: [10.8.0.2/32] }
//!   - at: 20s
//!     handshake: { interface: wg0, peer: alice, endpoint: "198.51.100.7:51820" }
//!   - at: 20s
//!     traffic: { interface: wg0, peer: alice, rx: 1860, tx: 10824 }
//! ```
//!
//! Peers are named; a name that is not a base64 key gets a key derived from
//! the name, so scenarios stay readable.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use ipnet::IpNet;
use serde::Deserialize;

use super::{Backend, InterfaceFilter, PollFuture};
use crate::model::{DriverKind, Interface, Peer, PublicKey, Snapshot};

/// A whole scenario.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub steps: Vec<Step>,
}

/// One scripted change, due `at` after the scenario started.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(deserialize_with = "de_offset")]
    pub at: TimeDelta,
    #[serde(flatten)]
    pub action: Action,
}

/// What a step does.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    AddInterface {
        name: String,
        #[serde(default)]
        listen_port: u16,
        #[serde(default)]
        fwmark: u32,
        /// Base64 key or a name to derive one from; defaults to the interface name.
        #[serde(default)]
        public_key: Option<String>,
    },
    RemoveInterface {
        name: String,
    },
    /// Changes the interface's listen port.
    SetListenPort {
        name: String,
        listen_port: u16,
    },
    AddPeer {
        interface: String,
        peer: String,
        #[serde(default)]
        allowed_ips: Vec<IpNet>,
        #[serde(default)]
        endpoint: Option<SocketAddr>,
        #[serde(default)]
        persistent_keepalive: u16,
        #[serde(default)]
        preshared_key: bool,
    },
    /// Many peers at once (hosts of 100,000 peers): `{prefix}{i}` for `i`
    /// in `0..count`, each allowing the `i+1`-th address of `network` alone.
    AddPeers {
        interface: String,
        count: u32,
        #[serde(default = "default_prefix")]
        prefix: String,
        network: IpNet,
    },
    RemovePeer {
        interface: String,
        peer: String,
    },
    SetAllowedIps {
        interface: String,
        peer: String,
        allowed_ips: Vec<IpNet>,
    },
    /// A handshake completes now (optionally from a new endpoint).
    Handshake {
        interface: String,
        peer: String,
        #[serde(default)]
        endpoint: Option<SocketAddr>,
    },
    /// Handshakes of many peers at once: `{prefix}{i}` for `i` = `from`,
    /// `from + every`, ... (`count` of them).
    Handshakes {
        interface: String,
        count: u32,
        #[serde(default = "default_prefix")]
        prefix: String,
        #[serde(default)]
        from: u32,
        #[serde(default = "one")]
        every: u32,
    },
    /// Bytes flow: counters grow by `rx` and `tx`.
    Traffic {
        interface: String,
        peer: String,
        #[serde(default)]
        rx: u64,
        #[serde(default)]
        tx: u64,
    },
    /// The peer's endpoint changes without a handshake.
    Roam {
        interface: String,
        peer: String,
        endpoint: SocketAddr,
    },
    /// Counters and handshake go back to zero, as when a peer is re-added.
    ResetCounters {
        interface: String,
        peer: String,
    },
}

fn default_prefix() -> String {
    "peer".to_string()
}

fn one() -> u32 {
    1
}

/// The `n`-th host address of `network` (1-based: the network's own
/// address is skipped), as a single-address network; `None` past its end.
fn nth_host(network: &IpNet, n: u32) -> Option<IpNet> {
    let n = u128::from(n);
    let host_bits = u32::from(network.max_prefix_len() - network.prefix_len());
    if 1u128.checked_shl(host_bits).is_some_and(|size| n >= size) {
        return None;
    }
    // Within the network, so neither sum overflows.
    let address = match network {
        IpNet::V4(net) => std::net::IpAddr::V4((u32::from(net.network()) + n as u32).into()),
        IpNet::V6(net) => std::net::IpAddr::V6((u128::from(net.network()) + n).into()),
    };
    Some(IpNet::from(address))
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: crate::files::ReadError,
    },
    #[error("scenario {path}: {message}")]
    Parse { path: String, message: String },
    #[error("scenario {path}: step {index} (at {at}s): {message}")]
    Step {
        path: String,
        index: usize,
        at: i64,
        message: String,
    },
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = crate::files::read_bounded_text(path, crate::files::MAX_SCENARIO_FILE).map_err(
            |source| ScenarioError::Read {
                path: path.display().to_string(),
                source,
            },
        )?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks scenario text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ScenarioError> {
        // One line per error (no source snippet): it is printed like a
        // configuration error, and it names the line and column.
        let mut options = serde_saphyr::Options::default();
        options.with_snippet = false;
        let scenario: Scenario =
            serde_saphyr::from_str_with_options(text, options).map_err(|e| {
                ScenarioError::Parse {
                    path: origin.to_string(),
                    message: e.to_string(),
                }
            })?;
        scenario.check(origin)?;
        Ok(scenario)
    }

    /// The offset of the last step: the scenario has nothing more to say after it.
    pub fn duration(&self) -> TimeDelta {
        self.steps.iter().map(|s| s.at).max().unwrap_or_default()
    }

    /// Replays the steps on an empty host so that every reference is known
    /// to resolve before any poll happens.
    fn check(&self, origin: &str) -> Result<(), ScenarioError> {
        let mut host = Host::default();
        let mut order: Vec<&Step> = self.steps.iter().collect();
        order.sort_by_key(|s| s.at);
        for step in order {
            let index = self
                .steps
                .iter()
                .position(|s| std::ptr::eq(s, step))
                .unwrap_or(0);
            host.apply(&step.action, DateTime::<Utc>::UNIX_EPOCH)
                .map_err(|message| ScenarioError::Step {
                    path: origin.to_string(),
                    index: index + 1,
                    at: step.at.num_seconds(),
                    message,
                })?;
        }
        Ok(())
    }
}

/// The latest offset a step may have: a scenario is played in real time, so
/// a year is already far beyond any use, and `start + at` stays far from
/// the ends of the calendar.
pub const MAX_OFFSET: TimeDelta = TimeDelta::days(365);

/// Parses offsets such as `90s`, `2m`, `1h30m`, `500ms` or a bare number of seconds.
fn de_offset<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TimeDelta, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Secs(s) => s.to_string(),
        Raw::Text(t) => t,
    };
    parse_offset(&text).map_err(serde::de::Error::custom)
}

/// `1h30m`, `45s`, `250ms`, `90` (seconds): a run of number+unit pairs, at
/// most [`MAX_OFFSET`]; the error says what is wrong with `text`.
pub fn parse_offset(text: &str) -> Result<TimeDelta, String> {
    let invalid = || format!("invalid offset {text:?} (use e.g. 30s, 2m, 1h30m)");
    let too_late = || format!("offset {text:?} is too late (at most 8760h, a year)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    if rest.bytes().all(|b| b.is_ascii_digit()) {
        return match rest.parse::<i64>().ok().and_then(TimeDelta::try_seconds) {
            Some(d) if d <= MAX_OFFSET => Ok(d),
            _ => Err(too_late()),
        };
    }
    let mut total = TimeDelta::zero();
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        // Only digits: a parse failure is an overflow.
        let n: i64 = rest[..digits].parse().map_err(|_| too_late())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => TimeDelta::try_milliseconds(n),
            "s" => TimeDelta::try_seconds(n),
            "m" => TimeDelta::try_minutes(n),
            "h" => TimeDelta::try_hours(n),
            "d" => TimeDelta::try_days(n),
            _ => return Err(invalid()),
        };
        total = part
            .and_then(|part| total.checked_add(&part))
            .filter(|t| *t <= MAX_OFFSET)
            .ok_or_else(too_late)?;
    }
    Ok(total)
}

/// A key for a scenario peer: the key itself if it is one, else derived from the name.
pub fn key_for(name: &str) -> PublicKey {
    if let Ok(key) = PublicKey::from_base64(name) {
        return key;
    }
    // FNV-1a over the name, stretched to 32 bytes: stable across runs and platforms.
    let mut out = [0u8; 32];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (chunk, slot) in out.chunks_mut(8).enumerate() {
        for b in name.bytes().chain([chunk as u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        slot.copy_from_slice(&h.to_le_bytes());
    }
    PublicKey(out)
}

/// The simulated host's current state.
#[derive(Debug, Default, Clone)]
struct Host {
    interfaces: BTreeMap<String, Interface>,
}

impl Host {
    fn peer_mut(&mut self, interface: &str, peer: &str) -> Result<&mut Peer, String> {
        let key = key_for(peer);
        let iface = self
            .interfaces
            .get_mut(interface)
            .ok_or_else(|| format!("no interface {interface:?}"))?;
        iface
            .peers
            .iter_mut()
            .find(|p| p.public_key == key)
            .ok_or_else(|| format!("no peer {peer:?} on {interface}"))
    }

    fn apply(&mut self, action: &Action, now: DateTime<Utc>) -> Result<(), String> {
        match action {
            Action::AddInterface {
                name,
                listen_port,
                fwmark,
                public_key,
            } => {
                if self.interfaces.contains_key(name) {
                    return Err(format!("interface {name:?} already exists"));
                }
                let key = key_for(public_key.as_deref().unwrap_or(name));
                self.interfaces.insert(
                    name.clone(),
                    Interface {
                        name: name.clone(),
                        public_key: Some(key),
                        listen_port: *listen_port,
                        fwmark: *fwmark,
                        driver: DriverKind::Userspace,
                        ..Interface::default()
                    },
                );
            }
            Action::RemoveInterface { name } => {
                self.interfaces
                    .remove(name)
                    .ok_or_else(|| format!("no interface {name:?}"))?;
            }
            Action::SetListenPort { name, listen_port } => {
                self.interfaces
                    .get_mut(name)
                    .ok_or_else(|| format!("no interface {name:?}"))?
                    .listen_port = *listen_port;
            }
            Action::AddPeer {
                interface,
                peer,
                allowed_ips,
                endpoint,
                persistent_keepalive,
                preshared_key,
            } => {
                let key = key_for(peer);
                let iface = self
                    .interfaces
                    .get_mut(interface)
                    .ok_or_else(|| format!("no interface {interface:?}"))?;
                if iface.peers.iter().any(|p| p.public_key == key) {
                    return Err(format!("peer {peer:?} already on {interface}"));
                }
                iface.peers.push(Peer {
                    public_key: key,
                    endpoint: *endpoint,
                    allowed_ips: allowed_ips.clone().into(),
                    persistent_keepalive: *persistent_keepalive,
                    has_preshared_key: *preshared_key,
                    ..Peer::default()
                });
            }
            Action::AddPeers {
                interface,
                count,
                prefix,
                network,
            } => {
                let iface = self
                    .interfaces
                    .get_mut(interface)
                    .ok_or_else(|| format!("no interface {interface:?}"))?;
                let known: std::collections::HashSet<PublicKey> =
                    iface.peers.iter().map(|p| p.public_key).collect();
                iface.peers.reserve(*count as usize);
                for i in 0..*count {
                    let name = format!("{prefix}{i}");
                    let key = key_for(&name);
                    if known.contains(&key) {
                        return Err(format!("peer {name:?} already on {interface}"));
                    }
                    let ip = nth_host(network, i + 1).ok_or_else(|| {
                        format!("{network} holds fewer than {count} host addresses")
                    })?;
                    iface.peers.push(Peer {
                        public_key: key,
                        allowed_ips: vec![ip].into(),
                        ..Peer::default()
                    });
                }
            }
            Action::Handshakes {
                interface,
                count,
                prefix,
                from,
                every,
            } => {
                if *every == 0 {
                    return Err("every must be at least 1".into());
                }
                let iface = self
                    .interfaces
                    .get_mut(interface)
                    .ok_or_else(|| format!("no interface {interface:?}"))?;
                let index: HashMap<PublicKey, usize> = iface
                    .peers
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.public_key, i))
                    .collect();
                for k in 0..u64::from(*count) {
                    let i = u64::from(*from) + k * u64::from(*every);
                    let name = format!("{prefix}{i}");
                    let at = index
                        .get(&key_for(&name))
                        .ok_or_else(|| format!("no peer {name:?} on {interface}"))?;
                    iface.peers[*at].last_handshake = Some(now);
                }
            }
            Action::RemovePeer { interface, peer } => {
                let key = key_for(peer);
                let iface = self
                    .interfaces
                    .get_mut(interface)
                    .ok_or_else(|| format!("no interface {interface:?}"))?;
                let before = iface.peers.len();
                iface.peers.retain(|p| p.public_key != key);
                if iface.peers.len() == before {
                    return Err(format!("no peer {peer:?} on {interface}"));
                }
            }
            Action::SetAllowedIps {
                interface,
                peer,
                allowed_ips,
            } => self.peer_mut(interface, peer)?.allowed_ips = allowed_ips.clone().into(),
            Action::Handshake {
                interface,
                peer,
                endpoint,
            } => {
                let p = self.peer_mut(interface, peer)?;
                p.last_handshake = Some(now);
                if endpoint.is_some() {
                    p.endpoint = *endpoint;
                }
            }
            Action::Traffic {
                interface,
                peer,
                rx,
                tx,
            } => {
                let p = self.peer_mut(interface, peer)?;
                p.rx_bytes = p.rx_bytes.saturating_add(*rx);
                p.tx_bytes = p.tx_bytes.saturating_add(*tx);
            }
            Action::Roam {
                interface,
                peer,
                endpoint,
            } => self.peer_mut(interface, peer)?.endpoint = Some(*endpoint),
            Action::ResetCounters { interface, peer } => {
                let p = self.peer_mut(interface, peer)?;
                p.rx_bytes = 0;
                p.tx_bytes = 0;
                p.last_handshake = None;
            }
        }
        Ok(())
    }
}

/// Plays a [`Scenario`] against the poll clock.
#[derive(Debug)]
pub struct SimBackend {
    steps: Vec<Step>,
    next: usize,
    start: Option<DateTime<Utc>>,
    host: Host,
    /// Interfaces of the last snapshot, given back: the next snapshot is
    /// copied into them instead of into new lists.
    spare: Vec<Interface>,
}

impl SimBackend {
    pub fn new(scenario: Scenario) -> Self {
        let mut steps = scenario.steps;
        // Stable: equal offsets keep file order.
        steps.sort_by_key(|s| s.at);
        Self {
            steps,
            next: 0,
            start: None,
            host: Host::default(),
            spare: Vec::new(),
        }
    }

    /// True once every step has been applied.
    pub fn finished(&self) -> bool {
        self.next >= self.steps.len()
    }

    /// Applies due steps and returns the host as it is at `now`.
    pub fn snapshot_at(&mut self, now: DateTime<Utc>, filter: &InterfaceFilter) -> Snapshot {
        let start = *self.start.get_or_insert(now);
        while let Some(step) = self.steps.get(self.next) {
            // Offsets are at most MAX_OFFSET, so this fails only for a
            // clock near the end of the calendar: then the step never comes.
            let Some(due) = start.checked_add_signed(step.at) else {
                break;
            };
            if due > now {
                break;
            }
            // References were checked at load time; a failure here would be a
            // bug in `check`, so log it rather than stop the demo.
            if let Err(e) = self.host.apply(&step.action, due) {
                tracing::warn!(step = self.next + 1, error = %e, "scenario step skipped");
            }
            self.next += 1;
        }
        let mut spare = std::mem::take(&mut self.spare);
        let mut snapshot = Snapshot {
            interfaces: self
                .host
                .interfaces
                .values()
                .filter(|i| filter.allows(&i.name))
                .map(|i| {
                    let at = spare.iter().position(|s| s.name == i.name);
                    match at.map(|at| spare.swap_remove(at)) {
                        Some(mut reused) => {
                            copy_into(&mut reused, i);
                            reused
                        }
                        None => i.clone(),
                    }
                })
                .collect(),
            unreadable: Vec::new(),
        };
        snapshot.normalize();
        snapshot
    }
}

/// Makes `dst` a copy of `src`, reusing `dst`'s lists.
fn copy_into(dst: &mut Interface, src: &Interface) {
    let Interface {
        name,
        public_key,
        listen_port,
        fwmark,
        driver,
        addresses,
        mtu,
        peers,
    } = src;
    dst.name.clone_from(name);
    dst.public_key = *public_key;
    dst.listen_port = *listen_port;
    dst.fwmark = *fwmark;
    dst.driver = *driver;
    dst.addresses.clone_from(addresses);
    dst.mtu = *mtu;
    dst.peers.clone_from(peers);
}

impl Backend for SimBackend {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn poll<'a>(&'a mut self, now: DateTime<Utc>, filter: &'a InterfaceFilter) -> PollFuture<'a> {
        let snapshot = self.snapshot_at(now, filter);
        Box::pin(async move { Ok(snapshot) })
    }

    fn recycle(&mut self, snapshot: Snapshot) {
        self.spare = snapshot.interfaces;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
steps:
  - at: 0s
    add_interface: { name: wg0, listen_port: 51820 }
  - at: 0s
    add_peer: { interface: wg0, peer: alice, allowed_ips: [10.8.0.2/32], persistent_keepalive: 25 }
  - at: 20s
    handshake: { interface: wg0, peer: alice, endpoint: "198.51.100.7:51820" }
  - at: 20s
    traffic: { interface: wg0, peer: alice, rx: 100, tx: 200 }
  - at: 1m
    roam: { interface: wg0, peer: alice, endpoint: "203.0.113.9:4000" }
  - at: 2m
    remove_peer: { interface: wg0, peer: alice }
"#;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + secs, 0).unwrap()
    }

    /// A snapshot given back is copied into by the next poll: same lists,
    /// same content as a fresh copy of the host.
    #[test]
    fn a_recycled_snapshot_is_reused_by_the_next_poll() {
        let text = "steps:\n  - {at: 0s, add_interface: {name: wg0, listen_port: 51820}}\n  - {at: 0s, add_peers: {interface: wg0, count: 500, prefix: p, network: 10.0.0.0/16}}\n  - {at: 2s, handshakes: {interface: wg0, count: 250, prefix: p, from: 0, every: 2}}\n";
        let scenario = Scenario::parse(text, "test").unwrap();
        let mut sim = SimBackend::new(scenario.clone());
        let mut fresh = SimBackend::new(scenario);
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let all = InterfaceFilter::default();
        let first = sim.snapshot_at(t0, &all);
        assert_eq!(first.interfaces[0].peers.len(), 500);
        let list = first.interfaces[0].peers.as_ptr();
        sim.recycle(first);
        // The handshakes step changes half the peers: the copy follows.
        let later = t0 + TimeDelta::seconds(3);
        let second = sim.snapshot_at(later, &all);
        fresh.snapshot_at(t0, &all);
        assert_eq!(second, fresh.snapshot_at(later, &all));
        assert_eq!(second.interfaces[0].peers.as_ptr(), list, "the same list");
        assert!(second.interfaces[0]
            .peers
            .iter()
            .any(|p| p.last_handshake.is_some()));
    }

    #[test]
    fn steps_apply_when_due_against_the_first_poll() {
        let mut sim = SimBackend::new(Scenario::parse(TEXT, "test").unwrap());
        let all = InterfaceFilter::default();
        let s0 = sim.snapshot_at(t(0), &all);
        assert_eq!(s0.interfaces.len(), 1);
        let alice = &s0.interfaces[0].peers[0];
        assert_eq!(alice.public_key, key_for("alice"));
        assert_eq!(alice.last_handshake, None);
        assert_eq!(alice.persistent_keepalive, 25);

        let s1 = sim.snapshot_at(t(30), &all);
        let alice = &s1.interfaces[0].peers[0];
        assert_eq!(
            alice.last_handshake,
            Some(t(20)),
            "handshake at its due time"
        );
        assert_eq!((alice.rx_bytes, alice.tx_bytes), (100, 200));
        assert_eq!(alice.endpoint, Some("198.51.100.7:51820".parse().unwrap()));

        let s2 = sim.snapshot_at(t(60), &all);
        assert_eq!(
            s2.interfaces[0].peers[0].endpoint,
            Some("203.0.113.9:4000".parse().unwrap())
        );
        assert!(!sim.finished());
        let s3 = sim.snapshot_at(t(120), &all);
        assert!(s3.interfaces[0].peers.is_empty());
        assert!(sim.finished());
    }

    /// Hosts of 100,000 peers fit in a scenario: bulk steps add peers with
    /// one address each and handshake every n-th of them.
    #[test]
    fn bulk_steps_add_many_peers_and_handshake_every_nth() {
        let text = "steps:\n  - at: 0s\n    add_interface: { name: wg0 }\n  \
                    - at: 0s\n    add_peers: { interface: wg0, count: 100000, prefix: p, network: 10.0.0.0/8 }\n  \
                    - at: 10s\n    handshakes: { interface: wg0, count: 3, prefix: p, from: 1, every: 2 }\n";
        let mut sim = SimBackend::new(Scenario::parse(text, "bulk").unwrap());
        let all = InterfaceFilter::default();
        assert_eq!(sim.snapshot_at(t(0), &all).peer_count(), 100_000);
        let s = sim.snapshot_at(t(20), &all);
        let peers = &s.interfaces[0].peers;
        assert_eq!(peers.len(), 100_000);
        assert_eq!(peers[0].public_key, key_for("p0"));
        assert_eq!(
            peers[0].allowed_ips,
            ["10.0.0.1/32".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            peers[99_999].allowed_ips,
            ["10.1.134.160/32".parse::<IpNet>().unwrap()]
        );
        let shook: Vec<usize> = (0..peers.len())
            .filter(|&i| peers[i].last_handshake == Some(t(10)))
            .collect();
        assert_eq!(shook, [1, 3, 5]);
        let small = "steps:\n  - at: 0s\n    add_interface: { name: wg0 }\n  \
                     - at: 0s\n    add_peers: { interface: wg0, count: 3, network: 10.0.0.0/31 }\n";
        let err = Scenario::parse(small, "s.yaml").unwrap_err().to_string();
        assert!(
            err.ends_with("10.0.0.0/31 holds fewer than 3 host addresses"),
            "{err}"
        );
        let six = "steps:\n  - at: 0s\n    add_interface: { name: wg0 }\n  \
                   - at: 0s\n    add_peers: { interface: wg0, count: 2, network: \"fd00::/64\" }\n";
        let mut sim = SimBackend::new(Scenario::parse(six, "six").unwrap());
        let s = sim.snapshot_at(t(0), &all);
        assert_eq!(
            s.interfaces[0].peers[1].allowed_ips,
            ["fd00::2/128".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn filter_hides_interfaces() {
        let mut sim = SimBackend::new(Scenario::parse(TEXT, "test").unwrap());
        let none = InterfaceFilter {
            include: vec![],
            exclude: vec!["wg*".into()],
        };
        assert!(sim.snapshot_at(t(0), &none).interfaces.is_empty());
    }

    #[test]
    fn unknown_peer_is_rejected_at_load_with_step_number() {
        let text = "steps:\n  - at: 5s\n    handshake: { interface: wg0, peer: bob }\n";
        let err = Scenario::parse(text, "s.yaml").unwrap_err().to_string();
        assert_eq!(err, "scenario s.yaml: step 1 (at 5s): no interface \"wg0\"");
    }

    #[test]
    fn offsets_parse_in_every_unit() {
        assert_eq!(parse_offset("90"), Ok(TimeDelta::seconds(90)));
        assert_eq!(parse_offset("1h30m"), Ok(TimeDelta::minutes(90)));
        assert_eq!(parse_offset("250ms"), Ok(TimeDelta::milliseconds(250)));
        assert_eq!(parse_offset("8760h"), Ok(MAX_OFFSET));
        for bad in ["5x", "m", "", "1h5", "-5s"] {
            assert_eq!(
                parse_offset(bad),
                Err(format!("invalid offset {bad:?} (use e.g. 30s, 2m, 1h30m)"))
            );
        }
    }

    /// Regression (issue 11): `at: 999999999999999h` panicked when the
    /// scenario was loaded (after `wghook check` had passed), and `u64::MAX`
    /// seconds wrapped to -1 s.
    #[test]
    fn offsets_out_of_range_are_refused_with_file_line_and_key() {
        for (at, shown) in [
            ("999999999999999h", "\"999999999999999h\""),
            ("18446744073709551615", "\"18446744073709551615\""),
            ("9223372036854775807ms", "\"9223372036854775807ms\""),
            ("8761h", "\"8761h\""),
            ("8760h1s", "\"8760h1s\""),
        ] {
            let text = format!("steps:\n  - at: 0s\n    add_interface: {{ name: wg0 }}\n  - at: {at}\n    remove_interface: {{ name: wg0 }}\n");
            let err = Scenario::parse(&text, "s.yaml").unwrap_err().to_string();
            assert!(err.starts_with("scenario s.yaml: "), "{err}");
            assert!(
                err.contains(&format!(
                    "offset {shown} is too late (at most 8760h, a year)"
                )),
                "{at}: {err}"
            );
            assert!(err.contains("line 4"), "{at}: {err}");
        }
    }

    #[test]
    fn a_clock_at_the_end_of_the_calendar_never_reaches_a_step() {
        let mut sim = SimBackend::new(Scenario::parse(TEXT, "test").unwrap());
        let end = DateTime::<Utc>::MAX_UTC;
        let all = InterfaceFilter::default();
        assert_eq!(sim.snapshot_at(end, &all).interfaces.len(), 1);
        assert!(!sim.finished(), "steps after 0s cannot be due");
    }

    #[test]
    fn derived_keys_are_stable_and_distinct() {
        assert_eq!(key_for("alice"), key_for("alice"));
        assert_ne!(key_for("alice"), key_for("bob"));
        let real = "Fb5TaziAs1WrPBjC/MFbWsIelVXvi0hDKZ3YQM9wmU8=";
        assert_eq!(key_for(real).to_base64(), real);
    }
}
