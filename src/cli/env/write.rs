//! The writes of `declenv env`: `-i`, `-u`, `-e`, `--set` and `--set-flag` as edits of the
//! profile spec, then lock, plan and apply as one generation.
//!
//! One attempt, under the spec's edit lock (an `flock` on its directory, held from reading the
//! spec to writing it back after the switch, so concurrent writers queue and none loses
//! another's edit):
//!
//! 1. Read the spec (or start one; a profile that already has a generation then has its
//!    elements adopted by store path, so nothing it holds is dropped), lock it in memory and
//!    work out what it installs, in the order of the profile's current `manifest.nix` (entries
//!    the generation does not have yet come last).
//! 2. Run Nix's rules on that list ([`crate::compat::ops`]) and print Nix's lines. `--dry-run`
//!    stops here (except for `--set-flag`, which Nix carries out anyway).
//! 3. Edit the spec through [`crate::model::spec_edit`]: a new package gets its attribute path
//!    (and source, when the spec has several) or store path; a reinstall rewrites the entry in
//!    place; removals drop the entry; flags set keys.
//! 4. Lock the edited spec, plan, order the elements as Nix's manifest would list them, build
//!    and switch (always: Nix rebuilds even when nothing changed, and a new generation appears
//!    only when the result differs from the highest one). Then write the spec and lockfile.
//!    A collision fails with Nix's message and exit status 100, and nothing is written.
//!
//! If the profile moved between step 1 and the switch (another tool switched it), the attempt
//! starts over from the new state, as Nix's optimistic loop does, but reading the profile
//! afresh (Nix 2.8 re-reads a cached manifest and silently undoes the other change).

use super::{
    Available, Context, EnvError, EnvResult, FileKind, file_kind, load_available, read_installed,
    selection_error,
};
use crate::compat::args::{Command, InstallArgs, InstallSource, UpgradeArgs};
use crate::compat::ops::{self, Installed, Line, NewElement, Removal, UpgradeCandidate};
use crate::model::catalog::meta_int;
use crate::model::manifest::{ManifestElement, NixValue};
use crate::model::spec;
use crate::model::spec_edit::{FLAG_KEYS, PackageFields, SpecEditor};
use crate::plan::diff::Side;
use crate::plan::resolve::{ResolveOptions, Update};
use crate::plan::select::filter_by_selectors;
use crate::profile::declarative::{
    self, DeclarativeError, Desired, LockFile, LockMode, SpecFile, lock_path_for,
};
use crate::profile::{Profile, ProfileError};
use crate::store::StoreDir;
use crate::version::split_drv_name;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// How many times a write starts over when the profile moves underneath it.
const ATTEMPTS: usize = 10;

/// The lock that serialises edits of one spec ([`crate::profile::declarative::lock_spec_edits`]),
/// creating the spec's directory first.
pub(crate) fn lock_spec(context: &Context<'_>, spec_path: &Path) -> EnvResult<crate::fs::FileLock> {
    let directory = spec_path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(directory).map_err(|error| {
        EnvError::Other(anyhow::Error::new(error).context(format!(
            "cannot create the directory of the spec `{}`",
            spec_path.display()
        )))
    })?;
    let lock = crate::profile::declarative::lock_spec_edits(spec_path, || {
        context.say.info(&format!(
            "waiting for lock on profile spec '{}'",
            spec_path.display()
        ));
    })
    .map_err(|error| {
        EnvError::Other(
            anyhow::Error::new(error)
                .context(format!("cannot lock the spec `{}`", spec_path.display())),
        )
    })?;
    // The spec and lockfile are written after the switch: a directory they cannot be written
    // to fails here, before anything changes.
    tempfile::tempfile_in(directory).map_err(|error| {
        EnvError::Other(anyhow::Error::new(error).context(format!(
            "cannot write beside the spec `{}`",
            spec_path.display()
        )))
    })?;
    Ok(lock)
}

/// After a switch to generation `number`: writes back the spec and lockfile it was built from,
/// when it was built from the spec at `spec_path` (and they differ from what is there).
pub(crate) fn restore_spec_of(profile: &Profile, number: u32, spec_path: &Path) -> EnvResult<()> {
    let generations = profile.generations_unlocked()?;
    let Some(entry) = generations.entry(number) else {
        return Ok(());
    };
    let Some(record) = profile
        .read_metadata(entry)?
        .and_then(|metadata| metadata.declarative)
    else {
        return Ok(());
    };
    let absolute = std::path::absolute(spec_path).unwrap_or_else(|_| spec_path.to_owned());
    if Path::new(&record.spec_path) != absolute {
        return Ok(());
    }
    let write = |path: &Path, text: &str| -> EnvResult<()> {
        if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
            return Ok(());
        }
        crate::fs::write_atomic(path, text.as_bytes()).map_err(|error| {
            EnvError::Other(
                anyhow::Error::new(error).context(format!("cannot write `{}`", path.display())),
            )
        })
    };
    write(&lock_path_for(&absolute), &record.lock)?;
    write(&absolute, &record.spec)
}

/// Why an attempt stopped.
enum Stop {
    /// The command failed.
    Failed(EnvError),
    /// The profile moved; start over.
    Restart,
}

impl From<EnvError> for Stop {
    fn from(error: EnvError) -> Self {
        Self::Failed(error)
    }
}

impl From<ProfileError> for Stop {
    fn from(error: ProfileError) -> Self {
        Self::Failed(error.into())
    }
}

impl From<anyhow::Error> for Stop {
    fn from(error: anyhow::Error) -> Self {
        Self::Failed(EnvError::Other(error))
    }
}

fn other(error: impl Into<anyhow::Error>) -> Stop {
    Stop::Failed(EnvError::Other(error.into()))
}

