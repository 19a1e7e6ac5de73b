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
//! - An interface that vanished between the link dump and its own dump
//!   (`ENODEV`) is left out; one that exists but cannot be read goes to
//!   [`Snapshot::unreadable`].
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

use super::netlink_decode::{decode_device_bytes, decode_family_reply, DecodeError};
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
}

impl GenlError {
    fn errno(&self) -> Option<i32> {
        match self {
            GenlError::Decode(e) => e.errno(),
            _ => None,
        }
    }

    /// Whether the socket may hold unread replies or be broken.
    fn poisons_socket(&self) -> bool {
        !matches!(self, GenlError::Decode(DecodeError::Kernel { .. }))
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

    /// `WG_CMD_GET_DEVICE` as a dump; `ifindex: None` sends no device
    /// selector at all (used to probe permissions).
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

    /// Reads one interface: `Ok(None)` if it no longer exists.
    async fn read_device(&mut self, ifindex: u32) -> Result<Option<Interface>, GenlError> {
        let mut interrupted = 0;
        let mut refreshed_family = false;
        loop {
            let had_family = self.family.is_some();
            let result = self.dump_device(Some(ifindex)).await.and_then(|mut bytes| {
                let decoded = decode_device_bytes(&bytes);
                // The reply holds the private key; do not leave it in freed memory.
                bytes.fill(0);
                decoded.map_err(GenlError::from)
            });
            match result {
                Ok(iface) => return Ok(Some(iface)),
                Err(GenlError::Decode(DecodeError::Interrupted)) => {
                    interrupted += 1;
                    if interrupted >= DUMP_ATTEMPTS {
                        return Err(DecodeError::Interrupted.into());
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
                    self.family = None;
                }
                Err(e) => return Err(e),
            }
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
        let mut socket = GenlSocket::open().map_err(|source| BackendError::Io {
            context: "opening a generic netlink socket".into(),
            source,
        })?;
        match socket.family().await {
            Ok(_) => {}
            Err(e) if e.errno() == Some(ENOENT) => return Ok(None),
            Err(e) => return Err(probe_error(e)),
        }
        // Resolving a family needs no privilege; dumping devices needs
        // CAP_NET_ADMIN, checked by the kernel before it looks at the
        // request. A dump naming no device fails with EPERM without the
        // capability and with another error (EBADR, EINVAL) with it.
        match socket.dump_device(None).await {
            Ok(_) => {}
            Err(e) if e.errno().is_some_and(is_permission_errno) => {
                return Err(needs_cap_net_admin())
            }
            Err(e) if e.errno().is_some() => {}
            Err(e) => return Err(probe_error(e)),
        }
        Ok(Some(Self {
            socket: Some(socket),
        }))
    }

    /// Dumps each link (which should be of kind `wireguard`). `Err` only when
    /// nothing can be read: module gone or permission denied.
    pub async fn read(&mut self, links: &[&Link]) -> Result<KernelRead, BackendError> {
        let mut out = KernelRead::default();
        for link in links {
            let socket = match &mut self.socket {
                Some(s) => s,
                None => {
                    self.socket
                        .insert(GenlSocket::open().map_err(|source| BackendError::Io {
                            context: "opening a generic netlink socket".into(),
                            source,
                        })?)
                }
            };
            match socket.read_device(link.index).await {
                Ok(Some(mut iface)) => {
                    iface.mtu = link.mtu;
                    iface.addresses = link.addresses.clone();
                    out.interfaces.push(iface);
                }
                Ok(None) => {
                    tracing::debug!(interface = %link.name, "interface vanished before it could be read");
                }
                Err(e) if e.errno().is_some_and(is_permission_errno) => {
                    return Err(needs_cap_net_admin())
                }
                Err(e) if e.errno() == Some(ENOENT) && socket.family.is_none() => {
                    // The family could not be resolved again: module unloaded.
                    return Err(module_not_loaded());
                }
                Err(e) => {
                    tracing::warn!(interface = %link.name, error = %e, "could not read interface");
                    if e.poisons_socket() {
                        self.socket = None;
                    }
                    out.unreadable.push(link.name.clone());
                }
            }
        }
        Ok(out)
    }
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
}

impl KernelBackend {
    /// Connects and checks that the module is loaded and that devices may be
    /// read, failing with what to do otherwise.
    pub async fn connect() -> Result<Self, BackendError> {
        let devices = DeviceReader::probe().await?.ok_or_else(module_not_loaded)?;
        Ok(Self {
            links: Some(LinkReader::connect()?),
            devices,
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
        let wanted: Vec<&Link> = links
            .iter()
            .filter(|l| l.wireguard && filter.allows(&l.name))
            .collect();
        let read = self.devices.read(&wanted).await?;
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
mod tests {
    use netlink_packet_core::NLM_F_MULTIPART;

    use super::*;
    use crate::model::DriverKind;

    /// Whether the kernel has the `wireguard` family, asked through the
    /// `genetlink` crate: an oracle independent of the code under test.
    async fn family_registered() -> bool {
        let (connection, handle, _) = genetlink::new_connection().unwrap();
        let task = tokio::spawn(connection);
        let found = match handle.resolve_family::<WireguardMessage>().await {
            Ok(_) => true,
            Err(genetlink::GenetlinkError::NetlinkError(e)) if e.raw_os_error() == Some(ENOENT) => {
                false
            }
            Err(e) => panic!("cannot ask the kernel for the wireguard family: {e}"),
        };
        task.abort();
        found
    }

    /// Whether this process holds CAP_NET_ADMIN (bit 12 of CapEff).
    fn has_cap_net_admin() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap()
            .trim();
        u64::from_str_radix(hex, 16).unwrap() & (1 << 12) != 0
    }

    #[tokio::test]
    async fn connect_fails_clearly_when_the_module_is_missing() {
        let registered = family_registered().await;
        let result = KernelBackend::connect().await;
        match (registered, has_cap_net_admin()) {
            (false, _) => {
                let e = result.unwrap_err();
                assert_eq!(
                    e.to_string(),
                    "the wireguard kernel module is not loaded: run `modprobe wireguard`, \
                     or set monitor.backend to userspace"
                );
            }
            (true, true) => {
                let backend = result.unwrap();
                assert_eq!(backend.name(), "kernel");
            }
            (true, false) => {
                let e = result.unwrap_err();
                assert_eq!(e.to_string(), needs_cap_net_admin().to_string());
            }
        }
        assert_eq!(
            DeviceReader::probe().await.map(|r| r.is_some()).ok(),
            match (registered, has_cap_net_admin()) {
                (false, _) => Some(false),
                (true, true) => Some(true),
                (true, false) => None,
            }
        );
    }

    #[test]
    fn unavailable_errors_say_what_to_do() {
        assert_eq!(
            needs_cap_net_admin().to_string(),
            "reading WireGuard devices needs CAP_NET_ADMIN: run as root or grant CAP_NET_ADMIN \
             (AmbientCapabilities=CAP_NET_ADMIN)"
        );
        assert!(matches!(
            module_not_loaded(),
            BackendError::Unavailable { .. }
        ));
    }

    #[tokio::test]
    async fn one_socket_serves_many_requests_and_dumps() {
        let mut socket = GenlSocket::open().unwrap();
        // nlctrl always has the fixed id 0x10.
        assert_eq!(socket.resolve("nlctrl").await.unwrap(), 0x10);
        let missing = socket.resolve("wghook-nofamily").await.unwrap_err();
        assert_eq!(missing.errno(), Some(ENOENT));
        // A dump of all families: many messages, collected up to NLMSG_DONE.
        let mut genl = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![],
        });
        genl.finalize();
        let mut msg = NetlinkMessage::from(genl);
        msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let dump = socket.request(msg, true).await.unwrap();
        let mut offset = 0;
        let mut kinds = Vec::new();
        while offset < dump.len() {
            let nl = NetlinkBuffer::new_checked(&dump[offset..]).unwrap();
            assert_eq!(nl.sequence_number(), socket.seq);
            kinds.push(nl.message_type());
            if nl.message_type() != NLMSG_DONE {
                assert_ne!(nl.flags() & NLM_F_MULTIPART, 0);
            }
            offset += (nl.length() as usize + 3) & !3;
        }
        assert_eq!(kinds.last(), Some(&NLMSG_DONE));
        assert!(kinds.len() > 2, "{kinds:?}");
        // The same socket still answers afterwards.
        assert_eq!(socket.resolve("nlctrl").await.unwrap(), 0x10);
    }

    #[tokio::test]
    async fn a_stale_family_id_is_resolved_again() {
        let registered = family_registered().await;
        let mut socket = GenlSocket::open().unwrap();
        // An id no family has: what the kernel says after a module reload.
        socket.family = Some(0xfff0);
        let lo = 1;
        let e = socket.read_device(lo).await.unwrap_err();
        if registered {
            // Resolved again, then the dump reached the module, which
            // refuses `lo` (not a WireGuard device) or the caller.
            assert_ne!(socket.family, Some(0xfff0));
            assert!(e.errno().is_some(), "{e}");
        } else {
            // The cache was cleared and the family looked up again: gone.
            assert_eq!(socket.family, None);
            assert_eq!(e.errno(), Some(ENOENT));
        }
    }

    #[tokio::test]
    async fn link_reader_lists_loopback_with_mtu_and_addresses() {
        let reader = LinkReader::connect().unwrap();
        let links = reader.links().await.unwrap();
        let lo = links.iter().find(|l| l.name == "lo").expect("lo is listed");
        assert_eq!(lo.index, 1);
        assert!(!lo.wireguard);
        assert!(lo.mtu.is_some_and(|m| m > 0));
        assert!(
            lo.addresses.contains(&"127.0.0.1/8".parse().unwrap()),
            "{:?}",
            lo.addresses
        );
        // Reused for a second poll.
        assert_eq!(reader.links().await.unwrap().len(), links.len());
        assert!(reader.is_alive());
    }

    #[test]
    fn links_fill_mtu_and_addresses_by_name() {
        let links = vec![
            Link {
                index: 4,
                name: "wg0".into(),
                mtu: Some(1420),
                wireguard: false,
                addresses: vec![
                    "10.8.0.1/24".parse().unwrap(),
                    "fd00:8::1/64".parse().unwrap(),
                ],
            },
            Link {
                index: 5,
                name: "eth0".into(),
                mtu: Some(1500),
                wireguard: false,
                addresses: vec![],
            },
        ];
        let mut ifaces = vec![
            Interface {
                name: "wg0".into(),
                driver: DriverKind::Userspace,
                ..Interface::default()
            },
            Interface {
                name: "wg1".into(),
                ..Interface::default()
            },
        ];
        apply_links(&mut ifaces, &links);
        assert_eq!(ifaces[0].mtu, Some(1420));
        assert_eq!(ifaces[0].addresses, links[0].addresses);
        assert_eq!(ifaces[0].driver, DriverKind::Userspace);
        assert_eq!((ifaces[1].mtu, ifaces[1].addresses.len()), (None, 0));
    }
}
