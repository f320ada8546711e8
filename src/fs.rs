//! Filesystem primitives with the guarantees the rest of declenv relies on.
//!
//! Owns atomic file replacement: a reader sees the old content or the new, never a torn file,
//! and a crash leaves at worst a stray temporary file, which a later write in that directory
//! removes; and exclusive file locks, which the kernel releases when their holder exits. Knows
//! nothing about what it writes.

use crate::fault::Point;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// The temporary files of [`write_atomic`]: `.declenv-tmp-<pid>-<random>`.
const TEMPORARY_PREFIX: &str = ".declenv-tmp-";

/// Writes `contents` to `path` atomically: a temporary file in the same directory, flushed and
/// synced, then renamed over the target; the directory is synced so the rename is durable.
/// The file keeps the permissions of the one it replaces (a new one gets `0644`). Temporary
/// files that killed writers left in the directory are removed first.
///
/// Fault points ([`crate::fault`]): [`Point::Write`] before anything is created, and in the
/// middle of the write (half the content in the temporary file) [`Point::LockfileWrite`] for a
/// `*.lock` file or [`Point::SpecWrite`] for a `*.toml` one.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    crate::fault::inject(Point::Write)?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let permissions = match std::fs::metadata(path) {
        Ok(metadata) => metadata.permissions(),
        Err(_) => std::fs::Permissions::from_mode(0o644),
    };
    remove_abandoned_temporaries(directory);
    let prefix = format!("{TEMPORARY_PREFIX}{}-", std::process::id());
    let mut temporary = tempfile::Builder::new()
        .prefix(&prefix)
        .permissions(permissions)
        .tempfile_in(directory)?;
    let middle = match path.extension().and_then(|extension| extension.to_str()) {
        Some("lock") => Some(Point::LockfileWrite),
        Some("toml") => Some(Point::SpecWrite),
        _ => None,
    };
    if let Some(point) = middle {
        let (first, second) = contents.split_at(contents.len() / 2);
        temporary.write_all(first)?;
        temporary.as_file().sync_all()?;
        crate::fault::inject(point)?;
        temporary.write_all(second)?;
    } else {
        temporary.write_all(contents)?;
    }
    temporary.as_file().sync_all()?;
    temporary.persist(path).map_err(|error| error.error)?;
    fs_err::File::open(directory)?.sync_all()?;
    Ok(())
}

