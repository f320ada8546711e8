//! The embedded content-addressed store: immutable trees under `ROOT/nix/store`, named as Nix
//! names them, with declenv's own registry of which ones are valid.
//!
//! Owns `ROOT/nix/store` and `ROOT/nix/var/declenv/store/`: adding trees, validity, path
//! information, verification and deletion. It must not decide what to keep (garbage
//! collection policy belongs to its caller), touch profiles, or write outside its root.
//!
//! | path | what |
//! |---|---|
//! | `ROOT/nix/store/<hash>-<name>` | a tree, read-only (`0444`/`0555`, mtime 1), as Nix leaves it |
//! | `ROOT/nix/store/.declenv-add-*`, `.declenv-delete-*` | a tree being added or deleted |
//! | `ROOT/nix/var/declenv/store/valid/<hash>-<name>.json` | the registration that makes a path valid |
//! | `ROOT/nix/var/declenv/store/lock` | the lock held while registrations change |
//!
//! The invariant behind crash safety: **a registration exists only for a complete, durable,
//! read-only tree.** A tree is built under a temporary name and renamed into place, and
//! made read-only and synced (what could be before the rename, the rest there, under the lock)
//! before its registration is written; deletion removes the registration before touching the tree. A crash at any
//! instant therefore leaves at worst an unregistered entry, which is invalid, replaced by the
//! next add of the same path, and reported by [`EmbeddedStore::verify`].
//!
//! Trees come from disk ([`EmbeddedStore::add_tree`]: copied, then the copy is hashed) or from
//! a description in memory ([`EmbeddedStore::add_link_tree`] for a tree of directories and
//! symlinks such as a user environment, [`EmbeddedStore::add_file`]): those are hashed from
//! the description, so an add of a path that is already valid writes nothing, and created
//! once, in place, synced only after everything is written (on a journaling filesystem, one
//! commit for the whole tree).
//!
//! Paths are computed as `nix-store --add` computes them for the same store directory (the
//! canonical absolute path of `ROOT/nix/store`), so the same tree gets the same path in
//! declenv and in Nix.
//!
//! Paths also come from other stores, with the references and deriver recorded there: a
//! `nix-store --export` stream ([`export`]), a binary cache ([`binary_cache`]) or another root
//! ([`EmbeddedStore::copy_closure_to`]). Every archive is unpacked into a temporary entry and
//! checked first; then the paths are registered together, references first, under the same
//! invariant (`transfer.rs`). A root can also be opened as a chroot store of another store
//! directory ([`EmbeddedStore::open_relocated`]), as `nix copy --to ROOT` writes one.

pub mod binary_cache;
mod closure;
pub mod export;
pub mod gc;
mod link_tree;
pub mod nar;
pub mod nix;
pub mod nixbase32;
pub mod path;
mod references;
mod registration;
mod transfer;
mod tree;

pub use binary_cache::{BinaryCache, NarInfo};
pub use closure::Query;
pub use link_tree::{LinkEntry, LinkTree, LinkTreeError, LinkTreeProblem};
pub use nar::{NarDigest, NarError};
pub use path::{StoreDir, StorePath, StorePathError};
pub use registration::PathInfo;
pub use transfer::{Copied, TransferError};

use crate::fault::{self, Point};
use references::ReferenceScanner;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use tree::Temporary;

