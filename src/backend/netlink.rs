//! The kernel backend: WireGuard interfaces of the Linux module, read over netlink.
//!
//! I/O only; turning replies into the model is [`netlink_decode`](super::netlink_decode).
//! - [`LinkReader`] (rtnetlink) lists links with their kind, MTU and
//!   addresses. Kernel WireGuard interfaces are the links of kind
//!   `wireguard`; the same list gives userspace (tun) interfaces their
//!   addresses and MTU ([`apply_links`]).
//! - [`DeviceReader`] (generic netlink, family `wireguard`) dumps each
//!   interface with `WG_CMD_GET_DEVICE` + `NLM_F_DUMP`, by ifindex.
//! - [`KernelBackend`] puts the two together.
//!
//! The generic netlink side speaks to a plain `netlink-sys` socket rather
//! than through `genetlink`: that crate's connection logs every reply with
//! `Debug` at TRACE level (private keys included) and parses replies with a
//! parser that panics on one malformed attribute. Here the reply bytes go
//! straight to the pure decoder, which the fixtures test byte for byte.
//!
//! Invariants:
//! - One socket of each kind, reused across polls. A socket that failed
//!   (I/O error, timeout, garbled reply) is dropped and reopened on next use,
//!   so a late reply can never be mistaken for the answer to a new request
//!   (replies are also matched by sequence number).
//! - The family id is cached; when a dump fails with `ENOENT`, `EINVAL` or
//!   `EOPNOTSUPP` (module reloaded, id stale) the cache is cleared, the
//!   family resolved again and the dump retried once.
//! - A dump flagged `NLM_F_DUMP_INTR` is retried, [`DUMP_ATTEMPTS`] times in
//!   all; after that the interface is reported unreadable, never half-read.
//!   So is a dump the kernel cut short (an error code in `NLMSG_DONE`).
//! - An interface that vanished between the link dump and its own dump
//!   (`ENODEV`) is left out; one that exists but cannot be read goes to
//!   [`Snapshot::unreadable`].
//! - rtnetlink never surfaces `NLM_F_DUMP_INTR`, so an interrupted link dump
//!   may silently lack a link. A WireGuard link read last poll
//!   ([`KnownLinks`]) that is absent from the list is dumped by its old
//!   ifindex before it may vanish: answering under its name it is kept
//!   (with its last known MTU and addresses); `ENODEV`, another name or a
//!   non-WireGuard device there means gone; any other error, unreadable.
//! - Every request has a deadline ([`REQUEST_TIMEOUT`]).
//! - Reply buffers (which hold the private key) are never logged.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkBuffer, NetlinkMessage, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo};
use netlink_packet_wireguard::{WireguardAttribute, WireguardCmd, WireguardMessage};
use rtnetlink::sys::protocols::NETLINK_GENERIC;
use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

use super::netlink_decode::{decode_device_bytes, decode_dump, decode_family_reply, DecodeError};
use super::{Backend, BackendError, InterfaceFilter, PollFuture};
use crate::model::{Interface, Snapshot};

/// Name of the generic netlink family the module registers.
pub const FAMILY_NAME: &str = "wireguard";
/// How long one netlink request (a whole dump included) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Dumps of one interface per poll when each comes back interrupted.
pub const DUMP_ATTEMPTS: usize = 3;
/// Receive buffer: the kernel sizes dump messages to at most 32 KiB.
const RECV_BUFFER: usize = 64 * 1024;

const ENOENT: i32 = 2;
const EPERM: i32 = 1;
const EACCES: i32 = 13;
const ENODEV: i32 = 19;
const EINVAL: i32 = 22;
const EOPNOTSUPP: i32 = 95;

/// The error for a host without the module.
pub fn module_not_loaded() -> BackendError {
    BackendError::Unavailable {
        what: "the wireguard kernel module is not loaded".into(),
        hint: "run `modprobe wireguard`, or set monitor.backend to userspace".into(),
    }
}

/// The error for a process that may not read WireGuard devices.
pub fn needs_cap_net_admin() -> BackendError {
    BackendError::Unavailable {
        what: "reading WireGuard devices needs CAP_NET_ADMIN".into(),
        hint: "run as root or grant CAP_NET_ADMIN (AmbientCapabilities=CAP_NET_ADMIN)".into(),
    }
}

fn is_permission_errno(errno: i32) -> bool {
    errno == EPERM || errno == EACCES
}

// ---------------------------------------------------------------------------
// rtnetlink: links, MTU, addresses

