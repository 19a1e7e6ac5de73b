//! Wall-clock steps between polls, and the handshakes they would misdate.
//!
//! WireGuard stamps a peer's latest handshake with the wall clock of the
//! moment it happened, and that stamp does not move when the clock is
//! stepped (an NTP correction, a VM resumed, an operator's `date -s`).
//! Left alone, a step forward by D makes every handshake look D older (a
//! disconnect storm if D exceeds the threshold) and a step back makes them
//! look in the future. So the daemon compares, between two polls, the
//! monotonic time elapsed with the wall time elapsed; a difference over
//! [`STEP_THRESHOLD`] is a step, logged once at WARN. Handshakes unchanged
//! since the poll before the step were stamped on the old clock: they are
//! shifted by the step onto the present clock, until the peer handshakes
//! again (then its stamp is on the present clock). Handshakes that changed
//! meanwhile (boringtun reports ages, so its stamps always follow `now`)
//! are left as they are.
//!
//! Plain data: the caller measures the clocks and passes the step in.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};

use crate::model::{PublicKey, Snapshot};
use crate::tracker::State;

/// A gap between monotonic and wall time elapsed larger than this, between
/// two polls, is a clock step (NTP slews at most 0.5 ms a second).
pub const STEP_THRESHOLD: TimeDelta = TimeDelta::seconds(2);

/// The step between two polls, if the wall clock moved by more than
/// [`STEP_THRESHOLD`] apart from the monotonic time elapsed.
pub fn step_between(
    wall_elapsed: TimeDelta,
    mono_elapsed: std::time::Duration,
) -> Option<TimeDelta> {
    let mono = TimeDelta::from_std(mono_elapsed).unwrap_or(TimeDelta::MAX);
    let step = wall_elapsed.checked_sub(&mono)?;
    (step.abs() > STEP_THRESHOLD).then_some(step)
}

/// Handshakes stamped before a clock step, and how far to shift them.
#[derive(Debug, Default)]
pub struct ClockSteps {
    /// (interface, peer) -> (the handshake as reported, the shift to add).
    shifts: HashMap<(String, PublicKey), (DateTime<Utc>, TimeDelta)>,
}

impl ClockSteps {
    /// Records a step of `step` seen before this poll: every peer of
    /// `snapshot` whose handshake is the one `state` (the previous poll's,
    /// already corrected) holds was stamped on the old clock. Their
    /// remembered handshake and session start move by the step too, so the
    /// tracker sees the same handshake, now on the present clock.
    pub fn stepped(&mut self, step: TimeDelta, snapshot: &Snapshot, state: Option<&mut State>) {
        let Some(state) = state else {
            return;
        };
        let moved = |t: Option<DateTime<Utc>>| t.map(|t| t.checked_add_signed(step).unwrap_or(t));
        for iface in &snapshot.interfaces {
            let Some(known) = state.interfaces.get_mut(&iface.name) else {
                continue;
            };
            for peer in &iface.peers {
                let Some(raw) = peer.last_handshake else {
                    continue;
                };
                let key = (iface.name.clone(), peer.public_key);
                let shift = match self.shifts.get(&key) {
                    Some((r, d)) if *r == raw => *d,
                    _ => TimeDelta::zero(),
                };
                let stored = known
                    .peers
                    .get(&peer.public_key)
                    .and_then(|p| p.peer.last_handshake);
                if raw.checked_add_signed(shift) == stored && stored.is_some() {
                    let total = shift.checked_add(&step).unwrap_or(shift);
                    self.shifts.insert(key, (raw, total));
                    if let Some(p) = known.peers.get_mut(&peer.public_key) {
                        p.peer.last_handshake = moved(p.peer.last_handshake);
                        p.session_start = moved(p.session_start);
                    }
                }
            }
        }
    }

    /// Shifts the handshakes of `snapshot` stamped before a step onto the
    /// present clock; forgets a peer once it reports another handshake (or
    /// is gone). Costs nothing when no step was seen.
    pub fn apply(&mut self, snapshot: &mut Snapshot) {
        if self.shifts.is_empty() {
            return;
        }
        let mut seen = 0;
        for iface in &mut snapshot.interfaces {
            for peer in &mut iface.peers {
                let key = (iface.name.clone(), peer.public_key);
                let Some(&(raw, shift)) = self.shifts.get(&key) else {
                    continue;
                };
                if peer.last_handshake == Some(raw) {
                    peer.last_handshake = raw.checked_add_signed(shift).or(Some(raw));
                    seen += 1;
                } else {
                    self.shifts.remove(&key);
                }
            }
        }
        if seen < self.shifts.len() {
            // Some peers (or their interfaces) are gone, or unreadable this
            // poll: keep the unreadable ones, drop the rest.
            let peers: std::collections::HashSet<(&str, PublicKey)> = snapshot
                .interfaces
                .iter()
                .flat_map(|i| i.peers.iter().map(move |p| (i.name.as_str(), p.public_key)))
                .collect();
            self.shifts.retain(|(iface, key), _| {
                snapshot.unreadable.iter().any(|u| u == iface)
                    || peers.contains(&(iface.as_str(), *key))
            });
        }
    }

    /// Number of peers whose handshake is being shifted.
    pub fn len(&self) -> usize {
        self.shifts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shifts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventKind};
    use crate::model::{Interface, Peer};
    use std::time::Duration;

    #[test]
    fn only_a_gap_over_two_seconds_is_a_step() {
        let s = |wall: i64, mono: u64| {
            step_between(TimeDelta::milliseconds(wall), Duration::from_millis(mono))
        };
        assert_eq!(s(5_000, 5_000), None);
        assert_eq!(s(6_900, 5_000), None, "slew and scheduling noise");
        assert_eq!(s(3_605_000, 5_000), Some(TimeDelta::seconds(3600)));
        assert_eq!(s(-3_595_000, 5_000), Some(TimeDelta::seconds(-3600)));
    }

