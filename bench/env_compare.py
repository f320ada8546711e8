#!/usr/bin/env python3
"""Compare two user environments built in different stores.

Usage: env_compare.py ENV_A ENV_B

Each environment is walked without following symlinks.  Every entry becomes
(relative path, kind, target), where a symlink's target has its store
directory and hash part dropped (``/x/nix/store/HASH-zlib-1.3/lib/libz.so``
becomes ``zlib-1.3/lib/libz.so``), so environments built from the same trees
in two stores compare equal.  ``manifest.nix`` is left out: it names each
store's own paths.  Prints the number of entries and exits 1 if they differ
(listing up to 20 differences).
"""

from __future__ import annotations

import os
import re
import sys

STORE_PATH = re.compile(r"^.*/[0-9a-df-np-sv-z]{32}-")


def entries(root: str) -> set[tuple[str, str, str]]:
    found = set()
    for directory, subdirs, files in os.walk(root):
        for name in subdirs + files:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            if relative == "manifest.nix":
                continue
            if os.path.islink(path):
                found.add((relative, "link", STORE_PATH.sub("", os.readlink(path), count=1)))
            elif os.path.isdir(path):
                found.add((relative, "dir", ""))
            else:
                found.add((relative, "file", ""))
    return found


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    left, right = (entries(os.path.realpath(path)) for path in sys.argv[1:])
    if left == right:
        links = sum(1 for entry in left if entry[1] == "link")
        print(f"{len(left)} entries ({links} symlinks, {len(left) - links} directories)")
        return 0
    for entry in sorted(left - right)[:10]:
        print(f"only in {sys.argv[1]}: {entry}", file=sys.stderr)
    for entry in sorted(right - left)[:10]:
        print(f"only in {sys.argv[2]}: {entry}", file=sys.stderr)
    print(f"environments differ: {len(left - right)} and {len(right - left)} entries of "
          f"{len(left)} and {len(right)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
