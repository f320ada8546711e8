//! Nix's base-32 encoding of hashes, as it appears in store paths and `sha256:` hash strings.
//!
//! Owns the encoding and decoding only. Pure: no I/O, no knowledge of store paths.
//!
//! The encoding is not RFC 4648 base32, and a standard library would give different strings:
//! the alphabet omits `e`, `o`, `u` and `t` (so hashes cannot spell common words), there is no
//! padding, and the bits are taken from the *end* of the byte string first, so the first
//! character holds the most significant bits of the last byte. A 20-byte digest becomes 32
//! characters, a 32-byte SHA-256 hash 52.

/// The 32 characters of Nix's base-32, in digit order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Marks bytes outside [`ALPHABET`] in [`DIGIT_VALUES`].
const NOT_A_DIGIT: u8 = 0xff;

/// The value of every byte as a digit, built once so decoding and reference scanning are a
/// table lookup per byte.
const DIGIT_VALUES: [u8; 256] = {
    let mut table = [NOT_A_DIGIT; 256];
    let mut index = 0;
    while index < ALPHABET.len() {
        // `index` is below 32, so it fits in a byte.
        table[ALPHABET[index] as usize] = index as u8;
        index += 1;
    }
    table
};

/// A string that is not the Nix base-32 encoding of any byte string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Nixbase32Error {
    /// No byte string encodes to this many characters (for example 33 or 1).
    #[error("invalid Nix base-32 string `{input}`: no hash encodes to {length} characters")]
    InvalidLength {
        /// The string as given.
        input: String,
        /// Its length in bytes.
        length: usize,
    },
    /// A character outside the alphabet `0-9a-z` without `e`, `o`, `u`, `t`.
    #[error(
        "invalid Nix base-32 string `{input}`: {character:?} at byte {position} is not a base-32 digit"
    )]
    InvalidCharacter {
        /// The string as given.
        input: String,
        /// The byte offset of the character.
        position: usize,
        /// The character found there.
        character: char,
    },
    /// The first character carries bits beyond the decoded length; Nix rejects this, because
    /// then two strings would decode to the same hash.
    #[error(
        "invalid Nix base-32 string `{input}`: its first character has bits set beyond the hash"
    )]
    NonZeroPadding {
        /// The string as given.
        input: String,
    },
}

/// The number of characters that encode `byte_length` bytes.
#[must_use]
pub const fn encoded_len(byte_length: usize) -> usize {
    if byte_length == 0 {
        0
    } else {
        (byte_length * 8 - 1) / 5 + 1
    }
}

/// Whether `byte` is one of the 32 digits; used to find candidate hashes in arbitrary bytes.
#[must_use]
pub const fn is_digit(byte: u8) -> bool {
    DIGIT_VALUES[byte as usize] != NOT_A_DIGIT
}

/// Encodes `bytes` in Nix's base-32.
#[must_use]
pub fn encode(bytes: &[u8]) -> String {
    let length = encoded_len(bytes.len());
    let mut encoded = String::with_capacity(length);
    for digit_index in (0..length).rev() {
        let bit = digit_index * 5;
        let byte_index = bit / 8;
        let shift = bit % 8;
        let low = bytes
            .get(byte_index)
            .map_or(0, |byte| u16::from(*byte) >> shift);
        let high = bytes
            .get(byte_index + 1)
            .map_or(0, |byte| u16::from(*byte) << (8 - shift));
        let digit = usize::from((low | high) & 0x1f);
        encoded.push(char::from(ALPHABET[digit]));
    }
    encoded
}

