//! The profile spec, `profile.toml`: which sources packages come from and which packages the
//! profile holds, each under a stable id with its selection, version constraint and flags.
//!
//! Pure: parses text into a validated [`Spec`] (or one error with line and column) plus
//! warnings for keys it does not know. The serde types here are also what `schema/` is
//! generated from, so the schema cannot drift from the parser.

use super::constraint::VersionConstraint;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The spec format this declenv reads and writes.
pub const SPEC_VERSION: u32 = 1;

/// `profile.toml` as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(title = "declenv profile spec (profile.toml)")]
pub struct SpecDocument {
    /// The format version of this file; this declenv reads version 1.
    pub version: u32,
    /// Which store and profiles the spec manages: `embedded` (declenv's own store under its
    /// root) or `nix` (the real Nix store, through Nix's own commands). By default `nix` when a
    /// source is a Nix expression, else `embedded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    /// Binary caches `apply` fetches missing store paths from, in order, before it adds a
    /// package's tree from its source or fails: `file:///DIR` URLs, or directories relative
    /// to this file, holding caches in Nix's layout (`declenv store copy --to`, `nix copy --to
    /// 'file:///DIR?compression=none'`). Every archive fetched is checked against its hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substituters: Vec<String>,
    /// Where packages come from, by name, in the order they are searched.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub sources: IndexMap<String, SourceSpec>,
    /// The packages the profile holds, by id (any name; it stays stable across upgrades).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub packages: IndexMap<String, PackageSpec>,
}

/// One source: exactly one of `channel`, `catalog` or `nix`. Relative paths are relative to
/// the directory of `profile.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct SourceSpec {
    /// A channel directory: package trees plus `channel.toml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// A catalog JSON file as written by `nix-env -qa --json --out-path --meta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    /// A Nix expression evaluated by the real Nix (`backend = "nix"` only): a search-path
    /// lookup such as `<nixpkgs>`, or a file or directory (`./pkgs.nix`, `/src/nixpkgs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nix: Option<String>,
}

/// The stores a spec can manage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// declenv's own store under its root.
    #[default]
    Embedded,
    /// The real Nix store, reached through `nix-env`, `nix-build` and `nix-store`.
    Nix,
}

impl BackendKind {
    /// The name as written in the spec and on the command line.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Nix => "nix",
        }
    }
}

/// One wanted package. Select it by `attr` (an attribute path: its identity), by `name` (a
/// `nix-env` selector) or by `store-path`; with none of them, the id is used as the selector.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct PackageSpec {
    /// Attribute path in the source, e.g. `python312Packages.requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attr: Option<String>,
    /// A `nix-env` selector: a package name (a POSIX extended regex) with an optional exact
    /// version, e.g. `hello` or `hello-2.12`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A store path to install as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_path: Option<String>,
    /// Versions allowed, ordered as Nix orders them: `>=2.10`, `<3`, `=2.12.1`, `>=2.10, <3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The source to take it from; by default every source, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Outputs to install; by default the package's `meta.outputsToInstall`, else `out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<String>>,
    /// Collision priority: lower wins; packages without one count as 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Never upgrade it (`declenv lock --update` and `nix-env -u` leave it alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<bool>,
    /// Whether its files are linked into the profile; `false` keeps it installed but unlinked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// Where packages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Its name in `[sources]`.
    pub id: String,
    /// A channel or a catalog.
    pub kind: SourceKind,
    /// The path as written.
    pub written: String,
    /// The path resolved against the spec's directory (a `<name>` lookup stays as written).
    pub path: PathBuf,
}

impl Source {
    /// The search-path entry of a `nix = "<name>"` source.
    #[must_use]
    pub fn search_path_entry(&self) -> Option<&str> {
        if self.kind != SourceKind::Nix {
            return None;
        }
        self.written.strip_prefix('<')?.strip_suffix('>')
    }
}

/// The kinds of source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// A channel directory.
    Channel,
    /// A catalog JSON file.
    Catalog,
    /// A Nix expression evaluated by the real Nix.
    Nix,
}

