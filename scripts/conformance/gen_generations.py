#!/usr/bin/env python3
"""Record how Nix 2.8 handles profile generations, for tests/generations_conformance.rs.

Each scenario starts from an empty profile directory and runs a sequence of steps against the
real `nix-env` on a private store: installs and `--set` (which create or reuse generations),
`--rollback`, `--switch-generation`, every `--delete-generations` form, `--list-generations`,
hand-made directory entries with odd names, and `touch -h` of generation links (to give them
deterministic or aged modification times). After every step the script records `nix-env`'s
stdout, stderr and exit status and the complete listing of the profile's directory (names,
kinds and link texts). Store paths are replaced by labels (`@STORE@/env-a`,
`@STORE@/user-environment#1`) and the profile directory by `@DIR@`, so the Rust test can replay
the same steps on a temporary directory with symlinks to fake targets and compare.

Run as root with Nix 2.8 on PATH, no daemon:

    python3 scripts/conformance/gen_generations.py            # writes tests/fixtures/generations/
    python3 scripts/conformance/gen_generations.py --out DIR  # writes DIR/scenarios.json

Times: links made by a step are touched to deterministic times (1,700,000,000 + 60 s steps) so
that `--list-generations` output (taken with TZ=UTC) does not depend on the clock. Scenarios for
`--delete-generations Nd` age the links relative to the real clock; such a step records `now`,
and the scenario is re-run if the clock ticked over a second between touching and deleting.

Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "generations"
DAY = 86_400
BASE_TIME = 1_700_000_000

PACKAGES_NIX = """
let mk = name: derivation {
  inherit name;
  system = builtins.currentSystem;
  PATH = "/usr/bin:/bin";
  builder = "/bin/sh";
  args = [ "-c" "mkdir -p $out/bin && echo 'echo ${name}' > $out/bin/${name}" ];
};
in { foo = mk "foo-1.0"; bar = mk "bar-0.1"; baz = mk "baz-2"; }
"""


class Retry(Exception):
    """The clock ticked between aging links and running nix-env; run the scenario again."""


class Nix:
    """A private Nix store and state directory under one temporary directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = root / "store"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "NIX_STORE_DIR": str(self.store),
            "NIX_STATE_DIR": str(root / "var" / "nix"),
            "NIX_LOCALSTATE_DIR": str(root / "var"),
            "NIX_LOG_DIR": str(root / "var" / "log" / "nix"),
            "NIX_CONF_DIR": str(root / "etc"),
            "NIX_REMOTE": "local",
            "HOME": str(root / "home"),
            "NIX_CONFIG": "sandbox = false\nsubstituters =",
            "TZ": "UTC",
            "LANG": "C.UTF-8",
        }
        for directory in ("home", "etc", "profiles", "sources"):
            (root / directory).mkdir(parents=True, exist_ok=True)
        (root / "pkgs.nix").write_text(PACKAGES_NIX)
        self.labels: dict[str, str] = {}
        self.env_paths: dict[str, str] = {}

    def add_environment(self, label: str) -> str:
        """A store path `…-label`, made with `nix-store --add` from a small directory."""
        if label in self.env_paths:
            return self.env_paths[label]
        source = self.root / "sources" / label
        (source / "bin").mkdir(parents=True, exist_ok=True)
        (source / "bin" / label).write_text(label + "\n")
        result = subprocess.run(
            ["nix-store", "--add", str(source)], env=self.env, capture_output=True, text=True,
            check=True,
        )
        path = result.stdout.strip()
        self.env_paths[label] = path
        self.labels[path] = label
        return path

    def label(self, path: str) -> str:
        """The label of a store path, assigned on first sight."""
        if path not in self.labels:
            name = Path(path).name.split("-", 1)[-1]
            count = sum(1 for label in self.labels.values() if label.split("#")[0] == name)
            self.labels[path] = f"{name}#{count + 1}"
        return self.labels[path]


