//! The ingress chains on the TC hook (`tc_entry` and the `tc_*` action
//! programs, after GRO) on the real kernel (BPF_PROG_TEST_RUN with an skb).
//!
//! The XDP hook's tests (datapath_actions.rs and the others) compare every
//! output byte with frames built independently; here the same scenarios
//! run through both hooks, each on an object of its own, and every verdict,
//! every output byte and what the chain left behind (the connection, its
//! stored options, the counters) must be the same: the TC hook does to
//! each packet what the XDP hook does. What only the TC hook meets (GSO
//! skbs, which GRO makes) is tested on its own.
//!
//! Needs CAP_BPF/CAP_NET_ADMIN/CAP_SYS_ADMIN (loads programs); fails
//! without them unless EMPTCP_ALLOW_SKIP=1 (tests/common/gate.rs).
#[macro_use]
mod datapath_common;

use datapath_common::{tc_ingress::*, *};
use emptcp_common::{Action, FLOW_RECOVER_PENDING, FlowStat, Outcome};

/// Every datapath event, compared between the hooks.
const EVENTS: [FlowStat; 12] = [
    FlowStat::FlowsCreated,
    FlowStat::FlowsRemoved,
    FlowStat::AddAddrDroppedPureAck,
    FlowStat::AddAddrNopped,
    FlowStat::AddAddrRecovered,
    FlowStat::AddAddrLost,
    FlowStat::RecoverPendingNoRoom,
    FlowStat::InsertSkippedHasAddAddr,
    FlowStat::MpPrioInserted,
    FlowStat::MpPrioRewritten,
    FlowStat::WindowRewritten,
    FlowStat::Malformed,
];

/// Runs `segs` in order through a fresh object with chain `steps` on each
/// hook: the same verdicts and bytes out (valid checksums where a frame
/// changed), the same connection state and counters after. Returns the XDP
/// side, for the caller to check that the scenario did what it is for.
fn same_on_both_hooks(what: &str, steps: &[(Action, u32)], base: &Seg, segs: &[Seg]) -> Dp {
    let xdp = dp_with(steps);
    let tc = tc_with(steps);
    for (i, s) in segs.iter().enumerate() {
        let f = s.frame();
        let (x, t) = (xdp.entry(&f), tc.entry(&f));
        let at = format!("{what}, segment {i}");
        assert_eq!(t.verdict, x.verdict, "{at}: verdict");
        assert_frame_eq(&t.frame, &x.frame, &at);
        if x.frame != f && x.verdict == XDP_PASS {
            assert_checksums_valid(&t.frame);
        }
    }
    let (fx, ft) = (xdp.flow(&base.key()), tc.dp.flow(&base.key()));
    assert_eq!(fx.is_some(), ft.is_some(), "{what}: connection tracked");
    if let (Some(fx), Some(ft)) = (fx, ft) {
        let state = |f: &emptcp_common::FlowState| {
            (
                f.bytes,
                f.flags,
                f.stored,
                f.recovered,
                f.rcv_nxt,
                f.ack,
                (f.tsval, f.tsecr),
                f.window,
                f.mac,
                f.token,
                f.ifindex,
            )
        };
        assert_eq!(state(&ft), state(&fx), "{what}: connection state");
    }
    for slot in 0..16 {
        let (sx, st) = (
            xdp.flow_addr(&base.key(), slot),
            tc.dp.flow_addr(&base.key(), slot),
        );
        assert_eq!(
            st.map(|v| (v.len, v.bytes)),
            sx.map(|v| (v.len, v.bytes)),
            "{what}: stored option of slot {slot}"
        );
    }
    for e in EVENTS {
        assert_eq!(tc.dp.event(e), xdp.event(e), "{what}: event {e:?}");
    }
    for (a, _) in steps {
        for o in [Outcome::Applied, Outcome::Passed, Outcome::Error] {
            assert_eq!(
                tc.dp.outcome(*a, o),
                xdp.outcome(*a, o),
                "{what}: {} {o:?}",
                a.name()
            );
        }
    }
    xdp
}

