#!/usr/bin/env python3
"""Record `nix-env` sessions for tests/compat_conformance.rs (`declenv env` against Nix 2.8).

A small `.nix` file of `derivation`s (builder `/bin/sh`; packages with several versions and
priorities, two packages that both ship `bin/x`, packages with several outputs with and without
`meta.outputsToInstall`, a package without a version, five small packages for removal order)
is built once with the real Nix 2.8, and every output tree is copied into a channel directory
(`channel/NAME-VERSION[/OUTPUT]` plus `channel.toml` with attribute paths, outputs and meta), so
that `declenv env -f channel/` offers the same packages.

Then each session in `SESSIONS` runs on a fresh store and a fresh profile: every step is
`nix-env -p PROFILE -f pkgs.nix ARGS…`. Before the first step the built packages are deleted
from the session's store again, so that the status column (`-s`) says `P` exactly for what
the session installed, as it does in declenv's store. After every step the script records:

* the exit status, stdout and stderr, with store paths written `@STORE@/<h>-NAME`, the profiles
  directory `@PROFILES@`, the session's temporary directory `@TMP@` and dates in
  `--list-generations` `@DATE@`;
* stderr without Nix's build chatter (`these N derivations will be built:`, the `.drv` lines
  under it, `building '…'...`, `error: builder for '…' failed with exit code N`): these are
  the build engine's, and declenv has no derivations to build;
* the profile's `bin/`: each name and the store path (normalised) its file resolves to.

Steps may hold `@PATH:NAME[/SUB]`, replaced by the out path of package NAME in the session's
store (plus `/SUB`), and `@TMP@`, the session's temporary directory. A step `("age", {N: days})`
sets generation link N's modification time to `days` days ago (the `Nd` deletion then sees the
same ages in both runs).

Run as root with Nix 2.8 on PATH, no daemon, from the repository root:

    python3 scripts/conformance/gen_compat.py            # writes tests/fixtures/compat/
    python3 scripts/conformance/gen_compat.py --out DIR  # writes DIR/{sessions.json,pkgs.nix,channel/}

Each `nix-env` runs with only `NIX_STORE_DIR`, `NIX_STATE_DIR`, `NIX_LOCALSTATE_DIR`,
`NIX_LOG_DIR`, `NIX_CONF_DIR` and `HOME` under the session's temporary directory,
`NIX_REMOTE=local`, `NIX_CONFIG=$'sandbox = false\\nsubstituters ='`, `TZ=UTC`,
`LANG=C.UTF-8` and `PATH`.

Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "compat"
PROFILE = "prof"
DAY = 86_400

PACKAGES_NIX = r"""
let
  system = builtins.currentSystem;
  mk = { name, script ? "", outputs ? [ "out" ], meta ? { } }:
    derivation {
      inherit name system outputs;
      builder = "/bin/sh";
      PATH = "/usr/bin:/bin";
      args = [ "-c" ("set -e\n" + script) ];
    } // { inherit meta; };
  bin = dir: prog: text: ''
    mkdir -p ${dir}/bin
    printf '#!/bin/sh\necho %s\n' '${text}' > ${dir}/bin/${prog}
    chmod +x ${dir}/bin/${prog}
  '';
  simple = name: prog: meta: mk { inherit name meta; script = bin "$out" prog name; };
