//! The user-environment layout: the directories and symlinks one profile generation holds, decided
//! from the installed packages' trees exactly as Nix 2.8's `builtin:buildenv` builder decides them
//! (`buildProfile` and `createLinks`).
//!
//! Owns the tree model packages are described in, the walk, the priority and collision rules, the
//! handling of propagated packages and the builder's messages, word for word. The result is a
//! list of [`Operation`]s for the I/O layer to materialise, plus warnings, or the error Nix would
//! fail the build with.
//!
//! Pure: the I/O layer reads the trees (stating through symlinks, as the builder does) and hands
//! them in, either all at once as values ([`Trees`], for [`layout`]) or one directory at a time as
//! the walk asks for it (a [`TreeSource`], for [`layout_from`]): like Nix's builder, the walk lists
//! a package's top-level directory, and any other directory only where it has to merge it, so a
//! directory linked whole is never read. Nothing here touches the filesystem. Trees are untrusted:
//! whatever names they hold, every operation's path stays inside the environment. Names starting
//! with `.` (so also `.` and `..`) are skipped as Nix skips them, and names that no filesystem can
//! hold (empty, or containing `/` or NUL) are skipped with a [`LayoutWarning::InvalidName`].
//!
//! The builder's own last step, the `manifest.nix` link, is not part of the layout; no package can
//! take that name, because top-level `manifest.nix` entries are on the ignore list.
//!
//! **Order.** Nix walks each directory in `readdir` order, which the filesystem decides. The final
//! tree does not depend on it: only which of several collisions is reported, and the order of the
//! warnings, do. This module walks every directory in byte order of the entry names.
//!
//! **Bounds.** Symlinks decouple the walk from the size of the trees. A merge walks the directory
//! a link leads to again, at a deeper destination, so two packages with a link into a cycle take
//! the walk deeper and deeper, and each level holding two such links doubles the directories to
//! merge: a few entries can demand an exponential number of steps, and as many directories in the
//! environment. Nix walks the real filesystem, where the kernel fails any path that goes through
//! more than [`MAX_SYMLINK_FOLLOWS`] links with `ELOOP`; the walk here counts the links along every
//! path it visits and fails with Nix's message at the same point. It counts each link once: the
//! kernel also counts the links a link's own target goes through, so Nix can stop sooner where
//! targets are chains of links. That bounds the depth, not the doubling, which Nix would carry
//! through to the end (2^40 directories). The walk therefore also stops, with
//! [`LayoutError::TooLarge`] naming the package being linked, once it has visited
//! [`MAX_VISITED_ENTRIES`] entries or built [`MAX_PATH_BYTES`] bytes of paths: time and memory stay
//! bounded whatever the trees hold (a few seconds and under 200 MB, optimised). Real environments
//! stay far below: 300 packages holding 33,000 files visit about 11,000 entries and 2 MB of paths.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The priority the builder gives a package whose `meta.priority` is missing.
pub const DEFAULT_PRIORITY: i32 = 5;

/// The priority of the first propagated package; each one linked after it gets the next number.
pub const FIRST_PROPAGATED_PRIORITY: i32 = 1000;

/// Entries the builder never links where its walk visits them: source paths ending in one of
/// these. Entries inside a directory that is linked whole are not visited, so they stay reachable.
pub const IGNORED_SUFFIXES: [&str; 7] = [
    "/propagated-build-inputs",
    "/nix-support",
    "/perllocal.pod",
    "/info/dir",
    "/log",
    "/manifest.nix",
    "/manifest.json",
];

/// How many symlinks resolving one path may go through before `stat` fails with `ELOOP`:
/// Linux's `MAXSYMLINKS`.
pub const MAX_SYMLINK_FOLLOWS: u32 = 40;

/// How many directory entries the walk may visit, over all packages, before [`layout`] gives up
/// with [`LayoutError::TooLarge`]. Each entry of a walked directory counts, skipped or not, and a
/// directory walked again in a merge counts again.
pub const MAX_VISITED_ENTRIES: u64 = 1 << 20;

/// How many bytes of paths (source, destination and canonical path of each visited entry) the walk
/// may build, over all packages, before [`layout`] gives up with [`LayoutError::TooLarge`]. This
/// bounds the memory the layout takes: with long names, far fewer than [`MAX_VISITED_ENTRIES`]
/// entries can add up to gigabytes.
pub const MAX_PATH_BYTES: u64 = 1 << 27;

/// One entry of a package tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A real directory.
    Directory(Directory),
    /// Anything that is neither a directory nor a symlink (the store holds only regular files).
    File,
    /// A symbolic link, with what `stat` through it found.
    Symlink(Symlink),
}

impl Node {
    /// A directory holding the given entries.
    pub fn directory<Name: Into<String>>(entries: impl IntoIterator<Item = (Name, Node)>) -> Self {
        Self::Directory(Directory::new(entries))
    }

    /// A symlink whose target resolves to the directory at `canonical_path`.
    pub fn link_to_directory(target: impl Into<String>, canonical_path: impl Into<String>) -> Self {
        Self::Symlink(Symlink {
            target: target.into(),
            resolves_to: Resolution::Directory {
                canonical_path: canonical_path.into(),
            },
        })
    }

    /// A symlink whose target resolves to something other than a directory.
    pub fn link_to_file(target: impl Into<String>, canonical_path: impl Into<String>) -> Self {
        Self::Symlink(Symlink {
            target: target.into(),
            resolves_to: Resolution::NonDirectory {
                canonical_path: canonical_path.into(),
            },
        })
    }

    /// A symlink whose target does not exist.
    pub fn dangling_link(target: impl Into<String>) -> Self {
        Self::Symlink(Symlink {
            target: target.into(),
            resolves_to: Resolution::Dangling,
        })
    }
}

/// The entries of a directory, by name. Names are kept in byte order, which is the order the
/// walk visits them in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    /// Entry names (one path component each, as the filesystem gave them) and their nodes.
    pub entries: BTreeMap<String, Node>,
}

impl Directory {
    /// A directory holding the given entries.
    pub fn new<Name: Into<String>>(entries: impl IntoIterator<Item = (Name, Node)>) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|(name, node)| (name.into(), node))
                .collect(),
        }
    }
}

/// A symbolic link in a package tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symlink {
    /// The link's own target text. The builder never links to it: it links to the path it visited,
    /// so this is kept for reports only.
    pub target: String,
    /// What `stat` through the link found.
    pub resolves_to: Resolution,
}

/// What `stat` found through a symlink. The builder follows links, so a link to a directory is
/// merged like a directory, and a link to nothing is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A directory; `canonical_path` is the link's fully resolved absolute path (`realpath`).
    /// The builder walks it there when it later has to merge it with another directory, so its
    /// contents must then be found in [`Trees`] under that path.
    Directory {
        /// The fully resolved path of the directory.
        canonical_path: String,
    },
    /// Something else (a file); `canonical_path` is named in collision messages.
    NonDirectory {
        /// The fully resolved path of the target.
        canonical_path: String,
    },
    /// `stat` failed with `ENOENT` or `ENOTDIR`: the builder skips the entry with a warning.
    Dangling,
    /// `stat` failed with `ELOOP`: the builder fails.
    Loop,
}

/// A store path's tree and what it propagates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageTree {
    /// The store path itself: normally a directory; a file or a symlink are possible.
    pub root: Node,
    /// The text of `nix-support/propagated-user-env-packages` as read through symlinks, or `None`
    /// when it cannot be read (missing, or the store path is not a directory).
    pub propagated_user_env_packages: Option<String>,
}

impl PackageTree {
    /// A tree with nothing propagated.
    #[must_use]
    pub fn new(root: Node) -> Self {
        Self {
            root,
            propagated_user_env_packages: None,
        }
    }

    /// The same tree, propagating the packages named in `text` (the file's content).
    #[must_use]
    pub fn propagating(mut self, text: impl Into<String>) -> Self {
        self.propagated_user_env_packages = Some(text.into());
        self
    }
}

/// Every tree the builder may read, by absolute path: the installed outputs, what they propagate,
/// and the directories their symlinks resolve to (needed only where one is merged).
///
/// One map rather than a tree per package, because symlinks point across packages and may form
/// cycles: a directory reached through a link is found here by its canonical path, when it is
/// needed, instead of being copied into the link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trees {
    by_path: BTreeMap<String, PackageTree>,
}

impl Trees {
    /// No trees.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the tree at `path`, returning the one it replaced.
    pub fn insert(&mut self, path: impl Into<String>, tree: PackageTree) -> Option<PackageTree> {
        self.by_path.insert(path.into(), tree)
    }

    /// The tree stored at exactly `path`.
    #[must_use]
    pub fn get(&self, path: &str) -> Option<&PackageTree> {
        self.by_path.get(path)
    }

    /// The real directory at `canonical_path`: the tree stored at its longest prefix, descended
    /// through real directories. `None` when no tree covers the path or the path does not end at
    /// a real directory (a canonical path never passes through a symlink).
    #[must_use]
    pub fn directory_at(&self, canonical_path: &str) -> Option<&Directory> {
        let mut prefix = canonical_path;
        loop {
            if let Some(tree) = self.by_path.get(prefix) {
                let rest = canonical_path.get(prefix.len()..).unwrap_or_default();
                return descend(&tree.root, rest);
            }
            match prefix.rfind('/') {
                Some(index) if index > 0 => prefix = prefix.get(..index).unwrap_or_default(),
                _ => return None,
            }
        }
    }
}

impl<Path: Into<String>> FromIterator<(Path, PackageTree)> for Trees {
    fn from_iter<I: IntoIterator<Item = (Path, PackageTree)>>(iter: I) -> Self {
        Self {
            by_path: iter
                .into_iter()
                .map(|(path, tree)| (path.into(), tree))
                .collect(),
        }
    }
}

fn descend<'a>(root: &'a Node, rest: &str) -> Option<&'a Directory> {
    let Node::Directory(root) = root else {
        return None;
    };
    let mut directory = root;
    for component in rest.split('/').filter(|component| !component.is_empty()) {
        match directory.entries.get(component) {
            Some(Node::Directory(child)) => directory = child,
            _ => return None,
        }
    }
    Some(directory)
}

