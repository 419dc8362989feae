//! Plan: a pure function from (desired, observed) to an ordered list of
//! idempotent steps. No I/O. The order keeps traffic from ever seeing a half
//! state: new programs and entries first, then selectors and interface
//! lists switch to them, then links swap, then stale entries and pins go,
//! and META is written last.
//!
//! One module per phase, each deciding one part of the plan: `maps`
//! (reuse, create, retire and migrate, unpin), `object` (load, older
//! programs, META), `slots` (tail-call slots), `entries` (chain ids and the
//! configuration maps' entries: chains, thresholds, selectors, prefixes,
//! ports, interfaces), `links` (link types, XDP and TCX links). Each adds
//! its steps to one [`Steps`] bucket per kind; `Steps::into_ordered` puts
//! them in the hitless order.
mod entries;
mod links;
mod maps;
mod object;
mod render;
pub use render::describe;
mod slots;
mod step;
#[cfg(test)]
mod tests;
mod view;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use entries::{iface_filter, inline_v4_prefixes};
pub use render::{TextOptions, render_json, render_text, render_text_with};
pub use step::{Change, Step};
pub use view::View;

use crate::{
    desired::Desired,
    layout::TcHook,
    netdev::{AttachMode, NetDev},
    object::MapDef,
    observe::Observed,
    state::Entries,
};

/// Maps whose every entry apply writes from the policy: replacing them loses
/// nothing. Every other map holds datapath state (flows, counters).
pub const CONFIG_MAPS: &[&str] = &[
    "PROGS",
    "CHAINS",
    "THRESHOLDS",
    "SELECTORS",
    "SEL_V4",
    "SEL_V6",
    "PORTS",
    "IFACES",
    "IFACE_SLOTS",
    "META",
    "EGRESS_PROGS",
    "EGRESS_IFACES",
    "TC_PROGS",
    // Per-CPU scratch of the egress description: nothing outlives a packet.
    "EGRESS_META",
    // Per-CPU buffer of the TCP checksum check: nothing outlives a packet.
    "CSUM_SCRATCH",
    // Per-CPU XDP description: nothing outlives a packet.
    "XDP_DESC",
    // Per-CPU TC ingress description: nothing outlives a packet.
    "TC_DESC",
];

#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Replace foreign XDP programs on the policy's interfaces.
    pub force: bool,
    /// Allow replacing a state map whose definition changed and cannot be
    /// migrated (its contents are lost).
    pub allow_state_loss: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub object_sha256: String,
    /// Hash of the observed state the plan was computed from; apply of a
    /// saved plan refuses when the live state no longer has it.
    pub observed_hash: String,
    /// Interfaces the plan looked at (their facts are part of the hash).
    pub interfaces: Vec<String>,
    pub steps: Vec<Step>,
    /// Facts worth telling that need no step (e.g. a missing interface).
    pub notes: Vec<String>,
    pub before: View,
    pub after: View,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "this bpffs root serves network namespace net:[{owner}], and this is net:[{current}]: one root serves one namespace (its maps are keyed by ifindex and 4-tuple, which namespaces reuse); give this namespace its own root (--bpffs-root /sys/fs/bpf/emptcp-NAME), or run `emptcp destroy` on this root from net:[{owner}] first"
    )]
    OtherNamespace { owner: u32, current: u32 },
    #[error(
        "interface {iface} has a foreign XDP program attached (id {prog_id}, name '{prog_name}', mode {mode:?}); emptcp never detaches programs it did not attach: remove it, or re-run with --force to replace it"
    )]
    Foreign {
        iface: String,
        prog_id: u32,
        prog_name: String,
        mode: AttachMode,
    },
    #[error(
        "map {name} holds datapath state and its definition changed ({before} -> {after}) in a way that cannot be migrated (a new key or value layout reads the old entries wrong); re-run with --allow-state-loss to replace it (its contents are lost)"
    )]
    StateLoss {
        name: String,
        before: MapDef,
        after: MapDef,
    },
    #[error(
        "map {name} is still being migrated (maps/old-{name} holds entries an interrupted apply has not copied yet, in a layout the pinned {name} cannot take) and its definition changes again; apply a policy that leaves {name} as it is to finish the migration first, or re-run with --allow-state-loss to replace it (the entries not yet copied are lost)"
    )]
    UnfinishedMigration { name: String },
    #[error(
        "more than {max} chains would be live (ids are kept for existing chains); apply a policy with fewer chains first"
    )]
    TooManyChains { max: u32 },
    #[error(
        "interface {iface} is a raw-IP link (link type {link_type}) and its driver runs no native XDP for it (tun only in TAP mode; WireGuard, wwan and tunnels not at all); set xdp_mode: skb or auto for {iface}"
    )]
    NativeOnRawIp { iface: String, link_type: String },
    #[error(
        "interface {iface} has link type '{link_type}', which the datapath cannot parse (it serves Ethernet and raw IP: tun, WireGuard, wwan raw-ip, ipip/gre/sit); remove {iface} from the policy's interfaces"
    )]
    LinkType { iface: String, link_type: String },
}

