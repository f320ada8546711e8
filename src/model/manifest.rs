//! `manifest.nix`: the list of installed elements `nix-env` keeps in every user environment.
//!
//! Owns the element type, the writer ([`render`]) and the reader ([`parse`]).
//!
//! [`render`] writes Nix 2.8's one-line format byte for byte (one list of attribute sets,
//! attributes in byte order of their names, `[ ]`, `{ }`, Nix's string escapes and name quoting)
//! wherever Nix 2.8's own output can be read back. Where it cannot, we write what Nix reads back
//! as the same value instead, and say so in tests:
//!
//! * **Floats.** Nix 2.8 prints them like C++ `ostream` (six significant digits, `%g`): `1.0`
//!   becomes `1` (read back as an integer), `123456789.0` becomes `1.23457e+08` (precision lost)
//!   and `1e20` becomes `1e+20`, which does not parse at all, so every later `nix-env` command
//!   fails with `undefined variable 'e'`. We write the shortest text that reads back as the same
//!   double, always with a decimal point (`1.0`, `0.1`, `123456789.0`, `1.0e20`). Infinities,
//!   NaN and subnormal numbers have no Nix literal (the lexer rejects `1.0e-320` as an invalid
//!   float): [`render`] refuses them.
//! * **Negative numbers in lists.** Nix 2.8 prints `[ -1 ]`, which is a syntax error; we write
//!   `[ (-1) ]`.
//! * **Keywords as attribute names.** Nix 2.8 quotes only `if`, so a meta attribute named `let`,
//!   `in`, `rec`, `then`, … makes the file unreadable; we quote them all.
//! * The integer −2⁶³ has no literal either; [`render`] refuses it.
//!
//! [`parse`] reads everything `nix-env` 2.8 writes, including what Nix itself then cannot read
//! (`1e+20`, `[ -1 ]`, bare keywords, `inf`, `nan`), with line and column on errors. It reads the
//! subset of the Nix language the printer emits (lists, attribute sets, strings with escapes,
//! integers, floats, booleans, `null`, plus parentheses and comments), bounded in depth.
//!
//! Pure: text in, text out; reading and writing the file belongs to the I/O layer.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How deeply lists, attribute sets and parentheses may nest, in a manifest read or written.
/// Nix 2.8 has no limit other than its stack; this keeps a hostile file from exhausting ours.
pub const MAX_DEPTH: usize = 256;

/// A meta value: the types Nix keeps in a manifest (it drops null, functions, paths and
/// derivations from meta before writing, and so do we; see [`NixValue::is_valid_meta`]).
#[derive(Debug, Clone, PartialEq)]
pub enum NixValue {
    /// A string.
    String(String),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// A list.
    List(Vec<NixValue>),
    /// An attribute set; names in byte order, as Nix prints them.
    Attrs(BTreeMap<String, NixValue>),
}

impl NixValue {
    /// Whether Nix 2.8 keeps this value in meta: no attribute set holding `outPath` (a
    /// derivation), at any depth.
    #[must_use]
    pub fn is_valid_meta(&self) -> bool {
        let mut pending = vec![self];
        while let Some(value) = pending.pop() {
            match value {
                Self::List(items) => pending.extend(items),
                Self::Attrs(attrs) => {
                    if attrs.contains_key("outPath") {
                        return false;
                    }
                    pending.extend(attrs.values());
                }
                Self::String(_) | Self::Int(_) | Self::Float(_) | Self::Bool(_) => {}
            }
        }
        true
    }

    /// The value of a JSON meta attribute (as `nix-env -qa --json --meta` writes them), or `None`
    /// where Nix would not keep it in meta (`null`, at any depth).
    #[must_use]
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        Some(match value {
            serde_json::Value::Null => return None,
            serde_json::Value::Bool(boolean) => Self::Bool(*boolean),
            serde_json::Value::Number(number) => match number.as_i64() {
                Some(integer) => Self::Int(integer),
                None => Self::Float(number.as_f64()?),
            },
            serde_json::Value::String(text) => Self::String(text.clone()),
            serde_json::Value::Array(items) => {
                Self::List(items.iter().map(Self::from_json).collect::<Option<_>>()?)
            }
            serde_json::Value::Object(map) => Self::Attrs(
                map.iter()
                    .map(|(key, item)| Some((key.clone(), Self::from_json(item)?)))
                    .collect::<Option<_>>()?,
            ),
        })
    }
}

/// The meta attributes of a catalog entry that a manifest can hold (see
/// [`NixValue::is_valid_meta`]), as `nix-env` keeps them.
#[must_use]
pub fn valid_meta(meta: &serde_json::Map<String, serde_json::Value>) -> BTreeMap<String, NixValue> {
    meta.iter()
        .filter_map(|(key, value)| {
            NixValue::from_json(value)
                .filter(NixValue::is_valid_meta)
                .map(|value| (key.clone(), value))
        })
        .collect()
}

/// One installed element, as `manifest.nix` records it.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestElement {
    /// The full name, `NAME-VERSION` (or what `--force-name` gave).
    pub name: String,
    /// The element's `outPath`: normally the `out` output, even when `out` is not installed.
    pub out_path: String,
    /// The installed outputs and their store paths (written in byte order of the names).
    pub outputs: BTreeMap<String, String>,
    /// The system; missing for store-path installs.
    pub system: Option<String>,
    /// Meta attributes; invalid ones (see [`NixValue::is_valid_meta`]) are not written.
    pub meta: BTreeMap<String, NixValue>,
    /// The derivation path, written only with `keep-env-derivations = true`.
    pub drv_path: Option<String>,
}

/// The attributes every element has besides its outputs.
const FIXED_ATTRIBUTES: [&str; 7] = [
    "drvPath", "meta", "name", "outPath", "outputs", "system", "type",
];

/// Nix keywords: as bare attribute names they do not parse (`or` does, so it is not here).
const KEYWORDS: [&str; 9] = [
    "assert", "else", "if", "in", "inherit", "let", "rec", "then", "with",
];

/// An element that cannot be written so that Nix reads back the same value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A float Nix has no literal for (infinite, NaN or subnormal).
    #[error(
        "cannot write `{attribute}` of `{element}` to the manifest: Nix has no literal for the float {value}"
    )]
    UnwritableFloat {
        /// The element's name.
        element: String,
        /// Where in the element, as `meta.a.0`.
        attribute: String,
        /// The value, printed by Rust.
        value: String,
    },
    /// −2⁶³, which Nix cannot read as a literal.
    #[error(
        "cannot write `{attribute}` of `{element}` to the manifest: Nix has no literal for -9223372036854775808"
    )]
    UnwritableInteger {
        /// The element's name.
        element: String,
        /// Where in the element.
        attribute: String,
    },
    /// A string or attribute name holding NUL, which Nix strings cannot hold.
    #[error("cannot write `{attribute}` of `{element}` to the manifest: it contains a NUL byte")]
    NulByte {
        /// The element's name.
        element: String,
        /// Where in the element.
        attribute: String,
    },
    /// An output whose name is one of the element's own attributes.
    #[error(
        "cannot write `{element}` to the manifest: its output `{output}` has the name of one of the element's own attributes"
    )]
    OutputNameClash {
        /// The element's name.
        element: String,
        /// The output's name.
        output: String,
    },
    /// A meta value nested deeper than [`MAX_DEPTH`].
    #[error("cannot write `{attribute}` of `{element}` to the manifest: it is nested too deeply")]
    TooDeep {
        /// The element's name.
        element: String,
        /// Where in the element.
        attribute: String,
    },
}

