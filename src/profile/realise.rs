//! Realising catalog entries: making every output of a package exist as a store path, and
//! describing it as a manifest element.
//!
//! A channel package ships its trees, which are added to the embedded store (output `out` under
//! the package's name, another output `o` under `NAME-o`, as Nix names outputs). A catalog entry
//! names store paths; those that already exist on disk (for example in a real `/nix/store`) are
//! used in place. Anything else is an error naming the package. Never builds anything.

use crate::model::catalog::CatalogEntry;
use crate::model::manifest::ManifestElement;
use crate::store::{EmbeddedStore, StoreError};
use std::collections::BTreeMap;
use std::path::Path;

/// Why a package could not be realised.
#[derive(Debug, thiserror::Error)]
pub enum RealiseError {
    /// An output is neither shipped as a tree nor present on disk.
    #[error(
        "package `{package}` (attribute `{attr_path}`) is not available: output `{output}` {reason}"
    )]
    Unavailable {
        /// The package's full name.
        package: String,
        /// Its attribute path.
        attr_path: String,
        /// The output.
        output: String,
        /// Why, e.g. "`/nix/store/…` does not exist".
        reason: String,
    },
    /// `meta.outputsToInstall` names an output the package does not have.
    #[error("package `{package}` has bad `meta.outputsToInstall`: no output `{output}`")]
    BadOutputsToInstall {
        /// The package's full name.
        package: String,
        /// The missing output.
        output: String,
    },
    /// Adding a tree to the store failed.
    #[error("cannot add package `{package}` to the store")]
    Store {
        /// The package's full name.
        package: String,
        /// What the store said.
        #[source]
        source: Box<StoreError>,
    },
}

impl RealiseError {
    /// A hint for the user, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Unavailable { .. } => Some(
                "build or fetch the package with Nix first, or take it from a channel that ships its tree"
                    .to_owned(),
            ),
            Self::BadOutputsToInstall { .. } => {
                Some("`outputsToInstall` must list outputs the package declares".to_owned())
            }
            Self::Store { source, .. } => source.hint(),
        }
    }
}

/// The store name of output `output` of package `name`, as Nix names derivation outputs.
#[must_use]
pub fn output_store_name(name: &str, output: &str) -> String {
    if output == "out" {
        name.to_owned()
    } else {
        format!("{name}-{output}")
    }
}

/// Makes every output of `entry` exist and returns the manifest element that installs its
/// outputs to install, with its valid meta.
pub fn realise(
    store: &EmbeddedStore,
    entry: &CatalogEntry,
) -> Result<ManifestElement, RealiseError> {
    let mut paths = BTreeMap::new();
    for (output, known_path) in &entry.outputs {
        let path = if let Some(tree) = entry.trees.get(output) {
            store
                .add_tree(Path::new(tree), &output_store_name(&entry.name, output))
                .map_err(|source| RealiseError::Store {
                    package: entry.name.clone(),
                    source: Box::new(source),
                })?
                .to_string()
        } else {
            let unavailable = |reason: String| RealiseError::Unavailable {
                package: entry.name.clone(),
                attr_path: entry.attr_path.clone(),
                output: output.clone(),
                reason,
            };
            let Some(path) = known_path else {
                return Err(unavailable("has no store path in the catalog".to_owned()));
            };
            if std::fs::symlink_metadata(path).is_err() {
                return Err(unavailable(format!("`{path}` does not exist")));
            }
            path.clone()
        };
        paths.insert(output.clone(), path);
    }
    let mut outputs = BTreeMap::new();
    for output in entry.outputs_to_install() {
        let path = paths
            .get(output)
            .ok_or_else(|| RealiseError::BadOutputsToInstall {
                package: entry.name.clone(),
                output: output.to_owned(),
            })?;
        outputs.insert(output.to_owned(), path.clone());
    }
    let out_path = paths
        .get("out")
        .or_else(|| paths.values().next())
        .cloned()
        .unwrap_or_default();
    let meta = crate::model::manifest::valid_meta(&entry.meta);
    Ok(ManifestElement {
        name: entry.name.clone(),
        out_path,
        outputs,
        system: entry.system.clone(),
        meta,
        drv_path: None,
    })
}
