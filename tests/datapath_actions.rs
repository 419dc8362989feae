//! The datapath actions on the real kernel (BPF_PROG_TEST_RUN): crafted
//! server->client segments run through the entry program (the whole chain,
//! by tail calls) or through one action, and every output byte is compared
//! with a frame built independently (lengths and checksums from scratch),
//! whose checksums etherparse verifies again.
//!
//! Needs CAP_BPF/CAP_NET_ADMIN/CAP_SYS_ADMIN (loads programs); fails
//! without them unless EMPTCP_ALLOW_SKIP=1 (tests/common/gate.rs).
#[macro_use]
mod datapath_common;

use std::net::IpAddr;

use datapath_common::*;
use emptcp_common::{
    Action, FLOW_DATA_ACK_SEEN, FLOW_RECOVER_PENDING, FLOW_SEQ_SEEN, FLOW_TS_SEEN, FlowStat,
    FlowState, Outcome, StoredAddAddr,
};

/// `seg` passes through the chain untouched.
fn assert_untouched(dp: &Dp, seg: &Seg, what: &str) {
    let f = seg.frame();
    let r = dp.entry(&f);
    assert_eq!(r.verdict, XDP_PASS, "{what}: verdict");
    assert_frame_eq(&r.frame, &f, what);
}

/// `seg` leaves the chain as `want` (and with valid checksums).
fn assert_becomes(dp: &Dp, seg: &Seg, want: &Seg, what: &str) {
    let r = dp.entry(&seg.frame());
    assert_eq!(r.verdict, XDP_PASS, "{what}: verdict");
    assert_frame_eq(&r.frame, &want.frame(), what);
    assert_checksums_valid(&r.frame);
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`, which the
/// datapath's retry times are on.
fn ktime_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec it is given.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) },
        0
    );
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// `seg` runs again after flow `base` delivered its stored options: before
/// the flow's retry time (200 ms after a first delivery) it passes
/// untouched; once that time passed, the unconfirmed option is delivered
/// again (`retried`: the frame `seg` then becomes, and AddAddrRetried
/// counts it). The oracle follows the kernel's clock, not the test's
/// speed: a slow machine (a TCG guest with other guests running) can take
/// longer than 200 ms between two test runs. A run that straddles the retry
/// time may do either.
fn assert_not_again_before_retry(dp: &Dp, base: &Seg, seg: &Seg, retried: &Seg, what: &str) {
    let retry_at = flow_of(dp, base).retry_at_ns;
    let retries = dp.event(FlowStat::AddAddrRetried);
    let before = ktime_ns();
    let r = dp.entry(&seg.frame());
    let after = ktime_ns();
    assert_eq!(r.verdict, XDP_PASS, "{what}: verdict");
    if after < retry_at {
        assert_frame_eq(
            &r.frame,
            &seg.frame(),
            &format!("{what}: before the retry time"),
        );
        assert_eq!(dp.event(FlowStat::AddAddrRetried), retries, "{what}");
    } else if before >= retry_at {
        assert_frame_eq(&r.frame, &retried.frame(), &format!("{what}: a retry"));
        assert_checksums_valid(&r.frame);
        assert_eq!(dp.event(FlowStat::AddAddrRetried), retries + 1, "{what}");
    }
}

/// `opts` with the bytes `[at, at + len)` overwritten by NOPs.
fn nopped(o: &[u8], at: usize, len: usize) -> Vec<u8> {
    let mut o = o.to_vec();
    o[at..at + len].fill(1);
    o
}

// ---- verifier --------------------------------------------------------------

#[test]
fn every_program_passes_the_verifier() {
    need_kernel!();
    let mut dp = Dp::load();
    dp.load_all();
    let mut names: Vec<&str> = dp.ebpf.programs().map(|(n, _)| n).collect();
    names.sort();
    let mut want: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
    want.push("entry");
    want.push("egress_entry");
    want.push("egress_capture");
    want.push("ingress_capture");
    want.push(emptcp_common::TC_INGRESS_CAPTURE);
    // The connection-setup half of record_flow (its own stack).
    want.push(emptcp_common::RECORD_SETUP);
    // The in-kernel recovery (TC ingress).
    want.push(emptcp_common::INGRESS_RECOVER);
    // The TC ingress hook: its entry and every action's variant.
    want.push(emptcp_common::TC_ENTRY);
    want.push(emptcp_common::TC_RECORD_SETUP);
    want.extend(Action::ALL.iter().map(|a| emptcp_common::tc_program(*a)));
    want.extend(
        emptcp_common::EGRESS_ACTIONS
            .iter()
            .map(|a| emptcp_common::egress_program(*a)),
    );
    want.sort();
    assert_eq!(
        names, want,
        "one program per action (and per egress action), named as the action"
    );
    let mut over = Vec::new();
    for n in names {
        let info = dp.ebpf.program(n).unwrap().info().unwrap();
        let verified = info
            .verified_instruction_count()
            .expect("the kernel reports verified_insns (Linux 5.16+)");
        println!(
            "{n:>20}: verified {verified:>6} insns ({:>2} % of the budget), {:>5} translated bytes",
            u64::from(verified) * 100 / VERIFIER_BUDGET,
            info.size_translated().unwrap_or(0)
        );
        if u64::from(verified) > VERIFIER_BUDGET {
            over.push(format!("{n}: {verified}"));
        }
    }
    assert!(
        over.is_empty(),
        "verified instructions over the budget of {VERIFIER_BUDGET} per program \
         (a quarter of the kernel's 10^6 limit): {over:?}; docs/datapath.md, \"Verifier budget\""
    );
}

/// Verified instructions a program may take: a quarter of the kernel's
/// complexity limit (BPF_COMPLEXITY_LIMIT_INSNS, 10^6 per program). The
/// count is how many instructions the verifier walked over all the paths
/// it explored, so it grows with the branching of the code, not its
/// length: a loop whose bound the verifier cannot prove constant makes
/// each pass a new state (one such change took strip_add_addr from 153 k
/// to 952 k, and every test still passed, only slower: apply verifies every
/// program). The largest today are the entry programs, ~60 k on 6.18 and
/// ~90-100 k on 6.12 (docs/datapath.md, "Verifier notes", has every
/// program); a quarter leaves room for another kernel's verifier and
/// catches a change that multiplies a program's paths.
const VERIFIER_BUDGET: u64 = 250_000;

// ---- record_flow -----------------------------------------------------------

#[test]
fn syn_ack_with_mp_capable_creates_the_flow() {
    need_kernel!();
    for base in [
        Seg::v4(),
        Seg::v6(),
        Seg::v4().with(|s| s.vlans = vec![100]),
    ] {
        let dp = dp_with(&EMPTCP);
        let sa = syn_ack(&base);
        assert_untouched(&dp, &sa, "SYN-ACK");
        let f = flow_of(&dp, &base);
        assert_eq!(f.chain, CHAIN);
        assert_eq!(f.wscale, 7);
        assert_eq!(f.ifindex, LO);
        assert_eq!(f.rcv_nxt, base.seq, "SYN takes one sequence number");
        assert_eq!(f.ack, sa.ack);
        assert_eq!(f.window, sa.window);
        assert_eq!((f.tsval, f.tsecr), (1000, 500));
        assert_eq!(
            f.flags,
            FLOW_SEQ_SEEN | FLOW_TS_SEEN | emptcp_common::FLOW_PEER_WSCALE
        );
        assert_eq!(&f.mac[..6], &CLIENT_MAC);
        assert_eq!(&f.mac[6..], &SERVER_MAC);
        assert_eq!(f.vlan_tci, base.vlans.first().copied().unwrap_or(0));
        assert_eq!(f.bytes, 0);
        assert_eq!(dp.event(FlowStat::FlowsCreated), 1);
    }
}

#[test]
fn only_mp_capable_syn_acks_create_flows() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    let base = Seg::v4();
    // Plain TCP SYN-ACK, a SYN, a data segment of an unknown flow.
    let plain = syn_ack(&base).with(|s| s.opts = opts(&[&wscale(7)]));
    let syn = syn_ack(&base).with(|s| s.flags = SYN);
    for s in [plain, syn, pure_ack(&base, 1)] {
        assert_untouched(&dp, &s, "not a flow start");
    }
    assert!(dp.flow(&base.key()).is_none());
    // No window scale option: shift 0.
    let sa = syn_ack(&base).with(|s| s.opts = opts(&[&mp_capable(1)]));
    assert_untouched(&dp, &sa, "SYN-ACK without wscale");
    assert_eq!(flow_of(&dp, &base).wscale, 0);
}

#[test]
fn fin_and_rst_remove_the_flow_and_its_options() {
    need_kernel!();
    for flag in [FIN | ACK, RST, RST | ACK] {
        let dp = dp_with(&EMPTCP);
        let base = Seg::v6();
        handshake(&dp, &base);
        // Two stored options (dropped pure ACKs).
        for id in [1, 2] {
            let s = base
                .clone()
                .with(|s| s.opts = opts(&[&add_addr(id, addr("198.51.100.2"), None, false)]));
            assert_eq!(dp.entry(&s.frame()).verdict, XDP_DROP);
        }
        assert_eq!(dp.flow_addr_count(), 2);
        let fin = base.clone().with(|s| s.flags = flag);
        assert_untouched(&dp, &fin, "FIN/RST");
        assert!(
            dp.flow(&base.key()).is_none(),
            "flow removed on flags {flag:#x}"
        );
        assert_eq!(dp.flow_addr_count(), 0, "stored options removed");
        assert_eq!(dp.event(FlowStat::FlowsRemoved), 1);
    }
}

#[test]
fn dss_data_ack_4_and_8_bytes_with_wrap_around() {
    need_kernel!();
    let dp = dp_with(&[(Action::RecordFlow, 0)]);
    let base = Seg::v4();
    handshake(&dp, &base);
    let ack = |v: u64, n: usize| {
        base.clone()
            .with(|s| s.opts = opts(&[&dss(Some((v, n)), None)]))
    };
    // The first value is the baseline.
    assert_untouched(&dp, &ack(0xffff_ff00, 4), "baseline");
    assert_eq!(flow_of(&dp, &base).bytes, 0);
    assert_eq!(
        flow_of(&dp, &base).flags & FLOW_DATA_ACK_SEEN,
        FLOW_DATA_ACK_SEEN
    );
    // 32-bit wrap: 0xffffff00 -> 0x00000100 is 0x200 bytes.
    assert_untouched(&dp, &ack(0x0000_0100, 4), "wrap");
    let f = flow_of(&dp, &base);
    assert_eq!(f.bytes, 0x200);
    assert_eq!(
        f.data_ack, 0x1_0000_0100,
        "4-byte form extends the 64-bit ack"
    );
    // The 8-byte form continues from there.
    assert_untouched(&dp, &ack(0x1_0000_0500, 8), "8-byte ack");
    assert_eq!(flow_of(&dp, &base).bytes, 0x600);
    // A reordered (older) ack adds nothing; a duplicate neither.
    assert_untouched(&dp, &ack(0x1_0000_0400, 8), "old ack");
    assert_untouched(&dp, &ack(0x0000_0500, 4), "duplicate ack");
    let f = flow_of(&dp, &base);
    assert_eq!((f.bytes, f.data_ack), (0x600, 0x1_0000_0500));
}

#[test]
fn dss_mappings_count_download_bytes_with_wrap_around() {
    need_kernel!();
    let dp = dp_with(&[(Action::RecordFlow, 0)]);
    let base = Seg::v6();
    handshake(&dp, &base);
    let data = |dsn: u64, n: usize, len: u16, seq: u32| {
        base.clone().with(|s| {
            s.seq = seq;
            s.opts = opts(&[&dss(None, Some((dsn, n, 1, len)))]);
            s.payload = vec![7; len as usize];
        })
    };
    // Baseline end 0xffffff00 + 0x80, then a 4-byte mapping across the wrap.
    assert_untouched(&dp, &data(0xffff_ff00, 4, 0x80, base.seq), "baseline");
    assert_untouched(&dp, &data(0xffff_ff80, 4, 0x100, base.seq + 0x80), "wrap");
    let f = flow_of(&dp, &base);
    assert_eq!(f.bytes, 0x100);
    assert_eq!(f.data_end, 0x1_0000_0080);
    assert_eq!(f.rcv_nxt, base.seq + 0x180, "newest seq + payload");
    // 8-byte form, and a retransmission that adds nothing.
    assert_untouched(
        &dp,
        &data(0x1_0000_0080, 8, 0x40, base.seq + 0x180),
        "8-byte",
    );
    assert_untouched(
        &dp,
        &data(0xffff_ff80, 4, 0x100, base.seq + 0x80),
        "retransmit",
    );
    let f = flow_of(&dp, &base);
    assert_eq!(f.bytes, 0x140);
    assert_eq!(
        f.rcv_nxt,
        base.seq + 0x1c0,
        "an old segment does not move rcv_nxt"
    );
}

// ---- strip_add_addr --------------------------------------------------------

/// Every non-echo ADD_ADDR form, in segments that are not pure ACKs, comes
/// out as NOPs; its bytes are stored.
#[test]
fn strip_nops_every_add_addr_form() {
    need_kernel!();
    let a4 = addr("198.51.100.2");
    let a6: IpAddr = "2001:db8:1::2".parse().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("v4", add_addr(2, a4, None, false)),
        ("v4+port", add_addr(2, a4, Some(8080), false)),
        ("v6", add_addr(2, a6, None, false)),
        ("v6+port", add_addr(2, a6, Some(8080), false)),
    ];
    for base in [Seg::v4(), Seg::v6()] {
        for (name, aa) in &cases {
            let dp = dp_with(&EMPTCP);
            handshake(&dp, &base);
            // With a data ACK and a payload, at an even and an odd offset.
            for odd in [false, true] {
                let lead: &[u8] = if odd { &[1] } else { &[] };
                let trail: &[u8] = if odd { &[1] } else { &[] };
                let o = opts(&[lead, aa, trail, &dss(Some((10, 4)), None)]);
                let at = o.len() - 8 - trail.len() - aa.len();
                assert_eq!(at % 2 == 1, odd, "{name}: offset parity");
                let seg = base.clone().with(|s| {
                    s.opts = o.clone();
                    s.payload = vec![0x5a; 33];
                });
                let want = seg.clone().with(|s| s.opts = nopped(&o, at, aa.len()));
                assert_becomes(&dp, &seg, &want, name);
            }
            // Stored in the slot of its address id.
            let st = dp
                .flow_addr(&base.key(), aa[3] as u32 % 16)
                .expect("stored");
            assert_eq!(&st.bytes[..aa.len()], &aa[..], "{name}: stored bytes");
            assert_eq!(st.len as usize, aa.len());
            assert!(st.bytes[aa.len()..].iter().all(|b| *b == 0));
            let f = flow_of(&dp, &base);
            assert_eq!(
                (f.stored, f.add_addr_nopped),
                (1 << 2, 2),
                "{name}: slot of id 2"
            );
            assert_eq!(dp.event(FlowStat::AddAddrNopped), 2);
        }
    }
}

#[test]
fn strip_nops_add_addr_on_a_pure_ack_with_another_mptcp_option() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    let base = Seg::v4();
    handshake(&dp, &base);
    let aa = add_addr(3, addr("198.51.100.2"), None, false);
    let o = opts(&[&dss(Some((10, 4)), None), &aa]);
    let seg = base.clone().with(|s| s.opts = o.clone());
    let want = seg.clone().with(|s| s.opts = nopped(&o, 8, 16));
    assert_becomes(&dp, &seg, &want, "pure ACK with DSS");
}

#[test]
fn pure_ack_whose_only_mptcp_option_is_add_addr_is_dropped() {
    need_kernel!();
    for base in [Seg::v4(), Seg::v6().with(|s| s.vlans = vec![5])] {
        let dp = dp_with(&EMPTCP);
        handshake(&dp, &base);
        let aa = add_addr(1, addr("198.51.100.2"), None, false);
        let seg = base.clone().with(|s| s.opts = opts(&[&ts(1, 2), &aa]));
        let r = dp.entry(&seg.frame());
        assert_eq!(r.verdict, XDP_DROP);
        assert_eq!(&dp.flow_addr(&base.key(), 1).unwrap().bytes[..16], &aa[..]);
        let f = flow_of(&dp, &base);
        assert_eq!((f.stored, f.add_addr_dropped), (1 << 1, 1), "slot of id 1");
        assert_eq!(dp.event(FlowStat::AddAddrDroppedPureAck), 1);
        assert_eq!(dp.outcome(Action::StripAddAddr, Outcome::Applied), 1);
    }
}

#[test]
fn echo_add_addrs_are_never_stripped() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    let base = Seg::v4();
    handshake(&dp, &base);
    let a6: IpAddr = "2001:db8:1::2".parse().unwrap();
    for aa in [
        add_addr(1, addr("198.51.100.2"), None, true),
        add_addr(1, addr("198.51.100.2"), Some(1), true),
        add_addr(1, a6, None, true),
        add_addr(1, a6, Some(1), true),
    ] {
        assert!([8, 10, 20, 22].contains(&aa.len()));
        let seg = base.clone().with(|s| s.opts = opts(&[&aa]));
        assert_untouched(&dp, &seg, "echo");
    }
    assert_eq!(flow_of(&dp, &base).stored, 0);
}

#[test]
fn retransmitted_add_addrs_are_stored_once() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    let base = Seg::v4();
    handshake(&dp, &base);
    let send = |id: u8| {
        let s = base
            .clone()
            .with(|s| s.opts = opts(&[&add_addr(id, addr("198.51.100.2"), None, false)]));
        assert_eq!(dp.entry(&s.frame()).verdict, XDP_DROP);
    };
    for _ in 0..3 {
        send(9);
    }
    send(4);
    send(9);
    // Each id has its slot (id % 16).
    let f = flow_of(&dp, &base);
    assert_eq!(f.stored, (1 << 9) | (1 << 4));
    assert_eq!((f.addr_ids[9], f.addr_ids[4]), (9, 4));
    assert_eq!(dp.event(FlowStat::AddAddrStored), 2);
    assert_eq!(dp.event(FlowStat::AddAddrDuplicate), 3);
    assert_eq!(dp.flow_addr_count(), 2);
    // 16 slots: ids 16 apart share one, the newer replaces the older.
    for id in 10..25 {
        send(id);
    }
    let f = flow_of(&dp, &base);
    assert_eq!(f.stored, 0xffff);
    assert_eq!(f.addr_ids[4], 20, "id 20 replaced id 4");
    assert_eq!(f.addr_ids[9], 9);
    assert_eq!(dp.flow_addr(&base.key(), 4).unwrap().bytes[3], 20);
}

#[test]
fn flows_at_or_above_remove_below_keep_their_add_addr() {
    need_kernel!();
    let mut dp = dp_with(&EMPTCP);
    let base = Seg::v4();
    handshake(&dp, &base);
    let mut f = flow_of(&dp, &base);
    f.bytes = REMOVE_BELOW;
    dp.put_flow(&base.key(), &f);
    let seg = base
        .clone()
        .with(|s| s.opts = opts(&[&add_addr(1, addr("198.51.100.2"), None, false)]));
    assert_untouched(&dp, &seg, "big flow");
    // An untracked flow is not touched either.
    let other = seg.clone().with(|s| s.sport = 444);
    assert_untouched(&dp, &other, "untracked");
    assert_eq!(dp.flow_addr_count(), 0);
}

// ---- recover_add_addr ------------------------------------------------------

#[test]
fn recover_inserts_into_a_pure_ack_with_room() {
    need_kernel!();
    let a4 = addr("198.51.100.2");
    let a6: IpAddr = "2001:db8:1::2".parse().unwrap();
    let cases: Vec<(&str, Seg, Vec<u8>)> = vec![
        ("v4", Seg::v4(), add_addr(2, a4, None, false)),
        (
            "v4 vlan",
            Seg::v4().with(|s| s.vlans = vec![100]),
            add_addr(2, a4, Some(80), false),
        ),
        (
            "v4 qinq + ip options",
            Seg::v4().with(|s| {
                s.vlans = vec![100, 200];
                s.ip_opts = vec![1, 1, 1, 0];
            }),
            add_addr(2, a4, None, false),
        ),
        ("v6", Seg::v6(), add_addr(2, a6, None, false)),
        (
            "v6 vlan",
            Seg::v6().with(|s| s.vlans = vec![7]),
            add_addr(2, a6, Some(80), false),
        ),
    ];
    for (name, base, aa) in cases {
        let dp = dp_with(&EMPTCP);
        store_then_grow(&dp, &base, &aa);
        assert_ne!(
            flow_of(&dp, &base).flags & FLOW_RECOVER_PENDING,
            0,
            "{name}"
        );
        // Room: a bare DSS with a 4-byte data ACK (8 bytes) leaves 32.
        let ack = base.clone().with(|s| {
            s.opts = opts(&[&dss(Some((1 + RECOVER_AT, 4)), None)]);
        });
        let mut o = ack.opts.clone();
        o.extend(opts(&[&aa]));
        let want = ack.clone().with(|s| s.opts = o);
        assert_becomes(&dp, &ack, &want, name);
        let f = flow_of(&dp, &base);
        assert_eq!(
            (f.recovered, f.add_addr_recovered),
            (1 << 2, 1),
            "{name}: slot of id 2"
        );
        assert_eq!(f.flags & FLOW_RECOVER_PENDING, 0, "{name}: pending cleared");
        // Inserted once only (until the retry time: the stack has not
        // confirmed it).
        assert_eq!(dp.event(FlowStat::AddAddrRecovered), 1);
        assert_not_again_before_retry(&dp, &base, &ack, &want, name);
    }
}

#[test]
fn recover_one_option_per_packet_in_slot_order() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    let base = Seg::v4();
    let a = add_addr(1, addr("198.51.100.2"), None, false);
    let b = add_addr(2, addr("203.0.113.2"), None, false);
    handshake(&dp, &base);
    for aa in [&a, &b] {
        let s = base.clone().with(|s| s.opts = opts(&[aa]));
        assert_eq!(dp.entry(&s.frame()).verdict, XDP_DROP);
    }
    let ack = |v| pure_ack(&base, v);
    dp.entry(&ack(1).frame());
    // The packet that crosses recover_at already gets the first option:
    // record_flow runs first in the chain.
    for (v, aa) in [(1 + RECOVER_AT, &a), (2 + RECOVER_AT, &b)] {
        let seg = ack(v);
        let mut o = seg.opts.clone();
        o.extend_from_slice(aa);
        assert_becomes(&dp, &seg, &seg.clone().with(|s| s.opts = o), "in order");
    }
    let last = ack(3 + RECOVER_AT);
    let mut o = last.opts.clone();
    o.extend_from_slice(&a);
    let retried = last.clone().with(|s| s.opts = o);
    assert_not_again_before_retry(&dp, &base, &last, &retried, "all recovered");
    assert_eq!(flow_of(&dp, &base).recovered, 0b110, "slots of ids 1 and 2");
}

#[test]
fn recover_without_room_leaves_the_packet_and_marks_the_flow() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    let base = Seg::v4();
    store_then_grow(&dp, &base, &add_addr(1, addr("198.51.100.2"), None, false));
    assert_eq!(dp.event(FlowStat::RecoverPendingNoRoom), 1);
    let f = flow_of(&dp, &base);
    assert_ne!(f.flags & FLOW_RECOVER_PENDING, 0);
    assert_eq!(f.recovered, 0);
    // What a duplicate-ACK builder needs is there: rcv_nxt of the newest
    // segment (seq + 100 bytes of payload), ack, window, timestamps, MACs.
    let big = full_data(&base);
    assert_eq!(f.rcv_nxt, big.seq + 100);
    assert_eq!(
        (f.ack, f.window, f.tsval, f.tsecr),
        (big.ack, big.window, 1, 1)
    );
    assert_eq!(&f.mac[6..], &SERVER_MAC);
    // 28 bytes of options leave 12, too few for the 16-byte option.
    let tight = base.clone().with(|s| {
        s.opts = opts(&[
            &ts(5, 5),
            &dss(Some((RECOVER_AT + 5, 8)), None),
            &[1, 1, 1, 1],
        ])
    });
    assert_eq!(tight.opts.len(), 28);
    assert_untouched(&dp, &tight, "28 bytes of options: no room for 16");
}

#[test]
fn recover_as_a_single_action_with_metadata() {
    need_kernel!();
    // count and drop after recover prove the chain position (XDP metadata)
    // survived the head adjust: the tail calls went on.
    let mut dp = dp_with(&[
        (Action::RecoverAddAddr, 0),
        (Action::Count, 0),
        (Action::Drop, 0),
    ]);
    let base = Seg::v6().with(|s| s.vlans = vec![3]);
    let aa = add_addr(5, "2001:db8:1::9".parse().unwrap(), Some(443), false);
    let mut st = StoredAddAddr {
        len: aa.len() as u8,
        ..StoredAddAddr::default()
    };
    st.bytes[..aa.len()].copy_from_slice(&aa);
    dp.put_flow_addr(&base.key(), 3, &st);
    let mut f = FlowState {
        chain: CHAIN,
        bytes: RECOVER_AT,
        stored: 1 << 3,
        ..FlowState::default()
    };
    f.addr_ids[3] = 5;
    dp.put_flow(&base.key(), &f);
    let seg = base
        .clone()
        .with(|s| s.opts = opts(&[&dss(Some((1, 4)), None)]));
    let r = dp.action(Action::RecoverAddAddr, CHAIN, 0, &seg.frame());
    assert_eq!(r.verdict, XDP_DROP, "count and drop ran after the insert");
    assert_eq!(dp.chain_packets(CHAIN), 1);
    assert_eq!(dp.outcome(Action::RecoverAddAddr, Outcome::Error), 0);
    let mut o = seg.opts.clone();
    o.extend(opts(&[&aa]));
    assert_frame_eq(
        &r.frame,
        &seg.clone().with(|s| s.opts = o).frame(),
        "action",
    );
    assert_checksums_valid(&r.frame);
    assert_eq!(flow_of(&dp, &base).recovered, 1 << 3);
}

// ---- set_backup ------------------------------------------------------------

#[test]
fn set_backup_inserts_mp_prio() {
    need_kernel!();
    for base in [Seg::v4(), Seg::v6(), Seg::v4().with(|s| s.vlans = vec![9])] {
        for backup in [true, false] {
            let dp = dp_with(&[(Action::SetBackup, backup as u32)]);
            let seg = pure_ack(&base, 77);
            let mut o = seg.opts.clone();
            o.extend(opts(&[&mp_prio(backup)]));
            assert_eq!(&o[20..], &[1, 30, 3, 0x50 | backup as u8]);
            assert_becomes(&dp, &seg, &seg.clone().with(|s| s.opts = o), "insert");
            assert_eq!(dp.event(FlowStat::MpPrioInserted), 1);
        }
    }
}

/// `seg` with NOP + MP_PRIO(`backup`) after its options.
fn with_prio(seg: &Seg, backup: bool) -> Seg {
    let mut o = seg.opts.clone();
    o.extend(opts(&[&mp_prio(backup)]));
    seg.clone().with(|s| s.opts = o)
}

#[test]
fn set_backup_signals_once_per_subflow_and_value() {
    need_kernel!();
    let steps = |b: u32| [(Action::RecordFlow, 0), (Action::SetBackup, b)];
    for base in [Seg::v4(), Seg::v6()] {
        let mut dp = dp_with(&steps(1));
        handshake(&dp, &base);
        let token = flow_of(&dp, &base).token;
        // A subflow the peer joined to the connection (its MP_JOIN SYN).
        let joined = base.clone().with(|s| {
            s.sport = 444;
            s.seq = 7_000_000;
        });
        let mut join = vec![30, 12, 0x10, 2];
        join.extend_from_slice(&token.to_be_bytes());
        join.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let syn = joined.clone().with(|s| {
            s.flags = SYN;
            s.ack = 0;
            s.seq = joined.seq.wrapping_sub(1);
            s.opts = opts(&[&wscale(5), &join]);
        });
        assert_untouched(&dp, &syn, "MP_JOIN SYN");
        assert!(dp.join(&joined.key()).is_some(), "join mapped");
        for sub in [&base, &joined] {
            let ack = pure_ack(sub, 77);
            assert_becomes(&dp, &ack, &with_prio(&ack, true), "first segment");
            assert_untouched(&dp, &ack, "second segment of the subflow");
        }
        // The chain now asks for the other value: signalled again, once.
        dp.chain(CHAIN, &steps(0), TH, LO);
        for sub in [&base, &joined] {
            let ack = pure_ack(sub, 78);
            assert_becomes(&dp, &ack, &with_prio(&ack, false), "changed value");
            assert_untouched(&dp, &ack, "changed value, again");
        }
        assert_eq!(dp.event(FlowStat::MpPrioInserted), 4);
        // An untracked subflow has nowhere to remember it: every segment.
        let other = base.clone().with(|s| s.sport = 445);
        let ack = pure_ack(&other, 77);
        assert_becomes(&dp, &ack, &with_prio(&ack, false), "untracked");
        assert_becomes(&dp, &ack, &with_prio(&ack, false), "untracked, again");
    }
}

#[test]
fn set_backup_rewrites_an_existing_mp_prio() {
    need_kernel!();
    for base in [Seg::v4(), Seg::v6()] {
        for (have, want) in [(false, true), (true, false)] {
            let dp = dp_with(&[(Action::SetBackup, want as u32)]);
            // The flag byte at an odd option offset, then at an even one.
            let odd = opts(&[&mp_prio(have), &dss(Some((5, 4)), None)]);
            let mut even = dss(Some((5, 4)), None);
            even.extend(mp_prio(have));
            even.push(1);
            for (o, at) in [(odd, 3), (even, 10)] {
                assert_eq!(o[at - 2..at], [30, 3]);
                let seg = base.clone().with(|s| s.opts = o.clone());
                let mut w = o.clone();
                w[at] = 0x50 | want as u8;
                assert_becomes(&dp, &seg, &seg.clone().with(|s| s.opts = w), "rewrite");
            }
            assert_eq!(dp.event(FlowStat::MpPrioRewritten), 2);
        }
    }
}

#[test]
fn set_backup_leaves_other_packets_alone() {
    need_kernel!();
    let dp = dp_with(&[(Action::SetBackup, 1)]);
    let base = Seg::v4();
    let cases = [
        ("plain TCP", base.clone().with(|s| s.opts = ts(1, 2))),
        (
            "already backup",
            base.clone().with(|s| s.opts = opts(&[&mp_prio(true)])),
        ),
        ("no room", full_data(&base)),
        ("SYN-ACK", syn_ack(&base)),
        (
            "RST",
            base.clone().with(|s| {
                s.flags = RST;
                s.opts = opts(&[&dss(Some((1, 4)), None)]);
            }),
        ),
    ];
    for (name, seg) in cases {
        assert_untouched(&dp, &seg, name);
    }
    assert_eq!(dp.event(FlowStat::MpPrioNoRoom), 1);
}

// ---- set_window ------------------------------------------------------------

#[test]
fn set_window_scales_by_the_remote_shift() {
    need_kernel!();
    for base in [Seg::v4(), Seg::v6()] {
        for (bytes, field) in [(1_000_000u32, 7812u16), (100_000_000, 65535), (64, 0)] {
            let dp = dp_with(&[(Action::RecordFlow, 0), (Action::SetWindow, bytes)]);
            // The SYN-ACK's window is never scaled.
            let sa = syn_ack(&base);
            let want = sa.clone().with(|s| s.window = bytes.min(65535) as u16);
            assert_becomes(&dp, &sa, &want, "SYN-ACK window");
            assert_eq!(flow_of(&dp, &base).wscale, 7);
            let seg = pure_ack(&base, 9).with(|s| s.payload = vec![1, 2, 3]);
            assert_becomes(&dp, &seg, &seg.clone().with(|s| s.window = field), "window");
            assert_eq!(dp.event(FlowStat::WindowRewritten), 2);
        }
    }
}

#[test]
fn set_window_needs_the_shift() {
    need_kernel!();
    let mut dp = dp_with(&[(Action::SetWindow, 1000)]);
    let seg = pure_ack(&Seg::v4(), 9);
    assert_untouched(&dp, &seg, "untracked flow");
    assert_eq!(dp.event(FlowStat::WindowScaleUnknown), 1);
    // Run as a single action too.
    let r = dp.action(Action::SetWindow, CHAIN, 0, &seg.frame());
    assert_eq!(r.verdict, XDP_PASS);
    assert_frame_eq(&r.frame, &seg.frame(), "single action");
}

// ---- cost ------------------------------------------------------------------

/// Prints the per-packet cost of the hot paths (BPF_PROG_TEST_RUN clock,
/// mean of 10^5 runs). Informational: the benchmark with ratios to a bare
/// program is `emptcp-bench-datapath`.
#[test]
#[ignore = "timing, run by hand with --ignored --nocapture"]
fn per_packet_cost() {
    need_kernel!();
    let mut dp = dp_with(&EMPTCP);
    let base = Seg::v4();
    handshake(&dp, &base);
    let n = 100_000;
    let other = pure_ack(&base, 1).with(|s| s.dport = 1);
    let tracked = pure_ack(&base, 1);
    let data = full_data(&base);
    let mut f = flow_of(&dp, &base);
    f.bytes = RECOVER_AT;
    dp.put_flow(&base.key(), &f);
    let mut udp = other.frame();
    udp[14 + 9] = 17;
    for (name, frame) in [
        ("UDP (entry only)", udp),
        ("untracked pure ACK", other.frame()),
        ("tracked pure ACK, nothing to do", tracked.frame()),
        ("tracked full data segment", data.frame()),
    ] {
        println!("{name:>34}: {:?} per packet", dp.time("entry", &frame, n));
    }
}

/// A chain selecting two IPv4 networks (the common two-path policy) takes
/// packets from either, compared inline with no trie lookup (its `SEL_V4`
/// is left empty here, so a trie lookup would find nothing), and no
/// packet from a third network; the interface value is the reconciler's
/// own encoding (`plan::iface_filter`, `codec::iface_to_kernel`).
#[test]
fn two_inline_ipv4_prefixes_select_either_network_and_no_other() {
    need_kernel!();
    use emptcp::state::{Dir, Entries, IfaceEntry, PrefixEntry};
    let mut dp = Dp::load();
    dp.chain(1, &[(Action::Count, 0)], TH, LO);
    let mut e = Entries::default();
    for net in ["192.0.2.0/24", "198.51.100.0/24"] {
        e.prefixes.insert(PrefixEntry {
            chain: 1,
            dir: Dir::Remote,
            prefix: net.parse().unwrap(),
        });
    }
    e.selectors.insert(1, emptcp_common::SEL_REMOTE);
    let iface = IfaceEntry {
        name: "lo".into(),
        filter: emptcp::plan::iface_filter(&[1], &e),
        chains: vec![1],
        capture: false,
        raw_ip: false,
        skb: false,
        track: false,
    };
    dp.put_iface(emptcp::codec::iface_to_kernel(LO, &iface));
    for (src, taken) in [
        ("192.0.2.2", true),
        ("198.51.100.2", true),
        ("203.0.113.2", false),
        ("198.51.101.2", false),
    ] {
        let before = dp.chain_packets(1);
        let seg = Seg::v4().with(|s| s.src = src.parse().unwrap());
        assert_untouched(&dp, &seg, src);
        let counted = dp.chain_packets(1) - before;
        assert_eq!(counted, taken as u64, "{src}: counted {counted}");
    }
}
