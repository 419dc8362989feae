//! Field links on the real kernel (BPF_PROG_TEST_RUN): what the datapath
//! leaves in front of a packet, packets larger than their headers say,
//! segments whose checksum does not hold, and raw-IP frames.
//!
//! Needs root (loads programs); skips loudly otherwise.
#[macro_use]
mod datapath_common;

use datapath_common::*;
use emptcp_common::{Action, FlowState, IFACE_CAPTURE, Outcome};

/// A tracked flow of `base` of `bytes`, with the ADD_ADDR `aa` stored in
/// slot 0 and not re-inserted yet.
fn tracked_with_stored(dp: &mut Dp, base: &Seg, bytes: u64, aa: &[u8]) {
    let mut st = emptcp_common::StoredAddAddr {
        len: aa.len() as u8,
        ..Default::default()
    };
    st.bytes[..aa.len()].copy_from_slice(aa);
    dp.put_flow_addr(&base.key(), 0, &st);
    let mut f = FlowState {
        chain: CHAIN,
        bytes,
        stored: 1,
        ..FlowState::default()
    };
    f.addr_ids[0] = aa[3];
    dp.put_flow(&base.key(), &f);
}

// ---- metadata --------------------------------------------------------------

/// Every way out of every program leaves `data_meta == data`: the chain's
/// end (pass), drop, a grown head (insert), a failed tail call from the
/// entry and from an action, an action run without our description, and
/// the capture variant of the entry. `Dp::run` asserts `meta_left == 0`
/// on every run of every datapath test; this one walks the verdicts on
/// purpose and checks that each program really ran (counters), so a
/// passing case is not a packet that never reached the code.
#[test]
fn metadata_is_off_on_every_way_out() {
    need_kernel!();
    let aa4 = add_addr(2, addr("198.51.100.2"), None, false);
    for base in [Seg::v4(), Seg::v6()] {
        let fam = if base.src.is_ipv6() { "v6" } else { "v4" };
        // Not ours: no chain on the interface.
        let r = Dp::load().entry(&base.frame());
        assert_eq!((r.verdict, r.meta_left), (XDP_PASS, 0), "{fam}: no chain");

        // Chain end after an action that changes nothing.
        let dp = dp_with(&[(Action::Count, 0)]);
        let r = dp.entry(&base.frame());
        assert_eq!((r.verdict, r.meta_left), (XDP_PASS, 0), "{fam}: count");
        assert_eq!(dp.chain_packets(CHAIN), 1, "{fam}: count ran");

        // Drop.
        let dp = dp_with(&[(Action::Count, 0), (Action::Drop, 0)]);
        let r = dp.entry(&base.frame());
        assert_eq!((r.verdict, r.meta_left), (XDP_DROP, 0), "{fam}: drop");
        assert_eq!(dp.outcome(Action::Drop, Outcome::Applied), 1);

        // Strip drops the pure ACK whose only MPTCP option is ADD_ADDR.
        let mut dp = dp_with(&EMPTCP);
        dp.put_flow(
            &base.key(),
            &FlowState {
                chain: CHAIN,
                ..FlowState::default()
            },
        );
        let only = base.clone().with(|s| s.opts = opts(&[&aa4]));
        let r = dp.entry(&only.frame());
        assert_eq!((r.verdict, r.meta_left), (XDP_DROP, 0), "{fam}: strip drop");
        // Strip NOPs it on a segment with another MPTCP option.
        let with_dss = base
            .clone()
            .with(|s| s.opts = opts(&[&dss(Some((5, 4)), None), &aa4]));
        let r = dp.entry(&with_dss.frame());
        assert_eq!((r.verdict, r.meta_left), (XDP_PASS, 0), "{fam}: strip nop");
        assert_eq!(dp.outcome(Action::StripAddAddr, Outcome::Applied), 2);

        // Recover grows the head (the metadata moves with it).
        let mut dp = dp_with(&EMPTCP);
        tracked_with_stored(&mut dp, &base, 30_000, &aa4);
        let r = dp.entry(&pure_ack(&base, 1).frame());
        assert_eq!((r.verdict, r.meta_left), (XDP_PASS, 0), "{fam}: recover");
        assert_eq!(dp.outcome(Action::RecoverAddAddr, Outcome::Applied), 1);
        assert_eq!(r.frame.len(), pure_ack(&base, 1).frame().len() + 16);

        // set_backup inserts, set_window rewrites.
        let dp = dp_with(&[(Action::SetBackup, 1), (Action::SetWindow, 1000)]);
        let r = dp.entry(&pure_ack(&base, 1).with(|s| s.flags |= SYN).frame());
        assert_eq!((r.verdict, r.meta_left), (XDP_PASS, 0), "{fam}: window");
        let r = dp.entry(&pure_ack(&base, 1).frame());
        assert_eq!((r.verdict, r.meta_left), (XDP_PASS, 0), "{fam}: backup");
        assert_eq!(dp.outcome(Action::SetBackup, Outcome::Applied), 1);

        // A malformed segment through the whole chain.
        let mut bad = base.frame();
        bad[l4(base.src.is_ipv6()) + 12] = 0x40;
        let r = dp_with(&EMPTCP).entry(&bad);
        assert_eq!((r.verdict, r.meta_left), (XDP_PASS, 0), "{fam}: malformed");

        // A failed tail call from the entry, and from an action: an error
        // of the step that could not run (the packet reached it), the
        // caller's own outcome unchanged.
        let mut dp = dp_with(&[(Action::RecordFlow, 0)]);
        dp.clear_slot(Action::RecordFlow as u32);
        let r = dp.entry(&base.frame());
        assert_eq!((r.verdict, r.meta_left), (XDP_PASS, 0), "{fam}: entry call");
        assert_eq!(dp.outcome(Action::RecordFlow, Outcome::Error), 1);
        assert_eq!(dp.entry_outcome(Outcome::Applied), 1);
        assert_eq!(dp.entry_outcome(Outcome::Error), 0);
        let mut dp = dp_with(&[(Action::Count, 0), (Action::RecordFlow, 0)]);
        dp.clear_slot(Action::RecordFlow as u32);
        let r = dp.entry(&base.frame());
        assert_eq!(
            (r.verdict, r.meta_left),
            (XDP_PASS, 0),
            "{fam}: action call"
        );
        assert_eq!(dp.outcome(Action::RecordFlow, Outcome::Error), 1);
        assert_eq!(dp.outcome(Action::Count, Outcome::Applied), 1);
        assert_eq!(dp.outcome(Action::Count, Outcome::Seen), 1);

        // Each action run straight from the description (as after the
        // entry), and without it (not sent by our entry).
        for a in Action::ALL {
            let a = &a;
            let mut dp = dp_with(&[(*a, 1)]);
            let r = dp.action(*a, CHAIN, 0, &pure_ack(&base, 1).frame());
            assert_eq!(r.meta_left, 0, "{fam}: {} with metadata", a.name());
            assert_eq!(dp.outcome(*a, Outcome::Seen), 1);
            let r = dp.bare(a.name(), &base.frame());
            assert_eq!(
                (r.verdict, r.meta_left),
                (XDP_PASS, 0),
                "{fam}: bare {}",
                a.name()
            );
        }

        // The capture variant of the entry, with and without a chain.
        for chains in [&[CHAIN][..], &[]] {
            let mut dp = dp_with(&[(Action::Count, 0)]);
            dp.iface(LO, chains, IFACE_CAPTURE);
            let r = dp.entry(&base.frame());
            assert_eq!((r.verdict, r.meta_left), (XDP_PASS, 0), "{fam}: capture");
        }
    }
}

