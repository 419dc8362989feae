//! Header parsing for the hot path: Ethernet (+ up to two 802.1Q/802.1ad
//! tags), IPv4 (with options, no fragments) or IPv6 (TCP as the first next
//! header), and the fixed TCP header. Anything else is "not for us" and the
//! caller passes the packet untouched.
use aya_ebpf::{
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};

use crate::words::load64;

/// What the parser and the option scan need from a program's context, so
/// the XDP entry and the TC egress entry share them.
pub trait Frame {
    /// Start and end of the directly accessible bytes (an skb's linear part).
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// Length of the whole packet (an skb may hold more than its linear
    /// part, in page fragments).
    fn frame_len(&self) -> u32;
    /// Copies `len` bytes at `off` (anywhere in the packet) into `buf`.
    fn load_into(&self, off: u32, buf: *mut u8, len: u32) -> bool;
}

impl Frame for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
    #[inline(always)]
    fn frame_len(&self) -> u32 {
        (XdpContext::data_end(self) - XdpContext::data(self)) as u32
    }
    #[inline(always)]
    fn load_into(&self, off: u32, buf: *mut u8, len: u32) -> bool {
        unsafe { bpf_xdp_load_bytes(self.ctx, off, buf as *mut _, len) == 0 }
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
    #[inline(always)]
    fn frame_len(&self) -> u32 {
        self.len()
    }
    #[inline(always)]
    fn load_into(&self, off: u32, buf: *mut u8, len: u32) -> bool {
        unsafe { bpf_skb_load_bytes(self.skb.skb as *const _, off, buf as *mut _, len) == 0 }
    }
}

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
pub const TCP_HLEN: usize = 20;

/// What the selectors and actions need to know about a TCP packet.
pub struct Packet {
    pub l3_off: usize,
    pub l4_off: usize,
    /// 4 or 6.
    pub family: u8,
    /// Source / destination address; IPv4 uses the first 4 bytes. Filled
    /// by [`addresses`] only for packets a chain may take (most packets
    /// are rejected before they are needed).
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte.
    pub flags: u8,
    /// TCP header length (data offset * 4), 20..=60.
    pub doff: u8,
    /// TCP header + payload according to the IP length fields (checked
    /// against the frame by the option scan).
    pub seg_len: u16,
}

/// A pointer to `len` bytes at `off`, if they are inside the packet.
#[inline(always)]
pub fn bytes_at<C: Frame>(ctx: &C, off: usize, len: usize) -> Option<*mut u8> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + len > end {
        return None;
    }
    Some((start + off) as *mut u8)
}

#[inline(always)]
fn be16(p: *const u8) -> u16 {
    unsafe { u16::from_be_bytes([*p, *p.add(1)]) }
}

/// Copies the addresses into `pkt` (for selectors and the flow key).
#[inline(always)]
pub fn addresses<C: Frame>(ctx: &C, pkt: &mut Packet) -> Option<()> {
    if pkt.family == 4 {
        // Source and destination are adjacent: one load for both (the
        // target is little-endian: the low half is the first 4 bytes).
        let w = load64(bytes_at(ctx, pkt.l3_off + 12, 8)?);
        unsafe {
            (pkt.src.as_mut_ptr() as *mut u32).write_unaligned(w as u32);
            (pkt.dst.as_mut_ptr() as *mut u32).write_unaligned((w >> 32) as u32);
        }
    } else {
        let a = bytes_at(ctx, pkt.l3_off + 8, 32)?;
        let (src, dst) = (
            pkt.src.as_mut_ptr() as *mut u64,
            pkt.dst.as_mut_ptr() as *mut u64,
        );
        unsafe {
            src.write_unaligned(load64(a));
            src.add(1).write_unaligned(load64(a.add(8)));
            dst.write_unaligned(load64(a.add(16)));
            dst.add(1).write_unaligned(load64(a.add(24)));
        }
    }
    Some(())
}

/// Sequence, acknowledgment and window of the TCP header at `l4_off`
/// (read only for packets a chain takes).
#[inline(always)]
pub fn tcp_numbers<C: Frame>(ctx: &C, l4_off: usize) -> Option<(u32, u32, u16)> {
    let t = bytes_at(ctx, l4_off, TCP_HLEN)?;
    // Sequence and acknowledgment numbers are adjacent: one load.
    let w = load64(unsafe { t.add(4) });
    let (seq, ack) = (u32::from_be(w as u32), u32::from_be((w >> 32) as u32));
    Some((seq, ack, be16(unsafe { t.add(14) })))
}

