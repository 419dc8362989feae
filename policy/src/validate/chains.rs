//! Chain rules: the action list (length, order, hook), and thresholds.

use super::Ctx;
use crate::locate::Spot;
use crate::model::{Action, Chain, Decider, Hook, Thresholds};
use crate::units::Duration;
use emptcp_common::{MAX_CHAINS, MAX_STEPS};
use std::time::Duration as StdDuration;

/// Bounds of `cpu_usage.interval`: sampling faster than 100ms costs CPU
/// for noise; slower than an hour no longer follows the load.
const MIN_CPU_INTERVAL: StdDuration = StdDuration::from_millis(100);
const MAX_CPU_INTERVAL: StdDuration = StdDuration::from_secs(3600);

pub(super) fn check(ctx: &mut Ctx<'_>) {
    let chains = &ctx.policy().chains;
    for (i, chain) in chains.iter().enumerate() {
        check_actions(ctx, ctx.chain(i), chain);
        check_thresholds(ctx, ctx.chain(i), chain);
        super::matches::check(ctx, ctx.chain(i), chain);
    }
    if chains.len() > MAX_CHAINS as usize {
        ctx.report(
            ctx.chain(MAX_CHAINS as usize).get("name"),
            format!(
                "too many chains: {} defined, at most {MAX_CHAINS}",
                chains.len()
            ),
            "each chain takes a slot in the kernel's chain map; merge chains that do the same",
        );
    }
}

fn check_actions(ctx: &mut Ctx<'_>, spot: Spot<'_>, chain: &Chain) {
    let name = &chain.name;
    let actions = spot.get("actions");
    let at = |j: usize| actions.item(j);
    if chain.actions.is_empty() {
        ctx.report(
            actions,
            format!("chain '{name}' has no actions"),
            "list at least one action, e.g. `actions: [count]`",
        );
        return;
    }
    if chain.actions.len() > MAX_STEPS {
        ctx.report(
            at(MAX_STEPS),
            format!(
                "chain '{name}' has {} actions, at most {MAX_STEPS} fit",
                chain.actions.len()
            ),
            "each action is one tail call of the chain; split the work over two chains",
        );
    }
    for (j, action) in chain.actions.iter().enumerate() {
        if chain.actions[..j].iter().any(|a| a.kind() == action.kind()) {
            ctx.report(
                at(j),
                format!("action '{}' appears twice in chain '{name}'", action.name()),
                "each action may appear once per chain; remove one",
            );
        }
    }
    if let Some(d) = position(chain, |a| matches!(a, Action::Drop))
        && let Some(next) = chain.actions.get(d + 1)
    {
        ctx.report(
            at(d + 1),
            format!(
                "action '{}' in chain '{name}' is unreachable: it comes after drop",
                next.name()
            ),
            "drop ends the chain: move it last, or remove the actions after it",
        );
    }
    if chain.hook == Hook::Egress {
        for (j, action) in chain.actions.iter().enumerate() {
            if action.ingress_only() {
                ctx.report(
                    at(j),
                    format!(
                        "action '{}' is ingress-only, but chain '{name}' has hook egress",
                        action.name()
                    ),
                    "egress chains may use set_backup, set_window and count; use `hook: ingress` for the others",
                );
            }
        }
    }
    let record = position(chain, |a| matches!(a, Action::RecordFlow));
    let strip = position(chain, |a| matches!(a, Action::StripAddAddr));
    let recover = position(chain, |a| matches!(a, Action::RecoverAddAddr));
    // set_window needs the window scale record_flow saw on the SYN-ACK.
    // (Egress chains have no record_flow: their window rule is the peer's.)
    let window = position(chain, |a| matches!(a, Action::SetWindow { .. }))
        .filter(|_| chain.hook == Hook::Ingress);
    for (needs_flow, action) in [
        (strip, "strip_add_addr"),
        (recover, "recover_add_addr"),
        (window, "set_window"),
    ] {
        if let Some(p) = needs_flow
            && record.is_none_or(|r| r > p)
        {
            ctx.report(
                at(p),
                format!("{action} needs record_flow earlier in chain '{name}'"),
                format!(
                    "record_flow creates the flow (its size, its window scale): list it before {action}"
                ),
            );
        }
    }
    // strip_add_addr stores an option only from a segment whose checksum
    // it verifies, as received: a rewrite before it updates the checksum
    // incrementally, which turns the pseudo-header-only checksum of an
    // offloading sender into one that verifies as neither form.
    if let Some(s) = strip {
        for (i, a) in chain.actions.iter().enumerate().take(s) {
            if let Action::SetWindow { .. } | Action::SetBackup { .. } = a {
                ctx.report(
                    at(i),
                    format!(
                        "{} before strip_add_addr in chain '{name}'",
                        a.name()
                    ),
                    format!(
                        "strip_add_addr checks the segment's checksum as it arrived: list it before {}",
                        a.name()
                    ),
                );
            }
        }
    }
    if let Some(p) = recover
        && strip.is_none_or(|s| s > p)
    {
        ctx.report(
            at(p),
            format!("recover_add_addr needs strip_add_addr earlier in chain '{name}'"),
            "recover_add_addr re-inserts the options strip_add_addr stored: list strip_add_addr before it",
        );
    }
}

