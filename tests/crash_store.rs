//! Crash safety of `declenv store add`: the process is killed with SIGKILL at many instants
//! while it copies, hashes, renames and registers a tree of 800 files. After every kill the
//! store must hold no damaged valid path (leftovers of the interrupted add are allowed: they are
//! invalid by construction), and adding again must converge on the one correct path.

mod hardening;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn declenv(root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_declenv"));
    command.env("DECLENV_ROOT", root).env("NO_COLOR", "1");
    command
}

fn make_tree(directory: &Path) {
    for sub in 0..16 {
        let sub_directory = directory.join(format!("d{sub}"));
        fs_err::create_dir_all(&sub_directory).expect("mkdir");
        for file in 0..50 {
            fs_err::write(
                sub_directory.join(format!("f{file}")),
                "x".repeat(100 * file),
            )
            .expect("write");
        }
    }
    std::os::unix::fs::symlink("d0/f1", directory.join("link")).expect("symlink");
}

fn verify(root: &Path) -> Value {
    let output = declenv(root)
        .args(["store", "verify", "--json"])
        .output()
        .expect("verify runs");
    serde_json::from_slice(&output.stdout).expect("verify prints JSON")
}

#[test]
fn killing_store_add_never_leaves_a_damaged_valid_path() {
    let work = tempfile::tempdir().expect("tempdir");
    let tree = work.path().join("tree-1.0");
    make_tree(&tree);
    let tree_argument = tree.to_str().expect("utf-8");

    // How long one uninterrupted add takes here, to spread the kills over it.
    let reference_root = work.path().join("reference");
    let started = Instant::now();
    let reference = declenv(&reference_root)
        .args(["store", "add", tree_argument])
        .output()
        .expect("add runs");
    let mut duration = started.elapsed();
    assert!(reference.status.success());

    // The one path the tree must end up at in the crash-tested root (the store directory is
    // part of the hash, so it is computed for that root, from the tree's NAR hash).
    let root = work.path().join("root");
    fs_err::create_dir_all(root.join("nix/store")).expect("mkdir");
    let store_dir = declenv::store::StoreDir::new(
        fs_err::canonicalize(root.join("nix/store"))
            .expect("canonical")
            .to_str()
            .expect("utf-8"),
    )
    .expect("store dir");
    let digest = declenv::store::nar::hash_path(&tree).expect("hash tree");
    let expected = declenv::store::path::source_store_path(&store_dir, &digest.sha256, "tree-1.0")
        .expect("store path")
        .to_string();
    let mut schedule = hardening::KillSchedule::new(20);
    while schedule.wants_more() {
        let attempt = schedule.attempts;
        let delay = duration.mul_f64(schedule.next_share());
        let mut child = declenv(&root)
            .args(["store", "add", tree_argument])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("add starts");
        if let Some(ran) = schedule.kill_after(&mut child, delay) {
            duration = ran;
        }
        child.wait().expect("reaped");

        let report = verify(&root);
        assert_eq!(
            report["damaged"], false,
            "after kill {attempt} at {delay:?}: {report:#}"
        );
        // If the path counts as valid, its tree must be complete (verify re-hashed it), and an
        // add of the same tree is a no-op that prints it.
        if report["intact"] == 1 {
            let again = declenv(&root)
                .args(["store", "add", tree_argument])
                .output()
                .expect("add runs");
            assert_eq!(String::from_utf8_lossy(&again.stdout).trim_end(), expected);
        }
    }
    // A final run converges: one valid, intact path, equal to the uninterrupted add's.
    let last = declenv(&root)
        .args(["store", "add", tree_argument])
        .output()
        .expect("add runs");
    assert!(last.status.success());
    assert_eq!(String::from_utf8_lossy(&last.stdout).trim_end(), expected);
    let report = verify(&root);
    assert_eq!(report["damaged"], false);
    assert_eq!(report["intact"], 1, "{report:#}");
}
