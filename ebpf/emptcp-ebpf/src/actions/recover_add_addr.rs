//! `recover_add_addr`: once a tracked connection reaches its chain's
//! `recover_at`, deliver the ADD_ADDR options strip_add_addr stored, one per
//! received packet that has room for it (see `insert.rs`), on any subflow
//! of the connection, oldest slot first.
//!
//! A delivery counts only when the local stack confirms it (its ADD_ADDR
//! echo or an MP_JOIN to the address, seen by the egress hook): until then
//! it is repeated after 0.2, 0.4 and 0.8 s, then given up (`flow::due`).
//!
//! A packet without room (a data segment with timestamps and a full DSS),
//! or one that must not grow (`insert::Insert::Refused`), passes untouched
//! and the connection is marked `FLOW_RECOVER_PENDING`: the TC ingress
//! program `ingress_recover` then builds a duplicate ACK carrying the option
//! in the kernel, from a clone of the next data segment; user space (the
//! agent) is told on `EVENTS` for links where that path is not attached.
use aya_ebpf::helpers::bpf_ktime_get_ns;
use emptcp_common::{
    ADD_ADDR_MAX_LEN, Action, FlowKey, FlowStat, FlowState, OPTS_EOL, OptRef, RecoverEvent,
    VIA_AGENT, VIA_INSERT, XdpMeta,
};

use crate::{
    action_program,
    chain::{self, Step, Verdict},
    flow::{self, Due},
    hook::Out,
    insert::{Insert, InsertOption, has_room, insert_option},
    maps::{EVENTS, THRESHOLDS},
    options::{Buf64, KIND_NOP, Seg, key},
    stats,
};

action_program!(
    recover_add_addr,
    tc_recover_add_addr,
    Action::RecoverAddAddr,
    run
);

#[inline(always)]
fn run<H: InsertOption>(ctx: &H, m: *mut XdpMeta) -> Step {
    chain::or_passed(recover(ctx, m))
}

