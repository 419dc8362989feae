//! Names: their syntax, and that each is defined once across all files.

use super::{Ctx, List};
use crate::locate::Spot;
use emptcp_common::{CHAIN_NAME_LEN, IFNAME_LEN};
use std::collections::HashMap;

/// Chain names are stored NUL-terminated in a 48-byte kernel field.
pub(crate) const MAX_CHAIN_NAME: usize = CHAIN_NAME_LEN - 1;
/// Linux IFNAMSIZ (16) minus the NUL.
pub(crate) const MAX_IFNAME: usize = IFNAME_LEN - 1;

const CHAIN_NAME_HINT: &str = "names are 1 to 47 characters of a-z, 0-9, '_' and '-', \
starting with a letter or digit, e.g. bulk-backup";

pub(super) fn check(ctx: &mut Ctx<'_>) {
    let policy = ctx.policy();
    for (i, chain) in policy.chains.iter().enumerate() {
        check_identifier(ctx, ctx.chain(i).get("name"), "chain", &chain.name);
    }
    for (i, rule) in policy.packet_copy.iter().enumerate() {
        check_identifier(
            ctx,
            ctx.packet_copy(i).get("name"),
            "packet_copy",
            &rule.name,
        );
    }
    for (i, iface) in policy.interfaces.iter().enumerate() {
        if let Some(problem) = ifname_problem(&iface.name) {
            ctx.report(
                ctx.interface(i).get("name"),
                format!("invalid interface name '{}': {problem}", iface.name),
                "Linux interface names are 1 to 15 bytes without '/', ':' or whitespace, e.g. eth0",
            );
        }
    }

    let chain_names = policy.chains.iter().map(|c| c.name.as_str());
    check_unique(ctx, "chain", chain_names, List::Chains);
    let iface_names = policy.interfaces.iter().map(|c| c.name.as_str());
    check_unique(ctx, "interface", iface_names, List::Interfaces);
    let rule_names = policy.packet_copy.iter().map(|c| c.name.as_str());
    check_unique(ctx, "packet_copy rule", rule_names, List::PacketCopy);
}

fn check_identifier(ctx: &mut Ctx<'_>, spot: Spot<'_>, what: &str, name: &str) {
    if let Some(problem) = identifier_problem(name) {
        let lower = name.to_ascii_lowercase();
        let hint = if lower != name && identifier_problem(&lower).is_none() {
            format!("did you mean '{lower}'? {CHAIN_NAME_HINT}")
        } else {
            CHAIN_NAME_HINT.to_string()
        };
        ctx.report(
            spot,
            format!("invalid {what} name '{name}': {problem}"),
            hint,
        );
    }
}

/// Why `name` does not match `^[a-z0-9][a-z0-9_-]{0,46}$`, if it does not.
pub(crate) fn identifier_problem(name: &str) -> Option<String> {
    let first = name.chars().next()?;
    if name.len() > MAX_CHAIN_NAME {
        return Some(format!(
            "it is {} bytes long, the limit is {MAX_CHAIN_NAME}",
            name.len()
        ));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Some(format!("it starts with '{first}'"));
    }
    name.chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'))
        .map(|c| format!("'{c}' is not allowed"))
}

/// Why `name` is not a usable Linux interface name, if it is not (the
/// kernel's `dev_valid_name`).
pub(crate) fn ifname_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".to_string());
    }
    if name.len() > MAX_IFNAME {
        return Some(format!(
            "it is {} bytes long, the limit is {MAX_IFNAME}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some("it is a path component".to_string());
    }
    name.chars()
        .find(|&c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
        .map(|c| format!("{c:?} is not allowed"))
}

/// Reports every name defined more than once, at each later definition,
/// citing the first.
fn check_unique<'a>(
    ctx: &mut Ctx<'_>,
    what: &str,
    names: impl Iterator<Item = &'a str>,
    list: List,
) {
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.enumerate() {
        match first_seen.get(name) {
            None => {
                first_seen.insert(name, i);
            }
            Some(&first) => {
                let first_at = ctx.describe(ctx.list_item(list, first).get("name"));
                let here = ctx.list_item(list, i).get("name");
                let message = format!(
                    "{what} '{name}' defined in {first_at} and again in {}",
                    ctx.describe(here)
                );
                ctx.report(
                    here,
                    message,
                    format!(
                        "{what} names must be unique across all policy files; rename or remove one"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::*;

    #[test]
    fn identifier_syntax() {
        for ok in ["a", "0", "bulk-backup", "keep_short", &"a".repeat(47)] {
            assert_eq!(identifier_problem(ok), None, "{ok}");
        }
        for bad in [
            "-a",
            "_a",
            "Bulk",
            "a b",
            "a.b",
            "a/b",
            "é",
            &"a".repeat(48),
        ] {
            assert!(identifier_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn ifname_syntax() {
        for ok in [
            "eth0",
            "cli0",
            "veth-a.100",
            "a",
            &"x".repeat(15),
            "wlp0s20f3",
        ] {
            assert_eq!(ifname_problem(ok), None, "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a:1", "a b", "a\tb", &"x".repeat(16)] {
            assert!(ifname_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn chain_name_errors_suggest_lowercase() {
        let text = BASE.replace("name: c1", "name: C1").replace("[c1]", "[C1]");
        let e = one_error(&text, "invalid chain name 'C1'");
        assert_at(&e, 6, 11);
        assert!(e.hint.unwrap().starts_with("did you mean 'c1'?"));
    }

    #[test]
    fn long_chain_name() {
        let long = "c".repeat(48);
        let text = BASE.replace("c1", &long);
        let e = one_error(&text, "48 bytes long, the limit is 47");
        assert_at(&e, 6, 11);
    }

    #[test]
    fn invalid_ifname() {
        let e = one_error(
            &BASE.replace("eth0", "eth0:1"),
            "invalid interface name 'eth0:1'",
        );
        assert_at(&e, 3, 11);
    }

    #[test]
    fn duplicate_names_cite_both_places() {
        let text = format!("{BASE}  - name: c1\n    actions: [drop]\n");
        let e = one_error(
            &text,
            "chain 'c1' defined in p.yaml:6:11 and again in p.yaml:8:11",
        );
        assert_at(&e, 8, 11);
        let text = BASE.replace(
            "interfaces:\n",
            "interfaces:\n  - name: eth0\n    chains: [c1]\n",
        );
        let e = one_error(&text, "interface 'eth0' defined in p.yaml:3:11 and again");
        assert_at(&e, 5, 11);
    }
}
