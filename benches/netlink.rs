//! Benchmark for the kernel path (issue 13): decoding one
//! `WG_CMD_GET_DEVICE` dump of 100,000 peers (budget <= 30 ms), the bytes
//! cut into messages as the kernel cuts them for wghook's 32 KiB receive
//! buffer. Results: BENCHMARKS.md.
//!
//! The dump is built with the project's test encoder
//! (`src/backend/netlink_encode.rs`), included here by path: it stays
//! `#[cfg(test)]` in the library, so no test code ships, and it builds
//! against the public model through the `model` alias below.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, Criterion};
use wghook::backend::netlink_decode::{decode_device, decode_device_bytes, decode_dump};

/// What the encoder reaches as `crate::model`.
mod model {
    pub use wghook::model::*;
}

#[allow(dead_code)]
#[path = "../src/backend/netlink_encode.rs"]
mod netlink_encode;

use netlink_encode::{at, iface, key, net, Plan};
use wghook::model::Peer;

const PEERS: u32 = 100_000;
/// A dump skb for a 32 KiB receive buffer (`SKB_WITH_OVERHEAD(32768)`).
const MESSAGE_BYTES: usize = 32768 - 320;

/// 100,000 peers, each with a v4 /32 and every third also a v6 /128; an
/// endpoint (every fifth over IPv6), a handshake and counters; every
/// tenth never handshook and has no endpoint.
fn dump() -> (Vec<u8>, usize) {
    let peers = (0..PEERS)
        .map(|i| {
            let mut p = Peer {
                public_key: key(i),
                endpoint: Some(SocketAddr::from((
                    Ipv4Addr::new(198, 51, (i >> 8) as u8, i as u8),
                    51820,
                ))),
                allowed_ips: vec![net(&format!(
                    "10.{}.{}.{}/32",
                    i >> 16 & 255,
                    i >> 8 & 255,
                    i & 255
                ))]
                .into(),
                persistent_keepalive: 25,
                has_preshared_key: i.is_multiple_of(2),
                last_handshake: at(1_750_000_000 + i64::from(i), 123_456_789),
                rx_bytes: 1_000 * u64::from(i) + 1,
                tx_bytes: 2_000 * u64::from(i) + 2,
            };
            if i % 3 == 0 {
                p.allowed_ips
                    .push(net(&format!("fd00::{:x}:{:x}/128", i >> 16, i & 0xffff)));
            }
            if i % 5 == 0 {
                p.endpoint = Some(SocketAddr::from((
                    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16),
                    51820,
                )));
            }
            if i % 10 == 0 {
                p.endpoint = None;
                p.last_handshake = None;
            }
            p
        })
        .collect();
    let model = iface("wg-100k", peers);
    let bytes = netlink_encode::encode(&model, &Plan::kernel(&model, MESSAGE_BYTES));
    let decoded = decode_device_bytes(&bytes).expect("the dump decodes");
    assert_eq!(decoded, model, "the dump decodes to the model it encodes");
    assert_eq!(decode_device(&decode_dump(&bytes).unwrap()).unwrap(), model);
    let messages = decode_dump(&bytes).unwrap().len();
    (bytes, messages)
}

fn netlink_decode(c: &mut Criterion) {
    let (bytes, messages) = dump();
    eprintln!(
        "netlink_decode_100k_peers: {} bytes in {messages} messages",
        bytes.len()
    );
    c.bench_function("netlink_decode_100k_peers", |b| {
        b.iter(|| decode_device_bytes(black_box(&bytes)).unwrap())
    });
    // The decoder before issue 13, still the reference path for errors:
    // the crate's message tree, then the model built from it.
    c.bench_function("netlink_decode_100k_peers_reference", |b| {
        b.iter(|| decode_device(&decode_dump(black_box(&bytes)).unwrap()).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = netlink_decode
}
criterion_main!(benches);
