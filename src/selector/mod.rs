//! `nix-env` selectors: `NAME` or `NAME-VERSION`, matched the way Nix 2.8's `DrvName::matches`
//! does.
//!
//! A selector is split with the same rule as a derivation name ([`crate::version::DrvName`]).
//! Its name part is a POSIX extended regular expression (as libstdc++'s `std::regex::extended`
//! reads it: case-sensitive, anchored at both ends, seeing only the candidate's name part) unless
//! it is exactly `*`; its version part, when present, must equal the candidate's version as a
//! string. Pure: owns parsing and matching, never the catalog or any I/O.

mod ere;

pub use ere::EreError;

use crate::version::{DrvName, split_drv_name};
use regex::bytes::{Regex, RegexBuilder};
use std::fmt;

/// Why a selector cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The name part is not a regular expression libstdc++ accepts; the message is libstdc++'s,
    /// which is what `nix-env` prints after `error: `.
    #[error("{message}")]
    InvalidRegex {
        /// The selector as written.
        selector: String,
        /// libstdc++'s wording, e.g. `Mismatched '(' and ')' in regular expression`.
        message: String,
    },
    /// The expression is valid but too large for the matcher we compile it to.
    #[error("selector `{selector}` is too large to compile")]
    TooLarge {
        /// The selector as written.
        selector: String,
    },
}

/// How the name part of a selector matches.
#[derive(Debug, Clone)]
enum NamePattern {
    /// The name part is exactly `*`: every name matches.
    Any,
    /// A full-match regular expression over the candidate's name bytes.
    Regex(Regex),
}

/// A parsed `nix-env` selector.
#[derive(Debug, Clone)]
pub struct Selector {
    raw: String,
    parts: DrvName,
    pattern: NamePattern,
}

impl Selector {
    /// Parses and compiles a selector. Fails on a name part that libstdc++ would reject.
    ///
    /// Nix compiles the regex lazily, on the first candidate; callers that must reproduce the
    /// case "invalid regex but no candidates" check for an empty candidate set first.
    pub fn new(raw: &str) -> Result<Self, SelectorError> {
        let parts = DrvName::parse(raw);
        let pattern = if parts.name == "*" {
            NamePattern::Any
        } else {
            NamePattern::Regex(compile_full_match(raw, &parts.name)?)
        };
        Ok(Self {
            raw: raw.to_owned(),
            parts,
            pattern,
        })
    }

    /// The selector as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The name part (a regex, or `*`).
    #[must_use]
    pub fn name_part(&self) -> &str {
        &self.parts.name
    }

    /// The version part; empty when the selector has none.
    #[must_use]
    pub fn version_part(&self) -> &str {
        &self.parts.version
    }

    /// True when the selector is exactly `*`, which Nix never reports as matching nothing.
    #[must_use]
    pub fn is_wildcard(&self) -> bool {
        self.raw == "*"
    }

    /// Whether a candidate's full derivation name (`hello-2.12`) matches.
    #[must_use]
    pub fn matches_full_name(&self, full_name: &str) -> bool {
        let (name, version) = split_drv_name(full_name);
        self.matches_parts(name, version)
    }

    /// Whether an already split candidate matches.
    #[must_use]
    pub fn matches_parts(&self, name: &str, version: &str) -> bool {
        let name_ok = match &self.pattern {
            NamePattern::Any => true,
            NamePattern::Regex(regex) => regex.is_match(name.as_bytes()),
        };
        name_ok && (self.parts.version.is_empty() || self.parts.version == version)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.raw)
    }
}

/// Compiles an ERE name part into an anchored byte regex (`.` matches newlines too, as in
/// libstdc++'s POSIX grammars; no Unicode classes, since libstdc++ sees bytes).
fn compile_full_match(raw: &str, ere: &str) -> Result<Regex, SelectorError> {
    let translated = ere::translate(ere).map_err(|error| SelectorError::InvalidRegex {
        selector: raw.to_owned(),
        message: error.to_string(),
    })?;
    RegexBuilder::new(&format!("^(?:{translated})$"))
        .unicode(false)
        .dot_matches_new_line(true)
        .size_limit(64 << 20)
        .build()
        .map_err(|_| SelectorError::TooLarge {
            selector: raw.to_owned(),
        })
}
