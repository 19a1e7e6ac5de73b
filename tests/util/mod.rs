//! Helpers shared by the integration tests.

pub mod netns;
pub mod receiver;
pub mod simhost;
