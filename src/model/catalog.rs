//! Catalog entries: the available packages, in the shape `nix-env -qa --json --out-path --meta`
//! writes them, and the order Nix enumerates them in.
//!
//! Owns the entry type, the JSON parser (text in, entries out, errors with line and column) and
//! [`Catalog`], the indexed, enumeration-ordered list that selection runs over. Pure: reading
//! files and caching parsed catalogs belongs to [`crate::source`].

use crate::version::split_drv_name;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::OnceLock;

use super::packed::{PackedCatalog, TooLarge};

/// One available package (one derivation, in Nix's terms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The attribute path it was found under (`hello`, `python312Packages.requests`).
    pub attr_path: String,
    /// The full derivation name, `NAME-VERSION`; selectors and version ordering work on this.
    pub name: String,
    /// The platform it is built for; `None` when the source did not say (Nix prints `unknown`).
    pub system: Option<String>,
    /// Nix's `outputName` attribute (`out` for anything made by `derivation`).
    pub output_name: String,
    /// Every output, by name, with its store path when the source knows it.
    pub outputs: BTreeMap<String, Option<String>>,
    /// The meta attributes, as JSON values (Nix attribute sets are sorted, and so is this map).
    pub meta: Map<String, Value>,
    /// Where each output's tree is on disk, for sources that ship trees (channels); empty for
    /// catalogs, whose outputs are store paths.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trees: BTreeMap<String, String>,
}

impl CatalogEntry {
    /// The package name: the full name up to the first dash followed by a non-letter.
    #[must_use]
    pub fn package_name(&self) -> &str {
        split_drv_name(&self.name).0
    }

    /// The version part of the full name (empty when the name has none).
    #[must_use]
    pub fn version(&self) -> &str {
        split_drv_name(&self.name).1
    }

    /// The system, or `unknown` as Nix reports a missing one.
    #[must_use]
    pub fn system_or_unknown(&self) -> &str {
        self.system.as_deref().unwrap_or("unknown")
    }

    /// `meta.priority` as Nix's `queryMetaInt("priority", 0)` reads it when *choosing* packages:
    /// an integer, or a string holding one; anything else (missing, float, garbage) is 0.
    #[must_use]
    pub fn selection_priority(&self) -> i64 {
        self.meta.get("priority").and_then(meta_int).unwrap_or(0)
    }

    /// `meta.description`, when it is a string.
    #[must_use]
    pub fn description(&self) -> Option<&str> {
        self.meta.get("description").and_then(Value::as_str)
    }

    /// The outputs to install: `meta.outputsToInstall` when it is present, otherwise all.
    #[must_use]
    pub fn outputs_to_install(&self) -> Vec<&str> {
        match self.meta.get("outputsToInstall").and_then(Value::as_array) {
            Some(names) => names.iter().filter_map(Value::as_str).collect(),
            None => self.outputs.keys().map(String::as_str).collect(),
        }
    }
}

/// Reads a meta value as an integer the way Nix 2.8's `queryMetaInt` does: a JSON integer, or a
/// string that `boost::lexical_cast<int64_t>` accepts (optional sign, then digits, nothing else).
#[must_use]
pub fn meta_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => parse_lexical_int(text),
        _ => None,
    }
}

fn parse_lexical_int(text: &str) -> Option<i64> {
    let digits = text
        .strip_prefix('-')
        .or_else(|| text.strip_prefix('+'))
        .unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok()
}

/// A catalog file that cannot be read as `nix-env -qa --json` output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at line {line} column {column}")]
pub struct CatalogJsonError {
    /// What is wrong, lowercase, naming the attribute path where one is known.
    pub message: String,
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column of the problem.
    pub column: usize,
}

/// The JSON shape of one entry. Unknown fields are ignored so that newer Nix output (`drvPath`)
/// still loads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryWire {
    name: String,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    output_name: Option<String>,
    #[serde(default)]
    outputs: Option<BTreeMap<String, Option<String>>>,
    #[serde(default)]
    meta: Option<Map<String, Value>>,
}

/// The whole file: an object keyed by attribute path, read in file order so that duplicate
/// keys can be reported instead of silently collapsing.
struct CatalogWire(Vec<CatalogEntry>);

