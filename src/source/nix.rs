//! Sources that are Nix expressions (`nix = "<nixpkgs>"`, a file or a directory), evaluated by
//! the real Nix with `nix-env -qa --json --out-path --meta`.
//!
//! Evaluating nixpkgs takes Nix many seconds, so what it printed is cached under a key made of
//! everything the result depends on that can be checked cheaply: the expression as written and
//! as resolved, which Nix evaluates it (its `nix-env`, resolved, with its size and time), the
//! system, `NIX_PATH`, and a fingerprint of the expression's
//! files (a path in the Nix store is immutable, so its name is its fingerprint; a local tree is
//! fingerprinted by the names, sizes and modification times of its files). The source's
//! identity, which the lockfile records, is computed only when Nix runs: the store path, or a
//! hash of the local tree's contents. A file's tree is its directory (where what it imports
//! usually is), so an expression belongs in a directory of its own. Hidden entries (`.git`)
//! are left out, and symlinks are not followed. Files the expression reads from outside its
//! tree are not part of the key; editing one needs a touch of the expression.

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
    // A file's directory holds what it imports, as far as the key can know.
    let tree = if canonical.is_dir() {
        canonical.clone()
    } else {
        canonical
            .parent()
            .map_or_else(|| canonical.clone(), Path::to_owned)
    };
    let nix_identity = nix.identity().map_err(nix_error)?;
    let mut key = Sha256::new();
    for part in [
        CACHE_FORMAT,
        &nix_identity,
        &super::host_system(),
        &std::env::var("NIX_PATH").unwrap_or_default(),
        written,
        &canonical.to_string_lossy(),
    ] {
        key.update(part.as_bytes());
        key.update(b"\0");
    }
    if !in_store {
        fingerprint(&tree, &mut key).map_err(|source| SourceError::Read {
            path: tree.clone(),
            source,
        })?;
    }
    let key = hex(&key.finalize());
    let temporary;
    let directory = match &cache.0 {
        Some(directory) => directory.join("nix-eval"),
        None => {
            temporary = tempfile::tempdir().map_err(|source| SourceError::Read {
                path: std::env::temp_dir(),
                source,
            })?;
            temporary.path().to_owned()
        }
    };
    let json_path = directory.join(format!("{key}.json"));
    let identity_path = directory.join(format!("{key}.identity"));
    let cached_identity = std::fs::read_to_string(&identity_path)
        .ok()
        .filter(|identity| identity.starts_with("sha256:") && json_path.is_file());
    let identity = match cached_identity {
        Some(identity) => identity,
        None => {
            let printed = nix.query_available(&canonical).map_err(nix_error)?;
            let identity = if in_store {
                format!(
                    "sha256:{}",
                    hex(&Sha256::digest(canonical.as_os_str().as_bytes()))
                )
            } else {
                let mut content = Sha256::new();
                content_hash(&tree, &tree, &mut content).map_err(|source| SourceError::Read {
                    path: tree.clone(),
                    source,
                })?;
                format!("sha256:{}", hex(&content.finalize()))
            };
            let write_error = |path: &Path| {
                let path = path.to_owned();
                move |source| SourceError::Read { path, source }
            };
            fs_err::create_dir_all(&directory).map_err(write_error(&directory))?;
            crate::fs::write_atomic(&json_path, &printed).map_err(write_error(&json_path))?;
            crate::fs::write_atomic(&identity_path, identity.as_bytes())
                .map_err(write_error(&identity_path))?;
            identity
        }
    };
    let (catalog, _) = load_catalog_json_identified(&json_path, cache)?;
    Ok(NixSource {
        catalog,
        identity,
        expression: canonical,
    })
}

/// The entries of `directory` that count, sorted: hidden ones (`.git`) are left out.
fn visible_entries(directory: &Path) -> io::Result<Vec<std::fs::DirEntry>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        if !entry.file_name().as_bytes().starts_with(b".") {
            entries.push(entry);
        }
    }
    entries.sort_by_key(std::fs::DirEntry::file_name);
    Ok(entries)
}

/// Feeds the names, kinds, sizes and modification times under `directory` into `hasher`.
fn fingerprint(directory: &Path, hasher: &mut Sha256) -> io::Result<()> {
    for entry in visible_entries(directory)? {
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
            fingerprint(&entry.path(), hasher)?;
            hasher.update(b"\0end\0");
        }
    }
    Ok(())
}

/// Feeds the relative names, kinds and contents under `directory` into `hasher`.
fn content_hash(base: &Path, directory: &Path, hasher: &mut Sha256) -> io::Result<()> {
    for entry in visible_entries(directory)? {
        let path = entry.path();
        let relative = path.strip_prefix(base).unwrap_or(&path);
        let file_type = entry.file_type()?;
        hasher.update(relative.as_os_str().as_bytes());
        if file_type.is_dir() {
            hasher.update(b"\0directory\0");
            content_hash(base, &path, hasher)?;
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
        fingerprint(directory, &mut hasher).expect("fingerprint");
        hex(&hasher.finalize())
    }

    fn content_of(directory: &Path) -> String {
        let mut hasher = Sha256::new();
        content_hash(directory, directory, &mut hasher).expect("content");
        hex(&hasher.finalize())
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
