//! Differential conformance of `declenv::profile` and `declenv::plan::generations` against the
//! generations of Nix 2.8 profiles.
//!
//! `tests/fixtures/generations/scenarios.json` holds what the real `nix-env` did, step by step,
//! on profiles built with installs, `--set`, rollbacks, `--switch-generation`, every
//! `--delete-generations` form, odd directory entries and aged links (regenerate it with
//! `scripts/conformance/gen_generations.py`). Each scenario is replayed here on a temporary
//! directory, with symlinks to fake store paths, through a small `nix-env` emulation built on
//! the library; after every step stdout, stderr, the exit status and the whole profile
//! directory must equal Nix's.
//!
//! The last `nix-env` step of a few scenarios is where Nix 2.8 aborts, overflows or loses track
//! of a link and declenv deliberately does better; [`divergence`] states both behaviours and the
//! test checks both.
//!
//! `live_generations_against_nix` regenerates the scenarios with the installed Nix first; it
//! runs only when `DECLENV_TEST_NIX=1` is set, like `live_nix_waits_for_a_declenv_lock`.

#![allow(
    clippy::print_stderr,
    reason = "the tests report skips and mismatches on stderr"
)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use declenv::plan::generations::{DeletePolicy, parse_switch_generation_arguments};
use declenv::profile::{
    LockOptions, Profile, ProfileError, ProfileLayout, ProfileMessage, ProfileToken, Provenance,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Document {
    nix_version: String,
    scenarios: Vec<Scenario>,
}

#[derive(Debug, Deserialize)]
struct Scenario {
    name: String,
    /// The profile's path relative to the scenario's directory.
    profile: String,
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op")]
enum Step {
    #[serde(rename = "touch")]
    Touch { entry: String, time: i64 },
    #[serde(rename = "make")]
    Make {
        entry: String,
        kind: String,
        target: Option<String>,
    },
    #[serde(rename = "remove")]
    Remove { entry: String },
    #[serde(rename = "nix-env")]
    NixEnv(NixEnvStep),
}

#[derive(Debug, Deserialize)]
struct NixEnvStep {
    args: Vec<String>,
    exit: i32,
    stdout: String,
    /// `None` for steps that build (their stderr is build chatter).
    stderr: Option<String>,
    /// For `--set` and installs: the environment the profile ended up on.
    env: Option<String>,
    /// For `Nd` deletions: the second `nix-env` ran in.
    now: Option<i64>,
    links: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Entry {
    Symlink { target: String },
    File,
    Dir,
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    exit: i32,
    stdout: String,
    stderr: String,
}

/// What declenv does on the last `nix-env` step of a scenario where it departs from Nix 2.8 on purpose,
/// and a fact about what Nix did there.
struct Divergence {
    why: &'static str,
    exit: i32,
    stderr: &'static str,
    /// The profile directory's entry names afterwards.
    names: &'static [&'static str],
    nix_exit: i32,
    nix_stderr_contains: &'static str,
}

fn divergence(scenario: &str) -> Option<Divergence> {
    let divergence = match scenario {
        "days_overflow" => Divergence {
            why: "2.8 computes the `Nd` cutoff in a 32-bit int; 24856d wraps into the future",
            exit: 0,
            stderr: "",
            names: &[
                "prof",
                "prof-1-link",
                "prof-2-link",
                "prof-3-link",
                "prof-4-link",
                "prof-5-link",
                "prof-6-link",
                "prof-7-link",
            ],
            nix_exit: 0,
            nix_stderr_contains: "removing profile version 1\n",
        },
        "days_unordered" => Divergence {
            why: "2.8 asserts that times are monotonic and aborts after deleting part of the list; \
                  declenv keeps the generation that is newer than the cutoff",
            exit: 0,
            stderr: "removing profile version 3\nremoving profile version 1\n",
            names: &[
                "prof",
                "prof-2-link",
                "prof-4-link",
                "prof-5-link",
                "prof-6-link",
                "prof-7-link",
            ],
            nix_exit: 134,
            nix_stderr_contains: "Assertion `i->creationTime < t' failed",
        },
        "discovery" => Divergence {
            why: "2.8 unlinks the canonical name `del-7-link` once per entry numbered 7 and fails \
                  the second time; declenv removes each entry by its own name",
            exit: 0,
            stderr: "removing profile version 7\nremoving profile version 7\n",
            names: &[
                ".del-19-link",
                "del",
                "del- 8-link",
                "del-+5-link",
                "del--6-link",
                "del-10-link.txt",
                "del-12-link",
                "del-13-link-14-link",
                "del-15-lin",
                "del-17-link-",
                "del-20-link.json",
                "del-21-link",
                "del-4-linkfoo",
                "del-4294967296-link",
                "del-99999999999-link",
                "del-x-link",
                "dele-18-link",
            ],
            nix_exit: 1,
            nix_stderr_contains: "error: cannot unlink '@DIR@/del-7-link': No such file or directory",
        },
        "discovery_odd_name_delete" => Divergence {
            why: "2.8 counts `del-4-linkfoo` as generation 4 but can only delete `del-4-link`",
            exit: 0,
            stderr: "removing profile version 4\n",
            names: &["del", "del-5-link"],
            nix_exit: 1,
            nix_stderr_contains: "error: cannot unlink '@DIR@/del-4-link': No such file or directory",
        },
        "discovery_regular_file_delete" => Divergence {
            why: "2.8 `remove()`s whatever has the name; declenv deletes only symlinks and stops \
                  before changing anything",
            exit: 1,
            stderr: "error: cannot delete `@DIR@/del-4-link` of profile `@DIR@/del`: it is named \
                     like a generation link but is not a symlink\n",
            names: &["del", "del-4-link", "del-5-link"],
            nix_exit: 0,
            nix_stderr_contains: "removing profile version 4\n",
        },
        "absolute_link" => Divergence {
            why: "with an absolute profile link 2.8 sees no current generation and deletes the \
                  one the link points at, leaving the profile dangling; declenv keeps it",
            exit: 0,
            stderr: "removing profile version 3\n",
            names: &["prof", "prof-2-link"],
            nix_exit: 0,
            nix_stderr_contains: "removing profile version 2\n",
        },
        "exhausted" => Divergence {
            why: "2.8 makes `prof-4294967296-link`, which its own discovery ignores, so the \
                  profile loses its current generation; declenv refuses",
            exit: 1,
            stderr: "error: cannot add a generation to profile `@DIR@/prof`\n",
            names: &["prof", "prof-4294967295-link"],
            nix_exit: 0,
            nix_stderr_contains: "",
        },
        _ => return None,
    };
    Some(divergence)
}

/// A scenario's profile on a temporary directory, driven like `nix-env -p PROFILE`.
struct Replay {
    _temporary: tempfile::TempDir,
    store: PathBuf,
    directory: PathBuf,
    profile: Profile,
}

impl Replay {
    fn new(scenario: &Scenario) -> Self {
        let temporary = tempfile::tempdir().expect("tempdir");
        let root = temporary.path().to_owned();
        let store = root.join("store");
        let directory = root.join("profiles").join(&scenario.name);
        std::fs::create_dir_all(&store).expect("store");
        std::fs::create_dir_all(&directory).expect("profile directory");
        let profile = Profile::new(
            &directory.join(&scenario.profile),
            ProfileLayout::under_root(&root),
        )
        .expect("profile");
        Self {
            _temporary: temporary,
            store,
            directory,
            profile,
        }
    }

    fn resolve(&self, text: &str) -> PathBuf {
        if let Some(label) = text.strip_prefix("@STORE@/") {
            self.store.join(label)
        } else if let Some(rest) = text.strip_prefix("@DIR@") {
            PathBuf::from(format!("{}{rest}", self.directory.display()))
        } else {
            PathBuf::from(text)
        }
    }

    fn normalize(&self, text: &str) -> String {
        text.replace(&self.store.display().to_string(), "@STORE@")
            .replace(&self.directory.display().to_string(), "@DIR@")
    }

    fn listing(&self) -> BTreeMap<String, Entry> {
        let mut listing = BTreeMap::new();
        for entry in std::fs::read_dir(&self.directory).expect("list") {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type().expect("file type");
            let value = if kind.is_symlink() {
                let target = std::fs::read_link(entry.path()).expect("link");
                Entry::Symlink {
                    target: self.normalize(&target.to_string_lossy()),
                }
            } else if kind.is_dir() {
                Entry::Dir
            } else {
                Entry::File
            };
            listing.insert(name, value);
        }
        listing
    }

    fn apply(&self, step: &Step) -> Option<Outcome> {
        match step {
            Step::Touch { entry, time } => {
                let time = filetime::FileTime::from_unix_time(*time, 0);
                filetime::set_symlink_file_times(self.directory.join(entry), time, time)
                    .expect("touch");
                None
            }
            Step::Make {
                entry,
                kind,
                target,
            } => {
                let path = self.directory.join(entry);
                match kind.as_str() {
                    "symlink" => {
                        let target = self.resolve(target.as_deref().expect("target"));
                        std::os::unix::fs::symlink(target, path).expect("symlink");
                    }
                    "file" => std::fs::write(path, b"x\n").expect("file"),
                    _ => std::fs::create_dir(path).expect("dir"),
                }
                None
            }
            Step::Remove { entry } => {
                let path = self.directory.join(entry);
                if path.is_dir() && !path.is_symlink() {
                    std::fs::remove_dir(path).expect("remove dir");
                } else {
                    std::fs::remove_file(path).expect("remove");
                }
                None
            }
            Step::NixEnv(step) => Some(self.nix_env(step)),
        }
    }

    /// `nix-env -p PROFILE ARGS` for the generation operations, on top of the library.
    fn nix_env(&self, step: &NixEnvStep) -> Outcome {
        let dry_run = step.args.iter().any(|argument| argument == "--dry-run");
        let arguments: Vec<&str> = step
            .args
            .iter()
            .map(String::as_str)
            .filter(|&argument| argument != "--dry-run")
            .collect();
        let mut stderr = String::new();
        if dry_run {
            stderr.push_str("(dry run; not doing anything)\n");
        }
        let mut stdout = String::new();
        let (operation, operands) = arguments.split_first().expect("an operation");
        let options = LockOptions::default();
        let result = {
            let mut report = |message: &ProfileMessage| {
                stderr.push_str(&format!("{message}\n"));
            };
            self.operation(
                operation,
                operands,
                step,
                dry_run,
                options,
                &mut report,
                &mut stdout,
            )
        };
        let exit = match result {
            Ok(()) => 0,
            Err(Failure::Usage(message)) => {
                stderr.push_str(&format!(
                    "error: {message}\nTry 'nix-env --help' for more information.\n"
                ));
                1
            }
            Err(Failure::Plain(message)) => {
                stderr.push_str(&format!("error: {message}\n"));
                1
            }
        };
        Outcome {
            exit,
            stdout: self.normalize(&stdout),
            stderr: self.normalize(&stderr),
        }
    }

    #[allow(clippy::too_many_arguments, reason = "one emulated command line")]
    fn operation(
        &self,
        operation: &str,
        operands: &[&str],
        step: &NixEnvStep,
        dry_run: bool,
        options: LockOptions,
        report: &mut dyn FnMut(&ProfileMessage),
        stdout: &mut String,
    ) -> Result<(), Failure> {
        let profile = &self.profile;
        match operation {
            "--list-generations" => {
                no_operands(operands)?;
                let generations = profile.list_generations(options, report)?;
                stdout.push_str(&generations.render_list(&jiff::tz::TimeZone::UTC));
            }
            "--rollback" => {
                no_operands(operands)?;
                profile.rollback(dry_run, options, report)?;
            }
            "--switch-generation" => {
                let requested = parse_switch_generation_arguments(operands)
                    .map_err(|error| Failure::Usage(error.to_string()))?;
                profile.switch_generation(requested, dry_run, options, report)?;
            }
            "--delete-generations" => {
                let policy = DeletePolicy::parse(operands).map_err(|error| {
                    if error.is_usage_error() {
                        Failure::Usage(error.to_string())
                    } else {
                        Failure::Plain(error.to_string())
                    }
                })?;
                let now = step.now.unwrap_or_else(unix_now);
                profile.delete_generations(&policy, now, dry_run, options, report)?;
            }
            "--set" | "-iA" => {
                let target = self.resolve(step.env.as_deref().expect("the environment"));
                let token = profile.read_token()?;
                let provenance = Provenance {
                    command: step.args.clone(),
                    declarative: None,
                };
                profile.commit(&token, &target, &provenance, options, report)?;
            }
            other => panic!("operation {other} is not emulated"),
        }
        Ok(())
    }
}

enum Failure {
    Usage(String),
    Plain(String),
}

impl From<ProfileError> for Failure {
    fn from(error: ProfileError) -> Self {
        // declenv's own wording where it refuses what Nix would do; Nix's otherwise.
        match error {
            ProfileError::Exhausted { .. }
            | ProfileError::NotAGenerationLink { .. }
            | ProfileError::DeleteLinkTarget { .. } => Self::Plain(error.to_string()),
            _ => Self::Plain(error.nix_message()),
        }
    }
}

fn no_operands(operands: &[&str]) -> Result<(), Failure> {
    if operands.is_empty() {
        Ok(())
    } else {
        Err(Failure::Usage("no arguments expected".to_owned()))
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// `--list-generations` output equals Nix's, except that generations with the same number
/// (two entries such as `del-7-link` and `del-07-link`) come in directory order in Nix, which
/// depends on the filesystem; those are compared as a set.
fn same_list(expected: &str, actual: &str) -> bool {
    if expected == actual {
        return true;
    }
    let numbers: Vec<&str> = expected
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let mut distinct = numbers.clone();
    distinct.dedup();
    if distinct.len() == numbers.len() {
        return false;
    }
    let mut expected: Vec<&str> = expected.lines().collect();
    let mut actual: Vec<&str> = actual.lines().collect();
    expected.sort_unstable();
    actual.sort_unstable();
    expected == actual
}

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join("generations")
        .join("scenarios.json")
}

fn load(path: &Path) -> Document {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{}: malformed fixture: {error}", path.display()))
}

/// Replays every scenario; returns how many `nix-env` steps were compared.
fn replay_document(document: &Document) -> usize {
    assert!(
        document.nix_version.contains("2.8"),
        "fixtures must come from Nix 2.8, not {}",
        document.nix_version
    );
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for scenario in &document.scenarios {
        let replay = Replay::new(scenario);
        let last = scenario
            .steps
            .iter()
            .rposition(|step| matches!(step, Step::NixEnv(_)))
            .expect("a scenario runs nix-env");
        for (index, step) in scenario.steps.iter().enumerate() {
            let Some(outcome) = replay.apply(step) else {
                continue;
            };
            let Step::NixEnv(expected) = step else {
                continue;
            };
            compared += 1;
            let context = format!("{} step {index} {:?}", scenario.name, expected.args);
            if index == last
                && let Some(divergence) = divergence(&scenario.name)
            {
                check_divergence(&replay, &divergence, expected, &outcome, &context);
                break;
            }
            let listing = replay.listing();
            let stderr_matches = expected
                .stderr
                .as_ref()
                .is_none_or(|stderr| *stderr == outcome.stderr);
            if outcome.exit != expected.exit
                || !same_list(&expected.stdout, &outcome.stdout)
                || !stderr_matches
                || listing != expected.links
            {
                mismatches.push(format!(
                    "{context}\n  nix:     exit {} stdout {:?} stderr {:?}\n           links {:?}\n  declenv: exit {} stdout {:?} stderr {:?}\n           links {:?}",
                    expected.exit,
                    expected.stdout,
                    expected.stderr,
                    expected.links,
                    outcome.exit,
                    outcome.stdout,
                    outcome.stderr,
                    listing
                ));
                break;
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} scenarios disagree with Nix:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    compared
}

fn check_divergence(
    replay: &Replay,
    divergence: &Divergence,
    nix: &NixEnvStep,
    ours: &Outcome,
    context: &str,
) {
    assert_eq!(nix.exit, divergence.nix_exit, "{context}: what Nix 2.8 did");
    assert!(
        nix.stderr
            .as_deref()
            .is_none_or(|stderr| stderr.contains(divergence.nix_stderr_contains)),
        "{context}: Nix 2.8 said {:?}",
        nix.stderr
    );
    assert_eq!(
        (ours.exit, ours.stderr.as_str()),
        (divergence.exit, divergence.stderr),
        "{context}: {}",
        divergence.why
    );
    let names: Vec<String> = replay.listing().into_keys().collect();
    assert_eq!(names, divergence.names, "{context}: {}", divergence.why);
    let nix_names: Vec<&String> = nix.links.keys().collect();
    assert_ne!(
        nix_names
            .iter()
            .map(|name| name.as_str())
            .collect::<Vec<_>>(),
        divergence.names,
        "{context}: Nix 2.8 left the same entries, so this is no divergence"
    );
}

#[test]
fn generations_agree_with_nix_fixtures() {
    let document = load(&fixture_path());
    let compared = replay_document(&document);
    assert!(compared >= 300, "only {compared} steps compared");
    eprintln!(
        "compared {compared} nix-env steps in {} scenarios",
        document.scenarios.len()
    );
}

#[test]
fn every_divergence_has_a_recorded_scenario() {
    let document = load(&fixture_path());
    let names: Vec<&str> = document
        .scenarios
        .iter()
        .map(|scenario| scenario.name.as_str())
        .collect();
    for name in [
        "days_overflow",
        "days_unordered",
        "discovery",
        "discovery_odd_name_delete",
        "discovery_regular_file_delete",
        "absolute_link",
        "exhausted",
    ] {
        assert!(names.contains(&name), "scenario {name} is missing");
        assert!(divergence(name).is_some());
    }
}

fn live_enabled(test: &str) -> bool {
    let enabled = std::env::var("DECLENV_TEST_NIX").is_ok_and(|value| value == "1");
    if !enabled {
        eprintln!("{test}: skipped (set DECLENV_TEST_NIX=1 to run against the installed Nix)");
    }
    enabled
}

#[test]
fn live_generations_against_nix() {
    if !live_enabled("live_generations_against_nix") {
        return;
    }
    let output = tempfile::tempdir().expect("tempdir");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join("conformance")
        .join("gen_generations.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg("--out")
        .arg(output.path())
        .status()
        .expect("run the generator");
    assert!(status.success(), "the generator failed");
    let document = load(&output.path().join("scenarios.json"));
    let compared = replay_document(&document);
    eprintln!("live: compared {compared} nix-env steps");
}

/// declenv and `nix-env` take the same `flock` on `P.lock`: while declenv holds it, `nix-env`
/// waits and says so, and once it is released neither leaves a lock file behind.
#[test]
fn live_nix_waits_for_a_declenv_lock() {
    if !live_enabled("live_nix_waits_for_a_declenv_lock") {
        return;
    }
    let temporary = tempfile::tempdir().expect("tempdir");
    let root = temporary.path();
    std::fs::create_dir_all(root.join("profiles")).expect("profiles");
    let profile = Profile::new(
        &root.join("profiles").join("prof"),
        ProfileLayout::under_root(root),
    )
    .expect("profile");
    let locked = profile
        .lock(LockOptions::default(), &mut |_| {})
        .expect("lock");
    let mut child = Command::new("nix-env")
        .arg("-p")
        .arg(profile.path())
        .arg("--list-generations")
        .env("NIX_REMOTE", "local")
        .env("NIX_STORE_DIR", root.join("store"))
        .env("NIX_STATE_DIR", root.join("var"))
        .env("NIX_LOG_DIR", root.join("log"))
        .env("HOME", root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nix-env");
    // The lock is released once nix-env has said that it waits for it, however long it takes to
    // start (or after a minute of silence, and the test fails).
    let waiting = format!("waiting for lock on profile '{}'", profile.path().display());
    let stderr = child.stderr.take().expect("stderr");
    let (sender, lines) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            if sender.send(line.expect("read stderr")).is_err() {
                break;
            }
        }
    });
    let mut said = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(60)) {
        let found = line.contains(&waiting);
        said.push(line);
        if found {
            break;
        }
    }
    locked.unlock();
    said.extend(lines.iter());
    reader.join().expect("reader");
    let said = said.join("\n");
    let output = child.wait_with_output().expect("nix-env finished");
    assert!(output.status.success(), "nix-env failed: {said}");
    assert!(said.contains(&waiting), "nix-env did not wait: {said}");
    assert!(!root.join("profiles").join("prof.lock").exists());
}

/// Threads racing `commit` (create + switch) on one profile, each retrying when the profile
/// moved under it: every commit lands as its own generation, numbers are unique and dense, no
/// link is lost, and no lock file remains.
#[test]
fn concurrent_commits_get_unique_generations_and_lose_nothing() {
    const THREADS: usize = 6;
    const COMMITS: usize = 8;
    let temporary = tempfile::tempdir().expect("tempdir");
    let root = temporary.path().to_owned();
    std::fs::create_dir_all(root.join("profiles")).expect("profiles");
    std::fs::create_dir_all(root.join("store")).expect("store");
    let profile = Arc::new(
        Profile::new(
            &root.join("profiles").join("prof"),
            ProfileLayout::under_root(&root),
        )
        .expect("profile"),
    );
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (profile, barrier, store) = (
                Arc::clone(&profile),
                Arc::clone(&barrier),
                root.join("store"),
            );
            std::thread::spawn(move || {
                barrier.wait();
                let mut refused = 0_usize;
                for commit in 0..COMMITS {
                    let target = store.join(format!("env-{thread}-{commit}"));
                    loop {
                        let token: ProfileToken = profile.read_token().expect("token");
                        // The window in which another thread can move the profile.
                        std::thread::yield_now();
                        match profile.commit(
                            &token,
                            &target,
                            &Provenance::default(),
                            LockOptions::default(),
                            &mut |_| {},
                        ) {
                            Ok(created) => {
                                assert!(!created.reused);
                                break;
                            }
                            Err(ProfileError::Changed { .. }) => refused += 1,
                            Err(error) => panic!("commit failed: {error}"),
                        }
                    }
                }
                refused
            })
        })
        .collect();
    let refused: usize = threads
        .into_iter()
        .map(|thread| thread.join().expect("thread"))
        .sum();
    let generations = profile.generations_unlocked().expect("generations");
    let numbers: Vec<u32> = generations
        .entries
        .iter()
        .map(|entry| entry.number)
        .collect();
    let total = u32::try_from(THREADS * COMMITS).expect("small");
    assert_eq!(numbers, (1..=total).collect::<Vec<_>>());
    let mut targets: Vec<PathBuf> = generations
        .entries
        .iter()
        .map(|entry| std::fs::read_link(profile.directory().join(&entry.file_name)).expect("link"))
        .collect();
    targets.sort();
    targets.dedup();
    assert_eq!(targets.len(), THREADS * COMMITS, "a link was lost");
    assert_eq!(generations.current, Some(total));
    let leftovers: Vec<OsString> = std::fs::read_dir(profile.directory())
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .filter(|name| {
            let bytes = name.clone().into_vec();
            bytes.ends_with(b".lock") || bytes.starts_with(b".")
        })
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    eprintln!("concurrent commits: {refused} refused as stale and retried");
}
