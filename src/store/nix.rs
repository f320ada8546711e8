//! The Nix backend's store: a real Nix store, reached only through Nix's own commands.
//!
//! Owns running `nix-env`, `nix-instantiate`, `nix-build` and `nix-store` with pinned
//! arguments and reading what they print. Nothing here writes into the store directory or
//! Nix's database itself: paths become valid because Nix builds, fetches or adds them, and
//! they are protected from Nix's garbage collector by the roots Nix makes (`--out-link`,
//! `--add-root`) until a generation roots them. Every error names the command that failed
//! and carries what Nix printed.
//!
//! The user environment is built as `nix-env` builds one: the manifest goes to the store with
//! the installed outputs as its references (`builtins.toFile`, which stores text exactly as
//! `nix-env`'s `addTextToStore` does), and the derivation handed to Nix's `builtin:buildenv`
//! has the attributes `nix-env`'s `buildenv.nix` gives it. So the same elements make the same
//! store path as `nix-env -i` would.

use super::{StoreDir, StorePath, StorePathError};
use crate::model::manifest::{ManifestElement, RenderError, render};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The arguments every evaluation gets, so that the user's `~/.config/nixpkgs` (its `config.nix`
/// and overlays) cannot change what a source means. Expressions that are not functions of
/// these ignore them, as Nix's auto-calling does.
const PINNED_ARGUMENTS: [&str; 6] = ["--arg", "config", "{ }", "--arg", "overlays", "[ ]"];

/// What Nix printed on its standard error when a command failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NixOutput(pub String);

/// A Nix command that could not be run or failed. Every variant names the command.
#[derive(Debug, thiserror::Error)]
pub enum NixError {
    /// The program could not be started (most often: Nix is not installed).
    #[error("cannot run `{program}`")]
    Spawn {
        /// The program.
        program: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The command exited with an error.
    #[error("`{command}` failed")]
    Failed {
        /// The command, shortened to its program and operation.
        command: String,
        /// What Nix printed on its standard error.
        #[source]
        output: NixOutput,
    },
    /// The command printed something this declenv cannot read.
    #[error("`{command}` printed `{printed}`, which is not {expected}")]
    Unexpected {
        /// The command.
        command: String,
        /// What it printed (trimmed).
        printed: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A file for Nix could not be written.
    #[error("cannot write `{}`", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// An element cannot be written to a manifest Nix reads back.
    #[error(transparent)]
    Manifest(#[from] RenderError),
    /// A path Nix printed is not a path of this store.
    #[error(transparent)]
    InvalidPath(#[from] StorePathError),
}

impl NixError {
    /// A hint for the user, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound => Some(
                "the Nix backend needs Nix's commands on `PATH` (Debian: `apt-get install nix-bin`)"
                    .to_owned(),
            ),
            _ => None,
        }
    }
}

/// A package tree from a channel, to be added to the Nix store by Nix under a fixed name and
/// NAR hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeToAdd {
    /// The tree on disk.
    pub tree: PathBuf,
    /// The store path name.
    pub name: String,
    /// The expected NAR hash, `sha256:<nixbase32>`; Nix refuses a tree with another one.
    pub nar_hash: String,
    /// The store path it becomes (what the manifest names).
    pub path: String,
}

/// A real Nix store, as Nix's environment variables select it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixStore {
    store_dir: StoreDir,
    state_dir: PathBuf,
}

