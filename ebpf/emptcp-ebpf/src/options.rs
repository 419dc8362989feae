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

/// "No such option" in [`Scan`] offsets.
pub const NONE: u32 = 0xff;

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

/// A 64-byte, 8-aligned stack buffer. Indexes are masked, so a variable
/// index needs no other bound for the verifier (and LLVM drops the slice
/// bounds check).
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

    #[inline(always)]
    pub fn at(&self, i: u32) -> u8 {
        self.0[(i & 63) as usize]
    }

    #[inline(always)]
    pub fn be16(&self, i: u32) -> u16 {
        u16::from_be_bytes([self.at(i), self.at(i + 1)])
    }

    #[inline(always)]
    pub fn be32(&self, i: u32) -> u32 {
        u32::from_be_bytes([self.at(i), self.at(i + 1), self.at(i + 2), self.at(i + 3)])
    }
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
        u32::from_be_bytes([self.hdr[i], self.hdr[i + 1], self.hdr[i + 2], self.hdr[i + 3]])
    }

    /// Walks the options once and reports what the actions look for.
    /// The loop is driven by the option offset (each option advances it by
    /// its length, so 40 rounds are enough) over the stack copy.
    #[inline(always)]
    pub fn scan(&self) -> Scan {
        let mut s = Scan {
            malformed: false,
            eol: false,
            mptcp: 0,
            capable: false,
            wscale: NONE,
            ts: NONE,
            dss: NONE,
            add_addr: NONE,
            prio: NONE,
        };
        let end = self.opt_len;
        let mut off = 0u32;
        for _ in 0..OPT_MAX {
            if off >= end {
                break;
            }
            let kind = self.opts.at(off);
            if kind == KIND_EOL {
                // Anything after EOL is padding; an insert after it would
                // be ignored by the receiver, so remember it.
                s.eol = true;
                break;
            }
            if kind == KIND_NOP {
                off += 1;
                continue;
            }
            if off + 1 >= end {
                s.malformed = true;
                break;
            }
            let len = self.opts.at(off + 1) as u32;
            if len < 2 || off + len > end {
                s.malformed = true;
                break;
            }
            match kind {
                KIND_WSCALE if len == 3 => s.wscale = self.opts.at(off + 2) as u32,
                KIND_TS if len == 10 && s.ts == NONE => s.ts = off,
                KIND_MPTCP => {
                    s.mptcp += 1;
                    if len >= 3 {
                        scan_mptcp(&mut s, self.opts.at(off + 2), off, len);
                    }
                }
                _ => {}
            }
            off += len;
        }
        s
    }
}

/// Records the first MPTCP option of each subtype the actions use.
#[inline(always)]
fn scan_mptcp(s: &mut Scan, b2: u8, off: u32, len: u32) {
    match b2 >> 4 {
        MP_CAPABLE => s.capable = true,
        MP_DSS if s.dss == NONE => s.dss = off,
        // The echo (E bit) form is the peer acknowledging our own
        // announcement: never touched. Without E, RFC 8684 requires the
        // HMAC: IPv4 16 (+2 with port), IPv6 28 (+2 with port).
        MP_ADD_ADDR if b2 & 1 == 0 && s.add_addr == NONE && is_add_addr_len(len) => {
            s.add_addr = off
        }
        MP_PRIO if (len == 3 || len == 4) && s.prio == NONE => s.prio = off,
        _ => {}
    }
}

#[inline(always)]
fn is_add_addr_len(len: u32) -> bool {
    len == 16 || len == 18 || len == 28 || len == 30
}

/// What [`Tcp::scan`] found. Offsets are into the options, or [`NONE`].
pub struct Scan {
    /// An option with length 0/1 or running past the header: the whole
    /// packet is left untouched.
    pub malformed: bool,
    /// An EOL ends the options before the data offset.
    pub eol: bool,
    /// Number of MPTCP (kind 30) options.
    pub mptcp: u32,
    /// An MP_CAPABLE is present.
    pub capable: bool,
    /// The window scale shift, or NONE.
    pub wscale: u32,
    pub ts: u32,
    pub dss: u32,
    /// First non-echo ADD_ADDR of a valid length.
    pub add_addr: u32,
    pub prio: u32,
}
