//! Generation rules of Nix 2.8 profiles, as values: which directory entries count as
//! generations, which generation is current, what number the next one gets, where a rollback or
//! `--switch-generation` goes, which generations a `--delete-generations` argument deletes, and
//! how `--list-generations` prints a line.
//!
//! Pure: entry names, link texts, creation times and "now" come in as values; nothing here
//! reads the filesystem or the clock. `crate::profile` does the I/O around these decisions.
//!
//! Where Nix 2.8 aborts or silently loses data (an assertion on unordered creation times, an
//! `int` overflow in the cutoff of `Nd`, a new generation number it can no longer discover),
//! these functions do the careful thing instead; the tests name each such choice.

use std::collections::BTreeSet;
use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};

/// Seconds in a day, as `--delete-generations Nd` counts them (no leap seconds, no DST).
const SECONDS_PER_DAY: i64 = 86_400;

/// One generation of a profile as the rules see it: its number and when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation {
    /// The generation number from the link's name.
    pub number: u32,
    /// Seconds since the Unix epoch: the modification time of the generation link itself.
    pub creation_time: i64,
}

/// Parses an unsigned decimal integer the way Nix 2.8's `string2Int` does for unsigned types:
/// an optional leading `+`, then one or more ASCII digits (leading zeros allowed), no spaces,
/// and no value above `u64::MAX`.
#[must_use]
pub fn parse_nix_unsigned(text: &[u8]) -> Option<u64> {
    let digits = text.strip_prefix(b"+").unwrap_or(text);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0_u64, |value, &byte| {
        let digit = char::from(byte).to_digit(10)?;
        value.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Parses a signed `int` the way Nix 2.8's `string2Int<int>` does: an optional `+` or `-`, then
/// one or more ASCII digits, within the range of a 32-bit `int`.
#[must_use]
pub fn parse_nix_int(text: &[u8]) -> Option<i32> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let magnitude = digits.iter().try_fold(0_i64, |value, &byte| {
        let digit = char::from(byte).to_digit(10)?;
        let value = value.checked_mul(10)?.checked_add(i64::from(digit))?;
        (value <= i64::from(i32::MAX) + 1).then_some(value)
    })?;
    let value = if negative { -magnitude } else { magnitude };
    i32::try_from(value).ok()
}

/// The generation number an entry of the profile's directory stands for, exactly as Nix 2.8
/// discovers generations: the name starts with `B-` (`B` the profile's name), the rest contains
/// `-link`, and the text before the first `-link` is an unsigned 32-bit number (`+` and leading
/// zeros allowed). The file type is not looked at: a regular file named like a link counts.
#[must_use]
pub fn parse_generation_link_name(profile_name: &[u8], entry_name: &[u8]) -> Option<u32> {
    let rest = entry_name
        .strip_prefix(profile_name)?
        .strip_prefix(b"-".as_slice())?;
    let end = rest
        .windows(b"-link".len())
        .position(|window| window == b"-link")?;
    let number = parse_nix_unsigned(&rest[..end])?;
    u32::try_from(number).ok()
}

/// The current generation, from the text of the profile link (`readlink(P)`).
///
/// Nix parses the text with the generation-name rule, so only a relative `B-N-link` names a
/// current generation; an absolute target such as `/…/B-3-link` means there is none.
#[must_use]
pub fn parse_current_generation(profile_name: &[u8], link_text: &[u8]) -> Option<u32> {
    parse_generation_link_name(profile_name, link_text)
}

/// The generation an **absolute** profile link leads to when its text is exactly
/// `DIRECTORY/ENTRY` for an entry of the profile's own directory that counts as a generation.
///
/// Nix 2.8 sees no current generation then and would delete that very link (leaving the profile
/// dangling); declenv uses this to keep it.
#[must_use]
pub fn absolute_link_generation(
    profile_directory: &[u8],
    profile_name: &[u8],
    link_text: &[u8],
) -> Option<u32> {
    if !link_text.starts_with(b"/") {
        return None;
    }
    let slash = link_text.iter().rposition(|&byte| byte == b'/')?;
    let (parent, entry) = (&link_text[..slash], &link_text[slash + 1..]);
    let directory = profile_directory
        .strip_suffix(b"/".as_slice())
        .unwrap_or(profile_directory);
    if parent != directory {
        return None;
    }
    parse_generation_link_name(profile_name, entry)
}

/// The canonical name of generation `number` of profile `B`: `B-N-link`, decimal without leading
/// zeros, as Nix names the links it creates.
#[must_use]
pub fn generation_link_name(profile_name: &[u8], number: u32) -> Vec<u8> {
    let mut name = profile_name.to_vec();
    name.extend_from_slice(format!("-{number}-link").as_bytes());
    name
}

/// The highest-numbered generation, as `createGeneration` compares it with a new environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HighestGeneration {
    /// Its number.
    pub number: u32,
    /// Whether its link points at exactly the new environment's store path.
    pub same_target: bool,
}

/// What `createGeneration` does with a new environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextGeneration {
    /// The highest generation already points at the environment: switch to it, make no link.
    Reuse(u32),
    /// Make a new link with this number (always the highest number plus one).
    Create(u32),
}

impl NextGeneration {
    /// The generation the profile ends up on.
    #[must_use]
    pub const fn number(self) -> u32 {
        match self {
            Self::Reuse(number) | Self::Create(number) => number,
        }
    }
}

/// No generation number is left: the highest one is `u32::MAX`.
///
/// Nix 2.8 would create `B-4294967296-link`, which its own discovery then ignores, so the
/// profile silently loses its current generation; declenv refuses instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no generation number is left after {highest}: generation numbers are 32-bit")]
pub struct GenerationNumbersExhausted {
    /// The highest existing generation number.
    pub highest: u32,
}

/// The number of the next generation: reuse the **highest** generation when it already points at
/// the new environment (not the current one: after a rollback an identical environment still
/// gets a new number), otherwise the highest number plus one (1 for an empty profile).
pub fn next_generation(
    highest: Option<HighestGeneration>,
) -> Result<NextGeneration, GenerationNumbersExhausted> {
    match highest {
        None => Ok(NextGeneration::Create(1)),
        Some(highest) if highest.same_target => Ok(NextGeneration::Reuse(highest.number)),
        Some(highest) => highest
            .number
            .checked_add(1)
            .map(NextGeneration::Create)
            .ok_or(GenerationNumbersExhausted {
                highest: highest.number,
            }),
    }
}

/// A switch of the profile link from one generation to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// The current generation before the switch, if there is one.
    pub from: Option<u32>,
    /// The generation switched to.
    pub to: u32,
}

impl fmt::Display for Switch {
    /// Nix's message, with 0 standing for "no current generation".
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "switching profile from version {} to {}",
            self.from.unwrap_or(0),
            self.to
        )
    }
}

