//! What `nix-env -q` prints: the table (columns, padding, newlines folded), `--json` and
//! `--xml`, byte for byte as Nix 2.8's `opQuery` writes them.
//!
//! The caller chooses the elements (installed or available), filters them with the selectors
//! ([`crate::plan::select::filter_by_selectors`]), sorts them
//! ([`crate::plan::select::sort_for_query`]) and finds out what only the store knows (whether an
//! output path is valid); everything else happens here, from values.
//!
//! * Table columns come in a fixed order: status, attribute path, name, comparison, system,
//!   derivation path, output paths, description. Each is as wide as its widest value in bytes;
//!   every column but the last is padded to that width plus two spaces; newlines in values print
//!   as spaces. With no column at all (`--no-name` alone) every row is an empty line.
//! * `--json`: one object keyed by attribute path in row order (so the keys are not sorted),
//!   two-space indentation, Nix's string escapes (`\uXXXX` for control characters other than
//!   `\n`, `\r`, `\t`), floats as C++ prints them (`1`, `0.1`, `1e+20`, `1.23457e+08`).
//! * `--xml`: attributes in alphabetical order, `&quot; &lt; &gt; &amp; &#xA;` escaped, meta
//!   lists and sets as `type="strings"` with their string members only.

use crate::compat::args::QueryArgs;
use crate::plan::select::Candidate;
use crate::version::{compare_versions, split_drv_name};
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One element as `nix-env -q` sees it (a derivation of the available set, or an entry of
/// `manifest.nix`).
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// The attribute path (available), or the index in the manifest (installed).
    pub attr_path: String,
    /// The full name.
    pub name: String,
    /// The system, `unknown` when the element has none.
    pub system: String,
    /// Nix's `outputName` (`out` for derivations, empty for manifest entries).
    pub output_name: String,
    /// The outputs in name order, with their paths when known.
    pub outputs: BTreeMap<String, Option<String>>,
    /// `outPath`: the `out` output (or the element's own `outPath`).
    pub out_path: Option<String>,
    /// The derivation path, when there is one.
    pub drv_path: Option<String>,
    /// The meta attributes in name order; a `null` is an attribute Nix cannot convert (it
    /// prints an error line for it).
    pub meta: Map<String, Value>,
}

impl Element {
    /// `meta.description` when it is a string, else empty (Nix's `queryMetaString`).
    #[must_use]
    pub fn description(&self) -> &str {
        self.meta
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `meta.priority` as selection and upgrades read it (default 0).
    #[must_use]
    pub fn priority(&self) -> i64 {
        self.meta
            .get("priority")
            .and_then(crate::model::catalog::meta_int)
            .unwrap_or(0)
    }
}

impl Candidate for &Element {
    fn full_name(&self) -> &str {
        &self.name
    }
    fn system_or_unknown(&self) -> &str {
        &self.system
    }
    fn selection_priority(&self) -> i64 {
        self.priority()
    }
}

impl Candidate for Element {
    fn full_name(&self) -> &str {
        &self.name
    }
    fn system_or_unknown(&self) -> &str {
        &self.system
    }
    fn selection_priority(&self) -> i64 {
        self.priority()
    }
}

/// The status column (`-s`): installed, present in the store, substitutable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Its output path is the output path of an installed element.
    pub installed: bool,
    /// Its output path is valid in the store.
    pub valid: bool,
    /// Its output path could be substituted.
    pub substitutable: bool,
}

/// The `-c` column: how an element's version compares with the same package in the other set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// `<` (something newer exists), `=` (an equal version, nothing newer), `>` (only older
    /// ones) or `-` (no package of that name).
    pub symbol: char,
    /// The version shown after it (`?` when none).
    pub version: String,
}

