//! The per-connection book of a replay and the report made from it.
//!
//! Subflows are grouped into MPTCP connections by their tokens (the SHA-256
//! of each side's MP_CAPABLE key, RFC 8684 3.2): an MP_JOIN SYN names the
//! token of the connection it joins. Memory grows with connections, not
//! with packets.
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    net::IpAddr,
};

use super::{
    effect::Effect,
    frame::{ACK, MP_CAPABLE, MP_JOIN, SYN, Tcp, mptcp_options},
};
use crate::packet::token;
use serde::{Deserialize, Serialize};

/// What became of the server's offer of another path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondPath {
    /// No ADD_ADDR was received.
    NotOffered,
    /// An ADD_ADDR reached the stack untouched.
    Announced,
    /// Every ADD_ADDR was withheld, and later re-delivered.
    Recovered,
    /// Every ADD_ADDR was withheld and none re-delivered.
    Withheld,
}

impl SecondPath {
    fn text(self) -> &'static str {
        match self {
            SecondPath::NotOffered => "no ADD_ADDR offered",
            SecondPath::Announced => "announced",
            SecondPath::Recovered => "withheld, then recovered",
            SecondPath::Withheld => "withheld",
        }
    }
}

/// What the policy did to one connection: the part `--against` compares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Behaviour {
    pub packets_dropped: u64,
    /// Distinct ADD_ADDR options (by address id) the datapath took away.
    pub add_addr_stored: u32,
    pub add_addr_nopped: u32,
    pub add_addr_dropped: u32,
    /// Received ADD_ADDRs that reached the stack untouched.
    pub add_addr_delivered: u32,
    /// Re-inserted into received packets.
    pub add_addr_recovered: u32,
    /// Delivered by the recovery agent as forged duplicate ACKs.
    pub add_addr_forged: u32,
    /// The connection's size (datapath bytes) when first recovered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered_at_bytes: Option<u64>,
    pub mp_prio_inserted: u32,
    pub mp_prio_rewritten: u32,
    pub windows_rewritten: u32,
    pub other_rewrites: u32,
    /// Frames the packet-copy rules would have sent on its subflows.
    pub packet_copy_sent: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connection {
    /// Order of appearance in the capture (1-based).
    pub id: u32,
    pub local: String,
    pub remote: String,
    pub interface: String,
    pub mptcp: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_token: Option<String>,
    /// The chain that tracked it (from the flow table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// Capture packet number of its first packet.
    pub first_packet: u64,
    /// Seconds from the start of the capture.
    pub start_s: f64,
    pub duration_s: f64,
    pub subflows: u32,
    pub packets_received: u64,
    pub packets_sent: u64,
    /// TCP payload bytes in each direction, all subflows.
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// The size the datapath compared with the thresholds (flow table),
    /// last read when the connection closed or the capture ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datapath_bytes: Option<u64>,
    pub second_path: SecondPath,
    #[serde(flatten)]
    pub behaviour: Behaviour,
    #[serde(skip)]
    stored_ids: Vec<u8>,
    #[serde(skip)]
    last_ts_ns: u64,
    #[serde(skip)]
    first_ts_ns: u64,
}

/// One subflow, oriented from the simulated host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubKey {
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
}

impl SubKey {
    pub fn of(t: &Tcp, received: bool) -> SubKey {
        if received {
            SubKey {
                local: t.dst,
                local_port: t.dport,
                remote: t.src,
                remote_port: t.sport,
            }
        } else {
            SubKey {
                local: t.src,
                local_port: t.sport,
                remote: t.dst,
                remote_port: t.dport,
            }
        }
    }
}

fn endpoint(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(v) => format!("{v}:{port}"),
        IpAddr::V6(v) => format!("[{v}]:{port}"),
    }
}

#[derive(Default)]
pub struct Book {
    pub conns: Vec<Connection>,
    subflows: HashMap<SubKey, usize>,
    local_tokens: HashMap<u32, usize>,
    remote_tokens: HashMap<u32, usize>,
    start_ns: Option<u64>,
}