#[test]
fn every_tc_ingress_program_passes_the_verifier() {
    need_kernel!();
    let tc = tc_with(&EMPTCP);
    // Loading them all is what `Tc::on` does; name them to be sure none
    // was left out.
    let mut want: Vec<String> = Action::ALL
        .iter()
        .map(|a| format!("tc_{}", a.name()))
        .collect();
    want.push("tc_entry".into());
    want.push(format!("tc_{}", emptcp_common::RECORD_SETUP));
    for name in want {
        let p = tc
            .dp
            .ebpf
            .program(&name)
            .unwrap_or_else(|| panic!("{name}"));
        assert!(p.fd().is_ok(), "{name} loaded");
    }
}

/// The product's chain over a connection's life: created by its SYN-ACK,
/// ADD_ADDRs stored while small (a pure ACK dropped, a data segment's
/// option NOP-ed), the size grown past recover_at by DSS mappings and data
/// ACKs, the stored options re-inserted (into a pure ACK and into a data
/// segment with room: on TC the headers move into room opened after the
/// link-layer header, the payload stays), then closed by a FIN.
#[test]
fn the_data_chain_does_on_tc_what_it_does_on_xdp() {
    need_kernel!();
    for (name, base, a1, a2) in [
        (
            "v4",
            Seg::v4(),
            add_addr(1, addr("198.51.100.2"), None, false),
            add_addr(2, addr("203.0.113.2"), Some(8080), false),
        ),
        (
            "v4 ip options",
            Seg::v4().with(|s| s.ip_opts = vec![1, 1, 1, 0]),
            add_addr(1, addr("198.51.100.2"), None, false),
            add_addr(2, addr("203.0.113.2"), None, false),
        ),
        (
            "v6",
            Seg::v6(),
            add_addr(1, "2001:db8:1::2".parse().unwrap(), None, false),
            add_addr(2, "2001:db8:2::2".parse().unwrap(), Some(8080), false),
        ),
    ] {
        // A data segment: a DSS mapping of `len` bytes at `dsn`, or
        // (`ack`) only a data ACK, which leaves room for an option.
        let data = |dsn: u64, len: u16| {
            base.clone().with(|s| {
                s.opts = opts(&[&ts(7, 8), &dss(Some((1, 4)), Some((dsn, 4, 1, len)))]);
                s.payload = vec![0x5a; len as usize];
            })
        };
        let with_ack = |ack: u64, extra: &[u8], payload: usize| {
            base.clone().with(|s| {
                s.opts = opts(&[extra, &dss(Some((ack, 4)), None)]);
                s.payload = vec![0x3c; payload];
            })
        };
        let segs = vec![
            syn_ack(&base),
            // Small: the first option on a pure ACK (dropped, stored), the
            // second on a data segment (NOP-ed, stored).
            base.clone().with(|s| s.opts = opts(&[&ts(5, 6), &a1])),
            with_ack(1, &a2, 33),
            data(1, 1400),
            // Past recover_at by the data ACK.
            base.clone()
                .with(|s| s.opts = opts(&[&dss(Some((2 + RECOVER_AT, 8)), None)])),
            // Room: slot 1 into a pure ACK, slot 2 into a data segment.
            with_ack(3 + RECOVER_AT, &[], 0),
            with_ack(4 + RECOVER_AT, &[], 300),
            // Delivered, not confirmed: nothing again before the retry.
            with_ack(5 + RECOVER_AT, &[], 0),
        ];
        let dp = same_on_both_hooks(name, &EMPTCP, &base, &segs);
        // What the scenario is for, each once.
        for (e, n) in [
            (FlowStat::FlowsCreated, 1),
            (FlowStat::AddAddrDroppedPureAck, 1),
            (FlowStat::AddAddrNopped, 1),
            (FlowStat::AddAddrRecovered, 2),
        ] {
            assert_eq!(dp.event(e), n, "{name}: {e:?}");
        }
        // A FIN counts only in order: at the connection's rcv_nxt.
        let rcv_nxt = flow_of(&dp, &base).rcv_nxt;
        let fin = base.clone().with(|s| {
            s.flags = datapath_common::FIN | datapath_common::ACK;
            s.seq = rcv_nxt;
        });
        let mut all = segs.clone();
        all.push(fin);
        let dp = same_on_both_hooks(&format!("{name}, closed"), &EMPTCP, &base, &all);
        assert_eq!(dp.event(FlowStat::FlowsRemoved), 1, "{name}: closed");
    }
}

