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
///
/// A well-formed dump is decoded in one pass straight into the model
/// ([`fast`]); anything else goes through [`decode_dump`] and
/// [`decode_device`], the reference, which give the same interface or the
/// precise error.
pub fn decode_device_bytes(buf: &[u8]) -> Result<Interface, DecodeError> {
    if let Some(iface) = fast::decode(buf) {
        return Ok(iface);
    }
    decode_device_reference(buf)
}

/// The same without the one-pass fast path: what the fast path must agree
/// with whenever it accepts a dump (the fuzz target compares the two).
pub fn decode_device_reference(buf: &[u8]) -> Result<Interface, DecodeError> {
    let messages = decode_dump(buf)?;
    decode_device(&messages)
}

/// The fast path alone (`None`: it leaves the dump to the reference).
#[doc(hidden)]
pub fn decode_device_fast(buf: &[u8]) -> Option<Interface> {
    fast::decode(buf)
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

mod fast;
use fast::{error_code, GENL_HDRLEN, NLMSG_MIN_TYPE};
#[cfg(test)]
mod tests;
