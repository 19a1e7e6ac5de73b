//! End-to-end: ping checks (and wg-quick peer names) with real wireguard-go
//! in network namespaces.
//!
//! How a peer can answer ping without a handshake, honestly: wghook runs
//! inside side A's namespace (`ip netns exec`; the UAPI sockets live in the
//! shared `/var/run/wireguard`) and watches side A's interface, whose only
//! peer is side B. B's `ping_address` is its underlay address on the veth
//! link, reachable from A's namespace without the tunnel. Nothing ever goes
//! through the tunnel, so B never handshakes (checked with `wg show`): the
//! connect can only come from the ping check. Removing B's underlay address
//! makes the pings go unanswered, which must disconnect the peer.
//!
//! The receiver has to be reachable from A's namespace, so its socket is
//! bound there: the test thread (a current-thread runtime, so nothing else
//! runs on it meanwhile) enters A's namespace for the bind and returns.
//!
//! Ignored by default: needs root and wireguard-go
//! (`cargo test --test integration ping_e2e -- --include-ignored`).

use std::fs;
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use crate::util::netns::{self, require_root_tools, Side, Tunnel};
use crate::util::receiver::{Receiver, Recorded};

/// Poll interval and ping interval of the daemon in this test.
const INTERVAL: Duration = Duration::from_secs(1);
/// Generous bound for things that happen within a few polls.
const SOON: Duration = Duration::from_secs(15);
/// Test prefix: namespaces `wghook-pinge2e-a`/`-b`, interfaces `pinge2ea`/`b`.
const PREFIX: &str = "pinge2e";
/// Side B's underlay address (see `Tunnel`).
const B_UNDERLAY: &str = "192.0.2.2";

fn namespace(side: &str) -> String {
    format!("wghook-{PREFIX}-{side}")
}

/// Starts a receiver whose listening socket lives in namespace `ns`.
async fn receiver_in(ns: &str) -> Receiver {
    let home = fs::File::open("/proc/thread-self/ns/net").expect("open own network namespace");
    let there = fs::File::open(format!("/var/run/netns/{ns}")).expect("open the namespace");
    setns(there.as_fd(), CloneFlags::CLONE_NEWNET).expect("enter the namespace");
    let receiver = Receiver::start().await;
    setns(home.as_fd(), CloneFlags::CLONE_NEWNET).expect("return to the root namespace");
    receiver
}

