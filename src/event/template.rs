//! Templates for a webhook's `body`, `headers` and `url` (minijinja, Jinja2
//! syntax): the fields an event offers to them, how values are escaped, and
//! the checks run when the configuration is loaded.
//!
//! Responsibilities: compiling a template once ([`Template::compile`]);
//! rendering it for an event ([`Template::render`]); refusing, at load time,
//! templates that name an unknown field or fail on any sample event
//! ([`Template::check`]); the sample events `wghook test` sends.
//!
//! Invariants:
//! - Every event offers the same fields ([`FIELDS`]); a field that does not
//!   apply to an event is `none` (rendered as nothing, `null` with `tojson`),
//!   an empty string, an empty list or 0. So a template that renders for every
//!   sample event renders for every real one (strict undefined: a misspelt
//!   field is an error, never silently empty).
//! - Escaping follows the [`Mode`]: inside a JSON body every `{{ value }}` is
//!   escaped for a JSON string; in a URL it is percent-encoded; `|safe` and
//!   `|tojson` output is written as is.
//! - Errors never quote the template's text (a header template may hold a
//!   token): they name the problem and the template line.
//! - Rendering is bounded: at most [`FUEL`] engine steps (so three nested
//!   `range(1000)` loops fail at once instead of running for hours, and
//!   strings doubled in a loop cannot exhaust memory) and at most
//!   [`MAX_OUTPUT`] bytes of output. Past either, the render is an error
//!   ([`Template::render`] fails; [`Template::check`] refuses the template).

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use minijinja::value::{Enumerator, Object, ObjectRepr, Serde, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};
use serde::Serialize;

use super::wg_portal::go_time;
use super::{
    standard, Entity, Event, EventKind, InterfaceInfo, PeerInfo, PeerLabel, RenderContext, Session,
};
use crate::model::{DriverKind, Peer, PublicKey};

/// Every field a template can use, as dotted paths (documented in
/// docs/formats.md, section "Body templates", "Fields").
pub const FIELDS: &[&str] = &[
    "id",
    "event",
    "entity",
    "kind",
    "type",
    "host",
    "time",
    "timestamp",
    "sequence",
    "identifier",
    "changed",
    "interface.name",
    "interface.display_name",
    "interface.public_key",
    "interface.listen_port",
    "interface.fwmark",
    "interface.driver",
    "interface.addresses",
    "interface.mtu",
    "peer.name",
    "peer.user",
    "peer.public_key",
    "peer.endpoint",
    "peer.allowed_ips",
    "peer.persistent_keepalive",
    "peer.has_preshared_key",
    "peer.last_handshake",
    "peer.rx_bytes",
    "peer.tx_bytes",
    "peer.pingable",
    "peer.last_ping",
    "peer.created_at",
    "peer.updated_at",
    "peer.labels",
    "session.started_at",
    "session.ended_at",
    "session.duration",
    "session.rx_bytes",
    "session.tx_bytes",
];

/// Global functions of the engine a template may call.
const GLOBALS: &[&str] = &["range", "dict", "namespace", "debug", "loop"];

/// The one template name inside each environment.
const NAME: &str = "template";

/// Engine steps (minijinja "fuel") one render may take. An instruction is
/// one step and every 64 bytes of text or data the engine builds (output,
/// `~`, `*`, filter results) another, so this bounds time and memory alike:
/// empty nested loops use it up in about 0.2 s in a debug build, and a
/// render cannot build more than 64 MB. The shipped example bodies
/// (config/examples/) take 34 to 57 steps.
pub const FUEL: u64 = 1_000_000;

/// Largest output of one render (a body, a header or a URL).
pub const MAX_OUTPUT: usize = 1 << 20;

/// How `{{ value }}` output is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// A JSON body: values are escaped for the inside of a JSON string
    /// (`"text": "{{ peer.name }}"`); `|tojson` gives a whole JSON value.
    Json,
    /// Plain text (headers, non-JSON bodies): no escaping.
    Text,
    /// A URL: values are percent-encoded (RFC 3986 unreserved characters
    /// stay as they are).
    Url,
}

