//! Hidden internal commands used by benchmarks and crash tests; not part of the interface.

use super::{Outcome, Settings};
use crate::model::manifest::ManifestElement;
use crate::profile::build::build_environment;
use crate::profile::{LockOptions, Profile, Provenance};
use crate::store::StorePath;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Internal commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DebugCommand {
    /// Build a user environment from store paths (each installed as one element named after
    /// the path) and switch the profile to it as a new generation
    BuildEnvironment {
        /// Store paths in the embedded store (or anywhere on disk)
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

pub(crate) fn run(settings: &Settings, command: &DebugCommand) -> anyhow::Result<Outcome> {
    match command {
        DebugCommand::BuildEnvironment { paths } => {
            let root = settings.require_root()?;
            let store = super::store::open_store(settings)?;
            let profile_path = settings.profile_path()?;
            if let Some(parent) = profile_path.parent() {
                fs_err::create_dir_all(parent)?;
            }
            let profile = Profile::new(&profile_path, settings.profile_layout()?)?;
            let token = profile.read_token()?;
            let elements: Vec<ManifestElement> = paths
                .iter()
                .map(|path| {
                    let text = path.display().to_string();
                    let name = StorePath::from_absolute_path(store.store_dir().clone(), &text)
                        .map_or_else(
                            |_| {
                                path.file_name()
                                    .map(|name| name.to_string_lossy().into_owned())
                                    .unwrap_or_default()
                            },
                            |store_path| store_path.name().to_owned(),
                        );
                    ManifestElement {
                        name,
                        out_path: text.clone(),
                        outputs: BTreeMap::from([("out".to_owned(), text)]),
                        system: None,
                        meta: BTreeMap::new(),
                        drv_path: None,
                    }
                })
                .collect();
            let gc_lock = profile.hold_gc_lock(LockOptions::default(), &mut |_| {})?;
            let built = build_environment(&store, &elements, &root.join("nix/var/declenv/tmp"))?;
            for warning in &built.warnings {
                anstream::eprintln!("warning: {warning}");
            }
            let created = profile.commit(
                &token,
                std::path::Path::new(&built.path.to_string()),
                &Provenance {
                    command: std::env::args().collect(),
                    declarative: None,
                },
                LockOptions::default(),
                &mut |_| {},
            )?;
            drop(gc_lock);
            anstream::println!("{}", created.number);
            Ok(Outcome::Success)
        }
    }
}
