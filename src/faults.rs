//! Logging of faults that persist: an interface that stays unreadable, a
//! backend whose polls keep failing. The first failure is logged at WARN,
//! then a reminder at most every [`REMIND_EVERY`] (with how many failures
//! were not logged meanwhile), and an INFO once it works again; so an
//! interface down for five minutes writes two or three lines, not 300.
//!
//! [`Reminders`] is plain data (time is an argument); the process keeps one
//! set for interfaces and backends ([`interface_unreadable`],
//! [`interfaces_read`], [`poll_failed`], [`poll_succeeded`]).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The least time between two log lines about the same persisting fault.
pub const REMIND_EVERY: Duration = Duration::from_secs(300);

/// What to log for one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// The first failure: log it.
    First,
    /// A reminder: log it, with the failures not logged since the last line.
    Reminder { unlogged: u64 },
    /// Logged recently: stay quiet (DEBUG at most).
    Quiet,
}

/// Faults currently failing, by key, and when each was last logged.
#[derive(Debug, Default)]
pub struct Reminders {
    failing: HashMap<String, (Instant, u64)>,
}

impl Reminders {
    /// Records a failure of `key` at `now`.
    pub fn failed(&mut self, key: &str, now: Instant) -> Log {
        match self.failing.get_mut(key) {
            None => {
                self.failing.insert(key.to_owned(), (now, 0));
                Log::First
            }
            Some((last, unlogged)) if now.saturating_duration_since(*last) >= REMIND_EVERY => {
                let log = Log::Reminder {
                    unlogged: *unlogged,
                };
                *last = now;
                *unlogged = 0;
                log
            }
            Some((_, unlogged)) => {
                *unlogged += 1;
                Log::Quiet
            }
        }
    }

    /// Records a success of `key`: true if it was failing (log the recovery).
    pub fn succeeded(&mut self, key: &str) -> bool {
        !self.failing.is_empty() && self.failing.remove(key).is_some()
    }
}

fn interfaces() -> &'static Mutex<Reminders> {
    static SET: OnceLock<Mutex<Reminders>> = OnceLock::new();
    SET.get_or_init(Default::default)
}

fn lock(set: &Mutex<Reminders>) -> std::sync::MutexGuard<'_, Reminders> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

/// Logs (rate-limited) that interface `name` could not be read this poll.
pub fn interface_unreadable(name: &str, error: &dyn std::fmt::Display) {
    match lock(interfaces()).failed(name, Instant::now()) {
        Log::First => tracing::warn!(
            interface = %name, error = %error,
            "could not read interface; it keeps its last known state (reminders every {} min while it lasts)",
            REMIND_EVERY.as_secs() / 60
        ),
        Log::Reminder { unlogged } => tracing::warn!(
            interface = %name, error = %error, failed_polls_unlogged = unlogged,
            "interface still cannot be read"
        ),
        Log::Quiet => {
            tracing::debug!(interface = %name, error = %error, "could not read interface")
        }
    }
}

/// Logs at INFO each of `names` (read this poll) that was unreadable before.
pub fn interfaces_read<'a>(names: impl IntoIterator<Item = &'a str>) {
    let mut set = lock(interfaces());
    for name in names {
        if set.succeeded(name) {
            tracing::info!(interface = %name, "interface readable again");
        }
    }
}

/// The key of whole-poll failures in the interfaces' set (no interface
/// name can contain a space).
const POLL: &str = "whole poll";

/// Logs (rate-limited) that a whole poll of `backend` failed.
pub fn poll_failed(backend: &str, error: &dyn std::fmt::Display) {
    match lock(interfaces()).failed(POLL, Instant::now()) {
        Log::First => tracing::warn!(
            backend, error = %error,
            "poll failed; skipping it (reminders every {} min while it lasts)",
            REMIND_EVERY.as_secs() / 60
        ),
        Log::Reminder { unlogged } => tracing::warn!(
            backend, error = %error, failed_polls_unlogged = unlogged, "polls still failing"
        ),
        Log::Quiet => tracing::debug!(backend, error = %error, "poll failed; skipping it"),
    }
}

/// Logs at INFO that polls work again, if they were failing.
pub fn poll_succeeded(backend: &str) {
    if lock(interfaces()).succeeded(POLL) {
        tracing::info!(backend, "polls work again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: an interface that stayed unreadable logged the same WARN
    /// every poll (300 lines in five minutes at a 1 s interval).
    #[test]
    fn a_persisting_fault_is_logged_first_then_every_five_minutes() {
        let mut r = Reminders::default();
        let t0 = Instant::now();
        let logged: Vec<(u64, Log)> = (0..=600)
            .map(|s| (s, r.failed("wg0", t0 + Duration::from_secs(s))))
            .filter(|(_, l)| *l != Log::Quiet)
            .collect();
        assert_eq!(
            logged,
            [
                (0, Log::First),
                (300, Log::Reminder { unlogged: 299 }),
                (600, Log::Reminder { unlogged: 299 }),
            ]
        );
        assert!(r.succeeded("wg0"), "the recovery is logged");
        assert!(!r.succeeded("wg0"), "once");
        assert_eq!(r.failed("wg0", t0), Log::First, "a new fault is new");
        assert_eq!(r.failed("wg1", t0), Log::First, "keys apart");
    }

    /// The log lines themselves, through a real subscriber: 300 failing
    /// polls in a row write one WARN; recovery writes one INFO.
    #[test]
    fn three_hundred_unreadable_polls_write_one_warn_then_one_info() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..300 {
                interface_unreadable("wgfaultlog", &"no reply");
                interfaces_read(["wgother"]);
            }
            interfaces_read(["wgfaultlog"]);
            interfaces_read(["wgfaultlog"]);
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("wgfaultlog")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("WARN") && lines[0].contains("no reply"),
            "{text}"
        );
        assert!(
            lines[1].contains("INFO") && lines[1].contains("readable again"),
            "{text}"
        );
    }
}
