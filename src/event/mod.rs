//! Events the tracker derives, and their JSON in each wire format.
//!
//! An [`Event`] is self-contained: it carries a copy of everything any wire
//! format needs (the peer's state at the time, its interface, the session), so
//! it can be stored in the outbox and rendered later without the snapshot it
//! came from. It never holds private or preshared keys.

pub mod filter;
pub mod standard;
pub mod template;
pub mod wg_portal;

use chrono::{DateTime, FixedOffset, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{DriverKind, Peer, PublicKey};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Create,
    Update,
    Delete,
    Connect,
    Disconnect,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Create => "create",
            EventKind::Update => "update",
            EventKind::Delete => "delete",
            EventKind::Connect => "connect",
            EventKind::Disconnect => "disconnect",
        }
    }
}

/// What it happened to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Entity {
    Interface,
    Peer,
}

impl Entity {
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Interface => "interface",
            Entity::Peer => "peer",
        }
    }
}

/// A configuration field whose change produced an `update` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangedField {
    // peer fields
    Endpoint,
    AllowedIps,
    PersistentKeepalive,
    PresharedKey,
    // interface fields
    ListenPort,
    PublicKey,
    Fwmark,
}

impl ChangedField {
    /// The key name in wg-portal's models (used for `ChangedFields`).
    pub fn wg_portal_name(self) -> &'static str {
        match self {
            ChangedField::Endpoint => "Endpoint",
            ChangedField::AllowedIps => "AllowedIPsStr",
            ChangedField::PersistentKeepalive => "PersistentKeepalive",
            ChangedField::PresharedKey => "PresharedKey",
            ChangedField::ListenPort => "ListenPort",
            ChangedField::PublicKey => "PublicKey",
            ChangedField::Fwmark => "FirewallMark",
        }
    }

    /// The key name in wghook's own (snake_case) model.
    pub fn snake_name(self) -> &'static str {
        match self {
            ChangedField::Endpoint => "endpoint",
            ChangedField::AllowedIps => "allowed_ips",
            ChangedField::PersistentKeepalive => "persistent_keepalive",
            ChangedField::PresharedKey => "preshared_key",
            ChangedField::ListenPort => "listen_port",
            ChangedField::PublicKey => "public_key",
            ChangedField::Fwmark => "fwmark",
        }
    }
}

/// The interface an event concerns (or the peer's interface), without peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceInfo {
    pub name: String,
    pub public_key: Option<PublicKey>,
    pub listen_port: u16,
    pub fwmark: u32,
    pub driver: DriverKind,
    pub addresses: Vec<IpNet>,
    pub mtu: Option<u32>,
    /// When wghook first saw the interface.
    pub created_at: DateTime<Utc>,
    /// When wghook last saw its configuration change (or `created_at`).
    pub updated_at: DateTime<Utc>,
}

/// The peer an event concerns, as it was when the event was derived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// For `delete` and interface-vanished events: the last state seen.
    pub peer: Peer,
    /// When wghook first saw the peer.
    pub created_at: DateTime<Utc>,
    /// When wghook last saw its configuration change (or `created_at`).
    pub updated_at: DateTime<Utc>,
    /// Result of the optional ping check; `false` when ping checks are off.
    pub pingable: bool,
    /// Last successful ping; `None` when ping checks are off or none succeeded.
    pub last_ping: Option<DateTime<Utc>>,
}

/// A connect-to-disconnect span of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The handshake that made the peer connected.
    pub started_at: DateTime<Utc>,
    /// Set on `disconnect`: last handshake plus the connect threshold.
    pub ended_at: Option<DateTime<Utc>>,
    /// Bytes received within the session (counter now minus counter at start).
    pub rx_bytes: u64,
    /// Bytes transmitted within the session.
    pub tx_bytes: u64,
}

/// One derived event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique and time-ordered (UUIDv7); the `webhook-id` on the wire.
    pub id: Uuid,
    pub kind: EventKind,
    pub entity: Entity,
    /// The time the event describes: the handshake for `connect`, the session
    /// end for `disconnect`, the poll that saw it for the others.
    pub time: DateTime<Utc>,
    /// Host name of the machine wghook runs on.
    pub host: String,
    /// Per-entity sequence number: 1 for the entity's first event, then +1.
    pub sequence: u64,
    /// The interface (for peer events: the peer's interface).
    pub interface: InterfaceInfo,
    /// Set for `entity == Peer`.
    pub peer: Option<PeerInfo>,
    /// For `update`: the fields that changed, in a stable order.
    pub changed: Vec<ChangedField>,
    /// For `connect`/`disconnect`: the session that started or ended.
    pub session: Option<Session>,
}

impl Event {
    /// The wg-portal `identifier`: interface name or the peer's base64 key.
    pub fn identifier(&self) -> String {
        match (&self.entity, &self.peer) {
            (Entity::Peer, Some(p)) => p.peer.public_key.to_base64(),
            _ => self.interface.name.clone(),
        }
    }

    /// `peer.connect`, `interface.delete`, ...: the name used by event filters.
    pub fn filter_name(&self) -> String {
        format!("{}.{}", self.entity.as_str(), self.kind.as_str())
    }
}

/// Configured names for a peer (issue: peer names); empty strings when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerLabel {
    pub name: String,
    pub user: String,
    /// Free `key: value` labels from the `peers:` map (templates, scripts).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// How times are shown: the host's local offset (the default, as wg-portal
/// does) or a fixed offset (tests, and hosts that want UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    #[default]
    Local,
    Fixed(FixedOffset),
}

/// What rendering needs beyond the event itself.
#[derive(Debug, Clone, Default)]
pub struct RenderContext {
    pub zone: Zone,
    /// Adds `ChangedFields` to `update` bodies (webhook `extended: true`).
    pub extended: bool,
    /// Names by public key; peers not in it get empty names.
    pub peer_labels: std::collections::HashMap<PublicKey, PeerLabel>,
    /// Display names by interface; interfaces not in it show their name.
    pub interface_names: std::collections::HashMap<String, String>,
}

/// For tests: the `create` of interface `wg{n}` at `time`. Each `n` is its
/// own interface, so in delivery none waits for another.
#[cfg(test)]
pub(crate) fn test_interface_event(n: u32, time: DateTime<Utc>) -> Event {
    Event {
        id: Uuid::now_v7(),
        kind: EventKind::Create,
        entity: Entity::Interface,
        time,
        host: "h".into(),
        sequence: 1,
        interface: InterfaceInfo {
            name: format!("wg{n}"),
            public_key: None,
            listen_port: 0,
            fwmark: 0,
            driver: DriverKind::Kernel,
            addresses: vec![],
            mtu: None,
            created_at: time,
            updated_at: time,
        },
        peer: None,
        changed: vec![],
        session: None,
    }
}
