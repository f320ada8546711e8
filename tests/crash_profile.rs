//! Crash safety of building an environment and switching the profile to it: `declenv debug
//! build-environment` is killed with SIGKILL at many instants of its run, on a root whose profile
//! already has generations. After every kill the profile must point at a complete generation (an
//! environment that is a valid store path, with a readable `manifest.nix` naming the packages of
//! the old or the new set, every link of it resolving into a valid store path), the store must
//! hold no damaged valid path, no lock may block the next run, and the generation numbers must be
//! unique and increasing. A final run converges, and an identical one reuses its generation.

#![expect(
    clippy::print_stderr,
    reason = "the test reports where its kills landed"
)]

mod hardening;

use declenv::model::manifest;
use declenv::profile::ProfileLock;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How many packages each build installs (so one build takes long enough to interrupt).
const PACKAGES: usize = 100;
/// How many kills must land while a build runs.
const KILLS: u32 = 20;
/// How long a run after a kill may take before a left-over lock is suspected.
const NEXT_RUN_BOUND: Duration = Duration::from_secs(20);

/// The profile, outside the root's `nix/var/nix/profiles`, so that only the indirect roots under
/// `gcroots/auto` keep its generations alive, as for any profile of a user's own.
fn profile_of(root: &Path) -> PathBuf {
    root.parent().expect("parent").join("profiles/default")
}

fn declenv(root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_declenv"));
    command
        .env("DECLENV_ROOT", root)
        .env("NO_COLOR", "1")
        .arg("--profile")
        .arg(profile_of(root));
    command
}

