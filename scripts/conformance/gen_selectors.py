#!/usr/bin/env python3
"""Generate selector-matching fixtures from the real `nix-env -qa`.

Writes, under tests/fixtures/selectors/:

  catalog.nix    a catalog of plain attribute sets that nix-env treats as
                 derivations (nothing is ever built)
  catalog.json   `nix-env -f catalog.nix -qa --json --out-path --meta`
  results.jsonl  one line per nix-env run:
                 {"args": [...], "json": bool, "exit": N, "stdout": ..., "stderr": ...}

Names and versions come from Debian (`apt-cache dumpavail`), PyPI and npm
(the package lists under /work/.library/env/packages/), plus a fixed set of
adversarial names.  The sampling is deterministic for a given seed and the
same input lists.

Run as root with the real Nix 2.8 on PATH:

    python3 scripts/conformance/gen_selectors.py --seed 2808
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT_DIR_REL = Path("tests/fixtures/selectors")
PACKAGE_LISTS = Path("/work/.library/env/packages")

NIXBASE32 = "0123456789abcdfghijklmnpqrsvwxyz"
SYSTEM = "x86_64-linux"

# nix-env (get-drvs.cc) only descends into attributes whose names match this.
WALKED_ATTR = re.compile(r"[A-Za-z_][A-Za-z0-9_+-]*")
# What may appear unquoted as an attribute name in a .nix file.
BARE_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_'-]*")
NIX_KEYWORDS = {"if", "then", "else", "assert", "with", "let", "in", "rec", "inherit", "or"}
# Characters allowed in a store path name.
STORE_NAME_BAD = re.compile(r"[^A-Za-z0-9+\-._?=]")

N_DEBIAN = 1700
N_PYPI_RANKED = 700
N_PYPI_OTHER = 400
N_NPM_POPULAR = 450
N_NPM_OTHER = 250
N_DEBIAN_MULTI = 120
N_PYPI_MULTI = 40
N_NPM_MULTI = 20
N_DEBIAN_BARE = 60
DESC_MAX = 72

# Debian packages always taken when the apt lists have them.
DEBIAN_WANTED = [
    "hello", "zip", "unzip", "gzip", "bzip2", "xz-utils", "p7zip-full", "zstd",
    "libzip4", "gcc", "g++", "libstdc++6", "python3", "python3-pip", "python3-numpy",
    "libgtk-3-0", "libgtk2.0-0", "firefox-esr", "vim", "emacs", "git", "curl",
    "wget", "bash", "coreutils", "libc6", "libssl3", "nodejs", "npm", "zlib1g",
    "jq", "tmux", "ripgrep", "fd-find", "fzf", "libxml2", "libpng16-16", "sqlite3",
]
PYPI_WANTED = ["requests", "numpy", "zipp", "urllib3", "setuptools", "six", "pyyaml"]
NPM_WANTED = ["lodash", "react", "express", "typescript", "zip-stream", "chalk"]


# Hand-picked adversarial names: (attr, name, description).
ADVERSARIAL = [
    ("gtk+", "gtk+-2.0", "GTK 2"),
    ("gtk", "gtk-3.0", "GTK 3"),
    ("libc++", "libc++-1.0", "C++ standard library"),
    ("a_b", "a.b-1", "dot in the name"),
    ("axb", "axb-1", "matches a.b as a regex"),
    ("foo", "foo-1.0", "foo"),
    ("foo_2_0pre1", "foo-2.0pre1", "foo prerelease"),
    ("foo_2_0", "foo-2.0", "foo 2"),
    ("foo_0_1", "foo-0.1", "old foo"),
    ("bar", "bar-0.1", "bar"),
    ("bar_0_1_1", "bar-0.1.1", "bar point release"),
    ("baz", "baz", "no version"),
    ("ABC", "ABC-2", "upper case"),
    ("abc", "abc-1", "lower case"),
    ("Zed", "Zed-1", "capital Z sorts last case-insensitively"),
    ("_x", "_x-1", "leading underscore"),
    ("_1up", "1up-1", "leading digit"),
    ("foo_bar", "foo-_bar", "version starts with an underscore"),
    ("name_with_e", "name-with-é-1", "non-ASCII after a dash"),
    ("x", "x-1.0", "x"),
    ("y", "y-1.0", "y"),
    ("a", "dup", "duplicate name"),
    ("b", "dup", "duplicate name"),
    ("paren", "paren(-1.0", "open parenthesis"),
    ("parens", "paren()-1.0", "both parentheses"),
    ("brack", "brack[et-1.0", "open bracket"),
    ("brace", "brace{-1.0", "open brace"),
    ("pipe", "pi|pe-1.0", "pipe"),
    ("backslash", "back\\slash-1.0", "backslash"),
    ("star", "star*-1.0", "asterisk"),
    ("quest", "quest?-1.0", "question mark"),
    ("caret", "caret^-1.0", "caret"),
    ("dollar", "dollar$-1.0", "dollar"),
    ("dollarbrace", "dollar${x}-1.0", "dollar and braces"),
    ("quote", 'quo"te-1.0', "double quote"),
    ("cafe", "café-1.0", "non-ASCII in the name"),
    ("uber", "über-2.0", "non-ASCII first letter"),
    ("omega", "Ωmega-1", "Greek first letter"),
    ("e_acute", "é-1", "single non-ASCII letter"),
    ("zoe", "zoë-0.5", "non-ASCII inside"),
    ("naive", "naïve", "non-ASCII, no version"),
    ("Tie", "Tie-1.0", "case-insensitive tie"),
    ("tie", "tie-1.0", "case-insensitive tie"),
    ("TIE", "TIE-1.0", "case-insensitive tie"),
    ("aa", "aa-1", "two a"),
    ("aaa", "aaa-1", "three a"),
    ("foo-bar", "foo-bar-1.0", "dash then letter"),
    ("foo-bar-unversioned", "foo-bar", "dashes, no version"),
    ("foo_1_0_bar", "foo-1.0-bar", "version with a dash"),
    ("trailing", "trailing-", "trailing dash"),
    ("double", "double--1.0", "double dash"),
    ("lead", "-lead-1", "leading dash"),
    ("hello-unversioned", "hello", "same pname as a versioned package"),
    ("one_dot_zero", "1.0", "looks like a version"),
    ("space", "with space-1.0", "space in the name"),
    ("upper_version", "ver-1.0RC1", "letters in the version"),
    ("epoch", "epoch-1:2.3-4", "Debian epoch"),
    ("tilde", "tilde-1.0~rc1", "Debian tilde"),
    ("xz", "xz-5.4", "short name"),
    ("XZ", "XZ-5.4", "short name, upper case"),
]


@dataclass
class Pkg:
    path: tuple[str, ...]  # attribute path
    name: str
    description: str = ""


# ---------------------------------------------------------------- inputs


def clean_desc(s: str) -> str:
    s = "".join(ch for ch in s if ch.isprintable())
    s = s.strip()
    if len(s) > DESC_MAX:
        s = s[: DESC_MAX - 3].rstrip() + "..."
    return s


def read_debian(path: str | None) -> list[tuple[str, str, str]]:
    if path:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    else:
        text = subprocess.run(
            ["apt-cache", "dumpavail"], check=True, capture_output=True
        ).stdout.decode("utf-8", errors="replace")
    rows: dict[str, tuple[str, str, str]] = {}
    for stanza in text.split("\n\n"):
        name = version = desc = None
        for line in stanza.splitlines():
            if line.startswith("Package: "):
                name = line[9:].strip()
            elif line.startswith("Version: "):
                version = line[9:].strip()
            elif line.startswith("Description: ") and desc is None:
                desc = line[13:]
        if name and version:
            prev = rows.get(name)
            if prev is None or version > prev[1]:
                rows[name] = (name, version, clean_desc(desc or ""))
    if not rows:
        sys.exit("apt-cache dumpavail gave no packages: run `apt-get update` first")
    return sorted(rows.values())


def read_tsv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        lines = fh.read().split("\n")
    rows = []
    for line in lines[1:]:
        if not line:
            continue
        rows.append(line.split("\t"))
    return rows


def usable_version(v: str) -> bool:
    return bool(v) and not any(ch.isspace() for ch in v) and v.isascii()


def read_pypi() -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    ranked, other = [], []
    for row in read_tsv(PACKAGE_LISTS / "pypi.tsv"):
        if len(row) < 5:
            continue
        name, version, _month, rank, summary = row[:5]
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or not usable_version(version):
            continue
        item = (name, version, clean_desc(summary))
        if rank.strip():
            ranked.append((int(rank), item))
        else:
            other.append(item)
    ranked.sort()
    return [i for _, i in ranked], sorted(other)


def read_npm() -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    rows = []
    for row in read_tsv(PACKAGE_LISTS / "npm.tsv"):
        if len(row) < 4:
            continue
        name, version, downloads, summary = row[:4]
        if not re.fullmatch(r"(@[a-z0-9._-]+/)?[A-Za-z0-9._-]+", name) or not usable_version(version):
            continue
        try:
            d = int(downloads)
        except ValueError:
            d = 0
        rows.append((-d, name, version, clean_desc(summary)))
    rows.sort()
    popular = [(n, v, s) for _, n, v, s in rows[:20000]]
    other = sorted((n, v, s) for _, n, v, s in rows[20000:])
    return popular, other


# ---------------------------------------------------------------- catalog


def attr_for(name: str) -> str:
    a = re.sub(r"[^A-Za-z0-9_+-]", "_", name)
    if not re.match(r"[A-Za-z_]", a):
        a = "_" + a
    return a


class AttrSet:
    def __init__(self) -> None:
        self.pkgs: list[Pkg] = []
        self.used: set[str] = set()

    def add(self, prefix: tuple[str, ...], attr: str, name: str, desc: str, exact: bool = False) -> Pkg:
        if not exact:
            base, n = attr, 2
            while attr in self.used:
                attr = f"{base}_{n}"
                n += 1
        assert attr not in self.used, attr
        self.used.add(attr)
        p = Pkg(prefix + (attr,), name, desc)
        self.pkgs.append(p)
        return p


def build_catalog(seed: int, debian_file: str | None) -> tuple[dict[str, AttrSet], dict[str, object]]:
    rng = random.Random(seed)
    deb = read_debian(debian_file)
    pypi_ranked, pypi_other = read_pypi()
    npm_popular, npm_other = read_npm()
    input_sizes = {"debian": len(deb), "pypi": len(pypi_ranked) + len(pypi_other),
                   "npm": len(npm_popular) + len(npm_other)}

    top = AttrSet()
    py = AttrSet()
    node = AttrSet()
    nested = AttrSet()
    aliases = AttrSet()
    hidden = AttrSet()
    P_PY, P_NODE = ("python312Packages",), ("nodePackages",)

    for attr, name, desc in ADVERSARIAL:
        top.add((), attr, name, desc, exact=True)
    for i in range(1, 13):
        top.add((), f"same{i:02d}", "same-1.0", f"identical name {i}", exact=True)
    # Keep the hand-picked groups free of real packages with the same pname.
    reserved = ({pname(n) for _, n, _ in ADVERSARIAL} | {"same"}) - {"hello"}

    def free(name: str, version: str) -> bool:
        return (pname(name) not in reserved and pname(f"{name}-{version}") not in reserved
                and not name.startswith(("hidden", "nested")))

    deb = [r for r in deb if free(r[0], r[1])]
    npm_popular = [r for r in npm_popular if free(r[0], r[1])]
    npm_other = [r for r in npm_other if free(r[0], r[1])]

    # Debian
    deb_by_name = {r[0]: r for r in deb}
    chosen = [deb_by_name[n] for n in DEBIAN_WANTED if n in deb_by_name]
    rest = [r for r in deb if r[0] not in set(DEBIAN_WANTED)]
    picked = rng.sample(rest, N_DEBIAN)
    chosen += sorted(picked)
    chosen_names = {r[0] for r in chosen}
    debian_pkgs = [top.add((), attr_for(name), f"{name}-{version}", desc) for name, version, desc in chosen]
    for name, _v, desc in rng.sample(sorted(chosen), N_DEBIAN_MULTI):
        for _ in range(rng.choice([1, 1, 2])):
            other_version = rng.choice(deb)[1]
            top.add((), attr_for(name), f"{name}-{other_version}", desc)
    bare_pool = [r for r in deb if r[0] not in chosen_names]
    for name, _v, desc in sorted(rng.sample(bare_pool, N_DEBIAN_BARE)):
        top.add((), attr_for(name), name, desc)

    # PyPI
    by_name = {r[0]: r for r in pypi_ranked}
    py_rows = [by_name[n] for n in PYPI_WANTED if n in by_name]
    py_rows += sorted(rng.sample([r for r in pypi_ranked if r[0] not in PYPI_WANTED], N_PYPI_RANKED))
    py_rows += sorted(rng.sample(pypi_other, N_PYPI_OTHER))
    all_py_versions = [r[1] for r in py_rows]
    for name, version, desc in py_rows:
        py.add(P_PY, attr_for(name), f"python3.12-{name}-{version}", desc)
    for name, _v, desc in rng.sample(sorted(py_rows), N_PYPI_MULTI):
        py.add(P_PY, attr_for(name), f"python3.12-{name}-{rng.choice(all_py_versions)}", desc)

    # npm
    by_name = {r[0]: r for r in npm_popular}
    npm_rows = [by_name[n] for n in NPM_WANTED if n in by_name]
    npm_rows += sorted(rng.sample([r for r in npm_popular if r[0] not in NPM_WANTED], N_NPM_POPULAR))
    npm_rows += sorted(rng.sample(npm_other, N_NPM_OTHER))
    all_npm_versions = [r[1] for r in npm_rows]
    scoped_kept = 0
    for name, version, desc in npm_rows:
        if name.startswith("@") and scoped_kept < 2:
            # Quoted as-is: nix-env does not walk such attribute names.
            node.add(P_NODE, name, f"{name}-{version}", desc)
            scoped_kept += 1
        else:
            node.add(P_NODE, attr_for(name.lstrip("@")), f"{name}-{version}", desc)
    for name, _v, desc in rng.sample(sorted(npm_rows), N_NPM_MULTI):
        node.add(P_NODE, attr_for(name.lstrip("@")), f"{name}-{rng.choice(all_npm_versions)}", desc)

    # The same full names again under another attribute path.
    for p in rng.sample(debian_pkgs, 5):
        aliases.add(("aliases",), p.path[-1], p.name, p.description)

    # Walked only because recurseForDerivations is set at every level.
    inner = AttrSet()
    inner.add(("nested", "deeper"), "leaf", "nested-leaf-1.0", "three levels down")
    nested.add(("nested",), "mid", "nested-mid-1.0", "two levels down")

    # Not walked: attribute names outside nix-env's pattern, and a set
    # without recurseForDerivations.
    hidden_top = [
        ("1up", "hidden-digit-1", "attribute name starts with a digit"),
        ("hidden.dot", "hidden-dot-1", "dot in the attribute name"),
        ("hidden'", "hidden-quote-1", "apostrophe in the attribute name"),
    ]
    for attr, name, desc in hidden_top:
        top.add((), attr, name, desc, exact=True)
    hidden.add(("notRecursed",), "inside", "hidden-norecurse-1", "set without recurseForDerivations")

    sets = {"": top, "python312Packages": py, "nodePackages": node,
            "nested": nested, "nested.deeper": inner, "aliases": aliases,
            "notRecursed": hidden}
    return sets, input_sizes


def nix_str(s: str) -> str:
    s = (s.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
         .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{s}"'


def nix_attr(a: str) -> str:
    if BARE_IDENT.fullmatch(a) and a not in NIX_KEYWORDS:
        return a
    return nix_str(a)


def nixbase32(data: bytes) -> str:
    out = []
    n_chars = (len(data) * 8 - 1) // 5 + 1
    for n in range(n_chars - 1, -1, -1):
        b = n * 5
        i, j = b // 8, b % 8
        c = data[i] >> j
        if i + 1 < len(data):
            c |= data[i + 1] << (8 - j)
        out.append(NIXBASE32[c & 0x1F])
    return "".join(out)


def store_hash(kind: str, name: str) -> str:
    digest = hashlib.sha256(f"{kind}:{name}".encode()).digest()
    folded = bytearray(20)
    for i, byte in enumerate(digest):
        folded[i % 20] ^= byte
    return nixbase32(bytes(folded))


def store_name(name: str) -> str:
    s = STORE_NAME_BAD.sub("_", name)
    if s.startswith("."):
        s = "_" + s[1:]
    return s[:200]


def pkg_nix(p: Pkg, indent: str) -> str:
    sname = store_name(p.name)
    out_path = f"/nix/store/{store_hash('out', p.name)}-{sname}"
    drv_path = f"/nix/store/{store_hash('drv', p.name)}-{sname}.drv"
    meta = f"meta = {{ description = {nix_str(p.description)}; }};" if p.description else "meta = { };"
    return (
        f"{indent}{nix_attr(p.path[-1])} = let self = {{ type = \"derivation\"; "
        f"name = {nix_str(p.name)}; system = \"{SYSTEM}\"; "
        f"outPath = \"{out_path}\"; drvPath = \"{drv_path}\"; "
        f"outputName = \"out\"; outputs = [ \"out\" ]; out = self; {meta} }}; in self;\n"
    )


def render_catalog(sets: dict[str, AttrSet]) -> str:
    lines = ["# Generated by scripts/conformance/gen_selectors.py; do not edit.\n", "{\n"]
    for p in sets[""].pkgs:
        lines.append(pkg_nix(p, "  "))

    def block(attr: str, key: str, recurse: bool, extra: str = "") -> None:
        lines.append(f"  {attr} = {{\n")
        if recurse:
            lines.append("    recurseForDerivations = true;\n")
        for p in sets[key].pkgs:
            lines.append(pkg_nix(p, "    "))
        lines.append(extra)
        lines.append("  };\n")

    block("python312Packages", "python312Packages", True)
    block("nodePackages", "nodePackages", True)
    block("aliases", "aliases", True)
    deeper = ["    deeper = {\n", "      recurseForDerivations = true;\n"]
    deeper += [pkg_nix(p, "      ") for p in sets["nested.deeper"].pkgs]
    deeper.append("    };\n")
    block("nested", "nested", True, "".join(deeper))
    block("notRecursed", "notRecursed", False)
    lines.append("}\n")
    return "".join(lines)


# ---------------------------------------------------------------- selectors


def pname(name: str) -> str:
    """DrvName's split: the first '-' followed by a non-letter."""
    for i, ch in enumerate(name):
        if ch == "-" and i + 1 < len(name) and not (name[i + 1].isascii() and name[i + 1].isalpha()):
            return name[:i]
    return name


