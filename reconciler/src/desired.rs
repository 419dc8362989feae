//! Desired state: the policy normalized against the eBPF object that will be
//! loaded. Pure; the only check that needs the object is that each action's
//! program exists in it.
use std::collections::{BTreeMap, BTreeSet};

use emptcp_common::{
    Action as Slot, EGRESS_PREFIX, SEL_LOCAL, SEL_LOCAL_PORTS, SEL_REMOTE, SEL_REMOTE_PORTS,
    egress_program,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    layout::TcHook,
    object::{MapDef, Object},
    policy::{self, Action, Hook, Policy},
    state::{Dir, StepEntry, ThresholdEntry},
};

/// Name of the flow table map, whose capacity the policy sets.
pub const FLOWS_MAP: &str = "FLOWS";
/// Stored ADD_ADDR options, sized from the flow table.
pub const FLOW_ADDRS_MAP: &str = "FLOW_ADDRS";
/// Connection tokens and joined subflows, sized from the flow table.
pub const TOKENS_MAP: &str = "TOKENS";
pub const JOINS_MAP: &str = "JOINS";
/// Window scales of handshakes in flight, sized like the connections.
pub const SYN_SHIFTS_MAP: &str = "SYN_SHIFTS";
/// The egress capture (`SUBFLOWS`), sized by the policy's egress chains.
pub const SUBFLOWS_MAP: &str = "SUBFLOWS";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    Auto,
    Native,
    Skb,
}

/// One interface: its ingress chains (XDP entry, IFACES) and its egress
/// chains (TC egress entry, EGRESS_IFACES), each in policy order, and
/// whether the XDP entry captures what the peer sends for packet copy.
/// The XDP program is attached when `chains` is not empty or `capture` is
/// set, the TC one when `egress_chains` is not empty or `track` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredIface {
    pub mode: XdpMode,
    pub chains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_chains: Vec<String>,
    /// A `packet_copy` rule names the interface: the XDP entry records the
    /// peer's side of its captured subflows (`IFACE_CAPTURE`): received
    /// data, the MP_CAPABLE keys of the server role, the peer's FIN/RST.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub capture: bool,
    /// An ingress chain of the interface tracks MPTCP connections
    /// (`record_flow`): the egress hook maps the joins the local end opens
    /// to their connection and reads the stack's ADD_ADDR echoes
    /// (`IFACE_TRACK`), so it is attached even without an egress chain.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub track: bool,
    /// An ingress chain of the interface uses `recover_add_addr`: the TC
    /// ingress program `ingress_recover` is attached (TCX), so a stored
    /// address reaches a pure download with no daemon running.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recover: bool,
}

impl DesiredIface {
    /// The XDP entry is attached to the interface.
    pub fn wants_xdp(&self) -> bool {
        !self.chains.is_empty() || self.capture
    }

