//! A corpus of malformed and unsupported frames, each derived from a packet
//! that every chain WOULD rewrite, run through the whole chain (entry +
//! tail calls) on the real kernel: every verdict is XDP_PASS (never
//! XDP_ABORTED), the output is byte-identical to the input, and no flow
//! state changes.
//!
//! Needs CAP_BPF/CAP_NET_ADMIN/CAP_SYS_ADMIN (loads programs); fails
//! without them unless EMPTCP_ALLOW_SKIP=1 (tests/common/gate.rs).
mod datapath_common;

use datapath_common::*;
use emptcp_common::{Action, FlowState, StoredAddAddr};

thread_local! {
    /// The base segment carries an ADD_ADDR (strip acts on it); recover
    /// never adds a second one to a packet, so its corpus has none.
    static WITH_ADD_ADDR: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// A pure ACK with a DSS data ACK and a non-echo ADD_ADDR (24 bytes of
/// options): strip NOPs it, set_backup has room for MP_PRIO and set_window
/// rewrites the window. Without the ADD_ADDR (timestamps instead), recover
/// has room for a stored option.
fn base(v6: bool) -> Seg {
    let s = if v6 { Seg::v6() } else { Seg::v4() };
    let aa = add_addr(2, "198.51.100.2".parse().unwrap(), None, false);
    let with_aa = WITH_ADD_ADDR.with(|c| c.get());
    s.with(|s| {
        s.opts = if with_aa {
            opts(&[&dss(Some((100, 4)), None), &aa])
        } else {
            opts(&[&ts(5, 6), &dss(Some((100, 4)), None)])
        }
    })
}

/// Malformations that apply to both families (TCP and options).
fn tcp_corpus(v6: bool) -> Vec<(String, Vec<u8>)> {
    malformed_tcp(&base(v6))
}

fn v4_corpus() -> Vec<(String, Vec<u8>)> {
    let good = base(false).frame();
    let ip = 14;
    let mut c = Vec::new();
    let mut m = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut g = good.clone();
        f(&mut g);
        c.push((format!("v4: {name}"), g));
    };
    m("IHL 4", &|g| g[ip] = 0x44);
    m("IHL 0", &|g| g[ip] = 0x40);
    m("IHL 15 past the packet", &|g| g[ip] = 0x4f);
    m("total length past the frame", &|g| set16(g, ip + 2, 200));
    m("total length shorter than the headers", &|g| {
        set16(g, ip + 2, 30)
    });
    m("total length 0 (GSO)", &|g| set16(g, ip + 2, 0));
    m("more-fragments flag", &|g| g[ip + 6] |= 0x20);
    m("fragment offset", &|g| set16(g, ip + 6, 0x0010));
    m("version 6 under the IPv4 ethertype", &|g| g[ip] = 0x65);
    m("UDP", &|g| g[ip + 9] = 17);
    m("ICMP", &|g| g[ip + 9] = 1);
    m("truncated IP header", &|g| g.truncate(ip + 10));
    m("Ethernet header only", &|g| g.truncate(14));
    m("ARP ethertype", &|g| set16(g, 12, 0x0806));
    m("three VLAN tags", &|g| {
        let tags = [0x88a8u16, 1, 0x8100, 2, 0x8100, 3];
        let mut ins = Vec::new();
        for t in tags {
            ins.extend_from_slice(&t.to_be_bytes());
        }
        g.splice(12..12, ins);
    });
    m("truncated VLAN tag", &|g| {
        g.truncate(12);
        g.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
    });
    m("QinQ with a truncated inner tag", &|g| {
        g.truncate(12);
        g.extend_from_slice(&[0x88, 0xa8, 0x00, 0x01, 0x81, 0x00, 0x00]);
    });
    m("802.1ad tag carrying ARP", &|g| {
        g.splice(12..12, [0x88, 0xa8, 0x00, 0x01]);
        set16(g, 16, 0x0806);
    });
    c
}

