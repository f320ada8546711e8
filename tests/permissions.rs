//! Permission problems: a read-only store, a profile directory the user cannot write, a spec
//! directory the user cannot write, a missing home. Each ends in one clear error (with a hint
//! where one helps) and nothing half-done: no new generation, the profile on a complete one,
//! the spec and lockfile as they were, the store undamaged.
//!
//! The tests run as root in CI, for whom permission bits restrict nothing. So declenv runs as
//! `nobody` through `setpriv` (util-linux), in a world handed to `nobody` but for the one
//! directory under test, which stays root's (`0755`). Run as another user, the tests take that
//! directory's write bits away instead. As root without `setpriv` they cannot make a directory
//! unwritable, and fall back to the fault hook: `DECLENV_FAULT=write:eacces` and friends
//! inject the `EACCES` the kernel would return (the same code paths from the first failing
//! write on; `faults.rs` covers every such point).

mod hardening;

use hardening::{SPEC_A, SPEC_B, World, text};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Output;

/// `nobody`.
const NOBODY: u32 = 65_534;

/// How a directory is made unwritable for the runs under test.
enum Restriction {
    /// declenv runs as `nobody` (through `setpriv`); the directory stays root's.
    Nobody,
    /// declenv runs as the (non-root) test user; the directory loses its write bits.
    WriteBits,
}

fn restriction() -> Option<Restriction> {
    let root = fs_err::metadata("/proc/self")
        .map(|metadata| std::os::unix::fs::MetadataExt::uid(&metadata) == 0)
        .unwrap_or(false);
    if !root {
        return Some(Restriction::WriteBits);
    }
    let setpriv = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "true",
        ])
        .status()
        .is_ok_and(|status| status.success());
    setpriv.then_some(Restriction::Nobody)
}

/// Hands `path` and everything under it to `owner` (not following symlinks).
fn chown_tree(path: &Path, owner: u32) {
    std::os::unix::fs::lchown(path, Some(owner), Some(owner)).expect("chown");
    if fs_err::symlink_metadata(path).expect("stat").is_dir() {
        for entry in fs_err::read_dir(path).expect("list") {
            chown_tree(&entry.expect("entry").path(), owner);
        }
    }
}

