//! Appends an option to a received TCP header (shared by recover_add_addr
//! and set_backup), each hook its own way ([`InsertOption`]); on XDP by
//! growing the packet at the front ([`at_head`]):
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

use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    helpers::generated::{bpf_csum_update, bpf_skb_adjust_room, bpf_xdp_adjust_head},
    programs::{TcContext, XdpContext},
};

use emptcp_common::{IFACE_SKB, XdpMeta};

use crate::{
    chain, csum,
    maps::SCRATCH,
    options::{Buf64, Hdr, OPT_MAX, Seg, TCP_HLEN, load, load_be16, store, store_be16},
    parse::Frame,
};

pub use crate::shared::HDR_MAX;

pub enum Insert {
    /// The option is in the packet (at option offset `at`); the metadata
    /// (moved with the head) is returned with its lengths updated.
    Done { at: u32, m: *mut XdpMeta },
    /// Nothing was changed (the head could not grow, or no room).
    Unchanged,
    /// Nothing was changed, on purpose: the packet must not grow (its IP
    /// length would pass 65535, an IPv4 insert in generic XDP would break
    /// the skb's CHECKSUM_COMPLETE, `IFACE_SKB`, or the skb is a GSO
    /// super-packet). Like no room.
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
pub fn insert_option<H: InsertOption>(ctx: &H, s: &Seg, t: &Hdr, opt: &Buf64, n: u32) -> Insert {
    ctx.insert_option(s, t, opt, n)
}

/// [`insert_option`] on each hook.
pub trait InsertOption: crate::hook::Hook {
    fn insert_option(&self, s: &Seg, t: &Hdr, opt: &Buf64, n: u32) -> Insert;
}

impl InsertOption for XdpContext {
    #[inline(always)]
    fn insert_option(&self, s: &Seg, t: &Hdr, opt: &Buf64, n: u32) -> Insert {
        at_head(self, s, t, opt, n)
    }
}

impl InsertOption for TcContext {
    #[inline(always)]
    fn insert_option(&self, s: &Seg, t: &Hdr, opt: &Buf64, n: u32) -> Insert {
        after_mac(self, s, t, opt, n)
    }
}

/// What an insert writes besides the option, computed from the packet as
/// it is before it grows (both hooks).
struct Fixups {
    /// Bytes from the start of the frame to the end of the TCP options.
    h: u32,
    /// Offset of the IP length field and its new value.
    len_off: u32,
    new_len: u16,
    /// IPv4 header checksum (unused for IPv6).
    ip_csum: u16,
    new_doff: u16,
    tcp_csum: u16,
}

/// The fix-ups of an `n`-byte insert into `s` (fixed header `t`) of a
/// frame of `frame_len` bytes, or why there is none.
#[inline(always)]
fn fixups<C: Frame>(
    ctx: &C,
    s: &Seg,
    t: &Hdr,
    opt: &Buf64,
    n: u32,
    frame_len: u32,
) -> Result<Fixups, Insert> {
    if n == 0 || n > OPT_MAX || n & 3 != 0 || !has_room(s, n) {
        return Err(Insert::Unchanged);
    }
    let h = black_box(s.l4 + TCP_HLEN + s.opt_len);
    if h > HDR_MAX || h == 0 {
        return Err(Insert::Unchanged);
    }
    let old_doff = t.be16(12);
    let new_doff = old_doff.wrapping_add(((n / 4) as u16) << 12);
    let tcp_csum = csum::replace(
        t.be16(16),
        old_doff,
        // The pseudo-header length grows by n (a 16-bit word in IPv4, the
        // low word of a 32-bit one in IPv6: same one's complement sum).
        csum::fold(new_doff as u64 + n as u64 + csum::sum40(opt) as u64),
    );
    let len_off = if s.family == 4 { s.l3 + 2 } else { s.l3 + 4 };
    let Some(old_len) = load_be16(ctx, len_off) else {
        return Err(Insert::Unchanged);
    };
    // Never wrap a length: the parser only takes packets whose IP length
    // covers the TCP header (not BIG TCP's 0), and none may pass 65535,
    // nor may the frame, whatever its IP length says.
    if old_len as u32 + n > 0xffff || frame_len + n > 0xffff {
        return Err(Insert::Refused);
    }
    let new_len = old_len.wrapping_add(n as u16);
    let ip_csum = if s.family == 4 {
        match load_be16(ctx, s.l3 + 10) {
            Some(c) => csum::replace(c, old_len, new_len),
            None => return Err(Insert::Unchanged),
        }
    } else {
        0
    };
    Ok(Fixups {
        h,
        len_off,
        new_len,
        ip_csum,
        new_doff,
        tcp_csum,
    })
}

/// Writes the option at `f.h` and the fix-ups, once the headers have moved
/// to make room; then the description follows the packet.
#[inline(always)]
fn finish<H: crate::hook::Hook>(ctx: &H, s: &Seg, f: &Fixups, opt: &Buf64, n: u32) -> Insert {
    let ok = store(ctx, f.h, opt.0.as_ptr(), n)
        && store_be16(ctx, f.len_off, f.new_len)
        && (s.family != 4 || store_be16(ctx, s.l3 + 10, f.ip_csum))
        && store_be16(ctx, s.l4 + 12, f.new_doff)
        && store_be16(ctx, s.l4 + 16, f.tcp_csum);
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

/// [`insert_option`] on XDP: the headers (Ethernet, VLAN tags, IP, TCP
/// with its options) move `n` bytes to the front.
#[inline(always)]
fn at_head(ctx: &XdpContext, s: &Seg, t: &Hdr, opt: &Buf64, n: u32) -> Insert {
    let n = black_box(n);
    let f = match fixups(ctx, s, t, opt, n, frame_len(ctx)) {
        Ok(f) => f,
        Err(e) => return e,
    };
    if s.family == 4 && skb_mode(ctx) {
        return Insert::Refused;
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(n as i32)) } != 0 {
        return Insert::Unchanged;
    }
    // From here on the old offsets are shifted by n; only offsets are used.
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Insert::Damaged;
    };
    let buf = scratch as *mut u8;
    if !(load(ctx, n, buf, f.h) && store(ctx, 0, buf, f.h)) {
        return Insert::Damaged;
    }
    finish(ctx, s, &f, opt, n)
}