impl NixStore {
    /// The store Nix's commands use in this environment: `NIX_STORE_DIR` (default `/nix/store`)
    /// and `NIX_STATE_DIR` (default `/nix/var/nix`).
    pub fn from_environment() -> Result<Self, NixError> {
        let variable = |name: &str, default: &str| {
            std::env::var_os(name)
                .filter(|value| !value.is_empty())
                .map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        let store_dir = variable("NIX_STORE_DIR", "/nix/store");
        // Nix computes paths with the directory as configured, not resolved through symlinks.
        let store_dir = StoreDir::new(&store_dir.to_string_lossy())?;
        Ok(Self {
            store_dir,
            state_dir: variable("NIX_STATE_DIR", "/nix/var/nix"),
        })
    }

    /// The store directory.
    #[must_use]
    pub fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// Nix's state directory (`/nix/var/nix`).
    #[must_use]
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Nix's indirect GC roots, `STATE/gcroots/auto`.
    #[must_use]
    pub fn gcroots_auto(&self) -> PathBuf {
        self.state_dir.join("gcroots").join("auto")
    }

    /// The profile `nix-env` uses when given none: the target of `~/.nix-profile` when that is
    /// a link, else `STATE/profiles/default` for root and `STATE/profiles/per-user/USER/profile`
    /// for anyone else (Nix 2.8's `getDefaultProfile`, without creating the link).
    #[must_use]
    pub fn default_profile(&self, home: Option<&Path>) -> PathBuf {
        if let Some(home) = home {
            let link = home.join(".nix-profile");
            if let Ok(target) = std::fs::read_link(&link) {
                return home.join(target);
            }
        }
        // The owner of `/proc/self` is the process's user on Linux, named as the password
        // database names it (Nix asks `getpwuid`; the local `/etc/passwd` answers for local
        // users); elsewhere, and for users it does not list, `USER`.
        let uid = std::fs::metadata("/proc/self")
            .ok()
            .map(|metadata| std::os::unix::fs::MetadataExt::uid(&metadata));
        let listed = uid.and_then(|uid| {
            let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
            user_named_in_passwd(&passwd, uid)
        });
        let user = listed.unwrap_or_else(|| std::env::var("USER").unwrap_or_default());
        let is_root = uid.map_or(user == "root", |uid| uid == 0);
        if is_root || user.is_empty() {
            self.state_dir.join("profiles").join("default")
        } else {
            self.state_dir
                .join("profiles")
                .join("per-user")
                .join(user)
                .join("profile")
        }
    }

    /// Nix's version line, e.g. `nix-env (Nix) 2.8.0`.
    pub fn version(&self) -> Result<String, NixError> {
        let output = run(
            Command::new("nix-env").arg("--version"),
            "nix-env --version",
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// The configuration files Nix 2.8 reads, in its order: `nix.conf` in `NIX_CONF_DIR`
    /// (`/etc/nix`), then `NIX_USER_CONF_FILES` when set, else `nix/nix.conf` under each of
    /// `XDG_CONFIG_DIRS` (`/etc/xdg`) and `XDG_CONFIG_HOME` (`~/.config`). Files they
    /// `include` are not followed. (Order and precedence as `nix show-config` of Nix 2.8 shows
    /// them: the last file read wins, the first of `XDG_CONFIG_DIRS` over the others,
    /// `XDG_CONFIG_HOME` over them all, and `NIX_USER_CONF_FILES` replaces the XDG files.)
    #[must_use]
    pub fn configuration_files() -> Vec<PathBuf> {
        configuration_files_from(|name| std::env::var_os(name))
    }

    /// What identifies the Nix that evaluates sources, cheaply: the `nix-env` found on `PATH`,
    /// resolved through symlinks (a Nix installed in a store is named by its hash), with its
    /// size and modification time. Falls back to running `nix-env --version` when there is none
    /// to look at (the error then says Nix is missing).
    pub fn identity(&self) -> Result<String, NixError> {
        let found = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|directory| directory.join("nix-env"))
                .find(|candidate| candidate.is_file())
        });
        if let Some(program) = found
            && let Ok(canonical) = std::fs::canonicalize(&program)
            && let Ok(metadata) = std::fs::metadata(&canonical)
        {
            use std::os::unix::fs::MetadataExt as _;
            return Ok(format!(
                "{} {} {}.{}",
                canonical.display(),
                metadata.size(),
                metadata.mtime(),
                metadata.mtime_nsec()
            ));
        }
        self.version()
    }

