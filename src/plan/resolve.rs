//! Resolving a spec against a catalog and the previous lockfile: which package every id gets.
//!
//! Pure. A locked choice is kept while it still satisfies its entry (so changing a flag never
//! upgrades anything); an entry that is new, changed past its lock, or asked to update is
//! resolved with `nix-env`'s selection rules, filtered by its source and version constraint.
//! Updates never cross attribute paths unless asked and never touch `keep = true` entries.
//! Hashing the chosen trees is I/O and happens afterwards (see `profile::locking`).

use crate::model::catalog::{Catalog, EntryRef};
use crate::model::lockfile::{LockedPackage, Lockfile};
use crate::model::spec::{PackageRequest, Selection, Spec};
use crate::plan::select::pick_newest;
use crate::selector::{Selector, SelectorError};
use crate::version::{compare_versions, split_drv_name};
use std::collections::BTreeSet;

/// Which entries to re-resolve even though their lock still satisfies them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Update {
    /// None: keep every lock that still satisfies its entry.
    #[default]
    Nothing,
    /// Every entry.
    All,
    /// These ids.
    Ids(BTreeSet<String>),
}

impl Update {
    fn includes(&self, id: &str) -> bool {
        match self {
            Self::Nothing => false,
            Self::All => true,
            Self::Ids(ids) => ids.contains(id),
        }
    }
}

/// How to resolve.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// What to update.
    pub update: Update,
    /// Let an update move a name-selected entry to another attribute path.
    pub allow_attr_change: bool,
    /// The platform that wins ties (Nix's `thisSystem`).
    pub this_system: String,
}

/// What an id gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The previous lock, with the entry hash brought up to date.
    Keep(LockedPackage),
    /// A catalog entry, to be hashed and locked.
    Choose {
        /// Index into the catalog.
        index: usize,
        /// The outputs to install.
        install: Vec<String>,
    },
    /// A store path as is.
    StorePath {
        /// The path.
        path: String,
    },
}

/// Why a newer version was not taken.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum HeldReason {
    /// The entry says `keep = true`.
    Keep,
    /// The version constraint excludes it.
    Constraint,
    /// The lockfile pins the older one; `declenv lock --update ID` takes it.
    Locked,
    /// The newer one is under another attribute path; `declenv lock --update ID
    /// --allow-attr-change` takes it.
    AttrPath,
}

/// A package held back from a newer version.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct HeldBack {
    /// The id.
    pub id: String,
    /// The locked version.
    pub locked: String,
    /// The newest version available under the same identity.
    pub available: String,
    /// Why it was not taken.
    pub reason: HeldReason,
}

/// The outcome of [`resolve`].
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// One decision per id, in spec order.
    pub decisions: Vec<(String, Decision)>,
    /// Packages with a newer version available that were not moved to it.
    pub held_back: Vec<HeldBack>,
}

/// Why an entry cannot be resolved. Every variant names the id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The entry's selector is not valid.
    #[error("package `{id}`: {source}")]
    Selector {
        /// The id.
        id: String,
        /// Why.
        source: SelectorError,
    },
    /// Nothing matches the selection.
    #[error("package `{id}`: no package matches {what}")]
    NotFound {
        /// The id.
        id: String,
        /// `attribute `x`` or `selector `y``, with the sources searched.
        what: String,
        /// Similar package names.
        suggestions: Vec<String>,
    },
    /// Something matches, but no version satisfies the constraint.
    #[error("package `{id}`: no version of `{package}` satisfies `{constraint}` (available: {})", available.join(", "))]
    NoVersion {
        /// The id.
        id: String,
        /// The package name.
        package: String,
        /// The constraint.
        constraint: String,
        /// The versions there are.
        available: Vec<String>,
    },
    /// A regex selector that matches several package names.
    #[error("package `{id}`: selector `{selector}` matches several packages: {}", names.join(", "))]
    Ambiguous {
        /// The id.
        id: String,
        /// The selector.
        selector: String,
        /// The package names it matches (at most five).
        names: Vec<String>,
    },
    /// Outputs asked for that the package does not have.
    #[error("package `{id}`: `{package}` has no output `{output}` (it has {})", available.join(", "))]
    NoOutput {
        /// The id.
        id: String,
        /// The package's full name.
        package: String,
        /// The missing output.
        output: String,
        /// Its outputs.
        available: Vec<String>,
    },
}

