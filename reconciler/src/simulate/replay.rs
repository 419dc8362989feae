//! Replays packets through the applied datapath, in capture order:
//! received ones through the XDP entry (BPF_PROG_TEST_RUN with the
//! stand-in's ingress_ifindex, so its chains and the tail calls run), sent
//! ones through the TC egress entry (an skb of the stand-in). Flow state
//! lives in the pinned maps across packets, as on a host.
//!
//! The recovery agent is simulated on the same clock: each recovery event
//! the datapath emits while a packet is replayed is answered at that
//! packet's capture time with the frame the agent would inject
//! (`agent::frame_for`, the agent's own code).
use std::{collections::BTreeMap, net::IpAddr};

use aya::maps::{HashMap, Map, MapData, PerCpuArray, RingBuf};
use emptcp_common::{
    AddrKey, FLOW_STAT_NAMES, FLOW_STATS_LEN, FlowKey, FlowState, RecoverEvent, StoredAddAddr,
};
use ipnet::IpNet;

use super::{
    SimError,
    copy::{Copier, Forged},
    effect::{self, Effect},
    frame::{self, FIN, RST, Tcp},
    pcap_out::PcapWriter,
    report::{Book, Packets, SubKey},
    sandbox::Sandbox,
    trace::Packet,
};
use crate::{agent, copy::runner::RuleStatus};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// TC_ACT_SHOT: the egress hook drops the packet.
const TC_ACT_SHOT: i32 = 2;
/// Largest frame BPF_PROG_TEST_RUN accepts without fragments (a page less
/// headroom and shared info); larger ones are GRO/TSO-merged in the capture.
const MAX_FRAME: usize = 3000;

/// `--local PREFIX[=IFACE]`.
#[derive(Debug, Clone)]
pub struct Local {
    pub net: IpNet,
    pub iface: Option<String>,
}

/// How packets are told apart and given an interface.
pub struct Directions {
    pub locals: Vec<Local>,
    /// Interface names of the policy (stand-ins exist for each).
    pub ifaces: Vec<String>,
    /// Without --local and without cooked-capture hints: the hosts that
    /// opened connections (sent a SYN) are taken as local.
    learned: Vec<IpAddr>,
}

impl Directions {
    pub fn new(locals: Vec<Local>, ifaces: Vec<String>) -> Directions {
        Directions {
            locals,
            ifaces,
            learned: Vec::new(),
        }
    }

    fn is_local(&self, a: IpAddr) -> Option<Option<&str>> {
        if self.locals.is_empty() {
            return self.learned.contains(&a).then_some(None);
        }
        self.locals
            .iter()
            .find(|l| l.net.contains(&a))
            .map(|l| l.iface.as_deref())
    }

    /// `Some((received, iface hint))`, `None` when neither side is local.
    /// A cooked capture's own direction wins; `--local` then only names the
    /// interface (both ends may lie in one prefix).
    fn classify(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        outgoing: Option<bool>,
        tcp: Option<&Tcp>,
    ) -> Option<(bool, Option<String>)> {
        if let Some(out) = outgoing {
            let local = if out { src } else { dst };
            let hint = self.is_local(local).flatten().map(str::to_string);
            return Some((!out, hint));
        }
        if self.locals.is_empty()
            && let Some(t) = tcp
            && t.flags & (frame::SYN | frame::ACK) == frame::SYN
            && !self.learned.contains(&src)
        {
            self.learned.push(src);
        }
        if let Some(i) = self.is_local(dst) {
            return Some((true, i.map(str::to_string)));
        }
        if let Some(i) = self.is_local(src) {
            return Some((false, i.map(str::to_string)));
        }
        None
    }

    fn iface(&self, capture_iface: Option<&str>, hint: Option<String>) -> String {
        if let Some(n) = capture_iface
            && self.ifaces.iter().any(|i| i == n)
        {
            return n.to_string();
        }
        hint.unwrap_or_else(|| self.ifaces.first().cloned().unwrap_or_default())
    }
}

