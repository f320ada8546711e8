//! Store paths: `STORE_DIR/<32-character hash part>-<name>`, and how Nix computes them.
//!
//! Owns [`StoreDir`], [`StorePath`], Nix's rules for store path names, and the path of a
//! content-addressed source (what `nix-store --add` prints). Pure: computes from strings and
//! hashes, never looks at the filesystem, so a path can be computed for a store directory
//! that does not exist.

use crate::store::nixbase32::{self, Nixbase32Error};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Bytes in the digest a hash part encodes.
pub const DIGEST_LEN: usize = 20;
/// Characters in the hash part of a store path.
pub const HASH_PART_LEN: usize = nixbase32::encoded_len(DIGEST_LEN);
/// The longest name Nix accepts: 255 (a file name) minus the hash part and the dash, minus
/// 11 bytes Nix keeps in reserve for suffixes such as `.drv` and `.lock`.
pub const MAX_NAME_LEN: usize = 211;

/// A store path or store directory that Nix would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorePathError {
    /// A store directory must be an absolute path.
    #[error("store directory `{path}` is not an absolute path")]
    RelativeStoreDir {
        /// The directory as given.
        path: String,
    },
    /// The path is not directly inside the store directory.
    #[error("path `{path}` is not in the Nix store `{store_dir}`")]
    NotInStore {
        /// The path as given.
        path: String,
        /// The store it was expected in.
        store_dir: String,
    },
    /// The base name is too short to hold a hash part, or has no dash after it.
    #[error("store path `{path}` is not of the form `<32-character hash>-<name>`")]
    Malformed {
        /// The path or base name as given.
        path: String,
    },
    /// The hash part is not 32 Nix base-32 characters.
    #[error("store path `{path}` has an invalid hash part")]
    InvalidHashPart {
        /// The path or base name as given.
        path: String,
        /// Why the hash part does not decode.
        #[source]
        source: Nixbase32Error,
    },
    /// Nix: "store path '…' has an empty name".
    #[error("store path `{path}` has an empty name")]
    EmptyName {
        /// The path or name as given.
        path: String,
    },
    /// Nix: "store path '…' has a name longer than 211 characters".
    #[error("store path `{path}` has a name longer than {MAX_NAME_LEN} characters")]
    NameTooLong {
        /// The path or name as given.
        path: String,
    },
    /// Nix: "store path '…' contains illegal character '…'".
    #[error("store path `{path}` contains illegal character {character:?}")]
    IllegalCharacter {
        /// The path or name as given.
        path: String,
        /// The first character outside `[A-Za-z0-9+-._?=]`.
        character: char,
    },
    /// A name starting with `.`; Nix 2.8 accepts these, declenv does not (see
    /// [`validate_name`]).
    #[error("store path `{path}` has a name starting with `.`")]
    LeadingDot {
        /// The path or name as given.
        path: String,
    },
}

impl StorePathError {
    /// A hint for the user, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::IllegalCharacter { .. } | Self::LeadingDot { .. } | Self::EmptyName { .. } => {
                Some(
                    "a store name uses only `A-Z a-z 0-9 + - . _ ? =` and does not start with `.`"
                        .to_owned(),
                )
            }
            Self::NameTooLong { .. } => {
                Some(format!("shorten the name to {MAX_NAME_LEN} characters"))
            }
            Self::RelativeStoreDir { .. }
            | Self::NotInStore { .. }
            | Self::Malformed { .. }
            | Self::InvalidHashPart { .. } => None,
        }
    }
}

/// A store directory in Nix's canonical form: absolute, no `.` or `..` components, no repeated
/// or trailing slashes. The string is part of every path hash, so two spellings of the same
/// directory must become one string before hashing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreDir(Arc<str>);

impl StoreDir {
    /// Canonicalises `path` lexically, as Nix does with `NIX_STORE_DIR`: symlinks are not
    /// resolved (the directory need not exist), `..` removes the previous component.
    pub fn new(path: &str) -> Result<Self, StorePathError> {
        if !path.starts_with('/') {
            return Err(StorePathError::RelativeStoreDir {
                path: path.to_owned(),
            });
        }
        let mut components: Vec<&str> = Vec::new();
        for component in path.split('/') {
            match component {
                "" | "." => {}
                ".." => {
                    components.pop();
                }
                other => components.push(other),
            }
        }
        let mut canonical = String::with_capacity(path.len());
        for component in &components {
            canonical.push('/');
            canonical.push_str(component);
        }
        if canonical.is_empty() {
            canonical.push('/');
        }
        Ok(Self(canonical.into()))
    }

