//! `set_window` (arg: bytes): rewrite the TCP window field of the remote's
//! segments to `min(65535, bytes >> shift)`.
//!
//! The field of a segment FROM the remote is scaled by the shift the remote
//! announced in its own SYN/SYN-ACK, but only when BOTH SYNs carried window
//! scale (RFC 7323 2.2); otherwise the field holds bytes. Who settles it
//! per subflow (see [`peer_shift`]): the peer's SYN-ACK where the local end
//! opened the subflow (record_flow), the local end's own SYN-ACK where the
//! peer opened a join or the connection (the egress hook; for a connection
//! the peer's SYN's shift is kept in `SYN_SHIFTS` until the third ACK
//! creates it). Where that answer was not seen (no egress hook, or the
//! handshake's entry evicted), the shift is unknown: the packet passes
//! untouched, counted, rather than get bytes written unscaled into a field
//! the peer scales. Every subflow of a connection gets the same byte value: the
//! MPTCP receive window is one for the connection (RFC 8684 3.3.4; Linux
//! keeps one send window per connection, the largest right edge any
//! subflow advertised), so capping each subflow's field caps the
//! connection's outstanding data, whichever subflows carry it. Segments with SYN are never scaled (shift 0). For an untracked
//! flow the shift is unknown: the packet passes untouched and
//! `window_scale_unknown` counts it, so put record_flow before set_window.
use emptcp_common::{
    Action, FLOW_SERVER, FLOW_SHIFT_SETTLED, FlowStat, JOIN_SYN_ACK_SEEN, JOIN_WSCALE_SEEN, XdpMeta,
};

use crate::{
    action_program,
    chain::{self, Step, Verdict},
    csum,
    flow::{self, Conn},
    hook::{Hook, Out},
    options::{RST, SYN, Seg, key, load, store},
    stats,
};

action_program!(set_window, tc_set_window, Action::SetWindow, run);

#[inline(always)]
fn run<H: Hook>(ctx: &H, m: *mut XdpMeta) -> Step {
    chain::or_passed(set(ctx, m, chain::arg(m)))
}

#[inline(always)]
fn set<H: Hook>(ctx: &H, m: *mut XdpMeta, bytes: u32) -> Option<Step> {
    if !chain::well_formed(m) {
        return None;
    }
    let s = Seg::of(m);
    let fl = s.flags;
    if fl & RST != 0 {
        return None;
    }
    let mut conn = None;
    let shift = if fl & SYN != 0 {
        0
    } else {
        conn = flow::resolve(&key(m), true);
        let Some(w) = conn.as_ref().and_then(peer_shift) else {
            stats::event(FlowStat::WindowScaleUnknown);
            return None;
        };
        (w as u32).min(14)
    };
    let new = (bytes >> shift).min(0xffff) as u16;
    // A duplicate ACK forged for the connection (the in-kernel recovery,
    // the agent) copies the window of its newest segment, which
    // record_flow kept as the peer sent it: it must advertise what this
    // step lets through instead, or it would reopen the window it caps.
    // Those are forged on the initial subflow only.
    if let Some(c) = conn.filter(|c| c.join.is_none() && c.f.window != new) {
        c.f.window = new;
    }
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
            return Some(Step::error(Verdict::Return(Out::Pass)));
        }
        stats::event(FlowStat::WindowRewritten);
    }
    Some(Step::applied(Verdict::Next))
}

/// The shift of the window field the remote sends on the packet's subflow
/// (RFC 7323 2.2: the remote's announced shift when both SYNs carried
/// window scale, else 0); None while unknown.
#[inline(always)]
fn peer_shift(c: &Conn) -> Option<u8> {
    match &c.join {
        // The local end opened the connection: the peer's SYN-ACK carries
        // the option only if the local SYN did, so what it carried (0
        // without it) is in effect. The peer opened it: its handshake
        // settled the shift if both its SYN (ingress) and the local
        // SYN-ACK (egress) were seen (`wscale` is then 0 unless both
        // scale); otherwise it is unknown.
        None => (c.f.flags & FLOW_SERVER == 0 || c.f.flags & FLOW_SHIFT_SETTLED != 0)
            .then_some(c.f.wscale),
        // A join: settled by its SYN-ACK, the peer's (a join the local end
        // opened) or the local end's (one the peer opened, where the
        // peer's SYN gave the shift and the SYN-ACK says whether both
        // scale). `JOIN_WSCALE_SEEN` then means "scaling in effect".
        Some(j) => {
            (j.flags & JOIN_SYN_ACK_SEEN != 0).then_some(if j.flags & JOIN_WSCALE_SEEN != 0 {
                j.wscale
            } else {
                0
            })
        }
    }
}
