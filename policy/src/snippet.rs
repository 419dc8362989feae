//! The human form of policy errors: each error's one-line
//! `file:line:column: message`, then the source line it points at with a
//! caret under the column (as rustc and ripgrep show them), then its hint.
//! Scripts and `-o json` keep the one-line form ([`PolicyErrors`]'
//! `Display`); this form only adds lines after it, so a `grep` for
//! `file:line:column` finds both.
//!
//! Rendering is pure: the caller says how to get a file's text, so the
//! layout is tested without files and the CLI decides to read them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{PolicyError, PolicyErrors};

/// Tabs are shown as this many spaces, in the line and in the caret's
/// padding alike, so the caret stays under its column whatever the
/// terminal's tab stops (rustc does the same).
const TAB: &str = "    ";

/// Renders every error, separated by a blank line. `source_of` returns the
/// text of a file (None when it cannot be read: that error is then shown
/// in its one-line form).
pub fn render_snippets(
    errors: &PolicyErrors,
    mut source_of: impl FnMut(&Path) -> Option<String>,
) -> String {
    let mut sources: HashMap<PathBuf, Option<String>> = HashMap::new();
    let blocks: Vec<String> = errors
        .iter()
        .map(|e| {
            let text = e.line.and_then(|_| {
                sources
                    .entry(e.file.clone())
                    .or_insert_with(|| source_of(&e.file))
                    .as_deref()
            });
            render_one(e, text)
        })
        .collect();
    blocks.join("\n\n")
}

/// One error: its one-line form, the snippet when the error has a position
/// inside `source`, and the hint.
fn render_one(e: &PolicyError, source: Option<&str>) -> String {
    let mut out = PolicyError {
        hint: None,
        ..e.clone()
    }
    .to_string();
    let line = e
        .line
        .zip(e.column)
        .zip(source)
        .and_then(|((line, column), text)| {
            let shown = yaml_lines(text).nth(line.checked_sub(1)?)?;
            Some(snippet(line, column, shown))
        });
    if let Some(snippet) = line {
        out.push('\n');
        out.push_str(&snippet);
    }
    if let Some(hint) = &e.hint {
        let _ = write!(out, "\n  hint: {hint}");
    }
    out
}

/// The lines of `text` as YAML numbers them: a line break is LF, CRLF or
/// a lone CR (YAML 1.2, `b-break`), so a file saved with old Mac line
/// endings shows the line the error names, not the whole file.
fn yaml_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        match t.find(['\r', '\n']) {
            Some(i) => {
                let skip = if t[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&t[i + skip..]).filter(|r| !r.is_empty());
                Some(&t[..i])
            }
            None => {
                rest = None;
                Some(t)
            }
        }
    })
}

/// The gutter, the line, and the caret under `column` (1-based, in
/// characters; a column past the end points just after the last one).
fn snippet(line: usize, column: usize, text: &str) -> String {
    let number = line.to_string();
    let gutter = " ".repeat(number.len());
    let before: String = text
        .chars()
        .take(column.saturating_sub(1))
        .map(|c| if c == '\t' { TAB } else { " " })
        .collect();
    format!(
        "{gutter} |\n{number} | {}\n{gutter} | {before}^",
        text.replace('\t', TAB).trim_end()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Pos;

    fn at(line: usize, column: usize) -> PolicyError {
        PolicyError::new("p.yaml", "bad value")
            .at(Some(Pos::new(line, column)))
            .hint("use a good one")
    }

    fn one(e: PolicyError, text: &str) -> String {
        render_snippets(&e.into(), |_| Some(text.to_string()))
    }

    #[test]
    fn caret_under_the_column() {
        let text = "version: 1\nchains:\n  - name: x\n    actions: [count, frob]\n";
        assert_eq!(
            one(at(4, 22), text),
            "p.yaml:4:22: bad value\n  |\n4 |     actions: [count, frob]\n  |                      ^\n  hint: use a good one"
        );
    }

    #[test]
    fn gutter_is_as_wide_as_the_line_number() {
        let text = "a\n".repeat(11) + "key: v\n";
        let out = one(at(12, 6), &text);
        assert!(out.contains("\n   |\n12 | key: v\n   |      ^\n"), "{out}");
    }

    #[test]
    fn tabs_are_expanded_in_the_line_and_the_padding() {
        let out = one(at(1, 3), "\ta: b\n");
        assert!(out.contains("\n1 |     a: b\n  |      ^\n"), "{out}");
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let out = one(at(1, 8), "name: é x\n");
        assert!(out.contains("\n  |        ^\n"), "{out}");
    }

    #[test]
    fn column_past_the_end_points_after_the_line() {
        let out = one(at(1, 9), "a: [b, c\n");
        assert!(out.contains("\n1 | a: [b, c\n  |         ^\n"), "{out}");
    }

    #[test]
    fn lines_break_where_yaml_breaks_them() {
        for text in [
            "a: 1\nbb: 2\nccc: 3\n",
            "a: 1\r\nbb: 2\r\nccc: 3\r\n",
            "a: 1\rbb: 2\rccc: 3\r",
            "a: 1\r\nbb: 2\rccc: 3",
        ] {
            let lines: Vec<&str> = yaml_lines(text).collect();
            assert_eq!(lines, ["a: 1", "bb: 2", "ccc: 3"], "{text:?}");
        }
        assert_eq!(yaml_lines("a\n\nb").collect::<Vec<_>>(), ["a", "", "b"]);
    }

    /// The position the loader reports in a file with lone-CR line breaks
    /// names the line the snippet shows.
    #[test]
    fn a_cr_only_file_shows_the_line_the_loader_names() {
        let text = "version: 1\rinterfaces: []\rchains:\r  - name: x\r    actions: [count, frob]\r";
        let errors = crate::load_str("p.yaml", text).unwrap_err();
        let out = render_snippets(&errors, |_| Some(text.to_string()));
        assert!(
            out.starts_with("p.yaml:5:22: ")
                && out.contains("\n5 |     actions: [count, frob]\n  |                      ^\n"),
            "{out}"
        );
    }

    #[test]
    fn no_snippet_without_a_position_or_a_line() {
        let unplaced = PolicyError::new("dir", "no *.yaml files in dir").hint("add one");
        assert_eq!(
            one(unplaced, ""),
            "dir: no *.yaml files in dir\n  hint: add one"
        );
        // A line beyond the file (the file changed since it was read).
        assert_eq!(
            one(at(9, 1), "version: 1\n"),
            "p.yaml:9:1: bad value\n  hint: use a good one"
        );
        // An unreadable file.
        let e: PolicyErrors = at(1, 1).into();
        assert_eq!(
            render_snippets(&e, |_| None),
            "p.yaml:1:1: bad value\n  hint: use a good one"
        );
    }

    #[test]
    fn each_file_is_read_once_and_errors_are_separated() {
        let errors = PolicyErrors(vec![at(1, 1), at(2, 3)]);
        let mut reads = 0;
        let out = render_snippets(&errors, |_| {
            reads += 1;
            Some("a: 1\nbb: 2\n".to_string())
        });
        assert_eq!(reads, 1);
        assert_eq!(
            out,
            "p.yaml:1:1: bad value\n  |\n1 | a: 1\n  | ^\n  hint: use a good one\n\n\
             p.yaml:2:3: bad value\n  |\n2 | bb: 2\n  |   ^\n  hint: use a good one"
        );
    }
}
