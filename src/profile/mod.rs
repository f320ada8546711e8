//! Profiles on disk: generation links, the profile link, the profile lock, GC roots and
//! declenv's metadata about each generation.
//!
//! I/O: this module acts on the decisions of [`crate::plan::generations`] and never decides
//! anything those pure rules decide. It never prints: messages that `nix-env` prints go to a
//! caller-supplied callback as [`ProfileMessage`] values.

pub mod build;
pub mod declarative;
pub mod gc_lock;
pub mod generations;
pub mod init;
pub mod lock;
pub mod realise;

pub use gc_lock::{GcLock, GcLockError, GcLockMode};
pub use generations::{
    CreatedGeneration, DeclarativeRecord, DiscoveredGeneration, GenerationMetadata, Generations,
    LockedProfile, Profile, ProfileError, ProfileLayout, ProfileToken, Provenance,
};
pub use lock::{LockError, LockOptions, ProfileLock};

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::plan::generations::Switch;

/// Something `nix-env` would print on stderr while working on a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileMessage {
    /// Another process holds the profile lock; we wait for it.
    WaitingForLock {
        /// The profile.
        profile: PathBuf,
    },
    /// A garbage collection holds the GC lock (or, for the collector, commands that add to
    /// the store do); we wait for it.
    WaitingForGc {
        /// The lock file.
        lock: PathBuf,
    },
    /// The profile link moves (also reported under `--dry-run`, where nothing moves).
    Switching(Switch),
    /// A generation link is removed.
    Removing {
        /// Its number.
        number: u32,
    },
    /// Under `--dry-run`: a generation link would be removed.
    WouldRemove {
        /// Its number.
        number: u32,
    },
    /// A line Nix printed while building for the Nix backend (`building '…'`, a build log).
    Nix(String),
}

impl fmt::Display for ProfileMessage {
    /// Nix 2.8's wording.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WaitingForLock { profile } => {
                write!(
                    formatter,
                    "waiting for lock on profile '{}'",
                    profile.display()
                )
            }
            Self::WaitingForGc { lock } => write!(
                formatter,
                "waiting for the garbage collector's lock '{}'",
                lock.display()
            ),
            Self::Switching(switch) => switch.fmt(formatter),
            Self::Removing { number } => write!(formatter, "removing profile version {number}"),
            Self::WouldRemove { number } => {
                write!(formatter, "would remove profile version {number}")
            }
            Self::Nix(line) => formatter.write_str(line),
        }
    }
}

/// An I/O error as C's `strerror` words it (what Nix prints), without Rust's `(os error N)`.
pub(crate) fn describe_io_error(error: &io::Error) -> String {
    let text = error.to_string();
    match error.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .map_or_else(|| text.clone(), str::to_owned),
        None => text,
    }
}