fn position(chain: &Chain, pred: impl Fn(&Action) -> bool) -> Option<usize> {
    chain.actions.iter().position(pred)
}

fn check_thresholds(ctx: &mut Ctx<'_>, spot: Spot<'_>, chain: &Chain) {
    let name = &chain.name;
    let user = chain
        .actions
        .iter()
        .position(|a| matches!(a, Action::StripAddAddr | Action::RecoverAddAddr));
    match (user, &chain.thresholds) {
        (Some(p), None) => ctx.report(
            spot.get("actions").item(p),
            format!(
                "action '{}' in chain '{name}' needs thresholds",
                chain.actions[p].name()
            ),
            "add e.g. `thresholds: {remove_below: 1MiB, recover_at: 4MiB}` to the chain",
        ),
        (None, Some(_)) => ctx.report(
            spot.key("thresholds"),
            format!("chain '{name}' has thresholds but no action that uses them"),
            "thresholds are used by strip_add_addr and recover_add_addr: add one, or remove thresholds",
        ),
        (_, Some(t)) => check_threshold_values(ctx, spot.get("thresholds"), name, t),
        (None, None) => {}
    }
}

fn check_threshold_values(ctx: &mut Ctx<'_>, spot: Spot<'_>, name: &str, t: &Thresholds) {
    if t.remove_below > t.recover_at {
        ctx.report(
            spot.get("remove_below"),
            format!(
                "remove_below ({}) is larger than recover_at ({}) in chain '{name}'",
                t.remove_below, t.recover_at
            ),
            "remove_below must be at most recover_at: strip while the flow is small, recover once it is large",
        );
    }
    if let Decider::CpuUsage {
        interval,
        busy_recover_at,
        ..
    } = t.decider
    {
        let cpu = spot.get("decider").get("cpu_usage");
        if !(MIN_CPU_INTERVAL..=MAX_CPU_INTERVAL).contains(&interval.get()) {
            ctx.report(
                cpu.get("interval"),
                format!("cpu_usage interval {interval} of chain '{name}' is out of range"),
                format!(
                    "the interval is {} to {}",
                    Duration(MIN_CPU_INTERVAL),
                    Duration(MAX_CPU_INTERVAL)
                ),
            );
        }
        if busy_recover_at < t.recover_at {
            ctx.report(
                cpu.get("busy_recover_at"),
                format!(
                    "busy_recover_at ({busy_recover_at}) is smaller than recover_at ({}) in chain '{name}'",
                    t.recover_at
                ),
                "a busy CPU keeps flows on one path longer: busy_recover_at must be at least recover_at",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::test_support::*;

    fn chain(actions: &str, extra: &str) -> String {
        format!("version: 1\nchains:\n  - name: c\n{extra}    actions: {actions}\n")
    }

    const TH: &str = "    thresholds: {remove_below: 1MiB, recover_at: 4MiB}\n";

    #[test]
    fn the_canonical_chain_is_valid() {
        let text = chain("[record_flow, strip_add_addr, recover_add_addr, count]", TH);
        assert_eq!(errors(&text), vec![]);
    }

    #[test]
    fn no_actions() {
        let e = one_error(&chain("[]", ""), "chain 'c' has no actions");
        assert_at(&e, 4, 5);
    }

    #[test]
    fn too_many_actions() {
        // Nine distinct kinds do not exist; the count rule fires first and
        // the duplicates are reported too.
        let text = chain(
            "[count, set_window: {bytes: 16KiB}, count, count, count, count, count, count, count]",
            "",
        );
        let e = one_error(&text, "has 9 actions, at most 8 fit");
        assert_at(&e, 4, 92);
    }

    #[test]
    fn duplicate_action() {
        let e = one_error(&chain("[count, count]", ""), "action 'count' appears twice");
        assert_at(&e, 4, 22);
    }

    #[test]
    fn unreachable_after_drop() {
        let e = one_error(
            &chain("[drop, count]", ""),
            "'count' in chain 'c' is unreachable",
        );
        assert_at(&e, 4, 21);
    }

    #[test]
    fn ingress_only_on_egress() {
        let text = chain("[count, drop]", "    hook: egress\n");
        let e = one_error(&text, "action 'drop' is ingress-only");
        assert_at(&e, 5, 22);
        let text = chain(
            "[count, set_backup: {backup: true}, set_window: {bytes: 64KiB}]",
            "    hook: egress\n",
        );
        assert_eq!(errors(&text), vec![]);
    }

    #[test]
    fn strip_and_recover_need_record_flow_first() {
        let text = chain("[strip_add_addr, record_flow]", TH);
        let e = one_error(&text, "strip_add_addr needs record_flow earlier");
        assert_at(&e, 5, 15);
    }

    #[test]
    fn rewrites_come_after_strip() {
        let text = chain(
            "[record_flow, set_window: {bytes: 64KiB}, strip_add_addr]",
            TH,
        );
        let e = one_error(&text, "set_window before strip_add_addr");
        let hint = e.hint.unwrap_or_default();
        assert!(hint.contains("list it before set_window"), "{hint}");
        let text = chain(
            "[record_flow, set_backup: {backup: true}, strip_add_addr]",
            TH,
        );
        one_error(&text, "set_backup before strip_add_addr");
        let ok = chain(
            "[record_flow, strip_add_addr, set_backup: {backup: true}, set_window: {bytes: 64KiB}]",
            TH,
        );
        assert_eq!(errors(&ok), vec![]);
    }

    #[test]
    fn recover_needs_strip_first() {
        let text = chain("[record_flow, recover_add_addr]", TH);
        let e = one_error(&text, "recover_add_addr needs strip_add_addr earlier");
        assert_at(&e, 5, 28);
    }

    #[test]
    fn thresholds_required_and_only_with_their_actions() {
        let e = one_error(
            &chain("[record_flow, strip_add_addr]", ""),
            "needs thresholds",
        );
        assert_at(&e, 4, 28);
        let e = one_error(&chain("[count]", TH), "has thresholds but no action");
        assert_at(&e, 4, 5);
    }

    #[test]
    fn remove_below_above_recover_at() {
        let th = "    thresholds: {remove_below: 8MiB, recover_at: 4MiB}\n";
        let e = one_error(
            &chain("[record_flow, strip_add_addr]", th),
            "remove_below (8MiB) is larger than recover_at (4MiB)",
        );
        assert_at(&e, 4, 32);
    }

    #[test]
    fn cpu_usage_decider() {
        let th = "    thresholds:\n      remove_below: 1MiB\n      recover_at: 4MiB\n      decider:\n        cpu_usage: {interval: 10ms, busy_above: 80%, busy_recover_at: 2MiB}\n";
        let text = chain("[record_flow, strip_add_addr]", th);
        let e = one_error(
            &text,
            "cpu_usage interval 10ms of chain 'c' is out of range",
        );
        assert_at(&e, 8, 31);
        assert_eq!(e.hint.as_deref(), Some("the interval is 100ms to 1h"));
        let e = one_error(
            &text,
            "busy_recover_at (2MiB) is smaller than recover_at (4MiB)",
        );
        assert_at(&e, 8, 71);
        let ok = th.replace("10ms", "1s").replace("2MiB", "64MiB");
        assert_eq!(errors(&chain("[record_flow, strip_add_addr]", &ok)), vec![]);
    }

    #[test]
    fn too_many_chains() {
        let mut text = String::from("version: 1\nchains:\n");
        for i in 0..257 {
            text.push_str(&format!("  - {{name: c{i}, actions: [count]}}\n"));
        }
        let e = one_error(&text, "too many chains: 257 defined, at most 256");
        assert_at(&e, 259, 12);
    }
}