/// Writes `manifest.nix` for `elements`, in order: one line, no trailing newline.
///
/// # Errors
///
/// A value Nix could not read back (see [`RenderError`]).
pub fn render(elements: &[ManifestElement]) -> Result<String, RenderError> {
    let mut out = String::from("[ ");
    for element in elements {
        render_element(&mut out, element)?;
        out.push(' ');
    }
    out.push(']');
    Ok(out)
}

/// A rendered attribute, before sorting.
enum Attribute<'a> {
    Text(&'a str),
    Output(&'a str),
    Outputs,
    Meta,
}

fn render_element(out: &mut String, element: &ManifestElement) -> Result<(), RenderError> {
    let mut writer = Writer {
        out,
        element: &element.name,
        path: Vec::new(),
    };
    for output in element.outputs.keys() {
        if FIXED_ATTRIBUTES.contains(&output.as_str()) {
            return Err(RenderError::OutputNameClash {
                element: element.name.clone(),
                output: output.clone(),
            });
        }
    }
    let mut attributes: Vec<(&str, Attribute<'_>)> = vec![
        ("meta", Attribute::Meta),
        ("name", Attribute::Text(&element.name)),
        ("outPath", Attribute::Text(&element.out_path)),
        ("outputs", Attribute::Outputs),
        ("type", Attribute::Text("derivation")),
    ];
    if let Some(drv_path) = &element.drv_path {
        attributes.push(("drvPath", Attribute::Text(drv_path)));
    }
    if let Some(system) = &element.system {
        attributes.push(("system", Attribute::Text(system)));
    }
    for (output, path) in &element.outputs {
        attributes.push((output, Attribute::Output(path)));
    }
    attributes.sort_by(|left, right| left.0.as_bytes().cmp(right.0.as_bytes()));

    writer.out.push_str("{ ");
    for (name, attribute) in attributes {
        writer.path.push(name.to_owned());
        writer.attribute_name(name)?;
        writer.out.push_str(" = ");
        match attribute {
            Attribute::Text(text) => writer.string(text)?,
            Attribute::Output(path) => {
                writer.out.push_str("{ outPath = ");
                writer.string(path)?;
                writer.out.push_str("; }");
            }
            Attribute::Outputs => {
                writer.out.push_str("[ ");
                for output in element.outputs.keys() {
                    writer.string(output)?;
                    writer.out.push(' ');
                }
                writer.out.push(']');
            }
            Attribute::Meta => {
                let valid = element
                    .meta
                    .iter()
                    .filter(|(_, value)| value.is_valid_meta());
                // The manifest list, the element and the meta set are three levels; meta
                // attribute values sit at the fourth (depth 3, counted from 0 as `parse` does).
                writer.attrs(valid, 3)?;
            }
        }
        writer.out.push_str("; ");
        writer.path.pop();
    }
    writer.out.push('}');
    Ok(())
}

/// Writes values, knowing where in which element it is (for errors).
struct Writer<'a> {
    out: &'a mut String,
    element: &'a str,
    path: Vec<String>,
}

impl Writer<'_> {
    fn attribute(&self) -> String {
        self.path.join(".")
    }

    /// Writes `value`, which sits `depth` levels down (the manifest's list is level 0).
    fn value(&mut self, value: &NixValue, in_list: bool, depth: usize) -> Result<(), RenderError> {
        if matches!(value, NixValue::List(_) | NixValue::Attrs(_)) && depth >= MAX_DEPTH {
            return Err(RenderError::TooDeep {
                element: self.element.to_owned(),
                attribute: self.attribute(),
            });
        }
        match value {
            NixValue::String(text) => self.string(text)?,
            NixValue::Bool(boolean) => self.out.push_str(if *boolean { "true" } else { "false" }),
            NixValue::Int(integer) => {
                if *integer == i64::MIN {
                    return Err(RenderError::UnwritableInteger {
                        element: self.element.to_owned(),
                        attribute: self.attribute(),
                    });
                }
                self.number(&integer.to_string(), *integer < 0 && in_list);
            }
            NixValue::Float(float) => {
                let Some(text) = float_literal(*float) else {
                    return Err(RenderError::UnwritableFloat {
                        element: self.element.to_owned(),
                        attribute: self.attribute(),
                        value: float.to_string(),
                    });
                };
                self.number(&text, text.starts_with('-') && in_list);
            }
            NixValue::List(items) => {
                self.out.push_str("[ ");
                for (index, item) in items.iter().enumerate() {
                    self.path.push(index.to_string());
                    self.value(item, true, depth + 1)?;
                    self.path.pop();
                    self.out.push(' ');
                }
                self.out.push(']');
            }
            NixValue::Attrs(attrs) => self.attrs(attrs.iter(), depth + 1)?,
        }
        Ok(())
    }

    /// Writes an attribute set whose values sit `depth` levels down.
    fn attrs<'v>(
        &mut self,
        attrs: impl Iterator<Item = (&'v String, &'v NixValue)>,
        depth: usize,
    ) -> Result<(), RenderError> {
        self.out.push_str("{ ");
        for (name, value) in attrs {
            self.path.push(name.clone());
            self.attribute_name(name)?;
            self.out.push_str(" = ");
            self.value(value, false, depth)?;
            self.out.push_str("; ");
            self.path.pop();
        }
        self.out.push('}');
        Ok(())
    }

    /// A number; negative ones inside a list need parentheses to parse.
    fn number(&mut self, text: &str, parenthesise: bool) {
        if parenthesise {
            let _ = write!(self.out, "({text})");
        } else {
            self.out.push_str(text);
        }
    }

    /// Bare when Nix would read it as an identifier, quoted otherwise.
    fn attribute_name(&mut self, name: &str) -> Result<(), RenderError> {
        if is_bare_name(name) {
            self.out.push_str(name);
            Ok(())
        } else {
            self.string(name)
        }
    }

    /// A string literal with Nix 2.8's escapes: `"`, `\`, newline, carriage return, tab, and
    /// `${` as `\${`; every other byte raw.
    fn string(&mut self, text: &str) -> Result<(), RenderError> {
        if text.contains('\0') {
            return Err(RenderError::NulByte {
                element: self.element.to_owned(),
                attribute: self.attribute(),
            });
        }
        self.out.push('"');
        let mut characters = text.chars().peekable();
        while let Some(character) = characters.next() {
            match character {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '$' if characters.peek() == Some(&'{') => self.out.push_str("\\$"),
                other => self.out.push(other),
            }
        }
        self.out.push('"');
        Ok(())
    }
}

/// Whether Nix reads `name` as an identifier: `[A-Za-z_][A-Za-z0-9_'-]*` and not a keyword.
fn is_bare_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'A'..=b'Z' | b'a'..=b'z' | b'_'))
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'\'' | b'-'))
        && !KEYWORDS.contains(&name)
}

