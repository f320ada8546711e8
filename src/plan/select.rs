//! Choosing packages from a catalog with `nix-env`'s rules (`filterBySelector` in Nix 2.8).
//!
//! Selectors are applied in command-line order; each collects every matching candidate in
//! enumeration order, optionally reduced to one per package name ("newest only": system, then
//! priority with default 0, then version, ties to the earlier candidate), and duplicates across
//! selectors are dropped. A selector other than `*` that matched nothing is an error, with up to
//! three "maybe you meant" names. Pure: candidates come in as a slice, indices come out.

use crate::model::catalog::{CatalogEntry, EntryRef};
use crate::selector::{Selector, SelectorError};
use crate::version::compare_versions;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

/// What selection needs to know about a package: its name, system and priority.
///
/// Implemented for decoded entries and for [`EntryRef`] views into a packed catalog, so a query
/// over a large catalog never decodes entries it does not print.
pub trait Candidate {
    /// The full derivation name, `NAME-VERSION`.
    fn full_name(&self) -> &str;
    /// The system, or `unknown` when the source gave none.
    fn system_or_unknown(&self) -> &str;
    /// `meta.priority` as `queryMetaInt("priority", 0)` reads it.
    fn selection_priority(&self) -> i64;

    /// The package name part of the full name.
    fn package_name(&self) -> &str {
        crate::version::split_drv_name(self.full_name()).0
    }

    /// The version part of the full name.
    fn version(&self) -> &str {
        crate::version::split_drv_name(self.full_name()).1
    }
}

impl Candidate for &CatalogEntry {
    fn full_name(&self) -> &str {
        &self.name
    }
    fn system_or_unknown(&self) -> &str {
        CatalogEntry::system_or_unknown(self)
    }
    fn selection_priority(&self) -> i64 {
        CatalogEntry::selection_priority(self)
    }
}

impl Candidate for EntryRef<'_> {
    fn full_name(&self) -> &str {
        self.name()
    }
    fn system_or_unknown(&self) -> &str {
        EntryRef::system_or_unknown(self)
    }
    fn selection_priority(&self) -> i64 {
        EntryRef::selection_priority(self)
    }
}

/// Why a selection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    /// A selector could not be compiled.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// A selector matched no candidate.
    #[error("{}", NoMatchDisplay { selector, suggestions })]
    NoMatch {
        /// The selector as written.
        selector: String,
        /// Package names starting with the selector's name part, sorted (at most three).
        suggestions: Vec<String>,
    },
}

/// Renders [`SelectionError::NoMatch`] in `nix-env`'s words, suggestion lines included.
struct NoMatchDisplay<'a> {
    selector: &'a str,
    suggestions: &'a [String],
}

impl fmt::Display for NoMatchDisplay<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "selector '{}' matches no derivations",
            self.selector
        )?;
        if !self.suggestions.is_empty() {
            formatter.write_str(", maybe you meant:")?;
            for suggestion in self.suggestions {
                // Nix indents continuation lines of an error by the width of `error: `.
                write!(formatter, "\n       {suggestion}")?;
            }
        }
        Ok(())
    }
}

/// The outcome of a selection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selected {
    /// Indices into the candidate slice, in the order `nix-env` would process them.
    pub indices: Vec<usize>,
    /// Warnings `nix-env` prints (the "multiple derivations named" tie warning).
    pub warnings: Vec<String>,
}

/// `filterBySelector`: applies `selectors` (none means `*`) to `candidates`.
///
/// `this_system` is the platform that wins ties before priority and version are looked at
/// (Nix's `settings.thisSystem`). Regular expressions are compiled only when there is at least
/// one candidate, as Nix compiles them lazily on first use.
pub fn filter_by_selectors<C: Candidate>(
    candidates: &[C],
    selectors: &[&str],
    newest_only: bool,
    this_system: &str,
) -> Result<Selected, SelectionError> {
    let wildcard = ["*"];
    let selectors = if selectors.is_empty() {
        &wildcard[..]
    } else {
        selectors
    };
    let mut selected = Selected::default();
    let mut taken = HashSet::new();
    let mut hits = vec![0usize; selectors.len()];
    for (position, raw) in selectors.iter().enumerate() {
        if candidates.is_empty() {
            continue;
        }
        let selector = Selector::new(raw)?;
        let mut matches: Vec<usize> = candidates
            .iter()
            .enumerate()
            .filter(|(_, entry)| selector.matches_full_name(entry.full_name()))
            .map(|(index, _)| index)
            .collect();
        hits[position] = matches.len();
        if newest_only {
            matches = pick_newest(candidates, &matches, this_system, &mut selected.warnings);
        }
        for index in matches {
            if taken.insert(index) {
                selected.indices.push(index);
            }
        }
    }
    for (raw, count) in selectors.iter().zip(&hits) {
        if *count == 0 && *raw != "*" {
            return Err(SelectionError::NoMatch {
                selector: (*raw).to_owned(),
                suggestions: suggestions(candidates, raw),
            });
        }
    }
    Ok(selected)
}

