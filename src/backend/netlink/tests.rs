use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use netlink_packet_core::{
    ErrorMessage, NetlinkHeader, NetlinkPayload, NLM_F_DUMP_INTR, NLM_F_MULTIPART,
};

use super::*;
use crate::backend::netlink_encode::{
    done_with_error, encode, frame_ending, frame_with, split, split_peer, split_peer_plan,
    three_peers, Plan,
};
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
    let e = read_device(&mut socket, lo).await.unwrap_err();
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

// ----- retry and reconnect, against scripted replies -----

type Reply = Result<Vec<u8>, GenlError>;
/// A dump as the script saw it: (socket number, ifindex).
type Dump = (usize, Option<u32>);

/// Replies for scripted sockets, and what they were asked.
#[derive(Clone, Default)]
struct Script {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    dumps: Arc<Mutex<Vec<Dump>>>,
    opened: Arc<Mutex<usize>>,
}

impl Script {
    fn new(replies: impl IntoIterator<Item = Reply>) -> Self {
        Self {
            replies: Arc::new(Mutex::new(replies.into_iter().collect())),
            ..Self::default()
        }
    }

    /// Opens the next scripted socket, as `GenlSocket::open` would.
    fn open(&self) -> Result<Scripted, BackendError> {
        let mut opened = self.opened.lock().unwrap();
        *opened += 1;
        Ok(Scripted {
            number: *opened,
            family: Some(FAMILY_ID),
            script: self.clone(),
        })
    }

    fn dumps(&self) -> Vec<Dump> {
        self.dumps.lock().unwrap().clone()
    }

    fn left(&self) -> usize {
        self.replies.lock().unwrap().len()
    }
}

const FAMILY_ID: u16 = 0x15;

/// A socket that answers each dump with the script's next reply.
struct Scripted {
    number: usize,
    family: Option<u16>,
    script: Script,
}

impl DeviceDump for Scripted {
    fn has_family(&self) -> bool {
        self.family.is_some()
    }

    fn forget_family(&mut self) {
        self.family = None;
    }

    async fn dump_device(&mut self, ifindex: Option<u32>) -> Result<Vec<u8>, GenlError> {
        self.family = Some(FAMILY_ID);
        self.script
            .dumps
            .lock()
            .unwrap()
            .push((self.number, ifindex));
        self.script
            .replies
            .lock()
            .unwrap()
            .pop_front()
            .expect("a scripted reply for every dump")
    }
}

fn interrupted(model: &Interface) -> Reply {
    let messages = split(
        model,
        &Plan {
            first: 2,
            caps: vec![3],
        },
    );
    Ok(frame_with(messages, |i| {
        if i == 1 {
            NLM_F_DUMP_INTR
        } else {
            0
        }
    }))
}

fn kernel_error(errno: i32) -> Reply {
    let mut err = ErrorMessage::default();
    err.code = std::num::NonZeroI32::new(-errno);
    let mut msg = NetlinkMessage::<GenlMessage<WireguardMessage>>::new(
        NetlinkHeader::default(),
        NetlinkPayload::Error(err),
    );
    msg.finalize();
    let mut bytes = vec![0; msg.buffer_len()];
    msg.serialize(&mut bytes);
    Ok(bytes)
}

fn link(index: u32, name: &str) -> Link {
    Link {
        index,
        name: name.into(),
        mtu: Some(1420),
        wireguard: true,
        addresses: vec!["10.8.0.1/24".parse().unwrap()],
    }
}

#[tokio::test]
async fn a_dump_interrupted_twice_then_complete_gives_the_model() {
    let model = three_peers();
    let script = Script::new([
        interrupted(&model),
        interrupted(&model),
        Ok(encode(
            &model,
            &Plan {
                first: 2,
                caps: vec![3],
            },
        )),
    ]);
    let mut socket = script.open().unwrap();
    let got = read_device(&mut socket, 9).await.unwrap();
    assert_eq!(got, Some(model));
    assert_eq!(script.dumps(), [(1, Some(9)); 3]);
}

