//! Garbage collection of the embedded store: finding roots the way Nix does, and deleting
//! whatever no root reaches.
//!
//! Roots are found by walking `ROOT/nix/var/nix/gcroots/` and `ROOT/nix/var/nix/profiles/`
//! (symlinked directories are not followed): a symlink into the store roots the store path it
//! points into; a symlink elsewhere is indirect and roots what *its* target points to when that
//! is a symlink into the store (every generation link has such an indirect root under
//! `gcroots/auto`); an indirect root under `gcroots/auto` whose target is gone is stale and
//! removed, as Nix removes it. The decision of what is dead is [`crate::plan::gc`]'s.

use super::{EmbeddedStore, StoreError, StorePath};
use crate::plan::gc::plan_collection;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Unregistered entries younger than this may belong to an add in progress and are kept.
pub const LEFTOVER_MIN_AGE: Duration = Duration::from_secs(3600);

/// The roots found, each with the links that make it one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roots {
    /// Store path → the links (direct or indirect) that keep it alive.
    pub roots: BTreeMap<StorePath, Vec<PathBuf>>,
    /// Stale indirect roots under `gcroots/auto` that were removed (or, in a dry run, would be).
    pub stale: Vec<PathBuf>,
}

/// What a collection did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Valid paths reachable from a root.
    pub live: Vec<StorePath>,
    /// Valid paths deleted (or that would be), referrers first.
    pub dead: Vec<StorePath>,
    /// Total NAR size of the dead paths, in bytes.
    pub dead_bytes: u64,
    /// Unregistered leftovers removed from the store directory.
    pub leftovers: Vec<PathBuf>,
    /// Stale indirect roots removed.
    pub stale_roots: Vec<PathBuf>,
}

/// The store path a filesystem path lies in, if it lies in this store.
fn store_path_of(store: &EmbeddedStore, target: &Path) -> Option<StorePath> {
    let relative = target.strip_prefix(&store.store_directory).ok()?;
    let first = relative.components().next()?;
    let name = first.as_os_str().to_str()?;
    StorePath::from_base_name(store.store_dir.clone(), name).ok()
}

/// A symlink's target made absolute against the link's directory (without resolving it).
fn absolute_target(link: &Path) -> io::Result<PathBuf> {
    let target = std::fs::read_link(link)?;
    Ok(match link.parent() {
        Some(parent) if target.is_relative() => parent.join(target),
        _ => target,
    })
}

/// Finds every root under `root_directory` (the declenv root). With `remove_stale`, deletes
/// stale indirect roots under `gcroots/auto`. Links in `ignored` (generation links a dry run
/// of `--delete-old` would delete) root nothing, and neither do indirect roots that lead
/// through them.
pub fn find_roots(
    store: &EmbeddedStore,
    root_directory: &Path,
    remove_stale: bool,
    ignored: &BTreeSet<PathBuf>,
) -> Result<Roots, StoreError> {
    let var = root_directory.join("nix/var/nix");
    let auto = var.join("gcroots/auto");
    let mut roots = Roots::default();
    let mut pending = vec![var.join("gcroots"), var.join("profiles")];
    while let Some(directory) = pending.pop() {
        let entries = match std::fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(StoreError::Io {
                    path: directory,
                    action: "read",
                    source,
                });
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                path: directory.clone(),
                action: "read",
                source,
            })?;
            let path = entry.path();
            if ignored.contains(&path) {
                continue;
            }
            let file_type = entry.file_type().map_err(|source| StoreError::Io {
                path: path.clone(),
                action: "inspect",
                source,
            })?;
            if file_type.is_dir() {
                pending.push(path);
                continue;
            }
            if !file_type.is_symlink() {
                // Nix also counts regular files named like a store path.
                if let Some(name) = path.file_name().and_then(|name| name.to_str())
                    && let Ok(store_path) = StorePath::from_base_name(store.store_dir.clone(), name)
                {
                    roots.roots.entry(store_path).or_default().push(path);
                }
                continue;
            }
            let Ok(target) = absolute_target(&path) else {
                continue;
            };
            if let Some(store_path) = store_path_of(store, &target) {
                roots.roots.entry(store_path).or_default().push(path);
                continue;
            }
            match std::fs::symlink_metadata(&target) {
                Ok(_) if ignored.contains(&target) => {}
                Ok(metadata) if metadata.file_type().is_symlink() => {
                    if let Ok(second) = absolute_target(&target)
                        && let Some(store_path) = store_path_of(store, &second)
                    {
                        roots.roots.entry(store_path).or_default().push(path);
                    }
                }
                Err(error)
                    if error.kind() == io::ErrorKind::NotFound && path.starts_with(&auto) =>
                {
                    if remove_stale {
                        std::fs::remove_file(&path).map_err(|source| StoreError::Io {
                            path: path.clone(),
                            action: "remove stale root",
                            source,
                        })?;
                    }
                    roots.stale.push(path);
                }
                _ => {}
            }
        }
    }
    roots.stale.sort();
    Ok(roots)
}

