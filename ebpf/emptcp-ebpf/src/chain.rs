//! Chain plumbing shared by every action: the packet's description in the
//! XDP metadata (written once by the entry program) and the tail call to the
//! next step. No map lookup: the steps travel with the packet.
use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_xdp_adjust_meta, programs::XdpContext,
};
use emptcp_common::{MAX_STEPS, META_MAGIC, OPTS_BAD, Outcome, XdpMeta};

use crate::{maps::PROGS, stats};

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

/// The current step's argument (e.g. the backup flag, the window).
#[inline(always)]
pub fn arg(m: *const XdpMeta) -> u32 {
    // Copied to the stack first: a variable offset into packet metadata
    // loses its bounds for the verifier, one into the stack does not.
    let pos = unsafe { (*m).pos } as usize;
    let args = unsafe { (*m).args };
    args[pos & (MAX_STEPS - 1)]
}

/// Tail-calls step `pos` of the packet's chain; returns XDP_PASS, with the
/// description taken off ([`leave`]), when the chain is done or the call
/// fails (an empty slot is counted as an error of the calling program
/// `row`).
#[inline(always)]
pub fn jump(ctx: &XdpContext, m: *mut XdpMeta, pos: u32, row: u32) -> u32 {
    let Some(action) = step_action(m, pos) else {
        return leave(ctx, xdp_action::XDP_PASS);
    };
    unsafe { (*m).pos = pos as u8 };
    unsafe { PROGS.tail_call(ctx, action) };
    stats::bump(row, Outcome::Error);
    leave(ctx, xdp_action::XDP_PASS)
}

/// Every way out of a chain: takes the description off the front of the
/// packet (`data_meta == data` again) and returns `verdict`. The stack
/// must never see it: GRO does not merge packets whose metadata differ
/// (`skb_metadata_differs`), and TC programs of others would read our
/// bytes. Shrinking the metadata cannot fail (0 <= delta <= its length).
#[inline(always)]
pub fn leave(ctx: &XdpContext, verdict: u32) -> u32 {
    let data = ctx.data();
    let meta = ctx.metadata();
    // A driver without metadata support reports data_meta = data + 1.
    if meta < data {
        unsafe { bpf_xdp_adjust_meta(ctx.ctx, (data - meta) as i32) };
    }
    verdict
}

/// The action of step `pos` of the described chain (both hooks), `None`
/// past its end. The step list is read as one word: a variable offset into
/// packet metadata would lose its bounds for the verifier.
#[inline(always)]
pub fn step_action(m: *const XdpMeta, pos: u32) -> Option<u32> {
    let n = unsafe { (*m).n_steps } as u32;
    if pos >= n || pos >= MAX_STEPS as u32 {
        return None;
    }
    let steps = u64::from_le_bytes(unsafe { (*m).steps });
    Some(((steps >> ((pos & (MAX_STEPS as u32 - 1)) * 8)) & 0xff) as u32)
}

/// An action's verdict when its work found nothing to do (`None`): the
/// packet passes untouched to the next step, counted as `passed`.
#[inline(always)]
pub fn or_passed(row: u32, v: Option<Verdict>) -> Verdict {
    v.unwrap_or_else(|| {
        stats::bump(row, Outcome::Passed);
        Verdict::Next
    })
}

/// Continue with the step after the current one.
#[inline(always)]
pub fn next(ctx: &XdpContext, m: *mut XdpMeta, row: u32) -> u32 {
    let pos = unsafe { (*m).pos } as u32 + 1;
    jump(ctx, m, pos, row)
}

/// Is the packet one the actions may look into (options well formed, IP
/// length consistent with the frame)? The entry counted the others.
#[inline(always)]
pub fn well_formed(m: *const XdpMeta) -> bool {
    unsafe { (*m).opt_state != OPTS_BAD }
}

/// Defines an action program: `$name` is the program (and policy) name, `$row`
/// the action, `$body(ctx, meta) -> Verdict` its work.
#[macro_export]
macro_rules! action_program {
    ($name:ident, $action:expr, $body:path) => {
        #[aya_ebpf::macros::xdp]
        pub fn $name(ctx: aya_ebpf::programs::XdpContext) -> u32 {
            let row = $action as u32;
            $crate::stats::bump(row, emptcp_common::Outcome::Seen);
            let Some(m) = $crate::chain::meta(&ctx) else {
                // Not sent here by our entry program: pass it on, with
                // nothing in front of it.
                $crate::identity::reference();
                $crate::stats::bump(row, emptcp_common::Outcome::Error);
                return $crate::chain::leave(&ctx, aya_ebpf::bindings::xdp_action::XDP_PASS);
            };
            match $body(&ctx, m) {
                $crate::chain::Verdict::Next => {
                    // Re-derived: an action that grew the head
                    // (bpf_xdp_adjust_head) moved the metadata with it, and
                    // every pointer taken before is invalid.
                    let Some(m) = $crate::chain::meta(&ctx) else {
                        $crate::stats::bump(row, emptcp_common::Outcome::Error);
                        return $crate::chain::leave(
                            &ctx,
                            aya_ebpf::bindings::xdp_action::XDP_PASS,
                        );
                    };
                    $crate::chain::next(&ctx, m, row)
                }
                $crate::chain::Verdict::Return(v) => $crate::chain::leave(&ctx, v),
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
