//! The ingress half of the subflow capture on the real kernel. The local
//! end's segments run through the TC egress hook (`egress_entry`, which
//! creates the `SUBFLOWS` entries), the PEER's segments through the
//! ingress entry (BPF_PROG_TEST_RUN, received on the loopback interface)
//! of an interface with `IFACE_CAPTURE`, which hands them to the capture:
//! every test runs on both ingress hooks, the XDP `entry` (to
//! `ingress_capture`) and the TC `tc_entry` (to `tc_ingress_capture`, an
//! interface with `ingress_hook: tc`), each on an object of its own.
//! Checked: what ingress records (received data, the MP_CAPABLE keys),
//! what it leaves to egress (byte for byte the same entry), the peer's
//! FIN/RST closing the entry with an event on `SUBFLOW_EVENTS`, that
//! frames always pass unchanged, and that the ingress chain still runs.
//!
//! Needs CAP_BPF/CAP_NET_ADMIN/CAP_SYS_ADMIN (loads programs); fails
//! without them unless EMPTCP_ALLOW_SKIP=1 (tests/common/gate.rs).
#[macro_use]
mod datapath_common;

use datapath_common::{egress::*, *};
use emptcp_common::{
    Action, EgressStat, IFACE_CAPTURE, INLINE_PORTS, IfaceChains, MAX_CHAINS_PER_IFACE, Outcome,
    SEL_REMOTE_PORTS, SEL_REMOTE_PORTS_INLINE, SF_FIN, SF_LOCAL_KEY, SF_PEER_FIN, SF_PEER_RST,
    SF_REMOTE_KEY, SF_RST, SUBFLOW_EV_CLOSED, SUBFLOW_EV_NEW, SubflowState, Thresholds,
};

/// The ingress chain (`count`) of the capture interface, when it has one.
const IN_CHAIN: u32 = 5;
const LOCAL_KEY: u64 = 0x1111_2222_3333_4444;
const REMOTE_KEY: u64 = 0x5555_6666_7777_8888;

/// What the local end receives from its peer on the subflow of `s` (a
/// segment the local end sends): addresses and ports swapped.
fn from_peer(s: &Seg) -> Seg {
    Seg {
        src: s.dst,
        dst: s.src,
        sport: s.dport,
        dport: s.sport,
        ..s.clone()
    }
}

/// The ingress hook the peer's segments arrive at.
#[derive(Clone, Copy, Debug)]
enum Hook {
    Xdp,
    Tc,
}

const HOOKS: [Hook; 2] = [Hook::Xdp, Hook::Tc];

/// The egress harness and the ingress hook its peer's segments go through.
struct Cap {
    e: Eg,
    hook: Hook,
    /// `TC_PROGS` (the TC hook's tail-call slots), kept alive.
    _tc: Option<aya::maps::ProgramArray<aya::maps::MapData>>,
}

impl std::ops::Deref for Cap {
    type Target = Eg;
    fn deref(&self) -> &Eg {
        &self.e
    }
}

impl std::ops::DerefMut for Cap {
    fn deref_mut(&mut self) -> &mut Eg {
        &mut self.e
    }
}

impl Cap {
    /// Runs the peer's `frame` through the hook's entry program.
    fn entry(&self, frame: &[u8]) -> Run {
        match self.hook {
            Hook::Xdp => self.e.dp.entry(frame),
            Hook::Tc => tc_ingress::run_tc(&self.e.dp, emptcp_common::TC_ENTRY, frame, 0),
        }
    }
}

/// The egress harness (one egress `count` chain on the loopback
/// interface), plus the loopback interface's ingress entry on `hook`:
/// `flags`, and the ingress `count` chain [`IN_CHAIN`] with `in_chain`.
fn setup(hook: Hook, in_chain: bool, flags: u32) -> Cap {
    eprintln!("ingress hook: {hook:?}");
    let dp = match hook {
        Hook::Xdp => Dp::load(),
        // No XDP program: verifying them is most of a case's time in the
        // emulated guest.
        Hook::Tc => Dp::load_lazily(),
    };
    let e = setup_egress(dp, in_chain, flags);
    let mut cap = Cap { e, hook, _tc: None };
    if let Hook::Tc = hook {
        // The capture and the ingress chain's one action.
        let slots = [
            (
                emptcp_common::TC_INGRESS_CAPTURE,
                emptcp_common::INGRESS_CAPTURE_SLOT,
            ),
            (
                emptcp_common::tc_program(Action::Count),
                Action::Count as u32,
            ),
        ];
        cap._tc = Some(tc_ingress::tc_slots(&mut cap.e.dp, slots));
    }
    cap
}