/// Reduces matches to one per package name, as `nix-env -i` does, returning them sorted by
/// package name (bytewise, as Nix's `std::map` iterates).
///
/// This is a left fold over the matches in enumeration order, each compared against the best so
/// far; it is not a total order (two foreign systems are "no decision"), so the fold itself is
/// the rule.
#[must_use]
pub fn pick_newest<C: Candidate>(
    candidates: &[C],
    matches: &[usize],
    this_system: &str,
    warnings: &mut Vec<String>,
) -> Vec<usize> {
    let mut newest: BTreeMap<&[u8], usize> = BTreeMap::new();
    // Nix records ties under the *full* name but looks them up under the package name, so the
    // warning only ever fires for names without a version. Reproduced on purpose.
    let mut tied_full_names: HashSet<&str> = HashSet::new();
    for &index in matches {
        let candidate = &candidates[index];
        let package_name = candidate.package_name().as_bytes();
        let decision = match newest.get(package_name) {
            None => Ordering::Greater,
            Some(&best_index) => {
                compare_candidates(candidate, &candidates[best_index], this_system)
            }
        };
        match decision {
            Ordering::Greater => {
                newest.insert(package_name, index);
                tied_full_names.remove(candidate.full_name());
            }
            Ordering::Equal => {
                tied_full_names.insert(candidate.full_name());
            }
            Ordering::Less => {}
        }
    }
    for package_name in newest.keys() {
        let package_name = String::from_utf8_lossy(package_name);
        if tied_full_names.contains(package_name.as_ref()) {
            warnings.push(format!(
                "there are multiple derivations named '{package_name}'; using the first one"
            ));
        }
    }
    newest.into_values().collect()
}

/// Whether `candidate` beats `best`: system first, then priority, then version.
fn compare_candidates<C: Candidate>(candidate: &C, best: &C, this_system: &str) -> Ordering {
    let (system, best_system) = (candidate.system_or_unknown(), best.system_or_unknown());
    let by_system = if system == best_system {
        Ordering::Equal
    } else if system == this_system {
        Ordering::Greater
    } else if best_system == this_system {
        Ordering::Less
    } else {
        Ordering::Equal
    };
    by_system
        .then_with(|| compare_priorities(candidate, best))
        .then_with(|| compare_versions(candidate.version(), best.version()))
}

/// Nix's `comparePriorities`: `priority(best) - priority(candidate)`, computed on 64-bit
/// integers and returned through a C `int`, so a difference that is a multiple of 2^32 counts as
/// a tie. Lower numbers win.
fn compare_priorities<C: Candidate>(candidate: &C, best: &C) -> Ordering {
    let difference = best
        .selection_priority()
        .wrapping_sub(candidate.selection_priority());
    #[expect(
        clippy::cast_possible_truncation,
        reason = "Nix returns this difference through a 32-bit int"
    )]
    let truncated = difference as i32;
    truncated.cmp(&0)
}

/// Up to three package names that start with the selector's name part (a plain prefix, not a
/// regex): the first three distinct ones in enumeration order, returned sorted.
fn suggestions<C: Candidate>(candidates: &[C], raw: &str) -> Vec<String> {
    let prefix = crate::version::split_drv_name(raw).0;
    let mut found = BTreeSet::new();
    for entry in candidates {
        if found.len() == 3 {
            break;
        }
        let name = entry.package_name();
        if name.starts_with(prefix) {
            found.insert(name.to_owned());
        }
    }
    found.into_iter().collect()
}

