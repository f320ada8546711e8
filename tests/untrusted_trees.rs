//! Package trees are untrusted: symlinks pointing outside (absolute, through `..`, to a whole
//! directory), symlink loops, names with newlines or bytes that are not UTF-8, dot-names, deep
//! and large trees, a package that is a single file, a top-level symlink, and trees changed
//! while declenv reads them. The store copies what it is given without following a link and
//! the builder links without writing anything outside the environment; what they skip they
//! report; what they cannot use is a clear error that changes nothing. A directory beside the
//! world (`outside/`), which the hostile links point at, must come out byte for byte as it was.

mod hardening;

use hardening::{SPEC_A, Watched, World, text};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Everything under `directory` (not following links): type, mode, size, mtime and contents.
fn snapshot(directory: &Path) -> BTreeMap<PathBuf, String> {
    let mut entries = BTreeMap::new();
    let mut pending = vec![directory.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in fs_err::read_dir(&current).expect("list") {
            let path = entry.expect("entry").path();
            let metadata = fs_err::symlink_metadata(&path).expect("stat");
            let description = if metadata.is_symlink() {
                format!("link {}", fs_err::read_link(&path).expect("link").display())
            } else if metadata.is_dir() {
                pending.push(path.clone());
                format!("dir {:o}", metadata.mode())
            } else {
                format!(
                    "file {:o} {} {} {:?}",
                    metadata.mode(),
                    metadata.len(),
                    metadata.mtime(),
                    fs_err::read(&path).expect("read")
                )
            };
            entries.insert(path, description);
        }
    }
    entries
}

/// `outside/`, with a secret file and a directory, beside the world's root and dotfiles.
fn outside(world: &World) -> PathBuf {
    let outside = world.base.join("outside");
    fs_err::create_dir_all(outside.join("directory")).expect("mkdir");
    fs_err::write(outside.join("secret"), "do not touch\n").expect("write");
    fs_err::write(outside.join("directory/inner"), "inner\n").expect("write");
    outside
}

/// A package `NAME-1.0` in the world's channel whose tree holds every hostile entry.
fn hostile_package(world: &World, name: &str, outside: &Path) -> PathBuf {
    let tree = world.channel.join(format!("{name}-1.0"));
    for directory in ["bin", "share/doc"] {
        fs_err::create_dir_all(tree.join(directory)).expect("mkdir");
    }
    fs_err::write(tree.join(format!("bin/{name}")), "#!/bin/sh\n").expect("write");
    symlink(outside.join("secret"), tree.join("bin/absolute")).expect("symlink");
    symlink("../../../../../../outside/secret", tree.join("bin/up")).expect("symlink");
    symlink(outside.join("directory"), tree.join("lib")).expect("symlink");
    symlink("../../..", tree.join("share/doc/root")).expect("symlink");
    fs_err::write(tree.join("share/new\nline"), "newline\n").expect("write");
    fs_err::write(
        tree.join(OsStr::from_bytes(b"share/not-utf8-\xff\xfe")),
        "bytes\n",
    )
    .expect("write");
    fs_err::write(tree.join("share/.hidden"), "hidden\n").expect("write");
    let deep: PathBuf = std::iter::repeat_n("d", 120).collect();
    fs_err::create_dir_all(tree.join("share").join(&deep)).expect("mkdir");
    fs_err::write(tree.join("share").join(&deep).join("bottom"), "deep\n").expect("write");
    tree
}

/// A package that also has `share/` and `lib/`, so that the builder merges those directories
/// (and reads into the hostile ones) rather than linking them whole.
fn merging_package(world: &World) {
    let tree = world.channel.join("merger-1.0");
    fs_err::create_dir_all(tree.join("share/merger")).expect("mkdir");
    fs_err::create_dir_all(tree.join("lib")).expect("mkdir");
    fs_err::write(tree.join("share/merger/README"), "merge\n").expect("write");
    fs_err::write(tree.join("lib/libmerger.so"), "so\n").expect("write");
}

const HOSTILE_SPEC: &str = r#"version = 1

[sources.demo]
channel = "channel"

[packages.hello]
attr = "hello"

[packages.hostile]
attr = "hostile"

[packages.merger]
attr = "merger"
"#;

/// The valid store path whose name ends in `-NAME`.
fn store_path_named(world: &World, name: &str) -> PathBuf {
    fs_err::read_dir(world.root.join("nix/store"))
        .expect("store")
        .map(|entry| entry.expect("entry").path())
        .find(|path| {
            path.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|file| file.ends_with(&format!("-{name}")))
        })
        .unwrap_or_else(|| panic!("no store path named `{name}`"))
}

