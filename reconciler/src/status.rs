//! Status: what is live, in operator terms: interfaces with their link,
//! mode and program, chains with thresholds and counters, per-program
//! outcome counters. Read-only; built from an observation plus the
//! datapath-owned counter maps.
use std::collections::BTreeMap;

use aya::maps::{Map, MapData, PerCpuArray};
use emptcp_common::{Action, ChainCounters, OUTCOME_NAMES, OUTCOMES, STATS_ROW_ENTRY, STATS_ROWS};
use serde::Serialize;

use crate::{layout::Layout, netdev::AttachMode, observe::Observed, state::ThresholdEntry};

#[derive(Debug, Serialize)]
pub struct IfaceStatus {
    pub name: String,
    pub ifindex: Option<u32>,
    pub attached: bool,
    pub mode: Option<AttachMode>,
    pub link_id: Option<u32>,
    pub program_id: Option<u32>,
    pub program: Option<String>,
    pub chains: Vec<String>,
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
    pub interfaces: Vec<IfaceStatus>,
    pub chains: Vec<ChainStatus>,
    /// program -> outcome -> packets (summed over CPUs).
    pub programs: BTreeMap<String, BTreeMap<String, u64>>,
}

fn percpu<V: aya::Pod>(layout: &Layout, name: &str) -> Option<PerCpuArray<MapData, V>> {
    let md = MapData::from_pin(layout.map(name)).ok()?;
    PerCpuArray::try_from(Map::from_map_data(md).ok()?).ok()
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
    for i in e.ifaces.values() {
        if !names.contains(&&i.name) {
            names.push(&i.name);
        }
    }
    names.sort();
    for name in names {
        let link = o.links.get(name);
        let dev = o.netdevs.get(name);
        let xdp = dev.and_then(|d| d.xdp.as_ref());
        let attached = matches!((link, xdp), (Some(l), Some(x)) if l.prog_id == x.prog_id);
        interfaces.push(IfaceStatus {
            name: name.clone(),
            ifindex: dev.map(|d| d.ifindex),
            attached,
            mode: xdp.map(|x| x.mode),
            link_id: link.map(|l| l.id),
            program_id: link.map(|l| l.prog_id),
            program: xdp.map(|x| x.prog_name.clone()),
            chains: e
                .ifaces
                .values()
                .find(|i| &i.name == name)
                .map(|i| i.chains.iter().map(chain_name).collect())
                .unwrap_or_default(),
        });
    }
    let counters = percpu::<ChainCounters>(layout, "CHAIN_STATS");
    let chains = e
        .chains
        .iter()
        .map(|(id, c)| {
            let (packets, bytes) = counters
                .as_ref()
                .and_then(|m| m.get(id, 0).ok())
                .map(|v| {
                    v.iter()
                        .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes))
                })
                .unwrap_or((0, 0));
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
    let mut programs = BTreeMap::new();
    if let Some(stats) = percpu::<u64>(layout, "STATS") {
        for row in 0..STATS_ROWS {
            let prog = if row == STATS_ROW_ENTRY {
                "entry".to_string()
            } else if let Some(a) = Action::from_u32(row) {
                a.name().to_string()
            } else {
                continue;
            };
            let mut outcomes = BTreeMap::new();
            for (k, name) in OUTCOME_NAMES.iter().enumerate() {
                let idx = row * OUTCOMES + k as u32;
                let v: u64 = stats.get(&idx, 0).map(|v| v.iter().sum()).unwrap_or(0);
                outcomes.insert(name.to_string(), v);
            }
            programs.insert(prog, outcomes);
        }
    }
    Status {
        root: layout.root.display().to_string(),
        object_sha256: o.meta.as_ref().map(|m| m.object_sha256.clone()),
        interfaces,
        chains,
        programs,
    }
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
    let _ = writeln!(out, "interfaces:");
    if s.interfaces.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for i in &s.interfaces {
        let _ = writeln!(
            out,
            "  {:<12} {:<9} mode={:<6} link={:<6} prog={:<6} chains=[{}]",
            i.name,
            if i.attached { "attached" } else { "DETACHED" },
            i.mode
                .map(|m| format!("{m:?}").to_lowercase())
                .unwrap_or_else(|| "-".into()),
            i.link_id
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            i.program_id
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            i.chains.join(", ")
        );
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
    out
}
