//! Incremental Internet checksums (RFC 1624): the actions change a few
//! header bytes and adjust the checksum from the old and new words, never
//! summing the payload.
use crate::options::Buf64;

/// Folds a one's complement sum to 16 bits.
#[inline(always)]
pub fn fold(s: u64) -> u16 {
    let s = (s & 0xffff_ffff) + (s >> 32);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// One's complement sum of the first 40 bytes of `b` as big-endian 16-bit
/// words (the options, or an option to insert, zero-padded). Summed as five
/// little-endian u64 loads and byte-swapped at the end (RFC 1071: the sum
/// does not depend on byte order), so it costs a handful of instructions
/// and no spills.
#[inline(always)]
pub fn sum40(b: &Buf64) -> u16 {
    let w = b.0.as_ptr() as *const u64;
    let mut s = 0u64;
    for i in 0..5 {
        let v = unsafe { *w.add(i) };
        s += (v & 0xffff_ffff) + (v >> 32);
    }
    fold(s).swap_bytes()
}

/// RFC 1624 eqn. 3: the checksum after data summing to `old` became data
/// summing to `new`: HC' = ~(~HC + ~m + m').
#[inline(always)]
pub fn replace(csum: u16, old: u16, new: u16) -> u16 {
    !fold(!csum as u64 + !old as u64 + new as u64)
}
