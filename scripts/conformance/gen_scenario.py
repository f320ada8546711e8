#!/usr/bin/env python3
"""Record one long `nix-env` session for tests/scenario_conformance.rs.

A small `.nix` file of `derivation`s (builder `/bin/sh`, each writing a few files: `bin/`
scripts, `share/man` pages, a package with extra outputs and `meta.outputsToInstall`, two
packages that both have `bin/x` with different `meta.priority`, two versions of one package, a
package with a relative symlink) is built with the real Nix 2.8 in a private store. Every output
tree is copied into a channel directory (`channel/NAME-VERSION`, or `channel/NAME-VERSION/OUTPUT`
for a package with several outputs, plus `channel.toml` with the attribute paths, outputs and
meta), so that declenv's `load_channel` + `realise` give the same trees without Nix.

Then one profile goes through the session in `SESSION`: installs one by one and several at once,
a newer version replacing an older one, `-e`, `--set-flag priority` (once making a collision
that fails the build, once settling it), `--set-flag active false` and back, `--set-flag keep
true`, `--rollback` twice, `--switch-generation` back and forth, installs that rebuild the
highest generation (reused) and a lower one (a new number), and every `--delete-generations`
form (a list of numbers, the current one, `+N`, `Nd` after aging the links with `touch -h -d`,
`old`, one `--dry-run`). After every step the script records stdout, stderr and the exit status,
`nix-env --list-generations` (TZ=UTC), the profile's `manifest.nix`, and the environment tree
(relative paths, kinds, symlink targets). A failed build also records the `env-manifest.nix`
nix-env wrote to the store for it, which is the element list it tried to build.

Store paths are written as `@STORE@/<h>-NAME` (store directory and hash replaced; the package
names in the session are unique, so the name identifies the path) and the profile's directory as
`@PROFILES@`. Generation links a step creates are touched to deterministic times
(1,700,000,000 + 60 s per link) so that `--list-generations` does not depend on the clock; the
`Nd` step ages links relative to the real clock (ages far from the cutoff) and records `now`.

Run as root with Nix 2.8 on PATH, no daemon:

    python3 scripts/conformance/gen_scenario.py            # writes tests/fixtures/scenario/
    python3 scripts/conformance/gen_scenario.py --out DIR  # writes DIR/{steps.json,pkgs.nix,channel/}

Each `nix-env` runs with only `NIX_STORE_DIR`, `NIX_STATE_DIR`, `NIX_LOCALSTATE_DIR`,
`NIX_LOG_DIR`, `NIX_CONF_DIR` and `HOME` under one temporary directory, `NIX_REMOTE=local`,
`NIX_CONFIG=$'sandbox = false\\nsubstituters ='`, `TZ=UTC`, `LANG=C.UTF-8` and `PATH`.

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
DEFAULT_OUT = REPO / "tests" / "fixtures" / "scenario"
PROFILE = "scn"
DAY = 86_400
BASE_TIME = 1_700_000_000

PACKAGES_NIX = r"""
let
  system = builtins.currentSystem;
  mk = { name, script, outputs ? [ "out" ], meta ? { } }:
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
  man = dir: section: page: ''
    mkdir -p ${dir}/share/man/man${section}
    echo '.TH ${page} ${section}' > ${dir}/share/man/man${section}/${page}.${section}
  '';
