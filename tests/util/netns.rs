//! Network-namespace fixtures for end-to-end tests with real wireguard-go.
//!
//! [`Tunnel`] builds two namespaces joined by a veth pair, runs a wireguard-go
//! interface in each and configures them as each other's peer, so a ping
//! through the tunnel makes a real handshake. Everything is synchronous
//! (`std::process::Command`); waits poll for a condition with a deadline.
//!
//! Invariants:
//! - Nothing is created or changed in the root namespace. The veth pair is
//!   created inside the namespaces, all addresses live there. The only shared
//!   place touched is the UAPI socket directory ([`UAPI_DIR`]), and only for
//!   this fixture's own interface names.
//! - Names derive from a per-test prefix: interfaces `<prefix>a`/`<prefix>b`
//!   (at most 15 characters), namespaces `wghook-<prefix>-a`/`-b`. Tests that
//!   run in parallel must use distinct prefixes.
//! - Drop cleans up even when the test panics: wireguard-go processes are
//!   stopped, whatever still runs in the namespaces is killed, namespaces are
//!   deleted and leftover socket files of this fixture's interfaces removed.
//!   Leftovers of an earlier crashed run with the same names are removed
//!   before building.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where wireguard-go puts `<interface>.sock`; shared by all namespaces.
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// UDP port wireguard-go listens on in both namespaces (they do not share a
/// network stack, so the same port is fine).
pub const LISTEN_PORT: u16 = 51820;

/// How long to wait for a process to start or stop.
const PROCESS_DEADLINE: Duration = Duration::from_secs(10);

