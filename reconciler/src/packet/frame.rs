//! The wire encoding of every frame emptcp builds: Ethernet [+ 802.1Q] +
//! IPv4/IPv6 + TCP with the given flags, options and payload (or the bare
//! IP packet for a raw-IP link), lengths and checksums computed here. Control frames come through
//! [`super::build_control`]; the benchmarks and the synthetic traces of
//! `simulate` build data segments and handshakes with it directly.
use std::net::IpAddr;

use super::checksum::{checksum, tcp_checksum};

/// What the ACK is made of. Addresses and ports are as on the wire (the
/// sender of the forged packet is `src`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// Raw TCP options (e.g. a stored ADD_ADDR); padded here with NOPs to a
    /// multiple of 4. At most 40 bytes.
    pub options: Vec<u8>,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
    /// 802.1Q tag control (VLAN id and priority), when the flow has one.
    pub vlan_tci: Option<u16>,
    /// No link-layer header: the frame is the IP packet, for an interface
    /// that carries raw IP (tun, wwan, IP tunnels: `IFACE_RAW_IP`); the
    /// MACs and the VLAN tag are not used.
    pub raw_ip: bool,
    /// TCP flags (ACK = 0x10, SYN|ACK = 0x12, ...).
    pub flags: u8,
    /// Payload after the TCP header (empty for a pure ACK).
    pub payload: Vec<u8>,
}

/// TCP flag bits.
pub const ACK: u8 = 0x10;
pub const SYN: u8 = 0x02;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForgeError {
    #[error("TCP options of {0} bytes do not fit the 40-byte option space")]
    OptionsTooLong(usize),
    #[error("source and destination address families differ")]
    MixedFamilies,
}

/// Builds the frame.
pub fn build_ack(s: &AckSpec) -> Result<Vec<u8>, ForgeError> {
    let mut opts = s.options.clone();
    while !opts.len().is_multiple_of(4) {
        opts.push(1); // NOP
    }
    if opts.len() > 40 {
        return Err(ForgeError::OptionsTooLong(s.options.len()));
    }
    let hdr_len = 20 + opts.len();
    let tcp_len = hdr_len + s.payload.len();
    let mut tcp = Vec::with_capacity(tcp_len);
    tcp.extend_from_slice(&s.sport.to_be_bytes());
    tcp.extend_from_slice(&s.dport.to_be_bytes());
    tcp.extend_from_slice(&s.seq.to_be_bytes());
    tcp.extend_from_slice(&s.ack.to_be_bytes());
    tcp.push(((hdr_len / 4) as u8) << 4);
    tcp.push(s.flags);
    tcp.extend_from_slice(&s.window.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    tcp.extend_from_slice(&opts);
    tcp.extend_from_slice(&s.payload);
    let c = tcp_checksum(s.src, s.dst, &tcp);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + tcp_len);
    let ethertype = |f: &mut Vec<u8>, t: u16| {
        if !s.raw_ip {
            f.extend_from_slice(&t.to_be_bytes());
        }
    };
    if !s.raw_ip {
        f.extend_from_slice(&s.dst_mac);
        f.extend_from_slice(&s.src_mac);
        if let Some(tci) = s.vlan_tci {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
    }
    match (s.src, s.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            ethertype(&mut f, 0x0800);
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            ip[6] = 0x40; // DF
            ip[8] = s.ttl;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            let c = checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            ethertype(&mut f, 0x86dd);
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            ip[6] = 6;
            ip[7] = s.ttl;
            ip[8..24].copy_from_slice(&src.octets());
            ip[24..40].copy_from_slice(&dst.octets());
            f.extend_from_slice(&ip);
        }
        _ => return Err(ForgeError::MixedFamilies),
    }
    f.extend_from_slice(&tcp);
    Ok(f)
}

#[cfg(test)]
mod tests {
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    use super::*;

    /// ADD_ADDR IPv4 with HMAC (16 bytes): 198.51.100.2, id 2.
    const ADD_ADDR_V4: [u8; 16] = [30, 16, 0x30, 2, 198, 51, 100, 2, 1, 2, 3, 4, 5, 6, 7, 8];

    fn spec(src: &str, dst: &str, options: &[u8]) -> AckSpec {
        AckSpec {
            src_mac: [2, 0, 0, 0, 0, 2],
            dst_mac: [2, 0, 0, 0, 0, 1],
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: 5201,
            dport: 40000,
            seq: 0xfffffff0,
            ack: 12345,
            window: 502,
            options: options.to_vec(),
            ttl: 64,
            vlan_tci: None,
            raw_ip: false,
            flags: ACK,
            payload: Vec::new(),
        }
    }

