//! The TCP header and its options, copied to the stack and scanned there.
//!
//! Why a stack copy: a loop over packet pointers with the rewrite inside does
//! not verify (TOOLCHAIN.md, "Verifier facts"); a copy made with
//! `bpf_xdp_load_bytes`, indexed with `i & 63` in a 64-byte buffer, verifies
//! cheaply. All packet access of the actions goes through the load/store
//! helpers with offsets, so no packet pointer has to survive a head adjust.
use core::hint::black_box;

use aya_ebpf::{
    helpers::generated::{bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    programs::XdpContext,
};
use emptcp_common::XdpMeta;

pub const TCP_HLEN: u32 = 20;
/// Option space of a TCP header (data offset 15).
pub const OPT_MAX: u32 = 40;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

pub const KIND_EOL: u8 = 0;
pub const KIND_NOP: u8 = 1;
const KIND_WSCALE: u8 = 3;
const KIND_TS: u8 = 8;
pub const KIND_MPTCP: u8 = 30;

const MP_CAPABLE: u8 = 0;
const MP_DSS: u8 = 2;
const MP_ADD_ADDR: u8 = 3;
const MP_PRIO: u8 = 5;

/// Where the headers are, read from the metadata before anything can move it.
#[derive(Clone, Copy)]
pub struct Where {
    pub chain: u32,
    pub l3: u32,
    pub l4: u32,
    pub family: u8,
}

impl Where {
    #[inline(always)]
    pub fn of(m: *const XdpMeta) -> Where {
        unsafe {
            Where {
                chain: (*m).chain,
                l3: (*m).l3_off as u32,
                l4: (*m).l4_off as u32,
                family: (*m).family,
            }
        }
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

    #[inline(always)]
    pub fn be16(&self, i: u32) -> u16 {
        u16::from_be_bytes([self.at(i), self.at(i + 1)])
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
pub fn load(ctx: &XdpContext, off: u32, buf: *mut u8, len: u32) -> bool {
    unsafe { bpf_xdp_load_bytes(ctx.ctx, off, buf as *mut _, len) == 0 }
}

/// Writes `len` bytes from `buf` at packet offset `off`.
#[inline(always)]
pub fn store(ctx: &XdpContext, off: u32, buf: *const u8, len: u32) -> bool {
    unsafe { bpf_xdp_store_bytes(ctx.ctx, off, buf as *mut _, len) == 0 }
}

/// Writes a big-endian u16 at packet offset `off`.
#[inline(always)]
pub fn store_be16(ctx: &XdpContext, off: u32, v: u16) -> bool {
    let b = v.to_be_bytes();
    store(ctx, off, b.as_ptr(), 2)
}

/// Reads a big-endian u16 at packet offset `off`.
#[inline(always)]
pub fn load_be16(ctx: &XdpContext, off: u32) -> Option<u16> {
    let mut b = [0u8; 2];
    load(ctx, off, b.as_mut_ptr(), 2).then(|| u16::from_be_bytes(b))
}

/// Copy of a TCP header: the fixed part, the options, and the segment length.
pub struct Tcp {
    pub hdr: [u8; 20],
    pub opts: Buf64,
    /// Bytes of options (data offset * 4 - 20), at most 40.
    pub opt_len: u32,
    /// TCP header + payload, from the IP length fields.
    pub seg_len: u32,
}

impl Tcp {
    /// Reads the TCP header at `w.l4`. `None` (pass untouched) when the
    /// header or the IP length is inconsistent with the packet.
    #[inline(always)]
    pub fn load(ctx: &XdpContext, w: &Where) -> Option<Tcp> {
        let mut t = Tcp {
            hdr: [0; 20],
            opts: Buf64::zeroed(),
            opt_len: 0,
            seg_len: 0,
        };
        if !load(ctx, w.l4, t.hdr.as_mut_ptr(), TCP_HLEN) {
            return None;
        }
        let doff = (t.hdr[12] >> 4) as u32 * 4;
        if doff < TCP_HLEN {
            return None;
        }
        // black_box: keeps the bound LLVM would otherwise fold away, so the
        // verifier sees the helper's size in [1, 40].
        let opt_len = black_box(doff - TCP_HLEN);
        if opt_len > OPT_MAX {
            return None;
        }
        if opt_len > 0 && !load(ctx, w.l4 + TCP_HLEN, t.opts.0.as_mut_ptr(), opt_len) {
            return None;
        }
        t.opt_len = opt_len;
        let seg_len = match w.family {
            4 => (load_be16(ctx, w.l3 + 2)? as u32).checked_sub(w.l4 - w.l3)?,
            6 => load_be16(ctx, w.l3 + 4)? as u32,
            _ => return None,
        };
        let pkt_len = (ctx.data_end() - ctx.data()) as u32;
        // A segment longer than the frame (truncated, or a GSO packet with
        // a zero IP length) or shorter than its own header: not ours.
        if seg_len < doff || w.l4 + seg_len > pkt_len {
            return None;
        }
        t.seg_len = seg_len;
        Some(t)
    }

    #[inline(always)]
    pub fn flags(&self) -> u8 {
        self.hdr[13]
    }

    #[inline(always)]
    pub fn payload(&self) -> u32 {
        self.seg_len - (TCP_HLEN + self.opt_len)
    }

    #[inline(always)]
    pub fn be16(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.hdr[i], self.hdr[i + 1]])
    }

    #[inline(always)]
    pub fn be32(&self, i: usize) -> u32 {
        u32::from_be_bytes([
            self.hdr[i],
            self.hdr[i + 1],
            self.hdr[i + 2],
            self.hdr[i + 3],
        ])
    }

    /// The option length for one loop, read afresh from the copied header
    /// byte (a volatile load of helper-filled stack: a new value with no
    /// link to any other register) and bounded.
    ///
    /// Verifier notes (measured, kernel 6.18): a length shared by several
    /// loops is refined by every comparison of every loop (the verifier
    /// links copies of a register), so each loop multiplied the states of
    /// the next ones and the programs hit the 1M-instruction limit. A loop
    /// bounded by the constant 40 instead (walking to the zeros past the
    /// options) was worse: its offset ranges never matched.
    #[inline(always)]
    fn end(&self) -> Option<u32> {
        let doff = unsafe { core::ptr::read_volatile(&self.hdr[12]) } >> 4;
        let end = (doff as u32 * 4).wrapping_sub(TCP_HLEN);
        (end <= OPT_MAX).then_some(end)
    }

    /// Walks the options until `want(kind, len, byte 2)` holds, an EOL, or
    /// the end. Only the offset changes from round to round.
    #[inline(always)]
    fn walk(&self, want: impl Fn(u8, u32, u8) -> bool) -> Walk {
        let Some(end) = self.end() else {
            return Walk::Bad;
        };
        let mut off = 0u32;
        while off < end {
            let kind = self.opts.at(off);
            if kind == KIND_EOL {
                return Walk::Eol;
            }
            if kind == KIND_NOP {
                off += 1;
                continue;
            }
            if off + 1 >= end {
                return Walk::Bad;
            }
            let len = self.opts.at(off + 1) as u32;
            if len < 2 || off + len > end || (kind == KIND_MPTCP && len < 3) {
                return Walk::Bad;
            }
            if want(kind, len, self.opts.at(off + 2)) {
                return Walk::Hit(off, len);
            }
            off += len;
        }
        Walk::End
    }

    /// Validates the option list: `Malformed` for an option with length
    /// 0/1 (an MPTCP one shorter than 3) or running past the header, `Eol`
    /// when an EOL ends the list early (anything appended after it would be
    /// ignored by the receiver).
    #[inline(always)]
    pub fn check(&self) -> Opts {
        match self.walk(|_, _, _| false) {
            Walk::End => Opts::Ok,
            Walk::Eol => Opts::Eol,
            _ => Opts::Malformed,
        }
    }

    /// The first option for which `want(kind, len, byte 2)` holds. Call
    /// after [`Tcp::check`] said `Ok`/`Eol`; the search stops at EOL like a
    /// receiver does.
    #[inline(always)]
    pub fn find(&self, want: impl Fn(u8, u32, u8) -> bool) -> Hit {
        match self.walk(want) {
            Walk::Hit(off, len) => Hit {
                found: true,
                off,
                len,
            },
            _ => Hit {
                found: false,
                off: 0,
                len: 0,
            },
        }
    }

    /// Are there two MPTCP options or more?
    #[inline(always)]
    pub fn several_mptcp(&self) -> bool {
        let first = self.find(any_mptcp);
        if !first.found {
            return false;
        }
        // Walk on past the first one (the options are valid: checked).
        let Some(end) = self.end() else {
            return false;
        };
        let mut off = first.off + first.len;
        while off < end {
            let kind = self.opts.at(off);
            if kind == KIND_EOL {
                return false;
            }
            if kind == KIND_NOP {
                off += 1;
                continue;
            }
            if kind == KIND_MPTCP {
                return true;
            }
            let len = self.opts.at(off + 1) as u32;
            if len < 2 {
                return false;
            }
            off += len;
        }
        false
    }

    /// Copies the option `h` (at most `N` bytes) from the PACKET into
    /// `buf`. Reading the stack copy at `h.off` instead would make the
    /// verifier track every possible offset precisely after the loop, and
    /// each one would verify the rest of the program again.
    #[inline(always)]
    pub fn read<const N: usize>(
        &self,
        ctx: &XdpContext,
        w: &Where,
        h: &Hit,
        buf: &mut [u8; N],
    ) -> bool {
        let n = if (h.len as usize) < N {
            h.len
        } else {
            N as u32
        };
        n != 0
            && load(
                ctx,
                w.l4 + TCP_HLEN + h.off,
                buf.as_mut_ptr(),
                bounded(n, N as u32),
            )
    }
}

/// An option found by [`Tcp::find`]: offset into the options and length.
/// `found` is separate from the offset on purpose: testing a sentinel
/// offset would make the verifier track the offset precisely.
#[derive(Clone, Copy)]
pub struct Hit {
    pub found: bool,
    pub off: u32,
    pub len: u32,
}

/// Where a walk over the options stopped.
enum Walk {
    /// The end of the options.
    End,
    /// An EOL before the end.
    Eol,
    /// An option with an impossible length or running past the end.
    Bad,
    /// The wanted option: offset and length.
    Hit(u32, u32),
}

/// What [`Tcp::check`] found.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Opts {
    Ok,
    Eol,
    Malformed,
}

/// [`Tcp::find`] predicates.
#[inline(always)]
pub fn mptcp(kind: u8, sub: u8, b2: u8) -> bool {
    kind == KIND_MPTCP && b2 >> 4 == sub
}

/// Any MPTCP option.
#[inline(always)]
pub fn any_mptcp(kind: u8, _len: u32, _b2: u8) -> bool {
    kind == KIND_MPTCP
}

/// A non-echo ADD_ADDR. The echo (E bit) form is the peer acknowledging our
/// own announcement and is never touched; without E, RFC 8684 requires the
/// HMAC: IPv4 16 (+2 with port), IPv6 28 (+2 with port).
#[inline(always)]
pub fn add_addr(kind: u8, len: u32, b2: u8) -> bool {
    mptcp(kind, MP_ADD_ADDR, b2) && b2 & 1 == 0 && matches!(len, 16 | 18 | 28 | 30)
}

/// MP_PRIO, with or without the address id.
#[inline(always)]
pub fn mp_prio(kind: u8, len: u32, b2: u8) -> bool {
    mptcp(kind, MP_PRIO, b2) && (len == 3 || len == 4)
}

#[inline(always)]
pub fn mp_capable(kind: u8, _len: u32, b2: u8) -> bool {
    mptcp(kind, MP_CAPABLE, b2)
}

#[inline(always)]
pub fn dss(kind: u8, _len: u32, b2: u8) -> bool {
    mptcp(kind, MP_DSS, b2)
}

#[inline(always)]
pub fn timestamps(kind: u8, len: u32, _b2: u8) -> bool {
    kind == KIND_TS && len == 10
}

#[inline(always)]
pub fn window_scale(kind: u8, len: u32, _b2: u8) -> bool {
    kind == KIND_WSCALE && len == 3
}
