//! The tracker's state and settings: what it keeps between polls, and how.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::InterfaceFilter;
use crate::event::{Event, InterfaceInfo};
use crate::model::{Peer, PublicKey};

/// Peers of one interface by public key.
///
/// Stored as a list in the order the last snapshot listed them, plus an index
/// by key: backends that list peers in a stable order (the kernel does) let
/// the tracker walk both lists side by side, sequentially in memory, instead
/// of one random hash lookup per peer. Serialised as a map by key.
///
/// Backends that list peers in a new order on every poll (wireguard-go uses
/// Go map order) defeat that; rebuilding the list for an order that will not
/// last costs more than the lookups, so the list is only put in the
/// snapshot's order when its set of peers changed or the order looked
/// stable (the previous poll matched it).
#[derive(Debug, Clone, Default)]
pub struct PeerMap {
    pub(super) list: Vec<PeerState>,
    index: HashMap<PublicKey, u32, KeyHash>,
    /// The last poll listed the peers in another order than the list's.
    pub(super) disordered: bool,
}

impl PeerMap {
    pub fn with_capacity(n: usize) -> Self {
        PeerMap {
            list: Vec::with_capacity(n),
            index: HashMap::with_capacity_and_hasher(n, KeyHash),
            disordered: false,
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Position of `key` in the list.
    pub(super) fn find(&self, key: &PublicKey) -> Option<usize> {
        self.index.get(key).map(|&i| i as usize)
    }

    pub fn get(&self, key: &PublicKey) -> Option<&PeerState> {
        self.index.get(key).map(|&i| &self.list[i as usize])
    }

    pub fn get_mut(&mut self, key: &PublicKey) -> Option<&mut PeerState> {
        self.index.get(key).map(|&i| &mut self.list[i as usize])
    }

    /// Position of `key`, trying `hint` (where the previous key's successor
    /// is) first.
    pub(super) fn position(&self, key: &PublicKey, hint: usize) -> Option<usize> {
        match self.list.get(hint) {
            Some(p) if p.peer.public_key == *key => Some(hint),
            _ => self.find(key),
        }
    }

    /// Inserts or replaces the state of `key` (which must be `p`'s key).
    pub fn insert(&mut self, key: PublicKey, p: PeerState) {
        debug_assert_eq!(key, p.peer.public_key);
        match self.index.get(&key) {
            Some(&i) => self.list[i as usize] = p,
            None => {
                self.index.insert(key, self.list.len() as u32);
                self.list.push(p);
            }
        }
    }

    pub fn remove(&mut self, key: &PublicKey) -> Option<PeerState> {
        let i = self.index.remove(key)? as usize;
        let p = self.list.swap_remove(i);
        if let Some(moved) = self.list.get(i) {
            self.index.insert(moved.peer.public_key, i as u32);
        }
        Some(p)
    }

    pub fn clear(&mut self) {
        self.list.clear();
        self.index.clear();
    }

    pub fn keys(&self) -> impl Iterator<Item = &PublicKey> {
        self.list.iter().map(|p| &p.peer.public_key)
    }

    pub fn values(&self) -> impl Iterator<Item = &PeerState> {
        self.list.iter()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut PeerState> {
        self.list.iter_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PublicKey, &PeerState)> {
        self.list.iter().map(|p| (&p.peer.public_key, p))
    }

    /// Puts the list in the order of `keys` (those it holds; others after),
    /// so the next poll of a backend with a stable order walks it sequentially.
    pub(super) fn reorder(&mut self, keys: impl Iterator<Item = PublicKey>) {
        let mut list = Vec::with_capacity(self.list.len());
        let mut taken: Vec<Option<PeerState>> = self.list.drain(..).map(Some).collect();
        for key in keys {
            if let Some(&i) = self.index.get(&key) {
                if let Some(p) = taken[i as usize].take() {
                    list.push(p);
                }
            }
        }
        list.extend(taken.into_iter().flatten());
        self.index.clear();
        for (i, p) in list.iter().enumerate() {
            self.index.insert(p.peer.public_key, i as u32);
        }
        self.list = list;
    }
}

impl PartialEq for PeerMap {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, p)| other.get(k) == Some(p))
    }
}

impl Eq for PeerMap {}

impl std::ops::Index<&PublicKey> for PeerMap {
    type Output = PeerState;
    fn index(&self, key: &PublicKey) -> &PeerState {
        self.get(key).expect("no peer with this key")
    }
}

impl<'a> IntoIterator for &'a PeerMap {
    type Item = (&'a PublicKey, &'a PeerState);
    type IntoIter = Box<dyn Iterator<Item = (&'a PublicKey, &'a PeerState)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl IntoIterator for PeerMap {
    type Item = (PublicKey, PeerState);
    type IntoIter = Box<dyn Iterator<Item = (PublicKey, PeerState)>>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.list.into_iter().map(|p| (p.peer.public_key, p)))
    }
}

impl Serialize for PeerMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for PeerMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map: HashMap<PublicKey, PeerState> = HashMap::deserialize(d)?;
        let mut out = PeerMap::with_capacity(map.len());
        for (key, mut p) in map {
            p.peer.public_key = key;
            out.insert(key, p);
        }
        Ok(out)
    }
}

