//! The outbox with the `wghook run` binary: SIGKILL while delivering,
//! the outbox bound, SIGTERM with a request in flight, and a SIGHUP reload
//! that enables a webhook disabled by 410 again.

use std::process::Stdio;

use rand::{Rng as _, SeedableRng as _};

use super::*;

// --- 4. SIGKILL while delivering ---------------------------------------------

/// wg0 and 250 connected peers, all at 0 s: every start of the simulated
/// host sees the same final host, so only the first run has events (501 with
/// `announce_on_start: all`); restarts only re-deliver.
fn five_hundred_events() -> String {
    let mut s = String::from("steps:\n  - at: 0s\n    add_interface: { name: wg0 }\n");
    for i in 0..250 {
        s += &format!(
            "  - at: 0s\n    add_peer: {{ interface: wg0, peer: k{i:03} }}\n\
             \x20 - at: 0s\n    handshake: {{ interface: wg0, peer: k{i:03} }}\n"
        );
    }
    s
}

fn spawn_daemon(cfg: &Path, log: &Path) -> tokio::process::Child {
    let stderr = std::fs::File::create(log).unwrap();
    tokio::process::Command::new(BIN)
        .args(["run", "--log-format", "json", "-c"])
        .arg(cfg)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Sends `signal` (`-TERM`, `-HUP`) to our own child.
async fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("still running");
    let status = tokio::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

/// SIGTERM to our own child, then its exit status (within 15 s).
async fn terminate(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    signal(child, "-TERM").await;
    tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the daemon stops within 15 s of SIGTERM")
        .unwrap()
}

/// The daemon's JSON log lines so far.
fn log_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn log_message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_delivery_5_times_loses_nothing() {
    const MAX_IN_FLIGHT: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    // A slow receiver, so that kills land mid-delivery.
    receiver.respond_by(|_, _| Reply {
        delay: Some(Duration::from_millis(20)),
        ..Reply::status(200)
    });
    let cfg = setup(
        dir.path(),
        &five_hundred_events(),
        &format!("webhook:\n  url: {}\n  timeout: 5s\n", receiver.url),
        &format!(
            "  max_in_flight: {MAX_IN_FLIGHT}\n  shutdown_timeout: 5s\n  \
             retry:\n    delays: [0s, 100ms, 300ms]\n"
        ),
        "  announce_on_start: all\n",
    );
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let state_dir = dir.path().join("state");
    let mut committed: HashSet<String> = HashSet::new();
    // When each killed process was surely gone.
    let mut kills: Vec<Instant> = Vec::new();

    for round in 0..5 {
        let log = dir.path().join(format!("run{round}.log"));
        let before = receiver.requests().len();
        let mut child = spawn_daemon(&cfg, &log);
        // The first kill only once the events are committed (some arrived);
        // later ones anywhere, start-up included.
        let more = rng.random_range(if round == 0 { 5 } else { 0 }..=70);
        let waited = tokio::time::timeout(
            Duration::from_secs(20),
            receiver.wait_for(Duration::from_secs(60), "progress", |r| {
                r.len() >= before + more
            }),
        )
        .await;
        assert!(
            waited.is_ok(),
            "round {round} (seed {seed}): no progress; log:\n{}",
            last_lines(&log, 20)
        );
        child.kill().await.unwrap(); // SIGKILL, then reaped
        kills.push(Instant::now());
        if round == 0 {
            let store = Store::open(&state_dir).unwrap();
            committed = store
                .list(None)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            committed.extend(ids(&receiver.requests()));
            assert_eq!(
                committed.len(),
                501,
                "wg0 + 250 creates + 250 connects committed by the first run"
            );
        }
    }

    // A last start delivers the rest; restarts produced no new event.
    let log = dir.path().join("final.log");
    let mut child = spawn_daemon(&cfg, &log);
    let expected = committed.clone();
    let got = tokio::time::timeout(
        Duration::from_secs(30),
        receiver.wait_for(Duration::from_secs(60), "every event id", move |r| {
            ids(r).is_superset(&expected)
        }),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "seed {seed}: not every event arrived; log:\n{}",
            last_lines(&log, 20)
        )
    });
    let status = terminate(&mut child).await;
    assert!(status.success(), "{status}: {}", last_lines(&log, 20));
    let got_after = receiver.requests();
    assert_eq!(ids(&got_after), committed, "seed {seed}: no new events");
    assert!(got.len() <= got_after.len());

    let firsts = first_arrivals(&got_after);
    assert_eq!(firsts["wg0"], ["interface.create"]);
    for (peer, kinds) in firsts.iter().filter(|(k, _)| k.as_str() != "wg0") {
        assert_eq!(kinds, &["peer.create", "peer.connect"], "order of {peer}");
    }
    // Every duplicate repeats a request that was in flight at a kill: not
    // answered yet, or answered but its outcome not yet durable (a delivery
    // keeps its slot until the outbox writer confirms it). Either way at most
    // max_in_flight per kill.
    let slow = Duration::from_millis(20);
    // Each request's previous copy, and the kill that came after it.
    let mut previous: HashMap<String, Instant> = HashMap::new();
    let mut in_flight_at_kill = vec![0usize; kills.len()];
    let mut answered_at_kill = vec![0usize; kills.len()];
    for r in &got_after {
        let Some(orig) = previous.insert(r.id(), r.at) else {
            continue;
        };
        let k = kills
            .iter()
            .position(|&reaped| reaped > orig)
            .unwrap_or_else(|| panic!("seed {seed}: {} sent twice without a kill", r.kind()));
        let reaped = kills[k];
        assert!(
            reaped - orig < Duration::from_millis(500),
            "seed {seed}: {} delivered {:?} before kill {k} was sent again",
            r.kind(),
            reaped - orig
        );
        if orig + slow > reaped {
            in_flight_at_kill[k] += 1; // surely unanswered when killed
        } else {
            answered_at_kill[k] += 1;
        }
    }
    let duplicates = got_after.len() - committed.len();
    eprintln!(
        "sigkill test: seed {seed}, {} requests, {duplicates} duplicates; per kill: \
         in flight {in_flight_at_kill:?}, answered but re-sent {answered_at_kill:?}",
        got_after.len()
    );
    for k in 0..kills.len() {
        assert!(
            in_flight_at_kill[k] + answered_at_kill[k] <= MAX_IN_FLIGHT,
            "seed {seed}: kill {k} re-sent more than the {MAX_IN_FLIGHT} requests that can be \
             in flight: {in_flight_at_kill:?} + {answered_at_kill:?}"
        );
    }
    assert!(outbox_json(&cfg).await.is_empty(), "the outbox is empty");
}

