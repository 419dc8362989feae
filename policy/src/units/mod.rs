//! Values with units in the policy file: sizes (`4MiB`), durations (`500ms`),
//! percentages (`80%`) and port ranges (`8000-8100`).
//!
//! Each type parses from the YAML scalar an operator writes, serializes back
//! to one canonical spelling (so a policy read and written again is stable),
//! and describes itself in the JSON Schema as a patterned string, so editors
//! flag a bad unit before `emptcp validate` does.

mod duration;
mod percent;
mod port_range;
mod size;

pub use duration::Duration;
pub use percent::Percent;
pub use port_range::PortRange;
pub use size::ByteSize;
pub(crate) use size::{SIZE_PATTERN, SizeVisitor};

use std::fmt;

/// Why a value with a unit did not parse, and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    /// What is wrong with the value.
    pub message: String,
    /// The accepted forms.
    pub hint: String,
}

impl UnitError {
    pub(crate) fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        UnitError {
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// The error as a serde error, with the hint carried along (see
    /// `error::message_with_hint`).
    pub(crate) fn into_de<E: serde::de::Error>(self) -> E {
        E::custom(crate::error::message_with_hint(&self.message, &self.hint))
    }
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.hint)
    }
}

impl std::error::Error for UnitError {}

/// The one spelling of a number the schema allows: no space around the
/// value and no leading zero (`080` reads as octal to some tools and as 80
/// to others; `" 443"` is usually a stray quote). `number` is the digits
/// part of `whole`.
fn strict_number(number: &str, whole: &str) -> Result<(), UnitError> {
    if whole.trim() != whole {
        return Err(UnitError::new(
            format!("'{whole}' has spaces around it"),
            format!("write it without them: '{}'", whole.trim()),
        ));
    }
    if number.len() > 1 && number.starts_with('0') {
        return Err(UnitError::new(
            format!("'{whole}' has a leading zero"),
            format!(
                "write the number without it: {} instead of {number}",
                number
                    .parse::<u128>()
                    .map_or(number.to_string(), |n| n.to_string())
            ),
        ));
    }
    Ok(())
}

/// Splits `"123MiB"` into `("123", "MiB")` at the first non-digit, dropping
/// one optional space between number and unit (`"4 MiB"`).
fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, rest) = text.split_at(end);
    (number, rest.strip_prefix(' ').unwrap_or(rest))
}

#[cfg(test)]
mod schema_agreement {
    //! The JSON Schema an editor checks and the parser `emptcp validate`
    //! runs accept the same strings: for generated values with the tricky
    //! parts operators write (spaces around or inside, leading zeros, wrong
    //! or missing units, `%` without a number, ranges with spaces), the
    //! type's own schema (from the schema generator) accepts the string
    //! exactly when `FromStr` does. Numbers stay inside the ranges a
    //! pattern can say (ports <= 65535, sizes and durations far from
    //! overflow): bounds a regex cannot state are checked by the parser and
    //! validation alone, and are covered by their own tests.
    use std::str::FromStr;

    use proptest::prelude::*;

    use super::*;

    /// 2048 strings per type: well under a second in release.
    const CASES: u32 = 2048;

    fn schema_accepts<T: schemars::JsonSchema>(text: &str) -> bool {
        let schema = serde_json::to_value(schemars::schema_for!(T)).unwrap();
        jsonschema::validator_for(&schema)
            .unwrap()
            .is_valid(&serde_json::Value::String(text.into()))
    }

    fn agree<T: schemars::JsonSchema + FromStr>(text: &str) -> Result<(), TestCaseError> {
        let schema = schema_accepts::<T>(text);
        let parser = text.parse::<T>().is_ok();
        prop_assert_eq!(schema, parser, "schema vs parser on {:?}", text);
        Ok(())
    }

    /// Every run of digits in `text` is a number of at most `max`.
    fn numbers_at_most(text: &str, max: u128) -> bool {
        text.split(|c: char| !c.is_ascii_digit())
            .filter(|run| !run.is_empty())
            .all(|run| run.parse::<u128>().is_ok_and(|n| n <= max))
    }

    fn pick(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
        prop::sample::select(options)
    }

    /// A number as written: with 0, 1 or 2 leading zeros.
    fn number(max: u64) -> impl Strategy<Value = String> {
        (pick(&["", "", "", "0", "00"]), 0..=max).prop_map(|(z, n)| format!("{z}{n}"))
    }

    const AROUND: &[&str] = &["", "", "", " ", "\t"];
    const SEP: &[&str] = &["", "", " ", "  "];

    proptest! {
        #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

        #[test]
        fn sizes(
            lead in pick(AROUND), n in number(1_000_000), sep in pick(SEP),
            unit in pick(&["", "B", "KiB", "MiB", "GiB", "TiB", "KB", "kB", "MB", "GB", "TB", "mib", "K", "%", ".5MiB"]),
            trail in pick(AROUND),
        ) {
            agree::<ByteSize>(&format!("{lead}{n}{sep}{unit}{trail}"))?;
        }

        #[test]
        fn durations(
            lead in pick(AROUND),
            parts in prop::collection::vec(
                (number(100_000), pick(SEP), pick(&["ns", "us", "µs", "ms", "s", "m", "h", "", "sec", "M", ".5s"])),
                1..=3,
            ),
            trail in pick(AROUND),
        ) {
            let body: String = parts.iter().map(|(n, sep, u)| format!("{n}{sep}{u}")).collect();
            // Parts without a unit run together ("5125" "0010000" "10000h"
            // is one number of hours, past u64 nanoseconds): the premise
            // above holds for the numbers of the string, not of the parts.
            prop_assume!(numbers_at_most(&body, 100_000));
            agree::<Duration>(&format!("{lead}{body}{trail}"))?;
        }

        #[test]
        fn percentages(
            lead in pick(AROUND), n in number(150), sep in pick(SEP),
            suffix in pick(&["%", "%", "", " %", "%%"]), trail in pick(AROUND),
        ) {
            agree::<Percent>(&format!("{lead}{n}{sep}{suffix}{trail}"))?;
        }

        #[test]
        fn ports_and_ranges(
            lead in pick(AROUND), start in number(65_535),
            end in prop::option::of((pick(&["-", "-", " - ", " -", "- ", "--"]), number(65_535))),
            trail in pick(AROUND),
        ) {
            let end = end.map(|(dash, n)| format!("{dash}{n}")).unwrap_or_default();
            agree::<PortRange>(&format!("{lead}{start}{end}{trail}"))?;
        }
    }
}