impl ResolveError {
    /// The fields of the package's entry that the error is about, most telling first.
    #[must_use]
    pub fn fields(&self) -> &'static [&'static str] {
        match self {
            Self::Selector { .. } | Self::Ambiguous { .. } => &["name"],
            Self::NotFound { .. } => &["attr", "name"],
            Self::NoVersion { .. } => &["version", "attr", "name"],
            Self::NoOutput { .. } => &["outputs"],
        }
    }

    /// The id of the package it is about.
    #[must_use]
    pub fn id(&self) -> &str {
        match self {
            Self::Selector { id, .. }
            | Self::NotFound { id, .. }
            | Self::NoVersion { id, .. }
            | Self::Ambiguous { id, .. }
            | Self::NoOutput { id, .. } => id,
        }
    }

    /// A hint for the user.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::NotFound { suggestions, .. } if !suggestions.is_empty() => Some(format!(
                "did you mean {}?",
                suggestions
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Self::NotFound { .. } => {
                Some("`declenv search --source PATH NAME` lists what a source offers".to_owned())
            }
            Self::NoVersion { id, .. } => Some(format!(
                "relax `version` under `[packages.{id}]`, or update the source"
            )),
            Self::Ambiguous { id, .. } => Some(format!(
                "select one package under `[packages.{id}]` with `attr = \"…\"` or an exact `name`"
            )),
            Self::NoOutput { .. } | Self::Selector { .. } => None,
        }
    }
}

/// Resolves every entry of `spec`. `catalog` holds the spec's sources in the same order.
pub fn resolve(
    spec: &Spec,
    catalog: &Catalog,
    previous: &Lockfile,
    options: &ResolveOptions,
) -> Result<Resolution, ResolveError> {
    let mut resolution = Resolution::default();
    for request in &spec.packages {
        let locked = previous.packages.get(&request.id);
        let decision = decide(spec, catalog, request, locked, options)?;
        if let Some(held) = held_back(spec, catalog, request, &decision, options) {
            resolution.held_back.push(held);
        }
        resolution.decisions.push((request.id.clone(), decision));
    }
    Ok(resolution)
}

fn decide(
    spec: &Spec,
    catalog: &Catalog,
    request: &PackageRequest,
    locked: Option<&LockedPackage>,
    options: &ResolveOptions,
) -> Result<Decision, ResolveError> {
    if let Selection::StorePath(path) = &request.selection {
        return Ok(Decision::StorePath { path: path.clone() });
    }
    let updating = options.update.includes(&request.id) && request.flags.keep != Some(true);
    if let Some(locked) = locked
        && !updating
        && let Some(kept) = keep_if_satisfied(spec, catalog, request, locked)?
    {
        return Ok(Decision::Keep(kept));
    }
    // An update of a name-selected entry stays on the locked attribute path unless asked.
    let pinned_attr = locked
        .filter(|_| updating && !options.allow_attr_change)
        .filter(|_| matches!(request.selection, Selection::Name(_)))
        .and_then(|locked| Some((locked.source.clone()?, locked.attr_path.clone()?)));
    let index = choose(spec, catalog, request, pinned_attr.as_ref(), options)?;
    let install = install_outputs(request, &catalog.get(index))?;
    Ok(Decision::Choose { index, install })
}