    /// Resolves a search-path entry (`nixpkgs` for `<nixpkgs>`) as Nix does, through `NIX_PATH`.
    pub fn find_file(&self, entry: &str) -> Result<PathBuf, NixError> {
        let command = format!("nix-instantiate --find-file {entry}");
        let output = run(
            Command::new("nix-instantiate").args(["--find-file", entry]),
            &command,
        )?;
        let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if printed.is_empty() || !printed.starts_with('/') {
            return Err(NixError::Unexpected {
                command,
                printed,
                expected: "an absolute path",
            });
        }
        Ok(PathBuf::from(printed))
    }

    /// Every package `expression` offers, as `nix-env -qa --json --out-path --meta` prints
    /// them, evaluated with [`PINNED_ARGUMENTS`] and without the `NIXPKGS_*` variables.
    pub fn query_available(&self, expression: &Path) -> Result<Vec<u8>, NixError> {
        let mut command = Command::new("nix-env");
        command
            // A profile that cannot exist: without one, nix-env makes `~/.nix-profile` on any
            // call, and an evaluation must not touch the user's profile.
            .args(["-p", "/dev/null/declenv-evaluates-only"])
            .arg("-f")
            .arg(expression)
            .args(PINNED_ARGUMENTS)
            .args(["-qa", "*", "--json", "--out-path", "--meta"]);
        pin_environment(&mut command);
        let output = run(
            &mut command,
            &format!("nix-env -f {} -qa --json", expression.display()),
        )?;
        Ok(output.stdout)
    }

    /// Which of `paths` are not valid in the store.
    pub fn invalid_paths(&self, paths: &[String]) -> Result<Vec<String>, NixError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let output = run(
            Command::new("nix-store")
                .args(["--check-validity", "--print-invalid"])
                .args(paths),
            "nix-store --check-validity",
        )?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Builds (or fetches) the attribute paths `attributes` of `expression` with `nix-build`,
    /// evaluated as [`NixStore::query_available`] evaluates it. The outputs stay rooted by
    /// `out_link`, `out_link-2`, … until the caller removes those links.
    pub fn build_attributes(
        &self,
        expression: &Path,
        attributes: &[String],
        out_link: &Path,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), NixError> {
        if attributes.is_empty() {
            return Ok(());
        }
        let mut command = Command::new("nix-build");
        command.arg(expression).args(PINNED_ARGUMENTS);
        for attribute in attributes {
            command.arg("-A").arg(attribute);
        }
        command.arg("--out-link").arg(out_link);
        pin_environment(&mut command);
        run_logged(
            &mut command,
            &format!("nix-build {} -A …", expression.display()),
            log,
        )?;
        Ok(())
    }

    /// Makes `paths` valid (they are already, or a substituter has them) and roots them by
    /// `root`, `root-2`, … until the caller removes those links.
    pub fn realise_paths(
        &self,
        paths: &[String],
        root: &Path,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), NixError> {
        if paths.is_empty() {
            return Ok(());
        }
        run_logged(
            Command::new("nix-store")
                .arg("--realise")
                .args(paths)
                .arg("--add-root")
                .arg(root),
            "nix-store --realise",
            log,
        )?;
        Ok(())
    }