/// Runs one write command.
pub(crate) fn write(context: &Context<'_>, command: &Command) -> EnvResult<()> {
    let expressions = match command {
        Command::Install(InstallArgs { source, .. })
        | Command::Upgrade(UpgradeArgs { source, .. })
        | Command::Set { source, .. } => *source == InstallSource::Expressions,
        _ => false,
    };
    if expressions {
        return Err(EnvError::Other(anyhow::Error::new(super::super::Hinted {
            message: "`-E`/`--from-expression` is not supported: an expression given on the \
                      command line has no place in the spec"
                .to_owned(),
            hint: "install by name, by attribute path (`-A`) or by store path".to_owned(),
        })));
    }
    if context.globals.force_name.is_some() {
        context
            .say
            .warn("'--force-name' is ignored: profile.toml names packages by what they are");
    }
    let spec_path = std::path::absolute(context.settings.spec_path()?)
        .map_err(|error| EnvError::Other(error.into()))?;
    let _lock = lock_spec(context, &spec_path)?;
    let mut seen = None;
    for _ in 0..ATTEMPTS {
        match attempt(context, command, &spec_path, &mut seen) {
            Ok(()) => return Ok(()),
            Err(Stop::Failed(error)) => return Err(error),
            Err(Stop::Restart) => {
                let profile = context.profile_path()?;
                context.say.info(&format!(
                    "profile '{}' changed while we were busy; restarting",
                    profile.display()
                ));
            }
        }
    }
    Err(EnvError::nix(format!(
        "profile '{}' kept changing while we were busy; gave up after {ATTEMPTS} attempts",
        context.profile_path()?.display()
    )))
}

/// One installed element: its spec id and what it is.
#[derive(Debug, Clone)]
struct Item {
    id: String,
    element: ManifestElement,
    /// For an element adopted from the profile into a new spec: its entry.
    adopted: Option<PackageFields>,
}

impl Item {
    fn as_installed(&self) -> Installed {
        Installed {
            name: self.element.name.clone(),
            out_path: self.element.out_path.clone(),
            priority: self
                .element
                .meta
                .get("priority")
                .and_then(nix_int)
                .unwrap_or(0),
            keep: matches!(self.element.meta.get("keep"), Some(NixValue::Bool(true)))
                || matches!(self.element.meta.get("keep"), Some(NixValue::String(text)) if text == "true"),
        }
    }
}

/// `queryMetaInt`: an integer, or a string holding one.
fn nix_int(value: &NixValue) -> Option<i64> {
    match value {
        NixValue::Int(number) => Some(*number),
        NixValue::String(text) => meta_int(&serde_json::Value::from(text.as_str())),
        _ => None,
    }
}

/// The flags an element carries as they map onto spec keys.
fn flag_fields(element: &ManifestElement) -> PackageFields {
    let text = |key: &str| match element.meta.get(key) {
        Some(NixValue::String(text)) => Some(text.clone()),
        Some(NixValue::Int(number)) => Some(number.to_string()),
        Some(NixValue::Bool(flag)) => Some(flag.to_string()),
        _ => None,
    };
    PackageFields {
        priority: text("priority").and_then(|text| text.parse().ok()),
        keep: (text("keep").as_deref() == Some("true")).then_some(true),
        active: (text("active").as_deref() == Some("false")).then_some(false),
        ..PackageFields::default()
    }
}

/// A new element's origin.
#[derive(Debug, Clone)]
enum Origin {
    /// A package of the available set (catalog index).
    Catalog(usize),
    /// A store path.
    StorePath(String),
    /// An element of another profile.
    Element(ManifestElement),
}

#[derive(Debug, Clone)]
struct New {
    name: String,
    origin: Origin,
}

/// `-i`'s selection (`queryInstSources` with newest-only): the indices of `candidates` the
/// selectors `args` take, after printing Nix's warnings.
fn newest_selected<C: crate::plan::select::Candidate>(
    candidates: &[C],
    args: &[String],
    say: super::Say,
) -> Result<Vec<usize>, Stop> {
    let selectors: Vec<&str> = args.iter().map(String::as_str).collect();
    let selected = filter_by_selectors(candidates, &selectors, true, &crate::source::host_system())
        .map_err(|error| Stop::Failed(selection_error(&error)))?;
    for warning in &selected.warnings {
        say.warn(warning);
    }
    Ok(selected.indices)
}

/// The state one attempt works on.
struct Work<'a> {
    context: &'a Context<'a>,
    spec_path: PathBuf,
    editor: SpecEditor,
    original_text: Option<String>,
    items: Vec<Item>,
    store_dir: StoreDir,
    /// The spec's source names, and the spec's sources' resolved paths.
    sources: Vec<(String, PathBuf)>,
    /// The available set, loaded on first use.
    available: Option<Available>,
    /// Source names given to sources of the available set (for `-f`).
    available_source_ids: BTreeMap<usize, String>,
}

fn read_spec_text(path: &Path) -> Result<Option<String>, Stop> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(other(
            anyhow::Error::new(error).context(format!("cannot read `{}`", path.display())),
        )),
    }
}

fn resolve_options() -> ResolveOptions {
    ResolveOptions {
        update: Update::Nothing,
        allow_attr_change: false,
        this_system: crate::source::host_system(),
    }
}

