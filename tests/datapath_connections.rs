//! Connection-level MPTCP on the real kernel (BPF_PROG_TEST_RUN): the
//! token of a connection, subflows joined to it (received MP_JOIN SYNs on
//! XDP, sent ones on the TC egress hook), its size over every subflow,
//! REMOVE_ADDR, a lifecycle that spoofed segments cannot end, delivery
//! that counts only once the stack confirms it, and two CPUs updating one
//! connection at once. Expected bytes and tokens are computed here, from
//! RFC 8684 and SHA-256, never from the eBPF code.
#[macro_use]
mod datapath_common;

use datapath_common::{egress::*, *};
use emptcp_common::{
    FLOW_DATA_ACK_SEEN, FLOW_DATA_FIN, FLOW_ESTABLISHED, FLOW_FIRST_ADDR, FLOW_INITIAL_CLOSED,
    FLOW_RECOVER_PENDING, FLOW_SERVER, FlowStat, FlowState, IFACE_TRACK, IfaceChains,
    JOIN_UNCOUNTED, JOIN_WSCALE_SEEN, StoredAddAddr, VIA_AGENT, VIA_INSERT,
};
use sha2::{Digest, Sha256};

/// The server's MP_CAPABLE key in these tests.
const SERVER_KEY: u64 = 0x0102_0304_0506_0708;

/// The token of `key`: the most significant 32 bits of SHA-256 of the key
/// in network order (RFC 8684 2.2).
fn token_of(key: u64) -> u32 {
    let d = Sha256::digest(key.to_be_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// The initial subflow (server 192.0.2.2:443 -> client 192.0.2.1:40000).
fn initial() -> Seg {
    Seg::v4()
}

/// A joined subflow of the same connection, on the second path.
fn joined() -> Seg {
    Seg::v4().with(|s| {
        s.src = addr("198.51.100.2");
        s.dst = addr("198.51.100.1");
        s.dport = 40001;
        s.seq = 7_000_000;
        s.ack = 8_000_000;
    })
}

/// The server's SYN-ACK with MP_CAPABLE (its key) and window scale 7.
fn syn_ack(base: &Seg, key: u64) -> Seg {
    base.clone().with(|s| {
        s.flags = SYN | ACK;
        s.seq = base.seq.wrapping_sub(1);
        s.opts = opts(&[&wscale(7), &ts(1000, 500), &mp_capable(key)]);
    })
}

/// MP_JOIN of a SYN: backup flag, address id, the receiver's token, nonce.
fn mp_join_syn(token: u32, id: u8) -> Vec<u8> {
    let mut o = vec![30, 12, 0x10, id];
    o.extend_from_slice(&token.to_be_bytes());
    o.extend_from_slice(&0xdead_beefu32.to_be_bytes());
    o
}

/// The client's MP_JOIN SYN of `joined()`, leaving on the second path
/// (client -> server: the egress orientation).
fn sent_join_syn(token: u32) -> Seg {
    Seg::v4().with(|s| {
        s.src = addr("198.51.100.1");
        s.dst = addr("198.51.100.2");
        s.sport = 40001;
        s.dport = 443;
        s.flags = SYN;
        s.ack = 0;
        s.opts = opts(&[&wscale(7), &mp_join_syn(token, 0)]);
    })
}

/// REMOVE_ADDR of the address ids `ids`.
fn remove_addr(ids: &[u8]) -> Vec<u8> {
    let mut o = vec![30, 3 + ids.len() as u8, 0x40];
    o.extend_from_slice(ids);
    o
}

/// The ADD_ADDR with id 6 stored with `initial()`'s connection (in the slot
/// of its id) at `recover_at`, not delivered yet; returns the option.
fn stored_at_recover_at(dp: &mut Dp) -> Vec<u8> {
    let aa = add_addr(6, addr("198.51.100.2"), None, false);
    let mut st = StoredAddAddr {
        len: aa.len() as u8,
        ..Default::default()
    };
    st.bytes[..aa.len()].copy_from_slice(&aa);
    dp.put_flow_addr(&initial().key(), 6, &st);
    let mut f = FlowState {
        chain: CHAIN,
        bytes: TH.recover_at,
        stored: 1 << 6,
        ..FlowState::default()
    };
    f.addr_ids[6] = 6;
    dp.put_flow(&initial().key(), &f);
    aa
}

/// The object with the data chain on the loopback interface, whose egress
/// hook tracks connections (no egress chain of its own).
fn tracked_egress() -> Eg {
    let mut e = eg(&[]);
    let ifc = IfaceChains {
        n_chains: 0,
        ifindex: LO,
        flags: IFACE_TRACK,
        ..IfaceChains::EMPTY
    };
    let mut m: aya::maps::HashMap<_, u32, IfaceChains> =
        aya::maps::HashMap::try_from(e.dp.ebpf.map_mut("EGRESS_IFACES").unwrap()).unwrap();
    m.insert(LO, ifc, 0).unwrap();
    e.dp.chain(CHAIN, &EMPTCP, TH, LO);
    e
}

/// A connection on `initial()` created by its SYN-ACK.
fn connected(dp: &Dp) -> FlowState {
    let r = dp.entry(&syn_ack(&initial(), SERVER_KEY).frame());
    assert_eq!(r.verdict, XDP_PASS);
    dp.flow(&initial().key())
        .expect("SYN-ACK created the connection")
}

/// `joined()` mapped to the connection by the peer's MP_JOIN SYN (the
/// local end is the server of the join).
fn join_by_received_syn(dp: &Dp, token: u32) {
    let syn = joined().with(|s| {
        s.flags = SYN;
        s.seq = joined().seq.wrapping_sub(1);
        s.ack = 0;
        s.opts = opts(&[&wscale(5), &mp_join_syn(token, 2)]);
    });
    assert_eq!(dp.entry(&syn.frame()).verdict, XDP_PASS);
}

#[test]
fn the_token_is_sha256_of_the_servers_key() {
    need_kernel!();
    // Independent vectors (Python hashlib.sha256(key).hexdigest()[:8]).
    assert_eq!(token_of(0x0102_0304_0506_0708), 0x6684_0dda);
    assert_eq!(token_of(0xa2b3_7c4d_5e6f_7081), 0x98d0_59a6);
    for key in [
        SERVER_KEY,
        0xa2b3_7c4d_5e6f_7081,
        0,
        u64::MAX,
        0x8000_0000_0000_0001,
    ] {
        let dp = dp_with(&EMPTCP);
        let r = dp.entry(&syn_ack(&initial(), key).frame());
        assert_eq!(r.verdict, XDP_PASS);
        let f = dp.flow(&initial().key()).expect("connection");
        assert_eq!(f.token, token_of(key), "key {key:#x}");
        assert_eq!(dp.token(token_of(key)), Some(initial().key()), "TOKENS");
    }
}

#[test]
fn a_peers_third_ack_creates_the_servers_connection() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    // The client's third ACK echoes both keys; the receiver's (ours) names
    // the connection.
    let third = initial().with(|s| s.opts = opts(&[&ts(5, 6), &mp_capable_ack(0x99, SERVER_KEY)]));
    assert_eq!(dp.entry(&third.frame()).verdict, XDP_PASS);
    let f = dp.flow(&initial().key()).expect("connection");
    assert_eq!(f.token, token_of(SERVER_KEY));
    assert_ne!(f.flags & FLOW_SERVER, 0);
    // A join the client opens names it.
    join_by_received_syn(&dp, f.token);
    assert_eq!(dp.join(&joined().key()).unwrap().conn, initial().key());
}

#[test]
fn a_received_mp_join_syn_maps_the_subflow_and_its_packets_act_on_the_connection() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    let f = connected(&dp);
    join_by_received_syn(&dp, f.token);
    let j = dp.join(&joined().key()).expect("JOINS entry");
    assert_eq!((j.conn, j.token), (initial().key(), f.token));
    assert_ne!(j.flags & JOIN_WSCALE_SEEN, 0);
    assert_eq!(j.wscale, 5);
    assert_eq!(dp.event(FlowStat::JoinsMapped), 1);
    // Counted in the connection once the peer's handshake goes on.
    assert_eq!(dp.flow(&initial().key()).unwrap().joins, 0);
    // An unknown token maps nothing.
    let stray = joined().with(|s| {
        s.dport = 40002;
        s.flags = SYN;
        s.opts = opts(&[&mp_join_syn(f.token ^ 1, 3)]);
    });
    dp.entry(&stray.frame());
    assert!(dp.join(&stray.key()).is_none());
    assert_eq!(dp.event(FlowStat::JoinTokenUnknown), 1);

    // DSS on the joined subflow grows the connection's size: the first
    // data ACK is the baseline, the next one 5000 bytes further.
    dp.entry(&pure_ack(&joined(), 100_000).frame());
    assert_eq!(dp.flow(&initial().key()).unwrap().joins, 1);
    dp.entry(&pure_ack(&joined(), 105_000).frame());
    assert_eq!(dp.flow(&initial().key()).unwrap().bytes, 5000);
    // ... and so does the initial subflow's (connection-level numbers).
    dp.entry(&pure_ack(&initial(), 106_000).frame());
    assert_eq!(dp.flow(&initial().key()).unwrap().bytes, 6000);

    // An ADD_ADDR arriving on the joined subflow of this small connection
    // is stripped and stored with the connection.
    let aa = add_addr(9, addr("203.0.113.2"), None, false);
    let carrier = joined().with(|s| {
        s.opts = opts(&[&ts(2001, 901), &dss(Some((106_000, 4)), None), &aa]);
    });
    let r = dp.entry(&carrier.frame());
    assert_eq!(r.verdict, XDP_PASS);
    assert_checksums_valid(&r.frame);
    assert!(
        !r.frame.windows(aa.len()).any(|w| w == aa.as_slice()),
        "the ADD_ADDR left the joined subflow"
    );
    let c = dp.flow(&initial().key()).unwrap();
    assert_eq!(c.stored, 1 << 9, "the slot of id 9");
    assert_eq!(c.addr_ids[9], 9);
    assert_eq!(dp.flow_addr(&initial().key(), 9).unwrap().len, 16);
    assert_eq!(dp.event(FlowStat::AddAddrNopped), 1);
}

