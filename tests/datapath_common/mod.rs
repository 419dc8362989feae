//! Shared fixtures of the datapath tests: the object loaded with private,
//! unpinned maps (so tests run in parallel), chains configured by hand,
//! BPF_PROG_TEST_RUN through the entry program or one action, and a packet
//! builder that computes every length and checksum from scratch — never
//! incrementally, so it checks the datapath's incremental arithmetic.
#![allow(dead_code)] // each test binary uses a different subset

pub mod egress;
#[path = "../common/gate.rs"]
mod gate;
pub mod skb;
pub mod tc_ingress;
pub use gate::kernel_or_skip;

use std::net::IpAddr;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, ProgramArray},
    programs::{Program, ProgramFd, TestRun as _, TestRunOptions, Xdp},
};
use emptcp_common::{
    Action, AddrKey, CHAIN_NAME_LEN, ChainCounters, ChainDef, ChainStep, FLOW_STATS_LEN, FlowKey,
    FlowStat, FlowState, IfaceChains, MAX_CHAINS_PER_IFACE, MAX_STEPS, OptRef, Outcome, Selector,
    StoredAddAddr, Thresholds, XdpMeta, stats_index,
};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// The loopback interface: BPF_PROG_TEST_RUN needs a real ifindex.
pub const LO: u32 = 1;

/// Returns from the test (after the gate recorded or failed it) when the
/// kernel tier cannot run: `need_kernel!();` opens every kernel test.
#[allow(unused_macros)] // datapath_malformed calls the gate directly
macro_rules! need_kernel {
    () => {
        if !kernel_or_skip(module_path!()) {
            return;
        }
    };
}

/// The chain the tests configure (ingress and egress alike).
pub const CHAIN: u32 = 3;
/// Its thresholds: small, so a few crafted segments cross them.
pub const REMOVE_BELOW: u64 = 10_000;
pub const RECOVER_AT: u64 = 20_000;
pub const TH: Thresholds = Thresholds {
    remove_below: REMOVE_BELOW,
    recover_at: RECOVER_AT,
};
/// The product's chain: track, strip while small, recover once large.
pub const EMPTCP: [(Action, u32); 3] = [
    (Action::RecordFlow, 0),
    (Action::StripAddAddr, 0),
    (Action::RecoverAddAddr, 0),
];

/// The object with [`CHAIN`] = `steps` on the loopback interface.
pub fn dp_with(steps: &[(Action, u32)]) -> Dp {
    let mut dp = Dp::load();
    dp.chain(CHAIN, steps, TH, LO);
    dp
}

pub fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A pure ACK as Linux sends it on an established MPTCP subflow: timestamps
/// and a DSS with a 4-byte data ACK (20 bytes of options, 20 of room).
pub fn pure_ack(base: &Seg, data_ack: u64) -> Seg {
    base.clone()
        .with(|s| s.opts = opts(&[&ts(2000, 900), &dss(Some((data_ack, 4)), None)]))
}

/// The object, loaded with small private maps and PROGS filled.
pub struct Dp {
    pub ebpf: Ebpf,
    /// Keeps the tail-call slots alive (cleared with the last reference).
    progs: ProgramArray<MapData>,
    /// Steps of each chain set with [`Dp::chain`] (for [`Dp::action`]).
    steps: std::collections::HashMap<u32, Vec<(Action, u32)>>,
}

/// The result of one BPF_PROG_TEST_RUN.
#[derive(Debug)]
pub struct Run {
    pub verdict: u32,
    /// The frame after the program, without the XDP metadata.
    pub frame: Vec<u8>,
    /// Bytes of XDP metadata left in front of the frame (`xdp_md.data -
    /// xdp_md.data_meta` as the kernel reports it in ctx_out). Every run
    /// asserts 0: GRO merges only packets whose metadata are equal.
    pub meta_left: usize,
}

/// Programs a test loads only when it uses them ([`Dp::need`]): the
/// ingress capture (an interface with `IFACE_CAPTURE`), the TC egress
/// programs (the egress harness) and the TC ingress ones (`tc_*`, the TC
/// ingress harness). Verifying them is ~70 % of loading the
/// whole object (~0.9 of ~1.3 s on the development machine, several times
/// that in the guest kernel under TCG), and most tests load a fresh object
/// for every case. `every_program_passes_the_verifier` loads them all.
fn on_demand(name: &str) -> bool {
    name == emptcp_common::INGRESS_CAPTURE
        || name == "egress_entry"
        || name.starts_with("tc_")
        || emptcp_common::EGRESS_SLOTS.iter().any(|(n, _)| *n == name)
}