/// One installed output as the builder receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The output's store path, exactly as the manifest names it.
    pub store_path: String,
    /// The priority as the builder read it (see [`read_priority`]); lower wins.
    pub priority: i32,
    /// Whether it is linked at all (see [`read_active`]).
    pub active: bool,
}

impl Package {
    /// An active package at the default priority.
    pub fn new(store_path: impl Into<String>) -> Self {
        Self {
            store_path: store_path.into(),
            priority: DEFAULT_PRIORITY,
            active: true,
        }
    }

    /// The same package with another priority.
    #[must_use]
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// The same package, inactive.
    #[must_use]
    pub fn inactive(mut self) -> Self {
        self.active = false;
        self
    }
}

/// Reads a priority token the way the builder does, with C++ `std::stoi`: leading whitespace, an
/// optional sign, then as many decimal digits as there are; the rest is ignored (`" 4xyz"` is 4,
/// and a float priority `2.7`, which reaches the builder as `2.700000`, is 2).
///
/// `None` where `stoi` throws (no digits, or outside the range of `int`); the builder then fails
/// with the single line `stoi`.
#[must_use]
pub fn read_priority(token: &str) -> Option<i32> {
    let rest = token.trim_start_matches([' ', '\t', '\n', '\u{b}', '\u{c}', '\r']);
    let (negative, rest) = match rest.as_bytes().first() {
        Some(b'-') => (true, rest.get(1..).unwrap_or_default()),
        Some(b'+') => (false, rest.get(1..).unwrap_or_default()),
        _ => (false, rest),
    };
    let digits: &str = rest
        .find(|character: char| !character.is_ascii_digit())
        .map_or(rest, |end| rest.get(..end).unwrap_or_default());
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for digit in digits.bytes() {
        value = value
            .checked_mul(10)?
            .checked_add(i64::from(digit - b'0'))?;
        if value > i64::from(i32::MAX) + 1 {
            return None;
        }
    }
    i32::try_from(if negative { -value } else { value }).ok()
}

/// Reads an `active` token the way the builder does: only the exact text `false` deactivates
/// (`"FALSE"`, `"no"` and `"0"` all leave the package active).
#[must_use]
pub fn read_active(token: &str) -> bool {
    token != "false"
}

/// A path inside the environment, relative to its root: one or more `/`-separated names, none of
/// them empty, `.`-led, or holding `/` or NUL. Ordered component by component, so a directory
/// comes right before its contents.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvironmentPath(String);

impl EnvironmentPath {
    /// The path as text, `bin/hello`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The names along the path.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The path of `name` inside `parent` (`None`: the environment's root). `name` must already
    /// be a valid name (see [`is_invalid_name`]).
    fn child(parent: Option<&Self>, name: &str) -> Self {
        match parent {
            Some(parent) => Self(format!("{}/{name}", parent.0)),
            None => Self(name.to_owned()),
        }
    }
}

impl Ord for EnvironmentPath {
    /// Component by component, which is byte order with `/` below every other byte (names hold
    /// neither `/` nor NUL), compared without splitting: deep paths are compared often.
    fn cmp(&self, other: &Self) -> Ordering {
        compare_paths(&self.0, &other.0)
    }
}

/// Orders relative paths component by component: byte order with `/` below every other byte
/// (names hold neither `/` nor NUL), the order of a directory's entries in a NAR and in the
/// builder's walk.
#[must_use]
pub fn compare_paths(left: &str, right: &str) -> Ordering {
    let (left, right) = (left.as_bytes(), right.as_bytes());
    let common = left
        .iter()
        .zip(right)
        .take_while(|(left, right)| left == right)
        .count();
    match (left.get(common), right.get(common)) {
        (Some(b'/'), Some(_)) => Ordering::Less,
        (Some(_), Some(b'/')) => Ordering::Greater,
        (left, right) => left.cmp(&right),
    }
}

impl PartialOrd for EnvironmentPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for EnvironmentPath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// One step of materialising the environment, in order: a directory always comes before
/// anything inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Create a real directory (Nix makes it mode 0755).
    Directory(EnvironmentPath),
    /// Create a symlink at `path` pointing at `target`, an absolute path inside a package: the
    /// path the builder visited, not resolved, so a package's `docs -> …` link is linked as
    /// `docs -> <package>/docs`.
    Symlink {
        /// Where the link goes.
        path: EnvironmentPath,
        /// What it points at.
        target: String,
    },
}

impl Operation {
    /// The path this operation creates.
    #[must_use]
    pub fn path(&self) -> &EnvironmentPath {
        match self {
            Self::Directory(path) | Self::Symlink { path, .. } => path,
        }
    }
}

/// Something the builder skipped and reported without failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutWarning {
    /// A symlink whose target does not exist; `destination` is where it would have been linked,
    /// inside the environment, which is what Nix names.
    DanglingSymlink {
        /// The absolute destination path.
        destination: String,
    },
    /// An installed (or propagated) store path that is not a directory.
    NotADirectory {
        /// The store path.
        store_path: String,
    },
    /// An entry whose name no filesystem can hold (empty, or containing `/` or NUL): never in a
    /// tree read from disk, so not a Nix message.
    InvalidName {
        /// The source directory holding it, as visited.
        directory: String,
        /// The name, as given.
        name: String,
    },
}

impl fmt::Display for LayoutWarning {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DanglingSymlink { destination } => {
                write!(formatter, "skipping dangling symlink '{destination}'")
            }
            Self::NotADirectory { store_path } => write!(
                formatter,
                "not including '{store_path}' in the user environment because it's not a directory"
            ),
            Self::InvalidName { directory, name } => write!(
                formatter,
                "skipping an entry of '{directory}' with an invalid name {name:?}"
            ),
        }
    }
}

/// Why the builder fails. The messages are Nix 2.8's, without the `error: ` prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A file or link that two packages both provide at the same priority.
    #[error(
        "packages '{source_path}' and '{existing_target}' have the same priority {priority}; use 'nix-env --set-flag priority NUMBER INSTALLED_PKGNAME' to change the priority of one of the conflicting packages (0 being the highest priority)"
    )]
    SamePriority {
        /// The entry being linked.
        source_path: String,
        /// What the environment already links there.
        existing_target: String,
        /// The priority both have.
        priority: i32,
        /// Where, inside the environment.
        path: EnvironmentPath,
    },
    /// A directory arriving where the environment links something that is not a directory
    /// (whatever the priorities).
    #[error("collision between '{source_path}' and non-directory '{existing_target}'")]
    DirectoryOverNonDirectory {
        /// The directory being linked.
        source_path: String,
        /// The canonical path of what the environment links there.
        existing_target: String,
        /// Where, inside the environment.
        path: EnvironmentPath,
    },
    /// A file arriving where the environment already has a real (merged) directory.
    #[error("collision between non-directory '{source_path}' and directory '{destination}'")]
    NonDirectoryOverDirectory {
        /// The file being linked.
        source_path: String,
        /// The directory's absolute path inside the environment.
        destination: String,
        /// Where, inside the environment.
        path: EnvironmentPath,
    },
    /// An installed or propagated store path that does not exist (no tree was given for it).
    #[error("opening directory '{store_path}': No such file or directory")]
    MissingPackage {
        /// The path as installed or propagated.
        store_path: String,
    },
    /// An installed or propagated store path that is a symlink loop.
    #[error("opening directory '{store_path}': Too many levels of symbolic links")]
    PackageSymlinkLoop {
        /// The path as installed or propagated.
        store_path: String,
    },
    /// A symlink loop met where the walk goes, or an entry whose path, as visited, goes through
    /// more than [`MAX_SYMLINK_FOLLOWS`] symlinks.
    #[error("getting status of '{source_path}': Too many levels of symbolic links")]
    SymlinkLoop {
        /// The entry, as visited.
        source_path: String,
    },
    /// A directory the walk has to enter, reached through a symlink, that no given tree covers.
    /// Not a Nix failure: the trees handed in are incomplete.
    #[error("no tree was given for '{canonical_path}', which '{source_path}' resolves to")]
    UnknownDirectory {
        /// The path being walked, as visited.
        source_path: String,
        /// Its canonical path.
        canonical_path: String,
    },
    /// The walk went past one of its bounds while linking `store_path` (see the module's
    /// **Bounds**). Not a Nix failure: Nix would go on until it had made every directory.
    #[error("the user environment is too large: linking '{store_path}' goes past {limit}")]
    TooLarge {
        /// The installed or propagated path being linked.
        store_path: String,
        /// The bound it went past.
        limit: LayoutLimit,
    },
}

/// A bound on the walk's work, with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutLimit {
    /// Directory entries visited (see [`MAX_VISITED_ENTRIES`]).
    VisitedEntries(u64),
    /// Bytes of paths built (see [`MAX_PATH_BYTES`]).
    PathBytes(u64),
}

impl fmt::Display for LayoutLimit {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VisitedEntries(count) => write!(formatter, "{count} visited entries"),
            Self::PathBytes(bytes) => write!(formatter, "{bytes} bytes of paths"),
        }
    }
}

/// The layout of an environment: what to create, and what was skipped with a warning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Directories and symlinks to create, parents first, siblings in byte order.
    pub operations: Vec<Operation>,
    /// Warnings, in the order the walk met them.
    pub warnings: Vec<LayoutWarning>,
}

/// An entry of a directory as the walk receives it from a [`TreeSource`]: a real directory
/// (whose entries are asked for only if the walk enters it), anything else, or a symlink with
/// what `stat` through it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceNode<D> {
    /// A real directory; the handle lists it through [`TreeSource::entries`].
    Directory(D),
    /// Anything that is neither a directory nor a symlink.
    File,
    /// A symbolic link.
    Symlink(Symlink),
}

/// One named entry of a directory listed by a [`TreeSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry<D> {
    /// The entry's name, one path component as the filesystem gave it.
    pub name: String,
    /// What it is.
    pub node: SourceNode<D>,
}

/// An installed or propagated store path as a [`TreeSource`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePackage<D> {
    /// The store path itself.
    pub root: SourceNode<D>,
    /// The text of `nix-support/propagated-user-env-packages`, as in [`PackageTree`].
    pub propagated_user_env_packages: Option<String>,
}