/// `wghook run` inside A's namespace; SIGTERM (then kill) on drop, printing
/// its log if the test failed.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        netns::terminate(&mut self.child, Duration::from_secs(5));
        if std::thread::panicking() {
            eprintln!(
                "---- wghook stderr ----\n{}\n---- end of wghook stderr ----",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn kinds(requests: &[Recorded]) -> Vec<String> {
    let mut by_id: Vec<(String, String)> = requests.iter().map(|r| (r.id(), r.kind())).collect();
    by_id.sort();
    by_id.into_iter().map(|(_, k)| k).collect()
}

fn body(requests: &[Recorded], kind: &str) -> serde_json::Value {
    requests
        .iter()
        .find(|r| r.kind() == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", kinds(requests)))
        .json()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root and wireguard-go"]
async fn pingable_peer_without_handshake_is_connected_with_ping_checks_on() {
    require_root_tools();
    let tunnel = Tunnel::new(PREFIX);
    let ifname = tunnel.ifname(Side::A).to_string();
    let peer = tunnel.public_key(Side::B).to_string();
    // Unprivileged ICMP sockets in A's namespace (a fresh namespace allows
    // none): the path production hosts take.
    let out = Command::new("ip")
        .args(["netns", "exec", &namespace("a"), "sysctl", "-q", "-w"])
        .arg("net.ipv4.ping_group_range=0 0")
        .output()
        .expect("run sysctl");
    assert!(out.status.success(), "sysctl: {out:?}");

    let receiver = receiver_in(&namespace("a")).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    // The name comes from a wg-quick file (names_from), the ping address
    // from the peers map.
    fs::write(
        dir.path().join("wg-a.conf"),
        format!(
            "[Interface]\nListenPort = {port}\n\n[Peer]\n# Name = side-b\nPublicKey = {peer}\n\
             AllowedIPs = 10.0.0.2/32\n",
            port = netns::LISTEN_PORT
        ),
    )
    .expect("write wg-quick file");
    let config = dir.path().join("wghook.yaml");
    fs::write(
        &config,
        format!(
            "webhook:\n  url: {url}\n  timeout: 5s\n\
             monitor:\n  interval: {ms}ms\n  connect_threshold: 15s\n  backend: userspace\n  \
             interfaces: [{ifname}]\n  announce_on_start: all\n  host: e2e-host\n  \
             state_dir: {state}\n  ping_checks: true\n  ping_interval: {ms}ms\n  \
             names_from: [\"*.conf\"]\n\
             peers:\n  \"{peer}\": {{ ping_address: {B_UNDERLAY} }}\n",
            url = receiver.url,
            ms = INTERVAL.as_millis(),
            state = dir.path().display(),
        ),
    )
    .expect("write config");
    let log = dir.path().join("wghook.log");
    let child = Command::new("ip")
        .args(["netns", "exec", &namespace("a")])
        .arg(env!("CARGO_BIN_EXE_wghook"))
        .arg("run")
        .arg("-c")
        .arg(&config)
        .env("RUST_LOG", "wghook=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("create log file"))
        .spawn()
        .expect("spawn wghook run");
    let _daemon = Daemon {
        child,
        log: log.clone(),
    };

    // The first poll pings before tracking: the peer is announced connected.
    let got = receiver
        .wait_until(SOON, "peer.connect", |r| {
            r.iter().any(|r| r.kind() == "peer.connect")
        })
        .await;
    assert_eq!(
        kinds(&got),
        ["interface.create", "peer.create", "peer.connect"]
    );
    let create = body(&got, "peer.create");
    assert_eq!(create["payload"]["DisplayName"], "side-b", "names_from");
    let connect = &body(&got, "peer.connect")["payload"];
    assert_eq!(connect["PeerId"], peer.as_str());
    assert_eq!(connect["IsConnected"], true);
    assert_eq!(connect["IsPingable"], true);
    assert!(connect["LastPing"].is_string(), "LastPing set: {connect}");
    assert_eq!(connect["LastHandshake"], serde_json::Value::Null);
    // Honest: there was no handshake, so only the ping made it connected.
    let handshakes = tunnel.wg(Side::A, &["show", &ifname, "latest-handshakes"]);
    assert_eq!(handshakes.trim(), format!("{peer}\t0"), "no handshake");
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("unprivileged"),
        "ping checks use an unprivileged ICMP socket: {log_text}"
    );

    // `wghook peers` decides the same way (one ping round of its own).
    let out = Command::new("ip")
        .args(["netns", "exec", &namespace("a")])
        .arg(env!("CARGO_BIN_EXE_wghook"))
        .args(["peers", "--json", "-c"])
        .arg(&config)
        .output()
        .expect("run wghook peers");
    assert!(out.status.success(), "wghook peers: {out:?}");
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).expect("peers JSON");
    let row = &table[0]["peers"][0];
    assert_eq!(row["public_key"], peer.as_str());
    assert_eq!(row["pingable"], true, "{table}");
    assert_eq!(row["connected"], true, "{table}");
    assert_eq!(row["name"], "side-b");

    // B stops answering: its underlay address goes away.
    let out = Command::new("ip")
        .args(["-n", &namespace("b"), "addr", "del"])
        .arg(format!("{B_UNDERLAY}/24"))
        .args(["dev", "veth0"])
        .output()
        .expect("run ip addr del");
    assert!(out.status.success(), "ip addr del: {out:?}");
    let got = receiver
        .wait_until(SOON, "peer.disconnect", |r| {
            r.iter().any(|r| r.kind() == "peer.disconnect")
        })
        .await;
    assert_eq!(
        kinds(&got),
        [
            "interface.create",
            "peer.create",
            "peer.connect",
            "peer.disconnect"
        ]
    );
    let disconnect = &body(&got, "peer.disconnect")["payload"];
    assert_eq!(disconnect["IsConnected"], false);
    assert_eq!(disconnect["IsPingable"], false);
    assert!(disconnect["LastPing"].is_string(), "{disconnect}");
    assert_eq!(disconnect["LastHandshake"], serde_json::Value::Null);
    let handshakes = tunnel.wg(Side::A, &["show", &ifname, "latest-handshakes"]);
    assert_eq!(
        handshakes.trim(),
        format!("{peer}\t0"),
        "still no handshake"
    );
}
