//! Moving paths between stores: what every way in shares (paths unpacked and verified in
//! temporary entries, then registered together), the errors of sharing, and copies between
//! declenv roots.
//!
//! Owns [`TransferError`], the [`Incoming`] path (a tree in a temporary entry of the store
//! directory with the registration it will get) and the batch registration that makes
//! incoming paths valid, references before referrers, each only once complete and durable.
//! Imports ([`super::export`]), binary caches ([`super::binary_cache`]) and root-to-root copies
//! ([`EmbeddedStore::copy_closure_to`]) all end here, so they share one crash-safety argument:
//! every archive is unpacked and checked before the first registration is written, and a
//! registration is written only for a tree that is in place, read-only and synced, whose
//! references are valid. An error before the registrations leaves only unregistered
//! temporaries (removed on the way out, or by `gc` after a crash).

use super::tree::{self, Temporary};
use super::{EmbeddedStore, LockMode, NarDigest, NarError, PathInfo, StoreError, StorePath};
use super::{io_error, nar, registration};
use crate::fault::{self, Point};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why paths could not be queried, exported, imported or copied. Every variant names the path,
/// file or cache concerned.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A path asked for is not valid in the store it is taken from.
    #[error("path `{path}` is not valid in {store}")]
    NotValid {
        /// The path.
        path: String,
        /// Which store (`the store`, `root `…``).
        store: String,
    },
    /// A path argument that does not lead into the store.
    #[error("`{}` is not in the store `{store_dir}`", path.display())]
    NotInStore {
        /// The argument.
        path: PathBuf,
        /// The store directory.
        store_dir: String,
    },
    /// A file could not be read or written.
    #[error("cannot {action} `{}`", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A stream that is not in `nix-store --export`'s format.
    #[error("invalid export stream at byte {offset}: {problem}")]
    MalformedExport {
        /// Where in the stream.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// An archive that does not unpack.
    #[error("the archive of `{path}` is not valid")]
    Archive {
        /// The path it was for (or where it came from).
        path: String,
        /// What is wrong with it.
        #[source]
        source: NarError,
    },
    /// An archive whose hash or size is not the one announced for it.
    #[error("the archive of `{path}` does not match {origin}: expected {expected}, got {actual}")]
    HashMismatch {
        /// The path.
        path: String,
        /// What announced the hash (`its narinfo `…``, `its registration`).
        origin: String,
        /// The announced hash and size.
        expected: String,
        /// What the archive has.
        actual: String,
    },
    /// A path whose reference would not be valid.
    #[error(
        "cannot add `{path}`: it refers to `{reference}`, which is neither valid nor added before it"
    )]
    MissingReference {
        /// The path.
        path: String,
        /// The reference.
        reference: String,
    },
    /// References that form a cycle (other than a path referring to itself).
    #[error("the references of `{path}` form a cycle")]
    Cycle {
        /// A path on the cycle.
        path: String,
    },
    /// A binary cache that cannot be used.
    #[error("binary cache `{cache}`: {problem}")]
    Cache {
        /// The cache's URL.
        cache: String,
        /// What is wrong.
        problem: String,
    },
    /// A `.narinfo` file that is not valid.
    #[error("invalid narinfo `{}`: {problem}", file.display())]
    NarInfo {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A binary cache for another store directory.
    #[error("binary cache `{cache}` is for Nix stores with prefix `{found}`, not `{expected}`")]
    CacheForOtherStore {
        /// The cache's URL.
        cache: String,
        /// The store directory its `nix-cache-info` names.
        found: String,
        /// This store's directory.
        expected: String,
    },
    /// A path the binary cache does not have.
    #[error("`{path}` is not in binary cache `{cache}`")]
    NotInCache {
        /// The path.
        path: String,
        /// The cache's URL.
        cache: String,
    },
    /// A cache URL declenv cannot use.
    #[error("cannot use `{url}`: {reason}")]
    UnsupportedUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A root whose paths are named for another store directory.
    #[error("root `{}` holds paths of the store `{found}`, not `{expected}`", root.display())]
    ForeignRoot {
        /// The root.
        root: PathBuf,
        /// The store directory its registrations name.
        found: String,
        /// This store's directory.
        expected: String,
    },
}

