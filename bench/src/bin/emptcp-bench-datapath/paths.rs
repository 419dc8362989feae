//! What is measured: one interface per chain under test (each interface
//! has its own chain list, so the chain of one row never changes what the
//! entry does for another), the policy that sets them up, and the paths:
//! a frame generator, the verdict, and the counters that prove emptcp
//! acted on every measured frame.
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{
    frames::{
        Seg, add_addr_ack, add_addr_v4, data, dss_ack, dss_map, join_syn_out, join_synack, opts,
        server_key, syn_out, synack, synack_keyed, ts,
    },
    measure::Hook,
    references::Under,
};

/// Interfaces (veth unless said) and their chains.
pub const DATA: &str = "bd0"; // record_flow, strip_add_addr, recover_add_addr
pub const RECORD: &str = "bd1"; // record_flow
pub const STRIP: &str = "bd2"; // record_flow, strip_add_addr
pub const COUNT: &str = "bd3"; // count
pub const DROP: &str = "bd4"; // drop
pub const BACKUP: &str = "bd5"; // set_backup (backup)
pub const WINDOW: &str = "bd6"; // record_flow, set_window
pub const CAPTURE: &str = "bd7"; // the data chain + a packet_copy rule (ingress capture)
pub const E_COUNT: &str = "bd8"; // egress: count
pub const E_BACKUP: &str = "bd9"; // egress: set_backup
pub const E_WINDOW: &str = "bd10"; // egress: set_window (+ ingress record_flow)
pub const TUN: &str = "bdt0"; // tun (raw IP): the data chain
pub const BARE: &str = "bd11"; // the bare XDP_PASS program
pub const COUNT_PORT: &str = "bd12"; // count, selected by port only (no prefix)
pub const REFERENCE: &str = "bd13"; // the parse-only reference program
pub const FLOOR: &str = "bd14"; // the lookup-floor reference program
pub const SMALL_FLOOR: &str = "bd15"; // the same over a small table
pub const TC_DATA: &str = "bd16"; // the data chain at TC ingress (`ingress_hook: tc`)
pub const TC_CAPTURE: &str = "bd17"; // TC_DATA + a packet_copy rule (the capture at TC)
pub const V4_FLOOR: &str = "bd18"; // the lookup floor with 12-byte IPv4 keys
pub const TWO_TABLE_FLOOR: &str = "bd19"; // subflow table -> connection by token
pub const VETHS: [&str; 20] = [
    DATA,
    RECORD,
    STRIP,
    COUNT,
    DROP,
    BACKUP,
    WINDOW,
    CAPTURE,
    E_COUNT,
    E_BACKUP,
    E_WINDOW,
    BARE,
    COUNT_PORT,
    REFERENCE,
    FLOOR,
    SMALL_FLOOR,
    TC_DATA,
    TC_CAPTURE,
    V4_FLOOR,
    TWO_TABLE_FLOOR,
];

/// Thresholds of the chains with strip/recover (the quickstart's).
pub const RECOVER_AT: u32 = 4 << 20;