#[test]
fn a_sent_mp_join_syn_maps_the_subflow_on_the_egress_hook() {
    need_kernel!();
    let e = tracked_egress();
    let f = connected(&e.dp);
    let sent = sent_join_syn(f.token);
    // The same SYN with a broken option after the MP_JOIN maps nothing:
    // the positions of a walk that failed are not the options'.
    let bad = sent.clone().with(|s| {
        s.opts = opts(&[&wscale(7), &mp_join_syn(f.token, 0), &[8, 1]]);
    });
    assert_eq!(e.run(&bad.frame(), 0).0, PASS);
    assert!(
        e.dp.join(&joined().key()).is_none(),
        "mapped from a malformed SYN"
    );
    let (v, out) = e.run(&sent.frame(), 0);
    assert_eq!(v, PASS);
    assert_eq!(out, sent.frame(), "the SYN leaves untouched");
    let j =
        e.dp.join(&joined().key())
            .expect("JOINS entry, ingress orientation");
    assert_eq!(j.conn, initial().key());
    // The server's SYN-ACK of the join brings its window scale.
    let syn_ack = joined().with(|s| {
        s.flags = SYN | ACK;
        s.opts = opts(&[&wscale(9), &[30, 16, 0x10, 0], &[0; 12]]);
    });
    e.dp.entry(&syn_ack.frame());
    let j = e.dp.join(&joined().key()).unwrap();
    assert_eq!((j.wscale, j.flags & JOIN_WSCALE_SEEN != 0), (9, true));
    // A second SYN-ACK (a spoof, or one with other numbers) changes nothing.
    let again = syn_ack.with(|s| {
        s.seq = s.seq.wrapping_add(1 << 30);
        s.opts = opts(&[&wscale(2), &[30, 16, 0x10, 0], &[0; 12]]);
    });
    e.dp.entry(&again.frame());
    let k = e.dp.join(&joined().key()).unwrap();
    assert_eq!((k.wscale, k.rcv_nxt), (9, j.rcv_nxt));
    assert_eq!(e.dp.event(FlowStat::SynAckIgnored), 1);
}

