//! `strip_add_addr`: while a tracked connection is smaller than its chain's
//! `remove_below`, take ADD_ADDR options out of it, on any of its subflows
//! (and store them with the connection).
//!
//! The server's first ADD_ADDR rides on a pure ACK with no other MPTCP
//! option; NOP-ing it leaves a post-handshake packet without any MPTCP
//! option and the client falls back to plain TCP. Such a packet is dropped
//! (its option stored); any other carrier gets the option overwritten with
//! NOPs and its checksum fixed. Echo ADD_ADDRs are never touched. Nothing
//! is stored from (or done to) a segment whose TCP checksum does not hold,
//! in either of the forms a received segment may carry: the full checksum,
//! or the pseudo-header sum a sender with TX checksum offload leaves for
//! the device (CHECKSUM_PARTIAL, over veth or tun from a local sender),
//! which a NOP rewrite leaves as it is (`csum::Form`).
use emptcp_common::{ADD_ADDR_MAX_LEN, Action, FlowStat, OptRef, XdpMeta};

use crate::{
    action_program,
    chain::{self, Step, Verdict},
    csum::{self, TcpCheck},
    flow,
    hook::{Hook, Out},
    maps::THRESHOLDS,
    options::{FIN, RST, SYN, Seg, bounded, key, load_be16, store, store_be16},
    stats,
};

action_program!(strip_add_addr, tc_strip_add_addr, Action::StripAddAddr, run);

#[inline(always)]
fn run<H: Hook + TcpCheck>(ctx: &H, m: *mut XdpMeta) -> Step {
    chain::or_passed(strip(ctx, m))
}

/// `None`: not for this action, the packet passes untouched.
#[inline(always)]
fn strip<H: Hook + TcpCheck>(ctx: &H, m: *mut XdpMeta) -> Option<Step> {
    if crate::idle::strip(m) {
        return None;
    }
    let s = Seg::of(m);
    let h = s.add_addr;
    // The connection, on whichever of its subflows the option arrives.
    let sub = key(m);
    let c = flow::resolve(&sub, true)?;
    let (key, f) = (c.key, c.f);
    let Some(th) = (unsafe { THRESHOLDS.get(s.chain) }) else {
        return Some(Step::error(Verdict::Next));
    };
    if f.bytes >= th.remove_below {
        return None;
    }
    let mut aa = [0u8; 32];
    if !s.read(ctx, h, &mut aa) {
        return None;
    }
    // Only an option whose segment checksum holds is kept: a corrupted
    // one would be re-inserted later under a fresh, valid checksum. The
    // segment passes untouched (the stack drops it), counted malformed.
    let Some(form) = csum::tcp_check(ctx, &s, &sub) else {
        stats::event(FlowStat::Malformed);
        return None;
    };
    let len = h.len as u32;
    flow::store_add_addr(&key, f, &aa, len);
    // Stored and not re-inserted: recover_add_addr must look at this flow.
    if let Some(m) = chain::meta(ctx) {
        unsafe { (*m).flow_due = 1 };
    }

    let pure_ack = s.payload() == 0 && s.flags & (SYN | FIN | RST) == 0;
    if pure_ack && s.n_mptcp < 2 {
        f.add_addr_dropped = f.add_addr_dropped.saturating_add(1);
        stats::event(FlowStat::AddAddrDroppedPureAck);
        return Some(Step::applied(Verdict::Return(Out::Drop)));
    }

    let old_csum = load_be16(ctx, s.l4 + 16)?;
    // A partial field is the pseudo-header's sum, which the NOPs do not
    // change: the device (or the stack, which trusts such an skb) sums the
    // segment as it is then. A full checksum follows the option bytes.
    let tcp_csum = match form {
        csum::Form::Full => csum::replace(old_csum, region_sum(&aa, h.off as u32), nop_sum(len)),
        csum::Form::Partial => old_csum,
    };
    if !store_nops(ctx, s.at(h), len) || !store_be16(ctx, s.l4 + 16, tcp_csum) {
        // Each store is all or nothing; a failed checksum write after the
        // NOPs would pass a corrupt segment, so drop it.
        return Some(Step::error(Verdict::Return(Out::Drop)));
    }
    // The description follows the packet: the option is gone. (The
    // metadata pointer is taken again: helpers that write the packet
    // invalidate packet pointers for the verifier.)
    if let Some(m) = chain::meta(ctx) {
        unsafe {
            (*m).add_addr = OptRef::default();
            (*m).n_mptcp = (*m).n_mptcp.saturating_sub(1);
        }
    }
    f.add_addr_nopped = f.add_addr_nopped.saturating_add(1);
    stats::event(FlowStat::AddAddrNopped);
    Some(Step::applied(Verdict::Next))
}

/// Checksum contribution of the option `aa` (even length, zeros after it:
/// `Seg::read` into a zeroed buffer) at `off`. The options start at an
/// even TCP offset; bytes at an odd `off` sit in the low half of the
/// header's words, which byte-swaps their sum (RFC 1071). Every word of the
/// longest form is summed, the zeros past the option adding nothing: no
/// branch per word (each one a fork for the verifier, and a guess for a
/// cold branch predictor).
#[inline(always)]
fn region_sum(aa: &[u8; 32], off: u32) -> u16 {
    let mut s = 0u64;
    for k in 0..ADD_ADDR_MAX_LEN / 2 {
        s += u16::from_be_bytes([aa[2 * k], aa[2 * k + 1]]) as u64;
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
fn store_nops<H: Hook>(ctx: &H, off: u32, len: u32) -> bool {
    let nops = [0x0101_0101_0101_0101u64; 8];
    (1..=64).contains(&len) && store(ctx, off, nops.as_ptr() as *const u8, bounded(len, 64))
}
