//! `nix-env` compatibility: the pieces of `declenv env` (and of the binary invoked as
//! `nix-env`) that decide, as pure functions.
//!
//! | module | owns |
//! |---|---|
//! | [`args`] | the two-phase `nix-env` argument parser: global flags and exactly one operation, then each operation's own flags, with Nix 2.8's usage errors |
//! | [`query`] | the rows, columns, padding, JSON and XML of `nix-env -q` |
//! | [`ops`] | what `-i`, `-u`, `-e` and `--set-flag` do to the list of installed elements, and the messages they print |
//!
//! Nothing here reads or writes files: `cli::env` loads the sources, the spec and the profile,
//! hands values to these functions, edits `profile.toml` through
//! [`crate::model::spec_edit`] and applies the result through
//! [`crate::profile::declarative`].

pub mod args;
pub mod ops;
pub mod query;
