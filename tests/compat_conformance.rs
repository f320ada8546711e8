//! Differential test of `declenv env` against `nix-env` 2.8.
//!
//! `tests/fixtures/compat/sessions.json` holds scripted `nix-env` sessions as the real Nix 2.8
//! ran them (`scripts/conformance/gen_compat.py`): installs by name, attribute path, version,
//! regex and store path; priorities and collisions; upgrades with each flag; `keep` and
//! `active`; removals; `--set-flag`; queries with every column, JSON and XML; rollbacks,
//! switches, every `--delete-generations` form; dry runs; usage errors. Each session ran on a
//! fresh store and profile with `-p PROFILE -f pkgs.nix`; `tests/fixtures/compat/channel/` holds
//! the trees Nix built, as a channel.
//!
//! This test runs every session through the `declenv` binary (`declenv env -p PROFILE -f
//! channel/ ARGS…`, with a fresh root, profile and spec) and compares, step by step, the exit
//! status, stdout, stderr and the profile's `bin/` (each name and the store path its file
//! resolves to). Store paths are compared as `@STORE@/<h>-NAME` (Nix's are derivation outputs,
//! declenv's content addressed), the two paths of a collision message as a pair (which comes
//! first follows the hashes), dates in `--list-generations` as `@DATE@`, and Nix's build
//! chatter is not expected from declenv (the generator drops it: declenv builds no
//! derivations).
//!
//! The deliberate differences are listed in [`DIFFERENCES`], each with its reason and the
//! output declenv gives instead; every one of them must still occur (a difference that
//! disappears fails the test too, so the list stays true).
//!
//! `live_sessions_against_installed_nix` regenerates the fixture with the installed Nix into a
//! temporary directory and replays it; it runs only when `DECLENV_TEST_NIX=1` is set.

#![allow(
    clippy::print_stderr,
    reason = "the tests report skips and progress on stderr"
)]

use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Deserialize)]
struct Fixture {
    nix_version: String,
    profile: String,
    packages: Vec<String>,
    sessions: BTreeMap<String, Vec<Step>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op")]
enum Step {
    #[serde(rename = "age")]
    Age { ages: BTreeMap<String, f64> },
    #[serde(rename = "nix-env")]
    NixEnv(Recorded),
}

/// What one `nix-env` step did (or what declenv did for it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Recorded {
    args: Vec<String>,
    exit: i32,
    stdout: String,
    stderr: String,
    bin: BTreeMap<String, String>,
}

/// A deliberate difference: in `session`, at step `step` (its index in the session's list),
/// declenv's output is Nix's changed by `expect`.
struct Difference {
    session: &'static str,
    step: usize,
    reason: &'static str,
    expect: fn(&mut Recorded),
}

