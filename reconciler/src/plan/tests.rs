//! Scenario tests of the planner (desired state -> expected steps), with
//! golden renderings. `simulate` plays a plan onto an in-memory `Observed`
//! the way apply does to the kernel, so "after apply, the plan is empty" is
//! checked for every scenario here and proven on the real kernel by
//! tests/lifecycle.rs and tests/crash.rs.
use std::collections::BTreeMap;

use emptcp_common::LAYOUT_VERSION;

use super::*;
use crate::{
    desired::{UNUSED_TABLE_CAPACITY, XdpMode},
    layout::OLD_PREFIX,
    netdev::{NetDev, XdpAttachment},
    observe::{ObservedLink, ObservedMeta, ObservedProg},
    policy,
};

const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn def(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
    MapDef {
        map_type,
        key_size,
        value_size,
        max_entries,
        flags: 0,
        layout: None,
    }
}

/// A map definition with a layout fingerprint.
fn with_layout(d: MapDef, fingerprint: u64) -> MapDef {
    MapDef {
        layout: Some(fingerprint),
        ..d
    }
}

const CHAINS_LAYOUT: u64 = 0xc4a1;
const FLOWS_LAYOUT: u64 = 0xf105;

fn object_maps() -> BTreeMap<String, MapDef> {
    [
        ("PROGS", def(3, 4, 4, 16)),
        ("CHAINS", with_layout(def(2, 4, 120, 256), CHAINS_LAYOUT)),
        ("THRESHOLDS", def(1, 4, 16, 256)),
        ("SELECTORS", def(1, 4, 8, 256)),
        ("SEL_V4", def(11, 16, 1, 16384)),
        ("SEL_V6", def(11, 28, 1, 16384)),
        ("PORTS", def(1, 8, 1, 65536)),
        ("IFACES", def(1, 4, 52, 256)),
        ("META", def(2, 4, 40, 1)),
        ("STATS", def(6, 4, 8, 64)),
        ("CHAIN_STATS", def(6, 4, 16, 256)),
        (
            "FLOWS",
            with_layout(def(9, 40, 64, 1_000_000), FLOWS_LAYOUT),
        ),
    ]
    .into_iter()
    .map(|(n, d)| (n.to_string(), d))
    .collect()
}