/// The shortest text Nix's lexer reads back as exactly `value` (always with a decimal point, so
/// it stays a float), or `None` where there is none. Zero is written `0.0` (Nix reads `-0.0` as
/// `0 - 0.0`, which is positive zero anyway).
fn float_literal(value: f64) -> Option<String> {
    if value == 0.0 {
        return Some("0.0".to_owned());
    }
    if !value.is_normal() {
        return None;
    }
    let text = format!("{value:?}");
    Some(match text.split_once('e') {
        Some((mantissa, exponent)) if !mantissa.contains('.') => {
            format!("{mantissa}.0e{exponent}")
        }
        _ => text,
    })
}

/// A manifest that cannot be read. Positions are 1-based; columns count characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The text is not in the subset of the Nix language manifests are written in.
    #[error("{message} at line {line} column {column}")]
    Syntax {
        /// What is wrong.
        message: String,
        /// Line of the problem.
        line: usize,
        /// Column of the problem.
        column: usize,
    },
    /// An element does not have the shape `nix-env` writes.
    #[error("element {index} ({name}): {message} at line {line} column {column}")]
    Element {
        /// The element's 0-based position in the list (its attribute path, for `nix-env`).
        index: usize,
        /// Its name, or `unnamed` when it has none.
        name: String,
        /// What is wrong.
        message: String,
        /// Line of the problem.
        line: usize,
        /// Column of the problem.
        column: usize,
    },
}

/// Reads a `manifest.nix`.
///
/// Meta attributes `nix-env` would not keep (null, or a set holding `outPath`, at any depth) are
/// dropped as `nix-env` drops them when it next writes the manifest. A missing `meta` reads as
/// empty, a missing `outputs` as the single output `out` at `outPath`.
///
/// # Errors
///
/// Syntax outside the printer's subset, nesting deeper than [`MAX_DEPTH`], or an element
/// without the shape `nix-env` writes; each with line and column.
pub fn parse(text: &str) -> Result<Vec<ManifestElement>, ManifestError> {
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        offset: 0,
    };
    parser.skip_trivia()?;
    let value = parser.value(0)?;
    parser.skip_trivia()?;
    if parser.offset < parser.bytes.len() {
        return Err(parser.syntax_error(parser.offset, "unexpected text after the list".into()));
    }
    let Parsed::List(items) = value.parsed else {
        return Err(parser.syntax_error(value.offset, "a manifest must be a list".into()));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| element(text, index, item))
        .collect()
}

/// A parsed value and the byte offset where it starts.
#[derive(Debug)]
struct Spanned {
    offset: usize,
    parsed: Parsed,
}

#[derive(Debug)]
enum Parsed {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    List(Vec<Spanned>),
    /// Bindings in file order, each with the offset of its name.
    Attrs(Vec<(String, usize, Spanned)>),
}

impl Parsed {
    fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Int(_) => "an integer",
            Self::Float(_) => "a float",
            Self::String(_) => "a string",
            Self::List(_) => "a list",
            Self::Attrs(_) => "an attribute set",
        }
    }
}