/// Hash of the parts of `o` a plan depends on.
pub fn observed_hash(o: &Observed, interfaces: &[String]) -> String {
    #[derive(Serialize)]
    struct Relevant<'a> {
        meta: &'a Option<crate::observe::ObservedMeta>,
        maps: &'a BTreeMap<String, MapDef>,
        programs: &'a BTreeMap<String, crate::observe::ObservedProg>,
        prog_slots: &'a BTreeMap<u32, u32>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        egress_prog_slots: &'a BTreeMap<u32, u32>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        tc_prog_slots: &'a BTreeMap<u32, u32>,
        links: &'a BTreeMap<String, crate::observe::ObservedLink>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        tc_links: &'a BTreeMap<String, crate::observe::ObservedLink>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        tc_ingress_links: &'a BTreeMap<String, crate::observe::ObservedLink>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        tc_chain_links: &'a BTreeMap<String, crate::observe::ObservedLink>,
        entries: &'a Entries,
        netdevs: BTreeMap<&'a String, &'a NetDev>,
    }
    let r = Relevant {
        meta: &o.meta,
        maps: &o.maps,
        programs: &o.programs,
        prog_slots: &o.prog_slots,
        egress_prog_slots: &o.egress_prog_slots,
        tc_prog_slots: &o.tc_prog_slots,
        links: &o.links,
        tc_links: &o.tc_links,
        tc_ingress_links: &o.tc_ingress_links,
        tc_chain_links: &o.tc_chain_links,
        entries: &o.entries,
        netdevs: o
            .netdevs
            .iter()
            .filter(|(n, _)| {
                interfaces.contains(n)
                    || o.links.contains_key(*n)
                    || o.tc_links.contains_key(*n)
                    || o.tc_ingress_links.contains_key(*n)
                    || o.tc_chain_links.contains_key(*n)
            })
            .collect(),
    };
    let json = serde_json::to_vec(&r).unwrap_or_default();
    hex::encode(Sha256::digest(json))
}

/// State maps whose value only ever grows by fields appended at its end,
/// whose zero means "not seen yet": an older map's entries are copied
/// zero-extended (`copy_entries` reads an old value into a zeroed buffer
/// of the new size).
pub const APPEND_ONLY_MAPS: &[&str] = &[
    // SubflowState: 96 -> 104 bytes (last_rx_data_ns, layout 3), 104 -> 112
    // (peer_token, layout 6).
    "SUBFLOWS",
    // FlowState: 152 -> 184 bytes (first_addr, layout 8; an older entry's
    // zeros hold no option there, so its options stay in FLOW_ADDRS).
    "FLOWS",
];