impl<'de> Deserialize<'de> for CatalogWire {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CatalogVisitor;
        impl<'de> Visitor<'de> for CatalogVisitor {
            type Value = CatalogWire;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an object mapping attribute paths to packages")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CatalogWire, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                let mut seen = std::collections::HashSet::new();
                while let Some(attr_path) = map.next_key::<String>()? {
                    if !seen.insert(attr_path.clone()) {
                        return Err(de::Error::custom(format!(
                            "duplicate attribute path `{attr_path}`"
                        )));
                    }
                    let wire: EntryWire = map.next_value().map_err(|error| {
                        de::Error::custom(format!("in package `{attr_path}`: {error}"))
                    })?;
                    entries.push(CatalogEntry {
                        attr_path,
                        name: wire.name,
                        system: wire.system,
                        output_name: wire.output_name.unwrap_or_default(),
                        outputs: wire
                            .outputs
                            .unwrap_or_else(|| BTreeMap::from([("out".to_owned(), None)])),
                        meta: wire.meta.unwrap_or_default(),
                        trees: BTreeMap::new(),
                    });
                }
                Ok(CatalogWire(entries))
            }
        }
        deserializer.deserialize_map(CatalogVisitor)
    }
}

/// Parses the output of `nix-env -qa --json [--out-path] [--meta]`.
///
/// Returns the entries in file order; [`Catalog::new`] puts them in enumeration order.
pub fn parse_catalog_json(text: &str) -> Result<Vec<CatalogEntry>, CatalogJsonError> {
    serde_json::from_str::<CatalogWire>(text)
        .map(|wire| wire.0)
        .map_err(|error| {
            let full = error.to_string();
            // serde_json appends " at line L column C"; we report the position separately.
            let message = match full.rfind(" at line ") {
                Some(index) => full[..index].to_owned(),
                None => full,
            };
            CatalogJsonError {
                message,
                line: error.line().max(1),
                column: error.column().max(1),
            }
        })
}

/// Compares attribute paths in the order `nix-env` walks an expression: component by
/// component, attribute names as raw bytes (`lexicographicOrder`), list indices numerically.
///
/// A component made only of digits can only be a list index, since Nix skips attribute names
/// that do not start with a letter or `_`. Allocation-free: this runs n log n times when a large
/// catalog is ordered.
#[must_use]
pub fn compare_attr_paths(a: &str, b: &str) -> Ordering {
    let (left, right) = (a.as_bytes(), b.as_bytes());
    let common = left
        .iter()
        .zip(right)
        .position(|(l, r)| l != r)
        .unwrap_or_else(|| left.len().min(right.len()));
    let left_component = component_around(left, common);
    let right_component = component_around(right, common);
    if is_list_index(left_component) && is_list_index(right_component) {
        let (l, r) = (trim_zeros(left_component), trim_zeros(right_component));
        let order = l.len().cmp(&r.len()).then_with(|| l.cmp(r));
        if order != Ordering::Equal {
            return order;
        }
    }
    // Component-wise byte order is byte order with the separator ranked below every byte.
    let rank = |bytes: &[u8], index: usize| {
        bytes
            .get(index)
            .map(|&b| if b == b'.' { 0 } else { u16::from(b) + 1 })
    };
    rank(left, common).cmp(&rank(right, common))
}

/// The `.`-separated component of `path` that contains (or ends at) byte `index`.
fn component_around(path: &[u8], index: usize) -> &[u8] {
    let start = path[..index.min(path.len())]
        .iter()
        .rposition(|&b| b == b'.')
        .map_or(0, |dot| dot + 1);
    let end = path[start..]
        .iter()
        .position(|&b| b == b'.')
        .map_or(path.len(), |dot| start + dot);
    &path[start..end]
}

fn is_list_index(component: &[u8]) -> bool {
    !component.is_empty() && component.iter().all(u8::is_ascii_digit)
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let first = digits
        .iter()
        .position(|&d| d != b'0')
        .unwrap_or(digits.len());
    &digits[first..]
}

/// An indexed list of available packages from one or more sources.
///
/// Entries are kept in enumeration order: sources in the order given, and within a source the
/// order in which `nix-env` would walk the same expression. Selection ties go to the earlier
/// entry, so this order is part of the behaviour. Each source is a [`PackedCatalog`], so a
/// query reads names in place and decodes full entries only for the rows it prints.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    sources: Vec<PackedCatalog>,
    /// Index of the first entry of each source.
    starts: Vec<usize>,
    length: usize,
    /// Built on first lookup: a regex query over a large catalog never needs them.
    by_attr_path: OnceLock<HashMap<(usize, String), usize>>,
    by_package_name: OnceLock<HashMap<String, Vec<usize>>>,
    /// Distinct package names in byte order with their entries, for prefix lookups.
    sorted_package_names: OnceLock<Vec<(String, Vec<usize>)>>,
}

