//! The datapath's own counters, read from their pinned per-CPU maps and
//! summed over CPUs: per program and outcome (`STATS`), per chain
//! (`CHAIN_STATS`), the datapath's events (`FLOW_STATS`) and the egress
//! hook's events (`EGRESS_STATS`). Part of
//! observing, beside `observe`: read-only, and the one place that knows
//! these tables' layout (status, metrics and packet copy read them here).
//! A map that is not pinned (nothing applied yet) reads as no counters.
use std::collections::BTreeMap;

use aya::maps::{Map, MapData, PerCpuArray};
use emptcp_common::{
    Action, ChainCounters, EGRESS_STAT_NAMES, OUTCOME_NAMES, OUTCOMES, STATS_ROW_EGRESS,
    STATS_ROW_ENTRY, STATS_ROWS, egress_program,
};

use crate::layout::Layout;

fn percpu<V: aya::Pod>(layout: &Layout, name: &str) -> Option<PerCpuArray<MapData, V>> {
    let md = MapData::from_pin(layout.map(name)).ok()?;
    PerCpuArray::try_from(Map::from_map_data(md).ok()?).ok()
}

/// (packets, bytes) of each chain in `ids` (CHAIN_STATS); a chain whose
/// row cannot be read is left out.
pub fn chain_totals(layout: &Layout, ids: &[u32]) -> BTreeMap<u32, (u64, u64)> {
    let Some(m) = percpu::<ChainCounters>(layout, "CHAIN_STATS") else {
        return BTreeMap::new();
    };
    ids.iter()
        .filter_map(|id| {
            let v = m.get(id, 0).ok()?;
            Some((
                *id,
                v.iter()
                    .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes)),
            ))
        })
        .collect()
}

/// The datapath's event counters (FLOW_STATS), summed over CPUs.
pub fn datapath_events(layout: &Layout) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if let Some(m) = percpu::<u64>(layout, "FLOW_STATS") {
        for (i, name) in emptcp_common::FLOW_STAT_NAMES.iter().enumerate() {
            let v: u64 = m.get(&(i as u32), 0).map(|v| v.iter().sum()).unwrap_or(0);
            out.insert(name.to_string(), v);
        }
    }
    out
}

/// The egress hook's event counters (EGRESS_STATS), summed over CPUs.
pub fn egress_counters(layout: &Layout) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if let Some(m) = percpu::<u64>(layout, "EGRESS_STATS") {
        for (i, name) in EGRESS_STAT_NAMES.iter().enumerate() {
            let v: u64 = m.get(&(i as u32), 0).map(|v| v.iter().sum()).unwrap_or(0);
            out.insert(name.to_string(), v);
        }
    }
    out
}

/// Packets per program and outcome from the STATS map, summed over CPUs.
pub fn program_counters(layout: &Layout) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut programs = BTreeMap::new();
    if let Some(stats) = percpu::<u64>(layout, "STATS") {
        for row in 0..STATS_ROWS {
            let prog = if row == STATS_ROW_ENTRY {
                "entry".to_string()
            } else if row == STATS_ROW_EGRESS {
                "egress_entry".to_string()
            } else if let Some(a) = Action::from_u32(row) {
                a.name().to_string()
            } else if let Some(a) = row.checked_sub(STATS_ROW_EGRESS).and_then(Action::from_u32)
                && !egress_program(a).is_empty()
            {
                egress_program(a).to_string()
            } else {
                continue;
            };
            let mut outcomes = BTreeMap::new();
            for (k, name) in OUTCOME_NAMES.iter().enumerate() {
                let idx = row * OUTCOMES + k as u32;
                let v: u64 = stats.get(&idx, 0).map(|v| v.iter().sum()).unwrap_or(0);
                outcomes.insert(name.to_string(), v);
            }
            // No program counts `seen` (a counter less on every packet's
            // path): each packet that reaches a program or its chain step
            // ends in exactly one outcome (ebpf/emptcp-ebpf/src/stats.rs).
            let seen = ["applied", "passed", "error"]
                .iter()
                .map(|k| outcomes[*k])
                .sum();
            outcomes.insert("seen".to_string(), seen);
            programs.insert(prog, outcomes);
        }
    }
    programs
}
