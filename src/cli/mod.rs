//! The `declenv` command line: argument definitions, settings resolution, the error renderer.
//!
//! Owns what the user sees: data goes to stdout, messages to stderr, colour only on a terminal.
//! Commands are thin: they resolve settings, call the library and print. The one renderer in
//! [`report_error`] prints `error:`, the causes, then `hint:` lines.

mod debug;
mod declarative;
mod env;
mod gc;
mod generations;
mod search;
mod store;
mod watch;

use anstream::{eprintln, stderr};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use owo_colors::OwoColorize;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::model::spec::BackendKind;
use crate::store::nix::NixStore;

/// The backend a spec asks for, read without validating the rest (the commands that read the
/// spec report its errors): `None` when the text does not parse that far; `Some(None)` when it
/// does not say (no `backend`, no Nix expression among its sources).
fn peek_backend(text: &str) -> Option<Option<BackendKind>> {
    #[derive(serde::Deserialize)]
    struct Peek {
        backend: Option<BackendKind>,
        #[serde(default)]
        sources: std::collections::BTreeMap<String, toml::Value>,
    }
    let peek = toml::from_str::<Peek>(text).ok()?;
    Some(peek.backend.or_else(|| {
        peek.sources
            .values()
            .any(|source| source.get("nix").is_some())
            .then_some(BackendKind::Nix)
    }))
}

/// Why the backend cannot be told.
#[derive(Debug, Clone)]
enum BackendProblem {
    /// `--backend` (or `DECLENV_BACKEND`) asks for one, the spec for the other.
    Conflict {
        asked: BackendKind,
        spec: BackendKind,
    },
    /// The spec exists but does not parse, and nothing else says.
    Unreadable(PathBuf),
}

/// Declarative Nix-style user profiles.
#[derive(Debug, Parser)]
#[command(name = "declenv", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    lock: declarative::LockArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every command accepts.
#[derive(Debug, clap::Args)]
struct GlobalArgs {
    /// Keep the store, profiles and caches under DIR (a Nix chroot-store layout) instead of
    /// `$XDG_DATA_HOME/declenv`
    #[arg(long, global = true, env = "DECLENV_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,

    /// The profile to manage
    #[arg(long, global = true, value_name = "PATH")]
    profile: Option<PathBuf>,

    /// The profile spec (default: `$XDG_CONFIG_HOME/declenv/profile.toml`); its lockfile is
    /// beside it, with the extension `.lock`
    #[arg(long, global = true, env = "DECLENV_FILE", value_name = "PATH")]
    file: Option<PathBuf>,

    /// The store to manage: `embedded` (declenv's own, under the root) or `nix` (the real Nix
    /// store and profiles); by default what the spec's `backend` says, else `embedded`
    #[arg(long, global = true, env = "DECLENV_BACKEND", value_name = "BACKEND", value_parser = parse_backend)]
    backend: Option<BackendKind>,
}

fn parse_backend(text: &str) -> Result<BackendKind, String> {
    match text {
        "embedded" => Ok(BackendKind::Embedded),
        "nix" => Ok(BackendKind::Nix),
        _ => Err("expected `embedded` or `nix`".to_owned()),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a first profile spec (`--from-current`: one that declares what the profile holds)
    Init(declarative::InitArgs),
    /// Resolve the spec into its lockfile (only what is new or changed, unless `--update`)
    Lock(declarative::LockCommandArgs),
    /// Show what applying the spec would change in the profile
    Plan(declarative::PlanArgs),
    /// Make the profile match the spec (or a saved plan) as one new generation
    Apply(declarative::ApplyArgs),
    /// Show what changed between two generations
    Diff(declarative::DiffArgs),
    /// Print the JSON Schema of `profile.toml`, `profile.lock`, plan JSON or a `--json` report
    Schema(declarative::SchemaArgs),
    /// Search the available packages
    Search(search::SearchArgs),
    /// Work with the embedded store
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// List, switch to and delete generations of the profile
    #[command(subcommand)]
    Generations(generations::GenerationsCommand),
    /// Switch the profile back to the previous generation
    Rollback(generations::RollbackArgs),
    /// Delete store paths that no generation or GC root reaches
    Gc(gc::GcArgs),
    /// Apply the spec whenever it, its lockfile or a local source changes, until stopped
    Watch(watch::WatchArgs),
    /// Run a `nix-env` command line on declenv's profiles: queries and generation operations
    /// act as `nix-env` does, writes edit the spec and apply it (`declenv env --help`)
    #[command(disable_help_flag = true)]
    Env {
        /// `nix-env`'s operation, flags and arguments
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "NIX_ENV_ARGS"
        )]
        arguments: Vec<String>,
    },
    /// Internal commands for benchmarks and tests
    #[command(subcommand, hide = true)]
    Debug(debug::DebugCommand),
}

