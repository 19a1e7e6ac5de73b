//! Pure parser of a UAPI `get=1` reply (wireguard-go, boringtun) into an [`Interface`].
//!
//! The reply is `key=value` lines ending with `errno=N` and a blank line.
//! Interface keys come first (`private_key` or `own_public_key`, `listen_port`,
//! `fwmark`); each `public_key=` line starts a peer, and the peer keys that
//! follow belong to it. Unknown keys are ignored, so newer daemons still parse.
//!
//! Invariants:
//! - No I/O and no clock: the reply is fed to a [`Parser`] piece by piece
//!   as it arrives (or read from a [`BufRead`]), `now` is an argument.
//! - Secrets never leave this module. The interface's public key is derived
//!   from `private_key` with x25519 and the private bytes are wiped at once;
//!   a `preshared_key` is only checked for being non-zero. No error message
//!   or log ever contains the value of a key line.
//! - Lines are read in place from each piece (a spill buffer of at most
//!   [`MAX_LINE`] bytes only for a line split across two pieces): a line
//!   costs a scan, not an allocation, and the reply is never held whole.
//!
//! **Handshake times differ between implementations.** wireguard-go prints
//! the handshake as seconds and nanoseconds since the Unix epoch (`0`/`0` =
//! never). boringtun prints the time *elapsed since* the handshake, and drops
//! the lines once its sessions expire (missing = never). The reply is read as
//! boringtun's when it has `own_public_key`, or when it has no `private_key`
//! and no peer carries `protocol_version` (wireguard-go prints
//! `protocol_version=1` for every peer, boringtun never does). Anything else
//! is wireguard-go's format.

use std::io::BufRead;
use std::net::{SocketAddr, SocketAddrV6};

use chrono::{DateTime, TimeDelta, Utc};
use ipnet::IpNet;
use zeroize::Zeroizing;

use crate::model::{DriverKind, Interface, KeyError, Peer, PublicKey};

/// Longest excerpt of an offending (non-secret) value quoted in an error.
const MAX_QUOTED: usize = 64;

/// Why a UAPI reply could not be understood. Lines are numbered from 1.
/// Messages quote at most a short excerpt of an endpoint, allowed IP or
/// number, never the value of a key line.
#[derive(Debug, thiserror::Error)]
pub enum UapiParseError {
    /// The reply stopped (end of stream or blank line) before `errno=`.
    #[error("reply truncated at line {line}: no `errno=` line")]
    Truncated { line: usize },
    /// The daemon refused the request.
    #[error("line {line}: the daemon answered errno={errno}")]
    Errno { line: usize, errno: i64 },
    /// A line without `=`.
    #[error("line {line}: malformed line (no `=`)")]
    Malformed { line: usize },
    /// A line longer than any valid one ([`MAX_LINE`] bytes).
    #[error("line {line}: longer than {MAX_LINE} bytes")]
    TooLong { line: usize },
    /// A peer key before the first `public_key=` line.
    #[error("line {line}: `{key}` appears before any `public_key=` line")]
    OutsidePeer { line: usize, key: &'static str },
    /// A numeric value that does not parse or is out of range.
    #[error("line {line}: `{key}` has a bad number `{value}`")]
    BadNumber {
        line: usize,
        key: &'static str,
        value: String,
    },
    /// A key that is not 64 hex digits. The value is not quoted.
    #[error("line {line}: `{key}` is not a 64-digit hex key: {reason}")]
    BadKey {
        line: usize,
        key: &'static str,
        reason: KeyError,
    },
    /// An `endpoint` that is not `ip:port` or `[ipv6]:port`.
    #[error("line {line}: bad endpoint `{value}`")]
    BadEndpoint { line: usize, value: String },
    /// An `allowed_ip` that is not `address/prefix`.
    #[error("line {line}: bad allowed IP `{value}`")]
    BadCidr { line: usize, value: String },
    /// Reading the reply failed.
    #[error("reading the reply: {0}")]
    Io(#[from] std::io::Error),
}

impl UapiParseError {
    /// The 1-based line the error is about, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Truncated { line }
            | Self::Errno { line, .. }
            | Self::Malformed { line }
            | Self::TooLong { line }
            | Self::OutsidePeer { line, .. }
            | Self::BadNumber { line, .. }
            | Self::BadKey { line, .. }
            | Self::BadEndpoint { line, .. }
            | Self::BadCidr { line, .. } => Some(*line),
            Self::Io(_) => None,
        }
    }
}

