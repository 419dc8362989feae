//! Status: what is live, in operator terms: interfaces with their link,
//! mode and program, chains with thresholds and counters, per-program
//! outcome counters. Read-only; built from an observation plus the
//! datapath-owned counter maps.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    counters,
    kernel::KernelFeatures,
    layout::Layout,
    netdev::AttachMode,
    observe::Observed,
    state::ThresholdEntry,
    table_fill::{self, TableFill},
    watch::state_file::{self, DaemonState, ErrorReport, fmt_utc, now_unix},
};

#[derive(Debug, Serialize)]
pub struct IfaceStatus {
    pub name: String,
    pub ifindex: Option<u32>,
    /// Where the ingress chains run: `xdp`, or `tc` (a TCX ingress link of
    /// `tc_entry`, after GRO: `mode` is then absent and `attached`,
    /// `link_id`, `program_id` and `runs` are that link's).
    pub ingress_hook: &'static str,
    pub attached: bool,
    pub mode: Option<AttachMode>,
    pub link_id: Option<u32>,
    pub program_id: Option<u32>,
    pub program: Option<String>,
    pub chains: Vec<String>,
    /// The ingress entry (XDP, or TC with `ingress_hook: tc`) captures the
    /// peer's side of the subflows for packet copy (`IFACE_CAPTURE`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub capture: bool,
    /// What the XDP link runs (absent without a link).
    pub runs: Option<Runs>,
    /// The link type (iproute2's ARPHRD name: `ether`, `none` for tun, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_type: Option<String>,
    /// Parsed as raw IP (no Ethernet header, `IFACE_RAW_IP`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub raw_ip: bool,
    /// The device kind (`veth`, `bridge`, ...; absent for a NIC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Generic XDP on a device that may deliver CHECKSUM_COMPLETE: no
    /// option is inserted into IPv4 segments at XDP (`IFACE_SKB`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_ipv4_inserts: bool,
    /// The pinned TCX egress link (interfaces with egress chains).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressLinkStatus>,
    /// The pinned TCX ingress link of the in-kernel recovery (interfaces
    /// whose chains use recover_add_addr): deliveries it made count as
    /// `add_addr_recovered_kernel` in `datapath_events`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryLinkStatus>,
}

/// The TC ingress side of an interface (`ingress_recover`).
#[derive(Debug, Serialize)]
pub struct RecoveryLinkStatus {
    /// The link's interface is this one (not gone or re-created).
    pub attached: bool,
    pub link_id: u32,
    pub program_id: u32,
    pub runs: Runs,
}

/// What a link runs, read from the programs themselves (crate::identity),
/// never inferred from META or pin names.
#[derive(Debug, Serialize)]
pub struct Runs {
    /// The object of the program behind the link; `None`: a program no
    /// emptcp load stamped.
    pub object: Option<String>,
    /// Every tail-call slot of the hook holds a program of that object.
    pub slots_agree: bool,
    /// That object is the one META records as applied.
    pub is_applied: bool,
}

/// The TC egress side of an interface.
#[derive(Debug, Serialize)]
pub struct EgressLinkStatus {
    /// The link's interface is this one (not gone or re-created).
    pub attached: bool,
    pub link_id: Option<u32>,
    pub program_id: Option<u32>,
    pub chains: Vec<String>,
    pub runs: Option<Runs>,
}

#[derive(Debug, Serialize)]
pub struct ChainStatus {
    pub id: u32,
    pub name: String,
    pub actions: Vec<String>,
    pub thresholds: Option<ThresholdEntry>,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub root: String,
    pub object_sha256: Option<String>,
    /// Every pin, slot and link holds a program of the object META records
    /// (false after an interrupted load or a hand-made replacement, until
    /// the next apply).
    pub consistent: bool,
    /// Each place that holds a program of another object, or of none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inconsistencies: Vec<String>,
    pub interfaces: Vec<IfaceStatus>,
    pub chains: Vec<ChainStatus>,
    /// program -> outcome -> packets (summed over CPUs).
    pub programs: BTreeMap<String, BTreeMap<String, u64>>,
    /// Egress hook counters (EGRESS_STATS, summed over CPUs): subflows
    /// captured and removed, ring-buffer events lost, rewrites and skips.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub egress: BTreeMap<String, u64>,
    /// Datapath event counters (FLOW_STATS, summed over CPUs): connections
    /// created and removed, joins mapped, ADD_ADDRs stored, delivered by
    /// each path (`add_addr_recovered`: inserted into a packet;
    /// `add_addr_recovered_kernel`: in a duplicate ACK built in the
    /// kernel), confirmed, retried, given up, and what was ignored.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub datapath_events: BTreeMap<String, u64>,
    /// How full each pinned connection table is (crate::table_fill).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connection_tables: Vec<TableFill>,
    /// A connection table that was pinned but could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_tables_error: Option<String>,
    /// The `emptcp watch` daemon of this root, when it has a status file.
    pub daemon: Option<DaemonStatus>,
    /// What the running kernel offers (probed by `emptcp status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelFeatures>,
}