    /// The canonical directory string, as hashed.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StoreDir {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// A path directly inside a store directory, named by a 20-byte digest and a validated name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    store_dir: StoreDir,
    digest: [u8; DIGEST_LEN],
    name: String,
}

impl StorePath {
    /// A store path from its parts; fails on a name Nix would refuse.
    pub fn from_digest(
        store_dir: StoreDir,
        digest: [u8; DIGEST_LEN],
        name: &str,
    ) -> Result<Self, StorePathError> {
        validate_name(name)?;
        Ok(Self {
            store_dir,
            digest,
            name: name.to_owned(),
        })
    }

    /// Parses a base name `<hash part>-<name>` such as a store directory entry.
    pub fn from_base_name(store_dir: StoreDir, base_name: &str) -> Result<Self, StorePathError> {
        let malformed = || StorePathError::Malformed {
            path: base_name.to_owned(),
        };
        let hash_part = base_name.get(..HASH_PART_LEN).ok_or_else(malformed)?;
        let name = base_name
            .get(HASH_PART_LEN..)
            .and_then(|rest| rest.strip_prefix('-'))
            .ok_or_else(malformed)?;
        let decoded =
            nixbase32::decode(hash_part).map_err(|source| StorePathError::InvalidHashPart {
                path: base_name.to_owned(),
                source,
            })?;
        let digest: [u8; DIGEST_LEN] = decoded.try_into().map_err(|_| malformed())?;
        validate_name_of(name, base_name)?;
        Ok(Self {
            store_dir,
            digest,
            name: name.to_owned(),
        })
    }

    /// Parses an absolute path directly inside `store_dir`, such as `/nix/store/<hash>-hello`.
    pub fn from_absolute_path(store_dir: StoreDir, path: &str) -> Result<Self, StorePathError> {
        let base_name = path
            .strip_prefix(store_dir.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|base_name| !base_name.contains('/'))
            .ok_or_else(|| StorePathError::NotInStore {
                path: path.to_owned(),
                store_dir: store_dir.as_str().to_owned(),
            })?;
        Self::from_base_name(store_dir, base_name).map_err(|error| match error {
            StorePathError::Malformed { .. } => StorePathError::Malformed {
                path: path.to_owned(),
            },
            other => other,
        })
    }

    /// The store directory this path lives in.
    #[must_use]
    pub fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// The digest the hash part encodes.
    #[must_use]
    pub fn digest(&self) -> &[u8; DIGEST_LEN] {
        &self.digest
    }

    /// The 32-character hash part, the path's identity within its store.
    #[must_use]
    pub fn hash_part(&self) -> String {
        nixbase32::encode(&self.digest)
    }

    /// The name after the hash part.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<hash part>-<name>`: the entry in the store directory.
    #[must_use]
    pub fn base_name(&self) -> String {
        format!("{}-{}", self.hash_part(), self.name)
    }

    /// The absolute path on disk.
    #[must_use]
    pub fn to_path_buf(&self) -> PathBuf {
        PathBuf::from(self.to_string())
    }
}

impl fmt::Display for StorePath {
    /// Prints the absolute path exactly as Nix does: store directory, `/`, base name (so a
    /// store directory of `/` gives `//<hash>-<name>`, as in Nix).
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.store_dir, self.base_name())
    }
}

/// Checks a store path name against Nix's rules: 1 to 211 characters from
/// `[A-Za-z0-9+-._?=]`.
///
/// One rule is declenv's own: a name must not start with `.`. Nix 2.8 accepts `.hidden`, `.`
/// and `..` (later versions refuse `.` and `..`); declenv refuses them all, so that a store
/// entry can never be mistaken for a hidden file, `.` or `..`, and so that its own temporary
/// entries (which start with `.`) can never collide with a store path.
pub fn validate_name(name: &str) -> Result<(), StorePathError> {
    validate_name_of(name, name)
}

/// [`validate_name`], reporting errors against `path` (the whole path or base name).
fn validate_name_of(name: &str, path: &str) -> Result<(), StorePathError> {
    let path = || path.to_owned();
    if name.is_empty() {
        return Err(StorePathError::EmptyName { path: path() });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong { path: path() });
    }
    if let Some(character) = name
        .chars()
        .find(|character| !is_name_character(*character))
    {
        return Err(StorePathError::IllegalCharacter {
            path: path(),
            character,
        });
    }
    if name.starts_with('.') {
        return Err(StorePathError::LeadingDot { path: path() });
    }
    Ok(())
}

/// Whether Nix allows `character` in a store path name.
fn is_name_character(character: char) -> bool {
    character.is_ascii_alphanumeric() || "+-._?=".contains(character)
}