/// How old a temporary file of a gone writer must be to be removed: a writer in another PID
/// namespace looks gone, and a write takes far less than this.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// Removes the temporary files of [`write_atomic`] in `directory` whose writer is gone (killed
/// before it could rename or remove them) and that are older than [`ABANDONED_AFTER`]. Best
/// effort: a file whose writer still runs, or cannot be told, stays.
fn remove_abandoned_temporaries(directory: &Path) {
    for entry in entries_of_gone_processes(directory, TEMPORARY_PREFIX) {
        let abandoned = entry.metadata().is_ok_and(|metadata| {
            metadata.is_file()
                && metadata
                    .modified()
                    .is_ok_and(|modified| modified.elapsed().unwrap_or_default() >= ABANDONED_AFTER)
        });
        if abandoned {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The entries of `directory` named `<prefix><pid>-…` whose process `pid` is gone (see
/// [`process_is_gone`]): what a killed process left behind. Unreadable directories have none.
pub fn entries_of_gone_processes(directory: &Path, prefix: &str) -> Vec<std::fs::DirEntry> {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(|name| name.strip_prefix(prefix))
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
                .is_some_and(|pid| process_is_gone(pid) == Some(true))
        })
        .collect()
}

/// Whether process `pid` has exited, as `/proc` tells; `None` where there is no `/proc` to ask.
/// A process of another PID namespace that shares the files looks gone too: callers weigh that.
#[must_use]
pub fn process_is_gone(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self").exists() {
        return None;
    }
    Some(!Path::new("/proc").join(pid.to_string()).exists())
}

/// An exclusive `flock` on a file, held until dropped (or until the process exits, however it
/// exits: the kernel releases it).
#[derive(Debug)]
pub struct FileLock {
    _file: std::fs::File,
}

/// How long [`lock_exclusive`] waits for another holder before giving up (as long as the
/// profile lock waits).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// Takes an exclusive lock on `path`, creating the file if needed; calls `waiting` once, before
/// waiting, when another process holds it, and fails with `TimedOut` after [`LOCK_TIMEOUT`].
/// The file stays: removing a lock file while someone waits on it would let a third process
/// lock a new file with the same name.
pub fn lock_exclusive(path: &Path, waiting: impl FnOnce()) -> io::Result<FileLock> {
    lock_exclusive_within(path, LOCK_TIMEOUT, waiting)
}

/// [`lock_exclusive`] with another timeout.
pub fn lock_exclusive_within(
    path: &Path,
    timeout: Duration,
    waiting: impl FnOnce(),
) -> io::Result<FileLock> {
    let file = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?
        .into_parts()
        .0;
    wait_for_lock(file, path, timeout, waiting)
}

/// Takes an exclusive lock on the directory itself (an `flock` on the directory), so that
/// nothing is created in it: for locks that would otherwise leave a file among the user's own.
/// Waits as [`lock_exclusive`] does.
pub fn lock_directory(directory: &Path, waiting: impl FnOnce()) -> io::Result<FileLock> {
    let file = fs_err::File::open(directory)?.into_parts().0;
    wait_for_lock(file, directory, LOCK_TIMEOUT, waiting)
}

fn wait_for_lock(
    file: std::fs::File,
    path: &Path,
    timeout: Duration,
    waiting: impl FnOnce(),
) -> io::Result<FileLock> {
    let started = Instant::now();
    let mut waiting = Some(waiting);
    let mut pause = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(FileLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(error)) => return Err(error),
        }
        if let Some(waiting) = waiting.take() {
            waiting();
        }
        if started.elapsed() >= timeout {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "timed out after {} s waiting for the lock `{}`: another declenv command \
                     holds it",
                    started.elapsed().as_secs(),
                    path.display()
                ),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_removes_what_killed_writers_left_and_nothing_else() {
        let directory = tempfile::tempdir().expect("tempdir");
        // Beyond any `pid_max`: a writer that is gone, long ago or just now.
        let abandoned = directory.path().join(".declenv-tmp-4294967295-a1b2c3");
        let just_gone = directory.path().join(".declenv-tmp-4294967295-g7h8i9");
        let running = directory
            .path()
            .join(format!(".declenv-tmp-{}-d4e5f6", std::process::id()));
        let unknown = directory.path().join(".declenv-tmp-x1y2z3");
        for path in [&abandoned, &just_gone, &running, &unknown] {
            std::fs::write(path, "half").expect("write");
        }
        std::fs::File::options()
            .write(true)
            .open(&abandoned)
            .expect("open")
            .set_modified(std::time::SystemTime::now() - 2 * ABANDONED_AFTER)
            .expect("age it");
        write_atomic(&directory.path().join("profile.lock"), b"whole").expect("write");
        assert!(!abandoned.exists());
        assert!(just_gone.exists());
        assert!(running.exists());
        assert!(unknown.exists());
        let names: Vec<String> = std::fs::read_dir(directory.path())
            .expect("read")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }

    #[test]
    fn a_second_lock_waits_for_the_first() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("lock");
        let first = lock_exclusive(&path, || panic!("nobody holds it yet")).expect("lock");
        let (sender, receiver) = std::sync::mpsc::channel();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut waited = false;
                let second = lock_exclusive(&path, || waited = true).expect("lock");
                sender.send(waited).expect("send");
                drop(second);
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(receiver.try_recv().is_err(), "the second lock must wait");
        drop(first);
        assert!(receiver.recv().expect("the second lock is taken"));
        waiter.join().expect("thread");
    }

    #[test]
    fn a_lock_held_too_long_times_out_with_a_clear_error() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("lock");
        let _held = lock_exclusive(&path, || panic!("nobody holds it yet")).expect("lock");
        let mut waited = false;
        let error = lock_exclusive_within(&path, Duration::ZERO, || waited = true)
            .expect_err("held by another");
        assert!(waited);
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(
            error
                .to_string()
                .contains("another declenv command holds it")
        );
    }

    #[test]
    fn replaces_content_and_leaves_no_temporary_files() {
        let directory = tempfile::tempdir().expect("tempdir");
        let target = directory.path().join("file");
        write_atomic(&target, b"old").expect("first write");
        write_atomic(&target, b"new").expect("second write");
        assert_eq!(fs_err::read(&target).expect("read"), b"new");
        let names: Vec<_> = fs_err::read_dir(directory.path())
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("file")]);
    }

    #[test]
    fn keeps_the_permissions_of_the_file_it_replaces() {
        let directory = tempfile::tempdir().expect("tempdir");
        let target = directory.path().join("profile.toml");
        write_atomic(&target, b"new file").expect("first write");
        let mode = |path: &Path| fs_err::metadata(path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&target), 0o644);
        fs_err::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        write_atomic(&target, b"second").expect("second write");
        assert_eq!(mode(&target), 0o640);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let directory = tempfile::tempdir().expect("tempdir");
        let target = directory.path().join("missing").join("file");
        assert!(write_atomic(&target, b"x").is_err());
    }
}
