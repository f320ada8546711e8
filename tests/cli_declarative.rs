//! The declarative cycle (`lock`, `plan`, `apply`) driven through the real binary.
//!
//! Every test works in its own temporary directory holding a root (`root/`) and a dotfiles
//! directory (`dotfiles/profile.toml`, its lockfile and a private copy of the demo channel), so a
//! test may edit the spec, the lockfile and the channel without touching `examples/`. What a
//! command did is checked on disk: the lockfile's bytes, the profile's generation links and which
//! package each link in the profile's `bin/` points into. Failing commands are checked against a
//! snapshot of the whole temporary directory: an error must leave nothing changed.

mod support;

use support::Run;

use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

// ---------------------------------------------------------------------------------------------
// Specs
// ---------------------------------------------------------------------------------------------

/// The spec the full cycle starts from: packages selected by attribute path and by selector
/// with a version range, a `keep`, and `which`/`busybox`, which both ship `bin/which` (busybox
/// yields through its own `meta.priority = 15`).
const CYCLE_SPEC: &str = r#"version = 1

[sources.demo]
channel = "channel"

[packages.hello]
attr = "hello_2_10"

[packages.jq]
version = ">=1.7, <2"

[packages.which]
attr = "which"

[packages.busybox]
attr = "busybox"

[packages.cowsay]
attr = "cowsay"
keep = true

[packages.motd]
attr = "demo-motd"
"#;

/// A small spec for the tests that need some state to protect, not a rich plan.
const SMALL_SPEC: &str = r#"version = 1

[sources.demo]
channel = "channel"

[packages.hello]
attr = "hello"

[packages.which]
attr = "which"

[packages.busybox]
attr = "busybox"

[packages.jq]
version = ">=1.7, <2"
"#;

// ---------------------------------------------------------------------------------------------
// The environment: a temporary directory, and running declenv in it
// ---------------------------------------------------------------------------------------------

/// The store backend a spec selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// declenv's own store under the root (the default).
    Embedded,
    /// `backend = "nix"`: the real Nix, pointed by its environment variables at a private
    /// store under the root (`ROOT/nix/store`, so paths look as they do on the embedded one).
    Nix,
}

/// A temporary directory with a root and a dotfiles directory (spec + channel copy).
struct Env {
    _directory: tempfile::TempDir,
    backend: Backend,
    /// Everything a test may change lives under here.
    base: PathBuf,
    root: PathBuf,
    spec: PathBuf,
    channel: PathBuf,
}

impl Env {
    /// A fresh root and a copy of the demo channel beside a spec with `text`, on the embedded
    /// store.
    fn new(text: &str) -> Self {
        Self::with_backend(text, Backend::Embedded)
    }