/// Converts a byte offset into a 1-based line and column (columns count characters).
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    (
        line,
        before.get(line_start..).unwrap_or_default().chars().count() + 1,
    )
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Parser<'a> {
    fn syntax_error(&self, offset: usize, message: String) -> ManifestError {
        let (line, column) = line_column(self.text, offset);
        ManifestError::Syntax {
            message,
            line,
            column,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.offset).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.offset + ahead).copied()
    }

    /// Skips whitespace and comments (`# …` and `/* … */`).
    fn skip_trivia(&mut self) -> Result<(), ManifestError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.offset += 1,
                Some(b'#') => {
                    while !matches!(self.peek(), None | Some(b'\n')) {
                        self.offset += 1;
                    }
                }
                Some(b'/') if self.peek_at(1) == Some(b'*') => {
                    let start = self.offset;
                    self.offset += 2;
                    loop {
                        match self.peek() {
                            None => {
                                return Err(self.syntax_error(start, "unterminated comment".into()));
                            }
                            Some(b'*') if self.peek_at(1) == Some(b'/') => {
                                self.offset += 2;
                                break;
                            }
                            Some(_) => self.offset += 1,
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), ManifestError> {
        self.skip_trivia()?;
        if self.peek() == Some(byte) {
            self.offset += 1;
            Ok(())
        } else {
            Err(self.syntax_error(
                self.offset,
                format!(
                    "expected `{}`, found {}",
                    char::from(byte),
                    self.describe_here()
                ),
            ))
        }
    }

    fn describe_here(&self) -> String {
        match self
            .text
            .get(self.offset..)
            .and_then(|rest| rest.chars().next())
        {
            Some(character) => format!("`{}`", character.escape_debug()),
            None => "the end of the file".to_owned(),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Spanned, ManifestError> {
        self.skip_trivia()?;
        let offset = self.offset;
        // Lists and sets nest at most MAX_DEPTH levels; a parenthesised value one more, so that
        // `(-1)` as an item of the deepest list still reads.
        let nested = |parser: &Self, limit: usize| {
            if depth >= limit {
                Err(parser.syntax_error(
                    offset,
                    format!("values are nested more than {MAX_DEPTH} levels deep"),
                ))
            } else {
                Ok(())
            }
        };
        let parsed = match self.peek() {
            Some(b'[') => {
                nested(self, MAX_DEPTH)?;
                self.offset += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_trivia()?;
                    if self.peek() == Some(b']') {
                        self.offset += 1;
                        break;
                    }
                    if self.peek().is_none() {
                        return Err(self.syntax_error(offset, "unterminated list".into()));
                    }
                    items.push(self.value(depth + 1)?);
                }
                Parsed::List(items)
            }
            Some(b'{') => {
                nested(self, MAX_DEPTH)?;
                self.offset += 1;
                self.attrs(offset, depth)?
            }
            Some(b'(') => {
                nested(self, MAX_DEPTH + 1)?;
                self.offset += 1;
                let inner = self.value(depth + 1)?;
                self.expect(b')')?;
                return Ok(Spanned {
                    offset,
                    parsed: inner.parsed,
                });
            }
            Some(b'"') => Parsed::String(self.string()?),
            Some(b'-' | b'0'..=b'9' | b'.') => self.number()?,
            Some(byte) if byte.is_ascii_alphabetic() || byte == b'_' => {
                let word = self.identifier();
                match word {
                    "true" => Parsed::Bool(true),
                    "false" => Parsed::Bool(false),
                    "null" => Parsed::Null,
                    "inf" => Parsed::Float(f64::INFINITY),
                    "nan" => Parsed::Float(f64::NAN),
                    other => {
                        return Err(self.syntax_error(
                            offset,
                            format!(
                                "unexpected identifier `{other}` (manifests hold only literals)"
                            ),
                        ));
                    }
                }
            }
            _ => {
                return Err(self.syntax_error(
                    offset,
                    format!("expected a value, found {}", self.describe_here()),
                ));
            }
        };
        Ok(Spanned { offset, parsed })
    }

    /// The bindings of an attribute set, after its `{`.
    fn attrs(&mut self, open: usize, depth: usize) -> Result<Parsed, ManifestError> {
        let mut bindings: Vec<(String, usize, Spanned)> = Vec::new();
        loop {
            self.skip_trivia()?;
            let name_offset = self.offset;
            let name = match self.peek() {
                Some(b'}') => {
                    self.offset += 1;
                    return Ok(Parsed::Attrs(bindings));
                }
                None => return Err(self.syntax_error(open, "unterminated attribute set".into())),
                Some(b'"') => self.string()?,
                Some(byte) if byte.is_ascii_alphabetic() || byte == b'_' => {
                    self.identifier().to_owned()
                }
                Some(_) => {
                    return Err(self.syntax_error(
                        name_offset,
                        format!("expected an attribute name, found {}", self.describe_here()),
                    ));
                }
            };
            if let Some((_, first, _)) = bindings.iter().find(|(other, _, _)| *other == name) {
                let (line, column) = line_column(self.text, *first);
                return Err(self.syntax_error(
                    name_offset,
                    format!("attribute `{name}` is already defined at line {line} column {column}"),
                ));
            }
            self.skip_trivia()?;
            if self.peek() == Some(b'.') {
                return Err(self.syntax_error(
                    self.offset,
                    "attribute paths (`a.b = …`) are not used in manifests".into(),
                ));
            }
            self.expect(b'=')?;
            let value = self.value(depth + 1)?;
            self.expect(b';')?;
            bindings.push((name, name_offset, value));
        }
    }

    /// An identifier, `[A-Za-z_][A-Za-z0-9_'-]*`, as Nix's lexer reads one.
    fn identifier(&mut self) -> &'a str {
        let start = self.offset;
        self.offset += 1;
        while self
            .peek()
            .is_some_and(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'\'' | b'-'))
        {
            self.offset += 1;
        }
        self.text.get(start..self.offset).unwrap_or_default()
    }

    /// A string literal, after Nix's rules: `\n`, `\r`, `\t`, and `\` before anything else keeps
    /// that character; `${` starts an interpolation (never written by `nix-env`); a `$` takes the
    /// next character literally unless it is `{`, `"` or `\`.
    fn string(&mut self) -> Result<String, ManifestError> {
        let start = self.offset;
        self.offset += 1;
        let mut value = String::new();
        loop {
            let rest = self.text.get(self.offset..).unwrap_or_default();
            let mut characters = rest.chars();
            let Some(character) = characters.next() else {
                return Err(self.syntax_error(start, "unterminated string".into()));
            };
            let next = characters.next();
            match character {
                '"' => {
                    self.offset += 1;
                    return Ok(value);
                }
                '\\' => {
                    let Some(escaped) = next else {
                        return Err(self.syntax_error(start, "unterminated string".into()));
                    };
                    value.push(match escaped {
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        other => other,
                    });
                    self.offset += 1 + escaped.len_utf8();
                }
                '$' => match next {
                    Some('{') => {
                        return Err(self.syntax_error(
                            self.offset,
                            "string interpolation (`${`) is not used in manifests".into(),
                        ));
                    }
                    Some(following) if following != '"' && following != '\\' => {
                        value.push('$');
                        value.push(following);
                        self.offset += 1 + following.len_utf8();
                    }
                    _ => {
                        value.push('$');
                        self.offset += 1;
                    }
                },
                other => {
                    value.push(other);
                    self.offset += other.len_utf8();
                }
            }
        }
    }

    /// A number: an optional `-` (Nix's unary minus, which 2.8 also prints inside lists), digits,
    /// an optional fraction and an optional exponent, as Nix's lexer and C++'s `%g` write them;
    /// `-inf` and `-nan` too. Floats if there is a point or an exponent.
    fn number(&mut self) -> Result<Parsed, ManifestError> {
        let start = self.offset;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.offset += 1;
            if self.peek().is_some_and(|byte| byte.is_ascii_alphabetic()) {
                let word_offset = self.offset;
                return match self.identifier() {
                    "inf" => Ok(Parsed::Float(f64::NEG_INFINITY)),
                    "nan" => Ok(Parsed::Float(-f64::NAN)),
                    _ => Err(self.syntax_error(word_offset, "expected a number after `-`".into())),
                };
            }
        }
        let digits_start = self.offset;
        self.skip_digits();
        let integral_digits = self.offset - digits_start;
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            is_float = true;
            self.offset += 1;
            self.skip_digits();
        }
        if integral_digits == 0 && self.offset - digits_start <= 1 {
            return Err(self.syntax_error(start, "expected a number".into()));
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let mark = self.offset;
            self.offset += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.offset += 1;
            }
            let exponent_start = self.offset;
            self.skip_digits();
            if self.offset == exponent_start {
                return Err(self.syntax_error(mark, "expected digits in the exponent".into()));
            }
            is_float = true;
        }
        let literal = self.text.get(start..self.offset).unwrap_or_default();
        if is_float {
            literal
                .parse::<f64>()
                .map(Parsed::Float)
                .map_err(|_| self.syntax_error(start, format!("invalid float `{literal}`")))
        } else {
            literal
                .parse::<i64>()
                .map(Parsed::Int)
                .map_err(|_| self.syntax_error(start, format!("invalid integer `{literal}`")))
        }
    }

    fn skip_digits(&mut self) {
        while self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            self.offset += 1;
        }
    }
}

