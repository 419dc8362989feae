//! Appends an option to a received TCP header (shared by recover_add_addr
//! and set_backup), each hook its own way ([`Hook::insert_option`]); on
//! XDP by growing the packet at the front ([`at_head`]):
//!
//! `bpf_xdp_adjust_head(-n)` makes n bytes of room before the frame; the
//! headers (Ethernet, VLAN tags, IP, TCP with its options) move n bytes to
//! the front and the new option fills the gap they leave, so the payload
//! never moves. Then the lengths and checksums are fixed:
//! * IPv4 total length (+n) and header checksum, or IPv6 payload length;
//! * TCP data offset (+n/4) and checksum: the pseudo-header length (+n), the
//!   data-offset word and the new option words. The payload keeps its word
//!   parity (n is a multiple of 4), so its sum is unchanged.
use core::hint::black_box;

use aya_ebpf::{helpers::generated::bpf_xdp_adjust_head, programs::XdpContext};

use emptcp_common::{IFACE_SKB, XdpMeta};

use crate::{
    chain, csum,
    hook::Hook,
    maps::SCRATCH,
    options::{Buf64, Hdr, OPT_MAX, Seg, TCP_HLEN, load, load_be16, store, store_be16},
};

pub use crate::shared::HDR_MAX;

pub enum Insert {
    /// The option is in the packet (at option offset `at`); the metadata
    /// (moved with the head) is returned with its lengths updated.
    Done { at: u32, m: *mut XdpMeta },
    /// Nothing was changed (the head could not grow, or no room).
    Unchanged,
    /// Nothing was changed, on purpose: the packet must not grow (its IP
    /// length would pass 65535, or an IPv4 insert in generic XDP would
    /// break the skb's CHECKSUM_COMPLETE, `IFACE_SKB`). Like no room.
    Refused,
    /// The head grew but a later write failed: the packet is inconsistent
    /// and must not be passed on.
    Damaged,
}

/// Bytes of the frame (XDP: one buffer, the programs are not frags-aware).
#[inline(always)]
fn frame_len(ctx: &XdpContext) -> u32 {
    // black_box: LLVM would fold a later `+ n` into pkt_end, which the
    // verifier refuses (no arithmetic on pkt_end).
    black_box(ctx.data_end() - ctx.data()) as u32
}

/// Does the receiving interface run our XDP in generic (skb) mode? Looked
/// up only here, on the rare packet that is about to grow.
#[inline(always)]
fn skb_mode(ctx: &XdpContext) -> bool {
    crate::maps::iface(ctx.ingress_ifindex() as u32).is_some_and(|i| i.flags & IFACE_SKB != 0)
}

/// Does an `n`-byte option fit after the current options?
#[inline(always)]
pub fn has_room(s: &Seg, n: u32) -> bool {
    s.opt_len + n <= OPT_MAX
}

/// Appends the first `n` bytes of `opt` (n a multiple of 4, padded with
/// NOPs by the caller, bytes after n zero) after the options of `s`, whose
/// fixed header is `t`.
#[inline(always)]
pub fn insert_option<H: Hook>(ctx: &H, s: &Seg, t: &Hdr, opt: &Buf64, n: u32) -> Insert {
    ctx.insert_option(s, t, opt, n)
}

/// [`insert_option`] on XDP: the headers move `n` bytes to the front.
#[inline(always)]
pub fn at_head(ctx: &XdpContext, s: &Seg, t: &Hdr, opt: &Buf64, n: u32) -> Insert {
    let w = s;
    let n = black_box(n);
    if n == 0 || n > OPT_MAX || n & 3 != 0 || !has_room(s, n) {
        return Insert::Unchanged;
    }
    let h = black_box(w.l4 + TCP_HLEN + s.opt_len);
    if h > HDR_MAX || h == 0 {
        return Insert::Unchanged;
    }

    // Everything is computed before the head moves, from the copies.
    let old_doff = t.be16(12);
    let new_doff = old_doff.wrapping_add(((n / 4) as u16) << 12);
    let tcp_csum = csum::replace(
        t.be16(16),
        old_doff,
        // The pseudo-header length grows by n (a 16-bit word in IPv4, the
        // low word of a 32-bit one in IPv6: same one's complement sum).
        csum::fold(new_doff as u64 + n as u64 + csum::sum40(opt) as u64),
    );
    let (len_off, old_len) = if w.family == 4 {
        (w.l3 + 2, load_be16(ctx, w.l3 + 2))
    } else {
        (w.l3 + 4, load_be16(ctx, w.l3 + 4))
    };
    let Some(old_len) = old_len else {
        return Insert::Unchanged;
    };
    // Never wrap a length: the parser only takes packets whose IP length
    // covers the TCP header (not BIG TCP's 0), and none may pass 65535,
    // nor may the frame, whatever its IP length says.
    if old_len as u32 + n > 0xffff || frame_len(ctx) + n > 0xffff {
        return Insert::Refused;
    }
    if w.family == 4 && skb_mode(ctx) {
        return Insert::Refused;
    }
    let new_len = old_len.wrapping_add(n as u16);
    let ip_csum = if w.family == 4 {
        match load_be16(ctx, w.l3 + 10) {
            Some(c) => csum::replace(c, old_len, new_len),
            None => return Insert::Unchanged,
        }
    } else {
        0
    };

    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(n as i32)) } != 0 {
        return Insert::Unchanged;
    }
    // From here on the old offsets are shifted by n; only offsets are used.
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Insert::Damaged;
    };
    let buf = scratch as *mut u8;
    let ok = load(ctx, n, buf, h)
        && store(ctx, 0, buf, h)
        && store(ctx, h, opt.0.as_ptr(), n)
        && store_be16(ctx, len_off, new_len)
        && (w.family != 4 || store_be16(ctx, w.l3 + 10, ip_csum))
        && store_be16(ctx, w.l4 + 12, new_doff)
        && store_be16(ctx, w.l4 + 16, tcp_csum);
    if !ok {
        return Insert::Damaged;
    }
    let Some(m) = chain::meta(ctx) else {
        return Insert::Damaged;
    };
    unsafe {
        (*m).opt_len = (s.opt_len + n) as u8;
        (*m).seg_len = (s.seg_len + n) as u16;
    }
    Insert::Done { at: s.opt_len, m }
}
