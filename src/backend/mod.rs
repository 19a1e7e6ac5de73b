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

/// Which interfaces to watch: `include` (empty = all) minus `exclude`.
/// Patterns are interface names with `*` matching any run of characters.
/// Serialisable so the tracker's saved state can remember the filter it was
/// built under.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InterfaceFilter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl InterfaceFilter {
    pub fn allows(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| glob_match(p, name)))
            && !self.exclude.iter().any(|p| glob_match(p, name))
    }
}

/// Matches `name` against a pattern where `*` stands for any run of characters.
fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    if parts.is_empty() {
        return rest.is_empty();
    }
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(pos) => rest = &rest[pos + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_includes_and_excludes_with_wildcards() {
        let all = InterfaceFilter::default();
        assert!(all.allows("wg0"));
        let f = InterfaceFilter {
            include: vec!["wg*".into(), "vpn".into()],
            exclude: vec!["wg-test*".into()],
        };
        assert!(f.allows("wg0"));
        assert!(f.allows("vpn"));
        assert!(!f.allows("vpn1"));
        assert!(!f.allows("wg-test3"));
        assert!(!f.allows("eth0"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("*", ""));
    }
}