/// Panics with a clear message unless the tests can run: root, and
/// `wireguard-go`, `wg`, `ip`, `ping` and `kill` on the PATH. End-to-end tests
/// call it first so that `--include-ignored` without them fails, not skips.
pub fn require_root_tools() {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        euid, "0",
        "end-to-end tests need root (network namespaces, tun devices); effective uid is {euid}"
    );
    let missing: Vec<&str> = ["wireguard-go", "wg", "ip", "ping", "kill"]
        .into_iter()
        .filter(|tool| find_in_path(tool).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "end-to-end tests need these tools on the PATH, missing: {missing:?} \
         (Debian: apt-get install wireguard-go wireguard-tools iproute2 iputils-ping procps)"
    );
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Polls `done` every 20 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command to completion, capturing its output.
fn output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = output(program, args);
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends SIGTERM, waits up to `grace` for the process to exit, then kills it.
/// Safe to call on a process that already exited.
pub fn terminate(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = output("kill", &["-TERM", &child.id().to_string()]);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A network namespace, deleted on drop together with what runs in it.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` (removing a leftover of the same name first)
    /// with its loopback up.
    pub fn new(name: &str) -> Self {
        remove_namespace(name);
        run("ip", &["netns", "add", name]);
        let ns = Self {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `program args` inside the namespace to completion.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        output("ip", &all)
    }

    /// A command that starts `program args` inside the namespace
    /// (`ip netns exec` execs, so the child's pid is the program's).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove_namespace(&self.name);
    }
}

/// Kills every process in namespace `name`, then deletes it; no-op if absent.
fn remove_namespace(name: &str) {
    if !Path::new("/var/run/netns").join(name).exists() {
        return;
    }
    let pids = output("ip", &["netns", "pids", name]);
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        let _ = output("kill", &["-KILL", pid]);
    }
    let _ = output("ip", &["netns", "del", name]);
}

/// One end of a [`Tunnel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

struct End {
    ns: Netns,
    ifname: String,
    public_key: String,
    /// Underlay address on the veth link.
    underlay: &'static str,
    /// Address inside the tunnel.
    tunnel_ip: &'static str,
    wireguard_go: Option<Child>,
}

/// Two namespaces, each with a wireguard-go interface, peered with each other
/// over a veth pair. Side A is 10.0.0.1 (underlay 192.0.2.1), side B is
/// 10.0.0.2 (underlay 192.0.2.2). No persistent keepalive: handshakes happen
/// only when traffic flows.
pub struct Tunnel {
    // Declared before `dir` so wireguard-go is gone before its log file.
    ends: [End; 2],
    dir: tempfile::TempDir,
}

impl Tunnel {
    /// Builds the tunnel. `prefix` (letters and digits, at most 12
    /// characters) makes the names unique to the test.
    pub fn new(prefix: &str) -> Self {
        assert!(
            !prefix.is_empty()
                && prefix.len() <= 12
                && prefix.chars().all(|c| c.is_ascii_alphanumeric()),
            "tunnel prefix {prefix:?} must be 1 to 12 ASCII letters or digits"
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let make_end = |side: &str, underlay: &'static str, tunnel_ip: &'static str| {
            let ifname = format!("{prefix}{side}");
            // A leftover of a crashed run: its namespace is removed by
            // `Netns::new`, the socket file has to go explicitly.
            let _ = fs::remove_file(socket_path(&ifname));
            End {
                ns: Netns::new(&format!("wghook-{prefix}-{side}")),
                ifname,
                public_key: String::new(),
                underlay,
                tunnel_ip,
                wireguard_go: None,
            }
        };
        let a = make_end("a", "192.0.2.1", "10.0.0.1");
        let b = make_end("b", "192.0.2.2", "10.0.0.2");
        let mut tunnel = Self { ends: [a, b], dir };

        let [a, b] = &tunnel.ends;
        a.ns.ip(&[
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth0",
            "netns",
            b.ns.name(),
        ]);
        for end in &tunnel.ends {
            end.ns.ip(&[
                "addr",
                "add",
                &format!("{}/24", end.underlay),
                "dev",
                "veth0",
            ]);
            end.ns.ip(&["link", "set", "veth0", "up"]);
        }

        for side in [Side::A, Side::B] {
            tunnel.start_wireguard(side);
            let (private, public) = genkey();
            let key_file = tunnel.dir.path().join(format!("{side:?}.key"));
            fs::write(&key_file, private).expect("write private key");
            tunnel.ends[side.index()].public_key = public;
        }
        for side in [Side::A, Side::B] {
            let me = &tunnel.ends[side.index()];
            let other = &tunnel.ends[side.other().index()];
            let key_file = tunnel.dir.path().join(format!("{side:?}.key"));
            tunnel.wg(
                side,
                &[
                    "set",
                    &me.ifname,
                    "private-key",
                    key_file.to_str().expect("utf-8 temporary path"),
                    "listen-port",
                    &LISTEN_PORT.to_string(),
                    "peer",
                    &other.public_key,
                    "allowed-ips",
                    &format!("{}/32", other.tunnel_ip),
                    "endpoint",
                    &format!("{}:{LISTEN_PORT}", other.underlay),
                ],
            );
            me.ns.ip(&[
                "addr",
                "add",
                &format!("{}/24", me.tunnel_ip),
                "dev",
                &me.ifname,
            ]);
            me.ns.ip(&["link", "set", &me.ifname, "up"]);
        }
        tunnel
    }

    fn end(&self, side: Side) -> &End {
        &self.ends[side.index()]
    }

    /// The wireguard-go interface name of `side`.
    pub fn ifname(&self, side: Side) -> &str {
        &self.end(side).ifname
    }

    /// The base64 public key of `side`'s interface.
    pub fn public_key(&self, side: Side) -> &str {
        &self.end(side).public_key
    }

    /// `side`'s address inside the tunnel.
    pub fn tunnel_ip(&self, side: Side) -> &str {
        self.end(side).tunnel_ip
    }

    /// One ping from `from` to the other side through the tunnel; true if
    /// answered within 2 s.
    pub fn ping(&self, from: Side) -> bool {
        let to = self.tunnel_ip(from.other());
        self.end(from)
            .ns
            .exec("ping", &["-c", "1", "-W", "2", "-q", to])
            .status
            .success()
    }

    /// Runs `wg ARGS` in `side`'s namespace; panics unless it succeeds.
    /// Returns stdout.
    pub fn wg(&self, side: Side, args: &[&str]) -> String {
        let end = self.end(side);
        let out = end.ns.exec("wg", args);
        assert!(
            out.status.success(),
            "`wg {}` in {} failed ({}): {}",
            args.join(" "),
            end.ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `side`'s wireguard-go and waits for its UAPI socket.
    fn start_wireguard(&mut self, side: Side) {
        let log_path = self.dir.path().join(format!("wireguard-go-{side:?}.log"));
        let log = fs::File::create(&log_path).expect("create wireguard-go log");
        let end = &mut self.ends[side.index()];
        let child = end
            .ns
            .command(
                "env",
                &["WG_PROCESS_FOREGROUND=1", "wireguard-go", &end.ifname],
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn wireguard-go");
        let child = end.wireguard_go.insert(child);
        let socket = socket_path(&end.ifname);
        wait_for(
            &format!("wireguard-go's socket {}", socket.display()),
            PROCESS_DEADLINE,
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "wireguard-go for {} exited ({status}): {}",
                        end.ifname,
                        fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                socket.exists()
            },
        );
    }

    /// Stops `side`'s wireguard-go (SIGTERM, as an operator would): its
    /// interface and UAPI socket vanish. Returns once the socket file is gone.
    pub fn stop_wireguard(&mut self, side: Side) {
        let end = &mut self.ends[side.index()];
        if let Some(mut child) = end.wireguard_go.take() {
            terminate(&mut child, PROCESS_DEADLINE);
        }
        let socket = socket_path(&end.ifname);
        wait_for(
            &format!("{} to disappear", socket.display()),
            PROCESS_DEADLINE,
            || !socket.exists(),
        );
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        for end in &mut self.ends {
            if let Some(mut child) = end.wireguard_go.take() {
                terminate(&mut child, Duration::from_secs(3));
            }
            let _ = fs::remove_file(socket_path(&end.ifname));
        }
        // The namespaces go when `ends` is dropped.
    }
}

/// Where wireguard-go listens for interface `ifname`.
pub fn socket_path(ifname: &str) -> PathBuf {
    Path::new(UAPI_DIR).join(format!("{ifname}.sock"))
}

/// A fresh key pair from `wg genkey`/`wg pubkey`: (private, public), base64.
pub fn genkey() -> (String, String) {
    let private = run("wg", &["genkey"]).trim().to_string();
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn wg pubkey");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(format!("{private}\n").as_bytes())
            .expect("write to wg pubkey");
    }
    let out = child.wait_with_output().expect("wait for wg pubkey");
    assert!(out.status.success(), "wg pubkey failed ({})", out.status);
    let public = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (private, public)
}
