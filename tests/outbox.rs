//! Delivery that loses nothing (issue 4): the durable outbox, retries,
//! `Retry-After`, dead letters, 410 (and the reload that ends it), SIGKILL
//! and SIGTERM restarts, redirects and large answers, per-webhook event
//! filters, restart-safe tracking and the outbox bound, against a real HTTP receiver on 127.0.0.1 and the
//! simulated backend.
//!
//! In-process runs use [`daemon::run_with_backend`] with a virtual clock and
//! `max_polls` (the daemon then drains its queue before returning); the kill,
//! SIGTERM, reload and bound tests run the `wghook` binary (in
//! `outbox/processes.rs`). Every test has its own state directory and short
//! retry delays, and awaits conditions with deadlines.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use wghook::backend::sim::{key_for, Scenario, SimBackend};
use wghook::config::{self, Config};
use wghook::daemon::{self, Clock, RunOptions};
use wghook::outbox::Store;

use crate::util::receiver::{Receiver, Recorded, Reply};
use crate::util::simhost::SimHost;

mod processes;

const BIN: &str = env!("CARGO_BIN_EXE_wghook");

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-05T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// A port nothing listens on: bound, noted, released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Writes `scenario.yaml` and `wghook.yaml` (simulated backend, polled every
/// 100 ms as host `test-host`, state in `dir/state`) into `dir`; `hooks` is
/// the `webhook:`/`webhooks:` block, `delivery` and `monitor` extra lines of
/// those sections (2-space indented).
fn setup(dir: &Path, scenario: &str, hooks: &str, delivery: &str, monitor: &str) -> PathBuf {
    SimHost::new(dir, scenario)
        .webhooks(hooks)
        .delivery(delivery)
        .monitor("  interval: 100ms\n  host: test-host\n")
        .state_dir()
        .monitor(monitor)
        .write()
        .config
}

fn load(path: &Path) -> Config {
    config::load(path).unwrap_or_else(|e| panic!("invalid test configuration: {e}"))
}

fn virtual_run(start: DateTime<Utc>, polls: u64) -> RunOptions {
    RunOptions {
        clock: Clock::Virtual {
            start,
            step: TimeDelta::seconds(10),
        },
        max_polls: Some(polls),
        ..RunOptions::default()
    }
}

/// Runs the daemon in-process on `cfg`'s scenario until `options.max_polls`,
/// then lets it drain (bounded by `delivery.shutdown_timeout`).
async fn run(cfg: Config, options: RunOptions) {
    daemon::run(cfg, options, std::future::pending())
        .await
        .expect("daemon run");
}

/// `wghook outbox --json -c CONFIG`, parsed.
async fn outbox_json(config: &Path) -> Vec<Value> {
    let out = tokio::process::Command::new(BIN)
        .args(["outbox", "--json", "-c"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "wghook outbox failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Array(rows)) => rows,
        _ => panic!(
            "wghook outbox --json printed no JSON array: {}",
            String::from_utf8_lossy(&out.stdout)
        ),
    }
}

fn ids(requests: &[Recorded]) -> HashSet<String> {
    requests.iter().map(Recorded::id).collect()
}

fn str_of<'a>(row: &'a Value, key: &str) -> &'a str {
    row[key].as_str().unwrap_or_default()
}

