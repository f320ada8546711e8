//! Filesystem primitives with the guarantees the rest of declenv relies on.
//!
//! Owns atomic file replacement: a reader sees the old content or the new, never a torn file,
//! and a crash leaves at worst a stray temporary file; and exclusive file locks, which the
//! kernel releases when their holder exits. Knows nothing about what it writes.

use std::io::{self, Write};
use std::path::Path;

/// Writes `contents` to `path` atomically: a temporary file in the same directory, flushed and
/// synced, then renamed over the target; the directory is synced so the rename is durable.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temporary = tempfile::Builder::new()
        .prefix(".declenv-tmp-")
        .tempfile_in(directory)?;
    temporary.write_all(contents)?;
    temporary.as_file().sync_all()?;
    temporary.persist(path).map_err(|error| error.error)?;
    fs_err::File::open(directory)?.sync_all()?;
    Ok(())
}

/// An exclusive `flock` on a file, held until dropped (or until the process exits, however it
/// exits: the kernel releases it).
#[derive(Debug)]
pub struct FileLock {
    _file: std::fs::File,
}

/// Takes an exclusive lock on `path`, creating the file if needed; calls `waiting` once, before
/// blocking, when another process holds it. The file stays: removing a lock file while someone
/// waits on it would let a third process lock a new file with the same name.
pub fn lock_exclusive(path: &Path, waiting: impl FnOnce()) -> io::Result<FileLock> {
    let file = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?
        .into_parts()
        .0;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            waiting();
            file.lock()?;
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(error),
    }
    Ok(FileLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn missing_directory_is_an_error() {
        let directory = tempfile::tempdir().expect("tempdir");
        let target = directory.path().join("missing").join("file");
        assert!(write_atomic(&target, b"x").is_err());
    }
}
