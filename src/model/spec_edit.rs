//! Edits of `profile.toml` that keep what the user wrote: comments, blank lines, key order,
//! quoting and the layout of every part the edit does not touch.
//!
//! [`SpecEditor`] wraps a [`toml_edit::DocumentMut`] and offers the edits `nix-env`'s writes
//! need: declare a source, add or rewrite a package (`[packages.ID]` tables, inline tables or
//! dotted keys, whichever the file uses), remove one, set or remove one of its keys. A value
//! that is replaced keeps its comments (a trailing `# …` stays on its line); a new package
//! table goes right after the last package; a removed package takes the comment lines just
//! above its header with it (they describe it).
//!
//! Pure: text in, text out. Whether the result is a valid spec is for
//! [`crate::model::spec::parse`] to say.

use toml_edit::{DocumentMut, InlineTable, Item, Key, Table, TableLike, Value};

/// The keys that say how a package is selected and from where; a package that is reinstalled
/// or upgraded gets new ones.
pub const SELECTION_KEYS: [&str; 6] =
    ["attr", "name", "store-path", "version", "source", "outputs"];

/// The keys `nix-env --set-flag` sets.
pub const FLAG_KEYS: [&str; 3] = ["priority", "keep", "active"];

/// A spec that does not parse as TOML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EditError {
    /// What is wrong.
    pub message: String,
}

/// The fields of a package entry, written in this order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackageFields {
    /// `attr`.
    pub attr: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `store-path`.
    pub store_path: Option<String>,
    /// `source`.
    pub source: Option<String>,
    /// `outputs`.
    pub outputs: Option<Vec<String>>,
    /// `priority`.
    pub priority: Option<i64>,
    /// `keep`.
    pub keep: Option<bool>,
    /// `active`.
    pub active: Option<bool>,
}

impl PackageFields {
    fn values(&self) -> Vec<(&'static str, Value)> {
        let mut values = Vec::new();
        if let Some(attr) = &self.attr {
            values.push(("attr", Value::from(attr.as_str())));
        }
        if let Some(name) = &self.name {
            values.push(("name", Value::from(name.as_str())));
        }
        if let Some(store_path) = &self.store_path {
            values.push(("store-path", Value::from(store_path.as_str())));
        }
        if let Some(source) = &self.source {
            values.push(("source", Value::from(source.as_str())));
        }
        if let Some(outputs) = &self.outputs {
            let array: toml_edit::Array = outputs.iter().map(String::as_str).collect();
            values.push(("outputs", Value::Array(array)));
        }
        if let Some(priority) = self.priority {
            values.push(("priority", Value::from(priority)));
        }
        if let Some(keep) = self.keep {
            values.push(("keep", Value::from(keep)));
        }
        if let Some(active) = self.active {
            values.push(("active", Value::from(active)));
        }
        values
    }
}

/// `profile.toml` open for editing.
#[derive(Debug, Clone)]
pub struct SpecEditor {
    document: DocumentMut,
}

impl SpecEditor {
    /// Reads `text`.
    pub fn parse(text: &str) -> Result<Self, EditError> {
        text.parse::<DocumentMut>()
            .map(|document| Self { document })
            .map_err(|error| EditError {
                message: error.to_string().trim_end().to_owned(),
            })
    }

    /// The text of a new spec: its version, its backend (when not the embedded store) and a
    /// line saying where it came from.
    #[must_use]
    pub fn new_spec_text(backend: super::spec::BackendKind) -> String {
        let backend = match backend {
            super::spec::BackendKind::Embedded => String::new(),
            other => format!("backend = \"{}\"\n", other.as_str()),
        };
        format!(
            "# A declenv profile spec, started by `declenv env` (`nix-env` commands edit it).\nversion = {}\n{backend}",
            super::spec::SPEC_VERSION
        )
    }

    /// The edited text.
    #[must_use]
    pub fn text(&self) -> String {
        self.document.to_string()
    }

    /// The packages table, if there is one.
    fn packages(&self) -> Option<&dyn TableLike> {
        self.document.get("packages").and_then(Item::as_table_like)
    }