    /// As [`Env::new`], on `backend`: for Nix, `backend = "nix"` goes right after the spec's
    /// `version = 1` line (the edits tests make replace other text, so it stays), and Nix gets
    /// a configuration directory of its own.
    fn with_backend(text: &str, backend: Backend) -> Self {
        let directory = tempfile::tempdir().expect("tempdir");
        // Nix computes store paths from the store directory as given, so the root must be an
        // absolute path; the temporary directory is one, and not reached through a link.
        let base = directory.path().to_owned();
        assert!(base.is_absolute(), "{}", base.display());
        let dotfiles = base.join("dotfiles");
        let channel = dotfiles.join("channel");
        support::copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/channel"),
            &channel,
        );
        let text = match backend {
            Backend::Embedded => text.to_owned(),
            Backend::Nix => {
                fs_err::create_dir_all(base.join("etc")).expect("mkdir NIX_CONF_DIR");
                replace_once(text, "version = 1\n", "version = 1\nbackend = \"nix\"\n")
            }
        };
        let env = Self {
            root: base.join("root"),
            spec: dotfiles.join("profile.toml"),
            channel,
            base,
            backend,
            _directory: directory,
        };
        env.write_spec(&text);
        env
    }

    /// Runs `declenv --root ROOT --file SPEC ARGS…` with nothing inherited that could point it
    /// elsewhere (the user's root, spec or colours) and no terminal on stdin.
    ///
    /// On the Nix backend, Nix's variables select a private store in the root (store directory
    /// `ROOT/nix/store`, state `ROOT/nix/var/nix`, no daemon, no sandbox, no substituters), and
    /// `--profile` names `ROOT/nix/var/nix/profiles/default`, which Nix would otherwise pick only
    /// for root.
    fn run(&self, args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_declenv"));
        if self.backend == Backend::Nix {
            let nix = self.root.join("nix");
            command
                .env("NIX_STORE_DIR", nix.join("store"))
                .env("NIX_STATE_DIR", nix.join("var/nix"))
                .env("NIX_LOG_DIR", nix.join("var/log/nix"))
                .env("NIX_CONF_DIR", self.base.join("etc"))
                .env("NIX_REMOTE", "local")
                .env(
                    "NIX_CONFIG",
                    "sandbox = false\nsubstituters =\nbuild-users-group =",
                )
                .arg("--profile")
                .arg(self.profile());
        }
        let output = command
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
            .stdin(Stdio::null())
            .output()
            .expect("declenv runs");
        Run::of(output)
    }

    /// Runs and asserts the exit status.
    fn expect(&self, code: i32, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, code, "declenv {args:?}: {run:#?}");
        run
    }

    /// Runs and asserts success.
    fn ok(&self, args: &[&str]) -> Run {
        self.expect(0, args)
    }

    fn write_spec(&self, text: &str) {
        fs_err::write(&self.spec, text).expect("write spec");
    }

    fn spec_text(&self) -> String {
        fs_err::read_to_string(&self.spec).expect("read spec")
    }

    /// Replaces the one occurrence of `from` in the spec by `to`.
    fn edit_spec(&self, from: &str, to: &str) {
        self.write_spec(&replace_once(&self.spec_text(), from, to));
    }

    fn lock_path(&self) -> PathBuf {
        self.spec.with_extension("lock")
    }

    fn lock_bytes(&self) -> Vec<u8> {
        fs_err::read(self.lock_path()).expect("read lockfile")
    }

    fn lock_json(&self) -> Value {
        let document = serde_json::from_slice(&self.lock_bytes()).expect("lockfile is JSON");
        support::assert_schema_valid(&document);
        document
    }

    /// The locked package name of every id.
    fn locked_names(&self) -> BTreeMap<String, String> {
        self.lock_json()["packages"]
            .as_object()
            .expect("packages")
            .iter()
            .map(|(id, package)| {
                let name = package["name"].as_str().expect("name").to_owned();
                (id.clone(), name)
            })
            .collect()
    }

    fn profile(&self) -> PathBuf {
        self.root.join("nix/var/nix/profiles/default")
    }

    /// The generation the profile link points at.
    fn generation(&self) -> Option<u32> {
        let target = fs_err::read_link(self.profile()).ok()?;
        let name = target.to_str().expect("utf-8 link");
        let number = name
            .strip_prefix("default-")
            .and_then(|rest| rest.strip_suffix("-link"))
            .unwrap_or_else(|| panic!("profile link `{name}` is not a generation link"));
        Some(number.parse().expect("generation number"))
    }

    /// Every generation link's number.
    fn generations(&self) -> Vec<u32> {
        let Ok(entries) = fs_err::read_dir(self.profile().parent().expect("profiles")) else {
            return Vec::new();
        };
        let mut numbers: Vec<u32> = entries
            .map(|entry| entry.expect("entry").file_name())
            .filter_map(|name| {
                name.to_str()?
                    .strip_prefix("default-")?
                    .strip_suffix("-link")?
                    .parse()
                    .ok()
            })
            .collect();
        numbers.sort_unstable();
        numbers
    }

    /// The package (store path name without its hash) a link target points into.
    fn package_of(&self, target: &Path) -> String {
        let store = self.root.join("nix/store");
        let canonical = fs_err::canonicalize(&store).expect("store exists");
        let relative = target
            .strip_prefix(&canonical)
            .or_else(|_| target.strip_prefix(&store))
            .unwrap_or_else(|_| panic!("`{}` is not in the store", target.display()));
        let first = relative
            .components()
            .next()
            .expect("a store path")
            .as_os_str()
            .to_str()
            .expect("utf-8 store path");
        assert_eq!(first.as_bytes()[32], b'-', "store path name `{first}`");
        first[33..].to_owned()
    }

    /// The profile's `bin/`: each entry and the package its link points into (through a
    /// linked `bin/` directory when only one package provides one, as buildenv does).
    fn bin(&self) -> BTreeMap<String, String> {
        let bin = self.profile().join("bin");
        let Ok(metadata) = fs_err::symlink_metadata(&bin) else {
            return BTreeMap::new();
        };
        let whole = metadata
            .is_symlink()
            .then(|| self.package_of(&fs_err::read_link(&bin).expect("bin link")));
        fs_err::read_dir(&bin)
            .expect("read bin")
            .map(|entry| {
                let entry = entry.expect("entry");
                let name = entry.file_name().to_str().expect("utf-8").to_owned();
                let package = whole.clone().unwrap_or_else(|| {
                    let target = fs_err::read_link(entry.path())
                        .unwrap_or_else(|_| panic!("bin/{name} is a link into the store"));
                    self.package_of(&target)
                });
                (name, package)
            })
            .collect()
    }

    /// The names at the top of the profile (`bin`, `share`, `manifest.nix`, …).
    fn profile_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs_err::read_dir(self.profile())
            .expect("read profile")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_str()
                    .expect("utf-8")
                    .to_owned()
            })
            .collect();
        names.sort();
        names
    }

    /// Adds a newer `which` (2.22) and a newer `cowsay` (3.8.0) to the channel copy, under the
    /// attribute paths the older ones had (which move to `which_2_21` and `cowsay_3_7_0`), as a
    /// nixpkgs update does.
    fn add_newer_versions(&self) {
        for (old, new, old_version, new_version) in [
            ("which-2.21", "which-2.22", "2.21", "2.22"),
            ("cowsay-3.7.0", "cowsay-3.8.0", "3.7.0", "3.8.0"),
        ] {
            support::copy_tree(&self.channel.join(old), &self.channel.join(new));
            let program = self
                .channel
                .join(new)
                .join("bin")
                .join(old.split('-').next().expect("name"));
            let text = fs_err::read_to_string(&program).expect("read program");
            assert!(text.contains(old_version), "{}", program.display());
            fs_err::write(&program, text.replace(old_version, new_version)).expect("write");
        }
        let metadata = self.channel.join("channel.toml");
        let mut text = fs_err::read_to_string(&metadata).expect("read channel.toml");
        for (old, attr, new) in [
            ("which-2.21", "which", "which-2.22"),
            ("cowsay-3.7.0", "cowsay", "cowsay-3.8.0"),
        ] {
            text = replace_once(
                &text,
                &format!("[packages.\"{old}\"]\nattr = \"{attr}\"\n"),
                &format!(
                    "[packages.\"{old}\"]\nattr = \"{attr}_{}\"\n[packages.\"{new}\"]\nattr = \"{attr}\"\n",
                    old.split_once('-').expect("version").1.replace('.', "_")
                ),
            );
        }
        fs_err::write(&metadata, text).expect("write channel.toml");
    }

    /// Everything under the temporary directory: the root and the dotfiles.
    fn snapshot(&self) -> Snapshot {
        let mut entries = BTreeMap::new();
        walk(&self.base, &self.base, &mut entries);
        Snapshot(entries)
    }

    /// `text` with the temporary directory and content hashes made stable for snapshots.
    fn redact(&self, text: &str) -> String {
        let text = text.replace(self.base.to_str().expect("utf-8 path"), "[TMP]");
        regex::Regex::new("sha256:[0-9a-f]{64}")
            .expect("regex")
            .replace_all(&text, "sha256:[HASH]")
            .into_owned()
    }
}

/// Replaces the one occurrence of `from` in `text` (an edit that finds nothing, or finds it
/// twice, is a broken test, not a passing one).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` must occur once in:\n{text}"
    );
    text.replacen(from, to, 1)
}

// ---------------------------------------------------------------------------------------------
// Snapshots of the disk: "nothing changed" means these are equal
// ---------------------------------------------------------------------------------------------

/// One entry on disk, as much as an error must not change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DiskEntry {
    Directory { mode: u32 },
    File { mode: u32, contents: Vec<u8> },
    Link { target: PathBuf },
}

/// Every path under a directory with what it is.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot(BTreeMap<PathBuf, DiskEntry>);

fn walk(base: &Path, directory: &Path, entries: &mut BTreeMap<PathBuf, DiskEntry>) {
    for entry in fs_err::read_dir(directory).expect("read dir") {
        let path = entry.expect("entry").path();
        let metadata = fs_err::symlink_metadata(&path).expect("metadata");
        let mode = metadata.permissions().mode();
        let relative = path.strip_prefix(base).expect("under base").to_owned();
        if metadata.is_symlink() {
            let target = fs_err::read_link(&path).expect("link");
            entries.insert(relative, DiskEntry::Link { target });
        } else if metadata.is_dir() {
            entries.insert(relative, DiskEntry::Directory { mode });
            walk(base, &path, entries);
        } else {
            let contents = fs_err::read(&path).expect("read");
            entries.insert(relative, DiskEntry::File { mode, contents });
        }
    }
}

/// Asserts two snapshots are equal, naming the paths that differ (not dumping both trees).
fn assert_unchanged(before: &Snapshot, after: &Snapshot, what: &str) {
    let mut differences = Vec::new();
    for (path, entry) in &before.0 {
        match after.0.get(path) {
            None => differences.push(format!("removed {}", path.display())),
            Some(other) if other != entry => {
                differences.push(format!("changed {}", path.display()))
            }
            Some(_) => {}
        }
    }
    for path in after.0.keys().filter(|path| !before.0.contains_key(*path)) {
        differences.push(format!("added {}", path.display()));
    }
    assert!(
        differences.is_empty(),
        "{what} changed the disk:\n{}",
        differences.join("\n")
    );
}