/// A store operation that failed; every variant names the path concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("cannot {action} `{}`", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, as a verb phrase (`read`, `create`, `sync`, …).
        action: &'static str,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The store directory's canonical path is not UTF-8; store paths are strings in Nix.
    #[error("store directory `{}` is not valid UTF-8", path.display())]
    NonUtf8StoreDir {
        /// The directory.
        path: PathBuf,
    },
    /// Adding a tree that contains the store itself would copy the store into itself.
    #[error("cannot add `{}`: it contains the store directory `{}`", path.display(), store_dir.display())]
    SourceContainsStore {
        /// The tree to add.
        path: PathBuf,
        /// The store directory.
        store_dir: PathBuf,
    },
    /// A socket, device or pipe in a tree to add: Nix cannot store these.
    #[error("`{}` is a {kind}; the store holds only files, directories and symlinks", path.display())]
    UnsupportedFileType {
        /// The offending file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// A tree could not be archived for hashing.
    #[error("cannot hash `{}`", path.display())]
    Archive {
        /// The tree being added or checked.
        path: PathBuf,
        /// What went wrong, naming the file.
        #[source]
        source: NarError,
    },
    /// An invalid store path or name.
    #[error(transparent)]
    InvalidPath(#[from] StorePathError),
    /// A tree described in memory that is not a tree.
    #[error(transparent)]
    LinkTree(#[from] LinkTreeError),
    /// A path from another store directory.
    #[error("`{path}` is not in the store `{store_dir}`")]
    ForeignPath {
        /// The path.
        path: String,
        /// This store's directory.
        store_dir: String,
    },
    /// A registration file that cannot be read as one.
    #[error("invalid registration `{}`: {problem}", path.display())]
    Registration {
        /// The registration file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Deleting a path another valid path refers to would break that path.
    #[error("cannot delete `{path}`: `{referrer}` refers to it")]
    StillReferenced {
        /// The path to delete.
        path: String,
        /// A valid path that refers to it.
        referrer: String,
    },
}

impl StoreError {
    /// A hint for the user, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::UnsupportedFileType { .. } => {
                Some("remove sockets, pipes and device files from the tree first".to_owned())
            }
            Self::StillReferenced { referrer, .. } => Some(format!("delete `{referrer}` first")),
            Self::Registration { .. } => Some(
                "the path counts as invalid until it is added again; `verify` lists every problem"
                    .to_owned(),
            ),
            Self::InvalidPath(error) => error.hint(),
            Self::Io { .. }
            | Self::NonUtf8StoreDir { .. }
            | Self::SourceContainsStore { .. }
            | Self::Archive { .. }
            | Self::LinkTree(_)
            | Self::ForeignPath { .. } => None,
        }
    }
}

/// A registered path whose tree no longer has the recorded archive hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptPath {
    /// The path.
    pub path: StorePath,
    /// The hash and size recorded when it was added.
    pub expected: NarDigest,
    /// What the tree hashes to now, or why it cannot be hashed.
    pub actual: Result<NarDigest, String>,
}

/// A file in the registration directory that is not a readable registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenRegistration {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

/// What [`EmbeddedStore::verify`] found. Every list is sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Registered paths whose trees matched their registration.
    pub intact: Vec<StorePath>,
    /// Registered paths whose trees are gone.
    pub missing: Vec<StorePath>,
    /// Registered paths whose trees changed.
    pub corrupt: Vec<CorruptPath>,
    /// `(referrer, reference)` pairs where the reference is not registered.
    pub dangling_references: Vec<(StorePath, StorePath)>,
    /// Unreadable registration files.
    pub broken_registrations: Vec<BrokenRegistration>,
    /// Entries of the store directory without a registration: leftovers of interrupted adds
    /// or deletions (or of an add running concurrently with the verification).
    pub unregistered: Vec<PathBuf>,
}

impl VerifyReport {
    /// Whether a valid path is damaged (missing, corrupt, referring to an invalid path) or a
    /// registration is unreadable. Unregistered leftovers are not damage: an interrupted add
    /// leaves one by design, it is invalid, and garbage collection removes it.
    #[must_use]
    pub fn has_damage(&self) -> bool {
        !(self.missing.is_empty()
            && self.corrupt.is_empty()
            && self.dangling_references.is_empty()
            && self.broken_registrations.is_empty())
    }

    /// Whether nothing is wrong and nothing is left over.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.corrupt.is_empty()
            && self.dangling_references.is_empty()
            && self.broken_registrations.is_empty()
            && self.unregistered.is_empty()
    }
}

/// A store laid out as a Nix chroot store under a root directory.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    /// The store directory string that store paths are computed with.
    store_dir: StoreDir,
    /// The same directory as a filesystem path.
    store_directory: PathBuf,
    /// Where registrations live.
    valid_directory: PathBuf,
    /// The lock file.
    lock_path: PathBuf,
}

/// Feeds the archive to the hash and the reference scanner at once.
struct NarSink {
    hasher: Sha256,
    scanner: ReferenceScanner,
}

