//! Channel directories: one subdirectory per package, named `NAME-VERSION`, plus an optional
//! `channel.toml` that adds what a directory name cannot say (attribute path, meta, outputs).
//!
//! ```toml
//! format = 1
//! system = "x86_64-linux"            # optional default for every package
//!
//! [packages."hello-2.12.1"]
//! attr = "hello"
//! outputs = ["out", "man"]           # each output is a subdirectory of the package directory
//! [packages."hello-2.12.1".meta]     # Nix meta attributes, with Nix's names
//! description = "…"
//! priority = 10
//! outputsToInstall = ["out", "man"]
//! ```
//!
//! Owns the metadata format and its validation; turns a listing of the directory (given as
//! data) plus the metadata text into catalog entries. Pure: the listing is read by
//! [`crate::source`].

use super::catalog::{CatalogEntry, meta_int};
use crate::version::split_drv_name;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use toml::Spanned;

/// The metadata file's name inside a channel directory.
pub const METADATA_FILE: &str = "channel.toml";

/// The metadata format this version of declenv reads.
pub const METADATA_FORMAT: i64 = 1;

/// One package directory found in a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageDirectory {
    /// The directory's name, `NAME-VERSION`.
    pub name: String,
    /// Names of its immediate subdirectories (multiple-output packages keep one per output).
    pub subdirectories: Vec<String>,
}

/// Channel metadata that cannot be used. Positions are 1-based and refer to `channel.toml`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The file is not valid TOML or does not have the expected shape.
    #[error("{message} at line {line} column {column}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// Line of the problem.
        line: usize,
        /// Column of the problem.
        column: usize,
    },
    /// Two packages ended up with the same attribute path.
    #[error("packages `{first}` and `{second}` both have the attribute path `{attr_path}`")]
    DuplicateAttrPath {
        /// The attribute path they share.
        attr_path: String,
        /// The first package directory.
        first: String,
        /// The second package directory.
        second: String,
    },
}

impl ChannelError {
    /// A hint for the user, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::DuplicateAttrPath { second, .. } => Some(format!(
                "give one of them its own `attr` in `[packages.\"{second}\"]` of `{METADATA_FILE}`"
            )),
            Self::Invalid { .. } => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataWire {
    format: Spanned<i64>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    packages: BTreeMap<Spanned<String>, PackageWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackageWire {
    #[serde(default)]
    attr: Option<Spanned<String>>,
    #[serde(default)]
    outputs: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    meta: Option<Spanned<toml::Table>>,
}

/// Converts a byte offset into a 1-based line and column (columns count characters).
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn invalid_at(text: &str, offset: usize, message: String) -> ChannelError {
    let (line, column) = line_column(text, offset);
    ChannelError::Invalid {
        message,
        line,
        column,
    }
}

/// Checks that an attribute path is made of names `nix-env` would walk.
fn valid_attr_path(attr_path: &str) -> bool {
    attr_path.split('.').all(|component| {
        let mut bytes = component.bytes();
        matches!(bytes.next(), Some(b'A'..=b'Z' | b'a'..=b'z' | b'_'))
            && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'\''))
    })
}

/// The attribute path a package gets when the metadata does not give one: its package name,
/// or, when several directories share that name, `NAME_VERSION` (nixpkgs' `hello_2_10` style).
fn default_attr_path(directory: &str, name_is_shared: bool) -> String {
    let (name, version) = split_drv_name(directory);
    let base = if name_is_shared && !version.is_empty() {
        format!("{name}_{version}")
    } else {
        name.to_owned()
    };
    let mut attr: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '\'') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !attr.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        attr.insert(0, '_');
    }
    attr
}

fn toml_to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(text) => Value::String(text),
        toml::Value::Integer(number) => Value::from(number),
        toml::Value::Float(number) => Value::from(number),
        toml::Value::Boolean(flag) => Value::Bool(flag),
        toml::Value::Datetime(datetime) => Value::String(datetime.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(
            table
                .into_iter()
                .map(|(key, value)| (key, toml_to_json(value)))
                .collect(),
        ),
    }
}

