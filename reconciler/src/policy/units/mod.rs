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
        E::custom(crate::policy::error::message_with_hint(
            &self.message,
            &self.hint,
        ))
    }
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.hint)
    }
}

impl std::error::Error for UnitError {}

/// Splits `"123MiB"` into `("123", "MiB")` at the first non-digit, dropping
/// one optional space between number and unit (`"4 MiB"`).
fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, rest) = text.split_at(end);
    (number, rest.strip_prefix(' ').unwrap_or(rest))
}