#[test]
fn remove_addr_forgets_the_stored_address() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    connected(&dp);
    for id in [4, 5] {
        let s =
            initial().with(|s| s.opts = opts(&[&add_addr(id, addr("203.0.113.9"), None, false)]));
        assert_eq!(dp.entry(&s.frame()).verdict, XDP_DROP, "stored and dropped");
    }
    assert_eq!(dp.flow(&initial().key()).unwrap().stored, 0b11 << 4);
    let rm = initial()
        .with(|s| s.opts = opts(&[&ts(7, 8), &dss(Some((1, 4)), None), &remove_addr(&[4])]));
    assert_eq!(dp.entry(&rm.frame()).verdict, XDP_PASS);
    let f = dp.flow(&initial().key()).unwrap();
    assert_eq!(f.stored, 1 << 5, "id 4 forgotten, id 5 kept");
    assert!(dp.flow_addr(&initial().key(), 4).is_none());
    assert!(dp.flow_addr(&initial().key(), 5).is_some());
    assert_eq!(dp.event(FlowStat::RemoveAddrCleared), 1);
}

/// The first option a connection stores is kept in its `FLOWS` entry (no
/// table insert on the path), later ones in `FLOW_ADDRS`; a withdrawn first
/// one frees the entry's place for the next, and the connection's end
/// takes both kinds with it.
#[test]
fn the_first_option_is_kept_in_the_entry_the_others_in_the_table() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    connected(&dp);
    let store = |id: u8| {
        let s =
            initial().with(|s| s.opts = opts(&[&add_addr(id, addr("203.0.113.9"), None, false)]));
        assert_eq!(
            dp.entry(&s.frame()).verdict,
            XDP_DROP,
            "id {id} stored and dropped"
        );
    };
    store(4);
    store(5);
    let f = dp.flow(&initial().key()).unwrap();
    assert_eq!(f.stored, 0b11 << 4);
    assert_eq!(f.held_slot(), Some(4), "the first in the entry");
    let first = add_addr(4, addr("203.0.113.9"), None, false);
    assert_eq!(f.first_addr.bytes[..first.len()], first[..], "as received");
    assert!(dp.table_addr(&initial().key(), 4).is_none(), "not twice");
    assert_eq!(
        dp.table_addr(&initial().key(), 5).unwrap().bytes[3],
        5,
        "the second in the table"
    );
    assert_eq!(dp.table_addr_count(), 1);
    // The same option again (a retransmission) stays where it is.
    store(4);
    assert_eq!(dp.event(FlowStat::AddAddrDuplicate), 1);
    assert_eq!(dp.table_addr_count(), 1);

    let withdraw = initial()
        .with(|s| s.opts = opts(&[&ts(7, 8), &dss(Some((1, 4)), None), &remove_addr(&[4])]));
    assert_eq!(dp.entry(&withdraw.frame()).verdict, XDP_PASS);
    let f = dp.flow(&initial().key()).unwrap();
    assert_eq!((f.stored, f.held_slot()), (1 << 5, None), "id 4 forgotten");
    assert_eq!(f.flags & FLOW_FIRST_ADDR, 0, "its place freed");
    // id 5 again (a retransmission) stays in the table, where it is.
    store(5);
    assert_eq!(dp.flow(&initial().key()).unwrap().held_slot(), None);
    assert_eq!(dp.table_addr_count(), 1);
    store(7);
    let f = dp.flow(&initial().key()).unwrap();
    assert_eq!(f.held_slot(), Some(7), "the next one takes the place");
    assert_eq!(dp.table_addr_count(), 1);

    // The initial subflow's FIN (no joined one) ends the connection: both
    // kinds go with it.
    dp.entry(&initial().with(|s| s.flags = FIN | ACK).frame());
    assert!(
        dp.flow(&initial().key()).is_none(),
        "control: the connection ended"
    );
    assert_eq!(dp.flow_addr_count(), 0);
}

#[test]
fn spoofed_rst_fin_and_syn_ack_leave_the_connection() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    let f = connected(&dp);
    dp.entry(&pure_ack(&initial(), 500).frame());
    let rcv_nxt = dp.flow(&initial().key()).unwrap().rcv_nxt;
    assert_eq!(rcv_nxt, initial().seq);
    for (flags, seq) in [
        (RST, rcv_nxt.wrapping_add(1)),
        (RST | ACK, rcv_nxt.wrapping_sub(5000)),
        (FIN | ACK, rcv_nxt.wrapping_add(70_000)),
    ] {
        let spoof = initial().with(|s| {
            s.flags = flags;
            s.seq = seq;
        });
        assert_eq!(dp.entry(&spoof.frame()).verdict, XDP_PASS);
        assert!(
            dp.flow(&initial().key()).is_some(),
            "flags {flags:#x} seq {seq}"
        );
    }
    assert_eq!(dp.event(FlowStat::CloseIgnored), 3);
    // A SYN-ACK with another key for the established 4-tuple.
    dp.entry(&syn_ack(&initial(), 0x4242).frame());
    let g = dp.flow(&initial().key()).unwrap();
    assert_eq!(g.token, f.token, "not replaced");
    assert_ne!(g.flags & FLOW_ESTABLISHED, 0);
    assert_eq!(dp.event(FlowStat::SynAckIgnored), 1);
    // The RST at rcv_nxt ends it.
    dp.entry(&initial().with(|s| s.flags = RST).frame());
    assert!(dp.flow(&initial().key()).is_none());
    assert_eq!(dp.token(f.token), None, "token index cleaned");
}

