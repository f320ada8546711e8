//! Fuzzing every parser of untrusted input with proptest (stable Rust: no `cargo fuzz`):
//! the profile spec (and its format-keeping editor), the lockfile, catalog JSON, the packed
//! catalog cache, channel metadata, saved plans, generation metadata, `manifest.nix`,
//! `nix-env` argument lists and NAR archives.
//!
//! Each target gets arbitrary bytes and mutations of its seeds (bit flips, byte and token
//! insertions, deletions, duplicated ranges, truncation), and must return (a value or an
//! error) without panicking; where a parser has a writer, what parses must survive a round
//! trip. The NAR reader must also never write outside its target directory. The seeds live in
//! `tests/fuzz/corpus/TARGET/` (`tests/fuzz/make_corpus.sh` regenerates the generated ones), and
//! every seed is replayed as it is before any mutation.
//!
//! Cases per target: 300 by default, `DECLENV_FUZZ_CASES=N` for more (HARDENING.md quotes a
//! run of 20,000 per target). Memory stays bounded because no parser allocates by a length it
//! read before checking it against the input (NAR lengths are checked against limits, file
//! contents streamed); `.ci/run` runs this binary under `ulimit -v` to hold it to that.

use declenv::model::catalog::{Catalog, parse_catalog_json};
use declenv::model::channel::{PackageDirectory, channel_entries};
use declenv::model::packed::PackedCatalog;
use declenv::model::spec_edit::SpecEditor;
use declenv::model::{lockfile, manifest, spec};
use declenv::profile::GenerationMetadata;
use declenv::profile::declarative::Plan;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::path::{Path, PathBuf};

/// A parser under test: takes the input's bytes, panics on a violated property.
type Target = fn(&[u8]);

/// The seeds of `target`, sorted by name.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = fs_err::read_dir(&directory)
        .expect("corpus directory")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let bytes = fs_err::read(&path).expect("seed");
            (path, bytes)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in `{}`", directory.display());
    seeds
}

/// One edit of a seed.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit { at: usize, bit: u8 },
    SetByte { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, length: usize },
    Duplicate { at: usize, length: usize, to: usize },
    Truncate { at: usize },
}

/// Bytes that mean something to one of the formats, inserted whole.
const TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"",
    b"'",
    b"'''",
    b"\"\"\"",
    b"=",
    b",",
    b":",
    b";",
    b"\n",
    b"\\",
    b"\\u{0}",
    b"#",
    b"${",
    b"//",
    b"/*",
    b"..",
    b"/",
    b"\0",
    b"\xff",
    b"\xc3",
    b"-",
    b"--",
    b"-i",
    b"-q",
    b"-e",
    b"-A",
    b"-p",
    b"9223372036854775807",
    b"-2147483649",
    b"1e999",
    b"null",
    b"true",
    b"[packages.x]",
    b"[sources.x]",
    b"version = 1",
    b"\"outputs\"",
    b"\x08\0\0\0\0\0\0\0",
    b"\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"\x01\0\0\0\0\0\0\0(\0\0\0\0\0\0\0",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0..8_u8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        (
            any::<usize>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..8),
                prop::sample::select(TOKENS).prop_map(<[u8]>::to_vec),
            ]
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..64_usize).prop_map(|(at, length)| Mutation::Delete { at, length }),
        (any::<usize>(), 1..256_usize, any::<usize>())
            .prop_map(|(at, length, to)| Mutation::Duplicate { at, length, to }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let length = bytes.len();
        let position = |at: usize| if length == 0 { 0 } else { at % (length + 1) };
        match mutation {
            Mutation::FlipBit { at, bit } if length > 0 => bytes[at % length] ^= 1 << bit,
            Mutation::SetByte { at, byte } if length > 0 => bytes[at % length] = *byte,
            Mutation::Insert {
                at,
                bytes: inserted,
            } => {
                let at = position(*at);
                bytes.splice(at..at, inserted.iter().copied());
            }
            Mutation::Delete { at, length: count } if length > 0 => {
                let at = at % length;
                bytes.drain(at..(at + count).min(length));
            }
            Mutation::Duplicate {
                at,
                length: count,
                to,
            } if length > 0 => {
                let at = at % length;
                let range: Vec<u8> = bytes[at..(at + count).min(length)].to_vec();
                let to = position(*to);
                bytes.splice(to..to, range);
            }
            Mutation::Truncate { at } => bytes.truncate(position(*at)),
            _ => {}
        }
    }
    bytes
}

