//! Binary caches in Nix's layout, on a local filesystem (`file:///DIR`).
//!
//! Owns the layout `nix copy --to file:///DIR?compression=none` writes and reads
//! (`src/libstore/binary-cache-store.cc`, `nar-info.cc` in Nix 2.8):
//!
//! | file | what |
//! |---|---|
//! | `DIR/nix-cache-info` | `StoreDir: <store dir>`: which store the paths are named for |
//! | `DIR/<hash part>.narinfo` | one path: `StorePath`, `URL`, `Compression`, `FileHash`, `FileSize`, `NarHash`, `NarSize`, `References`, `Deriver`, `CA`, one `Key: value` per line |
//! | `DIR/nar/<file hash>.nar` | the path's archive (uncompressed: the file hash is the NAR hash) |
//!
//! Writing copies closures, each archive before its narinfo (so a narinfo never names a
//! missing archive), both written atomically; paths whose narinfo is there are skipped.
//! Reading treats the cache as hostile: files are read with size limits, archive URLs must stay
//! inside the cache, and every archive is unpacked into a temporary entry and checked against
//! its narinfo (`NarHash`, `NarSize`, and `FileHash`, `FileSize` when given) before anything is
//! registered; a closure is registered only once every path in it checked out. Signatures are
//! neither written nor checked: a cache is trusted as Nix trusts one with `require-sigs =
//! false`, and only the hashes protect what it serves.

use super::closure::references_first;
use super::nar::MalformedNar;
use super::nixbase32;
use super::path::{StoreDir, source_store_path};
use super::transfer::{Copied, HashingReader, TransferError, describe, transfer_io};
use super::{EmbeddedStore, LockMode, NarDigest, NarError, PathInfo, StorePath, nar};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

/// The file that says which store a cache is for.
pub const CACHE_INFO: &str = "nix-cache-info";

/// The largest `nix-cache-info` read.
const MAX_CACHE_INFO_BYTES: u64 = 64 * 1024;

/// The largest `.narinfo` read: enough for a path with tens of thousands of references.
pub const MAX_NARINFO_BYTES: u64 = 4 * 1024 * 1024;

/// A binary cache in a local directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryCache {
    /// The URL as given (or `file://` and the directory).
    url: String,
    /// The directory.
    directory: PathBuf,
}

impl BinaryCache {
    /// A cache from its URL: `file:///DIR`, optionally with Nix's parameters after `?`, of which
    /// only `compression=none` matters (declenv writes and reads uncompressed archives). Any
    /// other scheme, a relative directory or another compression is refused.
    pub fn parse(url: &str) -> Result<Self, TransferError> {
        let unsupported = |reason: &str| TransferError::UnsupportedUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let Some(rest) = url.strip_prefix("file://") else {
            return Err(
                if url.starts_with("http://") || url.starts_with("https://") {
                    unsupported(
                        "declenv reads and writes binary caches on a local file system only (`file:///DIR`); `http://` is not supported",
                    )
                } else {
                    unsupported("a binary cache URL starts with `file://`")
                },
            );
        };
        let (directory, parameters) = rest.split_once('?').unwrap_or((rest, ""));
        if !directory.starts_with('/') {
            return Err(unsupported(
                "the directory must be absolute (`file:///DIR`, three slashes)",
            ));
        }
        for parameter in parameters
            .split('&')
            .filter(|parameter| !parameter.is_empty())
        {
            let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            if key == "compression" && value != "none" {
                return Err(unsupported(&format!(
                    "compression `{value}` is not supported; declenv writes and reads `compression=none`"
                )));
            }
        }
        Ok(Self {
            url: url.to_owned(),
            directory: PathBuf::from(directory),
        })
    }

    /// A cache in `directory`, named `file://DIRECTORY`.
    #[must_use]
    pub fn in_directory(directory: &Path) -> Self {
        Self {
            url: format!("file://{}", directory.display()),
            directory: directory.to_owned(),
        }
    }

