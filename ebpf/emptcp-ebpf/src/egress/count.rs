//! `egress_count`: per-chain packet and byte counters (the same
//! `CHAIN_STATS` as ingress), then continue.
use aya_ebpf::programs::TcContext;
use emptcp_common::{Action, XdpMeta};

use super::{Step, Verdict};
use crate::{egress_program, maps::CHAIN_STATS};

egress_program!(egress_count, Action::Count, run);

#[inline(always)]
fn run(ctx: &TcContext, m: *mut XdpMeta) -> Step {
    let chain = unsafe { (*m).chain };
    let Some(c) = CHAIN_STATS.get_ptr_mut(chain) else {
        // No slot for the chain (an id past the table): nothing counted.
        return Step::error(Verdict::Next);
    };
    let len = ctx.len() as u64;
    unsafe {
        (*c).packets += 1;
        (*c).bytes += len;
    }
    Step::applied(Verdict::Next)
}