pub struct Replay<'a> {
    sb: &'a Sandbox,
    events: RingBuf<MapData>,
    flows: HashMap<MapData, FlowKey, FlowState>,
    addrs: HashMap<MapData, AddrKey, StoredAddAddr>,
    /// The agent's attempt count per stored address (where its frame's
    /// sequence number goes, `agent::AHEAD`).
    attempts: agent::Attempts,
    pub dirs: Directions,
    pub book: Book,
    pub packets: Packets,
    pub writer: Option<(PcapWriter, bool)>,
    pub first_ts: Option<u64>,
    pub last_ts: u64,
    /// Wall time spent in BPF_PROG_TEST_RUN calls (the kernel's share).
    pub kernel: std::time::Duration,
    /// The policy's packet-copy rules on the capture's clock (`None`
    /// without rules).
    pub copier: Option<Copier>,
    /// The test runs' output buffer, reused for every packet.
    out_buf: Vec<u8>,
}

fn open_map(sb: &Sandbox, name: &str) -> Result<Map, SimError> {
    let md = MapData::from_pin(sb.layout.map(name))
        .map_err(|e| SimError::Apply(format!("opening map {name}: {e}")))?;
    Map::from_map_data(md).map_err(|e| SimError::Apply(format!("opening map {name}: {e}")))
}

fn flow_key(k: &SubKey) -> FlowKey {
    let bytes = |a: IpAddr| -> [u8; 16] {
        let mut b = [0u8; 16];
        match a {
            IpAddr::V4(v) => b[..4].copy_from_slice(&v.octets()),
            IpAddr::V6(v) => b = v.octets(),
        }
        b
    };
    FlowKey {
        family: if k.local.is_ipv4() { 4 } else { 6 },
        _pad: [0; 3],
        local_port: k.local_port,
        remote_port: k.remote_port,
        local: bytes(k.local),
        remote: bytes(k.remote),
    }
}

fn key_of_event(k: &FlowKey) -> SubKey {
    let ip = |a: &[u8; 16]| -> IpAddr {
        if k.family == 6 {
            IpAddr::from(*a)
        } else {
            IpAddr::from([a[0], a[1], a[2], a[3]])
        }
    };
    SubKey {
        local: ip(&k.local),
        local_port: k.local_port,
        remote: ip(&k.remote),
        remote_port: k.remote_port,
    }
}

