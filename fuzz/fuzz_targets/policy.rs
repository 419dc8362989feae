//! Policy loading from disk, the way `emptcp validate/plan/apply/watch` read
//! it: one file (`load_file`) or a drop-in directory (`load_dir`), then the
//! errors rendered as the CLI shows them (`render_snippets`).
//!
//! Input: one policy file's bytes, or a drop-in directory written as
//!
//! ```text
//! %%dir
//! %%file 10-a.yaml
//! <bytes of 10-a.yaml>
//! %%file 20-b.yaml
//! <bytes of 20-b.yaml>
//! ```
//!
//! File names keep only `[A-Za-z0-9._-]` (at most 40 bytes, at most 16
//! files; a repeated name is skipped), so hidden files and other suffixes
//! are reachable. scripts/fuzz.sh writes the seed corpus in this format
//! from tests/policies and examples/policies.
//!
//! Beyond "never panics", each input checks the loader's contract:
//! - an error list is never empty, and every position lies inside its
//!   file (line <= lines + 1, column <= the line's characters + 1; lines
//!   as YAML counts them: CR, LF, CR LF, NEL, LS and PS end a line);
//! - `load_str` on the same text gives the same policy or the same errors
//!   as `load_file` (the daemon and the CLI read through both).
#![no_main]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use emptcp_policy::{self as policy, Policy, PolicyErrors};
use libfuzzer_sys::fuzz_target;

const DIR_MARK: &[u8] = b"%%dir\n";
const FILE_MARK: &[u8] = b"%%file ";
const MAX_FILES: usize = 16;
const MAX_NAME: usize = 40;

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    reset(dir);
    let files = match data.strip_prefix(DIR_MARK) {
        Some(rest) => split_files(rest),
        None => vec![("policy.yaml".to_string(), data.to_vec())],
    };
    let mut written = HashMap::new();
    for (name, bytes) in files {
        let path = dir.join(&name);
        std::fs::write(&path, &bytes).expect("write to the scratch directory");
        written.insert(path, bytes);
    }
    if data.starts_with(DIR_MARK) {
        let result = policy::load_dir(dir);
        check(&result, &written);
    } else {
        let path = dir.join("policy.yaml");
        let result = policy::load_file(&path);
        check(&result, &written);
        same_as_load_str(&path, data, &result);
    }
});

/// One scratch directory per process, under TMPDIR (scripts/fuzz.sh points
/// it at a directory it removes afterwards).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("emptcp-fuzz-policy-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create the scratch directory");
        d
    })
}

/// Empties the scratch directory (the previous input's files).
fn reset(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read the scratch directory") {
        let path = entry.expect("scratch entry").path();
        std::fs::remove_file(&path).expect("remove a scratch file");
    }
}

/// The `%%file NAME` sections of a directory input (markers at line starts).
fn split_files(rest: &[u8]) -> Vec<(String, Vec<u8>)> {
    let starts: Vec<usize> = (0..rest.len())
        .filter(|&i| (i == 0 || rest[i - 1] == b'\n') && rest[i..].starts_with(FILE_MARK))
        .collect();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(rest.len());
        let section = &rest[start + FILE_MARK.len()..end];
        let (name, body) = match section.iter().position(|&b| b == b'\n') {
            Some(nl) => (&section[..nl], &section[nl + 1..]),
            None => (section, &[][..]),
        };
        let name = file_name(name);
        if files.len() < MAX_FILES && !files.iter().any(|(n, _)| *n == name) {
            files.push((name, body.to_vec()));
        }
    }
    files
}

fn file_name(raw: &[u8]) -> String {
    let name: String = raw
        .iter()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        .take(MAX_NAME)
        .map(|&b| b as char)
        .collect();
    // "." and ".." are the directory itself and its parent.
    if name.is_empty() || name == "." || name == ".." {
        "f".to_string()
    } else {
        name
    }
}

/// The contract of an error list, and the CLI's rendering of it.
fn check(result: &Result<Policy, PolicyErrors>, written: &HashMap<PathBuf, Vec<u8>>) {
    let Err(errors) = result else { return };
    assert!(!errors.0.is_empty(), "an error result without errors");
    for e in errors.iter() {
        let _ = e.to_string();
        let Some(line) = e.line else { continue };
        let column = e.column.expect("a line without a column");
        let text = written.get(&e.file).map(|b| String::from_utf8_lossy(b));
        let Some(text) = text else {
            panic!("error at {line}:{column} in a file that was not written: {e}");
        };
        let lines = yaml_lines(&text);
        assert!(
            line >= 1 && line <= lines.len(),
            "line {line} outside a file of {} lines: {e}",
            lines.len()
        );
        let chars = lines[line - 1].chars().count();
        assert!(
            column >= 1 && column <= chars + 1,
            "column {column} outside line {line} of {chars} characters: {e}"
        );
    }
    let _ = policy::render_snippets(errors, |p| std::fs::read_to_string(p).ok());
}

/// The lines of `text` as YAML 1.1 (libyaml) counts them: a line ends at
/// CR LF, CR, LF, NEL, LS or PS; the text after the last break is a line.
fn yaml_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}') {
            lines.push(&text[start..i]);
            start = i + c.len_utf8();
            if c == '\r' && chars.peek().is_some_and(|&(_, n)| n == '\n') {
                chars.next();
                start += 1;
            }
        }
    }
    lines.push(&text[start..]);
    lines
}

/// `load_str` on the file's text agrees with `load_file` on the file.
fn same_as_load_str(path: &Path, data: &[u8], from_file: &Result<Policy, PolicyErrors>) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // load_file refuses it before parsing; load_str takes &str
    };
    if data.len() as u64 > policy::MAX_FILE_BYTES {
        return;
    }
    let from_str = policy::load_str(&path.to_string_lossy(), text);
    assert_eq!(
        &from_str, from_file,
        "load_str and load_file disagree on the same text"
    );
}
