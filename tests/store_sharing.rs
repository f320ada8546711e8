//! Sharing paths: closures, `nix-store --export`/`--import`, binary caches, root-to-root
//! copies and substituters, differentially against Nix 2.8.
//!
//! The fixtures under `tests/fixtures/sharing/` hold what Nix wrote for a small closure
//! (regenerate them with `scripts/conformance/gen_sharing.py`; their README describes them),
//! named for the store directory `/tmp/declenv-sharing/nix/store`. The library tests open a
//! temporary root as a chroot store of that directory ([`EmbeddedStore::open_relocated`]), so
//! they need neither Nix nor that directory.
//!
//! The `live` tests drive the installed Nix 2.8 against declenv's roots (a Nix chroot store,
//! `--store local?root=…`, with `NIX_STORE_DIR` set to the root's store directory, so the paths
//! are the same); they run only when `DECLENV_TEST_NIX=1` is set (as root, without a daemon).

#![allow(
    clippy::print_stderr,
    reason = "the live tests say on stderr when they are skipped"
)]

mod support;

use declenv::store::{BinaryCache, EmbeddedStore, Query, StoreDir, StorePath, TransferError};
use serde::Deserialize;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The store directory the fixtures were made for.
const FIXTURE_STORE_DIR: &str = "/tmp/declenv-sharing/nix/store";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sharing")
        .join(name)
}

/// Makes every directory under `path` writable, so that a temporary directory holding
/// read-only store trees can be removed by a user who is not root.
fn make_writable(path: &Path) {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return;
    };
    if metadata.is_dir() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                make_writable(&entry.path());
            }
        }
    }
}

/// A temporary directory that is made writable before it is removed.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("tempdir"))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        make_writable(self.0.path());
    }
}

// ---------------------------------------------------------------------------------------------
// The fixtures
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct FixturePaths {
    top: String,
    paths: Vec<FixturePath>,
}