/// Raw handshake lines of one peer, resolved once the format is known.
#[derive(Default, Clone, Copy)]
struct RawHandshake {
    sec: Option<u64>,
    nsec: Option<u64>,
    /// Line of the `sec` (or else `nsec`) value, for errors.
    line: usize,
}

/// Parses the reply of a UAPI `get=1` request for interface `name`.
///
/// `now` is the poll's wall-clock time; boringtun's relative handshake ages
/// are subtracted from it. See the module docs for how the format is told.
pub fn parse_interface(
    name: &str,
    mut reply: impl BufRead,
    now: DateTime<Utc>,
) -> Result<Interface, UapiParseError> {
    let mut parser = Parser::new(name, 0);
    loop {
        let available = reply.fill_buf()?;
        if available.is_empty() {
            break;
        }
        let n = available.len();
        let done = parser.feed(available)?;
        reply.consume(n);
        if done {
            break;
        }
    }
    parser.finish(now)
}

/// Longest line a reply may have. The longest valid one (an IPv6 endpoint
/// with a zone) is under 100 bytes; a longer line is garbage, and the bound
/// keeps the spill buffer from ever growing (growing would leave an unwiped
/// copy of a key line behind).
pub const MAX_LINE: usize = 4096;

/// A reply parsed as it arrives, in pieces of any size: a line split across
/// two pieces waits in a small wiped buffer, every other line is read in
/// place. No piece is kept, so parsing needs no more memory than the
/// interface it builds, however large the reply.
pub struct Parser {
    state: State,
    /// The start of a line whose end has not arrived yet; wiped on drop as
    /// it may hold a key line. Never grows beyond [`MAX_LINE`].
    spill: Zeroizing<Vec<u8>>,
    line_no: usize,
    done: bool,
}

/// Memory a [`Parser`] reuses from an earlier read of the same interface:
/// its peer list (given back by the caller once done with the interface)
/// and the parser's own scratch list. A poll at 65,536 peers then neither
/// allocates nor faults in fresh pages for them.
#[derive(Default)]
pub struct Reuse {
    pub peers: Vec<Peer>,
    handshakes: Vec<RawHandshake>,
}

impl std::fmt::Debug for Reuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reuse")
            .field("peers", &self.peers.capacity())
            .field("handshakes", &self.handshakes.capacity())
            .finish()
    }
}

impl Parser {
    /// A parser for interface `name`, with room for `peers` peers.
    pub fn new(name: &str, peers: usize) -> Self {
        Parser::reusing(
            name,
            Reuse {
                peers: Vec::with_capacity(peers),
                handshakes: Vec::with_capacity(peers),
            },
        )
    }

    /// A parser for interface `name` filling the lists of `reuse`.
    pub fn reusing(name: &str, reuse: Reuse) -> Self {
        let Reuse {
            mut peers,
            mut handshakes,
        } = reuse;
        peers.clear();
        handshakes.clear();
        // Peers given back or not, the last read's count is the size.
        peers.reserve(handshakes.capacity());
        Parser {
            state: State {
                iface: Interface {
                    name: name.to_owned(),
                    driver: DriverKind::Userspace,
                    peers,
                    ..Interface::default()
                },
                handshakes,
                saw_private_key: false,
                saw_own_public_key: false,
                saw_protocol_version: false,
            },
            spill: Zeroizing::new(Vec::with_capacity(MAX_LINE)),
            line_no: 0,
            done: false,
        }
    }

