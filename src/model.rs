//! Plain data describing what a WireGuard host looks like at one instant.
//!
//! A [`Snapshot`] is what a backend returns from one poll; the tracker compares
//! snapshots. Invariants: keys are raw 32-byte arrays (no per-peer strings that
//! can be derived), and nothing here holds a private or preshared key: a backend
//! records only *whether* a preshared key is set. `Debug` of a [`PublicKey`]
//! prints its base64 form, which is public by definition.

use std::fmt;
use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A Curve25519 public key as WireGuard uses it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PublicKey(pub [u8; 32]);

/// Why a textual key could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key is not valid base64")]
    Base64,
    #[error("key is not valid hex")]
    Hex,
    #[error("key is {0} bytes long, expected 32")]
    Length(usize),
}

impl PublicKey {
    /// Standard base64 with padding, as `wg` prints keys.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// Parses the base64 form `wg` prints.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        let bytes = B64.decode(s.trim()).map_err(|_| KeyError::Base64)?;
        Self::from_slice(&bytes)
    }

    /// Parses the lowercase hex form the UAPI protocol uses.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return Err(KeyError::Length(s.len() / 2));
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| KeyError::Hex)?;
        Ok(Self(out))
    }

    /// Takes exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        Ok(Self(arr))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PublicKey::from_base64(&s).map_err(serde::de::Error::custom)
    }
}

/// Which implementation serves an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// The Linux kernel module, read over generic netlink.
    Kernel,
    /// wireguard-go, boringtun or another UAPI speaker.
    #[default]
    Userspace,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Kernel => "kernel",
            DriverKind::Userspace => "userspace",
        }
    }
}

/// One WireGuard interface and its peers as read in one poll.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name, e.g. `wg0`; unique on the host.
    pub name: String,
    /// `None` when the interface has no private key configured yet.
    pub public_key: Option<PublicKey>,
    /// 0 when unset.
    pub listen_port: u16,
    /// 0 when unset.
    pub fwmark: u32,
    pub driver: DriverKind,
    /// Addresses on the interface, when the backend can tell (kernel, via rtnetlink).
    pub addresses: Vec<IpNet>,
    /// MTU when the backend can tell.
    pub mtu: Option<u32>,
    /// Peers in the order the implementation lists them.
    pub peers: Vec<Peer>,
}

/// A peer's allowed IPs, in the order the implementation lists them. Most
/// peers have one, which is kept inline: at 100,000 peers that is 100,000
/// allocations fewer per copy (the snapshot, the tracker's state, the
/// simulated host's), about 2.4 MB each.
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AllowedIps(smallvec::SmallVec<[IpNet; 1]>);

impl AllowedIps {
    /// No allowed IP.
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `n` without reallocating.
    pub fn with_capacity(n: usize) -> Self {
        Self(smallvec::SmallVec::with_capacity(n))
    }

