//! Building a user environment: read the installed packages' trees from disk, lay them out with
//! [`crate::plan::layout`], and add the result to the store beside its `manifest.nix`, as
//! `nix-env`'s builder does.
//!
//! I/O only: every decision (what to link, which package wins, which errors) is the layout's.
//! This module reads package trees *through* symlinks as the builder does (a link to a
//! directory is merged like one, a dangling link is skipped), and only as far as the layout
//! walks them ([`DiskTrees`]): a directory linked whole is never listed. It writes nothing
//! itself: the store creates the environment once, in place, from the layout
//! ([`EmbeddedStore::add_link_tree`]), and nothing is written when the layout fails. Package
//! trees are untrusted: names that are not UTF-8 are skipped with a warning, and nothing a tree
//! holds can make the store write elsewhere (the layout's paths never leave the environment, and
//! the store checks every entry's path again).

use crate::model::manifest::{ManifestElement, NixValue, RenderError, render};
use crate::plan::layout::{
    self, Directory, Layout, LayoutError, LayoutWarning, Node, Operation, Package, PackageTree,
    Resolution, SourceEntry, SourceNode, SourcePackage, Symlink, TreeSource, Trees,
};
use crate::store::{EmbeddedStore, LinkTree, StoreError, StorePath};
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

/// Reads one tree from disk without following symlinks for its structure, recording what each
/// symlink resolves to and collecting the canonical directories links lead to.
fn read_tree(
    path: &Path,
    warnings: &mut Vec<String>,
    link_directories: &mut Vec<String>,
) -> Result<PackageTree, BuildError> {
    let root = read_node(path, warnings, link_directories)?;
    Ok(PackageTree {
        root,
        propagated_user_env_packages: read_propagated(path)?,
    })
}

/// The text of `nix-support/propagated-user-env-packages` in the tree at `path`, read through
/// symlinks; `None` when there is no such file.
fn read_propagated(path: &Path) -> Result<Option<String>, BuildError> {
    match std::fs::read_to_string(path.join("nix-support/propagated-user-env-packages")) {
        Ok(text) => Ok(Some(text)),
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(error) => Err(read_error(path)(error)),
    }
}

/// One node. Recursion depth is bounded by the system's path length limit (a few thousand
/// levels at most), since every level is opened by its full path.
fn read_node(
    path: &Path,
    warnings: &mut Vec<String>,
    link_directories: &mut Vec<String>,
) -> Result<Node, BuildError> {
    let file_type = std::fs::symlink_metadata(path)
        .map_err(read_error(path))?
        .file_type();
    read_typed_node(path, file_type, warnings, link_directories)
}