/// Sorts query rows the way `nix-env -q` does: by full name, comparing bytes ASCII-upper-cased,
/// with libstdc++'s `std::sort`, so that rows whose names tie come out in Nix's order too.
pub fn sort_for_query<C: Candidate>(candidates: &[C], indices: &mut [usize]) {
    super::cxx_sort::cxx_sort(indices, |&a, &b| {
        compare_names_case_insensitive(candidates[a].full_name(), candidates[b].full_name())
            == Ordering::Less
    });
}

/// Nix's `cmpElemByName`: a lexicographic comparison of `toupper`'d bytes.
#[must_use]
pub fn compare_names_case_insensitive(a: &str, b: &str) -> Ordering {
    a.bytes()
        .map(|byte| byte.to_ascii_uppercase())
        .cmp(b.bytes().map(|byte| byte.to_ascii_uppercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};
    use std::collections::BTreeMap as Outputs;

    const HOST: &str = "x86_64-linux";

    fn entry(attr_path: &str, name: &str, system: &str, priority: Option<Value>) -> CatalogEntry {
        let mut meta = Map::new();
        if let Some(priority) = priority {
            meta.insert("priority".to_owned(), priority);
        }
        CatalogEntry {
            attr_path: attr_path.to_owned(),
            name: name.to_owned(),
            system: Some(system.to_owned()),
            output_name: "out".to_owned(),
            outputs: Outputs::new(),
            meta,
            trees: Outputs::new(),
        }
    }

    /// Nix's own `tests/user-envs.nix` fixture, in attribute (enumeration) order.
    fn user_envs() -> Vec<CatalogEntry> {
        vec![
            entry("0", "foo-1.0", HOST, None),
            entry("1", "foo-2.0pre1", HOST, None),
            entry("2", "bar-0.1", HOST, None),
            entry("3", "foo-2.0", HOST, None),
            entry("4", "bar-0.1.1", HOST, None),
            entry("5", "foo-0.1", HOST, Some(Value::from(10))),
            entry("6", "baz", HOST, None),
        ]
    }

    fn names(entries: &[&CatalogEntry], selected: &Selected) -> Vec<String> {
        selected
            .indices
            .iter()
            .map(|&i| entries[i].name.clone())
            .collect()
    }

    fn select(
        entries: &[CatalogEntry],
        selectors: &[&str],
        newest: bool,
    ) -> Result<Vec<String>, SelectionError> {
        let refs: Vec<&CatalogEntry> = entries.iter().collect();
        filter_by_selectors(&refs, selectors, newest, HOST).map(|s| names(&refs, &s))
    }

    #[test]
    fn install_star_takes_one_per_name_sorted_by_name() {
        assert_eq!(
            select(&user_envs(), &["*"], true).expect("ok"),
            ["bar-0.1.1", "baz", "foo-2.0"]
        );
    }

    #[test]
    fn install_name_takes_newest() {
        assert_eq!(
            select(&user_envs(), &["foo"], true).expect("ok"),
            ["foo-2.0"]
        );
    }

    #[test]
    fn default_priority_is_zero_when_choosing() {
        // foo-3.0 has priority 5, foo-1.0 none: 0 beats 5, so the older one wins.
        let entries = vec![
            entry("a", "foo-1.0", HOST, None),
            entry("b", "foo-3.0", HOST, Some(Value::from(5))),
            entry("c", "qux-1.0", HOST, Some(Value::from(5))),
            entry("d", "qux-2.0", HOST, Some(Value::from("7"))),
            entry("e", "neg-1.0", HOST, Some(Value::from(-3))),
            entry("f", "neg-2.0", HOST, None),
        ];
        assert_eq!(
            select(&entries, &["foo", "qux", "neg"], true).expect("ok"),
            ["foo-1.0", "qux-1.0", "neg-1.0"]
        );
    }

    #[test]
    fn system_preference_comes_before_version() {
        let entries = vec![
            entry("a", "sys2-2.0", "other-system", None),
            entry("b", "sys2-1.0", HOST, None),
        ];
        assert_eq!(select(&entries, &["sys2"], true).expect("ok"), ["sys2-1.0"]);
    }

    #[test]
    fn two_foreign_systems_fall_through_to_version() {
        let entries = vec![
            entry("a", "p-1.0", "aarch64-darwin", None),
            entry("b", "p-2.0", "riscv64-linux", None),
        ];
        assert_eq!(select(&entries, &["p"], true).expect("ok"), ["p-2.0"]);
    }

    #[test]
    fn priority_difference_is_truncated_to_32_bits() {
        // 2^32 apart: Nix's int return value makes this a tie, so version decides.
        let entries = vec![
            entry("a", "t-1.0", HOST, Some(Value::from(0))),
            entry("b", "t-2.0", HOST, Some(Value::from(1_i64 << 32))),
        ];
        assert_eq!(select(&entries, &["t"], true).expect("ok"), ["t-2.0"]);
    }

    #[test]
    fn ties_keep_the_first_and_warn_only_without_version() {
        let entries = [
            entry("a", "dup", HOST, None),
            entry("b", "dup", HOST, None),
            entry("c", "ver-1.0", HOST, None),
            entry("d", "ver-1.0", HOST, None),
        ];
        let refs: Vec<&CatalogEntry> = entries.iter().collect();
        let selected = filter_by_selectors(&refs, &["dup", "ver"], true, HOST).expect("ok");
        assert_eq!(selected.indices, [0, 2]);
        assert_eq!(
            selected.warnings,
            ["there are multiple derivations named 'dup'; using the first one"]
        );
    }

    #[test]
    fn query_keeps_every_match_once() {
        assert_eq!(
            select(&user_envs(), &["foo-1.0", "foo.*"], false).expect("ok"),
            ["foo-1.0", "foo-2.0pre1", "foo-2.0", "foo-0.1"]
        );
    }

    #[test]
    fn star_version_selects_exact_versions() {
        let entries = vec![
            entry("a", "x-1.0", HOST, None),
            entry("b", "y-1.0", HOST, None),
            entry("c", "z-1.00", HOST, None),
        ];
        assert_eq!(
            select(&entries, &["*-1.0"], false).expect("ok"),
            ["x-1.0", "y-1.0"]
        );
    }

    #[test]
    fn no_match_suggests_the_first_three_names_sorted() {
        let entries = vec![
            entry("0", "ae-1", HOST, None),
            entry("1", "ad-1", HOST, None),
            entry("2", "ad-2", HOST, None),
            entry("3", "ac-1", HOST, None),
            entry("4", "ab-1", HOST, None),
        ];
        let error = select(&entries, &["a"], false).expect_err("no match");
        assert_eq!(
            error.to_string(),
            "selector 'a' matches no derivations, maybe you meant:\n       ac\n       ad\n       ae"
        );
        let error = select(&entries, &["zz"], false).expect_err("no match");
        assert_eq!(error.to_string(), "selector 'zz' matches no derivations");
    }

    #[test]
    fn first_failing_selector_is_reported() {
        let error = select(&user_envs(), &["*", "nonexist", "other"], false).expect_err("fails");
        assert!(error.to_string().starts_with("selector 'nonexist'"));
    }

    #[test]
    fn invalid_regex_is_an_error_only_with_candidates() {
        assert!(matches!(
            select(&user_envs(), &["(foo"], false),
            Err(SelectionError::Selector(_))
        ));
        assert!(matches!(
            select(&[], &["(foo"], false),
            Err(SelectionError::NoMatch { .. })
        ));
    }

    #[test]
    fn query_sort_is_ascii_case_insensitive() {
        let entries: Vec<CatalogEntry> = ["_x-1", "Zed-1", "abd-0", "ABC-2", "abc-1", "1up-1"]
            .iter()
            .map(|name| entry(name, name, HOST, None))
            .collect();
        let refs: Vec<&CatalogEntry> = entries.iter().collect();
        let mut indices: Vec<usize> = (0..refs.len()).collect();
        sort_for_query(&refs, &mut indices);
        let sorted: Vec<&str> = indices.iter().map(|&i| refs[i].name.as_str()).collect();
        assert_eq!(
            sorted,
            ["1up-1", "abc-1", "ABC-2", "abd-0", "Zed-1", "_x-1"]
        );
    }
}
