//! Differential conformance of `declenv::store` against Nix 2.8.
//!
//! The fixtures under `tests/fixtures/store/` hold what Nix computed (regenerate them with
//! `scripts/conformance/gen_store.py`; `tests/fixtures/store/README.md` describes them):
//!
//! * `trees.jsonl`: 61 file trees, described rather than committed (odd names, bytes that are
//!   not UTF-8, modes), with the store path `nix-store --add` gave each in the store directory
//!   `/tmp/declenv-conformance/nix/store`, its NAR hash and size, and for small trees the NAR.
//! * `names.jsonl`: store names and whether `nix-store --print-fixed-path` accepts them.
//! * `store_dirs.jsonl`: one path under differently spelled `NIX_STORE_DIR` values.
//!
//! Each tree is built in a temporary directory and archived, hashed, unpacked and added to an
//! embedded store; store paths are computed for the fixture's store directory without it
//! existing.
//!
//! `live_differential_against_nix_store_add` compares `EmbeddedStore::add_tree` with a live
//! `nix-store --add` on fresh random trees in the same store directory; it runs only when
//! `DECLENV_TEST_NIX=1` is set (as root, Nix 2.8 without a daemon). The seed comes from the
//! clock and is printed; set `DECLENV_TEST_SEED` to replay a run, and `DECLENV_NIX_STORE` to
//! use another `nix-store` binary.

#![allow(
    clippy::print_stderr,
    reason = "the tests report their seed, skips and disagreements on stderr"
)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use declenv::store::nar::{self, MalformedNar, NarError};
use declenv::store::nixbase32;
use declenv::store::path::{StorePathError, source_store_path, validate_name};
use declenv::store::{EmbeddedStore, StoreDir};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The store directory the fixtures were computed for.
const FIXTURE_STORE_DIR: &str = "/tmp/declenv-conformance/nix/store";
const MIN_TREES: usize = 40;

/// Bytes in a fixture: text when UTF-8, hex otherwise, or generated from a seed.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Bytes {
    Text(String),
    Hex { hex: String },
    Generated { generated: Generated },
}

#[derive(Debug, Clone, Deserialize)]
struct Generated {
    length: usize,
    seed: u64,
}

impl Bytes {
    fn to_vec(&self) -> Vec<u8> {
        match self {
            Self::Text(text) => text.as_bytes().to_vec(),
            Self::Hex { hex } => decode_hex(hex),
            Self::Generated { generated } => generated_bytes(generated.length, generated.seed),
        }
    }
}

/// The generator `gen_store.py` documents: a 64-bit LCG, one byte (the top 8 bits) per step.
fn generated_bytes(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..length)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state.to_be_bytes()[0]
        })
        .collect()
}

fn decode_hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&text[index..index + 2], 16).expect("hex"))
        .collect()
}

/// A file tree, as the fixtures describe it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Node {
    Regular {
        mode: u32,
        contents: Bytes,
    },
    Symlink {
        target: Bytes,
    },
    Directory {
        mode: u32,
        entries: Vec<(Bytes, Node)>,
    },
}

/// Creates `node` at `path`; a directory's mode is set after its entries exist.
fn build(path: &Path, node: &Node) {
    match node {
        Node::Regular { mode, contents } => {
            std::fs::write(path, contents.to_vec()).expect("write file");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).expect("chmod");
        }
        Node::Symlink { target } => {
            std::os::unix::fs::symlink(OsStr::from_bytes(&target.to_vec()), path).expect("symlink");
        }
        Node::Directory { mode, entries } => {
            std::fs::create_dir(path).expect("mkdir");
            for (name, child) in entries {
                build(&path.join(OsStr::from_bytes(&name.to_vec())), child);
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).expect("chmod");
        }
    }
}

/// Makes every directory under `path` writable, so that a temporary directory holding
/// read-only trees can be removed by a user who is not root.
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

#[derive(Debug, Deserialize)]
struct TreeCase {
    id: String,
    name: String,
    store_path: String,
    nar_hash: String,
    nar_size: u64,
    nar_hex: Option<String>,
    tree: Node,
}

