//! `Duration`: a span of time that always carries its unit (`500ms`, `1s`,
//! `1m30s`). A bare number is rejected: `500` could mean ms or s.

use super::{UnitError, split_number, strict_number};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// A duration with a unit.
///
/// Written as one or more `<number><unit>` parts, largest first by
/// convention (`1m30s`); units are `ns`, `us` (or `µs`), `ms`, `s`, `m`,
/// `h`. Serialized with the largest unit that is exact (`90s`, `1500ms`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

const NS_PER_US: u128 = 1_000;
const NS_PER_MS: u128 = 1_000_000;
const NS_PER_S: u128 = 1_000_000_000;
const NS_PER_M: u128 = 60 * NS_PER_S;
const NS_PER_H: u128 = 60 * NS_PER_M;

const PARSE_UNITS: [(&str, u128); 7] = [
    ("ns", 1),
    ("us", NS_PER_US),
    ("µs", NS_PER_US),
    ("ms", NS_PER_MS),
    ("s", NS_PER_S),
    ("m", NS_PER_M),
    ("h", NS_PER_H),
];

/// Largest first: formatting picks the first unit that divides exactly.
const FORMAT_UNITS: [(&str, u128); 6] = [
    ("h", NS_PER_H),
    ("m", NS_PER_M),
    ("s", NS_PER_S),
    ("ms", NS_PER_MS),
    ("us", NS_PER_US),
    ("ns", 1),
];

const DURATION_HINT: &str = "a duration is a whole number with a unit: ns, us, ms, s, m or h \
(parts may be combined, e.g. 1m30s), e.g. 500ms or 1s";

/// The JSON Schema pattern (mirrors [`Duration::from_str`]).
pub(crate) const DURATION_PATTERN: &str = r"^((0|[1-9][0-9]*) ?(ns|us|µs|ms|s|m|h))+$";

impl Duration {
    /// Builds a duration from milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    /// The standard library value.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl FromStr for Duration {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, UnitError> {
        let trimmed = text;
        if trimmed.starts_with('-') {
            return Err(UnitError::new(
                format!("duration '{text}' is negative"),
                DURATION_HINT,
            ));
        }
        if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(no_unit(text));
        }
        let not_a_duration =
            || UnitError::new(format!("'{text}' is not a duration"), DURATION_HINT);
        let too_large = || {
            UnitError::new(
                format!("duration '{text}' is too large"),
                "durations must fit in 2^64 seconds",
            )
        };
        let mut rest = trimmed;
        let mut total: u128 = 0;
        if rest.is_empty() {
            return Err(not_a_duration());
        }
        while !rest.is_empty() {
            let (number, after) = split_number(rest);
            if number.is_empty() {
                return Err(not_a_duration());
            }
            strict_number(number, text)?;
            if after.starts_with(['.', ',']) {
                return Err(UnitError::new(
                    format!("duration '{text}' is not a whole number"),
                    "use a smaller unit instead of a fraction, e.g. 1500ms instead of 1.5s",
                ));
            }
            let unit_len = after
                .find(|c: char| !(c.is_alphabetic() || c == 'µ'))
                .unwrap_or(after.len());
            let (unit, next) = after.split_at(unit_len);
            if unit.is_empty() {
                return Err(not_a_duration());
            }
            let multiplier = PARSE_UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|&(_, m)| m)
                .ok_or_else(|| {
                    UnitError::new(
                        format!("unknown duration unit '{unit}' in '{text}'"),
                        DURATION_HINT,
                    )
                })?;
            let value: u128 = number.parse().map_err(|_| too_large())?;
            total = value
                .checked_mul(multiplier)
                .and_then(|ns| total.checked_add(ns))
                .ok_or_else(too_large)?;
            rest = next;
        }
        let secs = u64::try_from(total / NS_PER_S).map_err(|_| too_large())?;
        // The remainder is below 10^9, so it fits in u32.
        let nanos = (total % NS_PER_S) as u32;
        Ok(Duration(std::time::Duration::new(secs, nanos)))
    }
}

