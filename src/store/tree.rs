//! File-tree operations of the store: copying a tree in or creating one from its description,
//! making it immutable, removing it.
//!
//! Owns the filesystem walks behind [`super::EmbeddedStore`]: a copy that keeps exactly what a
//! NAR records (types, contents, symlink targets, the owner's execute bit), the creation of a
//! tree of directories and symlinks or of a file described in memory, Nix's canonicalisation
//! of permissions and times, and removal of read-only trees. Every walk is iterative, so a deep
//! tree cannot exhaust the stack. Knows nothing about hashes or registrations.

use crate::store::StoreError;
use crate::store::link_tree::LinkEntry;
use crate::store::nar::file_type_name;
use std::fs::{self, File, FileTimes, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// The owner's execute bit, the one bit of the mode a NAR records.
const OWNER_EXECUTE: u32 = 0o100;

/// The modification time Nix gives everything in the store: one second after the epoch
/// (zero would be mistaken for "unknown" by some tools).
const STORE_MTIME: Duration = Duration::from_secs(1);

/// Prefix of the entries [`Temporary::copy_of`] creates; it starts with `.`, which no store
/// path name may, so a temporary entry can never be taken for a store path.
pub(crate) const ADD_PREFIX: &str = ".declenv-add-";

/// Prefix of the entries a deletion renames a store path to before removing it.
pub(crate) const DELETE_PREFIX: &str = ".declenv-delete-";

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        path,
        action,
        source,
    }
}

/// An entry in the store directory that is removed (made writable first) when dropped, unless
/// [`Temporary::persist`] moved it into place.
#[derive(Debug)]
pub(crate) struct Temporary {
    path: Option<PathBuf>,
}

impl Temporary {
    /// Copies the tree at `source` to a fresh temporary entry in `directory`. A `source` that
    /// is a symlink is copied as a symlink, as `nix-store --add` does.
    pub(crate) fn copy_of(directory: &Path, source: &Path) -> Result<Self, StoreError> {
        let metadata = fs::symlink_metadata(source).map_err(io_error(source, "read"))?;
        let file_type = metadata.file_type();
        let builder = {
            let mut builder = tempfile::Builder::new();
            builder.prefix(ADD_PREFIX);
            builder
        };
        let create_error = io_error(directory, "create a temporary entry in");
        let keep_error = |error: tempfile::PathPersistError| StoreError::Io {
            path: directory.to_owned(),
            action: "create a temporary entry in",
            source: error.error,
        };
        let temporary = if file_type.is_dir() {
            let path = builder.tempdir_in(directory).map_err(create_error)?.keep();
            let temporary = Self { path: Some(path) };
            copy_directory_contents(source, temporary.path())?;
            temporary
        } else if file_type.is_file() {
            let (mut file, path) = builder
                .tempfile_in(directory)
                .map_err(create_error)?
                .into_parts();
            let path = path.keep().map_err(keep_error)?;
            let temporary = Self { path: Some(path) };
            copy_file_contents(source, temporary.path(), &mut file, &metadata)?;
            temporary
        } else if file_type.is_symlink() {
            let target = fs::read_link(source).map_err(io_error(source, "read"))?;
            let (_, path) = builder
                .make_in(directory, |path| std::os::unix::fs::symlink(&target, path))
                .map_err(create_error)?
                .into_parts();
            let path = path.keep().map_err(keep_error)?;
            Self { path: Some(path) }
        } else {
            return Err(StoreError::UnsupportedFileType {
                path: source.to_owned(),
                kind: file_type_name(file_type),
            });
        };
        Ok(temporary)
    }

    /// Creates a fresh temporary entry in `directory` with `create`, which is given a path that
    /// does not exist yet (an archive may be a file, a symlink or a directory) and must create
    /// it exclusively. The entry is removed on error. Nothing is made read-only or synced: see
    /// [`canonicalise_below`].
    pub(crate) fn create_with<T, E: From<StoreError>>(
        directory: &Path,
        create: impl FnOnce(&Path) -> Result<T, E>,
    ) -> Result<(Self, T), E> {
        // A fresh name: the directory tempfile creates is removed for the entry to take its
        // place.
        let path = tempfile::Builder::new()
            .prefix(ADD_PREFIX)
            .tempdir_in(directory)
            .map_err(io_error(directory, "create a temporary entry in"))?
            .keep();
        fs::remove_dir(&path).map_err(io_error(&path, "remove"))?;
        let temporary = Self {
            path: Some(path.clone()),
        };
        let value = create(&path)?;
        Ok((temporary, value))
    }

