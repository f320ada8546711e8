//! The lockfile, `profile.lock`: for every package id the exact package chosen and the hashes
//! needed to reproduce it on another machine.
//!
//! Pure: parsing and rendering. Rendering is deterministic (sorted keys, two-space indent, a
//! final newline), so the file changes only when its content does.

use super::spec::{SourceKind, line_column};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The lockfile format this declenv reads and writes.
pub const LOCK_VERSION: u32 = 1;

/// `profile.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[schemars(title = "declenv lockfile (profile.lock)")]
pub struct Lockfile {
    /// The format version; this declenv reads version 1.
    pub version: u32,
    /// The sources packages were locked from, by name.
    #[serde(default)]
    pub sources: BTreeMap<String, LockedSource>,
    /// The locked packages, by id.
    #[serde(default)]
    pub packages: BTreeMap<String, LockedPackage>,
}

impl Default for Lockfile {
    fn default() -> Self {
        Self {
            version: LOCK_VERSION,
            sources: BTreeMap::new(),
            packages: BTreeMap::new(),
        }
    }
}

/// A source as it was when packages were locked from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LockedSource {
    /// A channel or a catalog.
    pub kind: SourceKind,
    /// Its path as written in the spec.
    pub path: String,
    /// `sha256:<hex>` of the catalog file, or of the channel's metadata and listing.
    pub identity: String,
}

/// One locked package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LockedPackage {
    /// The hash of the spec entry this was locked for; a different hash means "lock again".
    pub entry_hash: String,
    /// The source it came from (absent for a store path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Its attribute path in that source (absent for a store path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attr_path: Option<String>,
    /// The full name, `NAME-VERSION`.
    pub name: String,
    /// The version part of the name.
    pub version: String,
    /// The platform it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Every output of the package.
    pub outputs: BTreeMap<String, LockedOutput>,
    /// The outputs installed into the profile.
    pub install: Vec<String>,
    /// `sha256:<hex>` over the outputs' hashes and paths: one value to compare.
    pub content_hash: String,
}

/// One output of a locked package: its NAR hash (for a package whose tree declenv adds to its
/// store, which fixes the store path in any store directory), its store path (for a package
/// that names one), or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LockedOutput {
    /// `sha256:<nixbase32>` of the tree's NAR serialisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nar_hash: Option<String>,
    /// The store path the source names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl LockedPackage {
    /// The content hash of a set of outputs.
    #[must_use]
    pub fn content_hash_of(outputs: &BTreeMap<String, LockedOutput>) -> String {
        let mut hasher = Sha256::new();
        for (name, output) in outputs {
            hasher.update(name.as_bytes());
            hasher.update(b"\0");
            hasher.update(output.nar_hash.as_deref().unwrap_or_default().as_bytes());
            hasher.update(b"\0");
            hasher.update(output.path.as_deref().unwrap_or_default().as_bytes());
            hasher.update(b"\n");
        }
        format!("sha256:{}", crate::store::path::hex(&hasher.finalize()))
    }

    /// The package name part of the full name.
    #[must_use]
    pub fn package_name(&self) -> &str {
        crate::version::split_drv_name(&self.name).0
    }
}

/// Why a lockfile cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockfileError {
    /// Not JSON, or not a lockfile.
    #[error("invalid lockfile `{}` at line {line}, column {column}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Written by a newer declenv.
    #[error("lockfile `{}` has version {version}; this declenv reads version {LOCK_VERSION}", path.display())]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its version.
        version: u64,
    },
    /// A package whose content hash does not match its outputs (edited by hand, or torn by a
    /// merge).
    #[error("lockfile `{}`: package `{id}` has content hash `{found}` but its outputs hash to `{expected}`", path.display())]
    ContentHash {
        /// The file.
        path: PathBuf,
        /// The package id.
        id: String,
        /// What the file says.
        found: String,
        /// What the outputs give.
        expected: String,
    },
}

impl LockfileError {
    /// A hint for the user.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Invalid { .. } | Self::ContentHash { .. } => {
                "delete it and run `declenv lock` to lock the spec afresh".to_owned()
            }
            Self::Newer { .. } => {
                "upgrade declenv, or delete the lockfile to lock afresh".to_owned()
            }
        })
    }
}

