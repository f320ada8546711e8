//! The declarative cycle on disk: read `profile.toml`, load its sources, lock, compare the
//! locked state with the profile's current generation, and apply a plan as one generation.
//!
//! I/O: every decision is made by [`crate::plan::resolve`] and [`crate::plan::diff`]; this
//! module reads files, hashes trees, writes the lockfile atomically (only when its content
//! changes) and hands the environment to the store and the profile. It never prints.

use super::build::{BuildError, build_environment, collect_trees, packages_of};
use super::generations::{DeclarativeRecord, Profile, ProfileError, ProfileToken, Provenance};
use super::lock::LockOptions;
use super::realise::output_store_name;
use super::{CreatedGeneration, ProfileMessage};
use crate::model::catalog::Catalog;
use crate::model::lockfile::{
    self, LockedOutput, LockedPackage, LockedSource, Lockfile, LockfileError,
};
use crate::model::manifest::{self, ManifestElement, ManifestError, NixValue};
use crate::model::spec::{self, Parsed, SourceKind, Spec, SpecError};
use crate::plan::diff::{self, Change, ChangeKind, Diff, Side};
use crate::plan::layout::{self, LayoutError};
use crate::plan::resolve::{self, Decision, HeldBack, ResolveError, ResolveOptions};
use crate::source::nix::{Expression as NixExpression, load_nix_source};
use crate::source::{CacheDirectory, SourceError};
use crate::store::nix::{NixError, NixStore, TreeToAdd};
use crate::store::{
    BinaryCache, EmbeddedStore, StoreDir, StoreError, TransferError, nar, nixbase32,
    path::source_store_path,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Why the declarative cycle stopped. Every variant names the file or the package.
#[derive(Debug, thiserror::Error)]
pub enum DeclarativeError {
    /// The spec could not be read.
    #[error("cannot read profile spec `{}`", path.display())]
    ReadSpec {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The spec does not parse or validate.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The lockfile could not be read or written.
    #[error("cannot {action} lockfile `{}`", path.display())]
    LockfileIo {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The lockfile is not valid.
    #[error(transparent)]
    Lockfile(#[from] LockfileError),
    /// A source could not be loaded.
    #[error("cannot load source `{id}`")]
    Source {
        /// The source's name.
        id: String,
        /// Why.
        #[source]
        source: Box<SourceError>,
    },
    /// An entry cannot be resolved: reported at the entry's place in the spec, as the spec's own
    /// errors are.
    #[error("profile spec `{}` at line {line}, column {column}: {error}", path.display())]
    Resolve {
        /// The spec.
        path: PathBuf,
        /// 1-based line of the package's entry.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Why (in the message itself, not a cause).
        error: Box<ResolveError>,
    },
    /// A chosen package's tree could not be hashed.
    #[error("cannot hash the tree of package `{id}` at `{}`", path.display())]
    Hash {
        /// The id.
        id: String,
        /// The tree.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<nar::NarError>,
    },
    /// A chosen package has an output that is neither shipped nor named by a store path.
    #[error("package `{id}` (`{package}`): output `{output}` has no tree and no store path")]
    NoPath {
        /// The id.
        id: String,
        /// The full name.
        package: String,
        /// The output.
        output: String,
    },
    /// `--locked` or `--frozen`, and the lockfile would have to change.
    #[error("lockfile `{}` is out of date: {reason}", path.display())]
    Stale {
        /// The file.
        path: PathBuf,
        /// What would change.
        reason: String,
        /// Whether the mode was `--frozen`.
        frozen: bool,
    },
    /// The current generation's manifest could not be read.
    #[error("cannot read the manifest of the current generation at `{}`", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// Why.
        #[source]
        source: ManifestReadError,
    },
    /// Two packages provide the same file at the same priority.
    #[error("packages `{first}` and `{second}` both provide `{file}` with priority {priority}")]
    Collision {
        /// The id (or name) of the package linked first.
        first: String,
        /// The id (or name) of the other.
        second: String,
        /// The file, relative to the profile.
        file: String,
        /// Their shared priority.
        priority: i32,
        /// The spec ids, when both are spec entries.
        ids: Option<(String, String)>,
    },
    /// The layout failed otherwise.
    #[error(transparent)]
    Layout(Box<LayoutError>),
    /// The environment could not be built.
    #[error(transparent)]
    Build(Box<BuildError>),
    /// A package could not be added to the store.
    #[error("cannot add package `{id}` to the store")]
    Store {
        /// The id.
        id: String,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
    /// A tree's content is not what the lockfile recorded.
    #[error(
        "the tree of package `{id}` (output `{output}`) changed since it was locked: expected `{expected}`, found `{found}`"
    )]
    ContentChanged {
        /// The id.
        id: String,
        /// The output.
        output: String,
        /// The path the lockfile gives.
        expected: String,
        /// The path the tree gives now.
        found: String,
    },
    /// Fetching a path from a substituter failed (a damaged cache); nothing of it was
    /// registered.
    #[error("cannot fetch package `{id}` (`{path}`) from substituter `{cache}`")]
    Substitute {
        /// The id.
        id: String,
        /// The store path.
        path: String,
        /// The substituter.
        cache: String,
        /// Why.
        #[source]
        source: Box<TransferError>,
    },
    /// A locked store path is missing and no source ships its tree.
    #[error(
        "package `{id}` is not available: `{path}` does not exist and no source ships its tree"
    )]
    Unavailable {
        /// The id.
        id: String,
        /// The store path.
        path: String,
    },
    /// A Nix command of the Nix backend failed.
    #[error("cannot {action}")]
    Nix {
        /// What was being done (`build the user environment`, …).
        action: String,
        /// What failed.
        #[source]
        source: Box<NixError>,
    },
    /// The spec names binary caches, but the backend in use is Nix's (`--backend nix` over a
    /// spec that does not say).
    #[error("spec `{}` names `substituters`, which the Nix backend does not use", path.display())]
    SubstitutersOnNix {
        /// The spec.
        path: PathBuf,
    },
    /// A saved plan no longer fits.
    #[error("the saved plan `{}` is out of date: {reason}", path.display())]
    StalePlan {
        /// The plan file.
        path: PathBuf,
        /// What moved.
        reason: String,
    },
    /// A generation that does not exist.
    #[error("profile `{}` has no generation {number}", profile.display())]
    NoGeneration {
        /// The profile.
        profile: PathBuf,
        /// The number asked for.
        number: u32,
    },
    /// The profile could not be read or changed.
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

impl From<BuildError> for DeclarativeError {
    fn from(error: BuildError) -> Self {
        Self::Build(Box::new(error))
    }
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestReadError {
    /// I/O.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Parse error.
    #[error(transparent)]
    Parse(#[from] ManifestError),
}

impl DeclarativeError {
    /// A hint for the user, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::ReadSpec { source, .. } if source.kind() == io::ErrorKind::NotFound => Some(
                "write one with `declenv init`, or name yours with `--file` (or `DECLENV_FILE`)"
                    .to_owned(),
            ),
            Self::Spec(error) => error.hint.clone(),
            Self::Lockfile(error) => error.hint(),
            Self::Resolve { error, .. } => error.hint(),
            Self::Stale { frozen: true, .. } => Some(
                "run `declenv lock` to bring the lockfile up to date, or drop `--frozen`"
                    .to_owned(),
            ),
            Self::Stale { .. } => Some(
                "run `declenv lock` to bring the lockfile up to date, or drop `--locked`"
                    .to_owned(),
            ),
            Self::Collision {
                ids: Some((first, second)),
                priority,
                file,
                ..
            } => Some(format!(
                "to keep `{first}`'s `{file}`, set `priority = {}` under `[packages.{first}]` (lower wins); or set it under `[packages.{second}]` to keep that one's",
                priority - 1
            )),
            Self::Collision { priority, .. } => Some(format!(
                "set `priority` to {} or lower on the package to keep (lower wins)",
                priority - 1
            )),
            Self::ContentChanged { id, .. } => Some(format!(
                "run `declenv lock --update {id}` to lock the new content"
            )),
            Self::Unavailable { id, .. } => Some(format!(
                "build or fetch it with Nix, or run `declenv lock --update {id}` to pick what the sources offer now"
            )),
            Self::StalePlan { .. } => Some("run `declenv plan -o FILE` again".to_owned()),
            Self::SubstitutersOnNix { .. } => Some(
                "set `substituters` in `nix.conf` for Nix, or leave `--backend nix` out".to_owned(),
            ),
            Self::Substitute { source, cache, .. } => source.hint().or_else(|| {
                Some(format!(
                    "repair `{cache}`, or remove it from `substituters` to add the package from its source"
                ))
            }),
            Self::Build(error) => error.hint(),
            Self::Profile(error) => error.hint(),
            _ => None,
        }
    }
}