/// Where [`layout_from`] reads package trees: [`Trees`] held in memory, or a reader that lists a
/// directory on disk only when the walk has to enter it (most directories are linked whole and
/// never listed, as in Nix's builder).
///
/// The walk asks for each installed or propagated store path once, for the entries of the
/// directories it enters (a directory merged with another one, or one a linked directory has to
/// be replaced by), and for the directories symlinks resolve to when it has to enter one.
pub trait TreeSource {
    /// A real directory that can be listed.
    type Directory;
    /// Why reading failed; the layout's own errors convert into it.
    type Error: From<LayoutError>;

    /// The tree at `store_path`, or `None` when nothing is there.
    ///
    /// # Errors
    ///
    /// When the store path cannot be read.
    fn package(
        &mut self,
        store_path: &str,
    ) -> Result<Option<SourcePackage<Self::Directory>>, Self::Error>;

    /// The real directory at `canonical_path` (a fully resolved path, which `stat` found to be a
    /// directory), or `None` when the source does not know it.
    ///
    /// # Errors
    ///
    /// When it cannot be read.
    fn directory_at(
        &mut self,
        canonical_path: &str,
    ) -> Result<Option<Self::Directory>, Self::Error>;

    /// The entries of `directory`, whose canonical path is `canonical_path`, in byte order of
    /// their names.
    ///
    /// # Errors
    ///
    /// When the directory cannot be listed.
    fn entries(
        &mut self,
        directory: Self::Directory,
        canonical_path: &str,
    ) -> Result<Vec<SourceEntry<Self::Directory>>, Self::Error>;
}

impl<'a> TreeSource for &'a Trees {
    type Directory = &'a Directory;
    type Error = LayoutError;

    fn package(
        &mut self,
        store_path: &str,
    ) -> Result<Option<SourcePackage<&'a Directory>>, LayoutError> {
        Ok(self.get(store_path).map(|tree| SourcePackage {
            root: source_node(&tree.root),
            propagated_user_env_packages: tree.propagated_user_env_packages.clone(),
        }))
    }

    fn directory_at(&mut self, canonical_path: &str) -> Result<Option<&'a Directory>, LayoutError> {
        let trees: &'a Trees = self;
        Ok(trees.directory_at(canonical_path))
    }

    fn entries(
        &mut self,
        directory: &'a Directory,
        _canonical_path: &str,
    ) -> Result<Vec<SourceEntry<&'a Directory>>, LayoutError> {
        Ok(directory
            .entries
            .iter()
            .map(|(name, node)| SourceEntry {
                name: name.clone(),
                node: source_node(node),
            })
            .collect())
    }
}

fn source_node(node: &Node) -> SourceNode<&Directory> {
    match node {
        Node::Directory(directory) => SourceNode::Directory(directory),
        Node::File => SourceNode::File,
        Node::Symlink(link) => SourceNode::Symlink(link.clone()),
    }
}

/// Lays out the environment for `packages`, as Nix 2.8's builder would at `environment` (the
/// output path, used only in messages).
///
/// Packages are linked by (priority, store path bytes); inactive ones are skipped along with
/// what they propagate; a store path is linked once however often it appears. Then the packages
/// named in `nix-support/propagated-user-env-packages` (split on spaces and newlines only) are
/// linked in rounds, each round in path order, with priorities counting up from 1000 across
/// rounds; the count advances even for a path already linked in an earlier round.
///
/// # Errors
///
/// The first collision met, a missing or looping package, a symlink loop in a merged directory
/// (or a path through too many links), a merged directory whose tree was not given, or a walk
/// past its bounds; see [`LayoutError`].
pub fn layout(
    packages: &[Package],
    trees: &Trees,
    environment: &str,
) -> Result<Layout, LayoutError> {
    layout_from(packages, &mut { trees }, environment)
}

/// [`layout`], reading the trees from `source` as the walk needs them.
///
/// # Errors
///
/// As [`layout`], and whatever `source` fails with.
pub fn layout_from<S: TreeSource>(
    packages: &[Package],
    source: &mut S,
    environment: &str,
) -> Result<Layout, S::Error> {
    layout_within(
        packages,
        source,
        environment,
        Limits {
            visited_entries: MAX_VISITED_ENTRIES,
            path_bytes: MAX_PATH_BYTES,
        },
    )
}

/// The bounds on the walk's work: [`MAX_VISITED_ENTRIES`] and [`MAX_PATH_BYTES`], or smaller ones
/// in tests.
#[derive(Debug, Clone, Copy)]
struct Limits {
    visited_entries: u64,
    path_bytes: u64,
}

/// [`layout_from`] within the given bounds.
fn layout_within<S: TreeSource>(
    packages: &[Package],
    source: &mut S,
    environment: &str,
    limits: Limits,
) -> Result<Layout, S::Error> {
    let mut sorted: Vec<&Package> = packages.iter().collect();
    sorted.sort_by(|left, right| {
        left.priority
            .cmp(&right.priority)
            .then_with(|| left.store_path.as_bytes().cmp(right.store_path.as_bytes()))
    });

    let mut builder = Builder {
        source,
        environment,
        entries: BTreeMap::new(),
        warnings: Vec::new(),
        done: BTreeSet::new(),
        postponed: BTreeSet::new(),
        limits,
        visited_entries: 0,
        path_bytes: 0,
    };
    for package in sorted.into_iter().filter(|package| package.active) {
        builder.add_package(&package.store_path, package.priority)?;
    }
    let mut counter = FIRST_PROPAGATED_PRIORITY;
    while !builder.postponed.is_empty() {
        for store_path in std::mem::take(&mut builder.postponed) {
            let priority = counter;
            counter = counter.saturating_add(1);
            builder.add_package(&store_path, priority)?;
        }
    }
    Ok(builder.finish())
}

/// What the environment holds at one path while it is being built.
enum Entry {
    Directory,
    Link {
        /// The source path it points at, as visited.
        target: String,
        /// The priority it was linked with.
        priority: i32,
        /// What the target resolves to.
        kind: LinkKind,
    },
}

enum LinkKind {
    /// A directory at this canonical path; merging walks it again there.
    Directory(String),
    /// Something else, at this canonical path.
    NonDirectory(String),
}

/// A directory being walked: the source's entries, where they are linked to, and with which
/// priority.
struct Frame<D> {
    entries: std::vec::IntoIter<SourceEntry<D>>,
    /// The source directory as visited (link targets and messages use this).
    visited: String,
    /// Its canonical path (what a later merge walks again).
    canonical: String,
    /// How many symlinks resolving `visited` goes through (at most [`MAX_SYMLINK_FOLLOWS`]).
    links: u32,
    /// The destination directory; `None` is the environment's root.
    destination: Option<EnvironmentPath>,
    priority: i32,
}

/// A source entry after `stat`.
enum Source<D> {
    Directory {
        canonical: String,
        /// Its handle, when it is a real directory; through a symlink it is looked up by the
        /// canonical path only when the walk has to enter it.
        contents: Option<D>,
    },
    NonDirectory {
        canonical: String,
    },
}

struct Builder<'s, S: TreeSource> {
    source: &'s mut S,
    environment: &'s str,
    entries: BTreeMap<EnvironmentPath, Entry>,
    warnings: Vec<LayoutWarning>,
    done: BTreeSet<String>,
    postponed: BTreeSet<String>,
    limits: Limits,
    /// Entries visited so far, over all packages.
    visited_entries: u64,
    /// Bytes of paths built so far, over all packages.
    path_bytes: u64,
}