/// The spec at `text`, parsed, its sources loaded and locked in memory, and the elements it
/// asks for.
fn lock_text(
    context: &Context<'_>,
    spec_path: &Path,
    text: &str,
    store_dir: &StoreDir,
) -> Result<(SpecFile, Vec<Desired>), Stop> {
    let spec_file = SpecFile {
        path: spec_path.to_owned(),
        parsed: spec::parse(text, spec_path).map_err(other)?,
        text: text.to_owned(),
    };
    let cache = context.settings.catalog_cache();
    let sources = declarative::load_sources(spec_file.spec(), &cache).map_err(other)?;
    let existing_lock = LockFile::read(spec_path).map_err(other)?;
    let locked = declarative::lock(
        &spec_file,
        &sources,
        &existing_lock,
        &resolve_options(),
        LockMode::InMemory,
    )
    .map_err(other)?;
    let desired =
        declarative::desired_elements(spec_file.spec(), &sources, &locked.lockfile, store_dir);
    Ok((spec_file, desired))
}

/// On a restart: what another tool changed in the profile while the attempt before worked
/// (elements of the generation then, `previous`, against those now) is carried into the spec,
/// so the write lands on top of that change. Nix 2.8 re-reads a cached manifest here and
/// silently undoes the other change.
fn carry_over(
    previous: &[Side],
    now: &[Side],
    desired: &[Desired],
    editor: &mut SpecEditor,
) -> bool {
    let mut remaining: Vec<&str> = previous
        .iter()
        .map(|side| side.element.out_path.as_str())
        .collect();
    let mut added = Vec::new();
    for side in now {
        match remaining
            .iter()
            .position(|path| *path == side.element.out_path)
        {
            Some(position) => {
                remaining.remove(position);
            }
            None => added.push(&side.element),
        }
    }
    let mut changed = false;
    let mut used = vec![false; desired.len()];
    for removed in remaining {
        if let Some(position) = desired
            .iter()
            .enumerate()
            .position(|(index, wanted)| !used[index] && wanted.element.out_path == removed)
        {
            used[position] = true;
            changed |= editor.remove_package(&desired[position].id);
        }
    }
    let mut taken: BTreeSet<String> = editor.package_ids().into_iter().collect();
    for element in added {
        if desired
            .iter()
            .enumerate()
            .any(|(index, wanted)| !used[index] && wanted.element.out_path == element.out_path)
        {
            continue;
        }
        let id = unique_id(split_drv_name(&element.name).0, &taken);
        taken.insert(id.clone());
        let mut fields = flag_fields(element);
        fields.store_path = Some(element.out_path.clone());
        editor.set_package(&id, &fields, true);
        changed = true;
    }
    changed
}

fn attempt(
    context: &Context<'_>,
    command: &Command,
    spec_path: &Path,
    seen: &mut Option<Vec<Side>>,
) -> Result<(), Stop> {
    let profile = context.profile()?;
    let original_text = read_spec_text(spec_path)?;
    let backend = context.settings.backend().map_err(Stop::from)?;
    let mut text = original_text
        .clone()
        .unwrap_or_else(|| SpecEditor::new_spec_text(backend));
    let store_dir = context.store_dir()?;
    let (mut spec_file, mut desired) = lock_text(context, spec_path, &text, &store_dir)?;
    for warning in &spec_file.parsed.warnings {
        context.say.warn(&warning.to_string());
    }
    let current = declarative::current_generation(&profile).map_err(other)?;
    if let Some(previous) = seen.take() {
        let mut editor = SpecEditor::parse(&text).map_err(other)?;
        if carry_over(&previous, &current.elements, &desired, &mut editor) {
            text = editor.text();
            (spec_file, desired) = lock_text(context, spec_path, &text, &store_dir)?;
        }
    }
    *seen = Some(current.elements.clone());
    let editor = SpecEditor::parse(&text).map_err(other)?;
    let items = installed_items(&desired, &current, original_text.is_none(), &editor);
    let mut work = Work {
        context,
        spec_path: spec_path.to_owned(),
        editor,
        original_text,
        items,
        store_dir,
        sources: spec_file
            .spec()
            .sources
            .iter()
            .map(|source| (source.id.clone(), source.path.clone()))
            .collect(),
        available: None,
        available_source_ids: BTreeMap::new(),
    };
    let order = match command {
        Command::Install(install) => work.install(install)?,
        Command::Upgrade(upgrade) => work.upgrade(upgrade)?,
        Command::Uninstall { selectors } => work.uninstall(selectors)?,
        Command::SetFlag {
            name,
            value,
            selectors,
        } => work.set_flag(name, value, selectors)?,
        Command::Set { source, args } => work.set(source, args)?,
        _ => return Ok(()),
    };
    let Some(order) = order else {
        return Ok(());
    };
    work.commit(&profile, &order)
}

/// The installed list in the order of the current generation's manifest: spec entries the
/// generation holds (by id, else by output path) in its order, then entries it does not hold
/// yet. When the spec is new, elements of the generation are adopted (by store path).
fn installed_items(
    desired: &[Desired],
    current: &declarative::Current,
    adopt: bool,
    editor: &SpecEditor,
) -> Vec<Item> {
    let mut used = vec![false; desired.len()];
    let mut items = Vec::new();
    let mut taken: BTreeSet<String> = editor.package_ids().into_iter().collect();
    for side in &current.elements {
        let position = side
            .id
            .as_ref()
            .and_then(|id| {
                desired
                    .iter()
                    .enumerate()
                    .position(|(index, wanted)| !used[index] && &wanted.id == id)
            })
            .or_else(|| {
                desired.iter().enumerate().position(|(index, wanted)| {
                    !used[index] && wanted.element.out_path == side.element.out_path
                })
            });
        if let Some(position) = position {
            used[position] = true;
            items.push(Item {
                id: desired[position].id.clone(),
                element: desired[position].element.clone(),
                adopted: None,
            });
        } else if adopt {
            let id = unique_id(split_drv_name(&side.element.name).0, &taken);
            taken.insert(id.clone());
            let mut fields = flag_fields(&side.element);
            fields.store_path = Some(side.element.out_path.clone());
            items.push(Item {
                id,
                element: side.element.clone(),
                adopted: Some(fields),
            });
        }
    }
    for (index, wanted) in desired.iter().enumerate() {
        if !used[index] {
            items.push(Item {
                id: wanted.id.clone(),
                element: wanted.element.clone(),
                adopted: None,
            });
        }
    }
    items
}