    /// Builds the user environment holding `elements` with Nix's `builtin:buildenv`, as
    /// `nix-env` does, and returns its store path; the environment stays rooted by `out_link`
    /// until the caller removes it. `trees` are channel trees some elements' outputs are:
    /// Nix adds them in the same evaluation (checking their NAR hashes), so nothing is ever
    /// valid without a root. The expression and a copy of the manifest are written to
    /// `directory`, which must exist.
    pub fn build_environment(
        &self,
        elements: &[ManifestElement],
        trees: &[TreeToAdd],
        directory: &Path,
        out_link: &Path,
        log: &mut dyn FnMut(&str),
    ) -> Result<(StorePath, Vec<String>), NixError> {
        let manifest = render(elements)?;
        let tree_paths: std::collections::BTreeSet<&str> =
            trees.iter().map(|tree| tree.path.as_str()).collect();
        let mut references = Vec::new();
        for tree in trees {
            references.push(format!(
                "(builtins.path {{ path = {}; name = {}; recursive = true; sha256 = {}; }})",
                nix_string(&tree.tree.to_string_lossy()),
                nix_string(&tree.name),
                nix_string(
                    tree.nar_hash
                        .strip_prefix("sha256:")
                        .unwrap_or(&tree.nar_hash)
                ),
            ));
        }
        let mut named = std::collections::BTreeSet::new();
        for element in elements {
            for path in element.outputs.values() {
                if !tree_paths.contains(path.as_str()) && named.insert(path.clone()) {
                    references.push(format!("(builtins.storePath {})", nix_string(path)));
                }
            }
        }
        let expression = format!(
            "# The user environment, as nix-env's buildenv.nix builds it from manifest.nix.\n\
             let\n  \
               elements = import ./manifest.nix;\n  \
               references = [\n    {}\n  ];\n  \
               text = builtins.foldl' (text: reference: text + builtins.substring 0 0 reference)\n    \
                 (builtins.readFile ./manifest.nix) references;\n\
             in\n\
             derivation {{\n  \
               name = \"user-environment\";\n  \
               system = \"builtin\";\n  \
               builder = \"builtin:buildenv\";\n  \
               manifest = builtins.toFile \"env-manifest.nix\" text;\n  \
               derivations = map (d: [ (d.meta.active or \"true\") (d.meta.priority or 5)\n    \
                 (builtins.length d.outputs) ] ++ map (output: builtins.getAttr output d) d.outputs)\n    \
                 elements;\n  \
               preferLocalBuild = true;\n  \
               allowSubstitutes = false;\n\
             }}\n",
            references.join("\n    ")
        );
        let write = |name: &str, contents: &[u8]| {
            let path = directory.join(name);
            std::fs::write(&path, contents).map_err(|source| NixError::Write { path, source })
        };
        write("manifest.nix", manifest.as_bytes())?;
        write("default.nix", expression.as_bytes())?;
        let mut command = Command::new("nix-build");
        command.arg(directory).arg("--out-link").arg(out_link);
        let output = run_logged(&mut command, "nix-build (user environment)", log)?;
        let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let path = StorePath::from_absolute_path(self.store_dir.clone(), &printed)?;
        let warnings = String::from_utf8_lossy(&output.stderr)
            .lines()
            .filter_map(|line| line.strip_prefix("warning: "))
            .map(str::to_owned)
            .collect();
        Ok((path, warnings))
    }

    /// Runs Nix's garbage collector: `nix-store --gc`, or with `report` (`--print-dead`,
    /// `--print-live`) only its report. Returns the paths deleted or reported, and Nix's summary.
    pub fn collect_garbage(&self, report: Option<&str>) -> Result<(Vec<String>, String), NixError> {
        let mut command = Command::new("nix-store");
        command.arg("--gc").args(report);
        let output = run(&mut command, "nix-store --gc")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let paths = if report.is_some() {
            stdout.lines().map(str::to_owned).collect()
        } else {
            stderr
                .lines()
                .filter_map(|line| line.strip_prefix("deleting '")?.strip_suffix('\''))
                .map(str::to_owned)
                .collect()
        };
        let summary = if report.is_some() {
            String::new()
        } else {
            stdout.trim().to_owned()
        };
        Ok((paths, summary))
    }

