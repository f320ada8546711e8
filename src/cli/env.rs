//! `declenv env ARGS…`, and the same binary invoked as `nix-env`: `nix-env`'s command line on
//! top of declenv's profiles.
//!
//! * The command line is read by [`crate::compat::args`], with Nix's usage errors and exit
//!   codes (1 for errors, 100 when the environment cannot be built).
//! * `-f PATH` names a channel directory or a catalog JSON file (as `nix-env -qa --json
//!   --out-path --meta` writes it), and on the Nix backend a Nix expression (`<name>`, a `.nix`
//!   file, a directory with a `default.nix`). Without `-f`, the available packages are those of the
//!   spec's sources, under attribute paths prefixed with the source's name (as Nix prefixes
//!   channel names: `-iA nixpkgs.hello`).
//! * `-p PATH` names the profile; without it, declenv's `--profile`, then the profile `-S`
//!   chose, then `ROOT/nix/var/nix/profiles/default`.
//! * Queries and generation operations act on the profile as `nix-env` does; writes (`-i`,
//!   `-u`, `-e`, `--set`, `--set-flag`) edit the spec (`--file`, `DECLENV_FILE`, or
//!   `~/.config/declenv/profile.toml`) and apply it as one generation, under a lock beside the
//!   spec so that concurrent writers never lose each other's edits.
//!
//! Messages go to stderr in Nix's words; query data goes to stdout.

mod write;

use super::Settings;
use crate::compat::args::{self, ArgsError, Command, Globals, QueryArgs, QuerySource};
use crate::compat::query::{self, Element, Row, Status};
use crate::model::catalog::{Catalog, EntryRef};
use crate::model::manifest::{self, ManifestElement, NixValue};
use crate::plan::generations::DeletePolicy;
use crate::plan::select::{SelectionError, filter_by_selectors, sort_for_query};
use crate::profile::realise::output_store_name;
use crate::profile::{LockOptions, Profile, ProfileError, ProfileMessage};
use crate::store::{EmbeddedStore, StoreDir, nar, path::source_store_path};
use owo_colors::OwoColorize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit status of a failed build in Nix (a collision in the user environment).
const BUILD_FAILED: u8 = 100;

/// Why a `nix-env` command failed.
#[derive(Debug)]
pub(crate) enum EnvError {
    /// A failure `nix-env` reports in its own words: `error: MESSAGE` (plus the usage hint for
    /// usage errors), with its exit status.
    Nix {
        /// The message, without `error: `.
        message: String,
        /// Whether to add `Try 'nix-env --help' for more information.`
        usage: bool,
        /// The exit status.
        status: u8,
    },
    /// A failure only declenv can have (a spec that does not parse, say): rendered with
    /// declenv's causes and hints, exit status 1.
    Other(anyhow::Error),
}

impl EnvError {
    fn nix(message: impl Into<String>) -> Self {
        Self::Nix {
            message: message.into(),
            usage: false,
            status: 1,
        }
    }
}

impl From<ArgsError> for EnvError {
    fn from(error: ArgsError) -> Self {
        Self::Nix {
            usage: error.is_usage(),
            message: error.to_string(),
            status: 1,
        }
    }
}

impl From<ProfileError> for EnvError {
    fn from(error: ProfileError) -> Self {
        Self::nix(error.nix_message())
    }
}

impl From<anyhow::Error> for EnvError {
    fn from(error: anyhow::Error) -> Self {
        Self::Other(error)
    }
}

type EnvResult<T> = Result<T, EnvError>;

/// Prints messages on stderr as Nix does, honouring `-v` and `--quiet`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Say {
    info: bool,
    notice: bool,
    warnings: bool,
}

impl Say {
    fn new(globals: &Globals) -> Self {
        Self {
            info: globals.shows_info(),
            notice: globals.verbosity >= 2,
            warnings: globals.shows_warnings(),
        }
    }

    /// A `printInfo` line.
    pub(crate) fn info(self, message: &str) {
        if self.info {
            anstream::eprintln!("{message}");
        }
    }

    /// A `notice` line.
    pub(crate) fn notice(self, message: &str) {
        if self.notice {
            anstream::eprintln!("{message}");
        }
    }

