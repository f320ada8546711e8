//! `declenv watch`: applies the profile spec whenever it, its lockfile or a local source changes.
//!
//! I/O. Owns what is watched and how: the directories that hold the spec, the lockfile and the
//! sources (never the files themselves, so that an editor's save-by-rename, a symlinked dotfile
//! or a file deleted and recreated keeps being seen), through `notify` or by polling; how a
//! burst of events becomes one change ([`Debouncer`]); whether a change needs a cycle at all (a
//! [`Fingerprint`] of what the cycle reads, so that declenv's own lockfile writes do not start
//! another one); and running that cycle, one at a time, through the same functions as
//! `declenv apply` ([`crate::profile::declarative`]). `SIGINT` and `SIGTERM` stop it between
//! cycles, never during an apply. It never prints: what happens goes to a [`Reporter`].

use crate::plan::resolve::ResolveOptions;
use crate::profile::ProfileMessage;
use crate::profile::declarative::{
    self, DeclarativeError, LockFile, LockMode, Plan, SpecFile, Target,
};
use crate::source::CacheDirectory;
use notify::Watcher as _;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{DefaultHasher, Hasher as _};
use std::io::{self, Read as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Why the watcher could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The file system watcher could not be created.
    #[error("cannot start watching for file changes")]
    Start {
        /// Why.
        #[source]
        source: notify::Error,
    },
    /// A directory could not be watched.
    #[error("cannot watch `{}`", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
    /// The signal handlers could not be installed.
    #[error("cannot handle `SIGINT` and `SIGTERM`")]
    Signals {
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl WatchError {
    /// A hint for the user, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Start { .. } | Self::Watch { .. } => Some(
                "pass `--poll` to poll for changes instead (on file systems without change events, or when the inotify watch limit is reached)"
                    .to_owned(),
            ),
            Self::Signals { .. } => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What to watch
// ---------------------------------------------------------------------------------------------

/// A path the declarative cycle reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Input {
    /// A file: the spec, the lockfile or a catalog.
    File(PathBuf),
    /// A channel directory, read with everything under it.
    Tree(PathBuf),
}

/// The inputs of the cycle for a spec: the spec, its lockfile, and its local sources.
#[must_use]
pub fn inputs(spec_path: &Path, spec: Option<&crate::model::spec::Spec>) -> Vec<Input> {
    let mut inputs = vec![
        Input::File(spec_path.to_owned()),
        Input::File(declarative::lock_path_for(spec_path)),
    ];
    for source in spec.map(|spec| spec.sources.as_slice()).unwrap_or_default() {
        inputs.push(match source.kind {
            crate::model::spec::SourceKind::Channel => Input::Tree(source.path.clone()),
            crate::model::spec::SourceKind::Catalog => Input::File(source.path.clone()),
            // A `<name>` lookup resolves through `NIX_PATH` (usually into the store, which
            // does not change); a local expression is watched like a channel or a catalog.
            crate::model::spec::SourceKind::Nix if source.search_path_entry().is_some() => {
                continue;
            }
            crate::model::spec::SourceKind::Nix if source.path.is_dir() => {
                Input::Tree(source.path.clone())
            }
            crate::model::spec::SourceKind::Nix => Input::File(source.path.clone()),
        });
    }
    inputs
}

/// The directories to watch and the paths in them whose changes matter. Every path is physical
/// (its directory resolved through symlinks), as events report them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSet {
    /// Directories to watch, and whether with everything under them.
    pub directories: BTreeMap<PathBuf, bool>,
    /// Directory entries that matter: each input file and every symlink on the way to it.
    pub files: BTreeSet<PathBuf>,
    /// Directories anything under which matters (channels).
    pub trees: BTreeSet<PathBuf>,
    /// Inputs under a directory that does not exist (yet): watched through the nearest
    /// directory that does, whose events matter when they lead towards the input.
    pub missing: BTreeSet<PathBuf>,
}

/// How many symlinks are followed from one input before giving up (as the kernel's `ELOOP`).
const MAX_SYMLINKS: usize = 40;

impl WatchSet {
    /// Resolves the inputs on disk now: each file's directory (and, through symlinks, each
    /// link's target's directory) is watched; channels are watched with everything under them,
    /// and their parent too, so that a channel replaced by another directory is seen.
    #[must_use]
    pub fn resolve(inputs: &[Input]) -> Self {
        let mut set = Self::default();
        for input in inputs {
            match input {
                Input::File(path) => set.add_entry(path),
                Input::Tree(path) => {
                    set.add_entry(path);
                    if let Ok(canonical) = std::fs::canonicalize(path)
                        && canonical.is_dir()
                    {
                        set.trees.insert(canonical.clone());
                        set.directories.insert(canonical, true);
                    }
                }
            }
        }
        set.drop_covered_directories();
        set
    }

    /// Adds the directory entry `path` and, when it is a symlink, the entries on the way to
    /// its target.
    fn add_entry(&mut self, path: &Path) {
        let mut current = path.to_owned();
        for _ in 0..MAX_SYMLINKS {
            let (Some(parent), Some(name)) = (current.parent(), current.file_name()) else {
                return;
            };
            let Ok(directory) = std::fs::canonicalize(parent) else {
                let (existing, missing) = nearest_existing(&current);
                self.directories.entry(existing).or_insert(false);
                self.missing.insert(missing);
                return;
            };
            let physical = directory.join(name);
            self.directories.entry(directory.clone()).or_insert(false);
            self.files.insert(physical.clone());
            match std::fs::read_link(&physical) {
                Ok(target) => current = directory.join(target),
                Err(_) => return,
            }
        }
    }

    /// inotify watches a directory once: a directory under one watched with everything under
    /// it needs no watch of its own (a second watch of the same directory would replace the
    /// first).
    fn drop_covered_directories(&mut self) {
        let recursive: Vec<PathBuf> = self
            .directories
            .iter()
            .filter(|(_, recursive)| **recursive)
            .map(|(path, _)| path.clone())
            .collect();
        self.directories.retain(|path, _| {
            !recursive
                .iter()
                .any(|tree| path != tree && path.starts_with(tree))
        });
    }

