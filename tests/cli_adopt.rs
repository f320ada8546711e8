//! Adopting and moving through the declarative cycle with the real binary: `declenv init` (a
//! template, or `--from-current` on profiles made by declenv and by the real `nix-env`),
//! `declenv diff` between generations made by applies of different specs, and
//! `--restore-spec` on `rollback` and `generations switch`.
//!
//! Every test works on copies of the demo channel and of its specs in a temporary directory: a
//! stale lockfile beside a spec is rewritten, so nothing under `examples/` is used in place.
//!
//! `tests/fixtures/adopt/nix-env-manifest.nix` is the `manifest.nix` the real `nix-env` 2.8
//! wrote for the session in [`NIX_SESSION`], store paths written as `@STORE@/@HASH@-NAME`. The
//! plain test run rebuilds that profile from the fixture (the same trees added to our store give
//! the same paths); `DECLENV_TEST_NIX=1 cargo test --test cli_adopt -- live` runs the session
//! with the real `nix-env` in the test's root, checks the manifest it writes against the fixture
//! (`DECLENV_RECORD_FIXTURES=1` rewrites the fixture instead) and adopts that profile.

mod support;

use declenv::model::lockfile;
use declenv::model::spec::{self, PackageSpec};
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DEMO_CHANNEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/channel");
const NIX_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/adopt/nix-env-manifest.nix"
);

/// A temporary directory with a declenv root, a home and room for specs and channels.
struct Sandbox {
    _directory: tempfile::TempDir,
    /// The working directory of every command.
    dir: PathBuf,
    root: PathBuf,
    home: PathBuf,
}

fn sandbox() -> Sandbox {
    let directory = tempfile::tempdir().expect("tempdir");
    // Nix refuses a store directory behind a symlink; keep every path canonical.
    let dir = fs_err::canonicalize(directory.path()).expect("canonical tempdir");
    let root = dir.join("root");
    fs_err::create_dir_all(root.join("nix/store")).expect("mkdir store");
    fs_err::create_dir_all(root.join("nix/var/nix/profiles")).expect("mkdir profiles");
    let home = dir.join("home");
    fs_err::create_dir_all(&home).expect("mkdir home");
    Sandbox {
        _directory: directory,
        dir,
        root,
        home,
    }
}

