//! "Did you mean ...?" for misspelt names, fields and variants.

/// The candidate closest to `wanted`, if it is close enough to be a likely
/// typo: at most a third of the name's length, and at least 1 or 2 edits
/// for short names (`eth0` vs `eth1`).
pub(crate) fn closest<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (wanted.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .filter(|c| *c != wanted)
        .map(|c| (strsim::levenshtein(wanted, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A hint for a name that refers to nothing: the likely intended name, or
/// the names there are.
pub(crate) fn hint_for_unknown<'a>(
    wanted: &str,
    what: &str,
    defined: impl IntoIterator<Item = &'a str> + Clone,
) -> String {
    if let Some(close) = closest(wanted, defined.clone()) {
        return format!("did you mean '{close}'?");
    }
    let names: Vec<&str> = defined.into_iter().collect();
    match names.len() {
        0 => format!("no {what} is defined"),
        1..=10 => format!("defined {what}s: {}", names.join(", ")),
        n => format!(
            "defined {what}s: {}, ... ({n} in all)",
            names[..10].join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_only_close_names() {
        let names = ["bulk-backup", "short-flows", "eth1"];
        assert_eq!(closest("bulk-bakup", names), Some("bulk-backup"));
        assert_eq!(closest("eth0", names), Some("eth1"));
        assert_eq!(closest("completely-different", names), None);
        // Distances count characters, not bytes.
        assert_eq!(closest("bülk-backup", names), Some("bulk-backup"));
    }

    #[test]
    fn hint_lists_names_when_nothing_is_close() {
        assert_eq!(
            hint_for_unknown("x", "chain", ["a1234", "b5678"]),
            "defined chains: a1234, b5678"
        );
        assert_eq!(
            hint_for_unknown("x", "chain", [] as [&str; 0]),
            "no chain is defined"
        );
        assert_eq!(
            hint_for_unknown("countt", "chain", ["count"]),
            "did you mean 'count'?"
        );
    }
}