/// XOR-folds a hash to `DIGEST_LEN` bytes, as Nix's `compressHash` does: byte `i` of the input
/// goes into byte `i mod 20` of the output.
#[must_use]
pub fn fold_digest(hash: &[u8]) -> [u8; DIGEST_LEN] {
    let mut folded = [0_u8; DIGEST_LEN];
    for (index, byte) in hash.iter().enumerate() {
        folded[index % DIGEST_LEN] ^= byte;
    }
    folded
}

/// The path of a content-addressed source with no references, as `nix-store --add` and
/// `nix-store --print-fixed-path --recursive sha256` compute it: the SHA-256 of
/// `source:sha256:<hex NAR hash>:<store dir>:<name>`, folded to 20 bytes.
///
/// The store directory string is part of the hash, so the same tree has different paths in
/// different stores.
pub fn source_store_path(
    store_dir: &StoreDir,
    nar_sha256: &[u8; 32],
    name: &str,
) -> Result<StorePath, StorePathError> {
    validate_name(name)?;
    let fingerprint = format!(
        "source:sha256:{}:{}:{}",
        hex(nar_sha256),
        store_dir.as_str(),
        name
    );
    let digest = fold_digest(&Sha256::digest(fingerprint.as_bytes()));
    StorePath::from_digest(store_dir.clone(), digest, name)
}