/// The lockfile beside a spec: `profile.toml` → `profile.lock`.
#[must_use]
pub fn lock_path_for(spec_path: &Path) -> PathBuf {
    spec_path.with_extension("lock")
}

/// Takes the lock that serialises every change of one spec and its lockfile (`declenv env`
/// writes, `apply`, `lock`): an `flock` on the spec's directory, which leaves nothing among the
/// user's files (specs that share a directory share it). `waiting` is called once, before
/// blocking, when another process holds it.
pub fn lock_spec_edits(
    spec_path: &Path,
    waiting: impl FnOnce(),
) -> io::Result<crate::fs::FileLock> {
    let directory = match spec_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    crate::fs::lock_directory(directory, waiting)
}

/// `sha256:<hex>` of some bytes.
#[must_use]
pub fn content_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::store::path::hex(&Sha256::digest(bytes)))
}

/// A spec as read from disk.
#[derive(Debug, Clone)]
pub struct SpecFile {
    /// Its absolute path.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// The parsed spec and its warnings.
    pub parsed: Parsed,
}

impl SpecFile {
    /// `error`, placed at its package's entry in this spec.
    fn unresolved(&self, error: ResolveError) -> DeclarativeError {
        let (line, column) = self
            .parsed
            .package_locations
            .get(error.id())
            .map_or((1, 1), |location| location.of(error.fields()));
        DeclarativeError::Resolve {
            path: self.path.clone(),
            line,
            column,
            error: Box::new(error),
        }
    }

    /// Reads and parses the spec at `path`.
    pub fn read(path: &Path) -> Result<Self, DeclarativeError> {
        let path = std::path::absolute(path).map_err(|source| DeclarativeError::ReadSpec {
            path: path.to_owned(),
            source,
        })?;
        let text = std::fs::read_to_string(&path).map_err(|source| DeclarativeError::ReadSpec {
            path: path.clone(),
            source,
        })?;
        let parsed = spec::parse(&text, &path)?;
        Ok(Self { path, text, parsed })
    }

    /// The spec.
    #[must_use]
    pub fn spec(&self) -> &Spec {
        &self.parsed.spec
    }
}

/// The spec's sources, loaded.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Their packages, one catalog source per spec source, in order.
    pub catalog: Catalog,
    /// Their identities, in order.
    pub identities: Vec<String>,
    /// For each source that is a Nix expression, the file or directory it resolved to (what
    /// `nix-build` builds its attributes from); `None` for the others.
    pub expressions: Vec<Option<PathBuf>>,
}

/// Loads every source of `spec`; Nix expressions are evaluated by the Nix the environment
/// selects (through the cache when it has them).
pub fn load_sources(spec: &Spec, cache: &CacheDirectory) -> Result<Sources, DeclarativeError> {
    let mut packed = Vec::new();
    let mut identities = Vec::new();
    let mut expressions = Vec::new();
    let mut nix = None;
    for source in &spec.sources {
        let source_error = |error| DeclarativeError::Source {
            id: source.id.clone(),
            source: Box::new(error),
        };
        let (catalog, identity, expression) = match source.kind {
            SourceKind::Channel | SourceKind::Catalog => {
                let kind = if source.kind == SourceKind::Channel {
                    crate::source::SourceKind::Channel
                } else {
                    crate::source::SourceKind::CatalogJson
                };
                let (catalog, identity) =
                    crate::source::load_source_identified(&source.path, kind, cache)
                        .map_err(source_error)?;
                (catalog, identity, None)
            }
            SourceKind::Nix => {
                let nix = match &mut nix {
                    Some(nix) => nix,
                    None => nix.insert(NixStore::from_environment().map_err(|error| {
                        source_error(crate::source::SourceError::Nix {
                            expression: source.written.clone(),
                            source: Box::new(error),
                        })
                    })?),
                };
                let expression = match source.search_path_entry() {
                    Some(entry) => NixExpression::SearchPath(entry),
                    None => NixExpression::Path(&source.path),
                };
                let loaded = load_nix_source(&source.written, expression, nix, cache)
                    .map_err(source_error)?;
                (loaded.catalog, loaded.identity, Some(loaded.expression))
            }
        };
        packed.push(catalog);
        identities.push(identity);
        expressions.push(expression);
    }
    Ok(Sources {
        catalog: Catalog::from_packed(packed),
        identities,
        expressions,
    })
}

/// How the lockfile may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockMode {
    /// Lock what is new or changed and write the lockfile if its content changes.
    #[default]
    Update,
    /// Fail rather than change the lockfile.
    Locked,
    /// Use the lockfile as it is, without resolving anything; fail if it does not cover the spec.
    Frozen,
    /// Resolve, but neither write nor fail: the caller writes the result.
    InMemory,
}

