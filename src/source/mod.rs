//! Reading package sources from disk: channel directories and catalog JSON files.
//!
//! Owns the I/O around the pure parsers in [`crate::model`]: listing a channel, reading its
//! `channel.toml`, reading a catalog file and keeping the parsed-catalog cache. Every error
//! names the file (once: these variants carry the path, so plain `std::fs` errors are wrapped),
//! and the line and column when the content is at fault. Never writes anywhere
//! but the cache directory, and a cache that cannot be written is skipped, not an error.

mod memo;
pub mod nix;

use crate::model::catalog::{
    Catalog, CatalogEntry, CatalogJsonError, parse_catalog_json, sort_for_enumeration,
};
use crate::model::channel::{self, ChannelError, PackageDirectory};
use crate::model::packed::{PackedCatalog, TooLarge};
use crate::store::path::hex;
use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};

/// What kind of source a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory of `NAME-VERSION` package trees.
    Channel,
    /// A file in the format of `nix-env -qa --json --out-path --meta`.
    CatalogJson,
}

/// A source that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The path could not be read at all.
    #[error("cannot read source `{}`", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A catalog file is not valid `nix-env -qa --json` output.
    #[error("invalid catalog `{}` at line {}, column {}: {}", path.display(), error.line, error.column, error.message)]
    CatalogJson {
        /// The catalog file.
        path: PathBuf,
        /// What is wrong and where.
        error: CatalogJsonError,
    },
    /// A channel's metadata is invalid.
    #[error("invalid channel metadata `{}`: {error}", path.display())]
    Channel {
        /// The `channel.toml` file.
        path: PathBuf,
        /// What is wrong and where.
        error: ChannelError,
    },
    /// A source too large for the packed format.
    #[error("cannot index source `{}`", path.display())]
    TooLarge {
        /// The source.
        path: PathBuf,
        /// Which part overflowed.
        #[source]
        error: TooLarge,
    },
    /// Nix could not evaluate a source's expression.
    #[error("cannot evaluate the Nix expression `{expression}`")]
    Nix {
        /// The expression as written in the spec.
        expression: String,
        /// What failed.
        #[source]
        source: Box<crate::store::nix::NixError>,
    },
    /// A file name in a channel is not UTF-8; Nix names are text, so we refuse it.
    #[error("package directory `{}` in channel `{}` has a name that is not UTF-8", name.display(), channel.display())]
    NonUtf8Name {
        /// The channel directory.
        channel: PathBuf,
        /// The offending entry.
        name: PathBuf,
    },
}

impl SourceError {
    /// A hint for the user, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Read { source, .. } if source.kind() == io::ErrorKind::NotFound => Some(
                "a source is a channel directory or a catalog file written by `nix-env -qa --json --out-path --meta`"
                    .to_owned(),
            ),
            Self::Read { .. } | Self::TooLarge { .. } => None,
            Self::CatalogJson { .. } => Some(
                "a catalog file is what `nix-env -qa --json --out-path --meta` prints: an object keyed by attribute path"
                    .to_owned(),
            ),
            Self::Channel { error, .. } => error.hint(),
            // The `NixError` below it in the chain gives its own.
            Self::Nix { .. } => None,
            Self::NonUtf8Name { .. } => Some("rename the directory to `NAME-VERSION` in UTF-8".to_owned()),
        }
    }
}

/// Where parsed catalogs are cached; `None` disables the cache.
#[derive(Debug, Clone, Default)]
pub struct CacheDirectory(pub Option<PathBuf>);

/// The system declenv runs on, in Nix's spelling (`x86_64-linux`, `aarch64-darwin`).
#[must_use]
pub fn host_system() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    format!("{}-{os}", std::env::consts::ARCH)
}

/// Tells a channel directory from a catalog file.
pub fn source_kind(path: &Path) -> Result<SourceKind, SourceError> {
    let metadata = std::fs::metadata(path).map_err(|source| SourceError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(if metadata.is_dir() {
        SourceKind::Channel
    } else {
        SourceKind::CatalogJson
    })
}

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> SourceError + '_ {
    move |source| SourceError::Read {
        path: path.to_owned(),
        source,
    }
}