#[tokio::test]
async fn a_dump_always_interrupted_gives_up_after_dump_attempts() {
    let model = three_peers();
    let script = Script::new((0..DUMP_ATTEMPTS + 1).map(|_| interrupted(&model)));
    let mut socket = script.open().unwrap();
    let e = read_device(&mut socket, 9).await.unwrap_err();
    assert!(matches!(e, GenlError::StillInterrupted), "{e:?}");
    assert_eq!(
        e.to_string(),
        "the device changed during each of 3 dumps in a row (NLM_F_DUMP_INTR); \
         it is read again next poll"
    );
    assert_eq!(script.dumps().len(), DUMP_ATTEMPTS);
    assert_eq!(script.left(), 1, "no dump beyond DUMP_ATTEMPTS");

    // Through the reader: unreadable, not absent; the socket is kept.
    let script = Script::new((0..DUMP_ATTEMPTS).map(|_| interrupted(&model)));
    let mut slot = None;
    let wg = link(9, "wg-three");
    let read = read_links(&mut slot, || script.open(), &[&wg])
        .await
        .unwrap();
    assert_eq!(
        (read.interfaces.len(), read.unreadable),
        (0, vec!["wg-three".into()])
    );
    assert!(slot.is_some());
}

#[tokio::test]
async fn an_io_error_reopens_the_socket_on_the_next_poll() {
    let model = three_peers();
    let broken = io::Error::new(io::ErrorKind::BrokenPipe, "broken");
    let script = Script::new([
        Err(GenlError::Io(broken)),
        Ok(encode(&model, &Plan::one_message())),
        Err(GenlError::Timeout),
        kernel_error(16), // EBUSY: a complete answer, the socket stays
        Ok(encode(&model, &Plan::one_message())),
    ]);
    let wg = link(9, "wg-three");
    let links = [&wg];
    let mut slot = None;
    let mut polls = Vec::new();
    for _ in 0..5 {
        polls.push(
            read_links(&mut slot, || script.open(), &links)
                .await
                .unwrap(),
        );
    }
    let mut expected = model.clone();
    expected.mtu = Some(1420);
    expected.addresses = wg.addresses.clone();
    let seen: Vec<(usize, usize)> = polls
        .iter()
        .map(|p| (p.interfaces.len(), p.unreadable.len()))
        .collect();
    assert_eq!(seen, [(0, 1), (1, 0), (0, 1), (0, 1), (1, 0)]);
    assert_eq!(polls[1].interfaces, [expected.clone()]);
    assert_eq!(polls[4].interfaces, [expected]);
    assert_eq!(polls[0].unreadable, ["wg-three"]);
    // Socket 1 broke, socket 2 timed out, socket 3 survived EBUSY.
    let sockets: Vec<usize> = script.dumps().iter().map(|(n, _)| *n).collect();
    assert_eq!(sockets, [1, 2, 2, 3, 3]);
}

#[tokio::test]
async fn a_dump_cut_short_in_done_leaves_the_interface_unreadable() {
    let script = Script::new([
        Ok(done_with_error()),
        Ok(encode(&split_peer(), &split_peer_plan())),
    ]);
    let (cut, next) = (link(9, "wg-split"), link(10, "wg-split"));
    let mut slot = None;
    let read = read_links(&mut slot, || script.open(), &[&cut, &next])
        .await
        .unwrap();
    // Never the two and a half peers before the error.
    assert_eq!(read.unreadable, ["wg-split"]);
    assert_eq!(read.interfaces.len(), 1);
    assert_eq!(read.interfaces[0].peers.len(), 3);
    assert_eq!(script.dumps(), [(1, Some(9)), (1, Some(10))]);
}

/// `three_peers` under another name, as one complete dump.
fn device(name: &str) -> Reply {
    Ok(encode(&named(name), &Plan::one_message()))
}