/// Settings resolved once from the command line and the environment.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The root directory, when one could be determined.
    root: Option<PathBuf>,
    /// The profile given with `--profile`.
    profile: Option<PathBuf>,
    /// The spec given with `--file`.
    file: Option<PathBuf>,
    /// The backend: `--backend`, else the spec's (`backend`, or implied by a Nix source), else
    /// the embedded store.
    backend: BackendKind,
    /// Why that cannot be trusted, when it cannot.
    backend_problem: Option<BackendProblem>,
    /// The backend `--backend` (or `DECLENV_BACKEND`) asked for, if it did.
    backend_asked: Option<BackendKind>,
}

/// The store a command works on, opened.
#[derive(Debug)]
pub(crate) enum OpenedStore {
    /// declenv's own store under the root.
    Embedded(crate::store::EmbeddedStore),
    /// The real Nix store.
    Nix(NixStore),
}

impl OpenedStore {
    /// The store for [`crate::profile::declarative::apply`].
    pub(crate) fn target(&self) -> crate::profile::declarative::Store<'_> {
        match self {
            Self::Embedded(store) => crate::profile::declarative::Store::Embedded(store),
            Self::Nix(store) => crate::profile::declarative::Store::Nix(store),
        }
    }

    /// The store directory.
    pub(crate) fn store_dir(&self) -> &crate::store::StoreDir {
        match self {
            Self::Embedded(store) => store.store_dir(),
            Self::Nix(store) => store.store_dir(),
        }
    }
}

