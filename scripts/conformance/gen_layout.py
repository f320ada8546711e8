#!/usr/bin/env python3
"""Generate the user-environment layout fixtures by running the real Nix 2.8.

Every scenario below is a handful of small packages. The script writes their
trees as real directories, adds them to a private Nix store with
`nix-store --add`, installs them into a profile with `nix-env` (from a
generated `.nix` file of fake derivations, or by store path, with
`--set-flag` and `-e` steps where a scenario asks for them), and records what
the builder (`builtin:buildenv`) made of them:

    tests/fixtures/layout/<scenario>.json

Each file holds
  * `trees`: every store path of the scenario, scanned from disk, as
    `{"root": NODE, "propagated": TEXT}` (the text of
    `nix-support/propagated-user-env-packages`, when there is one). A NODE is
    an object of entries for a directory, `"file"` for a file, and
    `["symlink", TARGET, RESOLUTION]` for a symlink, RESOLUTION being what
    `stat` through it says: `"dangling"`, `"loop"`, `["directory", CANONICAL]`
    or `["non-directory", CANONICAL]` (CANONICAL from `realpath`);
  * `derivations`: the builder's input, taken from the `user-environment.drv`
    of the last step (active flag, priority, output count and paths, per
    element, in manifest order);
  * `exit` of the last step, and the `warnings` and `error` its build printed,
    read from the build log (`nix-store --read-log`, colours removed), which
    keeps tabs that stderr expands;
  * `environment`: the resulting tree (relative path, type, symlink target),
    when the build succeeded;
  * `manifest`: the `env-manifest.nix` text the builder was given, and
    `elements`: the elements it describes, as the scenario defined them (meta
    values tagged with their Nix type), in manifest order.

The store directory is replaced by `@STORE@` and the environment's output path
by `@ENV@` everywhere, so the fixtures do not depend on where the store was.

Run as root (no daemon) with Nix 2.8 on PATH, from anywhere:

    python3 scripts/conformance/gen_layout.py

Options: `--out DIR` (default `tests/fixtures/layout`), `--work DIR` (the
scratch directory holding the store, state, logs and `HOME`; default
`/tmp/declenv-gen-layout`, wiped first), `--only NAME[,NAME…]`. Each `nix-env`
runs with only `NIX_STORE_DIR`, `NIX_STATE_DIR`, `NIX_LOG_DIR`, `NIX_CONF_DIR`
and `HOME` under the scratch directory, `NIX_REMOTE=local`,
`NIX_CONFIG=$'sandbox = false\\nsubstituters ='`, `LANG=C.UTF-8` and `PATH`.
Store paths depend on the store directory, so with the default `--work` two
runs give byte-identical fixtures.

Where a scenario needs store paths in a given byte order (which package the
builder sees first), a `.salt` file (names starting with `.` are never linked)
is added to a package and changed until the order holds.

Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "layout"
DEFAULT_WORK = Path("/tmp/declenv-gen-layout")
MARKER = ".declenv-gen-layout"
SYSTEM = "x86_64-linux"
MAX_SALT = 2000


# --------------------------------------------------------------------------------------------
# Describing package trees.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class File:
    content: str = "x\n"


@dataclass(frozen=True)
class Link:
    """A symlink; `@key@` or `@key:output@` in the target names another package's store path."""

    target: str


Tree = Union[dict, File, Link]


@dataclass
class Package:
    """One package: `name` is the derivation (and store) name; `outputs` maps output names to trees.

    `propagates` is the raw text of `nix-support/propagated-user-env-packages` in the first
    output, with `@key@` placeholders.
    """

    name: str
    outputs: dict[str, Tree]
    meta: dict = field(default_factory=dict)
    propagates: str | None = None


def pkg(name: str, tree: Tree, meta: dict | None = None, propagates: str | None = None) -> Package:
    return Package(name=name, outputs={"out": tree}, meta=meta or {}, propagates=propagates)


@dataclass
class Scenario:
    name: str
    description: str
    packages: dict[str, Package]
    # Steps: ("install", [keys]) installs from the generated .nix file with -iA;
    # ("install-path", [keys]) installs store paths; ("set-flag", flag, value, full name);
    # ("uninstall", selector).
    steps: list[tuple]
    # Keys whose first store paths must sort in this byte order.
    order: list[str] = field(default_factory=list)


def install(*keys: str) -> tuple:
    return ("install", list(keys))


F = File()


def bins(*names: str) -> dict:
    return {"bin": {name: File(f"#!/bin/sh\necho {name}\n") for name in names}}


# --------------------------------------------------------------------------------------------
# The scenarios.
# --------------------------------------------------------------------------------------------


