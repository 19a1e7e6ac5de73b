//! The userspace backend: socket I/O with wireguard-go and boringtun.
//!
//! Every `<iface>.sock` in the UAPI directories is one interface. A poll
//! sends `get=1\n\n` to each socket, reads until the blank line after
//! `errno=` (daemons keep the connection open, so EOF is not awaited),
//! feeding the bytes to [`super::uapi_parse`] as they come; nothing here
//! understands the reply.
//!
//! Invariants:
//! - A socket nobody listens on (connect gives `ECONNREFUSED` or `ENOENT`)
//!   was left by a killed daemon: the interface is absent, not unreadable.
//! - A timeout, a garbled or truncated reply or another I/O error makes the
//!   interface *unreadable* ([`Snapshot::unreadable`]), so the tracker keeps
//!   its previous state; the other interfaces are still read.
//! - A missing directory is normal (no daemon running). A directory that
//!   exists but cannot be listed fails the whole poll: an empty snapshot
//!   would read as "every interface was deleted".
//! - A reply is parsed as it arrives, through one 64 KiB buffer: it is
//!   never held whole. The buffer, which holds wireguard-go's private key,
//!   is wiped after each request.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use zeroize::Zeroizing;

use super::uapi_parse::{Parser, Reuse, UapiParseError};
use super::{Backend, BackendError, InterfaceFilter, PollFuture};
use crate::model::{Interface, Snapshot};

/// How many sockets are read at the same time.
const CONCURRENCY: usize = 8;

/// Upper bound of one reply; far above 10,000 peers (about 4 MB), it stops
/// a runaway peer process from exhausting memory.
const MAX_REPLY: usize = 64 << 20;

