//! The frames the benchmark sends: TCP segments of numbered flows (each
//! flow id is its own 4-tuple), with the options the actions look for.
//! Built with the library's forger (`packet::build_ack`: lengths and
//! checksums computed), so strip's checksum verification accepts them.
use std::net::{IpAddr, Ipv4Addr};

use emptcp::packet::{
    ACK, AckSpec, AddAddr, AddAddrAuth, DataAck, SYN, add_addr, build_ack, dss_data_ack,
};

/// The port every measured chain selects (remote end, the server).
pub const SERVER_PORT: u16 = 5201;

/// A segment of flow `id`. Ingress: from the remote 192.0.2.x:5201 to
/// the local 198.51.100.1:port; `egress` mirrors it (local to remote).
#[derive(Debug, Clone)]
pub struct Seg {
    /// The remote end (the server) and the local port; from `id` unless
    /// set otherwise.
    pub remote: Ipv4Addr,
    pub server_port: u16,
    pub local_port: u16,
    pub egress: bool,
    /// Raw IP (no Ethernet header): a tun or other L3 link.
    pub raw_ip: bool,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub options: Vec<u8>,
    pub payload: usize,
}

impl Seg {
    /// A pure ACK of flow `id` with no options.
    pub fn new(id: u32) -> Seg {
        Seg {
            // 250 addresses × 60 000 local ports: 1.5·10^7 flows before a
            // 4-tuple repeats.
            remote: Ipv4Addr::new(192, 0, 2, 2 + (id / 60_000 % 250) as u8),
            server_port: SERVER_PORT,
            local_port: 1024 + (id % 60_000) as u16,
            egress: false,
            raw_ip: false,
            flags: ACK,
            seq: 1000,
            ack: 2000,
            window: 512,
            options: Vec::new(),
            payload: 0,
        }
    }

    pub fn with(mut self, f: impl FnOnce(&mut Seg)) -> Seg {
        f(&mut self);
        self
    }

    pub fn frame(&self) -> Vec<u8> {
        let local = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        let remote = IpAddr::V4(self.remote);
        let (src, dst, sport, dport) = if self.egress {
            (local, remote, self.local_port, self.server_port)
        } else {
            (remote, local, self.server_port, self.local_port)
        };
        let f = build_ack(&AckSpec {
            src_mac: [2, 0, 0, 0, 0, 2],
            dst_mac: [2, 0, 0, 0, 0, 1],
            src,
            dst,
            sport,
            dport,
            seq: self.seq,
            ack: self.ack,
            window: self.window,
            options: self.options.clone(),
            ttl: 64,
            vlan_tci: None,
            raw_ip: false,
            flags: self.flags,
            payload: vec![0x5a; self.payload],
        })
        .expect("options fit");
        if self.raw_ip { f[14..].to_vec() } else { f }
    }
}

/// Concatenated options (the forger pads them with NOPs).
pub fn opts(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// NOP, NOP, timestamps (12 bytes).
pub fn ts(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o
}

/// NOP, window scale `shift` (4 bytes).
pub fn wscale(shift: u8) -> Vec<u8> {
    vec![1, 3, 3, shift]
}

/// MP_CAPABLE v1 of a SYN-ACK (the sender's key, 12 bytes).
pub fn mp_capable(key: u64) -> Vec<u8> {
    let mut o = vec![30, 12, 0x01, 0x81];
    o.extend_from_slice(&key.to_be_bytes());
    o
}

/// DSS with a 4-byte data ACK only (8 bytes): a pure ACK's.
pub fn dss_ack(data_ack: u32) -> Vec<u8> {
    dss_data_ack(DataAck::Ack32(data_ack))
}

/// DSS with a 4-byte data ACK and a 4-byte mapping of `len` bytes at data
/// sequence `dsn`, subflow sequence `ssn`, no checksum (18 bytes): a data
/// segment's.
pub fn dss_map(data_ack: u32, dsn: u32, ssn: u32, len: u16) -> Vec<u8> {
    let mut o = vec![30, 18, 0x20, 0x05];
    o.extend_from_slice(&data_ack.to_be_bytes());
    o.extend_from_slice(&dsn.to_be_bytes());
    o.extend_from_slice(&ssn.to_be_bytes());
    o.extend_from_slice(&len.to_be_bytes());
    o
}

/// A non-echo IPv4 ADD_ADDR with its HMAC (16 bytes), id 2.
pub fn add_addr_v4() -> Vec<u8> {
    add_addr(&AddAddr {
        id: 2,
        addr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2)),
        port: None,
        auth: AddAddrAuth::Hmac {
            sender_key: 0x1111,
            receiver_key: 0x2222,
        },
    })
}