def scenarios() -> list[Scenario]:
    s: list[Scenario] = []

    def add(name, description, packages, steps, order=()):
        s.append(Scenario(name, description, packages, steps, list(order)))

    add("single-package", "one package: its top-level entries are linked whole",
        {"a": pkg("a-1", {"bin": {"a": F}, "share": {"man": {"man1": {"a.1": F}}}, "lib": {"liba.so": F}})},
        [install("a")])

    add("same-priority-collision", "two packages with bin/x at the default priority 5",
        {"a": pkg("a-1", bins("x")), "b": pkg("b-1", bins("x"))},
        [install("a", "b")])

    add("same-priority-collision-nested", "a collision three directories deep",
        {"a": pkg("a-1", {"share": {"doc": {"x": {"README": F}, "a": F}}}),
         "b": pkg("b-1", {"share": {"doc": {"x": {"README": F}, "b": F}}})},
        [install("a", "b")])

    add("priority-winner", "lower meta.priority wins; bin/ is merged",
        {"a": pkg("a-1", bins("x", "a"), {"priority": 3}),
         "b": pkg("b-1", bins("x", "b"), {"priority": 7})},
        [install("a", "b")])

    add("priority-types", "priorities as strings, negative ints and stoi prefixes",
        {"a": pkg("a-1", bins("x"), {"priority": "10"}),
         "b": pkg("b-1", bins("x"), {"priority": -2}),
         "c": pkg("c-1", bins("x"), {"priority": "-1"}),
         "d": pkg("d-1", bins("x"), {"priority": " 7xyz"})},
        [install("a", "b", "c", "d")])

    add("priority-stoi-prefix", "' 4xyz' reaches the builder and stoi reads 4",
        {"a": pkg("a-1", bins("x"), {"priority": " 4xyz"}),
         "b": pkg("b-1", bins("x"), {"priority": 4})},
        [install("a", "b")])

    add("priority-float", "a float priority 2.7 reaches the builder as 2.700000, read as 2",
        {"a": pkg("a-1", bins("x"), {"priority": 2.7}),
         "b": pkg("b-1", bins("x"), {"priority": 2})},
        [install("a", "b")])

    add("priority-not-a-number", "a priority stoi cannot read fails the build with `stoi`",
        {"a": pkg("a-1", bins("a"), {"priority": "high"})},
        [install("a")])

    add("priority-out-of-range", "a priority beyond int fails the build with `stoi`",
        {"a": pkg("a-1", bins("a"), {"priority": "2147483648"})},
        [install("a")])

    add("priority-extremes", "the int extremes are read; the lowest wins",
        {"a": pkg("a-1", bins("x", "a"), {"priority": "-2147483648"}),
         "b": pkg("b-1", bins("x", "b"), {"priority": 2147483647})},
        [install("a", "b")])

    add("directory-merge", "bin/ and share/doc/ from two packages become real directories",
        {"a": pkg("a-1", {"bin": {"a": F}, "share": {"doc": {"a": {"README": F}}}}),
         "b": pkg("b-1", {"bin": {"b": F}, "share": {"doc": {"b": {"README": F}}}})},
        [install("a", "b")])

    add("symlinked-directory-linked-first",
        "b's docs is a symlink to a/share/doc and is linked first; c's real docs/ merges: the old "
        "target is walked again at its canonical path with b's priority",
        {"a": pkg("a-1", {"share": {"doc": {"a": {"README": F}}}}),
         "b": pkg("b-1", {"docs": Link("@a@/share/doc"), "bin": {"b": F}}, {"priority": 4}),
         "c": pkg("c-1", {"docs": {"c": {"README": F}}}, {"priority": 6})},
        [install("b", "c")])

    add("symlinked-directory-merged-second",
        "c's real docs/ is linked first; b's docs symlink merges into it: links keep b's path "
        "as visited, through the symlink",
        {"a": pkg("a-1", {"share": {"doc": {"a": {"README": F}}}}),
         "b": pkg("b-1", {"docs": Link("@a@/share/doc")}, {"priority": 6}),
         "c": pkg("c-1", {"docs": {"c": {"README": F}}}, {"priority": 4})},
        [install("b", "c")])

    add("symlink-into-real-directory",
        "share/ is already a real directory; c's share symlink is walked through",
        {"x": pkg("x-1", {"share": {"x": {"data": F}, "man": {"man1": {"x.1": F}}}}),
         "a": pkg("a-1", {"share": {"a": F}}, {"priority": 1}),
         "b": pkg("b-1", {"share": {"b": F}}, {"priority": 2}),
         "c": pkg("c-1", {"share": Link("@x@/share")}, {"priority": 3})},
        [install("a", "b", "c")])

    add("canonical-chain",
        "b's docs link goes through c's alias link to a/share/doc; the merge walks the fully "
        "resolved path",
        {"a": pkg("a-1", {"share": {"doc": {"a": {"README": F}}}}),
         "c": pkg("c-1", {"alias": Link("@a@/share/doc")}),
         "b": pkg("b-1", {"docs": Link("@c@/alias")}, {"priority": 4}),
         "d": pkg("d-1", {"docs": {"d": F}}, {"priority": 6})},
        [install("b", "d")])

    l_tree = {
        "bin": {"l": F, "log": F},
        "share": {"info": {"dir": F, "l.info": F}},
        "lib": {"nix-support": {"z": F}, "perl5": {"perllocal.pod": F, "L.pm": F}},
        "log": F, "nix-support": {"setup-hook": F}, "manifest.nix": F, "manifest.json": F,
        "propagated-build-inputs": F, "perllocal.pod": F, ".hidden": F,
        "info": {"dir": F},
    }
    add("ignore-list-not-merged",
        "the ignore list applies to entries the walk visits: top-level ones go, but bin/log "
        "stays reachable through the bin link",
        {"l": pkg("l-1", l_tree)},
        [install("l")])

    add("ignore-list-merged",
        "after m merges bin/, share/info/, lib/ and lib/perl5/, l's ignored entries disappear",
        {"l": pkg("l-1", l_tree),
         "m": pkg("m-1", {"bin": {"m": F}, "share": {"info": {"m.info": F}},
                          "lib": {"q": F, "perl5": {"M.pm": F}}})},
        [install("l", "m")])

    add("ignore-list-canonical-path",
        "the suffix test sees the path walked: info/dir reached as docs-info/dir is kept",
        {"b": pkg("b-1", {"share": {"info": Link("../docs-info")},
                          "docs-info": {"dir": F, "b.info": F}}, {"priority": 4}),
         "c": pkg("c-1", {"share": {"info": {"dir": F, "c.info": F}}}, {"priority": 6})},
        [install("b", "c")])

    add("odd-names", "names close to the ignore list, spaces, quotes and non-ASCII",
        {"a": pkg("a-1", {"bin": {"blog": F, "logs": F, "it's here": F, "é": F, "dir": F},
                          "info": {"dirx": F}, "xlog": F}),
         "b": pkg("b-1", {"bin": {"b": F}, "info": {"b": F}})},
        [install("a", "b")])

    add("propagated-transitive",
        "d propagates e and f, f propagates g; e2's bin/e wins over the propagated e",
        {"g": pkg("g-1", bins("g")),
         "f": pkg("f-1", bins("f"), propagates="@g@"),
         "e": pkg("e-1", bins("e")),
         "d": pkg("d-1", bins("d"), propagates="@e@ @f@"),
         "e2": pkg("e2-1", bins("e"))},
        [install("d", "e2")])

    add("explicit-priority-above-1000",
        "an explicit package with priority 1500 loses to a propagated one (1000)",
        {"e": pkg("e-1", bins("e")),
         "d": pkg("d-1", bins("d"), propagates="@e@"),
         "x": pkg("x-1", bins("e"), {"priority": 1500})},
        [install("d", "x")])

    add("explicit-priority-equal-propagated",
        "an explicit package with priority 1000 collides with the first propagated one",
        {"e": pkg("e-1", bins("e")),
         "d": pkg("d-1", bins("d"), propagates="@e@"),
         "x": pkg("x-1", bins("e"), {"priority": 1000})},
        [install("d", "x")])

    add("propagated-counter-counts-skipped",
        "the propagation counter advances for paths already done: T gets 1003, not 1002",
        {"t": pkg("t-1", bins("t")),
         "b": pkg("b-1", bins("b"), propagates="@t@"),
         "a": pkg("a-1", bins("a"), propagates="@b@"),
         "d": pkg("d-1", bins("d"), propagates="@a@ @b@"),
         "e": pkg("e-1", bins("t"), {"priority": 1003})},
        [install("d", "e")],
        order=["a", "b", "t"])

    add("propagated-missing-path", "a propagated path that does not exist fails the build",
        {"p": pkg("p-1", bins("p"), propagates="/nonexistent/declenv-test-path")},
        [install("p")])

    add("propagated-tab-separated", "tokens are split on spaces and newlines only, not tabs",
        {"a": pkg("a-1", bins("a")), "b": pkg("b-1", bins("b")),
         "p": pkg("p-1", bins("p"), propagates="@a@\t@b@")},
        [install("p")])

    add("propagated-whitespace", "leading, repeated and trailing spaces and newlines",
        {"a": pkg("a-1", bins("a")), "b": pkg("b-1", bins("b")),
         "p": pkg("p-1", bins("p"), propagates="\n @a@  \n\n@b@\n")},
        [install("p")])

    add("propagated-by-inactive", "an inactive package propagates nothing",
        {"j": pkg("j-1", bins("j")),
         "i": pkg("i-1", bins("i"), {"active": "false"}, propagates="@j@"),
         "k": pkg("k-1", bins("k"))},
        [install("i", "k")])

    add("inactive-package", "meta.active = \"false\" leaves the package out: no collision",
        {"a": pkg("a-1", bins("x"), {"active": "false"}), "b": pkg("b-1", bins("x"))},
        [install("a", "b")])

    add("active-other-strings", "only the exact string \"false\" deactivates",
        {"a": pkg("a-1", bins("a"), {"active": "no"}), "b": pkg("b-1", bins("b"), {"active": "0"}),
         "c": pkg("c-1", bins("c"), {"active": True}), "d": pkg("d-1", bins("d"), {"active": "FALSE"})},
        [install("a", "b", "c", "d")])

    add("inactive-but-propagated", "an inactive package propagated by an active one is linked",
        {"a": pkg("a-1", bins("a"), {"active": "false"}),
         "p": pkg("p-1", bins("p"), propagates="@a@")},
        [install("a", "p")])

    add("dangling-symlinks",
        "dangling links are skipped with a warning naming the destination, even one named like "
        "an ignored entry (the stat comes first)",
        {"a": pkg("a-1", {"dangling": Link("/nonexistent/declenv-test"), "log": Link("nowhere"),
                          "bin": {"a": F, "broken": Link("../nope")},
                          "share": {"dead": Link("missing")}}),
         "b": pkg("b-1", {"bin": {"b": F}})},
        [install("a", "b")])

    add("file-directory-collision-file-first",
        "c's file share sorts first; a's share/ directory then collides",
        {"a": pkg("a-1", {"share": {"a": F}}), "c": pkg("c-1", {"share": F})},
        [install("a", "c")], order=["c", "a"])

    add("file-directory-collision-directory-first",
        "a's share/ sorts first; c's file share then has the same priority",
        {"a": pkg("a-1", {"share": {"a": F}}), "c": pkg("c-1", {"share": F})},
        [install("a", "c")], order=["a", "c"])

    add("file-directory-file-wins-priority",
        "the file has the lower priority number: the directory still collides",
        {"a": pkg("a-1", {"share": {"a": F}}, {"priority": 5}), "c": pkg("c-1", {"share": F}, {"priority": 3})},
        [install("a", "c")])

    add("file-directory-directory-wins-priority",
        "the directory has the lower priority number: the file is dropped silently",
        {"a": pkg("a-1", {"share": {"a": F}}, {"priority": 3}), "c": pkg("c-1", {"share": F}, {"priority": 5})},
        [install("a", "c")])

    add("file-versus-merged-directory",
        "share/ is a real directory when c's file share arrives",
        {"a": pkg("a-1", {"share": {"a": F}}, {"priority": 1}),
         "b": pkg("b-1", {"share": {"b": F}}, {"priority": 2}),
         "c": pkg("c-1", {"share": F}, {"priority": 3})},
        [install("a", "b", "c")])

    add("duplicate-store-path", "the same store path twice, and once more propagated: linked once",
        {"a": pkg("a-1", bins("x")),
         "p": pkg("p-1", bins("p"), propagates="@a@"),
         "x": Package("x-1", {"out": "@a@"}),
         "y": Package("y-1", {"out": "@a@"}, {"priority": 3})},
        [install("x", "y", "p")])

    add("outputs-to-install", "meta.outputsToInstall picks outputs; without it all are installed",
        {"mo": Package("mo-1.0", {"out": {"lib": {"libmo.so": F}}, "bin": bins("mo"),
                                  "dev": {"include": {"mo.h": F}}, "man": {"share": {"man": {"mo.1": F}}}},
                       {"outputsToInstall": ["bin", "dev"]}),
         "mo2": Package("mo2-1.0", {"out": {"lib": {"libmo2.so": F}}, "bin": bins("mo2"),
                                    "dev": {"include": {"mo2.h": F}}})},
        [install("mo", "mo2")])

    add("file-package", "a store path that is a file is left out with a warning",
        {"f": pkg("filepkg-1", File("just a file\n")), "a": pkg("a-1", bins("a"))},
        [("install-path", ["f", "a"])])

    add("symlink-package", "a store path that is a symlink to a directory is walked through",
        {"a": pkg("a-1", bins("a")), "t": pkg("toplink-1", Link("@a@"))},
        [("install-path", ["t"])])

    add("symlink-loop-merged", "a symlink loop inside a merged directory fails the build",
        {"l": pkg("loop-1", {"bin": {"self": Link("self")}}), "b": pkg("b-1", bins("b"))},
        [install("l", "b")])

    add("symlink-cycle-merged",
        "share/loop points back at share; merging walks the cycle only as deep as b's real "
        "directories, each time at the canonical path",
        {"a": pkg("a-1", {"share": {"loop": Link("."), "a": F}}),
         "b": pkg("b-1", {"share": {"loop": {"loop": {"loop": {"b": F}}}}})},
        [install("a", "b")], order=["a", "b"])

    add("symlink-loop-unmerged", "a symlink loop inside a directory linked whole is harmless",
        {"l": pkg("loop-1", {"bin": {"self": Link("self"), "l": F}})},
        [install("l")])

    add("set-flag-steps", "priority and active set with --set-flag between installs",
        {"a": pkg("a-1", bins("x", "a")), "b": pkg("b-1", bins("x", "b"))},
        [install("a"), ("set-flag", "priority", "1", "a-1"), install("b"),
         ("set-flag", "active", "false", "a-1")])

    add("install-by-store-path", "store-path installs have no system and empty meta",
        {"a": pkg("a-1", bins("a")), "b": pkg("b-1", {"share": {"b": F}})},
        [("install-path", ["a", "b"])])

    add("uninstall-all", "an empty profile: the manifest is [ ] and the tree is empty",
        {"a": pkg("a-1", bins("a"))},
        [install("a"), ("uninstall", "*")])

    add("meta-values", "meta of every printable type, odd attribute names and invalid values",
        {"a": pkg("a-1", bins("a"), {
            "description": "q\"\\ ${x} $ $${ \n\t\r é",
            "int": 42, "negative": -7, "zero": 0, "big": 9223372036854775807,
            "float_integral": 1.0, "float_tenth": 0.1, "float_third": 1 / 3,
            "float_big": 1e20, "float_precise": 123456789.0, "float_small": 1.5e-7,
            "float_negative": -2.5, "list_negative": [-1, -0.5, 3],
            "bool_true": True, "bool_false": False,
            "list": ["x", 1, [], {}, ["nested"]], "set": {"x": {}, "y": [[]], "z": {"k": "v"}},
            "": "empty name", "if": 1, "let": 2, "or": 3, "then": 4, "a'b-c_": 5, "1a": 6,
            "-a": 7, "weird key": 8, "é": 9, "_": 10,
            "invalid_null": None, "invalid_list": [1, None], "invalid_drv": {"outPath": "x"},
        })},
        [install("a")])

    return s


