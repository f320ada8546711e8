//! Behaviour of [`EmbeddedStore`]: adding, validity, references, deletion, verification and
//! recovery from interrupted operations.

use super::*;
use rstest::rstest;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

/// A store under a temporary root, and a scratch directory for source trees.
struct Fixture {
    _root: tempfile::TempDir,
    scratch: tempfile::TempDir,
    store: EmbeddedStore,
}

impl Fixture {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(root.path()).expect("open store");
        Self {
            _root: root,
            scratch: tempfile::tempdir().expect("tempdir"),
            store,
        }
    }

    /// Builds a small tree named `name` in the scratch directory, with `marker` in a file.
    fn tree(&self, name: &str, marker: &str) -> PathBuf {
        let root = self.scratch.path().join(name);
        fs::create_dir_all(root.join("bin")).expect("mkdir");
        fs::create_dir_all(root.join("share/empty")).expect("mkdir");
        fs::write(root.join("bin/tool"), format!("#!/bin/sh\necho {marker}\n")).expect("write");
        fs::set_permissions(root.join("bin/tool"), Permissions::from_mode(0o755)).expect("chmod");
        fs::write(root.join("share/data"), marker).expect("write");
        fs::write(root.join("share/empty-file"), b"").expect("write");
        symlink("../bin/tool", root.join("share/link")).expect("symlink");
        symlink("/nonexistent/absolute", root.join("share/dangling")).expect("symlink");
        root
    }

    fn store_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.store.store_directory)
            .expect("list")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Store trees are read-only; without this a user who is not root could not remove them.
        let _ = tree::remove_tree(&self.store.store_directory);
    }
}

use std::fs::Permissions;

#[test]
fn add_tree_computes_nix_path_and_registers() {
    let fixture = Fixture::new();
    let source = fixture.tree("hello", "hello");
    let expected_nar = nar::hash_path(&source).expect("hash");
    let path = fixture.store.add_tree(&source, "hello-1.0").expect("add");
    let expected_path =
        path::source_store_path(fixture.store.store_dir(), &expected_nar.sha256, "hello-1.0")
            .expect("path");
    assert_eq!(path, expected_path);
    assert_eq!(
        path.to_path_buf(),
        fixture.store.store_directory.join(path.base_name())
    );
    let info = fixture
        .store
        .path_info(&path)
        .expect("info")
        .expect("valid");
    assert_eq!(info.nar, expected_nar);
    assert!(info.references.is_empty());
    assert!(fixture.store.is_valid(&path).expect("valid"));
    assert_eq!(
        fixture.store.valid_paths().expect("list"),
        std::slice::from_ref(&path)
    );
    assert!(fixture.store.verify().expect("verify").is_clean());
    assert_eq!(fixture.store_entries(), [path.base_name()]);
}

#[test]
fn added_trees_are_read_only_with_nix_times() {
    let fixture = Fixture::new();
    let path = fixture
        .store
        .add_tree(&fixture.tree("t", "x"), "t")
        .expect("add");
    let root = path.to_path_buf();
    for (relative, mode) in [
        ("", 0o555),
        ("bin", 0o555),
        ("bin/tool", 0o555),
        ("share/data", 0o444),
        ("share/empty", 0o555),
        ("share/empty-file", 0o444),
    ] {
        let metadata = fs::symlink_metadata(root.join(relative)).expect("stat");
        assert_eq!(metadata.mode() & 0o7777, mode, "{relative}");
        assert_eq!(metadata.mtime(), 1, "{relative}");
    }
    assert_eq!(
        fs::read_link(root.join("share/dangling")).expect("readlink"),
        PathBuf::from("/nonexistent/absolute")
    );
}

