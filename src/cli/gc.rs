//! `declenv gc`: delete store paths no profile generation or GC root reaches.

use super::{Outcome, Schema, Settings};
use crate::plan::generations::DeletePolicy;
use crate::profile::{GcLock, GcLockMode, LockOptions, Profile, ProfileMessage, gc_lock};
use crate::store::gc;
use owo_colors::OwoColorize;
use serde::Serialize;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Arguments of `declenv gc`.
#[derive(Debug, clap::Args)]
pub(crate) struct GcArgs {
    /// Say what would be deleted; delete nothing
    #[arg(long)]
    dry_run: bool,
    /// Print the paths that would be deleted, one per line; delete nothing
    #[arg(long, conflicts_with = "print_live")]
    print_dead: bool,
    /// Print the paths that are kept alive, one per line; delete nothing
    #[arg(long)]
    print_live: bool,
    /// First delete every generation but the current one of every profile under the root
    /// (like `nix-collect-garbage -d`)
    #[arg(long)]
    delete_old: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct GcJson {
    schema: Schema,
    dry_run: bool,
    deleted_generations: Vec<DeletedGenerations>,
    live: Vec<String>,
    dead: Vec<String>,
    dead_bytes: u64,
    leftovers: Vec<String>,
    stale_roots: Vec<String>,
}

#[derive(Serialize)]
struct DeletedGenerations {
    profile: String,
    generations: Vec<u32>,
}

/// Profiles under `directory`: symlinks whose target is a generation link of their own name.
fn profiles_under(directory: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![directory.to_owned()];
    while let Some(directory) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&directory) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(path),
                Ok(kind) if kind.is_symlink() => {
                    let name = entry.file_name();
                    let is_profile = std::fs::read_link(&path).is_ok_and(|target| {
                        crate::plan::generations::parse_current_generation(
                            name.as_encoded_bytes(),
                            target.as_os_str().as_encoded_bytes(),
                        )
                        .is_some()
                    });
                    if is_profile {
                        found.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    found.sort();
    found
}

/// `declenv gc` on the Nix backend: old generations of the profile, then Nix's own collector
/// (which sees every root, not only declenv's).
/// `--delete-old` on one profile (with `only_report`, what it would delete). The links of the
/// generations a dry run keeps go to `doomed_links`: what only they keep counts as dead all the
/// same, as it will once they are deleted.
fn delete_old(
    profile: &Profile,
    args: &GcArgs,
    only_report: bool,
    doomed_links: &mut Vec<PathBuf>,
) -> anyhow::Result<DeletedGenerations> {
    if !args.json {
        anstream::eprintln!(
            "removing old generations of profile `{}`",
            profile.path().display()
        );
    }
    let numbers = profile.delete_generations(
        &DeletePolicy::Old,
        jiff::Timestamp::now().as_second(),
        only_report,
        LockOptions::default(),
        &mut |message: &ProfileMessage| {
            if !args.json && !matches!(message, ProfileMessage::Switching(_)) {
                anstream::eprintln!("{}", message.to_string().dimmed());
            }
        },
    )?;
    if only_report {
        doomed_links.extend(
            numbers
                .iter()
                .map(|&number| profile.generation_path(number)),
        );
    }
    Ok(DeletedGenerations {
        profile: profile.path().display().to_string(),
        generations: numbers,
    })
}

fn run_nix(settings: &Settings, args: &GcArgs) -> anyhow::Result<Outcome> {
    let only_report = args.dry_run || args.print_dead || args.print_live;
    let mut deleted_generations = Vec::new();
    let mut doomed_links = Vec::new();
    if args.delete_old {
        let profile = settings.open_profile()?;
        deleted_generations.push(delete_old(&profile, args, only_report, &mut doomed_links)?);
    }
    let nix = settings.nix_store()?;
    if !only_report {
        // What applies killed before they finished kept alive goes with this collection.
        crate::profile::declarative::remove_abandoned_roots(
            &settings.require_root()?.join("nix/var/declenv/tmp"),
        );
    }
    let report = if args.print_live {
        Some("--print-live")
    } else if only_report {
        Some("--print-dead")
    } else {
        None
    };
    let (mut paths, summary) = nix.collect_garbage(report)?;
    if !args.print_live && !doomed_links.is_empty() {
        // Nix's collector still sees the old generations a dry run keeps: add what only they
        // keep alive, as the real run would find it dead.
        paths.extend(dead_without(&nix, &doomed_links)?);
        paths.sort();
        paths.dedup();
    }
    // What a dry run would free is the dead paths' NAR size, as on the embedded store; what a
    // collection freed is what Nix says it freed.
    let dead_bytes = if args.print_live {
        0
    } else if only_report {
        nix.nar_size_total(&paths)?
    } else {
        crate::store::nix::freed_bytes(&summary).unwrap_or(0)
    };
    let stdout = anstream::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.json {
        let (live, dead) = if args.print_live {
            (paths, Vec::new())
        } else {
            (Vec::new(), paths)
        };
        let document = GcJson {
            schema: Schema { version: 1 },
            dry_run: only_report,
            deleted_generations,
            live,
            dead,
            dead_bytes,
            leftovers: Vec::new(),
            stale_roots: Vec::new(),
        };
        serde_json::to_writer_pretty(&mut out, &document)?;
        writeln!(out)?;
    } else if args.print_dead || args.print_live {
        for path in &paths {
            writeln!(out, "{path}")?;
        }
    } else if only_report {
        for path in &paths {
            anstream::eprintln!("{}", format!("would delete `{path}`").dimmed());
        }
        anstream::eprintln!(
            "would delete {} store paths ({:.2} MiB)",
            paths.len(),
            dead_bytes as f64 / (1024.0 * 1024.0)
        );
    } else {
        for path in &paths {
            anstream::eprintln!("{}", format!("deleted `{path}`").dimmed());
        }
        anstream::eprintln!("{summary}");
    }
    out.flush()?;
    Ok(Outcome::Success)
}

/// The store paths that only `links` (generation links) keep alive: what they root, less what
/// every other root Nix knows keeps (runtime roots included), each as the collector counts it.
fn dead_without(
    nix: &crate::store::nix::NixStore,
    links: &[PathBuf],
) -> anyhow::Result<Vec<String>> {
    // Links are compared by their directory's real path: Nix prints them as it found them.
    let canonical = |link: &Path| -> PathBuf {
        match (link.parent(), link.file_name()) {
            (Some(parent), Some(name)) => std::fs::canonicalize(parent)
                .map_or_else(|_| link.to_owned(), |parent| parent.join(name)),
            _ => link.to_owned(),
        }
    };
    let doomed: std::collections::BTreeSet<PathBuf> =
        links.iter().map(|link| canonical(link)).collect();
    let (gone, kept): (Vec<_>, Vec<_>) = nix
        .roots()?
        .into_iter()
        .partition(|(link, _)| doomed.contains(&canonical(Path::new(link))));
    let gone: Vec<String> = gone.into_iter().map(|(_, path)| path).collect();
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    let kept: Vec<String> = kept.into_iter().map(|(_, path)| path).collect();
    let live = nix.live_closure(&kept)?;
    Ok(nix
        .live_closure(&gone)?
        .into_iter()
        .filter(|path| !live.contains(path))
        .collect())
}

pub(crate) fn run(settings: &Settings, args: &GcArgs) -> anyhow::Result<Outcome> {
    if settings.backend()? == crate::model::spec::BackendKind::Nix {
        return run_nix(settings, args);
    }
    let root = settings.require_root()?;
    let store = super::store::open_store(settings)?;
    let only_report = args.dry_run || args.print_dead || args.print_live;
    let mut deleted_generations = Vec::new();
    let mut doomed_links = Vec::new();
    if args.delete_old {
        for path in profiles_under(&root.join("nix/var/nix/profiles")) {
            let profile = Profile::new(&path, settings.profile_layout()?)?;
            deleted_generations.push(delete_old(&profile, args, only_report, &mut doomed_links)?);
        }
    }
    let doomed_links = doomed_links.into_iter().collect();
    // Exclusive: no command that has added paths and not yet rooted them runs meanwhile.
    let gc_lock = GcLock::acquire(
        &gc_lock::lock_path(root),
        GcLockMode::Exclusive,
        LockOptions::default().timeout,
        &mut || {
            anstream::eprintln!(
                "{}",
                "waiting for running declenv commands to link what they added to the store"
                    .dimmed()
            );
        },
    )?;
    let report = gc::collect(&store, root, only_report, &doomed_links)?;
    drop(gc_lock);
    let stdout = anstream::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let strings = |paths: &[crate::store::StorePath]| -> Vec<String> {
        paths.iter().map(ToString::to_string).collect()
    };
    if args.json {
        let document = GcJson {
            schema: Schema { version: 1 },
            dry_run: only_report,
            deleted_generations,
            live: strings(&report.live),
            dead: strings(&report.dead),
            dead_bytes: report.dead_bytes,
            leftovers: report
                .leftovers
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            stale_roots: report
                .stale_roots
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        };
        serde_json::to_writer_pretty(&mut out, &document)?;
        writeln!(out)?;
    } else if args.print_dead {
        for path in &report.dead {
            writeln!(out, "{path}")?;
        }
    } else if args.print_live {
        for path in &report.live {
            writeln!(out, "{path}")?;
        }
    } else {
        let verb = if only_report {
            "would delete"
        } else {
            "deleting"
        };
        for path in &report.dead {
            anstream::eprintln!("{}", format!("{verb} `{path}`").dimmed());
        }
        let verb = if only_report {
            "would remove"
        } else {
            "removing"
        };
        for path in &report.stale_roots {
            anstream::eprintln!(
                "{}",
                format!("{verb} stale root `{}`", path.display()).dimmed()
            );
        }
        for path in &report.leftovers {
            anstream::eprintln!(
                "{}",
                format!("{verb} leftover `{}`", path.display()).dimmed()
            );
        }
        anstream::eprintln!(
            "{} {} store paths ({:.2} MiB)",
            if only_report {
                "would delete"
            } else {
                "deleted"
            },
            report.dead.len(),
            report.dead_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    out.flush()?;
    Ok(Outcome::Success)
}
