//! Building a user environment: read the installed packages' trees from disk, lay them out with
//! [`crate::plan::layout`], materialise the result, and add it to the store beside its
//! `manifest.nix`, as `nix-env`'s builder does.
//!
//! I/O only: every decision (what to link, which package wins, which errors) is the layout's.
//! This module reads package trees *through* symlinks as the builder does (a link to a
//! directory is merged like one, a dangling link is skipped), writes only inside a temporary
//! directory it creates under the root, and leaves the environment in the store. Package trees
//! are untrusted: names that are not UTF-8 are skipped with a warning, and nothing a tree holds
//! can make it write elsewhere (the layout's paths never leave the environment).

use crate::model::manifest::{ManifestElement, NixValue, RenderError, render};
use crate::plan::layout::{
    self, Directory, Layout, LayoutError, LayoutWarning, Node, Operation, Package, PackageTree,
    Resolution, Symlink, Trees,
};
use crate::store::{EmbeddedStore, StoreError, StorePath};
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

/// `ELOOP` on Linux (and every other Unix declenv targets but the BSDs, where it is 62).
#[cfg(target_os = "linux")]
const ELOOP: i32 = 40;
#[cfg(not(target_os = "linux"))]
const ELOOP: i32 = 62;

/// Why an environment could not be built. Every variant names the package or path.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A package tree could not be read.
    #[error("cannot read package tree `{}`", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The environment could not be written.
    #[error("cannot write the environment at `{}`", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The builder's own failure (a collision, a missing package): Nix's message.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A manifest element that cannot be written so that Nix reads it back.
    #[error(transparent)]
    Manifest(#[from] RenderError),
    /// A `meta.priority` the builder cannot read (Nix fails the build with `stoi`).
    #[error("package `{package}` has priority `{token}`, which is not an integer")]
    BadPriority {
        /// The element's name.
        package: String,
        /// The priority as passed to the builder.
        token: String,
    },
    /// The store refused the environment or its manifest.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BuildError {
    /// A hint for the user, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::BadPriority { .. } => Some("set `priority` to an integer; lower wins".to_owned()),
            Self::Store(error) => error.hint(),
            _ => None,
        }
    }
}

/// A built environment.
#[derive(Debug, Clone)]
pub struct BuiltEnvironment {
    /// The environment's store path.
    pub path: StorePath,
    /// The store path of its `manifest.nix`.
    pub manifest: StorePath,
    /// What the builder skipped, as Nix words it.
    pub warnings: Vec<String>,
}

/// The string the builder receives for a meta value (Nix passes derivation attributes as
/// strings: an integer in decimal, a float with six decimals, `true` as `1`, `false` empty).
#[must_use]
pub fn builder_token(value: &NixValue) -> String {
    match value {
        NixValue::String(text) => text.clone(),
        NixValue::Int(number) => number.to_string(),
        NixValue::Float(number) => format!("{number:.6}"),
        NixValue::Bool(true) => "1".to_owned(),
        NixValue::Bool(false) | NixValue::List(_) | NixValue::Attrs(_) => String::new(),
    }
}

/// The builder's view of the elements: each installed output as a package with the element's
/// priority and activity.
pub fn packages_of(elements: &[ManifestElement]) -> Result<Vec<Package>, BuildError> {
    let mut packages = Vec::new();
    for element in elements {
        let priority = match element.meta.get("priority") {
            None => layout::DEFAULT_PRIORITY,
            Some(value) => {
                let token = builder_token(value);
                layout::read_priority(&token).ok_or_else(|| BuildError::BadPriority {
                    package: element.name.clone(),
                    token,
                })?
            }
        };
        let active = element
            .meta
            .get("active")
            .is_none_or(|value| layout::read_active(&builder_token(value)));
        for path in element.outputs.values() {
            let mut package = Package::new(path.clone()).with_priority(priority);
            if !active {
                package = package.inactive();
            }
            packages.push(package);
        }
    }
    Ok(packages)
}

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_owned();
    move |source| BuildError::Read { path, source }
}

fn write_error(path: &Path) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_owned();
    move |source| BuildError::Write { path, source }
}

/// Reads one tree from disk without following symlinks for its structure, recording what each
/// symlink resolves to and collecting the canonical directories links lead to.
fn read_tree(
    path: &Path,
    warnings: &mut Vec<String>,
    link_directories: &mut Vec<String>,
) -> Result<PackageTree, BuildError> {
    let root = read_node(path, warnings, link_directories)?;
    let propagated =
        match std::fs::read_to_string(path.join("nix-support/propagated-user-env-packages")) {
            Ok(text) => Some(text),
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                None
            }
            Err(error) => return Err(read_error(path)(error)),
        };
    Ok(PackageTree {
        root,
        propagated_user_env_packages: propagated,
    })
}