    /// Whether an event on `path` may change what the cycle reads.
    #[must_use]
    pub fn is_relevant(&self, path: &Path) -> bool {
        self.files.contains(path)
            || self.directories.contains_key(path)
            || self.trees.iter().any(|tree| path.starts_with(tree))
            || self.missing.iter().any(|missing| missing.starts_with(path))
    }
}

/// The nearest existing ancestor of `path` (resolved through symlinks) and `path` rewritten
/// under it.
fn nearest_existing(path: &Path) -> (PathBuf, PathBuf) {
    let mut ancestor = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = std::fs::canonicalize(ancestor) {
            let mut missing = canonical.clone();
            for name in rest.iter().rev() {
                missing.push(name);
            }
            return (canonical, missing);
        }
        match (ancestor.parent(), ancestor.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                ancestor = parent;
            }
            _ => return (PathBuf::from("/"), path.to_owned()),
        }
    }
}

/// Whether a `notify` event can mean a change: reads (opening, closing without writing,
/// access times) cannot, and declenv's own reads of the spec and the sources would otherwise
/// wake it up.
#[must_use]
pub fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_)
        | notify::EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    }
}

// ---------------------------------------------------------------------------------------------
// Debouncing
// ---------------------------------------------------------------------------------------------

/// The longest any wait may be: a day.
const LONGEST_WAIT: Duration = Duration::from_secs(86_400);

/// `instant + duration`, or `instant` itself in the unlikely case that cannot be represented.
fn later(instant: Instant, duration: Duration) -> Instant {
    instant.checked_add(duration).unwrap_or(instant)
}

/// Collects the changes of a burst into one: the burst ends once no change came for the quiet
/// period, or at the latest ten quiet periods after it began (so that a file written without
/// pause is still applied now and then).
#[derive(Debug, Clone)]
pub struct Debouncer {
    quiet: Duration,
    longest: Duration,
    pending: Option<Pending>,
}

#[derive(Debug, Clone)]
struct Pending {
    first: Instant,
    last: Instant,
    paths: BTreeSet<PathBuf>,
}

impl Debouncer {
    /// A debouncer that waits for `quiet` without changes.
    #[must_use]
    pub fn new(quiet: Duration) -> Self {
        let quiet = quiet.min(LONGEST_WAIT);
        Self {
            quiet,
            longest: quiet.saturating_mul(10).min(LONGEST_WAIT),
            pending: None,
        }
    }

    /// Records a change of `path` at `now`.
    pub fn add(&mut self, now: Instant, path: PathBuf) {
        let pending = self.pending.get_or_insert_with(|| Pending {
            first: now,
            last: now,
            paths: BTreeSet::new(),
        });
        pending.last = pending.last.max(now);
        pending.paths.insert(path);
    }

    /// When the pending burst is due, if there is one.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.pending
            .as_ref()
            .map(|pending| later(pending.last, self.quiet).min(later(pending.first, self.longest)))
    }

    /// The paths of the pending burst, if it is due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<Vec<PathBuf>> {
        if self.deadline().is_some_and(|deadline| deadline <= now) {
            self.pending
                .take()
                .map(|pending| pending.paths.into_iter().collect())
        } else {
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fingerprints
// ---------------------------------------------------------------------------------------------

/// A digest of everything a cycle reads: the spec's bytes, the lockfile's bytes and the
/// sources' identities (absent parts count as absent, not as empty). Two cycles with the same
/// fingerprint decide the same, so a change that leaves it as the last settled cycle saw it
/// (an editor saving the same text, declenv writing the lockfile it just applied) is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint of one state of the inputs.
    #[must_use]
    pub fn of(spec: Option<&[u8]>, lock: Option<&[u8]>, sources: Option<&[String]>) -> Self {
        let mut hasher = Sha256::new();
        for part in [spec, lock] {
            match part {
                None => hasher.update([0]),
                Some(bytes) => {
                    hasher.update([1]);
                    hasher.update((bytes.len() as u64).to_le_bytes());
                    hasher.update(bytes);
                }
            }
        }
        match sources {
            None => hasher.update([0]),
            Some(identities) => {
                hasher.update([1]);
                hasher.update((identities.len() as u64).to_le_bytes());
                for identity in identities {
                    hasher.update((identity.len() as u64).to_le_bytes());
                    hasher.update(identity.as_bytes());
                }
            }
        }
        Self(crate::store::path::hex(&hasher.finalize()))
    }

    /// The fingerprint of a failure: these inputs, and what went wrong with them.
    #[must_use]
    pub fn of_failure(&self, error: &dyn std::error::Error) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(self.0.as_bytes());
        let mut cause = Some(error);
        while let Some(error) = cause {
            let text = error.to_string();
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
            cause = error.source();
        }
        Self(crate::store::path::hex(&hasher.finalize()))
    }
}

// ---------------------------------------------------------------------------------------------
// The cycle
// ---------------------------------------------------------------------------------------------

/// Where and how the watcher applies.
#[derive(Debug)]
pub struct Config<'a> {
    /// The spec (absolute).
    pub spec_path: PathBuf,
    /// The store, the profile and the scratch directory.
    pub target: Target<'a>,
    /// Where parsed catalogs are cached.
    pub cache: CacheDirectory,
    /// How packages are resolved.
    pub options: ResolveOptions,
    /// How the lockfile may be used: [`LockMode::Update`] locks in memory and writes the
    /// lockfile once the apply succeeded, as `declenv apply` does.
    pub mode: LockMode,
    /// Whether plans that remove, downgrade or replace packages are applied.
    pub allow_destructive: bool,
    /// Events or polling.
    pub backend: Backend,
    /// The quiet period that ends a burst of changes.
    pub debounce: Duration,
    /// A test hook: how long to wait before each apply (when a signal may arrive).
    pub pause_before_apply: Option<Duration>,
}