/// A binary cache `apply` fetches store paths from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substituter {
    /// The entry as written.
    pub written: String,
    /// The cache's directory, resolved against the spec's directory.
    pub directory: PathBuf,
}

/// How a package is selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// By attribute path.
    Attr(String),
    /// By `nix-env` selector.
    Name(String),
    /// A store path as is.
    StorePath(String),
}

/// The flags a package can set; `None` leaves the package's own meta in charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    /// `priority`.
    pub priority: Option<i32>,
    /// `keep`.
    pub keep: Option<bool>,
    /// `active`.
    pub active: Option<bool>,
}

/// One validated package request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRequest {
    /// The id (its key under `[packages]`).
    pub id: String,
    /// How it is selected.
    pub selection: Selection,
    /// Versions allowed.
    pub constraint: Option<VersionConstraint>,
    /// Index into [`Spec::sources`], when restricted to one source.
    pub source: Option<usize>,
    /// Outputs to install, when given.
    pub outputs: Option<Vec<String>>,
    /// Flags.
    pub flags: Flags,
    /// A hash of the normalised entry: when it changes, the entry is locked again.
    pub entry_hash: String,
}

/// A validated spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The sources, in the order they are searched.
    pub sources: Vec<Source>,
    /// The packages, in file order.
    pub packages: Vec<PackageRequest>,
    /// The binary caches to fetch missing store paths from, in order.
    pub substituters: Vec<Substituter>,
    /// The backend the spec asks for (`embedded` when it does not say).
    pub backend: BackendKind,
}

/// The backend of a spec that does not name one: a spec with a Nix expression among its
/// sources is for the Nix backend (no other can build it), any other for the embedded store.
#[must_use]
pub fn implied_backend(document: &SpecDocument) -> BackendKind {
    if document.sources.values().any(|source| source.nix.is_some()) {
        BackendKind::Nix
    } else {
        BackendKind::Embedded
    }
}

/// The hint for text that is not TOML.
const SYNTAX_HINT: &str = "fix the TOML syntax there (https://toml.io describes it)";

/// The hint for TOML that is not a spec (a value of the wrong type, say).
const SCHEMA_HINT: &str = "`declenv schema profile` prints every key and its type";

/// A key declenv does not know, reported with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecWarning {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for SpecWarning {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Why a spec is not usable: one error, with its location when it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid profile spec `{}` at line {line}, column {column}: {message}", path.display())]
pub struct SpecError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

/// A parsed spec and its warnings.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The validated spec.
    pub spec: Spec,
    /// The document as written (for the schema and for `init`).
    pub document: SpecDocument,
    /// Unknown keys.
    pub warnings: Vec<SpecWarning>,
    /// Where each package's entry and fields are, so that a package the sources cannot give is
    /// reported at its place in the file.
    pub package_locations: BTreeMap<String, PackageLocation>,
}

/// Where a package's entry is written in the spec: 1-based lines and columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageLocation {
    /// The entry's key (`[packages.ID]` or `ID = { … }`).
    pub entry: (usize, usize),
    /// Each field's value, by field name.
    pub fields: BTreeMap<String, (usize, usize)>,
}

impl PackageLocation {
    /// The value of the first of `fields` the entry sets, else the entry itself.
    #[must_use]
    pub fn of(&self, fields: &[&str]) -> (usize, usize) {
        fields
            .iter()
            .find_map(|field| self.fields.get(*field).copied())
            .unwrap_or(self.entry)
    }
}

