//! What `nix-env -i`, `-e`, `-u` and `--set-flag` do to the list of installed elements, as
//! Nix 2.8's `installDerivations`, `uninstallDerivations`, `upgradeDerivations` and
//! `opSetFlag` do it: which elements stay, go or change, in which order the new manifest lists
//! them, and the lines printed on the way.
//!
//! Pure: elements and candidates come in as values (only their names, priorities, `keep`
//! flags and output paths matter); the caller turns the outcome into edits of `profile.toml`.
//!
//! Orders matter, since `manifest.nix` keeps them (its index is what `-q --json` keys by, and a
//! different order is a different environment): `-i` lists the new elements first, then the
//! kept ones; `-u` and `--set-flag` keep the order; `-e` partitions the list the way
//! libstdc++'s `std::partition` does, which is not stable (`a b c d e` minus `b` is
//! `a e c d`).

use crate::plan::select::SelectionError;
use crate::selector::{Selector, SelectorError};
use crate::version::{compare_versions, split_drv_name};
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// What the operations need to know about an installed element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The full name.
    pub name: String,
    /// Its `outPath`.
    pub out_path: String,
    /// `meta.priority` as `queryMetaInt("priority", 0)` reads it.
    pub priority: i64,
    /// `meta.keep` is `true` or `"true"`.
    pub keep: bool,
}

/// An element `-i` is about to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewElement {
    /// The full name (after `--force-name`).
    pub name: String,
}

/// The outcome of [`install`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstallOutcome {
    /// Indices of the installed elements that stay, in their order (they follow the new ones).
    pub kept: Vec<usize>,
    /// Indices of the installed elements replaced (or, with `-r`, dropped).
    pub replaced: Vec<usize>,
    /// The lines printed (`replacing old '…'`, then `installing '…'`).
    pub messages: Vec<String>,
}

/// `installDerivations` after the new elements are chosen: an installed element whose package
/// name is among the new ones' is replaced unless it has `keep` or `-P` was given; `-r` drops
/// everything and prints nothing.
#[must_use]
pub fn install(
    installed: &[Installed],
    new: &[NewElement],
    preserve_installed: bool,
    remove_all: bool,
) -> InstallOutcome {
    let mut outcome = InstallOutcome::default();
    if remove_all {
        outcome.replaced = (0..installed.len()).collect();
        return outcome;
    }
    let new_names: BTreeSet<&str> = new
        .iter()
        .map(|element| split_drv_name(&element.name).0)
        .collect();
    for (index, element) in installed.iter().enumerate() {
        let package = split_drv_name(&element.name).0;
        if !preserve_installed && new_names.contains(package) && !element.keep {
            outcome
                .messages
                .push(format!("replacing old '{}'", element.name));
            outcome.replaced.push(index);
        } else {
            outcome.kept.push(index);
        }
    }
    for element in new {
        outcome
            .messages
            .push(format!("installing '{}'", element.name));
    }
    outcome
}

/// How `-e` selects: a selector, or (an argument with `/`) a store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// A `nix-env` selector.
    Selector(String),
    /// The store path an argument resolved to: elements with this `outPath` go.
    Path(String),
}

/// The outcome of [`uninstall`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UninstallOutcome {
    /// Indices of the elements that stay, in the new order.
    pub remaining: Vec<usize>,
    /// Indices of the elements removed.
    pub removed: Vec<usize>,
    /// Lines printed: `uninstalling '…'`, and warnings (without `warning: `) for selectors that
    /// removed nothing, in order; see [`Line`].
    pub lines: Vec<Line>,
}

/// A line an operation prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// An informational line.
    Info(String),
    /// A warning (printed after `warning: `).
    Warning(String),
}

/// libstdc++'s `std::partition` over bidirectional iterators: elements for which `keep` holds
/// first, then the others, in the order its swaps leave them. Returns the split point.
fn cxx_partition<T>(items: &mut [T], mut keep: impl FnMut(&T) -> bool) -> usize {
    let (mut first, mut last) = (0, items.len());
    loop {
        loop {
            if first == last {
                return first;
            }
            if keep(&items[first]) {
                first += 1;
            } else {
                break;
            }
        }
        last -= 1;
        loop {
            if first == last {
                return first;
            }
            if keep(&items[last]) {
                break;
            }
            last -= 1;
        }
        items.swap(first, last);
        first += 1;
    }
}