impl Settings {
    fn resolve(global: &GlobalArgs) -> Self {
        let mut settings = Self::resolve_paths(global);
        let spec_path = settings.spec_path().ok();
        let spec_text = spec_path
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok());
        let spec_backend = spec_text.as_deref().map(peek_backend);
        settings.backend = global
            .backend
            .or(spec_backend.flatten().flatten())
            .unwrap_or(BackendKind::Embedded);
        settings.backend_problem = match (global.backend, spec_backend) {
            (Some(asked), Some(Some(Some(spec)))) if asked != spec => {
                Some(BackendProblem::Conflict { asked, spec })
            }
            (None, Some(None)) => spec_path.map(BackendProblem::Unreadable),
            _ => None,
        };
        settings
    }

    /// The backend, or an error when `--backend` contradicts the spec, or when only the spec
    /// could say and it does not parse (its own error, with line and column).
    pub(crate) fn backend(&self) -> anyhow::Result<BackendKind> {
        match &self.backend_problem {
            None => Ok(self.backend),
            Some(BackendProblem::Conflict { asked, spec }) => Err(anyhow::Error::new(Hinted {
                message: format!(
                    "the backend `{}` (from `--backend` or `DECLENV_BACKEND`) contradicts the \
                     spec's backend `{}`",
                    asked.as_str(),
                    spec.as_str()
                ),
                hint: "leave `--backend` out, or change `backend` in the spec".to_owned(),
            })),
            Some(BackendProblem::Unreadable(path)) => {
                Ok(crate::profile::declarative::SpecFile::read(path)?
                    .spec()
                    .backend)
            }
        }
    }

    /// These settings for a command that replaces the spec (`init --force`): a spec that does
    /// not parse does not stop it.
    pub(crate) fn replacing_the_spec(&self) -> Self {
        let mut settings = self.clone();
        if matches!(
            settings.backend_problem,
            Some(BackendProblem::Unreadable(_))
        ) {
            settings.backend_problem = None;
        }
        settings
    }

    /// The backend `--backend` (or `DECLENV_BACKEND`) asked for, if it did.
    pub(crate) fn backend_asked(&self) -> Option<BackendKind> {
        self.backend_asked
    }

    /// These settings for a spec about to be written with `backend` (`init`, whose sources
    /// imply it).
    pub(crate) fn with_backend(&self, backend: BackendKind) -> Self {
        let mut settings = self.clone();
        settings.backend = backend;
        settings.backend_problem = None;
        settings
    }

    /// The Nix store, for the Nix backend.
    pub(crate) fn nix_store(&self) -> anyhow::Result<NixStore> {
        Ok(NixStore::from_environment()?)
    }

    /// The store of the backend; the embedded one is created on a fresh root.
    pub(crate) fn open_store(&self) -> anyhow::Result<OpenedStore> {
        Ok(match self.backend()? {
            BackendKind::Embedded => OpenedStore::Embedded(store::open_store(self)?),
            BackendKind::Nix => OpenedStore::Nix(self.nix_store()?),
        })
    }

    /// Where profiles keep their GC roots and declenv's metadata, for the backend.
    pub(crate) fn profile_layout(&self) -> anyhow::Result<crate::profile::ProfileLayout> {
        let root = self.require_root()?;
        Ok(match self.backend()? {
            BackendKind::Embedded => crate::profile::ProfileLayout::under_root(root),
            BackendKind::Nix => {
                crate::profile::ProfileLayout::for_nix(root, &self.nix_store()?.gcroots_auto())
            }
        })
    }

    /// The profile to manage, with the backend's layout.
    pub(crate) fn open_profile(&self) -> anyhow::Result<crate::profile::Profile> {
        Ok(crate::profile::Profile::new(
            &self.profile_path()?,
            self.profile_layout()?,
        )?)
    }

    fn resolve_paths(global: &GlobalArgs) -> Self {
        let root = global.root.clone().or_else(|| {
            std::env::var_os("XDG_DATA_HOME")
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share"))
                })
                .map(|data| data.join("declenv"))
        });
        Self {
            root,
            profile: global.profile.clone(),
            file: global.file.clone(),
            backend: BackendKind::Embedded,
            backend_problem: None,
            backend_asked: global.backend,
        }
    }

    /// The spec given with `--file` (or `DECLENV_FILE`), made absolute.
    fn explicit_spec_path(&self) -> Option<PathBuf> {
        self.file
            .as_ref()
            .map(|path| std::path::absolute(path).unwrap_or_else(|_| path.clone()))
    }

    /// The spec: `--file`, else `$XDG_CONFIG_HOME/declenv/profile.toml`
    /// (`~/.config/declenv/profile.toml`).
    fn spec_path(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = self.explicit_spec_path() {
            return Ok(path);
        }
        std::env::var_os("XDG_CONFIG_HOME")
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
            .map(|config| config.join("declenv/profile.toml"))
            .ok_or_else(|| {
                anyhow::Error::new(Hinted {
                    message: "no profile spec: `HOME` and `XDG_CONFIG_HOME` are unset".to_owned(),
                    hint: "pass `--file PATH` or set `DECLENV_FILE`".to_owned(),
                })
            })
    }

    /// The profile to manage: `--profile`; else, on the embedded store,
    /// `ROOT/nix/var/nix/profiles/default` (where Nix keeps root's default profile in a store of
    /// the same layout), and on the Nix backend the profile `nix-env` uses by default.
    fn profile_path(&self) -> anyhow::Result<PathBuf> {
        match &self.profile {
            Some(path) => Ok(std::path::absolute(path)
                .with_context(|| format!("cannot resolve profile `{}`", path.display()))?),
            None => match self.backend()? {
                BackendKind::Embedded => {
                    Ok(self.require_root()?.join("nix/var/nix/profiles/default"))
                }
                BackendKind::Nix => Ok(self
                    .nix_store()?
                    .default_profile(std::env::var_os("HOME").map(PathBuf::from).as_deref())),
            },
        }
    }

    /// Whether the profile is the root's default one (whose directory declenv may create).
    fn uses_default_profile(&self) -> bool {
        self.profile.is_none()
    }

    /// The root, or an error saying how to set one.
    fn require_root(&self) -> anyhow::Result<&std::path::Path> {
        self.root.as_deref().ok_or_else(|| {
            anyhow::Error::new(Hinted {
                message: "no root directory: `HOME` and `XDG_DATA_HOME` are unset".to_owned(),
                hint: "pass `--root DIR` or set `DECLENV_ROOT`".to_owned(),
            })
        })
    }

    /// Where parsed catalogs are cached, versioned so a format change starts afresh.
    fn catalog_cache(&self) -> crate::source::CacheDirectory {
        crate::source::CacheDirectory(
            self.root
                .as_ref()
                .map(|root| root.join("nix/var/declenv/cache/catalog-v1")),
        )
    }
}

