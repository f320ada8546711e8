//! Nix's version ordering and derivation-name splitting, byte for byte as Nix 2.8 does them.
//!
//! This module owns `compareVersions`, `splitVersion` and `DrvName` (Nix `names.cc`). Every later
//! decision that picks "the newest" package goes through here, so the rules are reproduced
//! exactly, quirks included: components are compared as *signed 32-bit* integers (a component
//! above 2147483647 becomes a word and sorts below every number), `pre` sorts below a missing
//! component, and a name splits at the first dash followed by anything but an ASCII letter.
//!
//! Pure: no I/O, no allocation beyond the returned values.

use std::cmp::Ordering;
use std::fmt;

/// Returns the next version component starting at `*position`, advancing the cursor.
///
/// Separators (`.` and `-`) are skipped first; at the end of the input the empty component is
/// returned, which is how Nix pads the shorter of two versions (`nextComponent`).
fn next_component<'a>(bytes: &'a [u8], position: &mut usize) -> &'a [u8] {
    while *position < bytes.len() && matches!(bytes[*position], b'.' | b'-') {
        *position += 1;
    }
    let start = *position;
    if start == bytes.len() {
        return &bytes[start..];
    }
    if bytes[start].is_ascii_digit() {
        while *position < bytes.len() && bytes[*position].is_ascii_digit() {
            *position += 1;
        }
    } else {
        while *position < bytes.len() && !matches!(bytes[*position], b'0'..=b'9' | b'.' | b'-') {
            *position += 1;
        }
    }
    &bytes[start..*position]
}

/// Parses a component the way Nix's `string2Int<int>` does: a non-empty run of ASCII digits
/// (leading zeros allowed) whose value fits in a signed 32-bit integer.
fn component_as_int(component: &[u8]) -> Option<i32> {
    if component.is_empty() || !component.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut value: i64 = 0;
    for digit in component {
        value = value * 10 + i64::from(digit - b'0');
        if value > i64::from(i32::MAX) {
            return None;
        }
    }
    i32::try_from(value).ok()
}

/// Nix's `componentsLT`: the order of two single components.
fn component_less_than(left: &[u8], right: &[u8]) -> bool {
    let left_int = component_as_int(left);
    let right_int = component_as_int(right);
    match (left_int, right_int) {
        (Some(l), Some(r)) => l < r,
        _ if left.is_empty() && right_int.is_some() => true,
        _ if left == b"pre" && right != b"pre" => true,
        _ if right == b"pre" => false,
        (_, Some(_)) => true,
        (Some(_), _) => false,
        // Bytewise, unsigned; the empty component is below every non-empty word.
        _ => left < right,
    }
}

/// Compares two version strings exactly as Nix 2.8's `compareVersions` does.
///
/// The result is a total *preorder*: distinct strings may compare equal (`"1.0"` and `"1-0"`,
/// `"01"` and `"1"`). Use [`Version`] when an order that agrees with equality is needed.
#[must_use]
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    compare_version_bytes(a.as_bytes(), b.as_bytes())
}

/// [`compare_versions`] on raw bytes; Nix strings are byte strings and so are its components.
#[must_use]
pub fn compare_version_bytes(a: &[u8], b: &[u8]) -> Ordering {
    let (mut position_a, mut position_b) = (0, 0);
    while position_a < a.len() || position_b < b.len() {
        let component_a = next_component(a, &mut position_a);
        let component_b = next_component(b, &mut position_b);
        if component_less_than(component_a, component_b) {
            return Ordering::Less;
        }
        if component_less_than(component_b, component_a) {
            return Ordering::Greater;
        }
    }
    Ordering::Equal
}

