//! The TC egress side of the datapath tests: the object with one egress
//! chain on the loopback interface, run through `egress_entry` with an skb
//! (BPF_PROG_TEST_RUN), and the capture (`SUBFLOWS`, `SUBFLOW_EVENTS`,
//! `EGRESS_STATS`) read back.
use aya::maps::{HashMap, MapData, PerCpuArray, ProgramArray, RingBuf};
use emptcp_common::{
    EGRESS_SLOTS, EgressStat, FlowKey, IfaceChains, MAX_CHAINS_PER_IFACE, SF_CLOSED, SubflowEvent,
    SubflowState, Thresholds,
};

use super::{skb::*, *};

/// What the egress programs return for a packet they pass on.
pub use super::skb::TCX_NEXT as PASS;

/// The object with one egress chain on the loopback interface (the device
/// BPF_PROG_TEST_RUN gives an skb).
pub struct Eg {
    pub dp: Dp,
    _egress_progs: ProgramArray<MapData>,
    /// `SUBFLOW_EVENTS`, taken out of the object to be read.
    events: RingBuf<MapData>,
}

pub fn eg(steps: &[(Action, u32)]) -> Eg {
    eg_on(Dp::load(), steps)
}

/// [`eg`] on the object `dp`.
pub fn eg_on(mut dp: Dp, steps: &[(Action, u32)]) -> Eg {
    // CHAINS and SELECTORS; its IFACES entry is on an ifindex nothing uses.
    dp.chain(CHAIN, steps, Thresholds::default(), 999_999);
    let mut chains = [0u32; MAX_CHAINS_PER_IFACE];
    chains[0] = CHAIN;
    let ifc = IfaceChains {
        n_chains: 1,
        ifindex: LO,
        chains,
        ..IfaceChains::EMPTY
    };
    let mut m: HashMap<_, u32, IfaceChains> =
        HashMap::try_from(dp.ebpf.map_mut("EGRESS_IFACES").unwrap()).unwrap();
    m.insert(LO, ifc, 0).unwrap();
    dp.need("egress_entry");
    let mut progs = ProgramArray::try_from(dp.ebpf.take_map("EGRESS_PROGS").unwrap()).unwrap();
    for (name, slot) in EGRESS_SLOTS {
        dp.need(name);
        let fd = dp.ebpf.program(name).unwrap().fd().unwrap();
        progs.set(slot, fd, 0).unwrap();
    }
    let events = RingBuf::try_from(dp.ebpf.take_map("SUBFLOW_EVENTS").unwrap()).unwrap();
    Eg {
        dp,
        _egress_progs: progs,
        events,
    }
}

impl Eg {
    /// Runs `frame` through `egress_entry`; `gso_size` marks the skb GSO.
    pub fn run(&self, frame: &[u8], gso_size: u32) -> (i32, Vec<u8>) {
        let skb = Skb {
            gso_size,
            ..Skb::default()
        };
        let r = run_skb(&self.dp, "egress_entry", frame, skb);
        (r.ret, r.frame)
    }

    /// The live (not closed) capture entry of `key`.
    pub fn subflow(&self, key: &FlowKey) -> Option<SubflowState> {
        self.entry(key).filter(|s| s.flags & SF_CLOSED == 0)
    }

    /// The closed subflow's tombstone left in `SUBFLOWS` (`SF_CLOSED`).
    pub fn tombstone(&self, key: &FlowKey) -> Option<SubflowState> {
        self.entry(key).filter(|s| s.flags & SF_CLOSED != 0)
    }

    fn entry(&self, key: &FlowKey) -> Option<SubflowState> {
        let m: HashMap<_, FlowKey, SubflowState> =
            HashMap::try_from(self.dp.ebpf.map("SUBFLOWS").unwrap()).unwrap();
        m.get(key, 0).ok()
    }

    /// The `SUBFLOW_EVENTS` records not read yet, oldest first.
    pub fn events(&mut self) -> Vec<SubflowEvent> {
        let mut v = Vec::new();
        while let Some(item) = self.events.next() {
            assert_eq!(item.len(), size_of::<SubflowEvent>());
            v.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const SubflowEvent) });
        }
        v
    }

    pub fn stat(&self, e: EgressStat) -> u64 {
        let m: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.dp.ebpf.map("EGRESS_STATS").unwrap()).unwrap();
        m.get(&(e as u32), 0).unwrap().iter().sum()
    }

    pub fn assert_becomes(&self, seg: &Seg, want: &Seg, what: &str) {
        let (v, got) = self.run(&seg.frame(), 0);
        assert_eq!(v, PASS, "{what}: verdict");
        assert_frame_eq(&got, &want.frame(), what);
        assert_checksums_valid(&got);
    }

    pub fn assert_untouched(&self, seg: &Seg, gso: u32, what: &str) {
        let f = seg.frame();
        let (v, got) = self.run(&f, gso);
        assert_eq!(v, PASS, "{what}: verdict");
        assert_frame_eq(&got, &f, what);
    }
}

/// The key capture uses: local = the packet's SOURCE.
pub fn ekey(s: &Seg) -> FlowKey {
    let k = s.key();
    FlowKey {
        local_port: k.remote_port,
        remote_port: k.local_port,
        local: k.remote,
        remote: k.local,
        ..k
    }
}

/// The segment `base` (server -> client) turned around: what the client
/// sends on the same subflow.
pub fn sent_by_client(base: &Seg) -> Seg {
    base.clone().with(|s| {
        (s.src, s.dst) = (base.dst, base.src);
        (s.sport, s.dport) = (base.dport, base.sport);
        (s.seq, s.ack) = (base.ack, base.seq);
    })
}

/// MP_CAPABLE of the third ACK (v1): the sender's then the receiver's key.
pub fn mp_capable_ack(local: u64, remote: u64) -> Vec<u8> {
    let mut o = vec![30, 20, 0x01, 0x81];
    o.extend_from_slice(&local.to_be_bytes());
    o.extend_from_slice(&remote.to_be_bytes());
    o
}
