//! Sources that are Nix expressions (`nix = "<nixpkgs>"`, a file or a directory), evaluated by
//! the real Nix with `nix-env -qa --json --out-path --meta`.
//!
//! Evaluating nixpkgs takes Nix many seconds, so what it printed is cached under a key made of
//! everything the result depends on that can be checked cheaply: the expression as resolved
//! (and the search-path entry it came from), which Nix evaluates it (its `nix-env`, resolved,
//! with its size and time), the store directory, the system, `NIX_PATH`, `NIX_CONFIG`, and a
//! fingerprint of the expression's files (a path in the Nix store is immutable, so its name is
//! its fingerprint; a local tree is fingerprinted by the names, sizes and modification times of
//! its files). A directory's files are all of its files; a file's are the `.nix` files of its
//! directory (where what it imports usually is; the spec and lockfile beside it do not count).
//! Hidden entries (`.git`) are left out, and symlinks are not followed. The source's identity,
//! which the lockfile records, is computed only when Nix runs: the store path, or a hash of the
//! same files' contents. Nix's configuration files (`nix.conf` and the user's) are part of the
//! key by content; files the expression reads from elsewhere, and files a `nix.conf` includes,
//! are not. When an expression's evaluation changes, the one it replaces is
//! removed from the cache; a cache that cannot be written costs an evaluation, not an error.

use super::{CacheDirectory, SourceError, load_catalog_json_identified};
use crate::model::packed::PackedCatalog;
use crate::store::nix::{NixError, NixStore};
use crate::store::path::hex;
use sha2::{Digest, Sha256};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bumped when what the cache holds changes meaning.
const CACHE_FORMAT: &str = "declenv-nix-eval-1";

/// A loaded Nix source.
#[derive(Debug, Clone)]
pub struct NixSource {
    /// Its packages.
    pub catalog: PackedCatalog,
    /// `sha256:<hex>`: of the store path the expression resolves to, or of its local files.
    pub identity: String,
    /// The expression's file or directory, resolved (what `nix-build` builds attributes of).
    pub expression: PathBuf,
}