#[derive(Debug, Deserialize)]
struct NameCase {
    name: String,
    nar_hash: String,
    accepted: bool,
    store_path: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StoreDirCase {
    store_dir: String,
    nar_hash: String,
    name: String,
    store_path: String,
}

fn read_fixture<T: DeserializeOwned>(file: &str) -> Vec<T> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join("store")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line).unwrap_or_else(|error| {
                panic!("{}:{}: malformed case: {error}", path.display(), index + 1)
            })
        })
        .collect()
}

fn sha256_of(nix_hash: &str) -> [u8; 32] {
    let encoded = nix_hash.strip_prefix("sha256:").unwrap_or(nix_hash);
    nixbase32::decode(encoded)
        .expect("nixbase32")
        .try_into()
        .expect("32 bytes")
}

fn fixture_store_dir() -> StoreDir {
    StoreDir::new(FIXTURE_STORE_DIR).expect("absolute")
}

/// Builds every fixture tree under `scratch` and returns the cases with their paths.
fn built_trees(scratch: &Scratch) -> Vec<(TreeCase, PathBuf)> {
    read_fixture::<TreeCase>("trees.jsonl")
        .into_iter()
        .map(|case| {
            let holder = scratch.path().join(&case.id);
            std::fs::create_dir(&holder).expect("mkdir");
            let path = holder.join(&case.name);
            build(&path, &case.tree);
            (case, path)
        })
        .collect()
}