/// One network link as rtnetlink lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: Option<u32>,
    /// Kind `wireguard`: served by the kernel module.
    pub wireguard: bool,
    /// Addresses on the link with their prefix length, in kernel order.
    pub addresses: Vec<IpNet>,
}

/// Lists links and addresses over one rtnetlink connection.
pub struct LinkReader {
    handle: rtnetlink::Handle,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for LinkReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkReader").finish_non_exhaustive()
    }
}

impl Drop for LinkReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LinkReader {
    /// Opens the rtnetlink socket; must be called within a tokio runtime.
    pub fn connect() -> Result<Self, BackendError> {
        let (connection, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(|source| BackendError::Io {
                context: "opening an rtnetlink socket".into(),
                source,
            })?;
        Ok(Self {
            handle,
            task: tokio::spawn(connection),
        })
    }

    /// Whether the connection task still runs (it ends when the socket fails).
    pub fn is_alive(&self) -> bool {
        !self.task.is_finished()
    }

    /// Every link with its kind, MTU and addresses.
    pub async fn links(&self) -> Result<Vec<Link>, BackendError> {
        let mut links = with_deadline("rtnetlink link dump", self.link_dump()).await?;
        let mut addresses = with_deadline("rtnetlink address dump", self.address_dump()).await?;
        for link in &mut links {
            link.addresses = addresses.remove(&link.index).unwrap_or_default();
        }
        Ok(links)
    }

    async fn link_dump(&self) -> Result<Vec<Link>, BackendError> {
        let mut stream = self.handle.link().get().execute();
        let mut links = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| rtnetlink_error("rtnetlink link dump", e))?
        {
            let mut link = Link {
                index: msg.header.index,
                name: String::new(),
                mtu: None,
                wireguard: false,
                addresses: Vec::new(),
            };
            for attr in msg.attributes {
                match attr {
                    LinkAttribute::IfName(name) => link.name = name,
                    LinkAttribute::Mtu(mtu) => link.mtu = Some(mtu),
                    LinkAttribute::LinkInfo(infos) => {
                        link.wireguard = infos
                            .iter()
                            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Wireguard)));
                    }
                    _ => {}
                }
            }
            links.push(link);
        }
        Ok(links)
    }

    async fn address_dump(&self) -> Result<BTreeMap<u32, Vec<IpNet>>, BackendError> {
        let mut stream = self.handle.address().get().execute();
        let mut by_link: BTreeMap<u32, Vec<IpNet>> = BTreeMap::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| rtnetlink_error("rtnetlink address dump", e))?
        {
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the
            // peer's on point-to-point links (`ip addr add A peer B`).
            let (mut local, mut address) = (None, None);
            for attr in &msg.attributes {
                match attr {
                    AddressAttribute::Local(a) => local = Some(*a),
                    AddressAttribute::Address(a) => address = Some(*a),
                    _ => {}
                }
            }
            if let Some(net) = local
                .or(address)
                .and_then(|a| IpNet::new(a, msg.header.prefix_len).ok())
            {
                by_link.entry(msg.header.index).or_default().push(net);
            }
        }
        Ok(by_link)
    }
}

fn rtnetlink_error(context: &str, e: rtnetlink::Error) -> BackendError {
    match e {
        rtnetlink::Error::NetlinkError(msg) => BackendError::Io {
            context: context.into(),
            source: msg.to_io(),
        },
        other => BackendError::Protocol(format!("{context}: {other}")),
    }
}

async fn with_deadline<T>(
    context: &str,
    fut: impl std::future::Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| {
            Err(BackendError::Io {
                context: context.into(),
                source: io::Error::new(io::ErrorKind::TimedOut, "no answer from the kernel"),
            })
        })
}

/// Sets `mtu` and `addresses` of each interface from the link of the same name.
pub fn apply_links(interfaces: &mut [Interface], links: &[Link]) {
    for iface in interfaces {
        if let Some(link) = links.iter().find(|l| l.name == iface.name) {
            iface.mtu = link.mtu;
            iface.addresses = link.addresses.clone();
        }
    }
}

// ---------------------------------------------------------------------------
// generic netlink: the `wireguard` family

/// Why one generic netlink request failed.
#[derive(Debug, thiserror::Error)]
enum GenlError {
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("no answer from the kernel within {REQUEST_TIMEOUT:?}")]
    Timeout,
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Every one of [`DUMP_ATTEMPTS`] dumps came back `NLM_F_DUMP_INTR`.
    #[error(
        "the device changed during each of {DUMP_ATTEMPTS} dumps in a row \
         (NLM_F_DUMP_INTR); it is read again next poll"
    )]
    StillInterrupted,
}