/// Nix's `compareVersionAgainstSet`, quirks included: `<` shows the *last* newer version met in
/// `others`' order, not the newest; `>` starts from `?` and only a version that sorts above `?`
/// replaces it, so a version-less older package leaves `> ?`.
#[must_use]
pub fn compare_against<'a>(name: &str, others: impl IntoIterator<Item = &'a str>) -> Comparison {
    let (package, version) = split_drv_name(name);
    let mut symbol = '-';
    let mut shown = "?".to_owned();
    for other in others {
        let (other_package, other_version) = split_drv_name(other);
        if other_package != package {
            continue;
        }
        let order = compare_versions(version, other_version);
        if order == Ordering::Less {
            symbol = '<';
            shown = other_version.to_owned();
        } else if symbol != '<' && order == Ordering::Equal {
            symbol = '=';
            shown = other_version.to_owned();
        } else if symbol != '<' && symbol != '=' && order == Ordering::Greater {
            symbol = '>';
            if shown.is_empty() || compare_versions(&shown, other_version) == Ordering::Less {
                shown = other_version.to_owned();
            }
        }
    }
    Comparison {
        symbol,
        version: shown,
    }
}

/// Nix's `levenshteinDistance`, over bytes.
#[must_use]
pub fn levenshtein(first: &str, second: &str) -> usize {
    let (first, second) = (first.as_bytes(), second.as_bytes());
    let mut previous: Vec<usize> = (0..=second.len()).collect();
    let mut row = vec![0; second.len() + 1];
    for (i, &left) in first.iter().enumerate() {
        row[0] = i + 1;
        for (j, &right) in second.iter().enumerate() {
            let substitution = previous[j] + usize::from(left != right);
            row[j + 1] = (previous[j + 1] + 1).min(row[j] + 1).min(substitution);
        }
        std::mem::swap(&mut previous, &mut row);
    }
    previous[second.len()]
}

