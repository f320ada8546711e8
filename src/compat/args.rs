//! The `nix-env` command line, read the way Nix 2.8 reads it (`nix-env.cc`'s `main` loop over
//! `LegacyArgs`), in two phases.
//!
//! **Phase 1** ([`lex`]) walks the arguments once, as `Args::parseCmdline` does: compound short
//! flags are split (`-iA` is `-i -A`, `-qaP` is `-q -a -P`, and `-G3` is `-G 3`: the split stops
//! at the first byte that is not a letter), the flags every Nix command accepts are taken
//! (`-v`, `--option NAME VALUE`, `-j N`, `--arg NAME EXPR`, settings such as `--sandbox` …),
//! then `nix-env`'s own: exactly one operation (a second, different one is the usage error
//! `only one operation may be specified`), the global flags (`-p`, `-f`, `--dry-run`, `-b`,
//! `--system-filter`, `--force-name`, `--repair`), and everything else starting with `-`
//! collected as an *operation flag* for phase 2, everything else as an operation argument.
//! `--dry-run` prints `(dry run; not doing anything)` the moment it is read, so the notices come
//! back even when a later argument fails.
//!
//! **Phase 2** ([`parse`]) gives the operation flags their operation's meaning: `-P` is
//! `--preserve-installed` under `-i` and `--attr-path` under `-q`; `-A` takes a value only when
//! `-q` came before it (Nix's "hacky" rule, kept, so `-A foo -q` fails as Nix fails); `-u -P` is
//! `unknown flag '-P'`. Each operation checks its flags and argument count in Nix's order with
//! Nix's words, and the result is a typed [`Command`].
//!
//! Pure: strings in, values out. Printing, exit codes and profiles belong to `cli::env`.

use crate::plan::generations::{
    DeleteArgumentsError, DeletePolicy, parse_switch_generation_arguments,
};

/// The program name Nix's usage hint names: `Try 'nix-env --help' for more information.`
pub const PROGRAM: &str = "nix-env";

/// The notice `--dry-run` prints while the command line is read.
pub const DRY_RUN_NOTICE: &str = "(dry run; not doing anything)";

/// Nix's default verbosity (`lvlInfo`); `-v` raises it, `--quiet` lowers it.
pub const DEFAULT_VERBOSITY: i32 = 3;

/// One `nix-env` operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `-i`, `--install`.
    Install,
    /// `-e`, `--uninstall`.
    Uninstall,
    /// `-u`, `--upgrade`.
    Upgrade,
    /// `--set-flag`.
    SetFlag,
    /// `--set`.
    Set,
    /// `-q`, `--query`.
    Query,
    /// `-S`, `--switch-profile`.
    SwitchProfile,
    /// `-G`, `--switch-generation`.
    SwitchGeneration,
    /// `--rollback`.
    Rollback,
    /// `--list-generations`.
    ListGenerations,
    /// `--delete-generations`.
    DeleteGenerations,
    /// `--version`.
    Version,
}

/// A value given with `--arg` or `--argstr`; accepted and ignored (catalogs and channels are
/// not functions to call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoArg {
    /// `--arg NAME EXPR`.
    Expression(String),
    /// `--argstr NAME VALUE`.
    String(String),
}

