//! Every example policy under examples/policies is valid: emptcp loads it
//! (files one by one, `dropin/` as a directory), the published JSON Schema
//! accepts it, and its first line points editors at that schema.

use emptcp::policy::{Hook, Policy, XdpMode, load_dir, load_file, schema_json};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn examples() -> PathBuf {
    repo().join("examples/policies")
}

/// `*.yaml` files under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("examples directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn load(path: &Path) -> Policy {
    load_file(path).unwrap_or_else(|e| panic!("{} is invalid:\n{e}", path.display()))
}

#[test]
fn every_example_file_loads() {
    let top_level: Vec<PathBuf> = yaml_files(&examples())
        .into_iter()
        .filter(|p| p.parent() == Some(examples().as_path()))
        .collect();
    assert!(top_level.len() >= 3, "{top_level:?}");
    for path in top_level {
        load(&path);
    }
}

#[test]
fn the_dropin_example_loads_as_a_directory() {
    let policy = load_dir(&examples().join("dropin"))
        .unwrap_or_else(|e| panic!("examples/policies/dropin is invalid:\n{e}"));
    assert_eq!(policy.interfaces.len(), 1);
    let names: Vec<&str> = policy.chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["short-flows-single-path", "count-rest"]);
    // Each file of a drop-in directory is also a valid policy on its own
    // except for references across files: 20-chains.yaml stands alone.
    load(&examples().join("dropin/20-chains.yaml"));
}

#[test]
fn quickstart_is_the_demo_policy() {
    let p = load(&examples().join("quickstart.yaml"));
    let ifaces: Vec<(&str, XdpMode)> = p
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.xdp_mode))
        .collect();
    assert_eq!(
        ifaces,
        [("cli0", XdpMode::Native), ("cli1", XdpMode::Native)]
    );
    let chain = p.chain("short-flows-single-path").expect("the demo chain");
    assert_eq!(chain.hook, Hook::Ingress);
    assert_eq!(
        chain.r#match.remote,
        [
            "192.0.2.0/24".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap()
        ]
    );
    assert!(
        p.interfaces
            .iter()
            .all(|i| i.chains == [chain.name.clone()])
    );
}

#[test]
fn every_example_matches_the_json_schema() {
    let schema: serde_json::Value = serde_json::from_str(&schema_json()).expect("schema");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let mut failures = Vec::new();
    for path in yaml_files(&examples()) {
        let text = std::fs::read_to_string(&path).expect("read example");
        let instance: serde_json::Value = yaml_serde::from_str(&text).expect("example is YAML");
        for error in validator.iter_errors(&instance) {
            failures.push(format!(
                "{}: {} at {}",
                path.display(),
                error,
                error.instance_path()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_example_points_editors_at_the_schema() {
    let schema = repo().join("schema/policy.schema.json");
    for path in yaml_files(&examples()) {
        let text = std::fs::read_to_string(&path).expect("read example");
        let first = text.lines().next().unwrap_or_default();
        let relative = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| panic!("{}: first line must name the schema", path.display()));
        let target = path.parent().expect("parent").join(relative);
        assert_eq!(
            target.canonicalize().ok(),
            schema.canonicalize().ok(),
            "{}: $schema={relative} does not lead to schema/policy.schema.json",
            path.display()
        );
    }
}
