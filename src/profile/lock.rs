//! The profile lock: Nix's `flock` on `P.lock`, so that declenv and `nix-env` exclude each
//! other, with Nix's stale-lock protocol so that no `.lock` file is left behind.
//!
//! Owns opening, waiting for, checking and releasing the lock file. Knows nothing about
//! generations; never prints (waiting is reported through a callback).
//!
//! The protocol (Nix's `PathLocks`): open or create `P.lock` with mode 0600 and take an
//! exclusive `flock`. The holder releases by unlinking the file and then writing one byte to it
//! while still holding the lock. A waiter that gets the lock on a file that was unlinked (or
//! replaced) meanwhile, or that is non-empty and no longer linked, holds a lock nobody else will
//! respect, so it opens the path again.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::ProfileMessage;

/// How long [`ProfileLock::acquire`] waits by default before giving up.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest pause between two attempts while waiting.
const LONGEST_POLL: Duration = Duration::from_millis(50);

/// How to wait for a profile lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockOptions {
    /// How long to wait for another holder; `None` waits as long as it takes, as Nix does.
    pub timeout: Option<Duration>,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            timeout: Some(DEFAULT_LOCK_TIMEOUT),
        }
    }
}

/// Why a profile lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file could not be opened or created (for example, the profile's directory does
    /// not exist or is not writable).
    #[error("cannot open lock file `{}` of profile `{}`", lock_path.display(), profile.display())]
    Open {
        /// The profile.
        profile: PathBuf,
        /// Its lock file.
        lock_path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// `flock` or `fstat` on the lock file failed.
    #[error("cannot lock `{}` of profile `{}`", lock_path.display(), profile.display())]
    Lock {
        /// The profile.
        profile: PathBuf,
        /// Its lock file.
        lock_path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// Another process held the lock for longer than the timeout.
    #[error(
        "timed out after {} s waiting for lock on profile `{}` (lock file `{}`)",
        waited.as_secs(),
        profile.display(),
        lock_path.display()
    )]
    Timeout {
        /// The profile.
        profile: PathBuf,
        /// Its lock file.
        lock_path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
}

impl LockError {
    /// A hint for the user, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Timeout { lock_path, .. } => Some(format!(
                "another declenv or nix-env command is using this profile; wait for it to finish \
                 (a lock held by a process that has exited is released by the kernel, so \
                 deleting `{}` does not help)",
                lock_path.display()
            )),
            Self::Open { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                Some("the profile's directory must exist".to_owned())
            }
            Self::Open {
                source, lock_path, ..
            } if matches!(
                source.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            ) =>
            {
                Some(format!(
                    "the profile's directory `{}` is not writable by you: use a profile of your \
                     own (`--profile PATH`), or run this as the directory's owner",
                    lock_path.parent().unwrap_or(Path::new("/")).display()
                ))
            }
            Self::Open { .. } | Self::Lock { .. } => None,
        }
    }

    /// The message `nix-env` 2.8 prints for the same failure, where there is one.
    #[must_use]
    pub fn nix_message(&self) -> String {
        match self {
            Self::Open {
                lock_path, source, ..
            } => format!(
                "opening lock file '{}': {}",
                lock_path.display(),
                super::describe_io_error(source)
            ),
            Self::Lock { .. } | Self::Timeout { .. } => self.to_string(),
        }
    }
}

/// An exclusive lock on a profile, held until [`ProfileLock::release`] or drop.
#[derive(Debug)]
pub struct ProfileLock {
    file: Option<File>,
    profile: PathBuf,
    lock_path: PathBuf,
}

/// The lock file of a profile: `P.lock`, next to the profile link.
#[must_use]
pub fn lock_path(profile: &Path) -> PathBuf {
    let mut path = profile.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
}