/// The previous lock, if it still satisfies the (possibly edited) entry.
fn keep_if_satisfied(
    spec: &Spec,
    catalog: &Catalog,
    request: &PackageRequest,
    locked: &LockedPackage,
) -> Result<Option<LockedPackage>, ResolveError> {
    let (Some(source_name), Some(attr_path)) = (&locked.source, &locked.attr_path) else {
        return Ok(None);
    };
    let Some(source) = spec
        .sources
        .iter()
        .position(|source| &source.id == source_name)
    else {
        return Ok(None);
    };
    if request.source.is_some_and(|wanted| wanted != source) {
        return Ok(None);
    }
    let selected = match &request.selection {
        Selection::Attr(attr) => attr == attr_path,
        Selection::Name(raw) => Selector::new(raw)
            .map_err(|source| ResolveError::Selector {
                id: request.id.clone(),
                source,
            })?
            .matches_full_name(&locked.name),
        Selection::StorePath(_) => false,
    };
    if !selected
        || request
            .constraint
            .as_ref()
            .is_some_and(|constraint| !constraint.matches(&locked.version))
    {
        return Ok(None);
    }
    let mut kept = locked.clone();
    if locked.entry_hash != request.entry_hash {
        // The outputs to install may have changed; the package itself has not.
        let entry = locked_entry(catalog, source, locked);
        kept.install = match (&request.outputs, entry) {
            (Some(outputs), _) => {
                for output in outputs {
                    if !locked.outputs.contains_key(output) {
                        return Err(ResolveError::NoOutput {
                            id: request.id.clone(),
                            package: locked.name.clone(),
                            output: output.clone(),
                            available: locked.outputs.keys().cloned().collect(),
                        });
                    }
                }
                outputs.clone()
            }
            (None, Some(entry)) => install_outputs(request, &entry)?,
            (None, None) => return Ok(None),
        };
        kept.entry_hash.clone_from(&request.entry_hash);
    }
    Ok(Some(kept))
}

/// The catalog entry a lock names, in the source at index `source`: the one under its attribute
/// path or, when a source update moved it (nixpkgs moves `which` to `which_2_21` when 2.22
/// arrives), one of the same full name in that source. Whoever uses its tree checks it against
/// the locked hash.
#[must_use]
pub fn locked_entry<'a>(
    catalog: &'a Catalog,
    source: usize,
    locked: &LockedPackage,
) -> Option<EntryRef<'a>> {
    locked
        .attr_path
        .as_deref()
        .and_then(|attr_path| catalog.by_attr_path(source, attr_path))
        .filter(|entry| entry.name() == locked.name)
        .or_else(|| {
            catalog
                .by_package_name(locked.package_name())
                .iter()
                .map(|&index| catalog.get(index))
                .find(|entry| entry.source() == source && entry.name() == locked.name)
        })
}

