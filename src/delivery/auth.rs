//! The `Authorization` header of one webhook: none, a verbatim `secret`,
//! `Bearer`, `Basic`, or an OAuth 2.0 client-credentials token.
//!
//! OAuth 2.0: the token is fetched on first use, cached, and fetched again
//! shortly before it expires ([`refresh_at`]; lifetimes are capped at
//! [`MAX_TOKEN_LIFETIME`]) or when the receiver answers 401 to it ([`Authorizer::invalidate`], then the sender retries once).
//! Only one token request is in flight per webhook: concurrent deliveries
//! wait for it and share the token.
//!
//! Invariants: header values are marked sensitive; no token, password or
//! client secret reaches a log line, an error message or `Debug` output;
//! token endpoint answers are read up to [`MAX_TOKEN_ANSWER`] bytes and only
//! their `error`/`error_description` fields are quoted in errors.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::settings::{Auth, ClientAuth, OAuth2, Webhook};
use crate::event::template::percent_encode;

/// Token lifetime assumed when the token endpoint does not say (`expires_in`).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// A token is refreshed this long before it expires, at most (a quarter of
/// its lifetime for short-lived tokens).
pub const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Token endpoint answers are read up to this many bytes.
pub const MAX_TOKEN_ANSWER: usize = 64 * 1024;
/// A token is used for at most this long, whatever its `expires_in` says
/// (a nonsense value like `u64::MAX` seconds must not overflow the clock).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Why no `Authorization` header could be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A configured credential cannot be sent in an HTTP header.
    #[error("webhook {webhook}: the {what} cannot be sent in an HTTP header (it contains control characters)")]
    BadHeader { webhook: String, what: &'static str },
    /// The token endpoint did not give a usable token.
    #[error("oauth2 token request to {token_url} failed: {reason}")]
    Token { token_url: String, reason: String },
}

/// Produces the `Authorization` header of one webhook's requests.
pub struct Authorizer {
    inner: Inner,
}

enum Inner {
    None,
    Static(HeaderValue),
    OAuth2(Box<TokenSource>),
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.inner {
            Inner::None => "none",
            Inner::Static(_) => "static",
            Inner::OAuth2(_) => "oauth2",
        };
        f.debug_struct("Authorizer").field("mode", &mode).finish()
    }
}

impl Authorizer {
    /// The authorizer `hook` asks for; `client` is used for token requests.
    pub fn new(hook: &Webhook, client: reqwest::Client) -> Result<Self, AuthError> {
        let bad = |what| AuthError::BadHeader {
            webhook: hook.name.clone(),
            what,
        };
        let inner = match (&hook.secret, &hook.auth) {
            (Some(secret), _) => {
                Inner::Static(sensitive(secret.expose()).ok_or_else(|| bad("secret"))?)
            }
            (None, None) => Inner::None,
            (None, Some(Auth::Bearer(token))) => Inner::Static(
                sensitive(&format!("Bearer {}", token.expose()))
                    .ok_or_else(|| bad("bearer token"))?,
            ),
            (None, Some(Auth::Basic { username, password })) => {
                let pair = format!("{username}:{}", password.expose());
                Inner::Static(
                    sensitive(&format!("Basic {}", B64.encode(pair)))
                        .ok_or_else(|| bad("basic credentials"))?,
                )
            }
            (None, Some(Auth::OAuth2(settings))) => Inner::OAuth2(Box::new(TokenSource {
                client,
                settings: settings.clone(),
                cached: Mutex::new(None),
            })),
        };
        Ok(Self { inner })
    }

    /// True when requests carry an `Authorization` header.
    pub fn sends_header(&self) -> bool {
        !matches!(self.inner, Inner::None)
    }

    /// True when a 401 answer may be cured by fetching a new token.
    pub fn refreshable(&self) -> bool {
        matches!(self.inner, Inner::OAuth2(_))
    }

