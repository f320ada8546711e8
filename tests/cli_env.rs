//! `declenv env` (and the binary invoked as `nix-env`) driven through the real binary: what the
//! differential test against Nix (`compat_conformance.rs`) cannot show, because Nix has no
//! spec, or does worse.
//!
//! * a hand-written, heavily commented `profile.toml` edited by every write operation, with
//!   the text after each step snapshotted (comments and untouched formatting survive);
//! * 16 concurrent `declenv env -i` of different packages on one profile: all 16 end up in the
//!   spec and in the final generation (Nix 2.8 loses updates here, NixOS/nix#851);
//! * a profile switched by another tool while `-i` works: the restart carries the switch over
//!   (Nix 2.8 re-reads a stale manifest and silently undoes it);
//! * the binary under the name `nix-env`, the default sources (the spec's, under prefixed
//!   attribute paths), `-S`, rollbacks that bring the spec back, adoption of a profile made
//!   before the spec existed, `--version` and `--help`.
//!
//! Every test has its own temporary directory: a root, a dotfiles directory with the spec and a
//! copy of the compat fixture channel (`tests/fixtures/compat/channel`).

mod support;

use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct World {
    temporary: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let world = Self {
            temporary: tempfile::tempdir().expect("tempdir"),
        };
        fs_err::create_dir_all(world.dotfiles()).expect("dotfiles");
        fs_err::create_dir_all(world.path().join("home")).expect("home");
        support::copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compat/channel"),
            &world.dotfiles().join("channel"),
        );
        world
    }

    fn path(&self) -> &Path {
        self.temporary.path()
    }

    fn dotfiles(&self) -> PathBuf {
        self.path().join("dotfiles")
    }

    fn spec(&self) -> PathBuf {
        self.dotfiles().join("profile.toml")
    }

    fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    fn profile(&self) -> PathBuf {
        self.root().join("nix/var/nix/profiles/default")
    }

    fn channel(&self) -> PathBuf {
        self.dotfiles().join("channel")
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env("DECLENV_ROOT", self.root())
            .env("DECLENV_FILE", self.spec())
            .env("HOME", self.path().join("home"))
            .env("TZ", "UTC")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .current_dir(self.path());
        command
    }

    /// `declenv env ARGS…`.
    fn env(&self, arguments: &[&str]) -> Output {
        let mut command = self.command(Path::new(env!("CARGO_BIN_EXE_declenv")));
        command.arg("env").args(arguments);
        command.output().expect("declenv runs")
    }

    /// `declenv env ARGS…`, which must succeed.
    fn ok(&self, arguments: &[&str]) -> Output {
        let output = self.env(arguments);
        assert!(
            output.status.success(),
            "declenv env {arguments:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn spec_text(&self) -> String {
        fs_err::read_to_string(self.spec()).expect("the spec")
    }

    /// Installed names, from `-q --json` (decoded).
    fn installed(&self) -> Vec<String> {
        let output = self.ok(&["-q", "--json"]);
        let document: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        document
            .as_object()
            .expect("an object")
            .values()
            .map(|element| element["name"].as_str().expect("a name").to_owned())
            .collect()
    }

    /// The names in the profile's `bin/`.
    fn bin(&self) -> Vec<String> {
        let mut names: Vec<String> = fs_err::read_dir(self.profile().join("bin"))
            .map(|entries| {
                entries
                    .map(|entry| {
                        entry
                            .expect("entry")
                            .file_name()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const COMMENTED_SPEC: &str = r#"#:schema ../schema/profile.schema.json
# ~/.config/declenv/profile.toml: my packages.
#
# Edited by hand, and by `declenv env` (nix-env commands).
version = 1   # the spec format

# ---- where packages come from ------------------------------------------------
[sources.main]         # the fixture channel
channel = "channel"    # relative to this file

# ---- command-line tools ------------------------------------------------------

# hello: greets; pinned by attribute path.
[packages.hello]
attr = "hello_1"       # the old one, on purpose
version = ">= 1"       # any release
priority = 4           # lower wins

# foo, by name, within a range.
[packages.foo]
name    = "foo"        # aligned on purpose
version = "<1.5"       # not 2.x yet

# ---- things that collide -----------------------------------------------------
[packages.xa]
attr = "xa"            # bin/x from here

# a package nobody wants any more
[packages.pa]
attr = "pa"

# ---- end ---------------------------------------------------------------------
"#;

#[test]
fn every_write_keeps_the_comments_and_layout_of_a_hand_written_spec() {
    let world = World::new();
    fs_err::write(world.spec(), COMMENTED_SPEC).expect("spec");
    let steps: &[&[&str]] = &[
        &["-u"],                                // hello-1.0 → hello-2.0; foo held by <1.5
        &["-i", "xb"],                          // a new entry after the last one
        &["--set-flag", "priority", "7", "xb"], // a key added
        &["--set-flag", "keep", "true", "foo"], // on an entry selected by name
        &["--set-flag", "active", "false", "xa"],
        &["--set-flag", "priority", "3", "hello"], // an existing value, its comment kept
        &["-e", "pa"],                             // the entry and its own comment go
        &["-i", "multi"],                          // no outputsToInstall: every output
        &["-iP", "hello-1.0"],                     // kept beside hello: a second id
        &["-i", "foo-1.0"],                        // foo has keep: a second entry beside it
        &["-i", "xb"],                             // a reinstall: rewritten in place, flags dropped
        &["--set", "baz"],                         // only baz is left
    ];
    insta::assert_snapshot!("commented_spec_00_initial", world.spec_text());
    for (index, step) in steps.iter().enumerate() {
        world.ok(&[&["-f", "dotfiles/channel"], *step].concat());
        let text = world.spec_text();
        // Still a spec, still the same header and sections.
        declenv::model::spec::parse(&text, &world.spec()).expect("the edited spec parses");
        assert!(text.starts_with("#:schema ../schema/profile.schema.json\n# ~/.config/declenv/profile.toml: my packages.\n"));
        assert!(text.contains("version = 1   # the spec format\n"));
        assert!(text.contains("[sources.main]         # the fixture channel\nchannel = \"channel\"    # relative to this file\n"));
        assert!(text.contains("# ---- end ----"));
        insta::assert_snapshot!(
            format!(
                "commented_spec_{:02}_{}",
                index + 1,
                step.join("_").replace(['-', '.'], "")
            ),
            text
        );
    }
    assert_eq!(world.installed(), ["baz"]);
}

#[test]
fn sixteen_concurrent_installs_all_land_in_the_spec_and_the_generation() {
    // Nix 2.8 loses updates here (NixOS/nix#851): each `nix-env -i` builds from the manifest it
    // read and the last to switch wins. declenv queues the writers on a lock beside the spec.
    let world = World::new();
    let channel = world.path().join("many");
    for index in 0..16 {
        let bin = channel.join(format!("c{index:02}-1")).join("bin");
        fs_err::create_dir_all(&bin).expect("package");
        fs_err::write(
            bin.join(format!("c{index:02}")),
            format!("#!/bin/sh\necho {index}\n"),
        )
        .expect("script");
    }
    let channel_argument = channel.display().to_string();
    let children: Vec<_> = (0..16)
        .map(|index| {
            let mut command = world.command(Path::new(env!("CARGO_BIN_EXE_declenv")));
            command
                .args([
                    "env",
                    "-f",
                    &channel_argument,
                    "-i",
                    &format!("c{index:02}"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().expect("wait");
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let spec = declenv::model::spec::parse(&world.spec_text(), &world.spec()).expect("spec");
    assert_eq!(spec.spec.packages.len(), 16, "{}", world.spec_text());
    let mut installed = world.installed();
    installed.sort();
    let expected: Vec<String> = (0..16).map(|index| format!("c{index:02}-1")).collect();
    assert_eq!(installed, expected);
    assert_eq!(
        world.bin(),
        (0..16)
            .map(|index| format!("c{index:02}"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_profile_switched_during_an_install_keeps_the_switch() {
    // Nix 2.8 restarts here but re-reads a cached (stale) manifest, so the switch another tool
    // made while it worked is silently undone. declenv carries it over into the spec.
    let world = World::new();
    world.ok(&["-f", "dotfiles/channel", "-i", "pa"]); // 1
    world.ok(&["-f", "dotfiles/channel", "-i", "pb"]); // 2
    world.ok(&["-f", "dotfiles/channel", "--rollback"]); // 1, spec back to pa only
    assert!(!world.spec_text().contains("pb"));

    let profile = declenv::profile::Profile::new(
        &world.profile(),
        declenv::profile::ProfileLayout::under_root(&world.root()),
    )
    .expect("profile");
    let locked = profile
        .lock(declenv::profile::LockOptions::default(), &mut |_| {})
        .expect("lock");
    let mut child = world
        .command(Path::new(env!("CARGO_BIN_EXE_declenv")))
        .args(["env", "-f", "dotfiles/channel", "-i", "pc"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    loop {
        let line = lines
            .next()
            .expect("declenv waits for the lock")
            .expect("line");
        let waiting = line.starts_with("waiting for lock on profile");
        seen.push(line);
        if waiting {
            break;
        }
    }
    // Another tool (`nix-env -G 2`) switches the profile while declenv waits to commit.
    locked.switch_to(2).expect("switch");
    drop(locked);
    seen.extend(lines.map(|line| line.expect("line")));
    assert!(child.wait().expect("wait").success(), "{seen:?}");
    assert!(
        seen.iter()
            .any(|line| line.ends_with("changed while we were busy; restarting")),
        "{seen:?}"
    );
    let mut installed = world.installed();
    installed.sort();
    assert_eq!(installed, ["pa-1", "pb-1", "pc-1"], "{seen:?}");
    let text = world.spec_text();
    assert!(text.contains("store-path"), "pb is carried over: {text}");
    assert!(text.contains("[packages.pc]"), "{text}");
}

#[test]
fn the_binary_named_nix_env_is_declenv_env() {
    let world = World::new();
    let link = world.path().join("nix-env");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_declenv"), &link).expect("symlink");
    let run = |arguments: &[&str]| {
        world
            .command(&link)
            .args(arguments)
            .output()
            .expect("nix-env runs")
    };
    let through_link = run(&["-f", "dotfiles/channel", "-qaP", "foo"]);
    assert!(through_link.status.success(), "{}", stderr(&through_link));
    let through_env = world.ok(&["-f", "dotfiles/channel", "-qaP", "foo"]);
    assert_eq!(stdout(&through_link), stdout(&through_env));
    assert_eq!(
        stdout(&through_link),
        "foo_0_1   foo-0.1\nfoo_1     foo-1.0\nfoo       foo-2.0\nfoo_2pre  foo-2.0pre1\nfoo_3     foo-3.0\n"
    );
    let installed = run(&["-f", "dotfiles/channel", "-i", "hello"]);
    assert_eq!(stderr(&installed), "installing 'hello-2.0'\n");
    assert_eq!(world.installed(), ["hello-2.0"]);
    let usage = run(&["-q", "-i"]);
    assert_eq!(usage.status.code(), Some(1));
    assert_eq!(
        stderr(&usage),
        "error: only one operation may be specified\nTry 'nix-env --help' for more information.\n"
    );
    let version = run(&["--version"]);
    assert!(
        stdout(&version).starts_with("nix-env (declenv "),
        "{}",
        stdout(&version)
    );
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(stdout(&help).contains("--install"), "{}", stdout(&help));
}

#[test]
fn without_f_the_spec_sources_are_available_under_their_names() {
    let world = World::new();
    fs_err::write(
        world.spec(),
        "version = 1\n\n[sources.main]\nchannel = \"channel\"\n",
    )
    .expect("spec");
    let listing = world.ok(&["-qaP", "hello"]);
    assert_eq!(
        stdout(&listing),
        "main.hello_1  hello-1.0\nmain.hello    hello-2.0\n"
    );
    let installed = world.ok(&["-iA", "main.hello_1"]);
    assert_eq!(stderr(&installed), "installing 'hello-1.0'\n");
    assert!(
        world
            .spec_text()
            .ends_with("[packages.hello]\nattr = \"hello_1\"\n"),
        "{}",
        world.spec_text()
    );
    let missing = world.env(&["-iA", "main.helo"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        stderr(&missing),
        "error: attribute 'helo' in selection path 'main.helo' not found\n       Did you mean hello?\n"
    );
    let json = world.ok(&["-qa", "--json", "-A", "main.hello"]);
    let document: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(document["main.hello"]["name"], "hello-2.0");
}

#[test]
fn the_f_source_is_declared_in_the_spec_relative_to_it() {
    let world = World::new();
    world.ok(&["-f", "dotfiles/channel", "-i", "pa"]);
    let text = world.spec_text();
    assert!(
        text.contains("[sources.channel]\nchannel = \"channel\"\n"),
        "{text}"
    );
    assert!(text.contains("[packages.pa]\nattr = \"pa\"\n"), "{text}");
    // A second, different source: entries then name theirs.
    let other = world.path().join("other");
    support::copy_tree(&world.channel(), &other);
    world.ok(&["-f", "other", "-i", "pb"]);
    let text = world.spec_text();
    assert!(
        text.contains(&format!(
            "[sources.other]\nchannel = \"{}\"\n",
            other.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("[packages.pb]\nattr = \"pb\"\nsource = \"other\"\n"),
        "{text}"
    );
}

#[test]
fn rollback_and_switch_bring_the_spec_back() {
    let world = World::new();
    world.ok(&["-f", "dotfiles/channel", "-i", "pa"]);
    let first = world.spec_text();
    world.ok(&["-f", "dotfiles/channel", "-i", "pb"]);
    let second = world.spec_text();
    assert_ne!(first, second);
    let rollback = world.ok(&["--rollback"]);
    assert_eq!(stderr(&rollback), "switching profile from version 2 to 1\n");
    assert_eq!(world.spec_text(), first);
    world.ok(&["-G", "2"]);
    assert_eq!(world.spec_text(), second);
    // A dry run changes nothing.
    world.ok(&["--rollback", "--dry-run"]);
    assert_eq!(world.spec_text(), second);
}

#[test]
fn switch_profile_chooses_the_default_profile() {
    let world = World::new();
    let other = world.path().join("profiles/work");
    fs_err::create_dir_all(other.parent().expect("parent")).expect("profiles");
    world.ok(&["-S", "profiles/work"]);
    let link = world.root().join("nix/var/declenv/profile");
    assert_eq!(fs_err::read_link(&link).expect("link"), other);
    world.ok(&["-f", "dotfiles/channel", "-i", "pa"]);
    assert!(world.path().join("profiles/work-1-link").exists());
    let listed = world.ok(&["--list-generations"]);
    assert!(
        stdout(&listed).ends_with("(current)\n"),
        "{}",
        stdout(&listed)
    );
}

#[test]
fn a_profile_made_before_the_spec_is_adopted_by_store_path() {
    let world = World::new();
    world.ok(&["-f", "dotfiles/channel", "-i", "pa", "pb"]);
    // The spec is lost (or the profile was made by another tool): nothing it holds is dropped.
    fs_err::remove_file(world.spec()).expect("remove");
    let _ = fs_err::remove_file(world.dotfiles().join("profile.lock"));
    world.ok(&["-f", "dotfiles/channel", "-i", "pc"]);
    let mut installed = world.installed();
    installed.sort();
    assert_eq!(installed, ["pa-1", "pb-1", "pc-1"]);
    let text = world.spec_text();
    assert_eq!(text.matches("store-path = ").count(), 2, "{text}");
}

#[test]
fn writes_that_fail_change_nothing() {
    let world = World::new();
    world.ok(&["-f", "dotfiles/channel", "-i", "foo-1.0"]);
    let spec = world.spec_text();
    let lock = fs_err::read_to_string(world.dotfiles().join("profile.lock")).expect("lock");
    let collision = world.env(&["-f", "dotfiles/channel", "-iP", "foo-2.0"]);
    assert_eq!(collision.status.code(), Some(100), "{}", stderr(&collision));
    let nothing = world.env(&["-f", "dotfiles/channel", "-i", "nothing"]);
    assert_eq!(nothing.status.code(), Some(1));
    let expression = world.env(&["-f", "dotfiles/channel", "-iE", "pkgs: pkgs.hello"]);
    assert_eq!(expression.status.code(), Some(1));
    assert!(
        stderr(&expression).contains("`-E`/`--from-expression` is not supported"),
        "{}",
        stderr(&expression)
    );
    let nix_file = world.env(&["-f", "dotfiles/channel/channel.toml", "-qa"]);
    assert_eq!(nix_file.status.code(), Some(1), "{}", stderr(&nix_file));
    assert_eq!(world.spec_text(), spec);
    assert_eq!(
        fs_err::read_to_string(world.dotfiles().join("profile.lock")).expect("lock"),
        lock
    );
    assert_eq!(world.installed(), ["foo-1.0"]);
}