/// `uninstallDerivations`: each selector in turn partitions what is left; what it matched goes.
/// `keep` is not honoured, as in Nix.
pub fn uninstall(
    installed: &[Installed],
    removals: &[Removal],
) -> Result<UninstallOutcome, SelectorError> {
    let mut working: Vec<usize> = (0..installed.len()).collect();
    let mut outcome = UninstallOutcome::default();
    for removal in removals {
        let split = match removal {
            Removal::Path(path) => {
                cxx_partition(&mut working, |&index| installed[index].out_path != *path)
            }
            Removal::Selector(raw) => {
                // Nix compiles the regex on first use: nothing installed, no error.
                if working.is_empty() {
                    0
                } else {
                    let selector = Selector::new(raw)?;
                    cxx_partition(&mut working, |&index| {
                        !selector.matches_full_name(&installed[index].name)
                    })
                }
            }
        };
        if split == working.len() {
            let shown = match removal {
                Removal::Selector(raw) => raw.clone(),
                Removal::Path(path) => path.clone(),
            };
            outcome.lines.push(Line::Warning(format!(
                "selector '{shown}' matched no installed derivations"
            )));
        }
        for &index in &working[split..] {
            outcome.lines.push(Line::Info(format!(
                "uninstalling '{}'",
                installed[index].name
            )));
            outcome.removed.push(index);
        }
        working.truncate(split);
    }
    outcome.remaining = working;
    Ok(outcome)
}

/// The outcome of [`set_flag`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetFlagOutcome {
    /// Indices of the elements whose flag is set, in manifest order.
    pub flagged: Vec<usize>,
    /// `setting flag on '…'` lines.
    pub messages: Vec<String>,
}

/// `opSetFlag`: each element takes the flag from the first selector that matches it; then a
/// selector (other than `*`) that took nothing is an error, without suggestions, and nothing is
/// written.
pub fn set_flag(
    installed: &[Installed],
    selectors: &[String],
) -> Result<SetFlagOutcome, SelectionError> {
    let mut compiled: Vec<Option<Selector>> = vec![None; selectors.len()];
    let mut hits = vec![0_usize; selectors.len()];
    let mut outcome = SetFlagOutcome::default();
    for (index, element) in installed.iter().enumerate() {
        for (position, raw) in selectors.iter().enumerate() {
            if compiled[position].is_none() {
                compiled[position] = Some(Selector::new(raw)?);
            }
            let Some(selector) = &compiled[position] else {
                continue;
            };
            if selector.matches_full_name(&element.name) {
                outcome
                    .messages
                    .push(format!("setting flag on '{}'", element.name));
                hits[position] += 1;
                outcome.flagged.push(index);
                break;
            }
        }
    }
    for (raw, count) in selectors.iter().zip(&hits) {
        if *count == 0 && raw != "*" {
            return Err(SelectionError::NoMatch {
                selector: raw.clone(),
                suggestions: Vec::new(),
            });
        }
    }
    Ok(outcome)
}

/// Which versions `-u` may move to (see [`crate::compat::args::UpgradeKind`]).
pub use crate::compat::args::UpgradeKind;

/// A package `-u` may move an installed element to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeCandidate {
    /// The full name.
    pub name: String,
    /// `meta.priority` as selection reads it (default 0).
    pub priority: i64,
    /// Whether it is prebuilt (for `-b`).
    pub prebuilt: bool,
}

/// What `-u` does to one installed element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The installed element's index.
    pub installed: usize,
    /// The candidate's index.
    pub candidate: usize,
    /// The line printed (`upgrading 'A' to 'B'` or `downgrading …`).
    pub message: String,
}

/// Nix's `comparePriorities(a, b)`: `priority(b) - priority(a)` through a C `int`.
fn compare_priorities(a: i64, b: i64) -> i32 {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "Nix returns this difference through a 32-bit int"
    )]
    let difference = b.wrapping_sub(a) as i32;
    difference
}

