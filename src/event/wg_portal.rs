//! The `wg-portal` and `wg-portal-v2` wire formats: an [`Event`] as the exact
//! JSON body wg-portal's webhooks send (`docs/formats.md`).
//!
//! Responsibilities: the envelope (`event`, `entity`, `identifier`, `payload`),
//! the connect/disconnect status payload, wg-portal's peer and interface
//! models, and Go's `time.Time` JSON form.
//!
//! Invariants:
//! - Output is byte-identical to what Go's `encoding/json` would produce for
//!   wg-portal's structs: compact (no whitespace), keys in the Go structs'
//!   field order (the set `docs/formats.md` lists, which is exactly the
//!   structs' non-`omitempty` fields), and Go's string escaping (`<`,
//!   `>`, `&`, U+2028 and U+2029 escaped as `\uXXXX`; `\b`, `\f`, `\n`, `\r`,
//!   `\t` short forms; other control characters as lowercase `\u00xx`).
//! - Private and preshared keys are never written: those keys are always `""`.
//! - Rendering never panics on event data and builds no intermediate value
//!   tree: it appends into one pre-sized buffer (about 0.5 µs per connect body).
//! - Times that never happened are `null` (v1) or omitted (v2 `Status`).

use std::io::Write as _;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{DateTime, Datelike, FixedOffset, Local, TimeZone, Timelike, Utc};

use super::{Entity, Event, EventKind, InterfaceInfo, PeerInfo, RenderContext, Zone};
use crate::model::PublicKey;

/// `CreatedBy`/`UpdatedBy` of every model wghook sends.
const CREATED_BY: &str = "wghook";

/// The body of `event` in the default `wg-portal` format.
///
/// Connect and disconnect carry the peer status payload (entity `peer`);
/// other peer events carry wg-portal's peer model, interface events its
/// interface model. With `ctx.extended`, `update` payloads end with
/// `ChangedFields`. A peer event without peer data (which the tracker never
/// produces) gets the payload `null` rather than invented values.
pub fn render(event: &Event, ctx: &RenderContext) -> Vec<u8> {
    render_flavor(event, ctx, Flavor::V1)
}

/// The body of `event` in the `wg-portal-v2` format (wg-portal 2.1 and later).
///
/// As [`render`], except connect and disconnect: entity `peer_metric` and
/// payload `{"Status":{...},"Peer":{<peer model>}}`, with never-happened times
/// omitted from `Status`.
pub fn render_v2(event: &Event, ctx: &RenderContext) -> Vec<u8> {
    render_flavor(event, ctx, Flavor::V2)
}

/// `t` as Go's `time.Time` marshals to JSON (RFC 3339 with nanoseconds,
/// without the quotes): the fraction's trailing zeros trimmed (no fraction at
/// all on whole seconds), `Z` for a zero offset, else `+hh:mm`/`-hh:mm`.
///
/// `Zone::Local` uses the host's offset at the instant `t` (so both sides of a
/// DST change are shown correctly).
pub fn go_time(t: DateTime<Utc>, zone: Zone) -> String {
    let mut out = Vec::with_capacity(35);
    push_go_time(&mut out, t, zone);
    // Only ASCII digits and punctuation are ever written.
    String::from_utf8(out).unwrap_or_default()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    V1,
    V2,
}

fn render_flavor(event: &Event, ctx: &RenderContext, flavor: Flavor) -> Vec<u8> {
    let is_status = matches!(event.kind, EventKind::Connect | EventKind::Disconnect);
    let mut out = Vec::with_capacity(if is_status && flavor == Flavor::V1 {
        512
    } else {
        1024
    });
    let entity = match (is_status, flavor) {
        (true, Flavor::V1) => "peer",
        (true, Flavor::V2) => "peer_metric",
        (false, _) => event.entity.as_str(),
    };
    // Connect/disconnect are about a peer whatever `entity` says.
    let peer = match (is_status, event.entity) {
        (true, _) | (false, Entity::Peer) => Some(event.peer.as_ref()),
        (false, Entity::Interface) => None,
    };

    out.extend_from_slice(b"{\"event\":\"");
    out.extend_from_slice(event.kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"entity\":\"");
    out.extend_from_slice(entity.as_bytes());
    out.extend_from_slice(b"\",\"identifier\":");
    match peer {
        Some(Some(p)) => push_key(&mut out, Some(&p.peer.public_key)),
        _ => push_str(&mut out, &event.interface.name),
    }
    out.extend_from_slice(b",\"payload\":");
    match peer {
        Some(None) => out.extend_from_slice(b"null"),
        Some(Some(p)) if is_status => match flavor {
            Flavor::V1 => push_status_v1(&mut out, event, p, ctx),
            Flavor::V2 => {
                out.extend_from_slice(b"{\"Status\":");
                push_status_v2(&mut out, event, p, ctx);
                out.extend_from_slice(b",\"Peer\":");
                push_peer_model(&mut out, event, p, ctx, false);
                out.push(b'}');
            }
        },
        Some(Some(p)) => push_peer_model(&mut out, event, p, ctx, true),
        None => push_interface_model(&mut out, event, &event.interface, ctx),
    }
    out.push(b'}');
    out
}

