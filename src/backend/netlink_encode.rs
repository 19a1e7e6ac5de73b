//! Test support: encodes a [`model::Interface`](crate::model::Interface) into the
//! `WG_CMD_GET_DEVICE` dump the kernel would send (cut into messages as the
//! kernel cuts them), and the fixtures built with it. Used by the tests of
//! [`netlink_decode`](super::netlink_decode) and [`netlink`](super::netlink).

use std::net::{Ipv4Addr, SocketAddr};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use netlink_packet_core::{
    DoneMessage, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_MULTIPART,
};
use netlink_packet_generic::{GenlHeader, GenlMessage};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardTimeSpec,
};

use crate::model::{DriverKind, Interface, Peer, PublicKey};

/// Family id the test dumps claim; the kernel assigns one at module load.
pub(crate) const FAMILY: u16 = 0x15;
pub(crate) const SEQ: u32 = 7;
pub(crate) const PORT: u32 = 0x4242;
/// Stand-in private key put in every test dump; it must never come out.
pub(crate) const PRIVATE_KEY: [u8; 32] = [0xA5; 32];
pub(crate) const PSK: [u8; 32] = [0x3C; 32];

/// Deterministic distinct keys for test peers.
pub(crate) fn key(i: u32) -> PublicKey {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    for (j, b) in k.iter_mut().enumerate().skip(4) {
        *b = (j as u8).wrapping_mul(29).wrapping_add(i as u8);
    }
    PublicKey(k)
}

pub(crate) fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub(crate) fn at(secs: i64, nanos: u32) -> Option<DateTime<Utc>> {
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

    /// The cut the kernel makes when each message may hold `message_bytes`
    /// (netlink header included): it fills a message with whole peer
    /// headers while they fit, then with one allowed IP after another, and
    /// continues a peer whose allowed IPs did not fit in the next message
    /// (its key repeated). wghook receives into 32 KiB, so the kernel's dump
    /// skbs hold about `32768 - 320` bytes (`SKB_WITH_OVERHEAD`).
    pub(crate) fn kernel(iface: &Interface, message_bytes: usize) -> Self {
        use netlink_packet_core::{Emitable, NLA_HEADER_SIZE};
        const NLMSG_AND_GENL_HEADERS: usize = 16 + 4;
        let body = message_bytes.saturating_sub(NLMSG_AND_GENL_HEADERS + NLA_HEADER_SIZE);
        let device = device_attrs(iface).as_slice().buffer_len();
        // The key a continued peer repeats, inside its own nest and an
        // allowed IPs nest.
        let continuation = 3 * NLA_HEADER_SIZE + 32;
        let mut caps = Vec::new();
        let (mut used, mut units) = (device, 0usize);
        for peer in &iface.peers {
            let head = 2 * NLA_HEADER_SIZE + peer_header(peer).as_slice().buffer_len();
            if used + head > body && units > 0 {
                caps.push(units);
                (used, units) = (0, 0);
            }
            used += head;
            units += 1;
            for ip in &peer.allowed_ips {
                let cost = allowed_ip_attr(ip).buffer_len();
                if used + cost > body {
                    caps.push(units);
                    (used, units) = (continuation, 0);
                }
                used += cost;
                units += 1;
            }
        }
        caps.push(units.max(1));
        let first = caps.remove(0);
        Plan { first, caps }
    }
}

pub(crate) fn device_attrs(iface: &Interface) -> Vec<WireguardAttribute> {
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
pub(crate) fn peer_header(p: &Peer) -> Vec<WireguardPeerAttribute> {
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

pub(crate) fn allowed_ip_attr(n: &IpNet) -> WireguardAllowedIp {
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

pub(crate) fn header() -> NetlinkHeader {
    let mut h = NetlinkHeader::default();
    h.flags = NLM_F_MULTIPART;
    h.sequence_number = SEQ;
    h.port_number = PORT;
    h
}

pub(crate) fn push(out: &mut Vec<u8>, mut msg: NetlinkMessage<GenlMessage<WireguardMessage>>) {
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

pub(crate) fn iface(name: &str, peers: Vec<Peer>) -> Interface {
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

pub(crate) fn peer(i: u32) -> Peer {
    Peer {
        public_key: key(i),
        endpoint: Some(SocketAddr::from((
            Ipv4Addr::new(198, 51, 100, i as u8),
            51820,
        ))),
        allowed_ips: vec![net(&format!("10.8.{}.{}/32", i / 256, i % 256))].into(),
        persistent_keepalive: 25,
        has_preshared_key: i.is_multiple_of(2),
        last_handshake: at(1_750_000_000 + i64::from(i), 123_456_789),
        rx_bytes: 1_000 * u64::from(i) + 1,
        tx_bytes: 2_000 * u64::from(i) + 2,
    }
}

pub(crate) fn three_peers() -> Interface {
    let mut p2 = peer(2);
    p2.allowed_ips = vec![
        net("10.8.0.2/32"),
        net("fd00:8::2/128"),
        net("192.168.50.0/24"),
    ]
    .into();
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

/// The first message of `split_peer` (peer 6, then peer 7 with 149 of
/// its 300 allowed IPs), ended by an `NLMSG_DONE` carrying `-EMSGSIZE`:
/// a dump the kernel cut short.
pub(crate) fn done_with_error() -> Vec<u8> {
    let mut messages = split(&split_peer(), &split_peer_plan());
    messages.truncate(1);
    frame_ending(messages, |_| 0, -EMSGSIZE)
}

pub(crate) const EMSGSIZE: i32 = 90;
