//! What the local end sends that the connection table needs (interfaces
//! with `IFACE_TRACK`, before any egress chain):
//!
//! * an MP_JOIN SYN names, by its token, the connection the new subflow
//!   joins: the subflow is mapped to it (`JOINS`), so the ingress actions
//!   act on its packets as on the connection's. If the SYN goes to a
//!   delivered address, that delivery is confirmed.
//! * the local end's SYN-ACK to a join or a connection the peer opened
//!   says whether window scaling is in effect on it (ingress set_window
//!   needs that);
//! * an ADD_ADDR echo acknowledges an address the peer announced: when the
//!   connection awaits confirmation of a delivered one with that id, the
//!   delivery counts (`flow::confirm`).
//!
//! Only those packets are described (the option scan, into `EGRESS_META`):
//! SYNs and SYN-ACKs, and any packet while some connection awaits a
//! confirmation (`AWAITING`). The common packet pays one array read.
use aya_ebpf::programs::TcContext;
use emptcp_common::{
    ADDR_SLOTS, FlowKey, FlowState, JOIN_SYN_ACK_SEEN, JOIN_WSCALE_SEEN, OPTS_BAD,
    SYN_SHIFT_ANSWERED, SYN_SHIFT_LOCAL, SynShift, XdpMeta,
};

use crate::{
    flow,
    maps::{AWAITING, JOINS, SYN_SHIFTS},
    options::{ACK, SYN, Seg, key},
};

/// Whether the sent packet with TCP `flags` needs a look (SYNs and
/// SYN-ACKs: rare).
#[inline(always)]
pub fn wanted(flags: u8) -> bool {
    flags & SYN != 0 || flow::gauge(&AWAITING) != 0
}

/// `m`: the sent packet's description (seen from the peer: local = its
/// source), written by the entry.
#[inline(always)]
pub fn track(ctx: &TcContext, m: *const XdpMeta) {
    // The positions of a walk that failed part way are not the options'.
    if unsafe { (*m).opt_state } == OPTS_BAD {
        return;
    }
    let s = Seg::of(m);
    let k = key(m);
    if s.flags & SYN != 0 {
        let wnd = window_log2(ctx, &s);
        if s.flags & ACK == 0 {
            let mut o = [0u8; 16];
            if s.join.len == 12 && s.read(ctx, s.join, &mut o) {
                joined(&k, u32::from_be_bytes([o[4], o[5], o[6], o[7]]), wnd);
            } else if s.capable.len != 0 {
                opened_connection(&k, wnd);
            }
        } else if s.join.len != 0 {
            answered(&k, s.wscale.len != 0, wnd);
        } else if s.capable.len != 0 {
            answered_connection(&k, s.wscale.len != 0, wnd);
        }
        return;
    }
    let mut o = [0u8; 8];
    if s.read(ctx, s.echo, &mut o)
        && let Some(c) = flow::resolve(&k, true)
    {
        flow::confirm(c.f, o[3]);
    }
}

/// The local end answers, with its SYN-ACK, the join `key` the peer
/// opened (record_flow mapped it at the peer's SYN, with the peer's window
/// scale). Scaling is in effect only if this SYN-ACK carries the option
/// too (RFC 7323 2.2): ingress set_window waits for this answer.
#[inline(always)]
fn answered(key: &FlowKey, scales: bool, wnd: u8) {
    let Some(j) = JOINS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: an LRU value stays valid for the program run. The peer's
    // SYN (ingress) wrote the entry before this SYN-ACK left.
    let j = unsafe { &mut *j };
    if !scales {
        flow::clear_join_flags(j, JOIN_WSCALE_SEEN);
        j.wscale = 0;
    }
    j.rcv_wnd_log2 = wnd;
    flow::set_join_flags(j, JOIN_SYN_ACK_SEEN);
}

/// The local end answers, with its MP_CAPABLE SYN-ACK, the connection
/// `key` the peer opens (record_flow kept the peer's SYN's window scale):
/// whether this SYN-ACK scales too settles the connection's shift when its
/// third ACK creates it.
#[inline(always)]
fn answered_connection(key: &FlowKey, scales: bool, wnd: u8) {
    let Some(v) = SYN_SHIFTS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: an LRU value stays valid for the program run.
    let v = unsafe { &mut *v };
    v.flags |= SYN_SHIFT_ANSWERED;
    v.local_wnd_log2 = wnd;
    if scales {
        v.flags |= SYN_SHIFT_LOCAL;
    }
}

/// The local end opens connection `key` with its MP_CAPABLE SYN: its
/// window bound waits in `SYN_SHIFTS` for the peer's SYN-ACK, which
/// creates the connection (record_flow).
#[inline(always)]
fn opened_connection(key: &FlowKey, wnd: u8) {
    let v = SynShift {
        local_wnd_log2: wnd,
        ..SynShift::default()
    };
    let _ = SYN_SHIFTS.insert(key, &v, 0);
}

/// The largest receive window the sender of SYN `s` can advertise, as a
/// power of two: 16 plus the shift of its window scale option (RFC 7323:
/// at most 14), 16 without one.
#[inline(always)]
fn window_log2(ctx: &TcContext, s: &Seg) -> u8 {
    let mut wb = [0u8; 8];
    if s.wscale.len != 0 && s.read(ctx, s.wscale, &mut wb) {
        16 + wb[2].min(14)
    } else {
        16
    }
}

/// The local end opens subflow `key` to the connection of `token`.
#[inline(always)]
fn joined(key: &FlowKey, token: u32, wnd: u8) {
    if !flow::map_join(key, token, None, false, wnd) {
        return;
    }
    let Some(c) = flow::resolve(key, true) else {
        return;
    };
    // A join to an address the datapath delivered proves the delivery.
    let (conn, f) = (c.key, c.f);
    if flow::awaiting(f) {
        confirm_by_address(&conn, f, key);
    }
}

/// Confirms the delivered, unconfirmed address the join `sub` goes to.
#[inline(always)]
fn confirm_by_address(conn: &FlowKey, f: &mut FlowState, sub: &FlowKey) {
    let waiting = f.stored & !f.confirmed;
    for slot in 0..ADDR_SLOTS {
        if waiting & (1 << slot) == 0 {
            continue;
        }
        let Some(v) = flow::stored_addr(conn, f, slot) else {
            continue;
        };
        // The address follows kind, length, subtype and id: 4 bytes for
        // IPv4 (option length 16 or 18), 16 for IPv6 (28 or 30). Compared
        // as two words, without a branch per byte (each was a verifier
        // state: ~30 k of this program's verified instructions).
        let stored: [u8; 16] = core::array::from_fn(|i| v.bytes[4 + i]);
        let (lo, hi) = (words(&stored), words(&sub.remote));
        let (d0, d1) = (lo.0 ^ hi.0, lo.1 ^ hi.1);
        let diff = if v.len >= 28 {
            d0 | d1
        } else {
            d0 & 0xffff_ffff
        };
        if diff == 0 {
            flow::confirm(f, f.addr_ids[(slot & (ADDR_SLOTS - 1)) as usize]);
            return;
        }
    }
}

/// The 16 bytes of an address as two native-endian words (IPv4: the low
/// 32 bits of the first).
#[inline(always)]
fn words(a: &[u8; 16]) -> (u64, u64) {
    let w = |o: usize| u64::from_ne_bytes(core::array::from_fn(|i| a[o + i]));
    (w(0), w(8))
}