/// Per identifier, the kinds in the order of their first arrival (duplicates
/// left out).
fn first_arrivals(requests: &[Recorded]) -> HashMap<String, Vec<String>> {
    let mut seen = HashSet::new();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for r in requests {
        if seen.insert(r.id()) {
            out.entry(r.identifier()).or_default().push(r.kind());
        }
    }
    out
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// --- 1. receiver down while 1,000 events happen --------------------------

/// 250 peers in 5 waves 10 s apart; each peer is created, connects, then is
/// removed (disconnect + delete): 1,000 peer events, nothing for wg0 (it is
/// there at the first poll, which only sets the baseline).
fn thousand_events() -> String {
    let mut s =
        String::from("steps:\n  - at: 0s\n    add_interface: { name: wg0, listen_port: 51820 }\n");
    for i in 0..250 {
        let wave = (i % 5) * 10;
        let p = format!("p{i:03}");
        s += &format!(
            "  - at: {}s\n    add_peer: {{ interface: wg0, peer: {p} }}\n\
             \x20 - at: {}s\n    handshake: {{ interface: wg0, peer: {p} }}\n\
             \x20 - at: {}s\n    remove_peer: {{ interface: wg0, peer: {p} }}\n",
            10 + wave,
            20 + wave,
            40 + wave
        );
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_during_1000_events_gets_them_all_once_in_per_peer_order() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let cfg = setup(
        dir.path(),
        &thousand_events(),
        &format!("webhook:\n  url: http://127.0.0.1:{port}/hook\n  timeout: 5s\n"),
        "  shutdown_timeout: 40s\n  retry:\n    delays: [0s, 200ms, 500ms]\n",
        "",
    );
    let cfg = load(&cfg);
    // Opened before the daemon, so the two never create the schema at once.
    let store = Store::open(&cfg.monitor.state_dir).unwrap();
    // Polls at 0..90 s of virtual time, 100 ms apart in real time.
    let daemon = tokio::spawn(run(cfg, virtual_run(t0(), 10)));

    // Everything is committed while the receiver is down.
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.pending_count().unwrap() < 1000 {
        assert!(
            Instant::now() < deadline,
            "only {} events committed after 20 s",
            store.pending_count().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = store.list(None).unwrap();
    let committed: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    assert_eq!(committed.len(), 1000, "one outbox row per event");
    assert!(rows.iter().all(|r| r.state == "pending"));
    assert!(
        rows.iter().any(|r| r.attempts > 0),
        "deliveries were attempted while the receiver was down"
    );

    // The receiver comes up on the same port.
    let receiver = Receiver::start_on(port).await;
    let got = receiver
        .wait_for(Duration::from_secs(30), "all 1,000 event ids", |r| {
            ids(r).len() >= 1000
        })
        .await;
    tokio::time::timeout(Duration::from_secs(30), daemon)
        .await
        .expect("the daemon drains and returns")
        .unwrap();
    let got_after = receiver.requests();
    assert!(got_after.len() >= got.len());

    assert_eq!(ids(&got_after), committed, "exactly the committed events");
    let duplicates = got_after.len() - committed.len();
    assert!(
        duplicates <= 16,
        "{duplicates} duplicate deliveries without any crash"
    );

    // Per peer: create, connect, disconnect, delete, never out of order.
    let rank = |kind: &str| match kind {
        "peer.create" => 0,
        "peer.connect" => 1,
        "peer.disconnect" => 2,
        "peer.delete" => 3,
        other => panic!("unexpected event {other}"),
    };
    let names: HashMap<String, String> = (0..250)
        .map(|i| {
            let name = format!("p{i:03}");
            (key_for(&name).to_base64(), name)
        })
        .collect();
    let mut last: HashMap<String, i32> = HashMap::new();
    for r in &got_after {
        let peer = r.identifier();
        let now = rank(&r.kind());
        let before = last.insert(peer.clone(), now).unwrap_or(-1);
        assert!(
            now >= before,
            "peer {} got {} after a later event",
            names.get(&peer).map_or(peer.as_str(), |s| s.as_str()),
            r.kind()
        );
    }
    let firsts = first_arrivals(&got_after);
    assert_eq!(firsts.len(), 250, "events of every peer arrived");
    for (peer, kinds) in &firsts {
        assert!(names.contains_key(peer), "unknown identifier {peer}");
        assert_eq!(
            kinds,
            &[
                "peer.create",
                "peer.connect",
                "peer.disconnect",
                "peer.delete"
            ],
            "order of {}",
            names[peer]
        );
    }
    assert_eq!(store.pending_count().unwrap(), 0, "the outbox is empty");
    assert!(store.list(None).unwrap().is_empty());
}

// --- 2. Retry-After ------------------------------------------------------

const ALICE_CONNECTED: &str = "steps:
  - at: 0s
    add_interface: { name: wg0 }
  - at: 0s
    add_peer: { interface: wg0, peer: alice }
  - at: 0s
    handshake: { interface: wg0, peer: alice }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_2_delays_the_next_attempt_by_2_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    // The first two attempts of each event get 503 + Retry-After: 2.
    receiver.respond_by(|_, earlier| {
        if earlier < 2 {
            Reply {
                headers: vec![("retry-after".into(), "2".into())],
                ..Reply::status(503)
            }
        } else {
            Reply::status(200)
        }
    });
    // Without Retry-After the retries would come after ~100 ms, then ~200 ms
    // (Retry-After lengthens the scheduled delay, never shortens it); the
    // unused 3 s step lifts the cap on Retry-After (the largest step).
    let cfg = setup(
        dir.path(),
        ALICE_CONNECTED,
        &format!("webhook:\n  url: {}\n", receiver.url),
        "  shutdown_timeout: 20s\n  retry:\n    delays: [0s, 100ms, 200ms, 3s]\n",
        "",
    );
    run(load(&cfg), virtual_run(t0(), 1)).await;

    let got = receiver.requests();
    assert_eq!(got.len(), 3, "503, 503, then 200");
    assert_eq!(got[0].kind(), "peer.connect");
    assert!(got.iter().all(|r| r.id() == got[0].id()), "one event");
    // The outbox stores times in milliseconds: allow that much rounding.
    let tolerance = Duration::from_millis(5);
    for pair in got.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap + tolerance >= Duration::from_secs(2),
            "retried after {gap:?}, before Retry-After: 2 allowed"
        );
        assert!(
            gap < Duration::from_millis(3900),
            "retried after {gap:?}: Retry-After: 2 was not used"
        );
    }
    assert!(outbox_json(&cfg).await.is_empty(), "delivered in the end");
}

// --- 3. 400 gives up, 410 disables -----------------------------------------

const TWO_PEERS: &str = "steps:
  - at: 0s
    add_interface: { name: wg0 }
  - at: 0s
    add_peer: { interface: wg0, peer: alice }
  - at: 0s
    handshake: { interface: wg0, peer: alice }
  - at: 0s
    add_peer: { interface: wg0, peer: bob }
  - at: 0s
    handshake: { interface: wg0, peer: bob }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_gives_up_that_event_only_and_outbox_retry_sends_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let alice = key_for("alice").to_base64();
    let rejected = alice.clone();
    receiver.respond_by(move |r, earlier| {
        if earlier == 0 && r.kind() == "peer.create" && r.identifier() == rejected {
            Reply::status(400)
        } else {
            Reply::status(200)
        }
    });
    let cfg = setup(
        dir.path(),
        TWO_PEERS,
        &format!("webhook:\n  url: {}\n", receiver.url),
        "  shutdown_timeout: 20s\n  retry:\n    delays: [0s, 100ms]\n",
        "  announce_on_start: all\n",
    );
    run(load(&cfg), virtual_run(t0(), 2)).await;

    let got = receiver.requests();
    let mut kinds: Vec<(String, String)> = got.iter().map(|r| (r.kind(), r.identifier())).collect();
    kinds.sort();
    let bob = key_for("bob").to_base64();
    let mut expected = vec![
        ("interface.create".to_string(), "wg0".to_string()),
        ("peer.connect".into(), alice.clone()),
        ("peer.connect".into(), bob.clone()),
        ("peer.create".into(), alice.clone()),
        ("peer.create".into(), bob.clone()),
    ];
    expected.sort();
    assert_eq!(kinds, expected, "one attempt each; later events flowed");
    let create = got
        .iter()
        .find(|r| r.kind() == "peer.create" && r.identifier() == alice)
        .unwrap();
    let connect = got
        .iter()
        .position(|r| r.kind() == "peer.connect" && r.identifier() == alice)
        .unwrap();
    assert!(
        got.iter().position(|r| r.id() == create.id()).unwrap() < connect,
        "alice's connect went after her rejected create"
    );

    // The dead letter is listed...
    let rows = outbox_json(&cfg).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let row = &rows[0];
    assert_eq!(str_of(row, "state"), "given_up");
    assert_eq!(str_of(row, "webhook"), "default");
    assert_eq!(str_of(row, "event"), "peer.create");
    assert_eq!(str_of(row, "identifier"), alice);
    assert_eq!(str_of(row, "id"), create.id());
    assert_eq!(row["last_status"], 400);
    assert_eq!(row["attempts"], 1);

    // ...re-queued by `outbox retry`...
    let out = tokio::process::Command::new(BIN)
        .args(["outbox", "-c"])
        .arg(&cfg)
        .arg("retry")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 given-up delivery re-queued"), "{stdout}");
    let rows = outbox_json(&cfg).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(str_of(&rows[0], "state"), "pending");

    // ...and delivered by the next run, with the same webhook-id; the
    // restart itself reports nothing new.
    run(load(&cfg), virtual_run(t0(), 2)).await;
    let again = receiver.requests();
    assert_eq!(again.len(), got.len() + 1, "only the re-queued event");
    let resent = again.last().unwrap();
    assert_eq!(resent.id(), create.id());
    assert_eq!(resent.kind(), "peer.create");
    assert!(outbox_json(&cfg).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_that_webhook_while_another_keeps_receiving_everything() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.respond_by(|r, _| Reply::status(if r.path == "/gone" { 410 } else { 200 }));
    let base = receiver.url.trim_end_matches("/hook");
    let hooks = format!(
        "webhooks:\n  - name: gone\n    url: {base}/gone\n    max_in_flight: 1\n  \
         - name: live\n    url: {base}/live\n"
    );
    // Events in several polls, before and after the 410.
    let scenario = "steps:
  - at: 0s
    add_interface: { name: wg0 }
  - at: 0s
    add_peer: { interface: wg0, peer: alice }
  - at: 0s
    add_peer: { interface: wg0, peer: bob }
  - at: 10s
    handshake: { interface: wg0, peer: alice }
  - at: 20s
    add_peer: { interface: wg0, peer: carol }
  - at: 30s
    remove_peer: { interface: wg0, peer: bob }
";
    let cfg = setup(
        dir.path(),
        scenario,
        &hooks,
        "  shutdown_timeout: 20s\n  retry:\n    delays: [0s, 100ms]\n",
        "  announce_on_start: all\n",
    );
    run(load(&cfg), virtual_run(t0(), 5)).await;

    let got = receiver.requests();
    let gone: Vec<&Recorded> = got.iter().filter(|r| r.path == "/gone").collect();
    let live: Vec<(String, String)> = got
        .iter()
        .filter(|r| r.path == "/live")
        .map(|r| (r.kind(), r.identifier()))
        .collect();
    assert_eq!(gone.len(), 1, "nothing is sent after the 410");
    let alice = key_for("alice").to_base64();
    let bob = key_for("bob").to_base64();
    let carol = key_for("carol").to_base64();
    let mut sorted = live.clone();
    sorted.sort();
    let mut expected = vec![
        ("interface.create".to_string(), "wg0".to_string()),
        ("peer.create".into(), alice.clone()),
        ("peer.create".into(), bob.clone()),
        ("peer.connect".into(), alice),
        ("peer.create".into(), carol),
        ("peer.delete".into(), bob),
    ];
    expected.sort();
    assert_eq!(sorted, expected, "the live webhook got every event once");

    // The disabled webhook's events wait in the outbox; none is given up.
    let rows = outbox_json(&cfg).await;
    assert_eq!(rows.len(), 6, "{rows:#?}");
    assert!(rows
        .iter()
        .all(|r| str_of(r, "webhook") == "gone" && str_of(r, "state") == "pending"));
    let gone_row = rows
        .iter()
        .find(|r| str_of(r, "id") == gone[0].id())
        .unwrap();
    assert_eq!(gone_row["last_status"], 410);
}

// --- 5. restart-safe tracking ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_stopped_are_reported_once_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    // A: alice and bob connected, carol present.
    let a = "steps:
  - at: 0s
    add_interface: { name: wg0, listen_port: 51820 }
  - at: 0s
    add_peer: { interface: wg0, peer: alice, allowed_ips: [10.8.0.2/32] }
  - at: 0s
    add_peer: { interface: wg0, peer: bob, allowed_ips: [10.8.0.3/32] }
  - at: 0s
    add_peer: { interface: wg0, peer: carol, allowed_ips: [10.8.0.4/32] }
  - at: 0s
    handshake: { interface: wg0, peer: alice }
  - at: 0s
    handshake: { interface: wg0, peer: bob }
";
    // B, an hour later: alice's handshake is still the one of A (aged), bob
    // is gone, dave was added and connected, carol is untouched.
    let b = "steps:
  - at: 0s
    add_interface: { name: wg0, listen_port: 51820 }
  - at: 0s
    add_peer: { interface: wg0, peer: alice, allowed_ips: [10.8.0.2/32] }
  - at: 0s
    add_peer: { interface: wg0, peer: carol, allowed_ips: [10.8.0.4/32] }
  - at: 0s
    handshake: { interface: wg0, peer: alice }
  - at: 0s
    add_peer: { interface: wg0, peer: dave, allowed_ips: [10.8.0.5/32] }
  - at: 1h
    handshake: { interface: wg0, peer: dave }
";
    let cfg = setup(
        dir.path(),
        a,
        &format!("webhook:\n  url: {}\n", receiver.url),
        "  shutdown_timeout: 20s\n  retry:\n    delays: [0s, 100ms]\n",
        "",
    );
    let cfg = load(&cfg);
    let run_on = |scenario: &str, start: DateTime<Utc>| {
        let cfg = cfg.clone();
        let mut sim = SimBackend::new(Scenario::parse(scenario, "test").unwrap());
        // The scenario's time 0 is t0, whenever the daemon polls.
        sim.snapshot_at(t0(), &cfg.filter());
        async move {
            daemon::run_with_backend(
                cfg,
                Box::new(sim),
                virtual_run(start, 2),
                std::future::pending(),
            )
            .await
            .unwrap()
        }
    };
    let seen = |rs: &[Recorded]| -> Vec<(String, String)> {
        rs.iter().map(|r| (r.kind(), r.identifier())).collect()
    };
    let alice = key_for("alice").to_base64();
    let bob = key_for("bob").to_base64();
    let dave = key_for("dave").to_base64();

    run_on(a, t0()).await;
    let first = receiver.requests();
    let mut got = seen(&first);
    got.sort();
    assert_eq!(
        got,
        [
            ("peer.connect".to_string(), alice.clone()),
            ("peer.connect".to_string(), bob.clone())
        ]
    );

    run_on(b, t0() + TimeDelta::hours(1)).await;
    let second = receiver.requests().split_off(first.len());
    let mut got = seen(&second);
    got.sort();
    let mut expected = vec![
        ("peer.disconnect".to_string(), alice.clone()),
        ("peer.disconnect".into(), bob.clone()),
        ("peer.delete".into(), bob.clone()),
        ("peer.create".into(), dave.clone()),
        ("peer.connect".into(), dave.clone()),
    ];
    expected.sort();
    assert_eq!(got, expected, "exactly what changed while stopped, once");
    assert_eq!(ids(&second).len(), 5, "no duplicate");
    let firsts = first_arrivals(&second);
    assert_eq!(firsts[&bob], ["peer.disconnect", "peer.delete"]);
    assert_eq!(firsts[&dave], ["peer.create", "peer.connect"]);
    let alice_off = second
        .iter()
        .find(|r| r.identifier() == alice)
        .unwrap()
        .json();
    assert_eq!(alice_off["payload"]["IsConnected"], false);

    run_on(b, t0() + TimeDelta::hours(1) + TimeDelta::seconds(20)).await;
    let third = receiver.requests().split_off(first.len() + second.len());
    assert!(
        third.is_empty(),
        "a restart on an unchanged host reports nothing: {:?}",
        seen(&third)
    );
}