impl Book {
    /// The connection of this packet's subflow, created at its first packet.
    pub fn connection(
        &mut self,
        key: SubKey,
        t: &Tcp,
        received: bool,
        iface: &str,
        number: u64,
        ts_ns: u64,
    ) -> usize {
        let start = *self.start_ns.get_or_insert(ts_ns);
        if let Some(&i) = self.subflows.get(&key) {
            self.learn_keys(i, t, received);
            return i;
        }
        let opts = mptcp_options(&t.options);
        let join = opts
            .iter()
            .find(|(st, b)| {
                *st == MP_JOIN && t.flags & SYN != 0 && t.flags & ACK == 0 && b.len() >= 8
            })
            .map(|(_, b)| u32::from_be_bytes([b[4], b[5], b[6], b[7]]));
        // A join names the token of the side that receives the SYN.
        let joined = join.and_then(|tok| {
            if received {
                self.local_tokens.get(&tok).copied()
            } else {
                self.remote_tokens.get(&tok).copied()
            }
        });
        let i = match joined {
            Some(i) => {
                self.conns[i].subflows += 1;
                i
            }
            None => {
                let id = self.conns.len() as u32 + 1;
                self.conns.push(Connection {
                    id,
                    local: endpoint(key.local, key.local_port),
                    remote: endpoint(key.remote, key.remote_port),
                    interface: iface.to_string(),
                    mptcp: !opts.is_empty(),
                    local_token: None,
                    remote_token: None,
                    chain: None,
                    first_packet: number,
                    start_s: (ts_ns.saturating_sub(start)) as f64 / 1e9,
                    duration_s: 0.0,
                    subflows: 1,
                    packets_received: 0,
                    packets_sent: 0,
                    bytes_received: 0,
                    bytes_sent: 0,
                    datapath_bytes: None,
                    second_path: SecondPath::NotOffered,
                    behaviour: Behaviour::default(),
                    stored_ids: Vec::new(),
                    last_ts_ns: ts_ns,
                    first_ts_ns: ts_ns,
                });
                self.conns.len() - 1
            }
        };
        self.subflows.insert(key, i);
        self.learn_keys(i, t, received);
        i
    }

    /// MP_CAPABLE carries the sender's key (SYN-ACK, third ACK) and, in the
    /// third ACK, the receiver's.
    fn learn_keys(&mut self, i: usize, t: &Tcp, received: bool) {
        for (st, b) in mptcp_options(&t.options) {
            if st != MP_CAPABLE || b.len() < 12 {
                continue;
            }
            self.conns[i].mptcp = true;
            let sender = token(&b[4..12]);
            let receiver = (b.len() >= 20).then(|| token(&b[12..20]));
            let (local, remote) = if received {
                (receiver, Some(sender))
            } else {
                (Some(sender), receiver)
            };
            if let Some(l) = local
                && self.conns[i].local_token.is_none()
            {
                self.conns[i].local_token = Some(format!("{l:08x}"));
                self.local_tokens.insert(l, i);
            }
            if let Some(r) = remote
                && self.conns[i].remote_token.is_none()
            {
                self.conns[i].remote_token = Some(format!("{r:08x}"));
                self.remote_tokens.insert(r, i);
            }
        }
    }