/// What the daemon last published, plus whether it is still running.
#[derive(Debug, Serialize)]
pub struct DaemonStatus {
    /// The status file it was read from.
    pub status_file: String,
    /// The process is running (its pid exists and it has not stopped).
    pub alive: bool,
    #[serde(flatten)]
    pub state: DaemonState,
}

/// Adds the daemon's state (from its status file under `state_dir`, keyed
/// by the bpffs root) to `s`. A missing or unreadable file leaves it out.
pub fn attach_daemon(s: &mut Status, state_dir: &std::path::Path, bpffs_root: &std::path::Path) {
    let path = state_file::path_for(state_dir, bpffs_root);
    match state_file::read(&path) {
        Ok(Some(state)) => {
            let alive = state.running && state_file::pid_alive(state.pid);
            s.daemon = Some(DaemonStatus {
                status_file: path.display().to_string(),
                alive,
                state,
            });
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("{e}"),
    }
}

fn ago(at: f64) -> String {
    let d = (now_unix() - at).max(0.0);
    let rel = if d < 120.0 {
        format!("{d:.0}s ago")
    } else if d < 7200.0 {
        format!("{:.0}m ago", d / 60.0)
    } else {
        format!("{:.1}h ago", d / 3600.0)
    };
    format!("{} ({rel})", fmt_utc(at))
}

fn render_error(out: &mut String, e: &ErrorReport) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "    error ({}): {}", e.kind, e.message);
    for d in &e.details {
        let place = match (&d.file, d.line, d.column) {
            (Some(f), Some(l), Some(c)) => format!("{f}:{l}:{c}: "),
            (Some(f), _, _) => format!("{f}: "),
            _ => String::new(),
        };
        let _ = writeln!(out, "      {place}{}", d.message);
        if let Some(h) = &d.hint {
            let _ = writeln!(out, "        hint: {h}");
        }
    }
}

fn render_daemon(out: &mut String, d: &DaemonStatus) {
    use std::fmt::Write as _;
    let st = &d.state;
    let short = |h: &Option<String>| {
        h.as_deref()
            .map(|h| h[..12.min(h.len())].to_string())
            .unwrap_or_else(|| "-".into())
    };
    let state = if d.alive {
        format!("running (pid {})", st.pid)
    } else if st.running {
        format!(
            "NOT RUNNING (pid {} is gone; it did not stop cleanly)",
            st.pid
        )
    } else {
        "stopped".to_string()
    };
    let _ = writeln!(out, "daemon: {state}, since {}", ago(st.started_at));
    let _ = writeln!(
        out,
        "  policy: {} {} (target {}, applied {}, newest read {}{})",
        st.policy.kind,
        st.policy.path,
        short(&st.policy.target_hash),
        short(&st.policy.applied_hash),
        short(&st.policy.read_hash),
        if st.policy.valid {
            ""
        } else {
            ": INVALID, the last good policy stays live"
        }
    );
    if let Some(e) = &st.policy.error {
        render_error(out, e);
    }
    if let Some(r) = &st.last_reconcile {
        let state = match (r.outcome.as_str(), r.converged) {
            ("policy_error", true) => "datapath unchanged, converged to the last good policy",
            ("policy_error" | "no_policy", false) => "datapath unchanged",
            (_, true) => "converged",
            (_, false) => "NOT converged",
        };
        let _ = writeln!(
            out,
            "  last reconcile: {} by {}, {} step(s), {:.1} ms, {state} ({})",
            r.outcome,
            r.trigger,
            r.steps,
            r.duration_ms,
            ago(r.at)
        );
        if let Some(e) = &r.error
            && st.policy.error.as_ref() != Some(e)
        {
            render_error(out, e);
        }
    }
    if let Some(t) = st.last_success_at {
        let _ = writeln!(out, "  last success: {}", ago(t));
    }
    if !st.missing_interfaces.is_empty() {
        let _ = writeln!(
            out,
            "  missing interfaces (attached when they appear): {}",
            st.missing_interfaces.join(", ")
        );
    }
    let c = &st.counters;
    let by: Vec<String> = c
        .reconciles
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(
        out,
        "  counters: reconciles [{}], drift corrections {}, policy errors {}, decider changes {}",
        by.join(" "),
        c.drift_corrections,
        c.policy_errors,
        c.decider_changes
    );
    for dc in &st.deciders {
        let _ = writeln!(
            out,
            "  decider {} ({}): {}, cpu {}, busy above {}% / calm below {}%, recover_at in force {}",
            dc.chain,
            dc.kind,
            if dc.busy { "BUSY" } else { "calm" },
            dc.cpu_usage_percent
                .map(|u| format!("{u:.1}%"))
                .unwrap_or_else(|| "-".into()),
            dc.busy_above_percent,
            dc.calm_below_percent,
            dc.recover_at_in_force
        );
    }
    for r in &st.packet_copy {
        let state = match &r.reason {
            Some(why) => format!("not armed: {why}"),
            None => "armed".into(),
        };
        let _ = writeln!(
            out,
            "  packet_copy {} on {}: {state}; fired {}, sent {}, send failures {}, rate limited {}, closed before firing {}{}",
            r.name,
            r.interface,
            r.fired,
            r.sent,
            r.send_failures,
            r.rate_limited,
            r.closed_before_firing,
            r.last_error
                .as_ref()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default()
        );
    }
    if let Some(a) = &st.metrics_addr {
        let _ = writeln!(out, "  metrics: http://{a}/metrics");
    }
}

