//! One HTTP attempt: build the request exactly as `docs/formats.md` says
//! (format or body template, method, headers, URL, authorization, Standard
//! Webhooks signature), send it, and report what happened. No retries here;
//! callers decide, except the single retry of an OAuth 2.0 request whose
//! token the receiver refused (401), with a fresh token.
//!
//! Invariants: redirects are never followed; at most [`MAX_RESPONSE_BODY`]
//! bytes of an answer are read; the `Authorization` value, header template
//! values and signing keys never reach a log or an error message; the same
//! event always renders the same body, so retries carry the same bytes
//! (and `webhook-id`); templates are compiled once, at load.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT,
};

use super::auth::{AuthError, Authorizer};
use super::net::describe;
use super::settings::{Format, HttpMethod, Webhook};
use super::signing::{self, SigningKey};
use crate::event::template::Template;
use crate::event::{standard, wg_portal, Event, RenderContext};

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
    /// No answer: connection refused, timeout, TLS failure, no OAuth
    /// token... (retried).
    Failed(String),
    /// The request cannot be made as configured, and trying again would
    /// make the same one: a template that fails for this event (error, out
    /// of fuel, output over the limit), a rendered URL or header value the
    /// HTTP stack refuses. Given up at once.
    Invalid(String),
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
            AttemptResult::Failed(e) | AttemptResult::Invalid(e) => e.clone(),
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
    #[error(transparent)]
    Auth(AuthError),
    #[error("webhook {name}: invalid header name {header:?}")]
    BadHeaderName { name: String, header: String },
}

/// Why a request could not be built for one event (a template failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook {webhook}: cannot render the {part} for this event: {message}")]
pub struct RenderError {
    pub webhook: String,
    /// `body`, `url` or `header X-Name`.
    pub part: String,
    pub message: String,
}

/// A request ready to go, but for `Authorization` and the `webhook-*` headers.
pub struct Prepared {
    pub method: reqwest::Method,
    pub url: reqwest::Url,
    /// The configured `headers`, rendered (values marked sensitive).
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// What a webhook's body is made from.
enum Payload {
    WgPortal,
    WgPortalV2,
    Standard,
    Template(Template),
}

/// Sends events to one webhook.
pub struct HttpSender {
    client: reqwest::Client,
    url: reqwest::Url,
    url_template: Option<Template>,
    method: reqwest::Method,
    name: String,
    description: Option<String>,
    payload: Payload,
    headers: Vec<(HeaderName, Template)>,
    auth: Authorizer,
    signing: Vec<SigningKey>,
    ctx: RenderContext,
}

impl std::fmt::Debug for HttpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSender")
            .field("name", &self.name)
            .field("method", &self.method.as_str())
            .field("url", &super::auth::display_url(&self.url))
            .field("auth", &self.auth)
            .field("signing_keys", &self.signing.len())
            .finish()
    }
}

