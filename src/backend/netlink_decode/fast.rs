//! One-pass decoding of a well-formed dump straight into the model.
//!
//! [`decode`] walks the raw bytes once and builds the [`Interface`] without
//! the intermediate `WireguardMessage` tree (a `Vec` per message, peer,
//! allowed IP and attribute list). It accepts only what the reference path
//! ([`decode_dump`](super::decode_dump) then
//! [`decode_device`](super::decode_device)) turns into an interface, and
//! builds the same interface: every length and value check of
//! `netlink-packet-wireguard` is repeated here. On anything else (a
//! malformed attribute, an error message, an interrupted or aborted dump,
//! an impossible value) it answers `None` and the caller runs the
//! reference path, which gives the exact error. Errors are rare; the
//! common case, a good dump, costs one walk.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Netlink message types below this value are control messages (`NLMSG_*`).
pub(super) const NLMSG_MIN_TYPE: u16 = 0x10;

/// Length of a generic netlink header (`struct genlmsghdr`).
pub(super) const GENL_HDRLEN: usize = 4;

/// The `i32` error code that starts an `NLMSG_ERROR` or `NLMSG_DONE` payload.
pub(super) fn error_code(payload: &[u8]) -> Option<i32> {
    payload
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(i32::from_ne_bytes)
}

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use netlink_packet_core::{NLA_TYPE_MASK, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLM_F_DUMP_INTR};

use crate::model::{DriverKind, Interface, Peer, PublicKey};

/// `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;
const WG_CMD_GET_DEVICE: u8 = 0;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

// `<linux/wireguard.h>`
const WGDEVICE_A_IFINDEX: u16 = 1;
const WGDEVICE_A_IFNAME: u16 = 2;
const WGDEVICE_A_PRIVATE_KEY: u16 = 3;
const WGDEVICE_A_PUBLIC_KEY: u16 = 4;
const WGDEVICE_A_FLAGS: u16 = 5;
const WGDEVICE_A_LISTEN_PORT: u16 = 6;
const WGDEVICE_A_FWMARK: u16 = 7;
const WGDEVICE_A_PEERS: u16 = 8;

const WGPEER_A_PUBLIC_KEY: u16 = 1;
const WGPEER_A_PRESHARED_KEY: u16 = 2;
const WGPEER_A_FLAGS: u16 = 3;
const WGPEER_A_ENDPOINT: u16 = 4;
const WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL: u16 = 5;
const WGPEER_A_LAST_HANDSHAKE_TIME: u16 = 6;
const WGPEER_A_RX_BYTES: u16 = 7;
const WGPEER_A_TX_BYTES: u16 = 8;
const WGPEER_A_ALLOWEDIPS: u16 = 9;
const WGPEER_A_PROTOCOL_VERSION: u16 = 10;

const WGALLOWEDIP_A_FAMILY: u16 = 1;
const WGALLOWEDIP_A_IPADDR: u16 = 2;
const WGALLOWEDIP_A_CIDR_MASK: u16 = 3;
const WGALLOWEDIP_A_FLAGS: u16 = 4;

/// The interface a well-formed, complete dump describes; `None` when the
/// reference path must decide (it may still succeed, e.g. on a dump this
/// walk does not recognise, and then gives the same interface).
pub(super) fn decode(buf: &[u8]) -> Option<Interface> {
    let mut state = State {
        name: None,
        iface: Interface {
            driver: DriverKind::Kernel,
            // A rough guess (a kernel peer entry takes 150 to 200 bytes)
            // saves most of the regrowth of a large peer list.
            peers: Vec::with_capacity(buf.len() / 256),
            ..Interface::default()
        },
        devices: 0,
    };
    let mut offset = 0usize;
    while offset < buf.len() {
        let rest = &buf[offset..];
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let length = usize::try_from(u32::from_ne_bytes(rest[0..4].try_into().ok()?)).ok()?;
        if length < NLMSG_HDRLEN || length > rest.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let flags = u16::from_ne_bytes([rest[6], rest[7]]);
        if flags & NLM_F_DUMP_INTR != 0 {
            return None;
        }
        let payload = &rest[NLMSG_HDRLEN..length];
        match kind {
            NLMSG_NOOP => {}
            NLMSG_DONE => {
                if error_code(payload).unwrap_or(0) < 0 {
                    return None;
                }
                return state.finish();
            }
            NLMSG_ERROR => {
                if error_code(payload)? != 0 {
                    return None;
                }
            }
            kind if kind < NLMSG_MIN_TYPE => return None,
            _ => {
                if payload.len() < GENL_HDRLEN || payload[0] != WG_CMD_GET_DEVICE {
                    return None;
                }
                state.devices += 1;
                state.device(&payload[GENL_HDRLEN..])?;
            }
        }
        offset = offset.saturating_add(length.saturating_add(3) & !3);
    }
    None
}

