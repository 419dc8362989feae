//! From what the datapath captured about a subflow to the control frame
//! packet copy sends on it: a duplicate ACK from the local end to the peer
//! with the rule's MPTCP option, built by `packet::build_control`.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use emptcp_common::FlowKey;

use super::rules::Payload;
use crate::packet::{
    AddAddr, AddAddrAuth, ControlAck, DataAck, Flow, ForgeError, Signal, Timestamps, build_control,
};

/// A subflow as the local stack last sent on it (egress capture).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Captured {
    /// Local = the source of what the local stack sends.
    pub key: FlowKey,
    /// Destination then source MAC of the newest frame sent.
    pub mac: [u8; 12],
    /// 802.1Q TCI of that frame (0: untagged).
    pub vlan_tci: u16,
    /// Newest sequence number + payload sent: the peer's rcv_nxt.
    pub snd_nxt: u32,
    /// Acknowledgment number sent: the local rcv_nxt.
    pub ack: u32,
    pub window: u16,
    pub timestamps: Option<Timestamps>,
    pub data_ack: Option<DataAck>,
    /// (local key, remote key) of the connection, when the handshake was
    /// captured (needed for an ADD_ADDR's HMAC).
    pub keys: Option<(u64, u64)>,
}

/// Why no frame could be built.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("ADD_ADDR needs the connection's keys, and its MP_CAPABLE handshake was not captured")]
    NoKeys,
    #[error("announced address {0} is not of the subflow's family")]
    Family(IpAddr),
    #[error(transparent)]
    Forge(#[from] ForgeError),
}

fn addr(family: u8, b: &[u8; 16]) -> IpAddr {
    if family == 4 {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*b))
    }
}

