//! The one walk over the TCP options of a packet, done by the entry program
//! for the chain: it validates the list and records where the options the
//! actions care about sit (`XdpMeta`), so no action walks them again.
//!
//! Verifier notes (kernel 6.18): the options are copied to the stack with
//! `bpf_xdp_load_bytes` and read with a masked index, which verifies
//! cheaply; the loop bound is read afresh (volatile) from the copied data
//! offset so it is not linked to other registers; only the offset changes
//! from round to round, and the recorded hits are stored, never branched on
//! after the loop, so they stay imprecise and states prune.
use emptcp_common::{OPTS_BAD, OPTS_EOL, OPTS_OK, OptRef, XdpMeta};

use crate::{
    options::{
        Buf64, KIND_EOL, KIND_MPTCP, KIND_NOP, KIND_TS, KIND_WSCALE, MP_ADD_ADDR, MP_CAPABLE,
        MP_DSS, MP_FASTCLOSE, MP_JOIN, MP_PRIO, MP_REMOVE_ADDR, OPT_MAX, TCP_HLEN, bounded,
    },
    parse::{Frame, Packet, bytes_at},
    words::load64,
};

/// Fills the option fields of `m` for the TCP header of `pkt`; a segment
/// whose options or lengths do not hold is `OPTS_BAD` and `malformed`
/// counts it (in the counters of the hook that saw it).
#[inline(always)]
pub fn options<C: Frame>(ctx: &C, m: *mut XdpMeta, pkt: &Packet, malformed: impl Fn()) {
    let opt_len = (pkt.doff as u32).wrapping_sub(TCP_HLEN);
    let pkt_len = ctx.frame_len();
    let seg = pkt.seg_len as u32;
    unsafe {
        (*m).opt_len = opt_len as u8;
        (*m).n_mptcp = 0;
        (*m).dss = OptRef::default();
        (*m).ts = OptRef::default();
        (*m).add_addr = OptRef::default();
        (*m).prio = OptRef::default();
        (*m).capable = OptRef::default();
        (*m).wscale = OptRef::default();
        (*m).join = OptRef::default();
        (*m).remove_addr = OptRef::default();
        (*m).fastclose = OptRef::default();
        (*m).echo = OptRef::default();
    }
    // A segment longer than the frame (truncated, or a GSO packet with a
    // zero IP length) or shorter than its own header is not touched.
    if opt_len > OPT_MAX || seg < pkt.doff as u32 || pkt.l4_off as u32 + seg > pkt_len {
        malformed();
        unsafe { (*m).opt_state = OPTS_BAD };
        return;
    }
    if opt_len == 0 {
        unsafe { (*m).opt_state = OPTS_OK };
        return;
    }
    let mut o = Buf64::zeroed();
    let at = pkt.l4_off + TCP_HLEN as usize;
    if let Some(p) = bytes_at(ctx, at, OPT_MAX as usize) {
        // The common case (a frame with 40 bytes after the fixed header):
        // five direct 8-byte loads instead of a helper call. The walk never
        // reads past `opt_len`.
        let dst = o.0.as_mut_ptr() as *mut u64;
        for i in 0..(OPT_MAX as usize / 8) {
            unsafe { *dst.add(i) = load64(p.add(8 * i)) };
        }
    } else if !ctx.load_into(at as u32, o.0.as_mut_ptr(), bounded(opt_len, 64)) {
        unsafe { (*m).opt_state = OPTS_BAD };
        return;
    }
    let state = walk(&o, opt_len, m);
    if state == OPTS_BAD {
        malformed();
    }
    unsafe { (*m).opt_state = state };
}

/// The first four option bytes NOP, NOP, TS, 10 as a little-endian word.
const NOP_NOP_TS: u32 = u32::from_le_bytes([KIND_NOP, KIND_NOP, KIND_TS, 10]);

#[inline(always)]
fn walk(o: &Buf64, opt_len: u32, m: *mut XdpMeta) -> u8 {
    // Bounded here, separately from the caller's copy (see the module doc).
    let end = unsafe { core::ptr::read_volatile(&opt_len) };
    if end > OPT_MAX {
        return OPTS_BAD;
    }
    let mut off = 0u32;
    let mut n_mptcp = 0u8;
    // Linux starts the options of every segment with timestamps with
    // NOP, NOP, TS (RFC 7323 appendix A): read from the first two words,
    // three rounds of the loop less (the same result as those rounds).
    let w0 = u64::from_le_bytes([
        o.0[0], o.0[1], o.0[2], o.0[3], o.0[4], o.0[5], o.0[6], o.0[7],
    ]);
    if end >= 12 && w0 as u32 == NOP_NOP_TS {
        let w1 = u32::from_le_bytes([o.0[8], o.0[9], o.0[10], o.0[11]]);
        unsafe {
            (*m).ts = OptRef { off: 2, len: 10 };
            (*m).tsval = ((w0 >> 32) as u32).swap_bytes();
            (*m).tsecr = w1.swap_bytes();
        }
        off = 12;
    }
    while off < end {
        let kind = o.at(off);
        if kind == KIND_EOL {
            unsafe { (*m).n_mptcp = n_mptcp };
            return OPTS_EOL;
        }
        if kind == KIND_NOP {
            off += 1;
            continue;
        }
        if off + 1 >= end {
            return OPTS_BAD;
        }
        let len = o.at(off + 1) as u32;
        if len < 2 || off + len > end || (kind == KIND_MPTCP && len < 3) {
            return OPTS_BAD;
        }
        let r = OptRef {
            off: off as u8,
            len: len as u8,
        };
        if kind == KIND_MPTCP {
            n_mptcp += 1;
            let b2 = o.at(off + 2);
            let sub = b2 >> 4;
            unsafe {
                if sub == MP_DSS && (*m).dss.len == 0 {
                    (*m).dss = r;
                } else if sub == MP_CAPABLE && (*m).capable.len == 0 {
                    (*m).capable = r;
                } else if sub == MP_JOIN && (*m).join.len == 0 {
                    (*m).join = r;
                } else if sub == MP_REMOVE_ADDR && (*m).remove_addr.len == 0 {
                    (*m).remove_addr = r;
                } else if sub == MP_FASTCLOSE {
                    (*m).fastclose = r;
                } else if sub == MP_ADD_ADDR && b2 & 1 != 0 && len >= 8 && (*m).echo.len == 0 {
                    (*m).echo = r;
                } else if sub == MP_PRIO && (len == 3 || len == 4) && (*m).prio.len == 0 {
                    (*m).prio = r;
                } else if sub == MP_ADD_ADDR
                    // Not the echo (E bit): that one is the peer
                    // acknowledging our own announcement. Without E, RFC
                    // 8684 requires the HMAC: IPv4 16 (+2 with port), IPv6
                    // 28 (+2 with port).
                    && b2 & 1 == 0
                    && matches!(len, 16 | 18 | 28 | 30)
                    && (*m).add_addr.len == 0
                {
                    (*m).add_addr = r;
                }
            }
        } else if kind == KIND_TS && len == 10 {
            let be32 =
                |i: u32| u32::from_be_bytes([o.at(i), o.at(i + 1), o.at(i + 2), o.at(i + 3)]);
            unsafe {
                (*m).ts = r;
                (*m).tsval = be32(off + 2);
                (*m).tsecr = be32(off + 6);
            }
        } else if kind == KIND_WSCALE && len == 3 {
            unsafe { (*m).wscale = r };
        }
        off += len;
    }
    unsafe { (*m).n_mptcp = n_mptcp };
    OPTS_OK
}
