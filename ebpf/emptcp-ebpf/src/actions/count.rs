//! `count`: per-chain packet and byte counters, then continue.
use aya_ebpf::programs::XdpContext;
use emptcp_common::{Action, Outcome, XdpMeta};

use crate::{action_program, chain::Verdict, maps::CHAIN_STATS, stats};

action_program!(count, Action::Count, run);

#[inline(always)]
fn run(ctx: &XdpContext, m: *mut XdpMeta) -> Verdict {
    let chain = unsafe { (*m).chain };
    if let Some(c) = CHAIN_STATS.get_ptr_mut(chain) {
        let len = (ctx.data_end() - ctx.data()) as u64;
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
        stats::bump(Action::Count as u32, Outcome::Applied);
    }
    Verdict::Next
}
