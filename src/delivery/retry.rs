//! The retry policy: pure functions from an attempt's outcome and the clock
//! to a decision. Nothing here reads the clock or does I/O.
//!
//! - 2xx: delivered.
//! - connection error, timeout, 408, 425, 429, 500, 502, 503, 504: retry.
//! - 410 Gone: disable the webhook until the configuration is reloaded.
//! - any other status: give up on this event for this webhook (dead letter).
//!
//! Retries follow a schedule (0, 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h,
//! 4 h, then every 4 h), each delay with +/-20 % jitter, until the event is
//! older than `max_event_age`. The first entry is the delay of the first
//! attempt, which is made when the event is committed: only entries from
//! the second on are ever waited (after the n-th failed attempt, entry n).
//!
//! A `Retry-After` on 429/503 can only lengthen the wait (RFC 9110: the
//! least time to wait): the next attempt comes after the longer of the
//! scheduled delay and `Retry-After`, the latter capped at the schedule's
//! largest step. So `Retry-After: 0` or a date in the past never makes a
//! receiver retried in a tight loop.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Delivered,
    /// Try again; `retry_after` is the receiver's own request, if it sent
    /// one (it lengthens the scheduled delay, never shortens it).
    Retry {
        retry_after: Option<Duration>,
    },
    /// Keep the event as given up (dead letter); later events flow.
    GiveUp,
    /// 410 Gone: stop sending to this webhook until the configuration is reloaded.
    Disable,
}

/// Classifies an HTTP status (`None` = no answer: connection error or timeout).
pub fn classify(status: Option<u16>, retry_after: Option<Duration>) -> Decision {
    match status {
        None => Decision::Retry { retry_after: None },
        Some(code) if (200..300).contains(&code) => Decision::Delivered,
        Some(410) => Decision::Disable,
        Some(429 | 503) => Decision::Retry { retry_after },
        Some(408 | 425 | 500 | 502 | 504) => Decision::Retry { retry_after: None },
        Some(_) => Decision::GiveUp,
    }
}

/// Parses a `Retry-After` value: delta seconds or an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}

/// The retry schedule of one webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Delay before attempt n+1, the last entry repeating. Index 0 (the
    /// first attempt) is never waited: the first attempt is made at commit.
    pub delays: Vec<Duration>,
    /// Events older than this are given up instead of retried.
    pub max_event_age: Duration,
    /// Relative jitter applied to each delay (0.2 = +/-20 %).
    pub jitter: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        Self {
            delays: vec![
                Duration::ZERO,
                Duration::from_secs(5),
                Duration::from_secs(30),
                m(2),
                m(10),
                m(30),
                m(60),
                m(120),
                m(240),
            ],
            max_event_age: Duration::from_secs(72 * 3600),
            jitter: 0.2,
        }
    }
}

impl Schedule {
    /// The largest step: no delay, `Retry-After` included, exceeds it.
    pub fn max_delay(&self) -> Duration {
        self.delays.iter().copied().max().unwrap_or(Duration::ZERO)
    }

    /// The delay after `attempts` attempts were made, before jitter.
    pub fn base_delay(&self, attempts: u32) -> Duration {
        let i = (attempts as usize).min(self.delays.len().saturating_sub(1));
        self.delays.get(i).copied().unwrap_or(Duration::ZERO)
    }

