//! Filesystem primitives with the guarantees the rest of declenv relies on.
//!
//! Owns atomic file replacement: a reader sees the old content or the new, never a torn file,
//! and a crash leaves at worst a stray temporary file. Knows nothing about what it writes.

use std::io::{self, Write};
use std::path::Path;

/// Writes `contents` to `path` atomically: a temporary file in the same directory, flushed and
/// synced, then renamed over the target; the directory is synced so the rename is durable.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temporary = tempfile::Builder::new()
        .prefix(".declenv-tmp-")
        .tempfile_in(directory)?;
    temporary.write_all(contents)?;
    temporary.as_file().sync_all()?;
    temporary.persist(path).map_err(|error| error.error)?;
    fs_err::File::open(directory)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_files() {
        let directory = tempfile::tempdir().expect("tempdir");
        let target = directory.path().join("file");
        write_atomic(&target, b"old").expect("first write");
        write_atomic(&target, b"new").expect("second write");
        assert_eq!(fs_err::read(&target).expect("read"), b"new");
        let names: Vec<_> = fs_err::read_dir(directory.path())
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("file")]);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let directory = tempfile::tempdir().expect("tempdir");
        let target = directory.path().join("missing").join("file");
        assert!(write_atomic(&target, b"x").is_err());
    }
}