    /// A cache in `directory`, named `name` in messages (a substituter as the spec writes it).
    #[must_use]
    pub fn named(name: &str, directory: &Path) -> Self {
        Self {
            url: name.to_owned(),
            directory: directory.to_owned(),
        }
    }

    /// The URL, as messages name the cache.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The directory.
    #[must_use]
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Whether the cache is there: its directory holds a `nix-cache-info` (a cache on a disk
    /// that is not mounted, or not written yet, is not).
    #[must_use]
    pub fn is_present(&self) -> bool {
        self.directory.join(CACHE_INFO).is_file()
    }

    fn narinfo_path(&self, path: &StorePath) -> PathBuf {
        self.directory.join(format!("{}.narinfo", path.hash_part()))
    }

    fn problem(&self, problem: impl Into<String>) -> TransferError {
        TransferError::Cache {
            cache: self.url.clone(),
            problem: problem.into(),
        }
    }

    /// The store directory `nix-cache-info` names, or `None` when there is no such file.
    fn store_dir(&self) -> Result<Option<String>, TransferError> {
        let file = self.directory.join(CACHE_INFO);
        let Some(bytes) = read_limited(&file, MAX_CACHE_INFO_BYTES)? else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| self.problem(format!("`{CACHE_INFO}` is not UTF-8")))?;
        let store_dir = text
            .lines()
            .find_map(|line| line.strip_prefix("StoreDir: "))
            .ok_or_else(|| self.problem(format!("`{CACHE_INFO}` has no `StoreDir`")))?;
        Ok(Some(store_dir.to_owned()))
    }

    /// Checks that the cache exists and is for `store_dir`.
    fn check_store_dir(&self, store_dir: &StoreDir) -> Result<(), TransferError> {
        match self.store_dir()? {
            None => Err(self.problem(format!(
                "there is no `{CACHE_INFO}`: `{}` is not a binary cache",
                self.directory.display()
            ))),
            Some(found) if found == store_dir.as_str() => Ok(()),
            Some(found) => Err(TransferError::CacheForOtherStore {
                cache: self.url.clone(),
                found,
                expected: store_dir.to_string(),
            }),
        }
    }
}

/// Reads a file of at most `limit` bytes; `None` if it does not exist.
fn read_limited(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, TransferError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(transfer_io(path, "read")(error)),
    };
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(transfer_io(path, "read"))?;
    if bytes.len() as u64 > limit {
        return Err(TransferError::NarInfo {
            file: path.to_owned(),
            problem: format!("larger than the limit of {limit} bytes"),
        });
    }
    Ok(Some(bytes))
}

/// One `.narinfo`: what a binary cache says about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    /// The path.
    pub path: StorePath,
    /// Where its archive is, relative to the cache.
    pub url: String,
    /// How the archive is compressed (`none` is all declenv reads).
    pub compression: String,
    /// The archive file's SHA-256 and size, when given.
    pub file_hash: Option<[u8; 32]>,
    /// The archive file's size, when given.
    pub file_size: Option<u64>,
    /// The NAR hash and size.
    pub nar: NarDigest,
    /// The paths it refers to.
    pub references: Vec<StorePath>,
    /// The derivation that built it, if known.
    pub deriver: Option<StorePath>,
    /// Its content address, as given (`fixed:r:sha256:…`, `text:sha256:…`).
    pub ca: Option<String>,
}

/// Parses `sha256:<nixbase32>` or `sha256:<hex>`, the forms Nix writes.
fn parse_hash(value: &str) -> Result<[u8; 32], String> {
    let encoded = value
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("`{value}` is not a `sha256:` hash"))?;
    let bytes = if encoded.len() == 64 {
        decode_hex(encoded)
    } else {
        nixbase32::decode(encoded).ok()
    };
    bytes
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| format!("`{value}` is not a SHA-256 hash in base 32 or hex"))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