    /// The header to send now (`None`: send none). May fetch a token.
    pub async fn header(&self) -> Result<Option<HeaderValue>, AuthError> {
        match &self.inner {
            Inner::None => Ok(None),
            Inner::Static(value) => Ok(Some(value.clone())),
            Inner::OAuth2(source) => source.header().await.map(Some),
        }
    }

    /// The receiver refused `rejected` (401): forget it unless another
    /// delivery already replaced it, so the next [`Authorizer::header`]
    /// fetches a new token.
    pub async fn invalidate(&self, rejected: &HeaderValue) {
        if let Inner::OAuth2(source) = &self.inner {
            let mut cached = source.cached.lock().await;
            if cached.as_ref().is_some_and(|c| c.header == *rejected) {
                *cached = None;
            }
        }
    }
}

fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// When a token obtained at `obtained`, valid for `lifetime`, is refreshed:
/// [`MAX_REFRESH_MARGIN`] before expiry, or a quarter of its lifetime before
/// for tokens shorter than four minutes. Lifetimes beyond
/// [`MAX_TOKEN_LIFETIME`] count as that; never panics.
pub fn refresh_at(obtained: Instant, lifetime: Duration) -> Instant {
    let lifetime = lifetime.min(MAX_TOKEN_LIFETIME);
    let margin = (lifetime / 4).min(MAX_REFRESH_MARGIN);
    // At most a day ahead: cannot overflow.
    obtained + lifetime.saturating_sub(margin)
}

struct Cached {
    header: HeaderValue,
    refresh_at: Instant,
}

struct TokenSource {
    client: reqwest::Client,
    settings: OAuth2,
    cached: Mutex<Option<Cached>>,
}

/// A successful token answer (RFC 6749 section 5.1).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    token_type: Option<String>,
    /// Seconds; some servers send it as a string.
    expires_in: Option<serde_json::Value>,
}

/// An error answer (RFC 6749 section 5.2).
#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    error_description: Option<String>,
}

impl TokenSource {
    async fn header(&self) -> Result<HeaderValue, AuthError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.refresh_at {
                return Ok(c.header.clone());
            }
        }
        let obtained = Instant::now();
        let (header, lifetime) = self.fetch().await?;
        *cached = Some(Cached {
            header: header.clone(),
            refresh_at: refresh_at(obtained, lifetime),
        });
        Ok(header)
    }

    fn error(&self, reason: impl Into<String>) -> AuthError {
        AuthError::Token {
            token_url: display_url(&self.settings.token_url),
            reason: reason.into(),
        }
    }

    /// One client-credentials request: the header to send and the token's lifetime.
    async fn fetch(&self) -> Result<(HeaderValue, Duration), AuthError> {
        let s = &self.settings;
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &s.scope {
            form.push(("scope", scope));
        }
        let mut request = self
            .client
            .post(s.token_url.clone())
            .header(ACCEPT, "application/json");
        match s.client_auth {
            ClientAuth::Basic => {
                // RFC 6749 2.3.1: both parts form-encoded before Basic encoding.
                let pair = format!(
                    "{}:{}",
                    percent_encode(&s.client_id),
                    percent_encode(s.client_secret.expose())
                );
                let value = sensitive(&format!("Basic {}", B64.encode(pair)))
                    .ok_or_else(|| self.error("the client credentials cannot be sent"))?;
                request = request.header(AUTHORIZATION, value);
            }
            ClientAuth::Body => {
                form.push(("client_id", &s.client_id));
                form.push(("client_secret", s.client_secret.expose()));
            }
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| self.error(super::net::describe(&e)))?;
        let status = response.status();
        let body = read_limited(response).await;
        if !status.is_success() {
            let detail = match serde_json::from_slice::<ErrorAnswer>(&body) {
                Ok(e) => match e.error_description {
                    Some(d) => format!(": {} ({})", clip(&e.error), clip(&d)),
                    None => format!(": {}", clip(&e.error)),
                },
                Err(_) => String::new(),
            };
            return Err(self.error(format!(
                "HTTP {}{detail} (check client_id, client_secret, scope and token_url)",
                status.as_u16()
            )));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            self.error(format!(
                "the answer is not a token (a JSON object with access_token): {e}"
            ))
        })?;
        if let Some(kind) = &answer.token_type {
            if !kind.eq_ignore_ascii_case("bearer") {
                return Err(self.error(format!(
                    "token_type {:?} is not supported (only Bearer)",
                    clip(kind)
                )));
            }
        }
        if answer.access_token.is_empty() {
            return Err(self.error("the answer's access_token is empty"));
        }
        let header = sensitive(&format!("Bearer {}", answer.access_token)).ok_or_else(|| {
            self.error("the access_token contains characters not allowed in a header")
        })?;
        let lifetime = match &answer.expires_in {
            None | Some(serde_json::Value::Null) => DEFAULT_TOKEN_LIFETIME,
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .map(Duration::from_secs)
                .ok_or_else(|| self.error("expires_in is not a number of seconds"))?,
        };
        // refresh_at counts a lifetime beyond MAX_TOKEN_LIFETIME as that.
        tracing::debug!(
            token_url = %display_url(&s.token_url),
            expires_in_s = lifetime.as_secs(),
            "oauth2 token obtained"
        );
        Ok((header, lifetime))
    }
}

