//! Generations of a profile on disk, laid out exactly as Nix 2.8 lays them out: the profile
//! link `D/B` holds the relative text `B-N-link`, and each generation `D/B-N-link` is a symlink
//! to an absolute store path.
//!
//! Owns discovery (reading `D`, the link's own mtime as creation time), creating generation
//! links, switching the profile link, rollback, `--switch-generation`, deletion, the indirect GC
//! roots Nix makes for generation links, and declenv's metadata about each generation. Every
//! change happens under the profile lock ([`LockedProfile`]) and every link appears by an
//! atomic rename. Decisions (numbers, targets, what to delete) come from
//! [`crate::plan::generations`]; this module must not make them itself.
//!
//! Metadata lives in `METADATA/<nixbase32(sha1(P))>-B/<N>.json` (see [`ProfileLayout`]), not
//! next to the links: Nix counts every entry named `B-…-link…` as a generation, whatever its
//! type (`B-20-link.json` would be generation 20), and `nix-collect-garbage -d` and other tools
//! scan profile directories expecting only Nix's own names.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use super::gc_lock::{GcLock, GcLockError, GcLockMode};
use super::lock::{LockOptions, ProfileLock};
use super::{LockError, ProfileMessage, describe_io_error};
use crate::fault::Point;
use crate::plan::generations::{
    self as rules, DeletePolicy, Generation, GenerationNumbersExhausted, HighestGeneration,
    NextGeneration, Switch, SwitchError,
};
use crate::store::nixbase32;

/// The version of the metadata files' format.
const METADATA_FORMAT: u32 = 1;

/// Distinguishes temporary names made by one process.
static TEMPORARY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Where a profile's companions live outside its own directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileLayout {
    /// Nix's `gcroots/auto`: one indirect root per generation link.
    pub gcroots_auto: PathBuf,
    /// declenv's generation metadata, one directory per profile.
    pub metadata: PathBuf,
    /// The garbage collector's lock ([`super::gc_lock`]).
    pub gc_lock: PathBuf,
    /// Whether a root `gcroots_auto` does not let us write is registered through Nix instead
    /// (`nix-store --add-root`, which asks the daemon on a multi-user install, as `nix-env`
    /// does).
    pub roots_through_nix: bool,
}

impl ProfileLayout {
    /// The layout of a Nix chroot store at `root`: `ROOT/nix/var/nix/gcroots/auto`,
    /// `ROOT/nix/var/declenv/generations` and `ROOT/nix/var/declenv/gc.lock`.
    #[must_use]
    pub fn under_root(root: &Path) -> Self {
        let var = root.join("nix").join("var");
        Self {
            gcroots_auto: var.join("nix").join("gcroots").join("auto"),
            metadata: var.join("declenv").join("generations"),
            gc_lock: super::gc_lock::lock_path(root),
            roots_through_nix: false,
        }
    }

    /// The layout of a profile of the Nix backend: generation links rooted in Nix's own
    /// `gcroots/auto` (as `nix-env` roots them), declenv's metadata and lock under `root`.
    #[must_use]
    pub fn for_nix(root: &Path, gcroots_auto: &Path) -> Self {
        Self {
            gcroots_auto: gcroots_auto.to_owned(),
            roots_through_nix: true,
            ..Self::under_root(root)
        }
    }
}