// --- 8. redirects ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_gives_the_event_up() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let other = receiver.url.replace("/hook", "/other");
    receiver.respond_by(move |r, _| Reply {
        headers: vec![("location".into(), other.clone())],
        ..Reply::status(if r.path == "/hook" { 302 } else { 200 })
    });
    let cfg = setup(
        dir.path(),
        ALICE_CONNECTED,
        &format!("webhook:\n  url: {}\n", receiver.url),
        "  shutdown_timeout: 20s\n  retry:\n    delays: [0s, 100ms]\n",
        "",
    );
    run(load(&cfg), virtual_run(t0(), 1)).await;

    let got = receiver.requests();
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/hook"], "one attempt, the redirect not followed");
    let rows = outbox_json(&cfg).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(str_of(&rows[0], "state"), "given_up");
    assert_eq!(str_of(&rows[0], "id"), got[0].id());
    assert_eq!(rows[0]["last_status"], 302);
}

// --- 9. per-webhook event filters ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_webhook_receives_exactly_the_kinds_its_events_filter_names() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let base = receiver.url.trim_end_matches("/hook");
    let hooks = format!(
        "webhooks:\n  - name: connects\n    url: {base}/connects\n    events: [peer.connect]\n  \
         - name: peers\n    url: {base}/peers\n    events: [\"peer.*\"]\n"
    );
    let scenario = "steps:
  - at: 0s
    add_interface: { name: wg0 }
  - at: 0s
    add_peer: { interface: wg0, peer: alice }
  - at: 0s
    handshake: { interface: wg0, peer: alice }
  - at: 10s
    add_peer: { interface: wg0, peer: bob }
  - at: 20s
    remove_peer: { interface: wg0, peer: alice }
