//! `egress_set_backup` (arg: 1 = backup, 0 = regular): make an MPTCP
//! segment the local end sends carry MP_PRIO with the wanted B flag.
//!
//! * An MP_PRIO already present gets its flag rewritten (any segment).
//! * Otherwise `NOP + MP_PRIO` (4 bytes) is appended to the options of a
//!   pure ACK (no payload) with room, by growing the skb at its TAIL
//!   (`bpf_skb_change_tail`): with no payload after the options, the new
//!   bytes land exactly after them and the TCP header does not move. That
//!   matters on egress: a locally sent skb is usually CHECKSUM_PARTIAL, and
//!   its `csum_start` (where the device starts the TCP checksum) must keep
//!   pointing at the TCP header, which an insert at the head (moving the
//!   TCP header 4 bytes) would break with no helper to fix it.
//!   GSO packets (`insert_skipped_gso`) and segments with payload
//!   (`insert_skipped_payload`) are left untouched and counted.
//!
//! Checksums: `bpf_l4_csum_replace` for every TCP change (option bytes and
//! data offset as plain changes, the TCP length with BPF_F_PSEUDO_HDR), so
//! both complete and CHECKSUM_PARTIAL skbs come out right;
//! `bpf_l3_csum_replace` for the IPv4 total length.
use aya_ebpf::{
    bindings::BPF_F_PSEUDO_HDR, helpers::generated::bpf_skb_change_tail, programs::TcContext,
};
use emptcp_common::{Action, EgressStat, OPTS_EOL, OptRef, Outcome, XdpMeta};

use super::{SHOT, Step, Verdict, event};
use crate::{
    egress::{arg, well_formed},
    egress_program,
    maps::SUBFLOWS,
    options::{KIND_MPTCP, KIND_NOP, OPT_MAX, RST, SYN, Seg, TCP_HLEN, key},
    parse::Frame,
};

egress_program!(egress_set_backup, Action::SetBackup, run);

/// Subtype 5 in the high nibble; the B flag is bit 0.
const MP_PRIO_B2: u8 = 0x50;

#[inline(always)]
fn run(ctx: &TcContext, m: *mut XdpMeta) -> Step {
    super::or_passed(set(ctx, m, (arg(m) != 0) as u8))
}

#[inline(always)]
fn set(ctx: &TcContext, m: *mut XdpMeta, backup: u8) -> Option<Step> {
    if !well_formed(m) {
        return None;
    }
    let s = Seg::of(m);
    if s.flags & (SYN | RST) != 0 || s.n_mptcp == 0 {
        return None;
    }
    if s.prio.len != 0 {
        return Some(rewrite(ctx, &s, backup));
    }
    if s.opt_state == OPTS_EOL || s.opt_len + 4 > OPT_MAX {
        event(EgressStat::MpPrioNoRoom);
        return None;
    }
    if unsafe { (*ctx.skb.skb).gso_size } != 0 {
        event(EgressStat::InsertSkippedGso);
        return None;
    }
    if s.payload() != 0 {
        event(EgressStat::InsertSkippedPayload);
        return None;
    }
    // Signalled once per subflow: the capture (which ran before this step)
    // remembers what was inserted.
    let key = key(m);
    let sub = SUBFLOWS.get_ptr_mut(&key);
    if let Some(f) = sub
        && unsafe { (*f).prio_sent } == backup + 1
    {
        return None;
    }
    let v = insert(ctx, &s, m, backup);
    if let (Outcome::Applied, Some(f)) = (v.outcome, sub) {
        unsafe { (*f).prio_sent = backup + 1 };
    }
    Some(v)
}