struct State {
    name: Option<String>,
    iface: Interface,
    devices: usize,
}

impl State {
    fn finish(self) -> Option<Interface> {
        if self.devices == 0 {
            return None;
        }
        let mut iface = self.iface;
        iface.name = self.name?;
        // Keep no more than the usual doubling's slack of the guess.
        if iface.peers.capacity() > 2 * iface.peers.len() + 16 {
            iface.peers.shrink_to_fit();
        }
        Some(iface)
    }

    /// The attributes of one device message, in order.
    fn device(&mut self, attrs: &[u8]) -> Option<()> {
        for attr in Nlas::new(attrs) {
            let (kind, value) = attr?;
            match kind {
                WGDEVICE_A_IFINDEX | WGDEVICE_A_FWMARK | WGDEVICE_A_FLAGS => {
                    let v = u32::from_ne_bytes(value.try_into().ok()?);
                    if kind == WGDEVICE_A_FWMARK {
                        self.iface.fwmark = v;
                    }
                }
                WGDEVICE_A_IFNAME => {
                    let text = match value.split_last() {
                        Some((0, head)) => head,
                        _ => value,
                    };
                    let text = std::str::from_utf8(text).ok()?;
                    match &self.name {
                        Some(first) if first != text => return None,
                        Some(_) => {}
                        None => self.name = Some(text.to_owned()),
                    }
                }
                WGDEVICE_A_PRIVATE_KEY => {
                    <&[u8; 32]>::try_from(value).ok()?;
                }
                WGDEVICE_A_PUBLIC_KEY => {
                    self.iface.public_key = Some(PublicKey(value.try_into().ok()?));
                }
                WGDEVICE_A_LISTEN_PORT => {
                    self.iface.listen_port = u16::from_ne_bytes(value.try_into().ok()?);
                }
                WGDEVICE_A_PEERS => {
                    for peer in Nlas::new(value) {
                        let (_, peer) = peer?;
                        self.peer(peer)?;
                    }
                }
                _ => {}
            }
        }
        Some(())
    }

    /// One peer entry: appended, or merged into the previous peer when it
    /// repeats that peer's key (a peer the kernel continued).
    fn peer(&mut self, attrs: &[u8]) -> Option<()> {
        let mut key: Option<PublicKey> = None;
        let mut psk: Option<bool> = None;
        let mut endpoint: Option<SocketAddr> = None;
        let mut keepalive: Option<u16> = None;
        let mut handshake: Option<Option<DateTime<Utc>>> = None;
        let (mut rx, mut tx): (Option<u64>, Option<u64>) = (None, None);
        let mut allowed: Vec<IpNet> = Vec::new();
        for attr in Nlas::new(attrs) {
            let (kind, value) = attr?;
            match kind {
                WGPEER_A_PUBLIC_KEY => {
                    let k = PublicKey(value.try_into().ok()?);
                    key.get_or_insert(k);
                }
                WGPEER_A_PRESHARED_KEY => {
                    let k: &[u8; 32] = value.try_into().ok()?;
                    psk = Some(k.iter().any(|b| *b != 0));
                }
                WGPEER_A_FLAGS | WGPEER_A_PROTOCOL_VERSION => {
                    <[u8; 4]>::try_from(value).ok()?;
                }
                WGPEER_A_ENDPOINT => endpoint = Some(socket_addr(value)?),
                WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL => {
                    keepalive = Some(u16::from_ne_bytes(value.try_into().ok()?));
                }
                WGPEER_A_LAST_HANDSHAKE_TIME => handshake = Some(handshake_time(value)?),
                WGPEER_A_RX_BYTES => rx = Some(u64::from_ne_bytes(value.try_into().ok()?)),
                WGPEER_A_TX_BYTES => tx = Some(u64::from_ne_bytes(value.try_into().ok()?)),
                WGPEER_A_ALLOWEDIPS => {
                    for entry in Nlas::new(value) {
                        let (_, entry) = entry?;
                        allowed.push(allowed_ip(entry)?);
                    }
                }
                _ => {}
            }
        }
        let key = key?;
        let peers = &mut self.iface.peers;
        if let Some(last) = peers.last_mut().filter(|p| p.public_key == key) {
            last.allowed_ips.append(&mut allowed);
            return Some(());
        }
        peers.push(Peer {
            public_key: key,
            endpoint,
            allowed_ips: allowed.into(),
            persistent_keepalive: keepalive.unwrap_or_default(),
            has_preshared_key: psk.unwrap_or_default(),
            last_handshake: handshake.unwrap_or_default(),
            rx_bytes: rx.unwrap_or_default(),
            tx_bytes: tx.unwrap_or_default(),
        });
        Some(())
    }
}

