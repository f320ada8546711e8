//! Differential conformance of `declenv::plan::layout` and `declenv::model::manifest` against the
//! user-environment builder of Nix 2.8.
//!
//! Each file under `tests/fixtures/layout/` is one scenario that
//! `scripts/conformance/gen_layout.py` ran through the real `nix-env`: the store trees of its
//! packages (scanned from disk, symlinks with what `stat` through them says), the builder's input
//! (`derivations`, from the `user-environment.drv`), and what Nix made of it: the environment's
//! tree, or the error, plus the warnings and the `manifest.nix` text. For every scenario the test
//! rebuilds the input as in-memory trees and checks that
//!
//! * [`layout`] produces exactly Nix's tree (less the builder's own `manifest.nix` link) and the
//!   same warnings, or exactly Nix's error message;
//! * [`render`] of the scenario's elements is Nix's manifest byte for byte, and [`parse`] of
//!   Nix's manifest gives those elements back, except in `meta-values`, where Nix 2.8 writes
//!   floats, negative list items and keyword names it cannot read back; there the test pins
//!   exactly what we write instead.
//!
//! Nix walks directories in `readdir` order, which only decides which of several collisions is
//! reported first and the order of warnings; the scenarios have at most one collision each, and
//! warnings are compared as sorted lists.
//!
//! `live_layout_matches_installed_nix` regenerates every scenario with the installed Nix (in a
//! temporary store, so with other store hashes and orders) and checks those results the same
//! way; it runs only when `DECLENV_TEST_NIX=1` is set.

#![allow(
    clippy::print_stderr,
    reason = "the live test reports why it was skipped and what it ran"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use declenv::model::manifest::{ManifestElement, NixValue, parse, render};
use declenv::plan::layout::{
    Node, Operation, Package, PackageTree, Resolution, Symlink, Trees, layout, read_active,
    read_priority,
};
use serde::Deserialize;
use serde_json::Value;

/// The environment's output path as the fixtures write it.
const ENVIRONMENT: &str = "@ENV@";

/// Scenarios the suite must hold (the behaviours the layout has to reproduce).
const REQUIRED_SCENARIOS: [&str; 16] = [
    "same-priority-collision",
    "priority-winner",
    "directory-merge",
    "symlinked-directory-linked-first",
    "symlinked-directory-merged-second",
    "ignore-list-not-merged",
    "ignore-list-merged",
    "propagated-transitive",
    "propagated-counter-counts-skipped",
    "dangling-symlinks",
    "inactive-package",
    "file-directory-collision-file-first",
    "file-directory-collision-directory-first",
    "file-versus-merged-directory",
    "duplicate-store-path",
    "outputs-to-install",
];

#[derive(Deserialize)]
struct Scenario {
    name: String,
    trees: BTreeMap<String, TreeRecord>,
    derivations: String,
    exit: i32,
    warnings: Vec<String>,
    error: Option<String>,
    environment: Option<Vec<Vec<String>>>,
    manifest: String,
    elements: Vec<ElementRecord>,
}

#[derive(Deserialize)]
struct TreeRecord {
    root: Value,
    #[serde(default)]
    propagated: Option<String>,
}

#[derive(Deserialize)]
struct ElementRecord {
    name: String,
    out_path: String,
    outputs: BTreeMap<String, String>,
    system: Option<String>,
    meta: BTreeMap<String, Value>,
}

fn fixture_directory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join("layout")
}

fn read_scenarios(directory: &Path) -> Vec<Scenario> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", directory.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
            serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("{}: malformed scenario: {error}", path.display()))
        })
        .collect()
}