    fn packages_mut(&mut self) -> &mut dyn TableLike {
        if self
            .document
            .get("packages")
            .and_then(Item::as_table_like)
            .is_none()
        {
            let mut table = Table::new();
            table.set_implicit(true);
            self.document.insert("packages", Item::Table(table));
        }
        self.document
            .get_mut("packages")
            .and_then(Item::as_table_like_mut)
            .expect("just made a table")
    }

    /// The package ids, in file order.
    #[must_use]
    pub fn package_ids(&self) -> Vec<String> {
        self.packages()
            .map(|packages| packages.iter().map(|(key, _)| key.to_owned()).collect())
            .unwrap_or_default()
    }

    /// The source names, in file order.
    #[must_use]
    pub fn source_ids(&self) -> Vec<String> {
        self.document
            .get("sources")
            .and_then(Item::as_table_like)
            .map(|sources| sources.iter().map(|(key, _)| key.to_owned()).collect())
            .unwrap_or_default()
    }

    /// Declares `[sources.ID]` with `KIND = "PATH"` (`channel` or `catalog`), after the other
    /// sources.
    pub fn add_source(&mut self, id: &str, kind: &str, path: &str) {
        if self
            .document
            .get("sources")
            .and_then(Item::as_table_like)
            .is_none()
        {
            let mut table = Table::new();
            table.set_implicit(true);
            // Sources come before packages: just before the first positioned package table,
            // or (in a file made here, where nothing has a position) before the packages.
            let mut positioned = Vec::new();
            if let Some(packages) = self.document.get("packages").and_then(Item::as_table) {
                collect_tables(packages, &mut Vec::new(), &mut positioned);
            }
            match positioned.iter().map(|(_, position)| *position).min() {
                Some(first) => table.set_position(Some(first - 1)),
                None => {
                    if let Some(packages) = self.document.remove("packages") {
                        self.document.insert("sources", Item::Table(table));
                        self.document.insert("packages", packages);
                        return self.add_source(id, kind, path);
                    }
                }
            }
            self.document.insert("sources", Item::Table(table));
        }
        let Some(sources) = self
            .document
            .get_mut("sources")
            .and_then(Item::as_table_like_mut)
        else {
            return;
        };
        let inline = sources.iter().next().is_some()
            && sources.iter().all(|(_, item)| item.is_inline_table());
        if inline {
            let mut table = InlineTable::new();
            table.insert(kind, Value::from(path));
            sources.insert(id, Item::Value(Value::InlineTable(table)));
        } else {
            let mut table = Table::new();
            table.insert(kind, toml_edit::value(path));
            sources.insert(id, Item::Table(table));
        }
    }

    /// Whether the spec has package `id`.
    #[must_use]
    pub fn has_package(&self, id: &str) -> bool {
        self.packages()
            .is_some_and(|packages| packages.contains_key(id))
    }

    /// Adds package `id`, or rewrites it: its selection keys are replaced, and its flags too
    /// when `clear_flags` (a reinstall is a new element); other keys and every comment stay
    /// (a replaced key keeps the comments around it).
    pub fn set_package(&mut self, id: &str, fields: &PackageFields, clear_flags: bool) {
        self.set_package_keeping(id, fields, clear_flags, &[]);
    }

