#!/usr/bin/env python3
"""Generate package trees for the user-environment build benchmark.

Writes ``--count`` package trees (default 300) holding about ``--files``
regular files in all (default 33,000), laid out like Debian or Nix package
outputs: ``bin/``, ``lib/`` (shared objects with their version symlinks,
``pkgconfig/``, a private module directory), ``include/NAME/``,
``share/man/man{1,3,5}/``, ``share/doc/NAME/``, ``share/locale/LANG/
LC_MESSAGES/``, ``share/icons/hicolor/SIZE/apps/``, ``share/applications/``
and ``share/NAME/`` data.  Directories such as ``bin``, ``lib``,
``share/man/man1`` and ``share/locale/de/LC_MESSAGES`` occur in many packages,
so a builder has to merge them; every file name in a shared directory carries
its package's name, so no two packages collide.

Package names and versions are Debian's, taken from a list in the format of
``/work/.library/env/packages/installed-*.txt`` (``apt<TAB>NAME<TAB>VERSION``
lines).  Everything (which packages, how many files each, file sizes and
contents) follows from ``--seed`` and that list, so the same arguments give
byte-identical trees.

Outputs, in ``--out DIR``: one directory per package, named ``NAME-VERSION``,
``packages.txt`` (the directory names, one per line, in install order) and
``trees.json`` (counts and a digest of the whole set, to compare runs).

Python 3.9+, standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
from pathlib import Path

DEFAULT_LIST = Path("/work/.library/env/packages/installed-rust.txt")
LANGUAGES = (
    "ar bg ca cs da de el eo es et eu fi fr ga gl he hr hu id it ja ko lt nb nl "
    "pl pt pt_BR ro ru sk sl sr sv tr uk vi zh_CN zh_TW"
).split()
ICON_SIZES = ("16x16", "22x22", "24x24", "32x32", "48x48", "64x64", "128x128", "256x256", "scalable")
WORDS = (
    "the of and to in is for on with as by that this from at are be or an it "
    "file path store profile package build link directory version output user "
    "environment option value error return default system library function "
    "install remove update config data stream buffer index table query cache"
).split()
STORE_NAME = re.compile(r"[^A-Za-z0-9+._?=-]")


def read_packages(path: Path) -> list[tuple[str, str]]:
    """The (name, version) pairs of the list's apt lines, sorted and de-duplicated."""
    seen: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[0] == "apt":
            name, version = fields[1], fields[2]
            version = version.split(":", 1)[-1]
            seen.setdefault(name, version)
    return sorted(seen.items())


def dir_name(name: str, version: str) -> str:
    return STORE_NAME.sub("_", f"{name}-{version}")


def stem(name: str) -> str:
    """A file-name stem for the package (what its tools and libraries are called)."""
    base = name
    for prefix in ("lib",):
        if base.startswith(prefix) and len(base) > len(prefix) + 1:
            base = base[len(prefix):]
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", base)


