//! The systemd notification protocol (`sd_notify(3)`), without libsystemd.
//!
//! Under `Type=notify` systemd passes a unix datagram socket in
//! `NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`);
//! the service reports its state by sending newline-separated `KEY=VALUE`
//! assignments to it: `READY=1` once it works, `WATCHDOG=1` at least every
//! `WATCHDOG_USEC` microseconds, `STATUS=...` for `systemctl status`,
//! `RELOADING=1` and `STOPPING=1` around a reload and at shutdown.
//!
//! Invariants:
//! - Nothing here panics or returns an error to the caller: a notification
//!   that cannot be sent is logged (the first failure as a warning, later ones
//!   at debug level, so a vanished socket cannot flood the log) and dropped.
//!   The daemon must keep working without systemd.
//! - One message is one datagram. A `STATUS=` text never contains a newline
//!   (it would start a new assignment), so callers cannot inject `READY=1`.
//! - A send never blocks the caller for longer than [`SEND_TIMEOUT`].

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Longest a notification may wait for room in systemd's socket buffer.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to systemd's notification socket.
///
/// Cheap to share by reference: sending takes `&self`.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// The address as given, for log messages.
    display: String,
    /// Set after the first failed send has been logged as a warning.
    warned: AtomicBool,
}

impl Notifier {
    /// The notifier systemd asked for through `NOTIFY_SOCKET`, or `None` when
    /// the variable is unset or empty (not started by systemd, or not with
    /// `Type=notify`) or unusable (then a warning says why).
    pub fn from_env() -> Option<Notifier> {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        Self::from_socket(&value)
    }