/// Builds one element from its attribute set.
fn element(text: &str, index: usize, item: Spanned) -> Result<ManifestElement, ManifestError> {
    let error = |name: &str, offset: usize, message: String| {
        let (line, column) = line_column(text, offset);
        ManifestError::Element {
            index,
            name: name.to_owned(),
            message,
            line,
            column,
        }
    };
    let Parsed::Attrs(bindings) = item.parsed else {
        return Err(error(
            "unnamed",
            item.offset,
            format!("expected an attribute set, found {}", item.parsed.kind()),
        ));
    };
    let mut attributes: BTreeMap<String, (usize, Spanned)> = bindings
        .into_iter()
        .map(|(name, offset, value)| (name, (offset, value)))
        .collect();

    let take_string = |attributes: &mut BTreeMap<String, (usize, Spanned)>,
                       element_name: &str,
                       key: &str|
     -> Result<Option<String>, ManifestError> {
        match attributes.remove(key) {
            None => Ok(None),
            Some((
                _,
                Spanned {
                    parsed: Parsed::String(value),
                    ..
                },
            )) => Ok(Some(value)),
            Some((_, value)) => Err(error(
                element_name,
                value.offset,
                format!("`{key}` must be a string, found {}", value.parsed.kind()),
            )),
        }
    };

    let name = take_string(&mut attributes, "unnamed", "name")?
        .ok_or_else(|| error("unnamed", item.offset, "missing `name`".into()))?;
    let out_path = take_string(&mut attributes, &name, "outPath")?
        .ok_or_else(|| error(&name, item.offset, "missing `outPath`".into()))?;
    match take_string(&mut attributes, &name, "type")? {
        Some(kind) if kind == "derivation" => {}
        Some(kind) => {
            return Err(error(
                &name,
                item.offset,
                format!("`type` must be \"derivation\", found \"{kind}\""),
            ));
        }
        None => return Err(error(&name, item.offset, "missing `type`".into())),
    }
    let system = take_string(&mut attributes, &name, "system")?;
    let drv_path = take_string(&mut attributes, &name, "drvPath")?;

    let meta = match attributes.remove("meta") {
        None => BTreeMap::new(),
        Some((
            _,
            Spanned {
                parsed: Parsed::Attrs(bindings),
                ..
            },
        )) => bindings
            .into_iter()
            .filter_map(|(key, _, value)| Some((key, meta_value(value.parsed)?)))
            .filter(|(_, value)| value.is_valid_meta())
            .collect(),
        Some((_, value)) => {
            return Err(error(
                &name,
                value.offset,
                format!(
                    "`meta` must be an attribute set, found {}",
                    value.parsed.kind()
                ),
            ));
        }
    };

    let output_names: Option<Vec<(String, usize)>> = match attributes.remove("outputs") {
        None => None,
        Some((
            _,
            Spanned {
                parsed: Parsed::List(items),
                ..
            },
        )) => items
            .into_iter()
            .map(|item| match item.parsed {
                Parsed::String(output) => Ok((output, item.offset)),
                other => Err(error(
                    &name,
                    item.offset,
                    format!("`outputs` must list strings, found {}", other.kind()),
                )),
            })
            .collect::<Result<_, _>>()
            .map(Some)?,
        Some((_, value)) => {
            return Err(error(
                &name,
                value.offset,
                format!("`outputs` must be a list, found {}", value.parsed.kind()),
            ));
        }
    };
    let mut outputs = BTreeMap::new();
    // Without `outputs`, Nix installs `out`: from its set when there is one, else `outPath`.
    let output_names = match output_names {
        Some(names) => names,
        None => match attributes.get("out") {
            Some((offset, _)) => vec![("out".to_owned(), *offset)],
            None => {
                outputs.insert("out".to_owned(), out_path.clone());
                Vec::new()
            }
        },
    };
    for (output, offset) in output_names {
        if outputs.contains_key(&output) {
            return Err(error(
                &name,
                offset,
                format!("output `{output}` is listed twice"),
            ));
        }
        let path = match attributes.remove(&output) {
            Some((
                _,
                Spanned {
                    parsed: Parsed::Attrs(bindings),
                    offset: set_offset,
                },
            )) => output_path(bindings).ok_or_else(|| {
                error(
                    &name,
                    set_offset,
                    format!("output `{output}` must be `{{ outPath = \"…\"; }}`"),
                )
            })?,
            Some((_, value)) => {
                return Err(error(
                    &name,
                    value.offset,
                    format!(
                        "output `{output}` must be an attribute set, found {}",
                        value.parsed.kind()
                    ),
                ));
            }
            None => {
                return Err(error(
                    &name,
                    offset,
                    format!("output `{output}` has no `{output} = {{ outPath = …; }}` attribute"),
                ));
            }
        };
        outputs.insert(output, path);
    }
    if let Some((key, (offset, _))) = attributes.into_iter().next() {
        return Err(error(
            &name,
            offset,
            format!("unexpected attribute `{key}`"),
        ));
    }
    Ok(ManifestElement {
        name,
        out_path,
        outputs,
        system,
        meta,
        drv_path,
    })
}

/// The `outPath` of an output's attribute set, which must hold nothing else.
fn output_path(bindings: Vec<(String, usize, Spanned)>) -> Option<String> {
    let mut bindings = bindings.into_iter();
    match (bindings.next(), bindings.next()) {
        (
            Some((
                key,
                _,
                Spanned {
                    parsed: Parsed::String(path),
                    ..
                },
            )),
            None,
        ) if key == "outPath" => Some(path),
        _ => None,
    }
}