class Scenario:
    """One profile and the steps run on it."""

    def __init__(self, nix: Nix, name: str, profile_name: str = "prof") -> None:
        self.nix = nix
        self.name = name
        self.directory = nix.root / "profiles" / name
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        self.profile = self.directory / profile_name
        self.profile_name = profile_name
        self.steps: list[dict] = []
        self.next_time = BASE_TIME
        self.seen: set[str] = set()

    # ---- normalisation ---------------------------------------------------------------------

    def normalize_text(self, text: str) -> str:
        for path, label in sorted(self.nix.labels.items(), key=lambda item: -len(item[0])):
            text = text.replace(path, "@STORE@/" + label)
        text = text.replace(str(self.directory), "@DIR@")
        return text.replace(str(self.nix.store), "@STORE@")

    def normalize_target(self, target: str) -> str:
        if target.startswith(str(self.nix.store) + "/"):
            return "@STORE@/" + self.nix.label(target)
        return self.normalize_text(target)

    def listing(self) -> dict[str, dict]:
        entries = {}
        for name in sorted(os.listdir(self.directory)):
            path = self.directory / name
            if path.is_symlink():
                entries[name] = {"kind": "symlink", "target": self.normalize_target(os.readlink(path))}
            elif path.is_dir():
                entries[name] = {"kind": "dir"}
            else:
                entries[name] = {"kind": "file"}
        return entries

    # ---- steps -----------------------------------------------------------------------------

    def touch(self, entry: str, when: int) -> None:
        subprocess.run(["touch", "-h", "-d", f"@{when}", str(self.directory / entry)], check=True)
        self.steps.append({"op": "touch", "entry": entry, "time": when})

    def touch_new_entries(self) -> None:
        """Gives links made by the last step deterministic times, in name order."""
        for name in sorted(os.listdir(self.directory)):
            if name in self.seen or name == self.profile_name or name.endswith(".lock"):
                continue
            self.seen.add(name)
            if name.startswith(self.profile_name + "-"):
                self.touch(name, self.next_time)
                self.next_time += 60

    def make(self, entry: str, kind: str, target: str | None = None) -> None:
        """A hand-made entry: a symlink to a store label or to raw text, a file or a directory."""
        path = self.directory / entry
        step = {"op": "make", "entry": entry, "kind": kind}
        if kind == "symlink":
            assert target is not None
            if target.startswith("@STORE@/"):
                os.symlink(self.nix.add_environment(target.removeprefix("@STORE@/")), path)
            else:
                os.symlink(target.replace("@DIR@", str(self.directory)), path)
            step["target"] = target
        elif kind == "file":
            path.write_text("x\n")
        else:
            path.mkdir()
        self.steps.append(step)
        self.seen.add(entry)

    def remove(self, entry: str) -> None:
        path = self.directory / entry
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
        self.steps.append({"op": "remove", "entry": entry})

    def nix_env(self, *arguments: str, env: str | None = None, now_check: bool = False,
                extra_args: list[str] | None = None) -> dict:
        """Runs `nix-env -p PROFILE ARGS` and records it. `env` names the store path of a
        `--set` (its label is recorded in place of the path)."""
        args = list(arguments)
        recorded = list(arguments)
        if env is not None:
            args.append(self.nix.add_environment(env))
            recorded.append("@STORE@/" + env)
        args += extra_args or []
        recorded += extra_args or []
        before = int(time.time())
        result = subprocess.run(
            ["nix-env", "-p", str(self.profile), "-f", str(self.nix.root / "pkgs.nix"), *args],
            env=self.nix.env, capture_output=True, text=True, cwd=self.nix.root,
        )
        after = int(time.time())
        if now_check and before != after:
            raise Retry()
        creates = args[0] in ("--set", "-i", "-iA")
        if creates and result.returncode != 0:
            raise RuntimeError(f"nix-env {' '.join(args)} failed:\n{result.stderr}")
        # A process killed by a signal exits, as a shell reports it, with 128 + the signal.
        exit_status = result.returncode if result.returncode >= 0 else 128 - result.returncode
        step = {
            "op": "nix-env",
            "args": recorded,
            "exit": exit_status,
            "stdout": self.normalize_text(result.stdout),
            "stderr": None if creates else self.normalize_text(result.stderr),
        }
        if creates:
            resolved = os.path.realpath(self.profile) if self.profile.is_symlink() else None
            step["env"] = self.normalize_target(resolved) if resolved else None
        if now_check:
            step["now"] = before
        self.steps.append(step)
        self.touch_new_entries()
        step["links"] = self.listing()
        return step

    def list_generations(self) -> dict:
        return self.nix_env("--list-generations")

    def record(self) -> dict:
        return {
            "name": self.name,
            "profile": str(self.profile.relative_to(self.directory)),
            "steps": self.steps,
        }


