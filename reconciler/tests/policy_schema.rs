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