    /// The garbage collector's roots, as `nix-store --gc --print-roots` lists them: each link
    /// (or `{censored}`, or a process's file) with the store path it keeps.
    pub fn roots(&self) -> Result<Vec<(String, String)>, NixError> {
        let output = run(
            Command::new("nix-store").args(["--gc", "--print-roots"]),
            "nix-store --gc --print-roots",
        )?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.rsplit_once(" -> "))
            .map(|(link, path)| (link.to_owned(), path.to_owned()))
            .collect())
    }

    /// What the collector keeps alive through `paths` (valid paths): their closure, and, as
    /// Nix keeps the derivations of live outputs (`keep-derivations`, on by default), the
    /// closures of their valid derivers.
    pub fn live_closure(
        &self,
        paths: &[String],
    ) -> Result<std::collections::BTreeSet<String>, NixError> {
        let mut closure = self.closure(paths)?;
        let listed: Vec<String> = closure.iter().cloned().collect();
        let mut derivers: Vec<String> = query_each(&["--query", "--deriver"], &listed)?
            .into_iter()
            .filter(|line| line.starts_with('/'))
            .collect();
        derivers.sort();
        derivers.dedup();
        let invalid: std::collections::BTreeSet<String> =
            query_each(&["--check-validity", "--print-invalid"], &derivers)?
                .into_iter()
                .collect();
        derivers.retain(|deriver| !invalid.contains(deriver));
        closure.extend(self.closure(&derivers)?);
        Ok(closure)
    }

    /// The closure of `paths` (valid paths): `nix-store --query --requisites`.
    pub fn closure(
        &self,
        paths: &[String],
    ) -> Result<std::collections::BTreeSet<String>, NixError> {
        Ok(query_each(&["--query", "--requisites"], paths)?
            .into_iter()
            .collect())
    }

    /// The total NAR size of `paths` (valid paths), as Nix's database records them.
    pub fn nar_size_total(&self, paths: &[String]) -> Result<u64, NixError> {
        Ok(query_each(&["--query", "--size"], paths)?
            .iter()
            .map(|line| line.trim().parse::<u64>().unwrap_or(0))
            .fold(0, u64::saturating_add))
    }
}

/// [`NixStore::configuration_files`] for the environment `lookup` gives.
fn configuration_files_from(lookup: impl Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
    let variable = |name: &str| lookup(name).filter(|value| !value.is_empty());
    let mut files = vec![
        variable("NIX_CONF_DIR")
            .map_or_else(|| PathBuf::from("/etc/nix"), PathBuf::from)
            .join("nix.conf"),
    ];
    if let Some(user_files) = variable("NIX_USER_CONF_FILES") {
        files.extend(std::env::split_paths(&user_files));
        return files;
    }
    let config_dirs = variable("XDG_CONFIG_DIRS").unwrap_or_else(|| "/etc/xdg".into());
    let config_home = variable("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| variable("HOME").map(|home| PathBuf::from(home).join(".config")));
    let mut directories: Vec<PathBuf> = std::env::split_paths(&config_dirs).collect();
    directories.reverse();
    directories.extend(config_home);
    files.extend(
        directories
            .into_iter()
            .map(|directory| directory.join("nix/nix.conf")),
    );
    files
}

/// The lines `nix-store OPERATION PATHS…` prints, run over `paths` in chunks so that a large
/// set stays within the argument length limit (no run at all for none).
fn query_each(operation: &[&str], paths: &[String]) -> Result<Vec<String>, NixError> {
    let mut lines = Vec::new();
    for chunk in paths.chunks(500) {
        let output = run(
            Command::new("nix-store").args(operation).args(chunk),
            &format!("nix-store {}", operation.join(" ")),
        )?;
        lines.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_owned),
        );
    }
    Ok(lines)
}

/// The name `passwd` (the text of `/etc/passwd`) gives user `uid`: its first line with that
/// uid, as `getpwuid` answers.
fn user_named_in_passwd(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let listed_uid: u32 = fields.nth(1)?.parse().ok()?;
        (listed_uid == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// The bytes Nix says a collection freed, from its summary (`N store paths deleted, X MiB
/// freed`); Nix prints them to 0.01 MiB.
#[must_use]
pub fn freed_bytes(summary: &str) -> Option<u64> {
    let (_, freed) = summary.rsplit_once(", ")?;
    let mebibytes: f64 = freed.strip_suffix(" MiB freed")?.parse().ok()?;
    if !mebibytes.is_finite() || mebibytes < 0.0 {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a finite, non-negative size far below 2^64 bytes"
    )]
    Some((mebibytes * 1024.0 * 1024.0).round() as u64)
}

/// Has Nix make `link` a permanent root of `target` (`nix-store --realise TARGET --add-root
/// LINK`): it replaces the link atomically and registers it as an indirect root, through the
/// daemon on a multi-user install, as `nix-env` does for a new generation.
pub fn add_indirect_root(link: &Path, target: &Path) -> Result<(), NixError> {
    run(
        Command::new("nix-store")
            .arg("--realise")
            .arg(target)
            .arg("--add-root")
            .arg(link),
        "nix-store --realise --add-root",
    )?;
    Ok(())
}

/// Removes what could make an evaluation depend on the user rather than on the source.
fn pin_environment(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("NIXPKGS_") {
            command.env_remove(&name);
        }
    }
}