/// A compiled template. Cloning is cheap (the compiled form is shared).
/// `Debug` shows only its length: a header template may hold a secret.
#[derive(Clone)]
pub struct Template {
    source: Arc<str>,
    mode: Mode,
    env: Arc<Environment<'static>>,
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode && self.source == other.source
    }
}

impl Eq for Template {}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?}, {} bytes)", self.mode, self.source.len())
    }
}

impl Template {
    /// Compiles `source`; the error names the problem and its template line.
    pub fn compile(source: &str, mode: Mode) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_debug(false);
        env.set_fuel(Some(FUEL));
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(move |_| match mode {
            Mode::Json => AutoEscape::Custom("json-string".into()),
            Mode::Url => AutoEscape::Custom("url".into()),
            Mode::Text => AutoEscape::None,
        });
        env.set_formatter(format_value);
        env.add_filter("duration", duration_filter);
        env.add_filter("filesizeformat", filesizeformat);
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| describe(&e))?;
        Ok(Self {
            source: Arc::from(source),
            mode,
            env: Arc::new(env),
        })
    }

    /// How this template's output is escaped.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Renders the template for `event`.
    pub fn render(&self, event: &Event, ctx: &RenderContext) -> Result<String, String> {
        self.render_value(Value::from(Serde(context(event, ctx))))
    }

    fn render_value(&self, value: Value) -> Result<String, String> {
        let template = self.env.get_template(NAME).map_err(|e| describe(&e))?;
        let mut out = Bounded {
            buf: Vec::new(),
            overflow: false,
        };
        match template.render_captured_to(value, &mut out) {
            // The engine writes whole `str`s: the bytes are UTF-8.
            Ok(_) => String::from_utf8(out.buf).map_err(|_| "output is not UTF-8".to_string()),
            Err(_) if out.overflow => Err(format!(
                "the output is larger than {} MiB (simplify the template)",
                MAX_OUTPUT >> 20
            )),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(format!(
                "rendering took more than {FUEL} steps (loops too long or nested \
                 too deep, or too much text built; simplify the template)"
            )),
            Err(e) => Err(describe(&e)),
        }
    }

    /// The load-time check: every field the template names exists, and it
    /// renders for every sample event (each kind, with everything known and
    /// with as little as possible known), each output accepted by `validate`.
    pub fn check(
        &self,
        mut validate: impl FnMut(&str) -> Result<(), String>,
    ) -> Result<(), String> {
        let template = self.env.get_template(NAME).map_err(|e| describe(&e))?;
        let mut unknown: Vec<String> = template
            .undeclared_variables(true)
            .into_iter()
            .filter_map(|path| unknown_field(&path))
            .collect();
        unknown.sort();
        if let Some(first) = unknown.first() {
            return Err(first.clone());
        }
        let ctx = sample_context();
        for (event, sparse) in samples() {
            let name = event.filter_name();
            let sparse = if sparse { " (sparse)" } else { "" };
            let out = self
                .render(&event, &ctx)
                .map_err(|e| format!("{e}, for a sample {name} event{sparse}"))?;
            validate(&out).map_err(|e| format!("{e}, for a sample {name} event{sparse}"))?;
        }
        Ok(())
    }
}

