//! Where snapshots come from.
//!
//! A [`Backend`] reads every WireGuard interface it can see and returns a
//! [`Snapshot`]. An interface that exists but could not be read this time is
//! listed in [`Snapshot::unreadable`] rather than left out, so the tracker does
//! not mistake a read error for a deletion.

pub mod auto;
pub mod netlink;
pub mod netlink_decode;
#[cfg(test)]
pub(crate) mod netlink_encode;
pub mod sim;
pub mod uapi;
pub mod uapi_parse;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use crate::model::InterfaceFilter;
use crate::model::Snapshot;

/// How long one poll may take: userspace sockets that have not answered by
/// then (hung daemons, or sockets still waiting their turn behind hung
/// ones) are unreadable for that poll; the daemon counts a backend still
/// busy [`POLL_GRACE`] later as a failed poll. Both keep a poll well inside
/// the watchdog's period (`WatchdogSec=30` in the shipped unit).
pub const POLL_DEADLINE: Duration = Duration::from_secs(10);

/// How long after [`POLL_DEADLINE`] the daemon stops waiting for a backend.
pub const POLL_GRACE: Duration = Duration::from_secs(5);

/// The future a poll returns; boxed so backends can be chosen at run time.
pub type PollFuture<'a> = Pin<Box<dyn Future<Output = Result<Snapshot, BackendError>> + Send + 'a>>;

/// A source of snapshots.
pub trait Backend: Send {
    /// Short name for logs and `wghook peers` (`userspace`, `kernel`, `auto`, `simulated`).
    fn name(&self) -> &'static str;

    /// Reads every interface that passes `filter`. `now` is the poll's wall
    /// clock time (boringtun reports handshake ages relative to it; the
    /// simulated backend plays its scenario against it).
    ///
    /// A failure of one interface is reported in [`Snapshot::unreadable`]
    /// (and logged); `Err` means the whole poll failed and must be skipped.
    fn poll<'a>(&'a mut self, now: DateTime<Utc>, filter: &'a InterfaceFilter) -> PollFuture<'a>;

    /// Takes back a snapshot this backend made, once the caller is done
    /// with it, to reuse its memory for the next poll (a backend that
    /// builds large snapshots every poll keeps their lists instead of
    /// allocating and faulting in new ones). The default drops it.
    fn recycle(&mut self, snapshot: Snapshot) {
        drop(snapshot);
    }
}

/// Why a whole poll failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A capability or kernel feature is missing; says which and what to do.
    #[error("{what}: {hint}")]
    Unavailable { what: String, hint: String },
    /// I/O on the source failed (socket, netlink).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The source answered something that could not be understood.
    #[error("{0}")]
    Protocol(String),
}

/// Which backend reads the interfaces (`monitor.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendKind {
    /// Kernel interfaces over netlink when available, plus UAPI sockets.
    #[default]
    Auto,
    /// Only UAPI sockets (wireguard-go, boringtun).
    Userspace,
    /// Only the kernel module, over netlink.
    Kernel,
    /// A scripted scenario (`monitor.scenario`), for tests and the demo.
    Simulated,
}

impl BackendKind {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Userspace => "userspace",
            BackendKind::Kernel => "kernel",
            BackendKind::Simulated => "simulated",
        }
    }
}

impl crate::settings::kind::Named for BackendKind {
    const ALL: &'static [Self] = &[
        BackendKind::Auto,
        BackendKind::Userspace,
        BackendKind::Kernel,
        BackendKind::Simulated,
    ];
    fn name(self) -> &'static str {
        self.as_str()
    }
}