    /// A `warning:` line.
    pub(crate) fn warn(self, message: &str) {
        if self.warnings {
            anstream::eprintln!("{} {message}", "warning:".yellow().bold());
        }
    }

    /// A `printError` line (printed whatever the verbosity).
    pub(crate) fn error_line(self, message: &str) {
        anstream::eprintln!("{message}");
    }

    /// Nix's wording for a profile message.
    fn profile(self, message: &ProfileMessage) {
        match message {
            ProfileMessage::WaitingForLock { .. }
            | ProfileMessage::WaitingForGc { .. }
            | ProfileMessage::Switching(_)
            | ProfileMessage::Nix(_) => {
                self.info(&message.to_string());
            }
            ProfileMessage::Removing { .. } | ProfileMessage::WouldRemove { .. } => {
                self.notice(&message.to_string());
            }
        }
    }
}

/// What every operation works with.
pub(crate) struct Context<'a> {
    pub(crate) settings: &'a Settings,
    pub(crate) globals: Globals,
    pub(crate) say: Say,
}

/// Runs `nix-env ARGUMENTS` (without the program name) and returns Nix's exit status.
pub(crate) fn run(settings: &Settings, arguments: &[String]) -> ExitCode {
    let parsed = args::parse(arguments);
    for notice in &parsed.notices {
        anstream::eprintln!("{notice}");
    }
    let result = match parsed.result {
        Ok(invocation) => {
            let context = Context {
                settings,
                say: Say::new(&invocation.globals),
                globals: invocation.globals,
            };
            execute(&context, &invocation.command)
        }
        Err(error) => Err(error.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(EnvError::Nix {
            message,
            usage,
            status,
        }) => {
            anstream::eprintln!("{} {message}", "error:".red().bold());
            if usage {
                anstream::eprintln!("Try '{}' for more information.", "nix-env --help");
            }
            ExitCode::from(status)
        }
        Err(EnvError::Other(error)) if super::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(EnvError::Other(error)) => {
            super::report_error(&error);
            ExitCode::from(1)
        }
    }
}

fn execute(context: &Context<'_>, command: &Command) -> EnvResult<()> {
    match command {
        Command::Help => {
            print_stdout(HELP)?;
            Ok(())
        }
        Command::Version => {
            print_stdout(&format!(
                "nix-env (declenv {}) 2.8.0\n",
                env!("CARGO_PKG_VERSION")
            ))?;
            Ok(())
        }
        Command::Query(query) => run_query(context, query),
        Command::ListGenerations => {
            let profile = context.profile()?;
            let generations = profile.list_generations(LockOptions::default(), &mut |message| {
                context.say.profile(message);
            })?;
            print_stdout(&generations.render_list_local())?;
            Ok(())
        }
        Command::Rollback | Command::SwitchGeneration { .. } => switch(context, command),
        Command::DeleteGenerations(policy) => delete_generations(context, policy),
        Command::SwitchProfile { path } => switch_profile(context, path),
        Command::Install(_)
        | Command::Upgrade(_)
        | Command::Uninstall { .. }
        | Command::SetFlag { .. }
        | Command::Set { .. } => write::write(context, command),
    }
}

const HELP: &str = "\
Usage: nix-env OPERATION [OPTIONS] [ARGUMENTS]   (declenv's nix-env compatibility)

Operations:
  -i, --install [-A|--from-profile P] [-P] [-r] ARGS   install packages
  -u, --upgrade [-A] [--lt|--leq|--eq|--always] ARGS   upgrade packages
  -e, --uninstall ARGS                                 uninstall packages
      --set [-A] ARG                                   set the profile to one package
      --set-flag NAME VALUE ARGS                       set a flag (priority, keep or active)
  -q, --query [-a] [-s] [-c] [-P] [-A PATH] [--json|--xml] [--meta] [--no-name]
              [--system] [--drv-path] [--out-path] [--description] ARGS
  -S, --switch-profile PATH
  -G, --switch-generation N
      --rollback
      --list-generations
      --delete-generations old|+N|Nd|N…

Options:
  -p, --profile PATH   the profile (default: declenv's)
  -f, --file PATH      a channel directory or a catalog JSON file
                       (`nix-env -qa --json --out-path --meta`), or on the Nix backend
                       a Nix expression; default: the spec's sources
      --dry-run        show what would change
  -b, --prebuilt-only  only packages already in the store

Writes edit the profile spec (`--file`/`DECLENV_FILE` before `env`, or
~/.config/declenv/profile.toml) and apply it as one generation.
";

fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = anstream::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

impl Context<'_> {
    /// The root, or an error saying how to set one.
    pub(crate) fn root(&self) -> EnvResult<&Path> {
        Ok(self.settings.require_root()?)
    }

    /// The link `-S` writes: declenv's `~/.nix-profile`, or on the Nix backend the user's own.
    pub(crate) fn user_profile_link(&self) -> EnvResult<PathBuf> {
        if self.settings.backend()? == crate::model::spec::BackendKind::Nix
            && let Some(home) = std::env::var_os("HOME").filter(|home| !home.is_empty())
        {
            return Ok(PathBuf::from(home).join(".nix-profile"));
        }
        Ok(self.root()?.join("nix/var/declenv/profile"))
    }

    /// The profile: `-p` (absolute, not resolved through symlinks, as Nix's `absPath`),
    /// declenv's `--profile`, the profile `-S` chose, or `ROOT/nix/var/nix/profiles/default`.
    pub(crate) fn profile_path(&self) -> EnvResult<PathBuf> {
        if let Some(path) = &self.globals.profile {
            return std::path::absolute(path)
                .map_err(|error| EnvError::nix(format!("cannot resolve '{path}': {error}")));
        }
        if self.settings.profile.is_some() {
            return Ok(self.settings.profile_path()?);
        }
        let link = self.user_profile_link()?;
        if let Ok(target) = std::fs::read_link(&link) {
            let directory = link.parent().unwrap_or(Path::new("/"));
            return Ok(directory.join(target));
        }
        Ok(self.settings.profile_path()?)
    }

    /// Whether the profile is declenv's default one (whose directory may be created).
    pub(crate) fn uses_default_profile(&self) -> EnvResult<bool> {
        Ok(self.globals.profile.is_none()
            && self.settings.profile.is_none()
            && std::fs::read_link(self.user_profile_link()?).is_err())
    }

    pub(crate) fn profile(&self) -> EnvResult<Profile> {
        Ok(Profile::new(
            &self.profile_path()?,
            self.settings.profile_layout()?,
        )?)
    }

    /// The store directory of the backend's store, without creating anything.
    pub(crate) fn store_dir(&self) -> EnvResult<StoreDir> {
        if self.settings.backend()? == crate::model::spec::BackendKind::Nix {
            return Ok(self.settings.nix_store()?.store_dir().clone());
        }
        // The canonical store directory, as the store computes paths with (a relative or
        // symlinked `--root` names the same store).
        let path = self.root()?.join("nix/store");
        let path = std::fs::canonicalize(&path)
            .or_else(|_| std::path::absolute(&path))
            .unwrap_or(path);
        StoreDir::new(&path.to_string_lossy())
            .map_err(|error| EnvError::Other(anyhow::Error::new(error)))
    }

    /// The embedded store, if it exists (queries never create it); `None` on the Nix backend,
    /// whose paths are valid when they exist.
    pub(crate) fn existing_store(&self) -> Option<EmbeddedStore> {
        if self.settings.backend != crate::model::spec::BackendKind::Embedded {
            return None;
        }
        let root = self.settings.root.as_deref()?;
        if !root.join("nix/store").is_dir() {
            return None;
        }
        EmbeddedStore::open(root).ok()
    }
}

// ---- the installed and the available packages ---------------------------------------------

/// A manifest element as `nix-env -q` sees it: its index is its attribute path.
pub(crate) fn installed_element(index: usize, element: &ManifestElement) -> Element {
    let outputs = element
        .outputs
        .iter()
        .map(|(name, path)| (name.clone(), Some(path.clone())))
        .collect();
    Element {
        attr_path: index.to_string(),
        name: element.name.clone(),
        system: element
            .system
            .clone()
            .unwrap_or_else(|| "unknown".to_owned()),
        output_name: String::new(),
        outputs,
        out_path: Some(element.out_path.clone()),
        drv_path: element.drv_path.clone(),
        meta: element
            .meta
            .iter()
            .map(|(name, value)| (name.clone(), nix_to_json(value)))
            .collect(),
    }
}

fn nix_to_json(value: &NixValue) -> Value {
    match value {
        NixValue::String(text) => Value::from(text.as_str()),
        NixValue::Int(number) => Value::from(*number),
        NixValue::Float(number) => {
            serde_json::Number::from_f64(*number).map_or(Value::Null, Value::Number)
        }
        NixValue::Bool(flag) => Value::Bool(*flag),
        NixValue::List(items) => Value::Array(items.iter().map(nix_to_json).collect()),
        NixValue::Attrs(members) => Value::Object(
            members
                .iter()
                .map(|(name, value)| (name.clone(), nix_to_json(value)))
                .collect(),
        ),
    }
}

/// The elements of the profile's current generation (`queryInstalled`): empty when the profile
/// does not exist or its generation has no `manifest.nix` (after `--set`, say).
pub(crate) fn read_installed(profile: &Path) -> EnvResult<Vec<ManifestElement>> {
    if profile.join("manifest.json").exists() {
        return Err(EnvError::nix(format!(
            "profile '{}' is incompatible with 'nix-env'; please use 'nix profile' instead",
            profile.display()
        )));
    }
    let path = profile.join("manifest.nix");
    match std::fs::read_to_string(&path) {
        Ok(text) => manifest::parse(&text).map_err(|error| {
            EnvError::Other(
                anyhow::Error::new(error)
                    .context(format!("cannot read the manifest `{}`", path.display())),
            )
        }),
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(Vec::new())
        }
        Err(error) => Err(EnvError::Other(
            anyhow::Error::new(error).context(format!("cannot read `{}`", path.display())),
        )),
    }
}

