#!/usr/bin/env python3
"""Generate the sharing fixtures (export/import, binary caches, queries) by asking the real Nix.

Writes, under tests/fixtures/sharing/ (README.md there describes every file):

    closure.export    `nix-store --export $(nix-store -qR TOP)`
    subset.export     `nix-store --export TOP D` (two paths, not their closure)
    paths.json        for every path of the closure, in `nix-store -qR` order: what
                      `nix-store -q --hash`, `--size`, `--references` and `--deriver` print
                      in a store that imported closure.export
    queries.json      `nix-store -q` (`--requisites`, `--references`, `--referrers`,
                      `--referrers-closure`) for each path and one pair, in that store
    cache/            `nix copy --to 'file://…/cache?compression=none' TOP` from that store

The closure is built in a Nix chroot store (`--store local?root=…`) whose store directory is
/tmp/declenv-sharing/nix/store (NIX_STORE_DIR), so the paths are what a declenv root at
/tmp/declenv-sharing would hold:

    hello-src   `builtins.path` of a small tree (an executable, a symlink, a subdirectory)
    leaf        `builtins.toFile`, no references
    mid         `builtins.toFile` referring to leaf and hello-src
    d-1.0       a derivation output (a directory) referring to itself, leaf and hello-src
    top         a derivation output (a file) referring to d-1.0 and mid

Run as root from the repository root, with Nix 2.8 on PATH and no daemon:

    python3 scripts/conformance/gen_sharing.py

Nix runs with only NIX_REMOTE=local, NIX_STORE_DIR, an empty NIX_CONF_DIR, a temporary HOME,
LANG=C.UTF-8, PATH and NIX_CONFIG (no substituters, `experimental-features = nix-command`,
`build-users-group =`, and `sandbox-paths = /bin /lib /lib64 /usr`: a chroot store builds in
a sandbox, where the builders need `/bin/sh` and its libraries). The script deletes and
recreates /tmp/declenv-sharing-gen (the Nix roots); nothing is ever written to
/tmp/declenv-sharing itself. Two runs gave byte-identical files (registration times are not
recorded).

Python 3.11, standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "tests" / "fixtures" / "sharing"
STORE_DIR = "/tmp/declenv-sharing/nix/store"
WORK = Path("/tmp/declenv-sharing-gen")

EXPRESSION = r"""
let
  src = builtins.path { path = ./src; name = "hello-src"; };
  leaf = builtins.toFile "leaf" "a leaf\n";
  mid = builtins.toFile "mid" "mid uses ${leaf} and ${src}\n";
  d = derivation {
    name = "d-1.0";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ''
      /bin/mkdir -p $out/bin
      echo "self $out" > $out/self
      echo "uses ${leaf}" > $out/uses
      /bin/ln -s ${src} $out/src
      printf '#!/bin/sh\necho d\n' > $out/bin/d
      /bin/chmod +x $out/bin/d
    '' ];
  };
  top = derivation {
    name = "top";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo ${d} ${mid} > $out" ];
  };
in { inherit top d; }
"""


def environment(home: Path, conf: Path) -> dict[str, str]:
    return {
        "NIX_REMOTE": "local",
        "NIX_STORE_DIR": STORE_DIR,
        "NIX_CONF_DIR": str(conf),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PATH": os.environ["PATH"],
        "NIX_CONFIG": "\n".join(
            [
                "sandbox = false",
                "substituters =",
                "experimental-features = nix-command",
                "build-users-group =",
                "sandbox-paths = /bin /lib /lib64 /usr",
            ]
        ),
    }


def run(env: dict[str, str], *arguments: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(
        arguments, env=env, input=stdin, capture_output=True, check=False
    )
    if result.returncode != 0:
        sys.exit(
            f"{' '.join(arguments)} failed ({result.returncode}):\n"
            + result.stderr.decode(errors="replace")
        )
    return result.stdout


def lines(output: bytes) -> list[str]:
    return [line for line in output.decode().splitlines() if line]


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    home = Path(tempfile.mkdtemp(dir=WORK, prefix="home-"))
    conf = Path(tempfile.mkdtemp(dir=WORK, prefix="conf-"))
    env = environment(home, conf)
    build_store = f"local?root={WORK / 'build'}"
    fresh_store = f"local?root={WORK / 'fresh'}"

    source = WORK / "expr"
    (source / "src" / "share").mkdir(parents=True)
    (source / "src" / "hello").write_text("#!/bin/sh\necho hello\n")
    (source / "src" / "hello").chmod(0o755)
    (source / "src" / "share" / "greeting").write_text("hello, world\n")
    (source / "src" / "link").symlink_to("share/greeting")
    (source / "default.nix").write_text(EXPRESSION)

    built = lines(
        run(env, "nix-build", "--store", build_store, "--no-out-link", str(source), "-A", "top", "-A", "d")
    )
    top, d = built
    closure = lines(run(env, "nix-store", "--store", build_store, "-qR", top))

    if OUTPUT.exists():
        shutil.rmtree(OUTPUT / "cache", ignore_errors=True)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    export = run(env, "nix-store", "--store", build_store, "--export", *closure)
    (OUTPUT / "closure.export").write_bytes(export)
    subset = run(env, "nix-store", "--store", build_store, "--export", top, d)
    (OUTPUT / "subset.export").write_bytes(subset)

    imported = lines(run(env, "nix-store", "--store", fresh_store, "--import", stdin=export))
    assert sorted(imported) == sorted(closure), (imported, closure)

    def query(*arguments: str) -> list[str]:
        return lines(run(env, "nix-store", "--store", fresh_store, "-q", *arguments))

    paths = []
    for path in query("--requisites", top):
        deriver = query("--deriver", path)[0]
        paths.append(
            {
                "path": path,
                "nar_hash": query("--hash", path)[0],
                "nar_size": int(query("--size", path)[0]),
                "references": query("--references", path),
                "deriver": None if deriver == "unknown-deriver" else deriver,
            }
        )
    (OUTPUT / "paths.json").write_text(
        json.dumps({"store_dir": STORE_DIR, "top": top, "paths": paths}, indent=2) + "\n"
    )

    queries = []
    subjects = [[entry["path"]] for entry in paths] + [[d, closure[0]]]
    for kind in ["requisites", "references", "referrers", "referrers-closure"]:
        for subject in subjects:
            queries.append(
                {"query": kind, "paths": subject, "result": query(f"--{kind}", *subject)}
            )
    (OUTPUT / "queries.json").write_text(json.dumps(queries, indent=2) + "\n")

    run(
        env,
        "nix",
        "copy",
        "--store",
        fresh_store,
        "--to",
        f"file://{OUTPUT / 'cache'}?compression=none",
        top,
    )
    for empty in ["log", "realisations"]:
        directory = OUTPUT / "cache" / empty
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
    print(json.dumps({"top": top, "paths": len(paths), "queries": len(queries)}))


if __name__ == "__main__":
    main()