    /// [`Self::set_package`], keeping the selection keys in `keep` as they are written (an
    /// upgrade keeps the entry's `version` constraint, comments included).
    pub fn set_package_keeping(
        &mut self,
        id: &str,
        fields: &PackageFields,
        clear_flags: bool,
        keep: &[&str],
    ) {
        let packages = self.packages_mut();
        if let Some(item) = packages.get_mut(id)
            && let Some(mut table) = PackageTable::of(item)
        {
            let mut entries = table.drain();
            let mut replaced: Vec<(Key, Item)> = Vec::new();
            for (key, value) in fields.values() {
                match entries
                    .iter()
                    .position(|(existing, _)| existing.get() == key)
                {
                    Some(position) => {
                        let (existing, mut item) = entries.remove(position);
                        replace_value(&mut item, value);
                        replaced.push((existing, item));
                    }
                    None => replaced.push((Key::new(key), Item::Value(value))),
                }
            }
            entries.retain(|(key, _)| {
                let key = key.get();
                keep.contains(&key)
                    || !(SELECTION_KEYS.contains(&key) || clear_flags && FLAG_KEYS.contains(&key))
            });
            replaced.extend(entries);
            table.refill(replaced);
            return;
        }
        let inline = packages.iter().next().is_some()
            && packages.iter().all(|(_, item)| item.is_inline_table());
        if inline {
            let mut table = InlineTable::new();
            for (key, value) in fields.values() {
                table.insert(key, value);
            }
            packages.insert(id, Item::Value(Value::InlineTable(table)));
        } else {
            let mut table = Table::new();
            for (key, value) in fields.values() {
                table.insert(key, Item::Value(value));
            }
            packages.insert(id, Item::Table(table));
            // Right after the last package (ties keep tree order), with a position of its own
            // so that comments of a package removed later can move onto it.
            let mut positioned = Vec::new();
            if let Some(packages) = self.document.get("packages").and_then(Item::as_table) {
                collect_tables(packages, &mut Vec::new(), &mut positioned);
            }
            if let Some(last) = positioned.iter().map(|(_, position)| *position).max()
                && let Some(table) = self
                    .document
                    .get_mut("packages")
                    .and_then(|packages| packages.get_mut(id))
                    .and_then(Item::as_table_mut)
            {
                table.set_position(Some(last));
            }
        }
    }

    /// Removes package `id`; whether it was there. The comment lines right above its header go
    /// with it; comments above those, set apart by a blank line (a section heading), stay and
    /// move to whatever follows.
    pub fn remove_package(&mut self, id: &str) -> bool {
        let packages = self.packages_mut();
        let Some(removed) = packages.remove(id) else {
            return false;
        };
        if let Item::Table(table) = &removed {
            let prefix = table
                .decor()
                .prefix()
                .and_then(|prefix| prefix.as_str())
                .unwrap_or("");
            let kept = prefix.rfind("\n\n").map_or("", |blank| &prefix[..=blank]);
            if !kept.trim().is_empty() {
                let kept = kept.to_owned();
                let position = table.position().unwrap_or(isize::MAX);
                let mut tables = Vec::new();
                collect_tables(self.document.as_table(), &mut Vec::new(), &mut tables);
                let next_path = tables
                    .into_iter()
                    .filter(|(_, candidate)| *candidate >= position)
                    .min_by_key(|(_, candidate)| *candidate)
                    .map(|(path, _)| path);
                let next = next_path.and_then(|path| {
                    let mut current = self.document.as_table_mut();
                    for key in &path {
                        current = current.get_mut(key)?.as_table_mut()?;
                    }
                    Some(current)
                });
                match next {
                    Some(table) => {
                        let own = table
                            .decor()
                            .prefix()
                            .and_then(|prefix| prefix.as_str())
                            .unwrap_or("")
                            .to_owned();
                        table.decor_mut().set_prefix(format!("{kept}{own}"));
                    }
                    None => {
                        let trailing = self.document.trailing().as_str().unwrap_or("").to_owned();
                        self.document
                            .set_trailing(format!("{}{trailing}", kept.trim_end_matches('\n')));
                    }
                }
            }
        }
        true
    }

    /// Sets one key of package `id`, keeping the comments around an existing value.
    pub fn set_key(&mut self, id: &str, key: &str, value: Value) -> bool {
        let packages = self.packages_mut();
        let Some(mut table) = packages.get_mut(id).and_then(PackageTable::of) else {
            return false;
        };
        let mut entries = table.drain();
        match entries
            .iter_mut()
            .find(|(existing, _)| existing.get() == key)
        {
            Some((_, item)) => replace_value(item, value),
            None => entries.push((Key::new(key), Item::Value(value))),
        }
        table.refill(entries);
        true
    }

    /// Removes one key of package `id`; whether it was there.
    pub fn remove_key(&mut self, id: &str, key: &str) -> bool {
        let packages = self.packages_mut();
        packages
            .get_mut(id)
            .and_then(Item::as_table_like_mut)
            .and_then(|table| table.remove(key))
            .is_some()
    }

    /// A string key of package `id`.
    #[must_use]
    pub fn package_string(&self, id: &str, key: &str) -> Option<String> {
        self.packages()?
            .get(id)?
            .as_table_like()?
            .get(key)?
            .as_str()
            .map(str::to_owned)
    }
}