/// What went wrong with a profile. Every variant names the profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The path cannot be a profile (no final name, or the current directory is unknown).
    #[error("`{}` cannot be a profile: it has no file name", profile.display())]
    InvalidPath {
        /// The path as given.
        profile: PathBuf,
    },
    /// Taking the profile lock failed.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Taking the garbage collector's lock failed.
    #[error(transparent)]
    GcLock(#[from] GcLockError),
    /// The profile's directory could not be read.
    #[error("cannot read directory `{}` of profile `{}`", directory.display(), profile.display())]
    ReadDirectory {
        /// The profile.
        profile: PathBuf,
        /// Its directory.
        directory: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A link or entry of the profile could not be inspected.
    #[error("cannot inspect `{}` of profile `{}`", path.display(), profile.display())]
    Inspect {
        /// The profile.
        profile: PathBuf,
        /// The entry.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The profile path exists but is not a symlink.
    #[error("profile `{}` is not a symlink", profile.display())]
    NotASymlink {
        /// The profile.
        profile: PathBuf,
    },
    /// The profile link changed between the start of an operation and its commit.
    #[error(
        "profile `{}` changed while this command was working (it was {}, it is now {}); nothing was changed",
        profile.display(),
        describe_token(expected),
        describe_token(found)
    )]
    Changed {
        /// The profile.
        profile: PathBuf,
        /// The link text read at the start.
        expected: ProfileToken,
        /// The link text found under the lock.
        found: ProfileToken,
    },
    /// No generation number is left.
    #[error("cannot add a generation to profile `{}`", profile.display())]
    Exhausted {
        /// The profile.
        profile: PathBuf,
        /// The highest number.
        #[source]
        source: GenerationNumbersExhausted,
    },
    /// The next generation's link name is taken by something that is not a symlink.
    #[error("cannot create generation link `{}` of profile `{}`: something that is not a symlink is in the way", path.display(), profile.display())]
    AlreadyExists {
        /// The profile.
        profile: PathBuf,
        /// The generation link.
        path: PathBuf,
    },
    /// A link (generation, profile, GC root) could not be written.
    #[error("cannot write link `{}` of profile `{}`", path.display(), profile.display())]
    WriteLink {
        /// The profile.
        profile: PathBuf,
        /// The link.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// declenv's metadata for a generation could not be written.
    #[error("cannot write generation metadata `{}` of profile `{}`", path.display(), profile.display())]
    WriteMetadata {
        /// The profile.
        profile: PathBuf,
        /// The metadata file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// `--rollback` or `--switch-generation` has no target.
    #[error("cannot switch profile `{}`", profile.display())]
    Switch {
        /// The profile.
        profile: PathBuf,
        /// Why, in Nix's words.
        #[source]
        source: SwitchError,
    },
    /// A list of generations to delete names the current one.
    #[error("cannot delete generation {number} of profile `{}`: it is the current generation", profile.display())]
    DeleteCurrent {
        /// The profile.
        profile: PathBuf,
        /// The current generation.
        number: u32,
    },
    /// A list of generations to delete names the generation an absolute profile link points at.
    #[error("cannot delete generation {number} of profile `{}`: the profile link points at it", profile.display())]
    DeleteLinkTarget {
        /// The profile.
        profile: PathBuf,
        /// The generation.
        number: u32,
    },
    /// An entry to delete is not a symlink (a file or directory named like a generation link).
    #[error("cannot delete `{}` of profile `{}`: it is named like a generation link but is not a symlink", path.display(), profile.display())]
    NotAGenerationLink {
        /// The profile.
        profile: PathBuf,
        /// The entry.
        path: PathBuf,
    },
    /// A generation link could not be removed.
    #[error("cannot remove generation link `{}` of profile `{}`", path.display(), profile.display())]
    Unlink {
        /// The profile.
        profile: PathBuf,
        /// The link.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

impl ProfileError {
    /// The message `nix-env` 2.8 prints (after `error: `) for the same failure, where it has
    /// one, verbatim: the refusal to delete the current generation keeps Nix's stray apostrophe.
    #[must_use]
    pub fn nix_message(&self) -> String {
        match self {
            Self::Lock(error) => error.nix_message(),
            Self::NotASymlink { profile } => format!("'{}' is not a symlink", profile.display()),
            Self::Switch { source, .. } => source.to_string(),
            Self::DeleteCurrent { profile, .. } => format!(
                "cannot delete current version of profile {}'",
                profile.display()
            ),
            Self::Unlink { path, source, .. } => format!(
                "cannot unlink '{}': {}",
                path.display(),
                describe_io_error(source)
            ),
            Self::AlreadyExists { path, .. } => {
                format!("cannot create symlink '{}'; already exists", path.display())
            }
            Self::Changed { profile, .. } => format!(
                "profile '{}' changed while we were busy; restarting",
                profile.display()
            ),
            _ => self.to_string(),
        }
    }

    /// A hint for the user, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Lock(error) => error.hint(),
            Self::GcLock(error) => error.hint(),
            Self::Changed { .. } => {
                Some("another command changed the profile; run this one again".to_owned())
            }
            Self::NotAGenerationLink { .. } => {
                Some("remove or rename that entry; declenv only deletes symlinks".to_owned())
            }
            Self::NotASymlink { .. } => Some(
                "a profile is a symlink to its current generation; move this file away".to_owned(),
            ),
            _ => None,
        }
    }
}

fn describe_token(token: &ProfileToken) -> String {
    match token.link_text() {
        Some(text) => format!("a link to `{}`", text.to_string_lossy()),
        None => "missing".to_owned(),
    }
}

/// The text of the profile link at some moment (`None` when there was no link), compared to
/// detect a concurrent change, as Nix compares `readlink(P)` before and after building.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProfileToken {
    link_text: Option<Vec<u8>>,
}

impl ProfileToken {
    /// The link text, or `None` when the profile did not exist.
    #[must_use]
    pub fn link_text(&self) -> Option<&OsStr> {
        self.link_text.as_deref().map(OsStr::from_bytes)
    }
}

/// One directory entry that counts as a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredGeneration {
    /// The generation number parsed from the name.
    pub number: u32,
    /// The entry's own modification time (`lstat`), in seconds since the Unix epoch.
    pub creation_time: i64,
    /// The entry's name in the profile's directory (usually `B-N-link`, but Nix also counts
    /// names such as `B-07-link`).
    pub file_name: OsString,
    /// Whether the entry is a symlink (Nix counts any file type).
    pub is_symlink: bool,
}

/// The generations of a profile at one moment, sorted by number (then name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generations {
    /// Every entry counted as a generation.
    pub entries: Vec<DiscoveredGeneration>,
    /// The current generation (only a relative profile link names one).
    pub current: Option<u32>,
    /// The profile link's text.
    pub token: ProfileToken,
    /// The generation an absolute profile link points at, when Nix sees no current one.
    pub absolute_target: Option<u32>,
}

impl Generations {
    /// The generations as the pure rules take them.
    #[must_use]
    pub fn as_rules_input(&self) -> Vec<Generation> {
        self.entries
            .iter()
            .map(|entry| Generation {
                number: entry.number,
                creation_time: entry.creation_time,
            })
            .collect()
    }

    /// The `--list-generations` output with times in `time_zone`.
    #[must_use]
    pub fn render_list(&self, time_zone: &jiff::tz::TimeZone) -> String {
        rules::format_list(&self.as_rules_input(), self.current, |seconds| {
            jiff::Timestamp::from_second(seconds)
                .map(|timestamp| time_zone.to_offset(timestamp).seconds())
                .unwrap_or(0)
        })
    }

    /// The `--list-generations` output in the local time zone (`TZ`, else the system's), as Nix
    /// prints it with `localtime_r`.
    #[must_use]
    pub fn render_list_local(&self) -> String {
        let time_zone = jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC);
        self.render_list(&time_zone)
    }

    /// The last entry with this number (the one `nix-env -G` switches to).
    #[must_use]
    pub fn entry(&self, number: u32) -> Option<&DiscoveredGeneration> {
        self.entries
            .iter()
            .rev()
            .find(|entry| entry.number == number)
    }
}