# --------------------------------------------------------------------------------------------
# Running Nix.
# --------------------------------------------------------------------------------------------


class Runner:
    def __init__(self, work: Path):
        self.work = work
        self.store = work / "store"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "NIX_STORE_DIR": str(self.store),
            "NIX_STATE_DIR": str(work / "var" / "nix"),
            "NIX_LOG_DIR": str(work / "var" / "log" / "nix"),
            "NIX_CONF_DIR": str(work / "etc"),
            "HOME": str(work / "home"),
            "NIX_REMOTE": "local",
            "NIX_CONFIG": "sandbox = false\nsubstituters =",
            "LANG": "C.UTF-8",
        }
        for key in ("NIX_CONF_DIR", "HOME"):
            Path(self.env[key]).mkdir(parents=True, exist_ok=True)

    def run(self, args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, cwd=cwd, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)

    def checked(self, args: list[str]) -> str:
        proc = self.run(args)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc.stdout

    def add(self, path: Path) -> str:
        return self.checked(["nix-store", "--add", str(path)]).strip()


# --------------------------------------------------------------------------------------------
# Materialising packages.
# --------------------------------------------------------------------------------------------

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
PLACEHOLDER = re.compile(r"@([A-Za-z0-9_]+)(?::([A-Za-z0-9_]+))?@")