    /// Books one replayed packet and what the datapath did to it.
    pub fn packet(&mut self, i: usize, t: &Tcp, received: bool, e: &Effect, ts_ns: u64) {
        let c = &mut self.conns[i];
        c.last_ts_ns = c.last_ts_ns.max(ts_ns);
        if received {
            c.packets_received += 1;
            c.bytes_received += u64::from(t.payload);
        } else {
            c.packets_sent += 1;
            c.bytes_sent += u64::from(t.payload);
        }
        let b = &mut c.behaviour;
        if e.dropped {
            b.packets_dropped += 1;
            b.add_addr_dropped += e.add_addr_removed;
        } else {
            b.add_addr_nopped += e.add_addr_removed;
        }
        if received {
            let kept = (e.add_addr_in.len() as u32).saturating_sub(e.add_addr_removed);
            b.add_addr_delivered += kept;
            if e.add_addr_removed > 0 {
                for (id, _) in &e.add_addr_in {
                    if !c.stored_ids.contains(id) {
                        c.stored_ids.push(*id);
                    }
                }
                b.add_addr_stored = c.stored_ids.len() as u32;
            }
            if !e.add_addr_in.is_empty() && c.second_path == SecondPath::NotOffered {
                c.second_path = SecondPath::Withheld;
            }
            if kept > 0 {
                c.second_path = SecondPath::Announced;
            }
        }
        b.add_addr_recovered += e.add_addr_inserted;
        b.mp_prio_inserted += e.mp_prio_inserted;
        b.mp_prio_rewritten += e.mp_prio_rewritten;
        b.windows_rewritten += u32::from(e.window_rewritten);
        b.other_rewrites += u32::from(e.other_rewrite);
    }

    /// A stored ADD_ADDR reached the stack again (re-inserted, or forged by
    /// the recovery agent), when the connection had `size` bytes.
    pub fn recovered(&mut self, i: usize, forged: bool, size: Option<u64>) {
        let c = &mut self.conns[i];
        if forged {
            c.behaviour.add_addr_forged += 1;
        }
        if c.behaviour.recovered_at_bytes.is_none() {
            c.behaviour.recovered_at_bytes = size;
        }
        if c.second_path == SecondPath::Withheld {
            c.second_path = SecondPath::Recovered;
        }
    }

    /// Packet copy forged a frame for one of its subflows.
    pub fn copied(&mut self, i: usize) {
        self.conns[i].behaviour.packet_copy_sent += 1;
    }

    /// The flow table's view of the connection (size, chain).
    pub fn datapath(&mut self, i: usize, bytes: u64, chain: Option<String>) {
        let c = &mut self.conns[i];
        c.datapath_bytes = Some(c.datapath_bytes.unwrap_or(0).max(bytes));
        if c.chain.is_none() {
            c.chain = chain;
        }
    }

    pub fn find(&self, k: &SubKey) -> Option<usize> {
        self.subflows.get(k).copied()
    }

    pub fn subflow_keys(&self) -> impl Iterator<Item = (&SubKey, &usize)> {
        self.subflows.iter()
    }

    pub fn finish(mut self) -> Vec<Connection> {
        for c in &mut self.conns {
            c.duration_s = c.last_ts_ns.saturating_sub(c.first_ts_ns) as f64 / 1e9;
        }
        self.conns
    }
}

/// Packet counts of one replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packets {
    pub total: u64,
    pub received: u64,
    pub sent: u64,
    /// Neither side is local: written through, not replayed.
    pub unclassified: u64,
    /// Not IP (ARP, ...): written through.
    pub not_ip: u64,
    /// Larger than a test run accepts (GRO/TSO-merged in the capture).
    pub oversize: u64,
    /// Cut by the snaplen in their payload and replayed zero-filled.
    pub zero_filled: u64,
    pub dropped: u64,
    pub rewritten: u64,
    /// Forged by the recovery agent (added to the output).
    pub forged: u64,
    /// Forged by packet-copy rules (added to the output).
    #[serde(default)]
    pub copied: u64,
}