impl Catalog {
    /// Builds a catalog from per-source entry lists, sorting each into enumeration order.
    pub fn new(sources: Vec<Vec<CatalogEntry>>) -> Result<Self, TooLarge> {
        let packed = sources
            .into_iter()
            .map(|mut entries| {
                sort_for_enumeration(&mut entries);
                PackedCatalog::pack(&entries).map(|bytes| {
                    PackedCatalog::from_bytes(bytes).expect("freshly packed bytes are valid")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_packed(packed))
    }

    /// Builds a catalog from packed sources that are already in enumeration order.
    #[must_use]
    pub fn from_packed(sources: Vec<PackedCatalog>) -> Self {
        let mut starts = Vec::with_capacity(sources.len());
        let mut length = 0;
        for source in &sources {
            starts.push(length);
            length += source.len();
        }
        Self {
            sources,
            starts,
            length,
            ..Self::default()
        }
    }

    /// The entry at `index` (in enumeration order). Panics when out of range, like slicing.
    #[must_use]
    pub fn get(&self, index: usize) -> EntryRef<'_> {
        let source = self.starts.partition_point(|&start| start <= index) - 1;
        EntryRef {
            packed: &self.sources[source],
            local: index - self.starts[source],
            source,
        }
    }

    /// Every entry, in enumeration order.
    pub fn iter(&self) -> impl Iterator<Item = EntryRef<'_>> + '_ {
        self.sources
            .iter()
            .enumerate()
            .flat_map(|(source, packed)| {
                (0..packed.len()).map(move |local| EntryRef {
                    packed,
                    local,
                    source,
                })
            })
    }

    /// Looks up an attribute path within one source.
    #[must_use]
    pub fn by_attr_path(&self, source: usize, attr_path: &str) -> Option<EntryRef<'_>> {
        self.by_attr_path
            .get_or_init(|| {
                self.iter()
                    .enumerate()
                    .map(|(index, entry)| ((entry.source, entry.attr_path().to_owned()), index))
                    .collect()
            })
            .get(&(source, attr_path.to_owned()))
            .map(|&index| self.get(index))
    }

    /// Indices of the entries with this package name, in enumeration order.
    #[must_use]
    pub fn by_package_name(&self, package_name: &str) -> &[usize] {
        self.by_package_name
            .get_or_init(|| {
                let mut index: HashMap<String, Vec<usize>> = HashMap::new();
                for (position, entry) in self.iter().enumerate() {
                    index
                        .entry(entry.package_name().to_owned())
                        .or_default()
                        .push(position);
                }
                index
            })
            .get(package_name)
            .map_or(&[], Vec::as_slice)
    }

    /// Indices (in enumeration order) of the entries whose package name starts with `prefix`,
    /// has `length` bytes (when given) and passes `keep`.
    #[must_use]
    pub fn by_package_name_prefix(
        &self,
        prefix: &str,
        length: Option<usize>,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<usize> {
        // Sorted by length, then bytes: a prefix is one contiguous run within each length.
        let names = self.sorted_package_names.get_or_init(|| {
            let _ = self.by_package_name("");
            let mut names: Vec<(String, Vec<usize>)> = self
                .by_package_name
                .get()
                .map(|index| {
                    index
                        .iter()
                        .map(|(name, entries)| (name.clone(), entries.clone()))
                        .collect()
                })
                .unwrap_or_default();
            names.sort_unstable_by(|a, b| (a.0.len(), &a.0).cmp(&(b.0.len(), &b.0)));
            names
        });
        let longest = names.last().map_or(0, |(name, _)| name.len());
        let lengths = match length {
            Some(length) => length..=length,
            None => prefix.len()..=longest,
        };
        let mut indices = Vec::new();
        for length in lengths {
            let start =
                names.partition_point(|(name, _)| (name.len(), name.as_str()) < (length, prefix));
            indices.extend(
                names[start..]
                    .iter()
                    .take_while(|(name, _)| name.len() == length && name.starts_with(prefix))
                    .filter(|(name, _)| keep(name))
                    .flat_map(|(_, entries)| entries.iter().copied()),
            );
        }
        indices.sort_unstable();
        indices
    }

    /// Number of sources.
    #[must_use]
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// The enumeration index of an entry of this catalog.
    #[must_use]
    pub fn index_of(&self, entry: &EntryRef<'_>) -> usize {
        self.starts[entry.source] + entry.local
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.length
    }

    /// True when no source offered any package.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }
}

/// Sorts one source's entries into the order `nix-env` enumerates them.
pub fn sort_for_enumeration(entries: &mut [CatalogEntry]) {
    if !entries.is_sorted_by(|a, b| compare_attr_paths(&a.attr_path, &b.attr_path).is_le()) {
        entries.sort_by(|a, b| compare_attr_paths(&a.attr_path, &b.attr_path));
    }
}

/// A view of one catalog entry: cheap columns read in place, the rest decoded on demand.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    packed: &'a PackedCatalog,
    local: usize,
    source: usize,
}

impl<'a> EntryRef<'a> {
    /// The index of the source this entry came from.
    #[must_use]
    pub fn source(&self) -> usize {
        self.source
    }

