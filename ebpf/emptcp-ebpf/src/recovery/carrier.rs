//! Step 2 of the in-kernel recovery: the clone of a received segment,
//! back in TC ingress, becomes the duplicate ACK that carries the stored
//! ADD_ADDR, as the peer would have sent it:
//!
//! * the payload is cut (`bpf_skb_change_tail`), the IP length follows;
//! * the TCP header is written whole: ports kept, seq = the local end's
//!   rcv_nxt, ack/window/timestamps of the newest segment of the peer (all
//!   from `FLOWS` now), flags ACK, options = NOP NOP TS (when the
//!   connection uses timestamps and they fit) + the stored option (NOP
//!   NOP first for the 18/30-byte forms);
//! * the TCP checksum is computed afresh over the pseudo-header and the
//!   header (there is no payload left); the writes keep a
//!   `CHECKSUM_COMPLETE` skb's `csum` right (`BPF_F_RECOMPUTE_CSUM`).
//!
//! A clone that cannot be completed (the connection ended, the address was
//! withdrawn meanwhile, a helper failed) is dropped: as a copy of a data
//! segment it would reach TCP as a spurious retransmission.
use aya_ebpf::{
    bindings::BPF_F_RECOMPUTE_CSUM,
    helpers::generated::{bpf_csum_diff, bpf_skb_change_tail, bpf_skb_store_bytes},
    programs::TcContext,
};
use emptcp_common::{ADD_ADDR_MAX_LEN, FLOW_TS_SEEN, FlowKey, FlowStat, FlowState};

use super::{DROP, PASS, segment};
use crate::{
    csum::fold,
    options::{ACK, Buf64, KIND_NOP, KIND_TS},
    parse::Packet,
    stats,
};

/// Completes the clone for stored slot `slot`; its verdict.
#[inline(always)]
pub fn complete(ctx: &TcContext, slot: u32) -> i32 {
    if build(ctx, slot).is_some() {
        stats::event(FlowStat::AddAddrRecoveredKernel);
        PASS
    } else {
        stats::event(FlowStat::KernelRecoveryFailed);
        DROP
    }
}

#[inline(always)]
fn build(ctx: &TcContext, slot: u32) -> Option<()> {
    let (pkt, key) = segment(ctx)?;
    let f = crate::flow::get(&key)?;
    // The mark of the segment the clone was made from.
    unsafe { (*ctx.skb.skb).mark = f.mark };
    if f.stored & (1 << slot) == 0 {
        return None;
    }
    let v = crate::flow::stored_addr(&key, f, slot)?;
    if !matches!(v.len, 16 | 18 | 28 | 30) {
        return None;
    }
    let mut h = Buf64::zeroed();
    let len = header(&mut h, &pkt, f, &v.bytes, v.len as u32)?;
    let ip_len = (pkt.l4_off - pkt.l3_off) as u32 + len;
    let skb = ctx.skb.skb;
    if unsafe { bpf_skb_change_tail(skb, pkt.l4_off as u32 + len, 0) } != 0 {
        return None;
    }
    set_ip_length(ctx, &pkt, ip_len)?;
    let sum = tcp_sum(&key, &h, len)?;
    h.0[16..18].copy_from_slice(&sum.to_ne_bytes());
    // A size the verifier can bound on both sides (20..=60).
    let n = core::hint::black_box(len) & 0x3c;
    if n < 20 {
        return None;
    }
    let r = unsafe {
        bpf_skb_store_bytes(
            skb as *mut _,
            pkt.l4_off as u32,
            h.0.as_ptr() as *const _,
            n,
            BPF_F_RECOMPUTE_CSUM as u64,
        )
    };
    (r == 0).then_some(())
}

