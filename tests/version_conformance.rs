//! Differential conformance of `declenv::version` against Nix 2.8.
//!
//! The fixtures under `tests/fixtures/versions/` hold Nix's own answers for `compareVersions`,
//! `parseDrvName` and `splitVersion` on inputs drawn from real package lists, their mutations
//! and adversarial cases (regenerate them with `scripts/conformance/gen_versions.py`). Every
//! line is checked against the library.
//!
//! `live_differential_against_nix` asks the installed `nix-instantiate` about a fresh random
//! sample; it runs only when `DECLENV_TEST_NIX=1` is set. The seed comes from the clock and is
//! printed; set `DECLENV_TEST_SEED` to replay a run, and `DECLENV_NIX_INSTANTIATE` to use
//! another `nix-instantiate` binary.

#![allow(
    clippy::print_stderr,
    reason = "the tests report their seed, skips and disagreements on stderr"
)]

use std::cmp::Ordering;
use std::fmt::Debug;
use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use declenv::version::{DrvName, compare_versions, split_version};
use serde::Deserialize;
use serde::de::DeserializeOwned;

const SHOWN_DISAGREEMENTS: usize = 20;
const MIN_COMPARE_CASES: usize = 100_000;
const MIN_PARSE_CASES: usize = 30_000;
const MIN_SPLIT_CASES: usize = 10_000;

type CompareCase = (String, String, i8);
type ParseCase = (String, String, String);
type SplitCase = (String, Vec<String>);

fn fixture_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join("versions")
        .join(file)
}

