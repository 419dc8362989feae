//! Interface rules: the chain list resolves, has no repeats, and fits;
//! what an egress action needs from the interface's ingress chains.

use super::Ctx;
use crate::model::{Action, Hook, IngressHook, Policy, XdpMode};
use crate::suggest::hint_for_unknown;
use emptcp_common::MAX_CHAINS_PER_IFACE;

pub(super) fn check(ctx: &mut Ctx<'_>) {
    let policy = ctx.policy();
    let defined = || policy.chains.iter().map(|c| c.name.as_str());
    for (i, iface) in policy.interfaces.iter().enumerate() {
        let name = &iface.name;
        let list = ctx.interface(i).get("chains");
        if iface.chains.is_empty() {
            ctx.report(
                list,
                format!("interface '{name}' lists no chains"),
                "list the chains to run on it, e.g. `chains: [count-mptcp]`, or remove the interface",
            );
        }
        if iface.ingress_hook == IngressHook::Tc && iface.xdp_mode != XdpMode::Auto {
            ctx.report(
                ctx.interface(i).get("xdp_mode"),
                format!(
                    "interface '{name}' sets xdp_mode {} but runs its ingress chains at the tc hook (ingress_hook: tc)",
                    iface.xdp_mode.as_str()
                ),
                "xdp_mode says how the XDP entry is attached, and a tc interface has none: remove xdp_mode, or set `ingress_hook: xdp`",
            );
        }
        if iface.chains.len() > MAX_CHAINS_PER_IFACE {
            ctx.report(
                list.item(MAX_CHAINS_PER_IFACE),
                format!(
                    "interface '{name}' lists {} chains, at most {MAX_CHAINS_PER_IFACE} fit",
                    iface.chains.len()
                ),
                "merge chains, or move the rarely matching ones to a broader chain",
            );
        }
        for (j, chain) in iface.chains.iter().enumerate() {
            if iface.chains[..j].contains(chain) {
                ctx.report(
                    list.item(j),
                    format!("chain '{chain}' is listed twice on interface '{name}'"),
                    "a chain runs at most once per interface: remove the second one",
                );
            } else if !defined().any(|d| d == chain) {
                ctx.report(
                    list.item(j),
                    format!("interface '{name}' refers to unknown chain '{chain}'"),
                    hint_for_unknown(chain, "chain", defined()),
                );
            } else if egress_window_without_record_flow(policy, &iface.chains, chain) {
                ctx.report(
                    list.item(j),
                    format!(
                        "egress chain '{chain}' uses set_window on interface '{name}', whose ingress chains have no record_flow"
                    ),
                    format!(
                        "egress set_window scales the window only once it knows both SYNs carried window scale, and on subflows this host opens only the peer's SYN-ACK tells, which record_flow sees on ingress: list on '{name}' an ingress chain with record_flow that selects the same flows as '{chain}' (e.g. `{{name: track, match: <the match of {chain}>, actions: [record_flow]}}`)"
                    ),
                );
            }
        }
    }
}

/// Chain `chain` (listed on an interface with the chains `listed`) is an
/// egress chain using set_window, and none of the interface's ingress
/// chains records flows. Without record_flow the egress action passes
/// every segment of a subflow the host opened (counted
/// `window_scale_unknown`): the policy would silently cap nothing.
fn egress_window_without_record_flow(policy: &Policy, listed: &[String], chain: &str) -> bool {
    let by_name = |n: &str| policy.chains.iter().find(|c| c.name == n);
    let Some(c) = by_name(chain) else {
        return false;
    };
    let window = c
        .actions
        .iter()
        .any(|a| matches!(a, Action::SetWindow { .. }));
    if c.hook != Hook::Egress || !window {
        return false;
    }
    !listed.iter().filter_map(|n| by_name(n)).any(|i| {
        i.hook == Hook::Ingress && i.actions.iter().any(|a| matches!(a, Action::RecordFlow))
    })
}

#[cfg(test)]
mod tests {
    use crate::validate::test_support::*;

    #[test]
    fn the_tc_ingress_hook_takes_no_xdp_mode() {
        let tc = BASE.replace("    chains: [c1]", "    ingress_hook: tc\n    chains: [c1]");
        assert_eq!(errors(&tc), vec![]);
        assert_eq!(
            errors(&tc.replace("ingress_hook: tc", "ingress_hook: tc\n    xdp_mode: auto")),
            vec![]
        );
        let e = one_error(
            &tc.replace("ingress_hook: tc", "ingress_hook: tc\n    xdp_mode: native"),
            "interface 'eth0' sets xdp_mode native but runs its ingress chains at the tc hook",
        );
        assert_at(&e, 5, 15);
        one_error(
            &BASE.replace(
                "    chains: [c1]",
                "    ingress_hook: bpf\n    chains: [c1]",
            ),
            "ingress_hook",
        );
    }

    #[test]
    fn dangling_chain_reference_suggests() {
        let text = BASE.replace("[c1]", "[c2]");
        let e = one_error(&text, "interface 'eth0' refers to unknown chain 'c2'");
        assert_at(&e, 4, 14);
        assert_eq!(e.hint.as_deref(), Some("did you mean 'c1'?"));
    }

    #[test]
    fn chain_listed_twice() {
        let e = one_error(
            &BASE.replace("[c1]", "[c1, c1]"),
            "chain 'c1' is listed twice on interface 'eth0'",
        );
        assert_at(&e, 4, 18);
    }

    const EGRESS_WINDOW: &str = "\
version: 1
interfaces:
  - name: eth0
    chains: [in, out]
chains:
  - name: in
    actions: [record_flow]
  - name: out
    hook: egress
    actions: [count, set_window: {bytes: 64KiB}]
";

    #[test]
    fn egress_set_window_needs_record_flow_on_the_interfaces_ingress() {
        assert_eq!(errors(EGRESS_WINDOW), vec![]);
        let text = EGRESS_WINDOW.replace("[record_flow]", "[count]");
        let e = one_error(
            &text,
            "egress chain 'out' uses set_window on interface 'eth0', whose ingress chains have no record_flow",
        );
        assert_at(&e, 4, 18);
        let hint = e.hint.as_deref().unwrap();
        assert!(hint.contains("an ingress chain with record_flow"), "{hint}");
        // The ingress chain must be on the same interface.
        let elsewhere = EGRESS_WINDOW.replace(
            "    chains: [in, out]\n",
            "    chains: [out]\n  - name: eth1\n    chains: [in]\n",
        );
        one_error(
            &elsewhere,
            "egress chain 'out' uses set_window on interface 'eth0'",
        );
        // An egress chain without set_window needs nothing.
        let no_window = text.replace(", set_window: {bytes: 64KiB}", "");
        assert_eq!(errors(&no_window), vec![]);
    }

    #[test]
    fn no_chains() {
        let e = one_error(
            &BASE.replace("[c1]", "[]"),
            "interface 'eth0' lists no chains",
        );
        assert_at(&e, 4, 5);
    }

    #[test]
    fn too_many_chains_on_an_interface() {
        let names: Vec<String> = (0..9).map(|i| format!("c{i}")).collect();
        let mut text = format!(
            "version: 1\ninterfaces:\n  - name: eth0\n    chains: [{}]\nchains:\n",
            names.join(", ")
        );
        for n in &names {
            text.push_str(&format!("  - {{name: {n}, actions: [count]}}\n"));
        }
        let e = one_error(&text, "interface 'eth0' lists 9 chains, at most 8 fit");
        assert_at(&e, 4, 46);
    }
}
