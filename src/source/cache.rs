//! A binary cache of parsed catalog files, keyed by the SHA-256 of the file's content.
//!
//! Parsing a 136,000-package `nix-env -qa --json` file costs far more than hashing it, so the
//! parsed entries are kept in a compact binary form under `<root>/nix/var/declenv/cache/`. The
//! key is the content hash, so an edited, touched or copied file can never be served stale
//! entries. A cache file that fails any check (magic, format, hash, truncation) is a miss, never
//! an error: the catalog is parsed again and the cache rewritten.

use crate::model::catalog::CatalogEntry;
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;

/// Identifies the file type; the trailing digits are the encoding version, so a format change
/// simply misses every old cache file.
const MAGIC: &[u8; 16] = b"declenv-catalog2";

/// Serialises entries, prefixed by the content hash they were parsed from.
#[must_use]
pub fn encode(content_hash: &[u8; 32], entries: &[CatalogEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 160 + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(content_hash);
    put_len(&mut out, entries.len());
    for entry in entries {
        put_str(&mut out, &entry.attr_path);
        put_str(&mut out, &entry.name);
        put_option(&mut out, entry.system.as_deref());
        put_str(&mut out, &entry.output_name);
        put_len(&mut out, entry.outputs.len());
        for (output, path) in &entry.outputs {
            put_str(&mut out, output);
            put_option(&mut out, path.as_deref());
        }
        put_map(&mut out, &entry.meta);
    }
    out
}

/// Reads entries back; `None` when the bytes are not a cache of `content_hash`.
#[must_use]
pub fn decode(content_hash: &[u8; 32], bytes: &[u8]) -> Option<Vec<CatalogEntry>> {
    let mut reader = Reader { bytes, position: 0 };
    if reader.take(MAGIC.len())? != MAGIC || reader.take(32)? != content_hash {
        return None;
    }
    let count = reader.len()?;
    // Each entry takes at least a few bytes, so a corrupt count cannot make us over-allocate.
    let mut entries = Vec::with_capacity(count.min(bytes.len() / 8));
    for _ in 0..count {
        let attr_path = reader.string()?;
        let name = reader.string()?;
        let system = reader.option()?;
        let output_name = reader.string()?;
        let mut outputs = BTreeMap::new();
        for _ in 0..reader.len()? {
            let output = reader.string()?;
            outputs.insert(output, reader.option()?);
        }
        let meta = reader.map(0)?;
        entries.push(CatalogEntry {
            attr_path,
            name,
            system,
            output_name,
            outputs,
            meta,
        });
    }
    (reader.position == bytes.len()).then_some(entries)
}

fn put_len(out: &mut Vec<u8>, length: usize) {
    out.extend_from_slice(&(length as u64).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_len(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

fn put_option(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            put_str(out, text);
        }
    }
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

/// A bounds-checked cursor; every read returns `None` past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

/// Nesting deeper than this in meta values is treated as corruption (Nix would overflow its
/// stack long before), which keeps decoding from recursing without bound.
const MAX_DEPTH: usize = 256;

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let end = self.position.checked_add(count)?;
        let slice = self.bytes.get(self.position..end)?;
        self.position = end;
        Some(slice)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.u64()?).ok()
    }

    fn string(&mut self) -> Option<String> {
        let length = self.len()?;
        String::from_utf8(self.take(length)?.to_vec()).ok()
    }

    fn option(&mut self) -> Option<Option<String>> {
        match self.take(1)?[0] {
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
        Some(match self.take(1)?[0] {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => Value::from(i64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            4 => Value::from(self.u64()?),
            5 => Value::Number(Number::from_f64(f64::from_le_bytes(
                self.take(8)?.try_into().ok()?,
            ))?),
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
    use proptest::prelude::*;

    fn sample() -> Vec<CatalogEntry> {
        crate::model::catalog::parse_catalog_json(
            r#"{
              "a": { "name": "a-1", "system": "x86_64-linux", "outputName": "out",
                     "outputs": { "out": "/nix/store/x-a-1", "man": null },
                     "meta": { "d": { "n": [1, -2, 1.5, true, null, "s"] }, "priority": "3" } },
              "b": { "name": "b" }
            }"#,
        )
        .expect("sample parses")
    }

    #[test]
    fn round_trips() {
        let hash = [7u8; 32];
        let entries = sample();
        assert_eq!(decode(&hash, &encode(&hash, &entries)), Some(entries));
    }

    #[test]
    fn other_hash_or_truncation_is_a_miss() {
        let entries = sample();
        let bytes = encode(&[7u8; 32], &entries);
        assert_eq!(decode(&[8u8; 32], &bytes), None);
        for cut in [0, 10, 48, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(decode(&[7u8; 32], &bytes[..cut]), None, "cut at {cut}");
        }
        let mut extended = bytes.clone();
        extended.push(0);
        assert_eq!(decode(&[7u8; 32], &extended), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&[1u8; 32]);
            bytes.extend_from_slice(&tail);
            let _ = decode(&[1u8; 32], &bytes);
        }
    }
}
