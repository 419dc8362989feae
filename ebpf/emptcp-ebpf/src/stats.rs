//! Per-CPU counters: outcomes (`STATS`, one row per program), datapath
//! events (`FLOW_STATS`) and egress events (`EGRESS_STATS`).
use emptcp_common::{EgressStat, FlowStat, Outcome, stats_index};

use crate::maps::{EGRESS_STATS, FLOW_STATS, STATS};

#[inline(always)]
pub fn bump(row: u32, outcome: Outcome) {
    if let Some(p) = STATS.get_ptr_mut(stats_index(row, outcome)) {
        // Per-CPU slot: no other writer, a plain add is enough.
        unsafe { *p += 1 };
    }
}

/// Counts one datapath event (`FLOW_STATS`).
#[inline(always)]
pub fn event(e: FlowStat) {
    if let Some(p) = FLOW_STATS.get_ptr_mut(e as u32) {
        unsafe { *p += 1 };
    }
}

/// Counts one egress event (`EGRESS_STATS`); the ingress capture counts
/// its closes there too.
#[inline(always)]
pub fn egress_event(e: EgressStat) {
    if let Some(p) = EGRESS_STATS.get_ptr_mut(e as u32) {
        unsafe { *p += 1 };
    }
}
