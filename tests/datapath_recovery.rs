//! The in-kernel recovery (`ingress_recover`, TC ingress) on the real
//! kernel: a connection whose stored ADD_ADDR found no received packet with
//! room (a pure download) gets it in a duplicate ACK built from a clone of
//! a received segment.
//!
//! * the clone's completion (BPF_PROG_TEST_RUN with the clone's mark): the
//!   output frame is compared byte for byte with the duplicate ACK built
//!   independently (lengths and checksums from scratch), for the four
//!   option forms, IPv4 and IPv6;
//! * a clone whose address was withdrawn meanwhile is dropped, counted;
//! * the whole loop in a namespace of the test: the program attached with
//!   a TCX link to its loopback device clones a segment of a pending
//!   connection, the clone comes back through TC ingress and is completed
//!   (counted), and the next segments clone nothing until the retry time.
//!
//! Needs CAP_BPF/CAP_NET_ADMIN/CAP_SYS_ADMIN; fails without them unless
//! EMPTCP_ALLOW_SKIP=1 (tests/common/gate.rs).
#[macro_use]
mod datapath_common;

use std::{net::IpAddr, time::Duration};

use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, tc::TcAttachOptions};
use datapath_common::{
    skb::{TC_ACT_SHOT as DROP, TCX_NEXT as PASS},
    *,
};
use emptcp_common::{Action, FLOW_RECOVER_PENDING, FlowStat, RECOVER_MARK, VIA_KERNEL};

/// Runs `ingress_recover` once on `frame` with `skb->mark` = `mark`;
/// returns the verdict, the frame it left and the mark it left.
fn run(dp: &Dp, frame: &[u8], mark: u32) -> (i32, Vec<u8>, u32) {
    let r = skb::run_skb(
        dp,
        "ingress_recover",
        frame,
        skb::Skb {
            mark,
            ..skb::Skb::default()
        },
    );
    (r.ret, r.frame, r.mark)
}

/// The duplicate ACK the server would have sent: seq = the client's
/// rcv_nxt (after the 100-byte segment of `store_then_grow`), ack and
/// window of that segment, its timestamps (1, 1) when they fit, then the
/// option (NOP NOP first for the 18/30-byte forms). No payload.
fn duplicate_ack(base: &Seg, aa: &[u8]) -> Seg {
    let pad = (4 - aa.len() % 4) % 4;
    let mut o = Vec::new();
    if pad + aa.len() + 12 <= 40 {
        o.extend(ts(1, 1));
    }
    o.extend(nops(pad));
    o.extend_from_slice(aa);
    base.clone().with(|s| {
        s.flags = ACK;
        s.seq = base.seq + 100;
        s.opts = o;
        s.payload.clear();
    })
}

fn cases() -> Vec<(&'static str, Seg, Vec<u8>)> {
    let a4 = addr("198.51.100.2");
    let a6: IpAddr = "2001:db8:1::2".parse().unwrap();
    vec![
        ("v4", Seg::v4(), add_addr(2, a4, None, false)),
        ("v4 port", Seg::v4(), add_addr(2, a4, Some(8080), false)),
        ("v6", Seg::v6(), add_addr(2, a6, None, false)),
        ("v6 port", Seg::v6(), add_addr(2, a6, Some(8080), false)),
    ]
}

#[test]
fn the_clone_becomes_the_duplicate_ack_that_carries_the_stored_address() {
    need_kernel!();
    for (name, base, aa) in cases() {
        let dp = dp_with(&EMPTCP);
        store_then_grow(&dp, &base, &aa);
        assert_ne!(
            flow_of(&dp, &base).flags & FLOW_RECOVER_PENDING,
            0,
            "{name}"
        );
        // The clone of the next data segment, back in TC ingress with the
        // mark of slot 2 (the option's id).
        let data = full_data(&base).with(|s| s.seq = base.seq + 100);
        let (v, out, mark) = run(&dp, &data.frame(), RECOVER_MARK | 2);
        assert_eq!(v, PASS, "{name}: verdict");
        assert_frame_eq(&out, &duplicate_ack(&base, &aa).frame(), name);
        assert_checksums_valid(&out);
        assert_eq!(mark, 0, "{name}: the original's mark restored");
        assert_eq!(dp.event(FlowStat::AddAddrRecoveredKernel), 1, "{name}");
        assert_eq!(dp.event(FlowStat::KernelRecoveryFailed), 0, "{name}");
    }
}

