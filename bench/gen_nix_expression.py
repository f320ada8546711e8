#!/usr/bin/env python3
"""Write a Nix expression directory of N derivations, and a declenv spec that
selects some of them by attribute, for bench/nix_source.sh.

Names and versions are real: every apt package of the machine images listed in
``/work/.library/env/packages/installed-*.txt`` (Debian bookworm, about a
thousand), then PyPI projects from ``pypi.tsv`` (the most downloaded first,
then others with a summary, picked by a stable hash) as ``python3-NAME``,
descriptions from the PyPI summaries.  Without those lists the names are
synthetic (``pkg-NNNNN``).  The same naming rules as bench/gen_catalog.py apply
(epochs dropped, characters a store path name cannot hold replaced); attribute
names match ``^[A-Za-z_][A-Za-z0-9_-]*$``, are unique and are no Nix keyword,
so they need no quoting, neither in the expression nor after ``-A``.

Outputs, in ``--out DIR``:

* ``pkgs/default.nix``  ``{ config ? { }, overlays ? [ ] }: { ATTR = mk NAME DESC; ... }``
  where ``mk`` is ``derivation { name; system = builtins.currentSystem;
  builder = "/bin/sh"; args = [ "-c" "echo" ]; } // { meta.description; }``;
* ``dotfiles/profile.toml``  ``backend = "nix"``, source ``pkgs`` = ``../pkgs``,
  and ``--packages`` packages, each ``[packages."ATTR"] attr = "ATTR"``;
* ``selected.tsv``  the selected attributes and derivation names (attr, name);
* ``expression.json``  counts, sizes and SHA-256 sums.

Deterministic for given inputs and ``--seed``.  Python 3.9+, standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import random
import re
import sys
from pathlib import Path

PACKAGES_DIR = Path("/work/.library/env/packages")
STORE_NAME_BAD = re.compile(r"[^A-Za-z0-9+\-._?=]")
ATTR_BAD = re.compile(r"[^A-Za-z0-9_-]")
ATTR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
NIX_KEYWORDS = frozenset("if then else assert with let in rec inherit or true false null".split())
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def stable_hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "big")


def store_safe(s: str) -> str:
    return STORE_NAME_BAD.sub("_", s)


def nix_str(s: str) -> str:
    s = CONTROL.sub(" ", s).strip()
    s = s.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{s}"'


def apt_packages(directory: Path):
    """(name, version, description) of every apt package in installed-*.txt."""
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("installed-*.txt")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[0] == "apt" and parts[1] and parts[2]:
                seen.setdefault(parts[1].split(":")[0], parts[2])  # libfoo:amd64
    for name in sorted(seen):
        version = store_safe(re.sub(r"^\d+:", "", seen[name]).replace("~", "-"))
        yield name, name, version, f"{name} {seen[name]} (Debian bookworm)"


def pypi_projects(path: Path, want: int):
    """(attr base, name, version, summary): ranked projects by rank, then up to
    `want` others with a summary, by a stable hash."""
    ranked, others = [], []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        col = {c: i for i, c in enumerate(f.readline().rstrip("\n").split("\t"))}
        i_name, i_ver = col["name"], col["version"]
        i_rank, i_sum = col["rank_among_15000_most_downloaded"], col["summary"]
        width = max(col.values())

        def rows():
            for line in f:
                r = line.rstrip("\n").split("\t")
                if len(r) > width and r[i_name] and r[i_ver]:
                    yield r

        for r in rows():
            if r[i_rank].isdigit():
                ranked.append((int(r[i_rank]), r))
            elif r[i_sum].strip():
                others.append((stable_hash("pypi", r[i_name]), r))
                if len(others) > 4 * want + 1000:
                    others = heapq.nsmallest(want, others, key=lambda t: t[0])
    ranked.sort(key=lambda t: t[0])
    others = heapq.nsmallest(want, others, key=lambda t: t[0])
    for _, r in ranked + others:
        pname = re.sub(r"[-_.]+", "-", r[i_name]).lower()
        version = store_safe(re.sub(r"^\d+!", "", r[i_ver]).replace(",", "."))
        summary = r[i_sum].strip() or f"The {r[i_name]} Python package"
        yield f"python3-{pname}", f"python3-{pname}", version, summary


def synthetic(start: int):
    i = start
    while True:
        yield f"pkg-{i:05d}", f"pkg-{i:05d}", f"1.{i % 7}.{i % 13}", f"Synthetic package {i}"
        i += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--count", type=int, default=20000, help="derivations (default 20000)")
    ap.add_argument("--packages", type=int, default=300, help="selected in the spec (300)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--packages-dir", type=Path, default=PACKAGES_DIR)
    args = ap.parse_args()
    if not 0 < args.packages <= args.count:
        sys.exit("gen_nix_expression: need 0 < --packages <= --count")

    sources = []
    origin = {"debian": 0, "pypi": 0, "synthetic": 0}
    if (args.packages_dir / "pypi.tsv").is_file() or any(args.packages_dir.glob("installed-*.txt")):
        sources.append(("debian", apt_packages(args.packages_dir)))
        if (args.packages_dir / "pypi.tsv").is_file():
            sources.append(("pypi", pypi_projects(args.packages_dir / "pypi.tsv", args.count)))
    sources.append(("synthetic", synthetic(1)))

    taken: set[str] = set()
    drvs: list[tuple[str, str, str]] = []  # attr, derivation name, description
    for kind, rows in sources:
        for base, name, version, description in rows:
            if len(drvs) >= args.count:
                break
            attr = ATTR_BAD.sub("_", base)
            if not ATTR_RE.match(attr):
                attr = "_" + attr
            wanted, n = attr, 2
            while attr in taken or attr in NIX_KEYWORDS:
                attr, n = f"{wanted}_{n}", n + 1
            taken.add(attr)
            drvs.append((attr, store_safe(f"{name}-{version}")[:200], description))
            origin[kind] += 1
    drvs.sort()

    pkgs = args.out / "pkgs"
    pkgs.mkdir(parents=True, exist_ok=True)
    expression = pkgs / "default.nix"
    tmp = expression.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"# bench/gen_nix_expression.py --count {args.count} --seed {args.seed}\n")
        f.write("{ config ? { }, overlays ? [ ] }:\nlet\n")
        f.write("  mk = name: description:\n")
        f.write("    derivation {\n")
        f.write("      inherit name;\n")
        f.write("      system = builtins.currentSystem;\n")
        f.write('      builder = "/bin/sh";\n')
        f.write('      args = [ "-c" "echo" ];\n')
        f.write("    } // { meta = { inherit description; }; };\n")
        f.write("in\n{\n")
        for attr, name, description in drvs:
            f.write(f"  {attr} = mk {nix_str(name)} {nix_str(description)};\n")
        f.write("}\n")
    tmp.replace(expression)

    selected = sorted(random.Random(args.seed).sample(drvs, args.packages))
    dotfiles = args.out / "dotfiles"
    dotfiles.mkdir(parents=True, exist_ok=True)
    spec = dotfiles / "profile.toml"
    with open(spec, "w", encoding="utf-8") as f:
        f.write(f"# bench/gen_nix_expression.py: {args.packages} of {args.count}, seed {args.seed}\n")
        f.write('version = 1\nbackend = "nix"\n\n[sources.pkgs]\nnix = "../pkgs"\n')
        for attr, _, _ in selected:
            f.write(f'\n[packages."{attr}"]\nattr = "{attr}"\n')
    with open(args.out / "selected.tsv", "w", encoding="utf-8") as f:
        f.write("attr\tname\n")
        for attr, name, _ in selected:
            f.write(f"{attr}\t{name}\n")
    stats = {
        "count": len(drvs),
        "packages": args.packages,
        "seed": args.seed,
        "from": origin,
        "default.nix bytes": expression.stat().st_size,
        "default.nix sha256": hashlib.sha256(expression.read_bytes()).hexdigest(),
        "profile.toml sha256": hashlib.sha256(spec.read_bytes()).hexdigest(),
    }
    (args.out / "expression.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(json.dumps(stats), file=sys.stderr)


if __name__ == "__main__":
    main()