/// Makes `directories` unwritable for the runs of [`run`], everything else of the world
/// writable by them.
fn restrict(world: &World, restriction: &Restriction, directories: &[&Path]) {
    match restriction {
        Restriction::Nobody => {
            fs_err::set_permissions(&world.base, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            for entry in fs_err::read_dir(&world.base).expect("list") {
                chown_tree(&entry.expect("entry").path(), NOBODY);
            }
            for directory in directories {
                std::os::unix::fs::lchown(directory, Some(0), Some(0)).expect("chown");
                fs_err::set_permissions(directory, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
            }
        }
        Restriction::WriteBits => {
            for directory in directories {
                fs_err::set_permissions(directory, std::fs::Permissions::from_mode(0o555))
                    .expect("chmod");
            }
        }
    }
}

/// Gives the directories back (so that the temporary directory can be removed).
fn unrestrict(restriction: &Restriction, directories: &[&Path]) {
    if let Restriction::WriteBits = restriction {
        for directory in directories {
            fs_err::set_permissions(directory, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
    }
}

/// Runs declenv as the restricted user.
fn run(world: &World, restriction: &Restriction, args: &[&str]) -> Output {
    let wrapper: &[&str] = match restriction {
        Restriction::Nobody => &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        Restriction::WriteBits => &[],
    };
    let child = world
        .command_via(wrapper, args)
        .spawn()
        .expect("declenv starts");
    hardening::finish(child, &args.join(" "))
}

/// Asserts a refusal: exit status `code`, every one of `needles` in stderr.
fn assert_refused(output: &Output, code: i32, needles: &[&str]) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    }
    stderr
}

/// A world with SPEC_A applied and SPEC_B written (so an apply has packages to add, a
/// generation to make and a lockfile to change).
fn world_with_changes() -> World {
    let world = World::new(SPEC_A);
    world.ok(&["apply", "-y"]);
    world.write_spec(SPEC_B);
    world
}

/// The fallback without a way to make a directory unwritable: the same refusals, injected.
fn simulated(world: &World, fault: &str, args: &[&str]) {
    let before = world.files();
    let generations = world.generations();
    let output = world.run_with_fault(args, fault);
    assert!(!output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("Permission denied"));
    assert_eq!(world.generations(), generations);
    world.check(&format!("{} under {fault}", args.join(" ")), &[&before]);
}

#[test]
fn a_read_only_store_is_a_clear_error_and_changes_nothing() {
    let world = world_with_changes();
    let Some(restriction) = restriction() else {
        simulated(&world, "store-temp-written:eacces", &["apply", "-y"]);
        return;
    };
    let store = world.root.join("nix/store");
    let registrations = world.root.join("nix/var/declenv/store/valid");
    restrict(&world, &restriction, &[&store, &registrations]);
    let before = world.files();
    let generations = world.generations();

    let output = run(&world, &restriction, &["apply", "-y"]);
    assert_refused(&output, 2, &["to the store", "Permission denied"]);
    let output = run(&world, &restriction, &["env", "-iA", "demo.cowsay"]);
    assert_refused(&output, 1, &["Permission denied"]);
    // Reading still works.
    assert!(
        run(&world, &restriction, &["generations", "list"])
            .status
            .success()
    );
    assert!(run(&world, &restriction, &["env", "-q"]).status.success());
    assert!(
        run(&world, &restriction, &["store", "verify"])
            .status
            .success()
    );

    unrestrict(&restriction, &[&store, &registrations]);
    assert_eq!(world.generations(), generations);
    world.check("after the read-only store", &[&before]);
}

#[test]
fn an_unwritable_profile_directory_is_a_clear_error_and_changes_nothing() {
    let world = world_with_changes();
    let Some(restriction) = restriction() else {
        simulated(&world, "generation-before-link:eacces", &["apply", "-y"]);
        return;
    };
    let profiles = world.root.join("nix/var/nix/profiles");
    restrict(&world, &restriction, &[&profiles]);
    let before = world.files();
    let generations = world.generations();

    let output = run(&world, &restriction, &["apply", "-y"]);
    assert_refused(
        &output,
        2,
        &[
            "cannot open lock file",
            "Permission denied",
            "hint: the profile's directory",
        ],
    );
    let output = run(&world, &restriction, &["env", "-iA", "demo.cowsay"]);
    assert_refused(&output, 1, &["opening lock file", "Permission denied"]);
    let output = run(&world, &restriction, &["rollback"]);
    assert_refused(&output, 2, &["Permission denied"]);
    // What the refused apply added to the store is unrooted, and the next gc removes it.
    let output = run(&world, &restriction, &["gc"]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    unrestrict(&restriction, &[&profiles]);
    assert_eq!(world.generations(), generations);
    world.check("after the unwritable profile directory", &[&before]);
    world.check_converges("after the unwritable profile directory");
}

#[test]
fn an_unwritable_spec_directory_stops_before_anything_changes() {
    let world = world_with_changes();
    let Some(restriction) = restriction() else {
        simulated(&world, "write:eacces", &["env", "-iA", "demo.cowsay"]);
        return;
    };
    let dotfiles = world.spec.parent().expect("dotfiles").to_owned();
    restrict(&world, &restriction, &[&dotfiles]);
    let before = world.files();
    let generations = world.generations();

    // The lockfile has to change for SPEC_B: refused before the switch, not after it.
    let output = run(&world, &restriction, &["apply", "-y"]);
    assert_refused(
        &output,
        2,
        &["cannot write lockfile", "Permission denied", "hint:"],
    );
    // The lock beside the spec cannot be made: refused before reading anything.
    let output = run(&world, &restriction, &["env", "-iA", "demo.cowsay"]);
    assert_refused(&output, 1, &["Permission denied"]);
    assert_eq!(world.generations(), generations);

    // A lockfile that covers the spec needs no write: `--frozen` applies from a read-only
    // directory (here, once root has locked).
    unrestrict(&restriction, &[&dotfiles]);
    world.ok(&["lock"]);
    let locked = world.files();
    restrict(&world, &restriction, &[&dotfiles]);
    let output = run(&world, &restriction, &["apply", "--frozen", "-y"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    unrestrict(&restriction, &[&dotfiles]);
    world.check("after the read-only spec directory", &[&locked]);
    assert_ne!(locked, before);
}

#[test]
fn a_spec_that_cannot_be_replaced_after_the_switch_says_which_generation_is_current() {
    // What an immutable spec (`chattr +i`) does to `env -i` after its switch, injected: the
    // error names the generation that is current, and the way back.
    let world = World::new(SPEC_A);
    world.ok(&["apply", "-y"]);
    let before = world.files();
    let output = world.run_with_fault(&["env", "-iA", "demo.cowsay"], "spec-write:eacces");
    let stderr = assert_refused(
        &output,
        1,
        &["Permission denied", "is current all the same"],
    );
    assert!(stderr.contains("declenv rollback"), "{stderr}");
    world.check("after the refused spec write", &[&before]);
}

#[test]
fn a_missing_home_is_a_clear_error_that_creates_nothing() {
    let directory = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_declenv"))
            .args(args)
            .current_dir(directory.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .expect("declenv runs")
    };
    for (args, code, needles) in [
        (&["apply", "-y"][..], 2, &["`HOME`", "hint:"][..]),
        (&["plan"], 2, &["`HOME`", "hint:"]),
        (
            &["gc"],
            2,
            &["no root directory", "hint: pass `--root DIR`"],
        ),
        (&["rollback"], 2, &["no root directory"]),
        (&["env", "-iA", "demo.hello"], 1, &["no profile spec"]),
    ] {
        assert_refused(&run(args), code, needles);
    }
    assert_eq!(
        fs_err::read_dir(directory.path()).expect("list").count(),
        0,
        "something was created"
    );
}

#[test]
fn a_relative_root_names_the_same_store_for_every_command() {
    // `declenv env` computed store paths from the root as given, and refused a relative one
    // (`store directory `root/nix/store` is not an absolute path`) that `apply` accepted.
    let world = World::new(SPEC_A);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_declenv"))
        .args(["--root", "root", "--file", "dotfiles/profile.toml"])
        .args(["env", "-iA", "demo.cowsay"])
        .current_dir(&world.base)
        .env("HOME", world.base.join("home"))
        .env_remove("DECLENV_ROOT")
        .env_remove("DECLENV_FILE")
        .output()
        .expect("declenv runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let files = world.files();
    let installed = world.check("after a relative root", &[&files]);
    assert!(installed.contains("cowsay-3.7.0"), "{installed:?}");
}
