//! The `standard` wire format: an [`Event`] as a Standard Webhooks body
//! (`{"type": ..., "timestamp": ..., "data": {...}}`, `docs/formats.md`).
//!
//! `data` is wghook's own model in snake_case. Invariants: all times are
//! RFC 3339 in UTC (`Z`), whatever the render context's zone; never-happened
//! times are `null`; `changed` appears only on `update`, `session` only on
//! `connect`/`disconnect`; private and preshared keys are never written.

use chrono::{DateTime, Offset as _, Utc};
use serde::Serialize;

use super::wg_portal::go_time;
use super::{Entity, Event, EventKind, RenderContext, Session, Zone};

/// The Standard Webhooks `type` of an event: `peer.connected`, `interface.deleted`, ...
pub fn event_type(event: &Event) -> &'static str {
    match (event.entity, event.kind) {
        (Entity::Interface, EventKind::Create) => "interface.created",
        (Entity::Interface, EventKind::Update) => "interface.updated",
        (Entity::Interface, EventKind::Delete) => "interface.deleted",
        // Connect/disconnect are about a peer whatever `entity` says.
        (_, EventKind::Connect) => "peer.connected",
        (_, EventKind::Disconnect) => "peer.disconnected",
        (Entity::Peer, EventKind::Create) => "peer.created",
        (Entity::Peer, EventKind::Update) => "peer.updated",
        (Entity::Peer, EventKind::Delete) => "peer.deleted",
    }
}

/// The body of `event` in the `standard` format (compact JSON).
pub fn render(event: &Event, ctx: &RenderContext) -> Vec<u8> {
    let data = if event.entity == Entity::Interface
        && !matches!(event.kind, EventKind::Connect | EventKind::Disconnect)
    {
        Some(Data::Interface(interface_data(event)))
    } else {
        event
            .peer
            .as_ref()
            .map(|_| Data::Peer(peer_data(event, ctx)))
    };
    let envelope = Envelope {
        kind: event_type(event),
        timestamp: utc(event.time),
        data,
    };
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// RFC 3339 in UTC, nanoseconds with trailing zeros trimmed.
fn utc(t: DateTime<Utc>) -> String {
    go_time(t, Zone::Fixed(Utc.fix()))
}

/// The session's length in whole seconds: to its end (disconnect) or to the
/// event (connect).
pub fn session_seconds(event: &Event, session: &Session) -> i64 {
    let end = session.ended_at.unwrap_or(event.time);
    (end - session.started_at).num_seconds().max(0)
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    data: Option<Data<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Peer(PeerData<'a>),
    Interface(InterfaceData<'a>),
}

#[derive(Serialize)]
struct PeerData<'a> {
    host: &'a str,
    interface: &'a str,
    public_key: String,
    name: &'a str,
    user: &'a str,
    endpoint: Option<String>,
    allowed_ips: Vec<String>,
    persistent_keepalive: u16,
    last_handshake: Option<String>,
    rx_bytes: u64,
    tx_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<SessionData>,
}

#[derive(Serialize)]
struct SessionData {
    started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<String>,
    duration_seconds: i64,
    rx_bytes: u64,
    tx_bytes: u64,
}

#[derive(Serialize)]
struct InterfaceData<'a> {
    host: &'a str,
    interface: &'a str,
    public_key: Option<String>,
    listen_port: u16,
    fwmark: u32,
    driver: &'static str,
    addresses: Vec<String>,
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<Vec<&'static str>>,
}

fn changed(event: &Event) -> Option<Vec<&'static str>> {
    (event.kind == EventKind::Update)
        .then(|| event.changed.iter().map(|f| f.snake_name()).collect())
}

