//! The TC egress hook on the real kernel (BPF_PROG_TEST_RUN with an skb):
//! crafted segments the local host sends run through `egress_entry` (then
//! `egress_capture` and the chain's egress actions, by tail calls), and
//! every output byte is compared with a frame built independently
//! (lengths and checksums from scratch, checked again by etherparse).
//! Capture is checked in `SUBFLOWS`.
//!
//! Needs CAP_BPF/CAP_NET_ADMIN/CAP_SYS_ADMIN (loads programs); fails
//! without them unless EMPTCP_ALLOW_SKIP=1 (tests/common/gate.rs).
#[macro_use]
mod datapath_common;

use datapath_common::{egress::*, *};
use emptcp_common::{
    Action, EgressStat, FlowKey, FlowStat, FlowState, IFACE_TRACK, IfaceChains,
    MAX_CHAINS_PER_IFACE, SF_ACK_SEEN, SF_DATA_ACK_SEEN, SF_JOIN, SF_LOCAL_KEY, SF_PEER_TOKEN,
    SF_REMOTE_KEY, SF_SEQ_SEEN, SF_SYN_SEEN, SF_TS_SEEN, SF_WSCALE_SEEN, SYN_SHIFT_PEER,
};

fn both() -> [Seg; 2] {
    [Seg::v4(), Seg::v6()]
}

#[test]
fn set_backup_rewrites_an_existing_mp_prio() {
    need_kernel!();
    let e = eg(&[(Action::SetBackup, 1)]);
    for base in both() {
        let seg = base.clone().with(|s| {
            s.opts = opts(&[&ts(10, 20), &dss(Some((5000, 8)), None), &mp_prio(false)]);
            s.payload = vec![7; 100];
        });
        let want = seg.clone().with(|s| {
            s.opts = opts(&[&ts(10, 20), &dss(Some((5000, 8)), None), &mp_prio(true)]);
        });
        e.assert_becomes(&seg, &want, "mp_prio B flag set");
        // Already backup: nothing changes.
        e.assert_untouched(&want, 0, "mp_prio already backup");
    }
    assert_eq!(e.stat(EgressStat::MpPrioRewritten), 2);
}

#[test]
fn set_backup_inserts_mp_prio_into_a_pure_ack() {
    need_kernel!();
    let e = eg(&[(Action::SetBackup, 1)]);
    for base in both() {
        let seg = base.clone().with(|s| {
            s.opts = opts(&[&ts(10, 20), &dss(Some((5000, 4)), None)]);
        });
        let mut o = seg.opts.clone();
        o.extend_from_slice(&[1, 30, 3, 0x51]);
        let want = seg.clone().with(|s| s.opts = o);
        e.assert_becomes(&seg, &want, "NOP + MP_PRIO appended");
        // Signalled once per subflow: the next pure ACK goes out as it is
        // (a packet-copy MP_PRIO that reversed it is not undone).
        e.assert_untouched(&seg, 0, "second pure ACK of the subflow");
    }
    assert_eq!(e.stat(EgressStat::MpPrioInserted), 2);
}

#[test]
fn set_backup_skips_gso_and_data_segments_and_counts_them() {
    need_kernel!();
    let e = eg(&[(Action::SetBackup, 0)]);
    let pure = Seg::v4().with(|s| s.opts = opts(&[&dss(Some((5000, 4)), None)]));
    e.assert_untouched(&pure, 1448, "GSO packet");
    assert_eq!(e.stat(EgressStat::InsertSkippedGso), 1);
    let data = pure.clone().with(|s| s.payload = vec![1; 64]);
    e.assert_untouched(&data, 0, "segment with payload");
    assert_eq!(e.stat(EgressStat::InsertSkippedPayload), 1);
    // No room: 40 bytes of options already.
    let full = Seg::v4().with(|s| {
        s.opts = opts(&[&ts(1, 2), &dss(Some((1, 8)), Some((2, 8, 3, 4)))]);
        assert!(s.opts.len() > 36, "{}", s.opts.len());
    });
    e.assert_untouched(&full, 0, "no room");
    assert_eq!(e.stat(EgressStat::MpPrioNoRoom), 1);
    // Plain TCP is never touched.
    e.assert_untouched(&Seg::v4(), 0, "plain TCP");
}

