//! `egress_set_window` (arg: bytes): rewrite the window field of the
//! segments the local end sends to `min(65535, bytes >> shift)`.
//!
//! The field of a sent segment is scaled by the shift the LOCAL end
//! announced in its SYN / SYN-ACK, which capture stores in `SUBFLOWS`.
//! Segments with SYN are never scaled. A subflow whose SYN was not seen
//! (the shift is unknown) passes untouched and `window_scale_unknown`
//! counts it. The checksum is fixed with `bpf_l4_csum_replace`, which is
//! right both for complete checksums and for CHECKSUM_PARTIAL skbs.
use aya_ebpf::programs::TcContext;
use emptcp_common::{Action, EgressStat, Outcome, SF_WSCALE_SEEN, STATS_ROW_EGRESS, XdpMeta};

use super::{Verdict, event};
use crate::{
    egress::{arg, well_formed},
    egress_program,
    maps::SUBFLOWS,
    options::{RST, SYN, Seg, key},
    parse::Frame,
    stats,
};

egress_program!(egress_set_window, Action::SetWindow, run);

const ROW: u32 = STATS_ROW_EGRESS + Action::SetWindow as u32;

#[inline(always)]
fn run(ctx: &TcContext, m: *mut XdpMeta) -> Verdict {
    super::or_passed(ROW, set(ctx, m, arg(m)))
}

#[inline(always)]
fn set(ctx: &TcContext, m: *mut XdpMeta, bytes: u32) -> Option<Verdict> {
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
        let key = key(m);
        match unsafe { SUBFLOWS.get(&key) } {
            Some(f) if f.flags & SF_WSCALE_SEEN != 0 => (f.wscale as u32).min(14),
            _ => {
                event(EgressStat::WindowScaleUnknown);
                return None;
            }
        }
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
            stats::bump(ROW, Outcome::Error);
            return Some(Verdict::Next);
        }
        let (from, to) = (u16::from_ne_bytes(w) as u64, u16::from_ne_bytes(nb) as u64);
        if ctx
            .l4_csum_replace(s.l4 as usize + 16, from, to, 2)
            .is_err()
        {
            // A new window with the old checksum: never send that.
            stats::bump(ROW, Outcome::Error);
            return Some(Verdict::Return(super::SHOT));
        }
        unsafe { (*m).window = new };
        event(EgressStat::WindowRewritten);
    }
    stats::bump(ROW, Outcome::Applied);
    Some(Verdict::Next)
}
