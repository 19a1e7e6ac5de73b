//! One HTTP attempt: build the request exactly as `wire-format.md` says, send
//! it, and report what happened. No retries here; callers decide.
//!
//! Invariants: redirects are never followed; at most [`MAX_RESPONSE_BODY`]
//! bytes of an answer are read; the `Authorization` value never reaches a log
//! or an error message.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};

use crate::config::Webhook;
use crate::event::{wg_portal, Event, RenderContext};

/// Answers are read up to this many bytes; the rest is dropped.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Connection setup gets its own, shorter bound than the whole request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `wghook/<version>`, sent as `User-Agent`.
pub fn user_agent() -> String {
    format!("wghook/{}", env!("CARGO_PKG_VERSION"))
}

/// What one attempt ended in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The receiver answered (any status).
    Status {
        code: u16,
        body: String,
        /// The receiver's `Retry-After`, if it sent a valid one.
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused, timeout, TLS failure...
    Failed(String),
}

/// One attempt's outcome and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub result: AttemptResult,
    pub elapsed: Duration,
}

impl Attempt {
    /// Any 2xx counts as delivered (wg-portal accepts only 200/202/204; we do better).
    pub fn delivered(&self) -> bool {
        matches!(self.result, AttemptResult::Status { code, .. } if (200..300).contains(&code))
    }

    /// A short reason for logs: `HTTP 503` or the transport error.
    pub fn reason(&self) -> String {
        match &self.result {
            AttemptResult::Status { code, .. } => format!("HTTP {code}"),
            AttemptResult::Failed(e) => e.clone(),
        }
    }
}

/// Why a webhook's sender could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("webhook {name}: the secret cannot be sent as an Authorization header (it contains control characters)")]
    BadSecret { name: String },
    #[error("webhook {name}: cannot build an HTTP client: {message}")]
    Client { name: String, message: String },
}

/// Sends events to one webhook.
pub struct HttpSender {
    client: reqwest::Client,
    url: reqwest::Url,
    name: String,
    auth: Option<HeaderValue>,
    ctx: RenderContext,
}

impl std::fmt::Debug for HttpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSender")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl HttpSender {
    pub fn new(hook: &Webhook, ctx: RenderContext) -> Result<Self, SenderError> {
        let auth = match &hook.secret {
            Some(secret) => {
                let mut value =
                    HeaderValue::from_str(secret.expose()).map_err(|_| SenderError::BadSecret {
                        name: hook.name.clone(),
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let ua = HeaderValue::from_str(&user_agent()).map_err(|e| SenderError::Client {
            name: hook.name.clone(),
            message: e.to_string(),
        })?;
        headers.insert(USER_AGENT, ua);
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(hook.timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(hook.timeout))
            .build()
            .map_err(|e| SenderError::Client {
                name: hook.name.clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            client,
            url: hook.url.clone(),
            name: hook.name.clone(),
            auth,
            ctx,
        })
    }

    /// The webhook's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The body this webhook sends for `event`.
    pub fn body(&self, event: &Event) -> Vec<u8> {
        wg_portal::render(event, &self.ctx)
    }

    /// Sends `event` once; `now` is stamped as `webhook-timestamp`.
    pub async fn send(&self, event: &Event, now: DateTime<Utc>) -> Attempt {
        let started = Instant::now();
        let mut request = self
            .client
            .post(self.url.clone())
            .header("webhook-id", event.id.to_string())
            .header("webhook-timestamp", now.timestamp().to_string())
            .body(self.body(event));
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let result = match request.send().await {
            Ok(response) => {
                let code = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| super::retry::parse_retry_after(v, now));
                let body = read_limited(response).await;
                AttemptResult::Status {
                    code,
                    body,
                    retry_after,
                }
            }
            Err(e) => AttemptResult::Failed(describe(&e)),
        };
        Attempt {
            result,
            elapsed: started.elapsed(),
        }
    }
}

/// Reads at most [`MAX_RESPONSE_BODY`] bytes of the answer, lossily as text.
async fn read_limited(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_RESPONSE_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BODY - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// A transport error in one line, with its innermost cause (reqwest's own
/// message alone says little: "error sending request").
fn describe(e: &reqwest::Error) -> String {
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
