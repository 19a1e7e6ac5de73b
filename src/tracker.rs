//! (being written) The tracker: a pure function from (state, snapshot, now, settings) to (state, events).

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

/// What to report on the very first poll, when there is no saved state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Announce {
    /// `connect` for every peer connected now, nothing else.
    #[default]
    Connected,
    /// `create` for every interface and peer, then `connect` for connected peers.
    All,
    /// Nothing: the first poll only sets the baseline.
    None,
}

/// Tracker settings, taken from the `monitor:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// A peer is connected iff its latest handshake is at most this old.
    pub connect_threshold: TimeDelta,
    /// Report endpoint changes (roaming) as peer `update`s.
    pub endpoint_updates: bool,
    pub announce_on_start: Announce,
    /// Host name stamped on every event.
    pub host: String,
}
