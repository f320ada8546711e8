//! `declenv watch`: applies the spec on every saved change, until `SIGINT` or `SIGTERM`.
//!
//! Thin: resolves settings, runs [`crate::watch::run`] and prints what it reports. Each outcome
//! is one line on stderr (time, generation, summary; an error follows it as `declenv plan`
//! renders one), and with `--json` also one JSON object on stdout (JSON Lines, schema
//! `declenv schema watch-event`).

use super::declarative::{LockArgs, change_line, resolve_options, summary_line};
use super::{Outcome, Settings};
use crate::plan::resolve::Update;
use crate::profile::declarative::{Plan, SchemaVersion, Target};
use crate::profile::{Profile, ProfileMessage};
use crate::watch::{self, Backend, Report, Reporter, Stopped, WatchError, WatchSet};
use owo_colors::OwoColorize as _;
use serde::Serialize;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest period the options accept: a day, in milliseconds.
const MAX_MS: u64 = 86_400_000;

/// Arguments of `declenv watch`.
#[derive(Debug, clap::Args)]
pub(crate) struct WatchArgs {
    /// Poll for changes instead of waiting for file system events (for network and other file
    /// systems without them)
    #[arg(long)]
    poll: bool,
    /// How often to poll, in milliseconds
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 500,
        requires = "poll",
        value_parser = clap::value_parser!(u64).range(1..=MAX_MS)
    )]
    poll_interval: u64,
    /// Apply once no change came for MS milliseconds (a burst of saves is one change)
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(0..=MAX_MS)
    )]
    debounce: u64,
    /// Apply plans that remove, downgrade or replace packages (otherwise they are held until
    /// `declenv apply` applies them)
    #[arg(long)]
    allow_destructive: bool,
    /// Also print one JSON object per outcome on stdout
    #[arg(long)]
    json: bool,
    /// Test hook: wait MS milliseconds before each apply, saying so on stderr
    #[arg(
        long,
        value_name = "MS",
        hide = true,
        value_parser = clap::value_parser!(u64).range(0..=MAX_MS)
    )]
    debug_pause_before_apply: Option<u64>,
}

/// What happened, in `declenv watch --json`.
#[derive(Debug, Clone, Copy, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum EventKind {
    /// The watcher is ready; changes from now on are seen.
    Watching,
    /// A new generation (or an identical existing one) is now current.
    Applied,
    /// The profile already matched the spec.
    Unchanged,
    /// The plan removes, downgrades or replaces packages, and `--allow-destructive` is not set:
    /// nothing was applied.
    Held,
    /// The spec, the lockfile or a source could not be read, locked, planned or applied:
    /// nothing was applied.
    Failed,
    /// `SIGINT` or `SIGTERM` stopped the watcher, between applies.
    Stopped,
}

/// An error, as `declenv plan` prints it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
struct ErrorJson {
    /// The outermost message.
    message: String,
    /// Each cause, outermost first.
    causes: Vec<String>,
    /// What may fix it.
    hints: Vec<String>,
}

/// One line of `declenv watch --json`.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(title = "declenv watch event")]
pub(crate) struct WatchEventJson<'a> {
    /// The format version of this JSON, 1.
    schema: SchemaVersion,
    /// When it happened (RFC 3339, UTC).
    time: String,
    /// What happened.
    event: EventKind,
    /// The spec watched.
    spec: String,
    /// The profile.
    profile: String,
    /// The profile's current generation afterwards (null: it has none).
    generation: Option<u32>,
    /// `sha256:<hex>` of the spec's content the cycle read (null: not read, or no cycle).
    spec_hash: Option<String>,
    /// The changed paths that started the cycle (empty for the first cycle and other events).
    changed: Vec<String>,
    /// The plan applied, found empty, or held (null for other events).
    plan: Option<&'a Plan>,
    /// Whether the applied environment was identical to an existing generation, which was
    /// reused (null unless applied).
    reused: Option<bool>,
    /// Whether the lockfile was written (null unless applied or unchanged).
    lockfile_written: Option<bool>,
    /// Why nothing was applied (null unless failed).
    error: Option<ErrorJson>,
    /// Unknown keys in the spec, and what the environment builder skipped.
    warnings: Vec<String>,
    /// How long the cycle took, in milliseconds (null for other events).
    duration_ms: Option<u64>,
    /// The signal that stopped the watcher (null unless stopped).
    signal: Option<String>,
    /// Whether a change was seen and not applied when it stopped (null unless stopped).
    pending: Option<bool>,
    /// The directories watched (empty unless watching).
    directories: Vec<String>,
}

/// Prints what the watcher reports.
struct Printer<'a> {
    json: bool,
    spec: PathBuf,
    profile: &'a Profile,
    pause: Option<u64>,
}

/// A point in time for one event: RFC 3339 in UTC for JSON, local for the line.
struct Now {
    utc: String,
    local: String,
}

