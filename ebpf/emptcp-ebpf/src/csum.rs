//! Incremental Internet checksums (RFC 1624): the actions change a few
//! header bytes and adjust the checksum from the old and new words, never
//! summing the payload.
use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    helpers::generated::bpf_csum_diff,
    programs::{TcContext, XdpContext},
};
use emptcp_common::FlowKey;

use crate::{
    maps::CSUM_SCRATCH,
    options::{Buf64, Seg, bounded, load, load_be16},
    parse::Frame,
};

/// Bytes summed per `bpf_csum_diff` call (its limit is 512).
const CHUNK: u32 = 512;
/// Longest segment whose checksum is verified: 18 chunks = 9216 bytes,
/// a jumbo frame's. A longer segment is treated as unverifiable.
const CHUNKS: u32 = 18;

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

/// What the checksum field of a received segment holds, once it is known
/// to be right.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The full checksum: pseudo-header and segment sum to all ones.
    Full,
    /// The folded pseudo-header sum only, as a sender with TX checksum
    /// offload leaves it for the device (`CHECKSUM_PARTIAL`); an skb that
    /// crosses a veth or tun pair from such a sender arrives like that,
    /// and the receiving stack trusts it without a check (it never left
    /// the host's memory). XDP cannot see `ip_summed`, so the field tells:
    /// a segment damaged on a wire matches this form with the same 2^-16
    /// chance as it matches a full checksum (docs/datapath.md).
    Partial,
}

/// Does the TCP checksum of the received segment `s` (flow `key`: remote
/// = source) hold, and in which form? Sums the pseudo-header and the whole
/// segment with `bpf_csum_diff`, 512 bytes at a time through a per-CPU
/// buffer; a segment that is not all in the frame or longer than `CHUNKS`
/// chunks counts as not verified (None). Used before anything from the
/// packet is kept (strip's stored ADD_ADDR): a corrupted option must never
/// be stored and later re-inserted with a fresh, valid checksum.
///
/// The full chunks go through one loop whose every pass looks the same to
/// the verifier (a constant size), the rest once after it, summed only to
/// its last 4-byte word: a pure ACK costs one 60-byte sum, not a 512-byte
/// one. (A variable size inside the loop made every pass a new state for
/// the verifier: six times the verified instructions.)
///
/// The work is [`emptcp_tcp_check`], a global function: the verifier
/// checks it once, on its own, not once per state of its caller (strip's
/// paths multiplied this loop: ~60 % of strip_add_addr's verified
/// instructions). One call per ADD_ADDR kept, which is rare.
#[inline(always)]
pub fn tcp_check<C: TcpCheck>(ctx: &C, s: &Seg, key: &FlowKey) -> Option<Form> {
    ctx.tcp_check(s, key)
}

/// [`tcp_check`] on each hook's context: one global function per context
/// type (a global function's arguments are typed for the verifier).
pub trait TcpCheck {
    fn tcp_check(&self, s: &Seg, key: &FlowKey) -> Option<Form>;
}

impl TcpCheck for XdpContext {
    #[inline(always)]
    fn tcp_check(&self, s: &Seg, key: &FlowKey) -> Option<Form> {
        form(emptcp_tcp_check(self.ctx, s.l4, s.seg_len, key))
    }
}

impl TcpCheck for TcContext {
    #[inline(always)]
    fn tcp_check(&self, s: &Seg, key: &FlowKey) -> Option<Form> {
        form(emptcp_tcp_check_skb(
            self.skb.skb as *mut _,
            s.l4,
            s.seg_len,
            key,
        ))
    }
}

/// A `CHECK_*` answer as a [`Form`].
#[inline(always)]
fn form(check: u32) -> Option<Form> {
    match check {
        CHECK_FULL => Some(Form::Full),
        CHECK_PARTIAL => Some(Form::Partial),
        _ => None,
    }
}

/// [`emptcp_tcp_check`]'s answers (a global function returns a scalar).
const CHECK_NONE: u32 = 0;
const CHECK_FULL: u32 = 1;
const CHECK_PARTIAL: u32 = 2;

/// [`tcp_check`] of the segment at `l4` (`seg_len` bytes) of the XDP
/// packet `ctx`, from `key.remote` to `key.local`: `CHECK_*`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn emptcp_tcp_check(
    ctx: *mut xdp_md,
    l4: u32,
    seg_len: u32,
    key: *const FlowKey,
) -> u32 {
    if key.is_null() {
        return CHECK_NONE;
    }
    answer(check(&XdpContext::new(ctx), l4, seg_len, unsafe { &*key }))
}

