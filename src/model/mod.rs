//! Data the rest of declenv reasons about: catalog entries, channel metadata, the profile spec,
//! the lockfile and `manifest.nix`; format-keeping edits of the spec.
//!
//! Pure: parsers take text and return values; nothing here touches the filesystem.

pub mod catalog;
pub mod channel;
pub mod constraint;
pub mod lockfile;
pub mod manifest;
pub mod packed;
pub mod spec;
pub mod spec_edit;
