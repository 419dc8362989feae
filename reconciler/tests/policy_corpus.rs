//! The bad-policy corpus: every file under tests/policies/bad (and every
//! directory under tests/policies/bad-dropins) must be rejected with the
//! message and at the position its header announces:
//!
//! ```text
//! # expect: <substring of the error message>
//! # at: LINE:COL        (for a directory: FILE:LINE:COL; `none` when the
//!                        error has no position, e.g. an empty directory)
//! ```
//!
//! In expectations of directories, `DIR` stands for the directory's path.
//! Every error must also carry a hint.

use emptcp::policy::{PolicyErrors, load_dir, load_file};
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/policies")
}

#[derive(Debug)]
struct Expectation {
    message: String,
    /// File name (directories only), line, column; None: no position.
    at: Option<(Option<String>, usize, usize)>,
}

fn parse_expectations(header: &str, dir: Option<&Path>) -> Vec<Expectation> {
    let mut out = Vec::new();
    let mut pending: Option<String> = None;
    for line in header.lines() {
        if let Some(message) = line.strip_prefix("# expect: ") {
            let message = match dir {
                Some(d) => message.replace("DIR", &d.display().to_string()),
                None => message.to_string(),
            };
            pending = Some(message);
        } else if let Some(at) = line.strip_prefix("# at: ") {
            let message = pending.take().expect("`# at:` follows `# expect:`");
            let at = at.trim();
            let at = (at != "none").then(|| {
                let mut parts: Vec<&str> = at.rsplitn(3, ':').collect();
                parts.reverse();
                let (file, line, column) = match parts.as_slice() {
                    [file, line, column] => (Some(file.to_string()), *line, *column),
                    [line, column] => (None, *line, *column),
                    _ => panic!("bad `# at: {at}`"),
                };
                (
                    file,
                    line.parse().expect("line"),
                    column.parse().expect("column"),
                )
            });
            out.push(Expectation { message, at });
        }
    }
    assert!(pending.is_none(), "`# expect:` without `# at:`");
    out
}

/// Checks that one of `errors` satisfies `want`.
fn check(errors: &PolicyErrors, want: &Expectation) -> Result<(), String> {
    let matches = |e: &emptcp::policy::PolicyError| {
        e.message.contains(&want.message)
            && match &want.at {
                None => e.line.is_none() && e.column.is_none(),
                Some((file, line, column)) => {
                    e.line == Some(*line)
                        && e.column == Some(*column)
                        && file
                            .as_ref()
                            .is_none_or(|f| e.file.file_name().is_some_and(|n| n == f.as_str()))
                }
            }
    };
    if errors.iter().any(matches) {
        Ok(())
    } else {
        Err(format!(
            "want {:?} at {:?}; got:\n{errors}",
            want.message, want.at
        ))
    }
}

fn check_all(
    what: &Path,
    result: Result<emptcp::policy::Policy, PolicyErrors>,
    wants: &[Expectation],
) -> Vec<String> {
    let mut failures = Vec::new();
    let errors = match result {
        Ok(_) => return vec![format!("{}: loaded, but must be rejected", what.display())],
        Err(errors) => errors,
    };
    for want in wants {
        if let Err(why) = check(&errors, want) {
            failures.push(format!("{}: {why}", what.display()));
        }
    }
    for e in &errors {
        if e.hint.is_none() {
            failures.push(format!("{}: error without a hint: {e}", what.display()));
        }
    }
    failures
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("corpus directory")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    entries
}

#[test]
fn every_bad_policy_fails_with_its_message_at_its_position() {
    let files: Vec<PathBuf> = sorted_entries(&corpus().join("bad"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(
        files.len() >= 36,
        "the corpus has only {} files",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read corpus file");
        let wants = parse_expectations(&text, None);
        assert_eq!(
            wants.len(),
            1,
            "{}: one `# expect:`/`# at:` pair",
            path.display()
        );
        failures.extend(check_all(path, load_file(path), &wants));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn every_bad_dropin_directory_fails_as_expected() {
    let dirs: Vec<PathBuf> = sorted_entries(&corpus().join("bad-dropins"))
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    assert!(dirs.len() >= 4);
    let mut failures = Vec::new();
    for dir in &dirs {
        let header = std::fs::read_to_string(dir.join("expect.txt")).expect("expect.txt");
        let wants = parse_expectations(&header, Some(dir));
        assert!(!wants.is_empty(), "{}: no expectations", dir.display());
        failures.extend(check_all(dir, load_dir(dir), &wants));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn an_empty_directory_is_an_error_without_position() {
    let dir = tempfile::tempdir().unwrap();
    let errors = load_dir(dir.path()).unwrap_err();
    assert_eq!(errors.len(), 1);
    let e = &errors.0[0];
    assert_eq!(
        e.message,
        format!("no *.yaml files in {}", dir.path().display())
    );
    assert_eq!(e.file, dir.path());
    assert_eq!((e.line, e.column), (None, None));
}

#[test]
fn a_zero_byte_file_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.yaml");
    std::fs::write(&path, "").unwrap();
    let e = &load_file(&path).unwrap_err().0[0];
    assert_eq!(e.message, "empty policy file");
    assert!(e.hint.is_some());
}

#[test]
fn a_10_mb_file_is_refused_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let line = "# padding padding padding padding padding padding padding\n";
    let mut text = String::from("version: 1\n");
    while text.len() < 10 * 1024 * 1024 {
        text.push_str(line);
    }
    std::fs::write(&path, &text).unwrap();
    let errors = load_file(&path).unwrap_err();
    let e = &errors.0[0];
    assert_eq!(errors.len(), 1);
    assert!(e.message.contains("larger than the limit of 1 MiB"), "{e}");
    assert!(e.message.contains(&text.len().to_string()), "{e}");
    assert_eq!(e.file, path);
    // The same through a drop-in directory, next to a valid file.
    std::fs::write(dir.path().join("a.yaml"), "version: 1\n").unwrap();
    let errors = load_dir(dir.path()).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors.0[0].file, path);
}

#[test]
fn invalid_utf8_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.yaml");
    std::fs::write(&path, b"version: 1\ninterfaces:\n  - name: caf\xe9\n").unwrap();
    let e = &load_file(&path).unwrap_err().0[0];
    assert_eq!(e.message, "policy file is not valid UTF-8");
    assert_eq!((e.line, e.column), (Some(3), Some(14)));
}

#[test]
fn a_missing_file_names_its_path() {
    let e = &load_file(Path::new("/nonexistent/policy.yaml"))
        .unwrap_err()
        .0[0];
    assert!(e.message.starts_with("cannot read policy file"), "{e}");
    assert_eq!(e.hint.as_deref(), Some("check the path"));
}

/// Files under tests/policies/bad-many hold several errors each: every one
/// is listed, in source order, each with its line and column, and nothing
/// else is.
#[test]
fn every_error_of_a_file_is_listed_in_order() {
    let files = sorted_entries(&corpus().join("bad-many"));
    assert!(files.len() >= 2);
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read corpus file");
        let wants = parse_expectations(&text, None);
        assert!(wants.len() >= 3, "{}: several errors", path.display());
        let errors = load_file(path).expect_err("must be rejected");
        if errors.len() != wants.len() {
            failures.push(format!(
                "{}: want {} errors, got:\n{errors}",
                path.display(),
                wants.len()
            ));
            continue;
        }
        for (i, (error, want)) in errors.iter().zip(&wants).enumerate() {
            let single = PolicyErrors(vec![error.clone()]);
            if let Err(why) = check(&single, want) {
                failures.push(format!("{} (error {}): {why}", path.display(), i + 1));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}
