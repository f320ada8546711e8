//! Fault injection (`DECLENV_FAULT`, see `src/fault.rs`): every fault point, at every hit a
//! command reaches it, for `apply`, the `nix-env` writes `env -i` and `env -e`, `rollback`
//! (plain and `--restore-spec`), `generations delete` and `gc --delete-old`. Each case starts
//! from a fresh world brought to the scenario's starting state, runs the command with one fault
//! armed, and checks the invariants of `hardening/mod.rs`: a complete generation, no store
//! damage, the spec and lockfile old or new (the new bytes are those of an uninterrupted
//! reference run), no lock held, and convergence on the next run.
//!
//! Every reached (point, hit) is tried with `abort` and with one of `error`, `enospc` and
//! `eacces` in turn; `DECLENV_FAULTS_FULL=1` tries all four actions at each.

mod hardening;

use declenv::fault::{Action, Point};
use hardening::{Files, SPEC_A, SPEC_B, SPEC_C, World, text};

/// A starting state and a command to break.
struct Scenario {
    name: &'static str,
    /// Brings a fresh world to the starting state.
    setup: fn(&World),
    command: &'static [&'static str],
}

fn applied(world: &World, specs: &[&str]) {
    for spec in specs {
        world.write_spec(spec);
        world.ok(&["apply", "-y"]);
    }
}

/// What one scenario's runs found.
#[derive(Debug, Default)]
struct Tally {
    /// Faults that fired.
    injected: usize,
    /// Of those, aborts.
    aborts: usize,
    /// Points reached at least once.
    reached: Vec<&'static str>,
}

fn run_scenario(scenario: &Scenario) -> Tally {
    let full = std::env::var_os("DECLENV_FAULTS_FULL").is_some();

    // The reference: the command uninterrupted, from the same starting state.
    let reference = World::new(SPEC_A);
    (scenario.setup)(&reference);
    let before = reference.files();
    let output = reference.run(scenario.command);
    assert!(
        output.status.success(),
        "{}: the reference run failed: {}",
        scenario.name,
        text(&output.stderr)
    );
    let after = reference.files();

    let mut tally = Tally::default();
    let mut rotation = [Action::Error, Action::NoSpace, Action::Denied]
        .into_iter()
        .cycle();
    for point in Point::ALL {
        for hit in 1.. {
            let actions: Vec<Action> = if full {
                Action::FAILURES.to_vec()
            } else {
                vec![Action::Abort, rotation.next().expect("cycle")]
            };
            let mut reached = false;
            for action in actions {
                let fault = format!("{}:{}@{hit}", point.name(), action.name());
                let context = format!("{}: {fault}", scenario.name);
                let world = World::new(SPEC_A);
                (scenario.setup)(&world);
                assert_eq!(
                    world.files(),
                    before,
                    "{context}: the starting state differs from the reference's"
                );
                let output = world.run_with_fault(scenario.command, &fault);
                let stderr = text(&output.stderr);
                if !stderr.contains(&declenv::fault::marker(point)) {
                    // Not reached at this hit (so at no later one): the command ran as usual.
                    assert!(output.status.success(), "{context}: {stderr}");
                    assert_eq!(world.files(), after, "{context}");
                    break;
                }
                reached = true;
                tally.injected += 1;
                if action == Action::Abort {
                    tally.aborts += 1;
                    assert!(!output.status.success(), "{context}: survived an abort");
                } else if output.status.success() {
                    // Some writes may fail harmlessly (a cache); then the command did its job.
                    assert_eq!(world.files(), after, "{context}: succeeded, but: {stderr}");
                } else {
                    assert!(
                        stderr.contains("error:"),
                        "{context}: failed without an error message: {stderr}"
                    );
                }
                world.check(&context, &[&before, &after]);
                world.check_converges(&context);
            }
            if !reached {
                break;
            }
            if hit == 1 {
                tally.reached.push(point.name());
            }
        }
    }
    hardening_report(scenario, &tally);
    tally
}