/// Converts a byte offset into a 1-based line and column (columns count characters).
#[must_use]
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |position| position + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Parses `text`, the content of the spec at `path`.
pub fn parse(text: &str, path: &Path) -> Result<Parsed, SpecError> {
    let located = |span: Option<Range<usize>>, message: String, hint: Option<String>| {
        let (line, column) = line_column(text, span.map_or(0, |span| span.start));
        SpecError {
            path: path.to_owned(),
            line,
            column,
            message,
            hint,
        }
    };
    let deserializer = toml::de::Deserializer::parse(text).map_err(|error| {
        located(
            error.span(),
            error.message().trim().to_owned(),
            Some(SYNTAX_HINT.to_owned()),
        )
    })?;
    let mut unknown = Vec::new();
    let document: SpecDocument = serde_ignored::deserialize(deserializer, |key| {
        unknown.push(key.to_string());
    })
    .map_err(|error| {
        let hint = if error.message().contains("missing field `version`") {
            format!("start the file with `version = {SPEC_VERSION}`")
        } else {
            SCHEMA_HINT.to_owned()
        };
        located(error.span(), error.message().trim().to_owned(), Some(hint))
    })?;
    // The serde pass accepted the text, so the span-keeping parse does too.
    let spans = toml_edit::Document::parse(text).ok();
    let span_of = |keys: &[&str], key_span: bool| -> Option<Range<usize>> {
        let spans = spans.as_ref()?;
        let mut item = spans.as_item();
        let (last, parents) = keys.split_last()?;
        for key in parents {
            item = item.get(*key)?;
        }
        let table = item.as_table_like()?;
        if key_span {
            table.get_key_value(last)?.0.span()
        } else {
            table.get(last)?.span()
        }
    };
    let mut warnings = Vec::new();
    for key in unknown {
        let keys: Vec<&str> = key.split('.').collect();
        let (line, column) = line_column(text, span_of(&keys, true).map_or(0, |span| span.start));
        warnings.push(SpecWarning {
            path: path.to_owned(),
            line,
            column,
            message: format!("unknown key `{key}` (ignored)"),
        });
    }
    if document.version != SPEC_VERSION {
        return Err(located(
            span_of(&["version"], false),
            format!(
                "this is a version {} spec; this declenv reads version {SPEC_VERSION}",
                document.version
            ),
            Some(if document.version > SPEC_VERSION {
                "upgrade declenv to read it".to_owned()
            } else {
                format!("set `version = {SPEC_VERSION}`")
            }),
        ));
    }
    let directory = path.parent().unwrap_or(Path::new(""));
    let mut sources = Vec::new();
    for (id, source) in &document.sources {
        let (kind, written) = match (&source.channel, &source.catalog, &source.nix) {
            (Some(channel), None, None) => (SourceKind::Channel, channel),
            (None, Some(catalog), None) => (SourceKind::Catalog, catalog),
            (None, None, Some(expression)) => (SourceKind::Nix, expression),
            _ => {
                return Err(located(
                    span_of(&["sources", id], false),
                    format!("source `{id}` needs exactly one of `channel`, `catalog` or `nix`"),
                    Some(format!(
                        "write `channel = \"DIR\"`, `catalog = \"FILE.json\"` or `nix = \"<nixpkgs>\"` under `[sources.{id}]`"
                    )),
                ));
            }
        };
        if kind == SourceKind::Nix && document.backend == Some(BackendKind::Embedded) {
            return Err(located(
                span_of(&["sources", id, "nix"], false),
                format!("source `{id}` is a Nix expression, which only the Nix backend can build"),
                Some("set `backend = \"nix\"` at the top of the spec".to_owned()),
            ));
        }
        let resolved = if kind == SourceKind::Nix && written.starts_with('<') {
            if !(written.len() > 2 && written.ends_with('>')) {
                return Err(located(
                    span_of(&["sources", id, "nix"], false),
                    format!("`{written}` is not a search-path lookup"),
                    Some("write `<nixpkgs>`, or a path to a file or directory".to_owned()),
                ));
            }
            PathBuf::from(written)
        } else {
            directory.join(written)
        };
        sources.push(Source {
            id: id.clone(),
            kind,
            written: written.clone(),
            path: resolved,
        });
    }
    let mut substituters = Vec::new();
    for written in &document.substituters {
        let directory = substituter_directory(written, directory).map_err(|(message, hint)| {
            located(span_of(&["substituters"], false), message, Some(hint))
        })?;
        substituters.push(Substituter {
            written: written.clone(),
            directory,
        });
    }
    let mut packages = Vec::new();
    let mut package_locations = BTreeMap::new();
    for (id, package) in &document.packages {
        let field = |name: &str| span_of(&["packages", id, name], false);
        let at = |span: Option<Range<usize>>| line_column(text, span.map_or(0, |span| span.start));
        let entry = span_of(&["packages", id], true).or_else(|| span_of(&["packages", id], false));
        package_locations.insert(
            id.clone(),
            PackageLocation {
                entry: at(entry),
                fields: ["attr", "name", "store-path", "version", "outputs"]
                    .into_iter()
                    .filter_map(|name| Some((name.to_owned(), at(Some(field(name)?)))))
                    .collect(),
            },
        );
        let selection = match (&package.attr, &package.name, &package.store_path) {
            (Some(attr), None, None) => Selection::Attr(attr.clone()),
            (None, Some(name), None) => Selection::Name(name.clone()),
            (None, None, Some(store_path)) => Selection::StorePath(store_path.clone()),
            (None, None, None) => Selection::Name(id.clone()),
            _ => {
                return Err(located(
                    span_of(&["packages", id], false),
                    format!("package `{id}` sets more than one of `attr`, `name` and `store-path`"),
                    Some("keep the one that says how to find the package".to_owned()),
                ));
            }
        };
        for (key, empty) in [
            ("attr", package.attr.as_deref() == Some("")),
            ("name", package.name.as_deref() == Some("")),
            ("store-path", package.store_path.as_deref() == Some("")),
        ] {
            if empty {
                return Err(located(
                    field(key),
                    format!("package `{id}` has an empty `{key}`"),
                    Some(format!("give `{key}` a value, or remove it")),
                ));
            }
        }
        if let Selection::StorePath(store_path) = &selection {
            if !store_path.starts_with('/') {
                return Err(located(
                    field("store-path"),
                    format!("package `{id}`: `store-path` must be absolute, not `{store_path}`"),
                    Some("write the whole path, such as `/nix/store/…-hello-2.12.1`".to_owned()),
                ));
            }
            if package.source.is_some() || package.version.is_some() {
                return Err(located(
                    field(if package.source.is_some() {
                        "source"
                    } else {
                        "version"
                    }),
                    format!("package `{id}` is a store path; `source` and `version` do not apply"),
                    Some(
                        "remove them, or select the package with `attr` or `name` instead"
                            .to_owned(),
                    ),
                ));
            }
        }
        let constraint = match &package.version {
            None => None,
            Some(text) => Some(VersionConstraint::parse(text).map_err(|error| {
                located(
                    field("version"),
                    format!("package `{id}` has a bad version constraint `{text}`: {error}"),
                    Some(
                        "write bounds such as `>=2.10`, `<3`, `=2.12.1` or `>=2.10, <3`".to_owned(),
                    ),
                )
            })?),
        };
        let source = match &package.source {
            None => None,
            Some(name) => Some(
                sources
                    .iter()
                    .position(|source| &source.id == name)
                    .ok_or_else(|| {
                        let known: Vec<String> = sources
                            .iter()
                            .map(|source| format!("`{}`", source.id))
                            .collect();
                        located(
                            field("source"),
                            format!("package `{id}` names unknown source `{name}`"),
                            Some(if known.is_empty() {
                                format!("declare it under `[sources.{name}]`")
                            } else {
                                format!(
                                    "declare it under `[sources.{name}]`, or use one of {}",
                                    known.join(", ")
                                )
                            }),
                        )
                    })?,
            ),
        };
        if let Some(outputs) = &package.outputs
            && (outputs.is_empty() || outputs.iter().any(String::is_empty))
        {
            {
                return Err(located(
                    field("outputs"),
                    format!("package `{id}` has an empty output list or output name"),
                    Some("leave `outputs` out to install the package's default outputs".to_owned()),
                ));
            }
        }
        let mut normalised = package.clone();
        normalised.version = constraint.as_ref().map(ToString::to_string);
        if let Some(outputs) = &mut normalised.outputs {
            outputs.sort();
            outputs.dedup();
        }
        packages.push(PackageRequest {
            id: id.clone(),
            selection,
            constraint,
            source,
            outputs: normalised.outputs.clone(),
            flags: Flags {
                priority: package.priority,
                keep: package.keep,
                active: package.active,
            },
            entry_hash: entry_hash(&normalised),
        });
    }
    let backend = document
        .backend
        .unwrap_or_else(|| implied_backend(&document));
    if backend == BackendKind::Nix && !substituters.is_empty() {
        return Err(located(
            span_of(&["substituters"], false),
            "`substituters` are for the embedded store; the Nix backend fetches through Nix"
                .to_owned(),
            Some("set `substituters` in `nix.conf` and remove them here".to_owned()),
        ));
    }
    Ok(Parsed {
        spec: Spec {
            sources,
            packages,
            substituters,
            backend,
        },
        document,
        warnings,
        package_locations,
    })
}