impl TransferError {
    /// A hint for the user, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Store(error) => error.hint(),
            Self::NotValid { .. } => Some(
                "`declenv store verify` lists the valid paths; add, import or fetch the path first"
                    .to_owned(),
            ),
            Self::NotInStore { .. } => Some(
                "pass a store path, or a link (such as a profile) that leads to one".to_owned(),
            ),
            Self::MalformedExport { .. } => Some(
                "the input must be what `nix-store --export` or `declenv store export` wrote, whole"
                    .to_owned(),
            ),
            Self::Archive { .. } | Self::HashMismatch { .. } => Some(
                "the copy is damaged; nothing from it was registered. Write it again from a good store"
                    .to_owned(),
            ),
            Self::MissingReference { reference, .. } => Some(format!(
                "copy the closure (`declenv store export --closure`, `nix-store --export $(nix-store -qR …)`), or add `{reference}` first"
            )),
            Self::NarInfo { .. } => Some(
                "the cache is damaged; nothing from it was registered. Write the path to it again"
                    .to_owned(),
            ),
            Self::UnsupportedUrl { .. } => Some(
                "use a `file:///DIR` cache, written uncompressed (`nix copy --to 'file:///DIR?compression=none'`)"
                    .to_owned(),
            ),
            Self::CacheForOtherStore { .. } => Some(
                "store paths name their store directory, so a cache serves only stores of the same directory: roots at the same path (the same `--root` or home), or Nix with `NIX_STORE_DIR` set to it"
                    .to_owned(),
            ),
            Self::ForeignRoot { .. } => Some(
                "a root can only take paths of its own store directory: copy through a root at the same place, or through a binary cache read by a store of that directory"
                    .to_owned(),
            ),
            Self::Io { .. }
            | Self::Cycle { .. }
            | Self::Cache { .. }
            | Self::NotInCache { .. } => None,
        }
    }
}

/// Maps an I/O error to [`TransferError::Io`] naming `path`.
pub(crate) fn transfer_io(
    path: &Path,
    action: &'static str,
) -> impl FnOnce(io::Error) -> TransferError {
    let path = path.to_owned();
    move |source| TransferError::Io {
        path,
        action,
        source,
    }
}

/// What a copy, import or fetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    /// Every path asked for or carried along, references first.
    pub paths: Vec<StorePath>,
    /// Those the destination did not have before, which were copied.
    pub added: Vec<StorePath>,
}

/// A reader that hashes and counts what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The hash and length of what was read.
    pub(crate) fn digest(self) -> NarDigest {
        NarDigest {
            sha256: self.hasher.finalize().into(),
            size: self.count,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        self.count += read as u64;
        Ok(read)
    }
}

/// An archive unpacked into a temporary entry of the store directory, made read-only and
/// synced below its top, with its hash and size.
#[derive(Debug)]
pub(crate) struct Unpacked {
    temporary: Temporary,
    nar: NarDigest,
}

impl Unpacked {
    /// The path this tree will be, with its references and deriver.
    pub(crate) fn into_incoming(
        self,
        path: StorePath,
        references: Vec<StorePath>,
        deriver: Option<StorePath>,
    ) -> Incoming {
        Incoming {
            temporary: self.temporary,
            info: PathInfo {
                path,
                nar: self.nar,
                references,
                deriver,
                registration_time: 0,
            },
        }
    }
}

/// A path whose tree waits in a temporary entry for [`EmbeddedStore::register_incoming`].
#[derive(Debug)]
pub(crate) struct Incoming {
    temporary: Temporary,
    info: PathInfo,
}

/// A NAR hash and size as messages show them.
pub(crate) fn describe(digest: &NarDigest) -> String {
    format!("`{}` ({} bytes)", digest.to_nix_string(), digest.size)
}

impl EmbeddedStore {
    /// Unpacks the archive read from `source` (the archive of `label`) into a temporary entry
    /// and checks it against `expected` (the hash and size announced by `origin`), if given.
    /// The entry is removed if anything fails. Reads exactly the archive: bytes after it stay
    /// unread.
    pub(crate) fn unpack<R: Read>(
        &self,
        source: R,
        label: &str,
        expected: Option<(NarDigest, &str)>,
    ) -> Result<Unpacked, TransferError> {
        let (temporary, nar) = Temporary::create_with(&self.store_directory, |destination| {
            let mut reader = HashingReader::new(source);
            nar::restore(&mut reader, destination).map_err(|source| TransferError::Archive {
                path: label.to_owned(),
                source,
            })?;
            Ok::<_, TransferError>(reader.digest())
        })?;
        if let Some((expected, origin)) = expected
            && expected != nar
        {
            return Err(TransferError::HashMismatch {
                path: label.to_owned(),
                origin: origin.to_owned(),
                expected: describe(&expected),
                actual: describe(&nar),
            });
        }
        fault::inject(Point::StoreTempWritten).map_err(io_error(temporary.path(), "write"))?;
        tree::canonicalise_below(temporary.path())?;
        Ok(Unpacked { temporary, nar })
    }

    /// Copies the tree of `info.path` from `source` (another store's directory entry) into a
    /// temporary entry and checks that the copy has the archive `info` records.
    pub(crate) fn copy_incoming(
        &self,
        source: &Path,
        info: &PathInfo,
        origin: &str,
    ) -> Result<Incoming, TransferError> {
        let temporary = Temporary::copy_of(&self.store_directory, source)?;
        let nar = nar::hash_path(temporary.path()).map_err(|source| TransferError::Archive {
            path: info.path.to_string(),
            source,
        })?;
        if nar != info.nar {
            return Err(TransferError::HashMismatch {
                path: info.path.to_string(),
                origin: origin.to_owned(),
                expected: describe(&info.nar),
                actual: describe(&nar),
            });
        }
        fault::inject(Point::StoreTempWritten).map_err(io_error(temporary.path(), "write"))?;
        tree::canonicalise_below(temporary.path())?;
        Ok(Incoming {
            temporary,
            info: PathInfo {
                path: info.path.clone(),
                nar,
                references: info.references.clone(),
                deriver: info.deriver.clone(),
                registration_time: 0,
            },
        })
    }