/// Where declenv deliberately differs from Nix 2.8 in the recorded sessions (all in the
/// `deliberate` session, which the generator records for this list).
const DIFFERENCES: &[Difference] = &[
    Difference {
        session: "deliberate",
        step: 2,
        reason: "`-u` keeps the flags of the entry it upgrades (here `active = false`); Nix 2.8 \
                 replaces the element with the new package's and loses them",
        expect: |recorded| {
            recorded.bin.remove("foo");
        },
    },
    Difference {
        session: "deliberate",
        step: 3,
        reason: "the flag kept by `-u` shows in the meta",
        expect: |recorded| {
            recorded.stdout = recorded.stdout.replace(
                "\"meta\": {\n      \"description\"",
                "\"meta\": {\n      \"active\": \"false\",\n      \"description\"",
            );
            recorded.bin.remove("foo");
        },
    },
    Difference {
        session: "deliberate",
        step: 5,
        reason: "`--set-flag` with a name nix-env never reads: profile.toml has no place for it, \
                 so declenv refuses where Nix stores a meta attribute",
        expect: |recorded| {
            recorded.exit = 1;
            recorded.stderr = "error: `--set-flag colour`: profile.toml keeps only the flags \
                               priority, keep, active\nhint: nix-env reads no other flag; set the \
                               package's meta in its source instead\n"
                .to_owned();
        },
    },
    Difference {
        session: "deliberate",
        step: 6,
        reason: "`--set-flag priority` with a value that is not an integer: declenv refuses it \
                 at once; Nix stores it and then fails to build (`stoi`, exit status 100)",
        expect: |recorded| {
            recorded.exit = 1;
            recorded.stderr = "error: `--set-flag priority high`: the priority must be an \
                               integer\nhint: Nix 2.8 would store it and then fail to build the \
                               environment; lower numbers win, the default is 5\n"
                .to_owned();
        },
    },
    Difference {
        session: "deliberate",
        step: 7,
        reason: "the refused flag is not in the meta",
        expect: |recorded| {
            recorded.stdout = recorded.stdout.replace("\"colour\": \"blue\",\n      ", "");
        },
    },
    Difference {
        session: "deliberate",
        step: 8,
        reason: "`-qa --drv-path`: a channel or catalog has no derivations, so declenv prints `-` \
                 where Nix prints the `.drv` path",
        expect: |recorded| {
            let drv = Regex::new(r"@STORE@/<h>-\S+\.drv").expect("regex");
            recorded.stdout = drv.replace_all(&recorded.stdout, "-").into_owned();
        },
    },
    Difference {
        session: "deliberate",
        step: 10,
        reason: "`--set` makes the spec hold exactly that package and builds a user environment \
                 for it, so `-q` lists it; Nix points the profile at the package itself, which \
                 has no manifest",
        expect: |recorded| {
            recorded.stdout = "hello-2.0\n".to_owned();
        },
    },
    Difference {
        session: "deliberate",
        step: 11,
        reason: "after `--set`, the next `-i` keeps the package `--set` chose (it is in the \
                 spec); Nix starts again from an empty profile",
        expect: |recorded| {
            recorded.bin.insert(
                "hello".to_owned(),
                "@STORE@/<h>-hello-2.0/bin/hello".to_owned(),
            );
        },
    },
];

fn fixture_directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compat")
}

fn load(directory: &Path) -> Fixture {
    let text = fs_err::read_to_string(directory.join("sessions.json")).expect("sessions fixture");
    serde_json::from_str(&text).expect("sessions fixture parses")
}

/// One session's root, profile and spec.
struct Replay {
    temporary: tempfile::TempDir,
    channel: PathBuf,
    root: PathBuf,
    profiles: PathBuf,
    profile: PathBuf,
    spec: PathBuf,
    hashed: Regex,
    out_paths: Option<BTreeMap<String, String>>,
}

impl Replay {
    fn new(channel: &Path, profile_name: &str) -> Self {
        let temporary = tempfile::tempdir().expect("tempdir");
        let base = temporary.path().to_owned();
        let root = base.join("root");
        let profiles = base.join("profiles");
        for directory in [&root, &profiles, &base.join("home"), &base.join("dotfiles")] {
            fs_err::create_dir_all(directory).expect("directory");
        }
        fs_err::write(base.join("notinstore"), "not in the store\n").expect("file");
        let store = root.join("nix/store");
        let hashed = Regex::new(&format!(
            "{}/[0-9a-df-np-sv-z]{{32}}-",
            regex::escape(&store.display().to_string())
        ))
        .expect("regex");
        Self {
            channel: channel.to_owned(),
            profile: profiles.join(profile_name),
            spec: base.join("dotfiles/profile.toml"),
            temporary,
            root,
            profiles,
            hashed,
            out_paths: None,
        }
    }

    fn base(&self) -> &Path {
        self.temporary.path()
    }

