//! `record_flow`: track MPTCP flows and their size.
//!
//! * SYN-ACK with MP_CAPABLE: (re)create the flow, with the window scale the
//!   remote announced and the frame's MACs (for a later forged ACK).
//! * FIN or RST: forget the flow and its stored options.
//! * Any other segment of a tracked flow: add the DSS progress to the size
//!   and keep the newest seq/ack/window/timestamps.
//!
//! Untracked flows and malformed packets pass untouched.
use aya_ebpf::programs::XdpContext;
use emptcp_common::{
    Action, FLOW_DATA_ACK_SEEN, FLOW_DATA_SEQ_SEEN, FLOW_SEQ_SEEN, FLOW_TS_SEEN, FlowKey, FlowStat,
    FlowState, META_FLOW_TRACKED, META_FLOW_UNTRACKED, Outcome, XdpMeta,
};

use crate::{
    action_program,
    chain::{self, Verdict},
    flow,
    maps::FLOWS,
    options::{ACK, Buf64, FIN, RST, SYN, Seg, key, load},
    stats,
};

action_program!(record_flow, Action::RecordFlow, run);

const ROW: u32 = Action::RecordFlow as u32;

/// DSS flags (RFC 8684 3.3): A = data ACK present, a = it is 8 bytes,
/// M = mapping present, m = its data sequence number is 8 bytes.
const DSS_A: u8 = 0x01;
const DSS_A8: u8 = 0x02;
const DSS_M: u8 = 0x04;
const DSS_M8: u8 = 0x08;

#[inline(always)]
fn run(ctx: &XdpContext, m: *mut XdpMeta) -> Verdict {
    if !chain::well_formed(m) {
        stats::bump(ROW, Outcome::Passed);
        return Verdict::Next;
    }
    let s = Seg::of(m);
    let key = key(m);
    let fl = s.flags;
    let done = if fl & (FIN | RST) != 0 {
        let removed = flow::remove(&key);
        if removed {
            stats::event(FlowStat::FlowsRemoved);
        }
        removed
    } else if fl & SYN != 0 {
        fl & ACK != 0 && s.capable.len != 0 && create(ctx, &s, &key)
    } else if let Some(f) = flow::get(&key) {
        // The longest DSS: 4 + data ACK 8 + DSN 8 + subflow seq 4 +
        // data-level length 2 + checksum 2 = 28.
        let mut o = [0u8; 32];
        if s.read(ctx, s.dss, &mut o) {
            account_dss(f, &o, s.dss.len as u32);
        }
        note_segment(&s, f);
        describe_flow(ctx, Some(f));
        true
    } else {
        describe_flow(ctx, None);
        false
    };
    stats::bump(
        ROW,
        if done {
            Outcome::Applied
        } else {
            Outcome::Passed
        },
    );
    Verdict::Next
}

/// A new flow from its SYN-ACK. A flow already under this key (a
/// retransmitted SYN-ACK, or a reused 4-tuple) starts over.
#[inline(always)]
fn create(ctx: &XdpContext, s: &Seg, key: &FlowKey) -> bool {
    flow::remove(key);
    let mut wb = [0u8; 8];
    let shift = if s.read(ctx, s.wscale, &mut wb) {
        wb[2].min(14)
    } else {
        0
    };
    let mut f = FlowState {
        chain: s.chain,
        ifindex: ctx.ingress_ifindex() as u32,
        // RFC 7323: a shift above 14 is used as 14.
        wscale: shift,
        ..FlowState::default()
    };
    let mut eth = Buf64::zeroed();
    // A raw-IP link (L3 at 0) has no MACs: a forged packet needs none.
    if s.l3 >= 14 && load(ctx, 0, eth.0.as_mut_ptr(), 16) {
        f.mac.copy_from_slice(&eth.0[..12]);
        if s.l3 > 14 {
            f.vlan_tci = eth.be16(14);
        }
    }
    note_segment(s, &mut f);
    if FLOWS.insert(key, &f, 0).is_err() {
        stats::event(FlowStat::FlowInsertFailed);
        return false;
    }
    stats::event(FlowStat::FlowsCreated);
    true
}

