//! Validation of webhooks: [`RawWebhook`] -> [`Webhook`], every problem
//! reported. Templates (`body`, `headers`, a templated `url`) are compiled
//! here, once, and must render for a sample of every event kind. Secret
//! files were read before ([`SecretFiles`]); nothing here reads a file or
//! the clock.

use std::collections::HashMap;
use std::time::Duration;

use super::settings::{
    validate_retry, Auth, ClientAuth, DeliverySettings, Format, HttpMethod, OAuth2, RawAuth,
    RawBasic, RawOAuth2, RawWebhook, Webhook, DEFAULT_WEBHOOK_NAME, DEFAULT_WEBHOOK_TIMEOUT,
};
use super::signing::SigningKey;
use crate::event::filter::EventFilter;
use crate::event::template::{sample_context, sample_event, sample_time, Mode, Template};
use crate::settings::{join_key, Check, Secret, SecretFiles, Text};

/// Headers wghook sets itself: a `headers` entry may not replace them.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-length",
    "host",
    "transfer-encoding",
];

/// The webhooks of `webhook:` (one) or `webhooks:` (a list, names unique).
pub fn validate_webhooks(
    single: Option<&RawWebhook>,
    list: Option<&Vec<RawWebhook>>,
    delivery: &DeliverySettings,
    files: &SecretFiles,
    check: &mut Check,
) -> Vec<Webhook> {
    if single.is_some() && list.is_some() {
        let message = format!(
            "both webhook (line {}) and webhooks are set; use webhook for one receiver \
             or a webhooks list for several",
            check.key_line("webhook")
        );
        check.error_at(check.key_line("webhooks"), "webhooks", message);
        return Vec::new();
    }
    let mut v = Validator {
        check,
        files,
        delivery,
    };
    if let Some(raw) = single {
        return v.webhook(raw, "webhook", false).into_iter().collect();
    }
    // Every item is read (so all its errors are reported) before names are compared.
    let hooks: Vec<Option<Webhook>> = list
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, raw)| v.webhook(raw, &format!("webhooks[{i}]"), true))
        .collect();
    let mut out: Vec<Webhook> = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (i, hook) in hooks.into_iter().enumerate() {
        let Some(hook) = hook else {
            continue;
        };
        let key = format!("webhooks[{i}].name");
        let name_line = v.check.key_line(&key);
        if let Some(first) = first_line.get(&hook.name) {
            let message = format!(
                "duplicate webhook name {:?} (first at line {first})",
                hook.name
            );
            v.check.error_at(name_line, &key, message);
            continue;
        }
        first_line.insert(hook.name.clone(), name_line);
        out.push(hook);
    }
    out
}

/// What [`Validator::extras`] reads.
#[derive(Default)]
struct Extras {
    format: Format,
    extended: bool,
    body: Option<Template>,
    method: HttpMethod,
    description: Option<String>,
    headers: Vec<(String, Template)>,
    auth: Option<Auth>,
    signing_secrets: Vec<SigningKey>,
}

struct Validator<'c> {
    check: &'c mut Check,
    files: &'c SecretFiles,
    delivery: &'c DeliverySettings,
}

