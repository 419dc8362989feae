//! The object phase: whether the eBPF object is loaded again (decided by
//! what the pinned programs are, read from the programs themselves), which
//! pinned programs of an older object go, and whether META is written.
use std::collections::BTreeMap;

use emptcp_common::LAYOUT_VERSION;

use super::{PlanError, Planning, Step, Steps};
use crate::{desired::Desired, observe::Observed};

/// Plans the load when a program pin disagrees with the desired object or a
/// map must be created; returns whether it is loaded. Whether the object
/// must be loaded is decided by what the pins hold (read from the
/// programs), not by META: META says what the last finished apply
/// converged to, and a load killed after pinning leaves pins that disagree
/// with it. A layout change comes with a new object.
pub(super) fn load_unless_pinned(
    d: &Desired,
    o: &Observed,
    creates: Vec<String>,
    p: &mut Planning,
) -> bool {
    let progs_ok = pins_hold_the_object(d, o, &mut p.notes);
    let need_load = !progs_ok || !creates.is_empty();
    if need_load {
        p.steps.load.push(Step::LoadObject {
            object_sha256: d.object_sha256.clone(),
            creates_maps: creates,
            max_entries: d.map_overrides.clone(),
        });
    }
    need_load
}

/// Pinned programs the object does not have (an older object's) are
/// unpinned.
pub(super) fn unpin_programs_not_in_object(d: &Desired, o: &Observed, s: &mut Steps) {
    for name in o.programs.keys() {
        if !d.programs.contains(name) {
            s.unpin.push(Step::Unpin {
                path: format!("progs/{name}"),
                what: "program of an older object".into(),
            });
        }
    }
}

/// A root whose META names another network namespace that still exists is
/// refused before anything is planned: both would write the same maps keyed
/// by ifindex and 4-tuple. One whose namespace is gone is taken over (a
/// note says so); one that names none (written before the namespace was
/// recorded) is claimed by the META write.
pub(super) fn one_namespace_per_root(o: &Observed, p: &mut Planning) -> Result<(), Vec<PlanError>> {
    let Some(m) = &o.meta else {
        return Ok(());
    };
    if m.netns == 0 || o.netns == 0 || m.netns == o.netns {
        return Ok(());
    }
    if m.netns_exists {
        return Err(vec![PlanError::OtherNamespace {
            owner: m.netns,
            current: o.netns,
        }]);
    }
    p.notes.push(format!(
        "this root served network namespace net:[{}], which no longer exists; net:[{}] takes it over",
        m.netns, o.netns
    ));
    Ok(())
}

/// META is written last when the object was loaded or META records
/// another object, layout or network namespace.
pub(super) fn write_meta_unless_current(d: &Desired, o: &Observed, need_load: bool, s: &mut Steps) {
    let meta_ok = o.meta.as_ref().is_some_and(|m| {
        m.object_sha256 == d.object_sha256
            && m.layout_version == LAYOUT_VERSION
            && (o.netns == 0 || m.netns == o.netns)
    });
    if need_load || !meta_ok {
        s.meta.push(Step::WriteMeta {
            object_sha256: d.object_sha256.clone(),
        });
    }
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