/// The lockfile on disk, if any.
#[derive(Debug, Clone)]
pub struct LockFile {
    /// Its path.
    pub path: PathBuf,
    /// Its text, if it exists.
    pub text: Option<String>,
    /// Its content.
    pub lockfile: Lockfile,
}

impl LockFile {
    /// Reads the lockfile beside `spec_path` (an absent file is an empty lockfile).
    pub fn read(spec_path: &Path) -> Result<Self, DeclarativeError> {
        let path = lock_path_for(spec_path);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let lockfile = lockfile::parse(&text, &path)?;
                Ok(Self {
                    path,
                    text: Some(text),
                    lockfile,
                })
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Self {
                path,
                text: None,
                lockfile: Lockfile::default(),
            }),
            Err(source) => Err(DeclarativeError::LockfileIo {
                action: "read",
                path,
                source,
            }),
        }
    }
}

/// The outcome of [`lock`].
#[derive(Debug, Clone)]
pub struct Locked {
    /// The lockfile to use.
    pub lockfile: Lockfile,
    /// Its rendered text.
    pub text: String,
    /// Whether it differs from the file on disk.
    pub changed: bool,
    /// Whether it was written.
    pub written: bool,
    /// Ids whose lock entry is new or different.
    pub relocked: Vec<String>,
    /// Ids dropped from the lockfile.
    pub dropped: Vec<String>,
    /// Packages held back from newer versions.
    pub held_back: Vec<HeldBack>,
    /// The lockfile's text when it was read (`None`: there was none): what
    /// [`write_lockfile_if_current`] expects to replace.
    pub base: Option<String>,
}

/// Resolves the spec into a lockfile and writes it when its content changed (in
/// [`LockMode::Update`]).
pub fn lock(
    spec_file: &SpecFile,
    sources: &Sources,
    existing: &LockFile,
    options: &ResolveOptions,
    mode: LockMode,
) -> Result<Locked, DeclarativeError> {
    let spec = spec_file.spec();
    let previous = &existing.lockfile;
    let (lockfile, held_back) = if mode == LockMode::Frozen {
        frozen_check(spec, existing)?;
        let resolution = resolve::resolve(
            spec,
            &sources.catalog,
            previous,
            &ResolveOptions {
                update: resolve::Update::Nothing,
                ..options.clone()
            },
        );
        let held_back = resolution
            .map(|resolution| resolution.held_back)
            .unwrap_or_default();
        (previous.clone(), held_back)
    } else {
        let resolution = resolve::resolve(spec, &sources.catalog, previous, options)
            .map_err(|error| spec_file.unresolved(error))?;
        let mut lockfile = Lockfile::default();
        for (id, decision) in &resolution.decisions {
            let package = match decision {
                Decision::Keep(locked) => locked.clone(),
                Decision::Choose { index, install } => {
                    locked_from_catalog(spec, sources, id, *index, install)?
                }
                Decision::StorePath { path } => locked_store_path(spec, id, path),
            };
            lockfile.packages.insert(id.clone(), package);
        }
        // A source's identity is updated when something is locked from it afresh.
        for (index, source) in spec.sources.iter().enumerate() {
            let used = lockfile
                .packages
                .values()
                .any(|package| package.source.as_ref() == Some(&source.id));
            if !used {
                continue;
            }
            let relocked_from_it = lockfile.packages.iter().any(|(id, package)| {
                package.source.as_ref() == Some(&source.id)
                    && previous.packages.get(id) != Some(package)
            });
            let locked_source = match previous.sources.get(&source.id) {
                Some(old) if !relocked_from_it && old.path == source.written => old.clone(),
                _ => LockedSource {
                    kind: source.kind,
                    path: source.written.clone(),
                    identity: sources.identities[index].clone(),
                },
            };
            lockfile.sources.insert(source.id.clone(), locked_source);
        }
        (lockfile, resolution.held_back)
    };
    let text = lockfile::render(&lockfile);
    let changed = existing.text.as_deref() != Some(text.as_str());
    let relocked: Vec<String> = lockfile
        .packages
        .iter()
        .filter(|(id, package)| previous.packages.get(*id) != Some(*package))
        .map(|(id, _)| id.clone())
        .collect();
    let dropped: Vec<String> = previous
        .packages
        .keys()
        .filter(|id| !lockfile.packages.contains_key(*id))
        .cloned()
        .collect();
    if changed && mode == LockMode::Locked {
        let mut reasons = Vec::new();
        if existing.text.is_none() {
            reasons.push("it does not exist".to_owned());
        }
        if !relocked.is_empty() {
            reasons.push(format!("would lock {}", quoted(&relocked)));
        }
        if !dropped.is_empty() {
            reasons.push(format!("would drop {}", quoted(&dropped)));
        }
        if reasons.is_empty() {
            reasons.push("its sources or formatting would change".to_owned());
        }
        return Err(DeclarativeError::Stale {
            path: existing.path.clone(),
            reason: reasons.join("; "),
            frozen: false,
        });
    }
    let written = changed && mode == LockMode::Update;
    if written {
        crate::fs::write_atomic(&existing.path, text.as_bytes()).map_err(|source| {
            DeclarativeError::LockfileIo {
                action: "write",
                path: existing.path.clone(),
                source,
            }
        })?;
    }
    Ok(Locked {
        lockfile,
        text,
        changed,
        written,
        relocked,
        dropped,
        held_back,
        base: existing.text.clone(),
    })
}

/// Writes a lockfile that [`lock`] resolved in [`LockMode::InMemory`], if its content differs
/// from the file on disk, and records that it did. `plan` and `apply` lock in memory and write
/// only once the plan built on the lockfile succeeded, so an error (a collision, say) leaves
/// the lockfile as it was.
pub fn write_lockfile(locked: &mut Locked, path: &Path) -> Result<(), DeclarativeError> {
    if locked.changed && !locked.written {
        crate::fs::write_atomic(path, locked.text.as_bytes()).map_err(|source| {
            DeclarativeError::LockfileIo {
                action: "write",
                path: path.to_owned(),
                source,
            }
        })?;
        locked.written = true;
    }
    Ok(())
}

/// Writes the lockfile [`lock`] resolved in memory, as [`write_lockfile`] does, but only if the
/// spec and the lockfile on disk are still the ones it was resolved from: checked and written
/// under the spec's edit lock ([`lock_spec_edits`]; `waiting` is called if another command
/// holds it), so that a command that read them before a `declenv env` write replaced them
/// never brings back an older lockfile. Returns `false`, writing nothing, when they moved: the
/// newer files stand, and the next run locks from them.
pub fn write_lockfile_if_current(
    locked: &mut Locked,
    spec_file: &SpecFile,
    waiting: impl FnOnce(),
) -> Result<bool, DeclarativeError> {
    if !locked.changed || locked.written {
        return Ok(true);
    }
    let path = lock_path_for(&spec_file.path);
    let io_error = |action, source| DeclarativeError::LockfileIo {
        action,
        path: path.clone(),
        source,
    };
    let _edit_lock =
        lock_spec_edits(&spec_file.path, waiting).map_err(|source| io_error("lock", source))?;
    let spec_now = std::fs::read(&spec_file.path).ok();
    let lock_now = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(io_error("read", source)),
    };
    if spec_now.as_deref() != Some(spec_file.text.as_bytes()) || lock_now != locked.base {
        return Ok(false);
    }
    write_lockfile(locked, &path)?;
    Ok(true)
}

