//! Trees described in memory rather than read from disk: a tree of directories and symlinks
//! (a user environment) and a single regular file (its `manifest.nix`).
//!
//! Owns their validation and their archive: the NAR is written from the description, in the
//! order [`super::nar::dump`] would write the same tree read back from disk, so the store can
//! hash (and name) such a tree before it creates anything, and then create it once, in place.
//! Does no I/O.

use std::fmt;

/// One entry of a [`LinkTree`]: a directory, or a symlink and its target. Paths are relative to
/// the tree's root, one or more names joined with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEntry {
    /// A directory (created `0555`, as everything in the store).
    Directory {
        /// Where, inside the tree.
        path: String,
    },
    /// A symbolic link.
    Symlink {
        /// Where, inside the tree.
        path: String,
        /// What it points at, as written into the link.
        target: String,
    },
}

impl LinkEntry {
    /// Where the entry is, inside the tree.
    #[must_use]
    pub fn path(&self) -> &str {
        match self {
            Self::Directory { path } | Self::Symlink { path, .. } => path,
        }
    }
}

/// A tree of directories and symlinks to add to the store with
/// [`super::EmbeddedStore::add_link_tree`]. Entries may be pushed in any order; every entry's
/// parent must be a directory of the tree (or its root).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkTree {
    entries: Vec<LinkEntry>,
}

/// Why a [`LinkTree`] cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot add the entry `{path}`: {problem}")]
pub struct LinkTreeError {
    /// The entry.
    pub path: String,
    /// What is wrong with it.
    pub problem: LinkTreeProblem,
}

/// What is wrong with an entry of a [`LinkTree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkTreeProblem {
    /// A name along the path is empty, `.` or `..`, or holds NUL.
    InvalidName,
    /// Another entry has the same path.
    Duplicate,
    /// The parent is not a directory of the tree.
    NoParentDirectory,
    /// A symlink target that is empty or holds NUL.
    InvalidTarget,
}

impl fmt::Display for LinkTreeProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::InvalidName => "a name along its path is empty, `.` or `..`, or holds NUL",
            Self::Duplicate => "the tree has another entry at the same path",
            Self::NoParentDirectory => "its parent is not a directory of the tree",
            Self::InvalidTarget => "its target is empty or holds NUL",
        })
    }
}

impl LinkTree {
    /// An empty tree (a directory with nothing in it).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory at `path`.
    pub fn directory(&mut self, path: impl Into<String>) {
        self.entries
            .push(LinkEntry::Directory { path: path.into() });
    }

    /// Adds a symlink at `path` pointing at `target`.
    pub fn symlink(&mut self, path: impl Into<String>, target: impl Into<String>) {
        self.entries.push(LinkEntry::Symlink {
            path: path.into(),
            target: target.into(),
        });
    }

    /// The entries, in the order they were added.
    #[must_use]
    pub fn entries(&self) -> &[LinkEntry] {
        &self.entries
    }

    /// The entries sorted as the tree is archived (component by component, so each directory
    /// right before its contents), after checking that they form a tree.
    pub(crate) fn sorted(&self) -> Result<Vec<&LinkEntry>, LinkTreeError> {
        let mut sorted: Vec<&LinkEntry> = self.entries.iter().collect();
        // Stable and adaptive: a tree pushed in order (as a layout is) costs one pass.
        sorted.sort_by(|left, right| crate::plan::layout::compare_paths(left.path(), right.path()));
        let error = |entry: &LinkEntry, problem| LinkTreeError {
            path: entry.path().to_owned(),
            problem,
        };
        // The directories enclosing the current entry, innermost last.
        let mut open: Vec<&str> = Vec::new();
        let mut previous: Option<&str> = None;
        for entry in &sorted {
            let path = entry.path();
            if path
                .split('/')
                .any(|name| name.is_empty() || name == "." || name == ".." || name.contains('\0'))
            {
                return Err(error(entry, LinkTreeProblem::InvalidName));
            }
            if previous == Some(path) {
                return Err(error(entry, LinkTreeProblem::Duplicate));
            }
            previous = Some(path);
            let parent = path.rfind('/').map(|slash| &path[..slash]);
            while let Some(&innermost) = open.last() {
                if parent == Some(innermost) || parent.is_some_and(|p| is_inside(p, innermost)) {
                    break;
                }
                open.pop();
            }
            if parent != open.last().copied() {
                return Err(error(entry, LinkTreeProblem::NoParentDirectory));
            }
            match entry {
                LinkEntry::Directory { path } => open.push(path),
                LinkEntry::Symlink { target, .. } => {
                    if target.is_empty() || target.contains('\0') {
                        return Err(error(entry, LinkTreeProblem::InvalidTarget));
                    }
                }
            }
        }
        Ok(sorted)
    }
}