/// Computes the plan. Pure. Phase by phase, in the order their decisions
/// depend on each other: the maps (what the load creates), the object
/// (whether it is loaded), the tail-call slots, the entries, the links,
/// then what is pruned and whether META is written.
pub fn plan(d: &Desired, o: &Observed, opts: PlanOptions) -> Result<Plan, Vec<PlanError>> {
    let mut p = Planning::default();
    object::one_namespace_per_root(o, &mut p)?;
    let maps = maps::replace_changed_maps(d, o, opts, &mut p);
    maps::record_layouts(d, o, &maps.creates, &mut p);
    let load = object::load_unless_pinned(d, o, maps.creates, &mut p);
    maps::finish_interrupted_migrations(d, o, &maps.retired, &mut p.steps);
    maps::unpin_maps_not_in_object(d, o, &mut p.steps);
    slots::fill_tail_call_slots(d, o, &load, &maps.retired, &mut p.steps);
    entries::converge_entries(d, o, &maps.retired, &mut p);
    links::link_types(d, o, &mut p);
    links::xdp_links(d, o, opts, &load, &mut p);
    links::tc_links(d, o, &load, &mut p.steps);
    object::unpin_programs_not_used(d, o, &mut p.steps);
    object::write_meta_unless_current(d, o, &load, &mut p.steps);
    if !p.errors.is_empty() {
        return Err(p.errors);
    }
    let interfaces: Vec<String> = d.interfaces.keys().cloned().collect();
    Ok(Plan {
        object_sha256: d.object_sha256.clone(),
        observed_hash: observed_hash(o, &interfaces),
        interfaces,
        steps: p.steps.into_ordered(),
        notes: p.notes,
        before: View::observed(o),
        after: View::desired(d),
    })
}

/// What the phases decide: steps, errors and notes, each in the order the
/// phases found them.
#[derive(Default)]
struct Planning {
    steps: Steps,
    errors: Vec<PlanError>,
    notes: Vec<String>,
}

/// The plan of `destroy`: detach every link of ours, remove every pin and
/// the root. Pure.
pub fn destroy(o: &Observed) -> Plan {
    let mut steps = Vec::new();
    for (name, link) in &o.links {
        steps.push(Step::Detach {
            iface: name.clone(),
            link_id: link.id,
        });
    }
    for hook in TcHook::ALL {
        for (name, link) in o.tc_links_of(hook) {
            steps.push(Step::DetachTc {
                iface: name.clone(),
                link_id: link.id,
                hook,
            });
        }
    }
    for name in o.programs.keys() {
        steps.push(Step::Unpin {
            path: format!("progs/{name}"),
            what: "program".into(),
        });
    }
    for name in o.maps.keys() {
        steps.push(maps::unpin_map(name));
    }
    for record in &o.layout_records {
        steps.push(Step::Unpin {
            path: format!("layouts/{record}"),
            what: "layout record".into(),
        });
    }
    if o.root.exists() || !steps.is_empty() {
        steps.push(Step::RemoveRoot {
            path: o.root.display().to_string(),
        });
    }
    Plan {
        object_sha256: String::new(),
        observed_hash: observed_hash(o, &[]),
        interfaces: Vec::new(),
        steps,
        notes: Vec::new(),
        before: View::observed(o),
        after: View::default(),
    }
}

/// Steps by phase; `into_ordered` fixes the hitless order.
#[derive(Default)]
struct Steps {
    retire: Vec<Step>,
    load: Vec<Step>,
    records: Vec<Step>,
    copy: Vec<Step>,
    slots: Vec<Step>,
    puts: Vec<Step>,
    selectors: Vec<Step>,
    ifaces: Vec<Step>,
    relink: Vec<Step>,
    links: Vec<Step>,
    deletes: Vec<Step>,
    clear_slots: Vec<Step>,
    detach: Vec<Step>,
    unpin: Vec<Step>,
    meta: Vec<Step>,
}

impl Steps {
    fn into_ordered(self) -> Vec<Step> {
        [
            self.retire,
            self.load,
            self.records,
            self.copy,
            self.slots,
            self.puts,
            self.selectors,
            self.ifaces,
            self.relink,
            self.links,
            self.deletes,
            self.clear_slots,
            self.detach,
            self.unpin,
            self.meta,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}