    /// The attribute path.
    #[must_use]
    pub fn attr_path(&self) -> &'a str {
        self.packed.attr_path(self.local)
    }

    /// The full derivation name.
    #[must_use]
    pub fn name(&self) -> &'a str {
        self.packed.name(self.local)
    }

    /// The package name part of the full name.
    #[must_use]
    pub fn package_name(&self) -> &'a str {
        split_drv_name(self.name()).0
    }

    /// The version part of the full name.
    #[must_use]
    pub fn version(&self) -> &'a str {
        split_drv_name(self.name()).1
    }

    /// The system, or `unknown`.
    #[must_use]
    pub fn system_or_unknown(&self) -> &'a str {
        self.packed.system(self.local).unwrap_or("unknown")
    }

    /// `meta.description`, when it is a string.
    #[must_use]
    pub fn description(&self) -> Option<&'a str> {
        self.packed.description(self.local)
    }

    /// `meta.priority` as selection reads it.
    #[must_use]
    pub fn selection_priority(&self) -> i64 {
        self.packed.selection_priority(self.local)
    }

    /// The whole entry, decoded.
    #[must_use]
    pub fn to_entry(&self) -> Option<CatalogEntry> {
        self.packed.entry(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const SAMPLE: &str = r#"{
  "hello": {
    "name": "hello-2.12.1",
    "pname": "hello",
    "version": "2.12.1",
    "system": "x86_64-linux",
    "outputName": "out",
    "outputs": { "out": "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello-2.12.1" },
    "meta": { "description": "A program that produces a familiar, friendly greeting", "priority": "7" }
  },
  "baz": { "name": "baz", "pname": "baz", "version": "", "outputName": "", "outputs": { "out": null } }
}"#;

    #[test]
    fn parses_nix_env_json() {
        let entries = parse_catalog_json(SAMPLE).expect("sample parses");
        assert_eq!(entries.len(), 2);
        let hello = &entries[0];
        assert_eq!(hello.attr_path, "hello");
        assert_eq!(hello.package_name(), "hello");
        assert_eq!(hello.version(), "2.12.1");
        assert_eq!(hello.selection_priority(), 7);
        assert_eq!(hello.system_or_unknown(), "x86_64-linux");
        assert_eq!(
            hello.description(),
            Some("A program that produces a familiar, friendly greeting")
        );
        assert_eq!(entries[1].system_or_unknown(), "unknown");
        assert_eq!(entries[1].outputs.get("out"), Some(&None));
    }

    #[rstest]
    #[case::syntax(
        "{\n  \"a\": {\n    \"name\": \"x\",,\n",
        3,
        17,
        "key must be a string"
    )]
    #[case::missing_name("{\n  \"a\": { \"system\": \"x\" }\n}", 2, 24, "missing field `name`")]
    #[case::wrong_type("{ \"a\": { \"name\": 3 } }", 1, 18, "invalid type")]
    #[case::duplicate(
        "{ \"a\": { \"name\": \"x\" },\n  \"a\": { \"name\": \"y\" } }",
        2,
        5,
        "duplicate"
    )]
    #[case::not_object("[1, 2]", 1, 1, "invalid type")]
    #[case::empty("", 1, 1, "EOF")]
    fn malformed_json_reports_position(
        #[case] text: &str,
        #[case] line: usize,
        #[case] column: usize,
        #[case] fragment: &str,
    ) {
        let error = parse_catalog_json(text).expect_err("malformed input must fail");
        assert_eq!((error.line, error.column), (line, column), "{error}");
        assert!(error.message.contains(fragment), "{error}");
    }

    #[test]
    fn error_names_the_package() {
        let error = parse_catalog_json("{ \"pkgs.foo\": { \"name\": [] } }").expect_err("bad");
        assert!(error.message.contains("`pkgs.foo`"), "{error}");
    }

    #[rstest]
    #[case("a", "b", Ordering::Less)]
    #[case("a.c", "a-b", Ordering::Less)] // component-wise: `a` < `a-b`
    #[case("B", "a", Ordering::Less)] // bytes: uppercase first
    #[case("x.2", "x.10", Ordering::Less)] // list indices are numeric
    #[case("a", "a.b", Ordering::Less)]
    #[case("a.b", "a.b", Ordering::Equal)]
    #[case("x.9.a", "x.10", Ordering::Less)]
    #[case("x.010", "x.9", Ordering::Greater)]
    #[case("a.b-c", "a.b.c", Ordering::Greater)]
    #[case("ab", "a.b", Ordering::Greater)]
    fn attr_path_order(#[case] a: &str, #[case] b: &str, #[case] expected: Ordering) {
        assert_eq!(compare_attr_paths(a, b), expected);
        assert_eq!(compare_attr_paths(b, a), expected.reverse());
    }

    /// The reference definition: split into components and compare them one by one, list
    /// indices numerically (leading zeros, which Nix never prints, break ties as bytes).
    fn reference_order(a: &str, b: &str) -> Ordering {
        let is_index = |c: &str| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit());
        let (mut left, mut right) = (a.split('.'), b.split('.'));
        loop {
            let order = match (left.next(), right.next()) {
                (None, None) => return Ordering::Equal,
                (None, Some(_)) => return Ordering::Less,
                (Some(_), None) => return Ordering::Greater,
                (Some(l), Some(r)) if is_index(l) && is_index(r) => {
                    let (lt, rt) = (l.trim_start_matches('0'), r.trim_start_matches('0'));
                    lt.len().cmp(&rt.len()).then(lt.cmp(rt)).then(l.cmp(r))
                }
                (Some(l), Some(r)) => l.as_bytes().cmp(r.as_bytes()),
            };
            if order != Ordering::Equal {
                return order;
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_attr_order_matches_component_order(a in "[a-c0-2._-]{0,8}", b in "[a-c0-2._-]{0,8}") {
            proptest::prop_assert_eq!(compare_attr_paths(&a, &b), reference_order(&a, &b), "{} vs {}", a, b);
        }
    }

    #[rstest]
    #[case(Value::from(3), Some(3))]
    #[case(Value::from(-3), Some(-3))]
    #[case(Value::from("7"), Some(7))]
    #[case(Value::from("+7"), Some(7))]
    #[case(Value::from("-7"), Some(-7))]
    #[case(Value::from(" 7"), None)]
    #[case(Value::from("7a"), None)]
    #[case(Value::from(""), None)]
    #[case(Value::from(2.5), None)]
    #[case(Value::Bool(true), None)]
    fn meta_int_follows_query_meta_int(#[case] value: Value, #[case] expected: Option<i64>) {
        assert_eq!(meta_int(&value), expected);
    }

    #[test]
    fn catalog_enumerates_sources_in_order_and_paths_sorted() {
        let entry = |attr_path: &str, name: &str| CatalogEntry {
            attr_path: attr_path.to_owned(),
            name: name.to_owned(),
            system: None,
            output_name: "out".to_owned(),
            outputs: BTreeMap::new(),
            meta: Map::new(),
            trees: BTreeMap::new(),
        };
        let catalog = Catalog::new(vec![
            vec![entry("zed", "zed-1"), entry("alpha", "foo-1")],
            vec![entry("alpha", "foo-2")],
        ])
        .expect("packs");
        let names: Vec<&str> = catalog.iter().map(|e| e.name()).collect();
        assert_eq!(names, ["foo-1", "zed-1", "foo-2"]);
        assert_eq!(catalog.len(), 3);
        assert_eq!(catalog.by_package_name("foo"), &[0, 2]);
        assert_eq!(
            catalog.by_package_name_prefix("fo", None, |_| true),
            &[0, 2]
        );
        assert_eq!(
            catalog.by_package_name_prefix("fo", Some(3), |_| true),
            &[0, 2]
        );
        assert!(
            catalog
                .by_package_name_prefix("fo", Some(4), |_| true)
                .is_empty()
        );
        assert_eq!(
            catalog.by_package_name_prefix("", None, |_| true),
            (0..catalog.len()).collect::<Vec<_>>()
        );
        assert!(
            catalog
                .by_package_name_prefix("fo", None, |_| false)
                .is_empty()
        );
        assert!(
            catalog
                .by_package_name_prefix("zz", None, |_| true)
                .is_empty()
        );
        assert_eq!(
            catalog.by_attr_path(1, "alpha").map(|e| e.name()),
            Some("foo-2")
        );
        assert_eq!(catalog.get(2).source(), 1);
        assert_eq!(catalog.get(1).name(), "zed-1");
        assert_eq!(
            catalog.get(0).to_entry().map(|e| e.attr_path),
            Some("alpha".to_owned())
        );
    }
}