/// Splits a version into its components, as `builtins.splitVersion` does: separators are
/// dropped, digit and non-digit runs become separate components, nothing is normalised.
#[must_use]
pub fn split_version(version: &str) -> Vec<&str> {
    let bytes = version.as_bytes();
    let mut position = 0;
    let mut components = Vec::new();
    loop {
        let start_search = position;
        let component = next_component(bytes, &mut position);
        if component.is_empty() {
            return components;
        }
        // Components start and end on ASCII boundaries (digits, `.`, `-`) or at the ends of the
        // string, so slicing the `&str` at these offsets always lands on char boundaries.
        let end = position;
        let start = end - component.len();
        debug_assert!(start >= start_search);
        components.push(&version[start..end]);
    }
}

/// A version string ordered by Nix's rules, with ties broken on the raw bytes so that `Ord`
/// agrees with `Eq` (`1.0` and `1-0` are Nix-equal but different values).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Version(String);

impl Version {
    /// Wraps a version string; every string is a valid Nix version.
    #[must_use]
    pub fn new(version: impl Into<String>) -> Self {
        Self(version.into())
    }

    /// The version exactly as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The order Nix uses, without the tie-break: `Equal` for `1.0` against `1-0`.
    #[must_use]
    pub fn nix_cmp(&self, other: &Self) -> Ordering {
        compare_versions(&self.0, &other.0)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nix_cmp(other).then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl From<&str> for Version {
    fn from(version: &str) -> Self {
        Self::new(version)
    }
}

/// A derivation name split into package name and version (Nix `DrvName`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DrvName {
    /// The package name: everything before the first dash that is followed by a non-letter.
    pub name: String,
    /// The version: everything after that dash, or empty when there is no such dash.
    pub version: String,
}

impl DrvName {
    /// Splits `full_name` at the first `-` followed by a byte that is not an ASCII letter.
    ///
    /// Nix documents "followed by a digit", but the code tests `!isalpha`, so `foo-_bar`,
    /// `foo-.1` and `foo-é-1` all split; a trailing dash never does.
    #[must_use]
    pub fn parse(full_name: &str) -> Self {
        let (name, version) = split_drv_name(full_name);
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
        }
    }

    /// The full name again: `name-version`, or just `name` when there is no version.
    #[must_use]
    pub fn full_name(&self) -> String {
        if self.version.is_empty() {
            self.name.clone()
        } else {
            format!("{}-{}", self.name, self.version)
        }
    }
}

