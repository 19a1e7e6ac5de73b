//! Pure decoding of one `WG_CMD_GET_DEVICE` dump into a [`model::Interface`](crate::model::Interface).
//!
//! No I/O here: [`decode_dump`] takes the bytes the kernel sent (concatenated
//! netlink messages ending in `NLMSG_DONE`), [`decode_device`] the parsed
//! generic-netlink messages. The socket side lives in
//! [`netlink`](super::netlink).
//!
//! Invariants:
//! - Malformed input is a [`DecodeError`], never a panic. The parser of
//!   `netlink-packet-wireguard` indexes an empty `WGALLOWEDIP_A_CIDR_MASK`
//!   without a check, so every buffer is walked and length-checked here first.
//! - A peer the kernel split across messages (its key repeated with the
//!   remaining allowed IPs) is merged into the peer before it, by public key
//!   and in order, exactly as `wg` does (`coalesce_peers` in wireguard-tools).
//! - The private key and the preshared key are dropped while decoding; only
//!   whether the preshared key is non-zero is kept. Errors never quote key
//!   bytes.
//! - A handshake timespec of zero means "never" (`None`).
//! - A message flagged `NLM_F_DUMP_INTR` means the device changed mid-dump:
//!   the result is [`DecodeError::Interrupted`] so the caller can dump again.
//! - A negative error code in `NLMSG_DONE` means the kernel stopped the dump
//!   early: the result is [`DecodeError::DumpAborted`], never the peers read
//!   so far (wireguard-tools' `mnlg_cb_stop` fails the same way).

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkBuffer, NlasIterator, ParseableParametrized, NLA_HEADER_SIZE, NLMSG_DONE, NLMSG_ERROR,
    NLMSG_NOOP, NLM_F_DUMP_INTR,
};
use netlink_packet_generic::GenlHeader;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardTimeSpec,
};

use crate::model::{DriverKind, Interface, Peer, PublicKey};

/// Netlink message types below this value are control messages (`NLMSG_*`).
const NLMSG_MIN_TYPE: u16 = 0x10;
/// Length of a generic netlink header (`struct genlmsghdr`).
const GENL_HDRLEN: usize = 4;
/// Attribute numbers from `<linux/wireguard.h>` needed by the pre-parse walk.
const WGDEVICE_A_PEERS: u16 = 8;
const WGPEER_A_ALLOWEDIPS: u16 = 9;
const WGALLOWEDIP_A_CIDR_MASK: u16 = 3;

/// Why a dump could not be turned into an interface.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A message or attribute is truncated or has a value of the wrong size.
    #[error("malformed netlink message {index}: {reason}")]
    Malformed { index: usize, reason: String },
    /// The device changed while it was being dumped (`NLM_F_DUMP_INTR`);
    /// dumping again gives a consistent view.
    #[error("the dump was interrupted by a concurrent change")]
    Interrupted,
    /// The kernel answered with an error (`NLMSG_ERROR`); `errno` is positive.
    #[error("the kernel answered with an error: {}", std::io::Error::from_raw_os_error(*errno))]
    Kernel { errno: i32 },
    /// The kernel ended the dump with an error in `NLMSG_DONE`: the messages
    /// before it are only part of the device. `errno` is positive.
    #[error("the kernel cut the dump short: {}", std::io::Error::from_raw_os_error(*errno))]
    DumpAborted { errno: i32 },
    /// The buffer ended before `NLMSG_DONE`.
    #[error("the dump ended before NLMSG_DONE")]
    Incomplete,
    /// The dump holds no device message at all.
    #[error("the dump holds no device message")]
    NoDevice,
    /// No message carries the interface name.
    #[error("the dump does not name the interface")]
    MissingName,
    /// Messages of one dump name different interfaces.
    #[error("the dump mixes interfaces {first} and {second}")]
    MixedDevices { first: String, second: String },
    /// A peer entry without `WGPEER_A_PUBLIC_KEY` (`wg` rejects these too).
    #[error("peer entry {index} has no public key")]
    PeerWithoutKey { index: usize },
    /// A peer attribute holds an impossible value.
    #[error("peer {peer}: {reason}")]
    BadPeer { peer: PublicKey, reason: String },
}

impl DecodeError {
    /// The kernel's errno when the request failed with `NLMSG_ERROR`.
    ///
    /// `None` for [`DecodeError::DumpAborted`]: that errno comes from the
    /// middle of a dump, so it says nothing about the request as a whole
    /// (an `ENODEV` there must not read as "the interface is gone").
    pub fn errno(&self) -> Option<i32> {
        match self {
            DecodeError::Kernel { errno } => Some(*errno),
            _ => None,
        }
    }
}

/// Decodes a buffer of concatenated raw netlink messages (one whole
/// `WG_CMD_GET_DEVICE` dump, `NLMSG_DONE` included) into an interface.
pub fn decode_device_bytes(buf: &[u8]) -> Result<Interface, DecodeError> {
    let messages = decode_dump(buf)?;
    decode_device(&messages)
}

/// Splits a dump into its generic netlink messages and parses each one.
///
/// Stops at `NLMSG_DONE`; an error message becomes [`DecodeError::Kernel`],
/// an `NLMSG_DONE` carrying a negative code [`DecodeError::DumpAborted`],
/// an interrupted dump [`DecodeError::Interrupted`], a buffer without
/// `NLMSG_DONE` [`DecodeError::Incomplete`]. Messages are not checked against
/// a family id: the caller matched them to its request by sequence number.
pub fn decode_dump(buf: &[u8]) -> Result<Vec<WireguardMessage>, DecodeError> {
    let mut messages = Vec::new();
    let mut offset = 0usize;
    let mut index = 0usize;
    while offset < buf.len() {
        let malformed = |reason: String| DecodeError::Malformed { index, reason };
        let nl =
            NetlinkBuffer::new_checked(&buf[offset..]).map_err(|e| malformed(e.to_string()))?;
        let length = nl.length() as usize;
        if nl.flags() & NLM_F_DUMP_INTR != 0 {
            return Err(DecodeError::Interrupted);
        }
        let payload = nl.payload();
        match nl.message_type() {
            NLMSG_NOOP => {}
            NLMSG_DONE => {
                // The kernel puts the dump callback's last return value
                // here; a negative one means the dump stopped early. A
                // payload too short for a code (no kernel sends one) ends
                // the dump like a zero: it cannot hide a truncation, which
                // `new_checked` above would have caught.
                let code = error_code(payload).unwrap_or(0);
                if code < 0 {
                    return Err(DecodeError::DumpAborted {
                        errno: code.saturating_abs(),
                    });
                }
                return Ok(messages);
            }
            NLMSG_ERROR => {
                let code = error_code(payload)
                    .ok_or_else(|| malformed("NLMSG_ERROR without an error code".into()))?;
                // Code 0 is an acknowledgement, not an error.
                if code != 0 {
                    return Err(DecodeError::Kernel {
                        errno: code.saturating_abs(),
                    });
                }
            }
            kind if kind < NLMSG_MIN_TYPE => {
                return Err(malformed(format!("unexpected control message type {kind}")));
            }
            _ => messages.push(parse_genl_payload(payload).map_err(malformed)?),
        }
        // Messages in one datagram start on 4-byte boundaries.
        offset = offset.saturating_add(length.saturating_add(3) & !3);
        index += 1;
    }
    Err(DecodeError::Incomplete)
}

