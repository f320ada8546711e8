#!/usr/bin/env python3
"""Writes NAR seeds for the fuzz corpus (tests/fuzz/seeds/nar/): well-formed archives of small
trees, and malformed ones that a reader must refuse without writing outside its target."""
import os
import struct
import sys

def s(data):
    if isinstance(data, str):
        data = data.encode()
    return struct.pack("<Q", len(data)) + data + b"\0" * ((8 - len(data) % 8) % 8)

def regular(contents, executable=False):
    out = s("(") + s("type") + s("regular")
    if executable:
        out += s("executable") + s("")
    return out + s("contents") + s(contents) + s(")")

def symlink(target):
    return s("(") + s("type") + s("symlink") + s("target") + s(target) + s(")")

def directory(entries):
    out = s("(") + s("type") + s("directory")
    for name, node in entries:
        out += s("entry") + s("(") + s("name") + s(name) + s("node") + node + s(")")
    return out + s(")")

def nar(node):
    return s("nix-archive-1") + node

seeds = {
    "file.nar": nar(regular("hello\n")),
    "executable.nar": nar(regular("#!/bin/sh\necho hi\n", executable=True)),
    "empty-file.nar": nar(regular("")),
    "symlink.nar": nar(symlink("target")),
    "empty-directory.nar": nar(directory([])),
    "tree.nar": nar(directory([
        ("bin", directory([("hello", regular("#!/bin/sh\n", True))])),
        ("lib", directory([("libx.so", regular("x" * 100))])),
        ("link", symlink("bin/hello")),
        ("share", directory([("doc", directory([("README", regular("read me\n"))]))])),
    ])),
    # A reader must refuse these.
    "dotdot-entry.nar": nar(directory([("..", regular("escape"))])),
    "slash-entry.nar": nar(directory([("a/b", regular("escape"))])),
    "unsorted.nar": nar(directory([("b", regular("")), ("a", regular(""))])),
    "duplicate.nar": nar(directory([("a", regular("")), ("a", directory([]))])),
    "absolute-symlink.nar": nar(directory([("etc", symlink("/etc")), ("x", regular(""))])),
    "escaping-symlink.nar": nar(directory([("up", symlink("../../../../tmp"))])),
    "huge-length.nar": s("nix-archive-1") + s("(") + s("type") + s("regular") + s("contents")
        + struct.pack("<Q", 1 << 62) + b"short",
    "huge-name.nar": s("nix-archive-1") + s("(") + s("type") + s("directory") + s("entry")
        + s("(") + s("name") + struct.pack("<Q", 1 << 40),
    "truncated.nar": nar(directory([("a", regular("abc"))]))[:-20],
    "trailing.nar": nar(regular("x")) + b"garbage after the archive",
    "bad-magic.nar": s("nix-archive-2") + regular("x"),
    "nonzero-padding.nar": s("nix-archive-1") + s("(") + s("type") + s("regular") + s("contents")
        + struct.pack("<Q", 1) + b"x" + b"\1" * 7 + s(")"),
    "newline-name.nar": nar(directory([("a\nb", regular("")), ("c", regular(""))])),
    "non-utf8-name.nar": nar(directory([(b"\xff\xfe", regular(""))])),
    "deep.nar": None,
}
node = regular("bottom")
for _ in range(200):
    node = directory([("d", node)])
seeds["deep.nar"] = nar(node)

target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "nar")
os.makedirs(target, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(target, name), "wb") as file:
        file.write(data)