/// Keeps seq/ack/window/timestamps of the newest segment (by its end,
/// wrap-aware), which a forged duplicate ACK must match.
#[inline(always)]
fn note_segment(s: &Seg, f: &mut FlowState) {
    // SYN and FIN each take one sequence number.
    let end = s
        .seq
        .wrapping_add(s.payload())
        .wrapping_add((s.flags & (SYN | FIN) != 0) as u32);
    if f.flags & FLOW_SEQ_SEEN != 0 && (end.wrapping_sub(f.rcv_nxt) as i32) < 0 {
        return;
    }
    f.flags |= FLOW_SEQ_SEEN;
    f.rcv_nxt = end;
    f.ack = s.ack;
    f.window = s.window;
    if s.ts.len != 0 {
        f.tsval = s.tsval;
        f.tsecr = s.tsecr;
        f.flags |= FLOW_TS_SEEN;
    }
}

/// Tells the later steps what this one found (they skip their own lookup
/// of an untracked flow or one with nothing to re-insert).
#[inline(always)]
fn describe_flow(ctx: &XdpContext, f: Option<&FlowState>) {
    let Some(m) = chain::meta(ctx) else {
        return;
    };
    unsafe {
        match f {
            Some(f) => {
                (*m).flow = META_FLOW_TRACKED;
                (*m).flow_bytes = f.bytes;
                (*m).flow_due = (f.stored & !f.recovered != 0) as u8;
            }
            None => (*m).flow = META_FLOW_UNTRACKED,
        }
    }
}

/// Adds the progress of the DSS `o` (`len` bytes) to the flow size.
#[inline(always)]
fn account_dss(f: &mut FlowState, o: &[u8; 32], len: u32) {
    let fl = o[3];
    let ack_len = if fl & DSS_A == 0 {
        0
    } else if fl & DSS_A8 != 0 {
        8
    } else {
        4
    };
    let dsn_len = if fl & DSS_M == 0 {
        0
    } else if fl & DSS_M8 != 0 {
        8
    } else {
        4
    };
    // A mapping adds subflow seq (4) + data-level length (2) and an
    // optional checksum (2).
    let need = 4 + ack_len + if dsn_len == 0 { 0 } else { dsn_len + 6 };
    if len != need && !(dsn_len != 0 && len == need + 2) {
        stats::event(FlowStat::Malformed);
        return;
    }
    let mut p = 4;
    if ack_len != 0 {
        let v = read_seq(o, p, ack_len);
        f.bytes += advance(
            &mut f.data_ack,
            v,
            ack_len,
            &mut f.flags,
            FLOW_DATA_ACK_SEEN,
        );
        p += ack_len;
    }
    if dsn_len != 0 {
        let q = p + dsn_len + 4;
        let dll = u16::from_be_bytes([o[(q & 31) as usize], o[((q + 1) & 31) as usize]]) as u64;
        let v = read_seq(o, p, dsn_len).wrapping_add(dll);
        f.bytes += advance(
            &mut f.data_end,
            v,
            dsn_len,
            &mut f.flags,
            FLOW_DATA_SEQ_SEEN,
        );
    }
}

/// A 4- or 8-byte big-endian sequence number.
#[inline(always)]
fn read_seq(o: &[u8; 32], p: u32, len: u32) -> u64 {
    let be32 = |i: u32| {
        let b = |k: u32| o[((i + k) & 31) as usize];
        u32::from_be_bytes([b(0), b(1), b(2), b(3)]) as u64
    };
    if len == 8 {
        (be32(p) << 32) | be32(p + 4)
    } else {
        be32(p)
    }
}

/// Moves `last` forward to `v` and returns by how much. The first value is
/// the baseline (0 bytes). The delta is taken on the low 32 bits, which both
/// forms share, so it is wrap-around safe and mixing forms is fine; a value
/// at or behind `last` (a reordered or duplicate segment) adds nothing.
#[inline(always)]
fn advance(last: &mut u64, v: u64, len: u32, flags: &mut u32, seen: u32) -> u64 {
    if *flags & seen == 0 {
        *flags |= seen;
        *last = v;
        return 0;
    }
    let d = (v as u32).wrapping_sub(*last as u32) as i32;
    if d <= 0 {
        return 0;
    }
    *last = if len == 8 {
        v
    } else {
        last.wrapping_add(d as u64)
    };
    d as u64
}