/// Loads one source, packed and in enumeration order.
pub fn load_source(path: &Path, cache: &CacheDirectory) -> Result<PackedCatalog, SourceError> {
    match source_kind(path)? {
        SourceKind::Channel => pack(path, load_channel(path)?),
        SourceKind::CatalogJson => load_catalog_json(path, cache),
    }
}

/// Loads several sources into one catalog, in the order given.
pub fn load_catalog(paths: &[PathBuf], cache: &CacheDirectory) -> Result<Catalog, SourceError> {
    let sources = paths
        .iter()
        .map(|path| load_source(path, cache))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Catalog::from_packed(sources))
}

/// Sorts entries into enumeration order and packs them.
fn pack(path: &Path, mut entries: Vec<CatalogEntry>) -> Result<PackedCatalog, SourceError> {
    sort_for_enumeration(&mut entries);
    let bytes = PackedCatalog::pack(&entries).map_err(|error| SourceError::TooLarge {
        path: path.to_owned(),
        error,
    })?;
    Ok(PackedCatalog::from_bytes(bytes).expect("freshly packed bytes are valid"))
}

/// Loads one source of a known kind with its identity: `sha256:<hex>` of a catalog file's
/// content, or of a channel's metadata file and package directory listing (a channel's trees
/// are hashed per package when locked, not here).
pub fn load_source_identified(
    path: &Path,
    kind: SourceKind,
    cache: &CacheDirectory,
) -> Result<(PackedCatalog, String), SourceError> {
    match kind {
        SourceKind::Channel => {
            let (entries, identity) = load_channel_identified(path)?;
            Ok((pack(path, entries)?, format!("sha256:{}", hex(&identity))))
        }
        SourceKind::CatalogJson => {
            let (packed, identity) = load_catalog_json_identified(path, cache)?;
            Ok((packed, format!("sha256:{}", hex(&identity))))
        }
    }
}

/// Reads a channel directory: every visible subdirectory is a package.
pub fn load_channel(path: &Path) -> Result<Vec<CatalogEntry>, SourceError> {
    load_channel_identified(path).map(|(entries, _)| entries)
}

/// Like [`load_channel`], also returning the SHA-256 of its metadata and listing.
fn load_channel_identified(path: &Path) -> Result<(Vec<CatalogEntry>, [u8; 32]), SourceError> {
    let mut directories = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_error(path))? {
        let entry = entry.map_err(read_error(path))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            return Err(SourceError::NonUtf8Name {
                channel: path.to_owned(),
                name: PathBuf::from(file_name),
            });
        };
        if name.starts_with('.') {
            continue;
        }
        let package_path = entry.path();
        // Follows symlinks: a channel may link to package trees kept elsewhere.
        if !std::fs::metadata(&package_path)
            .map_err(read_error(&package_path))?
            .is_dir()
        {
            continue;
        }
        let mut subdirectories = Vec::new();
        for child in std::fs::read_dir(&package_path).map_err(read_error(&package_path))? {
            let child = child.map_err(read_error(&package_path))?;
            let child_path = child.path();
            if child_path.is_dir()
                && let Some(child_name) = child.file_name().to_str()
            {
                subdirectories.push(child_name.to_owned());
            }
        }
        subdirectories.sort();
        directories.push(PackageDirectory {
            name: name.to_owned(),
            subdirectories,
        });
    }
    directories.sort_by(|a, b| a.name.cmp(&b.name));
    let metadata_path = path.join(channel::METADATA_FILE);
    let metadata = match std::fs::read_to_string(&metadata_path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(read_error(&metadata_path)(error)),
    };
    let mut identity = Sha256::new();
    identity.update(metadata.as_deref().unwrap_or_default().as_bytes());
    for directory in &directories {
        identity.update(format!("\0{}", directory.name).as_bytes());
        for subdirectory in &directory.subdirectories {
            identity.update(format!("\0/{subdirectory}").as_bytes());
        }
    }
    let mut entries = channel::channel_entries(&directories, metadata.as_deref(), &host_system())
        .map_err(|error| SourceError::Channel {
        path: metadata_path,
        error,
    })?;
    let channel = std::path::absolute(path).map_err(read_error(path))?;
    for entry in &mut entries {
        for tree in entry.trees.values_mut() {
            *tree = channel.join(&*tree).to_string_lossy().into_owned();
        }
    }
    Ok((entries, identity.finalize().into()))
}