impl NarInfo {
    /// Parses a `.narinfo` as Nix 2.8 does (every line `Key: value` ending in a newline,
    /// unknown keys ignored, `Compression` `bzip2` when absent), more strictly: a key given
    /// twice (but `Sig`) or a value that does not parse is an error, and `StorePath`, `URL`,
    /// `NarHash` and `NarSize` are required.
    pub fn parse(text: &str, store_dir: &StoreDir) -> Result<Self, String> {
        if !text.is_empty() && !text.ends_with('\n') {
            return Err("the last line does not end with a newline".to_owned());
        }
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let (key, value) = line
                .split_once(": ")
                .ok_or_else(|| format!("line {} is not `Key: value`", index + 1))?;
            if key == "Sig" {
                continue;
            }
            if fields.insert(key, value).is_some() {
                return Err(format!("`{key}` is given twice"));
            }
        }
        let required = |key: &str| {
            fields
                .get(key)
                .copied()
                .ok_or_else(|| format!("`{key}` is missing"))
        };
        let store_path = |value: &str| {
            StorePath::from_absolute_path(store_dir.clone(), value)
                .map_err(|error| error.to_string())
        };
        let base_name = |value: &str| {
            StorePath::from_base_name(store_dir.clone(), value).map_err(|error| error.to_string())
        };
        let number = |key: &str, value: &str| {
            value
                .parse::<u64>()
                .map_err(|_| format!("`{key}` is not a number: `{value}`"))
        };
        let path = store_path(required("StorePath")?)?;
        let url = required("URL")?.to_owned();
        if url.is_empty() {
            return Err("`URL` is empty".to_owned());
        }
        let nar_size = number("NarSize", required("NarSize")?)?;
        if nar_size == 0 {
            return Err("`NarSize` is 0".to_owned());
        }
        let mut references = fields.get("References").map_or(Ok(Vec::new()), |value| {
            value
                .split(' ')
                .filter(|reference| !reference.is_empty())
                .map(base_name)
                .collect::<Result<Vec<_>, _>>()
        })?;
        references.sort();
        references.dedup();
        Ok(Self {
            path,
            url,
            compression: fields
                .get("Compression")
                .copied()
                .unwrap_or("bzip2")
                .to_owned(),
            file_hash: fields
                .get("FileHash")
                .map(|value| parse_hash(value))
                .transpose()?,
            file_size: fields
                .get("FileSize")
                .map(|value| number("FileSize", value))
                .transpose()?,
            nar: NarDigest {
                sha256: parse_hash(required("NarHash")?)?,
                size: nar_size,
            },
            references,
            deriver: fields
                .get("Deriver")
                .filter(|value| **value != "unknown-deriver")
                .map(|value| base_name(value))
                .transpose()?,
            ca: fields.get("CA").map(|value| (*value).to_owned()),
        })
    }

    /// The text Nix 2.8 writes for this information (`NarInfo::to_string`): the fields in its
    /// order, references by base name in Nix's order, no signatures.
    #[must_use]
    pub fn render(&self) -> String {
        let mut references: Vec<String> =
            self.references.iter().map(StorePath::base_name).collect();
        references.sort();
        let mut text = format!(
            "StorePath: {}\nURL: {}\nCompression: {}\n",
            self.path, self.url, self.compression
        );
        if let Some(file_hash) = &self.file_hash {
            text.push_str(&format!(
                "FileHash: sha256:{}\n",
                nixbase32::encode(file_hash)
            ));
        }
        if let Some(file_size) = self.file_size {
            text.push_str(&format!("FileSize: {file_size}\n"));
        }
        text.push_str(&format!(
            "NarHash: {}\nNarSize: {}\nReferences: {}\n",
            self.nar.to_nix_string(),
            self.nar.size,
            references.join(" ")
        ));
        if let Some(deriver) = &self.deriver {
            text.push_str(&format!("Deriver: {}\n", deriver.base_name()));
        }
        if let Some(ca) = &self.ca {
            text.push_str(&format!("CA: {ca}\n"));
        }
        text
    }

    /// The archive's file inside `cache`, refusing a URL that leaves it (absolute, `..`, a
    /// scheme).
    fn archive_file(&self, cache: &BinaryCache) -> Result<PathBuf, String> {
        let relative = Path::new(&self.url);
        let inside = !self.url.contains(':')
            && relative
                .components()
                .all(|component| matches!(component, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(format!(
                "`URL` `{}` does not name a file inside the cache",
                self.url
            ));
        }
        Ok(cache.directory.join(relative))
    }
}

