//! `drop`: end the chain and drop the packet.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use emptcp_common::{Action, Outcome, XdpMeta};

use crate::{action_program, chain::Verdict, stats};

action_program!(drop, Action::Drop, run);

#[inline(always)]
fn run(_ctx: &XdpContext, _m: *mut XdpMeta) -> Verdict {
    stats::bump(Action::Drop as u32, Outcome::Applied);
    Verdict::Return(xdp_action::XDP_DROP)
}