impl Dp {
    /// The object with its XDP programs loaded and in their `PROGS` slots
    /// (the others on demand, [`Dp::need`]).
    pub fn load() -> Dp {
        let mut dp = Dp::load_lazily();
        let names: Vec<String> = dp.ebpf.programs().map(|(n, _)| n.to_string()).collect();
        for n in names.iter().filter(|n| !on_demand(n)) {
            load_program(&mut dp.ebpf, n);
        }
        let slots = Action::ALL
            .iter()
            .map(|a| (a.name(), *a as u32))
            .chain(emptcp_common::PROGS_EXTRA)
            .filter(|(n, _)| !on_demand(n));
        for (name, slot) in slots {
            let p: &Xdp = dp.ebpf.program(name).unwrap().try_into().unwrap();
            let fd: &ProgramFd = p.fd().unwrap();
            dp.progs.set(slot, fd, 0).unwrap();
        }
        dp
    }

    /// The object with no program loaded: every one on demand (a harness of
    /// the TC hooks only, which verifies none of the XDP programs).
    pub fn load_lazily() -> Dp {
        let ebpf = EbpfLoader::new()
            // Small tables: every test loads its own copy.
            .map_max_entries("FLOWS", 4096)
            .map_max_entries("FLOW_ADDRS", 4096)
            .map_max_entries("TOKENS", 4096)
            .map_max_entries("JOINS", 4096)
            .load(emptcp::object::embedded())
            .expect("load object");
        let mut ebpf = ebpf;
        let progs = ProgramArray::try_from(ebpf.take_map("PROGS").unwrap()).unwrap();
        Dp {
            ebpf,
            progs,
            steps: std::collections::HashMap::new(),
        }
    }

    /// Loads program `name` if it is not loaded yet (and puts the ingress
    /// capture in its PROGS slot, where the entry tail-calls it).
    pub fn need(&mut self, name: &str) {
        if self.ebpf.program(name).unwrap().fd().is_ok() {
            return;
        }
        load_program(&mut self.ebpf, name);
        if name == emptcp_common::INGRESS_CAPTURE {
            let fd = self.ebpf.program(name).unwrap().fd().unwrap();
            self.progs
                .set(emptcp_common::INGRESS_CAPTURE_SLOT, fd, 0)
                .unwrap();
        }
    }

    /// Every program of the object loaded.
    pub fn load_all(&mut self) {
        let names: Vec<String> = self.ebpf.programs().map(|(n, _)| n.to_string()).collect();
        for n in &names {
            self.need(n);
        }
    }

    /// Chain `id` = `steps` (action, arg) on interface `ifindex`, matching
    /// every TCP packet.
    pub fn chain(&mut self, id: u32, steps: &[(Action, u32)], th: Thresholds, ifindex: u32) {
        let mut def = ChainDef {
            len: steps.len() as u32,
            _pad: 0,
            steps: [ChainStep::default(); MAX_STEPS],
            name: [0; CHAIN_NAME_LEN],
        };
        self.steps.insert(id, steps.to_vec());
        for (i, (a, arg)) in steps.iter().enumerate() {
            def.steps[i] = ChainStep {
                action: *a as u32,
                arg: *arg,
            };
        }
        def.name[..4].copy_from_slice(b"test");
        let mut m: aya::maps::Array<_, ChainDef> =
            aya::maps::Array::try_from(self.ebpf.map_mut("CHAINS").unwrap()).unwrap();
        m.set(id, def, 0).unwrap();
        self.thresholds(id, th);
        let mut m: HashMap<_, u32, Selector> =
            HashMap::try_from(self.ebpf.map_mut("SELECTORS").unwrap()).unwrap();
        m.insert(id, Selector::default(), 0).unwrap();
        let mut chains = [0u32; MAX_CHAINS_PER_IFACE];
        chains[0] = id;
        // Only the IFACES hash: the tests exercise the entry program's
        // fallback path (apply also fills the IFACE_SLOTS cache, which the
        // end-to-end tests and the benchmark exercise).
        let ifc = IfaceChains {
            n_chains: 1,
            ifindex,
            chains,
            ..IfaceChains::EMPTY
        };
        let mut m: HashMap<_, u32, IfaceChains> =
            HashMap::try_from(self.ebpf.map_mut("IFACES").unwrap()).unwrap();
        m.insert(ifindex, ifc, 0).unwrap();
    }

    /// Empties tail-call slot `slot` of `PROGS` (a failed tail call).
    pub fn clear_slot(&mut self, slot: u32) {
        self.progs.clear_index(&slot).unwrap();
    }

    /// `IFACES[ifindex]` = `chains` in order (each set with [`Dp::chain`])
    /// with `IfaceChains::flags` = `flags`.
    pub fn iface(&mut self, ifindex: u32, chains: &[u32], flags: u32) {
        // The XDP capture, where the XDP entry is loaded (not in a harness
        // of the TC hooks only, `Dp::load_lazily`).
        let xdp = self.ebpf.program("entry").unwrap().fd().is_ok();
        if xdp && flags & emptcp_common::IFACE_CAPTURE != 0 {
            self.need(emptcp_common::INGRESS_CAPTURE);
        }
        let mut ids = [0u32; MAX_CHAINS_PER_IFACE];
        ids[..chains.len()].copy_from_slice(chains);
        let ifc = IfaceChains {
            n_chains: chains.len() as u32,
            ifindex,
            flags,
            chains: ids,
            ..IfaceChains::EMPTY
        };
        let mut m: HashMap<_, u32, IfaceChains> =
            HashMap::try_from(self.ebpf.map_mut("IFACES").unwrap()).unwrap();
        m.insert(ifindex, ifc, 0).unwrap();
    }