/// A segment of the peer's ends at most one receive window past the
/// subflow's rcv_nxt: the local end's largest, 2^(16 + the shift its SYN or
/// SYN-ACK announced), which the egress hook reads as they leave. A blind
/// sender that knows the 4-tuple sends a segment far ahead, then a RST at
/// its end: neither moves rcv_nxt nor ends the connection (before, any
/// forward segment was followed, so one try in two set rcv_nxt to the
/// sender's choice). The controls: a segment inside the window is
/// followed and a RST at its end closes; without the local SYN seen the
/// bound is RFC 7323's largest (2^30).
#[test]
fn a_segment_beyond_the_local_window_is_not_followed_and_a_rst_there_ignored() {
    need_kernel!();
    const SHIFT: u8 = 7;
    const WND_LOG2: u8 = 16 + SHIFT;
    let beyond = (1u32 << WND_LOG2) + 1_000;
    let inside = 1u32 << 20;
    // The peer's segment `ahead` bytes past rcv_nxt on `sub`, then a RST
    // at its end: (rcv_nxt followed, the subflow still tracked).
    let try_spoof = |dp: &Dp, sub: &Seg, ahead: u32| {
        let rcv_nxt = |dp: &Dp| match dp.join(&sub.key()) {
            Some(j) => Some(j.rcv_nxt),
            None => dp.flow(&sub.key()).map(|f| f.rcv_nxt),
        };
        let before = rcv_nxt(dp).expect("tracked");
        let at = before.wrapping_add(ahead);
        // With a DSS: a joined subflow's segments are looked up only
        // when they carry an MPTCP option (or FIN/RST).
        let far = sub.clone().with(|s| {
            s.seq = at;
            s.opts = opts(&[&ts(9, 9), &dss(Some((1, 4)), None)]);
        });
        assert_eq!(dp.entry(&far.frame()).verdict, XDP_PASS);
        let followed = rcv_nxt(dp) == Some(at);
        let rst = sub.clone().with(|s| {
            s.flags = RST;
            s.seq = at;
        });
        dp.entry(&rst.frame());
        (followed, rcv_nxt(dp).is_some())
    };

    // The local end opened the connection: its SYN leaves (egress hook).
    let e = tracked_egress();
    let syn = sent_by_client(&initial()).with(|s| {
        s.flags = SYN;
        s.seq = initial().ack.wrapping_sub(1);
        s.ack = 0;
        s.opts = opts(&[&wscale(SHIFT), &mp_capable(0x1111)]);
    });
    assert_eq!(e.run(&syn.frame(), 0).0, PASS);
    assert_eq!(
        connected(&e.dp).rcv_wnd_log2,
        WND_LOG2,
        "from the local SYN"
    );
    assert_eq!(try_spoof(&e.dp, &initial(), beyond), (false, true));
    assert_eq!(e.dp.event(FlowStat::SeqBeyondWindow), 1);
    assert_eq!(e.dp.event(FlowStat::CloseIgnored), 1);

    // A join the peer opens, answered by the local SYN-ACK (egress).
    let token = e.dp.flow(&initial().key()).unwrap().token;
    join_by_received_syn(&e.dp, token);
    let syn_ack = sent_by_client(&joined()).with(|s| {
        s.flags = SYN | ACK;
        s.seq = joined().ack.wrapping_sub(1);
        s.opts = opts(&[&wscale(SHIFT), &[30, 16, 0x10, 0], &[0; 12]]);
    });
    assert_eq!(e.run(&syn_ack.frame(), 0).0, PASS);
    e.dp.entry(&pure_ack(&joined(), 1).frame());
    assert_eq!(e.dp.join(&joined().key()).unwrap().rcv_wnd_log2, WND_LOG2);
    assert_eq!(try_spoof(&e.dp, &joined(), beyond), (false, true));
    assert_eq!(e.dp.event(FlowStat::SeqBeyondWindow), 2);
    // Controls: inside the window, followed, and the RST there closes.
    assert_eq!(try_spoof(&e.dp, &joined(), inside), (true, false));
    assert_eq!(try_spoof(&e.dp, &initial(), inside), (true, false));

    // The peer opened the connection: the local SYN-ACK carries the shift.
    let e = tracked_egress();
    let peer_syn = initial().with(|s| {
        s.flags = SYN;
        s.seq = initial().seq.wrapping_sub(1);
        s.ack = 0;
        s.opts = opts(&[&wscale(9), &mp_capable(0x2222)]);
    });
    e.dp.entry(&peer_syn.frame());
    let local_syn_ack = sent_by_client(&initial()).with(|s| {
        s.flags = SYN | ACK;
        s.seq = initial().ack.wrapping_sub(1);
        s.opts = opts(&[&wscale(SHIFT), &mp_capable(0x1111)]);
    });
    assert_eq!(e.run(&local_syn_ack.frame(), 0).0, PASS);
    let third = initial().with(|s| s.opts = opts(&[&ts(5, 6), &mp_capable_ack(0x2222, 0x1111)]));
    e.dp.entry(&third.frame());
    let f =
        e.dp.flow(&initial().key())
            .expect("created by the third ACK");
    assert_ne!(f.flags & FLOW_SERVER, 0);
    assert_eq!(f.rcv_wnd_log2, WND_LOG2, "from the local SYN-ACK");
    assert_eq!(try_spoof(&e.dp, &initial(), beyond), (false, true));

    // Without the egress hook the local window is unknown: 2^30.
    let dp = dp_with(&EMPTCP);
    assert_eq!(connected(&dp).rcv_wnd_log2, 0);
    let past_any = (1u32 << 30) + 1_000;
    assert_eq!(try_spoof(&dp, &initial(), past_any), (false, true));
    assert_eq!(try_spoof(&dp, &initial(), beyond), (true, false));
}

/// Handshake packets no live state asked for, on a joined subflow's
/// 4-tuple: an MP_JOIN SYN-ACK for a join the peer opened (it would reset
/// the subflow's rcv_nxt, so that a RST chosen by the same sender passes
/// the RST check), an MP_CAPABLE SYN-ACK or third ACK (it would create a
/// connection under the subflow's 4-tuple and take it from its
/// connection), and a new connection whose key collides with a live
/// connection's token (it would take that connection's joins). Each is
/// ignored and counted; the controls: the same RST at the real rcv_nxt
/// ends the subflow, and a token nobody holds is registered.
#[test]
fn spoofed_handshakes_leave_a_joined_subflow_and_its_connection() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    let f = connected(&dp);
    join_by_received_syn(&dp, f.token);
    dp.entry(&pure_ack(&joined(), 100_000).frame());
    let j = dp.join(&joined().key()).unwrap();
    assert_eq!(j.rcv_nxt, joined().seq);

    let x = 0x4000_0000u32;
    let spoof_syn_ack = joined().with(|s| {
        s.flags = SYN | ACK;
        s.seq = x;
        s.opts = opts(&[&wscale(14), &[30, 16, 0x10, 0], &[0; 12]]);
    });
    dp.entry(&spoof_syn_ack.frame());
    let k = dp.join(&joined().key()).unwrap();
    assert_eq!(
        (k.rcv_nxt, k.wscale),
        (j.rcv_nxt, j.wscale),
        "join state kept"
    );
    assert_eq!(dp.event(FlowStat::SynAckIgnored), 1);
    dp.entry(
        &joined()
            .with(|s| {
                s.flags = RST;
                s.seq = x.wrapping_add(1);
            })
            .frame(),
    );
    assert!(
        dp.join(&joined().key()).is_some(),
        "the spoofed RST ended the subflow"
    );
    assert_eq!(dp.event(FlowStat::CloseIgnored), 1);

    for spoof in [
        joined().with(|s| s.opts = opts(&[&ts(5, 6), &mp_capable_ack(0x77, 0x88)])),
        syn_ack(&joined(), 0x4242),
    ] {
        dp.entry(&spoof.frame());
        assert!(
            dp.flow(&joined().key()).is_none(),
            "a connection under the subflow"
        );
        assert_eq!(dp.join(&joined().key()).unwrap().conn, initial().key());
    }
    assert_eq!(dp.event(FlowStat::SynAckIgnored), 3);

    // Another connection whose server key gives the same token.
    let other = initial().with(|s| s.dport = 40009);
    dp.entry(&syn_ack(&other, SERVER_KEY).frame());
    assert!(dp.flow(&other.key()).is_some());
    assert_eq!(dp.token(f.token), Some(initial().key()), "the token moved");
    assert_eq!(dp.event(FlowStat::TokenInsertFailed), 1);

    // Controls: a token nobody holds is registered, and the RST at the
    // subflow's real rcv_nxt ends it.
    let third = initial().with(|s| s.dport = 40010);
    dp.entry(&syn_ack(&third, 0x5151).frame());
    assert_eq!(dp.token(token_of(0x5151)), Some(third.key()));
    dp.entry(&joined().with(|s| s.flags = RST).frame());
    assert!(dp.join(&joined().key()).is_none(), "control: the real RST");
}

