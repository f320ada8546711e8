//! `declenv lock`, `plan`, `apply`, `diff`, `init` and `schema`: the declarative cycle.
//!
//! Thin: resolves settings, calls [`crate::profile::declarative`], prints. The plan goes to
//! stdout (it is the data); progress, prompts and outcomes go to stderr.

use super::{Outcome, Settings};
use crate::model::lockfile::Lockfile;
use crate::model::spec::BackendKind;
use crate::model::spec::SpecDocument;
use crate::plan::diff::{Change, ChangeKind, Diff};
use crate::plan::resolve::{HeldBack, HeldReason, ResolveOptions, Update};
use crate::profile::declarative::{
    self, LockFile, LockMode, Locked, Plan, SchemaVersion, SpecFile, Summary,
};
use crate::profile::{Profile, ProfileMessage};
use anstream::{eprintln, println};
use anyhow::Context as _;
use owo_colors::OwoColorize;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

/// Options of every command that reads the lockfile.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct LockArgs {
    /// Fail rather than change the lockfile
    #[arg(long, global = true)]
    locked: bool,
    /// Use the lockfile as it is, resolving nothing; fail if it does not cover the spec
    #[arg(long, global = true, conflicts_with = "locked")]
    frozen: bool,
}

impl LockArgs {
    pub(crate) fn mode(self) -> LockMode {
        if self.frozen {
            LockMode::Frozen
        } else if self.locked {
            LockMode::Locked
        } else {
            LockMode::Update
        }
    }
}

/// Arguments of `declenv lock`.
#[derive(Debug, clap::Args)]
pub(crate) struct LockCommandArgs {
    /// Re-resolve these ids (all when none is given) to the newest versions their entries allow;
    /// entries with `keep = true` stay
    #[arg(long, value_name = "ID", num_args = 0.., value_delimiter = ',')]
    update: Option<Vec<String>>,
    /// Let `--update` move a name-selected package to another attribute path
    #[arg(long, requires = "update")]
    allow_attr_change: bool,
    /// Exit with status 1 if the lockfile is out of date; write nothing
    #[arg(long)]
    check: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// Arguments of `declenv plan`.
#[derive(Debug, clap::Args)]
pub(crate) struct PlanArgs {
    /// Print the plan as JSON
    #[arg(long)]
    json: bool,
    /// Exit 0 when nothing changes, 2 when something does, 1 on error
    #[arg(long)]
    detailed_exitcode: bool,
    /// Save the plan to FILE for `declenv apply FILE`
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    out: Option<PathBuf>,
}

impl PlanArgs {
    pub(crate) fn detailed_exitcode(&self) -> bool {
        self.detailed_exitcode
    }
}

/// Arguments of `declenv apply`.
#[derive(Debug, clap::Args)]
pub(crate) struct ApplyArgs {
    /// A plan saved with `declenv plan -o`; applied exactly, or refused if anything moved
    #[arg(value_name = "PLAN_FILE")]
    plan: Option<PathBuf>,
    /// Do not ask before removing, downgrading or replacing packages
    #[arg(short = 'y', long)]
    yes: bool,
    /// Print the outcome as JSON
    #[arg(long)]
    json: bool,
}

/// Arguments of `declenv diff`.
#[derive(Debug, clap::Args)]
pub(crate) struct DiffArgs {
    /// The older generation (default: the one before the newer)
    #[arg(value_name = "A")]
    from: Option<u32>,
    /// The newer generation (default: the current one)
    #[arg(value_name = "B")]
    to: Option<u32>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// Arguments of `declenv init`.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// A source to declare, as NAME=PATH (a channel directory or a catalog JSON file; on the
    /// Nix backend also a Nix expression: `<nixpkgs>`, a `.nix` file or a directory with a
    /// `default.nix`)
    #[arg(long = "source", value_name = "NAME=PATH")]
    sources: Vec<String>,
    /// Declare what the profile's current generation holds (and lock it)
    #[arg(long)]
    from_current: bool,
    /// Overwrite an existing spec
    #[arg(long)]
    force: bool,
}

/// Which schema `declenv schema` prints.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum SchemaKind {
    /// `profile.toml`
    Profile,
    /// `profile.lock`
    Lock,
    /// plan JSON (`declenv plan --json`, saved plans)
    Plan,
    /// `declenv lock --json`
    LockReport,
    /// `declenv apply --json`
    ApplyReport,
    /// `declenv diff --json`
    DiffReport,
    /// `declenv watch --json` (one object per line)
    WatchEvent,
}

/// Arguments of `declenv schema`.
#[derive(Debug, clap::Args)]
pub(crate) struct SchemaArgs {
    /// Which schema
    #[arg(value_enum)]
    kind: SchemaKind,
}

