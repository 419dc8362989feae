//! Chain plumbing shared by every action: reading the per-packet position
//! from XDP metadata and tail-calling the next step.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use emptcp_common::{ChainStep, MAX_STEPS, META_MAGIC, Outcome, XdpMeta};

use crate::{
    maps::{CHAINS, PROGS},
    stats,
};

/// The metadata the entry program put in front of the packet, if it is ours.
#[inline(always)]
pub fn meta(ctx: &XdpContext) -> Option<*mut XdpMeta> {
    let m = ctx.metadata();
    if m + core::mem::size_of::<XdpMeta>() > ctx.data() {
        return None;
    }
    let m = m as *mut XdpMeta;
    if unsafe { (*m).magic } != META_MAGIC {
        return None;
    }
    Some(m)
}

/// The step being executed (its argument), read from the chain map.
#[inline(always)]
pub fn current_step(m: *const XdpMeta) -> Option<ChainStep> {
    let (chain, pos) = unsafe { ((*m).chain, (*m).pos as usize) };
    let def = unsafe { CHAINS.get(chain) }?;
    if pos >= MAX_STEPS {
        return None;
    }
    Some(def.steps[pos])
}

/// Tail-calls step `pos` of the packet's chain; returns XDP_PASS when the
/// chain is done or the call fails (an empty slot is counted as an error of
/// the calling program `row`).
#[inline(always)]
pub fn jump(ctx: &XdpContext, m: *mut XdpMeta, pos: u32, row: u32) -> u32 {
    let chain = unsafe { (*m).chain };
    let Some(def) = (unsafe { CHAINS.get(chain) }) else {
        stats::bump(row, Outcome::Error);
        return xdp_action::XDP_PASS;
    };
    // black_box: keep LLVM from indexing with a copy of `pos` it has not
    // bounds-checked (the verifier then sees an unbounded offset).
    let idx = core::hint::black_box(pos as usize);
    if idx >= MAX_STEPS || pos >= def.len {
        return xdp_action::XDP_PASS;
    }
    let action = def.steps[idx].action;
    unsafe { (*m).pos = pos };
    unsafe { PROGS.tail_call(ctx, action) };
    stats::bump(row, Outcome::Error);
    xdp_action::XDP_PASS
}

/// Continue with the step after the current one.
#[inline(always)]
pub fn next(ctx: &XdpContext, m: *mut XdpMeta, row: u32) -> u32 {
    let pos = unsafe { (*m).pos } + 1;
    jump(ctx, m, pos, row)
}

/// Defines an action program: `$name` is the program (and policy) name, `$row`
/// the action, `$body(ctx, meta, step) -> Verdict` its work.
#[macro_export]
macro_rules! action_program {
    ($name:ident, $action:expr, $body:path) => {
        #[aya_ebpf::macros::xdp]
        pub fn $name(ctx: aya_ebpf::programs::XdpContext) -> u32 {
            let row = $action as u32;
            $crate::stats::bump(row, emptcp_common::Outcome::Seen);
            let Some(m) = $crate::chain::meta(&ctx) else {
                // Not sent here by our entry program: leave it alone.
                $crate::stats::bump(row, emptcp_common::Outcome::Error);
                return aya_ebpf::bindings::xdp_action::XDP_PASS;
            };
            let Some(step) = $crate::chain::current_step(m) else {
                $crate::stats::bump(row, emptcp_common::Outcome::Error);
                return aya_ebpf::bindings::xdp_action::XDP_PASS;
            };
            match $body(&ctx, m, step) {
                $crate::chain::Verdict::Next => {
                    // Re-derived: an action that grew the head
                    // (bpf_xdp_adjust_head) moved the metadata with it, and
                    // every pointer taken before is invalid.
                    let Some(m) = $crate::chain::meta(&ctx) else {
                        $crate::stats::bump(row, emptcp_common::Outcome::Error);
                        return aya_ebpf::bindings::xdp_action::XDP_PASS;
                    };
                    $crate::chain::next(&ctx, m, row)
                }
                $crate::chain::Verdict::Return(v) => v,
            }
        }
    };
}

/// What an action wants after its work.
pub enum Verdict {
    /// Continue with the next step of the chain.
    Next,
    /// Stop the chain with this XDP verdict.
    Return(u32),
}
