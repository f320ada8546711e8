//! Concurrency on one profile:
//!
//! * **gc against an apply, at exact instants.** An apply is paused (fault action `pause`) once
//!   some of its packages are in the store, right before its generation link, and right
//!   before its switch; a `declenv gc` started then must wait for it (saying so), delete
//!   nothing the apply links, and the apply must finish into a complete generation. Without
//!   the garbage collector's lock (`src/profile/gc_lock.rs`), gc deleted the packages and the
//!   environment the apply was about to link.
//! * **A lockfile never older than its spec.** An apply paused in the middle of its lockfile
//!   write makes a concurrent `env -i` wait, and no apply writes a lockfile resolved from a spec
//!   that a `declenv env` write has since replaced.
//! * **An apply never undoes a write it raced.** An apply that read the spec just before an
//!   `env -e` wrote it refuses instead of switching to the old spec's generation.
//! * **Everything at once.** Rounds of 10 or 12 processes started together on one profile:
//!   four `env -i` and two `env -e` of different packages, two `apply`, a `gc` and a
//!   `gc --delete-old`, and every other round two `rollback`s. Every process ends (no
//!   deadlock; waits are bounded and announced) or refuses a profile or spec that moved under
//!   it; without rollbacks no write is lost (every package installed is in the spec and the
//!   profile, every one erased is not); every generation number names one environment (its
//!   link and its metadata agree); the lockfile covers the spec; the invariants of
//!   `hardening/mod.rs` hold; and the next apply converges.
//!
//! 4 rounds by default; `DECLENV_CONCURRENCY_ROUNDS=N` for more.

mod hardening;

use hardening::{Watched, World, count_from_env, text};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// A gc started while an apply is paused at `fault` (`POINT@HIT`) waits for it, and deletes
/// nothing the apply links.
fn gc_waits_for_an_apply_paused_at(fault: &str) {
    let world = World::new(hardening::SPEC_A);
    world.ok(&["apply", "-y"]);
    world.write_spec(hardening::SPEC_B);
    let release = world.base.join("release");

    let mut command = world.command(&["apply", "-y"]);
    command
        .env("DECLENV_FAULT", fault.replacen('@', ":pause@", 1))
        .env("DECLENV_FAULT_RELEASE", &release);
    let mut apply = Watched::spawn(command);
    assert!(
        apply.wait_for_line("declenv: injected fault at"),
        "{fault}: the apply never reached its pause: {:?}",
        apply.seen
    );

    let mut gc = Watched::spawn(world.command(&["gc"]));
    let waited = gc.wait_for_line("waiting for running declenv commands");
    fs_err::write(&release, "").expect("release");
    let applied = apply.finish("the paused apply");
    let collected = gc.finish("gc");
    assert!(
        applied.status.success(),
        "{fault}: {}",
        text(&applied.stderr)
    );
    assert!(
        collected.status.success(),
        "{fault}: {}",
        text(&collected.stderr)
    );
    let files = world.files();
    let installed = world.check(fault, &[&files]);
    assert!(
        installed.contains("jq-1.7.1") && installed.contains("cowsay-3.7.0"),
        "{fault}: {installed:?}"
    );
    assert!(
        waited,
        "{fault}: gc did not wait for the apply: {}",
        text(&collected.stderr)
    );
    let plan = world.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{fault}: {}",
        text(&plan.stdout)
    );
}

#[test]
fn gc_waits_for_an_apply_that_has_added_some_packages() {
    // The fifth add: `hello` (already rooted), `jq`'s three outputs, then `cowsay`.
    gc_waits_for_an_apply_paused_at("store-temp-written@5");
}

#[test]
fn gc_waits_for_an_apply_about_to_link_its_generation() {
    gc_waits_for_an_apply_paused_at("generation-before-link@1");
}

#[test]
fn gc_waits_for_an_apply_about_to_switch() {
    gc_waits_for_an_apply_paused_at("profile-before-switch@1");
}

/// An apply started while a gc is paused (mid-deletion) waits for the gc, then succeeds.
#[test]
fn an_apply_waits_for_a_running_gc() {
    let world = World::new(hardening::SPEC_A);
    world.ok(&["apply", "-y"]);
    world.write_spec(hardening::SPEC_B);
    world.ok(&["apply", "-y"]);
    world.ok(&["generations", "delete", "1"]);
    world.write_spec(hardening::SPEC_A);
    let release = world.base.join("release");
    let mut command = world.command(&["gc"]);
    command
        .env("DECLENV_FAULT", "store-before-delete:pause")
        .env("DECLENV_FAULT_RELEASE", &release);
    let mut gc = Watched::spawn(command);
    assert!(
        gc.wait_for_line("declenv: injected fault at"),
        "{:?}",
        gc.seen
    );

    let mut apply = Watched::spawn(world.command(&["apply", "-y"]));
    let waited = apply.wait_for_line("waiting for the garbage collector's lock");
    fs_err::write(&release, "").expect("release");
    let collected = gc.finish("the paused gc");
    let applied = apply.finish("apply");
    assert!(waited, "the apply did not wait: {}", text(&applied.stderr));
    assert!(collected.status.success(), "{}", text(&collected.stderr));
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let files = world.files();
    let installed = world.check("after gc and apply", &[&files]);
    assert!(installed.contains("which-2.21"), "{installed:?}");
    world.check_converges("after gc and apply");
}

