#!/usr/bin/env python3
"""Generate the version conformance fixtures by asking the real Nix.

The inputs are drawn, deterministically from a seed, from real package lists
(Debian's `apt-cache dumpavail`, and the PyPI and npm name/version lists under
/work/.library/env/packages/) plus mutations of them and hand-written
adversarial cases. Every input is then evaluated by `nix-instantiate` in a few
big batches, and Nix's answers are written as JSON lines:

    tests/fixtures/versions/compare.jsonl         [a, b, result]
    tests/fixtures/versions/parse_drv_name.jsonl  [full, name, version]
    tests/fixtures/versions/split_version.jsonl   [input, [components...]]

Given the same seed and the same package lists, the output is byte-identical.
The Debian list changes with `apt-get update`, so a regenerated fixture may
differ in the cases drawn from it; the adversarial cases never change.

Run as root with Nix installed and no daemon, e.g.

    export NIX_REMOTE=local NIX_CONFIG=$'sandbox = false\\nsubstituters ='
    python3 scripts/conformance/gen_versions.py

Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE_LISTS = Path("/work/.library/env/packages")
DEFAULT_SEED = 20220519

# --------------------------------------------------------------------------------------------
# Building blocks shared by the generators.
# --------------------------------------------------------------------------------------------

NON_ASCII = ["é", "ü", "ß", "Ω", "ж", "中", "文", "日本", "한", "😀", "🦀", "\u00a0", "\u2028", "ﬁ", "Ⅻ", "٣", "１"]

NUMBERS = [
    "0", "00", "000", "1", "01", "001", "0001", "2", "9", "09", "10", "11", "99", "100", "0100",
    "2147483646", "2147483647", "2147483648", "2147483649", "02147483647", "002147483648",
    "4294967294", "4294967295", "4294967296", "4294967297", "04294967296",
    "9223372036854775806", "9223372036854775807", "9223372036854775808", "9223372036854775809",
    "18446744073709551615", "18446744073709551616", "18446744073709551617",
    "10000000000000000000", "12345678901234567890", "99999999999999999999", "00000000000000000000",
    "00000000000000000001", "100000000000000000000",
]

WORDS = [
    "", "pre", "Pre", "PRE", "pRe", "pr", "prea", "apre", "prepre", "preview", "prerelease",
    "rc", "RC", "beta", "Beta", "BETA", "alpha", "ALPHA", "a", "b", "c", "q", "z", "A", "B", "Z",
    "dev", "post", "final", "git", "unstable", "snapshot", "p", "r", "v", "x",
    " ", "  ", "_", "+", "~", "a b", "~rc", "+git", "_rc", "_pre", "+pre", "~pre", "pre ", " pre",
    "é", "ü", "中", "😀", "é1", "ß", "Ω", "\t", "!", "#", "$", "%", "&", "'", "(", "*", ",", "/",
    ":", ";", "<", "=", ">", "?", "@", "[", "\\", "]", "^", "`", "{", "|", "}", "\x7f", "\x01",
]

SEPARATORS = [".", "-", "", "..", "--", ".-", "-.", "...", "_", "+", "~", " ", "-_", "._"]

SUFFIXES = [
    "pre", "pre1", "pre12", "-pre", ".pre", "pre.1", "-pre1", "rc", "rc1", "-rc1", ".rc1", "~rc1",
    "beta", "-beta", "beta2", "-beta.2", "b1", "alpha", "-alpha", "a", "a1", "prerelease", ".0",
    ".0.0", "-1", ".1", "1", "0", ".", "-", "..", "--", "+git", "+git.20200101", "+dfsg-1",
    "-unstable-2020-01-01", "_1", "~", ".post1", ".dev0", "-SNAPSHOT", " ", "é", "😀", "-r1",
]

PREFIXES = [
    "v", "V", ".", "-", "..", "-.", "0", "0.", "1:", "2:", "r", "pre", "pre-", "pre.", " ", "_", "é",
    "unstable-", "git-",
]

# Characters for random strings: rich in separators, digits and the `pre` token.
RANDOM_ATOMS = (
    [".", "-"] * 6
    + list("0123456789") * 2
    + ["pre"] * 4
    + list("abcdefghijklmnopqrstuvwxyz")
    + list("ABCPRZ")
    + ["rc", "beta", "alpha", "_", "+", "~", " ", "00", "2147483648", "4294967296"]
    + NON_ASCII
)


def valid(s: str) -> bool:
    """A usable input: encodable as UTF-8 (no lone surrogates) and without NUL."""
    if "\x00" in s:
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def split_runs(s: str) -> list[str]:
    """Splits into alternating digit / non-digit / separator runs (for structured mutations)."""
    return re.findall(r"[0-9]+|[.\-]+|[^0-9.\-]+", s)


def around(n: int, width: int = 2) -> list[str]:
    return [str(n + d) for d in range(-width, width + 1) if n + d >= 0]


BIG_NUMBERS = sorted(
    {
        *NUMBERS,
        *around(2**31, 3),
        *around(2**32, 3),
        *around(2**63, 3),
        *around(2**64, 3),
        *around(10**19, 2),
        *around(10**20, 2),
        "0" + str(2**31),
        "0" * 30 + "1",
        "9" * 40,
    },
    key=lambda x: (len(x), x),
)


class Mutator:
    """Random edits of a version or name, keeping the result valid UTF-8 without NUL."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ops: list[Callable[[str], str]] = [
            self.replace_char,
            self.insert_atom,
            self.delete_char,
            self.change_separator,
            self.bump_number,
            self.pad_number,
            self.big_number,
            self.insert_pre,
            self.append_suffix,
            self.add_prefix,
            self.truncate,
            self.duplicate_run,
            self.swap_runs,
            self.change_case,
            self.insert_non_ascii,
            self.repeat_separator,
        ]

    def mutate(self, s: str, max_edits: int = 3) -> str:
        for _ in range(self.rng.randint(1, max_edits)):
            s = self.rng.choice(self.ops)(s)
        return s

    def _pos(self, s: str) -> int:
        return self.rng.randint(0, len(s))

    def replace_char(self, s: str) -> str:
        if not s:
            return self.rng.choice(RANDOM_ATOMS)
        i = self.rng.randrange(len(s))
        return s[:i] + self.rng.choice(RANDOM_ATOMS) + s[i + 1 :]

    def insert_atom(self, s: str) -> str:
        i = self._pos(s)
        return s[:i] + self.rng.choice(RANDOM_ATOMS) + s[i:]

    def delete_char(self, s: str) -> str:
        if not s:
            return s
        i = self.rng.randrange(len(s))
        return s[:i] + s[i + 1 :]

    def change_separator(self, s: str) -> str:
        runs = split_runs(s)
        seps = [i for i, r in enumerate(runs) if r[0] in ".-"]
        if not seps:
            return self.insert_atom(s)
        runs[self.rng.choice(seps)] = self.rng.choice(SEPARATORS)
        return "".join(runs)

    def repeat_separator(self, s: str) -> str:
        choice = self.rng.randrange(3)
        sep = self.rng.choice([".", "-", "..", "-.", "--"])
        if choice == 0:
            return sep + s
        if choice == 1:
            return s + sep
        return s.replace(".", self.rng.choice(["..", ".-.", "-", "...", "._."]), 1)

    def _numbers(self, s: str) -> tuple[list[str], list[int]]:
        runs = split_runs(s)
        return runs, [i for i, r in enumerate(runs) if r[0].isascii() and r[0].isdigit()]

    def bump_number(self, s: str) -> str:
        runs, nums = self._numbers(s)
        if not nums:
            return self.append_suffix(s)
        i = self.rng.choice(nums)
        value = int(runs[i]) + self.rng.choice([-1, 1, 1, 2, 9, 10, -10, 100])
        runs[i] = str(max(value, 0))
        return "".join(runs)

    def pad_number(self, s: str) -> str:
        runs, nums = self._numbers(s)
        if not nums:
            return "0" + s
        i = self.rng.choice(nums)
        if self.rng.random() < 0.5:
            runs[i] = "0" * self.rng.randint(1, 3) + runs[i]
        else:
            runs[i] = runs[i].lstrip("0") or "0"
        return "".join(runs)

    def big_number(self, s: str) -> str:
        runs, nums = self._numbers(s)
        big = self.rng.choice(BIG_NUMBERS)
        if not nums:
            return s + "." + big
        runs[self.rng.choice(nums)] = big
        return "".join(runs)

    def insert_pre(self, s: str) -> str:
        runs = split_runs(s)
        i = self.rng.randint(0, len(runs))
        token = self.rng.choice(["pre", "pre", ".pre", "-pre", "pre.", "pre1", "pre0", "prepre", "Pre"])
        runs.insert(i, token)
        return "".join(runs)

    def append_suffix(self, s: str) -> str:
        return s + self.rng.choice(SUFFIXES)

    def add_prefix(self, s: str) -> str:
        return self.rng.choice(PREFIXES) + s

    def truncate(self, s: str) -> str:
        if len(s) < 2:
            return s
        return s[: self.rng.randint(1, len(s) - 1)]

    def duplicate_run(self, s: str) -> str:
        runs = split_runs(s)
        if not runs:
            return s
        i = self.rng.randrange(len(runs))
        runs.insert(i, runs[i])
        return "".join(runs)

    def swap_runs(self, s: str) -> str:
        runs = split_runs(s)
        if len(runs) < 2:
            return s
        i, j = self.rng.sample(range(len(runs)), 2)
        runs[i], runs[j] = runs[j], runs[i]
        return "".join(runs)

    def change_case(self, s: str) -> str:
        return self.rng.choice([s.upper(), s.lower(), s.swapcase(), s.capitalize()])

    def insert_non_ascii(self, s: str) -> str:
        i = self._pos(s)
        return s[:i] + self.rng.choice(NON_ASCII) + s[i:]