#[test]
fn hostile_trees_are_stored_as_they_are_and_linked_without_writing_outside() {
    let world = World::new(SPEC_A);
    world.ok(&["apply", "-y"]);
    let outside = outside(&world);
    let before = snapshot(&outside);
    hostile_package(&world, "hostile", &outside);
    merging_package(&world);
    // A package whose tree is a single file, installed by store path.
    let single = world.base.join("single-1.0");
    fs_err::write(&single, "a single file\n").expect("write");
    let single_path = world.ok(&["store", "add", single.to_str().expect("utf-8")]);
    world.write_spec(&format!(
        "{HOSTILE_SPEC}\n[packages.single]\nstore-path = \"{}\"\n",
        single_path.trim()
    ));

    let output = world.run(&["apply", "-y"]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // What the builder skipped, it said.
    assert!(
        stderr.contains("its name is not UTF-8"),
        "the name that is not UTF-8 was skipped silently: {stderr}"
    );
    assert!(
        stderr.contains("because it's not a directory"),
        "the single-file package was skipped silently: {stderr}"
    );
    let installed =
        hardening::check_profile_linking(&world.root, &world.profile(), "hostile", true);
    assert!(installed.contains("hostile-1.0"), "{installed:?}");
    hardening::check_store(&world.root, "after the hostile apply");
    world.check_locks_free("after the hostile apply");
    assert_eq!(snapshot(&outside), before, "something outside was written");

    // The store holds the links as links, with their targets as they were: nothing followed.
    let stored = store_path_named(&world, "hostile-1.0");
    assert_eq!(
        fs_err::read_link(stored.join("bin/absolute")).expect("link"),
        outside.join("secret")
    );
    assert_eq!(
        fs_err::read_link(stored.join("bin/up")).expect("link"),
        Path::new("../../../../../../outside/secret")
    );
    assert!(
        fs_err::symlink_metadata(stored.join("lib"))
            .expect("lib")
            .is_symlink()
    );
    assert_eq!(
        fs_err::read(stored.join("share/new\nline")).expect("newline name"),
        b"newline\n"
    );
    // The environment merged `lib/` and `share/`, reading through the hostile link as Nix's
    // builder does; it may link `lib/inner` by its canonical path (outside), by the store path
    // of the package that links it, depending on which package the builder takes first.
    let environment = world.profile();
    assert!(
        fs_err::symlink_metadata(environment.join("lib/inner"))
            .expect("merged through the link")
            .is_symlink()
    );
    assert!(environment.join("share/new\nline").exists());
    assert!(!environment.join("share/.hidden").exists());
    let applied = world.run(&["apply", "-y"]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let plan = world.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stdout));
    assert_eq!(snapshot(&outside), before, "something outside was written");
}

