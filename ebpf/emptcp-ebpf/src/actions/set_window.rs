//! `set_window` (arg: bytes): rewrite the TCP window field of the remote's
//! segments to `min(65535, bytes >> shift)`.
//!
//! The field of a segment FROM the remote is scaled by the shift the remote
//! announced in its own SYN/SYN-ACK (RFC 7323), which record_flow stores
//! per subflow. Every subflow of a connection gets the same byte value: the
//! MPTCP receive window is one for the connection (RFC 8684 3.3.4; Linux
//! keeps one send window per connection, the largest right edge any
//! subflow advertised), so capping each subflow's field caps the
//! connection's outstanding data, whichever subflows carry it. Segments with SYN are never scaled (shift 0). For an untracked
//! flow the shift is unknown: the packet passes untouched and
//! `window_scale_unknown` counts it, so put record_flow before set_window.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use emptcp_common::{Action, FlowStat, JOIN_WSCALE_SEEN, Outcome, XdpMeta};

use crate::{
    action_program,
    chain::{self, Verdict},
    csum, flow,
    options::{RST, SYN, Seg, key, load, store},
    stats,
};

action_program!(set_window, Action::SetWindow, run);

const ROW: u32 = Action::SetWindow as u32;

#[inline(always)]
fn run(ctx: &XdpContext, m: *mut XdpMeta) -> Verdict {
    chain::or_passed(ROW, set(ctx, m, chain::arg(m)))
}

#[inline(always)]
fn set(ctx: &XdpContext, m: *mut XdpMeta, bytes: u32) -> Option<Verdict> {
    if !chain::well_formed(m) {
        return None;
    }
    let s = Seg::of(m);
    let fl = s.flags;
    if fl & RST != 0 {
        return None;
    }
    let shift = if fl & SYN != 0 {
        0
    } else {
        // Each subflow has the shift of its own SYN-ACK: the connection's
        // for the initial subflow, the JOINS entry's for a joined one.
        let wscale = flow::resolve(&key(m), true).and_then(|c| match c.join {
            None => Some(c.f.wscale),
            Some(j) => (j.flags & JOIN_WSCALE_SEEN != 0).then_some(j.wscale),
        });
        let Some(w) = wscale else {
            stats::event(FlowStat::WindowScaleUnknown);
            return None;
        };
        (w as u32).min(14)
    };
    let new = (bytes >> shift).min(0xffff) as u16;
    // Window and checksum are adjacent: one read, one write.
    let mut wc = [0u8; 4];
    if !load(ctx, s.l4 + 14, wc.as_mut_ptr(), 4) {
        return None;
    }
    let old = u16::from_be_bytes([wc[0], wc[1]]);
    if new != old {
        let c = csum::replace(u16::from_be_bytes([wc[2], wc[3]]), old, new);
        let mut b = [0u8; 4];
        b[..2].copy_from_slice(&new.to_be_bytes());
        b[2..].copy_from_slice(&c.to_be_bytes());
        if !store(ctx, s.l4 + 14, b.as_ptr(), 4) {
            stats::bump(ROW, Outcome::Error);
            return Some(Verdict::Return(xdp_action::XDP_PASS));
        }
        stats::event(FlowStat::WindowRewritten);
    }
    stats::bump(ROW, Outcome::Applied);
    Some(Verdict::Next)
}