/// A meta value, or `None` where it holds a `null` (which Nix drops from meta).
fn meta_value(parsed: Parsed) -> Option<NixValue> {
    Some(match parsed {
        Parsed::Null => return None,
        Parsed::Bool(boolean) => NixValue::Bool(boolean),
        Parsed::Int(integer) => NixValue::Int(integer),
        Parsed::Float(float) => NixValue::Float(float),
        Parsed::String(text) => NixValue::String(text),
        Parsed::List(items) => NixValue::List(
            items
                .into_iter()
                .map(|item| meta_value(item.parsed))
                .collect::<Option<_>>()?,
        ),
        Parsed::Attrs(bindings) => NixValue::Attrs(
            bindings
                .into_iter()
                .map(|(key, _, value)| Some((key, meta_value(value.parsed)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    fn element(name: &str, out_path: &str) -> ManifestElement {
        ManifestElement {
            name: name.to_owned(),
            out_path: out_path.to_owned(),
            outputs: BTreeMap::from([("out".to_owned(), out_path.to_owned())]),
            system: Some("x86_64-linux".to_owned()),
            meta: BTreeMap::new(),
            drv_path: None,
        }
    }

    /// The manifest of one element whose meta holds `value` under the name `key`.
    fn with_meta(key: &str, value: NixValue) -> ManifestElement {
        let mut element = element("m-1", "/nix/store/h-m-1");
        element.meta.insert(key.to_owned(), value);
        element
    }

    /// The text `render` writes for `meta`'s content, between `meta = { ` and ` };`.
    fn rendered_meta(key: &str, value: NixValue) -> Result<String, RenderError> {
        let text = render(&[with_meta(key, value)])?;
        let start = text
            .find("meta = { ")
            .map_or(0, |index| index + "meta = { ".len());
        let end = text.find(" }; name =").unwrap_or(text.len());
        Ok(text[start..end].to_owned())
    }

    fn string(text: &str) -> NixValue {
        NixValue::String(text.to_owned())
    }

    // §11.2's verified examples.
    #[test]
    fn verified_examples() {
        assert_eq!(render(&[]).as_deref(), Ok("[ ]"));
        assert_eq!(
            render(&[element("foo-2.0", "/nix/store/h-foo-2.0")]).as_deref(),
            Ok(
                "[ { meta = { }; name = \"foo-2.0\"; out = { outPath = \"/nix/store/h-foo-2.0\"; }; outPath = \"/nix/store/h-foo-2.0\"; outputs = [ \"out\" ]; system = \"x86_64-linux\"; type = \"derivation\"; } ]"
            )
        );
        let mut mo2 = element("mo2-1.0", "…-mo2-1.0");
        mo2.outputs = BTreeMap::from([
            ("dev".to_owned(), "…-mo2-1.0-dev".to_owned()),
            ("bin".to_owned(), "…-mo2-1.0-bin".to_owned()),
        ]);
        mo2.meta.insert(
            "outputsToInstall".to_owned(),
            NixValue::List(vec![string("bin"), string("dev")]),
        );
        assert_eq!(
            render(&[mo2]).as_deref(),
            Ok(
                "[ { bin = { outPath = \"…-mo2-1.0-bin\"; }; dev = { outPath = \"…-mo2-1.0-dev\"; }; meta = { outputsToInstall = [ \"bin\" \"dev\" ]; }; name = \"mo2-1.0\"; outPath = \"…-mo2-1.0\"; outputs = [ \"bin\" \"dev\" ]; system = \"x86_64-linux\"; type = \"derivation\"; } ]"
            )
        );
    }

    /// Store-path installs have no system; `keep-env-derivations` adds `drvPath`, first in
    /// byte order; outputs sort among the element's own attributes.
    #[test]
    fn attribute_order_and_optional_attributes() {
        let mut element = element("a-1", "/s/a");
        element.system = None;
        element.drv_path = Some("/s/a.drv".to_owned());
        element
            .outputs
            .insert("zz".to_owned(), "/s/a-zz".to_owned());
        element
            .outputs
            .insert("lib".to_owned(), "/s/a-lib".to_owned());
        assert_eq!(
            render(&[element]).as_deref(),
            Ok(
                "[ { drvPath = \"/s/a.drv\"; lib = { outPath = \"/s/a-lib\"; }; meta = { }; name = \"a-1\"; out = { outPath = \"/s/a\"; }; outPath = \"/s/a\"; outputs = [ \"lib\" \"out\" \"zz\" ]; type = \"derivation\"; zz = { outPath = \"/s/a-zz\"; }; } ]"
            )
        );
    }

    // §11.2 value printing: strings.
    #[rstest]
    #[case::plain("abc", r#""abc""#)]
    #[case::quote_backslash("q\"\\", r#""q\"\\""#)]
    #[case::controls("\n\r\t", r#""\n\r\t""#)]
    #[case::interpolation("${x}", r#""\${x}""#)]
    #[case::lone_dollar("a$ b$", r#""a$ b$""#)]
    #[case::double_dollar("$${", r#""$\${""#)]
    #[case::dollar_quote("$\"", r#""$\"""#)]
    #[case::raw_bytes("é\u{1}\u{7f}", "\"é\u{1}\u{7f}\"")]
    fn strings_are_escaped_like_nix(#[case] value: &str, #[case] written: &str) {
        assert_eq!(
            rendered_meta("s", string(value)),
            Ok(format!("s = {written};"))
        );
        let read = parse(&render(&[with_meta("s", string(value))]).unwrap_or_default());
        assert_eq!(
            read.map(|elements| elements[0].meta["s"].clone()),
            Ok(string(value))
        );
    }

    // §11.2 value printing: attribute names. Nix 2.8 quotes only `if` among the keywords, which
    // leaves `let`, `then`, … unreadable; we quote them all.
    #[rstest]
    #[case::identifier("abc", "abc")]
    #[case::underscore("_a", "_a")]
    #[case::quote_and_dash("a'b-c_", "a'b-c_")]
    #[case::digit_first("1a", "\"1a\"")]
    #[case::dash_first("-a", "\"-a\"")]
    #[case::quote_first("'a", "\"'a\"")]
    #[case::empty("", "\"\"")]
    #[case::dot("a.b", "\"a.b\"")]
    #[case::space("weird key", "\"weird key\"")]
    #[case::non_ascii("é", "\"é\"")]
    #[case::keyword_if("if", "\"if\"")]
    #[case::keyword_let("let", "\"let\"")]
    #[case::keyword_then("then", "\"then\"")]
    #[case::keyword_inherit("inherit", "\"inherit\"")]
    #[case::or_is_a_name("or", "or")]
    #[case::true_is_a_name("true", "true")]
    #[case::interpolation("${", "\"\\${\"")]
    fn attribute_names(#[case] name: &str, #[case] written: &str) {
        assert_eq!(
            rendered_meta(name, NixValue::Int(1)),
            Ok(format!("{written} = 1;"))
        );
        let read = parse(&render(&[with_meta(name, NixValue::Int(1))]).unwrap_or_default());
        assert_eq!(
            read.map(|elements| elements[0].meta.contains_key(name)),
            Ok(true)
        );
    }

    // §11.2 value printing: numbers, booleans, lists and sets. Floats are written so that they
    // read back (Nix 2.8: `1`, `1e+20`, `1.23457e+08`, `1.5e-07`, `0.333333`), and negative
    // list items in parentheses (Nix 2.8: `[ -1 ]`, a syntax error).
    #[rstest]
    #[case::zero(NixValue::Int(0), "0")]
    #[case::negative(NixValue::Int(-7), "-7")]
    #[case::largest(NixValue::Int(i64::MAX), "9223372036854775807")]
    #[case::just_above_smallest(NixValue::Int(i64::MIN + 1), "-9223372036854775807")]
    #[case::float_integral(NixValue::Float(1.0), "1.0")]
    #[case::float_tenth(NixValue::Float(0.1), "0.1")]
    #[case::float_third(NixValue::Float(1.0 / 3.0), "0.3333333333333333")]
    #[case::float_big(NixValue::Float(1e20), "1.0e20")]
    #[case::float_precise(NixValue::Float(123_456_789.0), "123456789.0")]
    #[case::float_small(NixValue::Float(1.5e-7), "1.5e-7")]
    #[case::float_negative(NixValue::Float(-2.5), "-2.5")]
    #[case::float_negative_zero(NixValue::Float(-0.0), "0.0")]
    #[case::float_max(NixValue::Float(f64::MAX), "1.7976931348623157e308")]
    #[case::float_min_normal(NixValue::Float(f64::MIN_POSITIVE), "2.2250738585072014e-308")]
    #[case::bools(NixValue::List(vec![NixValue::Bool(true), NixValue::Bool(false)]), "[ true false ]")]
    #[case::empty_list(NixValue::List(Vec::new()), "[ ]")]
    #[case::empty_set(NixValue::Attrs(BTreeMap::new()), "{ }")]
    #[case::negative_in_list(NixValue::List(vec![NixValue::Int(-1), NixValue::Float(-0.5), NixValue::Int(3)]), "[ (-1) (-0.5) 3 ]")]
    #[case::nested(NixValue::Attrs(BTreeMap::from([
        ("y".to_owned(), NixValue::List(vec![NixValue::List(Vec::new())])),
        ("x".to_owned(), NixValue::Attrs(BTreeMap::new())),
    ])), "{ x = { }; y = [ [ ] ]; }")]
    fn values(#[case] value: NixValue, #[case] written: &str) {
        assert_eq!(
            rendered_meta("v", value.clone()),
            Ok(format!("v = {written};"))
        );
        let read = parse(&render(&[with_meta("v", value.clone())]).unwrap_or_default());
        assert_eq!(
            read.map(|elements| elements[0].meta["v"].clone()),
            Ok(value)
        );
    }

    #[rstest]
    #[case::infinity(NixValue::Float(f64::INFINITY), "inf")]
    #[case::negative_infinity(NixValue::Float(f64::NEG_INFINITY), "-inf")]
    #[case::nan(NixValue::Float(f64::NAN), "NaN")]
    #[case::subnormal(NixValue::Float(5e-324), "0.000")]
    fn floats_without_a_literal_are_refused(#[case] value: NixValue, #[case] shown: &str) {
        let error = render(&[with_meta("f", NixValue::List(vec![value]))]).expect_err("no literal");
        let RenderError::UnwritableFloat {
            element,
            attribute,
            value,
        } = error
        else {
            panic!("unexpected {error:?}");
        };
        assert_eq!((element.as_str(), attribute.as_str()), ("m-1", "meta.f.0"));
        assert!(value.starts_with(shown), "{value}");
    }

    #[test]
    fn other_unwritable_elements_are_refused() {
        assert_eq!(
            render(&[with_meta("i", NixValue::Int(i64::MIN))]),
            Err(RenderError::UnwritableInteger {
                element: "m-1".into(),
                attribute: "meta.i".into()
            })
        );
        assert_eq!(
            render(&[with_meta("s", string("a\0b"))]),
            Err(RenderError::NulByte {
                element: "m-1".into(),
                attribute: "meta.s".into()
            })
        );
        let mut clash = element("c-1", "/s/c");
        clash.outputs.insert("name".into(), "/s/c-name".into());
        assert_eq!(
            render(&[clash]),
            Err(RenderError::OutputNameClash {
                element: "c-1".into(),
                output: "name".into()
            })
        );
    }

    /// Nix drops a meta value holding a derivation (a set with `outPath`) before writing, at any
    /// depth; so does `render`, and `parse` drops it (and anything holding `null`) on reading.
    #[test]
    fn invalid_meta_is_dropped_both_ways() {
        let derivation = NixValue::Attrs(BTreeMap::from([("outPath".into(), string("x"))]));
        let mut element = with_meta("drv", derivation.clone());
        element.meta.insert(
            "nested".into(),
            NixValue::List(vec![NixValue::Int(1), derivation]),
        );
        element.meta.insert("kept".into(), NixValue::Int(2));
        assert_eq!(
            rendered_meta("kept", NixValue::Int(2)),
            Ok("kept = 2;".into())
        );
        let text = render(&[element]).unwrap_or_default();
        assert!(text.contains("meta = { kept = 2; };"), "{text}");

        let read = parse(
            "[ { meta = { a = null; b = [ 1 null ]; c = { d = null; }; e = { outPath = \"x\"; }; f = [ { g = { outPath = \"y\"; }; } ]; kept = 3; }; name = \"n\"; outPath = \"/s/n\"; outputs = [ \"out\" ]; out = { outPath = \"/s/n\"; }; type = \"derivation\"; } ]",
        );
        assert_eq!(
            read.map(|elements| elements[0].meta.clone()),
            Ok(BTreeMap::from([("kept".into(), NixValue::Int(3))]))
        );
    }

    /// Values nested to the limit are written and read back; one level more is refused by both.
    #[test]
    fn nesting_is_bounded() {
        let nest = |levels: usize| {
            let mut value = NixValue::Int(-1);
            for _ in 0..levels {
                value = NixValue::List(vec![value]);
            }
            value
        };
        // The manifest list, the element and the meta set take three levels.
        let deepest = with_meta("v", nest(MAX_DEPTH - 3));
        let text = render(std::slice::from_ref(&deepest)).expect("within the limit");
        assert_eq!(parse(&text), Ok(vec![deepest]));
        let too_deep = render(&[with_meta("v", nest(MAX_DEPTH - 2))]);
        assert!(
            matches!(too_deep, Err(RenderError::TooDeep { .. })),
            "{too_deep:?}"
        );

        let hostile = "[".repeat(100_000);
        let error = parse(&hostile).expect_err("too deep");
        assert!(
            error.to_string().contains("nested more than 256"),
            "{error}"
        );
        let parentheses = format!("[ {} ]", "(".repeat(100_000));
        assert!(parse(&parentheses).is_err());
    }

    // What Nix 2.8 writes and cannot read itself still reads here.
    #[rstest]
    #[case::exponent_without_point("1e+20", NixValue::Float(1e20))]
    #[case::g_style("1.23457e+08", NixValue::Float(123_457_000.0))]
    #[case::g_small("1.5e-07", NixValue::Float(1.5e-7))]
    #[case::integral_float_as_int("1", NixValue::Int(1))]
    #[case::negative_in_list("[ -1 -0.5 ]", NixValue::List(vec![NixValue::Int(-1), NixValue::Float(-0.5)]))]
    #[case::infinity("[ inf -inf ]", NixValue::List(vec![NixValue::Float(f64::INFINITY), NixValue::Float(f64::NEG_INFINITY)]))]
    #[case::smallest_int("-9223372036854775808", NixValue::Int(i64::MIN))]
    #[case::leading_point(".5", NixValue::Float(0.5))]
    #[case::trailing_point("1.", NixValue::Float(1.0))]
    #[case::parenthesised("[ (-1) ((2)) ]", NixValue::List(vec![NixValue::Int(-1), NixValue::Int(2)]))]
    #[case::string_escapes(r#""a\qb\$\${$$\"""#, string("aqb$${$$\""))]
    fn reads_what_nix_writes(#[case] written: &str, #[case] value: NixValue) {
        let text = format!(
            "[ {{ meta = {{ let = 0; v = {written}; }}; name = \"n\"; outPath = \"/s/n\"; outputs = [ \"out\" ]; out = {{ outPath = \"/s/n\"; }}; type = \"derivation\"; }} ]"
        );
        let read = parse(&text).expect("readable");
        assert_eq!(read[0].meta["v"], value);
        assert_eq!(read[0].meta["let"], NixValue::Int(0));
    }

    #[test]
    fn nan_reads_as_nan() {
        let text = "[ { meta = { v = -nan; w = nan; }; name = \"n\"; outPath = \"/s/n\"; type = \"derivation\"; } ]";
        let read = parse(text).expect("readable");
        assert!(matches!(read[0].meta["v"], NixValue::Float(value) if value.is_nan()));
        assert!(matches!(read[0].meta["w"], NixValue::Float(value) if value.is_nan()));
    }

    /// Hand-edited manifests: comments, newlines, and no `outputs` (Nix then installs `out`).
    #[test]
    fn lenient_where_nix_is() {
        let text = "# a comment\n[\n  /* one */ { name = \"n\"; outPath = \"/s/n\"; type = \"derivation\"; }\n  { name = \"m\"; outPath = \"/s/m\"; out = { outPath = \"/s/m-out\"; }; type = \"derivation\"; }\n]\n";
        let read = parse(text).expect("readable");
        assert_eq!(
            read[0].outputs,
            BTreeMap::from([("out".into(), "/s/n".into())])
        );
        assert_eq!(
            read[1].outputs,
            BTreeMap::from([("out".into(), "/s/m-out".into())])
        );
        assert!(read[0].meta.is_empty() && read[0].system.is_none());
    }

    #[rstest]
    #[case::not_a_list("{ }", "a manifest must be a list at line 1 column 1")]
    #[case::trailing("[ ] x", "unexpected text after the list at line 1 column 5")]
    #[case::unterminated_list("[ { }", "unterminated list at line 1 column 1")]
    #[case::unterminated_string("[\n  \"abc", "unterminated string at line 2 column 3")]
    #[case::interpolation(
        "[ \"a${b}\" ]",
        "string interpolation (`${`) is not used in manifests at line 1 column 5"
    )]
    #[case::variable(
        "[ x ]",
        "unexpected identifier `x` (manifests hold only literals) at line 1 column 3"
    )]
    #[case::bad_exponent("[ 1e ]", "expected digits in the exponent at line 1 column 4")]
    #[case::integer_overflow(
        "[ 9223372036854775808 ]",
        "invalid integer `9223372036854775808` at line 1 column 3"
    )]
    #[case::duplicate(
        "[ { a = 1; a = 2; } ]",
        "attribute `a` is already defined at line 1 column 5 at line 1 column 12"
    )]
    #[case::attribute_path(
        "[ { a.b = 1; } ]",
        "attribute paths (`a.b = …`) are not used in manifests at line 1 column 6"
    )]
    #[case::missing_semicolon("[ { a = 1 } ]", "expected `;`, found `}` at line 1 column 11")]
    #[case::unterminated_comment("[ /* ]", "unterminated comment at line 1 column 3")]
    #[case::non_ascii_column("[ \"é\" é ]", "expected a value, found `é` at line 1 column 7")]
    #[case::element_not_a_set(
        "[ 1 ]",
        "element 0 (unnamed): expected an attribute set, found an integer at line 1 column 3"
    )]
    #[case::missing_name(
        "[ { outPath = \"/s\"; type = \"derivation\"; } ]",
        "element 0 (unnamed): missing `name` at line 1 column 3"
    )]
    #[case::missing_type(
        "[ { name = \"n\"; outPath = \"/s\"; } ]",
        "element 0 (n): missing `type` at line 1 column 3"
    )]
    #[case::wrong_type(
        "[ { name = \"n\"; outPath = \"/s\"; type = \"set\"; } ]",
        "element 0 (n): `type` must be \"derivation\", found \"set\" at line 1 column 3"
    )]
    #[case::name_not_a_string(
        "[ { name = 1; } ]",
        "element 0 (unnamed): `name` must be a string, found an integer at line 1 column 12"
    )]
    #[case::missing_output(
        "[ { name = \"n\"; outPath = \"/s\"; outputs = [ \"bin\" ]; type = \"derivation\"; } ]",
        "element 0 (n): output `bin` has no `bin = { outPath = …; }` attribute at line 1 column 45"
    )]
    #[case::bad_output(
        "[ { bin = { path = \"/s\"; }; name = \"n\"; outPath = \"/s\"; outputs = [ \"bin\" ]; type = \"derivation\"; } ]",
        "element 0 (n): output `bin` must be `{ outPath = \"…\"; }` at line 1 column 11"
    )]
    #[case::unknown_attribute(
        "[ { name = \"n\"; outPath = \"/s\"; type = \"derivation\"; extra = 1; } ]",
        "element 0 (n): unexpected attribute `extra` at line 1 column 54"
    )]
    #[case::second_element(
        "[ { name = \"n\"; outPath = \"/s\"; type = \"derivation\"; }\n  { name = \"m\"; } ]",
        "element 1 (m): missing `outPath` at line 2 column 3"
    )]
    fn errors_name_line_and_column(#[case] text: &str, #[case] message: &str) {
        assert_eq!(
            parse(text).map_err(|error| error.to_string()),
            Err(message.to_owned())
        );
    }

    #[test]
    fn json_meta_converts_like_nix_keeps_it() {
        let json: serde_json::Value = serde_json::json!({
            "i": 3, "f": 1.5, "s": "x", "b": false, "l": ["a", 1], "a": {"x": "y"}
        });
        let converted = NixValue::from_json(&json).expect("valid");
        let NixValue::Attrs(attrs) = converted else {
            panic!("not a set");
        };
        assert_eq!(attrs["i"], NixValue::Int(3));
        assert_eq!(attrs["f"], NixValue::Float(1.5));
        assert_eq!(
            attrs["l"],
            NixValue::List(vec![string("a"), NixValue::Int(1)])
        );
        assert_eq!(NixValue::from_json(&serde_json::json!([1, null])), None);
        assert_eq!(NixValue::from_json(&serde_json::Value::Null), None);
    }

    // ---------------------------------------------------------------------------------------
    // Properties.

    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-zA-Z0-9 _.-]{0,8}", "[\\PC\"\\\\$\\{\\}\n\r\t']{0,12}",]
            .prop_filter("no NUL", |text: &String| !text.contains('\0'))
    }

    fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>().prop_filter("Nix has a literal", |value| value.is_normal()),
            Just(0.0),
            Just(1.0),
            Just(-1e20),
            (-1000i32..1000).prop_map(|value| f64::from(value) / 8.0),
        ]
    }

    fn nix_value() -> impl Strategy<Value = NixValue> {
        let leaf = prop_oneof![
            text().prop_map(NixValue::String),
            any::<i64>()
                .prop_filter("Nix has a literal", |value| *value != i64::MIN)
                .prop_map(NixValue::Int),
            float().prop_map(NixValue::Float),
            any::<bool>().prop_map(NixValue::Bool),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(NixValue::List),
                prop::collection::btree_map(text(), inner, 0..4)
                    .prop_filter("valid meta", |attrs| !attrs.contains_key("outPath"))
                    .prop_map(NixValue::Attrs),
            ]
        })
    }

    fn manifest_element() -> impl Strategy<Value = ManifestElement> {
        (
            text(),
            text(),
            prop::collection::btree_map(
                text().prop_filter("not a fixed attribute", |name| {
                    !FIXED_ATTRIBUTES.contains(&name.as_str())
                }),
                text(),
                0..3,
            ),
            prop::option::of(text()),
            prop::collection::btree_map(text(), nix_value(), 0..4),
            prop::option::of(text()),
        )
            .prop_map(
                |(name, out_path, outputs, system, meta, drv_path)| ManifestElement {
                    name,
                    out_path,
                    outputs,
                    system,
                    meta,
                    drv_path,
                },
            )
            .prop_filter("outputs present", |element| !element.outputs.is_empty())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever `render` writes, `parse` reads back as the same elements.
        #[test]
        fn render_then_parse_round_trips(elements in prop::collection::vec(manifest_element(), 0..4)) {
            let text = render(&elements).map_err(|error| TestCaseError::fail(error.to_string()))?;
            prop_assert!(!text.contains('\n'), "the manifest is one line");
            prop_assert_eq!(parse(&text), Ok(elements));
        }

        /// Arbitrary text never panics the reader.
        #[test]
        fn parse_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        /// Nor does a valid manifest with a byte range cut out or a byte inserted.
        #[test]
        fn damaged_manifests_never_panic(
            elements in prop::collection::vec(manifest_element(), 1..3),
            start in 0usize..400,
            length in 0usize..20,
            insert in prop::sample::select(vec!["", "[", "{", "(", "\"", "\\", "$", "-", "=", ";", "é"]),
        ) {
            let text = render(&elements).map_err(|error| TestCaseError::fail(error.to_string()))?;
            let mut bytes = text.into_bytes();
            let start = start.min(bytes.len());
            let end = (start + length).min(bytes.len());
            bytes.splice(start..end, insert.bytes());
            let damaged = String::from_utf8_lossy(&bytes);
            let _ = parse(&damaged);
        }
    }
}