impl GenlError {
    fn errno(&self) -> Option<i32> {
        match self {
            GenlError::Decode(e) => e.errno(),
            _ => None,
        }
    }

    /// Whether the socket may hold unread replies or be broken. Replies that
    /// ended properly (an error message, `NLMSG_DONE`) leave it usable.
    fn poisons_socket(&self) -> bool {
        !matches!(
            self,
            GenlError::Decode(DecodeError::Kernel { .. } | DecodeError::DumpAborted { .. })
                | GenlError::StillInterrupted
        )
    }
}

/// A generic netlink socket with the cached id of the `wireguard` family.
struct GenlSocket {
    socket: TokioSocket,
    seq: u32,
    family: Option<u16>,
    buf: Vec<u8>,
}

impl GenlSocket {
    fn open() -> io::Result<Self> {
        let mut socket = TokioSocket::new(NETLINK_GENERIC)?;
        socket.socket_mut().bind_auto()?;
        Ok(Self {
            socket,
            seq: 0,
            family: None,
            buf: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// Sends one request and collects the raw reply messages carrying its
    /// sequence number, up to `NLMSG_DONE`/`NLMSG_ERROR` (a dump) or the
    /// first reply (anything else).
    async fn request(
        &mut self,
        mut msg: NetlinkMessage<impl netlink_packet_core::NetlinkSerializable>,
        dump: bool,
    ) -> Result<Vec<u8>, GenlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        msg.header.sequence_number = seq;
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            self.socket.send_to(&bytes, &SocketAddr::new(0, 0)).await?;
            self.collect(seq, dump).await
        })
        .await
        .unwrap_or(Err(GenlError::Timeout))
    }

    async fn collect(&mut self, seq: u32, dump: bool) -> Result<Vec<u8>, GenlError> {
        let mut reply = Vec::new();
        loop {
            self.buf.clear();
            self.socket.recv_from(&mut self.buf).await?;
            let mut offset = 0;
            let mut complete = false;
            while offset < self.buf.len() {
                let nl = NetlinkBuffer::new_checked(&self.buf[offset..]).map_err(|e| {
                    DecodeError::Malformed {
                        index: 0,
                        reason: e.to_string(),
                    }
                })?;
                let end = offset
                    .saturating_add((nl.length() as usize).saturating_add(3) & !3)
                    .min(self.buf.len());
                if nl.sequence_number() == seq {
                    reply.extend_from_slice(&self.buf[offset..end]);
                    let kind = nl.message_type();
                    complete |= !dump || kind == NLMSG_DONE || kind == NLMSG_ERROR;
                }
                offset = end;
            }
            if complete {
                self.buf.fill(0);
                return Ok(reply);
            }
        }
    }

    /// The id of the `wireguard` family, resolved once and cached.
    async fn family(&mut self) -> Result<u16, GenlError> {
        if let Some(id) = self.family {
            return Ok(id);
        }
        let id = self.resolve(FAMILY_NAME).await?;
        self.family = Some(id);
        Ok(id)
    }

    /// Asks the kernel for a family's id (`ENOENT`: not registered).
    async fn resolve(&mut self, name: &str) -> Result<u16, GenlError> {
        let mut genl = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
        });
        genl.finalize();
        let mut msg = NetlinkMessage::from(genl);
        msg.header.flags = NLM_F_REQUEST;
        let reply = self.request(msg, false).await?;
        Ok(decode_family_reply(&reply)?)
    }
}

/// The step [`read_device`] repeats: one `WG_CMD_GET_DEVICE` dump over a
/// socket that caches the family id. A trait so that the retry and
/// reconnect logic can be tested against scripted replies.
trait DeviceDump {
    /// Whether a family id is cached (an error may then mean it is stale).
    fn has_family(&self) -> bool;
    /// Drops the cached family id; the next dump resolves it again.
    fn forget_family(&mut self);
    /// `WG_CMD_GET_DEVICE` as a dump, returning the raw reply messages;
    /// `ifindex: None` sends no device selector at all (used to probe
    /// permissions).
    async fn dump_device(&mut self, ifindex: Option<u32>) -> Result<Vec<u8>, GenlError>;
}

impl DeviceDump for GenlSocket {
    fn has_family(&self) -> bool {
        self.family.is_some()
    }

