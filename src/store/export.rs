//! `nix-store --export` and `nix-store --import`, byte for byte.
//!
//! Owns the export format of Nix 2.8 (`src/libstore/export-import.cc`). Every number is a
//! little-endian `u64` and every string a NAR string (length, bytes, zero padding to 8):
//!
//! ```text
//! stream = { 1 path } 0
//! path   = NAR 0x4558494e STORE-PATH REFERENCES DERIVER 0
//! REFERENCES = COUNT { STORE-PATH }      (sorted by base name)
//! DERIVER    = STORE-PATH | ""
//! ```
//!
//! Paths are written references first, in the order `nix-store --export` writes them, so an
//! export of the same paths is the same bytes from Nix and from declenv. Reading treats the
//! stream as hostile: strings and reference counts are bounded before anything is allocated,
//! every archive goes through [`super::nar::restore`]'s checks into a temporary entry, and
//! nothing is registered until the whole stream has been read; then every path is registered
//! references first, each only once complete and durable (`transfer.rs`).

use super::closure::sort_infos;
use super::nar;
use super::transfer::{Copied, Incoming, TransferError, transfer_io};
use super::{EmbeddedStore, LockMode, NarDigest, StoreError, StorePath, StorePathError};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashSet};
use std::io::{self, Read, Write};
use std::path::Path;

/// What follows each archive in an export: `NIXE` as a little-endian number.
pub const EXPORT_MAGIC: u64 = 0x4558_494e;

/// The longest store path (or deriver) a stream may name: `PATH_MAX` less its NUL.
const MAX_PATH_BYTES: u64 = 4095;

/// The most references one path may have in a stream; a real path has a few hundred at most.
pub const MAX_REFERENCES: u64 = 100_000;

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        self.count += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a number as Nix does.
fn write_number(sink: &mut impl Write, number: u64) -> io::Result<()> {
    sink.write_all(&number.to_le_bytes())
}

/// Writes a string as Nix does: length, bytes, zero padding to a multiple of 8.
fn write_string(sink: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    write_number(sink, bytes.len() as u64)?;
    sink.write_all(bytes)?;
    let padding = (8 - bytes.len() % 8) % 8;
    sink.write_all(&[0; 8][..padding])
}

impl EmbeddedStore {
    /// Writes `paths` (each valid) to `sink` as `nix-store --export` does: only those paths,
    /// references first, each archive checked against its registration as it is written (an
    /// export of a damaged path fails rather than spread it). `closure` exports their closure
    /// instead. Returns the paths written, in order.
    pub fn export_paths<W: Write>(
        &self,
        paths: &[StorePath],
        closure: bool,
        sink: W,
    ) -> Result<Vec<StorePath>, TransferError> {
        let _lock = self.lock(LockMode::Shared)?;
        let infos = if closure {
            self.closure(paths)?
        } else {
            let unique: BTreeSet<&StorePath> = paths.iter().collect();
            let infos = unique
                .into_iter()
                .map(|path| self.require_info(path))
                .collect::<Result<Vec<_>, _>>()?;
            sort_infos(infos)?
        };
        let mut sink = io::BufWriter::with_capacity(64 * 1024, sink);
        let stdout = Path::new("<output>");
        for info in &infos {
            write_number(&mut sink, 1).map_err(transfer_io(stdout, "write"))?;
            let disk_path = self.disk_path(&info.path);
            let mut hashing = HashingWriter {
                inner: &mut sink,
                hasher: Sha256::new(),
                count: 0,
            };
            nar::dump(&disk_path, &mut hashing).map_err(|source| TransferError::Archive {
                path: info.path.to_string(),
                source,
            })?;
            let digest = NarDigest {
                sha256: hashing.hasher.finalize().into(),
                size: hashing.count,
            };
            if digest != info.nar {
                return Err(TransferError::HashMismatch {
                    path: info.path.to_string(),
                    origin: "its registration".to_owned(),
                    expected: super::transfer::describe(&info.nar),
                    actual: super::transfer::describe(&digest),
                });
            }
            let mut references: Vec<String> =
                info.references.iter().map(StorePath::base_name).collect();
            references.sort();
            let write = |sink: &mut io::BufWriter<W>| -> io::Result<()> {
                write_number(sink, EXPORT_MAGIC)?;
                write_string(sink, info.path.to_string().as_bytes())?;
                write_number(sink, references.len() as u64)?;
                for reference in &references {
                    let path = format!("{}/{reference}", self.store_dir);
                    write_string(sink, path.as_bytes())?;
                }
                let deriver = info
                    .deriver
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                write_string(sink, deriver.as_bytes())?;
                write_number(sink, 0)
            };
            write(&mut sink).map_err(transfer_io(stdout, "write"))?;
        }
        write_number(&mut sink, 0).map_err(transfer_io(stdout, "write"))?;
        sink.flush().map_err(transfer_io(stdout, "write"))?;
        Ok(infos.into_iter().map(|info| info.path).collect())
    }

