//! Word-sized copies out of packets and map values. LLVM knows nothing of
//! the alignment of a packet pointer (nor of a 2-aligned `FlowKey`) and
//! splits a copy into byte (or 2-byte) loads, shifts and ors; these load
//! whole words instead.
use emptcp_common::FlowKey;

/// The 8 bytes at `p` (a packet or map value pointer the verifier knows
/// to cover them) in one `ldxdw`, in memory order; `read_unaligned` is 22
/// instructions (the module doc). A misaligned packet load needs a kernel
/// with `CONFIG_HAVE_EFFICIENT_UNALIGNED_ACCESS` (x86-64, arm64, ARMv7);
/// elsewhere the verifier refuses it at load time, never at run time.
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
