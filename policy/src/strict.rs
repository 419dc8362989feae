//! Deserializers stricter than serde's defaults, for values where YAML's
//! implicit typing would otherwise hide a mistake.
//!
//! yaml_serde hands any plain scalar to a `String` field (`name: 5` becomes
//! `"5"`, `name: true` becomes `"true"`). Names are identifiers that other
//! keys refer to, so a value YAML reads as a number or boolean is rejected
//! and the operator is asked to quote it.

use super::error::message_with_hint;
use super::units::{ByteSize, SizeVisitor};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use std::fmt;

/// A name: must be a YAML string, not a number, boolean or null.
pub(crate) fn name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    deserializer.deserialize_any(NameVisitor)
}

/// A list of names (see [`name`]).
pub(crate) fn names<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    deserializer.deserialize_seq(NamesVisitor)
}

struct NameVisitor;

impl NameVisitor {
    fn not_a_string<E: de::Error>(what: &str, shown: impl fmt::Display) -> E {
        E::custom(message_with_hint(
            &format!("invalid type: {what} `{shown}`, expected a name (a string)"),
            &format!("quote it if it is meant as a name: \"{shown}\""),
        ))
    }
}

impl<'de> Visitor<'de> for NameVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a name (a string)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Err(Self::not_a_string("integer", v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Err(Self::not_a_string("integer", v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Err(Self::not_a_string("number", v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Err(Self::not_a_string("boolean", v))
    }
}

/// Newtype so a sequence element goes through [`NameVisitor`].
struct Name(String);

impl<'de> de::Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        name(deserializer).map(Name)
    }
}

struct NamesVisitor;

impl<'de> Visitor<'de> for NamesVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of names")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Name(n)) = seq.next_element()? {
            out.push(n);
        }
        Ok(out)
    }
}

/// Largest TCP receive window: a 16-bit window field scaled by the maximum
/// window-scale shift of 14 (RFC 7323).
pub const MAX_WINDOW_BYTES: u32 = 65535 << 14;

/// Largest window-scale shift a peer may announce (RFC 7323, 2.3).
const MAX_WINDOW_SHIFT: u32 = 14;

/// Smallest `set_window`: the datapath writes `bytes >> shift` into the
/// 16-bit field, so below `1 << 14` a flow whose peer scales by 14 would
/// be told its window is zero. A zero window is not a slow window: the
/// sender stops and waits for an update that emptcp keeps rewriting back
/// to zero, a permanent stall. 16 KiB is the smallest value that leaves
/// the field at least 1 under every shift.
pub const MIN_WINDOW_BYTES: u32 = 1 << MAX_WINDOW_SHIFT;

/// `set_window.bytes`: a size (`64KiB`) or a plain integer,
/// `MIN_WINDOW_BYTES..=MAX_WINDOW_BYTES`.
pub(crate) fn window_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    deserializer.deserialize_any(WindowVisitor)
}

/// A size, range-checked inside the visitor: yaml_serde marks an error
/// with the position of the node being visited when it is raised, so a
/// check made after `deserialize` returned would point at the enclosing
/// mapping instead of the value.
struct WindowVisitor;

impl WindowVisitor {
    fn check<E: de::Error>(size: Result<ByteSize, E>) -> Result<u32, E> {
        let size = size?;
        match u32::try_from(size.bytes()) {
            Ok(bytes @ MIN_WINDOW_BYTES..=MAX_WINDOW_BYTES) => Ok(bytes),
            Ok(bytes) if bytes < MIN_WINDOW_BYTES => Err(E::custom(message_with_hint(
                &format!(
                    "window of {size} would advertise a zero window (a permanent stall) to a peer that scales its window by {MAX_WINDOW_SHIFT}"
                ),
                &format!(
                    "use at least {} ({MIN_WINDOW_BYTES} bytes: one unit of the 16-bit window field at the largest window-scale shift, {MAX_WINDOW_SHIFT})",
                    ByteSize(u64::from(MIN_WINDOW_BYTES))
                ),
            ))),
            _ => Err(E::custom(message_with_hint(
                &format!("window of {size} is out of range"),
                &format!(
                    "a window is {} to {} ({MAX_WINDOW_BYTES} bytes: 65535 scaled by the maximum window-scale shift of {MAX_WINDOW_SHIFT})",
                    ByteSize(u64::from(MIN_WINDOW_BYTES)),
                    ByteSize(u64::from(MAX_WINDOW_BYTES))
                ),
            ))),
        }
    }
}

