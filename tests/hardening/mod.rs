//! Shared by the hardening tests (`faults.rs`, `kill_loop.rs`, `concurrency.rs`,
//! `permissions.rs`): a world to run declenv in (a root, a dotfiles directory with a spec and a
//! copy of the demo channel), and the invariants every failure must leave intact:
//!
//! * the profile points at a complete generation: a valid store path whose `manifest.nix`
//!   parses and whose every link resolves into a valid store path; every generation link
//!   names a valid path that garbage collection keeps;
//! * the store has no damage (`declenv store verify`);
//! * the spec and the lockfile hold exactly their old or their new bytes;
//! * no lock is left held;
//! * the next run converges: `apply` succeeds and `plan --detailed-exitcode` then exits 0.
#![allow(dead_code)]
#![allow(
    clippy::print_stderr,
    reason = "the tests report the figures HARDENING.md quotes"
)]

#[path = "../support/mod.rs"]
mod support;
use declenv::model::manifest;
use declenv::profile::ProfileLock;
use declenv::store::EmbeddedStore;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
pub use support::copy_tree;

/// How long any one run may take before the test calls it hung (a lock never released, a
/// loop): far above what a run takes, so only a real hang trips it.
pub const RUN_BOUND: Duration = Duration::from_secs(120);

/// Two packages.
pub const SPEC_A: &str = r#"version = 1

[sources.demo]
channel = "channel"

[packages.hello]
attr = "hello"

[packages.which]
attr = "which"
"#;

/// `SPEC_A` less `which`, plus `jq` (two outputs) and `cowsay`.
pub const SPEC_B: &str = r#"version = 1

[sources.demo]
channel = "channel"

# the greeting
[packages.hello]
attr = "hello"

[packages.jq]
attr = "jq"

[packages.cowsay]
attr = "cowsay"
"#;

/// `SPEC_B` with an older `hello` and `fortune`.
pub const SPEC_C: &str = r#"version = 1

[sources.demo]
channel = "channel"

[packages.hello]
attr = "hello_2_12"

[packages.jq]
attr = "jq"

[packages.cowsay]
attr = "cowsay"

[packages.fortune]
name = "fortune-mod"
"#;

/// A temporary directory holding a root and a dotfiles directory (spec, lockfile, channel).
pub struct World {
    _directory: tempfile::TempDir,
    /// The temporary directory.
    pub base: PathBuf,
    /// `--root`.
    pub root: PathBuf,
    /// `--file`.
    pub spec: PathBuf,
    /// The channel copy the spec's source names.
    pub channel: PathBuf,
}