/// Runs each command expecting its exit status, and asserts that none of them changed anything
/// on disk and that all of them reported the same error. Returns that error, redacted.
fn assert_refused(env: &Env, commands: &[(i32, &[&str])]) -> String {
    let before = env.snapshot();
    let mut first: Option<String> = None;
    for (code, args) in commands {
        let run = env.expect(*code, args);
        assert_unchanged(&before, &env.snapshot(), &format!("declenv {args:?}"));
        let stderr = env.redact(&run.stderr);
        match &first {
            None => first = Some(stderr),
            Some(first) => assert_eq!(&stderr, first, "declenv {args:?} reports another error"),
        }
    }
    first.expect("at least one command")
}

/// The commands that read the spec and the lockfile, with the status each exits with on an
/// error (`plan --detailed-exitcode` keeps 2 for "changes", so its errors exit with 1).
const EVERY_READER: &[(i32, &[&str])] = &[
    (2, &["plan"]),
    (1, &["plan", "--detailed-exitcode"]),
    (2, &["plan", "--json"]),
    (2, &["apply", "-y"]),
    (2, &["lock"]),
];

/// A root holding generation 1 of `spec`, so that an error has something to damage.
fn applied(spec: &str) -> Env {
    let env = Env::new(spec);
    env.ok(&["apply", "-y"]);
    assert_eq!(env.generation(), Some(1));
    env
}

/// The profile's `bin/` for SMALL_SPEC, plus `extra` entries.
fn small_bin(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut expected = bin(&[
        ("busybox", "busybox-1.36.1"),
        ("hello", "hello-2.12.1"),
        ("jq", "jq-1.7.1"),
        ("which", "which-2.21"),
    ]);
    expected.extend(bin(extra));
    expected
}

// ---------------------------------------------------------------------------------------------
// Plans decoded from JSON
// ---------------------------------------------------------------------------------------------

/// One change of a plan, as the JSON says it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edit {
    kind: String,
    id: String,
    from: Option<String>,
    to: Option<String>,
    /// `flag: from → to`, `-` for unset.
    flags: Vec<String>,
}

/// An expected change: versions (`None` for absent sides) and flags as `flag: from → to`.
fn edit(kind: &str, id: &str, from: Option<&str>, to: Option<&str>, flags: &[&str]) -> Edit {
    Edit {
        kind: kind.to_owned(),
        id: id.to_owned(),
        from: from.map(str::to_owned),
        to: to.map(str::to_owned),
        flags: flags.iter().map(|flag| (*flag).to_owned()).collect(),
    }
}

