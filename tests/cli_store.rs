//! `declenv store add` and `declenv store verify` through the real binary.

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn declenv(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_declenv"))
        .args(args)
        .env("DECLENV_ROOT", root)
        .env("NO_COLOR", "1")
        .output()
        .expect("declenv runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

fn make_tree(directory: &Path) {
    fs_err::create_dir_all(directory.join("bin")).expect("mkdir");
    fs_err::write(directory.join("bin/tool"), "#!/bin/sh\necho tool\n").expect("write");
    fs_err::set_permissions(
        directory.join("bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::os::unix::fs::symlink("bin/tool", directory.join("link")).expect("symlink");
}

#[test]
fn add_prints_one_store_path_per_argument_and_is_idempotent() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    let tree = work.path().join("tool-1.0");
    make_tree(&tree);
    let file = work.path().join("notes.txt");
    fs_err::write(&file, "plain file").expect("write");

    let first = declenv(
        &root,
        &[
            "store",
            "add",
            tree.to_str().expect("utf-8"),
            file.to_str().expect("utf-8"),
        ],
    );
    assert!(first.status.success(), "{}", text(&first.stderr));
    let lines: Vec<String> = text(&first.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2);
    let store_dir = std::fs::canonicalize(root.join("nix/store")).expect("store exists");
    assert!(
        lines[0].starts_with(&format!("{}/", store_dir.display())),
        "{lines:?}"
    );
    assert!(lines[0].ends_with("-tool-1.0"), "{lines:?}");
    assert!(lines[1].ends_with("-notes.txt"), "{lines:?}");
    assert_eq!(
        fs_err::read_to_string(format!("{}/bin/tool", lines[0])).expect("copied"),
        "#!/bin/sh\necho tool\n"
    );

    let second = declenv(&root, &["store", "add", tree.to_str().expect("utf-8")]);
    assert_eq!(text(&second.stdout).trim_end(), lines[0]);

    let verify = declenv(&root, &["store", "verify", "--json"]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    let report: Value = serde_json::from_slice(&verify.stdout).expect("json");
    assert_eq!(report["clean"], true);
    assert_eq!(report["intact"], 2);
}

#[test]
fn verify_reports_a_corrupted_path_and_fails() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    let tree = work.path().join("tool-1.0");
    make_tree(&tree);
    let added = declenv(&root, &["store", "add", tree.to_str().expect("utf-8")]);
    let store_path = text(&added.stdout).trim_end().to_owned();
    let victim = Path::new(&store_path).join("bin/tool");
    fs_err::set_permissions(
        Path::new(&store_path).join("bin"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod dir");
    fs_err::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).expect("chmod file");
    fs_err::write(&victim, "tampered").expect("tamper");

    let verify = declenv(&root, &["store", "verify"]);
    assert_eq!(verify.status.code(), Some(1));
    let stdout = text(&verify.stdout);
    assert!(
        stdout.starts_with(&format!("corrupt {store_path} (registered sha256:")),
        "{stdout}"
    );

    let json = declenv(&root, &["store", "verify", "--json"]);
    let report: Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(report["clean"], false);
    assert_eq!(report["corrupt"][0]["path"], store_path.as_str());
}

#[test]
fn adding_a_missing_path_is_one_clear_error() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    let missing = work.path().join("nothing-here");
    let output = declenv(&root, &["store", "add", missing.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.starts_with("error: cannot add `"), "{stderr}");
    assert!(stderr.contains("nothing-here"), "{stderr}");
    assert!(output.stdout.is_empty());
}

/// In a root Nix keeps its database in too, an entry declenv did not register may be Nix's
/// (`.links`): `verify` says so, and still calls declenv's own temporaries leftovers.
#[test]
fn verify_tells_nix_entries_from_interrupted_adds_in_a_shared_root() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    let file = work.path().join("notes.txt");
    fs_err::write(&file, "plain file").expect("write");
    assert!(
        declenv(&root, &["store", "add", file.to_str().expect("utf-8")])
            .status
            .success()
    );
    let store = root.join("nix/store");
    fs_err::create_dir_all(store.join(".links")).expect("mkdir");
    fs_err::create_dir_all(store.join(".declenv-add-x1y2z3")).expect("mkdir");
    let report = |shared: bool| -> Vec<String> {
        if shared {
            fs_err::create_dir_all(root.join("nix/var/nix/db")).expect("mkdir");
        }
        let output = declenv(&root, &["store", "verify"]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        let mut lines: Vec<String> = text(&output.stdout)
            .lines()
            .map(|line| line.replace(&store.display().to_string(), "STORE"))
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(
        report(false),
        [
            "unregistered STORE/.declenv-add-x1y2z3 (left by an interrupted add or delete)",
            "unregistered STORE/.links (left by an interrupted add or delete)",
        ]
    );
    assert_eq!(
        report(true),
        [
            "unregistered STORE/.declenv-add-x1y2z3 (left by an interrupted add or delete)",
            "unregistered STORE/.links (not declenv's: Nix's, or left by an interrupted add or delete)",
        ]
    );
}