/// The egress chain `steps` plus an ingress chain with record_flow on the
/// same interface (it sees the peer's SYN-ACKs), and the tracking of the
/// egress hook (it maps the joins the local end opens).
fn eg_tracked(steps: &[(Action, u32)]) -> Eg {
    eg_tracked_with(steps, &[(Action::RecordFlow, 0)])
}

/// [`eg_tracked`] with the ingress chain `ingress` (record_flow first).
fn eg_tracked_with(steps: &[(Action, u32)], ingress: &[(Action, u32)]) -> Eg {
    let mut e = eg(steps);
    e.dp.chain(CHAIN + 1, ingress, TH, LO);
    let mut chains = [0u32; MAX_CHAINS_PER_IFACE];
    chains[0] = CHAIN;
    let ifc = IfaceChains {
        n_chains: 1,
        ifindex: LO,
        flags: IFACE_TRACK,
        chains,
        ..IfaceChains::EMPTY
    };
    let mut m: aya::maps::HashMap<_, u32, IfaceChains> =
        aya::maps::HashMap::try_from(e.dp.ebpf.map_mut("EGRESS_IFACES").unwrap()).unwrap();
    m.insert(LO, ifc, 0).unwrap();
    e
}

/// The server's SYN-ACK on `base`'s subflow (received, XDP): MP_CAPABLE
/// with its key, window scale 9 or none.
fn peer_syn_ack(base: &Seg, scales: bool) -> Seg {
    base.clone().with(|s| {
        s.flags = SYN | ACK;
        s.seq = base.seq.wrapping_sub(1);
        let ws = if scales { wscale(9) } else { nops(4) };
        s.opts = opts(&[&ws, &mp_capable(0x0102_0304_0506_0708)]);
    })
}

/// The client's SYN on `base`'s subflow with window scale 7 and `mptcp`.
fn client_syn(base: &Seg, mptcp: &[u8]) -> Seg {
    sent_by_client(base).with(|s| {
        s.flags = SYN;
        s.ack = 0;
        s.seq = base.ack.wrapping_sub(1);
        s.opts = opts(&[&wscale(7), mptcp]);
    })
}

/// What the window field of a sent segment must hold: the byte value
/// `bytes` scaled by the local shift 7 when both SYNs carried window
/// scale, the value itself otherwise (RFC 7323), at most 65535.
fn field(bytes: u32, both_scale: bool) -> u16 {
    let v = if both_scale { bytes >> 7 } else { bytes };
    v.min(65535) as u16
}

#[test]
fn set_window_scales_only_when_the_peers_syn_ack_carried_window_scale() {
    need_kernel!();
    for (bytes, scales) in [(40_000, true), (40_000, false), (100_000, false)] {
        let mut e = eg_tracked(&[(Action::SetWindow, bytes)]);
        for base in both() {
            let ack = sent_by_client(&base).with(|s| {
                s.opts = opts(&[&dss(Some((1, 4)), None)]);
                s.window = 3000;
            });
            let syn = client_syn(&base, &[30, 4, 0x01, 0x81]);
            // SYN: never scaled.
            let w = field(bytes, false);
            e.assert_becomes(&syn, &syn.clone().with(|s| s.window = w), "SYN");
            // The local end announced 7, but the peer's answer is not known
            // yet: untouched, counted.
            e.assert_untouched(&ack, 0, "before the peer's SYN-ACK");
            let r = e.dp.entry(&peer_syn_ack(&base, scales).frame());
            assert_eq!(r.verdict, XDP_PASS);
            assert!(e.dp.flow(&base.key()).is_some(), "record_flow tracked it");
            let w = field(bytes, scales);
            let what = format!("{bytes} bytes, peer scales: {scales}");
            e.assert_becomes(&ack, &ack.clone().with(|s| s.window = w), &what);
            // Kept with the subflow: its last ACKs, sent after record_flow
            // forgot the connection (the peer's FIN), are capped too.
            let mut flows: aya::maps::HashMap<_, FlowKey, FlowState> =
                aya::maps::HashMap::try_from(e.dp.ebpf.map_mut("FLOWS").unwrap()).unwrap();
            flows.remove(&base.key()).unwrap();
            e.assert_becomes(&ack, &ack.clone().with(|s| s.window = w), "after the end");
        }
        assert_eq!(e.stat(EgressStat::WindowScaleUnknown), 2);
    }
}