fn named(name: &str) -> Interface {
    let mut model = three_peers();
    model.name = name.into();
    model
}

fn names(read: &KernelRead) -> (Vec<&str>, Vec<&str>) {
    (
        read.interfaces.iter().map(|i| i.name.as_str()).collect(),
        read.unreadable.iter().map(String::as_str).collect(),
    )
}

/// Regression: rtnetlink hides `NLM_F_DUMP_INTR`, so an interrupted link
/// dump could lack wg1 and the tracker saw it deleted for one poll.
#[tokio::test]
async fn a_link_missing_from_an_interrupted_link_dump_is_not_deleted() {
    let all = InterfaceFilter::default();
    let (wg0, mut wg1) = (link(9, "wg0"), link(10, "wg1"));
    wg1.mtu = Some(1380);
    let both = [wg0.clone(), wg1];
    let only_wg0 = [wg0];
    let script = Script::new([
        device("wg0"),
        device("wg1"),
        // Poll 2: wg1 is not listed but its ifindex still answers.
        device("wg0"),
        device("wg1"),
        // Poll 3: now the kernel says there is no such device.
        device("wg0"),
        kernel_error(ENODEV),
        // Poll 4: wg1 is forgotten, not asked for again.
        device("wg0"),
    ]);
    let (mut slot, mut known) = (None, KnownLinks::default());
    let open = || script.open();
    let first = read_remembered(&mut slot, open, &mut known, &both, &all)
        .await
        .unwrap();
    assert_eq!(names(&first), (vec!["wg0", "wg1"], vec![]));
    let second = read_remembered(&mut slot, open, &mut known, &only_wg0, &all)
        .await
        .unwrap();
    assert_eq!(names(&second), (vec!["wg0", "wg1"], vec![]));
    // Found by ifindex, with the MTU and addresses it was last listed with.
    assert_eq!(second.interfaces[1], first.interfaces[1]);
    assert_eq!(second.interfaces[1].mtu, Some(1380));
    let third = read_remembered(&mut slot, open, &mut known, &only_wg0, &all)
        .await
        .unwrap();
    assert_eq!(names(&third), (vec!["wg0"], vec![]));
    let fourth = read_remembered(&mut slot, open, &mut known, &only_wg0, &all)
        .await
        .unwrap();
    assert_eq!(names(&fourth), (vec!["wg0"], vec![]));
    let asked: Vec<Option<u32>> = script.dumps().iter().map(|(_, i)| *i).collect();
    assert_eq!(
        asked,
        [9, 10, 9, 10, 9, 10, 9].map(Some),
        "wg1 confirmed by its old ifindex twice, then forgotten"
    );
    assert_eq!(script.left(), 0);
}

#[tokio::test]
async fn a_missing_link_that_cannot_be_confirmed_is_unreadable_and_remembered() {
    let all = InterfaceFilter::default();
    let (wg0, wg1) = (link(9, "wg0"), link(10, "wg1"));
    let script = Script::new([
        device("wg0"),
        device("wg1"),
        // EBUSY for wg1's ifindex: neither there nor gone.
        device("wg0"),
        kernel_error(16),
        // Still remembered: asked again and found.
        device("wg0"),
        device("wg1"),
    ]);
    let (mut slot, mut known) = (None, KnownLinks::default());
    let open = || script.open();
    let both = [wg0.clone(), wg1];
    let only_wg0 = [wg0];
    let read = read_remembered(&mut slot, open, &mut known, &both, &all).await;
    assert_eq!(names(&read.unwrap()), (vec!["wg0", "wg1"], vec![]));
    let read = read_remembered(&mut slot, open, &mut known, &only_wg0, &all).await;
    assert_eq!(names(&read.unwrap()), (vec!["wg0"], vec!["wg1"]));
    let read = read_remembered(&mut slot, open, &mut known, &only_wg0, &all).await;
    assert_eq!(names(&read.unwrap()), (vec!["wg0", "wg1"], vec![]));
    assert_eq!(script.left(), 0);
    // EBUSY is a complete answer: one socket throughout.
    assert!(script.dumps().iter().all(|(n, _)| *n == 1));
}