#[test]
fn the_connection_ends_with_its_last_subflow_or_after_a_data_fin() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    let f = connected(&dp);
    join_by_received_syn(&dp, f.token);
    dp.entry(&pure_ack(&joined(), 1).frame());
    // The initial subflow closes; the joined one carries on.
    dp.entry(&initial().with(|s| s.flags = FIN | ACK).frame());
    let c = dp
        .flow(&initial().key())
        .expect("alive with a joined subflow");
    assert_ne!(c.flags & FLOW_INITIAL_CLOSED, 0);
    // The joined subflow's data still counts.
    dp.entry(&pure_ack(&joined(), 3001).frame());
    assert_eq!(dp.flow(&initial().key()).unwrap().bytes, 3000);
    // Its FIN is the last subflow's close.
    dp.entry(&joined().with(|s| s.flags = FIN | ACK).frame());
    assert!(dp.flow(&initial().key()).is_none());
    assert!(dp.join(&joined().key()).is_none());

    // An F bit without a mapping, or in a DSS of the wrong length, is no
    // DATA_FIN (one takes a data sequence number): the joined subflow's
    // close then ends only that subflow.
    let dp = dp_with(&EMPTCP);
    let f = connected(&dp);
    join_by_received_syn(&dp, f.token);
    let mut no_map = dss(Some((10, 4)), None);
    no_map[3] |= 0x10;
    let mut short = dss(Some((10, 4)), Some((500, 4, 0, 1)));
    short[3] |= 0x10;
    short[1] -= 2;
    short.truncate(short.len() - 2);
    for bogus in [no_map, short] {
        dp.entry(&initial().with(|s| s.opts = opts(&[&bogus])).frame());
        assert_eq!(dp.flow(&initial().key()).unwrap().flags & FLOW_DATA_FIN, 0);
    }
    dp.entry(&joined().with(|s| s.flags = FIN | ACK).frame());
    assert!(
        dp.join(&joined().key()).is_none(),
        "the joined subflow closed"
    );
    assert!(dp.flow(&initial().key()).is_some(), "the connection stays");

    // A DATA_FIN from the peer: the next subflow close ends everything.
    let dp = dp_with(&EMPTCP);
    let f = connected(&dp);
    join_by_received_syn(&dp, f.token);
    let mut fin = dss(Some((10, 4)), Some((500, 4, 0, 1)));
    fin[3] |= 0x10;
    dp.entry(&initial().with(|s| s.opts = opts(&[&fin])).frame());
    dp.entry(&joined().with(|s| s.flags = FIN | ACK).frame());
    assert!(dp.flow(&initial().key()).is_none(), "ended after DATA_FIN");
}

/// A join that never got past its SYN (the local stack refused the peer's,
/// or the peer never answered the local one) keeps no connection alive:
/// the initial subflow's close ends it. The control in each case: the same
/// join with its handshake gone on (the peer's ACK, or its SYN-ACK) keeps
/// the connection after that close.
#[test]
fn a_join_that_never_got_past_its_syn_keeps_no_connection_alive() {
    need_kernel!();
    let close_initial = || initial().with(|s| s.flags = FIN | ACK);
    // The peer's MP_JOIN SYN, then nothing more on the join.
    for handshake_went_on in [false, true] {
        let dp = dp_with(&EMPTCP);
        let f = connected(&dp);
        join_by_received_syn(&dp, f.token);
        if handshake_went_on {
            dp.entry(&pure_ack(&joined(), 1).frame());
        }
        dp.entry(&close_initial().frame());
        assert_eq!(
            dp.flow(&initial().key()).is_some(),
            handshake_went_on,
            "peer-opened join, handshake went on: {handshake_went_on}"
        );
    }
    // The local end's MP_JOIN SYN (egress), then the peer's SYN-ACK or nothing.
    for answered in [false, true] {
        let e = tracked_egress();
        let f = connected(&e.dp);
        let sent = sent_join_syn(f.token);
        assert_eq!(e.run(&sent.frame(), 0).0, PASS);
        assert!(e.dp.join(&joined().key()).is_some(), "mapped");
        if answered {
            let syn_ack = joined().with(|s| {
                s.flags = SYN | ACK;
                s.opts = opts(&[&wscale(9), &[30, 16, 0x10, 0], &[0; 12]]);
            });
            e.dp.entry(&syn_ack.frame());
        }
        e.dp.entry(&close_initial().frame());
        assert_eq!(
            e.dp.flow(&initial().key()).is_some(),
            answered,
            "local-opened join, answered: {answered}"
        );
    }
    // A mapping an older object made (counted at its SYN, without
    // `JOIN_UNCOUNTED`) stays counted once, across an upgrade: the
    // connection outlives its initial subflow and ends with that join.
    let mut dp = dp_with(&EMPTCP);
    let f = connected(&dp);
    join_by_received_syn(&dp, f.token);
    let mut j = dp.join(&joined().key()).unwrap();
    assert_ne!(j.flags & JOIN_UNCOUNTED, 0, "a new mapping is uncounted");
    j.flags &= !JOIN_UNCOUNTED;
    dp.put_join(&joined().key(), &j);
    let old = FlowState {
        joins: 1,
        ..dp.flow(&initial().key()).unwrap()
    };
    dp.put_flow(&initial().key(), &old);
    dp.entry(&pure_ack(&joined(), 1).frame());
    assert_eq!(dp.flow(&initial().key()).unwrap().joins, 1, "counted once");
    dp.entry(&close_initial().frame());
    assert!(
        dp.flow(&initial().key()).is_some(),
        "alive with the old join"
    );
    dp.entry(&joined().with(|s| s.flags = FIN | ACK).frame());
    assert!(
        dp.flow(&initial().key()).is_none(),
        "ended with the old join"
    );
}

