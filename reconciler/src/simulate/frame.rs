//! From a captured packet to the Ethernet frame the datapath sees, and the
//! few header fields the replay needs (addresses, ports, flags, options).
//! Independent of the eBPF parser on purpose: the report compares what the
//! datapath left with what it was given.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::trace::{Link, Packet};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// Stand-in MACs for link layers without one (locally administered).
pub const LOCAL_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];
pub const REMOTE_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x02];

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// Linux packet types of the cooked captures.
const PACKET_OUTGOING: u16 = 4;

/// The frame to replay and what the capture says about it.
#[derive(Debug)]
pub struct Frame {
    /// An Ethernet frame (the stand-in interfaces are Ethernet).
    pub bytes: Vec<u8>,
    /// The Ethernet header was made up (the capture had none).
    pub synthetic_l2: bool,
    /// Cooked captures say whether the host sent the packet.
    pub outgoing: Option<bool>,
    /// Bytes appended as zeros because the snaplen cut the payload.
    pub zero_filled: usize,
}

/// Why a packet cannot be replayed.
#[derive(Debug, PartialEq, Eq)]
pub enum Unreplayable {
    /// The snaplen cut into the IP or TCP header.
    HeadersCut { captured: usize, needed: usize },
}

/// Builds the Ethernet frame for `p`; `None` for non-IP cooked packets.
pub fn ethernet(p: &Packet) -> Result<Option<Frame>, Unreplayable> {
    let d = &p.data;
    let (l3, proto, outgoing) = match p.link {
        Link::Ethernet => {
            let mut f = Frame {
                bytes: d.clone(),
                synthetic_l2: false,
                outgoing: None,
                zero_filled: 0,
            };
            fill(&mut f, p.orig_len)?;
            return Ok(Some(f));
        }
        Link::RawIp => match d.first().map(|b| b >> 4) {
            Some(4) => (0, ETH_P_IP, None),
            Some(6) => (0, ETH_P_IPV6, None),
            _ => return Ok(None),
        },
        Link::Sll if d.len() >= 16 => (16, be16(d, 14), Some(be16(d, 0) == PACKET_OUTGOING)),
        Link::Sll2 if d.len() >= 20 => (20, be16(d, 0), Some(u16::from(d[10]) == PACKET_OUTGOING)),
        _ => return Ok(None),
    };
    if proto != ETH_P_IP && proto != ETH_P_IPV6 {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(ETH_HLEN + d.len() - l3 + 64);
    let (dst, src) = if outgoing == Some(true) {
        (REMOTE_MAC, LOCAL_MAC)
    } else {
        (LOCAL_MAC, REMOTE_MAC)
    };
    bytes.extend_from_slice(&dst);
    bytes.extend_from_slice(&src);
    bytes.extend_from_slice(&proto.to_be_bytes());
    bytes.extend_from_slice(&d[l3..]);
    let orig = (p.orig_len as usize).saturating_sub(l3) + ETH_HLEN;
    let mut f = Frame {
        bytes,
        synthetic_l2: true,
        outgoing,
        zero_filled: 0,
    };
    fill(&mut f, orig as u32)?;
    Ok(Some(f))
}

/// A packet the snaplen cut in its payload gets zeros for the missing
/// bytes (the datapath reads only headers; lengths stay consistent). A cut
/// in the headers makes it unreplayable.
fn fill(f: &mut Frame, orig_len: u32) -> Result<(), Unreplayable> {
    let orig = orig_len as usize;
    if f.bytes.len() >= orig {
        return Ok(());
    }
    let needed = headers_end(&f.bytes).unwrap_or(usize::MAX);
    if needed == usize::MAX || f.bytes.len() < needed {
        if let Some(ip) = l3_of(&f.bytes) {
            // Only TCP headers matter to the datapath; anything else cut is
            // still replayed (it passes the entry untouched).
            if ip.1 != 6 {
                f.zero_filled = orig - f.bytes.len();
                f.bytes.resize(orig, 0);
                return Ok(());
            }
        }
        return Err(Unreplayable::HeadersCut {
            captured: f.bytes.len(),
            needed: if needed == usize::MAX { 0 } else { needed },
        });
    }
    f.zero_filled = orig - f.bytes.len();
    f.bytes.resize(orig, 0);
    Ok(())
}

fn be16(d: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([d[i], d[i + 1]])
}
fn be32(d: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]])
}

