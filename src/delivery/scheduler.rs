//! One webhook's delivery queue: which event to attempt next, and when.
//!
//! Ordering rules (`delivery.md`): events of one peer go out one after the
//! other in the order they happened, and so do events of one interface; an
//! interface event also waits for the earlier events of its peers, and a
//! peer event for the earlier events of its interface (so `interface.create`
//! precedes its peers' events and `interface.delete` follows them). Events of
//! different peers go in parallel, at most `max_in_flight` at once.
//!
//! The [`Queue`] is plain data (no I/O, no clock): only lane heads are ever
//! candidates, and a `ready` set ordered by due time holds the candidates
//! that may go, so picking the next attempt is O(log n) at any queue length.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::event::Event;
use crate::model::PublicKey;

/// One pending delivery of one event.
#[derive(Debug, Clone)]
pub struct Item {
    pub seq: i64,
    pub event: Arc<Event>,
    /// When the event was committed (start of `max_event_age`).
    pub created_at: DateTime<Utc>,
    /// Attempts made so far.
    pub attempts: u32,
    pub next_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct IfaceLanes {
    own: VecDeque<i64>,
    peers: HashMap<PublicKey, VecDeque<i64>>,
    all: BTreeSet<i64>,
}

#[derive(Debug)]
struct Slot {
    item: Item,
    in_flight: bool,
    /// Its key in `ready`, when it is there.
    ready_at: Option<i64>,
}

/// The pending deliveries of one webhook.
#[derive(Debug, Default)]
pub struct Queue {
    slots: HashMap<i64, Slot>,
    ifaces: HashMap<String, IfaceLanes>,
    /// (due time in ms, seq) of lane heads that may be attempted.
    ready: BTreeSet<(i64, i64)>,
    /// Every pending seq: the first is the oldest event.
    seqs: BTreeSet<i64>,
}

impl Queue {
    /// Number of pending deliveries (in flight included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The oldest pending item's commit time.
    pub fn oldest(&self) -> Option<DateTime<Utc>> {
        let first = self.seqs.first()?;
        self.slots.get(first).map(|s| s.item.created_at)
    }

    pub fn get(&self, seq: i64) -> Option<&Item> {
        self.slots.get(&seq).map(|s| &s.item)
    }

    /// Appends an item; items must come in increasing `seq` order.
    pub fn push(&mut self, item: Item) {
        let seq = item.seq;
        if self.slots.contains_key(&seq) {
            return;
        }
        let lanes = self
            .ifaces
            .entry(item.event.interface.name.clone())
            .or_default();
        match peer_key(&item.event) {
            Some(key) => lanes.peers.entry(key).or_default().push_back(seq),
            None => lanes.own.push_back(seq),
        }
        lanes.all.insert(seq);
        self.seqs.insert(seq);
        self.slots.insert(
            seq,
            Slot {
                item,
                in_flight: false,
                ready_at: None,
            },
        );
        self.consider(seq);
    }

    /// The next item due at or before `now_ms`, marked in flight.
    pub fn take_due(&mut self, now_ms: i64) -> Option<Item> {
        let &(at, seq) = self.ready.first()?;
        if at > now_ms {
            return None;
        }
        self.ready.remove(&(at, seq));
        let slot = self.slots.get_mut(&seq)?;
        slot.ready_at = None;
        slot.in_flight = true;
        Some(slot.item.clone())
    }

    /// When the earliest candidate is due (ms), if any.
    pub fn next_due(&self) -> Option<i64> {
        self.ready.first().map(|&(at, _)| at)
    }

    /// Puts an attempted item back, to be tried again at `next_at`.
    pub fn retry(&mut self, seq: i64, attempts: u32, next_at: DateTime<Utc>) {
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.in_flight = false;
            slot.item.attempts = attempts;
            slot.item.next_at = next_at;
        }
        self.consider(seq);
    }

