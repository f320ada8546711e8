//! Nix archives (NAR): the canonical serialisation of a file tree that Nix hashes.
//!
//! Owns writing a tree as a NAR ([`dump`], [`hash_path`]) and unpacking one ([`restore`]).
//! Writing streams into any [`Write`], so a hash is computed by a sink and no archive is held
//! in memory. Reading treats its input as hostile: it creates nothing outside its destination
//! and never panics or allocates more than a few kilobytes, whatever the bytes. Neither side
//! knows about stores, registrations or permissions beyond the executable bit.
//!
//! The format: every token is a string, written as its length (little-endian `u64`), its
//! bytes, and zero bytes up to a multiple of 8.
//!
//! ```text
//! archive   = "nix-archive-1" node
//! node      = "(" "type" ( regular | symlink | directory ) ")"
//! regular   = "regular" [ "executable" "" ] "contents" BYTES
//! symlink   = "symlink" "target" BYTES
//! directory = "directory" { "entry" "(" "name" BYTES "node" node ")" }
//! ```
//!
//! Directory entries come sorted by the bytes of their names, so a tree has exactly one
//! archive. Only the executable bit of the owner (`S_IXUSR`) is recorded, as in Nix; owners,
//! other permission bits and times are not.

use crate::store::nixbase32;
use sha2::{Digest, Sha256};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The first token of every archive.
pub const MAGIC: &str = "nix-archive-1";

/// The longest entry name [`restore`] accepts: a file name on Linux (`NAME_MAX`).
pub const MAX_NAME_BYTES: u64 = 255;

/// The longest symlink target [`restore`] accepts: `PATH_MAX` without its terminating NUL.
pub const MAX_TARGET_BYTES: u64 = 4095;

/// The longest structural token (`directory`, `executable`, …); longer ones are rejected
/// before anything is allocated.
const MAX_TOKEN_BYTES: u64 = 16;

/// The owner's execute bit, the one bit of the mode that Nix records.
const OWNER_EXECUTE: u32 = 0o100;

/// The SHA-256 and length of a tree's archive: what Nix records as `narHash` and `narSize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NarDigest {
    /// SHA-256 of the archive bytes.
    pub sha256: [u8; 32],
    /// Length of the archive in bytes.
    pub size: u64,
}

impl NarDigest {
    /// The hash as `nix-store --query --hash` prints it: `sha256:<nixbase32>`.
    #[must_use]
    pub fn to_nix_string(&self) -> String {
        format!("sha256:{}", nixbase32::encode(&self.sha256))
    }
}

/// Why an archive could not be written or unpacked; every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum NarError {
    /// A file of the tree could not be read.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The sink refused the archive while this file was being written to it.
    #[error("cannot write the archive of `{}`", path.display())]
    Write {
        /// The file being archived.
        path: PathBuf,
        /// What the sink said.
        #[source]
        source: io::Error,
    },
    /// A socket, device or pipe: Nix cannot archive these.
    #[error("`{}` is a {kind}; a Nix archive holds only files, directories and symlinks", path.display())]
    UnsupportedFileType {
        /// The offending file.
        path: PathBuf,
        /// What it is (`socket`, `fifo`, `block device`, `character device`).
        kind: &'static str,
    },
    /// A file shrank or was replaced while it was being archived.
    #[error("`{}` changed while it was being archived", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The archive's source failed while this entry was being unpacked.
    #[error("cannot read the archive while unpacking `{}`", path.display())]
    ReadArchive {
        /// The entry being unpacked.
        path: PathBuf,
        /// What the source said.
        #[source]
        source: io::Error,
    },
    /// The bytes are not a canonical archive.
    #[error("malformed archive at byte {offset} while unpacking `{}`: {problem}", path.display())]
    Malformed {
        /// The entry being unpacked.
        path: PathBuf,
        /// Where in the archive the problem was found.
        offset: u64,
        /// What is wrong.
        problem: MalformedNar,
    },
    /// An entry could not be created on disk.
    #[error("cannot create `{}`", path.display())]
    Create {
        /// The entry.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

/// What makes an archive malformed. [`restore`] accepts only the canonical form [`dump`]
/// writes, so that unpacking and archiving again gives back the same bytes (and hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MalformedNar {
    /// The input ended inside the archive.
    Truncated,
    /// A string's padding bytes are not zero.
    NonZeroPadding,
    /// A token other than the one the grammar allows here.
    UnexpectedToken {
        /// What the grammar allows.
        expected: &'static str,
        /// What was found (lossily decoded).
        found: String,
    },
    /// A string longer than the limit for its position.
    TooLong {
        /// The declared length.
        length: u64,
        /// The limit.
        limit: u64,
    },
    /// An entry name that is empty, `.`, `..`, or contains `/` or NUL.
    InvalidName {
        /// The name (lossily decoded).
        name: String,
    },
    /// An entry name not strictly after the previous one: unsorted or duplicate.
    NotSorted {
        /// The previous name (lossily decoded).
        previous: String,
        /// This name (lossily decoded).
        name: String,
    },
}

