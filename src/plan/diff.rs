//! The edits between two sets of installed elements: what `plan` shows between the current
//! generation and the locked desired state, and what `diff` shows between two generations.
//!
//! Pure. Elements are paired by id where both sides know it, then by identical outputs, then
//! by package name; each pair is unchanged, a flag change, an upgrade, a downgrade, a rebuild
//! (same version, other content) or a replacement (another attribute path or package name).

use crate::model::manifest::{ManifestElement, NixValue};
use crate::version::{compare_versions, split_drv_name};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// One installed (or to-be-installed) element with what declenv knows about its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    /// The spec id, when known.
    pub id: Option<String>,
    /// The attribute path, when known.
    pub attr_path: Option<String>,
    /// The element.
    pub element: ManifestElement,
}

/// What kind of edit.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// A new package.
    Add,
    /// A package that goes away.
    Remove,
    /// The same package at a newer version.
    Upgrade,
    /// The same package at an older version.
    Downgrade,
    /// Another package under the same id: the attribute path or package name changed.
    Replace,
    /// The same name and version with other content.
    Rebuild,
    /// Only flags (priority, keep, active) change.
    Flags,
}

impl ChangeKind {
    /// Whether the edit removes or rolls back something the user has now.
    #[must_use]
    pub fn is_destructive(self) -> bool {
        matches!(self, Self::Remove | Self::Downgrade | Self::Replace)
    }
}

/// The flags declenv manages, as effective values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FlagChange {
    /// `priority`, `keep` or `active`.
    pub flag: String,
    /// The value before (absent: unset).
    pub from: Option<String>,
    /// The value after.
    pub to: Option<String>,
}

/// One package as a change describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PackageSummary {
    /// The full name.
    pub name: String,
    /// The version part.
    pub version: String,
    /// The attribute path, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attr_path: Option<String>,
    /// The installed outputs' store paths, by output.
    pub outputs: std::collections::BTreeMap<String, String>,
}

/// One edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Change {
    /// What kind.
    pub kind: ChangeKind,
    /// The spec id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The package before (absent for an addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PackageSummary>,
    /// The package after (absent for a removal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<PackageSummary>,
    /// Flags that change (also on upgrades and the like).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<FlagChange>,
}

impl Change {
    /// The package name the change is about.
    #[must_use]
    pub fn package_name(&self) -> &str {
        let summary = self.to.as_ref().or(self.from.as_ref());
        summary.map_or("", |summary| split_drv_name(&summary.name).0)
    }
}

/// The edits and what stays.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diff {
    /// Edits, in a stable order: by kind, then package name.
    pub changes: Vec<Change>,
    /// Names of the elements that stay exactly as they are.
    pub unchanged: Vec<String>,
}

fn summary(side: &Side) -> PackageSummary {
    PackageSummary {
        name: side.element.name.clone(),
        version: split_drv_name(&side.element.name).1.to_owned(),
        attr_path: side.attr_path.clone(),
        outputs: side.element.outputs.clone(),
    }
}

/// A flag's effective value, as Nix reads it (strings from `--set-flag`, or native values).
fn flag_value(element: &ManifestElement, flag: &str) -> Option<String> {
    let value = element.meta.get(flag)?;
    let text = match value {
        NixValue::String(text) => text.clone(),
        NixValue::Int(number) => number.to_string(),
        NixValue::Bool(flag) => flag.to_string(),
        NixValue::Float(number) => number.to_string(),
        NixValue::List(_) | NixValue::Attrs(_) => return None,
    };
    match flag {
        // `keep` holds only for `true`; `active` fails only for `false`.
        "keep" => (text == "true").then(|| "true".to_owned()),
        "active" => (text == "false").then(|| "false".to_owned()),
        _ => Some(text),
    }
}

fn flag_changes(from: &ManifestElement, to: &ManifestElement) -> Vec<FlagChange> {
    ["priority", "keep", "active"]
        .into_iter()
        .filter_map(|flag| {
            let (before, after) = (flag_value(from, flag), flag_value(to, flag));
            (before != after).then(|| FlagChange {
                flag: flag.to_owned(),
                from: before,
                to: after,
            })
        })
        .collect()
}