pub fn status(layout: &Layout, o: &Observed) -> Status {
    let e = &o.entries;
    let chain_name = |id: &u32| {
        e.chains
            .get(id)
            .map(|c| c.name.clone())
            .unwrap_or_else(|| format!("#{id}"))
    };
    let mut interfaces: Vec<IfaceStatus> = Vec::new();
    let mut names: Vec<&String> = o.links.keys().collect();
    for n in o
        .tc_links
        .keys()
        .chain(o.tc_ingress_links.keys())
        .chain(o.tc_chain_links.keys())
        .chain(e.ifaces.values().map(|i| &i.name))
        .chain(e.egress_ifaces.values().map(|i| &i.name))
    {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names.sort();
    for name in names {
        let dev = o.netdevs.get(name);
        let xdp = dev.and_then(|d| d.xdp.as_ref());
        let tc = o.tc_chain_links.get(name);
        let (link, attached, slots) = match tc {
            Some(l) => (
                Some(l),
                Some(l.ifindex) == dev.map(|d| d.ifindex),
                &o.tc_prog_slots,
            ),
            None => {
                let link = o.links.get(name);
                let attached = matches!((link, xdp), (Some(l), Some(x)) if l.prog_id == x.prog_id);
                (link, attached, &o.prog_slots)
            }
        };
        interfaces.push(IfaceStatus {
            name: name.clone(),
            ifindex: dev.map(|d| d.ifindex),
            ingress_hook: if tc.is_some() { "tc" } else { "xdp" },
            attached,
            mode: xdp.filter(|_| tc.is_none()).map(|x| x.mode),
            link_id: link.map(|l| l.id),
            program_id: link.map(|l| l.prog_id),
            // What the link runs: the kernel's own answer for XDP, the
            // pinned program behind the TCX link (none: not one of ours).
            program: match tc {
                Some(l) => o
                    .programs
                    .iter()
                    .find(|(_, p)| p.id == l.prog_id)
                    .map(|(n, _)| n.clone()),
                None => xdp.map(|x| x.prog_name.clone()),
            },
            chains: e
                .ifaces
                .values()
                .find(|i| &i.name == name)
                .map(|i| i.chains.iter().map(chain_name).collect())
                .unwrap_or_default(),
            capture: e.ifaces.values().any(|i| &i.name == name && i.capture),
            no_ipv4_inserts: e.ifaces.values().any(|i| &i.name == name && i.skb),
            kind: dev.and_then(|d| d.kind.clone()),
            runs: link.map(|l| runs(o, l.prog_id, slots)),
            link_type: dev.and_then(|d| d.link_type.clone()),
            raw_ip: dev.is_some_and(|d| d.framing() == Ok(crate::netdev::Framing::RawIp)),
            egress: egress_status(o, name, dev.map(|d| d.ifindex), &chain_name),
            recovery: o.tc_ingress_links.get(name).map(|l| RecoveryLinkStatus {
                attached: Some(l.ifindex) == dev.map(|d| d.ifindex),
                link_id: l.id,
                program_id: l.prog_id,
                runs: runs(o, l.prog_id, &BTreeMap::new()),
            }),
        });
    }
    let ids: Vec<u32> = e.chains.keys().copied().collect();
    let totals = counters::chain_totals(layout, &ids);
    let chains = e
        .chains
        .iter()
        .map(|(id, c)| {
            let (packets, bytes) = totals.get(id).copied().unwrap_or((0, 0));
            ChainStatus {
                id: *id,
                name: c.name.clone(),
                actions: c.steps.iter().map(|s| s.action.clone()).collect(),
                thresholds: e.thresholds.get(id).copied(),
                packets,
                bytes,
            }
        })
        .collect();
    let programs = counters::program_counters(layout);
    let egress = counters::egress_counters(layout);
    let datapath_events = counters::datapath_events(layout);
    let inconsistencies = inconsistencies(o);
    let (connection_tables, connection_tables_error) = match table_fill::connection_tables(layout) {
        Ok(t) => (t, None),
        Err(e) => (
            Vec::new(),
            Some(format!("reading the connection tables: {e}")),
        ),
    };
    Status {
        root: layout.root.display().to_string(),
        object_sha256: o.recorded_object().map(str::to_string),
        consistent: inconsistencies.is_empty(),
        inconsistencies,
        interfaces,
        chains,
        programs,
        egress,
        datapath_events,
        connection_tables,
        connection_tables_error,
        daemon: None,
        kernel: None,
    }
}

/// The object META records as applied (`identity::object_id`).
fn applied_object(o: &Observed) -> Option<String> {
    o.recorded_object().map(crate::identity::object_id)
}

fn runs(o: &Observed, prog_id: u32, slots: &BTreeMap<u32, u32>) -> Runs {
    let object = o.object_of(prog_id).map(str::to_string);
    Runs {
        slots_agree: slots
            .values()
            .all(|id| o.object_of(*id) == object.as_deref()),
        is_applied: object.is_some() && object == applied_object(o),
        object,
    }
}

/// Every pin, slot and link whose program is not of the applied object.
fn inconsistencies(o: &Observed) -> Vec<String> {
    let applied = applied_object(o);
    let mut out = Vec::new();
    let mut check = |place: String, id: u32| {
        let have = o.object_of(id);
        if have != applied.as_deref() {
            out.push(format!(
                "{place}: program {id} of {}",
                have.map_or("no emptcp object".into(), |h| format!("object {h}"))
            ));
        }
    };
    for (name, p) in &o.programs {
        check(format!("progs/{name}"), p.id);
    }
    for (slot, id) in &o.prog_slots {
        check(format!("PROGS[{slot}]"), *id);
    }
    for (slot, id) in &o.egress_prog_slots {
        check(format!("EGRESS_PROGS[{slot}]"), *id);
    }
    for (slot, id) in &o.tc_prog_slots {
        check(format!("TC_PROGS[{slot}]"), *id);
    }
    for (name, l) in &o.links {
        check(format!("links/xdp/{name}"), l.prog_id);
    }
    for (name, l) in &o.tc_links {
        check(format!("links/tc/{name}"), l.prog_id);
    }
    for (name, l) in &o.tc_ingress_links {
        check(format!("links/tc-ingress/{name}"), l.prog_id);
    }
    for (name, l) in &o.tc_chain_links {
        check(format!("links/tc-chains/{name}"), l.prog_id);
    }
    out
}

fn egress_status(
    o: &Observed,
    name: &str,
    ifindex: Option<u32>,
    chain_name: &dyn Fn(&u32) -> String,
) -> Option<EgressLinkStatus> {
    let link = o.tc_links.get(name);
    let entry = o.entries.egress_ifaces.values().find(|i| i.name == name);
    if link.is_none() && entry.is_none() {
        return None;
    }
    Some(EgressLinkStatus {
        attached: link.is_some_and(|l| Some(l.ifindex) == ifindex),
        link_id: link.map(|l| l.id),
        program_id: link.map(|l| l.prog_id),
        chains: entry
            .map(|i| i.chains.iter().map(chain_name).collect())
            .unwrap_or_default(),
        runs: link.map(|l| runs(o, l.prog_id, &o.egress_prog_slots)),
    })
}

/// `label: name=value ...` for the counters that moved; nothing when none
/// did.
fn render_nonzero(out: &mut String, label: &str, counters: &BTreeMap<String, u64>) {
    use std::fmt::Write as _;
    let parts: Vec<String> = counters
        .iter()
        .filter(|(_, v)| **v != 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !parts.is_empty() {
        let _ = writeln!(out, "{label}: {}", parts.join(" "));
    }
}

/// ` runs=OBJECT`, flagged when it is not the applied object or the
/// slots hold programs of another.
fn render_runs(r: &Runs) -> String {
    let obj = r
        .object
        .as_deref()
        .map_or("NONE", |o| &o[..12.min(o.len())]);
    let mut s = format!(" runs={obj}");
    if !r.is_applied {
        s.push_str(" (NOT the applied object)");
    }
    if !r.slots_agree {
        s.push_str(" SLOTS DISAGREE");
    }
    s
}

pub fn render_text(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "root: {}", s.root);
    let _ = writeln!(
        out,
        "object: {}",
        s.object_sha256
            .as_deref()
            .map(|h| &h[..12.min(h.len())])
            .unwrap_or("(none applied)")
    );
    if !s.consistent {
        let _ = writeln!(
            out,
            "WARNING: what runs is not the applied object (an interrupted apply, or a change by hand; `emptcp apply` converges it):"
        );
        for i in &s.inconsistencies {
            let _ = writeln!(out, "  {i}");
        }
    }
    let _ = writeln!(out, "interfaces:");
    if s.interfaces.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for i in &s.interfaces {
        let _ = writeln!(
            out,
            "  {:<12} {:<9} mode={:<6} link={:<6} prog={:<6} chains=[{}]{}{}{}{}",
            i.name,
            if i.attached { "attached" } else { "DETACHED" },
            match i.mode {
                Some(m) => format!("{m:?}").to_lowercase(),
                None => (if i.ingress_hook == "tc" { "tc" } else { "-" }).into(),
            },
            i.link_id
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            i.program_id
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            i.chains.join(", "),
            if i.capture { " capture" } else { "" },
            i.runs.as_ref().map(render_runs).unwrap_or_default(),
            if i.raw_ip {
                format!(" raw-ip ({})", i.link_type.as_deref().unwrap_or("?"))
            } else {
                String::new()
            },
            // Generic XDP where CHECKSUM_COMPLETE may arrive (plan note).
            if i.no_ipv4_inserts {
                " no-ipv4-inserts"
            } else {
                ""
            }
        );
        if let Some(g) = &i.egress {
            let _ = writeln!(
                out,
                "  {:<12} {:<9} tc egress  link={:<6} prog={:<6} chains=[{}]{}",
                "",
                if g.attached { "attached" } else { "DETACHED" },
                g.link_id
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                g.program_id
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                g.chains.join(", "),
                g.runs.as_ref().map(render_runs).unwrap_or_default()
            );
        }
        if let Some(r) = &i.recovery {
            let _ = writeln!(
                out,
                "  {:<12} {:<9} tc ingress link={:<6} prog={:<6} in-kernel recovery{}",
                "",
                if r.attached { "attached" } else { "DETACHED" },
                r.link_id,
                r.program_id,
                render_runs(&r.runs)
            );
        }
    }
    let _ = writeln!(out, "chains:");
    for c in &s.chains {
        let t = c
            .thresholds
            .map(|t| {
                format!(
                    " remove_below={} recover_at={}",
                    t.remove_below, t.recover_at
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<24} id={:<3} packets={:<10} bytes={:<12} actions=[{}]{t}",
            c.name,
            c.id,
            c.packets,
            c.bytes,
            c.actions.join(", ")
        );
    }
    if !s.programs.is_empty() {
        let _ = writeln!(out, "programs (packets by outcome):");
        for (p, o) in &s.programs {
            if o.values().all(|v| *v == 0) {
                continue;
            }
            let parts: Vec<String> = o.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(out, "  {:<18} {}", p, parts.join(" "));
        }
    }
    render_nonzero(&mut out, "egress", &s.egress);
    render_nonzero(&mut out, "datapath", &s.datapath_events);
    table_fill::render(&mut out, &s.connection_tables);
    if let Some(e) = &s.connection_tables_error {
        let _ = writeln!(out, "connection tables: {e}");
    }
    if let Some(d) = &s.daemon {
        render_daemon(&mut out, d);
    }
    if let Some(k) = &s.kernel {
        out.push_str(&k.render());
    }
    out
}
