//! schema/policy.schema.json must be exactly what `emptcp schema` prints:
//! editors validate policies against the checked-in file, so a stale one
//! would accept what emptcp rejects (or the reverse).
//!
//! To update it: `emptcp schema > schema/policy.schema.json`, or run this
//! test with `EMPTCP_BLESS=1`.

use std::path::PathBuf;

fn schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schema/policy.schema.json")
}

#[test]
fn checked_in_schema_is_current() {
    let generated = emptcp::policy::schema_json();
    let path = schema_path();
    if std::env::var_os("EMPTCP_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write schema/policy.schema.json");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "schema/policy.schema.json is stale (or missing).\n\
         Regenerate it with `emptcp schema > schema/policy.schema.json` \
         (or rerun this test with EMPTCP_BLESS=1) and commit the result."
    );
}

#[test]
fn schema_is_a_valid_json_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&emptcp::policy::schema_json()).expect("schema is JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    jsonschema::validator_for(&schema).expect("schema compiles");
}

/// The schema's patterns mirror the parser: for each value, an editor
/// (schema) and emptcp (loader) must agree on whether it is valid.
#[test]
fn schema_and_loader_agree_on_values() {
    let schema: serde_json::Value =
        serde_json::from_str(&emptcp::policy::schema_json()).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");

    // Each template has one `@` where the value goes.
    let size = "version: 1\nchains:\n  - name: c\n    thresholds: {remove_below: @, recover_at: 1TiB}\n    actions: [record_flow, strip_add_addr]\n";
    let idle = "version: 1\ninterfaces: [{name: e, chains: [c]}]\nchains: [{name: c, actions: [count]}]\npacket_copy:\n  - {name: r, interface: e, chain: c, when: {subflow_idle: @}, send: {mp_prio: {backup: true}}}\n";
    let percent = "version: 1\nchains:\n  - name: c\n    thresholds:\n      remove_below: 1MiB\n      recover_at: 4MiB\n      decider: {cpu_usage: {interval: 1s, busy_above: @, busy_recover_at: 8MiB}}\n    actions: [record_flow, strip_add_addr]\n";
    let port = "version: 1\nchains: [{name: c, actions: [count], match: {local_ports: [@]}}]\n";
    let prefix = "version: 1\nchains: [{name: c, actions: [count], match: {remote: [@]}}]\n";
    let chain_name = "version: 1\nchains: [{name: @, actions: [count]}]\n";
    let ifname =
        "version: 1\ninterfaces: [{name: @, chains: [c]}]\nchains: [{name: c, actions: [count]}]\n";
    let window =
        "version: 1\nchains: [{name: c, actions: [record_flow, set_window: {bytes: @}]}]\n";

    let cases: &[(&str, &str, bool)] = &[
        (size, "4MiB", true),
        (size, "1 MiB", true),
        (size, "100", true),
        (size, "\"100\"", true),
        (size, "10kB", true),
        (size, "10KB", true),
        (size, "2GB", true),
        (size, "4MB/s", false),
        (size, "10 parsecs", false),
        (size, "-1MiB", false),
        (size, "-1", false),
        (size, "1.5MiB", false),
        (size, "4mib", false),
        (idle, "500ms", true),
        (idle, "1m30s", true),
        (idle, "2 s", true),
        (idle, "500", false),
        (idle, "\"500\"", false),
        (idle, "2d", false),
        (idle, "1.5s", false),
        (idle, "-1s", false),
        (percent, "80%", true),
        (percent, "100%", true),
        (percent, "1%", true),
        (percent, "0%", false),
        (percent, "101%", false),
        (percent, "80", false),
        (port, "443", true),
        (port, "8000-8100", true),
        (port, "70000", false),
        (port, "0", false),
        (port, "http", false),
        (prefix, "192.0.2.0/24", true),
        (prefix, "\"2001:db8::/32\"", true),
        (prefix, "192.0.2.1", false),
        (prefix, "bogus/8", false),
        (prefix, "192.0.2.0/33", false),
        (chain_name, "a-b_c9", true),
        (chain_name, "Bulk", false),
        (chain_name, "-a", false),
        (chain_name, &"c".repeat(48), false),
        (ifname, "eth0", true),
        (ifname, "eth0:1", false),
        (ifname, "a/b", false),
        (ifname, "abcdefghijklmnop", false),
        (window, "64KiB", true),
        (window, "65535", true),
        (window, "1073725440", true),
        (window, "0", false),
        (window, "1073725441", false),
    ];
    let mut disagreements = Vec::new();
    for (template, value, valid) in cases {
        let text = template.replace('@', value);
        let loaded = emptcp::policy::load_str("case.yaml", &text);
        let instance: serde_json::Value = yaml_serde::from_str(&text).expect("YAML");
        let schema_ok = validator.is_valid(&instance);
        if loaded.is_ok() != *valid || schema_ok != *valid {
            disagreements.push(format!(
                "{value}: want valid={valid}, loader={}, schema={schema_ok}",
                loaded.is_ok()
            ));
        }
    }
    assert!(disagreements.is_empty(), "\n{}", disagreements.join("\n"));
}