/// [`insert_option`] on TC ingress: `bpf_skb_adjust_room` opens `n` zero
/// bytes after the link-layer header (none on a raw-IP link; VLAN tags
/// are out of the packet by then), the IP and TCP headers move into
/// them, and the option fills the gap they leave before the payload,
/// which never moves. GSO super-packets (GRO merged them) never grow.
///
/// An skb whose driver summed the packet (CHECKSUM_COMPLETE, from L3 on)
/// gets that sum corrected with `bpf_csum_update` (a no-op on any other
/// skb): the inserted bytes and the header fix-ups change it by -n for
/// IPv4 (the segment sums to minus the pseudo-header, whose length grew
/// by n; the IPv4 header checksum cancels the header's own change) and by
/// 0 for IPv6 (its payload length, in the summed header, cancels the
/// segment's -n). See docs/datapath.md, "Generic (skb) XDP and
/// CHECKSUM_COMPLETE".
#[inline(always)]
fn after_mac(ctx: &TcContext, s: &Seg, t: &Hdr, opt: &Buf64, n: u32) -> Insert {
    let n = black_box(n);
    if unsafe { (*ctx.skb.skb).gso_size } != 0 {
        return Insert::Refused;
    }
    let f = match fixups(ctx, s, t, opt, n, ctx.len()) {
        Ok(f) => f,
        Err(e) => return e,
    };
    // The IP header starts right after the link-layer header the room
    // follows: nothing between them may move with the room.
    let mac_len = s.l3;
    // black_box: the bound below must hold for the very register passed
    // to the helper (LLVM would test a 32-bit copy of the difference).
    let moved = black_box(f.h.wrapping_sub(mac_len));
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Insert::Unchanged;
    };
    let buf = scratch as *mut u8;
    if moved == 0 || moved > HDR_MAX || !load(ctx, mac_len, buf, moved) {
        return Insert::Unchanged;
    }
    if unsafe { bpf_skb_adjust_room(ctx.skb.skb, n as i32, BPF_ADJ_ROOM_MAC, 0) } != 0 {
        return Insert::Unchanged;
    }
    if !store(ctx, mac_len, buf, moved) {
        return Insert::Damaged;
    }
    let done = finish(ctx, s, &f, opt, n);
    if s.family == 4 && matches!(done, Insert::Done { .. }) {
        // -n in one's complement; fails (and changes nothing) unless the
        // skb is CHECKSUM_COMPLETE.
        unsafe { bpf_csum_update(ctx.skb.skb, !n) };
    }
    done
}
