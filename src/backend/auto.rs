//! The `auto` backend: kernel interfaces over netlink plus userspace
//! interfaces (wireguard-go, boringtun) over their UAPI sockets.
//!
//! Invariants:
//! - An interface that is a kernel WireGuard link is read from the kernel
//!   only, even if a UAPI socket of the same name exists.
//! - Every interface, kernel or userspace, gets its addresses and MTU from
//!   the rtnetlink link list (a userspace interface is a tun link of the
//!   same name) and its [`DriverKind`] from the side that read it.
//! - Without the kernel module, auto reads userspace interfaces alone and
//!   says so once, at INFO, when it starts; polls stay quiet. A kernel
//!   WireGuard link can only exist once the module is loaded, so the module
//!   is looked for again when such a link shows up, at most every
//!   [`MODULE_RECHECK`] (by the poll's `now`). Kernel links that cannot be
//!   read meanwhile are reported unreadable, not absent.
//! - If the link list fails while kernel interfaces are being read, the
//!   whole poll fails: an empty list must not look like deleted interfaces.
//!   Without kernel interfaces the poll goes on without addresses and MTU;
//!   that is logged at WARN once, at DEBUG while it lasts and at INFO when
//!   the list works again ([`LinkListHealth`]).
//! - A kernel WireGuard link read last poll but absent from this poll's
//!   link list (an interrupted dump rtnetlink does not report) is confirmed
//!   by its ifindex before it counts as deleted ([`KnownLinks`]); while the
//!   kernel side cannot be used it is unreadable, until the module is found
//!   missing (then no kernel link exists).

use std::collections::BTreeSet;
use std::path::PathBuf;

use chrono::{DateTime, TimeDelta, Utc};

use super::netlink::{apply_links, DeviceReader, KnownLinks, Link, LinkReader};
use super::uapi::{UapiBackend, UapiError};
use super::{Backend, BackendError, InterfaceFilter, PollFuture};
use crate::model::{DriverKind, Snapshot};

/// How often to look for the kernel module again while kernel WireGuard
/// links exist that cannot be read.
pub const MODULE_RECHECK: TimeDelta = TimeDelta::seconds(60);

/// UAPI sockets read at the same time.
const UAPI_CONCURRENCY: usize = 8;

/// Kernel and userspace interfaces together (`monitor.backend: auto`).
pub struct AutoBackend {
    uapi: UapiBackend,
    links: Option<LinkReader>,
    /// `None` while the module is missing or devices may not be read.
    kernel: Option<DeviceReader>,
    /// Last poll's kernel WireGuard links, to confirm one the link dump
    /// missed; kept while the kernel side fails.
    known: KnownLinks,
    /// Earliest `now` at which to look for the module again.
    next_kernel_check: Option<DateTime<Utc>>,
    /// Whether a failure to use the kernel side was already logged.
    kernel_warned: bool,
    links_health: LinkListHealth,
}

/// Whether the link list is failing, so that a failure repeated every poll
/// is logged at WARN once, then at DEBUG, and its end at INFO.
#[derive(Debug, Default)]
struct LinkListHealth {
    failing: bool,
}

impl LinkListHealth {
    fn failed(&mut self, e: &BackendError) {
        if self.failing {
            tracing::debug!(error = %e, "still cannot list links");
        } else {
            tracing::warn!(error = %e, "cannot list links; interface addresses and MTU stay unknown");
            self.failing = true;
        }
    }

    fn succeeded(&mut self) {
        if self.failing {
            tracing::info!("links can be listed again; interface addresses and MTU are known");
            self.failing = false;
        }
    }
}

impl std::fmt::Debug for AutoBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoBackend")
            .field("kernel", &self.kernel.is_some())
            .finish_non_exhaustive()
    }
}

