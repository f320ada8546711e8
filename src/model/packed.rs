//! The packed catalog: one byte buffer per source, read without materialising entries.
//!
//! A query over 136,000 packages touches only names (and, for free search, attribute paths and
//! descriptions), so those live in columns that are sliced in place: no allocation per entry,
//! no parsing. Everything else (outputs, the full meta) is decoded only for the rows a command
//! prints. The same bytes are what the catalog cache stores, so a warm query is one read.
//!
//! Layout, little-endian:
//!
//! ```text
//! magic "declenv-packed-4" | count u32 | records: count × 48 bytes | strings: u32 len + UTF-8 | details: u32 len + bytes
//! record: attr (u32 offset, u32 len) | name (u32, u32) | system (u32, u32; offset u32::MAX = none)
//!         | description (u32, u32; offset u32::MAX = none) | selection priority i64
//!         | details (u32 offset, u32 len)
//! details: output name, outputs, meta, trees, in the varint/tag encoding of `encode_details`
//! ```
//!
//! Pure: bytes in, views out. [`PackedCatalog::from_bytes`] checks every offset once, so the
//! accessors cannot fail or panic afterwards, whatever the bytes were.

use super::catalog::CatalogEntry;
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;

const MAGIC: &[u8; 16] = b"declenv-packed-4";
const RECORD: usize = 48;
const NONE: u32 = u32::MAX;

/// A catalog too large for 32-bit offsets (over 4 GiB of text); no real catalog comes close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("catalog is too large to pack ({what} exceed 4 GiB)")]
pub struct TooLarge {
    /// Which section overflowed.
    pub what: &'static str,
}

/// A validated packed catalog.
#[derive(Debug, Clone)]
pub struct PackedCatalog {
    bytes: Vec<u8>,
    count: usize,
    strings_start: usize,
    strings_end: usize,
    details_start: usize,
}

#[derive(Clone, Copy)]
struct Span {
    offset: u32,
    length: u32,
}

impl PackedCatalog {
    /// Packs entries, in the order given (callers pass enumeration order).
    pub fn pack(entries: &[CatalogEntry]) -> Result<Vec<u8>, TooLarge> {
        let mut strings = String::new();
        let mut details = Vec::new();
        let mut records = Vec::with_capacity(entries.len() * RECORD);
        let mut systems: BTreeMap<&str, Span> = BTreeMap::new();
        let put_string = |strings: &mut String, text: &str| -> Result<Span, TooLarge> {
            let span = Span {
                offset: u32::try_from(strings.len()).map_err(|_| TooLarge { what: "strings" })?,
                length: u32::try_from(text.len()).map_err(|_| TooLarge { what: "strings" })?,
            };
            strings.push_str(text);
            Ok(span)
        };
        for entry in entries {
            let attr = put_string(&mut strings, &entry.attr_path)?;
            let name = put_string(&mut strings, &entry.name)?;
            let system = match entry.system.as_deref() {
                None => Span {
                    offset: NONE,
                    length: 0,
                },
                Some(system) => match systems.get(system) {
                    Some(span) => *span,
                    None => {
                        let span = put_string(&mut strings, system)?;
                        systems.insert(system, span);
                        span
                    }
                },
            };
            let description = match entry.description() {
                None => Span {
                    offset: NONE,
                    length: 0,
                },
                Some(text) => put_string(&mut strings, text)?,
            };
            let detail_start =
                u32::try_from(details.len()).map_err(|_| TooLarge { what: "details" })?;
            encode_details(&mut details, entry);
            let detail_length = u32::try_from(details.len() - detail_start as usize)
                .map_err(|_| TooLarge { what: "details" })?;
            for span in [attr, name, system, description] {
                records.extend_from_slice(&span.offset.to_le_bytes());
                records.extend_from_slice(&span.length.to_le_bytes());
            }
            records.extend_from_slice(&entry.selection_priority().to_le_bytes());
            records.extend_from_slice(&detail_start.to_le_bytes());
            records.extend_from_slice(&detail_length.to_le_bytes());
        }
        let count = u32::try_from(entries.len()).map_err(|_| TooLarge { what: "entries" })?;
        let strings_length =
            u32::try_from(strings.len()).map_err(|_| TooLarge { what: "strings" })?;
        let details_length =
            u32::try_from(details.len()).map_err(|_| TooLarge { what: "details" })?;
        let mut out = Vec::with_capacity(16 + 12 + records.len() + strings.len() + details.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&records);
        out.extend_from_slice(&strings_length.to_le_bytes());
        out.extend_from_slice(strings.as_bytes());
        out.extend_from_slice(&details_length.to_le_bytes());
        out.extend_from_slice(&details);
        Ok(out)
    }

