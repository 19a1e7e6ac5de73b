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

impl Parser {
    /// A parser for interface `name`, with room for `peers` peers (the count
    /// of the last poll: no reallocation while the reply is read).
    pub fn new(name: &str, peers: usize) -> Self {
        Parser {
            state: State {
                iface: Interface {
                    name: name.to_owned(),
                    driver: DriverKind::Userspace,
                    peers: Vec::with_capacity(peers),
                    ..Interface::default()
                },
                handshakes: Vec::with_capacity(peers),
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
            self.line_no += 1;
            let flow = if self.spill.is_empty() {
                self.state.line(&bytes[..end], self.line_no)
            } else {
                self.hold(&bytes[..end])?;
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
    pub fn finish(mut self, now: DateTime<Utc>) -> Result<Interface, UapiParseError> {
        if !self.done {
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
        }
        self.state.finish(now)
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

    /// Resolves handshake times once the implementation is known.
    fn finish(mut self, now: DateTime<Utc>) -> Result<Interface, UapiParseError> {
        let relative =
            self.saw_own_public_key || (!self.saw_private_key && !self.saw_protocol_version);
        for (peer, hs) in self.iface.peers.iter_mut().zip(&self.handshakes) {
            peer.last_handshake = resolve_handshake(hs, relative, now)?;
        }
        Ok(self.iface)
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
mod tests {
    use super::*;

    /// When the boringtun fixture was captured (its ages are relative to this).
    const BORINGTUN_CAPTURED_AT: i64 = 1_795_418_410;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/uapi/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn parse(name: &str) -> Result<Interface, UapiParseError> {
        parse_at(
            &fixture(name),
            DateTime::from_timestamp(BORINGTUN_CAPTURED_AT, 0).unwrap(),
        )
    }

    fn parse_at(reply: &[u8], now: DateTime<Utc>) -> Result<Interface, UapiParseError> {
        parse_interface("wgtest", reply, now)
    }

    fn parse_str(reply: &str) -> Result<Interface, UapiParseError> {
        parse_at(
            reply.as_bytes(),
            DateTime::from_timestamp(BORINGTUN_CAPTURED_AT, 0).unwrap(),
        )
    }

    fn key(b64: &str) -> PublicKey {
        PublicKey::from_base64(b64).unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn at(secs: i64, nanos: u32) -> Option<DateTime<Utc>> {
        Some(DateTime::from_timestamp(secs, nanos).unwrap())
    }

    fn iface(
        public_key: Option<&str>,
        listen_port: u16,
        fwmark: u32,
        peers: Vec<Peer>,
    ) -> Interface {
        Interface {
            name: "wgtest".into(),
            public_key: public_key.map(key),
            listen_port,
            fwmark,
            driver: DriverKind::Userspace,
            addresses: vec![],
            mtu: None,
            peers,
        }
    }

    #[test]
    fn wireguard_go_handshaken_and_never_handshaken_peers() {
        let expected = iface(
            // Derived from the throwaway private key in the fixture.
            Some("XQVMadQs9uGgBKtnYhlnjh2tCAoag2X4DZi2VUXJ61Y="),
            51820,
            0x1234,
            vec![
                Peer {
                    public_key: key("zMuF7xg6r7JWxjuclLxovy/IvFjMK89cn0PTmbCd0hQ="),
                    endpoint: Some("192.0.2.2:51821".parse().unwrap()),
                    allowed_ips: nets(&["10.77.0.2/32", "10.77.2.0/24", "10.77.3.0/24"]).into(),
                    persistent_keepalive: 25,
                    has_preshared_key: true,
                    last_handshake: at(1_795_418_316, 520_221_260),
                    rx_bytes: 860,
                    tx_bytes: 1096,
                },
                Peer {
                    public_key: key("ZqcHV3fAWQLNxH2S+I0g30s239YQImjtOWDp82f1200="),
                    endpoint: None,
                    allowed_ips: nets(&["10.77.9.0/24"]).into(),
                    persistent_keepalive: 0,
                    has_preshared_key: false,
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                },
            ],
        );
        assert_eq!(parse("wireguard-go-two-peers.txt").unwrap(), expected);
    }

    #[test]
    fn wireguard_go_ipv6_endpoint_and_allowed_ips() {
        let expected = iface(
            Some("AAcODPQgYARPdYraSWcB8Hf2f/4gnBzIA1/KGyspKCo="),
            51831,
            0,
            vec![Peer {
                public_key: key("+hK2jdeM9NGTYvKxrJPFs59IVOpjgrfRyAeTr673JUg="),
                endpoint: Some("[2001:db8::1]:51830".parse().unwrap()),
                allowed_ips: nets(&["fd77:6::1/128", "10.78.0.0/16"]).into(),
                persistent_keepalive: 15,
                has_preshared_key: true,
                last_handshake: at(1_795_418_321, 920_457_545),
                rx_bytes: 956,
                tx_bytes: 1340,
            }],
        );
        assert_eq!(parse("wireguard-go-ipv6.txt").unwrap(), expected);
    }

    #[test]
    fn wireguard_go_without_peers_or_key() {
        assert_eq!(
            parse("wireguard-go-no-peers.txt").unwrap(),
            iface(
                Some("Jwfkpks7mcJh+GAtMInb3c+XUcmCNTvNpNTaaS7nWl8="),
                51840,
                0,
                vec![]
            )
        );
        assert_eq!(
            parse("wireguard-go-unconfigured.txt").unwrap(),
            iface(None, 46493, 0, vec![])
        );
    }

    #[test]
    fn boringtun_handshake_is_relative_to_now_and_missing_means_never() {
        let expected = iface(
            Some("L7jhqSF2qrEi5ad+s6KXEfXREOIXb6szHuMwjf1oBT8="),
            51850,
            66,
            vec![
                Peer {
                    public_key: key("SNOhrLKWCoyHWi2YLZ29D7foKJUH+eKz3I4MEdQzNwY="),
                    endpoint: Some("192.0.2.1:51851".parse().unwrap()),
                    allowed_ips: nets(&["10.79.0.1/32", "10.79.5.0/24"]).into(),
                    persistent_keepalive: 20,
                    has_preshared_key: true,
                    // last_handshake_time_sec=3, _nsec=414100603 before "now".
                    last_handshake: at(BORINGTUN_CAPTURED_AT - 4, 585_899_397),
                    rx_bytes: 252,
                    tx_bytes: 252,
                },
                Peer {
                    public_key: key("ufH97YLZ1ADb31MDmSXGojvM8GmGHejWs4epcwliNzk="),
                    endpoint: Some("[2001:db8::99]:51999".parse().unwrap()),
                    allowed_ips: nets(&["fd79::/64"]).into(),
                    // boringtun 0.7.1 carried the first peer's keepalive and
                    // preshared key over to the second one set in the same `wg set`.
                    persistent_keepalive: 20,
                    has_preshared_key: true,
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                },
            ],
        );
        assert_eq!(parse("boringtun-two-peers.txt").unwrap(), expected);

        // The same reply read a minute later: the age is taken from the new now.
        let later = DateTime::from_timestamp(BORINGTUN_CAPTURED_AT + 60, 0).unwrap();
        let parsed = parse_at(&fixture("boringtun-two-peers.txt"), later).unwrap();
        assert_eq!(
            parsed.peers[0].last_handshake,
            at(BORINGTUN_CAPTURED_AT + 56, 585_899_397)
        );
    }

    #[test]
    fn boringtun_without_peers_or_key() {
        assert_eq!(
            parse("boringtun-no-peers.txt").unwrap(),
            iface(
                Some("ufH97YLZ1ADb31MDmSXGojvM8GmGHejWs4epcwliNzk="),
                51860,
                0,
                vec![]
            )
        );
        assert_eq!(
            parse("boringtun-unconfigured.txt").unwrap(),
            iface(None, 50869, 0, vec![])
        );
    }

    const PEER_HEX: &str = "cccb85ef183aafb256c63b9c94bc68bf2fc8bc58cc2bcf5c9f43d399b09dd214";

    #[test]
    fn keyless_reply_is_wireguard_go_when_peers_carry_protocol_version() {
        // wireguard-go with peers but no private key yet: 0/0 still means never.
        let reply = format!(
            "listen_port=1\npublic_key={PEER_HEX}\nprotocol_version=1\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\nerrno=0\n\n"
        );
        assert_eq!(parse_str(&reply).unwrap().peers[0].last_handshake, None);
        // Without protocol_version (boringtun), the same lines mean "just now".
        let reply = format!(
            "listen_port=1\npublic_key={PEER_HEX}\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\nerrno=0\n\n"
        );
        assert_eq!(
            parse_str(&reply).unwrap().peers[0].last_handshake,
            at(BORINGTUN_CAPTURED_AT, 0)
        );
    }

    #[test]
    fn unknown_keys_are_ignored_anywhere() {
        let original = fixture("wireguard-go-two-peers.txt");
        let text = std::str::from_utf8(&original).unwrap();
        let mut with_unknown = String::from("future_interface_key=abc\n");
        for line in text.lines() {
            with_unknown.push_str(line);
            with_unknown.push('\n');
            if line.starts_with("public_key=") {
                with_unknown.push_str("future_peer_key=1=2\nx=\n");
            }
        }
        assert_eq!(
            parse_str(&with_unknown).unwrap(),
            parse("wireguard-go-two-peers.txt").unwrap()
        );
    }

    #[test]
    fn lines_split_across_reader_buffers_parse_the_same() {
        let reply = fixture("wireguard-go-two-peers.txt");
        let now = DateTime::from_timestamp(BORINGTUN_CAPTURED_AT, 0).unwrap();
        let whole = parse_interface("wgtest", &reply[..], now).unwrap();
        for capacity in [1, 7, 64] {
            let small = std::io::BufReader::with_capacity(capacity, &reply[..]);
            assert_eq!(
                parse_interface("wgtest", small, now).unwrap(),
                whole,
                "{capacity}"
            );
        }
        let truncated = fixture("broken-truncated.txt");
        let err = parse_interface(
            "wgtest",
            std::io::BufReader::with_capacity(5, &truncated[..]),
            now,
        )
        .unwrap_err();
        assert!(
            matches!(err, UapiParseError::Truncated { line: 13 }),
            "{err:?}"
        );
    }

    /// The daemon's reader feeds pieces of whatever size the socket gives:
    /// lines cut anywhere parse as the whole, the spill buffer never grows
    /// (growing would leave an unwiped copy of a key line), and a line
    /// longer than any valid one is an error, not a buffer without end.
    #[test]
    fn a_reply_fed_in_pieces_parses_as_the_whole() {
        let text = generate_wireguard_go_reply(3_000);
        let whole = parse_interface("wg0", text.as_bytes(), now_fixed()).unwrap();
        assert_eq!(whole.peers.len(), 3_000);
        for sizes in [[1, 2, 3], [63, 64, 65], [4_999, 65_536, 17]] {
            let mut parser = Parser::new("wg0", 10);
            let mut rest = text.as_bytes();
            let mut done = false;
            for i in 0.. {
                let n = sizes[i % 3].min(rest.len());
                done = parser.feed(&rest[..n]).unwrap();
                rest = &rest[n..];
                assert!(parser.spill.capacity() == MAX_LINE);
                if done || rest.is_empty() {
                    break;
                }
            }
            assert!(done, "{sizes:?}");
            assert_eq!(parser.finish(now_fixed()).unwrap(), whole, "{sizes:?}");
        }

        let mut parser = Parser::new("wg0", 0);
        parser.feed(b"listen_port=1\nfwmark=").unwrap();
        let err = parser.feed(&[b'1'; MAX_LINE]).unwrap_err();
        assert!(
            matches!(err, UapiParseError::TooLong { line: 2 }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "line 2: longer than 4096 bytes");
    }

    fn now_fixed() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn reply_may_end_right_after_errno() {
        let parsed = parse_str("listen_port=7\nerrno=0\n").unwrap();
        assert_eq!(parsed.listen_port, 7);
    }

    #[test]
    fn ipv6_zones_are_kept_when_numeric_and_dropped_when_named() {
        let numeric = parse_endpoint(b"[fe80::1%3]:51820", 1).unwrap();
        let SocketAddr::V6(v6) = numeric else {
            panic!("{numeric}")
        };
        assert_eq!(v6.scope_id(), 3);
        let named = parse_endpoint(b"[fe80::1%eth0]:51820", 1).unwrap();
        assert_eq!(named, "[fe80::1]:51820".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn truncated_fixture_is_an_error_at_its_end() {
        let err = parse("broken-truncated.txt").unwrap_err();
        assert!(
            matches!(err, UapiParseError::Truncated { line: 13 }),
            "{err:?}"
        );
        // A blank line before errno is truncation too.
        let err = parse_str("listen_port=1\n\nerrno=0\n\n").unwrap_err();
        assert!(
            matches!(err, UapiParseError::Truncated { line: 2 }),
            "{err:?}"
        );
        let err = parse_str("").unwrap_err();
        assert!(
            matches!(err, UapiParseError::Truncated { line: 1 }),
            "{err:?}"
        );
    }

    #[test]
    fn garbled_fixture_names_the_line_without_quoting_it() {
        let err = parse("broken-garbled.txt").unwrap_err();
        assert!(
            matches!(err, UapiParseError::Malformed { line: 8 }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "line 8: malformed line (no `=`)");
    }

    #[test]
    fn errno_fixture_is_an_error() {
        let err = parse("broken-errno.txt").unwrap_err();
        assert!(
            matches!(err, UapiParseError::Errno { line: 1, errno: 1 }),
            "{err:?}"
        );
        let err = parse_str("errno=-22\n\n").unwrap_err();
        assert!(
            matches!(err, UapiParseError::Errno { errno: -22, .. }),
            "{err:?}"
        );
    }

    type ErrorCheck = fn(&UapiParseError) -> bool;

    #[test]
    fn each_bad_value_is_reported_with_its_line() {
        let peer = format!("public_key={PEER_HEX}\n");
        let cases: Vec<(String, ErrorCheck)> = vec![
            ("listen_port=70000\n".into(), |e| {
                matches!(
                    e,
                    UapiParseError::BadNumber {
                        line: 1,
                        key: "listen_port",
                        ..
                    }
                )
            }),
            (format!("{peer}rx_bytes=12x\n"), |e| {
                matches!(
                    e,
                    UapiParseError::BadNumber {
                        line: 2,
                        key: "rx_bytes",
                        ..
                    }
                )
            }),
            (
                format!("{peer}last_handshake_time_nsec=1000000000\n"),
                |e| matches!(e, UapiParseError::BadNumber { line: 2, .. }),
            ),
            (
                format!("{peer}last_handshake_time_sec=99999999999999999\nerrno=0\n"),
                |e| matches!(e, UapiParseError::BadNumber { line: 2, .. }),
            ),
            ("errno=\n".into(), |e| {
                matches!(e, UapiParseError::BadNumber { line: 1, .. })
            }),
            ("public_key=abcd\n".into(), |e| {
                matches!(
                    e,
                    UapiParseError::BadKey {
                        line: 1,
                        key: "public_key",
                        reason: KeyError::Length(2)
                    }
                )
            }),
            (format!("own_public_key={}\n", "zz".repeat(32)), |e| {
                matches!(
                    e,
                    UapiParseError::BadKey {
                        line: 1,
                        key: "own_public_key",
                        reason: KeyError::Hex
                    }
                )
            }),
            (format!("{peer}endpoint=192.0.2.1\n"), |e| {
                matches!(e, UapiParseError::BadEndpoint { line: 2, .. })
            }),
            (format!("{peer}endpoint=[::1:5\n"), |e| {
                matches!(e, UapiParseError::BadEndpoint { line: 2, .. })
            }),
            (format!("{peer}allowed_ip=10.0.0.0/33\n"), |e| {
                matches!(e, UapiParseError::BadCidr { line: 2, .. })
            }),
            (format!("{peer}allowed_ip=10.0.0.1\n"), |e| {
                matches!(e, UapiParseError::BadCidr { line: 2, .. })
            }),
            ("endpoint=192.0.2.1:5\n".into(), |e| {
                matches!(
                    e,
                    UapiParseError::OutsidePeer {
                        line: 1,
                        key: "endpoint"
                    }
                )
            }),
        ];
        for (reply, check) in cases {
            let err = parse_str(&reply).unwrap_err();
            assert!(check(&err), "{reply:?} gave {err:?}");
            assert_eq!(
                err.line(),
                Some(
                    err.to_string()[5..]
                        .split(':')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap()
                )
            );
        }
    }

    #[test]
    fn errors_on_secret_lines_never_contain_the_secret() {
        // Distinctive hex that must not appear in any message.
        let secret = "deadbeefcafef00d".repeat(4);
        let short = &secret[..62];
        let peer = format!("public_key={PEER_HEX}\n");
        let replies = [
            format!("private_key={short}\n"),
            format!("private_key={}x\n", &secret[..63]),
            format!("{peer}preshared_key={short}\n"),
            format!("{peer}preshared_key={}x\n", &secret[..63]),
            format!("{secret}\n"),
            format!("private_key{secret}\n"),
        ];
        for reply in replies {
            let err = parse_str(&reply).unwrap_err();
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains("deadbeef"), "{reply:?} leaked: {shown}");
            }
        }
    }

    #[test]
    fn all_zero_private_key_means_no_key() {
        let reply = format!("private_key={}\nerrno=0\n", "0".repeat(64));
        assert_eq!(parse_str(&reply).unwrap().public_key, None);
    }

    #[test]
    fn ten_thousand_generated_peers_parse_exactly() {
        let reply = generate_wireguard_go_reply(10_000);
        let parsed = parse_str(&reply).unwrap();
        assert_eq!(parsed.listen_port, 51820);
        let secret = x25519_dalek::StaticSecret::from(
            <[u8; 32]>::try_from(hex::decode(GENERATED_PRIVATE_KEY_HEX).unwrap()).unwrap(),
        );
        assert_eq!(
            parsed.public_key,
            Some(PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes()))
        );
        assert_eq!(parsed.peers.len(), 10_000);
        for (i, peer) in parsed.peers.iter().enumerate() {
            assert_eq!(*peer, generated_peer(i), "peer {i}");
        }
        // The mix covers every shape the generator can produce.
        assert!(parsed.peers.iter().any(|p| p.last_handshake.is_none()));
        assert!(parsed.peers.iter().any(|p| p.endpoint.is_none()));
        assert!(parsed
            .peers
            .iter()
            .any(|p| p.endpoint.is_some_and(|e| e.is_ipv6())));
        assert!(parsed.peers.iter().any(|p| !p.has_preshared_key));
    }
}
