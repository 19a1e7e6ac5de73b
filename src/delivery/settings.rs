//! The delivery engine's settings: the `delivery:` section (the outbox's
//! bound, shutdown, concurrency, the retry schedule) and the webhooks
//! (`webhook:` or a `webhooks:` list). Raw as written, validated into
//! [`DeliverySettings`] and [`Webhook`]s; webhook validation lives in
//! [`super::webhook_settings`].
//!
//! Invariants: a secret is held in a [`Secret`]; a URL can be a secret
//! itself (userinfo, a Slack path, a token in the query), so messages quote
//! at most its scheme and host and `Debug` shows it through [`redacted_url`].

use std::fmt;
use std::time::Duration;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::signing::SigningKey;
use crate::event::filter::EventFilter;
use crate::event::template::Template;
use crate::settings::kind::{Dur, Flag, Method, Named, Num, Pick, Strs, Tmpl};
use crate::settings::{Check, OneOrMany, Secret, Text};

/// The name of the single webhook of a `webhook:` section.
pub const DEFAULT_WEBHOOK_NAME: &str = "default";
/// Default timeout of one request.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound of the outbox.
pub const DEFAULT_MAX_PENDING_EVENTS: u64 = 100_000;
/// Default time in-flight requests get at shutdown.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of requests in flight per webhook.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
/// Default age after which an undelivered event is given up.
pub const DEFAULT_MAX_EVENT_AGE: Duration = Duration::from_secs(72 * 3600);
/// The default retry steps: 0, 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h
/// (the last repeats).
pub const DEFAULT_RETRY_DELAYS: [Duration; 9] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
    Duration::from_secs(7200),
    Duration::from_secs(14400),
];

/// The `delivery:` section as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RawDelivery {
    /// Past this many undelivered events the oldest are dropped (default 100000).
    pub max_pending_events: Option<Text<Num>>,
    /// How long in-flight requests may finish at shutdown (default 10s).
    pub shutdown_timeout: Option<Text<Dur>>,
    /// Requests in flight per webhook (default 16, 1 to 1024).
    pub max_in_flight: Option<Text<Num>>,
    /// The retry schedule every webhook uses unless it overrides it.
    pub retry: Option<RawRetry>,
}

/// A `retry:` section as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RawRetry {
    /// Delay before each attempt; the last repeats (default 0s, 5s, 30s, 2m, 10m, 30m, 1h, 2h, 4h).
    pub delays: Option<Vec<Text<Dur>>>,
    /// Age after which an undelivered event is given up (default 72h).
    pub max_event_age: Option<Text<Dur>>,
}

/// One webhook as written (`webhook:` or an item of `webhooks:`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RawWebhook {
    /// Unique name; required in a `webhooks` list (letters, digits, _ and -).
    pub name: Option<Text>,
    /// An http or https URL; with `{{ }}` a template rendered per event.
    pub url: Option<Text>,
    /// Sent verbatim as the Authorization header (wg-portal's form).
    pub secret: Option<Text>,
    /// wg-portal's name for `secret`.
    pub authentication: Option<Text>,
    /// Timeout of one request (default 10s).
    pub timeout: Option<Text<Dur>>,
    /// Which events go here: peer.connect, peer.*, *.delete, ... (default all).
    pub events: Option<Vec<Text>>,
    /// This webhook's retry schedule (default `delivery.retry`).
    pub retry: Option<RawRetry>,
    /// Requests in flight at once (default `delivery.max_in_flight`).
    pub max_in_flight: Option<Text<Num>>,
    /// Free text shown by `wghook test`.
    pub description: Option<Text>,
    /// Body format: wg-portal (default), wg-portal-v2 or standard.
    pub format: Option<Text<Pick<Format>>>,
    /// wg-portal formats: add ChangedFields to update bodies.
    pub extended: Option<Text<Flag>>,
    /// A template that replaces the format.
    pub body: Option<Text<Tmpl>>,
    /// POST (default), GET or PUT.
    pub method: Option<Text<Method>>,
    /// Extra headers; values are templates.
    pub headers: Option<IndexMap<String, Option<Text<Tmpl>>>>,
    /// Authentication other than a verbatim secret: bearer, basic or oauth2.
    pub auth: Option<RawAuth>,
    /// Standard Webhooks signing keys (whsec_...); a list while rotating.
    pub signing_secret: Option<OneOrMany<Text<Strs>>>,
    /// A file holding `secret`.
    pub secret_file: Option<Text>,
    /// wg-portal-style name for `secret_file`.
    pub authentication_file: Option<Text>,
    /// Files holding signing keys.
    pub signing_secret_file: Option<OneOrMany<Text<Strs>>>,
}

/// `auth:` as written: exactly one of bearer, basic, oauth2.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RawAuth {
    /// A bearer token (without "Bearer ").
    pub bearer: Option<Text>,
    /// A file holding the bearer token.
    pub bearer_file: Option<Text>,
    /// HTTP Basic authentication.
    pub basic: Option<RawBasic>,
    /// An OAuth 2.0 client-credentials token.
    pub oauth2: Option<RawOAuth2>,
}