/// The policy: every chain selects the remote 192.0.2.0/24 port 5201 (the
/// frames' server side).
/// The policy of the run; `flow_capacity` sets `settings.flow_capacity`
/// (None: the default).
pub fn policy(flow_capacity: Option<u32>) -> String {
    let m = "match: {remote: [192.0.2.0/24], remote_ports: [5201]}";
    let th = "thresholds: {remove_below: 1MiB, recover_at: 4MiB}";
    let chain = |name: &str, hook: &str, actions: &str, th: &str| {
        format!("  - {{name: {name}, {hook}{m}, actions: [{actions}]{th}}}\n")
    };
    let ing = |i: &str, c: &str| format!("  - {{name: {i}, xdp_mode: skb, chains: [{c}]}}\n");
    let data = "record_flow, strip_add_addr, recover_add_addr";
    let mut p = String::from("version: 1\n");
    if let Some(c) = flow_capacity {
        p += &format!("settings: {{flow_capacity: {c}}}\n");
    }
    p += "interfaces:\n";
    for (i, c) in [
        (DATA, "data"),
        (RECORD, "record"),
        (STRIP, "strip"),
        (COUNT, "count"),
        (DROP, "drop"),
        (BACKUP, "backup"),
        (WINDOW, "window"),
        (CAPTURE, "data, cap"),
        (E_COUNT, "e_count"),
        (E_BACKUP, "e_backup"),
        // Egress set_window needs record_flow on the interface's ingress
        // (the peer's SYN-ACK says whether both ends scale).
        (E_WINDOW, "e_track, e_window"),
        (TUN, "data"),
        (COUNT_PORT, "count_port"),
    ] {
        p += &ing(i, c);
    }
    p += &format!("  - {{name: {TC_DATA}, ingress_hook: tc, chains: [data]}}\n");
    p += &format!("  - {{name: {TC_CAPTURE}, ingress_hook: tc, chains: [data, cap]}}\n");
    p += "chains:\n";
    let th = format!(", {th}");
    p += &chain("data", "", data, &th);
    p += &chain("record", "", "record_flow", "");
    p += &chain("strip", "", "record_flow, strip_add_addr", &th);
    p += &chain("count", "", "count", "");
    p += &chain("drop", "", "drop", "");
    p += "  - {name: count_port, match: {remote_ports: [5201]}, actions: [count]}\n";
    p += &chain("backup", "", "{set_backup: {backup: true}}", "");
    p += &chain("window", "", "record_flow, {set_window: {bytes: 1MiB}}", "");
    p += &chain("cap", "hook: egress, ", "count", "");
    p += &chain("e_count", "hook: egress, ", "count", "");
    p += &chain("e_track", "", "record_flow", "");
    p += &chain(
        "e_backup",
        "hook: egress, ",
        "{set_backup: {backup: true}}",
        "",
    );
    p += &chain(
        "e_window",
        "hook: egress, ",
        "{set_window: {bytes: 1MiB}}",
        "",
    );
    p += "packet_copy:\n";
    for (name, i) in [("revive", CAPTURE), ("revive_tc", TC_CAPTURE)] {
        p += &format!(
            "  - {{name: {name}, interface: {i}, chain: cap, when: {{subflow_idle: 1s}}, send: {{mp_prio: {{backup: false}}}}}}\n"
        );
    }
    p
}

