//! The hooks an interface's ingress chains run at. The entry, the actions
//! and the flow state are written once, against [`Hook`]; what differs
//! between hooks is here: where the packet's description lives, how the
//! next step's program is called, how packet bytes are written, what the
//! program returns.
//!
//! * XDP (`XdpContext`): before the stack builds an skb, once per received
//!   frame, so before GRO merges the segments of a bulk transfer.
//! * TC ingress (`TcContext`, a TCX ingress link): after GRO, once per skb,
//!   so once per merged burst of a bulk transfer (`tc_entry` and the
//!   `tc_*` variant of each action, chained through `TC_PROGS`).
use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_skb_store_bytes, bpf_xdp_store_bytes},
    programs::{TcContext, XdpContext},
};
use emptcp_common::{INGRESS_CAPTURE_SLOT, RECORD_SETUP_SLOT, XdpMeta};

use crate::{
    maps::{TC_DESC, XDP_DESC},
    parse::Frame,
};

/// Tail-calls `$map[$slot]` for `$slot` one of the literals listed, with
/// the slot a constant at its call: the verifier then records one key per
/// call instruction and the x86-64 JIT emits a direct jump (patched when
/// the slot is written) instead of the indirect one a variable key needs,
/// which goes through a retpoline where Spectre v2 mitigations are on (~10
/// ns per step measured). Other slots are not called (as an empty slot).
///
/// Written in assembly: LLVM merges calls that differ only in a constant
/// argument into one call with a variable one, which is exactly the
/// indirect jump this avoids.
macro_rules! tail_call_by_constant {
    ($map:path, $ctx:expr, $slot:expr, $($n:literal)*) => {{
        let ctx = $ctx;
        match $slot {
            $($n => unsafe {
                // bpf_tail_call(ctx, &map, n): helper 12; it returns only
                // when the slot is empty, with r0-r5 clobbered.
                core::arch::asm!(
                    "r2 = {map} ll",
                    "r3 = {n}",
                    "call 12",
                    map = sym $map,
                    n = const $n,
                    inout("r1") ctx => _,
                    out("r0") _,
                    out("r2") _,
                    out("r3") _,
                    out("r4") _,
                    out("r5") _,
                )
            },)*
            _ => {}
        }
    }};
}

// `call_slot` lists these slots as literals.
const _: () = assert!(INGRESS_CAPTURE_SLOT == 0 && RECORD_SETUP_SLOT == 8);

/// Where the packet goes once its chain is done.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// On to the stack (and to programs attached after ours).
    Pass,
    Drop,
}

/// What a program of an ingress chain needs from its hook, beyond reading
/// the packet ([`Frame`]).
pub trait Hook: Frame {
    /// The program's return value.
    type Code: Copy;

    /// `out` as the hook's return value.
    fn code(out: Out) -> Self::Code;

    /// This CPU's description slot of the hook's chains.
    fn desc() -> Option<*mut XdpMeta>;

    /// The interface the packet arrived on.
    fn ifindex(&self) -> u32;

    /// The VLAN tag (TCI) taken out of the frame before the program ran
    /// (by the NIC's receive offload or the stack's `skb_vlan_untag`) and
    /// kept beside the packet; 0 without one.
    fn offloaded_vlan_tci(&self) -> u16;

    /// Tail-calls the program of chain step `action` (an action's slot of
    /// the hook's program array); returns only when the slot is empty.
    fn step(&self, action: u32);

    /// Tail-calls one of the program array's slots that hold no action
    /// (`INGRESS_CAPTURE_SLOT`, `RECORD_SETUP_SLOT`).
    fn call_slot(&self, slot: u32);

    /// Writes `len` bytes from `buf` at packet offset `off` (all or
    /// nothing).
    fn store(&self, off: u32, buf: *const u8, len: u32) -> bool;
}

impl Hook for XdpContext {
    type Code = u32;

    #[inline(always)]
    fn code(out: Out) -> u32 {
        match out {
            Out::Pass => xdp_action::XDP_PASS,
            Out::Drop => xdp_action::XDP_DROP,
        }
    }

    #[inline(always)]
    fn desc() -> Option<*mut XdpMeta> {
        XDP_DESC.get_ptr_mut(0)
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.ingress_ifindex() as u32
    }

    /// XDP could read it only through the RX metadata kfunc, from a program
    /// bound to one device, which cannot use a program array
    /// (docs/datapath.md, "VLAN tags stripped by the NIC").
    #[inline(always)]
    fn offloaded_vlan_tci(&self) -> u16 {
        0
    }

    #[inline(always)]
    fn step(&self, action: u32) {
        tail_call_by_constant!(crate::maps::PROGS, self.ctx, action, 1 2 3 4 5 6 7);
    }

    #[inline(always)]
    fn call_slot(&self, slot: u32) {
        tail_call_by_constant!(crate::maps::PROGS, self.ctx, slot, 0 8);
    }

    #[inline(always)]
    fn store(&self, off: u32, buf: *const u8, len: u32) -> bool {
        unsafe { bpf_xdp_store_bytes(self.ctx, off, buf as *mut _, len) == 0 }
    }
}

/// `TCX_NEXT` (`TC_ACT_UNSPEC`): the next program attached after ours, then
/// the stack.
pub const TC_PASS: i32 = -1;
/// `TC_ACT_SHOT`.
pub const TC_DROP: i32 = 2;

impl Hook for TcContext {
    type Code = i32;

    #[inline(always)]
    fn code(out: Out) -> i32 {
        match out {
            Out::Pass => TC_PASS,
            Out::Drop => TC_DROP,
        }
    }

    #[inline(always)]
    fn desc() -> Option<*mut XdpMeta> {
        TC_DESC.get_ptr_mut(0)
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        unsafe { (*self.skb.skb).ingress_ifindex }
    }

    #[inline(always)]
    fn offloaded_vlan_tci(&self) -> u16 {
        let skb = self.skb.skb;
        if unsafe { (*skb).vlan_present } != 0 {
            unsafe { (*skb).vlan_tci as u16 }
        } else {
            0
        }
    }

    #[inline(always)]
    fn step(&self, action: u32) {
        tail_call_by_constant!(crate::maps::TC_PROGS, self.skb.skb, action, 1 2 3 4 5 6 7);
    }

    #[inline(always)]
    fn call_slot(&self, slot: u32) {
        tail_call_by_constant!(crate::maps::TC_PROGS, self.skb.skb, slot, 0 8);
    }

    #[inline(always)]
    fn store(&self, off: u32, buf: *const u8, len: u32) -> bool {
        // No BPF_F_RECOMPUTE_CSUM: every change is paid for in the TCP (or
        // IPv4 header) checksum, so the packet's one's complement sum, and
        // with it a CHECKSUM_COMPLETE skb's `csum`, stays what it was.
        unsafe { bpf_skb_store_bytes(self.skb.skb as *mut _, off, buf as *const _, len, 0) == 0 }
    }
}
