//! The SIGKILL loop: `apply` (three times in four) and the `nix-env` writes `env -i`/`env -e`
//! (the rest) on a profile of 8 packages (of 12), each killed at a random instant of its run, from
//! before it reads anything to after it exits. After every kill the invariants of
//! `hardening/mod.rs` hold (a complete generation, no store damage, no lock held, the spec and
//! lockfile old or new); then the same command runs to completion and `plan
//! --detailed-exitcode` finds nothing to do.
//!
//! 40 kills that land mid-run by default (`hardening::KillSchedule` tries at most three times as
//! many); `DECLENV_KILLS=N` for more (HARDENING.md quotes a run of 400), and `DECLENV_KILL_SEED`
//! replays a schedule.

mod hardening;

use hardening::{Random, World, count_from_env, text};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// How many packages the channel gets, beside the demo ones.
const PACKAGES: usize = 12;

/// A spec installing the generated packages `range`.
fn spec(range: std::ops::Range<usize>) -> String {
    let mut text = String::from("version = 1\n\n[sources.demo]\nchannel = \"channel\"\n");
    for index in range {
        writeln!(text, "\n[packages.kp{index:02}]\nattr = \"kp{index:02}\"").expect("write");
    }
    text
}

/// Adds `kpNN-1.NN` packages (two files each: a run takes long enough to interrupt, mostly
/// in the store's syncs).
fn add_packages(world: &World) {
    for index in 0..PACKAGES {
        let tree = world.channel.join(format!("kp{index:02}-1.{index}"));
        for directory in ["bin", "lib"] {
            fs_err::create_dir_all(tree.join(directory)).expect("mkdir");
        }
        fs_err::write(
            tree.join(format!("bin/kp{index:02}")),
            format!("#!/bin/sh\necho {index}\n"),
        )
        .expect("write");
        fs_err::write(
            tree.join(format!("lib/libkp{index:02}.so")),
            "x".repeat(20_000 + index * 997),
        )
        .expect("write");
    }
}

/// One kind of run the loop interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Apply,
    Env,
}

#[test]
#[expect(clippy::print_stderr, reason = "the figures HARDENING.md quotes")]
fn killing_applies_and_writes_at_random_instants_loses_nothing() {
    let kills = u32::try_from(count_from_env("DECLENV_KILLS", 40)).expect("a count of kills");
    let mut random = Random::from_env("DECLENV_KILL_SEED");
    let world = World::new(&spec(0..8));
    add_packages(&world);
    let specs = [spec(0..8), spec(4..PACKAGES)];
    let started = Instant::now();
    world.ok(&["apply", "-y"]);
    let mut durations = [started.elapsed(), Duration::ZERO];

    let mut schedule = hardening::KillSchedule::new(kills);
    let mut counts = [0_usize; 2];
    let mut spec_index = 0;
    while schedule.wants_more() {
        let attempt = schedule.attempts;
        let kind = if random.below(4) == 0 {
            Kind::Env
        } else {
            Kind::Apply
        };
        let env_args: Vec<String>;
        let args: Vec<&str> = match kind {
            Kind::Apply => {
                spec_index = 1 - spec_index;
                world.write_spec(&specs[spec_index]);
                vec!["apply", "-y"]
            }
            Kind::Env => {
                // Installs one demo package, or erases it when the spec has it.
                let spec_text = text(&world.files().spec.unwrap_or_default());
                env_args = if spec_text.contains("[packages.cowsay]") {
                    vec!["env".into(), "-e".into(), "cowsay".into()]
                } else {
                    vec!["env".into(), "-iA".into(), "demo.cowsay".into()]
                };
                env_args.iter().map(String::as_str).collect()
            }
        };
        let slot = usize::from(kind == Kind::Env);
        counts[slot] += 1;
        let reference = if durations[slot].is_zero() {
            durations[0]
        } else {
            durations[slot]
        };
        let delay = reference.mul_f64(random.unit());
        let context = format!("kill {attempt} ({}) at {delay:?}", args.join(" "));
        let before = world.files();

        let mut child = world.command(&args).spawn().expect("declenv starts");
        let exited_after = schedule.kill_after(&mut child, delay);
        let killed = child.wait_with_output().expect("reaped");
        let killed_files = world.files();

        // The invariants right after the kill; the lockfile and spec are checked against what
        // the completing run below leaves.
        world.check(&context, &[&before, &killed_files]);
        let started = Instant::now();
        let output = hardening::finish(world.command(&args).spawn().expect("starts"), &context);
        assert!(
            output.status.success(),
            "{context}: the completing run failed: {}\n(the killed run said: {})",
            text(&output.stderr),
            text(&killed.stderr)
        );
        // A run that finished before its kill timed a whole run; the completing run after it
        // had nothing left to do.
        durations[slot] = exited_after.unwrap_or_else(|| started.elapsed());
        let after = world.files();
        assert!(
            killed_files.spec == before.spec || killed_files.spec == after.spec,
            "{context}: the spec after the kill is neither old nor new"
        );
        assert!(
            killed_files.lock == before.lock || killed_files.lock == after.lock,
            "{context}: the lockfile after the kill is neither old nor new"
        );
        let plan = world.run(&["plan", "--detailed-exitcode"]);
        assert_eq!(
            plan.status.code(),
            Some(0),
            "{context}: no convergence: {}{}",
            text(&plan.stdout),
            text(&plan.stderr)
        );
        world.check(&context, &[&after]);
    }
    eprintln!(
        "kill loop: {} kills ({} applies, {} env writes), {} landed mid-run, nothing lost",
        schedule.attempts, counts[0], counts[1], schedule.landed
    );
    let (numbers, current) = world.generations();
    assert!(numbers.windows(2).all(|pair| pair[0] < pair[1]));
    assert!(current.is_some_and(|number| numbers.contains(&number)));
}