/// The available packages: one catalog (from `-f`, or the spec's sources) and, per source, the
/// prefix its attribute paths get (`""` for `-f`, `NAME.` for a spec source) and its name in
/// the spec.
pub(crate) struct Available {
    pub(crate) catalog: Catalog,
    pub(crate) prefixes: Vec<String>,
    /// The spec's name of each source (for `-f`, filled in when a write adds it to the spec).
    pub(crate) source_ids: Vec<Option<String>>,
    /// Where each source is, for `-f` (to add it to the spec).
    pub(crate) paths: Vec<PathBuf>,
    /// Indices into the catalog, in enumeration order, after `-A`, `--system-filter`.
    pub(crate) indices: Vec<usize>,
}

/// A view of one available package for selection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AvailableRef<'a> {
    pub(crate) entry: EntryRef<'a>,
    pub(crate) index: usize,
}

impl crate::plan::select::Candidate for AvailableRef<'_> {
    fn full_name(&self) -> &str {
        self.entry.name()
    }
    fn system_or_unknown(&self) -> &str {
        self.entry.system_or_unknown()
    }
    fn selection_priority(&self) -> i64 {
        self.entry.selection_priority()
    }
}

impl Available {
    /// The attribute path an entry shows (with its source's prefix).
    pub(crate) fn attr_path(&self, entry: &EntryRef<'_>) -> String {
        format!("{}{}", self.prefixes[entry.source()], entry.attr_path())
    }