/// A tree node from the fixture's compact form: an object is a directory, `"file"` a file, and
/// `["symlink", TARGET, RESOLUTION]` a symlink.
fn node(value: &Value) -> Node {
    match value {
        Value::Object(entries) => Node::directory(
            entries
                .iter()
                .map(|(name, child)| (name.clone(), node(child))),
        ),
        Value::String(kind) if kind == "file" => Node::File,
        Value::Array(parts) => {
            let [kind, target, resolution] = parts.as_slice() else {
                panic!("malformed symlink {value}");
            };
            assert_eq!(kind, "symlink", "malformed node {value}");
            let resolves_to = match resolution {
                Value::String(kind) if kind == "dangling" => Resolution::Dangling,
                Value::String(kind) if kind == "loop" => Resolution::Loop,
                Value::Array(pair) => match (pair.first().and_then(Value::as_str), pair.get(1)) {
                    (Some("directory"), Some(Value::String(canonical))) => Resolution::Directory {
                        canonical_path: canonical.clone(),
                    },
                    (Some("non-directory"), Some(Value::String(canonical))) => {
                        Resolution::NonDirectory {
                            canonical_path: canonical.clone(),
                        }
                    }
                    _ => panic!("malformed resolution {resolution}"),
                },
                _ => panic!("malformed resolution {resolution}"),
            };
            Node::Symlink(Symlink {
                target: target.as_str().expect("symlink target").to_owned(),
                resolves_to,
            })
        }
        _ => panic!("malformed node {value}"),
    }
}

fn trees(scenario: &Scenario) -> Trees {
    scenario
        .trees
        .iter()
        .map(|(path, record)| {
            (
                path.clone(),
                PackageTree {
                    root: node(&record.root),
                    propagated_user_env_packages: record.propagated.clone(),
                },
            )
        })
        .collect()
}

/// Reads the builder's `derivations` input as the builder does: whitespace-separated tokens, in
/// groups of active flag, priority, output count and that many paths. `Err` carries the message
/// the builder fails with.
fn packages(derivations: &str) -> Result<Vec<Package>, String> {
    let mut tokens = derivations.split_whitespace();
    let mut packages = Vec::new();
    while let Some(active) = tokens.next() {
        let priority = tokens
            .next()
            .and_then(read_priority)
            .ok_or_else(|| "stoi".to_owned())?;
        let count = tokens
            .next()
            .and_then(read_priority)
            .ok_or_else(|| "stoi".to_owned())?;
        for _ in 0..count {
            let path = tokens.next().ok_or_else(|| "missing path".to_owned())?;
            packages.push(Package {
                store_path: path.to_owned(),
                priority,
                active: read_active(active),
            });
        }
    }
    Ok(packages)
}

/// Nix's tree as (path, symlink target or `None` for a directory), less `manifest.nix`.
fn nix_tree(environment: &[Vec<String>]) -> Vec<(String, Option<String>)> {
    environment
        .iter()
        .filter(|entry| entry.first().map(String::as_str) != Some("manifest.nix"))
        .map(|entry| match entry.as_slice() {
            [path, kind] if kind == "directory" => (path.clone(), None),
            [path, kind, target] if kind == "symlink" => (path.clone(), Some(target.clone())),
            other => panic!("unexpected environment entry {other:?}"),
        })
        .collect()
}

fn our_tree(operations: &[Operation]) -> Vec<(String, Option<String>)> {
    operations
        .iter()
        .map(|operation| match operation {
            Operation::Directory(path) => (path.as_str().to_owned(), None),
            Operation::Symlink { path, target } => (path.as_str().to_owned(), Some(target.clone())),
        })
        .collect()
}

/// Checks the layout of one scenario; returns a description of the disagreement, if any.
fn check_layout(scenario: &Scenario) -> Result<(), String> {
    let name = &scenario.name;
    let packages = match packages(&scenario.derivations) {
        Ok(packages) => packages,
        Err(message) => {
            return if scenario.exit != 0 && scenario.error.as_deref() == Some(message.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "{name}: the builder's input does not read ({message}), but Nix said {:?}",
                    scenario.error
                ))
            };
        }
    };
    let result = layout(&packages, &trees(scenario), ENVIRONMENT);
    match (result, scenario.exit, &scenario.environment) {
        (Ok(ours), 0, Some(environment)) => {
            let (expected, actual) = (nix_tree(environment), our_tree(&ours.operations));
            if expected != actual {
                return Err(format!(
                    "{name}: trees differ\n  nix:     {expected:?}\n  declenv: {actual:?}"
                ));
            }
            let mut nix_warnings = scenario.warnings.clone();
            let mut our_warnings: Vec<String> =
                ours.warnings.iter().map(ToString::to_string).collect();
            nix_warnings.sort();
            our_warnings.sort();
            if nix_warnings != our_warnings {
                return Err(format!(
                    "{name}: warnings differ\n  nix:     {nix_warnings:?}\n  declenv: {our_warnings:?}"
                ));
            }
            Ok(())
        }
        (Err(error), exit, _) if exit != 0 => {
            if scenario.error.as_deref() == Some(error.to_string().as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "{name}: errors differ\n  nix:     {:?}\n  declenv: {:?}",
                    scenario.error,
                    error.to_string()
                ))
            }
        }
        (ours, exit, _) => Err(format!(
            "{name}: Nix exited with {exit} ({:?}), declenv gave {ours:?}",
            scenario.error
        )),
    }
}