/// Builds the catalog entries of a channel from its directory listing and metadata text.
///
/// Each entry's `trees` name its outputs' directories relative to the channel: the package
/// directory itself for a package without declared outputs, `DIRECTORY/OUTPUT` otherwise.
///
/// `host_system` is the system of packages whose metadata does not name one (channel packages
/// are usually scripts or prebuilt trees for the machine they sit on).
pub fn channel_entries(
    directories: &[PackageDirectory],
    metadata: Option<&str>,
    host_system: &str,
) -> Result<Vec<CatalogEntry>, ChannelError> {
    let text = metadata.unwrap_or("format = 1");
    let wire: MetadataWire = toml::from_str(text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        invalid_at(text, offset, error.message().trim_end().to_owned())
    })?;
    if *wire.format.get_ref() != METADATA_FORMAT {
        return Err(invalid_at(
            text,
            wire.format.span().start,
            format!(
                "unsupported channel metadata format {} (this declenv reads format {METADATA_FORMAT})",
                wire.format.get_ref()
            ),
        ));
    }
    let by_directory: HashMap<&str, &PackageDirectory> = directories
        .iter()
        .map(|directory| (directory.name.as_str(), directory))
        .collect();
    for key in wire.packages.keys() {
        if !by_directory.contains_key(key.get_ref().as_str()) {
            return Err(invalid_at(
                text,
                key.span().start,
                format!(
                    "package `{}` has metadata but no directory in the channel",
                    key.get_ref()
                ),
            ));
        }
    }
    let packages: HashMap<&str, &PackageWire> = wire
        .packages
        .iter()
        .map(|(key, package)| (key.get_ref().as_str(), package))
        .collect();

    let mut name_counts: HashMap<&str, usize> = HashMap::new();
    for directory in directories {
        *name_counts
            .entry(split_drv_name(&directory.name).0)
            .or_default() += 1;
    }

    let mut entries = Vec::with_capacity(directories.len());
    let mut attr_owner: HashMap<String, String> = HashMap::new();
    for directory in directories {
        let package = packages.get(directory.name.as_str()).copied();
        let entry = package_entry(
            text,
            directory,
            package,
            name_counts[split_drv_name(&directory.name).0] > 1,
            wire.system.as_deref().unwrap_or(host_system),
        )?;
        if let Some(first) = attr_owner.insert(entry.attr_path.clone(), directory.name.clone()) {
            let (first, second) = if first <= directory.name {
                (first, directory.name.clone())
            } else {
                (directory.name.clone(), first)
            };
            return Err(ChannelError::DuplicateAttrPath {
                attr_path: entry.attr_path,
                first,
                second,
            });
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn package_entry(
    text: &str,
    directory: &PackageDirectory,
    package: Option<&PackageWire>,
    name_is_shared: bool,
    default_system: &str,
) -> Result<CatalogEntry, ChannelError> {
    let attr_path = match package.and_then(|package| package.attr.as_ref()) {
        Some(attr) if valid_attr_path(attr.get_ref()) => attr.get_ref().clone(),
        Some(attr) => {
            return Err(invalid_at(
                text,
                attr.span().start,
                format!(
                    "`{}` is not an attribute path (names start with a letter or `_`, separated by `.`)",
                    attr.get_ref()
                ),
            ));
        }
        None => default_attr_path(&directory.name, name_is_shared),
    };

    let mut outputs = BTreeMap::new();
    let mut trees = BTreeMap::new();
    match package.and_then(|package| package.outputs.as_ref()) {
        Some(declared) => {
            if declared.get_ref().is_empty() {
                return Err(invalid_at(
                    text,
                    declared.span().start,
                    format!("package `{}` declares no outputs", directory.name),
                ));
            }
            for output in declared.get_ref() {
                if !directory.subdirectories.iter().any(|sub| sub == output) {
                    return Err(invalid_at(
                        text,
                        declared.span().start,
                        format!(
                            "output `{output}` of package `{}` has no directory `{}/{output}`",
                            directory.name, directory.name
                        ),
                    ));
                }
                outputs.insert(output.clone(), None);
                trees.insert(output.clone(), format!("{}/{output}", directory.name));
            }
        }
        None => {
            outputs.insert("out".to_owned(), None);
            trees.insert("out".to_owned(), directory.name.clone());
        }
    }

    let mut meta = Map::new();
    if let Some(table) = package.and_then(|package| package.meta.as_ref()) {
        for (key, value) in table.get_ref().clone() {
            meta.insert(key, toml_to_json(value));
        }
        validate_meta(text, table.span().start, &directory.name, &meta, &outputs)?;
    }

    Ok(CatalogEntry {
        attr_path,
        name: directory.name.clone(),
        system: Some(
            package
                .and_then(|package| package.system.clone())
                .unwrap_or_else(|| default_system.to_owned()),
        ),
        output_name: "out".to_owned(),
        outputs,
        meta,
        trees,
    })
}

/// Rejects meta values that Nix would misread silently (a priority that is not an integer) or
/// refuse later (`outputsToInstall` naming a missing output).
fn validate_meta(
    text: &str,
    offset: usize,
    package: &str,
    meta: &Map<String, Value>,
    outputs: &BTreeMap<String, Option<String>>,
) -> Result<(), ChannelError> {
    if let Some(priority) = meta.get("priority")
        && meta_int(priority).is_none()
    {
        return Err(invalid_at(
            text,
            offset,
            format!("`meta.priority` of package `{package}` must be an integer, not {priority}"),
        ));
    }
    if let Some(value) = meta.get("outputsToInstall") {
        let names: Option<Vec<&str>> = value
            .as_array()
            .and_then(|items| items.iter().map(Value::as_str).collect());
        match names {
            Some(names) if names.iter().all(|name| outputs.contains_key(*name)) => {}
            _ => {
                return Err(invalid_at(
                    text,
                    offset,
                    format!(
                        "`meta.outputsToInstall` of package `{package}` must list some of its outputs ({})",
                        outputs.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    for key in ["description", "longDescription"] {
        if let Some(value) = meta.get(key)
            && !value.is_string()
        {
            return Err(invalid_at(
                text,
                offset,
                format!("`meta.{key}` of package `{package}` must be a string"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn directory(name: &str, subdirectories: &[&str]) -> PackageDirectory {
        PackageDirectory {
            name: name.to_owned(),
            subdirectories: subdirectories.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn listing() -> Vec<PackageDirectory> {
        vec![
            directory("hello-2.10", &["bin"]),
            directory("hello-2.12.1", &["bin"]),
            directory("jq-1.7.1", &["out", "man", "doc"]),
            directory("demo-motd", &["bin"]),
        ]
    }

    #[test]
    fn without_metadata_every_directory_is_a_package() {
        let entries = channel_entries(&listing(), None, "x86_64-linux").expect("valid");
        let attrs: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.attr_path.as_str(), e.name.as_str()))
            .collect();
        assert_eq!(
            attrs,
            [
                ("hello_2_10", "hello-2.10"),
                ("hello_2_12_1", "hello-2.12.1"),
                ("jq", "jq-1.7.1"),
                ("demo-motd", "demo-motd"),
            ]
        );
        assert!(
            entries
                .iter()
                .all(|e| e.system.as_deref() == Some("x86_64-linux"))
        );
    }

    #[test]
    fn metadata_sets_attr_outputs_and_meta() {
        let metadata = r#"
format = 1
[packages."hello-2.12.1"]
attr = "hello"
[packages."jq-1.7.1"]
outputs = ["out", "man", "doc"]
[packages."jq-1.7.1".meta]
description = "JSON processor"
priority = "4"
outputsToInstall = ["out", "man"]
"#;
        let entries = channel_entries(&listing(), Some(metadata), "x86_64-linux").expect("valid");
        let jq = entries.iter().find(|e| e.name == "jq-1.7.1").expect("jq");
        assert_eq!(jq.outputs.keys().collect::<Vec<_>>(), ["doc", "man", "out"]);
        assert_eq!(jq.outputs_to_install(), ["out", "man"]);
        assert_eq!(
            jq.trees.get("man").map(String::as_str),
            Some("jq-1.7.1/man")
        );
        let hello = entries
            .iter()
            .find(|e| e.name == "hello-2.10")
            .expect("hello");
        assert_eq!(
            hello.trees.get("out").map(String::as_str),
            Some("hello-2.10")
        );
        assert_eq!(jq.selection_priority(), 4);
        assert_eq!(jq.description(), Some("JSON processor"));
        assert!(entries.iter().any(|e| e.attr_path == "hello"));
    }

    #[rstest]
    #[case::syntax("format = 1\n[packages.\"x\"\n", 2, "")]
    #[case::unknown_key("format = 1\ncolour = 3\n", 2, "unknown field `colour`")]
    #[case::future_format("format = 2\n", 1, "unsupported channel metadata format 2")]
    #[case::missing_format("[packages]\n", 1, "missing field `format`")]
    #[case::no_directory("format = 1\n[packages.\"nope-1\"]\n", 2, "no directory")]
    #[case::bad_attr(
        "format = 1\n[packages.\"demo-motd\"]\nattr = \"9lives\"\n",
        3,
        "not an attribute path"
    )]
    #[case::missing_output(
        "format = 1\n[packages.\"jq-1.7.1\"]\noutputs = [\"out\", \"lib\"]\n",
        3,
        "`lib`"
    )]
    #[case::bad_priority(
        "format = 1\n[packages.\"jq-1.7.1\".meta]\npriority = \"high\"\n",
        2,
        "priority"
    )]
    #[case::bad_outputs_to_install(
        "format = 1\n[packages.\"jq-1.7.1\".meta]\noutputsToInstall = [\"man\"]\n",
        2,
        "outputsToInstall"
    )]
    fn bad_metadata_is_reported_with_position(
        #[case] metadata: &str,
        #[case] line: usize,
        #[case] fragment: &str,
    ) {
        let error = channel_entries(&listing(), Some(metadata), "x86_64-linux")
            .expect_err("bad metadata must fail");
        match &error {
            ChannelError::Invalid {
                message,
                line: got_line,
                ..
            } => {
                assert_eq!(*got_line, line, "{error}");
                assert!(message.contains(fragment), "{error}");
            }
            ChannelError::DuplicateAttrPath { .. } => panic!("unexpected {error}"),
        }
    }

    #[test]
    fn duplicate_attr_paths_are_refused_with_a_hint() {
        let metadata = "format = 1\n[packages.\"hello-2.10\"]\nattr = \"jq\"\n";
        let error = channel_entries(&listing(), Some(metadata), "x86_64-linux")
            .expect_err("duplicate must fail");
        assert_eq!(
            error.to_string(),
            "packages `hello-2.10` and `jq-1.7.1` both have the attribute path `jq`"
        );
        assert!(error.hint().is_some());
    }

    #[rstest]
    #[case(0, (1, 1))]
    #[case(4, (1, 5))]
    #[case(5, (2, 1))]
    #[case(7, (2, 3))]
    #[case(99, (2, 4))]
    fn positions_are_one_based(#[case] offset: usize, #[case] expected: (usize, usize)) {
        assert_eq!(line_column("abcd\nxyz", offset), expected);
    }
}
