//! `strip_add_addr`: while a tracked flow is smaller than its chain's
//! `remove_below`, take ADD_ADDR options out of it (and store them).
//!
//! The server's first ADD_ADDR rides on a pure ACK with no other MPTCP
//! option; NOP-ing it leaves a post-handshake packet without any MPTCP
//! option and the client falls back to plain TCP. Such a packet is dropped
//! (its option stored); any other carrier gets the option overwritten with
//! NOPs and its checksum fixed. Echo ADD_ADDRs are never touched.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use emptcp_common::{ADD_ADDR_MAX_LEN, Action, ChainStep, FlowStat, Outcome, XdpMeta};

use crate::{
    action_program,
    chain::Verdict,
    csum, flow,
    maps::THRESHOLDS,
    options::{FIN, Opts, RST, SYN, TCP_HLEN, Tcp, Where, add_addr, bounded, store, store_be16},
    stats,
};

action_program!(strip_add_addr, Action::StripAddAddr, run);

const ROW: u32 = Action::StripAddAddr as u32;

#[inline(always)]
fn run(ctx: &XdpContext, m: *mut XdpMeta, _step: ChainStep) -> Verdict {
    let w = Where::of(m);
    match strip(ctx, &w) {
        Some(v) => v,
        None => {
            stats::bump(ROW, Outcome::Passed);
            Verdict::Next
        }
    }
}

/// `None`: not for this action, the packet passes untouched.
#[inline(always)]
fn strip(ctx: &XdpContext, w: &Where) -> Option<Verdict> {
    let t = Tcp::load(ctx, w)?;
    if t.check() == Opts::Malformed {
        stats::event(FlowStat::Malformed);
        return None;
    }
    let h = t.find(add_addr);
    if !h.found {
        return None;
    }
    let key = flow::key(ctx, w, &t)?;
    let f = flow::get(&key)?;
    let Some(th) = (unsafe { THRESHOLDS.get(w.chain) }) else {
        stats::bump(ROW, Outcome::Error);
        return Some(Verdict::Next);
    };
    if f.bytes >= th.remove_below {
        return None;
    }
    let mut aa = [0u8; 32];
    if !t.read(ctx, w, &h, &mut aa) {
        return None;
    }
    flow::store_add_addr(&key, f, &aa, h.len);

    let pure_ack = t.payload() == 0 && t.flags() & (SYN | FIN | RST) == 0;
    if pure_ack && !t.several_mptcp() {
        f.add_addr_dropped = f.add_addr_dropped.saturating_add(1);
        stats::event(FlowStat::AddAddrDroppedPureAck);
        stats::bump(ROW, Outcome::Applied);
        return Some(Verdict::Return(xdp_action::XDP_DROP));
    }

    let tcp_csum = csum::replace(t.be16(16), region_sum(&aa, h.off, h.len), nop_sum(h.len));
    if !store_nops(ctx, w.l4 + TCP_HLEN + h.off, h.len) || !store_be16(ctx, w.l4 + 16, tcp_csum) {
        // Each store is all or nothing; a failed checksum write after the
        // NOPs would pass a corrupt segment, so drop it.
        stats::bump(ROW, Outcome::Error);
        return Some(Verdict::Return(xdp_action::XDP_DROP));
    }
    f.add_addr_nopped = f.add_addr_nopped.saturating_add(1);
    stats::event(FlowStat::AddAddrNopped);
    stats::bump(ROW, Outcome::Applied);
    Some(Verdict::Next)
}

/// Checksum contribution of the option `aa` (`len` bytes, even) at `off`. The
/// options start at an even TCP offset; bytes at an odd `off` sit in the low
/// half of the header's words, which byte-swaps their sum (RFC 1071).
#[inline(always)]
fn region_sum(aa: &[u8; 32], off: u32, len: u32) -> u16 {
    let mut s = 0u64;
    for k in 0..ADD_ADDR_MAX_LEN / 2 {
        if 2 * k < len as usize {
            s += u16::from_be_bytes([aa[2 * k], aa[2 * k + 1]]) as u64;
        }
    }
    let s = csum::fold(s);
    if off & 1 == 0 { s } else { s.swap_bytes() }
}

/// Contribution of `len` NOP bytes (0x0101 per word, at either parity).
#[inline(always)]
fn nop_sum(len: u32) -> u16 {
    csum::fold((len / 2) as u64 * 0x0101)
}

/// Overwrites `len` packet bytes at `off` with NOPs.
#[inline(always)]
fn store_nops(ctx: &XdpContext, off: u32, len: u32) -> bool {
    let nops = [0x0101_0101_0101_0101u64; 8];
    (1..=64).contains(&len) && store(ctx, off, nops.as_ptr() as *const u8, bounded(len, 64))
}