def references(text: str) -> set[str]:
    return {match.group(1) for match in PLACEHOLDER.finditer(text)}


def tree_references(tree: Tree | str) -> set[str]:
    if isinstance(tree, str):
        return references(tree)
    if isinstance(tree, Link):
        return references(tree.target)
    if isinstance(tree, File):
        return set()
    found: set[str] = set()
    for child in tree.values():
        found |= tree_references(child)
    return found


def package_references(package: Package) -> set[str]:
    found = set()
    for tree in package.outputs.values():
        found |= tree_references(tree)
    if package.propagates is not None:
        found |= references(package.propagates)
    return found


def substitute(text: str, paths: dict[str, dict[str, str]]) -> str:
    def replace(match: re.Match) -> str:
        return paths[match.group(1)][match.group(2) or "out"]

    return PLACEHOLDER.sub(replace, text)


def write_tree(path: Path, tree: Tree, paths: dict[str, dict[str, str]]) -> None:
    if isinstance(tree, File):
        path.write_text(tree.content)
    elif isinstance(tree, Link):
        os.symlink(substitute(tree.target, paths), path)
    else:
        path.mkdir()
        for name, child in tree.items():
            write_tree(path / name, child, paths)


def output_store_name(package: Package, output: str) -> str:
    return package.name if output == "out" else f"{package.name}-{output}"


