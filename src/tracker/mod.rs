//! The tracker: a pure function from (previous state, snapshot, now, settings)
//! to (new state, events), implementing the rules of `docs/tracking.md`.
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

mod rules;
mod state;
#[cfg(test)]
mod tests;

pub use rules::{is_connected, track, track_changes, track_changes_with_pings};
pub use state::{
    Announce, Changes, InterfaceState, KeyHash, KeyHasher, PeerMap, PeerState, Settings, State,
    Tracked, STATE_VERSION,
};