#[test]
fn set_window_takes_the_shift_of_the_local_syn_ack_as_it_is() {
    need_kernel!();
    // No record_flow: the local end's SYN-ACK settles it alone.
    let e = eg(&[(Action::SetWindow, 65536)]);
    for (i, ws) in [wscale(7), nops(4)].iter().enumerate() {
        for base in both() {
            let base = base.with(|s| s.dport += i as u16);
            let ack = base.clone().with(|s| {
                s.opts = opts(&[&dss(Some((1, 4)), None)]);
                s.window = 3000;
            });
            let syn_ack = base.clone().with(|s| {
                s.flags = SYN | ACK;
                s.seq = base.seq.wrapping_sub(1);
                s.opts = opts(&[ws, &[30, 12, 0x01, 0x81], &[0; 8]]);
            });
            e.assert_becomes(
                &syn_ack,
                &syn_ack.clone().with(|s| s.window = 65535),
                "SYN-ACK window",
            );
            // With the option the peer's SYN had one too: 65536 >> 7;
            // without it neither end scales: the value itself, clamped.
            let w = field(65536, i == 0);
            e.assert_becomes(&ack, &ack.clone().with(|s| s.window = w), "ACK");
        }
    }
    assert_eq!(e.stat(EgressStat::WindowScaleUnknown), 0);
    assert_eq!(e.stat(EgressStat::WindowRewritten), 8);
}

#[test]
fn set_window_on_a_joined_subflow_asks_the_joins_syn_ack() {
    need_kernel!();
    let e = eg_tracked(&[(Action::SetWindow, 40_000)]);
    let initial = Seg::v4();
    // The connection, from the server's SYN-ACK (window scale 9).
    e.dp.entry(&peer_syn_ack(&initial, true).frame());
    let token = e.dp.flow(&initial.key()).expect("connection").token;
    let joined = Seg::v4().with(|s| {
        s.src = addr("198.51.100.2");
        s.dst = addr("198.51.100.1");
        s.dport = 40001;
    });
    let mut join = vec![30, 12, 0x10, 0];
    join.extend_from_slice(&token.to_be_bytes());
    join.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    let syn = client_syn(&joined, &join);
    e.assert_becomes(&syn, &syn.clone().with(|s| s.window = 40_000), "join SYN");
    assert!(e.dp.join(&joined.key()).is_some(), "the join is mapped");
    let ack = sent_by_client(&joined).with(|s| s.opts = opts(&[&dss(Some((1, 4)), None)]));
    e.assert_untouched(&ack, 0, "before the join's SYN-ACK");
    // The server answers the join without window scale: the client's 7
    // does not apply on this subflow, whatever the initial one does.
    let join_syn_ack = joined.clone().with(|s| {
        s.flags = SYN | ACK;
        s.opts = opts(&[&nops(4), &[30, 16, 0x10, 0], &[0; 12]]);
    });
    e.dp.entry(&join_syn_ack.frame());
    e.assert_becomes(&ack, &ack.clone().with(|s| s.window = 40_000), "join ACK");
    let first = sent_by_client(&initial).with(|s| {
        s.opts = opts(&[&dss(Some((1, 4)), None)]);
        s.window = 3000;
    });
    // The initial subflow's SYN was not captured: unknown, untouched.
    e.assert_untouched(&first, 0, "initial subflow without its SYN");
    assert_eq!(e.stat(EgressStat::WindowScaleUnknown), 2);
}