/// A counter the measured frames must move by exactly one each.
#[derive(Debug, Clone, Copy)]
pub enum Counter {
    /// `STATS`: program, outcome.
    Prog(&'static str, &'static str),
    /// `FLOW_STATS` by name.
    Flow(&'static str),
    /// `EGRESS_STATS` by name.
    EgressStat(&'static str),
}

/// One measured frame and the frames that must run before it (untimed,
/// through the same emptcp program): the flow's SYN-ACK, a stored
/// ADD_ADDR, ...
pub struct Sample {
    pub setup: Vec<Vec<u8>>,
    pub frame: Vec<u8>,
}

/// The table a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Ingress,
    Egress,
    Capture,
    TcIngress,
}

/// Builds sample `k` of a path (k counts on across rounds).
pub type Sampler = Box<dyn FnMut(u32) -> Sample>;

pub struct Path {
    pub table: Table,
    pub name: &'static str,
    pub hook: Hook,
    pub iface: &'static str,
    /// emptcp's verdict on every measured frame.
    pub verdict: u32,
    /// At most this many ns added over the bare program.
    pub target: Option<f64>,
    /// At most this many times the bare program's own time, emptcp's
    /// figure over the bare one of the same run (raw-IP frames).
    pub ratio_target: Option<f64>,
    /// No worse than the path of this name in the same run (a joined subflow),
    /// judged on the rounds' paired differences (report.rs).
    pub relative_to: Option<&'static str>,
    pub acts: Vec<Counter>,
    /// Running its frame again measures the same thing (nothing in the
    /// frame or in the state it meets changes): also timed with repeat
    /// 10^6 on one frame, the code hot.
    pub hot: bool,
    /// The program timed against the bare one: emptcp's, or a reference.
    pub under: Under,
    /// Frames to run once before the first round (a stream's flows), each
    /// through emptcp's program of its hook (a reference row's: through
    /// its reference program).
    pub init: Vec<(Hook, Vec<u8>)>,
    pub sample: Sampler,
}

static NEXT_FLOW: AtomicU32 = AtomicU32::new(1);

/// A flow id no other frame of the run has used: a new 4-tuple.
pub fn new_flow() -> u32 {
    NEXT_FLOW.fetch_add(1, Ordering::Relaxed)
}

/// Flows a stream spreads its segments over (more than fit in the L1
/// cache's worth of map entries, fewer than a round's samples).
pub const STREAM_FLOWS: u32 = 1024;

const XDP_DROP: u32 = 1;
/// `TC_ACT_SHOT`.
const TC_SHOT: u32 = 2;
const XDP_PASS: u32 = 2;
/// `TCX_NEXT` as the test run reports it.
const TCX_NEXT: u32 = -1i32 as u32;

fn one(frame: Vec<u8>) -> Sample {
    Sample {
        setup: Vec::new(),
        frame,
    }
}

/// A stream: `STREAM_FLOWS` flows, each opened by `open(id)` once, then
/// segment `k` is `seg(flow, step)` of flow `k % STREAM_FLOWS`: every flow
/// moves forward, none is retransmitted.
fn stream(
    open: impl Fn(u32) -> Vec<Seg>,
    seg: impl Fn(u32, u32) -> Seg + 'static,
    raw_ip: bool,
) -> (Vec<(Hook, Vec<u8>)>, Sampler) {
    let ids: Vec<u32> = (0..STREAM_FLOWS).map(|_| new_flow()).collect();
    let init = ids
        .iter()
        .flat_map(|&id| open(id))
        .map(|s| {
            let hook = if s.egress { Hook::Tc } else { Hook::Xdp };
            (hook, s.with(|s| s.raw_ip = raw_ip).frame())
        })
        .collect();
    let next = move |k: u32| {
        let id = ids[(k % STREAM_FLOWS) as usize];
        one(seg(id, k / STREAM_FLOWS + 1)
            .with(|s| s.raw_ip = raw_ip)
            .frame())
    };
    (init, Box::new(next))
}

/// A stream's set-up frames for the TC ingress hook: what would run at XDP
/// runs through `tc_entry` (egress frames stay at egress).
fn at_tc(init: Vec<(Hook, Vec<u8>)>) -> Vec<(Hook, Vec<u8>)> {
    init.into_iter()
        .map(|(h, f)| (if h == Hook::Xdp { Hook::TcIngress } else { h }, f))
        .collect()
}

/// Subflow ids of joined subflows: connection `id`'s join is `id +
/// JOIN_SUBFLOW`, a 4-tuple no other frame of the run uses (flow ids stay
/// far below it; `Seg::new` repeats a 4-tuple only after 1.5·10^7).
const JOIN_SUBFLOW: u32 = 8_000_000;

/// A data segment on a joined subflow: no worse than
/// [`INITIAL_DATA`] in the same run.
pub const JOINED_DATA: &str = "MPTCP data segment on a JOINED subflow of a tracked connection (1400 B) through record_flow + strip + recover";

/// The lookup-floor reference row: the same stream as [`INITIAL_DATA`]
/// through one lookup in a table of FLOWS' shape.
pub const FLOOR_ROW: &str = "reference, not emptcp: one lookup of the data segment's 4-tuple in a table shaped as FLOWS (LRU hash, same key, value and capacity; 1024 flows) and one field of the entry written";

/// The same stream and lookup as [`FLOOR_ROW`] in a table of
/// [`crate::references::SMALL_FLOOR_CAPACITY`] entries.
pub const SMALL_FLOOR_ROW: &str = "reference, not emptcp: the same lookup and write in a table of 4096 entries (same key and value; 1024 flows)";

/// The same stream and lookup as [`FLOOR_ROW`] keyed by the IPv4 4-tuple
/// alone (12 bytes): what a connection table per address family would
/// save on the hash and the entry.
pub const V4_FLOOR_ROW: &str = "reference, not emptcp: the same lookup and write with the IPv4 4-tuple as a 12-byte key (a table per address family; same value and capacity; 1024 flows)";

/// The same stream through two lookups, as every subflow would reach its
/// connection if all subflows (the initial one too) named it by token:
/// a subflow table keyed like FLOWS, then a connection table keyed by the
/// token (`references::two_table_floor_program`).
pub const TWO_TABLE_FLOOR_ROW: &str = "reference, not emptcp: the 4-tuple looked up in a subflow table (same key and capacity, a 16-byte value), its token in a connection table (4-byte key, FLOWS' value and capacity), a field of each written: any subflow's cost if every subflow named its connection by token";

/// The initial-subflow data row (above), against which the joined row is judged.
pub const INITIAL_DATA: &str =
    "MPTCP data segment of a tracked flow (1400 B) through record_flow + strip + recover";

/// A TCP segment whose port no chain lists (from 203.0.113.9:443).
fn unlisted(id: u32) -> Seg {
    Seg::new(id).with(|s| {
        s.remote = std::net::Ipv4Addr::new(203, 0, 113, 9);
        s.server_port = 443;
        s.options = opts(&[&ts(1, 2)]);
        s.payload = 1400;
    })
}

/// A data segment that carries an ADD_ADDR beside its DSS (34 bytes of
/// options): strip NOPs it and fixes the checksum.
fn data_with_add_addr(id: u32) -> Seg {
    Seg::new(id).with(|s| {
        s.options = opts(&[&add_addr_v4(), &dss_map(9, 0x1000, 1, 1400)]);
        s.payload = 1400;
    })
}

/// A pure ACK of an MPTCP connection: timestamps and a DSS data ACK.
/// A new flow's ADD_ADDR pure ACK, after its SYN-ACK.
fn add_addr_ack_of_new_flow() -> Sample {
    let id = new_flow();
    Sample {
        setup: vec![synack(id).frame()],
        frame: add_addr_ack(id).frame(),
    }
}

/// A new flow's data segment carrying ADD_ADDR, after its SYN-ACK.
fn add_addr_data_of_new_flow() -> Sample {
    let id = new_flow();
    Sample {
        setup: vec![synack(id).frame()],
        frame: data_with_add_addr(id).frame(),
    }
}

/// A new flow's pure ACK that takes it to recover_at: the ADD_ADDR is
/// stored first (NOP-ed beside a DSS whose data ACK is the flow's first,
/// counted 0); the measured ACK then acknowledges recover_at more bytes.
fn reinsert_into_new_flow() -> Sample {
    let id = new_flow();
    let stored =
        Seg::new(id).with(|s| s.options = opts(&[&ts(10, 20), &add_addr_v4(), &dss_ack(100)]));
    Sample {
        setup: vec![synack(id).frame(), stored.frame()],
        frame: mptcp_ack(id, 100 + RECOVER_AT).frame(),
    }
}

fn mptcp_ack(id: u32, data_ack: u32) -> Seg {
    Seg::new(id).with(|s| s.options = opts(&[&ts(30, 40), &dss_ack(data_ack)]))
}

#[allow(clippy::too_many_lines)] // the list of rows, one block each
pub fn paths() -> Vec<Path> {
    let mut v = Vec::new();
    let mut add = |table, name, hook, iface, verdict, target, acts: Vec<Counter>, init, sample| {
        v.push(Path {
            table,
            name,
            hook,
            iface,
            verdict,
            target,
            ratio_target: None,
            relative_to: None,
            acts,
            hot: false,
            under: Under::Emptcp,
            init,
            sample,
        });
    };
    use Counter::*;
    use Table::*;
    let x = Hook::Xdp;
    let fresh = |f: fn(u32) -> Seg| -> Sampler { Box::new(move |_| one(f(new_flow()).frame())) };

    // ---- ingress (XDP), the data chain's interface
    add(
        Ingress,
        "non-TCP packet (UDP): parsed, no chain",
        x,
        DATA,
        XDP_PASS,
        None,
        vec![],
        vec![],
        Box::new(|_| {
            let mut f = unlisted(new_flow()).frame();
            f[14 + 9] = 17; // protocol UDP: the entry leaves at the parser
            one(f)
        }),
    );
    add(
        Ingress,
        "TCP packet matching no chain (port in no chain's filter)",
        x,
        DATA,
        XDP_PASS,
        Some(15.0),
        vec![Prog("entry", "passed")],
        vec![],
        fresh(unlisted),
    );
    add(
        Ingress,
        "TCP packet matching no chain (port listed, prefix not)",
        x,
        DATA,
        XDP_PASS,
        None,
        vec![Prog("entry", "passed")],
        vec![],
        fresh(|id| unlisted(id).with(|s| s.server_port = crate::frames::SERVER_PORT)),
    );
    add(
        Ingress,
        "SYN-ACK with MP_CAPABLE through the data chain: flow created",
        x,
        DATA,
        XDP_PASS,
        None,
        vec![Flow("flows_created")],
        vec![],
        fresh(synack),
    );
    let (init, next) = stream(|id| vec![synack(id)], data, false);
    add(
        Ingress,
        INITIAL_DATA,
        x,
        DATA,
        XDP_PASS,
        Some(120.0),
        vec![
            Prog("record_flow", "applied"),
            Prog("recover_add_addr", "seen"),
        ],
        init,
        next,
    );
    // The same segment on a joined subflow: each connection
    // (its own server key, so its own token) opened, then a subflow the
    // local end joins (its MP_JOIN SYN through the egress hook, which maps
    // it by the token; the peer's SYN-ACK through the chain), then data
    // on the joined 4-tuple. record_flow's `applied` moves only for a
    // segment of a tracked connection, and the joined 4-tuple is not in
    // FLOWS: counted once per frame, it proves the subflow was resolved
    // through JOINS to its connection every time.
    let (init, next) = stream(
        |id| {
            let sub = id + JOIN_SUBFLOW;
            vec![
                synack_keyed(id),
                join_syn_out(sub, server_key(id)),
                join_synack(sub),
            ]
        },
        |id, k| data(id + JOIN_SUBFLOW, k),
        false,
    );
    add(
        Ingress,
        JOINED_DATA,
        x,
        DATA,
        XDP_PASS,
        None,
        vec![
            Prog("record_flow", "applied"),
            Prog("recover_add_addr", "seen"),
        ],
        init,
        next,
    );
    // The earlier benchmark's figure, for comparison: one data segment
    // repeated, which after its first run is a retransmission of a
    // tracked flow (record_flow still looks the flow up and stores).
    let (init, next) = stream(|id| vec![synack(id)], data, false);
    add(
        Ingress,
        "the same data segment repeated (a retransmission after its first run: the repeat-one-frame method)",
        x,
        DATA,
        XDP_PASS,
        None,
        vec![Prog("record_flow", "applied")],
        init,
        next,
    );
    add(
        Ingress,
        "ADD_ADDR pure ACK through the data chain: stored, dropped",
        x,
        DATA,
        XDP_DROP,
        Some(150.0),
        vec![Flow("add_addr_dropped_pure_ack"), Flow("add_addr_stored")],
        vec![],
        Box::new(|_| add_addr_ack_of_new_flow()),
    );
    add(
        Ingress,
        "data segment carrying ADD_ADDR through the data chain: stored, NOP-ed, checksum fixed",
        x,
        DATA,
        XDP_PASS,
        Some(150.0),
        vec![Flow("add_addr_nopped"), Flow("add_addr_stored")],
        vec![],
        Box::new(|_| add_addr_data_of_new_flow()),
    );
    add(
        Ingress,
        "pure ACK through the data chain: stored ADD_ADDR re-inserted (flow at recover_at)",
        x,
        DATA,
        XDP_PASS,
        Some(300.0),
        vec![Flow("add_addr_recovered")],
        vec![],
        Box::new(|_| reinsert_into_new_flow()),
    );
    let (init, next) = stream(|id| vec![synack(id)], data, true);
    add(
        Ingress,
        "raw IP (tun, IFACE_RAW_IP): MPTCP data segment of a tracked flow through the data chain",
        x,
        TUN,
        XDP_PASS,
        None,
        vec![
            Prog("record_flow", "applied"),
            Prog("recover_add_addr", "seen"),
        ],
        init,
        next,
    );
    add(
        Ingress,
        "raw IP (tun): TCP packet matching no chain",
        x,
        TUN,
        XDP_PASS,
        None,
        vec![Prog("entry", "passed")],
        vec![],
        fresh(|id| unlisted(id).with(|s| s.raw_ip = true)),
    );

    // ---- each action on its own chain (the shortest chain the policy
    // allows: strip needs record_flow before it, set_window record_flow's
    // window scale)
    let (init, next) = stream(|id| vec![synack(id)], data, false);
    add(
        Ingress,
        "record_flow alone: data segment of a tracked flow",
        x,
        RECORD,
        XDP_PASS,
        None,
        vec![Prog("record_flow", "applied")],
        init,
        next,
    );
    add(
        Ingress,
        "count alone: data segment",
        x,
        COUNT,
        XDP_PASS,
        None,
        vec![Prog("count", "applied")],
        vec![],
        fresh(|id| data(id, 1)),
    );
    add(
        Ingress,
        "count alone, chain selecting by port only (no prefix lookup): data segment",
        x,
        COUNT_PORT,
        XDP_PASS,
        None,
        vec![Prog("count", "applied")],
        vec![],
        fresh(|id| data(id, 1)),
    );
    add(
        Ingress,
        "drop alone: data segment",
        x,
        DROP,
        XDP_DROP,
        None,
        vec![Prog("drop", "applied")],
        vec![],
        fresh(|id| data(id, 1)),
    );
    add(
        Ingress,
        "record_flow + strip_add_addr: ADD_ADDR pure ACK stored, dropped",
        x,
        STRIP,
        XDP_DROP,
        None,
        vec![Flow("add_addr_dropped_pure_ack")],
        vec![],
        Box::new(|_| add_addr_ack_of_new_flow()),
    );
    add(
        Ingress,
        "record_flow + strip_add_addr: data segment with ADD_ADDR NOP-ed",
        x,
        STRIP,
        XDP_PASS,
        None,
        vec![Flow("add_addr_nopped")],
        vec![],
        Box::new(|_| add_addr_data_of_new_flow()),
    );
    add(
        Ingress,
        "set_backup alone: MP_PRIO inserted into a pure ACK",
        x,
        BACKUP,
        XDP_PASS,
        None,
        vec![Flow("mp_prio_inserted")],
        vec![],
        fresh(|id| mptcp_ack(id, 5)),
    );
    let (init, next) = stream(|id| vec![synack(id)], data, false);
    add(
        Ingress,
        "record_flow + set_window: data segment's window rewritten",
        x,
        WINDOW,
        XDP_PASS,
        None,
        vec![Flow("window_rewritten")],
        init,
        next,
    );

    // ---- egress (TC), against a bare TC program
    let t = Hook::Tc;
    let out = |s: Seg| s.with(|s| s.egress = true);
    add(
        Egress,
        "TCP packet matching no chain",
        t,
        E_COUNT,
        TCX_NEXT,
        None,
        vec![Prog("egress_entry", "passed")],
        vec![],
        fresh(|id| unlisted(id).with(|s| s.egress = true)),
    );
    let (init, next) = stream(|id| vec![syn_out(id)], move |id, k| out(data(id, k)), false);
    add(
        Egress,
        "MPTCP data segment: capture (subflow updated) + count",
        t,
        E_COUNT,
        TCX_NEXT,
        None,
        vec![Prog("egress_count", "applied")],
        init,
        next,
    );
    add(
        Egress,
        "pure ACK of a new subflow: captured (subflow created), MP_PRIO appended",
        t,
        E_BACKUP,
        TCX_NEXT,
        None,
        vec![
            EgressStat("subflows_created"),
            EgressStat("mp_prio_inserted"),
        ],
        vec![],
        fresh(|id| mptcp_ack(id, 5).with(|s| s.egress = true)),
    );
    // The local SYN (captured) and the peer's SYN-ACK (record_flow on
    // the interface's ingress): both scale, so the shift is known.
    let (init, next) = stream(
        |id| vec![syn_out(id), synack(id)],
        move |id, k| out(data(id, k)),
        false,
    );
    add(
        Egress,
        "MPTCP data segment: capture + set_window (window rewritten)",
        t,
        E_WINDOW,
        TCX_NEXT,
        None,
        vec![EgressStat("window_rewritten")],
        init,
        next,
    );

    add(
        Ingress,
        "reference, not emptcp: a parse-only XDP program (Ethernet, IPv4, TCP ports; xdp-tools style) on a data segment",
        x,
        REFERENCE,
        XDP_PASS,
        None,
        vec![],
        vec![],
        fresh(|id| data(id, 1)),
    );
    // ---- ingress at TC (`ingress_hook: tc`): the same data chain on an
    // skb of the device, against the bare TC program on the same skbs.
    let ti = Hook::TcIngress;
    add(
        TcIngress,
        "TC ingress: TCP packet matching no chain",
        ti,
        TC_DATA,
        TCX_NEXT,
        None,
        vec![Prog("entry", "passed")],
        vec![],
        fresh(unlisted),
    );
    let (init, next) = stream(|id| vec![synack(id)], data, false);
    add(
        TcIngress,
        "TC ingress: MPTCP data segment of a tracked connection (1400 B) through the data chain",
        ti,
        TC_DATA,
        TCX_NEXT,
        None,
        vec![
            Prog("record_flow", "applied"),
            Prog("recover_add_addr", "seen"),
        ],
        at_tc(init),
        next,
    );
    add(
        TcIngress,
        "TC ingress: ADD_ADDR pure ACK through the data chain: stored, dropped",
        ti,
        TC_DATA,
        TC_SHOT,
        None,
        vec![Flow("add_addr_dropped_pure_ack"), Flow("add_addr_stored")],
        vec![],
        Box::new(|_| add_addr_ack_of_new_flow()),
    );
    add(
        TcIngress,
        "TC ingress: pure ACK through the data chain: stored ADD_ADDR re-inserted (flow at recover_at)",
        ti,
        TC_DATA,
        TCX_NEXT,
        None,
        vec![Flow("add_addr_recovered")],
        vec![],
        Box::new(|_| reinsert_into_new_flow()),
    );
    // ---- an interface with the ingress capture (a packet_copy rule), at
    // XDP and at TC (`ingress_hook: tc`, after the TC rows of its table).
    for (table, hook, iface, pass, [unknown, captured], on_tc) in [
        (
            Capture,
            x,
            CAPTURE,
            XDP_PASS,
            [
                "TCP packet of no captured subflow, matching no chain",
                "MPTCP data segment of a captured subflow: capture + the data chain",
            ],
            false,
        ),
        (
            TcIngress,
            ti,
            TC_CAPTURE,
            TCX_NEXT,
            [
                "TC ingress, interface with the capture: TCP packet of no captured subflow, matching no chain",
                "TC ingress, interface with the capture: MPTCP data segment of a captured subflow: capture + the data chain",
            ],
            true,
        ),
    ] {
        add(
            table,
            unknown,
            hook,
            iface,
            pass,
            None,
            vec![Prog("entry", "passed")],
            vec![],
            fresh(unlisted),
        );
        // The subflows exist: the local end's SYN went out through the
        // egress chain `cap` of the same interface.
        let (init, next) = stream(|id| vec![syn_out(id), synack(id)], data, false);
        add(
            table,
            captured,
            hook,
            iface,
            pass,
            None,
            vec![
                Prog("record_flow", "applied"),
                Prog("recover_add_addr", "seen"),
            ],
            if on_tc { at_tc(init) } else { init },
            next,
        );
    }

    // The stream's first segments insert its flows into the floor's table
    // (run through the floor program before the rounds); then every
    // timed segment hits (main.rs checks the table still holds just them).
    for (row, iface) in [
        (FLOOR_ROW, FLOOR),
        (SMALL_FLOOR_ROW, SMALL_FLOOR),
        (V4_FLOOR_ROW, V4_FLOOR),
        (TWO_TABLE_FLOOR_ROW, TWO_TABLE_FLOOR),
    ] {
        let (init, next) = stream(|id| vec![data(id, 0)], data, false);
        add(Ingress, row, x, iface, XDP_PASS, None, vec![], init, next);
    }
    // Frames that change nothing when run again: no flow, nothing
    // written into the packet (count and drop only count).
    for p in &mut v {
        p.hot = p.name.contains("matching no chain")
            || p.name.starts_with("non-TCP")
            || p.name.starts_with("count alone")
            || p.name.contains("repeated")
            || p.name.starts_with("drop alone")
            || p.name.starts_with("reference");
        if p.name.starts_with("reference") {
            p.under = match p.iface {
                FLOOR => Under::LookupFloor,
                SMALL_FLOOR => Under::SmallLookupFloor,
                V4_FLOOR => Under::V4LookupFloor,
                TWO_TABLE_FLOOR => Under::TwoTableFloor,
                _ => Under::ParseOnly,
            };
        }
        if p.name == JOINED_DATA {
            p.relative_to = Some(INITIAL_DATA);
        }
        // Raw-IP frames as on Ethernet: a packet no chain takes at most
        // 1.5x a bare XDP_PASS, the full data chain at most 10x.
        if p.iface == TUN {
            p.ratio_target = Some(if p.name.contains("matching no chain") {
                1.5
            } else {
                10.0
            });
        }
    }
    v
}
