//! The Nix backend against the real Nix 2.8: profiles declenv manages in a Nix store stay
//! usable by `nix-env`, `nix-store --gc` and `nix-env --rollback`, and what `nix-env` does to
//! them shows up in `declenv plan`.
//!
//! Every test builds a private Nix store inside its temporary directory (`NIX_STORE_DIR`,
//! `NIX_STATE_DIR`; sandbox off, no substituters, and no build users: each private store has
//! its own pool of them, so concurrent tests would take the same user and Nix, which kills
//! every process of a build user before using it, would kill the other test's builder), with packages from a small Nix expression
//! whose derivations are built by `/bin/sh`. The tests that run Nix are named `live_*` and do
//! nothing unless `DECLENV_TEST_NIX` is set: `DECLENV_TEST_NIX=1 cargo test --test nix_backend`.
//! The others check what the backend refuses, and need no Nix.

mod support;

use support::Run;

use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The packages: `tool` carries a priority and a description in its meta, `docs` has two
/// outputs, `extra` plays the package installed behind declenv's back.
const PACKAGES: &str = r#"{ config ? { }, overlays ? [ ] }:
let
  make = name: version: extra: derivation ({
    name = "${name}-${version}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" ''
      mkdir -p $out/bin
      printf '#!/bin/sh\necho ${name} ${version}\n' > $out/bin/${name}
      chmod +x $out/bin/${name}
      if [ -n "''${man-}" ]; then mkdir -p $man/share/man/man1; echo ${name} > $man/share/man/man1/${name}.1; fi
    '' ];
  } // extra);
in {
  hello = make "hello" "2.12" { };
  tool = (make "tool" "1.0" { }) // { meta = { priority = 3; description = "a tool"; }; };
  docs = (make "docs" "0.3" { outputs = [ "out" "man" ]; })
    // { meta.outputsToInstall = [ "out" "man" ]; };
  extra = make "extra" "0.1" { };
  hello_2_13 = make "hello" "2.13" { };
}
"#;

/// The spec the tests start from.
const SPEC: &str = r#"version = 1
backend = "nix"

[sources.pkgs]
nix = "../pkgs"

[packages.hello]
attr = "hello"

[packages.tool]
attr = "tool"

[packages.docs]
attr = "docs"
"#;

fn live() -> bool {
    std::env::var_os("DECLENV_TEST_NIX").is_some()
}

/// A temporary directory with a private Nix store, the expression, a spec and a profile.
struct Sandbox {
    _directory: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    spec: PathBuf,
    packages: PathBuf,
    profile: PathBuf,
    /// Prepended to `PATH` (for the `nix-env` wrapper that logs its calls).
    bin: PathBuf,
}

impl Sandbox {
    fn new(spec: &str) -> Self {
        let directory = tempfile::tempdir().expect("tempdir");
        let base = fs_err::canonicalize(directory.path()).expect("canonical tempdir");
        let packages = base.join("pkgs");
        for path in [&packages, &base.join("dotfiles"), &base.join("etc")] {
            fs_err::create_dir_all(path).expect("mkdir");
        }
        fs_err::create_dir_all(base.join("home")).expect("mkdir");
        fs_err::create_dir_all(base.join("bin")).expect("mkdir");
        fs_err::create_dir_all(base.join("profiles")).expect("mkdir");
        fs_err::write(packages.join("default.nix"), PACKAGES).expect("write expression");
        let spec_path = base.join("dotfiles/profile.toml");
        fs_err::write(&spec_path, spec).expect("write spec");
        Self {
            root: base.join("root"),
            spec: spec_path,
            packages,
            profile: base.join("profiles/work"),
            bin: base.join("bin"),
            base,
            _directory: directory,
        }
    }