/// A command's outcome that is not an error but still sets the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Everything asked for was done or found.
    Success,
    /// The command ran but found nothing (like `grep`'s exit status 1).
    NothingFound,
    /// `plan --detailed-exitcode` found changes (exit status 2).
    Changes,
}

/// Runs the `declenv` binary with the process's arguments; invoked as `nix-env` (a link or copy
/// of that name), it is `declenv env`.
#[must_use]
pub fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args_os()
        .map(|argument| argument.to_string_lossy().into_owned())
        .collect();
    if let Some(run) = env_invocation(&arguments) {
        return run();
    }
    let cli = Cli::parse();
    let settings = Settings::resolve(&cli.global);
    // Under `--detailed-exitcode`, 2 means "changes", so errors exit with 1 (as Terraform).
    let error_status = match &cli.command {
        Command::Plan(args) if args.detailed_exitcode() => 1,
        _ => 2,
    };
    let result = match cli.command {
        Command::Init(args) => declarative::init(&settings, &args),
        Command::Lock(args) => declarative::lock(&settings, cli.lock, &args),
        Command::Plan(args) => declarative::plan(&settings, cli.lock, &args),
        Command::Apply(args) => declarative::apply(&settings, cli.lock, &args),
        Command::Diff(args) => declarative::diff(&settings, &args),
        Command::Schema(args) => declarative::schema(&args),
        Command::Search(args) => search::run(&settings, &args),
        Command::Store(command) => store::run(&settings, &command),
        Command::Generations(command) => generations::run(&settings, &command),
        Command::Rollback(args) => generations::rollback(&settings, &args),
        Command::Gc(args) => gc::run(&settings, &args),
        Command::Watch(args) => watch::run(&settings, cli.lock, &args),
        Command::Env { arguments } => return env::run(&settings, &arguments),
        Command::Debug(command) => debug::run(&settings, &command),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::NothingFound) => ExitCode::from(1),
        Ok(Outcome::Changes) => ExitCode::from(2),
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            report_error(&error);
            ExitCode::from(error_status)
        }
    }
}