/// Totals over the connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub connections: u64,
    pub mptcp_connections: u64,
    pub second_path_announced: u64,
    pub second_path_withheld: u64,
    pub second_path_recovered: u64,
    #[serde(flatten)]
    pub behaviour: Behaviour,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub policy: String,
    pub capture: String,
    pub packets: Packets,
    pub totals: Totals,
    pub connections: Vec<Connection>,
    /// The datapath's own counters after the replay (FLOW_STATS).
    pub datapath_counters: BTreeMap<String, u64>,
    /// The egress hook's own counters after the replay (EGRESS_STATS:
    /// subflows captured for packet copy, MP_PRIO and window rewrites).
    #[serde(default)]
    pub egress_counters: BTreeMap<String, u64>,
    /// Seconds of capture time covered, and of wall time the replay took.
    pub capture_s: f64,
    pub replay_s: f64,
    /// CPU time (user + system) of the process during the replay: on a
    /// shared machine, the replay's own cost.
    #[serde(default)]
    pub replay_cpu_s: f64,
    /// Of the replay, seconds inside BPF_PROG_TEST_RUN (the datapath and
    /// the syscall); the rest is reading, parsing and booking.
    pub kernel_s: f64,
    /// Resident memory when the replay started (after set-up), and the
    /// peak during the replay: the difference is bounded by the
    /// connections the capture holds, not by its length (the capture is
    /// read streaming).
    #[serde(default)]
    pub rss_start_bytes: u64,
    #[serde(default)]
    pub peak_rss_bytes: u64,
    /// Packets replayed per second of replay (set-up excluded).
    pub packets_per_s: f64,
    /// Per packet-copy rule, what the daemon would have done (the fields of
    /// `emptcp status`; `sent`: frames forged into the simulated traffic).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packet_copy: Vec<crate::copy::runner::RuleStatus>,
    /// What the simulation does not model (stated, never silently left out).
    pub not_simulated: Vec<String>,
}

pub fn totals(conns: &[Connection]) -> Totals {
    let mut t = Totals::default();
    for c in conns {
        t.connections += 1;
        t.mptcp_connections += u64::from(c.mptcp);
        match c.second_path {
            SecondPath::Announced => t.second_path_announced += 1,
            SecondPath::Withheld => t.second_path_withheld += 1,
            SecondPath::Recovered => t.second_path_recovered += 1,
            SecondPath::NotOffered => {}
        }
        let (a, b) = (&mut t.behaviour, &c.behaviour);
        a.packets_dropped += b.packets_dropped;
        a.add_addr_stored += b.add_addr_stored;
        a.add_addr_nopped += b.add_addr_nopped;
        a.add_addr_dropped += b.add_addr_dropped;
        a.add_addr_delivered += b.add_addr_delivered;
        a.add_addr_recovered += b.add_addr_recovered;
        a.add_addr_forged += b.add_addr_forged;
        a.mp_prio_inserted += b.mp_prio_inserted;
        a.mp_prio_rewritten += b.mp_prio_rewritten;
        a.windows_rewritten += b.windows_rewritten;
        a.other_rewrites += b.other_rewrites;
        a.packet_copy_sent += b.packet_copy_sent;
    }
    t
}

/// The non-zero behaviour fields, as "name value" phrases.
pub fn behaviour_phrases(b: &Behaviour) -> Vec<String> {
    let mut v = Vec::new();
    let mut p = |n: u64, what: &str| {
        if n > 0 {
            v.push(format!("{n} {what}"));
        }
    };
    p(b.add_addr_stored.into(), "ADD_ADDR stored");
    p(b.add_addr_dropped.into(), "dropped with its packet");
    p(b.add_addr_nopped.into(), "NOP'd");
    p(b.add_addr_delivered.into(), "ADD_ADDR delivered untouched");
    p(b.add_addr_recovered.into(), "ADD_ADDR re-inserted");
    p(b.add_addr_forged.into(), "ADD_ADDR forged by the agent");
    p(b.packets_dropped, "packet(s) dropped");
    p(b.mp_prio_inserted.into(), "MP_PRIO inserted");
    p(b.mp_prio_rewritten.into(), "MP_PRIO rewritten");
    p(b.windows_rewritten.into(), "window(s) rewritten");
    p(b.other_rewrites.into(), "other rewrite(s)");
    p(b.packet_copy_sent.into(), "packet copy frame(s) sent");
    v
}

fn size(n: u64) -> String {
    const U: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (d, u) in U {
        if n >= d {
            return format!("{:.1} {u}", n as f64 / d as f64);
        }
    }
    format!("{n} B")
}

pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    let p = &r.packets;
    let _ = writeln!(s, "Simulated {} over {}", r.policy, r.capture);
    let _ = writeln!(
        s,
        "  {} packets ({} received, {} sent, {} unclassified, {} not IP) over {:.3} s of capture",
        p.total, p.received, p.sent, p.unclassified, p.not_ip, r.capture_s
    );
    let _ = writeln!(
        s,
        "  replayed in {:.3} s ({:.0} packets/s; {:.3} s of CPU; {:.0} % in the kernel's test runs; peak memory {:.1} MiB)",
        r.replay_s,
        r.packets_per_s,
        r.replay_cpu_s,
        if r.replay_s > 0.0 {
            100.0 * r.kernel_s / r.replay_s
        } else {
            0.0
        },
        r.peak_rss_bytes as f64 / (1 << 20) as f64
    );
    let _ = writeln!(
        s,
        "  {} dropped, {} rewritten, {} forged by the recovery agent, {} by packet copy; {} replayed zero-filled (snaplen), {} too large to replay",
        p.dropped, p.rewritten, p.forged, p.copied, p.zero_filled, p.oversize
    );
    let t = &r.totals;
    let _ = writeln!(
        s,
        "\nConnections: {} ({} MPTCP)",
        t.connections, t.mptcp_connections
    );
    for c in &r.connections {
        let _ = writeln!(
            s,
            "  #{} {} -> {} on {}{}{}",
            c.id,
            c.local,
            c.remote,
            c.interface,
            c.chain
                .as_deref()
                .map(|n| format!(", chain {n}"))
                .unwrap_or_default(),
            match (&c.local_token, &c.remote_token) {
                (Some(l), Some(r)) => format!(", tokens {l}/{r}"),
                _ => String::new(),
            }
        );
        let _ = writeln!(
            s,
            "     {} received, {} sent{}, {} subflow(s), {:.3} s from packet {}",
            size(c.bytes_received),
            size(c.bytes_sent),
            c.datapath_bytes
                .map(|b| format!(", datapath size {}", size(b)))
                .unwrap_or_default(),
            c.subflows,
            c.duration_s,
            c.first_packet
        );
        let mut line = format!("     second path: {}", c.second_path.text());
        if let Some(b) = c.behaviour.recovered_at_bytes {
            let _ = write!(line, " (at {})", size(b));
        }
        let ph = behaviour_phrases(&c.behaviour);
        if !ph.is_empty() {
            let _ = write!(line, "; {}", ph.join(", "));
        }
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(
        s,
        "\nTotals: second path announced {}, withheld {}, recovered {}",
        t.second_path_announced, t.second_path_withheld, t.second_path_recovered
    );
    let ph = behaviour_phrases(&t.behaviour);
    if !ph.is_empty() {
        let _ = writeln!(s, "  {}", ph.join(", "));
    }
    let counters: Vec<String> = r
        .datapath_counters
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(s, "Datapath counters: {}", counters.join(", "));
    let egress: Vec<String> = r
        .egress_counters
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if !egress.is_empty() {
        let _ = writeln!(s, "Egress counters: {}", egress.join(", "));
    }
    for r in &r.packet_copy {
        let _ = writeln!(s, "{}", copy_rule_line(r));
    }
    for n in &r.not_simulated {
        let _ = writeln!(s, "Not simulated: {n}");
    }
    s
}

/// One packet-copy rule's line of the text report.
fn copy_rule_line(r: &crate::copy::runner::RuleStatus) -> String {
    if !r.armed {
        return format!(
            "Packet copy {} on {}: not armed ({})",
            r.name,
            r.interface,
            r.reason.as_deref().unwrap_or("")
        );
    }
    let mut line = format!(
        "Packet copy {} on {}: fired {}, sent {}, closed before firing {}, rate limited {}",
        r.name, r.interface, r.fired, r.sent, r.closed_before_firing, r.rate_limited
    );
    if r.send_failures > 0 {
        let _ = write!(
            line,
            ", not forged {} (last: {})",
            r.send_failures,
            r.last_error.as_deref().unwrap_or("")
        );
    }
    line
}
