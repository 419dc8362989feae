//! Desired state: the policy normalized against the eBPF object that will be
//! loaded. Pure; the only check that needs the object is that each action's
//! program exists in it.
use std::collections::{BTreeMap, BTreeSet};

use emptcp_common::{
    Action as Slot, EGRESS_PREFIX, SEL_LOCAL, SEL_LOCAL_PORTS, SEL_REMOTE, SEL_REMOTE_PORTS,
    TC_INGRESS_CAPTURE, TC_PREFIX, egress_program, tc_program,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

mod programs;
mod tables;

use programs::used_programs;
pub use tables::UNUSED_TABLE_CAPACITY;
use tables::size_tables;

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

/// Where an interface's ingress chains run (`ingress_hook`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngressHook {
    /// The XDP entry (`entry`, an XDP link).
    #[default]
    Xdp,
    /// The TC ingress entry (`tc_entry`, a TCX link), after GRO.
    Tc,
}

impl IngressHook {
    fn is_xdp(&self) -> bool {
        *self == IngressHook::Xdp
    }
}

/// One interface: its ingress chains (the XDP entry, or `tc_entry` with
/// `ingress_hook: tc`; IFACES) and its egress chains (TC egress entry,
/// EGRESS_IFACES), each in policy order, and whether the ingress entry
/// captures what the peer sends for packet copy. The ingress entry is
/// attached when `chains` is not empty or `capture` is set, the TC egress
/// one when `egress_chains` is not empty or `track` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredIface {
    pub mode: XdpMode,
    /// Where `chains` run.
    #[serde(default, skip_serializing_if = "IngressHook::is_xdp")]
    pub ingress_hook: IngressHook,
    pub chains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_chains: Vec<String>,
    /// A `packet_copy` rule names the interface: the ingress entry records the
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
        self.ingress_hook == IngressHook::Xdp && (!self.chains.is_empty() || self.capture)
    }

    /// The interface's ingress chains, or its packet-copy capture, run at
    /// TC ingress (`tc_entry`).
    pub fn chains_on_tc(&self) -> bool {
        self.ingress_hook == IngressHook::Tc && (!self.chains.is_empty() || self.capture)
    }

    /// The TCX program of `hook` is attached to the interface.
    pub fn wants_tc(&self, hook: TcHook) -> bool {
        match hook {
            TcHook::Egress => !self.egress_chains.is_empty() || self.track,
            TcHook::Ingress => self.recover,
            TcHook::IngressChains => self.chains_on_tc(),
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
    #[error(
        "packet_copy '{rule}': interface '{interface}' runs its ingress at the tc hook (ingress_hook: tc), and this build's eBPF object has no {program} (the ingress capture at TC): use an emptcp build that has it, or set `ingress_hook: xdp` on the interface"
    )]
    NoTcCapture {
        rule: String,
        interface: String,
        program: &'static str,
    },
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
        // Ingress actions are programs named after the action, egress ones
        // `egress_<action>`, the TC ingress variants `tc_<action>` (the
        // entries themselves are not actions).
        let (tc, programs_xdp_egress): (Vec<&str>, Vec<&str>) = programs
            .iter()
            .map(String::as_str)
            .filter(|p| crate::object::is_action_program(p))
            .partition(|p| p.starts_with(TC_PREFIX));
        let (egress, ingress): (Vec<&str>, Vec<&str>) = programs_xdp_egress
            .into_iter()
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
        // An interface whose ingress chains run at TC needs the TC variant
        // of each of their actions.
        for i in &policy.interfaces {
            if i.ingress_hook != policy::IngressHook::Tc {
                continue;
            }
            for c in i.chains.iter().filter_map(|n| policy.chain(n)) {
                if c.hook != Hook::Ingress {
                    continue;
                }
                for a in &c.actions {
                    let (slot, _) = slot_of(a);
                    if !tc.contains(&tc_program(slot)) {
                        errors.push(DesiredError::UnsupportedAction {
                            chain: c.name.clone(),
                            action: format!(
                                "{} (hook ingress, interface {} with ingress_hook: tc)",
                                slot.name(),
                                i.name
                            ),
                            available: tc
                                .iter()
                                .map(|p| p.strip_prefix(TC_PREFIX).unwrap_or(p))
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                }
            }
        }
        // The triggers read the capture (SUBFLOWS), whose entries the
        // egress capture creates for the subflows an egress chain matches;
        // the ingress entry of the rule's interface adds what the peer sends
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
            let on_tc = policy
                .interface(&pc.interface)
                .is_some_and(|i| i.ingress_hook == policy::IngressHook::Tc);
            if on_tc && !programs.iter().any(|p| p == TC_INGRESS_CAPTURE) {
                errors.push(DesiredError::NoTcCapture {
                    rule: pc.name.clone(),
                    interface: pc.interface.clone(),
                    program: TC_INGRESS_CAPTURE,
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
                        ingress_hook: match i.ingress_hook {
                            policy::IngressHook::Xdp => IngressHook::Xdp,
                            policy::IngressHook::Tc => IngressHook::Tc,
                        },
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
        // The connection tables fill only where record_flow runs.
        let tracks = programs
            .iter()
            .any(|p| p == Slot::RecordFlow.name() || p == tc_program(Slot::RecordFlow));
        let mut maps = object_maps.clone();
        let map_overrides = size_tables(policy, tracks, &mut maps);
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