/// Why `--rollback` or `--switch-generation` cannot switch; the texts are Nix's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SwitchError {
    /// `--rollback` with no generation numbered below the current one.
    #[error("no profile version older than the current ({}) exists", current.unwrap_or(0))]
    NoOlderGeneration {
        /// The current generation, if there is one.
        current: Option<u32>,
    },
    /// `--switch-generation N` for a number no generation has.
    #[error("profile version {requested} does not exist")]
    DoesNotExist {
        /// The number asked for.
        requested: u64,
    },
}

/// The target of `--rollback`: the highest-numbered generation below the current one, so gaps
/// are skipped. Without a current generation there is nothing to roll back to.
pub fn rollback_target(
    numbers: impl IntoIterator<Item = u32>,
    current: Option<u32>,
) -> Result<Switch, SwitchError> {
    let target =
        current.and_then(|current| numbers.into_iter().filter(|&number| number < current).max());
    target
        .map(|to| Switch { from: current, to })
        .ok_or(SwitchError::NoOlderGeneration { current })
}

/// The target of `--switch-generation N`: generation N if it exists (even when it is already
/// current, which Nix reports as a switch from N to N).
pub fn switch_target(
    numbers: impl IntoIterator<Item = u32>,
    current: Option<u32>,
    requested: u64,
) -> Result<Switch, SwitchError> {
    numbers
        .into_iter()
        .find(|&number| u64::from(number) == requested)
        .map(|to| Switch { from: current, to })
        .ok_or(SwitchError::DoesNotExist { requested })
}

/// A malformed `--switch-generation` argument list; both are usage errors in Nix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchArgumentError {
    /// Not exactly one argument.
    #[error("exactly one argument expected")]
    ArgumentCount {
        /// How many arguments were given.
        given: usize,
    },
    /// The argument is not an unsigned 64-bit number.
    #[error("expected a generation number")]
    NotANumber {
        /// The argument as given.
        argument: String,
    },
}

/// Reads the arguments of `--switch-generation`: exactly one, an unsigned 64-bit number with an
/// optional `+` and leading zeros (so `+2` and `02` both mean 2).
pub fn parse_switch_generation_arguments<S: AsRef<str>>(
    arguments: &[S],
) -> Result<u64, SwitchArgumentError> {
    let [argument] = arguments else {
        return Err(SwitchArgumentError::ArgumentCount {
            given: arguments.len(),
        });
    };
    let argument = argument.as_ref();
    parse_nix_unsigned(argument.as_bytes()).ok_or_else(|| SwitchArgumentError::NotANumber {
        argument: argument.to_owned(),
    })
}

/// What `--delete-generations` deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletePolicy {
    /// `old`: every generation except the current one.
    Old,
    /// `Nd`: generations older than N days, except the newest of them (the one that was active
    /// N days ago) and the current one.
    OlderThanDays(NonZeroU32),
    /// `+N`: keep the current generation and the N−1 next older ones; delete older ones; never
    /// touch generations newer than the current one.
    KeepNewest(NonZeroU64),
    /// A list of numbers: exactly these generations (numbers that do not exist are ignored).
    Numbers(BTreeSet<u64>),
}

/// A `--delete-generations` argument Nix rejects as a **usage** error (followed by
/// `Try 'nix-env --help' for more information.`); the texts are Nix's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeleteUsageError {
    /// One argument containing `d` that does not end in `d`.
    #[error("invalid number of days specifier '{argument}', expected something like '14d'")]
    DaysWithoutSuffix {
        /// The argument as given.
        argument: String,
    },
    /// One argument ending in `d` whose prefix is not an `int` of at least 1.
    #[error("invalid number of days specifier '{argument}'")]
    InvalidDays {
        /// The argument as given.
        argument: String,
    },
    /// An argument of a number list that is not an unsigned 64-bit number.
    #[error("invalid generation number '{argument}'")]
    InvalidGenerationNumber {
        /// The argument as given.
        argument: String,
    },
}

/// A `--delete-generations` argument Nix rejects as a **plain** error (no usage hint); the texts
/// are Nix's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeleteValueError {
    /// `+` alone: too short to hold a count.
    #[error("invalid number of generations '{argument}'")]
    CountTooShort {
        /// The argument as given.
        argument: String,
    },
    /// A `+N` form whose text after the first character is not a number above zero.
    #[error("invalid number of generations to keep '{argument}'")]
    InvalidCount {
        /// The argument as given.
        argument: String,
    },
}