impl ProfileLock {
    /// Takes the lock on `profile`, waiting for another holder up to `options.timeout`. The first
    /// time it has to wait it reports [`ProfileMessage::WaitingForLock`].
    pub fn acquire(
        profile: &Path,
        options: LockOptions,
        report: &mut dyn FnMut(&ProfileMessage),
    ) -> Result<Self, LockError> {
        let lock_path = lock_path(profile);
        let started = Instant::now();
        let deadline = options.timeout.map(|timeout| started + timeout);
        let mut announced = false;
        loop {
            let file = open_lock_file(profile, &lock_path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    if !announced {
                        announced = true;
                        report(&ProfileMessage::WaitingForLock {
                            profile: profile.to_owned(),
                        });
                    }
                    wait_for(&file, deadline, started, profile, &lock_path)?;
                }
                Err(TryLockError::Error(source)) => {
                    return Err(lock_error(profile, &lock_path, source));
                }
            }
            if is_current_lock_file(&file, &lock_path)
                .map_err(|source| lock_error(profile, &lock_path, source))?
            {
                return Ok(Self {
                    file: Some(file),
                    profile: profile.to_owned(),
                    lock_path,
                });
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(LockError::Timeout {
                    profile: profile.to_owned(),
                    lock_path,
                    waited: started.elapsed(),
                });
            }
        }
    }

    /// Takes the lock only if nobody holds it; `Ok(None)` when someone does.
    pub fn try_acquire(profile: &Path) -> Result<Option<Self>, LockError> {
        let lock_path = lock_path(profile);
        loop {
            let file = open_lock_file(profile, &lock_path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(source)) => {
                    return Err(lock_error(profile, &lock_path, source));
                }
            }
            if is_current_lock_file(&file, &lock_path)
                .map_err(|source| lock_error(profile, &lock_path, source))?
            {
                return Ok(Some(Self {
                    file: Some(file),
                    profile: profile.to_owned(),
                    lock_path,
                }));
            }
        }
    }

    /// The profile this lock is for.
    #[must_use]
    pub fn profile(&self) -> &Path {
        &self.profile
    }

    /// The lock file.
    #[must_use]
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// Releases the lock and removes the lock file.
    ///
    /// Removing the file is tidiness, not correctness, so failures are ignored, as Nix does; but
    /// the file is marked stale (one byte written) only once it is really unlinked, so that a
    /// file we failed to unlink stays usable rather than sending every later locker round a
    /// retry loop.
    pub fn release(mut self) {
        self.release_file();
    }

    fn release_file(&mut self) {
        let Some(mut file) = self.file.take() else {
            return;
        };
        let unlinked = match std::fs::remove_file(&self.lock_path) {
            Ok(()) => true,
            Err(error) => error.kind() == io::ErrorKind::NotFound,
        };
        if unlinked {
            let _ = file.write_all(b"d");
        }
        drop(file);
    }
}

impl Drop for ProfileLock {
    fn drop(&mut self) {
        self.release_file();
    }
}

fn open_lock_file(profile: &Path, lock_path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(lock_path)
        .map_err(|source| LockError::Open {
            profile: profile.to_owned(),
            lock_path: lock_path.to_owned(),
            source,
        })
}

fn lock_error(profile: &Path, lock_path: &Path, source: io::Error) -> LockError {
    LockError::Lock {
        profile: profile.to_owned(),
        lock_path: lock_path.to_owned(),
        source,
    }
}

/// Blocks until `file` is locked: for ever without a deadline, else by polling with a growing
/// pause up to [`LONGEST_POLL`].
fn wait_for(
    file: &File,
    deadline: Option<Instant>,
    started: Instant,
    profile: &Path,
    lock_path: &Path,
) -> Result<(), LockError> {
    let Some(deadline) = deadline else {
        return file
            .lock()
            .map_err(|source| lock_error(profile, lock_path, source));
    };
    let mut pause = Duration::from_millis(1);
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(LockError::Timeout {
                profile: profile.to_owned(),
                lock_path: lock_path.to_owned(),
                waited: started.elapsed(),
            });
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(LONGEST_POLL);
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(source)) => {
                return Err(lock_error(profile, lock_path, source));
            }
        }
    }
}