/// The JSON Schema of one of declenv's files, generated from the types that read it.
#[must_use]
pub fn schema_json(kind: SchemaKind) -> String {
    let schema = match kind {
        SchemaKind::Profile => schemars::schema_for!(SpecDocument),
        SchemaKind::Lock => schemars::schema_for!(Lockfile),
        SchemaKind::Plan => schemars::schema_for!(Plan),
        SchemaKind::LockReport => schemars::schema_for!(LockJson<'static>),
        SchemaKind::ApplyReport => schemars::schema_for!(ApplyJson<'static>),
        SchemaKind::DiffReport => schemars::schema_for!(DiffJson<'static>),
        SchemaKind::WatchEvent => schemars::schema_for!(super::watch::WatchEventJson<'static>),
    };
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

pub(crate) fn schema(args: &SchemaArgs) -> anyhow::Result<Outcome> {
    let mut stdout = anstream::stdout().lock();
    stdout.write_all(schema_json(args.kind).as_bytes())?;
    stdout.flush()?;
    Ok(Outcome::Success)
}

fn read_spec(settings: &Settings) -> anyhow::Result<SpecFile> {
    let path = settings.spec_path()?;
    let spec_file = SpecFile::read(&path)?;
    for warning in &spec_file.parsed.warnings {
        eprintln!("{} {warning}", "warning:".yellow().bold());
    }
    Ok(spec_file)
}

pub(crate) fn resolve_options(update: Update, allow_attr_change: bool) -> ResolveOptions {
    ResolveOptions {
        update,
        allow_attr_change,
        this_system: crate::source::host_system(),
    }
}

/// Reads the spec, loads its sources and locks.
fn lock_spec(
    settings: &Settings,
    options: &ResolveOptions,
    mode: LockMode,
) -> anyhow::Result<(SpecFile, declarative::Sources, Locked)> {
    let spec_file = read_spec(settings)?;
    let (sources, _, locked) = lock_in_memory(settings, &spec_file, options, mode)?;
    Ok((spec_file, sources, locked?))
}

/// Loads the sources of `spec_file` and locks it in memory: the caller writes the lockfile
/// (`save_lock`, `write_lockfile_if_current`) once what it built on it succeeded, so an error
/// (a collision, say) leaves the file as it was. Returns the lockfile as read beside the
/// outcome, which the caller may want to inspect before it fails.
fn lock_in_memory(
    settings: &Settings,
    spec_file: &SpecFile,
    options: &ResolveOptions,
    mode: LockMode,
) -> anyhow::Result<(
    declarative::Sources,
    LockFile,
    Result<Locked, declarative::DeclarativeError>,
)> {
    declarative::check_backend(spec_file, settings.backend()?)?;
    let existing = LockFile::read(&spec_file.path)?;
    let sources = declarative::load_sources(spec_file.spec(), &settings.catalog_cache())?;
    let in_memory = if mode == LockMode::Update {
        LockMode::InMemory
    } else {
        mode
    };
    let locked = declarative::lock(spec_file, &sources, &existing, options, in_memory);
    Ok((sources, existing, locked))
}

/// Takes the spec's edit lock ([`declarative::lock_spec_edits`]) for `apply`, to hold until the
/// switch, and checks that the spec and lockfile are still what `apply` read: so `apply` is
/// serialised with `declenv env` writes, and never builds a generation from a spec such a
/// write has since replaced. A directory that cannot hold the lock file (read-only) cannot be
/// written by anyone else either.
fn hold_spec_edits(
    spec_file: &SpecFile,
    locked: &Locked,
) -> anyhow::Result<Option<crate::fs::FileLock>> {
    let path = &spec_file.path;
    let waiting = || {
        eprintln!(
            "{}",
            format!("waiting for lock on profile spec `{}`", path.display()).dimmed()
        );
    };
    let lock = match declarative::lock_spec_edits(path, waiting) {
        Ok(lock) => Some(lock),
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            None
        }
        Err(error) => {
            return Err(anyhow::Error::new(error)
                .context(format!("cannot lock the spec `{}`", path.display())));
        }
    };
    let spec_now = std::fs::read(path).ok();
    let lock_now = std::fs::read_to_string(declarative::lock_path_for(path)).ok();
    if spec_now.as_deref() != Some(spec_file.text.as_bytes()) || lock_now != locked.base {
        return Err(anyhow::Error::new(super::Hinted {
            message: format!(
                "the spec `{}` or its lockfile changed while this ran; nothing was applied",
                path.display()
            ),
            hint: "run `declenv apply` again".to_owned(),
        }));
    }
    Ok(lock)
}

/// Writes the lockfile [`lock_spec`] resolved, if its content changed; never under `--locked`
/// or `--frozen`, which do not change it.
fn save_lock(spec_file: &SpecFile, locked: &mut Locked, mode: LockMode) -> anyhow::Result<()> {
    if mode != LockMode::Update {
        return Ok(());
    }
    let path = declarative::lock_path_for(&spec_file.path);
    let current = declarative::write_lockfile_if_current(locked, spec_file, || {
        eprintln!(
            "{}",
            format!(
                "waiting for lock on profile spec `{}`",
                spec_file.path.display()
            )
            .dimmed()
        );
    })?;
    if !current {
        eprintln!(
            "{} the spec or its lockfile changed while this command ran; lockfile `{}` was \
             left as it is now",
            "warning:".yellow().bold(),
            path.display()
        );
    }
    if locked.written {
        eprintln!(
            "{}",
            format!("updated lockfile `{}`", path.display()).dimmed()
        );
    }
    Ok(())
}

/// What `declenv lock --json` prints.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(title = "declenv lock report")]
struct LockJson<'a> {
    /// The format version of this JSON, 1.
    schema: SchemaVersion,
    /// The lockfile's path.
    lockfile: String,
    /// Whether the lockfile on disk already had this content.
    up_to_date: bool,
    /// Whether it was written.
    written: bool,
    /// Ids locked afresh or changed.
    relocked: &'a [String],
    /// Ids no longer in the spec, dropped from the lockfile.
    dropped: &'a [String],
    /// Packages held back from newer versions, and why.
    held_back: &'a [HeldBack],
}

pub(crate) fn lock(
    settings: &Settings,
    lock_args: LockArgs,
    args: &LockCommandArgs,
) -> anyhow::Result<Outcome> {
    let update = match &args.update {
        None => Update::Nothing,
        Some(ids) if ids.is_empty() => Update::All,
        Some(ids) => Update::Ids(ids.iter().cloned().collect::<BTreeSet<_>>()),
    };
    let mode = if args.check {
        LockMode::Locked
    } else {
        lock_args.mode()
    };
    let spec_file = read_spec(settings)?;
    if let Update::Ids(ids) = &update {
        for id in ids {
            if !spec_file
                .spec()
                .packages
                .iter()
                .any(|package| &package.id == id)
            {
                return Err(anyhow::Error::new(super::Hinted {
                    message: format!("`--update {id}`: the spec has no package `{id}`"),
                    hint: "name ids as they appear under `[packages]`".to_owned(),
                }));
            }
        }
    }
    // Written only if no write replaced the spec or lockfile meanwhile.
    let (_, existing, result) = lock_in_memory(
        settings,
        &spec_file,
        &resolve_options(update, args.allow_attr_change),
        mode,
    )?;
    let mut locked = match result {
        Err(declarative::DeclarativeError::Stale { reason, .. }) if args.check => {
            eprintln!(
                "{} lockfile `{}` is out of date: {reason}",
                "error:".red().bold(),
                existing.path.display()
            );
            eprintln!("{} run `declenv lock` to update it", "hint:".cyan().bold());
            return Ok(Outcome::NothingFound);
        }
        other => other?,
    };
    if mode == LockMode::Update
        && !declarative::write_lockfile_if_current(&mut locked, &spec_file, || {})?
    {
        return Err(anyhow::Error::new(super::Hinted {
            message: format!(
                "the spec `{}` or its lockfile changed while this ran; nothing was written",
                spec_file.path.display()
            ),
            hint: "run `declenv lock` again".to_owned(),
        }));
    }
    if args.json {
        let document = LockJson {
            schema: SchemaVersion { version: 1 },
            lockfile: existing.path.display().to_string(),
            up_to_date: !locked.changed,
            written: locked.written,
            relocked: &locked.relocked,
            dropped: &locked.dropped,
            held_back: &locked.held_back,
        };
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        for id in &locked.relocked {
            if let Some(package) = locked.lockfile.packages.get(id) {
                eprintln!("{} {id} → {}", "locked".green(), package.name);
            }
        }
        for id in &locked.dropped {
            eprintln!("{} {id}", "dropped".red());
        }
        print_held_back(&locked.held_back);
        let what = if locked.written {
            "lockfile updated"
        } else {
            "lockfile up to date"
        };
        eprintln!("{what}: `{}`", existing.path.display());
    }
    Ok(Outcome::Success)
}

fn print_held_back(held_back: &[HeldBack]) {
    for held in held_back {
        let reason = match held.reason {
            HeldReason::Keep => "`keep = true`".to_owned(),
            HeldReason::Constraint => "the version constraint".to_owned(),
            HeldReason::Locked => {
                format!("the lockfile; `declenv lock --update {}` takes it", held.id)
            }
            HeldReason::AttrPath => format!(
                "another attribute path; `declenv lock --update {} --allow-attr-change` takes it",
                held.id
            ),
        };
        eprintln!(
            "{} {} stays at {} ({} available), held by {reason}",
            "note:".cyan().bold(),
            held.id,
            held.locked,
            held.available
        );
    }
}

/// The line for one change, Terraform style.
pub(crate) fn change_line(change: &Change) -> String {
    let label = |summary: Option<&crate::plan::diff::PackageSummary>| {
        summary.map_or_else(String::new, |summary| summary.name.clone())
    };
    let id = change
        .id
        .as_ref()
        .map_or_else(String::new, |id| format!(" ({id})"));
    let flags: Vec<String> = change
        .flags
        .iter()
        .map(|flag| {
            format!(
                "{} {} → {}",
                flag.flag,
                flag.from.as_deref().unwrap_or("unset"),
                flag.to.as_deref().unwrap_or("unset")
            )
        })
        .collect();
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!("; {}", flags.join(", "))
    };
    let from = label(change.from.as_ref());
    let to = label(change.to.as_ref());
    match change.kind {
        ChangeKind::Add => format!("  {} {to}{id}", "+".green().bold()),
        ChangeKind::Remove => {
            let why = if change.id.is_none() {
                " (not in the spec)"
            } else {
                ""
            };
            format!("  {} {from}{id}{why}", "-".red().bold())
        }
        ChangeKind::Upgrade => format!(
            "  {} {from} → {to}{id}: upgrade{flags}",
            "~".yellow().bold()
        ),
        ChangeKind::Downgrade => {
            format!(
                "  {} {from} → {to}{id}: downgrade{flags}",
                "~".yellow().bold()
            )
        }
        ChangeKind::Rebuild => format!(
            "  {} {to}{id}: same version, other content{flags}",
            "~".yellow().bold()
        ),
        ChangeKind::Replace => {
            let attrs = match (
                change
                    .from
                    .as_ref()
                    .and_then(|from| from.attr_path.as_ref()),
                change.to.as_ref().and_then(|to| to.attr_path.as_ref()),
            ) {
                (Some(old), Some(new)) if old != new => {
                    format!(" (attribute `{old}` → `{new}`)")
                }
                _ => String::new(),
            };
            format!(
                "{} {from} → {to}{id}: replace{attrs}{flags}",
                "-/+".red().bold()
            )
        }
        ChangeKind::Flags => format!("  {} {to}{id}{}", "~".yellow().bold(), &flags[1..]),
    }
}

pub(crate) fn summary_line(summary: &Summary) -> String {
    let mut parts = vec![format!("{} to add", summary.add)];
    for (count, word) in [
        (summary.upgrade, "to upgrade"),
        (summary.downgrade, "to downgrade"),
        (summary.replace, "to replace"),
        (summary.rebuild, "to rebuild"),
        (summary.flags, "flag changes"),
    ] {
        if count > 0 {
            parts.push(format!("{count} {word}"));
        }
    }
    parts.push(format!("{} to remove", summary.remove));
    format!("{}; {} unchanged.", parts.join(", "), summary.unchanged)
}

fn print_changes(changes: &[Change], summary: &Summary, title: &str) {
    if changes.is_empty() {
        println!("{} {title}", "No changes.".bold(),);
        return;
    }
    println!("{title}");
    println!();
    for change in changes {
        println!("{}", change_line(change));
    }
    println!();
    println!("{} {}", "Plan:".bold(), summary_line(summary));
}

fn print_plan(plan: &Plan) {
    let generation = plan.generation.map_or_else(
        || "no generation yet".to_owned(),
        |number| format!("generation {number}"),
    );
    if plan.made_outside {
        eprintln!(
            "{} {generation} of `{}` was not made by declenv (`nix-env` or another tool made \
             it); what it holds beyond the spec is drift",
            "note:".cyan().bold(),
            plan.profile
        );
    }
    if plan.has_changes() {
        print_changes(
            &plan.changes,
            &plan.summary,
            &format!(
                "declenv will make a new generation of `{}` ({generation} now):",
                plan.profile
            ),
        );
    } else {
        print_changes(
            &[],
            &plan.summary,
            &format!(
                "The profile matches the spec ({} packages, {generation}).",
                plan.summary.unchanged
            ),
        );
    }
    print_held_back(&plan.held_back);
}

pub(crate) fn plan(
    settings: &Settings,
    lock_args: LockArgs,
    args: &PlanArgs,
) -> anyhow::Result<Outcome> {
    let profile = settings.open_profile()?;
    let (spec_file, sources, mut locked) = lock_spec(
        settings,
        &resolve_options(Update::Nothing, false),
        lock_args.mode(),
    )?;
    // Opened (and created on a fresh root) only once the spec and the lockfile read well.
    let store = settings.open_store()?;
    let planned =
        declarative::make_plan(&profile, &spec_file, &sources, &locked, store.store_dir())?;
    save_lock(&spec_file, &mut locked, lock_args.mode())?;
    if let Some(out) = &args.out {
        let mut text = serde_json::to_string_pretty(&planned.plan)?;
        text.push('\n');
        crate::fs::write_atomic(out, text.as_bytes())
            .with_context(|| format!("cannot save the plan to `{}`", out.display()))?;
        eprintln!(
            "{}",
            format!("saved the plan to `{}`", out.display()).dimmed()
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&planned.plan)?);
    } else {
        print_plan(&planned.plan);
    }
    Ok(if args.detailed_exitcode && planned.plan.has_changes() {
        Outcome::Changes
    } else {
        Outcome::Success
    })
}

/// Under a saved plan the lockfile is frozen, so a spec it no longer covers fails as a stale
/// lockfile with a hint about `--frozen`, which the user never passed. Say instead that the
/// plan is out of date, and whether the spec or the lockfile moved under it.
fn saved_plan_error(
    error: anyhow::Error,
    saved: Option<&(PathBuf, Plan)>,
    settings: &Settings,
) -> anyhow::Error {
    let Some((path, saved)) = saved else {
        return error;
    };
    if !matches!(
        error.downcast_ref::<declarative::DeclarativeError>(),
        Some(declarative::DeclarativeError::Stale { .. })
    ) {
        return error;
    }
    let spec_path = settings.spec_path().ok();
    let spec_changed = spec_path.as_ref().is_some_and(|spec_path| {
        spec_path.to_string_lossy() != saved.base.spec_path
            || !std::fs::read(spec_path)
                .is_ok_and(|bytes| declarative::content_digest(&bytes) == saved.base.spec_hash)
    });
    let reason = match spec_path {
        Some(spec_path) if spec_changed => format!("the spec `{}` changed", spec_path.display()),
        _ => "the lockfile changed".to_owned(),
    };
    anyhow::Error::new(declarative::DeclarativeError::StalePlan {
        path: path.clone(),
        reason,
    })
}

/// What `declenv apply --json` prints.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(title = "declenv apply report")]
struct ApplyJson<'a> {
    /// The format version of this JSON, 1.
    schema: SchemaVersion,
    /// The plan that was applied.
    plan: &'a Plan,
    /// The generation the profile points at now (absent: it has none).
    generation: Option<u32>,
    /// Whether that generation already existed (nothing changed).
    reused: bool,
    /// What the environment builder skipped.
    warnings: &'a [String],
    /// The store paths fetched from each substituter (by its entry in the spec).
    fetched: BTreeMap<String, Vec<String>>,
}

