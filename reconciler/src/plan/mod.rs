//! Plan: a pure function from (desired, observed) to an ordered list of
//! idempotent steps. No I/O. The order keeps traffic from ever seeing a half
//! state: new programs and entries first, then selectors and interface
//! lists switch to them, then links swap, then stale entries and pins go,
//! and META is written last.
mod render;
pub use render::describe;
mod step;
#[cfg(test)]
mod tests;
mod view;

use std::collections::{BTreeMap, BTreeSet};

use emptcp_common::{Action, EGRESS_SLOTS, LAYOUT_VERSION, MAX_CHAINS};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use render::{render_json, render_text};
pub use step::{Change, Step};
pub use view::View;

use crate::{
    desired::{Desired, XdpMode},
    layout::{OLD_PREFIX, TcHook},
    netdev::{AttachMode, Framing, NetDev},
    object::{ENTRY_PROGRAM, MapDef},
    observe::Observed,
    state::{Entries, IfaceEntry, IfaceFilter, PortEntry},
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
    // Per-CPU scratch of the egress description: nothing outlives a packet.
    "EGRESS_META",
    // Per-CPU buffer of the TCP checksum check: nothing outlives a packet.
    "CSUM_SCRATCH",
    // Per-CPU XDP description: nothing outlives a packet.
    "XDP_DESC",
];

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

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
        "interface {iface} has a foreign XDP program attached (id {prog_id}, name '{prog_name}', mode {mode:?}); emptcp never detaches programs it did not attach: remove it, or re-run with --force to replace it"
    )]
    Foreign {
        iface: String,
        prog_id: u32,
        prog_name: String,
        mode: AttachMode,
    },
    #[error(
        "map {name} holds datapath state and its definition changed ({before:?} -> {after:?}) in a way that cannot be migrated; re-run with --allow-state-loss to replace it (its contents are lost)"
    )]
    StateLoss {
        name: String,
        before: MapDef,
        after: MapDef,
    },
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
        links: &'a BTreeMap<String, crate::observe::ObservedLink>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        tc_links: &'a BTreeMap<String, crate::observe::ObservedLink>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        tc_ingress_links: &'a BTreeMap<String, crate::observe::ObservedLink>,
        entries: &'a Entries,
        netdevs: BTreeMap<&'a String, &'a NetDev>,
    }
    let r = Relevant {
        meta: &o.meta,
        maps: &o.maps,
        programs: &o.programs,
        prog_slots: &o.prog_slots,
        egress_prog_slots: &o.egress_prog_slots,
        links: &o.links,
        tc_links: &o.tc_links,
        tc_ingress_links: &o.tc_ingress_links,
        entries: &o.entries,
        netdevs: o
            .netdevs
            .iter()
            .filter(|(n, _)| {
                interfaces.contains(n)
                    || o.links.contains_key(*n)
                    || o.tc_links.contains_key(*n)
                    || o.tc_ingress_links.contains_key(*n)
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
    // SubflowState: 96 -> 104 bytes (last_rx_data_ns, layout 3).
    "SUBFLOWS",
];

fn migratable(name: &str, before: &MapDef, after: &MapDef) -> bool {
    let value_ok = before.value_size == after.value_size
        || (APPEND_ONLY_MAPS.contains(&name) && before.value_size < after.value_size);
    before.map_type == after.map_type
        && before.key_size == after.key_size
        && value_ok
        && before.flags == after.flags
        && matches!(
            after.map_type,
            BPF_MAP_TYPE_HASH | BPF_MAP_TYPE_ARRAY | BPF_MAP_TYPE_LRU_HASH
        )
}

/// Computes the plan. Pure.
pub fn plan(d: &Desired, o: &Observed, opts: PlanOptions) -> Result<Plan, Vec<PlanError>> {
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let mut s = Steps::default();

    // --- maps and the object ------------------------------------------------
    let mut retired: BTreeSet<&str> = BTreeSet::new();
    let mut creates = Vec::new();
    for (name, want) in &d.maps {
        match o.maps.get(name) {
            None => creates.push(name.clone()),
            Some(have) if have == want => {}
            Some(have) => {
                let config = CONFIG_MAPS.contains(&name.as_str());
                let migrate = !config && migratable(name, have, want);
                if !config && !migrate && !opts.allow_state_loss {
                    errors.push(PlanError::StateLoss {
                        name: name.clone(),
                        before: *have,
                        after: *want,
                    });
                    continue;
                }
                retired.insert(name);
                creates.push(name.clone());
                s.retire.push(Step::RetireMap {
                    name: name.clone(),
                    before: *have,
                    after: *want,
                    migrate,
                });
                if migrate {
                    s.copy.push(Step::CopyMap { name: name.clone() });
                }
                s.unpin.push(unpin_map(&format!("{OLD_PREFIX}{name}")));
            }
        }
    }
    let meta_ok = o
        .meta
        .as_ref()
        .is_some_and(|m| m.object_sha256 == d.object_sha256 && m.layout_version == LAYOUT_VERSION);
    // Whether the object must be loaded is decided by what the pins hold
    // (read from the programs), not by META: META says what the last
    // finished apply converged to, and a load killed after pinning leaves
    // pins that disagree with it. A layout change comes with a new object.
    let progs_ok = pins_hold_the_object(d, o, &mut notes);
    let need_load = !progs_ok || !creates.is_empty();
    if need_load {
        s.load.push(Step::LoadObject {
            object_sha256: d.object_sha256.clone(),
            creates_maps: creates,
            max_entries: d.map_overrides.clone(),
        });
    }
    // Leftovers of an interrupted migration: finish it.
    for (name, have) in &o.maps {
        let Some(base) = name.strip_prefix(OLD_PREFIX) else {
            continue;
        };
        if retired.contains(base) {
            // Retired again in this plan: RetireMap replaces the older
            // copy and its unpin is already planned.
            continue;
        }
        if let Some(want) = d.maps.get(base)
            && !CONFIG_MAPS.contains(&base)
            && migratable(base, have, want)
        {
            s.copy.push(Step::CopyMap { name: base.into() });
        }
        s.unpin.push(unpin_map(name));
    }
    for name in o.maps.keys() {
        if !name.starts_with(OLD_PREFIX) && !d.maps.contains_key(name) {
            s.unpin.push(unpin_map(name));
        }
    }

    // --- tail-call slots ---------------------------------------------------
    // Each action in its slot, and the ingress capture in its own; the
    // egress programs in EGRESS_PROGS.
    let ingress_slots = Action::ALL
        .iter()
        .map(|a| (a.name(), *a as u32))
        .chain(emptcp_common::PROGS_EXTRA);
    let fill = SlotFill {
        d,
        o,
        need_load,
        retired: &retired,
    };
    fill.steps(
        "PROGS",
        ingress_slots,
        &o.prog_slots,
        |program, slot, before| Step::SetSlot {
            action: program.into(),
            slot,
            before,
        },
        |slot, before| Step::ClearSlot { slot, before },
        &mut s,
    );
    fill.steps(
        "EGRESS_PROGS",
        EGRESS_SLOTS.into_iter(),
        &o.egress_prog_slots,
        |program, slot, before| Step::SetEgressSlot {
            program: program.into(),
            slot,
            before,
        },
        |slot, before| Step::ClearEgressSlot { slot, before },
        &mut s,
    );

    // --- entries -------------------------------------------------------------
    let ids = match allocate_ids(d, o) {
        Ok(ids) => ids,
        Err(e) => {
            errors.push(e);
            BTreeMap::new()
        }
    };
    let want = desired_entries(d, o, &ids, &mut notes);
    let have = effective_entries(o, &retired);
    diff_entries(&want, &have, &ids, &mut s);

    link_types(d, o, &mut errors, &mut notes);

    // --- links ------------------------------------------------------------------
    let entry_prog = o.programs.get(ENTRY_PROGRAM).map(|p| p.id);
    let xdp_ifaces = || d.interfaces.iter().filter(|(_, i)| i.wants_xdp());
    for (name, iface) in xdp_ifaces() {
        let Some(dev) = o.netdevs.get(name) else {
            continue; // noted in desired_entries
        };
        let mut link_ok = false;
        if let Some(link) = o.links.get(name) {
            let attached_here = link.ifindex == dev.ifindex
                && dev.xdp.as_ref().is_some_and(|x| x.prog_id == link.prog_id);
            let mode_ok = dev
                .xdp
                .as_ref()
                .is_some_and(|x| mode_matches(effective_mode(iface.mode, dev), x.mode));
            if attached_here && mode_ok {
                link_ok = true;
                if need_load || Some(link.prog_id) != entry_prog {
                    s.links.push(Step::UpdateLink {
                        iface: name.clone(),
                        link_id: link.id,
                        before_prog: link.prog_id,
                    });
                }
            } else {
                if attached_here {
                    notes.push(format!(
                        "{name}: XDP mode changes to {:?}: the program is re-attached (not hitless)",
                        effective_mode(iface.mode, dev)
                    ));
                }
                s.relink.push(Step::Detach {
                    iface: name.clone(),
                    link_id: link.id,
                });
            }
        }
        if link_ok {
            continue;
        }
        let ours = o.links.get(name).map(|l| l.prog_id);
        if let Some(x) = &dev.xdp
            && Some(x.prog_id) != ours
        {
            if opts.force {
                s.relink.push(Step::DetachForeign {
                    iface: name.clone(),
                    prog_id: x.prog_id,
                    prog_name: x.prog_name.clone(),
                    mode: x.mode,
                });
            } else {
                errors.push(PlanError::Foreign {
                    iface: name.clone(),
                    prog_id: x.prog_id,
                    prog_name: x.prog_name.clone(),
                    mode: x.mode,
                });
            }
        }
        s.links.push(Step::Attach {
            iface: name.clone(),
            ifindex: dev.ifindex,
            mode: effective_mode(iface.mode, dev),
        });
    }
    for (name, link) in &o.links {
        if !xdp_ifaces().any(|(n, _)| n == name) || !o.netdevs.contains_key(name) {
            s.detach.push(Step::Detach {
                iface: name.clone(),
                link_id: link.id,
            });
        }
    }
    tc_links(d, o, need_load, &mut s);
    for name in o.programs.keys() {
        if !d.programs.contains(name) {
            s.unpin.push(Step::Unpin {
                path: format!("progs/{name}"),
                what: "program of an older object".into(),
            });
        }
    }
    if need_load || !meta_ok {
        s.meta.push(Step::WriteMeta {
            object_sha256: d.object_sha256.clone(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let interfaces: Vec<String> = d.interfaces.keys().cloned().collect();
    Ok(Plan {
        object_sha256: d.object_sha256.clone(),
        observed_hash: observed_hash(o, &interfaces),
        interfaces,
        steps: s.into_ordered(),
        notes,
        before: View::observed(o),
        after: View::desired(d),
    })
}

/// Whether every program of the desired object is pinned and the pinned
/// program is the desired object's (its stamp, read from the program, not
/// the pin's name or META). Pins that disagree with META are what an
/// interrupted load leaves (it pinned programs of the object it was
/// loading) or what a hand-made replacement looks like: they are noted, one
/// line per object they hold, and the object is loaded again.
fn pins_hold_the_object(d: &Desired, o: &Observed, notes: &mut Vec<String>) -> bool {
    use crate::identity::object_id;
    let want = object_id(&d.object_sha256);
    let recorded = o.meta.as_ref().map(|m| object_id(&m.object_sha256));
    let mut ok = true;
    let mut disagree: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for name in &d.programs {
        let Some(pin) = o.programs.get(name) else {
            ok = false;
            continue;
        };
        let have = o.object_of(pin.id);
        // The right object but another of its programs: a swap by hand.
        ok &= have == Some(want.as_str()) && pin.is_named(name);
        if !pin.is_named(name) {
            notes.push(format!(
                "progs/{name} holds program {} named {:?}: the object is loaded again",
                pin.id, pin.kernel_name
            ));
        }
        if have != recorded.as_deref() {
            let what = have.map_or("no emptcp object".into(), |h| format!("object {h}"));
            disagree.entry(what).or_default().push(name);
        }
    }
    for (what, names) in disagree {
        notes.push(format!(
            "pinned programs hold {what}, not the object META records ({}): {} (an interrupted load, or replaced by hand); the object is loaded again",
            recorded.as_deref().unwrap_or("none"),
            names.join(", ")
        ));
    }
    ok
}

/// TCX egress links: one per interface with egress chains. TCX links
/// coexist with other programs on the hook (multi-program), so there is no
/// foreign-program check: ours is recognised by its pin.
/// What the tail-call slot steps of one program array depend on.
struct SlotFill<'a> {
    d: &'a Desired,
    o: &'a Observed,
    need_load: bool,
    retired: &'a BTreeSet<&'a str>,
}

impl SlotFill<'_> {
    /// Steps that put each wanted `(program, slot)` of the program array
    /// `map` (observed contents `have`) in place and clear the slots no
    /// program wants.
    fn steps<'p>(
        &self,
        map: &str,
        wanted: impl Iterator<Item = (&'p str, u32)>,
        have: &BTreeMap<u32, u32>,
        set: impl Fn(&str, u32, Option<u32>) -> Step,
        clear: impl Fn(u32, u32) -> Step,
        s: &mut Steps,
    ) {
        // A retired array is replaced by an empty one.
        let retired = self.retired.contains(map);
        let mut wanted_slots = BTreeSet::new();
        for (program, slot) in wanted {
            if !self.d.programs.iter().any(|p| p == program) {
                continue;
            }
            wanted_slots.insert(slot);
            let before = if retired {
                None
            } else {
                have.get(&slot).copied()
            };
            let pinned = self.o.programs.get(program).map(|p| p.id);
            if self.need_load || before.is_none() || before != pinned {
                s.slots.push(set(program, slot, before));
            }
        }
        if !retired {
            for (slot, id) in have {
                if !wanted_slots.contains(slot) {
                    s.clear_slots.push(clear(*slot, *id));
                }
            }
        }
    }
}

fn tc_links(d: &Desired, o: &Observed, need_load: bool, s: &mut Steps) {
    for hook in TcHook::ALL {
        tc_links_of(d, o, need_load, hook, s);
    }
}

/// The TCX links of `hook`: attached where wanted, updated to the loaded
/// program, replaced on a re-created interface, detached where unwanted.
fn tc_links_of(d: &Desired, o: &Observed, need_load: bool, hook: TcHook, s: &mut Steps) {
    let prog = o.programs.get(hook.program()).map(|p| p.id);
    let links = o.tc_links_of(hook);
    let wanted = |name: &str| {
        d.interfaces.get(name).is_some_and(|i| i.wants_tc(hook)) && o.netdevs.contains_key(name)
    };
    for (name, iface) in &d.interfaces {
        if !iface.wants_tc(hook) {
            continue;
        }
        let Some(dev) = o.netdevs.get(name) else {
            continue; // noted in desired_entries
        };
        match links.get(name) {
            Some(link) if link.ifindex == dev.ifindex => {
                if need_load || Some(link.prog_id) != prog {
                    s.links.push(Step::UpdateTcLink {
                        iface: name.clone(),
                        link_id: link.id,
                        before_prog: link.prog_id,
                        hook,
                    });
                }
                continue;
            }
            // A link left on an interface that was re-created (another
            // ifindex, or 0 once its interface is gone): replace it.
            Some(link) => s.relink.push(Step::DetachTc {
                iface: name.clone(),
                link_id: link.id,
                hook,
            }),
            None => {}
        }
        s.links.push(Step::AttachTc {
            iface: name.clone(),
            ifindex: dev.ifindex,
            hook,
        });
    }
    for (name, link) in links {
        if !wanted(name) {
            s.detach.push(Step::DetachTc {
                iface: name.clone(),
                link_id: link.id,
                hook,
            });
        }
    }
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
        steps.push(unpin_map(name));
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

fn unpin_map(name: &str) -> Step {
    Step::Unpin {
        path: format!("maps/{name}"),
        what: if name.starts_with(OLD_PREFIX) {
            "map replaced by a new definition".into()
        } else {
            "map no longer in the object".into()
        },
    }
}

/// Every policy interface's link type: raw-IP links are noted (the plan
/// shows how each is parsed), a link the datapath cannot parse is an error
/// naming it (never a silent no-op).
fn link_types(d: &Desired, o: &Observed, errors: &mut Vec<PlanError>, notes: &mut Vec<String>) {
    for (name, iface) in &d.interfaces {
        let Some(dev) = o.netdevs.get(name) else {
            continue; // noted in desired_entries
        };
        match dev.framing() {
            Ok(Framing::Ethernet) => {}
            Ok(Framing::RawIp) if iface.wants_xdp() && iface.mode == XdpMode::Native => errors
                .push(PlanError::NativeOnRawIp {
                    iface: name.clone(),
                    link_type: dev.link_type.clone().unwrap_or_default(),
                }),
            Ok(Framing::RawIp) => notes.push(format!(
                "{name}: raw-IP link (link type {}): IP parsed from byte 0{}",
                dev.link_type.as_deref().unwrap_or("?"),
                if iface.wants_xdp() && iface.mode == XdpMode::Auto {
                    ", XDP in skb mode"
                } else {
                    ""
                }
            )),
            Err(t) => errors.push(PlanError::LinkType {
                iface: name.clone(),
                link_type: t.to_string(),
            }),
        }
    }
}

/// The XDP mode to attach with. `auto` on a raw-IP link is generic
/// (skb): tun runs a native program only in TAP mode (an IFF_TUN packet
/// would never meet it), and the other raw-IP drivers (WireGuard, wwan,
/// tunnels) have no native XDP at all.
fn effective_mode(want: XdpMode, dev: &NetDev) -> XdpMode {
    if want == XdpMode::Auto && dev.framing() == Ok(Framing::RawIp) {
        XdpMode::Skb
    } else {
        want
    }
}

/// Does this link hand generic XDP skbs with CHECKSUM_COMPLETE (which an
/// IPv4 insert would break, `IFACE_SKB`)? Decapsulating IP tunnels keep
/// the outer packet's. Not a `none` link: tun's virtio header only says
/// partial or verified, WireGuard marks what it decrypted verified, wwan
/// raw-ip leaves it unchecked. Ethernet is not flagged yet: a veth (never
/// COMPLETE, where skb-mode recovery must keep working) and a NIC (may be
/// COMPLETE) share the link type; telling them apart needs the device
/// kind (docs/datapath.md).
fn may_csum_complete(dev: &NetDev) -> bool {
    matches!(
        dev.link_type.as_deref(),
        Some("ipip" | "tunnel6" | "sit" | "gre" | "gre6")
    )
}

fn mode_matches(want: XdpMode, have: AttachMode) -> bool {
    match want {
        XdpMode::Auto => true,
        XdpMode::Native => have == AttachMode::Native,
        XdpMode::Skb => have == AttachMode::Skb,
    }
}

/// Keeps the id of every chain that exists by name; new chains take the
/// lowest free ids in policy order.
fn allocate_ids(d: &Desired, o: &Observed) -> Result<BTreeMap<String, u32>, PlanError> {
    let mut ids = BTreeMap::new();
    let mut used = BTreeSet::new();
    for (id, c) in &o.entries.chains {
        if d.chains.contains_key(&c.name) && !ids.contains_key(&c.name) {
            ids.insert(c.name.clone(), *id);
        }
        used.insert(*id);
    }
    let mut next = 0u32;
    for name in &d.chain_order {
        if ids.contains_key(name) {
            continue;
        }
        // Ids of chains being deleted are not reused in the same plan, so
        // a packet never sees a new chain with an old chain's entries.
        while used.contains(&next) {
            next += 1;
        }
        if next >= MAX_CHAINS {
            return Err(PlanError::TooManyChains { max: MAX_CHAINS });
        }
        ids.insert(name.clone(), next);
        used.insert(next);
    }
    Ok(ids)
}

fn desired_entries(
    d: &Desired,
    o: &Observed,
    ids: &BTreeMap<String, u32>,
    notes: &mut Vec<String>,
) -> Entries {
    let mut e = Entries::default();
    for (name, c) in &d.chains {
        let Some(&id) = ids.get(name) else { continue };
        e.chains.insert(
            id,
            crate::state::ChainEntry {
                name: name.clone(),
                steps: c.steps.clone(),
            },
        );
        if let Some(t) = c.thresholds {
            e.thresholds.insert(id, t);
        }
        e.selectors.insert(id, c.selector_flags);
        for (dir, net) in &c.prefixes {
            e.prefixes.insert(crate::state::PrefixEntry {
                chain: id,
                dir: *dir,
                prefix: *net,
            });
        }
        for (dir, port) in &c.ports {
            e.ports.insert(PortEntry {
                chain: id,
                dir: *dir,
                port: *port,
            });
        }
    }
    for (name, iface) in &d.interfaces {
        let Some(dev) = o.netdevs.get(name) else {
            notes.push(format!(
                "interface {name} does not exist (yet): nothing to attach; it is attached by the first apply after it appears"
            ));
            continue;
        };
        // Selectors and ports of every chain are in `e` already.
        let entry = |names: &[String], e: &Entries| {
            let chains: Vec<u32> = names.iter().filter_map(|c| ids.get(c).copied()).collect();
            IfaceEntry {
                name: name.clone(),
                filter: iface_filter(&chains, e),
                chains,
                capture: false,
                raw_ip: dev.framing() == Ok(Framing::RawIp),
                skb: effective_mode(iface.mode, dev) == XdpMode::Skb && may_csum_complete(dev),
                track: false,
            }
        };
        if iface.wants_xdp() {
            let mut v = entry(&iface.chains, &e);
            if iface.capture {
                v.capture = true;
                // The capture looks every TCP packet up before selecting
                // (ingress_capture has no prefilter), and the entry tests
                // the flag only after its prefilter: that one must pass.
                v.filter.require = 0;
            }
            e.ifaces.insert(dev.ifindex, v);
        }
        if iface.wants_tc(TcHook::Egress) {
            let mut v = entry(&iface.egress_chains, &e);
            v.track = iface.track;
            e.egress_ifaces.insert(dev.ifindex, v);
        }
    }
    e
}

/// The entry program's summary of an interface's chains (`chains`, with
/// their selectors and ports already in `e`): each chain's selector parts,
/// the parts every chain has, and the port filters.
pub fn iface_filter(chains: &[u32], e: &Entries) -> IfaceFilter {
    use emptcp_common::{INLINE_PORTS, SEL_LOCAL_PORTS_INLINE, SEL_REMOTE_PORTS_INLINE};
    let mut chain_flags = Vec::new();
    let mut inline_ports = Vec::new();
    let mut inline_v4 = Vec::new();
    for id in chains {
        let mut flags = e.selectors.get(id).copied().unwrap_or(0);
        let mut inline = vec![0u16; 2 * INLINE_PORTS];
        for (half, dir, bit) in [
            (0, crate::state::Dir::Remote, SEL_REMOTE_PORTS_INLINE),
            (1, crate::state::Dir::Local, SEL_LOCAL_PORTS_INLINE),
        ] {
            let ports: Vec<u16> = e
                .ports
                .iter()
                .filter(|p| p.chain == *id && p.dir == dir)
                .map(|p| p.port)
                .collect();
            if (1..=INLINE_PORTS).contains(&ports.len()) {
                flags |= bit;
                let out = &mut inline[half * INLINE_PORTS..(half + 1) * INLINE_PORTS];
                for (k, slot) in out.iter_mut().enumerate() {
                    *slot = ports[k.min(ports.len() - 1)];
                }
            }
        }
        let (v4, v4_flags) = inline_v4_prefixes(*id, e);
        flags |= v4_flags;
        chain_flags.push(flags);
        inline_ports.push(inline);
        inline_v4.push(v4);
    }
    if inline_v4.iter().all(|v| *v == [0; 4]) {
        inline_v4.clear();
    }
    let require = if chain_flags.is_empty() {
        0
    } else {
        chain_flags.iter().fold(u32::MAX, |a, f| a & f)
    };
    let mut f = IfaceFilter {
        chain_flags,
        inline_ports,
        inline_v4,
        require,
        ..IfaceFilter::default()
    };
    for p in e.ports.iter().filter(|p| chains.contains(&p.chain)) {
        let b = emptcp_common::port_bucket(p.port) as usize;
        let words = match p.dir {
            crate::state::Dir::Remote => &mut f.remote_ports,
            crate::state::Dir::Local => &mut f.local_ports,
        };
        words[b / 64] |= 1 << (b % 64);
    }
    f
}

/// Chain `id`'s inline IPv4 prefixes (`IfaceChains::v4`) and their
/// `SEL_*_V4_INLINE` bits: a direction with exactly one IPv4 prefix is
/// compared inline by the entry program (its `SEL_V4` entry stays, for
/// nothing else changes in the trie).
pub fn inline_v4_prefixes(id: u32, e: &Entries) -> ([u32; 4], u32) {
    use emptcp_common::{SEL_LOCAL_V4_INLINE, SEL_REMOTE_V4_INLINE};
    let mut v4 = [0u32; 4];
    let mut flags = 0;
    for (half, dir, bit) in [
        (0, crate::state::Dir::Remote, SEL_REMOTE_V4_INLINE),
        (1, crate::state::Dir::Local, SEL_LOCAL_V4_INLINE),
    ] {
        let nets: Vec<ipnet::Ipv4Net> = e
            .prefixes
            .iter()
            .filter(|p| p.chain == id && p.dir == dir)
            .filter_map(|p| match p.prefix {
                ipnet::IpNet::V4(n) => Some(n),
                ipnet::IpNet::V6(_) => None,
            })
            .collect();
        if let [net] = nets[..] {
            flags |= bit;
            v4[2 * half] = u32::from_ne_bytes(net.network().octets());
            v4[2 * half + 1] = u32::from_ne_bytes(net.netmask().octets());
        }
    }
    (v4, flags)
}

/// Observed entries, minus those of maps being replaced (they start empty).
fn effective_entries(o: &Observed, retired: &BTreeSet<&str>) -> Entries {
    let mut e = o.entries.clone();
    let gone = |m: &str| retired.contains(m) || !o.maps.contains_key(m);
    if gone("CHAINS") {
        e.chains.clear();
    }
    if gone("THRESHOLDS") {
        e.thresholds.clear();
    }
    if gone("SELECTORS") {
        e.selectors.clear();
    }
    if gone("SEL_V4") {
        e.prefixes.retain(|p| !p.prefix.addr().is_ipv4());
    }
    if gone("SEL_V6") {
        e.prefixes.retain(|p| !p.prefix.addr().is_ipv6());
    }
    if gone("PORTS") {
        e.ports.clear();
    }
    if gone("IFACES") {
        e.ifaces.clear();
    }
    if gone("EGRESS_IFACES") {
        e.egress_ifaces.clear();
    }
    e
}

fn chain_name(ids: &BTreeMap<String, u32>, have: &Entries, id: u32) -> String {
    ids.iter()
        .find(|(_, v)| **v == id)
        .map(|(k, _)| k.clone())
        .or_else(|| have.chains.get(&id).map(|c| c.name.clone()))
        .unwrap_or_else(|| format!("#{id}"))
}

fn diff_entries(want: &Entries, have: &Entries, ids: &BTreeMap<String, u32>, s: &mut Steps) {
    let name = |id: u32| chain_name(ids, have, id);
    for (id, t) in &want.thresholds {
        let before = have.thresholds.get(id).copied();
        if before != Some(*t) {
            s.puts.push(Step::PutThresholds {
                id: *id,
                chain: name(*id),
                before,
                after: *t,
            });
        }
    }
    for (id, c) in &want.chains {
        let before = have.chains.get(id).cloned();
        if before.as_ref() != Some(c) {
            s.puts.push(Step::PutChain {
                id: *id,
                before,
                after: c.clone(),
            });
        }
    }
    for p in want.prefixes.difference(&have.prefixes) {
        s.puts.push(Step::PutPrefix {
            chain: name(p.chain),
            entry: p.clone(),
        });
    }
    for (chain, entries) in group_ports(want.ports.difference(&have.ports)) {
        s.puts.push(Step::PutPorts {
            chain: name(chain),
            entries,
        });
    }
    for (id, f) in &want.selectors {
        let before = have.selectors.get(id).copied();
        if before != Some(*f) {
            s.selectors.push(Step::PutSelector {
                id: *id,
                chain: name(*id),
                before,
                after: *f,
            });
        }
    }
    for (ifindex, i) in &want.ifaces {
        let before = have.ifaces.get(ifindex).cloned();
        if before.as_ref() != Some(i) {
            s.ifaces.push(Step::PutIface {
                ifindex: *ifindex,
                before,
                after: i.clone(),
            });
        }
    }
    for (ifindex, i) in &want.egress_ifaces {
        let before = have.egress_ifaces.get(ifindex).cloned();
        if before.as_ref() != Some(i) {
            s.ifaces.push(Step::PutEgressIface {
                ifindex: *ifindex,
                before,
                after: i.clone(),
            });
        }
    }
    // Deletes, most-referencing first.
    for (ifindex, i) in &have.ifaces {
        if !want.ifaces.contains_key(ifindex) {
            s.deletes.push(Step::DeleteIface {
                ifindex: *ifindex,
                before: i.clone(),
            });
        }
    }
    for (ifindex, i) in &have.egress_ifaces {
        if !want.egress_ifaces.contains_key(ifindex) {
            s.deletes.push(Step::DeleteEgressIface {
                ifindex: *ifindex,
                before: i.clone(),
            });
        }
    }
    for (id, f) in &have.selectors {
        if !want.selectors.contains_key(id) {
            s.deletes.push(Step::DeleteSelector {
                id: *id,
                chain: name(*id),
                before: *f,
            });
        }
    }
    for (chain, entries) in group_ports(have.ports.difference(&want.ports)) {
        s.deletes.push(Step::DeletePorts {
            chain: name(chain),
            entries,
        });
    }
    for p in have.prefixes.difference(&want.prefixes) {
        s.deletes.push(Step::DeletePrefix {
            chain: name(p.chain),
            entry: p.clone(),
        });
    }
    for (id, t) in &have.thresholds {
        if !want.thresholds.contains_key(id) {
            s.deletes.push(Step::DeleteThresholds {
                id: *id,
                chain: name(*id),
                before: *t,
            });
        }
    }
    for (id, c) in &have.chains {
        if !want.chains.contains_key(id) {
            s.deletes.push(Step::DeleteChain {
                id: *id,
                before: c.clone(),
            });
        }
    }
}

fn group_ports<'a>(it: impl Iterator<Item = &'a PortEntry>) -> BTreeMap<u32, Vec<PortEntry>> {
    let mut m: BTreeMap<u32, Vec<PortEntry>> = BTreeMap::new();
    for p in it {
        m.entry(p.chain).or_default().push(*p);
    }
    m
}

/// Steps by phase; `into_ordered` fixes the hitless order.
#[derive(Default)]
struct Steps {
    retire: Vec<Step>,
    load: Vec<Step>,
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