FIXED_SELECTORS = [
    # exact names
    "foo", "bar", "baz", "gtk", "gtk+", "gtk\\+", "libc++", "libc\\+\\+", "a.b", "a\\.b",
    "axb", "abc", "ABC", "Zed", "zed", "_x", "1up", "foo-_bar", "name-with", "name-with-é-1",
    "café", "caf.", "caf..", "über", "Ωmega", "é", "zoë", "naïve", "x", "y", "dup", "Tie",
    "tie", "TIE", "same", "hello", "xz", "XZ", "aa", "aaa", "foo-bar", "trailing-", "trailing",
    "double", "1.0", "with space", "ver", "epoch", "tilde", "nested-leaf", "nested-mid",
    "hidden-digit", "hidden-dot", "hidden-quote", "hidden-norecurse", "zip", "unzip", "git",
    "gcc", "g++", "g\\+\\+", "python3", "nodejs",
    "python3.12-requests", "python3.12-numpy", "lodash",
    # literal special characters
    "paren(", "paren\\(", "paren()", "paren\\(\\)", "brack[et", "brack\\[et", "brace{",
    "brace\\{", "pi|pe", "pi\\|pe", "back\\slash", "back\\\\slash", "star*", "star\\*",
    "quest?", "quest\\?", "caret^", "caret\\^", "dollar$", "dollar\\$", "dollar${x}",
    'quo"te',
    # names with versions
    "foo-1.0", "foo-1.00", "foo-1", "foo-2.0pre1", "foo-2.0", "foo-2", "foo-2.*", "foo-0.1",
    "foo-3.0", "foo-*", "foo-", "bar-0.1", "bar-0.1.1", "bar-0.1.*", "bar-0.01", "gtk+-2.0",
    "gtk-3.0", "gtk+-3.0", "gtk-2.0", "libc++-1.0", "ABC-2", "abc-2", "abc-1", "Zed-1",
    "x-1.0", "y-1.0", "x-1", "dup-", "same-1.0", "tie-1.0", "foo-bar-1.0", "foo-1.0-bar",
    "double--1.0", "double-1.0", "hello-2.10", "epoch-1:2.3-4", "epoch-2.3-4", "tilde-1.0~rc1",
    "tilde-1.0", "ver-1.0RC1", "ver-1.0rc1", "café-1.0", "é-1", "name-with-é-1",
    "python3.12-requests-0.0.0", "1.0-1.0",
    # star forms
    "*", "*-1.0", "*-1", "*-2.0", "*-0.1", "*-1.0.0", "*-", "*-*", "*-é-1", "*-_bar",
    "*foo", "foo*", "**", "*.*",
    # regexes
    ".*zip.*", "python3\\.12-.*", "python3.12-.*", "python3\\.12-(numpy|requests)",
    "python3\\.12-requests.*", "lib[a-c].*", "(foo|bar)", "fo+", "ba(r|z)", "[[:upper:]].*",
    "[[:lower:]]+", "[[:alpha:]]*", "[[:digit:]].*", "[[:alnum:]_]+", "[[:punct:]].*",
    "[[:space:]]", ".*[[:space:]].*", ".*[0-9]", "^foo", "foo$", "^foo$", "^(foo|bar)$",
    "a{2}.*", "a{2}", "a{2,}", "a{1,2}", "a{3}", "x{0}", ".*", ".+", ".?", ".", "..", "...",
    "[^a-z].*", "[A-Z].*", "[A-Z]+", ".*\\+.*", ".*[+].*", ".*\\+", ".*\\(.*", ".*[(].*",
    ".*\\[.*", ".*[[].*", ".*\\{.*", ".*\\|.*", ".*\\\\.*", ".*\\*.*", ".*\\?.*", ".*\\^.*",
    ".*\\$.*", "node.*", "@.*", ".*/.*", "\\.", "(a|b)*", "()", "(|foo)", "foo|", "|",
    "[]a]", "[a-]", "[[=a=]]", "[[.hyphen.]]", "a**", "(foo)+", "((foo))", "f(o)*",
    "[fb].*", "[fb]..", "[^[:alpha:]].*", ".*é.*", ".*[é].*", "caf[é]", "caf(é)", "[^ -~]+.*",
    ".*[^ -~].*", "lib.*-dev", "lib.*[0-9]", ".*-dev", ".*-doc", ".*-utils", "r.*s",
    "[[:alpha:]]", ".*-.*-.*-.*", "hidden.*", ".*-1", ".*-1.0", "fo+-1.0", "[fb]..-0.1",
    "(foo|bar)-0.1", "python3\\.12-requests-2.*", ".*-", "_.*", "[_].*", "\\_x",
    "}", "]", "a{,2}", ".*[[:digit:]]", "[0-9].*", "[[:digit:]]+.*", "[a-z]+", "[a-z-]+",
    "[-a-z]+", "(same|dup|tie|Tie|TIE)", "(same|dup|[Tt][Ii][Ee])-1.0",
    # case variants
    "FOO", "Foo", "BAR", "GTK", "Hello", "HELLO", "PYTHON3.12-.*", "Abc", "aBC", "zED",
    "ZED", "Dup", "CAFÉ", "Café",
    # prefixes that produce suggestions
    "fo", "ba", "pyth", "pytho", "python", "lib", "gt", "hel", "nod", "ze", "sam", "ti",
    "python3", "python3.12", "python3.12-", "python3.12-request", "python3.12-requestz",
    "hidden", "nested", "foo-ba", "lodas", "@", "",
    # invalid regexes
    "**", "(foo", "foo\\", "fo\\o", "[a", "x{2,1}", "a{1,", "[[:foo:]]", ")", "foo)", "(",
    "[", "\\", "{", "a{x}", "+", "?", "+foo", "?foo", "[z-a]", "[[:alpha:]", "\\w+", "\\d",
    "(a)\\1", "\\bfoo", "a{1}{2}", "[[.foo.]]", "[[=ab=]]",
]