/// `auth.basic:` as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RawBasic {
    /// The user name (no `:`).
    pub username: Option<Text>,
    /// The password.
    pub password: Option<Text>,
    /// A file holding the password.
    pub password_file: Option<Text>,
}

/// `auth.oauth2:` as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RawOAuth2 {
    /// The token endpoint's URL.
    pub token_url: Option<Text>,
    /// The client id.
    pub client_id: Option<Text>,
    /// The client secret.
    pub client_secret: Option<Text>,
    /// A file holding the client secret.
    pub client_secret_file: Option<Text>,
    /// Space-separated scopes.
    pub scope: Option<Text>,
    /// basic (default) or body.
    pub client_auth: Option<Text<Pick<ClientAuth>>>,
}

impl RawWebhook {
    /// The names of every secret file this webhook names, as written, so
    /// that they can be read before validation.
    pub fn secret_file_names(&self) -> Vec<&str> {
        let auth = self.auth.as_ref();
        let single = [
            self.secret_file.as_ref(),
            self.authentication_file.as_ref(),
            auth.and_then(|a| a.bearer_file.as_ref()),
            auth.and_then(|a| a.basic.as_ref())
                .and_then(|b| b.password_file.as_ref()),
            auth.and_then(|a| a.oauth2.as_ref())
                .and_then(|o| o.client_secret_file.as_ref()),
        ];
        let signing = self
            .signing_secret_file
            .iter()
            .flat_map(|many| many.0.iter());
        single
            .into_iter()
            .flatten()
            .filter_map(Text::value)
            .chain(signing.filter_map(Text::value))
            .collect()
    }
}

/// The `delivery:` section: the durable outbox and how it retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// Past this many undelivered events the oldest are dropped (ERROR logged).
    pub max_pending_events: u64,
    /// How long in-flight requests may finish at shutdown.
    pub shutdown_timeout: Duration,
    /// Requests in flight per webhook (different peers only: one peer's events
    /// are always sent one after the other).
    pub max_in_flight: usize,
    /// The retry schedule every webhook uses unless it overrides it.
    pub retry: RetrySettings,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_pending_events: DEFAULT_MAX_PENDING_EVENTS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            retry: RetrySettings::default(),
        }
    }
}

/// A retry schedule: delay before each attempt (the last repeats), and the
/// age after which an event is given up. Jitter of +/-20 % is always applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySettings {
    pub delays: Vec<Duration>,
    pub max_event_age: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            delays: DEFAULT_RETRY_DELAYS.to_vec(),
            max_event_age: DEFAULT_MAX_EVENT_AGE,
        }
    }
}

/// One webhook receiver. `Debug` shows the URL redacted ([`redacted_url`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Unique among the webhooks; `default` for a single `webhook:` section.
    pub name: String,
    /// An http or https URL.
    pub url: reqwest::Url,
    /// Sent verbatim as the `Authorization` header; `None` sends none.
    pub secret: Option<Secret>,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Which events go to this webhook.
    pub events: EventFilter,
    /// This webhook's retry schedule (the `delivery.retry` one unless overridden).
    pub retry: RetrySettings,
    /// Requests in flight at once (`delivery.max_in_flight` unless overridden).
    pub max_in_flight: usize,
    /// The body format when no `body` template is given.
    pub format: Format,
    /// wg-portal formats: add `ChangedFields` to `update` bodies.
    pub extended: bool,
    /// A template that replaces the format (`body:`).
    pub body: Option<Template>,
    /// `POST` (default) or `GET` (still with the body, as Defguard sends).
    pub method: HttpMethod,
    /// Free text shown by `wghook test`.
    pub description: Option<String>,
    /// Extra headers, in file order; values are templates (they may hold
    /// secrets: [`Template`]'s `Debug` never shows them).
    pub headers: Vec<(String, Template)>,
    /// Set when `url` is a template: each event's URL is rendered from it
    /// (then [`Webhook::url`] is the URL of a sample `peer.connect`, for display).
    pub url_template: Option<Template>,
    /// Authentication other than a verbatim `secret` (`auth:`); never both.
    pub auth: Option<Auth>,
    /// Standard Webhooks keys (`signing_secret`); several while rotating.
    pub signing_secrets: Vec<SigningKey>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Exhaustive, so a new field cannot be forgotten here.
        let Webhook {
            name,
            url,
            secret,
            timeout,
            events,
            retry,
            max_in_flight,
            format,
            extended,
            body,
            method,
            description,
            headers,
            url_template,
            auth,
            signing_secrets,
        } = self;
        f.debug_struct("Webhook")
            .field("name", name)
            .field("url", &redacted_url(url))
            .field("secret", secret)
            .field("timeout", timeout)
            .field("events", events)
            .field("retry", retry)
            .field("max_in_flight", max_in_flight)
            .field("format", format)
            .field("extended", extended)
            .field("body", body)
            .field("method", method)
            .field("description", description)
            .field("headers", headers)
            .field("url_template", url_template)
            .field("auth", auth)
            .field("signing_secrets", signing_secrets)
            .finish()
    }
}

