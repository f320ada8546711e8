#!/usr/bin/env python3
"""Generate the store conformance fixtures by asking the real Nix.

Writes, under tests/fixtures/store/:

    trees.jsonl       one file tree a line, with the store path, NAR hash and NAR size
                      that `nix-store --add` gives it in the store directory
                      /tmp/declenv-conformance/nix/store (and the NAR itself, from
                      `nix-store --dump`, when it is at most 2048 bytes)
    names.jsonl       store path names, and whether `nix-store --print-fixed-path`
                      accepts them (with the path it prints) or the error it gives
    store_dirs.jsonl  `--print-fixed-path` for one hash under differently spelled
                      NIX_STORE_DIR values

Trees are described, not committed as files, so that names Git handles badly
(newlines, bytes that are not UTF-8) are no problem. A tree is a node:

    {"type": "regular", "mode": 420, "contents": BYTES}
    {"type": "symlink", "target": BYTES}
    {"type": "directory", "mode": 493, "entries": [[BYTES, node], ...]}

where BYTES is a JSON string when the bytes are UTF-8, {"hex": "..."} when they
are not, and for contents also {"generated": {"length": N, "seed": S}}: N bytes
from a 64-bit LCG (state = state * 6364136223846793005 + 1442695040888963407
mod 2^64, starting from S; each byte is the top 8 bits of the new state). Modes
are applied after a directory's entries are created, so read-only directories
work.

The hand-written cases never change; the random ones are fixed by --seed.
Two runs with the same seed give byte-identical files.

Run as root from the repository root, with Nix 2.8 on PATH and no daemon:

    python3 scripts/conformance/gen_store.py

Every Nix command runs with only NIX_REMOTE=local,
NIX_CONFIG=$'sandbox = false\\nsubstituters =', NIX_STORE_DIR, NIX_STATE_DIR,
NIX_LOG_DIR, NIX_CONF_DIR (an empty directory), HOME (a temporary directory),
LANG=C.UTF-8 and PATH. The script deletes and recreates
/tmp/declenv-conformance and /tmp/declenv-conformance-dirs; it never points
Nix at a store directory outside them.

Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "tests" / "fixtures" / "store"
BASE = Path("/tmp/declenv-conformance")
STORE_DIR = BASE / "nix" / "store"
DIRS_BASE = Path("/tmp/declenv-conformance-dirs")
DEFAULT_SEED = 2808
RANDOM_TREES = 24
MAX_NAR_HEX = 2048
# A NAR hash (of the directory in the unit tests) used for names and store directories.
FIXED_HASH = "0z4nsjlwv4dyh4mgd281vxcgyjxw9r39yvyv3yjj5rvs8zhwa4z6"

# --------------------------------------------------------------------------------------------
# Tree descriptions.
# --------------------------------------------------------------------------------------------


def encode_bytes(data: bytes):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": data.hex()}


def decode_bytes(value) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if "hex" in value:
        return bytes.fromhex(value["hex"])
    generated = value["generated"]
    return generated_bytes(generated["length"], generated["seed"])


def generated_bytes(length: int, seed: int) -> bytes:
    state = seed % 2**64
    out = bytearray()
    for _ in range(length):
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        out.append(state >> 56)
    return bytes(out)


def regular(contents, mode=0o644):
    if isinstance(contents, bytes):
        contents = encode_bytes(contents)
    return {"type": "regular", "mode": mode, "contents": contents}


def executable(contents, mode=0o755):
    return regular(contents, mode)


def symlink(target: bytes | str):
    if isinstance(target, str):
        target = target.encode()
    return {"type": "symlink", "target": encode_bytes(target)}


def directory(entries, mode=0o755):
    return {
        "type": "directory",
        "mode": mode,
        "entries": [[encode_bytes(name if isinstance(name, bytes) else name.encode()), node]
                    for name, node in entries],
    }


def generated(length: int, seed: int):
    return {"generated": {"length": length, "seed": seed}}


def build(path: bytes, node) -> None:
    kind = node["type"]
    if kind == "regular":
        with open(path, "xb") as handle:
            handle.write(decode_bytes(node["contents"]))
        os.chmod(path, node["mode"])
    elif kind == "symlink":
        os.symlink(decode_bytes(node["target"]), path)
    elif kind == "directory":
        os.mkdir(path)
        for name, child in node["entries"]:
            build(os.path.join(path, decode_bytes(name)), child)
        os.chmod(path, node["mode"])
    else:
        raise ValueError(kind)


def make_writable(path: Path) -> None:
    if not path.exists() and not path.is_symlink():
        return
    for root, dirs, _files in os.walk(path):
        os.chmod(root, 0o755)
        for name in dirs:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                os.chmod(full, 0o755)


def remove(path: Path) -> None:
    if path.exists() or path.is_symlink():
        make_writable(path)
        shutil.rmtree(path)


# --------------------------------------------------------------------------------------------
# The corpus.
# --------------------------------------------------------------------------------------------

ODD_NAMES = [
    b"with space", b"new\nline", b"tab\there", b"back\\slash", b"quote\"s", b"'single'",
    b"*", b"?", b"[abc]", b"{a,b}", b"$HOME", b"-rf", b"--", b".hidden", b"...", b"a.",
    b"\xc3\xa9t\xc3\xa9", b"\xf0\x9f\xa6\x80", b"\xff\xfe", b"latin1-\xe9", b"\x01control",
    b"UPPER", b"lower", b"_under", b"~tilde", b"#hash", b"%percent", b"=", b"+plus", b"0",
]


def hand_written():
    """(id, store name, tree) for every case chosen on purpose."""
    cases = []

    def add(case_id, name, tree):
        cases.append((case_id, name, tree))

    add("single-file", "hello.txt", regular("hello\n"))
    add("single-empty-file", "empty", regular(b""))
    add("single-executable", "tool", executable("#!/bin/sh\necho hi\n"))
    add("single-read-only-executable", "ro-tool", executable("#!/bin/sh\n", 0o500))
    add("single-group-executable-only", "group-x", regular("g\n", 0o654))
    add("single-setuid", "setuid", executable("suid\n", 0o4755))
    add("single-relative-symlink", "link", symlink("target/elsewhere"))
    add("single-dangling-absolute-symlink", "abs-link", symlink("/nonexistent/path"))
    add("single-symlink-non-utf8", "bytes-link", symlink(b"caf\xe9"))
    add("empty-directory", "empty-dir", directory([]))
    add("directory-one-empty-file", "one-empty", directory([("e", regular(b""))]))
    add("mixed", "mixed-1.0", directory([
        ("a", regular("hello\n")),
        ("abs", symlink("/nonexistent")),
        ("e", regular(b"")),
        ("empty", directory([])),
        ("l", symlink("a")),
        ("sub", directory([("deeper", directory([("f", regular("deep\n"))]))])),
        ("x", executable("#!/bin/sh\n")),
    ]))
    nested = regular("bottom\n")
    for level in range(8):
        nested = directory([(f"level{level}", nested)])
    add("nested-eight", "nested", nested)
    deep = directory([])
    # Deeper trees exceed the nesting limit of the JSON reader on the Rust side.
    for _ in range(30):
        deep = directory([("d", deep)])
    add("nested-sixty-empty", "deep", deep)
    add("empty-directories", "empties", directory([
        (name, directory([])) for name in ["a", "b", "c"]
    ] + [("d", directory([("e", directory([]))]))]))
    add("byte-order", "byte-order", directory([
        (name, regular(name)) for name in
        [b"B", b"a", b"_", b"Z", b"-", b"0", b"~", b"\xc3\xa9", b"\xff", b"\x80", b"A", b"b", b"aa", b"a-", b"a."]
    ]))
    add("odd-names", "odd-names", directory([(name, regular(name + b"\n")) for name in ODD_NAMES]))
    add("odd-directory-names", "odd-dirs", directory([
        (name, directory([(b"inside", regular(name))])) for name in ODD_NAMES[:10]
    ]))
    add("long-name", "long-entry", directory([(b"n" * 255, regular("long\n"))]))
    add("padding-lengths", "padding", directory([
        (f"len{length:02}", regular(b"x" * length)) for length in range(0, 18)
    ]))
    add("name-padding-lengths", "name-padding", directory([
        (b"n" * length, regular(b"")) for length in range(1, 18)
    ]))
    add("target-padding-lengths", "target-padding", directory([
        (f"t{length:02}", symlink(b"t" * length)) for length in range(1, 18)
    ]))
    add("binary-contents", "binary", directory([
        ("small", regular({"hex": bytes(range(256)).hex()})),
        ("generated", regular(generated(70_001, 7))),
        ("large", regular(generated(1_048_583, 42))),
    ]))
    add("symlink-kinds", "links", directory([
        ("dot", symlink(".")),
        ("dotdot", symlink("..")),
        ("root", symlink("/")),
        ("self", symlink("self")),
        ("loop-a", symlink("loop-b")),
        ("loop-b", symlink("loop-a")),
        ("long", symlink(b"x/" * 500 + b"end")),
        ("spaces", symlink("a target with spaces")),
        ("to-dir", symlink("dir")),
        ("dir", directory([("f", regular("f"))])),
        ("escape", symlink("../../../../etc/passwd")),
    ]))
    add("modes", "modes", directory([
        ("plain", regular("p", 0o644)),
        ("private", regular("p", 0o600)),
        ("read-only", regular("r", 0o444)),
        ("user-x", regular("u", 0o744)),
        ("group-x", regular("g", 0o654)),
        ("other-x", regular("o", 0o645)),
        ("setgid", regular("s", 0o2755)),
        ("sticky-dir", directory([("f", regular("f"))], 0o1755)),
        ("read-only-dir", directory([("f", regular("f"))], 0o555)),
        ("private-dir", directory([("f", regular("f"))], 0o700)),
    ]))
    add("read-only-root", "ro-root", directory([("f", regular("f\n"))], 0o555))
    add("many-entries", "many", directory([
        (f"file-{index:04}", regular(f"{index}\n")) for index in range(300)
    ]))
    add("store-path-looking-contents", "refs", directory([
        ("ref", regular("/nix/store/bjgn9g9kjn5hwvawjyr1hznvf7yas3fm-d/bin/x\n")),
        ("link", symlink("/tmp/declenv-conformance/nix/store/bjgn9g9kjn5hwvawjyr1hznvf7yas3fm-d")),
    ]))
    add("nar-tokens-as-names", "tokens", directory([
        (name, regular(name)) for name in ["(", ")", "entry", "node", "type", "contents", "executable", "nix-archive-1"]
    ]))
    # Store names at the edges of Nix's rules.
    for index, name in enumerate(["a" * 211, "x?=+_.-", "-lead", "1.0", "UPPER-lower", "a=b", "?", "+"]):
        add(f"store-name-{index}", name, regular(f"{name}\n"))
    return cases


NAME_POOL = [b"a", b"b", b"bin", b"lib", b"share", b"README", b"x.y", b"file-1", b"Z", b"_", b"-x"] + ODD_NAMES


def random_node(rng: random.Random, depth: int):
    roll = rng.random()
    if depth > 0 and roll < 0.35:
        count = rng.randint(0, 6)
        names = rng.sample(NAME_POOL, count)
        mode = rng.choice([0o755, 0o755, 0o700, 0o555])
        return directory([(name, random_node(rng, depth - 1)) for name in names], mode)
    if roll < 0.8:
        kind = rng.random()
        if kind < 0.3:
            contents = generated(rng.choice([0, 1, 7, 8, 9, 63, 64, 65, 4096, 10_000]), rng.randrange(2**32))
        elif kind < 0.6:
            contents = "".join(rng.choice("abc\n é") for _ in range(rng.randint(0, 40)))
        else:
            contents = {"hex": bytes(rng.randrange(256) for _ in range(rng.randint(0, 24))).hex()}
        mode = rng.choice([0o644, 0o755, 0o600, 0o700, 0o444, 0o555, 0o654])
        return regular(contents, mode)
    target = rng.choice([b"a", b"../b", b"/abs/olute", b"dir/", b"\xff", b"with space", b"x" * rng.randint(1, 30)])
    return symlink(target)


def random_trees(seed: int):
    rng = random.Random(seed)
    cases = []
    for index in range(RANDOM_TREES):
        name = f"random-{index:02}"
        tree = random_node(rng, 4) if index % 4 else directory(
            [(n, random_node(rng, 3)) for n in rng.sample(NAME_POOL, rng.randint(1, 8))])
        cases.append((f"random-{seed}-{index:02}", name, tree))
    return cases


def validation_names():
    names = ["", ".", "..", ".a", "..a", "a.", "a..b", "-", "--", "-lead", "-1.0", "a" * 211, "a" * 212,
             "hello-2.12.1", "x?=+_.-", "é", "a b", "a/b", "a\nb", "ʼ", "\u00a0"]
    for code in range(0x20, 0x7F):
        names.append(chr(code))
        names.append(f"a{chr(code)}b")
    names.append("\t")
    seen = set()
    unique = []
    for name in names:
        if name not in seen:
            seen.add(name)
            unique.append(name)
    return unique


def store_dir_spellings():
    base = str(DIRS_BASE)
    return [
        f"{base}/a",
        f"{base}/a/",
        f"{base}//a",
        f"{base}/./a",
        f"{base}/b/../a",
        f"{base}/with space/store",
        f"{base}/é/store",
        f"{base}/nix/store",
        f"{base}/x/y/z/../../..",
        f"{base}/deep/{'d/' * 20}store",
    ]


# --------------------------------------------------------------------------------------------
# Running Nix.
# --------------------------------------------------------------------------------------------


def nix_env(store_dir: str, state: Path, home: Path, conf: Path) -> dict[str, str]:
    return {
        "NIX_REMOTE": "local",
        "NIX_CONFIG": "sandbox = false\nsubstituters =",
        "NIX_STORE_DIR": store_dir,
        "NIX_STATE_DIR": str(state / "var" / "nix"),
        "NIX_LOG_DIR": str(state / "var" / "log" / "nix"),
        "NIX_CONF_DIR": str(conf),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }


def run(args, env, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, **kwargs)


def check(result: subprocess.CompletedProcess, what: str) -> bytes:
    if result.returncode != 0:
        sys.exit(f"{what} failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    return result.stdout


def nix_version() -> str:
    return check(run(["nix-store", "--version"], {"PATH": os.environ.get("PATH", "")}), "nix-store --version").decode().strip()


def add_trees(cases, scratch: Path, env) -> list[dict]:
    paths = []
    for case_id, name, tree in cases:
        holder = scratch / case_id
        holder.mkdir()
        path = holder / name
        build(os.fsencode(path), tree)
        paths.append(str(path))
    added = check(run(["nix-store", "--add", *paths], env), "nix-store --add").decode().splitlines()
    hashes = check(run(["nix-store", "--query", "--hash", *added], env), "nix-store -q --hash").decode().splitlines()
    sizes = check(run(["nix-store", "--query", "--size", *added], env), "nix-store -q --size").decode().splitlines()
    references = check(run(["nix-store", "--query", "--references", *added], env), "nix-store -q --references").decode()
    if references.strip():
        sys.exit(f"nix-store --add recorded references: {references}")
    if not (len(added) == len(hashes) == len(sizes) == len(cases)):
        sys.exit("nix-store printed a different number of lines than paths given")
    records = []
    for (case_id, name, tree), store_path, nar_hash, size in zip(cases, added, hashes, sizes):
        record = {
            "id": case_id,
            "name": name,
            "store_path": store_path,
            "nar_hash": nar_hash,
            "nar_size": int(size),
        }
        if int(size) <= MAX_NAR_HEX:
            dumped = check(run(["nix-store", "--dump", store_path], env), "nix-store --dump")
            record["nar_hex"] = dumped.hex()
        record["tree"] = tree
        records.append(record)
    return records


def check_names(names, env, scratch: Path) -> list[dict]:
    """Nix's verdict on each name. `nix-store` reads an argument starting with `-` as a flag
    even after `--`, so those names are checked by adding a small file of that name instead
    (its NAR hash is recorded with the result)."""
    records = []
    for name in names:
        nar_hash = FIXED_HASH
        if name.startswith("-"):
            holder = scratch / f"name-{len(records)}"
            holder.mkdir()
            (holder / name).write_bytes(b"x\n")
            result = run(["nix-store", "--add", f"./{name}"], env, cwd=holder)
            hashed = run(["nix-hash", "--type", "sha256", "--base32", f"./{name}"], env, cwd=holder)
            nar_hash = check(hashed, "nix-hash").decode().strip()
        else:
            result = run(["nix-store", "--print-fixed-path", "--recursive", "sha256", FIXED_HASH, name], env)
        record = {"name": name, "nar_hash": nar_hash, "accepted": result.returncode == 0}
        if result.returncode == 0:
            record["store_path"] = result.stdout.decode().strip()
        else:
            record["error"] = result.stderr.decode(errors="replace").strip()
        records.append(record)
    return records


def check_store_dirs(spellings, state: Path, home: Path, conf: Path) -> list[dict]:
    records = []
    for spelling in spellings:
        env = nix_env(spelling, state, home, conf)
        result = run(["nix-store", "--print-fixed-path", "--recursive", "sha256", FIXED_HASH, "d"], env)
        printed = check(result, f"--print-fixed-path in {spelling}").decode().strip()
        resolved = os.path.normpath(spelling)
        if not resolved.startswith(str(DIRS_BASE)):
            sys.exit(f"store directory spelling {spelling!r} escapes {DIRS_BASE}")
        records.append({"store_dir": spelling, "nar_hash": FIXED_HASH, "name": "d", "store_path": printed})
    return records


def write_jsonl(path: Path, records) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: Nix 2.8 without a daemon needs it")
    version = nix_version()
    if "2.8" not in version:
        print(f"warning: fixtures are meant to come from Nix 2.8, this is {version}", file=sys.stderr)

    remove(BASE)
    remove(DIRS_BASE)
    BASE.mkdir(parents=True)
    DIRS_BASE.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="declenv-gen-store-") as temporary:
        temporary = Path(temporary)
        home = temporary / "home"
        conf = temporary / "conf"
        scratch = temporary / "trees"
        for directory_path in (home, conf, scratch):
            directory_path.mkdir()
        env = nix_env(str(STORE_DIR), BASE, home, conf)
        cases = hand_written() + random_trees(arguments.seed)
        trees = add_trees(cases, scratch, env)
        names = check_names(validation_names(), env, scratch)
        store_dirs = check_store_dirs(store_dir_spellings(), DIRS_BASE / "state", home, conf)
        make_writable(scratch)

    OUTPUT.mkdir(parents=True, exist_ok=True)
    write_jsonl(OUTPUT / "trees.jsonl", trees)
    write_jsonl(OUTPUT / "names.jsonl", names)
    write_jsonl(OUTPUT / "store_dirs.jsonl", store_dirs)
    remove(BASE)
    remove(DIRS_BASE)
    summary = {
        "nix": version,
        "seed": arguments.seed,
        "store_dir": str(STORE_DIR),
        "trees": len(trees),
        "trees_with_nar": sum(1 for tree in trees if "nar_hex" in tree),
        "names": len(names),
        "names_accepted": sum(1 for name in names if name["accepted"]),
        "store_dirs": len(store_dirs),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
