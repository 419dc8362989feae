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
    Action, EgressStat, SF_ACK_SEEN, SF_DATA_ACK_SEEN, SF_JOIN, SF_LOCAL_KEY, SF_REMOTE_KEY,
    SF_SEQ_SEEN, SF_SYN_SEEN, SF_TS_SEEN, SF_WSCALE_SEEN,
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

#[test]
fn set_window_uses_the_local_shift_from_the_captured_syn() {
    need_kernel!();
    let e = eg(&[(Action::SetWindow, 65536)]);
    for base in both() {
        let ack = base.clone().with(|s| {
            s.opts = opts(&[&dss(Some((1, 4)), None)]);
            s.window = 3000;
        });
        // Shift unknown (no SYN seen): untouched, counted.
        e.assert_untouched(&ack, 0, "window scale unknown");
        let syn = base.clone().with(|s| {
            s.flags = SYN;
            s.ack = 0;
            s.seq = base.seq.wrapping_sub(1);
            s.opts = opts(&[&wscale(7), &[30, 4, 0x01, 0x81]]);
        });
        // SYN: never scaled.
        e.assert_becomes(&syn, &syn.clone().with(|s| s.window = 65535), "SYN window");
        e.assert_becomes(&ack, &ack.clone().with(|s| s.window = 512), "65536 >> 7");
    }
    assert_eq!(e.stat(EgressStat::WindowScaleUnknown), 2);
    assert_eq!(e.stat(EgressStat::WindowRewritten), 4);
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
    assert_eq!(e.stat(EgressStat::SubflowsRemoved), 2);
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
    let mut corpus: Vec<(&str, Vec<u8>)> = Vec::new();
    // Option length running past the header.
    let mut b = f.clone();
    b[l4 + 20 + 1] = 40;
    corpus.push(("option past header", b));
    // Option length 1.
    let mut b = f.clone();
    b[l4 + 20 + 1] = 1;
    corpus.push(("option length 1", b));
    // Data offset beyond the frame.
    let mut b = f.clone();
    b[l4 + 12] = 0xf0;
    corpus.push(("data offset beyond frame", b));
    // IP total length longer than the frame.
    let mut b = f.clone();
    b[16..18].copy_from_slice(&2000u16.to_be_bytes());
    corpus.push(("IP length beyond frame", b));
    // Truncated in the TCP header.
    corpus.push(("truncated", f[..l4 + 10].to_vec()));
    // Fragment.
    let mut b = f.clone();
    b[20] = 0x20;
    corpus.push(("fragment", b));
    // Not TCP.
    let mut b = f.clone();
    b[23] = 17;
    corpus.push(("UDP", b));
    for (what, frame) in &corpus {
        let (v, got) = e.run(frame, 0);
        assert_eq!(v, PASS, "{what}");
        assert_eq!(&got, frame, "{what} must pass untouched");
    }
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