    /// Validates packed bytes; `None` when they are not a well-formed packed catalog.
    #[must_use]
    pub fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        if bytes.get(..16)? != MAGIC {
            return None;
        }
        let count = read_u32(&bytes, 16)? as usize;
        let records_end = 20usize.checked_add(count.checked_mul(RECORD)?)?;
        let strings_length = read_u32(&bytes, records_end)? as usize;
        let strings_start = records_end + 4;
        let strings_end = strings_start.checked_add(strings_length)?;
        let details_length = read_u32(&bytes, strings_end)? as usize;
        let details_start = strings_end + 4;
        if details_start.checked_add(details_length)? != bytes.len() {
            return None;
        }
        let packed = Self {
            count,
            strings_start,
            strings_end,
            details_start,
            bytes,
        };
        let strings =
            std::str::from_utf8(packed.bytes.get(packed.strings_start..packed.strings_end)?)
                .ok()?;
        for index in 0..count {
            for field in 0..4 {
                let span = packed.span(index, field);
                if field >= 2 && span.offset == NONE {
                    continue;
                }
                let start = span.offset as usize;
                let end = start.checked_add(span.length as usize)?;
                if end > strings.len()
                    || !strings.is_char_boundary(start)
                    || !strings.is_char_boundary(end)
                {
                    return None;
                }
            }
            let detail = packed.span(index, 5);
            let end = (detail.offset as usize).checked_add(detail.length as usize)?;
            if end > details_length {
                return None;
            }
        }
        Some(packed)
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the source has no packages.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The raw bytes, as stored in the cache.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Field `field` of record `index` as a span (fields 0–3 are strings, 5 is the details).
    fn span(&self, index: usize, field: usize) -> Span {
        let base = 20 + index * RECORD + if field == 5 { 40 } else { field * 8 };
        Span {
            offset: read_u32(&self.bytes, base).unwrap_or(NONE),
            length: read_u32(&self.bytes, base + 4).unwrap_or(0),
        }
    }

    fn string(&self, index: usize, field: usize) -> Option<&str> {
        let span = self.span(index, field);
        if span.offset == NONE {
            return None;
        }
        let start = self.strings_start + span.offset as usize;
        let bytes = self.bytes.get(start..start + span.length as usize)?;
        // Validated in `from_bytes`: the strings section is UTF-8 and spans fall on boundaries.
        std::str::from_utf8(bytes).ok()
    }

    /// The attribute path of entry `index`.
    #[must_use]
    pub fn attr_path(&self, index: usize) -> &str {
        self.string(index, 0).unwrap_or_default()
    }

    /// The full derivation name of entry `index`.
    #[must_use]
    pub fn name(&self, index: usize) -> &str {
        self.string(index, 1).unwrap_or_default()
    }

    /// The system of entry `index`, when the source gave one.
    #[must_use]
    pub fn system(&self, index: usize) -> Option<&str> {
        self.string(index, 2)
    }

    /// `meta.description` of entry `index`, when it is a string.
    #[must_use]
    pub fn description(&self, index: usize) -> Option<&str> {
        self.string(index, 3)
    }

    /// `meta.priority` as selection reads it (precomputed when packing).
    #[must_use]
    pub fn selection_priority(&self, index: usize) -> i64 {
        let base = 20 + index * RECORD + 32;
        self.bytes
            .get(base..base + 8)
            .and_then(|bytes| bytes.try_into().ok())
            .map_or(0, i64::from_le_bytes)
    }

