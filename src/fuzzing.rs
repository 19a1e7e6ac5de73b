//! Entry points for the fuzz targets under `fuzz/` and for the test that
//! replays their corpora on stable Rust (`tests/fuzz_corpus.rs`): each feeds
//! arbitrary bytes to one parser of untrusted input. An error is a correct
//! answer; a panic (or a hang) is a bug.

use std::path::Path;

use chrono::DateTime;

/// The UAPI reply parser (wireguard-go and boringtun `get=1` answers).
pub fn uapi_parse(data: &[u8]) {
    let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let _ = crate::backend::uapi_parse::parse_interface("wg0", data, now);
}

/// The netlink decoder (a `WG_CMD_GET_DEVICE` dump, and a family reply).
pub fn netlink_decode(data: &[u8]) {
    let _ = crate::backend::netlink_decode::decode_device_bytes(data);
    let _ = crate::backend::netlink_decode::decode_family_reply(data);
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
