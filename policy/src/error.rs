//! Errors of loading a policy: each names the file, the position in it when
//! there is one, what is wrong, and (as a hint) what would be valid.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a policy, located in its source file.
///
/// Displayed as `FILE:LINE:COLUMN: MESSAGE` followed, when there is a hint,
/// by an indented `hint: HINT` line. Lines and columns count from 1; columns
/// count characters, as YAML editors do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file the error is in (for `load_dir`, the drop-in file itself; for
    /// a directory-level problem, the directory).
    pub file: PathBuf,
    /// 1-based line, when the error has a position in the file.
    pub line: Option<usize>,
    /// 1-based column (in characters), when the error has a position.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// What would be valid, or how to fix it.
    pub hint: Option<String>,
}

impl PolicyError {
    pub(crate) fn new(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        PolicyError {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn at(mut self, pos: Option<Pos>) -> Self {
        self.line = pos.map(|p| p.line);
        self.column = pos.map(|p| p.column);
        self
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub(crate) fn maybe_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

/// Every problem found in a policy. Never empty when returned as an error.
///
/// Displayed one error per block (a message line, then an optional hint
/// line), in file order and, within a file, in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl PolicyErrors {
    /// The errors, in display order.
    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.0.iter()
    }

    /// How many errors there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false for an error returned by the loaders.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<PolicyError> for PolicyErrors {
    fn from(error: PolicyError) -> Self {
        PolicyErrors(vec![error])
    }
}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub(crate) fn new(line: usize, column: usize) -> Self {
        Pos { line, column }
    }
}

/// `file:line:column` (or just `file`), for messages that mention a second
/// location, such as the first definition of a duplicate name.
pub(crate) fn describe_location(file: &Path, pos: Option<Pos>) -> String {
    match pos {
        Some(p) => format!("{}:{}:{}", file.display(), p.line, p.column),
        None => file.display().to_string(),
    }
}

/// serde's `Error::custom` carries only a message; to give a hint from inside
/// a `Deserialize` impl (e.g. the accepted units of a size), the hint is
/// appended after this separator and split off again when the YAML error is
/// turned into a [`PolicyError`]. An ASCII control character never appears
/// in our messages, so the split is unambiguous.
const HINT_SEPARATOR: char = '\u{1f}';

/// Joins a message and a hint into one serde error message.
pub(crate) fn message_with_hint(message: &str, hint: &str) -> String {
    format!("{message}{HINT_SEPARATOR}{hint}")
}

/// Splits what [`message_with_hint`] joined. yaml_serde may have appended
/// text after the hint (its own position), which the caller strips first.
pub(crate) fn split_hint(text: &str) -> (String, Option<String>) {
    match text.split_once(HINT_SEPARATOR) {
        Some((message, hint)) => (message.to_string(), Some(hint.to_string())),
        None => (text.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_position_and_hint() {
        let e = PolicyError::new("p.yaml", "bad thing")
            .at(Some(Pos::new(3, 5)))
            .hint("do this");
        assert_eq!(e.to_string(), "p.yaml:3:5: bad thing\n  hint: do this");
    }

    #[test]
    fn display_without_position() {
        let e = PolicyError::new("dir", "no *.yaml files in dir");
        assert_eq!(e.to_string(), "dir: no *.yaml files in dir");
    }

    #[test]
    fn errors_display_one_block_each() {
        let errors = PolicyErrors(vec![
            PolicyError::new("a", "one")
                .at(Some(Pos::new(1, 1)))
                .hint("h"),
            PolicyError::new("b", "two").at(Some(Pos::new(2, 3))),
        ]);
        assert_eq!(errors.to_string(), "a:1:1: one\n  hint: h\nb:2:3: two");
    }

    #[test]
    fn hint_round_trips_through_a_message() {
        let joined = message_with_hint("bad unit", "use MiB");
        assert_eq!(
            split_hint(&joined),
            ("bad unit".to_string(), Some("use MiB".to_string()))
        );
        assert_eq!(split_hint("plain"), ("plain".to_string(), None));
    }
}
