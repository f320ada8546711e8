//! Differential test of a whole `nix-env` session: installs, removals, flag changes, rollbacks,
//! switches and every `--delete-generations` form must give the same generation numbers, the
//! same `(current)` marker, the same `manifest.nix` and the same environment tree as Nix 2.8.
//!
//! `tests/fixtures/scenario/steps.json` holds what the real `nix-env` did on one profile, step by
//! step, and `tests/fixtures/scenario/channel/` the trees of the packages it built (both written
//! by `scripts/conformance/gen_scenario.py` from `tests/fixtures/scenario/pkgs.nix`). declenv has
//! no `install` command yet, so the replay works at the library level: for a step that builds an
//! environment (`-i`, `-e`, `--set-flag`) it takes the element list nix-env ended up with (its
//! `manifest.nix`, or for a failed build the `env-manifest.nix` it tried), realises those
//! packages from the channel, applies the flags nix-env recorded in their meta, builds the
//! environment with [`build_environment`] and commits it with [`Profile::commit`]; rollbacks,
//! switches and deletions go through the corresponding [`Profile`] methods.
//!
//! After every step the test compares the exit status, `--list-generations` (times included:
//! generation links get the times Nix's got), the profile's `manifest.nix`, the environment tree,
//! and, for the generation commands, stderr. Store paths are compared as `@STORE@/<h>-NAME`:
//! Nix's package and environment paths are derivation outputs and declenv's are content
//! addressed, so only the names can agree. For the same reason the two paths of a collision
//! message are compared as a pair: which one is named first follows the paths' byte order.
//!
//! `live_scenario_against_nix` regenerates the fixture with the installed Nix first; it runs only
//! when `DECLENV_TEST_NIX=1` is set.

#![allow(
    clippy::print_stderr,
    reason = "the tests report skips and counts on stderr"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use declenv::model::catalog::CatalogEntry;