    /// The wait after `attempts` failed attempts: the scheduled delay (at
    /// most `at_most`) with jitter (`unit` in [0, 1) drives it), lengthened
    /// by `retry_after` (capped at [`Schedule::max_delay`]) when that is longer.
    pub fn delay(
        &self,
        attempts: u32,
        at_most: Duration,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Duration {
        let base = self.base_delay(attempts).min(at_most).as_secs_f64();
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let scheduled = Duration::from_secs_f64((base * factor).max(0.0));
        match retry_after {
            Some(asked) => scheduled.max(asked.min(self.max_delay())),
            None => scheduled,
        }
    }

    /// When to try next after `attempts` failed attempts, or `None` to give up
    /// because the event would be older than `max_event_age` by then.
    /// `unit` in [0, 1) drives the jitter (the caller passes a random number).
    /// `retry_after` (capped at [`Schedule::max_delay`]) replaces the delay
    /// only when it is longer than the scheduled one.
    pub fn next_attempt(
        &self,
        now: DateTime<Utc>,
        event_time: DateTime<Utc>,
        attempts: u32,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Option<DateTime<Utc>> {
        let delay = self.delay(attempts, Duration::MAX, retry_after, unit);
        let at = now + TimeDelta::from_std(delay).ok()?;
        let deadline = event_time + TimeDelta::from_std(self.max_event_age).ok()?;
        (at <= deadline).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn statuses_map_to_the_documented_decisions() {
        assert_eq!(classify(Some(200), None), Decision::Delivered);
        assert_eq!(classify(Some(201), None), Decision::Delivered);
        assert_eq!(classify(Some(204), None), Decision::Delivered);
        for code in [408, 425, 429, 500, 502, 503, 504] {
            assert!(
                matches!(classify(Some(code), None), Decision::Retry { .. }),
                "{code}"
            );
        }
        assert_eq!(classify(None, None), Decision::Retry { retry_after: None });
        assert_eq!(classify(Some(410), None), Decision::Disable);
        for code in [301, 302, 400, 401, 403, 404, 422, 501, 505] {
            assert_eq!(classify(Some(code), None), Decision::GiveUp, "{code}");
        }
    }

    #[test]
    fn retry_after_is_kept_only_for_429_and_503() {
        let two = Some(Duration::from_secs(2));
        assert_eq!(
            classify(Some(503), two),
            Decision::Retry { retry_after: two }
        );
        assert_eq!(
            classify(Some(429), two),
            Decision::Retry { retry_after: two }
        );
        assert_eq!(
            classify(Some(500), two),
            Decision::Retry { retry_after: None }
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("2", t(0)), Some(Duration::from_secs(2)));
        let date = "Tue, 14 Nov 2023 22:15:00 GMT"; // t(0) + 100 s
        assert_eq!(
            parse_retry_after(date, t(0)),
            Some(Duration::from_secs(100))
        );
        assert_eq!(parse_retry_after(date, t(200)), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", t(0)), None);
    }

    #[test]
    fn schedule_follows_the_steps_with_jitter_and_repeats_the_last() {
        let s = Schedule::default();
        let mid = 0.5; // no jitter
        assert_eq!(s.next_attempt(t(0), t(0), 1, None, mid), Some(t(5)));
        assert_eq!(s.next_attempt(t(0), t(0), 2, None, mid), Some(t(30)));
        assert_eq!(s.next_attempt(t(0), t(0), 8, None, mid), Some(t(4 * 3600)));
        assert_eq!(s.next_attempt(t(0), t(0), 30, None, mid), Some(t(4 * 3600)));
        // +/-20 %
        assert_eq!(s.next_attempt(t(0), t(0), 2, None, 0.0), Some(t(24)));
        assert_eq!(s.next_attempt(t(0), t(0), 2, None, 1.0), Some(t(36)));
    }

    #[test]
    fn retry_after_is_honoured_but_capped_at_the_largest_step() {
        let s = Schedule::default();
        let minute = Some(Duration::from_secs(60));
        // After one attempt the schedule says 5 s: the receiver's minute wins.
        assert_eq!(s.next_attempt(t(0), t(0), 1, minute, 0.9), Some(t(60)));
        let week = Some(Duration::from_secs(7 * 86400));
        assert_eq!(s.next_attempt(t(0), t(0), 1, week, 0.5), Some(t(4 * 3600)));
    }

    /// Regression: `Retry-After: 0` (or an HTTP date in the past, parsed as
    /// zero) made the next attempt immediate, so a receiver answering 503
    /// that way was retried in a tight loop.
    #[test]
    fn a_short_retry_after_never_shortens_the_scheduled_delay() {
        let s = Schedule::default();
        let mid = 0.5;
        let zero = Some(Duration::ZERO);
        assert_eq!(s.next_attempt(t(0), t(0), 1, zero, mid), Some(t(5)));
        assert_eq!(s.next_attempt(t(0), t(0), 2, zero, mid), Some(t(30)));
        // Jitter still applies to the scheduled delay.
        assert_eq!(s.next_attempt(t(0), t(0), 2, zero, 0.0), Some(t(24)));
        let past = parse_retry_after("Tue, 14 Nov 2023 22:15:00 GMT", t(200));
        assert_eq!(s.next_attempt(t(200), t(200), 1, past, mid), Some(t(205)));
        let two = Some(Duration::from_secs(2));
        assert_eq!(s.next_attempt(t(0), t(0), 5, two, mid), Some(t(30 * 60)));
    }

    #[test]
    fn events_older_than_max_age_are_given_up() {
        let s = Schedule::default();
        let created = t(0);
        let now = t(72 * 3600 - 10);
        assert_eq!(s.next_attempt(now, created, 2, None, 0.5), None);
        assert!(s.next_attempt(t(100), created, 2, None, 0.5).is_some());
    }
}