/// A meta value from the fixture's tagged form, `["int", 1]`, `["list", [...]]`, ….
fn nix_value(value: &Value) -> NixValue {
    let Some([tag, inner]) = value.as_array().map(Vec::as_slice) else {
        panic!("malformed tagged value {value}");
    };
    match (tag.as_str(), inner) {
        (Some("string"), Value::String(text)) => NixValue::String(text.clone()),
        (Some("int"), Value::Number(number)) => NixValue::Int(number.as_i64().expect("an i64")),
        (Some("float"), Value::Number(number)) => NixValue::Float(number.as_f64().expect("a f64")),
        (Some("bool"), Value::Bool(boolean)) => NixValue::Bool(*boolean),
        (Some("list"), Value::Array(items)) => {
            NixValue::List(items.iter().map(nix_value).collect())
        }
        (Some("attrs"), Value::Object(map)) => NixValue::Attrs(
            map.iter()
                .map(|(key, item)| (key.clone(), nix_value(item)))
                .collect(),
        ),
        _ => panic!("malformed tagged value {value}"),
    }
}

fn elements(scenario: &Scenario) -> Vec<ManifestElement> {
    scenario
        .elements
        .iter()
        .map(|element| ManifestElement {
            name: element.name.clone(),
            out_path: element.out_path.clone(),
            outputs: element.outputs.clone(),
            system: element.system.clone(),
            meta: element
                .meta
                .iter()
                .map(|(key, value)| (key.clone(), nix_value(value)))
                .collect(),
            drv_path: None,
        })
        .collect()
}

/// What Nix 2.8 writes in `meta-values` that it cannot read back (or reads back as another
/// value), and what we write there instead.
const META_VALUES_DEVIATIONS: [(&str, &str); 8] = [
    ("float_big = 1e+20;", "float_big = 1.0e20;"),
    ("float_integral = 1;", "float_integral = 1.0;"),
    (
        "float_precise = 1.23457e+08;",
        "float_precise = 123456789.0;",
    ),
    ("float_small = 1.5e-07;", "float_small = 1.5e-7;"),
    (
        "float_third = 0.333333;",
        "float_third = 0.3333333333333333;",
    ),
    (
        "list_negative = [ -1 -0.5 3 ];",
        "list_negative = [ (-1) (-0.5) 3 ];",
    ),
    (" let = 2;", " \"let\" = 2;"),
    (" then = 4;", " \"then\" = 4;"),
];

/// Checks the manifest of one scenario; returns a description of the disagreement, if any.
fn check_manifest(scenario: &Scenario) -> Result<(), String> {
    let name = &scenario.name;
    let expected = elements(scenario);
    let ours = render(&expected).map_err(|error| format!("{name}: render failed: {error}"))?;
    let read =
        parse(&scenario.manifest).map_err(|error| format!("{name}: parse failed: {error}"))?;
    if name == "meta-values" {
        let mut nix_text = scenario.manifest.clone();
        for (nix, declenv) in META_VALUES_DEVIATIONS {
            if !nix_text.contains(nix) {
                return Err(format!("{name}: Nix's manifest no longer has `{nix}`"));
            }
            nix_text = nix_text.replace(nix, declenv);
        }
        if nix_text != ours {
            return Err(format!(
                "{name}: beyond the documented deviations the manifests differ\n  nix, amended: {nix_text}\n  declenv:      {ours}"
            ));
        }
        let reread = parse(&ours).map_err(|error| format!("{name}: our own manifest: {error}"))?;
        if reread != expected {
            return Err(format!(
                "{name}: our manifest does not read back as the elements"
            ));
        }
        return check_nix_meta_values(&read, &expected);
    }
    if ours != scenario.manifest {
        return Err(format!(
            "{name}: manifests differ\n  nix:     {}\n  declenv: {ours}",
            scenario.manifest
        ));
    }
    if read != expected {
        return Err(format!(
            "{name}: Nix's manifest reads as\n  {read:?}\n  expected\n  {expected:?}"
        ));
    }
    Ok(())
}