/// Why one interface could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    /// The daemon did not answer in time.
    #[error("no reply from {} within {timeout:?}; is the daemon hung?", socket.display())]
    Timeout { socket: PathBuf, timeout: Duration },
    #[error("no reply from {} before the poll's deadline ({deadline:?}; other sockets were slow or hung too)", socket.display())]
    PollDeadline { socket: PathBuf, deadline: Duration },
    /// Connecting, writing or reading failed.
    #[error("{op} {}: {source}", socket.display())]
    Io {
        op: &'static str,
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The reply exceeded [`MAX_REPLY`] bytes.
    #[error("reply from {} is larger than {limit} bytes", socket.display())]
    TooLarge { socket: PathBuf, limit: usize },
    /// The reply could not be understood.
    #[error("bad reply from {}: {source}", socket.display())]
    Parse {
        socket: PathBuf,
        #[source]
        source: UapiParseError,
    },
    /// A UAPI directory exists but cannot be listed.
    #[error("cannot list {}: {source}; run as root or grant read access", dir.display())]
    ListDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads wireguard-go and boringtun interfaces over their UAPI sockets.
#[derive(Debug, Clone)]
pub struct UapiBackend {
    /// Searched in order; the first directory holding a name wins.
    dirs: Vec<PathBuf>,
    /// Limit of one whole request (connect, send, read).
    timeout: Duration,
    /// Limit of one whole poll: sockets not answered by then (hung, or
    /// still waiting for their turn) are unreadable for this poll.
    poll_deadline: Duration,
    /// Interfaces whose last read hung (timed out after it began): the next
    /// poll reads them after the others, so hung sockets queued first
    /// cannot keep an answering interface from being reached by the
    /// deadline poll after poll.
    hung: Arc<Mutex<HashSet<String>>>,
    /// Memory each interface's next read reuses: its parser's scratch list
    /// and, once the caller gives it back ([`Backend::recycle`]), its peer
    /// list. No allocation per poll, so no pages to fault in again (at
    /// 65,536 peers that was most of a poll's cpu).
    spare: Arc<Mutex<HashMap<String, Reuse>>>,
}

impl UapiBackend {
    /// A backend searching `dirs` with `timeout` per interface request.
    pub fn new(dirs: Vec<PathBuf>, timeout: Duration) -> Self {
        Self {
            dirs,
            timeout,
            poll_deadline: super::POLL_DEADLINE,
            hung: Arc::default(),
            spare: Arc::default(),
        }
    }

    /// The same with another poll deadline (tests).
    pub fn with_poll_deadline(mut self, deadline: Duration) -> Self {
        self.poll_deadline = deadline;
        self
    }

    /// The memory each interface's last read left to reuse.
    fn spare(&self) -> std::sync::MutexGuard<'_, HashMap<String, Reuse>> {
        self.spare.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When a poll starting now must be done.
    pub fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.poll_deadline
    }

    /// Where wireguard-go and boringtun put their sockets.
    pub fn default_dirs() -> Vec<PathBuf> {
        vec![
            PathBuf::from("/var/run/wireguard"),
            PathBuf::from("/run/wireguard"),
        ]
    }

    /// Interface names and their sockets, sorted by name. Each name appears
    /// once (`/var/run` is usually a symlink to `/run`). A directory that
    /// cannot be listed is logged and skipped.
    pub async fn list(&self) -> Vec<(String, PathBuf)> {
        let mut found = BTreeMap::new();
        for dir in &self.dirs {
            if let Err(e) = list_dir(dir, &mut found) {
                tracing::warn!(error = %e, "cannot list UAPI sockets");
            }
        }
        found.into_iter().collect()
    }

    /// Like [`Self::list`], but fails if a directory exists and cannot be listed.
    pub async fn try_list(&self) -> Result<Vec<(String, PathBuf)>, UapiError> {
        let mut found = BTreeMap::new();
        for dir in &self.dirs {
            list_dir(dir, &mut found)?;
        }
        Ok(found.into_iter().collect())
    }

    /// Reads one interface. `Ok(None)` means the socket is stale (no daemon
    /// behind it), so the interface does not exist. The caller decides what
    /// an `Err` means (a poll marks the interface unreadable).
    pub async fn read_interface(
        &self,
        name: &str,
        socket: &Path,
        now: DateTime<Utc>,
    ) -> Result<Option<Interface>, UapiError> {
        self.read_interface_until(name, socket, now, self.deadline())
            .await
    }

    /// `sockets` in the order to read them: those that hung at their last
    /// read go last (each group keeps its order).
    pub fn fair_order(&self, sockets: Vec<(String, PathBuf)>) -> Vec<(String, PathBuf)> {
        let hung = self.hung.lock().unwrap_or_else(|e| e.into_inner());
        let (mut order, last): (Vec<_>, Vec<_>) =
            sockets.into_iter().partition(|(n, _)| !hung.contains(n));
        order.extend(last);
        order
    }

    /// Reads `sockets` (up to `concurrency` at a time, in
    /// [`Self::fair_order`]) until the poll's deadline, and remembers which
    /// of them hung for the next poll's order.
    pub async fn read_many(
        &self,
        sockets: Vec<(String, PathBuf)>,
        now: DateTime<Utc>,
        concurrency: usize,
    ) -> Vec<(String, Result<Option<Interface>, UapiError>)> {
        let deadline = self.deadline();
        let results: Vec<_> = stream::iter(self.fair_order(sockets))
            .map(|(name, socket)| async move {
                let began = tokio::time::Instant::now();
                let read = self
                    .read_interface_until(&name, &socket, now, deadline)
                    .await;
                let hung = began < deadline
                    && matches!(
                        read,
                        Err(UapiError::Timeout { .. } | UapiError::PollDeadline { .. })
                    );
                (name, read, hung)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let read: HashSet<&str> = results.iter().map(|(n, ..)| n.as_str()).collect();
        self.spare().retain(|n, _| read.contains(n.as_str()));
        let mut set = self.hung.lock().unwrap_or_else(|e| e.into_inner());
        results
            .into_iter()
            .map(|(name, read, hung)| {
                if hung {
                    set.insert(name.clone());
                } else if read.is_ok() {
                    set.remove(&name);
                }
                (name, read)
            })
            .collect()
    }

    /// [`Self::read_interface`], giving up at `deadline` (the poll's) if
    /// that comes before the request's own timeout.
    pub async fn read_interface_until(
        &self,
        name: &str,
        socket: &Path,
        now: DateTime<Utc>,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Interface>, UapiError> {
        let started = tokio::time::Instant::now();
        if started >= deadline {
            // Its turn came after the deadline: do not even connect.
            return Err(UapiError::PollDeadline {
                socket: socket.to_owned(),
                deadline: self.poll_deadline,
            });
        }
        let until = deadline.min(started + self.timeout);
        let reuse = self.spare().remove(name).unwrap_or_default();
        let parser = match tokio::time::timeout_at(until, request(socket, name, reuse)).await {
            Err(_) if until == deadline => {
                return Err(UapiError::PollDeadline {
                    socket: socket.to_owned(),
                    deadline: self.poll_deadline,
                })
            }
            Err(_) => {
                return Err(UapiError::Timeout {
                    socket: socket.to_owned(),
                    timeout: self.timeout,
                })
            }
            Ok(Err(RequestError::Stale(e))) => {
                tracing::debug!(interface = %name, socket = %socket.display(), error = %e,
                    "stale UAPI socket, no daemon behind it");
                return Ok(None);
            }
            Ok(Err(RequestError::Io(op, source))) => {
                return Err(UapiError::Io {
                    op,
                    socket: socket.to_owned(),
                    source,
                })
            }
            Ok(Err(RequestError::TooLarge)) => {
                return Err(UapiError::TooLarge {
                    socket: socket.to_owned(),
                    limit: MAX_REPLY,
                })
            }
            Ok(Err(RequestError::Parse(source))) => {
                return Err(UapiError::Parse {
                    socket: socket.to_owned(),
                    source,
                })
            }
            Ok(Ok(parser)) => parser,
        };
        let (iface, reuse) = parser.finish_reusing(now);
        self.spare().insert(name.to_owned(), reuse);
        iface.map(Some).map_err(|source| UapiError::Parse {
            socket: socket.to_owned(),
            source,
        })
    }

    async fn read_all(
        &self,
        now: DateTime<Utc>,
        filter: &InterfaceFilter,
    ) -> Result<Snapshot, BackendError> {
        let sockets = self.try_list().await.map_err(|e| match e {
            UapiError::ListDir { dir, source } => BackendError::Io {
                context: format!("cannot list {}", dir.display()),
                source,
            },
            other => BackendError::Protocol(other.to_string()),
        })?;
        let sockets = sockets
            .into_iter()
            .filter(|(n, _)| filter.allows(n))
            .collect();
        let results = self.read_many(sockets, now, CONCURRENCY).await;

        let mut snapshot = Snapshot::default();
        for (name, read) in results {
            match read {
                Ok(Some(iface)) => snapshot.interfaces.push(iface),
                Ok(None) => {}
                Err(e) => {
                    crate::faults::interface_unreadable(&name, &e);
                    snapshot.unreadable.push(name);
                }
            }
        }
        snapshot.normalize();
        Ok(snapshot)
    }
}

impl Backend for UapiBackend {
    fn name(&self) -> &'static str {
        "userspace"
    }

    fn poll<'a>(&'a mut self, now: DateTime<Utc>, filter: &'a InterfaceFilter) -> PollFuture<'a> {
        Box::pin(self.read_all(now, filter))
    }

    /// Takes back the peer lists of `snapshot`'s interfaces for their next
    /// read.
    fn recycle(&mut self, snapshot: Snapshot) {
        let mut spare = self.spare();
        for iface in snapshot.interfaces {
            if let Some(reuse) = spare.get_mut(&iface.name) {
                let mut peers = iface.peers;
                peers.clear();
                reuse.peers = peers;
            }
        }
    }
}

/// Adds the `*.sock` sockets of `dir` to `found` unless the name is known.
///
/// Plain `std::fs`: the socket directories are on tmpfs and hold a few
/// entries, and `tokio::fs` would hand every call (the listing, each entry,
/// each file type) to a blocking thread and back, several thread switches
/// per poll for microseconds of work.
fn list_dir(dir: &Path, found: &mut BTreeMap<String, PathBuf>) -> Result<(), UapiError> {
    let list_err = |source| UapiError::ListDir {
        dir: dir.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(list_err(e)),
    };
    for entry in entries {
        let entry = entry.map_err(list_err)?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".sock")) else {
            continue;
        };
        if name.is_empty() || found.contains_key(name) {
            continue;
        }
        // Follows a symlink; a file that vanished meanwhile is skipped.
        let is_socket = match entry.file_type() {
            Ok(t) if t.is_symlink() => {
                std::fs::metadata(entry.path()).is_ok_and(|m| m.file_type().is_socket())
            }
            Ok(t) => t.is_socket(),
            Err(_) => false,
        };
        if is_socket {
            found.insert(name.to_owned(), entry.path());
        }
    }
    Ok(())
}

