//! The JSON Schemas in `schema/`: generated from the Rust types (the committed files must match
//! what `declenv schema KIND` prints), and they validate the example files and the `--json`
//! output of every declarative command.
//!
//! `UPDATE_SCHEMAS=1 cargo test --test schemas` rewrites the committed files.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KINDS: [&str; 7] = [
    "profile",
    "lock",
    "plan",
    "lock-report",
    "apply-report",
    "diff-report",
    "watch-event",
];

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn declenv(root: &Path, spec: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_declenv"))
        .arg("--root")
        .arg(root)
        .arg("--file")
        .arg(spec)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("declenv runs")
}

fn schema(kind: &str) -> Value {
    let path = repository().join(format!("schema/{kind}.schema.json"));
    serde_json::from_str(&fs_err::read_to_string(path).expect("schema file")).expect("schema JSON")
}

/// The errors of validating `instance` against the committed schema `kind`.
fn violations(kind: &str, instance: &Value) -> Vec<String> {
    let schema = schema(kind);
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    validator
        .iter_errors(instance)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect()
}

fn assert_valid(kind: &str, instance: &Value, what: &str) {
    let errors = violations(kind, instance);
    assert!(
        errors.is_empty(),
        "{what} does not match schema/{kind}.schema.json:\n{}\n{instance:#}",
        errors.join("\n")
    );
}

fn json_stdout(output: &Output, what: &str) -> Value {
    assert!(
        output.status.success() || output.status.code() == Some(2),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{what}: {error}"))
}

fn toml_as_json(path: &Path) -> Value {
    let text = fs_err::read_to_string(path).expect("read TOML");
    let value: toml::Value = toml::from_str(&text).expect("TOML");
    serde_json::to_value(value).expect("as JSON")
}

#[test]
fn committed_schemas_are_what_the_types_generate() {
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for kind in KINDS {
        let output = Command::new(env!("CARGO_BIN_EXE_declenv"))
            .args(["schema", kind])
            .output()
            .expect("declenv runs");
        assert!(output.status.success(), "schema {kind}");
        let generated = String::from_utf8(output.stdout).expect("UTF-8");
        let generated_value: Value = serde_json::from_str(&generated).expect("JSON");
        assert_eq!(
            generated_value["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{kind} is draft 2020-12"
        );
        let path = repository().join(format!("schema/{kind}.schema.json"));
        if update {
            fs_err::write(&path, &generated).expect("write schema");
        } else if fs_err::read_to_string(&path).ok().as_deref() != Some(generated.as_str()) {
            stale.push(kind);
        }
    }
    assert!(
        stale.is_empty(),
        "schema files out of date: {stale:?}; run `UPDATE_SCHEMAS=1 cargo test --test schemas`"
    );
}

#[test]
fn example_specs_and_lockfiles_validate() {
    let examples = repository().join("examples");
    for spec in [
        examples.join("profile.toml"),
        examples.join("dotfiles/declenv/profile.toml"),
    ] {
        assert_valid("profile", &toml_as_json(&spec), &spec.display().to_string());
        let lock = spec.with_extension("lock");
        let lockfile: Value =
            serde_json::from_str(&fs_err::read_to_string(&lock).expect("lockfile")).expect("JSON");
        assert_valid("lock", &lockfile, &lock.display().to_string());
    }
}

#[test]
fn the_schemas_reject_what_declenv_rejects() {
    // A validation that cannot fail proves nothing: these must be refused.
    let bad_spec = serde_json::json!({"version": "one", "packages": {"a": {"priority": "high"}}});
    assert_eq!(violations("profile", &bad_spec).len(), 2, "{bad_spec}");
    let bad_lock =
        serde_json::json!({"version": 1, "packages": {"a": {"name": "a-1"}}, "extra": 1});
    assert!(!violations("lock", &bad_lock).is_empty());
    let bad_plan = serde_json::json!({"schema": {"version": 1}, "changes": [{"kind": "explode"}]});
    assert!(!violations("plan", &bad_plan).is_empty());
}

#[test]
fn every_json_output_of_the_declarative_cycle_validates() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    let spec = work.path().join("profile.toml");
    let channel = repository().join("examples/channel");
    let write_spec = |packages: &str| {
        fs_err::write(
            &spec,
            format!(
                "version = 1\n[sources.demo]\nchannel = \"{}\"\n{packages}",
                channel.display()
            ),
        )
        .expect("write spec");
    };
    write_spec(
        "[packages.hello]\nattr = \"hello_2_10\"\n[packages.jq]\noutputs = [\"out\", \"man\"]\n",
    );

    let lock = json_stdout(&declenv(&root, &spec, &["lock", "--json"]), "lock --json");
    assert_valid("lock-report", &lock, "lock --json");
    assert_eq!(lock["written"], true);
    let lockfile: Value = serde_json::from_str(
        &fs_err::read_to_string(work.path().join("profile.lock")).expect("lockfile"),
    )
    .expect("JSON");
    assert_valid("lock", &lockfile, "the lockfile written");

    let saved = work.path().join("plan.json");
    let plan = json_stdout(
        &declenv(
            &root,
            &spec,
            &["plan", "--json", "-o", saved.to_str().expect("UTF-8")],
        ),
        "plan --json",
    );
    assert_valid("plan", &plan, "plan --json");
    assert_eq!(plan["summary"]["add"], 2);
    let saved_plan: Value =
        serde_json::from_str(&fs_err::read_to_string(&saved).expect("saved plan")).expect("JSON");
    assert_valid("plan", &saved_plan, "a saved plan");

    let apply = json_stdout(
        &declenv(
            &root,
            &spec,
            &["apply", "--json", "-y", saved.to_str().expect("UTF-8")],
        ),
        "apply --json",
    );
    assert_valid("apply-report", &apply, "apply --json");
    assert_eq!(apply["generation"], 1);

    write_spec("[packages.hello]\nattr = \"hello\"\npriority = 3\n[packages.cowsay]\n");
    let plan = json_stdout(&declenv(&root, &spec, &["plan", "--json"]), "plan --json");
    assert_valid("plan", &plan, "plan --json with every kind of change");
    let apply = json_stdout(&declenv(&root, &spec, &["apply", "--json", "-y"]), "apply");
    assert_valid("apply-report", &apply, "apply --json");
    let unchanged = json_stdout(&declenv(&root, &spec, &["apply", "--json"]), "apply again");
    assert_valid("apply-report", &unchanged, "apply --json without changes");
    assert_eq!(unchanged["reused"], true);

    let diff = json_stdout(&declenv(&root, &spec, &["diff", "--json"]), "diff --json");
    assert_valid("diff-report", &diff, "diff --json");
    let kinds: Vec<&str> = diff["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|change| change["kind"].as_str().expect("kind"))
        .collect();
    // `hello_2_10` → `hello` is another attribute path: a replacement, not an upgrade.
    assert_eq!(kinds, ["add", "remove", "replace"], "{diff:#}");
}