    /// The candidates, in enumeration order.
    pub(crate) fn candidates(&self) -> Vec<AvailableRef<'_>> {
        self.indices
            .iter()
            .map(|&index| AvailableRef {
                entry: self.catalog.get(index),
                index,
            })
            .collect()
    }

    /// Restricts the set to what is under attribute path `path` (`-A`), with Nix's error (and
    /// its "Did you mean" suggestions) when nothing is.
    pub(crate) fn restrict_to_attr(&mut self, path: &str) -> EnvResult<()> {
        let (found, missing, names) = attr_selection(self, path);
        if found.is_empty() {
            let mut message = format!("attribute '{missing}' in selection path '{path}' not found");
            let suggestions = crate::compat::query::suggestions(&missing, &names);
            if !suggestions.is_empty() {
                message.push_str(&format!("\n       Did you mean {suggestions}?"));
            }
            return Err(EnvError::nix(message));
        }
        self.indices = found;
        Ok(())
    }

    /// The columns of an available package a plain table shows (name, attribute path, system,
    /// description), read in place.
    pub(crate) fn light_element(&self, entry: &EntryRef<'_>) -> Element {
        let mut meta = serde_json::Map::new();
        if let Some(description) = entry.description() {
            meta.insert("description".to_owned(), Value::from(description));
        }
        Element {
            attr_path: self.attr_path(entry),
            name: entry.name().to_owned(),
            system: entry.system_or_unknown().to_owned(),
            output_name: String::new(),
            outputs: BTreeMap::new(),
            out_path: None,
            drv_path: None,
            meta,
        }
    }

    /// The element `-q` shows for an available package, with its output paths when asked.
    pub(crate) fn element(
        &self,
        entry: &EntryRef<'_>,
        store_dir: Option<&StoreDir>,
    ) -> EnvResult<Element> {
        let decoded = entry
            .to_entry()
            .ok_or_else(|| EnvError::nix(format!("cannot decode package '{}'", entry.name())))?;
        let mut outputs = BTreeMap::new();
        for (output, path) in &decoded.outputs {
            let path = match (path, decoded.trees.get(output), store_dir) {
                (Some(path), _, _) => Some(path.clone()),
                (None, Some(tree), Some(store_dir)) => Some(tree_store_path(
                    store_dir,
                    Path::new(tree),
                    &decoded.name,
                    output,
                )?),
                _ => None,
            };
            outputs.insert(output.clone(), path);
        }
        let out_path = outputs
            .get("out")
            .cloned()
            .flatten()
            .or_else(|| outputs.values().next().cloned().flatten());
        Ok(Element {
            attr_path: self.attr_path(entry),
            name: decoded.name.clone(),
            system: decoded.system_or_unknown().to_owned(),
            output_name: decoded.output_name.clone(),
            outputs,
            out_path,
            drv_path: None,
            meta: decoded.meta.clone(),
        })
    }
}