/// wg-portal's v1 connect/disconnect payload, keys in the seed's order
/// (plus the session figures for `extended` webhooks).
fn push_status_v1(out: &mut Vec<u8>, event: &Event, p: &PeerInfo, ctx: &RenderContext) {
    let zone = ctx.zone;
    let peer = &p.peer;
    out.extend_from_slice(b"{\"PeerId\":");
    push_key(out, Some(&peer.public_key));
    out.extend_from_slice(b",\"IsConnected\":");
    push_bool(out, event.kind == EventKind::Connect);
    out.extend_from_slice(b",\"IsPingable\":");
    push_bool(out, p.pingable);
    out.extend_from_slice(b",\"LastPing\":");
    push_opt_time(out, p.last_ping, zone);
    out.extend_from_slice(b",\"BytesReceived\":");
    push_u64(out, peer.rx_bytes);
    out.extend_from_slice(b",\"BytesTransmitted\":");
    push_u64(out, peer.tx_bytes);
    out.extend_from_slice(b",\"LastHandshake\":");
    push_opt_time(out, peer.last_handshake, zone);
    out.extend_from_slice(b",\"Endpoint\":");
    push_endpoint(out, peer.endpoint);
    out.extend_from_slice(b",\"LastSessionStart\":");
    push_opt_time(out, event.session.map(|s| s.started_at), zone);
    push_session_figures(out, event, ctx);
    out.push(b'}');
}

/// For `extended` webhooks, the session that started (connect) or ended
/// (disconnect): `SessionEnd` (null on connect), `SessionDurationSeconds`,
/// and the bytes moved within the session.
fn push_session_figures(out: &mut Vec<u8>, event: &Event, ctx: &RenderContext) {
    let Some(session) = event.session.filter(|_| ctx.extended) else {
        return;
    };
    let end = session.ended_at.unwrap_or(event.time);
    let duration = (end - session.started_at).num_seconds().max(0) as u64;
    out.extend_from_slice(b",\"SessionEnd\":");
    push_opt_time(out, session.ended_at, ctx.zone);
    out.extend_from_slice(b",\"SessionDurationSeconds\":");
    push_u64(out, duration);
    out.extend_from_slice(b",\"SessionBytesReceived\":");
    push_u64(out, session.rx_bytes);
    out.extend_from_slice(b",\"SessionBytesTransmitted\":");
    push_u64(out, session.tx_bytes);
}

/// wg-portal 2.1's `PeerStatus` webhook model (Go field order; `omitempty`
/// pointers left out when null).
fn push_status_v2(out: &mut Vec<u8>, event: &Event, p: &PeerInfo, ctx: &RenderContext) {
    let zone = ctx.zone;
    let peer = &p.peer;
    out.extend_from_slice(b"{\"UpdatedAt\":");
    push_time(out, event.time, zone);
    out.extend_from_slice(b",\"IsConnected\":");
    push_bool(out, event.kind == EventKind::Connect);
    out.extend_from_slice(b",\"IsPingable\":");
    push_bool(out, p.pingable);
    if let Some(t) = p.last_ping {
        out.extend_from_slice(b",\"LastPing\":");
        push_time(out, t, zone);
    }
    out.extend_from_slice(b",\"BytesReceived\":");
    push_u64(out, peer.rx_bytes);
    out.extend_from_slice(b",\"BytesTransmitted\":");
    push_u64(out, peer.tx_bytes);
    out.extend_from_slice(b",\"Endpoint\":");
    push_endpoint(out, peer.endpoint);
    if let Some(t) = peer.last_handshake {
        out.extend_from_slice(b",\"LastHandshake\":");
        push_time(out, t, zone);
    }
    if let Some(s) = event.session {
        out.extend_from_slice(b",\"LastSessionStart\":");
        push_time(out, s.started_at, zone);
    }
    push_session_figures(out, event, ctx);
    out.push(b'}');
}

/// wg-portal's webhook `Peer` model: the always-present keys of its Go struct,
/// in field order. `changed` allows the `extended` `ChangedFields` key.
fn push_peer_model(
    out: &mut Vec<u8>,
    event: &Event,
    p: &PeerInfo,
    ctx: &RenderContext,
    changed: bool,
) {
    let peer = &p.peer;
    let label = ctx.peer_labels.get(&peer.public_key);
    push_created_updated(out, p.created_at, p.updated_at, ctx.zone);
    out.extend_from_slice(b",\"Endpoint\":");
    push_endpoint(out, peer.endpoint);
    out.extend_from_slice(b",\"EndpointPublicKey\":");
    push_key(out, event.interface.public_key.as_ref());
    out.extend_from_slice(b",\"AllowedIPsStr\":\"");
    for (i, net) in peer.allowed_ips.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // CIDR text is ASCII digits, hex, '.', ':' and '/': nothing to escape.
        let _ = write!(out, "{net}");
    }
    out.extend_from_slice(
        b"\",\"ExtraAllowedIPsStr\":\"\",\"PresharedKey\":\"\",\"PersistentKeepalive\":",
    );
    push_u64(out, u64::from(peer.persistent_keepalive));
    out.extend_from_slice(b",\"DisplayName\":");
    push_str(out, label.map_or("", |l| l.name.as_str()));
    out.extend_from_slice(b",\"Identifier\":");
    push_key(out, Some(&peer.public_key));
    out.extend_from_slice(b",\"UserIdentifier\":");
    push_str(out, label.map_or("", |l| l.user.as_str()));
    out.extend_from_slice(b",\"InterfaceIdentifier\":");
    push_str(out, &event.interface.name);
    out.extend_from_slice(b",\"AutomaticallyCreated\":false,\"PrivateKey\":\"\",\"PublicKey\":");
    push_key(out, Some(&peer.public_key));
    out.extend_from_slice(b",\"InterfaceType\":\"server\",\"Addresses\":");
    push_cidr_array(out, &peer.allowed_ips);
    out.extend_from_slice(
        b",\"CheckAliveAddress\":\"\",\"DnsStr\":\"\",\"DnsSearchStr\":\"\",\"Mtu\":0",
    );
    if changed {
        push_changed_fields(out, event, ctx);
    }
    out.push(b'}');
}