def random_string(rng: random.Random, max_atoms: int = 12) -> str:
    return "".join(rng.choice(RANDOM_ATOMS) for _ in range(rng.randint(0, max_atoms)))


def natural_key(s: str) -> tuple:
    """A rough version order, used only to find neighbouring versions."""
    return tuple((0, int(r), "") if r.isdigit() else (1, 0, r) for r in re.findall(r"[0-9]+|[^0-9.\-]+", s))


# --------------------------------------------------------------------------------------------
# Real package data.
# --------------------------------------------------------------------------------------------

RELATION_FIELDS = (
    "Depends", "Pre-Depends", "Recommends", "Suggests", "Enhances", "Breaks", "Conflicts",
    "Replaces", "Provides",
)
RELATION = re.compile(r"([a-z0-9][a-z0-9+.\-]+)(?::[a-z0-9]+)?\s*\(\s*(?:<<|<=|=|>=|>>)\s*([^\s)]+)\s*\)")
SOURCE = re.compile(r"^(\S+)(?:\s+\((\S+)\))?$")


class Debian:
    def __init__(self) -> None:
        self.versions: dict[str, str] = {}
        # (package, version from a relation or source field, version of that package)
        self.same_package: list[tuple[str, str]] = []
        self.source_names: list[str] = []