/// The edits that turn `current` into `desired`.
#[must_use]
pub fn diff(current: &[Side], desired: &[Side]) -> Diff {
    let mut paired_current = vec![false; current.len()];
    let mut pairs: Vec<(Option<usize>, usize)> = Vec::new();
    let mut pair_by = |matches: &dyn Fn(&Side, &Side) -> bool,
                       pairs: &mut Vec<(Option<usize>, usize)>,
                       pending: &[usize]| {
        let mut still = Vec::new();
        for &wanted in pending {
            let found = current.iter().enumerate().position(|(index, side)| {
                !paired_current[index] && matches(side, &desired[wanted])
            });
            match found {
                Some(index) => {
                    paired_current[index] = true;
                    pairs.push((Some(index), wanted));
                }
                None => still.push(wanted),
            }
        }
        still
    };
    let pending: Vec<usize> = (0..desired.len()).collect();
    let pending = pair_by(
        &|have, want| have.id.is_some() && have.id == want.id,
        &mut pairs,
        &pending,
    );
    let pending = pair_by(
        &|have, want| {
            have.element.outputs == want.element.outputs && have.element.name == want.element.name
        },
        &mut pairs,
        &pending,
    );
    let pending = pair_by(
        &|have, want| {
            split_drv_name(&have.element.name).0 == split_drv_name(&want.element.name).0
                && (have.id.is_none() || want.id.is_none())
        },
        &mut pairs,
        &pending,
    );
    pairs.extend(pending.into_iter().map(|wanted| (None, wanted)));

    let mut result = Diff::default();
    for (have, wanted) in pairs {
        let want = &desired[wanted];
        let id = want.id.clone();
        let Some(have) = have.map(|index| &current[index]) else {
            result.changes.push(Change {
                kind: ChangeKind::Add,
                id,
                from: None,
                to: Some(summary(want)),
                flags: Vec::new(),
            });
            continue;
        };
        let flags = flag_changes(&have.element, &want.element);
        let same_content =
            have.element.outputs == want.element.outputs && have.element.name == want.element.name;
        let kind = if same_content {
            if flags.is_empty() {
                result.unchanged.push(want.element.name.clone());
                continue;
            }
            ChangeKind::Flags
        } else {
            let (have_name, have_version) = split_drv_name(&have.element.name);
            let (want_name, want_version) = split_drv_name(&want.element.name);
            let other_attr =
                matches!((&have.attr_path, &want.attr_path), (Some(a), Some(b)) if a != b);
            if other_attr || have_name != want_name {
                ChangeKind::Replace
            } else {
                match compare_versions(want_version, have_version) {
                    Ordering::Greater => ChangeKind::Upgrade,
                    Ordering::Less => ChangeKind::Downgrade,
                    Ordering::Equal => ChangeKind::Rebuild,
                }
            }
        };
        result.changes.push(Change {
            kind,
            id: id.or_else(|| have.id.clone()),
            from: Some(summary(have)),
            to: Some(summary(want)),
            flags,
        });
    }
    for (index, have) in current.iter().enumerate() {
        if !paired_current[index] {
            result.changes.push(Change {
                kind: ChangeKind::Remove,
                id: have.id.clone(),
                from: Some(summary(have)),
                to: None,
                flags: Vec::new(),
            });
        }
    }
    result.changes.sort_by(|a, b| {
        a.kind
            .cmp(&b.kind)
            .then_with(|| a.package_name().cmp(b.package_name()))
    });
    result.unchanged.sort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn side(id: Option<&str>, attr: Option<&str>, name: &str, meta: &[(&str, NixValue)]) -> Side {
        let path = format!("/nix/store/h-{name}");
        Side {
            id: id.map(str::to_owned),
            attr_path: attr.map(str::to_owned),
            element: ManifestElement {
                name: name.to_owned(),
                out_path: path.clone(),
                outputs: BTreeMap::from([("out".to_owned(), path)]),
                system: None,
                meta: meta
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), value.clone()))
                    .collect(),
                drv_path: None,
            },
        }
    }

    fn kinds(diff: &Diff) -> Vec<(ChangeKind, &str)> {
        diff.changes
            .iter()
            .map(|change| (change.kind, change.package_name()))
            .collect()
    }

    #[test]
    fn classifies_every_kind_of_edit() {
        let current = [
            side(Some("hello"), Some("hello"), "hello-2.10", &[]),
            side(Some("jq"), Some("jq"), "jq-1.7", &[]),
            side(None, None, "cowsay-3.7", &[]),
            side(Some("which"), Some("which"), "which-2.21", &[]),
            side(Some("helm"), Some("helm"), "helm-3.1", &[]),
            side(Some("same"), Some("same"), "same-1", &[]),
            side(Some("re"), Some("re"), "re-1", &[]),
        ];
        let mut rebuilt = side(Some("re"), Some("re"), "re-1", &[]);
        rebuilt
            .element
            .outputs
            .insert("out".to_owned(), "/nix/store/other-re-1".to_owned());
        let desired = [
            side(Some("hello"), Some("hello"), "hello-2.12.1", &[]),
            side(Some("jq"), Some("jq"), "jq-1.6", &[]),
            side(
                Some("which"),
                Some("which"),
                "which-2.21",
                &[("priority", NixValue::String("4".to_owned()))],
            ),
            side(
                Some("helm"),
                Some("kubernetes-helm"),
                "kubernetes-helm-3.9",
                &[],
            ),
            side(Some("same"), Some("same"), "same-1", &[]),
            side(Some("new"), Some("new"), "new-0.1", &[]),
            rebuilt,
        ];
        let result = diff(&current, &desired);
        assert_eq!(
            kinds(&result),
            [
                (ChangeKind::Add, "new"),
                (ChangeKind::Remove, "cowsay"),
                (ChangeKind::Upgrade, "hello"),
                (ChangeKind::Downgrade, "jq"),
                (ChangeKind::Replace, "kubernetes-helm"),
                (ChangeKind::Rebuild, "re"),
                (ChangeKind::Flags, "which"),
            ]
        );
        assert_eq!(result.unchanged, ["same-1"]);
        assert_eq!(
            result.changes[6].flags,
            [FlagChange {
                flag: "priority".to_owned(),
                from: None,
                to: Some("4".to_owned())
            }]
        );
    }

    #[test]
    fn elements_without_ids_pair_by_name_and_flags_read_as_nix_reads_them() {
        // A profile made by nix-env: no ids. `keep = "false"` is no keep at all.
        let current = [side(
            None,
            None,
            "hello-2.10",
            &[("keep", NixValue::String("false".to_owned()))],
        )];
        let desired = [side(Some("hello"), Some("hello"), "hello-2.10", &[])];
        let result = diff(&current, &desired);
        assert!(result.changes.is_empty(), "{result:?}");
        assert_eq!(result.unchanged, ["hello-2.10"]);
    }

    #[test]
    fn identical_sides_have_no_changes() {
        let sides = [
            side(Some("a"), None, "a-1", &[("active", NixValue::Bool(false))]),
            side(Some("b"), None, "b-1", &[]),
        ];
        let result = diff(&sides, &sides);
        assert!(result.changes.is_empty());
        assert_eq!(result.unchanged.len(), 2);
    }
}