use declenv::model::manifest::{self, ManifestElement, NixValue};
use declenv::plan::generations::{DeletePolicy, parse_switch_generation_arguments};
use declenv::profile::build::{BuildError, build_environment};
use declenv::profile::realise::realise;
use declenv::profile::{LockOptions, Profile, ProfileLayout, ProfileMessage, Provenance};
use declenv::source::load_channel;
use declenv::store::EmbeddedStore;
use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Document {
    nix_version: String,
    profile: String,
    packages: Vec<String>,
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op")]
enum Step {
    #[serde(rename = "touch")]
    Touch { entry: String, time: i64 },
    #[serde(rename = "nix-env")]
    NixEnv(NixEnvStep),
}

#[derive(Debug, Deserialize)]
struct NixEnvStep {
    args: Vec<String>,
    exit: i32,
    stdout: String,
    stderr: String,
    /// For `Nd` deletions: the second `nix-env` ran in.
    now: Option<i64>,
    /// For a failed build: the element list nix-env tried to build.
    attempted_manifest: Option<String>,
    /// Generation links the step created, and the modification time they were given.
    touched: BTreeMap<String, i64>,
    /// `nix-env --list-generations` afterwards (TZ=UTC).
    generations: String,
    /// The profile's `manifest.nix` afterwards.
    manifest: Option<String>,
    /// The environment the profile points at afterwards.
    environment: Option<BTreeMap<String, Entry>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Entry {
    Symlink { target: String },
    File,
    Dir,
}

/// What one step did on declenv's side.
struct Outcome {
    exit: i32,
    stdout: String,
    /// Compared only for the generation commands (for builds, Nix's stderr is build chatter
    /// and `installing …` lines declenv's library does not print).
    stderr: Option<String>,
    /// The builder's error, for a build that failed.
    build_error: Option<String>,
}

/// The flags `--set-flag` writes (always as strings) that the replay applies to realised
/// elements.
const FLAGS: [&str; 3] = ["priority", "active", "keep"];

/// The profile and store of one replay, on a temporary directory.
struct Replay {
    _temporary: tempfile::TempDir,
    root: PathBuf,
    profiles: PathBuf,
    profile: Profile,
    store: EmbeddedStore,
    entries: Vec<CatalogEntry>,
    realised: HashMap<String, ManifestElement>,
    hashed: Regex,
    store_dir: String,
}

impl Replay {
    fn new(fixture: &Path, profile_name: &str) -> Self {
        let temporary = tempfile::tempdir().expect("tempdir");
        let root = temporary.path().to_owned();
        let profiles = root.join("nix/var/nix/profiles");
        std::fs::create_dir_all(&profiles).expect("profiles directory");
        let store = EmbeddedStore::open(&root).expect("store opens");
        let entries = load_channel(&fixture.join("channel")).expect("the fixture channel loads");
        let profile = Profile::new(
            &profiles.join(profile_name),
            ProfileLayout::under_root(&root),
        )
        .expect("profile");
        let store_dir = store.store_dir().as_str().to_owned();
        let hashed = Regex::new(&format!(
            "{}/[0-9a-df-np-sv-z]{{32}}-",
            regex::escape(&store_dir)
        ))
        .expect("regex");
        Self {
            _temporary: temporary,
            root,
            profiles,
            profile,
            store,
            entries,
            realised: HashMap::new(),
            hashed,
            store_dir,
        }
    }

    /// Store paths as `@STORE@/<h>-NAME`, the profiles directory as `@PROFILES@`.
    fn normalize(&self, text: &str) -> String {
        self.hashed
            .replace_all(text, "@STORE@/<h>-")
            .replace(&self.store_dir, "@STORE@")
            .replace(&self.profiles.display().to_string(), "@PROFILES@")
    }

    fn generation_links(&self) -> BTreeSet<String> {
        let pattern = Regex::new(&format!(
            "^{}-[0-9]+-link$",
            regex::escape(&self.profile.name().to_string_lossy())
        ))
        .expect("regex");
        std::fs::read_dir(&self.profiles)
            .expect("list profiles")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| pattern.is_match(name))
            .collect()
    }

    fn list_generations(&self) -> String {
        let generations = self
            .profile
            .list_generations(LockOptions::default(), &mut |_| {})
            .expect("list generations");
        self.normalize(&generations.render_list(&jiff::tz::TimeZone::UTC))
    }

    fn manifest(&self) -> Option<String> {
        let path = self.profile.path().join("manifest.nix");
        std::fs::read_to_string(path)
            .ok()
            .map(|text| self.normalize(&text))
    }

    fn environment(&self) -> Option<BTreeMap<String, Entry>> {
        let top = std::fs::canonicalize(self.profile.path()).ok()?;
        let mut tree = BTreeMap::new();
        let mut pending = vec![top.clone()];
        while let Some(directory) = pending.pop() {
            for entry in std::fs::read_dir(&directory).expect("read the environment") {
                let path = entry.expect("entry").path();
                let relative = path
                    .strip_prefix(&top)
                    .expect("inside")
                    .to_string_lossy()
                    .into_owned();
                let kind = std::fs::symlink_metadata(&path).expect("lstat").file_type();
                let value = if kind.is_symlink() {
                    let target = std::fs::read_link(&path).expect("readlink");
                    Entry::Symlink {
                        target: self.normalize(&target.to_string_lossy()),
                    }
                } else if kind.is_dir() {
                    pending.push(path);
                    Entry::Dir
                } else {
                    Entry::File
                };
                tree.insert(relative, value);
            }
        }
        Some(tree)
    }

    /// The element nix-env recorded, rebuilt from the channel: realised, then given the flags
    /// nix-env's `--set-flag` wrote. Everything else (outputs to install, the channel's meta,
    /// system) must already agree with Nix's element.
    fn element(&mut self, recorded: &ManifestElement) -> Result<ManifestElement, String> {
        let realised = match self.realised.get(&recorded.name) {
            Some(element) => element.clone(),
            None => {
                let entry = self
                    .entries
                    .iter()
                    .find(|entry| entry.name == recorded.name)
                    .ok_or_else(|| format!("`{}` is not in the channel", recorded.name))?;
                let element = realise(&self.store, entry)
                    .map_err(|error| format!("realising `{}`: {error}", recorded.name))?;
                self.realised.insert(recorded.name.clone(), element.clone());
                element
            }
        };
        let mut element = realised.clone();
        for (key, value) in &recorded.meta {
            if realised.meta.get(key) != Some(value) {
                if !(FLAGS.contains(&key.as_str()) && matches!(value, NixValue::String(_))) {
                    return Err(format!(
                        "`{}`: Nix's meta.{key} is {value:?}, the channel's {:?}",
                        recorded.name,
                        realised.meta.get(key)
                    ));
                }
                element.meta.insert(key.clone(), value.clone());
            }
        }
        if let Some(key) = realised
            .meta
            .keys()
            .find(|key| !recorded.meta.contains_key(*key))
        {
            return Err(format!(
                "`{}`: the channel has meta.{key}, Nix's element has not",
                recorded.name
            ));
        }
        let ours: Vec<&String> = element.outputs.keys().collect();
        let theirs: Vec<&String> = recorded.outputs.keys().collect();
        if ours != theirs {
            return Err(format!(
                "`{}`: declenv installs outputs {ours:?}, Nix {theirs:?}",
                recorded.name
            ));
        }
        if self.normalize(&element.out_path) != recorded.out_path
            || element.system != recorded.system
        {
            return Err(format!(
                "`{}`: outPath/system {:?}/{:?}, Nix's {:?}/{:?}",
                recorded.name,
                self.normalize(&element.out_path),
                element.system,
                recorded.out_path,
                recorded.system
            ));
        }
        Ok(element)
    }

    fn run(&mut self, step: &NixEnvStep) -> Result<Outcome, String> {
        let dry_run = step.args.iter().any(|argument| argument == "--dry-run");
        let arguments: Vec<&str> = step
            .args
            .iter()
            .map(String::as_str)
            .filter(|&argument| argument != "--dry-run")
            .collect();
        let (operation, operands) = arguments.split_first().expect("an operation");
        if matches!(*operation, "-i" | "-e" | "--set-flag") {
            return self.build(step);
        }
        let mut stderr = String::new();
        if dry_run {
            stderr.push_str("(dry run; not doing anything)\n");
        }
        let mut stdout = String::new();
        let options = LockOptions::default();
        let result = {
            let mut report = |message: &ProfileMessage| stderr.push_str(&format!("{message}\n"));
            match *operation {
                "--list-generations" => {
                    self.profile
                        .list_generations(options, &mut report)
                        .map(|generations| {
                            stdout = generations.render_list(&jiff::tz::TimeZone::UTC);
                        })
                }
                "--rollback" => self
                    .profile
                    .rollback(dry_run, options, &mut report)
                    .map(drop),
                "--switch-generation" => {
                    let requested = parse_switch_generation_arguments(operands)
                        .map_err(|error| error.to_string())?;
                    self.profile
                        .switch_generation(requested, dry_run, options, &mut report)
                        .map(drop)
                }
                "--delete-generations" => {
                    let policy =
                        DeletePolicy::parse(operands).map_err(|error| error.to_string())?;
                    let now = step.now.unwrap_or_else(unix_now);
                    self.profile
                        .delete_generations(&policy, now, dry_run, options, &mut report)
                        .map(drop)
                }
                other => return Err(format!("operation {other} is not replayed")),
            }
        };
        let exit = match result {
            Ok(()) => 0,
            Err(error) => {
                stderr.push_str(&format!("error: {}\n", error.nix_message()));
                1
            }
        };
        Ok(Outcome {
            exit,
            stdout: self.normalize(&stdout),
            stderr: Some(self.normalize(&stderr)),
            build_error: None,
        })
    }

    /// `-i`, `-e`, `--set-flag`: build the element list nix-env built and commit it.
    fn build(&mut self, step: &NixEnvStep) -> Result<Outcome, String> {
        let text = step
            .attempted_manifest
            .as_deref()
            .or(step.manifest.as_deref())
            .ok_or("the step recorded no manifest")?;
        let recorded = manifest::parse(text).map_err(|error| format!("Nix's manifest: {error}"))?;
        let elements = recorded
            .iter()
            .map(|element| self.element(element))
            .collect::<Result<Vec<_>, _>>()?;
        let scratch = self.root.join("nix/var/declenv/tmp");
        let built = match build_environment(&self.store, &elements, &scratch) {
            Ok(built) => built,
            Err(error @ BuildError::Layout(_)) => {
                return Ok(Outcome {
                    exit: 100,
                    stdout: String::new(),
                    stderr: None,
                    build_error: Some(self.normalize(&format!("error: {error}"))),
                });
            }
            Err(error) => return Err(format!("build failed: {error}")),
        };
        let token = self
            .profile
            .read_token()
            .map_err(|error| error.to_string())?;
        let provenance = Provenance {
            command: step.args.clone(),
            declarative: None,
        };
        self.profile
            .commit(
                &token,
                &built.path.to_path_buf(),
                &provenance,
                LockOptions::default(),
                &mut |_| {},
            )
            .map_err(|error| error.to_string())?;
        Ok(Outcome {
            exit: 0,
            stdout: String::new(),
            stderr: None,
            build_error: None,
        })
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// A same-priority collision message with its two paths in byte order (which path the builder
/// meets first follows the store paths' byte order, and the hashes differ between the sides).
fn collision_key(line: &str) -> String {
    let pattern =
        Regex::new("^error: packages '([^']*)' and '([^']*)' (have the same priority .*)$")
            .expect("regex");
    match pattern.captures(line) {
        Some(captures) => {
            let mut paths = [&captures[1], &captures[2]];
            paths.sort_unstable();
            format!(
                "error: packages '{}' and '{}' {}",
                paths[0], paths[1], &captures[3]
            )
        }
        None => line.to_owned(),
    }
}

/// The differences between what Nix did and what declenv did on one step.
fn compare(replay: &Replay, expected: &NixEnvStep, outcome: &Outcome) -> Vec<String> {
    let mut differences = Vec::new();
    if outcome.exit != expected.exit {
        differences.push(format!(
            "exit: nix {} declenv {}",
            expected.exit, outcome.exit
        ));
    }
    if outcome.stdout != expected.stdout {
        differences.push(format!(
            "stdout:\n  nix     {:?}\n  declenv {:?}",
            expected.stdout, outcome.stdout
        ));
    }
    if let Some(stderr) = &outcome.stderr
        && *stderr != expected.stderr
    {
        differences.push(format!(
            "stderr:\n  nix     {:?}\n  declenv {:?}",
            expected.stderr, stderr
        ));
    }
    if let Some(error) = &outcome.build_error {
        let nix = expected
            .stderr
            .lines()
            .find(|line| line.starts_with("error: ") && !line.starts_with("error: builder for"))
            .unwrap_or_default();
        if collision_key(nix) != collision_key(error) {
            differences.push(format!(
                "build error:\n  nix     {nix:?}\n  declenv {error:?}"
            ));
        }
    }
    let generations = replay.list_generations();
    if generations != expected.generations {
        differences.push(format!(
            "--list-generations:\n  nix\n{}  declenv\n{}",
            expected.generations, generations
        ));
    }
    let manifest = replay.manifest();
    if manifest != expected.manifest {
        differences.push(format!(
            "manifest.nix:\n  nix     {:?}\n  declenv {:?}",
            expected.manifest, manifest
        ));
    }
    let environment = replay.environment();
    if environment != expected.environment {
        differences.push(format!(
            "environment:\n  nix     {:?}\n  declenv {:?}",
            expected.environment, environment
        ));
    }
    differences
}

fn fixture_directory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join("scenario")
}

fn load(directory: &Path) -> Document {
    let path = directory.join("steps.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{}: malformed fixture: {error}", path.display()))
}

/// Replays the session in `directory`; returns how many `nix-env` steps were compared.
fn replay_session(directory: &Path) -> usize {
    let document = load(directory);
    assert!(
        document.nix_version.contains("2.8"),
        "fixtures must come from Nix 2.8, not {}",
        document.nix_version
    );
    let mut replay = Replay::new(directory, &document.profile);
    let channel: BTreeSet<&str> = replay
        .entries
        .iter()
        .map(|entry| entry.name.as_str())
        .collect();
    let packages: BTreeSet<&str> = document.packages.iter().map(String::as_str).collect();
    assert_eq!(
        channel, packages,
        "the channel holds the session's packages"
    );
    let mut compared = 0;
    for (index, step) in document.steps.iter().enumerate() {
        let expected = match step {
            Step::Touch { entry, time } => {
                let time = filetime::FileTime::from_unix_time(*time, 0);
                filetime::set_symlink_file_times(replay.profiles.join(entry), time, time)
                    .unwrap_or_else(|error| panic!("step {index}: touch {entry}: {error}"));
                continue;
            }
            Step::NixEnv(expected) => expected,
        };
        let context = format!("step {index} `nix-env {}`", expected.args.join(" "));
        let before = replay.generation_links();
        let outcome = replay
            .run(expected)
            .unwrap_or_else(|error| panic!("{context}: {error}"));
        let created: BTreeSet<String> = replay
            .generation_links()
            .difference(&before)
            .cloned()
            .collect();
        let touched: BTreeSet<String> = expected.touched.keys().cloned().collect();
        let mut differences = Vec::new();
        if created != touched {
            differences.push(format!(
                "new generation links: nix {touched:?} declenv {created:?}"
            ));
        }
        for (entry, time) in &expected.touched {
            let path = replay.profiles.join(entry);
            if path.symlink_metadata().is_ok() {
                let time = filetime::FileTime::from_unix_time(*time, 0);
                filetime::set_symlink_file_times(path, time, time).expect("touch");
            }
        }
        differences.extend(compare(&replay, expected, &outcome));
        assert!(
            differences.is_empty(),
            "{context} disagrees with Nix:\n{}",
            differences.join("\n")
        );
        compared += 1;
    }
    compared
}

#[test]
fn session_agrees_with_nix_fixture() {
    let compared = replay_session(&fixture_directory());
    assert!(compared >= 25, "only {compared} steps compared");
    eprintln!("compared {compared} nix-env steps");
}

#[test]
fn fixture_covers_every_kind_of_step() {
    let document = load(&fixture_directory());
    let runs: Vec<&NixEnvStep> = document
        .steps
        .iter()
        .filter_map(|step| match step {
            Step::NixEnv(run) => Some(run),
            Step::Touch { .. } => None,
        })
        .collect();
    let count = |operation: &str, operand: Option<&str>| {
        runs.iter()
            .filter(|run| {
                run.args[0] == operation
                    && operand
                        .is_none_or(|operand| run.args.get(1).map(String::as_str) == Some(operand))
            })
            .count()
    };
    assert!(count("-i", None) >= 6);
    assert!(
        runs.iter()
            .any(|run| run.args[0] == "-i" && run.args.len() > 2)
    );
    assert!(count("-e", None) >= 2);
    for flag in FLAGS {
        assert!(count("--set-flag", Some(flag)) >= 1, "--set-flag {flag}");
    }
    assert!(count("--rollback", None) >= 2);
    assert!(count("--switch-generation", None) >= 4);
    for form in ["old", "+6", "10d", "2"] {
        assert!(
            count("--delete-generations", Some(form)) >= 1,
            "--delete-generations {form}"
        );
    }
    assert!(
        runs.iter()
            .any(|run| run.exit == 100 && run.attempted_manifest.is_some())
    );
    // Reuse of the highest generation, and a new number for a lower one's environment.
    assert!(
        runs.iter()
            .any(|run| run.args[0] == "-i" && run.touched.is_empty() && run.exit == 0)
    );
    assert!(runs.iter().any(|run| {
        run.args[0] == "-i"
            && run
                .stderr
                .contains("replacing old 'hello-1.0'\ninstalling 'hello-1.0'")
    }));
}

fn live_enabled(test: &str) -> bool {
    let enabled = std::env::var("DECLENV_TEST_NIX").is_ok_and(|value| value == "1");
    if !enabled {
        eprintln!("{test}: skipped (set DECLENV_TEST_NIX=1 to run against the installed Nix)");
    }
    enabled
}

#[test]
fn live_scenario_against_nix() {
    if !live_enabled("live_scenario_against_nix") {
        return;
    }
    let output = tempfile::tempdir().expect("tempdir");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join("conformance")
        .join("gen_scenario.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg("--out")
        .arg(output.path())
        .status()
        .expect("run the generator");
    assert!(status.success(), "the generator failed");
    let compared = replay_session(output.path());
    eprintln!("live: compared {compared} nix-env steps");
}