/// The directory of a substituter: a `file:///DIR` URL (Nix's parameters after `?` are
/// allowed; only `compression=none` can be read), or a directory relative to the spec's.
fn substituter_directory(
    written: &str,
    spec_directory: &Path,
) -> Result<PathBuf, (String, String)> {
    let local = "declenv fetches from binary caches on a local file system: write `file:///DIR` or a directory".to_owned();
    if let Some(rest) = written.strip_prefix("file://") {
        let (path, parameters) = rest.split_once('?').unwrap_or((rest, ""));
        if !path.starts_with('/') {
            return Err((
                format!("substituter `{written}` does not name an absolute directory"),
                "write `file:///DIR` (three slashes), or a directory relative to the spec"
                    .to_owned(),
            ));
        }
        if let Some(compression) = parameters
            .split('&')
            .filter_map(|parameter| parameter.strip_prefix("compression="))
            .find(|compression| *compression != "none")
        {
            return Err((
                format!("substituter `{written}` is compressed with `{compression}`, which declenv cannot read"),
                "write the cache uncompressed (`declenv store copy --to`, or `nix copy --to 'file:///DIR?compression=none'`)".to_owned(),
            ));
        }
        return Ok(PathBuf::from(path));
    }
    if written.is_empty() {
        return Err(("a substituter is empty".to_owned(), local));
    }
    if written.contains("://") {
        return Err((
            format!("substituter `{written}` is not supported"),
            local + " (`http://` caches are not supported)",
        ));
    }
    Ok(spec_directory.join(written))
}