def apt_dumpavail(allow_update: bool) -> str:
    def dump() -> str:
        result = subprocess.run(
            ["apt-cache", "dumpavail"], capture_output=True, text=True, encoding="utf-8", errors="replace"
        )
        return result.stdout if result.returncode == 0 else ""

    text = dump()
    if "\nPackage:" not in "\n" + text and allow_update:
        print("apt-cache dumpavail is empty; running apt-get update once", file=sys.stderr)
        subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
        text = dump()
    return text


def load_debian(allow_update: bool) -> Debian:
    deb = Debian()
    text = apt_dumpavail(allow_update)
    relations: list[tuple[str, str]] = []
    sources: list[tuple[str, str, str]] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith((" ", "\t")):
                if key is not None:
                    fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        package, version = fields.get("Package"), fields.get("Version")
        if not package or not version:
            continue
        deb.versions.setdefault(package, version)
        for field in RELATION_FIELDS:
            for name, constraint in RELATION.findall(fields.get(field, "")):
                relations.append((name, constraint))
        if "Source" in fields:
            match = SOURCE.match(fields["Source"])
            if match:
                source_name, source_version = match.group(1), match.group(2) or version
                sources.append((package, source_name, source_version))
    for name, constraint in relations:
        actual = deb.versions.get(name)
        if actual is not None:
            deb.same_package.append((constraint, actual))
    for package, source_name, source_version in sources:
        deb.source_names.append(source_name)
        actual = deb.versions[package]
        deb.same_package.append((source_version, actual))
        other = deb.versions.get(source_name)
        if other is not None:
            deb.same_package.append((other, actual))
    print(
        f"debian: {len(deb.versions)} packages, {len(deb.same_package)} same-package pairs",
        file=sys.stderr,
    )
    return deb