    /// Reads the next piece of the reply. `Ok(true)` once the `errno=0` line
    /// that ends it was read (anything after it is ignored).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<bool, UapiParseError> {
        while !self.done && !bytes.is_empty() {
            let Some(end) = memchr::memchr(b'\n', bytes) else {
                self.hold(bytes)?;
                break;
            };
            let flow = if self.spill.is_empty() {
                self.line_no += 1;
                // The same limit whether or not the line was cut in two.
                if end > MAX_LINE {
                    return Err(UapiParseError::TooLong { line: self.line_no });
                }
                self.state.line(&bytes[..end], self.line_no)
            } else {
                self.hold(&bytes[..end])?;
                self.line_no += 1;
                let flow = self.state.line(&self.spill, self.line_no);
                self.spill.clear();
                flow
            };
            bytes = &bytes[end + 1..];
            self.done = flow? == Flow::Done;
        }
        Ok(self.done)
    }

    /// Keeps the start of a line until its end arrives.
    fn hold(&mut self, part: &[u8]) -> Result<(), UapiParseError> {
        if self.spill.len() + part.len() > MAX_LINE {
            return Err(UapiParseError::TooLong {
                line: self.line_no + 1,
            });
        }
        self.spill.extend_from_slice(part); // within capacity: no copy left behind
        Ok(())
    }

    /// The interface, once the reply has ended (end of stream or its
    /// `errno=0` line). A last line without a newline still counts.
    pub fn finish(self, now: DateTime<Utc>) -> Result<Interface, UapiParseError> {
        self.finish_reusing(now).0
    }

    /// [`Parser::finish`], also giving back the memory to reuse for the
    /// next read (the peer list too if the read failed).
    pub fn finish_reusing(
        mut self,
        now: DateTime<Utc>,
    ) -> (Result<Interface, UapiParseError>, Reuse) {
        let ended = self.end();
        let mut handshakes = std::mem::take(&mut self.state.handshakes);
        let resolved = ended.and_then(|()| self.state.resolve(&handshakes, now));
        handshakes.clear();
        let iface = std::mem::take(&mut self.state.iface);
        match resolved {
            Ok(()) => (
                Ok(iface),
                Reuse {
                    peers: Vec::new(),
                    handshakes,
                },
            ),
            Err(e) => {
                let mut peers = iface.peers;
                peers.clear();
                (Err(e), Reuse { peers, handshakes })
            }
        }
    }

    /// Reads a last line without a newline; an error if the reply did not
    /// end with `errno=0`.
    fn end(&mut self) -> Result<(), UapiParseError> {
        if self.done {
            return Ok(());
        }
        self.line_no += 1;
        if self.spill.is_empty() {
            return Err(UapiParseError::Truncated { line: self.line_no });
        }
        let flow = self.state.line(&self.spill, self.line_no)?;
        if flow != Flow::Done {
            return Err(UapiParseError::Truncated {
                line: self.line_no + 1,
            });
        }
        Ok(())
    }
}

/// Whether the reply goes on after a line.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    More,
    Done,
}

/// What has been read so far.
struct State {
    iface: Interface,
    /// One per peer, in the same order.
    handshakes: Vec<RawHandshake>,
    saw_private_key: bool,
    saw_own_public_key: bool,
    saw_protocol_version: bool,
}

impl State {
    /// Applies one line (without its newline).
    fn line(&mut self, line: &[u8], line_no: usize) -> Result<Flow, UapiParseError> {
        if line.is_empty() {
            return Err(UapiParseError::Truncated { line: line_no });
        }
        let Some(eq) = memchr::memchr(b'=', line) else {
            // The line may be a garbled key line: never quote it.
            return Err(UapiParseError::Malformed { line: line_no });
        };
        let (key, value) = (&line[..eq], &line[eq + 1..]);
        let iface = &mut self.iface;

        match key {
            b"errno" => {
                let errno = parse_signed(value, line_no, "errno")?;
                if errno != 0 {
                    return Err(UapiParseError::Errno {
                        line: line_no,
                        errno,
                    });
                }
                return Ok(Flow::Done);
            }
            b"private_key" => {
                self.saw_private_key = true;
                iface.public_key = derive_public_key(value, line_no)?;
            }
            b"own_public_key" => {
                self.saw_own_public_key = true;
                iface.public_key = Some(parse_key(value, line_no, "own_public_key")?);
            }
            b"listen_port" => iface.listen_port = parse_num(value, line_no, "listen_port")?,
            b"fwmark" => iface.fwmark = parse_num(value, line_no, "fwmark")?,
            b"public_key" => {
                let public_key = parse_key(value, line_no, "public_key")?;
                iface.peers.push(Peer {
                    public_key,
                    ..Peer::default()
                });
                self.handshakes.push(RawHandshake::default());
            }
            _ => {
                let (Some(peer), Some(hs)) = (iface.peers.last_mut(), self.handshakes.last_mut())
                else {
                    if let Some(key) = peer_key_name(key) {
                        return Err(UapiParseError::OutsidePeer { line: line_no, key });
                    }
                    return Ok(Flow::More); // unknown interface-level key
                };
                match key {
                    b"preshared_key" => {
                        peer.has_preshared_key = preshared_key_is_set(value, line_no)?;
                    }
                    b"endpoint" => peer.endpoint = Some(parse_endpoint(value, line_no)?),
                    b"allowed_ip" => peer.allowed_ips.push(parse_cidr(value, line_no)?),
                    b"last_handshake_time_sec" => {
                        hs.sec = Some(parse_num(value, line_no, "last_handshake_time_sec")?);
                        hs.line = line_no;
                    }
                    b"last_handshake_time_nsec" => {
                        let nsec: u64 = parse_num(value, line_no, "last_handshake_time_nsec")?;
                        if nsec >= 1_000_000_000 {
                            return Err(bad_number(value, line_no, "last_handshake_time_nsec"));
                        }
                        hs.nsec = Some(nsec);
                        if hs.sec.is_none() {
                            hs.line = line_no;
                        }
                    }
                    b"rx_bytes" => peer.rx_bytes = parse_num(value, line_no, "rx_bytes")?,
                    b"tx_bytes" => peer.tx_bytes = parse_num(value, line_no, "tx_bytes")?,
                    b"persistent_keepalive_interval" => {
                        peer.persistent_keepalive =
                            parse_num(value, line_no, "persistent_keepalive_interval")?;
                    }
                    b"protocol_version" => {
                        let _: u32 = parse_num(value, line_no, "protocol_version")?;
                        self.saw_protocol_version = true;
                    }
                    _ => {} // unknown peer-level key
                }
            }
        }
        Ok(Flow::More)
    }