/// A fast hasher for public keys: mixes the key's four 64-bit words with a
/// multiply-rotate step (FxHash-like). Keys are configured by the host's
/// administrator (no attacker picks them to collide), so SipHash's
/// flood resistance buys nothing here, and this costs a fraction of it per
/// poll of 100,000 peers.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyHash;

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// The [`KeyHash`] hasher.
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher(u64);

const MIX: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(MIX);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(MIX);
    }
}

/// Version of the serialised [`State`]; bumped on incompatible changes.
pub const STATE_VERSION: u32 = 1;

/// What to report on the very first poll, when there is no saved state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Announce {
    /// `connect` for every peer connected now, nothing else.
    #[default]
    Connected,
    /// `create` for every interface and peer, then `connect` for connected peers.
    All,
    /// Nothing: the first poll only sets the baseline.
    None,
}

/// Tracker settings, taken from the `monitor:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// A peer is connected iff its latest handshake is at most this old.
    pub connect_threshold: TimeDelta,
    /// Report endpoint changes (roaming) as peer `update`s.
    pub endpoint_updates: bool,
    pub announce_on_start: Announce,
    /// Host name stamped on every event.
    pub host: String,
    /// The interfaces watched (`monitor.interfaces` minus `monitor.exclude`).
    /// Backends apply it too; the tracker needs it to tell an interface that
    /// left the filter from a deleted one, and one that entered it from a
    /// created one.
    pub filter: InterfaceFilter,
}

/// Everything the tracker remembers between polls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// By interface name.
    pub interfaces: BTreeMap<String, InterfaceState>,
    /// The filter the state was built under; `None` for a state saved by an
    /// older wghook (taken to be the current filter).
    #[serde(default)]
    pub filter: Option<InterfaceFilter>,
    /// Interfaces seen only unreadable so far where a first start (or a
    /// filter change) would have baselined them: when they become readable
    /// they are baselined per `announce_on_start`, not reported as created.
    #[serde(default)]
    pub unbaselined: BTreeSet<String>,
}

/// What the tracker remembers of one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceState {
    /// The interface as last seen (without peers).
    pub info: InterfaceInfo,
    /// Sequence number of the interface's last event (0: none yet).
    pub sequence: u64,
    /// Absent in the outbox's interface rows (peers have rows of their own).
    #[serde(default)]
    pub peers: PeerMap,
}

/// What the tracker remembers of one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    /// The peer as last seen.
    pub peer: Peer,
    pub connected: bool,
    /// The handshake that started the current session (when connected).
    pub session_start: Option<DateTime<Utc>>,
    /// Counter values the current session's byte counts are measured from.
    pub rx_base: u64,
    pub tx_base: u64,
    /// When wghook first saw the peer.
    pub created_at: DateTime<Utc>,
    /// When wghook last saw its configuration change.
    pub updated_at: DateTime<Utc>,
    /// Sequence number of the peer's last event (0: none yet).
    pub sequence: u64,
}

impl State {
    /// A state with no interfaces.
    pub fn empty() -> Self {
        State {
            version: STATE_VERSION,
            interfaces: BTreeMap::new(),
            filter: None,
            unbaselined: BTreeSet::new(),
        }
    }

    /// Number of peers tracked over all interfaces.
    pub fn peer_count(&self) -> usize {
        self.interfaces.values().map(|i| i.peers.len()).sum()
    }

    /// Number of peers currently connected.
    pub fn connected_count(&self) -> usize {
        self.interfaces
            .values()
            .flat_map(|i| i.peers.values())
            .filter(|p| p.connected)
            .count()
    }

    /// Whether the tracker considers the peer connected (false if unknown).
    pub fn is_peer_connected(&self, interface: &str, key: &PublicKey) -> bool {
        self.interfaces
            .get(interface)
            .and_then(|i| i.peers.get(key))
            .is_some_and(|p| p.connected)
    }
}

/// What one poll changed in the state, for savers that write incrementally.
///
/// A peer is listed when anything a restart needs changed: its handshake,
/// connection, session, configuration or sequence. Byte counters alone do not
/// list it (they change every poll; after a restart they are only compared to
/// detect resets, which older values still do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Everything changed (first start): save the whole state.
    pub all: bool,
    pub interfaces: Vec<String>,
    pub removed_interfaces: Vec<String>,
    pub peers: Vec<(String, PublicKey)>,
    pub removed_peers: Vec<(String, PublicKey)>,
    /// The state's filter or its unbaselined interfaces changed.
    pub meta: bool,
}

impl Changes {
    /// True when nothing needs saving.
    pub fn is_empty(&self) -> bool {
        !self.all
            && self.interfaces.is_empty()
            && self.removed_interfaces.is_empty()
            && self.peers.is_empty()
            && self.removed_peers.is_empty()
            && !self.meta
    }
}

/// The result of [`track_changes`](super::track_changes).
#[derive(Debug)]
pub struct Tracked {
    pub state: State,
    pub events: Vec<Event>,
    pub changes: Changes,
}