#[rstest]
#[case::regular_file("file", false)]
#[case::executable_file("tool", true)]
fn single_files_are_stored_as_files(#[case] name: &str, #[case] executable: bool) {
    let fixture = Fixture::new();
    let source = fixture.scratch.path().join(name);
    fs::write(&source, b"contents").expect("write");
    let mode = if executable { 0o755 } else { 0o644 };
    fs::set_permissions(&source, Permissions::from_mode(mode)).expect("chmod");
    let path = fixture.store.add_tree(&source, name).expect("add");
    let metadata = fs::symlink_metadata(path.to_path_buf()).expect("stat");
    assert!(metadata.is_file());
    assert_eq!(
        metadata.mode() & 0o7777,
        if executable { 0o555 } else { 0o444 }
    );
    assert_eq!(fs::read(path.to_path_buf()).expect("read"), b"contents");
    assert!(fixture.store.verify().expect("verify").is_clean());
}

#[test]
fn a_symlink_source_is_stored_as_a_symlink() {
    let fixture = Fixture::new();
    let source = fixture.scratch.path().join("link");
    symlink("somewhere/else", &source).expect("symlink");
    let path = fixture.store.add_tree(&source, "link").expect("add");
    assert_eq!(
        fs::read_link(path.to_path_buf()).expect("readlink"),
        PathBuf::from("somewhere/else")
    );
    assert!(fixture.store.verify().expect("verify").is_clean());
}

#[test]
fn adding_a_valid_path_again_changes_nothing() {
    let fixture = Fixture::new();
    let source = fixture.tree("again", "again");
    let first = fixture.store.add_tree(&source, "again").expect("add");
    let registration = fixture.store.registration_path(&first);
    let before = fs::read(&registration).expect("read");
    let second = fixture.store.add_tree(&source, "again").expect("add again");
    assert_eq!(first, second);
    assert_eq!(fs::read(&registration).expect("read"), before);
    assert_eq!(fixture.store_entries(), [first.base_name()]);
}

#[test]
fn different_names_give_different_paths_for_the_same_tree() {
    let fixture = Fixture::new();
    let source = fixture.tree("same", "same");
    let first = fixture.store.add_tree(&source, "one").expect("add");
    let second = fixture.store.add_tree(&source, "two").expect("add");
    assert_ne!(first.hash_part(), second.hash_part());
}

#[test]
fn references_are_found_and_protect_against_deletion() {
    let fixture = Fixture::new();
    let dependency = fixture
        .store
        .add_tree(&fixture.tree("lib", "lib"), "lib-1.0")
        .expect("add");
    let other = fixture
        .store
        .add_tree(&fixture.tree("unrelated", "unrelated"), "unrelated")
        .expect("add");
    let user = fixture.tree("app", &format!("{dependency}/lib/libfoo.so"));
    let user_path = fixture.store.add_tree(&user, "app-1.0").expect("add");
    let info = fixture
        .store
        .path_info(&user_path)
        .expect("info")
        .expect("valid");
    assert_eq!(info.references, std::slice::from_ref(&dependency));

    let refused = fixture.store.delete(&dependency);
    assert!(
        matches!(&refused, Err(StoreError::StillReferenced { path, referrer })
            if *path == dependency.to_string() && *referrer == user_path.to_string()),
        "{refused:?}"
    );
    fixture.store.delete(&user_path).expect("delete user");
    fixture
        .store
        .delete(&dependency)
        .expect("delete dependency");
    fixture.store.delete(&other).expect("delete other");
    assert!(fixture.store_entries().is_empty());
    assert!(fixture.store.valid_paths().expect("list").is_empty());
    assert!(fixture.store.verify().expect("verify").is_clean());
}

#[test]
fn references_in_symlink_targets_count() {
    let fixture = Fixture::new();
    let dependency = fixture
        .store
        .add_tree(&fixture.tree("dep", "dep"), "dep")
        .expect("add");
    let source = fixture.scratch.path().join("linker");
    fs::create_dir(&source).expect("mkdir");
    symlink(
        dependency.to_path_buf().join("bin/tool"),
        source.join("tool"),
    )
    .expect("symlink");
    let path = fixture.store.add_tree(&source, "linker").expect("add");
    let info = fixture
        .store
        .path_info(&path)
        .expect("info")
        .expect("valid");
    assert_eq!(info.references, [dependency]);
}

