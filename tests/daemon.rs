//! `wghook run` as systemd runs it: sd_notify on a real NOTIFY_SOCKET,
//! SIGHUP reloads (valid and broken), and Prometheus metrics scraped over
//! HTTP, on the simulated backend with a real receiver on 127.0.0.1.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::UnixDatagram;
use wghook::backend::sim::key_for;

use crate::util::receiver::Receiver;
use crate::util::simhost::SimHost;

/// A running `wghook run`, stopped (SIGTERM, then SIGKILL) when dropped.
struct Daemon {
    child: Child,
    stderr: PathBuf,
}

impl Daemon {
    fn start(config: &Path, dir: &Path, env: &[(&str, String)]) -> Daemon {
        Self::start_under(&[], config, dir, env)
    }

    /// [`Daemon::start`] under a wrapper command (`prlimit ...`), which
    /// must exec wghook (so signals reach it).
    fn start_under(wrapper: &[&str], config: &Path, dir: &Path, env: &[(&str, String)]) -> Daemon {
        let stderr = dir.join("stderr.log");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(env!("CARGO_BIN_EXE_wghook"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_wghook")),
        };
        cmd.args(["run", "-c"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().unwrap(),
            stderr,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(&self.stderr).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// The metrics URL the daemon logs (it listens on port 0).
    async fn metrics_url(&self) -> String {
        self.wait_log("metrics served at ", Duration::from_secs(10))
            .await;
        self.log()
            .split("metrics served at ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the metrics address in the log")
            .to_string()
    }

    /// Waits until the log contains `needle` (async: the receivers run on
    /// this test's runtime and must keep answering meanwhile).
    async fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{needle:?} not logged within {timeout:?}; log:\n{}",
            self.log()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scenario in which something happens every second for a while.
fn scenario(peers: &[&str], every_secs: u64) -> String {
    let mut text =
        String::from("steps:\n  - at: 0s\n    add_interface: { name: wg0, listen_port: 51820 }\n");
    for (i, p) in peers.iter().enumerate() {
        let t = i as u64 * every_secs;
        text.push_str(&format!(
            "  - at: {t}s\n    add_peer: {{ interface: wg0, peer: {p}, allowed_ips: [10.8.0.{}/32] }}\n  \
             - at: {t}s\n    handshake: {{ interface: wg0, peer: {p}, endpoint: \"198.51.100.{}:51820\" }}\n  \
             - at: {t}s\n    traffic: {{ interface: wg0, peer: {p}, rx: 1000, tx: 2000 }}\n",
            i + 2,
            i + 2
        ));
    }
    text
}

/// The simulated host in `dir`: `scenario`, polled every 200 ms, everything
/// announced at start, delivering to `webhooks`; `extra` top-level sections.
fn write_config(dir: &Path, scenario: &str, webhooks: &str, extra: &str) -> PathBuf {
    SimHost::new(dir, scenario)
        .webhooks(webhooks)
        .monitor("  interval: 200ms\n  announce_on_start: all\n")
        .state_dir()
        .sections(extra)
        .write()
        .config
}

fn hooks(list: &[(&str, &Receiver)]) -> String {
    let mut s = String::from("webhooks:\n");
    for (name, r) in list {
        s.push_str(&format!("  - name: {name}\n    url: {}\n", r.url));
    }
    s
}

#[tokio::test]
async fn sd_notify_ready_after_first_poll_then_watchdog_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let scenario = scenario(&["alice"], 1);
    let config = write_config(dir.path(), &scenario, &hooks(&[("r", &receiver)]), "");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let daemon = Daemon::start(
        &config,
        dir.path(),
        &[
            ("NOTIFY_SOCKET", socket_path.display().to_string()),
            // 400 ms: a WATCHDOG=1 every 200 ms.
            ("WATCHDOG_USEC", "400000".into()),
        ],
    );

    let mut messages: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
            .await
            .expect("a datagram from wghook within 10 s")
            .unwrap();
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        let watchdogs = messages.iter().filter(|m| m.contains("WATCHDOG=1")).count();
        let status = messages
            .iter()
            .any(|m| m.contains("STATUS=watching 1 interface, 1 peers (1 connected)"));
        if watchdogs >= 3 && status {
            break;
        }
    }
    let ready = messages
        .iter()
        .position(|m| m.contains("READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 in {messages:?}"));
    assert!(
        daemon.log().contains("first poll done"),
        "READY after the first poll"
    );
    assert!(
        messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "{messages:?}"
    );
    let status = messages
        .iter()
        .position(|m| m.contains("STATUS=watching 1 interface, 1 peers (1 connected), "))
        .unwrap_or_else(|| panic!("no STATUS line in {messages:?}"));
    assert!(status >= ready || messages[status].contains("READY=1"));
    // The events were delivered too.
    receiver
        .wait_until(Duration::from_secs(10), "the expected webhooks", |r| {
            r.iter().any(|x| x.kind() == "peer.connect")
        })
        .await;

    daemon.signal("-TERM");
    let mut stopping = false;
    for _ in 0..20 {
        match tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf)).await {
            Ok(Ok(n)) if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") => {
                stopping = true;
                break;
            }
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    assert!(stopping, "STOPPING=1 at SIGTERM");
}

#[tokio::test]
async fn sighup_applies_a_valid_config_and_keeps_the_old_one_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    // A new peer every second for 30 s.
    let names: Vec<String> = (0..30).map(|i| format!("peer{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let scenario = scenario(&names, 1);
    let config = write_config(dir.path(), &scenario, &hooks(&[("first", &first)]), "");
    let daemon = Daemon::start(&config, dir.path(), &[]);
    first
        .wait_until(Duration::from_secs(10), "the expected webhooks", |r| {
            r.iter()
                .any(|x| x.identifier() == key_for("peer0").to_base64())
        })
        .await;
    assert!(second.requests().is_empty());

    // Valid: a second webhook starts receiving; the first keeps going.
    write_config(
        dir.path(),
        &scenario,
        &hooks(&[("first", &first), ("second", &second)]),
        "",
    );
    daemon.signal("-HUP");
    daemon
        .wait_log("configuration reloaded", Duration::from_secs(10))
        .await;
    let got = second
        .wait_until(Duration::from_secs(10), "the expected webhooks", |r| {
            r.iter().any(|x| x.kind() == "peer.connect")
        })
        .await;
    let later = got
        .iter()
        .find(|x| x.kind() == "peer.connect")
        .unwrap()
        .identifier();
    assert_ne!(
        later,
        key_for("peer0").to_base64(),
        "only events after the reload go to the new webhook"
    );

    // Broken: the error is logged and the running configuration keeps working.
    std::fs::write(&config, "webhooks: [\n").unwrap();
    let before = first.requests().len();
    daemon.signal("-HUP");
    daemon
        .wait_log(
            "reload failed; keeping the running configuration",
            Duration::from_secs(10),
        )
        .await;
    first
        .wait_until(Duration::from_secs(10), "the expected webhooks", |r| {
            r.len() > before + 2
        })
        .await;
    let n = second.requests().len();
    second
        .wait_until(Duration::from_secs(10), "the expected webhooks", |r| {
            r.len() > n
        })
        .await;
    // Valid again, with changes: `first` removed, `second` changed (a new
    // header), the interval changed.
    let changed = hooks(&[("second", &second)]).replace(
        &format!("    url: {}\n", second.url),
        &format!(
            "    url: {}\n    headers: {{ X-Reloaded: \"yes\" }}\n",
            second.url
        ),
    );
    write_config(dir.path(), &scenario, &changed, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("interval: 200ms", "interval: 300ms");
    std::fs::write(&config, text).unwrap();
    daemon.signal("-HUP");
    daemon
        .wait_log(
            "configuration reloaded webhooks=1 interval_ms=300",
            Duration::from_secs(10),
        )
        .await;
    let first_after = first.requests().len();
    let n = second.requests().len();
    let got = second
        .wait_until(Duration::from_secs(10), "events with the new header", |r| {
            r[n..].iter().any(|x| x.header("x-reloaded") == Some("yes"))
        })
        .await;
    assert!(
        got.iter().take(n).all(|x| x.header("x-reloaded").is_none()),
        "the header is new"
    );
    let m = second.requests().len();
    second
        .wait_until(Duration::from_secs(10), "more events", |r| r.len() > m + 1)
        .await;
    assert_eq!(
        first.requests().len(),
        first_after,
        "a removed webhook gets nothing more"
    );

    // Nothing was announced twice across the three reloads: with the tracker
    // state lost, `announce_on_start: all` would send every create again.
    for (name, r) in [("first", &first), ("second", &second)] {
        let mut seen = std::collections::HashSet::new();
        for x in r.requests() {
            let what = (x.kind(), x.identifier());
            assert!(seen.insert(what.clone()), "{name} got {what:?} twice");
        }
    }
}

/// Parses one sample's value from Prometheus text: `name{labels} value`.
fn sample(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split(['{', ' ']).next() == Some(name) && (label.is_empty() || l.contains(label))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_match_a_known_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let scenario = scenario(&["alice", "bob"], 0);
    let config = write_config(
        dir.path(),
        &scenario,
        &hooks(&[("r", &receiver)]),
        &format!(
            "metrics:\n  listen: 127.0.0.1:0\npeers:\n  \"{}\": {{ name: alice-laptop }}\n",
            key_for("alice")
        ),
    );
    let daemon = Daemon::start(&config, dir.path(), &[]);
    // Port 0: the kernel picks a free port, and wghook logs the one it got.
    let url = daemon.metrics_url().await;
    receiver
        .wait_until(Duration::from_secs(10), "the expected webhooks", |r| {
            r.iter().filter(|x| x.kind() == "peer.connect").count() == 2
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        // Wait for the deliveries of the 5 events to be counted.
        // (the queue gauges follow at the next poll).
        if sample(&text, "wghook_deliveries_total", "outcome=\"delivered\"") == Some(5.0)
            && sample(&text, "wghook_pending_events", "webhook=\"r\"") == Some(0.0)
        {
            break text;
        }
        assert!(Instant::now() < deadline, "metrics never settled:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let alice = format!("public_key=\"{}\"", key_for("alice"));
    assert_eq!(
        sample(&text, "wireguard_peer_connected", &alice),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("name=\"alice-laptop\""), "{text}");
    assert_eq!(
        sample(&text, "wireguard_peer_receive_bytes_total", &alice),
        Some(1000.0)
    );
    assert_eq!(
        sample(&text, "wireguard_peer_transmit_bytes_total", &alice),
        Some(2000.0)
    );
    assert_eq!(sample(&text, "wireguard_interface_peers", "wg0"), Some(2.0));
    assert_eq!(
        sample(&text, "wghook_events_total", "peer.connect"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "wghook_events_total", "peer.create"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "wghook_pending_events", "webhook=\"r\""),
        Some(0.0)
    );
    assert!(
        sample(&text, "wghook_poll_duration_seconds_count", "").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
}

/// Regression: with userspace sockets that accept and never answer, one
/// poll took `sockets / 8 * uapi_timeout` (32 s for 128), and nothing sent
/// `WATCHDOG=1` meanwhile: the shipped unit (`WatchdogSec=30`) would have
/// killed the service in a loop. Now the watchdog is fed from its own task
/// while polls hang, and a poll ends at its deadline (10 s) with the hung
/// interfaces unreadable.
#[tokio::test]
async fn hung_uapi_sockets_neither_starve_the_watchdog_nor_stretch_the_poll() {
    let dir = tempfile::tempdir().unwrap();
    let uapi = dir.path().join("uapi");
    std::fs::create_dir(&uapi).unwrap();
    // Bound and listening, never answering: a connect and the request
    // succeed (the backlog takes them), the reply never comes.
    let _hung: Vec<std::os::unix::net::UnixListener> = (0..128)
        .map(|i| {
            std::os::unix::net::UnixListener::bind(uapi.join(format!("wghung{i}.sock"))).unwrap()
        })
        .collect();
    let config = dir.path().join("wghook.yaml");
    std::fs::write(
        &config,
        format!(
            "monitor:\n  backend: userspace\n  uapi_dirs: [{}]\n  uapi_timeout: 2s\n  \
             interval: 1s\n  state_dir: {}\n",
            uapi.display(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let started = Instant::now();
    let daemon = Daemon::start(
        &config,
        dir.path(),
        &[
            ("NOTIFY_SOCKET", socket_path.display().to_string()),
            // 2 s: a WATCHDOG=1 every second.
            ("WATCHDOG_USEC", "2000000".into()),
        ],
    );

    let mut buf = [0u8; 4096];
    let mut last_watchdog = Instant::now();
    let mut watchdogs = 0;
    let mut ready_after = None;
    while started.elapsed() < Duration::from_secs(14) {
        let n = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no datagram for 3 s (after {watchdogs} WATCHDOG=1); log:\n{}",
                    daemon.log()
                )
            })
            .unwrap();
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message.contains("WATCHDOG=1") {
            let gap = last_watchdog.elapsed();
            assert!(
                gap < Duration::from_millis(2500),
                "{gap:?} without WATCHDOG=1"
            );
            last_watchdog = Instant::now();
            watchdogs += 1;
        }
        if message.contains("READY=1") && ready_after.is_none() {
            ready_after = Some(started.elapsed());
        }
    }
    assert!(watchdogs >= 10, "{watchdogs} WATCHDOG=1 in 14 s");
    // READY=1 comes after the first poll: by its deadline, not after 32 s.
    let ready_after =
        ready_after.unwrap_or_else(|| panic!("no READY=1 in 14 s; log:\n{}", daemon.log()));
    assert!(
        ready_after < Duration::from_secs(13),
        "first poll took {ready_after:?}"
    );
    let log = daemon.log();
    assert!(
        log.contains("wghung127"),
        "every hung interface is reported: {log}"
    );
    assert!(log.contains("deadline"), "{log}");
}

/// Regression: 1,100 idle connections to the metrics port that each sent
/// half a request line held all 1,024 file descriptors for as long as they
/// stayed open, and deliveries failed with EMFILE. Now the port serves at
/// most 32 connections (closing the rest at once) and closes a connection
/// that has not sent its request head within 5 s.
#[tokio::test]
async fn a_flood_of_idle_metrics_connections_starves_nothing() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    // alice connects at once, bob 8 s later: while the port is flooded.
    let scenario = scenario(&["alice", "bob"], 8);
    let config = write_config(
        dir.path(),
        &scenario,
        &hooks(&[("r", &receiver)]),
        "metrics:\n  listen: 127.0.0.1:0\n",
    );
    // The daemon gets 256 file descriptors, so a flood of 600 would use
    // them all without the bound.
    let daemon = Daemon::start_under(&["prlimit", "--nofile=256:256"], &config, dir.path(), &[]);
    let url = daemon.metrics_url().await;
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    receiver
        .wait_until(Duration::from_secs(10), "alice's connect", |r| {
            r.iter().any(|x| x.kind() == "peer.connect")
        })
        .await;

    let flood_started = Instant::now();
    let mut flood = Vec::new();
    for _ in 0..600 {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(mut c) => {
                // Half a request line, then nothing.
                let _ = c.write_all(b"GET /metr").await;
                flood.push(c);
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
    // (a) a fresh scrape is still answered, (b) bob's connect (8 s in) is
    // still delivered, while the flood is open.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match reqwest::get(&url).await {
            Ok(r) if r.status() == 200 => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "no scrape answered during the flood"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    receiver
        .wait_until(
            Duration::from_secs(20),
            "bob's connect during the flood",
            |r| r.iter().filter(|x| x.kind() == "peer.connect").count() == 2,
        )
        .await;
    // (c) every idle connection is closed by the server: over the bound at
    // once, the others after the 5 s header timeout.
    for mut c in flood {
        let mut buf = [0u8; 1024];
        let left = Duration::from_secs(15).saturating_sub(flood_started.elapsed());
        let read = tokio::time::timeout(left.max(Duration::from_millis(1)), c.read(&mut buf))
            .await
            .expect("an idle connection still open 15 s into the flood");
        // EOF, a 408 answer or a reset: closed either way.
        if let Ok(n) = read {
            if n > 0 {
                let mut rest = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
            }
        }
    }
    assert!(
        !daemon.log().contains("Too many open files"),
        "{}",
        daemon.log()
    );
}