/// The render's output, refusing to grow past [`MAX_OUTPUT`].
struct Bounded {
    buf: Vec<u8>,
    overflow: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > MAX_OUTPUT {
            self.overflow = true;
            return Err(std::io::Error::other("output too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `None` if `path` (`peer.name`, `event`) is a known field (or a global
/// function); else the message saying what is known.
fn unknown_field(path: &str) -> Option<String> {
    let top = path.split('.').next().unwrap_or(path);
    if GLOBALS.contains(&top) {
        return None;
    }
    let children: Vec<&str> = FIELDS
        .iter()
        .filter_map(|f| f.strip_prefix(top).and_then(|rest| rest.strip_prefix('.')))
        .collect();
    let top_known = FIELDS.contains(&top) || !children.is_empty();
    if !top_known {
        let tops: Vec<&str> = FIELDS
            .iter()
            .map(|f| f.split('.').next().unwrap_or(f))
            .fold(Vec::new(), |mut acc, t| {
                if !acc.contains(&t) {
                    acc.push(t);
                }
                acc
            });
        return Some(format!(
            "unknown field {top:?} (known fields: {})",
            tops.join(", ")
        ));
    }
    let second = path.split('.').nth(1)?;
    if children.is_empty() || children.contains(&second) {
        // Deeper lookups on strings and numbers fail in the sample render.
        return None;
    }
    Some(format!(
        "unknown field \"{top}.{second}\" ({top} has: {})",
        children.join(", ")
    ))
}

/// An engine error in one line: what, and where in the template.
fn describe(e: &Error) -> String {
    let mut out = e.kind().to_string();
    if let Some(detail) = e.detail() {
        out.push_str(": ");
        out.push_str(detail);
    }
    if let Some(line) = e.line() {
        let _ = write!(out, " (template line {line})");
    }
    out
}

/// Writes a value according to the template's auto-escape mode; `none` and
/// undefined (where allowed) write nothing.
fn format_value(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    if value.is_none() || value.is_undefined() {
        return Ok(());
    }
    let text = match value.as_str() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(value.to_string()),
    };
    if value.is_safe() {
        return out.write_str(&text).map_err(Error::from);
    }
    match state.auto_escape() {
        AutoEscape::Custom(name) if name == "json-string" => out
            .write_str(&json_string_content(&text))
            .map_err(Error::from),
        AutoEscape::Custom(name) if name == "url" => {
            out.write_str(&percent_encode(&text)).map_err(Error::from)
        }
        _ => out.write_str(&text).map_err(Error::from),
    }
}

/// `s` escaped for the inside of a JSON string (no surrounding quotes).
fn json_string_content(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default()
        .to_string()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `{{ session.duration|duration }}`: seconds as `2h7m5s`, `45s`, `0s`;
/// `none` gives nothing.
fn duration_filter(value: Value) -> Result<String, Error> {
    if value.is_none() {
        return Ok(String::new());
    }
    let secs = i64::try_from(value.clone()).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            "duration expects a number of seconds",
        )
    })?;
    let (sign, secs) = if secs < 0 {
        ("-", secs.unsigned_abs())
    } else {
        ("", secs.unsigned_abs())
    };
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = sign.to_string();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}s");
    Ok(out)
}

/// Jinja2's `filesizeformat`: `1860|filesizeformat` is `1.9 kB`, with
/// `binary=true` `1.8 KiB`.
/// `none` gives nothing (a field that does not apply).
fn filesizeformat(value: Value, binary: Option<bool>) -> Result<String, Error> {
    if value.is_none() {
        return Ok(String::new());
    }
    let value = f64::try_from(value).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            "filesizeformat expects a number of bytes",
        )
    })?;
    Ok(filesize(value, binary.unwrap_or(false)))
}

fn filesize(value: f64, binary: bool) -> String {
    let base: f64 = if binary { 1024.0 } else { 1000.0 };
    let prefixes = if binary {
        ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]
    } else {
        ["kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    };
    if value == 1.0 {
        return "1 Byte".into();
    }
    if value < base {
        return format!("{} Bytes", value as i64);
    }
    let mut unit = base;
    for prefix in prefixes {
        unit *= base;
        if value < unit {
            return format!("{:.1} {prefix}", base * value / unit);
        }
    }
    format!(
        "{:.1} {}",
        base * value / unit,
        prefixes[prefixes.len() - 1]
    )
}

// ---------------------------------------------------------------------------
// The fields.
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct Ctx<'a> {
    id: String,
    event: &'static str,
    entity: &'static str,
    kind: String,
    #[serde(rename = "type")]
    standard_type: &'static str,
    host: &'a str,
    time: String,
    timestamp: i64,
    sequence: u64,
    identifier: String,
    changed: Vec<&'static str>,
    interface: InterfaceCtx<'a>,
    peer: PeerCtx<'a>,
    session: SessionCtx,
}