    /// `command` with the private store's environment.
    fn command(&self, program: &str) -> Command {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new(program);
        command
            .current_dir(&self.base)
            .env("PATH", path)
            .env("HOME", self.base.join("home"))
            .env("NIX_STORE_DIR", self.root.join("nix/store"))
            .env("NIX_STATE_DIR", self.root.join("nix/var/nix"))
            .env("NIX_LOG_DIR", self.root.join("nix/var/log/nix"))
            .env("NIX_CONF_DIR", self.base.join("etc"))
            .env("NIX_REMOTE", "local")
            .env(
                "NIX_CONFIG",
                "sandbox = false\nsubstituters =\nbuild-users-group =",
            )
            .env("NO_COLOR", "1")
            .env_remove("NIX_PATH")
            .env_remove("DECLENV_ROOT")
            .env_remove("DECLENV_FILE")
            .env_remove("DECLENV_BACKEND")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::null());
        command
    }

    /// `declenv --root ROOT --file SPEC --profile P ARGS…`.
    fn declenv(&self, args: &[&str]) -> Run {
        self.declenv_with_nix_path("", args)
    }

    /// `declenv --root ROOT --file SPEC --profile P`, to add arguments and settings to.
    fn declenv_command(&self) -> Command {
        let mut command = self.command(env!("CARGO_BIN_EXE_declenv"));
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--file")
            .arg(&self.spec)
            .arg("--profile")
            .arg(&self.profile);
        command
    }

    /// [`Sandbox::declenv`] with `NIX_PATH` set.
    fn declenv_with_nix_path(&self, nix_path: &str, args: &[&str]) -> Run {
        Run::of(
            self.declenv_command()
                .env("NIX_PATH", nix_path)
                .args(args)
                .output()
                .expect("declenv runs"),
        )
    }

    fn declenv_expect(&self, code: i32, args: &[&str]) -> Run {
        let run = self.declenv(args);
        assert_eq!(run.code, code, "declenv {args:?}: {run:#?}");
        run
    }

    /// A Nix command, which must succeed.
    fn nix(&self, program: &str, args: &[&str]) -> Run {
        let run = Run::of(
            self.command(program)
                .args(args)
                .output()
                .unwrap_or_else(|error| panic!("{program} runs: {error}")),
        );
        assert_eq!(run.code, 0, "{program} {args:?}: {run:#?}");
        run
    }

    /// `nix-env -p P ARGS…`.
    fn nix_env(&self, args: &[&str]) -> Run {
        let profile = self.profile.to_str().expect("utf-8");
        let mut all = vec!["-p", profile];
        all.extend_from_slice(args);
        self.nix("nix-env", &all)
    }

    fn packages_path(&self) -> &str {
        self.packages.to_str().expect("utf-8")
    }

    /// The names `nix-env -q` lists.
    fn installed(&self) -> Vec<String> {
        self.nix_env(&["-q"]).lines()
    }

    /// `(number, current)` of every generation `nix-env --list-generations` lists.
    fn nix_generations(&self) -> Vec<(u32, bool)> {
        self.nix_env(&["--list-generations"])
            .lines()
            .iter()
            .map(|line| {
                let number = line.split_whitespace().next().expect("number");
                (
                    number.parse().expect("generation number"),
                    line.ends_with("(current)"),
                )
            })
            .collect()
    }

    /// The store path generation `number` of a profile points at.
    fn generation_target(profile: &Path, number: u32) -> String {
        let name = profile.file_name().expect("name").to_str().expect("utf-8");
        fs_err::read_link(profile.with_file_name(format!("{name}-{number}-link")))
            .expect("generation link")
            .to_str()
            .expect("utf-8")
            .to_owned()
    }

    /// The closure of a store path, as Nix records it.
    fn closure(&self, path: &str) -> BTreeSet<String> {
        self.nix("nix-store", &["-qR", path])
            .lines()
            .into_iter()
            .collect()
    }

    fn write_spec(&self, text: &str) {
        fs_err::write(&self.spec, text).expect("write spec");
    }

    /// The lockfile, decoded and checked against its schema.
    fn lock_json(&self) -> Value {
        let text = fs_err::read_to_string(self.spec.with_extension("lock")).expect("lockfile");
        let document = serde_json::from_str(&text).expect("the lockfile is JSON");
        support::assert_schema_valid(&document);
        document
    }
}

/// One change of a plan: kind, id, and the names before and after.
type ChangeRow = (String, Option<String>, Option<String>, Option<String>);

/// The `(kind, id, from, to)` of every change of a plan.
fn changes(plan: &Value) -> Vec<ChangeRow> {
    let name = |side: &Value| side["name"].as_str().map(str::to_owned);
    plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|change| {
            (
                change["kind"].as_str().expect("kind").to_owned(),
                change["id"].as_str().map(str::to_owned),
                name(&change["from"]),
                name(&change["to"]),
            )
        })
        .collect()
}

#[test]
fn live_apply_makes_generations_nix_env_reads_and_sees_what_nix_env_did() {
    if !live() {
        return;
    }
    let sandbox = Sandbox::new(SPEC);

    // The first apply: Nix builds the packages and the environment; generation 1.
    let plan = sandbox.declenv_expect(2, &["plan", "--json", "--detailed-exitcode"]);
    assert_eq!(
        changes(&plan.json()),
        [
            ("add", "docs", "docs-0.3"),
            ("add", "hello", "hello-2.12"),
            ("add", "tool", "tool-1.0")
        ]
        .map(|(kind, id, name)| (
            kind.to_owned(),
            Some(id.to_owned()),
            None,
            Some(name.to_owned())
        ))
    );
    let applied = sandbox.declenv_expect(0, &["apply", "-y", "--json"]);
    // Nix's build lines are the apply's progress.
    assert!(
        applied.stderr.contains("building '") && applied.stderr.contains("-hello-2.12.drv'"),
        "{applied:#?}"
    );
    assert_eq!(applied.json()["generation"], 1);

    // nix-env reads the profile declenv made: its packages and its one generation.
    assert_eq!(sandbox.installed(), ["docs-0.3", "hello-2.12", "tool-1.0"]);
    assert_eq!(sandbox.nix_generations(), [(1, true)]);
    let status = sandbox.nix_env(&["-q", "--out-path", "--meta", "--json"]);
    let installed: Value = serde_json::from_str(&status.stdout).expect("JSON");
    // Keyed by position (`"0"`, `"1"`, …) in nix-env's JSON of installed packages.
    let by_name = |name: &str| {
        installed
            .as_object()
            .expect("object")
            .values()
            .find(|package| package["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in {installed:#}"))
            .clone()
    };
    assert_eq!(by_name("tool-1.0")["meta"]["priority"], 3);
    assert_eq!(
        by_name("docs-0.3")["outputs"]
            .as_object()
            .expect("outputs")
            .keys()
            .collect::<Vec<_>>(),
        ["man", "out"]
    );

    // The environment is a valid path of the store, with the packages and the manifest as its
    // references, and it is the very path nix-env builds for the same packages.
    let environment = Sandbox::generation_target(&sandbox.profile, 1);
    sandbox.nix("nix-store", &["--verify-path", &environment]);
    let references = sandbox.nix("nix-store", &["-q", "--references", &environment]);
    assert!(
        references
            .lines()
            .iter()
            .any(|path| path.ends_with("-env-manifest.nix")),
        "{references:#?}"
    );
    assert!(
        references
            .lines()
            .iter()
            .any(|path| path.ends_with("-hello-2.12")),
        "{references:#?}"
    );
    let reference_profile = sandbox.base.join("profiles/reference");
    sandbox.nix(
        "nix-env",
        &[
            "-p",
            reference_profile.to_str().expect("utf-8"),
            "-f",
            sandbox.packages_path(),
            "-iA",
            "hello",
            "tool",
            "docs",
        ],
    );
    assert_eq!(
        Sandbox::generation_target(&reference_profile, 1),
        environment,
        "declenv and nix-env build different environments from the same packages"
    );
    sandbox.declenv_expect(0, &["plan", "--detailed-exitcode"]);

    // `nix-env -i X` behind declenv's back: the plan shows X as drift, to be removed.
    sandbox.nix_env(&["-f", sandbox.packages_path(), "-iA", "extra"]);
    assert_eq!(sandbox.nix_generations(), [(1, false), (2, true)]);
    let drift = sandbox.declenv_expect(2, &["plan", "--json", "--detailed-exitcode"]);
    let drift_plan = drift.json();
    assert_eq!(drift_plan["generation"], 2);
    assert_eq!(drift_plan["made_outside"], true);
    assert_eq!(
        changes(&drift_plan),
        [(
            "remove".to_owned(),
            None,
            Some("extra-0.1".to_owned()),
            None
        )]
    );
    let text = sandbox.declenv_expect(2, &["plan", "--detailed-exitcode"]);
    assert!(
        text.stdout.contains("- extra-0.1 (not in the spec)")
            && text.stderr.contains("generation 2")
            && text.stderr.contains("was not made by declenv"),
        "{text:#?}"
    );

    // `nix-env --rollback`: back at generation 1, which declenv made; the plan agrees that
    // the profile matches the spec again.
    sandbox.nix_env(&["--rollback"]);
    assert_eq!(sandbox.nix_generations(), [(1, true), (2, false)]);
    let after_rollback = sandbox.declenv_expect(0, &["plan", "--json", "--detailed-exitcode"]);
    let after_rollback = after_rollback.json();
    assert_eq!(after_rollback["generation"], 1);
    assert_eq!(after_rollback["made_outside"], Value::Null);
    assert_eq!(changes(&after_rollback), []);

    // Forward again with nix-env; declenv's apply then undoes the drift as generation 3,
    // which nix-env lists as current, and declenv's rollback goes back to nix-env's 2.
    sandbox.nix_env(&["--switch-generation", "2"]);
    let applied = sandbox.declenv_expect(0, &["apply", "-y", "--json"]).json();
    assert_eq!(applied["generation"], 3);
    assert_eq!(sandbox.installed(), ["docs-0.3", "hello-2.12", "tool-1.0"]);
    assert_eq!(
        sandbox.nix_generations(),
        [(1, false), (2, false), (3, true)]
    );
    sandbox.declenv_expect(0, &["rollback"]);
    assert_eq!(
        sandbox.installed(),
        ["docs-0.3", "extra-0.1", "hello-2.12", "tool-1.0"]
    );
}

