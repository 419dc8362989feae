//! `drop`: end the chain and drop the packet.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use emptcp_common::{Action, XdpMeta};

use crate::{
    action_program,
    chain::{Step, Verdict},
};

action_program!(drop, Action::Drop, run);

#[inline(always)]
fn run(_ctx: &XdpContext, _m: *mut XdpMeta) -> Step {
    Step::applied(Verdict::Return(xdp_action::XDP_DROP))
}
