//! Which programs of the object the desired state runs (the only ones
//! apply loads).
use std::collections::{BTreeMap, BTreeSet};

use emptcp_common::Action as Slot;

use super::DesiredIface;
use crate::layout::TcHook;

/// The programs of the object the desired state runs, in the object's
/// order: the entry of each hook an interface uses, the program of each
/// action of the policy's chains, and what those programs hand packets to
/// (`record_flow_setup` behind `record_flow`, the egress capture in front
/// of every egress chain). Only these are loaded: the verifier's time is
/// most of a load's, and a program no packet reaches costs it for nothing.
pub(super) fn used_programs(
    interfaces: &BTreeMap<String, DesiredIface>,
    chain_programs: &BTreeMap<&str, Vec<&str>>,
    object: &[String],
) -> Vec<String> {
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let any = |f: fn(&DesiredIface) -> bool| interfaces.values().any(f);
    if any(DesiredIface::wants_xdp) {
        used.insert(crate::object::ENTRY_PROGRAM);
    }
    if any(|i| i.capture && i.ingress_hook == super::IngressHook::Xdp) {
        used.insert(emptcp_common::INGRESS_CAPTURE);
    }
    if any(|i| i.capture && i.ingress_hook == super::IngressHook::Tc) {
        used.insert(emptcp_common::TC_INGRESS_CAPTURE);
    }
    if any(|i| i.wants_tc(TcHook::Egress)) {
        used.insert(crate::object::EGRESS_ENTRY);
    }
    if any(|i| i.wants_tc(TcHook::Ingress)) {
        used.insert(crate::object::INGRESS_RECOVER);
    }
    if any(|i| i.wants_tc(TcHook::IngressChains)) {
        used.insert(emptcp_common::TC_ENTRY);
    }
    if any(|i| !i.egress_chains.is_empty()) {
        used.insert(emptcp_common::EGRESS_CAPTURE);
    }
    let programs_of = |c: &String| chain_programs.get(c.as_str()).into_iter().flatten();
    for i in interfaces.values() {
        for program in i.egress_chains.iter().flat_map(programs_of) {
            used.insert(program);
        }
        let on_tc = i.ingress_hook == super::IngressHook::Tc;
        for program in i.chains.iter().flat_map(programs_of) {
            // On TC the same action runs as its `tc_` variant.
            let (program, setup) = match Slot::ALL.iter().find(|a| a.name() == *program) {
                Some(a) if on_tc => (
                    emptcp_common::tc_program(*a),
                    emptcp_common::TC_RECORD_SETUP,
                ),
                _ => (*program, emptcp_common::RECORD_SETUP),
            };
            used.insert(program);
            if program.ends_with(Slot::RecordFlow.name()) {
                used.insert(setup);
            }
        }
    }
    object
        .iter()
        .filter(|p| used.contains(p.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{desired::Desired, object::Object, policy};

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
        // The same chain at TC ingress: the tc_ variants, no XDP entry.
        let mut after_gro = programs_of("after-gro.yaml");
        after_gro.sort();
        assert_eq!(
            after_gro,
            [
                "egress_entry",
                "ingress_recover",
                "tc_count",
                "tc_entry",
                "tc_record_flow",
                "tc_record_flow_setup",
                "tc_recover_add_addr",
                "tc_strip_add_addr",
            ]
        );
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
            unused.iter().all(|p| p.contains("set_")
                || p.as_str() == "egress_count"
                || p.starts_with(emptcp_common::TC_PREFIX)),
            "full.yaml leaves out {unused:?}"
        );
    }
}