    /// Resolves handshake times (`handshakes`, one per peer) once the
    /// implementation is known.
    fn resolve(
        &mut self,
        handshakes: &[RawHandshake],
        now: DateTime<Utc>,
    ) -> Result<(), UapiParseError> {
        let relative =
            self.saw_own_public_key || (!self.saw_private_key && !self.saw_protocol_version);
        for (peer, hs) in self.iface.peers.iter_mut().zip(handshakes) {
            peer.last_handshake = resolve_handshake(hs, relative, now)?;
        }
        Ok(())
    }
}

/// Turns the raw handshake lines into a wall-clock time (see module docs).
fn resolve_handshake(
    hs: &RawHandshake,
    relative: bool,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, UapiParseError> {
    if hs.sec.is_none() && hs.nsec.is_none() {
        return Ok(None);
    }
    let sec = hs.sec.unwrap_or(0);
    let nsec = hs.nsec.unwrap_or(0);
    let out_of_range = || UapiParseError::BadNumber {
        line: hs.line,
        key: "last_handshake_time_sec",
        value: sec.to_string(),
    };
    let secs = i64::try_from(sec).map_err(|_| out_of_range())?;
    // nsec < 1e9 was checked while reading.
    let nanos = u32::try_from(nsec).map_err(|_| out_of_range())?;
    if relative {
        let age = TimeDelta::new(secs, nanos).ok_or_else(out_of_range)?;
        now.checked_sub_signed(age)
            .map(Some)
            .ok_or_else(out_of_range)
    } else if secs == 0 && nanos == 0 {
        Ok(None)
    } else {
        DateTime::from_timestamp(secs, nanos)
            .map(Some)
            .ok_or_else(out_of_range)
    }
}

/// The static name of a known peer-level key, for [`UapiParseError::OutsidePeer`].
fn peer_key_name(key: &[u8]) -> Option<&'static str> {
    const PEER_KEYS: [&str; 9] = [
        "preshared_key",
        "endpoint",
        "allowed_ip",
        "last_handshake_time_sec",
        "last_handshake_time_nsec",
        "rx_bytes",
        "tx_bytes",
        "persistent_keepalive_interval",
        "protocol_version",
    ];
    PEER_KEYS.into_iter().find(|k| k.as_bytes() == key)
}