def load_tsv(path: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if not path.exists():
        print(f"warning: {path} is missing", file=sys.stderr)
        return rows
    with path.open(encoding="utf-8", errors="replace") as handle:
        next(handle, None)
        for line in handle:
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= 2 and cols[0] and cols[1] and valid(cols[0]) and valid(cols[1]):
                rows.append((cols[0], cols[1]))
    print(f"{path.name}: {len(rows)} rows", file=sys.stderr)
    return rows


def debian_upstream(version: str) -> str:
    """The upstream part of a Debian version: no epoch, no Debian revision."""
    version = version.split(":", 1)[1] if re.match(r"^\d+:", version) else version
    return version.rsplit("-", 1)[0] if "-" in version else version


# --------------------------------------------------------------------------------------------
# Case generation.
# --------------------------------------------------------------------------------------------


class Collector:
    """Keeps unique cases in insertion order."""

    def __init__(self) -> None:
        self.items: dict = {}

    def add(self, item) -> None:
        parts = item if isinstance(item, tuple) else (item,)
        if all(valid(p) for p in parts):
            self.items.setdefault(item, None)

    def extend(self, items: Iterable) -> None:
        for item in items:
            self.add(item)

    def __len__(self) -> int:
        return len(self.items)

    def fill_to(self, target: int, make: Callable[[], object], limit: int = 50) -> None:
        attempts = 0
        while len(self) < target and attempts < target * limit:
            self.add(make())
            attempts += 1

    def values(self) -> list:
        return list(self.items)


class Sources:
    def __init__(self, deb: Debian, pypi: list[tuple[str, str]], npm: list[tuple[str, str]]) -> None:
        self.deb = deb
        self.pypi = pypi
        self.npm = npm
        debian_versions = sorted(set(deb.versions.values()))
        self.by_ecosystem = {
            "debian": debian_versions,
            "debian-upstream": sorted({debian_upstream(v) for v in debian_versions}),
            "pypi": sorted({v for _, v in pypi}),
            "npm": sorted({v for _, v in npm}),
        }
        self.all_versions = sorted({v for vs in self.by_ecosystem.values() for v in vs})
        self.names = {
            "debian": sorted(deb.versions),
            "pypi": [n for n, _ in pypi],
            "npm": [n for n, _ in npm],
        }
        self.full_names = {
            "debian": [f"{n}-{v}" for n, v in sorted(deb.versions.items())],
            "debian-upstream": [f"{n}-{debian_upstream(v)}" for n, v in sorted(deb.versions.items())],
            "pypi": [f"{n}-{v}" for n, v in pypi],
            "npm": [f"{n}-{v}" for n, v in npm],
        }


def cross_ecosystem_pairs(src: Sources) -> list[tuple[str, str]]:
    """The same project packaged twice: Debian's version against PyPI's or npm's."""
    pypi = {n.lower().replace("_", "-"): v for n, v in src.pypi}
    npm = dict(src.npm)
    pairs = []
    for package, version in sorted(src.deb.versions.items()):
        for prefix, table in (("python3-", pypi), ("python-", pypi), ("node-", npm), ("", pypi), ("", npm)):
            if not package.startswith(prefix):
                continue
            other = table.get(package[len(prefix) :])
            if other is not None:
                pairs.append((version, other))
                pairs.append((debian_upstream(version), other))
    return pairs


def adversarial_versions() -> list[str]:
    """Single versions built to hit every rule of `compareVersions` and `splitVersion`."""
    out: list[str] = []
    tokens = NUMBERS + WORDS
    out.extend(tokens)
    for base in ["1", "1.2", "1.2.3", "2.3a", "0.0.1", "10.0", "1-2-3", "1.0.0"]:
        components = re.split(r"[.\-]", base)
        # `pre` in every character position and as every component.
        for i in range(len(base) + 1):
            out.append(base[:i] + "pre" + base[i:])
            out.append(base[:i] + "pre1" + base[i:])
            out.append(base[:i] + ".pre." + base[i:])
        for i in range(len(components)):
            replaced = components.copy()
            replaced[i] = "pre"
            out.append(".".join(replaced))
            inserted = components.copy()
            inserted.insert(i, "pre")
            out.append(".".join(inserted))
        out.append(".".join(components + ["pre"]))
        for sep in SEPARATORS:
            out.append(sep.join(components))
            out.append(sep + base)
            out.append(base + sep)
            out.append(sep + base + sep)
        for suffix in SUFFIXES:
            out.append(base + suffix)
        for prefix in PREFIXES:
            out.append(prefix + base)
        for word in WORDS:
            out.append(base + word)
            out.append(word + base)
            out.append(base + "." + word)
            out.append(base + "-" + word + "1")
    for number in BIG_NUMBERS:
        out.extend([number, "1." + number, number + ".1", number + "pre", "v" + number, number + "a", "0." + number + ".0"])
    # Empty components, separators only.
    for sep in SEPARATORS:
        out.extend([sep, sep * 3, "1" + sep + sep + "2", sep + "pre" + sep])
    # Very long strings.
    out.extend(
        [
            "1." * 500 + "1",
            "1." * 500 + "2",
            "0." * 700,
            "pre" * 400,
            "pre." * 300 + "1",
            "9" * 1000,
            "0" * 999 + "1",
            "a" * 2000,
            "a" * 1999 + "b",
            "1.2.3" + "-" * 1000,
            "é" * 500,
            "😀" * 300 + "1",
            "-".join(str(i) for i in range(600)),
            "-".join(str(i) for i in range(599)) + "-600",
        ]
    )
    return out


def exhaustive_small(alphabet: list[str], max_len: int) -> list[str]:
    out = [""]
    level = [""]
    for _ in range(max_len):
        level = [s + a for s in level for a in alphabet]
        out.extend(level)
    return out


def gen_compare(src: Sources, rng: random.Random, target: int) -> list[tuple[str, str]]:
    mut = Mutator(rng)
    cases = Collector()

    def orient(a: str, b: str) -> tuple[str, str]:
        return (a, b) if rng.random() < 0.5 else (b, a)

    # Adversarial: all pairs of the single tokens, structured templates, small exhaustive space.
    tokens = sorted(set(NUMBERS + WORDS + ["1.0", "1-0", "1.0.0", "1pre", "1.pre", "1-pre", "1pre1"]))
    for a in tokens:
        for b in tokens:
            cases.add((a, b))
    adversarial = adversarial_versions()
    for v in adversarial:
        for ref in ["1", "1.2", "1.2.3", "", "pre", "a", rng.choice(adversarial)]:
            cases.add(orient(v, ref))
    for a in BIG_NUMBERS:
        for b in BIG_NUMBERS:
            cases.add((a, b))
            cases.add(("1." + a, "1." + b))
    small = exhaustive_small([".", "-", "0", "1", "a", "pre", "é", "_"], 2)
    for a in small:
        for b in small:
            cases.add((a, b))
    # The reference table's rows are dense in each other's neighbourhood: mutate pairs of them.
    for _ in range(4000):
        v = rng.choice(adversarial)
        cases.add(orient(v, mut.mutate(v)))
    print(f"compare: {len(cases)} adversarial pairs", file=sys.stderr)

    # Same package, from Debian's relation and source fields, and across ecosystems.
    same = src.deb.same_package
    rng.shuffle(same)
    for a, b in same[:20000]:
        cases.add(orient(a, b))
    cross = cross_ecosystem_pairs(src)
    rng.shuffle(cross)
    for a, b in cross[:8000]:
        cases.add(orient(a, b))
    print(f"compare: {len(cases)} with same-package pairs", file=sys.stderr)

    # Neighbouring versions: adjacent in a rough version order, within each ecosystem.
    for versions in src.by_ecosystem.values():
        ordered = sorted(versions, key=lambda v: (natural_key(v), v))
        for i in rng.sample(range(len(ordered) - 1), min(5000, max(len(ordered) - 1, 0))):
            cases.add(orient(ordered[i], ordered[i + 1]))
    print(f"compare: {len(cases)} with neighbouring pairs", file=sys.stderr)

    # Random pairs, within and across ecosystems.
    pool = src.all_versions
    for _ in range(15000):
        cases.add((rng.choice(pool), rng.choice(pool)))
    print(f"compare: {len(cases)} with random pairs", file=sys.stderr)

    # Mutated versions: against the original, and two mutations of one version.
    for _ in range(25000):
        v = rng.choice(pool)
        cases.add(orient(v, mut.mutate(v)))
    for _ in range(8000):
        v = rng.choice(pool)
        cases.add((mut.mutate(v), mut.mutate(v)))
    for _ in range(2000):
        v = rng.choice(pool)
        cases.add((v, v))
    print(f"compare: {len(cases)} with mutated pairs", file=sys.stderr)

    # Random strings over the rich alphabet, alone and as a version's neighbour.
    cases.fill_to(len(cases) + 5000, lambda: (random_string(rng), random_string(rng)))
    cases.fill_to(target, lambda: orient(rng.choice(pool), mut.mutate(rng.choice(pool), 5)))
    return cases.values()


def adversarial_names() -> list[str]:
    out: list[str] = []
    # A dash followed by every ASCII byte but NUL, and by non-ASCII.
    followers = [chr(c) for c in range(1, 128)] + NON_ASCII
    for f in followers:
        out.extend(
            [
                "foo-" + f,
                "foo-" + f + "1.0",
                "foo-" + f + "-1.0",
                "foo-bar-" + f + "2",
                f + "-1",
                "-" + f,
                "foo" + f + "-1",
                "foo-" + f + f,
                "a-b-" + f + "-c-1",
            ]
        )
    for word in WORDS + NUMBERS:
        out.extend([f"foo-{word}", f"foo-{word}-1", f"{word}-foo-1", f"foo--{word}"])
    out.extend(
        [
            "", "-", "--", "---", "a-", "a--", "-a", "--1", "1-", "-1", "a-1-", "a-1-b", "a--1",
            "foo-bar", "foo-Bar-1", "foo-bAR-1.0", "foo-unstable-2020-01-01", "foo-2020-01-01",
            "unstable-2020", "x-y-z", "x-y-z-", "x-y-z-0", "x-y-z--0", "gtk+-2.0", "c++-1",
            "Foo-BAR-Baz-1", "python3.11-requests-2.31.0", "python311Packages.foo-1.0",
            "foo-pre", "foo-pre1", "foo-1pre", "foo-v1.0", "foo-V1.0", "foo-é1", "foo-ü-1",
            "a" * 2000 + "-1", "a-" * 1000 + "1", "-" * 1000, "foo-" + "1." * 1000,
        ]
    )
    out.extend(exhaustive_small(["-", "a", "A", "1", ".", "_", "é", " "], 4))
    return out


def gen_names(src: Sources, rng: random.Random, target: int) -> list[str]:
    mut = Mutator(rng)
    cases = Collector()
    cases.extend(adversarial_names())
    print(f"parseDrvName: {len(cases)} adversarial names", file=sys.stderr)
    for eco, names in src.full_names.items():
        cases.extend(rng.sample(names, min(4000, len(names))))
    for eco, names in src.names.items():
        cases.extend(rng.sample(names, min(1500, len(names))))
    cases.extend(rng.sample(src.deb.source_names, min(500, len(src.deb.source_names))))
    print(f"parseDrvName: {len(cases)} with real names", file=sys.stderr)
    all_full = [n for names in src.full_names.values() for n in names]
    all_names = [n for names in src.names.values() for n in names]
    pool = src.all_versions
    for _ in range(4000):
        cases.add(mut.mutate(rng.choice(all_full)))
    for _ in range(2000):
        cases.add(rng.choice(all_names) + rng.choice(["-", "--", "-_", "-.", "- ", "-é"]) + mut.mutate(rng.choice(pool)))
    for _ in range(1500):
        cases.add(random_string(rng, 16))
    cases.fill_to(target, lambda: mut.mutate(rng.choice(all_full), 5))
    return cases.values()


def gen_split(src: Sources, rng: random.Random, target: int) -> list[str]:
    mut = Mutator(rng)
    cases = Collector()
    cases.extend(adversarial_versions())
    cases.extend(exhaustive_small([".", "-", "0", "1", "a", "pre", "é", " "], 3))
    print(f"splitVersion: {len(cases)} adversarial inputs", file=sys.stderr)
    for versions in src.by_ecosystem.values():
        cases.extend(rng.sample(versions, min(1000, len(versions))))
    for _ in range(2000):
        cases.add(mut.mutate(rng.choice(src.all_versions)))
    for _ in range(1000):
        cases.add(random_string(rng, 16))
    cases.fill_to(target, lambda: mut.mutate(rng.choice(src.all_versions), 5))
    return cases.values()


# --------------------------------------------------------------------------------------------
# Evaluation with Nix.
# --------------------------------------------------------------------------------------------

EXPRESSIONS = {
    "compare": "map (p: builtins.compareVersions (builtins.elemAt p 0) (builtins.elemAt p 1)) xs",
    "parse": "map (s: let d = builtins.parseDrvName s; in [ d.name d.version ]) xs",
    "split": "map builtins.splitVersion xs",
}


def nix_eval(nix: str, kind: str, inputs: list, batch: int) -> list:
    env = dict(os.environ)
    env.setdefault("NIX_REMOTE", "local")
    env.setdefault("NIX_CONFIG", "sandbox = false\nsubstituters =")
    results: list = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start : start + batch]
        with tempfile.TemporaryDirectory(prefix="declenv-conformance-") as tmp:
            (Path(tmp) / "in.json").write_text(
                json.dumps([list(x) if isinstance(x, tuple) else x for x in chunk], ensure_ascii=False),
                encoding="utf-8",
            )
            expr = f"let xs = builtins.fromJSON (builtins.readFile ./in.json); in {EXPRESSIONS[kind]}"
            proc = subprocess.run(
                [nix, "--eval", "--strict", "--json", "-E", expr],
                cwd=tmp,
                env=env,
                capture_output=True,
            )
        if proc.returncode != 0:
            sys.exit(f"nix-instantiate failed on the {kind} batch at {start}:\n{proc.stderr.decode(errors='replace')}")
        out = json.loads(proc.stdout.decode("utf-8"))
        if len(out) != len(chunk):
            sys.exit(f"nix returned {len(out)} results for {len(chunk)} {kind} inputs")
        results.extend(out)
        print(f"nix: {kind} {start + len(chunk)}/{len(inputs)}", file=sys.stderr)
    return results


