//! `declenv search` driven through the real binary, in temporary roots.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn demo_channel() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/channel")
}

/// Runs `declenv` with a private root so no test sees another's cache or the user's.
fn declenv(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_declenv"))
        .args(args)
        .env("DECLENV_ROOT", root)
        .env_remove("XDG_DATA_HOME")
        .env("NO_COLOR", "1")
        .output()
        .expect("declenv runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("utf-8 stderr")
}

fn json_rows(output: &Output) -> Vec<Value> {
    let report: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(report["schema"]["version"], 1);
    report["packages"]
        .as_array()
        .expect("packages array")
        .clone()
}

#[test]
fn finds_every_version_of_hello_in_the_demo_channel() {
    let root = tempfile::tempdir().expect("tempdir");
    let channel = demo_channel();
    let output = declenv(
        root.path(),
        &[
            "search",
            "--source",
            channel.to_str().expect("utf-8"),
            "hello",
            "--json",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let rows = json_rows(&output);
    let names: Vec<&str> = rows
        .iter()
        .map(|row| row["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["hello-2.12.1", "hello-2.10", "hello-2.12"]);
    assert_eq!(rows[0]["attr_path"], "hello");
    assert_eq!(rows[0]["pname"], "hello");
    assert_eq!(rows[0]["version"], "2.12.1");
}

#[test]
fn text_output_has_one_aligned_row_per_package() {
    let root = tempfile::tempdir().expect("tempdir");
    let channel = demo_channel();
    let output = declenv(
        root.path(),
        &["search", "-s", channel.to_str().expect("utf-8"), "^jq$"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    insta::assert_snapshot!(stdout(&output), @"jq  jq-1.7.1  Lightweight and flexible command-line JSON processor");
}

#[test]
fn search_matches_descriptions_case_insensitively() {
    let root = tempfile::tempdir().expect("tempdir");
    let channel = demo_channel();
    let output = declenv(
        root.path(),
        &[
            "search",
            "-s",
            channel.to_str().expect("utf-8"),
            "json PROCESSOR",
            "--json",
        ],
    );
    // An upper-case letter makes the pattern case-sensitive, and no description says PROCESSOR.
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(json_rows(&output).is_empty());
    let output = declenv(
        root.path(),
        &[
            "search",
            "-s",
            channel.to_str().expect("utf-8"),
            "json processor",
            "--json",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(json_rows(&output)[0]["attr_path"], "jq");
}

#[test]
fn selector_mode_follows_nix_env_rules() {
    let root = tempfile::tempdir().expect("tempdir");
    let channel = demo_channel();
    let channel = channel.to_str().expect("utf-8");
    let names = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["search", "-s", channel, "--selector", "--json"];
        full.extend_from_slice(args);
        let output = declenv(root.path(), &full);
        json_rows(&output)
            .iter()
            .map(|row| row["name"].as_str().expect("name").to_owned())
            .collect()
    };
    // A selector's name part is a full-match regex; the version part is exact.
    assert_eq!(
        names(&["hello"]),
        ["hello-2.10", "hello-2.12", "hello-2.12.1"]
    );
    assert_eq!(names(&["hello-2.12"]), ["hello-2.12"]);
    assert_eq!(names(&["hel"]), Vec::<String>::new());
    // `python3\.12-.*` would split at `-.` into a name and the literal version `.*`.
    assert_eq!(names(&["python3\\.12.*"]).len(), 2);
    assert!(names(&["python3\\.12-.*"]).is_empty());
}

#[test]
fn invalid_selector_is_one_clear_error() {
    let root = tempfile::tempdir().expect("tempdir");
    let channel = demo_channel();
    let output = declenv(
        root.path(),
        &[
            "search",
            "-s",
            channel.to_str().expect("utf-8"),
            "--selector",
            "(foo",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr(&output);
    assert!(
        stderr
            .starts_with("error: invalid selector: Mismatched '(' and ')' in regular expression\n"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
}

#[test]
fn malformed_catalog_names_file_line_and_column() {
    let root = tempfile::tempdir().expect("tempdir");
    let catalog = root.path().join("broken.json");
    fs_err::write(
        &catalog,
        "{\n  \"hello\": {\n    \"name\": \"hello-1\",\n    \"system\": 5\n  }\n}\n",
    )
    .expect("write catalog");
    let output = declenv(
        root.path(),
        &["search", "-s", catalog.to_str().expect("utf-8"), "x"],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr(&output);
    let first_line = stderr.lines().next().expect("an error line");
    assert!(
        first_line.starts_with("error: invalid catalog `"),
        "{stderr}"
    );
    assert!(
        first_line.contains("broken.json` at line 4, column"),
        "{stderr}"
    );
    assert!(first_line.contains("`hello`"), "{stderr}");
    assert!(stdout(&output).is_empty());
}

#[test]
fn malformed_channel_metadata_names_file_line_and_column() {
    let root = tempfile::tempdir().expect("tempdir");
    let channel = root.path().join("channel");
    fs_err::create_dir_all(channel.join("hello-1.0/bin")).expect("mkdir");
    fs_err::write(
        channel.join("channel.toml"),
        "format = 1\n\n[packages.\"hello-1.0\".meta]\npriority = \"high\"\n",
    )
    .expect("write metadata");
    let output = declenv(
        root.path(),
        &["search", "-s", channel.to_str().expect("utf-8"), "x"],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr(&output);
    assert!(stderr.contains("channel.toml`"), "{stderr}");
    assert!(stderr.contains("at line 3 column 1"), "{stderr}");
    assert!(stderr.contains("`meta.priority`"), "{stderr}");
}

#[test]
fn catalog_cache_is_used_and_invalidated_by_content() {
    let root = tempfile::tempdir().expect("tempdir");
    let catalog = root.path().join("catalog.json");
    let run = || {
        let output = declenv(
            root.path(),
            &[
                "search",
                "-s",
                catalog.to_str().expect("utf-8"),
                "--json",
                "zip",
            ],
        );
        json_rows(&output)
            .iter()
            .map(|row| row["name"].as_str().expect("name").to_owned())
            .collect::<Vec<_>>()
    };
    fs_err::write(
        &catalog,
        r#"{"unzip": {"name": "unzip-6.0"}, "gzip": {"name": "gzip-1.12"}}"#,
    )
    .expect("write");
    assert_eq!(run(), ["gzip-1.12", "unzip-6.0"]);
    let cache = root.path().join("nix/var/declenv/cache/catalog-v1");
    let packed_files = || {
        fs_err::read_dir(&cache)
            .expect("cache directory")
            .filter(|entry| {
                entry
                    .as_ref()
                    .expect("entry")
                    .path()
                    .extension()
                    .is_some_and(|extension| extension == "packed")
            })
            .count()
    };
    assert_eq!(packed_files(), 1);
    assert_eq!(run(), ["gzip-1.12", "unzip-6.0"]);
    // Same size, same second: only a content key (or the change time) notices the change.
    fs_err::write(
        &catalog,
        r#"{"unzip": {"name": "unzip-6.1"}, "gzip": {"name": "gzip-1.13"}}"#,
    )
    .expect("rewrite");
    assert_eq!(run(), ["gzip-1.13", "unzip-6.1"]);
    assert_eq!(packed_files(), 2);
}

#[test]
fn missing_source_is_an_error_with_a_hint() {
    let root = tempfile::tempdir().expect("tempdir");
    let missing = root.path().join("nowhere");
    let output = declenv(
        root.path(),
        &["search", "-s", missing.to_str().expect("utf-8"), "x"],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr(&output);
    assert!(stderr.contains("nowhere`"), "{stderr}");
    assert!(stderr.contains("hint: a source is"), "{stderr}");
}
