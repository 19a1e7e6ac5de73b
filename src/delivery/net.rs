//! What the two HTTP clients (the webhook sender in [`http`](super::http)
//! and the OAuth2 token fetcher in [`auth`](super::auth)) share, below both.

/// A transport error in one line, with its innermost cause (reqwest's own
/// message alone says little: "error sending request").
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    format!("{kind}: {source}")
}