impl Now {
    fn take() -> Self {
        let timestamp = jiff::Timestamp::now();
        let local = timestamp
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string();
        Self {
            utc: timestamp.to_string(),
            local,
        }
    }
}

fn generation_label(generation: Option<u32>) -> String {
    generation.map_or_else(
        || "no generation yet".to_owned(),
        |number| format!("generation {number}"),
    )
}

/// `summary_line` without the trailing period of the plan's summary.
fn summary(plan: &Plan) -> String {
    summary_line(&plan.summary).trim_end_matches('.').to_owned()
}

/// Writes a line to stderr; a closed stderr must not stop the watcher.
fn say(line: &str) {
    let mut stderr = anstream::stderr().lock();
    let _ = writeln!(stderr, "{line}");
    let _ = stderr.flush();
}

impl Printer<'_> {
    /// A path as short as it can be said: relative to the spec's directory when under it.
    fn short(&self, path: &Path) -> String {
        let directories = [
            self.spec.parent().map(Path::to_path_buf),
            std::fs::canonicalize(&self.spec)
                .ok()
                .and_then(|spec| spec.parent().map(Path::to_path_buf)),
        ];
        directories
            .iter()
            .flatten()
            .find_map(|directory| path.strip_prefix(directory).ok())
            .filter(|relative| !relative.as_os_str().is_empty())
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// ` (after `profile.toml` changed)`, or ` (at start)` for the first cycle.
    fn trigger(&self, changed: &[PathBuf]) -> String {
        match changed {
            [] => " (at start)".to_owned(),
            [one] => format!(" (after `{}` changed)", self.short(one)),
            [first, rest @ ..] => format!(
                " (after `{}` and {} more changed)",
                self.short(first),
                rest.len()
            ),
        }
    }

    fn event<'b>(&self, now: &Now, event: EventKind) -> WatchEventJson<'b> {
        WatchEventJson {
            schema: SchemaVersion { version: 1 },
            time: now.utc.clone(),
            event,
            spec: self.spec.display().to_string(),
            profile: self.profile.path().display().to_string(),
            generation: None,
            spec_hash: None,
            changed: Vec::new(),
            plan: None,
            reused: None,
            lockfile_written: None,
            error: None,
            warnings: Vec::new(),
            duration_ms: None,
            signal: None,
            pending: None,
            directories: Vec::new(),
        }
    }

    fn emit(&self, event: &WatchEventJson<'_>) {
        if !self.json {
            return;
        }
        let Ok(line) = serde_json::to_string(event) else {
            return;
        };
        let mut stdout = anstream::stdout().lock();
        // A reader that went away does not stop the watcher.
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    fn stopped(&self, stopped: &Stopped) {
        let now = Now::take();
        let generation = self
            .profile
            .generations_unlocked()
            .ok()
            .and_then(|generations| generations.current);
        let signal = stopped.signal.map(signal_name);
        let pending = if stopped.pending {
            "; a change seen since was not applied (the next start applies it)"
        } else {
            ""
        };
        let current = generation.map_or_else(
            || "the profile has no generation yet".to_owned(),
            |number| format!("generation {number} is current"),
        );
        say(&format!(
            "{} {} on {}; {current}{pending}",
            now.local,
            "stopped".bold(),
            signal.as_deref().unwrap_or("request"),
        ));
        let mut event = self.event(&now, EventKind::Stopped);
        event.generation = generation;
        event.signal = signal;
        event.pending = Some(stopped.pending);
        self.emit(&event);
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        signal_hook::consts::SIGINT => "SIGINT".to_owned(),
        signal_hook::consts::SIGTERM => "SIGTERM".to_owned(),
        other => format!("signal {other}"),
    }
}

impl Reporter for Printer<'_> {
    fn watching(&mut self, set: &WatchSet, backend: Backend) {
        let now = Now::take();
        let how = match backend {
            Backend::Events => "file system events".to_owned(),
            Backend::Poll { interval } => format!("polling every {} ms", interval.as_millis()),
        };
        let count = set.directories.len();
        let directories = if count == 1 {
            "1 directory".to_owned()
        } else {
            format!("{count} directories")
        };
        say(&format!(
            "{} {} `{}`, its lockfile and its sources ({directories}, {how})",
            now.local,
            "watching".bold(),
            self.spec.display(),
        ));
        let mut event = self.event(&now, EventKind::Watching);
        event.directories = set
            .directories
            .keys()
            .map(|path| path.display().to_string())
            .collect();
        self.emit(&event);
    }

    fn applying(&mut self, plan: &Plan) {
        if let Some(pause) = self.pause {
            say(&format!(
                "applying {} after a pause of {pause} ms (test hook)",
                summary(plan)
            ));
        }
    }

    fn profile_message(&mut self, message: &ProfileMessage) {
        if let Some(text) = super::generations::waiting_text(message) {
            say(&format!("{}", text.dimmed()));
        } else if let ProfileMessage::Nix(line) = message {
            say(&format!("{}", line.dimmed()));
        }
    }

    fn outcome(&mut self, report: Report) {
        let now = Now::take();
        let trigger = self.trigger(&report.changed);
        let label = generation_label(report.generation);
        let mut event = self.event(&now, EventKind::Applied);
        event.generation = report.generation;
        event.spec_hash = report.spec_hash;
        event.changed = report
            .changed
            .iter()
            .map(|path| path.display().to_string())
            .collect();
        event.duration_ms = Some(u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX));
        for warning in &report.warnings {
            say(&format!("{} {warning}", "warning:".yellow().bold()));
        }
        event.warnings = report.warnings;
        match report.outcome {
            watch::Outcome::Applied {
                plan,
                reused,
                lockfile_written,
            } => {
                let what = if reused {
                    "applied (an identical generation reused)"
                } else {
                    "applied"
                };
                say(&format!(
                    "{} {label} {}: {}{trigger}",
                    now.local,
                    what.green().bold(),
                    summary(&plan)
                ));
                event.reused = Some(reused);
                event.lockfile_written = Some(lockfile_written);
                event.plan = Some(&plan);
                self.emit(&event);
            }
            watch::Outcome::Unchanged {
                plan,
                lockfile_written,
            } => {
                let packages = match plan.summary.unchanged {
                    1 => "1 package".to_owned(),
                    count => format!("{count} packages"),
                };
                say(&format!(
                    "{} {label} {}: the profile matches the spec ({packages}){trigger}",
                    now.local,
                    "unchanged".bold(),
                ));
                event.event = EventKind::Unchanged;
                event.lockfile_written = Some(lockfile_written);
                event.plan = Some(&plan);
                self.emit(&event);
            }
            watch::Outcome::Held { plan } => {
                say(&format!(
                    "{} {label} {}: {}; nothing applied, the plan removes, downgrades or replaces packages{trigger}",
                    now.local,
                    "held".yellow().bold(),
                    summary(&plan)
                ));
                for change in plan
                    .changes
                    .iter()
                    .filter(|change| change.kind.is_destructive())
                {
                    say(&change_line(change));
                }
                say(&format!(
                    "{} pass `--allow-destructive` to let the watcher apply such plans, or run `declenv apply`",
                    "hint:".cyan().bold()
                ));
                event.event = EventKind::Held;
                event.plan = Some(&plan);
                self.emit(&event);
            }
            watch::Outcome::Failed { error, .. } => {
                let kept = match report.generation {
                    Some(number) => {
                        format!(
                            "generation {number} {}: nothing applied",
                            "kept".red().bold()
                        )
                    }
                    None => format!(
                        "{} nothing applied, the profile has no generation yet",
                        "failed:".red().bold()
                    ),
                };
                say(&format!("{} {kept}{trigger}", now.local));
                let error = anyhow::Error::new(error);
                super::report_error(&error);
                event.event = EventKind::Failed;
                let mut chain = error.chain().map(ToString::to_string);
                event.error = Some(ErrorJson {
                    message: chain.next().unwrap_or_default(),
                    causes: chain.collect(),
                    hints: super::hints(&error),
                });
                self.emit(&event);
            }
        }
    }

    fn warning(&mut self, error: &WatchError) {
        let mut line = format!("{} {error}", "warning:".yellow().bold());
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            line.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        say(&line);
        if let Some(hint) = error.hint() {
            say(&format!("{} {hint}", "hint:".cyan().bold()));
        }
    }
}