/// The changes of a plan document.
fn edits(plan: &Value) -> Vec<Edit> {
    assert_eq!(plan["schema"]["version"], 1, "{plan:#}");
    let version = |side: &Value| {
        side.get("version")
            .map(|v| v.as_str().expect("version").to_owned())
    };
    plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|change| Edit {
            kind: change["kind"].as_str().expect("kind").to_owned(),
            id: change["id"].as_str().expect("id").to_owned(),
            from: change.get("from").and_then(version),
            to: change.get("to").and_then(version),
            flags: change
                .get("flags")
                .and_then(Value::as_array)
                .map(|flags| {
                    flags
                        .iter()
                        .map(|flag| {
                            let value = |key: &str| flag[key].as_str().unwrap_or("-").to_owned();
                            format!(
                                "{}: {} → {}",
                                flag["flag"].as_str().expect("flag"),
                                value("from"),
                                value("to")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// Asserts that `error` is the collision of `which` and `busybox` over `bin/which` at priority
/// 5, with its hint, word for word. Returns the packages in the order the error names them
/// (the order the builder met them in): the hint's edit keeps the first one's file.
fn which_collision(error: &str) -> (&'static str, &'static str) {
    for (first, second) in [("which", "busybox"), ("busybox", "which")] {
        let expected = format!(
            "error: packages `{first}` and `{second}` both provide `bin/which` with priority 5\n\
             hint: to keep `{first}`'s `bin/which`, set `priority = 4` under `[packages.{first}]` \
             (lower wins); or set it under `[packages.{second}]` to keep that one's\n"
        );
        if error == expected {
            return (first, second);
        }
    }
    panic!("not the collision of `which` and `busybox` with its hint:\n{error}");
}

/// `bin/` as expected: name → package.
fn bin(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(name, package)| ((*name).to_owned(), (*package).to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. The full cycle
// ---------------------------------------------------------------------------------------------

/// lock → plan → apply → update the channel and `lock --update` → edit (replace, upgrade,
/// removal, flags, a collision resolved by the priority the hint names) → apply → rollback →
/// the plan shows the drift → apply → nothing left to do.
#[test]
fn full_cycle_from_lock_to_rollback_and_back() {
    full_cycle(Backend::Embedded);
}

/// The same cycle on the real Nix (`DECLENV_TEST_NIX=1`; without it the test passes at once).
#[test]
fn live_nix_backend_full_cycle_from_lock_to_rollback_and_back() {
    if std::env::var_os("DECLENV_TEST_NIX").is_none() {
        return;
    }
    full_cycle(Backend::Nix);
}

fn full_cycle(backend: Backend) {
    let env = Env::with_backend(CYCLE_SPEC, backend);

    // lock: every id pinned; the file is created.
    let lock = env.ok(&["lock"]);
    assert!(
        lock.stderr.contains("locked hello → hello-2.10"),
        "{lock:#?}"
    );
    let names = env.locked_names();
    assert_eq!(
        names,
        BTreeMap::from(
            [
                ("busybox", "busybox-1.36.1"),
                ("cowsay", "cowsay-3.7.0"),
                ("hello", "hello-2.10"),
                ("jq", "jq-1.7.1"),
                ("motd", "demo-motd"),
                ("which", "which-2.21"),
            ]
            .map(|(id, name)| (id.to_owned(), name.to_owned()))
        )
    );

    // plan: everything to add, and exit status 2 says so.
    let plan = env.expect(2, &["plan", "--detailed-exitcode"]);
    // Both backends' tests reach this one inline snapshot, and insta refuses a second visit in
    // the same process unless duplicates are allowed; each visit is still checked against it.
    insta::allow_duplicates! {
        insta::assert_snapshot!(env.redact(&plan.stdout), @r"
        declenv will make a new generation of `[TMP]/root/nix/var/nix/profiles/default` (no generation yet now):

          + busybox-1.36.1 (busybox)
          + cowsay-3.7.0 (cowsay)
          + demo-motd (motd)
          + hello-2.10 (hello)
          + jq-1.7.1 (jq)
          + which-2.21 (which)

        Plan: 6 to add, 0 to remove; 0 unchanged.
        ");
    }
    assert_eq!(env.generation(), None, "plan changes no profile");

    // apply: generation 1 with every package linked; which wins bin/which over busybox.
    env.ok(&["apply", "-y"]);
    assert_eq!(env.generations(), [1]);
    assert_eq!(env.generation(), Some(1));
    // The backend the spec names is the one that built it: Nix's database, or declenv's own
    // registry of valid paths (so the Nix run cannot pass by quietly using the embedded store).
    let (used, unused) = match backend {
        Backend::Embedded => ("nix/var/declenv/store/valid", "nix/var/nix/db"),
        Backend::Nix => ("nix/var/nix/db", "nix/var/declenv/store/valid"),
    };
    assert!(
        env.root.join(used).exists(),
        "{backend:?} backend: no {used}"
    );
    assert!(
        !env.root.join(unused).exists(),
        "{backend:?} backend: {unused}"
    );
    let generation_1 = bin(&[
        ("busybox", "busybox-1.36.1"),
        ("cowsay", "cowsay-3.7.0"),
        ("demo-motd", "demo-motd"),
        ("hello", "hello-2.10"),
        ("jq", "jq-1.7.1"),
        ("which", "which-2.21"),
    ]);
    assert_eq!(env.bin(), generation_1);
    assert_eq!(env.profile_entries(), ["bin", "manifest.nix", "share"]);
    env.expect(0, &["plan", "--detailed-exitcode"]);

    // The channel gains newer which and cowsay; the lockfile holds both back.
    env.add_newer_versions();
    let held = env.expect(0, &["plan", "--detailed-exitcode"]);
    assert!(
        held.stderr.contains(
            "note: which stays at 2.21 (2.22 available), held by the lockfile; `declenv lock --update which` takes it"
        ),
        "{held:#?}"
    );
    assert!(
        held.stderr
            .contains("note: cowsay stays at 3.7.0 (3.8.0 available), held by `keep = true`"),
        "{held:#?}"
    );

    // `lock --update cowsay`: keep = true wins; the lockfile is not touched at all.
    let before = env.lock_bytes();
    let update = env.ok(&["lock", "--update", "cowsay", "--json"]).json();
    assert_eq!(update["relocked"], serde_json::json!([]));
    assert_eq!(update["written"], false);
    let held_back = update["held_back"].as_array().expect("held_back");
    assert!(
        held_back.contains(&serde_json::json!(
            {"id": "cowsay", "locked": "3.7.0", "available": "3.8.0", "reason": "keep"}
        )),
        "{update:#}"
    );
    assert_eq!(env.lock_bytes(), before);

    // `lock --update which,cowsay`: which moves, cowsay's entry stays byte for byte.
    let cowsay_before = env.lock_json()["packages"]["cowsay"].clone();
    let update = env
        .ok(&["lock", "--update", "which,cowsay", "--json"])
        .json();
    assert_eq!(update["relocked"], serde_json::json!(["which"]));
    assert_eq!(update["written"], true);
    assert_eq!(env.locked_names()["which"], "which-2.22");
    assert_eq!(env.lock_json()["packages"]["cowsay"], cowsay_before);

    // `lock --update` (everything): still no cowsay 3.8.0.
    let update = env.ok(&["lock", "--update", "--json"]).json();
    assert_eq!(update["relocked"], serde_json::json!([]));
    assert_eq!(env.locked_names()["cowsay"], "cowsay-3.7.0");
    assert_eq!(env.lock_json()["packages"]["cowsay"], cowsay_before);

    // `lock --update` of an id the spec does not have is an error.
    let unknown = env.expect(2, &["lock", "--update", "nope"]);
    assert!(
        unknown
            .stderr
            .contains("`--update nope`: the spec has no package `nope`"),
        "{unknown:#?}"
    );

    // Edit the spec: hello moves to the newest attribute, jq goes, which gets `keep`, motd is
    // deactivated, and busybox's priority becomes which's: a collision.
    env.edit_spec("attr = \"hello_2_10\"", "attr = \"hello\"");
    env.edit_spec("[packages.jq]\nversion = \">=1.7, <2\"\n\n", "");
    env.edit_spec(
        "[packages.which]\nattr = \"which\"\n",
        "[packages.which]\nattr = \"which\"\nkeep = true\n",
    );
    env.edit_spec(
        "attr = \"demo-motd\"\n",
        "attr = \"demo-motd\"\nactive = false\n",
    );
    env.edit_spec("attr = \"busybox\"\n", "attr = \"busybox\"\npriority = 5\n");

    // The collision stops the plan before anything is written, the lockfile included.
    let collision = assert_refused(
        &env,
        &[(1, &["plan", "--detailed-exitcode"]), (2, &["apply", "-y"])],
    );
    let (kept, _) = which_collision(&collision);

    // Make exactly the edit the hint names: it keeps the first package's `bin/which`.
    let hint = regex::Regex::new(r"set `priority = (\d+)` under `\[packages\.([a-z]+)\]`")
        .expect("regex")
        .captures(&collision)
        .expect("the hint names an edit");
    let (priority, id) = (&hint[1], &hint[2]);
    assert_eq!((priority, id), ("4", kept));
    env.edit_spec(
        &format!("[packages.{id}]\n"),
        &format!("[packages.{id}]\npriority = {priority}\n"),
    );

    // The plan shows exactly those edits.
    let (which_flags, busybox_flags, which_owner) = if kept == "which" {
        (
            vec!["priority: - → 4", "keep: - → true"],
            vec!["priority: 15 → 5"],
            "which-2.22",
        )
    } else {
        (
            vec!["keep: - → true"],
            vec!["priority: 15 → 4"],
            "busybox-1.36.1",
        )
    };
    let plan = env
        .expect(2, &["plan", "--json", "--detailed-exitcode"])
        .json();
    let expected = vec![
        edit("remove", "jq", Some("1.7.1"), None, &[]),
        edit("upgrade", "which", Some("2.21"), Some("2.22"), &which_flags),
        edit("replace", "hello", Some("2.10"), Some("2.12.1"), &[]),
        edit(
            "flags",
            "busybox",
            Some("1.36.1"),
            Some("1.36.1"),
            &busybox_flags,
        ),
        edit("flags", "motd", Some(""), Some(""), &["active: - → false"]),
    ];
    assert_eq!(edits(&plan), expected);
    let replace = &plan["changes"][2];
    assert_eq!(
        (&replace["from"]["attr_path"], &replace["to"]["attr_path"]),
        (&Value::from("hello_2_10"), &Value::from("hello"))
    );
    assert_eq!(
        plan["summary"],
        serde_json::json!({"add": 0, "remove": 1, "upgrade": 1, "downgrade": 0, "replace": 1,
                           "rebuild": 0, "flags": 2, "unchanged": 1})
    );
    assert_eq!(plan["generation"], 1);

    // apply: generation 2; jq's man pages and motd's program are gone, and bin/which is the
    // kept package's.
    env.ok(&["apply", "-y"]);
    assert_eq!(env.generations(), [1, 2]);
    assert_eq!(env.generation(), Some(2));
    let generation_2 = bin(&[
        ("busybox", "busybox-1.36.1"),
        ("cowsay", "cowsay-3.7.0"),
        ("hello", "hello-2.12.1"),
        ("which", which_owner),
    ]);
    assert_eq!(env.bin(), generation_2);
    assert_eq!(env.profile_entries(), ["bin", "manifest.nix"]);
    env.expect(0, &["plan", "--detailed-exitcode"]);

    // rollback: generation 1 again, as it was.
    env.ok(&["rollback"]);
    assert_eq!(env.generation(), Some(1));
    assert_eq!(env.bin(), generation_1);

    // The plan now shows the drift: the same edits, needed again to return to the spec.
    let drift = env
        .expect(2, &["plan", "--json", "--detailed-exitcode"])
        .json();
    assert_eq!(edits(&drift), expected);
    assert_eq!(drift["generation"], 1);

    // apply: the environment is generation 2's, so (as Nix does) generation 2 is reused.
    env.ok(&["apply", "-y"]);
    assert_eq!(env.generations(), [1, 2]);
    assert_eq!(env.generation(), Some(2));
    assert_eq!(env.bin(), generation_2);
    env.expect(0, &["plan", "--detailed-exitcode"]);

    // `diff` between the two generations tells the same story.
    let diff = env.ok(&["diff", "1", "2", "--json"]).json();
    assert_eq!(edits(&diff), expected);
}

/// After a source update moved the locked packages to other attribute paths, editing their
/// flags changes flags only: no upgrade (least of all of a `keep = true` package), and the
/// apply still finds the locked trees in the source.
#[test]
fn flag_edits_after_a_source_update_upgrade_nothing() {
    let env = applied(&format!(
        "{SMALL_SPEC}\n[packages.cowsay]\nattr = \"cowsay\"\nkeep = true\n"
    ));
    env.add_newer_versions();
    let locked_before = env.locked_names();
    env.edit_spec("keep = true\n", "keep = true\npriority = 3\n");
    env.edit_spec(
        "[packages.which]\nattr = \"which\"\n",
        "[packages.which]\nattr = \"which\"\nkeep = true\n",
    );
    env.ok(&["lock"]);
    assert_eq!(env.locked_names(), locked_before);

    let plan = env
        .expect(2, &["plan", "--json", "--detailed-exitcode"])
        .json();
    assert_eq!(
        edits(&plan),
        [
            edit(
                "flags",
                "cowsay",
                Some("3.7.0"),
                Some("3.7.0"),
                &["priority: - → 3"]
            ),
            edit(
                "flags",
                "which",
                Some("2.21"),
                Some("2.21"),
                &["keep: - → true"]
            ),
        ]
    );

    // A fresh profile from the same lockfile: the trees come from their new attributes.
    fs_err::remove_dir_all(&env.root).expect("remove root");
    env.ok(&["apply", "--frozen", "-y"]);
    assert_eq!(env.bin(), small_bin(&[("cowsay", "cowsay-3.7.0")]));
}

/// A package selected by name within a version range, in a channel that keeps each older
/// version under its own attribute (as nixpkgs does): relaxing the range keeps the lock; an
/// update stays on the locked attribute unless `--allow-attr-change`, and the plan flags the
/// move as a replacement; tightening the range again re-resolves at once.
#[test]
fn relaxing_a_constraint_keeps_the_lock_until_an_update() {
    let env = Env::new(
        "version = 1\n[sources.demo]\nchannel = \"channel\"\n\
         [packages.which]\nname = \"which\"\nversion = \"<2.22\"\n",
    );
    env.add_newer_versions();
    env.ok(&["apply", "-y"]);
    assert_eq!(env.bin()["which"], "which-2.21");

    env.edit_spec("\"<2.22\"", "\"<3\"");
    let relaxed = env.ok(&["lock", "--json"]).json();
    assert_eq!(env.locked_names()["which"], "which-2.21");
    assert_eq!(
        relaxed["held_back"],
        serde_json::json!([
            {"id": "which", "locked": "2.21", "available": "2.22", "reason": "attr-path"}
        ])
    );
    env.expect(0, &["plan", "--detailed-exitcode"]);

    env.ok(&["lock", "--update", "which"]);
    assert_eq!(
        env.locked_names()["which"],
        "which-2.21",
        "stays on `which_2_21`"
    );

    env.ok(&["lock", "--update", "which", "--allow-attr-change"]);
    assert_eq!(env.locked_names()["which"], "which-2.22");
    let plan = env
        .expect(2, &["plan", "--json", "--detailed-exitcode"])
        .json();
    assert_eq!(
        edits(&plan),
        [edit("replace", "which", Some("2.21"), Some("2.22"), &[])]
    );
    assert_eq!(plan["changes"][0]["from"]["attr_path"], "which_2_21");
    assert_eq!(plan["changes"][0]["to"]["attr_path"], "which");
    env.ok(&["apply", "-y"]);
    assert_eq!(env.bin()["which"], "which-2.22");

    env.edit_spec("\"<3\"", "\"<2.22\"");
    let plan = env
        .expect(2, &["plan", "--json", "--detailed-exitcode"])
        .json();
    assert_eq!(
        edits(&plan),
        [edit("replace", "which", Some("2.22"), Some("2.21"), &[])]
    );
    assert_eq!(env.locked_names()["which"], "which-2.21");
}

// ---------------------------------------------------------------------------------------------
// 2. Saved plans
// ---------------------------------------------------------------------------------------------

/// `plan -o FILE` then `apply FILE` applies exactly that plan.
#[test]
fn a_saved_plan_applies_exactly() {
    let env = applied(SMALL_SPEC);
    env.write_spec(&format!(
        "{SMALL_SPEC}\n[packages.cowsay]\nattr = \"cowsay\"\n"
    ));
    let saved = env.base.join("plan.json");
    let printed = env
        .ok(&["plan", "-o", saved.to_str().expect("utf-8"), "--json"])
        .json();
    let file: Value =
        serde_json::from_slice(&fs_err::read(&saved).expect("plan saved")).expect("json");
    assert_eq!(file, printed, "the saved plan is the printed one");
    assert_eq!(
        edits(&file),
        [edit("add", "cowsay", None, Some("3.7.0"), &[])]
    );

    let applied = env
        .ok(&["apply", saved.to_str().expect("utf-8"), "--json"])
        .json();
    assert_eq!(applied["plan"]["changes"], file["changes"]);
    assert_eq!(applied["generation"], 2);
    assert_eq!(applied["reused"], false);
    assert_eq!(env.generation(), Some(2));
    assert_eq!(env.bin(), small_bin(&[("cowsay", "cowsay-3.7.0")]));
    env.expect(0, &["plan", "--detailed-exitcode"]);

    // Applied once, it no longer fits: the profile it was made against has moved.
    let again = assert_refused(&env, &[(2, &["apply", saved.to_str().expect("utf-8")])]);
    assert!(
        again.contains("the profile moved from generation 1 to generation 2"),
        "{again}"
    );
}

/// Saves a plan that adds cowsay to generation 1 of SMALL_SPEC; returns the plan file.
fn saved_plan(env: &Env) -> PathBuf {
    env.write_spec(&format!(
        "{SMALL_SPEC}\n[packages.cowsay]\nattr = \"cowsay\"\n"
    ));
    let saved = env.base.join("plan.json");
    env.ok(&["plan", "-o", saved.to_str().expect("utf-8")]);
    saved
}

/// Another apply between `plan -o` and `apply FILE`: refused, nothing changed.
#[test]
fn a_saved_plan_is_refused_when_the_profile_moved() {
    let env = applied(SMALL_SPEC);
    let saved = saved_plan(&env);
    env.ok(&["apply", "-y"]);
    assert_eq!(env.generation(), Some(2));
    let error = assert_refused(&env, &[(2, &["apply", saved.to_str().expect("utf-8")])]);
    insta::assert_snapshot!(error, @r"
    error: the saved plan `[TMP]/plan.json` is out of date: the profile moved from generation 1 to generation 2
    hint: run `declenv plan -o FILE` again
    ");
    assert_eq!(env.generations(), [1, 2]);
}

/// The spec edited after `plan -o`, even only in a comment: refused, nothing changed. Put back
/// as it was, the plan applies.
#[test]
fn a_saved_plan_is_refused_when_the_spec_changed() {
    let env = applied(SMALL_SPEC);
    let saved = saved_plan(&env);
    let saved = saved.to_str().expect("utf-8");
    let original = env.spec_text();

    env.write_spec(&format!("{original}# a comment\n"));
    let error = assert_refused(&env, &[(2, &["apply", saved])]);
    insta::assert_snapshot!(error, @r"
    error: the saved plan `[TMP]/plan.json` is out of date: the spec `[TMP]/dotfiles/profile.toml` changed
    hint: run `declenv plan -o FILE` again
    ");

    // An edit of an entry: the saved plan's lockfile no longer covers the spec. The user never
    // asked for `--frozen`; the message must still be about the saved plan.
    env.edit_spec("[packages.cowsay]\n", "[packages.cowsay]\nkeep = true\n");
    let error = assert_refused(&env, &[(2, &["apply", saved])]);
    insta::assert_snapshot!(error, @r"
    error: the saved plan `[TMP]/plan.json` is out of date: the spec `[TMP]/dotfiles/profile.toml` changed
    hint: run `declenv plan -o FILE` again
    ");

    env.write_spec(&original);
    env.ok(&["apply", saved]);
    assert_eq!(env.generation(), Some(2));
    assert_eq!(env.bin(), small_bin(&[("cowsay", "cowsay-3.7.0")]));
}

/// The lockfile changed after `plan -o` (a `lock --update` took a newer version): refused.
#[test]
fn a_saved_plan_is_refused_when_the_lockfile_changed() {
    let env = applied(SMALL_SPEC);
    let saved = saved_plan(&env);
    env.add_newer_versions();
    env.ok(&["lock", "--update", "which"]);
    assert_eq!(env.locked_names()["which"], "which-2.22");
    let error = assert_refused(&env, &[(2, &["apply", saved.to_str().expect("utf-8")])]);
    insta::assert_snapshot!(error, @r"
    error: the saved plan `[TMP]/plan.json` is out of date: the lockfile changed
    hint: run `declenv plan -o FILE` again
    ");
    assert_eq!(env.generations(), [1]);
}

/// A file that is not a plan is refused before anything happens.
#[test]
fn a_file_that_is_not_a_plan_is_refused() {
    let env = applied(SMALL_SPEC);
    let bogus = env.base.join("bogus.json");
    fs_err::write(&bogus, "{\"changes\": []}\n").expect("write");
    let error = assert_refused(&env, &[(2, &["apply", bogus.to_str().expect("utf-8")])]);
    assert!(
        error.starts_with("error: `[TMP]/bogus.json` is not a plan saved by `declenv plan -o`"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. --locked, --frozen, lock --check, and writing the lockfile only when it changes
// ---------------------------------------------------------------------------------------------

/// `lock --check` exits 1 when the lockfile is stale (or missing) and 0 when it is fresh, and
/// writes nothing either way.
#[test]
fn lock_check_reports_without_writing() {
    let env = Env::new(SMALL_SPEC);
    let missing = assert_refused(&env, &[(1, &["lock", "--check"])]);
    assert!(
        missing.contains("is out of date: it does not exist"),
        "{missing}"
    );
    assert!(missing.contains("hint: "), "{missing}");
    assert!(!env.lock_path().exists());

    env.ok(&["lock"]);
    let fresh = env.snapshot();
    env.ok(&["lock", "--check"]);
    assert_unchanged(&fresh, &env.snapshot(), "lock --check");

    env.write_spec(&format!(
        "{SMALL_SPEC}\n[packages.cowsay]\nattr = \"cowsay\"\n"
    ));
    let stale = assert_refused(&env, &[(1, &["lock", "--check"])]);
    insta::assert_snapshot!(stale, @r"
    error: lockfile `[TMP]/dotfiles/profile.lock` is out of date: would lock `cowsay`
    hint: run `declenv lock` to update it
    ");
}

/// `--locked` fails rather than change the lockfile, and leaves it byte for byte as it was.
#[test]
fn locked_fails_rather_than_change_the_lockfile() {
    let env = applied(SMALL_SPEC);
    env.ok(&["--locked", "plan"]);
    env.ok(&["apply", "--locked", "-y"]);

    env.write_spec(&format!(
        "{SMALL_SPEC}\n[packages.cowsay]\nattr = \"cowsay\"\n"
    ));
    let error = assert_refused(
        &env,
        &[
            (2, &["plan", "--locked"]),
            (1, &["plan", "--locked", "--detailed-exitcode"]),
            (2, &["apply", "--locked", "-y"]),
            (2, &["lock", "--locked"]),
        ],
    );
    insta::assert_snapshot!(error, @r"
    error: lockfile `[TMP]/dotfiles/profile.lock` is out of date: would lock `cowsay`
    hint: run `declenv lock` to bring the lockfile up to date, or drop `--locked`
    ");

    // A lockfile in another layout (valid, same content) is not rewritten under --locked.
    env.write_spec(SMALL_SPEC);
    let compact = serde_json::to_vec(&env.lock_json()).expect("json");
    fs_err::write(env.lock_path(), &compact).expect("write");
    let error = assert_refused(&env, &[(2, &["plan", "--locked"])]);
    assert!(
        error.contains("its sources or formatting would change"),
        "{error}"
    );
}

/// `--frozen` uses the lockfile as it is (even in another layout, even with a newer version in
/// the channel) and fails when it does not cover the spec.
#[test]
fn frozen_uses_the_lockfile_as_is() {
    let env = Env::new(SMALL_SPEC);
    let missing = assert_refused(&env, &[(2, &["apply", "--frozen", "-y"])]);
    insta::assert_snapshot!(missing, @r"
    error: lockfile `[TMP]/dotfiles/profile.lock` is out of date: it does not exist
    hint: run `declenv lock` to bring the lockfile up to date, or drop `--frozen`
    ");

    env.ok(&["lock"]);
    let compact = serde_json::to_vec(&env.lock_json()).expect("json");
    fs_err::write(env.lock_path(), &compact).expect("write");
    env.add_newer_versions();
    env.ok(&["apply", "--frozen", "-y"]);
    assert_eq!(env.generation(), Some(1));
    assert_eq!(
        env.bin(),
        small_bin(&[]),
        "the locked versions, not the newest"
    );
    assert_eq!(env.lock_bytes(), compact, "the lockfile is used as it is");

    // An id the lockfile does not have, one it has no longer, and one whose entry changed.
    env.write_spec(&replace_once(
        &format!("{SMALL_SPEC}\n[packages.cowsay]\nattr = \"cowsay\"\n"),
        "[packages.jq]\nversion = \">=1.7, <2\"\n",
        "",
    ));
    env.edit_spec("[packages.hello]\n", "[packages.hello]\nkeep = true\n");
    let error = assert_refused(
        &env,
        &[
            (2, &["plan", "--frozen"]),
            (1, &["plan", "--frozen", "--detailed-exitcode"]),
            (2, &["apply", "--frozen", "-y"]),
            (2, &["lock", "--frozen"]),
        ],
    );
    insta::assert_snapshot!(error, @r"
    error: lockfile `[TMP]/dotfiles/profile.lock` is out of date: it does not lock `cowsay`; the spec changed `hello`; it locks `jq` the spec no longer has
    hint: run `declenv lock` to bring the lockfile up to date, or drop `--frozen`
    ");
}

/// A `lock` (or `plan`, or `apply`) that changes nothing in the lockfile's content does not
/// rewrite it: same inode, same modification time.
#[test]
fn the_lockfile_is_rewritten_only_when_its_content_changes() {
    let env = Env::new(SMALL_SPEC);
    let first = env.ok(&["lock"]);
    assert!(first.stderr.contains("lockfile updated"), "{first:#?}");
    // An old modification time, so a rewrite within the same second would still show.
    let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
    filetime::set_file_mtime(env.lock_path(), old).expect("set mtime");
    let identity = || {
        let metadata = fs_err::metadata(env.lock_path()).expect("lockfile");
        (metadata.ino(), metadata.mtime(), metadata.mtime_nsec())
    };
    let before = identity();
    let bytes = env.lock_bytes();

    // Neither a second `lock`, nor a plan and apply on the locked spec, nor an edit that
    // changes no entry (a comment) rewrites it.
    let again = env.ok(&["lock"]);
    assert!(again.stderr.contains("lockfile up to date"), "{again:#?}");
    env.ok(&["plan"]);
    env.ok(&["apply", "-y"]);
    env.ok(&["apply", "-y"]);
    env.edit_spec("[packages.hello]\n", "[packages.hello]\n# a comment only\n");
    env.ok(&["lock"]);
    env.ok(&["plan"]);
    assert_eq!(identity(), before, "a no-op rewrote the lockfile");
    assert_eq!(env.lock_bytes(), bytes);

    // A flag changes the entry's hash, not the package: the lockfile changes, nothing relocks.
    env.edit_spec("# a comment only\n", "priority = 3\n");
    let changed = env.ok(&["lock"]);
    assert!(changed.stderr.contains("lockfile updated"), "{changed:#?}");
    assert_ne!(identity(), before);
    assert_eq!(
        env.locked_names()["hello"],
        "hello-2.12.1",
        "a flag relocks nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Malformed input: one clear error with its location and a hint, and nothing changed
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_toml_syntax() {
    let env = applied(SMALL_SPEC);
    env.edit_spec("[packages.jq]\n", "[packages.jq\n");
    let error = assert_refused(&env, EVERY_READER);
    insta::assert_snapshot!(error, @r"
    error: invalid profile spec `[TMP]/dotfiles/profile.toml` at line 15, column 13: unclosed table, expected `]`
    hint: fix the TOML syntax there (https://toml.io describes it)
    ");
}

/// Malformed input on a root that has never been used creates nothing in it, not even the store.
#[test]
fn bad_toml_syntax_on_a_fresh_root_creates_nothing() {
    let env = Env::new(SMALL_SPEC);
    env.edit_spec("[packages.jq]\n", "[packages.jq\n");
    assert_refused(&env, EVERY_READER);
    assert!(!env.root.exists(), "the root was created");
}

#[test]
fn a_value_of_the_wrong_type() {
    let env = applied(SMALL_SPEC);
    env.edit_spec("[packages.jq]\n", "[packages.jq]\npriority = \"high\"\n");
    let error = assert_refused(&env, EVERY_READER);
    insta::assert_snapshot!(error, @r#"
    error: invalid profile spec `[TMP]/dotfiles/profile.toml` at line 16, column 12: invalid type: string "high", expected i32
    hint: `declenv schema profile` prints every key and its type
    "#);
}

/// Unknown keys are warnings with their location, not errors: the command goes on.
#[test]
fn unknown_keys_warn_with_their_location() {
    let env = applied(SMALL_SPEC);
    env.edit_spec("version = 1\n", "version = 1\ncolour = \"blue\"\n");
    env.edit_spec("[packages.hello]\n", "[packages.hello]\nprio = 3\n");
    let before = env.snapshot();
    for (code, args) in [
        (0, &["plan"][..]),
        (0, &["plan", "--detailed-exitcode"]),
        (0, &["lock"]),
        (0, &["apply", "-y"]),
    ] {
        let run = env.expect(code, args);
        assert_eq!(
            env.redact(&run.stderr).lines().take(2).collect::<Vec<_>>(),
            [
                "warning: [TMP]/dotfiles/profile.toml:2:1: unknown key `colour` (ignored)",
                "warning: [TMP]/dotfiles/profile.toml:8:1: unknown key `packages.hello.prio` (ignored)",
            ],
            "declenv {args:?}"
        );
    }
    // The ignored keys change no entry: nothing to lock, nothing to apply.
    assert_unchanged(&before, &env.snapshot(), "unknown keys");
}

#[test]
fn unknown_source() {
    let env = applied(SMALL_SPEC);
    env.edit_spec(
        "attr = \"hello\"\n",
        "attr = \"hello\"\nsource = \"nixpkgs\"\n",
    );
    let error = assert_refused(&env, EVERY_READER);
    insta::assert_snapshot!(error, @r"
    error: invalid profile spec `[TMP]/dotfiles/profile.toml` at line 8, column 10: package `hello` names unknown source `nixpkgs`
    hint: declare it under `[sources.nixpkgs]`, or use one of `demo`
    ");
}

#[test]
fn a_missing_spec_points_at_init() {
    let env = applied(SMALL_SPEC);
    fs_err::remove_file(&env.spec).expect("remove the spec");
    let error = assert_refused(&env, EVERY_READER);
    insta::assert_snapshot!(error, @r"
    error: cannot read profile spec `[TMP]/dotfiles/profile.toml`
      caused by: No such file or directory (os error 2)
    hint: write one with `declenv init`, or name yours with `--file` (or `DECLENV_FILE`)
    ");
}

#[test]
fn unknown_package_by_name() {
    let env = applied(SMALL_SPEC);
    env.write_spec(&format!("{SMALL_SPEC}\n[packages.cowsey]\n"));
    let error = assert_refused(&env, EVERY_READER);
    insta::assert_snapshot!(error, @r"
    error: profile spec `[TMP]/dotfiles/profile.toml` at line 18, column 11: package `cowsey`: no package matches selector `cowsey` in `demo`
    hint: did you mean `cowsay`?
    ");
}

#[test]
fn unknown_package_by_attribute() {
    let env = applied(SMALL_SPEC);
    env.edit_spec("attr = \"which\"", "attr = \"whcih\"");
    let error = assert_refused(&env, EVERY_READER);
    insta::assert_snapshot!(error, @r"
    error: profile spec `[TMP]/dotfiles/profile.toml` at line 10, column 8: package `which`: no package matches attribute `whcih` in `demo`
    hint: `declenv search --source PATH NAME` lists what a source offers
    ");
}

#[test]
fn bad_version_constraint() {
    let env = applied(SMALL_SPEC);
    env.edit_spec("\">=1.7, <2\"", "\">=1.7 <2\"");
    let error = assert_refused(&env, EVERY_READER);
    insta::assert_snapshot!(error, @r"
    error: invalid profile spec `[TMP]/dotfiles/profile.toml` at line 16, column 11: package `jq` has a bad version constraint `>=1.7 <2`: bound `>=1.7 <2` has an invalid version: a version holds no spaces or comparison signs (separate bounds with `,`)
    hint: write bounds such as `>=2.10`, `<3`, `=2.12.1` or `>=2.10, <3`
    ");
}

#[test]
fn a_constraint_no_version_satisfies() {
    let env = applied(SMALL_SPEC);
    env.edit_spec("\">=1.7, <2\"", "\">=2\"");
    let error = assert_refused(&env, EVERY_READER);
    insta::assert_snapshot!(error, @r"
    error: profile spec `[TMP]/dotfiles/profile.toml` at line 16, column 11: package `jq`: no version of `jq` satisfies `>=2` (available: 1.7.1)
    hint: relax `version` under `[packages.jq]`, or update the source
    ");
}

/// Two packages with the same file at the same priority. `lock` does not build and may lock
/// the edit; `plan` and `apply` stop, and leave the lockfile as it was.
#[test]
fn unresolvable_collision() {
    let env = applied(SMALL_SPEC);
    env.edit_spec("attr = \"busybox\"\n", "attr = \"busybox\"\npriority = 5\n");
    let error = assert_refused(
        &env,
        &[
            (2, &["plan"]),
            (1, &["plan", "--detailed-exitcode"]),
            (2, &["plan", "--json"]),
            (2, &["apply", "-y"]),
        ],
    );
    which_collision(&error);
    assert_eq!(env.bin(), small_bin(&[]));
}

#[test]
fn lockfile_that_is_not_json() {
    let env = applied(SMALL_SPEC);
    let text = String::from_utf8(env.lock_bytes()).expect("utf-8");
    // A merge left its markers in.
    fs_err::write(
        env.lock_path(),
        text.replacen("{\n", "{\n<<<<<<< HEAD\n", 1),
    )
    .expect("write");
    let error = assert_refused(&env, EVERY_READER);
    insta::assert_snapshot!(error, @r"
    error: invalid lockfile `[TMP]/dotfiles/profile.lock` at line 2, column 1: key must be a string
    hint: delete it and run `declenv lock` to lock the spec afresh
    ");
}

#[test]
fn empty_lockfile() {
    let env = applied(SMALL_SPEC);
    fs_err::write(env.lock_path(), "\n").expect("write");
    let error = assert_refused(&env, EVERY_READER);
    insta::assert_snapshot!(error, @r"
    error: invalid lockfile `[TMP]/dotfiles/profile.lock` at line 2, column 1: EOF while parsing a value
    hint: delete it and run `declenv lock` to lock the spec afresh
    ");
}

/// A hand edit of a NAR hash: the package's content hash no longer matches its outputs.
#[test]
fn lockfile_whose_content_hash_does_not_match() {
    let env = applied(SMALL_SPEC);
    let mut lock = env.lock_json();
    let output = &mut lock["packages"]["hello"]["outputs"]["out"]["nar-hash"];
    let edited = output
        .as_str()
        .expect("nar hash")
        .replacen("sha256:", "sha256:1", 1);
    *output = Value::from(edited);
    let mut text = serde_json::to_string_pretty(&lock).expect("json");
    text.push('\n');
    fs_err::write(env.lock_path(), text).expect("write");
    let error = assert_refused(&env, EVERY_READER);
    insta::assert_snapshot!(error, @r"
    error: lockfile `[TMP]/dotfiles/profile.lock`: package `hello` has content hash `sha256:[HASH]` but its outputs hash to `sha256:[HASH]`
    hint: delete it and run `declenv lock` to lock the spec afresh
    ");
}

#[test]
fn lockfile_from_a_newer_declenv() {
    let env = applied(SMALL_SPEC);
    let text = String::from_utf8(env.lock_bytes()).expect("utf-8");
    fs_err::write(
        env.lock_path(),
        replace_once(&text, "\"version\": 1,", "\"version\": 99,"),
    )
    .expect("write");
    let error = assert_refused(&env, EVERY_READER);
    insta::assert_snapshot!(error, @r"
    error: lockfile `[TMP]/dotfiles/profile.lock` has version 99; this declenv reads version 1
    hint: upgrade declenv, or delete the lockfile to lock afresh
    ");
}

#[test]
fn spec_of_a_newer_version() {
    let env = applied(SMALL_SPEC);
    env.edit_spec("version = 1\n", "version = 2\n");
    let error = assert_refused(&env, EVERY_READER);
    insta::assert_snapshot!(error, @r"
    error: invalid profile spec `[TMP]/dotfiles/profile.toml` at line 1, column 11: this is a version 2 spec; this declenv reads version 1
    hint: upgrade declenv to read it
    ");
}

// ---------------------------------------------------------------------------------------------
// 5. Applying nothing
// ---------------------------------------------------------------------------------------------

/// `apply` with nothing to change says so and makes no generation: the disk stays as it was.
#[test]
fn apply_without_changes_reuses_the_generation() {
    let env = applied(SMALL_SPEC);
    let before = env.snapshot();
    let run = env.ok(&["apply", "-y"]);
    assert_eq!(run.stderr, "no changes, generation 1 reused\n");
    assert_unchanged(&before, &env.snapshot(), "apply without changes");

    let report = env.ok(&["apply", "-y", "--json"]).json();
    assert_eq!(report["generation"], 1);
    assert_eq!(report["reused"], true);
    assert_eq!(report["plan"]["changes"], serde_json::json!([]));
    assert_unchanged(&before, &env.snapshot(), "apply --json without changes");
    assert_eq!(env.generations(), [1]);
}
