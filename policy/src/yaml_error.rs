//! Turns a yaml_serde error (syntax, unknown field, wrong type, bad unit)
//! into a [`PolicyError`] with a position and a hint.

use super::error::{PolicyError, Pos, split_hint};
use super::locate;
use super::suggest::closest;
use std::path::Path;

/// Converts `err`, raised while reading `text` from `file`.
pub(crate) fn convert(file: &Path, text: &str, err: &yaml_serde::Error) -> PolicyError {
    let reported = err.location().map(|l| Pos::new(l.line(), l.column()));
    let (mut message, embedded_hint) = split_hint(&strip_marks(&err.to_string(), reported));
    let mut pos = reported.map(|p| inside(text, p));
    let mut hint = embedded_hint.or_else(|| hint_for(&message));
    if pos.is_some_and(|p| char_at(text, p) == Some('\t')) {
        // libyaml often reports a tab as "found character that cannot
        // start any token", which does not say what the character is.
        hint = Some("YAML indentation must use spaces, not tabs".to_string());
    }

    if let Some(field) = between(&message, "duplicate field `", "`") {
        // serde reports a duplicate key at the start of its mapping; point
        // at the second occurrence of the key instead.
        if let Some(second) = pos
            .and_then(|p| locate::build(text)?.map_at(p).cloned())
            .and_then(|map| map.keys_named(field).nth(1).and_then(|k| k.pos))
        {
            pos = Some(second);
        }
    } else if message.contains("more than one document") {
        message = "more than one YAML document in the file".to_string();
        hint = Some(
            "a policy file holds one document; put each part in its own file of a drop-in directory"
                .to_string(),
        );
        pos = pos.or_else(|| second_document(text));
    }
    PolicyError::new(file, message).at(pos).maybe_hint(hint)
}

/// `pos`, moved to the end of `text` when it lies past it. libyaml reads a
/// virtual line break at the end of a file without a final newline and can
/// report an error there, one line past the last (found by fuzzing:
/// `version: 1\nchains:ion` was reported at 3:1 in a file of two lines).
fn inside(text: &str, pos: Pos) -> Pos {
    let widths = line_widths(text);
    let line = pos.line.clamp(1, widths.len());
    let width = widths[line - 1] + 1;
    let column = if line < pos.line {
        width
    } else {
        pos.column.clamp(1, width)
    };
    Pos::new(line, column)
}

/// The width in characters of each line of `text`, lines as libyaml counts
/// them: CR LF, CR, LF, NEL, LS and PS end a line (YAML 1.1 line breaks).
pub(crate) fn line_widths(text: &str) -> Vec<usize> {
    let mut widths = vec![0];
    let mut after_cr = false;
    for c in text.chars() {
        if c == '\n' && after_cr {
            after_cr = false;
            continue; // CR LF is one break
        }
        after_cr = c == '\r';
        if matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}') {
            widths.push(0);
        } else if let Some(w) = widths.last_mut() {
            *w += 1;
        }
    }
    widths
}

/// The character at a 1-based line and column.
fn char_at(text: &str, pos: Pos) -> Option<char> {
    text.lines()
        .nth(pos.line.checked_sub(1)?)?
        .chars()
        .nth(pos.column.checked_sub(1)?)
}

