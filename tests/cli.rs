//! The `wghook` binary as an operator uses it.

use std::process::Command;

use crate::util::simhost::{SimHost, Written};

/// Interface wg7 and peer alice (10.7.0.2/32), both there from the start.
const WG7_ALICE: &str = "steps:\n  - at: 0s\n    add_interface: { name: wg7, listen_port: 51827 }\n  - at: 0s\n    add_peer: { interface: wg7, peer: alice, allowed_ips: [10.7.0.2/32] }\n";

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

/// `--json` is compact for a script (a pipe) and indented at a terminal
/// (`script` gives the command a pseudo-terminal); the same document.
#[test]
fn peers_json_is_compact_in_a_pipe_and_indented_at_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let config = SimHost::new(dir.path(), WG7_ALICE).write().config;
    let piped = wghook()
        .args(["peers", "--json", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(piped.status.success());
    let compact = String::from_utf8(piped.stdout).unwrap();
    assert_eq!(compact.lines().count(), 1, "{compact}");
    let command = format!(
        "{} peers --json -c {}",
        env!("CARGO_BIN_EXE_wghook"),
        config.display()
    );
    let tty = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("script(1) from util-linux runs");
    assert!(
        tty.status.success(),
        "{}",
        String::from_utf8_lossy(&tty.stderr)
    );
    let indented = String::from_utf8(tty.stdout).unwrap().replace("\r\n", "\n");
    assert!(indented.lines().count() > 10, "{indented}");
    let a: serde_json::Value = serde_json::from_str(&compact).unwrap();
    let b: serde_json::Value = serde_json::from_str(&indented).unwrap();
    assert_eq!(a, b);
}

#[test]
fn peers_json_shows_a_simulated_host() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = format!(
        "{WG7_ALICE}  - at: 0s\n    handshake: {{ interface: wg7, peer: alice, endpoint: \"192.0.2.9:1234\" }}\n"
    );
    let alice = wghook::backend::sim::key_for("alice").to_base64();
    let config = SimHost::new(dir.path(), &scenario)
        .sections(&format!(
            "peers:\n  \"{alice}\": {{ name: alice-laptop, user: alice }}\n"
        ))
        .write()
        .config;
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

/// `wghook ARGS...` with `-c config`, its exit code, stdout and stderr.
fn run(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = wghook().args(args).arg("-c").arg(config).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Regression (audit): `wghook check` printed `backend Auto` (the Debug form).
#[test]
fn check_names_the_backend_as_the_configuration_spells_it() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        ("", "backend auto,"),
        ("monitor:\n  backend: kernel\n", "backend kernel,"),
        ("monitor:\n  backend: userspace\n", "backend userspace,"),
    ] {
        let path = write(&dir, "wghook.yaml", text);
        let (code, stdout, stderr) = run(&path, &["check"]);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(stdout.contains(want), "{want} not in {stdout}");
    }
}

/// A simulated host with interface wg7 and peer alice (10.7.0.2/32), and a
/// configuration with `monitor_extra` lines under `monitor:` and alice's
/// `peers:` entry `alice_entry` (flow mapping contents). Returns the
/// configuration's path and alice's key.
fn simulated_alice(
    dir: &tempfile::TempDir,
    monitor_extra: &str,
    alice_entry: &str,
) -> (std::path::PathBuf, String) {
    let alice = wghook::backend::sim::key_for("alice").to_base64();
    let config = SimHost::new(dir.path(), WG7_ALICE)
        .monitor(monitor_extra)
        .sections(&format!("peers:\n  \"{alice}\": {{ {alice_entry} }}\n"))
        .write()
        .config;
    (config, alice)
}

/// The column names of `wghook peers`'s table and the cells of its first row.
fn peers_table(stdout: &str) -> (Vec<&str>, Vec<&str>) {
    let lines: Vec<&str> = stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.trim_start().starts_with("PEER"))
        .unwrap_or_else(|| panic!("no header in {stdout}"));
    let row = |i: usize| {
        lines
            .get(i)
            .map_or(Vec::new(), |l| l.split_whitespace().collect())
    };
    (row(header), row(header + 1))
}