/// The outputs to install: the entry's own list, else `meta.outputsToInstall`, else `out` (or
/// the first output).
fn install_outputs(
    request: &PackageRequest,
    entry: &EntryRef<'_>,
) -> Result<Vec<String>, ResolveError> {
    let decoded = entry.to_entry();
    let available: Vec<String> = decoded
        .as_ref()
        .map(|entry| entry.outputs.keys().cloned().collect())
        .unwrap_or_default();
    match &request.outputs {
        Some(outputs) => {
            for output in outputs {
                if !available.contains(output) {
                    return Err(ResolveError::NoOutput {
                        id: request.id.clone(),
                        package: entry.name().to_owned(),
                        output: output.clone(),
                        available,
                    });
                }
            }
            Ok(outputs.clone())
        }
        None => Ok(decoded
            .map(|entry| {
                entry
                    .outputs_to_install()
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_else(|| vec!["out".to_owned()])),
    }
}

/// The sources a request may take from.
fn allowed_source(request: &PackageRequest, source: usize) -> bool {
    request.source.is_none_or(|wanted| wanted == source)
}

/// Whether a selector's name part is a plain name (no regex operators), so the catalog's
/// name index finds every match.
fn literal_name(raw: &str) -> Option<&str> {
    let name = split_drv_name(raw).0;
    (!name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_')))
    .then_some(name)
}

/// A prefix every name a selector's name part matches must start with: the literal characters
/// before its first regex operator (minus the last one when that operator can make it optional),
/// or nothing when the pattern may alternate. Only narrows the candidates; the selector still
/// decides.
fn required_prefix(name_part: &str) -> &str {
    if name_part.contains('|') {
        return "";
    }
    let end = name_part
        .find(|character: char| ".[]()*+?{}|^$\\".contains(character))
        .unwrap_or(name_part.len());
    // Quantifiers can stack (`a+?` is `(a+)?`): any that allows zero makes the last literal
    // optional.
    let optional = name_part[end..]
        .chars()
        .take_while(|character| matches!(character, '*' | '+' | '?' | '{'))
        .any(|character| character != '+');
    let mut prefix = &name_part[..end];
    if optional {
        prefix = prefix
            .char_indices()
            .last()
            .map_or("", |(position, _)| &prefix[..position]);
    }
    prefix
}

/// Whether a pattern's only regex operator is `.`: then it matches exactly the names of its
/// length in bytes (Nix's regexes see bytes) that agree on every other byte.
fn dots_only(name_part: &str) -> bool {
    !name_part.contains(|character: char| "[]()*+?{}|^$\\".contains(character))
}

/// The match of a [`dots_only`] pattern, without the regex.
fn dots_match(name_part: &str, name: &str) -> bool {
    name_part.len() == name.len()
        && name_part
            .bytes()
            .zip(name.bytes())
            .all(|(wanted, found)| wanted == b'.' || wanted == found)
}

/// Entries of allowed sources matching the selection (before the version constraint).
fn matching(catalog: &Catalog, request: &PackageRequest) -> Result<Vec<usize>, ResolveError> {
    match &request.selection {
        Selection::Attr(attr) => {
            let sources = catalog.source_count();
            Ok((0..sources)
                .filter(|&source| allowed_source(request, source))
                .find_map(|source| {
                    catalog
                        .by_attr_path(source, attr)
                        .map(|entry| catalog.index_of(&entry))
                })
                .into_iter()
                .collect())
        }
        Selection::Name(raw) => {
            let selector = Selector::new(raw).map_err(|source| ResolveError::Selector {
                id: request.id.clone(),
                source,
            })?;
            let indices: Vec<usize> = match literal_name(raw) {
                Some(name) => catalog.by_package_name(name).to_vec(),
                None => {
                    let name_part = split_drv_name(raw).0;
                    let length = dots_only(name_part).then_some(name_part.len());
                    match required_prefix(name_part) {
                        "" if length.is_none() => (0..catalog.len()).collect(),
                        prefix => catalog.by_package_name_prefix(prefix, length, |name| {
                            length.is_none() || dots_match(name_part, name)
                        }),
                    }
                }
            };
            Ok(indices
                .into_iter()
                .filter(|&index| {
                    let entry = catalog.get(index);
                    allowed_source(request, entry.source())
                        && selector.matches_full_name(entry.name())
                })
                .collect())
        }
        Selection::StorePath(_) => Ok(Vec::new()),
    }
}

fn choose(
    spec: &Spec,
    catalog: &Catalog,
    request: &PackageRequest,
    pinned_attr: Option<&(String, String)>,
    options: &ResolveOptions,
) -> Result<usize, ResolveError> {
    let mut matches = matching(catalog, request)?;
    if let Some((source_name, attr_path)) = pinned_attr {
        let pinned: Vec<usize> = matches
            .iter()
            .copied()
            .filter(|&index| {
                let entry = catalog.get(index);
                entry.attr_path() == attr_path
                    && spec.sources.get(entry.source()).map(|source| &source.id)
                        == Some(source_name)
            })
            .collect();
        if !pinned.is_empty() {
            matches = pinned;
        }
    }
    if matches.is_empty() {
        let what = match &request.selection {
            Selection::Attr(attr) => format!("attribute `{attr}`"),
            Selection::Name(raw) => format!("selector `{raw}`"),
            Selection::StorePath(path) => format!("store path `{path}`"),
        };
        let searched: Vec<String> = spec
            .sources
            .iter()
            .enumerate()
            .filter(|(index, _)| allowed_source(request, *index))
            .map(|(_, source)| format!("`{}`", source.id))
            .collect();
        let what = if searched.is_empty() {
            format!("{what} (no sources are declared)")
        } else {
            format!("{what} in {}", searched.join(", "))
        };
        return Err(ResolveError::NotFound {
            id: request.id.clone(),
            what,
            suggestions: suggestions(catalog, request),
        });
    }
    let satisfying: Vec<usize> = matches
        .iter()
        .copied()
        .filter(|&index| {
            request
                .constraint
                .as_ref()
                .is_none_or(|constraint| constraint.matches(catalog.get(index).version()))
        })
        .collect();
    if satisfying.is_empty() {
        let mut available: Vec<String> = matches
            .iter()
            .map(|&index| catalog.get(index).version().to_owned())
            .collect();
        available.sort_by(|a, b| compare_versions(a, b));
        available.dedup();
        return Err(ResolveError::NoVersion {
            id: request.id.clone(),
            package: catalog.get(matches[0]).package_name().to_owned(),
            constraint: request
                .constraint
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            available,
        });
    }
    let candidates: Vec<EntryRef<'_>> =
        satisfying.iter().map(|&index| catalog.get(index)).collect();
    let positions: Vec<usize> = (0..candidates.len()).collect();
    let newest = pick_newest(
        &candidates,
        &positions,
        &options.this_system,
        &mut Vec::new(),
    );
    if newest.len() > 1 {
        let Selection::Name(selector) = &request.selection else {
            unreachable!("only a name selection matches several names")
        };
        return Err(ResolveError::Ambiguous {
            id: request.id.clone(),
            selector: selector.clone(),
            names: newest
                .iter()
                .take(5)
                .map(|&position| candidates[position].package_name().to_owned())
                .collect(),
        });
    }
    Ok(satisfying[newest[0]])
}

/// Up to three package names starting with the selection's first three characters.
fn suggestions(catalog: &Catalog, request: &PackageRequest) -> Vec<String> {
    let wanted = match &request.selection {
        Selection::Attr(attr) => attr.rsplit('.').next().unwrap_or(attr).to_owned(),
        Selection::Name(raw) => split_drv_name(raw).0.to_owned(),
        Selection::StorePath(_) => return Vec::new(),
    };
    let prefix: String = wanted.chars().take(3).collect();
    if prefix.is_empty() {
        return Vec::new();
    }
    let mut names = BTreeSet::new();
    for entry in catalog.iter() {
        if !allowed_source(request, entry.source()) {
            continue;
        }
        let candidate = match &request.selection {
            Selection::Attr(_) => entry.attr_path(),
            _ => entry.package_name(),
        };
        if candidate.starts_with(&prefix) {
            names.insert(candidate.to_owned());
            if names.len() == 3 {
                break;
            }
        }
    }
    names.into_iter().collect()
}

/// A newer version under the same identity that the decision did not take, and why.
fn held_back(
    spec: &Spec,
    catalog: &Catalog,
    request: &PackageRequest,
    decision: &Decision,
    options: &ResolveOptions,
) -> Option<HeldBack> {
    let (version, source, attr_path, package_name) = match decision {
        Decision::Keep(locked) => (
            locked.version.clone(),
            spec.sources
                .iter()
                .position(|source| Some(&source.id) == locked.source.as_ref())?,
            locked.attr_path.clone()?,
            locked.package_name().to_owned(),
        ),
        Decision::Choose { index, .. } => {
            let entry = catalog.get(*index);
            (
                entry.version().to_owned(),
                entry.source(),
                entry.attr_path().to_owned(),
                entry.package_name().to_owned(),
            )
        }
        Decision::StorePath { .. } => return None,
    };
    let (newest, newest_attr_path) = match &request.selection {
        Selection::Attr(_) => catalog
            .by_attr_path(source, &attr_path)
            .map(|entry| (entry.version().to_owned(), attr_path.clone())),
        Selection::Name(_) => {
            let candidates = matching(catalog, request).ok()?;
            candidates
                .into_iter()
                .map(|index| catalog.get(index))
                .filter(|entry| entry.package_name() == package_name)
                .map(|entry| (entry.version().to_owned(), entry.attr_path().to_owned()))
                .max_by(|a, b| compare_versions(&a.0, &b.0))
        }
        Selection::StorePath(_) => None,
    }?;
    if compare_versions(&newest, &version).is_le() {
        return None;
    }
    let reason = if request.flags.keep == Some(true) {
        HeldReason::Keep
    } else if request
        .constraint
        .as_ref()
        .is_some_and(|constraint| !constraint.matches(&newest))
    {
        HeldReason::Constraint
    } else if newest_attr_path != attr_path && !options.allow_attr_change {
        HeldReason::AttrPath
    } else {
        HeldReason::Locked
    };
    Some(HeldBack {
        id: request.id.clone(),
        locked: version,
        available: newest,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::catalog::CatalogEntry;
    use crate::model::lockfile::LockedOutput;
    use crate::model::spec::parse;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn entry(attr_path: &str, name: &str) -> CatalogEntry {
        CatalogEntry {
            attr_path: attr_path.to_owned(),
            name: name.to_owned(),
            system: Some("x86_64-linux".to_owned()),
            output_name: "out".to_owned(),
            outputs: BTreeMap::from([("out".to_owned(), None)]),
            meta: serde_json::Map::new(),
            trees: BTreeMap::new(),
        }
    }

    fn catalog() -> Catalog {
        Catalog::new(vec![
            vec![
                entry("hello", "hello-2.12.1"),
                entry("hello_2_10", "hello-2.10"),
                entry("hello_2_12", "hello-2.12"),
                entry("helm", "helm-3.1"),
                entry("kubernetes-helm", "helm-3.9"),
                entry("jq", "jq-1.7.1"),
            ],
            vec![entry("hello", "hello-3.0")],
        ])
        .unwrap()
    }

    fn spec(packages: &str) -> Spec {
        parse(
            &format!(
                "version = 1\n[sources.a]\nchannel = \"a\"\n[sources.b]\nchannel = \"b\"\n{packages}"
            ),
            Path::new("/p/profile.toml"),
        )
        .unwrap()
        .spec
    }

    fn options(update: Update) -> ResolveOptions {
        ResolveOptions {
            update,
            allow_attr_change: false,
            this_system: "x86_64-linux".to_owned(),
        }
    }

    fn chosen_names(spec: &Spec, previous: &Lockfile, update: Update) -> Vec<String> {
        let catalog = catalog();
        resolve(spec, &catalog, previous, &options(update))
            .unwrap()
            .decisions
            .iter()
            .map(|(_, decision)| match decision {
                Decision::Choose { index, .. } => catalog.get(*index).name().to_owned(),
                Decision::Keep(locked) => format!("kept {}", locked.name),
                Decision::StorePath { path } => path.clone(),
            })
            .collect()
    }

    fn locked(spec: &Spec, id: &str, source: &str, attr: &str, name: &str) -> LockedPackage {
        let outputs = BTreeMap::from([(
            "out".to_owned(),
            LockedOutput {
                nar_hash: None,
                path: Some(format!("/nix/store/x-{name}")),
            },
        )]);
        LockedPackage {
            entry_hash: spec
                .packages
                .iter()
                .find(|package| package.id == id)
                .unwrap()
                .entry_hash
                .clone(),
            source: Some(source.to_owned()),
            attr_path: Some(attr.to_owned()),
            name: name.to_owned(),
            version: split_drv_name(name).1.to_owned(),
            system: None,
            content_hash: LockedPackage::content_hash_of(&outputs),
            outputs,
            install: vec!["out".to_owned()],
        }
    }

    #[rstest::rstest]
    #[case("python3.12", "python3")]
    #[case("libstdc++6", "libstdc")]
    #[case("ab*c", "a")]
    #[case("ab?c", "a")]
    #[case("ab{2}", "a")]
    #[case("a+?", "")]
    #[case("ab+*", "a")]
    #[case("a|b", "")]
    #[case("(ab)", "")]
    #[case("^ab", "")]
    #[case("a\\.b", "a")]
    #[case("hello", "hello")]
    fn required_prefixes_never_exclude_a_match(#[case] name_part: &str, #[case] prefix: &str) {
        assert_eq!(required_prefix(name_part), prefix);
    }

    proptest::proptest! {
        /// For patterns whose only operator is `.`, the byte comparison is the selector's match.
        #[test]
        fn dots_match_agrees_with_the_selector(
            pattern in "[ab.+*é]{1,6}",
            name in "[ab.+é]{0,8}",
        ) {
            if let Ok(selector) = Selector::new(&pattern)
                && dots_only(&pattern)
            {
                proptest::prop_assert_eq!(
                    dots_match(&pattern, &name),
                    selector.matches_full_name(&name),
                    "{} {}", pattern, name
                );
            }
        }

        /// Whatever a pattern matches starts with its required prefix.
        #[test]
        fn matches_start_with_the_required_prefix(
            pattern in "[ab.+*?]{1,6}",
            name in "[ab.+]{0,8}",
        ) {
            if let Ok(selector) = Selector::new(&pattern)
                && selector.matches_full_name(&name)
            {
                proptest::prop_assert!(name.starts_with(required_prefix(&pattern)), "{pattern} {name}");
            }
        }
    }

    #[test]
    fn selects_like_nix_env_within_sources_and_constraints() {
        let spec = spec(
            "[packages.hello]\n[packages.old]\nname = \"hello\"\nversion = \"<2.12\"\n\
             [packages.pinned]\nattr = \"hello\"\nsource = \"a\"\n[packages.any]\nattr = \"hello\"\n\
             [packages.b]\nname = \"hello\"\nsource = \"b\"\n",
        );
        assert_eq!(
            chosen_names(&spec, &Lockfile::default(), Update::Nothing),
            [
                "hello-3.0",
                "hello-2.10",
                "hello-2.12.1",
                "hello-2.12.1",
                "hello-3.0"
            ]
        );
    }

    #[test]
    fn a_lock_that_still_satisfies_is_kept_through_edits() {
        let original = spec("[packages.hello]\nsource = \"a\"\n");
        let mut previous = Lockfile::default();
        previous.packages.insert(
            "hello".to_owned(),
            locked(&original, "hello", "a", "hello_2_12", "hello-2.12"),
        );
        // A flag change re-checks the entry; the locked package still satisfies it.
        let edited = spec("[packages.hello]\nsource = \"a\"\npriority = 3\n");
        assert_eq!(
            chosen_names(&edited, &previous, Update::Nothing),
            ["kept hello-2.12"]
        );
        // A constraint the lock violates re-resolves.
        let constrained = spec("[packages.hello]\nsource = \"a\"\nversion = \"<2.11\"\n");
        assert_eq!(
            chosen_names(&constrained, &previous, Update::Nothing),
            ["hello-2.10"]
        );
        // An update stays on the locked attribute path.
        assert_eq!(
            chosen_names(&original, &previous, Update::All),
            ["hello-2.12"]
        );
    }

    #[test]
    fn a_flag_edit_keeps_a_lock_whose_attribute_the_source_moved() {
        // Locked when `hello` was 2.10; the source has since moved 2.10 to `hello_2_10`.
        let original = spec("[packages.hello]\nattr = \"hello\"\nsource = \"a\"\nkeep = true\n");
        let mut previous = Lockfile::default();
        previous.packages.insert(
            "hello".to_owned(),
            locked(&original, "hello", "a", "hello", "hello-2.10"),
        );
        let edited =
            spec("[packages.hello]\nattr = \"hello\"\nsource = \"a\"\nkeep = true\npriority = 3\n");
        assert_eq!(
            chosen_names(&edited, &previous, Update::Nothing),
            ["kept hello-2.10"]
        );
        let catalog = catalog();
        let entry = locked_entry(&catalog, 0, &previous.packages["hello"]).unwrap();
        assert_eq!(entry.attr_path(), "hello_2_10");
    }

    #[test]
    fn updates_never_cross_attribute_paths_unless_asked_and_never_touch_keep() {
        let original = spec("[packages.helm]\n");
        let mut previous = Lockfile::default();
        previous.packages.insert(
            "helm".to_owned(),
            locked(&original, "helm", "a", "helm", "helm-3.1"),
        );
        assert_eq!(
            chosen_names(&original, &previous, Update::All),
            ["helm-3.1"]
        );
        let catalog = catalog();
        let crossing = ResolveOptions {
            allow_attr_change: true,
            ..options(Update::All)
        };
        let resolution = resolve(&original, &catalog, &previous, &crossing).unwrap();
        let Decision::Choose { index, .. } = &resolution.decisions[0].1 else {
            panic!("{resolution:?}");
        };
        assert_eq!(catalog.get(*index).attr_path(), "kubernetes-helm");

        let kept = spec("[packages.helm]\nkeep = true\n");
        let mut previous = Lockfile::default();
        previous.packages.insert(
            "helm".to_owned(),
            locked(&kept, "helm", "a", "helm", "helm-3.1"),
        );
        let resolution = resolve(&kept, &catalog, &previous, &crossing).unwrap();
        assert!(matches!(resolution.decisions[0].1, Decision::Keep(_)));
    }

    #[test]
    fn held_back_packages_say_why() {
        let spec = spec(
            "[packages.kept]\nname = \"hello\"\nsource = \"a\"\nkeep = true\n\
             [packages.bounded]\nname = \"hello\"\nsource = \"a\"\nversion = \"<2.12\"\n\
             [packages.locked]\nname = \"hello\"\nsource = \"a\"\n",
        );
        let mut previous = Lockfile::default();
        for id in ["kept", "locked"] {
            previous.packages.insert(
                id.to_owned(),
                locked(&spec, id, "a", "hello_2_12", "hello-2.12"),
            );
        }
        let resolution = resolve(&spec, &catalog(), &previous, &options(Update::Nothing)).unwrap();
        let reasons: Vec<_> = resolution
            .held_back
            .iter()
            .map(|held| (held.id.as_str(), held.reason, held.available.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("kept", HeldReason::Keep, "2.12.1"),
                ("bounded", HeldReason::Constraint, "2.12.1"),
                ("locked", HeldReason::AttrPath, "2.12.1"),
            ]
        );
    }

    #[test]
    fn errors_name_the_id_and_suggest() {
        let catalog = catalog();
        let error = |packages: &str| {
            resolve(
                &spec(packages),
                &catalog,
                &Lockfile::default(),
                &options(Update::Nothing),
            )
            .unwrap_err()
        };
        let not_found = error("[packages.x]\nname = \"helo\"\n");
        assert_eq!(
            not_found.to_string(),
            "package `x`: no package matches selector `helo` in `a`, `b`"
        );
        assert_eq!(not_found.hint().unwrap(), "did you mean `hello`, `helm`?");
        assert_eq!(
            error("[packages.x]\nname = \"hello\"\nversion = \">=4\"\n").to_string(),
            "package `x`: no version of `hello` satisfies `>=4` (available: 2.10, 2.12, 2.12.1, 3.0)"
        );
        assert_eq!(
            error("[packages.x]\nname = \"he.*\"\n").to_string(),
            "package `x`: selector `he.*` matches several packages: hello, helm"
        );
        assert_eq!(
            error("[packages.x]\nattr = \"jq\"\noutputs = [\"man\"]\n").to_string(),
            "package `x`: `jq-1.7.1` has no output `man` (it has out)"
        );
    }
}