/// Who made a new generation, recorded in its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Provenance {
    /// The command line that made it.
    pub command: Vec<String>,
    /// The spec and lockfile it was built from, when it was built from one.
    pub declarative: Option<DeclarativeRecord>,
}

/// The spec and lockfile a generation was built from, so that it can be restored, and which
/// element came from which spec entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclarativeRecord {
    /// The spec file's absolute path.
    pub spec_path: String,
    /// Its text.
    pub spec: String,
    /// The lockfile's text.
    pub lock: String,
    /// Spec id of each element, by the element's `outPath`.
    pub ids: std::collections::BTreeMap<String, String>,
}

/// declenv's record of one generation; `nix-env` neither reads nor writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationMetadata {
    /// The format version, 1.
    pub format: u32,
    /// The profile's absolute path.
    pub profile: String,
    /// The generation number.
    pub generation: u32,
    /// The store path the link points at.
    pub target: String,
    /// The link's modification time when it was made, in seconds since the Unix epoch.
    pub created: i64,
    /// The command that made it.
    pub command: Vec<String>,
    /// The generation that was current when it was made.
    pub parent: Option<u32>,
    /// The spec and lockfile it was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declarative: Option<DeclarativeRecord>,
}

/// The outcome of [`LockedProfile::create_generation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedGeneration {
    /// The generation's number.
    pub number: u32,
    /// Its link's path.
    pub path: PathBuf,
    /// Whether the highest generation already pointed at the target, so no link was made.
    pub reused: bool,
}

/// A profile: the link `D/B` and its generations `D/B-N-link`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    path: PathBuf,
    directory: PathBuf,
    name: OsString,
    layout: ProfileLayout,
}

impl Profile {
    /// The profile at `path`, made absolute against the current directory but not resolved
    /// through symlinks (as `nix-env -p` does).
    pub fn new(path: &Path, layout: ProfileLayout) -> Result<Self, ProfileError> {
        let invalid = || ProfileError::InvalidPath {
            profile: path.to_owned(),
        };
        let absolute = std::path::absolute(path).map_err(|_| invalid())?;
        let name = absolute.file_name().ok_or_else(invalid)?.to_owned();
        let directory = absolute.parent().ok_or_else(invalid)?.to_owned();
        Ok(Self {
            path: absolute,
            directory,
            name,
            layout,
        })
    }

    /// The profile link's absolute path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding the profile link and its generations.
    #[must_use]
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The profile's name `B`.
    #[must_use]
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// The canonical link of generation `number`: `D/B-N-link`.
    #[must_use]
    pub fn generation_path(&self, number: u32) -> PathBuf {
        self.directory
            .join(OsString::from_vec(rules::generation_link_name(
                self.name.as_bytes(),
                number,
            )))
    }

    /// The directory of this profile's metadata: `METADATA/<nixbase32(sha1(P))>-B`, keyed by the
    /// whole path because profiles in different directories may share a name.
    #[must_use]
    pub fn metadata_directory(&self) -> PathBuf {
        let mut key = OsString::from(nixbase32::encode(&Sha1::digest(
            self.path.as_os_str().as_bytes(),
        )));
        key.push("-");
        key.push(&self.name);
        self.layout.metadata.join(key)
    }

    /// The indirect GC root Nix makes for a generation link:
    /// `gcroots/auto/<nixbase32(sha1(absolute link path))>`.
    #[must_use]
    pub fn gc_root_path(&self, link: &Path) -> PathBuf {
        self.layout
            .gcroots_auto
            .join(nixbase32::encode(&Sha1::digest(
                link.as_os_str().as_bytes(),
            )))
    }

