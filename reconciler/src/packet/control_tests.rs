//! Every forged control frame is compared byte for byte with a frame built
//! independently: headers by etherparse, MPTCP options written by hand
//! from the RFC 8684 figures; checksums recomputed by etherparse.
use std::net::IpAddr;

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, NetSlice,
    SingleVlanHeader, SlicedPacket, TcpHeader, TransportSlice, VlanId, VlanPcp,
};

use super::*;
use crate::packet::add_addr::AddAddrAuth;

const KEY_A: u64 = 0x0123_4567_89ab_cdef;
const KEY_B: u64 = 0xfedc_ba98_7654_3210;

fn flow(src: &str, dst: &str) -> Flow {
    Flow {
        src_mac: [2, 0, 0, 0, 0, 2],
        dst_mac: [2, 0, 0, 0, 0, 1],
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        sport: 5201,
        dport: 40000,
        vlan_tci: None,
        raw_ip: false,
        ttl: 64,
    }
}

fn ack(timestamps: Option<Timestamps>, data_ack: Option<DataAck>, signal: Signal) -> ControlAck {
    ControlAck {
        seq: 0xfffffff0,
        ack: 0x1234_5678,
        window: 502,
        timestamps,
        data_ack,
        signal: Some(signal),
    }
}

/// The frame, built without the code under test. `opts` are the raw TCP
/// option bytes (already padded).
fn expected(f: &Flow, c: &ControlAck, opts: &[u8]) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0, "test options must be padded");
    let mut tcp = TcpHeader::new(f.sport, f.dport, c.seq, c.window);
    tcp.ack = true;
    tcp.acknowledgment_number = c.ack;
    tcp.set_options_raw(opts).unwrap();

    let ether_type = match f.dst {
        IpAddr::V4(_) => EtherType::IPV4,
        IpAddr::V6(_) => EtherType::IPV6,
    };
    let mut out = Vec::new();
    Ethernet2Header {
        source: f.src_mac,
        destination: f.dst_mac,
        ether_type: if f.vlan_tci.is_some() {
            EtherType::VLAN_TAGGED_FRAME
        } else {
            ether_type
        },
    }
    .write(&mut out)
    .unwrap();
    if let Some(tci) = f.vlan_tci {
        SingleVlanHeader {
            pcp: VlanPcp::try_new((tci >> 13) as u8).unwrap(),
            drop_eligible_indicator: tci & 0x1000 != 0,
            vlan_id: VlanId::try_new(tci & 0x0fff).unwrap(),
            ether_type,
        }
        .write(&mut out)
        .unwrap();
    }
    match (f.src, f.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = Ipv4Header::new(
                tcp.header_len() as u16,
                f.ttl,
                IpNumber::TCP,
                s.octets(),
                d.octets(),
            )
            .unwrap();
            ip.dont_fragment = true;
            ip.header_checksum = ip.calc_header_checksum();
            tcp.checksum = tcp.calc_checksum_ipv4(&ip, &[]).unwrap();
            ip.write(&mut out).unwrap();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: tcp.header_len() as u16,
                next_header: IpNumber::TCP,
                hop_limit: f.ttl,
                source: s.octets(),
                destination: d.octets(),
            };
            tcp.checksum = tcp.calc_checksum_ipv6(&ip, &[]).unwrap();
            ip.write(&mut out).unwrap();
        }
        _ => unreachable!(),
    }
    tcp.write(&mut out).unwrap();
    out
}

/// Parses the frame with etherparse, recomputes the IPv4 header and TCP
/// checksums and returns the TCP options.
fn checked_options(frame: &[u8]) -> Vec<u8> {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        panic!("no TCP in {frame:02x?}")
    };
    match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
            let c = t.calc_checksum_ipv4(h.source, h.destination).unwrap();
            assert_eq!(t.checksum(), c, "TCP checksum (IPv4)");
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let c = t.calc_checksum_ipv6(h.source(), h.destination()).unwrap();
            assert_eq!(t.checksum(), c, "TCP checksum (IPv6)");
        }
        _ => panic!("no IP"),
    }
    assert!(t.ack() && !t.syn() && !t.fin() && !t.rst() && !t.psh());
    assert!(t.payload().is_empty(), "a duplicate ACK has no payload");
    t.options().to_vec()
}

fn check(f: &Flow, c: &ControlAck, opts: &[u8]) {
    let got = build_control(f, c).unwrap();
    assert_eq!(got, expected(f, c, opts), "frame differs");
    assert_eq!(checked_options(&got), opts);
}

