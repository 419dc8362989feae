//! The AF_XDP sender on the real kernel: forged control packets (a
//! duplicate ACK with MP_PRIO, one with ADD_ADDR) sent through a TX-only
//! AF_XDP socket on one end of a veth pair arrive byte for byte at the
//! other end (captured with an AF_PACKET socket), and the errors an
//! operator meets are reported as such: queue busy, no such queue,
//! interface deleted.
//!
//! Each test has its own pair of namespaces (removed on drop, even when an
//! assertion fails). Needs root (tests/common/gate.rs: fails without the
//! capabilities unless EMPTCP_ALLOW_SKIP=1).
mod common;

use std::{
    net::IpAddr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use common::*;
use emptcp::{
    packet::{AddAddr, AddAddrAuth, ControlAck, DataAck, Flow, Signal, Timestamps, build_control},
    xsk::{SendError, Sender},
};

fn mac(ns: &Netns, dev: &str) -> [u8; 6] {
    let out = must(&format!("ip -n {} -j link show dev {dev}", ns.name));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = v[0]["address"].as_str().expect("address");
    let b: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    b.try_into().unwrap()
}

/// An AF_PACKET socket that receives every frame arriving on `ifindex`.
fn capture(ifindex: u32) -> OwnedFd {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain syscalls on a fresh fd we own.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
        assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        let r = libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        // Room for a burst of a thousand small frames read after the fact.
        let rcvbuf: i32 = 16 << 20;
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&rcvbuf as *const i32).cast(),
            size_of::<i32>() as u32,
        );
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        );
        fd
    }
}

/// Frames received (not sent) on the capture socket within `wait`.
fn received(fd: &OwnedFd, wait: Duration) -> Vec<Vec<u8>> {
    let end = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    while Instant::now() < end {
        // SAFETY: buf and sll are valid for the sizes passed.
        let (n, sll) = unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            let mut len = size_of::<libc::sockaddr_ll>() as u32;
            let n = libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            );
            (n, sll)
        };
        if n > 0 && sll.sll_pkttype != libc::PACKET_OUTGOING {
            out.push(buf[..n as usize].to_vec());
        }
    }
    out
}

fn ifindex(ns: &Netns, dev: &str) -> u32 {
    ns.exec(&format!("cat /sys/class/net/{dev}/ifindex"))
        .trim()
        .parse()
        .unwrap()
}

/// The forged duplicate ACKs: IPv4 with MP_PRIO (backup), IPv6 with
/// ADD_ADDR (HMAC), both with the connection's data ack.
fn frames(p: &Pair) -> Vec<Vec<u8>> {
    let (src_mac, dst_mac) = (mac(&p.a, &p.dev_a), mac(&p.b, &p.dev_b));
    let flow = |src: &str, dst: &str| Flow {
        src_mac,
        dst_mac,
        src: src.parse::<IpAddr>().unwrap(),
        dst: dst.parse::<IpAddr>().unwrap(),
        sport: 5201,
        dport: 40001,
        vlan_tci: None,
        raw_ip: false,
        ttl: 64,
    };
    let ack = |signal, ts| ControlAck {
        seq: 1_000_000,
        ack: 2_000_000,
        window: 512,
        timestamps: ts,
        data_ack: Some(DataAck::Ack64(0x1_0000_0001)),
        signal: Some(signal),
    };
    let mp_prio = build_control(
        &flow("192.0.2.1", "192.0.2.2"),
        &ack(
            Signal::MpPrio {
                backup: true,
                addr_id: None,
            },
            Some(Timestamps {
                tsval: 100,
                tsecr: 200,
            }),
        ),
    )
    .unwrap();
    let add_addr = build_control(
        &flow("2001:db8::1", "2001:db8::2"),
        &ack(
            Signal::AddAddr(AddAddr {
                id: 2,
                addr: "2001:db8:1::1".parse().unwrap(),
                port: None,
                auth: AddAddrAuth::Hmac {
                    sender_key: 1,
                    receiver_key: 2,
                },
            }),
            None,
        ),
    )
    .unwrap();
    vec![mp_prio, add_addr]
}