    fn forget_family(&mut self) {
        self.family = None;
    }

    async fn dump_device(&mut self, ifindex: Option<u32>) -> Result<Vec<u8>, GenlError> {
        let family = self.family().await?;
        let mut genl = GenlMessage::from_payload(WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: ifindex
                .map(WireguardAttribute::IfIndex)
                .into_iter()
                .collect(),
        });
        genl.set_resolved_family_id(family);
        genl.finalize();
        let mut msg = NetlinkMessage::from(genl);
        msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        self.request(msg, true).await
    }
}

/// Reads one interface: `Ok(None)` if it no longer exists. An interrupted
/// dump is repeated, [`DUMP_ATTEMPTS`] dumps in all; a family id the kernel
/// no longer knows is resolved again once.
async fn read_device(
    dev: &mut impl DeviceDump,
    ifindex: u32,
) -> Result<Option<Interface>, GenlError> {
    let mut interrupted = 0;
    let mut refreshed_family = false;
    loop {
        let had_family = dev.has_family();
        let result = decode_wiped(dev.dump_device(Some(ifindex)).await, decode_device_bytes);
        match result {
            Ok(iface) => return Ok(Some(iface)),
            Err(GenlError::Decode(DecodeError::Interrupted)) => {
                interrupted += 1;
                if interrupted >= DUMP_ATTEMPTS {
                    return Err(GenlError::StillInterrupted);
                }
                tracing::debug!(
                    ifindex,
                    attempt = interrupted,
                    "dump interrupted; dumping again"
                );
            }
            Err(e) if e.errno() == Some(ENODEV) => return Ok(None),
            Err(e)
                if had_family
                    && !refreshed_family
                    && matches!(e.errno(), Some(ENOENT | EINVAL | EOPNOTSUPP)) =>
            {
                tracing::debug!(error = %e, "wireguard family id may be stale; resolving it again");
                refreshed_family = true;
                dev.forget_family();
            }
            Err(e) => return Err(e),
        }
    }
}

/// What reading the kernel's WireGuard devices gave.
#[derive(Debug, Default)]
pub struct KernelRead {
    pub interfaces: Vec<Interface>,
    /// Interfaces that exist but could not be read this time.
    pub unreadable: Vec<String>,
}

/// Reads kernel WireGuard devices over generic netlink.
pub struct DeviceReader {
    /// `None` after a failure; reopened on next use.
    socket: Option<GenlSocket>,
}

impl fmt::Debug for DeviceReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceReader")
            .field("connected", &self.socket.is_some())
            .finish()
    }
}

impl DeviceReader {
    /// Opens a socket, resolves the `wireguard` family and checks that
    /// device dumps are permitted. `Ok(None)`: the module is not loaded.
    pub async fn probe() -> Result<Option<Self>, BackendError> {
        let mut socket = open_socket()?;
        match socket.family().await {
            Ok(_) => {}
            Err(e) if e.errno() == Some(ENOENT) => return Ok(None),
            Err(e) => return Err(probe_error(e)),
        }
        let reply = socket.dump_device(None).await;
        permission_verdict(reply)?;
        Ok(Some(Self {
            socket: Some(socket),
        }))
    }

    /// Reads the kernel WireGuard links of `listed` that `filter` allows,
    /// plus each link of `known` the list lacks if its ifindex still answers
    /// to its name (see [`KnownLinks`]), and updates `known`. `Err` only
    /// when nothing can be read: module gone or permission denied.
    pub async fn read_listed(
        &mut self,
        listed: &[Link],
        filter: &InterfaceFilter,
        known: &mut KnownLinks,
    ) -> Result<KernelRead, BackendError> {
        read_remembered(&mut self.socket, open_socket, known, listed, filter).await
    }
}

/// Decodes a device dump reply, then zeroes it: it holds the private key,
/// which must not stay behind in freed memory.
fn decode_wiped<T>(
    reply: Result<Vec<u8>, GenlError>,
    decode: impl FnOnce(&[u8]) -> Result<T, DecodeError>,
) -> Result<T, GenlError> {
    let mut bytes = reply?;
    let decoded = decode(&bytes);
    bytes.fill(0);
    Ok(decoded?)
}

fn open_socket() -> Result<GenlSocket, BackendError> {
    GenlSocket::open().map_err(|source| BackendError::Io {
        context: "opening a generic netlink socket".into(),
        source,
    })
}

