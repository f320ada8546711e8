//! `declenv store`: add trees to the embedded store and check it; query closures; export,
//! import and copy paths (to and from Nix, binary caches and other roots).

use super::{Hinted, Outcome, Settings};
use crate::store::{BinaryCache, Copied, EmbeddedStore, PathInfo, Query, StorePath};
use anyhow::Context as _;
use owo_colors::OwoColorize;
use serde::Serialize;
use std::io::{BufWriter, IsTerminal as _, Write};
use std::path::{Path, PathBuf};

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
    /// List paths related to valid paths by their registered references, references first
    /// (the order and answers of `nix-store --query`)
    Query(QueryArgs),
    /// Write valid paths to stdout in the format of `nix-store --export` (only the paths given,
    /// as Nix does, unless `--closure`), references first
    Export {
        /// Export the closure of the paths: everything they refer to, directly or not
        #[arg(long)]
        closure: bool,
        /// Store paths, or links that lead to them (such as a profile)
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Add the paths of a `nix-store --export` stream read from stdin (those already valid are
    /// skipped) and print them; registers nothing unless the whole stream is good
    Import,
    /// Copy the closures of paths to or from a binary cache (`file:///DIR`) or another root
    Copy(CopyArgs),
}

/// Arguments of `declenv store query`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("query").required(true)))]
pub(crate) struct QueryArgs {
    /// The closure: the paths and everything they refer to, directly or not (`-qR`)
    #[arg(long, short = 'R', group = "query")]
    requisites: bool,
    /// What the paths refer to directly
    #[arg(long, group = "query")]
    references: bool,
    /// The valid paths that refer to the paths directly
    #[arg(long, group = "query")]
    referrers: bool,
    /// The valid paths that refer to the paths, directly or not, and the paths themselves
    #[arg(long, group = "query")]
    referrers_closure: bool,
    /// Print each path with its NAR hash, size, references and deriver as JSON
    #[arg(long)]
    json: bool,
    /// Store paths, or links that lead to them (such as a profile)
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// Arguments of `declenv store copy`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("direction").required(true)))]
pub(crate) struct CopyArgs {
    /// Write to the binary cache at URL (`file:///DIR`), creating it if needed, as
    /// `nix copy --to 'file:///DIR?compression=none'` writes one
    #[arg(long, value_name = "URL", group = "direction")]
    to: Option<String>,
    /// Fetch from the binary cache at URL (`file:///DIR`, uncompressed), checking every
    /// archive against its narinfo before anything is registered
    #[arg(long, value_name = "URL", group = "direction")]
    from: Option<String>,
    /// Copy into the root DIR, as into a Nix chroot store: the paths keep this store's names,
    /// so DIR is a root for this root's place (moved or mounted there later)
    #[arg(long, value_name = "DIR", group = "direction")]
    to_root: Option<PathBuf>,
    /// Copy from the root DIR, which holds paths of this store's directory (a root made with
    /// `--to-root`, or this root's copy on another disk)
    #[arg(long, value_name = "DIR", group = "direction")]
    from_root: Option<PathBuf>,
    /// Store paths (or links that lead to them); their closures are copied
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

pub(crate) fn run(settings: &Settings, command: &StoreCommand) -> anyhow::Result<Outcome> {
    let store = open_store(settings)?;
    match command {
        StoreCommand::Add { paths } => add(&store, paths),
        StoreCommand::Verify { json } => verify(
            &store,
            crate::store::gc::shared_with_nix(settings.require_root()?),
            *json,
        ),
        StoreCommand::Query(args) => query(&store, args),
        StoreCommand::Export { closure, paths } => export(&store, paths, *closure),
        StoreCommand::Import => import(&store),
        StoreCommand::Copy(args) => copy(&store, args),
    }
}

/// The store paths the arguments lead to.
fn store_paths(store: &EmbeddedStore, arguments: &[PathBuf]) -> anyhow::Result<Vec<StorePath>> {
    arguments
        .iter()
        .map(|argument| Ok(store.follow_links_to_store_path(argument)?))
        .collect()
}

/// One path in `store query --json`, with the names `nix path-info --json` uses.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PathJson {
    path: String,
    nar_hash: String,
    nar_size: u64,
    references: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deriver: Option<String>,
    registration_time: u64,
}

#[derive(Serialize)]
struct QueryJson {
    schema: super::Schema,
    paths: Vec<PathJson>,
}

fn path_json(info: &PathInfo) -> PathJson {
    let mut references: Vec<(String, String)> = info
        .references
        .iter()
        .map(|reference| (reference.base_name(), reference.to_string()))
        .collect();
    references.sort();
    PathJson {
        path: info.path.to_string(),
        nar_hash: info.nar.to_nix_string(),
        nar_size: info.nar.size,
        references: references.into_iter().map(|(_, path)| path).collect(),
        deriver: info.deriver.as_ref().map(ToString::to_string),
        registration_time: info.registration_time,
    }
}

fn query(store: &EmbeddedStore, args: &QueryArgs) -> anyhow::Result<Outcome> {
    let kind = if args.requisites {
        Query::Requisites
    } else if args.references {
        Query::References
    } else if args.referrers {
        Query::Referrers
    } else {
        Query::ReferrersClosure
    };
    let paths = store_paths(store, &args.paths)?;
    let infos = store.query(kind, &paths)?;
    let stdout = anstream::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.json {
        let document = QueryJson {
            schema: super::Schema { version: 1 },
            paths: infos.iter().map(path_json).collect(),
        };
        serde_json::to_writer_pretty(&mut out, &document)?;
        writeln!(out)?;
    } else {
        for info in &infos {
            writeln!(out, "{}", info.path)?;
        }
    }
    out.flush()?;
    Ok(Outcome::Success)
}

fn export(store: &EmbeddedStore, arguments: &[PathBuf], closure: bool) -> anyhow::Result<Outcome> {
    let paths = store_paths(store, arguments)?;
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        return Err(anyhow::Error::new(Hinted {
            message: "refusing to write an export to a terminal".to_owned(),
            hint: "redirect it to a file (`declenv store export PATH… > FILE`) or a pipe"
                .to_owned(),
        }));
    }
    let written = store.export_paths(&paths, closure, stdout.lock())?;
    anstream::eprintln!("exported {}", count(written.len()));
    Ok(Outcome::Success)
}

fn import(store: &EmbeddedStore) -> anyhow::Result<Outcome> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(anyhow::Error::new(Hinted {
            message: "`store import` reads an export from stdin, which is a terminal".to_owned(),
            hint: "redirect a file to it (`declenv store import < FILE`) or pipe an export into it"
                .to_owned(),
        }));
    }
    let copied = store
        .import_paths(std::io::BufReader::with_capacity(64 * 1024, stdin.lock()))
        .context("cannot import the stream read from stdin")?;
    let stdout = anstream::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for path in &copied.paths {
        writeln!(out, "{path}")?;
    }
    out.flush()?;
    anstream::eprintln!(
        "imported {} ({} already valid)",
        count(copied.added.len()),
        copied.paths.len() - copied.added.len()
    );
    Ok(Outcome::Success)
}