#[test]
fn ipv4_mp_prio_backup_with_timestamps_and_data_ack() {
    let c = ack(
        Some(Timestamps {
            tsval: 0x0a0b_0c0d,
            tsecr: 0x0102_0304,
        }),
        Some(DataAck::Ack32(0xdead_beef)),
        Signal::MpPrio {
            backup: true,
            addr_id: None,
        },
    );
    #[rustfmt::skip]
    let opts = [
        1, 1, 8, 10, 0x0a, 0x0b, 0x0c, 0x0d, 1, 2, 3, 4, // NOP NOP TS
        30, 8, 0x20, 0x01, 0xde, 0xad, 0xbe, 0xef,       // DSS, A, 4-byte data ack
        30, 3, 0x51,                                     // MP_PRIO, B
        1,                                               // NOP pad
    ];
    check(&flow("192.0.2.2", "192.0.2.1"), &c, &opts);
}

#[test]
fn ipv6_mp_prio_regular_with_addr_id_and_8_byte_data_ack() {
    let c = ack(
        None,
        Some(DataAck::Ack64(0x0102_0304_0506_0708)),
        Signal::MpPrio {
            backup: false,
            addr_id: Some(3),
        },
    );
    #[rustfmt::skip]
    let opts = [
        30, 12, 0x20, 0x03, 1, 2, 3, 4, 5, 6, 7, 8, // DSS, A+a, 8-byte data ack
        30, 4, 0x50, 3,                             // MP_PRIO, id 3
    ];
    check(&flow("2001:db8::2", "2001:db8::1"), &c, &opts);
}

#[test]
fn ipv4_add_addr_with_hmac_timestamps_data_ack_and_vlan() {
    let mut f = flow("198.51.100.2", "198.51.100.1");
    f.vlan_tci = Some(0x2064); // priority 1, VLAN 100
    let c = ack(
        Some(Timestamps { tsval: 7, tsecr: 9 }),
        Some(DataAck::Ack32(1)),
        Signal::AddAddr(AddAddr {
            id: 2,
            addr: "198.51.100.2".parse().unwrap(),
            port: None,
            auth: AddAddrAuth::Hmac {
                sender_key: KEY_A,
                receiver_key: KEY_B,
            },
        }),
    );
    #[rustfmt::skip]
    let opts = [
        1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9,
        30, 8, 0x20, 0x01, 0, 0, 0, 1,
        // ADD_ADDR id 2, 198.51.100.2, HMAC (vector in add_addr.rs tests)
        30, 16, 0x30, 2, 198, 51, 100, 2, 0xe9, 0x04, 0xcc, 0x43, 0x55, 0xe9, 0x49, 0xe0,
    ];
    check(&f, &c, &opts);
}

#[test]
fn ipv6_add_addr_with_port_and_hmac_fills_the_option_space() {
    let c = ack(
        None,
        Some(DataAck::Ack32(0x0001_0000)),
        Signal::AddAddr(AddAddr {
            id: 5,
            addr: "2001:db8::2".parse().unwrap(),
            port: Some(8080),
            auth: AddAddrAuth::Hmac {
                sender_key: KEY_A,
                receiver_key: KEY_B,
            },
        }),
    );
    #[rustfmt::skip]
    let opts = [
        30, 8, 0x20, 0x01, 0, 1, 0, 0,
        30, 30, 0x30, 5,
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
        0x1f, 0x90,
        0xa0, 0x06, 0x33, 0xc7, 0x88, 0x42, 0xbd, 0x58,
        1, 1,
    ];
    check(&flow("2001:db8::2", "2001:db8::1"), &c, &opts);
}

#[test]
fn ipv4_add_addr_echo_without_data_ack() {
    let c = ack(
        None,
        None,
        Signal::AddAddr(AddAddr {
            id: 1,
            addr: "203.0.113.5".parse().unwrap(),
            port: Some(443),
            auth: AddAddrAuth::Echo,
        }),
    );
    let opts = [30, 10, 0x31, 1, 203, 0, 113, 5, 0x01, 0xbb, 1, 1];
    check(&flow("203.0.113.1", "203.0.113.5"), &c, &opts);
}

