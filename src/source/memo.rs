//! A memo from a catalog file's identity to the SHA-256 of its content.
//!
//! Hashing a 65 MB catalog costs more than the rest of a query, so the content hash is
//! remembered per path together with the file's identity: device, inode, size, and modification
//! and change times in nanoseconds. The change time cannot be set by users, and every write
//! moves it, so an unchanged identity means unchanged content, with one exception the memo
//! guards against the way git guards its index: a write within the same clock tick as the
//! hashed version may keep every timestamp. A memo is therefore trusted only when it was
//! recorded more than [`RACY_WINDOW`] after the file last changed; otherwise the file is hashed
//! again (and the memo refreshed, so a later query can trust it).

use crate::store::path::hex;
use sha2::{Digest, Sha256};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long after its last change a file must have been hashed for the memo to be trusted.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// The identity fields, in the order they are written.
fn identity(metadata: &Metadata) -> [i128; 5] {
    [
        i128::from(metadata.dev()),
        i128::from(metadata.ino()),
        i128::from(metadata.size()),
        i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec()),
        i128::from(metadata.ctime()) * 1_000_000_000 + i128::from(metadata.ctime_nsec()),
    ]
}

fn memo_file(directory: &Path, path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    let key: [u8; 32] = Sha256::digest(absolute.as_os_str().as_encoded_bytes()).into();
    Some(directory.join("memo").join(hex(&key)))
}

/// The remembered content hash of `path`, if the memo exists and can be trusted.
pub(super) fn lookup(directory: &Path, path: &Path, metadata: &Metadata) -> Option<[u8; 32]> {
    let text = std::fs::read_to_string(memo_file(directory, path)?).ok()?;
    let mut fields = text.split_whitespace();
    if fields.next()? != "v1" {
        return None;
    }
    let mut recorded_identity = [0i128; 5];
    for slot in &mut recorded_identity {
        *slot = fields.next()?.parse().ok()?;
    }
    let recorded_at: i128 = fields.next()?.parse().ok()?;
    let hash_hex = fields.next()?;
    let current = identity(metadata);
    let last_change = current[3].max(current[4]);
    if recorded_identity != current || recorded_at <= last_change + RACY_WINDOW.as_nanos() as i128 {
        return None;
    }
    let mut hash = [0u8; 32];
    if hash_hex.len() != 64 {
        return None;
    }
    for (index, slot) in hash.iter_mut().enumerate() {
        *slot = u8::from_str_radix(hash_hex.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(hash)
}

/// Remembers that `path`, as described by `metadata`, has `content_hash`. Best effort.
pub(super) fn record(directory: &Path, path: &Path, metadata: &Metadata, content_hash: &[u8; 32]) {
    let Some(file) = memo_file(directory, path) else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as i128);
    let [dev, ino, size, mtime, ctime] = identity(metadata);
    let line = format!(
        "v1 {dev} {ino} {size} {mtime} {ctime} {now} {}\n",
        hex(content_hash)
    );
    let _ = file
        .parent()
        .map(fs_err::create_dir_all)
        .transpose()
        .and_then(|_| crate::fs::write_atomic(&file, line.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_files_are_not_trusted_old_ones_are() {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = directory.path().join("catalog.json");
        fs_err::write(&file, "{}").expect("write");
        let metadata = std::fs::metadata(&file).expect("stat");
        let hash = [9u8; 32];
        // Just written: inside the racy window, so the memo must not be trusted.
        record(directory.path(), &file, &metadata, &hash);
        assert_eq!(lookup(directory.path(), &file, &metadata), None);

        // Pretend the memo was recorded long after the last change.
        let memo = memo_file(directory.path(), &file).expect("memo path");
        let text = fs_err::read_to_string(&memo).expect("memo");
        let mut fields: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        fields[6] = (identity(&metadata)[4] + 10 * 1_000_000_000).to_string();
        fs_err::write(&memo, fields.join(" ")).expect("rewrite memo");
        assert_eq!(lookup(directory.path(), &file, &metadata), Some(hash));

        // Any change of identity (here: size) invalidates it.
        fs_err::write(&file, "{ }").expect("rewrite");
        let changed = std::fs::metadata(&file).expect("stat");
        assert_eq!(lookup(directory.path(), &file, &changed), None);
    }

    #[test]
    fn garbage_memo_is_ignored() {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = directory.path().join("catalog.json");
        fs_err::write(&file, "{}").expect("write");
        let metadata = std::fs::metadata(&file).expect("stat");
        let memo = memo_file(directory.path(), &file).expect("memo path");
        fs_err::create_dir_all(memo.parent().expect("parent")).expect("mkdir");
        for garbage in [
            "",
            "v1",
            "v2 1 2 3 4 5 6 x",
            "v1 a b c d e f g",
            "v1 1 2 3 4 5 6 zz",
        ] {
            fs_err::write(&memo, garbage).expect("write memo");
            assert_eq!(
                lookup(directory.path(), &file, &metadata),
                None,
                "{garbage:?}"
            );
        }
    }
}