/// A root given with `--to-root` or `--from-root`, opened as a chroot store of this store's
/// directory.
fn other_root(
    store: &EmbeddedStore,
    root: &Path,
    must_exist: bool,
) -> anyhow::Result<EmbeddedStore> {
    if must_exist && !root.join("nix/store").is_dir() {
        return Err(anyhow::Error::new(Hinted {
            message: format!(
                "`{}` is not a declenv root: it has no `nix/store`",
                root.display()
            ),
            hint: "pass the directory given to `--root` (or `DECLENV_ROOT`) for that root"
                .to_owned(),
        }));
    }
    fs_err::create_dir_all(root.join("nix/store"))
        .with_context(|| format!("cannot create the store under `{}`", root.display()))?;
    Ok(EmbeddedStore::open_relocated(
        root,
        store.store_dir().clone(),
    )?)
}

fn copy(store: &EmbeddedStore, args: &CopyArgs) -> anyhow::Result<Outcome> {
    let paths = store_paths(store, &args.paths)?;
    let (copied, place, verb) = if let Some(url) = &args.to {
        let cache = BinaryCache::parse(url)?;
        let copied = store
            .copy_to_cache(&cache, &paths)
            .with_context(|| format!("cannot copy to `{url}`"))?;
        (copied, format!("to `{url}`"), "copied")
    } else if let Some(url) = &args.from {
        let cache = BinaryCache::parse(url)?;
        let copied = store
            .copy_from_cache(&cache, &paths)
            .with_context(|| format!("cannot copy from `{url}`"))?;
        (copied, format!("from `{url}`"), "fetched")
    } else if let Some(root) = &args.to_root {
        let destination = other_root(store, root, false)?;
        let copied = store
            .copy_closure_to(&destination, &paths)
            .with_context(|| format!("cannot copy to root `{}`", root.display()))?;
        (copied, format!("to root `{}`", root.display()), "copied")
    } else if let Some(root) = &args.from_root {
        let source = other_root(store, root, true)?;
        let copied = source
            .copy_closure_to(store, &paths)
            .with_context(|| format!("cannot copy from root `{}`", root.display()))?;
        (copied, format!("from root `{}`", root.display()), "copied")
    } else {
        unreachable!("clap requires one direction")
    };
    print_copied(&copied, &place, verb)
}

/// Prints the paths a copy added, one per line, and a summary on stderr.
fn print_copied(copied: &Copied, place: &str, verb: &str) -> anyhow::Result<Outcome> {
    let stdout = anstream::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for path in &copied.added {
        writeln!(out, "{path}")?;
    }
    out.flush()?;
    anstream::eprintln!(
        "{verb} {} {place} ({} already there)",
        count(copied.added.len()),
        copied.paths.len() - copied.added.len()
    );
    Ok(Outcome::Success)
}

/// `1 path`, `2 paths`.
fn count(number: usize) -> String {
    if number == 1 {
        "1 path".to_owned()
    } else {
        format!("{number} paths")
    }
}

/// Opens the embedded store under the configured root.
pub(crate) fn open_store(settings: &Settings) -> anyhow::Result<EmbeddedStore> {
    if settings.backend()? == crate::model::spec::BackendKind::Nix {
        return Err(anyhow::Error::new(super::Hinted {
            message:
                "the profile uses the Nix backend; `declenv store` works on the embedded store"
                    .to_owned(),
            hint: "use `nix-store` (`--query`, `--verify`, `--export`, `--import`) or `nix copy` \
                   on the Nix store"
                .to_owned(),
        }));
    }
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

/// `shared_with_nix`: Nix keeps a database under the root, so an entry declenv did not register
/// may be Nix's rather than a leftover.
fn verify(store: &EmbeddedStore, shared_with_nix: bool, json: bool) -> anyhow::Result<Outcome> {
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
            let why = if shared_with_nix && !crate::store::gc::is_declenv_temporary(path) {
                "not declenv's: Nix's, or left by an interrupted add or delete"
            } else {
                "left by an interrupted add or delete"
            };
            writeln!(
                out,
                "{} {} ({why})",
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