/// The flow's SYN-ACK with MP_CAPABLE (and window scale 7): creates the
/// flow in record_flow.
pub fn synack(id: u32) -> Seg {
    Seg::new(id).with(|s| {
        s.flags = SYN | ACK;
        s.seq = 999;
        s.options = opts(&[&mp_capable(0x1111), &wscale(7)]);
    })
}

/// The key of connection `id`'s server: each connection has its own, so
/// its token (which an MP_JOIN names) is its own too.
pub fn server_key(id: u32) -> u64 {
    0x5eed_0000_0000_0000 | u64::from(id)
}

/// The MPTCP token of `key` (RFC 8684 2.2: the most significant 32 bits
/// of SHA-256 of the key, big-endian), computed here independently of the
/// datapath's own SHA-256.
pub fn token(key: u64) -> u32 {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(key.to_be_bytes());
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

/// The SYN-ACK of connection `id` with its own server key (`server_key`):
/// a connection subflows can join by token.
pub fn synack_keyed(id: u32) -> Seg {
    synack(id).with(|s| s.options = opts(&[&mp_capable(server_key(id)), &wscale(7)]))
}

/// The local end's MP_JOIN SYN (egress) opening subflow `sub` of the
/// connection whose server key is `key` (address id 2, window scale 7):
/// the egress hook maps the subflow to the connection by the token.
pub fn join_syn_out(sub: u32, key: u64) -> Seg {
    let mut join = vec![30, 12, 0x10, 2];
    join.extend_from_slice(&token(key).to_be_bytes());
    join.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes()); // nonce
    Seg::new(sub).with(|s| {
        s.egress = true;
        s.flags = SYN;
        s.seq = 1999;
        s.ack = 0;
        s.options = opts(&[&join, &wscale(7)]);
    })
}

/// The peer's MP_JOIN SYN-ACK of subflow `sub` (truncated HMAC and nonce,
/// 16 bytes, window scale 7): record_flow notes the subflow's sequence.
pub fn join_synack(sub: u32) -> Seg {
    let mut join = vec![30, 16, 0x10, 2];
    join.extend_from_slice(&[0x77; 8]); // truncated HMAC
    join.extend_from_slice(&0x0dd_ba11_u32.to_be_bytes()); // nonce
    Seg::new(sub).with(|s| {
        s.flags = SYN | ACK;
        s.seq = 999;
        s.options = opts(&[&join, &wscale(7)]);
    })
}

/// The local end's SYN with MP_CAPABLE and window scale 7 (egress): the
/// capture records the local shift.
pub fn syn_out(id: u32) -> Seg {
    Seg::new(id).with(|s| {
        s.egress = true;
        s.flags = SYN;
        s.seq = 1999;
        s.ack = 0;
        s.options = opts(&[&[30, 4, 0x01, 0x81], &wscale(7)]);
    })
}

