//! `ByteSize`: a number of bytes written with a unit (`4MiB`, `10KB`, `100B`)
//! or as a bare integer (bytes).

use super::{UnitError, split_number, strict_number};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// A size in bytes.
///
/// Written as a whole number with an optional unit: `B`, `KiB`, `MiB`,
/// `GiB`, `TiB` (powers of 1024) or `KB`/`kB`, `MB`, `GB`, `TB` (powers of
/// 1000). A bare number is bytes. Serialized in the shortest exact form
/// (`4194304` becomes `4MiB`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

const KI: u64 = 1 << 10;
const KD: u64 = 1000;

/// Every accepted unit and its multiplier (`kB` is the SI spelling of `KB`).
const PARSE_UNITS: [(&str, u64); 10] = [
    ("B", 1),
    ("KiB", KI),
    ("MiB", KI * KI),
    ("GiB", KI * KI * KI),
    ("TiB", KI * KI * KI * KI),
    ("KB", KD),
    ("kB", KD),
    ("MB", KD * KD),
    ("GB", KD * KD * KD),
    ("TB", KD * KD * KD * KD),
];

/// Units tried when formatting, binary first so that a tie in length picks
/// the binary spelling (`1MiB`, not `1048576B`; `1KB` for 1000).
const FORMAT_UNITS: [(&str, u64); 8] = [
    ("TiB", KI * KI * KI * KI),
    ("GiB", KI * KI * KI),
    ("MiB", KI * KI),
    ("KiB", KI),
    ("TB", KD * KD * KD * KD),
    ("GB", KD * KD * KD),
    ("MB", KD * KD),
    ("KB", KD),
];

const SIZE_HINT: &str = "a size is a whole number with an optional unit: B, KiB, MiB, GiB, TiB \
(powers of 1024) or KB, MB, GB, TB (powers of 1000); a bare number is bytes, e.g. 4MiB";

/// The JSON Schema pattern of the string form (mirrors [`ByteSize::from_str`]).
pub(crate) const SIZE_PATTERN: &str = r"^(0|[1-9][0-9]*)( ?(B|KiB|MiB|GiB|TiB|KB|kB|MB|GB|TB))?$";

impl ByteSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, UnitError> {
        let trimmed = text;
        if trimmed.starts_with('-') {
            return Err(UnitError::new(
                format!("size '{text}' is negative"),
                SIZE_HINT,
            ));
        }
        let (number, unit) = split_number(trimmed);
        if number.is_empty() {
            return Err(UnitError::new(format!("'{text}' is not a size"), SIZE_HINT));
        }
        strict_number(number, text)?;
        if unit.starts_with(['.', ',']) {
            return Err(UnitError::new(
                format!("size '{text}' is not a whole number"),
                "use a smaller unit instead of a fraction, e.g. 1536KiB instead of 1.5MiB",
            ));
        }
        let multiplier = if unit.is_empty() {
            1
        } else {
            unit_multiplier(unit).ok_or_else(|| unknown_unit(text, unit))?
        };
        let too_large = || {
            UnitError::new(
                format!("size '{text}' is too large"),
                format!("the largest size is {}B (16 EiB - 1)", u64::MAX),
            )
        };
        let value: u64 = number.parse().map_err(|_| too_large())?;
        value
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(too_large)
    }
}

fn unit_multiplier(unit: &str) -> Option<u64> {
    PARSE_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|&(_, multiplier)| multiplier)
}

fn unknown_unit(text: &str, unit: &str) -> UnitError {
    // `mib`, `Kib`, `gb`: most likely the case is off; say which unit we
    // think was meant before listing them all.
    let close = PARSE_UNITS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
        .map(|(name, _)| *name);
    let hint = match close {
        Some(name) => format!("units are case-sensitive: did you mean {name}? ({SIZE_HINT})"),
        None => SIZE_HINT.to_string(),
    };
    UnitError::new(format!("unknown size unit '{unit}' in '{text}'"), hint)
}

