//! A webhook's health: whether its receiver looks down, from the outcomes
//! of the requests made to it. Plain data: the caller passes `now` (ms on
//! the engine's monotonic clock) and the jitter's random number.
//!
//! - **Up** (the start): requests go as the [`Queue`](super::scheduler::Queue)
//!   lets them, up to `max_in_flight`, each failed event retried on its own
//!   schedule.
//! - **Down**: [`DOWN_AFTER`] different events failed (an outcome the retry
//!   policy retries: no answer, a timeout, 5xx, 429) with no answer from the
//!   receiver in between. Then only one request, the probe, is in flight at
//!   a time, on the webhook's retry schedule (the n-th failed probe waits
//!   the (n+1)-th delay, at most [`MAX_PROBE_WAIT`], with jitter;
//!   `Retry-After` honoured), instead of each event on its own timer.
//! - Back **up** at the first answer (2xx, or a status the policy gives the
//!   event up on: the receiver is there and decided about it). The events
//!   that failed since the last answer are released: due at once, not at
//!   the end of their own backoff step.
//!
//! One event the receiver keeps refusing with 500 never takes the webhook
//! down by itself (its failures are one event's), and any other event
//! answered in between resets the count.

use std::collections::BTreeSet;
use std::time::Duration;

use super::retry::Schedule;

/// How many different events must fail in a row (no answer in between)
/// for the receiver to count as down.
pub const DOWN_AFTER: usize = 2;

/// The longest wait between probes, before jitter, unless the receiver's
/// `Retry-After` asks for longer: a receiver that comes back is found
/// within a few seconds, whatever step the schedule has reached (one
/// request every few seconds is no load, even on a struggling receiver).
pub const MAX_PROBE_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Down {
    /// Failures since the outage began: the one that began it, then each
    /// failed probe.
    failures: u32,
    /// When the next probe may go (ms).
    next_probe: i64,
    /// The probe in flight, if any.
    probe: Option<i64>,
}

/// One webhook's health.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Health {
    /// Events that failed since the receiver last answered.
    failed: BTreeSet<i64>,
    down: Option<Down>,
}

/// What an outcome did to the webhook's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    None,
    /// The receiver now counts as down; probes start at `next_probe` (ms).
    WentDown {
        next_probe: i64,
    },
    /// The receiver answered after an outage: these events (failed during
    /// it, still to retry) are due at once.
    CameBack {
        release: Vec<i64>,
    },
}

impl Health {
    pub fn is_down(&self) -> bool {
        self.down.is_some()
    }

    /// How many requests may be in flight: `max_in_flight`, or one while down.
    pub fn limit(&self, max_in_flight: usize) -> usize {
        if self.is_down() {
            1
        } else {
            max_in_flight
        }
    }

    /// Whether a request may start at `now`: always while up; while down,
    /// only the probe, once it is due and none is in flight.
    pub fn may_send(&self, now: i64) -> bool {
        match &self.down {
            None => true,
            Some(d) => d.probe.is_none() && now >= d.next_probe,
        }
    }

    /// When the next probe may go (ms), while down.
    pub fn next_probe(&self) -> Option<i64> {
        self.down.as_ref().map(|d| d.next_probe)
    }

    /// A request for `seq` starts (the probe, while down).
    pub fn sending(&mut self, seq: i64) {
        if let Some(d) = &mut self.down {
            d.probe = Some(seq);
        }
    }

    /// The receiver answered the request for `seq` (2xx, or a status the
    /// policy gives the event up on).
    pub fn answered(&mut self, seq: i64) -> Change {
        let failed = std::mem::take(&mut self.failed);
        match self.down.take() {
            None => Change::None,
            Some(_) => Change::CameBack {
                release: failed.into_iter().filter(|&s| s != seq).collect(),
            },
        }
    }

    /// The request for `seq` failed in a way the policy retries, at `now`;
    /// `unit` in [0, 1) drives the jitter of the next probe's delay.
    pub fn failed(
        &mut self,
        seq: i64,
        now: i64,
        retry_after: Option<Duration>,
        schedule: &Schedule,
        unit: f64,
    ) -> Change {
        self.failed.insert(seq);
        let wait = |failures: u32| ms(schedule.delay(failures, MAX_PROBE_WAIT, retry_after, unit));
        match &mut self.down {
            None if self.failed.len() >= DOWN_AFTER => {
                let next_probe = now.saturating_add(wait(1));
                self.down = Some(Down {
                    failures: 1,
                    next_probe,
                    probe: None,
                });
                Change::WentDown { next_probe }
            }
            None => Change::None,
            Some(d) if d.probe == Some(seq) => {
                d.probe = None;
                d.failures = d.failures.saturating_add(1);
                d.next_probe = now.saturating_add(wait(d.failures));
                Change::None
            }
            Some(d) => {
                // A request that was in flight when the outage began: its
                // `Retry-After` still counts, its failure is no probe's.
                if let Some(asked) = retry_after {
                    let asked = ms(asked.min(schedule.max_delay()));
                    d.next_probe = d.next_probe.max(now.saturating_add(asked));
                }
                Change::None
            }
        }
    }