/// The `k`-th MSS-sized data segment of a flow: timestamps and a DSS
/// mapping, sequence numbers advancing with `k` (never a retransmission).
pub fn data(id: u32, k: u32) -> Seg {
    let off = k.wrapping_mul(1400);
    Seg::new(id).with(|s| {
        s.seq = 1000u32.wrapping_add(off);
        s.options = opts(&[
            &ts(10 + k, 20),
            &dss_map(9, 0x1000u32.wrapping_add(off), 1 + off, 1400),
        ]);
        s.payload = 1400;
    })
}

/// The server's ADD_ADDR on a pure ACK with no other MPTCP option: strip
/// stores it and drops the packet.
pub fn add_addr_ack(id: u32) -> Seg {
    Seg::new(id).with(|s| s.options = opts(&[&ts(10, 20), &add_addr_v4()]))
}

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    /// Every builder's frame decodes with etherparse, with the checksums,
    /// lengths and options the datapath expects (strip verifies the TCP
    /// checksum: a wrong one would make it skip the packet).
    #[test]
    fn frames_decode_with_valid_checksums() {
        let segs = [
            synack(7),
            syn_out(7),
            data(7, 3),
            add_addr_ack(7),
            synack_keyed(7),
            join_syn_out(8, server_key(7)),
            join_synack(8),
            Seg::new(70_000).with(|s| s.options = opts(&[&ts(1, 2), &dss_ack(5)])),
        ];
        for s in segs {
            let f = s.frame();
            let p = SlicedPacket::from_ethernet(&f).expect("decodes");
            let Some(NetSlice::Ipv4(ip)) = &p.net else {
                panic!("not IPv4")
            };
            assert_eq!(
                ip.header().header_checksum(),
                ip.header().to_header().calc_header_checksum()
            );
            let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
                panic!("not TCP")
            };
            let (src, dst) = (ip.header().source(), ip.header().destination());
            let want = tcp
                .to_header()
                .calc_checksum_ipv4_raw(src, dst, tcp.payload())
                .unwrap();
            assert_eq!(tcp.checksum(), want, "{s:?}");
            assert_eq!(tcp.options().len() % 4, 0);
            assert_eq!(&tcp.options()[..s.options.len()], &s.options[..]);
            assert_eq!(tcp.payload().len(), s.payload);
            let local = if s.egress {
                tcp.source_port()
            } else {
                tcp.destination_port()
            };
            assert_eq!(local, s.local_port);
        }
        // Raw IP: the same packet without its Ethernet header.
        let eth = data(1, 1).frame();
        let raw = data(1, 1).with(|s| s.raw_ip = true).frame();
        assert_eq!(&eth[14..], &raw[..]);
        // Distinct flows, distinct 4-tuples.
        assert_ne!(Seg::new(1).frame(), Seg::new(60_001).frame());
    }

    /// The token against RFC 8684's definition, checked on a vector
    /// computed with coreutils' sha256sum (key 0x5eed000000000007,
    /// big-endian: `printf 5eed000000000007 | xxd -r -p | sha256sum` starts
    /// e0d72b0d).
    #[test]
    fn the_join_names_the_connection_by_its_token() {
        let f = join_syn_out(8, server_key(7)).frame();
        // Ethernet 14 + IPv4 20 + TCP 20: the MP_JOIN option is first.
        let o = &f[54..66];
        assert_eq!(&o[..4], &[30, 12, 0x10, 2]);
        assert_eq!(u32::from_be_bytes([o[4], o[5], o[6], o[7]]), 0xe0d7_2b0d);
    }

    #[test]
    fn the_options_the_chains_read_fit() {
        // Recover inserts 16 bytes into a pure ACK with timestamps and a
        // data ACK (12 + 8 + 16 = 36 <= 40); set_backup 4 into the same.
        assert!(ts(0, 0).len() + dss_ack(0).len() + add_addr_v4().len() <= 40);
        assert_eq!(add_addr_v4().len(), 16);
        assert_eq!(dss_map(0, 0, 0, 0).len(), 18);
        assert!(data(0, 0).options.len() <= 40);
    }
}