/// The L3 protocol and its offset: after Ethernet (+ up to two tags), or,
/// on a raw-IP link (`raw`), at byte 0, named by its version nibble.
#[inline(always)]
fn link<C: Frame>(ctx: &C, raw: bool) -> Option<(u16, usize)> {
    if raw {
        // 20 bytes (the shortest IP header), not 1: `end > start` alone
        // gives the verifier no packet range.
        let v = unsafe { *bytes_at(ctx, 0, 20)? } >> 4;
        return match v {
            4 => Some((ETH_P_IP, 0)),
            6 => Some((ETH_P_IPV6, 0)),
            _ => None,
        };
    }
    let eth = bytes_at(ctx, 0, ETH_HLEN)?;
    let mut proto = be16(unsafe { eth.add(12) });
    let mut l3_off = ETH_HLEN;
    // Two tags at most (QinQ); unrolled so the verifier sees constant offsets.
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let tag = bytes_at(ctx, l3_off, 4)?;
        proto = be16(unsafe { tag.add(2) });
        l3_off += 4;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            let tag = bytes_at(ctx, l3_off, 4)?;
            proto = be16(unsafe { tag.add(2) });
            l3_off += 4;
        }
    }
    Some((proto, l3_off))
}

/// Parses the packet (`raw`: the link has no Ethernet header, see
/// `IFACE_RAW_IP`); `None` for anything that is not a well-formed,
/// unfragmented TCP segment over IPv4 or IPv6 whose IP length covers at
/// least the fixed TCP header. That leaves out, untouched, packets larger
/// than their header can say: IPv4 total length 0 (BIG TCP, GRO/GSO
/// super-packets) and IPv6 payload length 0 (jumbograms, BIG TCP).
#[inline(always)]
pub fn parse_tcp<C: Frame>(ctx: &C, raw: bool) -> Option<Packet> {
    let (proto, l3_off) = link(ctx, raw)?;
    let (family, l4_off, seg_len) = match proto {
        ETH_P_IP => {
            let ip = bytes_at(ctx, l3_off, 20)?;
            let vihl = unsafe { *ip };
            if vihl >> 4 != 4 {
                return None;
            }
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if ihl < 20 {
                return None;
            }
            // Fragments (MF set or an offset): only the first carries the
            // TCP header, and rewriting a fragment would be wrong anyway.
            if be16(unsafe { ip.add(6) }) & 0x3fff != 0 {
                return None;
            }
            if unsafe { *ip.add(9) } != IPPROTO_TCP {
                return None;
            }
            let total = be16(unsafe { ip.add(2) }) as usize;
            if total < ihl + TCP_HLEN {
                return None;
            }
            (4u8, l3_off + ihl, (total - ihl) as u16)
        }
        ETH_P_IPV6 => {
            let ip = bytes_at(ctx, l3_off, 40)?;
            if unsafe { *ip } >> 4 != 6 {
                return None;
            }
            // Extension headers are passed untouched: never guess where TCP starts.
            if unsafe { *ip.add(6) } != IPPROTO_TCP {
                return None;
            }
            let payload = be16(unsafe { ip.add(4) });
            if (payload as usize) < TCP_HLEN {
                return None;
            }
            (6u8, l3_off + 40, payload)
        }
        _ => return None,
    };
    let tcp = bytes_at(ctx, l4_off, TCP_HLEN)?;
    let doff = ((unsafe { *tcp.add(12) } >> 4) as usize) * 4;
    if doff < TCP_HLEN {
        return None;
    }
    // The whole TCP header (with options) must be in the packet.
    bytes_at(ctx, l4_off, doff)?;
    Some(Packet {
        l3_off,
        l4_off,
        family,
        src: [0; 16],
        dst: [0; 16],
        sport: be16(tcp),
        dport: be16(unsafe { tcp.add(2) }),
        flags: unsafe { *tcp.add(13) },
        doff: doff as u8,
        seg_len,
    })
}