// --- 6. the outbox bound -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_keeps_the_newest_100_and_logs_each_drop() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    // wg0 and 99 peers at once (100 creates with announce_on_start: all),
    // then 50 more peers a second later: 150 events.
    let mut scenario = String::from("steps:\n  - at: 0s\n    add_interface: { name: wg0 }\n");
    for i in 0..149 {
        let at = if i < 99 { "0s" } else { "1s" };
        scenario += &format!("  - at: {at}\n    add_peer: {{ interface: wg0, peer: q{i:03} }}\n");
    }
    let cfg = setup(
        dir.path(),
        &scenario,
        &format!("webhook:\n  url: http://127.0.0.1:{port}/hook\n"),
        "  max_pending_events: 100\n  shutdown_timeout: 5s\n  \
         retry:\n    delays: [0s, 200ms, 500ms]\n",
        "  announce_on_start: all\n",
    );
    let log = dir.path().join("run.log");
    let mut child = spawn_daemon(&cfg, &log);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = log_lines(&log);
        let events = lines.iter().filter(|v| log_message(v) == "event").count();
        let full = lines
            .iter()
            .filter(|v| log_message(v).contains("outbox full"))
            .count();
        if events >= 150 && full >= 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 20 s: {events} events, {full} drops logged; log:\n{}",
            last_lines(&log, 20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = terminate(&mut child).await;
    assert!(status.success(), "{status}");

    let lines = log_lines(&log);
    let events: Vec<String> = lines
        .iter()
        .filter(|v| log_message(v) == "event")
        .map(|v| v["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events.len(), 150);
    let drops: Vec<&Value> = lines
        .iter()
        .filter(|v| log_message(v).contains("outbox full"))
        .collect();
    assert_eq!(drops.len(), 50, "one ERROR line per dropped event");
    assert!(drops.iter().all(|v| v["level"] == "ERROR"));
    let dropped: Vec<String> = drops
        .iter()
        .map(|v| v["event_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(dropped, events[..50], "the 50 oldest were dropped");

    let rows = outbox_json(&cfg).await;
    assert_eq!(rows.len(), 100);
    assert!(rows.iter().all(|r| str_of(r, "state") == "pending"));
    let kept: HashSet<&str> = rows.iter().map(|r| str_of(r, "id")).collect();
    let newest: HashSet<&str> = events[50..].iter().map(String::as_str).collect();
    assert_eq!(kept, newest, "the 100 newest are kept");
}

// --- 7. SIGTERM with a request in flight ---------------------------------------

/// Waits (20 s at most) for a log line whose message contains `text`.
async fn wait_for_log(log: &Path, text: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = log_lines(log)
            .into_iter()
            .find(|v| log_message(v).contains(text))
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {text:?} after 20 s; log:\n{}",
            last_lines(log, 20)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_and_it_is_not_sent_again() {
    const SLOW: Duration = Duration::from_millis(1500);
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.respond_by(|_, _| Reply {
        delay: Some(SLOW),
        ..Reply::status(200)
    });
    let cfg = setup(
        dir.path(),
        ALICE_CONNECTED,
        &format!("webhook:\n  url: {}\n  timeout: 10s\n", receiver.url),
        "  shutdown_timeout: 10s\n  retry:\n    delays: [0s, 100ms]\n",
        "",
    );
    let log = dir.path().join("run1.log");
    let mut child = spawn_daemon(&cfg, &log);
    let first = receiver.wait_for_count(1, Duration::from_secs(20)).await;
    let status = terminate(&mut child).await;
    assert!(status.success(), "{status}: {}", last_lines(&log, 20));
    // The request arrived before SIGTERM, its answer SLOW after arriving:
    // the daemon waited for it.
    assert!(
        first[0].at.elapsed() + Duration::from_millis(50) >= SLOW,
        "the daemon exited {:?} after the request arrived, before its answer",
        first[0].at.elapsed()
    );
    let rows = outbox_json(&cfg).await;
    assert!(
        rows.is_empty(),
        "the finished request was recorded as delivered: {rows:#?}"
    );

    // A restart on the same host has nothing to send.
    let log = dir.path().join("run2.log");
    let mut child = spawn_daemon(&cfg, &log);
    wait_for_log(&log, "first poll done").await;
    let status = terminate(&mut child).await;
    assert!(status.success(), "{status}");
    let got = receiver.requests();
    assert_eq!(
        got.iter().map(Recorded::id).collect::<Vec<_>>(),
        first.iter().map(Recorded::id).collect::<Vec<_>>(),
        "nothing was sent again after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_at_shutdown_timeout_and_the_unanswered_event_goes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    // The first request of each event is never answered (in this test's
    // time); a repeat is answered at once.
    receiver.respond_by(|_, earlier| Reply {
        delay: (earlier == 0).then_some(Duration::from_secs(120)),
        ..Reply::status(200)
    });
    let cfg = setup(
        dir.path(),
        ALICE_CONNECTED,
        &format!("webhook:\n  url: {}\n  timeout: 60s\n", receiver.url),
        "  shutdown_timeout: 2s\n  retry:\n    delays: [0s, 100ms]\n",
        "",
    );
    let log = dir.path().join("run1.log");
    let mut child = spawn_daemon(&cfg, &log);
    let first = receiver.wait_for_count(1, Duration::from_secs(20)).await;
    let id = first[0].id();
    let sent = Instant::now();
    let status = terminate(&mut child).await;
    let took = sent.elapsed();
    assert!(status.success(), "{status}: {}", last_lines(&log, 20));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "stopped {took:?} after SIGTERM, with shutdown_timeout: 2s"
    );
    let timeout = wait_for_log(&log, "shutdown timeout reached").await;
    assert_eq!(timeout["level"], "WARN");
    let rows = outbox_json(&cfg).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(str_of(&rows[0], "id"), id);
    assert_eq!(str_of(&rows[0], "state"), "pending");

    // After the restart it goes again, with the same webhook-id.
    let log = dir.path().join("run2.log");
    let mut child = spawn_daemon(&cfg, &log);
    let again = receiver
        .wait_until(Duration::from_secs(20), "the event again", |r| {
            r.iter().filter(|r| r.id() == id).count() >= 2
        })
        .await;
    assert_eq!(again.len(), 2, "only that event, once more");
    // Pending events go out at start, before the signal handlers are set
    // (they are by the first poll).
    wait_for_log(&log, "first poll done").await;
    let status = terminate(&mut child).await;
    assert!(status.success(), "{status}");
    assert!(
        outbox_json(&cfg).await.is_empty(),
        "delivered after restart"
    );
}

// --- 10. a 410-disabled webhook comes back on reload ------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_disabled_by_410_is_enabled_again_by_a_sighup_reload() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    // The very first request gets 410; every later one 200.
    let first = std::sync::atomic::AtomicBool::new(true);
    receiver.respond_by(move |_, _| {
        let gone = first.swap(false, std::sync::atomic::Ordering::SeqCst);
        Reply::status(if gone { 410 } else { 200 })
    });
    let cfg = setup(
        dir.path(),
        TWO_PEERS,
        &format!("webhook:\n  url: {}\n  max_in_flight: 1\n", receiver.url),
        "  shutdown_timeout: 10s\n  retry:\n    delays: [0s, 100ms]\n",
        "  announce_on_start: all\n",
    );
    let log = dir.path().join("run.log");
    let mut child = spawn_daemon(&cfg, &log);
    let disabled = wait_for_log(&log, "410 Gone").await;
    assert_eq!(disabled["level"], "ERROR");
    // wg0 and two peers, each created, the peers connected.
    let rows = outbox_json(&cfg).await;
    assert_eq!(rows.len(), 5, "{rows:#?}");
    let committed: HashSet<String> = rows.iter().map(|r| str_of(r, "id").to_string()).collect();
    let gone = receiver.requests();
    assert_eq!(gone.len(), 1, "nothing is sent while disabled");

    signal(&child, "-HUP").await;
    let got = receiver
        .wait_until(
            Duration::from_secs(20),
            "every event after the reload",
            |r| {
                ids(r).is_superset(&committed)
                    && r.iter().filter(|x| x.id() == gone[0].id()).count() == 2
            },
        )
        .await;
    wait_for_log(&log, "configuration reloaded").await;
    let status = terminate(&mut child).await;
    assert!(status.success(), "{status}");
    assert_eq!(
        got.len(),
        6,
        "the refused event again, then the four others once"
    );
    assert!(outbox_json(&cfg).await.is_empty(), "all delivered");
}