    /// Reads a stream `nix-store --export` (or [`EmbeddedStore::export_paths`]) wrote and
    /// adds every path in it this store lacks, as `nix-store --import` does. The whole stream
    /// is read and every archive unpacked and checked first; then the paths are registered in
    /// stream order, so a stream that fails anywhere registers nothing. A path's references
    /// must be valid or come earlier in the stream. Reading stops after the end marker.
    pub fn import_paths<R: Read>(&self, source: R) -> Result<Copied, TransferError> {
        let mut reader = StreamReader { source, offset: 0 };
        let mut batch: Vec<Incoming> = Vec::new();
        let mut paths = Vec::new();
        let mut seen: HashSet<StorePath> = HashSet::new();
        loop {
            match reader.number()? {
                0 => break,
                1 => {}
                _ => {
                    return Err(reader.malformed(
                        "this does not look like a stream `nix-store --export` wrote".to_owned(),
                    ));
                }
            }
            let start = reader.offset;
            // The path comes after its archive: unpack first, then decide.
            let unpacked = self.unpack(
                &mut reader,
                &format!("the path at byte {start} of the stream"),
                None,
            )?;
            if reader.number()? != EXPORT_MAGIC {
                return Err(reader.malformed(
                    "an archive not followed by the export marker (Nix: `Nix archive cannot be imported; wrong format`)".to_owned(),
                ));
            }
            let path = reader.store_path(self)?;
            let count = reader.number()?;
            if count > MAX_REFERENCES {
                return Err(reader.malformed(format!(
                    "`{path}` has {count} references, over the limit of {MAX_REFERENCES}"
                )));
            }
            let mut references = Vec::new();
            for _ in 0..count {
                references.push(reader.store_path(self)?);
            }
            let deriver = reader.string(MAX_PATH_BYTES)?;
            let deriver = if deriver.is_empty() {
                None
            } else {
                Some(reader.parse_store_path(self, &deriver)?)
            };
            // An optional legacy signature, which Nix ignores too.
            if reader.number()? == 1 {
                reader.string(64 * 1024)?;
            }
            if seen.insert(path.clone()) {
                paths.push(path.clone());
                batch.push(unpacked.into_incoming(path, references, deriver));
            }
        }
        let added = self.register_incoming(batch)?;
        Ok(Copied { paths, added })
    }
}

/// Reads the numbers and strings of an export stream, tracking the offset for messages.
struct StreamReader<R> {
    source: R,
    offset: u64,
}

impl<R: Read> Read for StreamReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.source.read(buffer)?;
        self.offset += read as u64;
        Ok(read)
    }
}

impl<R: Read> StreamReader<R> {
    fn malformed(&self, problem: String) -> TransferError {
        TransferError::MalformedExport {
            offset: self.offset,
            problem,
        }
    }

    fn exact(&mut self, buffer: &mut [u8]) -> Result<(), TransferError> {
        match self.read_exact(buffer) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                Err(self.malformed("the stream ends early".to_owned()))
            }
            Err(error) => Err(transfer_io(Path::new("<input>"), "read")(error)),
        }
    }

    fn number(&mut self) -> Result<u64, TransferError> {
        let mut bytes = [0_u8; 8];
        self.exact(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// A string of at most `limit` bytes; the limit is checked before allocating.
    fn string(&mut self, limit: u64) -> Result<Vec<u8>, TransferError> {
        let length = self.number()?;
        if length > limit {
            return Err(self.malformed(format!(
                "a string of {length} bytes, over the limit of {limit}"
            )));
        }
        let mut bytes = vec![0_u8; usize::try_from(length).unwrap_or(0)];
        self.exact(&mut bytes)?;
        let mut padding = [0_u8; 8];
        let padding = &mut padding[..(8 - bytes.len() % 8) % 8];
        self.exact(padding)?;
        if padding.iter().any(|byte| *byte != 0) {
            return Err(self.malformed("non-zero padding".to_owned()));
        }
        Ok(bytes)
    }

    fn parse_store_path(
        &self,
        store: &EmbeddedStore,
        bytes: &[u8],
    ) -> Result<StorePath, TransferError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| self.malformed("a store path that is not UTF-8".to_owned()))?;
        store.parse_path(text).map_err(|error| match error {
            StoreError::InvalidPath(StorePathError::NotInStore { path, store_dir }) => self
                .malformed(format!(
                    "`{path}` is not in the store `{store_dir}`; a path imports only into a store of the directory it was exported from"
                )),
            other => self.malformed(other.to_string()),
        })
    }

    fn store_path(&mut self, store: &EmbeddedStore) -> Result<StorePath, TransferError> {
        let bytes = self.string(MAX_PATH_BYTES)?;
        self.parse_store_path(store, &bytes)
    }
}