/// Whether the locked `file` is still the lock file at `lock_path`. A file that was unlinked or
/// replaced while we waited is stale: its holder released it, and a newcomer may already hold a
/// fresh one. A stale mark (non-empty size) on a file that is still linked can only come from a
/// holder that failed to unlink it; we hold the only lock on it, so we clear the mark and use it.
fn is_current_lock_file(file: &File, lock_path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    let on_disk = match std::fs::symlink_metadata(lock_path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    if held.nlink() == 0 || held.dev() != on_disk.dev() || held.ino() != on_disk.ino() {
        return Ok(false);
    }
    if held.len() != 0 {
        file.set_len(0)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    fn no_report() -> impl FnMut(&ProfileMessage) {
        |_| {}
    }

    #[test]
    fn lock_file_has_mode_0600_and_is_removed_on_release() {
        let directory = tempfile::tempdir().expect("tempdir");
        let profile = directory.path().join("prof");
        let lock =
            ProfileLock::acquire(&profile, LockOptions::default(), &mut no_report()).expect("lock");
        let mode = std::fs::metadata(lock.lock_path())
            .expect("lock file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        lock.release();
        assert!(!lock_path(&profile).exists());
    }

    #[test]
    fn drop_releases_too() {
        let directory = tempfile::tempdir().expect("tempdir");
        let profile = directory.path().join("prof");
        drop(
            ProfileLock::acquire(&profile, LockOptions::default(), &mut no_report()).expect("lock"),
        );
        assert!(!lock_path(&profile).exists());
        assert!(ProfileLock::try_acquire(&profile).expect("try").is_some());
    }

    #[test]
    fn a_second_locker_waits_reports_and_times_out() {
        let directory = tempfile::tempdir().expect("tempdir");
        let profile = directory.path().join("prof");
        let held =
            ProfileLock::acquire(&profile, LockOptions::default(), &mut no_report()).expect("lock");
        assert!(ProfileLock::try_acquire(&profile).expect("try").is_none());
        let mut messages = Vec::new();
        let error = ProfileLock::acquire(
            &profile,
            LockOptions {
                timeout: Some(Duration::from_millis(100)),
            },
            &mut |message: &ProfileMessage| messages.push(message.to_string()),
        )
        .expect_err("times out");
        assert!(matches!(error, LockError::Timeout { .. }), "{error:?}");
        assert!(error.hint().is_some());
        assert_eq!(
            messages,
            [format!(
                "waiting for lock on profile '{}'",
                profile.display()
            )]
        );
        held.release();
    }

    #[test]
    fn a_waiter_gets_the_lock_after_release_and_no_file_remains() {
        let directory = tempfile::tempdir().expect("tempdir");
        let profile = directory.path().join("prof");
        let held =
            ProfileLock::acquire(&profile, LockOptions::default(), &mut no_report()).expect("lock");
        let waiter_profile = profile.clone();
        let waiter = std::thread::spawn(move || {
            let mut waited = false;
            let lock = ProfileLock::acquire(&waiter_profile, LockOptions::default(), &mut |_| {
                waited = true;
            });
            (lock.map(ProfileLock::release).is_ok(), waited)
        });
        std::thread::sleep(Duration::from_millis(100));
        held.release();
        let (acquired, waited) = waiter.join().expect("waiter");
        assert!(acquired && waited);
        assert!(!lock_path(&profile).exists());
    }

    #[test]
    fn a_stale_mark_on_a_linked_file_is_cleared_not_retried_for_ever() {
        let directory = tempfile::tempdir().expect("tempdir");
        let profile = directory.path().join("prof");
        std::fs::write(lock_path(&profile), b"d").expect("stale lock file");
        let lock = ProfileLock::try_acquire(&profile)
            .expect("try")
            .expect("acquired");
        lock.release();
        assert!(!lock_path(&profile).exists());
    }

    #[test]
    fn missing_directory_is_an_open_error_in_nix_words() {
        let directory = tempfile::tempdir().expect("tempdir");
        let profile = directory.path().join("missing").join("prof");
        let error = ProfileLock::acquire(&profile, LockOptions::default(), &mut no_report())
            .expect_err("no directory");
        assert_eq!(
            error.nix_message(),
            format!(
                "opening lock file '{}': No such file or directory",
                lock_path(&profile).display()
            )
        );
        assert!(error.hint().is_some());
    }

    #[test]
    fn many_threads_exclude_each_other() {
        let directory = tempfile::tempdir().expect("tempdir");
        let profile = directory.path().join("prof");
        let inside = Arc::new(AtomicUsize::new(0));
        let entered = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (profile, inside, entered, barrier) = (
                    profile.clone(),
                    Arc::clone(&inside),
                    Arc::clone(&entered),
                    Arc::clone(&barrier),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..20 {
                        let lock =
                            ProfileLock::acquire(&profile, LockOptions::default(), &mut |_| {})
                                .expect("lock");
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        entered.fetch_add(1, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                        lock.release();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        assert_eq!(entered.load(Ordering::SeqCst), 160);
        assert!(!lock_path(&profile).exists());
    }
}
