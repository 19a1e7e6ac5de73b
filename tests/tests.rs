//! wghook's integration tests: one binary, shared helpers in `util`.

mod cli;
mod daemon;
mod e2e;
mod outbox;
mod pipeline;
mod util;