/// Why `--delete-generations` arguments were rejected; the two kinds are reported differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeleteArgumentsError {
    /// A usage error.
    #[error(transparent)]
    Usage(#[from] DeleteUsageError),
    /// A plain error.
    #[error(transparent)]
    Value(#[from] DeleteValueError),
}

impl DeleteArgumentsError {
    /// Whether Nix prints its `Try 'nix-env --help'` line after this error.
    #[must_use]
    pub const fn is_usage_error(&self) -> bool {
        matches!(self, Self::Usage(_))
    }
}

impl DeletePolicy {
    /// Reads `--delete-generations` arguments with Nix 2.8's rules, first match wins:
    /// exactly `old`; one argument containing a `d` anywhere (days; it must end in `d`); one
    /// argument containing a `+` anywhere (a count after its first character, whatever that
    /// character is); otherwise a list of numbers, so `+5 3` deletes 5 and 3. No arguments is an
    /// empty list.
    pub fn parse<S: AsRef<str>>(arguments: &[S]) -> Result<Self, DeleteArgumentsError> {
        if let [argument] = arguments {
            let argument = argument.as_ref();
            if argument == "old" {
                return Ok(Self::Old);
            }
            if argument.contains('d') {
                return Self::parse_days(argument).map_err(DeleteArgumentsError::from);
            }
            if argument.contains('+') {
                return Self::parse_keep(argument).map_err(DeleteArgumentsError::from);
            }
        }
        let mut numbers = BTreeSet::new();
        for argument in arguments {
            let argument = argument.as_ref();
            let number = parse_nix_unsigned(argument.as_bytes()).ok_or_else(|| {
                DeleteUsageError::InvalidGenerationNumber {
                    argument: argument.to_owned(),
                }
            })?;
            numbers.insert(number);
        }
        Ok(Self::Numbers(numbers))
    }

    fn parse_days(argument: &str) -> Result<Self, DeleteUsageError> {
        let Some(days) = argument.strip_suffix('d') else {
            return Err(DeleteUsageError::DaysWithoutSuffix {
                argument: argument.to_owned(),
            });
        };
        parse_nix_int(days.as_bytes())
            .and_then(|days| u32::try_from(days).ok())
            .and_then(NonZeroU32::new)
            .map(Self::OlderThanDays)
            .ok_or_else(|| DeleteUsageError::InvalidDays {
                argument: argument.to_owned(),
            })
    }

    fn parse_keep(argument: &str) -> Result<Self, DeleteValueError> {
        if argument.len() < 2 {
            return Err(DeleteValueError::CountTooShort {
                argument: argument.to_owned(),
            });
        }
        argument
            .as_bytes()
            .get(1..)
            .and_then(parse_nix_unsigned)
            .and_then(NonZeroU64::new)
            .map(Self::KeepNewest)
            .ok_or_else(|| DeleteValueError::InvalidCount {
                argument: argument.to_owned(),
            })
    }

    /// The generations this policy deletes, in the order Nix deletes them: ascending for `old`
    /// and number lists, descending (newest first) for `+N` and `Nd`.
    ///
    /// `generations` may come in any order and may hold a number more than once (two directory
    /// entries such as `B-7-link` and `B-07-link`); each number appears at most once in the
    /// result, and a number's creation time is the newest of its entries'. `now` is in seconds
    /// since the Unix epoch.
    ///
    /// Never returns the current generation. A number list that names it is refused as a whole
    /// before anything is deleted.
    ///
    /// Differences from Nix 2.8, on purpose: for `Nd`, a generation below the kept one that is
    /// *not* older than the cutoff (unordered creation times) is kept, where 2.8 aborts on an
    /// assertion after deleting part of the list; and the cutoff is computed in 64 bits, where
    /// 2.8's `int` overflows from 24,856 days on and deletes everything.
    pub fn generations_to_delete(
        &self,
        generations: &[Generation],
        current: Option<u32>,
        now: i64,
    ) -> Result<Vec<u32>, DeleteCurrentError> {
        let distinct = distinct_generations(generations);
        let not_current = |generation: &&Generation| Some(generation.number) != current;
        let numbers = match self {
            Self::Old => distinct
                .iter()
                .filter(not_current)
                .map(|generation| generation.number)
                .collect(),
            Self::Numbers(requested) => {
                if let Some(current) = current
                    && requested.contains(&u64::from(current))
                {
                    return Err(DeleteCurrentError { number: current });
                }
                distinct
                    .iter()
                    .filter(|generation| requested.contains(&u64::from(generation.number)))
                    .map(|generation| generation.number)
                    .collect()
            }
            Self::KeepNewest(keep) => {
                let Some(current) = current else {
                    return Ok(Vec::new());
                };
                let below_current = distinct
                    .iter()
                    .rev()
                    .skip_while(|generation| generation.number != current)
                    .collect::<Vec<_>>();
                if below_current.is_empty() {
                    return Ok(Vec::new());
                }
                let keep = usize::try_from(keep.get()).unwrap_or(usize::MAX);
                below_current
                    .iter()
                    .skip(keep)
                    .map(|generation| generation.number)
                    .collect()
            }
            Self::OlderThanDays(days) => {
                let cutoff = now.saturating_sub(i64::from(days.get()) * SECONDS_PER_DAY);
                let mut newest_first = distinct.iter().rev();
                if newest_first
                    .by_ref()
                    .any(|generation| generation.creation_time < cutoff)
                {
                    newest_first
                        .filter(|generation| generation.creation_time < cutoff)
                        .filter(not_current)
                        .map(|generation| generation.number)
                        .collect()
                } else {
                    Vec::new()
                }
            }
        };
        Ok(numbers)
    }
}

/// Refusal to delete the current generation (the profile's path is added by the I/O layer,
/// which reports it in Nix's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot delete the current generation {number}")]
pub struct DeleteCurrentError {
    /// The current generation.
    pub number: u32,
}

/// Sorted by number, one entry per number, keeping the newest creation time of duplicates so
/// that a number only counts as old when every entry of it is.
fn distinct_generations(generations: &[Generation]) -> Vec<Generation> {
    let mut sorted = generations.to_vec();
    sorted.sort_unstable();
    let mut distinct: Vec<Generation> = Vec::with_capacity(sorted.len());
    for generation in sorted {
        match distinct.last_mut() {
            Some(last) if last.number == generation.number => {
                last.creation_time = last.creation_time.max(generation.creation_time);
            }
            _ => distinct.push(generation),
        }
    }
    distinct
}

/// A broken-down civil time, as `localtime_r` fills a `struct tm` for the fields Nix prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    /// The full year (may be negative or above 9999 for absurd timestamps).
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    /// 0 to 23.
    pub hour: u32,
    /// 0 to 59.
    pub minute: u32,
    /// 0 to 59.
    pub second: u32,
}

impl CivilTime {
    /// The civil time `unix_seconds + utc_offset_seconds` in the proleptic Gregorian calendar.
    /// Total for every `i64`: the arithmetic is done in 128 bits.
    #[must_use]
    pub fn from_unix(unix_seconds: i64, utc_offset_seconds: i32) -> Self {
        let local = i128::from(unix_seconds) + i128::from(utc_offset_seconds);
        let days = local.div_euclid(i128::from(SECONDS_PER_DAY));
        let second_of_day = local.rem_euclid(i128::from(SECONDS_PER_DAY));
        // Days since 0000-03-01 split into 400-year eras of 146,097 days, with the year
        // starting in March so that the leap day is the last day of the year.
        let shifted = days + 719_468;
        let era = shifted.div_euclid(146_097);
        let day_of_era = shifted.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 {
            month_from_march + 3
        } else {
            month_from_march - 9
        };
        let year = year_of_era + era * 400 + i128::from(month <= 2);
        let narrow = |value: i128| u32::try_from(value).unwrap_or(0);
        Self {
            year: i64::try_from(year).unwrap_or(if year < 0 { i64::MIN } else { i64::MAX }),
            month: narrow(month),
            day: narrow(day),
            hour: narrow(second_of_day / 3_600),
            minute: narrow(second_of_day % 3_600 / 60),
            second: narrow(second_of_day % 60),
        }
    }
}

/// One line of `--list-generations`, newline included, as Nix prints it with
/// `"%4d   %4d-%02d-%02d %02d:%02d:%02d   %s\n"`: a line that is not current ends in three
/// spaces. `utc_offset_seconds` is the local offset at `creation_time`, which the caller looks
/// up in the time zone so that this stays pure.
#[must_use]
pub fn format_list_line(
    generation: Generation,
    utc_offset_seconds: i32,
    is_current: bool,
) -> String {
    let time = CivilTime::from_unix(generation.creation_time, utc_offset_seconds);
    format!(
        "{:4}   {:4}-{:02}-{:02} {:02}:{:02}:{:02}   {}\n",
        generation.number,
        time.year,
        time.month,
        time.day,
        time.hour,
        time.minute,
        time.second,
        if is_current { "(current)" } else { "" }
    )
}

