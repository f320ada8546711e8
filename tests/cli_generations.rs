//! `declenv generations` and `declenv rollback` through the real binary, on profiles whose
//! generation links are laid out by hand (as `nix-env` leaves them).

use serde_json::Value;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Fixture {
    _directory: tempfile::TempDir,
    root: PathBuf,
    profile: PathBuf,
}

/// A profile with generations 1..=count, the current one being `current`.
fn fixture(count: u32, current: u32) -> Fixture {
    let directory = tempfile::tempdir().expect("tempdir");
    let root = directory.path().join("root");
    let profiles = root.join("nix/var/nix/profiles");
    fs_err::create_dir_all(&profiles).expect("mkdir");
    for number in 1..=count {
        let target = root.join(format!("nix/store/generation-{number}"));
        fs_err::create_dir_all(&target).expect("mkdir target");
        symlink(&target, profiles.join(format!("default-{number}-link"))).expect("link");
    }
    symlink(format!("default-{current}-link"), profiles.join("default")).expect("profile link");
    Fixture {
        profile: profiles.join("default"),
        root,
        _directory: directory,
    }
}

fn declenv(fixture: &Fixture, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_declenv"))
        .args(args)
        .env("DECLENV_ROOT", &fixture.root)
        .env("NO_COLOR", "1")
        .env("TZ", "UTC")
        .output()
        .expect("declenv runs")
}

fn current_link(fixture: &Fixture) -> String {
    fs_err::read_link(&fixture.profile)
        .expect("profile link")
        .display()
        .to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn listed(fixture: &Fixture) -> Vec<(u64, bool)> {
    let output = declenv(fixture, &["generations", "list", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["schema"]["version"], 1);
    report["generations"]
        .as_array()
        .expect("array")
        .iter()
        .map(|row| {
            (
                row["number"].as_u64().expect("number"),
                row["current"].as_bool().expect("bool"),
            )
        })
        .collect()
}

#[test]
fn list_marks_the_current_generation_like_nix_env() {
    let fixture = fixture(3, 2);
    let output = declenv(&fixture, &["generations", "list"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0].starts_with("   1   ") && lines[0].ends_with("   "),
        "{text:?}"
    );
    assert!(
        lines[1].starts_with("   2   ") && lines[1].ends_with("   (current)"),
        "{text:?}"
    );
    assert_eq!(listed(&fixture), [(1, false), (2, true), (3, false)]);
}

#[test]
fn rollback_goes_to_the_highest_older_generation() {
    let fixture = fixture(3, 3);
    let dry = declenv(&fixture, &["rollback", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert_eq!(current_link(&fixture), "default-3-link");
    assert!(
        stderr(&dry).contains("would switch from generation 3 to 2"),
        "{}",
        stderr(&dry)
    );

    let output = declenv(&fixture, &["rollback"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(current_link(&fixture), "default-2-link");
    declenv(&fixture, &["rollback"]);
    let output = declenv(&fixture, &["rollback"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("no profile version older than the current (1) exists"),
        "{}",
        stderr(&output)
    );
    assert!(!Path::new(&format!("{}.lock", fixture.profile.display())).exists());
}

#[test]
fn switch_and_delete_follow_nix_rules() {
    let fixture = fixture(5, 4);
    let output = declenv(&fixture, &["generations", "switch", "2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(current_link(&fixture), "default-2-link");

    let missing = declenv(&fixture, &["generations", "switch", "9"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("profile version 9 does not exist"),
        "{}",
        stderr(&missing)
    );

    let current = declenv(&fixture, &["generations", "delete", "2"]);
    assert_eq!(current.status.code(), Some(2));
    assert_eq!(listed(&fixture).len(), 5, "nothing deleted");

    let dry = declenv(&fixture, &["generations", "delete", "old", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert_eq!(listed(&fixture).len(), 5, "dry run deletes nothing");
    assert!(
        stderr(&dry).contains("would remove generation 5"),
        "{}",
        stderr(&dry)
    );

    let old = declenv(&fixture, &["generations", "delete", "old"]);
    assert!(old.status.success(), "{}", stderr(&old));
    assert_eq!(listed(&fixture), [(2, true)]);
}

#[test]
fn bad_delete_spec_is_a_clear_error() {
    let fixture = fixture(2, 2);
    let output = declenv(&fixture, &["generations", "delete", "0d"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).starts_with("error: invalid generation spec `0d`"),
        "{}",
        stderr(&output)
    );
    assert_eq!(listed(&fixture).len(), 2);
}

fn json_of(output: &Output) -> Value {
    assert!(output.status.success(), "{}", stderr(output));
    let document: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(document["schema"]["version"], 1, "{document:#}");
    document
}

#[test]
fn switches_and_deletions_report_json() {
    let fixture = fixture(5, 4);
    let profile = fixture.profile.display().to_string();

    let dry = json_of(&declenv(&fixture, &["rollback", "--dry-run", "--json"]));
    assert_eq!(
        dry,
        serde_json::json!({
            "schema": { "version": 1 },
            "profile": profile,
            "dry_run": true,
            "from": 4,
            "to": 3,
            "restored_spec": false,
        })
    );
    assert_eq!(current_link(&fixture), "default-4-link");

    let rolled_back = declenv(&fixture, &["rollback", "--json"]);
    assert_eq!(json_of(&rolled_back)["to"], 3);
    // What the JSON says is not said again on stderr.
    assert_eq!(stderr(&rolled_back), "");
    assert_eq!(current_link(&fixture), "default-3-link");

    let switched = json_of(&declenv(
        &fixture,
        &["generations", "switch", "5", "--json"],
    ));
    assert_eq!(
        (switched["from"].clone(), switched["to"].clone()),
        (3.into(), 5.into())
    );
    assert_eq!(current_link(&fixture), "default-5-link");

    let would = json_of(&declenv(
        &fixture,
        &["generations", "delete", "+2", "--dry-run", "--json"],
    ));
    assert_eq!(would["deleted"], serde_json::json!([1, 2, 3]), "{would:#}");
    assert_eq!(would["dry_run"], true);
    assert_eq!(listed(&fixture).len(), 5);

    let deleted = json_of(&declenv(
        &fixture,
        &["generations", "delete", "1", "3", "--json"],
    ));
    assert_eq!(deleted["deleted"], serde_json::json!([1, 3]), "{deleted:#}");
    assert_eq!(listed(&fixture), [(2, false), (4, false), (5, true)]);

    let old = json_of(&declenv(
        &fixture,
        &["generations", "delete", "old", "--dry-run", "--json"],
    ));
    assert_eq!(old["deleted"], serde_json::json!([2, 4]));
}