/// Whether Nix keeps its database under the root (`nix-env`, `nix-store --add` pointed at it):
/// then Nix manages this store too, and an entry declenv did not register may be Nix's (a
/// `nix-env` generation, the packages it links, `.links`), not a leftover of ours.
pub fn shared_with_nix(root_directory: &Path) -> bool {
    std::fs::symlink_metadata(root_directory.join("nix/var/nix/db")).is_ok()
}

/// A temporary entry of an add or delete of declenv's (never a store path, never Nix's).
pub fn is_declenv_temporary(entry: &Path) -> bool {
    entry
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| {
            name.starts_with(super::tree::ADD_PREFIX)
                || name.starts_with(super::tree::DELETE_PREFIX)
        })
}

/// Collects garbage: every valid path no root reaches is deleted (referrers first), and
/// unregistered leftovers older than [`LEFTOVER_MIN_AGE`] are removed (in a store shared with
/// Nix, only declenv's own temporaries: the rest may be Nix's). With `dry_run`, only reports,
/// as if the links in `ignored` were gone (see [`find_roots`]).
pub fn collect(
    store: &EmbeddedStore,
    root_directory: &Path,
    dry_run: bool,
    ignored: &BTreeSet<PathBuf>,
) -> Result<GcReport, StoreError> {
    let roots = find_roots(store, root_directory, !dry_run, ignored)?;
    let mut references = BTreeMap::new();
    let mut sizes = BTreeMap::new();
    for path in store.valid_paths()? {
        if let Some(info) = store.path_info(&path)? {
            sizes.insert(path.clone(), info.nar.size);
            references.insert(path, info.references);
        }
    }
    let root_set: BTreeSet<StorePath> = roots.roots.keys().cloned().collect();
    let collection = plan_collection(&references, &root_set);
    let dead_bytes = collection
        .dead
        .iter()
        .filter_map(|path| sizes.get(path))
        .sum();
    let mut leftovers = Vec::new();
    if !dry_run {
        store.delete_many(&collection.dead)?;
    }
    let shared = shared_with_nix(root_directory);
    for entry in store.verify_leftovers()? {
        if shared && !is_declenv_temporary(&entry) {
            continue;
        }
        let removed = if dry_run {
            store.is_removable_leftover(&entry, LEFTOVER_MIN_AGE)?
        } else {
            store.remove_leftover(&entry, LEFTOVER_MIN_AGE)?
        };
        if removed {
            leftovers.push(entry);
        }
    }
    Ok(GcReport {
        live: collection.live,
        dead: collection.dead,
        dead_bytes,
        leftovers,
        stale_roots: roots.stale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unregistered store-path-named entry and a declenv temporary, both old enough to be
    /// leftovers; returns their paths.
    fn aged_entries(root: &Path) -> (PathBuf, PathBuf) {
        let store = root.join("nix/store");
        let foreign = store.join("0c9b6rw4gqaz4kv8x7cpmbyh3jm0yd7q-user-environment");
        let temporary = store.join(format!("{}crashed", super::super::tree::ADD_PREFIX));
        let long_ago = filetime::FileTime::from_unix_time(1_700_000_000, 0);
        for path in [&foreign, &temporary] {
            std::fs::create_dir_all(path).expect("mkdir");
            filetime::set_file_mtime(path, long_ago).expect("age");
        }
        (foreign, temporary)
    }

    #[test]
    fn a_store_shared_with_nix_keeps_what_declenv_did_not_register() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(root.path()).expect("store");
        std::fs::create_dir_all(root.path().join("nix/var/nix/db")).expect("mkdir db");
        let (foreign, temporary) = aged_entries(root.path());
        let report = collect(&store, root.path(), false, &BTreeSet::new()).expect("gc");
        assert!(foreign.exists(), "Nix's path was removed");
        assert!(!temporary.exists());
        assert_eq!(report.leftovers, [temporary]);
    }

    #[test]
    fn a_store_of_its_own_loses_every_old_leftover() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(root.path()).expect("store");
        let (foreign, temporary) = aged_entries(root.path());
        let report = collect(&store, root.path(), false, &BTreeSet::new()).expect("gc");
        assert!(!foreign.exists() && !temporary.exists());
        assert_eq!(report.leftovers.len(), 2);
    }
}