#[test]
fn deleting_a_missing_path_is_not_an_error() {
    let fixture = Fixture::new();
    let path = fixture
        .store
        .parse_path(&format!(
            "{}/bjgn9g9kjn5hwvawjyr1hznvf7yas3fm-d",
            fixture.store.store_dir()
        ))
        .expect("parse");
    fixture.store.delete(&path).expect("delete");
}

#[test]
fn rejects_invalid_names_before_copying() {
    let fixture = Fixture::new();
    let source = fixture.tree("named", "x");
    for name in ["", ".hidden", "a b", "é", &"a".repeat(212)] {
        assert!(
            matches!(
                fixture.store.add_tree(&source, name),
                Err(StoreError::InvalidPath(_))
            ),
            "{name:?}"
        );
    }
    assert!(fixture.store_entries().is_empty());
}

#[test]
fn rejects_sockets_and_leaves_nothing_behind() {
    let fixture = Fixture::new();
    let source = fixture.tree("withsocket", "x");
    let socket = source.join("share/socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    match fixture.store.add_tree(&source, "withsocket") {
        Err(StoreError::UnsupportedFileType { path, kind }) => {
            assert_eq!(path, socket);
            assert_eq!(kind, "socket");
        }
        other => panic!("expected an unsupported file type, got {other:?}"),
    }
    assert!(fixture.store_entries().is_empty());
}

#[test]
fn rejects_a_missing_source_naming_it() {
    let fixture = Fixture::new();
    let missing = fixture.scratch.path().join("missing");
    assert!(matches!(
        fixture.store.add_tree(&missing, "missing"),
        Err(StoreError::Io { path, .. }) if path == missing
    ));
}

#[test]
fn rejects_a_source_containing_the_store() {
    let root = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(root.path()).expect("open");
    assert!(matches!(
        store.add_tree(root.path(), "everything"),
        Err(StoreError::SourceContainsStore { .. })
    ));
}

#[test]
fn rejects_paths_of_other_stores() {
    let fixture = Fixture::new();
    let foreign = StorePath::from_absolute_path(
        StoreDir::new("/nix/store").expect("valid"),
        "/nix/store/bjgn9g9kjn5hwvawjyr1hznvf7yas3fm-d",
    )
    .expect("parse");
    assert!(matches!(
        fixture.store.is_valid(&foreign),
        Err(StoreError::ForeignPath { .. })
    ));
    assert!(matches!(
        fixture.store.delete(&foreign),
        Err(StoreError::ForeignPath { .. })
    ));
}