    /// Makes the incoming paths valid, in the order given (which must put references before
    /// referrers), under one lock; returns those that were not valid already. Before anything
    /// is registered, checks that every reference is valid, added earlier in the batch, or the
    /// path itself; a path that became valid meanwhile keeps its registration (its temporary
    /// entry is dropped).
    pub(crate) fn register_incoming(
        &self,
        batch: Vec<Incoming>,
    ) -> Result<Vec<StorePath>, TransferError> {
        let _lock = self.lock(LockMode::Exclusive)?;
        let mut valid_after: HashSet<&StorePath> = HashSet::new();
        for incoming in &batch {
            let info = &incoming.info;
            if self.is_intact(&info.path)? {
                // Kept as it is, with its own references.
                valid_after.insert(&info.path);
                continue;
            }
            for reference in &info.references {
                if reference != &info.path
                    && !valid_after.contains(reference)
                    && !self.is_intact(reference)?
                {
                    return Err(TransferError::MissingReference {
                        path: info.path.to_string(),
                        reference: reference.to_string(),
                    });
                }
            }
            valid_after.insert(&info.path);
        }
        let mut added = Vec::new();
        for Incoming {
            temporary,
            mut info,
        } in batch
        {
            if self.is_intact(&info.path)? {
                continue;
            }
            let destination = self.disk_path(&info.path);
            // Whatever is there is a leftover of an interrupted add or deletion.
            tree::remove_tree(&destination)
                .map_err(io_error(&destination, "remove the invalid leftover"))?;
            temporary.persist(&destination)?;
            tree::finish_top(&destination)?;
            tree::sync_directory(&self.store_directory)?;
            info.references.sort();
            info.references.dedup();
            info.registration_time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs());
            let registration_path = self.registration_path(&info.path);
            fault::inject(Point::StoreBeforeRegister)
                .map_err(io_error(&registration_path, "write"))?;
            crate::fs::write_atomic(&registration_path, &registration::encode(&info))
                .map_err(io_error(&registration_path, "write"))?;
            added.push(info.path);
        }
        Ok(added)
    }

    /// The store directory the registrations under this store's root name, when it is not
    /// this store's: a root made for another place (checked before copying into or out of a
    /// root opened with [`EmbeddedStore::open_relocated`]). A root's registrations all name
    /// one directory, so the first readable one decides.
    pub(crate) fn foreign_store_dir(&self) -> Result<Option<String>, StoreError> {
        let entries = std::fs::read_dir(&self.valid_directory)
            .map_err(io_error(&self.valid_directory, "read"))?;
        for entry in entries {
            let entry = entry.map_err(io_error(&self.valid_directory, "read"))?;
            if entry.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let path = entry.path();
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if let Some(registered) = registration::registered_path(&bytes)
                && let Some((directory, _)) = registered.rsplit_once('/')
            {
                return Ok((directory != self.store_dir.as_str()).then(|| directory.to_owned()));
            }
        }
        Ok(None)
    }

    /// Copies the closure of `paths` (valid here) into `destination`, a store of the same
    /// store directory (a root opened with [`EmbeddedStore::open_relocated`]): only the paths
    /// it lacks, each checked against its registration here, all registered there only once
    /// every one is copied.
    pub fn copy_closure_to(
        &self,
        destination: &EmbeddedStore,
        paths: &[StorePath],
    ) -> Result<Copied, TransferError> {
        check_same_store_dir(self, destination)?;
        let closure = {
            let _lock = self.lock(LockMode::Shared)?;
            self.closure(paths)?
        };
        let mut batch = Vec::new();
        for info in &closure {
            if destination.is_intact(&info.path)? {
                continue;
            }
            let _lock = self.lock(LockMode::Shared)?;
            batch.push(destination.copy_incoming(
                &self.disk_path(&info.path),
                info,
                "its registration",
            )?);
        }
        let added = destination.register_incoming(batch)?;
        Ok(Copied {
            paths: closure.into_iter().map(|info| info.path).collect(),
            added,
        })
    }
}

/// Refuses to copy between stores of different store directories, or into or out of a root
/// whose registrations name another one.
fn check_same_store_dir(
    source: &EmbeddedStore,
    destination: &EmbeddedStore,
) -> Result<(), TransferError> {
    if source.store_dir != destination.store_dir {
        return Err(TransferError::ForeignRoot {
            root: destination.store_directory.clone(),
            found: destination.store_dir.to_string(),
            expected: source.store_dir.to_string(),
        });
    }
    for store in [source, destination] {
        if let Some(found) = store.foreign_store_dir()? {
            return Err(TransferError::ForeignRoot {
                root: store
                    .store_directory
                    .parent()
                    .and_then(Path::parent)
                    .unwrap_or(&store.store_directory)
                    .to_owned(),
                found,
                expected: store.store_dir.to_string(),
            });
        }
    }
    Ok(())
}
