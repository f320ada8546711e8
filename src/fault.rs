//! Fault injection for the hardening tests: makes declenv fail, or die, at named points of the
//! changes it makes on disk, so that a test can check what each failure leaves behind.
//!
//! Compiled in always and inert unless the environment variable `DECLENV_FAULT` is set (one
//! lookup per process, then a check of a parsed list). Its value is a comma-separated list of
//! `POINT[:ACTION][@N]`:
//!
//! * `POINT` is one of [`Point::ALL`], by [`Point::name`];
//! * `ACTION` is `abort` (the default: `std::process::abort`, as sudden as a `SIGKILL` but at
//!   a chosen instant), `error` (an injected `EIO`), `enospc` or `eacces` (those errors, as the
//!   kernel would report them), or `pause`: wait there until the file named by
//!   `DECLENV_FAULT_RELEASE` exists (at most [`PAUSE_BOUND`]), then go on, so that a test can
//!   run another command at exactly that instant;
//! * `N` fires the fault the N-th time the process reaches the point (default: the first time);
//!   it fires once.
//!
//! When a fault fires, declenv says so on stderr (`declenv: injected fault at POINT (ACTION)`)
//! before acting, so a test can tell a point that was reached from one that was not. A value
//! that does not parse is reported on stderr (`declenv: ignoring `DECLENV_FAULT`: …`) and
//! arms nothing.
//!
//! Owns nothing else: callers decide what an injected error means (each maps it as it maps the
//! real I/O error the point stands for).

use std::io::{self, Write as _};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable that arms faults.
pub const VARIABLE: &str = "DECLENV_FAULT";

/// The environment variable naming the file whose existence ends a `pause`.
pub const RELEASE_VARIABLE: &str = "DECLENV_FAULT_RELEASE";

/// The longest a `pause` waits for its release file.
pub const PAUSE_BOUND: std::time::Duration = std::time::Duration::from_secs(120);

/// A place where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// The store: a tree to add is complete in its temporary entry, not yet moved into place.
    StoreTempWritten,
    /// The store: a tree is in place and read-only, its registration not yet written.
    StoreBeforeRegister,
    /// The store: a path's registration is removed (it is invalid), its tree not yet moved
    /// aside (garbage collection).
    StoreBeforeDelete,
    /// A profile: a new generation's GC root is written, its link not yet.
    GenerationBeforeLink,
    /// A profile: a new generation's link exists, its metadata (with the spec and lockfile it
    /// was built from) not yet.
    GenerationBeforeMetadata,
    /// A profile: the new profile link exists under a temporary name, not yet renamed over the
    /// profile.
    ProfileBeforeSwitch,
    /// A profile: a generation link about to be removed (deleting generations).
    GenerationBeforeUnlink,
    /// A lockfile (`*.lock`) being written: half of the new content is in the temporary file,
    /// which is not yet renamed over the lockfile.
    LockfileWrite,
    /// A spec (`*.toml`) being written: half of the new content is in the temporary file, which
    /// is not yet renamed over the spec.
    SpecWrite,
    /// Any atomic file write (lockfile, spec, registration, generation metadata, caches),
    /// before its temporary file is created: where `ENOSPC` or `EACCES` would first show.
    Write,
}

impl Point {
    /// Every point, in the order a change reaches them.
    pub const ALL: [Self; 10] = [
        Self::StoreTempWritten,
        Self::StoreBeforeRegister,
        Self::StoreBeforeDelete,
        Self::GenerationBeforeLink,
        Self::GenerationBeforeMetadata,
        Self::ProfileBeforeSwitch,
        Self::GenerationBeforeUnlink,
        Self::LockfileWrite,
        Self::SpecWrite,
        Self::Write,
    ];

    /// The point's name in `DECLENV_FAULT`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::StoreTempWritten => "store-temp-written",
            Self::StoreBeforeRegister => "store-before-register",
            Self::StoreBeforeDelete => "store-before-delete",
            Self::GenerationBeforeLink => "generation-before-link",
            Self::GenerationBeforeMetadata => "generation-before-metadata",
            Self::ProfileBeforeSwitch => "profile-before-switch",
            Self::GenerationBeforeUnlink => "generation-before-unlink",
            Self::LockfileWrite => "lockfile-write",
            Self::SpecWrite => "spec-write",
            Self::Write => "write",
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|point| *point == self)
            .unwrap_or(0)
    }
}

/// What an armed point does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `std::process::abort`: the process dies at once, running no destructor.
    Abort,
    /// The operation fails with `EIO`.
    Error,
    /// The operation fails with `ENOSPC` (no space left on device).
    NoSpace,
    /// The operation fails with `EACCES` (permission denied).
    Denied,
    /// The process waits for the release file, then goes on.
    Pause,
}

impl Action {
    /// Every action.
    pub const ALL: [Self; 5] = [
        Self::Abort,
        Self::Error,
        Self::NoSpace,
        Self::Denied,
        Self::Pause,
    ];

    /// The actions that make the operation fail.
    pub const FAILURES: [Self; 4] = [Self::Abort, Self::Error, Self::NoSpace, Self::Denied];