/// Regression (audit): the peers table showed NAME only and the JSON rows
/// had no labels.
#[test]
fn peers_shows_user_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (config, alice) = simulated_alice(
        &dir,
        "",
        "name: alice-laptop, user: alice@example.com, labels: { team: ops }",
    );
    let (code, stdout, stderr) = run(&config, &["peers", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let peer = &v[0]["peers"][0];
    assert_eq!(peer["user"], "alice@example.com");
    assert_eq!(peer["labels"], serde_json::json!({ "team": "ops" }));
    assert!(
        peer.get("pingable").is_none(),
        "ping checks are off: {peer}"
    );

    let (code, stdout, _) = run(&config, &["peers"]);
    assert_eq!(code, Some(0));
    let (columns, cells) = peers_table(&stdout);
    assert_eq!(columns[..4], ["PEER", "NAME", "USER", "STATE"], "{stdout}");
    assert!(!columns.contains(&"PING"), "{stdout}");
    assert_eq!(
        cells[..3],
        [alice.as_str(), "alice-laptop", "alice@example.com"]
    );
}

#[test]
#[ignore = "needs ICMP sockets (root, or net.ipv4.ping_group_range)"]
fn peers_table_has_a_ping_column_with_ping_checks_on() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = simulated_alice(
        &dir,
        "  ping_checks: true\n",
        "name: alice-laptop, ping_address: 127.0.0.1",
    );
    let (code, stdout, stderr) = run(&config, &["peers"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (columns, cells) = peers_table(&stdout);
    assert_eq!(columns[3..6], ["STATE", "PING", "HANDSHAKE"], "{stdout}");
    // No handshake, but 127.0.0.1 answers: connected by ping.
    assert_eq!(cells[3..5], ["connected", "yes"], "{stdout}");
}

/// A configuration whose outbox lives in `dir/state`.
fn outbox_config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let state = dir.path().join("state");
    write(
        dir,
        "wghook.yaml",
        &format!(
            "webhook:\n  url: http://127.0.0.1:9/hook\nmonitor:\n  state_dir: {}\n",
            state.display()
        ),
    )
}

/// Regression (audit): `-c` was refused after `outbox retry`, and listing
/// created the database.
#[test]
fn outbox_takes_the_config_anywhere_and_does_not_create_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = outbox_config(&dir);
    let db = dir.path().join("state/wghook.db");

    let (code, stdout, stderr) = run(&config, &["outbox"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("no outbox yet") && stdout.contains("wghook.db"),
        "{stdout}"
    );
    let (code, stdout, _) = run(&config, &["outbox", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(stdout.trim(), "[]");
    let (code, stdout, stderr) = run(&config, &["outbox", "retry"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("0 given-up deliveries re-queued"),
        "{stdout}"
    );
    assert!(!db.exists(), "a read created {}", db.display());

    // `-c` before the subcommand as well.
    let out = wghook()
        .arg("outbox")
        .arg("-c")
        .arg(&config)
        .arg("retry")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    drop(wghook::outbox::Store::open(&dir.path().join("state")).unwrap());
    let (code, stdout, _) = run(&config, &["outbox"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("the outbox is empty"), "{stdout}");
}

/// Regression (audit): unknown webhooks and ids re-queued nothing without
/// a word, and purge without --yes exited 2 ("invalid configuration").
#[test]
fn outbox_refuses_unknown_webhooks_and_ids_and_unconfirmed_purges_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = outbox_config(&dir);
    drop(wghook::outbox::Store::open(&dir.path().join("state")).unwrap());

    let (code, _, stderr) = run(&config, &["outbox", "retry", "--webhook", "nosuch"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no webhook named \"nosuch\""), "{stderr}");
    assert!(stderr.contains("configured: default"), "{stderr}");

    let id = "0190a7c2-0000-7000-8000-000000000000";
    let (code, stdout, stderr) = run(&config, &["outbox", "retry", id]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("no given-up delivery with id \"{id}\"")),
        "{stderr}"
    );
    assert!(!stdout.contains("re-queued"), "{stdout}");
    let (code, _, _) = run(&config, &["outbox", "retry", "--webhook", "default"]);
    assert_eq!(code, Some(0), "a configured webhook with nothing given up");

    let (code, _, stderr) = run(&config, &["outbox", "purge"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("add --yes to confirm"), "{stderr}");
    let (code, stdout, _) = run(&config, &["outbox", "purge", "--yes"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("0 deliveries deleted"), "{stdout}");
}

/// Every secret a configuration can hold; none may reach `wghook check`'s
/// output, valid configuration or not.
#[test]
fn check_output_never_contains_a_configured_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = [
        "Bearer verbatim-s3cr3t",
        "bearer-t0ken-s3cr3t",
        "basic-passw0rd-s3cr3t",
        "client-s3cr3t-0auth",
        "whsec_c2lnbmluZy1rZXktczNjcjN0LTEyMzQ1Njc4",
        "c2lnbmluZy1rZXktczNjcjN0LTEyMzQ1Njc4",
        "url-user-s3cr3t",
        "url-passw0rd-s3cr3t",
        "services/T0/B0/path-s3cr3t",
        "query-s3cr3t",
    ];
    let hooks = "webhooks:\n\
        \x20 - name: verbatim\n    url: https://a.example/hook\n    secret: \"Bearer verbatim-s3cr3t\"\n\
        \x20 - name: bearer\n    url: https://b.example/hook\n    auth: { bearer: bearer-t0ken-s3cr3t }\n\
        \x20 - name: basic\n    url: https://c.example/hook\n    auth: { basic: { username: u, password: basic-passw0rd-s3cr3t } }\n\
        \x20 - name: oauth\n    url: https://d.example/hook\n    signing_secret: whsec_c2lnbmluZy1rZXktczNjcjN0LTEyMzQ1Njc4\n    \
        auth: { oauth2: { token_url: https://idp.example/token, client_id: wghook, client_secret: client-s3cr3t-0auth } }\n\
        \x20 - name: slack\n    url: \"https://url-user-s3cr3t:url-passw0rd-s3cr3t@hooks.slack.example/services/T0/B0/path-s3cr3t?k=query-s3cr3t\"\n";
    let valid = write(&dir, "valid.yaml", hooks);
    // The same secrets, each next to a mistake: an unparseable URL with
    // credentials, a misplaced secret, a broken header.
    let broken = write(
        &dir,
        "broken.yaml",
        &format!(
            "{hooks}\x20 - name: broken\n    \
             url: \"https://url-user-s3cr3t:url-passw0rd-s3cr3t@hooks.slack.example:99999/services/T0/B0/path-s3cr3t?k=query-s3cr3t\"\n    \
             secret: [\"Bearer verbatim-s3cr3t\"]\n    \
             auth: {{ basic: {{ username: u, password: \"basic-passw0rd-s3cr3t\\nX: 1\" }} }}\n    \
             signing_secret: \"whsec_c2lnbmluZy1rZXktczNjcjN0LTEyMzQ1Njc4!\"\n    \
             headers: {{ X-Token: \"bearer-t0ken-s3cr3t {{{{ nope }}}}\" }}\n\
             \x20 - name: token-url\n    url: https://e.example/hook\n    \
             auth: {{ oauth2: {{ token_url: \"https://url-user-s3cr3t@idp.example:0x/path-s3cr3t\", client_id: a, client_secret: client-s3cr3t-0auth }} }}\n"
        ),
    );
    for (path, want) in [(&valid, Some(0)), (&broken, Some(2))] {
        // With every log line on, so a leak through tracing shows too.
        let out = wghook()
            .env("RUST_LOG", "trace")
            .args(["check", "-c"])
            .arg(path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), want, "{text}");
        for secret in secrets {
            assert!(!text.contains(secret), "{secret:?} printed:\n{text}");
        }
        assert!(!text.contains("s3cr3t"), "{text}");
    }
}

/// Regression (audit): under systemd, `wghook check`'s errors reached the
/// journal without a priority.
#[test]
fn check_errors_carry_the_journal_priority_when_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let config = write(&dir, "bad.yaml", "monitor:\n  interval: 5x\n");
    let stderr_path = dir.path().join("stderr");
    let check = |journal_stream: Option<String>| -> String {
        let file = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = wghook();
        cmd.args(["check", "-c"])
            .arg(&config)
            .stderr(file.try_clone().unwrap())
            .env_remove("JOURNAL_STREAM");
        let meta = file.metadata().unwrap();
        if let Some(value) = journal_stream {
            cmd.env(
                "JOURNAL_STREAM",
                value
                    .replace("DEV", &meta.dev().to_string())
                    .replace("INO", &meta.ino().to_string()),
            );
        }
        let status = cmd.status().unwrap();
        assert_eq!(status.code(), Some(2));
        std::fs::read_to_string(&stderr_path).unwrap()
    };
    let journal = check(Some("DEV:INO".into()));
    let lines: Vec<&str> = journal.lines().collect();
    assert_eq!(lines.len(), 2, "{journal}");
    assert!(
        lines[0].starts_with("<3>error: ") && lines[0].contains("monitor.interval"),
        "{journal}"
    );
    assert_eq!(lines[1], format!("<3>1 error in {}", config.display()));
    // Another stream (stderr redirected since systemd started us), or none.
    for other in [Some("DEV:1".to_string()), None] {
        let plain = check(other);
        assert!(
            plain.starts_with("error: ") && !plain.contains("<3>"),
            "{plain}"
        );
    }
}

/// `wghook ARGS... -c config` as a child process that must end within
/// `secs` (a regression that hangs fails the test instead of the suite);
/// its exit code, stdout and stderr.
fn run_within(config: &std::path::Path, args: &[&str], secs: u64) -> (Option<i32>, String, String) {
    use std::io::Read as _;
    let mut child = wghook()
        .args(args)
        .arg("-c")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wghook {args:?} did not finish within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stdout, stderr)
}

fn mkfifo(path: &std::path::Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Regression (issue 11): `secret_file`, `names_from` and the scenario
/// pointing at a FIFO hung `wghook check`; at `/dev/zero` or a huge file
/// it read until memory ran out. Every file the configuration names is read
/// only if it is a regular file, and only up to the limit of its kind.
#[test]
fn check_refuses_fifos_devices_and_huge_files_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let huge = dir.path().join("huge");
    // Sparse: 64 GiB that take no disk space.
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    let (fifo_s, huge_s) = (fifo.display(), huge.display());
    let config = write(
        &dir,
        "wghook.yaml",
        &format!(
            "webhooks:\n\
             \x20 - name: a\n    url: https://a.example/hook\n    secret_file: {fifo_s}\n\
             \x20 - name: b\n    url: https://b.example/hook\n    auth: {{ bearer_file: /dev/zero }}\n\
             \x20 - name: c\n    url: https://c.example/hook\n    \
             auth: {{ basic: {{ username: u, password_file: {huge_s} }} }}\n\
             monitor:\n  backend: simulated\n  scenario: {fifo_s}\n  \
             names_from: [{fifo_s}, /dev/zero, {huge_s}]\n"
        ),
    );
    let (code, _, stderr) = run_within(&config, &["check"], 30);
    assert_eq!(code, Some(2), "{stderr}");
    let f = config.display();
    let not_regular = |what: &str| format!("not a regular file ({what}); give the path of a file");
    for line in [
        format!(
            "{f}:4: webhooks[0].secret_file: cannot read secret file {fifo_s}: {}",
            not_regular("a FIFO")
        ),
        format!(
            "{f}:7: webhooks[1].auth.bearer_file: cannot read secret file /dev/zero: {}",
            not_regular("a character device")
        ),
        format!(
            "{f}:10: webhooks[2].auth.basic.password_file: cannot read secret file {huge_s}: \
             larger than 64 KiB (the limit for this kind of file)"
        ),
        format!(
            "{f}:13: monitor.scenario: cannot read {fifo_s}: {}",
            not_regular("a FIFO")
        ),
        format!(
            "{f}:14: monitor.names_from[0]: cannot read {fifo_s}: {}",
            not_regular("a FIFO")
        ),
        format!(
            "{f}:14: monitor.names_from[1]: cannot read /dev/zero: {}",
            not_regular("a character device")
        ),
        format!(
            "{f}:14: monitor.names_from[2]: cannot read {huge_s}: \
             larger than 32 MiB (the limit for this kind of file)"
        ),
    ] {
        assert!(
            stderr.contains(&format!("error: {line}\n")),
            "missing {line:?} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("7 errors in"), "{stderr}");

    // The configuration file itself.
    for path in [fifo.as_path(), std::path::Path::new("/dev/zero")] {
        let (code, _, stderr) = run_within(path, &["check"], 30);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains("cannot read the configuration file: not a regular file"),
            "{stderr}"
        );
    }
}

/// Regression (issue 11): a scenario step at `999999999999999h` (or
/// u64::MAX seconds) passed `wghook check`; `run` then panicked (exit 101).
#[test]
fn check_refuses_scenario_offsets_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    for at in ["999999999999999h", "18446744073709551615"] {
        let Written {
            config, scenario, ..
        } = SimHost::new(
            dir.path(),
            &format!("steps:\n  - at: 0s\n    add_interface: {{ name: wg0 }}\n  - at: {at}\n    remove_interface: {{ name: wg0 }}\n"),
        )
        .write();
        let (code, _, stderr) = run_within(&config, &["check"], 30);
        assert_eq!(code, Some(2), "{at}: {stderr}");
        let want = format!(
            "error: {}:3: monitor.scenario: scenario {}: offset \"{at}\" is too late \
             (at most 8760h, a year) at line 4, column 9\n",
            config.display(),
            scenario.display()
        );
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
        let (code, _, stderr) = run_within(&config, &["run"], 30);
        assert_eq!(
            code,
            Some(2),
            "{at}: run must refuse it as check does, not panic: {stderr}"
        );
    }
}

/// Regression (issue 11): three nested `range(1000)` loops in a body hung
/// `wghook check` (it renders every template for sample events).
#[test]
fn check_refuses_a_template_that_never_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        &dir,
        "wghook.yaml",
        "webhook:\n  url: https://x.example/hook\n  headers: { Content-Type: text/plain }\n  \
         body: \"{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}x\
         {% endfor %}{% endfor %}{% endfor %}\"\n",
    );
    let (code, _, stderr) = run_within(&config, &["check"], 30);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: {}:4: webhook.body: invalid template: rendering took more than 1000000 steps",
            config.display()
        )),
        "{stderr}"
    );
}