    fn command(&self, arguments: &[String], with_profile: bool) -> std::process::Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_declenv"));
        command.arg("--root").arg(&self.root).arg("env");
        if with_profile {
            command.arg("-p").arg(&self.profile);
        }
        command
            .arg("-f")
            .arg(&self.channel)
            .args(arguments)
            .env("DECLENV_FILE", &self.spec)
            .env("HOME", self.base().join("home"))
            .env("TZ", "UTC")
            .env_remove("DECLENV_ROOT")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .current_dir(self.base())
            .output()
            .expect("declenv runs")
    }

    fn normalize(&self, text: &str) -> String {
        let text = self.hashed.replace_all(text, "@STORE@/<h>-");
        let text = text
            .replace(
                &self.root.join("nix/store").display().to_string(),
                "@STORE@",
            )
            .replace(&self.profiles.display().to_string(), "@PROFILES@")
            .replace(&self.base().display().to_string(), "@TMP@");
        sort_collision_pair(&text)
    }

    /// `@PATH:NAME[/SUB]` and `@TMP@` in an argument.
    fn substitute(&mut self, argument: &str) -> String {
        let mut argument = argument.replace("@TMP@", &self.base().display().to_string());
        if let Some(rest) = argument.strip_prefix("@PATH:") {
            let (name, sub) = rest.split_once('/').unwrap_or((rest, ""));
            let paths = self.out_paths();
            let base = paths
                .get(name)
                .unwrap_or_else(|| panic!("no package `{name}` in the channel"))
                .clone();
            argument = if sub.is_empty() {
                base
            } else {
                format!("{base}/{sub}")
            };
        }
        argument
    }

    /// Every package's out path in this root's store, from `declenv env -qa --json --out-path`.
    fn out_paths(&mut self) -> &BTreeMap<String, String> {
        if self.out_paths.is_none() {
            let output = self.command(&["-qa", "--json", "--out-path"].map(str::to_owned), false);
            assert!(output.status.success(), "listing out paths failed");
            let listing: serde_json::Value =
                serde_json::from_slice(&output.stdout).expect("JSON listing");
            let mut paths = BTreeMap::new();
            for package in listing.as_object().expect("an object").values() {
                let name = package["name"].as_str().expect("a name").to_owned();
                let outputs = package["outputs"].as_object().expect("outputs");
                let path = outputs
                    .get("out")
                    .or_else(|| outputs.values().next())
                    .and_then(serde_json::Value::as_str)
                    .expect("a path")
                    .to_owned();
                paths.insert(name, path);
            }
            self.out_paths = Some(paths);
        }
        self.out_paths.as_ref().expect("just filled")
    }

    fn bin(&self) -> BTreeMap<String, String> {
        let directory = self.profile.join("bin");
        let Ok(entries) = fs_err::read_dir(&directory) else {
            return BTreeMap::new();
        };
        entries
            .map(|entry| {
                let entry = entry.expect("entry");
                let resolved = fs_err::canonicalize(entry.path())
                    .map(|path| path.display().to_string())
                    .unwrap_or_else(|_| "<dangling>".to_owned());
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    self.normalize(&resolved),
                )
            })
            .collect()
    }

    fn age(&self, ages: &BTreeMap<String, f64>) {
        let now = std::time::SystemTime::now();
        for (number, days) in ages {
            let link = self
                .profiles
                .join(format!("{}-{number}-link", self.profile_name()));
            #[expect(clippy::cast_possible_truncation, reason = "whole seconds")]
            #[expect(clippy::cast_sign_loss, reason = "ages are positive")]
            let seconds = (days * 86_400.0) as u64;
            let when = now - std::time::Duration::from_secs(seconds);
            filetime::set_symlink_file_times(
                &link,
                filetime::FileTime::from_system_time(when),
                filetime::FileTime::from_system_time(when),
            )
            .expect("age a generation link");
        }
    }

    fn profile_name(&self) -> String {
        self.profile
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned()
    }

    fn run(&mut self, step: &Recorded) -> Recorded {
        let arguments: Vec<String> = step
            .args
            .iter()
            .map(|argument| self.substitute(argument))
            .collect();
        let output = self.command(&arguments, true);
        let mut stdout = self.normalize(&String::from_utf8_lossy(&output.stdout));
        if step.args.first().map(String::as_str) == Some("--list-generations") {
            let date = Regex::new(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d").expect("regex");
            stdout = date.replace_all(&stdout, "@DATE@").into_owned();
        }
        Recorded {
            args: step.args.clone(),
            exit: output.status.code().unwrap_or(-1),
            stdout,
            stderr: self.normalize(&String::from_utf8_lossy(&output.stderr)),
            bin: self.bin(),
        }
    }
}

/// `packages 'A' and 'B' have the same priority`: which path comes first follows the store
/// hashes, which differ between Nix and declenv; write the pair sorted.
fn sort_collision_pair(text: &str) -> String {
    let pattern =
        Regex::new(r"packages '([^']*)' and '([^']*)' have the same priority").expect("regex");
    pattern
        .replace_all(text, |captures: &regex::Captures<'_>| {
            let (mut first, mut second) = (captures[1].to_owned(), captures[2].to_owned());
            if first > second {
                std::mem::swap(&mut first, &mut second);
            }
            format!("packages '{first}' and '{second}' have the same priority")
        })
        .into_owned()
}