/// Value of each ASCII hex digit; 0xff marks anything else.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Decodes a 64-digit hex key. The value is never quoted in the error.
fn decode_key(
    value: &[u8],
    line: usize,
    key: &'static str,
    out: &mut [u8; 32],
) -> Result<(), UapiParseError> {
    if value.len() != 64 {
        let reason = KeyError::Length(value.len() / 2);
        return Err(UapiParseError::BadKey { line, key, reason });
    }
    // Branch-free: any invalid digit sets a high bit in `invalid`.
    let mut invalid = 0u8;
    for (byte, pair) in out.iter_mut().zip(value.chunks_exact(2)) {
        let (hi, lo) = (
            HEX_VALUE[usize::from(pair[0])],
            HEX_VALUE[usize::from(pair[1])],
        );
        invalid |= hi | lo;
        *byte = (hi << 4) | (lo & 0x0f);
    }
    if invalid & 0xf0 != 0 {
        let reason = KeyError::Hex;
        return Err(UapiParseError::BadKey { line, key, reason });
    }
    Ok(())
}

fn parse_key(value: &[u8], line: usize, key: &'static str) -> Result<PublicKey, UapiParseError> {
    let mut out = [0u8; 32];
    decode_key(value, line, key, &mut out)?;
    Ok(PublicKey(out))
}

/// Derives the interface public key from wireguard-go's `private_key` line;
/// an all-zero key means "no key". The private bytes are wiped on return.
fn derive_public_key(value: &[u8], line: usize) -> Result<Option<PublicKey>, UapiParseError> {
    let mut private = Zeroizing::new([0u8; 32]);
    decode_key(value, line, "private_key", &mut private)?;
    if private.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    // StaticSecret wipes its copy on drop (x25519-dalek's `zeroize` feature).
    let secret = x25519_dalek::StaticSecret::from(*private);
    Ok(Some(PublicKey(
        x25519_dalek::PublicKey::from(&secret).to_bytes(),
    )))
}

/// Validates a `preshared_key` value and tells whether it is non-zero,
/// without decoding the key into memory.
fn preshared_key_is_set(value: &[u8], line: usize) -> Result<bool, UapiParseError> {
    let reason = if value.len() != 64 {
        KeyError::Length(value.len() / 2)
    } else {
        let digits = value
            .iter()
            .fold(0u8, |acc, &b| acc | HEX_VALUE[usize::from(b)]);
        if digits & 0xf0 == 0 {
            return Ok(digits != 0);
        }
        KeyError::Hex
    };
    Err(UapiParseError::BadKey {
        line,
        key: "preshared_key",
        reason,
    })
}

/// A short, printable excerpt of a non-secret value for error messages.
fn quote(value: &[u8]) -> String {
    let cut = &value[..value.len().min(MAX_QUOTED)];
    let mut s: String = String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.len() > MAX_QUOTED {
        s.push('…');
    }
    s
}

fn bad_number(value: &[u8], line: usize, key: &'static str) -> UapiParseError {
    UapiParseError::BadNumber {
        line,
        key,
        value: quote(value),
    }
}

/// Parses a decimal unsigned integer into `T` without allocating.
fn parse_num<T: TryFrom<u64>>(
    value: &[u8],
    line: usize,
    key: &'static str,
) -> Result<T, UapiParseError> {
    let mut n: u64 = 0;
    if value.is_empty() || value.len() > 20 {
        return Err(bad_number(value, line, key));
    }
    for &b in value {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return Err(bad_number(value, line, key));
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(digit)))
            .ok_or_else(|| bad_number(value, line, key))?;
    }
    T::try_from(n).map_err(|_| bad_number(value, line, key))
}

/// Parses `errno`, which may in principle be negative.
fn parse_signed(value: &[u8], line: usize, key: &'static str) -> Result<i64, UapiParseError> {
    match value.strip_prefix(b"-") {
        Some(rest) => parse_num::<i64>(rest, line, key).map(|n| -n),
        None => parse_num(value, line, key),
    }
}

/// Parses `1.2.3.4:5` or `[v6]:5`. wireguard-go may print an IPv6 zone as
/// an interface name (`[fe80::1%eth0]:5`); a name cannot be resolved without
/// I/O, so such a zone is dropped (scope id 0) rather than failing the read.
fn parse_endpoint(value: &[u8], line: usize) -> Result<SocketAddr, UapiParseError> {
    let bad = || UapiParseError::BadEndpoint {
        line,
        value: quote(value),
    };
    let s = std::str::from_utf8(value).map_err(|_| bad())?;
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = s
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("]:"))
        .ok_or_else(bad)?;
    let (ip, _zone) = host.split_once('%').ok_or_else(bad)?;
    let ip = ip.parse().map_err(|_| bad())?;
    let port = port.parse().map_err(|_| bad())?;
    Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)))
}