    /// Removes an item (delivered, given up or dropped) and lets the items it
    /// held back become candidates.
    pub fn remove(&mut self, seq: i64) -> Option<Item> {
        let slot = self.slots.remove(&seq)?;
        self.seqs.remove(&seq);
        if let Some(at) = slot.ready_at {
            self.ready.remove(&(at, seq));
        }
        let iface = slot.item.event.interface.name.clone();
        let key = peer_key(&slot.item.event);
        let mut wake = Vec::new();
        if let Some(lanes) = self.ifaces.get_mut(&iface) {
            lanes.all.remove(&seq);
            match key {
                Some(key) => {
                    if let Some(lane) = lanes.peers.get_mut(&key) {
                        lane.retain(|s| *s != seq);
                        match lane.front() {
                            Some(&head) => wake.push(head),
                            None => {
                                lanes.peers.remove(&key);
                            }
                        }
                    }
                    wake.extend(lanes.own.front().copied());
                }
                None => {
                    lanes.own.retain(|s| *s != seq);
                    wake.extend(lanes.own.front().copied());
                    wake.extend(lanes.peers.values().filter_map(|l| l.front().copied()));
                }
            }
            if lanes.all.is_empty() {
                self.ifaces.remove(&iface);
            }
        }
        for s in wake {
            self.consider(s);
        }
        Some(slot.item)
    }

    /// Whether the order rules let `seq` go now.
    fn eligible(&self, seq: i64, event: &Event) -> bool {
        let Some(lanes) = self.ifaces.get(&event.interface.name) else {
            return false;
        };
        match peer_key(event) {
            None => lanes.all.first() == Some(&seq),
            Some(key) => {
                lanes.peers.get(&key).and_then(|l| l.front()) == Some(&seq)
                    && lanes.own.front().is_none_or(|&head| head > seq)
            }
        }
    }

    fn consider(&mut self, seq: i64) {
        let Some(slot) = self.slots.get(&seq) else {
            return;
        };
        if slot.in_flight || slot.ready_at.is_some() || !self.eligible(seq, &slot.item.event) {
            return;
        }
        let at = slot.item.next_at.timestamp_millis();
        self.ready.insert((at, seq));
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.ready_at = Some(at);
        }
    }
}