#[test]
fn set_backup_set_window_count_and_drop_do_on_tc_what_they_do_on_xdp() {
    need_kernel!();
    for base in [Seg::v4(), Seg::v6()] {
        let ack = pure_ack(&base, 77);
        let data = ack.clone().with(|s| s.payload = vec![1, 2, 3]);
        let prio = ack.clone().with(|s| {
            s.opts = opts(&[&dss(Some((78, 4)), None), &mp_prio(false)]);
        });
        let cases: [(&str, Vec<(Action, u32)>); 5] = [
            (
                "set_backup",
                vec![(Action::RecordFlow, 0), (Action::SetBackup, 1)],
            ),
            ("set_backup untracked", vec![(Action::SetBackup, 1)]),
            (
                "set_window",
                vec![(Action::RecordFlow, 0), (Action::SetWindow, 1_000_000)],
            ),
            ("count", vec![(Action::Count, 0)]),
            ("drop", vec![(Action::Count, 0), (Action::Drop, 0)]),
        ];
        for (name, steps) in cases {
            let segs = [syn_ack(&base), ack.clone(), data.clone(), prio.clone()];
            let dp = same_on_both_hooks(name, &steps, &base, &segs);
            // What each case is for.
            let (e, n) = match name {
                "set_backup" => (FlowStat::MpPrioInserted, 1),
                // Untracked: every segment with room gets one.
                "set_backup untracked" => (FlowStat::MpPrioInserted, 2),
                "set_window" => (FlowStat::WindowRewritten, 4),
                _ => (FlowStat::MpPrioInserted, 0),
            };
            assert_eq!(dp.event(e), n, "{name}: {e:?}");
            if name != "set_backup untracked" {
                let rewritten = dp.event(FlowStat::MpPrioRewritten);
                assert_eq!(rewritten, name.starts_with("set_backup") as u64, "{name}");
            }
            if name == "drop" {
                assert_eq!(dp.outcome(Action::Drop, Outcome::Applied), 4);
            }
            if name == "count" {
                assert_eq!(dp.chain_packets(CHAIN), 4);
            }
        }
    }
}

/// GRO hands TC super-packets (`gso_size` set): recover never grows one; the
/// connection is marked pending instead (the in-kernel duplicate ACK then
/// delivers the option), as for a packet without room.
#[test]
fn a_gso_skb_never_grows() {
    need_kernel!();
    let tc = tc_with(&EMPTCP);
    let base = Seg::v4();
    let aa = add_addr(2, addr("198.51.100.2"), None, false);
    assert_eq!(tc.entry(&syn_ack(&base).frame()).verdict, XDP_PASS);
    let s = base.clone().with(|s| s.opts = opts(&[&aa]));
    assert_eq!(tc.entry(&s.frame()).verdict, XDP_DROP, "stored by strip");
    // The size counts from the first data ACK.
    let first = base
        .clone()
        .with(|s| s.opts = opts(&[&ts(1, 1), &dss(Some((1, 8)), Some((1, 8, 1, 100)))]));
    assert_eq!(first.opts.len(), 40, "no room");
    tc.entry(&first.frame());
    let past = base.clone().with(|s| {
        s.opts = opts(&[&dss(Some((2 + RECOVER_AT, 8)), None)]);
        s.payload = vec![0x33; 1400];
    });
    let f = past.frame();
    let r = tc.entry_gso(&f, 700);
    assert_eq!(r.verdict, XDP_PASS);
    assert_frame_eq(&r.frame, &f, "GSO skb untouched");
    let flow = tc.dp.flow(&base.key()).expect("tracked");
    assert!(flow.bytes >= RECOVER_AT);
    assert_ne!(flow.flags & FLOW_RECOVER_PENDING, 0, "marked pending");
    assert_eq!(tc.dp.event(FlowStat::AddAddrRecovered), 0);
    assert_eq!(tc.dp.event(FlowStat::RecoverPendingNoRoom), 1);
    // Control: the same segment as a plain skb gets the option.
    let r = tc.entry(&f);
    assert_eq!(r.verdict, XDP_PASS);
    assert_eq!(r.frame.len(), f.len() + 16, "option inserted");
    assert_checksums_valid(&r.frame);
    assert_eq!(tc.dp.event(FlowStat::AddAddrRecovered), 1);
}