/// Judges the reply to a device dump that names no device. Resolving a
/// family needs no privilege; dumping devices needs CAP_NET_ADMIN, checked
/// by the kernel before it looks at the request. So the dump fails with
/// `EPERM` without the capability and with another error (`EBADR`,
/// `EINVAL`) with it.
fn permission_verdict(reply: Result<Vec<u8>, GenlError>) -> Result<(), BackendError> {
    let decoded = decode_wiped(reply, |bytes| decode_dump(bytes).map(drop));
    // A kernel that refuses the device in the dump itself rather than
    // before it answers in NLMSG_DONE; that is a refusal like any other.
    let errno = |e: &GenlError| match e {
        GenlError::Decode(DecodeError::DumpAborted { errno }) => Some(*errno),
        other => other.errno(),
    };
    match decoded {
        Ok(()) => Ok(()),
        Err(e) if errno(&e).is_some_and(is_permission_errno) => Err(needs_cap_net_admin()),
        Err(e) if errno(&e).is_some() => Ok(()),
        Err(e) => Err(probe_error(e)),
    }
}

/// Reads each link's device over the socket in `slot`, opening one with
/// `open` when there is none. A socket that may hold stray replies or be
/// broken is dropped, so the next poll opens a fresh one.
async fn read_links<D: DeviceDump>(
    slot: &mut Option<D>,
    open: impl Fn() -> Result<D, BackendError>,
    links: &[&Link],
) -> Result<KernelRead, BackendError> {
    let mut out = KernelRead::default();
    for link in links {
        read_link(slot, &open, link, Source::Listed, &mut out).await?;
    }
    Ok(out)
}

/// Where a link to read came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// This poll's link list.
    Listed,
    /// Only [`KnownLinks`]: read last poll, absent from this poll's list.
    Remembered,
}

/// Reads one link's device into `out` (or leaves it out when it is gone).
/// `Err` only when nothing can be read: module gone or permission denied.
async fn read_link<D: DeviceDump>(
    slot: &mut Option<D>,
    open: &impl Fn() -> Result<D, BackendError>,
    link: &Link,
    source: Source,
    out: &mut KernelRead,
) -> Result<(), BackendError> {
    let socket = match slot {
        Some(s) => s,
        None => slot.insert(open()?),
    };
    let remembered = source == Source::Remembered;
    match read_device(socket, link.index).await {
        // A remembered link is only itself if its ifindex still carries
        // its name; the link list was not there to say so.
        Ok(Some(mut iface)) if !remembered || iface.name == link.name => {
            if remembered {
                tracing::debug!(
                    interface = %link.name,
                    ifindex = link.index,
                    "link missing from the link dump found by ifindex; kept"
                );
            }
            iface.mtu = link.mtu;
            iface.addresses = link.addresses.clone();
            out.interfaces.push(iface);
        }
        Ok(Some(other)) => {
            tracing::debug!(
                interface = %link.name,
                ifindex = link.index,
                now = %other.name,
                "link missing from the link dump: its ifindex names another device; gone"
            );
        }
        Ok(None) if remembered => {
            tracing::debug!(interface = %link.name, "link missing from the link dump is gone (ENODEV)");
        }
        Ok(None) => {
            tracing::debug!(interface = %link.name, "interface vanished before it could be read");
        }
        // The family was resolved afresh for this answer (read_device
        // retries a stale id), so the kernel says the ifindex now names a
        // device that is not WireGuard: the remembered one is gone.
        Err(e) if remembered && e.errno() == Some(EOPNOTSUPP) => {
            tracing::debug!(
                interface = %link.name,
                ifindex = link.index,
                "link missing from the link dump: its ifindex is no WireGuard device now; gone"
            );
        }
        Err(e) if e.errno().is_some_and(is_permission_errno) => return Err(needs_cap_net_admin()),
        Err(e) if e.errno() == Some(ENOENT) && !socket.has_family() => {
            // The family could not be resolved again: module unloaded.
            return Err(module_not_loaded());
        }
        Err(e) => {
            crate::faults::interface_unreadable(&link.name, &e);
            if e.poisons_socket() {
                *slot = None;
            }
            out.unreadable.push(link.name.clone());
        }
    }
    Ok(())
}

/// The kernel WireGuard links read (or found unreadable) in the previous
/// poll, by name.
///
/// rtnetlink does not surface `NLM_F_DUMP_INTR`, so a link dump that a
/// concurrent link change interrupted can silently lack a link. A link
/// remembered here but absent from this poll's list is therefore asked for
/// by its old ifindex before it may count as deleted
/// ([`DeviceReader::read_listed`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownLinks {
    by_name: BTreeMap<String, Link>,
}