#[test]
fn a_symlink_loop_where_trees_merge_is_a_clear_error_that_changes_nothing() {
    let world = World::new(SPEC_A);
    world.ok(&["apply", "-y"]);
    let tree = world.channel.join("loopy-1.0/share");
    fs_err::create_dir_all(&tree).expect("mkdir");
    symlink("loop-b", tree.join("loop-a")).expect("symlink");
    symlink("loop-a", tree.join("loop-b")).expect("symlink");
    merging_package(&world);
    world.write_spec(&format!(
        "{SPEC_A}\n[packages.loopy]\nattr = \"loopy\"\n\n[packages.merger]\nattr = \"merger\"\n"
    ));
    let before = world.files();
    let generations = world.generations();
    let output = world.run(&["apply", "-y"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("loop-a") && stderr.contains("Too many levels of symbolic links"),
        "{stderr}"
    );
    assert_eq!(world.generations(), generations, "a generation was made");
    world.check("after the refused loop", &[&before]);
}

#[test]
#[expect(clippy::print_stderr, reason = "the figures HARDENING.md quotes")]
fn store_adds_of_hostile_trees_copy_exactly_and_write_nothing_outside() {
    let world = World::new(SPEC_A);
    let outside = outside(&world);
    let before = snapshot(&outside);
    let trees = world.base.join("trees");
    fs_err::create_dir_all(&trees).expect("mkdir");

    let hostile = hostile_package(&world, "hostile", &outside);
    let single = trees.join("single-1.0");
    fs_err::write(&single, "one file\n").expect("write");
    let top_link = trees.join("toplink-1.0");
    symlink(outside.join("directory"), &top_link).expect("symlink");
    // A large flat tree and a deep one; `DECLENV_HUGE_TREE=N` for more files.
    let files = hardening::count_from_env("DECLENV_HUGE_TREE", 2_000);
    let huge = trees.join("huge-1.0");
    fs_err::create_dir_all(&huge).expect("mkdir");
    for index in 0..files {
        fs_err::write(huge.join(format!("f{index:06}")), index.to_string()).expect("write");
    }
    let deep = trees.join("deep-1.0");
    let bottom: PathBuf = std::iter::repeat_n("dd", 400).collect();
    fs_err::create_dir_all(deep.join(&bottom)).expect("mkdir");
    fs_err::write(deep.join(&bottom).join("f"), "bottom\n").expect("write");

    let mut tried = 0;
    for tree in [&hostile, &single, &top_link, &huge, &deep] {
        let path = world.ok(&["store", "add", tree.to_str().expect("utf-8")]);
        let stored = PathBuf::from(path.trim());
        tried += 1;
        // The copy archives exactly as the original does (same types, names, contents, link
        // targets, executable bits): nothing was followed or dropped.
        let mut original = Vec::new();
        declenv::store::nar::dump(tree, &mut original).expect("archive the original");
        let mut copy = Vec::new();
        declenv::store::nar::dump(&stored, &mut copy).expect("archive the copy");
        assert!(
            original == copy,
            "`{}` was not stored as it is",
            tree.display()
        );
    }
    hardening::check_store(&world.root, "after the hostile adds");
    assert_eq!(snapshot(&outside), before, "something outside was written");
    eprintln!("untrusted trees: {tried} hostile trees stored ({files} files in the largest)");
}

/// A tree whose files change while `store add` copies it: every add either fails clearly or
/// stores a path whose tree is exactly what it registered.
#[test]
fn trees_changing_during_an_add_never_make_a_damaged_path() {
    let world = World::new(SPEC_A);
    let tree = world.base.join("moving-1.0");
    fs_err::create_dir_all(tree.join("sub")).expect("mkdir");
    for index in 0..200 {
        fs_err::write(tree.join(format!("sub/f{index}")), "initial").expect("write");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mutator = {
        let stop = Arc::clone(&stop);
        let tree = tree.clone();
        std::thread::spawn(move || {
            let mut round = 0_u64;
            while !stop.load(Ordering::SeqCst) {
                round += 1;
                let index = round % 200;
                let file = tree.join(format!("sub/f{index}"));
                // Rewrite in place, replace by rename, turn into a symlink and back.
                let _ = fs_err::write(&file, round.to_string().repeat(100));
                let spare = tree.join(format!("spare{}", round % 3));
                let _ = fs_err::write(&spare, "renamed in");
                let _ = fs_err::rename(&spare, &file);
                let _ = fs_err::remove_file(&file);
                let _ = symlink("elsewhere", &file);
                let _ = fs_err::remove_file(&file);
                let _ = fs_err::write(&file, "back");
            }
        })
    };
    let mut stored = 0;
    for attempt in 0..20 {
        let output = world.run(&["store", "add", tree.to_str().expect("utf-8")]);
        if output.status.success() {
            stored += 1;
        } else {
            assert!(
                text(&output.stderr).starts_with("error:"),
                "add {attempt}: {}",
                text(&output.stderr)
            );
        }
        hardening::check_store(&world.root, &format!("after add {attempt}"));
    }
    stop.store(true, Ordering::SeqCst);
    mutator.join().expect("mutator");
    assert!(stored > 0, "no add of the moving tree succeeded");
}

/// A package tree changed after it was locked is refused by its locked hash, even when it
/// changes in the middle of an apply, and nothing is switched.
#[test]
fn a_tree_changed_during_an_apply_is_refused_and_nothing_switches() {
    let world = World::new(SPEC_A);
    world.ok(&["apply", "-y"]);
    world.write_spec(&format!("{SPEC_A}\n[packages.cowsay]\nattr = \"cowsay\"\n"));
    let before = world.files();
    let generations = world.generations();
    let release = world.base.join("release");
    // Paused after the first package's copy, before `cowsay`'s.
    let mut command = world.command(&["apply", "-y"]);
    command
        .env("DECLENV_FAULT", "store-temp-written:pause")
        .env("DECLENV_FAULT_RELEASE", &release);
    let mut apply = Watched::spawn(command);
    let marker = declenv::fault::marker(declenv::fault::Point::StoreTempWritten);
    assert!(apply.wait_for_line(&marker), "{:?}", apply.seen);
    let cowsay = world.channel.join("cowsay-3.7.0/bin/cowsay");
    let mut contents = fs_err::read(&cowsay).expect("read");
    contents.extend_from_slice(b"\necho tampered\n");
    fs_err::write(&cowsay, contents).expect("tamper");
    fs_err::write(&release, "").expect("release");
    let output = apply.finish("the paused apply");
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("cowsay") && stderr.contains("changed since it was locked"),
        "{stderr}"
    );
    assert_eq!(world.generations(), generations);
    world.check("after the tampered apply", &[&before]);
}

#[test]
fn a_channel_package_named_in_bytes_that_are_not_utf8_is_a_clear_error() {
    let world = World::new(SPEC_A);
    fs_err::create_dir_all(world.channel.join(OsStr::from_bytes(b"bad\xffname-1.0")))
        .expect("mkdir");
    let output = world.run(&["apply", "-y"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has a name that is not UTF-8"), "{stderr}");
    assert!(!world.profile().exists() && !world.lockfile().exists());
}