/// `base`, or `base_2`, `base_3`, … whichever is free.
fn unique_id(base: &str, taken: &BTreeSet<String>) -> String {
    let base = if base.is_empty() { "package" } else { base };
    if !taken.contains(base) {
        return base.to_owned();
    }
    (2..)
        .map(|suffix| format!("{base}_{suffix}"))
        .find(|id| !taken.contains(id))
        .unwrap_or_else(|| base.to_owned())
}

/// `path` as the spec should name it: relative to the spec's directory when under it.
fn spec_relative(path: &Path, spec_directory: &Path) -> String {
    match path.strip_prefix(spec_directory) {
        Ok(rest)
            if rest
                .components()
                .all(|component| matches!(component, std::path::Component::Normal(_))) =>
        {
            let text = rest.to_string_lossy().into_owned();
            if text.is_empty() {
                ".".to_owned()
            } else {
                text
            }
        }
        _ => path.to_string_lossy().into_owned(),
    }
}

impl Work<'_> {
    fn say(&self) -> super::Say {
        self.context.say
    }

    fn installed(&self) -> Vec<Installed> {
        self.items.iter().map(Item::as_installed).collect()
    }

    /// The available set (`-f`, or the spec's sources).
    fn available(&mut self) -> Result<&Available, Stop> {
        if self.available.is_none() {
            let spec = SpecFile {
                path: self.spec_path.clone(),
                text: self.editor.text(),
                parsed: spec::parse(&self.editor.text(), &self.spec_path).map_err(other)?,
            };
            self.available = Some(load_available(self.context, Some(&spec))?);
        }
        Ok(self.available.as_ref().expect("just loaded"))
    }

    /// Nix's `isPrebuilt`: the element's output path is valid in the store (declenv has no
    /// substituters; on the Nix backend, Nix's substituters are not asked either).
    fn is_prebuilt(&mut self, origin: &Origin) -> Result<bool, Stop> {
        let Some(path) = self.out_path_of(origin)? else {
            return Ok(false);
        };
        let store = self.context.existing_store();
        let valid_in_store = match &store {
            Some(store) => store
                .parse_path(&path)
                .ok()
                .and_then(|parsed| store.is_valid(&parsed).ok())
                .unwrap_or(false),
            // Nix's store: a path there exists only while it is valid (as `-qs` reads it).
            None => {
                self.context.settings.backend == crate::model::spec::BackendKind::Nix
                    && Path::new(&path).exists()
            }
        };
        Ok(valid_in_store
            || (!path.starts_with(self.store_dir.as_str()) && Path::new(&path).exists()))
    }

    /// `-b`: drops new elements that are not prebuilt (after choosing the newest, as Nix does).
    fn prebuilt_only(&mut self, new: Vec<New>) -> Result<Vec<New>, Stop> {
        if !self.context.globals.prebuilt_only {
            return Ok(new);
        }
        let mut kept = Vec::new();
        for element in new {
            if self.is_prebuilt(&element.origin)? {
                kept.push(element);
            }
        }
        Ok(kept)
    }

    /// The new elements `-i` and `--set` take (`queryInstSources` with newest-only).
    fn new_elements(&mut self, source: &InstallSource, args: &[String]) -> Result<Vec<New>, Stop> {
        let say = self.say();
        match source {
            InstallSource::Selectors => {
                let available = self.available()?;
                let candidates = available.candidates();
                Ok(newest_selected(&candidates, args, say)?
                    .into_iter()
                    .map(|index| New {
                        name: candidates[index].entry.name().to_owned(),
                        origin: Origin::Catalog(candidates[index].index),
                    })
                    .collect())
            }
            InstallSource::AttrPaths => self.attr_elements(args),
            InstallSource::StorePaths => args
                .iter()
                .map(|arg| {
                    let path = self.store_path_of(arg)?;
                    Ok(New {
                        name: store_name(&path).to_owned(),
                        origin: Origin::StorePath(path),
                    })
                })
                .collect(),
            InstallSource::Profile(path) => {
                let profile = std::path::absolute(path).map_err(other)?;
                let elements = read_installed(&profile)?;
                let refs: Vec<crate::compat::query::Element> = elements
                    .iter()
                    .enumerate()
                    .map(|(index, element)| super::installed_element(index, element))
                    .collect();
                Ok(newest_selected(&refs, args, say)?
                    .into_iter()
                    .map(|index| New {
                        name: elements[index].name.clone(),
                        origin: Origin::Element(elements[index].clone()),
                    })
                    .collect())
            }
            InstallSource::Expressions => Ok(Vec::new()),
        }
    }

    /// `-A PATH…`: every package under each attribute path, in enumeration order.
    fn attr_elements(&mut self, args: &[String]) -> Result<Vec<New>, Stop> {
        let available = self.available()?;
        let mut new = Vec::new();
        for arg in args {
            let mut restricted = Available {
                catalog: available.catalog.clone(),
                prefixes: available.prefixes.clone(),
                source_ids: available.source_ids.clone(),
                paths: available.paths.clone(),
                indices: available.indices.clone(),
            };
            restricted.restrict_to_attr(arg)?;
            for index in restricted.indices {
                new.push(New {
                    name: available.catalog.get(index).name().to_owned(),
                    origin: Origin::Catalog(index),
                });
            }
        }
        Ok(new)
    }

    /// Nix's `followLinksToStorePath`: follows symlinks until the path is in the store, then
    /// takes its store path.
    fn store_path_of(&self, argument: &str) -> Result<String, Stop> {
        let store = PathBuf::from(self.store_dir.as_str());
        let mut path = std::path::absolute(argument).map_err(other)?;
        loop {
            if path.starts_with(&store) && path != store {
                break;
            }
            match std::fs::symlink_metadata(&path) {
                Ok(metadata) if metadata.file_type().is_symlink() => {
                    let target = std::fs::read_link(&path).map_err(other)?;
                    let directory = path.parent().unwrap_or(Path::new("/")).to_owned();
                    path = normalize(&directory.join(target));
                }
                Ok(_) => break,
                Err(error) => {
                    return Err(Stop::Failed(EnvError::nix(format!(
                        "getting status of '{}': {}",
                        path.display(),
                        crate::profile::describe_io_error(&error)
                    ))));
                }
            }
        }
        let Ok(rest) = path.strip_prefix(&store) else {
            return Err(Stop::Failed(EnvError::nix(format!(
                "path '{}' is not in the Nix store",
                path.display()
            ))));
        };
        let Some(first) = rest.components().next() else {
            return Err(Stop::Failed(EnvError::nix(format!(
                "path '{}' is not in the Nix store",
                path.display()
            ))));
        };
        Ok(store.join(first).to_string_lossy().into_owned())
    }

    /// The spec's name of the source an available package comes from (declaring `-f` as a new
    /// source the first time).
    fn source_id_of(&mut self, source: usize) -> Result<String, Stop> {
        if let Some(id) = self.available_source_ids.get(&source) {
            return Ok(id.clone());
        }
        let available = self.available()?;
        if let Some(Some(id)) = available.source_ids.get(source) {
            let id = id.clone();
            self.available_source_ids.insert(source, id.clone());
            return Ok(id);
        }
        let path = available.paths[source].clone();
        let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        let existing = self.sources.iter().find(|(_, source_path)| {
            std::fs::canonicalize(source_path).unwrap_or_else(|_| source_path.clone()) == canonical
        });
        let id = if let Some((id, _)) = existing {
            id.clone()
        } else {
            let stem = super::search_path_entry(&path).map_or_else(
                || {
                    path.file_stem()
                        .map(|stem| stem.to_string_lossy().into_owned())
                        .unwrap_or_default()
                },
                str::to_owned,
            );
            let base: String = stem
                .chars()
                .map(|character| {
                    if character.is_ascii_alphanumeric() || character == '-' || character == '_' {
                        character
                    } else {
                        '_'
                    }
                })
                .collect();
            let taken: BTreeSet<String> = self.editor.source_ids().into_iter().collect();
            let id = unique_id(if base.is_empty() { "source" } else { &base }, &taken);
            let kind = match file_kind(self.context, &path)? {
                FileKind::Channel => "channel",
                FileKind::Catalog => "catalog",
                FileKind::Nix => "nix",
            };
            let directory = self.spec_path.parent().unwrap_or(Path::new("/")).to_owned();
            let written = if super::search_path_entry(&path).is_some() {
                path.to_string_lossy().into_owned()
            } else {
                spec_relative(&path, &directory)
            };
            self.editor.add_source(&id, kind, &written);
            self.sources.push((id.clone(), path));
            id
        };
        self.available_source_ids.insert(source, id.clone());
        Ok(id)
    }

    /// The spec entry for a new element.
    fn fields_for(&mut self, origin: &Origin) -> Result<PackageFields, Stop> {
        match origin {
            Origin::Catalog(index) => {
                let (source, attr, outputs) = {
                    let available = self.available()?;
                    let entry = available.catalog.get(*index);
                    let decoded = entry.to_entry();
                    let outputs = decoded.as_ref().and_then(|decoded| {
                        (decoded.outputs.len() > 1
                            && !decoded.meta.contains_key("outputsToInstall"))
                        .then(|| decoded.outputs.keys().cloned().collect::<Vec<_>>())
                    });
                    (entry.source(), entry.attr_path().to_owned(), outputs)
                };
                let source_id = self.source_id_of(source)?;
                let several = self.editor.source_ids().len() > 1;
                Ok(PackageFields {
                    attr: Some(attr),
                    source: several.then_some(source_id),
                    outputs,
                    ..PackageFields::default()
                })
            }
            Origin::StorePath(path) => Ok(PackageFields {
                store_path: Some(path.clone()),
                ..PackageFields::default()
            }),
            Origin::Element(element) => {
                let mut fields = flag_fields(element);
                fields.store_path = Some(element.out_path.clone());
                Ok(fields)
            }
        }
    }

    /// `-i`. Returns the new order of ids, or `None` under `--dry-run`.
    fn install(&mut self, install: &InstallArgs) -> Result<Option<Vec<String>>, Stop> {
        let new = self.new_elements(&install.source, &install.args)?;
        let new = self.prebuilt_only(new)?;
        let new_elements: Vec<NewElement> = new
            .iter()
            .map(|element| NewElement {
                name: element.name.clone(),
            })
            .collect();
        let outcome = ops::install(
            &self.installed(),
            &new_elements,
            install.preserve_installed,
            install.remove_all,
        );
        for message in &outcome.messages {
            self.say().info(message);
        }
        if self.context.globals.dry_run {
            return Ok(None);
        }
        let mut reusable: Vec<(String, String)> = outcome
            .replaced
            .iter()
            .map(|&index| {
                let item = &self.items[index];
                (
                    split_drv_name(&item.element.name).0.to_owned(),
                    item.id.clone(),
                )
            })
            .collect();
        let kept_ids: Vec<String> = outcome
            .kept
            .iter()
            .map(|&index| self.items[index].id.clone())
            .collect();
        let mut taken: BTreeSet<String> = kept_ids.iter().cloned().collect();
        let mut order = Vec::new();
        for element in &new {
            let package = split_drv_name(&element.name).0;
            let id = match reusable.iter().position(|(name, _)| name == package) {
                Some(position) => reusable.remove(position).1,
                None => unique_id(package, &taken),
            };
            taken.insert(id.clone());
            let fields = self.fields_for(&element.origin)?;
            self.editor.set_package(&id, &fields, true);
            order.push(id);
        }
        for (_, id) in reusable {
            if !taken.contains(&id) {
                self.editor.remove_package(&id);
            }
        }
        // Adopted elements that stay are declared now.
        for &index in &outcome.kept {
            self.declare_adopted(index);
        }
        order.extend(kept_ids);
        Ok(Some(order))
    }

    fn declare_adopted(&mut self, index: usize) {
        if let Some(fields) = self.items[index].adopted.clone() {
            let id = self.items[index].id.clone();
            self.editor.set_package(&id, &fields, true);
        }
    }

    /// `-u`.
    fn upgrade(&mut self, upgrade: &UpgradeArgs) -> Result<Option<Vec<String>>, Stop> {
        let installed = self.installed();
        let system = crate::source::host_system();
        let (mut candidates, origins): (Vec<UpgradeCandidate>, Vec<Origin>) = match &upgrade.source
        {
            InstallSource::Selectors => {
                let available = self.available()?;
                let refs = available.candidates();
                let selectors: Vec<&str> = upgrade.args.iter().map(String::as_str).collect();
                let selected = filter_by_selectors(&refs, &selectors, false, &system)
                    .map_err(|error| Stop::Failed(selection_error(&error)))?;
                selected
                    .indices
                    .into_iter()
                    .map(|index| {
                        let entry = refs[index].entry;
                        (
                            UpgradeCandidate {
                                name: entry.name().to_owned(),
                                priority: entry.selection_priority(),
                                prebuilt: true,
                            },
                            Origin::Catalog(refs[index].index),
                        )
                    })
                    .unzip()
            }
            source => self
                .new_elements(source, &upgrade.args)?
                .into_iter()
                .map(|new| {
                    let priority = match &new.origin {
                        Origin::Element(element) => {
                            element.meta.get("priority").and_then(nix_int).unwrap_or(0)
                        }
                        Origin::Catalog(index) => self.available.as_ref().map_or(0, |available| {
                            available.catalog.get(*index).selection_priority()
                        }),
                        Origin::StorePath(_) => 0,
                    };
                    (
                        UpgradeCandidate {
                            name: new.name.clone(),
                            priority,
                            prebuilt: true,
                        },
                        new.origin,
                    )
                })
                .unzip(),
        };
        if self.context.globals.prebuilt_only {
            for (candidate, origin) in candidates.iter_mut().zip(&origins) {
                candidate.prebuilt = self.is_prebuilt(origin)?;
            }
        }
        // Upgrades respect an entry's version constraint (Nix has none to respect).
        let spec = spec::parse(&self.editor.text(), &self.spec_path).map_err(other)?;
        let constraints: Vec<Option<crate::model::constraint::VersionConstraint>> = self
            .items
            .iter()
            .map(|item| {
                spec.spec
                    .packages
                    .iter()
                    .find(|request| request.id == item.id)
                    .and_then(|request| request.constraint.clone())
            })
            .collect();
        let mut paths: BTreeMap<usize, Option<String>> = BTreeMap::new();
        let mut failure = None;
        let upgrades = ops::upgrade(
            &installed,
            &candidates,
            upgrade.kind,
            self.context.globals.prebuilt_only,
            |element, candidate| {
                constraints[element].as_ref().is_none_or(|constraint| {
                    constraint.matches(split_drv_name(&candidates[candidate].name).1)
                })
            },
            |candidate| {
                if let Some(path) = paths.get(&candidate) {
                    return path.clone();
                }
                let path = match self.out_path_of(&origins[candidate]) {
                    Ok(path) => path,
                    Err(error) => {
                        failure = Some(error);
                        None
                    }
                };
                paths.insert(candidate, path.clone());
                path
            },
        );
        if let Some(error) = failure {
            return Err(error);
        }
        for upgrade in &upgrades {
            self.say().info(&upgrade.message);
        }
        if self.context.globals.dry_run {
            return Ok(None);
        }
        for upgrade in &upgrades {
            let id = self.items[upgrade.installed].id.clone();
            let mut fields = self.fields_for(&origins[upgrade.candidate])?;
            // Flags and the version constraint stay (Nix loses flags on upgrade).
            let kept = flag_fields(&self.items[upgrade.installed].element);
            if self.items[upgrade.installed].adopted.is_some() {
                fields.priority = kept.priority;
                fields.keep = kept.keep;
                fields.active = kept.active;
            }
            let mut keep = vec!["version"];
            if let Some(outputs) = self.editor_outputs(&id)
                && self.origin_has_outputs(&origins[upgrade.candidate], &outputs)?
            {
                fields.outputs = None;
                keep.push("outputs");
            }
            self.editor.set_package_keeping(&id, &fields, false, &keep);
        }
        for index in 0..self.items.len() {
            if !upgrades.iter().any(|upgrade| upgrade.installed == index) {
                self.declare_adopted(index);
            }
        }
        Ok(Some(
            self.items.iter().map(|item| item.id.clone()).collect(),
        ))
    }

    /// The `outputs` an entry lists, if it lists them.
    fn editor_outputs(&self, id: &str) -> Option<Vec<String>> {
        let text = self.editor.text();
        let parsed = spec::parse(&text, &self.spec_path).ok()?;
        parsed
            .document
            .packages
            .get(id)
            .and_then(|package| package.outputs.clone())
    }

    fn origin_has_outputs(&mut self, origin: &Origin, outputs: &[String]) -> Result<bool, Stop> {
        Ok(match origin {
            Origin::Catalog(index) => {
                let available = self.available()?;
                let entry = available.catalog.get(*index).to_entry();
                entry.is_some_and(|entry| {
                    outputs
                        .iter()
                        .all(|output| entry.outputs.contains_key(output))
                })
            }
            Origin::StorePath(_) | Origin::Element(_) => false,
        })
    }

    /// The `outPath` a new element would have.
    fn out_path_of(&mut self, origin: &Origin) -> Result<Option<String>, Stop> {
        match origin {
            Origin::Catalog(index) => {
                let store_dir = self.store_dir.clone();
                let available = self.available()?;
                let entry = available.catalog.get(*index);
                Ok(available.element(&entry, Some(&store_dir))?.out_path)
            }
            Origin::StorePath(path) => Ok(Some(path.clone())),
            Origin::Element(element) => Ok(Some(element.out_path.clone())),
        }
    }

    /// `-e`.
    fn uninstall(&mut self, selectors: &[String]) -> Result<Option<Vec<String>>, Stop> {
        let mut removals = Vec::new();
        for selector in selectors {
            removals.push(if selector.contains('/') {
                Removal::Path(self.store_path_of(selector)?)
            } else {
                Removal::Selector(selector.clone())
            });
        }
        let outcome = ops::uninstall(&self.installed(), &removals)
            .map_err(|error| Stop::Failed(EnvError::nix(error.to_string())))?;
        for line in &outcome.lines {
            match line {
                Line::Info(message) => self.say().info(message),
                Line::Warning(message) => self.say().warn(message),
            }
        }
        if self.context.globals.dry_run {
            return Ok(None);
        }
        for &index in &outcome.removed {
            let id = self.items[index].id.clone();
            self.editor.remove_package(&id);
        }
        for &index in &outcome.remaining {
            self.declare_adopted(index);
        }
        Ok(Some(
            outcome
                .remaining
                .iter()
                .map(|&index| self.items[index].id.clone())
                .collect(),
        ))
    }

    /// `--set-flag NAME VALUE SELECTOR…` (carried out under `--dry-run` too, as in Nix).
    fn set_flag(
        &mut self,
        name: &str,
        value: &str,
        selectors: &[String],
    ) -> Result<Option<Vec<String>>, Stop> {
        let toml_value = match name {
            "priority" => match meta_int(&serde_json::Value::from(value)) {
                Some(priority) => toml_edit::Value::from(priority),
                None => {
                    return Err(other(super::super::Hinted {
                        message: format!(
                            "`--set-flag priority {value}`: the priority must be an integer"
                        ),
                        hint: "Nix 2.8 would store it and then fail to build the environment; lower numbers win, the default is 5".to_owned(),
                    }));
                }
            },
            "keep" => toml_edit::Value::from(value == "true"),
            "active" => toml_edit::Value::from(value != "false"),
            _ => {
                return Err(other(super::super::Hinted {
                    message: format!(
                        "`--set-flag {name}`: profile.toml keeps only the flags {}",
                        FLAG_KEYS.join(", ")
                    ),
                    hint:
                        "nix-env reads no other flag; set the package's meta in its source instead"
                            .to_owned(),
                }));
            }
        };
        let outcome = ops::set_flag(&self.installed(), selectors)
            .map_err(|error| Stop::Failed(selection_error(&error)))?;
        for message in &outcome.messages {
            self.say().info(message);
        }
        for index in 0..self.items.len() {
            self.declare_adopted(index);
        }
        for &index in &outcome.flagged {
            let id = self.items[index].id.clone();
            self.editor.set_key(&id, name, toml_value.clone());
        }
        Ok(Some(
            self.items.iter().map(|item| item.id.clone()).collect(),
        ))
    }

    /// `--set`: the profile holds exactly one package.
    fn set(
        &mut self,
        source: &InstallSource,
        args: &[String],
    ) -> Result<Option<Vec<String>>, Stop> {
        let new = self.new_elements(source, args)?;
        let new = self.prebuilt_only(new)?;
        let [element] = new.as_slice() else {
            return Err(Stop::Failed(EnvError::nix(
                "--set requires exactly one derivation",
            )));
        };
        if self.context.globals.dry_run {
            return Ok(None);
        }
        let previous = self.editor.package_ids();
        let id = unique_id(
            split_drv_name(&element.name).0,
            &previous.iter().cloned().collect(),
        );
        let fields = self.fields_for(&element.origin)?;
        // Added first, so that the comments of the entries removed next can move onto it.
        self.editor.set_package(&id, &fields, true);
        for old in previous {
            self.editor.remove_package(&old);
        }
        Ok(Some(vec![id]))
    }

    /// Locks the edited spec, plans, builds and switches; then writes the spec and lockfile.
    fn commit(self, profile: &Profile, order: &[String]) -> Result<(), Stop> {
        let context = self.context;
        let text = self.editor.text();
        let spec_file = SpecFile {
            path: self.spec_path.clone(),
            parsed: spec::parse(&text, &self.spec_path).map_err(other)?,
            text: text.clone(),
        };
        let cache = context.settings.catalog_cache();
        let sources = declarative::load_sources(spec_file.spec(), &cache).map_err(other)?;
        let existing = LockFile::read(&self.spec_path).map_err(other)?;
        let mut locked = declarative::lock(
            &spec_file,
            &sources,
            &existing,
            &resolve_options(),
            LockMode::InMemory,
        )
        .map_err(other)?;
        if context.uses_default_profile()?
            && let Some(parent) = profile.path().parent()
        {
            std::fs::create_dir_all(parent).map_err(other)?;
        }
        let store = context.settings.open_store().map_err(Stop::from)?;
        let mut planned =
            declarative::make_plan(profile, &spec_file, &sources, &locked, store.store_dir())
                .map_err(|error| {
                    declarative_stop(error, &spec_file, &sources, &locked, store.store_dir())
                })?;
        planned.desired.sort_by_key(|wanted| {
            order
                .iter()
                .position(|id| *id == wanted.id)
                .unwrap_or(usize::MAX)
        });
        let scratch = context.root()?.join("nix/var/declenv/tmp");
        let applied = declarative::apply(
            declarative::Target {
                store: store.target(),
                profile,
                scratch: &scratch,
            },
            &spec_file,
            &locked,
            &planned,
            &mut |_| {},
            &mut |message| context.say.profile(message),
        )
        .map_err(|error| {
            declarative_stop(error, &spec_file, &sources, &locked, store.store_dir())
        })?;
        for warning in &applied.warnings {
            context.say.warn(warning);
        }
        if self.original_text.as_deref() != Some(text.as_str()) {
            crate::fs::write_atomic(&self.spec_path, text.as_bytes()).map_err(|error| {
                other(anyhow::Error::new(error).context(format!(
                    "cannot write `{}`; generation {} is current all the same (`declenv \
                     rollback` goes back to the generation before)",
                    self.spec_path.display(),
                    applied.generation.number
                )))
            })?;
        }
        declarative::write_lockfile(&mut locked, &lock_path_for(&self.spec_path)).map_err(other)?;
        Ok(())
    }
}