impl fmt::Display for MalformedNar {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => formatter.write_str("the archive ends early"),
            Self::NonZeroPadding => formatter.write_str("non-zero padding"),
            Self::UnexpectedToken { expected, found } => {
                write!(formatter, "expected {expected}, found {found:?}")
            }
            Self::TooLong { length, limit } => {
                write!(
                    formatter,
                    "a string of {length} bytes, over the limit of {limit}"
                )
            }
            Self::InvalidName { name } => write!(formatter, "invalid file name {name:?}"),
            Self::NotSorted { previous, name } => write!(
                formatter,
                "entry {name:?} does not sort after {previous:?} (entries must be sorted and unique)"
            ),
        }
    }
}

/// Writes the archive of the tree at `path` into `sink` and returns its length.
///
/// `path` itself is not followed if it is a symlink (as in `nix-store --add`). Writes are
/// small; give a file sink a [`io::BufWriter`].
pub fn dump<W: Write>(path: &Path, sink: W) -> Result<u64, NarError> {
    let mut writer = ArchiveWriter { sink, written: 0 };
    writer.string(path, MAGIC.as_bytes())?;
    let mut stack: Vec<DirectoryFrame> = Vec::new();
    if let Some(frame) = writer.node(path)? {
        stack.push(frame);
    }
    while let Some(frame) = stack.last_mut() {
        if let Some(name) = frame.entries.get_mut(frame.next) {
            let name = std::mem::take(name);
            frame.next += 1;
            let child = frame.path.join(&name);
            for token in [&b"entry"[..], b"(", b"name", name.as_bytes(), b"node"] {
                writer.string(&child, token)?;
            }
            match writer.node(&child)? {
                Some(child_frame) => stack.push(child_frame),
                None => writer.string(&child, b")")?,
            }
        } else {
            let path = frame.path.clone();
            stack.pop();
            writer.string(&path, b")")?;
            if !stack.is_empty() {
                // Closes the entry that held this directory.
                writer.string(&path, b")")?;
            }
        }
    }
    Ok(writer.written)
}

/// The NAR hash and size of the tree at `path`, as `nix-hash --type sha256 --base32` (and
/// `nix-store --query --hash --size` after adding it) reports them.
pub fn hash_path(path: &Path) -> Result<NarDigest, NarError> {
    let mut hasher = Sha256::new();
    let size = dump(path, HashSink(&mut hasher))?;
    Ok(NarDigest {
        sha256: hasher.finalize().into(),
        size,
    })
}

/// Adapts a hasher to [`Write`].
struct HashSink<'a>(&'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A directory whose entries are being archived.
struct DirectoryFrame {
    path: PathBuf,
    /// Entry names, sorted by bytes.
    entries: Vec<OsString>,
    /// The next entry to archive.
    next: usize,
}

/// Writes archive tokens and counts the bytes.
struct ArchiveWriter<W> {
    sink: W,
    written: u64,
}

