//! Atomic updates of map values that several CPUs may write at once (the
//! subflows of one connection arrive on different receive queues; the
//! egress hook runs on the transmit CPU; the gauges). `core::sync::atomic`
//! has no atomic types for the BPF target; the intrinsics compile to the
//! BPF atomic instructions. The object is built for the generic BPF CPU,
//! for which LLVM emits only the 64-bit forms: every atomic word is an
//! 8-aligned u64 (two u32 fields of a value, the low one first on this
//! little-endian target). A result is used only where it decides who
//! counts a change (the `fetch_*` forms, BPF_FETCH: Linux 5.12 and
//! later); the plain forms are cheaper.
use core::intrinsics::{AtomicOrdering, atomic_and, atomic_or, atomic_xadd};

/// `*p |= v`, atomically.
#[inline(always)]
pub fn or_u64(p: *mut u64, v: u64) {
    unsafe { atomic_or::<u64, u64, { AtomicOrdering::SeqCst }>(p, v) };
}

/// `*p |= v`, atomically; returns the value before.
#[inline(always)]
pub fn fetch_or_u64(p: *mut u64, v: u64) -> u64 {
    unsafe { atomic_or::<u64, u64, { AtomicOrdering::SeqCst }>(p, v) }
}

/// `*p &= v`, atomically; returns the value before.
#[inline(always)]
pub fn fetch_and_u64(p: *mut u64, v: u64) -> u64 {
    unsafe { atomic_and::<u64, u64, { AtomicOrdering::SeqCst }>(p, v) }
}

/// `*p &= v`, atomically.
#[inline(always)]
pub fn and_u64(p: *mut u64, v: u64) {
    unsafe { atomic_and::<u64, u64, { AtomicOrdering::SeqCst }>(p, v) };
}

/// Sets `bits` of the 32-bit half at `shift` (0 or 32) of the word `p`,
/// whose current value there is `now`, unless all are set already: the
/// shared flag words of the datapath are stored to only when a bit
/// changes, never on the per-packet path once set.
#[inline(always)]
pub fn set_bits(p: *mut u64, now: u32, bits: u32, shift: u32) {
    if now & bits != bits {
        or_u64(p, (bits as u64) << shift);
    }
}

/// Clears `bits` of that half, unless none is set.
#[inline(always)]
pub fn clear_bits(p: *mut u64, now: u32, bits: u32, shift: u32) {
    if now & bits != 0 {
        and_u64(p, !((bits as u64) << shift));
    }
}

/// `*p += v` (wrapping; `v` may be a two's complement negative), atomically.
#[inline(always)]
pub fn add_u64(p: *mut u64, v: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, v) };
}