/// Runs `command`, capturing its output; an exit status other than 0 is an error carrying
/// what it printed on standard error.
fn run(command: &mut Command, description: &str) -> Result<Output, NixError> {
    let program: OsString = command.get_program().to_owned();
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NixError::Spawn {
            program: program.to_string_lossy().into_owned(),
            source,
        })?;
    if output.status.success() {
        return Ok(output);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut printed = stderr.trim().to_owned();
    if printed.is_empty() {
        printed = format!("it exited with {}", output.status);
    }
    Err(NixError::Failed {
        command: description.to_owned(),
        output: NixOutput(printed),
    })
}

/// Runs `command` like [`run`], handing each line it prints on standard error to `log` as it
/// comes (a build can take long: this is its progress), until Nix's first `error:` line: on
/// failure the error carries the lines from there on, so that nothing is printed twice.
fn run_logged(
    command: &mut Command,
    description: &str,
    log: &mut dyn FnMut(&str),
) -> Result<Output, NixError> {
    use std::io::{BufRead as _, Read as _};
    let program: OsString = command.get_program().to_owned();
    let spawn_error = |source| NixError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let mut stdout_pipe = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut stdout = Vec::new();
        if let Some(pipe) = stdout_pipe.as_mut() {
            let _ = pipe.read_to_end(&mut stdout);
        }
        stdout
    });
    let mut stderr = Vec::new();
    if let Some(pipe) = child.stderr.take() {
        // From Nix's first `error:` on, the lines go to the error instead.
        let mut logging = true;
        for line in std::io::BufReader::new(pipe).split(b'\n') {
            let Ok(line) = line else { break };
            logging = logging && !line.starts_with(b"error:");
            if logging {
                log(&String::from_utf8_lossy(&line));
            }
            stderr.extend_from_slice(&line);
            stderr.push(b'\n');
        }
    }
    let status = child.wait().map_err(spawn_error)?;
    let stdout = reader.join().unwrap_or_default();
    if status.success() {
        return Ok(Output {
            status,
            stdout,
            stderr,
        });
    }
    let text = String::from_utf8_lossy(&stderr);
    let from_error = text
        .find("error:")
        .map_or(text.as_ref(), |start| &text[start..])
        .trim();
    Err(NixError::Failed {
        command: description.to_owned(),
        output: NixOutput(if from_error.is_empty() {
            format!("it exited with {status}")
        } else {
            from_error.to_owned()
        }),
    })
}

/// `text` as a Nix string literal.
#[must_use]
pub fn nix_string(text: &str) -> String {
    let mut literal = String::with_capacity(text.len() + 2);
    literal.push('"');
    let mut characters = text.chars().peekable();
    while let Some(character) = characters.next() {
        match character {
            '"' => literal.push_str("\\\""),
            '\\' => literal.push_str("\\\\"),
            '\n' => literal.push_str("\\n"),
            '\r' => literal.push_str("\\r"),
            '\t' => literal.push_str("\\t"),
            '$' if characters.peek() == Some(&'{') => literal.push_str("\\$"),
            other => literal.push(other),
        }
    }
    literal.push('"');
    literal
}