/// How a source's expression is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expression<'a> {
    /// `<name>`: resolved through `NIX_PATH`.
    SearchPath(&'a str),
    /// A file or directory (already resolved against the spec's directory).
    Path(&'a Path),
}

/// Whether `path` is a Nix expression rather than a channel or a catalog: a `.nix` file, or a
/// directory with a `default.nix` and no `channel.toml`.
#[must_use]
pub fn looks_like_expression(path: &Path) -> bool {
    if path.is_dir() {
        path.join("default.nix").is_file()
            && !path.join(crate::model::channel::METADATA_FILE).exists()
    } else {
        path.extension().is_some_and(|extension| extension == "nix")
    }
}

/// Evaluates (or reads from the cache) the source `written` as `expression`.
pub fn load_nix_source(
    written: &str,
    expression: Expression<'_>,
    nix: &NixStore,
    cache: &CacheDirectory,
) -> Result<NixSource, SourceError> {
    let nix_error = |source: NixError| SourceError::Nix {
        expression: written.to_owned(),
        source: Box::new(source),
    };
    let resolved = match expression {
        Expression::SearchPath(entry) => nix.find_file(entry).map_err(nix_error)?,
        Expression::Path(path) => path.to_owned(),
    };
    let canonical = std::fs::canonicalize(&resolved).map_err(|source| SourceError::Read {
        path: resolved.clone(),
        source,
    })?;
    let in_store = canonical.starts_with(nix.store_dir().as_str());
    // A directory is all of its files; a file is the `.nix` files of its directory, where what
    // it imports usually is (and not, say, the spec and lockfile beside it).
    let (tree, only_nix_files) = if canonical.is_dir() {
        (canonical.clone(), false)
    } else {
        let directory = canonical
            .parent()
            .map_or_else(|| canonical.clone(), Path::to_owned);
        (directory, true)
    };
    let nix_identity = nix.identity().map_err(nix_error)?;
    let entry = match expression {
        Expression::SearchPath(entry) => entry,
        Expression::Path(_) => "",
    };
    let mut key = Sha256::new();
    for part in [
        CACHE_FORMAT,
        &nix_identity,
        nix.store_dir().as_str(),
        &super::host_system(),
        &std::env::var("NIX_PATH").unwrap_or_default(),
        &std::env::var("NIX_CONFIG").unwrap_or_default(),
        entry,
        &canonical.to_string_lossy(),
    ] {
        key.update(part.as_bytes());
        key.update(b"\0");
    }
    // Nix's settings (`system`, `allow-import-from-derivation`, `pure-eval`, …) can change what
    // an evaluation gives; their files are small, so their contents go in whole.
    for file in NixStore::configuration_files() {
        key.update(file.as_os_str().as_bytes());
        key.update(b"\0");
        if let Ok(contents) = std::fs::read(&file) {
            key.update(&contents);
        }
        key.update(b"\0");
    }
    if !in_store {
        fingerprint(&tree, only_nix_files, &mut key).map_err(|source| SourceError::Read {
            path: tree.clone(),
            source,
        })?;
    }
    let key = hex(&key.finalize());
    let directory = cache.0.as_ref().map(|directory| directory.join("nix-eval"));
    let json_name = format!("{key}.json");
    let identity_name = format!("{key}.identity");
    if let Some(directory) = &directory
        && let Ok(identity) = std::fs::read_to_string(directory.join(&identity_name))
        && identity.starts_with("sha256:")
        && directory.join(&json_name).is_file()
    {
        let (catalog, _) = load_catalog_json_identified(&directory.join(&json_name), cache)?;
        return Ok(NixSource {
            catalog,
            identity,
            expression: canonical,
        });
    }
    let printed = nix.query_available(&canonical).map_err(nix_error)?;
    let identity = if in_store {
        format!(
            "sha256:{}",
            hex(&Sha256::digest(canonical.as_os_str().as_bytes()))
        )
    } else {
        let mut content = Sha256::new();
        content_hash(&tree, &tree, only_nix_files, &mut content).map_err(|source| {
            SourceError::Read {
                path: tree.clone(),
                source,
            }
        })?;
        format!("sha256:{}", hex(&content.finalize()))
    };
    // The cache is best effort: one that cannot be written costs the next plan an evaluation.
    if let Some(directory) = &directory
        && store_evaluation(directory, &canonical, &key, &printed, &identity, cache).is_ok()
    {
        let (catalog, _) = load_catalog_json_identified(&directory.join(&json_name), cache)?;
        return Ok(NixSource {
            catalog,
            identity,
            expression: canonical,
        });
    }
    let temporary = tempfile::tempdir().map_err(|source| SourceError::Read {
        path: std::env::temp_dir(),
        source,
    })?;
    let json_path = temporary.path().join(&json_name);
    std::fs::write(&json_path, &printed).map_err(|source| SourceError::Read {
        path: json_path.clone(),
        source,
    })?;
    let (catalog, _) = load_catalog_json_identified(&json_path, &CacheDirectory(None))?;
    Ok(NixSource {
        catalog,
        identity,
        expression: canonical,
    })
}

/// Writes an evaluation to the cache under `key`, and drops the one it replaces for the same
/// expression (with its packed catalog), so that editing an expression does not pile up copies
/// of its evaluation.
fn store_evaluation(
    directory: &Path,
    expression: &Path,
    key: &str,
    printed: &[u8],
    identity: &str,
    cache: &CacheDirectory,
) -> io::Result<()> {
    fs_err::create_dir_all(directory)?;
    crate::fs::write_atomic(&directory.join(format!("{key}.json")), printed)?;
    crate::fs::write_atomic(
        &directory.join(format!("{key}.identity")),
        identity.as_bytes(),
    )?;
    let current = directory.join(format!(
        "{}.current",
        hex(&Sha256::digest(expression.as_os_str().as_bytes()))
    ));
    if let Ok(previous) = std::fs::read_to_string(&current)
        && previous != key
        && previous.bytes().all(|byte| byte.is_ascii_hexdigit())
    {
        let previous_json = directory.join(format!("{previous}.json"));
        if let (Ok(bytes), Some(catalogs)) = (std::fs::read(&previous_json), &cache.0) {
            let content_hash: [u8; 32] = Sha256::digest(&bytes).into();
            let _ = std::fs::remove_file(super::cache_file(catalogs, &content_hash));
        }
        let _ = std::fs::remove_file(previous_json);
        let _ = std::fs::remove_file(directory.join(format!("{previous}.identity")));
    }
    crate::fs::write_atomic(&current, key.as_bytes())
}

/// The entries of `directory` that count, sorted: hidden ones (`.git`) are left out, and with
/// `only_nix_files` every file but `*.nix` ones (directories are kept, to look inside).
fn visible_entries(directory: &Path, only_nix_files: bool) -> io::Result<Vec<std::fs::DirEntry>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.as_bytes().starts_with(b".") {
            continue;
        }
        if only_nix_files && !name.as_bytes().ends_with(b".nix") && !entry.file_type()?.is_dir() {
            continue;
        }
        entries.push(entry);
    }
    entries.sort_by_key(std::fs::DirEntry::file_name);
    Ok(entries)
}