impl fmt::Display for ByteSize {
    /// The shortest exact spelling; binary units win ties.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut best = format!("{}B", self.0);
        if self.0 != 0 {
            for (unit, multiplier) in FORMAT_UNITS {
                if self.0.is_multiple_of(multiplier) {
                    let candidate = format!("{}{unit}", self.0 / multiplier);
                    if candidate.len() < best.len() {
                        best = candidate;
                    }
                }
            }
        }
        f.write_str(&best)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SizeVisitor)
    }
}

pub(crate) struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as 4MiB, or a number of bytes")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v)
            .map(ByteSize)
            .map_err(|_| UnitError::new(format!("size {v} is negative"), SIZE_HINT).into_de())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
        Err(UnitError::new(
            format!("size {v} is not a whole number"),
            "use a smaller unit instead of a fraction, e.g. 1536KiB instead of 1.5MiB",
        )
        .into_de())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
        v.parse().map_err(UnitError::into_de)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size in bytes: a whole number with an optional unit, B, KiB, MiB, GiB, TiB (powers of 1024) or KB/kB, MB, GB, TB (powers of 1000). A bare number is bytes.",
            "examples": ["4MiB", "512KiB", 65536],
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": SIZE_PATTERN }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<u64, UnitError> {
        text.parse::<ByteSize>().map(ByteSize::bytes)
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("100B").unwrap(), 100);
        assert_eq!(parse("100").unwrap(), 100);
        assert_eq!(parse("512KiB").unwrap(), 512 * 1024);
        assert_eq!(parse("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse("2TiB").unwrap(), 2 << 40);
        assert_eq!(parse("10kB").unwrap(), 10_000);
        assert_eq!(parse("10KB").unwrap(), 10_000);
        assert_eq!(parse("3MB").unwrap(), 3_000_000);
        assert_eq!(parse("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse("1TB").unwrap(), 1_000_000_000_000);
        assert_eq!(parse("4 MiB").unwrap(), 4 << 20);
        assert_eq!(parse("0").unwrap(), 0);
    }

    #[test]
    fn rejects_bad_sizes_with_hints() {
        for bad in [
            "4MB/s",
            "10 parsecs",
            "MiB",
            "",
            "1.5MiB",
            "-1MiB",
            "4  MiB",
            "+4MiB",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(!err.hint.is_empty(), "{bad}: {err}");
        }
        assert!(parse("-1MiB").unwrap_err().message.contains("negative"));
        assert!(parse("1.5MiB").unwrap_err().hint.contains("1536KiB"));
        assert!(parse("4mib").unwrap_err().hint.contains("did you mean MiB"));
        assert!(
            parse("10 parsecs")
                .unwrap_err()
                .message
                .contains("unknown size unit 'parsecs'")
        );
    }

    #[test]
    fn rejects_overflow() {
        assert!(
            parse("99999999TiB")
                .unwrap_err()
                .message
                .contains("too large")
        );
        assert!(
            parse("99999999999999999999999")
                .unwrap_err()
                .message
                .contains("too large")
        );
        assert_eq!(parse(&u64::MAX.to_string()).unwrap(), u64::MAX);
    }

    #[test]
    fn formats_shortest_exact() {
        let cases = [
            (0, "0B"),
            (100, "100B"),
            (1000, "1KB"),
            (1024, "1KiB"),
            (65535, "65535B"),
            (65536, "64KiB"),
            (1 << 20, "1MiB"),
            (4 << 20, "4MiB"),
            (1536 * 1024, "1536KiB"),
            (4 << 30, "4GiB"),
            (2_048_000, "2048KB"),
            (1 << 40, "1TiB"),
            (u64::MAX, "18446744073709551615B"),
        ];
        for (bytes, text) in cases {
            assert_eq!(ByteSize(bytes).to_string(), text);
        }
    }

    #[test]
    fn format_then_parse_round_trips() {
        let mut samples = vec![
            0,
            1,
            999,
            1000,
            1023,
            1024,
            65535,
            1 << 20,
            3 << 30,
            u64::MAX,
        ];
        samples.extend((0..64).map(|shift| 1u64 << shift));
        samples.extend((1..20).map(|e| 10u64.pow(e)));
        for bytes in samples {
            let text = ByteSize(bytes).to_string();
            assert_eq!(parse(&text).unwrap(), bytes, "{text}");
        }
    }
}