/// Why a request produced no reply.
enum RequestError {
    /// Nobody listens on the socket.
    Stale(io::Error),
    Io(&'static str, io::Error),
    TooLarge,
    Parse(UapiParseError),
}

/// Sends `get=1` and parses the reply as it arrives, up to its `errno=0`
/// line (or EOF if the daemon closes first), into the lists of `reuse`
/// (the last read's, sized for its peers).
async fn request(socket: &Path, name: &str, reuse: Reuse) -> Result<Parser, RequestError> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => RequestError::Stale(e),
            _ => RequestError::Io("connecting to", e),
        })?;
    stream
        .write_all(b"get=1\n\n")
        .await
        .map_err(|e| RequestError::Io("writing to", e))?;

    let mut parser = Parser::reusing(name, reuse);
    // One piece, refilled: the reply (about 20 MB at 65,536 peers) is never
    // held whole. Wiped when dropped, as the reply holds the private key.
    let mut piece = Zeroizing::new(vec![0u8; PIECE]);
    let mut len = 0usize;
    loop {
        let n = stream
            .read(&mut piece[..])
            .await
            .map_err(|e| RequestError::Io("reading from", e))?;
        if n == 0 {
            return Ok(parser);
        }
        len += n;
        if len > MAX_REPLY {
            return Err(RequestError::TooLarge);
        }
        if parser.feed(&piece[..n]).map_err(RequestError::Parse)? {
            return Ok(parser);
        }
    }
}

