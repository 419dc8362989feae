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

#[test]
fn plan_exit_codes_follow_detailed_exitcode() {
    // Offline: an empty snapshot means everything is to be created.
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("empty.json");
    std::fs::write(
        &snap,
        r#"{"snapshot_version":1,"root":"/sys/fs/bpf/emptcp","meta":null,"maps":{},"programs":{},"prog_slots":{},"links":{},"netdevs":{"eth0":{"ifindex":2}},"entries":{"chains":{},"thresholds":{},"selectors":{},"prefixes":[],"ports":[],"ifaces":{}},"unknown":[]}"#,
    )
    .unwrap();
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
