//! Egress capture: what the local end last sent on each MPTCP subflow
//! (`SUBFLOWS`, see `emptcp_common::SubflowState`), for packet copy. Runs
//! (`egress_capture`) on every packet an egress chain matched, before its
//! steps. The parts both hooks share are in `crate::capture`.
//!
//! * A segment carrying an MPTCP option creates the entry (event `NEW`).
//! * Every segment of a known subflow updates it: newest seq end (snd_nxt),
//!   ack (rcv_nxt, and when it last advanced), window, timestamps, DSS data
//!   ACK (4 or 8 bytes, 64-bit with wrap handling), MACs and VLAN tag,
//!   the keys of MP_CAPABLE, the MP_JOIN fact and the token of the local
//!   end's MP_JOIN SYN, the window scale of the SYN.
//! * FIN or RST: noted and reported (event `CLOSED`); the entry stays as
//!   a tombstone (`SF_CLOSED`) that later segments of the dead connection
//!   leave alone and a new SYN on the 4-tuple starts over (the peer's FIN
//!   or RST is seen by the ingress capture, `capture/ingress.rs`).
//!
//! Malformed packets (`OPTS_BAD`) are not captured.
use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use emptcp_common::{
    EgressStat, OPTS_BAD, SF_ACK_SEEN, SF_DATA_ACK_SEEN, SF_FIN, SF_JOIN, SF_PEER_TOKEN, SF_RST,
    SF_SEQ_SEEN, SF_SYN_SEEN, SF_TS_SEEN, SF_WSCALE_AGREED, SF_WSCALE_SEEN, SUBFLOW_EV_NEW,
    SubflowState, XdpMeta,
};

use super::event;
use crate::{
    capture::{Sender, clear_flags, close, closed, emit, keys, set_flags},
    maps::SUBFLOWS,
    options::{ACK, FIN, RST, SYN, Seg, key},
    parse::bytes_at,
};

/// DSS flags: A = data ACK present, a = it is 8 bytes.
const DSS_A: u8 = 0x01;
const DSS_A8: u8 = 0x02;

#[inline(always)]
pub fn capture(ctx: &TcContext, m: *const XdpMeta, ifindex: u32) {
    let s = Seg::of(m);
    if s.opt_state == OPTS_BAD {
        return;
    }
    let key = key(m);
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(f) = SUBFLOWS.get_ptr_mut(&key) {
        let f = unsafe { &mut *f };
        if !closed(f) {
            update(ctx, &s, f, now, ifindex, Entry::Shared);
            if s.flags & (FIN | RST) != 0 {
                let how = if s.flags & RST != 0 { SF_RST } else { SF_FIN };
                close(&key, f, how, now);
            }
            return;
        }
        // A tombstone: only a SYN with an MPTCP option (a new subflow on
        // the same 4-tuple) starts it over; the dead connection's last
        // segments do not.
        if s.flags & SYN == 0 || s.n_mptcp == 0 {
            return;
        }
        *f = SubflowState::default();
        update(ctx, &s, f, now, ifindex, Entry::Shared);
        event(EgressStat::SubflowsCreated);
        emit(&key, f, SUBFLOW_EV_NEW, now);
        return;
    }
    // A FIN or RST of a subflow never seen opens nothing.
    if s.n_mptcp == 0 || s.flags & (FIN | RST) != 0 {
        return;
    }
    let mut f = SubflowState::default();
    update(ctx, &s, &mut f, now, ifindex, Entry::New);
    if SUBFLOWS.insert(&key, &f, 0).is_err() {
        event(EgressStat::SubflowInsertFailed);
        return;
    }
    event(EgressStat::SubflowsCreated);
    emit(&key, &f, SUBFLOW_EV_NEW, now);
}

/// Where the entry `update` writes lives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// In `SUBFLOWS`: the ingress capture may change its flags at once.
    Shared,
    /// Built on the stack, not inserted yet.
    New,
}

