//! Building user environments from the demo channel into the embedded store and switching a
//! profile to them: priorities, extra outputs, `active`, the manifest, and generation reuse.
//! The `live` test checks that the real `nix-env` reads the profile we made.

use declenv::model::catalog::CatalogEntry;
use declenv::model::manifest::{self, ManifestElement, NixValue};
use declenv::profile::build::{BuildError, build_environment};
use declenv::profile::realise::realise;
use declenv::profile::{LockOptions, Profile, ProfileLayout, Provenance};
use declenv::source::load_channel;
use declenv::store::EmbeddedStore;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Setup {
    _directory: tempfile::TempDir,
    root: PathBuf,
    store: EmbeddedStore,
    entries: Vec<CatalogEntry>,
}

fn setup() -> Setup {
    let directory = tempfile::tempdir().expect("tempdir");
    let root = directory.path().join("root");
    fs_err::create_dir_all(root.join("nix/store")).expect("mkdir");
    let store = EmbeddedStore::open(&root).expect("store opens");
    let channel = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/channel");
    let entries = load_channel(&channel).expect("demo channel loads");
    Setup {
        _directory: directory,
        root,
        store,
        entries,
    }
}

impl Setup {
    fn element(&self, name: &str) -> ManifestElement {
        let entry = self
            .entries
            .iter()
            .find(|entry| entry.name == name)
            .unwrap_or_else(|| panic!("{name} in the demo channel"));
        realise(&self.store, entry).expect("realises")
    }

    fn build(&self, elements: &[ManifestElement]) -> Result<PathBuf, BuildError> {
        build_environment(
            &self.store,
            elements,
            &self.root.join("nix/var/declenv/tmp"),
        )
        .map(|built| PathBuf::from(built.path.to_string()))
    }
}

fn link_target(path: &Path) -> String {
    fs_err::read_link(path)
        .expect("a symlink")
        .display()
        .to_string()
}

#[test]
fn demo_environment_links_what_nix_would() {
    let setup = setup();
    let hello = setup.element("hello-2.12.1");
    let jq = setup.element("jq-1.7.1");
    let which = setup.element("which-2.21");
    let busybox = setup.element("busybox-1.36.1");
    let environment = setup
        .build(&[hello.clone(), jq.clone(), which.clone(), busybox.clone()])
        .expect("builds");

    // `bin` is merged from four packages.
    assert!(
        environment
            .join("bin")
            .symlink_metadata()
            .expect("bin")
            .is_dir()
    );
    assert_eq!(
        link_target(&environment.join("bin/hello")),
        format!("{}/bin/hello", hello.outputs["out"])
    );
    // busybox has priority 15, which loses to which's default 5.
    assert_eq!(
        link_target(&environment.join("bin/which")),
        format!("{}/bin/which", which.outputs["out"])
    );
    assert!(environment.join("bin/busybox").exists());
    // jq installs `out` and `man`, not `doc`.
    assert!(environment.join("share/man/man1/jq.1").exists());
    assert!(!environment.join("share/doc/jq").exists());
    // The script runs through the environment.
    let output = Command::new(environment.join("bin/hello"))
        .output()
        .expect("hello runs");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "Hello, world!"
    );

    // manifest.nix is a link to a store file in nix-env's format that reads back.
    let manifest_text =
        fs_err::read_to_string(environment.join("manifest.nix")).expect("manifest readable");
    assert!(!manifest_text.ends_with('\n'));
    let parsed = manifest::parse(&manifest_text).expect("manifest parses");
    let names: Vec<&str> = parsed.iter().map(|element| element.name.as_str()).collect();
    assert_eq!(
        names,
        ["hello-2.12.1", "jq-1.7.1", "which-2.21", "busybox-1.36.1"]
    );
    assert_eq!(parsed[1].outputs.keys().collect::<Vec<_>>(), ["man", "out"]);

    // The store knows the environment refers to its packages.
    let report = setup.store.verify().expect("verify");
    assert!(!report.has_damage());
}

