//! The tail-call slot phase: each action program in its slot of `PROGS`,
//! the ingress capture in its own, the egress programs in `EGRESS_PROGS`,
//! the TC ingress variants and the TC capture in `TC_PROGS`; slots no
//! program wants are cleared.
use std::collections::{BTreeMap, BTreeSet};

use emptcp_common::{Action, EGRESS_SLOTS};

use super::{Step, Steps, object::Load};
use crate::{desired::Desired, observe::Observed};

/// Sets every slot whose program is not the pinned program of its name
/// (or is loaded anew by the plan), clears the rest.
pub(super) fn fill_tail_call_slots(
    d: &Desired,
    o: &Observed,
    load: &Load,
    retired: &BTreeSet<&str>,
    s: &mut Steps,
) {
    let ingress_slots = Action::ALL
        .iter()
        .map(|a| (a.name(), *a as u32))
        .chain(emptcp_common::PROGS_EXTRA);
    let fill = SlotFill {
        d,
        o,
        load,
        retired,
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
        s,
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
        s,
    );
    let tc_slots = Action::ALL
        .iter()
        .map(|a| (emptcp_common::tc_program(*a), *a as u32))
        .chain([
            (
                emptcp_common::TC_RECORD_SETUP,
                emptcp_common::RECORD_SETUP_SLOT,
            ),
            (
                emptcp_common::TC_INGRESS_CAPTURE,
                emptcp_common::INGRESS_CAPTURE_SLOT,
            ),
        ]);
    fill.steps(
        "TC_PROGS",
        tc_slots,
        &o.tc_prog_slots,
        |program, slot, before| Step::SetTcSlot {
            program: program.into(),
            slot,
            before,
        },
        |slot, before| Step::ClearTcSlot { slot, before },
        s,
    );
}

/// What the tail-call slot steps of one program array depend on.
struct SlotFill<'a> {
    d: &'a Desired,
    o: &'a Observed,
    load: &'a Load,
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
            if self.load.loads(program) || before.is_none() || before != pinned {
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
