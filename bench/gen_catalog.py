#!/usr/bin/env python3
"""Build a nixpkgs-sized package catalog for the query benchmark.

The catalog is made from real package names, versions and descriptions:

* every binary package that Debian's apt knows about (``apt-cache dumpavail``),
  as top-level attributes;
* PyPI projects from ``pypi.tsv`` as ``python312Packages.NAME`` with derivation
  names ``python3.12-NAME-VERSION``, filling the catalog up to ``--size``.

A few packages get older versions as extra attributes (``NAME_1_2``) and a few
get a ``meta.priority``, as in nixpkgs.  The output is deterministic for a
given set of inputs; ``DIR/catalog.stats.json`` records their SHA-256 sums.

Outputs, in ``--out DIR``:

* ``catalog.nix``   an attribute set of real derivations;
* ``catalog.json``  ``nix-env -f catalog.nix -qa --json --out-path --meta``
                    (skipped with ``--no-json``);
* ``catalog.stats.json`` counts, sizes, timings and peak memory;
* ``debian-dumpavail.txt`` the apt data that was used (feed it back with
  ``--debian-dump`` to rebuild the same catalog on another day).

Python 3.11+, standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SIZE = 136_000
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGES_DIR = Path("/work/.library/env/packages")
SYSTEM = "x86_64-linux"
PYTHON_SET = "python312Packages"
PYTHON_PREFIX = "python3.12-"
NODE_SET = "nodePackages"
NODE_PREFIX = "node-"

# Share of the catalog taken by system (Debian) packages at most; at the
# default size this admits every Debian package.
SYSTEM_SHARE = 0.5
# One package in MULTI_VERSION_EVERY gets one to three older versions.
MULTI_VERSION_EVERY = 40
# PRIORITY_PERCENT of all derivations get a meta.priority.
PRIORITY_PERCENT = 3
PRIORITIES = (-10, 4, 6, 10, 10, 10, 15)

MAX_STORE_NAME = 211
STORE_NAME_BAD = re.compile(r"[^A-Za-z0-9+\-._?=]")
ATTR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_'-]*$")
ATTR_BAD = re.compile(r"[^A-Za-z0-9_'-]")
NIX_KEYWORDS = frozenset(
    "if then else assert with let in rec inherit or true false null".split()
)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
LEADING_NUMS = re.compile(r"^(\d+)(?:\.(\d+))?")


def h(*parts: str) -> int:
    """Stable hash (Python's own hash() is salted per process)."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def sha256_file(path: Path) -> str:
    d = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            d.update(chunk)
    return d.hexdigest()


# --------------------------------------------------------------------------
# Inputs


@dataclass
class Source:
    name: str  # package name as its ecosystem spells it
    version: str
    description: str
    homepage: str = ""


def parse_dumpavail(text: str) -> list[Source]:
    out: dict[str, Source] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.split("\n"):
            if not line or line[0] in " \t":
                continue  # continuation lines (long descriptions, tags)
            key, sep, value = line.partition(":")
            if sep and key not in fields:
                fields[key] = value.strip()
        name = fields.get("Package")
        version = fields.get("Version")
        if not name or not version:
            continue
        # dumpavail lists one version per package; keep the first if not.
        out.setdefault(
            name,
            Source(name, version, fields.get("Description", ""), fields.get("Homepage", "")),
        )
    return sorted(out.values(), key=lambda s: s.name)


def apt_dumpavail(allow_update: bool) -> str:
    if not shutil.which("apt-cache"):
        return ""

    def dump() -> str:
        r = subprocess.run(
            ["apt-cache", "dumpavail"], capture_output=True, check=False
        )
        return r.stdout.decode("utf-8", "replace") if r.returncode == 0 else ""

    text = dump()
    if text.count("\nPackage: ") < 1000 and allow_update and os.geteuid() == 0:
        print("gen_catalog: apt lists look empty, running apt-get update once", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        text = dump()
    return text


def read_installed_apt(packages_dir: Path) -> list[Source]:
    seen: dict[str, Source] = {}
    for path in sorted(packages_dir.glob("installed-*.txt")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[0] == "apt" and parts[1] and parts[2]:
                seen.setdefault(parts[1], Source(parts[1], parts[2], ""))
    return sorted(seen.values(), key=lambda s: s.name)


def read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        header = f.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in f]
    return header, rows


def read_pypi(path: Path) -> list[tuple[tuple, Source]]:
    """PyPI projects with a sort key: most downloaded first, then the rest
    (with a summary first, most recently released first, stable hash)."""
    header, rows = read_tsv(path)
    col = {name: i for i, name in enumerate(header)}
    i_name, i_ver, i_month = col["name"], col["version"], col["month"]
    i_rank, i_sum = col["rank_among_15000_most_downloaded"], col["summary"]
    out = []
    for r in rows:
        if len(r) <= max(col.values()):
            continue
        name, version = r[i_name], r[i_ver]
        if not name or not version:
            continue
        rank = int(r[i_rank]) if r[i_rank].isdigit() else math.inf
        summary = r[i_sum]
        month = r[i_month]
        # "2026-10" sorts newest first through the negated integer.
        month_key = -int(month.replace("-", "")) if re.fullmatch(r"\d{4}-\d{2}", month) else 0
        key = (rank, 0 if summary else 1, month_key, h("pypi", name))
        out.append((key, Source(name, version, summary)))
    out.sort(key=lambda t: t[0])
    return out


def read_npm(path: Path) -> list[Source]:
    header, rows = read_tsv(path)
    col = {name: i for i, name in enumerate(header)}
    i_name, i_ver = col["name"], col["version"]
    i_dl, i_sum = col["downloads_a_month"], col["summary"]
    items = []
    for r in rows:
        if len(r) <= max(col.values()) or not r[i_name] or not r[i_ver]:
            continue
        dl = int(r[i_dl]) if r[i_dl].isdigit() else 0
        items.append((-dl, r[i_name], Source(r[i_name], r[i_ver], r[i_sum])))
    items.sort(key=lambda t: (t[0], t[1]))
    return [s for _, _, s in items]


# --------------------------------------------------------------------------
# Names


def store_safe(s: str) -> str:
    return STORE_NAME_BAD.sub("_", s)


def debian_version(v: str) -> str:
    v = re.sub(r"^\d+:", "", v)  # drop the epoch
    return store_safe(v.replace("~", "-"))


def pypi_version(v: str) -> str:
    v = re.sub(r"^\d+!", "", v)  # drop the epoch
    return store_safe(v.replace(",", "."))


def pypi_pname(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def npm_pname(name: str) -> str:
    return name.replace("@", "_at_").replace("/", "_slash_")


def attr_name(raw: str) -> str:
    a = ATTR_BAD.sub("_", raw)
    if not a or not re.match(r"[A-Za-z_]", a[0]):
        a = "_" + a
    assert ATTR_RE.match(a), a
    return a


def nix_str(s: str) -> str:
    s = CONTROL.sub(" ", s)
    s = (
        s.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("$", "\\$")
        .replace("\n", "\\n")
        .replace("\t", "\\t")
    )
    return f'"{s}"'


def nix_attr(a: str) -> str:
    return f'"{a}"' if a in NIX_KEYWORDS else a


# --------------------------------------------------------------------------
# Catalog model


@dataclass
class Drv:
    attr: str
    name: str
    description: str
    homepage: str = ""
    priority: int | None = None


@dataclass
class AttrSet:
    drvs: list[Drv] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)
    packages: int = 0  # distinct packages; drvs also holds their older versions

    def claim(self, wanted: str) -> str:
        a, n = wanted, 2
        while a in self.taken or a in NIX_KEYWORDS or a == "recurseForDerivations":
            a, n = f"{wanted}_{n}", n + 1
        self.taken.add(a)
        return a


def older_versions(ecosystem: str, name: str, version: str) -> list[tuple[str, str]]:
    """Up to three plausible older versions as (attr suffix, version)."""
    if h(ecosystem, "multi", name) % MULTI_VERSION_EVERY:
        return []
    m = LEADING_NUMS.match(version)
    if not m:
        return []
    major = int(m.group(1))
    minor = int(m.group(2) or 0)
    if major > 10_000:  # date-like versions (20240101) make odd attributes
        return []
    seed = h(ecosystem, "versions", name)
    candidates = []
    if minor > 0:
        candidates.append((major, minor - 1, seed % 10))
    if minor > 1:
        candidates.append((major, minor // 2, (seed >> 8) % 10))
    if major > 0:
        candidates.append((major - 1, (seed >> 16) % 12, (seed >> 24) % 10))
    out, seen = [], set()
    for ma, mi, pa in candidates[: 1 + seed % 3]:
        if (ma, mi) in seen:
            continue
        seen.add((ma, mi))
        v = f"{ma}.{mi}.{pa}"
        if ecosystem == "debian":
            v += "-1"
        out.append((f"{ma}_{mi}", v))
    return out


def priority_for(name: str) -> int | None:
    x = h("priority", name)
    if x % 100 >= PRIORITY_PERCENT:
        return None
    return PRIORITIES[(x >> 16) % len(PRIORITIES)]


def entries_for(ecosystem: str, src: Source) -> list[tuple[str, str, str]]:
    """(wanted attr, derivation name, homepage) for a package and its extra
    versions; empty if the package cannot be a store path name."""
    if ecosystem == "debian":
        pname, version = src.name, debian_version(src.version)
        prefix, homepage = "", src.homepage
    elif ecosystem == "pypi":
        pname, version = pypi_pname(src.name), pypi_version(src.version)
        prefix, homepage = PYTHON_PREFIX, f"https://pypi.org/project/{pypi_pname(src.name)}/"
    else:
        pname, version = npm_pname(src.name), store_safe(src.version)
        prefix, homepage = NODE_PREFIX, f"https://www.npmjs.com/package/{src.name}"
    if not version or not pname:
        return []
    base = attr_name(pname)
    out = [(base, f"{prefix}{store_safe(pname)}-{version}", homepage)]
    for suffix, v in older_versions(ecosystem, src.name, version):
        out.append((f"{base}_{suffix}", f"{prefix}{store_safe(pname)}-{v}", homepage))
    if any(len(n) > MAX_STORE_NAME or n.startswith(".") for _, n, _ in out):
        return []
    return out


def add(aset: AttrSet, src: Source, entries) -> int:
    for wanted, name, homepage in entries:
        aset.drvs.append(
            Drv(aset.claim(wanted), name, src.description, homepage, priority_for(name))
        )
    aset.packages += 1
    return len(entries)


def fill(aset: AttrSet, ecosystem: str, sources, budget: int) -> int:
    """Add packages in the given order until `budget` derivations are in."""
    used = 0
    for src in sources:
        if used >= budget:
            break
        entries = entries_for(ecosystem, src)
        if not entries:
            continue
        entries = entries[: budget - used]
        used += add(aset, src, entries)
    return used


# --------------------------------------------------------------------------
# Output


def write_nix(path: Path, top: AttrSet, nested: dict[str, AttrSet], argv: list[str]) -> None:
    def drv_line(d: Drv, indent: str) -> str:
        meta = []
        if d.description:
            meta.append(f"description = {nix_str(d.description)};")
        if d.homepage:
            meta.append(f"homepage = {nix_str(d.homepage)};")
        if d.priority is not None:
            meta.append(f"priority = {d.priority};")
        meta_s = "{ " + " ".join(meta) + " }" if meta else "{ }"
        return f"{indent}{nix_attr(d.attr)} = mk {nix_str(d.name)} {meta_s};\n"

    tmp = path.with_suffix(".nix.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"# bench/gen_catalog.py {' '.join(argv)}\n")
        f.write("let\n")
        f.write("  mk = name: meta:\n")
        f.write("    derivation {\n")
        f.write("      inherit name;\n")
        f.write(f'      system = "{SYSTEM}";\n')
        f.write('      builder = "/bin/sh";\n')
        f.write('      args = [ "-c" "echo > $out" ];\n')
        f.write("    } // { inherit meta; };\n")
        f.write("in\n{\n")
        for d in sorted(top.drvs, key=lambda d: d.attr):
            f.write(drv_line(d, "  "))
        for set_name in sorted(nested):
            f.write(f"\n  {set_name} = {{\n    recurseForDerivations = true;\n")
            for d in sorted(nested[set_name].drvs, key=lambda d: d.attr):
                f.write(drv_line(d, "    "))
            f.write("  };\n")
        f.write("}\n")
    tmp.replace(path)


def nix_env_json(nix_env: str, catalog_nix: Path, out_json: Path) -> dict:
    """Run the real nix-env over the catalog; returns timing and peak RSS."""
    home = tempfile.mkdtemp(prefix="declenv-bench-home-")
    env = dict(os.environ)
    env.update(
        NIX_REMOTE="local",
        NIX_CONFIG="sandbox = false\nsubstituters =",
        HOME=home,
    )
    cmd = [nix_env, "-f", str(catalog_nix), "-qa", "--json", "--out-path", "--meta"]
    tmp = out_json.with_suffix(".json.tmp")
    print(f"gen_catalog: running {' '.join(cmd)} (this takes a while)", file=sys.stderr)
    # GNU time measures nix-env alone; a child forked from this (large)
    # Python process would report this process's memory as its own peak.
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    fd, time_out = tempfile.mkstemp(prefix="declenv-bench-time-")
    os.close(fd)
    try:
        with open(tmp, "wb") as out:
            wrapped = [gnu_time, "-f", "%e %U %S %M", "-o", time_out, *cmd] if gnu_time else cmd
            t0 = time.monotonic()
            proc = subprocess.run(wrapped, stdout=out, env=env, check=False)
            wall = time.monotonic() - t0
        user = sys_t = peak = None
        if gnu_time:
            fields = Path(time_out).read_text().split("\n")[-2].split()
            wall, user, sys_t, peak = float(fields[0]), float(fields[1]), float(fields[2]), int(fields[3])
    finally:
        shutil.rmtree(home, ignore_errors=True)
        os.unlink(time_out)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        sys.exit(f"gen_catalog: nix-env failed with exit code {proc.returncode}")
    tmp.replace(out_json)
    version = subprocess.run([nix_env, "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "command": " ".join(cmd),
        "nix_version": version,
        "wall_seconds": round(wall, 2),
        "user_seconds": user,
        "system_seconds": sys_t,
        "peak_rss_kib": peak,  # GNU time's %M, in KiB; None without /usr/bin/time
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE,
                    help=f"number of derivations (default {DEFAULT_SIZE})")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / ".bench" / "catalog",
                    help="output directory (default: .bench/catalog in the repository)")
    ap.add_argument("--packages-dir", type=Path, default=DEFAULT_PACKAGES_DIR,
                    help="folder with pypi.tsv, npm.tsv and installed-*.txt")
    ap.add_argument("--debian-dump", type=Path,
                    help="saved `apt-cache dumpavail` output to use instead of apt")
    ap.add_argument("--no-apt-update", action="store_true",
                    help="never run `apt-get update`, even if apt's lists are empty")
    ap.add_argument("--no-json", action="store_true",
                    help="write catalog.nix only; do not run nix-env")
    ap.add_argument("--nix-env", default="nix-env", help="nix-env to run (default: from PATH)")
    args = ap.parse_args()
    if args.size < 10:
        ap.error("--size must be at least 10")

    t_start = time.monotonic()
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs: dict[str, str] = {}

    # System packages: Debian, or the fallback.
    if args.debian_dump:
        dump = args.debian_dump.read_text(encoding="utf-8", errors="replace")
    else:
        dump = apt_dumpavail(not args.no_apt_update)
    system = parse_dumpavail(dump) if dump else []
    fallback = len(system) < 1000
    if not fallback:
        dump_path = out_dir / "debian-dumpavail.txt"
        if args.debian_dump is None or args.debian_dump.resolve() != dump_path.resolve():
            dump_path.write_text(dump, encoding="utf-8")
        inputs["debian-dumpavail.txt"] = sha256_file(dump_path)
    else:
        print("gen_catalog: no apt data; using installed-*.txt and npm.tsv instead",
              file=sys.stderr)
        system = read_installed_apt(args.packages_dir)
        for p in sorted(args.packages_dir.glob("installed-*.txt")):
            inputs[p.name] = sha256_file(p)

    pypi_path = args.packages_dir / "pypi.tsv"
    inputs["pypi.tsv"] = sha256_file(pypi_path)
    pypi = [s for _, s in read_pypi(pypi_path)]

    top = AttrSet()
    nested: dict[str, AttrSet] = {PYTHON_SET: AttrSet()}
    system_budget = min(args.size, math.ceil(args.size * SYSTEM_SHARE))
    # When the system packages do not all fit, take a stable-hash sample.
    order = sorted(system, key=lambda s: h("debian", s.name))
    n_debian = fill(top, "debian", order, system_budget)
    n_npm = 0
    if fallback and n_debian < system_budget:
        npm_path = args.packages_dir / "npm.tsv"
        inputs["npm.tsv"] = sha256_file(npm_path)
        nested[NODE_SET] = AttrSet()
        n_npm = fill(nested[NODE_SET], "npm", read_npm(npm_path), system_budget - n_debian)
    n_pypi = fill(nested[PYTHON_SET], "pypi", pypi, args.size - n_debian - n_npm)
    total = n_debian + n_npm + n_pypi
    if total < args.size:
        print(f"gen_catalog: only {total} packages available (asked for {args.size})",
              file=sys.stderr)

    catalog_nix = out_dir / "catalog.nix"
    argv = ["--size", str(args.size)]
    write_nix(catalog_nix, top, nested, argv)
    gen_seconds = time.monotonic() - t_start

    all_drvs = top.drvs + [d for s in nested.values() for d in s.drvs]
    packages = top.packages + sum(s.packages for s in nested.values())
    stats = {
        "size_requested": args.size,
        "derivations": total,
        "top_level_derivations": len(top.drvs),
        "sets": {k: len(v.drvs) for k, v in nested.items()},
        "from_debian": n_debian,
        "from_npm": n_npm,
        "from_pypi": n_pypi,
        "debian_packages_available": len(system),
        "packages": packages,
        "extra_version_attrs": len(all_drvs) - packages,
        "with_priority": sum(d.priority is not None for d in all_drvs),
        "with_description": sum(bool(d.description) for d in all_drvs),
        "fallback_sources": fallback,
        "inputs_sha256": inputs,
        "catalog_nix_bytes": catalog_nix.stat().st_size,
        "catalog_nix_sha256": sha256_file(catalog_nix),
        "generation_seconds": round(gen_seconds, 2),
    }
    print(f"gen_catalog: wrote {catalog_nix} ({total} derivations, "
          f"{stats['catalog_nix_bytes']} bytes) in {gen_seconds:.1f} s", file=sys.stderr)

    if not args.no_json:
        catalog_json = out_dir / "catalog.json"
        run = nix_env_json(args.nix_env, catalog_nix, catalog_json)
        with open(catalog_json, encoding="utf-8") as f:
            entries = len(json.load(f))
        stats["nix_env_json"] = run | {"entries": entries}
        stats["catalog_json_bytes"] = catalog_json.stat().st_size
        stats["catalog_json_sha256"] = sha256_file(catalog_json)
        print(f"gen_catalog: wrote {catalog_json} ({entries} entries, "
              f"{stats['catalog_json_bytes']} bytes); nix-env took {run['wall_seconds']} s, "
              f"peak RSS {run['peak_rss_kib']} KiB", file=sys.stderr)
        if entries != total:
            print(f"gen_catalog: warning: nix-env listed {entries} entries, "
                  f"catalog.nix has {total}", file=sys.stderr)

    (out_dir / "catalog.stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    json.dump(stats, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