/// Decodes a Nix base-32 string; the length of the result follows from the length of `text`.
pub fn decode(text: &str) -> Result<Vec<u8>, Nixbase32Error> {
    let input = text.as_bytes();
    let byte_length = input.len() * 5 / 8;
    if encoded_len(byte_length) != input.len() {
        return Err(Nixbase32Error::InvalidLength {
            input: text.to_owned(),
            length: input.len(),
        });
    }
    let mut bytes = vec![0_u8; byte_length];
    for (position, character) in input.iter().enumerate() {
        let value = DIGIT_VALUES[usize::from(*character)];
        if value == NOT_A_DIGIT {
            return Err(Nixbase32Error::InvalidCharacter {
                input: text.to_owned(),
                position,
                character: text
                    .get(position..)
                    .and_then(|rest| rest.chars().next())
                    .unwrap_or(char::REPLACEMENT_CHARACTER),
            });
        }
        let digit_index = input.len() - 1 - position;
        let bit = digit_index * 5;
        let byte_index = bit / 8;
        let shift = bit % 8;
        let spread = u16::from(value) << shift;
        // Both halves are truncated to a byte on purpose: the high half belongs to the next byte.
        let [low, high] = spread.to_le_bytes();
        if let Some(byte) = bytes.get_mut(byte_index) {
            *byte |= low;
        }
        if high != 0 {
            match bytes.get_mut(byte_index + 1) {
                Some(byte) => *byte |= high,
                None => {
                    return Err(Nixbase32Error::NonZeroPadding {
                        input: text.to_owned(),
                    });
                }
            }
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    #[rstest]
    #[case::empty(&[], "")]
    #[case::one_zero_byte(&[0], "00")]
    #[case::one_byte(&[0x1f], "0z")]
    #[case::high_bits_of_last_byte_first(&[0xff], "7z")]
    #[case::two_bytes(&[0x01, 0x02], "00h1")]
    fn encodes_small_inputs(#[case] bytes: &[u8], #[case] expected: &str) {
        assert_eq!(encode(bytes), expected);
        assert_eq!(decode(expected).expect("decodes"), bytes);
    }

    /// SHA-256 of a directory as printed by `nix-hash --type sha256` and `--base32` (Nix 2.8).
    #[test]
    fn matches_nix_hash_output() {
        let hex = "e613c5e1477ae722a51fdb6f9f464ebc4bff58df0189f62a81be91cda9d4967c";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|index| u8::from_str_radix(&hex[index..index + 2], 16).expect("hex"))
            .collect();
        let expected = "0z4nsjlwv4dyh4mgd281vxcgyjxw9r39yvyv3yjj5rvs8zhwa4z6";
        assert_eq!(encode(&bytes), expected);
        assert_eq!(decode(expected).expect("decodes"), bytes);
    }

    #[rstest]
    #[case::digest(20, 32)]
    #[case::sha256(32, 52)]
    #[case::sha512(64, 103)]
    #[case::sha1(20, 32)]
    #[case::md5(16, 26)]
    fn lengths_match_nix(#[case] bytes: usize, #[case] characters: usize) {
        assert_eq!(encoded_len(bytes), characters);
    }

    #[rstest]
    #[case::one_character("0")]
    #[case::thirty_three("000000000000000000000000000000000")]
    #[case::three("000")]
    fn rejects_impossible_lengths(#[case] text: &str) {
        assert!(matches!(
            decode(text),
            Err(Nixbase32Error::InvalidLength { .. })
        ));
    }

    #[rstest]
    #[case::letter_e("0e", 1, 'e')]
    #[case::letter_o("o0", 0, 'o')]
    #[case::letter_u("0u", 1, 'u')]
    #[case::letter_t("t0", 0, 't')]
    #[case::upper_case("0A", 1, 'A')]
    #[case::dash("-0", 0, '-')]
    fn rejects_characters_outside_the_alphabet(
        #[case] text: &str,
        #[case] position: usize,
        #[case] character: char,
    ) {
        assert_eq!(
            decode(text),
            Err(Nixbase32Error::InvalidCharacter {
                input: text.to_owned(),
                position,
                character,
            })
        );
    }

    #[test]
    fn rejects_non_ascii_without_panicking() {
        for text in ["é0", "0é", "éé"] {
            assert!(decode(text).is_err(), "{text:?}");
        }
    }

    #[rstest]
    #[case::one_byte("8z")]
    #[case::one_byte_max("zz")]
    #[case::sha256("g000000000000000000000000000000000000000000000000000")]
    fn rejects_bits_beyond_the_hash(#[case] text: &str) {
        assert_eq!(
            decode(text),
            Err(Nixbase32Error::NonZeroPadding {
                input: text.to_owned()
            })
        );
    }

    #[test]
    fn digit_test_agrees_with_alphabet() {
        for byte in 0..=u8::MAX {
            assert_eq!(is_digit(byte), ALPHABET.contains(&byte), "{byte:#x}");
        }
    }

    proptest! {
        #[test]
        fn round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let encoded = encode(&bytes);
            prop_assert_eq!(encoded.len(), encoded_len(bytes.len()));
            prop_assert!(encoded.bytes().all(is_digit));
            prop_assert_eq!(decode(&encoded), Ok(bytes));
        }

        #[test]
        fn decoding_any_string_never_panics_and_reencodes(text in "[0-9a-z]{0,60}|\\PC{0,20}") {
            if let Ok(bytes) = decode(&text) {
                prop_assert_eq!(encode(&bytes), text);
            }
        }
    }
}