";
    let cfg = setup(
        dir.path(),
        scenario,
        &hooks,
        "  shutdown_timeout: 20s\n  retry:\n    delays: [0s, 100ms]\n",
        "  announce_on_start: all\n",
    );
    run(load(&cfg), virtual_run(t0(), 3)).await;

    let got = receiver.requests();
    let at = |path: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = got
            .iter()
            .filter(|r| r.path == path)
            .map(|r| (r.kind(), r.identifier()))
            .collect();
        v.sort();
        v
    };
    let alice = key_for("alice").to_base64();
    let bob = key_for("bob").to_base64();
    assert_eq!(
        at("/connects"),
        [("peer.connect".to_string(), alice.clone())]
    );
    let mut want = vec![
        ("peer.create".to_string(), alice.clone()),
        ("peer.connect".into(), alice.clone()),
        ("peer.create".into(), bob),
        ("peer.disconnect".into(), alice.clone()),
        ("peer.delete".into(), alice),
    ];
    want.sort();
    assert_eq!(
        at("/peers"),
        want,
        "peer.* takes every peer event, no interface event"
    );
    assert_eq!(got.len(), 6, "nothing else was sent");
    assert!(outbox_json(&cfg).await.is_empty());
}

/// `wghook outbox ARGS -c CONFIG`, which must succeed.
async fn outbox_command(config: &Path, args: &[&str]) {
    let out = tokio::process::Command::new(BIN)
        .args(["outbox", "-c"])
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "wghook outbox {args:?}: {out:?}");
}