/// A fake wireguard-go daemon: `dir/name.sock` answers every connection
/// with `reply` (after reading the request up to its blank line). The
/// thread ends with the test process.
fn fake_uapi_daemon(dir: &std::path::Path, name: &str, reply: Vec<u8>) {
    use std::io::{BufRead as _, Write as _};
    let listener =
        std::os::unix::net::UnixListener::bind(dir.join(format!("{name}.sock"))).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\n" {
                    break;
                }
                line.clear();
            }
            let _ = stream.write_all(&reply);
        }
    });
}

fn uapi_fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/uapi/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A userspace host in `dir/uapi`: interface `iface` answering the
/// wireguard-go capture with its first peer reported twice; that peer named
/// by a wg-quick comment that clears the screen, sets the terminal title and
/// reverses the text after it; the second peer's user set to a colour
/// sequence. Returns the configuration, the socket directory and both keys.
fn uapi_host(
    dir: &tempfile::TempDir,
    iface: &str,
) -> (std::path::PathBuf, std::path::PathBuf, String, String) {
    let sockets = dir.path().join("uapi");
    std::fs::create_dir(&sockets).unwrap();
    let two_peers = uapi_fixture("wireguard-go-two-peers.txt");
    let (head, rest) = two_peers.split_at(two_peers.find("public_key=").unwrap());
    let first_peer = &rest[..rest[1..].find("public_key=").unwrap() + 1];
    fake_uapi_daemon(
        &sockets,
        iface,
        format!("{head}{first_peer}{rest}").into_bytes(),
    );
    let key = |hex: &str| wghook::model::PublicKey::from_hex(hex).unwrap().to_base64();
    let first = key("cccb85ef183aafb256c63b9c94bc68bf2fc8bc58cc2bcf5c9f43d399b09dd214");
    let second = key("66a7075777c05902cdc47d92f88d20df4b36dfd6102268ed3960e9f367f5db4d");
    let wg_quick = write(
        dir,
        "wg0.conf",
        &format!("[Peer]\n# Name = \x1b[2J\x1b]0;pwned\x07evil\u{202e}\nPublicKey = {first}\n"),
    );
    let config = write(
        dir,
        "wghook.yaml",
        &format!(
            "monitor:\n  backend: userspace\n  uapi_dirs: [{}]\n  names_from: [{}]\n\
             peers:\n  \"{second}\": {{ name: plain, user: \"\\e[31mred\" }}\n",
            sockets.display(),
            wg_quick.display()
        ),
    );
    (config, sockets, first, second)
}