/// Ingress set_window where the local end is the SERVER. RFC 7323 2.2: the
/// field the client sends is scaled by the client's shift only when both
/// SYNs carried window scale. An initial subflow learnt from the client's
/// third ACK alone (neither SYN seen) has an unknown shift, so its
/// segments pass untouched and are counted (before, `bytes` was written
/// unscaled into a field the client scales: 40 000 << 9 offered). A join
/// the client opens gives the client's shift in its MP_JOIN SYN, and the
/// server's own SYN-ACK (egress) says whether both scale.
#[test]
fn ingress_set_window_where_the_local_end_serves() {
    need_kernel!();
    const BYTES: u32 = 40_000;
    for syn_ack_scales in [true, false] {
        let e = eg_tracked_with(
            &[(Action::Count, 0)],
            &[(Action::RecordFlow, 0), (Action::SetWindow, BYTES)],
        );
        // From the client (the remote end): its third ACK with both keys
        // creates the connection (local key 0x2222 names it).
        let initial = Seg::v4();
        let third = initial.clone().with(|s| {
            s.opts = opts(&[&ts(100, 50), &mp_capable_ack(0x1111, 0x2222)]);
        });
        e.dp.entry(&third.frame());
        let token = e.dp.flow(&initial.key()).expect("connection").token;
        let data = |base: &Seg| {
            base.clone().with(|s| {
                s.opts = opts(&[&ts(101, 51), &dss(Some((1, 4)), None)]);
                s.window = 3000;
            })
        };
        let unknown = e.dp.event(FlowStat::WindowScaleUnknown);
        let r = e.dp.entry(&data(&initial).frame());
        assert_eq!(r.verdict, XDP_PASS);
        assert_frame_eq(
            &r.frame,
            &data(&initial).frame(),
            "initial subflow, server side",
        );
        assert_eq!(e.dp.event(FlowStat::WindowScaleUnknown), unknown + 1);

        // The client joins from its second address: MP_JOIN SYN with its
        // window scale 9.
        let joined = Seg::v4().with(|s| {
            s.src = addr("198.51.100.2");
            s.dst = addr("198.51.100.1");
            s.sport = 40001;
            s.dport = 443;
        });
        let mut join = vec![30, 12, 0x10, 2];
        join.extend_from_slice(&token.to_be_bytes());
        join.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let syn = joined.clone().with(|s| {
            s.flags = SYN;
            s.ack = 0;
            s.opts = opts(&[&wscale(9), &join]);
        });
        e.dp.entry(&syn.frame());
        assert!(e.dp.join(&joined.key()).is_some(), "the join is mapped");
        // Before the server's SYN-ACK: unknown, untouched.
        let r = e.dp.entry(&data(&joined).frame());
        assert_frame_eq(&r.frame, &data(&joined).frame(), "join before the SYN-ACK");
        assert_eq!(e.dp.event(FlowStat::WindowScaleUnknown), unknown + 2);
        // The server answers, with or without window scale (its own
        // `tcp_window_scaling`).
        let ws = if syn_ack_scales { wscale(7) } else { nops(4) };
        let syn_ack = sent_by_client(&joined).with(|s| {
            s.flags = SYN | ACK;
            s.seq = joined.ack.wrapping_sub(1);
            s.ack = joined.seq.wrapping_add(1);
            s.opts = opts(&[&ws, &[30, 16, 0x10, 2], &[0x77; 12]]);
        });
        let (v, _) = e.run(&syn_ack.frame(), 0);
        assert_eq!(v, PASS);
        // Now the client's segments carry BYTES in its own scale (9), or
        // BYTES itself when the server's SYN-ACK did not scale.
        let want = if syn_ack_scales { BYTES >> 9 } else { BYTES };
        let r = e.dp.entry(&data(&joined).frame());
        assert_eq!(r.verdict, XDP_PASS);
        let what = format!("join, server's SYN-ACK scales: {syn_ack_scales}");
        assert_frame_eq(
            &r.frame,
            &data(&joined).with(|s| s.window = want as u16).frame(),
            &what,
        );
        assert_checksums_valid(&r.frame);
        assert_eq!(e.dp.event(FlowStat::WindowScaleUnknown), unknown + 2);
    }
}