# ---- scenarios --------------------------------------------------------------------------------


def seven_generations(scenario: Scenario, current: int) -> None:
    for label in "abcdefg":
        scenario.nix_env("--set", env=f"env-{label}")
    scenario.nix_env("--switch-generation", str(current))


def installs_and_reuse(nix: Nix) -> Scenario:
    """Reference §10.4: reuse compares with the highest generation, not the current one."""
    s = Scenario(nix, "installs_and_reuse")
    s.list_generations()
    s.nix_env("-iA", "foo")
    s.nix_env("-iA", "bar")
    s.nix_env("--rollback")
    s.nix_env("-iA", "bar")
    s.list_generations()
    s.nix_env("--switch-generation", "1")
    s.nix_env("-iA", "foo")
    s.nix_env("-iA", "foo")
    s.list_generations()
    s.nix_env("--rollback")
    s.nix_env("--rollback")
    s.nix_env("--rollback")
    s.nix_env("--switch-generation", "99")
    s.nix_env("--switch-generation", "+2")
    s.nix_env("--switch-generation", "02")
    s.nix_env("--switch-generation", "3", "--dry-run")
    s.nix_env("--rollback", "--dry-run")
    s.list_generations()
    s.nix_env("-iA", "baz")
    s.list_generations()
    return s


def set_and_reuse(nix: Nix) -> Scenario:
    s = Scenario(nix, "set_and_reuse")
    s.nix_env("--set", env="env-a")
    s.nix_env("--set", env="env-a")
    s.nix_env("--set", env="env-b")
    s.nix_env("--rollback")
    s.nix_env("--set", env="env-b")
    s.nix_env("--set", env="env-a")
    s.list_generations()
    s.nix_env("--delete-generations", "2")
    s.nix_env("--set", env="env-c")
    s.list_generations()
    return s


DELETE_FORMS = [
    ("numbers", ["1", "3", "9"]),
    ("numbers_with_current", ["2", "4"]),
    ("old", ["old"]),
    ("keep_two", ["+2"]),
    ("keep_one", ["+1"]),
    ("keep_ten", ["+10"]),
    ("keep_leading_zero", ["+03"]),
    ("keep_double_plus", ["++3"]),
    ("keep_huge", ["+18446744073709551615"]),
    ("plus_five_three", ["+5", "3"]),
    ("no_arguments", []),
    ("zeros", ["00"]),
    ("above_u32", ["4294967296"]),
]


def delete_form(nix: Nix, name: str, arguments: list[str]) -> Scenario:
    s = Scenario(nix, "delete_" + name)
    seven_generations(s, 4)
    s.nix_env("--delete-generations", *arguments, "--dry-run")
    s.nix_env("--delete-generations", *arguments)
    s.list_generations()
    return s


AGES = {1: 40, 2: 30, 3: 20, 4: 12, 5: 8, 6: 3, 7: 1}

DAY_FORMS = [
    ("ten_days", 7, "10d"),
    ("eight_days_to_the_second", 7, "8d"),
    ("twenty_five_days", 7, "25d"),
    ("current_two", 2, "10d"),
    ("hundred_days", 7, "100d"),
    ("one_day", 7, "1d"),
    ("plus_three_days", 7, "+3d"),
]