/// The store path a shipped tree gets in the embedded store (its NAR hash fixes it).
pub(crate) fn tree_store_path(
    store_dir: &StoreDir,
    tree: &Path,
    name: &str,
    output: &str,
) -> EnvResult<String> {
    let digest = nar::hash_path(tree).map_err(|error| {
        EnvError::Other(anyhow::Error::new(error).context(format!(
            "cannot hash the tree of `{name}` at `{}`",
            tree.display()
        )))
    })?;
    source_store_path(store_dir, &digest.sha256, &output_store_name(name, output))
        .map(|path| path.to_string())
        .map_err(|error| EnvError::Other(anyhow::Error::new(error)))
}

/// The entries under attribute path `path`; the first component that names nothing and the
/// names there are at its level (for the error).
fn attr_selection(available: &Available, path: &str) -> (Vec<usize>, String, Vec<String>) {
    let components: Vec<&str> = path.split('.').collect();
    let mut found = Vec::new();
    let mut deepest = 0;
    let mut paths = Vec::new();
    for &index in &available.indices {
        let attr = available.attr_path(&available.catalog.get(index));
        if attr == path
            || attr
                .strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('.'))
        {
            found.push(index);
            continue;
        }
        let matched = attr
            .split('.')
            .zip(&components)
            .take_while(|(have, want)| have == *want)
            .count();
        deepest = deepest.max(matched);
        paths.push(attr);
    }
    let names: std::collections::BTreeSet<String> = paths
        .iter()
        .filter_map(|attr| {
            let parts: Vec<&str> = attr.split('.').collect();
            (parts.len() > deepest && parts[..deepest] == components[..deepest])
                .then(|| parts[deepest].to_owned())
        })
        .collect();
    let missing = components.get(deepest).copied().unwrap_or(path).to_owned();
    (found, missing, names.into_iter().collect())
}

/// What `-f PATH` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A channel directory.
    Channel,
    /// A catalog JSON file.
    Catalog,
    /// A Nix expression (a `.nix` file, or a directory with a `default.nix`): the Nix backend
    /// has Nix evaluate it.
    Nix,
}