#[test]
fn live_garbage_collection_keeps_every_generation() {
    if !live() {
        return;
    }
    let sandbox = Sandbox::new(SPEC);
    sandbox.declenv_expect(0, &["apply", "-y"]);
    // Generation 2 drops tool and docs and adds extra: their paths live on in generation 1.
    sandbox.write_spec(
        "version = 1\nbackend = \"nix\"\n\n[sources.pkgs]\nnix = \"../pkgs\"\n\n\
         [packages.hello]\nattr = \"hello\"\n\n[packages.extra]\nattr = \"extra\"\n",
    );
    sandbox.declenv_expect(0, &["apply", "-y"]);
    assert_eq!(sandbox.installed(), ["extra-0.1", "hello-2.12"]);
    assert_eq!(sandbox.nix_generations(), [(1, false), (2, true)]);

    let mut used = BTreeSet::new();
    for number in [1, 2] {
        used.extend(sandbox.closure(&Sandbox::generation_target(&sandbox.profile, number)));
    }
    assert!(used.iter().any(|path| path.ends_with("-tool-1.0")));
    // Garbage of a known size: a file added to the store and rooted by nothing.
    let garbage_file = sandbox.base.join("garbage.bin");
    fs_err::write(&garbage_file, vec![7_u8; 300_000]).expect("write");
    let garbage = sandbox
        .nix(
            "nix-store",
            &["--add", garbage_file.to_str().expect("utf-8")],
        )
        .stdout
        .trim()
        .to_owned();
    let dead: BTreeSet<String> = sandbox
        .nix("nix-store", &["--gc", "--print-dead"])
        .lines()
        .into_iter()
        .collect();
    let wrongly_dead: Vec<&String> = used.intersection(&dead).collect();
    assert!(
        wrongly_dead.is_empty(),
        "nix-store --gc would delete paths generations use: {wrongly_dead:?}"
    );
    // declenv's own report is Nix's.
    let report = sandbox
        .declenv_expect(0, &["gc", "--print-dead", "--json"])
        .stdout;
    let report: Value = serde_json::from_str(&report).expect("JSON");
    let reported: BTreeSet<String> = report["dead"]
        .as_array()
        .expect("dead")
        .iter()
        .map(|path| path.as_str().expect("path").to_owned())
        .collect();
    assert_eq!(reported, dead);
    assert!(dead.contains(&garbage), "{dead:?}");
    // What it would free is the dead paths' NAR size, as Nix's database records it.
    let mut query = vec!["--query", "--size"];
    query.extend(dead.iter().map(String::as_str));
    let nar_size: u64 = sandbox
        .nix("nix-store", &query)
        .lines()
        .iter()
        .map(|line| line.parse::<u64>().expect("a size"))
        .sum();
    assert!(nar_size > 300_000, "{nar_size}");
    assert_eq!(report["dead_bytes"], nar_size, "{report:#}");

    // Collect for real: every generation still works, and the temporary roots of the applies
    // are gone.
    sandbox.nix("nix-store", &["--gc"]);
    assert!(!Path::new(&garbage).exists());
    let mut check = vec!["--check-validity", "--print-invalid"];
    check.extend(used.iter().map(String::as_str));
    let still_valid = sandbox.nix("nix-store", &check);
    assert_eq!(still_valid.stdout, "");
    for path in &used {
        assert!(Path::new(path).exists(), "{path} was deleted");
    }
    sandbox.nix_env(&["--switch-generation", "1"]);
    assert_eq!(sandbox.installed(), ["docs-0.3", "hello-2.12", "tool-1.0"]);
    let scratch = sandbox.root.join("nix/var/declenv/tmp");
    let leftovers: Vec<_> = fs_err::read_dir(&scratch)
        .map(|entries| entries.map(|entry| entry.expect("entry").path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // `declenv gc --delete-old` deletes generation 2 (not current now) and then collects:
    // extra goes, generation 1 stays whole.
    let extra = Sandbox::generation_target(&sandbox.profile, 2);
    let extra = sandbox
        .closure(&extra)
        .into_iter()
        .find(|path| path.ends_with("-extra-0.1"))
        .expect("extra is in generation 2");
    let as_set = |report: &Value| -> BTreeSet<String> {
        report["dead"]
            .as_array()
            .expect("dead")
            .iter()
            .map(|path| path.as_str().expect("path").to_owned())
            .collect()
    };
    // The dry run counts what only generation 2 keeps, as the real run finds it dead.
    let predicted = sandbox.declenv_expect(0, &["gc", "--delete-old", "--dry-run", "--json"]);
    let predicted: Value = serde_json::from_str(&predicted.stdout).expect("JSON");
    assert!(as_set(&predicted).contains(&extra), "{predicted:#}");
    assert_eq!(sandbox.nix_generations(), [(1, true), (2, false)]);
    let report = sandbox.declenv_expect(0, &["gc", "--delete-old", "--json"]);
    let report: Value = serde_json::from_str(&report.stdout).expect("JSON");
    assert_eq!(
        as_set(&predicted),
        as_set(&report),
        "{predicted:#}\n{report:#}"
    );
    assert_eq!(
        predicted["deleted_generations"],
        report["deleted_generations"]
    );
    assert_eq!(
        report["deleted_generations"][0]["generations"],
        serde_json::json!([2])
    );
    // The paths Nix's collector says it deleted, as it says it.
    let deleted = report["dead"].as_array().expect("dead");
    assert!(deleted.contains(&Value::from(extra.clone())), "{report:#}");
    // What it freed is what Nix says it freed, to 0.01 MiB (so small collections free 0).
    assert!(report["dead_bytes"].is_u64(), "{report:#}");
    assert!(!Path::new(&extra).exists());
    assert_eq!(sandbox.nix_generations(), [(1, true)]);
    assert!(!sandbox.installed().contains(&"extra-0.1".to_owned()));
    for path in sandbox.closure(&Sandbox::generation_target(&sandbox.profile, 1)) {
        assert!(Path::new(&path).exists(), "{path} was deleted");
    }
}

#[test]
fn live_init_from_current_declares_what_nix_env_installed() {
    if !live() {
        return;
    }
    let sandbox = Sandbox::new("");
    fs_err::remove_file(&sandbox.spec).expect("no spec yet");
    sandbox.nix_env(&["-f", sandbox.packages_path(), "-iA", "hello", "tool"]);
    sandbox.nix_env(&["--set-flag", "priority", "7", "tool"]);
    let source = format!("pkgs={}", sandbox.packages_path());
    sandbox.declenv_expect(
        0,
        &[
            "--backend",
            "nix",
            "init",
            "--from-current",
            "--source",
            &source,
        ],
    );
    let spec = fs_err::read_to_string(&sandbox.spec).expect("spec written");
    assert!(spec.contains("backend = \"nix\""), "{spec}");
    assert!(spec.contains("[sources.pkgs]\nnix = "), "{spec}");
    assert!(
        spec.contains("[packages.hello]\nattr = \"hello\"\nsource = \"pkgs\"\n"),
        "{spec}"
    );
    assert!(
        spec.contains("[packages.tool]\nattr = \"tool\"\nsource = \"pkgs\"\npriority = 7\n"),
        "{spec}"
    );
    // The spec declares the generation exactly: nothing to do, and no new generation.
    sandbox.declenv_expect(0, &["plan", "--detailed-exitcode"]);
    let applied = sandbox.declenv_expect(0, &["apply", "-y"]);
    assert!(
        applied.stderr.contains("no changes, generation 2 reused"),
        "{applied:#?}"
    );
    assert_eq!(sandbox.nix_generations(), [(1, false), (2, true)]);
}

#[test]
fn live_a_nix_source_is_evaluated_again_only_when_it_changes() {
    if !live() {
        return;
    }
    let sandbox = Sandbox::new(SPEC);
    // A `nix-env` that logs its arguments before running the real one.
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v nix-env"])
            .output()
            .expect("sh")
            .stdout,
    )
    .expect("utf-8");
    let log = sandbox.base.join("nix-env.log");
    let wrapper = sandbox.bin.join("nix-env");
    fs_err::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.trim()
        ),
    )
    .expect("write wrapper");
    fs_err::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let evaluations = || {
        fs_err::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("-qa"))
            .count()
    };

    sandbox.declenv_expect(0, &["lock"]);
    assert_eq!(evaluations(), 1);
    let lock = sandbox.lock_json();
    assert_eq!(lock["sources"]["pkgs"]["kind"], "nix");
    assert_eq!(lock["sources"]["pkgs"]["path"], "../pkgs");
    let identity = lock["sources"]["pkgs"]["identity"].clone();
    assert!(identity.as_str().expect("identity").starts_with("sha256:"));

    // Planning again: from the cache, no evaluation.
    sandbox.declenv_expect(2, &["plan", "--detailed-exitcode"]);
    sandbox.declenv_expect(0, &["env", "-qa", "hello"]);
    let search = sandbox.declenv_expect(0, &["search", "--source", "pkgs", "--json", "hello"]);
    let found: Value = serde_json::from_str(&search.stdout).expect("JSON");
    assert_eq!(found["packages"][0]["name"], "hello-2.12", "{found:#}");
    assert_eq!(evaluations(), 1);

    // Nix's own configuration changes: evaluated again (a setting such as `system` changes what
    // an evaluation gives); the same configuration again is a cache hit.
    let nix_conf = sandbox.base.join("etc/nix.conf");
    fs_err::create_dir_all(nix_conf.parent().expect("parent")).expect("mkdir");
    fs_err::write(&nix_conf, "allow-import-from-derivation = false\n").expect("write nix.conf");
    sandbox.declenv_expect(2, &["plan", "--detailed-exitcode"]);
    assert_eq!(evaluations(), 2);
    sandbox.declenv_expect(2, &["plan", "--detailed-exitcode"]);
    assert_eq!(evaluations(), 2);

    // The expression changes: evaluated again, and the new package is there.
    let text = fs_err::read_to_string(sandbox.packages.join("default.nix")).expect("read");
    fs_err::write(
        sandbox.packages.join("default.nix"),
        text.replace(
            "  extra = make",
            "  fresh = make \"fresh\" \"1.0\" { };\n  extra = make",
        ),
    )
    .expect("write");
    fs_err::write(
        &sandbox.spec,
        format!("{SPEC}\n[packages.fresh]\nattr = \"fresh\"\n"),
    )
    .expect("write spec");
    let plan = sandbox
        .declenv_expect(2, &["plan", "--json", "--detailed-exitcode"])
        .json();
    assert_eq!(evaluations(), 3);
    assert!(
        changes(&plan).contains(&(
            "add".to_owned(),
            Some("fresh".to_owned()),
            None,
            Some("fresh-1.0".to_owned())
        )),
        "{plan:#}"
    );
    let lock = sandbox.lock_json();
    assert_ne!(lock["sources"]["pkgs"]["identity"], identity);
}

