//! Data the rest of declenv reasons about: catalog entries and channel metadata.
//!
//! Pure: parsers take text and return values; nothing here touches the filesystem.

pub mod catalog;
pub mod channel;
pub mod manifest;
pub mod packed;