fn quoted(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `--frozen`: the lockfile must cover the spec exactly as it is.
fn frozen_check(spec: &Spec, existing: &LockFile) -> Result<(), DeclarativeError> {
    let stale = |reason: String| DeclarativeError::Stale {
        path: existing.path.clone(),
        reason,
        frozen: true,
    };
    if existing.text.is_none() {
        return Err(stale("it does not exist".to_owned()));
    }
    let mut missing = Vec::new();
    let mut changed = Vec::new();
    for request in &spec.packages {
        match existing.lockfile.packages.get(&request.id) {
            None => missing.push(request.id.clone()),
            Some(locked) if locked.entry_hash != request.entry_hash => {
                changed.push(request.id.clone());
            }
            Some(_) => {}
        }
    }
    let extra: Vec<String> = existing
        .lockfile
        .packages
        .keys()
        .filter(|id| !spec.packages.iter().any(|request| &request.id == *id))
        .cloned()
        .collect();
    let mut reasons = Vec::new();
    if !missing.is_empty() {
        reasons.push(format!("it does not lock {}", quoted(&missing)));
    }
    if !changed.is_empty() {
        reasons.push(format!("the spec changed {}", quoted(&changed)));
    }
    if !extra.is_empty() {
        reasons.push(format!(
            "it locks {} the spec no longer has",
            quoted(&extra)
        ));
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(stale(reasons.join("; ")))
    }
}

fn locked_from_catalog(
    spec: &Spec,
    sources: &Sources,
    id: &str,
    index: usize,
    install: &[String],
) -> Result<LockedPackage, DeclarativeError> {
    let entry_ref = sources.catalog.get(index);
    let entry = entry_ref
        .to_entry()
        .ok_or_else(|| DeclarativeError::NoPath {
            id: id.to_owned(),
            package: entry_ref.name().to_owned(),
            output: "out".to_owned(),
        })?;
    let mut outputs = BTreeMap::new();
    for (output, known_path) in &entry.outputs {
        let nar_hash = match entry.trees.get(output) {
            Some(tree) => Some(
                nar::hash_path(Path::new(tree))
                    .map_err(|source| DeclarativeError::Hash {
                        id: id.to_owned(),
                        path: PathBuf::from(tree),
                        source: Box::new(source),
                    })?
                    .to_nix_string(),
            ),
            None => None,
        };
        if nar_hash.is_none() && known_path.is_none() {
            return Err(DeclarativeError::NoPath {
                id: id.to_owned(),
                package: entry.name.clone(),
                output: output.clone(),
            });
        }
        outputs.insert(
            output.clone(),
            LockedOutput {
                nar_hash,
                path: known_path.clone(),
            },
        );
    }
    let request = spec.packages.iter().find(|request| request.id == id);
    Ok(LockedPackage {
        entry_hash: request
            .map(|request| request.entry_hash.clone())
            .unwrap_or_default(),
        source: Some(spec.sources[entry_ref.source()].id.clone()),
        attr_path: Some(entry.attr_path.clone()),
        version: entry.version().to_owned(),
        name: entry.name.clone(),
        system: entry.system.clone(),
        content_hash: LockedPackage::content_hash_of(&outputs),
        outputs,
        install: install.to_vec(),
    })
}

fn locked_store_path(spec: &Spec, id: &str, path: &str) -> LockedPackage {
    let base = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path);
    let name = base.split_once('-').map_or(base, |(_, name)| name);
    let outputs = BTreeMap::from([(
        "out".to_owned(),
        LockedOutput {
            nar_hash: None,
            path: Some(path.to_owned()),
        },
    )]);
    let request = spec.packages.iter().find(|request| request.id == id);
    LockedPackage {
        entry_hash: request
            .map(|request| request.entry_hash.clone())
            .unwrap_or_default(),
        source: None,
        attr_path: None,
        version: crate::version::split_drv_name(name).1.to_owned(),
        name: name.to_owned(),
        system: None,
        content_hash: LockedPackage::content_hash_of(&outputs),
        outputs,
        install: vec!["out".to_owned()],
    }
}

/// One element the profile should hold, with the trees that realise it.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The spec id.
    pub id: String,
    /// The attribute path, if any.
    pub attr_path: Option<String>,
    /// The manifest element.
    pub element: ManifestElement,
    /// Every output's expected store path and, when a source ships it, its tree.
    pub outputs: BTreeMap<String, (String, Option<PathBuf>)>,
    /// The NAR hash the lockfile records for each output that has one (`sha256:<nixbase32>`).
    pub nar_hashes: BTreeMap<String, String>,
    /// The resolved Nix expression it comes from, when its source is one: the Nix backend
    /// builds its outputs as attributes of that expression.
    pub expression: Option<PathBuf>,
    /// The outputs the source, as it is now, still gives the locked store paths: only those
    /// can be built from it (after a source change, building would make other paths).
    pub buildable: std::collections::BTreeSet<String>,
}

/// The store path of a locked output in `store_dir`.
fn output_path(
    store_dir: &StoreDir,
    package: &LockedPackage,
    output: &str,
    locked: &LockedOutput,
) -> Option<String> {
    if let Some(nar_hash) = &locked.nar_hash {
        let digest = nixbase32::decode(nar_hash.strip_prefix("sha256:")?).ok()?;
        let digest: [u8; 32] = digest.try_into().ok()?;
        return source_store_path(
            store_dir,
            &digest,
            &output_store_name(&package.name, output),
        )
        .ok()
        .map(|path| path.to_string());
    }
    locked.path.clone()
}

