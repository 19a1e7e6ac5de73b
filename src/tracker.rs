//! The tracker: a pure function from (previous state, snapshot, now, settings)
//! to (new state, events), implementing the rules of `tracking.md`.
//!
//! It never reads the clock and does no I/O; `now` is an argument, so the
//! same inputs always give the same state and the same events (up to the
//! random part of event ids). Invariants:
//! - a peer is connected iff it has a handshake at most `connect_threshold`
//!   old at `now` (a handshake in the future counts as age 0), or, when ping
//!   results are given ([`track_changes_with_pings`], `monitor.ping_checks`),
//!   its latest ping was answered; without ping results nothing else counts;
//! - every transition between two polls is reported exactly once, including
//!   transitions that happened entirely between two polls (the gap rule, and a
//!   connect-then-disconnect seen only afterwards);
//! - interfaces listed as unreadable keep their state and produce no events;
//!   one never read yet (unreadable on the first start, or since it entered
//!   the filter) is baselined per `announce_on_start` when it becomes
//!   readable, never reported as created ([`State::unbaselined`]);
//! - only interfaces `settings.filter` allows are tracked; one that leaves
//!   the filter is forgotten without events, one that enters it is
//!   baselined like on a first start ([`State::filter`] remembers the filter
//!   the state was built under, across restarts);
//! - a peer key listed twice on one interface counts once (the first);
//! - times derived from handshakes saturate instead of overflowing;
//! - events of one poll are ordered per interface (by name): interface
//!   create/update, then peers by public key, then interface delete.
//!
//! The state is small and serialisable (versioned) so the outbox can persist
//! it with the events it produced.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::backend::InterfaceFilter;
use crate::event::{ChangedField, Entity, Event, EventKind, InterfaceInfo, PeerInfo, Session};
use crate::model::{Interface, Peer, PingStatus, Pings, PublicKey, Snapshot};

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
    list: Vec<PeerState>,
    index: HashMap<PublicKey, u32, KeyHash>,
    /// The last poll listed the peers in another order than the list's.
    disordered: bool,
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
    fn find(&self, key: &PublicKey) -> Option<usize> {
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
    fn position(&self, key: &PublicKey, hint: usize) -> Option<usize> {
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
    fn reorder(&mut self, keys: impl Iterator<Item = PublicKey>) {
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

/// The result of [`track_changes`].
#[derive(Debug)]
pub struct Tracked {
    pub state: State,
    pub events: Vec<Event>,
    pub changes: Changes,
}

/// True iff a handshake exists and is at most `threshold` old at `now`.
/// A handshake in the future (clock skew) counts as age 0.
pub fn is_connected(
    handshake: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    threshold: TimeDelta,
) -> bool {
    match handshake {
        Some(hs) => now.signed_duration_since(hs) <= threshold,
        None => false,
    }
}

/// Compares the snapshot with the previous state and returns the new state and
/// the events that describe the difference, in delivery order.
///
/// `prev == None` is the very first start: `settings.announce_on_start` says
/// what is reported. A saved state from before a restart is passed as `prev`
/// like any other previous poll.
pub fn track(
    prev: Option<State>,
    snapshot: &Snapshot,
    now: DateTime<Utc>,
    settings: &Settings,
) -> (State, Vec<Event>) {
    let tracked = track_changes(prev, snapshot, now, settings);
    (tracked.state, tracked.events)
}

/// [`track`], also telling what changed in the state (for incremental saving).
pub fn track_changes(
    prev: Option<State>,
    snapshot: &Snapshot,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Tracked {
    track_changes_with_pings(prev, snapshot, None, now, settings)
}

/// [`track_changes`] with ping checks on (`pings` is `Some`): a peer whose
/// latest ping was answered counts as connected even without a recent
/// handshake, and events carry its ping status. A session that only ping
/// kept alive starts at the answered ping and ends at the last answered one.
/// `None` is exactly [`track_changes`].
pub fn track_changes_with_pings(
    prev: Option<State>,
    snapshot: &Snapshot,
    pings: Option<&Pings>,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Tracked {
    let first_start = prev.is_none();
    let prev = prev.unwrap_or_else(State::empty);
    let watched = &settings.filter;
    // Under which filter the previous state was built: an interface that
    // filter did not allow was never seen, so its first sight is a baseline.
    let old_filter = (!first_start).then(|| prev.filter.as_ref().unwrap_or(watched));
    // A first sight that must be a baseline: never seen under the old
    // filter, or unreadable when it should have been baselined.
    let baselines =
        |name: &str| old_filter.is_none_or(|f| !f.allows(name)) || prev.unbaselined.contains(name);
    let mut emit = Emitter::new(now, settings, pings);
    emit.changes.all = first_start;
    emit.changes.meta = prev.filter.as_ref() != Some(watched);

    let mut old = prev.interfaces;
    old.retain(|name, _| {
        let keep = watched.allows(name);
        if !keep {
            // Left the filter, not the host: forget it without events.
            tracing::info!(interface = %name, "interface no longer watched; forgetting its state");
            emit.changes.removed_interfaces.push(name.clone());
        }
        keep
    });

    let mut next = BTreeMap::new();
    for iface in &snapshot.interfaces {
        if !watched.allows(&iface.name) {
            continue;
        }
        let state = match old.remove(&iface.name) {
            Some(existing) => update_interface(existing, iface, &mut emit),
            None if baselines(&iface.name) => baseline_interface(iface, &mut emit),
            None => new_interface(iface, &mut emit),
        };
        next.insert(iface.name.clone(), state);
    }
    for (name, state) in old {
        if snapshot.unreadable.contains(&name) {
            next.insert(name, state);
        } else {
            emit.changes.removed_interfaces.push(name);
            vanished_interface(state, &mut emit);
        }
    }
    // Unreadable and never seen: remember whether a first sight must be a
    // baseline. One that vanishes before it is read is forgotten.
    let unbaselined: BTreeSet<String> = snapshot
        .unreadable
        .iter()
        .filter(|name| watched.allows(name) && !next.contains_key(*name))
        .filter(|name| baselines(name))
        .cloned()
        .collect();
    emit.changes.meta |= unbaselined != prev.unbaselined;

    let state = State {
        version: STATE_VERSION,
        interfaces: next,
        filter: Some(watched.clone()),
        unbaselined,
    };
    let changes = std::mem::take(&mut emit.changes);
    Tracked {
        state,
        events: emit.finish(),
        changes,
    }
}

/// Where an event goes in the poll's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    InterfaceFirst,
    Peer(PublicKey),
    InterfaceLast,
}

/// Builds events with ids, sequence numbers and their place in the order.
struct Emitter<'a> {
    now: DateTime<Utc>,
    settings: &'a Settings,
    /// Ping results, when ping checks are on.
    pings: Option<&'a Pings>,
    threshold: TimeDelta,
    counter: u32,
    out: Vec<(String, Slot, Event)>,
    changes: Changes,
}

impl<'a> Emitter<'a> {
    fn new(now: DateTime<Utc>, settings: &'a Settings, pings: Option<&'a Pings>) -> Self {
        Emitter {
            now,
            settings,
            pings,
            threshold: settings.connect_threshold,
            counter: 0,
            out: Vec::new(),
            changes: Changes::default(),
        }
    }

    /// The peer's ping status; not pingable when ping checks are off or the
    /// peer has no result.
    fn ping(&self, interface: &str, key: &PublicKey) -> PingStatus {
        self.pings
            .and_then(|p| p.get(interface))
            .and_then(|i| i.get(key))
            .copied()
            .unwrap_or_default()
    }

    /// True when [`update_peer`] would change nothing: the peer is exactly
    /// as last seen, its connection state did not age, and (when not
    /// connected) its counter bases are already the current counters.
    /// Ping checks always take the full path.
    fn is_idle(&self, p: &PeerState, peer: &Peer) -> bool {
        self.pings.is_none()
            && p.peer.last_handshake == peer.last_handshake
            && p.peer.rx_bytes == peer.rx_bytes
            && p.peer.tx_bytes == peer.tx_bytes
            && p.connected == is_connected(peer.last_handshake, self.now, self.threshold)
            && (p.connected || (p.rx_base, p.tx_base) == (peer.rx_bytes, peer.tx_bytes))
            && p.peer == *peer
    }

    /// When the current session started if the peer counts as connected
    /// now: its handshake if recent, else the answered ping.
    fn connected_since(
        &self,
        handshake: Option<DateTime<Utc>>,
        ping: PingStatus,
    ) -> Option<DateTime<Utc>> {
        match handshake {
            Some(hs) if is_connected(handshake, self.now, self.threshold) => Some(hs),
            _ if ping.pingable => Some(ping.last_ping.map_or(self.now, |t| t.min(self.now))),
            _ => None,
        }
    }

    /// A UUIDv7 with `now`'s millisecond and a per-poll counter in the bits
    /// after it, so the ids of one poll sort in emission order.
    fn next_id(&mut self) -> Uuid {
        let millis = u64::try_from(self.now.timestamp_millis()).unwrap_or(0);
        let c = self.counter;
        self.counter = self.counter.wrapping_add(1);
        let random: [u8; 6] = rand::random();
        // Layout after the builder masks version (high nibble of byte 0) and
        // variant (top two bits of byte 2): 4 + 8 + 6 + 8 = 26 counter bits.
        let bytes = [
            ((c >> 22) & 0x0f) as u8,
            (c >> 14) as u8,
            ((c >> 8) & 0x3f) as u8,
            c as u8,
            random[0],
            random[1],
            random[2],
            random[3],
            random[4],
            random[5],
        ];
        uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid()
    }

    fn interface_event(
        &mut self,
        iface: &mut InterfaceState,
        kind: EventKind,
        changed: Vec<ChangedField>,
    ) {
        iface.sequence += 1;
        let slot = if kind == EventKind::Delete {
            Slot::InterfaceLast
        } else {
            Slot::InterfaceFirst
        };
        let event = Event {
            id: Uuid::nil(), // assigned in delivery order by `finish`
            kind,
            entity: Entity::Interface,
            time: self.now,
            host: self.settings.host.clone(),
            sequence: iface.sequence,
            interface: iface.info.clone(),
            peer: None,
            changed,
            session: None,
        };
        self.out.push((iface.info.name.clone(), slot, event));
    }

    fn peer_event(
        &mut self,
        info: &InterfaceInfo,
        peer: &mut PeerState,
        kind: EventKind,
        time: DateTime<Utc>,
        changed: Vec<ChangedField>,
        session: Option<Session>,
    ) {
        peer.sequence += 1;
        let ping = self.ping(&info.name, &peer.peer.public_key);
        let event = Event {
            id: Uuid::nil(), // assigned in delivery order by `finish`
            kind,
            entity: Entity::Peer,
            time,
            host: self.settings.host.clone(),
            sequence: peer.sequence,
            interface: info.clone(),
            peer: Some(PeerInfo {
                peer: peer.peer.clone(),
                created_at: peer.created_at,
                updated_at: peer.updated_at,
                pingable: ping.pingable,
                last_ping: ping.last_ping,
            }),
            changed,
            session,
        };
        self.out
            .push((info.name.clone(), Slot::Peer(peer.peer.public_key), event));
    }

    /// Emits `connect` for a session starting at `start` with the given bases.
    fn connect(&mut self, info: &InterfaceInfo, p: &mut PeerState, start: DateTime<Utc>) {
        p.connected = true;
        p.session_start = Some(start);
        let session = Session {
            started_at: start,
            ended_at: None,
            rx_bytes: p.peer.rx_bytes.saturating_sub(p.rx_base),
            tx_bytes: p.peer.tx_bytes.saturating_sub(p.tx_base),
        };
        self.peer_event(
            info,
            p,
            EventKind::Connect,
            start,
            Vec::new(),
            Some(session),
        );
    }

    /// Emits `disconnect` for the current session, ended at `end`.
    fn disconnect(&mut self, info: &InterfaceInfo, p: &mut PeerState, end: DateTime<Utc>) {
        let session = Session {
            started_at: p.session_start.unwrap_or(end),
            ended_at: Some(end),
            rx_bytes: p.peer.rx_bytes.saturating_sub(p.rx_base),
            tx_bytes: p.peer.tx_bytes.saturating_sub(p.tx_base),
        };
        p.connected = false;
        p.session_start = None;
        self.peer_event(
            info,
            p,
            EventKind::Disconnect,
            end,
            Vec::new(),
            Some(session),
        );
    }

    /// Events in delivery order: by interface name, then slot; stable within
    /// a slot, so a peer's own events keep their emission order.
    fn finish(mut self) -> Vec<Event> {
        self.out
            .sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let out = std::mem::take(&mut self.out);
        out.into_iter()
            .map(|(_, _, mut e)| {
                e.id = self.next_id();
                e
            })
            .collect()
    }
}

fn interface_info(iface: &Interface, created_at: DateTime<Utc>) -> InterfaceInfo {
    InterfaceInfo {
        name: iface.name.clone(),
        public_key: iface.public_key,
        listen_port: iface.listen_port,
        fwmark: iface.fwmark,
        driver: iface.driver,
        addresses: iface.addresses.clone(),
        mtu: iface.mtu,
        created_at,
        updated_at: created_at,
    }
}

fn new_peer_state(peer: &Peer, now: DateTime<Utc>, base_now: bool) -> PeerState {
    PeerState {
        peer: peer.clone(),
        connected: false,
        session_start: None,
        rx_base: if base_now { peer.rx_bytes } else { 0 },
        tx_base: if base_now { peer.tx_bytes } else { 0 },
        created_at: now,
        updated_at: now,
        sequence: 0,
    }
}

/// First start: set the baseline, announcing as configured.
fn baseline_interface(iface: &Interface, emit: &mut Emitter) -> InterfaceState {
    let now = emit.now;
    let announce = emit.settings.announce_on_start;
    let mut state = InterfaceState {
        info: interface_info(iface, now),
        sequence: 0,
        peers: PeerMap::with_capacity(iface.peers.len()),
    };
    if announce == Announce::All {
        emit.interface_event(&mut state, EventKind::Create, Vec::new());
    }
    // After the first start (an interface that became readable or entered the
    // filter) only this interface's rows are new.
    let save = !emit.changes.all;
    if save {
        emit.changes.interfaces.push(iface.name.clone());
    }
    let mut duplicates = Duplicates::default();
    for peer in &iface.peers {
        if state.peers.get(&peer.public_key).is_some() {
            duplicates.note(peer.public_key);
            continue;
        }
        if save {
            emit.changes
                .peers
                .push((iface.name.clone(), peer.public_key));
        }
        // The session's start is unknown: count bytes from now.
        let mut p = new_peer_state(peer, now, true);
        if announce == Announce::All {
            emit.peer_event(
                &state.info,
                &mut p,
                EventKind::Create,
                now,
                Vec::new(),
                None,
            );
        }
        let ping = emit.ping(&iface.name, &peer.public_key);
        if let Some(start) = emit.connected_since(peer.last_handshake, ping) {
            if announce == Announce::None {
                p.connected = true;
                p.session_start = Some(start);
            } else {
                emit.connect(&state.info, &mut p, start);
            }
        }
        state.peers.insert(peer.public_key, p);
    }
    duplicates.warn(&iface.name);
    state
}

/// An interface not in the previous state: `create`, then its peers.
fn new_interface(iface: &Interface, emit: &mut Emitter) -> InterfaceState {
    let mut state = InterfaceState {
        info: interface_info(iface, emit.now),
        sequence: 0,
        peers: PeerMap::with_capacity(iface.peers.len()),
    };
    emit.interface_event(&mut state, EventKind::Create, Vec::new());
    emit.changes.interfaces.push(iface.name.clone());
    let mut duplicates = Duplicates::default();
    for peer in &iface.peers {
        if state.peers.get(&peer.public_key).is_some() {
            duplicates.note(peer.public_key);
            continue;
        }
        let p = new_peer(&state.info, peer, emit);
        emit.changes
            .peers
            .push((iface.name.clone(), peer.public_key));
        state.peers.insert(peer.public_key, p);
    }
    duplicates.warn(&iface.name);
    state
}

/// Peers a snapshot listed more than once on one interface (malformed
/// backend output): the first is kept, the others skipped, one warning.
#[derive(Default)]
struct Duplicates {
    count: usize,
    first: Option<PublicKey>,
}

impl Duplicates {
    fn note(&mut self, key: PublicKey) {
        self.count += 1;
        self.first.get_or_insert(key);
    }

    fn warn(&self, interface: &str) {
        if let Some(key) = self.first {
            tracing::warn!(
                interface = %interface,
                peer = %key,
                duplicates = self.count,
                "the backend listed a peer more than once; keeping the first"
            );
        }
    }
}

/// An interface gone from the host: each peer's `disconnect` (if connected)
/// and `delete`, then the interface's `delete`.
fn vanished_interface(mut state: InterfaceState, emit: &mut Emitter) {
    let peers = std::mem::take(&mut state.peers);
    for (_, p) in peers {
        vanished_peer(&state.info, p, emit);
    }
    state.info.updated_at = emit.now;
    emit.interface_event(&mut state, EventKind::Delete, Vec::new());
}

/// An interface seen in both: its own changes, then each peer.
fn update_interface(
    mut state: InterfaceState,
    iface: &Interface,
    emit: &mut Emitter,
) -> InterfaceState {
    let mut changed = Vec::new();
    if state.info.listen_port != iface.listen_port {
        changed.push(ChangedField::ListenPort);
    }
    if state.info.public_key != iface.public_key {
        changed.push(ChangedField::PublicKey);
    }
    if state.info.fwmark != iface.fwmark {
        changed.push(ChangedField::Fwmark);
    }
    let created_at = state.info.created_at;
    let updated_at = if changed.is_empty() {
        state.info.updated_at
    } else {
        emit.now
    };
    if state.info.listen_port != iface.listen_port
        || state.info.public_key != iface.public_key
        || state.info.fwmark != iface.fwmark
        || state.info.driver != iface.driver
        || state.info.addresses != iface.addresses
        || state.info.mtu != iface.mtu
    {
        state.info = InterfaceInfo {
            updated_at,
            ..interface_info(iface, created_at)
        };
        emit.changes.interfaces.push(iface.name.clone());
    }
    if !changed.is_empty() {
        emit.interface_event(&mut state, EventKind::Update, changed);
    }

    // In place, walking the snapshot and the state side by side: an
    // unchanged peer in an unchanged position costs a few comparisons.
    let mut seen = 0usize;
    let mut misplaced = 0usize;
    let mut added: Vec<&Peer> = Vec::new();
    // Which state entries this snapshot already matched, to skip a key
    // listed twice (a new key listed twice is caught when it is inserted).
    let mut matched = vec![false; state.peers.len()];
    let mut duplicates = Duplicates::default();
    // Where each snapshot peer is in the state, and whether it would change
    // at all, found in one tight pass so the lookups of many peers are in
    // flight at once (the entries are random accesses when the backend
    // shuffles). While the last two peers were neighbours in the state, the
    // entry after the previous one is tried first: right for a backend that
    // keeps the order (the kernel) and mostly right for one that rotates it
    // (Go map iteration starts at a random bucket); a shuffled order skips
    // the guess (a wasted access).
    let (mut prev, mut before) = (usize::MAX, usize::MAX - 1);
    let positions: Vec<Option<u32>> = iface
        .peers
        .iter()
        .map(|peer| {
            let found = if prev == before.wrapping_add(1) {
                state.peers.position(&peer.public_key, prev.wrapping_add(1))
            } else {
                state.peers.find(&peer.public_key)
            };
            if let Some(i) = found {
                (before, prev) = (prev, i);
            }
            found.map(|i| i as u32)
        })
        .collect();
    let idle: Vec<bool> = iface
        .peers
        .iter()
        .zip(&positions)
        .map(|(peer, found)| {
            found.is_some_and(|i| emit.is_idle(&state.peers.list[i as usize], peer))
        })
        .collect();
    for (((n, peer), found), idle) in iface.peers.iter().enumerate().zip(positions).zip(idle) {
        match found.map(|i| i as usize) {
            Some(i) => {
                if std::mem::replace(&mut matched[i], true) {
                    duplicates.note(peer.public_key);
                    continue;
                }
                seen += 1;
                misplaced += usize::from(i != n);
                if idle {
                    continue;
                }
                let p = &mut state.peers.list[i];
                let before = Persisted::of(p);
                update_peer(&state.info, p, peer, emit);
                if before != Persisted::of(p) {
                    emit.changes
                        .peers
                        .push((iface.name.clone(), peer.public_key));
                }
            }
            None => added.push(peer),
        }
    }
    if seen < state.peers.len() {
        let mut gone: Vec<PublicKey> = state
            .peers
            .keys()
            .zip(&matched)
            .filter(|(_, &matched)| !matched)
            .map(|(k, _)| *k)
            .collect();
        gone.sort();
        for key in gone {
            if let Some(p) = state.peers.remove(&key) {
                emit.changes.removed_peers.push((iface.name.clone(), key));
                vanished_peer(&state.info, p, emit);
            }
        }
    }
    let reshaped = !added.is_empty();
    for peer in added {
        if state.peers.get(&peer.public_key).is_some() {
            duplicates.note(peer.public_key);
            continue;
        }
        emit.changes
            .peers
            .push((iface.name.clone(), peer.public_key));
        let p = new_peer(&state.info, peer, emit);
        state.peers.insert(peer.public_key, p);
    }
    duplicates.warn(&iface.name);
    // Out of order twice in a row: a backend that shuffles, do not chase it.
    let shuffling = std::mem::replace(&mut state.peers.disordered, misplaced > 0);
    if reshaped || (misplaced > 0 && !shuffling) {
        state
            .peers
            .reorder(iface.peers.iter().map(|p| p.public_key));
    }
    state
}

/// A peer not seen before (on a known or new interface): `create`, then its
/// connection history as far as the snapshot shows it.
fn new_peer(info: &InterfaceInfo, peer: &Peer, emit: &mut Emitter) -> PeerState {
    let now = emit.now;
    let mut p = new_peer_state(peer, now, false);
    emit.peer_event(info, &mut p, EventKind::Create, now, Vec::new(), None);
    if let Some(hs) = peer.last_handshake {
        emit.connect(info, &mut p, hs);
        if !is_connected(Some(hs), now, emit.threshold) {
            // Connected and gone again before this poll saw it.
            emit.disconnect(info, &mut p, aged_out(hs, emit.threshold));
        }
    }
    if !p.connected {
        let ping = emit.ping(&info.name, &peer.public_key);
        if let Some(start) = emit.connected_since(None, ping) {
            emit.connect(info, &mut p, start);
        }
    }
    p
}

/// A peer gone from its interface: `disconnect` if connected, then `delete`.
fn vanished_peer(info: &InterfaceInfo, mut p: PeerState, emit: &mut Emitter) {
    let now = emit.now;
    if p.connected {
        let end = session_end(p.peer.last_handshake, now, emit.threshold);
        emit.disconnect(info, &mut p, end);
    }
    emit.peer_event(info, &mut p, EventKind::Delete, now, Vec::new(), None);
}

/// When a session whose last handshake is `hs` ended, if it ended by `now`:
/// the moment it aged out, or `now` if it was cut short.
fn session_end(
    hs: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    threshold: TimeDelta,
) -> DateTime<Utc> {
    hs.map_or(now, |hs| aged_out(hs, threshold).min(now))
}

/// When a session whose last handshake is `hs` aged out. Saturates at the
/// latest representable time: handshake times come from the backend and a
/// garbled one far in the future must not overflow.
fn aged_out(hs: DateTime<Utc>, threshold: TimeDelta) -> DateTime<Utc> {
    hs.checked_add_signed(threshold)
        .unwrap_or(if threshold < TimeDelta::zero() {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
}

/// When a session ended that ping checks may have kept alive: as
/// [`session_end`], but not before the last answered ping.
fn session_end_pinged(
    hs: Option<DateTime<Utc>>,
    last_ping: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    threshold: TimeDelta,
) -> DateTime<Utc> {
    match (hs, last_ping) {
        (_, None) => session_end(hs, now, threshold),
        (None, Some(ping)) => ping.min(now),
        (Some(_), Some(ping)) => session_end(hs, now, threshold).max(ping.min(now)),
    }
}

/// A peer seen in both polls: configuration `update`, then connection changes.
fn update_peer(info: &InterfaceInfo, p: &mut PeerState, peer: &Peer, emit: &mut Emitter) {
    let now = emit.now;
    let threshold = emit.threshold;
    let ping = emit.ping(&info.name, &peer.public_key);

    let mut changed = Vec::new();
    // An endpoint change is one (tracking.md): the first endpoint set by
    // `wg set`, roaming, and an endpoint that disappears (the peer was
    // re-created without one), so a receiver's copy is never stale. The
    // exception: a server learns a client's first endpoint from its
    // handshake, and the `connect` that handshake brings already carries it;
    // an `update` before every first connect would be noise.
    let learnt_at_handshake = p.peer.endpoint.is_none()
        && peer.endpoint.is_some()
        && peer.last_handshake > p.peer.last_handshake;
    if emit.settings.endpoint_updates && p.peer.endpoint != peer.endpoint && !learnt_at_handshake {
        changed.push(ChangedField::Endpoint);
    }
    if p.peer.allowed_ips != peer.allowed_ips {
        changed.push(ChangedField::AllowedIps);
    }
    if p.peer.persistent_keepalive != peer.persistent_keepalive {
        changed.push(ChangedField::PersistentKeepalive);
    }
    if p.peer.has_preshared_key != peer.has_preshared_key {
        changed.push(ChangedField::PresharedKey);
    }

    let old_hs = p.peer.last_handshake;
    let new_hs = peer.last_handshake;
    let rx_reset = peer.rx_bytes < p.peer.rx_bytes;
    let tx_reset = peer.tx_bytes < p.peer.tx_bytes;
    let reset = rx_reset || tx_reset || new_hs < old_hs;
    let advanced = new_hs > old_hs;
    // Bases of a session that starts between the previous poll and this one:
    // the previous counters, or zero for a counter that restarted.
    let rx_base = if rx_reset { 0 } else { p.peer.rx_bytes };
    let tx_base = if tx_reset { 0 } else { p.peer.tx_bytes };
    let since = emit.connected_since(new_hs, ping);
    let connected_now = since.is_some();

    // Until the connection logic runs, the state describes the previous poll
    // except for the fields an update event shows.
    if !changed.is_empty() {
        p.updated_at = now;
        p.peer.endpoint = peer.endpoint;
        p.peer.allowed_ips.clone_from(&peer.allowed_ips);
        p.peer.persistent_keepalive = peer.persistent_keepalive;
        p.peer.has_preshared_key = peer.has_preshared_key;
        emit.peer_event(info, p, EventKind::Update, now, changed, None);
    }

    if p.connected {
        // A peer that answers ping was reachable all along, as far as can be told.
        let gap = !ping.pingable
            && match (old_hs, new_hs) {
                (Some(old), Some(new)) => new.signed_duration_since(old) > threshold,
                _ => false,
            };
        if gap {
            // Down in between: the old session ended when it aged out.
            let end = session_end(old_hs, now, threshold);
            emit.disconnect(info, p, end);
            refresh(p, peer);
            p.rx_base = rx_base;
            p.tx_base = tx_base;
            let start = new_hs.unwrap_or(now);
            emit.connect(info, p, start);
            if !connected_now {
                emit.disconnect(info, p, aged_out(start, threshold));
            }
        } else if reset {
            if connected_now {
                // Counters or handshake restarted: a new session, no pair.
                refresh(p, peer);
                p.rx_base = rx_base;
                p.tx_base = tx_base;
                p.session_start = since;
            } else {
                let end = session_end_pinged(old_hs, ping.last_ping, now, threshold);
                emit.disconnect(info, p, end);
                refresh(p, peer);
                p.rx_base = rx_base;
                p.tx_base = tx_base;
            }
        } else if !connected_now {
            refresh(p, peer);
            let end = session_end_pinged(new_hs, ping.last_ping, now, threshold);
            emit.disconnect(info, p, end);
        } else {
            refresh(p, peer);
        }
    } else {
        p.rx_base = rx_base;
        p.tx_base = tx_base;
        refresh(p, peer);
        if let Some(start) = since {
            emit.connect(info, p, start);
        } else if advanced {
            // Connected and gone again between two polls.
            if let Some(hs) = new_hs {
                emit.connect(info, p, hs);
                emit.disconnect(info, p, aged_out(hs, threshold));
            }
        }
    }
}

/// The fields of a peer's state a restart depends on (not the counters).
#[derive(PartialEq, Eq)]
struct Persisted {
    connected: bool,
    session_start: Option<DateTime<Utc>>,
    bases: (u64, u64),
    sequence: u64,
    updated_at: DateTime<Utc>,
    handshake: Option<DateTime<Utc>>,
    endpoint: Option<std::net::SocketAddr>,
}

impl Persisted {
    fn of(p: &PeerState) -> Self {
        Persisted {
            connected: p.connected,
            session_start: p.session_start,
            bases: (p.rx_base, p.tx_base),
            sequence: p.sequence,
            updated_at: p.updated_at,
            handshake: p.peer.last_handshake,
            endpoint: p.peer.endpoint,
        }
    }
}

/// Copies the fast-changing fields without reallocating the peer.
fn refresh(p: &mut PeerState, peer: &Peer) {
    p.peer.last_handshake = peer.last_handshake;
    p.peer.rx_bytes = peer.rx_bytes;
    p.peer.tx_bytes = peer.tx_bytes;
    p.peer.endpoint = peer.endpoint;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DriverKind;

    const T0: i64 = 1_767_607_200; // 2026-01-05T10:00:00Z

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(T0 + secs, 0).unwrap()
    }

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    fn settings() -> Settings {
        Settings {
            connect_threshold: TimeDelta::seconds(180),
            endpoint_updates: true,
            announce_on_start: Announce::Connected,
            host: "vpn1".into(),
            filter: Default::default(),
        }
    }

    fn peer(n: u8, hs: Option<i64>, rx: u64, tx: u64) -> Peer {
        Peer {
            public_key: key(n),
            endpoint: Some(format!("198.51.100.{n}:51820").parse().unwrap()),
            allowed_ips: vec![format!("10.8.0.{n}/32").parse().unwrap()],
            persistent_keepalive: 0,
            has_preshared_key: false,
            last_handshake: hs.map(at),
            rx_bytes: rx,
            tx_bytes: tx,
        }
    }

    fn iface(name: &str, peers: Vec<Peer>) -> Interface {
        Interface {
            name: name.into(),
            public_key: Some(key(200)),
            listen_port: 51820,
            fwmark: 0,
            driver: DriverKind::Userspace,
            addresses: Vec::new(),
            mtu: None,
            peers,
        }
    }

    fn snap(interfaces: Vec<Interface>) -> Snapshot {
        let mut s = Snapshot {
            interfaces,
            unreadable: Vec::new(),
        };
        s.normalize();
        s
    }

    /// `entity.kind:identifier` of each event, for compact assertions.
    fn names(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                let who = match &e.peer {
                    Some(p) => format!("{}", p.peer.public_key.0[0]),
                    None => e.interface.name.clone(),
                };
                format!("{}:{}", e.filter_name(), who)
            })
            .collect()
    }

    /// Baseline with `announce_on_start: none`, then one more poll.
    fn step(
        first: &Snapshot,
        first_at: i64,
        second: &Snapshot,
        second_at: i64,
    ) -> (State, Vec<Event>) {
        let quiet = Settings {
            announce_on_start: Announce::None,
            ..settings()
        };
        let (state, events) = track(None, first, at(first_at), &quiet);
        assert!(events.is_empty());
        track(Some(state), second, at(second_at), &settings())
    }

    #[test]
    fn connected_iff_handshake_within_threshold() {
        let thr = TimeDelta::seconds(180);
        assert!(is_connected(Some(at(0)), at(180), thr));
        assert!(!is_connected(Some(at(0)), at(181), thr));
        assert!(
            is_connected(Some(at(500)), at(0), thr),
            "future counts as age 0"
        );
        assert!(!is_connected(None, at(0), thr));
    }

    #[test]
    fn first_start_connected_announces_connected_peers_only() {
        let s = snap(vec![iface(
            "wg0",
            vec![
                peer(1, Some(-10), 5, 6),
                peer(2, None, 0, 0),
                peer(3, Some(-400), 0, 0),
            ],
        )]);
        let (state, events) = track(None, &s, at(0), &settings());
        assert_eq!(names(&events), ["peer.connect:1"]);
        let session = events[0].session.unwrap();
        assert_eq!(session.started_at, at(-10));
        assert_eq!(events[0].time, at(-10));
        assert_eq!(
            (session.rx_bytes, session.tx_bytes),
            (0, 0),
            "bytes counted from now"
        );
        assert_eq!(state.connected_count(), 1);
        assert_eq!(state.peer_count(), 3);
    }

    #[test]
    fn first_start_all_creates_everything_then_connects() {
        let s = snap(vec![iface(
            "wg0",
            vec![peer(2, None, 0, 0), peer(1, Some(-10), 0, 0)],
        )]);
        let all = Settings {
            announce_on_start: Announce::All,
            ..settings()
        };
        let (_, events) = track(None, &s, at(0), &all);
        assert_eq!(
            names(&events),
            [
                "interface.create:wg0",
                "peer.create:1",
                "peer.connect:1",
                "peer.create:2"
            ]
        );
    }

    #[test]
    fn first_start_none_is_silent_but_remembers_connections() {
        let s = snap(vec![iface("wg0", vec![peer(1, Some(-10), 0, 0)])]);
        let (state, events) = step(&s, 0, &s, 169);
        assert!(events.is_empty());
        assert!(state.is_peer_connected("wg0", &key(1)));
        let (_, events) = track(Some(state), &s, at(171), &settings());
        assert_eq!(names(&events), ["peer.disconnect:1"]);
        assert_eq!(events[0].time, at(170), "ends when the handshake aged out");
    }

    #[test]
    fn new_handshake_connects_and_aging_disconnects_with_session_figures() {
        let before = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
        let after = snap(vec![iface("wg0", vec![peer(1, Some(3), 1860, 10824)])]);
        let (state, events) = step(&before, 0, &after, 5);
        assert_eq!(names(&events), ["peer.connect:1"]);
        assert_eq!(events[0].time, at(3));
        let s = events[0].session.unwrap();
        assert_eq!((s.started_at, s.ended_at), (at(3), None));
        assert_eq!((s.rx_bytes, s.tx_bytes), (1860, 10824));

        let later = snap(vec![iface("wg0", vec![peer(1, Some(3), 5000, 20000)])]);
        let (state, events) = track(Some(state), &later, at(183), &settings());
        assert!(events.is_empty(), "180 s is still connected");
        let (state, events) = track(Some(state), &later, at(184), &settings());
        assert_eq!(names(&events), ["peer.disconnect:1"]);
        assert_eq!(events[0].time, at(183));
        let s = events[0].session.unwrap();
        assert_eq!((s.started_at, s.ended_at), (at(3), Some(at(183))));
        assert_eq!((s.rx_bytes, s.tx_bytes), (5000, 20000));
        assert!(!state.is_peer_connected("wg0", &key(1)));
    }

    #[test]
    fn rehandshakes_within_threshold_never_flap() {
        let mut state = None;
        let mut all = Vec::new();
        // A handshake every 120 s, polled every 5 s for an hour.
        for t in (0..3600).step_by(5) {
            let hs = t - t % 120;
            let s = snap(vec![iface(
                "wg0",
                vec![peer(1, Some(hs), t as u64, t as u64)],
            )]);
            let (next, events) = track(state, &s, at(t), &settings());
            state = Some(next);
            all.extend(events);
        }
        assert_eq!(names(&all), ["peer.connect:1"]);
    }

    #[test]
    fn gap_rule_reports_the_downtime_between_two_handshakes() {
        let before = snap(vec![iface("wg0", vec![peer(1, Some(0), 100, 100)])]);
        let after = snap(vec![iface("wg0", vec![peer(1, Some(500), 300, 400)])]);
        let (_, events) = step(&before, 0, &after, 510);
        assert_eq!(names(&events), ["peer.disconnect:1", "peer.connect:1"]);
        assert_eq!(events[0].time, at(180));
        assert_eq!(events[0].session.unwrap().ended_at, Some(at(180)));
        assert_eq!(events[1].time, at(500));
        let s = events[1].session.unwrap();
        assert_eq!(
            (s.rx_bytes, s.tx_bytes),
            (200, 300),
            "from the previous counters"
        );
        assert!(events[0].sequence < events[1].sequence);
    }

    #[test]
    fn gap_rule_across_a_restart_uses_the_saved_state() {
        let before = snap(vec![iface("wg0", vec![peer(1, Some(0), 0, 0)])]);
        let (state, _) = track(None, &before, at(0), &settings());
        let saved = serde_json::to_string(&state).unwrap();
        let restored: State = serde_json::from_str(&saved).unwrap();
        assert_eq!(restored, state);
        // Daemon down for an hour; the peer re-connected 10 s ago.
        let after = snap(vec![iface("wg0", vec![peer(1, Some(3590), 0, 0)])]);
        let (_, events) = track(Some(restored), &after, at(3600), &settings());
        assert_eq!(names(&events), ["peer.disconnect:1", "peer.connect:1"]);
    }

    #[test]
    fn connect_and_disconnect_between_two_polls_are_both_reported() {
        let before = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
        let after = snap(vec![iface("wg0", vec![peer(1, Some(100), 10, 10)])]);
        let (state, events) = step(&before, 0, &after, 1000);
        assert_eq!(names(&events), ["peer.connect:1", "peer.disconnect:1"]);
        assert_eq!(events[0].time, at(100));
        assert_eq!(events[1].time, at(280));
        assert!(!state.is_peer_connected("wg0", &key(1)));
        let (_, events) = track(Some(state), &after, at(1005), &settings());
        assert!(events.is_empty(), "reported once");
    }

    #[test]
    fn counter_reset_restarts_the_session_without_events() {
        let before = snap(vec![iface("wg0", vec![peer(1, Some(0), 1000, 1000)])]);
        let reset = snap(vec![iface("wg0", vec![peer(1, Some(10), 50, 60)])]);
        let (state, events) = step(&before, 0, &reset, 12);
        assert!(events.is_empty(), "{:?}", names(&events));
        let p = &state.interfaces["wg0"].peers[&key(1)];
        assert!(p.connected);
        assert_eq!(p.session_start, Some(at(10)), "LastSessionStart moves");
        let (_, events) = track(Some(state), &reset, at(300), &settings());
        let s = events[0].session.unwrap();
        assert_eq!(s.started_at, at(10));
        assert_eq!(
            (s.rx_bytes, s.tx_bytes),
            (50, 60),
            "measured from the reset"
        );
    }

    #[test]
    fn handshake_going_to_never_while_connected_disconnects() {
        let before = snap(vec![iface("wg0", vec![peer(1, Some(0), 10, 10)])]);
        let after = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
        let (_, events) = step(&before, 0, &after, 5);
        assert_eq!(names(&events), ["peer.disconnect:1"]);
        assert_eq!(events[0].time, at(5));
    }

    #[test]
    fn peer_appears_connected_and_vanishes() {
        let empty = snap(vec![iface("wg0", vec![])]);
        let added = snap(vec![iface("wg0", vec![peer(1, Some(4), 0, 0)])]);
        let (state, events) = step(&empty, 0, &added, 5);
        assert_eq!(names(&events), ["peer.create:1", "peer.connect:1"]);
        assert_eq!(events[0].sequence, 1);
        assert_eq!(events[1].sequence, 2);
        let (state, events) = track(Some(state), &empty, at(10), &settings());
        assert_eq!(names(&events), ["peer.disconnect:1", "peer.delete:1"]);
        assert_eq!(events[0].time, at(10), "cut short by the removal");
        assert_eq!(events[1].sequence, 4);
        assert_eq!(state.peer_count(), 0);
    }

    #[test]
    fn config_changes_give_updates_with_changed_fields() {
        let before = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
        let mut p = peer(1, None, 0, 0);
        p.allowed_ips.push("10.9.0.0/24".parse().unwrap());
        p.persistent_keepalive = 25;
        p.has_preshared_key = true;
        p.endpoint = Some("203.0.113.9:4000".parse().unwrap());
        let after = snap(vec![iface("wg0", vec![p.clone()])]);
        let (state, events) = step(&before, 0, &after, 5);
        assert_eq!(names(&events), ["peer.update:1"]);
        assert_eq!(
            events[0].changed,
            [
                ChangedField::Endpoint,
                ChangedField::AllowedIps,
                ChangedField::PersistentKeepalive,
                ChangedField::PresharedKey
            ]
        );
        assert_eq!(
            events[0].peer.as_ref().unwrap().peer,
            p,
            "shows the new config"
        );
        assert_eq!(events[0].peer.as_ref().unwrap().updated_at, at(5));
        let (_, events) = track(Some(state), &after, at(10), &settings());
        assert!(events.is_empty());
    }

    #[test]
    fn first_endpoint_learnt_at_the_first_handshake_comes_with_the_connect() {
        let mut fresh = peer(1, None, 0, 0);
        fresh.endpoint = None;
        let before = snap(vec![iface("wg0", vec![fresh])]);
        let after = snap(vec![iface("wg0", vec![peer(1, Some(4), 0, 0)])]);
        let (state, events) = step(&before, 0, &after, 5);
        assert_eq!(names(&events), ["peer.connect:1"], "no update before it");
        let endpoint = Some("198.51.100.1:51820".parse().unwrap());
        assert_eq!(events[0].peer.as_ref().unwrap().peer.endpoint, endpoint);
        assert_eq!(
            state.interfaces["wg0"].peers[&key(1)].peer.endpoint,
            endpoint,
            "and is remembered"
        );
        let (_, events) = track(Some(state), &after, at(10), &settings());
        assert!(events.is_empty(), "reported once");
    }

    #[test]
    fn endpoint_set_without_a_handshake_is_an_update() {
        let mut fresh = peer(1, None, 0, 0);
        fresh.endpoint = None;
        let before = snap(vec![iface("wg0", vec![fresh])]);
        let after = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
        let (_, events) = step(&before, 0, &after, 5);
        assert_eq!(names(&events), ["peer.update:1"]);
        assert_eq!(events[0].changed, [ChangedField::Endpoint]);
    }

    #[test]
    fn endpoint_that_disappears_is_an_update_showing_none() {
        // A peer re-created without an endpoint between two polls.
        let before = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
        let mut gone = peer(1, None, 0, 0);
        gone.endpoint = None;
        let after = snap(vec![iface("wg0", vec![gone])]);
        let (state, events) = step(&before, 0, &after, 5);
        assert_eq!(names(&events), ["peer.update:1"]);
        assert_eq!(events[0].changed, [ChangedField::Endpoint]);
        assert_eq!(events[0].peer.as_ref().unwrap().peer.endpoint, None);
        assert_eq!(state.interfaces["wg0"].peers[&key(1)].peer.endpoint, None);
    }

    #[test]
    fn first_endpoint_is_silent_when_endpoint_updates_are_off() {
        let quiet = Settings {
            endpoint_updates: false,
            ..settings()
        };
        let mut fresh = peer(1, None, 0, 0);
        fresh.endpoint = None;
        let before = snap(vec![iface("wg0", vec![fresh])]);
        let (state, _) = track(None, &before, at(0), &quiet);
        let after = snap(vec![iface("wg0", vec![peer(1, Some(4), 0, 0)])]);
        let (state, events) = track(Some(state), &after, at(5), &quiet);
        assert_eq!(names(&events), ["peer.connect:1"]);
        let mut gone = peer(1, Some(4), 0, 0);
        gone.endpoint = None;
        let (_, events) = track(
            Some(state),
            &snap(vec![iface("wg0", vec![gone])]),
            at(9),
            &quiet,
        );
        assert!(events.is_empty(), "{:?}", names(&events));
    }

    #[test]
    fn roaming_can_be_ignored() {
        let before = snap(vec![iface("wg0", vec![peer(1, Some(0), 0, 0)])]);
        let mut p = peer(1, Some(0), 0, 0);
        p.endpoint = Some("203.0.113.9:4000".parse().unwrap());
        let after = snap(vec![iface("wg0", vec![p])]);
        let quiet = Settings {
            endpoint_updates: false,
            announce_on_start: Announce::None,
            ..settings()
        };
        let (state, _) = track(None, &before, at(0), &quiet);
        let (state, events) = track(Some(state), &after, at(5), &quiet);
        assert!(events.is_empty());
        let endpoint = state.interfaces["wg0"].peers[&key(1)].peer.endpoint;
        assert_eq!(
            endpoint,
            Some("203.0.113.9:4000".parse().unwrap()),
            "still tracked"
        );
    }

    #[test]
    fn interface_lifecycle_and_order_within_a_poll() {
        let empty = snap(vec![]);
        let mut wg1 = iface("wg1", vec![peer(2, Some(1), 0, 0), peer(1, None, 0, 0)]);
        let wg0 = iface("wg0", vec![peer(9, None, 0, 0)]);
        let (state, events) = step(&empty, 0, &snap(vec![wg1.clone(), wg0.clone()]), 5);
        assert_eq!(
            names(&events),
            [
                "interface.create:wg0",
                "peer.create:9",
                "interface.create:wg1",
                "peer.create:1",
                "peer.create:2",
                "peer.connect:2"
            ]
        );
        let mut ids: Vec<_> = events.iter().map(|e| e.id).collect();
        let sorted = ids.clone();
        ids.sort();
        assert_eq!(ids, sorted, "ids are time-ordered within a poll");

        wg1.listen_port = 51900;
        wg1.fwmark = 7;
        let (state, events) = track(
            Some(state),
            &snap(vec![wg1, wg0.clone()]),
            at(10),
            &settings(),
        );
        assert_eq!(names(&events), ["interface.update:wg1"]);
        assert_eq!(
            events[0].changed,
            [ChangedField::ListenPort, ChangedField::Fwmark]
        );
        assert_eq!(events[0].interface.listen_port, 51900);
        assert_eq!(events[0].sequence, 2);

        let (state, events) = track(Some(state), &snap(vec![wg0]), at(15), &settings());
        assert_eq!(
            names(&events),
            [
                "peer.delete:1",
                "peer.disconnect:2",
                "peer.delete:2",
                "interface.delete:wg1"
            ]
        );
        assert_eq!(state.interfaces.len(), 1);
    }

    #[test]
    fn unreadable_interface_keeps_its_state() {
        let s = snap(vec![iface("wg0", vec![peer(1, Some(0), 0, 0)])]);
        let (state, _) = track(None, &s, at(0), &settings());
        let blind = Snapshot {
            interfaces: Vec::new(),
            unreadable: vec!["wg0".into()],
        };
        let (state, events) = track(Some(state), &blind, at(5), &settings());
        assert!(events.is_empty());
        assert!(state.is_peer_connected("wg0", &key(1)));
        let (_, events) = track(Some(state), &s, at(10), &settings());
        assert!(events.is_empty(), "nothing reported twice");
    }

    /// Regression: `last_handshake_time_sec=8210266876700` (99 s before
    /// chrono's last instant) then the peer vanishing made `hs + threshold`
    /// panic. Every path that derives a time from a handshake saturates.
    #[test]
    fn handshakes_at_the_end_of_time_do_not_overflow() {
        let reported = DateTime::from_timestamp(8_210_266_876_700, 0).unwrap();
        let extremes = [reported, DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC];
        let thresholds = [TimeDelta::seconds(180), TimeDelta::MAX];
        for hs in extremes {
            for threshold in thresholds {
                let s = Settings {
                    connect_threshold: threshold,
                    ..settings()
                };
                let mut far = peer(1, None, 0, 0);
                far.last_handshake = Some(hs);
                let with = |peers: Vec<Peer>| snap(vec![iface("wg0", peers)]);
                let ctx = format!("handshake {hs}, threshold {threshold}");

                // First start, then the peer vanishes.
                let (state, _) = track(None, &with(vec![far.clone()]), at(0), &s);
                let (_, events) = track(Some(state.clone()), &with(vec![]), at(5), &s);
                assert_eq!(
                    names(&events[events.len() - 1..]),
                    ["peer.delete:1"],
                    "{ctx}"
                );
                assert!(events.iter().all(|e| e.time <= at(5)), "{ctx}");

                // The interface vanishes.
                let (_, events) = track(Some(state), &snap(vec![]), at(5), &s);
                assert_eq!(
                    names(&events[events.len() - 1..]),
                    ["interface.delete:wg0"],
                    "{ctx}"
                );

                // A new peer (connect, and disconnect if aged out).
                let (state, events) = track(
                    Some(track(None, &with(vec![]), at(0), &s).0),
                    &with(vec![far.clone()]),
                    at(5),
                    &s,
                );
                assert_eq!(
                    names(&events[..2]),
                    ["peer.create:1", "peer.connect:1"],
                    "{ctx}"
                );

                // Pings: the session ends at the later of aging out and the last answer.
                let down = pings(&[(1, false, Some(3))]);
                let gone = track_changes_with_pings(
                    Some(state.clone()),
                    &with(vec![]),
                    Some(&down),
                    at(9),
                    &s,
                );
                assert!(gone.events.iter().all(|e| e.time <= at(9)), "{ctx}");
                let kept = {
                    let mut p = far.clone();
                    p.last_handshake = Some(at(1));
                    p.rx_bytes = 0;
                    p
                };
                let _ = track_changes_with_pings(
                    Some(state),
                    &with(vec![kept]),
                    Some(&down),
                    at(400),
                    &s,
                );

                // Gap rule: a connected peer's handshake jumps.
                let (state, _) = track(None, &with(vec![peer(1, Some(0), 0, 0)]), at(0), &s);
                let (state, _) = track(Some(state), &with(vec![far.clone()]), at(5), &s);
                // And back from the extreme to an ordinary time (a reset).
                let _ = track(
                    Some(state),
                    &with(vec![peer(1, Some(6), 0, 0)]),
                    at(400),
                    &s,
                );

                // Connected and gone between two polls.
                let (state, _) = track(None, &with(vec![peer(1, None, 0, 0)]), at(0), &s);
                let _ = track(Some(state), &with(vec![far.clone()]), at(5), &s);
            }
        }
    }

    #[test]
    fn session_end_saturates_instead_of_overflowing() {
        let last = DateTime::<Utc>::MAX_UTC;
        let hs = last - TimeDelta::seconds(99);
        assert_eq!(aged_out(hs, TimeDelta::seconds(180)), last);
        assert_eq!(
            aged_out(hs, TimeDelta::seconds(9)),
            hs + TimeDelta::seconds(9)
        );
        assert_eq!(session_end(Some(hs), at(0), TimeDelta::seconds(180)), at(0));
        assert_eq!(
            session_end_pinged(Some(hs), Some(at(-3)), at(0), TimeDelta::seconds(180)),
            at(0)
        );
        let first = DateTime::<Utc>::MIN_UTC;
        assert_eq!(
            aged_out(first + TimeDelta::seconds(1), -TimeDelta::seconds(5)),
            first
        );
    }

    /// Logs written while `f` runs (DEBUG and up), as text.
    fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buffer::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        (out, text)
    }

    #[test]
    fn duplicate_peer_keys_keep_the_first_with_one_warning() {
        let all = Settings {
            announce_on_start: Announce::All,
            ..settings()
        };
        let mut twin = peer(1, Some(-400), 50, 50);
        twin.allowed_ips = vec!["10.99.0.0/16".parse().unwrap()];
        // First start.
        let first = snap(vec![iface("wg0", vec![peer(1, None, 0, 0), twin.clone()])]);
        let ((state, events), logs) = logs_of(|| track(None, &first, at(0), &all));
        assert_eq!(names(&events), ["interface.create:wg0", "peer.create:1"]);
        assert_eq!(
            state.interfaces["wg0"].peers[&key(1)].peer,
            peer(1, None, 0, 0)
        );
        assert_eq!(logs.matches("WARN").count(), 1, "{logs}");
        assert!(logs.contains("interface=wg0"), "{logs}");

        // A new interface.
        let dup = snap(vec![
            iface("wg0", vec![peer(1, None, 0, 0)]),
            iface("wg1", vec![peer(2, None, 0, 0), peer(2, Some(0), 9, 9)]),
        ]);
        let (state, events) = track(Some(state), &dup, at(1), &all);
        assert_eq!(names(&events), ["interface.create:wg1", "peer.create:2"]);

        // A known interface: a new key twice, a known key twice.
        let mut again = dup.clone();
        again.interfaces[0].peers = vec![
            peer(1, None, 0, 0),
            peer(3, None, 0, 0),
            twin,
            peer(3, Some(0), 9, 9),
        ];
        let ((state, events), logs) = logs_of(|| track(Some(state), &again, at(2), &all));
        assert_eq!(names(&events), ["peer.create:3"]);
        assert_eq!(logs.matches("WARN").count(), 2, "one per interface: {logs}");
        let wg0 = &state.interfaces["wg0"].peers;
        assert_eq!(wg0.len(), 2);
        assert_eq!(wg0[&key(1)].peer, peer(1, None, 0, 0));
        assert_eq!(wg0[&key(3)].peer, peer(3, None, 0, 0));

        // No churn while the backend keeps listing them twice.
        let (state2, events) = track(Some(state.clone()), &again, at(3), &all);
        assert!(events.is_empty(), "{:?}", names(&events));
        assert_eq!(state2.interfaces, state.interfaces);
    }

    fn watching(include: &[&str], exclude: &[&str]) -> Settings {
        Settings {
            filter: InterfaceFilter {
                include: include.iter().map(|s| s.to_string()).collect(),
                exclude: exclude.iter().map(|s| s.to_string()).collect(),
            },
            ..settings()
        }
    }

    #[test]
    fn an_interface_leaving_the_filter_is_forgotten_without_events() {
        let both = snap(vec![
            iface("wg0", vec![peer(1, Some(-5), 0, 0)]),
            iface("wg1", vec![peer(2, Some(-5), 0, 0)]),
        ]);
        let (state, _) = track(None, &both, at(0), &settings());
        // The backend no longer returns wg1 (it applies the filter too).
        let narrow = watching(&[], &["wg1"]);
        let only_wg0 = snap(vec![iface("wg0", vec![peer(1, Some(-5), 0, 0)])]);
        let (tracked, logs) = logs_of(|| track_changes(Some(state), &only_wg0, at(5), &narrow));
        assert!(tracked.events.is_empty(), "{:?}", names(&tracked.events));
        assert_eq!(tracked.state.interfaces.keys().collect::<Vec<_>>(), ["wg0"]);
        assert_eq!(tracked.changes.removed_interfaces, ["wg1"], "its rows go");
        assert!(tracked.changes.meta, "the new filter is saved");
        assert_eq!(tracked.state.filter.as_ref(), Some(&narrow.filter));
        assert!(
            logs.contains("INFO") && logs.contains("no longer watched"),
            "{logs}"
        );
        assert!(logs.contains("interface=wg1"), "{logs}");

        // A backend that still returns it: ignored, not re-created.
        let (state, events) = track(Some(tracked.state), &both, at(6), &narrow);
        assert!(events.is_empty(), "{:?}", names(&events));
        assert!(!state.interfaces.contains_key("wg1"));

        // Let back in: a first start for wg1 (announce_on_start: connected).
        let (state, events) = track(Some(state), &both, at(10), &settings());
        assert_eq!(names(&events), ["peer.connect:2"]);
        assert!(state.is_peer_connected("wg1", &key(2)));
        let (_, events) = track(Some(state), &both, at(15), &settings());
        assert!(events.is_empty(), "{:?}", names(&events));
    }

    #[test]
    fn an_interface_entering_the_filter_is_baselined_per_announce_on_start() {
        let wg0 = iface("wg0", vec![]);
        let wg1 = iface("wg1", vec![peer(2, Some(-5), 0, 0), peer(3, None, 0, 0)]);
        for (announce, expected) in [
            (Announce::Connected, vec!["peer.connect:2"]),
            (Announce::None, vec![]),
            (
                Announce::All,
                vec![
                    "interface.create:wg1",
                    "peer.create:2",
                    "peer.connect:2",
                    "peer.create:3",
                ],
            ),
        ] {
            let narrow = Settings {
                announce_on_start: announce,
                ..watching(&["wg0"], &[])
            };
            let wide = Settings {
                announce_on_start: announce,
                ..settings()
            };
            let (state, _) = track(None, &snap(vec![wg0.clone()]), at(0), &narrow);
            let t = track_changes(
                Some(state),
                &snap(vec![wg0.clone(), wg1.clone()]),
                at(5),
                &wide,
            );
            assert_eq!(names(&t.events), expected, "{announce:?}");
            assert!(t.state.is_peer_connected("wg1", &key(2)));
            // Saved incrementally: the interface and its peers are listed.
            assert_eq!(t.changes.interfaces, ["wg1"]);
            assert_eq!(t.changes.peers.len(), 2);
        }
    }

    #[test]
    fn an_interface_created_after_the_filter_widened_is_created() {
        let narrow = watching(&["wg0"], &[]);
        let wg0 = iface("wg0", vec![]);
        let (state, _) = track(None, &snap(vec![wg0.clone()]), at(0), &narrow);
        let (state, events) = track(Some(state), &snap(vec![wg0.clone()]), at(5), &settings());
        assert!(events.is_empty());
        let wg1 = iface("wg1", vec![peer(2, None, 0, 0)]);
        let (_, events) = track(Some(state), &snap(vec![wg0, wg1]), at(10), &settings());
        assert_eq!(names(&events), ["interface.create:wg1", "peer.create:2"]);
    }

    #[test]
    fn a_state_without_a_saved_filter_takes_the_current_one() {
        let wg0 = iface("wg0", vec![]);
        let (mut state, _) = track(None, &snap(vec![wg0.clone()]), at(0), &settings());
        state.filter = None; // saved by an older wghook
        let wg1 = iface("wg1", vec![peer(2, None, 0, 0)]);
        let t = track_changes(Some(state), &snap(vec![wg0, wg1]), at(5), &settings());
        assert_eq!(names(&t.events), ["interface.create:wg1", "peer.create:2"]);
        assert!(t.changes.meta, "the filter is saved from now on");
    }

    #[test]
    fn an_interface_unreadable_on_the_first_start_is_baselined_when_readable() {
        let wg0 = iface("wg0", vec![]);
        let blind = Snapshot {
            unreadable: vec!["wg1".into()],
            ..snap(vec![wg0.clone()])
        };
        let first = track_changes(None, &blind, at(0), &settings());
        assert!(first.events.is_empty());
        assert!(first.state.unbaselined.contains("wg1"));
        // Still unreadable: remembered, nothing to save.
        let still = track_changes(Some(first.state), &blind, at(5), &settings());
        assert!(still.changes.is_empty(), "{:?}", still.changes);
        // Restart in between: the saved state remembers it.
        let json = serde_json::to_string(&still.state).unwrap();
        let restored: State = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, still.state);

        let wg1 = iface(
            "wg1",
            vec![peer(2, Some(8), 0, 0), peer(3, Some(-900), 0, 0)],
        );
        let readable = snap(vec![wg0.clone(), wg1.clone()]);
        let t = track_changes(Some(restored), &readable, at(10), &settings());
        assert_eq!(
            names(&t.events),
            ["peer.connect:2"],
            "no create, no replayed history"
        );
        assert!(t.state.unbaselined.is_empty());
        assert!(t.changes.meta);
        let (_, events) = track(Some(t.state), &readable, at(15), &settings());
        assert!(events.is_empty());
    }

    #[test]
    fn an_unread_interface_that_vanishes_is_created_when_it_comes_back() {
        let wg0 = iface("wg0", vec![]);
        let blind = Snapshot {
            unreadable: vec!["wg1".into()],
            ..snap(vec![wg0.clone()])
        };
        let (state, _) = track(None, &blind, at(0), &settings());
        let gone = track_changes(Some(state), &snap(vec![wg0.clone()]), at(5), &settings());
        assert!(gone.events.is_empty());
        assert!(gone.state.unbaselined.is_empty());
        assert!(gone.changes.meta);
        let wg1 = iface("wg1", vec![peer(2, None, 0, 0)]);
        let (_, events) = track(Some(gone.state), &snap(vec![wg0, wg1]), at(10), &settings());
        assert_eq!(names(&events), ["interface.create:wg1", "peer.create:2"]);
    }

    #[test]
    fn events_carry_host_and_no_secrets() {
        let empty = snap(vec![iface("wg0", vec![])]);
        let mut p = peer(1, None, 0, 0);
        p.has_preshared_key = true;
        let (_, events) = step(&empty, 0, &snap(vec![iface("wg0", vec![p])]), 5);
        assert_eq!(events[0].host, "vpn1");
        assert_eq!(events[0].time, at(5));
        let json = serde_json::to_string(&events[0]).unwrap();
        assert!(json.contains("\"has_preshared_key\":true"));
    }

    #[test]
    fn peer_order_changes_are_not_events_and_the_map_stays_consistent() {
        let peers: Vec<Peer> = (1..=6).map(|n| peer(n, Some(-5), 0, 0)).collect();
        let (mut state, _) = track(
            None,
            &snap(vec![iface("wg0", peers.clone())]),
            at(0),
            &settings(),
        );
        // wireguard-go lists peers in a different order on every call.
        for rotation in 1..6 {
            let mut shuffled = peers.clone();
            shuffled.rotate_left(rotation);
            shuffled.swap(0, 3);
            let (next, events) = track(
                Some(state),
                &snap(vec![iface("wg0", shuffled)]),
                at(1),
                &settings(),
            );
            assert!(events.is_empty(), "{:?}", names(&events));
            state = next;
        }
        // Remove from the middle, add one: lookups stay right.
        let mut fewer = peers.clone();
        fewer.remove(2);
        fewer.push(peer(9, None, 0, 0));
        let (state, events) = track(
            Some(state),
            &snap(vec![iface("wg0", fewer)]),
            at(2),
            &settings(),
        );
        assert_eq!(
            names(&events),
            ["peer.disconnect:3", "peer.delete:3", "peer.create:9"]
        );
        let map = &state.interfaces["wg0"].peers;
        assert_eq!(map.len(), 6);
        for n in [1, 2, 4, 5, 6, 9] {
            assert_eq!(map[&key(n)].peer.public_key, key(n));
        }
        assert!(map.get(&key(3)).is_none());
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<State>(&json).unwrap(), state);
    }

    /// Ping results for interface `wg0`: (peer, pingable, last answered ping).
    fn pings(results: &[(u8, bool, Option<i64>)]) -> Pings {
        let peers = results
            .iter()
            .map(|&(n, pingable, last)| {
                let status = PingStatus {
                    pingable,
                    last_ping: last.map(at),
                };
                (key(n), status)
            })
            .collect();
        Pings::from([("wg0".to_string(), peers)])
    }

    #[test]
    fn pingable_without_handshake_is_connected_when_ping_checks_are_on() {
        let s = settings();
        let never = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
        let (base, events) = track(None, &never, at(0), &s);
        assert!(events.is_empty());

        // Ping checks off: an answering peer without handshake stays down.
        let off = track_changes(Some(base.clone()), &never, at(10), &s);
        assert!(off.events.is_empty());
        assert!(!off.state.is_peer_connected("wg0", &key(1)));

        let up = pings(&[(1, true, Some(10))]);
        let on = track_changes_with_pings(Some(base), &never, Some(&up), at(10), &s);
        assert_eq!(names(&on.events), ["peer.connect:1"]);
        let connect = &on.events[0];
        assert_eq!(
            connect.time,
            at(10),
            "the session starts at the answered ping"
        );
        let info = connect.peer.as_ref().unwrap();
        assert!(info.pingable);
        assert_eq!(info.last_ping, Some(at(10)));
        assert_eq!(info.peer.last_handshake, None);
        assert!(on.state.is_peer_connected("wg0", &key(1)));
        assert_eq!(on.changes.peers, [("wg0".to_string(), key(1))]);

        // Still answering: nothing new.
        let up = pings(&[(1, true, Some(40))]);
        let same = track_changes_with_pings(Some(on.state), &never, Some(&up), at(40), &s);
        assert!(same.events.is_empty());

        // No answer any more: disconnected at the last answered ping.
        let down = pings(&[(1, false, Some(40))]);
        let gone = track_changes_with_pings(Some(same.state), &never, Some(&down), at(70), &s);
        assert_eq!(names(&gone.events), ["peer.disconnect:1"]);
        let disconnect = &gone.events[0];
        assert_eq!(disconnect.time, at(40));
        let info = disconnect.peer.as_ref().unwrap();
        assert!(!info.pingable);
        assert_eq!(info.last_ping, Some(at(40)));
        assert_eq!(
            disconnect.session.map(|s| (s.started_at, s.ended_at)),
            Some((at(10), Some(at(40))))
        );
    }

    #[test]
    fn ping_keeps_a_session_whose_handshake_aged_out() {
        let s = settings();
        let one = snap(vec![iface("wg0", vec![peer(1, Some(0), 5, 5)])]);
        let (base, _) = track(None, &one, at(0), &s);
        assert!(base.is_peer_connected("wg0", &key(1)));
        // 200 s after the handshake (threshold 180 s), but it answers ping.
        let up = pings(&[(1, true, Some(200))]);
        let kept = track_changes_with_pings(Some(base), &one, Some(&up), at(200), &s);
        assert!(kept.events.is_empty(), "{:?}", names(&kept.events));
        assert!(kept.state.is_peer_connected("wg0", &key(1)));
        // Then it stops answering: the session ends at the last answer, not
        // when the handshake aged out.
        let down = pings(&[(1, false, Some(200))]);
        let gone = track_changes_with_pings(Some(kept.state), &one, Some(&down), at(230), &s);
        assert_eq!(names(&gone.events), ["peer.disconnect:1"]);
        assert_eq!(gone.events[0].time, at(200));
        assert_eq!(gone.events[0].session.unwrap().started_at, at(0));
    }

    #[test]
    fn pingable_peers_are_connected_on_first_start_and_when_new() {
        let s = settings();
        let up = pings(&[(1, true, Some(0)), (2, true, Some(30))]);
        let first = snap(vec![iface("wg0", vec![peer(1, None, 0, 0)])]);
        let start = track_changes_with_pings(None, &first, Some(&up), at(0), &s);
        assert_eq!(names(&start.events), ["peer.connect:1"]);

        let both = snap(vec![iface(
            "wg0",
            vec![peer(1, None, 0, 0), peer(2, None, 0, 0)],
        )]);
        let next = track_changes_with_pings(Some(start.state), &both, Some(&up), at(30), &s);
        assert_eq!(names(&next.events), ["peer.create:2", "peer.connect:2"]);
        assert_eq!(next.events[1].time, at(30));
        // A create carries the ping status too.
        assert!(next.events[0].peer.as_ref().unwrap().pingable);
    }

    #[test]
    fn ping_results_of_other_interfaces_do_not_count() {
        let s = settings();
        let never = snap(vec![iface("wg1", vec![peer(1, None, 0, 0)])]);
        let (base, _) = track(None, &never, at(0), &s);
        let up = pings(&[(1, true, Some(10))]); // for wg0
        let t = track_changes_with_pings(Some(base), &never, Some(&up), at(10), &s);
        assert!(t.events.is_empty());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeSet;

        /// Handshake age (or never), rx, tx, keepalive step; `None`: absent.
        type PeerSpec = Option<(Option<i64>, u64, u64, u8)>;
        /// Which of the 2 interfaces exist, and the pool of 6 peers.
        type Spec = (Vec<bool>, Vec<PeerSpec>);

        /// One peer of a pool of 6, on one of 2 interfaces: present or not,
        /// handshake offset from now (or never), counters.
        fn peer_strategy() -> impl Strategy<Value = PeerSpec> {
            proptest::option::of((
                proptest::option::of(0i64..600),
                0u64..1000,
                0u64..1000,
                0u8..3,
            ))
        }

        fn snapshot_strategy() -> impl Strategy<Value = Spec> {
            (
                proptest::collection::vec(any::<bool>(), 2),
                proptest::collection::vec(peer_strategy(), 6),
            )
        }

        fn build(now: i64, spec: &Spec) -> Snapshot {
            let (ifaces, peers) = spec;
            let mut out = Vec::new();
            for (i, present) in ifaces.iter().enumerate() {
                if !present {
                    continue;
                }
                let mut list = Vec::new();
                for (n, p) in peers.iter().enumerate() {
                    if n % 2 != i {
                        continue;
                    }
                    if let Some((age, rx, tx, ka)) = p {
                        let mut peer = peer(n as u8, age.map(|a| now - a), *rx, *tx);
                        peer.persistent_keepalive = u16::from(*ka) * 25;
                        list.push(peer);
                    }
                }
                out.push(iface(&format!("wg{i}"), list));
            }
            snap(out)
        }

        fn connected_in(s: &Snapshot, now: i64) -> BTreeSet<(String, u8)> {
            s.interfaces
                .iter()
                .flat_map(|i| {
                    i.peers
                        .iter()
                        .filter(|p| {
                            is_connected(p.last_handshake, at(now), TimeDelta::seconds(180))
                        })
                        .map(|p| (i.name.clone(), p.public_key.0[0]))
                })
                .collect()
        }

        proptest! {
            /// The list-plus-index map behaves like a plain map through
            /// inserts, removals (which move the last entry) and reorders.
            #[test]
            fn peer_map_matches_a_btree_map(
                ops in proptest::collection::vec((0u8..3, 0u8..24, any::<u64>()), 1..200)
            ) {
                let mut map = PeerMap::default();
                let mut model = std::collections::BTreeMap::new();
                for (op, n, rx) in ops {
                    match op {
                        0 => {
                            let p = new_peer_state(&peer(n, None, rx, 0), at(0), false);
                            map.insert(key(n), p.clone());
                            model.insert(key(n), p);
                        }
                        1 => prop_assert_eq!(map.remove(&key(n)), model.remove(&key(n))),
                        _ => map.reorder((0..24).rev().map(|k| key(k.max(n) ^ 1))),
                    }
                    prop_assert_eq!(map.len(), model.len());
                    for k in 0..24 {
                        prop_assert_eq!(map.get(&key(k)), model.get(&key(k)));
                    }
                }
            }

            #[test]
            fn identical_snapshots_give_no_events(spec in snapshot_strategy(), announce in 0..3u8) {
                let settings = Settings {
                    announce_on_start: [Announce::Connected, Announce::All, Announce::None][announce as usize],
                    ..settings()
                };
                let s = build(0, &spec);
                let (state, _) = track(None, &s, at(0), &settings);
                let (state2, events) = track(Some(state.clone()), &s, at(0), &settings);
                prop_assert!(events.is_empty(), "{:?}", names(&events));
                prop_assert_eq!(state2, state);
            }

            /// The fast path for idle peers (skipped when ping results are
            /// given, even empty ones) changes nothing the full path would not.
            #[test]
            fn the_idle_peer_shortcut_matches_the_full_path(
                specs in proptest::collection::vec((snapshot_strategy(), 0i64..400, 0i64..400), 1..8)
            ) {
                let no_pings = Pings::new();
                let (mut fast, mut full) = (None, None);
                let mut now = 0;
                for (spec, dt, again) in &specs {
                    now += dt;
                    let s = build(now, spec);
                    // Each snapshot twice: the second time mostly idle peers.
                    for t in [now, now + again] {
                        let a = track_changes_with_pings(fast.take(), &s, None, at(t), &settings());
                        let b = track_changes_with_pings(full.take(), &s, Some(&no_pings), at(t), &settings());
                        let strip = |events: Vec<Event>| -> Vec<Event> {
                            events.into_iter().map(|e| Event { id: Uuid::nil(), ..e }).collect()
                        };
                        prop_assert_eq!(&a.state, &b.state);
                        prop_assert_eq!(&a.changes, &b.changes);
                        prop_assert_eq!(strip(a.events), strip(b.events));
                        fast = Some(a.state);
                        full = Some(b.state);
                    }
                    now += again;
                }
            }

            #[test]
            fn replaying_events_reproduces_the_connected_set(
                specs in proptest::collection::vec((snapshot_strategy(), 1i64..400), 1..8)
            ) {
                let mut state = None;
                let mut replay: BTreeSet<(String, u8)> = BTreeSet::new();
                let mut now = 0;
                let mut last = Snapshot::default();
                for (spec, dt) in &specs {
                    now += dt;
                    let s = build(now, spec);
                    let (next, events) = track(state.take(), &s, at(now), &settings());
                    for e in &events {
                        let Some(p) = &e.peer else { continue };
                        let k = (e.interface.name.clone(), p.peer.public_key.0[0]);
                        match e.kind {
                            EventKind::Connect => prop_assert!(replay.insert(k), "double connect"),
                            EventKind::Disconnect => prop_assert!(replay.remove(&k), "disconnect without connect"),
                            EventKind::Delete => prop_assert!(!replay.contains(&k), "deleted while connected"),
                            _ => {}
                        }
                    }
                    state = Some(next);
                    last = s;
                }
                prop_assert_eq!(&replay, &connected_in(&last, now));
                let state = state.unwrap();
                prop_assert_eq!(state.connected_count(), replay.len());
            }
        }
    }
}