/// How changes are noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// File system events (inotify, FSEvents, kqueue).
    Events,
    /// Comparing the watched paths' metadata (and small files' contents) at an interval.
    Poll {
        /// How often.
        interval: Duration,
    },
}

/// What a cycle ended in.
#[derive(Debug)]
pub enum Outcome {
    /// A new generation (or, when the environment came out identical, a reused one) is current.
    Applied {
        /// The plan applied.
        plan: Box<Plan>,
        /// Whether the generation already existed.
        reused: bool,
        /// Whether the lockfile was written.
        lockfile_written: bool,
    },
    /// The profile already matched the spec.
    Unchanged {
        /// The empty plan.
        plan: Box<Plan>,
        /// Whether the lockfile was written (a spec edit that changes no package).
        lockfile_written: bool,
    },
    /// The plan removes, downgrades or replaces packages and `--allow-destructive` is not set:
    /// nothing was applied, and the same inputs are not reported again.
    Held {
        /// The plan held.
        plan: Box<Plan>,
    },
    /// Reading, locking, planning or applying failed; nothing was applied.
    Failed {
        /// Why.
        error: DeclarativeError,
        /// Whether it failed while applying, rather than while reading, locking or planning.
        while_applying: bool,
    },
}

/// One cycle's outcome and what led to it.
#[derive(Debug)]
pub struct Report {
    /// What happened.
    pub outcome: Outcome,
    /// The profile's current generation afterwards.
    pub generation: Option<u32>,
    /// The changed paths that started the cycle (empty for the first one).
    pub changed: Vec<PathBuf>,
    /// `sha256:<hex>` of the spec the cycle read, when it could be read.
    pub spec_hash: Option<String>,
    /// Unknown keys in the spec, and what the environment builder skipped.
    pub warnings: Vec<String>,
    /// How long the cycle took.
    pub duration: Duration,
}

/// How the watcher stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// The signal that stopped it.
    pub signal: Option<i32>,
    /// Whether a change was seen and not applied (it will be on the next start).
    pub pending: bool,
}

/// Receives what the watcher does.
pub trait Reporter {
    /// The watcher is ready: changes from now on are seen.
    fn watching(&mut self, set: &WatchSet, backend: Backend);
    /// An apply starts (the plan has changes).
    fn applying(&mut self, plan: &Plan);
    /// The profile reports progress (waiting for its lock).
    fn profile_message(&mut self, message: &ProfileMessage);
    /// A cycle ended.
    fn outcome(&mut self, report: Report);
    /// Something went wrong with watching itself (a directory that cannot be watched).
    fn warning(&mut self, error: &WatchError);
}

/// The watcher's memory between cycles.
#[derive(Debug, Default)]
struct State {
    /// The fingerprint of the inputs as the last cycle that did not fail left them (applied,
    /// unchanged or held): a change that leaves them so needs no cycle. `None` after a
    /// failure, so that any change tries again (a collision or a changed package tree can be
    /// fixed under a channel without changing what the fingerprint covers).
    last: Option<Fingerprint>,
    /// The last failure reported, as the fingerprint of its inputs and error: the same failure
    /// is not reported twice in a row.
    last_failure: Option<Fingerprint>,
    /// The inputs of the last spec that parsed.
    inputs: Vec<Input>,
}

/// Why a cycle did not report.
enum Quiet {
    /// The inputs are as the last cycle left them, or it failed as the one before it did.
    Unchanged,
    /// A signal came before the apply started.
    Interrupted,
}