/// Reads a JSON-lines fixture, one case a line; a malformed line fails the test.
fn read_fixture<T: DeserializeOwned>(file: &str) -> Vec<T> {
    let path = fixture_path(file);
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

fn ordering_as_nix(ordering: Ordering) -> i8 {
    match ordering {
        Ordering::Less => -1,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    }
}

/// Collects disagreements between Nix and the library, keeping the first few for the report.
#[derive(Default)]
struct Disagreements {
    count: usize,
    shown: Vec<String>,
}

impl Disagreements {
    fn check<I: Debug, A: PartialEq + Debug>(&mut self, input: I, nix: A, ours: A) {
        if nix != ours {
            self.count += 1;
            if self.shown.len() < SHOWN_DISAGREEMENTS {
                self.shown
                    .push(format!("  input {input:?}: nix {nix:?}, declenv {ours:?}"));
            }
        }
    }

    fn assert_none(&self, what: &str, total: usize, context: &str) {
        assert!(
            self.count == 0,
            "{what}: {} of {total} cases disagree with Nix{context}; the first {}:\n{}",
            self.count,
            self.shown.len(),
            self.shown.join("\n")
        );
    }
}

fn check_compare(cases: &[CompareCase], disagreements: &mut Disagreements) {
    for (a, b, nix) in cases {
        let ours = ordering_as_nix(compare_versions(a, b));
        disagreements.check((a, b), *nix, ours);
    }
}

fn check_parse(cases: &[ParseCase], disagreements: &mut Disagreements) {
    for (full, name, version) in cases {
        let parsed = DrvName::parse(full);
        disagreements.check(
            full,
            (name.as_str(), version.as_str()),
            (parsed.name.as_str(), parsed.version.as_str()),
        );
    }
}

fn check_split(cases: &[SplitCase], disagreements: &mut Disagreements) {
    for (input, nix) in cases {
        let ours = split_version(input);
        let nix: Vec<&str> = nix.iter().map(String::as_str).collect();
        disagreements.check(input, nix, ours);
    }
}

#[test]
fn compare_versions_matches_nix_fixture() {
    let cases: Vec<CompareCase> = read_fixture("compare.jsonl");
    assert!(
        cases.len() >= MIN_COMPARE_CASES,
        "compare.jsonl holds {} cases, expected at least {MIN_COMPARE_CASES}",
        cases.len()
    );
    for (a, b, result) in &cases {
        assert!(
            matches!(result, -1..=1),
            "compare.jsonl: result {result} for {a:?} vs {b:?} is not -1, 0 or 1"
        );
    }
    let mut disagreements = Disagreements::default();
    check_compare(&cases, &mut disagreements);
    disagreements.assert_none("compareVersions", cases.len(), "");
}

#[test]
fn parse_drv_name_matches_nix_fixture() {
    let cases: Vec<ParseCase> = read_fixture("parse_drv_name.jsonl");
    assert!(
        cases.len() >= MIN_PARSE_CASES,
        "parse_drv_name.jsonl holds {} cases, expected at least {MIN_PARSE_CASES}",
        cases.len()
    );
    let mut disagreements = Disagreements::default();
    check_parse(&cases, &mut disagreements);
    disagreements.assert_none("parseDrvName", cases.len(), "");
}

#[test]
fn split_version_matches_nix_fixture() {
    let cases: Vec<SplitCase> = read_fixture("split_version.jsonl");
    assert!(
        cases.len() >= MIN_SPLIT_CASES,
        "split_version.jsonl holds {} cases, expected at least {MIN_SPLIT_CASES}",
        cases.len()
    );
    let mut disagreements = Disagreements::default();
    check_split(&cases, &mut disagreements);
    disagreements.assert_none("splitVersion", cases.len(), "");
}

// ------------------------------------------------------------------------------------------
// Live differential test against the installed Nix.
// ------------------------------------------------------------------------------------------

const LIVE_COMPARE_CASES: usize = 3_000;
const LIVE_PARSE_CASES: usize = 3_000;
const LIVE_SPLIT_CASES: usize = 3_000;

/// SplitMix64: small, seedable and good enough to draw test inputs.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index below `bound` (which must be positive).
    fn below(&mut self, bound: usize) -> usize {
        let bound = u64::try_from(bound).expect("bound fits in u64");
        usize::try_from(self.next_u64() % bound).expect("index fits in usize")
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Atoms of random versions: rich in separators, digits, `pre`, letters and non-ASCII.
const ATOMS: &[&str] = &[
    ".",
    ".",
    ".",
    ".",
    "-",
    "-",
    "-",
    "-",
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "0",
    "1",
    "pre",
    "pre",
    "pre",
    "pre",
    "a",
    "b",
    "c",
    "e",
    "p",
    "r",
    "z",
    "A",
    "P",
    "Z",
    "rc",
    "beta",
    "alpha",
    "prerelease",
    "_",
    "+",
    "~",
    " ",
    "00",
    "01",
    "2147483647",
    "2147483648",
    "4294967296",
    "9223372036854775808",
    "12345678901234567890",
    "é",
    "ü",
    "中",
    "😀",
    "ß",
    "\t",
    "!",
    "/",
    ":",
    "@",
];

const SEPARATORS: &[&str] = &[".", "-", "", "..", "--", ".-", "_", "+", "~", " "];

fn random_string(rng: &mut Rng, max_atoms: usize) -> String {
    let atoms = rng.below(max_atoms + 1);
    (0..atoms).map(|_| *rng.pick(ATOMS)).collect()
}

/// Byte offsets of every char boundary of `s`, including its end.
fn boundaries(s: &str) -> Vec<usize> {
    s.char_indices()
        .map(|(index, _)| index)
        .chain(std::iter::once(s.len()))
        .collect()
}

/// Ranges of the ASCII digit runs of `s`.
fn digit_runs(s: &str) -> Vec<(usize, usize)> {
    let bytes = s.as_bytes();
    let mut runs = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index].is_ascii_digit() {
            let start = index;
            while index < bytes.len() && bytes[index].is_ascii_digit() {
                index += 1;
            }
            runs.push((start, index));
        } else {
            index += 1;
        }
    }
    runs
}