/// Rewrites the B flag of the MP_PRIO in place.
#[inline(always)]
fn rewrite(ctx: &TcContext, s: &Seg, backup: u8) -> Step {
    // The flag byte, within its 16-bit checksum word (TCP-relative parity).
    let rel = TCP_HLEN + s.prio.off as u32 + 2;
    let word_at = s.l4 + (rel & !1);
    let mut w = [0u8; 2];
    if !ctx.load_into(word_at, w.as_mut_ptr(), 2) {
        return Step::error(Verdict::Next);
    }
    // The flag (bit 0 of the byte) is bit 8 of the big-endian word for a
    // byte at an even offset, bit 0 for an odd one. Shifts, not an index:
    // a variable index into the stack copy becomes pointer arithmetic the
    // verifier refuses.
    let v = u16::from_be_bytes(w);
    let sh = (1 - (rel & 1)) * 8;
    let nv = (v & !(1u16 << sh)) | ((backup as u16) << sh);
    if nv != v {
        let nw = nv.to_be_bytes();
        if ctx.store(word_at as usize, &nw, 0).is_err() {
            return Step::error(Verdict::Next);
        }
        let (from, to) = (u16::from_ne_bytes(w) as u64, u16::from_ne_bytes(nw) as u64);
        if ctx
            .l4_csum_replace(s.l4 as usize + 16, from, to, 2)
            .is_err()
        {
            return Step::error(Verdict::Return(SHOT));
        }
        event(EgressStat::MpPrioRewritten);
    }
    Step::applied(Verdict::Next)
}

/// Appends `NOP, MP_PRIO(3)` after the options of a pure ACK.
#[inline(always)]
fn insert(ctx: &TcContext, s: &Seg, m: *mut XdpMeta, backup: u8) -> Step {
    let len = ctx.len();
    let end = s.l4 + s.seg_len;
    // Nothing may follow the segment (no trailer), or the option would
    // land after it.
    if end != len {
        event(EgressStat::Malformed);
        return Step::passed(Verdict::Next);
    }
    // Everything the fix-ups need is read before the skb changes.
    let mut doff = [0u8; 2];
    let mut iplen = [0u8; 2];
    let len_at = if s.family == 4 { s.l3 + 2 } else { s.l3 + 4 };
    if !ctx.load_into(s.l4 + 12, doff.as_mut_ptr(), 2)
        || !ctx.load_into(len_at, iplen.as_mut_ptr(), 2)
    {
        return Step::error(Verdict::Next);
    }
    let mut new_doff = doff;
    new_doff[0] = doff[0].wrapping_add(1 << 4);
    let new_iplen = u16::from_be_bytes(iplen).wrapping_add(4).to_be_bytes();
    let tcp_len = (s.seg_len as u16).to_be_bytes();
    let new_tcp_len = (s.seg_len as u16).wrapping_add(4).to_be_bytes();
    let opt = [KIND_NOP, KIND_MPTCP, 3, MP_PRIO_B2 | backup];

    if unsafe { bpf_skb_change_tail(ctx.skb.skb, len + 4, 0) } != 0 {
        return Step::error(Verdict::Next);
    }
    let ne16 = |b: [u8; 2]| u16::from_ne_bytes(b) as u64;
    let csum = s.l4 as usize + 16;
    let ok = ctx.store(end as usize, &opt, 0).is_ok()
        && ctx.store(s.l4 as usize + 12, &new_doff, 0).is_ok()
        && ctx.store(len_at as usize, &new_iplen, 0).is_ok()
        && ctx
            .l4_csum_replace(csum, 0, u32::from_ne_bytes(opt) as u64, 4)
            .is_ok()
        && ctx
            .l4_csum_replace(csum, ne16(doff), ne16(new_doff), 2)
            .is_ok()
        && ctx
            .l4_csum_replace(
                csum,
                ne16(tcp_len),
                ne16(new_tcp_len),
                BPF_F_PSEUDO_HDR as u64 | 2,
            )
            .is_ok()
        && (s.family != 4
            || ctx
                .l3_csum_replace(s.l3 as usize + 10, ne16(iplen), ne16(new_iplen), 2)
                .is_ok());
    if !ok {
        // The skb grew but is not consistent: never send it.
        return Step::error(Verdict::Return(SHOT));
    }
    // The description follows the packet.
    unsafe {
        (*m).opt_len = (s.opt_len + 4) as u8;
        (*m).seg_len = (s.seg_len + 4) as u16;
        (*m).prio = OptRef {
            off: (s.opt_len + 1) as u8,
            len: 3,
        };
        (*m).n_mptcp = (*m).n_mptcp.saturating_add(1);
    }
    event(EgressStat::MpPrioInserted);
    Step::applied(Verdict::Next)
}
