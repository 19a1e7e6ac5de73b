//! wghook's integration tests: one binary, shared helpers in `util`.

mod pipeline;
mod util;