    /// Where the entry is now.
    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Renames the entry to `destination` in the same directory (a rename within one
    /// directory does not need write access to a read-only directory being moved).
    pub(crate) fn persist(mut self, destination: &Path) -> Result<(), StoreError> {
        if let Some(path) = self.path.take()
            && let Err(source) = fs::rename(&path, destination)
        {
            self.path = Some(path);
            return Err(StoreError::Io {
                path: destination.to_owned(),
                action: "move into place",
                source,
            });
        }
        Ok(())
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // Best effort: a leftover is reported by `verify` and harms nothing.
            let _ = remove_tree(&path);
        }
    }
}

/// Creates, in `directory`, a temporary entry holding the directories and symlinks of a
/// [`LinkTree`](super::LinkTree) (`entries` sorted, each directory before its contents), and
/// gives the directories in it Nix's mode and time. Nothing is synced: see
/// [`finish_link_tree`].
pub(crate) fn create_link_tree(
    directory: &Path,
    entries: &[&LinkEntry],
) -> Result<Temporary, StoreError> {
    let root = tempfile::Builder::new()
        .prefix(ADD_PREFIX)
        .tempdir_in(directory)
        .map_err(io_error(directory, "create a temporary entry in"))?
        .keep();
    let temporary = Temporary {
        path: Some(root.clone()),
    };
    let mut directories = Vec::new();
    for entry in entries {
        let path = root.join(entry.path());
        match entry {
            LinkEntry::Directory { .. } => {
                fs::create_dir(&path).map_err(io_error(&path, "create"))?;
                directories.push(path);
            }
            LinkEntry::Symlink { target, .. } => {
                std::os::unix::fs::symlink(target, &path).map_err(io_error(&path, "create"))?;
            }
        }
    }
    let times = FileTimes::new().set_modified(UNIX_EPOCH + STORE_MTIME);
    for path in &directories {
        let file = File::open(path).map_err(io_error(path, "open"))?;
        file.set_permissions(Permissions::from_mode(0o555))
            .map_err(io_error(path, "set permissions of"))?;
        file.set_times(times)
            .map_err(io_error(path, "set the modification time of"))?;
    }
    Ok(temporary)
}

/// Finishes a tree [`create_link_tree`] made, once it is in place at `path`: its root gets
/// Nix's mode and time, and every directory is synced, the root first.
///
/// Nothing was synced before, so on a journaling filesystem the first sync commits the whole
/// tree (its links with the directories holding them, and the rename that put it in place) in
/// one transaction, and the others find nothing left to write; syncing each entry as it is
/// made would force a commit per entry.
pub(crate) fn finish_link_tree(path: &Path, entries: &[&LinkEntry]) -> Result<(), StoreError> {
    finish_top(path)?;
    for entry in entries {
        if let LinkEntry::Directory { path: relative } = entry {
            sync_directory(&path.join(relative))?;
        }
    }
    Ok(())
}

/// Creates, in `directory`, a temporary regular file holding `contents`. Its mode and time
/// are left for [`finish_top`], which also syncs it.
pub(crate) fn create_file(directory: &Path, contents: &[u8]) -> Result<Temporary, StoreError> {
    let (mut file, path) = tempfile::Builder::new()
        .prefix(ADD_PREFIX)
        .tempfile_in(directory)
        .map_err(io_error(directory, "create a temporary entry in"))?
        .into_parts();
    let path = path.keep().map_err(|error| StoreError::Io {
        path: directory.to_owned(),
        action: "create a temporary entry in",
        source: error.error,
    })?;
    let temporary = Temporary {
        path: Some(path.clone()),
    };
    file.write_all(contents).map_err(io_error(&path, "write"))?;
    Ok(temporary)
}

