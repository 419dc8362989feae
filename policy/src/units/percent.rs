//! `Percent`: a whole percentage written with its sign (`80%`).

use super::UnitError;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// A whole percentage from 1% to 100%, written with the `%` sign.
///
/// The sign is required so that `0.8` and `80` cannot be confused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(pub u8);

const PERCENT_HINT: &str = "a percentage is a whole number from 1 to 100 followed by %, e.g. 80%";

/// The JSON Schema pattern (mirrors [`Percent::from_str`]).
pub(crate) const PERCENT_PATTERN: &str = r"^(100|[1-9][0-9]?) ?%$";

impl Percent {
    /// The percentage, 1..=100.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl FromStr for Percent {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, UnitError> {
        let Some(number) = text.strip_suffix('%') else {
            return Err(UnitError::new(
                format!("'{text}' is not a percentage"),
                PERCENT_HINT,
            ));
        };
        let number = number.strip_suffix(' ').unwrap_or(number);
        super::strict_number(number, text)?;
        match number.parse::<u32>() {
            Ok(n @ 1..=100) => Ok(Percent(n as u8)),
            Ok(_) => Err(UnitError::new(
                format!("percentage '{text}' is out of range"),
                PERCENT_HINT,
            )),
            Err(_) => Err(UnitError::new(
                format!("'{text}' is not a whole percentage"),
                PERCENT_HINT,
            )),
        }
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PercentVisitor)
    }
}

struct PercentVisitor;

impl PercentVisitor {
    fn missing_sign<E: de::Error>(value: impl fmt::Display) -> E {
        UnitError::new(
            format!("percentage {value} has no % sign"),
            format!("write it as {value}%; {PERCENT_HINT}"),
        )
        .into_de()
    }
}

impl Visitor<'_> for PercentVisitor {
    type Value = Percent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a percentage such as 80%")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Percent, E> {
        Err(Self::missing_sign(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Percent, E> {
        Err(Self::missing_sign(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Percent, E> {
        Err(UnitError::new(format!("{v} is not a whole percentage"), PERCENT_HINT).into_de())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Percent, E> {
        v.parse().map_err(UnitError::into_de)
    }
}

impl JsonSchema for Percent {
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A whole percentage from 1% to 100%, with the % sign.",
            "examples": ["80%"],
            "type": "string",
            "pattern": PERCENT_PATTERN
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        for (text, value) in [("1%", 1), ("80%", 80), ("100%", 100), ("80 %", 80)] {
            assert_eq!(text.parse::<Percent>().unwrap(), Percent(value));
        }
        assert_eq!(Percent(80).to_string(), "80%");
        for n in 1..=100 {
            let p = Percent(n);
            assert_eq!(p.to_string().parse::<Percent>().unwrap(), p);
        }
    }

    #[test]
    fn rejects_out_of_range_and_missing_sign() {
        for bad in ["0%", "101%", "150%", "80", "-5%", "8.5%", "%", "abc%"] {
            let err = bad.parse::<Percent>().unwrap_err();
            assert!(err.hint.contains("1 to 100"), "{bad}: {err}");
        }
        let err = yaml_serde::from_str::<Percent>("80").unwrap_err();
        assert!(err.to_string().contains("no % sign"), "{err}");
    }
}