    /// The profile link's text now, to hand to [`LockedProfile::expect_current`] later.
    pub fn read_token(&self) -> Result<ProfileToken, ProfileError> {
        match std::fs::read_link(&self.path) {
            Ok(text) => Ok(ProfileToken {
                link_text: Some(text.into_os_string().into_vec()),
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                Ok(ProfileToken { link_text: None })
            }
            Err(error) if error.kind() == io::ErrorKind::InvalidInput => {
                Err(ProfileError::NotASymlink {
                    profile: self.path.clone(),
                })
            }
            Err(source) => Err(ProfileError::Inspect {
                profile: self.path.clone(),
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Takes the profile lock, reporting [`ProfileMessage::WaitingForLock`] if it has to wait.
    pub fn lock(
        &self,
        options: LockOptions,
        report: &mut dyn FnMut(&ProfileMessage),
    ) -> Result<LockedProfile<'_>, ProfileError> {
        let lock = ProfileLock::acquire(&self.path, options, report)?;
        Ok(LockedProfile {
            profile: self,
            lock,
        })
    }

    /// Takes the garbage collector's lock shared, for as long as store paths added for this
    /// profile are not yet rooted by a generation link (see [`super::gc_lock`]), reporting
    /// [`ProfileMessage::WaitingForGc`] if a collection makes it wait.
    pub fn hold_gc_lock(
        &self,
        options: LockOptions,
        report: &mut dyn FnMut(&ProfileMessage),
    ) -> Result<GcLock, ProfileError> {
        let path = &self.layout.gc_lock;
        Ok(GcLock::acquire(
            path,
            GcLockMode::Shared,
            options.timeout,
            &mut || report(&ProfileMessage::WaitingForGc { lock: path.clone() }),
        )?)
    }

    /// The generations, read without the lock (a snapshot that may be stale at once).
    pub fn generations_unlocked(&self) -> Result<Generations, ProfileError> {
        let token = self.read_token()?;
        let read_error = |source| ProfileError::ReadDirectory {
            profile: self.path.clone(),
            directory: self.directory.clone(),
            source,
        };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&self.directory).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            let file_name = entry.file_name();
            let Some(number) =
                rules::parse_generation_link_name(self.name.as_bytes(), file_name.as_bytes())
            else {
                continue;
            };
            let path = self.directory.join(&file_name);
            let metadata = match std::fs::symlink_metadata(&path) {
                Ok(metadata) => metadata,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(ProfileError::Inspect {
                        profile: self.path.clone(),
                        path,
                        source,
                    });
                }
            };
            entries.push(DiscoveredGeneration {
                number,
                creation_time: metadata.mtime(),
                file_name,
                is_symlink: metadata.file_type().is_symlink(),
            });
        }
        entries.sort_by(|left, right| {
            (left.number, &left.file_name).cmp(&(right.number, &right.file_name))
        });
        let name = self.name.as_bytes();
        let current = token
            .link_text
            .as_deref()
            .and_then(|text| rules::parse_current_generation(name, text));
        let absolute_target = token.link_text.as_deref().and_then(|text| {
            rules::absolute_link_generation(self.directory.as_os_str().as_bytes(), name, text)
        });
        Ok(Generations {
            entries,
            current,
            token,
            absolute_target,
        })
    }

    /// declenv's metadata for a generation, if it has any that still describes this very link
    /// (same target and same creation time); metadata left by a deleted generation whose number
    /// was later reused by another tool is ignored.
    pub fn read_metadata(
        &self,
        generation: &DiscoveredGeneration,
    ) -> Result<Option<GenerationMetadata>, ProfileError> {
        let path = self.metadata_path(generation.number);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ProfileError::Inspect {
                    profile: self.path.clone(),
                    path,
                    source,
                });
            }
        };
        let Ok(metadata) = serde_json::from_slice::<GenerationMetadata>(&text) else {
            return Ok(None);
        };
        let link = self.directory.join(&generation.file_name);
        let target = std::fs::read_link(&link).ok();
        let describes_link = metadata.format == METADATA_FORMAT
            && metadata.generation == generation.number
            && metadata.created == generation.creation_time
            && target.is_some_and(|target| target.to_string_lossy() == metadata.target);
        Ok(describes_link.then_some(metadata))
    }

    fn metadata_path(&self, number: u32) -> PathBuf {
        self.metadata_directory().join(format!("{number}.json"))
    }

    /// `--list-generations`: the generations, read under the lock as Nix does.
    pub fn list_generations(
        &self,
        options: LockOptions,
        report: &mut dyn FnMut(&ProfileMessage),
    ) -> Result<Generations, ProfileError> {
        self.lock(options, report)?.generations()
    }

    /// Under the lock: checks `token`, then creates (or reuses) the generation for `target` and
    /// switches to it; the final step of every command that builds a new environment.
    pub fn commit(
        &self,
        token: &ProfileToken,
        target: &Path,
        provenance: &Provenance,
        options: LockOptions,
        report: &mut dyn FnMut(&ProfileMessage),
    ) -> Result<CreatedGeneration, ProfileError> {
        let locked = self.lock(options, report)?;
        locked.expect_current(token)?;
        let created = locked.create_generation(target, provenance)?;
        locked.switch_to_path(&created.path)?;
        Ok(created)
    }

    /// `--rollback` under the lock.
    pub fn rollback(
        &self,
        dry_run: bool,
        options: LockOptions,
        report: &mut dyn FnMut(&ProfileMessage),
    ) -> Result<Switch, ProfileError> {
        self.lock(options, report)?.rollback(dry_run, report)
    }

    /// `--switch-generation N` under the lock.
    pub fn switch_generation(
        &self,
        requested: u64,
        dry_run: bool,
        options: LockOptions,
        report: &mut dyn FnMut(&ProfileMessage),
    ) -> Result<Switch, ProfileError> {
        self.lock(options, report)?
            .switch_generation(requested, dry_run, report)
    }

    /// `--delete-generations` under the lock; `now` in seconds since the Unix epoch.
    pub fn delete_generations(
        &self,
        policy: &DeletePolicy,
        now: i64,
        dry_run: bool,
        options: LockOptions,
        report: &mut dyn FnMut(&ProfileMessage),
    ) -> Result<Vec<u32>, ProfileError> {
        self.lock(options, report)?
            .delete_generations(policy, now, dry_run, report)
    }
}

/// A profile whose lock we hold; every change goes through here.
#[derive(Debug)]
pub struct LockedProfile<'profile> {
    profile: &'profile Profile,
    lock: ProfileLock,
}

