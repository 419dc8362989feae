//! What an action knows about its packet ([`Seg`], from the metadata the
//! entry program wrote) and the packet access helpers.
//!
//! All packet access of the actions goes through the hook's load and store
//! helpers (`bpf_xdp_load_bytes` / `bpf_xdp_store_bytes` on XDP) with
//! offsets, so no packet pointer has to survive a head adjust, and a loop
//! over packet pointers with a rewrite inside (which the verifier refuses:
//! a store invalidates every packet pointer it was tracking) is never
//! needed.
use core::hint::black_box;

use emptcp_common::{FlowKey, OptRef, XdpMeta};

use crate::{
    hook::Hook,
    parse::{Frame, bytes_at},
    words::{copy_key, load64},
};

pub const TCP_HLEN: u32 = 20;
/// Option space of a TCP header (data offset 15).
pub const OPT_MAX: u32 = 40;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

pub const KIND_EOL: u8 = 0;
pub const KIND_NOP: u8 = 1;
pub const KIND_WSCALE: u8 = 3;
pub const KIND_TS: u8 = 8;
pub const KIND_MPTCP: u8 = 30;

pub const MP_CAPABLE: u8 = 0;
pub const MP_JOIN: u8 = 1;
pub const MP_DSS: u8 = 2;
pub const MP_ADD_ADDR: u8 = 3;
pub const MP_REMOVE_ADDR: u8 = 4;
pub const MP_PRIO: u8 = 5;
pub const MP_FASTCLOSE: u8 = 7;

/// The packet as the entry program described it, copied out of the
/// metadata before anything can move it.
#[derive(Clone, Copy)]
pub struct Seg {
    pub chain: u32,
    pub l3: u32,
    pub l4: u32,
    pub family: u8,
    pub flags: u8,
    pub opt_state: u8,
    pub n_mptcp: u8,
    /// Bytes of options, at most 40.
    pub opt_len: u32,
    /// TCP header + payload.
    pub seg_len: u32,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub tsval: u32,
    pub tsecr: u32,
    pub dss: OptRef,
    pub ts: OptRef,
    pub add_addr: OptRef,
    pub prio: OptRef,
    pub capable: OptRef,
    pub wscale: OptRef,
    pub join: OptRef,
    pub remove_addr: OptRef,
    pub fastclose: OptRef,
    pub echo: OptRef,
}

impl Seg {
    #[inline(always)]
    pub fn of(m: *const XdpMeta) -> Seg {
        unsafe {
            Seg {
                chain: (*m).chain,
                l3: (*m).l3_off as u32,
                l4: (*m).l4_off as u32,
                family: (*m).family,
                flags: (*m).tcp_flags,
                opt_state: (*m).opt_state,
                n_mptcp: (*m).n_mptcp,
                opt_len: (*m).opt_len as u32,
                seg_len: (*m).seg_len as u32,
                seq: (*m).seq,
                ack: (*m).ack,
                window: (*m).window,
                tsval: (*m).tsval,
                tsecr: (*m).tsecr,
                dss: (*m).dss,
                ts: (*m).ts,
                add_addr: (*m).add_addr,
                prio: (*m).prio,
                capable: (*m).capable,
                wscale: (*m).wscale,
                join: (*m).join,
                remove_addr: (*m).remove_addr,
                fastclose: (*m).fastclose,
                echo: (*m).echo,
            }
        }
    }

    /// Bytes of payload (the entry checked seg_len covers the header).
    #[inline(always)]
    pub fn payload(&self) -> u32 {
        self.seg_len.wrapping_sub(TCP_HLEN + self.opt_len)
    }

    /// Packet offset of option `r`.
    #[inline(always)]
    pub fn at(&self, r: OptRef) -> u32 {
        self.l4 + TCP_HLEN + r.off as u32
    }

