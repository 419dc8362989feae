//! The TC egress hook: `egress_entry` (attached with a TCX link to each
//! interface that lists an egress chain) and the egress variants of the
//! actions allowed there (`count`, `set_backup`, `set_window`), one
//! classifier program each, chained through `EGRESS_PROGS`.
//!
//! On egress the LOCAL end is the packet's source. The entry parses the
//! packet with the same parser and option scan as the XDP entry, selects a
//! chain with the same selectors (seen from the local host: the remote is
//! the destination), captures the subflow (`capture.rs`), writes the
//! packet's description (an [`XdpMeta`]) into the per-CPU `EGRESS_META`
//! slot and tail-calls the chain's first step.
//!
//! Every verdict is [`PASS`] (`TCX_NEXT`): the packet goes on, and programs
//! attached after ours still run. Only a packet an action damaged half-way
//! is dropped ([`SHOT`]); a malformed one always passes untouched.
use aya_ebpf::programs::TcContext;
use emptcp_common::{META_MAGIC, Outcome, STATS_ROW_EGRESS, XdpMeta};

use crate::{
    maps::{EGRESS_META, EGRESS_PROGS},
    stats::{self, Ran},
};

mod capture;
mod count;
mod entry;
mod set_backup;
mod set_window;
mod track;

/// `TCX_NEXT` (`TC_ACT_UNSPEC`): continue with the next program, pass the
/// packet when there is none.
pub const PASS: i32 = -1;
/// `TC_ACT_SHOT`: drop (only a packet left inconsistent by a failed write).
pub const SHOT: i32 = 2;

/// The description the entry wrote for this packet, if it is ours.
#[inline(always)]
pub fn meta(ctx: &TcContext) -> Option<*mut XdpMeta> {
    let w = EGRESS_META.get_ptr_mut(0)?;
    let cb0 = unsafe { (*ctx.skb.skb).cb[0] };
    unsafe {
        if (*w).serial != cb0 || (*w).meta.magic != META_MAGIC {
            return None;
        }
        Some(&raw mut (*w).meta)
    }
}

// The description is the ingress one: the same readers.
pub use crate::chain::{arg, well_formed};

/// Tail-calls step `pos` of the chain; returns [`PASS`] when the chain is
/// done or the call fails (counted as an error of the step that could not
/// run).
#[inline(always)]
pub fn jump(ctx: &TcContext, m: *mut XdpMeta, pos: u32) -> i32 {
    let Some(action) = crate::chain::step_action(m, pos) else {
        return PASS;
    };
    unsafe { (*m).pos = pos as u8 };
    unsafe { EGRESS_PROGS.tail_call(ctx, action) };
    stats::bump(STATS_ROW_EGRESS + action, Outcome::Error);
    PASS
}

/// Continue with the step after the current one.
#[inline(always)]
pub fn next(ctx: &TcContext, m: *mut XdpMeta) -> i32 {
    let pos = unsafe { (*m).pos } as u32 + 1;
    jump(ctx, m, pos)
}

pub use crate::stats::egress_event as event;

/// What an egress action wants after its work.
pub enum Verdict {
    Next,
    Return(i32),
}

/// One run of an egress action: its outcome and verdict.
pub type Step = Ran<Verdict>;

/// An egress action's run when its work found nothing to do (`None`): the
/// packet goes on untouched, counted as `passed`.
#[inline(always)]
pub fn or_passed(v: Option<Step>) -> Step {
    v.unwrap_or(Ran::passed(Verdict::Next))
}

/// Defines an egress action program `$name` for `$action`, whose work is
/// `$body(ctx, meta) -> Step`; the program counts the step's outcome, once
/// per run (`stats`).
#[macro_export]
macro_rules! egress_program {
    ($name:ident, $action:expr, $body:path) => {
        #[aya_ebpf::macros::classifier]
        pub fn $name(ctx: aya_ebpf::programs::TcContext) -> i32 {
            let row = emptcp_common::STATS_ROW_EGRESS + $action as u32;
            let Some(m) = $crate::egress::meta(&ctx) else {
                // Not sent here by our entry program: leave it alone.
                $crate::identity::reference();
                $crate::stats::bump(row, emptcp_common::Outcome::Error);
                return $crate::egress::PASS;
            };
            let ran: $crate::egress::Step = $body(&ctx, m);
            $crate::stats::bump(row, ran.outcome);
            match ran.verdict {
                // The description lives in a map, not in the packet: it
                // stays valid whatever the action did to the skb.
                $crate::egress::Verdict::Next => $crate::egress::next(&ctx, m),
                $crate::egress::Verdict::Return(v) => v,
            }
        }
    };
}