/// Ingress set_window where the local end serves a connection whose
/// handshake it saw: the client's MP_CAPABLE SYN (XDP, window scale 9) is
/// kept in SYN_SHIFTS, the server's own SYN-ACK (egress) says whether it
/// scales too, and the client's third ACK creates the connection with the
/// shift settled: the initial subflow's segments then carry BYTES in the
/// client's scale (both scale) or BYTES itself (the SYN-ACK did not). The
/// control: the same handshake without the server's SYN-ACK seen leaves
/// the shift unknown (untouched, counted).
#[test]
fn ingress_set_window_takes_the_shift_of_a_handshake_it_saw() {
    need_kernel!();
    const BYTES: u32 = 40_000;
    for answer in [Some(true), Some(false), None] {
        let what = format!("server's SYN-ACK: {answer:?}");
        let e = eg_tracked_with(
            &[(Action::Count, 0)],
            &[(Action::RecordFlow, 0), (Action::SetWindow, BYTES)],
        );
        let initial = Seg::v4();
        let syn = initial.clone().with(|s| {
            s.flags = SYN;
            s.ack = 0;
            s.seq = initial.seq.wrapping_sub(1);
            s.opts = opts(&[&wscale(9), &[30, 4, 0x01, 0x81]]);
        });
        e.dp.entry(&syn.frame());
        let kept =
            e.dp.syn_shift(&initial.key())
                .expect("the SYN's shift is kept");
        assert_eq!((kept.peer, kept.flags), (9, SYN_SHIFT_PEER), "{what}");
        if let Some(scales) = answer {
            let ws = if scales { wscale(7) } else { nops(4) };
            let syn_ack = sent_by_client(&initial).with(|s| {
                s.flags = SYN | ACK;
                s.seq = initial.ack.wrapping_sub(1);
                s.ack = initial.seq;
                s.opts = opts(&[&ws, &mp_capable(0x2222)]);
            });
            let (v, _) = e.run(&syn_ack.frame(), 0);
            assert_eq!(v, PASS, "{what}");
        }
        let third = initial.clone().with(|s| {
            s.opts = opts(&[&ts(100, 50), &mp_capable_ack(0x1111, 0x2222)]);
        });
        e.dp.entry(&third.frame());
        assert!(e.dp.flow(&initial.key()).is_some(), "{what}: connection");
        assert!(
            e.dp.syn_shift(&initial.key()).is_none(),
            "{what}: the handshake's entry is consumed"
        );
        let data = initial.clone().with(|s| {
            s.opts = opts(&[&ts(101, 51), &dss(Some((1, 4)), None)]);
            s.window = 3000;
        });
        let unknown = e.dp.event(FlowStat::WindowScaleUnknown);
        let r = e.dp.entry(&data.frame());
        assert_eq!(r.verdict, XDP_PASS, "{what}");
        match answer {
            None => {
                assert_frame_eq(&r.frame, &data.frame(), &what);
                assert_eq!(e.dp.event(FlowStat::WindowScaleUnknown), unknown + 1);
            }
            Some(scales) => {
                let want = if scales { BYTES >> 9 } else { BYTES };
                let expect = data.clone().with(|s| s.window = want as u16);
                assert_frame_eq(&r.frame, &expect.frame(), &what);
                assert_checksums_valid(&r.frame);
                assert_eq!(e.dp.event(FlowStat::WindowScaleUnknown), unknown, "{what}");
            }
        }
    }
}

#[test]
fn capture_records_what_the_local_end_sent() {
    need_kernel!();
    let e = eg(&[(Action::Count, 0)]);
    for base in both() {
        let key = ekey(&base);
        // Plain TCP creates nothing.
        e.run(&base.frame(), 0);
        assert!(e.subflow(&key).is_none());
        // The third ACK of the MP_CAPABLE handshake: both keys.
        let third = base.clone().with(|s| {
            s.opts = opts(&[&ts(100, 50), &mp_capable_ack(0x1111, 0x2222)]);
        });
        e.run(&third.frame(), 0);
        let f = e.subflow(&key).expect("captured");
        assert_eq!(f.local_key, 0x1111);
        assert_eq!(f.remote_key, 0x2222);
        assert_eq!(f.snd_nxt, base.seq);
        assert_eq!(f.rcv_nxt, base.ack);
        assert_eq!((f.tsval, f.tsecr), (100, 50));
        assert_eq!(f.window, base.window);
        assert_eq!(&f.mac[..6], &CLIENT_MAC);
        assert_eq!(&f.mac[6..], &SERVER_MAC);
        assert_eq!(f.ifindex, LO);
        assert_eq!(f.chain, CHAIN);
        let want = SF_SEQ_SEEN | SF_ACK_SEEN | SF_TS_SEEN | SF_LOCAL_KEY | SF_REMOTE_KEY;
        assert_eq!(f.flags & want, want, "{:#x}", f.flags);
        assert_eq!(f.last_data_tx_ns, 0);
        assert!(f.last_seen_ns > 0);

        // Data with a 4-byte data ACK; then an 8-byte one; then the ack
        // number advances (data was received).
        let data = base.clone().with(|s| {
            s.opts = opts(&[&ts(101, 51), &dss(Some((0xffff_fff0, 4)), None)]);
            s.payload = vec![9; 300];
        });
        e.run(&data.frame(), 0);
        let f = e.subflow(&key).unwrap();
        assert_eq!(f.snd_nxt, base.seq + 300);
        assert_eq!(f.data_ack, 0xffff_fff0);
        assert!(f.flags & SF_DATA_ACK_SEEN != 0);
        assert!(f.last_data_tx_ns > 0);
        assert_eq!(f.last_ack_advance_ns, 0);
        // The 4-byte form wraps: 0xffff_fff0 -> 0x10 is +0x20.
        let wrap = base.clone().with(|s| {
            s.seq = base.seq + 300;
            s.ack = base.ack + 1000;
            s.opts = opts(&[&ts(102, 52), &dss(Some((0x10, 4)), None)]);
        });
        e.run(&wrap.frame(), 0);
        let f = e.subflow(&key).unwrap();
        assert_eq!(f.data_ack, 0x1_0000_0010);
        assert_eq!(f.rcv_nxt, base.ack + 1000);
        assert!(f.last_ack_advance_ns >= f.last_data_tx_ns);
        let eight = wrap
            .clone()
            .with(|s| s.opts = opts(&[&ts(103, 53), &dss(Some((0x1_0000_0100, 8)), None)]));
        e.run(&eight.frame(), 0);
        let f = e.subflow(&key).unwrap();
        assert_eq!(f.data_ack, 0x1_0000_0100);
        assert_eq!((f.tsval, f.tsecr), (103, 53));
        // An older segment (a retransmit) does not move snd_nxt back.
        e.run(&data.frame(), 0);
        assert_eq!(e.subflow(&key).unwrap().snd_nxt, base.seq + 300);

        // FIN removes it.
        let fin = wrap.clone().with(|s| {
            s.flags = FIN | ACK;
            s.opts = opts(&[&dss(Some((0x1_0000_0100, 8)), None)]);
        });
        e.run(&fin.frame(), 0);
        assert!(e.subflow(&key).is_none(), "FIN removes the subflow");
    }
    assert_eq!(e.stat(EgressStat::SubflowsCreated), 2);
    assert_eq!(e.stat(EgressStat::SubflowsClosed), 2);
    assert_eq!(e.stat(EgressStat::EventsLost), 0);
    assert_eq!(e.dp.chain_packets(CHAIN), 14, "egress count");
}