def materialise(runner: Runner, scenario: Scenario, source: Path) -> dict[str, dict[str, str]]:
    """Adds every package to the store, dependencies first; returns key -> output -> store path."""
    paths: dict[str, dict[str, str]] = {}
    pending = dict(scenario.packages)
    while pending:
        ready = [key for key, package in pending.items() if package_references(package) <= paths.keys()]
        if not ready:
            raise SystemExit(f"{scenario.name}: cyclic references among {sorted(pending)}")
        for key in ready:
            paths[key] = add_package(runner, scenario, key, pending.pop(key), source, paths)
    return paths


def order_holds(scenario: Scenario, paths: dict[str, dict[str, str]]) -> bool:
    placed = [paths[key]["out"] for key in scenario.order if key in paths]
    return all(a < b for a, b in zip(placed, placed[1:]))


def add_package(runner: Runner, scenario: Scenario, key: str, package: Package, source: Path,
                paths: dict[str, dict[str, str]]) -> dict[str, str]:
    for salt in range(MAX_SALT):
        result: dict[str, str] = {}
        for index, (output, tree) in enumerate(package.outputs.items()):
            if isinstance(tree, str):  # an alias of another package's store path
                result[output] = substitute(tree, paths)
                continue
            directory = source / f"{key}-{salt}-{output}"
            staging = directory / output_store_name(package, output)
            directory.mkdir(parents=True)
            if isinstance(tree, File) and salt:
                tree = File(tree.content + "#" * salt)
            write_tree(staging, tree, paths)
            if isinstance(tree, dict):
                if index == 0 and package.propagates is not None:
                    support = staging / "nix-support"
                    support.mkdir(exist_ok=True)
                    (support / "propagated-user-env-packages").write_text(substitute(package.propagates, paths))
                if salt:
                    (staging / ".salt").write_text(str(salt))
            result[output] = runner.add(staging)
        trial = dict(paths)
        trial[key] = result
        if key not in scenario.order or order_holds(scenario, trial):
            return result
    raise SystemExit(f"{scenario.name}: no salt puts {scenario.order} in order")