    /// The request for `seq` is over, whatever its outcome (given up without
    /// an answer, dropped while in flight): it is no longer the probe.
    pub fn done(&mut self, seq: i64) {
        if let Some(d) = &mut self.down {
            if d.probe == Some(seq) {
                d.probe = None;
            }
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        Schedule {
            delays: vec![
                Duration::ZERO,
                Duration::from_millis(500),
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(120),
            ],
            max_event_age: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }

    const MID: f64 = 0.5; // no jitter

    fn fail(h: &mut Health, seq: i64, now: i64) -> Change {
        h.failed(seq, now, None, &schedule(), MID)
    }

    #[test]
    fn up_until_two_different_events_fail_in_a_row() {
        let mut h = Health::default();
        assert!(!h.is_down() && h.may_send(0));
        assert_eq!(h.limit(16), 16);
        assert_eq!(fail(&mut h, 1, 0), Change::None);
        assert_eq!(fail(&mut h, 1, 5_000), Change::None, "the same event again");
        assert!(!h.is_down());
        assert_eq!(
            fail(&mut h, 2, 6_000),
            Change::WentDown { next_probe: 6_500 }
        );
        assert!(h.is_down());
        assert_eq!(h.limit(16), 1);
    }

    #[test]
    fn an_answer_in_between_resets_the_count() {
        let mut h = Health::default();
        fail(&mut h, 1, 0);
        assert_eq!(h.answered(3), Change::None);
        assert_eq!(fail(&mut h, 2, 10), Change::None);
        assert!(!h.is_down());
        h.answered(4);
        // A poisonous event refused again and again, others delivered
        // between its attempts: never down.
        for round in 0..100 {
            assert_eq!(fail(&mut h, 1, round * 1000), Change::None);
            assert_eq!(h.answered(1000 + round), Change::None);
        }
        assert!(!h.is_down());
    }

    #[test]
    fn while_down_one_probe_at_a_time_on_the_schedule() {
        let mut h = Health::default();
        fail(&mut h, 1, 0);
        fail(&mut h, 2, 0);
        assert!(!h.may_send(499));
        assert!(h.may_send(500));
        h.sending(3);
        assert!(!h.may_send(501), "one probe in flight at a time");
        assert_eq!(fail(&mut h, 3, 600), Change::None);
        assert_eq!(h.next_probe(), Some(1_600), "the next step: 1 s");
        h.sending(4);
        fail(&mut h, 4, 1_600);
        assert_eq!(h.next_probe(), Some(3_600), "then 2 s");
        h.sending(5);
        fail(&mut h, 5, 3_600);
        assert_eq!(h.next_probe(), Some(6_600), "2 min, but at most 3 s");
        h.sending(6);
        fail(&mut h, 6, 6_600);
        assert_eq!(h.next_probe(), Some(9_600), "the last step repeats");
    }

    #[test]
    fn the_probe_delay_has_jitter() {
        let mut h = Health::default();
        h.failed(1, 0, None, &schedule(), 0.0);
        assert_eq!(
            h.failed(2, 0, None, &schedule(), 0.0),
            Change::WentDown { next_probe: 400 }
        );
        let mut h = Health::default();
        h.failed(1, 0, None, &schedule(), 1.0);
        assert_eq!(
            h.failed(2, 0, None, &schedule(), 1.0),
            Change::WentDown { next_probe: 600 }
        );
    }

    #[test]
    fn retry_after_lengthens_the_wait_up_to_the_largest_step() {
        let mut h = Health::default();
        let minute = Some(Duration::from_secs(60));
        h.failed(1, 0, minute, &schedule(), MID);
        assert_eq!(
            h.failed(2, 0, minute, &schedule(), MID),
            Change::WentDown { next_probe: 60_000 }
        );
        h.sending(3);
        let day = Some(Duration::from_secs(86_400));
        h.failed(3, 60_000, day, &schedule(), MID);
        assert_eq!(h.next_probe(), Some(180_000), "capped at the largest step");
        // A request in flight since before the outage: not a probe, but
        // its Retry-After holds the next probe back.
        h.failed(9, 100_000, Some(Duration::from_secs(100)), &schedule(), MID);
        assert_eq!(h.next_probe(), Some(200_000));
        h.failed(10, 100_000, Some(Duration::from_secs(1)), &schedule(), MID);
        assert_eq!(h.next_probe(), Some(200_000), "never shortened");
    }

    #[test]
    fn the_first_answer_ends_the_outage_and_releases_the_failed_events() {
        let mut h = Health::default();
        fail(&mut h, 1, 0);
        fail(&mut h, 2, 0);
        fail(&mut h, 3, 0);
        h.sending(4);
        fail(&mut h, 4, 5_000);
        h.sending(5);
        assert_eq!(
            h.answered(5),
            Change::CameBack {
                release: vec![1, 2, 3, 4]
            }
        );
        assert!(!h.is_down());
        assert!(h.may_send(0));
        assert_eq!(h.answered(6), Change::None, "released once");
    }

    #[test]
    fn a_probe_that_ends_without_an_answer_lets_the_next_one_go() {
        let mut h = Health::default();
        fail(&mut h, 1, 0);
        fail(&mut h, 2, 0);
        h.sending(3);
        assert!(!h.may_send(6_000));
        h.done(3); // e.g. purged while in flight
        assert!(h.may_send(6_000));
        assert!(h.is_down());
        h.done(99); // not the probe: nothing changes
        assert!(h.may_send(6_000));
    }
}
