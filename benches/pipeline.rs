//! Benchmarks for the per-poll hot paths, with the budgets from the design:
//! tracker on 100,000 peers (no change <= 20 ms, also with the peers listed
//! in a new order every poll as wireguard-go does; 10 % changed <= 40 ms),
//! parsing a 10,000-peer wireguard-go UAPI reply (<= 10 ms), rendering and
//! serialising 10,000 connect payloads (<= 20 ms). Results: BENCHMARKS.md.

use std::hint::black_box;

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ipnet::IpNet;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::SeedableRng as _;
use wghook::backend::uapi_parse;
use wghook::event::{wg_portal, RenderContext};
use wghook::model::{DriverKind, Interface, Peer, PublicKey, Snapshot};
use wghook::tracker::{self, Announce, Settings};

const PEERS: usize = 100_000;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_780_000_000, 0).unwrap()
}

fn key(i: usize) -> PublicKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(i as u64).to_le_bytes());
    k[8] = 0xa5;
    PublicKey(k)
}

/// A host with `PEERS` peers over 4 interfaces; half of them connected.
fn snapshot() -> Snapshot {
    let per = PEERS / 4;
    let interfaces = (0..4)
        .map(|n| Interface {
            name: format!("wg{n}"),
            public_key: Some(key(1_000_000 + n)),
            listen_port: 51820 + n as u16,
            driver: DriverKind::Kernel,
            peers: (0..per)
                .map(|j| {
                    let i = n * per + j;
                    Peer {
                        public_key: key(i),
                        endpoint: Some(
                            format!("198.51.{}.{}:51820", (i / 250) % 250, i % 250)
                                .parse()
                                .unwrap(),
                        ),
                        allowed_ips: vec![format!(
                            "10.{}.{}.{}/32",
                            i >> 16 & 255,
                            i >> 8 & 255,
                            i & 255
                        )
                        .parse::<IpNet>()
                        .unwrap()]
                        .into(),
                        persistent_keepalive: 25,
                        has_preshared_key: false,
                        last_handshake: i.is_multiple_of(2).then(|| now() - TimeDelta::seconds(30)),
                        rx_bytes: i as u64 * 7,
                        tx_bytes: i as u64 * 11,
                    }
                })
                .collect(),
            ..Interface::default()
        })
        .collect();
    Snapshot {
        interfaces,
        unreadable: vec![],
    }
}

fn settings() -> Settings {
    Settings {
        connect_threshold: TimeDelta::seconds(180),
        endpoint_updates: true,
        announce_on_start: Announce::Connected,
        host: "bench".into(),
        filter: Default::default(),
    }
}

/// Every tenth peer: new handshake, more traffic, and every other one of
/// those roams (an update event) or connects.
fn changed(mut s: Snapshot) -> Snapshot {
    for iface in &mut s.interfaces {
        for (j, p) in iface.peers.iter_mut().enumerate() {
            if j % 10 == 0 {
                p.last_handshake = Some(now() + TimeDelta::seconds(1));
                p.rx_bytes += 1000;
                p.tx_bytes += 2000;
                if j % 20 == 0 {
                    p.endpoint = Some("203.0.113.1:4000".parse().unwrap());
                }
            }
        }
    }
    s
}

/// The same peers in another order on every interface (wireguard-go lists
/// them in Go map order, which can change on every reply). Deterministic:
/// seeded by `seed`. Copied afterwards, so its allocations are in listing
/// order like a freshly parsed reply's.
fn shuffled(mut s: Snapshot, seed: u64) -> Snapshot {
    let mut rng = StdRng::seed_from_u64(seed);
    for iface in &mut s.interfaces {
        iface.peers.shuffle(&mut rng);
    }
    s.clone()
}