/// The elements the lockfile asks for, in spec order, with their meta and the spec's flags.
pub fn desired_elements(
    spec: &Spec,
    sources: &Sources,
    lockfile: &Lockfile,
    store_dir: &StoreDir,
) -> Vec<Desired> {
    let mut desired = Vec::new();
    for request in &spec.packages {
        let Some(package) = lockfile.packages.get(&request.id) else {
            continue;
        };
        let source_index = package
            .source
            .as_ref()
            .and_then(|name| spec.sources.iter().position(|source| &source.id == name));
        // Also when a source update moved it to another attribute path: its tree (checked
        // against the locked hash when added) and its meta are still there.
        let entry = source_index
            .and_then(|source| resolve::locked_entry(&sources.catalog, source, package))
            .and_then(|entry| entry.to_entry());
        let mut outputs = BTreeMap::new();
        for (output, locked) in &package.outputs {
            let path = output_path(store_dir, package, output, locked).unwrap_or_default();
            let tree = entry
                .as_ref()
                .and_then(|entry| entry.trees.get(output))
                .map(PathBuf::from);
            outputs.insert(output.clone(), (path, tree));
        }
        let mut meta: BTreeMap<String, NixValue> = entry
            .as_ref()
            .map(|entry| manifest::valid_meta(&entry.meta))
            .unwrap_or_default();
        // Flags are stored as `nix-env --set-flag` stores them: strings.
        if let Some(priority) = request.flags.priority {
            meta.insert(
                "priority".to_owned(),
                NixValue::String(priority.to_string()),
            );
        }
        if let Some(keep) = request.flags.keep {
            meta.insert("keep".to_owned(), NixValue::String(keep.to_string()));
        }
        if let Some(active) = request.flags.active {
            meta.insert("active".to_owned(), NixValue::String(active.to_string()));
        }
        let installed: BTreeMap<String, String> = package
            .install
            .iter()
            .filter_map(|output| {
                outputs
                    .get(output)
                    .map(|(path, _)| (output.clone(), path.clone()))
            })
            .collect();
        let out_path = outputs
            .get("out")
            .or_else(|| outputs.values().next())
            .map(|(path, _)| path.clone())
            .unwrap_or_default();
        let buildable = outputs
            .iter()
            .filter(|(output, (path, _))| {
                entry
                    .as_ref()
                    .and_then(|entry| entry.outputs.get(*output)?.as_deref())
                    == Some(path.as_str())
            })
            .map(|(output, _)| output.clone())
            .collect();
        desired.push(Desired {
            id: request.id.clone(),
            attr_path: package.attr_path.clone(),
            element: ManifestElement {
                name: package.name.clone(),
                out_path,
                outputs: installed,
                system: package.system.clone(),
                meta,
                drv_path: None,
            },
            outputs,
            nar_hashes: package
                .outputs
                .iter()
                .filter_map(|(output, locked)| Some((output.clone(), locked.nar_hash.clone()?)))
                .collect(),
            expression: source_index
                .and_then(|index| sources.expressions.get(index).cloned().flatten()),
            buildable,
        });
    }
    desired
}

/// The profile's current generation: its number, link text and elements (with ids when
/// declenv made it).
#[derive(Debug, Clone, Default)]
pub struct Current {
    /// The generation number, if the profile has one.
    pub generation: Option<u32>,
    /// The profile link's text when read.
    pub token: Option<ProfileToken>,
    /// The profile link's text, for saved plans.
    pub link_text: Option<String>,
    /// Its elements.
    pub elements: Vec<Side>,
    /// The spec and lockfile it was built from, if declenv built it.
    pub record: Option<DeclarativeRecord>,
}

/// Reads the current generation of `profile`.
pub fn current_generation(profile: &Profile) -> Result<Current, DeclarativeError> {
    let token = profile.read_token()?;
    let link_text = token
        .link_text()
        .map(|text| text.to_string_lossy().into_owned());
    if link_text.is_none() {
        return Ok(Current {
            token: Some(token),
            ..Current::default()
        });
    }
    let generations = profile.generations_unlocked()?;
    let generation = generations.current;
    let record = generation
        .and_then(|number| generations.entry(number))
        .map(|entry| profile.read_metadata(entry))
        .transpose()?
        .flatten()
        .and_then(|metadata| metadata.declarative);
    let elements = read_sides(&profile.path().join("manifest.nix"), record.as_ref())?;
    Ok(Current {
        generation,
        token: Some(token),
        link_text,
        elements,
        record,
    })
}

/// The state a plan was made against; a saved plan is applied only while it still holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlanBase {
    /// The profile link's text (absent: the profile had no generation).
    pub profile_link: Option<String>,
    /// The spec file's path.
    pub spec_path: String,
    /// `sha256:<hex>` of the spec file.
    pub spec_hash: String,
    /// `sha256:<hex>` of the lockfile the plan applies.
    pub lock_hash: String,
}

/// Counts by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    /// Additions.
    pub add: usize,
    /// Removals.
    pub remove: usize,
    /// Upgrades.
    pub upgrade: usize,
    /// Downgrades.
    pub downgrade: usize,
    /// Replacements.
    pub replace: usize,
    /// Rebuilds.
    pub rebuild: usize,
    /// Flag-only changes.
    pub flags: usize,
    /// Packages that stay as they are.
    pub unchanged: usize,
}

impl Summary {
    /// Counts the changes of a diff.
    #[must_use]
    pub fn of(diff: &Diff) -> Self {
        let mut summary = Self {
            unchanged: diff.unchanged.len(),
            ..Self::default()
        };
        for change in &diff.changes {
            *match change.kind {
                ChangeKind::Add => &mut summary.add,
                ChangeKind::Remove => &mut summary.remove,
                ChangeKind::Upgrade => &mut summary.upgrade,
                ChangeKind::Downgrade => &mut summary.downgrade,
                ChangeKind::Replace => &mut summary.replace,
                ChangeKind::Rebuild => &mut summary.rebuild,
                ChangeKind::Flags => &mut summary.flags,
            } += 1;
        }
        summary
    }

    /// Whether anything changes.
    #[must_use]
    pub fn has_changes(&self) -> bool {
        self.add
            + self.remove
            + self.upgrade
            + self.downgrade
            + self.replace
            + self.rebuild
            + self.flags
            > 0
    }
}

/// Schema version of plan JSON.
pub const PLAN_SCHEMA_VERSION: u32 = 1;

/// The version of a JSON document's format, so scripts can tell formats apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SchemaVersion {
    /// The version.
    pub version: u32,
}

/// A plan: printed by `declenv plan`, saved with `-o`, applied by `declenv apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "declenv plan")]
pub struct Plan {
    /// The format version of this JSON, 1.
    pub schema: SchemaVersion,
    /// The profile.
    pub profile: String,
    /// The current generation, if any.
    pub generation: Option<u32>,
    /// Whether the current generation was made by something other than declenv (`nix-env`,
    /// another tool): then what it holds beyond the spec is drift the plan undoes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub made_outside: bool,
    /// The state the plan was made against.
    pub base: PlanBase,
    /// The edits.
    pub changes: Vec<Change>,
    /// Counts.
    pub summary: Summary,
    /// Packages held back from newer versions, and why.
    pub held_back: Vec<HeldBack>,
}

impl Plan {
    /// Whether the plan changes anything.
    #[must_use]
    pub fn has_changes(&self) -> bool {
        self.summary.has_changes()
    }

