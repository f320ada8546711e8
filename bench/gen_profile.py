#!/usr/bin/env python3
"""Pick a profile of packages from a generated catalog, for the plan benchmark.

Reads ``CATALOG/catalog.json`` (the output of ``nix-env -qa --json --out-path
--meta`` over ``catalog.nix``, see ``bench/gen_catalog.py``) and draws
``--count`` distinct package names (default 300) with ``--seed`` (default 1),
``--constrained`` of them (default 30) with a version constraint.

A name is ``pname`` as ``nix-env`` parses it (``DrvName``), and it is a
candidate only if ``nix-env -i NAME`` picks one derivation without doubt:

* the name, read as the POSIX extended regular expression ``nix-env`` makes
  of a selector, matches no other name in the catalog (so it holds only
  letters, digits, ``_``, ``-`` and ``.``, and a ``.`` could stand for no
  other character);
* none of its derivations has a ``meta.priority``, and no two of them have
  versions that are equal in Nix's version ordering (``compareVersions``),
  so the newest version is unique.

Constrained packages are drawn from the candidates with two or more versions
of one package (attributes ``BASE`` and ``BASE_M_N``);
with V1 the newest and V2 the second newest, every odd one gets
``>=V2`` (resolving to V1) and every even one ``>=V2, <V1`` (resolving to V2).
``nix-env`` has no version ranges: its selector for those is the exact
``NAME-VERSION`` that the constraint resolves to; for the others it is the
name.

Outputs, in ``--out DIR``:

* ``profile.toml``        the declenv profile (``[sources.big]`` is the
                          catalog's absolute path, one ``[packages.NAME]``
                          table per package);
* ``nix-selectors.txt``   the ``nix-env -i`` arguments, one per line;
* ``expected.tsv``        name, constraint, selector, and the derivation
                          name, version and attribute path expected to be
                          installed, one line per package;
* ``profile.stats.json``  counts, the seed and the catalog's SHA-256.

Python 3.9+, standard library only.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import random
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NAME_OK = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
INT_MAX = 2**31 - 1
OLDER_SUFFIX = re.compile(r"_[0-9]+_[0-9]+$")


# --------------------------------------------------------------------------
# Nix's version ordering (libexpr/names.cc, Nix 2.8)


def _components(v: str) -> list[str]:
    out, i, n = [], 0, len(v)
    while True:
        while i < n and v[i] in ".-":
            i += 1
        if i == n:
            return out
        j = i
        if v[i].isdigit():
            while j < n and v[j].isdigit():
                j += 1
        else:
            while j < n and not v[j].isdigit() and v[j] not in ".-":
                j += 1
        out.append(v[i:j])
        i = j


def _as_int(c: str) -> int | None:
    # string2Int<int>: digits only, and it must fit in an int.
    if c.isdigit() and c.isascii() and int(c) <= INT_MAX:
        return int(c)
    return None


def _component_lt(c1: str, c2: str) -> bool:
    n1, n2 = _as_int(c1), _as_int(c2)
    if n1 is not None and n2 is not None:
        return n1 < n2
    if c1 == "" and n2 is not None:
        return True
    if c1 == "pre" and c2 != "pre":
        return True
    if c2 == "pre":
        return False
    if n2 is not None:
        return True
    if n1 is not None:
        return False
    return c1 < c2


def compare_versions(v1: str, v2: str) -> int:
    a, b = _components(v1), _components(v2)
    for i in range(max(len(a), len(b))):
        c1 = a[i] if i < len(a) else ""
        c2 = b[i] if i < len(b) else ""
        if _component_lt(c1, c2):
            return -1
        if _component_lt(c2, c1):
            return 1
    return 0


# --------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    d = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            d.update(chunk)
    return d.hexdigest()


def toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--catalog", type=Path, default=REPO_ROOT / ".bench" / "catalog",
                    help="catalog directory with catalog.json (default: .bench/catalog)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / ".bench" / "plan" / "profile",
                    help="output directory (default: .bench/plan/profile)")
    ap.add_argument("--count", type=int, default=300, help="packages (default 300)")
    ap.add_argument("--constrained", type=int, default=30,
                    help="of which with a version constraint (default 30)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = ap.parse_args()
    if not 0 <= args.constrained <= args.count:
        ap.error("--constrained must be between 0 and --count")

    catalog_json = (args.catalog / "catalog.json").resolve()
    with open(catalog_json, encoding="utf-8") as f:
        catalog = json.load(f)

    by_name: dict[str, list[tuple[str, dict]]] = {}
    for attr, drv in catalog.items():
        by_name.setdefault(drv["pname"], []).append((attr, drv))

    # Names that another name's regex could match: only a "." is special among
    # the characters allowed, and it stands for one character, so compare
    # names of the same length.
    by_length: dict[int, list[str]] = {}
    for name in by_name:
        by_length.setdefault(len(name), []).append(name)

    def unambiguous(name: str) -> bool:
        if not NAME_OK.match(name):
            return False
        if "." in name:
            rx = re.compile(re.escape(name).replace(r"\.", "."))
            if any(other != name and rx.fullmatch(other) for other in by_length[len(name)]):
                return False
        drvs = by_name[name]
        if any("priority" in d.get("meta", {}) for _, d in drvs):
            return False
        if any(d["system"] != drvs[0][1]["system"] for _, d in drvs):
            return False
        versions = [d["version"] for _, d in drvs]
        for i in range(len(versions)):
            for j in range(i + 1, len(versions)):
                if compare_versions(versions[i], versions[j]) == 0:
                    return False
        return True

    def one_package(name: str) -> bool:
        # The versions are one package's (attributes BASE and BASE_M_N, as
        # gen_catalog.py makes them), not distinct packages whose names
        # nix-env happens to cut alike (`libfoo-3-0`, `libfoo-3-dev`).
        attrs = [a for a, _ in by_name[name]]
        return len({OLDER_SUFFIX.sub("", a) for a in attrs}) == 1 and \
            sum(not OLDER_SUFFIX.search(a) for a in attrs) == 1

    rng = random.Random(args.seed)
    names = sorted(by_name)
    multi = [n for n in names
             if len(by_name[n]) >= 2 and one_package(n) and unambiguous(n)]
    if len(multi) < args.constrained:
        sys.exit(f"gen_profile: only {len(multi)} names with several versions")
    constrained = sorted(rng.sample(multi, args.constrained))
    # Draw the rest lazily: checking all 131,000 names takes a while.
    taken = set(constrained)
    plain: list[str] = []
    order = names[:]
    rng.shuffle(order)
    for name in order:
        if len(plain) == args.count - args.constrained:
            break
        if name not in taken and unambiguous(name):
            plain.append(name)
            taken.add(name)
    if len(plain) < args.count - args.constrained:
        sys.exit(f"gen_profile: only {len(taken)} candidate names in the catalog")

    def newest_first(name: str) -> list[tuple[str, dict]]:
        return sorted(by_name[name], reverse=True,
                      key=functools.cmp_to_key(lambda a, b: compare_versions(a[1]["version"],
                                                                             b[1]["version"])))

    rows = []  # (name, constraint, selector, drv name, version, attr)
    for i, name in enumerate(constrained):
        (a1, d1), (_, d2) = newest_first(name)[:2]
        v1, v2 = d1["version"], d2["version"]
        if i % 2 == 0:
            constraint, (attr, chosen) = f">={v2}", (a1, d1)
        else:
            constraint = f">={v2}, <{v1}"
            attr, chosen = next((a, d) for a, d in by_name[name] if d["version"] == v2)
        rows.append((name, constraint, f"{name}-{chosen['version']}", chosen["name"],
                     chosen["version"], attr))
    for name in plain:
        attr, chosen = newest_first(name)[0]
        rows.append((name, "", name, chosen["name"], chosen["version"], attr))
    rows.sort(key=lambda r: r[0])

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "profile.toml", "w", encoding="utf-8") as f:
        f.write(f"# bench/gen_profile.py --seed {args.seed} --count {args.count} "
                f"--constrained {args.constrained}\n")
        f.write("version = 1\n\n[sources.big]\n")
        f.write(f"catalog = {toml_str(str(catalog_json))}\n")
        for name, constraint, *_ in rows:
            f.write(f"\n[packages.{toml_str(name)}]\nname = {toml_str(name)}\n")
            if constraint:
                f.write(f"version = {toml_str(constraint)}\n")
    (out / "nix-selectors.txt").write_text("".join(r[2] + "\n" for r in rows), encoding="utf-8")
    with open(out / "expected.tsv", "w", encoding="utf-8") as f:
        f.write("name\tconstraint\tselector\tdrv_name\tversion\tattr\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    stats = {
        "seed": args.seed,
        "packages": len(rows),
        "constrained": len(constrained),
        "constrained_resolving_to_second_newest": len(constrained) // 2,
        "with_several_versions": sum(len(by_name[r[0]]) > 1 for r in rows),
        "python312Packages": sum(r[5].startswith("python312Packages.") for r in rows),
        "catalog_json": str(catalog_json),
        "catalog_json_sha256": sha256_file(catalog_json),
        "catalog_names": len(by_name),
        "candidates_with_several_versions": len(multi),
    }
    (out / "profile.stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(f"gen_profile: wrote {out}/profile.toml ({len(rows)} packages, "
          f"{len(constrained)} constrained)", file=sys.stderr)


if __name__ == "__main__":
    main()
