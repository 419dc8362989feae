//! `match` rules: prefixes without host bits, sane and non-overlapping port
//! ranges, and at most 1024 ports per chain.

use super::Ctx;
use crate::locate::Spot;
use crate::model::Chain;
use crate::units::PortRange;
use ipnet::IpNet;

/// Ports one chain may match (remote_ports + local_ports): each port is an
/// entry of the kernel's port map.
pub const MAX_PORTS_PER_CHAIN: u32 = 1024;

pub(super) fn check(ctx: &mut Ctx<'_>, chain_spot: Spot<'_>, chain: &Chain) {
    let spot = chain_spot.get("match");
    let m = &chain.r#match;
    for (field, prefixes) in [("remote", &m.remote), ("local", &m.local)] {
        check_prefixes(ctx, spot.get(field), &chain.name, field, prefixes);
    }
    let mut total = 0u32;
    for (field, ranges) in [
        ("remote_ports", &m.remote_ports),
        ("local_ports", &m.local_ports),
    ] {
        let list = spot.get(field);
        for (j, range) in ranges.iter().enumerate() {
            let before = total;
            total += check_range(ctx, list.item(j), &chain.name, field, &ranges[..j], *range);
            if before <= MAX_PORTS_PER_CHAIN && total > MAX_PORTS_PER_CHAIN {
                ctx.report(
                    list.item(j),
                    format!(
                        "chain '{}' matches more than {MAX_PORTS_PER_CHAIN} ports",
                        chain.name
                    ),
                    format!(
                        "remote_ports and local_ports together may hold {MAX_PORTS_PER_CHAIN} ports; \
                         an omitted list matches every port"
                    ),
                );
            }
        }
    }
}

fn check_prefixes(ctx: &mut Ctx<'_>, list: Spot<'_>, chain: &str, field: &str, nets: &[IpNet]) {
    for (j, net) in nets.iter().enumerate() {
        let spot = list.item(j);
        if net.trunc() != *net {
            ctx.report(
                spot,
                format!("prefix {net} in match.{field} of chain '{chain}' has host bits set"),
                format!("did you mean {}?", net.trunc()),
            );
        } else if nets[..j].contains(net) {
            ctx.report(
                spot,
                format!("prefix {net} is listed twice in match.{field} of chain '{chain}'"),
                "remove the duplicate",
            );
        }
    }
}

/// Checks one range against the rules and the earlier ranges of its list;
/// returns how many ports it adds (0 when invalid).
fn check_range(
    ctx: &mut Ctx<'_>,
    spot: Spot<'_>,
    chain: &str,
    field: &str,
    earlier: &[PortRange],
    range: PortRange,
) -> u32 {
    if range.start == 0 || range.end == 0 {
        let hint = if range.start == 0 && range.end > 1 {
            format!("TCP ports are 1 to 65535; did you mean 1-{}?", range.end)
        } else {
            "TCP ports are 1 to 65535".to_string()
        };
        ctx.report(
            spot,
            format!("port 0 in match.{field} of chain '{chain}' is not a valid port"),
            hint,
        );
        return 0;
    }
    if range.start > range.end {
        ctx.report(
            spot,
            format!(
                "port range {}-{} in match.{field} of chain '{chain}' is reversed",
                range.start, range.end
            ),
            format!("did you mean {}-{}?", range.end, range.start),
        );
        return 0;
    }
    let valid = |r: &&PortRange| r.start != 0 && r.start <= r.end;
    if let Some(other) = earlier.iter().filter(valid).find(|r| r.overlaps(range)) {
        let message = if *other == range {
            format!("port {range} is listed twice in match.{field} of chain '{chain}'")
        } else {
            format!("port range {range} overlaps {other} in match.{field} of chain '{chain}'")
        };
        ctx.report(spot, message, "list each port once");
        return 0;
    }
    range.len()
}

#[cfg(test)]
mod tests {
    use crate::validate::test_support::*;

    fn with_match(m: &str) -> String {
        format!("version: 1\nchains:\n  - name: c\n    actions: [count]\n    match:\n{m}")
    }

    #[test]
    fn host_bits() {
        let e = one_error(
            &with_match("      remote: [203.0.113.5/24]\n"),
            "prefix 203.0.113.5/24 in match.remote of chain 'c' has host bits set",
        );
        assert_at(&e, 6, 16);
        assert_eq!(e.hint.as_deref(), Some("did you mean 203.0.113.0/24?"));
        let e = one_error(
            &with_match("      local: [\"2001:db8::1/32\"]\n"),
            "has host bits set",
        );
        assert_eq!(e.hint.as_deref(), Some("did you mean 2001:db8::/32?"));
    }

    #[test]
    fn duplicate_prefix() {
        let text = with_match("      remote: [192.0.2.0/24, 198.51.100.0/24, 192.0.2.0/24]\n");
        let e = one_error(&text, "prefix 192.0.2.0/24 is listed twice in match.remote");
        assert_at(&e, 6, 47);
    }

    #[test]
    fn port_zero_and_reversed() {
        let text = with_match("      remote_ports: [0, 8100-8000, 0-100]\n");
        let all = errors(&text);
        assert_eq!(all.len(), 3, "{all:#?}");
        assert_at(&all[0], 6, 22);
        assert_eq!(
            all[1].message,
            "port range 8100-8000 in match.remote_ports of chain 'c' is reversed"
        );
        assert_eq!(all[1].hint.as_deref(), Some("did you mean 8000-8100?"));
        assert_at(&all[1], 6, 25);
        assert!(all[2].hint.as_deref().unwrap().contains("1-100"));
    }

    #[test]
    fn duplicate_and_overlapping_ports() {
        let e = one_error(
            &with_match("      local_ports: [443, 443]\n"),
            "port 443 is listed twice",
        );
        assert_at(&e, 6, 26);
        one_error(
            &with_match("      local_ports: [443, 400-500]\n"),
            "port range 400-500 overlaps 443",
        );
        // The same port on both sides is fine: they are different fields.
        assert_eq!(
            errors(&with_match(
                "      local_ports: [443]\n      remote_ports: [443]\n"
            )),
            vec![]
        );
    }

    #[test]
    fn port_budget() {
        assert_eq!(
            errors(&with_match(
                "      remote_ports: [1-1000]\n      local_ports: [2001-2024]\n"
            )),
            vec![]
        );
        let text = with_match("      remote_ports: [1-1000]\n      local_ports: [2001-2025]\n");
        let e = one_error(&text, "matches more than 1024 ports");
        assert_at(&e, 7, 21);
    }
}