/// An `env -i` that runs while an apply is about to write its lockfile waits for it, and the
/// apply never brings back a lockfile older than the spec. Without the check under the spec's
/// edit lock (`write_lockfile_if_current`), the apply wrote the lockfile it resolved before the
/// `env -i`, and the spec named a package its lockfile did not lock.
#[test]
fn an_apply_never_writes_a_lockfile_older_than_the_spec() {
    let world = World::new(hardening::SPEC_A);
    world.ok(&["apply", "-y"]);
    world.write_spec(hardening::SPEC_B);
    let release = world.base.join("release");
    let mut command = world.command(&["apply", "-y"]);
    command
        .env("DECLENV_FAULT", "lockfile-write:pause")
        .env("DECLENV_FAULT_RELEASE", &release);
    let mut apply = Watched::spawn(command);
    assert!(
        apply.wait_for_line("declenv: injected fault at"),
        "{:?}",
        apply.seen
    );
    let mut install = Watched::spawn(world.command(&["env", "-iA", "demo.fortune-mod"]));
    let waited = install.wait_for_line("waiting for lock on profile spec");
    fs_err::write(&release, "").expect("release");
    let applied = apply.finish("the paused apply");
    let installed = install.finish("env -i");
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    assert!(installed.status.success(), "{}", text(&installed.stderr));
    let check = world.run(&["lock", "--check"]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "the lockfile no longer covers the spec: {}",
        text(&check.stderr)
    );
    assert!(waited, "env -i did not wait: {}", text(&installed.stderr));
    let files = world.files();
    world.check("after apply and env -i", &[&files]);
    let plan = world.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stdout));
}

/// An apply that read the spec while an `env -e` was between its switch and its spec write
/// refuses once it gets the spec's edit lock, rather than switch to a generation built from
/// the spec as it was before the erase. Without the edit lock around `apply`'s switch, the
/// apply put the erased package back (a lost `nix-env -e`, NixOS/nix#851's kind).
#[test]
fn an_apply_never_undoes_an_env_write_it_raced() {
    let world = World::new(hardening::SPEC_B);
    world.ok(&["apply", "-y"]);
    let release = world.base.join("release");
    let mut command = world.command(&["env", "-e", "jq"]);
    command
        .env("DECLENV_FAULT", "spec-write:pause")
        .env("DECLENV_FAULT_RELEASE", &release);
    let mut erase = Watched::spawn(command);
    assert!(
        erase.wait_for_line("declenv: injected fault at"),
        "{:?}",
        erase.seen
    );
    // The profile no longer has `jq`; the spec still does.
    let mut apply = Watched::spawn(world.command(&["apply", "-y"]));
    let waited = apply.wait_for_line("waiting for lock on profile spec");
    fs_err::write(&release, "").expect("release");
    let erased = erase.finish("the paused env -e");
    let applied = apply.finish("apply");
    assert!(erased.status.success(), "{}", text(&erased.stderr));
    assert!(waited, "apply did not wait: {}", text(&applied.stderr));
    assert!(
        !applied.status.success()
            && text(&applied.stderr).contains("changed while this ran; nothing was applied"),
        "{}",
        text(&applied.stderr)
    );
    let files = world.files();
    let installed = world.check("after env -e and apply", &[&files]);
    assert!(!installed.contains("jq-1.7.1"), "the erase was undone");
    assert!(!text(&files.spec.expect("spec")).contains("[packages.jq]"));
    world.check_converges("after env -e and apply");
}

/// The attribute paths a round installs.
const INSTALLED: [&str; 4] = ["cowsay", "busybox", "demo-motd", "fortune-mod"];

/// The spec every round starts from: four packages, two of which the round erases.
const BASE_SPEC: &str = r#"version = 1

[sources.demo]
channel = "channel"

[packages.hello]
attr = "hello"

[packages.which]
attr = "which"

[packages.jq]
attr = "jq"

[packages.six]
attr = "python312Packages.six"
"#;

/// What each process of a round runs: the writers (whose every update must survive)…
const WRITERS: &[&[&str]] = &[
    &["env", "-iA", "demo.cowsay"],
    &["env", "-iA", "demo.busybox"],
    &["env", "-iA", "demo.demo-motd"],
    &["env", "-iA", "demo.fortune-mod"],
    &["env", "-e", "jq"],
    &["env", "-e", "python3.12-six"],
    &["apply", "-y"],
    &["apply", "-y"],
    &["gc"],
    &["gc", "--delete-old"],
];

