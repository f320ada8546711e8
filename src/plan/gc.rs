//! Which store paths garbage collection may delete, and in what order.
//!
//! Pure: given the valid paths with their references and the roots, computes the live closure,
//! the dead rest, and an order for deleting the dead that removes every referrer before what it
//! refers to (the store refuses to delete a path something valid still refers to).

use std::collections::{BTreeMap, BTreeSet};

/// The outcome of a collection plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection<P> {
    /// Paths reachable from a root, sorted.
    pub live: Vec<P>,
    /// Paths to delete, referrers before their references.
    pub dead: Vec<P>,
}

/// Splits `references` (every valid path and what it refers to) into live and dead paths.
///
/// Roots that are not valid paths are ignored (a root may point at a path deleted by hand);
/// references to paths that are not valid are ignored too.
#[must_use]
pub fn plan_collection<P: Ord + Clone>(
    references: &BTreeMap<P, Vec<P>>,
    roots: &BTreeSet<P>,
) -> Collection<P> {
    let mut live = BTreeSet::new();
    let mut pending: Vec<&P> = roots
        .iter()
        .filter(|root| references.contains_key(*root))
        .collect();
    while let Some(path) = pending.pop() {
        if !live.insert(path.clone()) {
            continue;
        }
        for reference in references.get(path).into_iter().flatten() {
            if references.contains_key(reference) && !live.contains(reference) {
                pending.push(reference);
            }
        }
    }
    let dead: BTreeSet<&P> = references
        .keys()
        .filter(|path| !live.contains(*path))
        .collect();
    // How many dead referrers still point at each dead path; a path is deletable at zero.
    let mut referrer_count: BTreeMap<&P, usize> = dead.iter().map(|path| (*path, 0)).collect();
    for path in &dead {
        for reference in references.get(*path).into_iter().flatten() {
            if reference != *path
                && let Some(count) = referrer_count.get_mut(reference)
            {
                *count += 1;
            }
        }
    }
    let mut ready: Vec<&P> = referrer_count
        .iter()
        .filter(|(_, count)| **count == 0)
        .map(|(path, _)| *path)
        .rev()
        .collect();
    let mut order = Vec::with_capacity(dead.len());
    let mut placed = BTreeSet::new();
    while let Some(path) = ready.pop() {
        order.push(path.clone());
        placed.insert(path);
        for reference in references.get(path).into_iter().flatten() {
            if reference != path
                && let Some(count) = referrer_count.get_mut(reference)
            {
                *count -= 1;
                if *count == 0 {
                    ready.push(reference);
                }
            }
        }
    }
    // A reference cycle among dead paths cannot be ordered; Nix's store has none (a path's
    // hash cannot contain another path that contains it), so append any remainder as found.
    for path in dead {
        if !placed.contains(path) {
            order.push(path.clone());
        }
    }
    Collection {
        live: live.into_iter().collect(),
        dead: order,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn graph(
        edges: &[(&'static str, &[&'static str])],
    ) -> BTreeMap<&'static str, Vec<&'static str>> {
        edges
            .iter()
            .map(|(path, references)| (*path, references.to_vec()))
            .collect()
    }

    #[test]
    fn keeps_the_closure_of_the_roots() {
        let references = graph(&[
            ("env-2", &["hello", "jq"]),
            ("env-1", &["hello-old"]),
            ("hello", &[]),
            ("jq", &["oniguruma"]),
            ("oniguruma", &[]),
            ("hello-old", &[]),
        ]);
        let collection = plan_collection(&references, &BTreeSet::from(["env-2", "missing"]));
        assert_eq!(collection.live, ["env-2", "hello", "jq", "oniguruma"]);
        assert_eq!(collection.dead, ["env-1", "hello-old"]);
    }

    #[test]
    fn no_roots_deletes_everything_referrers_first() {
        let references = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &[])]);
        let collection = plan_collection(&references, &BTreeSet::new());
        assert_eq!(collection.dead, ["a", "b", "c"]);
    }

    proptest! {
        #[test]
        fn dead_order_deletes_referrers_first(
            edges in proptest::collection::vec((0u8..12, 0u8..12), 0..30),
            roots in proptest::collection::btree_set(0u8..12, 0..4),
        ) {
            // Only edges from higher to lower numbers: an acyclic graph, as in a real store.
            let mut references: BTreeMap<u8, Vec<u8>> = (0..12).map(|n| (n, Vec::new())).collect();
            for (from, to) in edges {
                if from > to {
                    references.entry(from).or_default().push(to);
                }
            }
            let collection = plan_collection(&references, &roots);
            let live: BTreeSet<u8> = collection.live.iter().copied().collect();
            // Every reference of a live path is live.
            for path in &live {
                for reference in &references[path] {
                    prop_assert!(live.contains(reference));
                }
            }
            // Live and dead partition the store, and no root is dead.
            prop_assert_eq!(live.len() + collection.dead.len(), references.len());
            for root in &roots {
                prop_assert!(live.contains(root));
            }
            // When a dead path is deleted, nothing still present refers to it.
            let mut present: BTreeSet<u8> = references.keys().copied().collect();
            for path in &collection.dead {
                present.remove(path);
                for other in &present {
                    prop_assert!(!references[other].contains(path));
                }
            }
        }
    }
}
