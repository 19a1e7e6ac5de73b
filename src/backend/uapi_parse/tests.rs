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

fn iface(public_key: Option<&str>, listen_port: u16, fwmark: u32, peers: Vec<Peer>) -> Interface {
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

    // The same line in one piece is just as long (the fuzz target found
    // the whole reply accepted what the reply in pieces refused).
    let long = format!("listen_port=1\nx={}\nerrno=0\n\n", "1".repeat(MAX_LINE));
    let err = parse_interface("wg0", long.as_bytes(), now_fixed()).unwrap_err();
    assert!(
        matches!(err, UapiParseError::TooLong { line: 2 }),
        "{err:?}"
    );
    // Cut after its start, the line is still line 2.
    let mut parser = Parser::new("wg0", 0);
    parser.feed(&long.as_bytes()[..20]).unwrap();
    let err = parser.feed(&long.as_bytes()[20..]).unwrap_err();
    assert!(
        matches!(err, UapiParseError::TooLong { line: 2 }),
        "{err:?}"
    );
    let fits = format!("listen_port=1\nx={}\nerrno=0\n\n", "1".repeat(MAX_LINE - 2));
    assert!(parse_interface("wg0", fits.as_bytes(), now_fixed()).is_ok());
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