impl<W: Write> ArchiveWriter<W> {
    fn raw(&mut self, path: &Path, bytes: &[u8]) -> Result<(), NarError> {
        self.sink
            .write_all(bytes)
            .map_err(|source| NarError::Write {
                path: path.to_owned(),
                source,
            })?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn padding(&mut self, path: &Path, length: u64) -> Result<(), NarError> {
        let padding = padding_len(length);
        self.raw(path, &[0; 8][..padding])
    }

    fn string(&mut self, path: &Path, bytes: &[u8]) -> Result<(), NarError> {
        let length = bytes.len() as u64;
        self.raw(path, &length.to_le_bytes())?;
        self.raw(path, bytes)?;
        self.padding(path, length)
    }

    /// Writes the node at `path`; for a directory, only its opening, returning the frame whose
    /// entries the caller writes next.
    fn node(&mut self, path: &Path) -> Result<Option<DirectoryFrame>, NarError> {
        let read_error = |source| NarError::Read {
            path: path.to_owned(),
            source,
        };
        let metadata = std::fs::symlink_metadata(path).map_err(read_error)?;
        let file_type = metadata.file_type();
        if file_type.is_file() {
            self.regular(path)?;
            Ok(None)
        } else if file_type.is_symlink() {
            let target = std::fs::read_link(path).map_err(read_error)?;
            for token in [
                &b"("[..],
                b"type",
                b"symlink",
                b"target",
                target.as_os_str().as_bytes(),
                b")",
            ] {
                self.string(path, token)?;
            }
            Ok(None)
        } else if file_type.is_dir() {
            for token in [&b"("[..], b"type", b"directory"] {
                self.string(path, token)?;
            }
            let mut entries = std::fs::read_dir(path)
                .and_then(|entries| {
                    entries
                        .map(|entry| entry.map(|entry| entry.file_name()))
                        .collect::<io::Result<Vec<_>>>()
                })
                .map_err(read_error)?;
            entries.sort_unstable_by(|left, right| left.as_bytes().cmp(right.as_bytes()));
            Ok(Some(DirectoryFrame {
                path: path.to_owned(),
                entries,
                next: 0,
            }))
        } else {
            Err(NarError::UnsupportedFileType {
                path: path.to_owned(),
                kind: file_type_name(file_type),
            })
        }
    }

    fn regular(&mut self, path: &Path) -> Result<(), NarError> {
        let read_error = |source| NarError::Read {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read_error)?;
        let metadata = file.metadata().map_err(read_error)?;
        if !metadata.is_file() {
            // Replaced by something else between `lstat` and `open`.
            return Err(NarError::Changed {
                path: path.to_owned(),
            });
        }
        let executable = metadata.permissions().mode() & OWNER_EXECUTE != 0;
        for token in [&b"("[..], b"type", b"regular"] {
            self.string(path, token)?;
        }
        if executable {
            self.string(path, b"executable")?;
            self.string(path, b"")?;
        }
        self.string(path, b"contents")?;
        let size = metadata.len();
        self.raw(path, &size.to_le_bytes())?;
        let mut buffer = vec![0_u8; 64 * 1024];
        let mut remaining = size;
        while remaining > 0 {
            let wanted =
                usize::try_from(remaining).map_or(buffer.len(), |left| left.min(buffer.len()));
            let read = match file.read(&mut buffer[..wanted]) {
                Ok(0) => {
                    return Err(NarError::Changed {
                        path: path.to_owned(),
                    });
                }
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(read_error(error)),
            };
            self.raw(path, &buffer[..read])?;
            remaining -= read as u64;
        }
        self.padding(path, size)?;
        self.string(path, b")")
    }
}

/// Zero bytes after a string of `length` bytes.
fn padding_len(length: u64) -> usize {
    // The result is below 8.
    ((8 - length % 8) % 8) as usize
}

pub(crate) fn file_type_name(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_socket() {
        "socket"
    } else if file_type.is_fifo() {
        "fifo"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_char_device() {
        "character device"
    } else {
        "file of unknown type"
    }
}

/// Unpacks the archive read from `source` at `destination`, which must not exist, and returns
/// the archive's length. Reading stops at the end of the archive; bytes after it stay unread.
///
/// Files are created `0644`, or `0755` if executable (less the umask); the caller sets final
/// permissions and syncs what it keeps. On error a partial tree may remain at `destination`,
/// so unpack into a temporary directory. Nothing is written outside `destination`: names are
/// single path components, each created once, and only inside directories this call created.
pub fn restore<R: Read>(source: R, destination: &Path) -> Result<u64, NarError> {
    let mut reader = ArchiveReader { source, offset: 0 };
    reader.expect_token(destination, MAGIC)?;
    let mut stack: Vec<RestoreFrame> = Vec::new();
    let mut pending = Some(destination.to_owned());
    loop {
        if let Some(path) = pending.take() {
            if let Some(frame) = reader.node(&path)? {
                stack.push(frame);
            } else if stack.is_empty() {
                break;
            } else {
                reader.expect_token(&path, ")")?;
            }
            continue;
        }
        let Some(frame) = stack.last_mut() else {
            break;
        };
        let token = reader.string(&frame.path, MAX_TOKEN_BYTES)?;
        match token.as_slice() {
            b"entry" => {
                reader.expect_token(&frame.path, "(")?;
                reader.expect_token(&frame.path, "name")?;
                let name = reader.string(&frame.path, MAX_NAME_BYTES)?;
                check_entry_name(&name, frame.previous.as_deref())
                    .map_err(|problem| reader.malformed(&frame.path, problem))?;
                let child = frame.path.join(OsStr::from_bytes(&name));
                frame.previous = Some(name);
                reader.expect_token(&child, "node")?;
                pending = Some(child);
            }
            b")" => {
                let path = frame.path.clone();
                stack.pop();
                if stack.is_empty() {
                    break;
                }
                reader.expect_token(&path, ")")?;
            }
            other => {
                return Err(reader.malformed(
                    &frame.path,
                    MalformedNar::UnexpectedToken {
                        expected: "`entry` or `)`",
                        found: String::from_utf8_lossy(other).into_owned(),
                    },
                ));
            }
        }
    }
    Ok(reader.offset)
}

/// A directory being unpacked.
struct RestoreFrame {
    path: PathBuf,
    /// The last entry name seen, to enforce strict ordering.
    previous: Option<Vec<u8>>,
}

/// Nix's rule for names in an archive, plus the ordering its writer guarantees.
fn check_entry_name(name: &[u8], previous: Option<&[u8]>) -> Result<(), MalformedNar> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(MalformedNar::InvalidName {
            name: String::from_utf8_lossy(name).into_owned(),
        });
    }
    if let Some(previous) = previous
        && name <= previous
    {
        return Err(MalformedNar::NotSorted {
            previous: String::from_utf8_lossy(previous).into_owned(),
            name: String::from_utf8_lossy(name).into_owned(),
        });
    }
    Ok(())
}