#[derive(Serialize)]
struct InterfaceCtx<'a> {
    name: &'a str,
    display_name: &'a str,
    public_key: String,
    listen_port: u16,
    fwmark: u32,
    driver: &'static str,
    addresses: Vec<String>,
    mtu: Option<u32>,
}

#[derive(Serialize)]
struct PeerCtx<'a> {
    name: &'a str,
    user: &'a str,
    public_key: String,
    endpoint: String,
    allowed_ips: Vec<String>,
    persistent_keepalive: u16,
    has_preshared_key: bool,
    last_handshake: Option<String>,
    rx_bytes: u64,
    tx_bytes: u64,
    pingable: bool,
    last_ping: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
    labels: Value,
}

impl Default for PeerCtx<'_> {
    fn default() -> Self {
        Self {
            name: "",
            user: "",
            public_key: String::new(),
            endpoint: String::new(),
            allowed_ips: Vec::new(),
            persistent_keepalive: 0,
            has_preshared_key: false,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            pingable: false,
            last_ping: None,
            created_at: None,
            updated_at: None,
            labels: Value::from_object(Labels(BTreeMap::new())),
        }
    }
}

/// A peer's free labels: a map in which a label the peer does not have is
/// `""` (so `{{ peer.labels.site }}` works for every peer).
#[derive(Debug)]
struct Labels(BTreeMap<String, String>);

impl Object for Labels {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let value = key.as_str().and_then(|k| self.0.get(k));
        Some(Value::from(value.map_or("", String::as_str)))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.keys().map(|k| Value::from(k.as_str())).collect())
    }
}

#[derive(Serialize, Default)]
struct SessionCtx {
    started_at: Option<String>,
    ended_at: Option<String>,
    duration: Option<i64>,
    rx_bytes: Option<u64>,
    tx_bytes: Option<u64>,
}

/// The fields of `event`, as every template sees them.
fn context<'a>(event: &'a Event, ctx: &'a RenderContext) -> Ctx<'a> {
    let time = |t: DateTime<Utc>| go_time(t, ctx.zone);
    let iface = &event.interface;
    let peer = event
        .peer
        .as_ref()
        .map(|p| peer_ctx(p, ctx))
        .unwrap_or_default();
    let session = match event.session {
        Some(s) if matches!(event.kind, EventKind::Connect | EventKind::Disconnect) => SessionCtx {
            started_at: Some(time(s.started_at)),
            ended_at: s.ended_at.map(time),
            duration: Some(standard::session_seconds(event, &s)),
            rx_bytes: Some(s.rx_bytes),
            tx_bytes: Some(s.tx_bytes),
        },
        _ => SessionCtx::default(),
    };
    Ctx {
        id: event.id.to_string(),
        event: event.kind.as_str(),
        entity: event.entity.as_str(),
        kind: event.filter_name(),
        standard_type: standard::event_type(event),
        host: &event.host,
        time: time(event.time),
        timestamp: event.time.timestamp(),
        sequence: event.sequence,
        identifier: event.identifier(),
        changed: event.changed.iter().map(|f| f.snake_name()).collect(),
        interface: InterfaceCtx {
            name: &iface.name,
            display_name: ctx
                .interface_names
                .get(&iface.name)
                .map_or(iface.name.as_str(), String::as_str),
            public_key: iface.public_key.map(|k| k.to_base64()).unwrap_or_default(),
            listen_port: iface.listen_port,
            fwmark: iface.fwmark,
            driver: iface.driver.as_str(),
            addresses: iface.addresses.iter().map(ToString::to_string).collect(),
            mtu: iface.mtu,
        },
        peer,
        session,
    }
}

