#![no_main]
//! Coverage-guided fuzzing of one of wghook's parsers of untrusted input;
//! see `wghook::fuzzing`. Errors are fine, panics and hangs are bugs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wghook::fuzzing::scenario(data);
});