#[test]
fn equal_priorities_collide_with_nix_message() {
    let setup = setup();
    let which = setup.element("which-2.21");
    let mut busybox = setup.element("busybox-1.36.1");
    busybox.meta.insert("priority".to_owned(), NixValue::Int(5));
    let error = setup.build(&[which, busybox]).expect_err("collision");
    let message = error.to_string();
    assert!(message.starts_with("packages '"), "{message}");
    assert!(
        message.contains("have the same priority 5; use 'nix-env --set-flag priority NUMBER INSTALLED_PKGNAME' to change the priority of one of the conflicting packages (0 being the highest priority)"),
        "{message}"
    );
}

#[test]
fn inactive_packages_stay_in_the_manifest_but_are_not_linked() {
    let setup = setup();
    let mut hello = setup.element("hello-2.12.1");
    hello
        .meta
        .insert("active".to_owned(), NixValue::String("false".to_owned()));
    let environment = setup.build(&[hello]).expect("builds");
    assert!(!environment.join("bin").exists());
    let parsed = manifest::parse(
        &fs_err::read_to_string(environment.join("manifest.nix")).expect("manifest"),
    )
    .expect("parses");
    assert_eq!(parsed[0].name, "hello-2.12.1");
}

#[test]
fn identical_environment_reuses_the_highest_generation() {
    let setup = setup();
    let profile_path = setup.root.join("nix/var/nix/profiles/default");
    fs_err::create_dir_all(profile_path.parent().expect("parent")).expect("mkdir");
    let profile =
        Profile::new(&profile_path, ProfileLayout::under_root(&setup.root)).expect("profile");
    let hello = setup.element("hello-2.12.1");
    let jq = setup.element("jq-1.7.1");
    let commit = |elements: &[ManifestElement]| {
        let environment = setup.build(elements).expect("builds");
        let token = profile.read_token().expect("token");
        profile
            .commit(
                &token,
                &environment,
                &Provenance::default(),
                LockOptions::default(),
                &mut |_| {},
            )
            .expect("commits")
    };
    let first = commit(std::slice::from_ref(&hello));
    let second = commit(&[hello.clone(), jq.clone()]);
    let third = commit(&[hello, jq]);
    assert_eq!((first.number, second.number, third.number), (1, 2, 2));
    assert!(third.reused);
    assert_eq!(link_target(&profile_path), "default-2-link");
    assert!(profile_path.join("bin/jq").exists());
}

#[test]
fn live_nix_env_reads_our_profile() {
    if std::env::var_os("DECLENV_TEST_NIX").is_none() {
        return;
    }
    let setup = setup();
    let profile_path = setup.root.join("nix/var/nix/profiles/default");
    fs_err::create_dir_all(profile_path.parent().expect("parent")).expect("mkdir");
    let profile =
        Profile::new(&profile_path, ProfileLayout::under_root(&setup.root)).expect("profile");
    let environment = setup
        .build(&[setup.element("hello-2.12.1"), setup.element("jq-1.7.1")])
        .expect("builds");
    let token = profile.read_token().expect("token");
    profile
        .commit(
            &token,
            &environment,
            &Provenance::default(),
            LockOptions::default(),
            &mut |_| {},
        )
        .expect("commits");
    let home = tempfile::tempdir().expect("home");
    // The embedded root is laid out as a Nix chroot store, so Nix pointed at it sees our paths
    // in its store.
    let store_dir = fs_err::canonicalize(setup.root.join("nix/store")).expect("store dir");
    let query = |args: &[&str]| {
        let output = Command::new("nix-env")
            .arg("-p")
            .arg(&profile_path)
            .args(args)
            .env("HOME", home.path())
            .env("NIX_STORE_DIR", &store_dir)
            .env("NIX_STATE_DIR", setup.root.join("nix/var/nix"))
            .env("NIX_LOG_DIR", setup.root.join("nix/var/log/nix"))
            .env("NIX_REMOTE", "local")
            .env(
                "NIX_CONFIG",
                "sandbox = false\nsubstituters =\nbuild-users-group =",
            )
            .output()
            .expect("nix-env runs (install nix-bin)");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    };
    assert_eq!(query(&["-q"]), "hello-2.12.1\njq-1.7.1\n");
    assert!(query(&["--list-generations"]).contains("   1   "));
    let out_paths = query(&["-q", "--out-path"]);
    assert!(out_paths.contains("man="), "{out_paths}");
}