/// Parses `address/prefix`; the address is kept as printed (not masked).
fn parse_cidr(value: &[u8], line: usize) -> Result<IpNet, UapiParseError> {
    let parsed = std::str::from_utf8(value).ok().and_then(|s| {
        let (addr, prefix) = s.split_once('/')?;
        let prefix = parse_num::<u8>(prefix.as_bytes(), line, "allowed_ip").ok()?;
        IpNet::new(addr.parse().ok()?, prefix).ok()
    });
    parsed.ok_or_else(|| UapiParseError::BadCidr {
        line,
        value: quote(value),
    })
}

/// The throwaway private key of [`generate_wireguard_go_reply`] (hex).
#[doc(hidden)]
pub const GENERATED_PRIVATE_KEY_HEX: &str =
    "a8b3ad1d1c3e7d5e1fb4bf8a0d5b1f4a6a4a3b7c1d2e3f405162738495a6b74f";

/// The peer number `i` of [`generate_wireguard_go_reply`]: a mix of IPv4,
/// IPv6 and missing endpoints, never-handshaken peers, preshared keys and
/// keepalives, with unique keys and allowed IPs.
#[doc(hidden)]
pub fn generated_peer(i: usize) -> Peer {
    let n = u32::try_from(i).unwrap_or(u32::MAX);
    let mut key = [0xa5u8; 32];
    key[..4].copy_from_slice(&n.to_be_bytes());
    let [_, _, hi, lo] = n.to_be_bytes();
    let endpoint = match i % 10 {
        9 => None,
        4 => Some(SocketAddr::from((
            std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, hi.into(), lo.into()),
            51820,
        ))),
        _ => Some(SocketAddr::from((
            [198, 51, hi, lo],
            10_000 + (n % 50_000) as u16,
        ))),
    };
    let allowed_ips = vec![
        IpNet::from(ipnet::Ipv4Net::new([10, hi, lo, 1].into(), 32).unwrap_or_default()),
        IpNet::from(
            ipnet::Ipv6Net::new(
                std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, hi.into(), lo.into()),
                128,
            )
            .unwrap_or_default(),
        ),
    ];
    let last_handshake = (i % 4 != 3)
        .then(|| {
            DateTime::from_timestamp(1_700_000_000 + i64::from(n), (n * 1_000) % 1_000_000_000)
        })
        .flatten();
    Peer {
        public_key: PublicKey(key),
        endpoint,
        allowed_ips: allowed_ips.into(),
        persistent_keepalive: if i.is_multiple_of(2) { 25 } else { 0 },
        has_preshared_key: i.is_multiple_of(3),
        last_handshake,
        rx_bytes: u64::from(n) * 7,
        tx_bytes: u64::from(n) * 3,
    }
}

/// A wireguard-go style `get=1` reply with `peers` peers ([`generated_peer`]),
/// for scale tests and benchmarks.
#[doc(hidden)]
pub fn generate_wireguard_go_reply(peers: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(120 + peers * 420);
    // Writing into a String cannot fail.
    let _ = writeln!(
        out,
        "private_key={GENERATED_PRIVATE_KEY_HEX}\nlisten_port=51820"
    );
    for i in 0..peers {
        let p = generated_peer(i);
        let psk = if p.has_preshared_key { "5a" } else { "00" };
        let _ = writeln!(
            out,
            "public_key={}\npreshared_key={}\nprotocol_version=1",
            hex::encode(p.public_key.0),
            psk.repeat(32)
        );
        if let Some(ep) = p.endpoint {
            let _ = writeln!(out, "endpoint={ep}");
        }
        let (sec, nsec) = p
            .last_handshake
            .map_or((0, 0), |t| (t.timestamp(), t.timestamp_subsec_nanos()));
        let _ = writeln!(
            out,
            "last_handshake_time_sec={sec}\nlast_handshake_time_nsec={nsec}\ntx_bytes={}\nrx_bytes={}\npersistent_keepalive_interval={}",
            p.tx_bytes, p.rx_bytes, p.persistent_keepalive
        );
        for ip in &p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={ip}");
        }
    }
    out.push_str("errno=0\n\n");
    out
}

#[cfg(test)]
mod tests;