fn peer_data<'a>(event: &'a Event, ctx: &'a RenderContext) -> PeerData<'a> {
    let peer = event.peer.as_ref().map(|p| &p.peer);
    let label = peer.and_then(|p| ctx.peer_labels.get(&p.public_key));
    let is_status = matches!(event.kind, EventKind::Connect | EventKind::Disconnect);
    PeerData {
        host: &event.host,
        interface: &event.interface.name,
        public_key: peer.map(|p| p.public_key.to_base64()).unwrap_or_default(),
        name: label.map_or("", |l| l.name.as_str()),
        user: label.map_or("", |l| l.user.as_str()),
        endpoint: peer.and_then(|p| p.endpoint).map(|e| e.to_string()),
        allowed_ips: peer
            .map(|p| p.allowed_ips.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        persistent_keepalive: peer.map_or(0, |p| p.persistent_keepalive),
        last_handshake: peer.and_then(|p| p.last_handshake).map(utc),
        rx_bytes: peer.map_or(0, |p| p.rx_bytes),
        tx_bytes: peer.map_or(0, |p| p.tx_bytes),
        changed: changed(event),
        session: event.session.filter(|_| is_status).map(|s| SessionData {
            started_at: utc(s.started_at),
            ended_at: s.ended_at.map(utc),
            duration_seconds: session_seconds(event, &s),
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
        }),
    }
}

fn interface_data(event: &Event) -> InterfaceData<'_> {
    let iface = &event.interface;
    InterfaceData {
        host: &event.host,
        interface: &iface.name,
        public_key: iface.public_key.map(|k| k.to_base64()),
        listen_port: iface.listen_port,
        fwmark: iface.fwmark,
        driver: iface.driver.as_str(),
        addresses: iface.addresses.iter().map(ToString::to_string).collect(),
        mtu: iface.mtu,
        changed: changed(event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChangedField, InterfaceInfo, PeerInfo, PeerLabel};
    use crate::model::{DriverKind, Peer, PublicKey};
    use chrono::FixedOffset;

    const ALICE: &str = "Fb5TaziAs1WrPBjC/MFbWsIelVXvi0hDKZ3YQM9wmU8=";

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn event(kind: EventKind, entity: Entity) -> Event {
        let key = PublicKey::from_base64(ALICE).unwrap();
        Event {
            id: uuid::Uuid::nil(),
            kind,
            entity,
            time: t("2025-06-26T21:04:33.325216659Z"),
            host: "vpn-1".into(),
            sequence: 2,
            interface: InterfaceInfo {
                name: "wg0".into(),
                public_key: Some(key),
                listen_port: 51820,
                fwmark: 0,
                driver: DriverKind::Kernel,
                addresses: vec!["10.8.0.1/24".parse().unwrap()],
                mtu: Some(1420),
                created_at: t("2025-06-26T20:00:00Z"),
                updated_at: t("2025-06-26T20:00:00Z"),
            },
            peer: Some(PeerInfo {
                peer: Peer {
                    public_key: key,
                    endpoint: Some("10.55.66.77:33874".parse().unwrap()),
                    allowed_ips: vec!["10.8.0.2/32".parse().unwrap()].into(),
                    persistent_keepalive: 25,
                    has_preshared_key: true,
                    last_handshake: Some(t("2025-06-26T21:04:33.325216659Z")),
                    rx_bytes: 1860,
                    tx_bytes: 10824,
                },
                created_at: t("2025-06-26T20:00:00Z"),
                updated_at: t("2025-06-26T20:00:00Z"),
                pingable: false,
                last_ping: None,
            }),
            changed: vec![],
            session: Some(Session {
                started_at: t("2025-06-26T20:50:40.10221606Z"),
                ended_at: None,
                rx_bytes: 100,
                tx_bytes: 200,
            }),
        }
    }

    fn ctx() -> RenderContext {
        let mut ctx = RenderContext::default();
        // PeerLabel may grow fields (labels): keep their defaults.
        #[allow(clippy::needless_update)]
        let label = PeerLabel {
            name: "alice-laptop".into(),
            user: "alice".into(),
            ..PeerLabel::default()
        };
        ctx.peer_labels
            .insert(PublicKey::from_base64(ALICE).unwrap(), label);
        ctx
    }

    #[test]
    fn connect_body_is_exactly_this() {
        let body = render(&event(EventKind::Connect, Entity::Peer), &ctx());
        assert_eq!(
            String::from_utf8(body).unwrap(),
            format!(
                "{{\"type\":\"peer.connected\",\"timestamp\":\"2025-06-26T21:04:33.325216659Z\",\
                 \"data\":{{\"host\":\"vpn-1\",\"interface\":\"wg0\",\"public_key\":\"{ALICE}\",\
                 \"name\":\"alice-laptop\",\"user\":\"alice\",\"endpoint\":\"10.55.66.77:33874\",\
                 \"allowed_ips\":[\"10.8.0.2/32\"],\"persistent_keepalive\":25,\
                 \"last_handshake\":\"2025-06-26T21:04:33.325216659Z\",\"rx_bytes\":1860,\"tx_bytes\":10824,\
                 \"session\":{{\"started_at\":\"2025-06-26T20:50:40.10221606Z\",\"duration_seconds\":833,\
                 \"rx_bytes\":100,\"tx_bytes\":200}}}}}}"
            )
        );
    }

    #[test]
    fn types_are_past_tense_and_connects_are_peer_events() {
        let names: Vec<&str> = [
            (EventKind::Create, Entity::Peer),
            (EventKind::Update, Entity::Peer),
            (EventKind::Delete, Entity::Peer),
            (EventKind::Connect, Entity::Peer),
            (EventKind::Disconnect, Entity::Interface),
            (EventKind::Create, Entity::Interface),
            (EventKind::Update, Entity::Interface),
            (EventKind::Delete, Entity::Interface),
        ]
        .iter()
        .map(|(k, e)| event_type(&event(*k, *e)))
        .collect();
        assert_eq!(
            names,
            [
                "peer.created",
                "peer.updated",
                "peer.deleted",
                "peer.connected",
                "peer.disconnected",
                "interface.created",
                "interface.updated",
                "interface.deleted"
            ]
        );
    }

    #[test]
    fn disconnect_has_the_session_end_and_update_the_changed_fields() {
        let mut e = event(EventKind::Disconnect, Entity::Peer);
        e.session = e.session.map(|s| Session {
            ended_at: Some(t("2025-06-26T22:50:40.10221606Z")),
            ..s
        });
        let v: serde_json::Value = serde_json::from_slice(&render(&e, &ctx())).unwrap();
        assert_eq!(
            v["data"]["session"]["ended_at"],
            "2025-06-26T22:50:40.10221606Z"
        );
        assert_eq!(v["data"]["session"]["duration_seconds"], 7200);
        assert!(v["data"].get("changed").is_none());

        let mut e = event(EventKind::Update, Entity::Peer);
        e.changed = vec![ChangedField::Endpoint, ChangedField::AllowedIps];
        let v: serde_json::Value = serde_json::from_slice(&render(&e, &ctx())).unwrap();
        assert_eq!(
            v["data"]["changed"],
            serde_json::json!(["endpoint", "allowed_ips"])
        );
        assert!(
            v["data"].get("session").is_none(),
            "session only on connect/disconnect"
        );
    }

    #[test]
    fn interface_events_carry_the_interface_model() {
        let mut e = event(EventKind::Update, Entity::Interface);
        e.changed = vec![ChangedField::ListenPort];
        let body = String::from_utf8(render(&e, &RenderContext::default())).unwrap();
        assert_eq!(
            body,
            format!(
                "{{\"type\":\"interface.updated\",\"timestamp\":\"2025-06-26T21:04:33.325216659Z\",\
                 \"data\":{{\"host\":\"vpn-1\",\"interface\":\"wg0\",\"public_key\":\"{ALICE}\",\
                 \"listen_port\":51820,\"fwmark\":0,\"driver\":\"kernel\",\"addresses\":[\"10.8.0.1/24\"],\
                 \"mtu\":1420,\"changed\":[\"listen_port\"]}}}}"
            )
        );
    }

    #[test]
    fn unknowns_are_null_and_times_are_utc_whatever_the_zone() {
        let mut e = event(EventKind::Create, Entity::Peer);
        if let Some(p) = e.peer.as_mut() {
            p.peer.endpoint = None;
            p.peer.last_handshake = None;
        }
        let ctx = RenderContext {
            zone: Zone::Fixed(FixedOffset::east_opt(7200).unwrap()),
            ..RenderContext::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&render(&e, &ctx)).unwrap();
        assert_eq!(v["timestamp"], "2025-06-26T21:04:33.325216659Z");
        assert!(v["data"]["endpoint"].is_null());
        assert!(v["data"]["last_handshake"].is_null());
        assert_eq!(v["data"]["name"], "");
        let text = serde_json::to_string(&v).unwrap();
        assert!(!text.contains("preshared"), "{text}");
    }
}