/// Lower-case hexadecimal, as Nix prints base-16 hashes.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    fn store_dir(path: &str) -> StoreDir {
        StoreDir::new(path).expect("valid store dir")
    }

    fn sha256_from_hex(text: &str) -> [u8; 32] {
        let bytes: Vec<u8> = (0..text.len())
            .step_by(2)
            .map(|index| u8::from_str_radix(&text[index..index + 2], 16).expect("hex"))
            .collect();
        bytes.try_into().expect("32 bytes")
    }

    /// Each row is `nix-store --print-fixed-path --recursive sha256 <hash> d` with
    /// `NIX_STORE_DIR` set to the first column (Nix 2.8), for the NAR hash
    /// `0z4nsjlwv4dyh4mgd281vxcgyjxw9r39yvyv3yjj5rvs8zhwa4z6`.
    #[rstest]
    #[case::default("/nix/store", "/nix/store/bjgn9g9kjn5hwvawjyr1hznvf7yas3fm-d")]
    #[case::other("/tmp/dcx/a", "/tmp/dcx/a/dhk7w6n4f529sxfflhk1rn6n517pa8dy-d")]
    #[case::space(
        "/tmp/dcx/with space/store",
        "/tmp/dcx/with space/store/0nf6m12dgjnh87bsw798g2rh8hnb5a8p-d"
    )]
    #[case::trailing_slash(
        "/tmp/dcx/trailing/",
        "/tmp/dcx/trailing/98khgb5wyfvkxmkqmnfd7y97i726pp3h-d"
    )]
    #[case::double_slash(
        "/tmp/dcx//double",
        "/tmp/dcx/double/ai5lm47bndvyhrcsar3i0pms51bxx3ci-d"
    )]
    #[case::dot(
        "/tmp/dcx/dot/./x",
        "/tmp/dcx/dot/x/fhflpfkffzdszp5knh3022m3f8vvms3m-d"
    )]
    #[case::dot_dot("/tmp/dcx/up/../y", "/tmp/dcx/y/99jsx642j97kcla2hcqzalwagrpfq188-d")]
    #[case::trailing_dot_dot("/tmp/dcx/a/..", "/tmp/dcx/yz434rfyqi63kz4779p8zf0mch09hx5h-d")]
    #[case::root("/", "//3ijqmq8dwfjzdq7sp69ffjn32xd3v55i-d")]
    fn source_paths_match_nix(#[case] directory: &str, #[case] expected: &str) {
        let nar_hash =
            sha256_from_hex("e613c5e1477ae722a51fdb6f9f464ebc4bff58df0189f62a81be91cda9d4967c");
        let path = source_store_path(&store_dir(directory), &nar_hash, "d").expect("valid");
        assert_eq!(path.to_string(), expected);
    }

    #[rstest]
    #[case::plain("hello-2.12.1")]
    #[case::all_punctuation("x?=+_.-")]
    #[case::leading_dash("-lead")]
    #[case::question_mark("?")]
    #[case::equals("=")]
    #[case::inner_dots("a..b")]
    #[case::longest(&"a".repeat(MAX_NAME_LEN))]
    fn accepts_names_nix_accepts(#[case] name: &str) {
        assert_eq!(validate_name(name), Ok(()));
    }

    #[rstest]
    #[case::empty("", StorePathError::EmptyName { path: String::new() })]
    #[case::space("a b", StorePathError::IllegalCharacter { path: "a b".into(), character: ' ' })]
    #[case::slash("a/b", StorePathError::IllegalCharacter { path: "a/b".into(), character: '/' })]
    #[case::non_ascii("é", StorePathError::IllegalCharacter { path: "é".into(), character: 'é' })]
    #[case::hidden(".hidden", StorePathError::LeadingDot { path: ".hidden".into() })]
    #[case::dot(".", StorePathError::LeadingDot { path: ".".into() })]
    #[case::dot_dot("..", StorePathError::LeadingDot { path: "..".into() })]
    fn rejects_names(#[case] name: &str, #[case] expected: StorePathError) {
        assert_eq!(validate_name(name), Err(expected));
    }

    #[test]
    fn rejects_names_longer_than_211() {
        let name = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            validate_name(&name),
            Err(StorePathError::NameTooLong { path: name.clone() })
        );
    }

    #[test]
    fn parses_absolute_paths() {
        let directory = store_dir("/nix/store");
        let path = StorePath::from_absolute_path(
            directory.clone(),
            "/nix/store/bjgn9g9kjn5hwvawjyr1hznvf7yas3fm-d",
        )
        .expect("valid");
        assert_eq!(path.hash_part(), "bjgn9g9kjn5hwvawjyr1hznvf7yas3fm");
        assert_eq!(path.name(), "d");
        assert_eq!(path.store_dir(), &directory);
        assert_eq!(
            path.to_path_buf(),
            PathBuf::from("/nix/store/bjgn9g9kjn5hwvawjyr1hznvf7yas3fm-d")
        );
    }

    #[rstest]
    #[case::other_store("/gnu/store/bjgn9g9kjn5hwvawjyr1hznvf7yas3fm-d")]
    #[case::nested("/nix/store/bjgn9g9kjn5hwvawjyr1hznvf7yas3fm-d/bin")]
    #[case::prefix_only("/nix/storeX/bjgn9g9kjn5hwvawjyr1hznvf7yas3fm-d")]
    fn rejects_paths_outside_the_store(#[case] path: &str) {
        assert!(matches!(
            StorePath::from_absolute_path(store_dir("/nix/store"), path),
            Err(StorePathError::NotInStore { .. })
        ));
    }

    #[rstest]
    #[case::short("bjgn9g9k-d")]
    #[case::no_dash("bjgn9g9kjn5hwvawjyr1hznvf7yas3fmXd")]
    #[case::hash_only("bjgn9g9kjn5hwvawjyr1hznvf7yas3fm")]
    #[case::non_ascii_in_hash(&format!("a{}-d", "é".repeat(16)))]
    fn rejects_malformed_base_names(#[case] base_name: &str) {
        assert!(matches!(
            StorePath::from_base_name(store_dir("/nix/store"), base_name),
            Err(StorePathError::Malformed { .. })
        ));
    }

    #[test]
    fn rejects_invalid_hash_parts() {
        assert!(matches!(
            StorePath::from_base_name(
                store_dir("/nix/store"),
                "ejgn9g9kjn5hwvawjyr1hznvf7yas3fm-d"
            ),
            Err(StorePathError::InvalidHashPart { .. })
        ));
    }

    #[test]
    fn rejects_relative_store_dirs() {
        assert!(matches!(
            StoreDir::new("relative/x"),
            Err(StorePathError::RelativeStoreDir { .. })
        ));
    }

    #[test]
    fn folds_like_compress_hash() {
        let hash: Vec<u8> = (0..32).collect();
        let folded = fold_digest(&hash);
        for (index, byte) in folded.iter().enumerate() {
            let expected = hash
                .get(index + DIGEST_LEN)
                .map_or(hash[index], |high| hash[index] ^ high);
            assert_eq!(*byte, expected, "byte {index}");
        }
    }

    proptest! {
        #[test]
        fn base_names_round_trip(digest in any::<[u8; DIGEST_LEN]>(), name in "[A-Za-z0-9+\\-_?=][A-Za-z0-9+\\-._?=]{0,40}") {
            let directory = store_dir("/nix/store");
            let path = StorePath::from_digest(directory.clone(), digest, &name).expect("valid name");
            let parsed = StorePath::from_absolute_path(directory, &path.to_string()).expect("parses");
            prop_assert_eq!(parsed, path);
        }

        #[test]
        fn parsing_any_base_name_never_panics(base_name in "\\PC{0,50}") {
            let _ = StorePath::from_base_name(store_dir("/nix/store"), &base_name);
        }

        #[test]
        fn canonical_store_dirs_are_fixed_points(path in "/[a-z./]{0,20}") {
            let once = store_dir(&path);
            prop_assert_eq!(store_dir(once.as_str()), once);
        }
    }
}