/// Reads `-f PATH`: a channel directory or a catalog JSON file; a Nix expression on the Nix
/// backend (the embedded store has no Nix to evaluate it).
pub(crate) fn file_kind(context: &Context<'_>, path: &Path) -> EnvResult<FileKind> {
    if search_path_entry(path).is_some() {
        if context.settings.backend()? == crate::model::spec::BackendKind::Nix {
            return Ok(FileKind::Nix);
        }
        return Err(EnvError::Other(anyhow::Error::new(super::Hinted {
            message: format!(
                "`{}` is a Nix search-path lookup, which only the Nix backend evaluates",
                path.display()
            ),
            hint: "pass `--backend nix` (or set `backend = \"nix\"` in the spec)".to_owned(),
        })));
    }
    let metadata = std::fs::metadata(path).map_err(|error| {
        EnvError::nix(format!(
            "getting information about '{}': {}",
            path.display(),
            crate::profile::describe_io_error(&error)
        ))
    })?;
    if crate::source::nix::looks_like_expression(path) {
        if context.settings.backend()? == crate::model::spec::BackendKind::Nix {
            return Ok(FileKind::Nix);
        }
        return Err(EnvError::Other(anyhow::Error::new(super::Hinted {
            message: format!(
                "`{}` is a Nix expression, which only the Nix backend evaluates",
                path.display()
            ),
            hint: "pass `--backend nix` (or set `backend = \"nix\"` in the spec), or give `-f` a channel directory or the catalog `nix-env -qa --json --out-path --meta` prints for it".to_owned(),
        })));
    }
    Ok(if metadata.is_dir() {
        FileKind::Channel
    } else {
        FileKind::Catalog
    })
}

/// `nixpkgs` for `-f '<nixpkgs>'`.
pub(crate) fn search_path_entry(path: &Path) -> Option<&str> {
    let text = path.to_str()?;
    text.strip_prefix('<')?
        .strip_suffix('>')
        .filter(|entry| !entry.is_empty())
}

/// Loads the available packages: `-f`, or the sources of the spec (when it exists).
pub(crate) fn load_available(
    context: &Context<'_>,
    spec: Option<&crate::profile::declarative::SpecFile>,
) -> EnvResult<Available> {
    let cache = context.settings.catalog_cache();
    let mut available = if let Some(file) = &context.globals.file {
        let path = if search_path_entry(Path::new(file)).is_some() {
            PathBuf::from(file)
        } else {
            std::path::absolute(file)
                .map_err(|error| EnvError::nix(format!("cannot resolve '{file}': {error}")))?
        };
        let source_error = |error| EnvError::Other(anyhow::Error::new(error));
        let packed = match file_kind(context, &path)? {
            kind @ (FileKind::Channel | FileKind::Catalog) => {
                let kind = if kind == FileKind::Channel {
                    crate::source::SourceKind::Channel
                } else {
                    crate::source::SourceKind::CatalogJson
                };
                crate::source::load_source_identified(&path, kind, &cache)
                    .map_err(source_error)?
                    .0
            }
            FileKind::Nix => {
                crate::source::nix::load_nix_source(
                    file,
                    search_path_entry(&path).map_or(
                        crate::source::nix::Expression::Path(&path),
                        crate::source::nix::Expression::SearchPath,
                    ),
                    &context.settings.nix_store()?,
                    &cache,
                )
                .map_err(source_error)?
                .catalog
            }
        };
        Available {
            catalog: Catalog::from_packed(vec![packed]),
            prefixes: vec![String::new()],
            source_ids: vec![None],
            paths: vec![path],
            indices: Vec::new(),
        }
    } else if let Some(spec) = spec {
        let sources = crate::profile::declarative::load_sources(spec.spec(), &cache)
            .map_err(|error| EnvError::Other(anyhow::Error::new(error)))?;
        Available {
            prefixes: spec
                .spec()
                .sources
                .iter()
                .map(|source| format!("{}.", source.id))
                .collect(),
            source_ids: spec
                .spec()
                .sources
                .iter()
                .map(|source| Some(source.id.clone()))
                .collect(),
            paths: spec
                .spec()
                .sources
                .iter()
                .map(|source| source.path.clone())
                .collect(),
            catalog: sources.catalog,
            indices: Vec::new(),
        }
    } else {
        Available {
            catalog: Catalog::default(),
            prefixes: Vec::new(),
            source_ids: Vec::new(),
            paths: Vec::new(),
            indices: Vec::new(),
        }
    };
    let filter = context.globals.system_filter.as_str();
    available.indices = (0..available.catalog.len())
        .filter(|&index| {
            filter == "*" || available.catalog.get(index).system_or_unknown() == filter
        })
        .collect();
    Ok(available)
}

