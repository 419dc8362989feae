//! Chain plumbing shared by every action: the packet's description (the
//! hook's per-CPU slot, `XDP_DESC` or `TC_DESC`, written once by the
//! entry program) and the tail call to the next step, on either ingress
//! hook (`hook.rs`). No map lookup but that one: the steps travel
//! with the description.
use emptcp_common::{Action, MAX_STEPS, META_MAGIC, Outcome, XdpMeta};

use crate::{
    hook::{Hook, Out},
    stats::{self, Ran},
};

/// The description the entry program wrote for this packet, if the
/// packet is in a chain the entry started (see `XDP_DESC` for why a
/// per-CPU slot describes the packet at hand).
#[inline(always)]
pub fn meta<H: Hook>(_ctx: &H) -> Option<*mut XdpMeta> {
    let m = H::desc()?;
    if unsafe { (*m).magic } != META_MAGIC {
        return None;
    }
    Some(m)
}

/// This CPU's description slot, for the entry to write.
#[inline(always)]
pub fn slot<H: Hook>(_ctx: &H) -> Option<*mut XdpMeta> {
    H::desc()
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
/// fails (an empty slot is counted as an error of the step that could not
/// run: the packet reached it).
///
/// Steps the description alone shows to have nothing to do on this packet
/// ([`idle`]) are not called: each is counted as it counts itself then
/// (`passed`), so the counters are those of a call, without the tail call
/// and the program's own checks.
#[inline(always)]
pub fn jump<H: Hook>(ctx: &H, m: *mut XdpMeta, pos: u32) -> H::Code {
    let mut pos = pos;
    for _ in 0..MAX_STEPS {
        match step_action(m, pos) {
            Some(a) if idle(m, a) => {
                stats::bump(a, Outcome::Passed);
                pos += 1;
            }
            _ => break,
        }
    }
    let Some(action) = step_action(m, pos) else {
        return leave(ctx, Out::Pass);
    };
    unsafe { (*m).pos = pos as u8 };
    ctx.step(action);
    stats::bump(action, Outcome::Error);
    leave(ctx, Out::Pass)
}

/// Would step `action` pass the packet untouched, whatever its flow? The
/// actions' own first checks (they run them too, for a chain entered at
/// their step by other means).
#[inline(always)]
fn idle(m: *const XdpMeta, action: u32) -> bool {
    if action == Action::StripAddAddr as u32 {
        crate::idle::strip(m)
    } else if action == Action::RecoverAddAddr as u32 {
        crate::idle::recover(m)
    } else {
        false
    }
}

/// Every way out of a chain: invalidates the description (an action
/// program run later on this CPU without the entry, by a test or by
/// anything else that can reach the slot, finds none) and returns the
/// hook's code for `out`. Nothing is put in front of the packet, so the
/// stack sees it as it came (GRO merges only packets whose XDP metadata
/// are equal).
#[inline(always)]
pub fn leave<H: Hook>(_ctx: &H, out: Out) -> H::Code {
    if let Some(m) = H::desc() {
        unsafe { (*m).magic = 0 };
    }
    H::code(out)
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

/// One run of an ingress action: its outcome and verdict.
pub type Step = Ran<Verdict>;

/// An action's run when its work found nothing to do (`None`): the packet
/// passes untouched to the next step, counted as `passed`.
#[inline(always)]
pub fn or_passed(v: Option<Step>) -> Step {
    v.unwrap_or(Ran::passed(Verdict::Next))
}

/// Continue with the step after the current one.
#[inline(always)]
pub fn next<H: Hook>(ctx: &H, m: *mut XdpMeta) -> H::Code {
    let pos = unsafe { (*m).pos } as u32 + 1;
    jump(ctx, m, pos)
}

pub use crate::idle::well_formed;

/// One run of an action program on hook `H`: its work `body` on the
/// packet's description, the step's outcome counted once in row `row`
/// (`stats`), then the next step or the verdict.
#[inline(always)]
pub fn run_step<H: Hook>(
    ctx: &H,
    row: u32,
    body: impl FnOnce(&H, *mut XdpMeta) -> Step,
) -> H::Code {
    let Some(m) = meta(ctx) else {
        // Not sent here by our entry program: pass it on.
        crate::identity::reference();
        stats::bump(row, Outcome::Error);
        return leave(ctx, Out::Pass);
    };
    let ran = body(ctx, m);
    stats::bump(row, ran.outcome);
    match ran.verdict {
        // The description lives in a map, not in the packet: it stays
        // valid whatever the action did to the frame.
        Verdict::Next => next(ctx, m),
        Verdict::Return(v) => leave(ctx, v),
    }
}

/// Defines the programs of an action: `$name` on XDP (the program and
/// policy name) and `$tc_name` on TC ingress, both for `$action`, whose
/// work is `$body(ctx, meta) -> Step`, generic over the hook.
#[macro_export]
macro_rules! action_program {
    ($name:ident, $tc_name:ident, $action:expr, $body:path) => {
        #[aya_ebpf::macros::xdp]
        pub fn $name(ctx: aya_ebpf::programs::XdpContext) -> u32 {
            $crate::chain::run_step(&ctx, $action as u32, $body)
        }

        #[aya_ebpf::macros::classifier]
        pub fn $tc_name(ctx: aya_ebpf::programs::TcContext) -> i32 {
            $crate::chain::run_step(&ctx, $action as u32, $body)
        }
    };
}

/// What an action wants after its work.
pub enum Verdict {
    /// Continue with the next step of the chain.
    Next,
    /// Stop the chain: the packet goes where this says.
    Return(Out),
}