impl AutoBackend {
    /// Looks for the kernel module once (logging the outcome once) and
    /// wraps `uapi` for the userspace side. Never fails: with neither side
    /// available, polls return empty snapshots.
    pub async fn new(uapi: UapiBackend) -> Self {
        let mut kernel_warned = false;
        let kernel = match DeviceReader::probe().await {
            Ok(Some(reader)) => {
                tracing::debug!("reading kernel WireGuard interfaces over netlink");
                Some(reader)
            }
            Ok(None) => {
                tracing::info!(
                    "the wireguard kernel module is not loaded; reading userspace interfaces only"
                );
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read kernel WireGuard interfaces; reading userspace interfaces only");
                kernel_warned = true;
                None
            }
        };
        let mut links_health = LinkListHealth::default();
        let links = match LinkReader::connect() {
            Ok(reader) => Some(reader),
            Err(e) => {
                links_health.failed(&e);
                None
            }
        };
        Self {
            uapi,
            links,
            kernel,
            known: KnownLinks::default(),
            next_kernel_check: None,
            kernel_warned,
            links_health,
        }
    }

    /// The link list, reconnecting a failed rtnetlink socket first.
    async fn list_links(&mut self) -> Result<Vec<Link>, BackendError> {
        let reader = match &mut self.links {
            Some(r) if r.is_alive() => r,
            _ => self.links.insert(LinkReader::connect()?),
        };
        let result = reader.links().await;
        if result.is_err() {
            self.links = None;
        }
        result
    }

    /// Looks for the module again if it is due.
    async fn recheck_kernel(&mut self, now: DateTime<Utc>) {
        if self.next_kernel_check.is_some_and(|t| now < t) {
            return;
        }
        self.next_kernel_check = Some(now + MODULE_RECHECK);
        match DeviceReader::probe().await {
            Ok(Some(reader)) => {
                tracing::info!(
                    "the wireguard kernel module is available; reading kernel interfaces too"
                );
                self.kernel = Some(reader);
                self.kernel_warned = false;
            }
            Ok(None) => {
                // Without the module no kernel WireGuard link exists.
                self.known.clear();
                tracing::debug!("wireguard kernel module still not loaded");
            }
            Err(e) if !self.kernel_warned => {
                tracing::warn!(error = %e, "cannot read kernel WireGuard interfaces");
                self.kernel_warned = true;
            }
            Err(e) => tracing::debug!(error = %e, "kernel WireGuard interfaces still unreadable"),
        }
    }

    async fn read(
        &mut self,
        now: DateTime<Utc>,
        filter: &InterfaceFilter,
    ) -> Result<Snapshot, BackendError> {
        let links = match self.list_links().await {
            Ok(links) => {
                self.links_health.succeeded();
                links
            }
            Err(e) if self.kernel.is_some() => return Err(e),
            Err(e) => {
                self.links_health.failed(&e);
                Vec::new()
            }
        };
        let wanted: Vec<&Link> = links
            .iter()
            .filter(|l| l.wireguard && filter.allows(&l.name))
            .collect();

        // Kernel links of the last poll the list lacks (see KnownLinks).
        let missing = self.known.missing(&links, filter);
        let mut snapshot = Snapshot::default();
        if !wanted.is_empty() || !missing.is_empty() {
            if self.kernel.is_none() {
                self.recheck_kernel(now).await;
            }
            let read = match &mut self.kernel {
                Some(kernel) => kernel.read_listed(&links, filter, &mut self.known).await,
                None => Err(BackendError::Protocol("kernel side unavailable".into())),
            };
            match read {
                Ok(read) => {
                    snapshot.interfaces.extend(read.interfaces);
                    snapshot.unreadable.extend(read.unreadable);
                }
                Err(e) => {
                    if self.kernel.take().is_some() {
                        tracing::warn!(error = %e, "cannot read kernel WireGuard interfaces");
                        self.kernel_warned = true;
                        self.next_kernel_check = Some(now + MODULE_RECHECK);
                    }
                    // Remembered links the list lacks cannot be confirmed
                    // either: unreadable, not deleted.
                    snapshot
                        .unreadable
                        .extend(wanted.iter().map(|l| l.name.clone()));
                    snapshot
                        .unreadable
                        .extend(missing.into_iter().map(|l| l.name));
                }
            }
        }
        // Remembered kernel links the list lacks are kernel links too (no
        // tun link of that name was listed).
        let remembered: Vec<Link> = self.known.missing(&links, filter);
        let kernel_names: BTreeSet<&str> = links
            .iter()
            .filter(|l| l.wireguard)
            .chain(&remembered)
            .map(|l| l.name.as_str())
            .collect();

        // A UAPI directory that cannot be listed fails the poll, as in the
        // userspace backend: an empty list would read as deletions.
        let listed = self.uapi.try_list().await.map_err(|e| match e {
            UapiError::ListDir { dir, source } => BackendError::Io {
                context: format!("cannot list {}", dir.display()),
                source,
            },
            other => BackendError::Protocol(other.to_string()),
        })?;
        let results = self
            .uapi
            .read_many(
                userspace_to_read(listed, &kernel_names, filter),
                now,
                UAPI_CONCURRENCY,
            )
            .await;
        let mut userspace = Vec::new();
        for (name, read) in results {
            match read {
                Ok(Some(mut iface)) => {
                    iface.driver = DriverKind::Userspace;
                    userspace.push(iface);
                }
                Ok(None) => {}
                Err(e) => {
                    crate::faults::interface_unreadable(&name, &e);
                    snapshot.unreadable.push(name);
                }
            }
        }
        apply_links(&mut userspace, &links);
        snapshot.interfaces.extend(userspace);
        snapshot.normalize();
        Ok(snapshot)
    }
}