/// `None`: nothing to do, the packet passes untouched.
#[inline(always)]
fn recover<H: InsertOption>(ctx: &H, m: *mut XdpMeta) -> Option<Step> {
    if crate::idle::recover(m) {
        return None;
    }
    let s = Seg::of(m);
    let c = flow::resolve(&key(m), true)?;
    let (key, f) = (c.key, c.f);
    let Some(th) = (unsafe { THRESHOLDS.get(s.chain) }) else {
        return Some(Step::error(Verdict::Next));
    };
    if f.bytes < th.recover_at {
        return None;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let Due::Slot { slot, retry } = flow::due(&key, f, now) else {
        // Delivered (or waiting for its retry time): nothing pending.
        flow::clear_pending(f);
        return None;
    };
    let bit = 1u32 << slot;
    let stored = flow::stored_addr(&key, f, slot).copied();
    // Only the lengths strip stores (16, 18, 28, 30): padding is 0 or 2.
    let Some(v) = stored.filter(|v| matches!(v.len, 16 | 18 | 28 | 30)) else {
        // Evicted from FLOW_ADDRS (or never complete): nothing to insert.
        flow::drop_slot(f, bit);
        stats::event(FlowStat::AddAddrLost);
        return None;
    };
    // One ADD_ADDR per packet: a second in the same segment would be
    // ignored by the receiver, and the first is the peer's own. An echo
    // is one too: Linux keeps the last ADD_ADDR it parses, so the inserted
    // option would hide the echo of the local end's announcement.
    if (s.add_addr.len | s.echo.len) != 0 {
        stats::event(FlowStat::InsertSkippedHasAddAddr);
        return None;
    }
    let len = v.len as u32;
    let n = (len + 3) & !3;
    if s.opt_state == OPTS_EOL || !has_room(&s, n) {
        pending(f, &key, slot, retry, now);
        return None;
    }
    // NOPs first (two when the length is 18 or 30), like Linux pads its
    // own options; the stored bytes are zero after `len`.
    let mut opt = Buf64::zeroed();
    if n != len {
        opt.0[0] = KIND_NOP;
        opt.0[1] = KIND_NOP;
        opt.0[2..2 + ADD_ADDR_MAX_LEN].copy_from_slice(&v.bytes);
    } else {
        opt.0[..ADD_ADDR_MAX_LEN].copy_from_slice(&v.bytes);
    }
    let Some(hdr) = s.header(ctx) else {
        return None;
    };
    match insert_option(ctx, &s, &hdr, &opt, n) {
        Insert::Done { at, m } => {
            // The description follows the packet: the option is there now.
            unsafe {
                (*m).add_addr = OptRef {
                    off: (at + n - len) as u8,
                    len: len as u8,
                };
                (*m).n_mptcp = (*m).n_mptcp.saturating_add(1);
            }
            flow::delivered(f, slot, retry, VIA_INSERT, now);
            flow::clear_pending(f);
            stats::event(FlowStat::AddAddrRecovered);
            Some(Step::applied(Verdict::Next))
        }
        Insert::Refused => {
            pending(f, &key, slot, retry, now);
            None
        }
        Insert::Unchanged => Some(Step::error(Verdict::Next)),
        Insert::Damaged => Some(Step::error(Verdict::Return(Out::Drop))),
    }
}

/// Pending packets between two events for user space (the agent).
const AGENT_EVERY: u16 = 16;
/// The pending packet of the last event of one handoff to the agent.
const AGENT_LAST: u16 = 8 * AGENT_EVERY;
/// How long a connection stays pending before the handoff to the agent
/// counts as a delivery attempt. Where the in-kernel path serves the
/// connection it ends the pending state within one NAPI poll of the clone's
/// backlog (microseconds; milliseconds on a loaded host), but a burst can
/// bring far more than `AGENT_LAST` packets before it runs: counted in
/// packets alone, the handoff ended the pending state first and the kernel
/// path never got its turn.
const HANDOFF_AFTER_NS: u64 = 200_000_000;
/// Units of `FlowState::pending_since`: 2^20 ns.
const SINCE_SHIFT: u32 = 20;

/// The packet cannot carry the option (no room, or it must not grow): the
/// connection is marked pending, for the in-kernel duplicate ACK
/// (`ingress_recover`, which clones this very segment at TC ingress and
/// ends the pending state). User space (the agent) is told only when the
/// state outlives 16 such packets, i.e. where the kernel path is not
/// attached or cannot serve the connection (its data arrives on joined
/// subflows only): an event every 16th such packet, eight in all (the
/// agent answers each a little further ahead, `agent::AHEAD`). Once the
/// eight went out and the state outlived `HANDOFF_AFTER_NS`, the handoff
/// ends as one delivery attempt (`VIA_AGENT`): confirmed by the stack's
/// echo like any other, else retried with the same backoff (a new handoff)
/// and given up after the last attempt, so a slot the agent never delivers
/// (none running, its frame lost) is not pending for good (the TC path
/// would parse every packet while it is).
#[inline(always)]
fn pending(f: &mut FlowState, key: &FlowKey, slot: u32, retry: bool, now: u64) {
    flow::set_pending(f);
    stats::event(FlowStat::RecoverPendingNoRoom);
    let c = f.pending_packets;
    f.pending_packets = c.saturating_add(1);
    let units = (now >> SINCE_SHIFT) as u32;
    if c == 0 {
        f.pending_since = units;
        return;
    }
    if c % AGENT_EVERY == 0 && c <= AGENT_LAST {
        let ev = RecoverEvent {
            key: *key,
            slot,
            ifindex: f.ifindex,
        };
        if EVENTS.output::<RecoverEvent>(&ev, 0).is_err() {
            stats::event(FlowStat::RecoverEventLost);
        }
    }
    // Signed: a start another CPU wrote a moment later reads as not yet.
    let pending_for = units.wrapping_sub(f.pending_since) as i32;
    if c >= AGENT_LAST
        && pending_for >= 0
        && (pending_for as u64) << SINCE_SHIFT >= HANDOFF_AFTER_NS
    {
        flow::delivered(f, slot, retry, VIA_AGENT, now);
        flow::clear_pending(f);
    }
}