/// Parses the lockfile at `path`.
pub fn parse(text: &str, path: &Path) -> Result<Lockfile, LockfileError> {
    // serde_json counts columns from 0 at the start of a line (an error right after a newline,
    // at the end of the text); every other location declenv prints counts from 1.
    let invalid = |line: usize, column: usize, message: String| LockfileError::Invalid {
        path: path.to_owned(),
        line,
        column: column.max(1),
        message,
    };
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|error| invalid(error.line(), error.column(), strip_position(&error)))?;
    if let Some(version) = value.get("version").and_then(serde_json::Value::as_u64)
        && version > u64::from(LOCK_VERSION)
    {
        return Err(LockfileError::Newer {
            path: path.to_owned(),
            version,
        });
    }
    let lockfile: Lockfile = serde_json::from_str(text)
        .map_err(|error| invalid(error.line(), error.column(), strip_position(&error)))?;
    if lockfile.version != LOCK_VERSION {
        let offset = text.find("\"version\"").unwrap_or(0);
        let (line, column) = line_column(text, offset);
        return Err(invalid(
            line,
            column,
            format!("unsupported version {}", lockfile.version),
        ));
    }
    for (id, package) in &lockfile.packages {
        let expected = LockedPackage::content_hash_of(&package.outputs);
        if expected != package.content_hash {
            return Err(LockfileError::ContentHash {
                path: path.to_owned(),
                id: id.clone(),
                found: package.content_hash.clone(),
                expected,
            });
        }
    }
    Ok(lockfile)
}

/// serde_json appends " at line L column C"; the error already carries both.
fn strip_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    text.rfind(" at line ")
        .map_or(text.clone(), |position| text[..position].to_owned())
}

/// Renders the lockfile deterministically.
#[must_use]
pub fn render(lockfile: &Lockfile) -> String {
    let mut text = serde_json::to_string_pretty(lockfile).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lockfile {
        let outputs = BTreeMap::from([(
            "out".to_owned(),
            LockedOutput {
                nar_hash: Some("sha256:0abc".to_owned()),
                path: None,
            },
        )]);
        Lockfile {
            version: LOCK_VERSION,
            sources: BTreeMap::from([(
                "demo".to_owned(),
                LockedSource {
                    kind: SourceKind::Channel,
                    path: "channel".to_owned(),
                    identity: "sha256:00".to_owned(),
                },
            )]),
            packages: BTreeMap::from([(
                "hello".to_owned(),
                LockedPackage {
                    entry_hash: "sha256:11".to_owned(),
                    source: Some("demo".to_owned()),
                    attr_path: Some("hello".to_owned()),
                    name: "hello-2.12.1".to_owned(),
                    version: "2.12.1".to_owned(),
                    system: Some("x86_64-linux".to_owned()),
                    content_hash: LockedPackage::content_hash_of(&outputs),
                    outputs,
                    install: vec!["out".to_owned()],
                },
            )]),
        }
    }

    #[test]
    fn round_trips_and_renders_deterministically() {
        let lockfile = sample();
        let text = render(&lockfile);
        assert!(text.ends_with("}\n"));
        assert_eq!(parse(&text, Path::new("p.lock")).unwrap(), lockfile);
        assert_eq!(render(&parse(&text, Path::new("p.lock")).unwrap()), text);
    }

    #[test]
    fn newer_versions_are_refused_before_their_fields_are_read() {
        let error = parse(r#"{"version": 7, "future": true}"#, Path::new("p.lock")).unwrap_err();
        assert!(
            matches!(error, LockfileError::Newer { version: 7, .. }),
            "{error}"
        );
    }

    #[test]
    fn errors_carry_positions() {
        let error = parse(
            "{\n  \"version\": 1,\n  \"packages\": [}\n",
            Path::new("p.lock"),
        )
        .unwrap_err();
        let LockfileError::Invalid { line, .. } = error else {
            panic!("{error}");
        };
        assert_eq!(line, 3);
        let error = parse("\n", Path::new("p.lock")).unwrap_err();
        assert!(
            error.to_string().contains("at line 2, column 1: EOF"),
            "{error}"
        );
        let error = parse("{\"version\": 1, \"extra\": 1}", Path::new("p.lock")).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `extra`"),
            "{error}"
        );
    }

    #[test]
    fn a_hand_edited_output_is_caught_by_the_content_hash() {
        let text = render(&sample()).replace("sha256:0abc", "sha256:0abd");
        let error = parse(&text, Path::new("p.lock")).unwrap_err();
        assert!(
            matches!(error, LockfileError::ContentHash { .. }),
            "{error}"
        );
    }
}