/// `sha256:<hex>` of the entry's canonical JSON.
fn entry_hash(package: &PackageSpec) -> String {
    let json = serde_json::to_vec(package).unwrap_or_default();
    format!("sha256:{}", crate::store::path::hex(&Sha256::digest(&json)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn parse_text(text: &str) -> Result<Parsed, SpecError> {
        parse(text, Path::new("/home/u/dotfiles/profile.toml"))
    }

    #[test]
    fn nix_sources_keep_search_path_lookups_and_resolve_paths() {
        let parsed = parse_text(
            "version = 1\nbackend = \"nix\"\n[sources.nixpkgs]\nnix = \"<nixpkgs>\"\n[sources.local]\nnix = \"pkgs/default.nix\"\n",
        )
        .expect("parses");
        let spec = parsed.spec;
        assert_eq!(spec.backend, BackendKind::Nix);
        assert_eq!(spec.sources[0].kind, SourceKind::Nix);
        assert_eq!(spec.sources[0].search_path_entry(), Some("nixpkgs"));
        assert_eq!(spec.sources[0].path, Path::new("<nixpkgs>"));
        assert_eq!(spec.sources[1].search_path_entry(), None);
        assert_eq!(
            spec.sources[1].path,
            Path::new("/home/u/dotfiles/pkgs/default.nix")
        );
        let embedded = parse_text("version = 1\n").expect("parses");
        assert_eq!(embedded.spec.backend, BackendKind::Embedded);
        // A Nix expression among the sources implies the Nix backend.
        let implied = parse_text("version = 1\n[sources.n]\nnix = \"./pkgs\"\n").expect("parses");
        assert_eq!(implied.spec.backend, BackendKind::Nix);
    }

    #[test]
    fn parses_sources_and_packages_in_file_order() {
        let parsed = parse_text(
            r#"#:schema ./schema.json
version = 1
[sources.demo]
channel = "channel"
[sources.big]
catalog = "/srv/catalog.json"
[packages.zed]
attr = "zed"
source = "big"
[packages.hello]
version = ">=2.10, <3"
priority = 4
keep = true
active = false
outputs = ["out", "man", "out"]
[packages.tool]
store-path = "/nix/store/aaaa-tool-1.0"
"#,
        )
        .unwrap();
        assert!(parsed.warnings.is_empty());
        let spec = parsed.spec;
        assert_eq!(spec.sources[0].path, Path::new("/home/u/dotfiles/channel"));
        assert_eq!(spec.sources[1].kind, SourceKind::Catalog);
        let ids: Vec<_> = spec
            .packages
            .iter()
            .map(|package| package.id.as_str())
            .collect();
        assert_eq!(ids, ["zed", "hello", "tool"]);
        assert_eq!(spec.packages[0].source, Some(1));
        assert_eq!(
            spec.packages[1].selection,
            Selection::Name("hello".to_owned())
        );
        assert_eq!(
            spec.packages[1].flags,
            Flags {
                priority: Some(4),
                keep: Some(true),
                active: Some(false)
            }
        );
        assert_eq!(
            spec.packages[1].outputs.as_deref(),
            Some(&["man".to_owned(), "out".to_owned()][..])
        );
        assert!(matches!(
            spec.packages[2].selection,
            Selection::StorePath(_)
        ));
    }

    #[test]
    fn substituters_are_file_urls_or_directories() {
        let parsed = parse_text(
            "version = 1\nsubstituters = [\"file:///srv/cache?compression=none\", \"cache\"]\n",
        )
        .unwrap();
        let directories: Vec<&Path> = parsed
            .spec
            .substituters
            .iter()
            .map(|substituter| substituter.directory.as_path())
            .collect();
        assert_eq!(
            directories,
            [Path::new("/srv/cache"), Path::new("/home/u/dotfiles/cache")]
        );
        for (value, message) in [
            ("http://cache.example", "not supported"),
            ("file://relative", "absolute directory"),
            ("file:///srv/cache?compression=xz", "compressed with `xz`"),
            ("", "empty"),
        ] {
            let error =
                parse_text(&format!("version = 1\nsubstituters = [\"{value}\"]\n")).unwrap_err();
            assert!(error.message.contains(message), "{value}: {error}");
            assert_eq!((error.line, error.column), (2, 16), "{value}");
            assert!(error.hint.is_some());
        }
    }

    #[test]
    fn unknown_keys_warn_with_their_location() {
        let parsed = parse_text("version = 1\ncolour = 3\n[packages.hello]\nprio = 4\n").unwrap();
        let warnings: Vec<String> = parsed.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "/home/u/dotfiles/profile.toml:2:1: unknown key `colour` (ignored)",
                "/home/u/dotfiles/profile.toml:4:1: unknown key `packages.hello.prio` (ignored)",
            ]
        );
    }

    #[test]
    fn package_locations_point_at_entries_and_their_fields() {
        let parsed = parse_text(
            "version = 1\n[packages]\nfd = { attr = \"fd\", version = \">=9\" }\n\n[packages.hello]\n  name = \"hello\"\n",
        )
        .unwrap();
        let fd = &parsed.package_locations["fd"];
        assert_eq!(fd.entry, (3, 1));
        assert_eq!(fd.of(&["version", "attr"]), (3, 31));
        assert_eq!(fd.of(&["attr"]), (3, 15));
        assert_eq!(fd.of(&["outputs"]), (3, 1));
        let hello = &parsed.package_locations["hello"];
        assert_eq!(hello.entry, (5, 11));
        assert_eq!(hello.of(&["attr", "name"]), (6, 10));
    }
    #[test]
    fn entry_hash_changes_with_any_field_and_ignores_spelling() {
        let hash = |body: &str| {
            parse_text(&format!("version = 1\n[packages.p]\n{body}"))
                .unwrap()
                .spec
                .packages[0]
                .entry_hash
                .clone()
        };
        assert_eq!(hash("version = \">= 1\""), hash("version = \">=1\""));
        assert_eq!(
            hash("outputs = [\"a\", \"b\"]"),
            hash("outputs = [\"b\", \"a\"]")
        );
        let variants = [
            "",
            "name = \"p\"",
            "version = \">=1\"",
            "priority = 1",
            "keep = true",
            "active = false",
            "outputs = [\"out\"]",
        ];
        let hashes: std::collections::BTreeSet<_> =
            variants.iter().map(|body| hash(body)).collect();
        assert_eq!(hashes.len(), variants.len());
    }

    #[rstest]
    #[case(
        "version = 1\n[packages.a]\nattr = \"a\"\nname = \"b\"\n",
        2,
        1,
        "more than one of"
    )]
    #[case(
        "version = 1\n[packages.a]\nversion = \">=\"\n",
        3,
        11,
        "bad version constraint `>=`"
    )]
    #[case(
        "version = 1\n[packages.a]\nsource = \"nope\"\n",
        3,
        10,
        "unknown source `nope`"
    )]
    #[case(
        "version = 1\n[packages.a]\npriority = \"high\"\n",
        3,
        12,
        "invalid type"
    )]
    #[case("version = 1\n[packages.a]\nkeep = 1\n", 3, 8, "invalid type")]
    #[case(
        "version = 1\n[sources.s]\n",
        2,
        1,
        "exactly one of `channel`, `catalog` or `nix`"
    )]
    #[case(
        "version = 1\nbackend = \"embedded\"\n[sources.s]\nnix = \"<nixpkgs>\"\n",
        4,
        7,
        "only the Nix backend can build"
    )]
    #[case(
        "version = 1\nbackend = \"nix\"\n[sources.s]\nnix = \"<>\"\n",
        4,
        7,
        "not a search-path lookup"
    )]
    #[case(
        "version = 1\nbackend = \"nix\"\nsubstituters = [\"/cache\"]\n",
        3,
        16,
        "the Nix backend fetches through Nix"
    )]
    #[case("version = 1\nbackend = \"guix\"\n", 2, 11, "unknown variant")]
    #[case(
        "version = 1\n[sources.s]\nchannel = \"a\"\ncatalog = \"b\"\n",
        2,
        1,
        "exactly one"
    )]
    #[case("version = 2\n", 1, 11, "version 2 spec")]
    #[case("[packages.a]\n", 1, 1, "missing field `version`")]
    #[case("version = 1\n[packages.a\n", 2, 12, "")]
    #[case(
        "version = 1\n[packages.a]\nstore-path = \"relative\"\n",
        3,
        14,
        "must be absolute"
    )]
    #[case(
        "version = 1\n[packages.a]\noutputs = []\n",
        3,
        11,
        "empty output list"
    )]
    #[case("version = 1\n[packages.a]\nattr = \"\"\n", 3, 8, "empty `attr`")]
    fn errors_carry_line_and_column(
        #[case] text: &str,
        #[case] line: usize,
        #[case] column: usize,
        #[case] message: &str,
    ) {
        let error = parse_text(text).unwrap_err();
        assert_eq!((error.line, error.column), (line, column), "{error}");
        assert!(error.message.contains(message), "{error}");
        // Every error says what to do about it.
        assert!(error.hint.is_some(), "{error} has no hint");
    }
}
