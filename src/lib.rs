//! declenv: a declarative front end for Nix-style user profiles.
//!
//! Pure modules decide; I/O modules act. Dependencies point one way:
//!
//! | module | kind | owns |
//! |---|---|---|
//! | [`version`] | pure | Nix version ordering, `splitVersion`, `DrvName` |
//! | [`compat`] | pure | `nix-env` compatibility: its argument parser, query output, and what its operations do to a profile's elements |
//! | [`selector`] | pure | `nix-env` selectors (ERE name part, exact version part) |
//! | [`model`] | pure | catalog entries and their parsers (JSON, channel metadata), `manifest.nix` |
//! | [`plan`] | pure | choosing packages (Nix's selection rules), the environment layout, generation numbering and policies, what GC deletes |
//! | [`fault`] | test hook | fault injection at named points (`DECLENV_FAULT`), inert unless set |
//! | [`fs`] | I/O | atomic writes |
//! | [`profile`] | I/O | realising packages, building environments, generations, the profile lock |
//! | [`source`] | I/O | reading catalogs from disk, the parsed-catalog cache |
//! | [`store`] | I/O | the embedded content-addressed store: NAR, store paths, registration, GC |
//! | [`watch`] | I/O | `declenv watch`: watching the spec, its lockfile and sources; debouncing; one apply at a time |
//! | `cli` (binary) | I/O | commands, output, diagnostics |

#[doc(hidden)]
pub mod cli;
pub mod compat;
pub mod fault;
pub mod fs;
pub mod model;
pub mod plan;
pub mod profile;
pub mod selector;
pub mod source;
pub mod store;
pub mod version;
pub mod watch;