/// One node. Recursion depth is bounded by the system's path length limit (a few thousand
/// levels at most), since every level is opened by its full path.
fn read_node(
    path: &Path,
    warnings: &mut Vec<String>,
    link_directories: &mut Vec<String>,
) -> Result<Node, BuildError> {
    let metadata = std::fs::symlink_metadata(path).map_err(read_error(path))?;
    if metadata.file_type().is_symlink() {
        return symlink_node(path, link_directories);
    }
    if !metadata.is_dir() {
        return Ok(Node::File);
    }
    let mut directory = Directory::default();
    for entry in std::fs::read_dir(path).map_err(read_error(path))? {
        let entry = entry.map_err(read_error(path))?;
        let child = entry.path();
        match entry.file_name().into_string() {
            Ok(name) => {
                let node = read_node(&child, warnings, link_directories)?;
                directory.entries.insert(name, node);
            }
            Err(_) => warnings.push(format!(
                "skipping `{}`: its name is not UTF-8",
                child.display()
            )),
        }
    }
    Ok(Node::Directory(directory))
}

/// A symlink, with what `stat` through it finds (Nix's builder follows links).
fn symlink_node(path: &Path, link_directories: &mut Vec<String>) -> Result<Node, BuildError> {
    let target = std::fs::read_link(path)
        .map_err(read_error(path))?
        .to_string_lossy()
        .into_owned();
    let resolves_to = match std::fs::metadata(path) {
        Ok(metadata) => {
            let canonical = std::fs::canonicalize(path)
                .map_err(read_error(path))?
                .to_string_lossy()
                .into_owned();
            if metadata.is_dir() {
                link_directories.push(canonical.clone());
                Resolution::Directory {
                    canonical_path: canonical,
                }
            } else {
                Resolution::NonDirectory {
                    canonical_path: canonical,
                }
            }
        }
        // ELOOP: too many levels of symbolic links.
        Err(error) if error.raw_os_error() == Some(ELOOP) => Resolution::Loop,
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Resolution::Dangling
        }
        Err(error) => return Err(read_error(path)(error)),
    };
    Ok(Node::Symlink(Symlink {
        target,
        resolves_to,
    }))
}

/// Reads every tree the layout may need: the packages, what they propagate (transitively) and
/// the directories their symlinks lead to.
pub fn collect_trees(
    packages: &[Package],
    warnings: &mut Vec<String>,
) -> Result<Trees, BuildError> {
    let mut trees = Trees::new();
    let mut attempted = BTreeSet::new();
    let mut pending: Vec<String> = packages
        .iter()
        .filter(|package| package.active)
        .map(|package| package.store_path.clone())
        .collect();
    while let Some(path) = pending.pop() {
        if !attempted.insert(path.clone())
            || (trees.get(&path).is_none() && trees.directory_at(&path).is_some())
        {
            continue;
        }
        let mut link_directories = Vec::new();
        let tree = match read_tree(Path::new(&path), warnings, &mut link_directories) {
            Ok(tree) => tree,
            // A missing package is the layout's error to report, in Nix's words.
            Err(BuildError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                continue;
            }
            Err(error) => return Err(error),
        };
        if let Some(text) = &tree.propagated_user_env_packages {
            pending.extend(
                text.split([' ', '\n'])
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned),
            );
        }
        pending.extend(link_directories);
        trees.insert(path, tree);
    }
    Ok(trees)
}

/// Creates the layout's directories and links under `destination`.
fn materialise(layout: &Layout, destination: &Path) -> Result<(), BuildError> {
    for operation in &layout.operations {
        let mut path = destination.to_owned();
        for component in operation.path().components() {
            path.push(component);
        }
        match operation {
            Operation::Directory(_) => {
                std::fs::create_dir(&path).map_err(write_error(&path))?;
            }
            Operation::Symlink { target, .. } => {
                std::os::unix::fs::symlink(target, &path).map_err(write_error(&path))?;
            }
        }
    }
    Ok(())
}

/// Builds the environment for `elements` and adds it (and its `manifest.nix`) to `store`.
///
/// `scratch` is a directory on the same filesystem as the store where temporary trees are
/// made (and removed).
pub fn build_environment(
    store: &EmbeddedStore,
    elements: &[ManifestElement],
    scratch: &Path,
) -> Result<BuiltEnvironment, BuildError> {
    let manifest_text = render(elements)?;
    std::fs::create_dir_all(scratch).map_err(write_error(scratch))?;
    let work = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(scratch)
        .map_err(write_error(scratch))?;

    let manifest_file = work.path().join("env-manifest.nix");
    std::fs::write(&manifest_file, &manifest_text).map_err(write_error(&manifest_file))?;
    let manifest = store.add_tree(&manifest_file, "env-manifest.nix")?;

    let packages = packages_of(elements)?;
    let mut warnings = Vec::new();
    let trees = collect_trees(&packages, &mut warnings)?;
    let environment = work.path().join("user-environment");
    let environment_name = environment.to_string_lossy().into_owned();
    let layout = layout::layout(&packages, &trees, &environment_name)?;
    warnings.extend(layout.warnings.iter().map(LayoutWarning::to_string));

    std::fs::create_dir(&environment).map_err(write_error(&environment))?;
    materialise(&layout, &environment)?;
    let manifest_link = environment.join("manifest.nix");
    std::os::unix::fs::symlink(manifest.to_string(), &manifest_link)
        .map_err(write_error(&manifest_link))?;
    let path = store.add_tree(&environment, "user-environment")?;
    Ok(BuiltEnvironment {
        path,
        manifest,
        warnings,
    })
}
