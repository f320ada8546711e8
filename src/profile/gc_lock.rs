//! The garbage collector's lock, `ROOT/nix/var/declenv/gc.lock`: what keeps `declenv gc` from
//! deleting a store path that a running command has added (or found valid) but not yet rooted.
//!
//! A command that adds paths and then links them into a generation (`apply`, the `nix-env`
//! writes, the watcher) holds it **shared** from before its first store add until the
//! generation link and its GC root exist; `declenv gc` holds it **exclusively** while it finds
//! roots and deletes. So a path valid when an apply looks at it stays valid until the
//! generation that uses it roots it, and a collection never sees a generation half made.
//! Several applies share it; a collection waits for the applies in progress (and they for it),
//! each reporting once that it waits, up to a timeout. Nix's own collector uses `gc.lock` the
//! same way; declenv's is its own file, since its registrations are its own.
//!
//! Owns opening, waiting for and releasing that lock. Never prints: waiting is reported
//! through a callback.

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest pause between two attempts while waiting.
const LONGEST_POLL: Duration = Duration::from_millis(50);

/// How the lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcLockMode {
    /// By a command that adds paths and links them (many at once).
    Shared,
    /// By the garbage collector (alone).
    Exclusive,
}

/// Why the garbage collector's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum GcLockError {
    /// The lock file could not be opened or created.
    #[error("cannot open the garbage collector's lock `{}`", path.display())]
    Open {
        /// The lock file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// `flock` failed.
    #[error("cannot lock the garbage collector's lock `{}`", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// Another process held the lock for longer than the timeout.
    #[error(
        "timed out after {} s waiting for the garbage collector's lock `{}`",
        waited.as_secs(),
        path.display()
    )]
    Timeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// How we wanted it.
        mode: GcLockMode,
    },
}

impl GcLockError {
    /// A hint for the user, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Timeout {
                mode: GcLockMode::Shared,
                ..
            } => Some(
                "a `declenv gc` is deleting store paths; run this again once it has finished"
                    .to_owned(),
            ),
            Self::Timeout {
                mode: GcLockMode::Exclusive,
                ..
            } => Some(
                "other declenv commands are adding to the store; run `declenv gc` again once \
                 they have finished"
                    .to_owned(),
            ),
            Self::Open { .. } | Self::Lock { .. } => None,
        }
    }
}

/// The garbage collector's lock, held until dropped (or until the process exits, however it
/// exits: the kernel releases it).
#[derive(Debug)]
pub struct GcLock {
    _file: File,
}

/// The lock file under a root.
#[must_use]
pub fn lock_path(root: &Path) -> PathBuf {
    root.join("nix").join("var").join("declenv").join("gc.lock")
}

impl GcLock {
    /// Takes the lock at `path` in `mode`, waiting for other holders up to `timeout` (`None`:
    /// as long as it takes); calls `waiting` once, before the first wait.
    pub fn acquire(
        path: &Path,
        mode: GcLockMode,
        timeout: Option<Duration>,
        waiting: &mut dyn FnMut(),
    ) -> Result<Self, GcLockError> {
        let open_error = |source| GcLockError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(open_error)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(open_error)?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        let mut announced = false;
        loop {
            let attempt = match mode {
                GcLockMode::Shared => file.try_lock_shared(),
                GcLockMode::Exclusive => file.try_lock(),
            };
            match attempt {
                Ok(()) => return Ok(Self { _file: file }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(source)) => {
                    return Err(GcLockError::Lock {
                        path: path.to_owned(),
                        source,
                    });
                }
            }
            if !announced {
                announced = true;
                waiting();
            }
            if timeout.is_some_and(|timeout| started.elapsed() >= timeout) {
                return Err(GcLockError::Timeout {
                    path: path.to_owned(),
                    waited: started.elapsed(),
                    mode,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(LONGEST_POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(path: &Path, mode: GcLockMode) -> Result<GcLock, GcLockError> {
        GcLock::acquire(path, mode, Some(Duration::ZERO), &mut || {})
    }

    #[test]
    fn shared_holders_coexist_and_exclude_the_collector() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = lock_path(directory.path());
        let first = take(&path, GcLockMode::Shared).expect("shared");
        let second = take(&path, GcLockMode::Shared).expect("shared again");
        let mut waited = false;
        let error = GcLock::acquire(
            &path,
            GcLockMode::Exclusive,
            Some(Duration::ZERO),
            &mut || {
                waited = true;
            },
        )
        .expect_err("the collector must wait");
        assert!(waited, "waiting is reported");
        assert!(matches!(
            error,
            GcLockError::Timeout {
                mode: GcLockMode::Exclusive,
                ..
            }
        ));
        assert!(error.hint().is_some());
        drop((first, second));
        let collector = take(&path, GcLockMode::Exclusive).expect("exclusive once they are gone");
        assert!(
            take(&path, GcLockMode::Shared).is_err(),
            "applies wait for it"
        );
        drop(collector);
    }

    #[test]
    fn a_waiter_gets_the_lock_once_it_is_released() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = lock_path(directory.path());
        let collector = take(&path, GcLockMode::Exclusive).expect("exclusive");
        let (sender, receiver) = std::sync::mpsc::channel();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                GcLock::acquire(&path, GcLockMode::Shared, None, &mut || {
                    sender.send(()).expect("send");
                })
                .map(drop)
            })
        };
        receiver.recv().expect("the waiter reports that it waits");
        drop(collector);
        waiter
            .join()
            .expect("thread")
            .expect("the waiter gets the lock");
    }
}