/// Whether `path` lies strictly inside `directory`.
fn is_inside(path: &str, directory: &str) -> bool {
    path.len() > directory.len()
        && path.starts_with(directory)
        && path.as_bytes()[directory.len()] == b'/'
}

/// Appends one archive string: its length, its bytes, zero padding to a multiple of 8.
fn string(archive: &mut Vec<u8>, bytes: &[u8]) {
    archive.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    archive.extend_from_slice(bytes);
    archive.resize(archive.len() + (8 - bytes.len() % 8) % 8, 0);
}

fn strings(archive: &mut Vec<u8>, tokens: &[&[u8]]) {
    for token in tokens {
        string(archive, token);
    }
}

/// The archive of a tree whose entries come from [`LinkTree::sorted`]: the bytes
/// [`super::nar::dump`] writes for that tree on disk.
pub(crate) fn archive(sorted: &[&LinkEntry]) -> Vec<u8> {
    let mut archive = Vec::with_capacity(64 + sorted.len() * 320);
    strings(
        &mut archive,
        &[super::nar::MAGIC.as_bytes(), b"(", b"type", b"directory"],
    );
    let mut open: Vec<&str> = Vec::new();
    for entry in sorted {
        let path = entry.path();
        let (parent, name) = match path.rfind('/') {
            Some(slash) => (Some(&path[..slash]), &path[slash + 1..]),
            None => (None, path),
        };
        while open.last().copied() != parent {
            // Closes a directory's node and the entry holding it.
            open.pop();
            strings(&mut archive, &[b")", b")"]);
        }
        strings(
            &mut archive,
            &[b"entry", b"(", b"name", name.as_bytes(), b"node", b"("],
        );
        match entry {
            LinkEntry::Directory { path } => {
                strings(&mut archive, &[b"type", b"directory"]);
                open.push(path);
            }
            LinkEntry::Symlink { target, .. } => strings(
                &mut archive,
                &[
                    b"type",
                    b"symlink",
                    b"target",
                    target.as_bytes(),
                    b")",
                    b")",
                ],
            ),
        }
    }
    for _ in open {
        strings(&mut archive, &[b")", b")"]);
    }
    string(&mut archive, b")");
    archive
}