/// Copies the entries of directory `source` into the existing, empty directory `destination`.
fn copy_directory_contents(source: &Path, destination: &Path) -> Result<(), StoreError> {
    let mut pending = vec![(source.to_owned(), destination.to_owned())];
    while let Some((source_directory, destination_directory)) = pending.pop() {
        let entries =
            fs::read_dir(&source_directory).map_err(io_error(&source_directory, "read"))?;
        for entry in entries {
            let entry = entry.map_err(io_error(&source_directory, "read"))?;
            let source_path = entry.path();
            let destination_path = destination_directory.join(entry.file_name());
            let metadata =
                fs::symlink_metadata(&source_path).map_err(io_error(&source_path, "read"))?;
            let file_type = metadata.file_type();
            if file_type.is_dir() {
                fs::create_dir(&destination_path).map_err(io_error(&destination_path, "create"))?;
                pending.push((source_path, destination_path));
            } else if file_type.is_file() {
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&destination_path)
                    .map_err(io_error(&destination_path, "create"))?;
                copy_file_contents(&source_path, &destination_path, &mut file, &metadata)?;
            } else if file_type.is_symlink() {
                let target = fs::read_link(&source_path).map_err(io_error(&source_path, "read"))?;
                std::os::unix::fs::symlink(&target, &destination_path)
                    .map_err(io_error(&destination_path, "create"))?;
            } else {
                return Err(StoreError::UnsupportedFileType {
                    path: source_path,
                    kind: file_type_name(file_type),
                });
            }
        }
    }
    Ok(())
}

/// Copies the contents of file `source` into `destination` (open as `writer`) and gives it
/// the source's owner execute bit.
fn copy_file_contents(
    source: &Path,
    destination: &Path,
    writer: &mut File,
    metadata: &fs::Metadata,
) -> Result<(), StoreError> {
    let mut reader = File::open(source).map_err(io_error(source, "read"))?;
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(io_error(source, "read")(error)),
        };
        writer
            .write_all(&buffer[..read])
            .map_err(io_error(destination, "write"))?;
    }
    let mode = if metadata.permissions().mode() & OWNER_EXECUTE != 0 {
        0o755
    } else {
        0o644
    };
    writer
        .set_permissions(Permissions::from_mode(mode))
        .map_err(io_error(destination, "set permissions of"))
}

/// Makes the tree at `path` what Nix leaves in its store, and durable: files `0444` (`0555`
/// if executable), directories `0555`, modification times 1, everything synced.
///
/// Symlinks keep their times: the standard library cannot set a symlink's own times (Nix
/// does; nothing reads them, and a NAR does not record them).
#[cfg(test)]
pub(crate) fn canonicalise(path: &Path) -> Result<(), StoreError> {
    canonicalise_below(path)?;
    finish_top(path)
}

/// Makes everything in the tree at `path` what Nix leaves in its store, and durable, as
/// `canonicalise` does, but for the mode and time of `path` itself (a directory is synced
/// after its entries all the same), which [`finish_top`] sets once the tree is in place: a temporary entry
/// keeps its own recent time until then, so that garbage collection, which removes only
/// unregistered entries older than an hour, cannot take it for an old leftover.
pub(crate) fn canonicalise_below(path: &Path) -> Result<(), StoreError> {
    let times = FileTimes::new().set_modified(UNIX_EPOCH + STORE_MTIME);
    // Directories are finished after their entries: (path, entries already pushed).
    let mut pending = vec![(path.to_owned(), false)];
    while let Some((current, expanded)) = pending.pop() {
        let metadata = fs::symlink_metadata(&current).map_err(io_error(&current, "read"))?;
        let file_type = metadata.file_type();
        if file_type.is_symlink() {
            continue;
        }
        if file_type.is_dir() && !expanded {
            pending.push((current.clone(), true));
            let entries = fs::read_dir(&current).map_err(io_error(&current, "read"))?;
            for entry in entries {
                let entry = entry.map_err(io_error(&current, "read"))?;
                pending.push((entry.path(), false));
            }
            continue;
        }
        let top = current == path;
        if top && !file_type.is_dir() {
            continue;
        }
        let file = File::open(&current).map_err(io_error(&current, "open"))?;
        if !top {
            file.set_permissions(Permissions::from_mode(store_mode(&metadata)))
                .map_err(io_error(&current, "set permissions of"))?;
            file.set_times(times)
                .map_err(io_error(&current, "set the modification time of"))?;
        }
        file.sync_all().map_err(io_error(&current, "sync"))?;
    }
    Ok(())
}

