//! Shared by integration tests: validation of declenv's JSON against the committed schemas.
#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;

/// Which of `schema/*.schema.json` describes a document, told by the fields only that kind has.
fn kind_of(document: &Value) -> Option<&'static str> {
    let has = |field: &str| document.get(field).is_some();
    if has("base") && has("changes") {
        Some("plan")
    } else if has("plan") && has("reused") {
        Some("apply-report")
    } else if has("relocked") && has("lockfile") {
        Some("lock-report")
    } else if has("from") && has("to") && has("changes") {
        Some("diff-report")
    } else if has("packages") && has("sources") && has("version") {
        Some("lock")
    } else {
        None
    }
}

/// Panics unless `document` is valid under the committed schema of its kind (and has a kind).
pub fn assert_schema_valid(document: &Value) {
    let kind = kind_of(document)
        .unwrap_or_else(|| panic!("no schema describes this document:\n{document:#}"));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("schema/{kind}.schema.json"));
    let schema: Value =
        serde_json::from_str(&fs_err::read_to_string(&path).expect("schema file")).expect("JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(document)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not valid under schema/{kind}.schema.json:\n{}\n{document:#}",
        errors.join("\n")
    );
}