impl HttpSender {
    /// The sender of `hook`. `ctx` supplies names and the time zone;
    /// `extended` is taken from the webhook.
    pub fn new(hook: &Webhook, ctx: RenderContext) -> Result<Self, SenderError> {
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
        let auth = Authorizer::new(hook, client.clone()).map_err(|e| match e {
            AuthError::BadHeader { what: "secret", .. } => SenderError::BadSecret {
                name: hook.name.clone(),
            },
            e => SenderError::Auth(e),
        })?;
        let headers = hook
            .headers
            .iter()
            .map(|(name, value)| {
                HeaderName::from_bytes(name.as_bytes())
                    .map(|n| (n, value.clone()))
                    .map_err(|_| SenderError::BadHeaderName {
                        name: hook.name.clone(),
                        header: name.clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let payload = match (&hook.body, hook.format) {
            (Some(t), _) => Payload::Template(t.clone()),
            (None, Format::WgPortal) => Payload::WgPortal,
            (None, Format::WgPortalV2) => Payload::WgPortalV2,
            (None, Format::Standard) => Payload::Standard,
        };
        let method = match hook.method {
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Put => reqwest::Method::PUT,
        };
        Ok(Self {
            client,
            url: hook.url.clone(),
            url_template: hook.url_template.clone(),
            method,
            name: hook.name.clone(),
            description: hook.description.clone(),
            payload,
            headers,
            auth,
            signing: hook.signing_secrets.clone(),
            ctx: RenderContext {
                extended: hook.extended,
                ..ctx
            },
        })
    }

    /// The webhook's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The webhook's `description`, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    fn render_error(&self, part: &str, message: String) -> RenderError {
        RenderError {
            webhook: self.name.clone(),
            part: part.to_string(),
            message,
        }
    }

    /// The body this webhook sends for `event`.
    pub fn body(&self, event: &Event) -> Result<Vec<u8>, RenderError> {
        Ok(match &self.payload {
            Payload::WgPortal => wg_portal::render(event, &self.ctx),
            Payload::WgPortalV2 => wg_portal::render_v2(event, &self.ctx),
            Payload::Standard => standard::render(event, &self.ctx),
            Payload::Template(t) => t
                .render(event, &self.ctx)
                .map_err(|e| self.render_error("body", e))?
                .into_bytes(),
        })
    }

    /// Method, URL, configured headers and body for `event`.
    pub fn prepare(&self, event: &Event) -> Result<Prepared, RenderError> {
        let url = match &self.url_template {
            None => self.url.clone(),
            Some(t) => {
                let text = t
                    .render(event, &self.ctx)
                    .map_err(|e| self.render_error("url", e))?;
                match reqwest::Url::parse(text.trim()) {
                    Ok(url)
                        if self.auth.sends_header()
                            && (!url.username().is_empty() || url.password().is_some()) =>
                    {
                        let message = "the result carries user info while the webhook also sends an Authorization header (secret or auth); one request cannot carry both".to_string();
                        return Err(self.render_error("url", message));
                    }
                    Ok(url) if matches!(url.scheme(), "http" | "https") => url,
                    _ => {
                        let message = "the result is not an http or https URL".to_string();
                        return Err(self.render_error("url", message));
                    }
                }
            }
        };
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, template) in &self.headers {
            let part = || format!("header {name}");
            let text = template
                .render(event, &self.ctx)
                .map_err(|e| self.render_error(&part(), e))?;
            // A line break in a peer name must not fail (or split) the request.
            let text: String = text
                .trim()
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let mut value = HeaderValue::from_str(&text)
                .map_err(|_| self.render_error(&part(), "not a valid header value".to_string()))?;
            value.set_sensitive(true);
            headers.insert(name.clone(), value);
        }
        Ok(Prepared {
            method: self.method.clone(),
            url,
            headers,
            body: self.body(event)?,
        })
    }

    /// Sends `event` once; `now` is stamped as `webhook-timestamp` (and signed).
    pub async fn send(&self, event: &Event, now: DateTime<Utc>) -> Attempt {
        let started = Instant::now();
        let result = match self.prepare(event) {
            Ok(prepared) => self.deliver(event, prepared, now).await,
            Err(e) => AttemptResult::Invalid(e.to_string()),
        };
        Attempt {
            result,
            elapsed: started.elapsed(),
        }
    }

    async fn deliver(&self, event: &Event, mut p: Prepared, now: DateTime<Utc>) -> AttemptResult {
        let id = event.id.to_string();
        let timestamp = now.timestamp();
        let signature = signing::signature(&self.signing, &id, timestamp, &p.body);
        let mut refreshed = false;
        loop {
            let auth = match self.auth.header().await {
                Ok(auth) => auth,
                Err(e) => return AttemptResult::Failed(e.to_string()),
            };
            let may_retry = self.auth.refreshable() && !refreshed;
            let body = if may_retry {
                p.body.clone()
            } else {
                std::mem::take(&mut p.body)
            };
            let mut request = self
                .client
                .request(p.method.clone(), p.url.clone())
                .headers(p.headers.clone())
                .header("webhook-id", id.as_str())
                .header("webhook-timestamp", timestamp.to_string())
                .body(body);
            if let Some(signature) = &signature {
                request = request.header("webhook-signature", signature.as_str());
            }
            if let Some(auth) = &auth {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            let response = match request.send().await {
                Ok(response) => response,
                // The request could not even be built: the same again would fail too.
                Err(e) if e.is_builder() => {
                    return AttemptResult::Invalid(format!(
                        "webhook {}: the HTTP client refused the request: {}",
                        self.name,
                        describe(&e)
                    ))
                }
                Err(e) => return AttemptResult::Failed(describe(&e)),
            };
            let code = response.status().as_u16();
            if code == 401 && may_retry {
                if let Some(auth) = &auth {
                    self.auth.invalidate(auth).await;
                }
                refreshed = true;
                tracing::debug!(webhook = %self.name, "the receiver refused the oauth2 token (401); trying once more with a new one");
                continue;
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| super::retry::parse_retry_after(v, now));
            let body = read_limited(response).await;
            return AttemptResult::Status {
                code,
                body,
                retry_after,
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(yaml: &str) -> HttpSender {
        let cfg = crate::config::parse_str(yaml, std::path::Path::new("/etc/wghook/t.yaml"))
            .unwrap_or_else(|e| panic!("{e}"));
        HttpSender::new(&cfg.webhooks[0], RenderContext::default()).expect("sender")
    }

    fn connect() -> Event {
        crate::event::test_interface_event(1, Utc::now())
    }

    /// Regression: `HttpSender`'s `Debug` showed the URL's path, which for
    /// a Slack or Discord webhook is the credential.
    #[test]
    fn debug_shows_no_url_path() {
        let s = sender("webhook:\n  url: https://hooks.slack.com/services/T0/B0/S3cr3tPath\n");
        let shown = format!("{s:?}");
        assert!(!shown.contains("S3cr3tPath"), "{shown}");
        assert!(shown.contains("hooks.slack.com"), "{shown}");
    }

    /// Regression: a template that fails for an event was a network-like
    /// failure, retried for `max_event_age` (72 h). (`check` renders
    /// samples of every event, so a template that reaches delivery fails
    /// only on some event's data; it is set here past the check.)
    #[tokio::test]
    async fn a_body_that_cannot_render_is_invalid_not_failed() {
        let cfg = crate::config::parse_str(
            "webhook:\n  url: http://127.0.0.1:9/h\n",
            std::path::Path::new("/etc/wghook/t.yaml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut hook = cfg.webhooks[0].clone();
        let endless = "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}{% endfor %}{% endfor %}{% endfor %}{}";
        hook.body = Some(Template::compile(endless, crate::event::template::Mode::Json).unwrap());
        let s = HttpSender::new(&hook, RenderContext::default()).expect("sender");
        let attempt = s.send(&connect(), Utc::now()).await;
        assert!(
            matches!(&attempt.result, AttemptResult::Invalid(m) if m.contains("body")),
            "{:?}",
            attempt.result
        );
    }

    /// A URL template that renders user info while the webhook also sends
    /// `Authorization` would put two of them on the wire: refused.
    #[tokio::test]
    async fn a_rendered_url_with_user_info_and_a_secret_is_invalid() {
        let s = sender(
            "webhook:\n  url: \"http://{{ 'u:p@' | safe if entity == 'interface' else '' }}127.0.0.1:9/h\"\n  secret: Bearer x\n",
        );
        let attempt = s.send(&connect(), Utc::now()).await;
        assert!(
            matches!(&attempt.result, AttemptResult::Invalid(m) if m.contains("user info")),
            "{:?}",
            attempt.result
        );
    }

    /// A failed delivery's reason (logged, and shown by `wghook outbox`)
    /// never carries the URL's path, which for a chat webhook is its secret.
    #[tokio::test]
    async fn a_delivery_error_does_not_show_the_url_path() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = sender(&format!(
            "webhook:\n  url: http://127.0.0.1:{port}/services/T0/B0/S3cr3tPath\n"
        ));
        let attempt = s.send(&connect(), Utc::now()).await;
        let AttemptResult::Failed(reason) = &attempt.result else {
            panic!("nothing listens there: {:?}", attempt.result);
        };
        assert!(!reason.contains("S3cr3tPath"), "{reason}");
        assert!(!attempt.reason().contains("S3cr3tPath"));
    }
}