#[test]
fn a_delivery_is_repeated_until_the_stack_echoes_it_then_given_up() {
    need_kernel!();
    let mut dp = dp_with(&EMPTCP);
    let aa = stored_at_recover_at(&mut dp);
    let carrier = pure_ack(&initial(), 1);
    let has_aa = |r: &Run| r.frame.windows(aa.len()).any(|w| w == aa.as_slice());
    let r = dp.entry(&carrier.frame());
    assert!(has_aa(&r), "first delivery");
    let g = dp.flow(&initial().key()).unwrap();
    assert_eq!(
        (g.recovered, g.attempts, g.recovered_via),
        (1 << 6, 1, VIA_INSERT)
    );
    assert!(g.retry_at_ns > 0);
    // Not confirmed and not due yet: nothing.
    assert!(
        !has_aa(&dp.entry(&carrier.frame())),
        "waits for the retry time"
    );
    // Its retry time passed (set in the past): delivered again, counted.
    let mut g = dp.flow(&initial().key()).unwrap();
    g.retry_at_ns = 1;
    dp.put_flow(&initial().key(), &g);
    assert!(has_aa(&dp.entry(&carrier.frame())), "retried");
    assert_eq!(dp.event(FlowStat::AddAddrRetried), 1);
    assert_eq!(dp.flow(&initial().key()).unwrap().add_addr_retried, 1);
    // Out of attempts: given up, forgotten.
    let mut g = dp.flow(&initial().key()).unwrap();
    g.retry_at_ns = 1;
    g.attempts = 4;
    dp.put_flow(&initial().key(), &g);
    assert!(!has_aa(&dp.entry(&carrier.frame())));
    assert_eq!(dp.event(FlowStat::AddAddrGivenUp), 1);
    assert_eq!(dp.flow(&initial().key()).unwrap().stored, 0);
    // A packet that already carries an ADD_ADDR gets no second one, though
    // it has room: the echo of the local end's announcement (Linux keeps
    // the last ADD_ADDR it parses: an inserted one would hide the echo),
    // or the peer's own (this connection is past remove_below: kept).
    stored_at_recover_at(&mut dp);
    for echo in [true, false] {
        let other = add_addr(1, addr("203.0.113.7"), None, echo);
        let busy = initial().with(|s| s.opts = opts(&[&dss(Some((2, 4)), None), &other]));
        let r = dp.entry(&busy.frame());
        assert!(!has_aa(&r), "echo {echo}");
    }
    assert_eq!(dp.event(FlowStat::InsertSkippedHasAddAddr), 2);
    // The control: the same packet without them gets the stored option.
    let free = initial().with(|s| s.opts = opts(&[&dss(Some((2, 4)), None)]));
    assert!(has_aa(&dp.entry(&free.frame())));
}

/// The events for user space (the agent) the datapath queued since the
/// last call.
fn agent_events(dp: &mut Dp) -> Vec<emptcp_common::RecoverEvent> {
    let mut ring = aya::maps::RingBuf::try_from(dp.ebpf.map_mut("EVENTS").unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        // SAFETY: the datapath writes whole RecoverEvent records.
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
    }
    out
}

/// A gauge's value: `PENDING` (connections waiting for a packet with
/// room; the TC recovery parses every received packet while it is above
/// 0) or `AWAITING` (connections with a delivered address not yet
/// confirmed; the egress hook looks at every sent segment while it is
/// above 0).
fn gauge(dp: &Dp, name: &str) -> u64 {
    let a: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(dp.ebpf.map(name).unwrap()).unwrap();
    a.get(&0, 0).unwrap()
}

/// Where no packet has room and the in-kernel path does not serve the
/// connection, the address is handed to the agent: an event every 16th
/// such packet, eight in all. Once the connection has also been pending
/// for 200 ms (the in-kernel path, where attached, had its turn), the
/// handoff is one delivery attempt (`VIA_AGENT`) like an insert: the
/// connection stops being pending, the slot is retried with backoff
/// unless the stack confirms it, and given up after the last attempt.
/// Before, the events stopped after eight and the connection stayed
/// pending for good, never retried nor given up. The control in each
/// attempt: the same 129 packets inside the 200 ms leave it pending.
#[test]
fn a_handoff_to_the_agent_is_a_delivery_attempt_retried_then_given_up() {
    need_kernel!();
    let mut dp = dp_with(&EMPTCP);
    stored_at_recover_at(&mut dp);
    // A server segment with a full option space: no room.
    let full = full_data(&initial());
    // 129 packets without room, the state's start moved by `shift` units
    // (2^20 ns) after the first: into the future, the 200 ms have not
    // passed whatever the machine's speed; 10 s back, they have.
    let handoff = |dp: &mut Dp, shift: i32| {
        assert_eq!(dp.entry(&full.frame()).verdict, XDP_PASS);
        let mut g = dp.flow(&initial().key()).unwrap();
        g.pending_since = g.pending_since.wrapping_add_signed(shift);
        dp.put_flow(&initial().key(), &g);
        for _ in 0..128 {
            assert_eq!(dp.entry(&full.frame()).verdict, XDP_PASS);
        }
        agent_events(dp)
    };
    const LATER: i32 = 10_000;
    for attempt in 1..=4u8 {
        let events = handoff(&mut dp, LATER);
        assert_eq!(events.len(), 8, "attempt {attempt}: events");
        assert!(
            events
                .iter()
                .all(|e| e.key == initial().key() && e.slot == 6),
            "attempt {attempt}"
        );
        let g = dp.flow(&initial().key()).unwrap();
        assert_ne!(
            g.flags & FLOW_RECOVER_PENDING,
            0,
            "attempt {attempt}: ended before the kernel path's turn"
        );
        assert_eq!(g.attempts, attempt - 1, "attempt {attempt}: counted early");
        // The 200 ms have passed: the next packet ends the handoff.
        let mut g = g;
        g.pending_since = g.pending_since.wrapping_sub(2 * LATER as u32);
        dp.put_flow(&initial().key(), &g);
        assert_eq!(dp.entry(&full.frame()).verdict, XDP_PASS);
        assert!(agent_events(&mut dp).is_empty(), "attempt {attempt}");
        let g = dp.flow(&initial().key()).unwrap();
        assert_eq!(
            g.flags & FLOW_RECOVER_PENDING,
            0,
            "attempt {attempt}: still pending"
        );
        assert_eq!(gauge(&dp, "PENDING"), 0, "attempt {attempt}");
        assert_eq!(
            (g.recovered, g.attempts, g.recovered_via),
            (1 << 6, attempt, VIA_AGENT),
            "attempt {attempt}"
        );
        assert_eq!(dp.event(FlowStat::AddAddrRetried), u64::from(attempt - 1));
        // Before its retry time: no new handoff.
        assert!(
            handoff(&mut dp, -LATER).is_empty(),
            "attempt {attempt}: waits"
        );
        // Its retry time passed (set in the past).
        let mut g = dp.flow(&initial().key()).unwrap();
        g.retry_at_ns = 1;
        dp.put_flow(&initial().key(), &g);
    }
    // Out of attempts: given up, forgotten, nothing more handed off.
    assert!(
        handoff(&mut dp, -LATER).is_empty(),
        "handed off after the last attempt"
    );
    assert_eq!(dp.event(FlowStat::AddAddrGivenUp), 1);
    assert_eq!(dp.flow(&initial().key()).unwrap().stored, 0);
    assert_eq!(gauge(&dp, "PENDING"), 0);
}