#[tokio::test]
async fn a_missing_link_whose_ifindex_names_another_device_is_gone() {
    let all = InterfaceFilter::default();
    let listed = [link(9, "wg0"), link(10, "wg1"), link(11, "wg2")];
    let script = Script::new([
        device("wg0"),
        device("wg1"),
        device("wg2"),
        // wg1's ifindex now belongs to a WireGuard device of another name.
        device("wg0"),
        device("wg-other"),
        // wg2's ifindex is no WireGuard device: EOPNOTSUPP, also after
        // the family id is resolved again.
        kernel_error(EOPNOTSUPP),
        kernel_error(EOPNOTSUPP),
    ]);
    let (mut slot, mut known) = (None, KnownLinks::default());
    let open = || script.open();
    let read = read_remembered(&mut slot, open, &mut known, &listed, &all).await;
    assert_eq!(names(&read.unwrap()).0, ["wg0", "wg1", "wg2"]);
    let read = read_remembered(&mut slot, open, &mut known, &listed[..1], &all).await;
    assert_eq!(names(&read.unwrap()), (vec!["wg0"], vec![]));
    assert_eq!(script.left(), 0);
    assert_eq!(known.missing(&listed[..1], &all), []);
}

#[test]
fn only_links_the_list_lacks_and_the_filter_allows_are_missing() {
    let (wg0, wg1, wg2) = (link(9, "wg0"), link(10, "wg1"), link(11, "wg2"));
    let mut known = KnownLinks::default();
    let read = KernelRead {
        interfaces: vec![named("wg0"), named("wg1")],
        unreadable: vec!["wg2".into()],
    };
    known.replace([&wg0, &wg1, &wg2, &link(12, "wg3")], &read);
    // wg1 is listed again, as a userspace (tun) link: not missing.
    let mut tun = wg1.clone();
    tun.wireguard = false;
    let filter = InterfaceFilter {
        include: vec![],
        exclude: vec!["wg2".into()],
    };
    assert_eq!(
        known.missing(std::slice::from_ref(&tun), &filter),
        std::slice::from_ref(&wg0)
    );
    assert_eq!(
        known.missing(&[tun], &InterfaceFilter::default()),
        [wg0, wg2],
        "wg3 was neither read nor unreadable, so it is not remembered"
    );
    known.clear();
    assert_eq!(known.missing(&[], &InterfaceFilter::default()), []);
}

#[test]
fn the_permission_probe_reads_the_kernels_answer() {
    // Without CAP_NET_ADMIN the kernel answers EPERM in NLMSG_ERROR.
    let e = permission_verdict(kernel_error(EPERM)).unwrap_err();
    assert_eq!(e.to_string(), needs_cap_net_admin().to_string());
    // With it, a dump naming no device is refused for that instead.
    assert!(permission_verdict(kernel_error(EINVAL)).is_ok());
    assert!(permission_verdict(kernel_error(53)).is_ok()); // EBADR
    let refused_in_done = |code| Ok(frame_ending(vec![], |_| 0, code));
    assert!(permission_verdict(refused_in_done(-53)).is_ok());
    assert!(matches!(
        permission_verdict(refused_in_done(-EPERM)),
        Err(BackendError::Unavailable { .. })
    ));
    let garbled = permission_verdict(Ok(vec![1, 2, 3])).unwrap_err();
    assert!(matches!(garbled, BackendError::Protocol(_)), "{garbled}");
    let io = GenlError::Io(io::Error::other("down"));
    assert!(matches!(
        permission_verdict(Err(io)),
        Err(BackendError::Io { .. })
    ));
}
