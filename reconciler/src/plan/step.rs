//! The steps of a plan. Each is idempotent and carries its before/after so
//! a printed plan shows exactly what apply will do, and a saved plan can be
//! executed without the policy.
use serde::{Deserialize, Serialize};

use crate::{
    desired::XdpMode,
    layout::TcHook,
    netdev::AttachMode,
    object::MapDef,
    state::{ChainEntry, IfaceEntry, PortEntry, PrefixEntry, ThresholdEntry},
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// Move a map whose definition changed aside (`maps/old-NAME`); the
    /// running programs keep using it until they are replaced. Undo: rename
    /// it back.
    RetireMap {
        name: String,
        before: MapDef,
        after: MapDef,
        /// Entries are copied into the new map (otherwise rewritten from the
        /// policy for configuration maps, or lost with --allow-state-loss).
        migrate: bool,
    },
    /// Load the eBPF object: reuse pinned maps, create and pin missing ones,
    /// verify and pin `programs` (replacing older pins atomically by
    /// rename); the object's other programs are not loaded.
    LoadObject {
        object_sha256: String,
        creates_maps: Vec<String>,
        /// Capacities that differ from the object's (e.g. FLOWS).
        #[serde(default)]
        max_entries: std::collections::BTreeMap<String, u32>,
        /// The programs loaded, in the object's order. Required: a plan
        /// saved before loads named their programs cannot say which to load.
        programs: Vec<String>,
    },
    /// Record the layout fingerprint of each map (map -> fingerprint) by
    /// pinning it again as `layouts/<MAP>@<fingerprint>`, replacing a
    /// record of that name bound to another map.
    RecordLayouts {
        records: std::collections::BTreeMap<String, u64>,
    },
    /// Copy entries from `maps/old-NAME` into the new map (existing keys win).
    CopyMap {
        name: String,
    },
    /// Point tail-call slot `slot` at the pinned program `action`.
    SetSlot {
        action: String,
        slot: u32,
        before: Option<u32>,
    },
    /// Point slot `slot` of the egress tail-call array (EGRESS_PROGS) at
    /// the pinned TC program `program` (`egress_<action>`).
    SetEgressSlot {
        program: String,
        slot: u32,
        before: Option<u32>,
    },
    /// Point slot `slot` of the TC ingress tail-call array (TC_PROGS) at
    /// the pinned TC program `program` (`tc_<action>`).
    SetTcSlot {
        program: String,
        slot: u32,
        before: Option<u32>,
    },
    PutThresholds {
        id: u32,
        chain: String,
        before: Option<ThresholdEntry>,
        after: ThresholdEntry,
    },
    PutChain {
        id: u32,
        before: Option<ChainEntry>,
        after: ChainEntry,
    },
    PutPrefix {
        chain: String,
        entry: PrefixEntry,
    },
    PutPorts {
        chain: String,
        entries: Vec<PortEntry>,
    },
    PutSelector {
        id: u32,
        chain: String,
        before: Option<u32>,
        after: u32,
    },
    PutIface {
        ifindex: u32,
        before: Option<IfaceEntry>,
        after: IfaceEntry,
    },
    /// The interface's egress chain list (EGRESS_IFACES).
    PutEgressIface {
        ifindex: u32,
        before: Option<IfaceEntry>,
        after: IfaceEntry,
    },
    /// Remove a program emptcp did not attach (only planned with --force).
    DetachForeign {
        iface: String,
        prog_id: u32,
        prog_name: String,
        mode: AttachMode,
    },
    /// Attach the pinned entry program and pin the link.
    Attach {
        iface: String,
        ifindex: u32,
        mode: XdpMode,
    },
    /// Swap the program behind the pinned link (bpf_link_update, atomic).
    UpdateLink {
        iface: String,
        link_id: u32,
        before_prog: u32,
    },
    /// Attach the pinned program of `hook` (`egress_entry`, or
    /// `ingress_recover` at TC ingress) to the interface with a TCX link
    /// (Linux >= 6.6) and pin the link under `links/tc/` (egress) or
    /// `links/tc-ingress/`. Undo: `DetachTc`.
    AttachTc {
        iface: String,
        ifindex: u32,
        #[serde(default)]
        hook: TcHook,
    },
    /// Swap the program behind the pinned TCX link (bpf_link_update, atomic).
    UpdateTcLink {
        iface: String,
        link_id: u32,
        before_prog: u32,
        #[serde(default)]
        hook: TcHook,
    },
    DeleteIface {
        ifindex: u32,
        before: IfaceEntry,
    },
    DeleteEgressIface {
        ifindex: u32,
        before: IfaceEntry,
    },
    DeletePorts {
        chain: String,
        entries: Vec<PortEntry>,
    },
    DeletePrefix {
        chain: String,
        entry: PrefixEntry,
    },
    DeleteSelector {
        id: u32,
        chain: String,
        before: u32,
    },
    DeleteThresholds {
        id: u32,
        chain: String,
        before: ThresholdEntry,
    },
    DeleteChain {
        id: u32,
        before: ChainEntry,
    },
    ClearSlot {
        slot: u32,
        before: u32,
    },
    ClearEgressSlot {
        slot: u32,
        before: u32,
    },
    ClearTcSlot {
        slot: u32,
        before: u32,
    },
    /// Detach by removing our link pin (and BPF_LINK_DETACH).
    Detach {
        iface: String,
        link_id: u32,
    },
    /// Detach the TCX link of `hook` by removing our pin (and
    /// BPF_LINK_DETACH).
    DetachTc {
        iface: String,
        link_id: u32,
        #[serde(default)]
        hook: TcHook,
    },
    /// Remove a pin of ours (stale program, map of an older object, a
    /// migrated map's old copy).
    Unpin {
        path: String,
        what: String,
    },
    /// Remove the (empty) root directories: `destroy` only.
    RemoveRoot {
        path: String,
    },
    /// Record the converged object in META (last, so a crash before it
    /// makes the next plan redo the upgrade).
    WriteMeta {
        object_sha256: String,
    },
}

/// How a step changes its resource, for the `+ ~ -` rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Add,
    Modify,
    Remove,
}

impl Step {
    pub fn change(&self) -> Change {
        use Step::*;
        match self {
            LoadObject { .. }
            | RecordLayouts { .. }
            | Attach { .. }
            | AttachTc { .. }
            | PutPrefix { .. }
            | PutPorts { .. } => Change::Add,
            SetSlot { before, .. } | SetEgressSlot { before, .. } | SetTcSlot { before, .. } => {
                opt(before)
            }
            PutThresholds { before, .. } => opt(before),
            PutChain { before, .. } => opt(before),
            PutSelector { before, .. } => opt(before),
            PutIface { before, .. } | PutEgressIface { before, .. } => opt(before),
            RetireMap { .. }
            | CopyMap { .. }
            | UpdateLink { .. }
            | UpdateTcLink { .. }
            | WriteMeta { .. } => Change::Modify,
            DetachForeign { .. }
            | DeleteIface { .. }
            | DeleteEgressIface { .. }
            | DeletePorts { .. }
            | DeletePrefix { .. }
            | DeleteSelector { .. }
            | DeleteThresholds { .. }
            | DeleteChain { .. }
            | ClearSlot { .. }
            | ClearEgressSlot { .. }
            | ClearTcSlot { .. }
            | Detach { .. }
            | DetachTc { .. }
            | Unpin { .. }
            | RemoveRoot { .. } => Change::Remove,
        }
    }
}

fn opt<T>(before: &Option<T>) -> Change {
    if before.is_some() {
        Change::Modify
    } else {
        Change::Add
    }
}