/// Reads the family id from the reply to a `CTRL_CMD_GETFAMILY` request
/// (one message, or `NLMSG_ERROR`: `ENOENT` when no such family is registered).
pub fn decode_family_reply(buf: &[u8]) -> Result<u16, DecodeError> {
    const CTRL_ATTR_FAMILY_ID: u16 = 1;
    let malformed = |reason: &str| DecodeError::Malformed {
        index: 0,
        reason: reason.to_owned(),
    };
    let nl = NetlinkBuffer::new_checked(buf).map_err(|e| malformed(&e.to_string()))?;
    let payload = nl.payload();
    if nl.message_type() == NLMSG_ERROR {
        let code =
            error_code(payload).ok_or_else(|| malformed("NLMSG_ERROR without an error code"))?;
        return Err(DecodeError::Kernel {
            errno: code.saturating_abs(),
        });
    }
    let attrs = payload
        .get(GENL_HDRLEN..)
        .ok_or_else(|| malformed("reply shorter than a generic netlink header"))?;
    nested(attrs, Some(CTRL_ATTR_FAMILY_ID))
        .find_map(|v| <[u8; 2]>::try_from(v).ok())
        .map(u16::from_ne_bytes)
        .ok_or_else(|| malformed("reply carries no CTRL_ATTR_FAMILY_ID"))
}

/// The `i32` error code that starts an `NLMSG_ERROR` or `NLMSG_DONE` payload.
fn error_code(payload: &[u8]) -> Option<i32> {
    payload
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(i32::from_ne_bytes)
}

/// Parses the payload of one generic netlink message of the `wireguard` family.
fn parse_genl_payload(payload: &[u8]) -> Result<WireguardMessage, String> {
    let header = GenlHeader::parse(payload).map_err(|e| e.to_string())?;
    let attributes = payload.get(GENL_HDRLEN..).unwrap_or_default();
    check_cidr_lengths(attributes)?;
    let message =
        WireguardMessage::parse_with_param(attributes, header).map_err(|e| e.to_string())?;
    if message.cmd != WireguardCmd::GetDevice {
        return Err(format!(
            "unexpected command {} (expected WG_CMD_GET_DEVICE)",
            u8::from(message.cmd)
        ));
    }
    Ok(message)
}

