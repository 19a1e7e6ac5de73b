//! wghook: a WireGuard event daemon.
//!
//! Data flows one way: **backend -> snapshot -> tracker -> events -> sender**.
//! - [`backend`] reads interfaces (kernel netlink, userspace UAPI, simulated) into a [`model::Snapshot`].
//! - [`tracker`] is a pure function `(state, snapshot, now, settings) -> (state, events)`.
//! - [`event`] holds the derived [`event::Event`] and its JSON in each wire format.
//! - [`outbox`] keeps the events still to deliver and the tracker state, durably.
//! - [`delivery`] sends events to webhooks.
//! - [`config`] turns one YAML file into a validated [`config::Config`];
//!   [`files`] reads every file it names, bounded and only if regular.
//! - [`daemon`] wires it together: poll loop, signals, shutdown.
//!
//! Nothing inside the tracker or the parsers reads the clock: time is an argument.

pub mod backend;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod demo;
pub mod event;
pub mod faults;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod names;
pub mod notify;
pub mod outbox;
pub mod ping;
pub mod tracker;
