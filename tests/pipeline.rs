//! The whole pipeline on the simulated backend, delivering over real HTTP to
//! a receiver on 127.0.0.1: every event kind arrives with the right headers
//! and body, in order.

use chrono::{DateTime, TimeDelta, Utc};
use wghook::backend::sim::key_for;
use wghook::config;
use wghook::daemon::{self, Clock, RunOptions};

use crate::util::receiver::Receiver;
use crate::util::simhost::SimHost;

const SCENARIO: &str = r#"
steps:
  - at: 0s
    add_interface: { name: wg0, listen_port: 51820 }
  - at: 0s
    add_peer: { interface: wg0, peer: alice, allowed_ips: [10.8.0.2/32] }
  - at: 10s
    handshake: { interface: wg0, peer: alice, endpoint: "198.51.100.7:51820" }
  - at: 10s
    traffic: { interface: wg0, peer: alice, rx: 1860, tx: 10824 }
  - at: 20s
    add_peer: { interface: wg0, peer: bob, allowed_ips: [10.8.0.3/32] }
  - at: 30s
    set_allowed_ips: { interface: wg0, peer: bob, allowed_ips: [10.8.0.3/32, 10.9.0.0/24] }
  - at: 40s
    set_listen_port: { name: wg0, listen_port: 51900 }
  - at: 50s
    remove_peer: { interface: wg0, peer: bob }
  - at: 300s
    remove_interface: { name: wg0 }
"#;

fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-05T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

async fn run_scenario(receiver: &Receiver, scenario: &str, extra_monitor: &str, polls: u64) {
    let dir = tempfile::tempdir().unwrap();
    // One request at a time: the whole sequence arrives in order (per-peer
    // order under parallelism is pinned by the scheduler's tests).
    let host = SimHost::new(dir.path(), scenario)
        .webhooks(&format!(
            "webhook:\n  url: {}\n  secret: \"Basic dXNlcm5hbWU6cGFzc3dvcmQ=\"\n",
            receiver.url
        ))
        .delivery("  max_in_flight: 1\n")
        .monitor("  interval: 100ms\n  host: test-host\n")
        .state_dir()
        .monitor(extra_monitor)
        .write();
    let cfg = config::load(&host.config).unwrap();
    let options = RunOptions {
        clock: Clock::Virtual {
            start: start_time(),
            step: TimeDelta::seconds(10),
        },
        max_polls: Some(polls),
        ..RunOptions::default()
    };
    daemon::run(cfg, options, std::future::pending())
        .await
        .unwrap();
}