    /// Decodes the whole entry `index`. `None` only if the details are corrupt, which
    /// [`Self::from_bytes`] does not check (decoding them all would defeat the packing).
    #[must_use]
    pub fn entry(&self, index: usize) -> Option<CatalogEntry> {
        let span = self.span(index, 5);
        let start = self.details_start + span.offset as usize;
        let mut reader = Reader {
            bytes: self.bytes.get(start..start + span.length as usize)?,
            position: 0,
        };
        let output_name = reader.string()?;
        let mut outputs = BTreeMap::new();
        for _ in 0..reader.len()? {
            let output = reader.string()?;
            outputs.insert(output, reader.option()?);
        }
        let mut meta = reader.map(0)?;
        let mut trees = BTreeMap::new();
        for _ in 0..reader.len()? {
            let output = reader.string()?;
            trees.insert(output, reader.string()?);
        }
        if let Some(description) = self.description(index) {
            meta.insert(
                "description".to_owned(),
                Value::String(description.to_owned()),
            );
        }
        Some(CatalogEntry {
            attr_path: self.attr_path(index).to_owned(),
            name: self.name(index).to_owned(),
            system: self.system(index).map(str::to_owned),
            output_name,
            outputs,
            meta,
            trees,
        })
    }

    /// The bytes of the strings section (for tests of validation).
    #[cfg(test)]
    fn strings_section(&self) -> std::ops::Range<usize> {
        self.strings_start..self.strings_end
    }
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(offset..offset.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Encodes what the columns do not hold. A string `meta.description` is already a column, so it
/// is left out here and put back by [`PackedCatalog::entry`].
fn encode_details(out: &mut Vec<u8>, entry: &CatalogEntry) {
    put_str(out, &entry.output_name);
    put_len(out, entry.outputs.len());
    for (output, path) in &entry.outputs {
        put_str(out, output);
        match path {
            None => out.push(0),
            Some(path) => {
                out.push(1);
                put_str(out, path);
            }
        }
    }
    let description_is_column = entry.description().is_some();
    put_len(out, entry.meta.len() - usize::from(description_is_column));
    for (key, value) in &entry.meta {
        if description_is_column && key == "description" {
            continue;
        }
        put_str(out, key);
        put_value(out, value);
    }
    put_len(out, entry.trees.len());
    for (output, tree) in &entry.trees {
        put_str(out, output);
        put_str(out, tree);
    }
}

/// Lengths and counts as LEB128 varints: most strings are short.
fn put_len(out: &mut Vec<u8>, length: usize) {
    let mut value = length as u64;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_len(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

fn put_map(out: &mut Vec<u8>, map: &Map<String, Value>) {
    put_len(out, map.len());
    for (key, value) in map {
        put_str(out, key);
        put_value(out, value);
    }
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(0),
        Value::Bool(false) => out.push(1),
        Value::Bool(true) => out.push(2),
        Value::Number(number) => {
            if let Some(integer) = number.as_i64() {
                out.push(3);
                out.extend_from_slice(&integer.to_le_bytes());
            } else if let Some(integer) = number.as_u64() {
                out.push(4);
                out.extend_from_slice(&integer.to_le_bytes());
            } else {
                out.push(5);
                out.extend_from_slice(&number.as_f64().unwrap_or(0.0).to_le_bytes());
            }
        }
        Value::String(text) => {
            out.push(6);
            put_str(out, text);
        }
        Value::Array(items) => {
            out.push(7);
            put_len(out, items.len());
            for item in items {
                put_value(out, item);
            }
        }
        Value::Object(map) => {
            out.push(8);
            put_map(out, map);
        }
    }
}

/// Nesting deeper than this in meta values is treated as corruption, which keeps decoding from
/// recursing without bound on hostile bytes.
const MAX_DEPTH: usize = 256;

/// A bounds-checked cursor; every read returns `None` past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let end = self.position.checked_add(count)?;
        let slice = self.bytes.get(self.position..end)?;
        self.position = end;
        Some(slice)
    }

    fn eight(&mut self) -> Option<[u8; 8]> {
        self.take(8)?.try_into().ok()
    }

    fn len(&mut self) -> Option<usize> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.take(1)?.first()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return usize::try_from(value).ok();
            }
        }
        None
    }

    fn string(&mut self) -> Option<String> {
        let length = self.len()?;
        String::from_utf8(self.take(length)?.to_vec()).ok()
    }

    fn option(&mut self) -> Option<Option<String>> {
        match self.take(1)?.first()? {
            0 => Some(None),
            1 => Some(Some(self.string()?)),
            _ => None,
        }
    }

    fn map(&mut self, depth: usize) -> Option<Map<String, Value>> {
        let mut map = Map::new();
        for _ in 0..self.len()? {
            let key = self.string()?;
            let value = self.value(depth + 1)?;
            map.insert(key, value);
        }
        Some(map)
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        Some(match self.take(1)?.first()? {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => Value::from(i64::from_le_bytes(self.eight()?)),
            4 => Value::from(u64::from_le_bytes(self.eight()?)),
            5 => Value::Number(Number::from_f64(f64::from_le_bytes(self.eight()?))?),
            6 => Value::String(self.string()?),
            7 => {
                let count = self.len()?;
                let mut items = Vec::with_capacity(count.min(self.bytes.len()));
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            8 => Value::Object(self.map(depth)?),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::catalog::parse_catalog_json;
    use proptest::prelude::*;

    fn sample() -> Vec<CatalogEntry> {
        parse_catalog_json(
            r#"{
              "a": { "name": "a-1", "system": "x86_64-linux", "outputName": "out",
                     "outputs": { "out": "/nix/store/x-a-1", "man": null },
                     "meta": { "d": { "n": [1, -2, 1.5, true, null, "s"] }, "priority": "3",
                               "description": "café ☕" } },
              "b": { "name": "b" },
              "c": { "name": "c-2", "system": "x86_64-linux", "meta": { "priority": 18446744073709551615 } }
            }"#,
        )
        .expect("sample parses")
    }

    fn packed(entries: &[CatalogEntry]) -> PackedCatalog {
        PackedCatalog::from_bytes(PackedCatalog::pack(entries).expect("packs")).expect("valid")
    }

    #[test]
    fn round_trips_every_field() {
        let entries = sample();
        let packed = packed(&entries);
        assert_eq!(packed.len(), 3);
        for (index, entry) in entries.iter().enumerate() {
            assert_eq!(packed.entry(index).as_ref(), Some(entry));
            assert_eq!(packed.name(index), entry.name);
            assert_eq!(packed.attr_path(index), entry.attr_path);
            assert_eq!(packed.system(index), entry.system.as_deref());
            assert_eq!(packed.description(index), entry.description());
            assert_eq!(packed.selection_priority(index), entry.selection_priority());
        }
    }

    #[test]
    fn empty_catalog_packs() {
        let packed = packed(&[]);
        assert!(packed.is_empty());
    }

    #[test]
    fn every_truncation_and_bad_string_is_rejected() {
        let bytes = PackedCatalog::pack(&sample()).expect("packs");
        for cut in 0..bytes.len() {
            assert!(
                PackedCatalog::from_bytes(bytes[..cut].to_vec()).is_none(),
                "cut {cut}"
            );
        }
        let valid = PackedCatalog::from_bytes(bytes.clone()).expect("valid");
        // Break UTF-8 inside the strings section: `é` is two bytes, overwrite the second.
        let range = valid.strings_section();
        let position = bytes[range.clone()]
            .windows(2)
            .position(|pair| pair == [0xc3, 0xa9])
            .expect("é present")
            + range.start
            + 1;
        let mut broken = bytes;
        broken[position] = b'x';
        assert!(PackedCatalog::from_bytes(broken).is_none());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&tail);
            if let Some(packed) = PackedCatalog::from_bytes(bytes) {
                for index in 0..packed.len() {
                    let _ = (packed.name(index), packed.system(index), packed.entry(index));
                }
            }
        }

        #[test]
        fn arbitrary_entries_round_trip(
            names in proptest::collection::vec("[a-zé0-9.+-]{0,12}", 0..20),
            priority in proptest::option::of(any::<i64>()),
        ) {
            let entries: Vec<CatalogEntry> = names
                .iter()
                .enumerate()
                .map(|(index, name)| {
                    let mut meta = Map::new();
                    if let Some(priority) = priority {
                        meta.insert("priority".to_owned(), Value::from(priority));
                    }
                    CatalogEntry {
                        attr_path: format!("p{index}"),
                        name: name.clone(),
                        system: (index % 2 == 0).then(|| "x86_64-linux".to_owned()),
                        output_name: "out".to_owned(),
                        outputs: BTreeMap::from([("out".to_owned(), None)]),
                        meta,
                        trees: if index % 3 == 0 {
                            BTreeMap::from([("out".to_owned(), format!("/channel/{name}"))])
                        } else {
                            BTreeMap::new()
                        },
                    }
                })
                .collect();
            let packed = packed(&entries);
            for (index, entry) in entries.iter().enumerate() {
                let decoded = packed.entry(index);
                prop_assert_eq!(decoded.as_ref(), Some(entry));
            }
        }
    }
}