/// Notes a sent segment in the subflow's entry. The `SF_*` bits it
/// changes are collected and written once at the end: atomically, and
/// only if one differs, on a `Shared` entry (capture/mod.rs).
#[inline(always)]
fn update(ctx: &TcContext, s: &Seg, f: &mut SubflowState, now: u64, ifindex: u32, entry: Entry) {
    let mut set = 0u32;
    let mut clear = 0u32;
    f.last_seen_ns = now;
    f.chain = s.chain;
    f.ifindex = ifindex;
    let payload = s.payload();
    // SYN and FIN each take one sequence number.
    let end = s
        .seq
        .wrapping_add(payload)
        .wrapping_add((s.flags & (SYN | FIN) != 0) as u32);
    if f.flags & SF_SEQ_SEEN == 0 || (end.wrapping_sub(f.snd_nxt) as i32) > 0 {
        f.snd_nxt = end;
    }
    set |= SF_SEQ_SEEN;
    if s.flags & ACK != 0 {
        if f.flags & SF_ACK_SEEN == 0 {
            f.rcv_nxt = s.ack;
        } else if (s.ack.wrapping_sub(f.rcv_nxt) as i32) > 0 {
            f.rcv_nxt = s.ack;
            f.last_ack_advance_ns = now;
        }
        set |= SF_ACK_SEEN;
    }
    f.window = s.window;
    if s.ts.len != 0 {
        f.tsval = s.tsval;
        f.tsecr = s.tsecr;
        set |= SF_TS_SEEN;
    }
    if payload != 0 {
        f.last_data_tx_ns = now;
    }
    if s.flags & SYN != 0 {
        set |= SF_SYN_SEEN | SF_WSCALE_SEEN;
        // The local SYN-ACK settles the shift; after a local SYN the
        // peer's answer does (see `SF_WSCALE_AGREED`).
        if s.flags & ACK != 0 {
            set |= SF_WSCALE_AGREED;
        } else {
            clear |= SF_WSCALE_AGREED;
        }
        let mut wb = [0u8; 8];
        // RFC 7323: a shift above 14 is used as 14; none announced = 0.
        f.wscale = if s.read(ctx, s.wscale, &mut wb) {
            wb[2].min(14)
        } else {
            0
        };
    }
    if s.join.len != 0 {
        set |= SF_JOIN;
        // The local end's MP_JOIN SYN (12 bytes) names the connection by
        // the peer's token.
        let mut o = [0u8; 16];
        if s.flags & (SYN | ACK) == SYN && s.join.len == 12 && s.read(ctx, s.join, &mut o) {
            f.peer_token = u32::from_be_bytes([o[4], o[5], o[6], o[7]]);
            set |= SF_PEER_TOKEN;
        }
    }
    if s.capable.len != 0 {
        keys(ctx, s, f, Sender::Local);
    }
    if s.dss.len != 0 {
        set |= data_ack(ctx, s, f);
    }
    // A raw-IP link (L3 at 0) has no MACs: a forged packet needs none.
    if let Some(eth) = bytes_at(ctx, 0, 16).filter(|_| s.l3 >= 14) {
        let mut mac = [0u8; 12];
        unsafe { core::ptr::copy_nonoverlapping(eth, mac.as_mut_ptr(), 12) };
        f.mac = mac;
        f.vlan_tci = if s.l3 > 14 {
            unsafe { u16::from_be_bytes([*eth.add(14), *eth.add(15)]) }
        } else if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
            unsafe { (*ctx.skb.skb).vlan_tci as u16 }
        } else {
            0
        };
    }
    match entry {
        Entry::Shared => {
            set_flags(f, set);
            clear_flags(f, clear);
        }
        Entry::New => f.flags = (f.flags | set) & !clear,
    }
}

/// The data ACK of the DSS, kept 64-bit: an 8-byte form is taken as is, a
/// 4-byte one moves the last value forward by its wrap-aware delta (the
/// low 32 bits both forms share). A value at or behind the last one (a
/// reordered segment) is ignored. Returns the `SF_*` bit to set (the
/// first data ACK's), 0 otherwise.
#[inline(always)]
fn data_ack(ctx: &TcContext, s: &Seg, f: &mut SubflowState) -> u32 {
    let mut o = [0u8; 16];
    if !s.read(ctx, s.dss, &mut o) {
        return 0;
    }
    let fl = o[3];
    if fl & DSS_A == 0 {
        return 0;
    }
    let len8 = fl & DSS_A8 != 0;
    if s.dss.len < if len8 { 12 } else { 8 } {
        event(EgressStat::Malformed);
        return 0;
    }
    let be32 = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]) as u64;
    let v = if len8 {
        (be32(4) << 32) | be32(8)
    } else {
        be32(4)
    };
    if f.flags & SF_DATA_ACK_SEEN == 0 {
        f.data_ack = v;
        return SF_DATA_ACK_SEEN;
    }
    let d = (v as u32).wrapping_sub(f.data_ack as u32) as i32;
    if d <= 0 {
        return 0;
    }
    f.data_ack = if len8 {
        v
    } else {
        f.data_ack.wrapping_add(d as u64)
    };
    0
}
