//! Selector matching against `nix-env -qa`, on a catalog of a few thousand real package names.
//!
//! `tests/fixtures/selectors/` holds the catalog (`catalog.nix`, and `catalog.json` as
//! `nix-env -qa --json --out-path --meta` printed it) and what the real `nix-env` 2.8 printed for
//! each selector list (`results.jsonl`). This test replays every case through the library:
//! load the JSON catalog, apply the selectors with `nix-env -qa`'s rules, order the rows as Nix
//! does (libstdc++'s `std::sort` permutation included), and compare stdout, stderr and the exit
//! status byte for byte. The `live` test re-runs a fresh sample
//! against an installed Nix (set `DECLENV_TEST_NIX=1`).

#![expect(
    clippy::print_stderr,
    reason = "the live test reports its seed, or why it was skipped"
)]

use declenv::model::catalog::{Catalog, EntryRef, parse_catalog_json};
use declenv::plan::select::{SelectionError, filter_by_selectors, sort_for_query};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

const SYSTEM: &str = "x86_64-linux";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/selectors")
}

fn catalog() -> Catalog {
    let text = fs_err::read_to_string(fixtures().join("catalog.json")).expect("catalog fixture");
    Catalog::new(vec![
        parse_catalog_json(&text).expect("fixture catalog parses"),
    ])
    .expect("fixture catalog packs")
}

#[derive(Debug, Deserialize)]
struct Case {
    args: Vec<String>,
    json: bool,
    exit: i32,
    stdout: String,
    stderr: String,
}

/// What `nix-env -qa [--json] ARGS` prints, computed by the library.
struct Answer {
    exit: i32,
    stdout: String,
    stderr: String,
}

fn query(catalog: &Catalog, args: &[String], json: bool) -> Answer {
    let candidates: Vec<EntryRef<'_>> = catalog.iter().collect();
    let selectors: Vec<&str> = args.iter().map(String::as_str).collect();
    match filter_by_selectors(&candidates, &selectors, false, SYSTEM) {
        Ok(selected) => {
            let mut rows = selected.indices;
            sort_for_query(&candidates, &mut rows);
            let stdout = if json {
                render_json(&candidates, &rows)
            } else {
                rows.iter()
                    .map(|&index| format!("{}\n", candidates[index].name().replace('\n', " ")))
                    .collect()
            };
            Answer {
                exit: 0,
                stdout,
                stderr: String::new(),
            }
        }
        Err(error) => Answer {
            exit: 1,
            stdout: String::new(),
            stderr: match error {
                SelectionError::Selector(_) | SelectionError::NoMatch { .. } => {
                    format!("error: {error}\n")
                }
            },
        },
    }
}