#[test]
fn a_block_too_long_drops_the_dss_then_the_timestamps() {
    let add_addr = |port| {
        Signal::AddAddr(AddAddr {
            id: 5,
            addr: "2001:db8::2".parse().unwrap(),
            port,
            auth: AddAddrAuth::Hmac {
                sender_key: KEY_A,
                receiver_key: KEY_B,
            },
        })
    };
    let ts = Some(Timestamps { tsval: 1, tsecr: 2 });
    let f = flow("2001:db8::2", "2001:db8::1");
    // TS 12 + DSS 8 + ADD_ADDR 28 = 48: without the DSS it is 40.
    let c = ack(ts, Some(DataAck::Ack32(1)), add_addr(None));
    assert_eq!(
        fit(&c),
        ControlAck {
            data_ack: None,
            ..c
        }
    );
    let mut opts = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    opts.extend_from_slice(&control_options(&ack(None, None, add_addr(None))));
    check(&f, &fit(&c), &opts);
    assert_eq!(
        build_control(&f, &c).unwrap(),
        build_control(&f, &fit(&c)).unwrap()
    );
    // With a port (30 bytes) the timestamps do not fit either.
    let c = ack(ts, Some(DataAck::Ack32(1)), add_addr(Some(80)));
    let alone = ack(None, None, add_addr(Some(80)));
    assert_eq!(fit(&c), alone);
    assert_eq!(
        build_control(&f, &c).unwrap(),
        build_control(&f, &alone).unwrap()
    );
}

#[test]
fn a_stored_option_is_carried_byte_for_byte() {
    // A received ADD_ADDR (IPv4, HMAC) as the datapath stores it.
    let stored = [30, 16, 0x30, 2, 198, 51, 100, 2, 1, 2, 3, 4, 5, 6, 7, 8];
    let c = ack(
        Some(Timestamps { tsval: 3, tsecr: 4 }),
        None,
        Signal::Stored(StoredOption::new(&stored).unwrap()),
    );
    let mut opts = vec![1, 1, 8, 10, 0, 0, 0, 3, 0, 0, 0, 4];
    opts.extend_from_slice(&stored);
    check(&flow("192.0.2.2", "192.0.2.1"), &c, &opts);
    assert!(StoredOption::new(&[1; 41]).is_none());
    assert_eq!(StoredOption::new(&[1; 40]).unwrap().as_bytes(), &[1; 40]);
}

#[test]
fn mixed_families_are_refused() {
    let c = ack(
        None,
        None,
        Signal::MpPrio {
            backup: true,
            addr_id: None,
        },
    );
    assert_eq!(
        build_control(&flow("192.0.2.2", "2001:db8::1"), &c),
        Err(ForgeError::MixedFamilies)
    );
}

mod properties {
    //! For generated flows (IPv4/IPv6, ports, VLAN, TTL) and duplicate ACKs
    //! (seq/ack, window, timestamps, 32/64-bit data ack, MP_PRIO or ADD_ADDR
    //! with HMAC or echo, of either family, with or without port, or raw
    //! stored option bytes), the frame is built with what fits the option
    //! space (the signal always), decodes with etherparse, its IPv4 and TCP checksums are right, the
    //! header fields are the ones asked for, and the bytes equal a frame
    //! etherparse builds itself.
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    /// 1024 frames: well under a second in release.
    const CASES: u32 = 1024;