fn peer_key(event: &Event) -> Option<PublicKey> {
    event.peer.as_ref().map(|p| p.peer.public_key)
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::event::{Entity, EventKind, InterfaceInfo, PeerInfo};
    use crate::model::{DriverKind, Peer};

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    /// An item of `iface`, for peer `peer` (or the interface), due at `due` ms.
    pub(super) fn item(seq: i64, iface: &str, peer: Option<u8>, due: i64) -> Item {
        let info = InterfaceInfo {
            name: iface.into(),
            public_key: None,
            listen_port: 0,
            fwmark: 0,
            driver: DriverKind::Userspace,
            addresses: vec![],
            mtu: None,
            created_at: t(0),
            updated_at: t(0),
        };
        let event = Event {
            id: uuid::Uuid::nil(),
            kind: EventKind::Create,
            entity: if peer.is_some() {
                Entity::Peer
            } else {
                Entity::Interface
            },
            time: t(0),
            host: "h".into(),
            sequence: 1,
            interface: info,
            peer: peer.map(|n| PeerInfo {
                peer: Peer {
                    public_key: PublicKey([n; 32]),
                    ..Peer::default()
                },
                created_at: t(0),
                updated_at: t(0),
                pingable: false,
                last_ping: None,
            }),
            changed: vec![],
            session: None,
        };
        Item {
            seq,
            event: Arc::new(event),
            created_at: t(0),
            attempts: 0,
            next_at: t(due),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::item;
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    fn base() -> i64 {
        t(0).timestamp_millis()
    }

    fn drain(q: &mut Queue, now: i64) -> Vec<i64> {
        std::iter::from_fn(|| q.take_due(base() + now).map(|i| i.seq)).collect()
    }

    #[test]
    fn one_peer_goes_in_order_and_peers_go_in_parallel() {
        let mut q = Queue::default();
        q.push(item(1, "wg0", Some(1), 0));
        q.push(item(2, "wg0", Some(1), 0));
        q.push(item(3, "wg0", Some(2), 0));
        assert_eq!(drain(&mut q, 0), [1, 3], "only lane heads");
        q.remove(1);
        assert_eq!(drain(&mut q, 0), [2]);
    }

    #[test]
    fn a_retrying_event_holds_back_its_peer_but_not_others() {
        let mut q = Queue::default();
        q.push(item(1, "wg0", Some(1), 0));
        q.push(item(2, "wg0", Some(1), 0));
        q.push(item(3, "wg0", Some(2), 0));
        assert_eq!(drain(&mut q, 0), [1, 3]);
        q.retry(1, 1, t(5000));
        q.remove(3);
        assert_eq!(drain(&mut q, 0), Vec::<i64>::new());
        assert_eq!(q.next_due(), Some(base() + 5000));
        assert_eq!(drain(&mut q, 5000), [1]);
    }

    #[test]
    fn interface_events_are_barriers_for_their_peers() {
        let mut q = Queue::default();
        q.push(item(1, "wg0", None, 0)); // interface create
        q.push(item(2, "wg0", Some(1), 0));
        q.push(item(3, "wg1", Some(1), 0)); // other interface: free
        q.push(item(4, "wg0", Some(2), 0));
        q.push(item(5, "wg0", None, 0)); // interface delete
        assert_eq!(drain(&mut q, 0), [1, 3]);
        q.remove(1);
        assert_eq!(drain(&mut q, 0), [2, 4]);
        q.remove(2);
        assert_eq!(
            drain(&mut q, 0),
            Vec::<i64>::new(),
            "delete waits for peer 2"
        );
        q.remove(4);
        assert_eq!(drain(&mut q, 0), [5]);
        q.remove(5);
        q.remove(3);
        assert!(q.is_empty());
        assert!(q.ifaces.is_empty() && q.ready.is_empty());
    }

    #[test]
    fn removing_a_middle_item_keeps_the_lane_consistent() {
        let mut q = Queue::default();
        for seq in 1..=3 {
            q.push(item(seq, "wg0", Some(1), 0));
        }
        q.remove(2); // dropped by the outbox bound
        assert_eq!(drain(&mut q, 0), [1]);
        q.remove(1);
        assert_eq!(drain(&mut q, 0), [3]);
    }
}

#[cfg(test)]
mod properties {
    use super::tests_support::item;
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// A new event: interface 0 or 1, peer 0..3 or the interface itself.
        Push { iface: u8, peer: Option<u8> },
        /// Take everything due now.
        Take,
        /// The n-th in-flight item is delivered (removed).
        Finish(usize),
        /// The n-th in-flight item failed: due again later.
        Retry(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..2, proptest::option::of(0u8..3))
                .prop_map(|(iface, peer)| Op::Push { iface, peer }),
            Just(Op::Take),
            (0usize..8).prop_map(Op::Finish),
            (0usize..8).prop_map(Op::Retry),
        ]
    }

    proptest! {
        /// Whatever happens, an item is only handed out when no earlier
        /// pending item of its peer (or, for interface events, of its
        /// interface; for peer events, no earlier interface event) is still
        /// there, and in the end everything is handed out.
        #[test]
        fn order_rules_hold_and_nothing_is_stuck(ops in proptest::collection::vec(op(), 1..60)) {
            let mut q = Queue::default();
            // seq -> (iface, peer) of every pending item
            let mut pending: std::collections::BTreeMap<i64, (u8, Option<u8>)> = Default::default();
            let mut in_flight: Vec<i64> = Vec::new();
            let mut next_seq = 1;
            let mut now = 0;
            let check = |pending: &std::collections::BTreeMap<i64, (u8, Option<u8>)>, seq: i64| {
                let (iface, peer) = pending[&seq];
                pending.range(..seq).all(|(_, &(i, p))| {
                    i != iface || match peer {
                        None => false,
                        Some(k) => p.is_some() && p != Some(k),
                    }
                })
            };
            for op in ops {
                match op {
                    Op::Push { iface, peer } => {
                        q.push(item(next_seq, &format!("wg{iface}"), peer.map(|p| p + 1), now));
                        pending.insert(next_seq, (iface, peer));
                        next_seq += 1;
                    }
                    Op::Take => {
                        while let Some(it) = q.take_due(base() + now) {
                            prop_assert!(check(&pending, it.seq), "{} handed out too early", it.seq);
                            in_flight.push(it.seq);
                        }
                    }
                    Op::Finish(n) if !in_flight.is_empty() => {
                        let seq = in_flight.remove(n % in_flight.len());
                        prop_assert!(q.remove(seq).is_some());
                        pending.remove(&seq);
                    }
                    Op::Retry(n) if !in_flight.is_empty() => {
                        let seq = in_flight.remove(n % in_flight.len());
                        q.retry(seq, 1, t(now + 50));
                    }
                    _ => {}
                }
                now += 10;
            }
            // Drain: finish everything, eventually.
            for _ in 0..1000 {
                for seq in in_flight.drain(..) {
                    q.remove(seq);
                    pending.remove(&seq);
                }
                now += 100;
                while let Some(it) = q.take_due(base() + now) {
                    prop_assert!(check(&pending, it.seq));
                    in_flight.push(it.seq);
                }
                if pending.is_empty() {
                    break;
                }
            }
            prop_assert!(pending.is_empty(), "stuck: {pending:?}");
            prop_assert!(q.is_empty());
        }
    }

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    fn base() -> i64 {
        t(0).timestamp_millis()
    }
}