fn no_unit(value: impl fmt::Display) -> UnitError {
    UnitError::new(
        format!("duration {value} has no unit"),
        format!("add a unit; {DURATION_HINT}"),
    )
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        for (unit, per) in FORMAT_UNITS {
            if nanos.is_multiple_of(per) {
                return write!(f, "{}{unit}", nanos / per);
            }
        }
        // Unreachable: the last unit (ns) divides everything.
        write!(f, "{nanos}ns")
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration with a unit, such as 500ms")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(no_unit(v).into_de())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(no_unit(v).into_de())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(no_unit(v).into_de())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        v.parse().map_err(UnitError::into_de)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: a whole number with a unit, ns, us (or µs), ms, s, m or h; parts may be combined (1m30s). A bare number is rejected.",
            "examples": ["500ms", "1s", "1m30s"],
            "type": "string",
            "pattern": DURATION_PATTERN
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    fn parse(text: &str) -> Result<Std, UnitError> {
        text.parse::<Duration>().map(Duration::get)
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("250ns").unwrap(), Std::from_nanos(250));
        assert_eq!(parse("250us").unwrap(), Std::from_micros(250));
        assert_eq!(parse("250µs").unwrap(), Std::from_micros(250));
        assert_eq!(parse("500ms").unwrap(), Std::from_millis(500));
        assert_eq!(parse("1s").unwrap(), Std::from_secs(1));
        assert_eq!(parse("2m").unwrap(), Std::from_secs(120));
        assert_eq!(parse("1h").unwrap(), Std::from_secs(3600));
        assert_eq!(parse("1m30s").unwrap(), Std::from_secs(90));
        assert_eq!(parse("1h1ms").unwrap(), Std::from_millis(3_600_001));
        assert_eq!(parse("5 s").unwrap(), Std::from_secs(5));
        assert_eq!(parse("0s").unwrap(), Std::ZERO);
    }

    #[test]
    fn rejects_bad_durations_with_hints() {
        for bad in [
            "500",
            "",
            "ms",
            "1.5s",
            "-1s",
            "10 parsecs",
            "1d",
            "1m 30s",
            "1s-",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(!err.hint.is_empty(), "{bad}: {err}");
        }
        assert!(parse("500").unwrap_err().message.contains("has no unit"));
        assert!(parse("-1s").unwrap_err().message.contains("negative"));
        assert!(
            parse("1d")
                .unwrap_err()
                .message
                .contains("unknown duration unit 'd'")
        );
        assert!(parse("1.5s").unwrap_err().hint.contains("1500ms"));
        assert!(
            parse("99999999999999999999h")
                .unwrap_err()
                .message
                .contains("too large")
        );
    }

    #[test]
    fn plain_yaml_integers_are_rejected() {
        let err = yaml_serde::from_str::<Duration>("500").unwrap_err();
        assert!(err.to_string().contains("has no unit"), "{err}");
    }

    #[test]
    fn formats_with_largest_exact_unit() {
        let cases = [
            (Std::ZERO, "0s"),
            (Std::from_nanos(250), "250ns"),
            (Std::from_micros(250), "250us"),
            (Std::from_millis(500), "500ms"),
            (Std::from_millis(1500), "1500ms"),
            (Std::from_secs(1), "1s"),
            (Std::from_secs(90), "90s"),
            (Std::from_secs(120), "2m"),
            (Std::from_secs(7200), "2h"),
        ];
        for (d, text) in cases {
            assert_eq!(Duration(d).to_string(), text);
        }
    }

    #[test]
    fn format_then_parse_round_trips() {
        for nanos in [
            0u64,
            1,
            999,
            1_000,
            1_000_000,
            1_500_000_000,
            3_600_000_000_000,
            u64::MAX,
        ] {
            let d = Duration(Std::from_nanos(nanos));
            assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
        }
    }
}