impl NarSink {
    fn new<Part: AsRef<str>>(hash_parts: impl IntoIterator<Item = Part>) -> Self {
        let hash_parts: Vec<Part> = hash_parts.into_iter().collect();
        Self {
            hasher: Sha256::new(),
            scanner: ReferenceScanner::new(hash_parts.iter().map(AsRef::as_ref)),
        }
    }

    /// The digest of the `size` bytes written, and the hash parts found in them.
    fn finish(self, size: u64) -> (NarDigest, HashSet<String>) {
        let found = self.scanner.found().collect();
        (
            NarDigest {
                sha256: self.hasher.finalize().into(),
                size,
            },
            found,
        )
    }
}

impl Write for NarSink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.hasher.update(bytes);
        self.scanner.scan(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether a lock excludes other readers.
#[derive(Clone, Copy)]
enum LockMode {
    Shared,
    Exclusive,
}

impl EmbeddedStore {
    /// Opens the store under `root`, creating its directories if needed. The store directory
    /// is canonicalised (symlinks resolved), because its string is part of every path's hash.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        Self::open_with(root, None)
    }

    /// Opens the store under `root` as a Nix chroot store of `store_dir`: paths are named for
    /// `store_dir` (as `nix copy --to ROOT` names them, for a store that will be used at
    /// `store_dir`), their trees and registrations live under `root`. A root opened this way
    /// holds what a root at `store_dir`'s place would hold, and becomes one when moved there.
    pub fn open_relocated(root: &Path, store_dir: StoreDir) -> Result<Self, StoreError> {
        Self::open_with(root, Some(store_dir))
    }

    fn open_with(root: &Path, store_dir: Option<StoreDir>) -> Result<Self, StoreError> {
        let store = root.join("nix").join("store");
        let state = root.join("nix").join("var").join("declenv").join("store");
        let valid_directory = state.join("valid");
        for directory in [&store, &valid_directory] {
            fs::create_dir_all(directory).map_err(io_error(directory, "create"))?;
        }
        let store_directory = fs::canonicalize(&store).map_err(io_error(&store, "resolve"))?;
        let store_dir = match store_dir {
            Some(store_dir) => store_dir,
            None => {
                let text = store_directory
                    .to_str()
                    .ok_or_else(|| StoreError::NonUtf8StoreDir {
                        path: store_directory.clone(),
                    })?;
                StoreDir::new(text)?
            }
        };
        Ok(Self {
            store_dir,
            store_directory,
            valid_directory,
            lock_path: state.join("lock"),
        })
    }

    /// The store directory string, as hashed into every path.
    #[must_use]
    pub fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// Parses an absolute path in this store.
    pub fn parse_path(&self, path: &str) -> Result<StorePath, StoreError> {
        Ok(StorePath::from_absolute_path(self.store_dir.clone(), path)?)
    }

    /// Adds a copy of the tree at `source` under `name` and returns its path, which equals
    /// what `nix-store --add` prints for a tree with that name in the same store directory.
    /// Adding a tree that is already valid changes nothing.
    ///
    /// The copy is hashed, not `source`, so the store holds exactly what was hashed even if
    /// `source` changes meanwhile. Its references are the valid paths whose hash parts occur
    /// in its archive (file contents, symlink targets, names), as Nix scans build outputs.
    pub fn add_tree(&self, source: &Path, name: &str) -> Result<StorePath, StoreError> {
        path::validate_name(name)?;
        self.refuse_source_containing_store(source)?;
        let candidates = self.registered_paths()?.0;
        let temporary = Temporary::copy_of(&self.store_directory, source)?;
        fault::inject(Point::StoreTempWritten).map_err(io_error(temporary.path(), "write"))?;
        let mut sink = io::BufWriter::with_capacity(
            64 * 1024,
            NarSink::new(candidates.iter().map(StorePath::hash_part)),
        );
        let size = nar::dump(temporary.path(), &mut sink).map_err(|error| StoreError::Archive {
            path: source.to_owned(),
            source: error,
        })?;
        let sink = sink.into_inner().map_err(|error| StoreError::Archive {
            path: source.to_owned(),
            source: NarError::Write {
                path: source.to_owned(),
                source: error.into_error(),
            },
        })?;
        let (nar, found) = sink.finish(size);
        let store_path = path::source_store_path(&self.store_dir, &nar.sha256, name)?;
        tree::canonicalise_below(temporary.path())?;
        self.install(
            temporary,
            &store_path,
            nar,
            &found,
            candidates,
            tree::finish_top,
        )?;
        Ok(store_path)
    }

    /// Adds the tree of directories and symlinks `tree` describes under `name` and returns its
    /// path: the path [`EmbeddedStore::add_tree`] gives the same tree on disk (and
    /// `nix-store --add`).
    ///
    /// Nothing is copied: the archive is written from the description, so the path is known
    /// before anything is created; a path that is already valid is returned as it is, and
    /// otherwise the tree is created once, in a temporary entry of the store directory, made
    /// read-only and durable, and renamed into place before it is registered. Its references
    /// are the valid paths whose hash parts occur in its archive (link targets and names).
    pub fn add_link_tree(&self, tree: &LinkTree, name: &str) -> Result<StorePath, StoreError> {
        path::validate_name(name)?;
        let sorted = tree.sorted()?;
        let archive = link_tree::archive(&sorted);
        self.add_described(
            &archive,
            name,
            |directory| tree::create_link_tree(directory, &sorted),
            |destination| tree::finish_link_tree(destination, &sorted),
        )
    }

    /// Adds a regular, non-executable file holding `contents` under `name` and returns its
    /// path, as [`EmbeddedStore::add_tree`] of such a file would; a path that is already valid
    /// is returned without writing anything.
    pub fn add_file(&self, contents: &[u8], name: &str) -> Result<StorePath, StoreError> {
        path::validate_name(name)?;
        let archive = link_tree::file_archive(contents, false);
        self.add_described(
            &archive,
            name,
            |directory| tree::create_file(directory, contents),
            tree::finish_top,
        )
    }

    /// Adds a tree given by its archive, a function that creates it as a temporary entry of
    /// the store directory, and one that makes it read-only and durable once it is in place.
    fn add_described(
        &self,
        archive: &[u8],
        name: &str,
        create: impl FnOnce(&Path) -> Result<Temporary, StoreError>,
        finish: impl FnOnce(&Path) -> Result<(), StoreError>,
    ) -> Result<StorePath, StoreError> {
        let candidates = self.registered_paths()?.0;
        let mut sink = NarSink::new(candidates.iter().map(StorePath::hash_part));
        sink.write_all(archive)
            .map_err(io_error(&self.store_directory, "hash"))?;
        let (nar, found) = sink.finish(archive.len() as u64);
        let store_path = path::source_store_path(&self.store_dir, &nar.sha256, name)?;
        {
            let _lock = self.lock(LockMode::Shared)?;
            if self.is_intact(&store_path)? {
                return Ok(store_path);
            }
        }
        let temporary = create(&self.store_directory)?;
        fault::inject(Point::StoreTempWritten).map_err(io_error(temporary.path(), "write"))?;
        self.install(temporary, &store_path, nar, &found, candidates, finish)?;
        Ok(store_path)
    }

    /// Whether `path` is registered with a readable registration and its tree is there.
    fn is_intact(&self, path: &StorePath) -> Result<bool, StoreError> {
        match self.load(path) {
            Ok(Some(_)) => exists(&self.disk_path(path)),
            Ok(None) | Err(StoreError::Registration { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Moves a complete `temporary` entry into place as `store_path`, lets `finish` make it
    /// read-only and durable there, and registers it with the candidates whose hash parts were
    /// `found` in its archive as its references; leaves a path that is already valid as it is
    /// (and drops `temporary`). All under the lock, so that garbage collection cannot take the
    /// entry for a leftover in between.
    fn install(
        &self,
        temporary: Temporary,
        store_path: &StorePath,
        nar: NarDigest,
        found: &HashSet<String>,
        candidates: Vec<StorePath>,
        finish: impl FnOnce(&Path) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let _lock = self.lock(LockMode::Exclusive)?;
        let destination = self.disk_path(store_path);
        if self.is_intact(store_path)? {
            return Ok(());
        }
        // Whatever is there is a leftover of an interrupted add or deletion.
        tree::remove_tree(&destination)
            .map_err(io_error(&destination, "remove the invalid leftover"))?;
        temporary.persist(&destination)?;
        finish(&destination)?;
        tree::sync_directory(&self.store_directory)?;

        // Paths deleted since the scan (or whose registration broke) are dropped, so that
        // references are always valid paths.
        let mut references = Vec::new();
        for candidate in candidates {
            if !found.contains(&candidate.hash_part()) {
                continue;
            }
            match self.is_valid(&candidate) {
                Ok(true) => references.push(candidate),
                Ok(false) | Err(StoreError::Registration { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        references.sort();
        let info = PathInfo {
            path: store_path.clone(),
            nar,
            references,
            deriver: None,
            registration_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs()),
        };
        let registration_path = self.registration_path(store_path);
        fault::inject(Point::StoreBeforeRegister).map_err(io_error(&registration_path, "write"))?;
        crate::fs::write_atomic(&registration_path, &registration::encode(&info))
            .map_err(io_error(&registration_path, "write"))?;
        Ok(())
    }

    /// Whether `path` is valid: registered, and its tree present.
    pub fn is_valid(&self, path: &StorePath) -> Result<bool, StoreError> {
        Ok(self.path_info(path)?.is_some())
    }

    /// What the store recorded about `path`, or `None` if it is not valid.
    pub fn path_info(&self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        self.check_store(path)?;
        match self.load(path)? {
            Some(info) if exists(&self.disk_path(path))? => Ok(Some(info)),
            _ => Ok(None),
        }
    }

    /// Every registered path, sorted.
    pub fn valid_paths(&self) -> Result<Vec<StorePath>, StoreError> {
        let mut paths = self.registered_paths()?.0;
        paths.sort();
        Ok(paths)
    }

    /// Checks every registered path against its registration and lists what is wrong,
    /// changing nothing. Re-hashes every tree, so it reads the whole store.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let _lock = self.lock(LockMode::Shared)?;
        let mut report = VerifyReport::default();
        let (registered, broken) = self.registered_paths()?;
        report.broken_registrations = broken;
        let registered_names: HashSet<String> =
            registered.iter().map(StorePath::base_name).collect();
        let mut infos = Vec::new();
        for path in &registered {
            match self.load(path) {
                Ok(Some(info)) => infos.push(info),
                Ok(None) => {}
                Err(StoreError::Registration { path, problem }) => {
                    report
                        .broken_registrations
                        .push(BrokenRegistration { path, problem });
                }
                Err(error) => return Err(error),
            }
        }
        let valid: HashSet<&StorePath> = infos.iter().map(|info| &info.path).collect();
        for info in &infos {
            let destination = self.disk_path(&info.path);
            if !exists(&destination)? {
                report.missing.push(info.path.clone());
                continue;
            }
            match nar::hash_path(&destination) {
                Ok(actual) if actual == info.nar => report.intact.push(info.path.clone()),
                actual => report.corrupt.push(CorruptPath {
                    path: info.path.clone(),
                    expected: info.nar,
                    actual: actual.map_err(|error| error_chain(&error)),
                }),
            }
            for reference in &info.references {
                if !valid.contains(reference) {
                    report
                        .dangling_references
                        .push((info.path.clone(), reference.clone()));
                }
            }
        }
        let entries =
            fs::read_dir(&self.store_directory).map_err(io_error(&self.store_directory, "read"))?;
        for entry in entries {
            let entry = entry.map_err(io_error(&self.store_directory, "read"))?;
            let name = entry.file_name();
            let registered = name
                .to_str()
                .is_some_and(|name| registered_names.contains(name));
            if !registered {
                report.unregistered.push(entry.path());
            }
        }
        report.intact.sort();
        report.missing.sort();
        report
            .corrupt
            .sort_by(|left, right| left.path.cmp(&right.path));
        report.dangling_references.sort();
        report
            .broken_registrations
            .sort_by(|left, right| left.path.cmp(&right.path));
        report.unregistered.sort();
        Ok(report)
    }

    /// Deletes `path`: its registration first, then its tree. Deleting a path that is not
    /// there is not an error; deleting one that another valid path refers to is.
    ///
    /// The tree is renamed to a temporary name before it is removed, so an interrupted
    /// deletion leaves a leftover that cannot be mistaken for the path.
    pub fn delete(&self, path: &StorePath) -> Result<(), StoreError> {
        self.delete_many(std::slice::from_ref(path))
    }

    /// Deletes several paths under one lock, in the order given (referrers before what they
    /// refer to). Refuses, before deleting anything, when a valid path outside `paths` refers
    /// to one of them.
    pub fn delete_many(&self, paths: &[StorePath]) -> Result<(), StoreError> {
        for path in paths {
            self.check_store(path)?;
        }
        let _lock = self.lock(LockMode::Exclusive)?;
        let doomed: std::collections::HashSet<&StorePath> = paths.iter().collect();
        for other in self.registered_paths()?.0 {
            if doomed.contains(&other) {
                continue;
            }
            // A broken registration cannot protect anything; `verify` reports it.
            if let Ok(Some(info)) = self.load(&other)
                && let Some(path) = info.references.iter().find(|r| doomed.contains(r))
            {
                return Err(StoreError::StillReferenced {
                    path: path.to_string(),
                    referrer: other.to_string(),
                });
            }
        }
        for path in paths {
            self.delete_locked(path)?;
        }
        Ok(())
    }

    /// Removes one path's registration, then its tree; the caller holds the lock.
    fn delete_locked(&self, path: &StorePath) -> Result<(), StoreError> {
        let registration_path = self.registration_path(path);
        match fs::remove_file(&registration_path) {
            Ok(()) => tree::sync_directory(&self.valid_directory)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(&registration_path, "remove")(error)),
        }
        fault::inject(Point::StoreBeforeDelete).map_err(io_error(&registration_path, "remove"))?;
        self.remove_entry(&self.disk_path(path))
    }

    /// Moves an entry of the store directory aside, then removes it, so an interrupted removal
    /// leaves a leftover that cannot be mistaken for a path.
    fn remove_entry(&self, destination: &Path) -> Result<(), StoreError> {
        if !exists(destination)? {
            return Ok(());
        }
        let (_, renamed) = tempfile::Builder::new()
            .prefix(tree::DELETE_PREFIX)
            .make_in(&self.store_directory, |temporary| {
                fs::rename(destination, temporary)
            })
            .map_err(io_error(destination, "move aside"))?
            .into_parts();
        let renamed = renamed.keep().map_err(|error| StoreError::Io {
            path: destination.to_owned(),
            action: "move aside",
            source: error.error,
        })?;
        tree::sync_directory(&self.store_directory)?;
        tree::remove_tree(&renamed).map_err(io_error(&renamed, "remove"))?;
        tree::sync_directory(&self.store_directory)
    }

    /// Removes an entry of the store directory that has no registration (a leftover of an
    /// interrupted add or delete). Refuses anything outside the store directory and any
    /// registered path. An add fills its temporary directory and renames it into place before
    /// it takes the lock to register it, so any unregistered entry younger than `min_age` may
    /// belong to an add in progress and is spared; a `.declenv-delete-` entry cannot (deletions
    /// hold the lock throughout) and is always removed.
    pub fn remove_leftover(
        &self,
        entry: &Path,
        min_age: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let _lock = self.lock(LockMode::Exclusive)?;
        if !self.is_removable_leftover(entry, min_age)? {
            return Ok(false);
        }
        self.remove_entry(entry)?;
        Ok(true)
    }

    /// Whether [`EmbeddedStore::remove_leftover`] would remove `entry` now (what a dry run
    /// reports).
    pub fn is_removable_leftover(
        &self,
        entry: &Path,
        min_age: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let Some(name) = entry.file_name().and_then(|name| name.to_str()) else {
            return Ok(false);
        };
        if entry.parent() != Some(self.store_directory.as_path()) {
            return Ok(false);
        }
        if let Ok(path) = StorePath::from_base_name(self.store_dir.clone(), name)
            && exists(&self.registration_path(&path))?
        {
            return Ok(false);
        }
        if !name.starts_with(tree::DELETE_PREFIX) {
            let modified = fs::symlink_metadata(entry)
                .and_then(|metadata| metadata.modified())
                .map_err(io_error(entry, "inspect"))?;
            if modified.elapsed().unwrap_or_default() < min_age {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Entries of the store directory that no registration accounts for.
    pub fn verify_leftovers(&self) -> Result<Vec<PathBuf>, StoreError> {
        let registered: std::collections::HashSet<String> = self
            .registered_paths()?
            .0
            .iter()
            .map(|path| path.base_name().to_owned())
            .collect();
        let mut leftovers = Vec::new();
        let entries =
            fs::read_dir(&self.store_directory).map_err(io_error(&self.store_directory, "read"))?;
        for entry in entries {
            let entry = entry.map_err(io_error(&self.store_directory, "read"))?;
            let name = entry.file_name();
            if name.to_str().is_none_or(|name| !registered.contains(name)) {
                leftovers.push(entry.path());
            }
        }
        leftovers.sort();
        Ok(leftovers)
    }

    /// Where `path` lives on disk.
    fn disk_path(&self, path: &StorePath) -> PathBuf {
        self.store_directory.join(path.base_name())
    }

    fn registration_path(&self, path: &StorePath) -> PathBuf {
        self.valid_directory.join(registration::file_name(path))
    }

    fn check_store(&self, path: &StorePath) -> Result<(), StoreError> {
        if path.store_dir() == &self.store_dir {
            Ok(())
        } else {
            Err(StoreError::ForeignPath {
                path: path.to_string(),
                store_dir: self.store_dir.to_string(),
            })
        }
    }

    /// Reads the registration of `path`, if there is one.
    fn load(&self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        let registration_path = self.registration_path(path);
        let bytes = match fs::read(&registration_path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error(&registration_path, "read")(error)),
        };
        registration::decode(&bytes, &self.store_dir, path)
            .map(Some)
            .map_err(|problem| StoreError::Registration {
                path: registration_path,
                problem,
            })
    }

    /// The paths with a registration file, and the files in the registration directory that
    /// cannot be registrations.
    fn registered_paths(&self) -> Result<(Vec<StorePath>, Vec<BrokenRegistration>), StoreError> {
        let mut paths = Vec::new();
        let mut broken = Vec::new();
        let entries =
            fs::read_dir(&self.valid_directory).map_err(io_error(&self.valid_directory, "read"))?;
        for entry in entries {
            let entry = entry.map_err(io_error(&self.valid_directory, "read"))?;
            let file_name = entry.file_name();
            // A registration is written atomically through a temporary file named with a
            // leading dot; one left by a killed write is not a registration (the path stays
            // invalid), so it is neither valid nor broken.
            if file_name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let parsed = file_name
                .to_str()
                .and_then(|name| name.strip_suffix(registration::SUFFIX))
                .ok_or_else(|| format!("not named `<hash>-<name>{}`", registration::SUFFIX))
                .and_then(|base_name| {
                    StorePath::from_base_name(self.store_dir.clone(), base_name)
                        .map_err(|error| error.to_string())
                });
            match parsed {
                Ok(path) => paths.push(path),
                Err(problem) => broken.push(BrokenRegistration {
                    path: entry.path(),
                    problem,
                }),
            }
        }
        Ok((paths, broken))
    }

    fn refuse_source_containing_store(&self, source: &Path) -> Result<(), StoreError> {
        let metadata = fs::symlink_metadata(source).map_err(io_error(source, "read"))?;
        if !metadata.is_dir() {
            return Ok(());
        }
        let canonical = fs::canonicalize(source).map_err(io_error(source, "resolve"))?;
        if self.store_directory.starts_with(&canonical) {
            return Err(StoreError::SourceContainsStore {
                path: source.to_owned(),
                store_dir: self.store_directory.clone(),
            });
        }
        Ok(())
    }

    /// Takes the store lock; it is released when the returned file is dropped.
    fn lock(&self, mode: LockMode) -> Result<File, StoreError> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(io_error(&self.lock_path, "open"))?;
        match mode {
            LockMode::Shared => file.lock_shared(),
            LockMode::Exclusive => file.lock(),
        }
        .map_err(io_error(&self.lock_path, "lock"))?;
        Ok(file)
    }
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        path,
        action,
        source,
    }
}

/// Whether anything (even a dangling symlink) is at `path`.
fn exists(path: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(io_error(path, "read")(error)),
    }
}

/// An error and its causes on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        text.push_str(": ");
        text.push_str(&current.to_string());
        cause = current.source();
    }
    text
}

#[cfg(test)]
mod tests;