/// A delivered address whose stored option was evicted from `FLOW_ADDRS`
/// before its retry is forgotten then, and the connection stops counting
/// as awaiting a confirmation: the gauge goes back to 0 (it stayed up, and
/// the egress hook looked at every sent segment from then on).
#[test]
fn an_evicted_option_is_forgotten_with_its_gauge() {
    need_kernel!();
    let mut dp = dp_with(&EMPTCP);
    stored_at_recover_at(&mut dp);
    let carrier = pure_ack(&initial(), 1);
    dp.entry(&carrier.frame());
    assert_eq!(gauge(&dp, "AWAITING"), 1, "control: delivered, awaiting");
    {
        let mut m: aya::maps::HashMap<_, emptcp_common::AddrKey, StoredAddAddr> =
            aya::maps::HashMap::try_from(dp.ebpf.map_mut("FLOW_ADDRS").unwrap()).unwrap();
        m.remove(&emptcp_common::AddrKey {
            flow: initial().key(),
            slot: 6,
        })
        .unwrap();
    }
    let mut g = dp.flow(&initial().key()).unwrap();
    g.retry_at_ns = 1;
    dp.put_flow(&initial().key(), &g);
    dp.entry(&carrier.frame());
    assert_eq!(dp.event(FlowStat::AddAddrLost), 1);
    assert_eq!(dp.flow(&initial().key()).unwrap().stored, 0);
    assert_eq!(gauge(&dp, "AWAITING"), 0, "the gauge stayed up");
}

#[test]
fn the_stacks_echo_on_egress_confirms_the_delivery() {
    need_kernel!();
    let mut e = tracked_egress();
    let aa = stored_at_recover_at(&mut e.dp);
    let r = e.dp.entry(&pure_ack(&initial(), 1).frame());
    assert!(r.frame.windows(aa.len()).any(|w| w == aa.as_slice()));
    // The client's next segment echoes id 6 (no HMAC in an echo).
    let echo = Seg::v4().with(|s| {
        s.src = addr("192.0.2.1");
        s.dst = addr("192.0.2.2");
        s.sport = 40000;
        s.dport = 443;
        s.opts = opts(&[
            &ts(3, 4),
            &dss(Some((9, 4)), None),
            &add_addr(6, addr("198.51.100.2"), None, true),
        ]);
    });
    let (v, _) = e.run(&echo.frame(), 0);
    assert_eq!(v, PASS);
    let g = e.dp.flow(&initial().key()).unwrap();
    assert_eq!(g.confirmed, 1 << 6);
    assert_eq!(e.dp.event(FlowStat::AddAddrConfirmed), 1);
    // Confirmed: never delivered again, whatever the time.
    let mut g = g;
    g.retry_at_ns = 1;
    e.dp.put_flow(&initial().key(), &g);
    let r = e.dp.entry(&pure_ack(&initial(), 2).frame());
    assert!(!r.frame.windows(aa.len()).any(|w| w == aa.as_slice()));
}

#[test]
fn two_cpus_updating_one_connection_keep_its_size_and_bits_exact() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    let f = connected(&dp);
    join_by_received_syn(&dp, f.token);
    // Baselines on both subflows.
    dp.entry(&pure_ack(&initial(), 1_000).frame());
    const N: u64 = 4000;
    let dp = std::sync::Arc::new(dp);
    // Both store before either grows the connection past remove_below
    // (where strip stops storing): a thread that starts late on a busy
    // machine must not find the connection already large.
    let stored = std::sync::Arc::new(std::sync::Barrier::new(2));
    let run = |cpu: usize, base: Seg, ids: std::ops::Range<u8>| {
        let dp = dp.clone();
        let stored = stored.clone();
        std::thread::spawn(move || {
            pin_to(cpu);
            // First, both CPUs store addresses into the small connection
            // at once (each its own ids, over and over)...
            for _ in 0..200 {
                for id in ids.clone() {
                    let s = base.clone().with(|s| {
                        s.opts = opts(&[
                            &ts(1, 2),
                            &dss(Some((1_000, 4)), None),
                            &add_addr(id, addr("203.0.113.5"), None, false),
                        ])
                    });
                    dp.entry(&s.frame());
                }
            }
            stored.wait();
            // ...then both acknowledge the same connection-level data, in
            // step: the size is the highest data ACK, not the sum.
            for i in 1..=N {
                dp.entry(&pure_ack(&base, 1_000 + i * 10).frame());
            }
        })
    };
    let a = run(0, initial(), 1..4);
    let b = run(1, joined(), 4..7);
    a.join().unwrap();
    b.join().unwrap();
    let g = dp.flow(&initial().key()).unwrap();
    assert_eq!(g.bytes, N * 10, "size = newest data ACK - first");
    assert_ne!(g.flags & FLOW_DATA_ACK_SEEN, 0);
    assert_eq!(
        g.stored, 0b111_1110,
        "every stored address has its bit: {:#b}",
        g.stored
    );
    for id in 1..7u8 {
        assert_eq!(g.addr_ids[id as usize], id);
        let v = dp.flow_addr(&initial().key(), id as u32);
        assert_eq!(v.map(|v| v.bytes[3]), Some(id), "id {id}'s option kept");
    }
    // The two CPUs raced for the entry's own place: one option won it, the
    // other five are in the table (none in both, none lost).
    assert!(g.held_slot().is_some());
    assert_eq!(dp.table_addr_count(), 5);
    assert_eq!(dp.event(FlowStat::AddAddrStored), 6, "each id stored once");
}