/// With `set_window` in the chain, the duplicate ACK advertises the window
/// the step writes, not the one the peer sent: the local stack takes the
/// window of every ACK it accepts, so the peer's own (larger) window in a
/// forged ACK would lift the cap until the next real segment.
#[test]
fn the_duplicate_ack_advertises_the_capped_window() {
    need_kernel!();
    let mut dp = dp_with(&EMPTCP);
    let base = Seg::v4();
    let aa = add_addr(2, addr("198.51.100.2"), None, false);
    store_then_grow(&dp, &base, &aa);
    // The chain gains set_window (after strip, as the policy requires):
    // 20000 bytes at the SYN-ACK's shift of 7 is a field of 156.
    let mut capped = EMPTCP.to_vec();
    capped.push((Action::SetWindow, 20_000));
    dp.chain(CHAIN, &capped, TH, LO);
    assert_eq!(flow_of(&dp, &base).wscale, 7);
    let newest = full_data(&base).with(|s| {
        s.seq = base.seq + 100;
        s.opts = opts(&[
            &ts(1, 1),
            &dss(Some((1 + RECOVER_AT, 8)), Some((1, 8, 1, 100))),
        ]);
    });
    let r = dp.entry(&newest.frame());
    assert_eq!(r.verdict, XDP_PASS);
    assert_eq!(dp.event(FlowStat::WindowRewritten), 1);
    assert_ne!(base.window, 156, "the control: the peer's window differs");
    let (v, out, _) = run(&dp, &full_data(&base).frame(), RECOVER_MARK | 2);
    assert_eq!(v, PASS);
    let expected = duplicate_ack(&base, &aa).with(|s| {
        s.seq = base.seq + 200;
        s.window = 156;
    });
    assert_frame_eq(&out, &expected.frame(), "capped duplicate ACK");
    assert_checksums_valid(&out);
}

#[test]
fn a_clone_of_a_withdrawn_address_is_dropped() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    let base = Seg::v4();
    store_then_grow(&dp, &base, &add_addr(2, addr("198.51.100.2"), None, false));
    // Slot 3 holds nothing: as after a REMOVE_ADDR that came meanwhile.
    let (v, _, _) = run(&dp, &full_data(&base).frame(), RECOVER_MARK | 3);
    assert_eq!(v, DROP);
    assert_eq!(dp.event(FlowStat::KernelRecoveryFailed), 1);
    assert_eq!(dp.event(FlowStat::AddAddrRecoveredKernel), 0);
    // A segment of a connection nobody tracks, with the mark: dropped too
    // (a clone must never reach TCP as a spurious retransmission).
    let other = Seg::v4().with(|s| s.sport = 444);
    let (v, _, _) = run(&dp, &full_data(&other).frame(), RECOVER_MARK | 2);
    assert_eq!(v, DROP);
}

#[test]
fn nothing_pending_means_nothing_is_cloned_or_changed() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    let base = Seg::v4();
    handshake(&dp, &base);
    let f = full_data(&base).frame();
    let (v, out, mark) = run(&dp, &f, 7);
    assert_eq!((v, mark), (PASS, 7));
    assert_frame_eq(&out, &f, "untouched");
    let s = flow_of(&dp, &base);
    assert_eq!((s.recovered, s.attempts), (0, 0));
}

/// The whole loop: clone, backlog, TC ingress again, completion.
#[test]
fn a_pending_connection_is_served_through_a_clone_once_per_retry() {
    need_kernel!();
    in_private_netns(|| {
        let mut dp = dp_with(&EMPTCP);
        let base = Seg::v4();
        let aa = add_addr(2, addr("198.51.100.2"), None, false);
        store_then_grow(&dp, &base, &aa);
        // The program on this namespace's loopback device, as apply
        // attaches it: the clone comes back through it.
        let p: &mut SchedClassifier = dp
            .ebpf
            .program_mut("ingress_recover")
            .unwrap()
            .try_into()
            .unwrap();
        let link = p
            .attach_with_options(
                "lo",
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .expect("TCX ingress attach");
        let data = full_data(&base).with(|s| s.seq = base.seq + 100);
        let (v, out, _) = run(&dp, &data.frame(), 0);
        assert_eq!(v, PASS);
        assert_frame_eq(&out, &data.frame(), "the original passes untouched");
        let f = flow_of(&dp, &base);
        assert_eq!(f.recovered, 1 << 2, "delivered once");
        assert_eq!(f.attempts, 1);
        assert_ne!(f.recovered_via & VIA_KERNEL, 0, "by the kernel path");
        assert_eq!(f.flags & FLOW_RECOVER_PENDING, 0, "no longer pending");
        // The clone is completed when the backlog runs (softirq), within
        // milliseconds; 5 s of margin for a machine with every core busy.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while dp.event(FlowStat::AddAddrRecoveredKernel) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the clone never came back through TC ingress (failed: {})",
                dp.event(FlowStat::KernelRecoveryFailed)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(dp.event(FlowStat::KernelRecoveryFailed), 0);
        // Until the retry time (0.2 s) no more clones: the next segments
        // pass, the delivery count stays.
        for i in 1..=5u32 {
            let d = full_data(&base).with(|s| s.seq = base.seq + 100 * (i + 1));
            assert_eq!(dp.entry(&d.frame()).verdict, XDP_PASS);
            assert_eq!(run(&dp, &d.frame(), 0).0, PASS);
        }
        let f = flow_of(&dp, &base);
        assert_eq!(
            (f.attempts, f.add_addr_recovered),
            (1, 1),
            "no second clone"
        );
        let p: &mut SchedClassifier = dp
            .ebpf
            .program_mut("ingress_recover")
            .unwrap()
            .try_into()
            .unwrap();
        p.detach(link).expect("detach");
    });
}

/// Runs `f` on a thread of its own in a new, unnamed network namespace
/// (loopback up): the clones go nowhere else, and the namespace goes with
/// the thread, whatever happens.
fn in_private_netns(f: impl FnOnce() + Send) {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
            // A child process starts in its parent thread's namespace.
            let st = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("ip");
            assert!(st.success(), "ip link set lo up");
            f()
        })
        .join()
        .expect("netns thread")
    })
}