impl World {
    /// A fresh world whose spec holds `spec` (nothing applied).
    pub fn new(spec: &str) -> Self {
        let directory = tempfile::tempdir().expect("tempdir");
        let base = fs_err::canonicalize(directory.path()).expect("canonical");
        let dotfiles = base.join("dotfiles");
        let channel = dotfiles.join("channel");
        copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/channel"),
            &channel,
        );
        fs_err::create_dir_all(base.join("home")).expect("home");
        let world = Self {
            root: base.join("root"),
            spec: dotfiles.join("profile.toml"),
            channel,
            base,
            _directory: directory,
        };
        world.write_spec(spec);
        world
    }

    /// `declenv --root ROOT --file SPEC ARGS…`, nothing inherited that could point it elsewhere,
    /// no terminal on stdin, no fault armed.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_via(&[], args)
    }

    /// [`World::command`] through a wrapper program (`wrapper[0]`, with the rest of `wrapper`
    /// as its arguments before declenv's path), such as `setpriv` to drop privileges.
    pub fn command_via(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(env!("CARGO_BIN_EXE_declenv"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_declenv")),
        };
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--file")
            .arg(&self.spec)
            .args(args)
            .current_dir(&self.base)
            .env("HOME", self.base.join("home"))
            .env("NO_COLOR", "1")
            .env("TZ", "UTC")
            .env_remove("DECLENV_ROOT")
            .env_remove("DECLENV_FILE")
            .env_remove("DECLENV_FAULT")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs a command to its end (bounded by [`RUN_BOUND`]).
    pub fn run(&self, args: &[&str]) -> Output {
        finish(
            self.command(args).spawn().expect("declenv starts"),
            &args.join(" "),
        )
    }

    /// Runs a command with `DECLENV_FAULT=fault`.
    pub fn run_with_fault(&self, args: &[&str], fault: &str) -> Output {
        let mut command = self.command(args);
        command.env("DECLENV_FAULT", fault);
        finish(
            command.spawn().expect("declenv starts"),
            &format!("{} under {fault}", args.join(" ")),
        )
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "`declenv {}` failed: {}",
            args.join(" "),
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    pub fn write_spec(&self, text: &str) {
        fs_err::create_dir_all(self.spec.parent().expect("parent")).expect("mkdir");
        fs_err::write(&self.spec, text).expect("write spec");
    }

    pub fn lockfile(&self) -> PathBuf {
        self.spec.with_extension("lock")
    }

    pub fn profile(&self) -> PathBuf {
        self.root.join("nix/var/nix/profiles/default")
    }

    /// The spec's and the lockfile's bytes (`None`: absent).
    pub fn files(&self) -> Files {
        Files {
            spec: read_optional(&self.spec),
            lock: read_optional(&self.lockfile()),
        }
    }

    /// The generation numbers and the current one.
    pub fn generations(&self) -> (Vec<u64>, Option<u64>) {
        let report: Value =
            serde_json::from_str(&self.ok(&["generations", "list", "--json"])).expect("JSON");
        let numbers = report["generations"]
            .as_array()
            .expect("generations")
            .iter()
            .map(|generation| generation["number"].as_u64().expect("number"))
            .collect();
        (numbers, report["current"].as_u64())
    }

    /// Every invariant but convergence (see the module's documentation); `files` are the
    /// acceptable states of the spec and lockfile. Returns the ids of the packages the current
    /// generation's manifest installs.
    pub fn check(&self, context: &str, files: &[&Files]) -> BTreeSet<String> {
        let installed = check_profile(&self.root, &self.profile(), context);
        check_store(&self.root, context);
        let now = self.files();
        assert!(
            files.iter().any(|allowed| allowed.spec == now.spec),
            "{context}: the spec is neither old nor new:\n{}",
            now.spec
                .as_deref()
                .map_or_else(|| "(absent)".into(), String::from_utf8_lossy)
        );
        assert!(
            files.iter().any(|allowed| allowed.lock == now.lock),
            "{context}: the lockfile is neither old nor new:\n{}",
            now.lock
                .as_deref()
                .map_or_else(|| "(absent)".into(), String::from_utf8_lossy)
        );
        self.check_locks_free(context);
        installed
    }

    /// No lock is held: the profile lock and the spec's edit lock can be taken at once.
    pub fn check_locks_free(&self, context: &str) {
        let lock = ProfileLock::try_acquire(&self.profile())
            .unwrap_or_else(|error| panic!("{context}: {error}"))
            .unwrap_or_else(|| panic!("{context}: the profile lock is still held"));
        lock.release();
        let edit_lock = declenv::profile::declarative::lock_spec_edits(&self.spec, || {
            panic!("{context}: the spec's edit lock is still held")
        })
        .unwrap_or_else(|error| panic!("{context}: {error}"));
        drop(edit_lock);
    }

    /// The next run converges: `apply -y` succeeds, then `plan --detailed-exitcode` exits 0.
    pub fn check_converges(&self, context: &str) {
        let applied = self.run(&["apply", "-y"]);
        assert!(
            applied.status.success(),
            "{context}: the next apply failed: {}",
            text(&applied.stderr)
        );
        let plan = self.run(&["plan", "--detailed-exitcode"]);
        assert_eq!(
            plan.status.code(),
            Some(0),
            "{context}: the plan after a re-apply is not empty: {}{}",
            text(&plan.stdout),
            text(&plan.stderr)
        );
        check_profile(&self.root, &self.profile(), context);
        check_store(&self.root, context);
    }
}

/// The spec's and the lockfile's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub spec: Option<Vec<u8>>,
    pub lock: Option<Vec<u8>>,
}

pub fn read_optional(path: &Path) -> Option<Vec<u8>> {
    match fs_err::read(path) {
        Ok(bytes) => Some(bytes),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => panic!("{error}"),
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits for `child` at most [`RUN_BOUND`]; kills it and fails if it takes longer. Its piped
/// output is read as it comes (a child blocked on a full pipe would never exit).
pub fn finish(mut child: Child, what: &str) -> Output {
    let stdout = child.stdout.take().map(read_in_background);
    let stderr = child.stderr.take().map(read_in_background);
    let collect = |reader: Option<std::thread::JoinHandle<Vec<u8>>>| {
        reader.map_or_else(Vec::new, |reader| reader.join().expect("reader"))
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > RUN_BOUND {
            child.kill().ok();
            child.wait().expect("reaped");
            panic!(
                "`declenv {what}` did not finish within {RUN_BOUND:?} (hung?): {}",
                text(&collect(stderr))
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    }
}

/// Reads `pipe` to its end on a thread of its own.
fn read_in_background(
    mut pipe: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Every symlink under `directory` (not following links), with its target.
pub fn symlinks(directory: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut found = Vec::new();
    let mut pending = vec![directory.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in fs_err::read_dir(&current).expect("read environment") {
            let entry = entry.expect("entry");
            let kind = entry.file_type().expect("file type");
            if kind.is_symlink() {
                let target = fs_err::read_link(entry.path()).expect("readlink");
                found.push((entry.path(), target));
            } else if kind.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    found
}

/// The valid store path `path` lies in, or why there is none.
fn valid_store_path_of(store: &EmbeddedStore, path: &Path) -> Result<String, String> {
    let store_directory = store.store_dir().to_string();
    let relative = path
        .strip_prefix(&store_directory)
        .map_err(|_| format!("`{}` is outside the store", path.display()))?;
    let first = relative
        .components()
        .next()
        .ok_or_else(|| format!("`{}` is the store itself", path.display()))?;
    let store_path = format!(
        "{store_directory}/{}",
        first.as_os_str().to_str().expect("utf-8")
    );
    let parsed = store
        .parse_path(&store_path)
        .map_err(|error| format!("`{store_path}`: {error}"))?;
    match store.is_valid(&parsed) {
        Ok(true) => Ok(store_path),
        Ok(false) => Err(format!("`{store_path}` is not a valid store path")),
        Err(error) => Err(format!("`{store_path}`: {error}")),
    }
}

/// Checks that `profile` points at a complete generation and that every generation link names
/// a valid path garbage collection keeps; returns the names the current manifest installs
/// (empty when the profile has no generation yet).
pub fn check_profile(root: &Path, profile: &Path, context: &str) -> BTreeSet<String> {
    check_profile_linking(root, profile, context, false)
}

/// [`check_profile`]; with `outside_allowed`, the environment may also link files outside the
/// store: where Nix's builder merges a package's symlink to a directory, it links that
/// directory's canonical path (declenv does the same), so a package whose symlinks lead out of
/// the store puts links to there in the environment (it only reads there).
pub fn check_profile_linking(
    root: &Path,
    profile: &Path,
    context: &str,
    outside_allowed: bool,
) -> BTreeSet<String> {
    let store = EmbeddedStore::open(root).unwrap_or_else(|error| panic!("{context}: {error}"));
    let directory = profile.parent().expect("parent");
    let name = profile
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let link = match fs_err::read_link(profile) {
        Ok(link) => link,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let generations = fs_err::read_dir(directory)
                .map(|entries| entries.count())
                .unwrap_or(0);
            assert_eq!(
                generations,
                0,
                "{context}: no profile link, but `{}` holds entries",
                directory.display()
            );
            return BTreeSet::new();
        }
        Err(error) => panic!("{context}: {error}"),
    };
    let generation = directory.join(&link);
    let environment = fs_err::read_link(&generation)
        .unwrap_or_else(|error| panic!("{context}: generation link: {error}"));
    let environment_path = valid_store_path_of(&store, &environment)
        .unwrap_or_else(|problem| panic!("{context}: the profile's environment: {problem}"));
    assert_eq!(
        environment_path,
        environment.to_str().expect("utf-8"),
        "{context}: the generation points inside a store path"
    );
    let manifest_text = fs_err::read_to_string(environment.join("manifest.nix"))
        .unwrap_or_else(|error| panic!("{context}: {error}"));
    let elements = manifest::parse(&manifest_text)
        .unwrap_or_else(|error| panic!("{context}: manifest.nix does not parse: {error}"));
    for (path, target) in symlinks(&environment) {
        assert!(
            target.exists(),
            "{context}: `{}` -> `{}` does not resolve",
            path.display(),
            target.display()
        );
        if let Err(problem) = valid_store_path_of(&store, &target)
            && (!outside_allowed || target.starts_with(store.store_dir().to_string()))
        {
            panic!("{context}: `{}`: {problem}", path.display());
        }
    }
    let dead = Command::new(env!("CARGO_BIN_EXE_declenv"))
        .arg("--root")
        .arg(root)
        .args(["gc", "--print-dead"])
        .env_remove("DECLENV_FAULT")
        .output()
        .expect("gc runs");
    assert!(dead.status.success(), "{context}: {}", text(&dead.stderr));
    let dead: BTreeSet<String> = text(&dead.stdout).lines().map(str::to_owned).collect();
    for entry in fs_err::read_dir(directory).expect("profiles") {
        let entry = entry.expect("entry");
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        if entry_name.starts_with(&format!("{name}-")) && entry_name.ends_with("-link") {
            let target = fs_err::read_link(entry.path()).expect("generation link");
            let store_path = valid_store_path_of(&store, &target).unwrap_or_else(|problem| {
                panic!("{context}: generation `{entry_name}`: {problem}")
            });
            assert!(
                !dead.contains(&store_path),
                "{context}: garbage collection would delete `{store_path}`, generation `{entry_name}`"
            );
        }
    }
    elements.into_iter().map(|element| element.name).collect()
}

/// `declenv store verify` finds no damage (leftovers of an interrupted add are not damage).
pub fn check_store(root: &Path, context: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_declenv"))
        .arg("--root")
        .arg(root)
        .args(["store", "verify", "--json"])
        .env_remove("DECLENV_FAULT")
        .output()
        .expect("verify runs");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{context}: verify: {error}: {}", text(&output.stderr)));
    assert_eq!(report["damaged"], false, "{context}: {report:#}");
}

/// A process whose stderr lines arrive on a channel as they are printed.
pub struct Watched {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// The lines read so far.
    pub seen: Vec<String>,
}

impl Watched {
    /// Starts `command` (its stderr piped).
    pub fn spawn(mut command: std::process::Command) -> Self {
        let mut child = command.spawn().expect("declenv starts");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until a stderr line contains `needle` (true), or the process ends first (false).
    pub fn wait_for_line(&mut self, needle: &str) -> bool {
        let deadline = Instant::now() + RUN_BOUND;
        loop {
            match self.lines.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            assert!(
                Instant::now() < deadline,
                "no line with `{needle}` within {:?}: {:?}",
                RUN_BOUND,
                self.seen
            );
        }
    }

    /// Waits for the end (bounded); returns the output with every stderr line.
    pub fn finish(mut self, what: &str) -> Output {
        let mut output = finish(self.child, what);
        self.seen.extend(self.lines.iter());
        output.stderr = self.seen.join("\n").into_bytes();
        output
    }
}

/// Kill tests aim their kills inside a run whose length they can only estimate: a kill that
/// lands after the process exited tests nothing, and on a loaded machine runs speed up and slow
/// down. So each test asks for a number of kills that land mid-run and tries at most
/// [`KillSchedule::MAX_ATTEMPTS_PER_KILL`] times as many; a run that exits before its kill
/// corrects the estimate to the time it really took.
#[derive(Debug)]
pub struct KillSchedule {
    /// How many kills must land while the process runs.
    pub wanted: u32,
    /// How many have landed so far.
    pub landed: u32,
    /// How many have been tried.
    pub attempts: u32,
}

impl KillSchedule {
    pub const MAX_ATTEMPTS_PER_KILL: u32 = 3;

    pub fn new(wanted: u32) -> Self {
        Self {
            wanted,
            landed: 0,
            attempts: 0,
        }
    }

    /// Whether another kill is needed; fails when the attempts are used up.
    pub fn wants_more(&self) -> bool {
        assert!(
            self.landed >= self.wanted || self.attempts < self.wanted * Self::MAX_ATTEMPTS_PER_KILL,
            "only {} of {} kills landed mid-run; the runs kept finishing first",
            self.landed,
            self.attempts
        );
        self.landed < self.wanted
    }

    /// Where in the run the next kill goes, as a share of its estimated duration: spread evenly
    /// over the run by how many have landed, so that early and late instants are both hit.
    pub fn next_share(&self) -> f64 {
        (f64::from(self.landed) + 0.5) / f64::from(self.wanted.max(1))
    }

    /// Waits `delay` for `child` (polling, so that an early exit is seen at once) and kills it.
    /// Returns how long it ran if it exited by itself first, so that the caller can correct its
    /// estimate; `None` when the kill landed while it ran.
    pub fn kill_after(&mut self, child: &mut Child, delay: Duration) -> Option<Duration> {
        self.attempts += 1;
        let spawned = Instant::now();
        let mut exited = None;
        loop {
            if child.try_wait().expect("wait").is_some() {
                exited = Some(spawned.elapsed());
                break;
            }
            if spawned.elapsed() >= delay {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().ok();
        if exited.is_none() {
            self.landed += 1;
        }
        exited
    }
}

/// A small, seedable random number generator (xorshift64*), so that a failing random schedule
/// can be replayed from the seed the test prints.
#[derive(Debug, Clone)]
pub struct Random(u64);

impl Random {
    /// Seeded from `variable` when set, else from the clock; says which seed it uses.
    pub fn from_env(variable: &str) -> Self {
        let seed = std::env::var(variable)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |elapsed| elapsed.as_nanos() as u64)
            });
        eprintln!("random seed {seed} (replay with {variable}={seed})");
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    /// A number in `0.0..1.0`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

/// A count from the environment variable `variable`, else `default`.
pub fn count_from_env(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}