/// Arbitrary bytes, or a seed with a few mutations.
fn input(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        1 => "\\PC{0,256}".prop_map(String::into_bytes),
        6 => (prop::sample::select(seeds), prop::collection::vec(mutation(), 1..6))
            .prop_map(|(seed, mutations)| apply(seed, &mutations)),
    ]
}

fn cases() -> u32 {
    std::env::var("DECLENV_FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(300)
}

/// Replays every seed of `name`, then runs `cases()` generated inputs through `target`.
#[expect(clippy::print_stderr, reason = "the figures HARDENING.md quotes")]
fn fuzz(name: &str, target: Target) {
    let seeds = corpus(name);
    for (path, bytes) in &seeds {
        let replayed = std::panic::catch_unwind(|| target(bytes));
        assert!(replayed.is_ok(), "seed `{}` panicked", path.display());
    }
    let cases = cases();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = input(seeds.into_iter().map(|(_, bytes)| bytes).collect());
    let result = runner.run(&strategy, |bytes| {
        target(&bytes);
        Ok(())
    });
    if let Err(error) = result {
        panic!("{name}: {error}");
    }
    eprintln!(
        "fuzz: {name}: {} seeds replayed, {cases} generated inputs",
        corpus(name).len()
    );
}

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

fn spec_target(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    let _ = spec::parse(text, Path::new("/fuzz/dotfiles/profile.toml"));
    if let Ok(editor) = SpecEditor::parse(text) {
        // The editor keeps the text it did not change (`toml_edit` may end a last table header
        // with a newline), and what it writes reads back.
        let written = editor.text();
        assert_eq!(written.trim_end(), text.trim_end());
        let again = SpecEditor::parse(&written).expect("the editor's text parses");
        assert_eq!(again.text(), written);
    }
}

fn lockfile_target(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    let path = Path::new("/fuzz/dotfiles/profile.lock");
    if let Ok(parsed) = lockfile::parse(text, path) {
        let rendered = lockfile::render(&parsed);
        let again = lockfile::parse(&rendered, path).expect("a rendered lockfile parses");
        assert_eq!(lockfile::render(&again), rendered, "rendering is stable");
    }
}

fn catalog_target(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    let Ok(entries) = parse_catalog_json(text) else {
        return;
    };
    for entry in &entries {
        let _ = (
            entry.package_name(),
            entry.version(),
            entry.selection_priority(),
            entry.outputs_to_install(),
            entry.description(),
        );
    }
    let Ok(packed) = PackedCatalog::pack(&entries) else {
        return;
    };
    let packed = PackedCatalog::from_bytes(packed).expect("a packed catalog reads back");
    assert_eq!(packed.len(), entries.len());
    exercise(packed);
    if let Ok(catalog) = Catalog::new(vec![entries]) {
        for entry in catalog.iter() {
            let _ = (
                entry.to_entry(),
                catalog.by_package_name(entry.package_name()),
            );
        }
    }
}

/// Reads everything a packed catalog offers.
fn exercise(packed: PackedCatalog) {
    for index in 0..packed.len() {
        let _ = (
            packed.attr_path(index),
            packed.name(index),
            packed.system(index),
            packed.description(index),
            packed.selection_priority(index),
            packed.entry(index),
        );
    }
    let catalog = Catalog::from_packed(vec![packed]);
    for entry in catalog.iter() {
        let _ = (entry.to_entry(), entry.version(), entry.package_name());
    }
}

fn packed_target(bytes: &[u8]) {
    if let Some(packed) = PackedCatalog::from_bytes(bytes.to_vec()) {
        exercise(packed);
    }
}

fn channel_target(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    let directories: Vec<PackageDirectory> = [
        ("hello-2.10", &[][..]),
        ("hello-2.12.1", &[]),
        ("which-2.21", &[]),
        ("busybox-1.36.1", &[]),
        ("jq-1.7.1", &["out", "man", "doc"]),
        ("demo-motd", &[]),
        ("foo-2.0", &["out"]),
    ]
    .into_iter()
    .map(|(name, subdirectories)| PackageDirectory {
        name: name.to_owned(),
        subdirectories: subdirectories
            .iter()
            .map(|name| (*name).to_owned())
            .collect(),
    })
    .collect();
    if let Ok(entries) = channel_entries(&directories, Some(text), "x86_64-linux") {
        for entry in &entries {
            let _ = (entry.outputs_to_install(), entry.selection_priority());
        }
    }
}

fn plan_target(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    if let Ok(plan) = serde_json::from_str::<Plan>(text) {
        let written = serde_json::to_string(&plan).expect("a plan serialises");
        let again: Plan = serde_json::from_str(&written).expect("a written plan reads back");
        assert_eq!(again, plan);
    }
}

fn metadata_target(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    let _ = serde_json::from_str::<GenerationMetadata>(text);
}

fn manifest_target(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    if let Ok(elements) = manifest::parse(text)
        && let Ok(rendered) = manifest::render(&elements)
    {
        let again = manifest::parse(&rendered).expect("a rendered manifest parses");
        assert_eq!(
            manifest::render(&again).expect("renders again"),
            rendered,
            "rendering is stable"
        );
    }
}

fn args_target(bytes: &[u8]) {
    // A seed is a JSON array of arguments; other inputs are split on NUL, as argv is.
    let arguments: Vec<String> = match serde_json::from_slice::<Vec<String>>(bytes) {
        Ok(arguments) => arguments,
        Err(_) => bytes
            .split(|byte| *byte == 0)
            .map(|argument| String::from_utf8_lossy(argument).into_owned())
            .collect(),
    };
    let _ = declenv::compat::args::parse(&arguments);
}

fn nar_target(bytes: &[u8]) {
    let directory = tempfile::tempdir().expect("tempdir");
    let destination = directory.path().join("out");
    let _ = declenv::store::nar::restore(bytes, &destination);
    // Nothing outside the destination: the temporary directory holds it alone.
    let entries: Vec<_> = fs_err::read_dir(directory.path())
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert!(
        entries.is_empty() || entries == [std::ffi::OsString::from("out")],
        "the archive wrote outside its destination: {entries:?}"
    );
    // A tree restored whole hashes back to the same archive.
    if let Ok(length) = declenv::store::nar::restore(bytes, &directory.path().join("again")) {
        let mut archive = Vec::new();
        declenv::store::nar::dump(&directory.path().join("again"), &mut archive)
            .expect("a restored tree archives");
        assert_eq!(
            archive.as_slice(),
            &bytes[..usize::try_from(length).expect("length")]
        );
    }
}

#[test]
fn fuzz_spec() {
    fuzz("spec", spec_target);
}

#[test]
fn fuzz_lockfile() {
    fuzz("lockfile", lockfile_target);
}

#[test]
fn fuzz_catalog_json() {
    fuzz("catalog", catalog_target);
}

#[test]
fn fuzz_packed_catalog_cache() {
    fuzz("packed", packed_target);
}

#[test]
fn fuzz_channel_metadata() {
    fuzz("channel", channel_target);
}

#[test]
fn fuzz_saved_plan() {
    fuzz("plan", plan_target);
}

#[test]
fn fuzz_generation_metadata() {
    fuzz("metadata", metadata_target);
}

#[test]
fn fuzz_manifest() {
    fuzz("manifest", manifest_target);
}

#[test]
fn fuzz_nix_env_arguments() {
    fuzz("args", args_target);
}

#[test]
fn fuzz_nar() {
    fuzz("nar", nar_target);
}

/// A NAR that declares a file of 2^62 bytes is refused at its end, without allocating for it.
#[test]
fn a_huge_declared_length_is_not_allocated() {
    let seeds = corpus("nar");
    let (_, huge) = seeds
        .iter()
        .find(|(path, _)| path.ends_with("huge-length.nar"))
        .expect("seed");
    let directory = tempfile::tempdir().expect("tempdir");
    let error = declenv::store::nar::restore(huge.as_slice(), &directory.path().join("out"))
        .expect_err("truncated");
    assert!(error.to_string().contains("out"), "{error}");
}
