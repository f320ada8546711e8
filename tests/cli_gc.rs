//! `declenv gc` through the real binary: roots from generations and `gcroots`, references,
//! dry runs and `--delete-old`.

use serde_json::Value;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn declenv(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_declenv"))
        .args(args)
        .env("DECLENV_ROOT", root)
        .env("NO_COLOR", "1")
        .output()
        .expect("declenv runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Adds a directory holding one file with `contents` under `name`; returns its store path.
fn add(root: &Path, work: &Path, name: &str, contents: &str) -> String {
    let tree = work.join(name);
    fs_err::create_dir_all(&tree).expect("mkdir");
    fs_err::write(tree.join("file"), contents).expect("write");
    let output = declenv(root, &["store", "add", tree.to_str().expect("utf-8")]);
    assert!(output.status.success(), "{}", stderr(&output));
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim_end()
        .to_owned()
}

fn lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

struct Store {
    _work: tempfile::TempDir,
    root: PathBuf,
    library: String,
    app: String,
    old_app: String,
    orphan: String,
    pinned: String,
}

/// `app` refers to `library`; generation 2 links `app`, generation 1 links `old_app`;
/// `pinned` is kept by a link under `gcroots`; `orphan` by nothing.
fn store() -> Store {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    let library = add(&root, work.path(), "library-1.0", "a library");
    let app = add(
        &root,
        work.path(),
        "app-2.0",
        &format!("uses {library}/file"),
    );
    let old_app = add(&root, work.path(), "app-1.0", "old");
    let orphan = add(&root, work.path(), "orphan-1", "nobody");
    let pinned = add(&root, work.path(), "pinned-1", "kept by a root");
    let profiles = root.join("nix/var/nix/profiles");
    fs_err::create_dir_all(&profiles).expect("mkdir");
    symlink(&old_app, profiles.join("default-1-link")).expect("link");
    symlink(&app, profiles.join("default-2-link")).expect("link");
    symlink("default-2-link", profiles.join("default")).expect("link");
    let gcroots = root.join("nix/var/nix/gcroots");
    fs_err::create_dir_all(gcroots.join("auto")).expect("mkdir");
    // An indirect root: a link outside the store pointing at a link into the store.
    let pin_link = work.path().join("result");
    symlink(&pinned, &pin_link).expect("link");
    symlink(&pin_link, gcroots.join("auto/pin")).expect("link");
    // A stale indirect root.
    symlink(work.path().join("gone"), gcroots.join("auto/stale")).expect("link");
    Store {
        root,
        library,
        app,
        old_app,
        orphan,
        pinned,
        _work: work,
    }
}

#[test]
fn print_dead_and_live_change_nothing() {
    let store = store();
    let dead = declenv(&store.root, &["gc", "--print-dead"]);
    assert!(dead.status.success(), "{}", stderr(&dead));
    assert_eq!(lines(&dead), std::slice::from_ref(&store.orphan));
    let mut live = lines(&declenv(&store.root, &["gc", "--print-live"]));
    live.sort();
    let mut expected = vec![
        store.library.clone(),
        store.app.clone(),
        store.old_app.clone(),
        store.pinned.clone(),
    ];
    expected.sort();
    assert_eq!(live, expected);
    assert!(Path::new(&store.orphan).exists());
    assert!(
        store
            .root
            .join("nix/var/nix/gcroots/auto/stale")
            .symlink_metadata()
            .is_ok()
    );
}

#[test]
fn gc_deletes_only_unreachable_paths_and_stale_roots() {
    let store = store();
    let output = declenv(&store.root, &["gc", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["dead"], serde_json::json!([store.orphan]));
    assert!(!Path::new(&store.orphan).exists());
    for kept in [&store.library, &store.app, &store.old_app, &store.pinned] {
        assert!(Path::new(kept).exists(), "{kept} must survive");
    }
    assert!(
        store
            .root
            .join("nix/var/nix/gcroots/auto/stale")
            .symlink_metadata()
            .is_err()
    );
    let verify = declenv(&store.root, &["store", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn delete_old_drops_old_generations_then_their_paths() {
    let store = store();
    let output = declenv(&store.root, &["gc", "--delete-old"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("removing old generations of profile"),
        "{}",
        stderr(&output)
    );
    assert!(!Path::new(&store.old_app).exists());
    assert!(!Path::new(&store.orphan).exists());
    assert!(Path::new(&store.app).exists());
    assert!(
        Path::new(&store.library).exists(),
        "kept through app's reference"
    );
    assert!(
        store
            .root
            .join("nix/var/nix/profiles/default-1-link")
            .symlink_metadata()
            .is_err()
    );
}

/// A build killed after making its generation link but before its GC root left a generation
/// with no root; the re-run reuses that generation and must restore the root, or `gc` would
/// delete the environment of a profile kept outside `ROOT/nix/var/nix/profiles`.
#[test]
fn reused_generation_gets_its_gc_root_back() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    let package = add(&root, work.path(), "tool-1.0", "a tool");
    let profile = work.path().join("profiles/p");
    fs_err::create_dir_all(profile.parent().expect("parent")).expect("mkdir");
    let build = || {
        let output = declenv(
            &root,
            &[
                "--profile",
                profile.to_str().expect("utf-8"),
                "debug",
                "build-environment",
                &package,
            ],
        );
        assert!(output.status.success(), "{}", stderr(&output));
    };
    build();
    let auto = root.join("nix/var/nix/gcroots/auto");
    for entry in fs_err::read_dir(&auto).expect("auto roots") {
        fs_err::remove_file(entry.expect("entry").path()).expect("remove root");
    }
    build();
    let gc = declenv(&root, &["gc"]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(
        profile.join("bin").symlink_metadata().is_ok() || fs_err::canonicalize(&profile).is_ok(),
        "the current environment must survive gc"
    );
    assert!(
        fs_err::canonicalize(&profile)
            .expect("profile resolves")
            .exists()
    );
}

fn json_report(root: &Path, args: &[&str]) -> Value {
    let output = declenv(root, args);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).expect("json")
}

/// `--delete-old --dry-run` counts what the old generations alone keep as dead, as the real
/// run then deletes it, and reports the leftovers the real run removes: the dry run predicts
/// the real one exactly, and changes nothing.
#[test]
fn a_dry_run_predicts_what_the_real_collection_deletes() {
    let store = store();
    // An unregistered leftover old enough to go, and one young enough to stay.
    let store_directory = store.root.join("nix/store");
    let old_leftover = store_directory.join("00000000000000000000000000000000-interrupted");
    let young_leftover = store_directory.join("11111111111111111111111111111111-in-progress");
    for leftover in [&old_leftover, &young_leftover] {
        fs_err::write(leftover, "half").expect("write");
    }
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    fs_err::File::options()
        .write(true)
        .open(&old_leftover)
        .expect("open")
        .set_modified(two_hours_ago)
        .expect("age the leftover");

    let predicted = json_report(&store.root, &["gc", "--delete-old", "--dry-run", "--json"]);
    let mut expected_dead = vec![store.old_app.clone(), store.orphan.clone()];
    expected_dead.sort();
    let mut predicted_dead: Vec<String> = predicted["dead"]
        .as_array()
        .expect("dead")
        .iter()
        .map(|path| path.as_str().expect("path").to_owned())
        .collect();
    predicted_dead.sort();
    assert_eq!(predicted_dead, expected_dead, "{predicted:#}");
    assert_eq!(
        predicted["leftovers"],
        serde_json::json!([old_leftover.display().to_string()])
    );
    assert_eq!(
        predicted["deleted_generations"][0]["generations"],
        serde_json::json!([1])
    );
    // Nothing changed.
    assert!(Path::new(&store.old_app).exists() && old_leftover.exists());
    assert!(
        store
            .root
            .join("nix/var/nix/profiles/default-1-link")
            .symlink_metadata()
            .is_ok()
    );

    let done = json_report(&store.root, &["gc", "--delete-old", "--json"]);
    for field in [
        "dead",
        "dead_bytes",
        "leftovers",
        "stale_roots",
        "deleted_generations",
    ] {
        assert_eq!(done[field], predicted[field], "{field}: {done:#}");
    }
    assert!(!old_leftover.exists());
    assert!(young_leftover.exists());
}
