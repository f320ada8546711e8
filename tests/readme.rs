//! The README's two commands hold: the main job applies the example profile, and `.ci/run` calls
//! the test command the README gives.

use std::path::Path;
use std::process::Command;

fn readme() -> String {
    fs_err::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md")
}

/// The commands in the fenced `sh` blocks of the README's "Quick start" section.
fn quick_start_commands() -> Vec<String> {
    let text = readme();
    let section = text
        .split("## Quick start")
        .nth(1)
        .expect("a Quick start section")
        .split("\n## ")
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut commands = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        match (in_block, line.trim()) {
            (false, "```sh") => in_block = true,
            (true, "```") => in_block = false,
            (true, command) if !command.is_empty() => commands.push(command.to_owned()),
            _ => {}
        }
    }
    commands
}

/// Runs the main job as a shell would, with `cargo run --release --` standing for the binary
/// this test was built with.
#[test]
fn main_job_command_applies_the_example_profile() {
    let commands = quick_start_commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let main_job = &commands[0];
    let arguments = main_job
        .strip_prefix("cargo run --release -- ")
        .expect("the main job runs the binary through cargo");
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/profile.lock");
    let lock_before = fs_err::read(&lock).expect("examples/profile.lock");
    // `mktemp -d` makes the root under TMPDIR; point it at a directory that is cleaned up.
    let temporary = tempfile::tempdir().expect("tempdir");
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("\"$DECLENV\" {arguments}"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DECLENV", env!("CARGO_BIN_EXE_declenv"))
        .env("TMPDIR", temporary.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("sh runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let commands_line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("bin/: "))
        .unwrap_or_else(|| panic!("no bin/ line in {stdout}"));
    assert_eq!(commands_line, "busybox cowsay hello jq which");
    assert!(stdout.contains("+ hello-2.12.1 (hello)"), "{stdout}");
    // `--frozen`: the committed lockfile is used as is, never rewritten.
    assert_eq!(fs_err::read(&lock).expect("lockfile"), lock_before);
}

#[test]
fn ci_runs_the_readme_test_command() {
    let commands = quick_start_commands();
    let test_command = &commands[1];
    assert!(test_command.starts_with("cargo test"), "{test_command}");
    let ci = fs_err::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run"))
        .expect(".ci/run");
    assert!(
        ci.lines().any(|line| line.trim() == test_command),
        ".ci/run must run `{test_command}`"
    );
}
