//! Incremental Internet checksums (RFC 1624): the actions change a few
//! header bytes and adjust the checksum from the old and new words, never
//! summing the payload.
use crate::options::Buf64;

/// Folds a 32-bit one's complement sum to 16 bits.
#[inline(always)]
pub fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Sum of the 16-bit big-endian words of the first 40 bytes of `b`. The
/// buffers are word-aligned with the TCP header (options start at offset
/// 20), and bytes past the options are the same before and after a change,
/// so summing all 40 is exact for a difference.
#[inline(always)]
pub fn sum40(b: &Buf64) -> u32 {
    let mut s = 0u32;
    for i in 0..20 {
        s += u16::from_be_bytes([b.0[2 * i], b.0[2 * i + 1]]) as u32;
    }
    s
}

/// RFC 1624 eqn. 3: the checksum after data summing to `old` became data
/// summing to `new`: HC' = ~(~HC + ~m + m').
#[inline(always)]
pub fn replace(csum: u16, old: u32, new: u32) -> u16 {
    !fold(!csum as u32 + !fold(old) as u32 + fold(new) as u32)
}

/// [`replace`] for one 16-bit word.
#[inline(always)]
pub fn replace16(csum: u16, old: u16, new: u16) -> u16 {
    replace(csum, old as u32, new as u32)
}