fn report(message: &ProfileMessage) {
    if let Some(text) = super::generations::waiting_text(message) {
        eprintln!("{}", text.dimmed());
    } else if let ProfileMessage::Nix(line) = message {
        // What Nix builds, as it builds it: the progress of a long apply.
        eprintln!("{}", line.dimmed());
    }
}

fn confirm(plan: &Plan) -> anyhow::Result<bool> {
    let destructive = plan
        .changes
        .iter()
        .filter(|change| change.kind.is_destructive())
        .count();
    let mut stderr = anstream::stderr().lock();
    write!(
        stderr,
        "{} {destructive} package(s) will be removed, downgraded or replaced. Apply? [y/N] ",
        "?".cyan().bold()
    )?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

pub(crate) fn apply(
    settings: &Settings,
    lock_args: LockArgs,
    args: &ApplyArgs,
) -> anyhow::Result<Outcome> {
    let profile = settings.open_profile()?;
    // A saved plan pins the lockfile: nothing may be re-locked under it.
    let mode = if args.plan.is_some() {
        LockMode::Frozen
    } else {
        lock_args.mode()
    };
    let saved = match &args.plan {
        None => None,
        Some(path) => {
            let text = fs_err::read_to_string(path)?;
            let saved: Plan = serde_json::from_str(&text).with_context(|| {
                format!(
                    "`{}` is not a plan saved by `declenv plan -o`",
                    path.display()
                )
            })?;
            Some((path.clone(), saved))
        }
    };
    let (spec_file, sources, mut locked) =
        lock_spec(settings, &resolve_options(Update::Nothing, false), mode)
            .map_err(|error| saved_plan_error(error, saved.as_ref(), settings))?;
    // Opened (and created on a fresh root) only once the spec and the lockfile read well.
    let store = settings.open_store()?;
    let planned =
        declarative::make_plan(&profile, &spec_file, &sources, &locked, store.store_dir())?;
    if let Some((path, saved)) = &saved {
        declarative::check_saved_plan(saved, path, &planned.plan)?;
    }
    let plan = &planned.plan;
    if settings.uses_default_profile()
        && let Some(parent) = profile.path().parent()
    {
        fs_err::create_dir_all(parent)?;
    }
    if !plan.has_changes() {
        if args.json {
            let document = ApplyJson {
                schema: SchemaVersion { version: 1 },
                plan,
                generation: plan.generation,
                reused: true,
                warnings: &[],
                fetched: BTreeMap::new(),
            };
            println!("{}", serde_json::to_string_pretty(&document)?);
        } else {
            match plan.generation {
                Some(number) => eprintln!("no changes, generation {number} reused"),
                None => {
                    eprintln!("no changes; the profile has no generation and the spec no packages")
                }
            }
        }
        save_lock(&spec_file, &mut locked, mode)?;
        return Ok(Outcome::Success);
    }
    if !args.json {
        print_plan(plan);
        println!();
    }
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if plan.is_destructive() && !args.yes && interactive && !confirm(plan)? {
        eprintln!("nothing applied");
        return Ok(Outcome::NothingFound);
    }
    let progress = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(planned.desired.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} realising {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    // A lockfile that has to change but cannot be written fails here, before anything changes
    // rather than after the switch.
    if mode == LockMode::Update && locked.changed {
        let directory = spec_file.path.parent().unwrap_or(Path::new("."));
        tempfile::tempfile_in(directory).map_err(|error| {
            anyhow::Error::new(super::Hinted {
                message: format!(
                    "cannot write lockfile `{}`: {error}",
                    declarative::lock_path_for(&spec_file.path).display()
                ),
                hint: "make the spec's directory writable, or apply with `--frozen` once the \
                       lockfile covers the spec"
                    .to_owned(),
            })
        })?;
    }
    let edit_lock = hold_spec_edits(&spec_file, &locked)?;
    let root = settings.require_root()?;
    let scratch = root.join("nix/var/declenv/tmp");
    let applied = declarative::apply(
        declarative::Target {
            store: store.target(),
            profile: &profile,
            scratch: &scratch,
        },
        &spec_file,
        &locked,
        &planned,
        &mut |name| {
            progress.set_message(name.to_owned());
            progress.inc(1);
        },
        // Lines printed under a drawn bar would be torn by its next redraw.
        &mut |message| progress.suspend(|| report(message)),
    );
    progress.finish_and_clear();
    let applied = applied?;
    drop(edit_lock);
    save_lock(&spec_file, &mut locked, mode)?;
    for warning in &applied.warnings {
        eprintln!("{} {warning}", "warning:".yellow().bold());
    }
    for (cache, paths) in &applied.fetched {
        let count = paths.len();
        let noun = if count == 1 { "path" } else { "paths" };
        eprintln!("fetched {count} {noun} from `{cache}`");
    }
    if args.json {
        let document = ApplyJson {
            schema: SchemaVersion { version: 1 },
            plan,
            generation: Some(applied.generation.number),
            reused: applied.generation.reused,
            warnings: &applied.warnings,
            fetched: applied.fetched.clone(),
        };
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        eprintln!(
            "{} generation {} is now current",
            "applied:".green().bold(),
            applied.generation.number,
        );
        print_commands(&profile);
    }
    Ok(Outcome::Success)
}

/// Lists the commands the profile's `bin/` now offers: what the user came for.
fn print_commands(profile: &Profile) {
    let Ok(entries) = std::fs::read_dir(profile.path().join("bin")) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if !names.is_empty() {
        println!("{} {}", "bin/:".bold(), names.join(" "));
    }
}

/// What `declenv diff --json` prints.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(title = "declenv diff report")]
struct DiffJson<'a> {
    /// The format version of this JSON, 1.
    schema: SchemaVersion,
    /// The profile.
    profile: String,
    /// The older generation.
    from: u32,
    /// The newer generation.
    to: u32,
    /// What changed from the older to the newer.
    changes: &'a [Change],
    /// Counts.
    summary: Summary,
}

pub(crate) fn diff(settings: &Settings, args: &DiffArgs) -> anyhow::Result<Outcome> {
    let profile = settings.open_profile()?;
    let generations = profile.generations_unlocked()?;
    let to = match args.to.or(if args.from.is_some() && args.to.is_none() {
        generations.current
    } else {
        None
    }) {
        Some(number) => number,
        None => generations.current.ok_or_else(|| {
            anyhow::Error::new(super::Hinted {
                message: format!(
                    "profile `{}` has no current generation",
                    profile.path().display()
                ),
                hint: "run `declenv apply` first, or name two generations".to_owned(),
            })
        })?,
    };
    let from = match args.from {
        Some(number) => number,
        None => generations
            .entries
            .iter()
            .map(|entry| entry.number)
            .filter(|&number| number < to)
            .max()
            .ok_or_else(|| {
                anyhow::Error::new(super::Hinted {
                    message: format!("generation {to} has no earlier generation to compare with"),
                    hint: "name the generations: `declenv diff A B`".to_owned(),
                })
            })?,
    };
    let before = declarative::generation_sides(&profile, from)?;
    let after = declarative::generation_sides(&profile, to)?;
    let result: Diff = crate::plan::diff::diff(&before, &after);
    let summary = Summary::of(&result);
    if args.json {
        let document = DiffJson {
            schema: SchemaVersion { version: 1 },
            profile: profile.path().display().to_string(),
            from,
            to,
            changes: &result.changes,
            summary,
        };
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else if result.changes.is_empty() {
        println!(
            "{} generations {from} and {to} hold the same packages",
            "No changes:".bold()
        );
    } else {
        println!("From generation {from} to generation {to}:");
        println!();
        for change in &result.changes {
            println!("{}", change_line(change));
        }
        println!();
        println!("{} {}", "Changes:".bold(), summary_line(&summary));
    }
    Ok(Outcome::Success)
}

/// `declenv rollback --restore-spec` and `generations switch --restore-spec`: writes the spec
/// and lockfile the now-current generation was built from.
pub(crate) fn restore_spec(settings: &Settings) -> anyhow::Result<()> {
    let profile = settings.open_profile()?;
    let current = declarative::current_generation(&profile)?;
    let Some(record) = current.record else {
        return Err(anyhow::Error::new(super::Hinted {
            message: format!(
                "generation {} was not built from a spec; nothing to restore",
                current.generation.unwrap_or_default()
            ),
            hint: "`declenv init --from-current` writes a spec for it".to_owned(),
        }));
    };
    let spec_path = match settings.explicit_spec_path() {
        Some(path) => path,
        None => PathBuf::from(&record.spec_path),
    };
    let lock_path = declarative::lock_path_for(&spec_path);
    crate::fs::write_atomic(&lock_path, record.lock.as_bytes())
        .with_context(|| format!("cannot write `{}`", lock_path.display()))?;
    crate::fs::write_atomic(&spec_path, record.spec.as_bytes())
        .with_context(|| format!("cannot write `{}`", spec_path.display()))?;
    eprintln!(
        "restored `{}` and `{}` from generation {}",
        spec_path.display(),
        lock_path.display(),
        current.generation.unwrap_or_default()
    );
    Ok(())
}

pub(crate) fn init(settings: &Settings, args: &InitArgs) -> anyhow::Result<Outcome> {
    let settings = &settings.replacing_the_spec();
    let spec_path = std::path::absolute(settings.spec_path()?)?;
    if spec_path.exists() && !args.force {
        return Err(anyhow::Error::new(super::Hinted {
            message: format!("`{}` already exists", spec_path.display()),
            hint: "pass `--force` to overwrite it, or `--file PATH` to write another".to_owned(),
        }));
    }
    // Each source as given: its name, its path as written, and where that is (none for a
    // `<name>` lookup); whether it is a Nix expression (`<name>`, a `.nix` file, a directory
    // with a `default.nix`).
    let mut given = Vec::new();
    for source in &args.sources {
        let Some((name, path)) = source.split_once('=') else {
            return Err(anyhow::Error::new(super::Hinted {
                message: format!("`--source {source}` is not NAME=PATH"),
                hint: "for example `--source nixpkgs=./channel`".to_owned(),
            }));
        };
        if path.starts_with('<') {
            given.push((source, name, path, None, true));
            continue;
        }
        // PATH is relative to the working directory, but the spec reads its paths relative to
        // its own directory: write it as the spec must read it.
        let absolute = std::path::absolute(path)
            .with_context(|| format!("cannot resolve source path `{path}`"))?;
        if !absolute.exists() {
            return Err(anyhow::Error::new(super::Hinted {
                message: format!(
                    "`--source {source}`: `{}` does not exist",
                    absolute.display()
                ),
                hint: "name a channel directory or a catalog JSON file".to_owned(),
            }));
        }
        let expression = crate::source::nix::looks_like_expression(&absolute);
        given.push((source, name, path, Some(absolute), expression));
    }
    // An expression implies the Nix backend, as a `nix` source in a spec does, unless
    // `--backend embedded` says otherwise.
    let implied = given.iter().any(|(.., expression)| *expression);
    let settings = &if implied && settings.backend_asked() != Some(BackendKind::Embedded) {
        settings.with_backend(BackendKind::Nix)
    } else {
        settings.clone()
    };
    let backend = settings.backend()?;
    let spec_directory = spec_path.parent().unwrap_or(Path::new("/"));
    let mut sources = Vec::new();
    for (source, name, path, absolute, expression) in given {
        // On the embedded backend a directory with a `default.nix` may still be a channel;
        // a `<name>` lookup or a `.nix` file never is, nor a catalog.
        let is_directory = absolute.as_ref().is_some_and(|absolute| absolute.is_dir());
        if expression && backend != BackendKind::Nix && !is_directory {
            return Err(anyhow::Error::new(super::Hinted {
                message: format!(
                    "`--source {source}` is a Nix expression, which only the Nix backend can build"
                ),
                hint: "leave out `--backend embedded`".to_owned(),
            }));
        }
        let kind = if expression && backend == BackendKind::Nix {
            "nix"
        } else if is_directory {
            "channel"
        } else {
            "catalog"
        };
        let written = match &absolute {
            Some(absolute) => spec_relative_source(path, absolute, spec_directory),
            None => path.to_owned(),
        };
        sources.push((name.to_owned(), kind, written));
    }
    let profile = settings.open_profile()?;
    // Editors find the schema through the spec's `#:schema` line; keep a copy under the root.
    let schema_path = settings
        .require_root()?
        .join("nix/var/declenv/schema/profile.schema.json");
    let text = if args.from_current {
        let current = declarative::current_generation(&profile)?;
        let probe = crate::profile::init::probe_spec(backend, &sources);
        let catalog = if sources.is_empty() {
            declarative::Sources::default()
        } else {
            let parsed = crate::model::spec::parse(&probe, &spec_path)?;
            declarative::load_sources(&parsed.spec, &settings.catalog_cache())?
        };
        crate::profile::init::spec_from_current(&current, backend, &sources, &catalog, &schema_path)
    } else {
        crate::profile::init::template(backend, &sources, &schema_path)
    };
    // Parse and lock in memory first: a spec that cannot be read back or locked is never
    // written, and an existing one is left as it was.
    let spec_file = SpecFile {
        path: spec_path.clone(),
        text: text.clone(),
        parsed: crate::model::spec::parse(&text, &spec_path)?,
    };
    let lock_path = declarative::lock_path_for(&spec_path);
    let locked = if args.from_current {
        let sources = declarative::load_sources(spec_file.spec(), &settings.catalog_cache())?;
        let empty = LockFile {
            path: lock_path.clone(),
            text: None,
            lockfile: Lockfile::default(),
        };
        let locked = declarative::lock(
            &spec_file,
            &sources,
            &empty,
            &resolve_options(Update::Nothing, false),
            LockMode::InMemory,
        )?;
        warn_unreproduced(settings, &profile, &spec_file, &sources, &locked);
        Some(locked)
    } else {
        None
    };
    if let Some(parent) = schema_path.parent() {
        fs_err::create_dir_all(parent)?;
    }
    crate::fs::write_atomic(&schema_path, schema_json(SchemaKind::Profile).as_bytes())
        .with_context(|| format!("cannot write `{}`", schema_path.display()))?;
    if let Some(parent) = spec_path.parent() {
        fs_err::create_dir_all(parent)?;
    }
    crate::fs::write_atomic(&spec_path, text.as_bytes())
        .with_context(|| format!("cannot write `{}`", spec_path.display()))?;
    eprintln!("wrote `{}`", spec_path.display());
    if let Some(locked) = locked {
        crate::fs::write_atomic(&lock_path, locked.text.as_bytes())
            .with_context(|| format!("cannot write `{}`", lock_path.display()))?;
        eprintln!("wrote `{}`", lock_path.display());
    }
    Ok(Outcome::Success)
}

/// `init --from-current`: names what applying the new spec would change, when it cannot
/// declare the generation exactly (a store path with several outputs installed, a source that
/// ships other content under the same name, a priority the source's meta sets and the element
/// lacks).
fn warn_unreproduced(
    settings: &Settings,
    profile: &Profile,
    spec_file: &SpecFile,
    sources: &declarative::Sources,
    locked: &Locked,
) {
    let Ok(store) = settings.open_store() else {
        return;
    };
    let Ok(planned) =
        declarative::make_plan(profile, spec_file, sources, locked, store.store_dir())
    else {
        return;
    };
    if !planned.plan.has_changes() {
        return;
    }
    eprintln!(
        "{} the spec does not declare generation {} exactly; applying it would change:",
        "warning:".yellow().bold(),
        planned.plan.generation.unwrap_or_default()
    );
    for change in &planned.plan.changes {
        eprintln!("{}", change_line(change));
    }
}

/// The path to write in the spec for `--source NAME=PATH`: as given when absolute; relative to
/// the spec's directory when PATH (relative to the working directory) lies under it, so that
/// dotfiles move with their channels; otherwise absolute (a `..` could cross a symlink).
fn spec_relative_source(given: &str, absolute: &Path, spec_directory: &Path) -> String {
    if Path::new(given).is_absolute() {
        return given.to_owned();
    }
    let inside = absolute.strip_prefix(spec_directory).ok().filter(|rest| {
        rest.components()
            .all(|component| matches!(component, std::path::Component::Normal(_)))
    });
    match inside.and_then(Path::to_str) {
        Some("") => ".".to_owned(),
        Some(relative) => relative.to_owned(),
        None => absolute.to_string_lossy().into_owned(),
    }
}

/// Before a switch with `--restore-spec`: the target generation must carry its spec, so the
/// switch never happens without the restore the user asked for.
pub(crate) fn check_restorable(settings: &Settings, target: Option<u64>) -> anyhow::Result<()> {
    let profile = settings.open_profile()?;
    let generations = profile.generations_unlocked()?;
    let number = match target {
        Some(number) => u32::try_from(number).ok(),
        None => generations.current.and_then(|current| {
            generations
                .entries
                .iter()
                .map(|entry| entry.number)
                .filter(|&number| number < current)
                .max()
        }),
    };
    let Some(number) = number else {
        // The switch itself reports a missing generation in Nix's words.
        return Ok(());
    };
    let Some(entry) = generations.entry(number) else {
        return Ok(());
    };
    if profile
        .read_metadata(entry)?
        .and_then(|metadata| metadata.declarative)
        .is_none()
    {
        return Err(anyhow::Error::new(super::Hinted {
            message: format!("generation {number} was not built from a spec; nothing to restore"),
            hint: "switch without `--restore-spec`, then `declenv init --from-current --force` writes a spec for it".to_owned(),
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::spec_relative_source;
    use std::path::Path;

    #[test]
    fn init_sources_are_written_as_the_spec_reads_them() {
        let spec_directory = Path::new("/home/u/dotfiles");
        let written = |given: &str, absolute: &str| {
            spec_relative_source(given, Path::new(absolute), spec_directory)
        };
        assert_eq!(written("/srv/channel", "/srv/channel"), "/srv/channel");
        assert_eq!(
            written("dotfiles/channel", "/home/u/dotfiles/channel"),
            "channel"
        );
        assert_eq!(written(".", "/home/u/dotfiles"), ".");
        assert_eq!(written("channel", "/home/u/channel"), "/home/u/channel");
        assert_eq!(
            written("dotfiles/../channel", "/home/u/dotfiles/../channel"),
            "/home/u/dotfiles/../channel"
        );
    }
}
