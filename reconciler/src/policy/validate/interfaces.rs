//! Interface rules: the chain list resolves, has no repeats, and fits.

use super::Ctx;
use crate::policy::suggest::hint_for_unknown;
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
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::validate::test_support::*;

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