#[cfg(test)]
mod tests {
    /// The files in the order Nix 2.8 reads them (later ones win), as `nix show-config` showed
    /// with a different `max-jobs` in each: `/etc/nix` 10, `XDG_CONFIG_HOME` 11 over the XDG
    /// directories, the first of `XDG_CONFIG_DIRS` 12 over the second, `NIX_USER_CONF_FILES`
    /// read instead of them all, `~/.config` when `XDG_CONFIG_HOME` is unset.
    #[rstest::rstest]
    #[case(&[("HOME", "/h")], &["/etc/nix/nix.conf", "/etc/xdg/nix/nix.conf", "/h/.config/nix/nix.conf"])]
    #[case(
        &[("NIX_CONF_DIR", "/c"), ("XDG_CONFIG_DIRS", "/d1:/d2"), ("XDG_CONFIG_HOME", "/x")],
        &["/c/nix.conf", "/d2/nix/nix.conf", "/d1/nix/nix.conf", "/x/nix/nix.conf"]
    )]
    #[case(
        &[("XDG_CONFIG_HOME", "/x"), ("NIX_USER_CONF_FILES", "/u/a.conf:/u/b.conf")],
        &["/etc/nix/nix.conf", "/u/a.conf", "/u/b.conf"]
    )]
    #[case(&[("NIX_CONF_DIR", ""), ("HOME", "")], &["/etc/nix/nix.conf", "/etc/xdg/nix/nix.conf"])]
    fn configuration_files_come_in_nix_order(
        #[case] environment: &[(&str, &str)],
        #[case] expected: &[&str],
    ) {
        let files = configuration_files_from(|name| {
            environment
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| OsString::from(value))
        });
        let expected: Vec<PathBuf> = expected.iter().map(PathBuf::from).collect();
        assert_eq!(files, expected);
    }

    #[rstest::rstest]
    #[case(0, Some("root"))]
    #[case(65534, Some("nobody"))]
    #[case(1000, Some("alice"))]
    #[case(1001, None)]
    fn the_password_database_names_users_by_uid(#[case] uid: u32, #[case] name: Option<&str>) {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      # a comment\n\
                      broken-line\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                      alice:x:1000:1000::/home/alice:/bin/sh\n\
                      alice-again:x:1000:1000::/home/alice:/bin/sh\n\
                      :x:1001:1001::/:/bin/sh\n";
        assert_eq!(user_named_in_passwd(passwd, uid).as_deref(), name);
    }

    #[rstest::rstest]
    #[case("2 store paths deleted, 0.29 MiB freed", Some(304_087))]
    #[case("0 store paths deleted, 0.00 MiB freed", Some(0))]
    #[case("1 store paths deleted, 1024.00 MiB freed", Some(1 << 30))]
    #[case("", None)]
    #[case("2 store paths deleted", None)]
    #[case("2 store paths deleted, -1.00 MiB freed", None)]
    #[case("2 store paths deleted, lots MiB freed", None)]
    fn freed_bytes_reads_nix_summary(#[case] summary: &str, #[case] expected: Option<u64>) {
        assert_eq!(freed_bytes(summary), expected);
    }

    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("plain", "\"plain\"")]
    #[case("a \"quoted\" word", "\"a \\\"quoted\\\" word\"")]
    #[case("back\\slash", "\"back\\\\slash\"")]
    #[case("${interpolation}", "\"\\${interpolation}\"")]
    #[case("$HOME and $", "\"$HOME and $\"")]
    #[case("line\nbreak\ttab", "\"line\\nbreak\\ttab\"")]
    fn strings_are_quoted_for_nix(#[case] text: &str, #[case] expected: &str) {
        assert_eq!(nix_string(text), expected);
    }

    #[test]
    fn the_default_profile_follows_the_users_link() {
        let home = tempfile::tempdir().expect("tempdir");
        let store = NixStore {
            store_dir: StoreDir::new("/nix/store").expect("store dir"),
            state_dir: PathBuf::from("/nix/var/nix"),
        };
        std::os::unix::fs::symlink(
            "/nix/var/nix/profiles/per-user/alice/profile",
            home.path().join(".nix-profile"),
        )
        .expect("symlink");
        assert_eq!(
            store.default_profile(Some(home.path())),
            PathBuf::from("/nix/var/nix/profiles/per-user/alice/profile")
        );
    }
}