/// The information a cache gets for a valid path: uncompressed, so the file is the archive;
/// `CA` for a path that is exactly what `nix-store --add` makes of its archive (no
/// references, the source path of its NAR hash), which Nix can check without a signature.
fn narinfo_for(info: &PathInfo) -> NarInfo {
    let file_hash = nixbase32::encode(&info.nar.sha256);
    let ca = (info.references.is_empty()
        && source_store_path(info.path.store_dir(), &info.nar.sha256, info.path.name())
            .is_ok_and(|path| path == info.path))
    .then(|| format!("fixed:r:sha256:{file_hash}"));
    NarInfo {
        path: info.path.clone(),
        url: format!("nar/{file_hash}.nar"),
        compression: "none".to_owned(),
        file_hash: Some(info.nar.sha256),
        file_size: Some(info.nar.size),
        nar: info.nar,
        references: info.references.clone(),
        deriver: info.deriver.clone(),
        ca,
    }
}

/// A writer that hashes and counts what passes through it.
struct HashingFile {
    file: std::fs::File,
    hasher: Sha256,
    count: u64,
}

impl Write for HashingFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.file.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        self.count += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl EmbeddedStore {
    /// Writes the closure of `paths` (valid here) to `cache` as `nix copy --to
    /// file:///DIR?compression=none` does, creating the cache if needed; paths whose narinfo is
    /// there already are skipped. Each archive is checked against its registration as it is
    /// written, and written (and synced) before its narinfo.
    pub fn copy_to_cache(
        &self,
        cache: &BinaryCache,
        paths: &[StorePath],
    ) -> Result<Copied, TransferError> {
        let nar_directory = cache.directory.join("nar");
        std::fs::create_dir_all(&nar_directory).map_err(transfer_io(&nar_directory, "create"))?;
        match cache.store_dir()? {
            None => {
                let file = cache.directory.join(CACHE_INFO);
                crate::fs::write_atomic(
                    &file,
                    format!("StoreDir: {}\n", self.store_dir).as_bytes(),
                )
                .map_err(transfer_io(&file, "write"))?;
            }
            Some(_) => cache.check_store_dir(&self.store_dir)?,
        }
        let _lock = self.lock(LockMode::Shared)?;
        let closure = self.closure(paths)?;
        let mut added = Vec::new();
        for info in &closure {
            let narinfo_path = cache.narinfo_path(&info.path);
            if narinfo_path.exists() {
                continue;
            }
            let narinfo = narinfo_for(info);
            let archive = cache.directory.join(&narinfo.url);
            let (file, temporary) = tempfile::Builder::new()
                .prefix(".declenv-nar-")
                .tempfile_in(&nar_directory)
                .map_err(transfer_io(&nar_directory, "create a temporary file in"))?
                .into_parts();
            let mut sink = HashingFile {
                file,
                hasher: Sha256::new(),
                count: 0,
            };
            {
                let mut buffered = io::BufWriter::with_capacity(64 * 1024, &mut sink);
                nar::dump(&self.disk_path(&info.path), &mut buffered).map_err(|source| {
                    TransferError::Archive {
                        path: info.path.to_string(),
                        source,
                    }
                })?;
                buffered.flush().map_err(transfer_io(&archive, "write"))?;
            }
            let digest = NarDigest {
                sha256: sink.hasher.finalize().into(),
                size: sink.count,
            };
            if digest != info.nar {
                return Err(TransferError::HashMismatch {
                    path: info.path.to_string(),
                    origin: "its registration".to_owned(),
                    expected: describe(&info.nar),
                    actual: describe(&digest),
                });
            }
            sink.file
                .sync_all()
                .map_err(transfer_io(&archive, "sync"))?;
            temporary
                .persist(&archive)
                .map_err(|error| transfer_io(&archive, "write")(error.error))?;
            crate::fs::write_atomic(&narinfo_path, narinfo.render().as_bytes())
                .map_err(transfer_io(&narinfo_path, "write"))?;
            added.push(info.path.clone());
        }
        Ok(Copied {
            paths: closure.into_iter().map(|info| info.path).collect(),
            added,
        })
    }