    /// `IFACES[ifc.ifindex]` = `ifc` as given (e.g. encoded by the
    /// reconciler's own `codec::iface_to_kernel`).
    pub fn put_iface(&mut self, ifc: IfaceChains) {
        let mut m: HashMap<_, u32, IfaceChains> =
            HashMap::try_from(self.ebpf.map_mut("IFACES").unwrap()).unwrap();
        m.insert(ifc.ifindex, ifc, 0).unwrap();
    }

    /// `STATS[STATS_ROW_ENTRY, outcome]` summed over CPUs.
    pub fn entry_outcome(&self, o: Outcome) -> u64 {
        let m: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("STATS").unwrap()).unwrap();
        m.get(&stats_index(emptcp_common::STATS_ROW_ENTRY, o), 0)
            .unwrap()
            .iter()
            .sum()
    }

    pub fn thresholds(&mut self, id: u32, th: Thresholds) {
        let mut m: HashMap<_, u32, Thresholds> =
            HashMap::try_from(self.ebpf.map_mut("THRESHOLDS").unwrap()).unwrap();
        m.insert(id, th, 0).unwrap();
    }

    fn run(&self, prog: &str, data: &[u8], meta_len: u32, ifindex: u32) -> Run {
        let p: &Xdp = self.ebpf.program(prog).unwrap().try_into().unwrap();
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex. `data` = metadata length.
        let ctx_in = xdp_md(meta_len, data.len() as u32, ifindex);
        let mut ctx_out = [0u8; 24];
        let mut out = vec![0u8; data.len() + 512];
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(data),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                ..TestRunOptions::default()
            })
            .unwrap_or_else(|e| panic!("test_run {prog}: {e:?}"));
        // BPF_PROG_TEST_RUN copies out data_meta..data_end and reports
        // `data` relative to data_meta: the metadata length.
        let meta = u32::from_ne_bytes(ctx_out[..4].try_into().unwrap()) as usize;
        out.truncate(r.data_size_out as usize);
        let run = Run {
            verdict: r.return_value,
            frame: out[meta..].to_vec(),
            meta_left: meta,
        };
        assert_eq!(
            run.meta_left, 0,
            "{prog} (verdict {}) left {meta} bytes of XDP metadata in front of the packet",
            run.verdict
        );
        run
    }

    /// Mean time per run of `frame` through `prog`, over `repeat` runs
    /// (BPF_PROG_TEST_RUN's own clock; the frame is reset between runs).
    pub fn time(&self, prog: &str, frame: &[u8], repeat: u32) -> std::time::Duration {
        let p: &Xdp = self.ebpf.program(prog).unwrap().try_into().unwrap();
        let ctx_in = xdp_md(0, frame.len() as u32, LO);
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx_in),
                repeat,
                ..TestRunOptions::default()
            })
            .unwrap();
        r.duration
    }

    /// Runs `frame` through the entry program (the whole chain).
    pub fn entry(&self, frame: &[u8]) -> Run {
        self.run("entry", frame, 0, LO)
    }

    /// Runs `frame` through program `prog` with no metadata in front.
    pub fn bare(&self, prog: &str, frame: &[u8]) -> Run {
        self.run(prog, frame, 0, LO)
    }

    /// Runs `frame` through one action, with the description the entry
    /// would have written for step `pos` of chain `chain` in `XDP_DESC`
    /// (every CPU's slot: the run may land on any), invalidated again after
    /// the run, as the end of a chain does on the CPU it ran on.
    pub fn action(&mut self, a: Action, chain: u32, pos: u32, frame: &[u8]) -> Run {
        let meta = describe(frame, chain, pos, &self.steps[&chain]);
        self.set_description(meta);
        let r = self.run(a.name(), frame, 0, LO);
        self.set_description(XdpMeta::default());
        r
    }

    fn set_description(&mut self, m: XdpMeta) {
        let mut d: PerCpuArray<_, XdpMeta> =
            PerCpuArray::try_from(self.ebpf.map_mut("XDP_DESC").unwrap()).unwrap();
        let n = aya::util::nr_cpus().expect("number of CPUs");
        d.set(0, aya::maps::PerCpuValues::try_from(vec![m; n]).unwrap(), 0)
            .unwrap();
    }

    pub fn flow(&self, key: &FlowKey) -> Option<FlowState> {
        let m: HashMap<_, FlowKey, FlowState> =
            HashMap::try_from(self.ebpf.map("FLOWS").unwrap()).unwrap();
        m.get(key, 0).ok()
    }

    pub fn put_flow(&mut self, key: &FlowKey, f: &FlowState) {
        let mut m: HashMap<_, FlowKey, FlowState> =
            HashMap::try_from(self.ebpf.map_mut("FLOWS").unwrap()).unwrap();
        m.insert(key, f, 0).unwrap();
    }

    /// The connection `TOKENS` maps `token` to.
    pub fn token(&self, token: u32) -> Option<FlowKey> {
        let m: HashMap<_, u32, FlowKey> =
            HashMap::try_from(self.ebpf.map("TOKENS").unwrap()).unwrap();
        m.get(&token, 0).ok()
    }

    /// The `JOINS` entry of the joined subflow `key`.
    /// The window scale kept for a handshake the peer opened (`SYN_SHIFTS`).
    pub fn syn_shift(&self, key: &FlowKey) -> Option<emptcp_common::SynShift> {
        let m: HashMap<_, FlowKey, emptcp_common::SynShift> =
            HashMap::try_from(self.ebpf.map("SYN_SHIFTS").unwrap()).unwrap();
        m.get(key, 0).ok()
    }

    pub fn join(&self, key: &FlowKey) -> Option<emptcp_common::JoinState> {
        let m: HashMap<_, FlowKey, emptcp_common::JoinState> =
            HashMap::try_from(self.ebpf.map("JOINS").unwrap()).unwrap();
        m.get(key, 0).ok()
    }

    pub fn put_join(&mut self, key: &FlowKey, j: &emptcp_common::JoinState) {
        let mut m: HashMap<_, FlowKey, emptcp_common::JoinState> =
            HashMap::try_from(self.ebpf.map_mut("JOINS").unwrap()).unwrap();
        m.insert(key, j, 0).unwrap();
    }

    /// The option stored in `slot` of the connection `key`, wherever the
    /// datapath keeps it (the entry's own place, or `FLOW_ADDRS`).
    pub fn flow_addr(&self, key: &FlowKey, slot: u32) -> Option<StoredAddAddr> {
        let held = self.flow(key).and_then(|f| f.held_addr(slot).copied());
        held.or_else(|| self.table_addr(key, slot))
    }

    /// The option of `slot` in `FLOW_ADDRS` only.
    pub fn table_addr(&self, key: &FlowKey, slot: u32) -> Option<StoredAddAddr> {
        let m: HashMap<_, AddrKey, StoredAddAddr> =
            HashMap::try_from(self.ebpf.map("FLOW_ADDRS").unwrap()).unwrap();
        m.get(&AddrKey { flow: *key, slot }, 0).ok()
    }

    pub fn put_flow_addr(&mut self, key: &FlowKey, slot: u32, v: &StoredAddAddr) {
        let mut m: HashMap<_, AddrKey, StoredAddAddr> =
            HashMap::try_from(self.ebpf.map_mut("FLOW_ADDRS").unwrap()).unwrap();
        m.insert(AddrKey { flow: *key, slot }, v, 0).unwrap();
    }

    /// Stored options of all connections: the entries' own and `FLOW_ADDRS`'.
    pub fn flow_addr_count(&self) -> usize {
        let flows: HashMap<_, FlowKey, FlowState> =
            HashMap::try_from(self.ebpf.map("FLOWS").unwrap()).unwrap();
        let held = flows
            .iter()
            .filter(|e| e.as_ref().unwrap().1.held_slot().is_some())
            .count();
        held + self.table_addr_count()
    }

    /// Entries of `FLOW_ADDRS`.
    pub fn table_addr_count(&self) -> usize {
        let m: HashMap<_, AddrKey, StoredAddAddr> =
            HashMap::try_from(self.ebpf.map("FLOW_ADDRS").unwrap()).unwrap();
        m.keys().count()
    }

    /// `FLOW_STATS[e]` summed over CPUs.
    pub fn event(&self, e: FlowStat) -> u64 {
        let m: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("FLOW_STATS").unwrap()).unwrap();
        assert!((e as u32) < FLOW_STATS_LEN);
        m.get(&(e as u32), 0).unwrap().iter().sum()
    }

    /// Packets the `count` action saw for chain `id` (all CPUs).
    pub fn chain_packets(&self, id: u32) -> u64 {
        let m: PerCpuArray<_, ChainCounters> =
            PerCpuArray::try_from(self.ebpf.map("CHAIN_STATS").unwrap()).unwrap();
        m.get(&id, 0).unwrap().iter().map(|c| c.packets).sum()
    }

    /// `STATS[row, outcome]` summed over CPUs; `Seen` is what `emptcp
    /// status` reports, the sum of the other three (the programs never
    /// count it: asserted here).
    pub fn outcome(&self, a: Action, o: Outcome) -> u64 {
        let m: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("STATS").unwrap()).unwrap();
        let get = |o| -> u64 { m.get(&stats_index(a as u32, o), 0).unwrap().iter().sum() };
        if o != Outcome::Seen {
            return get(o);
        }
        assert_eq!(get(Outcome::Seen), 0, "{}: `seen` counted", a.name());
        get(Outcome::Applied) + get(Outcome::Passed) + get(Outcome::Error)
    }
}