/// A package entry: a standard (or dotted) table, or an inline table.
enum PackageTable<'a> {
    Table(&'a mut Table),
    Inline(&'a mut InlineTable),
}

impl<'a> PackageTable<'a> {
    fn of(item: &'a mut Item) -> Option<Self> {
        match item {
            Item::Table(table) => Some(Self::Table(table)),
            Item::Value(Value::InlineTable(table)) => Some(Self::Inline(table)),
            _ => None,
        }
    }

    /// Takes every key out, with its formatting.
    fn drain(&mut self) -> Vec<(Key, Item)> {
        match self {
            Self::Table(table) => {
                let keys: Vec<String> = table.iter().map(|(key, _)| key.to_owned()).collect();
                keys.iter()
                    .filter_map(|key| table.remove_entry(key))
                    .collect()
            }
            Self::Inline(table) => {
                let keys: Vec<String> = table.iter().map(|(key, _)| key.to_owned()).collect();
                keys.iter()
                    .filter_map(|key| table.remove_entry(key))
                    .map(|(key, value)| (key, Item::Value(value)))
                    .collect()
            }
        }
    }

    /// Puts keys back in this order.
    fn refill(&mut self, entries: Vec<(Key, Item)>) {
        match self {
            Self::Table(table) => {
                for (key, item) in entries {
                    table.insert_formatted(&key, item);
                }
            }
            Self::Inline(table) => {
                for (key, item) in entries {
                    if let Item::Value(value) = item {
                        table.insert_formatted(&key, value);
                    }
                }
                table.fmt();
            }
        }
    }
}

/// The path and position of every explicit (non-implicit, positioned) table.
fn collect_tables(table: &Table, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, isize)>) {
    if !table.is_implicit()
        && !table.is_dotted()
        && let Some(position) = table.position()
    {
        out.push((path.clone(), position));
    }
    for (key, item) in table {
        if let Item::Table(child) = item {
            path.push(key.to_owned());
            collect_tables(child, path, out);
            path.pop();
        }
    }
}