/// Regression (issue 11): `wghook peers` printed an ESC sequence from a
/// wg-quick `# Name =` comment (or a configured user) to the terminal.
#[test]
fn peers_escapes_control_characters_in_names_and_users() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, _, _) = uapi_host(&dir, "wgi11esc");
    let (code, stdout, stderr) = run_within(&config, &["peers"], 30);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains(['\x1b', '\x07', '\u{202e}']), "{stdout:?}");
    assert!(
        stdout.contains("\\u{1b}[2J\\u{1b}]0;pwned\\u{7}evil\\u{202e}"),
        "{stdout}"
    );
    assert!(stdout.contains("\\u{1b}[31mred"), "{stdout}");

    // JSON escapes them its own way and keeps the name as configured.
    let (code, stdout, stderr) = run_within(&config, &["peers", "--json"], 30);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains(['\x1b', '\x07']), "{stdout:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        v[0]["peers"][0]["name"],
        "\x1b[2J\x1b]0;pwned\x07evil\u{202e}"
    );
}

/// Regression (issue 11): a key the backend reported twice was listed twice.
#[test]
fn peers_lists_a_key_reported_twice_once() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, first, second) = uapi_host(&dir, "wgi11dup");
    let (code, stdout, stderr) = run_within(&config, &["peers"], 30);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.matches(&first).count(), 1, "{stdout}");
    assert_eq!(stdout.matches(&second).count(), 1, "{stdout}");
    let (_, stdout, _) = run_within(&config, &["peers", "--json"], 30);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let keys: Vec<&str> = v[0]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["public_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [first.as_str(), second.as_str()]);
}

