//! `count`: per-chain packet and byte counters, then continue.
use emptcp_common::{Action, XdpMeta};

use crate::{
    action_program,
    chain::{Step, Verdict},
    hook::Hook,
    maps::CHAIN_STATS,
};

action_program!(count, tc_count, Action::Count, run);

#[inline(always)]
fn run<H: Hook>(ctx: &H, m: *mut XdpMeta) -> Step {
    let chain = unsafe { (*m).chain };
    let Some(c) = CHAIN_STATS.get_ptr_mut(chain) else {
        // No slot for the chain (an id past the table): nothing counted.
        return Step::error(Verdict::Next);
    };
    let len = ctx.frame_len() as u64;
    unsafe {
        (*c).packets += 1;
        (*c).bytes += len;
    }
    Step::applied(Verdict::Next)
}