/// The spec, when it exists (queries read its sources; they never create it).
pub(crate) fn existing_spec(
    context: &Context<'_>,
) -> EnvResult<Option<crate::profile::declarative::SpecFile>> {
    let Ok(path) = context.settings.spec_path() else {
        return Ok(None);
    };
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(
        crate::profile::declarative::SpecFile::read(&path)
            .map_err(|error| EnvError::Other(anyhow::Error::new(error)))?,
    ))
}

/// A selection error in Nix's words.
pub(crate) fn selection_error(error: &SelectionError) -> EnvError {
    EnvError::nix(error.to_string())
}

// ---- queries -------------------------------------------------------------------------------

fn run_query(context: &Context<'_>, query: &QueryArgs) -> EnvResult<()> {
    let profile_path = context.profile_path()?;
    let installed =
        if query.source == QuerySource::Installed || query.compare_versions || query.status {
            read_installed(&profile_path)?
        } else {
            Vec::new()
        };
    let installed_elements: Vec<Element> = installed
        .iter()
        .enumerate()
        .map(|(index, element)| installed_element(index, element))
        .collect();
    let available = if query.source == QuerySource::Available || query.compare_versions {
        let spec = if context.globals.file.is_none() {
            existing_spec(context)?
        } else {
            None
        };
        let mut available = load_available(context, spec.as_ref())?;
        if let Some(attr) = &query.attr {
            available.restrict_to_attr(attr)?;
        }
        Some(available)
    } else {
        None
    };
    let needs_paths = query.status || query.out_path || context.globals.prebuilt_only;
    let store_dir = if needs_paths {
        Some(context.store_dir()?)
    } else {
        None
    };
    let selectors: Vec<&str> = query.selectors.iter().map(String::as_str).collect();
    let system = crate::source::host_system();
    let (elements, other_names): (Vec<Element>, Vec<String>) = match query.source {
        QuerySource::Installed => {
            let refs: Vec<&Element> = installed_elements.iter().collect();
            let selected = filter_by_selectors(&refs, &selectors, false, &system)
                .map_err(|error| selection_error(&error))?;
            let mut indices = selected.indices;
            sort_for_query(&refs, &mut indices);
            let others = available
                .as_ref()
                .map(|available| {
                    available
                        .indices
                        .iter()
                        .map(|&index| available.catalog.get(index).name().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            (
                indices
                    .into_iter()
                    .map(|index| installed_elements[index].clone())
                    .collect(),
                others,
            )
        }
        QuerySource::Available => {
            let available = available
                .as_ref()
                .ok_or_else(|| EnvError::nix("no available packages"))?;
            let candidates = available.candidates();
            let selected = filter_by_selectors(&candidates, &selectors, false, &system)
                .map_err(|error| selection_error(&error))?;
            let mut indices = selected.indices;
            sort_for_query(&candidates, &mut indices);
            // A plain table needs only what the packed catalog reads in place: decoding every
            // row of a large catalog would cost more than the query.
            let light = !(query.json || query.xml || needs_paths);
            let elements = indices
                .into_iter()
                .map(|index| {
                    let entry = &candidates[index].entry;
                    if light {
                        Ok(available.light_element(entry))
                    } else {
                        available.element(entry, store_dir.as_ref())
                    }
                })
                .collect::<EnvResult<Vec<_>>>()?;
            (
                elements,
                installed_elements.iter().map(|e| e.name.clone()).collect(),
            )
        }
    };
    let installed_paths: HashSet<&str> = installed
        .iter()
        .map(|element| element.out_path.as_str())
        .collect();
    let store = if needs_paths {
        context.existing_store()
    } else {
        None
    };
    let valid = |path: Option<&str>| -> bool {
        let Some(path) = path else { return false };
        match &store {
            Some(store) => store
                .parse_path(path)
                .ok()
                .and_then(|parsed| store.is_valid(&parsed).ok())
                .unwrap_or_else(|| {
                    !path.starts_with(store.store_dir().as_str()) && Path::new(path).exists()
                }),
            None => Path::new(path).exists(),
        }
    };
    let mut rows = Vec::new();
    for element in &elements {
        let is_valid = valid(element.out_path.as_deref());
        if context.globals.prebuilt_only && !is_valid {
            continue;
        }
        let status = query.status.then(|| Status {
            installed: element
                .out_path
                .as_deref()
                .is_some_and(|path| installed_paths.contains(path)),
            valid: is_valid,
            substitutable: false,
        });
        let comparison = query
            .compare_versions
            .then(|| query::compare_against(&element.name, other_names.iter().map(String::as_str)));
        rows.push(Row {
            element,
            status,
            comparison,
        });
    }
    if query.json {
        let (json, errors) = query::render_json(&rows, query.out_path, query.meta);
        for error in errors {
            context.say.error_line(&error);
        }
        print_stdout(&json)?;
    } else if query.xml {
        let (xml, errors) = query::render_xml(&rows, query);
        for error in errors {
            context.say.error_line(&error);
        }
        print_stdout(&xml)?;
    } else {
        let terminal = std::io::stdout().is_terminal();
        print_stdout(&query::render_table(&rows, query, terminal))?;
    }
    Ok(())
}

// ---- generations ---------------------------------------------------------------------------

/// `--rollback` and `-G N`. The spec follows the profile: when the generation switched to was
/// built from this spec, its spec and lockfile are written back (as `declenv rollback
/// --restore-spec` does), so the next `-i` starts from what the profile holds, as with Nix.
fn switch(context: &Context<'_>, command: &Command) -> EnvResult<()> {
    let profile = context.profile()?;
    let spec_path = context.settings.spec_path().ok();
    let _edit_lock = match &spec_path {
        Some(path) if !context.globals.dry_run && path.exists() => {
            Some(write::lock_spec(context, path)?)
        }
        _ => None,
    };
    let mut report = |message: &ProfileMessage| context.say.profile(message);
    let switch = match command {
        Command::SwitchGeneration { number } => profile.switch_generation(
            *number,
            context.globals.dry_run,
            LockOptions::default(),
            &mut report,
        )?,
        _ => profile.rollback(context.globals.dry_run, LockOptions::default(), &mut report)?,
    };
    if !context.globals.dry_run
        && let Some(spec_path) = spec_path
    {
        write::restore_spec_of(&profile, switch.to, &spec_path)?;
    }
    Ok(())
}

fn delete_generations(context: &Context<'_>, policy: &DeletePolicy) -> EnvResult<()> {
    let profile = context.profile()?;
    let now = jiff::Timestamp::now().as_second();
    profile.delete_generations(
        policy,
        now,
        context.globals.dry_run,
        LockOptions::default(),
        &mut |message| context.say.profile(message),
    )?;
    Ok(())
}

/// `-S PATH`: declenv's `~/.nix-profile` (`ROOT/nix/var/declenv/profile`) becomes a link to
/// `PATH`, made absolute; no existence check and no lock, as in Nix.
fn switch_profile(context: &Context<'_>, path: &str) -> EnvResult<()> {
    let target = std::path::absolute(path)
        .map_err(|error| EnvError::nix(format!("cannot resolve '{path}': {error}")))?;
    let link = context.user_profile_link()?;
    let directory = link.parent().unwrap_or(Path::new("/"));
    let failed = |error: std::io::Error| {
        EnvError::nix(format!(
            "cannot switch '{}' to '{}': {}",
            link.display(),
            target.display(),
            crate::profile::describe_io_error(&error)
        ))
    };
    std::fs::create_dir_all(directory).map_err(failed)?;
    let temporary = directory.join(format!(".profile.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(&target, &temporary).map_err(failed)?;
    std::fs::rename(&temporary, &link).map_err(|error| {
        let _ = std::fs::remove_file(&temporary);
        failed(error)
    })?;
    Ok(())
}
