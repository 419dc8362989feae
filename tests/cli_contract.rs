//! The CLI contract scripts rely on: exit codes, `schema`, `validate` on
//! the bad-policy corpus (exit 1, file:line:column, nothing applied).
mod common;

use std::path::{Path, PathBuf};

use common::*;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/policies/bad");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

fn header(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix(&format!("# {key}:"))
            .map(|v| v.trim().to_string())
    })
}

#[test]
fn validate_rejects_every_bad_policy_with_a_position() {
    let files = corpus();
    assert!(files.len() >= 30, "corpus has only {} files", files.len());
    let root = std::env::temp_dir().join("emptcp-no-root-needed");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let o = emptcp(&root, None, &["validate", "-f", f.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}: expected exit 1, got {:?}: {err}",
            f.display(),
            o.status.code()
        );
        if let Some(expect) = header(&text, "expect") {
            assert!(
                err.contains(&expect),
                "{}: error lacks '{expect}':\n{err}",
                f.display()
            );
        }
        if let Some(at) = header(&text, "at").filter(|a| a != "none") {
            let want = format!("{}:{at}", f.file_name().unwrap().to_string_lossy());
            assert!(
                err.contains(&want),
                "{}: error lacks position {want}:\n{err}",
                f.display()
            );
        }
    }
}

/// The source line and the caret a reader should see under an error at
/// `line:column` of `text` (tabs shown as 4 spaces, columns in characters).
fn expected_snippet(text: &str, line: usize, column: usize) -> String {
    let shown = text
        .lines()
        .nth(line - 1)
        .expect("position inside the file");
    let pad: String = shown
        .chars()
        .take(column - 1)
        .map(|c| if c == '\t' { "    " } else { " " })
        .collect();
    let gutter = " ".repeat(line.to_string().len());
    format!(
        "{line} | {}\n{gutter} | {pad}^\n",
        shown.replace('\t', "    ").trim_end()
    )
}

fn position(at: &str) -> (usize, usize) {
    let (line, column) = at.split_once(':').expect("LINE:COL");
    (line.parse().unwrap(), column.parse().unwrap())
}

#[test]
fn text_errors_show_the_source_line_with_a_caret_json_keeps_one_line() {
    let root = std::env::temp_dir().join("emptcp-no-root-needed");
    let mut placed = 0;
    for f in corpus() {
        let text = std::fs::read_to_string(&f).unwrap();
        let Some(at) = header(&text, "at").filter(|a| a != "none") else {
            continue;
        };
        let (line, column) = position(&at);
        let path = f.to_str().unwrap();
        let o = emptcp(&root, None, &["validate", "-f", path]);
        let err = String::from_utf8_lossy(&o.stderr);
        let want = expected_snippet(&text, line, column);
        assert!(
            err.contains(&format!("{path}:{at}: ")) && err.contains(&want),
            "{}: text mode lacks the caret snippet\n{want}in:\n{err}",
            f.display()
        );
        // -o json: the same first line, no snippet.
        let o = emptcp(&root, None, &["-o", "json", "validate", "-f", path]);
        let json_err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            json_err.lines().next(),
            err.lines().next(),
            "{}",
            f.display()
        );
        assert!(!json_err.contains(" | "), "{}: {json_err}", f.display());
        placed += 1;
    }
    assert!(placed >= 30, "only {placed} corpus files have a position");
}