/// Feeds the names, kinds, sizes and modification times under `directory` into `hasher`.
fn fingerprint(directory: &Path, only_nix_files: bool, hasher: &mut Sha256) -> io::Result<()> {
    for entry in visible_entries(directory, only_nix_files)? {
        let metadata = entry.metadata()?;
        hasher.update(entry.file_name().as_bytes());
        hasher.update(
            format!(
                "\0{}\0{}\0{}\0{}\0",
                metadata.mode(),
                metadata.size(),
                metadata.mtime(),
                metadata.mtime_nsec()
            )
            .as_bytes(),
        );
        if metadata.is_dir() {
            fingerprint(&entry.path(), only_nix_files, hasher)?;
            hasher.update(b"\0end\0");
        }
    }
    Ok(())
}

/// Feeds the relative names, kinds and contents under `directory` into `hasher`.
fn content_hash(
    base: &Path,
    directory: &Path,
    only_nix_files: bool,
    hasher: &mut Sha256,
) -> io::Result<()> {
    for entry in visible_entries(directory, only_nix_files)? {
        let path = entry.path();
        let relative = path.strip_prefix(base).unwrap_or(&path);
        let file_type = entry.file_type()?;
        hasher.update(relative.as_os_str().as_bytes());
        if file_type.is_dir() {
            hasher.update(b"\0directory\0");
            content_hash(base, &path, only_nix_files, hasher)?;
        } else if file_type.is_symlink() {
            hasher.update(b"\0symlink\0");
            hasher.update(std::fs::read_link(&path)?.as_os_str().as_bytes());
        } else if file_type.is_file() {
            let contents = std::fs::read(&path)?;
            hasher.update(format!("\0file {}\0", contents.len()).as_bytes());
            hasher.update(&contents);
        } else {
            // A socket or a device: nothing an expression can import.
            hasher.update(b"\0other\0");
        }
        hasher.update(b"\0");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint_of(directory: &Path) -> String {
        let mut hasher = Sha256::new();
        fingerprint(directory, false, &mut hasher).expect("fingerprint");
        hex(&hasher.finalize())
    }

    fn content_of(directory: &Path) -> String {
        let mut hasher = Sha256::new();
        content_hash(directory, directory, false, &mut hasher).expect("content");
        hex(&hasher.finalize())
    }

    #[test]
    fn a_file_expression_is_keyed_by_the_nix_files_beside_it_only() {
        let directory = tempfile::tempdir().expect("tempdir");
        let root = directory.path();
        fs_err::create_dir_all(root.join("lib")).expect("mkdir");
        fs_err::write(root.join("pkgs.nix"), "import ./lib/a.nix").expect("write");
        fs_err::write(root.join("lib/a.nix"), "{ }").expect("write");
        fs_err::write(root.join("profile.toml"), "version = 1").expect("write");
        let key = |root: &Path| {
            let mut hasher = Sha256::new();
            fingerprint(root, true, &mut hasher).expect("fingerprint");
            content_hash(root, root, true, &mut hasher).expect("content");
            hex(&hasher.finalize())
        };
        let first = key(root);
        fs_err::write(root.join("profile.toml"), "version = 1\n[packages.a]\n").expect("write");
        fs_err::write(root.join("profile.lock"), "{}").expect("write");
        assert_eq!(
            key(root),
            first,
            "the spec and lockfile beside it do not count"
        );
        fs_err::write(root.join("lib/a.nix"), "{ a = 1; }").expect("write");
        assert_ne!(key(root), first, "an imported file does");
    }

    #[test]
    fn edits_change_the_fingerprint_and_the_identity_but_hidden_files_do_not() {
        let directory = tempfile::tempdir().expect("tempdir");
        let root = directory.path();
        fs_err::create_dir_all(root.join("pkgs/tools")).expect("mkdir");
        fs_err::write(root.join("default.nix"), "import ./pkgs").expect("write");
        fs_err::write(root.join("pkgs/tools/a.nix"), "{ }").expect("write");
        let (first_fingerprint, first_content) = (fingerprint_of(root), content_of(root));

        fs_err::create_dir_all(root.join(".git")).expect("mkdir");
        fs_err::write(root.join(".git/HEAD"), "ref").expect("write");
        assert_eq!(fingerprint_of(root), first_fingerprint);
        assert_eq!(content_of(root), first_content);

        fs_err::write(root.join("pkgs/tools/a.nix"), "{ a = 1; }").expect("write");
        assert_ne!(fingerprint_of(root), first_fingerprint);
        assert_ne!(content_of(root), first_content);

        // Same contents, another name: the identity tells them apart.
        fs_err::write(root.join("pkgs/tools/a.nix"), "{ }").expect("write");
        fs_err::rename(root.join("pkgs/tools/a.nix"), root.join("pkgs/tools/b.nix"))
            .expect("rename");
        assert_ne!(content_of(root), first_content);
    }
}