class Writer:
    """Writes files with deterministic pseudo-text contents and keeps counts."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.files = 0
        self.symlinks = 0
        self.bytes = 0
        text = " ".join(rng.choice(WORDS) for _ in range(40_000))
        self.blob = (text + "\n").encode()

    def size(self, median: int, spread: float = 1.0, low: int = 24, high: int = 65_536) -> int:
        value = int(self.rng.lognormvariate(math.log(median), spread))
        return max(low, min(high, value))

    def file(self, path: Path, size: int, executable: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"# {path.name}\n".encode()
        start = self.rng.randrange(0, len(self.blob) - 1)
        body = bytearray(header)
        while len(body) < size:
            chunk = self.blob[start:start + size - len(body)]
            body += chunk
            start = 0
        path.write_bytes(bytes(body[:size]))
        os.chmod(path, 0o755 if executable else 0o644)
        self.files += 1
        self.bytes += size

    def symlink(self, target: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)
        self.symlinks += 1


def budgets(rng: random.Random, count: int, total: int) -> list[int]:
    """Files per package: a heavy-tailed spread (most packages small, a few large) adding up
    to exactly `total`, each at least 12."""
    weights = [rng.paretovariate(1.3) for _ in range(count)]
    minimum = 12
    spare = total - minimum * count
    if spare < 0:
        sys.exit(f"gen_env_trees.py: --files {total} is too few for {count} packages")
    scale = spare / sum(weights)
    shares = [minimum + int(weight * scale) for weight in weights]
    shares = [min(share, total // 8) for share in shares]
    index = 0
    while sum(shares) < total:
        shares[index % count] += 1
        index += 1
    return shares


def make_package(root: Path, name: str, budget: int, writer: Writer, rng: random.Random) -> None:
    """Lays out one package using exactly `budget` regular files."""
    s = stem(name)
    left = budget

    def take(wanted: int) -> int:
        nonlocal left
        granted = max(0, min(wanted, left))
        left -= granted
        return granted

    # Documentation every Debian package has.
    doc = root / "share" / "doc" / name
    writer.file(doc / "copyright", writer.size(1500, 0.6))
    writer.file(doc / "changelog.Debian.gz", writer.size(900, 0.8))
    take(2)

    is_library = name.startswith("lib") or rng.random() < 0.25
    tools = 0 if is_library and rng.random() < 0.6 else take(1 + int(rng.paretovariate(1.6)) % 12)
    for index in range(tools):
        tool = s if index == 0 else f"{s}-{rng.choice(WORDS)}{index}"
        writer.file(root / "bin" / tool, writer.size(9_000, 1.2, high=200_000) if rng.random() < 0.7
                    else writer.size(1_500), executable=True)
        if take(1):
            writer.file(root / "share" / "man" / "man1" / f"{tool}.1.gz", writer.size(1_800, 0.7))

    if is_library and take(1):
        major = rng.randrange(0, 8)
        real = f"lib{s}.so.{major}.{rng.randrange(0, 30)}.{rng.randrange(0, 10)}"
        writer.file(root / "lib" / real, writer.size(40_000, 1.0, high=500_000), executable=True)
        writer.symlink(real, root / "lib" / f"lib{s}.so.{major}")
        writer.symlink(f"lib{s}.so.{major}", root / "lib" / f"lib{s}.so")
        if take(1):
            writer.file(root / "lib" / "pkgconfig" / f"{s}.pc", writer.size(300, 0.3))
        headers = take(int(left * rng.uniform(0.1, 0.3)))
        for index in range(headers):
            subdirectory = rng.choice(WORDS[:4]) if index >= 8 else ""
            writer.file(root / "include" / s / subdirectory / f"{rng.choice(WORDS)}_{index}.h",
                        writer.size(2_500))
        pages = take(int(left * rng.uniform(0.05, 0.25)))
        for index in range(pages):
            writer.file(root / "share" / "man" / "man3" / f"{s}_{rng.choice(WORDS)}_{index}.3.gz",
                        writer.size(1_200, 0.6))

    if rng.random() < 0.12 and take(1):
        writer.file(root / "share" / "man" / "man5" / f"{s}.conf.5.gz", writer.size(2_000, 0.6))
        if take(1):
            writer.file(root / "etc" / s / f"{s}.conf", writer.size(800))

    if rng.random() < 0.3 and left > 4:
        languages = rng.sample(LANGUAGES, min(len(LANGUAGES), rng.randrange(4, len(LANGUAGES))))
        for language in languages[:take(len(languages) // (1 if left > 60 else 3))]:
            writer.file(root / "share" / "locale" / language / "LC_MESSAGES" / f"{s}.mo",
                        writer.size(12_000, 0.8))

    if tools and rng.random() < 0.15:
        sizes = rng.sample(ICON_SIZES, rng.randrange(2, len(ICON_SIZES)))
        for size in sizes[:take(len(sizes))]:
            suffix = "svg" if size == "scalable" else "png"
            writer.file(root / "share" / "icons" / "hicolor" / size / "apps" / f"{s}.{suffix}",
                        writer.size(3_000))
        if take(1):
            writer.file(root / "share" / "applications" / f"{s}.desktop", writer.size(400, 0.3))

    if rng.random() < 0.1 and take(1):
        writer.file(root / "share" / "bash-completion" / "completions" / s, writer.size(1_500))

    # The rest: private modules under lib/NAME, data under share/NAME, examples under doc, each
    # spread over a few subdirectories of the package's own.
    pool = [f"{word}{index}" for index, word in enumerate(rng.sample(WORDS, 6))]
    modules = take(int(left * rng.uniform(0.0, 0.4)))
    for index in range(modules):
        group = rng.choice(pool[:3]) if index >= 6 else ""
        writer.file(root / "lib" / s / group / f"{rng.choice(WORDS)}_{index}.so",
                    writer.size(6_000, 1.0, high=200_000), executable=True)
    examples = take(int(left * rng.uniform(0.0, 0.2)))
    for index in range(examples):
        writer.file(doc / "examples" / f"{rng.choice(WORDS)}_{index}.txt", writer.size(1_500))
    data = take(left)
    for index in range(data):
        levels = [pool[index % 3], pool[3 + index % 2]][:index % 3] if index >= 4 else []
        writer.file(root / "share" / s / Path(*levels) / f"{rng.choice(WORDS)}_{index}.dat",
                    writer.size(1_000, 1.3))
    assert left == 0, (name, left)


def tree_digest(out: Path, names: list[str]) -> str:
    """SHA-256 over every entry's path, kind, mode bit and contents, in sorted order."""
    digest = hashlib.sha256()
    for name in names:
        base = out / name
        for directory, subdirs, files in os.walk(base):
            subdirs.sort()
            for entry in sorted(files + [d for d in subdirs if os.path.islink(os.path.join(directory, d))]):
                path = Path(directory) / entry
                relative = path.relative_to(out).as_posix()
                if path.is_symlink():
                    digest.update(f"L {relative} {os.readlink(path)}\n".encode())
                else:
                    executable = os.stat(path).st_mode & 0o100
                    digest.update(f"F {relative} {executable} ".encode())
                    digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".bench/env/trees"))
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--files", type=int, default=33_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--packages", type=Path, default=DEFAULT_LIST,
                        help="apt<TAB>NAME<TAB>VERSION lines (default: %(default)s)")
    args = parser.parse_args()

    available = read_packages(args.packages)
    if len(available) < args.count:
        sys.exit(f"gen_env_trees.py: {args.packages} lists only {len(available)} apt packages")
    rng = random.Random(args.seed)
    chosen = sorted(rng.sample(available, args.count))
    shares = budgets(rng, args.count, args.files)
    writer = Writer(rng)

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    names = []
    for (name, version), budget in zip(chosen, shares):
        directory = dir_name(name, version)
        names.append(directory)
        make_package(args.out / directory, name, budget, writer, rng)

    (args.out / "packages.txt").write_text("".join(f"{name}\n" for name in names))
    directories = sum(len(subdirs) for name in names for _, subdirs, _ in os.walk(args.out / name))
    stats = {
        "seed": args.seed,
        "packages_list": str(args.packages),
        "packages_list_sha256": hashlib.sha256(args.packages.read_bytes()).hexdigest(),
        "packages": args.count,
        "files": writer.files,
        "symlinks": writer.symlinks,
        "directories": directories + len(names),
        "bytes": writer.bytes,
        "largest_package_files": max(shares),
        "smallest_package_files": min(shares),
        "digest": tree_digest(args.out, names),
    }
    (args.out / "trees.json").write_text(json.dumps(stats, indent=2) + "\n")
    json.dump(stats, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