fn run(root: &Path, args: &[&str]) -> Output {
    declenv(root).args(args).output().expect("declenv runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Small package trees: `bin` and `lib` are shared by all of them (so the builder merges them),
/// `share/NAME` is each one's own (so it is linked whole).
fn make_packages(directory: &Path) -> Vec<PathBuf> {
    (0..PACKAGES)
        .map(|index| {
            let tree = directory.join(format!("pkg{index:03}-1.{index}"));
            fs_err::create_dir_all(tree.join("bin")).expect("mkdir");
            fs_err::create_dir_all(tree.join("lib")).expect("mkdir");
            fs_err::create_dir_all(tree.join(format!("share/pkg{index:03}"))).expect("mkdir");
            fs_err::write(
                tree.join(format!("bin/pkg{index:03}")),
                format!("#!/bin/sh\necho {index}\n"),
            )
            .expect("write");
            fs_err::write(
                tree.join(format!("lib/libpkg{index:03}.so")),
                "x".repeat(index * 7),
            )
            .expect("write");
            fs_err::write(
                tree.join(format!("share/pkg{index:03}/README")),
                format!("package {index}\n"),
            )
            .expect("write");
            tree
        })
        .collect()
}

/// Adds the trees to the store in one run; returns their store paths in order.
fn add_packages(root: &Path, trees: &[PathBuf]) -> Vec<String> {
    let output = declenv(root)
        .args(["store", "add"])
        .args(trees)
        .output()
        .expect("add runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let paths: Vec<String> = text(&output.stdout).lines().map(str::to_owned).collect();
    assert_eq!(paths.len(), trees.len());
    paths
}

fn build_command(root: &Path, packages: &[String]) -> Command {
    let mut command = declenv(root);
    command
        .args(["debug", "build-environment"])
        .args(packages)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for `child` at most `bound`; kills it and fails if it takes longer.
fn wait_bounded(mut child: Child, bound: Duration, what: &str) -> Output {
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > bound {
            child.kill().ok();
            let output = child.wait_with_output().expect("output");
            panic!(
                "{what} did not finish within {bound:?} (a lock left behind?): {}",
                text(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Builds `packages` to completion; returns the generation number it printed.
fn build(root: &Path, packages: &[String], what: &str) -> u32 {
    let child = build_command(root, packages).spawn().expect("build starts");
    let output = wait_bounded(child, NEXT_RUN_BOUND, what);
    assert!(
        output.status.success(),
        "{what} failed: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{what} printed no generation: {:?}", output.stdout))
}

/// The generations `declenv generations list --json` reports: their numbers and the current one.
fn generations(root: &Path) -> (Vec<u64>, Option<u64>) {
    let output = run(root, &["generations", "list", "--json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("list prints JSON");
    let numbers = report["generations"]
        .as_array()
        .expect("generations")
        .iter()
        .map(|generation| generation["number"].as_u64().expect("number"))
        .collect();
    (numbers, report["current"].as_u64())
}

/// Checks the profile after a kill; returns the package set its current generation installs.
///
/// The structural checks (a complete generation whose links all resolve into valid store paths,
/// every generation link kept by garbage collection) are the hardening tests' own.
fn check_profile(
    root: &Path,
    profile: &Path,
    sets: &[&BTreeSet<String>],
    context: &str,
) -> BTreeSet<String> {
    hardening::check_profile(root, profile, context);

    // Its manifest installs one of the package sets.
    let environment =
        fs_err::canonicalize(profile).unwrap_or_else(|error| panic!("{context}: {error}"));
    let manifest_text = fs_err::read_to_string(environment.join("manifest.nix"))
        .unwrap_or_else(|error| panic!("{context}: {error}"));
    let elements = manifest::parse(&manifest_text)
        .unwrap_or_else(|error| panic!("{context}: manifest.nix does not parse: {error}"));
    let installed: BTreeSet<String> = elements
        .iter()
        .map(|element| element.outputs["out"].clone())
        .collect();
    assert!(
        sets.contains(&&installed),
        "{context}: the manifest installs {} packages, neither the old nor the new set",
        installed.len()
    );
    let links = hardening::symlinks(&environment);
    assert!(links.len() > PACKAGES, "{context}: {} links", links.len());
    installed
}

#[test]
fn killing_environment_builds_leaves_a_complete_generation() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    let profile = profile_of(&root);
    let trees = make_packages(&work.path().join("trees"));
    let packages = add_packages(&root, &trees);
    let everything: BTreeSet<String> = packages.iter().cloned().collect();

    // The profile starts at generation 2. Builds that make a new environment are timed, to
    // spread the kills over the latest one's duration (builds slow down as the filesystem ages).
    let without = |skip: usize| -> Vec<String> {
        packages
            .iter()
            .enumerate()
            .filter(|(index, _)| *index != skip)
            .map(|(_, path)| path.clone())
            .collect()
    };
    assert_eq!(build(&root, &without(PACKAGES - 1), "the first build"), 1);
    let started = Instant::now();
    assert_eq!(build(&root, &packages, "the reference build"), 2);
    let mut duration = started.elapsed();
    let mut current: BTreeSet<String> = everything.clone();

    let mut schedule = hardening::KillSchedule::new(KILLS);
    // What each kill left: nothing committed, a new generation not yet current, a switch.
    let mut outcomes = [0_u32; 3];
    let mut known = generations(&root);
    while schedule.wants_more() {
        let attempt = schedule.attempts;
        // Each attempt installs a set never built before, so every run builds and adds a new
        // environment and makes a new generation.
        let wanted = without(attempt as usize);
        let wanted_set: BTreeSet<String> = wanted.iter().cloned().collect();
        let delay = duration.mul_f64(schedule.next_share());
        let context = format!("after kill {attempt} at {delay:?}");
        let mut child = build_command(&root, &wanted)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("build starts");
        if let Some(ran) = schedule.kill_after(&mut child, delay) {
            duration = ran;
        }
        child.wait().expect("reaped");

        let after_kill = check_profile(&root, &profile, &[&current, &wanted_set], &context);

        let report: Value =
            serde_json::from_slice(&run(&root, &["store", "verify", "--json"]).stdout)
                .expect("verify prints JSON");
        assert_eq!(report["damaged"], false, "{context}: {report:#}");

        let lock = ProfileLock::try_acquire(&profile)
            .unwrap_or_else(|error| panic!("{context}: {error}"))
            .unwrap_or_else(|| panic!("{context}: the profile lock is still held"));
        lock.release();

        let (numbers, current_number) = generations(&root);
        assert!(
            numbers.starts_with(&known.0),
            "{context}: generations went from {:?} to {numbers:?}",
            known.0
        );
        outcomes[if numbers == known.0 {
            0
        } else if current_number == known.1 {
            1
        } else {
            2
        }] += 1;
        assert!(
            numbers.windows(2).all(|pair| pair[0] < pair[1]),
            "{context}: generations {numbers:?}"
        );
        assert!(
            current_number.is_some_and(|number| numbers.contains(&number)),
            "{context}: current {current_number:?} of {numbers:?}"
        );

        // The next run is not blocked and finishes the interrupted change.
        let started = Instant::now();
        let number = build(&root, &wanted, &format!("the run {context}"));
        if after_kill != wanted_set {
            duration = started.elapsed();
        }
        known = generations(&root);
        let (numbers_after, current_after) = known.clone();
        assert_eq!(current_after, Some(u64::from(number)), "{context}");
        assert!(
            numbers_after.starts_with(&numbers),
            "{context}: generations went from {numbers:?} to {numbers_after:?}"
        );
        if after_kill == wanted_set {
            assert_eq!(
                current_number,
                Some(u64::from(number)),
                "{context}: not reused"
            );
        }
        current = check_profile(&root, &profile, &[&wanted_set], &context);
    }
    eprintln!(
        "{} of {} kills landed mid-build; they left the profile \
         unchanged {} times, a new generation not yet current {} times, switched {} times",
        schedule.landed, schedule.attempts, outcomes[0], outcomes[1], outcomes[2]
    );
    // A re-run converges, and an identical one reuses its generation.
    let number = build(&root, &packages, "the final build");
    let (numbers, _) = generations(&root);
    assert_eq!(build(&root, &packages, "the repeated final build"), number);
    assert_eq!(generations(&root), (numbers, Some(u64::from(number))));
    check_profile(&root, &profile, &[&everything], "at the end");
    let report: Value = serde_json::from_slice(&run(&root, &["store", "verify", "--json"]).stdout)
        .expect("verify prints JSON");
    assert_eq!(report["damaged"], false, "{report:#}");
}
