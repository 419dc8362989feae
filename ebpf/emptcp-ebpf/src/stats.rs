//! Per-CPU counters: outcomes (`STATS`, one row per program), datapath
//! events (`FLOW_STATS`) and egress events (`EGRESS_STATS`).
//!
//! An action counts exactly one outcome each time a packet reaches its
//! step: its program returns a [`Ran`] and the program macro counts it;
//! a step skipped as idle counts `passed`, one whose tail call failed
//! `error`. So `seen` is not counted (an increment less per step and
//! packet): user space reports it as applied + passed + error.
use emptcp_common::{EgressStat, FlowStat, Outcome, stats_index};

use crate::maps::{EGRESS_STATS, FLOW_STATS, STATS};

#[inline(always)]
pub fn bump(row: u32, outcome: Outcome) {
    if let Some(p) = STATS.get_ptr_mut(stats_index(row, outcome)) {
        // Per-CPU slot: no other writer, a plain add is enough.
        unsafe { *p += 1 };
    }
}

/// One run of an action program: the outcome its program macro counts
/// (once) and where the packet goes.
pub struct Ran<V> {
    pub outcome: Outcome,
    pub verdict: V,
}

impl<V> Ran<V> {
    /// The action changed or acted on the packet.
    #[inline(always)]
    pub fn applied(verdict: V) -> Self {
        Ran {
            outcome: Outcome::Applied,
            verdict,
        }
    }

    /// Not for the action: the packet goes on untouched.
    #[inline(always)]
    pub fn passed(verdict: V) -> Self {
        Ran {
            outcome: Outcome::Passed,
            verdict,
        }
    }

    /// Something failed (a missing map entry, a failed write).
    #[inline(always)]
    pub fn error(verdict: V) -> Self {
        Ran {
            outcome: Outcome::Error,
            verdict,
        }
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
