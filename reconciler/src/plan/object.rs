//! The object phase: whether the eBPF object is loaded again (decided by
//! what the pinned programs are, read from the programs themselves), which
//! pinned programs of an older object go, and whether META is written.
use std::collections::{BTreeMap, BTreeSet};

use emptcp_common::LAYOUT_VERSION;

use super::{PlanError, Planning, Step, Steps};
use crate::{desired::Desired, observe::Observed};

/// What the plan's load step loads: nothing (no step), or the programs it
/// verifies and pins (their slots and links then take the new programs).
#[derive(Debug, Default)]
pub(super) struct Load {
    /// A load step is planned (it may load no program and only create maps).
    pub planned: bool,
    pub programs: BTreeSet<String>,
}

impl Load {
    /// The step loads `program` anew.
    pub fn loads(&self, program: &str) -> bool {
        self.programs.contains(program)
    }
}

/// Plans the load when a map must be created or a program the policy uses
/// is not pinned as the desired object's. Whether a program is pinned right
/// is decided by what the pins hold (read from the programs), not by META:
/// META says what the last finished apply converged to, and a load killed
/// after pinning leaves pins that disagree with it. A new map or a pin of
/// another object (an upgrade, an interrupted load, a swap by hand) loads
/// every program the policy uses, so all of them use the same maps and
/// object; a program the policy starts to use is loaded alone, beside the
/// pinned ones (the same object: the same maps, by their pins).
pub(super) fn load_unless_pinned(
    d: &Desired,
    o: &Observed,
    creates: Vec<String>,
    p: &mut Planning,
) -> Load {
    let pins = pinned_programs(d, o, &mut p.notes);
    let programs: BTreeSet<String> = if pins.stale || !creates.is_empty() {
        d.programs.iter().cloned().collect()
    } else {
        pins.missing.into_iter().collect()
    };
    let planned = !programs.is_empty() || !creates.is_empty();
    if planned {
        p.steps.load.push(Step::LoadObject {
            object_sha256: d.object_sha256.clone(),
            creates_maps: creates,
            max_entries: d.map_overrides.clone(),
            programs: d
                .programs
                .iter()
                .filter(|n| programs.contains(*n))
                .cloned()
                .collect(),
        });
    }
    Load { planned, programs }
}

/// Pinned programs the desired state does not run (an older object's, or
/// one no chain or interface of the policy uses any more) are unpinned.
pub(super) fn unpin_programs_not_used(d: &Desired, o: &Observed, s: &mut Steps) {
    for name in o.programs.keys() {
        if !d.programs.contains(name) {
            s.unpin.push(Step::Unpin {
                path: format!("progs/{name}"),
                what: "program the policy does not use".into(),
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
pub(super) fn write_meta_unless_current(d: &Desired, o: &Observed, load: &Load, s: &mut Steps) {
    let meta_ok = o.meta.as_ref().is_some_and(|m| {
        m.object_sha256 == d.object_sha256
            && m.layout_version == LAYOUT_VERSION
            && (o.netns == 0 || m.netns == o.netns)
    });
    if load.planned || !meta_ok {
        s.meta.push(Step::WriteMeta {
            object_sha256: d.object_sha256.clone(),
        });
    }
}

/// The pins of the programs the policy uses: which are missing, and
/// whether one holds another object's program (or another program).
struct PinnedPrograms {
    missing: Vec<String>,
    stale: bool,
}

/// Reads the pin of every program of the desired state: a pin that holds
/// a program of another object than the desired one, or another program
/// of it, is stale; pins that disagree with META are what an interrupted
/// load leaves (it pinned programs of the object it was loading) or what a
/// hand-made replacement looks like: they are noted, one line per object
/// they hold, and the object is loaded again.
fn pinned_programs(d: &Desired, o: &Observed, notes: &mut Vec<String>) -> PinnedPrograms {
    use crate::identity::object_id;
    let want = object_id(&d.object_sha256);
    let recorded = o.recorded_object().map(object_id);
    let mut pins = PinnedPrograms {
        missing: Vec::new(),
        stale: false,
    };
    let mut disagree: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for name in &d.programs {
        let Some(pin) = o.programs.get(name) else {
            pins.missing.push(name.clone());
            continue;
        };
        let have = o.object_of(pin.id);
        // The right object but another of its programs: a swap by hand.
        pins.stale |= have != Some(want.as_str()) || !pin.is_named(name);
        if !pin.is_named(name) {
            notes.push(format!(
                "progs/{name} holds program {} named {:?}: the object is loaded again",
                pin.id, pin.kernel_name
            ));
        }
        // Bound to a map that is no longer the pinned one (a load killed
        // or failed while the object's maps were replaced): it would keep
        // reading and writing the retired map while the others use the
        // new one.
        if !pin.unpinned_maps.is_empty() {
            pins.stale = true;
            notes.push(format!(
                "progs/{name} (program {}) uses maps that are not the pinned ones ({}): \
                 the object is loaded again",
                pin.id,
                pin.unpinned_maps.join(", ")
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
    pins
}
