//! The on-disk record that makes a store path valid.
//!
//! Owns the format of one registration file and its checks: one JSON file per valid path,
//! `nix/var/declenv/store/valid/<hash>-<name>.json`, with the fields `nix path-info --json`
//! uses (hashes in the `sha256:<nixbase32>` form `nix-store --query --hash` prints). Does no
//! I/O; [`super::EmbeddedStore`] reads and writes the files.

use crate::store::nar::NarDigest;
use crate::store::nixbase32;
use crate::store::path::{StoreDir, StorePath};
use serde::{Deserialize, Serialize};

/// The registration format this code writes and reads.
pub(crate) const FORMAT: u32 = 1;

/// Suffix of registration files.
pub(crate) const SUFFIX: &str = ".json";

/// What the store knows about a valid path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The path.
    pub path: StorePath,
    /// Hash and size of its archive when it was added.
    pub nar: NarDigest,
    /// Other valid paths whose hash parts occur in its archive, sorted; for a path imported
    /// or fetched from elsewhere, the references recorded there.
    pub references: Vec<StorePath>,
    /// The derivation that built it, when it came from a store that records one (Nix's
    /// `deriver`); declenv builds nothing, so its own paths have none.
    pub deriver: Option<StorePath>,
    /// When it became valid, in seconds since the epoch.
    pub registration_time: u64,
}

/// A registration file as stored. Field names follow `nix path-info --json`; unknown fields
/// are ignored so that a later format can add some without breaking this reader.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistrationFile {
    format: u32,
    path: String,
    nar_hash: String,
    nar_size: u64,
    references: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deriver: Option<String>,
    registration_time: u64,
}

/// Serialises a registration: pretty JSON ending in a newline.
pub(crate) fn encode(info: &PathInfo) -> Vec<u8> {
    let file = RegistrationFile {
        format: FORMAT,
        path: info.path.to_string(),
        nar_hash: info.nar.to_nix_string(),
        nar_size: info.nar.size,
        references: info.references.iter().map(ToString::to_string).collect(),
        deriver: info.deriver.as_ref().map(ToString::to_string),
        registration_time: info.registration_time,
    };
    let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Parses a registration for `expected`; the error says what is wrong, for the caller to
/// attach the file's path.
pub(crate) fn decode(
    bytes: &[u8],
    store_dir: &StoreDir,
    expected: &StorePath,
) -> Result<PathInfo, String> {
    let file: RegistrationFile =
        serde_json::from_slice(bytes).map_err(|error| format!("not valid JSON: {error}"))?;
    if file.format != FORMAT {
        return Err(format!(
            "format {} is not supported (this declenv reads format {FORMAT})",
            file.format
        ));
    }
    if file.path != expected.to_string() {
        return Err(format!("it registers `{}`, not `{expected}`", file.path));
    }
    let sha256 = file
        .nar_hash
        .strip_prefix("sha256:")
        .and_then(|encoded| nixbase32::decode(encoded).ok())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| format!("`{}` is not a `sha256:<nixbase32>` hash", file.nar_hash))?;
    let mut references = file
        .references
        .iter()
        .map(|reference| {
            StorePath::from_absolute_path(store_dir.clone(), reference)
                .map_err(|error| format!("reference `{reference}`: {error}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    references.sort();
    references.dedup();
    let deriver = file
        .deriver
        .as_deref()
        .map(|deriver| {
            StorePath::from_absolute_path(store_dir.clone(), deriver)
                .map_err(|error| format!("deriver `{deriver}`: {error}"))
        })
        .transpose()?;
    Ok(PathInfo {
        path: expected.clone(),
        nar: NarDigest {
            sha256,
            size: file.nar_size,
        },
        references,
        deriver,
        registration_time: file.registration_time,
    })
}

/// The registration file name for `path`.
pub(crate) fn file_name(path: &StorePath) -> String {
    format!("{}{SUFFIX}", path.base_name())
}

/// The path a registration names, whatever its store directory, if it reads as one.
pub(crate) fn registered_path(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<RegistrationFile>(bytes)
        .ok()
        .map(|file| file.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_dir() -> StoreDir {
        StoreDir::new("/tmp/root/nix/store").expect("valid")
    }

    fn info() -> PathInfo {
        let path = StorePath::from_base_name(store_dir(), "bjgn9g9kjn5hwvawjyr1hznvf7yas3fm-d")
            .expect("valid");
        let reference =
            StorePath::from_base_name(store_dir(), "dhk7w6n4f529sxfflhk1rn6n517pa8dy-e")
                .expect("valid");
        PathInfo {
            path,
            nar: NarDigest {
                sha256: [7; 32],
                size: 1432,
            },
            references: vec![reference],
            deriver: None,
            registration_time: 1_700_000_000,
        }
    }

    #[test]
    fn round_trips() {
        let info = info();
        let bytes = encode(&info);
        assert_eq!(decode(&bytes, &store_dir(), &info.path), Ok(info));
    }

    #[test]
    fn round_trips_a_deriver() {
        let mut info = info();
        info.deriver = Some(
            StorePath::from_base_name(store_dir(), "43ls1p9j558ycvircc3lma7ak5p5fqqv-d.drv")
                .expect("valid"),
        );
        let bytes = encode(&info);
        assert!(String::from_utf8_lossy(&bytes).contains(
            "\"deriver\": \"/tmp/root/nix/store/43ls1p9j558ycvircc3lma7ak5p5fqqv-d.drv\""
        ));
        assert_eq!(decode(&bytes, &store_dir(), &info.path), Ok(info));
    }

    #[test]
    fn format_is_stable() {
        let text = String::from_utf8(encode(&info())).expect("utf-8");
        insta::assert_snapshot!(text, @r#"
        {
          "format": 1,
          "path": "/tmp/root/nix/store/bjgn9g9kjn5hwvawjyr1hznvf7yas3fm-d",
          "narHash": "sha256:01q70w3hf1q70w3hf1q70w3hf1q70w3hf1q70w3hf1q70w3hf1q7",
          "narSize": 1432,
          "references": [
            "/tmp/root/nix/store/dhk7w6n4f529sxfflhk1rn6n517pa8dy-e"
          ],
          "registrationTime": 1700000000
        }
        "#);
    }

    #[test]
    fn rejects_a_registration_for_another_path() {
        let info = info();
        let other = StorePath::from_base_name(store_dir(), "dhk7w6n4f529sxfflhk1rn6n517pa8dy-e")
            .expect("valid");
        let error = decode(&encode(&info), &store_dir(), &other).expect_err("mismatch");
        assert!(error.contains("registers"), "{error}");
    }

    #[test]
    fn rejects_other_formats_and_garbage() {
        let info = info();
        let text = String::from_utf8(encode(&info))
            .expect("utf-8")
            .replace("\"format\": 1", "\"format\": 2");
        assert!(decode(text.as_bytes(), &store_dir(), &info.path).is_err());
        assert!(decode(b"{", &store_dir(), &info.path).is_err());
        assert!(decode(b"", &store_dir(), &info.path).is_err());
    }
}