    /// Whether applying it removes, downgrades or replaces something.
    #[must_use]
    pub fn is_destructive(&self) -> bool {
        self.changes
            .iter()
            .any(|change| change.kind.is_destructive())
    }
}

/// Everything a plan was computed from, kept to apply it.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The plan.
    pub plan: Plan,
    /// The elements to build.
    pub desired: Vec<Desired>,
    /// The current generation.
    pub current: Current,
}

/// Compares the locked desired state with the current generation, checking collisions.
pub fn make_plan(
    profile: &Profile,
    spec_file: &SpecFile,
    sources: &Sources,
    locked: &Locked,
    store_dir: &StoreDir,
) -> Result<Planned, DeclarativeError> {
    let current = current_generation(profile)?;
    let desired = desired_elements(spec_file.spec(), sources, &locked.lockfile, store_dir);
    let desired_sides: Vec<Side> = desired
        .iter()
        .map(|wanted| Side {
            id: Some(wanted.id.clone()),
            attr_path: wanted.attr_path.clone(),
            element: wanted.element.clone(),
        })
        .collect();
    let current_sides = current.elements.clone();
    let diff = diff::diff(&current_sides, &desired_sides);
    let summary = Summary::of(&diff);
    if summary.has_changes() {
        check_collisions(&desired)?;
    }
    let plan = Plan {
        schema: SchemaVersion {
            version: PLAN_SCHEMA_VERSION,
        },
        profile: profile.path().to_string_lossy().into_owned(),
        generation: current.generation,
        made_outside: current.generation.is_some() && current.record.is_none(),
        base: PlanBase {
            profile_link: current.link_text.clone(),
            spec_path: spec_file.path.to_string_lossy().into_owned(),
            spec_hash: content_digest(spec_file.text.as_bytes()),
            lock_hash: content_digest(locked.text.as_bytes()),
        },
        changes: diff.changes,
        summary,
        held_back: locked.held_back.clone(),
    };
    Ok(Planned {
        plan,
        desired,
        current,
    })
}

/// Lays out the desired environment from the trees available now (package trees in sources,
/// store paths on disk), so a collision is reported before anything is built.
fn check_collisions(desired: &[Desired]) -> Result<(), DeclarativeError> {
    let mut elements = Vec::new();
    let mut owners: Vec<(String, String)> = Vec::new();
    for wanted in desired {
        let mut element = wanted.element.clone();
        for (output, path) in &mut element.outputs {
            if let Some((_, Some(tree))) = wanted.outputs.get(output)
                && std::fs::symlink_metadata(&*path).is_err()
            {
                *path = tree.to_string_lossy().into_owned();
            }
            if std::fs::symlink_metadata(&*path).is_ok() {
                owners.push((path.clone(), wanted.id.clone()));
            }
        }
        element
            .outputs
            .retain(|_, path| std::fs::symlink_metadata(path).is_ok());
        elements.push(element);
    }
    let packages = packages_of(&elements)?;
    let mut warnings = Vec::new();
    let trees = collect_trees(&packages, &mut warnings)?;
    match layout::layout(&packages, &trees, "/declenv-plan") {
        Ok(_) | Err(LayoutError::MissingPackage { .. }) => Ok(()),
        Err(LayoutError::SamePriority {
            source_path,
            existing_target,
            priority,
            path,
        }) => {
            let owner = |file: &str| {
                owners
                    .iter()
                    .filter(|(root, _)| file == root || file.starts_with(&format!("{root}/")))
                    .max_by_key(|(root, _)| root.len())
                    .map(|(_, id)| id.clone())
            };
            let first = owner(&existing_target);
            let second = owner(&source_path);
            Err(DeclarativeError::Collision {
                first: first.clone().unwrap_or(existing_target),
                second: second.clone().unwrap_or(source_path),
                file: path.to_string(),
                priority,
                ids: first.zip(second),
            })
        }
        Err(error) => Err(DeclarativeError::Layout(Box::new(error))),
    }
}

/// What an apply did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The generation the profile now points at.
    pub generation: CreatedGeneration,
    /// What the builder skipped.
    pub warnings: Vec<String>,
    /// The store paths fetched from each substituter (by its entry in the spec).
    pub fetched: BTreeMap<String, Vec<String>>,
}

/// The store an apply realises packages in and builds the environment with.
#[derive(Debug, Clone, Copy)]
pub enum Store<'a> {
    /// declenv's own store.
    Embedded(&'a EmbeddedStore),
    /// A real Nix store, through Nix's commands.
    Nix(&'a NixStore),
}

impl Store<'_> {
    /// The store directory paths are computed for.
    #[must_use]
    pub fn store_dir(&self) -> &StoreDir {
        match self {
            Self::Embedded(store) => store.store_dir(),
            Self::Nix(store) => store.store_dir(),
        }
    }
}

/// Where an apply acts.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The store packages and the environment go to.
    pub store: Store<'a>,
    /// The profile that gets the new generation.
    pub profile: &'a Profile,
    /// A directory on the store's filesystem for temporary trees.
    pub scratch: &'a Path,
}

/// Refuses a spec whose settings the backend in use cannot honour: `substituters` (the embedded
/// store's binary caches) when the backend is Nix's, chosen by a flag over a spec that does not
/// say (a spec that says `backend = "nix"` cannot have them).
pub fn check_backend(
    spec_file: &SpecFile,
    backend: spec::BackendKind,
) -> Result<(), DeclarativeError> {
    if backend == spec::BackendKind::Nix && !spec_file.spec().substituters.is_empty() {
        return Err(DeclarativeError::SubstitutersOnNix {
            path: spec_file.path.clone(),
        });
    }
    Ok(())
}

/// Realises the desired packages, builds one environment and switches the profile to it as a
/// new generation, refusing if the profile moved since `planned` was made.
pub fn apply(
    target: Target<'_>,
    spec_file: &SpecFile,
    locked: &Locked,
    planned: &Planned,
    progress: &mut dyn FnMut(&str),
    report: &mut dyn FnMut(&ProfileMessage),
) -> Result<Applied, DeclarativeError> {
    let Target {
        store,
        profile,
        scratch,
    } = target;
    if let Store::Nix(_) = store {
        check_backend(spec_file, spec::BackendKind::Nix)?;
    }
    // Held until the generation roots what this adds (or finds valid): no collection between.
    let _gc_lock = profile.hold_gc_lock(LockOptions::default(), report)?;
    let mut ids = BTreeMap::new();
    for wanted in &planned.desired {
        ids.insert(wanted.element.out_path.clone(), wanted.id.clone());
    }
    // The Nix backend's temporary roots, kept until the generation roots the environment.
    let mut temporary_roots = None;
    let (environment, warnings, fetched) = match store {
        Store::Embedded(store) => {
            let (built, fetched) = realise_embedded(store, spec_file, planned, scratch, progress)?;
            (built.path.to_string(), built.warnings, fetched)
        }
        Store::Nix(store) => {
            let (directory, path, warnings) =
                realise_nix(store, planned, scratch, progress, report)?;
            temporary_roots = Some(directory);
            (path, warnings, BTreeMap::new())
        }
    };
    let token = planned
        .current
        .token
        .clone()
        .unwrap_or(profile.read_token()?);
    let generation = profile.commit(
        &token,
        Path::new(&environment),
        &Provenance {
            command: std::env::args().collect(),
            declarative: Some(DeclarativeRecord {
                spec_path: spec_file.path.to_string_lossy().into_owned(),
                spec: spec_file.text.clone(),
                lock: locked.text.clone(),
                ids,
            }),
        },
        LockOptions::default(),
        report,
    )?;
    drop(temporary_roots);
    Ok(Applied {
        generation,
        warnings,
        fetched,
    })
}

