//! wghook's integration tests: one binary, shared helpers in `util`.

mod cli;
mod daemon;
mod e2e;
mod formats;
mod fuzz_corpus;
mod house;
mod outbox;
mod ping_e2e;
mod pipeline;
mod schema;
mod util;