in {
  hello_1 = simple "hello-1.0" "hello" { description = "says hello, the old way"; priority = 10; };
  hello = mk {
    name = "hello-2.0";
    meta = { description = "says hello"; };
    script = bin "$out" "hello" "hello 2.0" + ''
      mkdir -p $out/share/doc/hello
      echo 'hello 2.0' > $out/share/doc/hello/README
    '';
  };
  foo_0_1 = simple "foo-0.1" "foo" { priority = 10; };
  foo_1 = simple "foo-1.0" "foo" { description = "foo one"; };
  foo_2pre = simple "foo-2.0pre1" "foo" { };
  foo = simple "foo-2.0" "foo" { description = "foo two"; };
  foo_3 = simple "foo-3.0" "foo" { priority = 10; };
  bar_1 = simple "bar-0.1" "bar" { description = "line1\nline2"; };
  bar = simple "bar-0.1.1" "bar" { };
  baz = simple "baz" "baz" { };
  xa = mk {
    name = "xa-1.0";
    meta = { priority = 6; };
    script = bin "$out" "x" "x from xa" + bin "$out" "xa" "xa";
  };
  xb = mk {
    name = "xb-1.0";
    meta = { priority = 8; };
    script = bin "$out" "x" "x from xb" + bin "$out" "xb" "xb";
  };
  tool = mk {
    name = "tool-1.0";
    outputs = [ "out" "bin" "man" "dev" ];
    meta = { description = "a tool with outputs"; outputsToInstall = [ "bin" "man" ]; };
    script = bin "$bin" "tool" "tool" + ''
      mkdir -p $out/lib/tool $man/share/man/man1 $dev/include
      echo data > $out/lib/tool/data
      echo '.TH tool 1' > $man/share/man/man1/tool.1
      echo '#define TOOL 1' > $dev/include/tool.h
    '';
  };
  multi = mk {
    name = "multi-1.0";
    outputs = [ "out" "lib" ];
    script = bin "$out" "multi" "multi" + ''
      mkdir -p $lib/lib
      echo lib > $lib/lib/libmulti.txt
    '';
  };
  docs = mk {
    name = "docs-1.0";
    script = ''
      mkdir -p $out/share/doc/docs
      echo docs > $out/share/doc/docs/README
    '';
  };
  pa = simple "pa-1" "pa" { };
  pb = simple "pb-1" "pb" { };
  pc = simple "pc-1" "pc" { };
  pd = simple "pd-1" "pd" { };
  pe = simple "pe-1" "pe" { };
}
"""

# Sessions: name → steps. A step is a list of nix-env arguments (after `-p PROFILE -f FILE`),
# or ("age", {generation: days}).
SESSIONS: dict[str, list] = {
    "install": [
        ["--list-generations"],
        ["-q"],
        ["-i", "hello"],  # by name: the newest
        ["-q"],
        ["-i", "hello-1.0"],  # by version: replaces hello-2.0
        ["-iA", "hello"],  # by attribute path
        ["-i", "x.*"],  # a regex: xa and xb
        ["-i", "foo-1.0", "baz"],
        ["-q", "--json"],  # keys are manifest indices, in row order
        ["-i", "hel"],  # matches nothing: suggestions
        ["-i", "nonexistent"],
        ["-i", "(bad"],  # an invalid regex
        ["-i", "tool", "multi", "docs"],  # outputsToInstall, every output, no bin/
        ["-q", "--out-path"],
        ["-i", "--dry-run", "pa", "pb"],
        ["-q"],
        ["-iP", "foo-2.0"],  # keep foo-1.0: same priority, bin/foo collides
        ["-i", "-r", "pa"],  # replaces everything, says nothing
        ["-q"],
        ["-i", "foo-1.0", "foo-2.0"],  # two foo: collision
        ["-i", "foo-1.0", "foo-0.1"],  # foo-0.1 has priority 10: no collision
        ["-q", "--json", "--meta"],
        ["--list-generations"],
    ],
    "flags": [
        ["-i", "xa", "xb"],  # bin/x from xa (priority 6 beats 8)
        ["--set-flag", "priority", "8", "xa"],  # both 8: collision
        ["--set-flag", "priority", "3", "xb"],  # bin/x from xb
        ["-q", "--json", "--meta"],
        ["--set-flag", "active", "false", "xb"],  # bin/xb gone, bin/x from xa again
        ["-q"],
        ["--set-flag", "active", "true", "xb"],
        ["--set-flag", "keep", "true", "xa", "x.*"],  # x.* gets nothing left: error
        ["--set-flag", "keep", "true", "xa"],
        ["-i", "xa"],  # xa is kept: not replaced; same path, same environment
        ["-e", "xa"],  # keep does not stop -e
        ["-q"],
        ["--set-flag", "keep", "true", "nothing"],
        ["--set-flag", "priority"],
        ["--list-generations"],
    ],
    "upgrade": [
        ["-i", "foo-1.0", "bar-0.1", "baz"],
        ["-u", "--dry-run"],  # foo-2.0 (foo-3.0 has priority 10), bar-0.1.1
        ["-u", "-b", "--dry-run"],  # nothing newer is in the store
        ["-u", "--leq", "--dry-run"],
        ["-u", "--eq", "--dry-run"],  # same versions, same paths: nothing
        ["-u", "--always", "--dry-run"],
        ["-u", "foo-2.0pre1", "--dry-run"],
        ["-u", "nonexistent"],
        ["-u", "foo-2.0pre1"],
        ["-q"],
        ["-u", "bar"],
        ["-q", "-c"],
        ["-u"],
        ["-q", "-s"],
        ["-u", "--always", "foo-1.0"],  # downgrade
        ["-q"],
        ["-uA", "foo_3"],  # foo-3.0 has priority 10 > 0: not an upgrade
        ["-u", "-P"],
        ["--set-flag", "keep", "true", "foo"],
        ["-u", "--always"],  # foo stays
        ["-q"],
        ["--list-generations"],
    ],
    "uninstall": [
        ["-i", "pa", "pb", "pc", "pd", "pe"],
        ["-q", "--json"],
        ["-e", "pb"],  # pa pe pc pd: libstdc++'s partition
        ["-q", "--json"],
        ["-e", "nonexistent", "pc"],  # a warning, then pc goes
        ["-q", "--json"],
        ["-e", "--dry-run", "pa"],
        ["-e", "p[ae]"],
        ["-q"],
        ["-i", "hello"],
        ["-e", "@PATH:hello-2.0/bin/hello"],  # by a path inside the store path
        ["-q"],
        ["-i", "@PATH:hello-2.0"],  # by store path
        ["-q", "--json"],
        ["-e", "@TMP@/notinstore"],
        ["-i", "@TMP@/notinstore"],
        ["-e", "*"],
        ["-q"],
        ["-e"],
        ["--list-generations"],
    ],
    "generations": [
        ["--rollback"],  # nothing to roll back to
        ["-i", "pa"],  # 1
        ["-i", "pb"],  # 2
        ["-i", "pc"],  # 3
        ["--rollback"],  # to 2
        ["-q"],
        ["-i", "pc"],  # the same environment as 3, the highest: reused
        ["--list-generations"],
        ["-G", "1"],
        ["-q"],
        ["-i", "pb"],  # the same as 2, but 2 is not the highest: 4
        ["--list-generations"],
        ["-G", "9"],
        ["-G", "x"],
        ["--switch-generation", "3", "--dry-run"],
        ["--list-generations"],
        ["-i", "pd"],  # 5
        ["-i", "pe"],  # 6
        ["--delete-generations", "1", "2", "6"],  # 6 is current: refused
        ["--delete-generations", "1", "2", "--dry-run"],
        ["--delete-generations", "1", "99"],
        ["--list-generations"],
        ["--delete-generations", "+2"],
        ["--list-generations"],
        ["-i", "hello"],  # 7
        ["-i", "baz"],  # 8
        ("age", {5: 30, 6: 20, 7: 10, 8: 1}),
        ["--delete-generations", "15d"],  # 5 goes; 6 was current 15 days ago
        ["--list-generations"],
        ["--delete-generations", "old"],
        ["--list-generations"],
        ["--rollback"],
        ["--delete-generations", "+"],
        ["--delete-generations", "+0"],
        ["--delete-generations", "0d"],
        ["--delete-generations", "1x"],
        ["--delete-generations", "old", "1"],
        ["-q"],
    ],
    "queries": [
        ["-qa"],
        ["-qaP"],
        ["-qa", "foo"],
        ["-qa", "foo.*", "bar"],
        ["-qa", "*-1.0"],
        ["-qa", "fo"],
        ["-qa", "(x"],
        ["-qaA", "hello"],
        ["-qaPA", "nope"],
        ["-qa", "--description"],
        ["-qa", "--system", "--no-name", "-P"],
        ["-qa", "--json"],
        ["-qa", "--json", "--meta", "--out-path", "tool", "multi", "bar-0.1"],
        ["-qa", "--xml", "--meta", "bar-0.1", "tool"],
        ["-qa", "--xml", "--out-path", "-s", "-c", "foo-1.0"],
        ["-qP"],
        ["-i", "foo-1.0", "bar-0.1", "hello-1.0"],
        ["-qas"],
        ["-qac"],
        ["-qc"],
        ["-qcs", "--system", "--out-path", "--description"],
        ["-qaPsc", "--system", "--out-path", "--description", "foo", "bar", "hello", "baz"],
        ["-q", "--json", "--out-path"],
        ["-q", "--xml", "--meta", "-c"],
        ["-qab"],
        ["-qa", "--no-name"],
        ["-q", "--no-name", "-s"],
        ["-q", "nope"],
        ["-q", "f"],
        ["-i", "-b", "foo", "hello-1.0"],  # foo-2.0 is not in the store: dropped after choosing
        ["-q"],
    ],
    # Steps where declenv differs on purpose; tests/compat_conformance.rs lists each one.
    "deliberate": [
        ["-i", "foo-1.0", "xa", "xb"],
        ["--set-flag", "active", "false", "foo"],
        ["-u", "foo"],  # Nix drops the flag with the old element; declenv keeps it
        ["-q", "--json", "--meta", "foo"],
        ["-e", "foo"],
        ["--set-flag", "colour", "blue", "xb"],  # no place for it in profile.toml
        ["--set-flag", "priority", "high", "xb"],  # Nix stores it, then its builder fails
        ["-q", "--json", "--meta"],
        ["-qa", "--drv-path", "pa"],  # channels have no derivations
        ["--set", "hello"],  # declenv builds an environment holding hello
        ["-q"],
        ["-i", "pa"],  # Nix starts again from nothing; declenv keeps hello
    ],
    "usage": [
        [],
        ["-q", "-i"],
        ["--dry-run", "-q", "-i"],
        ["-qP"],
        ["-u", "-P"],
        ["-i", "--bogus"],
        ["-e", "-r", "pa"],
        ["-q", "--lt"],
        ["-G"],
        ["-G", "-1"],
        ["--rollback", "1"],
        ["--list-generations", "x"],
        ["--set-flag", "keep"],
        ["-qaA"],
        ["-q", "--option", "x"],
        ["-q", "-j"],
        ["-S"],
        ["-q", "--", "-p"],
        ["-qa", "--dry-run", "pa"],
    ],
}

BUILD_CHATTER = [
    re.compile(r"these \d+ derivations will be built:"),
    re.compile(r"this derivation will be built:"),
    re.compile(r"  \S+\.drv"),
    re.compile(r"building '\S+'\.\.\."),
    re.compile(r"error: builder for '\S+' failed with exit code \d+"),
]

DATE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


class Session:
    def __init__(self, root: Path, nix_file: Path) -> None:
        self.root = root
        self.store = root / "store"
        self.profiles = root / "profiles"
        self.profile = self.profiles / PROFILE
        self.nix_file = nix_file
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
        for directory in ("home", "etc", "profiles"):
            (root / directory).mkdir(parents=True, exist_ok=True)
        self.hashed = re.compile(re.escape(str(self.store)) + r"/[0-9a-df-np-sv-z]{32}-")

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(command), env=self.env, capture_output=True, text=True, cwd=self.root,
            check=check,
        )

    def normalize(self, text: str) -> str:
        text = self.hashed.sub("@STORE@/<h>-", text)
        text = text.replace(str(self.store), "@STORE@")
        text = text.replace(str(self.profiles), "@PROFILES@")
        return text.replace(str(self.root), "@TMP@")

    def out_paths(self) -> dict[str, str]:
        listing = json.loads(
            self.run("nix-env", "-f", str(self.nix_file), "-qa", "--json", "--out-path").stdout
        )
        return {info["name"]: info["outputs"].get("out") or next(iter(info["outputs"].values()))
                for info in listing.values()}

    def build_all(self) -> list[str]:
        derivations = self.run("nix-instantiate", str(self.nix_file)).stdout.split()
        return self.run("nix-store", "--realise", *derivations).stdout.split()

    def bin(self) -> dict[str, str]:
        directory = self.profile / "bin"
        if not directory.is_dir():
            return {}
        return {
            name: self.normalize(os.path.realpath(directory / name))
            for name in sorted(os.listdir(directory))
        }

    def substitute(self, argument: str) -> str:
        def path(match: re.Match) -> str:
            name, _, sub = match.group(1).partition("/")
            base = self.out_paths()[name]
            return base + ("/" + sub if sub else "")
        argument = re.sub(r"@PATH:([^ ]+)", path, argument)
        return argument.replace("@TMP@", str(self.root))

    def age(self, ages: dict[int, float]) -> dict:
        now = int(time.time())
        for number, days in sorted(ages.items()):
            entry = self.profiles / f"{PROFILE}-{number}-link"
            subprocess.run(["touch", "-h", "-d", f"@{now - int(days * DAY)}", str(entry)], check=True)
        return {"op": "age", "ages": {str(number): days for number, days in sorted(ages.items())}}

    def nix_env(self, arguments: list[str]) -> dict:
        actual = [self.substitute(argument) for argument in arguments]
        result = self.run(
            "nix-env", "-p", str(self.profile), "-f", str(self.nix_file), *actual, check=False,
        )
        stderr_lines = self.normalize(result.stderr).splitlines()
        kept = [line for line in stderr_lines
                if not any(pattern.fullmatch(line) for pattern in BUILD_CHATTER)]
        stdout = self.normalize(result.stdout)
        if arguments[:1] == ["--list-generations"]:
            stdout = DATE.sub("@DATE@", stdout)
        return {
            "op": "nix-env",
            "args": arguments,
            "exit": result.returncode,
            "stdout": stdout,
            "stderr": "".join(line + "\n" for line in kept),
            "bin": self.bin(),
        }


def copy_tree(source: Path, destination: Path) -> None:
    """Copies a store tree with writable modes, keeping the executable bit and symlinks."""
    mode = os.lstat(source).st_mode
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(source), destination)
    elif stat.S_ISDIR(mode):
        destination.mkdir(parents=True)
        for name in sorted(os.listdir(source)):
            copy_tree(source / name, destination / name)
    else:
        shutil.copyfile(source, destination)
        os.chmod(destination, 0o755 if mode & stat.S_IXUSR else 0o644)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise ValueError(f"no TOML for {value!r}")


def build_channel(session: Session, channel: Path) -> list[str]:
    session.build_all()
    listing = json.loads(
        session.run("nix-env", "-f", str(session.nix_file), "-qa", "--json", "--out-path",
                    "--meta").stdout
    )
    if channel.exists():
        shutil.rmtree(channel)
    channel.mkdir(parents=True)
    lines = ["format = 1"]
    systems = {info["system"] for info in listing.values()}
    if len(systems) != 1:
        raise RuntimeError(f"packages for several systems: {systems}")
    lines.append(f"system = {toml_value(systems.pop())}")
    names = []
    for attr, info in sorted(listing.items(), key=lambda item: item[1]["name"]):
        name = info["name"]
        names.append(name)
        outputs = info["outputs"]
        if list(outputs) == ["out"]:
            copy_tree(Path(outputs["out"]), channel / name)
        else:
            for output, path in outputs.items():
                copy_tree(Path(path), channel / name / output)
        key = toml_value(name)
        lines += ["", f"[packages.{key}]", f"attr = {toml_value(attr)}"]
        if list(outputs) != ["out"]:
            lines.append(f"outputs = {toml_value(sorted(outputs))}")
        meta = info.get("meta", {})
        if meta:
            lines.append(f"[packages.{key}.meta]")
            lines += [f"{field} = {toml_value(value)}" for field, value in sorted(meta.items())]
    (channel / "channel.toml").write_text("\n".join(lines) + "\n")
    return names


def run_session(nix_file: Path, steps: list) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="declenv-compat-") as temporary:
        os.chmod(temporary, 0o755)
        session = Session(Path(temporary), nix_file)
        # Build, then delete: the store knows the derivations but holds no package.
        outputs = session.build_all()
        session.run("nix-store", "--delete", *outputs)
        (session.root / "notinstore").write_text("not in the store\n")
        recorded = []
        for step in steps:
            if isinstance(step, tuple):
                recorded.append(session.age(step[1]))
            else:
                recorded.append(session.nix_env(step))
        return recorded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    options = parser.parse_args()
    version = subprocess.run(["nix-env", "--version"], capture_output=True, text=True, check=True)
    options.out.mkdir(parents=True, exist_ok=True)
    nix_file = options.out / "pkgs.nix"
    nix_file.write_text(PACKAGES_NIX.lstrip())
    with tempfile.TemporaryDirectory(prefix="declenv-compat-build-") as temporary:
        os.chmod(temporary, 0o755)
        names = build_channel(Session(Path(temporary), nix_file), options.out / "channel")
    sessions = {name: run_session(nix_file, steps) for name, steps in SESSIONS.items()}
    document = {
        "nix_version": version.stdout.strip(),
        "profile": PROFILE,
        "packages": names,
        "sessions": sessions,
    }
    (options.out / "sessions.json").write_text(
        json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    )
    steps = sum(1 for steps in sessions.values() for step in steps if step["op"] == "nix-env")
    print(json.dumps({"sessions": len(sessions), "nix_env_steps": steps, "packages": len(names)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
