//! `drop`: end the chain and drop the packet.
use emptcp_common::{Action, XdpMeta};

use crate::{
    action_program,
    chain::{Step, Verdict},
    hook::{Hook, Out},
};

action_program!(drop, tc_drop, Action::Drop, run);

#[inline(always)]
fn run<H: Hook>(_ctx: &H, _m: *mut XdpMeta) -> Step {
    Step::applied(Verdict::Return(Out::Drop))
}