#[test]
fn forged_control_packets_arrive_byte_for_byte() {
    if !kernel_or_skip("forged_control_packets_arrive_byte_for_byte") {
        return;
    }
    let p = Pair::new(&tag("xsksend"));
    let want = frames(&p);
    let cap = in_netns(&p.b, || capture(ifindex(&p.b, &p.dev_b)));
    let mut tx = in_netns(&p.a, || Sender::open(p.dev_a.as_str(), 0)).expect("open sender");
    assert!(!tx.zero_copy(), "veth has no zero-copy: copy mode expected");

    for f in &want {
        tx.send(f).expect("send");
    }
    assert!(tx.flush(Duration::from_secs(2)).unwrap(), "not completed");
    let got = received(&cap, Duration::from_millis(500));
    for f in &want {
        let n = got.iter().filter(|g| *g == f).count();
        assert_eq!(
            n, 1,
            "forged frame received {n} times (want once)\nforged:   {f:02x?}\nreceived: {got:02x?}"
        );
    }
    let c = tx.counters();
    assert_eq!((c.sent, c.pending, c.failed), (2, 0, 0), "{c:?}");
    assert_eq!(tx.kernel_stats().unwrap().tx_invalid_descs, 0);
}

#[test]
fn batch_of_many_frames_all_arrive() {
    if !kernel_or_skip("batch_of_many_frames_all_arrive") {
        return;
    }
    let p = Pair::new(&tag("xskbatch"));
    let base = frames(&p).swap_remove(0);
    // 1000 frames (twice the ring) with distinct seq bytes, so each is
    // recognisable; the TCP checksum is irrelevant to the capture.
    let all: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| {
            let mut f = base.clone();
            f[14 + 20 + 4..14 + 20 + 8].copy_from_slice(&i.to_be_bytes());
            f
        })
        .collect();
    let cap = in_netns(&p.b, || capture(ifindex(&p.b, &p.dev_b)));
    let mut tx = in_netns(&p.a, || Sender::open(p.dev_a.as_str(), 0)).expect("open sender");
    for chunk in all.chunks(100) {
        let n = tx
            .send_batch(chunk.iter().map(Vec::as_slice))
            .expect("send_batch");
        assert_eq!(n, chunk.len());
    }
    assert!(tx.flush(Duration::from_secs(2)).unwrap());
    let got = received(&cap, Duration::from_millis(500));
    let matched = all.iter().filter(|f| got.contains(f)).count();
    assert_eq!(matched, all.len(), "{} of {} arrived", matched, all.len());
    assert_eq!(tx.counters().sent, 1000);
}

#[test]
fn second_socket_on_a_queue_is_busy_and_missing_queue_is_an_error() {
    if !kernel_or_skip("second_socket_on_a_queue_is_busy_and_missing_queue_is_an_error") {
        return;
    }
    let p = Pair::new(&tag("xskbusy"));
    in_netns(&p.a, || {
        let _first = Sender::open(p.dev_a.as_str(), 0).expect("first");
        let e = Sender::open(p.dev_a.as_str(), 0).expect_err("second must fail");
        assert!(matches!(e, SendError::QueueBusy { queue: 0, .. }), "{e}");
        // veth has one queue by default.
        let e = Sender::open(p.dev_a.as_str(), 7).expect_err("queue 7");
        assert!(matches!(e, SendError::Bind { queue: 7, .. }), "{e}");
    });
    // The first socket closed: the kernel releases its queue in deferred
    // work, a moment later, so the queue is free again soon (not at once).
    let start = Instant::now();
    loop {
        match in_netns(&p.a, || Sender::open(p.dev_a.as_str(), 0)) {
            Ok(_) => break,
            Err(SendError::QueueBusy { .. }) if start.elapsed() < Duration::from_secs(2) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("reopen after {:?}: {e}", start.elapsed()),
        }
    }
    eprintln!("queue free again {:?} after close", start.elapsed());
}

