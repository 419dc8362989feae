//! `set_window` (arg: bytes): rewrite the TCP window field of the remote's
//! segments to `min(65535, bytes >> shift)`.
//!
//! The field of a segment FROM the remote is scaled by the shift the remote
//! announced in its own SYN/SYN-ACK (RFC 7323), which record_flow stores in
//! the flow. Segments with SYN are never scaled (shift 0). For an untracked
//! flow the shift is unknown: the packet passes untouched and
//! `window_scale_unknown` counts it, so put record_flow before set_window.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use emptcp_common::{Action, ChainStep, FlowStat, Outcome, XdpMeta};

use crate::{
    action_program,
    chain::Verdict,
    csum, flow,
    options::{Opts, RST, SYN, Tcp, Where, store},
    stats,
};

action_program!(set_window, Action::SetWindow, run);

const ROW: u32 = Action::SetWindow as u32;

#[inline(always)]
fn run(ctx: &XdpContext, m: *mut XdpMeta, step: ChainStep) -> Verdict {
    let w = Where::of(m);
    match set(ctx, &w, step.arg) {
        Some(v) => v,
        None => {
            stats::bump(ROW, Outcome::Passed);
            Verdict::Next
        }
    }
}

#[inline(always)]
fn set(ctx: &XdpContext, w: &Where, bytes: u32) -> Option<Verdict> {
    let t = Tcp::load(ctx, w)?;
    let fl = t.flags();
    if fl & RST != 0 {
        return None;
    }
    if t.check() == Opts::Malformed {
        stats::event(FlowStat::Malformed);
        return None;
    }
    let shift = if fl & SYN != 0 {
        0
    } else {
        let key = flow::key(ctx, w, &t)?;
        let Some(f) = flow::get(&key) else {
            stats::event(FlowStat::WindowScaleUnknown);
            return None;
        };
        (f.wscale as u32).min(14)
    };
    let new = (bytes >> shift).min(0xffff) as u16;
    let old = t.be16(14);
    if new != old {
        let c = csum::replace(t.be16(16), old, new);
        // Window and checksum are adjacent: one 4-byte write.
        let mut b = [0u8; 4];
        b[..2].copy_from_slice(&new.to_be_bytes());
        b[2..].copy_from_slice(&c.to_be_bytes());
        if !store(ctx, w.l4 + 14, b.as_ptr(), 4) {
            stats::bump(ROW, Outcome::Error);
            return Some(Verdict::Return(xdp_action::XDP_PASS));
        }
        stats::event(FlowStat::WindowRewritten);
    }
    stats::bump(ROW, Outcome::Applied);
    Some(Verdict::Next)
}