in {
  hello_1 = mk {
    name = "hello-1.0";
    meta = { description = "says hello, the old way"; priority = 10; };
    script = bin "$out" "hello" "hello 1.0" + man "$out" "1" "hello";
  };
  hello = mk {
    name = "hello-2.0";
    meta = { description = "says hello"; };
    script = bin "$out" "hello" "hello 2.0" + man "$out" "1" "hello" + ''
      mkdir -p $out/share/doc/hello
      echo 'hello 2.0' > $out/share/doc/hello/README
    '';
  };
  docs = mk {
    name = "docs-1.0";
    script = man "$out" "7" "docs" + ''
      mkdir -p $out/share/doc/docs
      echo docs > $out/share/doc/docs/README
    '';
  };
  tool = mk {
    name = "tool-1.0";
    outputs = [ "out" "bin" "man" "dev" ];
    meta = { description = "a tool with outputs"; outputsToInstall = [ "bin" "man" ]; };
    script = bin "$bin" "tool" "tool" + man "$man" "1" "tool" + ''
      mkdir -p $out/lib/tool $dev/include
      echo data > $out/lib/tool/data
      echo '#define TOOL 1' > $dev/include/tool.h
    '';
  };
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
  util = mk {
    name = "util-1.0";
    script = bin "$out" "util" "util" + ''
      ln -s util $out/bin/u
    '';
  };
}
"""

# The session: nix-env arguments (after `-p PROFILE -f pkgs.nix`), plus two special steps:
# ("age", {generation: days}) touches generation links to `now - days`, and a trailing
# "@now" marks the step that must record `now` (the `Nd` deletion).
SESSION: list = [
    ["--list-generations"],
    ["-i", "hello-1.0"],  # 1
    ["-i", "docs"],  # 2: share/ merged
    ["-i", "tool", "xa"],  # 3: two at once; tool installs its bin and man outputs
    ["-i", "xb"],  # 4: bin/x from xa (priority 6 beats 8)
    ["--rollback"],  # to 3
    ["-i", "xb"],  # the same environment as 4, the highest: 4 is reused
    ["-i", "hello"],  # 5: hello-2.0 replaces hello-1.0
    ["--set-flag", "priority", "8", "xa"],  # xa and xb both 8: collision, exit 100
    ["--set-flag", "priority", "4", "xb"],  # 6: bin/x from xb
    ["--set-flag", "active", "false", "docs"],  # 7: docs' files leave the tree
    ["--set-flag", "active", "true", "docs"],  # 8: and come back
    ["--set-flag", "keep", "true", "hello"],  # 9
    ["-i", "hello-1.0"],  # 10: hello-2.0 is kept, so both are installed
    ["-i", "util"],  # 11
    ["-e", "hello-1.0"],  # 12
    ["--list-generations"],
    ["--rollback"],  # to 11
    ["--rollback"],  # to 10
    ["--switch-generation", "12"],
    ["--switch-generation", "2"],
    ["--switch-generation", "7"],
    ["--switch-generation", "1"],
    ["-i", "hello-1.0"],  # the same environment as 1, not the highest: 13
    ["--switch-generation", "12"],
    ["--delete-generations", "12"],  # the current one: refused
    ["--delete-generations", "2", "5", "99"],
    ["--delete-generations", "+6"],  # keeps 12 and the five below it; 13 is newer
    ["--list-generations"],
    ["-e", "util"],  # 14
    ("age", {7: 40, 8: 30, 9: 20, 10: 15.5, 11: 9.5, 12: 5, 13: 3, 14: 1}),
    ["--delete-generations", "10d", "--dry-run", "@now"],
    ["--delete-generations", "10d", "@now"],  # keeps 10, the one current 10 days ago
    ["--switch-generation", "11"],
    ["--delete-generations", "old"],  # everything but 11, newer ones included
    ["--set-flag", "keep", "true", "hello-2.0"],  # no change: the highest, 11, is reused
    ["-e", "hello-1.0"],  # 12 again, the same environment as the deleted 12
    ["--rollback"],
    ["--list-generations"],
]

BUILDS = ("-i", "-e", "--set-flag")


class Session:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = root / "store"
        self.profiles = root / "profiles"
        self.profile = self.profiles / PROFILE
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
        self.nix_file = root / "pkgs.nix"
        self.nix_file.write_text(PACKAGES_NIX)
        self.hashed = re.compile(re.escape(str(self.store)) + r"/[0-9a-df-np-sv-z]{32}-")
        self.next_time = BASE_TIME

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(command), env=self.env, capture_output=True, text=True, cwd=self.root,
            check=check,
        )

    def normalize(self, text: str) -> str:
        text = self.hashed.sub("@STORE@/<h>-", text)
        text = text.replace(str(self.store), "@STORE@")
        return text.replace(str(self.profiles), "@PROFILES@")

    # ---- the packages ------------------------------------------------------------------------

    def build_channel(self, channel: Path) -> list[dict]:
        """Builds every package and copies its output trees into `channel`."""
        derivations = self.run("nix-instantiate", str(self.nix_file)).stdout.split()
        self.run("nix-store", "--realise", *derivations)
        listing = json.loads(
            self.run("nix-env", "-f", str(self.nix_file), "-qa", "--json", "--out-path", "--meta").stdout
        )
        if channel.exists():
            shutil.rmtree(channel)
        channel.mkdir(parents=True)
        packages = []
        for attr, info in sorted(listing.items(), key=lambda item: item[1]["name"]):
            name = info["name"]
            outputs = info["outputs"]
            if list(outputs) == ["out"]:
                copy_tree(Path(outputs["out"]), channel / name)
            else:
                for output, path in outputs.items():
                    copy_tree(Path(path), channel / name / output)
            packages.append({
                "name": name, "attr": attr, "system": info["system"],
                "outputs": sorted(outputs), "meta": info.get("meta", {}),
            })
        (channel / "channel.toml").write_text(channel_toml(packages))
        return packages

    # ---- observations ------------------------------------------------------------------------

    def generation_links(self) -> set[str]:
        pattern = re.compile(re.escape(PROFILE) + r"-[0-9]+-link")
        return {name for name in os.listdir(self.profiles) if pattern.fullmatch(name)}

    def env_manifests(self) -> set[str]:
        return {name for name in os.listdir(self.store) if name.endswith("-env-manifest.nix")}

    def environment(self) -> dict | None:
        if not self.profile.is_symlink():
            return None
        top = os.path.realpath(self.profile)
        tree = {}
        for directory, subdirectories, files in os.walk(top):
            for name in sorted(subdirectories + files):
                path = os.path.join(directory, name)
                relative = os.path.relpath(path, top)
                mode = os.lstat(path).st_mode
                if stat.S_ISLNK(mode):
                    tree[relative] = {"kind": "symlink", "target": self.normalize(os.readlink(path))}
                elif stat.S_ISDIR(mode):
                    tree[relative] = {"kind": "dir"}
                else:
                    tree[relative] = {"kind": "file"}
        return dict(sorted(tree.items()))

    def manifest(self) -> str | None:
        path = self.profile / "manifest.nix"
        return self.normalize(path.read_text()) if path.exists() else None

    def list_generations(self) -> str:
        result = self.run("nix-env", "-p", str(self.profile), "--list-generations")
        return self.normalize(result.stdout)

    # ---- steps -------------------------------------------------------------------------------

    def age(self, ages: dict[int, float]) -> list[dict]:
        now = int(time.time())
        steps = []
        for number, days in sorted(ages.items()):
            entry = f"{PROFILE}-{number}-link"
            when = now - int(days * DAY)
            subprocess.run(["touch", "-h", "-d", f"@{when}", str(self.profiles / entry)], check=True)
            steps.append({"op": "touch", "entry": entry, "time": when})
        return steps

    def nix_env(self, arguments: list[str]) -> dict:
        record_now = "@now" in arguments
        arguments = [argument for argument in arguments if argument != "@now"]
        links_before = self.generation_links()
        manifests_before = self.env_manifests()
        now = int(time.time())
        result = self.run(
            "nix-env", "-p", str(self.profile), "-f", str(self.nix_file), *arguments, check=False,
        )
        step: dict = {
            "op": "nix-env",
            "args": arguments,
            "exit": result.returncode,
            "stdout": self.normalize(result.stdout),
            "stderr": self.normalize(result.stderr),
        }
        if record_now:
            step["now"] = now
        if arguments[0] in BUILDS and result.returncode != 0:
            attempted = sorted(self.env_manifests() - manifests_before)
            if len(attempted) != 1:
                raise RuntimeError(f"{arguments}: cannot tell which manifest failed: {attempted}")
            step["attempted_manifest"] = self.normalize((self.store / attempted[0]).read_text())
        touched = {}
        for entry in sorted(self.generation_links() - links_before, key=link_number):
            subprocess.run(
                ["touch", "-h", "-d", f"@{self.next_time}", str(self.profiles / entry)], check=True
            )
            touched[entry] = self.next_time
            self.next_time += 60
        step["touched"] = touched
        step["generations"] = self.list_generations()
        step["manifest"] = self.manifest()
        step["environment"] = self.environment()
        return step


def link_number(entry: str) -> int:
    return int(entry.removeprefix(PROFILE + "-").removesuffix("-link"))


def copy_tree(source: Path, destination: Path) -> None:
    """Copies a store tree with writable modes (the store's are read-only), keeping the
    executable bit and symlinks as they are."""
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


def channel_toml(packages: list[dict]) -> str:
    systems = {package["system"] for package in packages}
    if len(systems) != 1:
        raise RuntimeError(f"packages for several systems: {systems}")
    lines = ["format = 1", f"system = {toml_value(systems.pop())}"]
    for package in packages:
        key = toml_value(package["name"])
        lines += ["", f"[packages.{key}]", f"attr = {toml_value(package['attr'])}"]
        if package["outputs"] != ["out"]:
            lines.append(f"outputs = {toml_value(package['outputs'])}")
        if package["meta"]:
            lines.append(f"[packages.{key}.meta]")
            lines += [f"{name} = {toml_value(value)}" for name, value in sorted(package["meta"].items())]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    options = parser.parse_args()
    version = subprocess.run(["nix-env", "--version"], capture_output=True, text=True, check=True)
    options.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="declenv-scenario-") as temporary:
        # Builds run as a build user, which must be able to reach the store.
        os.chmod(temporary, 0o755)
        session = Session(Path(temporary))
        packages = session.build_channel(options.out / "channel")
        steps: list[dict] = []
        for item in SESSION:
            if isinstance(item, tuple):
                steps += session.age(item[1])
            else:
                steps.append(session.nix_env(item))
    document = {
        "nix_version": version.stdout.strip(),
        "profile": PROFILE,
        "packages": [package["name"] for package in packages],
        "steps": steps,
    }
    (options.out / "pkgs.nix").write_text(PACKAGES_NIX.lstrip())
    (options.out / "steps.json").write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    runs = sum(1 for step in steps if step["op"] == "nix-env")
    print(json.dumps({"nix_env_steps": runs, "packages": len(packages)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