/// [`emptcp_tcp_check`] of an skb (the TC ingress hook): the same work
/// through `bpf_skb_load_bytes`, which also reaches an skb's page fragments.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn emptcp_tcp_check_skb(
    skb: *mut __sk_buff,
    l4: u32,
    seg_len: u32,
    key: *const FlowKey,
) -> u32 {
    if key.is_null() {
        return CHECK_NONE;
    }
    answer(check(&TcContext::new(skb), l4, seg_len, unsafe { &*key }))
}

/// A [`Form`] as the scalar a global function returns (`CHECK_*`).
#[inline(always)]
fn answer(f: Option<Form>) -> u32 {
    match f {
        Some(Form::Full) => CHECK_FULL,
        Some(Form::Partial) => CHECK_PARTIAL,
        None => CHECK_NONE,
    }
}

#[inline(always)]
fn check<C: Frame>(ctx: &C, l4: u32, len: u32, key: &FlowKey) -> Option<Form> {
    if len < 20 || len > CHUNK * CHUNKS {
        return None;
    }
    let field = load_be16(ctx, l4 + 16)?;
    let pseudo = pseudo_sum(key, len);
    let buf = CSUM_SCRATCH.get_ptr_mut(0)? as *mut u32;
    let full = len / CHUNK;
    let mut sum = pseudo as u64;
    for i in 0..CHUNKS {
        if i >= full {
            break;
        }
        if !load(ctx, l4 + i * CHUNK, buf as *mut u8, CHUNK) {
            return None;
        }
        sum += chunk_sum(buf, CHUNK)? as u64;
    }
    let rest = len - full * CHUNK;
    if rest != 0 {
        let n = bounded(rest, CHUNK);
        let words = bounded(n.div_ceil(4), CHUNK / 4);
        // The last word may be partly past the segment: zeroed first, its
        // missing bytes add nothing (and pad an odd length as the
        // checksum rule says).
        unsafe { core::ptr::write_volatile(buf.add(words as usize - 1), 0) };
        if !load(ctx, l4 + full * CHUNK, buf as *mut u8, n) {
            return None;
        }
        sum += chunk_sum(buf, words * 4)? as u64;
    }
    // A valid segment sums to all ones (in either byte order).
    if fold(sum) == 0xffff {
        return Some(Form::Full);
    }
    // `bpf_csum_diff` sums host-order (little-endian) words: its folded
    // sum is the byte swap of the network-order one (RFC 1071).
    (field == fold(pseudo as u64).swap_bytes()).then_some(Form::Partial)
}

/// `bpf_csum_diff` of the first `size` bytes of `buf` (a multiple of 4);
/// None if the helper fails.
#[inline(always)]
fn chunk_sum(buf: *mut u32, size: u32) -> Option<u32> {
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, buf, size, 0) };
    (r >= 0).then_some(r as u32)
}

/// The sum of the TCP pseudo-header (RFC 793 / RFC 8200 8.1) of a segment
/// of `len` bytes from `key.remote` to `key.local`, as `bpf_csum_diff`
/// sums memory (host-order 32-bit words, folded to 32 bits): computed
/// here rather than by the helper, which would need the header built in a
/// buffer first.
#[inline(always)]
pub fn pseudo_sum(key: &FlowKey, len: u32) -> u32 {
    let [hi, lo] = (len as u16).to_be_bytes();
    let word = |a: &[u8; 16], i: usize| {
        u32::from_le_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]) as u64
    };
    let mut s = if key.family == 4 {
        // src, dst, zero, protocol, TCP length.
        word(&key.remote, 0) + word(&key.local, 0) + u32::from_le_bytes([0, 6, hi, lo]) as u64
    } else {
        // src, dst, the 32-bit TCP length, three zero bytes, next header.
        let mut s =
            u32::from_le_bytes([0, 0, hi, lo]) as u64 + u32::from_le_bytes([0, 0, 0, 6]) as u64;
        for i in 0..4 {
            s += word(&key.remote, i) + word(&key.local, i);
        }
        s
    };
    s = (s & 0xffff_ffff) + (s >> 32);
    ((s & 0xffff_ffff) + (s >> 32)) as u32
}
