//! wghook: a WireGuard event daemon.
//!
//! Data flows one way: **backend -> snapshot -> tracker -> events -> outbox -> delivery**.
//! - [`backend`] reads interfaces (kernel netlink, userspace UAPI, simulated) into a [`model::Snapshot`].
//! - [`tracker`] is pure: `(state, snapshot, now, settings) -> (state, events)`.
//! - [`event`] holds the derived [`event::Event`], its JSON in each wire format, templates, filters.
//! - [`outbox`] stores events and the tracker's state in one SQLite transaction: the durable link.
//! - [`delivery`] sends what the outbox holds to each webhook, in order, retrying.
//! - [`daemon`] wires it together: poll loop, watchdog, signals, reload, shutdown.
//! - [`config`] loads the YAML file; each module owns and validates its settings ([`settings`]).
//!
//! Nothing inside the tracker, the scheduler or the parsers reads the clock: time is an argument.

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
pub mod labels;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod names;
pub mod notify;
pub mod outbox;
pub mod ping;
pub mod settings;
pub mod tracker;