fn programs() -> Vec<String> {
    [
        "count",
        "drop",
        "entry",
        "record_flow",
        "recover_add_addr",
        "strip_add_addr",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn desired_with(text: &str, sha: &str) -> Desired {
    let p = policy::load_str("policy.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    Desired::build(&p, sha, &programs(), &object_maps()).unwrap()
}

fn desired(text: &str) -> Desired {
    desired_with(text, SHA_A)
}

/// A namespace with eth0 (ifindex 2) and eth1 (ifindex 3), nothing applied.
fn fresh() -> Observed {
    let mut o = Observed {
        snapshot_version: crate::observe::SNAPSHOT_VERSION,
        root: "/sys/fs/bpf/emptcp".into(),
        ..Default::default()
    };
    for (n, i) in [("eth0", 2), ("eth1", 3)] {
        o.netdevs.insert(
            n.into(),
            NetDev {
                ifindex: i,
                xdp: None,
                link_type: None,
                ..Default::default()
            },
        );
    }
    o
}

/// Plays `plan` onto `o` as apply would (ids are handed out in order).
fn simulate(plan: &Plan, d: &Desired, o: &mut Observed) {
    let mut next_id = 100 + o.programs.len() as u32 * 10 + o.links.len() as u32;
    let mut id = || {
        next_id += 1;
        next_id
    };
    for s in &plan.steps {
        if !play_entry(s, &mut o.entries) && !play_link(s, o, &mut id) {
            play_object(s, d, o, &mut id);
        }
    }
}

/// A step on the configuration maps' entries; false for another step.
fn play_entry(s: &Step, e: &mut Entries) -> bool {
    match s {
        Step::PutEgressIface { ifindex, after, .. } => {
            e.egress_ifaces.insert(*ifindex, after.clone());
        }
        Step::DeleteEgressIface { ifindex, .. } => {
            e.egress_ifaces.remove(ifindex);
        }
        Step::PutThresholds { id, after, .. } => {
            e.thresholds.insert(*id, *after);
        }
        Step::PutChain { id, after, .. } => {
            e.chains.insert(*id, after.clone());
        }
        Step::PutPrefix { entry, .. } => {
            e.prefixes.insert(entry.clone());
        }
        Step::PutPorts { entries, .. } => e.ports.extend(entries.iter().copied()),
        Step::PutSelector { id, after, .. } => {
            e.selectors.insert(*id, *after);
        }
        Step::PutIface { ifindex, after, .. } => {
            e.ifaces.insert(*ifindex, after.clone());
        }
        Step::DeleteIface { ifindex, .. } => {
            e.ifaces.remove(ifindex);
        }
        Step::DeletePorts { entries, .. } => {
            for p in entries {
                e.ports.remove(p);
            }
        }
        Step::DeletePrefix { entry, .. } => {
            e.prefixes.remove(entry);
        }
        Step::DeleteSelector { id, .. } => {
            e.selectors.remove(id);
        }
        Step::DeleteThresholds { id, .. } => {
            e.thresholds.remove(id);
        }
        Step::DeleteChain { id, .. } => {
            e.chains.remove(id);
        }
        _ => return false,
    }
    true
}

/// A step on the XDP and TCX links; false for another step.
fn play_link(s: &Step, o: &mut Observed, id: &mut dyn FnMut() -> u32) -> bool {
    match s {
        Step::AttachTc {
            iface,
            ifindex,
            hook,
        } => {
            let link = ObservedLink {
                id: id(),
                prog_id: o.programs[hook.program()].id,
                ifindex: *ifindex,
            };
            o.tc_links_of_mut(*hook).insert(iface.clone(), link);
        }
        Step::UpdateTcLink { iface, hook, .. } => {
            let prog_id = o.programs[hook.program()].id;
            o.tc_links_of_mut(*hook).get_mut(iface).unwrap().prog_id = prog_id;
        }
        Step::DetachTc { iface, hook, .. } => {
            o.tc_links_of_mut(*hook).remove(iface);
        }
        Step::DetachForeign { iface, .. } => {
            o.netdevs.get_mut(iface).unwrap().xdp = None;
        }
        Step::Attach {
            iface,
            ifindex,
            mode,
        } => {
            let prog_id = o.programs["entry"].id;
            let link = ObservedLink {
                id: id(),
                prog_id,
                ifindex: *ifindex,
            };
            o.links.insert(iface.clone(), link);
            o.netdevs.get_mut(iface).unwrap().xdp = Some(XdpAttachment {
                prog_id,
                prog_name: "entry".into(),
                mode: if *mode == XdpMode::Skb {
                    AttachMode::Skb
                } else {
                    AttachMode::Native
                },
            });
        }
        Step::UpdateLink { iface, .. } => {
            let prog_id = o.programs["entry"].id;
            o.links.get_mut(iface).unwrap().prog_id = prog_id;
            o.netdevs
                .get_mut(iface)
                .unwrap()
                .xdp
                .as_mut()
                .unwrap()
                .prog_id = prog_id;
        }
        Step::Detach { iface, .. } => {
            o.links.remove(iface);
            if let Some(n) = o.netdevs.get_mut(iface) {
                n.xdp = None;
            }
        }
        _ => return false,
    }
    true
}

/// A step on the maps, programs, slots, pins and META.
fn play_object(s: &Step, d: &Desired, o: &mut Observed, id: &mut dyn FnMut() -> u32) {
    match s {
        Step::RetireMap { name, .. } => {
            if let Some(m) = o.maps.remove(name) {
                o.maps.insert(format!("{OLD_PREFIX}{name}"), m);
            }
        }
        Step::LoadObject { programs, .. } => {
            // A new map has no layout record until RecordLayouts.
            for (n, m) in &d.maps {
                o.maps
                    .entry(n.clone())
                    .or_insert(MapDef { layout: None, ..*m });
            }
            for p in programs {
                let prog = ObservedProg {
                    id: id(),
                    tag: "t".into(),
                    kernel_name: p.chars().take(15).collect(),
                    unpinned_maps: Vec::new(),
                };
                // The load stamps every program with the object.
                o.objects
                    .insert(prog.id, crate::identity::object_id(&d.object_sha256));
                o.programs.insert(p.clone(), prog);
            }
        }
        Step::RecordLayouts { records } => {
            for (map, fingerprint) in records {
                // The record's name moves to the new map: an old-NAME it
                // was bound to loses it.
                unbind_record(o, map, *fingerprint);
                o.maps.get_mut(map).unwrap().layout = Some(*fingerprint);
                let name = crate::layout::layout_record_name(map, *fingerprint);
                if !o.layout_records.contains(&name) {
                    o.layout_records.push(name);
                    o.layout_records.sort();
                }
            }
        }
        Step::CopyMap { .. } => {}
        Step::SetSlot { action, slot, .. } => {
            o.prog_slots.insert(*slot, o.programs[action].id);
        }
        Step::ClearSlot { slot, .. } => {
            o.prog_slots.remove(slot);
        }
        Step::SetEgressSlot { program, slot, .. } => {
            o.egress_prog_slots.insert(*slot, o.programs[program].id);
        }
        Step::ClearEgressSlot { slot, .. } => {
            o.egress_prog_slots.remove(slot);
        }
        Step::SetTcSlot { program, slot, .. } => {
            o.tc_prog_slots.insert(*slot, o.programs[program].id);
        }
        Step::ClearTcSlot { slot, .. } => {
            o.tc_prog_slots.remove(slot);
        }
        Step::Unpin { path, .. } => {
            if let Some(m) = path.strip_prefix("maps/") {
                o.maps.remove(m);
            } else if let Some(p) = path.strip_prefix("progs/") {
                o.programs.remove(p);
            } else if let Some(r) = path.strip_prefix("layouts/") {
                o.layout_records.retain(|x| x != r);
                let (map, fingerprint) = crate::layout::parse_layout_record(r).unwrap();
                unbind_record(o, map, fingerprint);
            }
        }
        Step::RemoveRoot { .. } => {}
        Step::WriteMeta { object_sha256 } => {
            o.meta = Some(ObservedMeta {
                layout_version: LAYOUT_VERSION,
                object_sha256: object_sha256.clone(),
                netns: o.netns,
                netns_exists: true,
            });
        }
        _ => unreachable!("{s:?} is an entry or link step"),
    }
}

/// The map (`map` or `old-map`) the record `map@fingerprint` is bound to
/// loses it.
fn unbind_record(o: &mut Observed, map: &str, fingerprint: u64) {
    for name in [map.to_string(), format!("{OLD_PREFIX}{map}")] {
        if let Some(m) = o.maps.get_mut(&name)
            && m.layout == Some(fingerprint)
        {
            m.layout = None;
        }
    }
}

/// Plans, applies in memory, and asserts the next plan is empty.
fn converge(d: &Desired, o: &mut Observed, opts: PlanOptions) -> Plan {
    let p = plan(d, o, opts).unwrap_or_else(|e| panic!("{e:?}"));
    simulate(&p, d, o);
    let again = plan(d, o, opts).unwrap();
    assert!(
        again.is_empty(),
        "plan after apply is not empty: {:#?}",
        again.steps
    );
    p
}

fn kinds(p: &Plan) -> Vec<String> {
    p.steps
        .iter()
        .map(|s| {
            serde_json::to_value(s).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn text(p: &Plan) -> String {
    plain(&render_text(p))
}

/// The text without ANSI styles, so the golden files are plain text.
fn plain(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

const BASE: &str = r#"
version: 1
interfaces:
  - name: eth0
    xdp_mode: native
    chains: [short, bulk]
chains:
  - name: short
    match:
      remote: [203.0.113.0/24, "2001:db8::/32"]
      local_ports: [443]
    thresholds: {remove_below: 1MiB, recover_at: 4MiB}
    actions: [record_flow, strip_add_addr, recover_add_addr, count]
  - name: bulk
    match: {remote_ports: [5201]}
    actions: [count]
"#;

#[test]
fn fresh_install_then_empty() {
    let d = desired(BASE);
    let mut o = fresh();
    let p = converge(&d, &mut o, PlanOptions::default());
    insta::assert_snapshot!("fresh_install", text(&p));
    assert_eq!(p.steps.first().map(|s| s.change()), Some(Change::Add));
    assert!(matches!(p.steps.last(), Some(Step::WriteMeta { .. })));
}

/// One root serves one network namespace: a root whose META names
/// another namespace that still exists is refused before any step; one
/// whose namespace is gone is taken over (noted, its links replaced, META
/// rewritten); one that names none (an older root) is claimed by the META
/// write.
#[test]
fn a_root_serves_one_network_namespace() {
    let d = egress_desired_with(EGRESS, SHA_A);
    let mut o = fresh();
    o.netns = 4026531840;
    converge(&d, &mut o, PlanOptions::default());
    assert_eq!(o.meta.as_ref().unwrap().netns, 4026531840);

    let mut other = o.clone();
    other.netns = 4026532999;
    let e = plan(&d, &other, PlanOptions::default()).unwrap_err();
    assert_eq!(
        e,
        vec![PlanError::OtherNamespace {
            owner: 4026531840,
            current: 4026532999
        }]
    );
    assert!(e[0].to_string().contains("--bpffs-root"), "{}", e[0]);

    other.meta.as_mut().unwrap().netns_exists = false;
    let p = converge(&d, &mut other, PlanOptions::default());
    assert!(
        p.notes.iter().any(|n| n.contains("no longer exists")),
        "{:?}",
        p.notes
    );
    // Its links are the gone namespace's, whatever ifindex they name (an
    // ifindex is unique only within a namespace): each is replaced.
    let replaced = |kind: &str| kinds(&p).iter().filter(|k| *k == kind).count();
    assert_eq!(replaced("detach"), 1, "{:?}", p.steps);
    assert_eq!(replaced("attach"), 1, "{:?}", p.steps);
    assert_eq!(replaced("detach_tc"), 2, "{:?}", p.steps);
    assert_eq!(replaced("attach_tc"), 2, "{:?}", p.steps);
    assert_eq!(replaced("write_meta"), 1, "{:?}", p.steps);
    assert_eq!(p.steps.len(), 7, "{:?}", p.steps);
    assert_eq!(other.meta.as_ref().unwrap().netns, 4026532999);

    let mut older = o.clone();
    older.meta.as_mut().unwrap().netns = 0;
    let p = converge(&d, &mut older, PlanOptions::default());
    assert!(
        matches!(p.steps[..], [Step::WriteMeta { .. }]),
        "{:?}",
        p.steps
    );
}

#[test]
fn text_folds_slots_and_the_map_list_unless_verbose() {
    let p = plan(&desired(BASE), &fresh(), PlanOptions::default()).unwrap();
    let slots = p
        .steps
        .iter()
        .filter(|s| matches!(s, Step::SetSlot { .. }))
        .count();
    assert!(slots >= 2, "{:?}", p.steps);
    let folded = text(&p);
    assert_eq!(folded.matches("tail-call slot").count(), 1, "{folded}");
    // 1: the load, 2: the layout records, then the slots.
    let fold = format!("3-{}. + tail-call slots ", slots + 2);
    assert!(
        folded.lines().any(|l| l.trim_start().starts_with(&fold)),
        "{folded}"
    );
    assert!(
        folded.contains("(creates 12 maps; -v names them)"),
        "{folded}"
    );
    let full = plain(&render_text_with(&p, TextOptions { verbose: true }));
    assert_eq!(full.matches("tail-call slot ").count(), slots, "{full}");
    assert!(
        full.contains("(creates maps CHAINS, CHAIN_STATS,"),
        "{full}"
    );
    // Same steps, same notes, same diff: only the step list folds.
    let diff = |t: &str| t[t.find("Diff (observed -> desired)").unwrap()..].to_string();
    assert_eq!(diff(&folded), diff(&full));
    assert_eq!(
        folded.lines().next(),
        full.lines().next(),
        "the summary line"
    );
}

#[test]
fn a_fold_names_each_program_a_slot_run_replaces() {
    let steps: Vec<Step> = (1..=3)
        .map(|slot| Step::SetSlot {
            action: format!("a{slot}"),
            slot,
            before: Some(10 + slot),
        })
        .chain([Step::ClearSlot {
            slot: 7,
            before: 20,
        }])
        .collect();
    let p = Plan {
        object_sha256: String::new(),
        observed_hash: String::new(),
        interfaces: Vec::new(),
        steps,
        notes: Vec::new(),
        before: View::default(),
        after: View::default(),
    };
    let t = plain(&render_text_with(&p, TextOptions::default()));
    assert!(
        t.contains("1-3. ~ tail-call slots 1-3 (a1, a2, a3): programs 11, 12, 13 -> new\n"),
        "{t}"
    );
    // A run of one is described as itself.
    assert!(t.contains("  4. - tail-call slot 7 (program 20)"), "{t}");
}

#[test]
fn threshold_change_is_one_step() {
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    let d2 = desired(&BASE.replace("remove_below: 1MiB", "remove_below: 2MiB"));
    let p = converge(&d2, &mut o, PlanOptions::default());
    assert_eq!(kinds(&p), ["put_thresholds"]);
    insta::assert_snapshot!("threshold_change", text(&p));
    insta::assert_json_snapshot!("threshold_change_json", p.steps);
}

#[test]
fn chain_ids_are_stable_when_chains_are_added_and_removed() {
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    let id_of = |o: &Observed, n: &str| {
        *o.entries
            .chains
            .iter()
            .find(|(_, c)| c.name == n)
            .unwrap()
            .0
    };
    let (short, bulk) = (id_of(&o, "short"), id_of(&o, "bulk"));
    // A new chain first in policy order, and `short` removed (`fresh`
    // records flows as `short` did: the connection tables keep their size).
    let text = r#"
version: 1
interfaces:
  - name: eth0
    chains: [fresh, bulk]
chains:
  - name: fresh
    match: {local_ports: [80]}
    actions: [record_flow, drop]
  - name: bulk
    match: {remote_ports: [5201]}
    actions: [count]
"#;
    let p = converge(&desired(text), &mut o, PlanOptions::default());
    assert_eq!(id_of(&o, "bulk"), bulk, "existing chain changed id");
    let fresh_id = id_of(&o, "fresh");
    assert_ne!(fresh_id, short, "an id freed in the same plan was reused");
    insta::assert_snapshot!("chains_added_removed", self::text(&p));
}

#[test]
fn removed_interface_is_detached_only() {
    let two = BASE.replace(
        "chains:\n  - name: short",
        "  - name: eth1\n    xdp_mode: skb\n    chains: [bulk]\nchains:\n  - name: short",
    );
    let mut o = fresh();
    converge(&desired(&two), &mut o, PlanOptions::default());
    let p = converge(&desired(BASE), &mut o, PlanOptions::default());
    assert_eq!(kinds(&p), ["delete_iface", "detach"]);
}

#[test]
fn foreign_program_needs_force() {
    let mut o = fresh();
    o.netdevs.get_mut("eth0").unwrap().xdp = Some(XdpAttachment {
        prog_id: 7,
        prog_name: "xdp_lb".into(),
        mode: AttachMode::Native,
    });
    let d = desired(BASE);
    let errs = plan(&d, &o, PlanOptions::default()).unwrap_err();
    let msg = errs[0].to_string();
    assert!(
        msg.contains("eth0") && msg.contains("xdp_lb") && msg.contains("--force"),
        "{msg}"
    );
    let p = converge(
        &d,
        &mut o,
        PlanOptions {
            force: true,
            ..Default::default()
        },
    );
    let k = kinds(&p);
    let fi = k.iter().position(|k| k == "detach_foreign").unwrap();
    let ai = k.iter().position(|k| k == "attach").unwrap();
    assert!(fi < ai);
}

#[test]
fn object_upgrade_swaps_programs_behind_links() {
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    let link = o.links["eth0"].id;
    let p = converge(&desired_with(BASE, SHA_B), &mut o, PlanOptions::default());
    let k = kinds(&p);
    assert_eq!(k[0], "load_object");
    assert!(k.contains(&"update_link".to_string()));
    assert!(
        !k.iter()
            .any(|k| k.starts_with("put_") || k == "attach" || k == "detach"),
        "{k:?}"
    );
    assert_eq!(k.last().unwrap(), "write_meta");
    assert_eq!(o.links["eth0"].id, link, "link must be kept");
    insta::assert_snapshot!("upgrade", text(&p));
}

#[test]
fn capacity_change_migrates_state_map() {
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    let bigger = BASE.replace(
        "version: 1\n",
        "version: 1\nsettings: {flow_capacity: 2000000}\n",
    );
    let p = converge(&desired(&bigger), &mut o, PlanOptions::default());
    let k = kinds(&p);
    assert_eq!(
        &k[..4],
        ["retire_map", "load_object", "record_layouts", "copy_map"],
        "{k:?}"
    );
    assert!(
        p.steps
            .iter()
            .any(|s| matches!(s, Step::Unpin { path, .. } if path == "maps/old-FLOWS"))
    );
    assert_eq!(o.maps["FLOWS"].max_entries, 2_000_000);
}

/// The connection tables take `flow_capacity` only while an interface
/// runs a chain with `record_flow`: without one they keep the least
/// capacity (nothing fills them), and the first such chain migrates them.
#[test]
fn connection_tables_are_sized_only_while_a_chain_records_flows() {
    let count_only = r#"
version: 1
interfaces:
  - name: eth0
    chains: [bulk]
chains:
  - name: bulk
    match: {remote_ports: [5201]}
    actions: [count]
  - name: unused
    actions: [record_flow]
"#;
    let mut o = fresh();
    converge(&desired(count_only), &mut o, PlanOptions::default());
    assert_eq!(
        o.maps["FLOWS"].max_entries, UNUSED_TABLE_CAPACITY,
        "a chain no interface runs fills nothing"
    );
    let p = converge(&desired(BASE), &mut o, PlanOptions::default());
    assert!(
        p.steps
            .iter()
            .any(|s| matches!(s, Step::RetireMap { name, migrate: true, .. } if name == "FLOWS"))
    );
    assert_eq!(o.maps["FLOWS"].max_entries, 1_000_000);
    // The last chain that records flows removed: back to the least, the
    // entries that fit copied.
    let p = converge(&desired(count_only), &mut o, PlanOptions::default());
    assert!(
        p.steps
            .iter()
            .any(|s| matches!(s, Step::CopyMap { name } if name == "FLOWS"))
    );
    assert_eq!(o.maps["FLOWS"].max_entries, UNUSED_TABLE_CAPACITY);
}

#[test]
fn incompatible_state_map_needs_allow_state_loss() {
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    o.maps.get_mut("CHAIN_STATS").unwrap().value_size = 8; // pinned by an older layout
    let d = desired(BASE);
    let errs = plan(&d, &o, PlanOptions::default()).unwrap_err();
    assert!(matches!(&errs[0], PlanError::StateLoss { name, .. } if name == "CHAIN_STATS"));
    let p = converge(
        &d,
        &mut o,
        PlanOptions {
            allow_state_loss: true,
            ..Default::default()
        },
    );
    assert!(p.steps.iter().any(
        |s| matches!(s, Step::RetireMap { name, migrate: false, .. } if name == "CHAIN_STATS")
    ));
}

#[test]
fn config_map_with_new_layout_is_recreated_and_refilled() {
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    o.maps.get_mut("CHAINS").unwrap().value_size = 64;
    let p = converge(&desired(BASE), &mut o, PlanOptions::default());
    let k = kinds(&p);
    assert_eq!(k[0], "retire_map");
    assert_eq!(
        k.iter().filter(|k| *k == "put_chain").count(),
        2,
        "chains must be refilled: {k:?}"
    );
}

#[test]
fn interrupted_migration_is_finished() {
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    let flows = o.maps["FLOWS"];
    o.maps.insert(
        "old-FLOWS".into(),
        MapDef {
            max_entries: 500_000,
            ..flows
        },
    );
    let p = converge(&desired(BASE), &mut o, PlanOptions::default());
    assert_eq!(kinds(&p), ["copy_map", "unpin"]);
}

/// A map whose migration was interrupted (old-NAME not yet copied) and
/// whose definition changes again is not retired over old-NAME, the only
/// copy of the entries not yet migrated: the copy is finished first, then
/// the map retired and migrated as usual. When old-NAME's layout cannot go
/// into the pinned map, an error names the way out.
#[test]
fn a_map_changed_again_during_an_unfinished_migration_finishes_it_first() {
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    let flows = o.maps["FLOWS"];
    o.maps.insert("old-FLOWS".into(), flows);
    o.maps.get_mut("FLOWS").unwrap().max_entries = 500_000;
    let d = desired(BASE);
    let p = plan(&d, &o, PlanOptions::default()).unwrap();
    let k = kinds(&p);
    assert_eq!(&k[..2], ["copy_map", "retire_map"], "{k:?}");
    converge(&d, &mut o, PlanOptions::default());
    assert_eq!(o.maps["FLOWS"].max_entries, flows.max_entries);
    assert!(!o.maps.contains_key("old-FLOWS"));

    // old-FLOWS in a layout the pinned FLOWS cannot take.
    o.maps.insert(
        "old-FLOWS".into(),
        MapDef {
            key_size: flows.key_size + 8,
            ..flows
        },
    );
    o.maps.get_mut("FLOWS").unwrap().max_entries = 500_000;
    let errs = plan(&d, &o, PlanOptions::default()).unwrap_err();
    assert!(
        matches!(&errs[0], PlanError::UnfinishedMigration { name } if name == "FLOWS"),
        "{errs:?}"
    );
    assert!(errs[0].to_string().contains("--allow-state-loss"));
    converge(
        &d,
        &mut o,
        PlanOptions {
            allow_state_loss: true,
            ..Default::default()
        },
    );
    assert_eq!(o.maps["FLOWS"].max_entries, flows.max_entries);
}

#[test]
fn mode_change_reattaches_with_a_note() {
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    let p = converge(
        &desired(&BASE.replace("xdp_mode: native", "xdp_mode: skb")),
        &mut o,
        PlanOptions::default(),
    );
    assert_eq!(kinds(&p), ["detach", "attach"]);
    assert!(p.notes[0].contains("re-attached"), "{:?}", p.notes);
}

#[test]
fn missing_interface_is_a_note_not_an_error() {
    let mut o = fresh();
    o.netdevs.remove("eth0");
    let p = converge(&desired(BASE), &mut o, PlanOptions::default());
    assert!(!kinds(&p).contains(&"attach".to_string()));
    assert!(p.notes.iter().any(|n| n.contains("eth0 does not exist")));
    // It appears: the next plan attaches it.
    o.netdevs.insert(
        "eth0".into(),
        NetDev {
            ifindex: 9,
            xdp: None,
            link_type: None,
            ..Default::default()
        },
    );
    let p = converge(&desired(BASE), &mut o, PlanOptions::default());
    assert_eq!(kinds(&p), ["put_iface", "attach"]);
}

#[test]
fn recreated_interface_gets_a_new_link() {
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    // eth0 deleted and created again: new ifindex, our link is dead (ifindex 0).
    o.links.get_mut("eth0").unwrap().ifindex = 0;
    o.netdevs.insert(
        "eth0".into(),
        NetDev {
            ifindex: 12,
            xdp: None,
            link_type: None,
            ..Default::default()
        },
    );
    let p = converge(&desired(BASE), &mut o, PlanOptions::default());
    assert_eq!(kinds(&p), ["put_iface", "detach", "attach", "delete_iface"]);
}

#[test]
fn destroy_removes_everything() {
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    let p = destroy(&o);
    let k = kinds(&p);
    assert_eq!(k[0], "detach");
    assert_eq!(k.last().unwrap(), "remove_root");
    assert!(
        k.iter()
            .all(|k| ["detach", "unpin", "remove_root"].contains(&k.as_str()))
    );
}

#[test]
fn observed_hash_ignores_unrelated_interfaces() {
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    let h = observed_hash(&o, &["eth0".to_string()]);
    o.netdevs.insert(
        "docker0".into(),
        NetDev {
            ifindex: 40,
            xdp: None,
            link_type: None,
            ..Default::default()
        },
    );
    assert_eq!(h, observed_hash(&o, &["eth0".to_string()]));
    o.entries
        .thresholds
        .values_mut()
        .for_each(|t| t.recover_at += 1);
    assert_ne!(h, observed_hash(&o, &["eth0".to_string()]));
}

// ---- TC egress --------------------------------------------------------------

fn egress_object_maps() -> BTreeMap<String, MapDef> {
    let mut m = object_maps();
    for (n, d) in [
        ("EGRESS_PROGS", def(3, 4, 4, 16)),
        ("EGRESS_IFACES", def(1, 4, 344, 256)),
        ("EGRESS_META", def(6, 4, 152, 1)),
        ("EGRESS_STATS", def(6, 4, 8, 12)),
        ("SUBFLOWS", def(9, 40, 112, 262_144)),
        ("SUBFLOW_EVENTS", def(27, 0, 0, 262_144)),
    ] {
        m.insert(n.to_string(), d);
    }
    m
}

fn egress_programs() -> Vec<String> {
    let mut p = programs();
    p.extend(
        [
            "egress_capture",
            "egress_count",
            "egress_entry",
            "egress_set_backup",
            "egress_set_window",
            "ingress_capture",
            "set_backup",
            "set_window",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    p.sort();
    p
}

fn egress_desired_with(text: &str, sha: &str) -> Desired {
    let p = policy::load_str("policy.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    Desired::build(&p, sha, &egress_programs(), &egress_object_maps())
        .unwrap_or_else(|e| panic!("{e:?}"))
}

const EGRESS: &str = r#"
version: 1
interfaces:
  - name: eth0
    xdp_mode: native
    chains: [bulk, bulk-out]
  - name: eth1
    chains: [bulk-out]
chains:
  - name: bulk
    match: {remote_ports: [5201]}
    actions: [count]
  - name: bulk-out
    hook: egress
    match: {remote: [198.51.100.0/24], remote_ports: [5201]}
    # No set_window: on eth1, without an ingress chain with record_flow,
    # the policy would be refused (validate/interfaces.rs).
    actions: [count, set_backup: {backup: true}]
"#;

#[test]
fn egress_chain_fresh_install_then_empty() {
    let d = egress_desired_with(EGRESS, SHA_A);
    assert_eq!(d.interfaces["eth0"].chains, ["bulk"]);
    assert_eq!(d.interfaces["eth0"].egress_chains, ["bulk-out"]);
    assert!(d.interfaces["eth1"].chains.is_empty());
    let mut o = fresh();
    let p = converge(&d, &mut o, PlanOptions::default());
    insta::assert_snapshot!("egress_fresh_install", text(&p));
    let k = kinds(&p);
    // XDP only where there are ingress chains; TC on both.
    assert_eq!(k.iter().filter(|k| *k == "attach").count(), 1, "{k:?}");
    assert_eq!(k.iter().filter(|k| *k == "attach_tc").count(), 2, "{k:?}");
    // The capture and the two actions the chain uses (not set_window).
    assert_eq!(k.iter().filter(|k| *k == "set_egress_slot").count(), 3);
    assert_eq!(k.iter().filter(|k| *k == "put_egress_iface").count(), 2);
    // Entries and slots before any link; links before META.
    let first_link = k.iter().position(|k| k.starts_with("attach")).unwrap();
    let last_put = k.iter().rposition(|k| k.starts_with("put_")).unwrap();
    assert!(last_put < first_link, "{k:?}");
    assert_eq!(o.tc_links.len(), 2);
    assert!(!o.links.contains_key("eth1"));
    // The observed view shows the egress chains.
    let v = View::observed(&o);
    assert_eq!(v.interfaces["eth1"].egress_chains, ["bulk-out"]);
    assert_eq!(v, View::desired(&d).clone_with_object(&v));
}

impl View {
    fn clone_with_object(&self, other: &View) -> View {
        View {
            object: other.object.clone(),
            ..self.clone()
        }
    }
}

#[test]
fn egress_plan_renders_as_json() {
    let d = egress_desired_with(EGRESS, SHA_A);
    let p = plan(&d, &fresh(), PlanOptions::default()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&render_json(&p)).unwrap();
    let steps = v["steps"].as_array().unwrap();
    let tc = steps
        .iter()
        .find(|s| s["kind"] == "attach_tc" && s["iface"] == "eth1")
        .unwrap();
    assert_eq!(tc["ifindex"], 3);
    assert!(
        steps
            .iter()
            .any(|s| s["kind"] == "set_egress_slot" && s["program"] == "egress_capture")
    );
}

#[test]
fn removing_the_egress_chain_detaches_tc_only() {
    let mut o = fresh();
    converge(
        &egress_desired_with(EGRESS, SHA_A),
        &mut o,
        PlanOptions::default(),
    );
    let xdp_link = o.links["eth0"].id;
    let no_egress = EGRESS
        .replace("chains: [bulk, bulk-out]", "chains: [bulk]")
        .replace("  - name: eth1\n    chains: [bulk-out]\n", "");
    let p = converge(
        &egress_desired_with(&no_egress, SHA_A),
        &mut o,
        PlanOptions::default(),
    );
    let k = kinds(&p);
    assert_eq!(k.iter().filter(|k| *k == "detach_tc").count(), 2, "{k:?}");
    assert!(!k.iter().any(|k| k == "detach" || k == "attach"), "{k:?}");
    assert!(o.tc_links.is_empty());
    assert!(o.entries.egress_ifaces.is_empty());
    assert_eq!(o.links["eth0"].id, xdp_link);
    insta::assert_snapshot!("egress_removed", text(&p));
}

#[test]
fn object_upgrade_swaps_the_tc_program_behind_its_link() {
    let mut o = fresh();
    converge(
        &egress_desired_with(EGRESS, SHA_A),
        &mut o,
        PlanOptions::default(),
    );
    let link = o.tc_links["eth1"].id;
    let p = converge(
        &egress_desired_with(EGRESS, SHA_B),
        &mut o,
        PlanOptions::default(),
    );
    let k = kinds(&p);
    assert_eq!(k.iter().filter(|k| *k == "update_tc_link").count(), 2);
    assert!(!k.iter().any(|k| k == "attach_tc" || k == "detach_tc"));
    assert_eq!(o.tc_links["eth1"].id, link, "link must be kept");
    assert_eq!(o.tc_links["eth1"].prog_id, o.programs["egress_entry"].id);
}

#[test]
fn recreated_interface_gets_a_new_tc_link() {
    let mut o = fresh();
    converge(
        &egress_desired_with(EGRESS, SHA_A),
        &mut o,
        PlanOptions::default(),
    );
    o.tc_links.get_mut("eth1").unwrap().ifindex = 0;
    o.netdevs.insert(
        "eth1".into(),
        NetDev {
            ifindex: 13,
            xdp: None,
            link_type: None,
            ..Default::default()
        },
    );
    let p = converge(
        &egress_desired_with(EGRESS, SHA_A),
        &mut o,
        PlanOptions::default(),
    );
    assert_eq!(
        kinds(&p),
        [
            "put_egress_iface",
            "detach_tc",
            "attach_tc",
            "delete_egress_iface"
        ]
    );
}

#[test]
fn destroy_detaches_tc_links() {
    let mut o = fresh();
    converge(
        &egress_desired_with(EGRESS, SHA_A),
        &mut o,
        PlanOptions::default(),
    );
    let k = kinds(&destroy(&o));
    assert_eq!(k.iter().filter(|k| *k == "detach_tc").count(), 2);
}

/// A crash after any step of the install, or of the removal, converges on
/// the next plan (in memory here; tests/crash.rs kills the real process).
#[test]
fn egress_plans_converge_from_every_prefix() {
    let d1 = egress_desired_with(EGRESS, SHA_A);
    let d2 = egress_desired_with(
        &EGRESS.replace("  - name: eth1\n    chains: [bulk-out]\n", ""),
        SHA_B,
    );
    for (from, to) in [(None, &d1), (Some(&d1), &d2)] {
        converges_after_every_prefix(from, to, |o, k| {
            assert_eq!(o.tc_links.len(), to.interfaces.len(), "after step {k}");
        });
    }
}

/// From `from` (or nothing), a plan to `to` stopped after each of its
/// steps (a crash) converges on the next plan; `check(observed, k)` then.
fn converges_after_every_prefix(
    from: Option<&Desired>,
    to: &Desired,
    check: impl Fn(&Observed, usize),
) {
    let mut base = fresh();
    if let Some(f) = from {
        converge(f, &mut base, PlanOptions::default());
    }
    let full = plan(to, &base, PlanOptions::default()).unwrap();
    for k in 0..full.steps.len() {
        let mut o = base.clone();
        let prefix = Plan {
            steps: full.steps[..k].to_vec(),
            ..full.clone()
        };
        simulate(&prefix, to, &mut o);
        converge(to, &mut o, PlanOptions::default());
        check(&o, k);
    }
}

#[test]
fn egress_chain_with_an_ingress_only_action_is_rejected() {
    // Validation already refuses it; desired also refuses a build without
    // the egress program of an action.
    let p = policy::load_str("policy.yaml", EGRESS).unwrap();
    let errs = Desired::build(&p, SHA_A, &programs(), &egress_object_maps()).unwrap_err();
    let msg = errs[0].to_string();
    assert!(
        msg.contains("bulk-out") && msg.contains("hook egress"),
        "{msg}"
    );
}

// ---- ingress capture (packet copy) -------------------------------------------

/// [`EGRESS`] (eth1 has only an egress chain) with a packet_copy rule on
/// eth1.
fn copy_policy() -> String {
    format!(
        "{EGRESS}packet_copy:
  - name: revive
    interface: eth1
    chain: bulk-out
    when: {{subflow_idle: 500ms}}
    send: {{mp_prio: {{backup: false}}}}
"
    )
}

#[test]
fn packet_copy_sets_capture_on_its_interface_only() {
    let d = egress_desired_with(&copy_policy(), SHA_A);
    assert!(d.interfaces["eth1"].capture);
    assert!(
        d.interfaces["eth1"].wants_xdp(),
        "egress-only, but captured"
    );
    assert!(!d.interfaces["eth0"].capture);
    let d = egress_desired_with(EGRESS, SHA_A);
    assert!(!d.interfaces["eth1"].capture);
    assert!(!d.interfaces["eth1"].wants_xdp());
    // A desired state without the field (an older snapshot) reads as false.
    let mut v = serde_json::to_value(&d.interfaces["eth1"]).unwrap();
    assert!(v.get("capture").is_none(), "skipped when false: {v}");
    v.as_object_mut().unwrap().remove("capture");
    let back: crate::desired::DesiredIface = serde_json::from_value(v).unwrap();
    assert!(!back.capture);
}

#[test]
fn packet_copy_on_an_egress_only_interface_attaches_xdp_then_converges() {
    let d = egress_desired_with(&copy_policy(), SHA_A);
    let mut o = fresh();
    let p = converge(&d, &mut o, PlanOptions::default());
    let k = kinds(&p);
    assert_eq!(k.iter().filter(|k| *k == "attach").count(), 2, "{k:?}");
    // The capture program in its slot of PROGS, before any link.
    let slot = p
        .steps
        .iter()
        .position(|s| {
            matches!(s, Step::SetSlot { action, slot, .. }
                if action == emptcp_common::INGRESS_CAPTURE && *slot == emptcp_common::INGRESS_CAPTURE_SLOT)
        })
        .expect("ingress_capture slot");
    assert!(slot < k.iter().position(|k| k == "attach").unwrap());
    // eth1's IFACES entry: no ingress chain, capture on.
    let e = &o.entries.ifaces[&3];
    assert!(e.chains.is_empty() && e.capture, "{e:?}");
    assert!(!o.entries.ifaces[&2].capture);
    assert!(o.links.contains_key("eth1"));
    // The plan says so, and so does the diff of the views.
    let t = text(&p);
    assert!(
        t.contains("interface eth1 (ifindex 3): chain ids [], capture (packet copy)"),
        "{t}"
    );
    assert!(t.contains("attach XDP entry to eth1"), "{t}");
    let v = View::observed(&o);
    assert!(v.interfaces["eth1"].capture);
    assert_eq!(v, View::desired(&d).clone_with_object(&v));
    // The kernel encoding carries the flag both ways.
    let k = crate::codec::iface_to_kernel(3, e);
    assert_eq!(k.flags, emptcp_common::IFACE_CAPTURE);
    assert!(k.in_use());
    assert_eq!(&crate::codec::iface_from_kernel(&k), e);
}

#[test]
fn adding_and_removing_packet_copy_plans_the_capture_and_the_xdp_link() {
    let mut o = fresh();
    let plain = egress_desired_with(EGRESS, SHA_A);
    converge(&plain, &mut o, PlanOptions::default());
    assert!(!o.links.contains_key("eth1"));
    let eth0_link = o.links["eth0"].id;

    let p = converge(
        &egress_desired_with(&copy_policy(), SHA_A),
        &mut o,
        PlanOptions::default(),
    );
    // The capture's program is loaded alone, beside the pinned ones.
    assert_eq!(
        kinds(&p),
        [
            "load_object",
            "set_slot",
            "put_iface",
            "attach",
            "write_meta"
        ],
        "{}",
        text(&p)
    );
    assert!(
        p.steps
            .iter()
            .any(|s| matches!(s, Step::LoadObject { programs, .. }
            if programs == &[emptcp_common::INGRESS_CAPTURE.to_string()])),
        "{}",
        text(&p)
    );
    assert_eq!(
        o.links["eth0"].id, eth0_link,
        "the entry's link was touched"
    );

    let p = converge(&plain, &mut o, PlanOptions::default());
    assert_eq!(
        kinds(&p),
        ["delete_iface", "clear_slot", "detach", "unpin"],
        "{}",
        text(&p)
    );
    assert!(!o.links.contains_key("eth1"));
    assert!(!o.programs.contains_key(emptcp_common::INGRESS_CAPTURE));
    assert_eq!(o.links["eth0"].id, eth0_link, "eth0 untouched");

    // On an interface with ingress chains the rule only flips the flag,
    // and drops the port prefilter (the entry tests the flag after it).
    assert_ne!(o.entries.ifaces[&2].filter.require, 0);
    let on_eth0 = copy_policy().replace("interface: eth1", "interface: eth0");
    let p = converge(
        &egress_desired_with(&on_eth0, SHA_A),
        &mut o,
        PlanOptions::default(),
    );
    assert_eq!(
        kinds(&p),
        ["load_object", "set_slot", "put_iface", "write_meta"],
        "{}",
        text(&p)
    );
    assert!(o.entries.ifaces[&2].capture);
    assert_eq!(o.entries.ifaces[&2].filter.require, 0);
    assert_eq!(o.links["eth0"].id, eth0_link);
}

/// A crash after any step of adding or removing the capture converges.
#[test]
fn capture_plans_converge_from_every_prefix() {
    let plain = egress_desired_with(EGRESS, SHA_A);
    let copy = egress_desired_with(&copy_policy(), SHA_A);
    for (from, to) in [(None, &copy), (Some(&plain), &copy), (Some(&copy), &plain)] {
        converges_after_every_prefix(from, to, |o, k| {
            let captured = o.entries.ifaces.get(&3).is_some_and(|i| i.capture);
            assert_eq!(captured, to.interfaces["eth1"].capture, "after step {k}");
            assert_eq!(o.links.contains_key("eth1"), captured, "after step {k}");
        });
    }
}

/// SUBFLOWS and FLOWS grew by appended fields (last_rx_data_ns; the
/// entry's own stored option): their entries are migrated, zero-extended,
/// without --allow-state-loss. A shrinking value still needs it.
#[test]
fn append_only_value_growth_migrates_its_entries() {
    for (name, older, bigger) in [
        (
            "SUBFLOWS",
            def(9, 40, 96, 262_144),
            def(9, 40, 120, 262_144),
        ),
        (
            "FLOWS",
            with_layout(def(9, 40, 56, 1_000_000), FLOWS_LAYOUT),
            def(9, 40, 72, 1_000_000),
        ),
    ] {
        let mut o = fresh();
        converge(
            &egress_desired_with(EGRESS, SHA_A),
            &mut o,
            PlanOptions::default(),
        );
        let current = o.clone();
        o.maps.insert(name.into(), older);
        let p = converge(
            &egress_desired_with(EGRESS, SHA_B),
            &mut o,
            PlanOptions::default(),
        );
        assert!(p.steps.iter().any(|s| matches!(s,
            Step::RetireMap { name: n, migrate: true, .. } if n == name)));
        assert!(
            p.steps
                .iter()
                .any(|s| matches!(s, Step::CopyMap { name: n } if n == name))
        );
        // A shrinking value is not a migration.
        let mut o2 = current;
        o2.maps.insert(name.into(), bigger);
        let errs = plan(
            &egress_desired_with(EGRESS, SHA_A),
            &o2,
            PlanOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&errs[0], PlanError::StateLoss { name: n, .. } if n == name),
            "{name}: {errs:?}"
        );
    }
}

/// The state an upgrade to B leaves when it is killed after its load step:
/// B's programs pinned, slots, links and META still A's.
fn interrupted_upgrade_to_b() -> Observed {
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    let d_b = desired_with(BASE, SHA_B);
    let p = plan(&d_b, &o, PlanOptions::default()).unwrap();
    let load = Plan {
        steps: p.steps[..1].to_vec(),
        ..p
    };
    assert_eq!(kinds(&load), ["load_object"]);
    simulate(&load, &d_b, &mut o);
    o
}

#[test]
fn rollback_after_an_interrupted_upgrade_loads_the_object_again() {
    let mut o = interrupted_upgrade_to_b();
    // META still records A: only the programs tell that B's are pinned.
    let d_a = desired(BASE);
    let p = plan(&d_a, &o, PlanOptions::default()).unwrap();
    assert_eq!(kinds(&p).first().map(String::as_str), Some("load_object"));
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("object bbbbbbbbbbbbbbbb") && n.contains("interrupted")),
        "{:?}",
        p.notes
    );
    // After it, every pin, slot and link holds A's programs.
    converge(&d_a, &mut o, PlanOptions::default());
    let a = crate::identity::object_id(SHA_A);
    let held: Vec<u32> = o
        .programs
        .values()
        .map(|p| p.id)
        .chain(o.prog_slots.values().copied())
        .chain(o.links.values().map(|l| l.prog_id))
        .collect();
    assert!(held.iter().all(|id| o.object_of(*id) == Some(a.as_str())));
}

#[test]
fn roll_forward_after_an_interrupted_upgrade_moves_slots_and_links() {
    let mut o = interrupted_upgrade_to_b();
    let d_b = desired_with(BASE, SHA_B);
    let p = converge(&d_b, &mut o, PlanOptions::default());
    // B is pinned in full: no second load, but every slot and link moves.
    assert!(!kinds(&p).contains(&"load_object".to_string()));
    assert!(kinds(&p).contains(&"update_link".to_string()));
    let b = crate::identity::object_id(SHA_B);
    assert!(
        o.prog_slots
            .values()
            .all(|id| o.object_of(*id) == Some(b.as_str()))
    );
}

#[test]
fn raw_ip_link_is_flagged_and_noted() {
    let mut o = fresh();
    o.netdevs.get_mut("eth0").unwrap().link_type = Some("none".into());
    let auto = BASE.replace("xdp_mode: native", "xdp_mode: auto");
    let p = converge(&desired(&auto), &mut o, PlanOptions::default());
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("eth0: raw-IP link (link type none)") && n.contains("skb mode")),
        "{:?}",
        p.notes
    );
    assert!(
        p.steps.iter().any(
            |s| matches!(s, Step::Attach { iface, mode: XdpMode::Skb, .. } if iface == "eth0")
        )
    );
    let e = o.entries.ifaces.get(&2).cloned().expect("eth0 entry");
    assert!(e.raw_ip, "IFACE_RAW_IP written for a raw-IP link");
    // A `none` link never hands generic XDP a CHECKSUM_COMPLETE skb.
    assert!(!e.skb);
    // Converged: the next plan is empty.
    assert!(
        converge(&desired(&auto), &mut o, PlanOptions::default())
            .steps
            .is_empty()
    );
    let k = crate::codec::iface_to_kernel(2, &e);
    assert_eq!(
        k.flags & emptcp_common::IFACE_RAW_IP,
        emptcp_common::IFACE_RAW_IP
    );
    assert_eq!(crate::codec::iface_from_kernel(&k), e);
}

#[test]
fn unsupported_link_type_is_a_plan_error_naming_it() {
    let mut o = fresh();
    o.netdevs.get_mut("eth0").unwrap().link_type = Some("ppp".into());
    let errs = plan(&desired(BASE), &o, PlanOptions::default()).unwrap_err();
    assert!(
        matches!(&errs[0], PlanError::LinkType { iface, link_type } if iface == "eth0" && link_type == "ppp"),
        "{errs:?}"
    );
    let msg = errs[0].to_string();
    assert!(
        msg.contains("eth0") && msg.contains("'ppp'") && msg.contains("remove"),
        "{msg}"
    );
}

#[test]
fn a_pin_replaced_by_hand_is_drift() {
    let d = desired(BASE);
    let mut o = fresh();
    converge(&d, &mut o, PlanOptions::default());
    // Another program of the same object under the pin of `strip_add_addr`.
    let count = o.programs["count"].clone();
    o.programs.insert("strip_add_addr".into(), count);
    let p = plan(&d, &o, PlanOptions::default()).unwrap();
    assert_eq!(kinds(&p).first().map(String::as_str), Some("load_object"));
    assert!(
        p.notes.iter().any(|n| n.contains("progs/strip_add_addr")),
        "{:?}",
        p.notes
    );
    // A program without a stamp (not loaded by emptcp).
    let mut o = fresh();
    converge(&d, &mut o, PlanOptions::default());
    let id = o.programs["count"].id;
    o.objects.remove(&id);
    let p = plan(&d, &o, PlanOptions::default()).unwrap();
    assert!(
        p.notes.iter().any(|n| n.contains("no emptcp object")),
        "{:?}",
        p.notes
    );
    converge(&d, &mut o, PlanOptions::default());
}

#[test]
fn a_slot_replaced_by_hand_is_set_back() {
    let d = desired(BASE);
    let mut o = fresh();
    converge(&d, &mut o, PlanOptions::default());
    let count = o.programs["count"].id;
    let strip_slot = emptcp_common::Action::StripAddAddr as u32;
    o.prog_slots.insert(strip_slot, count);
    let p = plan(&d, &o, PlanOptions::default()).unwrap();
    assert_eq!(kinds(&p), ["set_slot"]);
    converge(&d, &mut o, PlanOptions::default());
}

#[test]
fn native_xdp_on_a_raw_ip_link_is_a_plan_error() {
    let mut o = fresh();
    o.netdevs.get_mut("eth0").unwrap().link_type = Some("none".into());
    let errs = plan(&desired(BASE), &o, PlanOptions::default()).unwrap_err();
    assert!(
        matches!(&errs[0], PlanError::NativeOnRawIp { iface, .. } if iface == "eth0"),
        "{errs:?}"
    );
    assert!(errs[0].to_string().contains("xdp_mode: skb or auto"));
}

#[test]
fn skb_mode_on_a_decapsulating_tunnel_skips_ipv4_inserts() {
    let mut o = fresh();
    o.netdevs.get_mut("eth0").unwrap().link_type = Some("gre".into());
    let skb = BASE.replace("xdp_mode: native", "xdp_mode: skb");
    converge(&desired(&skb), &mut o, PlanOptions::default());
    assert!(o.entries.ifaces[&2].skb && o.entries.ifaces[&2].raw_ip);
}

/// eth0 as `ip -details` and the `netdev` family show it: Ethernet of
/// `kind` (None: a NIC), with or without native XDP (None: kernel < 6.3).
fn ethernet(o: &mut Observed, kind: Option<&str>, native_xdp: Option<bool>) {
    let dev = o.netdevs.get_mut("eth0").unwrap();
    dev.link_type = Some("ether".into());
    dev.kind = kind.map(Into::into);
    dev.native_xdp = native_xdp;
}

fn attach_mode(p: &Plan, name: &str) -> Option<XdpMode> {
    p.steps.iter().find_map(|s| match s {
        Step::Attach { iface, mode, .. } if iface == name => Some(*mode),
        _ => None,
    })
}

#[test]
fn auto_on_a_nic_without_native_xdp_is_generic_and_skips_ipv4_inserts() {
    let auto = BASE.replace("xdp_mode: native", "xdp_mode: auto");
    let mut o = fresh();
    ethernet(&mut o, None, Some(false));
    let p = converge(&desired(&auto), &mut o, PlanOptions::default());
    // The kernel would choose generic mode: the plan says so, and the
    // entry tells the datapath before the link exists.
    assert_eq!(attach_mode(&p, "eth0"), Some(XdpMode::Skb));
    assert!(
        o.entries.ifaces[&2].skb,
        "IFACE_SKB on a NIC in generic mode"
    );
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("eth0: XDP in skb mode (its driver has no native XDP) on a NIC")),
        "{:?}",
        p.notes
    );
    assert!(
        converge(&desired(&auto), &mut o, PlanOptions::default())
            .steps
            .is_empty()
    );
}

#[test]
fn generic_xdp_is_flagged_only_where_checksum_complete_may_arrive() {
    let auto = BASE.replace("xdp_mode: native", "xdp_mode: auto");
    let skb = BASE.replace("xdp_mode: native", "xdp_mode: skb");
    // (policy, kind, native XDP) -> (attach mode, IFACE_SKB)
    let cases = [
        (&auto, None, Some(true), XdpMode::Auto, false),
        (&auto, Some("veth"), Some(true), XdpMode::Auto, false),
        (&skb, Some("veth"), Some(true), XdpMode::Skb, false),
        (&skb, Some("tun"), Some(false), XdpMode::Skb, false),
        (&skb, None, Some(true), XdpMode::Skb, true),
        (&auto, Some("bridge"), Some(false), XdpMode::Skb, true),
        // Before Linux 6.3 nobody can tell: the kernel chooses.
        (&auto, None, None, XdpMode::Auto, false),
    ];
    for (policy, kind, native, mode, flagged) in cases {
        let mut o = fresh();
        ethernet(&mut o, kind, native);
        let p = converge(&desired(policy), &mut o, PlanOptions::default());
        let case = format!("{kind:?} native={native:?} {policy:.0}");
        assert_eq!(attach_mode(&p, "eth0"), Some(mode), "{case}");
        assert_eq!(o.entries.ifaces[&2].skb, flagged, "{case}");
        assert_eq!(
            p.notes
                .iter()
                .any(|n| n.contains("may deliver CHECKSUM_COMPLETE")),
            flagged,
            "{case}: {:?}",
            p.notes
        );
    }
}

// ---- property: convergence from random desired states and crash points ------

mod layouts;

mod convergence {
    //! For random sequences of desired states (chains, thresholds,
    //! interfaces, egress chains, object A/B, packet_copy on/off) and random
    //! crash points (a prefix of the plan applied, the load itself killed
    //! after pinning only some maps and programs), planning again from
    //! whatever is left and applying that plan leaves nothing to do.
    use proptest::prelude::*;

    use super::*;

    /// 512 cases of up to 6 desired states each: under 1 s in release on
    /// the development machine, small enough to run with every `cargo test`.
    const CASES: u32 = 512;

    /// One desired state, as the knobs a policy file turns.
    #[derive(Clone, Debug)]
    struct Knobs {
        sha_b: bool,
        /// Per interface (eth0, eth1): xdp mode skb, `short` in its chains,
        /// `bulk` in its chains, the egress chain `out` in its chains.
        ifaces: [(bool, bool, bool, bool); 2],
        remove_below_kib: u32,
        recover_extra_kib: u32,
        strip: bool,
        bulk_port: u16,
        out_backup: bool,
        copy: bool,
    }

    fn knobs() -> impl Strategy<Value = Knobs> {
        let iface = (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>());
        (
            any::<bool>(),
            [iface, iface],
            1u32..8192,
            0u32..8192,
            any::<bool>(),
            1u16..,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(
                    sha_b,
                    ifaces,
                    remove_below_kib,
                    recover_extra_kib,
                    strip,
                    bulk_port,
                    out_backup,
                    copy,
                )| Knobs {
                    sha_b,
                    ifaces,
                    remove_below_kib,
                    recover_extra_kib,
                    strip,
                    bulk_port,
                    out_backup,
                    copy,
                },
            )
    }

    /// The policy text of `k`: every chain is declared, interfaces use a
    /// subset; packet_copy only where `out` runs (the rule needs it).
    fn policy_text(k: &Knobs) -> String {
        let mut t = String::from("version: 1\ninterfaces:\n");
        if k.ifaces.iter().all(|f| !(f.1 || f.2 || f.3)) {
            t = String::from("version: 1\ninterfaces: []\n");
        }
        for (i, (skb, short, bulk, out)) in k.ifaces.iter().enumerate() {
            let mut chains = Vec::new();
            for (on, name) in [(short, "short"), (bulk, "bulk"), (out, "out")] {
                if *on {
                    chains.push(name);
                }
            }
            if chains.is_empty() {
                continue; // an interface must list a chain: leave it out
            }
            let mode = if *skb { "skb" } else { "native" };
            t += &format!(
                "  - name: eth{i}\n    xdp_mode: {mode}\n    chains: [{}]\n",
                chains.join(", ")
            );
        }
        // Thresholds are only allowed (and required) with strip/recover.
        let recover = k.remove_below_kib + k.recover_extra_kib;
        let short = if k.strip {
            format!(
                "thresholds: {{remove_below: {}KiB, recover_at: {recover}KiB}}
    actions: [record_flow, strip_add_addr, recover_add_addr, count]",
                k.remove_below_kib
            )
        } else {
            "actions: [record_flow, count]".to_string()
        };
        t += &format!(
            "chains:
  - name: short
    match: {{remote: [203.0.113.0/24], local_ports: [443]}}
    {short}
  - name: bulk
    match: {{remote_ports: [{}]}}
    actions: [count]
  - name: out
    hook: egress
    match: {{remote: [198.51.100.0/24]}}
    actions: [count, set_backup: {{backup: {}}}]
",
            k.bulk_port, k.out_backup
        );
        if let Some(i) = k.ifaces.iter().position(|f| f.3).filter(|_| k.copy) {
            t += &format!(
                "packet_copy:
  - name: revive
    interface: eth{i}
    chain: out
    when: {{subflow_idle: 500ms}}
    send: {{mp_prio: {{backup: false}}}}
"
            );
        }
        t
    }

    fn desired_of(k: &Knobs) -> Desired {
        egress_desired_with(&policy_text(k), if k.sha_b { SHA_B } else { SHA_A })
    }

    /// Where an apply stops: after `at` steps (taken modulo the plan's
    /// length + 1, so "all of it" is a point too), and if the next step is
    /// a load, after pinning the maps and programs whose bit is set.
    #[derive(Clone, Debug)]
    struct Crash {
        at: usize,
        pins: u64,
    }

    fn crash() -> impl Strategy<Value = Option<Crash>> {
        prop::option::of((any::<usize>(), any::<u64>()).prop_map(|(at, pins)| Crash { at, pins }))
    }

    /// A load killed part-way: the loader pins maps first, then programs in
    /// parallel (each stamped with the object it belongs to), so any subset
    /// of either may be in place.
    fn partial_load(d: &Desired, o: &mut Observed, pins: u64, next_id: &mut u32) {
        let mut bit = 0;
        let mut take = || {
            bit += 1;
            pins & (1 << (bit % 64)) != 0
        };
        for (n, m) in &d.maps {
            if take() {
                o.maps.entry(n.clone()).or_insert(*m);
            }
        }
        for p in &d.programs {
            if take() {
                *next_id += 1;
                let prog = ObservedProg {
                    id: *next_id,
                    tag: "t".into(),
                    kernel_name: p.chars().take(15).collect(),
                    unpinned_maps: Vec::new(),
                };
                o.objects
                    .insert(prog.id, crate::identity::object_id(&d.object_sha256));
                o.programs.insert(p.clone(), prog);
            }
        }
    }

    /// Applies `plan` to `o` up to `crash` (all of it when `None`).
    fn apply_until(
        p: &Plan,
        d: &Desired,
        o: &mut Observed,
        crash: &Option<Crash>,
        next_id: &mut u32,
    ) {
        let Some(c) = crash else {
            simulate(p, d, o);
            return;
        };
        let at = c.at % (p.steps.len() + 1);
        let prefix = Plan {
            steps: p.steps[..at].to_vec(),
            ..p.clone()
        };
        simulate(&prefix, d, o);
        if matches!(p.steps.get(at), Some(Step::LoadObject { .. })) {
            partial_load(d, o, c.pins, next_id);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

        #[test]
        fn plans_converge_after_random_states_and_crashes(
            states in prop::collection::vec((knobs(), crash()), 1..=6),
        ) {
            let mut o = fresh();
            // Partial loads hand out ids far above simulate's, so no clash.
            let mut next_id = 1_000_000;
            for (k, c) in &states {
                let d = desired_of(k);
                let p = plan(&d, &o, PlanOptions::default())
                    .unwrap_or_else(|e| panic!("plan for {k:?} failed: {e:?}"));
                apply_until(&p, &d, &mut o, c, &mut next_id);
                if c.is_none() {
                    let again = plan(&d, &o, PlanOptions::default()).unwrap();
                    prop_assert!(again.is_empty(), "not empty after a full apply: {:#?}", again.steps);
                }
            }
            // Whatever the last crash left: one plan, applied, is enough.
            let last = desired_of(&states.last().unwrap().0);
            converge(&last, &mut o, PlanOptions::default());
        }
    }
}

const RECOVER: &str = r#"
version: 1
interfaces:
  - name: eth0
    chains: [mptcp]
  - name: eth1
    chains: [counted]
chains:
  - name: mptcp
    match: {remote_ports: [5201]}
    thresholds: {remove_below: 1MiB, recover_at: 4MiB}
    actions: [record_flow, strip_add_addr, recover_add_addr]
  - name: counted
    actions: [count]
"#;

fn recover_desired(text: &str, sha: &str) -> Desired {
    let p = policy::load_str("policy.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    let mut progs = egress_programs();
    progs.push("ingress_recover".into());
    Desired::build(&p, sha, &progs, &egress_object_maps()).unwrap_or_else(|e| panic!("{e:?}"))
}

/// The in-kernel recovery's TC ingress link goes where a chain uses
/// recover_add_addr, and nowhere else; a crash after any step converges;
/// dropping the action detaches it; destroy detaches it.
#[test]
fn recovery_link_follows_recover_add_addr() {
    let d = recover_desired(RECOVER, SHA_A);
    assert!(d.interfaces["eth0"].recover && !d.interfaces["eth1"].recover);
    let mut o = fresh();
    let p = converge(&d, &mut o, PlanOptions::default());
    let ingress: Vec<&Step> = p
        .steps
        .iter()
        .filter(|s| {
            matches!(
                s,
                Step::AttachTc {
                    hook: TcHook::Ingress,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(ingress.len(), 1, "{:?}", kinds(&p));
    assert!(text(&p).contains("attach TC ingress recovery to eth0"));
    assert_eq!(o.tc_ingress_links.keys().collect::<Vec<_>>(), ["eth0"]);
    assert_eq!(
        o.tc_ingress_links["eth0"].prog_id,
        o.programs["ingress_recover"].id
    );
    // Converged: nothing more to do.
    assert!(
        plan(&d, &o, PlanOptions::default())
            .unwrap()
            .steps
            .is_empty()
    );

    let without = recover_desired(&RECOVER.replace(", recover_add_addr]", "]"), SHA_A);
    converges_after_every_prefix(Some(&d), &without, |o, k| {
        assert!(o.tc_ingress_links.len() <= 1, "after step {k}");
    });
    let mut o2 = o.clone();
    converge(&without, &mut o2, PlanOptions::default());
    assert!(o2.tc_ingress_links.is_empty());

    converges_after_every_prefix(None, &d, |_, _| {});
    let k = kinds(&destroy(&o));
    assert!(k.iter().filter(|k| *k == "detach_tc").count() >= 2, "{k:?}");
}

/// A direction with one or two IPv4 prefixes is kept inline (network and
/// mask such that `addr & mask == network` on the packet's bytes read
/// natively, as the entry program compares; a lone prefix repeated in the
/// second slot); three, or IPv6 only, stay in the tries alone; the
/// interface's value reads back as plan wrote it.
#[test]
fn inline_v4_prefixes_encode_and_round_trip() {
    use emptcp_common::{SEL_LOCAL_V4_INLINE, SEL_REMOTE, SEL_REMOTE_V4_INLINE};
    let mut e = crate::state::Entries::default();
    let mut add = |chain, dir, net: &str| {
        e.prefixes.insert(crate::state::PrefixEntry {
            chain,
            dir,
            prefix: net.parse().unwrap(),
        });
    };
    add(1, crate::state::Dir::Remote, "192.0.2.0/24");
    add(1, crate::state::Dir::Remote, "2001:db8::/32");
    add(2, crate::state::Dir::Remote, "192.0.2.0/24");
    add(2, crate::state::Dir::Remote, "198.51.100.0/24");
    add(2, crate::state::Dir::Local, "203.0.113.7/32");
    add(3, crate::state::Dir::Remote, "2001:db8::/32");
    for net in ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"] {
        add(4, crate::state::Dir::Remote, net);
    }
    for id in 1..=4 {
        e.selectors.insert(id, SEL_REMOTE);
    }
    let matches = |addr: [u8; 4], v: &[u32; 4], half: usize| {
        u32::from_ne_bytes(addr) & v[2 * half + 1] == v[2 * half]
    };
    let (v4, alt, flags) = inline_v4_prefixes(1, &e);
    assert_eq!(flags, SEL_REMOTE_V4_INLINE);
    assert!(matches([192, 0, 2, 77], &v4, 0));
    assert!(!matches([192, 0, 3, 77], &v4, 0));
    assert_eq!(alt, v4, "a lone prefix fills both slots");
    assert_eq!(&v4[2..], &[0, 0]);
    let (v4, alt, flags) = inline_v4_prefixes(2, &e);
    assert_eq!(flags, SEL_REMOTE_V4_INLINE | SEL_LOCAL_V4_INLINE);
    let remote = |a| matches(a, &v4, 0) || matches(a, &alt, 0);
    assert!(remote([192, 0, 2, 1]) && remote([198, 51, 100, 254]));
    assert!(!remote([198, 51, 101, 1]) && !remote([203, 0, 113, 7]));
    assert!(matches([203, 0, 113, 7], &v4, 1) && matches([203, 0, 113, 7], &alt, 1));
    assert!(!matches([203, 0, 113, 8], &v4, 1));
    assert_eq!(inline_v4_prefixes(3, &e), ([0; 4], [0; 4], 0));
    assert_eq!(
        inline_v4_prefixes(4, &e),
        ([0; 4], [0; 4], 0),
        "three prefixes stay in the trie"
    );

    let entry = |chains: Vec<u32>| crate::state::IfaceEntry {
        name: "eth0".into(),
        filter: iface_filter(&chains, &e),
        chains,
        capture: false,
        raw_ip: false,
        skb: false,
        track: false,
    };
    let with = entry(vec![3, 1]);
    assert_eq!(with.filter.inline_v4.len(), 2);
    assert_eq!(with.filter.inline_v4_alt.len(), 2);
    assert_eq!(
        with.filter.chain_flags[1] & SEL_REMOTE_V4_INLINE,
        SEL_REMOTE_V4_INLINE
    );
    let without = entry(vec![3]);
    assert!(
        without.filter.inline_v4.is_empty() && without.filter.inline_v4_alt.is_empty(),
        "nothing inline: as before"
    );
    for i in [with, without] {
        assert_eq!(
            crate::codec::iface_from_kernel(&crate::codec::iface_to_kernel(4, &i)),
            i
        );
    }
}

// ---- TC ingress hook (ingress_hook: tc) -------------------------------------

fn tc_programs() -> Vec<String> {
    let mut p = egress_programs();
    p.extend(
        [
            "tc_count",
            "tc_drop",
            "tc_entry",
            "tc_record_flow",
            "tc_record_flow_setup",
            "tc_recover_add_addr",
            "tc_strip_add_addr",
            "tc_ingress_capture",
            "record_flow_setup",
            "ingress_recover",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    p.sort();
    p
}

fn tc_desired_with(text: &str, sha: &str) -> Desired {
    let mut maps = egress_object_maps();
    for (n, d) in [
        ("TC_PROGS", def(3, 4, 4, 16)),
        ("TC_DESC", def(6, 4, 152, 1)),
    ] {
        maps.insert(n.to_string(), d);
    }
    let p = policy::load_str("policy.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    Desired::build(&p, sha, &tc_programs(), &maps).unwrap_or_else(|e| panic!("{e:?}"))
}

/// BASE with eth0's ingress chains at TC ingress.
fn on_tc(text: &str) -> String {
    text.replace("    xdp_mode: native\n", "    ingress_hook: tc\n")
}

#[test]
fn tc_ingress_hook_attaches_tc_entry_and_fills_tc_progs() {
    let d = tc_desired_with(&on_tc(BASE), SHA_A);
    assert!(!d.interfaces["eth0"].wants_xdp());
    assert!(d.interfaces["eth0"].wants_tc(TcHook::IngressChains));
    for p in [
        "tc_entry",
        "tc_record_flow",
        "tc_record_flow_setup",
        "tc_count",
    ] {
        assert!(d.programs.iter().any(|x| x == p), "{p} in {:?}", d.programs);
    }
    for p in ["entry", "record_flow", "record_flow_setup", "count"] {
        assert!(
            !d.programs.iter().any(|x| x == p),
            "{p} in {:?}",
            d.programs
        );
    }
    let mut o = fresh();
    let p = converge(&d, &mut o, PlanOptions::default());
    insta::assert_snapshot!("tc_ingress_fresh_install", text(&p));
    let k = kinds(&p);
    assert_eq!(k.iter().filter(|k| *k == "attach").count(), 0, "{k:?}");
    assert!(p.steps.iter().any(|s| matches!(
        s,
        Step::AttachTc {
            hook: TcHook::IngressChains,
            iface,
            ..
        } if iface == "eth0"
    )));
    // Four actions and the set-up half of record_flow, none in PROGS.
    assert_eq!(k.iter().filter(|k| *k == "set_tc_slot").count(), 5, "{k:?}");
    assert_eq!(k.iter().filter(|k| *k == "set_slot").count(), 0, "{k:?}");
    // The entry reads the interface's chains from IFACES, as on XDP.
    assert_eq!(o.entries.ifaces.len(), 1);
    assert!(!o.entries.ifaces[&2].skb, "the generic-XDP caveat is XDP's");
    assert_eq!(o.tc_chain_links.len(), 1);
    assert!(o.links.is_empty());
    // record_flow runs (as tc_record_flow): the connection tables get the
    // policy's capacity, not the idle one.
    assert_eq!(d.maps["FLOWS"].max_entries, 1_000_000);
}

#[test]
fn moving_the_chains_between_hooks_swaps_the_links() {
    let xdp = tc_desired_with(BASE, SHA_A);
    let tc = tc_desired_with(&on_tc(BASE), SHA_A);
    let mut o = fresh();
    converge(&xdp, &mut o, PlanOptions::default());
    assert_eq!((o.links.len(), o.tc_chain_links.len()), (1, 0));
    let p = converge(&tc, &mut o, PlanOptions::default());
    assert_eq!((o.links.len(), o.tc_chain_links.len()), (0, 1));
    let k = kinds(&p);
    assert!(k.contains(&"detach".to_string()), "{k:?}");
    assert!(k.contains(&"clear_slot".to_string()), "{k:?}");
    converge(&xdp, &mut o, PlanOptions::default());
    assert_eq!((o.links.len(), o.tc_chain_links.len()), (1, 0));
    assert!(o.tc_prog_slots.is_empty(), "TC_PROGS emptied");
    // A crash after any step of either move converges.
    converges_after_every_prefix(Some(&xdp), &tc, |o, k| {
        assert_eq!(o.tc_chain_links.len(), 1, "after step {k}");
    });
    converges_after_every_prefix(Some(&tc), &xdp, |o, k| {
        assert!(o.tc_chain_links.is_empty(), "after step {k}");
    });
}

#[test]
fn an_object_without_the_tc_variants_refuses_the_tc_hook() {
    let p = policy::load_str("policy.yaml", &on_tc(BASE)).unwrap();
    let errors = Desired::build(&p, SHA_A, &egress_programs(), &egress_object_maps())
        .expect_err("no tc_ programs");
    let text = format!("{errors:?}");
    assert!(
        text.contains("interface eth0 with ingress_hook: tc"),
        "{text}"
    );
}

/// `copy_policy` with eth1's ingress at TC.
fn copy_policy_on_tc() -> String {
    copy_policy().replace(
        "  - name: eth1\n    chains: [bulk-out]\n",
        "  - name: eth1\n    ingress_hook: tc\n    chains: [bulk-out]\n",
    )
}

/// A packet-copy rule on a `tc` interface: the capture runs there as
/// `tc_ingress_capture` in slot 0 of `TC_PROGS`, behind the TCX link of
/// `tc_entry`; no XDP program, no PROGS slot. Removing the rule takes all
/// of it away again, and a crash after any step converges.
#[test]
fn packet_copy_on_a_tc_interface_captures_at_tc() {
    let policy = copy_policy_on_tc();
    assert!(policy.contains("ingress_hook: tc"), "{policy}");
    let d = tc_desired_with(&policy, SHA_A);
    let eth1 = &d.interfaces["eth1"];
    assert!(eth1.capture && !eth1.wants_xdp());
    assert!(eth1.wants_tc(TcHook::IngressChains));
    assert!(d.programs.iter().any(|p| p == "tc_ingress_capture"));
    assert!(!d.programs.iter().any(|p| p == "ingress_capture"));
    let mut o = fresh();
    let p = converge(&d, &mut o, PlanOptions::default());
    assert!(
        p.steps
            .iter()
            .any(|s| matches!(s, Step::SetTcSlot { program, slot, .. }
            if program == emptcp_common::TC_INGRESS_CAPTURE
                && *slot == emptcp_common::INGRESS_CAPTURE_SLOT)),
        "{}",
        text(&p)
    );
    // eth0's ingress chain still fills PROGS; the XDP capture is not there.
    assert!(
        !p.steps
            .iter()
            .any(|s| matches!(s, Step::SetSlot { action, .. }
        if action == emptcp_common::INGRESS_CAPTURE))
    );
    assert!(p.steps.iter().any(|s| matches!(
        s,
        Step::AttachTc { hook: TcHook::IngressChains, iface, .. } if iface == "eth1"
    )));
    assert!(!o.links.contains_key("eth1"), "no XDP link on eth1");
    let e = &o.entries.ifaces[&3];
    assert!(e.chains.is_empty() && e.capture, "{e:?}");
    let plain = tc_desired_with(EGRESS, SHA_A);
    converge(&plain, &mut o, PlanOptions::default());
    assert!(o.tc_prog_slots.is_empty() && o.tc_chain_links.is_empty());
    assert!(!o.programs.contains_key(emptcp_common::TC_INGRESS_CAPTURE));
    for (from, to) in [(None, &d), (Some(&plain), &d), (Some(&d), &plain)] {
        converges_after_every_prefix(from, to, |o, k| {
            let captured = o.entries.ifaces.get(&3).is_some_and(|i| i.capture);
            assert_eq!(captured, to.interfaces["eth1"].capture, "after step {k}");
            assert_eq!(
                o.tc_chain_links.contains_key("eth1"),
                captured,
                "after step {k}"
            );
        });
    }
}

#[test]
fn an_object_without_the_tc_capture_refuses_packet_copy_on_tc() {
    let p = policy::load_str("policy.yaml", &copy_policy_on_tc()).unwrap();
    let programs: Vec<String> = tc_programs()
        .into_iter()
        .filter(|p| p != "tc_ingress_capture")
        .collect();
    let mut maps = egress_object_maps();
    maps.insert("TC_PROGS".into(), def(3, 4, 4, 16));
    let errors = Desired::build(&p, SHA_A, &programs, &maps).expect_err("no tc_ingress_capture");
    let text = errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("packet_copy 'revive': interface 'eth1' runs its ingress at the tc hook")
            && text.contains("no tc_ingress_capture"),
        "{text}"
    );
}