/// The body format of a webhook (`format:`), see `docs/formats.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// wg-portal's webhook bodies (the default).
    #[default]
    WgPortal,
    /// wg-portal 2.1's: connect/disconnect as entity `peer_metric`.
    WgPortalV2,
    /// Standard Webhooks: `{"type", "timestamp", "data"}`.
    Standard,
}

impl Named for Format {
    const ALL: &'static [Self] = &[Format::WgPortal, Format::WgPortalV2, Format::Standard];
    fn name(self) -> &'static str {
        match self {
            Format::WgPortal => "wg-portal",
            Format::WgPortalV2 => "wg-portal-v2",
            Format::Standard => "standard",
        }
    }
}

/// The HTTP method of a webhook (`method:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HttpMethod {
    #[default]
    Post,
    /// GET with the body, as Defguard's webhooks do.
    Get,
    /// PUT, for APIs that name the resource in the URL (Matrix's `send`).
    Put,
}

/// How a webhook authenticates (`auth:`), besides a verbatim `secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer TOKEN`.
    Bearer(Secret),
    /// `Authorization: Basic base64(username:password)`.
    Basic { username: String, password: Secret },
    /// An OAuth 2.0 client-credentials token, cached until shortly before
    /// it expires.
    OAuth2(OAuth2),
}

/// `auth.oauth2`: where and how to get a token. `Debug` shows the token URL
/// redacted and the client secret as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuth2 {
    pub token_url: reqwest::Url,
    pub client_id: String,
    pub client_secret: Secret,
    /// Space-separated scopes; sent only when set.
    pub scope: Option<String>,
    /// How the client authenticates to the token endpoint.
    pub client_auth: ClientAuth,
}

impl fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let OAuth2 {
            token_url,
            client_id,
            client_secret,
            scope,
            client_auth,
        } = self;
        f.debug_struct("OAuth2")
            .field("token_url", &redacted_url(token_url))
            .field("client_id", client_id)
            .field("client_secret", client_secret)
            .field("scope", scope)
            .field("client_auth", client_auth)
            .finish()
    }
}

/// How client id and secret reach the token endpoint (`auth.oauth2.client_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`, which every server must accept).
    #[default]
    Basic,
    /// In the form body (`client_secret_post`).
    Body,
}

impl Named for ClientAuth {
    const ALL: &'static [Self] = &[ClientAuth::Basic, ClientAuth::Body];
    fn name(self) -> &'static str {
        match self {
            ClientAuth::Basic => "basic",
            ClientAuth::Body => "body",
        }
    }
}

/// Validates `delivery:`; a value in error keeps its default.
pub fn validate_delivery(raw: Option<&RawDelivery>, check: &mut Check) -> DeliverySettings {
    let mut out = DeliverySettings::default();
    let Some(raw) = raw else {
        return out;
    };
    if let Some(t) = &raw.max_pending_events {
        if let Some(n) = check.integer(t, 1, 100_000_000) {
            out.max_pending_events = n;
        }
    }
    if let Some(t) = &raw.shutdown_timeout {
        if let Some(d) = check.duration(t) {
            out.shutdown_timeout = d;
        }
    }
    if let Some(t) = &raw.max_in_flight {
        if let Some(n) = check.integer(t, 1, 1024) {
            out.max_in_flight = n as usize;
        }
    }
    let (retry, base) = (raw.retry.as_ref(), RetrySettings::default());
    if let Some(retry) = validate_retry(retry, "delivery.retry", &base, check) {
        out.retry = retry;
    }
    out
}

/// A `retry:` section; keys not given keep the values of `base`.
pub fn validate_retry(
    raw: Option<&RawRetry>,
    path: &str,
    base: &RetrySettings,
    check: &mut Check,
) -> Option<RetrySettings> {
    let mut out = base.clone();
    let Some(raw) = raw else {
        return Some(out);
    };
    let mut ok = true;
    if let Some(items) = &raw.delays {
        match check.list(Some(items), |c, t| c.duration(t)) {
            Some(delays) if delays.is_empty() => {
                let key = format!("{path}.delays");
                let message = "must list at least one delay (e.g. [0s, 5s, 30s])";
                check.error_at(check.key_line(&key), &key, message);
                ok = false;
            }
            Some(delays) => out.delays = delays,
            None => ok = false,
        }
    }
    if let Some(t) = &raw.max_event_age {
        match check.duration_at_least(t, Duration::from_secs(1)) {
            Some(d) => out.max_event_age = d,
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A URL as it may be shown (logs, `Debug`, messages): scheme, host and an
/// explicit port, then `/…` when there is more. Userinfo, path, query and
/// fragment can hold credentials (a Slack or Discord webhook URL is its own
/// secret), so they are never shown.
pub fn redacted_url(url: &reqwest::Url) -> String {
    let mut out = format!("{}://", url.scheme());
    // IPv6 hosts come bracketed.
    out.push_str(url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    let more = url.path() != "/" || url.query().is_some() || url.fragment().is_some();
    out.push_str(if more { "/…" } else { "/" });
    out
}