#[expect(clippy::print_stderr, reason = "the figures HARDENING.md quotes")]
fn hardening_report(scenario: &Scenario, tally: &Tally) {
    eprintln!(
        "faults: {}: {} injected ({} aborts) at {}",
        scenario.name,
        tally.injected,
        tally.aborts,
        tally.reached.join(", ")
    );
}

#[test]
fn apply_survives_every_fault() {
    let tally = run_scenario(&Scenario {
        name: "apply",
        setup: |world| {
            applied(world, &[SPEC_A]);
            world.write_spec(SPEC_B);
        },
        command: &["apply", "-y"],
    });
    for point in [
        Point::StoreTempWritten,
        Point::StoreBeforeRegister,
        Point::GenerationBeforeLink,
        Point::GenerationBeforeMetadata,
        Point::ProfileBeforeSwitch,
        Point::LockfileWrite,
        Point::Write,
    ] {
        assert!(
            tally.reached.contains(&point.name()),
            "{point:?} not reached"
        );
    }
}

#[test]
fn env_install_survives_every_fault() {
    let tally = run_scenario(&Scenario {
        name: "env -i",
        setup: |world| applied(world, &[SPEC_A]),
        command: &["env", "-iA", "demo.cowsay"],
    });
    for point in [
        Point::SpecWrite,
        Point::LockfileWrite,
        Point::ProfileBeforeSwitch,
    ] {
        assert!(
            tally.reached.contains(&point.name()),
            "{point:?} not reached"
        );
    }
}

#[test]
fn env_erase_survives_every_fault() {
    let tally = run_scenario(&Scenario {
        name: "env -e",
        setup: |world| applied(world, &[SPEC_B]),
        command: &["env", "-e", "jq"],
    });
    for point in [
        Point::SpecWrite,
        Point::LockfileWrite,
        Point::ProfileBeforeSwitch,
    ] {
        assert!(
            tally.reached.contains(&point.name()),
            "{point:?} not reached"
        );
    }
}

#[test]
fn rollback_survives_every_fault() {
    let tally = run_scenario(&Scenario {
        name: "rollback",
        setup: |world| applied(world, &[SPEC_A, SPEC_B]),
        command: &["rollback"],
    });
    assert!(tally.reached.contains(&Point::ProfileBeforeSwitch.name()));
    let tally = run_scenario(&Scenario {
        name: "rollback --restore-spec",
        setup: |world| applied(world, &[SPEC_A, SPEC_B]),
        command: &["rollback", "--restore-spec"],
    });
    for point in [
        Point::SpecWrite,
        Point::LockfileWrite,
        Point::ProfileBeforeSwitch,
    ] {
        assert!(
            tally.reached.contains(&point.name()),
            "{point:?} not reached"
        );
    }
}

#[test]
fn deleting_generations_survives_every_fault() {
    let tally = run_scenario(&Scenario {
        name: "generations delete",
        setup: |world| applied(world, &[SPEC_A, SPEC_B, SPEC_C]),
        command: &["generations", "delete", "1", "2"],
    });
    assert!(
        tally
            .reached
            .contains(&Point::GenerationBeforeUnlink.name())
    );
}

#[test]
fn gc_survives_every_fault() {
    let tally = run_scenario(&Scenario {
        name: "gc --delete-old",
        setup: |world| applied(world, &[SPEC_A, SPEC_B, SPEC_C]),
        command: &["gc", "--delete-old"],
    });
    for point in [Point::GenerationBeforeUnlink, Point::StoreBeforeDelete] {
        assert!(
            tally.reached.contains(&point.name()),
            "{point:?} not reached"
        );
    }
}

#[test]
fn an_unknown_fault_is_reported_and_ignored() {
    let world = World::new(SPEC_A);
    let output = world.run_with_fault(&["apply", "-y"], "nowhere:abort");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("ignoring `DECLENV_FAULT`: unknown fault point `nowhere`"),
        "{}",
        text(&output.stderr)
    );
    let files: Files = world.files();
    world.check("after an ignored fault", &[&files]);
}