/// Reads a catalog JSON file, through the cache when one is configured.
///
/// The cache holds the packed catalog under the SHA-256 of the file's content, with the hash
/// repeated at the end of the file so that a torn or foreign file is never trusted. To avoid
/// reading and hashing a large file on every query, a memo maps the file's identity (device,
/// inode, size, modification and change times) to its content hash; see [`memo`] for when the
/// memo is trusted.
pub fn load_catalog_json(
    path: &Path,
    cache: &CacheDirectory,
) -> Result<PackedCatalog, SourceError> {
    load_catalog_json_identified(path, cache).map(|(packed, _)| packed)
}

/// Like [`load_catalog_json`], also returning the SHA-256 of the file's content (from the memo
/// when it can be trusted, so a warm load never re-reads the file).
pub fn load_catalog_json_identified(
    path: &Path,
    cache: &CacheDirectory,
) -> Result<(PackedCatalog, [u8; 32]), SourceError> {
    let metadata = std::fs::metadata(path).map_err(read_error(path))?;
    if let Some(directory) = &cache.0
        && let Some(content_hash) = memo::lookup(directory, path, &metadata)
        && let Some(packed) = read_cached(directory, &content_hash)
    {
        return Ok((packed, content_hash));
    }
    let bytes = std::fs::read(path).map_err(read_error(path))?;
    let content_hash: [u8; 32] = Sha256::digest(&bytes).into();
    if let Some(directory) = &cache.0
        && let Some(packed) = read_cached(directory, &content_hash)
    {
        memo::record(directory, path, &metadata, &content_hash);
        return Ok((packed, content_hash));
    }
    let text = std::str::from_utf8(&bytes).map_err(|error| {
        let offset = error.valid_up_to();
        let before = &bytes[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        SourceError::CatalogJson {
            path: path.to_owned(),
            error: CatalogJsonError {
                message: "invalid UTF-8".to_owned(),
                line,
                column: String::from_utf8_lossy(&before[line_start..])
                    .chars()
                    .count()
                    + 1,
            },
        }
    })?;
    let entries = parse_catalog_json(text).map_err(|error| SourceError::CatalogJson {
        path: path.to_owned(),
        error,
    })?;
    drop(bytes);
    let packed = pack(path, entries)?;
    if let Some(directory) = &cache.0 {
        // Best effort: a read-only or full disk costs speed, not correctness.
        let mut contents = packed.as_bytes().to_vec();
        contents.extend_from_slice(&content_hash);
        let written = fs_err::create_dir_all(directory).and_then(|()| {
            crate::fs::write_atomic(&cache_file(directory, &content_hash), &contents)
        });
        if written.is_ok() {
            memo::record(directory, path, &metadata, &content_hash);
        }
    }
    Ok((packed, content_hash))
}

pub(crate) fn cache_file(directory: &Path, content_hash: &[u8; 32]) -> PathBuf {
    directory.join(format!("{}.packed", hex(content_hash)))
}

/// Reads a cached packed catalog; any mismatch (missing, torn, another hash) is a miss.
fn read_cached(directory: &Path, content_hash: &[u8; 32]) -> Option<PackedCatalog> {
    let mut bytes = std::fs::read(cache_file(directory, content_hash)).ok()?;
    let body = bytes.len().checked_sub(32)?;
    if bytes[body..] != content_hash[..] {
        return None;
    }
    bytes.truncate(body);
    PackedCatalog::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(packed: &PackedCatalog) -> Vec<String> {
        (0..packed.len())
            .map(|i| packed.name(i).to_owned())
            .collect()
    }

    #[test]
    fn cached_and_uncached_loads_agree_and_edits_are_seen() {
        let directory = tempfile::tempdir().expect("tempdir");
        let catalog = directory.path().join("catalog.json");
        let cache_directory = directory.path().join("cache");
        let cache = CacheDirectory(Some(cache_directory.clone()));
        fs_err::write(&catalog, r#"{"b": {"name": "b-1"}, "a": {"name": "a-1"}}"#).expect("write");
        let first = load_catalog_json(&catalog, &cache).expect("first load");
        let second = load_catalog_json(&catalog, &cache).expect("cached load");
        assert_eq!(names(&first), ["a-1", "b-1"]);
        assert_eq!(first.as_bytes(), second.as_bytes());
        let packed_files = |dir: &Path| {
            fs_err::read_dir(dir)
                .expect("cache")
                .filter(|e| {
                    e.as_ref()
                        .expect("entry")
                        .path()
                        .extension()
                        .is_some_and(|x| x == "packed")
                })
                .count()
        };
        assert_eq!(packed_files(&cache_directory), 1);
        fs_err::write(&catalog, r#"{"a": {"name": "a-2"}}"#).expect("rewrite");
        let third = load_catalog_json(&catalog, &cache).expect("reload");
        assert_eq!(names(&third), ["a-2"]);
    }

    #[test]
    fn corrupt_cache_file_is_a_miss() {
        let directory = tempfile::tempdir().expect("tempdir");
        let catalog = directory.path().join("catalog.json");
        let cache_directory = directory.path().join("cache");
        let cache = CacheDirectory(Some(cache_directory.clone()));
        fs_err::write(&catalog, r#"{"a": {"name": "a-1"}}"#).expect("write");
        load_catalog_json(&catalog, &cache).expect("first load");
        for entry in fs_err::read_dir(&cache_directory).expect("cache") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                fs_err::write(&path, b"garbage").expect("corrupt");
            }
        }
        assert_eq!(
            names(&load_catalog_json(&catalog, &cache).expect("reload")),
            ["a-1"]
        );
    }

    #[test]
    fn errors_name_the_file_and_position() {
        let directory = tempfile::tempdir().expect("tempdir");
        let catalog = directory.path().join("bad.json");
        fs_err::write(&catalog, "{\n  \"a\": {\"name\": 1}\n}").expect("write");
        let error = load_catalog_json(&catalog, &CacheDirectory::default()).expect_err("bad");
        let text = error.to_string();
        assert!(
            text.contains("bad.json") && text.contains("line 2"),
            "{text}"
        );

        fs_err::write(&catalog, b"{\"a\": {\"name\": \"\xff\"}}").expect("write");
        let error = load_catalog_json(&catalog, &CacheDirectory::default()).expect_err("bad");
        assert!(error.to_string().contains("invalid UTF-8"), "{error}");

        let missing = directory.path().join("missing.json");
        let error = load_source(&missing, &CacheDirectory::default()).expect_err("missing");
        assert!(error.to_string().contains("missing.json"), "{error}");
        assert!(error.hint().is_some());
    }

    #[test]
    fn channel_lists_visible_directories() {
        let directory = tempfile::tempdir().expect("tempdir");
        for package in ["hello-2.10/bin", "hello-2.12/bin", ".hidden-1/bin"] {
            fs_err::create_dir_all(directory.path().join(package)).expect("mkdir");
        }
        fs_err::write(directory.path().join("README.md"), "not a package").expect("write");
        let packed =
            load_source(directory.path(), &CacheDirectory::default()).expect("channel loads");
        assert_eq!(names(&packed), ["hello-2.10", "hello-2.12"]);

        fs_err::write(
            directory.path().join("channel.toml"),
            "format = 1\nbogus = 1\n",
        )
        .expect("write");
        let error = load_channel(directory.path()).expect_err("bad metadata");
        assert!(error.to_string().contains("channel.toml"), "{error}");
        assert!(error.to_string().contains("line 2"), "{error}");
    }
}