    /// The TCX program of `hook` is attached to the interface.
    pub fn wants_tc(&self, hook: TcHook) -> bool {
        match hook {
            TcHook::Egress => !self.egress_chains.is_empty() || self.track,
            TcHook::Ingress => self.recover,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredChain {
    pub steps: Vec<StepEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<ThresholdEntry>,
    pub selector_flags: u32,
    pub prefixes: BTreeSet<(Dir, IpNet)>,
    pub ports: BTreeSet<(Dir, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub object_sha256: String,
    pub programs: Vec<String>,
    pub maps: BTreeMap<String, MapDef>,
    /// Map capacities the policy sets (differ from the object's default).
    pub map_overrides: BTreeMap<String, u32>,
    pub interfaces: BTreeMap<String, DesiredIface>,
    pub chains: BTreeMap<String, DesiredChain>,
    /// Chain names in policy order (ids for new chains are given in it).
    pub chain_order: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error(
        "chain '{chain}': action '{action}' has no program in this build's eBPF object (available: {available})"
    )]
    UnsupportedAction {
        chain: String,
        action: String,
        available: String,
    },
    #[error(
        "packet_copy '{rule}': chain '{chain}' runs on ingress, and the subflows packet copy forges for are captured by the egress hook (the ingress capture only completes them); give the rule a chain with `hook: egress` that matches the same traffic (e.g. actions: [count])"
    )]
    PacketCopyNeedsEgress { rule: String, chain: String },
}

/// The slot (tail-call index) and argument of a policy action.
pub fn slot_of(a: &Action) -> (Slot, u32) {
    match a {
        Action::RecordFlow => (Slot::RecordFlow, 0),
        Action::StripAddAddr => (Slot::StripAddAddr, 0),
        Action::RecoverAddAddr => (Slot::RecoverAddAddr, 0),
        Action::SetBackup { backup } => (Slot::SetBackup, u32::from(*backup)),
        Action::SetWindow { bytes } => (Slot::SetWindow, *bytes),
        Action::Count => (Slot::Count, 0),
        Action::Drop => (Slot::Drop, 0),
    }
}

/// The programs of the object the desired state runs, in the object's
/// order: the entry of each hook an interface uses, the program of each
/// action of the policy's chains, and what those programs hand packets to
/// (`record_flow_setup` behind `record_flow`, the egress capture in front
/// of every egress chain). Only these are loaded: the verifier's time is
/// most of a load's, and a program no packet reaches costs it for nothing.
fn used_programs(
    interfaces: &BTreeMap<String, DesiredIface>,
    chain_programs: &BTreeMap<&str, Vec<&str>>,
    object: &[String],
) -> Vec<String> {
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let any = |f: fn(&DesiredIface) -> bool| interfaces.values().any(f);
    if any(DesiredIface::wants_xdp) {
        used.insert(crate::object::ENTRY_PROGRAM);
    }
    if any(|i| i.capture) {
        used.insert(emptcp_common::INGRESS_CAPTURE);
    }
    if any(|i| i.wants_tc(TcHook::Egress)) {
        used.insert(crate::object::EGRESS_ENTRY);
    }
    if any(|i| i.wants_tc(TcHook::Ingress)) {
        used.insert(crate::object::INGRESS_RECOVER);
    }
    if any(|i| !i.egress_chains.is_empty()) {
        used.insert(emptcp_common::EGRESS_CAPTURE);
    }
    let run = interfaces
        .values()
        .flat_map(|i| i.chains.iter().chain(&i.egress_chains));
    for program in run.flat_map(|c| chain_programs.get(c.as_str()).into_iter().flatten()) {
        used.insert(program);
        if *program == Slot::RecordFlow.name() {
            used.insert(emptcp_common::RECORD_SETUP);
        }
    }
    object
        .iter()
        .filter(|p| used.contains(p.as_str()))
        .cloned()
        .collect()
}

/// Capacity of a table no chain of the policy fills: the least
/// `flow_capacity` allows (a preallocated LRU table of the default size
/// would lock ~450 MB of kernel memory for the four connection tables).
pub const UNUSED_TABLE_CAPACITY: u32 = policy::MIN_FLOW_CAPACITY;

/// Whether a chain some interface runs on ingress tracks MPTCP
/// connections (`record_flow`): only then do the connection tables fill.
pub fn tracks_connections(policy: &Policy) -> bool {
    policy.interfaces.iter().any(|i| {
        i.chains.iter().any(|c| {
            policy.chain(c).is_some_and(|c| {
                c.hook == Hook::Ingress && c.actions.iter().any(|a| matches!(a, Action::RecordFlow))
            })
        })
    })
}

/// Sizes the tables whose capacity depends on the policy in `maps`, and
/// returns those capacities. Each table gets its share of
/// `flow_capacity` only while a chain fills it, else
/// [`UNUSED_TABLE_CAPACITY`]: adding the first chain that fills a table
/// then migrates it (empty) to its full size, removing the last one
/// migrates it back (keeping what fits).
fn size_tables(policy: &Policy, maps: &mut BTreeMap<String, MapDef>) -> BTreeMap<String, u32> {
    let tracks = tracks_connections(policy);
    let flows = if tracks {
        policy.settings.flow_capacity
    } else {
        UNUSED_TABLE_CAPACITY
    };
    // Captured subflows: only egress chains fill the table; with one it
    // holds as many subflows as the flow table holds flows, up to the
    // object's default.
    let subflows = if policy.chains.iter().any(|c| c.hook == Hook::Egress) {
        policy.settings.flow_capacity.clamp(
            UNUSED_TABLE_CAPACITY,
            emptcp_common::DEFAULT_SUBFLOW_CAPACITY,
        )
    } else {
        UNUSED_TABLE_CAPACITY
    };
    // The token index holds one entry per connection. Joined subflows and
    // stored ADD_ADDRs are fewer (most connections never join or store
    // one): a quarter of the flow table, the datapath's default ratio.
    let quarter = (flows / 4).max(UNUSED_TABLE_CAPACITY);
    // Handshakes in flight (the window scales of connections the peer
    // opens): a fixed capacity, not a share of the flow table.
    let handshakes = if tracks {
        emptcp_common::SYN_SHIFT_CAPACITY
    } else {
        UNUSED_TABLE_CAPACITY
    };
    let mut overrides = BTreeMap::new();
    for (name, n) in [
        (FLOWS_MAP, flows),
        (TOKENS_MAP, flows),
        (JOINS_MAP, quarter),
        (FLOW_ADDRS_MAP, quarter),
        (SYN_SHIFTS_MAP, handshakes),
        (SUBFLOWS_MAP, subflows),
    ] {
        if let Some(m) = maps.get_mut(name) {
            m.max_entries = n;
            overrides.insert(name.to_string(), n);
        }
    }
    overrides
}

impl Desired {
    pub fn new(policy: &Policy, object: &Object) -> Result<Desired, Vec<DesiredError>> {
        Desired::build(policy, &object.sha256, &object.programs, &object.maps)
    }

