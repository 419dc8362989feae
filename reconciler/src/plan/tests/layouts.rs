//! Layout records: a pinned map is reused only when the fingerprint
//! recorded at its creation matches the object's, whatever its sizes say.
use super::*;

fn allow_state_loss() -> PlanOptions {
    PlanOptions {
        allow_state_loss: true,
        ..Default::default()
    }
}

/// Converged on BASE, then FLOWS' record replaced by one of another
/// layout of the same sizes (a build that swapped two fields).
fn flows_recorded_with(fingerprint: u64) -> Observed {
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    let old = crate::layout::layout_record_name("FLOWS", FLOWS_LAYOUT);
    o.layout_records.retain(|r| *r != old);
    o.layout_records
        .push(crate::layout::layout_record_name("FLOWS", fingerprint));
    o.maps.get_mut("FLOWS").unwrap().layout = Some(fingerprint);
    o
}

#[test]
fn a_fresh_install_records_every_layout_once() {
    let mut o = fresh();
    let p = converge(&desired(BASE), &mut o, PlanOptions::default());
    let records: Vec<_> = p
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::RecordLayouts { records } => Some(records.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        records,
        [BTreeMap::from([
            ("CHAINS".to_string(), CHAINS_LAYOUT),
            ("FLOWS".to_string(), FLOWS_LAYOUT)
        ])]
    );
    assert_eq!(
        o.layout_records,
        ["CHAINS@000000000000c4a1", "FLOWS@000000000000f105"]
    );
    assert!(
        !p.notes.iter().any(|n| n.contains("layout record")),
        "{:?}",
        p.notes
    );
}

#[test]
fn a_state_map_of_another_layout_is_not_reused_though_its_sizes_match() {
    let mut o = flows_recorded_with(0xbad);
    let errs = plan(&desired(BASE), &o, PlanOptions::default()).unwrap_err();
    assert!(
        matches!(&errs[0], PlanError::StateLoss { name, before, after }
            if name == "FLOWS" && before.layout == Some(0xbad) && after.layout == Some(FLOWS_LAYOUT)),
        "{errs:?}"
    );
    let p = converge(&desired(BASE), &mut o, allow_state_loss());
    assert!(
        p.steps
            .iter()
            .any(|s| matches!(s, Step::RetireMap { name, migrate: false, .. } if name == "FLOWS"))
    );
    // The old record is unpinned with the old map; the new one recorded.
    for path in ["maps/old-FLOWS", "layouts/FLOWS@0000000000000bad"] {
        assert!(
            p.steps
                .iter()
                .any(|s| matches!(s, Step::Unpin { path: x, .. } if x == path)),
            "{path}: {:#?}",
            p.steps
        );
    }
    assert_eq!(o.maps["FLOWS"].layout, Some(FLOWS_LAYOUT));
}

#[test]
fn a_config_map_of_another_layout_is_recreated_without_state_loss() {
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    o.maps.get_mut("CHAINS").unwrap().layout = Some(0xbad);
    let p = converge(&desired(BASE), &mut o, PlanOptions::default());
    assert!(
        p.steps
            .iter()
            .any(|s| matches!(s, Step::RetireMap { name, migrate: false, .. } if name == "CHAINS"))
    );
}

#[test]
fn an_unrecorded_map_of_the_right_sizes_is_kept_and_recorded() {
    // A root written before layout records: no record, no fingerprint.
    let mut o = fresh();
    converge(&desired(BASE), &mut o, PlanOptions::default());
    o.layout_records.clear();
    for m in o.maps.values_mut() {
        m.layout = None;
    }
    let p = converge(&desired(BASE), &mut o, PlanOptions::default());
    assert_eq!(kinds(&p), ["record_layouts"]);
    assert!(
        p.notes
            .iter()
            .any(|n| n.starts_with("map(s) CHAINS, FLOWS have no layout record")),
        "{:?}",
        p.notes
    );
}

#[test]
fn a_crash_between_the_load_and_the_record_does_not_replace_the_new_map_again() {
    let mut o = flows_recorded_with(0xbad);
    let p = plan(&desired(BASE), &o, allow_state_loss()).unwrap();
    let load = p
        .steps
        .iter()
        .position(|s| matches!(s, Step::LoadObject { .. }))
        .unwrap();
    let prefix = Plan {
        steps: p.steps[..=load].to_vec(),
        ..p.clone()
    };
    simulate(&prefix, &desired(BASE), &mut o);
    // The new FLOWS has no record, the old record stays with old-FLOWS:
    // the next plan keeps the new map and finishes without a copy.
    let next = converge(&desired(BASE), &mut o, PlanOptions::default());
    let k = kinds(&next);
    assert!(!k.contains(&"retire_map".to_string()), "{k:?}");
    assert!(!k.contains(&"copy_map".to_string()), "{k:?}");
    assert!(k.contains(&"record_layouts".to_string()), "{k:?}");
}

#[test]
fn a_map_grown_by_appending_fields_is_migrated() {
    // The real SUBFLOWS layout grew from 104 to 112 bytes by appending.
    let l = emptcp_common::layouts::map_layout("SUBFLOWS").unwrap();
    let now = with_layout(def(9, 40, 112, 1024), l.fingerprint());
    let appended = with_layout(def(9, 40, 104, 1024), l.fingerprint_of_value_prefix(104));
    assert!(crate::plan::maps::migratable("SUBFLOWS", &appended, &now));
    // Same sizes, but not the prefix of the new layout: not migratable.
    let rearranged = with_layout(def(9, 40, 104, 1024), 0xbad);
    assert!(!crate::plan::maps::migratable(
        "SUBFLOWS",
        &rearranged,
        &now
    ));
    // Unrecorded: as the sizes allow.
    assert!(crate::plan::maps::migratable(
        "SUBFLOWS",
        &def(9, 40, 104, 1024),
        &now
    ));
}