/// Offset of the IP header (after Ethernet and up to two VLAN tags) and the
/// transport protocol (with the transport header's offset).
fn l3_of(b: &[u8]) -> Option<(usize, u8, usize)> {
    let mut off = 12;
    let mut proto = be16(b.get(..off + 2)?, off);
    for _ in 0..2 {
        if proto == 0x8100 || proto == 0x88a8 {
            off += 4;
            proto = be16(b.get(..off + 2)?, off);
        }
    }
    let l3 = off + 2;
    match proto {
        ETH_P_IP => {
            let v = b.get(l3..l3 + 20)?;
            let ihl = usize::from(v[0] & 0x0f) * 4;
            // Later fragments carry no TCP header.
            let frag_off = be16(v, 6) & 0x1fff;
            let p = if frag_off != 0 { 0 } else { v[9] };
            Some((l3, p, l3 + ihl))
        }
        ETH_P_IPV6 => {
            let v = b.get(l3..l3 + 40)?;
            Some((l3, v[6], l3 + 40))
        }
        _ => None,
    }
}

/// End of the TCP header (where the payload starts); `None` when the packet
/// is not TCP or its header lengths cannot be read.
fn headers_end(b: &[u8]) -> Option<usize> {
    let (_, proto, l4) = l3_of(b)?;
    if proto != 6 {
        return None;
    }
    let doff = usize::from(b.get(l4 + 12)? >> 4) * 4;
    Some(l4 + doff.max(20))
}

/// The TCP/IP fields of a frame.
#[derive(Debug, Clone)]
pub struct Tcp {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub window: u16,
    /// TCP payload bytes (from the IP length).
    pub payload: u32,
    /// The option bytes.
    pub options: Vec<u8>,
}

/// The IP addresses of a frame (any protocol), for the direction.
pub fn addresses(b: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let (l3, _, _) = l3_of(b)?;
    ip_addrs(b, l3)
}

fn ip_addrs(b: &[u8], l3: usize) -> Option<(IpAddr, IpAddr)> {
    if b.get(l3)? >> 4 == 4 {
        let v = b.get(l3..l3 + 20)?;
        let a = |i: usize| IpAddr::V4(Ipv4Addr::new(v[i], v[i + 1], v[i + 2], v[i + 3]));
        Some((a(12), a(16)))
    } else {
        let v = b.get(l3..l3 + 40)?;
        let a = |i: usize| {
            let o: [u8; 16] = v[i..i + 16].try_into().expect("16 bytes");
            IpAddr::V6(Ipv6Addr::from(o))
        };
        Some((a(8), a(24)))
    }
}

/// Parses a TCP frame; `None` for anything else or a malformed header.
pub fn tcp(b: &[u8]) -> Option<Tcp> {
    let (l3, proto, l4) = l3_of(b)?;
    if proto != 6 {
        return None;
    }
    let (src, dst) = ip_addrs(b, l3)?;
    let ip_end = if src.is_ipv4() {
        l3 + usize::from(be16(b, l3 + 2))
    } else {
        l4 + usize::from(be16(b, l3 + 4))
    };
    let h = b.get(l4..l4 + 20)?;
    let doff = usize::from(h[12] >> 4) * 4;
    if doff < 20 {
        return None;
    }
    let options = b.get(l4 + 20..l4 + doff)?.to_vec();
    Some(Tcp {
        src,
        dst,
        sport: be16(h, 0),
        dport: be16(h, 2),
        flags: h[13],
        window: be16(h, 14),
        payload: ip_end.saturating_sub(l4 + doff) as u32,
        options,
    })
}