/// An interface that is up without a carrier (a veth whose peer is down,
/// an unplugged link) drops the frame in the kernel: the send is an error
/// and counted failed, not sent; the control, the same socket with the
/// carrier back, sends.
#[test]
fn a_frame_dropped_without_carrier_is_an_error() {
    if !kernel_or_skip("a_frame_dropped_without_carrier_is_an_error") {
        return;
    }
    let p = Pair::new(&tag("xsknocarrier"));
    let frame = frames(&p).swap_remove(0);
    let mut tx = in_netns(&p.a, || Sender::open(p.dev_a.as_str(), 0)).expect("open sender");
    must(&format!("ip -n {} link set {} down", p.b.name, p.dev_b));
    let e = tx.send(&frame).expect_err("send without carrier");
    assert!(matches!(e, SendError::Dropped), "{e}");
    assert_eq!((tx.counters().sent, tx.counters().failed), (0, 1));
    must(&format!("ip -n {} link set {} up", p.b.name, p.dev_b));
    let cap = in_netns(&p.b, || capture(ifindex(&p.b, &p.dev_b)));
    // The carrier comes back with the peer, a moment after it is up.
    let start = Instant::now();
    loop {
        match tx.send(&frame) {
            Ok(()) => break,
            Err(SendError::Dropped) if start.elapsed() < Duration::from_secs(2) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("send with the carrier back: {e}"),
        }
    }
    assert!(tx.flush(Duration::from_secs(2)).unwrap());
    assert!(received(&cap, Duration::from_millis(500)).contains(&frame));
}

/// A frame refused while the interface was down is never sent later: the
/// kernel leaves it in the socket's TX ring (`xsk_xmit` returns ENETDOWN
/// before it looks at the ring), and the next kick, after the interface
/// came back, sent it ahead of the new frame with its stale seq/ack. The
/// control: the new frame arrives.
#[test]
fn a_frame_refused_while_down_is_not_sent_when_the_interface_is_back() {
    if !kernel_or_skip("a_frame_refused_while_down_is_not_sent_when_the_interface_is_back") {
        return;
    }
    use emptcp::packet::{AfXdp, Transmit as _};
    let p = Pair::new(&tag("xskstale"));
    let [stale, fresh]: [Vec<u8>; 2] = frames(&p).try_into().unwrap();
    let dev = ifindex(&p.a, &p.dev_a);
    let mut tx = AfXdp::new(0);
    in_netns(&p.a, || tx.prepare(dev)).expect("open sender");
    must(&format!("ip -n {} link set {} down", p.a.name, p.dev_a));
    tx.transmit(dev, &stale).expect_err("sent while down");
    must(&format!("ip -n {} link set {} up", p.a.name, p.dev_a));
    let cap = in_netns(&p.b, || capture(ifindex(&p.b, &p.dev_b)));
    // The carrier comes back a moment after the interface is up. Waited
    // for: a kick without it drops the ring's frames (EBUSY), which would
    // hide the stale one from this test.
    let start = Instant::now();
    while !must(&format!("ip -n {} link show {}", p.a.name, p.dev_a)).contains("LOWER_UP") {
        assert!(start.elapsed() < Duration::from_secs(5), "no carrier");
        std::thread::sleep(Duration::from_millis(10));
    }
    in_netns(&p.a, || {
        while let Err(e) = tx.transmit(dev, &fresh) {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "send with the interface back: {e}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let got = received(&cap, Duration::from_millis(500));
    assert!(got.contains(&fresh), "the new frame arrived");
    assert!(
        !got.contains(&stale),
        "the frame refused while down was sent"
    );
}

#[test]
fn deleted_interface_is_reported() {
    if !kernel_or_skip("deleted_interface_is_reported") {
        return;
    }
    let p = Pair::new(&tag("xskgone"));
    let frame = frames(&p).swap_remove(0);
    let mut tx = in_netns(&p.a, || Sender::open(p.dev_a.as_str(), 0)).expect("open sender");
    tx.send(&frame).expect("send while up");
    must(&format!("ip -n {} link set {} down", p.a.name, p.dev_a));
    let e = tx.send(&frame).expect_err("send while down");
    assert!(matches!(e, SendError::InterfaceDown), "{e}");
    must(&format!("ip -n {} link del {}", p.a.name, p.dev_a));
    let e = tx.send(&frame).expect_err("send after delete");
    assert!(matches!(e, SendError::InterfaceGone), "{e}");
    assert_eq!(tx.counters().failed, 2);
}
