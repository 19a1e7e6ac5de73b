//! End-to-end: the real `wghook run` binary watching real wireguard-go
//! interfaces in network namespaces, delivering to a recording receiver.
//!
//! Each test builds its own [`Tunnel`] (distinct interface names: the UAPI
//! socket directory is shared by all namespaces), starts wghook in the root
//! namespace watching only side A, waits for the daemon's first poll (the
//! `create`s of `announce_on_start: all`), then acts and awaits the events.
//! All tests are ignored by default: they need root and wireguard-go
//! (`cargo test --test integration e2e -- --include-ignored`).

use std::cell::Cell;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::netns::{self, genkey, require_root_tools, Side, Tunnel};
use crate::util::receiver::{Receiver, Recorded};

/// The daemon's poll interval in these tests.
const INTERVAL: Duration = Duration::from_secs(1);
/// Slack for process start, HTTP delivery and scheduling on a busy machine.
const MARGIN: Duration = Duration::from_millis(1500);
/// Generous bound for things that happen within a few polls.
const SOON: Duration = Duration::from_secs(10);

/// `wghook run` as a child process; SIGTERM (then kill) on drop. Its stderr
/// goes to a file that is printed when the test fails.
struct Daemon {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts wghook watching `ifname` only, with announce_on_start: all and
    /// the default `backend: auto` (no kernel module here: it must carry on
    /// with the userspace interfaces).
    fn start(receiver: &Receiver, ifname: &str, connect_threshold: Duration) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("wghook.yaml");
        fs::write(
            &config,
            format!(
                "webhook:\n  url: {url}\n  secret: \"Bearer e2e\"\n  timeout: 5s\n\
                 monitor:\n  interval: {interval}ms\n  connect_threshold: {threshold}s\n  \
                 backend: auto\n  interfaces: [{ifname}]\n  announce_on_start: all\n  \
                 host: e2e-host\n  state_dir: {state}\n",
                url = receiver.url,
                interval = INTERVAL.as_millis(),
                threshold = connect_threshold.as_secs(),
                // Its own, empty: a saved tracker state would make this a
                // restart instead of a first start.
                state = dir.path().display(),
            ),
        )
        .expect("write config");
        let log = dir.path().join("wghook.log");
        let child = Command::new(env!("CARGO_BIN_EXE_wghook"))
            .arg("run")
            .arg("-c")
            .arg(&config)
            .env("RUST_LOG", "wghook=debug")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("wghook.out")).expect("create stdout file"))
            .stderr(fs::File::create(&log).expect("create log file"))
            .spawn()
            .expect("spawn wghook run");
        Self {
            child,
            log,
            _dir: dir,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Still running now means it did not exit on its own during the test.
        let early_exit = self.child.try_wait().ok().flatten();
        netns::terminate(&mut self.child, Duration::from_secs(5));
        if std::thread::panicking() {
            if let Some(status) = early_exit {
                eprintln!("wghook exited during the test: {status}");
            }
            eprintln!(
                "---- wghook stderr ----\n{}\n---- end of wghook stderr ----",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// A tunnel and a daemon watching its side A, after the daemon's first poll.
struct Setup {
    // First, as fields drop in order: the daemon stops before the tunnel is
    // torn down, so its stderr (printed on failure) ends with the test.
    _daemon: Daemon,
    tunnel: Tunnel,
    receiver: Receiver,
}

impl Setup {
    async fn new(prefix: &str, connect_threshold: Duration) -> Self {
        require_root_tools();
        let tunnel = Tunnel::new(prefix);
        let receiver = Receiver::start().await;
        let daemon = Daemon::start(&receiver, tunnel.ifname(Side::A), connect_threshold);
        let setup = Self {
            _daemon: daemon,
            tunnel,
            receiver,
        };
        // The first poll announces side A and its peer (no handshake yet).
        let (ifname, peer) = (setup.ifname(), setup.peer());
        let got = setup.receiver.wait_for_count(2, SOON).await;
        assert_eq!(
            events(&got),
            [
                ("interface.create".into(), ifname),
                ("peer.create".into(), peer)
            ],
            "the first poll announces exactly side A and its peer"
        );
        setup
    }

    /// Side A's interface name (the one the daemon watches).
    fn ifname(&self) -> String {
        self.tunnel.ifname(Side::A).to_string()
    }

    /// Side A's peer: side B's public key.
    fn peer(&self) -> String {
        self.tunnel.public_key(Side::B).to_string()
    }

    /// Pings through the tunnel and awaits the peer's `connect`; returns when
    /// the ping started.
    async fn connect(&self) -> Instant {
        let started = Instant::now();
        assert!(self.tunnel.ping(Side::A), "ping through the tunnel failed");
        let peer = self.peer();
        self.receiver
            .wait_until(SOON, "peer.connect", |r| has(r, "peer.connect", &peer))
            .await;
        started
    }
}

/// (kind, identifier) of each request, in the order wghook emitted the
/// events: by `webhook-id`, a UUIDv7 that sorts in emission order. Arrival
/// order is only guaranteed per peer (and per interface): different entities
/// are delivered in parallel.
fn events(requests: &[Recorded]) -> Vec<(String, String)> {
    let mut by_id: Vec<(String, String, String)> = requests
        .iter()
        .map(|r| {
            let id = r.header("webhook-id").unwrap_or_default().to_string();
            (id, r.kind(), r.identifier())
        })
        .collect();
    by_id.sort();
    by_id.into_iter().map(|(_, k, i)| (k, i)).collect()
}

/// Asserts that `first` arrived before `then` (both for `identifier`).
fn arrived_in_order(requests: &[Recorded], identifier: &str, first: &str, then: &str) {
    let a = position(requests, first, identifier);
    let b = position(requests, then, identifier);
    assert!(
        matches!((a, b), (Some(a), Some(b)) if a < b),
        "{first} must arrive before {then} for {identifier}; arrival order: {:?}",
        requests.iter().map(Recorded::kind).collect::<Vec<_>>()
    );
}

fn has(requests: &[Recorded], kind: &str, identifier: &str) -> bool {
    position(requests, kind, identifier).is_some()
}

fn position(requests: &[Recorded], kind: &str, identifier: &str) -> Option<usize> {
    requests
        .iter()
        .position(|r| r.kind() == kind && r.identifier() == identifier)
}

/// The JSON body of the first `kind` event for `identifier`.
fn body(requests: &[Recorded], kind: &str, identifier: &str) -> Value {
    let i = position(requests, kind, identifier)
        .unwrap_or_else(|| panic!("no {kind} for {identifier} in {:?}", events(requests)));
    requests[i].json()
}

/// Splits an `AllowedIPsStr` into a sorted list.
fn allowed_ips(payload: &Value) -> Vec<String> {
    let mut ips: Vec<String> = payload["AllowedIPsStr"]
        .as_str()
        .unwrap_or_else(|| panic!("AllowedIPsStr is a string in {payload}"))
        .split(',')
        .map(str::to_string)
        .collect();
    ips.sort();
    ips
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and wireguard-go"]
async fn tunnel_handshakes() {
    require_root_tools();
    let tunnel = Tunnel::new("e2ehs");
    let before = tunnel.wg(
        Side::A,
        &["show", tunnel.ifname(Side::A), "latest-handshakes"],
    );
    assert_eq!(
        before.trim(),
        format!("{}\t0", tunnel.public_key(Side::B)),
        "no handshake before traffic"
    );
    assert!(tunnel.ping(Side::A), "ping through the tunnel failed");
    let after = tunnel.wg(
        Side::A,
        &["show", tunnel.ifname(Side::A), "latest-handshakes"],
    );
    let (key, time) = after
        .trim()
        .split_once('\t')
        .unwrap_or_else(|| panic!("unexpected latest-handshakes output {after:?}"));
    assert_eq!(key, tunnel.public_key(Side::B));
    assert!(
        time.parse::<u64>().expect("handshake time is a number") > 0,
        "a handshake after the ping"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and wireguard-go"]
async fn ping_produces_connect_within_two_polls() {
    let s = Setup::new("e2econn", Duration::from_secs(15)).await;
    let peer = s.peer();
    assert!(s.tunnel.ping(Side::A), "ping through the tunnel failed");
    // The timeout is the assertion: the connect must come within two polls
    // of the ping's success (plus a little for the HTTP request; a third
    // poll would take another full second).
    let got = s
        .receiver
        .wait_until(
            2 * INTERVAL + Duration::from_millis(800),
            "peer.connect within two polls",
            |r| has(r, "peer.connect", &peer),
        )
        .await;

    let v = body(&got, "peer.connect", &peer);
    assert_eq!(v["event"], "connect");
    assert_eq!(v["entity"], "peer");
    let p = &v["payload"];
    assert_eq!(p["PeerId"], peer.as_str());
    assert_eq!(p["IsConnected"], true);
    assert_eq!(p["Endpoint"], format!("192.0.2.2:{}", netns::LISTEN_PORT));
    assert!(p["LastHandshake"].is_string(), "LastHandshake set: {p}");
    assert!(
        p["LastSessionStart"].is_string(),
        "LastSessionStart set: {p}"
    );
    assert!(
        p["BytesReceived"].as_u64().unwrap_or(0) > 0,
        "the ping's reply was received: {p}"
    );
    assert!(p["BytesTransmitted"].as_u64().unwrap_or(0) > 0, "{p}");
    let auth = got[position(&got, "peer.connect", &peer).unwrap_or(0)].header("authorization");
    assert_eq!(auth, Some("Bearer e2e"));
    assert_eq!(
        events(&got)[2..],
        [("peer.connect".to_string(), peer.clone())],
        "nothing else after the creates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and wireguard-go"]
async fn removing_peer_gives_disconnect_then_delete() {
    let s = Setup::new("e2erm", Duration::from_secs(15)).await;
    let (ifname, peer) = (s.ifname(), s.peer());
    s.connect().await;
    s.tunnel
        .wg(Side::A, &["set", &ifname, "peer", &peer, "remove"]);
    let got = s
        .receiver
        .wait_until(SOON, "peer.delete", |r| has(r, "peer.delete", &peer))
        .await;
    let after: Vec<_> = events(&got).into_iter().skip(3).collect();
    assert_eq!(
        after,
        [
            ("peer.disconnect".to_string(), peer.clone()),
            ("peer.delete".to_string(), peer.clone()),
        ]
    );
    arrived_in_order(&got, &peer, "peer.disconnect", "peer.delete");
    let d = body(&got, "peer.disconnect", &peer);
    assert_eq!(d["payload"]["PeerId"], peer.as_str());
    assert_eq!(d["payload"]["IsConnected"], false);
    let del = body(&got, "peer.delete", &peer);
    assert_eq!(del["payload"]["PublicKey"], peer.as_str());
    assert_eq!(del["payload"]["InterfaceIdentifier"], ifname.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and wireguard-go"]
async fn adding_peer_gives_create() {
    let s = Setup::new("e2eadd", Duration::from_secs(15)).await;
    let ifname = s.ifname();
    let (_, new_peer) = genkey();
    s.tunnel.wg(
        Side::A,
        &[
            "set",
            &ifname,
            "peer",
            &new_peer,
            "allowed-ips",
            "10.0.0.3/32",
        ],
    );
    let got = s
        .receiver
        .wait_until(SOON, "peer.create of the new peer", |r| {
            has(r, "peer.create", &new_peer)
        })
        .await;
    assert_eq!(
        events(&got)[2..],
        [("peer.create".to_string(), new_peer.clone())]
    );
    let v = body(&got, "peer.create", &new_peer);
    assert_eq!(v["entity"], "peer");
    let p = &v["payload"];
    assert_eq!(p["PublicKey"], new_peer.as_str());
    assert_eq!(p["Identifier"], new_peer.as_str());
    assert_eq!(p["InterfaceIdentifier"], ifname.as_str());
    assert_eq!(p["EndpointPublicKey"], s.tunnel.public_key(Side::A));
    assert_eq!(p["AllowedIPsStr"], "10.0.0.3/32");
    assert_eq!(p["Endpoint"], "");
    assert_eq!(p["PrivateKey"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and wireguard-go"]
async fn changing_allowed_ips_gives_update() {
    let s = Setup::new("e2eupd", Duration::from_secs(15)).await;
    let (ifname, peer) = (s.ifname(), s.peer());
    s.tunnel.wg(
        Side::A,
        &[
            "set",
            &ifname,
            "peer",
            &peer,
            "allowed-ips",
            "10.0.0.2/32,10.9.0.0/24",
        ],
    );
    let got = s
        .receiver
        .wait_until(SOON, "peer.update", |r| has(r, "peer.update", &peer))
        .await;
    assert_eq!(
        events(&got)[2..],
        [("peer.update".to_string(), peer.clone())]
    );
    let p = &body(&got, "peer.update", &peer)["payload"];
    assert_eq!(allowed_ips(p), ["10.0.0.2/32", "10.9.0.0/24"]);
    let mut addresses: Vec<&str> = p["Addresses"]
        .as_array()
        .unwrap_or_else(|| panic!("Addresses is an array in {p}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    addresses.sort_unstable();
    assert_eq!(addresses, ["10.0.0.2/32", "10.9.0.0/24"]);
    assert_eq!(p["PublicKey"], peer.as_str());
    assert_eq!(p["InterfaceIdentifier"], ifname.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and wireguard-go"]
async fn stopping_wireguard_go_deletes_everything() {
    let mut s = Setup::new("e2estop", Duration::from_secs(15)).await;
    let (ifname, peer) = (s.ifname(), s.peer());
    s.connect().await;
    s.tunnel.stop_wireguard(Side::A);
    let got = s
        .receiver
        .wait_until(SOON, "peer.delete and interface.delete", |r| {
            has(r, "peer.delete", &peer) && has(r, "interface.delete", &ifname)
        })
        .await;
    let after: Vec<_> = events(&got).into_iter().skip(3).collect();
    assert_eq!(
        after,
        [
            ("peer.disconnect".to_string(), peer.clone()),
            ("peer.delete".to_string(), peer.clone()),
            ("interface.delete".to_string(), ifname.clone()),
        ]
    );
    arrived_in_order(&got, &peer, "peer.disconnect", "peer.delete");
    assert_eq!(
        body(&got, "peer.disconnect", &peer)["payload"]["IsConnected"],
        false
    );
    let i = body(&got, "interface.delete", &ifname);
    assert_eq!(i["entity"], "interface");
    assert_eq!(i["payload"]["Identifier"], ifname.as_str());
    assert_eq!(i["payload"]["PublicKey"], s.tunnel.public_key(Side::A));
    assert_eq!(i["payload"]["DriverType"], "userspace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and wireguard-go"]
async fn aged_handshake_gives_disconnect() {
    let threshold = Duration::from_secs(10);
    let s = Setup::new("e2eage", threshold).await;
    let peer = s.peer();
    s.connect().await;
    // When the disconnect arrived, on the wall clock: the receiver calls the
    // predicate as each request comes in. The wall clock, because it is the
    // clock WireGuard stamps handshakes with and the threshold is counted
    // on; on this VM it runs 5 ms per second ahead of the monotonic clock,
    // so a monotonic measure saw disconnects "2 ms early".
    let seen = Cell::new(None);
    let got = s
        .receiver
        .wait_until(threshold + 2 * INTERVAL + MARGIN, "peer.disconnect", |r| {
            let found = has(r, "peer.disconnect", &peer);
            if found && seen.get().is_none() {
                seen.set(Some(chrono::Utc::now()));
            }
            found
        })
        .await;
    let at = seen.get().unwrap_or_else(chrono::Utc::now);
    let connect = &body(&got, "peer.connect", &peer)["payload"];
    let handshake: chrono::DateTime<chrono::Utc> = connect["LastHandshake"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no handshake time in {connect}"));
    let after = (at - handshake).to_std().unwrap_or_default();
    assert!(
        after >= threshold,
        "disconnect {after:?} after the handshake, before the {threshold:?} threshold"
    );
    assert_eq!(
        events(&got)[2..],
        [
            ("peer.connect".to_string(), peer.clone()),
            ("peer.disconnect".to_string(), peer.clone()),
        ]
    );
    let p = &body(&got, "peer.disconnect", &peer)["payload"];
    assert_eq!(p["IsConnected"], false);
    assert_eq!(
        p["LastHandshake"],
        body(&got, "peer.connect", &peer)["payload"]["LastHandshake"],
        "no handshake since the connect"
    );
}