/// `upgradeDerivations`' choice for every installed element (in manifest order): among the
/// candidates of the same package name whose version `kind` allows and whose priority is not
/// worse than the element's, the best priority, then the newest version, ties to the first.
/// The element moves when the best candidate's output path differs from its own;
/// `candidate_out_path` gives that path (it may hash a tree, so it is asked only for the best).
/// Elements with `keep` are left alone. `allowed(element, candidate)` can rule candidates out
/// for one element (declenv honours an entry's version constraint).
pub fn upgrade(
    installed: &[Installed],
    candidates: &[UpgradeCandidate],
    kind: UpgradeKind,
    prebuilt_only: bool,
    mut allowed: impl FnMut(usize, usize) -> bool,
    mut candidate_out_path: impl FnMut(usize) -> Option<String>,
) -> Vec<Upgrade> {
    let mut upgrades = Vec::new();
    for (index, element) in installed.iter().enumerate() {
        if element.keep {
            continue;
        }
        let (package, version) = split_drv_name(&element.name);
        let mut best: Option<(usize, &str)> = None;
        for (position, candidate) in candidates.iter().enumerate() {
            if compare_priorities(element.priority, candidate.priority) > 0 {
                continue;
            }
            let (candidate_package, candidate_version) = split_drv_name(&candidate.name);
            if candidate_package != package || !allowed(index, position) {
                continue;
            }
            let order = compare_versions(version, candidate_version);
            let eligible = match kind {
                UpgradeKind::LessThan => order == Ordering::Less,
                UpgradeKind::LessOrEqual => order != Ordering::Greater,
                UpgradeKind::Equal => order == Ordering::Equal,
                UpgradeKind::Always => true,
            };
            if !eligible {
                continue;
            }
            let better = match best {
                None => true,
                Some((best_position, best_version)) => {
                    let by_priority =
                        compare_priorities(candidates[best_position].priority, candidate.priority);
                    if by_priority == 0 {
                        compare_versions(best_version, candidate_version) == Ordering::Less
                    } else {
                        by_priority < 0
                    }
                }
            };
            if better && (!prebuilt_only || candidate.prebuilt) {
                best = Some((position, candidate_version));
            }
        }
        if let Some((position, best_version)) = best
            && candidate_out_path(position).as_deref() != Some(element.out_path.as_str())
        {
            let action = if compare_versions(version, best_version) == Ordering::Greater {
                "downgrading"
            } else {
                "upgrading"
            };
            upgrades.push(Upgrade {
                installed: index,
                candidate: position,
                message: format!(
                    "{action} '{}' to '{}'",
                    element.name, candidates[position].name
                ),
            });
        }
    }
    upgrades
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn element(name: &str) -> Installed {
        Installed {
            name: name.to_owned(),
            out_path: format!("/nix/store/h-{name}"),
            priority: 0,
            keep: false,
        }
    }

    fn names(installed: &[Installed], indices: &[usize]) -> Vec<String> {
        indices.iter().map(|&i| installed[i].name.clone()).collect()
    }

    #[test]
    fn install_replaces_by_package_name_and_lists_new_first() {
        let installed = [element("foo-2.0"), element("bar-0.1")];
        let outcome = install(
            &installed,
            &[NewElement {
                name: "foo-1.0".to_owned(),
            }],
            false,
            false,
        );
        assert_eq!(names(&installed, &outcome.kept), ["bar-0.1"]);
        assert_eq!(names(&installed, &outcome.replaced), ["foo-2.0"]);
        assert_eq!(
            outcome.messages,
            ["replacing old 'foo-2.0'", "installing 'foo-1.0'"]
        );
    }

    #[test]
    fn keep_and_preserve_installed_replace_nothing() {
        let mut kept = element("foo-2.0");
        kept.keep = true;
        let installed = [kept, element("foo-0.1")];
        let new = [NewElement {
            name: "foo-1.0".to_owned(),
        }];
        let outcome = install(&installed, &new, false, false);
        assert_eq!(names(&installed, &outcome.kept), ["foo-2.0"]);
        assert_eq!(names(&installed, &outcome.replaced), ["foo-0.1"]);
        let outcome = install(&installed, &new, true, false);
        assert_eq!(outcome.kept, [0, 1]);
        assert_eq!(outcome.messages, ["installing 'foo-1.0'"]);
    }

    #[test]
    fn remove_all_drops_everything_silently() {
        let mut kept = element("foo-2.0");
        kept.keep = true;
        let outcome = install(
            &[kept, element("bar-1")],
            &[NewElement {
                name: "baz".to_owned(),
            }],
            false,
            true,
        );
        assert!(outcome.kept.is_empty());
        assert_eq!(outcome.replaced, [0, 1]);
        assert!(outcome.messages.is_empty());
    }

    #[rstest]
    #[case::middle(&["a-1", "b-1", "c-1", "d-1", "e-1"], &["b"], &["a-1", "e-1", "c-1", "d-1"], &["b-1"])]
    #[case::first(&["a-1", "b-1", "c-1"], &["a"], &["c-1", "b-1"], &["a-1"])]
    #[case::last(&["a-1", "b-1", "c-1"], &["c"], &["a-1", "b-1"], &["c-1"])]
    #[case::two(&["a-1", "b-1", "c-1", "d-1", "e-1"], &["b|d"], &["a-1", "e-1", "c-1"], &["d-1", "b-1"])]
    #[case::all(&["a-1", "b-1"], &["*"], &[], &["a-1", "b-1"])]
    #[case::none(&["a-1", "b-1"], &[], &["a-1", "b-1"], &[])]
    fn uninstall_partitions_as_libstdcxx(
        #[case] installed: &[&str],
        #[case] selectors: &[&str],
        #[case] remaining: &[&str],
        #[case] removed: &[&str],
    ) {
        let installed: Vec<Installed> = installed.iter().map(|name| element(name)).collect();
        let removals: Vec<Removal> = selectors
            .iter()
            .map(|selector| Removal::Selector((*selector).to_owned()))
            .collect();
        let outcome = uninstall(&installed, &removals).expect("valid selectors");
        assert_eq!(names(&installed, &outcome.remaining), remaining);
        assert_eq!(names(&installed, &outcome.removed), removed);
    }

    #[test]
    fn uninstall_warns_and_goes_on() {
        let installed = [element("a-1"), element("b-1")];
        let outcome = uninstall(
            &installed,
            &[
                Removal::Selector("zz".to_owned()),
                Removal::Path("/nix/store/h-b-1".to_owned()),
            ],
        )
        .expect("valid");
        assert_eq!(
            outcome.lines,
            [
                Line::Warning("selector 'zz' matched no installed derivations".to_owned()),
                Line::Info("uninstalling 'b-1'".to_owned()),
            ]
        );
        // An invalid regex is an error only when there is something to match.
        assert!(uninstall(&installed, &[Removal::Selector("(x".to_owned())]).is_err());
        assert!(uninstall(&[], &[Removal::Selector("(x".to_owned())]).is_ok());
    }

    #[test]
    fn set_flag_takes_the_first_matching_selector_and_fails_on_unused_ones() {
        let installed = [element("foo-1.0"), element("bar-1")];
        let outcome =
            set_flag(&installed, &["foo".to_owned(), "*".to_owned()]).expect("all selectors hit");
        assert_eq!(outcome.flagged, [0, 1]);
        assert_eq!(
            outcome.messages,
            ["setting flag on 'foo-1.0'", "setting flag on 'bar-1'"]
        );
        let error = set_flag(&installed, &["foo".to_owned(), "f.*".to_owned()])
            .expect_err("f.* took nothing");
        assert_eq!(error.to_string(), "selector 'f.*' matches no derivations");
        assert!(
            set_flag(&installed, &[])
                .expect("no selectors")
                .flagged
                .is_empty()
        );
    }

    fn candidate(name: &str, priority: i64) -> UpgradeCandidate {
        UpgradeCandidate {
            name: name.to_owned(),
            priority,
            prebuilt: true,
        }
    }

    /// The `up2.nix` experiment of the semantics reference.
    fn up2() -> (Vec<Installed>, Vec<UpgradeCandidate>) {
        let installed = vec![element("foo-1.0"), element("bar-1.0"), element("baz-1.0")];
        let candidates = vec![
            candidate("foo-0.1", -1),
            candidate("foo-1.0", 0),
            candidate("foo-2.0pre1", 0),
            candidate("foo-2.0", 0),
            candidate("foo-3.0", 10),
            candidate("bar-0.5", 0),
            candidate("baz-1.0", 0),
        ];
        (installed, candidates)
    }

    fn run_upgrade(kind: UpgradeKind) -> Vec<String> {
        let (installed, candidates) = up2();
        let paths = |position: usize| {
            let name = &candidates[position].name;
            // foo-1.0 is a rebuild (another path); baz-1.0 is the same path.
            Some(if name == "baz-1.0" {
                "/nix/store/h-baz-1.0".to_owned()
            } else {
                format!("/nix/store/new-{name}")
            })
        };
        upgrade(&installed, &candidates, kind, false, |_, _| true, paths)
            .into_iter()
            .map(|upgrade| upgrade.message)
            .collect()
    }

    #[test]
    fn upgrade_kinds_as_verified_with_nix() {
        assert_eq!(
            run_upgrade(UpgradeKind::LessThan),
            ["upgrading 'foo-1.0' to 'foo-2.0'"]
        );
        assert_eq!(
            run_upgrade(UpgradeKind::LessOrEqual),
            ["upgrading 'foo-1.0' to 'foo-2.0'"]
        );
        assert_eq!(
            run_upgrade(UpgradeKind::Equal),
            ["upgrading 'foo-1.0' to 'foo-1.0'"]
        );
        assert_eq!(
            run_upgrade(UpgradeKind::Always),
            [
                "downgrading 'foo-1.0' to 'foo-0.1'",
                "downgrading 'bar-1.0' to 'bar-0.5'"
            ]
        );
    }

    #[test]
    fn upgrade_leaves_kept_elements_and_prefers_prebuilt_under_b() {
        let (mut installed, mut candidates) = up2();
        installed[0].keep = true;
        let upgrades = upgrade(
            &installed,
            &candidates,
            UpgradeKind::LessThan,
            false,
            |_, _| true,
            |_| None,
        );
        assert!(upgrades.is_empty());
        installed[0].keep = false;
        candidates[3].prebuilt = false;
        let upgrades = upgrade(
            &installed,
            &candidates,
            UpgradeKind::LessThan,
            true,
            |_, _| true,
            |_| None,
        );
        assert_eq!(upgrades[0].message, "upgrading 'foo-1.0' to 'foo-2.0pre1'");
    }
}