/// One random edit; the result stays valid UTF-8 and never gains a NUL.
fn mutate_once(rng: &mut Rng, s: &str) -> String {
    let cuts = boundaries(s);
    let at = *rng.pick(&cuts);
    match rng.below(11) {
        0 => format!("{}{}{}", &s[..at], rng.pick(ATOMS), &s[at..]),
        1 if cuts.len() > 1 => {
            let index = rng.below(cuts.len() - 1);
            format!("{}{}", &s[..cuts[index]], &s[cuts[index + 1]..])
        }
        2 if cuts.len() > 1 => {
            let index = rng.below(cuts.len() - 1);
            format!(
                "{}{}{}",
                &s[..cuts[index]],
                rng.pick(ATOMS),
                &s[cuts[index + 1]..]
            )
        }
        3 => format!("{}pre{}", &s[..at], &s[at..]),
        4 => {
            let separator = *rng.pick(SEPARATORS);
            s.replacen(if rng.chance(50) { '.' } else { '-' }, separator, 1)
        }
        5 => {
            let runs = digit_runs(s);
            if runs.is_empty() {
                format!("{s}.0")
            } else {
                let (start, end) = *rng.pick(&runs);
                let replacement = match rng.below(4) {
                    0 => format!("0{}", &s[start..end]),
                    1 => s[start..end].trim_start_matches('0').to_owned(),
                    2 => (*rng.pick(&["2147483647", "2147483648", "4294967296", "99999999999"]))
                        .to_owned(),
                    _ => {
                        let value: u128 = s[start..end].parse().unwrap_or(0);
                        value.wrapping_add(1).to_string()
                    }
                };
                format!("{}{replacement}{}", &s[..start], &s[end..])
            }
        }
        6 => {
            let suffix = *rng.pick(&[
                "pre", "pre1", "-pre", "rc1", "-rc1", "~rc1", "beta", "-beta.2", "a", ".0", "-1",
                ".", "-", "+git", "_1", " ", "é",
            ]);
            format!("{s}{suffix}")
        }
        7 => {
            let prefix = *rng.pick(&["v", ".", "-", "0.", "1:", "pre", " ", "é", "-_", "x-"]);
            format!("{prefix}{s}")
        }
        8 if cuts.len() > 2 => s[..cuts[1 + rng.below(cuts.len() - 2)]].to_owned(),
        9 => {
            if rng.chance(50) {
                s.to_uppercase()
            } else {
                s.to_lowercase()
            }
        }
        _ => format!("{}{}{}", &s[..at], rng.pick(SEPARATORS), &s[at..]),
    }
}

fn mutate(rng: &mut Rng, s: &str) -> String {
    let edits = 1 + rng.below(3);
    (0..edits).fold(s.to_owned(), |current, _| mutate_once(rng, &current))
}