/// …and, every other round, two rollbacks among them. A rollback switches the profile under a
/// running write, which then carries the rollback into the spec (as the README says) and may
/// undo an install or erase that came before it: a serial order, but not the writers' alone.
const ROLLBACKS: &[&[&str]] = &[&["rollback"], &["rollback"]];

/// Failures a process of a round may end with, by design, when another changed the profile
/// or the spec under it: it refuses rather than undo the other's change.
const ACCEPTABLE_FAILURES: &[&str] = &[
    // `apply` when the profile moved between its plan and its switch.
    "changed while this command was working",
    // `apply` when an `env` write replaced the spec between its read and its switch.
    "changed while this ran; nothing was applied",
    // `rollback` when another rollback left no older generation.
    "no profile version older than the current",
];

/// Every generation link names the environment its metadata records: no two processes made
/// the same number.
fn check_generation_numbers(world: &World, context: &str) {
    let profile = world.profile();
    let directory = profile.parent().expect("parent");
    let metadata_root = world.root.join("nix/var/declenv/generations");
    let mut recorded: BTreeMap<u64, String> = BTreeMap::new();
    for profile_directory in fs_err::read_dir(&metadata_root).expect("metadata") {
        for file in fs_err::read_dir(profile_directory.expect("entry").path()).expect("metadata") {
            let path = file.expect("entry").path();
            let record: Value =
                serde_json::from_slice(&fs_err::read(&path).expect("read")).expect("JSON");
            recorded.insert(
                record["generation"].as_u64().expect("number"),
                record["target"].as_str().expect("target").to_owned(),
            );
        }
    }
    let (numbers, _) = world.generations();
    for number in numbers {
        let link = directory.join(format!("default-{number}-link"));
        let target = fs_err::read_link(&link).expect("generation link");
        assert_eq!(
            recorded.get(&number).map(Path::new),
            Some(target.as_path()),
            "{context}: generation {number}'s link and metadata disagree"
        );
    }
}

#[test]
#[expect(clippy::print_stderr, reason = "the figures HARDENING.md quotes")]
fn many_processes_on_one_profile_lose_nothing_and_all_finish() {
    let rounds = count_from_env("DECLENV_CONCURRENCY_ROUNDS", 4);
    let mut runs = 0;
    let mut refused = 0;
    let mut waits = 0;
    for round in 0..rounds {
        let context = format!("round {round}");
        let world = World::new(hardening::SPEC_A);
        world.ok(&["apply", "-y"]);
        world.write_spec(BASE_SPEC);
        world.ok(&["apply", "-y"]);

        let with_rollbacks = round % 2 == 1;
        let children: Vec<(String, Watched)> = WRITERS
            .iter()
            .chain(if with_rollbacks { ROLLBACKS } else { &[] })
            .map(|args| (args.join(" "), Watched::spawn(world.command(args))))
            .collect();
        for (what, child) in children {
            let output = child.finish(&what);
            runs += 1;
            let stderr = text(&output.stderr);
            waits += stderr.matches("waiting for").count();
            if !output.status.success() {
                assert!(
                    ACCEPTABLE_FAILURES
                        .iter()
                        .any(|failure| stderr.contains(failure)),
                    "{context}: `{what}` failed: {stderr}"
                );
                refused += 1;
            }
        }

        // No lost update: every install is in the spec, every erase is gone from it.
        let spec = text(&world.files().spec.expect("spec"));
        if !with_rollbacks {
            for id in INSTALLED {
                assert!(
                    spec.contains(&format!("attr = \"{id}\"")),
                    "{context}: `{id}` was installed but is not in the spec:\n{spec}"
                );
            }
            for id in ["jq", "six"] {
                assert!(
                    !spec.contains(&format!("[packages.{id}]")),
                    "{context}: `{id}` was erased but is still in the spec:\n{spec}"
                );
            }
        }
        // Nor of a lockfile: it still covers the spec (`apply` writing the lockfile it resolved
        // after an `env` write replaced spec and lockfile would leave it behind).
        let check = world.run(&["lock", "--check"]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "{context}: the lockfile no longer covers the spec: {}",
            text(&check.stderr)
        );
        check_generation_numbers(&world, &context);
        let files = world.files();
        world.check(&context, &[&files]);
        world.check_converges(&context);
        let installed = hardening::check_profile(&world.root, &world.profile(), &context);
        if !with_rollbacks {
            for name in [
                "cowsay-3.7.0",
                "busybox-1.36.1",
                "demo-motd",
                "fortune-mod-3.20.0",
            ] {
                assert!(installed.contains(name), "{context}: {installed:?}");
            }
        }
    }
    eprintln!(
        "concurrency: {rounds} rounds, {runs} concurrent runs ({refused} refused a moved \
         profile, {waits} waits announced), nothing lost"
    );
}