/// Size of the piece a reply is read into.
const PIECE: usize = 64 << 10;

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener as StdUnixListener;

    use tokio::io::{AsyncBufReadExt as _, BufReader};
    use tokio::net::UnixListener;

    use super::*;

    const GENEROUS: Duration = Duration::from_secs(30);

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/uapi/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_418_410, 0).unwrap()
    }

    /// A fake daemon on `dir/name.sock` answering every `get=1` with `reply`
    /// and then keeping the connection open until the client hangs up, so a
    /// client waiting for EOF would time out.
    fn serve(dir: &Path, name: &str, reply: Vec<u8>) -> tokio::task::JoinHandle<()> {
        let listener = UnixListener::bind(dir.join(format!("{name}.sock"))).unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let reply = reply.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("get=1"));
                    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some(""));
                    write.write_all(&reply).await.unwrap();
                    // Hold the connection until the client closes it.
                    while let Ok(Some(_)) = lines.next_line().await {}
                });
            }
        })
    }

    fn backend(dirs: &[&Path], timeout: Duration) -> UapiBackend {
        UapiBackend::new(dirs.iter().map(|d| d.to_path_buf()).collect(), timeout)
    }

    async fn poll(backend: &mut UapiBackend, filter: &InterfaceFilter) -> Snapshot {
        backend.poll(now(), filter).await.unwrap()
    }

    /// A snapshot given back is reused by the next poll: the same peer list
    /// (no allocation, so no fresh pages to fault in), filled the same.
    #[tokio::test]
    async fn a_recycled_snapshot_lends_its_peer_list_to_the_next_poll() {
        let dir = tempfile::tempdir().unwrap();
        let text = crate::backend::uapi_parse::generate_wireguard_go_reply(3_000);
        let server = serve(dir.path(), "wgr", text.into_bytes());
        let mut b = backend(&[dir.path()], GENEROUS);
        let all = InterfaceFilter::default();
        let first = poll(&mut b, &all).await;
        assert_eq!(first.interfaces[0].peers.len(), 3_000);
        let expected = first.clone();
        let list = first.interfaces[0].peers.as_ptr();
        b.recycle(first);
        let second = poll(&mut b, &all).await;
        assert_eq!(second, expected);
        assert_eq!(second.interfaces[0].peers.as_ptr(), list, "the same list");
        // Not given back: the next poll still sizes its list at once.
        let third = poll(&mut b, &all).await;
        assert_eq!(third, expected);
        assert!(third.interfaces[0].peers.capacity() >= 3_000);
        server.abort();
    }

    #[tokio::test]
    async fn reads_a_normal_reply_without_waiting_for_eof() {
        let dir = tempfile::tempdir().unwrap();
        let _server = serve(dir.path(), "wg0", fixture("wireguard-go-two-peers.txt"));
        let mut b = backend(&[dir.path()], GENEROUS);

        let snap = poll(&mut b, &InterfaceFilter::default()).await;
        let expected = crate::backend::uapi_parse::parse_interface(
            "wg0",
            &fixture("wireguard-go-two-peers.txt")[..],
            now(),
        )
        .unwrap();
        assert_eq!(snap.interfaces, vec![expected]);
        assert!(snap.unreadable.is_empty());
        assert_eq!(b.name(), "userspace");
    }

    /// Regression: with more hung sockets than a poll can wait out before
    /// its deadline, an answering interface that sorts after them was never
    /// reached, so it stayed unreadable at every poll. A poll ends at its
    /// deadline; the next one reads the sockets that did not hang first.
    #[tokio::test]
    async fn hung_sockets_end_a_poll_at_its_deadline_and_never_starve_an_answering_one() {
        let dir = tempfile::tempdir().unwrap();
        // Sorted before `wgz`: 32 hung / 8 at a time * 200 ms > 500 ms.
        let _hung: Vec<StdUnixListener> = (0..32)
            .map(|i| StdUnixListener::bind(dir.path().join(format!("wga{i:02}.sock"))).unwrap())
            .collect();
        let _server = serve(dir.path(), "wgz", fixture("wireguard-go-two-peers.txt"));
        let mut b = backend(&[dir.path()], Duration::from_millis(200))
            .with_poll_deadline(Duration::from_millis(500));

        let started = std::time::Instant::now();
        let first = poll(&mut b, &InterfaceFilter::default()).await;
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(first.unreadable.len() + first.interfaces.len(), 33);
        for _ in 0..3 {
            let next = poll(&mut b, &InterfaceFilter::default()).await;
            let names: Vec<_> = next.interfaces.iter().map(|i| i.name.as_str()).collect();
            assert_eq!(names, ["wgz"], "unreadable: {:?}", next.unreadable);
            assert_eq!(next.unreadable.len(), 32);
        }
    }

    #[tokio::test]
    async fn a_daemon_that_never_answers_is_unreadable_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        // Bound but never accepting: connect and write succeed, no reply comes.
        let _silent = StdUnixListener::bind(dir.path().join("wghung.sock")).unwrap();
        let mut b = backend(&[dir.path()], Duration::from_millis(100));

        let snap = poll(&mut b, &InterfaceFilter::default()).await;
        assert!(snap.interfaces.is_empty());
        assert_eq!(snap.unreadable, vec!["wghung".to_string()]);
        let err = b
            .read_interface("wghung", &dir.path().join("wghung.sock"), now())
            .await
            .unwrap_err();
        assert!(matches!(err, UapiError::Timeout { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn garbled_and_truncated_replies_are_unreadable_and_others_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let _a = serve(dir.path(), "wga", fixture("wireguard-go-no-peers.txt"));
        let _b = serve(dir.path(), "wgb", fixture("broken-garbled.txt"));
        let _c = serve(dir.path(), "wgc", fixture("boringtun-no-peers.txt"));
        let _d = serve(dir.path(), "wgd", fixture("broken-errno.txt"));
        // Truncated: the daemon hangs up mid-reply.
        let truncated = dir.path().join("wge.sock");
        let listener = UnixListener::bind(&truncated).unwrap();
        let _e = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(&fixture("broken-truncated.txt")).await;
            }
        });
        let mut b = backend(&[dir.path()], GENEROUS);

        let snap = poll(&mut b, &InterfaceFilter::default()).await;
        let names: Vec<_> = snap.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["wga", "wgc"]);
        assert_eq!(snap.unreadable, ["wgb", "wgd", "wge"]);
        let err = b
            .read_interface("wgb", &dir.path().join("wgb.sock"), now())
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                UapiError::Parse {
                    source: UapiParseError::Malformed { line: 8 },
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_stale_socket_file_is_an_absent_interface() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join("wgdead.sock");
        // Binding creates the file; dropping the listener leaves it behind,
        // as a killed daemon does.
        drop(StdUnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        let mut b = backend(&[dir.path()], GENEROUS);

        assert_eq!(
            b.read_interface("wgdead", &stale, now()).await.unwrap(),
            None
        );
        let gone = dir.path().join("wggone.sock");
        assert_eq!(
            b.read_interface("wggone", &gone, now()).await.unwrap(),
            None
        );
        assert_eq!(
            poll(&mut b, &InterfaceFilter::default()).await,
            Snapshot::default()
        );
    }

    #[tokio::test]
    async fn missing_directories_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let _server = serve(dir.path(), "wg0", fixture("wireguard-go-no-peers.txt"));
        let mut b = backend(&[&missing, dir.path()], GENEROUS);

        let snap = poll(&mut b, &InterfaceFilter::default()).await;
        assert_eq!(snap.interfaces.len(), 1);
        let mut only_missing = backend(&[&missing], GENEROUS);
        assert_eq!(
            poll(&mut only_missing, &InterfaceFilter::default()).await,
            Snapshot::default()
        );
    }

    #[tokio::test]
    async fn names_are_deduplicated_across_directories_and_non_sockets_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let var_run = dir.path().join("var-run");
        std::os::unix::fs::symlink(&run, &var_run).unwrap();
        let _server = serve(&run, "wg0", fixture("wireguard-go-no-peers.txt"));
        std::fs::write(run.join("notasocket.sock"), b"").unwrap();
        std::fs::write(run.join("wg1.txt"), b"").unwrap();
        let b = backend(&[&var_run, &run], GENEROUS);

        assert_eq!(
            b.list().await,
            vec![("wg0".to_string(), var_run.join("wg0.sock"))]
        );
    }

    #[tokio::test]
    async fn only_interfaces_passing_the_filter_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let _a = serve(dir.path(), "wg0", fixture("wireguard-go-no-peers.txt"));
        // Would be unreadable if it were read.
        let _b = serve(dir.path(), "test1", fixture("broken-garbled.txt"));
        let mut b = backend(&[dir.path()], GENEROUS);
        let filter = InterfaceFilter {
            include: vec![],
            exclude: vec!["test*".into()],
        };

        let snap = poll(&mut b, &filter).await;
        assert_eq!(snap.interfaces.len(), 1);
        assert!(snap.unreadable.is_empty());
    }

    #[tokio::test]
    async fn an_unlistable_directory_fails_the_poll() {
        let dir = tempfile::tempdir().unwrap();
        // A file where a directory is expected: read_dir fails with ENOTDIR.
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let mut b = backend(&[&file], GENEROUS);

        let err = b
            .poll(now(), &InterfaceFilter::default())
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Io { .. }), "{err:?}");
        assert!(b.list().await.is_empty());
    }

    #[test]
    fn default_dirs_are_the_daemons_socket_dirs() {
        assert_eq!(
            UapiBackend::default_dirs(),
            [
                PathBuf::from("/var/run/wireguard"),
                PathBuf::from("/run/wireguard")
            ]
        );
    }
}