impl KnownLinks {
    /// The remembered links that `listed` lacks (by name, of any kind) and
    /// `filter` still allows: the ones to confirm by ifindex.
    pub fn missing(&self, listed: &[Link], filter: &InterfaceFilter) -> Vec<Link> {
        self.by_name
            .values()
            .filter(|k| filter.allows(&k.name) && !listed.iter().any(|l| l.name == k.name))
            .cloned()
            .collect()
    }

    /// Forgets every link (no kernel WireGuard link can exist any more).
    pub fn clear(&mut self) {
        self.by_name.clear();
    }

    /// Remembers those of `links` that `read` found or could not read; the
    /// ones that are gone are forgotten.
    fn replace<'a>(&mut self, links: impl IntoIterator<Item = &'a Link>, read: &KernelRead) {
        self.by_name = links
            .into_iter()
            .filter(|l| {
                read.interfaces.iter().any(|i| i.name == l.name)
                    || read.unreadable.contains(&l.name)
            })
            .map(|l| (l.name.clone(), l.clone()))
            .collect();
    }
}

/// Reads the kernel WireGuard links of `listed` that `filter` allows, then
/// confirms by ifindex each link of `known` that `listed` lacks: found with
/// the same name, it is read (keeping its last known MTU and addresses);
/// `ENODEV`, another name or a non-WireGuard device there, it is gone; any
/// other error, it is unreadable. `known` then holds this poll's links; on
/// `Err` it is left as it was.
async fn read_remembered<D: DeviceDump>(
    slot: &mut Option<D>,
    open: impl Fn() -> Result<D, BackendError>,
    known: &mut KnownLinks,
    listed: &[Link],
    filter: &InterfaceFilter,
) -> Result<KernelRead, BackendError> {
    let wanted: Vec<&Link> = listed
        .iter()
        .filter(|l| l.wireguard && filter.allows(&l.name))
        .collect();
    let missing = known.missing(listed, filter);
    let mut out = read_links(slot, &open, &wanted).await?;
    for link in &missing {
        read_link(slot, &open, link, Source::Remembered, &mut out).await?;
    }
    known.replace(wanted.into_iter().chain(&missing), &out);
    Ok(out)
}

fn probe_error(e: GenlError) -> BackendError {
    match e {
        GenlError::Io(source) => BackendError::Io {
            context: "generic netlink request for the wireguard family".into(),
            source,
        },
        GenlError::Decode(DecodeError::Kernel { errno }) if is_permission_errno(errno) => {
            needs_cap_net_admin()
        }
        other => BackendError::Protocol(format!("generic netlink (wireguard family): {other}")),
    }
}

// ---------------------------------------------------------------------------
// the backend

/// Kernel WireGuard interfaces only (`monitor.backend: kernel`).
#[derive(Debug)]
pub struct KernelBackend {
    links: Option<LinkReader>,
    devices: DeviceReader,
    /// Last poll's links, to confirm one the link dump missed.
    known: KnownLinks,
}

impl KernelBackend {
    /// Connects and checks that the module is loaded and that devices may be
    /// read, failing with what to do otherwise.
    pub async fn connect() -> Result<Self, BackendError> {
        let devices = DeviceReader::probe().await?.ok_or_else(module_not_loaded)?;
        Ok(Self {
            links: Some(LinkReader::connect()?),
            devices,
            known: KnownLinks::default(),
        })
    }

    async fn read(&mut self, filter: &InterfaceFilter) -> Result<Snapshot, BackendError> {
        let reader = match &mut self.links {
            Some(r) if r.is_alive() => r,
            _ => self.links.insert(LinkReader::connect()?),
        };
        let links = match reader.links().await {
            Ok(links) => links,
            Err(e) => {
                self.links = None;
                return Err(e);
            }
        };
        let read = self
            .devices
            .read_listed(&links, filter, &mut self.known)
            .await?;
        let mut snapshot = Snapshot {
            interfaces: read.interfaces,
            unreadable: read.unreadable,
        };
        snapshot.normalize();
        Ok(snapshot)
    }
}

impl Backend for KernelBackend {
    fn name(&self) -> &'static str {
        "kernel"
    }

    fn poll<'a>(&'a mut self, _now: DateTime<Utc>, filter: &'a InterfaceFilter) -> PollFuture<'a> {
        Box::pin(self.read(filter))
    }
}

#[cfg(test)]
mod tests;
