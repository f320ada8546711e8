//! Shared by integration tests: validation of declenv's JSON against the committed schemas,
//! one finished run of a command, and copying trees.
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

/// Copies a tree (or a single file or symlink), keeping symlinks as symlinks and file modes as
/// they are.
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    let metadata = fs_err::symlink_metadata(from).expect("lstat");
    if metadata.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs_err::read_link(from).expect("readlink"), to)
            .expect("symlink");
    } else if metadata.is_dir() {
        fs_err::create_dir_all(to).expect("mkdir");
        for entry in fs_err::read_dir(from).expect("read dir") {
            let entry = entry.expect("entry");
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        fs_err::copy(from, to).expect("copy");
    }
}

/// One finished run of a command, its output decoded.
#[derive(Debug)]
pub struct Run {
    /// The exit status.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// The run of `output`, which must have exited (not been killed) and printed UTF-8.
    pub fn of(output: std::process::Output) -> Self {
        Self {
            code: output.status.code().expect("exits, not killed"),
            stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
        }
    }

    /// Stdout decoded, and checked against the schema of its kind.
    pub fn json(&self) -> Value {
        let document = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {self:#?}"));
        assert_schema_valid(&document);
        document
    }

    /// Stdout's lines.
    pub fn lines(&self) -> Vec<String> {
        self.stdout.lines().map(str::to_owned).collect()
    }
}