/// A crash between the rename and the registration leaves a final-named tree without a
/// registration, possibly incomplete. It must count as invalid and be replaced.
#[test]
fn an_unregistered_final_path_is_invalid_and_replaced() {
    let fixture = Fixture::new();
    let source = fixture.tree("crash", "crash");
    let path = fixture.store.add_tree(&source, "crash").expect("add");
    fs::remove_file(fixture.store.registration_path(&path)).expect("drop registration");
    // Simulate an incomplete tree under the final name.
    let on_disk = path.to_path_buf();
    fs::set_permissions(on_disk.join("share"), Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(on_disk.join("share/data"), Permissions::from_mode(0o644)).expect("chmod");
    fs::write(on_disk.join("share/data"), b"torn").expect("write");

    assert!(!fixture.store.is_valid(&path).expect("is_valid"));
    assert_eq!(fixture.store.path_info(&path).expect("info"), None);
    let report = fixture.store.verify().expect("verify");
    assert_eq!(report.unregistered, std::slice::from_ref(&on_disk));
    assert!(report.intact.is_empty());

    assert_eq!(
        fixture.store.add_tree(&source, "crash").expect("re-add"),
        path
    );
    assert_eq!(
        fs::read(on_disk.join("share/data")).expect("read"),
        b"crash"
    );
    assert!(fixture.store.verify().expect("verify").is_clean());
}

/// A crash while copying leaves a temporary entry; it is not a store path and does not get
/// in the way.
#[test]
fn a_leftover_temporary_entry_is_reported_and_harmless() {
    let fixture = Fixture::new();
    let leftover = fixture
        .store
        .store_directory
        .join(format!("{}crashed", tree::ADD_PREFIX));
    fs::create_dir_all(leftover.join("half")).expect("mkdir");
    fs::write(leftover.join("half/file"), b"partial").expect("write");
    tree::canonicalise(&leftover).expect("make read-only");

    let report = fixture.store.verify().expect("verify");
    assert_eq!(report.unregistered, std::slice::from_ref(&leftover));
    let path = fixture
        .store
        .add_tree(&fixture.tree("fine", "fine"), "fine")
        .expect("add");
    assert!(fixture.store.is_valid(&path).expect("valid"));
    let report = fixture.store.verify().expect("verify");
    assert_eq!(report.intact, [path]);
    assert_eq!(report.unregistered, [leftover]);
}

#[test]
fn a_registered_path_that_vanished_is_missing_and_re_added() {
    let fixture = Fixture::new();
    let source = fixture.tree("gone", "gone");
    let path = fixture.store.add_tree(&source, "gone").expect("add");
    tree::remove_tree(&path.to_path_buf()).expect("remove");
    assert!(!fixture.store.is_valid(&path).expect("is_valid"));
    let report = fixture.store.verify().expect("verify");
    assert_eq!(report.missing, std::slice::from_ref(&path));
    fixture.store.add_tree(&source, "gone").expect("re-add");
    assert!(fixture.store.verify().expect("verify").is_clean());
}

#[test]
fn verify_reports_corrupt_paths() {
    let fixture = Fixture::new();
    let path = fixture
        .store
        .add_tree(&fixture.tree("corrupt", "corrupt"), "corrupt")
        .expect("add");
    let data = path.to_path_buf().join("share/data");
    fs::set_permissions(&data, Permissions::from_mode(0o644)).expect("chmod");
    fs::write(&data, b"tampered").expect("write");
    let report = fixture.store.verify().expect("verify");
    assert_eq!(report.corrupt.len(), 1);
    let corrupt = &report.corrupt[0];
    assert_eq!(corrupt.path, path);
    let actual = corrupt.actual.as_ref().expect("hashable");
    assert_ne!(actual.sha256, corrupt.expected.sha256);
    // Nix calls a path valid as long as it is registered; so does declenv.
    assert!(fixture.store.is_valid(&path).expect("is_valid"));
}

#[test]
fn a_broken_registration_is_reported_and_replaced_by_the_next_add() {
    let fixture = Fixture::new();
    let source = fixture.tree("broken", "broken");
    let path = fixture.store.add_tree(&source, "broken").expect("add");
    let registration = fixture.store.registration_path(&path);
    fs::write(&registration, b"{ torn").expect("write");
    fs::write(fixture.store.valid_directory.join("stray.txt"), b"").expect("write");

    assert!(matches!(
        fixture.store.is_valid(&path),
        Err(StoreError::Registration { .. })
    ));
    let report = fixture.store.verify().expect("verify");
    let broken: Vec<_> = report
        .broken_registrations
        .iter()
        .map(|broken| broken.path.clone())
        .collect();
    let mut expected = vec![
        registration.clone(),
        fixture.store.valid_directory.join("stray.txt"),
    ];
    expected.sort();
    assert_eq!(broken, expected);

    fixture.store.add_tree(&source, "broken").expect("re-add");
    assert!(fixture.store.is_valid(&path).expect("valid"));
}

#[test]
fn dangling_references_are_reported() {
    let fixture = Fixture::new();
    let dependency = fixture
        .store
        .add_tree(&fixture.tree("dep", "dep"), "dep")
        .expect("add");
    let user = fixture
        .store
        .add_tree(&fixture.tree("user", &dependency.to_string()), "user")
        .expect("add");
    // Bypass `delete`, as a crash or a careless tool might.
    fs::remove_file(fixture.store.registration_path(&dependency)).expect("remove");
    let report = fixture.store.verify().expect("verify");
    assert_eq!(report.dangling_references, [(user, dependency.clone())]);
    assert_eq!(report.unregistered, [dependency.to_path_buf()]);
}

#[test]
fn concurrent_adds_of_the_same_tree_agree() {
    let fixture = Fixture::new();
    let source = fixture.tree("race", "race");
    let paths: Vec<StorePath> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| fixture.store.add_tree(&source, "race").expect("add")))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("thread"))
            .collect()
    });
    assert!(paths.windows(2).all(|pair| pair[0] == pair[1]));
    assert!(fixture.store.verify().expect("verify").is_clean());
    assert_eq!(fixture.store_entries().len(), 1);
}