/// Regression (issue 11): an interface that could not be read gave "could
/// not be read" and then "no WireGuard interface found", exit 0.
#[test]
fn peers_exits_1_naming_an_unreadable_interface() {
    let dir = tempfile::tempdir().unwrap();
    let (config, sockets, _, _) = uapi_host(&dir, "wgi11ok");
    fake_uapi_daemon(
        &sockets,
        "wgi11bad",
        uapi_fixture("broken-garbled.txt").into_bytes(),
    );
    // The readable interface is listed, the other named on stderr.
    for args in [&["peers"][..], &["peers", "--json"]] {
        let (code, stdout, stderr) = run_within(&config, args, 30);
        assert_eq!(code, Some(1), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("error: interface wgi11bad: could not be read (see the log)\n"),
            "{args:?}: {stderr}"
        );
        assert!(stdout.contains("wgi11ok"), "{args:?}: {stdout}");
        assert!(!stdout.contains("wgi11bad"), "{args:?}: {stdout}");
    }
    // Only unreadable interfaces: not "no WireGuard interface found".
    std::fs::remove_file(sockets.join("wgi11ok.sock")).unwrap();
    let (code, stdout, stderr) = run_within(&config, &["peers"], 30);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("no WireGuard interface found"), "{stdout}");
    assert!(
        stderr.contains("error: interface wgi11bad: could not be read"),
        "{stderr}"
    );
}