/// The UAPI sockets to read: those passing `filter` whose interface is not
/// a kernel WireGuard link (that one is read from the kernel only).
fn userspace_to_read(
    listed: Vec<(String, PathBuf)>,
    kernel_names: &BTreeSet<&str>,
    filter: &InterfaceFilter,
) -> Vec<(String, PathBuf)> {
    listed
        .into_iter()
        .filter(|(name, _)| !kernel_names.contains(name.as_str()) && filter.allows(name))
        .collect()
}

impl Backend for AutoBackend {
    fn name(&self) -> &'static str {
        "auto"
    }

    fn poll<'a>(&'a mut self, now: DateTime<Utc>, filter: &'a InterfaceFilter) -> PollFuture<'a> {
        Box::pin(self.read(now, filter))
    }

    fn recycle(&mut self, snapshot: Snapshot) {
        self.uapi.recycle(snapshot);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::model::PublicKey;

    /// Every event's level and message, for asserting what was logged.
    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<Vec<(tracing::Level, String)>>>);

    impl Recorded {
        fn at_least(&self, level: tracing::Level) -> Vec<String> {
            let events = self.0.lock().unwrap();
            events
                .iter()
                .filter(|(l, _)| *l <= level)
                .map(|(_, m)| m.clone())
                .collect()
        }
    }

    struct Message<'a>(&'a mut String);

    impl Visit for Message<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            use std::fmt::Write as _;
            let _ = write!(self.0, "{}={:?} ", field.name(), value);
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorded {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut text = String::new();
            event.record(&mut Message(&mut text));
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), text));
        }
    }

    /// A UAPI socket at `path` answering every `get=1` with `reply`.
    fn fake_uapi(path: &Path, reply: String) -> tokio::task::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let reply = reply.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let mut request = Vec::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.is_empty() {
                            break;
                        }
                        request.push(line);
                    }
                    let answer = if request == ["get=1"] {
                        reply
                    } else {
                        "errno=22\n\n".to_owned()
                    };
                    let _ = write.write_all(answer.as_bytes()).await;
                });
            }
        })
    }

    #[tokio::test]
    async fn auto_reads_a_userspace_interface_without_the_module_quietly() {
        let module_present = DeviceReader::probe().await.is_ok_and(|r| r.is_some());
        let dir = tempfile::tempdir().unwrap();
        let reply = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/uapi/wireguard-go-two-peers.txt"),
        )
        .unwrap();
        let server = fake_uapi(&dir.path().join("wgfake0.sock"), reply);

        let recorded = Recorded::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(recorded.clone()));
        let uapi = UapiBackend::new(vec![dir.path().to_path_buf()], Duration::from_secs(2));
        let mut auto = AutoBackend::new(uapi).await;
        assert_eq!(auto.name(), "auto");

        let now = DateTime::from_timestamp(1_795_418_400, 0).unwrap();
        let all = InterfaceFilter::default();
        for poll in 0..3 {
            let snapshot = auto
                .poll(now + TimeDelta::seconds(poll * 5), &all)
                .await
                .unwrap();
            assert!(snapshot.unreadable.is_empty(), "{:?}", snapshot.unreadable);
            let fake = snapshot
                .interfaces
                .iter()
                .find(|i| i.name == "wgfake0")
                .expect("the userspace interface is listed");
            assert_eq!(fake.driver, DriverKind::Userspace);
            assert_eq!((fake.listen_port, fake.fwmark), (51820, 4660));
            assert_eq!(fake.peers.len(), 2);
            assert_eq!(
                fake.peers[0].public_key,
                PublicKey::from_hex(
                    "cccb85ef183aafb256c63b9c94bc68bf2fc8bc58cc2bcf5c9f43d399b09dd214"
                )
                .unwrap()
            );
            assert_eq!(fake.peers[0].allowed_ips.len(), 3);
            // No tun link of that name exists, so nothing to fill in.
            assert_eq!((fake.mtu, fake.addresses.len()), (None, 0));
        }

        let excluded = InterfaceFilter {
            include: vec![],
            exclude: vec!["wgfake*".into()],
        };
        let snapshot = auto.poll(now, &excluded).await.unwrap();
        assert!(snapshot.interfaces.iter().all(|i| i.name != "wgfake0"));

        assert_eq!(
            recorded.at_least(tracing::Level::WARN),
            Vec::<String>::new()
        );
        let module_lines: Vec<String> = recorded
            .at_least(tracing::Level::INFO)
            .into_iter()
            .filter(|m| m.contains("kernel module"))
            .collect();
        if module_present {
            assert!(module_lines.is_empty(), "{module_lines:?}");
        } else {
            assert_eq!(
                module_lines.len(),
                1,
                "one line at start, none per poll: {module_lines:?}"
            );
            assert!(module_lines[0].contains("not loaded"), "{module_lines:?}");
        }
        server.abort();
    }

    fn run(cmd: &str, args: &[&str]) {
        let status = std::process::Command::new(cmd).args(args).status().unwrap();
        assert!(status.success(), "{cmd} {args:?}: {status}");
    }

    /// Stops the wireguard-go it holds (SIGTERM lets it remove its socket)
    /// and removes the socket, even when the test fails.
    struct Stop(std::process::Child, PathBuf);

    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
            let _ = std::fs::remove_file(&self.1);
        }
    }

    /// End to end with a real wireguard-go: the interface is read over UAPI
    /// and its tun link gives addresses and MTU.
    #[tokio::test]
    #[ignore = "needs root and wireguard-go"]
    async fn auto_reads_live_wireguard_go_with_addresses_and_mtu() {
        // Runs in a private network namespace, never among the host's links:
        // the test re-runs itself under `unshare -n` unless it already is.
        const INSIDE: &str = "WGHOOK_TEST_IN_PRIVATE_NETNS";
        if std::env::var_os(INSIDE).is_none() {
            let child = std::process::Command::new("unshare")
                .arg("-n")
                .arg(std::env::current_exe().unwrap())
                .args([
                    "backend::auto::tests::auto_reads_live_wireguard_go_with_addresses_and_mtu",
                    "--exact",
                    "--include-ignored",
                    "--test-threads=1",
                ])
                .env(INSIDE, "1")
                .output()
                .expect("unshare (util-linux) runs the test in a private network namespace");
            let stdout = String::from_utf8_lossy(&child.stdout);
            let stderr = String::from_utf8_lossy(&child.stderr);
            assert!(
                child.status.success(),
                "the test failed inside `unshare -n`:\n{stdout}\n{stderr}"
            );
            // A renamed test would match nothing and "pass" with 0 tests.
            assert!(
                stdout.contains("test result: ok. 1 passed"),
                "the child did not run exactly this test:\n{stdout}\n{stderr}"
            );
            return;
        }
        let links = LinkReader::connect().unwrap().links().await.unwrap();
        assert!(
            links.iter().all(|l| l.name == "lo"),
            "a fresh network namespace holds only lo"
        );
        let name = format!("wghk{}", std::process::id() % 10_000);
        let daemon = std::process::Command::new("wireguard-go")
            .args(["-f", &name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let socket = Path::new("/var/run/wireguard").join(format!("{name}.sock"));
        let _daemon = Stop(daemon, socket.clone());
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            socket.exists(),
            "wireguard-go did not create {} within 5 s",
            socket.display()
        );
        let peer = "d9yawLPwxedbuNNCLYjsktE6NCMikIeCFVFXGWneoEQ=";
        run("ip", &["addr", "add", "10.99.0.1/24", "dev", &name]);
        run("ip", &["addr", "add", "fd99::1/64", "dev", &name]);
        run("ip", &["link", "set", &name, "mtu", "1380", "up"]);
        run(
            "wg",
            &[
                "set",
                &name,
                "listen-port",
                "51999",
                "peer",
                peer,
                "allowed-ips",
                "10.99.0.2/32",
            ],
        );

        let uapi = UapiBackend::new(UapiBackend::default_dirs(), Duration::from_secs(2));
        let mut auto = AutoBackend::new(uapi).await;
        let filter = InterfaceFilter {
            include: vec![name.clone()],
            exclude: vec![],
        };
        let snapshot = auto.poll(Utc::now(), &filter).await.unwrap();
        assert_eq!(snapshot.interfaces.len(), 1, "{snapshot:?}");
        let iface = &snapshot.interfaces[0];
        assert_eq!(iface.name, name);
        assert_eq!(iface.driver, DriverKind::Userspace);
        assert_eq!(iface.listen_port, 51999);
        assert_eq!(iface.mtu, Some(1380));
        assert!(
            iface.addresses.contains(&"10.99.0.1/24".parse().unwrap()),
            "{:?}",
            iface.addresses
        );
        assert!(
            iface.addresses.contains(&"fd99::1/64".parse().unwrap()),
            "{:?}",
            iface.addresses
        );
        assert_eq!(iface.peers.len(), 1);
        assert_eq!(
            iface.peers[0].public_key,
            PublicKey::from_base64(peer).unwrap()
        );
    }

    #[test]
    fn a_link_list_failure_warns_once_then_debug_until_it_recovers() {
        let recorded = Recorded::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(recorded.clone()));
        let e = BackendError::Protocol("rtnetlink link dump: boom".into());
        let mut health = LinkListHealth::default();
        health.succeeded();
        for _ in 0..3 {
            health.failed(&e);
        }
        health.succeeded();
        health.succeeded();
        health.failed(&e);
        let levels: Vec<tracing::Level> =
            recorded.0.lock().unwrap().iter().map(|(l, _)| *l).collect();
        use tracing::Level;
        assert_eq!(
            levels,
            [
                Level::WARN,
                Level::DEBUG,
                Level::DEBUG,
                Level::INFO,
                Level::WARN
            ]
        );
        let warnings = recorded.at_least(Level::WARN);
        assert!(warnings[0].contains("cannot list links"), "{warnings:?}");
        assert!(warnings[0].contains("boom"), "{warnings:?}");
    }

    #[test]
    fn an_interface_in_both_is_read_from_the_kernel_only() {
        let listed = vec![
            ("wg0".to_owned(), PathBuf::from("/run/wireguard/wg0.sock")),
            ("wg1".to_owned(), PathBuf::from("/run/wireguard/wg1.sock")),
            (
                "test9".to_owned(),
                PathBuf::from("/run/wireguard/test9.sock"),
            ),
        ];
        let kernel: BTreeSet<&str> = ["wg0", "wg7"].into_iter().collect();
        let filter = InterfaceFilter {
            include: vec!["wg*".into()],
            exclude: vec![],
        };
        let names: Vec<String> = userspace_to_read(listed, &kernel, &filter)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["wg1"]);
    }
}