    pub fn push(&mut self, net: IpNet) {
        self.0.push(net);
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn as_slice(&self) -> &[IpNet] {
        &self.0
    }

    /// Moves every item of `other` to the end.
    pub fn append(&mut self, other: &mut Vec<IpNet>) {
        self.0.extend(other.drain(..));
    }

    /// Releases spare room (after a decoder grew the list).
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

impl std::ops::Deref for AllowedIps {
    type Target = [IpNet];
    fn deref(&self) -> &[IpNet] {
        &self.0
    }
}

impl std::ops::DerefMut for AllowedIps {
    fn deref_mut(&mut self) -> &mut [IpNet] {
        &mut self.0
    }
}

impl fmt::Debug for AllowedIps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl From<Vec<IpNet>> for AllowedIps {
    fn from(v: Vec<IpNet>) -> Self {
        Self(smallvec::SmallVec::from_vec(v))
    }
}

impl FromIterator<IpNet> for AllowedIps {
    fn from_iter<I: IntoIterator<Item = IpNet>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl Extend<IpNet> for AllowedIps {
    fn extend<I: IntoIterator<Item = IpNet>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl<'a> IntoIterator for &'a AllowedIps {
    type Item = &'a IpNet;
    type IntoIter = std::slice::Iter<'a, IpNet>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for AllowedIps {
    type Item = IpNet;
    type IntoIter = smallvec::IntoIter<[IpNet; 1]>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<const N: usize> PartialEq<[IpNet; N]> for AllowedIps {
    fn eq(&self, other: &[IpNet; N]) -> bool {
        self.0.as_slice() == other.as_slice()
    }
}

impl PartialEq<Vec<IpNet>> for AllowedIps {
    fn eq(&self, other: &Vec<IpNet>) -> bool {
        self.0.as_slice() == other.as_slice()
    }
}

/// One peer of an interface as read in one poll.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Peer {
    pub public_key: PublicKey,
    /// Where the peer was last seen, if ever.
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: AllowedIps,
    /// Seconds; 0 means off.
    pub persistent_keepalive: u16,
    /// Whether a preshared key is configured. The key itself is never kept.
    pub has_preshared_key: bool,
    /// Latest handshake (wall clock); `None` if none ever happened.
    pub last_handshake: Option<DateTime<Utc>>,
    /// Bytes received from the peer (the host's point of view).
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("public_key", &self.public_key)
            .field("endpoint", &self.endpoint)
            .field("allowed_ips", &self.allowed_ips)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("has_preshared_key", &self.has_preshared_key)
            .field("last_handshake", &self.last_handshake)
            .field("rx_bytes", &self.rx_bytes)
            .field("tx_bytes", &self.tx_bytes)
            .finish()
    }
}

/// The latest ping check of one peer (`monitor.ping_checks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PingStatus {
    /// The latest round's echo request was answered.
    pub pingable: bool,
    /// When an echo request was last answered; `None` if never.
    pub last_ping: Option<DateTime<Utc>>,
}

/// Ping results by interface name, then peer. Peers absent from it count as
/// not pingable.
pub type Pings =
    std::collections::HashMap<String, std::collections::HashMap<PublicKey, PingStatus>>;

/// Everything one poll saw, interfaces in a stable (name) order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub interfaces: Vec<Interface>,
    /// Interfaces that exist but could not be read this poll (garbled reply,
    /// timeout). The tracker keeps their previous state untouched instead of
    /// treating them as deleted.
    pub unreadable: Vec<String>,
}

impl Snapshot {
    /// Sorts interfaces by name so that event order does not depend on
    /// directory or netlink listing order.
    pub fn normalize(&mut self) {
        self.interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        self.unreadable.sort();
        self.unreadable.dedup();
    }

    /// Total number of peers over all interfaces.
    pub fn peer_count(&self) -> usize {
        self.interfaces.iter().map(|i| i.peers.len()).sum()
    }
}

/// Which interfaces to watch: `include` (empty = all) minus `exclude`.
/// Patterns are interface names with `*` matching any run of characters.
/// Serialisable so the tracker's saved state can remember the filter it was
/// built under.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InterfaceFilter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl InterfaceFilter {
    pub fn allows(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| glob_match(p, name)))
            && !self.exclude.iter().any(|p| glob_match(p, name))
    }
}

/// Matches `name` against a pattern where `*` stands for any run of characters.
fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    if parts.is_empty() {
        return rest.is_empty();
    }
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(pos) => rest = &rest[pos + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_between_hex_and_base64() {
        let b64 = "Fb5TaziAs1WrPBjC/MFbWsIelVXvi0hDKZ3YQM9wmU8=";
        let key = PublicKey::from_base64(b64).unwrap();
        assert_eq!(key.to_base64(), b64);
        let hex = hex::encode(key.0);
        assert_eq!(PublicKey::from_hex(&hex).unwrap(), key);
    }

    #[test]
    fn bad_keys_are_rejected_with_the_reason() {
        assert_eq!(PublicKey::from_base64("not base64!"), Err(KeyError::Base64));
        assert_eq!(PublicKey::from_base64("AAAA"), Err(KeyError::Length(3)));
        assert_eq!(PublicKey::from_hex("zz"), Err(KeyError::Length(1)));
        assert_eq!(PublicKey::from_hex(&"zz".repeat(32)), Err(KeyError::Hex));
    }

    #[test]
    fn filter_includes_and_excludes_with_wildcards() {
        let all = InterfaceFilter::default();
        assert!(all.allows("wg0"));
        let f = InterfaceFilter {
            include: vec!["wg*".into(), "vpn".into()],
            exclude: vec!["wg-test*".into()],
        };
        assert!(f.allows("wg0"));
        assert!(f.allows("vpn"));
        assert!(!f.allows("vpn1"));
        assert!(!f.allows("wg-test3"));
        assert!(!f.allows("eth0"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("*", ""));
    }
}