/// Waits (at most `timeout`) until the receiver has had no request for
/// `quiet`; panics naming how many kept coming.
async fn until_quiet(receiver: &Receiver, quiet: Duration, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let mut count = receiver.requests().len();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = receiver.requests().len();
        if now != count {
            count = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return count;
        }
        assert!(
            Instant::now() < deadline,
            "requests kept coming: {count} so far"
        );
    }
}

/// The daemon on `cfg`, in this process, on the real clock; stops when the
/// returned sender is dropped or sent to.
fn run_live(
    cfg: Config,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        daemon::run(cfg, RunOptions::default(), async {
            let _ = stopped.await;
        })
        .await
        .expect("daemon run");
    });
    (stop, task)
}

/// The daemon on TWO_PEERS in `dir`, in this process, delivering to
/// `receiver` (answering `status`), retried every 100 ms.
fn live(
    dir: &Path,
    receiver: &Receiver,
    status: u16,
) -> (
    PathBuf,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    receiver.respond_with(status);
    let cfg = setup(
        dir,
        TWO_PEERS,
        &format!("webhook:\n  url: {}\n", receiver.url),
        "  shutdown_timeout: 2s\n  retry:\n    delays: [0s, 100ms]\n",
        "  announce_on_start: all\n",
    );
    let (stop, task) = run_live(load(&cfg));
    (cfg, stop, task)
}