// ---- packets larger than their header says ---------------------------------

/// Every step with work to do on a packet of `base` (a tracked flow past
/// recover_at with an option to re-insert, MP_PRIO and window rewrites).
const ALL_WORK: [(Action, u32); 5] = [
    (Action::RecordFlow, 0),
    (Action::StripAddAddr, 0),
    (Action::RecoverAddAddr, 0),
    (Action::SetBackup, 1),
    (Action::SetWindow, 1000),
];

fn ready_to_insert(base: &Seg) -> Dp {
    let mut dp = dp_with(&ALL_WORK);
    tracked_with_stored(
        &mut dp,
        base,
        30_000,
        &add_addr(2, addr("198.51.100.2"), None, false),
    );
    dp
}

/// IPv4 total length 0 (BIG TCP / GSO super-packets), IPv6 payload length
/// 0 (jumbograms, BIG TCP) and IP lengths beyond the frame leave the chain
/// byte for byte as they came, with the flow unchanged; the control (the
/// same segment with its real length) is rewritten by the same chain.
#[test]
fn packets_larger_than_their_header_says_pass_untouched() {
    need_kernel!();
    for base in [Seg::v4(), Seg::v6()] {
        let v6 = base.src.is_ipv6();
        let fam = if v6 { "v6" } else { "v4" };
        let seg = pure_ack(&base, 1).with(|s| s.payload = vec![0x5a; 1000]);
        let good = seg.frame();
        let len_at = if v6 { 14 + 4 } else { 14 + 2 };
        let variants: Vec<(&str, Vec<u8>)> = vec![
            ("IP length 0", {
                let mut f = good.clone();
                set16(&mut f, len_at, 0);
                f
            }),
            ("IP length 65535 past the frame", {
                let mut f = good.clone();
                set16(&mut f, len_at, 0xffff);
                f
            }),
            ("IP length one byte short of the TCP header", {
                let mut f = good.clone();
                set16(&mut f, len_at, if v6 { 19 } else { 39 });
                f
            }),
        ];
        for (what, f) in variants {
            let dp = ready_to_insert(&base);
            let before = dp.flow(&base.key()).unwrap();
            let r = dp.entry(&f);
            assert_eq!(r.verdict, XDP_PASS, "{fam}: {what}");
            assert_frame_eq(&r.frame, &f, &format!("{fam}: {what}"));
            let after = dp.flow(&base.key()).unwrap();
            assert_eq!(
                (after.bytes, after.recovered, after.rcv_nxt),
                (before.bytes, before.recovered, before.rcv_nxt),
                "{fam}: {what}: flow unchanged"
            );
        }
        // Control: the real length, same chain: option inserted (and
        // MP_PRIO and the window rewritten).
        let dp = ready_to_insert(&base);
        let r = dp.entry(&good);
        // ADD_ADDR (16) and MP_PRIO (NOP + 3).
        assert_eq!(r.frame.len(), good.len() + 16 + 4, "{fam}: control grew");
        assert_checksums_valid(&r.frame);
    }
}