/// What [`realise_embedded`] fetched, by substituter.
type Fetched = BTreeMap<String, Vec<String>>;

/// Adds the desired packages to the embedded store (from a substituter, else from their
/// trees) and builds the environment there.
fn realise_embedded(
    store: &EmbeddedStore,
    spec_file: &SpecFile,
    planned: &Planned,
    scratch: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(super::build::BuiltEnvironment, Fetched), DeclarativeError> {
    let mut elements = Vec::new();
    let caches: Vec<BinaryCache> = spec_file
        .spec()
        .substituters
        .iter()
        .map(|substituter| BinaryCache::named(&substituter.written, &substituter.directory))
        .collect();
    let mut fetched = BTreeMap::new();
    for wanted in &planned.desired {
        progress(&wanted.element.name);
        for (output, (expected, tree)) in &wanted.outputs {
            if substitute(store, &caches, &wanted.id, expected, &mut fetched)? {
                continue;
            }
            match tree {
                Some(tree) => {
                    let added = store
                        .add_tree(tree, &output_store_name(&wanted.element.name, output))
                        .map_err(|source| DeclarativeError::Store {
                            id: wanted.id.clone(),
                            source: Box::new(source),
                        })?
                        .to_string();
                    if &added != expected {
                        return Err(DeclarativeError::ContentChanged {
                            id: wanted.id.clone(),
                            output: output.clone(),
                            expected: expected.clone(),
                            found: added,
                        });
                    }
                }
                None => {
                    if std::fs::symlink_metadata(expected).is_err() {
                        return Err(DeclarativeError::Unavailable {
                            id: wanted.id.clone(),
                            path: expected.clone(),
                        });
                    }
                }
            }
        }
        elements.push(wanted.element.clone());
    }
    let built = build_environment(store, &elements, scratch)?;
    Ok((built, fetched))
}

/// The temporary directories of Nix-backend applies: `nix-apply-<pid>-<random>`.
const NIX_APPLY_PREFIX: &str = "nix-apply-";

/// Removes the temporary roots of Nix-backend applies whose process is gone (killed before it
/// could remove them), so that what they kept alive can be collected. A directory whose
/// process still runs, or whose process cannot be told (no `/proc`), is left alone.
pub fn remove_abandoned_roots(scratch: &Path) {
    for entry in crate::fs::entries_of_gone_processes(scratch, NIX_APPLY_PREFIX) {
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// Has Nix realise the desired packages and build the environment in its store, as `nix-env`
/// would: missing outputs of Nix sources that still evaluate to the locked paths are built with
/// `nix-build`; every other path (present already, or only fetchable) is realised by path with
/// `nix-store --realise`, which also roots it; channel trees are added by the environment's own
/// evaluation. Returns the temporary directory whose links root all of it (to be dropped once
/// the generation roots the environment), the environment's store path and Nix's warnings.
fn realise_nix(
    store: &NixStore,
    planned: &Planned,
    scratch: &Path,
    progress: &mut dyn FnMut(&str),
    report: &mut dyn FnMut(&ProfileMessage),
) -> Result<(tempfile::TempDir, String, Vec<String>), DeclarativeError> {
    let nix_error = |action: &str| {
        let action = action.to_owned();
        move |source| DeclarativeError::Nix {
            action,
            source: Box::new(source),
        }
    };
    remove_abandoned_roots(scratch);
    let directory = std::fs::create_dir_all(scratch)
        .and_then(|()| {
            tempfile::Builder::new()
                .prefix(&format!("{NIX_APPLY_PREFIX}{}-", std::process::id()))
                .tempdir_in(scratch)
        })
        .map_err(|source| DeclarativeError::Nix {
            action: "prepare the build".to_owned(),
            source: Box::new(NixError::Write {
                path: scratch.to_owned(),
                source,
            }),
        })?;
    let mut trees = Vec::new();
    // Every installed output that is a store path of its own, with who wants it and how it can
    // be built when it is missing.
    let mut wanted_paths: BTreeMap<&str, (&Desired, &str)> = BTreeMap::new();
    for wanted in &planned.desired {
        progress(&wanted.element.name);
        for output in wanted.element.outputs.keys() {
            let Some((expected, tree)) = wanted.outputs.get(output) else {
                continue;
            };
            match tree {
                Some(tree) => trees.push(TreeToAdd {
                    tree: tree.clone(),
                    name: output_store_name(&wanted.element.name, output),
                    nar_hash: wanted.nar_hashes.get(output).cloned().unwrap_or_default(),
                    path: expected.clone(),
                }),
                None => {
                    wanted_paths.insert(expected, (wanted, output));
                }
            }
        }
    }
    let all_paths: Vec<String> = wanted_paths.keys().map(|path| (*path).to_owned()).collect();
    let missing = store
        .invalid_paths(&all_paths)
        .map_err(nix_error("check which packages are in the store"))?;
    // Missing outputs of Nix sources that still evaluate to the locked paths are built from
    // them; everything else (present, or missing and only fetchable) is realised by path, which
    // roots it too.
    let mut attributes: BTreeMap<&Path, Vec<String>> = BTreeMap::new();
    let mut by_path = Vec::new();
    for (path, (wanted, output)) in &wanted_paths {
        let build =
            missing.iter().any(|missing| missing == path) && wanted.buildable.contains(*output);
        match (&wanted.expression, &wanted.attr_path) {
            (Some(expression), Some(attr_path)) if build => attributes
                .entry(expression)
                .or_default()
                .push(format!("{attr_path}.{output}")),
            _ => by_path.push((*path).to_owned()),
        }
    }
    let unavailable = |path: &str| {
        let id = wanted_paths
            .get(path)
            .map(|(wanted, _)| wanted.id.clone())
            .unwrap_or_default();
        DeclarativeError::Unavailable {
            id,
            path: path.to_owned(),
        }
    };
    for (index, (expression, attributes)) in attributes.iter().enumerate() {
        store
            .build_attributes(
                expression,
                attributes,
                &directory.path().join(format!("built-{index}")),
                &mut |line| report(&ProfileMessage::Nix(line.to_owned())),
            )
            .map_err(nix_error(&format!(
                "build the packages of `{}`",
                expression.display()
            )))?;
    }
    if let Err(error) =
        store.realise_paths(&by_path, &directory.path().join("realised"), &mut |line| {
            report(&ProfileMessage::Nix(line.to_owned()));
        })
    {
        // Name the package whose path Nix could neither find nor fetch, when one is missing.
        let still_missing = store.invalid_paths(&by_path).unwrap_or_default();
        return Err(match still_missing.first() {
            Some(path) => unavailable(path),
            None => nix_error("realise the packages' store paths")(error),
        });
    }
    // What Nix built must be what the lockfile names.
    let invalid = store
        .invalid_paths(&all_paths)
        .map_err(nix_error("check the built packages"))?;
    if let Some(path) = invalid.first() {
        return Err(unavailable(path));
    }
    // The plan could only look into packages already in the store; now every one is, so a
    // collision is reported as the plan reports it (with the edit that resolves it), not as
    // the builder's failure.
    check_collisions(&planned.desired)?;
    let elements: Vec<ManifestElement> = planned
        .desired
        .iter()
        .map(|wanted| wanted.element.clone())
        .collect();
    let (path, warnings) = store
        .build_environment(
            &elements,
            &trees,
            directory.path(),
            &directory.path().join("environment"),
            &mut |line| report(&ProfileMessage::Nix(line.to_owned())),
        )
        .map_err(nix_error("build the user environment"))?;
    Ok((directory, path.to_string(), warnings))
}

/// Fetches `expected` with its closure from the first substituter that has it, when it is a
/// path of this store that is not valid; whether it did. Paths already valid are left to the
/// caller (a source's tree is still checked against the lockfile), and so are paths no
/// substituter has. A damaged cache is an error, as in Nix without `--fallback`.
fn substitute(
    store: &EmbeddedStore,
    caches: &[BinaryCache],
    id: &str,
    expected: &str,
    fetched: &mut BTreeMap<String, Vec<String>>,
) -> Result<bool, DeclarativeError> {
    if caches.is_empty() {
        return Ok(false);
    }
    let Ok(path) = store.parse_path(expected) else {
        return Ok(false);
    };
    let store_error = |source| DeclarativeError::Store {
        id: id.to_owned(),
        source: Box::new(source),
    };
    if store.is_valid(&path).map_err(store_error)? {
        return Ok(false);
    }
    let error = |cache: &str, source| DeclarativeError::Substitute {
        id: id.to_owned(),
        path: expected.to_owned(),
        cache: cache.to_owned(),
        source: Box::new(source),
    };
    for cache in caches {
        match store.cache_has(cache, &path) {
            Ok(true) => {}
            Ok(false) => continue,
            // A cache not there (not mounted, not written yet) has nothing; a damaged one, or
            // one for another store, is an error.
            Err(_) if !cache.is_present() => continue,
            Err(source) => return Err(error(cache.url(), source)),
        }
        let copied = store
            .copy_from_cache(cache, std::slice::from_ref(&path))
            .map_err(|source| error(cache.url(), source))?;
        fetched
            .entry(cache.url().to_owned())
            .or_default()
            .extend(copied.added.iter().map(ToString::to_string));
        return Ok(true);
    }
    Ok(false)
}

/// Checks that a saved plan still describes the state on disk.
pub fn check_saved_plan(
    saved: &Plan,
    saved_path: &Path,
    fresh: &Plan,
) -> Result<(), DeclarativeError> {
    let stale = |reason: String| DeclarativeError::StalePlan {
        path: saved_path.to_owned(),
        reason,
    };
    if saved.schema.version != PLAN_SCHEMA_VERSION {
        return Err(stale(format!(
            "it has schema version {}; this declenv applies version {PLAN_SCHEMA_VERSION}",
            saved.schema.version
        )));
    }
    if saved.profile != fresh.profile {
        return Err(stale(format!(
            "it is for profile `{}`, not `{}`",
            saved.profile, fresh.profile
        )));
    }
    if saved.base.profile_link != fresh.base.profile_link {
        let describe = |generation: Option<u32>| {
            generation.map_or_else(
                || "no generation".to_owned(),
                |number| format!("generation {number}"),
            )
        };
        return Err(stale(format!(
            "the profile moved from {} to {}",
            describe(saved.generation),
            describe(fresh.generation)
        )));
    }
    if saved.base.spec_path != fresh.base.spec_path || saved.base.spec_hash != fresh.base.spec_hash
    {
        return Err(stale(format!(
            "the spec `{}` changed",
            fresh.base.spec_path
        )));
    }
    if saved.base.lock_hash != fresh.base.lock_hash {
        return Err(stale("the lockfile changed".to_owned()));
    }
    if saved.changes != fresh.changes {
        return Err(stale(
            "the sources changed what the lockfile resolves to".to_owned(),
        ));
    }
    Ok(())
}

/// Elements of a generation, with ids from its record when declenv made it.
pub fn generation_sides(profile: &Profile, number: u32) -> Result<Vec<Side>, DeclarativeError> {
    let generations = profile.generations_unlocked()?;
    let entry = generations
        .entry(number)
        .ok_or_else(|| DeclarativeError::NoGeneration {
            profile: profile.path().to_owned(),
            number,
        })?;
    let record = profile
        .read_metadata(entry)?
        .and_then(|metadata| metadata.declarative);
    let manifest_path = profile
        .directory()
        .join(&entry.file_name)
        .join("manifest.nix");
    read_sides(&manifest_path, record.as_ref())
}

/// The elements of the environment whose manifest is at `manifest_path`, with the ids and
/// attribute paths its record gives.
fn read_sides(
    manifest_path: &Path,
    record: Option<&DeclarativeRecord>,
) -> Result<Vec<Side>, DeclarativeError> {
    let manifest_error = |source: ManifestReadError| DeclarativeError::Manifest {
        path: manifest_path.to_owned(),
        source,
    };
    let elements = match std::fs::read_to_string(manifest_path) {
        Ok(text) => manifest::parse(&text).map_err(|error| manifest_error(error.into()))?,
        // An environment without a manifest (an empty or foreign one) holds nothing we know.
        Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(manifest_error(error.into())),
    };
    let old_lock =
        record.and_then(|record| lockfile::parse(&record.lock, Path::new(&record.spec_path)).ok());
    Ok(elements
        .into_iter()
        .map(|element| {
            let id = record.and_then(|record| record.ids.get(&element.out_path).cloned());
            let attr_path = id
                .as_ref()
                .and_then(|id| old_lock.as_ref()?.packages.get(id)?.attr_path.clone());
            Side {
                id,
                attr_path,
                element,
            }
        })
        .collect())
}
