//! packet_copy rules: references resolve, the chain runs on the interface,
//! and the trigger and option are sane.

use super::Ctx;
use crate::model::{PacketCopy, Send, Trigger};
use crate::suggest::hint_for_unknown;
use crate::units::Duration;
use std::time::Duration as StdDuration;

/// Bounds of `subflow_idle` and `other_subflows_idle`: below a millisecond is not idleness, above an
/// hour the subflow has long been closed by the peer.
const MIN_IDLE: StdDuration = StdDuration::from_millis(1);
const MAX_IDLE: StdDuration = StdDuration::from_secs(3600);

pub(super) fn check(ctx: &mut Ctx<'_>) {
    for (i, rule) in ctx.policy().packet_copy.iter().enumerate() {
        check_refs(ctx, i, rule);
        check_trigger(ctx, i, rule);
        check_send(ctx, i, rule);
    }
}

fn check_refs(ctx: &mut Ctx<'_>, i: usize, rule: &PacketCopy) {
    let policy = ctx.policy();
    let spot = ctx.packet_copy(i);
    let name = &rule.name;
    let iface = policy.interface(&rule.interface);
    if iface.is_none() {
        let defined = policy.interfaces.iter().map(|i| i.name.as_str());
        ctx.report(
            spot.get("interface"),
            format!(
                "packet_copy '{name}' refers to unknown interface '{}'",
                rule.interface
            ),
            hint_for_unknown(&rule.interface, "interface", defined),
        );
    }
    if policy.chain(&rule.chain).is_none() {
        let defined = policy.chains.iter().map(|c| c.name.as_str());
        ctx.report(
            spot.get("chain"),
            format!(
                "packet_copy '{name}' refers to unknown chain '{}'",
                rule.chain
            ),
            hint_for_unknown(&rule.chain, "chain", defined),
        );
    } else if let Some(iface) = iface
        && !iface.chains.contains(&rule.chain)
    {
        ctx.report(
            spot.get("chain"),
            format!(
                "packet_copy '{name}': chain '{}' is not listed on interface '{}'",
                rule.chain, iface.name
            ),
            format!(
                "the rule watches flows the chain matches on that interface: add '{}' to its chains ({})",
                rule.chain,
                iface.chains.join(", ")
            ),
        );
    }
}

fn check_trigger(ctx: &mut Ctx<'_>, i: usize, rule: &PacketCopy) {
    let when = ctx.packet_copy(i).get("when");
    let (field, idle) = match rule.when {
        Trigger::SubflowIdle(idle) => ("subflow_idle", idle),
        Trigger::OtherSubflowsIdle(idle) => ("other_subflows_idle", idle),
        Trigger::FlowBytesAt(size) => {
            if size.bytes() == 0 {
                ctx.report(
                    when.get("flow_bytes_at"),
                    format!(
                        "packet_copy '{}': flow_bytes_at 0B would fire for every flow at once",
                        rule.name
                    ),
                    "give the size a flow must reach, e.g. 1MiB",
                );
            }
            return;
        }
    };
    if !(MIN_IDLE..=MAX_IDLE).contains(&idle.get()) {
        ctx.report(
            when.get(field),
            format!(
                "packet_copy '{}': {field} {idle} is out of range",
                rule.name
            ),
            format!(
                "{field} is {} to {}",
                Duration(MIN_IDLE),
                Duration(MAX_IDLE)
            ),
        );
    }
}

fn check_send(ctx: &mut Ctx<'_>, i: usize, rule: &PacketCopy) {
    let spot = ctx.packet_copy(i).get("send").get("add_addr");
    let name = &rule.name;
    if let Send::AddAddr { id, port, .. } = rule.send {
        if id == 0 {
            ctx.report(
                spot.get("id"),
                format!("packet_copy '{name}': add_addr id 0 is reserved for the initial subflow's address"),
                "use an address id from 1 to 255",
            );
        }
        if port == Some(0) {
            ctx.report(
                spot.get("port"),
                format!("packet_copy '{name}': port 0 is not a valid port"),
                "use a port from 1 to 65535, or omit port",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::test_support::*;

    fn with_rule(rule: &str) -> String {
        format!("{BASE}packet_copy:\n  - name: r\n{rule}")
    }

    const OK: &str = "    interface: eth0\n    chain: c1\n    when: {subflow_idle: 500ms}\n    send: {mp_prio: {backup: false}}\n";

    #[test]
    fn a_valid_rule() {
        assert_eq!(errors(&with_rule(OK)), vec![]);
        let add = OK.replace(
            "{mp_prio: {backup: false}}",
            "{add_addr: {address: 192.0.2.2, id: 2, port: 5201}}",
        );
        assert_eq!(errors(&with_rule(&add)), vec![]);
    }

    #[test]
    fn dangling_interface_and_chain() {
        let text = with_rule(&OK.replace("eth0", "eth1").replace("chain: c1", "chain: c9"));
        let e = one_error(&text, "refers to unknown interface 'eth1'");
        assert_at(&e, 10, 16);
        assert_eq!(e.hint.as_deref(), Some("did you mean 'eth0'?"));
        let e = one_error(&text, "refers to unknown chain 'c9'");
        assert_at(&e, 11, 12);
    }

    /// The capture runs on either ingress hook (`tc_ingress_capture` at
    /// TC), and AF_XDP sends without an XDP program.
    #[test]
    fn packet_copy_on_a_tc_ingress_interface() {
        let base = BASE.replace("    chains: [c1]", "    ingress_hook: tc\n    chains: [c1]");
        let text = format!("{base}packet_copy:\n  - name: r\n{OK}");
        assert_eq!(errors(&text), vec![]);
    }

    #[test]
    fn chain_must_run_on_the_interface() {
        let base = format!("{BASE}  - name: c2\n    actions: [count]\n");
        let text = format!(
            "{base}packet_copy:\n  - name: r\n{}",
            OK.replace("chain: c1", "chain: c2")
        );
        let e = one_error(&text, "chain 'c2' is not listed on interface 'eth0'");
        assert_at(&e, 13, 12);
    }

    #[test]
    fn add_addr_id_and_port() {
        let text = with_rule(&OK.replace(
            "{mp_prio: {backup: false}}",
            "{add_addr: {address: 192.0.2.2, id: 0, port: 0}}",
        ));
        let e = one_error(&text, "add_addr id 0 is reserved");
        assert_at(&e, 13, 47);
        one_error(&text, "port 0 is not a valid port");
    }

    #[test]
    fn trigger_bounds() {
        one_error(
            &with_rule(&OK.replace("500ms", "0s")),
            "subflow_idle 0s is out of range",
        );
        one_error(
            &with_rule(&OK.replace("subflow_idle: 500ms", "flow_bytes_at: 0")),
            "flow_bytes_at 0B",
        );
        assert_eq!(
            errors(&with_rule(
                &OK.replace("subflow_idle: 500ms", "flow_bytes_at: 1MiB")
            )),
            vec![]
        );
        one_error(
            &with_rule(&OK.replace("subflow_idle: 500ms", "other_subflows_idle: 2h")),
            "other_subflows_idle 2h is out of range",
        );
        assert_eq!(
            errors(&with_rule(
                &OK.replace("subflow_idle: 500ms", "other_subflows_idle: 300ms")
            )),
            vec![]
        );
    }
}