/// Flags that apply whatever the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Globals {
    /// `-p`/`--profile`, as given (the caller makes it absolute).
    pub profile: Option<String>,
    /// `-f`/`--file`, as given: a catalog JSON file or a channel directory.
    pub file: Option<String>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--system-filter` (`*`: every system).
    pub system_filter: String,
    /// `-b`/`--prebuilt-only`.
    pub prebuilt_only: bool,
    /// `--force-name` (undocumented in Nix): the name every new element gets.
    pub force_name: Option<String>,
    /// `--repair`.
    pub repair: bool,
    /// Nix's verbosity level: 3 (`lvlInfo`) by default, `-v` adds one, `--quiet` takes one.
    pub verbosity: i32,
    /// `--arg` and `--argstr`, by name.
    pub auto_args: Vec<(String, AutoArg)>,
    /// `-I`/`--include` paths.
    pub include: Vec<String>,
    /// `--option NAME VALUE` and settings given as flags (`--sandbox`, `--substituters X`).
    pub options: Vec<(String, String)>,
}

impl Default for Globals {
    fn default() -> Self {
        Self {
            profile: None,
            file: None,
            dry_run: false,
            system_filter: "*".to_owned(),
            prebuilt_only: false,
            force_name: None,
            repair: false,
            verbosity: DEFAULT_VERBOSITY,
            auto_args: Vec::new(),
            include: Vec::new(),
            options: Vec::new(),
        }
    }
}

impl Globals {
    /// Whether `printInfo` messages (`installing …`, the dry-run notice) are shown.
    #[must_use]
    pub fn shows_info(&self) -> bool {
        self.verbosity >= DEFAULT_VERBOSITY
    }

    /// Whether warnings are shown (`--quiet --quiet` hides them).
    #[must_use]
    pub fn shows_warnings(&self) -> bool {
        self.verbosity >= 1
    }
}

/// What phase 1 collected.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LowArgs {
    /// The operation, if one was given.
    pub operation: Option<Operation>,
    /// `--help` was given (Nix shows the manual at once, whatever else follows).
    pub help: bool,
    /// Flags left for the operation, in order (with the values Nix takes at once: after
    /// `--from-profile`, and after `-A`/`--attr` once `-q` was seen).
    pub operation_flags: Vec<String>,
    /// Everything else, in order.
    pub operation_args: Vec<String>,
    /// The global flags.
    pub globals: Globals,
}

/// A command line Nix rejects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// A usage error: Nix prints `error: …` and then
    /// `Try 'nix-env --help' for more information.`, and exits with 1.
    #[error("{0}")]
    Usage(String),
    /// A plain error (`error: …`, exit 1), for the argument checks Nix makes as ordinary errors.
    #[error("{0}")]
    Plain(String),
}

impl ArgsError {
    fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    /// Whether Nix follows the message with its `Try 'nix-env --help'` line.
    #[must_use]
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Usage(_))
    }

    /// What Nix prints on stderr for this error, each line ending in a newline.
    #[must_use]
    pub fn render(&self) -> String {
        match self {
            Self::Usage(message) => {
                format!("error: {message}\nTry '{PROGRAM} --help' for more information.\n")
            }
            Self::Plain(message) => format!("error: {message}\n"),
        }
    }
}

/// Where `-i`, `-u` and `--set` take new elements from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallSource {
    /// The arguments are selectors over the available packages (none means `*`).
    Selectors,
    /// The first argument contains `/`: every argument is a store path (or a link into one).
    StorePaths,
    /// `-A`/`--attr`: every argument is an attribute path.
    AttrPaths,
    /// `-E`/`--from-expression`: every argument is a Nix function of the expression.
    Expressions,
    /// `--from-profile P`: the arguments select among the elements installed in `P`.
    Profile(String),
}

/// `--install`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallArgs {
    /// Where the new elements come from.
    pub source: InstallSource,
    /// `-P`/`--preserve-installed`: replace nothing.
    pub preserve_installed: bool,
    /// `-r`/`--remove-all`: drop everything installed before.
    pub remove_all: bool,
    /// The arguments.
    pub args: Vec<String>,
}

/// Which versions `-u` may move to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeKind {
    /// `--lt` (the default): only newer versions.
    LessThan,
    /// `--leq`: newer or equal versions.
    LessOrEqual,
    /// `--eq`: equal versions (another build of the same version).
    Equal,
    /// `--always`: any version, downgrades included.
    Always,
}

/// `--upgrade`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeArgs {
    /// Where the candidates come from.
    pub source: InstallSource,
    /// Which versions qualify.
    pub kind: UpgradeKind,
    /// The selectors.
    pub args: Vec<String>,
}

/// Which set `-q` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuerySource {
    /// `--installed` (the default): the profile's elements.
    Installed,
    /// `-a`/`--available`: the packages of `-f` (or the default sources).
    Available,
}

/// `--query`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one field per nix-env query flag"
)]
pub struct QueryArgs {
    /// Installed or available.
    pub source: QuerySource,
    /// `-s`/`--status`.
    pub status: bool,
    /// The name column (`--no-name` drops it).
    pub name: bool,
    /// `--system`.
    pub system: bool,
    /// `--description`.
    pub description: bool,
    /// `-c`/`--compare-versions`.
    pub compare_versions: bool,
    /// `--drv-path`.
    pub drv_path: bool,
    /// `--out-path`.
    pub out_path: bool,
    /// `--meta` (JSON and XML only).
    pub meta: bool,
    /// `--xml`.
    pub xml: bool,
    /// `--json`.
    pub json: bool,
    /// `-P`/`--attr-path`.
    pub attr_path: bool,
    /// `-A`/`--attr PATH`: where evaluation of the available set starts.
    pub attr: Option<String>,
    /// The selectors.
    pub selectors: Vec<String>,
}

/// A command line, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `--help`.
    Help,
    /// `--version`.
    Version,
    /// `-i`.
    Install(InstallArgs),
    /// `-u`.
    Upgrade(UpgradeArgs),
    /// `-e`: the selectors (or paths) to remove.
    Uninstall {
        /// Selectors, or arguments with `/` that name store paths.
        selectors: Vec<String>,
    },
    /// `--set-flag NAME VALUE SELECTOR…`.
    SetFlag {
        /// The meta attribute.
        name: String,
        /// Its new value (always a string in Nix).
        value: String,
        /// Which installed elements.
        selectors: Vec<String>,
    },
    /// `--set`.
    Set {
        /// Where the element comes from.
        source: InstallSource,
        /// The arguments.
        args: Vec<String>,
    },
    /// `-q`.
    Query(QueryArgs),
    /// `-S PATH`.
    SwitchProfile {
        /// The new profile, as given (the caller makes it absolute).
        path: String,
    },
    /// `-G N`.
    SwitchGeneration {
        /// The generation.
        number: u64,
    },
    /// `--rollback`.
    Rollback,
    /// `--list-generations`.
    ListGenerations,
    /// `--delete-generations`.
    DeleteGenerations(DeletePolicy),
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Global flags.
    pub globals: Globals,
    /// What to do.
    pub command: Command,
}

/// The outcome of [`parse`]: what Nix prints while reading the arguments (the dry-run notices,
/// already filtered by `--quiet`), then the command or the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Lines Nix prints on stderr before anything else.
    pub notices: Vec<String>,
    /// The command, or why the command line is rejected.
    pub result: Result<Invocation, ArgsError>,
}

/// How many values a flag every Nix command accepts takes.
fn common_flag_arity(flag: &str) -> Option<usize> {
    let arity = match flag {
        "-v" | "--verbose" | "--quiet" | "--debug" | "-Q" | "--no-build-output" | "-K"
        | "--keep-failed" | "-k" | "--keep-going" | "--fallback" | "--readonly-mode"
        | "--no-gc-warning" | "--impure" => 0,
        "--log-format" | "-j" | "--max-jobs" | "--cores" | "--max-silent-time" | "--timeout"
        | "--store" | "-I" | "--include" | "--eval-store" => 1,
        "--option" | "--arg" | "--argstr" | "--override-flake" => 2,
        _ => return setting_flag_arity(flag),
    };
    Some(arity)
}

/// Boolean settings Nix also accepts as `--NAME` and `--no-NAME` (a common subset of
/// `nix.conf`'s; an unknown one reaches the operation and fails there as an unknown flag).
const BOOLEAN_SETTINGS: &[&str] = &[
    "sandbox",
    "keep-env-derivations",
    "keep-outputs",
    "keep-derivations",
    "require-sigs",
    "substitute",
    "builders-use-substitutes",
    "auto-optimise-store",
    "show-trace",
    "allow-import-from-derivation",
    "pure-eval",
    "restrict-eval",
    "print-missing",
    "warn-dirty",
    "compress-build-log",
    "fsync-metadata",
    "use-sqlite-wal",
    "preallocate-contents",
    "allow-dirty",
    "sandbox-fallback",
    "use-case-hack",
];

/// Settings Nix accepts as `--NAME VALUE` (a common subset).
const VALUE_SETTINGS: &[&str] = &[
    "substituters",
    "extra-substituters",
    "trusted-substituters",
    "trusted-public-keys",
    "extra-trusted-public-keys",
    "builders",
    "system",
    "extra-platforms",
    "sandbox-paths",
    "extra-sandbox-paths",
    "nix-path",
    "experimental-features",
    "extra-experimental-features",
    "max-build-log-size",
    "narinfo-cache-negative-ttl",
    "narinfo-cache-positive-ttl",
    "connect-timeout",
    "build-users-group",
    "log-lines",
    "post-build-hook",
    "netrc-file",
    "tarball-ttl",
    "min-free",
    "max-free",
    "build-dir",
    "allowed-uris",
    "access-tokens",
];

fn setting_flag_arity(flag: &str) -> Option<usize> {
    let name = flag.strip_prefix("--")?;
    // nix-env keeps its own meaning of `--system` (a query column): Nix erases the setting.
    if name == "system" {
        return None;
    }
    if BOOLEAN_SETTINGS.contains(&name)
        || name
            .strip_prefix("no-")
            .is_some_and(|rest| BOOLEAN_SETTINGS.contains(&rest))
    {
        return Some(0);
    }
    VALUE_SETTINGS.contains(&name).then_some(1)
}

/// Splits compound short flags as `Args::parseCmdline` does: `-qaP` → `-q -a -P`; the split
/// stops at the first byte that is not an ASCII letter, which starts one more argument
/// (`-G3` → `-G 3`, `-j4` → `-j 4`).
fn expand_compound(argument: &str) -> Vec<String> {
    let bytes = argument.as_bytes();
    if bytes.len() <= 2 || bytes[0] != b'-' || bytes[1] == b'-' || !bytes[1].is_ascii_alphabetic() {
        return vec![argument.to_owned()];
    }
    let mut parts = vec![format!("-{}", char::from(bytes[1]))];
    for (index, &byte) in bytes.iter().enumerate().skip(2) {
        if byte.is_ascii_alphabetic() {
            parts.push(format!("-{}", char::from(byte)));
        } else {
            // Every byte before `index` is ASCII, so it is a character boundary.
            parts.push(argument[index..].to_owned());
            break;
        }
    }
    parts
}

/// State of phase 1.
struct Lexer {
    low: LowArgs,
    notices: Vec<String>,
}

impl Lexer {
    /// A flag every Nix command accepts, with its values.
    fn common_flag(&mut self, flag: &str, values: &[String]) {
        let globals = &mut self.low.globals;
        match flag {
            "-v" | "--verbose" => globals.verbosity += 1,
            "--quiet" => globals.verbosity = (globals.verbosity - 1).max(0),
            "--debug" => globals.verbosity = 7,
            "--option" => globals.options.push((values[0].clone(), values[1].clone())),
            "--arg" => globals
                .auto_args
                .push((values[0].clone(), AutoArg::Expression(values[1].clone()))),
            "--argstr" => globals
                .auto_args
                .push((values[0].clone(), AutoArg::String(values[1].clone()))),
            "-I" | "--include" => globals.include.push(values[0].clone()),
            _ => {
                let name = match flag {
                    "-j" => "max-jobs",
                    "-Q" => "no-build-output",
                    "-K" => "keep-failed",
                    "-k" => "keep-going",
                    long => long.trim_start_matches('-'),
                }
                .to_owned();
                let value = values.first().cloned().unwrap_or_else(|| {
                    if name.starts_with("no-") {
                        "false".to_owned()
                    } else {
                        "true".to_owned()
                    }
                });
                globals.options.push((name, value));
            }
        }
    }

    /// `nix-env`'s own argument handler (`parseArg` in `nix-env.cc`). `rest` holds the
    /// arguments after this one that it may take as values; returns how many it took.
    fn nix_env_argument(&mut self, argument: &str, rest: &[String]) -> Result<usize, ArgsError> {
        let previous = self.low.operation;
        let mut taken = 0;
        let value = |taken: &mut usize| -> Result<String, ArgsError> {
            let found = rest
                .get(*taken)
                .cloned()
                .ok_or_else(|| ArgsError::usage(format!("'{argument}' requires an argument")))?;
            *taken += 1;
            Ok(found)
        };
        let operation = match argument {
            "--help" => {
                self.low.help = true;
                None
            }
            "--version" => Some(Operation::Version),
            "--install" | "-i" => Some(Operation::Install),
            "--force-name" => {
                self.low.globals.force_name = Some(value(&mut taken)?);
                None
            }
            "--uninstall" | "-e" => Some(Operation::Uninstall),
            "--upgrade" | "-u" => Some(Operation::Upgrade),
            "--set-flag" => Some(Operation::SetFlag),
            "--set" => Some(Operation::Set),
            "--query" | "-q" => Some(Operation::Query),
            "--profile" | "-p" => {
                self.low.globals.profile = Some(value(&mut taken)?);
                None
            }
            "--file" | "-f" => {
                self.low.globals.file = Some(value(&mut taken)?);
                None
            }
            "--switch-profile" | "-S" => Some(Operation::SwitchProfile),
            "--switch-generation" | "-G" => Some(Operation::SwitchGeneration),
            "--rollback" => Some(Operation::Rollback),
            "--list-generations" => Some(Operation::ListGenerations),
            "--delete-generations" => Some(Operation::DeleteGenerations),
            "--dry-run" => {
                if self.low.globals.shows_info() {
                    self.notices.push(DRY_RUN_NOTICE.to_owned());
                }
                self.low.globals.dry_run = true;
                None
            }
            "--system-filter" => {
                self.low.globals.system_filter = value(&mut taken)?;
                None
            }
            "--prebuilt-only" | "-b" => {
                self.low.globals.prebuilt_only = true;
                None
            }
            "--repair" => {
                self.low.globals.repair = true;
                None
            }
            flag if flag.starts_with('-') => {
                self.low.operation_flags.push(flag.to_owned());
                // Nix's own "hacky" rule: these take their value at once, `-A` only once the
                // operation read so far is `--query`.
                if flag == "--from-profile"
                    || (previous == Some(Operation::Query) && (flag == "--attr" || flag == "-A"))
                {
                    let found = value(&mut taken)?;
                    self.low.operation_flags.push(found);
                }
                None
            }
            _ => {
                self.low.operation_args.push(argument.to_owned());
                None
            }
        };
        if let Some(operation) = operation {
            self.low.operation = Some(operation);
        }
        if let Some(previous) = previous
            && Some(previous) != self.low.operation
        {
            return Err(ArgsError::usage("only one operation may be specified"));
        }
        Ok(taken)
    }
}

/// Phase 1: reads every argument (without the program name) into a [`LowArgs`], returning the
/// notices printed on the way. Stops at `--help`, as Nix shows the manual at once.
pub fn lex(arguments: &[String]) -> (Vec<String>, Result<LowArgs, ArgsError>) {
    let mut lexer = Lexer {
        low: LowArgs::default(),
        notices: Vec::new(),
    };
    let mut pending: Vec<String> = arguments.iter().rev().cloned().collect();
    let mut after_dash_dash = false;
    let result = loop {
        let Some(argument) = pending.pop() else {
            break Ok(());
        };
        if after_dash_dash {
            // Nix hands each argument after `--` to nix-env's handler alone, so a flag there
            // that needs a value finds none; operations and other flags still count.
            if let Err(error) = lexer.nix_env_argument(&argument, &[]) {
                break Err(error);
            }
            if lexer.low.help {
                break Ok(());
            }
            continue;
        }
        let mut expanded = expand_compound(&argument);
        let argument = expanded.remove(0);
        pending.extend(expanded.into_iter().rev());
        if argument == "--" {
            after_dash_dash = true;
            continue;
        }
        let rest: Vec<String> = pending.iter().rev().cloned().collect();
        if argument.starts_with('-')
            && let Some(arity) = common_flag_arity(&argument)
        {
            if rest.len() < arity {
                break Err(ArgsError::usage(format!(
                    "flag '{argument}' requires {arity} argument(s)"
                )));
            }
            let values: Vec<String> = (0..arity).filter_map(|_| pending.pop()).collect();
            lexer.common_flag(&argument, &values);
            continue;
        }
        match lexer.nix_env_argument(&argument, &rest) {
            Ok(taken) => {
                for _ in 0..taken {
                    pending.pop();
                }
            }
            Err(error) => break Err(error),
        }
        if lexer.low.help {
            break Ok(());
        }
    };
    (lexer.notices, result.map(|()| lexer.low))
}

/// `needArg` of `nix-env.cc`: the next operation flag, whatever it is.
fn need_argument(flags: &mut std::vec::IntoIter<String>, flag: &str) -> Result<String, ArgsError> {
    flags
        .next()
        .ok_or_else(|| ArgsError::usage(format!("'{flag}' requires an argument")))
}

/// `parseInstallSourceOptions`: the flags `-i`, `-u` and `--set` share.
fn install_source_flag(
    flag: &str,
    flags: &mut std::vec::IntoIter<String>,
    source: &mut Option<InstallSource>,
) -> Result<bool, ArgsError> {
    match flag {
        "--from-expression" | "-E" => *source = Some(InstallSource::Expressions),
        "--from-profile" => *source = Some(InstallSource::Profile(need_argument(flags, flag)?)),
        "--attr" | "-A" => *source = Some(InstallSource::AttrPaths),
        _ => return Ok(false),
    }
    Ok(true)
}

/// The source when no flag chose one: store paths when the first argument contains `/`
/// (Nix's `isPath`), selectors otherwise.
fn default_source(source: Option<InstallSource>, args: &[String]) -> InstallSource {
    source.unwrap_or_else(|| {
        if args.first().is_some_and(|first| first.contains('/')) {
            InstallSource::StorePaths
        } else {
            InstallSource::Selectors
        }
    })
}

fn unknown_flag(flag: &str) -> ArgsError {
    ArgsError::usage(format!("unknown flag '{flag}'"))
}

/// Operations that take no flags at all reject the first one.
fn no_flags(low: &LowArgs) -> Result<(), ArgsError> {
    match low.operation_flags.first() {
        Some(flag) => Err(unknown_flag(flag)),
        None => Ok(()),
    }
}

fn install(low: LowArgs) -> Result<Command, ArgsError> {
    let mut source = None;
    let mut preserve_installed = false;
    let mut remove_all = false;
    let mut flags = low.operation_flags.into_iter();
    while let Some(flag) = flags.next() {
        if install_source_flag(&flag, &mut flags, &mut source)? {
            continue;
        }
        match flag.as_str() {
            "--preserve-installed" | "-P" => preserve_installed = true,
            "--remove-all" | "-r" => remove_all = true,
            _ => return Err(unknown_flag(&flag)),
        }
    }
    Ok(Command::Install(InstallArgs {
        source: default_source(source, &low.operation_args),
        preserve_installed,
        remove_all,
        args: low.operation_args,
    }))
}

fn upgrade(low: LowArgs) -> Result<Command, ArgsError> {
    let mut source = None;
    let mut kind = UpgradeKind::LessThan;
    let mut flags = low.operation_flags.into_iter();
    while let Some(flag) = flags.next() {
        if install_source_flag(&flag, &mut flags, &mut source)? {
            continue;
        }
        kind = match flag.as_str() {
            "--lt" => UpgradeKind::LessThan,
            "--leq" => UpgradeKind::LessOrEqual,
            "--eq" => UpgradeKind::Equal,
            "--always" => UpgradeKind::Always,
            _ => return Err(unknown_flag(&flag)),
        };
    }
    Ok(Command::Upgrade(UpgradeArgs {
        source: default_source(source, &low.operation_args),
        kind,
        args: low.operation_args,
    }))
}

fn set(low: LowArgs) -> Result<Command, ArgsError> {
    let mut source = None;
    let mut flags = low.operation_flags.into_iter();
    while let Some(flag) = flags.next() {
        if !install_source_flag(&flag, &mut flags, &mut source)? {
            return Err(unknown_flag(&flag));
        }
    }
    Ok(Command::Set {
        source: default_source(source, &low.operation_args),
        args: low.operation_args,
    })
}

fn query(low: LowArgs) -> Result<Command, ArgsError> {
    let mut query = QueryArgs {
        source: QuerySource::Installed,
        status: false,
        name: true,
        system: false,
        description: false,
        compare_versions: false,
        drv_path: false,
        out_path: false,
        meta: false,
        xml: false,
        json: false,
        attr_path: false,
        attr: None,
        selectors: low.operation_args,
    };
    let mut flags = low.operation_flags.into_iter();
    while let Some(flag) = flags.next() {
        match flag.as_str() {
            "--status" | "-s" => query.status = true,
            "--no-name" => query.name = false,
            "--system" => query.system = true,
            "--description" => query.description = true,
            "--compare-versions" | "-c" => query.compare_versions = true,
            "--drv-path" => query.drv_path = true,
            "--out-path" => query.out_path = true,
            "--meta" => query.meta = true,
            "--installed" => query.source = QuerySource::Installed,
            "--available" | "-a" => query.source = QuerySource::Available,
            "--xml" => query.xml = true,
            "--json" => query.json = true,
            "--attr-path" | "-P" => query.attr_path = true,
            "--attr" | "-A" => query.attr = Some(need_argument(&mut flags, &flag)?),
            _ => return Err(unknown_flag(&flag)),
        }
    }
    if query.attr_path && query.source != QuerySource::Available {
        return Err(ArgsError::usage(
            "--attr-path(-P) only works with --available",
        ));
    }
    Ok(Command::Query(query))
}

fn delete_generations(low: &LowArgs) -> Result<Command, ArgsError> {
    no_flags(low)?;
    DeletePolicy::parse(&low.operation_args)
        .map(Command::DeleteGenerations)
        .map_err(|error| match error {
            DeleteArgumentsError::Usage(usage) => ArgsError::Usage(usage.to_string()),
            DeleteArgumentsError::Value(value) => ArgsError::Plain(value.to_string()),
        })
}

/// Phase 2: gives each operation its flags' meanings.
pub fn lift(low: LowArgs) -> Result<Invocation, ArgsError> {
    if low.help {
        return Ok(Invocation {
            globals: low.globals,
            command: Command::Help,
        });
    }
    let Some(operation) = low.operation else {
        return Err(ArgsError::usage("no operation specified"));
    };
    let globals = low.globals.clone();
    let command = match operation {
        Operation::Version => Command::Version,
        Operation::Install => install(low)?,
        Operation::Upgrade => upgrade(low)?,
        Operation::Set => set(low)?,
        Operation::Query => query(low)?,
        Operation::Uninstall => {
            no_flags(&low)?;
            Command::Uninstall {
                selectors: low.operation_args,
            }
        }
        Operation::SetFlag => {
            no_flags(&low)?;
            let mut args = low.operation_args.into_iter();
            let (Some(name), Some(value)) = (args.next(), args.next()) else {
                return Err(ArgsError::usage("not enough arguments to '--set-flag'"));
            };
            Command::SetFlag {
                name,
                value,
                selectors: args.collect(),
            }
        }
        Operation::SwitchProfile => {
            no_flags(&low)?;
            match <[String; 1]>::try_from(low.operation_args) {
                Ok([path]) => Command::SwitchProfile { path },
                Err(_) => return Err(ArgsError::usage("exactly one argument expected")),
            }
        }
        Operation::SwitchGeneration => {
            no_flags(&low)?;
            let number = parse_switch_generation_arguments(&low.operation_args)
                .map_err(|error| ArgsError::Usage(error.to_string()))?;
            Command::SwitchGeneration { number }
        }
        Operation::Rollback | Operation::ListGenerations => {
            no_flags(&low)?;
            if !low.operation_args.is_empty() {
                return Err(ArgsError::usage("no arguments expected"));
            }
            if operation == Operation::Rollback {
                Command::Rollback
            } else {
                Command::ListGenerations
            }
        }
        Operation::DeleteGenerations => delete_generations(&low)?,
    };
    Ok(Invocation { globals, command })
}

/// Reads a `nix-env` command line (without the program name): both phases.
#[must_use]
pub fn parse(arguments: &[String]) -> Parsed {
    let (notices, low) = lex(arguments);
    Parsed {
        notices,
        result: low.and_then(lift),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn strings(arguments: &[&str]) -> Vec<String> {
        arguments
            .iter()
            .map(|&argument| argument.to_owned())
            .collect()
    }

    fn command(arguments: &[&str]) -> Command {
        match parse(&strings(arguments)).result {
            Ok(invocation) => invocation.command,
            Err(error) => panic!("{arguments:?} failed: {error:?}"),
        }
    }

    fn error(arguments: &[&str]) -> ArgsError {
        match parse(&strings(arguments)).result {
            Ok(invocation) => panic!("{arguments:?} parsed: {invocation:?}"),
            Err(error) => error,
        }
    }

    fn install_args(source: InstallSource, args: &[&str]) -> Command {
        Command::Install(InstallArgs {
            source,
            preserve_installed: false,
            remove_all: false,
            args: strings(args),
        })
    }

    #[rstest]
    #[case::combined(&["-iA", "hello"], install_args(InstallSource::AttrPaths, &["hello"]))]
    #[case::flag_after(&["-i", "hello", "-A"], install_args(InstallSource::AttrPaths, &["hello"]))]
    #[case::flag_before(&["-A", "5", "-i"], install_args(InstallSource::AttrPaths, &["5"]))]
    #[case::selectors(&["-i", "foo", "bar-1.0"], install_args(InstallSource::Selectors, &["foo", "bar-1.0"]))]
    #[case::nothing(&["-i"], install_args(InstallSource::Selectors, &[]))]
    #[case::paths(&["-i", "/nix/store/x-foo", "bar"], install_args(InstallSource::StorePaths, &["/nix/store/x-foo", "bar"]))]
    #[case::path_not_first(&["-i", "bar", "./foo"], install_args(InstallSource::Selectors, &["bar", "./foo"]))]
    #[case::expression(&["-iE", "f"], install_args(InstallSource::Expressions, &["f"]))]
    #[case::from_profile(&["-i", "--from-profile", "/p", "foo"], install_args(InstallSource::Profile("/p".to_owned()), &["foo"]))]
    #[case::long(&["--install", "hello"], install_args(InstallSource::Selectors, &["hello"]))]
    #[case::same_operation_twice(&["-i", "-i", "x"], install_args(InstallSource::Selectors, &["x"]))]
    fn install_lines(#[case] arguments: &[&str], #[case] expected: Command) {
        assert_eq!(command(arguments), expected);
    }

    #[test]
    fn install_flags_mean_preserve_and_remove_all() {
        let Command::Install(install) = command(&["-iPr", "foo"]) else {
            panic!("not an install");
        };
        assert!(install.preserve_installed && install.remove_all);
        assert_eq!(install.args, ["foo"]);
    }

    #[test]
    fn p_means_attr_path_under_query() {
        let Command::Query(query) = command(&["-qaP", "hello"]) else {
            panic!("not a query");
        };
        assert!(query.attr_path);
        assert_eq!(query.source, QuerySource::Available);
        assert_eq!(query.selectors, ["hello"]);
    }

    #[test]
    fn query_flags_all_read() {
        let Command::Query(query) = command(&[
            "-q",
            "--available",
            "-s",
            "-c",
            "--no-name",
            "--system",
            "--drv-path",
            "--out-path",
            "--description",
            "--meta",
            "--json",
            "--xml",
            "--attr",
            "nested",
            "-P",
        ]) else {
            panic!("not a query");
        };
        assert_eq!(
            query,
            QueryArgs {
                source: QuerySource::Available,
                status: true,
                name: false,
                system: true,
                description: true,
                compare_versions: true,
                drv_path: true,
                out_path: true,
                meta: true,
                xml: true,
                json: true,
                attr_path: true,
                attr: Some("nested".to_owned()),
                selectors: Vec::new(),
            }
        );
    }

    #[test]
    fn attr_takes_a_value_only_after_query() {
        // `-qaA nested foo`: `-A` takes `nested`, `foo` is a selector.
        let Command::Query(query) = command(&["-qaA", "nested", "foo"]) else {
            panic!("not a query");
        };
        assert_eq!(query.attr.as_deref(), Some("nested"));
        assert_eq!(query.selectors, ["foo"]);
        // Before `-q`, `-A` takes nothing; the query then takes the next flag as its value,
        // as Nix's `needArg` does.
        let Command::Query(query) = command(&["-A", "hello", "-q", "-a"]) else {
            panic!("not a query");
        };
        assert_eq!(query.attr.as_deref(), Some("-a"));
        assert_eq!(query.source, QuerySource::Installed);
        assert_eq!(query.selectors, ["hello"]);
    }

    #[rstest]
    #[case::two_operations(&["-i", "-e"], "only one operation may be specified", true)]
    #[case::query_then_install(&["-q", "-i"], "only one operation may be specified", true)]
    #[case::none(&["foo"], "no operation specified", true)]
    #[case::empty(&[], "no operation specified", true)]
    #[case::unknown_install_flag(&["-i", "--bogus"], "unknown flag '--bogus'", true)]
    #[case::preserve_under_upgrade(&["-u", "-P"], "unknown flag '-P'", true)]
    #[case::attr_path_installed(&["-qP"], "--attr-path(-P) only works with --available", true)]
    #[case::attr_without_value(&["-qaA"], "'-A' requires an argument", true)]
    #[case::attr_before_query(&["-A", "-q"], "'-A' requires an argument", true)]
    #[case::profile_without_value(&["-q", "-p"], "'-p' requires an argument", true)]
    #[case::from_profile_without_value(&["-i", "--from-profile"], "'--from-profile' requires an argument", true)]
    #[case::uninstall_flag(&["-e", "-r", "foo"], "unknown flag '-r'", true)]
    #[case::set_flag_short(&["--set-flag", "keep"], "not enough arguments to '--set-flag'", true)]
    #[case::set_flag_flags(&["--set-flag", "-x", "keep", "true"], "unknown flag '-x'", true)]
    #[case::switch_none(&["-G"], "exactly one argument expected", true)]
    #[case::switch_two(&["-G", "1", "2"], "exactly one argument expected", true)]
    #[case::switch_word(&["-G", "two"], "expected a generation number", true)]
    #[case::switch_negative(&["-G", "-1"], "unknown flag '-1'", true)]
    #[case::rollback_argument(&["--rollback", "1"], "no arguments expected", true)]
    #[case::list_argument(&["--list-generations", "x"], "no arguments expected", true)]
    #[case::list_flag(&["--list-generations", "-s"], "unknown flag '-s'", true)]
    #[case::switch_profile_none(&["-S"], "exactly one argument expected", true)]
    #[case::delete_negative(&["--delete-generations", "-1"], "unknown flag '-1'", true)]
    #[case::delete_days(&["--delete-generations", "dx"], "invalid number of days specifier 'dx', expected something like '14d'", true)]
    #[case::delete_zero_days(&["--delete-generations", "0d"], "invalid number of days specifier '0d'", true)]
    #[case::delete_word(&["--delete-generations", "old", "1"], "invalid generation number 'old'", true)]
    #[case::delete_plus(&["--delete-generations", "+"], "invalid number of generations '+'", false)]
    #[case::delete_plus_zero(&["--delete-generations", "+0"], "invalid number of generations to keep '+0'", false)]
    #[case::option_short(&["-q", "--option", "x"], "flag '--option' requires 2 argument(s)", true)]
    #[case::jobs_short(&["-q", "-j"], "flag '-j' requires 1 argument(s)", true)]
    #[case::query_unknown(&["-q", "--lt"], "unknown flag '--lt'", true)]
    #[case::set_flag_unknown(&["--set", "-r", "x"], "unknown flag '-r'", true)]
    #[case::after_dash_dash(&["-q", "--", "-p"], "'-p' requires an argument", true)]
    #[case::version_and_query(&["--version", "-q"], "only one operation may be specified", true)]
    fn errors_in_nix_words(#[case] arguments: &[&str], #[case] message: &str, #[case] usage: bool) {
        let error = error(arguments);
        assert_eq!(error.to_string(), message);
        assert_eq!(error.is_usage(), usage, "{error:?}");
    }

    #[test]
    fn usage_errors_render_with_the_help_line() {
        assert_eq!(
            ArgsError::Usage("no operation specified".to_owned()).render(),
            "error: no operation specified\nTry 'nix-env --help' for more information.\n"
        );
        assert_eq!(
            ArgsError::Plain("invalid number of generations '+'".to_owned()).render(),
            "error: invalid number of generations '+'\n"
        );
    }

    #[test]
    fn dry_run_notice_is_printed_where_it_is_read() {
        let parsed = parse(&strings(&["--dry-run", "-q", "-i"]));
        assert_eq!(parsed.notices, [DRY_RUN_NOTICE]);
        assert!(parsed.result.is_err());
        let parsed = parse(&strings(&["-q", "-i", "--dry-run"]));
        assert!(parsed.notices.is_empty(), "the error came first");
        let parsed = parse(&strings(&["--dry-run", "--dry-run", "--rollback"]));
        assert_eq!(parsed.notices.len(), 2);
        let parsed = parse(&strings(&["--quiet", "--dry-run", "--rollback"]));
        assert!(parsed.notices.is_empty(), "--quiet hides info messages");
        let invocation = parsed.result.expect("parses");
        assert!(invocation.globals.dry_run);
        assert!(!invocation.globals.shows_info());
        assert!(invocation.globals.shows_warnings());
    }

    #[test]
    fn globals_anywhere() {
        let parsed = parse(&strings(&[
            "-i",
            "foo",
            "-p",
            "prof",
            "--file",
            "chan",
            "-b",
            "--system-filter",
            "x86_64-linux",
            "--force-name",
            "bar",
            "--repair",
            "-v",
            "--option",
            "sandbox",
            "false",
            "--arg",
            "a",
            "1",
            "--argstr",
            "b",
            "two",
            "-I",
            "nixpkgs=/x",
            "--no-sandbox",
            "--substituters",
            "",
            "-j4",
        ]));
        let invocation = parsed.result.expect("parses");
        let globals = invocation.globals;
        assert_eq!(globals.profile.as_deref(), Some("prof"));
        assert_eq!(globals.file.as_deref(), Some("chan"));
        assert!(globals.prebuilt_only && globals.repair);
        assert_eq!(globals.system_filter, "x86_64-linux");
        assert_eq!(globals.force_name.as_deref(), Some("bar"));
        assert_eq!(globals.verbosity, DEFAULT_VERBOSITY + 1);
        assert_eq!(
            globals.auto_args,
            [
                ("a".to_owned(), AutoArg::Expression("1".to_owned())),
                ("b".to_owned(), AutoArg::String("two".to_owned()))
            ]
        );
        assert_eq!(globals.include, ["nixpkgs=/x"]);
        assert_eq!(
            globals.options,
            [
                ("sandbox", "false"),
                ("no-sandbox", "false"),
                ("substituters", ""),
                ("max-jobs", "4"),
            ]
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
        );
        assert_eq!(
            invocation.command,
            install_args(InstallSource::Selectors, &["foo"])
        );
    }

    #[rstest]
    #[case(&["-G3"], Command::SwitchGeneration { number: 3 })]
    #[case(&["-G", "+02"], Command::SwitchGeneration { number: 2 })]
    #[case(&["--switch-generation", "7"], Command::SwitchGeneration { number: 7 })]
    #[case(&["--rollback"], Command::Rollback)]
    #[case(&["--list-generations"], Command::ListGenerations)]
    #[case(&["--delete-generations", "old"], Command::DeleteGenerations(DeletePolicy::Old))]
    #[case(&["--delete-generations", "+5", "3"], Command::DeleteGenerations(DeletePolicy::Numbers([3, 5].into())))]
    #[case(&["--delete-generations"], Command::DeleteGenerations(DeletePolicy::Numbers([].into())))]
    #[case(&["-S", "other"], Command::SwitchProfile { path: "other".to_owned() })]
    #[case(&["--version"], Command::Version)]
    #[case(&["--help", "-q", "-i"], Command::Help)]
    #[case(&["-e", "foo", "bar"], Command::Uninstall { selectors: strings(&["foo", "bar"]) })]
    #[case(&["-e"], Command::Uninstall { selectors: Vec::new() })]
    #[case(&["--set-flag", "priority", "3", "foo"], Command::SetFlag { name: "priority".to_owned(), value: "3".to_owned(), selectors: strings(&["foo"]) })]
    #[case(&["--set", "-A", "hello"], Command::Set { source: InstallSource::AttrPaths, args: strings(&["hello"]) })]
    #[case(&["-u", "--always", "--eq"], Command::Upgrade(UpgradeArgs { source: InstallSource::Selectors, kind: UpgradeKind::Equal, args: Vec::new() }))]
    #[case(&["-uA", "foo", "--leq"], Command::Upgrade(UpgradeArgs { source: InstallSource::AttrPaths, kind: UpgradeKind::LessOrEqual, args: strings(&["foo"]) }))]
    #[case(&["--", "-q"], Command::Query(QueryArgs { source: QuerySource::Installed, status: false, name: true, system: false, description: false, compare_versions: false, drv_path: false, out_path: false, meta: false, xml: false, json: false, attr_path: false, attr: None, selectors: Vec::new() }))]
    fn other_operations(#[case] arguments: &[&str], #[case] expected: Command) {
        assert_eq!(command(arguments), expected);
    }

    #[rstest]
    #[case("-qaP", &["-q", "-a", "-P"])]
    #[case("-G3", &["-G", "3"])]
    #[case("-j12x", &["-j", "12x"])]
    #[case("-iA", &["-i", "-A"])]
    #[case("-1", &["-1"])]
    #[case("--foo", &["--foo"])]
    #[case("-q", &["-q"])]
    #[case("-qé", &["-q", "é"])]
    #[case("foo", &["foo"])]
    fn compound_flags_split(#[case] argument: &str, #[case] expected: &[&str]) {
        assert_eq!(expand_compound(argument), strings(expected));
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        #[test]
        fn never_panics(arguments in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::string::string_regex("-[a-zA-Z]{1,4}[0-9]?").expect("regex"),
                proptest::sample::select(vec![
                    "-i", "-e", "-u", "-q", "-a", "-A", "-P", "-p", "-f", "--set", "--set-flag",
                    "--rollback", "-G", "--list-generations", "--delete-generations",
                    "--dry-run", "--from-profile", "--option", "--arg", "--", "-", "", "old",
                    "+3", "3d", "--json", "--xml", "-S", "--help", "--version", "/nix/store/x",
                ]).prop_map(|argument: &str| argument.to_owned()),
                proptest::string::string_regex(".{0,6}").expect("regex"),
            ],
            0..10,
        )) {
            let parsed = parse(&arguments);
            if let Err(error) = &parsed.result {
                proptest::prop_assert!(error.render().starts_with("error: "));
            }
        }
    }
}
