//! `declenv search`: find packages in the configured sources.

use super::{Hinted, Outcome, Schema, Settings};
use crate::model::catalog::Catalog;
use crate::model::catalog::EntryRef;
use crate::plan::select::{SelectionError, filter_by_selectors, sort_for_query};
use crate::source::{host_system, load_source};
use anyhow::Context as _;
use owo_colors::OwoColorize;
use regex::{Regex, RegexBuilder};
use serde::Serialize;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

/// Arguments of `declenv search`.
#[derive(Debug, clap::Args)]
pub(crate) struct SearchArgs {
    /// Regular expressions that must all match a package's attribute path, name or description
    /// (case-insensitive unless the pattern has an upper-case letter); with `--selector`,
    /// `nix-env` selectors (`NAME`, `NAME-VERSION`, `*`), any of which may match
    patterns: Vec<String>,

    /// A channel directory, catalog JSON file or Nix expression (`<nixpkgs>`, a `.nix` file, a
    /// directory with a `default.nix`) to search (repeatable)
    #[arg(long = "source", short = 's', value_name = "PATH", required = true)]
    sources: Vec<PathBuf>,

    /// Read the patterns as `nix-env -qa` does: full-match regexes on the name, exact versions
    #[arg(long)]
    selector: bool,

    /// Print the results as JSON
    #[arg(long)]
    json: bool,
}

/// The JSON report: versioned so scripts can tell formats apart.
#[derive(Serialize)]
struct Report<'a> {
    schema: Schema,
    packages: Vec<PackageRow<'a>>,
}

#[derive(Serialize)]
struct PackageRow<'a> {
    source: String,
    attr_path: &'a str,
    name: &'a str,
    pname: &'a str,
    version: &'a str,
    system: &'a str,
    description: Option<&'a str>,
    outputs: Vec<String>,
}

/// The sources to search, in order: channels and catalogs, and Nix expressions (`<name>`, a
/// `.nix` file, a directory with a `default.nix`), which the Nix on `PATH` evaluates.
fn load_search_sources(settings: &Settings, paths: &[PathBuf]) -> anyhow::Result<Catalog> {
    let cache = settings.catalog_cache();
    let mut packed = Vec::new();
    let mut nix = None;
    for path in paths {
        let written = path.to_string_lossy();
        let search_path_entry = super::env::search_path_entry(path);
        if search_path_entry.is_none() && !crate::source::nix::looks_like_expression(path) {
            packed.push(load_source(path, &cache)?);
            continue;
        }
        let nix = match &mut nix {
            Some(nix) => nix,
            None => nix.insert(settings.nix_store()?),
        };
        let absolute = std::path::absolute(path)?;
        let expression = search_path_entry.map_or(
            crate::source::nix::Expression::Path(&absolute),
            crate::source::nix::Expression::SearchPath,
        );
        packed
            .push(crate::source::nix::load_nix_source(&written, expression, nix, &cache)?.catalog);
    }
    Ok(Catalog::from_packed(packed))
}

pub(crate) fn run(settings: &Settings, args: &SearchArgs) -> anyhow::Result<Outcome> {
    let catalog = load_search_sources(settings, &args.sources)?;
    let candidates: Vec<EntryRef<'_>> = catalog.iter().collect();
    let rows = if args.selector {
        select_rows(&candidates, &args.patterns)?
    } else {
        search_rows(&candidates, &args.patterns)?
    };

    let stdout = anstream::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.json {
        let report = Report {
            schema: Schema { version: 1 },
            packages: rows
                .iter()
                .map(|&index| {
                    let entry = candidates[index];
                    PackageRow {
                        source: args.sources[entry.source()].display().to_string(),
                        attr_path: entry.attr_path(),
                        name: entry.name(),
                        pname: entry.package_name(),
                        version: entry.version(),
                        system: entry.system_or_unknown(),
                        description: entry.description(),
                        outputs: entry
                            .to_entry()
                            .map(|full| full.outputs.into_keys().collect())
                            .unwrap_or_default(),
                    }
                })
                .collect(),
        };
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let entries: Vec<EntryRef<'_>> = rows.iter().map(|&i| candidates[i]).collect();
        write_table(&mut out, &entries)?;
    }
    out.flush()?;
    // Freeing a large catalog entry by entry costs more than the query; the process is about
    // to exit and the operating system reclaims it at once.
    std::mem::forget(candidates);
    std::mem::forget(catalog);

    if rows.is_empty() {
        anstream::eprintln!(
            "{} no packages match {}",
            "warning:".yellow().bold(),
            args.patterns
                .iter()
                .map(|pattern| format!("`{pattern}`"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        return Ok(Outcome::NothingFound);
    }
    Ok(Outcome::Success)
}

/// `nix-env -qa` semantics: every selector applies, rows sorted by name as Nix sorts them.
fn select_rows(candidates: &[EntryRef<'_>], patterns: &[String]) -> anyhow::Result<Vec<usize>> {
    let selectors: Vec<&str> = patterns.iter().map(String::as_str).collect();
    let selected = match filter_by_selectors(candidates, &selectors, false, &host_system()) {
        Ok(selected) => selected,
        Err(SelectionError::NoMatch { .. }) => return Ok(Vec::new()),
        Err(SelectionError::Selector(error)) => {
            return Err(anyhow::Error::new(Hinted {
                message: format!("invalid selector: {error}"),
                hint: "the name part of a selector is a POSIX extended regular expression; escape `+`, `.` and `*` with `\\` to match them literally".to_owned(),
            }));
        }
    };
    let mut indices = selected.indices;
    sort_for_query(candidates, &mut indices);
    Ok(indices)
}

/// Free search: every pattern must match the attribute path, the name or the description.
fn search_rows(candidates: &[EntryRef<'_>], patterns: &[String]) -> anyhow::Result<Vec<usize>> {
    let regexes = patterns
        .iter()
        .map(|pattern| {
            let smart_case = !pattern.chars().any(char::is_uppercase);
            RegexBuilder::new(pattern)
                .case_insensitive(smart_case)
                .build()
                .with_context(|| format!("invalid search pattern `{pattern}`"))
        })
        .collect::<anyhow::Result<Vec<Regex>>>()?;
    Ok(candidates
        .iter()
        .enumerate()
        .filter(|(_, entry)| {
            regexes.iter().all(|regex| {
                regex.is_match(entry.attr_path())
                    || regex.is_match(entry.name())
                    || entry.description().is_some_and(|text| regex.is_match(text))
            })
        })
        .map(|(index, _)| index)
        .collect())
}

/// One line per package: attribute path, name, description, in aligned columns.
fn write_table(out: &mut impl Write, entries: &[EntryRef<'_>]) -> std::io::Result<()> {
    let attr_width = entries
        .iter()
        .map(|e| e.attr_path().len())
        .max()
        .unwrap_or(0);
    let name_width = entries.iter().map(|e| e.name().len()).max().unwrap_or(0);
    for entry in entries {
        let description = entry.description().unwrap_or("").replace('\n', " ");
        let name_padding = if description.is_empty() {
            0
        } else {
            name_width
        };
        writeln!(
            out,
            "{}  {}{}",
            format_args!("{:attr_width$}", entry.attr_path()).bold(),
            format_args!("{:name_padding$}", entry.name()).green(),
            if description.is_empty() {
                String::new()
            } else {
                format!("  {description}")
            }
        )?;
    }
    Ok(())
}
