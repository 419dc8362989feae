//! Synthetic traces for benchmarks and large-scale tests: MPTCP downloads
//! as a client on 192.0.2.0/24 would see them from servers in
//! 198.51.100.0/24 (port 5201). Each connection: SYN (MP_CAPABLE), SYN-ACK
//! (server key), third ACK (both keys), the server's ADD_ADDR on a pure ACK,
//! data segments with timestamps and a DSS mapping, the client's ACKs every
//! second segment with a DSS data ACK, and a FIN each way. Written as an
//! Ethernet pcap with the payload cut at 128 bytes (like `tcpdump -s 128`),
//! so a 10^6-packet trace stays near 150 MB and exercises the zero-fill.
use std::{net::IpAddr, path::Path};

use super::pcap_out::{ETHERNET, PcapWriter};
use crate::packet::{AckSpec, build_ack};

const SNAPLEN: usize = 128;
const MSS: usize = 1448;
const FIN_ACK: u8 = 0x11;
const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;

struct Conn {
    client: IpAddr,
    server: IpAddr,
    cport: u16,
    ckey: u64,
    skey: u64,
}

fn ts(v: u32, e: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&v.to_be_bytes());
    o.extend_from_slice(&e.to_be_bytes());
    o
}

/// DSS with a 4-byte data ACK and, when `map` is set, a 4-byte mapping of
/// `len` bytes at data sequence `dsn` (subflow sequence `ssn`).
fn dss(ack: u32, map: Option<(u32, u32, u16)>) -> Vec<u8> {
    let mut o = vec![30, 8, 0x20, 0x01];
    o.extend_from_slice(&ack.to_be_bytes());
    if let Some((dsn, ssn, len)) = map {
        o[1] = 18;
        o[3] = 0x05;
        o.extend_from_slice(&dsn.to_be_bytes());
        o.extend_from_slice(&ssn.to_be_bytes());
        o.extend_from_slice(&len.to_be_bytes());
    }
    o
}

/// One segment: its direction, numbers, flags, options, and whether it
/// carries a full-sized payload.
struct Seg {
    from_server: bool,
    seq: u32,
    ack: u32,
    flags: u8,
    opts: Vec<u8>,
    data: bool,
}

struct Gen {
    w: PcapWriter,
    ts_ns: u64,
    payload: Vec<u8>,
}

impl Gen {
    fn put(&mut self, c: &Conn, s: Seg) -> std::io::Result<()> {
        let Seg {
            from_server,
            seq,
            ack,
            flags,
            opts,
            data,
        } = s;
        let (src, dst, sport, dport) = if from_server {
            (c.server, c.client, 5201, c.cport)
        } else {
            (c.client, c.server, c.cport, 5201)
        };
        let f = build_ack(&AckSpec {
            src_mac: [2, 0, 0, 0, 0, u8::from(from_server) + 1],
            dst_mac: [2, 0, 0, 0, 0, 2 - u8::from(from_server)],
            src,
            dst,
            sport,
            dport,
            seq,
            ack,
            window: 502,
            options: opts,
            ttl: 64,
            vlan_tci: None,
            raw_ip: false,
            flags,
            payload: if data {
                self.payload.clone()
            } else {
                Vec::new()
            },
        })
        .map_err(std::io::Error::other)?;
        self.ts_ns += 10_000;
        self.w.packet(self.ts_ns, &f, SNAPLEN)
    }

    /// One connection of `segments` data segments; returns packets written.
    fn connection(&mut self, c: &Conn, segments: u32) -> std::io::Result<u64> {
        let start = self.w.written;
        let (cs, ss) = (1000u32, 5000u32);
        let mut mpc = vec![30, 4, 0x01, 0x81];
        self.put(
            c,
            Seg {
                from_server: false,
                seq: cs,
                ack: 0,
                flags: SYN,
                opts: mpc.clone(),
                data: false,
            },
        )?;
        mpc = vec![30, 12, 0x01, 0x01];
        mpc.extend_from_slice(&c.skey.to_be_bytes());
        self.put(
            c,
            Seg {
                from_server: true,
                seq: ss,
                ack: cs + 1,
                flags: SYN_ACK,
                opts: mpc,
                data: false,
            },
        )?;
        let mut third = vec![30, 20, 0x01, 0x81];
        third.extend_from_slice(&c.ckey.to_be_bytes());
        third.extend_from_slice(&c.skey.to_be_bytes());
        self.put(
            c,
            Seg {
                from_server: false,
                seq: cs + 1,
                ack: ss + 1,
                flags: ACK,
                opts: third,
                data: false,
            },
        )?;
        let mut aa = vec![30, 16, 0x30, 2, 198, 51, 100, 2];
        aa.extend_from_slice(&c.skey.to_le_bytes()); // stands in for the HMAC
        self.put(
            c,
            Seg {
                from_server: true,
                seq: ss + 1,
                ack: cs + 1,
                flags: ACK,
                opts: aa,
                data: false,
            },
        )?;
        let mut seq = ss + 1;
        for i in 0..segments {
            let dsn = i * MSS as u32;
            let mut o = ts(i, i);
            o.extend(dss(1, Some((dsn, seq - ss, MSS as u16))));
            self.put(
                c,
                Seg {
                    from_server: true,
                    seq,
                    ack: cs + 1,
                    flags: ACK,
                    opts: o,
                    data: true,
                },
            )?;
            seq = seq.wrapping_add(MSS as u32);
            if i % 2 == 1 {
                let mut o = ts(i, i);
                o.extend(dss(dsn + MSS as u32, None));
                self.put(
                    c,
                    Seg {
                        from_server: false,
                        seq: cs + 1,
                        ack: seq,
                        flags: ACK,
                        opts: o,
                        data: false,
                    },
                )?;
            }
        }
        self.put(
            c,
            Seg {
                from_server: true,
                seq,
                ack: cs + 1,
                flags: FIN_ACK,
                opts: Vec::new(),
                data: false,
            },
        )?;
        self.put(
            c,
            Seg {
                from_server: false,
                seq: cs + 1,
                ack: seq + 1,
                flags: FIN_ACK,
                opts: Vec::new(),
                data: false,
            },
        )?;
        Ok(self.w.written - start)
    }
}

/// Writes about `packets` packets (whole connections) of connections with
/// `segments` data segments each; returns the packets written.
pub fn generate(out: &Path, packets: u64, segments: u32) -> std::io::Result<u64> {
    let mut g = Gen {
        w: PcapWriter::create(out, ETHERNET)?,
        ts_ns: 1_700_000_000_000_000_000,
        payload: vec![0x5a; MSS],
    };
    let mut n = 0u64;
    while g.w.written < packets {
        let c = Conn {
            client: IpAddr::from([192, 0, 2, 1 + (n / 60000 % 200) as u8]),
            server: IpAddr::from([198, 51, 100, 2 + (n % 200) as u8]),
            cport: 1024 + (n % 60000) as u16,
            ckey: 0x1111_0000_0000_0000 ^ n,
            skey: 0x2222_0000_0000_0000 ^ n.rotate_left(17),
        };
        g.connection(&c, segments)?;
        n += 1;
    }
    let written = g.w.written;
    g.w.finish()?;
    Ok(written)
}