fn read_optional(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// The profile's current generation, if it can be read.
fn current_generation(config: &Config<'_>) -> Option<u32> {
    config
        .target
        .profile
        .generations_unlocked()
        .ok()
        .and_then(|generations| generations.current)
}

/// One lock → plan → apply, as `declenv apply` chains them.
fn cycle(
    config: &Config<'_>,
    state: &mut State,
    stop: &AtomicBool,
    changed: Vec<PathBuf>,
    reporter: &mut dyn Reporter,
) -> Result<Report, Quiet> {
    let started = Instant::now();
    let spec_path = &config.spec_path;
    let lock_path = declarative::lock_path_for(spec_path);
    // Held for the whole cycle, serialised with `declenv env` writes as `declenv apply` is: a
    // generation is never built from a spec such a write has since replaced. (A spec directory
    // that cannot hold the lock file cannot be written by anyone else either.)
    let _edit_lock = declarative::lock_spec_edits(spec_path, || {}).ok();
    let report = |outcome: Outcome,
                  generation: Option<u32>,
                  spec_hash: Option<String>,
                  warnings: Vec<String>| Report {
        outcome,
        generation,
        changed: changed.clone(),
        spec_hash,
        warnings,
        duration: started.elapsed(),
    };
    // Nothing was applied: the next change tries again, and the same failure is not
    // reported twice in a row.
    let fail = |state: &mut State,
                fingerprint: &Fingerprint,
                spec_hash: Option<String>,
                warnings: Vec<String>,
                error: DeclarativeError,
                while_applying: bool| {
        state.last = None;
        let failure = fingerprint.of_failure(&error);
        if state.last_failure.as_ref() == Some(&failure) {
            return Err(Quiet::Unchanged);
        }
        state.last_failure = Some(failure);
        Ok(report(
            Outcome::Failed {
                error,
                while_applying,
            },
            current_generation(config),
            spec_hash,
            warnings,
        ))
    };
    let refuse = |state: &mut State,
                  fingerprint: &Fingerprint,
                  spec_hash: Option<String>,
                  warnings: Vec<String>,
                  error: DeclarativeError| {
        fail(state, fingerprint, spec_hash, warnings, error, false)
    };

    let spec_file = match SpecFile::read(spec_path) {
        Ok(spec_file) => spec_file,
        Err(error) => {
            let spec = read_optional(spec_path);
            let fingerprint =
                Fingerprint::of(spec.as_deref(), read_optional(&lock_path).as_deref(), None);
            let spec_hash = spec.as_deref().map(declarative::content_digest);
            return refuse(state, &fingerprint, spec_hash, Vec::new(), error);
        }
    };
    state.inputs = inputs(spec_path, Some(spec_file.spec()));
    let spec_hash = Some(declarative::content_digest(spec_file.text.as_bytes()));
    let warnings: Vec<String> = spec_file
        .parsed
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect();
    let existing = match LockFile::read(&spec_file.path) {
        Ok(existing) => existing,
        Err(error) => {
            let fingerprint = Fingerprint::of(
                Some(spec_file.text.as_bytes()),
                read_optional(&lock_path).as_deref(),
                None,
            );
            return refuse(state, &fingerprint, spec_hash, warnings, error);
        }
    };
    let lock_bytes = existing.text.as_deref().map(str::as_bytes);
    let sources = match declarative::load_sources(spec_file.spec(), &config.cache) {
        Ok(sources) => sources,
        Err(error) => {
            let fingerprint = Fingerprint::of(Some(spec_file.text.as_bytes()), lock_bytes, None);
            return refuse(state, &fingerprint, spec_hash, warnings, error);
        }
    };
    let fingerprint = Fingerprint::of(
        Some(spec_file.text.as_bytes()),
        lock_bytes,
        Some(&sources.identities),
    );
    if state.last.as_ref() == Some(&fingerprint) {
        return Err(Quiet::Unchanged);
    }
    // Locked in memory: written only once what was built on it succeeded.
    let lock_mode = if config.mode == LockMode::Update {
        LockMode::InMemory
    } else {
        config.mode
    };
    let mut locked =
        match declarative::lock(&spec_file, &sources, &existing, &config.options, lock_mode) {
            Ok(locked) => locked,
            Err(error) => return refuse(state, &fingerprint, spec_hash, warnings, error),
        };
    let planned = match declarative::make_plan(
        config.target.profile,
        &spec_file,
        &sources,
        &locked,
        config.target.store.store_dir(),
    ) {
        Ok(planned) => planned,
        Err(error) => return refuse(state, &fingerprint, spec_hash, warnings, error),
    };
    // What the lockfile holds once this cycle wrote it (or left it).
    let settled = |locked: &declarative::Locked| {
        let lock = if locked.written {
            Some(locked.text.as_bytes())
        } else {
            lock_bytes
        };
        Fingerprint::of(
            Some(spec_file.text.as_bytes()),
            lock,
            Some(&sources.identities),
        )
    };
    let failed_applying = |state: &mut State, error: DeclarativeError, warnings: Vec<String>| {
        fail(
            state,
            &fingerprint,
            spec_hash.clone(),
            warnings,
            error,
            true,
        )
    };
    if !planned.plan.has_changes() {
        if config.mode == LockMode::Update
            && let Err(error) = declarative::write_lockfile(&mut locked, &lock_path)
        {
            return failed_applying(state, error, warnings);
        }
        state.last = Some(settled(&locked));
        state.last_failure = None;
        let generation = planned.plan.generation;
        return Ok(report(
            Outcome::Unchanged {
                plan: Box::new(planned.plan),
                lockfile_written: locked.written,
            },
            generation,
            spec_hash.clone(),
            warnings,
        ));
    }
    if planned.plan.is_destructive() && !config.allow_destructive {
        state.last = Some(fingerprint.clone());
        state.last_failure = None;
        let generation = planned.plan.generation;
        return Ok(report(
            Outcome::Held {
                plan: Box::new(planned.plan),
            },
            generation,
            spec_hash.clone(),
            warnings,
        ));
    }
    if stop.load(Ordering::SeqCst) {
        return Err(Quiet::Interrupted);
    }
    reporter.applying(&planned.plan);
    if let Some(pause) = config.pause_before_apply {
        std::thread::sleep(pause);
    }
    let applied = declarative::apply(
        config.target,
        &spec_file,
        &locked,
        &planned,
        &mut |_| {},
        &mut |message| reporter.profile_message(message),
    );
    let mut warnings = warnings;
    let applied = match applied {
        Ok(applied) => applied,
        Err(error) => return failed_applying(state, error, warnings),
    };
    warnings.extend(applied.warnings);
    if config.mode == LockMode::Update
        && let Err(error) = declarative::write_lockfile(&mut locked, &lock_path)
    {
        return failed_applying(state, error, warnings);
    }
    state.last = Some(settled(&locked));
    state.last_failure = None;
    Ok(report(
        Outcome::Applied {
            plan: Box::new(planned.plan),
            reused: applied.generation.reused,
            lockfile_written: locked.written,
        },
        Some(applied.generation.number),
        spec_hash.clone(),
        warnings,
    ))
}

// ---------------------------------------------------------------------------------------------
// Noticing changes
// ---------------------------------------------------------------------------------------------

/// What wakes the loop.
enum Message {
    /// A file system event.
    Event(notify::Result<notify::Event>),
    /// `SIGINT` or `SIGTERM`.
    Signal(i32),
}

/// The identity of a directory, to tell a directory replaced by another at the same path.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|metadata| (metadata.dev(), metadata.ino()))
}

/// The file system watcher and what it watches now.
struct Native {
    watcher: notify::RecommendedWatcher,
    watched: BTreeMap<PathBuf, (bool, Option<(u64, u64)>)>,
    failed: BTreeSet<PathBuf>,
}