    fn expected(s: &AckSpec) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(s.src_mac, s.dst_mac);
        let mut opts = s.options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(1);
        }
        let mut out = Vec::new();
        match (s.src, s.dst) {
            (IpAddr::V4(a), IpAddr::V4(b4)) => {
                let mut ip = etherparse::Ipv4Header::new(
                    0,
                    s.ttl,
                    etherparse::IpNumber::TCP,
                    a.octets(),
                    b4.octets(),
                )
                .unwrap();
                ip.dont_fragment = true;
                b.ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
                    .tcp(s.sport, s.dport, s.seq, s.window)
                    .ack(s.ack)
                    .options_raw(&opts)
                    .unwrap()
                    .write(&mut out, &s.payload)
                    .unwrap();
            }
            (IpAddr::V6(a), IpAddr::V6(b6)) => {
                b.ipv6(a.octets(), b6.octets(), s.ttl)
                    .tcp(s.sport, s.dport, s.seq, s.window)
                    .ack(s.ack)
                    .options_raw(&opts)
                    .unwrap()
                    .write(&mut out, &s.payload)
                    .unwrap();
            }
            _ => unreachable!(),
        }
        out
    }

    #[test]
    fn ipv4_ack_with_add_addr_matches_etherparse() {
        let s = spec("192.0.2.2", "192.0.2.1", &ADD_ADDR_V4);
        let got = build_ack(&s).unwrap();
        assert_eq!(got, expected(&s));
        let p = SlicedPacket::from_ethernet(&got).unwrap();
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!("no tcp")
        };
        assert_eq!(t.options(), &ADD_ADDR_V4);
    }

    #[test]
    fn ipv6_ack_with_padding_matches_etherparse() {
        // MP_PRIO (3 bytes) is padded with a NOP.
        let s = spec("2001:db8::2", "2001:db8::1", &[30, 3, 0x51]);
        let got = build_ack(&s).unwrap();
        assert_eq!(got, expected(&s));
        assert_eq!(got.len(), 14 + 40 + 24);
    }

    #[test]
    fn data_segment_with_payload_matches_etherparse() {
        let mut s = spec("192.0.2.2", "192.0.2.1", &[30, 8, 0x20, 0x01, 0, 0, 0, 7]);
        s.payload = (0..1000u32).map(|i| i as u8).collect();
        assert_eq!(build_ack(&s).unwrap(), expected(&s));
    }

    #[test]
    fn vlan_tag_goes_after_the_macs() {
        let mut s = spec("192.0.2.2", "192.0.2.1", &ADD_ADDR_V4);
        let plain = build_ack(&s).unwrap();
        s.vlan_tci = Some(0x2064);
        let tagged = build_ack(&s).unwrap();
        assert_eq!(&tagged[12..16], &[0x81, 0x00, 0x20, 0x64]);
        assert_eq!(&tagged[..12], &plain[..12]);
        assert_eq!(&tagged[16..], &plain[12..]);
        let p = SlicedPacket::from_ethernet(&tagged).unwrap();
        assert!(p.vlan().is_some());
    }

    /// The same ACK for a raw-IP link: exactly the IP packet etherparse
    /// builds without a link layer, for both families, VLAN tag ignored.
    #[test]
    fn raw_ip_frame_is_the_bare_ip_packet() {
        for (src, dst) in [("192.0.2.2", "192.0.2.1"), ("2001:db8::2", "2001:db8::1")] {
            let mut s = spec(src, dst, &ADD_ADDR_V4);
            s.raw_ip = true;
            s.vlan_tci = Some(0x2064);
            let got = build_ack(&s).unwrap();
            let mut want = Vec::new();
            let b = match (s.src, s.dst) {
                (IpAddr::V4(a), IpAddr::V4(b)) => {
                    let mut ip = etherparse::Ipv4Header::new(
                        0,
                        s.ttl,
                        etherparse::IpNumber::TCP,
                        a.octets(),
                        b.octets(),
                    )
                    .unwrap();
                    ip.dont_fragment = true;
                    PacketBuilder::ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
                }
                (IpAddr::V6(a), IpAddr::V6(b)) => {
                    PacketBuilder::ipv6(a.octets(), b.octets(), s.ttl)
                }
                _ => unreachable!(),
            };
            b.tcp(s.sport, s.dport, s.seq, s.window)
                .ack(s.ack)
                .options_raw(&ADD_ADDR_V4)
                .unwrap()
                .write(&mut want, &[])
                .unwrap();
            assert_eq!(got, want, "{src}");
            let p = SlicedPacket::from_ip(&got).unwrap();
            let Some(TransportSlice::Tcp(t)) = p.transport else {
                panic!("no tcp")
            };
            assert_eq!(t.options(), &ADD_ADDR_V4);
        }
    }

    #[test]
    fn rejects_oversized_options_and_mixed_families() {
        assert!(matches!(
            build_ack(&spec("192.0.2.2", "192.0.2.1", &[1; 41])),
            Err(ForgeError::OptionsTooLong(41))
        ));
        assert_eq!(
            build_ack(&spec("192.0.2.2", "2001:db8::1", &[])),
            Err(ForgeError::MixedFamilies)
        );
    }
}
