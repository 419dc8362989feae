//! "Did you mean ...?" for misspelt names, fields and variants.

/// Levenshtein distance between two strings, by characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

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
        .map(|c| (edit_distance(wanted, c), c))
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
    fn distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("bulk-backup", "bulk-bakup"), 1);
    }

    #[test]
    fn suggests_only_close_names() {
        let names = ["bulk-backup", "short-flows", "eth1"];
        assert_eq!(closest("bulk-bakup", names), Some("bulk-backup"));
        assert_eq!(closest("eth0", names), Some("eth1"));
        assert_eq!(closest("completely-different", names), None);
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