fn setup_egress(dp: Dp, in_chain: bool, flags: u32) -> Eg {
    let mut e = eg_on(dp, &[(Action::Count, 0)]);
    let chains: &[u32] = if in_chain {
        // Its own IFACES entry is on an ifindex nothing uses.
        e.dp.chain(
            IN_CHAIN,
            &[(Action::Count, 0)],
            Thresholds::default(),
            999_998,
        );
        &[IN_CHAIN]
    } else {
        &[]
    };
    e.dp.iface(LO, chains, flags);
    e
}

/// The clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Runs the peer's segment through the ingress entry: it must pass
/// unchanged.
fn receive(e: &Cap, seg: &Seg, what: &str) {
    let f = seg.frame();
    let r = e.entry(&f);
    let what = format!("{:?}: {what}", e.hook);
    assert_eq!(r.verdict, XDP_PASS, "{what}: verdict");
    assert_frame_eq(&r.frame, &f, &what);
}

/// A subflow the egress capture created from a data segment on local
/// port `port` (the entry is there, no keys).
fn established(e: &mut Cap, base: &Seg, port: u16) -> Seg {
    let seg = base.clone().with(|s| {
        s.sport = port;
        s.opts = opts(&[&ts(10, 20), &dss(Some((5000, 4)), None)]);
        s.payload = vec![1; 100];
    });
    e.run(&seg.frame(), 0);
    assert!(e.subflow(&ekey(&seg)).is_some(), "egress created it");
    seg
}