/// The server role: the SYN-ACK's 12-byte MP_CAPABLE (the sender's key)
/// ends the header of a segment without payload, so fewer than the read
/// buffer's bytes follow the option (the helper path of `Seg::read`).
#[test]
fn capture_takes_the_local_key_from_the_syn_ack() {
    need_kernel!();
    let e = eg(&[(Action::Count, 0)]);
    for base in both() {
        let synack = base.clone().with(|s| {
            s.flags = SYN | ACK;
            s.opts = opts(&[&wscale(7), &mp_capable(0x0102_0304_0506_0708)]);
        });
        e.run(&synack.frame(), 0);
        let f = e.subflow(&ekey(&synack)).expect("captured");
        assert_eq!(f.local_key, 0x0102_0304_0506_0708);
        assert_eq!(f.flags & (SF_LOCAL_KEY | SF_REMOTE_KEY), SF_LOCAL_KEY);
    }
}

#[test]
fn capture_marks_join_subflows_and_the_syn() {
    need_kernel!();
    let e = eg(&[(Action::Count, 0)]);
    let syn = Seg::v4().with(|s| {
        s.flags = SYN;
        s.ack = 0;
        // MP_JOIN SYN: token + nonce (12 bytes).
        s.opts = opts(&[&wscale(9), &[30, 12, 0x10, 2, 1, 2, 3, 4, 5, 6, 7, 8]]);
    });
    e.run(&syn.frame(), 0);
    let f = e.subflow(&ekey(&syn)).expect("join SYN captured");
    let want = SF_JOIN | SF_SYN_SEEN | SF_WSCALE_SEEN;
    assert_eq!(f.flags & want, want, "{:#x}", f.flags);
    assert_eq!(f.wscale, 9);
    assert_eq!(f.snd_nxt, syn.seq + 1, "SYN takes one sequence number");
    // The token it carries (the peer's) names the connection it joins.
    assert_ne!(f.flags & SF_PEER_TOKEN, 0, "{:#x}", f.flags);
    assert_eq!(f.peer_token, 0x0102_0304);
    // The local end's answer to a join the peer opened (SYN-ACK, 16
    // bytes: truncated HMAC and nonce) carries no token.
    let synack = Seg::v4().with(|s| {
        s.flags = SYN | ACK;
        s.sport = 5201;
        s.dport = 40000;
        s.opts = opts(&[&[30, 16, 0x10, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]);
    });
    e.run(&synack.frame(), 0);
    let g = e.subflow(&ekey(&synack)).expect("join SYN-ACK captured");
    assert_ne!(g.flags & SF_JOIN, 0, "{:#x}", g.flags);
    assert_eq!(g.flags & SF_PEER_TOKEN, 0, "{:#x}", g.flags);
    // RST removes it.
    let rst = Seg::v4().with(|s| {
        s.flags = RST;
        s.seq = syn.seq + 1;
    });
    e.run(&rst.frame(), 0);
    assert!(e.subflow(&ekey(&syn)).is_none());
}

#[test]
fn malformed_packets_pass_untouched() {
    need_kernel!();
    let e = eg(&[(Action::SetBackup, 1), (Action::SetWindow, 1000)]);
    let good = Seg::v4().with(|s| s.opts = opts(&[&dss(Some((1, 4)), None)]));
    let f = good.frame();
    let l4 = 14 + 20;
    // Each with the count of `malformed` it moves on the egress hook: the
    // frames the parser refuses never reach the option scan.
    let mut corpus: Vec<(&str, Vec<u8>, u64)> = Vec::new();
    // Option length running past the header.
    let mut b = f.clone();
    b[l4 + 20 + 1] = 40;
    corpus.push(("option past header", b, 1));
    // Option length 1.
    let mut b = f.clone();
    b[l4 + 20 + 1] = 1;
    corpus.push(("option length 1", b, 1));
    // Data offset beyond the frame.
    let mut b = f.clone();
    b[l4 + 12] = 0xf0;
    corpus.push(("data offset beyond frame", b, 0));
    // IP total length longer than the frame.
    let mut b = f.clone();
    b[16..18].copy_from_slice(&2000u16.to_be_bytes());
    corpus.push(("IP length beyond frame", b, 1));
    // Truncated in the TCP header.
    corpus.push(("truncated", f[..l4 + 10].to_vec(), 0));
    // Fragment.
    let mut b = f.clone();
    b[20] = 0x20;
    corpus.push(("fragment", b, 0));
    // Not TCP.
    let mut b = f.clone();
    b[23] = 17;
    corpus.push(("UDP", b, 0));
    for (what, frame, malformed) in &corpus {
        let before = e.stat(EgressStat::Malformed);
        let (v, got) = e.run(frame, 0);
        assert_eq!(v, PASS, "{what}");
        assert_eq!(&got, frame, "{what} must pass untouched");
        assert_eq!(e.stat(EgressStat::Malformed) - before, *malformed, "{what}");
    }
    // The receive path's counter stays still: egress packets are not its.
    assert_eq!(e.dp.event(FlowStat::Malformed), 0);
    for k in [
        EgressStat::MpPrioInserted,
        EgressStat::MpPrioRewritten,
        EgressStat::WindowRewritten,
        EgressStat::SubflowsCreated,
    ] {
        assert_eq!(e.stat(k), 0, "{k:?}");
    }
}

/// The capture's ring buffer full (nobody reading it): new subflows are
/// still captured, every packet passes untouched, and the events that did
/// not fit are counted (`events_lost`).
#[test]
fn a_full_event_ring_is_counted_and_harmless() {
    need_kernel!();
    let e = eg(&[(Action::Count, 0)]);
    // 256 KiB of 80-byte records (72 + the ring's 8-byte header) hold 3276.
    let n = 3500u16;
    let mut verdicts = std::collections::BTreeSet::new();
    for i in 0..n {
        let seg = Seg::v4().with(|s| {
            s.sport = 20_000 + i;
            s.opts = opts(&[&dss(Some((1, 4)), None)]);
        });
        let f = seg.frame();
        let (v, out) = e.run(&f, 0);
        verdicts.insert(v);
        assert_eq!(out, f, "packet {i} modified");
        if i == n - 1 {
            assert!(e.subflow(&ekey(&seg)).is_some(), "the last one captured");
        }
    }
    assert_eq!(verdicts.len(), 1, "one verdict for all: {verdicts:?}");
    let lost = e.stat(EgressStat::EventsLost);
    assert!(
        (1..n as u64).contains(&lost),
        "events_lost {lost} after {n} new subflows"
    );
    eprintln!("{n} new subflows: {lost} events lost");
}