/// Writes the duplicate ACK's TCP header into `h` (checksum 0); its
/// length (a multiple of 4, at most 60).
#[inline(always)]
fn header(
    h: &mut Buf64,
    pkt: &Packet,
    f: &FlowState,
    opt: &[u8; ADD_ADDR_MAX_LEN],
    len: u32,
) -> Option<u32> {
    let n = (len + 3) & !3;
    h.0[0..2].copy_from_slice(&pkt.sport.to_be_bytes());
    h.0[2..4].copy_from_slice(&pkt.dport.to_be_bytes());
    h.0[4..8].copy_from_slice(&f.rcv_nxt.to_be_bytes());
    h.0[8..12].copy_from_slice(&f.ack.to_be_bytes());
    h.0[13] = ACK;
    h.0[14..16].copy_from_slice(&f.window.to_be_bytes());
    // Timestamps help PAWS accept the segment; only when they fit beside
    // the option (not beside the 30-byte IPv6 form with a port).
    let ts = f.flags & FLOW_TS_SEEN != 0 && n + 12 <= 40;
    let total = if ts {
        h.0[20..24].copy_from_slice(&[KIND_NOP, KIND_NOP, KIND_TS, 10]);
        h.0[24..28].copy_from_slice(&f.tsval.to_be_bytes());
        h.0[28..32].copy_from_slice(&f.tsecr.to_be_bytes());
        put_option::<32>(h, opt, n != len);
        32 + n
    } else {
        put_option::<20>(h, opt, n != len);
        20 + n
    };
    if total > 60 {
        return None;
    }
    // Bytes past the header are left over from the option's zero tail;
    // they are not written to the packet (only `total` bytes are).
    h.0[12] = ((total / 4) as u8) << 4;
    Some(total)
}

/// Writes the stored option at byte `AT` of the header, after two NOPs
/// when `pad` (the 18/30-byte forms). The stored bytes are zero after the
/// option's length: copying all of them writes the option and its zero
/// tail at constant offsets (the verifier needs them constant).
#[inline(always)]
fn put_option<const AT: usize>(h: &mut Buf64, opt: &[u8; ADD_ADDR_MAX_LEN], pad: bool) {
    if pad {
        h.0[AT] = KIND_NOP;
        h.0[AT + 1] = KIND_NOP;
        h.0[AT + 2..AT + 2 + ADD_ADDR_MAX_LEN].copy_from_slice(opt);
    } else {
        h.0[AT..AT + ADD_ADDR_MAX_LEN].copy_from_slice(opt);
    }
}

/// Sets the IP length field to `ip_len` (IPv4: total length + header
/// checksum; IPv6: payload length, `ip_len` minus the fixed header).
#[inline(always)]
fn set_ip_length(ctx: &TcContext, pkt: &Packet, ip_len: u32) -> Option<()> {
    let skb = ctx.skb.skb;
    let l3 = pkt.l3_off as u32;
    if pkt.family == 4 {
        let mut hdr = [0u8; 20];
        if unsafe {
            aya_ebpf::helpers::generated::bpf_skb_load_bytes(
                skb as *const _,
                l3,
                hdr.as_mut_ptr() as *mut _,
                20,
            )
        } != 0
        {
            return None;
        }
        let old_len = u16::from_be_bytes([hdr[2], hdr[3]]);
        let old_sum = u16::from_be_bytes([hdr[10], hdr[11]]);
        let new_len = ip_len as u16;
        let new_sum = crate::csum::replace(old_sum, old_len, new_len);
        let mut w = [0u8; 4];
        w[0..2].copy_from_slice(&new_len.to_be_bytes());
        let c = new_sum.to_be_bytes();
        // Length and checksum change together, so the header still sums
        // to all ones; both writes keep a CHECKSUM_COMPLETE csum right.
        let ok = unsafe {
            bpf_skb_store_bytes(
                skb,
                l3 + 2,
                w.as_ptr() as *const _,
                2,
                BPF_F_RECOMPUTE_CSUM as u64,
            ) == 0
                && bpf_skb_store_bytes(
                    skb,
                    l3 + 10,
                    c.as_ptr() as *const _,
                    2,
                    BPF_F_RECOMPUTE_CSUM as u64,
                ) == 0
        };
        return ok.then_some(());
    }
    let p = ((ip_len - 40) as u16).to_be_bytes();
    let r = unsafe {
        bpf_skb_store_bytes(
            skb,
            l3 + 4,
            p.as_ptr() as *const _,
            2,
            BPF_F_RECOMPUTE_CSUM as u64,
        )
    };
    (r == 0).then_some(())
}

/// The TCP checksum of header `h` (`len` bytes, no payload) from the
/// peer (`key.remote`) to the local end, in memory order.
#[inline(always)]
fn tcp_sum(key: &FlowKey, h: &Buf64, len: u32) -> Option<u16> {
    let s = crate::csum::pseudo_sum(key, len);
    let s = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            h.0.as_ptr() as *mut u32,
            len & 0x3c,
            s,
        )
    };
    if s < 0 {
        return None;
    }
    Some(!fold(s as u32 as u64))
}
