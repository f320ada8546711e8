//! Finding references to other store paths in the bytes of a tree.
//!
//! Owns the scan only: given the hash parts of candidate paths, it reports which of them occur
//! anywhere in a byte stream fed in arbitrary chunks. Like Nix, the stream scanned is the
//! tree's archive, so file contents, symlink targets and file names all count. Knows nothing
//! about which paths are valid; the caller supplies the candidates and decides what a match
//! means.

use crate::store::nixbase32;
use crate::store::path::HASH_PART_LEN;
use std::collections::HashSet;
use std::io::{self, Write};

/// A hash part as bytes, the unit of matching.
type HashPart = [u8; HASH_PART_LEN];

/// Scans a byte stream for the hash parts of candidate store paths.
#[derive(Debug, Default)]
pub(crate) struct ReferenceScanner {
    candidates: HashSet<HashPart>,
    found: HashSet<HashPart>,
    /// The last bytes of the stream so far (fewer than a hash part), so that a hash split
    /// across two chunks is still found.
    carry: Vec<u8>,
}

impl ReferenceScanner {
    /// A scanner for these hash parts; strings that are not 32 bytes long can never match and
    /// are dropped.
    pub(crate) fn new<'a>(hash_parts: impl IntoIterator<Item = &'a str>) -> Self {
        let candidates = hash_parts
            .into_iter()
            .filter_map(|hash_part| HashPart::try_from(hash_part.as_bytes()).ok())
            .collect();
        Self {
            candidates,
            ..Self::default()
        }
    }

    /// Feeds the next chunk of the stream.
    pub(crate) fn scan(&mut self, chunk: &[u8]) {
        if self.candidates.is_empty() || chunk.is_empty() {
            return;
        }
        let window = HASH_PART_LEN - 1;
        let had_carry = !self.carry.is_empty();
        let mut seam = std::mem::take(&mut self.carry);
        seam.extend_from_slice(&chunk[..chunk.len().min(window)]);
        if had_carry {
            // Matches that start in the carried bytes end within the first `window` new bytes.
            self.scan_within(&seam);
        }
        self.scan_within(chunk);
        if chunk.len() >= window {
            seam.clear();
            seam.extend_from_slice(&chunk[chunk.len() - window..]);
        } else {
            // `seam` is the old carry followed by the whole chunk.
            let excess = seam.len().saturating_sub(window);
            seam.drain(..excess);
        }
        self.carry = seam;
    }

    /// The hash parts seen so far.
    pub(crate) fn found(&self) -> impl Iterator<Item = String> + '_ {
        self.found
            .iter()
            .map(|hash_part| String::from_utf8_lossy(hash_part).into_owned())
    }

    /// Records every candidate that lies entirely within `bytes`.
    fn scan_within(&mut self, bytes: &[u8]) {
        let mut start = 0;
        while let Some(window) = bytes.get(start..start + HASH_PART_LEN) {
            // Check from the end: a non-digit at offset `i` rules out every window that
            // contains it, so the next possible start is just after it.
            match window.iter().rposition(|byte| !nixbase32::is_digit(*byte)) {
                Some(offset) => start += offset + 1,
                None => {
                    if let Ok(hash_part) = HashPart::try_from(window)
                        && self.candidates.contains(&hash_part)
                    {
                        self.found.insert(hash_part);
                    }
                    start += 1;
                }
            }
        }
    }
}

impl Write for ReferenceScanner {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.scan(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    const FIRST: &str = "bjgn9g9kjn5hwvawjyr1hznvf7yas3fm";
    const SECOND: &str = "dhk7w6n4f529sxfflhk1rn6n517pa8dy";

    fn found_in_chunks(chunks: &[&[u8]]) -> Vec<String> {
        let mut scanner = ReferenceScanner::new([FIRST, SECOND]);
        for chunk in chunks {
            scanner.scan(chunk);
        }
        let mut found: Vec<String> = scanner.found().collect();
        found.sort();
        found
    }

    #[rstest]
    #[case::in_a_path(&["/nix/store/bjgn9g9kjn5hwvawjyr1hznvf7yas3fm-d/bin"], &[FIRST])]
    #[case::bare(&["bjgn9g9kjn5hwvawjyr1hznvf7yas3fm"], &[FIRST])]
    #[case::both(&["dhk7w6n4f529sxfflhk1rn6n517pa8dy bjgn9g9kjn5hwvawjyr1hznvf7yas3fm"], &[FIRST, SECOND])]
    #[case::split(&["xx/bjgn9g9kjn5hw", "vawjyr1hznvf7yas3fm-d"], &[FIRST])]
    #[case::split_in_tiny_chunks(&["bjgn9g9k", "jn5h", "w", "vawjyr1hznvf7y", "as3fm"], &[FIRST])]
    #[case::inside_longer_digit_run(&["00bjgn9g9kjn5hwvawjyr1hznvf7yas3fm00"], &[FIRST])]
    #[case::one_character_short(&["bjgn9g9kjn5hwvawjyr1hznvf7yas3f"], &[])]
    #[case::upper_case(&["BJGN9G9KJN5HWVAWJYR1HZNVF7YAS3FM"], &[])]
    #[case::nothing(&[""], &[])]
    fn finds_hash_parts(#[case] chunks: &[&str], #[case] expected: &[&str]) {
        let chunks: Vec<&[u8]> = chunks.iter().map(|chunk| chunk.as_bytes()).collect();
        assert_eq!(found_in_chunks(&chunks), expected);
    }

    #[test]
    fn no_candidates_finds_nothing() {
        let mut scanner = ReferenceScanner::new([]);
        scanner.scan(FIRST.as_bytes());
        assert_eq!(scanner.found().count(), 0);
    }

    proptest! {
        #[test]
        fn chunking_does_not_change_the_result(
            noise in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'-'), any::<u8>()], 0..200),
            insert_at in any::<prop::sample::Index>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut stream = noise;
            let position = insert_at.index(stream.len() + 1);
            stream.splice(position..position, FIRST.bytes());
            let mut cut_points: Vec<usize> = cuts.iter().map(|cut| cut.index(stream.len() + 1)).collect();
            cut_points.sort_unstable();
            let mut chunks = Vec::new();
            let mut previous = 0;
            for cut in cut_points {
                chunks.push(&stream[previous..cut]);
                previous = cut;
            }
            chunks.push(&stream[previous..]);
            let whole = found_in_chunks(&[&stream]);
            prop_assert!(whole.contains(&FIRST.to_owned()));
            prop_assert_eq!(found_in_chunks(&chunks), whole);
        }
    }
}