#[test]
fn every_error_of_a_file_gets_its_own_snippet_in_source_order() {
    let root = std::env::temp_dir().join("emptcp-no-root-needed");
    let f = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/policies/bad-many/01-four-value-errors.yaml");
    let text = std::fs::read_to_string(&f).unwrap();
    let o = emptcp(&root, None, &["validate", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    let positions: Vec<(usize, usize)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# at: "))
        .map(position)
        .collect();
    assert_eq!(positions.len(), 5);
    let mut from = 0;
    for (line, column) in positions {
        let want = expected_snippet(&text, line, column);
        let found = err[from..]
            .find(&want)
            .unwrap_or_else(|| panic!("no snippet for {line}:{column} after byte {from}:\n{err}"));
        from += found + want.len();
    }
}

#[test]
fn invalid_policy_applies_nothing() {
    if !kernel_or_skip("invalid_policy_applies_nothing") {
        return;
    }
    let t = tag("badapply");
    let root = BpfRoot::new(&t);
    // A namespace of its own: were validation broken, the apply would
    // attach to this namespace's interfaces, never the host's.
    let ns = Netns::new(&format!("emptcp-{t}"));
    for f in corpus().iter().take(40) {
        let o = emptcp(
            &root.path,
            Some(&ns.name),
            &["apply", "-f", f.to_str().unwrap()],
        );
        assert_eq!(o.status.code(), Some(1), "{}", f.display());
        let pins = std::fs::read_dir(&root.path)
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(pins, 0, "{}: something was applied", f.display());
    }
}

#[test]
fn schema_command_prints_the_checked_in_schema() {
    let out = emptcp_ok(Path::new("/nonexistent"), None, &["schema"], 0);
    let file = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/policy.schema.json"),
    )
    .unwrap();
    assert_eq!(
        out, file,
        "schema/policy.schema.json is stale: run `emptcp schema > schema/policy.schema.json`"
    );
}

/// An observed state with nothing applied and one interface, eth0.
const EMPTY_SNAPSHOT: &str = r#"{"snapshot_version":1,"root":"/sys/fs/bpf/emptcp","meta":null,"maps":{},"programs":{},"prog_slots":{},"links":{},"netdevs":{"eth0":{"ifindex":2}},"entries":{"chains":{},"thresholds":{},"selectors":{},"prefixes":[],"ports":[],"ifaces":{}},"unknown":[]}"#;

#[test]
fn plan_text_folds_the_slots_and_the_map_list_unless_verbose() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("empty.json");
    std::fs::write(&snap, EMPTY_SNAPSHOT).unwrap();
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies/quickstart.yaml");
    let args = [
        "plan",
        "--state",
        snap.to_str().unwrap(),
        "-f",
        ex.to_str().unwrap(),
    ];
    let root = Path::new("/nonexistent");
    let folded = emptcp_ok(root, None, &args, 0);
    let slot_lines = |t: &str| t.lines().filter(|l| l.contains("tail-call slot")).count();
    // One line for the ingress slots, one for the egress slots.
    assert!(slot_lines(&folded) <= 2, "{folded}");
    assert!(folded.contains("maps; -v names them)"), "{folded}");
    let mut verbose = args.to_vec();
    verbose.push("-v");
    let full = emptcp_ok(root, None, &verbose, 0);
    assert!(slot_lines(&full) > slot_lines(&folded), "{full}");
    assert!(full.contains("(creates maps "), "{full}");
    let diff = |t: &str| t[t.find("Diff (observed -> desired)").expect(t)..].to_string();
    assert_eq!(diff(&folded), diff(&full), "the diff is the same");
}

#[test]
fn plan_exit_codes_follow_detailed_exitcode() {
    // Offline: an empty snapshot means everything is to be created.
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("empty.json");
    std::fs::write(&snap, EMPTY_SNAPSHOT).unwrap();
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies/count-only.yaml");
    let ex = ex.to_str().unwrap();
    let s = snap.to_str().unwrap();
    let root = Path::new("/nonexistent");
    emptcp_ok(
        root,
        None,
        &["plan", "--state", s, "-f", ex, "--detailed-exitcode"],
        2,
    );
    emptcp_ok(root, None, &["plan", "--state", s, "-f", ex], 0);
    let o = emptcp(
        root,
        None,
        &["plan", "--state", "/nonexistent.json", "-f", ex],
    );
    assert_eq!(o.status.code(), Some(1));
    let o = emptcp(root, None, &["plan", "--state", s]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "usage errors must exit 1, never 2 (= changes)"
    );
}