pub(crate) fn run(
    settings: &Settings,
    lock_args: LockArgs,
    args: &WatchArgs,
) -> anyhow::Result<Outcome> {
    let spec_path = std::path::absolute(settings.spec_path()?)?;
    let profile = settings.open_profile()?;
    if settings.uses_default_profile()
        && let Some(parent) = profile.path().parent()
    {
        fs_err::create_dir_all(parent)?;
    }
    let store = settings.open_store()?;
    let scratch = settings.require_root()?.join("nix/var/declenv/tmp");
    let config = watch::Config {
        spec_path: spec_path.clone(),
        target: Target {
            store: store.target(),
            profile: &profile,
            scratch: &scratch,
        },
        cache: settings.catalog_cache(),
        options: resolve_options(Update::Nothing, false),
        mode: lock_args.mode(),
        allow_destructive: args.allow_destructive,
        backend: if args.poll {
            Backend::Poll {
                interval: Duration::from_millis(args.poll_interval),
            }
        } else {
            Backend::Events
        },
        debounce: Duration::from_millis(args.debounce),
        pause_before_apply: args.debug_pause_before_apply.map(Duration::from_millis),
    };
    let mut printer = Printer {
        json: args.json,
        spec: spec_path,
        profile: &profile,
        pause: args.debug_pause_before_apply,
    };
    let stopped = watch::run(&config, &mut printer)?;
    printer.stopped(&stopped);
    Ok(Outcome::Success)
}