/// Removes the error's own position from the text yaml_serde and libyaml
/// write (` at line L column C`, or ` at position N` when they have only an
/// offset): it is in the error's own fields. Any other position is kept,
/// as in libyaml's "..., while parsing a flow sequence at line 6 column 13",
/// which says where the unclosed bracket was opened.
fn strip_marks(text: &str, pos: Option<Pos>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(" at ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " at ".len()..];
        match skip_mark(after) {
            Some((mark, tail)) if mark.is_none() || mark == pos => rest = tail,
            _ => {
                out.push_str(" at ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// If `text` starts with `line L column C` (giving its position) or
/// `position N` (giving None), that mark and what follows it.
fn skip_mark(text: &str) -> Option<(Option<Pos>, &str)> {
    fn number(t: &str) -> Option<(usize, &str)> {
        let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        Some((t[..end].parse().ok()?, &t[end..]))
    }
    if let Some(t) = text.strip_prefix("line ") {
        let (line, t) = number(t)?;
        let (column, t) = number(t.strip_prefix(" column ")?)?;
        Some((Some(Pos::new(line, column)), t))
    } else {
        let (_, t) = number(text.strip_prefix("position ")?)?;
        Some((None, t))
    }
}

/// The text between `start` and the next `end`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let (_, after) = text.split_once(start)?;
    after.split_once(end).map(|(inside, _)| inside)
}

/// Names quoted with backticks after `marker`: the alternatives serde lists
/// in "expected one of `a`, `b`".
fn listed_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    let Some((_, list)) = text.split_once(marker) else {
        return Vec::new();
    };
    list.split('`').skip(1).step_by(2).collect()
}

fn hint_for(message: &str) -> Option<String> {
    let hint = if let Some(field) = between(message, "unknown field `", "`") {
        let valid = listed_after(message, "expected");
        match closest(field, valid.iter().copied()) {
            Some(close) => format!("did you mean `{close}`?"),
            None if valid.is_empty() => "this mapping takes no fields".to_string(),
            None => format!("valid fields here: {}", valid.join(", ")),
        }
    } else if let Some(variant) = between(message, "unknown variant `", "`") {
        let valid = listed_after(message, "expected");
        match closest(variant, valid.iter().copied()) {
            Some(close) => format!("did you mean `{close}`?"),
            None => format!("valid values here: {}", valid.join(", ")),
        }
    } else if let Some(field) = between(message, "missing field `", "`") {
        match field {
            "version" => "add `version: 1` at the top of the file".to_string(),
            _ => format!("add `{field}:` here; see docs/policy.md"),
        }
    } else if message.contains("duplicate field") {
        "each key may appear only once in a mapping".to_string()
    } else if message.contains("expected unit variant") {
        "this one takes no arguments: write just its name, e.g. `- count`".to_string()
    } else if message.contains("expected struct variant")
        || message.contains("expected newtype variant")
    {
        "this one takes arguments as a single-key map, e.g. `- set_backup: {backup: true}`"
            .to_string()
    } else if message.contains("expected a sequence") {
        "write a list: `[a, b]`, or one `- item` per line".to_string()
    } else if message.contains("expected a boolean") {
        "write true or false".to_string()
    } else if message.contains("invalid type: string") && message.contains("expected u") {
        "write the number without quotes".to_string()
    } else if message.contains("expected u8") {
        "a whole number from 0 to 255".to_string()
    } else if message.contains("expected u16") {
        "a whole number from 0 to 65535".to_string()
    } else if message.contains("expected u32") {
        "a whole number from 0 to 4294967295".to_string()
    } else if message.contains("expected struct") || message.contains("expected a map") {
        "write a mapping of `key: value` entries".to_string()
    } else if message.contains("invalid IP address syntax") {
        "write an IPv4 or IPv6 address, e.g. 192.0.2.1 or \"2001:db8::1\"".to_string()
    } else {
        return syntax_hint(message);
    };
    Some(hint)
}

/// Hints for libyaml's syntax errors.
fn syntax_hint(message: &str) -> Option<String> {
    let hint = if message.contains("tab") {
        "YAML indentation must use spaces, not tabs"
    } else if message.contains("flow") {
        "check for an unclosed '[' or '{', or a missing ',' between items"
    } else if message.contains("mapping values are not allowed") {
        "check the indentation of this line, or quote a value that contains ': '"
    } else if message.contains("did not find expected key")
        || message.contains("did not find expected '-'")
    {
        "check the indentation: the entries of one mapping or list start in the same column"
    } else if message.contains("could not find expected ':'") {
        "a key must be followed by ': '"
    } else if message.contains("found unexpected end of stream")
        || message.contains("found unknown escape")
    {
        "check for an unclosed quote"
    } else if message.contains("unknown anchor") {
        "define the anchor (&name) before using it (*name)"
    } else if message.contains("while scanning") || message.contains("while parsing") {
        "fix the YAML syntax at this position"
    } else {
        "see docs/policy.md for the format of this field"
    };
    Some(hint.to_string())
}

/// Position of the `---` that starts a second document, for the
/// multi-document error that yaml_serde reports without a position.
fn second_document(text: &str) -> Option<Pos> {
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if line.starts_with("---") && seen_content {
            return Some(Pos::new(i + 1, 1));
        }
        if !trimmed.is_empty() && !trimmed.starts_with('#') && !line.starts_with("---") {
            seen_content = true;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Policy;

    fn error_for(text: &str) -> PolicyError {
        let err = yaml_serde::from_str::<Policy>(text).unwrap_err();
        convert(Path::new("p.yaml"), text, &err)
    }

    #[test]
    fn strips_positions_from_messages() {
        let at = Some(Pos::new(3, 5));
        assert_eq!(
            strip_marks(
                "bad at line 3 column 5, while parsing a node at line 1 column 2",
                at
            ),
            "bad, while parsing a node at line 1 column 2"
        );
        assert_eq!(
            strip_marks("look at this at position 7", None),
            "look at this"
        );
    }

    #[test]
    fn unknown_field_keeps_serde_list_and_suggests() {
        let e = error_for("version: 1\nchainz: []\n");
        assert!(
            e.message
                .contains("unknown field `chainz`, expected one of"),
            "{e}"
        );
        assert_eq!(e.hint.as_deref(), Some("did you mean `chains`?"));
        assert_eq!((e.line, e.column), (Some(2), Some(1)));
    }

    #[test]
    fn duplicate_field_points_at_the_second_key() {
        let e = error_for("version: 1\nchains: []\nversion: 1\n");
        assert!(e.message.contains("duplicate field `version`"), "{e}");
        assert_eq!((e.line, e.column), (Some(3), Some(1)));
    }

    #[test]
    fn second_document_is_located() {
        let e = error_for("# c\nversion: 1\n---\nversion: 1\n");
        assert_eq!(e.message, "more than one YAML document in the file");
        assert_eq!((e.line, e.column), (Some(3), Some(1)));
    }

    #[test]
    fn an_error_at_the_end_stays_inside_the_file() {
        let e = error_for("version: 1\nchains:ion");
        assert!(e.message.starts_with("could not find expected ':'"), "{e}");
        assert_eq!((e.line, e.column), (Some(2), Some(11)));
        assert_eq!(inside("a\nbc\n", Pos::new(2, 9)), Pos::new(2, 3));
        assert_eq!(inside("a\nbc\n", Pos::new(3, 1)), Pos::new(3, 1));
        assert_eq!(inside("", Pos::new(4, 4)), Pos::new(1, 1));
        // A lone CR ends a line for YAML: the position is kept.
        assert_eq!(inside("a\rbc: 1\n", Pos::new(2, 4)), Pos::new(2, 4));
        assert_eq!(line_widths("ab\r\ncd\re\u{2028}"), [2, 2, 1, 0]);
    }

    #[test]
    fn tabs_get_a_hint() {
        let e = error_for("version: 1\nchains:\n\t- name: a\n");
        assert!(e.hint.unwrap().contains("tabs"), "{}", e.message);
    }

    #[test]
    fn unit_hints_survive_yaml_serde() {
        let text = "version: 1\nchains:\n  - name: a\n    actions: [record_flow, strip_add_addr]\n    thresholds: {remove_below: 10 parsecs, recover_at: 1MiB}\n";
        let e = error_for(text);
        assert!(e.message.contains("unknown size unit 'parsecs'"), "{e}");
        assert!(!e.message.contains('\u{1f}'));
        assert!(e.hint.unwrap().contains("KiB"));
        assert_eq!((e.line, e.column), (Some(5), Some(32)));
    }
}