    /// Whether `cache` has a narinfo for `path` (and is a cache for this store).
    pub fn cache_has(&self, cache: &BinaryCache, path: &StorePath) -> Result<bool, TransferError> {
        cache.check_store_dir(&self.store_dir)?;
        Ok(cache.narinfo_path(path).exists())
    }

    /// Fetches the closure of `paths` from `cache` into this store, as `nix copy --from` does:
    /// the paths this store lacks, every archive unpacked into a temporary entry and checked
    /// against its narinfo first, then all registered references first. A damaged narinfo or
    /// archive anywhere in the closure registers nothing.
    pub fn copy_from_cache(
        &self,
        cache: &BinaryCache,
        paths: &[StorePath],
    ) -> Result<Copied, TransferError> {
        cache.check_store_dir(&self.store_dir)?;
        for path in paths {
            self.check_store(path)?;
        }
        // Every narinfo of the missing part of the closure, read and checked first.
        let mut narinfos: BTreeMap<StorePath, (NarInfo, PathBuf)> = BTreeMap::new();
        let mut present: BTreeSet<StorePath> = BTreeSet::new();
        let mut pending: Vec<StorePath> = paths.to_vec();
        while let Some(path) = pending.pop() {
            if narinfos.contains_key(&path) || present.contains(&path) {
                continue;
            }
            if self.is_intact(&path)? {
                present.insert(path);
                continue;
            }
            let file = cache.narinfo_path(&path);
            let bytes = read_limited(&file, MAX_NARINFO_BYTES)?.ok_or_else(|| {
                TransferError::NotInCache {
                    path: path.to_string(),
                    cache: cache.url.clone(),
                }
            })?;
            let invalid = |problem: String| TransferError::NarInfo {
                file: file.clone(),
                problem,
            };
            let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8".to_owned()))?;
            let narinfo = NarInfo::parse(&text, &self.store_dir).map_err(invalid)?;
            if narinfo.path != path {
                return Err(invalid(format!(
                    "it describes `{}`, not `{path}`",
                    narinfo.path
                )));
            }
            if narinfo.compression != "none" {
                return Err(invalid(format!(
                    "the archive is compressed with `{}`; declenv reads only `Compression: none` (write the cache with `?compression=none`)",
                    narinfo.compression
                )));
            }
            narinfo.archive_file(cache).map_err(invalid)?;
            pending.extend(
                narinfo
                    .references
                    .iter()
                    .filter(|reference| **reference != path)
                    .cloned(),
            );
            narinfos.insert(path, (narinfo, file));
        }
        let wanted: Vec<(NarInfo, PathBuf)> = narinfos.into_values().collect();
        let ordered = references_first(
            wanted,
            |(narinfo, _)| narinfo.path.base_name(),
            |(narinfo, _)| {
                narinfo
                    .references
                    .iter()
                    .map(StorePath::base_name)
                    .collect()
            },
        )
        .map_err(|path| TransferError::Cycle { path })?;
        // Every archive unpacked and checked before anything is registered.
        let mut batch = Vec::new();
        let mut fetched = Vec::new();
        for (narinfo, file) in ordered {
            let archive =
                narinfo
                    .archive_file(cache)
                    .map_err(|problem| TransferError::NarInfo {
                        file: file.clone(),
                        problem,
                    })?;
            let unpacked = self.fetch_archive(&narinfo, &archive, &file)?;
            fetched.push(narinfo.path.clone());
            batch.push(unpacked.into_incoming(
                narinfo.path.clone(),
                narinfo.references.clone(),
                narinfo.deriver.clone(),
            ));
        }
        let added = self.register_incoming(batch)?;
        let mut all: Vec<StorePath> = present.into_iter().collect();
        all.extend(fetched);
        Ok(Copied { paths: all, added })
    }

