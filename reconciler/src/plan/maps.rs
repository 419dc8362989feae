//! The map phase: which pinned maps the object reuses, which it creates,
//! which are replaced by a new definition (moved aside as `old-NAME`, their
//! entries copied when key, value and type allow) and which are unpinned.
use std::collections::{BTreeMap, BTreeSet};

use super::{APPEND_ONLY_MAPS, CONFIG_MAPS, PlanError, PlanOptions, Planning, Step, Steps};
use crate::{
    desired::Desired,
    layout::{OLD_PREFIX, layout_record_name},
    object::{BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, MapDef},
    observe::Observed,
};

/// The maps the next load creates, and the pinned ones it replaces.
pub(super) struct MapChanges<'d> {
    /// Maps whose definition changed: moved aside, recreated by the load.
    pub retired: BTreeSet<&'d str>,
    /// Maps the load creates (missing or retired).
    pub creates: Vec<String>,
}

/// Every map of the object whose pin is missing is created; one whose
/// definition changed is retired and recreated, its entries migrated when
/// [`migratable`], refused ([`PlanError::StateLoss`]) when it holds
/// datapath state that cannot be migrated and state loss is not allowed.
pub(super) fn replace_changed_maps<'d>(
    d: &'d Desired,
    o: &Observed,
    opts: PlanOptions,
    p: &mut Planning,
) -> MapChanges<'d> {
    let mut retired: BTreeSet<&str> = BTreeSet::new();
    let mut creates = Vec::new();
    for (name, want) in &d.maps {
        match o.maps.get(name) {
            None => creates.push(name.clone()),
            Some(have) if have.reusable_as(want) => {}
            Some(have) => {
                let config = CONFIG_MAPS.contains(&name.as_str());
                // An interrupted migration (old-NAME not copied yet) is
                // finished first: retiring the map again pins it over
                // old-NAME, the only copy of the entries not yet copied.
                if let Some(old) = o.maps.get(&format!("{OLD_PREFIX}{name}"))
                    && !config
                {
                    if migratable(name, old, have) {
                        p.steps.retire.push(Step::CopyMap { name: name.clone() });
                    } else if !opts.allow_state_loss {
                        p.errors
                            .push(PlanError::UnfinishedMigration { name: name.clone() });
                        continue;
                    }
                }
                let migrate = !config && migratable(name, have, want);
                if !config && !migrate && !opts.allow_state_loss {
                    p.errors.push(PlanError::StateLoss {
                        name: name.clone(),
                        before: *have,
                        after: *want,
                    });
                    continue;
                }
                retired.insert(name);
                creates.push(name.clone());
                p.steps.retire.push(Step::RetireMap {
                    name: name.clone(),
                    before: *have,
                    after: *want,
                    migrate,
                });
                if migrate {
                    p.steps.copy.push(Step::CopyMap { name: name.clone() });
                }
                p.steps
                    .unpin
                    .push(unpin_map(&format!("{OLD_PREFIX}{name}")));
            }
        }
    }
    MapChanges { retired, creates }
}

/// Leftovers of an interrupted migration (`old-NAME` pins): the copy is
/// finished and the old map unpinned.
pub(super) fn finish_interrupted_migrations(
    d: &Desired,
    o: &Observed,
    retired: &BTreeSet<&str>,
    s: &mut Steps,
) {
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
}

/// Pinned maps the object no longer has are unpinned.
pub(super) fn unpin_maps_not_in_object(d: &Desired, o: &Observed, s: &mut Steps) {
    for name in o.maps.keys() {
        if !name.starts_with(OLD_PREFIX) && !d.maps.contains_key(name) {
            s.unpin.push(unpin_map(name));
        }
    }
}

pub(super) fn migratable(name: &str, before: &MapDef, after: &MapDef) -> bool {
    let value_ok = before.value_size == after.value_size
        || (APPEND_ONLY_MAPS.contains(&name) && before.value_size < after.value_size);
    layouts_carry_over(name, before, after)
        && before.map_type == after.map_type
        && before.key_size == after.key_size
        && value_ok
        && before.flags == after.flags
        && matches!(
            after.map_type,
            BPF_MAP_TYPE_HASH | BPF_MAP_TYPE_ARRAY | BPF_MAP_TYPE_LRU_HASH
        )
}

/// Whether entries written with `before`'s layout read right with
/// `after`'s: the same fingerprint, or (a map that grows by appending)
/// `after`'s layout cut to `before`'s value size has `before`'s
/// fingerprint. Unknown on either side: as the sizes allow.
fn layouts_carry_over(name: &str, before: &MapDef, after: &MapDef) -> bool {
    let (Some(was), Some(will)) = (before.layout, after.layout) else {
        return true;
    };
    was == will
        || (APPEND_ONLY_MAPS.contains(&name)
            && before.value_size < after.value_size
            && emptcp_common::layouts::map_layout(name).is_some_and(|l| {
                l.fingerprint() == will
                    && l.fingerprint_of_value_prefix(before.value_size as usize) == was
            }))
}

/// Layout records: every map of the object with a layout fingerprint gets
/// its record (a second pin, `layouts/<MAP>@<fingerprint>`) once the load
/// created it, or when the pinned map has none (a root from before
/// records, or a crash between load and record); every other record (of a
/// replaced or removed map, or a fingerprint no map has) is unpinned.
pub(super) fn record_layouts(d: &Desired, o: &Observed, creates: &[String], p: &mut Planning) {
    let mut keep = BTreeSet::new();
    let mut records = BTreeMap::new();
    let mut assumed = Vec::new();
    for (name, want) in &d.maps {
        let Some(fingerprint) = want.layout else {
            continue;
        };
        let record = layout_record_name(name, fingerprint);
        let have = o.maps.get(name);
        // Observe sets a map's layout only from a record bound to it.
        let recorded = have.and_then(|m| m.layout) == Some(fingerprint);
        if creates.contains(name) || !recorded {
            records.insert(name.clone(), fingerprint);
        }
        if !creates.contains(name) && have.is_some_and(|m| m.layout.is_none()) {
            assumed.push(name.as_str());
        }
        keep.insert(record);
    }
    if !assumed.is_empty() {
        p.notes.push(format!(
            "map(s) {} have no layout record (a root written by a build before records, or an apply stopped between load and record): reused as their sizes allow, and recorded now",
            assumed.join(", ")
        ));
    }
    if !records.is_empty() {
        p.steps.records.push(Step::RecordLayouts { records });
    }
    for record in &o.layout_records {
        if !keep.contains(record) {
            p.steps.unpin.push(Step::Unpin {
                path: format!("layouts/{record}"),
                what: "layout record of a map replaced or no longer in the object".into(),
            });
        }
    }
}

pub(super) fn unpin_map(name: &str) -> Step {
    Step::Unpin {
        path: format!("maps/{name}"),
        what: if name.starts_with(OLD_PREFIX) {
            "map replaced by a new definition".into()
        } else {
            "map no longer in the object".into()
        },
    }
}