impl LockedProfile<'_> {
    /// The profile.
    #[must_use]
    pub fn profile(&self) -> &Profile {
        self.profile
    }

    /// Releases the lock (dropping does the same).
    pub fn unlock(self) {
        self.lock.release();
    }

    /// The generations as they are now; stable while the lock is held (against declenv and
    /// `nix-env`, which take the same lock).
    pub fn generations(&self) -> Result<Generations, ProfileError> {
        self.profile.generations_unlocked()
    }

    /// Refuses to go on if the profile link no longer has the text `token` it had when the
    /// operation started: someone else switched the profile meanwhile, and committing would
    /// silently undo their change (Nix 2.8 restarts here and loses it, NixOS/nix#851).
    pub fn expect_current(&self, token: &ProfileToken) -> Result<(), ProfileError> {
        let found = self.profile.read_token()?;
        if &found == token {
            Ok(())
        } else {
            Err(ProfileError::Changed {
                profile: self.profile.path.clone(),
                expected: token.clone(),
                found,
            })
        }
    }

    /// Creates the generation for the environment at `target` (an absolute store path), or
    /// reuses the highest generation when it already points there. Makes the link, its indirect
    /// GC root and its metadata, all or nothing; does not switch.
    pub fn create_generation(
        &self,
        target: &Path,
        provenance: &Provenance,
    ) -> Result<CreatedGeneration, ProfileError> {
        let profile = self.profile;
        let generations = self.generations()?;
        let highest = generations.entries.last().map(|entry| {
            let path = profile.directory.join(&entry.file_name);
            HighestGeneration {
                number: entry.number,
                same_target: std::fs::read_link(path).is_ok_and(|text| text == target),
            }
        });
        let number = match rules::next_generation(highest) {
            Ok(NextGeneration::Reuse(number)) => {
                let path = generations.entry(number).map_or_else(
                    || profile.generation_path(number),
                    |entry| profile.directory.join(&entry.file_name),
                );
                // A run killed between making this link and its root may have left it without
                // one; reusing it must not leave the environment unprotected from GC.
                self.write_gc_root(&path, target)?;
                // One killed before the metadata left the generation without the spec and
                // lockfile it was built from: this run built the same environment, so its own
                // record describes it.
                if let Some(entry) = generations.entry(number)
                    && entry.is_symlink
                    && profile.read_metadata(entry)?.is_none()
                {
                    self.write_companions(&path, target, number, &generations, provenance)?;
                }
                return Ok(CreatedGeneration {
                    number,
                    path,
                    reused: true,
                });
            }
            Ok(NextGeneration::Create(number)) => number,
            Err(source) => {
                return Err(ProfileError::Exhausted {
                    profile: profile.path.clone(),
                    source,
                });
            }
        };
        let link = profile.generation_path(number);
        match std::fs::symlink_metadata(&link) {
            Ok(metadata) if !metadata.file_type().is_symlink() => {
                return Err(ProfileError::AlreadyExists {
                    profile: profile.path.clone(),
                    path: link,
                });
            }
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ProfileError::Inspect {
                    profile: profile.path.clone(),
                    path: link,
                    source,
                });
            }
        }
        // The root first: a crash before the link leaves only a stale root (GC removes it); a
        // crash after never leaves a generation GC could take from under the profile. (A root
        // registered through Nix needs the link: it comes with the companions, right after.)
        self.write_gc_root(&link, target)?;
        crate::fault::inject(Point::GenerationBeforeLink).map_err(|source| {
            ProfileError::WriteLink {
                profile: profile.path.clone(),
                path: link.clone(),
                source,
            }
        })?;
        self.write_link(&link, target)?;
        let created = match self.write_companions(&link, target, number, &generations, provenance) {
            Ok(()) => CreatedGeneration {
                number,
                path: link,
                reused: false,
            },
            Err(error) => {
                let _ = std::fs::remove_file(&link);
                let _ = std::fs::remove_file(profile.gc_root_path(&link));
                return Err(error);
            }
        };
        Ok(created)
    }

    /// Writes (or rewrites) the indirect GC root `gcroots/auto/<hash> -> link`, as Nix's
    /// `addPermRoot` does. Where the layout allows and the directory is not ours to write (a
    /// multi-user Nix, whose daemon owns it), Nix registers it once the link exists.
    fn write_gc_root(&self, link: &Path, target: &Path) -> Result<(), ProfileError> {
        let profile = self.profile;
        let root = profile.gc_root_path(link);
        let written = std::fs::create_dir_all(&profile.layout.gcroots_auto)
            .map_err(|source| ProfileError::WriteLink {
                profile: profile.path.clone(),
                path: root.clone(),
                source,
            })
            .and_then(|()| self.write_link(&root, link));
        match written {
            Err(ProfileError::WriteLink { source, .. })
                if profile.layout.roots_through_nix
                    && source.kind() == io::ErrorKind::PermissionDenied =>
            {
                if std::fs::symlink_metadata(link).is_err() {
                    return Ok(());
                }
                crate::store::nix::add_indirect_root(link, target).map_err(|error| {
                    ProfileError::WriteLink {
                        profile: profile.path.clone(),
                        path: root,
                        source: io::Error::other(error),
                    }
                })
            }
            other => other,
        }
    }

    fn write_companions(
        &self,
        link: &Path,
        target: &Path,
        number: u32,
        generations: &Generations,
        provenance: &Provenance,
    ) -> Result<(), ProfileError> {
        let profile = self.profile;
        self.write_gc_root(link, target)?;
        let created = std::fs::symlink_metadata(link)
            .map_err(|source| ProfileError::Inspect {
                profile: profile.path.clone(),
                path: link.to_owned(),
                source,
            })?
            .mtime();
        let metadata = GenerationMetadata {
            format: METADATA_FORMAT,
            profile: profile.path.to_string_lossy().into_owned(),
            generation: number,
            target: target.to_string_lossy().into_owned(),
            created,
            command: provenance.command.clone(),
            parent: generations.current,
            declarative: provenance.declarative.clone(),
        };
        let path = profile.metadata_path(number);
        let write_error = |source| ProfileError::WriteMetadata {
            profile: profile.path.clone(),
            path: path.clone(),
            source,
        };
        let mut json = serde_json::to_vec_pretty(&metadata)
            .map_err(io::Error::other)
            .map_err(write_error)?;
        json.push(b'\n');
        std::fs::create_dir_all(profile.metadata_directory()).map_err(write_error)?;
        crate::fault::inject(Point::GenerationBeforeMetadata).map_err(write_error)?;
        crate::fs::write_atomic(&path, &json).map_err(write_error)
    }

    /// Makes `link` a symlink to `target` atomically: a temporary symlink beside it whose name
    /// Nix's discovery does not count (a leading dot), then a rename; then syncs the directory.
    fn write_link(&self, link: &Path, target: &Path) -> Result<(), ProfileError> {
        let write_error = |source| ProfileError::WriteLink {
            profile: self.profile.path.clone(),
            path: link.to_owned(),
            source,
        };
        let directory = link.parent().unwrap_or(Path::new("."));
        let name = link.file_name().unwrap_or(OsStr::new("link"));
        let temporary = loop {
            let mut temporary_name = OsString::from(".");
            temporary_name.push(name);
            temporary_name.push(format!(
                ".tmp-{}-{}",
                std::process::id(),
                TEMPORARY_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let temporary = directory.join(temporary_name);
            match std::os::unix::fs::symlink(target, &temporary) {
                Ok(()) => break temporary,
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(write_error(source)),
            }
        };
        if let Err(source) = std::fs::rename(&temporary, link) {
            let _ = std::fs::remove_file(&temporary);
            return Err(write_error(source));
        }
        sync_directory(directory).map_err(write_error)
    }

    /// Points the profile link at generation `number`, atomically, as Nix's `switchLink` does:
    /// the relative text `B-N-link` written to `D/.<n>_B` (first free `n`), renamed over `D/B`.
    pub fn switch_to(&self, number: u32) -> Result<(), ProfileError> {
        let generations = self.generations()?;
        let path = generations.entry(number).map_or_else(
            || self.profile.generation_path(number),
            |entry| self.profile.directory.join(&entry.file_name),
        );
        self.switch_to_path(&path)
    }

    fn switch_to_path(&self, generation: &Path) -> Result<(), ProfileError> {
        let profile = self.profile;
        let write_error = |source| ProfileError::WriteLink {
            profile: profile.path.clone(),
            path: profile.path.clone(),
            source,
        };
        let text = if generation.parent() == Some(profile.directory.as_path()) {
            generation
                .file_name()
                .map_or_else(|| generation.to_owned(), PathBuf::from)
        } else {
            generation.to_owned()
        };
        let mut attempt = 0_u64;
        let temporary = loop {
            let mut name = OsString::from(format!(".{attempt}_"));
            name.push(&profile.name);
            let temporary = profile.directory.join(name);
            match std::os::unix::fs::symlink(&text, &temporary) {
                Ok(()) => break temporary,
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => attempt += 1,
                Err(source) => return Err(write_error(source)),
            }
        };
        if let Err(source) = crate::fault::inject(Point::ProfileBeforeSwitch)
            .and_then(|()| std::fs::rename(&temporary, &profile.path))
        {
            let _ = std::fs::remove_file(&temporary);
            return Err(write_error(source));
        }
        sync_directory(&profile.directory).map_err(write_error)
    }

    /// `--rollback`: switch to the highest generation below the current one. Reports the switch
    /// (under `dry_run` too, as Nix does) and leaves the link alone under `dry_run`.
    pub fn rollback(
        &self,
        dry_run: bool,
        report: &mut dyn FnMut(&ProfileMessage),
    ) -> Result<Switch, ProfileError> {
        let generations = self.generations()?;
        let numbers = generations.entries.iter().map(|entry| entry.number);
        let switch = rules::rollback_target(numbers, generations.current)
            .map_err(|source| self.switch_error(source))?;
        self.perform_switch(&generations, switch, dry_run, report)?;
        Ok(switch)
    }

    /// `--switch-generation N`: switch to generation N, which must exist.
    pub fn switch_generation(
        &self,
        requested: u64,
        dry_run: bool,
        report: &mut dyn FnMut(&ProfileMessage),
    ) -> Result<Switch, ProfileError> {
        let generations = self.generations()?;
        let numbers = generations.entries.iter().map(|entry| entry.number);
        let switch = rules::switch_target(numbers, generations.current, requested)
            .map_err(|source| self.switch_error(source))?;
        self.perform_switch(&generations, switch, dry_run, report)?;
        Ok(switch)
    }

    fn switch_error(&self, source: SwitchError) -> ProfileError {
        ProfileError::Switch {
            profile: self.profile.path.clone(),
            source,
        }
    }

    fn perform_switch(
        &self,
        generations: &Generations,
        switch: Switch,
        dry_run: bool,
        report: &mut dyn FnMut(&ProfileMessage),
    ) -> Result<(), ProfileError> {
        report(&ProfileMessage::Switching(switch));
        if dry_run {
            return Ok(());
        }
        let path = generations.entry(switch.to).map_or_else(
            || self.profile.generation_path(switch.to),
            |entry| self.profile.directory.join(&entry.file_name),
        );
        self.switch_to_path(&path)
    }

    /// `--delete-generations`: removes the generation links `policy` selects (only symlinks;
    /// never a store path), their GC roots and metadata, reporting each as Nix does. Returns the
    /// numbers deleted (or, under `dry_run`, that would be).
    ///
    /// Differences from Nix 2.8, on purpose: an entry counted under a non-canonical name (such as
    /// `B-07-link`) is removed by its own name, where Nix tries `B-7-link` and fails; an entry
    /// that is not a symlink stops the command before anything is removed; and when the profile
    /// link is absolute (no current generation for Nix) the generation it points at is kept
    /// rather than deleted from under it.
    pub fn delete_generations(
        &self,
        policy: &DeletePolicy,
        now: i64,
        dry_run: bool,
        report: &mut dyn FnMut(&ProfileMessage),
    ) -> Result<Vec<u32>, ProfileError> {
        let profile = self.profile;
        let generations = self.generations()?;
        let mut numbers = policy
            .generations_to_delete(&generations.as_rules_input(), generations.current, now)
            .map_err(|error| ProfileError::DeleteCurrent {
                profile: profile.path.clone(),
                number: error.number,
            })?;
        if generations.current.is_none()
            && let Some(pointed) = generations.absolute_target
        {
            if let DeletePolicy::Numbers(requested) = policy
                && requested.contains(&u64::from(pointed))
            {
                return Err(ProfileError::DeleteLinkTarget {
                    profile: profile.path.clone(),
                    number: pointed,
                });
            }
            numbers.retain(|&number| number != pointed);
        }
        let doomed: Vec<&DiscoveredGeneration> = numbers
            .iter()
            .flat_map(|&number| {
                generations
                    .entries
                    .iter()
                    .filter(move |entry| entry.number == number)
            })
            .collect();
        if let Some(entry) = doomed.iter().find(|entry| !entry.is_symlink) {
            return Err(ProfileError::NotAGenerationLink {
                profile: profile.path.clone(),
                path: profile.directory.join(&entry.file_name),
            });
        }
        for entry in doomed {
            if dry_run {
                report(&ProfileMessage::WouldRemove {
                    number: entry.number,
                });
                continue;
            }
            report(&ProfileMessage::Removing {
                number: entry.number,
            });
            let path = profile.directory.join(&entry.file_name);
            match crate::fault::inject(Point::GenerationBeforeUnlink)
                .and_then(|()| std::fs::remove_file(&path))
            {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ProfileError::Unlink {
                        profile: profile.path.clone(),
                        path,
                        source,
                    });
                }
            }
            let _ = std::fs::remove_file(profile.gc_root_path(&path));
            let _ = std::fs::remove_file(profile.metadata_path(entry.number));
        }
        if !dry_run && !numbers.is_empty() {
            sync_directory(&profile.directory).map_err(|source| ProfileError::Unlink {
                profile: profile.path.clone(),
                path: profile.directory.clone(),
                source,
            })?;
        }
        Ok(numbers)
    }
}