/// In generic (skb) XDP an insert into IPv4 would break a
/// CHECKSUM_COMPLETE skb's csum: it is refused (the flow waits for a
/// forged duplicate ACK, as without room), while IPv6, whose payload
/// length is in the summed header, still gets it.
#[test]
fn skb_mode_refuses_ipv4_inserts_only() {
    need_kernel!();
    for base in [Seg::v4(), Seg::v6()] {
        let v6 = base.src.is_ipv6();
        let mut dp = dp_with(&[(Action::RecordFlow, 0), (Action::RecoverAddAddr, 0)]);
        dp.iface(LO, &[CHAIN], emptcp_common::IFACE_SKB);
        tracked_with_stored(
            &mut dp,
            &base,
            30_000,
            &add_addr(2, addr("198.51.100.2"), None, false),
        );
        let f = pure_ack(&base, 1).frame();
        let r = dp.entry(&f);
        let flow = dp.flow(&base.key()).unwrap();
        if v6 {
            assert_eq!(r.frame.len(), f.len() + 16, "v6: inserted");
            assert_checksums_valid(&r.frame);
            assert_eq!(flow.recovered, 1);
        } else {
            assert_frame_eq(&r.frame, &f, "v4 in skb mode");
            assert_eq!(flow.recovered, 0);
            assert_ne!(flow.flags & emptcp_common::FLOW_RECOVER_PENDING, 0);
            assert_eq!(dp.event(emptcp_common::FlowStat::RecoverPendingNoRoom), 1);
        }
        assert_eq!(dp.outcome(Action::RecoverAddAddr, Outcome::Error), 0);
    }
}