def write_jsonl(path: Path, rows: Iterable[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
            handle.write("\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "versions")
    parser.add_argument("--nix-instantiate", default="nix-instantiate")
    parser.add_argument("--compare", type=int, default=110_000, help="number of compareVersions pairs")
    parser.add_argument("--names", type=int, default=32_000, help="number of parseDrvName inputs")
    parser.add_argument("--split", type=int, default=12_000, help="number of splitVersion inputs")
    parser.add_argument("--batch", type=int, default=60_000, help="inputs per nix-instantiate call")
    parser.add_argument("--no-apt-update", action="store_true", help="never run apt-get update")
    args = parser.parse_args()

    deb = load_debian(allow_update=not args.no_apt_update)
    pypi = load_tsv(PACKAGE_LISTS / "pypi.tsv")
    npm = load_tsv(PACKAGE_LISTS / "npm.tsv")
    src = Sources(deb, pypi, npm)

    # One generator per fixture, each seeded from the main seed, so changing one fixture's
    # count leaves the others unchanged.
    compare = gen_compare(src, random.Random(f"{args.seed}/compare"), args.compare)
    names = gen_names(src, random.Random(f"{args.seed}/names"), args.names)
    split = gen_split(src, random.Random(f"{args.seed}/split"), args.split)
    print(f"inputs: {len(compare)} pairs, {len(names)} names, {len(split)} versions", file=sys.stderr)

    compare_out = nix_eval(args.nix_instantiate, "compare", compare, args.batch)
    names_out = nix_eval(args.nix_instantiate, "parse", names, args.batch)
    split_out = nix_eval(args.nix_instantiate, "split", split, args.batch)

    write_jsonl(args.out / "compare.jsonl", ([a, b, r] for (a, b), r in zip(compare, compare_out)))
    write_jsonl(args.out / "parse_drv_name.jsonl", ([s, n, v] for s, (n, v) in zip(names, names_out)))
    write_jsonl(args.out / "split_version.jsonl", ([s, parts] for s, parts in zip(split, split_out)))


if __name__ == "__main__":
    main()