/// Gives the entry at `path` itself (not what a directory holds) Nix's mode and time, and
/// syncs it; a symlink is left as it is.
pub(crate) fn finish_top(path: &Path) -> Result<(), StoreError> {
    let metadata = fs::symlink_metadata(path).map_err(io_error(path, "read"))?;
    if metadata.file_type().is_symlink() {
        return Ok(());
    }
    let file = File::open(path).map_err(io_error(path, "open"))?;
    file.set_permissions(Permissions::from_mode(store_mode(&metadata)))
        .map_err(io_error(path, "set permissions of"))?;
    file.set_times(FileTimes::new().set_modified(UNIX_EPOCH + STORE_MTIME))
        .map_err(io_error(path, "set the modification time of"))?;
    file.sync_all().map_err(io_error(path, "sync"))
}

/// The mode Nix gives a directory or file in its store.
fn store_mode(metadata: &fs::Metadata) -> u32 {
    if metadata.is_dir() || metadata.permissions().mode() & OWNER_EXECUTE != 0 {
        0o555
    } else {
        0o444
    }
}

/// Removes the tree at `path`, first making its directories writable. A missing path is not
/// an error.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    if !metadata.is_dir() {
        return fs::remove_file(path);
    }
    let mut pending = vec![path.to_owned()];
    while let Some(directory) = pending.pop() {
        fs::set_permissions(&directory, Permissions::from_mode(0o755))?;
        for entry in fs::read_dir(&directory)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    fs::remove_dir_all(path)
}

/// Syncs a directory, making renames and removals in it durable.
pub(crate) fn sync_directory(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error(path, "sync"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn canonicalise_sets_nix_modes_and_times() {
        let directory = tempfile::tempdir().expect("tempdir");
        let root = directory.path().join("tree");
        fs::create_dir_all(root.join("sub")).expect("mkdir");
        fs::write(root.join("file"), b"x").expect("write");
        fs::write(root.join("tool"), b"#!/bin/sh\n").expect("write");
        fs::set_permissions(root.join("tool"), Permissions::from_mode(0o700)).expect("chmod");
        std::os::unix::fs::symlink("file", root.join("link")).expect("symlink");
        canonicalise(&root).expect("canonicalise");
        for (name, mode) in [
            ("", 0o555),
            ("sub", 0o555),
            ("file", 0o444),
            ("tool", 0o555),
        ] {
            let metadata = fs::metadata(root.join(name)).expect("stat");
            assert_eq!(metadata.mode() & 0o7777, mode, "{name}");
            assert_eq!(metadata.mtime(), 1, "{name}");
        }
        remove_tree(&root).expect("remove");
        assert!(!root.exists());
    }

    #[test]
    fn remove_tree_ignores_missing_paths() {
        let directory = tempfile::tempdir().expect("tempdir");
        remove_tree(&directory.path().join("missing")).expect("no error");
    }

    #[test]
    fn temporary_is_removed_on_drop_even_when_read_only() {
        let directory = tempfile::tempdir().expect("tempdir");
        let source = directory.path().join("source");
        fs::create_dir_all(source.join("a/b")).expect("mkdir");
        fs::write(source.join("a/b/c"), b"c").expect("write");
        let store = directory.path().join("store");
        fs::create_dir(&store).expect("mkdir");
        let temporary = Temporary::copy_of(&store, &source).expect("copy");
        canonicalise(temporary.path()).expect("canonicalise");
        drop(temporary);
        assert_eq!(fs::read_dir(&store).expect("list").count(), 0);
    }
}
