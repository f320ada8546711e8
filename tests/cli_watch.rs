//! `declenv watch` driven through the real binary (see: issue 6).
//!
//! Each test runs the watcher on a temporary root with a dotfiles directory (the spec, its
//! lockfile and a private copy of the demo channel), edits the files as editors and tools do,
//! and waits for what can be observed: the JSON events on stdout (each one checked against
//! `schema/watch-event.schema.json`), the lines on stderr, the profile's links. Every wait is a
//! poll with a generous timeout; no fixed sleep decides a result.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any observable condition may take. Far above what the watcher needs, so that a
/// loaded machine does not fail a test.
const TIMEOUT: Duration = Duration::from_secs(90);

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A spec with the demo channel and one package per attribute path, plus a trailing comment
/// that makes otherwise equal specs differ.
fn spec_with(attrs: &[&str], comment: &str) -> String {
    let mut text = "version = 1\n\n[sources.demo]\nchannel = \"channel\"\n".to_owned();
    for attr in attrs {
        text.push_str(&format!("\n[packages.{attr}]\nattr = \"{attr}\"\n"));
    }
    if !comment.is_empty() {
        text.push_str(&format!("\n# {comment}\n"));
    }
    text
}

/// `sha256:<hex>` of a spec's text, as the events report it.
fn digest(text: &str) -> String {
    declenv::profile::declarative::content_digest(text.as_bytes())
}

/// A temporary root and dotfiles directory (spec + channel copy).
struct Env {
    _directory: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    dotfiles: PathBuf,
    /// The spec path declenv is given (a symlink in some tests).
    spec: PathBuf,
}