/// The whole `--list-generations` output: `generations` in the order given (the caller sorts
/// them; duplicates are printed as Nix prints them), each marked current when its number is.
#[must_use]
pub fn format_list(
    generations: &[Generation],
    current: Option<u32>,
    mut utc_offset_at: impl FnMut(i64) -> i32,
) -> String {
    generations
        .iter()
        .map(|&generation| {
            format_list_line(
                generation,
                utc_offset_at(generation.creation_time),
                Some(generation.number) == current,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    const DAY: i64 = SECONDS_PER_DAY;
    const NOW: i64 = 1_800_000_000;

    fn numbers(
        policy: &DeletePolicy,
        generations: &[Generation],
        current: Option<u32>,
    ) -> Vec<u32> {
        policy
            .generations_to_delete(generations, current, NOW)
            .expect("policy applies")
    }

    fn parse(arguments: &[&str]) -> DeletePolicy {
        DeletePolicy::parse(arguments).expect("arguments parse")
    }

    /// Generations 1–7 with the ages in days of the `Nd` table of the reference (§10.8).
    fn aged_generations() -> Vec<Generation> {
        [(1, 40), (2, 30), (3, 20), (4, 12), (5, 8), (6, 3), (7, 1)]
            .into_iter()
            .map(|(number, age_days)| Generation {
                number,
                creation_time: NOW - age_days * DAY,
            })
            .collect()
    }

    fn plain_generations(range: std::ops::RangeInclusive<u32>) -> Vec<Generation> {
        range
            .map(|number| Generation {
                number,
                creation_time: NOW,
            })
            .collect()
    }

    #[rstest]
    #[case::canonical("del-7-link", Some(7))]
    #[case::leading_zero("del-07-link", Some(7))]
    #[case::text_after_link("del-4-linkfoo", Some(4))]
    #[case::plus_sign("del-+5-link", Some(5))]
    #[case::suffix_of_a_regular_file("del-10-link.txt", Some(10))]
    #[case::first_link_counts("del-13-link-14-link", Some(13))]
    #[case::trailing_dash("del-17-link-", Some(17))]
    #[case::json_suffix("del-20-link.json", Some(20))]
    #[case::zero("del-0-link", Some(0))]
    #[case::plus_zero("del-+0-link", Some(0))]
    #[case::largest("del-4294967295-link", Some(u32::MAX))]
    #[case::letters("del-x-link", None)]
    #[case::minus_sign("del--6-link", None)]
    #[case::space("del- 8-link", None)]
    #[case::too_large("del-99999999999-link", None)]
    #[case::two_to_the_32("del-4294967296-link", None)]
    #[case::no_link("del-15-lin", None)]
    #[case::double_dash("del-16--link", None)]
    #[case::empty_number("del--link", None)]
    #[case::plus_alone("del-+-link", None)]
    #[case::double_plus("del-++5-link", None)]
    #[case::other_profile("dele-18-link", None)]
    #[case::hidden(".del-19-link", None)]
    #[case::profile_itself("del", None)]
    #[case::lock_file("del.lock", None)]
    #[case::temporary_switch_link(".0_del", None)]
    fn discovery_follows_nix(#[case] entry: &str, #[case] expected: Option<u32>) {
        assert_eq!(
            parse_generation_link_name(b"del", entry.as_bytes()),
            expected
        );
    }

    #[rstest]
    #[case::relative("prof-3-link", Some(3))]
    #[case::absolute("/tmp/p/prof-3-link", None)]
    #[case::dot_slash("./prof-3-link", None)]
    #[case::store_path("/nix/store/abc-user-environment", None)]
    #[case::other_profile("other-3-link", None)]
    #[case::empty("", None)]
    fn current_generation_needs_a_relative_link(
        #[case] link_text: &str,
        #[case] expected: Option<u32>,
    ) {
        assert_eq!(
            parse_current_generation(b"prof", link_text.as_bytes()),
            expected
        );
    }

    #[rstest]
    #[case("/tmp/p/prof-3-link", Some(3))]
    #[case("/tmp/p/prof-03-link", Some(3))]
    #[case("/tmp/q/prof-3-link", None)]
    #[case("prof-3-link", None)]
    #[case("/tmp/p/other-3-link", None)]
    #[case("/tmp/p/sub/prof-3-link", None)]
    fn absolute_links_are_resolved_lexically(
        #[case] link_text: &str,
        #[case] expected: Option<u32>,
    ) {
        assert_eq!(
            absolute_link_generation(b"/tmp/p", b"prof", link_text.as_bytes()),
            expected
        );
        assert_eq!(
            absolute_link_generation(b"/tmp/p/", b"prof", link_text.as_bytes()),
            expected
        );
    }

    #[test]
    fn link_names_are_canonical_decimal() {
        assert_eq!(generation_link_name(b"prof", 7), b"prof-7-link");
        assert_eq!(generation_link_name(b"p", u32::MAX), b"p-4294967295-link");
    }

    #[rstest]
    #[case::empty_profile(None, Ok(NextGeneration::Create(1)))]
    #[case::new_content(Some(HighestGeneration { number: 2, same_target: false }), Ok(NextGeneration::Create(3)))]
    #[case::same_as_highest(Some(HighestGeneration { number: 2, same_target: true }), Ok(NextGeneration::Reuse(2)))]
    #[case::reuse_at_the_limit(Some(HighestGeneration { number: u32::MAX, same_target: true }), Ok(NextGeneration::Reuse(u32::MAX)))]
    #[case::exhausted(Some(HighestGeneration { number: u32::MAX, same_target: false }), Err(GenerationNumbersExhausted { highest: u32::MAX }))]
    fn next_generation_is_max_plus_one_or_reuse_of_the_highest(
        #[case] highest: Option<HighestGeneration>,
        #[case] expected: Result<NextGeneration, GenerationNumbersExhausted>,
    ) {
        assert_eq!(next_generation(highest), expected);
    }

    /// Reference §10.4: after `-i foo; -i bar; --rollback`, installing `bar` again builds the
    /// environment of generation 2, the highest, which is reused; after `-G 1`, installing `foo`
    /// again builds generation 1's environment, but 1 is not the highest, so 3 is created.
    #[test]
    fn reuse_compares_with_the_highest_generation_not_the_current_one() {
        let after_rollback = next_generation(Some(HighestGeneration {
            number: 2,
            same_target: true,
        }));
        assert_eq!(after_rollback, Ok(NextGeneration::Reuse(2)));
        let duplicate_of_one = next_generation(Some(HighestGeneration {
            number: 2,
            same_target: false,
        }));
        assert_eq!(duplicate_of_one, Ok(NextGeneration::Create(3)));
    }

    #[rstest]
    #[case::previous(&[1, 2, 3], Some(3), Ok(Switch { from: Some(3), to: 2 }))]
    #[case::skips_gaps(&[1, 4, 9], Some(9), Ok(Switch { from: Some(9), to: 4 }))]
    #[case::ignores_newer(&[1, 2, 3, 4], Some(2), Ok(Switch { from: Some(2), to: 1 }))]
    #[case::on_the_first(&[1, 2], Some(1), Err(SwitchError::NoOlderGeneration { current: Some(1) }))]
    #[case::empty_profile(&[], None, Err(SwitchError::NoOlderGeneration { current: None }))]
    #[case::no_current(&[1, 2, 3], None, Err(SwitchError::NoOlderGeneration { current: None }))]
    #[case::current_zero(&[0, 1], Some(0), Err(SwitchError::NoOlderGeneration { current: Some(0) }))]
    #[case::current_missing(&[1, 2], Some(5), Ok(Switch { from: Some(5), to: 2 }))]
    fn rollback_goes_to_the_highest_below_current(
        #[case] numbers: &[u32],
        #[case] current: Option<u32>,
        #[case] expected: Result<Switch, SwitchError>,
    ) {
        assert_eq!(rollback_target(numbers.iter().copied(), current), expected);
    }

    #[rstest]
    #[case(Some(1), "no profile version older than the current (1) exists")]
    #[case(None, "no profile version older than the current (0) exists")]
    fn rollback_error_is_nix_text(#[case] current: Option<u32>, #[case] text: &str) {
        assert_eq!(SwitchError::NoOlderGeneration { current }.to_string(), text);
    }

    #[rstest]
    #[case::exists(&[1, 2, 7], Some(7), 2, Ok(Switch { from: Some(7), to: 2 }))]
    #[case::already_current(&[1, 2], Some(2), 2, Ok(Switch { from: Some(2), to: 2 }))]
    #[case::no_current(&[1, 2], None, 1, Ok(Switch { from: None, to: 1 }))]
    #[case::zero(&[0, 1], Some(1), 0, Ok(Switch { from: Some(1), to: 0 }))]
    #[case::missing(&[1, 2], Some(2), 99, Err(SwitchError::DoesNotExist { requested: 99 }))]
    #[case::no_truncation(&[1], Some(1), (1 << 32) + 1, Err(SwitchError::DoesNotExist { requested: (1 << 32) + 1 }))]
    fn switch_generation_needs_an_existing_number(
        #[case] numbers: &[u32],
        #[case] current: Option<u32>,
        #[case] requested: u64,
        #[case] expected: Result<Switch, SwitchError>,
    ) {
        assert_eq!(
            switch_target(numbers.iter().copied(), current, requested),
            expected
        );
    }

    #[rstest]
    #[case(Switch { from: Some(3), to: 2 }, "switching profile from version 3 to 2")]
    #[case(Switch { from: None, to: 2 }, "switching profile from version 0 to 2")]
    #[case(Switch { from: Some(2), to: 2 }, "switching profile from version 2 to 2")]
    fn switch_message_is_nix_text(#[case] switch: Switch, #[case] text: &str) {
        assert_eq!(switch.to_string(), text);
    }

    #[test]
    fn missing_generation_error_is_nix_text() {
        assert_eq!(
            SwitchError::DoesNotExist { requested: 99 }.to_string(),
            "profile version 99 does not exist"
        );
    }

    #[rstest]
    #[case::plain(&["7"], Ok(7))]
    #[case::plus(&["+2"], Ok(2))]
    #[case::leading_zero(&["02"], Ok(2))]
    #[case::above_u32(&["4294967296"], Ok(4_294_967_296))]
    #[case::u64_max(&["18446744073709551615"], Ok(u64::MAX))]
    #[case::above_u64(&["18446744073709551616"], Err("expected a generation number"))]
    #[case::leading_space(&[" 3"], Err("expected a generation number"))]
    #[case::trailing_space(&["3 "], Err("expected a generation number"))]
    #[case::empty(&[""], Err("expected a generation number"))]
    #[case::word(&["old"], Err("expected a generation number"))]
    #[case::none(&[], Err("exactly one argument expected"))]
    #[case::two(&["3", "4"], Err("exactly one argument expected"))]
    fn switch_generation_arguments(
        #[case] arguments: &[&str],
        #[case] expected: Result<u64, &str>,
    ) {
        let parsed =
            parse_switch_generation_arguments(arguments).map_err(|error| error.to_string());
        assert_eq!(parsed, expected.map_err(str::to_owned));
    }

    #[rstest]
    #[case::old(&["old"], DeletePolicy::Old)]
    #[case::days(&["10d"], DeletePolicy::OlderThanDays(NonZeroU32::MIN.saturating_add(9)))]
    #[case::days_with_plus(&["+3d"], DeletePolicy::OlderThanDays(NonZeroU32::MIN.saturating_add(2)))]
    #[case::days_int_max(&["2147483647d"], DeletePolicy::OlderThanDays(NonZeroU32::MIN.saturating_add(2_147_483_646)))]
    #[case::keep(&["+2"], DeletePolicy::KeepNewest(NonZeroU64::MIN.saturating_add(1)))]
    #[case::keep_leading_zero(&["+03"], DeletePolicy::KeepNewest(NonZeroU64::MIN.saturating_add(2)))]
    #[case::keep_any_first_character(&["x+3"], DeletePolicy::KeepNewest(NonZeroU64::MIN.saturating_add(2)))]
    #[case::keep_double_plus(&["++3"], DeletePolicy::KeepNewest(NonZeroU64::MIN.saturating_add(2)))]
    #[case::keep_above_u32(&["+4294967296"], DeletePolicy::KeepNewest(NonZeroU64::MIN.saturating_add(4_294_967_295)))]
    #[case::keep_u64_max(&["+18446744073709551615"], DeletePolicy::KeepNewest(NonZeroU64::MAX))]
    #[case::numbers(&["1", "3", "9"], DeletePolicy::Numbers([1, 3, 9].into()))]
    #[case::plus_five_three_is_a_list(&["+5", "3"], DeletePolicy::Numbers([3, 5].into()))]
    #[case::duplicates(&["3", "3", "+03"], DeletePolicy::Numbers([3].into()))]
    #[case::zeros(&["00"], DeletePolicy::Numbers([0].into()))]
    #[case::above_u32_number(&["4294967296"], DeletePolicy::Numbers([4_294_967_296].into()))]
    #[case::nothing(&[], DeletePolicy::Numbers(BTreeSet::new()))]
    fn delete_arguments_parse(#[case] arguments: &[&str], #[case] expected: DeletePolicy) {
        assert_eq!(parse(arguments), expected);
    }

    #[rstest]
    #[case::zero_days("0d", true, "invalid number of days specifier '0d'")]
    #[case::not_ending_in_d(
        "dx",
        true,
        "invalid number of days specifier 'dx', expected something like '14d'"
    )]
    #[case::d_first(
        "d3",
        true,
        "invalid number of days specifier 'd3', expected something like '14d'"
    )]
    #[case::d_alone("d", true, "invalid number of days specifier 'd'")]
    #[case::double_d("1dd", true, "invalid number of days specifier '1dd'")]
    #[case::leading_space(" 3d", true, "invalid number of days specifier ' 3d'")]
    #[case::inner_space("3 d", true, "invalid number of days specifier '3 d'")]
    #[case::too_many_days(
        "99999999999d",
        true,
        "invalid number of days specifier '99999999999d'"
    )]
    #[case::above_int("2147483648d", true, "invalid number of days specifier '2147483648d'")]
    #[case::fraction("1.5d", true, "invalid number of days specifier '1.5d'")]
    #[case::hexadecimal("0x3d", true, "invalid number of days specifier '0x3d'")]
    #[case::plus_d("+d", true, "invalid number of days specifier '+d'")]
    #[case::old_with_d("oldd", true, "invalid number of days specifier 'oldd'")]
    #[case::upper_case_d("3D", true, "invalid generation number '3D'")]
    #[case::empty("", true, "invalid generation number ''")]
    #[case::word("OLD", true, "invalid generation number 'OLD'")]
    #[case::letter_number("x99999", true, "invalid generation number 'x99999'")]
    #[case::above_u64(
        "18446744073709551616",
        true,
        "invalid generation number '18446744073709551616'"
    )]
    #[case::space_number(" 3", true, "invalid generation number ' 3'")]
    #[case::plus_alone("+", false, "invalid number of generations '+'")]
    #[case::plus_zero("+0", false, "invalid number of generations to keep '+0'")]
    #[case::plus_letter("+x", false, "invalid number of generations to keep '+x'")]
    #[case::plus_last("3+", false, "invalid number of generations to keep '3+'")]
    #[case::plus_space("+ 3", false, "invalid number of generations to keep '+ 3'")]
    #[case::plus_huge(
        "+99999999999999999999",
        false,
        "invalid number of generations to keep '+99999999999999999999'"
    )]
    #[case::letter_plus("x+", false, "invalid number of generations to keep 'x+'")]
    #[case::five_plus("5+", false, "invalid number of generations to keep '5+'")]
    fn delete_argument_errors_are_nix_text(
        #[case] argument: &str,
        #[case] usage: bool,
        #[case] text: &str,
    ) {
        let error = DeletePolicy::parse(&[argument]).expect_err("rejected");
        assert_eq!(error.to_string(), text);
        assert_eq!(error.is_usage_error(), usage);
    }

    #[rstest]
    #[case::old_then_number(&["old", "1"], "invalid generation number 'old'")]
    #[case::number_then_old(&["1", "old"], "invalid generation number 'old'")]
    #[case::days_in_a_list(&["1d", "2"], "invalid generation number '1d'")]
    #[case::empty_in_a_list(&["", "3"], "invalid generation number ''")]
    fn several_arguments_are_always_numbers(#[case] arguments: &[&str], #[case] text: &str) {
        let error = DeletePolicy::parse(arguments).expect_err("rejected");
        assert_eq!(error.to_string(), text);
        assert!(error.is_usage_error());
    }

    /// Reference §10.8, generations 1–7, current 4.
    #[rstest]
    #[case::numbers(&["1", "3", "9"], vec![1, 3])]
    #[case::old(&["old"], vec![1, 2, 3, 5, 6, 7])]
    #[case::keep_two(&["+2"], vec![2, 1])]
    #[case::keep_one(&["+1"], vec![3, 2, 1])]
    #[case::keep_ten(&["+10"], Vec::<u32>::new())]
    #[case::keep_three_leading_zero(&["+03"], vec![1])]
    #[case::keep_huge(&["+18446744073709551615"], Vec::<u32>::new())]
    #[case::list_with_plus(&["+5", "3"], vec![3, 5])]
    #[case::nothing(&[], Vec::<u32>::new())]
    fn delete_forms_with_current_four(#[case] arguments: &[&str], #[case] expected: Vec<u32>) {
        assert_eq!(
            numbers(&parse(arguments), &plain_generations(1..=7), Some(4)),
            expected
        );
    }

    #[test]
    fn deleting_the_current_generation_is_refused_before_anything() {
        let refused =
            parse(&["2", "4"]).generations_to_delete(&plain_generations(1..=7), Some(4), NOW);
        assert_eq!(refused, Err(DeleteCurrentError { number: 4 }));
    }

    /// Reference §10.8, the `Nd` table (ages 1:40, 2:30, 3:20, 4:12, 5:8, 6:3, 7:1 days).
    #[rstest]
    #[case::ten_days(7, "10d", vec![3, 2, 1])]
    #[case::eight_days_to_the_second(7, "8d", vec![3, 2, 1])]
    #[case::twenty_five_days(7, "25d", vec![1])]
    #[case::current_is_kept(2, "10d", vec![3, 1])]
    #[case::hundred_days(7, "100d", Vec::<u32>::new())]
    #[case::one_day(7, "1d", vec![5, 4, 3, 2, 1])]
    fn delete_older_than_days(
        #[case] current: u32,
        #[case] argument: &str,
        #[case] expected: Vec<u32>,
    ) {
        assert_eq!(
            numbers(&parse(&[argument]), &aged_generations(), Some(current)),
            expected
        );
    }

    #[test]
    fn days_without_a_current_generation_keep_the_one_active_then() {
        assert_eq!(
            numbers(&parse(&["10d"]), &aged_generations(), None),
            vec![3, 2, 1]
        );
    }

    /// Nix 2.8 aborts with `Assertion 'i->creationTime < t' failed` (exit 134) after deleting
    /// part of the list when a generation below the kept one is newer than the cutoff. declenv
    /// keeps such a generation: it is not older than N days, whatever its number.
    #[test]
    fn days_with_unordered_times_keep_newer_generations_instead_of_aborting() {
        let mut generations = aged_generations();
        generations[1].creation_time = NOW - DAY; // generation 2 touched yesterday
        assert_eq!(numbers(&parse(&["10d"]), &generations, Some(7)), vec![3, 1]);
    }

    /// Nix 2.8 computes `days * 24 * 3600` in a 32-bit `int`; from 24,856 days on the cutoff
    /// wraps into the future and every generation but the newest and the current is deleted.
    /// declenv computes the cutoff in 64 bits: nothing is that old.
    #[rstest]
    #[case("24855d")]
    #[case("24856d")]
    #[case("49710d")]
    #[case("2147483647d")]
    fn huge_day_counts_do_not_overflow(#[case] argument: &str) {
        assert_eq!(
            numbers(&parse(&[argument]), &aged_generations(), Some(7)),
            Vec::<u32>::new()
        );
    }

    /// Nix compares `creationTime < cutoff` strictly: a generation exactly N days old in the same
    /// second is not older.
    #[test]
    fn days_cutoff_is_strict() {
        let generations = [
            Generation {
                number: 1,
                creation_time: NOW - 2 * DAY - 1,
            },
            Generation {
                number: 2,
                creation_time: NOW - 2 * DAY,
            },
            Generation {
                number: 3,
                creation_time: NOW,
            },
        ];
        assert_eq!(
            numbers(&parse(&["2d"]), &generations, Some(3)),
            Vec::<u32>::new()
        );
        let generations = [
            Generation {
                number: 1,
                creation_time: NOW - 2 * DAY - 2,
            },
            Generation {
                number: 2,
                creation_time: NOW - 2 * DAY - 1,
            },
            Generation {
                number: 3,
                creation_time: NOW,
            },
        ];
        assert_eq!(numbers(&parse(&["2d"]), &generations, Some(3)), vec![1]);
    }

    #[rstest]
    #[case::old_deletes_everything(&["old"], vec![1, 2, 3])]
    #[case::keep_deletes_nothing(&["+1"], Vec::<u32>::new())]
    #[case::numbers_are_not_refused(&["0", "1"], vec![1])]
    #[case::one_day_keeps_the_newest_old_one(&["1d"], vec![2, 1])]
    fn no_current_generation(#[case] arguments: &[&str], #[case] expected: Vec<u32>) {
        let generations = [
            Generation {
                number: 1,
                creation_time: NOW - 40 * DAY,
            },
            Generation {
                number: 2,
                creation_time: NOW - 30 * DAY,
            },
            Generation {
                number: 3,
                creation_time: NOW - 20 * DAY,
            },
        ];
        assert_eq!(numbers(&parse(arguments), &generations, None), expected);
    }

    #[test]
    fn keep_with_a_current_number_that_has_no_link_deletes_nothing() {
        assert_eq!(
            numbers(&parse(&["+1"]), &plain_generations(1..=3), Some(9)),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn duplicate_numbers_are_deleted_once_and_unordered_input_is_sorted() {
        let generations = [
            Generation {
                number: 7,
                creation_time: NOW,
            },
            Generation {
                number: 4,
                creation_time: NOW,
            },
            Generation {
                number: 7,
                creation_time: NOW - DAY,
            },
            Generation {
                number: 5,
                creation_time: NOW,
            },
        ];
        assert_eq!(numbers(&parse(&["old"]), &generations, Some(5)), vec![4, 7]);
        assert_eq!(numbers(&parse(&["7"]), &generations, Some(5)), vec![7]);
    }

    #[test]
    fn generation_zero_is_an_ordinary_generation() {
        let generations = plain_generations(0..=2);
        assert_eq!(numbers(&parse(&["old"]), &generations, Some(0)), vec![1, 2]);
        assert_eq!(
            parse(&["0"]).generations_to_delete(&generations, Some(0), NOW),
            Err(DeleteCurrentError { number: 0 })
        );
    }

    #[rstest]
    #[case::epoch(0, 0, "   1   1970-01-01 00:00:00   \n")]
    #[case::reference_utc(1_795_236_314, 0, "   1   2026-11-21 04:45:14   \n")]
    #[case::reference_tokyo(1_795_236_318, 9 * 3600, "   1   2026-11-21 13:45:18   \n")]
    #[case::negative_offset(0, -3600, "   1   1969-12-31 23:00:00   \n")]
    #[case::before_epoch(-1, 0, "   1   1969-12-31 23:59:59   \n")]
    #[case::leap_day(951_782_400, 0, "   1   2000-02-29 00:00:00   \n")]
    #[case::year_ten_thousand(253_402_300_800, 0, "   1   10000-01-01 00:00:00   \n")]
    fn list_lines_are_printf_formatted(
        #[case] creation_time: i64,
        #[case] offset: i32,
        #[case] expected: &str,
    ) {
        let generation = Generation {
            number: 1,
            creation_time,
        };
        assert_eq!(format_list_line(generation, offset, false), expected);
    }

    #[test]
    fn list_marks_current_and_pads_wide_numbers() {
        let generations = [
            Generation {
                number: 2,
                creation_time: 0,
            },
            Generation {
                number: 12_345,
                creation_time: 0,
            },
            Generation {
                number: u32::MAX,
                creation_time: 0,
            },
        ];
        assert_eq!(
            format_list(&generations, Some(12_345), |_| 0),
            "   2   1970-01-01 00:00:00   \n\
             12345   1970-01-01 00:00:00   (current)\n\
             4294967295   1970-01-01 00:00:00   \n"
        );
    }

    #[test]
    fn civil_time_is_total() {
        for seconds in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX] {
            for offset in [i32::MIN, 0, i32::MAX] {
                let time = CivilTime::from_unix(seconds, offset);
                assert!((1..=12).contains(&time.month));
                assert!((1..=31).contains(&time.day));
                assert!(time.hour < 24 && time.minute < 60 && time.second < 60);
            }
        }
    }

    #[rstest]
    #[case(b"+".as_slice(), None)]
    #[case(b"".as_slice(), None)]
    #[case(b"-0".as_slice(), None)]
    #[case(b"0".as_slice(), Some(0))]
    #[case(b"+00012".as_slice(), Some(12))]
    #[case(b"000000000000000000000000000001".as_slice(), Some(1))]
    #[case(b"18446744073709551615".as_slice(), Some(u64::MAX))]
    #[case(b"18446744073709551616".as_slice(), None)]
    #[case("٣".as_bytes(), None)]
    fn unsigned_parse(#[case] text: &[u8], #[case] expected: Option<u64>) {
        assert_eq!(parse_nix_unsigned(text), expected);
    }

    #[rstest]
    #[case(b"-3".as_slice(), Some(-3))]
    #[case(b"+3".as_slice(), Some(3))]
    #[case(b"-2147483648".as_slice(), Some(i32::MIN))]
    #[case(b"2147483647".as_slice(), Some(i32::MAX))]
    #[case(b"2147483648".as_slice(), None)]
    #[case(b"-2147483649".as_slice(), None)]
    #[case(b"+-3".as_slice(), None)]
    #[case(b"-".as_slice(), None)]
    fn int_parse(#[case] text: &[u8], #[case] expected: Option<i32>) {
        assert_eq!(parse_nix_int(text), expected);
    }

    fn arbitrary_generations() -> impl Strategy<Value = Vec<Generation>> {
        prop::collection::vec(
            (0_u32..40, (NOW - 60 * DAY)..=NOW).prop_map(|(number, creation_time)| Generation {
                number,
                creation_time,
            }),
            0..25,
        )
    }

    fn arbitrary_policy() -> impl Strategy<Value = DeletePolicy> {
        prop_oneof![
            Just(DeletePolicy::Old),
            (1_u32..70).prop_map(|days| {
                DeletePolicy::OlderThanDays(NonZeroU32::new(days).unwrap_or(NonZeroU32::MIN))
            }),
            (1_u64..30).prop_map(|keep| {
                DeletePolicy::KeepNewest(NonZeroU64::new(keep).unwrap_or(NonZeroU64::MIN))
            }),
            prop::collection::btree_set(0_u64..45, 0..8).prop_map(DeletePolicy::Numbers),
        ]
    }

    fn arbitrary_current() -> impl Strategy<Value = Option<u32>> {
        prop::option::of(0_u32..45)
    }

    proptest! {
        #[test]
        fn never_deletes_the_current_generation(
            generations in arbitrary_generations(),
            policy in arbitrary_policy(),
            current in arbitrary_current(),
        ) {
            if let Ok(deleted) = policy.generations_to_delete(&generations, current, NOW) {
                prop_assert!(current.is_none_or(|current| !deleted.contains(&current)));
            }
        }

        #[test]
        fn only_number_lists_naming_the_current_generation_are_refused(
            generations in arbitrary_generations(),
            policy in arbitrary_policy(),
            current in arbitrary_current(),
        ) {
            let refused = policy.generations_to_delete(&generations, current, NOW).is_err();
            let names_current = match (&policy, current) {
                (DeletePolicy::Numbers(numbers), Some(current)) => {
                    numbers.contains(&u64::from(current))
                }
                _ => false,
            };
            prop_assert_eq!(refused, names_current);
        }

        #[test]
        fn deletion_lists_have_no_duplicates_and_name_existing_generations(
            generations in arbitrary_generations(),
            policy in arbitrary_policy(),
            current in arbitrary_current(),
        ) {
            if let Ok(deleted) = policy.generations_to_delete(&generations, current, NOW) {
                let distinct: BTreeSet<u32> = deleted.iter().copied().collect();
                prop_assert_eq!(distinct.len(), deleted.len());
                for number in &deleted {
                    prop_assert!(generations.iter().any(|generation| generation.number == *number));
                }
            }
        }

        #[test]
        fn deletion_order_is_ascending_or_newest_first(
            generations in arbitrary_generations(),
            policy in arbitrary_policy(),
            current in arbitrary_current(),
        ) {
            if let Ok(deleted) = policy.generations_to_delete(&generations, current, NOW) {
                let ascending = matches!(policy, DeletePolicy::Old | DeletePolicy::Numbers(_));
                for pair in deleted.windows(2) {
                    let in_order = if ascending { pair[0] < pair[1] } else { pair[0] > pair[1] };
                    prop_assert!(in_order);
                }
            }
        }

        #[test]
        fn old_leaves_exactly_the_current_generation(
            generations in arbitrary_generations(),
            current in arbitrary_current(),
        ) {
            let deleted = DeletePolicy::Old
                .generations_to_delete(&generations, current, NOW)
                .unwrap_or_default();
            let remaining: BTreeSet<u32> = generations
                .iter()
                .map(|generation| generation.number)
                .filter(|number| !deleted.contains(number))
                .collect();
            match current {
                Some(current) if generations.iter().any(|generation| generation.number == current) => {
                    prop_assert_eq!(remaining, BTreeSet::from([current]));
                }
                _ => prop_assert!(remaining.is_empty()),
            }
        }

        #[test]
        fn keep_newest_never_deletes_newer_than_current_and_keeps_n(
            generations in arbitrary_generations(),
            keep in 1_u64..30,
            current in arbitrary_current(),
        ) {
            let policy = DeletePolicy::KeepNewest(NonZeroU64::new(keep).unwrap_or(NonZeroU64::MIN));
            let deleted = policy.generations_to_delete(&generations, current, NOW).unwrap_or_default();
            let Some(current) = current else {
                prop_assert!(deleted.is_empty());
                return Ok(());
            };
            prop_assert!(deleted.iter().all(|&number| number < current));
            let kept_at_or_below: BTreeSet<u32> = generations
                .iter()
                .map(|generation| generation.number)
                .filter(|&number| number <= current && !deleted.contains(&number))
                .collect();
            if !deleted.is_empty() {
                prop_assert_eq!(u64::try_from(kept_at_or_below.len()).unwrap_or(u64::MAX), keep);
            }
        }

        #[test]
        fn days_never_delete_a_generation_newer_than_the_cutoff(
            generations in arbitrary_generations(),
            days in 1_u32..70,
            current in arbitrary_current(),
        ) {
            let policy = DeletePolicy::OlderThanDays(NonZeroU32::new(days).unwrap_or(NonZeroU32::MIN));
            let deleted = policy.generations_to_delete(&generations, current, NOW).unwrap_or_default();
            let cutoff = NOW - i64::from(days) * DAY;
            for number in deleted {
                prop_assert!(generations
                    .iter()
                    .filter(|generation| generation.number == number)
                    .all(|generation| generation.creation_time < cutoff));
            }
        }

        #[test]
        fn discovery_of_canonical_names_round_trips(number in any::<u32>(), name in "[a-z][a-z0-9.]{0,8}") {
            let link = generation_link_name(name.as_bytes(), number);
            prop_assert_eq!(parse_generation_link_name(name.as_bytes(), &link), Some(number));
            prop_assert_eq!(parse_current_generation(name.as_bytes(), &link), Some(number));
        }

        #[test]
        fn discovery_never_panics(profile in prop::collection::vec(any::<u8>(), 0..6), entry in prop::collection::vec(any::<u8>(), 0..24)) {
            let _ = parse_generation_link_name(&profile, &entry);
            let _ = absolute_link_generation(b"/d", &profile, &entry);
        }

        #[test]
        fn delete_parse_never_panics(arguments in prop::collection::vec(".{0,6}", 0..3)) {
            let _ = DeletePolicy::parse(&arguments);
            let _ = parse_switch_generation_arguments(&arguments);
        }

        #[test]
        fn civil_time_agrees_with_jiff(seconds in -200_000_000_000_i64..200_000_000_000, offset in -86_399_i32..86_400) {
            let time = CivilTime::from_unix(seconds, offset);
            let expected = jiff::Timestamp::from_second(seconds + i64::from(offset))
                .map(|timestamp| timestamp.to_zoned(jiff::tz::TimeZone::UTC).datetime());
            if let Ok(expected) = expected {
                prop_assert_eq!(time.year, i64::from(expected.year()));
                prop_assert_eq!(i64::from(time.month), i64::from(expected.month()));
                prop_assert_eq!(i64::from(time.day), i64::from(expected.day()));
                prop_assert_eq!(i64::from(time.hour), i64::from(expected.hour()));
                prop_assert_eq!(i64::from(time.minute), i64::from(expected.minute()));
                prop_assert_eq!(i64::from(time.second), i64::from(expected.second()));
            }
        }
    }
}
