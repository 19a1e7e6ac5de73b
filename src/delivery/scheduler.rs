//! One webhook's delivery queue: which event to attempt next, and when.
//!
//! Ordering rules (docs/delivery.md, "Delivery order"):
//! - the events of one peer go out one after the other, in the order they
//!   happened; so do the interface events of one interface;
//! - an interface's `create` goes before the later events of its peers, and
//!   its `delete` after the earlier events of its peers (their `delete`s);
//! - nothing else waits: an interface `update` neither waits for nor holds
//!   back peer events, and different peers go in parallel, at most
//!   `max_in_flight` at once;
//! - even those two cross waits are bounded: once the event waited for has
//!   been pending for [`CROSS_WAIT`], the events behind it go ahead, so one
//!   event a receiver keeps refusing never holds other lanes for longer.
//!
//! Times are milliseconds on the caller's monotonic clock (`born` and `due`
//! of an [`Item`]); the [`Queue`] is plain data (no I/O, no clock): only
//! lane heads are ever candidates, and a `ready` set ordered by due time
//! holds the candidates that may go, so picking the next attempt is
//! O(log n) at any queue length.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::event::{Event, EventKind};
use crate::model::PublicKey;

/// How long an interface `create` holds back its peers' later events, and
/// peer events hold back their interface's `delete`, at most (counted from
/// when the event waited for was committed).
pub const CROSS_WAIT: Duration = Duration::from_secs(120);

/// One pending delivery of one event.
#[derive(Debug, Clone)]
pub struct Item {
    pub seq: i64,
    pub event: Arc<Event>,
    /// When the event was committed, on the wall clock (shown to operators).
    pub created_at: DateTime<Utc>,
    /// When the event was committed, in ms on the monotonic clock: the start
    /// of `max_event_age` and of [`CROSS_WAIT`].
    pub born: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due, in ms on the monotonic clock.
    pub due: i64,
}

#[derive(Debug, Default)]
struct IfaceLanes {
    /// Interface events, in order.
    own: VecDeque<i64>,
    peers: HashMap<PublicKey, VecDeque<i64>>,
    /// Pending interface `create`s and peer events (what the cross waits look at).
    creates: BTreeSet<i64>,
    peer_seqs: BTreeSet<i64>,
}

impl IfaceLanes {
    fn is_empty(&self) -> bool {
        self.own.is_empty() && self.peers.is_empty()
    }
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
    /// (born in ms, seq) of the items not in flight: the oldest first.
    idle: BTreeSet<(i64, i64)>,
}

