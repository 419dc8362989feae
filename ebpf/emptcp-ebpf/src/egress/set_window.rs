//! `egress_set_window` (arg: bytes): rewrite the window field of the
//! segments the local end sends to `min(65535, bytes >> shift)`.
//!
//! The field of a sent segment is scaled by the shift the LOCAL end
//! announced in its SYN / SYN-ACK, which capture stores in `SUBFLOWS`, but
//! only when BOTH SYNs carried window scale (RFC 7323 2.2); otherwise the
//! field holds the byte value itself (shift 0). Applying the local shift
//! against a peer that does not scale would shrink the window up to
//! 2^14-fold. Who settles it:
//!
//! * the local end sent the SYN-ACK (it is the server of the subflow):
//!   a SYN-ACK carries the option only when the peer's SYN did, so the
//!   captured shift is the one in effect (`SF_WSCALE_AGREED`);
//! * the local end sent the SYN: the peer's SYN-ACK decides, as
//!   record_flow saw it on ingress (`FLOW_PEER_WSCALE` for the initial
//!   subflow, `JOIN_WSCALE_SEEN` for a joined one). A subflow whose
//!   answer was not seen (no record_flow on the interface's ingress)
//!   passes untouched, like one whose SYN was not captured, and
//!   `window_scale_unknown` counts it. A local SYN without the option
//!   (shift 0) needs no answer. Once known, the shift in effect is kept
//!   with the subflow (`SubflowState::wscale`), so the subflow's last
//!   segments, sent after record_flow forgot the connection, are still
//!   capped.
//!
//! Segments with SYN are never scaled. The checksum is fixed with
//! `bpf_l4_csum_replace`, which is right both for complete checksums and
//! for CHECKSUM_PARTIAL skbs.
use aya_ebpf::programs::TcContext;
use emptcp_common::{
    Action, EgressStat, FLOW_PEER_WSCALE, FLOW_SERVER, FlowKey, JOIN_SYN_ACK_SEEN,
    JOIN_WSCALE_SEEN, SF_WSCALE_AGREED, SF_WSCALE_SEEN, XdpMeta,
};

use super::{Step, Verdict, event};
use crate::{
    atomic,
    egress::{arg, well_formed},
    egress_program, flow,
    maps::SUBFLOWS,
    options::{RST, SYN, Seg, key},
    parse::Frame,
};

egress_program!(egress_set_window, Action::SetWindow, run);

#[inline(always)]
fn run(ctx: &TcContext, m: *mut XdpMeta) -> Step {
    super::or_passed(set(ctx, m, arg(m)))
}

#[inline(always)]
fn set(ctx: &TcContext, m: *mut XdpMeta, bytes: u32) -> Option<Step> {
    if !well_formed(m) {
        return None;
    }
    let s = Seg::of(m);
    if s.flags & RST != 0 {
        return None;
    }
    let shift = if s.flags & SYN != 0 {
        0
    } else {
        let Some(shift) = shift(&key(m)) else {
            event(EgressStat::WindowScaleUnknown);
            return None;
        };
        shift
    };
    let new = (bytes >> shift).min(0xffff) as u16;
    let mut w = [0u8; 2];
    if !ctx.load_into(s.l4 + 14, w.as_mut_ptr(), 2) {
        return None;
    }
    let old = u16::from_be_bytes(w);
    if new != old {
        let nb = new.to_be_bytes();
        if ctx.store(s.l4 as usize + 14, &nb, 0).is_err() {
            // Nothing was written.
            return Some(Step::error(Verdict::Next));
        }
        let (from, to) = (u16::from_ne_bytes(w) as u64, u16::from_ne_bytes(nb) as u64);
        if ctx
            .l4_csum_replace(s.l4 as usize + 16, from, to, 2)
            .is_err()
        {
            // A new window with the old checksum: never send that.
            return Some(Step::error(Verdict::Return(super::SHOT)));
        }
        unsafe { (*m).window = new };
        event(EgressStat::WindowRewritten);
    }
    Some(Step::applied(Verdict::Next))
}

/// The shift of the window field the local end sends on subflow `key`;
/// None while it is unknown.
#[inline(always)]
fn shift(key: &FlowKey) -> Option<u32> {
    // SAFETY: an LRU value stays valid for the program run.
    let f = unsafe { &mut *SUBFLOWS.get_ptr_mut(key)? };
    if f.flags & SF_WSCALE_SEEN == 0 {
        return None;
    }
    let local = (f.wscale as u32).min(14);
    if local == 0 || f.flags & SF_WSCALE_AGREED != 0 {
        return Some(local);
    }
    let shift = if peer_scales(key)? { local } else { 0 };
    // Settled for the subflow's life: its later segments need no lookup,
    // also after record_flow forgot the connection (its last ACKs).
    f.wscale = shift as u8;
    atomic::or_u64((&raw mut f.flags).cast(), SF_WSCALE_AGREED as u64);
    Some(shift)
}

/// Did the peer's SYN-ACK of subflow `key` carry window scale? None when
/// record_flow did not see it.
#[inline(always)]
fn peer_scales(key: &FlowKey) -> Option<bool> {
    let c = flow::resolve(key, true)?;
    match c.join {
        // A connection learnt from the peer's third ACK (the local end is
        // its server) says nothing about the SYNs.
        None => (c.f.flags & FLOW_SERVER == 0).then_some(c.f.flags & FLOW_PEER_WSCALE != 0),
        Some(j) => (j.flags & JOIN_SYN_ACK_SEEN != 0).then_some(j.flags & JOIN_WSCALE_SEEN != 0),
    }
}