    fn addr_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
        prop_oneof![
            (any::<u32>(), any::<u32>())
                .prop_map(|(a, b)| (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b)))),
            (any::<u128>(), any::<u128>())
                .prop_map(|(a, b)| (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))),
        ]
    }

    fn any_addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]
    }

    fn flow() -> impl Strategy<Value = Flow> {
        (
            any::<[u8; 6]>(),
            any::<[u8; 6]>(),
            addr_pair(),
            any::<u16>(),
            any::<u16>(),
            prop::option::of(any::<u16>()),
            any::<u8>(),
        )
            .prop_map(
                |(src_mac, dst_mac, (src, dst), sport, dport, vlan_tci, ttl)| Flow {
                    src_mac,
                    dst_mac,
                    src,
                    dst,
                    sport,
                    dport,
                    vlan_tci,
                    // Parsed back as Ethernet below; raw IP: frame.rs.
                    raw_ip: false,
                    ttl,
                },
            )
    }

    fn signal() -> impl Strategy<Value = Option<Signal>> {
        let auth = prop_oneof![
            Just(AddAddrAuth::Echo),
            (any::<u64>(), any::<u64>()).prop_map(|(s, r)| AddAddrAuth::Hmac {
                sender_key: s,
                receiver_key: r
            }),
        ];
        let add_addr = (
            any::<u8>(),
            any_addr(),
            prop::option::of(any::<u16>()),
            auth,
        )
            .prop_map(|(id, addr, port, auth)| {
                Signal::AddAddr(AddAddr {
                    id,
                    addr,
                    port,
                    auth,
                })
            });
        let prio = (any::<bool>(), prop::option::of(any::<u8>()))
            .prop_map(|(backup, addr_id)| Signal::MpPrio { backup, addr_id });
        // What the datapath stores: an MPTCP option as received (kind 30,
        // its length, any content), up to the 30 bytes of an ADD_ADDR.
        let stored = prop::collection::vec(any::<u8>(), 2..=30).prop_map(|mut b| {
            b[0] = crate::packet::KIND_MPTCP;
            b[1] = b.len() as u8;
            Signal::Stored(StoredOption::new(&b).unwrap())
        });
        prop::option::of(prop_oneof![prio, add_addr, stored])
    }

    fn control_ack() -> impl Strategy<Value = ControlAck> {
        let ts = prop::option::of(
            (any::<u32>(), any::<u32>()).prop_map(|(tsval, tsecr)| Timestamps { tsval, tsecr }),
        );
        let data_ack = prop::option::of(prop_oneof![
            any::<u32>().prop_map(DataAck::Ack32),
            any::<u64>().prop_map(DataAck::Ack64),
        ]);
        (
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            ts,
            data_ack,
            signal(),
        )
            .prop_map(
                |(seq, ack, window, timestamps, data_ack, signal)| ControlAck {
                    seq,
                    ack,
                    window,
                    timestamps,
                    data_ack,
                    signal,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

        #[test]
        fn forged_control_frames_decode_with_right_checksums(f in flow(), c in control_ack()) {
            // What does not fit is left out, never the signal: every
            // control frame of one address family is built.
            let fitted = fit(&c);
            prop_assert_eq!(fitted.signal, c.signal);
            if control_options(&c).len() <= 40 {
                prop_assert_eq!(fitted, c);
            }
            let frame = build_control(&f, &c).unwrap();
            let c = fitted;
            let mut opts = control_options(&c);
            prop_assert!(opts.len() <= 40);
            while !opts.len().is_multiple_of(4) {
                opts.push(1);
            }
            // Checksums (IPv4 header, TCP over the pseudo-header), flags.
            prop_assert_eq!(checked_options(&frame), opts.clone());
            let p = SlicedPacket::from_ethernet(&frame).unwrap();
            let Some(TransportSlice::Tcp(t)) = &p.transport else { unreachable!() };
            prop_assert_eq!((t.source_port(), t.destination_port()), (f.sport, f.dport));
            prop_assert_eq!((t.sequence_number(), t.acknowledgment_number()), (c.seq, c.ack));
            prop_assert_eq!(t.window_size(), c.window);
            let (src, dst, ttl): (IpAddr, IpAddr, u8) = match &p.net {
                Some(NetSlice::Ipv4(ip)) => {
                    let h = ip.header();
                    (h.source_addr().into(), h.destination_addr().into(), h.ttl())
                }
                Some(NetSlice::Ipv6(ip)) => {
                    let h = ip.header();
                    (h.source_addr().into(), h.destination_addr().into(), h.hop_limit())
                }
                _ => unreachable!(),
            };
            prop_assert_eq!((src, dst, ttl), (f.src, f.dst, f.ttl));
            let tci = p.vlan().map(|v| match v {
                etherparse::VlanSlice::SingleVlan(s) => s.to_header(),
                etherparse::VlanSlice::DoubleVlan(_) => panic!("one tag at most"),
            });
            prop_assert_eq!(tci.map(|h| (u16::from(h.pcp.value()) << 13) | (u16::from(h.drop_eligible_indicator) << 12) | h.vlan_id.value()), f.vlan_tci);
            // The signal's MPTCP option is in the block, at its end.
            if c.signal.is_some() {
                let sig = control_options(&ControlAck { timestamps: None, data_ack: None, ..c });
                prop_assert_eq!(sig[0], crate::packet::KIND_MPTCP);
                let end = control_options(&c).len();
                prop_assert_eq!(&opts[end - sig.len()..end], &sig[..]);
            }
            // And byte for byte what etherparse builds from the same fields.
            prop_assert_eq!(&frame, &expected(&f, &c, &opts));
        }
    }
}