// ---- checksums -------------------------------------------------------------

/// An ADD_ADDR is stored only from a segment whose TCP checksum holds: a
/// frame with a corrupted option, payload byte or checksum passes
/// untouched (not NOP-ed, not dropped), stores nothing and is counted
/// malformed; the same segment with its real checksum is stored (short
/// and multi-chunk segments, odd lengths, both families).
#[test]
fn add_addr_from_a_segment_with_a_bad_checksum_is_not_stored() {
    need_kernel!();
    let aa = add_addr(2, addr("198.51.100.2"), None, false);
    for base in [Seg::v4(), Seg::v6()] {
        let v6 = base.src.is_ipv6();
        let t = l4(v6);
        for (carrier, payload) in [
            ("pure ACK", 0usize),
            ("data", 1),
            ("data", 1401),
            ("data", 3000),
        ] {
            let seg = base.clone().with(|s| {
                s.opts = if payload == 0 {
                    opts(&[&aa])
                } else {
                    opts(&[&dss(Some((5, 4)), None), &aa])
                };
                s.payload = (0..payload).map(|i| i as u8).collect();
            });
            let good = seg.frame();
            let aa_at = t + 20 + seg.opts.len() - aa.len();
            let mut bad: Vec<(&str, Vec<u8>)> = vec![];
            let mut f = good.clone();
            f[aa_at + 7] ^= 0x40; // the address
            bad.push(("corrupted address", f));
            let mut f = good.clone();
            f[t + 17] ^= 1;
            bad.push(("corrupted checksum", f));
            if payload != 0 {
                let mut f = good.clone();
                let last = f.len() - 1;
                f[last] ^= 0x80;
                bad.push(("corrupted last payload byte", f));
            }
            let what = format!("{} {carrier} +{payload}", if v6 { "v6" } else { "v4" });
            for (how, f) in bad {
                let mut dp = dp_with(&EMPTCP);
                dp.put_flow(
                    &base.key(),
                    &FlowState {
                        chain: CHAIN,
                        ..FlowState::default()
                    },
                );
                let r = dp.entry(&f);
                assert_eq!(r.verdict, XDP_PASS, "{what}: {how}: verdict");
                assert_frame_eq(&r.frame, &f, &format!("{what}: {how}"));
                assert_eq!(dp.flow_addr_count(), 0, "{what}: {how}: stored");
                assert_eq!(dp.flow(&base.key()).unwrap().stored, 0);
                assert_eq!(
                    dp.event(emptcp_common::FlowStat::Malformed),
                    1,
                    "{what}: {how}"
                );
            }
            // Control: the real checksum.
            let mut dp = dp_with(&EMPTCP);
            dp.put_flow(
                &base.key(),
                &FlowState {
                    chain: CHAIN,
                    ..FlowState::default()
                },
            );
            let r = dp.entry(&good);
            assert_eq!(dp.flow_addr_count(), 1, "{what}: control stored");
            assert_eq!(dp.flow(&base.key()).unwrap().stored, 1 << 2, "slot of id 2");
            if payload == 0 {
                assert_eq!(r.verdict, XDP_DROP, "{what}: control");
            } else {
                assert_eq!(r.frame[aa_at..aa_at + aa.len()], vec![1u8; aa.len()][..]);
                assert_checksums_valid(&r.frame);
            }
            assert_eq!(dp.event(emptcp_common::FlowStat::Malformed), 0);
        }
    }
}