#[test]
fn live_nix_env_commands_edit_and_apply_a_nix_backed_spec() {
    if !live() {
        return;
    }
    let sandbox = Sandbox::new(SPEC);
    sandbox.declenv_expect(0, &["apply", "-y"]);
    let installed =
        sandbox.declenv_expect(0, &["env", "-f", sandbox.packages_path(), "-iA", "extra"]);
    assert!(
        installed.stderr.contains("installing 'extra-0.1'"),
        "{installed:#?}"
    );
    assert_eq!(
        sandbox.installed(),
        ["docs-0.3", "extra-0.1", "hello-2.12", "tool-1.0"]
    );
    let spec = fs_err::read_to_string(&sandbox.spec).expect("spec");
    assert!(spec.contains("attr = \"extra\""), "{spec}");
    sandbox.declenv_expect(0, &["env", "-e", "tool"]);
    assert_eq!(sandbox.installed(), ["docs-0.3", "extra-0.1", "hello-2.12"]);
    assert_eq!(
        sandbox.nix_generations(),
        [(1, false), (2, false), (3, true)]
    );
    // `-b`: tool is still in the store, so prebuilt; hello 2.13 was never built.
    sandbox.declenv_expect(
        0,
        &[
            "env",
            "-f",
            sandbox.packages_path(),
            "-i",
            "-b",
            "-A",
            "tool",
        ],
    );
    assert_eq!(
        sandbox.installed(),
        ["docs-0.3", "extra-0.1", "hello-2.12", "tool-1.0"]
    );
    sandbox.declenv(&[
        "env",
        "-f",
        sandbox.packages_path(),
        "-i",
        "-b",
        "-A",
        "hello_2_13",
    ]);
    assert!(!sandbox.installed().contains(&"hello-2.13".to_owned()));
    sandbox.declenv_expect(0, &["env", "-e", "tool"]);
    let query = sandbox.declenv_expect(0, &["env", "-q"]);
    assert_eq!(query.lines(), sandbox.installed());
}