#[derive(Debug, Deserialize)]
struct FixturePath {
    path: String,
    nar_hash: String,
    nar_size: u64,
    references: Vec<String>,
    deriver: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FixtureQuery {
    query: String,
    paths: Vec<String>,
    result: Vec<String>,
}

fn fixture_paths() -> FixturePaths {
    serde_json::from_str(&fs_err::read_to_string(fixture("paths.json")).expect("read"))
        .expect("paths.json")
}

/// A root under `scratch` opened as a chroot store of the fixtures' store directory.
fn fixture_store(root: &Path) -> EmbeddedStore {
    EmbeddedStore::open_relocated(root, StoreDir::new(FIXTURE_STORE_DIR).expect("store dir"))
        .expect("opens")
}

fn parse(store: &EmbeddedStore, path: &str) -> StorePath {
    store.parse_path(path).expect("store path")
}

/// A path as `nix-store -q` describes it: the path, `--hash`, `--size`, `--references` and
/// `--deriver`.
type Described = (String, String, u64, Vec<String>, Option<String>);

/// Every path of the store with its hash, size, references (in Nix's order, as
/// `nix-store -q --references` prints them) and deriver.
fn described(store: &EmbeddedStore) -> Vec<Described> {
    let mut described = Vec::new();
    for path in store.valid_paths().expect("valid paths") {
        let info = store.path_info(&path).expect("info").expect("valid");
        let references: Vec<String> = store
            .query(Query::References, std::slice::from_ref(&path))
            .expect("references")
            .iter()
            .map(|reference| reference.path.to_string())
            .collect();
        described.push((
            path.to_string(),
            info.nar.to_nix_string(),
            info.nar.size,
            references,
            info.deriver.as_ref().map(ToString::to_string),
        ));
    }
    described.sort();
    described
}

fn expected_description() -> Vec<Described> {
    let mut expected: Vec<_> = fixture_paths()
        .paths
        .into_iter()
        .map(|path| {
            (
                path.path,
                path.nar_hash,
                path.nar_size,
                path.references,
                path.deriver,
            )
        })
        .collect();
    expected.sort();
    expected
}

/// Asserts that nothing is valid and nothing is left in the store directory.
fn assert_nothing_registered(store: &EmbeddedStore, what: &str) {
    assert_eq!(store.valid_paths().expect("valid paths"), [], "{what}");
    assert_eq!(
        store.verify_leftovers().expect("leftovers"),
        Vec::<PathBuf>::new(),
        "{what}"
    );
}

// ---------------------------------------------------------------------------------------------
// Export and import against the fixtures
// ---------------------------------------------------------------------------------------------

#[test]
fn a_nix_export_imports_with_nix_hashes_references_and_derivers() {
    let scratch = Scratch::new();
    let store = fixture_store(&scratch.path().join("root"));
    let bytes = fs_err::read(fixture("closure.export")).expect("read");
    let imported = store.import_paths(bytes.as_slice()).expect("imports");
    let fixture = fixture_paths();
    let in_stream_order: Vec<String> = imported.paths.iter().map(ToString::to_string).collect();
    let nix_order: Vec<String> = fixture.paths.iter().map(|path| path.path.clone()).collect();
    assert_eq!(
        in_stream_order, nix_order,
        "nix-store --export writes `-qR` order"
    );
    assert_eq!(imported.added, imported.paths);
    assert_eq!(described(&store), expected_description());
    let report = store.verify().expect("verify");
    assert!(report.is_clean(), "{report:?}");

    // Paths already present are skipped.
    let again = store.import_paths(bytes.as_slice()).expect("imports again");
    assert_eq!(again.paths, imported.paths);
    assert!(again.added.is_empty());
    assert!(store.verify().expect("verify").is_clean());
}

#[test]
fn our_exports_are_nix_exports_byte_for_byte() {
    let scratch = Scratch::new();
    let store = fixture_store(&scratch.path().join("root"));
    let closure = fs_err::read(fixture("closure.export")).expect("read");
    store.import_paths(closure.as_slice()).expect("imports");
    let top = parse(&store, &fixture_paths().top);

    let mut exported = Vec::new();
    store
        .export_paths(std::slice::from_ref(&top), true, &mut exported)
        .expect("exports the closure");
    assert!(
        exported == closure,
        "`export --closure top` differs from Nix's export"
    );

    // Only the paths given, as `nix-store --export top d` (in either argument order).
    let d = store
        .valid_paths()
        .expect("valid")
        .into_iter()
        .find(|path| path.name() == "d-1.0")
        .expect("d");
    let subset = fs_err::read(fixture("subset.export")).expect("read");
    for paths in [[top.clone(), d.clone()], [d, top]] {
        let mut exported = Vec::new();
        store
            .export_paths(&paths, false, &mut exported)
            .expect("exports");
        assert!(
            exported == subset,
            "`export top d` differs from Nix's export"
        );
    }
}

#[test]
fn an_import_without_the_references_registers_nothing() {
    let scratch = Scratch::new();
    let store = fixture_store(&scratch.path().join("root"));
    let subset = fs_err::read(fixture("subset.export")).expect("read");
    let error = store.import_paths(subset.as_slice()).expect_err("refused");
    assert!(
        matches!(&error, TransferError::MissingReference { path, .. } if path.ends_with("-d-1.0")),
        "{error}"
    );
    assert!(
        error.hint().is_some_and(|hint| hint.contains("closure")),
        "{error}"
    );
    assert_nothing_registered(&store, "subset import");

    // With the closure present, the subset's paths are all skipped.
    let closure = fs_err::read(fixture("closure.export")).expect("read");
    store.import_paths(closure.as_slice()).expect("imports");
    let again = store.import_paths(subset.as_slice()).expect("imports");
    assert_eq!(again.paths.len(), 2);
    assert!(again.added.is_empty());
}

#[test]
fn a_damaged_export_registers_nothing() {
    let closure = fs_err::read(fixture("closure.export")).expect("read");
    let scratch = Scratch::new();
    let store = fixture_store(&scratch.path().join("root"));
    // Every truncation (in steps that hit numbers, strings and archive contents).
    for length in (0..closure.len())
        .step_by(24)
        .chain([closure.len() - 8, closure.len() - 1])
    {
        let error = store
            .import_paths(&closure[..length])
            .expect_err("a truncated stream is refused");
        assert!(
            matches!(
                error,
                TransferError::MalformedExport { .. } | TransferError::Archive { .. }
            ),
            "{length}: {error}"
        );
        assert_nothing_registered(&store, &format!("truncated at {length}"));
    }
    // Hostile values where the format has numbers: counts, markers, lengths.
    let mut wrong_marker = closure.clone();
    wrong_marker[0] = 2;
    let mut huge_count = closure.clone();
    let magic = 0x4558_494e_u64.to_le_bytes();
    let at = closure
        .windows(8)
        .position(|window| window == magic)
        .expect("a marker");
    huge_count[at + 8..at + 16].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut wrong_magic = closure.clone();
    wrong_magic[at] ^= 1;
    for (name, stream, expected) in [
        ("marker", wrong_marker, "does not look like"),
        ("path length", huge_count, "over the limit"),
        ("magic", wrong_magic, "export marker"),
    ] {
        let error = store.import_paths(stream.as_slice()).expect_err(name);
        assert!(error.to_string().contains(expected), "{name}: {error}");
        assert_nothing_registered(&store, name);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Whatever the bytes, an import never panics, and a failed one registers nothing.
    #[test]
    fn mutated_exports_never_panic_and_fail_whole(
        flips in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 1..4),
    ) {
        let mut stream = fs_err::read(fixture("closure.export")).expect("read");
        for (index, byte) in flips {
            let position = index.index(stream.len());
            stream[position] = byte;
        }
        let scratch = Scratch::new();
        let store = fixture_store(&scratch.path().join("root"));
        match store.import_paths(stream.as_slice()) {
            // The format has no checksum: a flip in file contents imports other contents.
            Ok(imported) => proptest::prop_assert!(store.verify().expect("verify").is_clean() && !imported.paths.is_empty()),
            Err(_) => {
                proptest::prop_assert!(store.valid_paths().expect("valid").is_empty());
                proptest::prop_assert!(store.verify_leftovers().expect("leftovers").is_empty());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Queries against the fixtures
// ---------------------------------------------------------------------------------------------

#[test]
fn queries_answer_as_nix_store_query() {
    let scratch = Scratch::new();
    let store = fixture_store(&scratch.path().join("root"));
    let closure = fs_err::read(fixture("closure.export")).expect("read");
    store.import_paths(closure.as_slice()).expect("imports");
    let queries: Vec<FixtureQuery> =
        serde_json::from_str(&fs_err::read_to_string(fixture("queries.json")).expect("read"))
            .expect("queries.json");
    assert!(queries.len() >= 20);
    for case in queries {
        let kind = match case.query.as_str() {
            "requisites" => Query::Requisites,
            "references" => Query::References,
            "referrers" => Query::Referrers,
            "referrers-closure" => Query::ReferrersClosure,
            other => panic!("unknown query {other}"),
        };
        let paths: Vec<StorePath> = case.paths.iter().map(|path| parse(&store, path)).collect();
        let result: Vec<String> = store
            .query(kind, &paths)
            .expect("query")
            .iter()
            .map(|info| info.path.to_string())
            .collect();
        assert_eq!(result, case.result, "--{} {:?}", case.query, case.paths);
    }
    let missing = parse(
        &store,
        "/tmp/declenv-sharing/nix/store/00000000000000000000000000000000-missing",
    );
    let error = store
        .query(Query::Requisites, &[missing])
        .expect_err("not valid");
    assert!(error.to_string().contains("is not valid"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Binary caches against the fixtures
// ---------------------------------------------------------------------------------------------

/// A private copy of the fixture cache.
fn cache_copy(scratch: &Scratch) -> BinaryCache {
    let directory = scratch.path().join("cache");
    support::copy_tree(&fixture("cache"), &directory);
    BinaryCache::in_directory(&directory)
}

#[test]
fn a_cache_nix_wrote_is_read_with_nix_hashes() {
    let scratch = Scratch::new();
    let cache = cache_copy(&scratch);
    let store = fixture_store(&scratch.path().join("root"));
    let top = parse(&store, &fixture_paths().top);
    let copied = store
        .copy_from_cache(&cache, std::slice::from_ref(&top))
        .expect("fetches");
    assert_eq!(copied.added.len(), 5);
    assert_eq!(described(&store), expected_description());
    assert!(store.verify().expect("verify").is_clean());
    // Everything is there now: nothing is fetched again.
    let again = store
        .copy_from_cache(&cache, std::slice::from_ref(&top))
        .expect("fetches");
    assert!(again.added.is_empty());
}

#[test]
fn the_cache_we_write_is_the_cache_nix_writes() {
    let scratch = Scratch::new();
    let store = fixture_store(&scratch.path().join("root"));
    let closure = fs_err::read(fixture("closure.export")).expect("read");
    store.import_paths(closure.as_slice()).expect("imports");
    let top = parse(&store, &fixture_paths().top);
    let directory = scratch.path().join("ours");
    let cache = BinaryCache::parse(&format!("file://{}?compression=none", directory.display()))
        .expect("url");
    let copied = store
        .copy_to_cache(&cache, std::slice::from_ref(&top))
        .expect("writes");
    assert_eq!(copied.added.len(), 5);
    let listing = |root: &Path| -> Vec<String> {
        let mut names = Vec::new();
        for entry in walk(root) {
            names.push(
                entry
                    .strip_prefix(root)
                    .expect("inside")
                    .display()
                    .to_string(),
            );
        }
        names.sort();
        names
    };
    assert_eq!(listing(&directory), listing(&fixture("cache")));
    for name in listing(&directory) {
        let ours = fs_err::read(directory.join(&name)).expect("read");
        let nix = fs_err::read(fixture("cache").join(&name)).expect("read");
        if name.ends_with(".narinfo") {
            // A path `nix-store --add` or `builtins.path` makes is content-addressed as its
            // archive, and says so; the store the fixture cache came from imported the paths,
            // which loses that.
            let ours = String::from_utf8(ours).expect("utf-8");
            let without_ca: String = ours
                .lines()
                .filter(|line| !line.starts_with("CA: fixed:r:sha256:"))
                .map(|line| format!("{line}\n"))
                .collect();
            assert_eq!(without_ca, String::from_utf8(nix).expect("utf-8"), "{name}");
            if name.starts_with(&parse(&store, &fixture_paths().paths[0].path).hash_part()) {
                assert!(ours.contains("CA: fixed:r:sha256:"), "{ours}");
            }
        } else {
            assert!(ours == nix, "{name} differs");
        }
    }
    // A second copy finds every narinfo and writes nothing.
    let again = store
        .copy_to_cache(&cache, std::slice::from_ref(&top))
        .expect("writes");
    assert!(again.added.is_empty());
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(directory) = pending.pop() {
        for entry in fs_err::read_dir(&directory).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// The narinfo and archive files of `name` in a cache.
fn narinfo_of(cache: &BinaryCache, name: &str) -> PathBuf {
    walk(cache.directory())
        .into_iter()
        .find(|file| {
            file.extension()
                .is_some_and(|extension| extension == "narinfo")
                && fs_err::read_to_string(file)
                    .expect("read")
                    .lines()
                    .next()
                    .is_some_and(|line| line.ends_with(&format!("-{name}")))
        })
        .expect("narinfo")
}

fn archive_of(cache: &BinaryCache, name: &str) -> PathBuf {
    let text = fs_err::read_to_string(narinfo_of(cache, name)).expect("read");
    let url = text
        .lines()
        .find_map(|line| line.strip_prefix("URL: "))
        .expect("URL");
    cache.directory().join(url)
}

/// Changes one byte of file contents in an archive (the first byte of `needle`), leaving its
/// structure intact.
fn flip_in_contents(archive: &Path, needle: &[u8]) {
    let mut bytes = fs_err::read(archive).expect("read");
    let at = bytes
        .windows(needle.len())
        .position(|window| window == needle)
        .expect("the needle is in the archive");
    bytes[at] ^= 0x20;
    fs_err::write(archive, bytes).expect("write");
}

fn edit_narinfo(cache: &BinaryCache, name: &str, edit: impl Fn(&str) -> String) {
    let file = narinfo_of(cache, name);
    let text = fs_err::read_to_string(&file).expect("read");
    fs_err::write(&file, edit(&text)).expect("write");
}

/// Replaces the value of `key` in a narinfo.
fn set_field(text: &str, key: &str, value: &str) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with(&format!("{key}: ")) {
                format!("{key}: {value}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

#[test]
fn a_damaged_cache_is_rejected_with_a_clear_error_and_nothing_registered() {
    type Damage = fn(&BinaryCache);
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "a flipped byte in a dependency's archive",
            |cache| flip_in_contents(&archive_of(cache, "hello-src"), b"hello, world"),
            "does not match its narinfo",
        ),
        (
            "a truncated archive",
            |cache| {
                let archive = archive_of(cache, "top");
                let bytes = fs_err::read(&archive).expect("read");
                fs_err::write(&archive, &bytes[..bytes.len() / 2]).expect("write");
            },
            "is not valid",
        ),
        (
            "bytes after the archive",
            |cache| {
                let archive = archive_of(cache, "leaf");
                let mut bytes = fs_err::read(&archive).expect("read");
                bytes.extend_from_slice(b"trailing");
                fs_err::write(&archive, bytes).expect("write");
            },
            "does not match its narinfo",
        ),
        (
            "a missing archive",
            |cache| fs_err::remove_file(archive_of(cache, "mid")).expect("remove"),
            "is missing",
        ),
        (
            "another path's archive",
            |cache| {
                fs_err::copy(archive_of(cache, "leaf"), archive_of(cache, "mid")).expect("copy");
            },
            "does not match its narinfo",
        ),
        (
            "a wrong NarHash",
            |cache| {
                edit_narinfo(cache, "d-1.0", |text| {
                    set_field(
                        text,
                        "NarHash",
                        "sha256:1wb7a7dprhjlz332vvkl2y924dnh9ydixl14zn1arx8qnfaq5gsl",
                    )
                });
            },
            "does not match its narinfo",
        ),
        (
            "a wrong NarSize",
            |cache| edit_narinfo(cache, "top", |text| set_field(text, "NarSize", "255")),
            "does not match its narinfo",
        ),
        (
            "a narinfo for another path",
            |cache| {
                let leaf = fs_err::read_to_string(narinfo_of(cache, "leaf")).expect("read");
                fs_err::write(narinfo_of(cache, "mid"), leaf).expect("write");
            },
            "describes",
        ),
        (
            "a URL outside the cache",
            |cache| {
                edit_narinfo(cache, "leaf", |text| {
                    set_field(text, "URL", "../../etc/passwd")
                })
            },
            "inside the cache",
        ),
        (
            "a compressed archive",
            |cache| edit_narinfo(cache, "leaf", |text| set_field(text, "Compression", "xz")),
            "`xz`",
        ),
        (
            "a line that is not a field",
            |cache| edit_narinfo(cache, "top", |text| format!("{text}garbage\n")),
            "not `Key: value`",
        ),
        (
            "a bad reference",
            |cache| {
                edit_narinfo(cache, "top", |text| {
                    set_field(text, "References", "not-a-store-path")
                });
            },
            "invalid narinfo",
        ),
        (
            "a missing narinfo of a dependency",
            |cache| fs_err::remove_file(narinfo_of(cache, "leaf")).expect("remove"),
            "is not in binary cache",
        ),
        (
            "a cache for another store",
            |cache| {
                fs_err::write(
                    cache.directory().join("nix-cache-info"),
                    "StoreDir: /nix/store\n",
                )
                .expect("write");
            },
            "prefix `/nix/store`",
        ),
    ];
    for (what, damage, message) in cases {
        let scratch = Scratch::new();
        let cache = cache_copy(&scratch);
        damage(&cache);
        let store = fixture_store(&scratch.path().join("root"));
        let top = parse(&store, &fixture_paths().top);
        let error = store
            .copy_from_cache(&cache, std::slice::from_ref(&top))
            .expect_err(what);
        let chain = format!("{error}: {}", error_sources(&error));
        assert!(chain.contains(message), "{what}: {chain}");
        assert_nothing_registered(&store, what);
    }
}

fn error_sources(error: &dyn std::error::Error) -> String {
    let mut text = String::new();
    let mut cause = error.source();
    while let Some(current) = cause {
        text.push_str(&current.to_string());
        text.push_str(": ");
        cause = current.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------------

fn declenv(root: &Path, args: &[&str], stdin: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_declenv"));
    command
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("DECLENV_FILE")
        .env_remove("DECLENV_FAULT")
        .env("NO_COLOR", "1")
        .stdin(match stdin {
            Some(path) => Stdio::from(fs_err::File::open(path).expect("open").into_parts().0),
            None => Stdio::null(),
        });
    command.output().expect("declenv runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeeds(output: &Output) -> String {
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

/// Adds `lib` (no references), `tool` (refers to `lib`) and `app` (refers to `tool`) and
/// returns their paths.
fn add_chain(work: &Path, root: &Path) -> [String; 3] {
    let lib = work.join("lib");
    fs_err::create_dir_all(lib.join("share")).expect("mkdir");
    fs_err::write(lib.join("share/data"), "data\n").expect("write");
    let lib = succeeds(&declenv(
        root,
        &["store", "add", lib.to_str().expect("utf-8")],
        None,
    ));
    let lib = lib.trim().to_owned();
    let tool = work.join("tool");
    fs_err::create_dir_all(tool.join("bin")).expect("mkdir");
    fs_err::write(
        tool.join("bin/tool"),
        format!("#!/bin/sh\ncat {lib}/share/data\n"),
    )
    .expect("write");
    fs_err::set_permissions(
        tool.join("bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let tool = succeeds(&declenv(
        root,
        &["store", "add", tool.to_str().expect("utf-8")],
        None,
    ));
    let tool = tool.trim().to_owned();
    let app = work.join("app");
    fs_err::create_dir_all(&app).expect("mkdir");
    std::os::unix::fs::symlink(format!("{tool}/bin/tool"), app.join("run")).expect("symlink");
    let app = succeeds(&declenv(
        root,
        &["store", "add", app.to_str().expect("utf-8")],
        None,
    ));
    [lib, tool, app.trim().to_owned()]
}

fn lines(output: &str) -> Vec<String> {
    output.lines().map(str::to_owned).collect()
}

#[test]
fn store_query_lists_closures_and_referrers() {
    let scratch = Scratch::new();
    let root = scratch.path().join("root");
    let [lib, tool, app] = add_chain(scratch.path(), &root);
    let query = |args: &[&str]| {
        let mut all = vec!["store", "query"];
        all.extend_from_slice(args);
        lines(&succeeds(&declenv(&root, &all, None)))
    };
    assert_eq!(
        query(&["--requisites", &app]),
        [lib.as_str(), tool.as_str(), app.as_str()]
    );
    assert_eq!(query(&["-R", &tool]), [lib.as_str(), tool.as_str()]);
    assert_eq!(query(&["--references", &app]), [tool.as_str()]);
    assert_eq!(query(&["--referrers", &lib]), [tool.as_str()]);
    assert_eq!(
        query(&["--referrers-closure", &lib]),
        [lib.as_str(), tool.as_str(), app.as_str()]
    );
    // A path inside a store path and a link into the store lead to the store path.
    let link = scratch.path().join("link");
    std::os::unix::fs::symlink(format!("{app}/run"), &link).expect("symlink");
    assert_eq!(
        query(&["-R", link.to_str().expect("utf-8")]),
        [lib.as_str(), tool.as_str(), app.as_str()]
    );
    assert_eq!(
        query(&["-R", &format!("{tool}/bin/tool")]),
        [lib.as_str(), tool.as_str()]
    );
    // A path through a symlink to the root, by its real place.
    let alias = scratch.path().join("alias");
    std::os::unix::fs::symlink(&root, &alias).expect("symlink");
    let through_alias = alias
        .join("nix/store")
        .join(Path::new(&tool).file_name().expect("name"));
    assert_eq!(
        query(&["-R", through_alias.to_str().expect("utf-8")]),
        [lib.as_str(), tool.as_str()]
    );

    let json: Value = serde_json::from_str(&succeeds(&declenv(
        &root,
        &["store", "query", "--json", "-R", &tool],
        None,
    )))
    .expect("json");
    assert_eq!(json["schema"]["version"], 1);
    assert_eq!(json["paths"][1]["path"], tool.as_str());
    assert_eq!(json["paths"][1]["references"][0], lib.as_str());
    assert!(
        json["paths"][0]["narHash"]
            .as_str()
            .is_some_and(|hash| hash.starts_with("sha256:"))
    );

    let missing = format!("{}-missing", &lib[..lib.len() - 4]);
    let failed = declenv(&root, &["store", "query", "-R", &missing], None);
    assert_eq!(failed.status.code(), Some(2));
    assert!(
        text(&failed.stderr).contains("is not valid in root"),
        "{}",
        text(&failed.stderr)
    );
    let outside = declenv(&root, &["store", "query", "-R", "/etc/hostname"], None);
    assert!(
        text(&outside.stderr).contains("is not in the store"),
        "{}",
        text(&outside.stderr)
    );
}

/// Moves the root at `root` aside (to `aside`) so that a fresh root can take its place: a
/// second machine whose root is at the same path.
fn move_aside(root: &Path, aside: &Path) {
    fs_err::rename(root, aside).expect("move the root aside");
}

#[test]
fn export_import_and_root_copies_between_roots_of_one_place() {
    let scratch = Scratch::new();
    let root = scratch.path().join("root");
    let [lib, tool, app] = add_chain(scratch.path(), &root);
    let export = scratch.path().join("app.export");
    let output = Command::new(env!("CARGO_BIN_EXE_declenv"))
        .arg("--root")
        .arg(&root)
        .args(["store", "export", "--closure", &app])
        .stdout(Stdio::from(
            fs_err::File::create(&export)
                .expect("create")
                .into_parts()
                .0,
        ))
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("exported 3 paths"));
    let copy = scratch.path().join("copy");
    let copied = succeeds(&declenv(
        &root,
        &[
            "store",
            "copy",
            "--to-root",
            copy.to_str().expect("utf-8"),
            &tool,
        ],
        None,
    ));
    assert_eq!(lines(&copied), [lib.as_str(), tool.as_str()]);
    // Only the missing paths are copied.
    let again = declenv(
        &root,
        &[
            "store",
            "copy",
            "--to-root",
            copy.to_str().expect("utf-8"),
            &app,
        ],
        None,
    );
    assert_eq!(lines(&succeeds(&again)), [app.as_str()]);
    assert!(
        text(&again.stderr).contains("copied 1 path to root"),
        "{}",
        text(&again.stderr)
    );

    let first = scratch.path().join("first");
    move_aside(&root, &first);

    // A second root at the same place imports the export.
    let imported = declenv(&root, &["store", "import"], Some(&export));
    assert_eq!(
        lines(&succeeds(&imported)),
        [lib.as_str(), tool.as_str(), app.as_str()]
    );
    assert!(text(&imported.stderr).contains("imported 3 paths (0 already valid)"));
    let again = declenv(&root, &["store", "import"], Some(&export));
    assert!(text(&again.stderr).contains("imported 0 paths (3 already valid)"));
    assert_eq!(
        lines(&succeeds(&declenv(
            &root,
            &["store", "query", "-R", &app],
            None
        ))),
        [lib.as_str(), tool.as_str(), app.as_str()]
    );
    assert!(declenv(&root, &["store", "verify"], None).status.success());
    fs_err::remove_dir_all(&root).expect("remove");

    // A third copies from the first, moved aside (another disk), only what it lacks.
    succeeds(&declenv(
        &root,
        &[
            "store",
            "add",
            scratch.path().join("lib").to_str().expect("utf-8"),
        ],
        None,
    ));
    let fetched = succeeds(&declenv(
        &root,
        &[
            "store",
            "copy",
            "--from-root",
            first.to_str().expect("utf-8"),
            &app,
        ],
        None,
    ));
    assert_eq!(lines(&fetched), [tool.as_str(), app.as_str()]);
    let verify: Value = serde_json::from_str(&succeeds(&declenv(
        &root,
        &["store", "verify", "--json"],
        None,
    )))
    .expect("json");
    assert_eq!(verify["clean"], true);
    assert_eq!(verify["intact"], 3);
    fs_err::remove_dir_all(&root).expect("remove");

    // The root written with `--to-root`, moved into place, is a valid root.
    fs_err::rename(&copy, &root).expect("move into place");
    let verify: Value = serde_json::from_str(&succeeds(&declenv(
        &root,
        &["store", "verify", "--json"],
        None,
    )))
    .expect("json");
    assert_eq!(verify["clean"], true, "{verify}");
    assert_eq!(verify["intact"], 3);

    // A root of another place cannot give or take paths.
    let elsewhere = scratch.path().join("elsewhere");
    add_chain(&scratch.path().join("other-trees"), &elsewhere);
    let refused = declenv(
        &root,
        &[
            "store",
            "copy",
            "--from-root",
            elsewhere.to_str().expect("utf-8"),
            &app,
        ],
        None,
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("holds paths of the store"),
        "{}",
        text(&refused.stderr)
    );
    let not_a_root = declenv(
        &root,
        &[
            "store",
            "copy",
            "--from-root",
            scratch.path().join("nothing").to_str().expect("utf-8"),
            &app,
        ],
        None,
    );
    assert!(
        text(&not_a_root.stderr).contains("is not a declenv root"),
        "{}",
        text(&not_a_root.stderr)
    );
}

#[test]
fn an_import_killed_between_registrations_leaves_only_valid_paths() {
    let scratch = Scratch::new();
    let root = scratch.path().join("root");
    let [lib, tool, app] = add_chain(scratch.path(), &root);
    let export = scratch.path().join("app.export");
    let output = Command::new(env!("CARGO_BIN_EXE_declenv"))
        .arg("--root")
        .arg(&root)
        .args(["store", "export", "--closure", &app])
        .stdout(Stdio::from(
            fs_err::File::create(&export)
                .expect("create")
                .into_parts()
                .0,
        ))
        .output()
        .expect("runs");
    assert!(output.status.success());
    move_aside(&root, &scratch.path().join("first"));
    for (fault, valid) in [
        ("store-temp-written@2", 0),
        ("store-before-register", 0),
        ("store-before-register@3", 2),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_declenv"))
            .arg("--root")
            .arg(&root)
            .args(["store", "import"])
            .env("DECLENV_FAULT", fault)
            .stdin(Stdio::from(
                fs_err::File::open(&export).expect("open").into_parts().0,
            ))
            .output()
            .expect("runs");
        assert!(!output.status.success(), "{fault}");
        let verify: Value = serde_json::from_str(&succeeds(&declenv(
            &root,
            &["store", "verify", "--json"],
            None,
        )))
        .expect("json");
        assert_eq!(verify["damaged"], false, "{fault}: {verify}");
        assert_eq!(verify["intact"], valid, "{fault}: {verify}");
        // The next import completes it.
        let imported = declenv(&root, &["store", "import"], Some(&export));
        assert_eq!(
            lines(&succeeds(&imported)),
            [lib.as_str(), tool.as_str(), app.as_str()]
        );
        fs_err::remove_dir_all(&root).expect("remove");
    }
}

#[test]
fn cache_copies_round_trip_and_a_damaged_cache_fails_clearly() {
    let scratch = Scratch::new();
    let root = scratch.path().join("root");
    let [lib, tool, app] = add_chain(scratch.path(), &root);
    let cache = scratch.path().join("cache");
    let url = format!("file://{}", cache.display());
    let written = declenv(&root, &["store", "copy", "--to", &url, &app], None);
    assert_eq!(
        lines(&succeeds(&written)),
        [lib.as_str(), tool.as_str(), app.as_str()]
    );
    assert!(
        text(&written.stderr).contains("copied 3 paths to"),
        "{}",
        text(&written.stderr)
    );
    assert_eq!(
        fs_err::read_to_string(cache.join("nix-cache-info")).expect("read"),
        format!(
            "StoreDir: {}\n",
            fs_err::canonicalize(root.join("nix/store"))
                .expect("store")
                .display()
        )
    );
    move_aside(&root, &scratch.path().join("first"));

    // A damaged archive: a clear error, nothing registered.
    let damaged = scratch.path().join("damaged");
    support::copy_tree(&cache, &damaged);
    let victim = walk(&damaged.join("nar"))
        .into_iter()
        .next()
        .expect("an archive");
    let mut bytes = fs_err::read(&victim).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs_err::write(&victim, bytes).expect("write");
    let failed = declenv(
        &root,
        &[
            "store",
            "copy",
            "--from",
            &format!("file://{}", damaged.display()),
            &app,
        ],
        None,
    );
    assert_eq!(failed.status.code(), Some(2));
    let stderr = text(&failed.stderr);
    assert!(stderr.contains("error: cannot copy from"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
    let verify: Value = serde_json::from_str(&succeeds(&declenv(
        &root,
        &["store", "verify", "--json"],
        None,
    )))
    .expect("json");
    assert_eq!(verify["intact"], 0);
    assert_eq!(verify["clean"], true, "no temporaries are left: {verify}");

    let fetched = declenv(&root, &["store", "copy", "--from", &url, &app], None);
    assert_eq!(
        lines(&succeeds(&fetched)),
        [lib.as_str(), tool.as_str(), app.as_str()]
    );
    assert!(
        text(&fetched.stderr).contains("fetched 3 paths from"),
        "{}",
        text(&fetched.stderr)
    );

    let http = declenv(
        &root,
        &["store", "copy", "--from", "http://cache.example", &app],
        None,
    );
    assert!(
        text(&http.stderr).contains("`http://` is not supported"),
        "{}",
        text(&http.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Substituters: `apply` on a second machine
// ---------------------------------------------------------------------------------------------

const SPEC: &str = r#"version = 1
substituters = ["CACHE"]

[sources.demo]
channel = "channel"

[packages.hello]
attr = "hello"

[packages.jq]
version = ">=1.7, <2"
outputs = ["out", "man"]

[packages.which]
attr = "which"
"#;

/// A dotfiles directory (spec with a substituter, channel copy) and a root beside it.
struct Machine {
    scratch: Scratch,
    root: PathBuf,
    spec: PathBuf,
    cache: PathBuf,
}

impl Machine {
    fn new() -> Self {
        let scratch = Scratch::new();
        let dotfiles = scratch.path().join("dotfiles");
        support::copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/channel"),
            &dotfiles.join("channel"),
        );
        let cache = scratch.path().join("cache");
        let spec = dotfiles.join("profile.toml");
        fs_err::write(
            &spec,
            SPEC.replace("CACHE", &format!("file://{}", cache.display())),
        )
        .expect("write spec");
        Self {
            root: scratch.path().join("root"),
            spec,
            cache,
            scratch,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--file", self.spec.to_str().expect("utf-8")];
        all.extend_from_slice(args);
        declenv(&self.root, &all, None)
    }

    fn profile(&self) -> String {
        self.root
            .join("nix/var/nix/profiles/default")
            .display()
            .to_string()
    }
}

#[test]
fn apply_on_a_second_root_fetches_everything_from_the_cache_and_builds_nothing() {
    let machine = Machine::new();
    // The first machine: the cache does not exist yet, so it is skipped; trees come from the
    // channel.
    let first = machine.run(&["apply", "-y"]);
    succeeds(&first);
    let closure = lines(&succeeds(&machine.run(&[
        "store",
        "query",
        "-R",
        &machine.profile(),
    ])));
    assert!(closure.len() >= 6, "{closure:?}");
    let url = format!("file://{}", machine.cache.display());
    succeeds(&machine.run(&["store", "copy", "--to", &url, &machine.profile()]));
    move_aside(&machine.root, &machine.scratch.path().join("first"));

    // The second machine's channel has other trees than the lockfile records: adding them
    // would fail, so whatever succeeds below was fetched.
    let hello = machine
        .spec
        .parent()
        .expect("dotfiles")
        .join("channel/hello-2.12.1/bin/hello");
    let original = fs_err::read(&hello).expect("read");
    fs_err::write(&hello, b"#!/bin/sh\necho tampered\n").expect("write");

    let second = machine.run(&["apply", "-y", "--frozen", "--json"]);
    let report: Value = serde_json::from_str(&succeeds(&second)).expect("json");
    let fetched: Vec<String> = report["fetched"][&url]
        .as_array()
        .expect("fetched from the cache")
        .iter()
        .map(|path| path.as_str().expect("string").to_owned())
        .collect();
    // Every package output, from the cache; the environment and its manifest are built here,
    // as Nix builds user environments (its `buildenv` is never substituted), and are the same
    // paths as on the first machine.
    assert_eq!(
        fetched.len(),
        closure.len() - 2,
        "{fetched:?} of {closure:?}"
    );
    assert!(fetched.iter().all(|path| closure.contains(path)));
    assert_eq!(
        lines(&succeeds(&machine.run(&[
            "store",
            "query",
            "-R",
            &machine.profile()
        ]))),
        closure
    );
    let fetched_hello = closure
        .iter()
        .find(|path| path.ends_with("-hello-2.12.1"))
        .expect("hello");
    assert_eq!(
        fs_err::read(format!("{fetched_hello}/bin/hello")).expect("read"),
        original
    );
    let verify: Value =
        serde_json::from_str(&succeeds(&machine.run(&["store", "verify", "--json"])))
            .expect("json");
    assert_eq!(verify["clean"], true, "{verify}");

    // Without the cache, the tampered tree is refused, as before.
    fs_err::remove_dir_all(&machine.root).expect("remove");
    fs_err::rename(&machine.cache, machine.scratch.path().join("cache-away")).expect("move");
    let without = machine.run(&["apply", "-y", "--frozen"]);
    assert_eq!(without.status.code(), Some(2));
    assert!(
        text(&without.stderr).contains("changed since it was locked"),
        "{}",
        text(&without.stderr)
    );
}

#[test]
fn apply_with_a_damaged_substituter_fails_and_registers_nothing_of_it() {
    let machine = Machine::new();
    succeeds(&machine.run(&["apply", "-y"]));
    let url = format!("file://{}", machine.cache.display());
    succeeds(&machine.run(&["store", "copy", "--to", &url, &machine.profile()]));
    move_aside(&machine.root, &machine.scratch.path().join("first"));
    let cache = BinaryCache::in_directory(&machine.cache);
    flip_in_contents(&archive_of(&cache, "hello-2.12.1"), b"Hello, world!");

    let failed = machine.run(&["apply", "-y", "--frozen"]);
    assert_eq!(failed.status.code(), Some(2));
    let stderr = text(&failed.stderr);
    assert!(stderr.contains("cannot fetch package `hello`"), "{stderr}");
    assert!(stderr.contains("does not match its narinfo"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
    let store = EmbeddedStore::open(&machine.root).expect("opens");
    assert!(
        store
            .valid_paths()
            .expect("valid")
            .iter()
            .all(|path| !path.name().starts_with("hello")),
        "nothing of hello is registered"
    );
    assert!(!machine.root.join("nix/var/nix/profiles/default").exists());
}

// ---------------------------------------------------------------------------------------------
// Live differential tests against Nix 2.8
// ---------------------------------------------------------------------------------------------

fn live() -> bool {
    let enabled = std::env::var("DECLENV_TEST_NIX").as_deref() == Ok("1");
    if !enabled {
        eprintln!("skipping: set DECLENV_TEST_NIX=1 to compare with the installed Nix");
    }
    enabled
}

/// Runs Nix on a chroot store at `nix_root` of the store directory `store_dir`.
struct Nix {
    home: tempfile::TempDir,
    conf: tempfile::TempDir,
    store_dir: String,
}

impl Nix {
    fn new(store_dir: &str) -> Self {
        Self {
            home: tempfile::tempdir().expect("home"),
            conf: tempfile::tempdir().expect("conf"),
            store_dir: store_dir.to_owned(),
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("NIX_CONF_DIR", self.conf.path())
            .env("NIX_REMOTE", "local")
            .env("NIX_STORE_DIR", &self.store_dir)
            .env("LANG", "C.UTF-8")
            .env(
                "NIX_CONFIG",
                "sandbox = false\nsubstituters =\nexperimental-features = nix-command\nbuild-users-group =\nsandbox-paths = /bin /lib /lib64 /usr",
            );
        command
    }

    fn run(&self, program: &str, args: &[&str], stdin: Option<&Path>) -> String {
        let mut command = self.command(program);
        command.args(args);
        if let Some(path) = stdin {
            command.stdin(Stdio::from(
                fs_err::File::open(path).expect("open").into_parts().0,
            ));
        }
        let output = command.output().expect("Nix runs (install nix-bin)");
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    fn store(root: &Path) -> String {
        format!("local?root={}", root.display())
    }

    /// `nix-store -q --hash/--size/--references/--deriver` of every path in the closure of
    /// `top`, in `-qR` order.
    fn describe(&self, root: &Path, top: &str) -> Vec<Described> {
        let store = Self::store(root);
        let query = |args: &[&str]| {
            let mut all = vec!["--store", store.as_str(), "-q"];
            all.extend_from_slice(args);
            lines(&self.run("nix-store", &all, None))
        };
        let mut described = Vec::new();
        for path in query(&["--requisites", top]) {
            let deriver = query(&["--deriver", &path]).remove(0);
            described.push((
                path.clone(),
                query(&["--hash", &path]).remove(0),
                query(&["--size", &path]).remove(0).parse().expect("size"),
                query(&["--references", &path]),
                (deriver != "unknown-deriver").then_some(deriver),
            ));
        }
        described
    }
}

/// declenv's view of the closure of `top` in the same form.
fn declenv_describe(root: &Path, top: &str) -> Vec<Described> {
    let json: Value = serde_json::from_str(&succeeds(&declenv(
        root,
        &["store", "query", "--json", "-R", top],
        None,
    )))
    .expect("json");
    json["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|entry| {
            let path = entry["path"].as_str().expect("path").to_owned();
            let references = lines(&succeeds(&declenv(
                root,
                &["store", "query", "--references", &path],
                None,
            )));
            (
                path,
                entry["narHash"].as_str().expect("hash").to_owned(),
                entry["narSize"].as_u64().expect("size"),
                references,
                entry["deriver"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

const LIVE_EXPRESSION: &str = r#"
let
  src = builtins.path { path = ./src; name = "src"; };
  leaf = builtins.toFile "leaf" "a leaf\n";
  mid = builtins.toFile "mid" "mid uses ${leaf} and ${src}\n";
  out = derivation {
    name = "out-1.0";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir $out; echo self $out ${mid} > $out/f; /bin/ln -s ${src} $out/src" ];
  };
in out
"#;

/// Builds the live closure in a Nix chroot store at `nix_root` and returns its top path.
fn nix_build(nix: &Nix, nix_root: &Path, work: &Path) -> String {
    let expression = work.join("expression");
    fs_err::create_dir_all(expression.join("src/bin")).expect("mkdir");
    fs_err::write(expression.join("src/bin/run"), "#!/bin/sh\necho run\n").expect("write");
    fs_err::set_permissions(
        expression.join("src/bin/run"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::os::unix::fs::symlink("bin/run", expression.join("src/link")).expect("symlink");
    fs_err::write(expression.join("default.nix"), LIVE_EXPRESSION).expect("write");
    let store = Nix::store(nix_root);
    nix.run(
        "nix-build",
        &[
            "--store",
            &store,
            "--no-out-link",
            expression.to_str().expect("utf-8"),
        ],
        None,
    )
    .trim()
    .to_owned()
}

fn store_dir_of(root: &Path) -> String {
    fs_err::create_dir_all(root.join("nix/store")).expect("mkdir");
    fs_err::canonicalize(root.join("nix/store"))
        .expect("store dir")
        .display()
        .to_string()
}

#[test]
fn live_nix_exports_import_into_declenv_and_ours_into_nix() {
    if !live() {
        return;
    }
    let scratch = Scratch::new();
    let root = scratch.path().join("root");
    let nix = Nix::new(&store_dir_of(&root));
    let built = scratch.path().join("nix-built");
    let top = nix_build(&nix, &built, scratch.path());
    let closure = lines(&nix.run(
        "nix-store",
        &["--store", &Nix::store(&built), "-qR", &top],
        None,
    ));
    let export = scratch.path().join("nix.export");
    let mut arguments = vec![
        "--store".to_owned(),
        Nix::store(&built),
        "--export".to_owned(),
    ];
    arguments.extend(closure.iter().cloned());
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    let mut command = nix.command("nix-store");
    command.args(&arguments).stdout(Stdio::from(
        fs_err::File::create(&export)
            .expect("create")
            .into_parts()
            .0,
    ));
    assert!(command.status().expect("runs").success());

    let imported = succeeds(&declenv(&root, &["store", "import"], Some(&export)));
    assert_eq!(lines(&imported), closure, "paths in Nix's export order");
    let nix_view = nix.describe(&built, &top);
    assert_eq!(declenv_describe(&root, &top), nix_view);

    // And back: our export, byte for byte Nix's, imports into a fresh Nix store.
    let ours = scratch.path().join("ours.export");
    let output = Command::new(env!("CARGO_BIN_EXE_declenv"))
        .arg("--root")
        .arg(&root)
        .args(["store", "export", "--closure", &top])
        .stdout(Stdio::from(
            fs_err::File::create(&ours).expect("create").into_parts().0,
        ))
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(fs_err::read(&ours).expect("read") == fs_err::read(&export).expect("read"));
    let fresh = scratch.path().join("nix-fresh");
    let into_nix = nix.run(
        "nix-store",
        &["--store", &Nix::store(&fresh), "--import"],
        Some(&ours),
    );
    assert_eq!(lines(&into_nix), closure);
    assert_eq!(nix.describe(&fresh, &top), nix_view);
    nix.run(
        "nix-store",
        &[
            "--store",
            &Nix::store(&fresh),
            "--verify",
            "--check-contents",
        ],
        None,
    );

    // Paths declenv added itself (with references it scanned) go to Nix as well.
    let [_, _, app] = add_chain(&scratch.path().join("trees"), &root);
    let app_export = scratch.path().join("app.export");
    let output = Command::new(env!("CARGO_BIN_EXE_declenv"))
        .arg("--root")
        .arg(&root)
        .args(["store", "export", "--closure", &app])
        .stdout(Stdio::from(
            fs_err::File::create(&app_export)
                .expect("create")
                .into_parts()
                .0,
        ))
        .output()
        .expect("runs");
    assert!(output.status.success());
    nix.run(
        "nix-store",
        &["--store", &Nix::store(&fresh), "--import"],
        Some(&app_export),
    );
    assert_eq!(nix.describe(&fresh, &app), declenv_describe(&root, &app));
}

#[test]
fn live_nix_reads_our_caches_and_we_read_its() {
    if !live() {
        return;
    }
    let machine = Machine::new();
    let store_dir = store_dir_of(&machine.root);
    let nix = Nix::new(&store_dir);
    // Our cache: the closure of an applied profile, read by `nix copy --from`.
    succeeds(&machine.run(&["apply", "-y"]));
    let profile = fs_err::canonicalize(machine.profile())
        .expect("generation")
        .display()
        .to_string();
    let url = format!("file://{}", machine.cache.display());
    succeeds(&machine.run(&["store", "copy", "--to", &url, &profile]));
    let from_us = machine.scratch.path().join("nix-from-us");
    nix.run(
        "nix",
        &[
            "copy",
            "--store",
            &Nix::store(&from_us),
            "--no-check-sigs",
            "--from",
            &url,
            &profile,
        ],
        None,
    );
    assert_eq!(
        nix.describe(&from_us, &profile),
        declenv_describe(&machine.root, &profile)
    );
    nix.run(
        "nix-store",
        &[
            "--store",
            &Nix::store(&from_us),
            "--verify",
            "--check-contents",
        ],
        None,
    );

    // Nix's cache (`compression=none`), read by declenv in a fresh root at the same place.
    let built = machine.scratch.path().join("nix-built");
    let top = nix_build(&nix, &built, machine.scratch.path());
    let nix_cache = machine.scratch.path().join("nix-cache");
    let nix_url = format!("file://{}?compression=none", nix_cache.display());
    nix.run(
        "nix",
        &[
            "copy",
            "--store",
            &Nix::store(&built),
            "--to",
            &nix_url,
            &top,
        ],
        None,
    );
    move_aside(&machine.root, &machine.scratch.path().join("first"));
    let fetched = succeeds(&machine.run(&["store", "copy", "--from", &nix_url, &top]));
    assert_eq!(lines(&fetched).len(), 4, "{fetched}");
    assert_eq!(
        declenv_describe(&machine.root, &top),
        nix.describe(&built, &top)
    );
    // Which, written again by declenv, Nix reads.
    let again = machine.scratch.path().join("again");
    let again_url = format!("file://{}", again.display());
    succeeds(&machine.run(&["store", "copy", "--to", &again_url, &top]));
    let from_again = machine.scratch.path().join("nix-again");
    nix.run(
        "nix",
        &[
            "copy",
            "--store",
            &Nix::store(&from_again),
            "--no-check-sigs",
            "--from",
            &again_url,
            &top,
        ],
        None,
    );
    assert_eq!(nix.describe(&from_again, &top), nix.describe(&built, &top));
}