fn xdp_md(meta_len: u32, len: u32, ifindex: u32) -> [u8; 24] {
    let mut b = [0u8; 24];
    for (i, v) in [meta_len, len, 0, ifindex, 0, 0].iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    b
}

/// The description the entry program writes for `frame` at step `pos` of a
/// chain with `steps`: an independent implementation of its parse and option
/// scan (from RFC 793/8684, not from the eBPF code).
fn describe(frame: &[u8], chain: u32, pos: u32, steps: &[(Action, u32)]) -> XdpMeta {
    let (l3, l4, family) = offsets(frame);
    let be16 = |i: usize| u16::from_be_bytes([frame[i], frame[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes(frame[i..i + 4].try_into().unwrap());
    let seg_len = if family == 4 {
        be16(l3 + 2) as usize - (l4 - l3)
    } else {
        be16(l3 + 4) as usize
    };
    let mut key = FlowKey {
        family,
        local_port: be16(l4 + 2),
        remote_port: be16(l4),
        ..FlowKey::default()
    };
    let (src, n) = if family == 4 {
        (l3 + 12, 4)
    } else {
        (l3 + 8, 16)
    };
    key.remote[..n].copy_from_slice(&frame[src..src + n]);
    key.local[..n].copy_from_slice(&frame[src + n..src + 2 * n]);
    let mut m = XdpMeta {
        magic: emptcp_common::META_MAGIC,
        chain,
        key,
        l3_off: l3 as u16,
        l4_off: l4 as u16,
        seg_len: seg_len as u16,
        seq: be32(l4 + 4),
        ack: be32(l4 + 8),
        window: be16(l4 + 14),
        pos: pos as u8,
        n_steps: steps.len() as u8,
        family,
        tcp_flags: frame[l4 + 13],
        ..XdpMeta::default()
    };
    for (i, (a, arg)) in steps.iter().enumerate() {
        m.steps[i] = *a as u8;
        m.args[i] = *arg;
    }
    let opts = &frame[l4 + 20..l4 + (frame[l4 + 12] >> 4) as usize * 4];
    m.opt_len = opts.len() as u8;
    let mut i = 0;
    m.opt_state = emptcp_common::OPTS_OK;
    while i < opts.len() {
        match opts[i] {
            0 => {
                m.opt_state = emptcp_common::OPTS_EOL;
                break;
            }
            1 => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let len = opts[i + 1] as usize;
        let r = OptRef {
            off: i as u8,
            len: len as u8,
        };
        let sub = opts.get(i + 2).map_or(0xff, |b| b >> 4);
        match (opts[i], sub) {
            (30, s) => {
                m.n_mptcp += 1;
                match s {
                    2 if m.dss.len == 0 => m.dss = r,
                    0 if m.capable.len == 0 => m.capable = r,
                    1 if m.join.len == 0 => m.join = r,
                    4 if m.remove_addr.len == 0 => m.remove_addr = r,
                    7 => m.fastclose = r,
                    3 if opts[i + 2] & 1 == 1 && len >= 8 && m.echo.len == 0 => m.echo = r,
                    5 if matches!(len, 3 | 4) && m.prio.len == 0 => m.prio = r,
                    3 if opts[i + 2] & 1 == 0
                        && matches!(len, 16 | 18 | 28 | 30)
                        && m.add_addr.len == 0 =>
                    {
                        m.add_addr = r
                    }
                    _ => {}
                }
            }
            (8, _) if len == 10 => {
                m.ts = r;
                m.tsval = u32::from_be_bytes(opts[i + 2..i + 6].try_into().unwrap());
                m.tsecr = u32::from_be_bytes(opts[i + 6..i + 10].try_into().unwrap());
            }
            (3, _) if len == 3 => m.wscale = r,
            _ => {}
        }
        i += len;
    }
    m
}

/// L3/L4 offsets and family of a frame this builder made (for metadata).
fn offsets(f: &[u8]) -> (usize, usize, u8) {
    let mut l3 = 14;
    let mut proto = u16::from_be_bytes([f[12], f[13]]);
    while proto == 0x8100 || proto == 0x88a8 {
        proto = u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]);
        l3 += 4;
    }
    if proto == 0x86dd {
        (l3, l3 + 40, 6)
    } else {
        (l3, l3 + (f[l3] & 0x0f) as usize * 4, 4)
    }
}

// ---- packets ---------------------------------------------------------------

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// A TCP segment from the server (remote) to the client (local).
#[derive(Clone, Debug)]
pub struct Seg {
    pub vlans: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub ip_opts: Vec<u8>,
    pub opts: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Seg {
    pub fn v4() -> Seg {
        Seg {
            vlans: vec![],
            src: "192.0.2.2".parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
            sport: 443,
            dport: 40000,
            seq: 1_000_000,
            ack: 2_000_000,
            flags: ACK,
            window: 502,
            ip_opts: vec![],
            opts: vec![],
            payload: vec![],
        }
    }

    pub fn v6() -> Seg {
        Seg {
            src: "2001:db8::2".parse().unwrap(),
            dst: "2001:db8::1".parse().unwrap(),
            ..Seg::v4()
        }
    }

    pub fn with(mut self, f: impl FnOnce(&mut Seg)) -> Seg {
        f(&mut self);
        self
    }

    /// The flow key the datapath derives (local = destination).
    pub fn key(&self) -> FlowKey {
        let mut k = FlowKey {
            local_port: self.dport,
            remote_port: self.sport,
            ..FlowKey::default()
        };
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                k.family = 4;
                k.remote[..4].copy_from_slice(&s.octets());
                k.local[..4].copy_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                k.family = 6;
                k.remote = s.octets();
                k.local = d.octets();
            }
            _ => panic!("mixed families"),
        }
        k
    }

    /// The Ethernet frame, with lengths and checksums computed from scratch.
    pub fn frame(&self) -> Vec<u8> {
        assert_eq!(self.opts.len() % 4, 0, "options must be padded");
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&self.sport.to_be_bytes());
        tcp.extend_from_slice(&self.dport.to_be_bytes());
        tcp.extend_from_slice(&self.seq.to_be_bytes());
        tcp.extend_from_slice(&self.ack.to_be_bytes());
        tcp.push((((20 + self.opts.len()) / 4) as u8) << 4);
        tcp.push(self.flags);
        tcp.extend_from_slice(&self.window.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        tcp.extend_from_slice(&self.opts);
        tcp.extend_from_slice(&self.payload);
        let mut f = Vec::new();
        f.extend_from_slice(&CLIENT_MAC);
        f.extend_from_slice(&SERVER_MAC);
        for (i, v) in self.vlans.iter().enumerate() {
            // Outer tag 802.1ad when stacked, like QinQ.
            let tpid: u16 = if i == 0 && self.vlans.len() > 1 {
                0x88a8
            } else {
                0x8100
            };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let c = checksum(&[&pseudo4(s.octets(), d.octets(), tcp.len()), &tcp]);
                tcp[16..18].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let ihl = 20 + self.ip_opts.len();
                let mut ip = vec![0x40 | (ihl / 4) as u8, 0];
                ip.extend_from_slice(&((ihl + tcp.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 6, 0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                ip.extend_from_slice(&self.ip_opts);
                let c = checksum(&[&ip]);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let c = checksum(&[&pseudo6(s.octets(), d.octets(), tcp.len()), &tcp]);
                tcp[16..18].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
                f.extend_from_slice(&[6, 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            _ => panic!("mixed families"),
        }
        f.extend_from_slice(&tcp);
        f
    }
}

/// The frame of `s` as a sender with TX checksum offload hands it over
/// (CHECKSUM_PARTIAL, e.g. across a veth pair): the TCP checksum field
/// holds only the folded pseudo-header sum (Linux writes
/// `~tcp_v4_check(len, saddr, daddr, 0)`), the device would sum the rest.
pub fn partial_frame(s: &Seg) -> Vec<u8> {
    let mut f = s.frame();
    let tcp_len = 20 + s.opts.len() + s.payload.len();
    let ph = match (s.src, s.dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => pseudo4(a.octets(), b.octets(), tcp_len),
        (IpAddr::V6(a), IpAddr::V6(b)) => pseudo6(a.octets(), b.octets(), tcp_len),
        _ => panic!("mixed families"),
    };
    let field = !checksum(&[&ph]);
    let t = f.len() - tcp_len;
    f[t + 16..t + 18].copy_from_slice(&field.to_be_bytes());
    f
}

fn pseudo4(s: [u8; 4], d: [u8; 4], len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&s);
    p.extend_from_slice(&d);
    p.extend_from_slice(&[0, 6]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

fn pseudo6(s: [u8; 16], d: [u8; 16], len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&s);
    p.extend_from_slice(&d);
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 6]);
    p
}

/// The Internet checksum of the concatenation of `parts` (each even-length
/// except possibly the last).
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for p in parts {
        for c in p.chunks(2) {
            let hi = c[0] as u64;
            let lo = if c.len() > 1 { c[1] as u64 } else { 0 };
            sum += (hi << 8) | lo;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Checks the IP and TCP checksums of a frame with etherparse, a second
/// implementation independent of both the datapath and [`Seg::frame`].
pub fn assert_checksums_valid(frame: &[u8]) {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(frame).expect("frame parses");
    let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
        panic!("not TCP");
    };
    let want = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "IPv4 header checksum"
            );
            tcp.calc_checksum_ipv4(h.source, h.destination).unwrap()
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header().to_header();
            tcp.calc_checksum_ipv6(h.source, h.destination).unwrap()
        }
        _ => panic!("not IP"),
    };
    assert_eq!(tcp.checksum(), want, "TCP checksum");
}

// ---- TCP and MPTCP options (raw bytes, RFC 7323 / RFC 8684) ----------------

pub fn nops(n: usize) -> Vec<u8> {
    vec![1; n]
}

/// NOP NOP + timestamps, as Linux sends them (12 bytes).
pub fn ts(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o
}

/// NOP + window scale (4 bytes).
pub fn wscale(shift: u8) -> Vec<u8> {
    vec![1, 3, 3, shift]
}

/// MP_CAPABLE of a SYN-ACK (v1, with the sender's key; 12 bytes).
pub fn mp_capable(key: u64) -> Vec<u8> {
    let mut o = vec![30, 12, 0x01, 0x81];
    o.extend_from_slice(&key.to_be_bytes());
    o
}

/// DSS: optional data ACK (value, 4 or 8 bytes) and optional mapping
/// (data seq, 4 or 8 bytes, subflow seq, data-level length).
pub fn dss(ack: Option<(u64, usize)>, map: Option<(u64, usize, u32, u16)>) -> Vec<u8> {
    let mut flags = 0u8;
    let mut body = Vec::new();
    if let Some((v, n)) = ack {
        flags |= 0x01 | if n == 8 { 0x02 } else { 0 };
        body.extend_from_slice(&v.to_be_bytes()[8 - n..]);
    }
    if let Some((dsn, n, ssn, dll)) = map {
        flags |= 0x04 | if n == 8 { 0x08 } else { 0 };
        body.extend_from_slice(&dsn.to_be_bytes()[8 - n..]);
        body.extend_from_slice(&ssn.to_be_bytes());
        body.extend_from_slice(&dll.to_be_bytes());
    }
    let mut o = vec![30, (4 + body.len()) as u8, 0x20, flags];
    o.extend_from_slice(&body);
    o
}

/// ADD_ADDR: address id, address (4 or 16 bytes), optional port, and the
/// 8-byte HMAC unless it is an echo.
pub fn add_addr(id: u8, addr: IpAddr, port: Option<u16>, echo: bool) -> Vec<u8> {
    let mut body = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    if let Some(p) = port {
        body.extend_from_slice(&p.to_be_bytes());
    }
    if !echo {
        body.extend_from_slice(
            &0x1122_3344_5566_7700u64
                .wrapping_add(id as u64)
                .to_be_bytes(),
        );
    }
    let mut o = vec![30, (4 + body.len()) as u8, 0x30 | echo as u8, id];
    o.extend_from_slice(&body);
    o
}

/// MP_PRIO, 3-byte form.
pub fn mp_prio(backup: bool) -> Vec<u8> {
    vec![30, 3, 0x50 | backup as u8]
}

/// Concatenates options and pads them with NOPs (in front) to 4 bytes.
pub fn opts(parts: &[&[u8]]) -> Vec<u8> {
    let mut o: Vec<u8> = parts.concat();
    let pad = (4 - o.len() % 4) % 4;
    let mut v = nops(pad);
    v.append(&mut o);
    v
}

/// A frame of `s` with its options replaced by raw bytes (padded with
/// NOPs at the end so the data offset stays consistent).
pub fn with_opts(s: &Seg, raw: &[u8]) -> Vec<u8> {
    let mut o = raw.to_vec();
    while !o.len().is_multiple_of(4) {
        o.push(1);
    }
    s.clone().with(|s| s.opts = o).frame()
}

pub fn l4(v6: bool) -> usize {
    if v6 { 14 + 40 } else { 14 + 20 }
}

pub fn set16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Malformed variants of the frame of `s` that apply to both families
/// (TCP header and options), each named: every one must pass the datapath
/// byte for byte, changing no state.
pub fn malformed_tcp(s: &Seg) -> Vec<(String, Vec<u8>)> {
    let v6 = s.src.is_ipv6();
    let good = s.frame();
    let t = l4(v6);
    let fam = if v6 { "v6" } else { "v4" };
    let mut c: Vec<(&str, Vec<u8>)> = vec![
        ("MPTCP option length 0", with_opts(s, &[30, 0, 0x30, 2])),
        ("MPTCP option length 1", with_opts(s, &[30, 1, 0x30, 2])),
        (
            "MPTCP option length 2 (no subtype)",
            with_opts(s, &[30, 2, 1, 1, 30, 8, 0x20, 1, 0, 0, 0, 1]),
        ),
        ("timestamp length 1", with_opts(s, &[8, 1, 1, 1])),
        // Linux's NOP, NOP, TS start (the scan reads it in one word) with
        // the header ending 4 bytes into the timestamp values: the bytes
        // after it are payload, not the option's.
        (
            "timestamps cut by the end of the header",
            with_opts(s, &[1, 1, 8, 10, 0, 0, 0, 1]),
        ),
        (
            "MSS length 0 before a DSS",
            with_opts(s, &[2, 0, 30, 8, 0x20, 1, 0, 0, 0, 1]),
        ),
        ("ADD_ADDR running past the header", {
            let mut o = dss(Some((100, 4)), None);
            // Its length byte still says 16, but only 12 bytes follow.
            o.extend(&add_addr(2, "198.51.100.2".parse().unwrap(), None, false)[..12]);
            with_opts(s, &o)
        }),
        (
            "DSS length 40 past the header",
            with_opts(s, &[30, 40, 0x20, 1, 0, 0, 0, 1]),
        ),
        ("option length 255", with_opts(s, &[30, 255, 0x20, 1])),
        ("kind without length as the last byte", {
            let mut o = dss(Some((100, 4)), None);
            o.extend([1, 1, 1, 30]);
            with_opts(s, &o)
        }),
    ];
    let mut hdr = |name: &'static str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut g = good.clone();
        f(&mut g);
        c.push((name, g));
    };
    hdr("data offset 4", &|g| g[t + 12] = 0x40);
    hdr("data offset 0", &|g| g[t + 12] = 0x00);
    hdr("data offset 15 past the packet", &|g| g[t + 12] = 0xf0);
    hdr("data offset 12 past the segment", &|g| g[t + 12] = 0xc0);
    hdr("truncated TCP header", &|g| g.truncate(t + 10));
    hdr("frame ends inside the options", &|g| g.truncate(t + 30));
    c.into_iter()
        .map(|(n, f)| (format!("{fam}: {n}"), f))
        .collect()
}

/// Pretty hex diff for a failed frame comparison.
pub fn assert_frame_eq(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: frames differ (len {} vs {}, first difference at {first:?})\n got: {}\nwant: {}",
            got.len(),
            want.len(),
            hex(got),
            hex(want)
        );
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---- a connection up to recovery (shared by the action and recovery tests) --

pub fn syn_ack(base: &Seg) -> Seg {
    base.clone().with(|s| {
        s.flags = SYN | ACK;
        s.seq = base.seq.wrapping_sub(1);
        s.opts = opts(&[
            &[2, 4, 0x05, 0xb4],
            &wscale(7),
            &ts(1000, 500),
            &mp_capable(42),
        ]);
    })
}

/// Runs the SYN-ACK of `base`'s connection through the chain.
pub fn handshake(dp: &Dp, base: &Seg) {
    let r = dp.entry(&syn_ack(base).frame());
    assert_eq!(r.verdict, XDP_PASS);
    assert!(dp.flow(&base.key()).is_some(), "SYN-ACK created no flow");
}

/// A server data segment with a full DSS: no room left (40 bytes).
pub fn full_data(base: &Seg) -> Seg {
    base.clone().with(|s| {
        s.flags = ACK | PSH;
        s.opts = opts(&[
            &ts(2001, 901),
            &dss(Some((5000, 8)), Some((70_000, 8, 1, 100))),
        ]);
        s.payload = vec![0xab; 100];
    })
}

pub fn flow_of(dp: &Dp, s: &Seg) -> FlowState {
    dp.flow(&s.key()).expect("flow tracked")
}

/// Stores `aa` while the flow is small, then grows it past recover_at with
/// data ACKs, all through the chain.
pub fn store_then_grow(dp: &Dp, base: &Seg, aa: &[u8]) {
    handshake(dp, base);
    let s = base.clone().with(|s| s.opts = opts(&[aa]));
    assert_eq!(dp.entry(&s.frame()).verdict, XDP_DROP, "stored by strip");
    let grow = |v| {
        base.clone()
            .with(|s| s.opts = opts(&[&dss(Some((v, 8)), None)]))
    };
    dp.entry(&grow(1).frame());
    // (Packets with room after this get the option: use a full one.)
    let big = full_data(base).with(|s| {
        s.opts = opts(&[
            &ts(1, 1),
            &dss(Some((1 + RECOVER_AT, 8)), Some((1, 8, 1, 100))),
        ])
    });
    assert_eq!(big.opts.len(), 40);
    let r = dp.entry(&big.frame());
    assert_eq!(r.verdict, XDP_PASS);
    assert_frame_eq(&r.frame, &big.frame(), "no room: untouched");
    assert!(flow_of(dp, base).bytes >= RECOVER_AT);
}

fn load_program(ebpf: &mut Ebpf, n: &str) {
    let r = match ebpf.program_mut(n).unwrap() {
        Program::Xdp(p) => p.load(),
        Program::SchedClassifier(p) => p.load(),
        _ => panic!("program {n}: unexpected type"),
    };
    if let Err(e) = r {
        panic!("program {n} rejected: {e:?}");
    }
}