    /// Unpacks the archive at `archive` for `narinfo` into a temporary entry, checking the
    /// file's hash and size and the archive's against the narinfo.
    fn fetch_archive(
        &self,
        narinfo: &NarInfo,
        archive: &Path,
        narinfo_file: &Path,
    ) -> Result<super::transfer::Unpacked, TransferError> {
        let origin = format!("its narinfo `{}`", narinfo_file.display());
        let origin = origin.as_str();
        let file = std::fs::File::open(archive).map_err(|error| {
            if error.kind() == io::ErrorKind::NotFound {
                TransferError::NarInfo {
                    file: narinfo_file.to_owned(),
                    problem: format!("its archive `{}` is missing", archive.display()),
                }
            } else {
                transfer_io(archive, "read")(error)
            }
        })?;
        let mut file_reader = HashingReader::new(io::BufReader::new(file));
        // An archive longer than announced fails as truncated instead of filling the disk.
        let mut limited = (&mut file_reader).take(narinfo.nar.size);
        let unpacked = match self.unpack(
            &mut limited,
            &narinfo.path.to_string(),
            Some((narinfo.nar, origin)),
        ) {
            Err(TransferError::Archive {
                source:
                    NarError::Malformed {
                        problem: MalformedNar::Truncated,
                        ..
                    },
                ..
            }) if limited.limit() == 0 => {
                return Err(TransferError::HashMismatch {
                    path: narinfo.path.to_string(),
                    origin: origin.to_owned(),
                    expected: describe(&narinfo.nar),
                    actual: format!("an archive longer than {} bytes", narinfo.nar.size),
                });
            }
            result => result?,
        };
        io::copy(&mut file_reader, &mut io::sink()).map_err(transfer_io(archive, "read"))?;
        let file_digest = file_reader.digest();
        let file_mismatch = narinfo
            .file_hash
            .is_some_and(|hash| hash != file_digest.sha256)
            || narinfo
                .file_size
                .is_some_and(|size| size != file_digest.size);
        if file_mismatch {
            return Err(TransferError::HashMismatch {
                path: narinfo.path.to_string(),
                origin: origin.to_owned(),
                expected: format!(
                    "a file of {} bytes with `FileHash` {}",
                    narinfo
                        .file_size
                        .map_or_else(|| "any number of".to_owned(), |size| size.to_string()),
                    narinfo.file_hash.map_or_else(
                        || "(none)".to_owned(),
                        |hash| format!("`sha256:{}`", nixbase32::encode(&hash))
                    )
                ),
                actual: format!("`{}` of {} bytes", archive.display(), file_digest.size),
            });
        }
        Ok(unpacked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_dir() -> StoreDir {
        StoreDir::new("/tmp/fakeroot/nix/store").expect("valid")
    }

    /// What `nix copy --to 'file://…?compression=none'` wrote in Nix 2.8.
    const NIX_NARINFO: &str =
        "StorePath: /tmp/fakeroot/nix/store/6v81ygsrqniw5jp2mjhjspw811rwz4wk-d
URL: nar/1x3li417x9lc9mfmd2gjm27wazad0lpzw0wvl5049qs3y7cqlwsf.nar
Compression: none
FileHash: sha256:1x3li417x9lc9mfmd2gjm27wazad0lpzw0wvl5049qs3y7cqlwsf
FileSize: 240
NarHash: sha256:1x3li417x9lc9mfmd2gjm27wazad0lpzw0wvl5049qs3y7cqlwsf
NarSize: 240
References: 6v81ygsrqniw5jp2mjhjspw811rwz4wk-d wbvpv7jvz48vn0s3v49bby5l1w0dvjzs-leaf
Deriver: 43ls1p9j558ycvircc3lma7ak5p5fqqv-d.drv
";

    #[test]
    fn parses_and_renders_nix_narinfo_byte_for_byte() {
        let narinfo = NarInfo::parse(NIX_NARINFO, &store_dir()).expect("parses");
        assert_eq!(narinfo.references.len(), 2);
        assert_eq!(narinfo.nar.size, 240);
        assert_eq!(narinfo.deriver.as_ref().map(StorePath::name), Some("d.drv"));
        assert_eq!(narinfo.render(), NIX_NARINFO);
    }

    #[test]
    fn parses_hex_hashes_and_ignores_unknown_keys_and_signatures() {
        let text = "StorePath: /tmp/fakeroot/nix/store/6v81ygsrqniw5jp2mjhjspw811rwz4wk-d\nURL: nar/x.nar\nNarHash: sha256:0000000000000000000000000000000000000000000000000000000000000000\nNarSize: 8\nSig: a:b\nSig: c:d\nSystem: x86_64-linux\n";
        let narinfo = NarInfo::parse(text, &store_dir()).expect("parses");
        assert_eq!(narinfo.compression, "bzip2");
        assert_eq!(narinfo.nar.sha256, [0; 32]);
    }

    #[test]
    fn rejects_broken_narinfos() {
        let cases = [
            ("", "`StorePath` is missing"),
            (
                "StorePath: /tmp/fakeroot/nix/store/6v81ygsrqniw5jp2mjhjspw811rwz4wk-d",
                "newline",
            ),
            ("garbage\n", "not `Key: value`"),
            (
                "StorePath: /elsewhere/6v81ygsrqniw5jp2mjhjspw811rwz4wk-d\nURL: u\nNarHash: sha256:1x3li417x9lc9mfmd2gjm27wazad0lpzw0wvl5049qs3y7cqlwsf\nNarSize: 1\n",
                "not in the Nix store",
            ),
            (
                "StorePath: /tmp/fakeroot/nix/store/6v81ygsrqniw5jp2mjhjspw811rwz4wk-d\nURL: u\nNarHash: sha256:xyz\nNarSize: 1\n",
                "not a SHA-256 hash",
            ),
            (
                "StorePath: /tmp/fakeroot/nix/store/6v81ygsrqniw5jp2mjhjspw811rwz4wk-d\nURL: u\nNarHash: sha256:1x3li417x9lc9mfmd2gjm27wazad0lpzw0wvl5049qs3y7cqlwsf\nNarSize: -1\n",
                "not a number",
            ),
            (
                "StorePath: /tmp/fakeroot/nix/store/6v81ygsrqniw5jp2mjhjspw811rwz4wk-d\nStorePath: /tmp/fakeroot/nix/store/6v81ygsrqniw5jp2mjhjspw811rwz4wk-d\n",
                "given twice",
            ),
        ];
        for (text, expected) in cases {
            let error = NarInfo::parse(text, &store_dir()).expect_err(text);
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn archive_urls_stay_inside_the_cache() {
        let cache = BinaryCache::in_directory(Path::new("/srv/cache"));
        let mut narinfo = NarInfo::parse(NIX_NARINFO, &store_dir()).expect("parses");
        for url in [
            "../escape.nar",
            "/etc/passwd",
            "nar/../../x",
            "http://host/x.nar",
        ] {
            narinfo.url = url.to_owned();
            assert!(narinfo.archive_file(&cache).is_err(), "{url}");
        }
        narinfo.url = "nar/./a.nar".to_owned();
        assert_eq!(
            narinfo.archive_file(&cache),
            Ok(PathBuf::from("/srv/cache/nar/a.nar"))
        );
    }

    #[test]
    fn parses_cache_urls() {
        assert!(BinaryCache::parse("file:///srv/cache").is_ok());
        assert_eq!(
            BinaryCache::parse("file:///srv/cache?compression=none&priority=10")
                .expect("valid")
                .directory(),
            Path::new("/srv/cache")
        );
        for url in [
            "http://cache.example/",
            "https://cache.nixos.org",
            "file://relative",
            "file:///srv/cache?compression=xz",
            "/srv/cache",
            "s3://bucket",
        ] {
            assert!(BinaryCache::parse(url).is_err(), "{url}");
        }
    }

    proptest::proptest! {
        #[test]
        fn narinfo_parsing_never_panics(text in "[A-Za-z:/ \n0-9a-z.-]{0,300}") {
            let _ = NarInfo::parse(&text, &store_dir());
        }
    }
}