/// A sender with TX checksum offload (the default on veth) hands over
/// segments whose checksum field holds only the pseudo-header sum
/// (CHECKSUM_PARTIAL); such a segment's ADD_ADDR is stored and NOP-ed or
/// dropped as with a full checksum, and a NOP rewrite leaves the field as
/// it is (the pseudo-header did not change, and the device or the stack
/// sums the segment as it then is). A field in neither form stores
/// nothing and passes untouched.
#[test]
fn add_addr_from_a_checksum_offloaded_sender_is_stored() {
    need_kernel!();
    let aa = add_addr(2, addr("198.51.100.2"), None, false);
    for base in [Seg::v4(), Seg::v6()] {
        let v6 = base.src.is_ipv6();
        let t = l4(v6);
        for payload in [0usize, 1, 1401] {
            let seg = base.clone().with(|s| {
                s.opts = if payload == 0 {
                    opts(&[&aa])
                } else {
                    opts(&[&dss(Some((5, 4)), None), &aa])
                };
                s.payload = (0..payload).map(|i| i as u8).collect();
            });
            let what = format!("{} +{payload}", if v6 { "v6" } else { "v4" });
            let partial = partial_frame(&seg);
            assert_ne!(partial, seg.frame(), "{what}: the two forms differ");
            let tracked = || {
                let mut dp = dp_with(&EMPTCP);
                dp.put_flow(
                    &base.key(),
                    &FlowState {
                        chain: CHAIN,
                        ..FlowState::default()
                    },
                );
                dp
            };
            let dp = tracked();
            let r = dp.entry(&partial);
            assert_eq!(
                dp.flow(&base.key()).unwrap().stored,
                1 << 2,
                "{what}: stored"
            );
            assert_eq!(&dp.flow_addr(&base.key(), 2).unwrap().bytes[..16], &aa[..]);
            assert_eq!(dp.event(emptcp_common::FlowStat::Malformed), 0);
            if payload == 0 {
                assert_eq!(r.verdict, XDP_DROP, "{what}: pure ACK");
            } else {
                assert_eq!(r.verdict, XDP_PASS, "{what}");
                let at = seg.opts.len() - aa.len();
                let mut o = seg.opts.clone();
                o[at..].fill(1);
                let want = partial_frame(&seg.clone().with(|s| s.opts = o));
                assert_frame_eq(&r.frame, &want, &format!("{what}: NOP-ed, field kept"));
            }
            // Neither a full checksum nor the pseudo-header sum.
            let mut bad = partial.clone();
            bad[t + 16] ^= 0x01;
            let dp = tracked();
            let r = dp.entry(&bad);
            assert_eq!(r.verdict, XDP_PASS, "{what}: neither form");
            assert_frame_eq(&r.frame, &bad, &format!("{what}: neither form"));
            assert_eq!(dp.flow_addr_count(), 0, "{what}: neither form stored");
            assert_eq!(dp.event(emptcp_common::FlowStat::Malformed), 1);
        }
    }
}

// ---- raw-IP links ----------------------------------------------------------

/// The frame of `s` as a raw-IP link carries it: no Ethernet header.
fn raw(s: &Seg) -> Vec<u8> {
    assert!(s.vlans.is_empty());
    s.frame()[14..].to_vec()
}

/// A chain on a raw-IP interface (`IFACE_RAW_IP`).
fn raw_dp(steps: &[(Action, u32)]) -> Dp {
    let mut dp = dp_with(steps);
    dp.iface(LO, &[CHAIN], emptcp_common::IFACE_RAW_IP);
    dp
}

/// `got` (a raw frame) equals the raw form of `want`, with valid
/// checksums (checked by etherparse behind a dummy Ethernet header).
fn assert_raw(got: &Run, want: &Seg, what: &str) {
    assert_eq!(got.verdict, XDP_PASS, "{what}: verdict");
    assert_frame_eq(&got.frame, &raw(want), what);
    let mut eth = want.frame()[..14].to_vec();
    eth.extend_from_slice(&got.frame);
    assert_checksums_valid(&eth);
}