fn v6_corpus() -> Vec<(String, Vec<u8>)> {
    let good = base(true).frame();
    let ip = 14;
    let mut c = Vec::new();
    let mut m = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut g = good.clone();
        f(&mut g);
        c.push((format!("v6: {name}"), g));
    };
    // An extension header (8 bytes, next header TCP) between IPv6 and TCP.
    for (name, nh) in [
        ("hop-by-hop header", 0u8),
        ("routing header", 43),
        ("fragment header", 44),
        ("destination options", 60),
    ] {
        m(name, &|g| {
            g[ip + 6] = nh;
            let plen = u16::from_be_bytes([g[ip + 4], g[ip + 5]]) + 8;
            set16(g, ip + 4, plen);
            g.splice(ip + 40..ip + 40, [6, 0, 0, 0, 0, 0, 0, 0]);
        });
    }
    m("payload length past the frame", &|g| set16(g, ip + 4, 300));
    m("payload length shorter than the TCP header", &|g| {
        set16(g, ip + 4, 10)
    });
    m("payload length 0 (jumbogram)", &|g| set16(g, ip + 4, 0));
    m("version 4 under the IPv6 ethertype", &|g| g[ip] = 0x40);
    m("UDP", &|g| g[ip + 6] = 17);
    m("truncated IPv6 header", &|g| g.truncate(ip + 30));
    c
}

/// One chain, with the flows it needs, fed the whole corpus.
fn run_corpus(what: &str, steps: &[(Action, u32)], flow: FlowState, stored: bool) {
    let mut dp = Dp::load();
    dp.chain(CHAIN, steps, TH, LO);
    let keys: Vec<_> = [false, true].iter().map(|v6| base(*v6)).collect();
    for s in &keys {
        dp.put_flow(&s.key(), &flow);
        if stored {
            let aa = add_addr(9, "203.0.113.9".parse().unwrap(), None, false);
            let mut v = StoredAddAddr {
                len: 16,
                ..StoredAddAddr::default()
            };
            v.bytes[..16].copy_from_slice(&aa);
            dp.put_flow_addr(&s.key(), 0, &v);
        }
    }
    let mut corpus = tcp_corpus(false);
    corpus.extend(tcp_corpus(true));
    corpus.extend(v4_corpus());
    corpus.extend(v6_corpus());
    assert!(corpus.len() >= 40, "corpus has {} frames", corpus.len());
    for (name, frame) in &corpus {
        let before: Vec<_> = keys.iter().map(|s| dp.flow(&s.key())).collect();
        let r = dp.entry(frame);
        assert_ne!(r.verdict, XDP_ABORTED, "{what}: {name}: aborted");
        assert_eq!(r.verdict, XDP_PASS, "{what}: {name}: verdict");
        assert_frame_eq(&r.frame, frame, &format!("{what}: {name}"));
        let after: Vec<_> = keys.iter().map(|s| dp.flow(&s.key())).collect();
        assert_eq!(before, after, "{what}: {name}: flow state changed");
    }
    println!("{what}: {} malformed frames passed untouched", corpus.len());
    // The well-formed originals are rewritten by this chain: the corpus
    // exercises code that would act.
    for s in &keys {
        let f = s.frame();
        let r = dp.entry(&f);
        assert!(
            r.verdict != XDP_PASS || r.frame != f,
            "{what}: the base frame was not acted on"
        );
    }
}

fn tracked(bytes: u64, stored: u32) -> FlowState {
    let mut f = FlowState {
        chain: CHAIN,
        bytes,
        stored,
        wscale: 7,
        ..FlowState::default()
    };
    f.addr_ids[0] = 9;
    f
}

#[test]
fn malformed_frames_pass_untouched_through_strip() {
    if !kernel_or_skip("malformed_frames_pass_untouched_through_strip") {
        return;
    }
    let steps = [
        (Action::RecordFlow, 0),
        (Action::StripAddAddr, 0),
        (Action::RecoverAddAddr, 0),
    ];
    run_corpus("strip", &steps, tracked(0, 0), false);
}

#[test]
fn malformed_frames_pass_untouched_through_recover() {
    if !kernel_or_skip("malformed_frames_pass_untouched_through_recover") {
        return;
    }
    let steps = [
        (Action::RecordFlow, 0),
        (Action::StripAddAddr, 0),
        (Action::RecoverAddAddr, 0),
    ];
    WITH_ADD_ADDR.with(|c| c.set(false));
    run_corpus("recover", &steps, tracked(50_000, 1), true);
}

#[test]
fn malformed_frames_pass_untouched_through_backup_and_window() {
    if !kernel_or_skip("malformed_frames_pass_untouched_through_backup_and_window") {
        return;
    }
    let steps = [(Action::SetBackup, 1), (Action::SetWindow, 1_000_000)];
    run_corpus("backup+window", &steps, tracked(0, 0), false);
}