/// wg-portal's webhook `Interface` model: the always-present keys of its Go
/// struct, in field order.
fn push_interface_model(
    out: &mut Vec<u8>,
    event: &Event,
    iface: &InterfaceInfo,
    ctx: &RenderContext,
) {
    push_created_updated(out, iface.created_at, iface.updated_at, ctx.zone);
    out.extend_from_slice(b",\"Identifier\":");
    push_str(out, &iface.name);
    out.extend_from_slice(b",\"PrivateKey\":\"\",\"PublicKey\":");
    push_key(out, iface.public_key.as_ref());
    out.extend_from_slice(b",\"ListenPort\":");
    push_u64(out, u64::from(iface.listen_port));
    out.extend_from_slice(b",\"Addresses\":");
    push_cidr_array(out, &iface.addresses);
    out.extend_from_slice(b",\"DnsStr\":\"\",\"DnsSearchStr\":\"\",\"Mtu\":");
    push_u64(out, u64::from(iface.mtu.unwrap_or(0)));
    out.extend_from_slice(b",\"FirewallMark\":");
    push_u64(out, u64::from(iface.fwmark));
    out.extend_from_slice(
        b",\"RoutingTable\":\"\",\"PreUp\":\"\",\"PostUp\":\"\",\"PreDown\":\"\",\"PostDown\":\"\",\"SaveConfig\":false,\"DisplayName\":",
    );
    let display = ctx
        .interface_names
        .get(&iface.name)
        .map_or(iface.name.as_str(), String::as_str);
    push_str(out, display);
    out.extend_from_slice(b",\"Type\":\"server\",\"DriverType\":\"");
    out.extend_from_slice(iface.driver.as_str().as_bytes());
    out.push(b'"');
    push_changed_fields(out, event, ctx);
    out.push(b'}');
}

/// Opens a model object with its four bookkeeping keys.
fn push_created_updated(
    out: &mut Vec<u8>,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    zone: Zone,
) {
    out.extend_from_slice(b"{\"CreatedBy\":\"");
    out.extend_from_slice(CREATED_BY.as_bytes());
    out.extend_from_slice(b"\",\"UpdatedBy\":\"");
    out.extend_from_slice(CREATED_BY.as_bytes());
    out.extend_from_slice(b"\",\"CreatedAt\":");
    push_time(out, created, zone);
    out.extend_from_slice(b",\"UpdatedAt\":");
    push_time(out, updated, zone);
}

/// `,"ChangedFields":[...]` on `update` bodies of `extended` webhooks.
fn push_changed_fields(out: &mut Vec<u8>, event: &Event, ctx: &RenderContext) {
    if !ctx.extended || event.kind != EventKind::Update {
        return;
    }
    out.extend_from_slice(b",\"ChangedFields\":[");
    for (i, field) in event.changed.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(field.wg_portal_name().as_bytes());
        out.push(b'"');
    }
    out.push(b']');
}

fn push_cidr_array(out: &mut Vec<u8>, nets: &[ipnet::IpNet]) {
    out.push(b'[');
    for (i, net) in nets.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "\"{net}\"");
    }
    out.push(b']');
}

/// `"ip:port"` / `"[v6]:port"`, or `""`. Socket address text needs no escaping.
fn push_endpoint(out: &mut Vec<u8>, endpoint: Option<std::net::SocketAddr>) {
    match endpoint {
        Some(addr) => {
            let _ = write!(out, "\"{addr}\"");
        }
        None => out.extend_from_slice(b"\"\""),
    }
}

/// A key as a quoted base64 string, `""` when absent. Base64 needs no escaping.
fn push_key(out: &mut Vec<u8>, key: Option<&PublicKey>) {
    out.push(b'"');
    if let Some(key) = key {
        let mut buf = [0u8; 44];
        if let Ok(n) = B64.encode_slice(key.0, &mut buf) {
            out.extend_from_slice(&buf[..n]);
        }
    }
    out.push(b'"');
}