impl Native {
    /// Watches what `set` asks for and nothing else; a directory replaced since it was watched
    /// is watched afresh. Returns whether a watch was added (changes made before it are then
    /// unseen, so the caller checks the inputs once more) and the watches that failed.
    fn reconcile(&mut self, set: &WatchSet) -> (bool, Vec<WatchError>) {
        let stale: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|(path, (recursive, id))| {
                set.directories.get(*path) != Some(recursive) || identity(path) != *id
            })
            .map(|(path, _)| path.clone())
            .collect();
        for path in stale {
            // A directory that is gone has lost its watch already.
            let _ = self.watcher.unwatch(&path);
            self.watched.remove(&path);
        }
        let mut added = false;
        let mut errors = Vec::new();
        for (path, recursive) in &set.directories {
            if self.watched.contains_key(path) {
                continue;
            }
            let mode = if *recursive {
                notify::RecursiveMode::Recursive
            } else {
                notify::RecursiveMode::NonRecursive
            };
            match self.watcher.watch(path, mode) {
                Ok(()) => {
                    self.watched
                        .insert(path.clone(), (*recursive, identity(path)));
                    self.failed.remove(path);
                    added = true;
                }
                Err(source) => {
                    if self.failed.insert(path.clone()) {
                        errors.push(WatchError::Watch {
                            path: path.clone(),
                            source,
                        });
                    }
                }
            }
        }
        (added, errors)
    }
}

/// One path's state as the poller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    mode: u32,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
    /// For small files: a hash of the content (a rewrite within one clock tick keeps the
    /// times).
    content: Option<u64>,
}

/// Files up to this size have their content compared when polling.
const POLL_CONTENT_LIMIT: u64 = 1 << 20;
/// At most this many entries are compared under one channel when polling.
const POLL_TREE_LIMIT: usize = 200_000;

fn stamp(path: &Path, with_content: bool) -> Option<Stamp> {
    let metadata = std::fs::symlink_metadata(path).ok()?;
    let content = (with_content && metadata.is_file() && metadata.len() <= POLL_CONTENT_LIMIT)
        .then(|| content_hash(path))
        .flatten();
    Some(Stamp {
        device: metadata.dev(),
        inode: metadata.ino(),
        mode: metadata.mode(),
        size: metadata.len(),
        modified: (metadata.mtime(), metadata.mtime_nsec()),
        changed: (metadata.ctime(), metadata.ctime_nsec()),
        content,
    })
}