def wait_for_a_fresh_second() -> int:
    now = time.time()
    time.sleep(1.0 - (now - int(now)) + 0.01)
    return int(time.time())


def age_and_delete(s: Scenario, ages: dict[int, int], arguments: list[str]) -> None:
    now = wait_for_a_fresh_second()
    for number, days in ages.items():
        s.touch(f"{s.profile_name}-{number}-link", now - days * DAY)
    if int(time.time()) != now:
        raise Retry()
    step = s.nix_env("--delete-generations", *arguments, now_check=True)
    if step["now"] != now:
        raise Retry()


def delete_days(nix: Nix, name: str, current: int, argument: str) -> Scenario:
    s = Scenario(nix, "days_" + name)
    seven_generations(s, current)
    age_and_delete(s, AGES, [argument, "--dry-run"])
    age_and_delete(s, AGES, [argument])
    s.list_generations()
    return s


def days_overflow(nix: Nix) -> Scenario:
    """Nix 2.8 computes the cutoff in a 32-bit int: 24856d wraps into the future."""
    s = Scenario(nix, "days_overflow")
    seven_generations(s, 7)
    age_and_delete(s, AGES, ["24855d"])
    age_and_delete(s, AGES, ["24856d"])
    return s


def days_unordered(nix: Nix) -> Scenario:
    """Generation 2 is newer than the cutoff but below the kept one: Nix 2.8 aborts."""
    s = Scenario(nix, "days_unordered")
    seven_generations(s, 7)
    ages = dict(AGES)
    ages[2] = 1
    age_and_delete(s, ages, ["10d"])
    return s


ARGUMENT_ERRORS = [
    ["--delete-generations", "0d"], ["--delete-generations", "dx"], ["--delete-generations", "d"],
    ["--delete-generations", "1dd"], ["--delete-generations", " 3d"],
    ["--delete-generations", "99999999999d"], ["--delete-generations", "2147483648d"],
    ["--delete-generations", "3D"], ["--delete-generations", "1.5d"], ["--delete-generations", "d3"],
    ["--delete-generations", ""], ["--delete-generations", "+"], ["--delete-generations", "+0"],
    ["--delete-generations", "+x"], ["--delete-generations", "3+"], ["--delete-generations", "+ 3"],
    ["--delete-generations", "+99999999999999999999"], ["--delete-generations", "x+"],
    ["--delete-generations", "old", "1"], ["--delete-generations", "1", "old"],
    ["--delete-generations", "1d", "2"], ["--delete-generations", "OLD"],
    ["--delete-generations", "18446744073709551616"], ["--delete-generations", "0d", "--dry-run"],
    ["--switch-generation"], ["--switch-generation", "1", "2"], ["--switch-generation", ""],
    ["--switch-generation", " 1"], ["--switch-generation", "x"],
    ["--switch-generation", "18446744073709551616"], ["--switch-generation", "4294967297"],
    ["--rollback", "1"], ["--list-generations", "x"],
]


def argument_errors(nix: Nix) -> Scenario:
    s = Scenario(nix, "argument_errors")
    s.nix_env("--set", env="env-a")
    s.nix_env("--set", env="env-b")
    for arguments in ARGUMENT_ERRORS:
        s.nix_env(*arguments)
    s.list_generations()
    return s


