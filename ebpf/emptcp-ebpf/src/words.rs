//! Word-sized copies out of packets and map values. LLVM knows nothing of
//! the alignment of a packet pointer (nor of a 2-aligned `FlowKey`) and
//! splits a copy into byte (or 2-byte) loads, shifts and ors; these load
//! whole words instead.
use emptcp_common::FlowKey;

/// The 8 bytes at `p` (a packet, map value or stack pointer the verifier
/// knows to cover them) in one load, in memory order. `read_unaligned` would do:
/// LLVM knows nothing of a packet pointer's alignment and splits it into
/// eight byte loads, shifts and ors (22 instructions per word, the most
/// frequent instructions of the entry program's hot path). A misaligned
/// packet load is allowed where the kernel has efficient unaligned access
/// (x86-64, arm64); elsewhere the verifier refuses it at load time, never
/// at run time.
#[inline(always)]
pub fn load64(p: *const u8) -> u64 {
    let v: u64;
    // SAFETY: the caller bounds-checked 8 bytes at `p`; read only.
    unsafe {
        core::arch::asm!(
            "{v} = *(u64 *)({p} + 0)",
            p = in(reg) p,
            v = lateout(reg) v,
            options(readonly, nostack, preserves_flags)
        )
    };
    v
}

/// A copy of the `FlowKey` at `src` (8-aligned: in an XDP description or
/// a map value) in five word loads instead of twenty 2-byte ones.
#[inline(always)]
pub fn copy_key(src: *const FlowKey) -> FlowKey {
    const { assert!(core::mem::size_of::<FlowKey>() == 40) };
    let p = src as *const u8;
    let w: [u64; 5] = core::array::from_fn(|i| load64(unsafe { p.add(8 * i) }));
    // SAFETY: same size; every bit pattern is a valid FlowKey.
    unsafe { core::mem::transmute::<[u64; 5], FlowKey>(w) }
}