    fn snap(hs: i64) -> Snapshot {
        Snapshot {
            interfaces: vec![Interface {
                name: "wgstep".into(),
                peers: vec![Peer {
                    public_key: PublicKey([4; 32]),
                    last_handshake: DateTime::from_timestamp(hs, 0),
                    ..Peer::default()
                }],
                ..Interface::default()
            }],
            unreadable: Vec::new(),
        }
    }

    #[test]
    fn a_shift_lasts_until_the_peer_handshakes_again_or_goes() {
        let settings = crate::tracker::Settings {
            connect_threshold: TimeDelta::seconds(180),
            endpoint_updates: true,
            announce_on_start: crate::tracker::Announce::All,
            host: "h".into(),
            filter: Default::default(),
        };
        let at = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let mut state = crate::tracker::track(None, &snap(1_800_000_000), at(1), &settings).0;
        let mut steps = ClockSteps::default();
        let now = snap(1_800_000_000);
        steps.stepped(TimeDelta::hours(1), &now, Some(&mut state));
        assert_eq!(steps.len(), 1);
        let mut shifted = now.clone();
        steps.apply(&mut shifted);
        assert_eq!(
            shifted.interfaces[0].peers[0].last_handshake,
            Some(at(3600)),
            "the old stamp on the present clock"
        );
        // A new handshake is on the present clock: no shift, forgotten.
        let mut again = snap(1_800_000_000 + 3700);
        steps.apply(&mut again);
        assert_eq!(again.interfaces[0].peers[0].last_handshake, Some(at(3700)));
        assert!(steps.is_empty());
        // A peer that goes is forgotten too.
        steps.stepped(TimeDelta::hours(1), &now, Some(&mut state));
        let mut gone = Snapshot::default();
        steps.apply(&mut gone);
        assert!(steps.is_empty());
    }

    /// The daemon's sequence (detect, `stepped`, `apply`, track) over
    /// 400 s of polls every 5 s, the wall clock stepped by `d` between the
    /// polls at 55 s and 60 s. Peer 1 handshook once at 0 s and goes
    /// silent; peer 2 handshakes every 100 s. Returns the step count and
    /// every event after the first poll with the poll's offset.
    fn run_with_step(d: i64, correct: bool) -> (usize, Vec<(i64, Event)>) {
        let settings = crate::tracker::Settings {
            connect_threshold: TimeDelta::seconds(180),
            endpoint_updates: true,
            announce_on_start: crate::tracker::Announce::Connected,
            host: "h".into(),
            filter: Default::default(),
        };
        let base = 1_800_000_000;
        let wall_at = |t: i64| {
            let off = if t >= 60 { d } else { 0 };
            DateTime::from_timestamp(base + t + off, 0).unwrap()
        };
        let peer = |k: u8, hs: DateTime<Utc>| Peer {
            public_key: PublicKey([k; 32]),
            last_handshake: Some(hs),
            ..Peer::default()
        };
        let mut state = None;
        let mut steps = ClockSteps::default();
        let mut last: Option<(Duration, DateTime<Utc>)> = None;
        let (mut stepped, mut out) = (0, Vec::new());
        for t in (0..=400).step_by(5) {
            let (mono, wall) = (Duration::from_secs(t as u64), wall_at(t));
            let mut snapshot = Snapshot {
                interfaces: vec![Interface {
                    name: "wgstorm".into(),
                    peers: vec![peer(1, wall_at(0)), peer(2, wall_at(t / 100 * 100))],
                    ..Interface::default()
                }],
                unreadable: Vec::new(),
            };
            if let Some((m, w)) = last {
                if let Some(step) = step_between(wall - w, mono - m) {
                    stepped += 1;
                    if correct {
                        steps.stepped(step, &snapshot, state.as_mut());
                    }
                }
            }
            last = Some((mono, wall));
            steps.apply(&mut snapshot);
            let (next, events) = crate::tracker::track(state, &snapshot, wall, &settings);
            state = Some(next);
            if t > 0 {
                out.extend(events.into_iter().map(|e| (t, e)));
            }
        }
        (stepped, out)
    }

    #[test]
    fn a_step_forward_or_back_causes_no_storm_and_a_real_disconnect_comes_on_time() {
        for d in [3600, -3600] {
            let (stepped, events) = run_with_step(d, true);
            assert_eq!(stepped, 1, "step {d} s detected once");
            let seen: Vec<_> = events
                .iter()
                .map(|(t, e)| (*t, e.kind, e.peer.as_ref().map(|p| p.peer.public_key.0[0])))
                .collect();
            // Peer 1's handshake (0 s) ages out at 180 s: the poll at 185 s
            // reports it, ended at 180 s on the present clock.
            assert_eq!(seen, [(185, EventKind::Disconnect, Some(1))], "step {d} s");
            assert_eq!(
                events[0].1.time,
                DateTime::from_timestamp(1_800_000_000 + 180 + d, 0).unwrap(),
                "step {d} s"
            );
        }
    }

    #[test]
    fn without_the_shift_a_step_would_misdate_handshakes() {
        // Pins what the test above guards against: forward, both peers
        // disconnect at the step; back, peer 1's disconnect comes late.
        let (_, forward) = run_with_step(3600, false);
        assert!(forward
            .iter()
            .any(|(t, e)| *t == 60 && e.kind == EventKind::Disconnect));
        let (_, back) = run_with_step(-3600, false);
        assert!(!back.iter().any(|(t, _)| *t == 185));
    }
}