/// Fails with every disagreement listed, not just the first.
fn assert_no_disagreements(what: &str, disagreements: &[String]) {
    assert!(
        disagreements.is_empty(),
        "{} {what} disagreements with Nix:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

#[test]
fn the_corpus_covers_every_kind_of_tree() {
    fn visit(node: &Node, kinds: &mut [usize; 6]) {
        match node {
            Node::Regular { mode, contents } => {
                kinds[if mode & 0o100 != 0 { 1 } else { 0 }] += 1;
                if contents.to_vec().is_empty() {
                    kinds[5] += 1;
                }
            }
            Node::Symlink { .. } => kinds[2] += 1,
            Node::Directory { entries, .. } => {
                kinds[if entries.is_empty() { 3 } else { 4 }] += 1;
                for (_, child) in entries {
                    visit(child, kinds);
                }
            }
        }
    }
    let cases = read_fixture::<TreeCase>("trees.jsonl");
    assert!(cases.len() >= MIN_TREES, "only {} trees", cases.len());
    // regular, executable, symlink, empty directory, directory, empty file
    let mut kinds = [0_usize; 6];
    for case in &cases {
        visit(&case.tree, &mut kinds);
    }
    assert!(kinds.iter().all(|count| *count > 0), "{kinds:?}");
    let single_files = cases
        .iter()
        .filter(|case| matches!(case.tree, Node::Regular { .. }))
        .count();
    assert!(single_files > 0);
    fn has_non_utf8_name(node: &Node) -> bool {
        matches!(node, Node::Directory { entries, .. } if entries.iter().any(|(name, child)| {
            matches!(name, Bytes::Hex { .. }) || has_non_utf8_name(child)
        }))
    }
    let non_utf8_names = cases
        .iter()
        .filter(|case| has_non_utf8_name(&case.tree))
        .count();
    assert!(non_utf8_names > 0);
}

#[test]
fn nar_hashes_and_sizes_match_nix() {
    let scratch = Scratch::new();
    let mut disagreements = Vec::new();
    let mut archives_compared = 0;
    for (case, path) in built_trees(&scratch) {
        let digest = nar::hash_path(&path).expect("hash");
        if digest.to_nix_string() != case.nar_hash || digest.size != case.nar_size {
            disagreements.push(format!(
                "{}: nix {} ({} bytes), declenv {} ({} bytes)",
                case.id,
                case.nar_hash,
                case.nar_size,
                digest.to_nix_string(),
                digest.size
            ));
        }
        if let Some(nar_hex) = &case.nar_hex {
            let mut archive = Vec::new();
            nar::dump(&path, &mut archive).expect("dump");
            if archive != decode_hex(nar_hex) {
                disagreements.push(format!(
                    "{}: archive bytes differ from `nix-store --dump`",
                    case.id
                ));
            }
            archives_compared += 1;
        }
    }
    assert_no_disagreements("NAR", &disagreements);
    assert!(
        archives_compared >= 20,
        "only {archives_compared} archives compared"
    );
}

#[test]
fn store_paths_match_nix_for_the_fixture_store_dir() {
    let store_dir = fixture_store_dir();
    let mut disagreements = Vec::new();
    for case in read_fixture::<TreeCase>("trees.jsonl") {
        let computed = source_store_path(&store_dir, &sha256_of(&case.nar_hash), &case.name)
            .expect("valid name");
        if computed.to_string() != case.store_path {
            disagreements.push(format!(
                "{}: nix {}, declenv {computed}",
                case.id, case.store_path
            ));
        }
    }
    assert_no_disagreements("store path", &disagreements);
}

#[test]
fn restore_unpacks_what_nix_dumped() {
    let scratch = Scratch::new();
    let mut restored = 0;
    for case in read_fixture::<TreeCase>("trees.jsonl") {
        let Some(nar_hex) = &case.nar_hex else {
            continue;
        };
        let archive = decode_hex(nar_hex);
        let destination = scratch.path().join(&case.id);
        let size = nar::restore(archive.as_slice(), &destination)
            .unwrap_or_else(|error| panic!("{}: {error}", case.id));
        assert_eq!(size, case.nar_size, "{}", case.id);
        let mut again = Vec::new();
        nar::dump(&destination, &mut again).expect("dump");
        assert_eq!(
            again, archive,
            "{}: unpacking and archiving again changed the bytes",
            case.id
        );
        restored += 1;
    }
    assert!(restored >= 20, "only {restored} archives restored");
}

#[test]
fn restore_rejects_nix_archives_with_dot_dot_names() {
    let scratch = Scratch::new();
    for (index, case) in read_fixture::<TreeCase>("trees.jsonl").iter().enumerate() {
        let Some(nar_hex) = &case.nar_hex else {
            continue;
        };
        let archive = decode_hex(nar_hex);
        // Rename every entry to `..`, keeping lengths, by overwriting name strings in place.
        let needle = b"\x04\0\0\0\0\0\0\0name\0\0\0\0";
        let mut mutated = archive.clone();
        let mut position = 0;
        while let Some(offset) = mutated[position..]
            .windows(needle.len())
            .position(|window| window == needle)
        {
            let start = position + offset + needle.len();
            mutated[start..start + 8].copy_from_slice(&2_u64.to_le_bytes());
            mutated[start + 8] = b'.';
            mutated[start + 9] = b'.';
            position = start;
        }
        if mutated == archive {
            continue;
        }
        let holder = scratch.path().join(format!("case-{index}"));
        std::fs::create_dir(&holder).expect("mkdir");
        let result = nar::restore(mutated.as_slice(), &holder.join("out"));
        assert!(result.is_err(), "{}: a `..` entry was accepted", case.id);
        let entries: Vec<_> = std::fs::read_dir(&holder).expect("list").collect();
        assert!(
            entries.len() <= 1,
            "{}: wrote beside its destination",
            case.id
        );
        if let Err(NarError::Malformed { problem, .. }) = result {
            assert!(
                matches!(
                    problem,
                    MalformedNar::InvalidName { .. }
                        | MalformedNar::NonZeroPadding
                        | MalformedNar::NotSorted { .. }
                ),
                "{}: {problem}",
                case.id
            );
        }
    }
}

#[test]
fn the_embedded_store_adds_the_corpus_as_nix_would() {
    let scratch = Scratch::new();
    let root = Scratch::new();
    let store = EmbeddedStore::open(root.path()).expect("open");
    let mut disagreements = Vec::new();
    for (case, path) in built_trees(&scratch) {
        let added = store
            .add_tree(&path, &case.name)
            .unwrap_or_else(|error| panic!("{}: {error}", case.id));
        let expected = source_store_path(store.store_dir(), &sha256_of(&case.nar_hash), &case.name)
            .expect("valid name");
        let info = store.path_info(&added).expect("info").expect("valid");
        if added != expected
            || info.nar.to_nix_string() != case.nar_hash
            || info.nar.size != case.nar_size
        {
            disagreements.push(format!(
                "{}: expected {expected} with {}, added {added} with {}",
                case.id,
                case.nar_hash,
                info.nar.to_nix_string()
            ));
        }
    }
    assert_no_disagreements("add", &disagreements);
    let report = store.verify().expect("verify");
    assert!(report.is_clean(), "{report:?}");
    make_writable(root.path());
}

/// Nix 2.8 accepts names starting with `.` (even `.` and `..`); declenv refuses them on
/// purpose (see `validate_name`). Every other verdict, and every accepted path, must match.
#[test]
fn name_rules_match_nix_except_leading_dots() {
    let store_dir = fixture_store_dir();
    let mut disagreements = Vec::new();
    let mut deliberate = 0;
    for case in read_fixture::<NameCase>("names.jsonl") {
        let ours = source_store_path(&store_dir, &sha256_of(&case.nar_hash), &case.name);
        match (&ours, case.accepted) {
            (Err(StorePathError::LeadingDot { .. }), true) if case.name.starts_with('.') => {
                deliberate += 1;
            }
            (Ok(path), true) => {
                if Some(path.to_string()) != case.store_path {
                    disagreements.push(format!(
                        "{:?}: nix {:?}, declenv {path}",
                        case.name, case.store_path
                    ));
                }
            }
            (Err(_), false) => {}
            _ => disagreements.push(format!(
                "{:?}: nix {}, declenv {ours:?}",
                case.name,
                if case.accepted { "accepts" } else { "rejects" }
            )),
        }
        assert_eq!(
            validate_name(&case.name).is_ok(),
            ours.is_ok(),
            "{:?}",
            case.name
        );
    }
    assert_no_disagreements("name", &disagreements);
    assert!(
        deliberate >= 3,
        "expected the leading-dot cases, found {deliberate}"
    );
}

#[test]
fn store_dir_spellings_match_nix() {
    let mut disagreements = Vec::new();
    for case in read_fixture::<StoreDirCase>("store_dirs.jsonl") {
        let store_dir = StoreDir::new(&case.store_dir).expect("absolute");
        let computed =
            source_store_path(&store_dir, &sha256_of(&case.nar_hash), &case.name).expect("valid");
        if computed.to_string() != case.store_path {
            disagreements.push(format!(
                "{:?}: nix {}, declenv {computed}",
                case.store_dir, case.store_path
            ));
        }
    }
    assert_no_disagreements("store directory", &disagreements);
}

// ---------------------------------------------------------------------------------------------
// Live comparison with `nix-store --add`.
// ---------------------------------------------------------------------------------------------

/// SplitMix64: a small, seedable generator, so a failing run can be replayed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound.max(1)).unwrap_or(1)).unwrap_or(0)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const LIVE_NAMES: &[&[u8]] = &[
    b"a",
    b"b",
    b"bin",
    b"lib",
    b"share",
    b"README",
    b"x.y",
    b"-x",
    b"_",
    b"Z",
    b".hidden",
    b"with space",
    b"new\nline",
    b"\xff\xfe",
    b"caf\xc3\xa9",
    b"\x01",
    b"*",
    b"...",
    b"~",
];

fn random_node(random: &mut Random, depth: usize) -> Node {
    let roll = random.below(100);
    if depth > 0 && roll < 35 {
        let mut names: Vec<&[u8]> = LIVE_NAMES.to_vec();
        let count = random.below(6);
        let mut entries = Vec::new();
        for _ in 0..count {
            let name = names.swap_remove(random.below(names.len()));
            entries.push((
                Bytes::Hex { hex: hex(name) },
                random_node(random, depth - 1),
            ));
        }
        let mode = *random.pick(&[0o755, 0o700, 0o555]);
        return Node::Directory { mode, entries };
    }
    if roll < 80 {
        let length = *random.pick(&[0, 1, 7, 8, 9, 100, 5000]);
        let contents = Bytes::Generated {
            generated: Generated {
                length,
                seed: random.next(),
            },
        };
        let mode = *random.pick(&[0o644, 0o755, 0o600, 0o700, 0o444, 0o555, 0o654]);
        return Node::Regular { mode, contents };
    }
    const TARGETS: &[&[u8]] = &[
        b"a",
        b"../b",
        b"/abs/olute",
        b"\xff",
        b"with space",
        b"dir/",
    ];
    let target = *random.pick(TARGETS);
    Node::Symlink {
        target: Bytes::Hex { hex: hex(target) },
    }
}

fn random_store_name(random: &mut Random) -> String {
    const FIRST: &[u8] = b"abcXYZ0189+-_?=";
    const REST: &[u8] = b"abcXYZ0189+-._?=";
    let length = 1 + random.below(40);
    let mut name = String::new();
    name.push(char::from(*random.pick(FIRST)));
    for _ in 1..length {
        name.push(char::from(*random.pick(REST)));
    }
    name
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn nix_store(arguments: &[&OsStr], root: &Path, scratch: &Path) -> Vec<String> {
    let program = std::env::var_os("DECLENV_NIX_STORE").unwrap_or_else(|| "nix-store".into());
    let output = Command::new(&program)
        .args(arguments)
        .env_clear()
        .env("NIX_REMOTE", "local")
        .env(
            "NIX_CONFIG",
            "sandbox = false\nsubstituters =\nbuild-users-group =",
        )
        .env("NIX_STORE_DIR", root.join("nix/store"))
        .env("NIX_STATE_DIR", root.join("nix/var/nix"))
        .env("NIX_LOG_DIR", root.join("nix/var/log/nix"))
        .env("NIX_CONF_DIR", scratch.join("conf"))
        .env("HOME", scratch.join("home"))
        .env("LANG", "C.UTF-8")
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.to_string_lossy()));
    assert!(
        output.status.success(),
        "nix-store {arguments:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn live_differential_against_nix_store_add() {
    if std::env::var("DECLENV_TEST_NIX").as_deref() != Ok("1") {
        eprintln!(
            "skipping live_differential_against_nix_store_add: set DECLENV_TEST_NIX=1 to run it"
        );
        return;
    }
    let seed = std::env::var("DECLENV_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| {
                    u64::try_from(elapsed.as_nanos() % u128::from(u64::MAX)).unwrap_or(0)
                })
        });
    eprintln!("live_differential_against_nix_store_add: DECLENV_TEST_SEED={seed}");
    let mut random = Random(seed);

    let scratch = Scratch::new();
    for directory in ["conf", "home", "trees"] {
        std::fs::create_dir(scratch.path().join(directory)).expect("mkdir");
    }
    let mut trees = Vec::new();
    for index in 0..40 {
        let name = random_store_name(&mut random);
        let tree = if index % 3 == 0 {
            random_node(&mut random, 0)
        } else {
            random_node(&mut random, 4)
        };
        let holder = scratch.path().join("trees").join(index.to_string());
        std::fs::create_dir(&holder).expect("mkdir");
        let path = holder.join(&name);
        build(&path, &tree);
        trees.push((name, path));
    }

    // Nix first, in a store under `root`; then the embedded store in the very same directory,
    // so the store directory strings (part of every hash) are identical.
    let root = Scratch::new();
    let root_path = std::fs::canonicalize(root.path()).expect("canonical root");
    let mut arguments: Vec<&OsStr> = vec![OsStr::new("--add")];
    arguments.extend(trees.iter().map(|(_, path)| path.as_os_str()));
    let added = nix_store(&arguments, &root_path, scratch.path());
    assert_eq!(added.len(), trees.len(), "one path per tree");
    let query = |flag: &str| {
        let mut arguments: Vec<&OsStr> = vec![OsStr::new("--query"), OsStr::new(flag)];
        arguments.extend(added.iter().map(OsStr::new));
        nix_store(&arguments, &root_path, scratch.path())
    };
    let hashes = query("--hash");
    let sizes = query("--size");
    make_writable(&root_path.join("nix"));
    std::fs::remove_dir_all(root_path.join("nix")).expect("remove the Nix store");

    let store = EmbeddedStore::open(&root_path).expect("open");
    let mut disagreements = Vec::new();
    for (((name, path), nix_path), (nix_hash, nix_size)) in
        trees.iter().zip(&added).zip(hashes.iter().zip(&sizes))
    {
        let ours = store.add_tree(path, name).expect("add");
        let info = store.path_info(&ours).expect("info").expect("valid");
        let ours_size = info.nar.size.to_string();
        if ours.to_string() != *nix_path
            || info.nar.to_nix_string() != *nix_hash
            || ours_size != *nix_size
        {
            disagreements.push(format!(
                "{}: nix {nix_path} {nix_hash} {nix_size}, declenv {ours} {} {ours_size}",
                path.display(),
                info.nar.to_nix_string()
            ));
        }
    }
    let report = store.verify().expect("verify");
    make_writable(&root_path);
    assert_no_disagreements(&format!("live (seed {seed})"), &disagreements);
    assert!(report.is_clean(), "{report:?}");
}
