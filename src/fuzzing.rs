//! Entry points for the fuzz targets under `fuzz/` and for the test that
//! replays their corpora on stable Rust (`tests/fuzz_corpus.rs`): each feeds
//! arbitrary bytes to one parser of untrusted input. An error is a correct
//! answer; a panic (or a hang) is a bug.

use std::path::Path;

use chrono::DateTime;

/// The UAPI reply parser (wireguard-go and boringtun `get=1` answers).
/// The reply read whole and the reply fed in pieces (as the daemon reads
/// it from the socket; the piece size comes from the input) must give the
/// same interface or the same error.
pub fn uapi_parse(data: &[u8]) {
    use crate::backend::uapi_parse::parse_interface;
    let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let whole = parse_interface("wg0", data, now);
    let size = data.first().map_or(1, |&b| usize::from(b % 97) + 1);
    // A reader of `size` bytes at a time hands the parser pieces of that size.
    let pieces = parse_interface("wg0", std::io::BufReader::with_capacity(size, data), now);
    assert_eq!(
        format!("{whole:?}"),
        format!("{pieces:?}"),
        "whole and in pieces of {size}"
    );
}

/// The netlink decoder (a `WG_CMD_GET_DEVICE` dump, and a family reply).
/// Whatever the one-pass fast path accepts, the reference decoder must
/// decode to the same interface.
pub fn netlink_decode(data: &[u8]) {
    use crate::backend::netlink_decode as nd;
    // `decode_device_bytes` is the fast path, else the reference: both run.
    let reference = nd::decode_device_reference(data);
    if let Some(fast) = nd::decode_device_fast(data) {
        assert_eq!(
            reference.as_ref().ok(),
            Some(&fast),
            "the fast path accepted a dump the reference decodes otherwise: {reference:?}"
        );
    }
    let _ = nd::decode_family_reply(data);
}

/// The configuration compiler, on any text (no file is read: `*_file`
/// keys and scenarios name files that do not exist).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::parse_str(text, Path::new("/nonexistent/wghook.yaml"));
    }
}

/// The simulated backend's scenario parser.
pub fn scenario(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::backend::sim::Scenario::parse(text, "fuzz.yaml");
    }
}
