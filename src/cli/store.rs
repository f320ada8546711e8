//! `declenv store`: add trees to the embedded store and check it.

use super::{Outcome, Settings};
use crate::store::{EmbeddedStore, StorePath};
use anyhow::Context as _;
use owo_colors::OwoColorize;
use serde::Serialize;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

/// `declenv store` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum StoreCommand {
    /// Add files or directory trees to the store and print their store paths, one per line
    /// (the paths `nix-store --add` prints for the same store directory)
    Add {
        /// The files or directories to add; each is named after its last component
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Re-hash every valid path and report missing, corrupt and leftover entries; exits 1 when a
    /// valid path is damaged (leftovers of interrupted adds are only reported)
    Verify {
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(settings: &Settings, command: &StoreCommand) -> anyhow::Result<Outcome> {
    let store = open_store(settings)?;
    match command {
        StoreCommand::Add { paths } => add(&store, paths),
        StoreCommand::Verify { json } => verify(&store, *json),
    }
}

/// Opens the embedded store under the configured root.
pub(crate) fn open_store(settings: &Settings) -> anyhow::Result<EmbeddedStore> {
    let root = settings.require_root()?;
    fs_err::create_dir_all(root.join("nix/store"))
        .with_context(|| format!("cannot create the store under `{}`", root.display()))?;
    Ok(EmbeddedStore::open(root)?)
}

fn add(store: &EmbeddedStore, paths: &[PathBuf]) -> anyhow::Result<Outcome> {
    let stdout = anstream::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for path in paths {
        let absolute = std::path::absolute(path)
            .with_context(|| format!("cannot resolve `{}`", path.display()))?;
        let name = absolute
            .file_name()
            .and_then(|name| name.to_str())
            .with_context(|| format!("`{}` has no usable file name", path.display()))?;
        let store_path = store
            .add_tree(&absolute, name)
            .with_context(|| format!("cannot add `{}` to the store", path.display()))?;
        writeln!(out, "{store_path}")?;
    }
    out.flush()?;
    Ok(Outcome::Success)
}

#[derive(Serialize)]
struct VerifyJson {
    schema: super::Schema,
    clean: bool,
    damaged: bool,
    intact: usize,
    missing: Vec<String>,
    corrupt: Vec<CorruptJson>,
    dangling_references: Vec<[String; 2]>,
    broken_registrations: Vec<ProblemJson>,
    unregistered: Vec<String>,
}

#[derive(Serialize)]
struct CorruptJson {
    path: String,
    expected: String,
    actual: Result<String, String>,
}

#[derive(Serialize)]
struct ProblemJson {
    path: String,
    problem: String,
}

fn verify(store: &EmbeddedStore, json: bool) -> anyhow::Result<Outcome> {
    let report = store.verify()?;
    let display = |path: &StorePath| path.to_string();
    let stdout = anstream::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if json {
        let document = VerifyJson {
            schema: super::Schema { version: 1 },
            clean: report.is_clean(),
            damaged: report.has_damage(),
            intact: report.intact.len(),
            missing: report.missing.iter().map(display).collect(),
            corrupt: report
                .corrupt
                .iter()
                .map(|corrupt| CorruptJson {
                    path: corrupt.path.to_string(),
                    expected: corrupt.expected.to_nix_string(),
                    actual: corrupt
                        .actual
                        .as_ref()
                        .map(crate::store::NarDigest::to_nix_string)
                        .map_err(Clone::clone),
                })
                .collect(),
            dangling_references: report
                .dangling_references
                .iter()
                .map(|(referrer, reference)| [referrer.to_string(), reference.to_string()])
                .collect(),
            broken_registrations: report
                .broken_registrations
                .iter()
                .map(|broken| ProblemJson {
                    path: broken.path.display().to_string(),
                    problem: broken.problem.clone(),
                })
                .collect(),
            unregistered: report
                .unregistered
                .iter()
                .map(|path| path.display().to_string())
                .collect(),
        };
        serde_json::to_writer_pretty(&mut out, &document)?;
        writeln!(out)?;
    } else {
        for path in &report.missing {
            writeln!(out, "{} {path}", "missing".red().bold())?;
        }
        for corrupt in &report.corrupt {
            let actual = match &corrupt.actual {
                Ok(digest) => digest.to_nix_string(),
                Err(problem) => problem.clone(),
            };
            writeln!(
                out,
                "{} {} (registered {}, now {actual})",
                "corrupt".red().bold(),
                corrupt.path,
                corrupt.expected.to_nix_string()
            )?;
        }
        for (referrer, reference) in &report.dangling_references {
            writeln!(
                out,
                "{} {referrer} refers to unregistered {reference}",
                "dangling".yellow().bold()
            )?;
        }
        for broken in &report.broken_registrations {
            writeln!(
                out,
                "{} {}: {}",
                "unreadable".red().bold(),
                broken.path.display(),
                broken.problem
            )?;
        }
        for path in &report.unregistered {
            writeln!(
                out,
                "{} {} (left by an interrupted add or delete)",
                "unregistered".yellow().bold(),
                path.display()
            )?;
        }
    }
    out.flush()?;
    if !json {
        anstream::eprintln!(
            "checked {} valid paths: {} intact",
            report.intact.len() + report.missing.len() + report.corrupt.len(),
            report.intact.len()
        );
    }
    // Leftovers of interrupted adds are reported but are not a failure: they are invalid by
    // construction and `declenv gc` removes them.
    Ok(if report.has_damage() {
        Outcome::NothingFound
    } else {
        Outcome::Success
    })
}