    /// The action's name in `DECLENV_FAULT`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Abort => "abort",
            Self::Error => "error",
            Self::NoSpace => "enospc",
            Self::Denied => "eacces",
            Self::Pause => "pause",
        }
    }

    /// The error an injected failure returns (Linux's numbers, which macOS shares).
    fn error(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            Self::NoSpace => 28,
            Self::Denied => 13,
            Self::Abort | Self::Error | Self::Pause => 5,
        })
    }
}

/// One armed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Armed {
    point: Point,
    action: Action,
    /// Fires on this hit (1-based).
    hit: u32,
}

/// Parses `POINT[:ACTION][@N],…`.
fn parse(text: &str) -> Result<Vec<Armed>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (rest, hit) = match item.split_once('@') {
                Some((rest, number)) => (
                    rest,
                    number
                        .parse::<u32>()
                        .ok()
                        .filter(|hit| *hit > 0)
                        .ok_or_else(|| format!("`{number}` is not a hit number in `{item}`"))?,
                ),
                None => (item, 1),
            };
            let (point_name, action_name) = rest.split_once(':').unwrap_or((rest, "abort"));
            let point = Point::ALL
                .into_iter()
                .find(|point| point.name() == point_name)
                .ok_or_else(|| format!("unknown fault point `{point_name}`"))?;
            let action = Action::ALL
                .into_iter()
                .find(|action| action.name() == action_name)
                .ok_or_else(|| format!("unknown fault action `{action_name}`"))?;
            Ok(Armed { point, action, hit })
        })
        .collect()
}

/// The armed points of this process, and how often each point was reached.
struct State {
    armed: Vec<Armed>,
    hits: [AtomicU32; Point::ALL.len()],
}

fn state() -> Option<&'static State> {
    static STATE: OnceLock<Option<State>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let value = std::env::var_os(VARIABLE)?;
            let armed = match parse(&value.to_string_lossy()) {
                Ok(armed) => armed,
                Err(problem) => {
                    let _ = writeln!(io::stderr(), "declenv: ignoring `{VARIABLE}`: {problem}");
                    return None;
                }
            };
            Some(State {
                armed,
                hits: std::array::from_fn(|_| AtomicU32::new(0)),
            })
        })
        .as_ref()
}

/// Marks `point` as reached: returns the injected error, or aborts the process, when a fault is
/// armed there for this hit; otherwise (always, unless `DECLENV_FAULT` is set) does nothing.
pub fn inject(point: Point) -> io::Result<()> {
    let Some(state) = state() else {
        return Ok(());
    };
    let hit = state.hits[point.index()].fetch_add(1, Ordering::SeqCst) + 1;
    let Some(armed) = state
        .armed
        .iter()
        .find(|armed| armed.point == point && armed.hit == hit)
    else {
        return Ok(());
    };
    let _ = writeln!(
        io::stderr(),
        "declenv: injected fault at {} ({})",
        point.name(),
        armed.action.name()
    );
    match armed.action {
        Action::Abort => std::process::abort(),
        Action::Pause => {
            pause();
            Ok(())
        }
        action => Err(action.error()),
    }
}

/// Waits until the release file exists, or [`PAUSE_BOUND`] has passed.
fn pause() {
    let Some(release) = std::env::var_os(RELEASE_VARIABLE) else {
        return;
    };
    let started = std::time::Instant::now();
    while !std::path::Path::new(&release).exists() && started.elapsed() < PAUSE_BOUND {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The marker a fired fault prints on stderr, for tests to look for.
#[must_use]
pub fn marker(point: Point) -> String {
    format!("declenv: injected fault at {} (", point.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_actions_and_hits() {
        assert_eq!(
            parse("store-temp-written, lockfile-write:enospc@3,write:eacces").expect("parses"),
            [
                Armed {
                    point: Point::StoreTempWritten,
                    action: Action::Abort,
                    hit: 1
                },
                Armed {
                    point: Point::LockfileWrite,
                    action: Action::NoSpace,
                    hit: 3
                },
                Armed {
                    point: Point::Write,
                    action: Action::Denied,
                    hit: 1
                },
            ]
        );
        assert_eq!(parse("").expect("parses"), []);
    }

    #[test]
    fn refuses_unknown_names_and_bad_hits() {
        assert!(parse("nowhere").is_err());
        assert!(parse("write:explode").is_err());
        assert!(parse("write@0").is_err());
        assert!(parse("write@x").is_err());
    }

    #[test]
    fn names_are_unique_and_round_trip() {
        for point in Point::ALL {
            assert_eq!(
                parse(point.name()).expect("parses")[0].point,
                point,
                "{point:?}"
            );
        }
        for action in Action::ALL {
            let text = format!("write:{}", action.name());
            assert_eq!(parse(&text).expect("parses")[0].action, action);
        }
    }

    #[test]
    fn injected_errors_are_the_kernels() {
        assert_eq!(
            Action::NoSpace.error().kind(),
            io::ErrorKind::StorageFull,
            "ENOSPC"
        );
        assert_eq!(
            Action::Denied.error().kind(),
            io::ErrorKind::PermissionDenied
        );
    }
}