/// Sequence number of a TCP frame (for the report's ordering checks).
pub fn seq(b: &[u8]) -> Option<u32> {
    let (_, proto, l4) = l3_of(b)?;
    (proto == 6).then(|| b.get(l4..l4 + 8).map(|h| be32(h, 4)))?
}

/// MPTCP option subtypes (RFC 8684 3).
pub const MP_CAPABLE: u8 = 0;
pub const MP_JOIN: u8 = 1;
pub const ADD_ADDR: u8 = 3;
pub const MP_PRIO: u8 = 5;

/// The MPTCP options (kind 30) of an option block, as (subtype, bytes).
pub fn mptcp_options(opts: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    break;
                }
                if kind == 30 && len >= 3 {
                    out.push((opts[i + 2] >> 4, &opts[i..i + len]));
                }
                i += len;
            }
        }
    }
    out
}

/// Removes the Ethernet header the replay made up, giving the IP packet.
pub fn strip_synthetic(frame: &[u8]) -> &[u8] {
    frame.get(ETH_HLEN..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(link: Link, data: Vec<u8>, orig: u32) -> Packet {
        Packet {
            number: 1,
            ts_ns: 0,
            link,
            iface: None,
            data,
            orig_len: orig,
        }
    }

    fn ipv4_tcp(payload: usize) -> Vec<u8> {
        let total = 20 + 20 + payload;
        let mut v = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            6,
            0,
            0,
        ];
        v.extend_from_slice(&[192, 0, 2, 2, 192, 0, 2, 1]);
        v.extend_from_slice(&[
            0x14, 0x51, 0x9c, 0x40, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 1, 0, 0, 0, 0, 0,
        ]);
        v.resize(total, 0xaa);
        v
    }

    #[test]
    fn raw_ip_gets_an_ethernet_header_and_zero_fill() {
        let mut d = ipv4_tcp(100);
        d.truncate(60);
        let f = ethernet(&pkt(Link::RawIp, d, 140)).unwrap().unwrap();
        assert!(f.synthetic_l2);
        assert_eq!(f.bytes.len(), 154);
        assert_eq!(f.zero_filled, 80);
        let t = tcp(&f.bytes).unwrap();
        assert_eq!((t.sport, t.dport, t.payload), (5201, 40000, 100));
    }

    #[test]
    fn headers_cut_are_unreplayable() {
        let mut d = ipv4_tcp(100);
        d.truncate(30);
        let e = ethernet(&pkt(Link::RawIp, d, 140)).unwrap_err();
        assert!(
            matches!(e, Unreplayable::HeadersCut { captured: 44, .. }),
            "{e:?}"
        );
        // Cut after the data offset byte, before the end of the header.
        let mut d = ipv4_tcp(100);
        d[32] = 0x80; // 32-byte TCP header
        d.truncate(50);
        let e = ethernet(&pkt(Link::RawIp, d, 140)).unwrap_err();
        assert_eq!(
            e,
            Unreplayable::HeadersCut {
                captured: 64,
                needed: 66
            }
        );
    }

    #[test]
    fn sll2_outgoing_is_sent() {
        let mut d = vec![0u8; 20];
        d[0..2].copy_from_slice(&ETH_P_IP.to_be_bytes());
        d[10] = 4;
        d.extend(ipv4_tcp(0));
        let f = ethernet(&pkt(Link::Sll2, d, 60)).unwrap().unwrap();
        assert_eq!(f.outgoing, Some(true));
        assert_eq!(&f.bytes[6..12], &LOCAL_MAC);
    }

    #[test]
    fn mptcp_options_are_listed() {
        let o = [
            1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 30, 8, 0x30, 1, 198, 51, 100, 2,
        ];
        let m = mptcp_options(&o);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0, ADD_ADDR);
        assert_eq!(m[0].1.len(), 8);
    }
}