impl Validator<'_> {
    /// One webhook at `path` (`webhook` or `webhooks[i]`).
    fn webhook(&mut self, m: &RawWebhook, path: &str, in_list: bool) -> Option<Webhook> {
        let mut ok = true;
        let line = self.check.key_line(path);
        let child = |key: &str| join_key(path, key);

        let name = match &m.name {
            Some(t) => self.webhook_name(t),
            None if in_list => {
                let message = "required in a webhooks list (letters, digits, _ and -)";
                self.check.error_at(line, &child("name"), message);
                None
            }
            None => Some(DEFAULT_WEBHOOK_NAME.to_string()),
        };
        ok &= name.is_some();

        let url = match &m.url {
            Some(t) => self.webhook_url(t),
            None => {
                self.check
                    .error_at(line, &child("url"), "required (an http or https URL)");
                None
            }
        };
        ok &= url.is_some();

        let value = self.check.aliased(
            ("secret", m.secret.as_ref()),
            ("authentication", m.authentication.as_ref()),
        );
        let file = self.check.aliased(
            ("secret_file", m.secret_file.as_ref()),
            ("authentication_file", m.authentication_file.as_ref()),
        );
        let secret = self.secret_entry(value, file, true);
        ok &= secret.is_some();
        let secret = secret.flatten();

        let timeout = match &m.timeout {
            Some(t) => self.check.duration_at_least(t, Duration::from_nanos(1)),
            None => Some(DEFAULT_WEBHOOK_TIMEOUT),
        };
        ok &= timeout.is_some();

        // Each pattern parsed once, its error at its own line.
        let mut filter = EventFilter::all();
        let events = self.check.list(m.events.as_ref(), |check, t| {
            let text = check.text(t)?;
            filter.push(&text).map_err(|e| check.error(t, e)).ok()
        });
        let events = events.map(|_| filter);
        ok &= events.is_some();
        let retry = validate_retry(
            m.retry.as_ref(),
            &child("retry"),
            &self.delivery.retry,
            self.check,
        );
        ok &= retry.is_some();
        let max_in_flight = match &m.max_in_flight {
            Some(t) => self.check.integer(t, 1, 1024).map(|n| n as usize),
            None => Some(self.delivery.max_in_flight),
        };
        ok &= max_in_flight.is_some();

        let extras = self.extras(m, path, secret.is_some());
        ok &= extras.is_some();

        // reqwest sends a URL's user info as `Authorization: Basic`; a
        // secret or auth would add a second Authorization header.
        if let (Some((url, _)), Some(extras), Some(t)) = (&url, &extras, &m.url) {
            let secrets = [
                ("secret", m.secret.as_ref()),
                ("authentication", m.authentication.as_ref()),
                ("secret_file", m.secret_file.as_ref()),
                ("authentication_file", m.authentication_file.as_ref()),
            ];
            let authorization = secrets
                .into_iter()
                .filter(|_| secret.is_some())
                .find_map(|(key, t)| t.map(|t| (key, t.line)))
                .or_else(|| {
                    let auth_line = self.check.key_line(&child("auth"));
                    extras.auth.as_ref().map(|_| ("auth", auth_line))
                });
            if let (true, Some((key, key_line))) = (has_userinfo(url), authorization) {
                let message = format!(
                    "the URL has a user name or password, sent as Basic authorization, and {key} \
                     (line {key_line}) sets the Authorization header too; keep one (remove the user \
                     info from the URL, or remove {key})",
                );
                self.check.error(t, message);
                ok = false;
            }
        }

        match (name, url, timeout, events, retry, max_in_flight, extras) {
            (
                Some(name),
                Some((url, url_template)),
                Some(timeout),
                Some(events),
                Some(retry),
                Some(max_in_flight),
                Some(extras),
            ) if ok => Some(Webhook {
                name,
                url,
                secret,
                timeout,
                events,
                retry,
                max_in_flight,
                format: extras.format,
                extended: extras.extended,
                body: extras.body,
                method: extras.method,
                description: extras.description,
                headers: extras.headers,
                url_template,
                auth: extras.auth,
                signing_secrets: extras.signing_secrets,
            }),
            _ => None,
        }
    }

    /// Formats, templates, auth and signing, all read so that every error
    /// is reported. `has_secret`: a verbatim secret is set.
    fn extras(&mut self, m: &RawWebhook, path: &str, has_secret: bool) -> Option<Extras> {
        let mut ok = true;
        let mut out = Extras::default();

        if let Some(t) = &m.format {
            match self.check.pick(t) {
                Some(f) => out.format = f,
                None => ok = false,
            }
            if let Some(body) = &m.body {
                let message = format!(
                    "both format and body (line {}) are set; body replaces the format, keep one",
                    body.line
                );
                self.check.error(t, message);
                ok = false;
            }
        }
        if let Some(t) = &m.extended {
            match self.check.boolean(t) {
                Some(b) => out.extended = b,
                None => ok = false,
            }
            if out.extended && (out.format == Format::Standard || m.body.is_some()) {
                let message = "only used with format wg-portal or wg-portal-v2 (remove it)";
                self.check.error(t, message);
                ok = false;
            }
        }
        if let Some(t) = &m.method {
            match self.check.text(t).map(|t| t.trim().to_ascii_uppercase()) {
                Some(m) if m == "POST" => out.method = HttpMethod::Post,
                Some(m) if m == "GET" => out.method = HttpMethod::Get,
                Some(m) if m == "PUT" => out.method = HttpMethod::Put,
                Some(m) => {
                    self.check
                        .error(t, format!("invalid value {m:?} (use POST, GET or PUT)"));
                    ok = false;
                }
                None => ok = false,
            }
        }
        if let Some(t) = &m.description {
            match self.check.text(t) {
                Some(text) => {
                    out.description = Some(text.trim().to_string()).filter(|t| !t.is_empty())
                }
                None => ok = false,
            }
        }

        let mut json_body = true;
        if let Some(headers) = &m.headers {
            match self.headers(headers, &join_key(path, "headers")) {
                Some((headers, json)) => {
                    out.headers = headers;
                    json_body = json;
                }
                None => ok = false,
            }
        }
        if let Some(t) = &m.body {
            let mode = if json_body { Mode::Json } else { Mode::Text };
            match self.template(t, mode, |out| {
                if mode != Mode::Json {
                    return Ok(());
                }
                serde_json::from_str::<serde::de::IgnoredAny>(out)
                    .map(|_| ())
                    .map_err(|e| {
                        format!(
                            "the body is not valid JSON ({e}); quote text fields (\"{{{{ peer.name }}}}\"), \
                             use |tojson for lists, or set a Content-Type header that is not JSON"
                        )
                    })
            }) {
                Some(t) => out.body = Some(t),
                None => ok = false,
            }
        }

        if let Some(auth) = &m.auth {
            let auth_key = join_key(path, "auth");
            let auth_line = self.check.key_line(&auth_key);
            if has_secret {
                let (key, line) = match (&m.secret, &m.authentication) {
                    (Some(t), _) => ("secret", t.line),
                    (None, Some(t)) => ("authentication", t.line),
                    // From a file: the first key that names one.
                    (None, None) => m
                        .secret_file
                        .as_ref()
                        .map(|t| ("secret_file", t.line))
                        .or_else(|| {
                            m.authentication_file
                                .as_ref()
                                .map(|t| ("authentication_file", t.line))
                        })
                        .unwrap_or(("secret", auth_line)),
                };
                let message = format!("both {key} (line {line}) and auth are set; keep one");
                self.check.error_at(auth_line, &auth_key, message);
                ok = false;
            }
            match self.auth(auth, &auth_key, auth_line) {
                Some(auth) => out.auth = Some(auth),
                None => ok = false,
            }
        }

        for (many, from_file) in [(&m.signing_secret, false), (&m.signing_secret_file, true)] {
            for t in many.iter().flat_map(|many| many.0.iter()) {
                let value = if from_file {
                    self.secret_file(t, false)
                } else {
                    self.check.text(t).map(|t| Some(Secret::new(t)))
                };
                let Some(Some(value)) = value else {
                    ok = false;
                    continue;
                };
                match SigningKey::parse(value.expose()) {
                    Ok(k) => out.signing_secrets.push(k),
                    Err(e) => {
                        self.check.error(t, e.to_string());
                        ok = false;
                    }
                }
            }
        }
        ok.then_some(out)
    }

    /// A webhook URL; with `{{`/`{%` in it, a template rendered per event.
    fn webhook_url(&mut self, t: &Text) -> Option<(reqwest::Url, Option<Template>)> {
        let is_template = t
            .value()
            .is_some_and(|text| text.contains("{{") || text.contains("{%"));
        if !is_template {
            return self.url(t).map(|url| (url, None));
        }
        let template = self.template(t, Mode::Url, |out| check_url(out.trim()).map(|_| ()))?;
        let sample = sample_event("peer.connect", "example-host", sample_time())
            .and_then(|e| template.render(&e, &sample_context()).ok())
            .and_then(|out| check_url(out.trim()).ok());
        match sample {
            Some(url) => Some((url, Some(template))),
            None => {
                self.check
                    .error(t, "the URL template does not render a valid URL");
                None
            }
        }
    }

    /// Compiles and checks a template; `validate` judges each sample output.
    fn template<K>(
        &mut self,
        t: &Text<K>,
        mode: Mode,
        validate: impl FnMut(&str) -> Result<(), String>,
    ) -> Option<Template> {
        let source = self.check.text(t)?;
        let result =
            Template::compile(&source, mode).and_then(|tpl| tpl.check(validate).map(|()| tpl));
        match result {
            Ok(tpl) => Some(tpl),
            Err(e) => {
                self.check.error(t, format!("invalid template: {e}"));
                None
            }
        }
    }

    /// `headers:`: name -> template. Also tells whether the body is JSON
    /// (no Content-Type header, or one that says json).
    fn headers(
        &mut self,
        headers: &indexmap::IndexMap<String, Option<Text<crate::settings::kind::Tmpl>>>,
        path: &str,
    ) -> Option<(Vec<(String, Template)>, bool)> {
        let mut ok = true;
        let mut out: Vec<(String, Template)> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        let mut json = true;
        for (raw_name, value) in headers {
            let key = format!("{path}.{raw_name:?}");
            let key_line = self.check.key_line(&key);
            let name = raw_name.trim().to_ascii_lowercase();
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                let message = "invalid header name (letters, digits and -, e.g. X-Event)";
                self.check.error_at(key_line, &key, message);
                ok = false;
                continue;
            }
            if RESERVED_HEADERS.contains(&name.as_str()) {
                let message = if name == "authorization" {
                    "set by wghook: use secret or auth for the Authorization header"
                } else {
                    "set by wghook; it cannot be replaced"
                };
                self.check.error_at(key_line, &key, message);
                ok = false;
                continue;
            }
            if let Some(first) = seen.iter().find(|n| n.eq_ignore_ascii_case(&name)) {
                let message = format!("the same header as {first:?} (header names ignore case)");
                self.check.error_at(key_line, &key, message);
                ok = false;
                continue;
            }
            seen.push(raw_name.trim().to_string());
            let Some(value) = value else {
                let message = "expected a value (a string or a template)";
                self.check.error_at(key_line, &key, message);
                ok = false;
                continue;
            };
            let Some(template) = self.template(value, Mode::Text, |_| Ok(())) else {
                ok = false;
                continue;
            };
            if name == "content-type" {
                if let Some(text) = value.value() {
                    json = text.to_ascii_lowercase().contains("json");
                }
            }
            out.push((raw_name.trim().to_string(), template));
        }
        ok.then_some((out, json))
    }

    /// `auth:`: exactly one of bearer, basic, oauth2.
    fn auth(&mut self, m: &RawAuth, path: &str, line: usize) -> Option<Auth> {
        let given: Vec<(&str, usize)> = [
            (
                "bearer",
                m.bearer.as_ref().or(m.bearer_file.as_ref()).map(|t| t.line),
            ),
            (
                "basic",
                m.basic
                    .as_ref()
                    .map(|_| self.check.key_line(&join_key(path, "basic"))),
            ),
            (
                "oauth2",
                m.oauth2
                    .as_ref()
                    .map(|_| self.check.key_line(&join_key(path, "oauth2"))),
            ),
        ]
        .into_iter()
        .filter_map(|(key, line)| line.map(|line| (key, line)))
        .collect();
        match given.as_slice() {
            [] => {
                let message = "give one of bearer (or bearer_file), basic or oauth2";
                self.check.error_at(line, path, message);
                None
            }
            [("bearer", _)] => {
                let t = m.bearer.as_ref().or(m.bearer_file.as_ref())?;
                match self.secret_entry(m.bearer.as_ref(), m.bearer_file.as_ref(), true)? {
                    Some(token) if token.expose().starts_with("Bearer ") => {
                        let message = "give the token alone: wghook adds \"Bearer \"";
                        self.check.error(t, message);
                        None
                    }
                    Some(token) => Some(Auth::Bearer(token)),
                    None => {
                        self.check.error(t, "must not be empty");
                        None
                    }
                }
            }
            [("basic", line)] => self.basic(m.basic.as_ref()?, &join_key(path, "basic"), *line),
            [(_, line)] => self.oauth2(m.oauth2.as_ref()?, &join_key(path, "oauth2"), *line),
            [(first, first_line), (second, second_line), ..] => {
                let message =
                    format!("both {first} (line {first_line}) and {second} are set; give one");
                self.check
                    .error_at(*second_line, &join_key(path, second), message);
                None
            }
        }
    }

    fn basic(&mut self, m: &RawBasic, path: &str, line: usize) -> Option<Auth> {
        let username = match &m.username {
            Some(t) => {
                let name = self.check.text(t)?;
                if name.contains(':') {
                    let message =
                        "must not contain : (HTTP Basic separates user and password with it)";
                    self.check.error(t, message);
                    return None;
                }
                Some(name)
            }
            None => {
                self.check
                    .error_at(line, &join_key(path, "username"), "required");
                None
            }
        };
        let password = match self.secret_entry(m.password.as_ref(), m.password_file.as_ref(), false)
        {
            Some(Some(p)) => Some(p),
            Some(None) => {
                let message = "required (or password_file)";
                self.check
                    .error_at(line, &join_key(path, "password"), message);
                None
            }
            None => None,
        };
        Some(Auth::Basic {
            username: username?,
            password: password?,
        })
    }

    fn oauth2(&mut self, m: &RawOAuth2, path: &str, line: usize) -> Option<Auth> {
        let mut ok = true;
        let token_url = match &m.token_url {
            Some(t) => self.url(t),
            None => {
                let message = "required (the token endpoint's URL)";
                self.check
                    .error_at(line, &join_key(path, "token_url"), message);
                None
            }
        };
        ok &= token_url.is_some();
        let client_id = match &m.client_id {
            Some(t) => self.check.text(t),
            None => {
                self.check
                    .error_at(line, &join_key(path, "client_id"), "required");
                None
            }
        };
        ok &= client_id.is_some();
        let client_secret = match self.secret_entry(
            m.client_secret.as_ref(),
            m.client_secret_file.as_ref(),
            false,
        ) {
            Some(Some(s)) => Some(s),
            Some(None) => {
                let message = "required (or client_secret_file)";
                self.check
                    .error_at(line, &join_key(path, "client_secret"), message);
                None
            }
            None => None,
        };
        ok &= client_secret.is_some();
        let scope = match &m.scope {
            Some(t) => self
                .check
                .text(t)
                .map(|s| Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            None => Some(None),
        };
        ok &= scope.is_some();
        let client_auth = match &m.client_auth {
            Some(t) => self.check.pick(t),
            None => Some(ClientAuth::Basic),
        };
        ok &= client_auth.is_some();
        if let (Some(url), Some(ClientAuth::Basic), Some(t)) =
            (&token_url, client_auth, &m.token_url)
        {
            if has_userinfo(url) {
                // reqwest would send the user info as a second Basic header.
                let message = "the token URL has a user name or password, and client_auth basic \
                               sends the client credentials as the Authorization header; remove \
                               the user info from the URL (or set client_auth: body)";
                self.check.error(t, message);
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        Some(Auth::OAuth2(OAuth2 {
            token_url: token_url?,
            client_id: client_id?,
            client_secret: client_secret?,
            scope: scope?,
            client_auth: client_auth?,
        }))
    }

    /// A secret given as a value or in a file. `Some(None)`: none given (or
    /// empty); `None`: an error was reported. `header`: the value is sent as
    /// a header as it is.
    fn secret_entry(
        &mut self,
        value: Option<&Text>,
        file: Option<&Text>,
        header: bool,
    ) -> Option<Option<Secret>> {
        match (value, file) {
            (Some(value), Some(file)) => {
                let last = |key: &str| key.rsplit('.').next().unwrap_or(key).to_string();
                let message = format!(
                    "both {} (line {}) and {} are set; keep one",
                    last(&value.key),
                    value.line,
                    last(&file.key),
                );
                self.check.error(file, message);
                None
            }
            (Some(t), None) if header => self.secret(t),
            (Some(t), None) => {
                let value = self.check.text(t)?;
                Some(Some(Secret::new(value)).filter(|s| !s.expose().is_empty()))
            }
            (None, Some(t)) => self.secret_file(t, header),
            (None, None) => Some(None),
        }
    }

    /// The secret a file holds (read before validation); one trailing line
    /// break is not part of the secret.
    fn secret_file<K>(&mut self, t: &Text<K>, header: bool) -> Option<Option<Secret>> {
        let file = self.check.path(t)?;
        let text = match self.files.get(&file) {
            Ok(text) => text,
            Err(e) => {
                let message = format!("cannot read secret file {}: {e}", file.display());
                self.check.error(t, message);
                return None;
            }
        };
        let value = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(text);
        if value.is_empty() {
            let message = format!("secret file {} is empty", file.display());
            self.check.error(t, message);
            return None;
        }
        if header && reqwest::header::HeaderValue::from_str(value).is_err() {
            let message = format!(
                "secret file {} contains characters not allowed in an HTTP header \
                 (line breaks or other control characters)",
                file.display()
            );
            self.check.error(t, message);
            return None;
        }
        Some(Some(Secret::new(value.to_string())))
    }

    fn webhook_name(&mut self, t: &Text) -> Option<String> {
        let name = self.check.text(t)?;
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid {
            return Some(name);
        }
        let message = format!("invalid name {name:?} (use letters, digits, _ and -)");
        self.check.error(t, message);
        None
    }

    fn url(&mut self, t: &Text) -> Option<reqwest::Url> {
        let text = self.check.text(t)?;
        if text.trim().is_empty() {
            self.check.error(t, "required (an http or https URL)");
            return None;
        }
        match reqwest::Url::parse(text.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
            Ok(url) => {
                // Only the scheme is quoted: the rest may hold credentials.
                let message = format!(
                    "unsupported URL scheme {:?} (use http or https)",
                    url.scheme()
                );
                self.check.error(t, message);
                None
            }
            Err(e) => {
                // Never the text itself: after `${VAR}` it may hold
                // credentials, and a path or query may be the secret.
                let message = format!(
                    "invalid URL{}: {e} (use e.g. https://example.com/hook)",
                    unparsed_url_origin(text.trim())
                        .map(|o| format!(" {o:?}"))
                        .unwrap_or_default()
                );
                self.check.error(t, message);
                None
            }
        }
    }

    /// `Some(None)`: no secret (absent or empty, as wg-portal writes it).
    /// Errors never quote the value.
    fn secret(&mut self, t: &Text) -> Option<Option<Secret>> {
        let value = self.check.text(t)?;
        if value.is_empty() {
            return Some(None);
        }
        if reqwest::header::HeaderValue::from_str(&value).is_err() {
            let message = "contains characters not allowed in an HTTP header \
                           (line breaks or other control characters)";
            self.check.error(t, message);
            return None;
        }
        Some(Some(Secret::new(value)))
    }
}

/// An http or https URL, or why not (the message quotes only the scheme).
fn check_url(text: &str) -> Result<reqwest::Url, String> {
    match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(url),
        Ok(url) => Err(format!(
            "the URL's scheme {:?} is not http or https",
            url.scheme()
        )),
        Err(e) => Err(format!("not a valid URL ({e})")),
    }
}

/// True if `url` has user info (`https://user:pass@host/`), which reqwest
/// sends as an `Authorization: Basic` header.
fn has_userinfo(url: &reqwest::Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// What of a URL that did not parse may be quoted in a message: the scheme
/// and host (`https://hooks.example.com`), if they look like a scheme and a
/// host; `None` if not. Never the userinfo, port, path, query or fragment.
fn unparsed_url_origin(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return None;
    }
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or("");
    // The userinfo ends at the last `@` of the authority.
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        // An IPv6 literal: up to its `]`, which must be there.
        Some(inner) => {
            let (address, _) = inner.split_once(']')?;
            if address.is_empty()
                || !address
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
            {
                return None;
            }
            &host_port[..address.len() + 2]
        }
        None => host_port.split(':').next().unwrap_or(""),
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')));
    host_ok.then(|| format!("{}://{host}", scheme.to_ascii_lowercase()))
}