/// Two CPUs open and close joined subflows of one connection at once (the
/// peer's MP_JOIN SYN, its ACK, its RST), each its own 4-tuple, over and
/// over: the connection's count of live joins ends exact (0), so closing
/// the initial subflow ends the connection. A count updated with a plain
/// read and write loses an increment or a decrement when the two CPUs meet
/// in it; a leaked one kept the connection alive after its last subflow.
#[test]
fn two_cpus_joining_and_closing_at_once_keep_the_join_count_exact() {
    need_kernel!();
    let dp = dp_with(&EMPTCP);
    let token = connected(&dp).token;
    dp.entry(&pure_ack(&initial(), 1_000).frame());
    const N: usize = 5000;
    let dp = std::sync::Arc::new(dp);
    let run = |cpu: usize, dport: u16| {
        let dp = dp.clone();
        std::thread::spawn(move || {
            pin_to(cpu);
            let sub = joined().with(|s| s.dport = dport);
            let syn = sub.clone().with(|s| {
                s.flags = SYN;
                s.seq = sub.seq.wrapping_sub(1);
                s.ack = 0;
                s.opts = opts(&[&wscale(5), &mp_join_syn(token, 2)]);
            });
            let ack = pure_ack(&sub, 1_000).frame();
            let rst = sub.clone().with(|s| s.flags = RST).frame();
            let (syn, mut closed) = (syn.frame(), 0);
            for _ in 0..N {
                dp.entry(&syn);
                dp.entry(&ack);
                dp.entry(&rst);
                closed += usize::from(dp.join(&sub.key()).is_none());
            }
            closed
        })
    };
    let a = run(0, 40001);
    let b = run(1, 40002);
    assert_eq!(a.join().unwrap(), N, "every join closed (CPU 0)");
    assert_eq!(b.join().unwrap(), N, "every join closed (CPU 1)");
    let g = dp
        .flow(&initial().key())
        .expect("the connection outlived its joins");
    assert_eq!(g.joins, 0, "joins left counted after all closed");
    dp.entry(&initial().with(|s| s.flags = FIN | ACK).frame());
    assert!(
        dp.flow(&initial().key()).is_none(),
        "the connection outlived its last subflow"
    );
}

/// Two CPUs find one connection's recovery due and no room in their
/// segments at the same moment, round after round: the `PENDING` gauge
/// (connections pending; the TC recovery parses every received packet
/// while it is above 0) moves by one per round, not two. Moving it on a
/// plain test of the flag before an atomic or let both CPUs add when both
/// found the flag clear, and the gauge never came back to 0. The rounds
/// start on a spinning flag, not a sleeping barrier, so the two runs
/// meet within a fraction of a microsecond; on a machine so loaded that
/// 20 000 rounds take longer than 10 s, the rounds run by then are judged.
#[test]
fn two_cpus_marking_one_connection_pending_count_it_once() {
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    need_kernel!();
    let mut dp = dp_with(&EMPTCP);
    stored_at_recover_at(&mut dp);
    const ROUNDS: u64 = 20_000;
    let dp = std::sync::Arc::new(std::sync::RwLock::new(dp));
    // `go`: the round CPU 0 started; `done`: the last round CPU 1 ran.
    let (go, done) = (
        std::sync::Arc::new(AtomicU64::new(0)),
        std::sync::Arc::new(AtomicU64::new(0)),
    );
    let frame = full_data(&initial()).frame();
    const STOP: u64 = u64::MAX;
    let coordinator = {
        let (dp, go, done, frame) = (dp.clone(), go.clone(), done.clone(), frame.clone());
        std::thread::spawn(move || {
            pin_to(0);
            let budget = std::time::Instant::now() + std::time::Duration::from_secs(10);
            for round in 1..=ROUNDS {
                while done.load(SeqCst) != round - 1 {
                    std::hint::spin_loop();
                }
                {
                    // Not pending again: the state the round starts from.
                    let mut dp = dp.write().unwrap();
                    let mut g = dp.flow(&initial().key()).unwrap();
                    g.flags &= !FLOW_RECOVER_PENDING;
                    g.pending_packets = 0;
                    dp.put_flow(&initial().key(), &g);
                }
                go.store(round, SeqCst);
                assert_eq!(dp.read().unwrap().entry(&frame).verdict, XDP_PASS);
                if round == ROUNDS || std::time::Instant::now() > budget {
                    while done.load(SeqCst) != round {
                        std::hint::spin_loop();
                    }
                    go.store(STOP, SeqCst);
                    return round;
                }
            }
            unreachable!()
        })
    };
    let other = {
        let (dp, go, done) = (dp.clone(), go.clone(), done.clone());
        std::thread::spawn(move || {
            pin_to(1);
            for round in 1.. {
                let g = loop {
                    let g = go.load(SeqCst);
                    if g == round || g == STOP {
                        break g;
                    }
                    std::hint::spin_loop();
                };
                if g == STOP {
                    return;
                }
                assert_eq!(dp.read().unwrap().entry(&frame).verdict, XDP_PASS);
                done.store(round, SeqCst);
            }
        })
    };
    let rounds = coordinator.join().unwrap();
    other.join().unwrap();
    eprintln!("{rounds} rounds");
    assert!(rounds >= 100, "only {rounds} rounds in 10 s");
    let dp = dp.read().unwrap();
    assert_ne!(
        dp.flow(&initial().key()).unwrap().flags & FLOW_RECOVER_PENDING,
        0
    );
    assert_eq!(gauge(&dp, "PENDING"), rounds, "one per round");
}

/// Pins the calling thread to `cpu` (BPF_PROG_TEST_RUN runs on it).
fn pin_to(cpu: usize) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut set = [0u64; 16];
    let c = cpu % n;
    set[c / 64] |= 1 << (c % 64);
    // SAFETY: sched_setaffinity on this thread with a valid mask.
    unsafe {
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), set.as_ptr().cast());
    }
}