/// Regression: `wghook outbox purge` deleted the events from the file, but
/// the running daemon kept retrying them from memory (and `wghook outbox`
/// then said nothing was pending).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_purge_stops_a_running_daemons_retries_within_seconds() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), Receiver::start().await);
    let (cfg, stop, task) = live(dir.path(), &receiver, 500);
    receiver
        .wait_until(Duration::from_secs(10), "retries", |r| r.len() >= 10)
        .await;
    outbox_command(&cfg, &["purge", "--yes"]).await;
    // Retries every 100 ms (+/-20 %) until the purge is seen: quiet for a
    // second means they stopped.
    until_quiet(&receiver, Duration::from_secs(1), Duration::from_secs(5)).await;
    assert!(outbox_json(&cfg).await.is_empty());
    let _ = stop.send(());
    task.await.unwrap();
}

/// Regression: `wghook outbox retry` re-queued dead letters in the file,
/// but a running daemon only sent them after its next restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_retry_is_sent_by_a_running_daemon_within_seconds() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), Receiver::start().await);
    let (cfg, stop, task) = live(dir.path(), &receiver, 400);
    // interface.create, two peer.create, two peer.connect: all given up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox_json(&cfg)
        .await
        .iter()
        .filter(|r| str_of(r, "state") == "given_up")
        .count()
        < 5
    {
        assert!(
            Instant::now() < deadline,
            "not given up: {:#?}",
            outbox_json(&cfg).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rejected = receiver.requests().len();
    receiver.respond_with(200);
    outbox_command(&cfg, &["retry"]).await;
    receiver
        .wait_until(Duration::from_secs(5), "the re-queued events", |r| {
            r.len() >= rejected + 5
        })
        .await;
    let resent = &receiver.requests()[rejected..];
    // In order for each peer: create before connect.
    let arrivals = first_arrivals(resent);
    for (who, kinds) in &arrivals {
        if who != "wg0" {
            assert_eq!(kinds, &["peer.create", "peer.connect"], "{who}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !outbox_json(&cfg).await.is_empty() {
        assert!(Instant::now() < deadline, "still in the outbox");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    task.await.unwrap();
}