/// Nix 2.8's "Did you mean" text for `query` among `names`: the closest names (edit distance at
/// most 2, at most 5 of them, by distance then name), as `X`, or `one of X, Y or Z`; empty when
/// none is close.
#[must_use]
pub fn suggestions(query: &str, names: &[String]) -> String {
    let mut ranked: Vec<(usize, &str)> = names
        .iter()
        .map(|name| (levenshtein(query, name), name.as_str()))
        .filter(|(distance, _)| *distance <= 2)
        .collect();
    ranked.sort_unstable();
    ranked.dedup();
    ranked.truncate(5);
    match ranked.as_slice() {
        [] => String::new(),
        [(_, only)] => (*only).to_owned(),
        [rest @ .., (_, last)] => format!(
            "one of {} or {last}",
            rest.iter()
                .map(|(_, name)| *name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// One row to print: the element and what the caller found out about it.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    /// The element.
    pub element: &'a Element,
    /// Its status, when `-s` asked for it.
    pub status: Option<Status>,
    /// Its comparison, when `-c` asked for it.
    pub comparison: Option<Comparison>,
}

const ANSI_RED: &str = "\x1b[31;1m";
const ANSI_NORMAL: &str = "\x1b[0m";

/// The table `nix-env -q` prints. `terminal`: stdout is a terminal (a `<` comparison is then
/// red, and its escape codes count towards the column's width, as in Nix).
#[must_use]
pub fn render_table(rows: &[Row<'_>], args: &QueryArgs, terminal: bool) -> String {
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let element = row.element;
            let mut columns = Vec::new();
            if let Some(status) = row.status {
                columns.push(format!(
                    "{}{}{}",
                    if status.installed { 'I' } else { '-' },
                    if status.valid { 'P' } else { '-' },
                    if status.substitutable { 'S' } else { '-' }
                ));
            }
            if args.attr_path {
                columns.push(element.attr_path.clone());
            }
            if args.name {
                columns.push(element.name.clone());
            }
            if let Some(comparison) = &row.comparison {
                let column = format!("{} {}", comparison.symbol, comparison.version);
                columns.push(if comparison.symbol == '<' && terminal {
                    format!("{ANSI_RED}{column}{ANSI_NORMAL}")
                } else {
                    column
                });
            }
            if args.system {
                columns.push(element.system.clone());
            }
            if args.drv_path {
                columns.push(element.drv_path.clone().unwrap_or_else(|| "-".to_owned()));
            }
            if args.out_path {
                let mut text = String::new();
                for (output, path) in &element.outputs {
                    if !text.is_empty() {
                        text.push(';');
                    }
                    if output != "out" {
                        text.push_str(output);
                        text.push('=');
                    }
                    text.push_str(path.as_deref().unwrap_or(""));
                }
                columns.push(text);
            }
            if args.description {
                columns.push(element.description().to_owned());
            }
            columns
        })
        .collect();
    print_table(&table)
}

/// Nix's `printTable`.
fn print_table(table: &[Vec<String>]) -> String {
    let count = table.first().map_or(0, Vec::len);
    let mut widths = vec![0; count];
    for row in table {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in table {
        for (column, cell) in row.iter().enumerate() {
            out.push_str(&cell.replace('\n', " "));
            if column + 1 < count {
                out.push_str(&" ".repeat(widths[column] - cell.len() + 2));
            }
        }
        out.push('\n');
    }
    out
}

/// A line Nix prints on stderr for a meta value it cannot convert.
#[must_use]
pub fn invalid_meta_message(element: &Element, attribute: &str) -> String {
    format!(
        "derivation '{}' has invalid meta attribute '{attribute}'",
        element.name
    )
}

/// `nix-env -q --json`. Returns stdout and the stderr lines for invalid meta attributes.
#[must_use]
pub fn render_json(rows: &[Row<'_>], out_path: bool, meta: bool) -> (String, Vec<String>) {
    let mut errors = Vec::new();
    let mut out = String::new();
    if rows.is_empty() {
        return ("{}\n".to_owned(), errors);
    }
    out.push_str("{\n");
    for (position, row) in rows.iter().enumerate() {
        let element = row.element;
        let (package, version) = split_drv_name(&element.name);
        let mut object: Vec<(String, String)> = vec![
            ("name".to_owned(), json_string(&element.name)),
            ("pname".to_owned(), json_string(package)),
            ("version".to_owned(), json_string(version)),
            ("system".to_owned(), json_string(&element.system)),
            ("outputName".to_owned(), json_string(&element.output_name)),
        ];
        let outputs: Vec<(String, String)> = element
            .outputs
            .iter()
            .map(|(name, path)| {
                let value = match (out_path, path) {
                    (true, Some(path)) => json_string(path),
                    _ => "null".to_owned(),
                };
                (name.clone(), value)
            })
            .collect();
        object.push(("outputs".to_owned(), json_object(&outputs, 2)));
        if meta {
            let mut members = Vec::new();
            for (name, value) in &element.meta {
                if value.is_null() {
                    errors.push(invalid_meta_message(element, name));
                }
                members.push((name.clone(), json_value(value, 3)));
            }
            object.push(("meta".to_owned(), json_object(&members, 2)));
        }
        let _ = write!(
            out,
            "  {}: {}",
            json_string(&element.attr_path),
            json_object(&object, 1)
        );
        out.push_str(if position + 1 == rows.len() {
            "\n"
        } else {
            ",\n"
        });
    }
    out.push_str("}\n");
    (out, errors)
}

/// An object at nesting `depth` (its members are indented by `2 * (depth + 1)`), from
/// already-rendered member values.
fn json_object(members: &[(String, String)], depth: usize) -> String {
    json_bracketed(
        ('{', '}'),
        members
            .iter()
            .map(|(name, value)| format!("{}: {value}", json_string(name))),
        depth,
    )
}

/// Items between `brackets`, one per line at indentation `depth + 1`, commas between, the
/// closing bracket at `depth`; empty brackets on one line. Nix's writer lays out lists and
/// objects alike.
fn json_bracketed(
    brackets: (char, char),
    items: impl ExactSizeIterator<Item = String>,
    depth: usize,
) -> String {
    let (open, close) = brackets;
    let count = items.len();
    if count == 0 {
        return format!("{open}{close}");
    }
    let inner = "  ".repeat(depth + 1);
    let mut out = format!("{open}\n");
    for (position, item) in items.enumerate() {
        let _ = write!(out, "{inner}{item}");
        out.push_str(if position + 1 == count { "\n" } else { ",\n" });
    }
    out.push_str(&"  ".repeat(depth));
    out.push(close);
    out
}

/// A value whose first line sits at indentation `level` (two spaces each): list items and
/// object members one level deeper, the closing bracket at `level`.
fn json_value(value: &Value, level: usize) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => match (number.as_i64(), number.as_u64(), number.as_f64()) {
            (Some(integer), _, _) => integer.to_string(),
            (None, Some(integer), _) => integer.to_string(),
            (None, None, Some(float)) => format_float(float),
            (None, None, None) => number.to_string(),
        },
        Value::String(text) => json_string(text),
        Value::Array(items) => json_bracketed(
            ('[', ']'),
            items.iter().map(|item| json_value(item, level + 1)),
            level,
        ),
        Value::Object(members) => {
            let rendered: Vec<(String, String)> = members
                .iter()
                .map(|(name, value)| (name.clone(), json_value(value, level + 1)))
                .collect();
            json_object(&rendered, level)
        }
    }
}

/// A JSON string as Nix 2.8's writer escapes it: `"` and `\`, `\n`, `\r`, `\t`, other control
/// characters as `\u00XX`; everything else (non-ASCII included) as is.
#[must_use]
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            control if u32::from(control) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(control));
            }
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

