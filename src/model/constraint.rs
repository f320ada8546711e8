//! Version constraints in `profile.toml`: `>=2.10`, `<3`, `=2.12.1` (or just `2.12.1`), and
//! conjunctions such as `>=2.10, <3`, all ordered by Nix's `compareVersions`.
//!
//! Pure: parsing and matching only.

use crate::version::compare_versions;
use std::cmp::Ordering;
use std::fmt;

/// How one bound compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `=` (or no operator): the same version by Nix's ordering.
    Equal,
    /// `!=`.
    NotEqual,
    /// `<`.
    Less,
    /// `<=`.
    LessOrEqual,
    /// `>`.
    Greater,
    /// `>=`.
    GreaterOrEqual,
}

impl Operator {
    fn symbol(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::Less => "<",
            Self::LessOrEqual => "<=",
            Self::Greater => ">",
            Self::GreaterOrEqual => ">=",
        }
    }

    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            Self::Equal => ordering.is_eq(),
            Self::NotEqual => ordering.is_ne(),
            Self::Less => ordering.is_lt(),
            Self::LessOrEqual => ordering.is_le(),
            Self::Greater => ordering.is_gt(),
            Self::GreaterOrEqual => ordering.is_ge(),
        }
    }
}

/// One bound: an operator and a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// How to compare.
    pub operator: Operator,
    /// The version compared against.
    pub version: String,
}

/// A conjunction of bounds; a version satisfies it when it satisfies every bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionConstraint {
    bounds: Vec<Bound>,
}

/// Why a constraint does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// Nothing to compare against.
    #[error("empty version constraint")]
    Empty,
    /// A bound with an operator and no version, or an empty bound between commas.
    #[error("bound `{bound}` has no version")]
    MissingVersion {
        /// The bound as written.
        bound: String,
    },
    /// A version with characters that cannot be part of a Nix version.
    #[error("bound `{bound}` has an invalid version: {reason}")]
    InvalidVersion {
        /// The bound as written.
        bound: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl VersionConstraint {
    /// Parses `OP VERSION[, OP VERSION]…`.
    pub fn parse(text: &str) -> Result<Self, ConstraintError> {
        if text.trim().is_empty() {
            return Err(ConstraintError::Empty);
        }
        let mut bounds = Vec::new();
        for raw in text.split(',') {
            let bound = raw.trim();
            let (operator, rest) = [
                (">=", Operator::GreaterOrEqual),
                ("<=", Operator::LessOrEqual),
                ("!=", Operator::NotEqual),
                ("==", Operator::Equal),
                (">", Operator::Greater),
                ("<", Operator::Less),
                ("=", Operator::Equal),
            ]
            .iter()
            .find_map(|(symbol, operator)| {
                bound
                    .strip_prefix(symbol)
                    .map(|rest| (*operator, rest.trim()))
            })
            .unwrap_or((Operator::Equal, bound));
            if rest.is_empty() {
                return Err(ConstraintError::MissingVersion {
                    bound: bound.to_owned(),
                });
            }
            if rest.chars().any(|character| {
                character.is_whitespace() || matches!(character, '<' | '>' | '=' | '!')
            }) {
                return Err(ConstraintError::InvalidVersion {
                    bound: bound.to_owned(),
                    reason: "a version holds no spaces or comparison signs (separate bounds with `,`)",
                });
            }
            bounds.push(Bound {
                operator,
                version: rest.to_owned(),
            });
        }
        Ok(Self { bounds })
    }

    /// Whether `version` satisfies every bound.
    #[must_use]
    pub fn matches(&self, version: &str) -> bool {
        self.bounds.iter().all(|bound| {
            bound
                .operator
                .accepts(compare_versions(version, &bound.version))
        })
    }

    /// The bounds.
    #[must_use]
    pub fn bounds(&self) -> &[Bound] {
        &self.bounds
    }
}

impl fmt::Display for VersionConstraint {
    /// The normalised form: `>=2.10, <3`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, bound) in self.bounds.iter().enumerate() {
            if position > 0 {
                formatter.write_str(", ")?;
            }
            write!(formatter, "{}{}", bound.operator.symbol(), bound.version)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    #[rstest]
    #[case(">=2.10", "2.12.1", true)]
    #[case(">=2.10", "2.9", false)]
    #[case("<3", "2.12.1", true)]
    #[case("<3", "3.0", false)]
    #[case(">=2.10, <2.12", "2.11", true)]
    #[case(">=2.10, <2.12", "2.12", false)]
    #[case("2.12", "2.12", true)]
    #[case("=2.12", "2.12.0", false)]
    #[case("==2.12", "2.12", true)]
    #[case("!=2.12", "2.12", false)]
    #[case("> 1.0pre", "1.0", true)]
    #[case("<=1.0", "1.0pre1", true)]
    #[case(">1.0", "1.0pre1", false)] // `pre` sorts before everything
    fn matches_by_nix_ordering(
        #[case] constraint: &str,
        #[case] version: &str,
        #[case] expected: bool,
    ) {
        assert_eq!(
            VersionConstraint::parse(constraint)
                .unwrap()
                .matches(version),
            expected
        );
    }

    #[rstest]
    #[case("", ConstraintError::Empty)]
    #[case(">=", ConstraintError::MissingVersion { bound: ">=".to_owned() })]
    #[case(">=1,", ConstraintError::MissingVersion { bound: String::new() })]
    #[case(">=1 <2", ConstraintError::InvalidVersion { bound: ">=1 <2".to_owned(), reason: "a version holds no spaces or comparison signs (separate bounds with `,`)" })]
    fn rejects(#[case] text: &str, #[case] error: ConstraintError) {
        assert_eq!(VersionConstraint::parse(text), Err(error));
    }

    #[test]
    fn displays_normalised() {
        let constraint = VersionConstraint::parse(" >= 2.10 ,<3,2.11").unwrap();
        assert_eq!(constraint.to_string(), ">=2.10, <3, =2.11");
    }

    proptest! {
        /// Every constraint parses back from its normalised form to the same bounds.
        #[test]
        fn display_round_trips(text in "(>=|<=|<|>|=|!=)?[0-9a-z.]{1,6}(, ?(>=|<|=)[0-9a-z.]{1,6}){0,3}") {
            let constraint = VersionConstraint::parse(&text).unwrap();
            prop_assert_eq!(VersionConstraint::parse(&constraint.to_string()).unwrap(), constraint);
        }

        /// A bound `>=V` and a bound `<V` never both hold.
        #[test]
        fn complementary_bounds_are_exclusive(version in "[0-9a-z.]{1,6}", bound in "[0-9a-z.]{1,6}") {
            let at_least = VersionConstraint::parse(&format!(">={bound}")).unwrap();
            let below = VersionConstraint::parse(&format!("<{bound}")).unwrap();
            prop_assert_ne!(at_least.matches(&version), below.matches(&version));
        }
    }
}