#[test]
fn non_utf8_entry_names_are_stored() {
    use std::os::unix::ffi::OsStrExt;
    let fixture = Fixture::new();
    let source = fixture.scratch.path().join("bytes");
    fs::create_dir(&source).expect("mkdir");
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9\xff");
    fs::write(source.join(name), b"latin-1").expect("write");
    let path = fixture.store.add_tree(&source, "bytes").expect("add");
    assert_eq!(
        fs::read(path.to_path_buf().join(name)).expect("read"),
        b"latin-1"
    );
    assert_eq!(
        fixture
            .store
            .path_info(&path)
            .expect("info")
            .expect("valid")
            .nar,
        nar::hash_path(&source).expect("hash")
    );
}

#[test]
fn errors_name_their_paths() {
    let fixture = Fixture::new();
    let missing = fixture.scratch.path().join("nope");
    let error = fixture
        .store
        .add_tree(&missing, "nope")
        .expect_err("missing");
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );
}

/// A link tree with a merged directory, a link into a valid path and one that dangles.
fn link_tree(dependency: &StorePath) -> LinkTree {
    let mut tree = LinkTree::new();
    tree.symlink("share", "/nonexistent/share");
    tree.directory("bin");
    tree.symlink("bin/tool", format!("{dependency}/bin/tool"));
    tree.symlink("bin/relative", "../share");
    tree.directory("lib");
    tree.directory("lib/empty");
    tree
}

/// The same tree on disk.
fn link_tree_on_disk(tree: &LinkTree, root: &Path) {
    fs::create_dir(root).expect("mkdir");
    let mut entries: Vec<&LinkEntry> = tree.entries().iter().collect();
    entries.sort_by(|left, right| crate::plan::layout::compare_paths(left.path(), right.path()));
    for entry in entries {
        match entry {
            LinkEntry::Directory { path } => fs::create_dir(root.join(path)).expect("mkdir"),
            LinkEntry::Symlink { path, target } => {
                symlink(target, root.join(path)).expect("symlink");
            }
        }
    }
}