/// What a peer sends that the ingress capture records on a known
/// subflow: the MP_CAPABLE third ACK, data, a RST.
fn what_the_peer_says(peer: &Seg) -> [(&'static str, Seg); 3] {
    [
        (
            "third ACK",
            peer.clone()
                .with(|s| s.opts = opts(&[&mp_capable_ack(REMOTE_KEY, LOCAL_KEY)])),
        ),
        (
            "data",
            peer.clone().with(|s| {
                s.opts = opts(&[&dss(Some((1, 4)), Some((1, 4, 1, 10)))]);
                s.payload = vec![1; 10];
            }),
        ),
        ("RST", peer.clone().with(|s| s.flags = RST)),
    ]
}

fn both() -> [Seg; 2] {
    [Seg::v4(), Seg::v6()]
}

/// The server role: the SYN-ACK (egress) carries the local key, the third
/// ACK (ingress, 20-byte MP_CAPABLE: the sender's key then the
/// receiver's) brings the peer's. Received data then stamps
/// `last_rx_data_ns`; nothing egress owns moves.
#[test]
fn ingress_records_the_peers_key_and_received_data_and_nothing_else() {
    need_kernel!();
    for hook in HOOKS {
        let e = setup(hook, false, IFACE_CAPTURE);
        for base in both() {
            let key = ekey(&base);
            let synack = base.clone().with(|s| {
                s.flags = SYN | ACK;
                s.seq = base.seq.wrapping_sub(1);
                s.opts = opts(&[&wscale(7), &mp_capable(LOCAL_KEY)]);
            });
            e.run(&synack.frame(), 0);
            let created = e.subflow(&key).expect("the SYN-ACK creates the entry");
            assert_eq!(created.local_key, LOCAL_KEY);
            assert_eq!(created.flags & (SF_LOCAL_KEY | SF_REMOTE_KEY), SF_LOCAL_KEY);

            let third = from_peer(&base).with(|s| {
                s.seq = base.ack;
                s.ack = base.seq;
                s.window = 1000;
                s.opts = opts(&[&ts(900, 800), &mp_capable_ack(REMOTE_KEY, LOCAL_KEY)]);
            });
            receive(&e, &third, "third ACK");
            let keyed = e.subflow(&key).unwrap();
            assert_eq!(
                keyed.remote_key, REMOTE_KEY,
                "the sender's key is the peer's"
            );
            assert_eq!(keyed.local_key, LOCAL_KEY, "the receiver's key is ours");
            assert_eq!(keyed.last_rx_data_ns, 0, "a pure ACK is not data");
            // Only the key and its flag changed: seq/ack, window, timestamps,
            // MACs, chain, interface and the clocks are egress's.
            assert_eq!(
                SubflowState {
                    remote_key: 0,
                    flags: keyed.flags & !SF_REMOTE_KEY,
                    ..keyed
                },
                created
            );

            let data = third.clone().with(|s| {
                s.opts = opts(&[&ts(901, 801), &dss(Some((7, 4)), Some((100, 4, 1, 500)))]);
                s.payload = vec![3; 500];
            });
            let before = monotonic_ns();
            receive(&e, &data, "data");
            let after = monotonic_ns();
            let got = e.subflow(&key).unwrap();
            assert!(
                (before..=after).contains(&got.last_rx_data_ns),
                "last_rx_data_ns {} not in [{before}, {after}]",
                got.last_rx_data_ns
            );
            assert_eq!(
                SubflowState {
                    last_rx_data_ns: 0,
                    ..got
                },
                keyed,
                "received data moves nothing but last_rx_data_ns"
            );
            // A pure ACK of the peer leaves the data clock alone.
            receive(&e, &third, "pure ACK");
            assert_eq!(e.subflow(&key).unwrap(), got);
        }
        assert_eq!(e.stat(EgressStat::SubflowsCreated), 2);
    }
}

/// The client role: the SYN (egress, MP_CAPABLE v1 without a key) creates
/// the entry, the peer's SYN-ACK (12 bytes: the sender's key) brings the
/// peer's key.
#[test]
fn ingress_syn_ack_key_is_the_peers() {
    need_kernel!();
    for hook in HOOKS {
        let e = setup(hook, false, IFACE_CAPTURE);
        let syn = Seg::v4().with(|s| {
            s.flags = SYN;
            s.ack = 0;
            s.opts = opts(&[&wscale(7), &[30, 4, 0x01, 0x81]]);
        });
        e.run(&syn.frame(), 0);
        let key = ekey(&syn);
        assert_eq!(e.subflow(&key).expect("created").flags & SF_REMOTE_KEY, 0);
        let synack = from_peer(&syn).with(|s| {
            s.flags = SYN | ACK;
            s.seq = 77;
            s.ack = syn.seq + 1;
            s.opts = opts(&[&wscale(9), &mp_capable(REMOTE_KEY)]);
        });
        receive(&e, &synack, "SYN-ACK");
        let f = e.subflow(&key).unwrap();
        assert_eq!(f.remote_key, REMOTE_KEY);
        assert_eq!(f.flags & (SF_LOCAL_KEY | SF_REMOTE_KEY), SF_REMOTE_KEY);
        assert_eq!(f.wscale, 7, "the window scale is the local end's");
    }
}

/// The peer's RST (e.g. an MPTCP fastclose) and the peer's FIN each end
/// the subflow: the entry is closed and a CLOSED event, flagged with who
/// closed how, is on the ring, as for the local end's own FIN/RST.
#[test]
fn the_peers_rst_and_fin_close_the_subflow_with_an_event() {
    need_kernel!();
    for hook in HOOKS {
        let mut e = setup(hook, false, IFACE_CAPTURE);
        let mut n = 0;
        for base in both() {
            for (flags, how) in [(RST, SF_PEER_RST), (FIN | ACK, SF_PEER_FIN)] {
                n += 1;
                let sent = established(&mut e, &base, 30_000 + n);
                let key = ekey(&sent);
                let evs = e.events();
                assert_eq!(evs.len(), 1, "{evs:?}");
                assert_eq!((evs[0].kind, evs[0].key), (SUBFLOW_EV_NEW, key));
                let before = e.subflow(&key).unwrap();

                let close = from_peer(&sent).with(|s| {
                    s.flags = flags;
                    s.seq = sent.ack;
                    s.ack = sent.seq + 100;
                    s.opts = if flags & RST != 0 {
                        vec![]
                    } else {
                        opts(&[&dss(Some((5100, 4)), None)])
                    };
                    s.payload = vec![];
                });
                receive(&e, &close, "peer closes");
                assert!(e.subflow(&key).is_none(), "{flags:#x} closes the entry");
                let evs = e.events();
                assert_eq!(evs.len(), 1, "{evs:?}");
                let ev = evs[0];
                assert_eq!((ev.kind, ev.key), (SUBFLOW_EV_CLOSED, key));
                assert_eq!(
                    ev.flags & (SF_PEER_RST | SF_PEER_FIN | SF_RST | SF_FIN),
                    how
                );
                // The event carries what egress had captured.
                assert_eq!((ev.snd_nxt, ev.rcv_nxt), (before.snd_nxt, before.rcv_nxt));
                assert_eq!((ev.chain, ev.ifindex), (CHAIN, LO));
                assert!(ev.ts_ns >= before.last_seen_ns);
                // Later segments of the peer find nothing to close again.
                receive(&e, &close, "repeated close");
                assert!(e.events().is_empty());
            }
        }
        assert_eq!(e.stat(EgressStat::SubflowsClosed), n as u64);
        assert_eq!(e.stat(EgressStat::EventsLost), 0);
    }
}

/// What a connection still sends after its subflow closed does not bring
/// the subflow back: after the local FIN (and the peer's), the final ACK
/// (which carries a DSS) and a retransmitted data segment leave the
/// closed entry as it was and report nothing, so packet copy never sees
/// a dead subflow go idle. A new SYN on the same 4-tuple is a new subflow.
#[test]
fn a_closed_subflow_is_not_recreated_by_its_last_segments() {
    need_kernel!();
    for hook in HOOKS {
        let mut e = setup(hook, false, IFACE_CAPTURE);
        for (i, base) in both().into_iter().enumerate() {
            let sent = established(&mut e, &base, 31_000 + i as u16);
            let key = ekey(&sent);
            e.events();
            let fin = sent.clone().with(|s| {
                s.flags = FIN | ACK;
                s.seq = sent.seq + 100;
                s.payload = vec![];
            });
            e.run(&fin.frame(), 0);
            assert!(e.subflow(&key).is_none(), "FIN closes the subflow");
            let closed = e.tombstone(&key).expect("the closed entry stays");
            assert_eq!(closed.flags & (SF_FIN | SF_RST), SF_FIN);
            let peer_fin = from_peer(&sent).with(|s| {
                s.flags = FIN | ACK;
                s.seq = sent.ack;
                s.ack = fin.seq + 1;
                s.opts = opts(&[&dss(Some((5101, 4)), None)]);
                s.payload = vec![];
            });
            receive(&e, &peer_fin, "the peer's FIN");
            let last_ack = sent.clone().with(|s| {
                s.seq = fin.seq + 1;
                s.ack = sent.ack + 1;
                s.opts = opts(&[&ts(11, 21), &dss(Some((5001, 4)), None)]);
                s.payload = vec![];
            });
            e.run(&last_ack.frame(), 0);
            e.run(&sent.frame(), 0);
            assert!(e.subflow(&key).is_none(), "the last ACK re-created it");
            let after = e.tombstone(&key).expect("still the tombstone");
            assert_eq!(after.flags, closed.flags, "nothing updated the tombstone");
            assert_eq!(after.snd_nxt, closed.snd_nxt);
            let evs = e.events();
            assert_eq!(evs.len(), 1, "only the CLOSED event: {evs:?}");
            assert_eq!((evs[0].kind, evs[0].key), (SUBFLOW_EV_CLOSED, key));

            // A new subflow on the same 4-tuple starts with a SYN.
            let syn = sent.clone().with(|s| {
                s.flags = SYN;
                s.seq = 900_000;
                s.ack = 0;
                s.opts = opts(&[&wscale(7), &[30, 4, 0x01, 0x81]]);
                s.payload = vec![];
            });
            e.run(&syn.frame(), 0);
            let f = e.subflow(&key).expect("the SYN starts a new subflow");
            assert_eq!(f.snd_nxt, 900_001);
            let evs = e.events();
            assert_eq!(evs.len(), 1, "{evs:?}");
            assert_eq!((evs[0].kind, evs[0].key), (SUBFLOW_EV_NEW, key));
        }
        assert_eq!(e.stat(EgressStat::SubflowsCreated), 4);
        assert_eq!(e.stat(EgressStat::SubflowsClosed), 2);
    }
}

/// The ingress capture only updates what egress created: the peer's
/// segments of a 4-tuple egress never saw (a handshake, data, a close)
/// create nothing and report nothing.
#[test]
fn an_unknown_subflow_is_not_created_by_ingress() {
    need_kernel!();
    for hook in HOOKS {
        let mut e = setup(hook, false, IFACE_CAPTURE);
        for base in both() {
            let stranger = from_peer(&base).with(|s| s.sport = 50_000);
            let key = ekey(&base.clone().with(|s| s.dport = 50_000));
            assert_eq!(stranger.key(), key, "the key ingress would use");
            let syn = stranger.clone().with(|s| {
                s.flags = SYN;
                s.opts = opts(&[&[30, 4, 0x01, 0x81]]);
            });
            for (what, seg) in [("SYN with MP_CAPABLE", syn)]
                .into_iter()
                .chain(what_the_peer_says(&stranger))
            {
                receive(&e, &seg, what);
                assert!(e.subflow(&key).is_none(), "{what} created an entry");
            }
        }
        assert!(e.events().is_empty());
        assert_eq!(e.stat(EgressStat::SubflowsCreated), 0);
        assert_eq!(e.stat(EgressStat::SubflowsClosed), 0);
    }
}

/// Without `IFACE_CAPTURE` the interface's ingress chain runs as before
/// and nothing of the peer's is captured: not its key, not its data, not
/// its RST.
#[test]
fn an_interface_without_the_capture_flag_captures_nothing() {
    need_kernel!();
    for hook in HOOKS {
        let mut e = setup(hook, true, 0);
        let sent = established(&mut e, &Seg::v4(), 31_000);
        let key = ekey(&sent);
        e.events();
        let before = e.subflow(&key).unwrap();
        for (what, seg) in what_the_peer_says(&from_peer(&sent)) {
            receive(&e, &seg, what);
            assert_eq!(e.subflow(&key), Some(before), "{what}");
        }
        assert!(e.events().is_empty());
        assert_eq!(e.dp.chain_packets(IN_CHAIN), 3, "the ingress chain ran");
    }
}

/// Malformed packets of a captured subflow pass byte for byte and are not
/// captured: a RST whose header or options are broken (the corpus of
/// tests/datapath_malformed.rs) closes nothing.
#[test]
fn malformed_packets_pass_untouched_and_are_not_captured() {
    need_kernel!();
    for hook in HOOKS {
        let mut e = setup(hook, true, IFACE_CAPTURE);
        let sent = established(&mut e, &Seg::v4(), 32_000);
        let key = ekey(&sent);
        e.events();
        let before = e.subflow(&key).unwrap();
        let good = from_peer(&sent).with(|s| {
            s.flags = RST | ACK;
            // 20 bytes of options, no payload: the corpus's header cases
            // (a frame ending inside the options, a data offset past the
            // segment) assume more than 10 bytes of options and no payload.
            s.opts = opts(&[&ts(1, 2), &dss(Some((1, 4)), None)]);
            s.payload = vec![];
        });
        let mut corpus = malformed_tcp(&good);
        let mut b = good.frame();
        b[16..18].copy_from_slice(&2000u16.to_be_bytes());
        corpus.push(("v4: IP length beyond frame".into(), b));
        for (what, frame) in &corpus {
            let r = e.entry(frame);
            assert_eq!(r.verdict, XDP_PASS, "{what}");
            assert_eq!(&r.frame, frame, "{what} must pass untouched");
            assert_eq!(e.subflow(&key), Some(before), "{what} was captured");
        }
        assert!(e.events().is_empty());
        // The well-formed one is captured (and closes the subflow).
        receive(&e, &good, "well-formed RST");
        assert!(e.subflow(&key).is_none());
    }
}

/// The ingress chain still runs after the capture: a captured segment of
/// a subflow is counted by the chain's `count` step (and captured), a
/// segment of another connection is counted too; with a chain whose
/// selector does not take the packet, the packet is still captured
/// (described with zero steps) and passes.
#[test]
fn the_ingress_chain_runs_after_the_capture() {
    need_kernel!();
    for hook in HOOKS {
        let mut e = setup(hook, true, IFACE_CAPTURE);
        let sent = established(&mut e, &Seg::v4(), 33_000);
        let key = ekey(&sent);
        let data = from_peer(&sent).with(|s| {
            s.opts = opts(&[&dss(Some((1, 4)), Some((1, 4, 1, 10)))]);
            s.payload = vec![1; 10];
        });
        receive(&e, &data, "captured data");
        assert!(e.subflow(&key).unwrap().last_rx_data_ns > 0);
        assert_eq!(e.dp.chain_packets(IN_CHAIN), 1);
        let other = data.clone().with(|s| s.sport = 51_000);
        receive(&e, &other, "another connection");
        assert_eq!(e.dp.chain_packets(IN_CHAIN), 2);
        assert_eq!(e.dp.entry_outcome(Outcome::Applied), 2);

        // The chain now takes only remote port 9 (inline): the subflow's
        // packets no longer match it, and are captured all the same.
        let mut chains = [0u32; MAX_CHAINS_PER_IFACE];
        chains[0] = IN_CHAIN;
        let mut chain_flags = [0u32; MAX_CHAINS_PER_IFACE];
        chain_flags[0] = SEL_REMOTE_PORTS | SEL_REMOTE_PORTS_INLINE;
        let mut ports = [[0u16; 2 * INLINE_PORTS]; MAX_CHAINS_PER_IFACE];
        ports[0][..INLINE_PORTS].fill(9);
        let ifc = IfaceChains {
            n_chains: 1,
            ifindex: LO,
            // What apply writes with the flag: no port prefilter (the entry
            // tests the flag after it).
            require: 0,
            flags: IFACE_CAPTURE,
            chains,
            chain_flags,
            ports,
            ..IfaceChains::EMPTY
        };
        let mut m: aya::maps::HashMap<_, u32, IfaceChains> =
            aya::maps::HashMap::try_from(e.dp.ebpf.map_mut("IFACES").unwrap()).unwrap();
        m.insert(LO, ifc, 0).unwrap();
        let stamped = e.subflow(&key).unwrap().last_rx_data_ns;
        receive(&e, &data, "captured, no chain");
        assert!(e.subflow(&key).unwrap().last_rx_data_ns > stamped);
        receive(&e, &other, "neither captured nor selected");
        assert_eq!(e.dp.chain_packets(IN_CHAIN), 2, "no chain ran");
        assert_eq!(e.dp.entry_outcome(Outcome::Applied), 2);
        assert_eq!(e.dp.entry_outcome(Outcome::Passed), 2);
        assert_eq!(e.dp.entry_outcome(Outcome::Error), 0);
        let rst = data.clone().with(|s| {
            s.flags = RST;
            s.opts = vec![];
            s.payload = vec![];
        });
        receive(&e, &rst, "RST, no chain");
        assert!(e.subflow(&key).is_none());
    }
}

/// The capture walk reads `SUBFLOWS` a batch of entries per system call:
/// every entry of an LRU hash comes exactly once with its value, also when
/// the first batch is too small for one bucket (the room grows), and an
/// empty map reads as empty.
#[test]
fn the_batched_walk_reads_every_entry_once() {
    need_kernel!();
    use std::os::fd::AsFd as _;
    const N: u64 = 5000;
    let def = emptcp::object::MapDef {
        map_type: 9, // BPF_MAP_TYPE_LRU_HASH, as SUBFLOWS
        key_size: size_of::<emptcp_common::FlowKey>() as u32,
        value_size: 8,
        max_entries: 8192,
        flags: 0,
        layout: None,
    };
    let fd = emptcp::sys::map_create(&def, "walk_test").expect("create the map");
    let walk = |room: usize| {
        let mut seen = std::collections::HashMap::new();
        emptcp::sys::map_entries(fd.as_fd(), def.key_size as usize, 8, room, |k, v| {
            let at = std::mem::offset_of!(emptcp_common::FlowKey, remote) + 8;
            let key = u64::from_ne_bytes(k[at..at + 8].try_into().unwrap());
            let value = u64::from_ne_bytes(v.try_into().unwrap());
            *seen.entry((key, value)).or_insert(0u32) += 1;
            Ok(true)
        })
        .expect("walk");
        seen
    };
    assert!(walk(emptcp::sys::BATCH_ENTRIES).is_empty(), "empty map");
    let md = aya::maps::MapData::from_fd(fd.try_clone().unwrap()).unwrap();
    let mut m: aya::maps::HashMap<_, emptcp_common::FlowKey, u64> =
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(md)).unwrap();
    for i in 0..N {
        let mut key = emptcp_common::FlowKey::default();
        key.remote[8..16].copy_from_slice(&i.to_ne_bytes());
        m.insert(key, i * 3, 0).unwrap();
    }
    for room in [emptcp::sys::BATCH_ENTRIES, 1] {
        let seen = walk(room);
        assert_eq!(seen.len() as u64, N, "room {room}: entries");
        for i in 0..N {
            assert_eq!(seen.get(&(i, i * 3)), Some(&1), "room {room}: entry {i}");
        }
    }
}
