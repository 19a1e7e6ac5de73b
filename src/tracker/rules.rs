//! The rules: what each change between two snapshots emits.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::event::{ChangedField, Entity, Event, EventKind, InterfaceInfo, PeerInfo, Session};
use crate::model::{Interface, Peer, PingStatus, Pings, PublicKey, Snapshot};

use super::state::*;

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

pub(super) fn new_peer_state(peer: &Peer, now: DateTime<Utc>, base_now: bool) -> PeerState {
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
pub(super) fn session_end(
    hs: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    threshold: TimeDelta,
) -> DateTime<Utc> {
    hs.map_or(now, |hs| aged_out(hs, threshold).min(now))
}

/// When a session whose last handshake is `hs` aged out. Saturates at the
/// latest representable time: handshake times come from the backend and a
/// garbled one far in the future must not overflow.
pub(super) fn aged_out(hs: DateTime<Utc>, threshold: TimeDelta) -> DateTime<Utc> {
    hs.checked_add_signed(threshold)
        .unwrap_or(if threshold < TimeDelta::zero() {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
}

/// When a session ended that ping checks may have kept alive: as
/// [`session_end`], but not before the last answered ping.
pub(super) fn session_end_pinged(
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
    // An endpoint change is one (docs/tracking.md): the first endpoint set by
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