impl<S: TreeSource> Builder<'_, S> {
    /// Links one store path, then queues what it propagates.
    fn add_package(&mut self, store_path: &str, priority: i32) -> Result<(), S::Error> {
        if !self.done.insert(store_path.to_owned()) {
            return Ok(());
        }
        let tree = self
            .source
            .package(store_path)?
            .ok_or_else(|| LayoutError::MissingPackage {
                store_path: store_path.to_owned(),
            })?;
        let root = match tree.root {
            SourceNode::Directory(directory) => Some((directory, store_path.to_owned(), 0)),
            SourceNode::File => None,
            SourceNode::Symlink(link) => match link.resolves_to {
                Resolution::Directory { canonical_path } => {
                    let directory =
                        self.source.directory_at(&canonical_path)?.ok_or_else(|| {
                            LayoutError::UnknownDirectory {
                                source_path: store_path.to_owned(),
                                canonical_path: canonical_path.clone(),
                            }
                        })?;
                    Some((directory, canonical_path, 1))
                }
                Resolution::NonDirectory { .. } => None,
                Resolution::Dangling => {
                    return Err(LayoutError::MissingPackage {
                        store_path: store_path.to_owned(),
                    }
                    .into());
                }
                Resolution::Loop => {
                    return Err(LayoutError::PackageSymlinkLoop {
                        store_path: store_path.to_owned(),
                    }
                    .into());
                }
            },
        };
        match root {
            Some((directory, canonical, links)) => {
                let entries = self.source.entries(directory, &canonical)?;
                self.walk(
                    store_path,
                    Frame {
                        entries: entries.into_iter(),
                        visited: store_path.to_owned(),
                        canonical,
                        links,
                        destination: None,
                        priority,
                    },
                )?;
            }
            None => self.warnings.push(LayoutWarning::NotADirectory {
                store_path: store_path.to_owned(),
            }),
        }
        if let Some(text) = &tree.propagated_user_env_packages {
            for token in text.split([' ', '\n']).filter(|token| !token.is_empty()) {
                if !self.done.contains(token) {
                    self.postponed.insert(token.to_owned());
                }
            }
        }
        Ok(())
    }

    /// Walks directories depth first with an explicit stack, so that no tree is too deep, within
    /// the bounds on the walk's work (`store_path` is the package being linked, for the error).
    fn walk(&mut self, store_path: &str, first: Frame<S::Directory>) -> Result<(), S::Error> {
        let mut stack = vec![first];
        while let Some(frame) = stack.last_mut() {
            let Some(SourceEntry { name, node }) = frame.entries.next() else {
                stack.pop();
                continue;
            };
            self.visited_entries = self.visited_entries.saturating_add(1);
            if self.visited_entries > self.limits.visited_entries {
                return Err(LayoutError::TooLarge {
                    store_path: store_path.to_owned(),
                    limit: LayoutLimit::VisitedEntries(self.limits.visited_entries),
                }
                .into());
            }
            if name.starts_with('.') {
                continue;
            }
            if is_invalid_name(&name) {
                self.warnings.push(LayoutWarning::InvalidName {
                    directory: frame.visited.clone(),
                    name,
                });
                continue;
            }
            let source_path = format!("{}/{name}", frame.visited);
            let destination = EnvironmentPath::child(frame.destination.as_ref(), &name);
            let priority = frame.priority;
            // `stat` goes through the links along the visited path, and through the entry itself
            // when it is one.
            let links = frame.links + u32::from(matches!(node, SourceNode::Symlink(_)));
            if links > MAX_SYMLINK_FOLLOWS {
                return Err(LayoutError::SymlinkLoop { source_path }.into());
            }
            let canonical_length = match &node {
                SourceNode::Directory(_) | SourceNode::File => {
                    frame.canonical.len() + 1 + name.len()
                }
                SourceNode::Symlink(link) => match &link.resolves_to {
                    Resolution::Directory { canonical_path }
                    | Resolution::NonDirectory { canonical_path } => canonical_path.len(),
                    Resolution::Dangling | Resolution::Loop => 0,
                },
            };
            self.charge_path_bytes(
                store_path,
                source_path.len() + destination.as_str().len() + canonical_length,
            )?;
            let source = match node {
                SourceNode::Directory(directory) => Source::Directory {
                    canonical: format!("{}/{name}", frame.canonical),
                    contents: Some(directory),
                },
                SourceNode::File => Source::NonDirectory {
                    canonical: format!("{}/{name}", frame.canonical),
                },
                SourceNode::Symlink(link) => match link.resolves_to {
                    Resolution::Directory { canonical_path } => Source::Directory {
                        canonical: canonical_path,
                        contents: None,
                    },
                    Resolution::NonDirectory { canonical_path } => Source::NonDirectory {
                        canonical: canonical_path,
                    },
                    Resolution::Dangling => {
                        self.warnings.push(LayoutWarning::DanglingSymlink {
                            destination: self.absolute(&destination),
                        });
                        continue;
                    }
                    Resolution::Loop => {
                        return Err(LayoutError::SymlinkLoop { source_path }.into());
                    }
                },
            };
            if IGNORED_SUFFIXES
                .iter()
                .any(|suffix| source_path.ends_with(suffix))
            {
                continue;
            }
            match source {
                Source::Directory {
                    canonical,
                    contents,
                } => {
                    for next in self.visit_directory(
                        source_path,
                        canonical,
                        contents,
                        links,
                        destination,
                        priority,
                    )? {
                        stack.push(next);
                    }
                }
                Source::NonDirectory { canonical } => {
                    self.visit_non_directory(source_path, canonical, destination, priority)?;
                }
            }
        }
        Ok(())
    }

    /// A source directory: recurse into a real destination directory, merge with a linked one,
    /// or link it whole. `links` is how many symlinks `source_path` goes through. Returns the
    /// walks to do next, the last one first.
    fn visit_directory(
        &mut self,
        source_path: String,
        canonical: String,
        contents: Option<S::Directory>,
        links: u32,
        destination: EnvironmentPath,
        priority: i32,
    ) -> Result<Vec<Frame<S::Directory>>, S::Error> {
        match self.entries.get(&destination) {
            Some(Entry::Directory) => {
                let entries = self.contents(contents, &source_path, &canonical)?;
                Ok(vec![Frame {
                    entries: entries.into_iter(),
                    visited: source_path,
                    canonical,
                    links,
                    destination: Some(destination),
                    priority,
                }])
            }
            Some(Entry::Link {
                kind: LinkKind::NonDirectory(existing),
                ..
            }) => Err(LayoutError::DirectoryOverNonDirectory {
                source_path,
                existing_target: existing.clone(),
                path: destination,
            }
            .into()),
            Some(Entry::Link {
                target,
                priority: old_priority,
                kind: LinkKind::Directory(old_canonical),
            }) => {
                // Nix replaces the link with a real directory, walks the old target again at its
                // canonical path with the old link's priority, then walks the new source.
                let old_priority = *old_priority;
                let old_canonical = old_canonical.clone();
                let target = target.clone();
                let old = self.contents(None, &target, &old_canonical)?;
                let new = self.contents(contents, &source_path, &canonical)?;
                self.entries.insert(destination.clone(), Entry::Directory);
                Ok(vec![
                    Frame {
                        entries: new.into_iter(),
                        visited: source_path,
                        canonical,
                        links,
                        destination: Some(destination.clone()),
                        priority,
                    },
                    Frame {
                        entries: old.into_iter(),
                        visited: old_canonical.clone(),
                        canonical: old_canonical,
                        links: 0,
                        destination: Some(destination),
                        priority: old_priority,
                    },
                ])
            }
            None => {
                self.entries.insert(
                    destination,
                    Entry::Link {
                        target: source_path,
                        priority,
                        kind: LinkKind::Directory(canonical),
                    },
                );
                Ok(Vec::new())
            }
        }
    }

    /// A source file (or link to one): priorities decide against an existing link; a real
    /// directory is a collision.
    fn visit_non_directory(
        &mut self,
        source_path: String,
        canonical: String,
        destination: EnvironmentPath,
        priority: i32,
    ) -> Result<(), LayoutError> {
        match self.entries.get(&destination) {
            Some(Entry::Link {
                target,
                priority: existing,
                ..
            }) => match existing.cmp(&priority) {
                Ordering::Equal => {
                    return Err(LayoutError::SamePriority {
                        source_path,
                        existing_target: target.clone(),
                        priority,
                        path: destination,
                    });
                }
                Ordering::Less => return Ok(()),
                Ordering::Greater => {}
            },
            Some(Entry::Directory) => {
                return Err(LayoutError::NonDirectoryOverDirectory {
                    source_path,
                    destination: self.absolute(&destination),
                    path: destination,
                });
            }
            None => {}
        }
        self.entries.insert(
            destination,
            Entry::Link {
                target: source_path,
                priority,
                kind: LinkKind::NonDirectory(canonical),
            },
        );
        Ok(())
    }

    /// The entries of a source directory: listed through its handle, or found by its canonical
    /// path.
    fn contents(
        &mut self,
        contents: Option<S::Directory>,
        source_path: &str,
        canonical: &str,
    ) -> Result<Vec<SourceEntry<S::Directory>>, S::Error> {
        let directory = match contents {
            Some(directory) => directory,
            None => self.source.directory_at(canonical)?.ok_or_else(|| {
                LayoutError::UnknownDirectory {
                    source_path: source_path.to_owned(),
                    canonical_path: canonical.to_owned(),
                }
            })?,
        };
        self.source.entries(directory, canonical)
    }

    /// Counts `bytes` of paths built for `store_path` against the bound.
    fn charge_path_bytes(&mut self, store_path: &str, bytes: usize) -> Result<(), LayoutError> {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.path_bytes = self.path_bytes.saturating_add(bytes);
        if self.path_bytes > self.limits.path_bytes {
            return Err(LayoutError::TooLarge {
                store_path: store_path.to_owned(),
                limit: LayoutLimit::PathBytes(self.limits.path_bytes),
            });
        }
        Ok(())
    }

    /// The absolute path of a destination, as Nix names it in messages.
    fn absolute(&self, destination: &EnvironmentPath) -> String {
        format!("{}/{destination}", self.environment)
    }

    fn finish(self) -> Layout {
        let operations = self
            .entries
            .into_iter()
            .map(|(path, entry)| match entry {
                Entry::Directory => Operation::Directory(path),
                Entry::Link { target, .. } => Operation::Symlink { path, target },
            })
            .collect();
        Layout {
            operations,
            warnings: self.warnings,
        }
    }
}