/// `nix-env -qa --json` without `--out-path`/`--meta`: keys in row order, outputs null.
fn render_json(candidates: &[EntryRef<'_>], rows: &[usize]) -> String {
    if rows.is_empty() {
        return "{}\n".to_owned();
    }
    let quote = |text: &str| serde_json::to_string(text).expect("string serialises");
    let mut out = String::from("{\n");
    for (position, &index) in rows.iter().enumerate() {
        let view = candidates[index];
        let entry = view.to_entry().expect("fixture entries decode");
        out.push_str(&format!("  {}: {{\n", quote(&entry.attr_path)));
        out.push_str(&format!("    \"name\": {},\n", quote(&entry.name)));
        out.push_str(&format!(
            "    \"pname\": {},\n",
            quote(entry.package_name())
        ));
        out.push_str(&format!("    \"version\": {},\n", quote(entry.version())));
        out.push_str(&format!(
            "    \"system\": {},\n",
            quote(entry.system_or_unknown())
        ));
        out.push_str(&format!(
            "    \"outputName\": {},\n",
            quote(&entry.output_name)
        ));
        out.push_str("    \"outputs\": {\n");
        let outputs: Vec<String> = entry
            .outputs
            .keys()
            .map(|name| format!("      {}: null", quote(name)))
            .collect();
        out.push_str(&outputs.join(",\n"));
        out.push_str("\n    }\n  }");
        out.push_str(if position + 1 == rows.len() {
            "\n"
        } else {
            ",\n"
        });
    }
    out.push_str("}\n");
    out
}

fn agrees(expected: &Case, actual: &Answer) -> bool {
    // Byte for byte: even rows whose names tie come out in `std::sort`'s order.
    expected.exit == actual.exit
        && expected.stderr == actual.stderr
        && expected.stdout == actual.stdout
}

#[test]
fn every_recorded_nix_env_query_agrees() {
    let catalog = catalog();
    assert!(
        catalog.len() >= 2_000,
        "fixture catalog too small: {}",
        catalog.len()
    );
    let text = fs_err::read_to_string(fixtures().join("results.jsonl")).expect("results fixture");
    let cases: Vec<Case> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("fixture line parses"))
        .collect();
    assert!(
        cases.len() >= 400,
        "too few recorded selector cases: {}",
        cases.len()
    );
    assert!(
        cases.iter().any(|case| case.exit != 0),
        "fixtures must include failures"
    );
    let mut disagreements = Vec::new();
    for case in &cases {
        let answer = query(&catalog, &case.args, case.json);
        if !agrees(case, &answer) {
            disagreements.push(format!(
                "args {:?} (json {}):\n  nix-env: exit {} stderr {:?} stdout {:?}\n  declenv: exit {} stderr {:?} stdout {:?}",
                case.args,
                case.json,
                case.exit,
                case.stderr,
                describe(&case.stdout),
                answer.exit,
                answer.stderr,
                describe(&answer.stdout),
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree; first ones:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// For JSON answers the interesting difference is usually the key order; show it in full.
fn describe(stdout: &str) -> String {
    if !stdout.starts_with('{') {
        return truncate(stdout);
    }
    let keys: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("  \"") && line.ends_with(": {"))
        .map(|line| line.trim_start().trim_end_matches(": {"))
        .collect();
    format!("keys {keys:?}")
}

fn truncate(text: &str) -> String {
    if text.len() > 300 {
        format!("{}…", &text[..text.floor_char_boundary(300)])
    } else {
        text.to_owned()
    }
}

/// Selectors built fresh for every live run: fragments of real names turned into regexes.
fn live_selectors(catalog: &Catalog, seed: u64) -> Vec<String> {
    let mut state = seed | 1;
    let mut next = move |bound: usize| {
        // xorshift64: enough to vary the sample between runs.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % bound as u64).expect("fits")
    };
    let mut selectors = Vec::new();
    for _ in 0..40 {
        let entry = catalog.get(next(catalog.len()));
        let name = entry.package_name();
        let cut = name.floor_char_boundary(1 + next(name.len().max(1)));
        let fragment = &name[..cut];
        let escaped: String = fragment
            .chars()
            .map(|c| {
                if "\\.+*?()[]{}|^$".contains(c) {
                    format!("\\{c}")
                } else {
                    c.to_string()
                }
            })
            .collect();
        selectors.push(match next(6) {
            0 => escaped.clone(),
            1 => format!("{escaped}.*"),
            2 => format!(".*{escaped}"),
            3 => entry.name().to_owned(),
            4 => format!("{}[a-z0-9]*", escaped),
            _ => format!("({escaped}|{})", fragment.to_ascii_uppercase()),
        });
    }
    selectors.extend(["*", "*-1.0", ".*zip.*", "(oops", "fo\\o"].map(str::to_owned));
    selectors
}

#[test]
fn live_sample_agrees_with_installed_nix() {
    if std::env::var_os("DECLENV_TEST_NIX").is_none() {
        eprintln!("skipped: set DECLENV_TEST_NIX=1 to compare against an installed nix-env");
        return;
    }
    let catalog = catalog();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    eprintln!("live selector sample, seed {seed}");
    let home = tempfile::tempdir().expect("private HOME");
    let mut disagreements = Vec::new();
    let selectors = live_selectors(&catalog, seed);
    for selector in &selectors {
        let output = Command::new("nix-env")
            .args(["-f"])
            .arg(fixtures().join("catalog.nix"))
            .args(["-qa", selector.as_str()])
            .env("HOME", home.path())
            .env("NIX_REMOTE", "local")
            .env(
                "NIX_CONFIG",
                "sandbox = false\nsubstituters =\nbuild-users-group =",
            )
            .output()
            .expect("nix-env runs (install nix-bin)");
        let case = Case {
            args: vec![selector.clone()],
            json: false,
            exit: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        let answer = query(&catalog, &case.args, false);
        if !agrees(&case, &answer) {
            disagreements.push(format!(
                "{selector:?}: nix-env exit {} {:?}, declenv exit {} {:?}",
                case.exit,
                truncate(&(case.stderr.clone() + &case.stdout)),
                answer.exit,
                truncate(&(answer.stderr.clone() + &answer.stdout))
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "seed {seed}: {} of {} selectors disagree:\n{}",
        disagreements.len(),
        selectors.len(),
        disagreements.join("\n")
    );
}