impl Sandbox {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_declenv"));
        command
            .args(args)
            .current_dir(&self.dir)
            .env("DECLENV_ROOT", &self.root)
            .env("HOME", &self.home)
            .env("NO_COLOR", "1")
            .env("TZ", "UTC")
            .env_remove("DECLENV_FILE")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME");
        command
    }

    /// Runs declenv with `args`.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("declenv runs")
    }

    /// Runs declenv on the spec at `spec`.
    fn on(&self, spec: &Path, args: &[&str]) -> Output {
        let mut all = vec!["--file", spec.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// A fresh copy of the demo channel at `DIR/NAME`.
    fn demo_channel(&self, name: &str) -> PathBuf {
        let target = self.dir.join(name);
        support::copy_tree(Path::new(DEMO_CHANNEL), &target);
        target
    }

    /// Writes a spec (creating its directory) and returns its path.
    fn write_spec(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.dir.join(relative);
        fs_err::create_dir_all(path.parent().expect("parent")).expect("mkdir spec dir");
        fs_err::write(&path, text).expect("write spec");
        path
    }

    fn profile(&self) -> PathBuf {
        self.root.join("nix/var/nix/profiles/default")
    }

    fn current_link(&self) -> String {
        fs_err::read_link(self.profile())
            .expect("profile link")
            .display()
            .to_string()
    }

    /// `declenv apply --yes` on `spec`, which must succeed.
    fn apply(&self, spec: &Path) {
        let output = self.on(spec, &["apply", "--yes"]);
        assert!(output.status.success(), "apply: {}", stderr(&output));
    }

    /// `declenv plan --detailed-exitcode`: its exit status and stdout.
    fn plan_status(&self, spec: &Path, extra: &[&str]) -> (Option<i32>, String) {
        let mut args = vec!["plan", "--detailed-exitcode"];
        args.extend_from_slice(extra);
        let output = self.on(spec, &args);
        (output.status.code(), stdout(&output))
    }

    /// `declenv plan --json`, decoded.
    fn plan_json(&self, spec: &Path) -> Value {
        let output = self.on(spec, &["plan", "--json"]);
        assert!(output.status.success(), "plan: {}", stderr(&output));
        let document = serde_json::from_slice(&output.stdout).expect("plan JSON");
        support::assert_schema_valid(&document);
        document
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write_executable(path: &Path, text: &str) {
    fs_err::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs_err::write(path, text).expect("write");
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The packages of a spec file, by id, as written.
fn spec_packages(path: &Path) -> BTreeMap<String, PackageSpec> {
    let text = fs_err::read_to_string(path).expect("spec readable");
    let parsed = spec::parse(&text, path).unwrap_or_else(|error| panic!("{error}\n{text}"));
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    parsed.document.packages.into_iter().collect()
}

fn by_attr(attr: &str) -> PackageSpec {
    PackageSpec {
        attr: Some(attr.to_owned()),
        source: Some("demo".to_owned()),
        ..PackageSpec::default()
    }
}

// ---------------------------------------------------------------------------------------------
// init: the template

#[test]
fn init_writes_a_template_that_parses_and_plans_nothing() {
    let sandbox = sandbox();
    let channel = sandbox.demo_channel("channel");
    let spec_path = sandbox.dir.join("dotfiles/profile.toml");
    let source = format!("demo={}", channel.display());
    let output = sandbox.on(&spec_path, &["init", "--source", &source]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("wrote `{}`", spec_path.display())),
        "{}",
        stderr(&output)
    );

    let text = fs_err::read_to_string(&spec_path).expect("spec written");
    // The `#:schema` line names a schema file that exists and is what `declenv schema` prints.
    let schema_line = text.lines().next().expect("first line");
    let schema_path = schema_line
        .strip_prefix("#:schema ")
        .unwrap_or_else(|| panic!("no schema line: {text}"));
    let schema = sandbox.run(&["schema", "profile"]);
    assert!(schema.status.success(), "{}", stderr(&schema));
    assert_eq!(
        fs_err::read_to_string(schema_path).expect("schema file"),
        stdout(&schema)
    );
    let parsed = spec::parse(&text, &spec_path).expect("the template parses");
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    assert!(parsed.spec.packages.is_empty());
    assert_eq!(parsed.spec.sources.len(), 1);
    assert_eq!(parsed.spec.sources[0].id, "demo");
    assert_eq!(parsed.spec.sources[0].kind, spec::SourceKind::Channel);
    assert_eq!(parsed.spec.sources[0].path, channel);
    // The example entries are comments.
    assert!(text.contains("# [packages.hello]"), "{text}");
    assert!(
        !spec_path.with_extension("lock").exists(),
        "a template is not locked by init"
    );

    let (status, plan) = sandbox.plan_status(&spec_path, &[]);
    assert_eq!(status, Some(0), "{plan}");
    assert!(plan.contains("0 packages, no generation yet"), "{plan}");
    let json = sandbox.plan_json(&spec_path);
    assert_eq!(json["changes"], serde_json::json!([]));
    assert_eq!(json["summary"]["unchanged"], 0);
    assert_eq!(json["generation"], Value::Null);
    // Planning made no generation.
    assert!(fs_err::symlink_metadata(sandbox.profile()).is_err());
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let sandbox = sandbox();
    let mine = "version = 1\n# my own spec, hand written\n";
    let spec_path = sandbox.write_spec("dotfiles/profile.toml", mine);
    for args in [&["init"][..], &["init", "--from-current"][..]] {
        let output = sandbox.on(&spec_path, args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let message = stderr(&output);
        assert!(
            message.contains(&format!("`{}` already exists", spec_path.display())),
            "{message}"
        );
        assert!(message.contains("hint: pass `--force`"), "{message}");
        assert_eq!(fs_err::read_to_string(&spec_path).expect("spec"), mine);
        assert!(!spec_path.with_extension("lock").exists());
    }

    let output = sandbox.on(&spec_path, &["init", "--force"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = fs_err::read_to_string(&spec_path).expect("spec");
    assert!(text.starts_with("#:schema "), "{text}");
    spec::parse(&text, &spec_path).expect("parses");
}

#[test]
fn init_reads_relative_sources_from_the_working_directory() {
    let sandbox = sandbox();
    sandbox.demo_channel("channel");
    sandbox.demo_channel("dotfiles/channel");
    // The spec lives elsewhere than the working directory: `--source` paths are the user's,
    // relative to the working directory, wherever the spec is.
    let spec_path = sandbox.dir.join("dotfiles/profile.toml");
    let output = sandbox.on(
        &spec_path,
        &[
            "init",
            "--source",
            "outside=channel",
            "--source",
            "inside=dotfiles/channel",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = fs_err::read_to_string(&spec_path).expect("spec");
    let parsed = spec::parse(&text, &spec_path).expect("parses");
    let sources: Vec<(&str, PathBuf)> = parsed
        .spec
        .sources
        .iter()
        .map(|source| {
            (
                source.id.as_str(),
                fs_err::canonicalize(&source.path).expect("the source exists"),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("outside", sandbox.dir.join("channel")),
            ("inside", sandbox.dir.join("dotfiles/channel")),
        ]
    );
    // A source under the spec's directory stays relative, so the dotfiles move with it.
    assert!(text.contains("channel = \"channel\""), "{text}");
    let (status, plan) = sandbox.plan_status(&spec_path, &[]);
    assert_eq!(status, Some(0), "{plan}");

    // A source that does not exist is refused, and nothing is written.
    let other = sandbox.dir.join("other/profile.toml");
    let output = sandbox.on(&other, &["init", "--source", "demo=no-such-channel"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no-such-channel` does not exist"),
        "{}",
        stderr(&output)
    );
    assert!(!other.exists());
}

// ---------------------------------------------------------------------------------------------
// init --from-current on a profile declenv built

#[test]
fn init_from_current_declares_a_declenv_profile_with_its_flags() {
    let sandbox = sandbox();
    let channel = sandbox.demo_channel("channel");
    let applied = sandbox.write_spec(
        "applied/profile.toml",
        r#"version = 1
[sources.demo]
channel = "../channel"
[packages.greeting]
attr = "hello"
priority = 3
[packages.jq]
name = "jq"
outputs = ["out", "man", "doc"]
keep = true
[packages.motd]
attr = "demo-motd"
active = false
[packages.which]
attr = "which"
[packages.busybox]
attr = "busybox"
[packages.cowsay]
attr = "cowsay"
priority = 12
"#,
    );
    sandbox.apply(&applied);
    assert_eq!(sandbox.current_link(), "default-1-link");

    let adopted = sandbox.dir.join("adopted/profile.toml");
    let source = format!("demo={}", channel.display());
    let output = sandbox.on(&adopted, &["init", "--from-current", "--source", &source]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
    let text = fs_err::read_to_string(&adopted).expect("spec written");
    assert!(text.contains("from generation 1 of the profile"), "{text}");

    // Ids come from the generation's record, selections by attribute path in the source,
    // flags and extra outputs where they differ from the package's own.
    let expected: BTreeMap<String, PackageSpec> = [
        (
            "greeting",
            PackageSpec {
                priority: Some(3),
                ..by_attr("hello")
            },
        ),
        (
            "jq",
            PackageSpec {
                outputs: Some(vec!["doc".to_owned(), "man".to_owned(), "out".to_owned()]),
                keep: Some(true),
                ..by_attr("jq")
            },
        ),
        (
            "motd",
            PackageSpec {
                active: Some(false),
                ..by_attr("demo-motd")
            },
        ),
        ("which", by_attr("which")),
        // busybox's priority 15 is its own meta's: not repeated.
        ("busybox", by_attr("busybox")),
        (
            "cowsay",
            PackageSpec {
                priority: Some(12),
                ..by_attr("cowsay")
            },
        ),
    ]
    .into_iter()
    .map(|(id, package)| (id.to_owned(), package))
    .collect();
    assert_eq!(spec_packages(&adopted), expected, "{text}");

    // The lockfile was written with it, locks the same packages, and needs no change.
    let lock_path = adopted.with_extension("lock");
    let lock_text = fs_err::read_to_string(&lock_path).expect("lockfile written");
    let locked = lockfile::parse(&lock_text, &lock_path).expect("lockfile parses");
    let names: BTreeMap<&str, &str> = locked
        .packages
        .iter()
        .map(|(id, package)| (id.as_str(), package.name.as_str()))
        .collect();
    assert_eq!(
        names,
        BTreeMap::from([
            ("busybox", "busybox-1.36.1"),
            ("cowsay", "cowsay-3.7.0"),
            ("greeting", "hello-2.12.1"),
            ("jq", "jq-1.7.1"),
            ("motd", "demo-motd"),
            ("which", "which-2.21"),
        ])
    );

    let (status, plan) = sandbox.plan_status(&adopted, &[]);
    assert_eq!(status, Some(0), "{plan}");
    assert!(plan.contains("6 packages, generation 1"), "{plan}");
    let (status, plan) = sandbox.plan_status(&adopted, &["--locked"]);
    assert_eq!(status, Some(0), "{plan}");
    assert_eq!(
        fs_err::read_to_string(&lock_path).expect("lockfile"),
        lock_text,
        "planning left the lockfile as init wrote it"
    );
    let output = sandbox.on(&adopted, &["apply"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(sandbox.current_link(), "default-1-link", "nothing to apply");

    // Without a source, every element is declared by store path, flags kept.
    let by_path = sandbox.dir.join("by-path/profile.toml");
    let output = sandbox.on(&by_path, &["init", "--from-current"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let packages = spec_packages(&by_path);
    assert_eq!(
        packages.keys().collect::<Vec<_>>(),
        ["busybox", "cowsay", "greeting", "jq", "motd", "which"]
    );
    let store = sandbox.root.join("nix/store");
    for (id, package) in &packages {
        let path = package.store_path.as_deref().unwrap_or_default();
        assert!(
            Path::new(path).starts_with(&store) && Path::new(path).exists(),
            "{id}: {package:?}"
        );
        assert_eq!((&package.attr, &package.source), (&None, &None), "{id}");
    }
    assert_eq!(packages["greeting"].priority, Some(3));
    assert_eq!(packages["busybox"].priority, Some(15));
    assert_eq!(packages["motd"].active, Some(false));
    assert_eq!(packages["jq"].keep, Some(true));
    // A store path installs its `out` only: jq's `man` and `doc` cannot be declared that way.
    // init says so, and the plan shows exactly that change.
    let message = stderr(&output);
    assert!(
        message.contains("warning: the spec does not declare generation 1 exactly"),
        "{message}"
    );
    assert!(
        message.contains("  ~ jq-1.7.1 (jq): same version, other content"),
        "{message}"
    );
    let json = sandbox.plan_json(&by_path);
    let changes = json["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1, "{json:#}");
    assert_eq!(
        (&changes[0]["kind"], &changes[0]["id"]),
        (&Value::from("rebuild"), &Value::from("jq"))
    );
    let outputs = |side: &str| -> Vec<String> {
        changes[0][side]["outputs"]
            .as_object()
            .expect("outputs")
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(outputs("from"), ["doc", "man", "out"]);
    assert_eq!(outputs("to"), ["out"]);
    assert_eq!(json["summary"]["unchanged"], 5);
}

// ---------------------------------------------------------------------------------------------
// init --from-current on a profile nix-env made

/// The packages of the `nix-env` session: attribute, full name, outputs (the first is `out`),
/// and the Nix text of their meta.
const NIX_PACKAGES: &[(&str, &str, &[&str], &str)] = &[
    (
        "hello",
        "hello-2.12.1",
        &["out"],
        r#"{ description = "A program that produces a familiar, friendly greeting"; }"#,
    ),
    ("which", "which-2.21", &["out"], "{ }"),
    ("busybox", "busybox-1.36.1", &["out"], "{ priority = 15; }"),
    (
        "jq",
        "jq-1.7.1",
        &["out", "man"],
        r#"{ outputsToInstall = [ "out" "man" ]; }"#,
    ),
    ("motd", "demo-motd", &["out"], "{ }"),
    ("cowsay", "cowsay-3.7.0", &["out"], "{ }"),
];

/// What `nix-env -p PROFILE` runs, in order: `-f pkgs.nix -iA …` for [`NIX_PACKAGES`], then
/// two store paths by path (`@name@` stands for the store path of that tree), then flags.
const NIX_SESSION: &[&[&str]] = &[
    &[
        "-f",
        "@pkgs.nix@",
        "-iA",
        "hello",
        "which",
        "busybox",
        "jq",
        "motd",
        "cowsay",
    ],
    &["-i", "@fortune-mod-3.20.0@", "@extra-tool-1.0@"],
    &["--set-flag", "priority", "3", "hello"],
    &["--set-flag", "keep", "true", "cowsay"],
    &["--set-flag", "active", "false", "demo-motd"],
];

/// The generation the session leaves current.
const NIX_GENERATION: u32 = 5;

/// The trees the session installs, named as their store paths, under `DIR/trees`.
fn nix_trees(sandbox: &Sandbox) -> Vec<PathBuf> {
    let trees = sandbox.dir.join("trees");
    let channel = Path::new(DEMO_CHANNEL);
    let mut paths = Vec::new();
    for name in [
        "hello-2.12.1",
        "which-2.21",
        "busybox-1.36.1",
        "demo-motd",
        "cowsay-3.7.0",
        "fortune-mod-3.20.0",
    ] {
        support::copy_tree(&channel.join(name), &trees.join(name));
        paths.push(trees.join(name));
    }
    for (output, name) in [("out", "jq-1.7.1"), ("man", "jq-1.7.1-man")] {
        support::copy_tree(&channel.join("jq-1.7.1").join(output), &trees.join(name));
        paths.push(trees.join(name));
    }
    // A package no source offers: adopted by store path.
    write_executable(
        &trees.join("extra-tool-1.0/bin/extra-tool"),
        "#!/bin/sh\necho extra\n",
    );
    paths.push(trees.join("extra-tool-1.0"));
    paths
}

/// Store path by name (`hello-2.12.1`, `jq-1.7.1-man`) from `store add` output lines.
fn paths_by_name(listing: &str) -> BTreeMap<String, String> {
    listing
        .lines()
        .map(|line| {
            let base = line.rsplit('/').next().expect("base name");
            let (_, name) = base.split_once('-').expect("hash-name");
            (name.to_owned(), line.to_owned())
        })
        .collect()
}

/// Turns the store paths of a manifest into `@STORE@/@HASH@-NAME`.
fn normalise_manifest(text: &str, store_dir: &Path) -> String {
    let prefix = format!("{}/", store_dir.display());
    let mut result = String::new();
    let mut rest = text;
    while let Some(position) = rest.find(&prefix) {
        result.push_str(&rest[..position]);
        let after = &rest[position + prefix.len()..];
        assert_eq!(after.as_bytes().get(32), Some(&b'-'), "{after}");
        result.push_str("@STORE@/@HASH@-");
        rest = &after[33..];
    }
    result.push_str(rest);
    result
}

/// The inverse of [`normalise_manifest`], with the store paths in `paths`.
fn denormalise_manifest(text: &str, paths: &BTreeMap<String, String>) -> String {
    let marker = "@STORE@/@HASH@-";
    let mut result = String::new();
    let mut rest = text;
    while let Some(position) = rest.find(marker) {
        result.push_str(&rest[..position]);
        let after = &rest[position + marker.len()..];
        let end = after.find('"').expect("a store path ends with a quote");
        let name = &after[..end];
        result.push_str(
            paths
                .get(name)
                .unwrap_or_else(|| panic!("no tree for `{name}`")),
        );
        rest = &after[end..];
    }
    result.push_str(rest);
    result
}

/// The spec `init --from-current` should write for the session's profile.
fn expected_nix_adoption(extra_tool: &str) -> BTreeMap<String, PackageSpec> {
    [
        ("which", by_attr("which")),
        (
            "hello",
            PackageSpec {
                priority: Some(3),
                ..by_attr("hello")
            },
        ),
        // Its own meta's priority (15), as the channel has it: not repeated.
        ("busybox", by_attr("busybox")),
        // `out` and `man`: the channel's `outputsToInstall`, so not spelled out.
        ("jq", by_attr("jq")),
        (
            "demo-motd",
            PackageSpec {
                active: Some(false),
                ..by_attr("demo-motd")
            },
        ),
        (
            "cowsay",
            PackageSpec {
                keep: Some(true),
                ..by_attr("cowsay")
            },
        ),
        // Installed by store path, but the channel offers the same full name.
        ("fortune-mod", by_attr("fortune-mod")),
        (
            "extra-tool",
            PackageSpec {
                store_path: Some(extra_tool.to_owned()),
                ..PackageSpec::default()
            },
        ),
    ]
    .into_iter()
    .map(|(id, package)| (id.to_owned(), package))
    .collect()
}

/// `init --from-current` on the profile the session made; the spec must plan no change.
fn adopt_nix_profile(sandbox: &Sandbox, paths: &BTreeMap<String, String>) {
    let channel = sandbox.demo_channel("channel");
    let spec_path = sandbox.dir.join("dotfiles/profile.toml");
    let source = format!("demo={}", channel.display());
    let output = sandbox.on(&spec_path, &["init", "--from-current", "--source", &source]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
    let text = fs_err::read_to_string(&spec_path).expect("spec written");
    assert!(
        text.contains(&format!("from generation {NIX_GENERATION} of the profile")),
        "{text}"
    );
    assert_eq!(
        spec_packages(&spec_path),
        expected_nix_adoption(&paths["extra-tool-1.0"]),
        "{text}"
    );

    let (status, plan) = sandbox.plan_status(&spec_path, &["--locked"]);
    assert_eq!(status, Some(0), "{plan}");
    let json = sandbox.plan_json(&spec_path);
    assert_eq!(json["changes"], serde_json::json!([]), "{json:#}");
    assert_eq!(json["summary"]["unchanged"], 8, "{json:#}");
    assert_eq!(json["generation"], NIX_GENERATION);

    // From here on the profile is declenv's: a change is one new generation that keeps every
    // adopted package and flag.
    fs_err::write(
        &spec_path,
        format!("{text}\n[packages.six]\nattr = \"python312Packages.six\"\n"),
    )
    .expect("edit spec");
    let json = sandbox.plan_json(&spec_path);
    assert_eq!(json["summary"]["add"], 1, "{json:#}");
    assert_eq!(json["summary"]["unchanged"], 8, "{json:#}");
    sandbox.apply(&spec_path);
    assert_eq!(
        sandbox.current_link(),
        format!("default-{}-link", NIX_GENERATION + 1)
    );
    let (status, plan) = sandbox.plan_status(&spec_path, &[]);
    assert_eq!(status, Some(0), "{plan}");
    let profile = sandbox.profile();
    assert!(profile.join("bin/hello").exists());
    assert!(profile.join("share/man/man1/jq.1").exists());
    assert!(profile.join("bin/extra-tool").exists());
    assert!(!profile.join("bin/demo-motd").exists(), "still inactive");
    assert!(
        fs_err::read_link(profile.join("bin/which"))
            .expect("bin/which")
            .starts_with(&paths["which-2.21"]),
        "which still wins over busybox"
    );
}

/// The profile of the `nix-env` session, rebuilt from the fixture with `edit` applied to the
/// manifest's text; returns the store paths by name.
fn nix_fixture_profile(
    sandbox: &Sandbox,
    edit: &dyn Fn(String) -> String,
) -> BTreeMap<String, String> {
    let trees = nix_trees(sandbox);
    let mut args = vec!["store".to_owned(), "add".to_owned()];
    args.extend(trees.iter().map(|tree| tree.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = sandbox.run(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    let paths = paths_by_name(&stdout(&output));

    // The environment nix-env built: its manifest and nothing else matters to `init`.
    let fixture = fs_err::read_to_string(NIX_FIXTURE).expect("fixture");
    let environment = sandbox
        .root
        .join("nix/store/0c9b6rw4gqaz4kv8x7cpmbyh3jm0yd7q-user-environment");
    fs_err::create_dir_all(&environment).expect("mkdir environment");
    fs_err::write(
        environment.join("manifest.nix"),
        edit(denormalise_manifest(&fixture, &paths)),
    )
    .expect("manifest");
    let profiles = sandbox.root.join("nix/var/nix/profiles");
    symlink(
        &environment,
        profiles.join(format!("default-{NIX_GENERATION}-link")),
    )
    .expect("generation link");
    symlink(
        format!("default-{NIX_GENERATION}-link"),
        profiles.join("default"),
    )
    .expect("profile link");
    paths
}

#[test]
fn init_from_current_adopts_a_profile_nix_env_made() {
    let sandbox = sandbox();
    let paths = nix_fixture_profile(&sandbox, &|text| text);
    adopt_nix_profile(&sandbox, &paths);

    // Nix keeps its database under the root, so the store is shared with it: `declenv gc`
    // must leave what Nix made (here the environment of nix-env's generation, which declenv
    // never registered) and still clean declenv's own leftovers.
    fs_err::create_dir_all(sandbox.root.join("nix/var/nix/db")).expect("mkdir db");
    let nix_environment = fs_err::canonicalize(sandbox.root.join(format!(
        "nix/var/nix/profiles/default-{NIX_GENERATION}-link"
    )))
    .expect("nix-env's environment");
    let leftover = sandbox.root.join("nix/store/.declenv-add-interrupted");
    fs_err::create_dir_all(&leftover).expect("mkdir leftover");
    let long_ago = filetime::FileTime::from_unix_time(1_700_000_000, 0);
    for path in [&nix_environment, &leftover] {
        filetime::set_file_mtime(path, long_ago).expect("age");
    }
    let output = sandbox.run(&["gc"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        nix_environment.join("manifest.nix").exists(),
        "gc removed nix-env's generation"
    );
    assert!(!leftover.exists(), "gc kept its own leftover");
    assert!(sandbox.profile().join("bin/hello").exists());
}

#[test]
fn init_from_current_names_what_it_cannot_declare() {
    // busybox installed without its meta (as `nix-env -i STORE-PATH` does): the channel's
    // priority 15 cannot be unset by a spec, so applying would add it. init says so, and the
    // plan shows exactly that.
    let sandbox = sandbox();
    let without_priority = |text: String| {
        assert_eq!(text.matches("meta = { priority = 15; };").count(), 1);
        text.replace("meta = { priority = 15; };", "meta = { };")
    };
    nix_fixture_profile(&sandbox, &without_priority);
    let channel = sandbox.demo_channel("channel");
    let spec_path = sandbox.dir.join("dotfiles/profile.toml");
    let source = format!("demo={}", channel.display());
    let output = sandbox.on(&spec_path, &["init", "--from-current", "--source", &source]);
    assert!(output.status.success(), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "warning: the spec does not declare generation {NIX_GENERATION} exactly"
        )),
        "{message}"
    );
    assert!(
        message.contains("  ~ busybox-1.36.1 (busybox) priority unset → 15"),
        "{message}"
    );
    assert_eq!(spec_packages(&spec_path)["busybox"], by_attr("busybox"));
    let json = sandbox.plan_json(&spec_path);
    assert_eq!(
        json["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .map(|change| (
                change["kind"].clone(),
                change["id"].clone(),
                change["flags"].clone()
            ))
            .collect::<Vec<_>>(),
        [(
            Value::from("flags"),
            Value::from("busybox"),
            serde_json::json!([{"flag": "priority", "from": null, "to": "15"}])
        )],
        "{json:#}"
    );
    assert_eq!(json["summary"]["unchanged"], 7);
}

#[test]
fn live_init_from_current_adopts_a_profile_nix_env_made() {
    if std::env::var_os("DECLENV_TEST_NIX").is_none() {
        return;
    }
    let sandbox = sandbox();
    let trees = nix_trees(&sandbox);
    let store_dir = sandbox.root.join("nix/store");
    let nix_home = sandbox.dir.join("nix-home");
    fs_err::create_dir_all(nix_home.join("etc")).expect("mkdir nix conf");
    let nix = |program: &str, args: &[String]| {
        let output = Command::new(program)
            .args(args)
            .current_dir(&sandbox.dir)
            .env("HOME", &nix_home)
            .env("NIX_STORE_DIR", &store_dir)
            .env("NIX_STATE_DIR", sandbox.root.join("nix/var/nix"))
            .env("NIX_LOG_DIR", sandbox.root.join("nix/var/log/nix"))
            .env("NIX_CONF_DIR", nix_home.join("etc"))
            .env("NIX_REMOTE", "local")
            .env(
                "NIX_CONFIG",
                "sandbox = false\nsubstituters =\nbuild-users-group =",
            )
            .env("TZ", "UTC")
            .output()
            .unwrap_or_else(|error| panic!("{program} runs (apt-get install -y nix-bin): {error}"));
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            stderr(&output)
        );
        stdout(&output)
    };
    let tree_args: Vec<String> = trees
        .iter()
        .map(|tree| tree.display().to_string())
        .collect();
    let paths = paths_by_name(&nix(
        "nix-store",
        &[&["--add".to_owned()][..], &tree_args].concat(),
    ));

    // Derivation-shaped values whose outputs are the trees just added: nix-env installs them
    // with their meta, as it would packages from nixpkgs. The system is fixed so that the
    // manifest (and the fixture) does not depend on the host.
    let mut expression = String::from(
        "let\n  mk = name: outputs: paths: meta:\n    let self = { type = \"derivation\"; inherit name outputs meta; system = \"x86_64-linux\"; outPath = self.out.outPath; outputName = \"out\"; }\n      // builtins.listToAttrs (map (output: { name = output; value = self // { outPath = builtins.storePath paths.${output}; outputName = output; }; }) outputs);\n    in self;\nin {\n",
    );
    for (attr, name, outputs, meta) in NIX_PACKAGES {
        let list: Vec<String> = outputs
            .iter()
            .map(|output| format!("\"{output}\""))
            .collect();
        let bindings: Vec<String> = outputs
            .iter()
            .map(|output| {
                let tree = if *output == "out" {
                    (*name).to_owned()
                } else {
                    format!("{name}-{output}")
                };
                format!("{output} = \"{}\";", paths[&tree])
            })
            .collect();
        expression.push_str(&format!(
            "  {attr} = mk \"{name}\" [ {} ] {{ {} }} {meta};\n",
            list.join(" "),
            bindings.join(" ")
        ));
    }
    expression.push_str("}\n");
    let nix_file = sandbox.dir.join("pkgs.nix");
    fs_err::write(&nix_file, expression).expect("write pkgs.nix");

    let profile = sandbox.profile();
    for step in NIX_SESSION {
        let mut args = vec!["-p".to_owned(), profile.display().to_string()];
        for arg in *step {
            args.push(
                match arg.strip_prefix('@').and_then(|arg| arg.strip_suffix('@')) {
                    Some("pkgs.nix") => nix_file.display().to_string(),
                    Some(name) => paths[name].clone(),
                    None => (*arg).to_owned(),
                },
            );
        }
        nix("nix-env", &args);
    }
    assert_eq!(
        sandbox.current_link(),
        format!("default-{NIX_GENERATION}-link")
    );

    // The fixture the plain test run adopts is what nix-env writes.
    let manifest = fs_err::read_to_string(profile.join("manifest.nix")).expect("manifest");
    let normalised = normalise_manifest(&manifest, &store_dir);
    if std::env::var_os("DECLENV_RECORD_FIXTURES").is_some() {
        fs_err::create_dir_all(Path::new(NIX_FIXTURE).parent().expect("parent")).expect("mkdir");
        fs_err::write(NIX_FIXTURE, &normalised).expect("record fixture");
    }
    assert_eq!(
        normalised,
        fs_err::read_to_string(NIX_FIXTURE).expect("fixture"),
        "nix-env wrote another manifest than {NIX_FIXTURE}; DECLENV_RECORD_FIXTURES=1 rewrites it"
    );

    adopt_nix_profile(&sandbox, &paths);

    // nix-env reads the generation declenv made on top of its own.
    let query = nix(
        "nix-env",
        &[
            "-p".to_owned(),
            profile.display().to_string(),
            "-q".to_owned(),
        ],
    );
    assert_eq!(
        query,
        "busybox-1.36.1\ncowsay-3.7.0\ndemo-motd\nextra-tool-1.0\nfortune-mod-3.20.0\nhello-2.12.1\njq-1.7.1\npython3.12-six-1.16.0\nwhich-2.21\n"
    );

    // `declenv gc` in the store it shares with Nix keeps every generation nix-env made, and
    // nix-env can go back to them.
    let output = sandbox.run(&["gc"]);
    assert!(output.status.success(), "{}", stderr(&output));
    for number in 1..=NIX_GENERATION {
        let link = sandbox
            .root
            .join(format!("nix/var/nix/profiles/default-{number}-link"));
        assert!(
            fs_err::canonicalize(&link).is_ok_and(|target| target.join("manifest.nix").exists()),
            "generation {number} lost its environment"
        );
    }
    nix(
        "nix-env",
        &[
            "-p".to_owned(),
            profile.display().to_string(),
            "--rollback".to_owned(),
        ],
    );
    let query = nix(
        "nix-env",
        &[
            "-p".to_owned(),
            profile.display().to_string(),
            "-q".to_owned(),
        ],
    );
    assert_eq!(
        query,
        "busybox-1.36.1\ncowsay-3.7.0\ndemo-motd\nextra-tool-1.0\nfortune-mod-3.20.0\nhello-2.12.1\njq-1.7.1\nwhich-2.21\n"
    );
    assert!(profile.join("bin/hello").exists());
    assert!(profile.join("share/man/man1/jq.1").exists());
}

// ---------------------------------------------------------------------------------------------
// diff

/// Writes a channel of small packages: (directory `NAME-VERSION`, attribute, file content).
fn write_channel(directory: &Path, packages: &[(&str, &str, &str)]) {
    let mut toml = String::from("format = 1\n");
    for (package, attr, content) in packages {
        let name = declenv::version::DrvName::parse(package).name;
        write_executable(
            &directory.join(package).join("bin").join(&name),
            &format!("#!/bin/sh\necho {content}\n"),
        );
        toml.push_str(&format!("[packages.\"{package}\"]\nattr = \"{attr}\"\n"));
    }
    fs_err::write(directory.join("channel.toml"), toml).expect("channel.toml");
}

/// Two channels and two specs whose applies differ by one change of every kind.
fn diff_setup(sandbox: &Sandbox) -> (PathBuf, PathBuf) {
    write_channel(
        &sandbox.dir.join("chan1"),
        &[
            ("hello-2.10", "hello", "hello"),
            ("tool-1.0", "tool", "tool"),
            ("gone-1.0", "gone", "gone"),
            ("flagged-1.0", "flagged", "flagged"),
            ("newer-3.0", "newer", "newer"),
            ("vim-9.0", "vim", "vim"),
            ("rebuilt-1.0", "rebuilt", "first build"),
        ],
    );
    write_channel(
        &sandbox.dir.join("chan2"),
        &[
            ("hello-2.12", "hello", "hello"),
            ("tool-1.0", "tool", "tool"),
            ("flagged-1.0", "flagged", "flagged"),
            ("newer-2.0", "newer", "newer"),
            ("neovim-0.9", "neovim", "neovim"),
            ("rebuilt-1.0", "rebuilt", "second build"),
            ("added-1.0", "added", "added"),
        ],
    );
    let first = sandbox.write_spec(
        "a/profile.toml",
        "version = 1\n[sources.demo]\nchannel = \"../chan1\"\n\
         [packages.hello]\nattr = \"hello\"\n[packages.tool]\nattr = \"tool\"\n\
         [packages.gone]\nattr = \"gone\"\n[packages.flagged]\nattr = \"flagged\"\n\
         [packages.newer]\nattr = \"newer\"\n[packages.editor]\nattr = \"vim\"\n\
         [packages.rebuilt]\nattr = \"rebuilt\"\n",
    );
    let second = sandbox.write_spec(
        "b/profile.toml",
        "version = 1\n[sources.demo]\nchannel = \"../chan2\"\n\
         [packages.hello]\nattr = \"hello\"\n[packages.tool]\nattr = \"tool\"\n\
         [packages.flagged]\nattr = \"flagged\"\npriority = 7\n\
         [packages.newer]\nattr = \"newer\"\n[packages.editor]\nattr = \"neovim\"\n\
         [packages.rebuilt]\nattr = \"rebuilt\"\n[packages.added]\nattr = \"added\"\n",
    );
    (first, second)
}

/// `declenv diff ARGS --json`, decoded.
fn diff_json(sandbox: &Sandbox, args: &[&str]) -> Value {
    let mut all = vec!["diff", "--json"];
    all.extend_from_slice(args);
    let output = sandbox.run(&all);
    assert!(
        output.status.success(),
        "diff {args:?}: {}",
        stderr(&output)
    );
    let document = serde_json::from_slice(&output.stdout).expect("diff JSON");
    support::assert_schema_valid(&document);
    document
}

/// (kind, id, from name, to name) of every change.
fn change_rows(json: &Value) -> Vec<(String, String, String, String)> {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    json["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|change| {
            (
                text(&change["kind"]),
                text(&change["id"]),
                text(&change["from"]["name"]),
                text(&change["to"]["name"]),
            )
        })
        .collect()
}

fn rows(expected: &[(&str, &str, &str, &str)]) -> Vec<(String, String, String, String)> {
    expected
        .iter()
        .map(|(kind, id, from, to)| {
            (
                (*kind).to_owned(),
                (*id).to_owned(),
                (*from).to_owned(),
                (*to).to_owned(),
            )
        })
        .collect()
}

#[test]
fn diff_names_every_kind_of_change_between_generations() {
    let sandbox = sandbox();
    let (first, second) = diff_setup(&sandbox);
    sandbox.apply(&first);
    sandbox.apply(&second);
    assert_eq!(sandbox.current_link(), "default-2-link");

    let forward = diff_json(&sandbox, &[]);
    assert_eq!(forward["schema"]["version"], 1);
    assert_eq!(
        (forward["from"].clone(), forward["to"].clone()),
        (1.into(), 2.into())
    );
    assert_eq!(
        forward["profile"],
        sandbox.profile().display().to_string().as_str()
    );
    assert_eq!(
        change_rows(&forward),
        rows(&[
            ("add", "added", "", "added-1.0"),
            ("remove", "gone", "gone-1.0", ""),
            ("upgrade", "hello", "hello-2.10", "hello-2.12"),
            ("downgrade", "newer", "newer-3.0", "newer-2.0"),
            ("replace", "editor", "vim-9.0", "neovim-0.9"),
            ("rebuild", "rebuilt", "rebuilt-1.0", "rebuilt-1.0"),
            ("flags", "flagged", "flagged-1.0", "flagged-1.0"),
        ])
    );
    assert_eq!(
        forward["summary"],
        serde_json::json!({
            "add": 1, "remove": 1, "upgrade": 1, "downgrade": 1, "replace": 1,
            "rebuild": 1, "flags": 1, "unchanged": 1
        })
    );
    let changes = forward["changes"].as_array().expect("changes");
    let flags = changes
        .iter()
        .find(|change| change["kind"] == "flags")
        .expect("flags change");
    assert_eq!(
        flags["flags"],
        serde_json::json!([{"flag": "priority", "from": null, "to": "7"}])
    );
    let replace = changes
        .iter()
        .find(|change| change["kind"] == "replace")
        .expect("replace");
    assert_eq!(
        (&replace["from"]["attr_path"], &replace["to"]["attr_path"]),
        (&Value::from("vim"), &Value::from("neovim"))
    );
    let upgrade = changes
        .iter()
        .find(|change| change["kind"] == "upgrade")
        .expect("upgrade");
    assert_eq!(
        (&upgrade["from"]["version"], &upgrade["to"]["version"]),
        (&Value::from("2.10"), &Value::from("2.12"))
    );
    let rebuild = changes
        .iter()
        .find(|change| change["kind"] == "rebuild")
        .expect("rebuild");
    assert_ne!(
        rebuild["from"]["outputs"]["out"],
        rebuild["to"]["outputs"]["out"]
    );

    // The defaults: the current generation against the one before; one number is the older.
    assert_eq!(diff_json(&sandbox, &["1", "2"]), forward);
    assert_eq!(diff_json(&sandbox, &["1"]), forward);

    // The other way round, every change turns around.
    let backward = diff_json(&sandbox, &["2", "1"]);
    assert_eq!(
        change_rows(&backward),
        rows(&[
            ("add", "gone", "", "gone-1.0"),
            ("remove", "added", "added-1.0", ""),
            ("upgrade", "newer", "newer-2.0", "newer-3.0"),
            ("downgrade", "hello", "hello-2.12", "hello-2.10"),
            ("replace", "editor", "neovim-0.9", "vim-9.0"),
            ("rebuild", "rebuilt", "rebuilt-1.0", "rebuilt-1.0"),
            ("flags", "flagged", "flagged-1.0", "flagged-1.0"),
        ])
    );

    // Human output: one line per change, then the counts.
    let output = sandbox.run(&["diff"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "From generation 1 to generation 2:", "{text}");
    for expected in [
        "  + added-1.0 (added)",
        "  - gone-1.0 (gone)",
        "  ~ hello-2.10 → hello-2.12 (hello): upgrade",
        "  ~ newer-3.0 → newer-2.0 (newer): downgrade",
        "-/+ vim-9.0 → neovim-0.9 (editor): replace (attribute `vim` → `neovim`)",
        "  ~ rebuilt-1.0 (rebuilt): same version, other content",
        "  ~ flagged-1.0 (flagged) priority unset → 7",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
    }
    let summary = lines.last().expect("summary");
    assert!(summary.starts_with("Changes: 1 to add"), "{text}");
    assert!(summary.ends_with("1 to remove; 1 unchanged."), "{text}");

    let same = sandbox.run(&["diff", "2", "2"]);
    assert!(same.status.success(), "{}", stderr(&same));
    assert!(
        stdout(&same).contains("generations 2 and 2 hold the same packages"),
        "{}",
        stdout(&same)
    );
    assert_eq!(
        diff_json(&sandbox, &["2", "2"])["changes"],
        serde_json::json!([])
    );

    let missing = sandbox.run(&["diff", "1", "9"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("has no generation 9"),
        "{}",
        stderr(&missing)
    );

    // The first spec again: generation 3 holds what 1 held, and the default compares it with
    // the one just before (2), not the oldest.
    sandbox.apply(&first);
    assert_eq!(sandbox.current_link(), "default-3-link");
    let latest = diff_json(&sandbox, &[]);
    assert_eq!(
        (latest["from"].clone(), latest["to"].clone()),
        (2.into(), 3.into())
    );
    assert_eq!(change_rows(&latest), change_rows(&backward));
    assert_eq!(
        diff_json(&sandbox, &["1", "3"])["changes"],
        serde_json::json!([])
    );

    // Rolled back to 2, the default is 1 → 2 again; at 1 nothing is older, and naming 2
    // compares it with the current.
    let output = sandbox.run(&["rollback"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(diff_json(&sandbox, &[]), forward);
    let output = sandbox.run(&["rollback"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let nothing_older = sandbox.run(&["diff"]);
    assert_eq!(nothing_older.status.code(), Some(2));
    assert!(
        stderr(&nothing_older).contains("generation 1 has no earlier generation"),
        "{}",
        stderr(&nothing_older)
    );
    assert!(
        stderr(&nothing_older).contains("hint:"),
        "{}",
        stderr(&nothing_older)
    );
    assert_eq!(
        change_rows(&diff_json(&sandbox, &["2"])),
        change_rows(&backward)
    );
}

#[test]
fn diff_without_generations_is_a_clear_error() {
    let sandbox = sandbox();
    let output = sandbox.run(&["diff"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("has no current generation"), "{message}");
    assert!(message.contains("hint:"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// rollback / generations switch --restore-spec

const SPEC_ONE: &str = r#"# dotfiles: the first version
version = 1
[sources.demo]
channel = "../channel"
[packages.hello]
attr = "hello"
[packages.jq]
attr = "jq"
"#;

const SPEC_TWO: &str = r#"# dotfiles: the second version
version = 1
[sources.demo]
channel = "../channel"
[packages.hello]
attr = "hello"
priority = 3
[packages.cowsay]
attr = "cowsay"
"#;

/// Applies two specs to `dotfiles/profile.toml`; returns the spec path and the (spec, lockfile)
/// texts each generation was applied with.
fn two_applies(sandbox: &Sandbox) -> (PathBuf, [(String, String); 2]) {
    sandbox.demo_channel("channel");
    let spec_path = sandbox.write_spec("dotfiles/profile.toml", SPEC_ONE);
    let lock_path = spec_path.with_extension("lock");
    let mut applied = Vec::new();
    for text in [SPEC_ONE, SPEC_TWO] {
        fs_err::write(&spec_path, text).expect("write spec");
        sandbox.apply(&spec_path);
        applied.push((
            fs_err::read_to_string(&spec_path).expect("spec"),
            fs_err::read_to_string(&lock_path).expect("lockfile"),
        ));
    }
    assert_eq!(sandbox.current_link(), "default-2-link");
    let applied: [(String, String); 2] = applied.try_into().expect("two applies");
    assert_ne!(applied[0].1, applied[1].1);
    (spec_path, applied)
}

fn on_disk(spec_path: &Path) -> (String, String) {
    (
        fs_err::read_to_string(spec_path).expect("spec"),
        fs_err::read_to_string(spec_path.with_extension("lock")).expect("lockfile"),
    )
}

#[test]
fn restore_spec_writes_back_what_each_generation_was_applied_with() {
    let sandbox = sandbox();
    let (spec_path, [one, two]) = two_applies(&sandbox);

    let output = sandbox.on(&spec_path, &["rollback", "--restore-spec"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(sandbox.current_link(), "default-1-link");
    assert_eq!(on_disk(&spec_path), one);
    assert!(
        stderr(&output).contains("from generation 1"),
        "{}",
        stderr(&output)
    );
    let (status, plan) = sandbox.plan_status(&spec_path, &["--locked"]);
    assert_eq!(status, Some(0), "{plan}");

    let output = sandbox.on(
        &spec_path,
        &["generations", "switch", "2", "--restore-spec"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(sandbox.current_link(), "default-2-link");
    assert_eq!(on_disk(&spec_path), two);
    let (status, plan) = sandbox.plan_status(&spec_path, &["--locked"]);
    assert_eq!(status, Some(0), "{plan}");

    // Without `--file`, the spec goes back where it was applied from (not to the default
    // `~/.config/declenv/profile.toml`).
    fs_err::write(&spec_path, "version = 1\n# edited since\n").expect("edit");
    let output = sandbox.run(&["generations", "switch", "1", "--restore-spec"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(on_disk(&spec_path), one);
    assert!(!sandbox.home.join(".config").exists());

    // With `--file`, it goes there, lockfile beside it.
    let elsewhere = sandbox.dir.join("elsewhere/profile.toml");
    fs_err::create_dir_all(elsewhere.parent().expect("parent")).expect("mkdir");
    let output = sandbox.on(
        &elsewhere,
        &["generations", "switch", "2", "--restore-spec"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(on_disk(&elsewhere), two);
    assert_eq!(
        on_disk(&spec_path),
        one,
        "the applied-from spec is left alone"
    );
}

#[test]
fn plain_rollback_leaves_the_spec_and_plan_shows_the_drift() {
    let sandbox = sandbox();
    let (spec_path, [_, two]) = two_applies(&sandbox);

    let output = sandbox.on(&spec_path, &["rollback"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(sandbox.current_link(), "default-1-link");
    assert_eq!(on_disk(&spec_path), two);

    let (status, plan) = sandbox.plan_status(&spec_path, &[]);
    assert_eq!(status, Some(2), "{plan}");
    assert!(plan.contains("+ cowsay-3.7.0 (cowsay)"), "{plan}");
    assert!(plan.contains("- jq-1.7.1 (jq)"), "{plan}");
    assert!(
        plan.contains("hello-2.12.1 (hello) priority unset → 3"),
        "{plan}"
    );
    let json = sandbox.plan_json(&spec_path);
    assert_eq!(json["generation"], 1);
    let kinds: Vec<&str> = json["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|change| change["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["add", "remove", "flags"]);
    assert_eq!(on_disk(&spec_path), two, "planning changed nothing");

    // Applying the spec again goes back to the generation it made.
    sandbox.apply(&spec_path);
    assert_eq!(sandbox.current_link(), "default-2-link");
}

#[test]
fn restore_spec_refuses_a_generation_not_built_from_a_spec_before_switching() {
    let sandbox = sandbox();
    // Generation 1 is someone else's (an empty environment linked by hand).
    let environment = sandbox
        .root
        .join("nix/store/1b9p07z77phvv2hh6ygvb7yzaxvzaxvz-user-environment");
    fs_err::create_dir_all(&environment).expect("mkdir");
    let profiles = sandbox.root.join("nix/var/nix/profiles");
    symlink(&environment, profiles.join("default-1-link")).expect("link");
    symlink("default-1-link", profiles.join("default")).expect("profile link");

    sandbox.demo_channel("channel");
    let spec_path = sandbox.write_spec("dotfiles/profile.toml", SPEC_ONE);
    sandbox.apply(&spec_path);
    assert_eq!(sandbox.current_link(), "default-2-link");
    let edited = format!("{SPEC_ONE}# an edit not applied yet\n");
    fs_err::write(&spec_path, &edited).expect("edit");
    let lock = fs_err::read_to_string(spec_path.with_extension("lock")).expect("lockfile");

    for args in [
        &["rollback", "--restore-spec"][..],
        &["generations", "switch", "1", "--restore-spec"][..],
    ] {
        let output = sandbox.on(&spec_path, args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let message = stderr(&output);
        assert!(
            message.contains("generation 1 was not built from a spec"),
            "{message}"
        );
        assert!(message.contains("hint:"), "{message}");
        assert!(!message.contains("switching"), "{message}");
        assert_eq!(sandbox.current_link(), "default-2-link", "{args:?}");
        assert_eq!(on_disk(&spec_path), (edited.clone(), lock.clone()));
    }

    // A plain rollback still works; switching back restores the spec generation 2 had.
    let output = sandbox.on(&spec_path, &["rollback"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(sandbox.current_link(), "default-1-link");
    let output = sandbox.on(
        &spec_path,
        &["generations", "switch", "2", "--restore-spec"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(on_disk(&spec_path), (SPEC_ONE.to_owned(), lock));
}