    /// `new` from the object's identity, programs and maps (tests plan
    /// against a described object without an ELF file).
    pub fn build(
        policy: &Policy,
        object_sha256: &str,
        programs: &[String],
        object_maps: &BTreeMap<String, MapDef>,
    ) -> Result<Desired, Vec<DesiredError>> {
        let mut errors = Vec::new();
        let mut maps = object_maps.clone();
        let map_overrides = size_tables(policy, &mut maps);
        // Ingress actions are programs named after the action, egress ones
        // `egress_<action>` (the entries themselves are not actions).
        let (egress, ingress): (Vec<&str>, Vec<&str>) = programs
            .iter()
            .map(String::as_str)
            .filter(|p| crate::object::is_action_program(p))
            .partition(|p| p.starts_with(EGRESS_PREFIX));
        let mut chains = BTreeMap::new();
        // The program each chain's steps tail-call, by chain.
        let mut chain_programs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for c in &policy.chains {
            let mut steps = Vec::new();
            for a in &c.actions {
                let (slot, arg) = slot_of(a);
                let (program, available) = match c.hook {
                    Hook::Ingress => (slot.name(), &ingress),
                    Hook::Egress => (egress_program(slot), &egress),
                };
                chain_programs.entry(&c.name).or_default().push(program);
                if program.is_empty() || !available.contains(&program) {
                    let names: Vec<&str> = available
                        .iter()
                        .map(|p| p.strip_prefix(EGRESS_PREFIX).unwrap_or(p))
                        .collect();
                    errors.push(DesiredError::UnsupportedAction {
                        chain: c.name.clone(),
                        action: format!("{} (hook {})", slot.name(), c.hook.as_str()),
                        available: names.join(", "),
                    });
                }
                steps.push(StepEntry {
                    action: slot.name().to_string(),
                    arg,
                });
            }
            chains.insert(c.name.clone(), chain_of(c, steps));
        }
        // The triggers read the capture (SUBFLOWS), whose entries the
        // egress capture creates for the subflows an egress chain matches;
        // the XDP entry of the rule's interface adds what the peer sends
        // (`DesiredIface::capture`). The rules themselves run in `emptcp
        // watch` (reconciler/src/copy/).
        for pc in &policy.packet_copy {
            if policy
                .chain(&pc.chain)
                .is_some_and(|c| c.hook != Hook::Egress)
            {
                errors.push(DesiredError::PacketCopyNeedsEgress {
                    rule: pc.name.clone(),
                    chain: pc.chain.clone(),
                });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let hook = |name: &String| policy.chain(name).map(|c| c.hook).unwrap_or_default();
        let has_egress_entry = programs.iter().any(|p| p == crate::object::EGRESS_ENTRY);
        let has_recover = programs.iter().any(|p| p == crate::object::INGRESS_RECOVER);
        let uses = |chains: &[String], action: fn(&Action) -> bool| {
            chains.iter().any(|c| {
                policy
                    .chain(c)
                    .is_some_and(|c| c.actions.iter().any(action))
            })
        };
        let interfaces = policy
            .interfaces
            .iter()
            .map(|i| {
                let mode = match i.xdp_mode {
                    policy::XdpMode::Auto => XdpMode::Auto,
                    policy::XdpMode::Native => XdpMode::Native,
                    policy::XdpMode::Skb => XdpMode::Skb,
                };
                let (egress_chains, chains): (Vec<String>, Vec<String>) = i
                    .chains
                    .iter()
                    .cloned()
                    .partition(|c| hook(c) == Hook::Egress);
                // The ingress half of the capture the rule reads.
                let capture = policy.packet_copy.iter().any(|pc| pc.interface == i.name);
                // An object without the egress entry (none ships without
                // it; test fixtures do) cannot track the joins sent.
                let track = has_egress_entry && uses(&chains, |a| matches!(a, Action::RecordFlow));
                // Likewise an object without the recovery program leaves
                // recovery of pure downloads to the agent.
                let recover = has_recover && uses(&chains, |a| matches!(a, Action::RecoverAddAddr));
                (
                    i.name.clone(),
                    DesiredIface {
                        mode,
                        chains,
                        egress_chains,
                        capture,
                        track,
                        recover,
                    },
                )
            })
            .collect();
        let programs = used_programs(&interfaces, &chain_programs, programs);
        Ok(Desired {
            object_sha256: object_sha256.to_string(),
            programs,
            maps,
            map_overrides,
            interfaces,
            chains,
            chain_order: policy.chains.iter().map(|c| c.name.clone()).collect(),
        })
    }

    /// The desired state of `destroy`: nothing at all.
    pub fn empty(object: &Object) -> Desired {
        Desired {
            object_sha256: object.sha256.clone(),
            programs: object.programs.clone(),
            maps: object.maps.clone(),
            map_overrides: BTreeMap::new(),
            interfaces: BTreeMap::new(),
            chains: BTreeMap::new(),
            chain_order: Vec::new(),
        }
    }
}

fn chain_of(c: &policy::Chain, steps: Vec<StepEntry>) -> DesiredChain {
    let m = &c.r#match;
    let mut flags = 0;
    let mut prefixes = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for (dir, nets, bit) in [
        (Dir::Remote, &m.remote, SEL_REMOTE),
        (Dir::Local, &m.local, SEL_LOCAL),
    ] {
        if !nets.is_empty() {
            flags |= bit;
            prefixes.extend(nets.iter().map(|n| (dir, n.trunc())));
        }
    }
    for (dir, ranges, bit) in [
        (Dir::Remote, &m.remote_ports, SEL_REMOTE_PORTS),
        (Dir::Local, &m.local_ports, SEL_LOCAL_PORTS),
    ] {
        if !ranges.is_empty() {
            flags |= bit;
            for r in ranges {
                ports.extend((r.start..=r.end).map(|p| (dir, p)));
            }
        }
    }
    DesiredChain {
        steps,
        thresholds: c.thresholds.as_ref().map(|t| ThresholdEntry {
            remove_below: t.remove_below.0,
            recover_at: t.recover_at.0,
        }),
        selector_flags: flags,
        prefixes,
        ports,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The programs the desired state of an example policy loads, with the
    /// embedded object.
    fn programs_of(example: &str) -> Vec<String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/policies")
            .join(example);
        let policy = policy::load_file(&path).unwrap_or_else(|e| panic!("{example}: {e}"));
        let object = Object::load().expect("the embedded object");
        Desired::new(&policy, &object)
            .unwrap_or_else(|e| panic!("{example}: {e:?}"))
            .programs
    }

    #[test]
    fn only_the_programs_a_policy_uses_are_loaded() {
        let mut quickstart = programs_of("quickstart.yaml");
        quickstart.sort();
        // The data chain, the connection set-up behind record_flow, the
        // egress hook that maps the joins sent, the in-kernel recovery.
        assert_eq!(
            quickstart,
            [
                "count",
                "egress_entry",
                "entry",
                "ingress_recover",
                "record_flow",
                "record_flow_setup",
                "recover_add_addr",
                "strip_add_addr",
            ]
        );
        assert_eq!(programs_of("count-only.yaml"), ["count", "entry"]);
        // Egress chains bring the capture in front of them; packet copy
        // the ingress capture.
        let full = programs_of("full.yaml");
        for p in ["egress_capture", "egress_entry", "ingress_capture", "drop"] {
            assert!(full.iter().any(|f| f == p), "{p} not in {full:?}");
        }
        let object = Object::load().unwrap();
        let unused: Vec<&String> = object
            .programs
            .iter()
            .filter(|p| !full.contains(p))
            .collect();
        assert!(
            unused
                .iter()
                .all(|p| p.contains("set_") || p.as_str() == "egress_count"),
            "full.yaml leaves out {unused:?}"
        );
    }
}