#[test]
fn live_search_path_sources_resolve_through_nix_path() {
    if !live() {
        return;
    }
    let sandbox = Sandbox::new(&SPEC.replace("nix = \"../pkgs\"", "nix = \"<demo>\""));
    let nix_path = format!("demo={}", sandbox.packages_path());
    let run = sandbox.declenv_with_nix_path(&nix_path, &["apply", "-y"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(sandbox.installed(), ["docs-0.3", "hello-2.12", "tool-1.0"]);
    let lock = sandbox.lock_json();
    assert_eq!(lock["sources"]["pkgs"]["path"], "<demo>");
    // `nix-env -f '<demo>'` through `declenv env`: the spec's source of that lookup.
    let run = sandbox.declenv_with_nix_path(&nix_path, &["env", "-f", "<demo>", "-iA", "extra"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let spec = fs_err::read_to_string(&sandbox.spec).expect("spec");
    assert!(
        spec.contains("[packages.extra]\nattr = \"extra\"")
            && spec.matches("[sources.").count() == 1,
        "{spec}"
    );
    assert_eq!(
        sandbox.installed(),
        ["docs-0.3", "extra-0.1", "hello-2.12", "tool-1.0"]
    );
    // Without the lookup, the error names the source and says what Nix said.
    let run = sandbox.declenv(&["plan"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("cannot load source `pkgs`")
            && run
                .stderr
                .contains("cannot evaluate the Nix expression `<demo>`")
            && run.stderr.contains("nix-instantiate --find-file demo"),
        "{run:#?}"
    );
}

#[test]
fn live_watch_applies_a_nix_backed_spec_on_save() {
    if !live() {
        return;
    }
    let sandbox = Sandbox::new(SPEC);
    let mut child = sandbox
        .declenv_command()
        .env("NIX_PATH", "")
        .args(["watch", "--json", "--debounce", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("declenv watch starts");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, events) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(event) = serde_json::from_str(&line) {
                let _ = sender.send(event);
            }
        }
    });
    let applied = |generation: u64| loop {
        let event = events
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("an event within a minute");
        assert_ne!(event["event"], "failed", "{event:#}");
        if event["event"] == "applied" && event["generation"] == generation {
            break;
        }
    };
    applied(1);
    assert_eq!(sandbox.installed(), ["docs-0.3", "hello-2.12", "tool-1.0"]);
    sandbox.write_spec(&format!("{SPEC}\n[packages.extra]\nattr = \"extra\"\n"));
    applied(2);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        sandbox.installed(),
        ["docs-0.3", "extra-0.1", "hello-2.12", "tool-1.0"]
    );
    assert_eq!(sandbox.nix_generations(), [(1, false), (2, true)]);
}

#[test]
fn live_a_collision_found_once_packages_are_built_names_its_fix() {
    if !live() {
        return;
    }
    let sandbox = Sandbox::new(&format!(
        "{SPEC}\n[packages.newer-hello]\nattr = \"hello_2_13\"\n"
    ));
    // Nothing is built yet, so the plan cannot look into the packages.
    sandbox.declenv_expect(2, &["plan", "--detailed-exitcode"]);
    let failed = sandbox.declenv_expect(2, &["apply", "-y"]);
    assert!(
        failed.stderr.contains("bin/hello")
            && failed
                .stderr
                .contains("set `priority = 4` under `[packages."),
        "{failed:#?}"
    );
    assert!(
        !sandbox.profile.exists(),
        "a failed apply made a generation"
    );
    // Now that they are built, the plan finds the collision itself.
    let plan = sandbox.declenv_expect(1, &["plan", "--detailed-exitcode"]);
    assert!(plan.stderr.contains("set `priority = 4`"), "{plan:#?}");
}

/// A declenv killed after Nix built everything, just before the generation link: the profile
/// is as it was for nix-env too, and the next apply converges and drops the dead run's roots.
#[test]
fn live_a_killed_apply_leaves_the_profile_as_it_was_and_the_next_one_converges() {
    if !live() {
        return;
    }
    let sandbox = Sandbox::new(SPEC);
    sandbox.declenv_expect(0, &["apply", "-y"]);
    sandbox.write_spec(&format!("{SPEC}\n[packages.extra]\nattr = \"extra\"\n"));
    let killed = sandbox
        .declenv_command()
        .env("DECLENV_FAULT", "generation-before-link:abort")
        .args(["apply", "-y"])
        .output()
        .expect("declenv runs");
    // The fault point aborts the process: no exit status, a signal.
    assert!(killed.status.code().is_none(), "{killed:?}");
    assert_eq!(sandbox.installed(), ["docs-0.3", "hello-2.12", "tool-1.0"]);
    assert_eq!(sandbox.nix_generations(), [(1, true)]);
    let scratch = sandbox.root.join("nix/var/declenv/tmp");
    let entries = |directory: &Path| -> Vec<PathBuf> {
        fs_err::read_dir(directory)
            .map(|entries| entries.map(|entry| entry.expect("entry").path()).collect())
            .unwrap_or_default()
    };
    assert_eq!(entries(&scratch).len(), 1, "the killed run's roots stay");

    let applied = sandbox.declenv_expect(0, &["apply", "-y", "--json"]).json();
    assert_eq!(applied["generation"], 2);
    assert_eq!(
        sandbox.installed(),
        ["docs-0.3", "extra-0.1", "hello-2.12", "tool-1.0"]
    );
    assert_eq!(entries(&scratch), Vec::<PathBuf>::new());
    // The killed run's indirect roots now dangle, and Nix removes them when it collects.
    sandbox.nix("nix-store", &["--gc"]);
    for link in entries(&sandbox.root.join("nix/var/nix/gcroots/auto")) {
        let target = fs_err::read_link(&link).expect("a root is a link");
        assert!(
            !target.starts_with(&scratch),
            "{} still points into {}",
            link.display(),
            scratch.display()
        );
    }
}

/// What the user's Nix configuration can change about an expression (its `config` and
/// `overlays` arguments, defaulted from `~/.config/nixpkgs` as nixpkgs does, and the `NIXPKGS_*`
/// variables) does not reach declenv's evaluation, while it does reach a plain `nix-env -qa`.
#[test]
fn live_user_configuration_does_not_leak_into_a_source() {
    if !live() {
        return;
    }
    let sandbox = Sandbox::new(SPEC);
    let leaky = r#"{ config ? import (builtins.getEnv "HOME" + "/.config/nixpkgs/config.nix")
, overlays ? [ (import (builtins.getEnv "HOME" + "/.config/nixpkgs/overlay.nix")) ] }:
let
  make = name: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo > $out" ];
  };
  base = { plain = make "plain-1"; }
    // (if config.leak or false then { from-config = make "from-config-1"; } else { })
    // (if builtins.getEnv "NIXPKGS_ALLOW_UNFREE" == "1" then { from-environment = make "from-environment-1"; } else { });
in builtins.foldl' (set: overlay: set // overlay set) base overlays
"#;
    fs_err::write(sandbox.packages.join("default.nix"), leaky).expect("write");
    let nixpkgs = sandbox.base.join("home/.config/nixpkgs");
    fs_err::create_dir_all(&nixpkgs).expect("mkdir");
    fs_err::write(nixpkgs.join("config.nix"), "{ leak = true; }").expect("write");
    fs_err::write(
        nixpkgs.join("overlay.nix"),
        "self: { from-overlay = derivation { name = \"from-overlay-1\"; system = builtins.currentSystem; builder = \"/bin/sh\"; }; }",
    )
    .expect("write");
    let names = |run: &Run| -> Vec<String> {
        let mut names: Vec<String> = run
            .lines()
            .iter()
            .map(|line| {
                line.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        names.sort();
        names
    };
    let plain = Run::of(
        sandbox
            .command("nix-env")
            .env("NIXPKGS_ALLOW_UNFREE", "1")
            .args(["-f", sandbox.packages_path(), "-qa"])
            .output()
            .expect("nix-env runs"),
    );
    assert_eq!(
        names(&plain),
        [
            "from-config-1",
            "from-environment-1",
            "from-overlay-1",
            "plain-1"
        ],
        "{plain:#?}"
    );
    let declenv = Run::of(
        sandbox
            .declenv_command()
            .env("NIXPKGS_ALLOW_UNFREE", "1")
            .args(["env", "-qa"])
            .output()
            .expect("declenv runs"),
    );
    assert_eq!(names(&declenv), ["plain-1"], "{declenv:#?}");
}

/// The lockfile, not the source, says what is installed: after the expression changed, an
/// apply builds only what is new and keeps the locked packages (rooting them, not rebuilding
/// them), until `lock --update` takes the new ones.
#[test]
fn live_a_changed_source_rebuilds_nothing_the_lockfile_holds() {
    if !live() {
        return;
    }
    let sandbox = Sandbox::new(SPEC);
    sandbox.declenv_expect(0, &["apply", "-y"]);
    let hello = |sandbox: &Sandbox| {
        String::from_utf8(
            Command::new(sandbox.profile.join("bin/hello"))
                .output()
                .expect("hello runs")
                .stdout,
        )
        .expect("utf-8")
    };
    assert_eq!(hello(&sandbox), "hello 2.12\n");
    let expression = sandbox.packages.join("default.nix");
    let text = fs_err::read_to_string(&expression).expect("read");
    fs_err::write(
        &expression,
        text.replace("echo ${name} ${version}", "echo new ${name}"),
    )
    .expect("write");
    sandbox.write_spec(&format!("{SPEC}\n[packages.extra]\nattr = \"extra\"\n"));
    let applied = sandbox.declenv_expect(0, &["apply", "-y"]);
    assert!(
        applied.stderr.contains("-extra-0.1.drv'") && !applied.stderr.contains("-hello-2.12.drv'"),
        "{applied:#?}"
    );
    assert_eq!(hello(&sandbox), "hello 2.12\n");
    sandbox.declenv_expect(0, &["lock", "--update"]);
    let applied = sandbox.declenv_expect(0, &["apply", "-y"]);
    assert!(applied.stderr.contains("-hello-2.12.drv'"), "{applied:#?}");
    assert_eq!(hello(&sandbox), "new hello\n");
}

/// Without `--profile`, declenv manages the profile `nix-env` uses: the one it makes
/// `~/.nix-profile` point at when there is none yet (as root), and the link's target after.
#[test]
fn live_the_default_profile_is_nix_envs() {
    if !live() {
        return;
    }
    let sandbox = Sandbox::new(SPEC);
    let default_plan = || {
        Run::of(
            sandbox
                .command(env!("CARGO_BIN_EXE_declenv"))
                .arg("--root")
                .arg(&sandbox.root)
                .arg("--file")
                .arg(&sandbox.spec)
                .args(["plan", "--json"])
                .output()
                .expect("declenv runs"),
        )
        .json()["profile"]
            .as_str()
            .expect("profile")
            .to_owned()
    };
    let before = default_plan();
    let link = sandbox.base.join("home/.nix-profile");
    assert!(fs_err::symlink_metadata(&link).is_err());
    sandbox.nix("nix-env", &["-q"]);
    let target = fs_err::read_link(&link).expect("nix-env made ~/.nix-profile");
    assert_eq!(Path::new(&before), target, "before nix-env made the link");
    // Once the link exists, it is followed, wherever it points.
    let elsewhere = sandbox.base.join("profiles/elsewhere");
    fs_err::remove_file(&link).expect("remove link");
    std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
    assert_eq!(Path::new(&default_plan()), elsewhere);
}

/// For a user other than root, the default profile is `per-user/NAME/profile` with NAME as the
/// password database names the user, not as `USER` says: checked against what `nix-env` makes,
/// both run as `nobody` with `USER=alice` (through `setpriv`, from util-linux).
#[test]
fn live_a_users_default_profile_is_named_as_nix_names_the_user() {
    if !live() {
        return;
    }
    let runs_as_root = fs_err::metadata("/proc/self")
        .is_ok_and(|metadata| std::os::unix::fs::MetadataExt::uid(&metadata) == 0);
    // Only root can become another user; `.ci/run` runs the live tests as root.
    if !runs_as_root {
        return;
    }
    let sandbox = Sandbox::new(SPEC);
    // `nobody` must reach and own everything: the binary goes in too.
    let declenv = sandbox.bin.join("declenv");
    fs_err::copy(env!("CARGO_BIN_EXE_declenv"), &declenv).expect("copy declenv");
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&sandbox.base)
        .status()
        .expect("chown");
    assert!(status.success());
    fs_err::set_permissions(&sandbox.base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let as_nobody = |program: &Path, args: &[&str]| {
        let run = Run::of(
            sandbox
                .command("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(program)
                .args(args)
                .env("USER", "alice")
                .output()
                .expect("setpriv runs"),
        );
        assert_eq!(run.code, 0, "{program:?} {args:?}: {run:#?}");
        run
    };
    let root = sandbox.root.to_str().expect("utf-8");
    let spec = sandbox.spec.to_str().expect("utf-8");
    let planned = as_nobody(
        &declenv,
        &["--root", root, "--file", spec, "plan", "--json"],
    )
    .json()["profile"]
        .as_str()
        .expect("profile")
        .to_owned();
    as_nobody(Path::new("nix-env"), &["-q"]);
    let made = fs_err::read_link(sandbox.base.join("home/.nix-profile"))
        .expect("nix-env made ~/.nix-profile");
    assert_eq!(Path::new(&planned), made);
    assert!(planned.ends_with("/per-user/nobody/profile"), "{planned}");
}

// ---- refusals, without Nix -----------------------------------------------------------------

/// A Nix source implies the Nix backend; a spec that asks for the embedded store with one is
/// refused before anything is read.
#[test]
fn a_nix_source_needs_the_nix_backend() {
    let sandbox = Sandbox::new(&SPEC.replace("backend = \"nix\"", "backend = \"embedded\""));
    let run = sandbox.declenv_expect(2, &["plan"]);
    assert!(
        run.stderr
            .contains("source `pkgs` is a Nix expression, which only the Nix backend can build")
            && run.stderr.contains("line 5, column 7")
            && run.stderr.contains("hint: set `backend = \"nix\"`"),
        "{run:#?}"
    );
    assert!(!sandbox.root.exists(), "a refused plan created the root");
}

#[test]
fn a_backend_flag_that_contradicts_the_spec_is_refused() {
    // The spec does not name its backend; its Nix source says it.
    let sandbox = Sandbox::new(&SPEC.replace("backend = \"nix\"\n", ""));
    let run = sandbox.declenv_expect(2, &["--backend", "embedded", "plan"]);
    assert!(
        run.stderr.contains(
            "the backend `embedded` (from `--backend` or `DECLENV_BACKEND`) contradicts the spec's backend `nix`"
        ),
        "{run:#?}"
    );
    assert!(!sandbox.root.exists(), "a refused plan created the root");
}

/// `--backend nix` over a spec that does not say: its `substituters` (for the embedded store)
/// are refused rather than ignored.
#[test]
fn substituters_are_refused_on_the_nix_backend() {
    let sandbox = Sandbox::new(
        "version = 1\nsubstituters = [\"file:///srv/cache\"]\n\n[packages.hello]\nstore-path = \"/nix/store/00000000000000000000000000000000-hello\"\n",
    );
    let run = sandbox.declenv_expect(2, &["--backend", "nix", "plan"]);
    assert!(
        run.stderr
            .contains("names `substituters`, which the Nix backend does not use")
            && run
                .stderr
                .contains("hint: set `substituters` in `nix.conf`"),
        "{run:#?}"
    );
    assert!(!sandbox.root.exists(), "a refused plan created the root");
}

/// A spec that does not parse cannot say which backend it is for: commands that depend on it
/// report the spec's error instead of guessing.
#[test]
fn a_spec_that_does_not_parse_is_not_taken_for_the_embedded_store() {
    let sandbox = Sandbox::new("version = 1\nbackend = \"nix\"\n[packages.broken\n");
    for args in [
        &["rollback"][..],
        &["gc", "--dry-run"],
        &["generations", "list"],
    ] {
        let run = sandbox.declenv_expect(2, args);
        assert!(
            run.stderr.contains("line 3, column 17")
                && run.stderr.contains("hint: fix the TOML syntax"),
            "{args:?}: {run:#?}"
        );
    }
    assert!(!sandbox.root.exists());
    // `init --force` replaces it all the same.
    sandbox.declenv_expect(0, &["init", "--force"]);
}

#[test]
fn the_embedded_store_commands_refuse_the_nix_backend() {
    let sandbox = Sandbox::new(SPEC);
    let run = sandbox.declenv_expect(2, &["store", "verify"]);
    assert!(
        run.stderr.contains("the profile uses the Nix backend")
            && run.stderr.contains("hint: use `nix-store`"),
        "{run:#?}"
    );
    assert!(!sandbox.root.exists());
}

/// `init` takes a source that is a Nix expression (`<name>`, a `.nix` file, a directory with a
/// `default.nix`) for one, and so writes a spec on the Nix backend, as a `nix` source in a spec
/// implies it; `--backend embedded` refuses a `.nix` file rather than call it a catalog.
#[test]
fn init_takes_nix_expressions_for_nix_sources() {
    let sandbox = Sandbox::new("");
    let packages = sandbox.packages_path().to_owned();
    let file = format!("{packages}/default.nix");
    for (source, written) in [
        (format!("pkgs={packages}"), format!("nix = \"{packages}\"")),
        (format!("pkgs={file}"), format!("nix = \"{file}\"")),
        (
            "pkgs=<nixpkgs>".to_owned(),
            "nix = \"<nixpkgs>\"".to_owned(),
        ),
    ] {
        fs_err::remove_file(&sandbox.spec).ok();
        let run = sandbox.declenv_expect(0, &["init", "--source", &source]);
        let spec = fs_err::read_to_string(&sandbox.spec).expect("spec written");
        assert!(spec.contains(&written), "{source}: {spec}\n{run:#?}");
        assert!(
            !spec.contains("channel =") && !spec.contains("catalog ="),
            "{spec}"
        );
    }

    fs_err::remove_file(&sandbox.spec).expect("remove");
    let source = format!("pkgs={file}");
    let refused =
        sandbox.declenv_expect(2, &["--backend", "embedded", "init", "--source", &source]);
    assert!(
        refused
            .stderr
            .contains("is a Nix expression, which only the Nix backend can build")
            && refused
                .stderr
                .contains("hint: leave out `--backend embedded`"),
        "{refused:#?}"
    );
    assert!(!sandbox.spec.exists(), "a refused init wrote the spec");
}