impl<'a> Replay<'a> {
    pub fn new(sb: &'a Sandbox, dirs: Directions) -> Result<Replay<'a>, SimError> {
        let conv = |n: &str, e: aya::maps::MapError| SimError::Apply(format!("map {n}: {e}"));
        Ok(Replay {
            events: RingBuf::try_from(open_map(sb, "EVENTS")?).map_err(|e| conv("EVENTS", e))?,
            flows: HashMap::try_from(open_map(sb, "FLOWS")?).map_err(|e| conv("FLOWS", e))?,
            addrs: HashMap::try_from(open_map(sb, "FLOW_ADDRS")?)
                .map_err(|e| conv("FLOW_ADDRS", e))?,
            attempts: agent::Attempts::default(),
            sb,
            dirs,
            book: Book::default(),
            packets: Packets::default(),
            writer: None,
            first_ts: None,
            last_ts: 0,
            kernel: std::time::Duration::ZERO,
            copier: None,
            out_buf: Vec::with_capacity(MAX_FRAME + 512),
        })
    }

    fn write(
        &mut self,
        ts: u64,
        frame: &[u8],
        synthetic: bool,
        caplen: usize,
    ) -> Result<(), SimError> {
        if let Some((w, raw)) = &mut self.writer {
            let data = if *raw && synthetic {
                frame::strip_synthetic(frame)
            } else {
                frame
            };
            let cut = caplen.min(data.len());
            w.packet(ts, data, cut).map_err(SimError::Write)?;
        }
        Ok(())
    }

    /// Replays one captured packet.
    pub fn packet(&mut self, p: &Packet) -> Result<(), SimError> {
        self.packets.total += 1;
        self.first_ts.get_or_insert(p.ts_ns);
        self.last_ts = self.last_ts.max(p.ts_ns);
        // What packet copy decided before this packet, on the capture clock.
        self.copy_until(p.ts_ns, false)?;
        let f = match frame::ethernet(p) {
            Ok(Some(f)) => f,
            Ok(None) => {
                self.packets.not_ip += 1;
                // Written as captured only when the output keeps the link layer.
                if matches!(&self.writer, Some((_, false))) {
                    self.write(p.ts_ns, &p.data, false, p.data.len())?;
                }
                return Ok(());
            }
            Err(frame::Unreplayable::HeadersCut { .. }) => {
                return Err(SimError::HeadersCut {
                    number: p.number,
                    captured: p.data.len(),
                    orig_len: p.orig_len,
                });
            }
        };
        // What to keep in the output of a zero-filled packet: what was captured.
        let kept = f.bytes.len() - f.zero_filled;
        self.packets.zero_filled += u64::from(f.zero_filled > 0);
        let tcp = frame::tcp(&f.bytes);
        let Some((src, dst)) = frame::addresses(&f.bytes) else {
            self.packets.not_ip += 1;
            return self.write(p.ts_ns, &f.bytes, f.synthetic_l2, kept);
        };
        let Some((received, hint)) = self.dirs.classify(src, dst, f.outgoing, tcp.as_ref()) else {
            self.packets.unclassified += 1;
            return self.write(p.ts_ns, &f.bytes, f.synthetic_l2, kept);
        };
        let iface = self.dirs.iface(p.iface.as_deref(), hint);
        let ifindex = self.sb.ifindex.get(&iface).copied().unwrap_or(1);
        if received {
            self.packets.received += 1;
        } else {
            self.packets.sent += 1;
        }
        if f.bytes.len() > MAX_FRAME {
            self.packets.oversize += 1;
            return self.write(p.ts_ns, &f.bytes, f.synthetic_l2, kept);
        }
        let conn = tcp.as_ref().map(|t| {
            let key = SubKey::of(t, received);
            let i = self
                .book
                .connection(key, t, received, &iface, p.number, p.ts_ns);
            (key, i)
        });
        // The flow table entry goes with FIN/RST: read its size first.
        if let (Some(t), Some((key, i))) = (&tcp, conn)
            && t.flags & (FIN | RST) != 0
        {
            self.read_flow(&key, i);
        }
        let t0 = std::time::Instant::now();
        // One output buffer for the whole replay (taken, given back below).
        let mut buf = std::mem::take(&mut self.out_buf);
        let range = self.run(&f.bytes, received, ifindex, p.number, &mut buf)?;
        self.kernel += t0.elapsed();
        let out = range.map(|r| &buf[r]);
        // Frames of a packet-copy round this packet caused (a subflow new or
        // closed): they follow the packet.
        let mut copied = Vec::new();
        if let (Some(t), Some((_, i))) = (&tcp, conn) {
            let after = out.and_then(frame::tcp);
            let e: Effect = effect::compare(&f.bytes, t, out.zip(after.as_ref()));
            if e.dropped {
                self.packets.dropped += 1;
            } else if e.changed() {
                self.packets.rewritten += 1;
            }
            if e.add_addr_inserted > 0 {
                let size = self.flow_size(&SubKey::of(t, received));
                self.book.recovered(i, false, size);
            }
            self.book.packet(i, t, received, &e, p.ts_ns);
            if let Some(c) = &mut self.copier {
                copied = c.after_packet(&flow_key(&SubKey::of(t, received)), p.ts_ns);
            }
        } else if out.is_none() {
            self.packets.dropped += 1;
        }
        if let Some(o) = out {
            let grown = o.len().saturating_sub(f.bytes.len());
            self.write(p.ts_ns, o, f.synthetic_l2, kept + grown)?;
        }
        self.out_buf = buf;
        if received {
            self.agent(p.ts_ns, f.synthetic_l2)?;
        }
        self.copied(copied)
    }

    /// Where in `out` the frame the stack gets is, `None` when the
    /// datapath dropped it.
    fn run(
        &self,
        bytes: &[u8],
        received: bool,
        ifindex: u32,
        number: u64,
        out: &mut Vec<u8>,
    ) -> Result<Option<std::ops::Range<usize>>, SimError> {
        let err = |e: aya::programs::ProgramError| SimError::Run { number, source: e };
        if received {
            let (verdict, meta) = self.sb.run_xdp(bytes, ifindex, out).map_err(err)?;
            Ok(match verdict {
                XDP_PASS => Some(meta.min(out.len())..out.len()),
                XDP_DROP => None,
                // ABORTED, TX, REDIRECT: the stack would not get it.
                _ => None,
            })
        } else {
            let rc = self.sb.run_skb(bytes, ifindex, out).map_err(err)?;
            Ok((rc != TC_ACT_SHOT).then_some(0..out.len()))
        }
    }

    fn flow_size(&self, key: &SubKey) -> Option<u64> {
        self.flows.get(&flow_key(key), 0).ok().map(|f| f.bytes)
    }

    fn read_flow(&mut self, key: &SubKey, i: usize) {
        if let Ok(f) = self.flows.get(&flow_key(key), 0) {
            let chain = self
                .sb
                .observed
                .entries
                .chains
                .get(&f.chain)
                .map(|c| c.name.clone());
            self.book.datapath(i, f.bytes, chain);
        }
    }

    /// Answers the recovery events the last packet raised, as the agent
    /// would: the forged duplicate ACK joins the output at this time.
    fn agent(&mut self, ts: u64, synthetic: bool) -> Result<(), SimError> {
        let mut evs = Vec::new();
        while let Some(item) = self.events.next() {
            if item.len() >= size_of::<RecoverEvent>() {
                // SAFETY: the datapath writes a RecoverEvent (repr(C), Pod).
                evs.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<RecoverEvent>()) });
            }
        }
        for ev in evs {
            let Ok((flow, frame)) =
                agent::answer(&self.flows, &self.addrs, &mut self.attempts, &ev)
            else {
                continue;
            };
            self.packets.forged += 1;
            let key = key_of_event(&ev.key);
            if let Some(i) = self.book.find(&key) {
                self.book.recovered(i, true, Some(flow.bytes));
            }
            let len = frame.len();
            self.write(ts, &frame, synthetic, len)?;
        }
        Ok(())
    }

    /// Books and writes what packet copy forged up to capture time `ts`.
    fn copy_until(&mut self, ts: u64, inclusive: bool) -> Result<(), SimError> {
        let Some(c) = &mut self.copier else {
            return Ok(());
        };
        let forged = c.until(ts, inclusive);
        self.copied(forged)
    }

    fn copied(&mut self, forged: Vec<Forged>) -> Result<(), SimError> {
        for f in forged {
            self.packets.copied += 1;
            if let Some(i) = self.book.find(&key_of_event(&f.key)) {
                self.book.copied(i);
            }
            // Always an Ethernet frame: a raw-IP output keeps its IP packet.
            let len = f.frame.len();
            self.write(f.ts_ns, &f.frame, true, len)?;
        }
        Ok(())
    }

    /// Packet copy's decisions up to the end of the capture, and its
    /// per-rule counters.
    pub fn finish_copy(&mut self) -> Result<Vec<RuleStatus>, SimError> {
        let end = self.last_ts;
        self.copy_until(end, true)?;
        let Some(c) = &mut self.copier else {
            return Ok(Vec::new());
        };
        let (status, forged) = c.status(end);
        self.copied(forged)?;
        Ok(status)
    }

    /// At the end of the capture: sizes of the flows still open, and the
    /// datapath's counters.
    pub fn finish(&mut self) -> BTreeMap<String, u64> {
        let keys: Vec<(SubKey, usize)> = self.book.subflow_keys().map(|(k, i)| (*k, *i)).collect();
        for (k, i) in keys {
            self.read_flow(&k, i);
        }
        let mut out = BTreeMap::new();
        if let Ok(m) = open_map(self.sb, "FLOW_STATS")
            && let Ok(a) = PerCpuArray::<_, u64>::try_from(m)
        {
            for (i, name) in FLOW_STAT_NAMES
                .iter()
                .enumerate()
                .take(FLOW_STATS_LEN as usize)
            {
                let v: u64 = a.get(&(i as u32), 0).map(|v| v.iter().sum()).unwrap_or(0);
                out.insert((*name).to_string(), v);
            }
        }
        out
    }
}