fn live_seed() -> u64 {
    if let Ok(seed) = std::env::var("DECLENV_TEST_SEED") {
        return seed
            .trim()
            .parse()
            .unwrap_or_else(|error| panic!("DECLENV_TEST_SEED={seed:?} is not a u64: {error}"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    // Only the low bits vary between runs; truncation is intended.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "any 64 bits of the clock will do"
    )]
    let nanos = now.as_nanos() as u64;
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

struct LiveSample {
    compare: Vec<(String, String)>,
    parse: Vec<String>,
    split: Vec<String>,
}

fn live_sample(rng: &mut Rng) -> LiveSample {
    let compare_fixture: Vec<CompareCase> = read_fixture("compare.jsonl");
    let parse_fixture: Vec<ParseCase> = read_fixture("parse_drv_name.jsonl");
    let versions: Vec<&str> = compare_fixture
        .iter()
        .flat_map(|(a, b, _)| [a.as_str(), b.as_str()])
        .collect();
    let names: Vec<&str> = parse_fixture
        .iter()
        .map(|(full, _, _)| full.as_str())
        .collect();
    let package_names: Vec<&str> = parse_fixture
        .iter()
        .map(|(_, name, _)| name.as_str())
        .filter(|name| !name.is_empty())
        .collect();

    let compare = (0..LIVE_COMPARE_CASES)
        .map(|_| match rng.below(5) {
            0 | 1 => {
                let version = *rng.pick(&versions);
                let mutated = mutate(rng, version);
                if rng.chance(50) {
                    (version.to_owned(), mutated)
                } else {
                    (mutated, version.to_owned())
                }
            }
            2 => {
                let version = *rng.pick(&versions);
                (mutate(rng, version), mutate(rng, version))
            }
            3 => (random_string(rng, 10), random_string(rng, 10)),
            _ => {
                let version = random_string(rng, 10);
                (version.clone(), mutate(rng, &version))
            }
        })
        .collect();

    let parse = (0..LIVE_PARSE_CASES)
        .map(|_| match rng.below(4) {
            0 | 1 => {
                let name = *rng.pick(&names);
                mutate(rng, name)
            }
            2 => {
                let name = *rng.pick(&package_names);
                let dash = *rng.pick(&["-", "-", "--", "-_", "-.", "- ", "-é", "-A", "-pre"]);
                let version = *rng.pick(&versions);
                let version = mutate(rng, version);
                format!("{name}{dash}{version}")
            }
            _ => random_string(rng, 14),
        })
        .collect();

    let split = (0..LIVE_SPLIT_CASES)
        .map(|_| {
            if rng.chance(60) {
                let version = *rng.pick(&versions);
                mutate(rng, version)
            } else {
                random_string(rng, 14)
            }
        })
        .collect();

    LiveSample {
        compare,
        parse,
        split,
    }
}

#[derive(Deserialize)]
struct NixAnswers {
    compare: Vec<i8>,
    parse: Vec<(String, String)>,
    split: Vec<Vec<String>>,
}

const LIVE_EXPRESSION: &str = "\
let xs = builtins.fromJSON (builtins.readFile ./in.json); in {
  compare = map (p: builtins.compareVersions (builtins.elemAt p 0) (builtins.elemAt p 1)) xs.compare;
  parse = map (s: let d = builtins.parseDrvName s; in [ d.name d.version ]) xs.parse;
  split = map builtins.splitVersion xs.split;
}";

fn ask_nix(sample: &LiveSample) -> NixAnswers {
    let directory = tempfile::tempdir().expect("create a temporary directory");
    let input = serde_json::json!({
        "compare": sample.compare,
        "parse": sample.parse,
        "split": sample.split,
    });
    std::fs::write(
        directory.path().join("in.json"),
        serde_json::to_vec(&input).expect("serialise the sample"),
    )
    .expect("write the sample");

    let program =
        std::env::var("DECLENV_NIX_INSTANTIATE").unwrap_or_else(|_| "nix-instantiate".to_owned());
    let mut command = Command::new(&program);
    command
        .args(["--eval", "--strict", "--json", "-E", LIVE_EXPRESSION])
        .current_dir(directory.path());
    if std::env::var_os("NIX_REMOTE").is_none() {
        command.env("NIX_REMOTE", "local");
    }
    if std::env::var_os("NIX_CONFIG").is_none() {
        command.env(
            "NIX_CONFIG",
            "sandbox = false\nsubstituters =\nbuild-users-group =",
        );
    }
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: NixAnswers = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("cannot read the answers of {program}: {error}"));
    assert_eq!(answers.compare.len(), sample.compare.len());
    assert_eq!(answers.parse.len(), sample.parse.len());
    assert_eq!(answers.split.len(), sample.split.len());
    answers
}

#[test]
fn live_differential_against_nix() {
    if std::env::var("DECLENV_TEST_NIX").as_deref() != Ok("1") {
        eprintln!("live_differential_against_nix: skipped; set DECLENV_TEST_NIX=1 to run it");
        return;
    }
    let seed = live_seed();
    eprintln!("live_differential_against_nix: seed {seed} (replay with DECLENV_TEST_SEED={seed})");
    let mut rng = Rng(seed);
    let sample = live_sample(&mut rng);
    let answers = ask_nix(&sample);
    let context = format!(" (seed {seed})");

    let compare: Vec<CompareCase> = sample
        .compare
        .iter()
        .zip(&answers.compare)
        .map(|((a, b), result)| (a.clone(), b.clone(), *result))
        .collect();
    let mut disagreements = Disagreements::default();
    check_compare(&compare, &mut disagreements);
    disagreements.assert_none("compareVersions (live)", compare.len(), &context);

    let parse: Vec<ParseCase> = sample
        .parse
        .iter()
        .zip(answers.parse)
        .map(|(full, (name, version))| (full.clone(), name, version))
        .collect();
    let mut disagreements = Disagreements::default();
    check_parse(&parse, &mut disagreements);
    disagreements.assert_none("parseDrvName (live)", parse.len(), &context);

    let split: Vec<SplitCase> = sample.split.into_iter().zip(answers.split).collect();
    let mut disagreements = Disagreements::default();
    check_split(&split, &mut disagreements);
    disagreements.assert_none("splitVersion (live)", split.len(), &context);

    eprintln!(
        "live_differential_against_nix: {} pairs, {} names, {} versions agree with Nix",
        compare.len(),
        parse.len(),
        split.len()
    );
}