impl Env {
    fn new(text: &str) -> Self {
        let directory = tempfile::tempdir().expect("tempdir");
        let base = fs_err::canonicalize(directory.path()).expect("canonical tempdir");
        let dotfiles = base.join("dotfiles");
        support::copy_tree(
            &repository().join("examples/channel"),
            &dotfiles.join("channel"),
        );
        let env = Self {
            root: base.join("root"),
            spec: dotfiles.join("profile.toml"),
            dotfiles,
            base,
            _directory: directory,
        };
        env.write_spec(text);
        env
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_declenv"));
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--file")
            .arg(&self.spec)
            .args(args)
            .current_dir(&self.base)
            .env("HOME", &self.base)
            .env("NO_COLOR", "1")
            .env_remove("DECLENV_ROOT")
            .env_remove("DECLENV_FILE")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::null());
        command
    }

    /// Runs a one-shot command; returns its exit status and stderr.
    fn run(&self, args: &[&str]) -> (i32, String) {
        let output = self.command(args).output().expect("declenv runs");
        (
            output.status.code().expect("exits, not killed"),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Starts `declenv watch --json ARGS…`.
    fn watch(&self, args: &[&str]) -> Watcher {
        let mut all = vec!["watch", "--json"];
        all.extend_from_slice(args);
        let mut child = self
            .command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("declenv watch starts");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout_pipe = child.stdout.take().expect("stdout");
        let stderr_pipe = child.stderr.take().expect("stderr");
        let events_writer = Arc::clone(&events);
        let stderr_writer = Arc::clone(&stderr);
        let readers = vec![
            std::thread::spawn(move || {
                for line in BufReader::new(stdout_pipe).lines() {
                    let line = line.expect("utf-8 stdout");
                    let event: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
                    events_writer.lock().expect("events").push(event);
                }
            }),
            std::thread::spawn(move || {
                for line in BufReader::new(stderr_pipe).lines() {
                    let line = line.expect("utf-8 stderr");
                    let mut text = stderr_writer.lock().expect("stderr");
                    text.push_str(&line);
                    text.push('\n');
                }
            }),
        ];
        Watcher {
            child,
            events,
            stderr,
            readers,
        }
    }

    fn write_spec(&self, text: &str) {
        fs_err::write(&self.spec, text).expect("write spec");
    }

    /// Saves as editors that write a temporary file and rename it over the original do.
    fn rename_spec(&self, text: &str) {
        let real = fs_err::canonicalize(&self.spec).unwrap_or_else(|_| self.spec.clone());
        let temporary = real.with_file_name(".profile.toml.swp");
        fs_err::write(&temporary, text).expect("write temporary");
        fs_err::rename(&temporary, &real).expect("rename over the spec");
    }

    fn lock_text(&self) -> String {
        fs_err::read_to_string(self.dotfiles.join("profile.lock")).expect("lockfile")
    }

    fn profile(&self) -> PathBuf {
        self.root.join("nix/var/nix/profiles/default")
    }

    /// The generation the profile link points at.
    fn generation(&self) -> Option<u32> {
        let target = fs_err::read_link(self.profile()).ok()?;
        target
            .to_str()?
            .strip_prefix("default-")?
            .strip_suffix("-link")?
            .parse()
            .ok()
    }

    /// Every generation link's number.
    fn generations(&self) -> Vec<u32> {
        let Ok(entries) = fs_err::read_dir(self.root.join("nix/var/nix/profiles")) else {
            return Vec::new();
        };
        let mut numbers: Vec<u32> = entries
            .filter_map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_str()?
                    .strip_prefix("default-")?
                    .strip_suffix("-link")?
                    .parse()
                    .ok()
            })
            .collect();
        numbers.sort_unstable();
        numbers
    }

    /// The names in the profile's `bin/`.
    fn bin(&self) -> BTreeSet<String> {
        let Ok(entries) = fs_err::read_dir(self.profile().join("bin")) else {
            return BTreeSet::new();
        };
        entries
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_str()
                    .expect("utf-8")
                    .to_owned()
            })
            .collect()
    }

    /// The profile link points at a complete generation, every generation link resolves, and
    /// the store verifies.
    fn assert_consistent(&self) {
        let generation = self
            .generation()
            .expect("the profile points at a generation");
        let link = self
            .profile()
            .with_file_name(format!("default-{generation}-link"));
        let environment = fs_err::canonicalize(&link).expect("the generation link resolves");
        assert!(
            environment.join("manifest.nix").is_file(),
            "generation {generation} has its manifest"
        );
        for number in self.generations() {
            let other = self
                .profile()
                .with_file_name(format!("default-{number}-link"));
            assert!(
                fs_err::canonicalize(&other).is_ok(),
                "generation {number} resolves"
            );
        }
        let (code, stderr) = self.run(&["store", "verify"]);
        assert_eq!(code, 0, "store verify: {stderr}");
    }
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