/// Rejects a `WGALLOWEDIP_A_CIDR_MASK` that is not exactly one byte long
/// before the crate's parser (which reads its first byte unchecked) sees it.
/// Structural errors are left for that parser to report.
fn check_cidr_lengths(device_attrs: &[u8]) -> Result<(), String> {
    for peers in nested(device_attrs, Some(WGDEVICE_A_PEERS)) {
        for peer in nested(peers, None) {
            for allowed_ips in nested(peer, Some(WGPEER_A_ALLOWEDIPS)) {
                for allowed_ip in nested(allowed_ips, None) {
                    for cidr in nested(allowed_ip, Some(WGALLOWEDIP_A_CIDR_MASK)) {
                        if cidr.len() != 1 {
                            return Err(format!(
                                "WGALLOWEDIP_A_CIDR_MASK is {} bytes long, expected 1",
                                cidr.len()
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The values of the well-formed attributes in `buf` (of type `kind`, or of
/// any type); iteration stops at the first malformed one.
fn nested(buf: &[u8], kind: Option<u16>) -> impl Iterator<Item = &[u8]> {
    NlasIterator::new(buf)
        .map_while(Result::ok)
        .filter(move |nla| kind.is_none_or(|k| nla.kind() == k))
        .filter_map(|nla| {
            let length = usize::from(nla.length());
            nla.into_inner().get(NLA_HEADER_SIZE..length)
        })
}

/// Builds the interface one dump describes.
///
/// Device attributes may come in any message (the kernel sends them in the
/// first only); peers are taken in order and a peer whose key equals the
/// previous peer's key is merged into it (its allowed IPs appended). The
/// result has `driver: Kernel`; `addresses` and `mtu` are left for rtnetlink.
pub fn decode_device(messages: &[WireguardMessage]) -> Result<Interface, DecodeError> {
    if messages.is_empty() {
        return Err(DecodeError::NoDevice);
    }
    let mut name: Option<String> = None;
    let mut iface = Interface {
        driver: DriverKind::Kernel,
        ..Interface::default()
    };
    let mut peer_index = 0usize;
    for message in messages {
        for attr in &message.attributes {
            match attr {
                WireguardAttribute::IfName(n) => match &name {
                    Some(first) if first != n => {
                        return Err(DecodeError::MixedDevices {
                            first: first.clone(),
                            second: n.clone(),
                        })
                    }
                    Some(_) => {}
                    None => name = Some(n.clone()),
                },
                WireguardAttribute::PublicKey(key) => iface.public_key = Some(PublicKey(*key)),
                WireguardAttribute::ListenPort(port) => iface.listen_port = *port,
                WireguardAttribute::Fwmark(mark) => iface.fwmark = *mark,
                WireguardAttribute::Peers(peers) => {
                    for peer in peers {
                        let (key, part) = decode_peer(peer, peer_index)?;
                        peer_index += 1;
                        merge_peer(&mut iface.peers, key, part);
                    }
                }
                // The private key is deliberately not kept; ifindex, flags
                // and unknown attributes carry nothing the model needs.
                _ => {}
            }
        }
    }
    iface.name = name.ok_or(DecodeError::MissingName)?;
    Ok(iface)
}

/// Appends `part` as a new peer, or, when it continues the previous peer
/// (same key), appends its allowed IPs to that peer.
fn merge_peer(peers: &mut Vec<Peer>, key: PublicKey, part: Peer) {
    match peers.last_mut() {
        Some(last) if last.public_key == key => last.allowed_ips.extend(part.allowed_ips),
        _ => peers.push(part),
    }
}

/// Decodes one peer entry; `index` counts entries over the whole dump, for errors.
fn decode_peer(peer: &WireguardPeer, index: usize) -> Result<(PublicKey, Peer), DecodeError> {
    let key = peer
        .iter()
        .find_map(|attr| match attr {
            WireguardPeerAttribute::PublicKey(k) => Some(PublicKey(*k)),
            _ => None,
        })
        .ok_or(DecodeError::PeerWithoutKey { index })?;
    let bad = |reason: String| DecodeError::BadPeer { peer: key, reason };
    let mut out = Peer {
        public_key: key,
        ..Peer::default()
    };
    for attr in peer.iter() {
        match attr {
            WireguardPeerAttribute::PresharedKey(psk) => {
                out.has_preshared_key = psk.iter().any(|b| *b != 0);
            }
            WireguardPeerAttribute::Endpoint(addr) => out.endpoint = Some(*addr),
            WireguardPeerAttribute::PersistentKeepalive(secs) => out.persistent_keepalive = *secs,
            WireguardPeerAttribute::LastHandshake(ts) => {
                out.last_handshake = handshake_time(ts).map_err(bad)?;
            }
            WireguardPeerAttribute::RxBytes(n) => out.rx_bytes = *n,
            WireguardPeerAttribute::TxBytes(n) => out.tx_bytes = *n,
            WireguardPeerAttribute::AllowedIps(ips) => {
                for ip in ips {
                    out.allowed_ips.push(allowed_ip(ip).map_err(bad)?);
                }
            }
            // Public key handled above; protocol version, flags and unknown
            // attributes (including 64-bit alignment padding) are ignored.
            _ => {}
        }
    }
    Ok((key, out))
}

/// A zero timespec is "never"; anything else must be a valid instant.
fn handshake_time(ts: &WireguardTimeSpec) -> Result<Option<DateTime<Utc>>, String> {
    if ts.seconds == 0 && ts.nano_seconds == 0 {
        return Ok(None);
    }
    u32::try_from(ts.nano_seconds)
        .ok()
        .filter(|ns| *ns < 1_000_000_000)
        .and_then(|ns| DateTime::from_timestamp(ts.seconds, ns))
        .map(Some)
        .ok_or_else(|| {
            format!(
                "latest handshake {}.{:09} is not a valid time",
                ts.seconds, ts.nano_seconds
            )
        })
}

/// One `WGPEER_A_ALLOWEDIPS` entry: family, address and prefix length must
/// all be present and agree.
fn allowed_ip(entry: &WireguardAllowedIp) -> Result<IpNet, String> {
    let (mut family, mut addr, mut cidr) = (None, None, None);
    for attr in entry.iter() {
        match attr {
            WireguardAllowedIpAttr::Family(f) => family = Some(*f),
            WireguardAllowedIpAttr::IpAddr(a) => addr = Some(*a),
            WireguardAllowedIpAttr::Cidr(c) => cidr = Some(*c),
            _ => {}
        }
    }
    let (Some(family), Some(addr), Some(cidr)) = (family, addr, cidr) else {
        return Err("allowed IP entry lacks its family, address or prefix length".into());
    };
    let family_matches = matches!(
        (family, addr),
        (WireguardAddressFamily::Ipv4, IpAddr::V4(_))
            | (WireguardAddressFamily::Ipv6, IpAddr::V6(_))
    );
    if !family_matches {
        return Err(format!(
            "allowed IP {addr} does not match its address family"
        ));
    }
    IpNet::new(addr, cidr)
        .map_err(|_| format!("allowed IP {addr}/{cidr} has an invalid prefix length"))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
    use std::path::PathBuf;

    use netlink_packet_core::{
        DefaultNla, DoneMessage, ErrorMessage, NetlinkHeader, NetlinkMessage, NetlinkPayload,
        NLM_F_MULTIPART,
    };
    use netlink_packet_generic::GenlMessage;
    use proptest::prelude::*;

    use super::*;

    /// Family id the test dumps claim; the kernel assigns one at module load.
    const FAMILY: u16 = 0x15;
    const SEQ: u32 = 7;
    const PORT: u32 = 0x4242;
    /// Stand-in private key put in every test dump; it must never come out.
    const PRIVATE_KEY: [u8; 32] = [0xA5; 32];
    const PSK: [u8; 32] = [0x3C; 32];

    /// Deterministic distinct keys for test peers.
    pub(crate) fn key(i: u32) -> PublicKey {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        for (j, b) in k.iter_mut().enumerate().skip(4) {
            *b = (j as u8).wrapping_mul(29).wrapping_add(i as u8);
        }
        PublicKey(k)
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn at(secs: i64, nanos: u32) -> Option<DateTime<Utc>> {
        Some(DateTime::from_timestamp(secs, nanos).unwrap())
    }

    /// How a test dump is cut into messages, counted in units of one peer
    /// header or one allowed IP (the kernel cuts by bytes; the merge logic
    /// the decoder needs is the same). `first` is the first message's budget,
    /// `caps` repeat for the others.
    #[derive(Debug, Clone)]
    pub(crate) struct Plan {
        pub first: usize,
        pub caps: Vec<usize>,
    }

    impl Plan {
        pub(crate) fn one_message() -> Self {
            Plan {
                first: usize::MAX,
                caps: vec![],
            }
        }
    }

    fn device_attrs(iface: &Interface) -> Vec<WireguardAttribute> {
        let mut attrs = vec![
            WireguardAttribute::ListenPort(iface.listen_port),
            WireguardAttribute::Fwmark(iface.fwmark),
            WireguardAttribute::IfIndex(5),
            WireguardAttribute::IfName(iface.name.clone()),
        ];
        if let Some(pk) = iface.public_key {
            attrs.push(WireguardAttribute::PrivateKey(PRIVATE_KEY));
            attrs.push(WireguardAttribute::PublicKey(pk.0));
        }
        attrs
    }

    /// The attributes the kernel sends for a peer before its allowed IPs.
    fn peer_header(p: &Peer) -> Vec<WireguardPeerAttribute> {
        let ts = p
            .last_handshake
            .map(|t| WireguardTimeSpec {
                seconds: t.timestamp(),
                nano_seconds: i64::from(t.timestamp_subsec_nanos()),
            })
            .unwrap_or_default();
        let mut attrs = vec![
            WireguardPeerAttribute::PublicKey(p.public_key.0),
            WireguardPeerAttribute::PresharedKey(if p.has_preshared_key { PSK } else { [0; 32] }),
            WireguardPeerAttribute::LastHandshake(ts),
            WireguardPeerAttribute::PersistentKeepalive(p.persistent_keepalive),
            WireguardPeerAttribute::TxBytes(p.tx_bytes),
            WireguardPeerAttribute::RxBytes(p.rx_bytes),
            WireguardPeerAttribute::ProtocolVersion(1),
        ];
        if let Some(ep) = p.endpoint {
            attrs.push(WireguardPeerAttribute::Endpoint(ep));
        }
        attrs
    }

    fn allowed_ip_attr(n: &IpNet) -> WireguardAllowedIp {
        let family = match n {
            IpNet::V4(_) => WireguardAddressFamily::Ipv4,
            IpNet::V6(_) => WireguardAddressFamily::Ipv6,
        };
        WireguardAllowedIp(vec![
            WireguardAllowedIpAttr::Family(family),
            WireguardAllowedIpAttr::IpAddr(n.addr()),
            WireguardAllowedIpAttr::Cidr(n.prefix_len()),
        ])
    }

    /// Cuts `iface` into dump messages the way the kernel does: device
    /// attributes in the first message only, and a peer that does not fit
    /// repeated in the next message as its key plus the remaining allowed IPs.
    pub(crate) fn split(iface: &Interface, plan: &Plan) -> Vec<WireguardMessage> {
        let mut caps = std::iter::once(plan.first)
            .chain(plan.caps.iter().map(|c| (*c).max(1)).cycle())
            .chain(std::iter::repeat(usize::MAX));
        let mut budget = caps.next().unwrap_or(usize::MAX);
        let mut messages = Vec::new();
        let mut current: Vec<WireguardPeer> = Vec::new();
        let flush = |messages: &mut Vec<WireguardMessage>, current: &mut Vec<WireguardPeer>| {
            let mut attributes = if messages.is_empty() {
                device_attrs(iface)
            } else {
                Vec::new()
            };
            if !current.is_empty() {
                attributes.push(WireguardAttribute::Peers(std::mem::take(current)));
            }
            messages.push(WireguardMessage {
                cmd: WireguardCmd::GetDevice,
                attributes,
            });
        };
        for peer in &iface.peers {
            let mut rest = peer.allowed_ips.as_slice();
            let mut started = false;
            loop {
                if budget == 0 {
                    flush(&mut messages, &mut current);
                    budget = caps.next().unwrap_or(usize::MAX);
                    continue;
                }
                let mut attrs = if started {
                    vec![WireguardPeerAttribute::PublicKey(peer.public_key.0)]
                } else {
                    started = true;
                    budget -= 1;
                    peer_header(peer)
                };
                let take = budget.min(rest.len());
                let (now, later) = rest.split_at(take);
                budget -= take;
                rest = later;
                if !now.is_empty() || !rest.is_empty() {
                    attrs.push(WireguardPeerAttribute::AllowedIps(
                        now.iter().map(allowed_ip_attr).collect(),
                    ));
                }
                current.push(WireguardPeer(attrs));
                if rest.is_empty() {
                    break;
                }
            }
        }
        flush(&mut messages, &mut current);
        messages
    }

    fn header() -> NetlinkHeader {
        let mut h = NetlinkHeader::default();
        h.flags = NLM_F_MULTIPART;
        h.sequence_number = SEQ;
        h.port_number = PORT;
        h
    }

    fn push(out: &mut Vec<u8>, mut msg: NetlinkMessage<GenlMessage<WireguardMessage>>) {
        msg.finalize();
        let start = out.len();
        out.resize(start + msg.buffer_len(), 0);
        msg.serialize(&mut out[start..]);
    }

    /// Frames messages as the kernel sends them: `NLM_F_MULTI` messages of
    /// the family, then `NLMSG_DONE`. `flags_of(i)` adds flags to message `i`
    /// (the `NLMSG_DONE` is message `messages.len()`).
    pub(crate) fn frame_with(
        messages: Vec<WireguardMessage>,
        flags_of: impl Fn(usize) -> u16,
    ) -> Vec<u8> {
        frame_ending(messages, flags_of, 0)
    }

    /// [`frame_with`], with `done_code` as the error code in `NLMSG_DONE`
    /// (the kernel puts a negative errno there when it cut the dump short).
    pub(crate) fn frame_ending(
        messages: Vec<WireguardMessage>,
        flags_of: impl Fn(usize) -> u16,
        done_code: i32,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let count = messages.len();
        for (i, m) in messages.into_iter().enumerate() {
            let mut genl = GenlMessage::new(GenlHeader { cmd: 0, version: 1 }, m, FAMILY);
            genl.finalize();
            let mut h = header();
            h.flags |= flags_of(i);
            push(
                &mut out,
                NetlinkMessage::new(h, NetlinkPayload::InnerMessage(genl)),
            );
        }
        let mut h = header();
        h.flags |= flags_of(count);
        let mut done = DoneMessage::default();
        done.code = done_code;
        push(&mut out, NetlinkMessage::new(h, NetlinkPayload::Done(done)));
        out
    }

    pub(crate) fn frame(messages: Vec<WireguardMessage>) -> Vec<u8> {
        frame_with(messages, |_| 0)
    }

    pub(crate) fn encode(iface: &Interface, plan: &Plan) -> Vec<u8> {
        frame(split(iface, plan))
    }

    fn iface(name: &str, peers: Vec<Peer>) -> Interface {
        Interface {
            name: name.into(),
            public_key: Some(key(1000)),
            listen_port: 51820,
            fwmark: 0,
            driver: DriverKind::Kernel,
            addresses: vec![],
            mtu: None,
            peers,
        }
    }

    fn peer(i: u32) -> Peer {
        Peer {
            public_key: key(i),
            endpoint: Some(SocketAddr::from((
                Ipv4Addr::new(198, 51, 100, i as u8),
                51820,
            ))),
            allowed_ips: vec![net(&format!("10.8.{}.{}/32", i / 256, i % 256))],
            persistent_keepalive: 25,
            has_preshared_key: i.is_multiple_of(2),
            last_handshake: at(1_750_000_000 + i64::from(i), 123_456_789),
            rx_bytes: 1_000 * u64::from(i) + 1,
            tx_bytes: 2_000 * u64::from(i) + 2,
        }
    }

    // ----- the fixtures in tests/fixtures/netlink -----

    /// A real `WG_CMD_GET_DEVICE` reply payload (generic netlink header and
    /// attributes, interface `cn`, one peer), captured with nlmon by the
    /// netlink-packet-wireguard authors (its `src/test.rs`, MIT); their
    /// masking: private key 00..1f, endpoint 1.1.1.1:1111.
    const KERNEL_CAPTURE: [u8; 300] = [
        0x00, 0x01, 0x00, 0x00, 0x06, 0x00, 0x06, 0x00, 0x2c, 0x80, 0x00, 0x00, 0x08, 0x00, 0x07,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x07, 0x00,
        0x02, 0x00, 0x63, 0x6e, 0x00, 0x00, 0x24, 0x00, 0x03, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04,
        0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13,
        0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x24, 0x00, 0x04,
        0x00, 0xcc, 0xaf, 0x10, 0xe1, 0xa9, 0xd7, 0xd0, 0x5f, 0xf2, 0xbd, 0xd2, 0xa0, 0xf1, 0x78,
        0x2d, 0x97, 0x46, 0x9a, 0x1c, 0xf7, 0xbe, 0x88, 0x0f, 0x68, 0x75, 0xa7, 0x79, 0x93, 0x5d,
        0x1d, 0x21, 0x75, 0xc0, 0x00, 0x08, 0x80, 0xbc, 0x00, 0x00, 0x80, 0x24, 0x00, 0x01, 0x00,
        0x77, 0xdc, 0x9a, 0xc0, 0xb3, 0xf0, 0xc5, 0xe7, 0x5b, 0xb8, 0xd3, 0x42, 0x2d, 0x88, 0xec,
        0x92, 0xd1, 0x3a, 0x34, 0x23, 0x22, 0x90, 0x87, 0x82, 0x15, 0x51, 0x57, 0x19, 0x69, 0xde,
        0xa0, 0x44, 0x24, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x06, 0x00, 0x9a, 0x24, 0x77,
        0x69, 0x00, 0x00, 0x00, 0x00, 0x02, 0x0e, 0xa8, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00,
        0x05, 0x00, 0x19, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x08, 0x00, 0x80, 0x40, 0x1d, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x0c, 0x00, 0x07, 0x00, 0x98, 0x44, 0xd0, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x08, 0x00, 0x0a, 0x00, 0x01, 0x00, 0x00, 0x00, 0x14, 0x00, 0x04, 0x00, 0x02, 0x00, 0x04,
        0x57, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00,
        0x09, 0x80, 0x1c, 0x00, 0x00, 0x80, 0x05, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06,
        0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// The capture in a netlink frame (header, then `NLMSG_DONE`).
    fn kernel_capture_dump() -> Vec<u8> {
        let mut out = Vec::new();
        let len = 16 + KERNEL_CAPTURE.len() as u32;
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&FAMILY.to_ne_bytes());
        out.extend_from_slice(&NLM_F_MULTIPART.to_ne_bytes());
        out.extend_from_slice(&SEQ.to_ne_bytes());
        out.extend_from_slice(&PORT.to_ne_bytes());
        out.extend_from_slice(&KERNEL_CAPTURE);
        let mut h = header();
        h.flags = NLM_F_MULTIPART;
        push(
            &mut out,
            NetlinkMessage::new(h, NetlinkPayload::Done(DoneMessage::default())),
        );
        out
    }

    fn kernel_capture_model() -> Interface {
        Interface {
            name: "cn".into(),
            public_key: Some(
                PublicKey::from_base64("zK8Q4anX0F/yvdKg8Xgtl0aaHPe+iA9odad5k10dIXU=").unwrap(),
            ),
            listen_port: 32812,
            fwmark: 0,
            driver: DriverKind::Kernel,
            addresses: vec![],
            mtu: None,
            peers: vec![Peer {
                public_key: PublicKey::from_base64("d9yawLPwxedbuNNCLYjsktE6NCMikIeCFVFXGWneoEQ=")
                    .unwrap(),
                endpoint: Some("1.1.1.1:1111".parse().unwrap()),
                allowed_ips: vec![net("0.0.0.0/0")],
                persistent_keepalive: 25,
                has_preshared_key: false,
                last_handshake: at(1_769_415_834, 262_671_874),
                rx_bytes: 30_426_264,
                tx_bytes: 1_917_056,
            }],
        }
    }

    struct Fixture {
        file: &'static str,
        bytes: fn() -> Vec<u8>,
        model: fn() -> Interface,
        /// Device messages the file must hold (pins how it is cut).
        messages: usize,
    }

    fn no_peers() -> Interface {
        iface("wg0", vec![])
    }

    pub(crate) fn three_peers() -> Interface {
        let mut p2 = peer(2);
        p2.allowed_ips = vec![
            net("10.8.0.2/32"),
            net("fd00:8::2/128"),
            net("192.168.50.0/24"),
        ];
        let mut p3 = peer(3);
        p3.persistent_keepalive = 0;
        p3.endpoint = None;
        let mut i = iface("wg-three", vec![peer(1), p2, p3]);
        i.fwmark = 0xca6c;
        i
    }

    pub(crate) fn split_peer() -> Interface {
        let mut p = peer(7);
        p.allowed_ips = (0u32..300)
            .map(|i| net(&format!("10.{}.{}.0/24", 100 + i / 256, i % 256)))
            .collect();
        iface("wg-split", vec![peer(6), p, peer(8)])
    }

    pub(crate) fn split_peer_plan() -> Plan {
        // peer 6 (1 unit + 1 ip), then peer 7's header and its first 149 IPs.
        Plan {
            first: 2 + 150,
            caps: vec![usize::MAX],
        }
    }

    fn never_handshaken() -> Interface {
        let fresh = Peer {
            public_key: key(40),
            endpoint: None,
            allowed_ips: vec![net("10.9.0.40/32")],
            persistent_keepalive: 0,
            has_preshared_key: true,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
        };
        let mut i = iface("wg-new", vec![fresh]);
        i.public_key = None;
        i.listen_port = 0;
        i
    }

    fn ipv6_endpoint() -> Interface {
        let mut a = peer(60);
        a.endpoint = Some("[2001:db8::60]:51820".parse().unwrap());
        a.allowed_ips = vec![net("fd00:60::/64"), net("2001:db8:60::1/128")];
        let mut b = peer(61);
        b.endpoint = Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0x1c, 0x2d, 0x3e, 0x61),
            40000,
            0,
            3,
        )));
        iface("wg6", vec![a, b])
    }

    /// 5,000 peers, one allowed IP each; every seventh without endpoint or
    /// handshake.
    fn five_thousand_peers() -> Interface {
        let peers = (0..5000u32)
            .map(|i| {
                let mut p = peer(i);
                if i % 7 == 0 {
                    p.last_handshake = None;
                    p.endpoint = None;
                }
                p
            })
            .collect();
        iface("wg-big", peers)
    }

    fn five_thousand_peers_plan() -> Plan {
        // 81 units is 40 peers and a half: every other message ends in a
        // peer header whose allowed IP follows in the next message.
        Plan {
            first: 30,
            caps: vec![81],
        }
    }

    /// The first message of `split_peer` (peer 6, then peer 7 with 149 of
    /// its 300 allowed IPs), ended by an `NLMSG_DONE` carrying `-EMSGSIZE`:
    /// a dump the kernel cut short.
    pub(crate) fn done_with_error() -> Vec<u8> {
        let mut messages = split(&split_peer(), &split_peer_plan());
        messages.truncate(1);
        frame_ending(messages, |_| 0, -EMSGSIZE)
    }

    const EMSGSIZE: i32 = 90;

    /// A fixture file that must fail to decode: file, generator, error.
    type ErrorFixture = (&'static str, fn() -> Vec<u8>, DecodeError);

    /// Fixture files that must fail to decode, with the error they give.
    fn error_fixtures() -> Vec<ErrorFixture> {
        vec![(
            "done-with-error.bin",
            done_with_error,
            DecodeError::DumpAborted { errno: EMSGSIZE },
        )]
    }

    fn fixtures() -> Vec<Fixture> {
        vec![
            Fixture {
                file: "kernel-capture-one-peer.bin",
                bytes: kernel_capture_dump,
                model: kernel_capture_model,
                messages: 1,
            },
            Fixture {
                file: "no-peers.bin",
                bytes: || encode(&no_peers(), &Plan::one_message()),
                model: no_peers,
                messages: 1,
            },
            Fixture {
                file: "three-peers-one-message.bin",
                bytes: || encode(&three_peers(), &Plan::one_message()),
                model: three_peers,
                messages: 1,
            },
            Fixture {
                file: "split-peer-300-allowed-ips.bin",
                bytes: || encode(&split_peer(), &split_peer_plan()),
                model: split_peer,
                messages: 2,
            },
            Fixture {
                file: "never-handshaken.bin",
                bytes: || encode(&never_handshaken(), &Plan::one_message()),
                model: never_handshaken,
                messages: 1,
            },
            Fixture {
                file: "ipv6-endpoint.bin",
                bytes: || encode(&ipv6_endpoint(), &Plan::one_message()),
                model: ipv6_endpoint,
                messages: 1,
            },
            Fixture {
                file: "five-thousand-peers.bin",
                bytes: || encode(&five_thousand_peers(), &five_thousand_peers_plan()),
                model: five_thousand_peers,
                messages: 125,
            },
        ]
    }

    fn fixture_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/netlink")
    }

    pub(crate) fn fixture(file: &str) -> Vec<u8> {
        let path = fixture_dir().join(file);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The checked-in fixture files are exactly what the emitters produce
    /// for the models above. `WGHOOK_BLESS=1` rewrites them after a change.
    #[test]
    fn fixture_files_match_their_generators() {
        let bless = std::env::var_os("WGHOOK_BLESS").is_some();
        let files = fixtures().into_iter().map(|f| (f.file, f.bytes));
        let error_files = error_fixtures()
            .into_iter()
            .map(|(file, bytes, _)| (file, bytes));
        for (file, bytes) in files.chain(error_files) {
            let generated = bytes();
            if bless {
                std::fs::create_dir_all(fixture_dir()).unwrap();
                std::fs::write(fixture_dir().join(file), &generated).unwrap();
            }
            assert!(
                fixture(file) == generated,
                "{file} differs from its generator (WGHOOK_BLESS=1 rewrites it)"
            );
        }
    }

    #[test]
    fn fixture_files_decode_to_their_models() {
        for f in fixtures() {
            let bytes = fixture(f.file);
            assert_eq!(decode_dump(&bytes).unwrap().len(), f.messages, "{}", f.file);
            assert_eq!(
                decode_device_bytes(&bytes).unwrap(),
                (f.model)(),
                "{}",
                f.file
            );
        }
    }

    #[test]
    fn error_fixture_files_fail_with_their_errors() {
        for (file, _, error) in error_fixtures() {
            assert_eq!(decode_device_bytes(&fixture(file)), Err(error), "{file}");
        }
    }

    /// The issue asks for a raw-byte dump of 5,000 peers over many
    /// messages; this pins what it decodes to without the generator.
    #[test]
    fn five_thousand_peer_fixture_decodes_every_peer_in_order() {
        let bytes = fixture("five-thousand-peers.bin");
        assert!(bytes.len() < 1_100_000, "{} bytes", bytes.len());
        let messages = decode_dump(&bytes).unwrap();
        assert_eq!(messages.len(), 125);
        // Messages 3, 5, ... 125 open with the rest of a split peer: its key
        // and its allowed IP only.
        let continued: Vec<usize> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                m.attributes.iter().any(|a| {
                    matches!(a, WireguardAttribute::Peers(p) if p.first().is_some_and(|p| p.len() == 2))
                })
            })
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(continued, (3..=125).step_by(2).collect::<Vec<_>>());
        let iface = decode_device(&messages).unwrap();
        assert_eq!(iface.name, "wg-big");
        assert_eq!(iface.listen_port, 51820);
        assert_eq!(iface.public_key, Some(key(1000)));
        assert_eq!(iface.peers.len(), 5000);
        // No peer lost, duplicated or merged across a message boundary.
        for (i, p) in iface.peers.iter().enumerate() {
            assert_eq!(p.public_key, key(i as u32), "peer {i}");
            assert_eq!(p.allowed_ips.len(), 1, "peer {i}");
        }
        assert_eq!(
            iface.peers.iter().filter(|p| p.endpoint.is_none()).count(),
            715
        );

        let first = &iface.peers[0];
        assert_eq!(first.allowed_ips, [net("10.8.0.0/32")]);
        assert_eq!((first.endpoint, first.last_handshake), (None, None));
        assert!(first.has_preshared_key);
        assert_eq!((first.rx_bytes, first.tx_bytes), (1, 2));

        let middle = &iface.peers[2500];
        assert_eq!(middle.allowed_ips, [net("10.8.9.196/32")]);
        assert_eq!(
            middle.endpoint,
            Some("198.51.100.196:51820".parse().unwrap())
        );
        assert_eq!(middle.last_handshake, at(1_750_002_500, 123_456_789));
        assert_eq!(middle.persistent_keepalive, 25);
        assert!(middle.has_preshared_key);
        assert_eq!((middle.rx_bytes, middle.tx_bytes), (2_500_001, 5_000_002));

        let last = &iface.peers[4999];
        assert_eq!(last.allowed_ips, [net("10.8.19.135/32")]);
        assert_eq!(last.endpoint, Some("198.51.100.135:51820".parse().unwrap()));
        assert_eq!(last.last_handshake, at(1_750_004_999, 123_456_789));
        assert!(!last.has_preshared_key);
        assert_eq!((last.rx_bytes, last.tx_bytes), (4_999_001, 9_998_002));
    }

    #[test]
    fn dump_cut_short_by_an_error_in_done_is_an_error_not_fewer_peers() {
        // Emitter-built: every prefix of a real dump, ended by NLMSG_DONE
        // carrying a negative errno, fails; with code 0 it decodes.
        let messages = split(
            &split_peer(),
            &Plan {
                first: 3,
                caps: vec![40],
            },
        );
        for kept in 1..=messages.len() {
            let part = messages[..kept].to_vec();
            assert_eq!(
                decode_device_bytes(&frame_ending(part.clone(), |_| 0, -EMSGSIZE)),
                Err(DecodeError::DumpAborted { errno: EMSGSIZE }),
                "{kept} messages"
            );
            assert!(decode_device_bytes(&frame_ending(part, |_| 0, 0)).is_ok());
        }
        // Another errno, and a positive code (not an error, as in wg).
        let e = decode_device_bytes(&frame_ending(messages.clone(), |_| 0, -4)).unwrap_err();
        assert_eq!(e, DecodeError::DumpAborted { errno: 4 });
        assert_eq!(e.errno(), None, "a mid-dump errno is not the request's");
        assert!(e.to_string().contains("cut the dump short"), "{e}");
        assert!(decode_device_bytes(&frame_ending(messages, |_| 0, 5)).is_ok());

        // Raw bytes: the no-peers dump with its NLMSG_DONE rewritten by hand
        // to carry -ENOBUFS (-105).
        let mut bytes = fixture("no-peers.bin");
        let done_at = bytes.len() - 20;
        let done: [u8; 20] = [
            0x14, 0x00, 0x00, 0x00, // length 20
            0x03, 0x00, // NLMSG_DONE
            0x02, 0x00, // NLM_F_MULTI
            0x07, 0x00, 0x00, 0x00, // sequence 7
            0x42, 0x42, 0x00, 0x00, // port 0x4242
            0x97, 0xff, 0xff, 0xff, // -105
        ];
        // The part replaced is the fixture's own NLMSG_DONE with code 0.
        assert_eq!(bytes[done_at..done_at + 16], done[..16]);
        assert_eq!(bytes[done_at + 16..], [0; 4]);
        bytes[done_at..].copy_from_slice(&done);
        assert_eq!(
            decode_device_bytes(&bytes),
            Err(DecodeError::DumpAborted { errno: 105 })
        );
        // A DONE without a code at all (shorter than any kernel sends) ends
        // the dump like a zero.
        let mut short = fixture("no-peers.bin");
        short.truncate(done_at);
        short.extend_from_slice(&[0x10, 0, 0, 0]);
        short.extend_from_slice(&done[4..16]);
        assert_eq!(decode_device_bytes(&short), Ok(no_peers()));
    }

    #[test]
    fn kernel_capture_fixture_is_the_real_reply() {
        // The file frames the captured bytes unchanged.
        let bytes = fixture("kernel-capture-one-peer.bin");
        assert_eq!(&bytes[16..16 + KERNEL_CAPTURE.len()], &KERNEL_CAPTURE[..]);
        let iface = decode_device_bytes(&bytes).unwrap();
        assert_eq!(
            iface.peers[0].last_handshake.unwrap().to_rfc3339(),
            "2026-01-26T08:23:54.262671874+00:00"
        );
    }

    #[test]
    fn split_peer_fixture_repeats_the_peer_in_the_second_message() {
        let messages = decode_dump(&fixture("split-peer-300-allowed-ips.bin")).unwrap();
        let peers_of = |m: &WireguardMessage| -> Vec<WireguardPeer> {
            m.attributes
                .iter()
                .find_map(|a| match a {
                    WireguardAttribute::Peers(p) => Some(p.clone()),
                    _ => None,
                })
                .unwrap()
        };
        let (first, second) = (peers_of(&messages[0]), peers_of(&messages[1]));
        assert_eq!(first.len(), 2);
        assert_eq!(second.len(), 2, "continuation of peer 7, then peer 8");
        let ips = |p: &WireguardPeer| {
            p.iter()
                .find_map(|a| match a {
                    WireguardPeerAttribute::AllowedIps(v) => Some(v.len()),
                    _ => None,
                })
                .unwrap_or(0)
        };
        assert_eq!((ips(&first[1]), ips(&second[0])), (149, 151));
        // The continuation is the key and the remaining IPs only.
        assert_eq!(second[0].len(), 2);
        let iface = decode_device(&messages).unwrap();
        assert_eq!(iface.peers.len(), 3);
        assert_eq!(
            iface.peers[1].allowed_ips,
            split_peer().peers[1].allowed_ips
        );
    }

    #[test]
    fn five_thousand_peers_over_many_messages() {
        let peers: Vec<Peer> = (0..5000u32)
            .map(|i| {
                let mut p = peer(i);
                if i % 3 == 0 {
                    p.allowed_ips.push(net(&format!("fd00:{:x}::/64", i)));
                }
                if i % 7 == 0 {
                    p.last_handshake = None;
                    p.endpoint = None;
                }
                p
            })
            .collect();
        let model = iface("wg-big", peers);
        let bytes = encode(
            &model,
            &Plan {
                first: 3,
                caps: vec![40, 37, 64],
            },
        );
        let messages = decode_dump(&bytes).unwrap();
        assert!(messages.len() > 100, "{} messages", messages.len());
        assert_eq!(decode_device(&messages).unwrap(), model);
    }

    #[test]
    fn emitted_split_peer_is_merged_by_key_in_order() {
        let mut model = split_peer();
        // Cut into many small messages: the 300 IPs span 30 of them.
        let bytes = encode(
            &model,
            &Plan {
                first: 1,
                caps: vec![10],
            },
        );
        assert!(decode_dump(&bytes).unwrap().len() > 30);
        assert_eq!(decode_device_bytes(&bytes).unwrap(), model);
        // A peer with the same key that is NOT adjacent stays separate, as in `wg`.
        model.peers.push(peer(6));
        let got = decode_device_bytes(&encode(&model, &Plan::one_message())).unwrap();
        assert_eq!(got.peers.len(), 4);
    }

    #[test]
    fn private_and_preshared_keys_are_not_kept() {
        let model = three_peers();
        let iface = decode_device_bytes(&encode(&model, &Plan::one_message())).unwrap();
        assert!(iface.peers[1].has_preshared_key);
        assert!(!iface.peers[0].has_preshared_key);
        let debug = format!("{iface:?}");
        let json = serde_json::to_string(&iface).unwrap();
        for secret in [PRIVATE_KEY, PSK] {
            let b64 = PublicKey(secret).to_base64();
            assert!(!debug.contains(&b64) && !json.contains(&b64));
            assert!(!debug.contains(&format!("{:?}", secret)));
        }
    }

    #[test]
    fn interrupted_dump_is_reported_as_interrupted() {
        let messages = split(&split_peer(), &split_peer_plan());
        for flagged in 0..=messages.len() {
            let bytes = frame_with(messages.clone(), |i| {
                if i == flagged {
                    NLM_F_DUMP_INTR
                } else {
                    0
                }
            });
            assert_eq!(
                decode_device_bytes(&bytes),
                Err(DecodeError::Interrupted),
                "flag on message {flagged}"
            );
        }
    }

    #[test]
    fn kernel_error_message_gives_its_errno() {
        let mut h = NetlinkHeader::default();
        h.sequence_number = SEQ;
        let mut err = ErrorMessage::default();
        err.code = std::num::NonZeroI32::new(-1); // -EPERM
        let mut out = Vec::new();
        push(&mut out, NetlinkMessage::new(h, NetlinkPayload::Error(err)));
        let e = decode_device_bytes(&out).unwrap_err();
        assert_eq!(e, DecodeError::Kernel { errno: 1 });
        assert_eq!(e.errno(), Some(1));
        assert!(e.to_string().contains("not permitted"), "{e}");
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for f in fixtures() {
            let bytes = fixture(f.file);
            // Every cut of the small files; of the 5,000-peer one, 64 spread
            // over it (decoding each of its million prefixes would take hours).
            let step = if bytes.len() > 100_000 {
                bytes.len() / 64
            } else {
                1
            };
            for cut in (0..bytes.len()).step_by(step).chain([bytes.len() - 1]) {
                assert!(
                    decode_device_bytes(&bytes[..cut]).is_err(),
                    "{} cut at {cut}",
                    f.file
                );
            }
        }
    }

    #[test]
    fn empty_dump_and_missing_done_are_errors() {
        assert_eq!(decode_device_bytes(&[]), Err(DecodeError::Incomplete));
        assert_eq!(
            decode_device_bytes(&frame(vec![])),
            Err(DecodeError::NoDevice)
        );
        let mut bytes = encode(&no_peers(), &Plan::one_message());
        bytes.truncate(bytes.len() - 20); // drop NLMSG_DONE exactly
        assert_eq!(decode_device_bytes(&bytes), Err(DecodeError::Incomplete));
    }

    fn with_peer(peer: Vec<WireguardPeerAttribute>) -> Vec<u8> {
        frame(vec![WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![
                WireguardAttribute::IfName("wg0".into()),
                WireguardAttribute::Peers(vec![WireguardPeer(peer)]),
            ],
        }])
    }

    #[test]
    fn empty_cidr_attribute_is_an_error_not_a_panic() {
        let bytes = with_peer(vec![
            WireguardPeerAttribute::PublicKey(key(1).0),
            WireguardPeerAttribute::AllowedIps(vec![WireguardAllowedIp(vec![
                WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
                WireguardAllowedIpAttr::IpAddr(Ipv4Addr::LOCALHOST.into()),
                WireguardAllowedIpAttr::Other(DefaultNla::new(WGALLOWEDIP_A_CIDR_MASK, vec![])),
            ])]),
        ]);
        assert!(matches!(
            decode_device_bytes(&bytes),
            Err(DecodeError::Malformed { index: 0, .. })
        ));
    }

    #[test]
    fn impossible_peer_values_are_errors() {
        let k = key(1);
        let no_key = with_peer(vec![WireguardPeerAttribute::RxBytes(1)]);
        assert_eq!(
            decode_device_bytes(&no_key),
            Err(DecodeError::PeerWithoutKey { index: 0 })
        );

        let ip = |family, addr: IpAddr, cidr| {
            with_peer(vec![
                WireguardPeerAttribute::PublicKey(k.0),
                WireguardPeerAttribute::AllowedIps(vec![WireguardAllowedIp(vec![
                    WireguardAllowedIpAttr::Family(family),
                    WireguardAllowedIpAttr::IpAddr(addr),
                    WireguardAllowedIpAttr::Cidr(cidr),
                ])]),
            ])
        };
        let v4: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        for bad in [
            ip(WireguardAddressFamily::Ipv6, v4, 32),
            ip(WireguardAddressFamily::Ipv4, v4, 33),
            ip(WireguardAddressFamily::Other(99), v4, 8),
        ] {
            assert!(
                matches!(decode_device_bytes(&bad), Err(DecodeError::BadPeer { peer, .. }) if peer == k)
            );
        }
        let ts = with_peer(vec![
            WireguardPeerAttribute::PublicKey(k.0),
            WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
                seconds: 1,
                nano_seconds: 1_000_000_000,
            }),
        ]);
        assert!(matches!(
            decode_device_bytes(&ts),
            Err(DecodeError::BadPeer { .. })
        ));
    }

    #[test]
    fn device_attributes_must_agree_and_name_the_device() {
        let named = |n: &str| WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::IfName(n.into())],
        };
        assert_eq!(
            decode_device(&[named("wg0"), named("wg1")]),
            Err(DecodeError::MixedDevices {
                first: "wg0".into(),
                second: "wg1".into()
            })
        );
        let unnamed = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::ListenPort(1)],
        };
        assert_eq!(decode_device(&[unnamed]), Err(DecodeError::MissingName));
        assert_eq!(decode_device(&[]), Err(DecodeError::NoDevice));
    }

    #[test]
    fn malformed_private_key_error_does_not_quote_it() {
        let secret = vec![0x5Au8; 31];
        let bytes = frame(vec![WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::Other(DefaultNla::new(3, secret))],
        }]);
        let e = decode_device_bytes(&bytes).unwrap_err().to_string();
        assert!(e.contains("PRIVATE_KEY"), "{e}");
        assert!(
            !e.contains("90") && !e.contains("5a") && !e.contains("5A"),
            "{e}"
        );
    }

    #[test]
    fn family_reply_gives_the_id_or_the_errno() {
        use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
        use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
        let mut genl = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::NewFamily,
            nlas: vec![
                GenlCtrlAttrs::FamilyName("wireguard".into()),
                GenlCtrlAttrs::FamilyId(0x1c),
                GenlCtrlAttrs::Version(1),
            ],
        });
        genl.finalize();
        let mut msg = NetlinkMessage::from(genl);
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        assert_eq!(decode_family_reply(&bytes), Ok(0x1c));
        for cut in 0..bytes.len() {
            assert!(decode_family_reply(&bytes[..cut]).is_err(), "cut at {cut}");
        }

        let mut err = ErrorMessage::default();
        err.code = std::num::NonZeroI32::new(-2); // -ENOENT
        let mut msg = NetlinkMessage::<GenlMessage<WireguardMessage>>::new(
            NetlinkHeader::default(),
            NetlinkPayload::Error(err),
        );
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        assert_eq!(
            decode_family_reply(&bytes),
            Err(DecodeError::Kernel { errno: 2 })
        );
    }

    // ----- property tests -----

    fn arb_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, p)| IpNet::new(IpAddr::from(a), p).unwrap()),
            (any::<[u8; 16]>(), 0u8..=128)
                .prop_map(|(a, p)| IpNet::new(IpAddr::from(a), p).unwrap()),
        ]
    }

    fn arb_endpoint() -> impl Strategy<Value = Option<SocketAddr>> {
        proptest::option::of(prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::from((a, p))),
            (any::<[u8; 16]>(), any::<u16>(), any::<u32>(), any::<u32>())
                .prop_map(|(a, p, f, s)| SocketAddr::V6(SocketAddrV6::new(a.into(), p, f, s))),
        ])
    }

    fn arb_peer() -> impl Strategy<Value = Peer> {
        (
            any::<[u8; 32]>(),
            arb_endpoint(),
            proptest::collection::vec(arb_net(), 0..40),
            any::<u16>(),
            any::<bool>(),
            proptest::option::of((1i64..4_000_000_000, 0u32..1_000_000_000)),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(k, endpoint, allowed_ips, ka, psk, hs, rx, tx)| Peer {
                public_key: PublicKey(k),
                endpoint,
                allowed_ips,
                persistent_keepalive: ka,
                has_preshared_key: psk,
                last_handshake: hs.map(|(s, n)| DateTime::from_timestamp(s, n).unwrap()),
                rx_bytes: rx,
                tx_bytes: tx,
            })
    }

    fn arb_interface() -> impl Strategy<Value = Interface> {
        (
            "[a-z][a-z0-9-]{0,14}",
            proptest::option::of(any::<[u8; 32]>()),
            any::<u16>(),
            any::<u32>(),
            proptest::collection::vec(arb_peer(), 0..12),
        )
            .prop_map(|(name, pk, port, fwmark, mut peers)| {
                // Keys are unique on an interface; make them so.
                for (i, p) in peers.iter_mut().enumerate() {
                    p.public_key.0[..4].copy_from_slice(&(i as u32).to_le_bytes());
                }
                Interface {
                    name,
                    public_key: pk.map(PublicKey),
                    listen_port: port,
                    fwmark,
                    driver: DriverKind::Kernel,
                    addresses: vec![],
                    mtu: None,
                    peers,
                }
            })
    }

    proptest! {
        #[test]
        fn any_model_survives_encode_split_decode(
            model in arb_interface(),
            first in 0usize..8,
            caps in proptest::collection::vec(1usize..12, 1..4),
        ) {
            let bytes = encode(&model, &Plan { first, caps });
            prop_assert_eq!(decode_device_bytes(&bytes), Ok(model));
        }

        #[test]
        fn mutated_dumps_never_panic(
            model in arb_interface(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = encode(&model, &Plan { first: 3, caps: vec![5] });
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let end = cut.index(bytes.len() + 1);
            let _ = decode_device_bytes(&bytes[..end]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_device_bytes(&bytes);
        }
    }
}