/// A double as C++'s `ostream` prints it by default (`%g`, six significant digits): `1`,
/// `0.1`, `1e+20`, `1.23457e+08`, `1e-05`.
#[must_use]
pub fn format_float(value: f64) -> String {
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value < 0.0 { "-inf" } else { "inf" }.to_owned();
    }
    // Round to six significant digits first: the exponent is the rounded one.
    let scientific = format!("{value:.5e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if !(-4..6).contains(&exponent) {
        let mantissa = trim_fraction(mantissa);
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs());
    }
    let decimals = usize::try_from(5 - exponent).unwrap_or(0);
    trim_fraction(&format!("{value:.decimals$}")).to_owned()
}

fn trim_fraction(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// `nix-env -q --xml`. Returns stdout and the stderr lines for invalid meta attributes.
#[must_use]
pub fn render_xml(rows: &[Row<'_>], args: &QueryArgs) -> (String, Vec<String>) {
    let mut errors = Vec::new();
    let mut out = String::from("<?xml version='1.0' encoding='utf-8'?>\n<items>\n");
    for row in rows {
        let element = row.element;
        let (package, version) = split_drv_name(&element.name);
        let mut attributes: BTreeMap<&str, String> = BTreeMap::new();
        if let Some(status) = row.status {
            let flag = |set: bool| if set { "1" } else { "0" }.to_owned();
            attributes.insert("installed", flag(status.installed));
            attributes.insert("valid", flag(status.valid));
            attributes.insert("substitutable", flag(status.substitutable));
        }
        attributes.insert("attrPath", element.attr_path.clone());
        attributes.insert("name", element.name.clone());
        attributes.insert("pname", package.to_owned());
        attributes.insert("version", version.to_owned());
        if let Some(comparison) = &row.comparison
            && comparison.symbol != '-'
        {
            attributes.insert("versionDiff", comparison.symbol.to_string());
            attributes.insert("maxComparedVersion", comparison.version.clone());
        }
        if !element.system.is_empty() {
            attributes.insert("system", element.system.clone());
        }
        if args.drv_path
            && let Some(drv_path) = &element.drv_path
        {
            attributes.insert("drvPath", drv_path.clone());
        }
        attributes.insert("outputName", element.output_name.clone());
        if args.description && !element.description().is_empty() {
            attributes.insert("description", element.description().to_owned());
        }
        let _ = writeln!(out, "  <item{}>", xml_attributes(&attributes));
        for (output, path) in &element.outputs {
            let mut output_attributes = BTreeMap::from([("name", output.clone())]);
            if args.out_path
                && let Some(path) = path
            {
                output_attributes.insert("path", path.clone());
            }
            let _ = writeln!(out, "    <output{} />", xml_attributes(&output_attributes));
        }
        if args.meta {
            for (name, value) in &element.meta {
                xml_meta(&mut out, element, name, value, &mut errors);
            }
        }
        out.push_str("  </item>\n");
    }
    out.push_str("</items>\n");
    (out, errors)
}

fn xml_meta(
    out: &mut String,
    element: &Element,
    name: &str,
    value: &Value,
    errors: &mut Vec<String>,
) {
    let scalar = |kind: &str, text: String| {
        xml_attributes(&BTreeMap::from([
            ("name", name.to_owned()),
            ("type", kind.to_owned()),
            ("value", text),
        ]))
    };
    let strings_open = xml_attributes(&BTreeMap::from([
        ("name", name.to_owned()),
        ("type", "strings".to_owned()),
    ]));
    match value {
        Value::Null => errors.push(invalid_meta_message(element, name)),
        Value::String(text) => {
            let _ = writeln!(out, "    <meta{} />", scalar("string", text.clone()));
        }
        Value::Bool(flag) => {
            let _ = writeln!(out, "    <meta{} />", scalar("bool", flag.to_string()));
        }
        Value::Number(number) => {
            let (kind, text) = match (number.as_i64(), number.as_u64()) {
                (Some(integer), _) => ("int", integer.to_string()),
                (None, Some(integer)) => ("int", integer.to_string()),
                (None, None) => ("float", format_float(number.as_f64().unwrap_or(0.0))),
            };
            let _ = writeln!(out, "    <meta{} />", scalar(kind, text));
        }
        Value::Array(items) => {
            let _ = writeln!(out, "    <meta{strings_open}>");
            for item in items {
                if let Value::String(text) = item {
                    let _ = writeln!(
                        out,
                        "      <string{} />",
                        xml_attributes(&BTreeMap::from([("value", text.clone())]))
                    );
                }
            }
            out.push_str("    </meta>\n");
        }
        Value::Object(members) => {
            let _ = writeln!(out, "    <meta{strings_open}>");
            for (key, item) in members {
                if let Value::String(text) = item {
                    let _ = writeln!(
                        out,
                        "      <string{} />",
                        xml_attributes(&BTreeMap::from([
                            ("type", key.clone()),
                            ("value", text.clone())
                        ]))
                    );
                }
            }
            out.push_str("    </meta>\n");
        }
    }
}

/// ` name="value"` for each attribute, in order, escaped as Nix's `XMLWriter` escapes them.
fn xml_attributes(attributes: &BTreeMap<&str, String>) -> String {
    let mut out = String::new();
    for (name, value) in attributes {
        let _ = write!(out, " {name}=\"");
        for character in value.chars() {
            match character {
                '"' => out.push_str("&quot;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '&' => out.push_str("&amp;"),
                '\n' => out.push_str("&#xA;"),
                other => out.push(other),
            }
        }
        out.push('"');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat::args::{Command, parse};
    use rstest::rstest;

    fn query_args(arguments: &[&str]) -> QueryArgs {
        let arguments: Vec<String> = arguments.iter().map(|&a| a.to_owned()).collect();
        match parse(&arguments).result.expect("parses").command {
            Command::Query(query) => query,
            other => panic!("not a query: {other:?}"),
        }
    }

    fn element(attr_path: &str, name: &str, description: Option<&str>) -> Element {
        let mut meta = Map::new();
        if let Some(description) = description {
            meta.insert("description".to_owned(), Value::from(description));
        }
        Element {
            attr_path: attr_path.to_owned(),
            name: name.to_owned(),
            system: "x86_64-linux".to_owned(),
            output_name: "out".to_owned(),
            outputs: BTreeMap::from([("out".to_owned(), Some(format!("/nix/store/h-{name}")))]),
            out_path: Some(format!("/nix/store/h-{name}")),
            drv_path: None,
            meta,
        }
    }

    #[test]
    fn table_pads_every_column_but_the_last() {
        let elements = [
            element("baz", "baz", None),
            element("foo1", "foo-1.0", Some("foo one")),
        ];
        let args = query_args(&[
            "-qaP",
            "-s",
            "-c",
            "--system",
            "--drv-path",
            "--out-path",
            "--description",
        ]);
        let rows: Vec<Row<'_>> = elements
            .iter()
            .map(|element| Row {
                element,
                status: Some(Status {
                    installed: false,
                    valid: true,
                    substitutable: false,
                }),
                comparison: Some(compare_against(&element.name, ["foo-2.0", "baz-1.0"])),
            })
            .collect();
        assert_eq!(
            render_table(&rows, &args, false),
            "-P-  baz   baz      < 1.0  x86_64-linux  -  /nix/store/h-baz      \n\
             -P-  foo1  foo-1.0  < 2.0  x86_64-linux  -  /nix/store/h-foo-1.0  foo one\n"
        );
    }

    #[test]
    fn no_columns_print_empty_lines_and_newlines_fold() {
        let elements = [
            element("a", "abc-1", Some("line1\nline2")),
            element("b", "x-1", None),
        ];
        let rows: Vec<Row<'_>> = elements
            .iter()
            .map(|element| Row {
                element,
                status: None,
                comparison: None,
            })
            .collect();
        assert_eq!(
            render_table(&rows, &query_args(&["-qa", "--no-name"]), false),
            "\n\n"
        );
        assert_eq!(
            render_table(&rows, &query_args(&["-qa", "--description"]), false),
            "abc-1  line1 line2\nx-1    \n"
        );
        assert_eq!(render_table(&[], &query_args(&["-qa"]), false), "");
    }

    #[rstest]
    #[case::newer_last_met("foo-2.0", &["foo-3.0", "foo-2.5"], '<', "2.5")]
    #[case::equal("foo-2.0", &["foo-2.0", "bar-9"], '=', "2.0")]
    #[case::older_highest("bar-1.0", &["bar-0.1", "bar-0.1.1"], '>', "0.1.1")]
    #[case::older_without_version("baz-1.0", &["baz"], '>', "?")]
    #[case::unavailable("baz-1.0", &["qux-1"], '-', "?")]
    #[case::newer_wins_over_equal("foo-2.0pre1", &["foo-2.0pre1", "foo-2.0"], '<', "2.0")]
    fn comparisons(
        #[case] name: &str,
        #[case] others: &[&str],
        #[case] symbol: char,
        #[case] version: &str,
    ) {
        assert_eq!(
            compare_against(name, others.iter().copied()),
            Comparison {
                symbol,
                version: version.to_owned()
            }
        );
    }

    #[rstest]
    #[case("nope", "pe", 2)]
    #[case("kitten", "sitting", 3)]
    #[case("", "abc", 3)]
    #[case("same", "same", 0)]
    fn edit_distance(#[case] a: &str, #[case] b: &str, #[case] expected: usize) {
        assert_eq!(levenshtein(a, b), expected);
        assert_eq!(levenshtein(b, a), expected);
    }

    #[test]
    fn did_you_mean_text() {
        let names: Vec<String> = ["pa", "pb", "pe", "hello", "nop"].map(str::to_owned).into();
        assert_eq!(suggestions("nope", &names), "one of nop or pe");
        assert_eq!(suggestions("hellp", &names), "hello");
        assert_eq!(suggestions("zzzzzz", &names), "");
        assert_eq!(suggestions("p", &names), "one of pa, pb, pe or nop");
    }

    #[rstest]
    #[case(1.0, "1")]
    #[case(0.1, "0.1")]
    #[case(1.5, "1.5")]
    #[case(1e20, "1e+20")]
    #[case(123_456_789.0, "1.23457e+08")]
    #[case(1.0 / 3.0, "0.333333")]
    #[case(0.000_01, "1e-05")]
    #[case(0.000_123, "0.000123")]
    #[case(-2.5, "-2.5")]
    #[case(999_999.5, "1e+06")]
    #[case(100_000.0, "100000")]
    fn floats_print_as_cpp_does(#[case] value: f64, #[case] expected: &str) {
        assert_eq!(format_float(value), expected);
    }

    #[test]
    fn json_matches_nix_layout() {
        let mut foo = element("foo1", "foo-1.0", Some("foo one"));
        foo.meta
            .insert("l".to_owned(), serde_json::json!(["a", 1, "b"]));
        foo.meta
            .insert("a".to_owned(), serde_json::json!({"x": "y", "n": 2}));
        foo.meta.insert("e".to_owned(), serde_json::json!([]));
        foo.meta.insert("f".to_owned(), serde_json::json!(1.5));
        foo.meta.insert("n".to_owned(), Value::Null);
        foo.meta
            .insert("s".to_owned(), Value::from("str \"q\" ${x}\u{1}"));
        let rows = [Row {
            element: &foo,
            status: None,
            comparison: None,
        }];
        let (json, errors) = render_json(&rows, false, true);
        assert_eq!(
            json,
            r#"{
  "foo1": {
    "name": "foo-1.0",
    "pname": "foo",
    "version": "1.0",
    "system": "x86_64-linux",
    "outputName": "out",
    "outputs": {
      "out": null
    },
    "meta": {
      "a": {
        "n": 2,
        "x": "y"
      },
      "description": "foo one",
      "e": [],
      "f": 1.5,
      "l": [
        "a",
        1,
        "b"
      ],
      "n": null,
      "s": "str \"q\" ${x}\u0001"
    }
  }
}
"#
        );
        assert_eq!(
            errors,
            ["derivation 'foo-1.0' has invalid meta attribute 'n'"]
        );
        // The output decodes as JSON, keys in row order.
        let decoded: Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(decoded["foo1"]["meta"]["a"]["n"], 2);
        assert_eq!(render_json(&[], false, false).0, "{}\n");
    }

    #[test]
    fn xml_matches_nix_layout() {
        let mut foo = element("foo1", "foo-1.0", Some("line1\nline2 <&>"));
        foo.meta
            .insert("l".to_owned(), serde_json::json!(["a", 1, "b"]));
        foo.meta
            .insert("a".to_owned(), serde_json::json!({"x": "y", "n": 2}));
        foo.meta.insert("e".to_owned(), serde_json::json!([]));
        foo.meta.insert("f".to_owned(), serde_json::json!(1e20));
        foo.meta.insert("i".to_owned(), serde_json::json!(3));
        foo.meta.insert("b".to_owned(), serde_json::json!(false));
        let rows = [Row {
            element: &foo,
            status: Some(Status {
                installed: true,
                valid: true,
                substitutable: false,
            }),
            comparison: Some(Comparison {
                symbol: '<',
                version: "2.0".to_owned(),
            }),
        }];
        let (xml, errors) = render_xml(
            &rows,
            &query_args(&["-qa", "--xml", "--meta", "--out-path"]),
        );
        assert!(errors.is_empty());
        assert_eq!(
            xml,
            r#"<?xml version='1.0' encoding='utf-8'?>
<items>
  <item attrPath="foo1" installed="1" maxComparedVersion="2.0" name="foo-1.0" outputName="out" pname="foo" substitutable="0" system="x86_64-linux" valid="1" version="1.0" versionDiff="&lt;">
    <output name="out" path="/nix/store/h-foo-1.0" />
    <meta name="a" type="strings">
      <string type="x" value="y" />
    </meta>
    <meta name="b" type="bool" value="false" />
    <meta name="description" type="string" value="line1&#xA;line2 &lt;&amp;&gt;" />
    <meta name="e" type="strings">
    </meta>
    <meta name="f" type="float" value="1e+20" />
    <meta name="i" type="int" value="3" />
    <meta name="l" type="strings">
      <string value="a" />
      <string value="b" />
    </meta>
  </item>
</items>
"#
        );
    }
}