fn peer_ctx<'a>(p: &'a PeerInfo, ctx: &'a RenderContext) -> PeerCtx<'a> {
    let time = |t: DateTime<Utc>| go_time(t, ctx.zone);
    let peer = &p.peer;
    let label = ctx.peer_labels.get(&peer.public_key);
    PeerCtx {
        name: label.map_or("", |l| l.name.as_str()),
        user: label.map_or("", |l| l.user.as_str()),
        public_key: peer.public_key.to_base64(),
        endpoint: peer.endpoint.map(|e| e.to_string()).unwrap_or_default(),
        allowed_ips: peer.allowed_ips.iter().map(ToString::to_string).collect(),
        persistent_keepalive: peer.persistent_keepalive,
        has_preshared_key: peer.has_preshared_key,
        last_handshake: peer.last_handshake.map(time),
        rx_bytes: peer.rx_bytes,
        tx_bytes: peer.tx_bytes,
        pingable: p.pingable,
        last_ping: p.last_ping.map(time),
        created_at: Some(time(p.created_at)),
        updated_at: Some(time(p.updated_at)),
        labels: Value::from_object(Labels(label.map(|l| l.labels.clone()).unwrap_or_default())),
    }
}

// ---------------------------------------------------------------------------
// Sample events.
// ---------------------------------------------------------------------------

/// The public key of the sample peer (the wg-portal seed document's).
pub const SAMPLE_PEER_KEY: &str = "Fb5TaziAs1WrPBjC/MFbWsIelVXvi0hDKZ3YQM9wmU8=";

/// The name and user the sample peer is shown with.
pub fn sample_label() -> PeerLabel {
    // PeerLabel may grow fields: keep their defaults.
    #[allow(clippy::needless_update)]
    PeerLabel {
        name: "example-peer".into(),
        user: "example-user".into(),
        labels: [("site".to_string(), "berlin".to_string())].into(),
        ..PeerLabel::default()
    }
}

fn sample_key() -> PublicKey {
    PublicKey::from_base64(SAMPLE_PEER_KEY).unwrap_or_default()
}

/// A render context that names the sample peer.
pub fn sample_context() -> RenderContext {
    let mut ctx = RenderContext::default();
    ctx.peer_labels.insert(sample_key(), sample_label());
    ctx
}

/// A realistic event of `name` (`peer.connect`, `interface.delete`, ... as
/// in [`super::filter::EVENT_NAMES`]) on host `host` at `now`; `None` for an
/// unknown name.
pub fn sample_event(name: &str, host: &str, now: DateTime<Utc>) -> Option<Event> {
    let (entity, kind) = name.split_once('.')?;
    let entity = match entity {
        "peer" => Entity::Peer,
        "interface" => Entity::Interface,
        _ => return None,
    };
    let kind = match kind {
        "create" => EventKind::Create,
        "update" => EventKind::Update,
        "delete" => EventKind::Delete,
        "connect" if entity == Entity::Peer => EventKind::Connect,
        "disconnect" if entity == Entity::Peer => EventKind::Disconnect,
        _ => return None,
    };
    let started = now - TimeDelta::minutes(42);
    let handshake = match kind {
        EventKind::Connect => now,
        _ => now - TimeDelta::seconds(200),
    };
    let session = match kind {
        EventKind::Connect => Some(Session {
            started_at: now,
            ended_at: None,
            rx_bytes: 0,
            tx_bytes: 0,
        }),
        EventKind::Disconnect => Some(Session {
            started_at: started,
            ended_at: Some(now),
            rx_bytes: 1_860_123,
            tx_bytes: 10_824_456,
        }),
        _ => None,
    };
    let changed = match (kind, entity) {
        (EventKind::Update, Entity::Peer) => vec![super::ChangedField::Endpoint],
        (EventKind::Update, Entity::Interface) => vec![super::ChangedField::ListenPort],
        _ => Vec::new(),
    };
    let peer = (entity == Entity::Peer).then(|| PeerInfo {
        peer: Peer {
            public_key: sample_key(),
            endpoint: "198.51.100.7:51820".parse().ok(),
            allowed_ips: ["10.8.0.2/32", "fd00:8::2/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            persistent_keepalive: 25,
            has_preshared_key: false,
            last_handshake: Some(handshake),
            rx_bytes: 1_860_123,
            tx_bytes: 10_824_456,
        },
        created_at: now - TimeDelta::days(3),
        updated_at: now - TimeDelta::days(1),
        pingable: false,
        last_ping: None,
    });
    Some(Event {
        id: uuid::Uuid::now_v7(),
        kind,
        entity,
        time: now,
        host: host.to_string(),
        sequence: 7,
        interface: InterfaceInfo {
            name: "wg0".into(),
            public_key: PublicKey::from_base64("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=").ok(),
            listen_port: 51820,
            fwmark: 0,
            driver: DriverKind::Kernel,
            addresses: "10.8.0.1/24".parse().ok().into_iter().collect(),
            mtu: Some(1420),
            created_at: now - TimeDelta::days(30),
            updated_at: now - TimeDelta::days(30),
        },
        peer,
        changed,
        session,
    })
}

/// Every event kind twice: with everything known, and with as little known
/// as a real event can have (no endpoint, handshake, addresses or session).
/// The time of the sample events templates are checked with (fixed: a
/// check never reads the clock).
pub fn sample_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_751_000_000, 123_456_789).unwrap_or_default()
}