/// Replaces the value of `item`, keeping the old value's decor (spaces and a trailing comment).
fn replace_value(item: &mut Item, mut value: Value) {
    if let Some(old) = item.as_value() {
        let decor = old.decor().clone();
        *value.decor_mut() = decor;
    }
    *item = Item::Value(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMENTED: &str = r#"#:schema ./schema.json
# My profile.
version = 1   # the format

# Sources.
[sources.main]
channel = "channel"   # relative to this file

# --- editors ---

# hello: the greeting
[packages.hello]
attr = "hello"        # by attribute path
priority = 4          # lower wins

# tools
[packages.jq]
name = "jq"
version = ">=1.6"
"#;

    #[test]
    fn rewriting_keeps_comments_and_layout() {
        let mut editor = SpecEditor::parse(COMMENTED).expect("parses");
        editor.set_package(
            "hello",
            &PackageFields {
                attr: Some("hello_2".to_owned()),
                ..PackageFields::default()
            },
            false,
        );
        editor.set_key("hello", "priority", Value::from(3));
        let text = editor.text();
        assert!(
            text.contains("attr = \"hello_2\"        # by attribute path\n"),
            "{text}"
        );
        assert!(
            text.contains("priority = 3          # lower wins\n"),
            "{text}"
        );
        assert!(
            text.contains("# hello: the greeting\n[packages.hello]"),
            "{text}"
        );
        assert!(
            text.starts_with("#:schema ./schema.json\n# My profile.\nversion = 1   # the format\n")
        );
        // Everything after the edited entry is as it was.
        assert!(text.ends_with("# tools\n[packages.jq]\nname = \"jq\"\nversion = \">=1.6\"\n"));
    }

    #[test]
    fn new_packages_follow_the_last_one_and_removals_take_their_comments() {
        let mut editor = SpecEditor::parse(COMMENTED).expect("parses");
        editor.set_package(
            "ripgrep",
            &PackageFields {
                attr: Some("ripgrep".to_owned()),
                outputs: Some(vec!["out".to_owned(), "man".to_owned()]),
                ..PackageFields::default()
            },
            true,
        );
        assert!(editor.remove_package("hello"));
        assert!(!editor.remove_package("hello"));
        let text = editor.text();
        assert!(!text.contains("hello"), "{text}");
        assert!(text.contains("# --- editors ---\n"), "{text}");
        assert!(
            text.ends_with("version = \">=1.6\"\n\n[packages.ripgrep]\nattr = \"ripgrep\"\noutputs = [\"out\", \"man\"]\n"),
            "{text}"
        );
        assert_eq!(editor.package_ids(), ["jq", "ripgrep"]);
    }

    #[test]
    fn inline_tables_stay_inline() {
        let mut editor = SpecEditor::parse(
            "version = 1\n[sources]\nmain = { channel = \"c\" }\n[packages]\nhello = { attr = \"hello\" } # greeting\n",
        )
        .expect("parses");
        editor.set_package(
            "jq",
            &PackageFields {
                attr: Some("jq".to_owned()),
                ..PackageFields::default()
            },
            true,
        );
        editor.set_key("hello", "keep", Value::from(true));
        editor.add_source("other", "catalog", "/srv/catalog.json");
        let text = editor.text();
        assert!(
            text.contains("hello = { attr = \"hello\", keep = true } # greeting\n"),
            "{text}"
        );
        assert!(text.contains("jq = { attr = \"jq\" }"), "{text}");
        assert!(
            text.contains("other = { catalog = \"/srv/catalog.json\" }"),
            "{text}"
        );
        let parsed = crate::model::spec::parse(&text, std::path::Path::new("/p.toml"))
            .expect("still a spec");
        assert_eq!(parsed.spec.packages.len(), 2);
    }

    #[test]
    fn a_new_spec_gets_sources_before_packages() {
        let mut editor = SpecEditor::parse(&SpecEditor::new_spec_text(
            crate::model::spec::BackendKind::Embedded,
        ))
        .expect("parses");
        editor.set_package(
            "hello",
            &PackageFields {
                attr: Some("hello".to_owned()),
                ..PackageFields::default()
            },
            true,
        );
        editor.add_source("channel", "channel", "/srv/channel");
        let text = editor.text();
        let parsed =
            crate::model::spec::parse(&text, std::path::Path::new("/p.toml")).expect("a spec");
        assert_eq!(parsed.spec.sources[0].id, "channel");
        assert!(
            text.find("[sources.channel]") < text.find("[packages.hello]"),
            "{text}"
        );
    }

    #[test]
    fn reinstall_clears_flags_and_selection_keeps_other_keys() {
        let mut editor = SpecEditor::parse(
            "version = 1\n[packages.foo]\nname = \"foo\"\nversion = \"<2\"\npriority = 3\nkeep = true\nactive = false\n",
        )
        .expect("parses");
        editor.set_package(
            "foo",
            &PackageFields {
                attr: Some("foo_2".to_owned()),
                ..PackageFields::default()
            },
            true,
        );
        assert_eq!(
            editor.text(),
            "version = 1\n[packages.foo]\nattr = \"foo_2\"\n"
        );
        assert_eq!(
            editor.package_string("foo", "attr").as_deref(),
            Some("foo_2")
        );
        assert!(editor.remove_key("foo", "attr"));
        assert!(!editor.remove_key("foo", "attr"));
        assert!(!editor.set_key("nope", "keep", Value::from(true)));
    }

    #[test]
    fn an_upgrade_keeps_the_constraint_as_written() {
        let mut editor = SpecEditor::parse(
            "version = 1\n[packages.foo]\nname = \"foo\"\nversion = \"<2\"   # not 2.x\npriority = 3\n",
        )
        .expect("parses");
        editor.set_package_keeping(
            "foo",
            &PackageFields {
                attr: Some("foo_1".to_owned()),
                ..PackageFields::default()
            },
            false,
            &["version"],
        );
        assert_eq!(
            editor.text(),
            "version = 1\n[packages.foo]\nattr = \"foo_1\"\nversion = \"<2\"   # not 2.x\npriority = 3\n"
        );
    }

    #[test]
    fn invalid_toml_is_an_error() {
        assert!(SpecEditor::parse("version = \n").is_err());
    }
}