/// Whether `name` cannot be one path component: empty, or holding `/` or NUL.
fn is_invalid_name(name: &str) -> bool {
    name.is_empty() || name.contains(['/', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    const ENVIRONMENT: &str = "/nix/store/eeee-user-environment";

    fn store(name: &str) -> String {
        format!("/nix/store/{name}")
    }

    /// Builds a tree from a listing: `bin/x` is a file, `lib/` an empty directory, and
    /// `NAME -> KIND:PATH` a symlink, KIND being `dir` or `file` (PATH is the canonical path and
    /// the target text), `dangling` or `loop`.
    fn tree(listing: &[&str]) -> Node {
        let mut root = Directory::default();
        for &line in listing {
            let (path, link) = match line.split_once(" -> ") {
                Some((path, link)) => (path, Some(link)),
                None => (line, None),
            };
            let is_directory = path.ends_with('/');
            let components: Vec<&str> = path.trim_end_matches('/').split('/').collect();
            let Some((last, parents)) = components.split_last() else {
                continue;
            };
            let mut directory = &mut root;
            for parent in parents {
                let entry = directory
                    .entries
                    .entry((*parent).to_owned())
                    .or_insert_with(|| Node::Directory(Directory::default()));
                let Node::Directory(child) = entry else {
                    panic!("{parent} is not a directory in {listing:?}");
                };
                directory = child;
            }
            let node = match link.map(|link| link.split_once(':').unwrap_or((link, ""))) {
                None if is_directory => Node::Directory(Directory::default()),
                None => Node::File,
                Some(("dir", path)) => Node::link_to_directory(path, path),
                Some(("file", path)) => Node::link_to_file(path, path),
                Some(("dangling", target)) => Node::dangling_link(target),
                Some(("loop", target)) => Node::Symlink(Symlink {
                    target: target.to_owned(),
                    resolves_to: Resolution::Loop,
                }),
                Some((kind, _)) => panic!("unknown link kind {kind}"),
            };
            directory.entries.insert((*last).to_owned(), node);
        }
        Node::Directory(root)
    }

    /// `packages!["a" => ["bin/x"], …]`: package names with their listings (see [`tree`]).
    macro_rules! packages {
        ($($name:literal => [$($line:expr),* $(,)?]),* $(,)?) => {
            [$(($name, vec![$($line),*])),*]
        };
    }

    fn trees(packages: &[(&str, Vec<&str>)]) -> Trees {
        packages
            .iter()
            .map(|(name, listing)| (store(name), PackageTree::new(tree(listing))))
            .collect()
    }

    /// The layout as lines: `bin/` for a directory, `bin/x -> TARGET` for a link.
    fn listing(layout: &Layout) -> Vec<String> {
        layout
            .operations
            .iter()
            .map(|operation| match operation {
                Operation::Directory(path) => format!("{path}/"),
                Operation::Symlink { path, target } => format!("{path} -> {target}"),
            })
            .collect()
    }

    fn warnings(layout: &Layout) -> Vec<String> {
        layout.warnings.iter().map(ToString::to_string).collect()
    }

    fn run(packages: &[Package], trees: &Trees) -> Result<Layout, LayoutError> {
        layout(packages, trees, ENVIRONMENT)
    }

    fn same_priority(source: &str, existing: &str, priority: i32) -> String {
        format!(
            "packages '{source}' and '{existing}' have the same priority {priority}; use 'nix-env --set-flag priority NUMBER INSTALLED_PKGNAME' to change the priority of one of the conflicting packages (0 being the highest priority)"
        )
    }

    /// What a case expects: the layout's lines and warnings, or the error message.
    enum Expected {
        Layout(&'static [&'static str], &'static [&'static str]),
        Error(String),
    }

    fn check(packages: &[Package], trees: &Trees, expected: &Expected) {
        let result = run(packages, trees);
        match (expected, result) {
            (Expected::Layout(lines, expected_warnings), Ok(layout)) => {
                assert_eq!(listing(&layout), *lines);
                assert_eq!(warnings(&layout), *expected_warnings);
            }
            (Expected::Error(message), Err(error)) => assert_eq!(error.to_string(), *message),
            (Expected::Layout(..), Err(error)) => panic!("unexpected error: {error}"),
            (Expected::Error(message), Ok(layout)) => {
                panic!("expected {message}, got {:?}", listing(&layout))
            }
        }
    }

    // §11.3: packages are linked by (priority, store path); lower priority numbers win; equal
    // priorities on one file fail, naming the later package first.
    #[rstest]
    #[case::lower_number_wins(5, 3, Expected::Layout(&["bin/", "bin/x -> /nix/store/b/bin/x"], &[]))]
    #[case::lower_number_wins_either_way(3, 5, Expected::Layout(&["bin/", "bin/x -> /nix/store/a/bin/x"], &[]))]
    #[case::negative_priorities(-1, -2, Expected::Layout(&["bin/", "bin/x -> /nix/store/b/bin/x"], &[]))]
    #[case::equal_priority_path_order(
        5,
        5,
        Expected::Error(same_priority("/nix/store/b/bin/x", "/nix/store/a/bin/x", 5))
    )]
    fn priorities_decide_file_collisions(
        #[case] priority_a: i32,
        #[case] priority_b: i32,
        #[case] expected: Expected,
    ) {
        let trees = trees(&packages!["a" => ["bin/x"], "b" => ["bin/x"]]);
        let packages = [
            Package::new(store("b")).with_priority(priority_b),
            Package::new(store("a")).with_priority(priority_a),
        ];
        check(&packages, &trees, &expected);
    }

    // §11.3: inactive packages are skipped, with what they propagate; the same store path is
    // linked once, so duplicates never collide.
    #[rstest]
    #[case::inactive_skipped(
        vec![Package::new(store("a")).inactive(), Package::new(store("b"))],
        Expected::Layout(&["bin -> /nix/store/b/bin"], &[]),
    )]
    #[case::inactive_propagates_nothing(
        vec![Package::new(store("p")).inactive()],
        Expected::Layout(&[], &[]),
    )]
    #[case::duplicate_path_linked_once(
        vec![Package::new(store("a")), Package::new(store("a")), Package::new(store("a")).with_priority(3)],
        Expected::Layout(&["bin -> /nix/store/a/bin"], &[]),
    )]
    #[case::inactive_duplicate_of_active(
        vec![Package::new(store("a")).inactive(), Package::new(store("a"))],
        Expected::Layout(&["bin -> /nix/store/a/bin"], &[]),
    )]
    #[case::explicit_and_propagated_once(
        vec![Package::new(store("p")), Package::new(store("a"))],
        Expected::Layout(&["bin/", "bin/p -> /nix/store/p/bin/p", "bin/x -> /nix/store/a/bin/x"], &[]),
    )]
    #[case::inactive_but_propagated(
        vec![Package::new(store("a")).inactive(), Package::new(store("p"))],
        Expected::Layout(&["bin/", "bin/p -> /nix/store/p/bin/p", "bin/x -> /nix/store/a/bin/x"], &[]),
    )]
    fn activity_and_duplicates(#[case] packages: Vec<Package>, #[case] expected: Expected) {
        let mut trees = trees(&packages!["a" => ["bin/x"], "b" => ["bin/x"]]);
        trees.insert(
            store("p"),
            PackageTree::new(tree(&["bin/p"])).propagating(store("a")),
        );
        check(&packages, &trees, &expected);
    }

    /// `d` propagates `e` and `f`, `f` propagates `g`; `e2` also has `bin/e` (§11.3's example).
    fn propagation_trees() -> Trees {
        let mut trees = trees(&packages!["e" => ["bin/e"], "g" => ["bin/g"], "e2" => ["bin/e"]]);
        trees.insert(
            store("d"),
            PackageTree::new(tree(&["bin/d"])).propagating(format!(
                "{} {}",
                store("e"),
                store("f")
            )),
        );
        trees.insert(
            store("f"),
            PackageTree::new(tree(&["bin/f"])).propagating(store("g")),
        );
        trees
    }

    // §11.3: propagated packages are linked after every explicit one, at 1000 and up, so they
    // lose to explicit packages below 1000, beat those above, and collide with one at exactly
    // their number. Propagation is transitive.
    #[rstest]
    #[case::transitive_and_losing(5, Expected::Layout(
        &["bin/", "bin/d -> /nix/store/d/bin/d", "bin/e -> /nix/store/e2/bin/e",
          "bin/f -> /nix/store/f/bin/f", "bin/g -> /nix/store/g/bin/g"], &[]))]
    #[case::explicit_above_1000_loses(1500, Expected::Layout(
        &["bin/", "bin/d -> /nix/store/d/bin/d", "bin/e -> /nix/store/e/bin/e",
          "bin/f -> /nix/store/f/bin/f", "bin/g -> /nix/store/g/bin/g"], &[]))]
    #[case::explicit_at_1000_collides(
        1000,
        Expected::Error(same_priority("/nix/store/e/bin/e", "/nix/store/e2/bin/e", 1000))
    )]
    fn propagated_packages(#[case] priority_e2: i32, #[case] expected: Expected) {
        let packages = [
            Package::new(store("d")),
            Package::new(store("e2")).with_priority(priority_e2),
        ];
        check(&packages, &propagation_trees(), &expected);
    }

    // §11.3: the counter goes on across rounds and advances for paths already linked: `d`
    // propagates `a` and `b`, `a` propagates `b` (already queued), `b` propagates `t`. Round one
    // links a (1000) and b (1001); round two skips b (1002) and links t at 1003.
    #[rstest]
    #[case::collides_at_1003(
        1003,
        Expected::Error(same_priority("/nix/store/t/bin/t", "/nix/store/x/bin/t", 1003))
    )]
    #[case::beats_1004(1004, Expected::Layout(&["bin/", "bin/a -> /nix/store/a/bin/a", "bin/b -> /nix/store/b/bin/b", "bin/d -> /nix/store/d/bin/d", "bin/t -> /nix/store/t/bin/t"], &[]))]
    #[case::loses_to_1002(1002, Expected::Layout(&["bin/", "bin/a -> /nix/store/a/bin/a", "bin/b -> /nix/store/b/bin/b", "bin/d -> /nix/store/d/bin/d", "bin/t -> /nix/store/x/bin/t"], &[]))]
    fn propagation_counter_counts_skipped_paths(
        #[case] priority_x: i32,
        #[case] expected: Expected,
    ) {
        let mut trees = trees(&packages!["t" => ["bin/t"], "x" => ["bin/t"]]);
        trees.insert(
            store("d"),
            PackageTree::new(tree(&["bin/d"])).propagating(format!(
                "{} {}",
                store("a"),
                store("b")
            )),
        );
        trees.insert(
            store("a"),
            PackageTree::new(tree(&["bin/a"])).propagating(store("b")),
        );
        trees.insert(
            store("b"),
            PackageTree::new(tree(&["bin/b"])).propagating(store("t")),
        );
        let packages = [
            Package::new(store("d")),
            Package::new(store("x")).with_priority(priority_x),
        ];
        check(&packages, &trees, &expected);
    }

    // §11.3: the propagated file is split on spaces and newlines only.
    #[rstest]
    #[case::spaces_and_newlines("\n /nix/store/a  \n\n/nix/store/b\n", Expected::Layout(
        &["bin/", "bin/a -> /nix/store/a/bin/a", "bin/b -> /nix/store/b/bin/b", "bin/p -> /nix/store/p/bin/p"], &[]))]
    #[case::tab_is_not_a_separator("/nix/store/a\t/nix/store/b", Expected::Error(
        "opening directory '/nix/store/a\t/nix/store/b': No such file or directory".into()))]
    #[case::missing_path("/nonexistent", Expected::Error(
        "opening directory '/nonexistent': No such file or directory".into()))]
    #[case::itself("/nix/store/p", Expected::Layout(&["bin -> /nix/store/p/bin"], &[]))]
    #[case::empty("", Expected::Layout(&["bin -> /nix/store/p/bin"], &[]))]
    fn propagated_file_tokens(#[case] text: &str, #[case] expected: Expected) {
        let mut trees = trees(&packages!["a" => ["bin/a"], "b" => ["bin/b"]]);
        trees.insert(
            store("p"),
            PackageTree::new(tree(&["bin/p"])).propagating(text),
        );
        check(&[Package::new(store("p"))], &trees, &expected);
    }

    // §11.3 createLinks points 1-3: a package that is not a directory is left out with a
    // warning; names starting with `.` are skipped; dangling links are skipped with a warning
    // naming the destination.
    #[rstest]
    #[case::file_package(&[("f", Node::File)], Expected::Layout(&[],
        &["not including '/nix/store/f' in the user environment because it's not a directory"]))]
    #[case::link_to_file_package(&[("f", Node::link_to_file("/nix/store/g", "/nix/store/g"))], Expected::Layout(&[],
        &["not including '/nix/store/f' in the user environment because it's not a directory"]))]
    #[case::dangling_package(&[("f", Node::dangling_link("/nowhere"))], Expected::Error(
        "opening directory '/nix/store/f': No such file or directory".into()))]
    #[case::looping_package(&[("f", Node::Symlink(Symlink { target: "f".into(), resolves_to: Resolution::Loop }))],
        Expected::Error("opening directory '/nix/store/f': Too many levels of symbolic links".into()))]
    #[case::link_to_directory_package(&[("f", Node::link_to_directory("/nix/store/a", "/nix/store/a")), ("a", tree(&["bin/a"]))],
        Expected::Layout(&["bin -> /nix/store/f/bin"], &[]))]
    #[case::dot_names(&[("f", tree(&[".hidden", ".", "..", ".config/x", "bin/.x", "bin/y"]))],
        Expected::Layout(&["bin -> /nix/store/f/bin"], &[]))]
    #[case::dangling_top(&[("f", tree(&["dangling -> dangling:/nowhere", "bin/y"]))],
        Expected::Layout(&["bin -> /nix/store/f/bin"], &["skipping dangling symlink '/nix/store/eeee-user-environment/dangling'"]))]
    #[case::dangling_ignored_name_still_warns(&[("f", tree(&["log -> dangling:/nowhere"]))],
        Expected::Layout(&[], &["skipping dangling symlink '/nix/store/eeee-user-environment/log'"]))]
    #[case::loop_where_walked(&[("f", tree(&["self -> loop:self"]))],
        Expected::Error("getting status of '/nix/store/f/self': Too many levels of symbolic links".into()))]
    fn package_roots_and_entries(#[case] packages: &[(&str, Node)], #[case] expected: Expected) {
        let trees: Trees = packages
            .iter()
            .map(|(name, root)| (store(name), PackageTree::new(root.clone())))
            .collect();
        check(&[Package::new(store(packages[0].0))], &trees, &expected);
    }

    /// Package `l` of §11.3's filter example (plus the other ignored names).
    const L: &[&str] = &[
        "bin/log",
        "bin/l",
        "share/info/dir",
        "share/info/l.info",
        "lib/nix-support/z",
        "lib/perl5/perllocal.pod",
        "lib/perl5/L.pm",
        "log",
        "nix-support/setup-hook",
        "manifest.nix",
        "manifest.json",
        "propagated-build-inputs",
        "perllocal.pod",
    ];

    // §11.3 point 4: the ignore list applies only where the walk goes.
    #[rstest]
    #[case::l_alone(&[("l", L.to_vec())], &[
        "bin -> /nix/store/l/bin", "lib -> /nix/store/l/lib", "share -> /nix/store/l/share"])]
    #[case::l_and_m_merged(&[("l", L.to_vec()), ("m", vec!["bin/m", "share/info/m.info", "lib/q", "lib/perl5/M.pm"])], &[
        "bin/", "bin/l -> /nix/store/l/bin/l", "bin/m -> /nix/store/m/bin/m",
        "lib/", "lib/perl5/", "lib/perl5/L.pm -> /nix/store/l/lib/perl5/L.pm",
        "lib/perl5/M.pm -> /nix/store/m/lib/perl5/M.pm", "lib/q -> /nix/store/m/lib/q",
        "share/", "share/info/", "share/info/l.info -> /nix/store/l/share/info/l.info",
        "share/info/m.info -> /nix/store/m/share/info/m.info"])]
    #[case::suffix_is_a_whole_component(&packages!["a" => ["bin/blog", "bin/logs", "info/dirx", "xlog"], "b" => ["bin/b", "info/b"]], &[
        "bin/", "bin/b -> /nix/store/b/bin/b", "bin/blog -> /nix/store/a/bin/blog",
        "bin/logs -> /nix/store/a/bin/logs", "info/", "info/b -> /nix/store/b/info/b",
        "info/dirx -> /nix/store/a/info/dirx", "xlog -> /nix/store/a/xlog"])]
    #[case::info_dir_as_walked(&packages!["b" => ["share/info -> dir:/nix/store/b/docs", "docs/dir", "docs/b.info"], "c" => ["share/info/dir", "share/info/c.info"]], &[
        "docs -> /nix/store/b/docs", "share/", "share/info/",
        "share/info/b.info -> /nix/store/b/docs/b.info",
        "share/info/c.info -> /nix/store/c/share/info/c.info",
        "share/info/dir -> /nix/store/b/docs/dir"])]
    fn ignore_list(
        #[case] packages: &[(&str, Vec<&str>)],
        #[case] expected: &'static [&'static str],
    ) {
        let trees = trees(packages);
        let packages: Vec<Package> = packages
            .iter()
            .enumerate()
            .map(|(index, (name, _))| {
                Package::new(store(name)).with_priority(i32::try_from(index).unwrap_or(0))
            })
            .collect();
        check(&packages, &trees, &Expected::Layout(expected, &[]));
    }

    // §11.3 point 5: a directory meeting a link to a directory replaces it with a real one,
    // walks the old target again at its canonical path with the old priority, then the new
    // source; a directory meeting a link to anything else collides, whatever the priorities.
    // Point 6: a file meeting a real directory collides. Point 7: links are made to the path as
    // visited, not resolved.
    #[rstest]
    #[case::merge_two_bins(&packages!["a" => ["bin/a", "share/doc/a/README"], "b" => ["bin/b", "share/doc/b/README"]], &[5, 5],
        Expected::Layout(&["bin/", "bin/a -> /nix/store/a/bin/a", "bin/b -> /nix/store/b/bin/b",
            "share/", "share/doc/", "share/doc/a -> /nix/store/a/share/doc/a",
            "share/doc/b -> /nix/store/b/share/doc/b"], &[]))]
    #[case::symlinked_directory_first(&packages!["b" => ["docs -> dir:/nix/store/x/share/doc"], "c" => ["docs/c/README"], "x" => ["share/doc/x/README"]], &[4, 6],
        Expected::Layout(&["docs/", "docs/c -> /nix/store/c/docs/c", "docs/x -> /nix/store/x/share/doc/x"], &[]))]
    #[case::symlinked_directory_second(&packages!["b" => ["docs -> dir:/nix/store/x/share/doc"], "c" => ["docs/c/README"], "x" => ["share/doc/x/README"]], &[6, 4],
        Expected::Layout(&["docs/", "docs/c -> /nix/store/c/docs/c", "docs/x -> /nix/store/b/docs/x"], &[]))]
    #[case::old_priority_kept_in_rewalk(&packages!["a" => ["bin/x"], "b" => ["bin/x", "bin/b"], "c" => ["bin/c"]], &[3, 7, 9],
        Expected::Layout(&["bin/", "bin/b -> /nix/store/b/bin/b", "bin/c -> /nix/store/c/bin/c", "bin/x -> /nix/store/a/bin/x"], &[]))]
    #[case::dangling_found_in_rewalk(&packages!["a" => ["bin/a", "bin/dead -> dangling:nowhere"], "b" => ["bin/b"]], &[5, 6],
        Expected::Layout(&["bin/", "bin/a -> /nix/store/a/bin/a", "bin/b -> /nix/store/b/bin/b"],
            &["skipping dangling symlink '/nix/store/eeee-user-environment/bin/dead'"]))]
    #[case::directory_after_file(&packages!["a" => ["share/a"], "c" => ["share"]], &[5, 3],
        Expected::Error("collision between '/nix/store/a/share' and non-directory '/nix/store/c/share'".into()))]
    #[case::file_after_directory_same_priority(&packages!["a" => ["share/a"], "c" => ["share"]], &[5, 5],
        Expected::Error(same_priority("/nix/store/c/share", "/nix/store/a/share", 5)))]
    #[case::file_after_directory_loses(&packages!["a" => ["share/a"], "c" => ["share"]], &[3, 5],
        Expected::Layout(&["share -> /nix/store/a/share"], &[]))]
    #[case::file_against_merged_directory(&packages!["a" => ["share/a"], "b" => ["share/b"], "c" => ["share"]], &[1, 2, 3],
        Expected::Error("collision between non-directory '/nix/store/c/share' and directory '/nix/store/eeee-user-environment/share'".into()))]
    #[case::non_directory_named_canonically(&packages!["a" => ["share/a"], "c" => ["share -> file:/nix/store/x/real"]], &[5, 3],
        Expected::Error("collision between '/nix/store/a/share' and non-directory '/nix/store/x/real'".into()))]
    #[case::link_through_real_directory(&packages!["a" => ["share/a"], "b" => ["share/b"], "c" => ["share -> dir:/nix/store/x/share"], "x" => ["share/x/data"]], &[1, 2, 3],
        Expected::Layout(&["share/", "share/a -> /nix/store/a/share/a", "share/b -> /nix/store/b/share/b", "share/x -> /nix/store/c/share/x"], &[]))]
    #[case::links_are_not_resolved(&packages!["b" => ["docs -> dir:/nix/store/a/share/doc", "bin -> file:/nix/store/a/bin"], "a" => ["share/doc/a"]], &[5, 6],
        Expected::Layout(&["bin -> /nix/store/b/bin", "docs -> /nix/store/b/docs", "share -> /nix/store/a/share"], &[]))]
    #[case::deep_collision(&packages!["a" => ["share/doc/x/README", "share/doc/a"], "b" => ["share/doc/x/README", "share/doc/b"]], &[5, 5],
        Expected::Error(same_priority("/nix/store/b/share/doc/x/README", "/nix/store/a/share/doc/x/README", 5)))]
    fn directories_and_links(
        #[case] packages: &[(&str, Vec<&str>)],
        #[case] priorities: &[i32],
        #[case] expected: Expected,
    ) {
        let trees = trees(packages);
        let packages: Vec<Package> = packages
            .iter()
            .zip(priorities)
            .map(|((name, _), priority)| Package::new(store(name)).with_priority(*priority))
            .collect();
        check(&packages, &trees, &expected);
    }

    /// §11.3's verified tree: `a` with ignored entries and a dangling link, `b` with a `docs`
    /// link into `a`.
    #[test]
    fn verified_example_tree() {
        let trees = trees(&[
            (
                "a",
                vec![
                    "bin/a",
                    "share/doc/a/README",
                    "share/info/dir",
                    "share/info/a.info",
                    "nix-support/setup-hook",
                    ".hidden",
                    "log",
                    "lib/perl5/perllocal.pod",
                    "manifest.json",
                    "propagated-build-inputs",
                    "dangling -> dangling:nowhere",
                ],
            ),
            (
                "b",
                vec![
                    "bin/b",
                    "share/doc/b/README",
                    "docs -> dir:/nix/store/a/share/doc",
                ],
            ),
        ]);
        let layout = run(
            &[Package::new(store("a")), Package::new(store("b"))],
            &trees,
        )
        .expect("no collision");
        assert_eq!(
            listing(&layout),
            [
                "bin/",
                "bin/a -> /nix/store/a/bin/a",
                "bin/b -> /nix/store/b/bin/b",
                "docs -> /nix/store/b/docs",
                "lib -> /nix/store/a/lib",
                "share/",
                "share/doc/",
                "share/doc/a -> /nix/store/a/share/doc/a",
                "share/doc/b -> /nix/store/b/share/doc/b",
                "share/info -> /nix/store/a/share/info",
            ]
        );
        assert_eq!(
            warnings(&layout),
            ["skipping dangling symlink '/nix/store/eeee-user-environment/dangling'"]
        );
    }

    /// A merge through a chain of links walks the fully resolved path, as `canonPath` does.
    #[test]
    fn merge_walks_the_canonical_path() {
        let trees = trees(&[
            ("b", vec!["docs -> dir:/nix/store/a/share/doc"]),
            ("d", vec!["docs/d"]),
            ("a", vec!["share/doc/a"]),
        ]);
        let layout = run(
            &[
                Package::new(store("b")).with_priority(4),
                Package::new(store("d")).with_priority(6),
            ],
            &trees,
        )
        .expect("no collision");
        assert_eq!(
            listing(&layout),
            [
                "docs/",
                "docs/a -> /nix/store/a/share/doc/a",
                "docs/d -> /nix/store/d/docs/d"
            ]
        );
    }

    /// A merged link whose directory was not handed in is reported, not guessed.
    #[test]
    fn missing_merged_directory_is_an_error() {
        let trees = trees(&packages!["b" => ["docs -> dir:/elsewhere/doc"], "d" => ["docs/d"]]);
        let error = run(
            &[
                Package::new(store("b")),
                Package::new(store("d")).with_priority(6),
            ],
            &trees,
        )
        .expect_err("the target is unknown");
        assert_eq!(
            error,
            LayoutError::UnknownDirectory {
                source_path: "/nix/store/b/docs".into(),
                canonical_path: "/elsewhere/doc".into(),
            }
        );
    }

    /// A cycle one package links into is fine: a directory reached through a link is looked up
    /// only when walked, and the walk goes only as deep as real directories in other packages.
    /// Each merge walks the old target at its canonical path, so those links name `a/share`, not
    /// the loop.
    #[test]
    fn symlink_cycles_terminate() {
        let trees = trees(&[
            ("a", vec!["share/loop -> dir:/nix/store/a/share", "share/a"]),
            ("b", vec!["share/loop/loop/loop/b"]),
        ]);
        let layout = run(
            &[Package::new(store("a")), Package::new(store("b"))],
            &trees,
        )
        .expect("no collision");
        assert_eq!(
            listing(&layout),
            [
                "share/",
                "share/a -> /nix/store/a/share/a",
                "share/loop/",
                "share/loop/a -> /nix/store/a/share/a",
                "share/loop/loop/",
                "share/loop/loop/a -> /nix/store/a/share/a",
                "share/loop/loop/loop/",
                "share/loop/loop/loop/a -> /nix/store/a/share/a",
                "share/loop/loop/loop/b -> /nix/store/b/share/loop/loop/loop/b",
                "share/loop/loop/loop/loop -> /nix/store/a/share/loop",
            ]
        );
    }

    /// A chain of links `levels` long: `a` and `b` both link each of `names` to `t/d1`; in each
    /// `t/dN` but the last, each of `names` links to the next, and the last holds a file, `end`.
    fn tower(levels: usize, names: &[&str]) -> Trees {
        let links = |target: &str| {
            Node::directory(
                names
                    .iter()
                    .map(|name| (*name, Node::link_to_directory(target, target))),
            )
        };
        let mut tower = Directory::default();
        for level in 1..=levels {
            let directory = if level < levels {
                links(&store(&format!("t/d{}", level + 1)))
            } else {
                Node::directory([("end", Node::File)])
            };
            tower.entries.insert(format!("d{level}"), directory);
        }
        [
            (store("a"), PackageTree::new(links(&store("t/d1")))),
            (store("b"), PackageTree::new(links(&store("t/d1")))),
            (store("t"), PackageTree::new(Node::Directory(tower))),
        ]
        .into_iter()
        .collect()
    }

    /// Two packages linking into a chain of links: every level merges the two, and the path `b`'s
    /// side is visited at goes through one more link each time. The kernel resolves a path
    /// through at most 40 links; the 41st is `ELOOP`, where Nix fails. Verified with Nix 2.8 on
    /// the same trees (links to the next level relative, `x -> ../d2`): 40 levels give exactly
    /// this tree, 41 exactly this error.
    #[rstest]
    #[case::forty_links(40)]
    #[case::forty_one_links(41)]
    fn merges_follow_links_as_deep_as_the_kernel(#[case] levels: usize) {
        let packages = [
            Package::new(store("a")),
            Package::new(store("b")).with_priority(6),
        ];
        let result = run(&packages, &tower(levels, &["x"]));
        if levels <= 40 {
            let layout = result.expect("within the kernel's limit");
            let mut expected: Vec<String> = (1..=levels)
                .map(|depth| format!("{}/", ["x"].repeat(depth).join("/")))
                .collect();
            expected.push(format!(
                "{}/end -> {}/end",
                ["x"].repeat(levels).join("/"),
                store(&format!("t/d{levels}"))
            ));
            assert_eq!(listing(&layout), expected);
        } else {
            let deepest = format!("{}{}", store("b"), "/x".repeat(levels));
            assert_eq!(
                result.expect_err("past the kernel's limit").to_string(),
                format!("getting status of '{deepest}': Too many levels of symbolic links")
            );
        }
    }

    /// The smallest input that used to make the walk run forever (the shape the properties
    /// shrank it to): `a` links `x` to `b`, and `b` links `x` to itself (`x -> .`). Linking `b`
    /// merges `x`, walking `b` again there for the old link and through `b/x` for the new one;
    /// `b`'s `x` meets the link just made, one level deeper, and so on. Verified with Nix 2.8:
    /// the builder fails where `b`'s path goes through 41 links.
    #[test]
    fn two_links_into_one_cycle_stop_at_the_kernel_limit() {
        let trees: Trees = [
            (
                store("a"),
                PackageTree::new(Node::directory([(
                    "x",
                    Node::link_to_directory(store("b"), store("b")),
                )])),
            ),
            (
                store("b"),
                PackageTree::new(Node::directory([(
                    "x",
                    Node::link_to_directory(".", store("b")),
                )])),
            ),
        ]
        .into_iter()
        .collect();
        let error = run(
            &[Package::new(store("a")), Package::new(store("b"))],
            &trees,
        )
        .expect_err("a path through 41 links");
        assert_eq!(
            error.to_string(),
            format!(
                "getting status of '{}{}': Too many levels of symbolic links",
                store("b"),
                "/x".repeat(41)
            )
        );
    }

    /// With two links per level, `x` and `y`, each level doubles the directories to merge, and a
    /// chain of 40 stays within the kernel's limit: Nix would make 2^40 directories (Nix 2.8 on
    /// such trees made 131,071 directories in 41 s at 16 levels, and was killed at 18). The walk
    /// gives up at its bound, naming the package it was linking. Within the bound, the result is
    /// the whole doubling: with 8 levels, 2 + 4 + … + 256 directories and 256 links to `end`.
    #[rstest]
    #[case::entries_within(8, Limits { visited_entries: 10_000, path_bytes: u64::MAX }, Ok(766))]
    #[case::entries_past(40, Limits { visited_entries: 10_000, path_bytes: u64::MAX },
        Err(LayoutLimit::VisitedEntries(10_000)))]
    #[case::bytes_within(8, Limits { visited_entries: u64::MAX, path_bytes: 100_000 }, Ok(766))]
    #[case::bytes_past(40, Limits { visited_entries: u64::MAX, path_bytes: 100_000 },
        Err(LayoutLimit::PathBytes(100_000)))]
    fn doubling_merges_stop_at_the_bound(
        #[case] levels: usize,
        #[case] limits: Limits,
        #[case] expected: Result<usize, LayoutLimit>,
    ) {
        let packages = [
            Package::new(store("a")),
            Package::new(store("b")).with_priority(6),
        ];
        let result = layout_within(
            &packages,
            &mut &tower(levels, &["x", "y"]),
            ENVIRONMENT,
            limits,
        );
        match expected {
            Ok(operations) => {
                assert_eq!(
                    result.expect("within the bound").operations.len(),
                    operations
                );
            }
            Err(limit) => assert_eq!(
                result,
                Err(LayoutError::TooLarge {
                    store_path: store("b"),
                    limit
                })
            ),
        }
    }

    /// [`layout`] applies [`MAX_VISITED_ENTRIES`] and [`MAX_PATH_BYTES`]: about two seconds
    /// optimised, more than a minute without.
    #[test]
    #[cfg_attr(
        debug_assertions,
        ignore = "a million steps; run with `cargo test --release`"
    )]
    fn doubling_merges_stop_at_the_default_bound() {
        let packages = [
            Package::new(store("a")),
            Package::new(store("b")).with_priority(6),
        ];
        let error = run(&packages, &tower(40, &["x", "y"])).expect_err("exponential");
        assert!(
            matches!(&error, LayoutError::TooLarge { store_path, .. } if *store_path == store("b")),
            "{error:?}"
        );
    }

    /// Names no filesystem holds are skipped with a warning; `.`-led ones (`..` too) silently,
    /// as Nix skips them; nothing lands outside the environment either way.
    #[rstest]
    #[case::empty("", true)]
    #[case::slash("a/b", true)]
    #[case::absolute("/etc", true)]
    #[case::nul("a\0b", true)]
    #[case::escaping_slash("../../etc", false)]
    #[case::parent("..", false)]
    fn invalid_names_are_skipped(#[case] name: &str, #[case] warned: bool) {
        let root = Node::directory([(name, Node::File), ("ok", Node::File)]);
        let trees: Trees = [(store("a"), PackageTree::new(root))].into_iter().collect();
        let layout = run(&[Package::new(store("a"))], &trees).expect("no collision");
        assert_eq!(listing(&layout), ["ok -> /nix/store/a/ok"]);
        let expected = if warned {
            vec![LayoutWarning::InvalidName {
                directory: store("a"),
                name: name.to_owned(),
            }]
        } else {
            Vec::new()
        };
        assert_eq!(layout.warnings, expected);
    }

    #[rstest]
    #[case::plain("5", Some(5))]
    #[case::negative("-2", Some(-2))]
    #[case::plus("+7", Some(7))]
    #[case::leading_space(" \t\n4xyz", Some(4))]
    #[case::float_text("2.700000", Some(2))]
    #[case::leading_zeros("007", Some(7))]
    #[case::maximum("2147483647", Some(i32::MAX))]
    #[case::minimum("-2147483648", Some(i32::MIN))]
    #[case::too_big("2147483648", None)]
    #[case::too_small("-2147483649", None)]
    #[case::huge("99999999999999999999999", None)]
    #[case::word("high", None)]
    #[case::empty("", None)]
    #[case::sign_only("-", None)]
    #[case::space_after_sign("- 1", None)]
    fn priorities_read_like_stoi(#[case] token: &str, #[case] expected: Option<i32>) {
        assert_eq!(read_priority(token), expected);
    }

    #[rstest]
    #[case("false", false)]
    #[case("true", true)]
    #[case("FALSE", true)]
    #[case("no", true)]
    #[case("0", true)]
    #[case("", true)]
    fn only_false_deactivates(#[case] token: &str, #[case] active: bool) {
        assert_eq!(read_active(token), active);
    }

    #[test]
    fn environment_paths_sort_parents_first() {
        let mut paths = [
            EnvironmentPath("a-b".into()),
            EnvironmentPath("a/b".into()),
            EnvironmentPath("a".into()),
            EnvironmentPath("a/b/c".into()),
            EnvironmentPath("a.b".into()),
        ];
        paths.sort();
        let texts: Vec<&str> = paths.iter().map(EnvironmentPath::as_str).collect();
        assert_eq!(texts, ["a", "a/b", "a/b/c", "a-b", "a.b"]);
    }

    #[test]
    fn directory_lookup_uses_the_longest_prefix() {
        let mut trees = trees(&packages!["a" => ["share/doc/x"]]);
        trees.insert(store("a/share"), PackageTree::new(tree(&["other/y"])));
        assert!(trees.directory_at("/nix/store/a/share/doc").is_none());
        assert!(trees.directory_at("/nix/store/a/share/other").is_some());
        assert!(trees.directory_at("/nix/store/a").is_some());
        assert!(trees.directory_at("/nix/store/a/share/doc/x").is_none());
        assert!(trees.directory_at("/nix/store").is_none());
        assert!(trees.directory_at("").is_none());
        assert!(trees.directory_at("relative").is_none());
    }

    // ---------------------------------------------------------------------------------------
    // Properties.

    const STORE_PATHS: [&str; 4] = ["/s/a", "/s/b", "/s/c", "/s/d"];

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec!["bin", "share", "x", "y", "lib", "info", "dir", "log", "é"])
                .prop_map(str::to_owned),
            1 => prop::sample::select(vec!["", ".", "..", "a/b", "../..", "/", "nul\0", ".hidden", "nix-support", "manifest.nix"])
                .prop_map(str::to_owned),
        ]
    }

    fn resolution() -> impl Strategy<Value = Resolution> {
        let canonical = prop::sample::select(vec![
            "/s/a",
            "/s/a/bin",
            "/s/b/share",
            "/s/c/x/y",
            "/elsewhere",
            "/s/d/..",
        ])
        .prop_map(str::to_owned);
        prop_oneof![
            canonical
                .clone()
                .prop_map(|canonical_path| Resolution::Directory { canonical_path }),
            canonical.prop_map(|canonical_path| Resolution::NonDirectory { canonical_path }),
            Just(Resolution::Dangling),
            Just(Resolution::Loop),
        ]
    }

    fn node() -> impl Strategy<Value = Node> {
        let leaf = prop_oneof![
            3 => Just(Node::File),
            1 => (name(), resolution()).prop_map(|(target, resolves_to)| Node::Symlink(Symlink { target, resolves_to })),
        ];
        leaf.prop_recursive(4, 48, 5, |inner| {
            prop::collection::btree_map(name(), inner, 0..5)
                .prop_map(|entries| Node::Directory(Directory { entries }))
        })
    }

    fn propagated() -> impl Strategy<Value = Option<String>> {
        prop::option::of(
            prop::collection::vec(
                (
                    prop::sample::select(vec!["/s/a", "/s/b", "/s/c", "/s/d", "/s/missing", ""]),
                    prop::sample::select(vec![" ", "\n", "\t", "  "]),
                ),
                0..4,
            )
            .prop_map(|parts| {
                parts
                    .into_iter()
                    .map(|(path, separator)| format!("{path}{separator}"))
                    .collect()
            }),
        )
    }

    fn input() -> impl Strategy<Value = (Vec<Package>, Trees)> {
        let tree =
            (node(), propagated()).prop_map(|(root, propagated_user_env_packages)| PackageTree {
                root,
                propagated_user_env_packages,
            });
        let trees = prop::collection::vec(tree, STORE_PATHS.len())
            .prop_map(|trees| STORE_PATHS.iter().copied().zip(trees).collect::<Trees>());
        let package = (
            prop::sample::select(STORE_PATHS.to_vec()),
            prop::sample::select(vec![-1, 0, 5, 5, 999, 1000, 1001, 1002]),
            prop::bool::weighted(0.85),
        )
            .prop_map(|(store_path, priority, active)| Package {
                store_path: store_path.to_owned(),
                priority,
                active,
            });
        (prop::collection::vec(package, 0..5), trees)
    }

    /// The bounds the properties lay out within. Links between the generated trees can demand
    /// an exponential walk (see `doubling_merges_stop_at_the_bound`); these keep every case
    /// cheap, far above what the other cases need.
    const PROPERTY_LIMITS: Limits = Limits {
        visited_entries: 5_000,
        path_bytes: 1 << 20,
    };

    fn bounded_layout(packages: &[Package], trees: &Trees) -> Result<Layout, LayoutError> {
        layout_within(packages, &mut { trees }, ENVIRONMENT, PROPERTY_LIMITS)
    }

    fn environment_path() -> impl Strategy<Value = EnvironmentPath> {
        prop::collection::vec(
            prop::sample::select(vec![
                "a", "b", "a-b", "a.b", "a b", "ab", "a0", "é", "\u{1}",
            ]),
            1..4,
        )
        .prop_map(|components| EnvironmentPath(components.join("/")))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the trees hold, every operation's path is made of valid names inside the
        /// environment, each path appears once, and every parent is a directory created before.
        #[test]
        fn no_operation_escapes_the_environment((packages, trees) in input()) {
            if let Ok(layout) = bounded_layout(&packages, &trees) {
                let mut directories = BTreeSet::new();
                let mut seen = BTreeSet::new();
                for operation in &layout.operations {
                    let path = operation.path();
                    prop_assert!(seen.insert(path.as_str().to_owned()), "{path} twice");
                    let components: Vec<&str> = path.components().collect();
                    for component in &components {
                        prop_assert!(
                            !component.is_empty() && !component.starts_with('.') && !component.contains('\0'),
                            "bad component in {path:?}"
                        );
                    }
                    if let Some((_, parents)) = components.split_last()
                        && !parents.is_empty()
                    {
                        prop_assert!(directories.contains(&parents.join("/")), "{path} before its parent");
                    }
                    if let Operation::Directory(path) = operation {
                        directories.insert(path.as_str().to_owned());
                    }
                }
            }
        }

        /// The builder sorts its input, so the order packages come in changes nothing.
        #[test]
        fn package_order_does_not_matter((packages, trees) in input()) {
            let mut reversed = packages.clone();
            reversed.reverse();
            prop_assert_eq!(
                bounded_layout(&packages, &trees),
                bounded_layout(&reversed, &trees)
            );
        }

        /// The bounds only ever cut a walk short: a layout that stays within small bounds is the
        /// one laid out within larger ones.
        #[test]
        fn bounds_only_cut_short(
            (packages, trees) in input(),
            visited_entries in 1..64_u64,
            path_bytes in 1..4_096_u64,
        ) {
            let limits = Limits { visited_entries, path_bytes };
            let small = layout_within(&packages, &mut &trees, ENVIRONMENT, limits);
            if !matches!(small, Err(LayoutError::TooLarge { .. })) {
                prop_assert_eq!(small, bounded_layout(&packages, &trees));
            }
        }

        /// Comparing paths as bytes, with `/` lowest, is comparing them component by component.
        #[test]
        fn environment_paths_compare_by_components(
            left in environment_path(),
            right in environment_path(),
        ) {
            prop_assert_eq!(left.cmp(&right), left.components().cmp(right.components()));
        }
    }
}