    /// A notifier for a `NOTIFY_SOCKET` value: an absolute path, or `@name`
    /// for a socket in the abstract namespace. `None` (with a warning) for an
    /// empty value, another kind of address (e.g. `vsock:`), or when no
    /// socket can be created.
    pub fn from_socket(value: &OsStr) -> Option<Notifier> {
        let bytes = value.as_bytes();
        let shown = value.to_string_lossy().into_owned();
        let addr = match bytes.first() {
            None => return None,
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
            Some(b'/') => SocketAddr::from_pathname(value),
            Some(_) => {
                tracing::warn!(
                    notify_socket = %shown,
                    "NOTIFY_SOCKET is neither a path nor an abstract socket; systemd notifications are off"
                );
                return None;
            }
        };
        let socket = UnixDatagram::unbound().and_then(|socket| {
            socket.set_write_timeout(Some(SEND_TIMEOUT))?;
            Ok(socket)
        });
        match (addr, socket) {
            (Ok(addr), Ok(socket)) => Some(Notifier {
                socket,
                addr,
                display: shown,
                warned: AtomicBool::new(false),
            }),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(
                    notify_socket = %shown,
                    error = %e,
                    "cannot use NOTIFY_SOCKET; systemd notifications are off"
                );
                None
            }
        }
    }

    /// `READY=1`: startup is finished (after the first successful poll), or
    /// a reload announced with [`Notifier::reloading`] is done.
    pub fn ready(&self) {
        self.notify("READY=1");
    }

    /// `WATCHDOG=1`: the main loop is alive. Send it at the period
    /// [`watchdog_interval`] returns.
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }

    /// `STATUS=...`: one line shown by `systemctl status`, e.g.
    /// `watching 2 interfaces, 143 peers, 0 pending`. Newlines become spaces.
    pub fn status(&self, text: &str) {
        self.notify(&status_message(text));
    }

    /// `STOPPING=1`: shutdown has begun (sent before flushing deliveries).
    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` (the `CLOCK_MONOTONIC` time of the
    /// reload, which systemd uses to match it with the reload request): a
    /// configuration reload has begun. Send [`Notifier::ready`] when it is
    /// over, whether the new configuration was applied or rejected.
    pub fn reloading(&self) {
        match monotonic_usec() {
            Some(usec) => self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}")),
            None => self.notify("RELOADING=1"),
        }
    }

    /// Sends one message made of `KEY=VALUE` lines; a failure is logged and
    /// otherwise ignored.
    pub fn notify(&self, message: &str) {
        if let Err(e) = self.send(message) {
            if self.warned.swap(true, Ordering::Relaxed) {
                tracing::debug!(notify_socket = %self.display, error = %e, "systemd notification not sent");
            } else {
                tracing::warn!(
                    notify_socket = %self.display,
                    error = %e,
                    "cannot notify systemd (further failures are logged at debug level)"
                );
            }
        }
    }

    /// Sends one datagram, reporting the outcome.
    fn send(&self, message: &str) -> io::Result<()> {
        let sent = self.socket.send_to_addr(message.as_bytes(), &self.addr)?;
        if sent == message.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("only {sent} of {} bytes sent", message.len()),
            ))
        }
    }
}

/// `STATUS=text` with line breaks replaced, so the text stays one assignment.
fn status_message(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("STATUS={line}")
}

/// Microseconds of `CLOCK_MONOTONIC` (the clock systemd means by "monotonic").
fn monotonic_usec() -> Option<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let secs = u64::try_from(now.tv_sec()).ok()?;
    let nanos = u64::try_from(now.tv_nsec()).ok()?;
    Some(secs.checked_mul(1_000_000)? + nanos / 1_000)
}

/// How often to send [`Notifier::watchdog`]: half of systemd's `WATCHDOG_USEC`
/// (as `sd_watchdog_enabled(3)` recommends), or `None` when the watchdog is
/// off or meant for another process (`WATCHDOG_PID` names a different pid).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] on explicit values: the pure part, for tests.
fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        match pid.trim().parse::<u32>() {
            Ok(p) if p == my_pid => {}
            _ => return None,
        }
    }
    // At least 1ms, so a tiny WATCHDOG_USEC cannot make a zero-period timer.
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bound receiving socket standing in for systemd.
    fn receiver() -> (tempfile::TempDir, UnixDatagram, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (dir, socket, path)
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn each_call_sends_exactly_one_datagram_with_the_protocol_text() {
        let (_dir, rx, path) = receiver();
        let n = Notifier::from_socket(path.as_os_str()).unwrap();
        n.ready();
        n.watchdog();
        n.status("watching 2 interfaces, 143 peers, 0 pending");
        n.stopping();
        assert_eq!(recv(&rx), "READY=1");
        assert_eq!(recv(&rx), "WATCHDOG=1");
        assert_eq!(
            recv(&rx),
            "STATUS=watching 2 interfaces, 143 peers, 0 pending"
        );
        assert_eq!(recv(&rx), "STOPPING=1");
    }

    #[test]
    fn a_status_cannot_inject_other_assignments() {
        let (_dir, rx, path) = receiver();
        let n = Notifier::from_socket(path.as_os_str()).unwrap();
        n.status("ok\nREADY=1\r\nWATCHDOG=1");
        assert_eq!(recv(&rx), "STATUS=ok READY=1  WATCHDOG=1");
    }

    #[test]
    fn reloading_carries_the_monotonic_time_of_the_reload() {
        let (_dir, rx, path) = receiver();
        let n = Notifier::from_socket(path.as_os_str()).unwrap();
        let before = monotonic_usec().unwrap();
        n.reloading();
        let after = monotonic_usec().unwrap();
        let msg = recv(&rx);
        let usec: u64 = msg
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("unexpected message {msg:?}"))
            .parse()
            .unwrap();
        assert!(
            (before..=after).contains(&usec),
            "{before} <= {usec} <= {after}"
        );
    }

    #[test]
    fn abstract_socket_names_start_with_an_at_sign() {
        let name = format!("wghook-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::from_socket(OsStr::new(&format!("@{name}"))).unwrap();
        n.ready();
        assert_eq!(recv(&rx), "READY=1");
    }

    #[test]
    fn unusable_socket_values_give_no_notifier() {
        assert!(Notifier::from_socket(OsStr::new("")).is_none());
        assert!(Notifier::from_socket(OsStr::new("vsock:2:1234")).is_none());
        assert!(Notifier::from_socket(OsStr::new("relative/path")).is_none());
    }

    #[test]
    fn a_missing_socket_is_warned_about_once_and_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::from_socket(dir.path().join("gone.sock").as_os_str()).unwrap();
        assert!(n.send("READY=1").is_err());
        assert!(!n.warned.load(Ordering::Relaxed));
        n.ready();
        assert!(n.warned.load(Ordering::Relaxed));
        n.watchdog(); // logged at debug level; still no panic
        assert!(n.warned.load(Ordering::Relaxed));
    }

    #[test]
    fn watchdog_is_pinged_at_half_the_timeout_for_this_process_only() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval_from(Some("30000000"), None, 7), half);
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("x"), 7), None);
        assert_eq!(watchdog_interval_from(None, Some("7"), 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 7), None);
        assert_eq!(
            watchdog_interval_from(Some("1"), None, 7),
            Some(Duration::from_millis(1))
        );
    }
}