/// Every action on raw-IP frames (IPv4 and IPv6, L3 at byte 0), through
/// the entry program, against frames built independently; the controls:
/// the same raw frames on an Ethernet interface, and Ethernet frames on
/// the raw-IP interface, are not parsed (untouched, no flow).
#[test]
fn raw_ip_frames_through_every_action() {
    need_kernel!();
    for base in [Seg::v4(), Seg::v6()] {
        let fam = if base.src.is_ipv6() { "v6" } else { "v4" };
        let aa = if base.src.is_ipv6() {
            add_addr(3, addr("2001:db8:b::2"), None, false)
        } else {
            add_addr(3, addr("198.51.100.2"), Some(80), false)
        };
        let syn_ack = base.clone().with(|s| {
            s.flags = SYN | ACK;
            s.opts = opts(&[
                &[2, 4, 0x05, 0xb4],
                &wscale(7),
                &ts(1000, 500),
                &mp_capable(42),
            ]);
        });

        // record_flow: the SYN-ACK creates the flow (no MACs on raw IP).
        let dp = raw_dp(&EMPTCP);
        let r = dp.entry(&raw(&syn_ack));
        assert_raw(&r, &syn_ack, &format!("{fam}: SYN-ACK"));
        let f = dp.flow(&base.key()).expect("raw SYN-ACK created the flow");
        assert_eq!((f.wscale, f.mac), (7, [0; 12]), "{fam}");
        // strip: NOPs the option of a data segment...
        let data = base.clone().with(|s| {
            s.opts = opts(&[&dss(Some((10, 4)), None), &aa]);
            s.payload = vec![7; 100];
        });
        let want = data.clone().with(|s| {
            let n = s.opts.len();
            s.opts[n - aa.len()..].fill(1);
        });
        assert_raw(&dp.entry(&raw(&data)), &want, &format!("{fam}: strip"));
        assert_eq!(dp.flow_addr_count(), 1, "{fam}: stored");
        // ...and drops the pure ACK whose only MPTCP option it is.
        let only = base.clone().with(|s| s.opts = opts(&[&aa]));
        assert_eq!(dp.entry(&raw(&only)).verdict, XDP_DROP, "{fam}: strip drop");
        // recover: past recover_at, the next ACK with room gets it back.
        // A bare DSS (8 bytes): room for the 28-byte IPv6 form too.
        let grow = base
            .clone()
            .with(|s| s.opts = opts(&[&dss(Some((10 + 30_000, 4)), None)]));
        let mut o = grow.opts.clone();
        o.extend(opts(&[&aa]));
        let r = dp.entry(&raw(&grow));
        assert_raw(
            &r,
            &grow.clone().with(|s| s.opts = o),
            &format!("{fam}: recover"),
        );
        assert_eq!(
            dp.flow(&base.key()).unwrap().recovered,
            1 << 3,
            "slot of id 3"
        );

        // set_backup inserts MP_PRIO; set_window rewrites the window
        // (SYN: unscaled); count counts; drop drops.
        let dp = raw_dp(&[
            (Action::SetBackup, 1),
            (Action::SetWindow, 4000),
            (Action::Count, 0),
        ]);
        let ack = pure_ack(&base, 1);
        let mut o = ack.opts.clone();
        o.extend(opts(&[&mp_prio(true)]));
        let r = dp.entry(&raw(&ack));
        // The flow is untracked here: set_window leaves the window.
        assert_raw(
            &r,
            &ack.clone().with(|s| s.opts = o),
            &format!("{fam}: set_backup"),
        );
        let r = dp.entry(&raw(&syn_ack));
        assert_raw(
            &r,
            &syn_ack.clone().with(|s| s.window = 4000),
            &format!("{fam}: set_window"),
        );
        assert_eq!(dp.chain_packets(CHAIN), 2, "{fam}: count");
        let dp = raw_dp(&[(Action::Drop, 0)]);
        assert_eq!(dp.entry(&raw(&ack)).verdict, XDP_DROP, "{fam}: drop");

        // Controls: the link type decides where L3 starts.
        let dp = dp_with(&EMPTCP);
        let f = raw(&syn_ack);
        assert_frame_eq(
            &dp.entry(&f).frame,
            &f,
            &format!("{fam}: raw frame on Ethernet"),
        );
        assert!(
            dp.flow(&base.key()).is_none(),
            "{fam}: raw frame on Ethernet: no flow"
        );
        let dp = raw_dp(&EMPTCP);
        let f = syn_ack.frame();
        assert_frame_eq(
            &dp.entry(&f).frame,
            &f,
            &format!("{fam}: Ethernet frame on raw IP"),
        );
        assert!(
            dp.flow(&base.key()).is_none(),
            "{fam}: Ethernet on raw IP: no flow"
        );
    }
}