/// `nix-env ARGS…` (by the program's name) and `declenv [GLOBAL OPTIONS] env ARGS…`: found
/// before clap sees the arguments, since `nix-env`'s own `-f`, `-p` and `--help` must reach
/// `env` untouched. declenv's options before `env` (`--root`, `--profile`, `--file`) still apply.
fn env_invocation(arguments: &[String]) -> Option<impl FnOnce() -> ExitCode> {
    let program = arguments.first()?;
    let name = std::path::Path::new(program).file_name()?.to_string_lossy();
    let (globals, rest) = if name == "nix-env" {
        (vec![program.clone()], arguments[1..].to_vec())
    } else {
        let mut index = 1;
        while let Some(argument) = arguments.get(index) {
            match argument.as_str() {
                "--root" | "--profile" | "--file" | "--backend" => index += 2,
                "--locked" | "--frozen" => index += 1,
                option
                    if option.starts_with("--root=")
                        || option.starts_with("--backend=")
                        || option.starts_with("--profile=")
                        || option.starts_with("--file=") =>
                {
                    index += 1;
                }
                "env" => break,
                _ => return None,
            }
        }
        if arguments.get(index).map(String::as_str) != Some("env") {
            return None;
        }
        let mut globals = arguments[..index].to_vec();
        globals.push("env".to_owned());
        (globals, arguments[index + 1..].to_vec())
    };
    Some(move || {
        let mut prefix = globals;
        if prefix.last().map(String::as_str) != Some("env") {
            prefix.push("env".to_owned());
        }
        let cli = match Cli::try_parse_from(&prefix) {
            Ok(cli) => cli,
            Err(error) => error.exit(),
        };
        let settings = Settings::resolve(&cli.global);
        env::run(&settings, &rest)
    })
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|cause| cause.kind() == io::ErrorKind::BrokenPipe)
}

/// Prints an error chain: `error:` with the outermost message, each cause indented below it,
/// then any hints the error types carry.
pub(crate) fn report_error(error: &anyhow::Error) {
    let mut chain = error.chain();
    if let Some(top) = chain.next() {
        eprintln!("{} {top}", "error:".red().bold());
    }
    for cause in chain {
        eprintln!("  {} {cause}", "caused by:".bold());
    }
    for hint in hints(error) {
        eprintln!("{} {hint}", "hint:".cyan().bold());
    }
    let _ = stderr().flush();
}

/// Hints are data on the library's error types; collect them from every link of the chain.
fn hints(error: &anyhow::Error) -> Vec<String> {
    let mut hints = Vec::new();
    for cause in error.chain() {
        // Boxed where a larger error holds it, so looked for both ways.
        if let Some(source_error) =
            cause
                .downcast_ref::<crate::source::SourceError>()
                .or_else(|| {
                    cause
                        .downcast_ref::<Box<crate::source::SourceError>>()
                        .map(AsRef::as_ref)
                })
        {
            hints.extend(source_error.hint());
        }
        if let Some(nix_error) = cause
            .downcast_ref::<crate::store::nix::NixError>()
            .or_else(|| {
                cause
                    .downcast_ref::<Box<crate::store::nix::NixError>>()
                    .map(AsRef::as_ref)
            })
        {
            hints.extend(nix_error.hint());
        }
        if let Some(profile_error) = cause.downcast_ref::<crate::profile::ProfileError>() {
            hints.extend(profile_error.hint());
        }
        if let Some(build_error) = cause.downcast_ref::<crate::profile::build::BuildError>() {
            hints.extend(build_error.hint());
        }
        if let Some(store_error) = cause.downcast_ref::<crate::store::StoreError>() {
            hints.extend(store_error.hint());
        }
        if let Some(transfer_error) = cause.downcast_ref::<crate::store::TransferError>() {
            hints.extend(transfer_error.hint());
        }
        if let Some(declarative_error) =
            cause.downcast_ref::<crate::profile::declarative::DeclarativeError>()
        {
            hints.extend(declarative_error.hint());
        }
        if let Some(spec_error) = cause.downcast_ref::<crate::model::spec::SpecError>() {
            hints.extend(spec_error.hint.clone());
        }
        if let Some(watch_error) = cause.downcast_ref::<crate::watch::WatchError>() {
            hints.extend(watch_error.hint());
        }
        if let Some(hinted) = cause.downcast_ref::<Hinted>() {
            hints.push(hinted.hint.clone());
        }
    }
    hints
}

/// The version of a JSON report's format, so scripts can tell formats apart.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Schema {
    pub(crate) version: u32,
}

/// An error raised by a command with a hint attached at the call site.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Hinted {
    pub(crate) message: String,
    pub(crate) hint: String,
}