impl Visitor<'_> for WindowVisitor {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SizeVisitor.expecting(f)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
        Self::check(SizeVisitor.visit_u64(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
        Self::check(SizeVisitor.visit_i64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u32, E> {
        Self::check(SizeVisitor.visit_f64(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
        Self::check(SizeVisitor.visit_str(v))
    }
}

/// Serialized as a size, like the other sizes of the file.
pub(crate) fn serialize_window_bytes<S: serde::Serializer>(
    bytes: &u32,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&ByteSize(u64::from(*bytes)), serializer)
}

/// JSON Schema of `set_window.bytes`.
pub(crate) fn window_bytes_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Window in bytes: a size (64KiB) or a plain integer, 16384 (1 << 14: smaller values would advertise a zero window to a peer that scales by 14) to 1073725440 (65535 << 14).",
        "examples": ["64KiB", 65535],
        "oneOf": [
            { "type": "integer", "minimum": MIN_WINDOW_BYTES, "maximum": MAX_WINDOW_BYTES },
            { "type": "string", "pattern": super::units::SIZE_PATTERN }
        ]
    })
}

/// Address prefixes (`203.0.113.0/24`), with a hint when the prefix length
/// is missing or the text is not an address at all (ipnet's own message is
/// only "invalid IP address syntax").
pub(crate) fn prefixes<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<ipnet::IpNet>, D::Error> {
    deserializer.deserialize_seq(PrefixesVisitor)
}

struct Prefix(ipnet::IpNet);

impl<'de> de::Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PrefixVisitor)
    }
}

/// Parses inside the visitor, so that errors point at the prefix itself
/// (see [`WindowVisitor`]).
struct PrefixVisitor;

impl Visitor<'_> for PrefixVisitor {
    type Value = Prefix;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an IP prefix such as 203.0.113.0/24")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Prefix, E> {
        let trimmed = text.trim();
        trimmed.parse().map(Prefix).map_err(|_| {
            let hint = match trimmed.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => {
                    format!("add a prefix length, e.g. {trimmed}/32 for this one host")
                }
                Ok(std::net::IpAddr::V6(_)) => {
                    format!("add a prefix length, e.g. \"{trimmed}/128\" for this one host")
                }
                Err(_) => {
                    "write an address and a prefix length, e.g. 203.0.113.0/24 or \"2001:db8::/32\""
                        .to_string()
                }
            };
            E::custom(message_with_hint(
                &format!("'{text}' is not an IP prefix"),
                &hint,
            ))
        })
    }
}

struct PrefixesVisitor;

impl<'de> Visitor<'de> for PrefixesVisitor {
    type Value = Vec<ipnet::IpNet>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of IP prefixes")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Prefix(net)) = seq.next_element()? {
            out.push(net);
        }
        Ok(out)
    }
}

/// Schema of an address prefix, used instead of ipnet's own: ipnet 2.12's
/// `IpNet` schema is a `oneOf` whose IPv6 pattern also matches IPv4
/// prefixes, so every IPv4 prefix fails it ("valid under more than one").
/// Here the IPv6 pattern requires a ':'.
pub(crate) struct IpPrefixSchema;

impl schemars::JsonSchema for IpPrefixSchema {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IpPrefix".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An IPv4 or IPv6 address prefix (address/length) without host bits set. Quote IPv6 prefixes.",
            "examples": ["203.0.113.0/24", "2001:db8::/32"],
            "type": "string",
            "anyOf": [
                { "pattern": r"^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])/(?:3[0-2]|[1-2][0-9]|[0-9])$" },
                { "pattern": r"^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*/(?:12[0-8]|1[0-1][0-9]|[1-9][0-9]|[0-9])$" }
            ]
        })
    }
}