/// Makes a rename or unlink in `directory` durable.
fn sync_directory(directory: &Path) -> io::Result<()> {
    std::fs::File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    struct Fixture {
        _directory: tempfile::TempDir,
        root: PathBuf,
        profile: Profile,
    }

    fn fixture() -> Fixture {
        let directory = tempfile::tempdir().expect("tempdir");
        let root = directory.path().to_owned();
        std::fs::create_dir_all(root.join("profiles")).expect("profiles");
        std::fs::create_dir_all(root.join("store")).expect("store");
        let profile = Profile::new(
            &root.join("profiles").join("prof"),
            ProfileLayout::under_root(&root),
        )
        .expect("profile");
        Fixture {
            _directory: directory,
            root,
            profile,
        }
    }

    fn target(fixture: &Fixture, name: &str) -> PathBuf {
        fixture.root.join("store").join(name)
    }

    fn commit(fixture: &Fixture, name: &str) -> CreatedGeneration {
        let token = fixture.profile.read_token().expect("token");
        fixture
            .profile
            .commit(
                &token,
                &target(fixture, name),
                &Provenance {
                    command: vec!["test".to_owned()],
                    declarative: None,
                },
                LockOptions::default(),
                &mut |_| {},
            )
            .expect("commit")
    }

    fn names(fixture: &Fixture) -> BTreeSet<String> {
        std::fs::read_dir(fixture.profile.directory())
            .expect("list")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    #[test]
    fn gc_root_names_match_nix() {
        // `nix-env -p /tmp/nx/t/p/del --set …` made this root (Nix 2.8).
        let profile = Profile::new(
            Path::new("/tmp/nx/t/p/del"),
            ProfileLayout::under_root(Path::new("/r")),
        )
        .expect("profile");
        assert_eq!(
            profile.gc_root_path(&profile.generation_path(1)),
            Path::new("/r/nix/var/nix/gcroots/auto/a70md7f4b77068gmas32lnnxra2m95r9")
        );
    }

    #[test]
    fn reusing_a_generation_left_without_metadata_writes_it() {
        let fixture = fixture();
        commit(&fixture, "env-1");
        // A run killed after making generation 2's link, before its metadata.
        let created = commit(&fixture, "env-2");
        std::fs::remove_file(fixture.profile.metadata_path(created.number)).expect("remove");
        let lock = fixture
            .profile
            .lock(LockOptions::default(), &mut |_| {})
            .expect("lock");
        lock.switch_to(1).expect("switch back");
        lock.unlock();
        let reused = commit(&fixture, "env-2");
        assert_eq!((reused.number, reused.reused), (2, true));
        let generations = fixture.profile.generations_unlocked().expect("generations");
        let entry = generations.entry(2).expect("generation 2");
        let metadata = fixture
            .profile
            .read_metadata(entry)
            .expect("read")
            .expect("written on reuse");
        assert_eq!(metadata.command, ["test"]);
    }

    #[test]
    fn commits_make_links_roots_metadata_and_reuse_the_highest() {
        let fixture = fixture();
        assert_eq!(commit(&fixture, "env-a").number, 1);
        assert_eq!(commit(&fixture, "env-b").number, 2);
        let profile = &fixture.profile;
        profile
            .rollback(false, LockOptions::default(), &mut |_| {})
            .expect("rollback");
        let reused = commit(&fixture, "env-b");
        assert!(reused.reused);
        assert_eq!(reused.number, 2);
        let duplicate = {
            profile
                .switch_generation(1, false, LockOptions::default(), &mut |_| {})
                .expect("switch");
            commit(&fixture, "env-a")
        };
        assert_eq!((duplicate.number, duplicate.reused), (3, false));
        assert_eq!(
            names(&fixture),
            ["prof", "prof-1-link", "prof-2-link", "prof-3-link"]
                .map(str::to_owned)
                .into()
        );
        assert_eq!(
            std::fs::read_link(profile.path()).expect("profile link"),
            PathBuf::from("prof-3-link")
        );
        let root = profile.gc_root_path(&profile.generation_path(3));
        assert_eq!(
            std::fs::read_link(root).expect("root"),
            profile.generation_path(3)
        );
        let generations = profile.generations_unlocked().expect("generations");
        let third = generations.entry(3).expect("generation 3");
        let metadata = profile
            .read_metadata(third)
            .expect("metadata")
            .expect("present");
        assert_eq!(metadata.parent, Some(1));
        assert_eq!(metadata.command, ["test"]);
        assert_eq!(metadata.target, target(&fixture, "env-a").to_string_lossy());
    }

    #[test]
    fn deleting_removes_links_roots_and_metadata_but_keeps_current() {
        let fixture = fixture();
        for name in ["a", "b", "c"] {
            commit(&fixture, name);
        }
        let profile = &fixture.profile;
        let mut messages = Vec::new();
        let deleted = profile
            .delete_generations(
                &DeletePolicy::Old,
                0,
                false,
                LockOptions::default(),
                &mut |message| messages.push(message.to_string()),
            )
            .expect("delete");
        assert_eq!(deleted, [1, 2]);
        assert_eq!(
            messages,
            ["removing profile version 1", "removing profile version 2"]
        );
        assert_eq!(
            names(&fixture),
            ["prof", "prof-3-link"].map(str::to_owned).into()
        );
        assert!(
            std::fs::symlink_metadata(profile.gc_root_path(&profile.generation_path(1))).is_err()
        );
        assert!(!profile.metadata_path(1).exists());
        assert!(profile.metadata_path(3).exists());
    }

    #[test]
    fn stale_metadata_of_a_reused_number_is_ignored() {
        let fixture = fixture();
        commit(&fixture, "a");
        commit(&fixture, "b");
        let profile = &fixture.profile;
        // Another tool deletes generation 2 and makes a new generation 2 elsewhere.
        std::fs::remove_file(profile.generation_path(2)).expect("remove");
        std::os::unix::fs::symlink(target(&fixture, "other"), profile.generation_path(2))
            .expect("link");
        let generations = profile.generations_unlocked().expect("generations");
        let second = generations.entry(2).expect("generation 2");
        assert_eq!(profile.read_metadata(second).expect("read"), None);
    }

    #[test]
    fn a_changed_profile_is_refused_not_restarted() {
        let fixture = fixture();
        commit(&fixture, "a");
        let token = fixture.profile.read_token().expect("token");
        commit(&fixture, "b");
        let error = fixture
            .profile
            .commit(
                &token,
                &target(&fixture, "c"),
                &Provenance::default(),
                LockOptions::default(),
                &mut |_| {},
            )
            .expect_err("changed");
        assert!(matches!(error, ProfileError::Changed { .. }), "{error}");
        assert!(error.hint().is_some());
        assert_eq!(
            names(&fixture),
            ["prof", "prof-1-link", "prof-2-link"]
                .map(str::to_owned)
                .into()
        );
    }

    /// Nix counts entries of any type, so a directory named `prof-3-link` takes number 3.
    #[test]
    fn entries_of_any_type_count_when_numbering() {
        let fixture = fixture();
        commit(&fixture, "a");
        std::fs::create_dir(fixture.profile.directory().join("prof-3-link")).expect("directory");
        assert_eq!(commit(&fixture, "b").number, 4);
    }

    #[test]
    fn exhausted_numbers_are_refused() {
        let fixture = fixture();
        std::os::unix::fs::symlink(
            target(&fixture, "a"),
            fixture.profile.directory().join("prof-4294967295-link"),
        )
        .expect("link");
        let token = fixture.profile.read_token().expect("token");
        let error = fixture
            .profile
            .commit(
                &token,
                &target(&fixture, "b"),
                &Provenance::default(),
                LockOptions::default(),
                &mut |_| {},
            )
            .expect_err("exhausted");
        assert!(matches!(error, ProfileError::Exhausted { .. }), "{error}");
    }

    #[test]
    fn a_profile_that_is_not_a_symlink_is_an_error_in_nix_words() {
        let fixture = fixture();
        std::fs::write(fixture.profile.path(), b"x").expect("file");
        let error = fixture
            .profile
            .list_generations(LockOptions::default(), &mut |_| {})
            .expect_err("not a symlink");
        assert_eq!(
            error.nix_message(),
            format!("'{}' is not a symlink", fixture.profile.path().display())
        );
    }

    #[test]
    fn metadata_is_keyed_by_the_whole_profile_path() {
        let layout = ProfileLayout::under_root(Path::new("/r"));
        let first = Profile::new(Path::new("/a/prof"), layout.clone()).expect("profile");
        let second = Profile::new(Path::new("/b/prof"), layout).expect("profile");
        assert_ne!(first.metadata_directory(), second.metadata_directory());
        assert!(
            first
                .metadata_directory()
                .starts_with("/r/nix/var/declenv/generations")
        );
        assert!(
            first
                .metadata_directory()
                .to_string_lossy()
                .ends_with("-prof")
        );
    }

    #[test]
    fn paths_without_a_name_are_refused() {
        let error = Profile::new(Path::new("/"), ProfileLayout::under_root(Path::new("/r")))
            .expect_err("no name");
        assert!(matches!(error, ProfileError::InvalidPath { .. }));
    }
}