/// A store path's name (after `HASH-`).
fn store_name(path: &str) -> &str {
    let base = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path);
    base.split_once('-').map_or(base, |(_, name)| name)
}

/// `path` with `.` and `..` resolved lexically (as Nix's `absPath` + `canonPath` do).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(part) => out.push(part),
            _ => {}
        }
    }
    out
}

/// What a failed plan or apply means for `nix-env`: a collision is Nix's build failure (exit
/// status 100, Nix's message with the store paths of the two files), a moved profile starts
/// the attempt over, anything else is declenv's error.
fn declarative_stop(
    error: DeclarativeError,
    spec_file: &SpecFile,
    sources: &declarative::Sources,
    locked: &declarative::Locked,
    store_dir: &StoreDir,
) -> Stop {
    match error {
        DeclarativeError::Profile(ProfileError::Changed { .. }) => Stop::Restart,
        DeclarativeError::Profile(error) => Stop::Failed(error.into()),
        DeclarativeError::Collision {
            first,
            second,
            file,
            priority,
            ids,
        } => {
            let desired = declarative::desired_elements(
                spec_file.spec(),
                sources,
                &locked.lockfile,
                store_dir,
            );
            let path_of = |id: &str, fallback: &str| -> String {
                desired
                    .iter()
                    .find(|wanted| wanted.id == id)
                    .and_then(|wanted| {
                        wanted.element.outputs.iter().find_map(|(output, path)| {
                            let tree = wanted
                                .outputs
                                .get(output)
                                .and_then(|(_, tree)| tree.clone());
                            let root = tree.unwrap_or_else(|| PathBuf::from(path));
                            std::fs::symlink_metadata(root.join(&file))
                                .is_ok()
                                .then(|| format!("{path}/{file}"))
                        })
                    })
                    .unwrap_or_else(|| fallback.to_owned())
            };
            let (one, two) = match &ids {
                Some((a, b)) => (path_of(a, &first), path_of(b, &second)),
                None => (first, second),
            };
            // Nix links the lower store path first and names the later one first.
            let (earlier, later) = if one <= two { (one, two) } else { (two, one) };
            Stop::Failed(EnvError::Nix {
                message: format!(
                    "packages '{later}' and '{earlier}' have the same priority {priority}; use 'nix-env --set-flag priority NUMBER INSTALLED_PKGNAME' to change the priority of one of the conflicting packages (0 being the highest priority)"
                ),
                usage: false,
                status: super::BUILD_FAILED,
            })
        }
        DeclarativeError::Build(error) => match *error {
            crate::profile::build::BuildError::Layout(layout) => Stop::Failed(EnvError::Nix {
                message: layout.to_string(),
                usage: false,
                status: super::BUILD_FAILED,
            }),
            other_error => other(DeclarativeError::Build(Box::new(other_error))),
        },
        DeclarativeError::Layout(layout) => Stop::Failed(EnvError::Nix {
            message: layout.to_string(),
            usage: false,
            status: super::BUILD_FAILED,
        }),
        error => other(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_made_unique() {
        let taken: BTreeSet<String> = ["foo", "foo_2"].map(str::to_owned).into();
        assert_eq!(unique_id("foo", &taken), "foo_3");
        assert_eq!(unique_id("bar", &taken), "bar");
        assert_eq!(unique_id("", &taken), "package");
    }

    #[test]
    fn store_names_and_paths() {
        assert_eq!(store_name("/nix/store/abc-foo-1.0"), "foo-1.0");
        assert_eq!(store_name("/nix/store/abc-foo-1.0/"), "foo-1.0");
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), Path::new("/a/c/d"));
        assert_eq!(
            spec_relative(Path::new("/home/u/dot/chan"), Path::new("/home/u/dot")),
            "chan"
        );
        assert_eq!(
            spec_relative(Path::new("/srv/chan"), Path::new("/home/u/dot")),
            "/srv/chan"
        );
    }
}