fn content_hash(path: &Path) -> Option<u64> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = DefaultHasher::new();
    let mut buffer = [0; 8192];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Some(hasher.finish()),
            Ok(read) => hasher.write(&buffer[..read]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Everything under `root`, following symlinks to directories once each.
fn walk(root: &Path, stamps: &mut BTreeMap<PathBuf, Option<Stamp>>) {
    let mut seen = HashSet::new();
    let mut queue = vec![root.to_owned()];
    while let Some(directory) = queue.pop() {
        if let Some(id) = identity(&directory)
            && !seen.insert(id)
        {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&directory) else {
            continue;
        };
        for entry in entries.flatten() {
            if stamps.len() >= POLL_TREE_LIMIT {
                return;
            }
            let path = entry.path();
            stamps.insert(path.clone(), stamp(&path, false));
            if std::fs::metadata(&path).is_ok_and(|metadata| metadata.is_dir()) {
                queue.push(path);
            }
        }
    }
}

/// The poller's view of a watch set.
fn snapshot(set: &WatchSet) -> BTreeMap<PathBuf, Option<Stamp>> {
    let mut stamps = BTreeMap::new();
    for path in set.files.iter().chain(&set.missing) {
        stamps.insert(path.clone(), stamp(path, true));
    }
    for tree in &set.trees {
        stamps.insert(tree.clone(), stamp(tree, false));
        walk(tree, &mut stamps);
    }
    stamps
}

/// The paths whose stamps differ between two snapshots.
fn differences(
    before: &BTreeMap<PathBuf, Option<Stamp>>,
    after: &BTreeMap<PathBuf, Option<Stamp>>,
) -> Vec<PathBuf> {
    let mut changed: Vec<PathBuf> = after
        .iter()
        .filter(|(path, stamp)| before.get(*path) != Some(*stamp))
        .map(|(path, _)| path.clone())
        .collect();
    changed.extend(
        before
            .iter()
            .filter(|(path, stamp)| stamp.is_some() && !after.contains_key(*path))
            .map(|(path, _)| path.clone()),
    );
    changed
}

/// The poller: compares snapshots at an interval.
struct Poller {
    interval: Duration,
    next: Instant,
    previous: BTreeMap<PathBuf, Option<Stamp>>,
}

enum Noticing {
    Native(Native),
    Poll(Poller),
}

impl Noticing {
    fn start(
        backend: Backend,
        sender: &mpsc::Sender<Message>,
        set: &WatchSet,
    ) -> Result<Self, WatchError> {
        match backend {
            Backend::Events => {
                let sender = sender.clone();
                let watcher = notify::recommended_watcher(move |event| {
                    let _ = sender.send(Message::Event(event));
                })
                .map_err(|source| WatchError::Start { source })?;
                let mut native = Native {
                    watcher,
                    watched: BTreeMap::new(),
                    failed: BTreeSet::new(),
                };
                // Nothing can be promised if the first watches fail.
                if let Some(error) = native.reconcile(set).1.into_iter().next() {
                    return Err(error);
                }
                Ok(Self::Native(native))
            }
            Backend::Poll { interval } => Ok(Self::Poll(Poller {
                interval: interval.clamp(Duration::from_millis(1), LONGEST_WAIT),
                next: later(Instant::now(), interval),
                previous: snapshot(set),
            })),
        }
    }

    /// Follows a new watch set; returns whether the inputs need another look.
    fn reconcile(&mut self, set: &WatchSet, reporter: &mut dyn Reporter) -> bool {
        match self {
            Self::Native(native) => {
                let (added, errors) = native.reconcile(set);
                for error in &errors {
                    reporter.warning(error);
                }
                added
            }
            // The next poll compares the new set with the old snapshot: what appeared counts
            // as changed, so nothing needs another look now.
            Self::Poll(_) => false,
        }
    }

    /// When the loop must wake up by itself.
    fn wake_at(&self) -> Option<Instant> {
        match self {
            Self::Native(_) => None,
            Self::Poll(poller) => Some(poller.next),
        }
    }

    /// Polls if it is time; returns the changed paths.
    fn poll(&mut self, now: Instant, set: &WatchSet) -> Vec<PathBuf> {
        let Self::Poll(poller) = self else {
            return Vec::new();
        };
        if now < poller.next {
            return Vec::new();
        }
        let current = snapshot(set);
        let changed = differences(&poller.previous, &current);
        poller.previous = current;
        poller.next = later(Instant::now(), poller.interval);
        changed
    }
}

/// Forwards `SIGINT` and `SIGTERM` to the loop, and raises the stop flag at once so that a
/// cycle in progress does not start its apply.
struct SignalForwarder {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalForwarder {
    fn start(sender: mpsc::Sender<Message>, stop: Arc<AtomicBool>) -> Result<Self, WatchError> {
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])
        .map_err(|source| WatchError::Signals { source })?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("declenv-signals".to_owned())
            .spawn(move || {
                for signal in signals.forever() {
                    stop.store(true, Ordering::SeqCst);
                    let _ = sender.send(Message::Signal(signal));
                }
            })
            .map_err(|source| WatchError::Signals { source })?;
        Ok(Self {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How the loop ends: with the signal that stopped it, which may still wait in the channel when
/// the stop flag was seen first.
fn stopped(receiver: &mpsc::Receiver<Message>, signal: Option<i32>, pending: bool) -> Stopped {
    let signal = signal.or_else(|| {
        receiver.try_iter().find_map(|message| match message {
            Message::Signal(signal) => Some(signal),
            Message::Event(_) => None,
        })
    });
    Stopped { signal, pending }
}

/// Watches and applies until `SIGINT` or `SIGTERM`. The first cycle runs at once (so a start
/// converges on what the files say), then one per burst of changes.
pub fn run(config: &Config<'_>, reporter: &mut dyn Reporter) -> Result<Stopped, WatchError> {
    let (sender, receiver) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let _signals = SignalForwarder::start(sender.clone(), Arc::clone(&stop))?;
    let mut state = State {
        inputs: inputs(&config.spec_path, None),
        ..State::default()
    };
    // What the last good spec names; the first cycle reads it anyway.
    if let Ok(spec_file) = SpecFile::read(&config.spec_path) {
        state.inputs = inputs(&config.spec_path, Some(spec_file.spec()));
    }
    let mut set = WatchSet::resolve(&state.inputs);
    // Watching starts before the first cycle, so nothing saved during it is missed.
    let mut noticing = Noticing::start(config.backend, &sender, &set)?;
    drop(sender);
    reporter.watching(&set, config.backend);
    let mut debouncer = Debouncer::new(config.debounce);
    let mut first = Some(Vec::new());
    loop {
        let changed = first.take().or_else(|| debouncer.take_due(Instant::now()));
        if let Some(changed) = changed {
            if stop.load(Ordering::SeqCst) {
                return Ok(stopped(&receiver, None, true));
            }
            match cycle(config, &mut state, &stop, changed, reporter) {
                Ok(report) => reporter.outcome(report),
                Err(Quiet::Unchanged) => {}
                Err(Quiet::Interrupted) => return Ok(stopped(&receiver, None, true)),
            }
            set = WatchSet::resolve(&state.inputs);
            if noticing.reconcile(&set, reporter) {
                debouncer.add(Instant::now(), config.spec_path.clone());
            }
        }
        let wake = [debouncer.deadline(), noticing.wake_at()]
            .into_iter()
            .flatten()
            .min();
        let message = match wake {
            None => receiver.recv().ok(),
            Some(wake) => {
                match receiver.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                    Ok(message) => Some(message),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        return Ok(stopped(&receiver, None, debouncer.deadline().is_some()));
                    }
                }
            }
        };
        let now = Instant::now();
        match message {
            Some(Message::Signal(signal)) => {
                return Ok(stopped(
                    &receiver,
                    Some(signal),
                    debouncer.deadline().is_some(),
                ));
            }
            Some(Message::Event(Ok(event))) => {
                if event.need_rescan() {
                    debouncer.add(now, config.spec_path.clone());
                } else if is_change(&event.kind) {
                    for path in event.paths {
                        if set.is_relevant(&path) {
                            debouncer.add(now, path);
                        }
                    }
                }
            }
            Some(Message::Event(Err(error))) => {
                let path = error
                    .paths
                    .first()
                    .cloned()
                    .unwrap_or_else(|| config.spec_path.clone());
                reporter.warning(&WatchError::Watch {
                    path: path.clone(),
                    source: error,
                });
                // Events may have been lost: look at the inputs again.
                debouncer.add(now, path);
            }
            None if wake.is_none() => {
                // Every sender is gone: nothing can wake the loop any more.
                return Ok(stopped(&receiver, None, debouncer.deadline().is_some()));
            }
            None => {}
        }
        for path in noticing.poll(Instant::now(), &set) {
            if set.is_relevant(&path) {
                debouncer.add(Instant::now(), path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_is_one_change_once_quiet() {
        let start = Instant::now();
        let mut debouncer = Debouncer::new(ms(300));
        assert_eq!(debouncer.deadline(), None);
        for step in 0..50 {
            debouncer.add(start + ms(step * 20), PathBuf::from("/d/profile.toml"));
            assert_eq!(debouncer.take_due(start + ms(step * 20)), None);
        }
        let last = start + ms(49 * 20);
        assert_eq!(debouncer.deadline(), Some(last + ms(300)));
        assert_eq!(debouncer.take_due(last + ms(299)), None);
        assert_eq!(
            debouncer.take_due(last + ms(300)),
            Some(vec![PathBuf::from("/d/profile.toml")])
        );
        assert_eq!(debouncer.deadline(), None);
    }

    #[test]
    fn a_change_that_never_pauses_is_still_applied() {
        let start = Instant::now();
        let mut debouncer = Debouncer::new(ms(100));
        for step in 0..100 {
            debouncer.add(start + ms(step * 50), PathBuf::from(format!("/c/{step}")));
        }
        assert_eq!(debouncer.deadline(), Some(start + ms(1000)));
        let paths = debouncer.take_due(start + ms(1000)).expect("due");
        assert_eq!(paths.len(), 100);
    }

    #[test]
    fn no_debounce_is_due_at_once() {
        let now = Instant::now();
        let mut debouncer = Debouncer::new(Duration::ZERO);
        debouncer.add(now, PathBuf::from("/a"));
        debouncer.add(now, PathBuf::from("/a"));
        assert_eq!(debouncer.take_due(now), Some(vec![PathBuf::from("/a")]));
    }

    #[test]
    fn fingerprints_tell_every_input_apart() {
        let identities = vec!["sha256:aa".to_owned()];
        let base = Fingerprint::of(Some(b"spec"), Some(b"lock"), Some(&identities));
        assert_eq!(
            base,
            Fingerprint::of(Some(b"spec"), Some(b"lock"), Some(&identities))
        );
        let others = [
            Fingerprint::of(Some(b"spec2"), Some(b"lock"), Some(&identities)),
            Fingerprint::of(Some(b"spec"), Some(b"lock2"), Some(&identities)),
            Fingerprint::of(Some(b"spec"), None, Some(&identities)),
            Fingerprint::of(Some(b"spec"), Some(b""), Some(&identities)),
            Fingerprint::of(Some(b"spec"), Some(b"lock"), None),
            Fingerprint::of(Some(b"spec"), Some(b"lock"), Some(&[])),
            Fingerprint::of(
                Some(b"spec"),
                Some(b"lock"),
                Some(&["sha256:ab".to_owned()]),
            ),
            // Parts do not run into each other.
            Fingerprint::of(Some(b"specl"), Some(b"ock"), Some(&identities)),
        ];
        for (index, other) in others.iter().enumerate() {
            assert_ne!(&base, other, "case {index}");
        }
    }

    #[test]
    fn reads_are_not_changes() {
        use notify::EventKind;
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, ModifyKind, RenameMode,
        };
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_change(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::AccessTime
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(is_change(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Any));
    }

    #[test]
    fn relevance_follows_the_watch_set() {
        let set = WatchSet {
            directories: BTreeMap::from([
                (PathBuf::from("/d"), false),
                (PathBuf::from("/d/channel"), true),
                (PathBuf::from("/e"), false),
            ]),
            files: BTreeSet::from([
                PathBuf::from("/d/profile.toml"),
                PathBuf::from("/d/profile.lock"),
            ]),
            trees: BTreeSet::from([PathBuf::from("/d/channel")]),
            missing: BTreeSet::from([PathBuf::from("/e/new/catalog.json")]),
        };
        for relevant in [
            "/d/profile.toml",
            "/d/profile.lock",
            "/d/channel",
            "/d/channel/hello-1/bin/hello",
            "/d",
            "/e/new",
            "/e/new/catalog.json",
        ] {
            assert!(set.is_relevant(Path::new(relevant)), "{relevant}");
        }
        for irrelevant in [
            "/d/.profile.toml.swp",
            "/d/profile.toml~",
            "/d/.declenv-tmp-abc",
            "/d/channels",
            "/e/other",
        ] {
            assert!(!set.is_relevant(Path::new(irrelevant)), "{irrelevant}");
        }
    }

    #[test]
    fn the_watch_set_follows_symlinks_and_missing_directories() {
        let directory = tempfile::tempdir().expect("tempdir");
        let base = fs_err::canonicalize(directory.path()).expect("canonical");
        let dotfiles = base.join("dotfiles");
        let config = base.join("config");
        fs_err::create_dir_all(dotfiles.join("channel/hello-1/bin")).expect("mkdir");
        fs_err::create_dir_all(&config).expect("mkdir");
        fs_err::write(dotfiles.join("profile.toml"), "version = 1\n").expect("write");
        std::os::unix::fs::symlink(dotfiles.join("profile.toml"), config.join("profile.toml"))
            .expect("symlink");
        let set = WatchSet::resolve(&[
            Input::File(config.join("profile.toml")),
            Input::File(config.join("profile.lock")),
            Input::Tree(dotfiles.join("channel")),
            Input::File(base.join("later/catalog.json")),
        ]);
        assert_eq!(
            set.directories,
            BTreeMap::from([
                (base.clone(), false),
                (config.clone(), false),
                (dotfiles.clone(), false),
                (dotfiles.join("channel"), true),
            ])
        );
        assert_eq!(
            set.files,
            BTreeSet::from([
                config.join("profile.toml"),
                config.join("profile.lock"),
                dotfiles.join("profile.toml"),
                dotfiles.join("channel"),
            ])
        );
        assert_eq!(
            set.missing,
            BTreeSet::from([base.join("later/catalog.json")])
        );
        assert!(set.is_relevant(&base.join("later")));
        assert!(set.is_relevant(&dotfiles.join("channel/hello-1/bin")));
    }

    /// A reporter that keeps nothing.
    struct Silent;

    impl Reporter for Silent {
        fn watching(&mut self, _: &WatchSet, _: Backend) {}
        fn applying(&mut self, _: &Plan) {}
        fn profile_message(&mut self, _: &ProfileMessage) {}
        fn outcome(&mut self, _: Report) {}
        fn warning(&mut self, _: &WatchError) {}
    }

    fn spec_text(channel: &Path, packages: &str) -> String {
        format!(
            "version = 1\n[sources.demo]\nchannel = \"{}\"\n{packages}",
            channel.display()
        )
    }

    /// The decisions between cycles, on a real root: what starts a cycle, what is reported
    /// once, what waits for the flag.
    #[test]
    fn cycles_run_once_per_change_of_what_they_read() {
        let directory = tempfile::tempdir().expect("tempdir");
        let base = fs_err::canonicalize(directory.path()).expect("canonical");
        let channel = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/channel");
        let root = base.join("root");
        let store = crate::store::EmbeddedStore::open(&root).expect("store");
        let profile = crate::profile::Profile::new(
            &root.join("nix/var/nix/profiles/default"),
            crate::profile::ProfileLayout::under_root(&root),
        )
        .expect("profile");
        fs_err::create_dir_all(root.join("nix/var/nix/profiles")).expect("mkdir");
        let scratch = root.join("nix/var/declenv/tmp");
        let spec = base.join("profile.toml");
        let mut config = Config {
            spec_path: spec.clone(),
            target: Target {
                store: crate::profile::declarative::Store::Embedded(&store),
                profile: &profile,
                scratch: &scratch,
            },
            cache: CacheDirectory(None),
            options: ResolveOptions {
                update: crate::plan::resolve::Update::Nothing,
                allow_attr_change: false,
                this_system: crate::source::host_system(),
            },
            mode: LockMode::Update,
            allow_destructive: false,
            backend: Backend::Events,
            debounce: Duration::ZERO,
            pause_before_apply: None,
        };
        let stop = AtomicBool::new(false);
        let mut state = State::default();
        let run = |config: &Config<'_>, state: &mut State| {
            cycle(config, state, &stop, Vec::new(), &mut Silent)
        };
        let two = spec_text(&channel, "[packages.hello]\n[packages.jq]\n");
        fs_err::write(&spec, &two).expect("write");
        let report = run(&config, &mut state).ok().expect("a report");
        assert!(
            matches!(
                report.outcome,
                Outcome::Applied {
                    lockfile_written: true,
                    reused: false,
                    ..
                }
            ),
            "{report:?}"
        );
        assert_eq!(report.generation, Some(1));
        assert_eq!(
            report.spec_hash,
            Some(declarative::content_digest(two.as_bytes()))
        );
        // declenv's own lockfile write, and a save of the same text, are no change.
        assert!(matches!(run(&config, &mut state), Err(Quiet::Unchanged)));
        fs_err::write(&spec, &two).expect("write");
        assert!(matches!(run(&config, &mut state), Err(Quiet::Unchanged)));
        // A comment is a change that changes no package.
        fs_err::write(&spec, format!("{two}# hi\n")).expect("write");
        let report = run(&config, &mut state).ok().expect("a report");
        assert!(
            matches!(report.outcome, Outcome::Unchanged { .. }),
            "{report:?}"
        );
        // A spec that does not parse is reported once; another error is reported.
        fs_err::write(&spec, "version = [\n").expect("write");
        let report = run(&config, &mut state).ok().expect("a report");
        assert!(
            matches!(report.outcome, Outcome::Failed { .. }),
            "{report:?}"
        );
        assert!(matches!(run(&config, &mut state), Err(Quiet::Unchanged)));
        fs_err::write(&spec, "version = ]\n").expect("write");
        let report = run(&config, &mut state).ok().expect("a report");
        assert!(
            matches!(
                report.outcome,
                Outcome::Failed {
                    while_applying: false,
                    ..
                }
            ),
            "{report:?}"
        );
        assert_eq!(report.generation, Some(1));
        assert!(matches!(run(&config, &mut state), Err(Quiet::Unchanged)));
        // A removal is held, once; the lockfile stays as it was.
        let lock_before = fs_err::read(base.join("profile.lock")).expect("lockfile");
        let one = spec_text(&channel, "[packages.hello]\n");
        fs_err::write(&spec, &one).expect("write");
        let report = run(&config, &mut state).ok().expect("a report");
        assert!(matches!(report.outcome, Outcome::Held { .. }), "{report:?}");
        assert!(matches!(run(&config, &mut state), Err(Quiet::Unchanged)));
        assert_eq!(
            fs_err::read(base.join("profile.lock")).expect("lockfile"),
            lock_before
        );
        // With the flag raised, a cycle stops before it applies anything.
        config.allow_destructive = true;
        state.last = None;
        stop.store(true, Ordering::SeqCst);
        assert!(matches!(run(&config, &mut state), Err(Quiet::Interrupted)));
        assert_eq!(
            profile.generations_unlocked().expect("generations").current,
            Some(1)
        );
        stop.store(false, Ordering::SeqCst);
        let report = run(&config, &mut state).ok().expect("a report");
        assert!(
            matches!(report.outcome, Outcome::Applied { .. }),
            "{report:?}"
        );
        assert_eq!(report.generation, Some(2));
    }

    #[test]
    fn the_poller_sees_a_rewrite_of_the_same_size() {
        let directory = tempfile::tempdir().expect("tempdir");
        let base = fs_err::canonicalize(directory.path()).expect("canonical");
        let spec = base.join("profile.toml");
        fs_err::write(&spec, "a = 1\n").expect("write");
        let set = WatchSet::resolve(&[Input::File(spec.clone())]);
        let before = snapshot(&set);
        assert!(differences(&before, &snapshot(&set)).is_empty());
        fs_err::write(&spec, "a = 2\n").expect("write");
        assert_eq!(differences(&before, &snapshot(&set)), vec![spec.clone()]);
        // Replaced by rename: another inode.
        let before = snapshot(&set);
        fs_err::write(base.join("new"), "a = 2\n").expect("write");
        fs_err::rename(base.join("new"), &spec).expect("rename");
        assert_eq!(differences(&before, &snapshot(&set)), vec![spec.clone()]);
        let before = snapshot(&set);
        fs_err::remove_file(&spec).expect("remove");
        assert_eq!(differences(&before, &snapshot(&set)), vec![spec]);
    }
}
