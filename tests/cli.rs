//! The `wghook` binary as an operator uses it.

use std::process::Command;

fn wghook() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wghook"));
    cmd.env("RUST_LOG", "warn");
    cmd
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_the_seed_minimal_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "ok.yaml",
        "webhook:\n  url: https://your-service.example.com/webhook\n  secret: \"Basic dXNlcm5hbWU6cGFzc3dvcmQ=\"\n",
    );
    let out = wghook().arg("check").arg("-c").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok (1 webhook"), "{stdout}");
    assert!(
        !stdout.contains("dXNlcm5hbWU6cGFzc3dvcmQ="),
        "secret printed: {stdout}"
    );
}

#[test]
fn check_reports_every_error_with_file_line_and_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "bad.yaml",
        "webhook:\n  url: not a url\n  secret: s3cr3t-value\nmonitor:\n  interval: 5x\n  colour: blue\n",
    );
    let out = wghook().arg("check").arg("-c").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    for (line, key) in [
        (2, "webhook.url"),
        (5, "monitor.interval"),
        (6, "monitor.colour"),
    ] {
        assert!(
            stderr.contains(&format!("{file}:{line}: {key}")),
            "missing {key} at line {line} in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("s3cr3t-value"), "secret leaked: {stderr}");
}

#[test]
fn check_names_a_missing_file() {
    let out = wghook()
        .args(["check", "-c", "/nonexistent/wghook.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/wghook.yaml"));
}

#[test]
fn peers_json_shows_a_simulated_host() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(
        &dir,
        "scenario.yaml",
        "steps:\n  - at: 0s\n    add_interface: { name: wg7, listen_port: 51827 }\n  - at: 0s\n    add_peer: { interface: wg7, peer: alice, allowed_ips: [10.7.0.2/32] }\n  - at: 0s\n    handshake: { interface: wg7, peer: alice, endpoint: \"192.0.2.9:1234\" }\n",
    );
    let alice = wghook::backend::sim::key_for("alice").to_base64();
    let config = write(
        &dir,
        "wghook.yaml",
        &format!(
            "monitor:\n  backend: simulated\n  scenario: {}\npeers:\n  \"{alice}\": {{ name: alice-laptop, user: alice }}\n",
            scenario.display()
        ),
    );
    let out = wghook()
        .args(["peers", "--json", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "wg7");
    assert_eq!(v[0]["listen_port"], 51827);
    let peer = &v[0]["peers"][0];
    assert_eq!(peer["public_key"], alice.as_str());
    assert_eq!(peer["name"], "alice-laptop");
    assert_eq!(peer["connected"], true);
    assert_eq!(peer["endpoint"], "192.0.2.9:1234");
    assert_eq!(peer["allowed_ips"][0], "10.7.0.2/32");

    let table = wghook()
        .args(["peers", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("interface wg7"), "{text}");
    assert!(
        text.contains("alice-laptop") && text.contains("connected"),
        "{text}"
    );
}

#[test]
fn demo_delivers_every_kind_of_event_and_ends_by_itself() {
    let started = std::time::Instant::now();
    let out = wghook().arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    for kind in [
        "interface.create",
        "interface.delete",
        "peer.create",
        "peer.update",
        "peer.delete",
        "peer.connect",
        "peer.disconnect",
    ] {
        assert!(stdout.contains(kind), "demo never showed {kind}:\n{stdout}");
    }
    assert!(!stdout.contains("MISSING OR WRONG"), "{stdout}");
    assert!(stdout.contains("demo finished:"), "{stdout}");
}