/// A running watcher and what it printed so far.
struct Watcher {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().expect("events").clone()
    }

    /// Waits until `check` finds something in the events so far.
    fn wait_for<T>(&mut self, what: &str, check: impl Fn(&[Value]) -> Option<T>) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(found) = check(&self.events()) {
                return found;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Whatever it printed last is in the pipes: let the readers finish.
                std::thread::sleep(Duration::from_millis(200));
                if let Some(found) = check(&self.events()) {
                    return found;
                }
                panic!(
                    "the watcher exited ({status}) before {what}\nstderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nstderr:\n{}\nevents: {:#?}",
                self.stderr(),
                self.events()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the outcome of the cycle that read the spec `text`.
    fn outcome_of(&mut self, text: &str) -> Value {
        let hash = digest(text);
        self.wait_for(&format!("an outcome for spec {hash}"), |events| {
            events
                .iter()
                .find(|event| event["spec_hash"] == hash.as_str())
                .cloned()
        })
    }

    /// Waits for the first cycle's outcome.
    fn first_outcome(&mut self) -> Value {
        self.wait_for("the first outcome", |events| {
            events
                .iter()
                .find(|event| event["event"] != "watching")
                .cloned()
        })
    }

    /// Waits until stderr holds `text`.
    fn wait_for_stderr(&mut self, text: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.stderr().contains(text) {
            assert!(
                self.child.try_wait().ok().flatten().is_none(),
                "the watcher exited before printing {text:?}\nstderr:\n{}",
                self.stderr()
            );
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {text:?} on stderr\nstderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().expect("try_wait").is_none(),
            "the watcher died\nstderr:\n{}",
            self.stderr()
        );
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name}");
    }

    /// Sends `signal` and waits for the watcher to exit; see [`Self::wait_exit`].
    fn stop_with(self, signal: &str) -> (ExitStatus, Vec<Value>, String) {
        self.signal(signal);
        self.wait_exit()
    }

    /// Waits for the watcher to exit (after a signal); returns its status, having checked
    /// every event it printed against the schema.
    fn wait_exit(mut self) -> (ExitStatus, Vec<Value>, String) {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the watcher did not stop\nstderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        for reader in std::mem::take(&mut self.readers) {
            reader.join().expect("reader thread");
        }
        let events = self.events();
        let stderr = self.stderr();
        assert_events_valid(&events);
        (status, events, stderr)
    }

    /// Stops with `SIGTERM` and checks a clean exit.
    fn stop(self) -> (Vec<Value>, String) {
        let (status, events, stderr) = self.stop_with("TERM");
        assert_eq!(status.code(), Some(0), "exit status\nstderr:\n{stderr}");
        let last = events.last().expect("events");
        assert_eq!(last["event"], "stopped", "{events:#?}");
        assert_eq!(last["signal"], "SIGTERM");
        assert!(stderr.contains("stopped on SIGTERM"), "{stderr}");
        (events, stderr)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every event validates against the committed schema.
fn assert_events_valid(events: &[Value]) {
    let path = repository().join("schema/watch-event.schema.json");
    let schema: Value =
        serde_json::from_str(&fs_err::read_to_string(path).expect("schema file")).expect("JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    for event in events {
        let errors: Vec<String> = validator
            .iter_errors(event)
            .map(|error| format!("{}: {error}", error.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "event does not match schema/watch-event.schema.json:\n{}\n{event:#}",
            errors.join("\n")
        );
    }
    assert_eq!(
        events.first().map(|event| &event["event"]),
        Some(&"watching".into())
    );
}

/// The outcomes (every event but `watching` and `stopped`).
fn outcomes(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|event| event["event"] != "watching" && event["event"] != "stopped")
        .collect()
}

#[test]
fn saves_in_place_and_by_rename_are_applied() {
    let first = spec_with(&["hello"], "");
    let env = Env::new(&first);
    let mut watcher = env.watch(&[]);
    let outcome = watcher.first_outcome();
    assert_eq!(outcome["event"], "applied", "{outcome:#}");
    assert_eq!(outcome["generation"], 1);
    assert_eq!(outcome["changed"], serde_json::json!([]));
    assert_eq!(env.bin(), names(&["hello"]));

    let second = spec_with(&["hello", "jq"], "");
    env.write_spec(&second);
    let outcome = watcher.outcome_of(&second);
    assert_eq!(outcome["event"], "applied", "{outcome:#}");
    assert_eq!(outcome["generation"], 2);
    assert_eq!(outcome["lockfile_written"], true);
    assert_eq!(env.bin(), names(&["hello", "jq"]));
    assert!(env.lock_text().contains("\"jq\""), "{}", env.lock_text());

    let third = spec_with(&["hello", "jq", "cowsay"], "");
    env.rename_spec(&third);
    let outcome = watcher.outcome_of(&third);
    assert_eq!(outcome["event"], "applied", "{outcome:#}");
    assert_eq!(outcome["generation"], 3);
    assert_eq!(env.bin(), names(&["cowsay", "hello", "jq"]));

    // A comment changes the file, not the profile.
    let fourth = spec_with(&["hello", "jq", "cowsay"], "a comment");
    env.rename_spec(&fourth);
    let outcome = watcher.outcome_of(&fourth);
    assert_eq!(outcome["event"], "unchanged", "{outcome:#}");
    assert_eq!(outcome["generation"], 3);

    let (events, stderr) = watcher.stop();
    assert!(
        stderr.contains("generation 2 applied: 1 to add, 0 to remove; 1 unchanged"),
        "{stderr}"
    );
    // One outcome per save: declenv's own lockfile writes started no cycle. (Only the saves'
    // own texts count: a cycle that read a file half written in place has another hash.)
    let outcomes = outcomes(&events);
    for text in [&first, &second, &third, &fourth] {
        let hash = digest(text);
        let count = outcomes
            .iter()
            .filter(|outcome| outcome["spec_hash"] == hash.as_str())
            .count();
        assert_eq!(count, 1, "outcomes for spec {hash}: {outcomes:#?}");
    }
    let lock = env.dotfiles.join("profile.lock");
    for outcome in &outcomes {
        let changed = outcome["changed"].as_array().expect("changed");
        assert!(
            changed.is_empty()
                || changed
                    .iter()
                    .any(|path| path != lock.to_str().expect("utf-8")),
            "a cycle started by the lockfile alone: {outcome:#}"
        );
    }
    assert_eq!(env.generations(), [1, 2, 3]);
}

#[test]
fn an_invalid_save_applies_nothing_and_the_next_good_one_applies() {
    let first = spec_with(&["hello"], "");
    let env = Env::new(&first);
    let mut watcher = env.watch(&[]);
    assert_eq!(watcher.first_outcome()["generation"], 1);
    let lock_before = env.lock_text();

    let broken = "version = 1\n[sources.demo\nchannel = \"channel\"\n";
    env.write_spec(broken);
    let outcome = watcher.outcome_of(broken);
    assert_eq!(outcome["event"], "failed", "{outcome:#}");
    assert_eq!(outcome["generation"], 1);
    let message = outcome["error"]["message"].as_str().expect("message");
    assert!(message.contains("invalid profile spec"), "{message}");
    assert!(message.contains("line 2, column 14"), "{message}");
    assert_eq!(
        outcome["error"]["hints"][0],
        "fix the TOML syntax there (https://toml.io describes it)"
    );
    // Rendered as `declenv plan` renders it.
    watcher.wait_for_stderr("error: invalid profile spec");
    watcher.wait_for_stderr("hint: fix the TOML syntax there");
    watcher.assert_alive();
    assert_eq!(env.generations(), [1]);
    assert_eq!(env.lock_text(), lock_before);

    // A spec that parses but cannot be planned: an unknown package.
    let unknown = spec_with(&["hello", "no-such-package"], "");
    env.rename_spec(&unknown);
    let outcome = watcher.outcome_of(&unknown);
    assert_eq!(outcome["event"], "failed", "{outcome:#}");
    let message = outcome["error"]["message"].as_str().expect("message");
    assert!(message.contains("no-such-package"), "{message}");
    watcher.assert_alive();
    assert_eq!(env.generations(), [1]);
    assert_eq!(env.lock_text(), lock_before);

    let fixed = spec_with(&["hello", "cowsay"], "");
    env.write_spec(&fixed);
    let outcome = watcher.outcome_of(&fixed);
    assert_eq!(outcome["event"], "applied", "{outcome:#}");
    assert_eq!(outcome["generation"], 2);
    assert_eq!(env.bin(), names(&["cowsay", "hello"]));
    let (_, stderr) = watcher.stop();
    assert!(
        stderr.contains("generation 1 kept: nothing applied"),
        "{stderr}"
    );
}

#[test]
fn fifty_rapid_edits_end_in_the_last_one() {
    let env = Env::new(&spec_with(&["hello"], ""));
    let mut watcher = env.watch(&["--allow-destructive", "--debounce", "100"]);
    assert_eq!(watcher.first_outcome()["event"], "applied");
    let attrs = ["hello", "jq", "cowsay", "demo-motd"];
    for edit in 0..49_usize {
        let chosen: Vec<&str> = attrs
            .iter()
            .enumerate()
            .filter(|(bit, _)| edit & (1 << bit) != 0)
            .map(|(_, attr)| *attr)
            .collect();
        let text = spec_with(&chosen, &format!("edit {edit}"));
        if edit % 2 == 0 {
            env.write_spec(&text);
        } else {
            env.rename_spec(&text);
        }
        // Saves a few milliseconds apart, as a script or a fast typist with autosave makes them.
        std::thread::sleep(Duration::from_millis(3));
    }
    let last = spec_with(&["cowsay", "demo-motd", "hello"], "the last edit");
    env.rename_spec(&last);
    let outcome = watcher.outcome_of(&last);
    assert!(
        outcome["event"] == "applied" || outcome["event"] == "unchanged",
        "{outcome:#}"
    );
    assert_eq!(env.bin(), names(&["cowsay", "demo-motd", "hello"]));
    let lock: Value = serde_json::from_str(&env.lock_text()).expect("lockfile JSON");
    let locked: BTreeSet<String> = lock["packages"]
        .as_object()
        .expect("packages")
        .keys()
        .cloned()
        .collect();
    assert_eq!(locked, names(&["cowsay", "demo-motd", "hello"]));
    let (events, _) = watcher.stop();
    let generations = env.generations();
    assert!(
        generations.len() < 50,
        "{} generations for 50 edits",
        generations.len()
    );
    assert!(outcomes(&events).len() < 51, "{events:#?}");
    env.assert_consistent();
}

#[test]
fn a_destructive_edit_is_held_without_the_flag_and_applied_with_it() {
    let first = spec_with(&["hello", "jq"], "");
    let env = Env::new(&first);
    let mut watcher = env.watch(&[]);
    assert_eq!(watcher.first_outcome()["generation"], 1);
    let lock_before = env.lock_text();

    let fewer = spec_with(&["hello"], "");
    env.write_spec(&fewer);
    let outcome = watcher.outcome_of(&fewer);
    assert_eq!(outcome["event"], "held", "{outcome:#}");
    assert_eq!(outcome["generation"], 1);
    assert_eq!(outcome["plan"]["summary"]["remove"], 1);
    assert_eq!(outcome["plan"]["changes"][0]["kind"], "remove");
    watcher.wait_for_stderr("generation 1 held: 0 to add, 1 to remove; 1 unchanged");
    watcher.wait_for_stderr("  - jq-1.7.1 (jq)");
    watcher.wait_for_stderr("hint: pass `--allow-destructive`");
    assert_eq!(env.bin(), names(&["hello", "jq"]));
    assert_eq!(env.lock_text(), lock_before);
    assert_eq!(env.generations(), [1]);

    // A downgrade is held too, and an addition beside it waits with it.
    let older = "version = 1\n\n[sources.demo]\nchannel = \"channel\"\n\n[packages.hello]\nattr = \"hello_2_10\"\n\n[packages.jq]\nattr = \"jq\"\n\n[packages.cowsay]\nattr = \"cowsay\"\n";
    env.write_spec(older);
    let outcome = watcher.outcome_of(older);
    assert_eq!(outcome["event"], "held", "{outcome:#}");
    assert_eq!(env.generations(), [1]);
    watcher.stop();

    let mut watcher = env.watch(&["--allow-destructive"]);
    let outcome = watcher.outcome_of(older);
    assert_eq!(outcome["event"], "applied", "{outcome:#}");
    assert_eq!(outcome["generation"], 2);
    assert_eq!(env.bin(), names(&["cowsay", "hello", "jq"]));
    let hello = fs_err::read_to_string(env.profile().join("bin/hello")).expect("bin/hello");
    assert!(hello.contains("2.10"), "{hello}");
    env.write_spec(&fewer);
    let outcome = watcher.outcome_of(&fewer);
    assert_eq!(outcome["event"], "applied", "{outcome:#}");
    assert_eq!(env.bin(), names(&["hello"]));
    watcher.stop();
}

#[test]
fn sigterm_during_a_burst_leaves_the_profile_consistent() {
    let env = Env::new(&spec_with(&["hello"], ""));
    let mut watcher = env.watch(&["--allow-destructive", "--debounce", "0"]);
    assert_eq!(watcher.first_outcome()["event"], "applied");
    let attrs = ["hello", "jq", "cowsay", "demo-motd"];
    let mut last = String::new();
    for edit in 0..40_usize {
        let chosen: Vec<&str> = attrs
            .iter()
            .enumerate()
            .filter(|(bit, _)| (edit + 1) & (1 << bit) != 0)
            .map(|(_, attr)| *attr)
            .collect();
        last = spec_with(&chosen, &format!("edit {edit}"));
        env.rename_spec(&last);
        if edit == 20 {
            watcher.signal("TERM");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (status, events, stderr) = watcher.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopped on SIGTERM"), "{stderr}");
    assert_eq!(events.last().expect("events")["event"], "stopped");
    env.assert_consistent();
    // Every generation the watcher reported is the one it built, whole.
    for outcome in outcomes(&events) {
        if outcome["event"] == "applied" {
            let number = outcome["generation"].as_u64().expect("generation");
            assert!(
                env.generations()
                    .contains(&u32::try_from(number).expect("u32")),
                "{outcome:#}"
            );
        }
    }

    // A re-run converges on the last save.
    let mut watcher = env.watch(&["--allow-destructive"]);
    let outcome = watcher.outcome_of(&last);
    assert!(
        outcome["event"] == "applied" || outcome["event"] == "unchanged",
        "{outcome:#}"
    );
    watcher.stop();
    let (code, stderr) = env.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "the profile matches the last save: {stderr}");
    env.assert_consistent();
}

#[test]
fn a_signal_during_an_apply_lets_it_finish() {
    let env = Env::new(&spec_with(&["hello", "jq"], ""));
    let mut watcher = env.watch(&["--debug-pause-before-apply", "1000"]);
    watcher.wait_for_stderr("(test hook)");
    let (status, events, stderr) = watcher.stop_with("INT");
    assert_eq!(status.code(), Some(0), "{stderr}");
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event["event"].as_str().expect("event"))
        .collect();
    assert_eq!(kinds, ["watching", "applied", "stopped"], "{stderr}");
    assert_eq!(events[2]["signal"], "SIGINT");
    assert_eq!(env.generation(), Some(1));
    assert_eq!(env.bin(), names(&["hello", "jq"]));
    env.assert_consistent();
}

#[test]
fn polling_sees_saves() {
    let env = Env::new(&spec_with(&["hello"], ""));
    let mut watcher = env.watch(&["--poll", "--poll-interval", "50", "--debounce", "50"]);
    assert_eq!(watcher.first_outcome()["generation"], 1);
    watcher.wait_for_stderr("polling every 50 ms");
    let second = spec_with(&["hello", "jq"], "");
    env.write_spec(&second);
    let outcome = watcher.outcome_of(&second);
    assert_eq!(outcome["event"], "applied", "{outcome:#}");
    // Same size, other content, written in place: a poller comparing only sizes and times in
    // whole seconds would miss it.
    let third = spec_with(&["hello", "jq"], "x");
    let fourth = spec_with(&["hello", "jq"], "y");
    env.rename_spec(&third);
    assert_eq!(watcher.outcome_of(&third)["event"], "unchanged");
    env.write_spec(&fourth);
    assert_eq!(watcher.outcome_of(&fourth)["event"], "unchanged");
    let fifth = spec_with(&["hello", "jq", "cowsay"], "");
    env.rename_spec(&fifth);
    assert_eq!(watcher.outcome_of(&fifth)["generation"], 3);
    assert_eq!(env.bin(), names(&["cowsay", "hello", "jq"]));
    watcher.stop();
}

#[test]
fn symlinked_dotfiles_and_recreated_files_are_followed() {
    // The spec declenv is given is a link into the dotfiles, as a dotfiles manager makes it.
    let mut env = Env::new(&spec_with(&["hello"], ""));
    let config = env.base.join("config/declenv");
    fs_err::create_dir_all(&config).expect("mkdir");
    // The channel path in the spec is relative to the spec's own directory: give the link's
    // directory one too.
    symlink(env.dotfiles.join("channel"), config.join("channel")).expect("symlink");
    symlink(
        env.dotfiles.join("profile.toml"),
        config.join("profile.toml"),
    )
    .expect("symlink");
    env.spec = config.join("profile.toml");
    let mut watcher = env.watch(&[]);
    assert_eq!(watcher.first_outcome()["generation"], 1);

    // Edited where it really is, by rename.
    let second = spec_with(&["hello", "jq"], "");
    env.rename_spec(&second);
    assert_eq!(watcher.outcome_of(&second)["generation"], 2);

    // Deleted, then written anew.
    fs_err::remove_file(env.dotfiles.join("profile.toml")).expect("remove");
    let outcome = watcher.wait_for("the spec's removal", |events| {
        events
            .iter()
            .find(|event| event["event"] == "failed")
            .cloned()
    });
    assert!(
        outcome["error"]["message"]
            .as_str()
            .expect("message")
            .contains("cannot read profile spec"),
        "{outcome:#}"
    );
    let third = spec_with(&["hello", "jq", "cowsay"], "");
    fs_err::write(env.dotfiles.join("profile.toml"), &third).expect("write");
    assert_eq!(watcher.outcome_of(&third)["generation"], 3);

    // A package that appears in the channel later: the channel is watched.
    let fourth = spec_with(&["hello", "jq", "cowsay", "newtool"], "");
    env.rename_spec(&fourth);
    assert_eq!(watcher.outcome_of(&fourth)["event"], "failed");
    // Built beside the channel and moved in whole, as a build tool publishes a package.
    let built = env.base.join("newtool-1.0");
    fs_err::create_dir_all(built.join("bin")).expect("mkdir");
    fs_err::write(built.join("bin/newtool"), "#!/bin/sh\necho new\n").expect("write");
    fs_err::rename(&built, env.dotfiles.join("channel/newtool-1.0")).expect("rename");
    let outcome = watcher.wait_for("newtool applied", |events| {
        events
            .iter()
            .find(|event| event["event"] == "applied" && event["generation"] == 4)
            .cloned()
    });
    assert_eq!(outcome["spec_hash"], digest(&fourth).as_str());
    assert_eq!(env.bin(), names(&["cowsay", "hello", "jq", "newtool"]));
    watcher.stop();
}

#[test]
fn under_frozen_a_lockfile_update_is_what_applies_an_edit() {
    let first = spec_with(&["hello"], "");
    let env = Env::new(&first);
    assert_eq!(env.run(&["lock"]).0, 0);
    let mut watcher = env.watch(&["--frozen"]);
    assert_eq!(watcher.first_outcome()["generation"], 1);
    let second = spec_with(&["hello", "jq"], "");
    env.rename_spec(&second);
    let outcome = watcher.outcome_of(&second);
    assert_eq!(outcome["event"], "failed", "{outcome:#}");
    assert_eq!(
        outcome["error"]["hints"][0],
        "run `declenv lock` to bring the lockfile up to date, or drop `--frozen`"
    );
    let (code, stderr) = env.run(&["lock"]);
    assert_eq!(code, 0, "{stderr}");
    let outcome = watcher.wait_for("the edit applied after `declenv lock`", |events| {
        events
            .iter()
            .find(|event| event["event"] == "applied" && event["generation"] == 2)
            .cloned()
    });
    let lock = env.dotfiles.join("profile.lock");
    assert_eq!(
        outcome["changed"],
        serde_json::json!([lock.to_str().expect("utf-8")])
    );
    assert_eq!(env.bin(), names(&["hello", "jq"]));
    watcher.stop();
}