/// The frame for `payload` on subflow `c`, sent on an interface that
/// carries raw IP (`raw_ip`: the bare IP packet) or Ethernet.
pub fn frame(c: &Captured, payload: &Payload, raw_ip: bool) -> Result<Vec<u8>, CopyError> {
    let k = &c.key;
    let src = addr(k.family, &k.local);
    let dst = addr(k.family, &k.remote);
    let flow = Flow {
        dst_mac: c.mac[..6].try_into().expect("6 bytes"),
        src_mac: c.mac[6..].try_into().expect("6 bytes"),
        src,
        dst,
        sport: k.local_port,
        dport: k.remote_port,
        vlan_tci: (c.vlan_tci != 0).then_some(c.vlan_tci),
        raw_ip,
        ttl: 64,
    };
    let signal = match *payload {
        Payload::MpPrio { backup } => Signal::MpPrio {
            backup,
            addr_id: None,
        },
        Payload::AddAddr { address, id, port } => {
            if address.is_ipv4() != src.is_ipv4() {
                return Err(CopyError::Family(address));
            }
            let (local, remote) = c.keys.ok_or(CopyError::NoKeys)?;
            Signal::AddAddr(AddAddr {
                id,
                addr: address,
                port,
                auth: AddAddrAuth::Hmac {
                    sender_key: local,
                    receiver_key: remote,
                },
            })
        }
    };
    let ack = ControlAck {
        seq: c.snd_nxt,
        ack: c.ack,
        window: c.window,
        timestamps: c.timestamps,
        data_ack: c.data_ack,
        signal: Some(signal),
    };
    Ok(build_control(&flow, &ack)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn captured(v6: bool) -> Captured {
        let mut key = FlowKey {
            family: if v6 { 6 } else { 4 },
            local_port: 40000,
            remote_port: 5201,
            ..FlowKey::default()
        };
        if v6 {
            key.local = "2001:db8:2::1".parse::<Ipv6Addr>().unwrap().octets();
            key.remote = "2001:db8:2::2".parse::<Ipv6Addr>().unwrap().octets();
        } else {
            key.local[..4].copy_from_slice(&[198, 51, 100, 1]);
            key.remote[..4].copy_from_slice(&[198, 51, 100, 2]);
        }
        Captured {
            key,
            mac: [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1],
            vlan_tci: 0,
            snd_nxt: 1000,
            ack: 2000,
            window: 512,
            timestamps: Some(Timestamps { tsval: 7, tsecr: 9 }),
            data_ack: Some(DataAck::Ack64(0x1_0000_0005)),
            keys: Some((0x1111, 0x2222)),
        }
    }

    /// (src, dst, sport, dport, seq, ack, options) of a frame, by etherparse.
    fn parse(f: &[u8]) -> (IpAddr, IpAddr, u16, u16, u32, u32, Vec<u8>) {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let (src, dst) = match p.net.unwrap() {
            NetSlice::Ipv4(h) => (
                IpAddr::V4(h.header().source_addr()),
                IpAddr::V4(h.header().destination_addr()),
            ),
            NetSlice::Ipv6(h) => (
                IpAddr::V6(h.header().source_addr()),
                IpAddr::V6(h.header().destination_addr()),
            ),
            _ => unreachable!(),
        };
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!("not TCP")
        };
        (
            src,
            dst,
            t.source_port(),
            t.destination_port(),
            t.sequence_number(),
            t.acknowledgment_number(),
            t.options().to_vec(),
        )
    }

    #[test]
    fn mp_prio_goes_from_the_local_end_with_ts_and_dss() {
        let c = captured(false);
        let f = frame(&c, &Payload::MpPrio { backup: false }, false).unwrap();
        assert_eq!(&f[..12], &c.mac, "destination then source MAC as sent");
        let (src, dst, sp, dp, seq, ack, o) = parse(&f);
        assert_eq!(src, "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(dst, "198.51.100.2".parse::<IpAddr>().unwrap());
        assert_eq!((sp, dp, seq, ack), (40000, 5201, 1000, 2000));
        // NOP NOP TS, DSS with an 8-byte data ack, MP_PRIO (B=0), padding.
        assert_eq!(&o[..4], &[1, 1, 8, 10]);
        assert_eq!(&o[12..16], &[30, 12, 0x20, 0x03]);
        assert_eq!(&o[16..24], &0x1_0000_0005u64.to_be_bytes());
        assert_eq!(&o[24..27], &[30, 3, 0x50]);
    }

    #[test]
    fn v6_add_addr_drops_the_dss_to_fit() {
        let c = captured(true);
        let f = frame(
            &c,
            &Payload::AddAddr {
                address: "2001:db8:3::1".parse().unwrap(),
                id: 3,
                port: None,
            },
            false,
        )
        .unwrap();
        let (.., o) = parse(&f);
        // TS (12) + ADD_ADDR v6 with HMAC (28) = 40: no DSS.
        assert_eq!(o.len(), 40);
        assert_eq!(&o[12..15], &[30, 28, 0x30]);
        let hmac =
            crate::packet::add_addr_hmac(0x1111, 0x2222, 3, "2001:db8:3::1".parse().unwrap(), None);
        assert_eq!(&o[32..40], &hmac, "local key first: the local end sends it");
    }

    /// On a raw-IP interface the frame is the Ethernet frame's IP packet,
    /// byte for byte: no MACs, same headers, options and checksums.
    #[test]
    fn raw_ip_interface_gets_the_bare_ip_packet() {
        for v6 in [false, true] {
            let c = captured(v6);
            let p = Payload::MpPrio { backup: false };
            let eth = frame(&c, &p, false).unwrap();
            let raw = frame(&c, &p, true).unwrap();
            assert_eq!(raw, eth[14..], "v6 {v6}");
            assert_eq!(raw[0] >> 4, if v6 { 6 } else { 4 });
        }
    }

    #[test]
    fn add_addr_needs_keys_and_the_family() {
        let mut c = captured(false);
        c.keys = None;
        let p = Payload::AddAddr {
            address: "198.51.100.9".parse().unwrap(),
            id: 2,
            port: Some(80),
        };
        assert!(matches!(frame(&c, &p, false), Err(CopyError::NoKeys)));
        let c = captured(false);
        let p6 = Payload::AddAddr {
            address: "2001:db8::9".parse().unwrap(),
            id: 2,
            port: None,
        };
        assert!(matches!(frame(&c, &p6, false), Err(CopyError::Family(_))));
    }
}
