//! `declenv generations …` and `declenv rollback`: list, switch, roll back and delete
//! generations of a profile, with Nix's numbering and rules.

use super::{Outcome, Schema, Settings};
use crate::plan::generations::DeletePolicy;
use crate::profile::{LockOptions, Profile, ProfileMessage};
use anyhow::Context as _;
use owo_colors::OwoColorize;
use serde::Serialize;
use std::io::{BufWriter, Write};

/// `declenv generations` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum GenerationsCommand {
    /// List the generations of the profile, oldest first, marking the current one
    List {
        /// Print JSON (with each generation's target, command and parent)
        #[arg(long)]
        json: bool,
    },
    /// Switch the profile to generation N
    Switch {
        /// The generation number
        #[arg(value_name = "N")]
        number: String,
        /// Say what would happen; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Also write back the spec and lockfile that generation was built from
        #[arg(long, conflicts_with = "dry_run")]
        restore_spec: bool,
        /// Print the switch as JSON (`from`, `to`)
        #[arg(long)]
        json: bool,
    },
    /// Delete generations: `old` (all but the current), `+N` (keep the current and the N-1
    /// before it), `Nd` (older than N days, keeping the one active then), or numbers
    Delete {
        /// What to delete, in `nix-env --delete-generations` syntax
        #[arg(required = true, value_name = "SPEC", allow_hyphen_values = false)]
        specs: Vec<String>,
        /// Say what would be deleted; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the numbers deleted (or, with `--dry-run`, that would be) as JSON
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `declenv rollback`.
#[derive(Debug, clap::Args)]
pub(crate) struct RollbackArgs {
    /// Say what would happen; change nothing
    #[arg(long)]
    dry_run: bool,
    /// Also write back the spec and lockfile the previous generation was built from (without
    /// it, the spec stays as it is and `declenv plan` shows the drift)
    #[arg(long, conflicts_with = "dry_run")]
    restore_spec: bool,
    /// Print the switch as JSON (`from`, `to`)
    #[arg(long)]
    json: bool,
}

/// The message for a wait on a lock, in declenv's words; `None` for other messages.
pub(super) fn waiting_text(message: &ProfileMessage) -> Option<String> {
    match message {
        ProfileMessage::WaitingForLock { profile } => Some(format!(
            "waiting for the lock on profile `{}`",
            profile.display()
        )),
        ProfileMessage::WaitingForGc { lock } => Some(format!(
            "waiting for the garbage collector's lock `{}`",
            lock.display()
        )),
        _ => None,
    }
}

/// Prints a profile message in declenv's words (the `env` command prints Nix's instead).
fn report(message: &ProfileMessage) {
    reporter(false, false)(message);
}

/// [`report`] for a command run with `--json` (only the waits: what the JSON says is not said
/// twice) and `--dry-run` (a switch that is not made says so).
fn reporter(json: bool, dry_run: bool) -> impl Fn(&ProfileMessage) {
    move |message| {
        if !json || waiting_text(message).is_some() {
            print_message(message, dry_run);
        }
    }
}

fn print_message(message: &ProfileMessage, dry_run: bool) {
    let text = match message {
        ProfileMessage::WaitingForLock { .. } | ProfileMessage::WaitingForGc { .. } => {
            waiting_text(message).unwrap_or_default()
        }
        ProfileMessage::Switching(switch) => {
            let verb = if dry_run { "would switch" } else { "switching" };
            match switch.from {
                Some(from) => format!("{verb} from generation {from} to {}", switch.to),
                None => format!("{verb} to generation {}", switch.to),
            }
        }
        ProfileMessage::Removing { number } => format!("removing generation {number}"),
        ProfileMessage::WouldRemove { number } => format!("would remove generation {number}"),
        ProfileMessage::Nix(line) => line.clone(),
    };
    anstream::eprintln!("{}", text.dimmed());
}

pub(crate) fn run(settings: &Settings, command: &GenerationsCommand) -> anyhow::Result<Outcome> {
    let profile = settings.open_profile()?;
    match command {
        GenerationsCommand::List { json } => list(&profile, *json),
        GenerationsCommand::Switch {
            number,
            dry_run,
            restore_spec,
            json,
        } => {
            let requested =
                crate::plan::generations::parse_switch_generation_arguments(&[number.as_str()])
                    .with_context(|| format!("invalid generation number `{number}`"))?;
            if *restore_spec {
                super::declarative::check_restorable(settings, Some(requested))?;
            }
            let switch = profile.switch_generation(
                requested,
                *dry_run,
                LockOptions::default(),
                &mut reporter(*json, *dry_run),
            )?;
            if *restore_spec {
                super::declarative::restore_spec(settings)?;
            }
            if *json {
                print_switch(&profile, switch, *dry_run, *restore_spec)?;
            }
            Ok(Outcome::Success)
        }
        GenerationsCommand::Delete {
            specs,
            dry_run,
            json,
        } => {
            let policy = DeletePolicy::parse(specs)
                .with_context(|| format!("invalid generation spec `{}`", specs.join(" ")))?;
            let now = jiff::Timestamp::now().as_second();
            let mut deleted = profile.delete_generations(
                &policy,
                now,
                *dry_run,
                LockOptions::default(),
                &mut reporter(*json, *dry_run),
            )?;
            if *json {
                deleted.sort_unstable();
                print_json(&DeleteJson {
                    schema: Schema { version: 1 },
                    profile: profile.path().display().to_string(),
                    dry_run: *dry_run,
                    deleted,
                })?;
            } else if deleted.is_empty() {
                anstream::eprintln!("{}", "no generation to delete".dimmed());
            }
            Ok(Outcome::Success)
        }
    }
}

pub(crate) fn rollback(settings: &Settings, args: &RollbackArgs) -> anyhow::Result<Outcome> {
    let profile = settings.open_profile()?;
    if args.restore_spec {
        super::declarative::check_restorable(settings, None)?;
    }
    let switch = profile.rollback(
        args.dry_run,
        LockOptions::default(),
        &mut reporter(args.json, args.dry_run),
    )?;
    if args.restore_spec {
        super::declarative::restore_spec(settings)?;
    }
    if args.json {
        print_switch(&profile, switch, args.dry_run, args.restore_spec)?;
    }
    Ok(Outcome::Success)
}

/// What `rollback --json` and `generations switch --json` print.
#[derive(Serialize)]
struct SwitchJson {
    schema: Schema,
    profile: String,
    /// Nothing was changed; `to` is where the profile would go.
    dry_run: bool,
    /// The current generation before (absent: there was none).
    from: Option<u32>,
    to: u32,
    /// The spec and lockfile `to` was built from were written back.
    restored_spec: bool,
}

/// What `generations delete --json` prints.
#[derive(Serialize)]
struct DeleteJson {
    schema: Schema,
    profile: String,
    dry_run: bool,
    /// The generations deleted (or that would be), ascending.
    deleted: Vec<u32>,
}

fn print_switch(
    profile: &Profile,
    switch: crate::plan::generations::Switch,
    dry_run: bool,
    restored_spec: bool,
) -> anyhow::Result<()> {
    print_json(&SwitchJson {
        schema: Schema { version: 1 },
        profile: profile.path().display().to_string(),
        dry_run,
        from: switch.from,
        to: switch.to,
        restored_spec,
    })
}

fn print_json(document: &impl Serialize) -> anyhow::Result<()> {
    anstream::println!("{}", serde_json::to_string_pretty(document)?);
    Ok(())
}

#[derive(Serialize)]
struct ListJson {
    schema: Schema,
    profile: String,
    current: Option<u32>,
    generations: Vec<GenerationJson>,
}

#[derive(Serialize)]
struct GenerationJson {
    number: u32,
    created: String,
    current: bool,
    target: Option<String>,
    command: Option<Vec<String>>,
    parent: Option<u32>,
}

fn list(profile: &Profile, json: bool) -> anyhow::Result<Outcome> {
    let generations = profile.list_generations(LockOptions::default(), &mut report)?;
    if json {
        let mut rows = Vec::with_capacity(generations.entries.len());
        for entry in &generations.entries {
            let metadata = profile.read_metadata(entry)?;
            let link = profile.directory().join(&entry.file_name);
            rows.push(GenerationJson {
                number: entry.number,
                created: jiff::Timestamp::from_second(entry.creation_time)
                    .map(|time| time.to_string())
                    .unwrap_or_default(),
                current: generations.current == Some(entry.number),
                target: std::fs::read_link(&link)
                    .ok()
                    .map(|target| target.display().to_string()),
                command: metadata.as_ref().map(|metadata| metadata.command.clone()),
                parent: metadata.and_then(|metadata| metadata.parent),
            });
        }
        print_json(&ListJson {
            schema: Schema { version: 1 },
            profile: profile.path().display().to_string(),
            current: generations.current,
            generations: rows,
        })?;
    } else {
        let stdout = anstream::stdout();
        let mut out = BufWriter::new(stdout.lock());
        out.write_all(generations.render_list_local().as_bytes())?;
        out.flush()?;
    }
    Ok(Outcome::Success)
}