/// The cross wait bound in the queue's unit.
fn cross_wait_ms() -> i64 {
    CROSS_WAIT.as_millis() as i64
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

    /// Whether `seq` is pending (in flight included).
    pub fn contains(&self, seq: i64) -> bool {
        self.slots.contains_key(&seq)
    }

    /// Every pending seq, oldest first.
    pub fn seqs(&self) -> impl Iterator<Item = i64> + '_ {
        self.seqs.iter().copied()
    }

    /// Adds an item (a seq already queued is ignored). Items normally come
    /// in increasing `seq` order; an older one (re-queued by `wghook outbox
    /// retry`) takes its place by `seq`.
    pub fn push(&mut self, item: Item) {
        let seq = item.seq;
        if self.slots.contains_key(&seq) {
            return;
        }
        let is_iface_event = item.event.peer.is_none();
        // Only an item older than some pending one (re-queued by `wghook
        // outbox retry`) can change another lane's cross wait.
        let out_of_order = self.seqs.last().is_some_and(|&last| last > seq);
        let lanes = self
            .ifaces
            .entry(item.event.interface.name.clone())
            .or_default();
        let lane = match peer_key(&item.event) {
            Some(key) => {
                lanes.peer_seqs.insert(seq);
                lanes.peers.entry(key).or_default()
            }
            None => {
                if item.event.kind == EventKind::Create {
                    lanes.creates.insert(seq);
                }
                &mut lanes.own
            }
        };
        let at = lane.partition_point(|&s| s < seq);
        lane.insert(at, seq);
        let displaced = (at == 0).then(|| lane.get(1).copied()).flatten();
        self.seqs.insert(seq);
        self.idle.insert((item.born, seq));
        self.slots.insert(
            seq,
            Slot {
                item,
                in_flight: false,
                ready_at: None,
            },
        );
        // An older item put in front of a lane head: the head waits again.
        if let Some(head) = displaced {
            self.unready(head);
        }
        self.consider(seq);
        if out_of_order {
            // A `create` (or a peer event) may hold back other lanes' heads.
            let iface = self.slots[&seq].item.event.interface.name.clone();
            self.wake_iface(&iface, is_iface_event);
        }
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
        self.idle.remove(&(slot.item.born, seq));
        Some(slot.item.clone())
    }

    /// The oldest item not in flight born at or before `born_ms`, marked in
    /// flight (to be given up by age, whatever its place in the order).
    pub fn take_born_by(&mut self, born_ms: i64) -> Option<Item> {
        let &(born, seq) = self.idle.first()?;
        if born > born_ms {
            return None;
        }
        self.idle.remove(&(born, seq));
        self.unready(seq);
        let slot = self.slots.get_mut(&seq)?;
        slot.in_flight = true;
        Some(slot.item.clone())
    }

    /// When the oldest item not in flight was born (ms), if any.
    pub fn oldest_idle_born(&self) -> Option<i64> {
        self.idle.first().map(|&(born, _)| born)
    }

    /// Makes `seq`, waiting for a retry, due at `now_ms` if it was due later.
    pub fn release(&mut self, seq: i64, now_ms: i64) {
        let Some(slot) = self.slots.get_mut(&seq) else {
            return;
        };
        if slot.in_flight || slot.item.due <= now_ms {
            return;
        }
        slot.item.due = now_ms;
        self.unready(seq);
        self.consider(seq);
    }

    /// Whether `seq` (just taken) goes ahead of an event it was to wait
    /// for, because that one has been pending longer than [`CROSS_WAIT`].
    pub fn went_ahead(&self, seq: i64) -> bool {
        self.slots
            .get(&seq)
            .and_then(|slot| self.release_at(seq, &slot.item))
            .is_some_and(|release| release > i64::MIN)
    }

    /// When the earliest candidate is due (ms), if any.
    pub fn next_due(&self) -> Option<i64> {
        self.ready.first().map(|&(at, _)| at)
    }

    /// Puts an attempted item back, to be tried again at `due` (ms).
    pub fn retry(&mut self, seq: i64, attempts: u32, due: i64) {
        if let Some(slot) = self.slots.get_mut(&seq) {
            if slot.in_flight {
                self.idle.insert((slot.item.born, seq));
            }
            slot.in_flight = false;
            slot.item.attempts = attempts;
            slot.item.due = due;
        }
        self.consider(seq);
    }

    /// Removes an item (delivered, given up or dropped) and lets the items it
    /// held back become candidates.
    pub fn remove(&mut self, seq: i64) -> Option<Item> {
        let slot = self.slots.remove(&seq)?;
        self.seqs.remove(&seq);
        self.idle.remove(&(slot.item.born, seq));
        if let Some(at) = slot.ready_at {
            self.ready.remove(&(at, seq));
        }
        let iface = slot.item.event.interface.name.clone();
        let key = peer_key(&slot.item.event);
        let mut wake = Vec::new();
        if let Some(lanes) = self.ifaces.get_mut(&iface) {
            let lane = match key {
                Some(key) => {
                    lanes.peer_seqs.remove(&seq);
                    lanes.peers.get_mut(&key)
                }
                None => {
                    lanes.creates.remove(&seq);
                    Some(&mut lanes.own)
                }
            };
            if let Some(lane) = lane {
                lane.retain(|s| *s != seq);
                wake.extend(lane.front().copied());
            }
            if let Some(key) = key {
                if lanes.peers.get(&key).is_some_and(VecDeque::is_empty) {
                    lanes.peers.remove(&key);
                }
            }
        }
        for s in wake {
            self.consider(s);
        }
        self.wake_iface(&iface, key.is_none());
        if self.ifaces.get(&iface).is_some_and(IfaceLanes::is_empty) {
            self.ifaces.remove(&iface);
        }
        Some(slot.item)
    }

    /// Re-checks the heads whose cross wait an item of `iface` may change:
    /// the peers' heads when it is an interface event (a `create`), else the
    /// interface's own head (a `delete`).
    fn wake_iface(&mut self, iface: &str, peers: bool) {
        let Some(lanes) = self.ifaces.get(iface) else {
            return;
        };
        let heads: Vec<i64> = if peers {
            lanes
                .peers
                .values()
                .filter_map(|l| l.front().copied())
                .collect()
        } else {
            lanes.own.front().copied().into_iter().collect()
        };
        for head in heads {
            self.unready(head);
            self.consider(head);
        }
    }

    /// When the order rules let `seq` go (ms), or `None` while it must wait
    /// for an item that has no time bound (its own lane).
    fn release_at(&self, seq: i64, item: &Item) -> Option<i64> {
        let lanes = self.ifaces.get(&item.event.interface.name)?;
        let born = |s: i64| self.slots.get(&s).map_or(i64::MIN, |slot| slot.item.born);
        match peer_key(&item.event) {
            Some(key) => {
                if lanes.peers.get(&key).and_then(|l| l.front()) != Some(&seq) {
                    return None;
                }
                // The latest earlier `create` of its interface still pending.
                Some(match lanes.creates.range(..seq).next_back() {
                    Some(&c) => born(c).saturating_add(cross_wait_ms()),
                    None => i64::MIN,
                })
            }
            None => {
                if lanes.own.front() != Some(&seq) {
                    return None;
                }
                if item.event.kind != EventKind::Delete {
                    return Some(i64::MIN);
                }
                // The latest earlier peer event still pending (the newest born).
                Some(match lanes.peer_seqs.range(..seq).next_back() {
                    Some(&p) => born(p).saturating_add(cross_wait_ms()),
                    None => i64::MIN,
                })
            }
        }
    }

    /// Takes `seq` out of the ready set (it is checked again by `consider`).
    fn unready(&mut self, seq: i64) {
        if let Some(slot) = self.slots.get_mut(&seq) {
            if let Some(at) = slot.ready_at.take() {
                self.ready.remove(&(at, seq));
            }
        }
    }

    fn consider(&mut self, seq: i64) {
        let Some(slot) = self.slots.get(&seq) else {
            return;
        };
        if slot.in_flight || slot.ready_at.is_some() {
            return;
        }
        let Some(release) = self.release_at(seq, &slot.item) else {
            return;
        };
        let at = slot.item.due.max(release);
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
pub(crate) mod tests_support {
    use super::*;
    use crate::event::{Entity, EventKind, InterfaceInfo, PeerInfo};
    use crate::model::{DriverKind, Peer};

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    /// An item of `iface`, for peer `peer` (or the interface), committed at
    /// 0 ms and due at `due` ms.
    pub(super) fn item(seq: i64, iface: &str, peer: Option<u8>, due: i64) -> Item {
        kind_item(seq, iface, peer, EventKind::Create, 0, due)
    }

    /// An item of the given kind, committed at `born` ms, due at `due` ms.
    pub(crate) fn kind_item(
        seq: i64,
        iface: &str,
        peer: Option<u8>,
        kind: EventKind,
        born: i64,
        due: i64,
    ) -> Item {
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
            kind,
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
            created_at: t(born),
            born,
            attempts: 0,
            due,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::{item, kind_item};
    use super::*;

    fn drain(q: &mut Queue, now: i64) -> Vec<i64> {
        std::iter::from_fn(|| q.take_due(now).map(|i| i.seq)).collect()
    }

    const WAIT: i64 = CROSS_WAIT.as_millis() as i64;

    #[test]
    fn a_released_retry_is_due_at_once_in_its_place() {
        let mut q = Queue::default();
        q.push(item(1, "wg0", Some(1), 0));
        q.push(item(2, "wg0", Some(1), 0));
        assert_eq!(drain(&mut q, 0), [1]);
        q.retry(1, 1, 30_000);
        assert_eq!(drain(&mut q, 100), Vec::<i64>::new());
        q.release(1, 100);
        assert_eq!(q.next_due(), Some(100));
        assert_eq!(drain(&mut q, 100), [1], "the head first, still alone");
        q.release(1, 100); // in flight: nothing to do
        q.release(9, 100); // unknown: nothing to do
        q.retry(1, 2, 50);
        q.release(1, 100); // due earlier already: kept
        assert_eq!(q.next_due(), Some(50));
    }

    #[test]
    fn the_oldest_idle_items_are_taken_by_age_whatever_their_place() {
        let mut q = Queue::default();
        q.push(kind_item(1, "wg0", Some(1), EventKind::Update, 0, 0));
        q.push(kind_item(2, "wg0", Some(1), EventKind::Update, 10, 0));
        q.push(kind_item(3, "wg0", Some(2), EventKind::Update, 20, 0));
        assert_eq!(drain(&mut q, 0), [1, 3]);
        assert_eq!(q.oldest_idle_born(), Some(10), "1 and 3 are in flight");
        assert!(q.take_born_by(9).is_none());
        assert_eq!(q.take_born_by(10).map(|i| i.seq), Some(2));
        assert_eq!(q.oldest_idle_born(), None);
        q.retry(1, 1, 500);
        assert_eq!(q.oldest_idle_born(), Some(0));
        assert_eq!(q.take_born_by(100).map(|i| i.seq), Some(1));
        assert_eq!(q.next_due(), None, "taken out of the ready set");
        q.remove(1);
        q.remove(2);
        q.retry(3, 1, 0);
        assert_eq!(q.oldest_idle_born(), Some(20));
        assert_eq!(drain(&mut q, 0), [3]);
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
        q.retry(1, 1, 5000);
        q.remove(3);
        assert_eq!(drain(&mut q, 0), Vec::<i64>::new());
        assert_eq!(q.next_due(), Some(5000));
        assert_eq!(drain(&mut q, 5000), [1]);
    }

    #[test]
    fn an_interface_create_goes_first_and_its_delete_last() {
        let mut q = Queue::default();
        q.push(kind_item(1, "wg0", None, EventKind::Create, 0, 0));
        q.push(item(2, "wg0", Some(1), 0));
        q.push(item(3, "wg1", Some(1), 0)); // other interface: free
        q.push(item(4, "wg0", Some(2), 0));
        q.push(kind_item(5, "wg0", None, EventKind::Delete, 0, 0));
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

    /// Regression: an `interface.update` a receiver kept refusing (500)
    /// held back every later event of every peer of that interface for up
    /// to `max_event_age`, until the outbox bound dropped events.
    #[test]
    fn an_interface_update_failing_forever_does_not_hold_back_peer_events() {
        let mut q = Queue::default();
        q.push(kind_item(1, "wg0", None, EventKind::Update, 0, 0));
        q.push(item(2, "wg0", Some(1), 0));
        assert_eq!(drain(&mut q, 0), [1, 2], "no wait either way");
        q.retry(1, 1, 3_600_000);
        q.remove(2);
        q.push(kind_item(3, "wg0", Some(1), EventKind::Connect, 10, 10));
        assert_eq!(drain(&mut q, 10), [3], "a later peer event goes at once");
        // A later interface event still waits for the failing one.
        q.push(kind_item(4, "wg0", None, EventKind::Update, 20, 20));
        assert_eq!(drain(&mut q, 20), Vec::<i64>::new());
    }

    #[test]
    fn the_cross_waits_are_bounded_in_time() {
        let mut q = Queue::default();
        // A create the receiver keeps refusing.
        q.push(kind_item(1, "wg0", None, EventKind::Create, 0, 0));
        q.push(kind_item(2, "wg0", Some(1), EventKind::Connect, 5, 5));
        assert_eq!(drain(&mut q, 5), [1]);
        q.retry(1, 1, 10 * WAIT);
        assert_eq!(drain(&mut q, WAIT - 1), Vec::<i64>::new());
        assert_eq!(q.next_due(), Some(WAIT), "released when the create is old");
        assert_eq!(drain(&mut q, WAIT), [2]);
        q.remove(2);

        // A peer event the receiver keeps refusing holds back the delete.
        q.push(kind_item(3, "wg1", Some(2), EventKind::Delete, 1000, 1000));
        q.push(kind_item(4, "wg1", None, EventKind::Delete, 1001, 1001));
        assert_eq!(drain(&mut q, 1001), [3]);
        q.retry(3, 1, 100 * WAIT);
        assert_eq!(drain(&mut q, 1000 + WAIT - 1), Vec::<i64>::new());
        assert_eq!(drain(&mut q, 1000 + WAIT), [4]);
    }

    #[test]
    fn an_older_item_pushed_later_takes_its_place_in_the_lane() {
        let mut q = Queue::default();
        q.push(item(5, "wg0", Some(1), 0));
        q.push(item(2, "wg0", Some(1), 0)); // re-queued by `wghook outbox retry`
        assert_eq!(drain(&mut q, 0), [2]);
        q.remove(2);
        assert_eq!(drain(&mut q, 0), [5]);
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
    use super::tests_support::kind_item;
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// A new event: interface 0 or 1, peer 0..3 or the interface itself.
        Push {
            iface: u8,
            peer: Option<u8>,
            kind: u8,
        },
        /// Take everything due now.
        Take,
        /// The n-th in-flight item is delivered (removed).
        Finish(usize),
        /// The n-th in-flight item failed: due again later.
        Retry(usize),
        /// Time passes (ms).
        Wait(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..2, proptest::option::of(0u8..3), 0u8..3)
                .prop_map(|(iface, peer, kind)| Op::Push { iface, peer, kind }),
            Just(Op::Take),
            (0usize..8).prop_map(Op::Finish),
            (0usize..8).prop_map(Op::Retry),
            (0i64..200_000).prop_map(Op::Wait),
        ]
    }

    type Pending = std::collections::BTreeMap<i64, (u8, Option<u8>, EventKind, i64)>;

    /// Whether handing out `seq` at `now` keeps the order rules: nothing
    /// earlier of its own lane pending; for a peer event no earlier pending
    /// `create` of its interface younger than the bound; for a `delete` no
    /// earlier pending peer event of its interface younger than the bound.
    fn allowed(pending: &Pending, seq: i64, now: i64) -> bool {
        let wait = CROSS_WAIT.as_millis() as i64;
        let (iface, peer, kind, _) = pending[&seq];
        pending.range(..seq).all(|(_, &(i, p, k, born))| {
            if i != iface {
                return true;
            }
            let young = now < born + wait;
            match (peer, p) {
                (Some(a), Some(b)) => a != b,
                (None, None) => false,
                (Some(_), None) => !(k == EventKind::Create && young),
                (None, Some(_)) => !(kind == EventKind::Delete && young),
            }
        })
    }

    proptest! {
        /// Whatever happens, an item is only handed out when the order
        /// rules allow it, and in the end everything is handed out.
        #[test]
        fn order_rules_hold_and_nothing_is_stuck(ops in proptest::collection::vec(op(), 1..60)) {
            let mut q = Queue::default();
            let mut pending = Pending::new();
            let mut in_flight: Vec<i64> = Vec::new();
            let mut next_seq = 1;
            let mut now = 0;
            for op in ops {
                match op {
                    Op::Push { iface, peer, kind } => {
                        let kind = [EventKind::Create, EventKind::Update, EventKind::Delete][kind as usize];
                        q.push(kind_item(next_seq, &format!("wg{iface}"), peer.map(|p| p + 1), kind, now, now));
                        pending.insert(next_seq, (iface, peer, kind, now));
                        next_seq += 1;
                    }
                    Op::Take => {
                        while let Some(it) = q.take_due(now) {
                            prop_assert!(allowed(&pending, it.seq, now), "{} handed out too early", it.seq);
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
                        q.retry(seq, 1, now + 50);
                    }
                    Op::Wait(ms) => now += ms,
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
                while let Some(it) = q.take_due(now) {
                    prop_assert!(allowed(&pending, it.seq, now));
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
}