/// `struct sockaddr_in` (16 bytes) or `struct sockaddr_in6` (28 bytes); the
/// family field is not looked at, the length decides.
fn socket_addr(v: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]);
    match v.len() {
        16 => {
            let ip: [u8; 4] = v[4..8].try_into().ok()?;
            Some(SocketAddrV4::new(Ipv4Addr::from(ip), port).into())
        }
        28 => {
            let flow = u32::from_ne_bytes(v[4..8].try_into().ok()?);
            let ip: [u8; 16] = v[8..24].try_into().ok()?;
            let scope = u32::from_ne_bytes(v[24..28].try_into().ok()?);
            Some(SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope).into())
        }
        _ => None,
    }
}

/// At least 16 bytes (more are ignored); zero is "never".
fn handshake_time(v: &[u8]) -> Option<Option<DateTime<Utc>>> {
    let seconds = i64::from_ne_bytes(v.get(0..8)?.try_into().ok()?);
    let nanos = i64::from_ne_bytes(v.get(8..16)?.try_into().ok()?);
    if seconds == 0 && nanos == 0 {
        return Some(None);
    }
    let nanos = u32::try_from(nanos).ok().filter(|ns| *ns < 1_000_000_000)?;
    DateTime::from_timestamp(seconds, nanos).map(Some)
}

/// One allowed IP entry; the last family, address and prefix length win.
fn allowed_ip(attrs: &[u8]) -> Option<IpNet> {
    let (mut family, mut addr, mut cidr) = (None, None, None);
    for attr in Nlas::new(attrs) {
        let (kind, value) = attr?;
        match kind {
            WGALLOWEDIP_A_FAMILY => family = Some(u16::from_ne_bytes(value.try_into().ok()?)),
            WGALLOWEDIP_A_IPADDR => {
                addr = Some(match value.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(value).ok()?),
                    16 => IpAddr::from(<[u8; 16]>::try_from(value).ok()?),
                    _ => return None,
                });
            }
            WGALLOWEDIP_A_CIDR_MASK => cidr = Some(<[u8; 1]>::try_from(value).ok()?[0]),
            WGALLOWEDIP_A_FLAGS => {
                <[u8; 4]>::try_from(value).ok()?;
            }
            _ => {}
        }
    }
    let (family, addr, cidr) = (family?, addr?, cidr?);
    match (family, addr) {
        (AF_INET, IpAddr::V4(_)) | (AF_INET6, IpAddr::V6(_)) => IpNet::new(addr, cidr).ok(),
        _ => None,
    }
}

/// The attributes of a buffer as (type without flags, value); a malformed
/// one (header cut short, length below the header or past the buffer)
/// yields `None` and ends the walk, as `NlasIterator` errs.
struct Nlas<'a> {
    buf: &'a [u8],
    position: usize,
}

impl<'a> Nlas<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Nlas { buf, position: 0 }
    }
}

impl<'a> Iterator for Nlas<'a> {
    type Item = Option<(u16, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.position..).filter(|r| !r.is_empty())?;
        let item = (|| {
            let header = rest.get(..NLA_HDRLEN)?;
            let length = usize::from(u16::from_ne_bytes([header[0], header[1]]));
            let kind = u16::from_ne_bytes([header[2], header[3]]) & NLA_TYPE_MASK;
            if length < NLA_HDRLEN || length > rest.len() {
                return None;
            }
            Some((kind, &rest[NLA_HDRLEN..length], length))
        })();
        match item {
            Some((kind, value, length)) => {
                self.position += (length + 3) & !3;
                Some(Some((kind, value)))
            }
            None => {
                self.position = self.buf.len();
                Some(None)
            }
        }
    }
}