def build_selectors(rng: random.Random, pkgs: list[Pkg]) -> list[str]:
    walked = [p for p in pkgs if p.path[0] != "notRecursed"
              and all(WALKED_ATTR.fullmatch(a) for a in p.path)]
    names = sorted({p.name for p in walked})
    pnames = sorted({pname(n) for n in names})
    plain = [n for n in pnames if n and n.isascii()]
    deb_like = [n for n in plain if not n.startswith(("python3.12-", "@"))]
    py_like = [n for n in plain if n.startswith("python3.12-")]
    sel: list[str] = list(FIXED_SELECTORS)

    sel += rng.sample(deb_like, 60)
    sel += rng.sample(py_like, 35)
    scoped = [n for n in names if n.startswith("@")]
    sel += rng.sample(scoped, min(5, len(scoped)))
    sel += [pname(n) for n in rng.sample(scoped, min(5, len(scoped)))]
    full = rng.sample([n for n in names if pname(n) != n], 45)
    sel += full
    for n in rng.sample(full, 15):
        sel.append(n + ".0")
    for n in rng.sample(full, 10):
        sel.append(pname(n) + "-" + rng.choice(full).split("-")[-1] + "9")
    sel += [n.upper() for n in rng.sample(deb_like, 12)]
    sel += [n[:1].upper() + n[1:] for n in rng.sample(deb_like, 8)]
    for n in rng.sample([n for n in deb_like if len(n) >= 5], 20):
        sel.append(n[: rng.randint(2, 4)])
    for n in rng.sample([n for n in deb_like if len(n) >= 4], 10):
        sel.append(n[:-1] + ("x" if n[-1] != "x" else "y"))
    for n in rng.sample(plain, 15):
        sel.append(re.sub(r"([.+*?^$()\[\]{}|\\])", r"\\\1", n) + ".*")
    for n in rng.sample(plain, 10):
        sel.append(".*" + n[len(n) // 2:])

    seen, out = set(), []
    for s in sel:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def build_multi(rng: random.Random, singles: list[str]) -> list[list[str]]:
    fixed = [
        ["foo", "bar"], ["bar", "foo"], ["foo", "foo-1.0"], ["foo-1.0", "foo"],
        ["foo-1.0", "foo-2.0"], ["fo", "foo"], ["foo", "fo"], ["foo", "(foo"],
        ["(foo", "fo"], ["*", "foo"], ["foo", "*"], ["*-1.0", "x"], ["dup", "dup"],
        ["Tie", "tie", "TIE"], ["TIE", "tie", "Tie"], ["gtk+", "gtk\\+"], ["same", "same-1.0"],
        ["(foo|bar)", "baz"], ["foo", "bar", "baz", "nomatch"], ["nomatch", "foo"],
        ["python3\\.12-requests.*", "lodash"], ["café", "é", "über"], ["a.b", "axb"],
        ["hidden.*", "foo"], ["foo-*", "foo"], ["x", "y", "x-1.0"], ["", "foo"],
        ["zip", ".*zip.*"], ["abc", "ABC"], ["foo", "foo"],
    ]
    ok = [s for s in singles if s]
    multi = [list(m) for m in fixed]
    while len(multi) < 55:
        k = rng.choice([2, 2, 3])
        multi.append(rng.sample(ok, k))
    return multi


JSON_SELECTORS = [
    "foo", "bar", "dup", "same", "tie", "Tie", "gtk.*", "gtk+", "libc\\+\\+", "name-with",
    "café", "é", "über", "Ωmega", "naïve", "baz", "trailing-", "double", "epoch", "tilde",
    "1.0", "nested-.*", "python3\\.12-requests.*", "python3\\.12-numpy", "lodash", "@.*",
    ".*\\$.*", ".*\\\\.*", "quo\"te", "hello", "xz", "fo", "(foo", "nomatch", "foo-1.0",
    "*-1.0", "(foo|bar)", "zip", "ABC", "abc", "_x", "1up", "x", "with space", "foo-_bar",
    "foo-bar", "ver", "hidden.*", "(same|dup|tie|Tie|TIE)", "same-1.0",
]


# ---------------------------------------------------------------- nix-env


def run_env(home: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "NIX_REMOTE": "local",
        "NIX_CONFIG": "sandbox = false\nsubstituters =",
        "LANG": "C.UTF-8",
    }
    return env


def nix_env(env: dict[str, str], catalog_rel: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["nix-env", "-f", catalog_rel, "-qa", *args],
        cwd=REPO, env=env, capture_output=True, stdin=subprocess.DEVNULL,
    )


def record(args: list[str], json_mode: bool, proc: subprocess.CompletedProcess) -> dict:
    return {
        "args": args,
        "json": json_mode,
        "exit": proc.returncode,
        "stdout": proc.stdout.decode("utf-8"),
        "stderr": proc.stderr.decode("utf-8"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=2808)
    ap.add_argument("--debian-file", help="read this `apt-cache dumpavail` output instead of running it")
    ap.add_argument("--jobs", type=int, default=2)
    opts = ap.parse_args()

    if shutil.which("nix-env") is None:
        sys.exit("nix-env not found on PATH")
    out_dir = REPO / OUT_DIR_REL
    out_dir.mkdir(parents=True, exist_ok=True)
    catalog_rel = str(OUT_DIR_REL / "catalog.nix")

    sets, input_sizes = build_catalog(opts.seed, opts.debian_file)
    (out_dir / "catalog.nix").write_text(render_catalog(sets), encoding="utf-8")
    all_pkgs = [p for s in sets.values() for p in s.pkgs]

    rng = random.Random(opts.seed + 1)
    singles = build_selectors(rng, all_pkgs)
    multi = build_multi(rng, singles)

    home = tempfile.mkdtemp(prefix="gen-selectors-home-")
    try:
        env = run_env(home)
        proc = nix_env(env, catalog_rel, ["--json", "--out-path", "--meta"])
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr.decode("utf-8", "replace"))
            sys.exit("nix-env failed on the catalog")
        (out_dir / "catalog.json").write_bytes(proc.stdout)
        walked = len(json.loads(proc.stdout))

        jobs: list[tuple[list[str], bool]] = [([s], False) for s in singles]
        jobs += [(m, False) for m in multi]
        jobs += [([s], True) for s in JSON_SELECTORS]

        def one(job: tuple[list[str], bool]) -> dict:
            args, json_mode = job
            flags = ["--json"] if json_mode else []
            return record(args, json_mode, nix_env(env, catalog_rel, flags + args))

        with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
            results = list(pool.map(one, jobs))
    finally:
        shutil.rmtree(home, ignore_errors=True)

    with (out_dir / "results.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
        for r in results:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")

    n_single = len(singles)
    n_multi = len(multi)
    n_json = len(JSON_SELECTORS)
    summary = {
        "seed": opts.seed,
        "input_lists": input_sizes,
        "catalog_entries": len(all_pkgs),
        "walked_by_nix_env": walked,
        "runs": len(results),
        "single_selector_runs": n_single,
        "multi_selector_runs": n_multi,
        "json_runs": n_json,
        "exit_0": sum(r["exit"] == 0 for r in results),
        "exit_nonzero": sum(r["exit"] != 0 for r in results),
        "bytes": {f: (out_dir / f).stat().st_size for f in ("catalog.nix", "catalog.json", "results.jsonl")},
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