# --------------------------------------------------------------------------------------------
# The fake derivations nix-env installs.
# --------------------------------------------------------------------------------------------


def nix_string(text: str) -> str:
    out = ['"']
    index = 0
    while index < len(text):
        char = text[index]
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif char == "$" and text[index + 1:index + 2] == "{":
            out.append("\\$")
        else:
            out.append(char)
        index += 1
    out.append('"')
    return "".join(out)


def nix_float(value: float) -> str:
    text = repr(value)
    mantissa, _, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + ("e" + exponent if exponent else "")


def nix_expression(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"({value})" if value < 0 else str(value)
    if isinstance(value, float):
        text = nix_float(value)
        return f"({text})" if value < 0 else text
    if isinstance(value, str):
        return nix_string(value)
    if isinstance(value, list):
        return "[ " + "".join(nix_expression(item) + " " for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + "".join(f"{nix_string(k)} = {nix_expression(v)}; " for k, v in value.items()) + "}"
    raise TypeError(value)


def nix_file(scenario: Scenario, paths: dict[str, dict[str, str]]) -> str:
    lines = ["{"]
    for key, package in scenario.packages.items():
        outputs = paths[key]
        output_names = list(package.outputs)
        attrs = [
            'type = "derivation";',
            f"name = {nix_string(package.name)};",
            f"system = {nix_string(SYSTEM)};",
            f"outPath = {nix_string(outputs['out'])};",
            'outputName = "out";',
            "outputs = [ " + " ".join(nix_string(name) for name in output_names) + " ];",
        ]
        attrs += [f"{nix_string(name)} = {{ outPath = {nix_string(outputs[name])}; }};" for name in output_names]
        attrs.append(f"meta = {nix_expression(package.meta)};")
        lines.append(f"  {key} = {{ {' '.join(attrs)} }};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Elements as nix-env will write them (the input of the manifest rendering test).
# --------------------------------------------------------------------------------------------


def valid_meta(value) -> bool:
    """Nix 2.8's checkMeta: no null, no set holding outPath, recursively."""
    if value is None:
        return False
    if isinstance(value, list):
        return all(valid_meta(item) for item in value)
    if isinstance(value, dict):
        return "outPath" not in value and all(valid_meta(item) for item in value.values())
    return True


def tagged(value):
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", value]
    if isinstance(value, float):
        return ["float", value]
    if isinstance(value, str):
        return ["string", value]
    if isinstance(value, list):
        return ["list", [tagged(item) for item in value]]
    if isinstance(value, dict):
        return ["attrs", {key: tagged(item) for key, item in sorted(value.items(), key=lambda kv: kv[0].encode())}]
    raise TypeError(value)


def element_from_package(package: Package, outputs: dict[str, str]) -> dict:
    to_install = package.meta.get("outputsToInstall", list(package.outputs))
    meta = {key: value for key, value in package.meta.items() if valid_meta(value)}
    return {
        "name": package.name,
        "out_path": outputs["out"],
        "outputs": {name: outputs[name] for name in sorted(to_install)},
        "system": SYSTEM,
        "meta": meta,
    }


def element_from_path(path: str) -> dict:
    name = path.rsplit("/", 1)[-1].split("-", 1)[1]
    return {"name": name, "out_path": path, "outputs": {"out": path}, "system": None, "meta": {}}


def apply_steps(scenario: Scenario, paths: dict[str, dict[str, str]]) -> list[dict]:
    """The element list the last step hands to the builder (order fixed later from the manifest)."""
    elements: list[dict] = []
    for step in scenario.steps:
        kind = step[0]
        if kind in ("install", "install-path"):
            if kind == "install":
                new = [element_from_package(scenario.packages[key], paths[key]) for key in step[1]]
            else:
                new = [element_from_path(paths[key]["out"]) for key in step[1]]
            names = {element["name"] for element in new}
            elements = new + [element for element in elements if element["name"] not in names]
        elif kind == "set-flag":
            _, flag, value, full_name = step
            for element in elements:
                if element["name"] == full_name:
                    element["meta"][flag] = value
        elif kind == "uninstall":
            if step[1] != "*":
                raise SystemExit("only '*' is supported")
            elements = []
    return elements


# --------------------------------------------------------------------------------------------
# Scanning trees and the result.
# --------------------------------------------------------------------------------------------


class Placeholders:
    def __init__(self, store: Path):
        self.store = str(store)
        self.environment = re.compile(re.escape(self.store) + r"/[0-9a-df-np-sv-z]{32}-user-environment")

    def __call__(self, text: str) -> str:
        return self.environment.sub("@ENV@", text).replace(self.store, "@STORE@")


def scan(path: str, placeholders: Placeholders):
    """One node of a package tree: a directory is an object of its entries, a file is "file", and
    a symlink is ["symlink", TARGET, RESOLUTION], where RESOLUTION is what `stat` through it says:
    "dangling", "loop", ["directory", CANONICAL] or ["non-directory", CANONICAL]."""
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        target = placeholders(os.readlink(path))
        try:
            target_mode = os.stat(path).st_mode
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ENOTDIR):
                return ["symlink", target, "dangling"]
            if error.errno == errno.ELOOP:
                return ["symlink", target, "loop"]
            raise
        kind = "directory" if stat.S_ISDIR(target_mode) else "non-directory"
        return ["symlink", target, [kind, placeholders(os.path.realpath(path))]]
    if stat.S_ISDIR(mode):
        return {name: scan(os.path.join(path, name), placeholders) for name in sorted(os.listdir(path))}
    return "file"


def propagated_text(path: str) -> str | None:
    try:
        with open(os.path.join(path, "nix-support", "propagated-user-env-packages"), encoding="utf-8") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def environment_listing(root: str, placeholders: Placeholders) -> list[list[str]]:
    listing: list[list[str]] = []

    def walk(directory: str, prefix: str) -> None:
        for name in sorted(os.listdir(directory)):
            full = os.path.join(directory, name)
            relative = prefix + name
            if os.path.islink(full):
                listing.append([relative, "symlink", placeholders(os.readlink(full))])
            elif os.path.isdir(full):
                listing.append([relative, "directory"])
                walk(full, relative + "/")
            else:
                listing.append([relative, "file"])

    walk(root, "")
    return listing


def log_lines(log: str) -> list[str]:
    """The lines of a build log, with structured `@nix {...}` messages unwrapped and colours
    removed."""
    lines = []
    for line in log.splitlines():
        if line.startswith("@nix "):
            message = json.loads(line[len("@nix "):])
            if message.get("action") != "msg":
                continue
            line = message.get("msg", "")
        line = ANSI_ESCAPE.sub("", line)
        if line:
            lines.append(line)
    return lines


def derivation_env(runner: Runner, drv: str) -> dict[str, str]:
    shown = json.loads(runner.checked(
        ["nix", "--extra-experimental-features", "nix-command", "show-derivation", drv]))
    return shown[drv]["env"]


# --------------------------------------------------------------------------------------------
# One scenario.
# --------------------------------------------------------------------------------------------


def run_scenario(runner: Runner, scenario: Scenario, scratch: Path) -> dict:
    source = scratch / "src" / scenario.name
    source.mkdir(parents=True)
    paths = materialise(runner, scenario, source)
    expression = scratch / f"{scenario.name}.nix"
    expression.write_text(nix_file(scenario, paths))
    profile = scratch / "profiles" / scenario.name
    profile.parent.mkdir(parents=True, exist_ok=True)
    placeholders = Placeholders(runner.store)

    proc = None
    for step in scenario.steps:
        kind = step[0]
        if kind == "install":
            args = ["nix-env", "-p", str(profile), "-f", str(expression), "-iA", *step[1]]
        elif kind == "install-path":
            args = ["nix-env", "-p", str(profile), "-i", *(paths[key]["out"] for key in step[1])]
        elif kind == "set-flag":
            args = ["nix-env", "-p", str(profile), "--set-flag", *step[1:]]
        elif kind == "uninstall":
            args = ["nix-env", "-p", str(profile), "-e", step[1]]
        else:
            raise SystemExit(f"unknown step {kind}")
        proc = runner.run(args)
    assert proc is not None

    built = re.findall(r"building '([^']*-user-environment\.drv)'", proc.stderr)
    if built:
        drv = built[-1]
    else:
        output = os.path.realpath(profile)
        drv = runner.checked(["nix-store", "-q", "--deriver", output]).strip()
    env = derivation_env(runner, drv)
    manifest = Path(env["manifest"]).read_text(encoding="utf-8")

    # The builder's messages come from its build log, not from stderr, where Nix expands tabs
    # to the terminal's tab stops (which would depend on the length of the store directory).
    lines = log_lines(runner.checked(["nix-store", "--read-log", drv]))
    warnings = [placeholders(line[len("warning: "):]) for line in lines if line.startswith("warning: ")]
    errors = [placeholders(line[len("error: "):]) for line in lines if line.startswith("error: ")]
    if not errors and proc.returncode != 0:
        # Uncaught C++ exceptions (`stoi`) are printed bare.
        errors = [placeholders(line) for line in lines if not line.startswith("warning: ")]

    elements = apply_steps(scenario, paths)
    elements.sort(key=lambda element: manifest.find(f"name = {nix_string(element['name'])};"))
    for element in elements:
        element["out_path"] = placeholders(element["out_path"])
        element["outputs"] = {name: placeholders(path) for name, path in element["outputs"].items()}
        element["meta"] = tagged(element["meta"])[1]

    store_paths = sorted({path for outputs in paths.values() for path in outputs.values()})
    trees = {}
    for path in store_paths:
        entry = {"root": scan(path, placeholders)}
        text = propagated_text(path)
        if text is not None:
            entry["propagated"] = placeholders(text)
        trees[placeholders(path)] = entry

    return {
        "name": scenario.name,
        "description": scenario.description,
        "store_paths": {key: {output: placeholders(path) for output, path in outputs.items()}
                        for key, outputs in sorted(paths.items())},
        "trees": trees,
        "derivations": placeholders(env["derivations"]),
        "exit": proc.returncode,
        "warnings": warnings,
        "error": errors[0] if errors else None,
        "environment": environment_listing(os.path.realpath(profile), placeholders) if proc.returncode == 0 else None,
        "manifest": placeholders(manifest),
        "elements": elements,
    }


def render_record(record: dict) -> str:
    """JSON with one line per field, and one line per tree, environment entry and element."""

    def dump(value) -> str:
        return json.dumps(value, ensure_ascii=False)

    lines = []
    for key, value in record.items():
        if isinstance(value, dict) and key in ("trees", "store_paths"):
            inner = [f"  {dump(k)}: {dump(v)}" for k, v in value.items()]
            body = "{\n" + ",\n".join(inner) + "\n }" if inner else "{}"
        elif isinstance(value, list) and key in ("environment", "elements", "warnings") and value:
            body = "[\n" + ",\n".join(f"  {dump(item)}" for item in value) + "\n ]"
        else:
            body = dump(value)
        lines.append(f" {dump(key)}: {body}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def prepare_work(work: Path) -> None:
    if work.exists():
        if not (work / MARKER).exists():
            raise SystemExit(f"{work} exists and was not made by this script; remove it or pass --work")
        subprocess.run(["chmod", "-R", "u+w", str(work)], check=True)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / MARKER).write_text("scratch directory of gen_layout.py\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    options = parser.parse_args()

    chosen = scenarios()
    if options.only:
        wanted = set(options.only.split(","))
        unknown = wanted - {scenario.name for scenario in chosen}
        if unknown:
            raise SystemExit(f"unknown scenarios: {sorted(unknown)}")
        chosen = [scenario for scenario in chosen if scenario.name in wanted]

    work = options.work.resolve()
    prepare_work(work)
    runner = Runner(work)
    options.out.mkdir(parents=True, exist_ok=True)
    summary = {"scenarios": 0, "failed_builds": 0, "warnings": 0}
    for scenario in chosen:
        record = run_scenario(runner, scenario, work)
        text = render_record(record)
        (options.out / f"{scenario.name}.json").write_text(text, encoding="utf-8")
        summary["scenarios"] += 1
        summary["failed_builds"] += record["exit"] != 0
        summary["warnings"] += len(record["warnings"])
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
