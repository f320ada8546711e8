//! Writing a first `profile.toml`: an annotated template, or one that declares what a
//! profile's current generation holds (also one made by `nix-env`).
//!
//! Pure text generation through `toml_edit`, so names are quoted and escaped correctly; the
//! caller parses the result back before writing it.

use super::declarative::{Current, Sources};
use crate::model::manifest::{ManifestElement, NixValue};
use crate::model::spec::{BackendKind, SPEC_VERSION};
use std::collections::BTreeSet;
use std::path::Path;
use toml_edit::{DocumentMut, Item, Table, value};

/// A source to declare: name, kind (`channel`, `catalog` or `nix`) and path as given.
pub type SourceArg = (String, &'static str, String);

/// The `#:schema` line: editors that read it (taplo, Even Better TOML) complete and check the
/// file against the schema at `schema` (what `declenv schema profile` prints).
#[must_use]
pub fn schema_line(schema: &Path) -> String {
    format!("#:schema {}", schema.display())
}

fn header(document: &mut DocumentMut, backend: BackendKind, sources: &[SourceArg]) {
    document["version"] = value(i64::from(SPEC_VERSION));
    if backend != BackendKind::Embedded {
        document["backend"] = value(backend.as_str());
    }
    if sources.is_empty() {
        return;
    }
    let mut table = Table::new();
    table.set_implicit(true);
    for (name, kind, path) in sources {
        let mut source = Table::new();
        source[kind] = value(path.as_str());
        table[name.as_str()] = Item::Table(source);
    }
    document["sources"] = Item::Table(table);
}

/// A spec with only the sources (used to load them before the packages are known).
#[must_use]
pub fn probe_spec(backend: BackendKind, sources: &[SourceArg]) -> String {
    let mut document = DocumentMut::new();
    header(&mut document, backend, sources);
    document.to_string()
}

/// A commented template.
#[must_use]
pub fn template(backend: BackendKind, sources: &[SourceArg], schema: &Path) -> String {
    let schema_line = schema_line(schema);
    let mut document = DocumentMut::new();
    header(&mut document, backend, sources);
    let source_hint = sources.first().map_or_else(
        || match backend {
            BackendKind::Embedded => "# [sources.demo]\n# channel = \"channel\"       # a channel directory, relative to this file\n# catalog = \"catalog.json\" # or a catalog from `nix-env -qa --json --out-path --meta`\n\n".to_owned(),
            BackendKind::Nix => "# [sources.nixpkgs]\n# nix = \"<nixpkgs>\"        # a Nix expression: a search-path lookup, a file or a directory\n\n".to_owned(),
        },
        |_| String::new(),
    );
    format!(
        "{schema_line}\n# The packages this profile holds. `declenv plan` shows what would change;\n# `declenv apply` makes it so, as one new generation.\n{}\n{source_hint}# [packages.hello]\n# attr = \"hello\"          # select by attribute path (its identity), or\n# name = \"hello\"          # by nix-env selector (the default is the id)\n# version = \">=2.10, <3\"  # optional, in Nix's version order\n# priority = 4            # lower wins file collisions; the default is 5\n# keep = true             # never upgrade\n# active = false          # installed but not linked\n# outputs = [\"out\", \"man\"]\n",
        document.to_string().trim_end()
    )
}

/// A flag's value as `nix-env` reads it from an element's meta.
fn meta_text(element: &ManifestElement, key: &str) -> Option<String> {
    match element.meta.get(key)? {
        NixValue::String(text) => Some(text.clone()),
        NixValue::Int(number) => Some(number.to_string()),
        NixValue::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// A spec declaring every element of `current`: by attribute path when a source offers a
/// package of the same full name, else by store path; with the element's flags and outputs
/// where they differ from the package's own.
#[must_use]
pub fn spec_from_current(
    current: &Current,
    backend: BackendKind,
    source_args: &[SourceArg],
    sources: &Sources,
    schema: &Path,
) -> String {
    let mut document = DocumentMut::new();
    header(&mut document, backend, source_args);
    let mut packages = Table::new();
    packages.set_implicit(true);
    let mut taken = BTreeSet::new();
    for side in &current.elements {
        let element = &side.element;
        let package_name = crate::version::split_drv_name(&element.name).0;
        let mut id = side.id.clone().unwrap_or_else(|| {
            if package_name.is_empty() {
                element.name.clone()
            } else {
                package_name.to_owned()
            }
        });
        let mut suffix = 2;
        while taken.contains(&id) {
            id = format!("{package_name}-{suffix}");
            suffix += 1;
        }
        taken.insert(id.clone());
        let mut table = Table::new();
        let found = sources
            .catalog
            .by_package_name(package_name)
            .iter()
            .map(|&index| sources.catalog.get(index))
            .find(|entry| entry.name() == element.name);
        let mut own_priority = None;
        match &found {
            Some(entry) => {
                table["attr"] = value(entry.attr_path());
                if let Some((name, _, _)) = source_args.get(entry.source()) {
                    table["source"] = value(name.as_str());
                }
                let decoded = entry.to_entry();
                own_priority = decoded
                    .as_ref()
                    .and_then(|entry| entry.meta.get("priority"))
                    .and_then(crate::model::catalog::meta_int);
                let defaults: BTreeSet<&str> = decoded
                    .as_ref()
                    .map(|entry| entry.outputs_to_install().into_iter().collect())
                    .unwrap_or_default();
                let installed: BTreeSet<&str> =
                    element.outputs.keys().map(String::as_str).collect();
                if installed != defaults && !installed.is_empty() {
                    let mut outputs = toml_edit::Array::new();
                    for output in installed {
                        outputs.push(output);
                    }
                    table["outputs"] = value(outputs);
                }
            }
            None => {
                table["store-path"] = value(element.out_path.as_str());
            }
        }
        if let Some(priority) =
            meta_text(element, "priority").and_then(|text| text.trim().parse::<i32>().ok())
            && own_priority != Some(i64::from(priority))
        {
            table["priority"] = value(i64::from(priority));
        }
        if meta_text(element, "keep").as_deref() == Some("true") {
            table["keep"] = value(true);
        }
        if meta_text(element, "active").as_deref() == Some("false") {
            table["active"] = value(false);
        }
        packages[id.as_str()] = Item::Table(table);
    }
    if !packages.is_empty() {
        document["packages"] = Item::Table(packages);
    }
    format!(
        "{}\n# Written by `declenv init --from-current` from generation {} of the profile.\n{}",
        schema_line(schema),
        current.generation.unwrap_or_default(),
        document
    )
}