/// Nix 2.8's own `meta-values` manifest, read by us: the %g floats come back as what they say
/// (`1` as an integer, `1.23457e+08` rounded, `1e+20` as a float though Nix cannot read it),
/// everything else as the elements.
fn check_nix_meta_values(
    read: &[ManifestElement],
    expected: &[ManifestElement],
) -> Result<(), String> {
    let [read] = read else {
        return Err("meta-values: expected one element".into());
    };
    let [expected] = expected else {
        return Err("meta-values: expected one element".into());
    };
    let changed = [
        ("float_big", NixValue::Float(1e20)),
        ("float_integral", NixValue::Int(1)),
        ("float_precise", NixValue::Float(123_457_000.0)),
        ("float_small", NixValue::Float(1.5e-7)),
        ("float_third", NixValue::Float(0.333_333)),
    ];
    let mut amended = expected.clone();
    for (key, value) in changed {
        amended.meta.insert(key.to_owned(), value);
    }
    if *read == amended {
        Ok(())
    } else {
        Err(format!(
            "meta-values: Nix's manifest reads as\n  {:?}\n  expected\n  {:?}",
            read.meta, amended.meta
        ))
    }
}

fn check_all(scenarios: &[Scenario]) {
    let failures: Vec<String> = scenarios
        .iter()
        .flat_map(|scenario| [check_layout(scenario), check_manifest(scenario)])
        .filter_map(Result::err)
        .collect();
    assert!(
        failures.is_empty(),
        "{} disagreements with Nix 2.8:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fixtures_cover_the_required_behaviours() {
    let scenarios = read_scenarios(&fixture_directory());
    assert!(scenarios.len() >= 30, "only {} scenarios", scenarios.len());
    let names: Vec<&str> = scenarios
        .iter()
        .map(|scenario| scenario.name.as_str())
        .collect();
    for required in REQUIRED_SCENARIOS {
        assert!(names.contains(&required), "scenario {required} is missing");
    }
    let failed = scenarios
        .iter()
        .filter(|scenario| scenario.exit != 0)
        .count();
    let warned = scenarios
        .iter()
        .filter(|scenario| !scenario.warnings.is_empty())
        .count();
    assert!(
        failed >= 10 && warned >= 2,
        "{failed} failing builds, {warned} with warnings"
    );
}

#[test]
fn layout_and_manifest_match_nix_fixtures() {
    check_all(&read_scenarios(&fixture_directory()));
}

#[test]
fn live_layout_matches_installed_nix() {
    if std::env::var("DECLENV_TEST_NIX").as_deref() != Ok("1") {
        eprintln!("live_layout_matches_installed_nix: skipped; set DECLENV_TEST_NIX=1 to run it");
        return;
    }
    let scratch = tempfile::tempdir().expect("temporary directory");
    let out = scratch.path().join("fixtures");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join("conformance")
        .join("gen_layout.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg("--out")
        .arg(&out)
        .arg("--work")
        .arg(scratch.path().join("work"))
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let scenarios = read_scenarios(&out);
    assert!(
        scenarios.len() >= 30,
        "the script wrote only {} scenarios",
        scenarios.len()
    );
    check_all(&scenarios);
    eprintln!(
        "live_layout_matches_installed_nix: {} scenarios agree with {}",
        scenarios.len(),
        String::from_utf8_lossy(&output.stdout).trim()
    );
}