def discovery(nix: Nix) -> Scenario:
    """Reference §10.2: which names count, and deleting a number found under an odd name."""
    s = Scenario(nix, "discovery", profile_name="del")
    entries = [
        ("del-07-link", "symlink", "@STORE@/env-a"), ("del-4-linkfoo", "symlink", "@STORE@/env-b"),
        ("del-+5-link", "symlink", "@STORE@/env-c"), ("del-10-link.txt", "file", None),
        ("del-x-link", "symlink", "@STORE@/env-d"), ("del--6-link", "symlink", "@STORE@/env-d"),
        ("del- 8-link", "symlink", "@STORE@/env-d"), ("del-99999999999-link", "symlink", "@STORE@/env-d"),
        ("del-7-link", "symlink", "@STORE@/env-e"), ("del-12-link", "dir", None),
        ("del-13-link-14-link", "symlink", "@STORE@/env-e"), ("del-15-lin", "symlink", "@STORE@/env-e"),
        ("del-17-link-", "symlink", "@STORE@/env-e"), ("dele-18-link", "symlink", "@STORE@/env-e"),
        (".del-19-link", "symlink", "@STORE@/env-e"), ("del-20-link.json", "symlink", "@STORE@/env-f"),
        ("del-4294967296-link", "symlink", "@STORE@/env-e"),
    ]
    for index, (entry, kind, target) in enumerate(entries):
        s.make(entry, kind, target)
        s.touch(entry, BASE_TIME + index)
    s.list_generations()
    s.make("del", "symlink", "del-13-link-14-link")
    s.list_generations()
    s.nix_env("--rollback", "--dry-run")
    s.nix_env("--delete-generations", "7", "--dry-run")
    s.nix_env("--set", env="env-f")
    s.list_generations()
    s.nix_env("--set", env="env-g")
    s.list_generations()
    # Nix 2.8 tries `del-7-link` twice and fails the second time; declenv removes both entries.
    s.nix_env("--delete-generations", "7")
    return s


def discovery_odd_name_delete(nix: Nix) -> Scenario:
    """Nix 2.8 deletes by canonical name: `del-4-linkfoo` is generation 4 but cannot be deleted."""
    s = Scenario(nix, "discovery_odd_name_delete", profile_name="del")
    s.make("del-4-linkfoo", "symlink", "@STORE@/env-a")
    s.make("del-5-link", "symlink", "@STORE@/env-b")
    s.touch("del-4-linkfoo", BASE_TIME)
    s.touch("del-5-link", BASE_TIME + 60)
    s.make("del", "symlink", "del-5-link")
    s.nix_env("--delete-generations", "4")
    return s


def discovery_regular_file_delete(nix: Nix) -> Scenario:
    """A regular file named like a generation: Nix 2.8 `remove()`s it; declenv refuses."""
    s = Scenario(nix, "discovery_regular_file_delete", profile_name="del")
    s.make("del-4-link", "file")
    s.make("del-5-link", "symlink", "@STORE@/env-b")
    s.touch("del-4-link", BASE_TIME)
    s.touch("del-5-link", BASE_TIME + 60)
    s.make("del", "symlink", "del-5-link")
    s.list_generations()
    s.nix_env("--delete-generations", "old")
    return s


def absolute_link(nix: Nix) -> Scenario:
    """Reference §10.2: an absolute profile link means no current generation."""
    s = Scenario(nix, "absolute_link")
    for label in "abc":
        s.nix_env("--set", env=f"env-{label}")
    s.remove("prof")
    s.make("prof", "symlink", "@DIR@/prof-2-link")
    s.list_generations()
    s.nix_env("--rollback")
    s.nix_env("--delete-generations", "+1")
    s.nix_env("--delete-generations", "1")
    s.list_generations()
    # Nix 2.8 deletes the generation the absolute link points at; declenv keeps it.
    s.nix_env("--delete-generations", "old")
    return s


def absolute_link_switch(nix: Nix) -> Scenario:
    s = Scenario(nix, "absolute_link_switch")
    for label in "ab":
        s.nix_env("--set", env=f"env-{label}")
    s.remove("prof")
    s.make("prof", "symlink", "@DIR@/prof-1-link")
    s.nix_env("--switch-generation", "2")
    s.list_generations()
    s.nix_env("--set", env="env-c")
    s.list_generations()
    return s