/// Reads archive tokens and tracks the offset for error messages.
struct ArchiveReader<R> {
    source: R,
    offset: u64,
}

impl<R: Read> ArchiveReader<R> {
    fn malformed(&self, path: &Path, problem: MalformedNar) -> NarError {
        NarError::Malformed {
            path: path.to_owned(),
            offset: self.offset,
            problem,
        }
    }

    /// Fills `buffer`, or fails with [`MalformedNar::Truncated`] at the end of the input.
    fn exact(&mut self, path: &Path, buffer: &mut [u8]) -> Result<(), NarError> {
        let mut filled = 0;
        while filled < buffer.len() {
            match self.source.read(&mut buffer[filled..]) {
                Ok(0) => return Err(self.malformed(path, MalformedNar::Truncated)),
                Ok(read) => {
                    filled += read;
                    self.offset += read as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(NarError::ReadArchive {
                        path: path.to_owned(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    fn length(&mut self, path: &Path) -> Result<u64, NarError> {
        let mut bytes = [0_u8; 8];
        self.exact(path, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn padding(&mut self, path: &Path, length: u64) -> Result<(), NarError> {
        let mut padding = [0_u8; 8];
        let padding = &mut padding[..padding_len(length)];
        self.exact(path, padding)?;
        if padding.iter().any(|byte| *byte != 0) {
            return Err(self.malformed(path, MalformedNar::NonZeroPadding));
        }
        Ok(())
    }

    /// Reads a string of at most `limit` bytes; the limit is checked before allocating.
    fn string(&mut self, path: &Path, limit: u64) -> Result<Vec<u8>, NarError> {
        let length = self.length(path)?;
        if length > limit {
            return Err(self.malformed(path, MalformedNar::TooLong { length, limit }));
        }
        let mut bytes = vec![0_u8; usize::try_from(length).unwrap_or(0)];
        self.exact(path, &mut bytes)?;
        self.padding(path, length)?;
        Ok(bytes)
    }

    fn expect_token(&mut self, path: &Path, expected: &'static str) -> Result<(), NarError> {
        let limit = expected.len() as u64;
        let length = self.length(path)?;
        if length != limit {
            return Err(self.malformed(
                path,
                MalformedNar::UnexpectedToken {
                    expected: token_description(expected),
                    found: format!("a string of {length} bytes"),
                },
            ));
        }
        let mut bytes = vec![0_u8; expected.len()];
        self.exact(path, &mut bytes)?;
        self.padding(path, length)?;
        if bytes != expected.as_bytes() {
            return Err(self.malformed(
                path,
                MalformedNar::UnexpectedToken {
                    expected: token_description(expected),
                    found: String::from_utf8_lossy(&bytes).into_owned(),
                },
            ));
        }
        Ok(())
    }

    /// Unpacks the node at `path`; for a directory, creates it and returns its frame, whose
    /// entries the caller reads next.
    fn node(&mut self, path: &Path) -> Result<Option<RestoreFrame>, NarError> {
        self.expect_token(path, "(")?;
        self.expect_token(path, "type")?;
        let kind = self.string(path, MAX_TOKEN_BYTES)?;
        let create_error = |source| NarError::Create {
            path: path.to_owned(),
            source,
        };
        match kind.as_slice() {
            b"regular" => {
                let mut token = self.string(path, MAX_TOKEN_BYTES)?;
                let executable = token == b"executable";
                if executable {
                    self.expect_token(path, "")?;
                    token = self.string(path, MAX_TOKEN_BYTES)?;
                }
                if token != b"contents" {
                    return Err(self.malformed(
                        path,
                        MalformedNar::UnexpectedToken {
                            expected: if executable {
                                "`contents`"
                            } else {
                                "`executable` or `contents`"
                            },
                            found: String::from_utf8_lossy(&token).into_owned(),
                        },
                    ));
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if executable { 0o755 } else { 0o644 })
                    .open(path)
                    .map_err(create_error)?;
                let length = self.length(path)?;
                self.contents(path, length, &mut file)?;
                self.padding(path, length)?;
            }
            b"symlink" => {
                self.expect_token(path, "target")?;
                let target = self.string(path, MAX_TARGET_BYTES)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), path)
                    .map_err(create_error)?;
            }
            b"directory" => {
                std::fs::create_dir(path).map_err(create_error)?;
                return Ok(Some(RestoreFrame {
                    path: path.to_owned(),
                    previous: None,
                }));
            }
            other => {
                return Err(self.malformed(
                    path,
                    MalformedNar::UnexpectedToken {
                        expected: "`regular`, `symlink` or `directory`",
                        found: String::from_utf8_lossy(other).into_owned(),
                    },
                ));
            }
        }
        self.expect_token(path, ")")?;
        Ok(None)
    }

    /// Copies `length` bytes of file contents into `file` in bounded chunks.
    fn contents(
        &mut self,
        path: &Path,
        length: u64,
        file: &mut std::fs::File,
    ) -> Result<(), NarError> {
        let mut buffer = vec![0_u8; 64 * 1024];
        let mut remaining = length;
        while remaining > 0 {
            let chunk =
                usize::try_from(remaining).map_or(buffer.len(), |left| left.min(buffer.len()));
            self.exact(path, &mut buffer[..chunk])?;
            file.write_all(&buffer[..chunk])
                .map_err(|source| NarError::Create {
                    path: path.to_owned(),
                    source,
                })?;
            remaining -= chunk as u64;
        }
        Ok(())
    }
}

/// How an expected token is named in error messages.
fn token_description(token: &'static str) -> &'static str {
    match token {
        MAGIC => "`nix-archive-1`",
        "(" => "`(`",
        ")" => "`)`",
        "type" => "`type`",
        "name" => "`name`",
        "node" => "`node`",
        "target" => "`target`",
        "" => "an empty string",
        _ => "another token",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;
    use std::os::unix::fs::symlink;

    /// A tree to build on disk, in the shape of an archive.
    #[derive(Debug, Clone)]
    enum Node {
        File { contents: Vec<u8>, executable: bool },
        Symlink { target: Vec<u8> },
        Directory { entries: Vec<(Vec<u8>, Node)> },
    }

    fn build(path: &Path, node: &Node, reverse: bool) {
        match node {
            Node::File {
                contents,
                executable,
            } => {
                std::fs::write(path, contents).expect("write file");
                let mode = if *executable { 0o755 } else { 0o644 };
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .expect("chmod");
            }
            Node::Symlink { target } => symlink(OsStr::from_bytes(target), path).expect("symlink"),
            Node::Directory { entries } => {
                std::fs::create_dir(path).expect("mkdir");
                let mut ordered: Vec<_> = entries.iter().collect();
                if reverse {
                    ordered.reverse();
                }
                for (name, child) in ordered {
                    build(&path.join(OsStr::from_bytes(name)), child, reverse);
                }
            }
        }
    }

    fn dump_to_vec(path: &Path) -> Vec<u8> {
        let mut archive = Vec::new();
        let size = dump(path, &mut archive).expect("dump");
        assert_eq!(size, archive.len() as u64);
        archive
    }

    /// Tokens encoded by hand, to build expected and hostile archives.
    fn tokens(strings: &[&[u8]]) -> Vec<u8> {
        let mut archive = Vec::new();
        for string in strings {
            archive.extend_from_slice(&(string.len() as u64).to_le_bytes());
            archive.extend_from_slice(string);
            archive.resize(archive.len() + padding_len(string.len() as u64), 0);
        }
        archive
    }

    #[test]
    fn single_file_matches_nix_store_dump() {
        // `printf 'g\n' > gx; chmod 0654 gx; nix-store --dump gx`: group execute is not recorded.
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("gx");
        std::fs::write(&path, b"g\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o654)).expect("chmod");
        let expected = tokens(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"g\n",
            b")",
        ]);
        assert_eq!(dump_to_vec(&path), expected);
    }

    #[test]
    fn directory_matches_nix_hash() {
        // The tree behind `nix-hash --type sha256` = e613c5e1…967c in Nix 2.8.
        let directory = tempfile::tempdir().expect("tempdir");
        let root = directory.path().join("d");
        let file = |contents: &[u8], executable| Node::File {
            contents: contents.to_vec(),
            executable,
        };
        let tree = Node::Directory {
            entries: vec![
                (b"a".to_vec(), file(b"hello\n", false)),
                (
                    b"abs".to_vec(),
                    Node::Symlink {
                        target: b"/nonexistent".to_vec(),
                    },
                ),
                (b"e".to_vec(), file(b"", false)),
                (b"empty".to_vec(), Node::Directory { entries: vec![] }),
                (
                    b"l".to_vec(),
                    Node::Symlink {
                        target: b"a".to_vec(),
                    },
                ),
                (b"sub".to_vec(), Node::Directory { entries: vec![] }),
                (b"x".to_vec(), file(b"#!/bin/sh\n", true)),
            ],
        };
        build(&root, &tree, true);
        let digest = hash_path(&root).expect("hash");
        assert_eq!(
            crate::store::path::hex(&digest.sha256),
            "e613c5e1477ae722a51fdb6f9f464ebc4bff58df0189f62a81be91cda9d4967c"
        );
        assert_eq!(digest.size, 1432);
        assert_eq!(
            digest.to_nix_string(),
            "sha256:0z4nsjlwv4dyh4mgd281vxcgyjxw9r39yvyv3yjj5rvs8zhwa4z6"
        );
    }

    #[test]
    fn entries_are_sorted_by_bytes_including_non_utf8() {
        let directory = tempfile::tempdir().expect("tempdir");
        let root = directory.path().join("root");
        let names: [&[u8]; 5] = [b"\xff", b"B", b"a", b"_", b"\xc3\xa9"];
        let tree = Node::Directory {
            entries: names
                .iter()
                .map(|name| {
                    (
                        name.to_vec(),
                        Node::File {
                            contents: name.to_vec(),
                            executable: false,
                        },
                    )
                })
                .collect(),
        };
        build(&root, &tree, false);
        let archive = dump_to_vec(&root);
        let mut sorted = names.to_vec();
        sorted.sort_unstable();
        let mut expected_strings: Vec<&[u8]> = vec![b"nix-archive-1", b"(", b"type", b"directory"];
        for name in &sorted {
            expected_strings.extend_from_slice(&[
                b"entry",
                b"(",
                b"name",
                name,
                b"node",
                b"(",
                b"type",
                b"regular",
                b"contents",
                name,
                b")",
                b")",
            ]);
        }
        expected_strings.push(b")");
        assert_eq!(archive, tokens(&expected_strings));
    }

    #[test]
    fn rejects_sockets_naming_the_path() {
        let directory = tempfile::tempdir().expect("tempdir");
        let socket = directory.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        match dump(directory.path(), io::sink()) {
            Err(NarError::UnsupportedFileType { path, kind }) => {
                assert_eq!(path, socket);
                assert_eq!(kind, "socket");
            }
            other => panic!("expected an unsupported file type, got {other:?}"),
        }
    }

    #[test]
    fn missing_path_is_a_read_error_naming_it() {
        let directory = tempfile::tempdir().expect("tempdir");
        let missing = directory.path().join("missing");
        assert!(
            matches!(dump(&missing, io::sink()), Err(NarError::Read { path, .. }) if path == missing)
        );
    }

    #[rstest]
    #[case::regular(Node::File { contents: b"data".to_vec(), executable: false })]
    #[case::executable(Node::File { contents: b"#!/bin/sh\n".to_vec(), executable: true })]
    #[case::empty_file(Node::File { contents: vec![], executable: false })]
    #[case::dangling_symlink(Node::Symlink { target: b"../nowhere".to_vec() })]
    #[case::empty_directory(Node::Directory { entries: vec![] })]
    #[case::nested(Node::Directory { entries: vec![
        (b"a".to_vec(), Node::Directory { entries: vec![
            (b"b".to_vec(), Node::Directory { entries: vec![
                (b"c".to_vec(), Node::File { contents: b"deep".to_vec(), executable: true }),
            ] }),
        ] }),
        (b"z".to_vec(), Node::Symlink { target: b"a/b/c".to_vec() }),
    ] })]
    fn restore_inverts_dump(#[case] tree: Node) {
        let directory = tempfile::tempdir().expect("tempdir");
        let original = directory.path().join("original");
        build(&original, &tree, false);
        let archive = dump_to_vec(&original);
        let copy = directory.path().join("copy");
        assert_eq!(
            restore(archive.as_slice(), &copy).expect("restore"),
            archive.len() as u64
        );
        assert_eq!(dump_to_vec(&copy), archive);
    }

    fn file_node() -> Vec<&'static [u8]> {
        vec![b"(", b"type", b"regular", b"contents", b"x", b")"]
    }

    fn directory_of(names: &[&'static [u8]]) -> Vec<&'static [u8]> {
        let mut strings: Vec<&'static [u8]> = vec![b"nix-archive-1", b"(", b"type", b"directory"];
        for name in names {
            strings.extend_from_slice(&[b"entry", b"(", b"name", name, b"node"]);
            strings.extend(file_node());
            strings.push(b")");
        }
        strings.push(b")");
        strings
    }

    fn as_bytes(names: &[&'static str]) -> Vec<&'static [u8]> {
        names.iter().map(|name| name.as_bytes()).collect()
    }

    #[rstest]
    #[case::dot_dot(&[".."])]
    #[case::dot(&["."])]
    #[case::empty(&[""])]
    #[case::slash(&["a/b"])]
    #[case::absolute(&["/etc"])]
    #[case::nul(&["a\0"])]
    fn restore_rejects_invalid_names(#[case] names: &[&'static str]) {
        let directory = tempfile::tempdir().expect("tempdir");
        let destination = directory.path().join("out");
        let result = restore(
            tokens(&directory_of(&as_bytes(names))).as_slice(),
            &destination,
        );
        assert!(
            matches!(
                result,
                Err(NarError::Malformed {
                    problem: MalformedNar::InvalidName { .. },
                    ..
                })
            ),
            "{result:?}"
        );
        assert!(std::fs::read_dir(directory.path()).expect("list").count() <= 1);
        assert!(!directory.path().join("etc").exists());
    }

    #[rstest]
    #[case::unsorted(&["b", "a"])]
    #[case::duplicate(&["a", "a"])]
    fn restore_rejects_unsorted_or_duplicate_entries(#[case] names: &[&'static str]) {
        let directory = tempfile::tempdir().expect("tempdir");
        let result = restore(
            tokens(&directory_of(&as_bytes(names))).as_slice(),
            &directory.path().join("out"),
        );
        assert!(
            matches!(
                result,
                Err(NarError::Malformed {
                    problem: MalformedNar::NotSorted { .. },
                    ..
                })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn restore_rejects_non_zero_padding() {
        let mut archive = tokens(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"x",
        ]);
        let last = archive.len() - 1;
        archive[last] = 1;
        archive.extend(tokens(&[b")"]));
        let directory = tempfile::tempdir().expect("tempdir");
        let result = restore(archive.as_slice(), &directory.path().join("out"));
        assert!(
            matches!(
                result,
                Err(NarError::Malformed {
                    problem: MalformedNar::NonZeroPadding,
                    ..
                })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn restore_rejects_executable_after_contents() {
        // Nix 2.8's `nix-store --restore` accepts this order; its writer never produces it.
        let archive = tokens(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"x",
            b"executable",
            b"",
            b")",
        ]);
        let directory = tempfile::tempdir().expect("tempdir");
        assert!(restore(archive.as_slice(), &directory.path().join("out")).is_err());
    }

    #[test]
    fn restore_refuses_an_existing_destination() {
        let archive = tokens(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"x",
            b")",
        ]);
        let directory = tempfile::tempdir().expect("tempdir");
        let destination = directory.path().join("out");
        std::fs::write(&destination, b"keep").expect("write");
        assert!(matches!(
            restore(archive.as_slice(), &destination),
            Err(NarError::Create { .. })
        ));
        assert_eq!(std::fs::read(&destination).expect("read"), b"keep");
    }

    #[test]
    fn restore_checks_lengths_before_allocating() {
        let mut archive = tokens(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
        ]);
        archive.extend_from_slice(&u64::MAX.to_le_bytes());
        let directory = tempfile::tempdir().expect("tempdir");
        let result = restore(archive.as_slice(), &directory.path().join("out"));
        assert!(
            matches!(
                result,
                Err(NarError::Malformed {
                    problem: MalformedNar::TooLong { .. },
                    ..
                })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn restore_leaves_trailing_bytes_unread() {
        let mut archive = tokens(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"symlink",
            b"target",
            b"t",
            b")",
        ]);
        let length = archive.len() as u64;
        archive.extend_from_slice(b"trailing");
        let directory = tempfile::tempdir().expect("tempdir");
        let mut source = archive.as_slice();
        assert_eq!(
            restore(&mut source, &directory.path().join("out")).expect("restore"),
            length
        );
        assert_eq!(source, b"trailing");
    }

    fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::string::string_regex("[a-zA-Z0-9._ -]{1,8}")
                .expect("regex")
                .prop_map(String::into_bytes),
            proptest::collection::vec(1_u8..=255, 1..6),
        ]
        .prop_filter("a valid file name", |name| {
            name.as_slice() != b"." && name.as_slice() != b".." && !name.contains(&b'/')
        })
    }

    fn tree_strategy() -> impl Strategy<Value = Node> {
        let leaf = prop_oneof![
            (proptest::collection::vec(any::<u8>(), 0..40), any::<bool>()).prop_map(
                |(contents, executable)| Node::File {
                    contents,
                    executable
                }
            ),
            proptest::collection::vec(1_u8..=255, 1..20)
                .prop_map(|target| Node::Symlink { target }),
        ];
        leaf.prop_recursive(4, 24, 6, |inner| {
            proptest::collection::btree_map(name_strategy(), inner, 0..6).prop_map(|entries| {
                Node::Directory {
                    entries: entries.into_iter().collect(),
                }
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn archive_does_not_depend_on_creation_order(tree in tree_strategy()) {
            let directory = tempfile::tempdir().expect("tempdir");
            let forward = directory.path().join("forward");
            let backward = directory.path().join("backward");
            build(&forward, &tree, false);
            build(&backward, &tree, true);
            let archive = dump_to_vec(&forward);
            prop_assert_eq!(&archive, &dump_to_vec(&backward));
            prop_assert_eq!(hash_path(&forward).expect("hash"), hash_path(&backward).expect("hash"));
            let copy = directory.path().join("copy");
            restore(archive.as_slice(), &copy).expect("restore");
            prop_assert_eq!(dump_to_vec(&copy), archive);
        }

        #[test]
        fn restore_never_panics_and_stays_inside(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let directory = tempfile::tempdir().expect("tempdir");
            let _ = restore(bytes.as_slice(), &directory.path().join("out"));
            let entries: Vec<_> = std::fs::read_dir(directory.path()).expect("list").collect();
            prop_assert!(entries.len() <= 1);
        }

        #[test]
        fn restore_of_mutated_archives_never_panics(
            tree in tree_strategy(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let directory = tempfile::tempdir().expect("tempdir");
            let original = directory.path().join("original");
            build(&original, &tree, false);
            let mut archive = dump_to_vec(&original);
            for (index, byte) in flips {
                let position = index.index(archive.len());
                archive[position] = byte;
            }
            let copy = directory.path().join("copy");
            if let Ok(size) = restore(archive.as_slice(), &copy) {
                // Whatever was accepted is canonical: archiving it again gives the same bytes.
                let accepted = usize::try_from(size).expect("small archive");
                prop_assert_eq!(dump_to_vec(&copy), &archive[..accepted]);
            }
        }
    }
}