#[test]
fn a_link_tree_gets_the_path_and_registration_of_the_same_tree_on_disk() {
    let fixture = Fixture::new();
    let dependency = fixture
        .store
        .add_tree(&fixture.tree("lib", "lib"), "lib-1.0")
        .expect("add");
    let tree = link_tree(&dependency);
    let path = fixture.store.add_link_tree(&tree, "env").expect("add");
    let info = fixture
        .store
        .path_info(&path)
        .expect("info")
        .expect("valid");
    assert_eq!(info.references, std::slice::from_ref(&dependency));
    assert!(fixture.store.verify().expect("verify").is_clean());
    let root = path.to_path_buf();
    for (relative, mode) in [("", 0o555), ("bin", 0o555), ("lib/empty", 0o555)] {
        let metadata = fs::symlink_metadata(root.join(relative)).expect("stat");
        assert_eq!(metadata.mode() & 0o7777, mode, "{relative}");
        assert_eq!(metadata.mtime(), 1, "{relative}");
    }
    assert_eq!(
        fs::read_link(root.join("bin/relative")).expect("readlink"),
        PathBuf::from("../share")
    );

    // The same tree on disk hashes to the same archive, so `add_tree` names it the same.
    let source = fixture.scratch.path().join("env");
    link_tree_on_disk(&tree, &source);
    let on_disk = nar::hash_path(&source).expect("hash");
    assert_eq!(on_disk, info.nar);
    assert_eq!(fixture.store.add_tree(&source, "env").expect("add"), path);
}

#[test]
fn adding_a_valid_link_tree_again_creates_nothing() {
    let fixture = Fixture::new();
    let mut tree = LinkTree::new();
    tree.directory("bin");
    tree.symlink("bin/x", "/somewhere/x");
    let first = fixture.store.add_link_tree(&tree, "env").expect("add");
    let registration = fixture.store.registration_path(&first);
    let before = fs::read(&registration).expect("read");
    let inode = fs::symlink_metadata(first.to_path_buf())
        .expect("stat")
        .ino();
    let second = fixture
        .store
        .add_link_tree(&tree, "env")
        .expect("add again");
    assert_eq!(first, second);
    assert_eq!(fs::read(&registration).expect("read"), before);
    assert_eq!(
        fs::symlink_metadata(first.to_path_buf())
            .expect("stat")
            .ino(),
        inode
    );
    assert_eq!(fixture.store_entries(), [first.base_name()]);
}

#[test]
fn a_link_tree_that_is_not_a_tree_adds_nothing() {
    let fixture = Fixture::new();
    let mut tree = LinkTree::new();
    tree.symlink("bin/x", "/somewhere/x");
    let error = fixture
        .store
        .add_link_tree(&tree, "env")
        .expect_err("no parent");
    assert!(
        matches!(&error, StoreError::LinkTree(LinkTreeError { path, problem: LinkTreeProblem::NoParentDirectory }) if path == "bin/x"),
        "{error:?}"
    );
    assert!(fixture.store_entries().is_empty());
    let mut tree = LinkTree::new();
    tree.symlink("../escape", "/somewhere");
    assert!(fixture.store.add_link_tree(&tree, "env").is_err());
    assert!(fixture.store_entries().is_empty());
    assert!(!fixture.scratch.path().join("escape").exists());
}

#[test]
fn a_file_from_memory_is_the_file_added_from_disk() {
    let fixture = Fixture::new();
    let dependency = fixture
        .store
        .add_tree(&fixture.tree("lib", "lib"), "lib-1.0")
        .expect("add");
    let contents = format!("[ {{ out = \"{dependency}\"; }} ]");
    let path = fixture
        .store
        .add_file(contents.as_bytes(), "env-manifest.nix")
        .expect("add");
    let metadata = fs::symlink_metadata(path.to_path_buf()).expect("stat");
    assert!(metadata.is_file());
    assert_eq!(metadata.mode() & 0o7777, 0o444);
    assert_eq!(metadata.mtime(), 1);
    assert_eq!(
        fs::read(path.to_path_buf()).expect("read"),
        contents.as_bytes()
    );
    let info = fixture
        .store
        .path_info(&path)
        .expect("info")
        .expect("valid");
    assert_eq!(info.references, std::slice::from_ref(&dependency));
    let source = fixture.scratch.path().join("env-manifest.nix");
    fs::write(&source, &contents).expect("write");
    assert_eq!(
        fixture
            .store
            .add_tree(&source, "env-manifest.nix")
            .expect("add"),
        path
    );
    assert!(fixture.store.verify().expect("verify").is_clean());
}