/// At most 200 characters of a server-provided string, on one line.
fn clip(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match one_line.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}

/// A URL without user info, path or query (each may hold credentials).
pub fn display_url(url: &reqwest::Url) -> String {
    // The path too: a Slack, Discord or Teams webhook's path is its secret.
    super::settings::redacted_url(url)
}

async fn read_limited(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < MAX_TOKEN_ANSWER {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_TOKEN_ANSWER - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refreshed_shortly_before_they_expire() {
        let t0 = Instant::now();
        assert_eq!(
            refresh_at(t0, Duration::from_secs(3600)),
            t0 + Duration::from_secs(3540)
        );
        assert_eq!(
            refresh_at(t0, Duration::from_secs(2)),
            t0 + Duration::from_millis(1500)
        );
        assert_eq!(refresh_at(t0, Duration::ZERO), t0);
        assert_eq!(
            refresh_at(t0, DEFAULT_TOKEN_LIFETIME),
            t0 + Duration::from_secs(240)
        );
    }

    /// Regression: `expires_in: 18446744073709551615` overflowed `Instant +
    /// Duration` and panicked the delivery task.
    #[test]
    fn absurd_token_lifetimes_are_capped_at_a_day() {
        let t0 = Instant::now();
        let day = t0 + MAX_TOKEN_LIFETIME - MAX_REFRESH_MARGIN;
        assert_eq!(refresh_at(t0, Duration::from_secs(u64::MAX)), day);
        assert_eq!(refresh_at(t0, Duration::MAX), day);
        assert_eq!(refresh_at(t0, MAX_TOKEN_LIFETIME * 2), day);
    }

    /// Regression: the path was shown (and logged with token request
    /// failures); a chat webhook's path is its credential.
    #[test]
    fn urls_are_shown_without_credentials_or_path() {
        let url = reqwest::Url::parse("https://u:p@idp.example.com/token?key=s3cr3t#x").unwrap();
        assert_eq!(display_url(&url), "https://idp.example.com/…");
        let url = reqwest::Url::parse("https://hooks.slack.com:8443/services/T0/B0/XyZ").unwrap();
        assert_eq!(display_url(&url), "https://hooks.slack.com:8443/…");
        let root = reqwest::Url::parse("http://127.0.0.1:9000/").unwrap();
        assert_eq!(display_url(&root), "http://127.0.0.1:9000/");
    }

    #[test]
    fn server_strings_are_clipped_to_one_line() {
        assert_eq!(clip("a\nb"), "a b");
        let long = "x".repeat(300);
        assert_eq!(clip(&long).len(), 203);
    }
}