/// The borrowing core of [`DrvName::parse`]: `(name, version)` slices of `full_name`.
#[must_use]
pub fn split_drv_name(full_name: &str) -> (&str, &str) {
    let bytes = full_name.as_bytes();
    for index in 0..bytes.len() {
        if bytes[index] == b'-'
            && index + 1 < bytes.len()
            && !bytes[index + 1].is_ascii_alphabetic()
        {
            // The dash is ASCII, so both slices start and end on char boundaries.
            return (&full_name[..index], &full_name[index + 1..]);
        }
    }
    (full_name, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    /// The comparison table of the reference (every row verified with Nix 2.8), both directions.
    #[rstest]
    #[case("1.0", "2.3", -1)]
    #[case("2.1", "2.3", -1)]
    #[case("2.3", "2.3", 0)]
    #[case("2.5", "2.3", 1)]
    #[case("3.1", "2.3", 1)]
    #[case("2.3.1", "2.3", 1)]
    #[case("2.3.1", "2.3a", 1)]
    #[case("2.3pre1", "2.3", -1)]
    #[case("2.3pre3", "2.3pre12", -1)]
    #[case("2.3a", "2.3c", -1)]
    #[case("2.3pre1", "2.3c", -1)]
    #[case("2.3pre1", "2.3q", -1)]
    #[case("1.0", "1.0.0", -1)]
    #[case("2.3.0", "2.3", 1)]
    #[case("1.2.3", "1.2.3.0.0", -1)]
    #[case("1.0a", "1.0", 1)]
    #[case("2.3-beta", "2.3", 1)]
    #[case("2.3beta", "2.3", 1)]
    #[case("1.0rc1", "1.0", 1)]
    #[case("1.0-rc1", "1.0", 1)]
    #[case("1.0pre", "1.0", -1)]
    #[case("1.0-pre", "1.0", -1)]
    #[case("1.0prerelease", "1.0", 1)]
    #[case("1.0pre1", "1.0pre", 1)]
    #[case("1.0pre", "1.0prepre", -1)]
    #[case("1.0alpha", "1.0beta", -1)]
    #[case("1.0.a", "1.0.1", -1)]
    #[case("a", "1", -1)]
    #[case("A", "a", -1)]
    #[case("B", "a", -1)]
    #[case("é", "z", 1)]
    #[case("01", "1", 0)]
    #[case("001.002", "1.2", 0)]
    #[case("1.01", "1.1", 0)]
    #[case("1.10", "1.9", 1)]
    #[case("10", "9", 1)]
    #[case("", "1", -1)]
    #[case("", "", 0)]
    #[case("", "a", -1)]
    #[case("", "pre", 1)]
    #[case("0", "", 1)]
    #[case("0.0.0", "", 1)]
    #[case("pre", "a", -1)]
    #[case("pre", "0", -1)]
    #[case("pre", "pre", 0)]
    #[case("1pre", "1", -1)]
    #[case("1-pre", "1.pre", 0)]
    #[case("1.0pre", "1.0-1", -1)]
    #[case("1.0.0", "1.0.0pre", 1)]
    #[case("1.0", "1.0pre1", 1)]
    #[case("1.0", "1-0", 0)]
    #[case("1..0", "1.0", 0)]
    #[case("1.0.", "1.0", 0)]
    #[case("1.0-", "1.0", 0)]
    #[case(".1", "1", 0)]
    #[case("-1", "1", 0)]
    #[case("1_0", "1.0", -1)]
    #[case("1_0", "1", 1)]
    #[case("1+git", "1", 1)]
    #[case("1.0+git", "1.0.1", -1)]
    #[case("1.0~rc1", "1.0", 1)]
    #[case("1.0_rc1", "1.0", 1)]
    #[case("r10", "r9", 1)]
    #[case("v1.2", "1.2", -1)]
    #[case("1.2", "v1.3", 1)]
    #[case("unstable-2020-01-01", "1.0", -1)]
    #[case("2020-01-01", "1.0", 1)]
    #[case("1.0 ", "1.0", 1)]
    #[case("2147483647", "2147483646", 1)]
    #[case("2147483648", "2147483647", -1)]
    #[case("2147483648", "1", -1)]
    #[case("99999999999", "100000000000", 1)]
    #[case("2147483648", "a", -1)]
    #[case("2147483648", "", 1)]
    fn compare_versions_matches_nix_table(#[case] a: &str, #[case] b: &str, #[case] expected: i8) {
        let expected = expected.cmp(&0);
        assert_eq!(compare_versions(a, b), expected, "{a:?} vs {b:?}");
        assert_eq!(compare_versions(b, a), expected.reverse(), "{b:?} vs {a:?}");
    }

    #[rstest]
    #[case("1.2.3", &["1", "2", "3"])]
    #[case("", &[])]
    #[case("...", &[])]
    #[case("1..2", &["1", "2"])]
    #[case("-1", &["1"])]
    #[case("2.3pre1", &["2", "3", "pre", "1"])]
    #[case("1.0-beta2", &["1", "0", "beta", "2"])]
    #[case("foo-1.2", &["foo", "1", "2"])]
    #[case("1_0", &["1", "_", "0"])]
    #[case("1.0+git.20200101", &["1", "0", "+git", "20200101"])]
    #[case("a b", &["a b"])]
    #[case("01.002", &["01", "002"])]
    #[case("1.0 ", &["1", "0", " "])]
    #[case("1.0~rc1", &["1", "0", "~rc", "1"])]
    #[case("v1.2", &["v", "1", "2"])]
    #[case("1.2.3git", &["1", "2", "3", "git"])]
    fn split_version_matches_nix(#[case] input: &str, #[case] expected: &[&str]) {
        assert_eq!(split_version(input), expected);
    }

    #[rstest]
    #[case("hello-1.0.2", "hello", "1.0.2")]
    #[case("hello", "hello", "")]
    #[case("foo-bar-1.2", "foo-bar", "1.2")]
    #[case("foo-1.2-bar", "foo", "1.2-bar")]
    #[case("firefox-3.0.1-beta", "firefox", "3.0.1-beta")]
    #[case("x-2-y", "x", "2-y")]
    #[case("a-", "a-", "")]
    #[case("a--1", "a", "-1")]
    #[case("-1", "", "1")]
    #[case("-", "-", "")]
    #[case("", "", "")]
    #[case("foo-_bar", "foo", "_bar")]
    #[case("foo-.1", "foo", ".1")]
    #[case("foo-Bar-1", "foo-Bar", "1")]
    #[case("foo-bar", "foo-bar", "")]
    #[case("foo- 1", "foo", " 1")]
    #[case("foo-é-1", "foo", "é-1")]
    #[case("foo-+1", "foo", "+1")]
    #[case("915resolution-0.5.2", "915resolution", "0.5.2")]
    #[case("xf86-video-i810-1.7.4", "xf86-video-i810", "1.7.4")]
    #[case("nix-0.12pre12876", "nix", "0.12pre12876")]
    #[case("foo-unstable-2020-01-01", "foo-unstable", "2020-01-01")]
    #[case("unstable-2020", "unstable", "2020")]
    #[case("name-that-ends-with-dash--1.0", "name-that-ends-with-dash", "-1.0")]
    #[case("gtk+-2.0", "gtk+", "2.0")]
    #[case("a-b-c-1234pre5+git", "a-b-c", "1234pre5+git")]
    fn drv_name_matches_nix(#[case] full: &str, #[case] name: &str, #[case] version: &str) {
        let parsed = DrvName::parse(full);
        assert_eq!(
            (parsed.name.as_str(), parsed.version.as_str()),
            (name, version)
        );
    }

    fn version_strategy() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[0-9a-z.\\-_+pre ]{0,12}").expect("valid strategy regex")
    }

    proptest! {
        #[test]
        fn compare_is_antisymmetric(a in version_strategy(), b in version_strategy()) {
            prop_assert_eq!(compare_versions(&a, &b), compare_versions(&b, &a).reverse());
        }

        #[test]
        fn compare_is_reflexive(a in version_strategy()) {
            prop_assert_eq!(compare_versions(&a, &a), Ordering::Equal);
        }

        #[test]
        fn compare_is_transitive(
            a in version_strategy(), b in version_strategy(), c in version_strategy()
        ) {
            let mut sorted = [a, b, c];
            sorted.sort_by(|x, y| compare_versions(x, y));
            prop_assert_ne!(compare_versions(&sorted[0], &sorted[2]), Ordering::Greater);
        }

        #[test]
        fn version_ord_agrees_with_eq(a in version_strategy(), b in version_strategy()) {
            let (va, vb) = (Version::new(a.clone()), Version::new(b.clone()));
            prop_assert_eq!(va.cmp(&vb) == Ordering::Equal, va == vb);
            // The tie-break never contradicts Nix's order.
            if compare_versions(&a, &b) != Ordering::Equal {
                prop_assert_eq!(va.cmp(&vb), compare_versions(&a, &b));
            }
        }

        #[test]
        fn drv_name_round_trips(full in "[a-zA-Z0-9.+_-]{0,16}") {
            prop_assert_eq!(DrvName::parse(&full).full_name(), full);
        }

        #[test]
        fn split_version_drops_only_separators(v in version_strategy()) {
            let joined: String = split_version(&v).concat();
            let expected: String = v.chars().filter(|c| *c != '.' && *c != '-').collect();
            prop_assert_eq!(joined, expected);
        }
    }
}