/// The archive of a regular file holding `contents`.
pub(crate) fn file_archive(contents: &[u8], executable: bool) -> Vec<u8> {
    let mut archive = Vec::with_capacity(contents.len() + 160);
    strings(
        &mut archive,
        &[super::nar::MAGIC.as_bytes(), b"(", b"type", b"regular"],
    );
    if executable {
        strings(&mut archive, &[b"executable", b""]);
    }
    strings(&mut archive, &[b"contents", contents, b")"]);
    archive
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sorted_paths(tree: &LinkTree) -> Result<Vec<String>, LinkTreeError> {
        Ok(tree
            .sorted()?
            .into_iter()
            .map(|entry| entry.path().to_owned())
            .collect())
    }

    #[test]
    fn sorts_directories_before_their_contents() {
        let mut tree = LinkTree::new();
        tree.symlink("a-b", "/t/a-b");
        tree.symlink("a/c", "/t/c");
        tree.directory("a");
        tree.symlink("A", "/t/A");
        assert_eq!(
            sorted_paths(&tree).expect("valid"),
            ["A", "a", "a/c", "a-b"]
        );
    }

    #[test]
    fn rejects_what_is_not_a_tree() {
        let problem = |tree: &LinkTree| tree.sorted().map(drop).map_err(|error| error.problem);
        let mut tree = LinkTree::new();
        tree.symlink("bin/x", "/t/x");
        assert_eq!(problem(&tree), Err(LinkTreeProblem::NoParentDirectory));
        let mut tree = LinkTree::new();
        tree.symlink("bin", "/t/bin");
        tree.symlink("bin/x", "/t/x");
        assert_eq!(problem(&tree), Err(LinkTreeProblem::NoParentDirectory));
        for path in ["", "a//b", "..", "a/.", "nul\0"] {
            let mut tree = LinkTree::new();
            tree.directory("a");
            tree.symlink(path, "/t");
            assert_eq!(
                problem(&tree),
                Err(LinkTreeProblem::InvalidName),
                "{path:?}"
            );
        }
        let mut tree = LinkTree::new();
        tree.directory("a");
        tree.symlink("a", "/t");
        assert_eq!(problem(&tree), Err(LinkTreeProblem::Duplicate));
        let mut tree = LinkTree::new();
        tree.symlink("a", "");
        assert_eq!(problem(&tree), Err(LinkTreeProblem::InvalidTarget));
    }

    #[test]
    fn file_archive_matches_dump() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("file");
        for contents in [&b""[..], b"x", b"12345678", b"123456789"] {
            std::fs::write(&path, contents).expect("write");
            let mut dumped = Vec::new();
            crate::store::nar::dump(&path, &mut dumped).expect("dump");
            assert_eq!(file_archive(contents, false), dumped);
        }
    }

    fn name() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "a",
            "b",
            "a-b",
            "a.b",
            "a b",
            "ab",
            "a0",
            "é",
            "\u{1}",
            "manifest.nix",
        ])
        .prop_map(str::to_owned)
    }

    /// A random tree: paths with their kind (`None`: a directory, else a link's target).
    fn tree() -> impl Strategy<Value = LinkTree> {
        prop::collection::btree_map(
            prop::collection::vec(name(), 1..4),
            prop::option::of(prop::sample::select(vec!["/t/x", "rel", "../up", "é"])),
            0..24,
        )
        .prop_map(|entries| {
            // Every proper prefix of a path becomes a directory; a path that is a prefix of
            // another is a directory whatever was drawn for it.
            let mut kinds: std::collections::BTreeMap<Vec<String>, Option<&str>> =
                std::collections::BTreeMap::new();
            for components in entries.keys() {
                for depth in 1..components.len() {
                    kinds.insert(components[..depth].to_vec(), None);
                }
            }
            for (components, target) in entries {
                kinds.entry(components).or_insert(target);
            }
            let mut tree = LinkTree::new();
            // Pushed in reverse, to exercise the sort.
            for (components, target) in kinds.into_iter().rev() {
                match target {
                    None => tree.directory(components.join("/")),
                    Some(target) => tree.symlink(components.join("/"), target),
                }
            }
            tree
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The archive written from the description is the one `dump` writes of the tree
        /// created from it.
        #[test]
        fn archive_matches_dump_of_the_created_tree(tree in tree()) {
            let directory = tempfile::tempdir().expect("tempdir");
            let root = directory.path().join("root");
            std::fs::create_dir(&root).expect("mkdir");
            let sorted = tree.sorted().expect("a tree");
            for entry in &sorted {
                match entry {
                    LinkEntry::Directory { path } => {
                        std::fs::create_dir(root.join(path)).expect("mkdir");
                    }
                    LinkEntry::Symlink { path, target } => {
                        std::os::unix::fs::symlink(target, root.join(path)).expect("symlink");
                    }
                }
            }
            let mut dumped = Vec::new();
            crate::store::nar::dump(&root, &mut dumped).expect("dump");
            prop_assert_eq!(archive(&sorted), dumped);
        }
    }
}