/// Replays every session; returns the disagreements and how many differences were seen.
fn replay(fixture: &Fixture, channel: &Path, differences: &[Difference]) -> (Vec<String>, usize) {
    let mut disagreements = Vec::new();
    let mut seen = 0;
    for (name, steps) in &fixture.sessions {
        let mut replay = Replay::new(channel, &fixture.profile);
        for (index, step) in steps.iter().enumerate() {
            let recorded = match step {
                Step::Age { ages } => {
                    replay.age(ages);
                    continue;
                }
                Step::NixEnv(recorded) => recorded,
            };
            let mut expected = recorded.clone();
            expected.stderr = sort_collision_pair(&expected.stderr);
            if let Some(difference) = differences
                .iter()
                .find(|difference| difference.session == name && difference.step == index)
            {
                let before = expected.clone();
                (difference.expect)(&mut expected);
                assert_ne!(
                    before, expected,
                    "difference `{}` changes nothing: {}",
                    difference.reason, name
                );
                seen += 1;
            }
            let actual = replay.run(recorded);
            if actual != expected {
                disagreements.push(describe(name, index, &expected, &actual));
            }
        }
    }
    (disagreements, seen)
}

fn describe(session: &str, index: usize, expected: &Recorded, actual: &Recorded) -> String {
    let mut text = format!(
        "session `{session}` step {index}: nix-env {:?}\n",
        expected.args
    );
    if expected.exit != actual.exit {
        text += &format!("  exit: nix {} declenv {}\n", expected.exit, actual.exit);
    }
    if expected.stdout != actual.stdout {
        text += &format!(
            "  stdout:\n    nix:     {:?}\n    declenv: {:?}\n",
            expected.stdout, actual.stdout
        );
    }
    if expected.stderr != actual.stderr {
        text += &format!(
            "  stderr:\n    nix:     {:?}\n    declenv: {:?}\n",
            expected.stderr, actual.stderr
        );
    }
    if expected.bin != actual.bin {
        text += &format!(
            "  bin/:\n    nix:     {:?}\n    declenv: {:?}\n",
            expected.bin, actual.bin
        );
    }
    text
}

#[test]
fn every_recorded_session_agrees_with_nix_env() {
    let directory = fixture_directory();
    let fixture = load(&directory);
    assert!(
        fixture.nix_version.contains("2.8"),
        "{}",
        fixture.nix_version
    );
    assert!(fixture.packages.len() >= 15, "{:?}", fixture.packages);
    let steps: usize = fixture.sessions.values().map(Vec::len).sum();
    assert!(steps >= 150, "too few recorded steps: {steps}");
    let failures = fixture
        .sessions
        .values()
        .flatten()
        .filter(|step| matches!(step, Step::NixEnv(recorded) if recorded.exit != 0))
        .count();
    assert!(
        failures >= 20,
        "the sessions must include failures: {failures}"
    );
    let (disagreements, seen) = replay(&fixture, &directory.join("channel"), DIFFERENCES);
    assert!(
        disagreements.is_empty(),
        "{} steps disagree:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert_eq!(
        seen,
        DIFFERENCES.len(),
        "every listed difference must occur"
    );
}

#[test]
fn live_sessions_against_installed_nix() {
    if std::env::var_os("DECLENV_TEST_NIX").is_none() {
        eprintln!("skipped: set DECLENV_TEST_NIX=1 to compare against an installed nix-env");
        return;
    }
    let out = tempfile::tempdir().expect("tempdir");
    let status = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/conformance/gen_compat.py"))
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("python3 runs the generator");
    assert!(status.success(), "the generator failed");
    let fixture = load(out.path());
    let (disagreements, seen) = replay(&fixture, &out.path().join("channel"), DIFFERENCES);
    assert!(
        disagreements.is_empty(),
        "{} steps disagree with the installed Nix:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert_eq!(
        seen,
        DIFFERENCES.len(),
        "every listed difference must occur"
    );
}