#[tokio::test]
async fn every_event_kind_arrives_in_order_with_headers_and_body() {
    let receiver = Receiver::start().await;
    // Polls every 10 s of virtual time from 0 s to 350 s. alice's only
    // handshake is at 10 s, so she disconnects once it is 180 s old, before
    // the interface goes at 300 s.
    run_scenario(&receiver, SCENARIO, "  announce_on_start: all\n", 36).await;
    let got = receiver.requests();
    let kinds: Vec<String> = got.iter().map(|r| r.kind()).collect();
    assert_eq!(
        kinds,
        [
            "interface.create", // first poll, announce all
            "peer.create",      // alice
            "peer.connect",     // alice handshakes at 10s
            "peer.create",      // bob added at 20s
            "peer.update",      // bob's allowed IPs at 30s
            "interface.update", // listen port at 40s
            "peer.delete",      // bob removed at 50s
            "peer.disconnect",  // alice: 10s + 180s threshold passes
            "peer.delete",      // interface removed at 300s: its peers...
            "interface.delete", // ...then the interface
        ]
    );
    let alice = key_for("alice").to_base64();
    let bob = key_for("bob").to_base64();
    let ids: Vec<String> = got.iter().map(|r| r.identifier()).collect();
    assert_eq!(
        ids,
        ["wg0", &alice, &alice, &bob, &bob, "wg0", &bob, &alice, &alice, "wg0"]
    );

    let mut seen_ids = std::collections::HashSet::new();
    for r in &got {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/hook");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.header("authorization"),
            Some("Basic dXNlcm5hbWU6cGFzc3dvcmQ="),
            "secret sent verbatim"
        );
        assert_eq!(
            r.header("user-agent"),
            Some(format!("wghook/{}", env!("CARGO_PKG_VERSION")).as_str())
        );
        let id = r.header("webhook-id").expect("webhook-id");
        assert!(seen_ids.insert(id.to_string()), "ids are unique");
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        assert!(
            (Utc::now().timestamp() - ts).abs() < 60,
            "timestamp is the attempt's wall clock"
        );
    }

    let connect = got[2].json();
    let p = &connect["payload"];
    assert_eq!(p["PeerId"], alice.as_str());
    assert_eq!(p["IsConnected"], true);
    assert_eq!(p["BytesReceived"], 1860);
    assert_eq!(p["BytesTransmitted"], 10824);
    assert_eq!(p["Endpoint"], "198.51.100.7:51820");
    assert_eq!(p["LastHandshake"], p["LastSessionStart"]);

    let update = got[4].json();
    assert_eq!(
        update["payload"]["AllowedIPsStr"],
        "10.8.0.3/32,10.9.0.0/24"
    );
    assert_eq!(got[5].json()["payload"]["ListenPort"], 51900);
    let disconnect = got[7].json();
    assert_eq!(disconnect["payload"]["IsConnected"], false);

    // Create and delete bodies: the same payload shape as connect, describing
    // the entity as it was.
    for (i, key, kind) in [
        (1, alice.as_str(), "peer.create"),
        (3, bob.as_str(), "peer.create"),
        (6, bob.as_str(), "peer.delete"),
        (8, alice.as_str(), "peer.delete"),
    ] {
        let v = got[i].json();
        let p = &v["payload"];
        assert_eq!(p["Identifier"], key, "{kind}: {v}");
        assert_eq!(p["PublicKey"], key, "{kind}: {v}");
        assert_eq!(p["InterfaceIdentifier"], "wg0", "{kind}: {v}");
        assert_eq!(p["CreatedBy"], "wghook", "{kind}: {v}");
        assert_eq!(p["PrivateKey"], "", "never a private key: {kind}: {v}");
        assert_eq!(p["PresharedKey"], "", "never a preshared key: {kind}: {v}");
    }
    assert_eq!(got[3].json()["payload"]["AllowedIPsStr"], "10.8.0.3/32");
    assert_eq!(
        got[6].json()["payload"]["AllowedIPsStr"],
        "10.8.0.3/32,10.9.0.0/24",
        "a delete describes the peer as last seen"
    );
    for (i, port) in [(0, 51820), (9, 51900)] {
        let v = got[i].json();
        let p = &v["payload"];
        assert_eq!(p["Identifier"], "wg0", "{v}");
        assert_eq!(p["DisplayName"], "wg0", "{v}");
        assert_eq!(p["ListenPort"], port, "{v}");
        assert_eq!(p["PrivateKey"], "", "never a private key: {v}");
    }
}

#[tokio::test]
async fn first_start_announces_only_connected_peers_by_default() {
    let receiver = Receiver::start().await;
    // alice is connected at the first poll, bob is present but never connected.
    let scenario = r#"
steps:
  - at: 0s
    add_interface: { name: wg0 }
  - at: 0s
    add_peer: { interface: wg0, peer: alice }
  - at: 0s
    handshake: { interface: wg0, peer: alice }
  - at: 0s
    add_peer: { interface: wg0, peer: bob }
"#;
    run_scenario(&receiver, scenario, "", 2).await;
    let got = receiver.requests();
    let kinds: Vec<String> = got.iter().map(|r| r.kind()).collect();
    assert_eq!(kinds, ["peer.connect"]);
    assert_eq!(got[0].identifier(), key_for("alice").to_base64());
}

#[tokio::test]
async fn a_rejected_event_does_not_stop_later_events() {
    let receiver = Receiver::start().await;
    // 400 means "given up" for that event: the next events still go.
    receiver.respond_with(400);
    run_scenario(&receiver, SCENARIO, "  announce_on_start: all\n", 2).await;
    // Every event was attempted even though each attempt failed.
    let kinds: Vec<String> = receiver.requests().iter().map(|r| r.kind()).collect();
    assert_eq!(kinds, ["interface.create", "peer.create", "peer.connect"]);
}

#[tokio::test]
async fn configured_interface_names_reach_the_bodies() {
    let receiver = Receiver::start().await;
    run_scenario(
        &receiver,
        SCENARIO,
        "  announce_on_start: all\ninterfaces:\n  wg0: { name: Office VPN }\n",
        2,
    )
    .await;
    let got = receiver.requests();
    let create = got
        .iter()
        .find(|r| r.kind() == "interface.create")
        .expect("interface.create");
    let v = create.json();
    assert_eq!(v["payload"]["DisplayName"], "Office VPN", "{v}");
    assert_eq!(v["payload"]["Identifier"], "wg0", "{v}");
}