fn bench_tracker(c: &mut Criterion) {
    let base = snapshot();
    let next = changed(base.clone());
    let settings = settings();
    let (state, _) = tracker::track(None, &base, now(), &settings);
    let later = now() + TimeDelta::seconds(1);

    let mut group = c.benchmark_group("tracker_100k_peers");
    group.sample_size(20);
    group.bench_function("no_change", |b| {
        b.iter_batched(
            || state.clone(),
            |st| black_box(tracker::track(Some(st), &base, later, &settings)),
            BatchSize::LargeInput,
        )
    });
    // The state as it is in the daemon after a few wireguard-go polls, then
    // the next poll in yet another order.
    let mut shuffled_state = state.clone();
    for seed in 1..4 {
        let order = shuffled(base.clone(), seed);
        let events;
        (shuffled_state, events) = tracker::track(Some(shuffled_state), &order, now(), &settings);
        assert!(events.is_empty());
    }
    let other_order = shuffled(base.clone(), 4);
    group.bench_function("no_change_shuffled", |b| {
        b.iter_batched(
            || shuffled_state.clone(),
            |st| black_box(tracker::track(Some(st), &other_order, later, &settings)),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("ten_percent_changed", |b| {
        b.iter_batched(
            || state.clone(),
            |st| black_box(tracker::track(Some(st), &next, later, &settings)),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn bench_uapi(c: &mut Criterion) {
    let reply = uapi_parse::generate_wireguard_go_reply(10_000);
    c.bench_function("uapi_parse_10k_peers", |b| {
        b.iter(|| black_box(uapi_parse::parse_interface("wg0", reply.as_bytes(), now()).unwrap()))
    });
    // wireguard-go's maximum, fed in the 64 KiB pieces the daemon reads.
    let reply = uapi_parse::generate_wireguard_go_reply(65_536);
    c.bench_function("uapi_parse_65536_peers", |b| {
        b.iter(|| {
            let mut parser = uapi_parse::Parser::new("wg0", 65_536);
            for piece in reply.as_bytes().chunks(64 << 10) {
                if parser.feed(piece).unwrap() {
                    break;
                }
            }
            black_box(parser.finish(now()).unwrap())
        })
    });
}

fn bench_render(c: &mut Criterion) {
    let base = snapshot();
    let mut small = base.clone();
    small.interfaces.truncate(1);
    small.interfaces[0].peers.truncate(20_000);
    // First start with `connected` announces one connect per connected peer: 10,000.
    let (_, events) = tracker::track(None, &small, now(), &settings());
    assert_eq!(events.len(), 10_000);
    let ctx = RenderContext::default();
    c.bench_function("render_10k_connect_payloads", |b| {
        b.iter(|| {
            let mut total = 0;
            for e in &events {
                total += wg_portal::render(e, &ctx).len();
            }
            black_box(total)
        })
    });
}

/// The outbox: a first start saving 100,000 peers' state, and a poll
/// committing 1,000 events (with their state changes) for one webhook.
fn bench_outbox(c: &mut Criterion) {
    use wghook::outbox::Store;
    let base = snapshot();
    let settings = settings();
    let first = tracker::track_changes(None, &base, now(), &settings);
    let mut group = c.benchmark_group("outbox");
    group.sample_size(10);
    group.bench_function("first_start_save_100k_peers", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(dir.path()).unwrap();
                (dir, store)
            },
            |(dir, mut store)| {
                store
                    .commit_poll(&[], &[], &first.state, &first.changes, now(), 100_000)
                    .unwrap();
                (dir, store)
            },
            BatchSize::PerIteration,
        )
    });
    // 1,000 peers connect: 1,000 events and 1,000 changed peer rows.
    let mut next = base.clone();
    for p in next.interfaces[0]
        .peers
        .iter_mut()
        .skip(1)
        .step_by(2)
        .take(1000)
    {
        p.last_handshake = Some(now());
    }
    let later = now() + TimeDelta::seconds(1);
    let poll = tracker::track_changes(Some(first.state.clone()), &next, later, &settings);
    assert_eq!(poll.events.len(), 1000);
    let routes: Vec<Vec<String>> = poll
        .events
        .iter()
        .map(|_| vec!["default".to_string()])
        .collect();
    group.bench_function("commit_1000_events", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let mut store = Store::open(dir.path()).unwrap();
                store
                    .commit_poll(&[], &[], &first.state, &first.changes, now(), 100_000)
                    .unwrap();
                (dir, store)
            },
            |(dir, mut store)| {
                store
                    .commit_poll(
                        &poll.events,
                        &routes,
                        &poll.state,
                        &poll.changes,
                        later,
                        100_000,
                    )
                    .unwrap();
                (dir, store)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_tracker,
    bench_uapi,
    bench_render,
    bench_outbox
);
criterion_main!(benches);