def generation_zero(nix: Nix) -> Scenario:
    s = Scenario(nix, "generation_zero")
    s.make("prof-+0-link", "symlink", "@STORE@/env-a")
    s.make("prof-1-link", "symlink", "@STORE@/env-b")
    s.touch("prof-+0-link", BASE_TIME)
    s.touch("prof-1-link", BASE_TIME + 60)
    s.make("prof", "symlink", "prof-+0-link")
    s.list_generations()
    s.nix_env("--rollback")
    s.nix_env("--switch-generation", "0")
    s.nix_env("--delete-generations", "0")
    s.nix_env("--switch-generation", "1")
    s.nix_env("--rollback")
    s.list_generations()
    s.nix_env("--delete-generations", "old")
    s.list_generations()
    return s


def empty_profile(nix: Nix) -> Scenario:
    s = Scenario(nix, "empty_profile")
    s.list_generations()
    s.nix_env("--rollback")
    s.nix_env("--switch-generation", "1")
    s.nix_env("--delete-generations", "old")
    s.nix_env("--delete-generations", "+1")
    s.nix_env("--delete-generations", "3d")
    s.nix_env("--delete-generations", "1")
    return s


def not_a_symlink(nix: Nix) -> Scenario:
    s = Scenario(nix, "not_a_symlink")
    s.nix_env("--set", env="env-a")
    s.remove("prof")
    s.make("prof", "file")
    s.list_generations()
    s.nix_env("--rollback")
    s.nix_env("--switch-generation", "1")
    s.nix_env("--delete-generations", "old")
    return s


def missing_directory(nix: Nix) -> Scenario:
    s = Scenario(nix, "missing_directory")
    s.profile = s.directory / "missing" / "prof"
    s.list_generations()
    s.nix_env("--rollback")
    s.nix_env("--delete-generations", "old")
    return s


def exhausted(nix: Nix) -> Scenario:
    """Nix 2.8 makes `prof-4294967296-link`, which its discovery ignores; declenv refuses."""
    s = Scenario(nix, "exhausted")
    s.make("prof-4294967295-link", "symlink", "@STORE@/env-a")
    s.touch("prof-4294967295-link", BASE_TIME)
    s.make("prof", "symlink", "prof-4294967295-link")
    s.list_generations()
    s.nix_env("--set", env="env-a")
    s.list_generations()
    s.nix_env("--set", env="env-b")
    return s


def all_scenarios(nix: Nix):
    yield lambda: installs_and_reuse(nix)
    yield lambda: set_and_reuse(nix)
    for name, arguments in DELETE_FORMS:
        yield lambda name=name, arguments=arguments: delete_form(nix, name, arguments)
    for name, current, argument in DAY_FORMS:
        yield lambda name=name, current=current, argument=argument: delete_days(
            nix, name, current, argument
        )
    yield lambda: days_overflow(nix)
    yield lambda: days_unordered(nix)
    yield lambda: argument_errors(nix)
    yield lambda: discovery(nix)
    yield lambda: discovery_odd_name_delete(nix)
    yield lambda: discovery_regular_file_delete(nix)
    yield lambda: absolute_link(nix)
    yield lambda: absolute_link_switch(nix)
    yield lambda: generation_zero(nix)
    yield lambda: empty_profile(nix)
    yield lambda: not_a_symlink(nix)
    yield lambda: missing_directory(nix)
    yield lambda: exhausted(nix)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    options = parser.parse_args()
    version = subprocess.run(["nix-env", "--version"], capture_output=True, text=True, check=True)
    scenarios = []
    with tempfile.TemporaryDirectory(prefix="declenv-generations-") as temporary:
        # Builds run as a build user, which must be able to reach the store.
        os.chmod(temporary, 0o755)
        nix = Nix(Path(temporary))
        for build in all_scenarios(nix):
            for _attempt in range(5):
                try:
                    scenarios.append(build().record())
                    break
                except Retry:
                    continue
            else:
                print("the clock kept ticking over; giving up", file=sys.stderr)
                return 1
    options.out.mkdir(parents=True, exist_ok=True)
    document = {"nix_version": version.stdout.strip(), "scenarios": scenarios}
    (options.out / "scenarios.json").write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    steps = sum(len(scenario["steps"]) for scenario in scenarios)
    print(json.dumps({"scenarios": len(scenarios), "steps": steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