fn push_bool(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Zero-padded to `width` digits (Go's `appendInt(b, x, width)` for x >= 0).
fn push_padded(out: &mut Vec<u8>, n: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut i = buf.len();
    let mut n = n;
    while n > 0 {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    out.extend_from_slice(&buf[start..]);
}

fn push_opt_time(out: &mut Vec<u8>, t: Option<DateTime<Utc>>, zone: Zone) {
    match t {
        Some(t) => push_time(out, t, zone),
        None => out.extend_from_slice(b"null"),
    }
}

/// A quoted Go time.
fn push_time(out: &mut Vec<u8>, t: DateTime<Utc>, zone: Zone) {
    out.push(b'"');
    push_go_time(out, t, zone);
    out.push(b'"');
}

/// Go's `Time.appendFormatRFC3339(b, true)`, byte for byte.
fn push_go_time(out: &mut Vec<u8>, t: DateTime<Utc>, zone: Zone) {
    let utc = t.naive_utc();
    let offset: FixedOffset = match zone {
        Zone::Fixed(offset) => offset,
        Zone::Local => Local.offset_from_utc_datetime(&utc),
    };
    // Out of range only at chrono's extreme dates: show those in UTC.
    let (local, offset_secs) = match utc.checked_add_offset(offset) {
        Some(local) => (local, offset.local_minus_utc()),
        None => (utc, 0),
    };

    let year = local.year();
    if year < 0 {
        out.push(b'-');
    }
    push_padded(out, year.unsigned_abs(), 4);
    out.push(b'-');
    push_padded(out, local.month(), 2);
    out.push(b'-');
    push_padded(out, local.day(), 2);
    out.push(b'T');
    push_padded(out, local.hour(), 2);
    out.push(b':');
    push_padded(out, local.minute(), 2);
    out.push(b':');
    let (second, nanos) = match local.nanosecond() {
        // chrono's leap second: written as :60 like RFC 3339 allows.
        n if n >= 1_000_000_000 => (local.second() + 1, n - 1_000_000_000),
        n => (local.second(), n),
    };
    push_padded(out, second, 2);
    if nanos != 0 {
        let mut digits = [b'0'; 9];
        let mut n = nanos;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let len = digits.iter().rposition(|&d| d != b'0').map_or(0, |i| i + 1);
        out.push(b'.');
        out.extend_from_slice(&digits[..len]);
    }

    if offset_secs == 0 {
        out.push(b'Z');
        return;
    }
    // Go writes whole minutes, dropping any seconds of the offset.
    let minutes = offset_secs / 60;
    out.push(if minutes < 0 { b'-' } else { b'+' });
    let minutes = minutes.unsigned_abs();
    push_padded(out, minutes / 60, 2);
    out.push(b':');
    push_padded(out, minutes % 60, 2);
}

/// A JSON string escaped as Go's `encoding/json` does (HTML escaping on).
fn push_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            0x00..=0x1f | b'<' | b'>' | b'&' => None,
            // U+2028 and U+2029 (E2 80 A8/A9) break JavaScript: Go escapes them.
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                None
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        match escape {
            Some(e) => {
                out.extend_from_slice(e);
                i += 1;
            }
            None if b == 0xe2 => {
                out.extend_from_slice(b"\\u202");
                out.push(if bytes[i + 2] == 0xa8 { b'8' } else { b'9' });
                i += 3;
            }
            None => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                i += 1;
            }
        }
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use chrono::{FixedOffset, TimeZone as _, Utc};
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;
    use crate::event::{ChangedField, PeerLabel, Session};
    use crate::model::{DriverKind, Peer};

    const PEER_KEY: &str = "Fb5TaziAs1WrPBjC/MFbWsIelVXvi0hDKZ3YQM9wmU8=";
    const SEED_CONNECT: &str = concat!(
        r#"{"event":"connect","entity":"peer","identifier":"Fb5TaziAs1WrPBjC/MFbWsIelVXvi0hDKZ3YQM9wmU8=","#,
        r#""payload":{"PeerId":"Fb5TaziAs1WrPBjC/MFbWsIelVXvi0hDKZ3YQM9wmU8=","IsConnected":true,"IsPingable":false,"#,
        r#""LastPing":null,"BytesReceived":1860,"BytesTransmitted":10824,"#,
        r#""LastHandshake":"2025-06-26T23:04:33.325216659+02:00","Endpoint":"10.55.66.77:33874","#,
        r#""LastSessionStart":"2025-06-26T22:50:40.10221606+02:00"}}"#,
    );

    fn plus2() -> Zone {
        Zone::Fixed(FixedOffset::east_opt(2 * 3600).unwrap())
    }

    fn ctx() -> RenderContext {
        RenderContext {
            zone: plus2(),
            ..RenderContext::default()
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, ns: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
            + chrono::TimeDelta::nanoseconds(i64::from(ns))
    }

    fn interface() -> InterfaceInfo {
        InterfaceInfo {
            name: "wg0".into(),
            public_key: Some(PublicKey([7; 32])),
            listen_port: 51820,
            fwmark: 0x51,
            driver: DriverKind::Kernel,
            addresses: vec![
                "10.55.66.1/24".parse().unwrap(),
                "fd00::1/64".parse().unwrap(),
            ],
            mtu: Some(1420),
            created_at: utc(2025, 6, 1, 8, 0, 0, 0),
            updated_at: utc(2025, 6, 2, 9, 30, 0, 500_000_000),
        }
    }

    /// The peer of the seed's connect example.
    fn seed_peer() -> PeerInfo {
        PeerInfo {
            peer: Peer {
                public_key: PublicKey::from_base64(PEER_KEY).unwrap(),
                endpoint: Some("10.55.66.77:33874".parse().unwrap()),
                allowed_ips: vec![
                    "10.55.66.77/32".parse().unwrap(),
                    "fd00::77/128".parse().unwrap(),
                ]
                .into(),
                persistent_keepalive: 25,
                has_preshared_key: true,
                last_handshake: Some(utc(2025, 6, 26, 21, 4, 33, 325_216_659)),
                rx_bytes: 1860,
                tx_bytes: 10824,
            },
            created_at: utc(2025, 6, 20, 10, 0, 0, 0),
            updated_at: utc(2025, 6, 21, 11, 0, 0, 123_000_000),
            pingable: false,
            last_ping: None,
        }
    }

    fn event(kind: EventKind, entity: Entity) -> Event {
        let peer = (entity == Entity::Peer).then(seed_peer);
        let session = match kind {
            EventKind::Connect => Some(Session {
                started_at: utc(2025, 6, 26, 20, 50, 40, 102_216_060),
                ended_at: None,
                rx_bytes: 0,
                tx_bytes: 0,
            }),
            EventKind::Disconnect => Some(Session {
                started_at: utc(2025, 6, 26, 20, 50, 40, 102_216_060),
                ended_at: Some(utc(2025, 6, 26, 21, 7, 33, 325_216_659)),
                rx_bytes: 1000,
                tx_bytes: 9000,
            }),
            _ => None,
        };
        Event {
            id: Uuid::nil(),
            kind,
            entity,
            time: match kind {
                EventKind::Connect => utc(2025, 6, 26, 21, 4, 33, 325_216_659),
                EventKind::Disconnect => utc(2025, 6, 26, 21, 7, 33, 325_216_659),
                _ => utc(2025, 6, 26, 21, 0, 0, 0),
            },
            host: "vpn1".into(),
            sequence: 1,
            interface: interface(),
            peer,
            changed: match kind {
                EventKind::Update if entity == Entity::Peer => {
                    vec![ChangedField::Endpoint, ChangedField::AllowedIps]
                }
                EventKind::Update => vec![ChangedField::ListenPort],
                _ => Vec::new(),
            },
            session,
        }
    }

    fn golden_path(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/golden/wg_portal")
            .join(format!("{name}.json"))
    }

    /// Compares with `tests/fixtures/golden/wg_portal/<name>.json`;
    /// `WGHOOK_BLESS=1` rewrites the file instead (review the diff!).
    fn assert_golden(name: &str, body: &[u8]) {
        let path = golden_path(name);
        if std::env::var_os("WGHOOK_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, body).unwrap();
        }
        let expected = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&expected),
            "body differs from {}",
            path.display()
        );
        let _: serde_json::Value = serde_json::from_slice(body).expect("golden body is JSON");
    }

    fn json(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
    }

    #[test]
    fn seed_connect_example_is_reproduced_byte_for_byte() {
        let body = render(&event(EventKind::Connect, Entity::Peer), &ctx());
        assert_eq!(String::from_utf8(body).unwrap(), SEED_CONNECT);
    }

    #[test]
    fn golden_bodies_for_every_event_kind() {
        let extended = RenderContext {
            extended: true,
            ..ctx()
        };
        let cases = [
            ("peer_create", EventKind::Create, Entity::Peer, false),
            ("peer_update", EventKind::Update, Entity::Peer, false),
            (
                "peer_update_extended",
                EventKind::Update,
                Entity::Peer,
                true,
            ),
            ("peer_delete", EventKind::Delete, Entity::Peer, false),
            ("peer_connect", EventKind::Connect, Entity::Peer, false),
            (
                "peer_disconnect",
                EventKind::Disconnect,
                Entity::Peer,
                false,
            ),
            (
                "interface_create",
                EventKind::Create,
                Entity::Interface,
                false,
            ),
            (
                "interface_update",
                EventKind::Update,
                Entity::Interface,
                false,
            ),
            (
                "interface_update_extended",
                EventKind::Update,
                Entity::Interface,
                true,
            ),
            (
                "interface_delete",
                EventKind::Delete,
                Entity::Interface,
                false,
            ),
        ];
        for (name, kind, entity, ext) in cases {
            let c = if ext { &extended } else { &ctx() };
            assert_golden(name, &render(&event(kind, entity), c));
        }
        assert_golden(
            "v2_peer_connect",
            &render_v2(&event(EventKind::Connect, Entity::Peer), &ctx()),
        );
        assert_golden(
            "v2_peer_disconnect",
            &render_v2(&event(EventKind::Disconnect, Entity::Peer), &ctx()),
        );
    }

    #[test]
    fn golden_connect_is_the_seed_example() {
        assert_eq!(
            std::fs::read(golden_path("peer_connect")).unwrap(),
            SEED_CONNECT.as_bytes()
        );
    }

    #[test]
    fn envelope_names_event_entity_and_identifier() {
        for kind in [
            EventKind::Create,
            EventKind::Update,
            EventKind::Delete,
            EventKind::Connect,
            EventKind::Disconnect,
        ] {
            for entity in [Entity::Peer, Entity::Interface] {
                if entity == Entity::Interface
                    && matches!(kind, EventKind::Connect | EventKind::Disconnect)
                {
                    continue;
                }
                let ev = event(kind, entity);
                let v = json(&render(&ev, &ctx()));
                let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
                assert_eq!(keys, ["entity", "event", "identifier", "payload"]); // serde_json sorts
                assert_eq!(v["event"], kind.as_str());
                assert_eq!(v["entity"], entity.as_str());
                assert_eq!(v["identifier"], ev.identifier());
                let v2 = json(&render_v2(&ev, &ctx()));
                let v2_entity = match kind {
                    EventKind::Connect | EventKind::Disconnect => "peer_metric",
                    _ => entity.as_str(),
                };
                assert_eq!(v2["entity"], v2_entity);
            }
        }
    }

    #[test]
    fn bodies_are_compact_and_start_with_the_envelope_in_go_field_order() {
        let body =
            String::from_utf8(render(&event(EventKind::Create, Entity::Peer), &ctx())).unwrap();
        assert!(body.starts_with(&format!(
            r#"{{"event":"create","entity":"peer","identifier":"{PEER_KEY}","payload":{{"CreatedBy":"wghook","#
        )));
        assert!(!body.contains(' ') && !body.contains('\n'));
    }

    #[test]
    fn disconnect_reports_not_connected_and_the_ended_sessions_start() {
        let v = json(&render(&event(EventKind::Disconnect, Entity::Peer), &ctx()));
        assert_eq!(v["payload"]["IsConnected"], false);
        assert_eq!(
            v["payload"]["LastSessionStart"],
            "2025-06-26T22:50:40.10221606+02:00"
        );
    }

    #[test]
    fn never_happened_times_are_null_in_v1_and_omitted_in_v2() {
        let mut ev = event(EventKind::Connect, Entity::Peer);
        let p = ev.peer.as_mut().unwrap();
        p.peer.last_handshake = None;
        p.peer.endpoint = None;
        ev.session = None;
        let v = json(&render(&ev, &ctx()));
        assert_eq!(v["payload"]["LastHandshake"], serde_json::Value::Null);
        assert_eq!(v["payload"]["LastSessionStart"], serde_json::Value::Null);
        assert_eq!(v["payload"]["LastPing"], serde_json::Value::Null);
        assert_eq!(v["payload"]["Endpoint"], "");
        let v2 = json(&render_v2(&ev, &ctx()));
        let status = v2["payload"]["Status"].as_object().unwrap();
        for key in ["LastPing", "LastHandshake", "LastSessionStart"] {
            assert!(!status.contains_key(key), "{key} present");
        }
        assert_eq!(status["Endpoint"], "");
    }

    #[test]
    fn ping_results_are_carried() {
        let mut ev = event(EventKind::Connect, Entity::Peer);
        let p = ev.peer.as_mut().unwrap();
        p.pingable = true;
        p.last_ping = Some(utc(2025, 6, 26, 21, 5, 0, 0));
        let v = json(&render(&ev, &ctx()));
        assert_eq!(v["payload"]["IsPingable"], true);
        assert_eq!(v["payload"]["LastPing"], "2025-06-26T23:05:00+02:00");
        let v2 = json(&render_v2(&ev, &ctx()));
        assert_eq!(
            v2["payload"]["Status"]["LastPing"],
            "2025-06-26T23:05:00+02:00"
        );
    }

    #[test]
    fn preshared_and_private_keys_are_never_sent() {
        let ev = event(EventKind::Update, Entity::Peer);
        assert!(ev.peer.as_ref().unwrap().peer.has_preshared_key);
        let v = json(&render(&ev, &ctx()));
        assert_eq!(v["payload"]["PresharedKey"], "");
        assert_eq!(v["payload"]["PrivateKey"], "");
        let v = json(&render(
            &event(EventKind::Create, Entity::Interface),
            &ctx(),
        ));
        assert_eq!(v["payload"]["PrivateKey"], "");
    }

    #[test]
    fn session_figures_only_on_extended_connect_and_disconnect() {
        let extended = RenderContext {
            extended: true,
            ..ctx()
        };
        let v = json(&render(
            &event(EventKind::Disconnect, Entity::Peer),
            &extended,
        ));
        let p = &v["payload"];
        // 20:50:40.10 to 21:07:33.32: 1,013 whole seconds.
        assert_eq!(p["SessionDurationSeconds"], 1013);
        assert_eq!(p["SessionBytesReceived"], 1000);
        assert_eq!(p["SessionBytesTransmitted"], 9000);
        assert!(p["SessionEnd"]
            .as_str()
            .unwrap()
            .starts_with("2025-06-26T23:07:33.325216659"));
        let body = render(&event(EventKind::Disconnect, Entity::Peer), &extended);
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.ends_with(r#","SessionBytesTransmitted":9000}}"#),
            "{text}"
        );
        let v = json(&render(&event(EventKind::Connect, Entity::Peer), &extended));
        assert_eq!(v["payload"]["SessionEnd"], serde_json::Value::Null);
        let v2 = json(&render_v2(
            &event(EventKind::Disconnect, Entity::Peer),
            &extended,
        ));
        assert_eq!(v2["payload"]["Status"]["SessionDurationSeconds"], 1013);
        let plain = json(&render(&event(EventKind::Disconnect, Entity::Peer), &ctx()));
        assert!(plain["payload"].get("SessionDurationSeconds").is_none());
    }

    #[test]
    fn changed_fields_only_on_extended_update_bodies() {
        let extended = RenderContext {
            extended: true,
            ..ctx()
        };
        let v = json(&render(&event(EventKind::Update, Entity::Peer), &extended));
        assert_eq!(
            v["payload"]["ChangedFields"],
            serde_json::json!(["Endpoint", "AllowedIPsStr"])
        );
        let v = json(&render(
            &event(EventKind::Update, Entity::Interface),
            &extended,
        ));
        assert_eq!(
            v["payload"]["ChangedFields"],
            serde_json::json!(["ListenPort"])
        );
        let v = json(&render(&event(EventKind::Update, Entity::Peer), &ctx()));
        assert!(v["payload"].get("ChangedFields").is_none());
        let v = json(&render(&event(EventKind::Create, Entity::Peer), &extended));
        assert!(v["payload"].get("ChangedFields").is_none());
        let v = json(&render(&event(EventKind::Connect, Entity::Peer), &extended));
        assert!(v["payload"].get("ChangedFields").is_none());
    }

    #[test]
    fn names_come_from_the_context_and_default_to_empty_or_the_interface_name() {
        let ev = event(EventKind::Create, Entity::Peer);
        let v = json(&render(&ev, &ctx()));
        assert_eq!(v["payload"]["DisplayName"], "");
        assert_eq!(v["payload"]["UserIdentifier"], "");
        let iface = event(EventKind::Create, Entity::Interface);
        assert_eq!(
            json(&render(&iface, &ctx()))["payload"]["DisplayName"],
            "wg0"
        );

        let mut c = ctx();
        c.peer_labels.insert(
            ev.peer.as_ref().unwrap().peer.public_key,
            PeerLabel {
                name: "Alice's laptop".into(),
                user: "alice@example.com".into(),
                ..PeerLabel::default()
            },
        );
        c.interface_names = HashMap::from([("wg0".to_string(), "Office VPN".to_string())]);
        let v = json(&render(&ev, &c));
        assert_eq!(v["payload"]["DisplayName"], "Alice's laptop");
        assert_eq!(v["payload"]["UserIdentifier"], "alice@example.com");
        assert_eq!(
            json(&render(&iface, &c))["payload"]["DisplayName"],
            "Office VPN"
        );
    }

    #[test]
    fn names_are_escaped_as_go_does() {
        let ev = event(EventKind::Create, Entity::Peer);
        let name = "say \"hi\" \\ <b>&\u{1}\u{8}\u{c}\n\r\t\u{1f} é 🦀 \u{2028}\u{2029}/";
        let mut c = ctx();
        c.peer_labels.insert(
            ev.peer.as_ref().unwrap().peer.public_key,
            PeerLabel {
                name: name.into(),
                user: String::new(),
                ..PeerLabel::default()
            },
        );
        let body = String::from_utf8(render(&ev, &c)).unwrap();
        let expected = r#""DisplayName":"say \"hi\" \\ \u003cb\u003e\u0026\u0001\b\f\n\r\t\u001f é 🦀 \u2028\u2029/""#;
        assert!(body.contains(expected), "{body}");
        assert_eq!(json(body.as_bytes())["payload"]["DisplayName"], name);
    }

    #[test]
    fn escaping_leaves_lookalike_multibyte_characters_alone() {
        // U+2020 (E2 80 A0) and U+2027 share the U+2028 prefix bytes.
        for s in ["\u{2020}", "\u{2027}", "\u{202a}", "x\u{e2}", "\u{2028}"] {
            let mut out = Vec::new();
            push_str(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
        }
        let mut out = Vec::new();
        push_str(&mut out, "\u{2020}\u{2028}");
        assert_eq!(out, "\"\u{2020}\\u2028\"".as_bytes());
    }

    #[test]
    fn interface_names_are_escaped_in_the_identifier() {
        let mut ev = event(EventKind::Delete, Entity::Interface);
        ev.interface.name = "wg\"0".into();
        let v = json(&render(&ev, &ctx()));
        assert_eq!(v["identifier"], "wg\"0");
        assert_eq!(v["payload"]["Identifier"], "wg\"0");
    }

    #[test]
    fn peer_model_carries_the_peer_and_its_interface() {
        let v = json(&render(&event(EventKind::Create, Entity::Peer), &ctx()));
        let p = &v["payload"];
        assert_eq!(p["Identifier"], PEER_KEY);
        assert_eq!(p["PublicKey"], PEER_KEY);
        assert_eq!(p["EndpointPublicKey"], PublicKey([7; 32]).to_base64());
        assert_eq!(p["InterfaceIdentifier"], "wg0");
        assert_eq!(p["AllowedIPsStr"], "10.55.66.77/32,fd00::77/128");
        assert_eq!(
            p["Addresses"],
            serde_json::json!(["10.55.66.77/32", "fd00::77/128"])
        );
        assert_eq!(p["PersistentKeepalive"], 25);
        assert_eq!(p["Endpoint"], "10.55.66.77:33874");
        assert_eq!(p["CreatedAt"], "2025-06-20T12:00:00+02:00");
        assert_eq!(p["UpdatedAt"], "2025-06-21T13:00:00.123+02:00");
        assert_eq!(p.as_object().unwrap().len(), 23);
    }

    #[test]
    fn peer_model_with_nothing_known_has_empty_values_not_nulls() {
        let mut ev = event(EventKind::Create, Entity::Peer);
        ev.interface.public_key = None;
        let p = ev.peer.as_mut().unwrap();
        p.peer.allowed_ips.clear();
        p.peer.endpoint = Some("[fe80::1]:51820".parse().unwrap());
        let v = json(&render(&ev, &ctx()));
        assert_eq!(v["payload"]["EndpointPublicKey"], "");
        assert_eq!(v["payload"]["AllowedIPsStr"], "");
        assert_eq!(v["payload"]["Addresses"], serde_json::json!([]));
        assert_eq!(v["payload"]["Endpoint"], "[fe80::1]:51820");
    }

    #[test]
    fn interface_model_fills_unknowns_with_empty_values() {
        let mut ev = event(EventKind::Create, Entity::Interface);
        ev.interface.public_key = None;
        ev.interface.addresses.clear();
        ev.interface.mtu = None;
        ev.interface.driver = DriverKind::Userspace;
        let v = json(&render(&ev, &ctx()));
        let p = &v["payload"];
        assert_eq!(p["PublicKey"], "");
        assert_eq!(p["Addresses"], serde_json::json!([]));
        assert_eq!(p["Mtu"], 0);
        assert_eq!(p["DriverType"], "userspace");
        assert_eq!(p.as_object().unwrap().len(), 22);
    }

    #[test]
    fn a_peer_event_without_peer_data_renders_a_null_payload() {
        for kind in [EventKind::Create, EventKind::Connect] {
            let mut ev = event(kind, Entity::Peer);
            ev.peer = None;
            for body in [render(&ev, &ctx()), render_v2(&ev, &ctx())] {
                let v = json(&body);
                assert_eq!(v["identifier"], "wg0");
                assert_eq!(v["payload"], serde_json::Value::Null);
            }
        }
    }

    #[test]
    fn v2_connect_wraps_status_and_peer_model() {
        let ev = event(EventKind::Connect, Entity::Peer);
        let v = json(&render_v2(&ev, &ctx()));
        let status = &v["payload"]["Status"];
        assert_eq!(status["UpdatedAt"], "2025-06-26T23:04:33.325216659+02:00");
        assert_eq!(status["IsConnected"], true);
        assert_eq!(status["BytesReceived"], 1860);
        assert_eq!(v["payload"]["Peer"]["Identifier"], PEER_KEY);
        assert!(v["payload"]["Peer"].get("ChangedFields").is_none());
    }

    #[test]
    fn u64_counters_are_written_in_full() {
        let mut ev = event(EventKind::Connect, Entity::Peer);
        let p = ev.peer.as_mut().unwrap();
        p.peer.rx_bytes = u64::MAX;
        p.peer.tx_bytes = 0;
        let body = String::from_utf8(render(&ev, &ctx())).unwrap();
        assert!(body.contains(r#""BytesReceived":18446744073709551615,"BytesTransmitted":0,"#));
    }

    fn fixed(secs: i32) -> Zone {
        Zone::Fixed(FixedOffset::east_opt(secs).unwrap())
    }

    #[test]
    fn go_time_whole_seconds_have_no_fraction() {
        let t = utc(2025, 6, 26, 21, 4, 33, 0);
        assert_eq!(go_time(t, fixed(0)), "2025-06-26T21:04:33Z");
        assert_eq!(go_time(t, plus2()), "2025-06-26T23:04:33+02:00");
    }

    #[test]
    fn go_time_trims_trailing_zeros_of_the_fraction() {
        let at = |ns| go_time(utc(2025, 1, 2, 3, 4, 5, ns), fixed(0));
        assert_eq!(at(325_216_659), "2025-01-02T03:04:05.325216659Z");
        assert_eq!(at(102_216_060), "2025-01-02T03:04:05.10221606Z");
        assert_eq!(at(500_000_000), "2025-01-02T03:04:05.5Z");
        assert_eq!(at(1), "2025-01-02T03:04:05.000000001Z");
        assert_eq!(at(10_000), "2025-01-02T03:04:05.00001Z");
    }

    #[test]
    fn go_time_writes_negative_and_odd_offsets() {
        let t = utc(2025, 1, 1, 2, 30, 0, 0);
        assert_eq!(go_time(t, fixed(-5 * 3600)), "2024-12-31T21:30:00-05:00");
        assert_eq!(
            go_time(t, fixed(-(3 * 3600 + 30 * 60))),
            "2024-12-31T23:00:00-03:30"
        );
        assert_eq!(
            go_time(t, fixed(5 * 3600 + 45 * 60)),
            "2025-01-01T08:15:00+05:45"
        );
        assert_eq!(go_time(t, fixed(-30 * 60)), "2025-01-01T02:00:00-00:30");
        // Go drops the seconds of an offset (local mean time zones).
        assert_eq!(
            go_time(t, fixed(-(4 * 3600 + 56 * 60 + 2))),
            "2024-12-31T21:33:58-04:56"
        );
    }

    #[test]
    fn go_time_pads_early_years_and_handles_the_epoch() {
        assert_eq!(
            go_time(DateTime::UNIX_EPOCH, fixed(0)),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            go_time(utc(1, 1, 1, 0, 0, 0, 0), fixed(0)),
            "0001-01-01T00:00:00Z"
        );
        assert_eq!(
            go_time(utc(999, 3, 4, 5, 6, 7, 0), fixed(0)),
            "0999-03-04T05:06:07Z"
        );
    }

    #[test]
    fn go_time_does_not_panic_at_chronos_extremes() {
        let s = go_time(DateTime::<Utc>::MAX_UTC, fixed(14 * 3600));
        assert!(s.ends_with('Z'), "{s}");
        let s = go_time(DateTime::<Utc>::MIN_UTC, fixed(-14 * 3600));
        assert!(s.starts_with('-') && s.ends_with('Z'), "{s}");
    }

    #[test]
    fn go_time_local_uses_the_hosts_offset_at_that_instant() {
        let t = utc(2025, 6, 26, 21, 4, 33, 325_216_659);
        let offset = Local.offset_from_utc_datetime(&t.naive_utc());
        assert_eq!(go_time(t, Zone::Local), go_time(t, Zone::Fixed(offset)));
    }

    proptest! {
        #[test]
        fn go_time_is_rfc3339_of_the_same_instant(
            secs in -62_135_596_800i64..253_402_300_799,
            nanos in 0u32..1_000_000_000,
            offset_min in -(23 * 60 + 59)..=(23 * 60 + 59),
        ) {
            let t = DateTime::from_timestamp(secs, nanos).unwrap();
            let s = go_time(t, fixed(offset_min * 60));
            let parsed = DateTime::parse_from_rfc3339(&s).unwrap();
            prop_assert_eq!(parsed.with_timezone(&Utc), t);
            prop_assert_eq!(parsed.offset().local_minus_utc(), offset_min * 60);
            prop_assert_eq!(s.ends_with('Z'), offset_min == 0);
            if let Some(frac) = s.split('.').nth(1) {
                let digits = frac.split(|c: char| !c.is_ascii_digit()).next().unwrap_or("");
                prop_assert!(!digits.ends_with('0') && !digits.is_empty());
            }
        }
    }
}
