//! Closures under references, and the order Nix lists paths in.
//!
//! Owns the queries `nix-store --query` answers from registered references (`--requisites`,
//! `--references`, `--referrers`, `--referrers-closure`), Nix's topological order (what
//! `nix-store -qR` prints and the order `nix-store --export` writes paths in: every path after
//! the paths it refers to, ties broken as Nix's depth-first walk over base names breaks them),
//! and how a command-line argument leads to a store path (through symlinks such as profiles,
//! as `nix-store` follows them).

use super::transfer::TransferError;
use super::{EmbeddedStore, PathInfo, StoreError, StorePath};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

/// How many symlinks [`EmbeddedStore::follow_links_to_store_path`] follows before giving up
/// (the kernel's limit for one path).
const MAX_LINKS: usize = 40;

/// Which paths a query lists, as `nix-store --query` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// The closure: the paths and everything they refer to, directly or not.
    Requisites,
    /// What the paths refer to directly.
    References,
    /// The valid paths that refer to them directly.
    Referrers,
    /// The valid paths that refer to them, directly or not, and the paths themselves.
    ReferrersClosure,
}

/// Orders items as Nix 2.8's `topoSortPaths`, reversed: every item after the items it refers
/// to among them, ties broken by a depth-first walk in the byte order of base names (Nix's
/// order of store paths), children likewise. References outside `items` and references to
/// the item itself are ignored. Fails with a path on a cycle.
pub(crate) fn references_first<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    children: impl Fn(&T) -> Vec<String>,
) -> Result<Vec<T>, String> {
    let mut by_key: BTreeMap<String, (T, Vec<String>)> = BTreeMap::new();
    for item in items {
        let mut edges = children(&item);
        let name = key(&item);
        edges.retain(|edge| edge != &name);
        edges.sort();
        edges.dedup();
        by_key.insert(name, (item, edges));
    }
    let keys: Vec<String> = by_key.keys().cloned().collect();
    let mut visited: BTreeSet<String> = BTreeSet::new();
    let mut order: Vec<String> = Vec::new();
    for start in keys {
        if visited.contains(&start) {
            continue;
        }
        visited.insert(start.clone());
        // (item, index of the next child to visit); the stack is the current chain of parents.
        let mut stack: Vec<(String, usize)> = vec![(start, 0)];
        let mut on_stack: BTreeSet<String> = stack.iter().map(|(name, _)| name.clone()).collect();
        while let Some((current, next)) = stack.last_mut() {
            let child = by_key
                .get(current.as_str())
                .and_then(|(_, edges)| edges.get(*next))
                .cloned();
            *next += 1;
            match child {
                Some(child) if !by_key.contains_key(&child) => {}
                Some(child) if on_stack.contains(&child) => return Err(child),
                Some(child) if visited.contains(&child) => {}
                Some(child) => {
                    visited.insert(child.clone());
                    on_stack.insert(child.clone());
                    stack.push((child, 0));
                }
                None => {
                    let name = current.clone();
                    stack.pop();
                    on_stack.remove(&name);
                    order.push(name);
                }
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|name| by_key.remove(&name).map(|(item, _)| item))
        .collect())
}

/// [`references_first`] for path information.
pub(crate) fn sort_infos(infos: Vec<PathInfo>) -> Result<Vec<PathInfo>, TransferError> {
    references_first(
        infos,
        |info| info.path.base_name(),
        |info| info.references.iter().map(StorePath::base_name).collect(),
    )
    .map_err(|path| TransferError::Cycle { path })
}

/// Lexically normalises an absolute path, as Nix's `absPath` and `canonPath` do without
/// resolving symlinks: `.` dropped, `..` removes the previous component.
fn normalise(path: &Path) -> PathBuf {
    let mut normal = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => normal.push(part),
            Component::ParentDir => {
                normal.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    normal
}

impl EmbeddedStore {
    /// The registration of `path`, or [`TransferError::NotValid`].
    pub(crate) fn require_info(&self, path: &StorePath) -> Result<PathInfo, TransferError> {
        self.path_info(path)?
            .ok_or_else(|| TransferError::NotValid {
                path: path.to_string(),
                store: self.root_description(),
            })
    }

    /// How errors name this store: its root.
    pub(crate) fn root_description(&self) -> String {
        let root = self
            .store_directory
            .parent()
            .and_then(Path::parent)
            .unwrap_or(&self.store_directory);
        format!("root `{}`", root.display())
    }

    /// The closure of `paths` under references, every path with its registration, in Nix's
    /// order (references first). Every path must be valid.
    pub fn closure(&self, paths: &[StorePath]) -> Result<Vec<PathInfo>, TransferError> {
        let mut found: BTreeMap<StorePath, PathInfo> = BTreeMap::new();
        let mut pending: Vec<StorePath> = paths.to_vec();
        while let Some(path) = pending.pop() {
            if found.contains_key(&path) {
                continue;
            }
            let info = self.require_info(&path)?;
            pending.extend(
                info.references
                    .iter()
                    .filter(|reference| !found.contains_key(*reference))
                    .cloned(),
            );
            found.insert(path, info);
        }
        sort_infos(found.into_values().collect())
    }

    /// What `nix-store --query` lists for `paths` (every one valid), in its order.
    pub fn query(&self, query: Query, paths: &[StorePath]) -> Result<Vec<PathInfo>, TransferError> {
        let infos: Vec<PathInfo> = match query {
            Query::Requisites => return self.closure(paths),
            Query::References => {
                let mut references = BTreeSet::new();
                for path in paths {
                    references.extend(self.require_info(path)?.references);
                }
                references
                    .iter()
                    .map(|path| self.require_info(path))
                    .collect::<Result<_, _>>()?
            }
            Query::Referrers | Query::ReferrersClosure => {
                for path in paths {
                    self.require_info(path)?;
                }
                let mut all = Vec::new();
                for path in self.valid_paths()? {
                    if let Some(info) = self.path_info(&path)? {
                        all.push(info);
                    }
                }
                let mut selected: BTreeSet<StorePath> = if query == Query::ReferrersClosure {
                    paths.iter().cloned().collect()
                } else {
                    BTreeSet::new()
                };
                let mut targets: BTreeSet<StorePath> = paths.iter().cloned().collect();
                loop {
                    let mut added = BTreeSet::new();
                    for info in &all {
                        if !selected.contains(&info.path)
                            && info
                                .references
                                .iter()
                                .any(|reference| targets.contains(reference))
                        {
                            added.insert(info.path.clone());
                        }
                    }
                    if added.is_empty() || query == Query::Referrers {
                        selected.extend(added);
                        break;
                    }
                    targets.clone_from(&added);
                    selected.extend(added);
                }
                all.into_iter()
                    .filter(|info| selected.contains(&info.path))
                    .collect()
            }
        };
        sort_infos(infos)
    }

    /// The store path an argument leads to, as `nix-store` finds it: the argument made
    /// absolute, symlinks followed while it is outside the store, then the store path it lies
    /// in (`/nix/store/…-hello/bin/hello` leads to `/nix/store/…-hello`).
    pub fn follow_links_to_store_path(&self, argument: &Path) -> Result<StorePath, TransferError> {
        let not_in_store = || TransferError::NotInStore {
            path: argument.to_owned(),
            store_dir: self.store_dir.to_string(),
        };
        let mut path = normalise(
            &std::path::absolute(argument)
                .map_err(super::transfer::transfer_io(argument, "resolve"))?,
        );
        let store = Path::new(self.store_dir.as_str());
        for _ in 0..MAX_LINKS {
            if path.starts_with(store) && path != store {
                break;
            }
            let Ok(target) = std::fs::read_link(&path) else {
                break;
            };
            let directory = path.parent().unwrap_or(Path::new("/")).to_owned();
            path = normalise(&directory.join(target));
        }
        // Failing that, the argument's real path inside the store directory on disk (a root
        // reached through a symlink, or a root opened as a chroot store of another directory).
        let relative = match path.strip_prefix(store) {
            Ok(relative) => relative.to_owned(),
            Err(_) => std::fs::canonicalize(argument)
                .ok()
                .and_then(|real| {
                    real.strip_prefix(&self.store_directory)
                        .ok()
                        .map(Path::to_owned)
                })
                .ok_or_else(not_in_store)?,
        };
        let base_name = relative
            .components()
            .next()
            .and_then(|component| component.as_os_str().to_str())
            .ok_or_else(not_in_store)?;
        Ok(StorePath::from_base_name(self.store_dir.clone(), base_name)
            .map_err(StoreError::from)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(items: &[(&str, &[&str])]) -> Result<Vec<String>, String> {
        let items: Vec<(String, Vec<String>)> = items
            .iter()
            .map(|(name, children)| {
                (
                    (*name).to_owned(),
                    children.iter().map(|child| (*child).to_owned()).collect(),
                )
            })
            .collect();
        references_first(items, |item| item.0.clone(), |item| item.1.clone())
            .map(|items| items.into_iter().map(|item| item.0).collect())
    }

    #[test]
    fn orders_as_nix_store_export_does() {
        // `nix-store --export $(nix-store -qR d top)` in Nix 2.8 wrote a, t, leaf, d, top.
        let order = sorted(&[
            ("4klw-t", &["abpg-a"]),
            ("6v81-d", &["6v81-d", "wbvp-leaf"]),
            ("abpg-a", &[]),
            ("apmb-top", &["4klw-t", "abpg-a"]),
            ("wbvp-leaf", &[]),
        ]);
        assert_eq!(
            order,
            Ok(["abpg-a", "4klw-t", "wbvp-leaf", "6v81-d", "apmb-top"]
                .map(str::to_owned)
                .to_vec())
        );
    }

    #[test]
    fn ignores_references_outside_the_items() {
        assert_eq!(
            sorted(&[("b", &["a", "z"]), ("a", &[])]),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
    }

    #[test]
    fn reports_a_cycle() {
        assert!(sorted(&[("a", &["b"]), ("b", &["a"])]).is_err());
    }

    #[test]
    fn deep_chains_do_not_recurse() {
        let names: Vec<String> = (0..100_000).map(|index| format!("{index:06}")).collect();
        let items: Vec<(String, Vec<String>)> = names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                (
                    name.clone(),
                    names.get(index + 1).cloned().into_iter().collect(),
                )
            })
            .collect();
        let order = references_first(items, |item| item.0.clone(), |item| item.1.clone())
            .expect("no cycle");
        assert_eq!(order.first().map(|item| item.0.as_str()), Some("099999"));
    }

    #[test]
    fn normalises_lexically() {
        assert_eq!(normalise(Path::new("/a/./b/../c//d")), Path::new("/a/c/d"));
        assert_eq!(normalise(Path::new("/../a")), Path::new("/a"));
    }
}