fn samples() -> Vec<(Event, bool)> {
    let now = sample_time();
    let mut out = Vec::new();
    for name in super::filter::EVENT_NAMES {
        let Some(full) = sample_event(name, "example-host", now) else {
            continue;
        };
        let mut sparse = full.clone();
        sparse.session = None;
        sparse.changed.clear();
        sparse.interface.public_key = None;
        sparse.interface.addresses.clear();
        sparse.interface.mtu = None;
        if let Some(p) = sparse.peer.as_mut() {
            p.peer.endpoint = None;
            p.peer.last_handshake = None;
            p.peer.allowed_ips.clear();
            p.peer.public_key = PublicKey([1; 32]);
        }
        out.push((full, false));
        out.push((sparse, true));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-26T21:04:33Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn render(source: &str, mode: Mode, name: &str) -> Result<String, String> {
        let t = Template::compile(source, mode)?;
        let event = sample_event(name, "vpn-1", now()).unwrap();
        t.render(&event, &sample_context())
    }

    /// Runs `f` on a thread and fails the test if it has not returned
    /// within `secs` (a regression must fail, not hang the suite).
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(std::time::Duration::from_secs(secs))
            .expect("rendering did not finish in time")
    }

    /// Regression (issue 11): three nested `range(1000)` loops hung
    /// `wghook check` (10^9 iterations).
    #[test]
    fn a_template_that_never_finishes_runs_out_of_fuel() {
        let source = "{% for a in range(1000) %}{% for b in range(1000) %}\
                      {% for c in range(1000) %}x{% endfor %}{% endfor %}{% endfor %}";
        let started = std::time::Instant::now();
        let (check, render) = within(60, move || {
            let t = Template::compile(source, Mode::Text).unwrap();
            let event = sample_event("peer.connect", "vpn-1", now()).unwrap();
            (t.check(|_| Ok(())), t.render(&event, &sample_context()))
        });
        let want = "rendering took more than 1000000 steps (loops too long or nested \
                    too deep, or too much text built; simplify the template)";
        assert_eq!(
            check.unwrap_err(),
            format!("{want}, for a sample peer.create event")
        );
        assert_eq!(render.unwrap_err(), want);
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    /// Text doubled in a loop (2^40 bytes after 40 rounds) runs out of
    /// fuel long before it runs out of memory.
    #[test]
    fn text_built_in_a_loop_runs_out_of_fuel_not_memory() {
        let source = "{% set ns = namespace(s='x') %}{% for i in range(40) %}\
                      {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}";
        let err = within(60, move || render(source, Mode::Text, "peer.connect")).unwrap_err();
        assert!(
            err.starts_with("rendering took more than 1000000 steps"),
            "{err}"
        );
    }

    /// Regression (issue 11): output had no bound (`"x" * n` renders
    /// n bytes, up to 100 MB per expression).
    #[test]
    fn output_over_the_limit_is_an_error() {
        let big = format!("{{{{ 'x' * {} }}}}", MAX_OUTPUT + 1);
        let err = within(60, move || render(&big, Mode::Text, "peer.connect")).unwrap_err();
        assert_eq!(
            err,
            "the output is larger than 1 MiB (simplify the template)"
        );
        let exact = format!("{{{{ 'x' * {MAX_OUTPUT} }}}}");
        assert_eq!(
            render(&exact, Mode::Text, "peer.connect").unwrap().len(),
            MAX_OUTPUT
        );
        // Many small writes add up the same way.
        let looped = "{% for i in range(20000) %}0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmn{% endfor %}";
        assert_eq!(
            render(looped, Mode::Text, "peer.connect").unwrap_err(),
            "the output is larger than 1 MiB (simplify the template)"
        );
    }

    #[test]
    fn fields_are_filled_from_the_event_and_the_names() {
        let out = render(
            "{{ event }} {{ entity }} {{ kind }} {{ type }} {{ host }} {{ peer.name }} {{ peer.user }} \
             {{ peer.public_key }} {{ peer.endpoint }} {{ peer.allowed_ips|join(',') }} \
             {{ interface.name }} {{ session.duration }} {{ session.rx_bytes }}",
            Mode::Text,
            "peer.disconnect",
        )
        .unwrap();
        assert_eq!(
            out,
            format!(
                "disconnect peer peer.disconnect peer.disconnected vpn-1 example-peer example-user \
                 {SAMPLE_PEER_KEY} 198.51.100.7:51820 10.8.0.2/32,fd00:8::2/128 wg0 2520 1860123"
            )
        );
    }

    #[test]
    fn fields_that_do_not_apply_render_as_nothing_or_null() {
        let out = render(
            "[{{ peer.name }}|{{ session.duration }}|{{ session.started_at|tojson }}|{{ peer.allowed_ips|length }}]",
            Mode::Text,
            "interface.create",
        )
        .unwrap();
        assert_eq!(out, "[||null|0]");
    }

    #[test]
    fn json_bodies_escape_values_for_a_json_string() {
        let t = Template::compile(
            r#"{"text": "{{ peer.name }} on {{ host }}", "ips": {{ peer.allowed_ips|tojson }}, "n": {{ session.rx_bytes }}}"#,
            Mode::Json,
        )
        .unwrap();
        let mut event = sample_event("peer.disconnect", "h\"ost\n", now()).unwrap();
        event.host = "evil\"host\\\n".into();
        let mut ctx = sample_context();
        for label in ctx.peer_labels.values_mut() {
            label.name = "al\"ice </script>".into();
        }
        let out = t.render(&event, &ctx).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["text"], "al\"ice </script> on evil\"host\\\n");
        assert_eq!(
            v["ips"],
            serde_json::json!(["10.8.0.2/32", "fd00:8::2/128"])
        );
        assert_eq!(v["n"], 1860123);
    }

    #[test]
    fn urls_percent_encode_values_unless_safe() {
        let out = render(
            "https://x.example/{{ entity }}/{{ event }}?who={{ peer.endpoint }}&raw={{ 'a/b'|safe }}",
            Mode::Url,
            "peer.connect",
        )
        .unwrap();
        assert_eq!(
            out,
            "https://x.example/peer/connect?who=198.51.100.7%3A51820&raw=a/b"
        );
    }

    #[test]
    fn filters_format_durations_and_sizes() {
        let out = render(
            "{{ session.duration|duration }} {{ session.rx_bytes|filesizeformat }} \
             {{ session.tx_bytes|filesizeformat(true) }} {{ 1|filesizeformat }} {{ 45|duration }} {{ 3600|duration }}",
            Mode::Text,
            "peer.disconnect",
        )
        .unwrap();
        assert_eq!(out, "42m0s 1.9 MB 10.3 MiB 1 Byte 45s 1h0m0s");
        let out = render(
            "[{{ session.duration|duration }}|{{ session.rx_bytes|filesizeformat }}]",
            Mode::Text,
            "peer.create",
        )
        .unwrap();
        assert_eq!(out, "[|]", "none gives nothing");
        assert!(render("{{ event|filesizeformat }}", Mode::Text, "peer.create").is_err());
    }

    #[test]
    fn unknown_fields_are_refused_by_the_check() {
        let t = Template::compile("{{ peer.nmae }}", Mode::Text).unwrap();
        let e = t.check(|_| Ok(())).unwrap_err();
        assert!(
            e.starts_with("unknown field \"peer.nmae\" (peer has: name, user,"),
            "{e}"
        );
        let t = Template::compile("{% if sesion %}x{% endif %}", Mode::Text).unwrap();
        let e = t.check(|_| Ok(())).unwrap_err();
        assert!(
            e.starts_with("unknown field \"sesion\" (known fields: id, event,"),
            "{e}"
        );
        // Loop variables, set variables and globals are not fields.
        let t = Template::compile(
            "{% set n = namespace(x=1) %}{% for ip in peer.allowed_ips %}{{ ip }}{{ loop.index }}{% endfor %}{{ range(2)|list|length }}",
            Mode::Text,
        )
        .unwrap();
        assert_eq!(t.check(|_| Ok(())), Ok(()));
    }

    #[test]
    fn a_template_failing_on_some_event_is_refused_naming_it() {
        // Arithmetic on none fails for events without a session.
        let t = Template::compile("{{ session.duration * 2 }}", Mode::Text).unwrap();
        let e = t.check(|_| Ok(())).unwrap_err();
        assert!(
            e.ends_with("(template line 1), for a sample peer.create event"),
            "{e}"
        );
        // Guarded, it passes.
        let t = Template::compile(
            "{% if session.duration is not none %}{{ session.duration * 2 }}{% endif %}",
            Mode::Text,
        )
        .unwrap();
        assert_eq!(t.check(|_| Ok(())), Ok(()));
        // The validator sees every output.
        let t = Template::compile("{{ event }}", Mode::Text).unwrap();
        let e = t
            .check(|out| {
                if out == "delete" {
                    Err("no deletes".into())
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert_eq!(e, "no deletes, for a sample peer.delete event");
    }

    #[test]
    fn syntax_errors_name_the_template_line_without_quoting_it() {
        let e = Template::compile("line one\n{{ peer.name ", Mode::Text).unwrap_err();
        assert!(e.starts_with("syntax error: "), "{e}");
        assert!(e.ends_with("(template line 2)"), "{e}");
        let e = Template::compile("{{ x|nosuchfilter }}", Mode::Text)
            .and_then(|t| t.check(|_| Ok(())))
            .unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let e = Template::compile("{{ event|nosuchfilter }}", Mode::Text)
            .and_then(|t| t.check(|_| Ok(())))
            .unwrap_err();
        assert!(e.contains("unknown filter"), "{e}");
    }

    #[test]
    fn every_sample_event_name_exists_and_unknown_ones_do_not() {
        for name in crate::event::filter::EVENT_NAMES {
            let e = sample_event(name, "h", now()).unwrap();
            assert_eq!(e.filter_name(), name);
        }
        assert!(sample_event("interface.connect", "h", now()).is_none());
        assert!(sample_event("peer.explode", "h", now()).is_none());
        assert!(sample_event("peer", "h", now()).is_none());
    }

    #[test]
    fn debug_never_shows_the_source() {
        let t = Template::compile("Bearer s3cr3t", Mode::Text).unwrap();
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }
}
