//! `egress_count`: per-chain packet and byte counters (the same
//! `CHAIN_STATS` as ingress), then continue.
use aya_ebpf::programs::TcContext;
use emptcp_common::{Action, Outcome, STATS_ROW_EGRESS, XdpMeta};

use super::Verdict;
use crate::{egress_program, maps::CHAIN_STATS, stats};

egress_program!(egress_count, Action::Count, run);

#[inline(always)]
fn run(ctx: &TcContext, m: *mut XdpMeta) -> Verdict {
    let chain = unsafe { (*m).chain };
    if let Some(c) = CHAIN_STATS.get_ptr_mut(chain) {
        let len = ctx.len() as u64;
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
        stats::bump(STATS_ROW_EGRESS + Action::Count as u32, Outcome::Applied);
    }
    Verdict::Next
}