/// [`read_node`] for a node whose type is known (from its directory's listing).
fn read_typed_node(
    path: &Path,
    file_type: std::fs::FileType,
    warnings: &mut Vec<String>,
    link_directories: &mut Vec<String>,
) -> Result<Node, BuildError> {
    if file_type.is_symlink() {
        let link = symlink_node(path)?;
        if let Resolution::Directory { canonical_path } = &link.resolves_to {
            link_directories.push(canonical_path.clone());
        }
        return Ok(Node::Symlink(link));
    }
    if !file_type.is_dir() {
        return Ok(Node::File);
    }
    let mut directory = Directory::default();
    for entry in std::fs::read_dir(path).map_err(read_error(path))? {
        let entry = entry.map_err(read_error(path))?;
        let child = entry.path();
        match entry.file_name().into_string() {
            Ok(name) => {
                let file_type = entry.file_type().map_err(read_error(&child))?;
                let node = read_typed_node(&child, file_type, warnings, link_directories)?;
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
fn symlink_node(path: &Path) -> Result<Symlink, BuildError> {
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
    Ok(Symlink {
        target,
        resolves_to,
    })
}

/// Reads every tree the layout may need: the packages, what they propagate (transitively) and
/// the directories their symlinks lead to, each in full. [`lay_out`] reads only what the layout
/// walks, which is much less; this is for callers that want the trees as values.
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

/// A directory of a package tree on disk: listed already (a package's root, listed to find
/// `nix-support`), or to be listed at its canonical path when the walk enters it.
#[derive(Debug)]
pub enum DiskDirectory {
    /// Its entries.
    Listed(Vec<SourceEntry<DiskDirectory>>),
    /// Not read yet.
    Unread,
}

/// Package trees read from disk as [`layout::layout_from`] walks them: a store path's top-level
/// directory when the package is linked, and any other directory only when the walk has to
/// enter it (to merge it with another package's, as Nix's builder does). A directory linked
/// whole is never listed.
///
/// Reads through symlinks as the builder does: each entry's type comes from the directory
/// listing, and only symlinks are looked at further (`readlink`, `stat` through them, their
/// canonical path). Names that are not UTF-8 are skipped with a warning.
#[derive(Debug, Default)]
pub struct DiskTrees {
    /// What was skipped while reading, for the user.
    pub warnings: Vec<String>,
}

impl DiskTrees {
    /// A reader that has read nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries of the directory at `path`, in byte order of their names.
    fn list(&mut self, path: &Path) -> Result<Vec<SourceEntry<DiskDirectory>>, BuildError> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(path).map_err(read_error(path))? {
            let entry = entry.map_err(read_error(path))?;
            let name = match entry.file_name().into_string() {
                Ok(name) => name,
                Err(_) => {
                    self.warnings.push(format!(
                        "skipping `{}`: its name is not UTF-8",
                        entry.path().display()
                    ));
                    continue;
                }
            };
            let file_type = entry.file_type().map_err(read_error(&entry.path()))?;
            let node = if name.starts_with('.') {
                // The builder skips such names before it looks at them.
                SourceNode::File
            } else if file_type.is_dir() {
                SourceNode::Directory(DiskDirectory::Unread)
            } else if file_type.is_symlink() {
                SourceNode::Symlink(symlink_node(&entry.path())?)
            } else {
                SourceNode::File
            };
            entries.push(SourceEntry { name, node });
        }
        entries.sort_unstable_by(|left, right| left.name.cmp(&right.name));
        Ok(entries)
    }
}

impl TreeSource for DiskTrees {
    type Directory = DiskDirectory;
    type Error = BuildError;

    fn package(
        &mut self,
        store_path: &str,
    ) -> Result<Option<SourcePackage<DiskDirectory>>, BuildError> {
        let path = Path::new(store_path);
        let metadata = match std::fs::symlink_metadata(path) {
            Ok(metadata) => metadata,
            // A missing package is the layout's error to report, in Nix's words.
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(read_error(path)(error)),
        };
        let root = if metadata.file_type().is_symlink() {
            SourceNode::Symlink(symlink_node(path)?)
        } else if metadata.is_dir() {
            SourceNode::Directory(DiskDirectory::Listed(self.list(path)?))
        } else {
            SourceNode::File
        };
        // Only a tree with a `nix-support` entry can propagate anything: spare the others a
        // failed `open`.
        let has_support = match &root {
            SourceNode::Directory(DiskDirectory::Listed(entries)) => entries
                .binary_search_by(|entry| entry.name.as_str().cmp("nix-support"))
                .is_ok(),
            _ => true,
        };
        let propagated = if has_support {
            read_propagated(path)?
        } else {
            None
        };
        Ok(Some(SourcePackage {
            root,
            propagated_user_env_packages: propagated,
        }))
    }

    fn directory_at(&mut self, _canonical_path: &str) -> Result<Option<DiskDirectory>, BuildError> {
        Ok(Some(DiskDirectory::Unread))
    }

    fn entries(
        &mut self,
        directory: DiskDirectory,
        canonical_path: &str,
    ) -> Result<Vec<SourceEntry<DiskDirectory>>, BuildError> {
        match directory {
            DiskDirectory::Listed(entries) => Ok(entries),
            DiskDirectory::Unread => self.list(Path::new(canonical_path)),
        }
    }
}

/// Lays out the environment for `packages` as [`layout::layout`] does, reading their trees
/// from disk only as far as the walk needs them (see [`DiskTrees`]); what was skipped while
/// reading is added to `warnings`. `environment` is the output path named in messages.
pub fn lay_out(
    packages: &[Package],
    environment: &str,
    warnings: &mut Vec<String>,
) -> Result<Layout, BuildError> {
    let mut trees = DiskTrees::new();
    let result = layout::layout_from(packages, &mut trees, environment);
    warnings.append(&mut trees.warnings);
    result
}

/// The store path name of every environment, as `nix-env` names its.
const ENVIRONMENT_NAME: &str = "user-environment";

/// The name of the store file holding an environment's manifest, as `nix-env` names it.
const MANIFEST_NAME: &str = "env-manifest.nix";

/// Builds the environment for `elements` and adds it (and its `manifest.nix`) to `store`.
///
/// The trees are read only as far as the layout needs them, and the environment is created
/// once, directly in the store (see [`EmbeddedStore::add_link_tree`]); a build that fails (a
/// collision, a missing package) adds nothing. `scratch` is no longer used: it is kept so that
/// callers need not change.
pub fn build_environment(
    store: &EmbeddedStore,
    elements: &[ManifestElement],
    scratch: &Path,
) -> Result<BuiltEnvironment, BuildError> {
    let _ = scratch;
    let manifest_text = render(elements)?;
    let packages = packages_of(elements)?;
    let mut warnings = Vec::new();
    // Messages name the environment as Nix names its output, by its store path; that is known
    // only once the layout is, so they are written with this stand-in and rewritten after.
    let stand_in = format!("{}/{ENVIRONMENT_NAME}", store.store_dir());
    let layout = lay_out(&packages, &stand_in, &mut warnings)?;

    let manifest = store.add_file(manifest_text.as_bytes(), MANIFEST_NAME)?;
    let mut tree = LinkTree::new();
    for operation in &layout.operations {
        match operation {
            Operation::Directory(path) => tree.directory(path.as_str()),
            Operation::Symlink { path, target } => tree.symlink(path.as_str(), target.as_str()),
        }
    }
    // The builder's own last step; no package can take the name (it is on the ignore list).
    tree.symlink("manifest.nix", manifest.to_string());
    let path = store.add_link_tree(&tree, ENVIRONMENT_NAME)?;
    let path_text = path.to_string();
    warnings.extend(layout.warnings.iter().map(|warning| {
        match warning {
            LayoutWarning::DanglingSymlink { destination } => LayoutWarning::DanglingSymlink {
                destination: destination
                    .strip_prefix(&stand_in)
                    .map_or_else(|| destination.clone(), |rest| format!("{path_text}{rest}")),
            }
            .to_string(),
            other => other.to_string(),
        }
    }));
    Ok(BuiltEnvironment {
        path,
        manifest,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Package trees on disk exercising what the walk reads: merged directories, links to
    /// files and directories (within a package and into another one), a dangling link, a
    /// hidden entry, an ignored entry, propagation, a file and a missing store path.
    fn make_trees(root: &Path) -> impl Fn(&str) -> String {
        let path = |name: &str| root.join(name).to_string_lossy().into_owned();
        let write = |relative: &str| {
            let file = root.join(relative);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::write(&file, relative).expect("write");
        };
        for file in [
            "a/bin/a",
            "a/lib/liba.so.1.0",
            "a/share/doc/a/README",
            "a/share/data/x",
            "b/bin/b",
            "b/lib/libb.so",
            "b/share/doc/b/README",
            "b/.hidden/x",
            "b/share/info/dir",
            "c/bin/c",
            "c/share/c/x",
            "d/docs/d",
            "d/bin/a",
            "e",
        ] {
            write(file);
        }
        symlink("liba.so.1.0", root.join("a/lib/liba.so.1")).expect("symlink");
        symlink("liba.so.1", root.join("a/lib/liba.so")).expect("symlink");
        symlink("../share/data", root.join("a/share/a")).expect("symlink");
        std::fs::create_dir_all(root.join("a/nix-support")).expect("mkdir");
        std::fs::write(
            root.join("a/nix-support/propagated-user-env-packages"),
            path("c"),
        )
        .expect("write");
        symlink(format!("{}/share/doc", path("a")), root.join("b/docs")).expect("symlink");
        symlink("/nonexistent/target", root.join("b/share/dangling")).expect("symlink");
        symlink(path("c"), root.join("linked-c")).expect("symlink");
        let non_utf8 = std::ffi::OsStr::from_bytes(b"bad-\xff");
        std::fs::write(root.join("b/bin").join(non_utf8), b"x").expect("write");
        std::fs::create_dir_all(root.join("f/share")).expect("mkdir");
        symlink("loop", root.join("f/share/loop")).expect("symlink");
        path
    }

    use std::os::unix::ffi::OsStrExt;

    fn normalised(
        result: Result<Layout, BuildError>,
    ) -> Result<(Vec<Operation>, Vec<String>), String> {
        result
            .map(|layout| {
                let mut warnings: Vec<String> =
                    layout.warnings.iter().map(ToString::to_string).collect();
                warnings.sort();
                (layout.operations, warnings)
            })
            .map_err(|error| error.to_string())
    }

    #[test]
    fn reading_lazily_lays_out_what_reading_everything_does() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = make_trees(directory.path());
        let sets: [&[(&str, i32)]; 8] = [
            &[("a", 5), ("b", 5)],
            &[("b", 5), ("d", 6), ("a", 7)],
            &[("a", 5), ("d", 5)],
            &[("a", 5), ("d", 4), ("linked-c", 5)],
            &[("b", 5), ("e", 5), ("missing", 5)],
            &[("b", 5), ("e", 5)],
            &[("f", 5), ("b", 5)],
            &[("linked-c", 3), ("c", 4), ("a", 5), ("a", 5)],
        ];
        for set in sets {
            let packages: Vec<Package> = set
                .iter()
                .map(|(name, priority)| Package::new(path(name)).with_priority(*priority))
                .collect();
            let mut read_warnings = Vec::new();
            let eager = collect_trees(&packages, &mut read_warnings)
                .and_then(|trees| Ok(layout::layout(&packages, &trees, "/env")?));
            let lazy = lay_out(&packages, "/env", &mut Vec::new());
            let (lazy, eager) = (normalised(lazy), normalised(eager));
            assert_eq!(lazy, eager, "{set:?}");
        }
    }

    #[test]
    fn a_directory_linked_whole_is_not_read() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = make_trees(directory.path());
        // A name that is not UTF-8 in a directory linked whole is not even seen.
        let non_utf8 = std::ffi::OsStr::from_bytes(b"unseen-\xff");
        std::fs::write(directory.path().join("c/share/c").join(non_utf8), b"x").expect("write");
        let packages = [Package::new(path("a")), Package::new(path("b"))];
        let mut trees = DiskTrees::new();
        let layout = layout::layout_from(&packages, &mut trees, "/env").expect("lays out");
        assert!(layout.operations.iter().any(|operation| matches!(
            operation,
            Operation::Symlink { path: at, target } if at.as_str() == "share/c" && *target == format!("{}/share/c", path("c"))
        )));
        // Only the merged `bin` of `b` holds the name that is not UTF-8.
        assert_eq!(trees.warnings.len(), 1, "{:?}", trees.warnings);
    }

    fn element(path: &str) -> ManifestElement {
        ManifestElement {
            name: Path::new(path)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            out_path: path.to_owned(),
            outputs: std::collections::BTreeMap::from([("out".to_owned(), path.to_owned())]),
            system: None,
            meta: std::collections::BTreeMap::new(),
            drv_path: None,
        }
    }

    #[test]
    fn a_failed_build_adds_nothing_and_a_built_one_names_its_path_in_warnings() {
        let directory = tempfile::tempdir().expect("tempdir");
        let trees = directory.path().join("trees");
        std::fs::create_dir(&trees).expect("mkdir");
        let path = make_trees(&trees);
        let store = EmbeddedStore::open(&directory.path().join("root")).expect("store");
        let scratch = directory.path().join("scratch");

        let error = build_environment(
            &store,
            &[element(&path("a")), element(&path("d"))],
            &scratch,
        )
        .expect_err("a collision");
        assert!(matches!(
            error,
            BuildError::Layout(LayoutError::SamePriority { .. })
        ));
        assert!(store.valid_paths().expect("list").is_empty());
        assert!(!scratch.exists());

        let built = build_environment(
            &store,
            &[element(&path("a")), element(&path("b"))],
            &scratch,
        )
        .expect("builds");
        let environment = built.path.to_string();
        assert_eq!(
            built.warnings,
            [
                format!(
                    "skipping `{}`: its name is not UTF-8",
                    Path::new(&path("b"))
                        .join("bin")
                        .join(std::ffi::OsStr::from_bytes(b"bad-\xff"))
                        .display()
                ),
                format!("skipping dangling symlink '{environment}/share/dangling'"),
            ]
        );
        assert_eq!(
            std::fs::read_link(Path::new(&environment).join("manifest.nix")).expect("link"),
            Path::new(&built.manifest.to_string())
        );
        assert_eq!(store.valid_paths().expect("list").len(), 2);
        assert!(store.verify().expect("verify").is_clean());
    }
}
