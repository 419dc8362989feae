//! `PortRange`: one TCP port (`443`) or an inclusive range (`8000-8100`).

use super::UnitError;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// An inclusive range of TCP ports.
///
/// Written as a port (`443`) or as `"START-END"` (`8000-8100`); serialized
/// back the same way. Parsing only checks that each bound fits in 16 bits:
/// port 0 and reversed ranges are reported by validation, together with
/// every other problem of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port of the range.
    pub start: u16,
    /// Last port of the range (inclusive).
    pub end: u16,
}

const PORT_HINT: &str = "write a port from 1 to 65535 (443) or an inclusive range (8000-8100)";

/// The JSON Schema pattern of the string form.
pub(crate) const PORT_RANGE_PATTERN: &str = r"^(0|[1-9][0-9]{0,4})(-(0|[1-9][0-9]{0,4}))?$";

impl PortRange {
    /// A range holding one port.
    pub const fn single(port: u16) -> Self {
        PortRange {
            start: port,
            end: port,
        }
    }

    /// Number of ports in the range (0 when reversed).
    pub fn len(self) -> u32 {
        if self.end < self.start {
            0
        } else {
            u32::from(self.end - self.start) + 1
        }
    }

    /// True when the range holds no port (it is reversed).
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    /// Whether the two ranges share a port.
    pub fn overlaps(self, other: PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// The ports of the range, in order.
    pub fn ports(self) -> impl Iterator<Item = u16> {
        self.start..=self.end
    }
}

fn port_from(text: &str, whole: &str) -> Result<u16, UnitError> {
    let digits = text;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UnitError::new(
            format!("'{whole}' is not a port or port range"),
            PORT_HINT,
        ));
    }
    super::strict_number(digits, whole)?;
    digits.parse::<u16>().map_err(|_| {
        UnitError::new(
            format!("port {digits} is out of range in '{whole}'"),
            PORT_HINT,
        )
    })
}

impl FromStr for PortRange {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, UnitError> {
        match text.split_once('-') {
            Some((start, end)) => Ok(PortRange {
                start: port_from(start, text)?,
                end: port_from(end, text)?,
            }),
            None => port_from(text, text).map(PortRange::single),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.start == self.end {
            serializer.serialize_u16(self.start)
        } else {
            serializer.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PortRangeVisitor)
    }
}

struct PortRangeVisitor;

impl Visitor<'_> for PortRangeVisitor {
    type Value = PortRange;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port (443) or a port range (8000-8100)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
        u16::try_from(v)
            .map(PortRange::single)
            .map_err(|_| UnitError::new(format!("port {v} is out of range"), PORT_HINT).into_de())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(UnitError::new(format!("port {v} is negative"), PORT_HINT).into_de()),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
        v.parse().map_err(UnitError::into_de)
    }
}

impl JsonSchema for PortRange {
    fn schema_name() -> Cow<'static, str> {
        "PortRange".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A TCP port (443) or an inclusive port range (\"8000-8100\"), ports 1 to 65535.",
            "examples": [443, "8000-8100"],
            "oneOf": [
                { "type": "integer", "minimum": 1, "maximum": 65535 },
                { "type": "string", "pattern": PORT_RANGE_PATTERN }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_and_ranges() {
        assert_eq!("443".parse::<PortRange>().unwrap(), PortRange::single(443));
        assert_eq!(
            "8000-8100".parse::<PortRange>().unwrap(),
            PortRange {
                start: 8000,
                end: 8100
            }
        );
        // One spelling, the schema's: no spaces, no leading zeros.
        for bad in ["8000 - 8100", " 443", "443 ", "080", "08000-8100"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad:?} parsed");
        }
        // Reversed ranges and port 0 parse; validation reports them.
        assert_eq!(
            "9-1".parse::<PortRange>().unwrap(),
            PortRange { start: 9, end: 1 }
        );
        assert_eq!("0".parse::<PortRange>().unwrap(), PortRange::single(0));
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        for bad in ["", "http", "1-", "-1", "70000", "1-70000", "1-2-3", "4.5"] {
            let err = bad.parse::<PortRange>().unwrap_err();
            assert!(err.hint.contains("65535"), "{bad}: {err}");
        }
        assert!(yaml_serde::from_str::<PortRange>("70000").is_err());
        assert!(yaml_serde::from_str::<PortRange>("-1").is_err());
    }

    #[test]
    fn serializes_back_the_same_way() {
        let single = yaml_serde::to_string(&PortRange::single(443)).unwrap();
        assert_eq!(single.trim(), "443");
        let range = yaml_serde::to_string(&PortRange { start: 1, end: 9 }).unwrap();
        assert_eq!(range.trim(), "1-9");
        for text in ["443", "1-9", "8000-8100"] {
            let parsed: PortRange = yaml_serde::from_str(text).unwrap();
            assert_eq!(yaml_serde::to_string(&parsed).unwrap().trim(), text);
        }
    }

    #[test]
    fn sizes_and_overlaps() {
        let r = PortRange {
            start: 8000,
            end: 8100,
        };
        assert_eq!(r.len(), 101);
        assert_eq!(
            PortRange {
                start: 0,
                end: 65535
            }
            .len(),
            65536
        );
        assert_eq!(PortRange { start: 9, end: 1 }.len(), 0);
        assert!(r.overlaps(PortRange::single(8100)));
        assert!(!r.overlaps(PortRange::single(8101)));
        assert!(r.contains(8050));
    }
}