    /// Copies option `r` (at most `N` bytes, `N` a power of two of at
    /// least 8: checked at build time, [`bounded`] masks the helper's
    /// length with `N - 1`) from the packet into `buf`; false when absent.
    /// Bytes of `buf` past the option are zero when `buf` was zeroed (the
    /// helper's copy leaves them; the word copy masks them off).
    #[inline(always)]
    pub fn read<C: Frame, const N: usize>(&self, ctx: &C, r: OptRef, buf: &mut [u8; N]) -> bool {
        const { assert!(N.is_power_of_two() && N >= 8) };
        let n = (r.len as u32).min(N as u32);
        if n == 0 {
            return false;
        }
        let at = self.at(r);
        // Direct 8-byte loads when N bytes are in the frame (the common
        // case); the helper call otherwise.
        if let Some(p) = bytes_at(ctx, at as usize & 0xfff, N) {
            let dst = buf.as_mut_ptr() as *mut u64;
            for i in 0..N / 8 {
                let w = load64(unsafe { p.add(8 * i) });
                // The word's bytes past the option are the packet's next
                // ones: off, one mask per word (a byte-wise loop of
                // constant indices was N compares, ~100 instructions for
                // a DSS on every segment).
                let w = match n.saturating_sub(8 * i as u32) {
                    8.. => w,
                    k => w & ((1u64 << (8 * k)) - 1),
                };
                unsafe { dst.add(i).write_unaligned(w) };
            }
            return true;
        }
        ctx.load_into(at, buf.as_mut_ptr(), bounded(n, N as u32))
    }

    /// Reads the fixed TCP header.
    #[inline(always)]
    pub fn header<C: Frame>(&self, ctx: &C) -> Option<Hdr> {
        let mut h = Hdr([0; 20]);
        ctx.load_into(self.l4, h.0.as_mut_ptr(), TCP_HLEN)
            .then_some(h)
    }
}

/// The flow key the entry program computed.
#[inline(always)]
pub fn key(m: *const XdpMeta) -> FlowKey {
    const { assert!(core::mem::offset_of!(XdpMeta, key) % 8 == 0) };
    copy_key(unsafe { &raw const (*m).key })
}

/// A copy of the fixed TCP header.
pub struct Hdr(pub [u8; 20]);

impl Hdr {
    #[inline(always)]
    pub fn be16(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.0[i], self.0[i + 1]])
    }
}

/// A 64-byte, 8-aligned stack buffer. Reads mask the index with 63 (see
/// [`Buf64::at`]): a variable index then needs no other bound for the
/// verifier, and no slice bounds check (a panic path) is left.
#[repr(C, align(8))]
pub struct Buf64(pub [u8; 64]);

impl Buf64 {
    /// Zeroed with eight 8-byte stores: `[0u8; 64]` would become a call to
    /// a byte-loop memset.
    #[inline(always)]
    pub fn zeroed() -> Buf64 {
        // SAFETY: same size, every bit pattern is a valid [u8; 64].
        unsafe { core::mem::transmute::<[u64; 8], Buf64>([0u64; 8]) }
    }

    /// Byte `i & 63`. black_box: LLVM knows the loops keep `i` below 64
    /// and would drop the mask, leaving the verifier an index it cannot
    /// bound (the loop compared another copy of it).
    #[inline(always)]
    pub fn at(&self, i: u32) -> u8 {
        self.0[(black_box(i) & 63) as usize]
    }
}

/// `len` (in `1..=max`, `max` a power of two) in a form the verifier can
/// bound: the mask is applied to the very register passed to a helper.
/// black_box keeps LLVM from proving the mask redundant and dropping it.
#[inline(always)]
pub fn bounded(len: u32, max: u32) -> u32 {
    (black_box(len).wrapping_sub(1) & (max - 1)) + 1
}

/// Copies `len` packet bytes at `off` into `buf`; false when out of range.
#[inline(always)]
pub fn load<C: Frame>(ctx: &C, off: u32, buf: *mut u8, len: u32) -> bool {
    ctx.load_into(off, buf, len)
}

/// Writes `len` bytes from `buf` at packet offset `off`.
#[inline(always)]
pub fn store<H: Hook>(ctx: &H, off: u32, buf: *const u8, len: u32) -> bool {
    ctx.store(off, buf, len)
}

/// Writes a big-endian u16 at packet offset `off`.
#[inline(always)]
pub fn store_be16<H: Hook>(ctx: &H, off: u32, v: u16) -> bool {
    let b = v.to_be_bytes();
    store(ctx, off, b.as_ptr(), 2)
}

/// Reads a big-endian u16 at packet offset `off`.
#[inline(always)]
pub fn load_be16<C: Frame>(ctx: &C, off: u32) -> Option<u16> {
    let mut b = [0u8; 2];
    load(ctx, off, b.as_mut_ptr(), 2).then(|| u16::from_be_bytes(b))
}
