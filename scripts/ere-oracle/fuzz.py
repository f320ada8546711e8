#!/usr/bin/env python3
"""Differential test of src/selector/ere.rs against libstdc++ (oracle.cc).

Generates random and adversarial POSIX extended patterns with candidate strings, runs them
through the C++ oracle, then through the translator (the ignored Rust test
`selector::ere::tests::agrees_with_libstdcxx_oracle`), which reports every disagreement.

    python3 scripts/ere-oracle/fuzz.py --count 200000 --seed 1
    python3 scripts/ere-oracle/fuzz.py --count 200000 --seed 1 --fixture tests/fixtures/ere/cases.jsonl

Run from the crate root. Needs g++ (12, for libstdc++ 12) and cargo.
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

LETTERS = "abcABZz019_-"
NON_ASCII = ["é", "ü", "ß", "€", "日", "\u00a0", "\u00ff", "\U0001f600"]
SPECIALS = ".[]\\()*+?{}|^$"
CLASS_NAMES = [
    "alpha", "digit", "alnum", "upper", "lower", "space", "blank", "punct", "print",
    "graph", "cntrl", "xdigit", "d", "w", "s", "ALPHA", "Digit", "foo", "", "alpha ",
]
COLLATE_NAMES = [
    "a", "Z", "hyphen", "period", "space", "NUL", "tab", "newline", "left-square-bracket",
    "right-square-bracket", "circumflex", "backslash", "tilde", "DEL", "zero", "-", ".",
    "]", "ab", "", "é", "Hyphen", "underscore", "commercial-at", "grave-accent",
]
COUNTS = ["0", "1", "2", "3", "00", "01", "10", "4294967296", "4294967297", "2147483648",
          "4294967295", "18446744073709551617", "300", "1000", "99999"]
CANDIDATE_EXTRA = [b"", b"\0", b"\n", b"a", b"A", b"-", b"_", b" ", b"]", b"\\", b"\x80",
                   b"\xc3", b"\xa9", b"\xff", b"\x7f", b"\t", b"0", b"z", b"[", b"."]


def r_count(rng):
    if rng.random() < 0.93:
        return str(rng.randint(0, 3))
    return rng.choice(COUNTS)


def gen_bracket_item(rng):
    """Returns (text, sample bytes)."""
    k = rng.random()
    if k < 0.35:
        c = rng.choice(LETTERS + ".*+?(){}|^$\\")
        return c, c.encode()
    if k < 0.5:
        lo = rng.choice("a0A!-é")
        hi = rng.choice("z9Z~-aé")
        return f"{lo}-{hi}", rng.choice([lo, hi]).encode()
    if k < 0.65:
        name = rng.choice(CLASS_NAMES)
        return f"[:{name}:]", rng.choice([b"a", b"1", b" ", b"_", b"!", b"A"])
    if k < 0.75:
        name = rng.choice(COLLATE_NAMES)
        return f"[.{name}.]", rng.choice([b"a", b"-", b"."])
    if k < 0.82:
        name = rng.choice(COLLATE_NAMES)
        return f"[={name}=]", rng.choice([b"a", b"A", b"z"])
    if k < 0.9:
        c = rng.choice(NON_ASCII)
        return c, c.encode()[:1]
    return rng.choice(["-", "[", "]", "\\", "[.", "[:", "[="]), b"-"


def gen_bracket(rng):
    text = "["
    sample = b"a"
    if rng.random() < 0.3:
        text += "^"
    if rng.random() < 0.15:
        text += "]"
        sample = b"]"
    if rng.random() < 0.1:
        text += "-"
    for _ in range(rng.randint(0, 3)):
        item, item_sample = gen_bracket_item(rng)
        text += item
        if rng.random() < 0.5:
            sample = item_sample
    if rng.random() < 0.1:
        text += "-"
    if rng.random() < 0.95:
        text += "]"
    return text, sample


def gen_atom(rng, depth):
    """Returns (pattern text, sampler) where sampler() gives a plausible match."""
    k = rng.random()
    if k < 0.35:
        c = rng.choice(LETTERS)
        return c, lambda: c.encode()
    if k < 0.42:
        c = rng.choice(NON_ASCII)
        return c, lambda: c.encode()
    if k < 0.5:
        return ".", lambda: rng.choice([b"a", b"\n", b"\0", b"\xc3", b"."])
    if k < 0.58:
        c = rng.choice(SPECIALS + "oan]}-0")
        return "\\" + c, lambda: c.encode()
    if k < 0.72:
        text, sample = gen_bracket(rng)
        return text, lambda: sample
    if k < 0.9 and depth < 4:
        alternatives = [gen_seq(rng, depth + 1) for _ in range(rng.choice([1, 1, 2, 3]))]
        text = "(" + "|".join(t for t, _ in alternatives) + ")"
        return text, lambda: rng.choice(alternatives)[1]()
    if k < 0.95:
        c = rng.choice("^$")
        return c, lambda: b""
    c = rng.choice(SPECIALS)
    return c, lambda: c.encode()


def gen_quantifier(rng):
    k = rng.random()
    if k < 0.5:
        return rng.choice("*+?"), (0, 3)
    m = r_count(rng)
    form = rng.random()
    if form < 0.4:
        text = "{" + m + "}"
    elif form < 0.6:
        text = "{" + m + ",}"
    elif form < 0.9:
        text = "{" + m + "," + r_count(rng) + "}"
    else:
        text = rng.choice(["{", "{,2}", "{1,", "{a}", "{1,2,3}", "{ 1}", "{}", "{,}"])
    return text, (0, 3)


def gen_seq(rng, depth):
    parts = []
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4])):
        text, sampler = gen_atom(rng, depth)
        reps = (1, 1)
        while rng.random() < 0.3:
            quantifier, reps = gen_quantifier(rng)
            text += quantifier
        parts.append((text, sampler, reps))
    pattern = "".join(t for t, _, _ in parts)

    def sample():
        out = b""
        for _, sampler, (lo, hi) in parts:
            for _ in range(rng.randint(lo, hi) if lo != hi else lo):
                out += sampler()
        return out

    return pattern, sample


def mutate(rng, pattern):
    chars = list(pattern)
    for _ in range(rng.randint(1, 2)):
        k = rng.random()
        pos = rng.randint(0, len(chars))
        if k < 0.5:
            chars.insert(pos, rng.choice(SPECIALS + "\\-:.=a,1" + "é"))
        elif k < 0.8 and chars:
            del chars[min(pos, len(chars) - 1)]
        elif chars:
            chars[min(pos, len(chars) - 1)] = rng.choice(SPECIALS)
    return "".join(chars)


def noise(rng):
    alphabet = SPECIALS + "a-:.=,1^" + "é"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))


def candidates_for(rng, pattern, sampler):
    out = set()
    for _ in range(6):
        s = sampler()[:12]
        out.add(s)
        if s and rng.random() < 0.7:
            b = bytearray(s)
            i = rng.randrange(len(b))
            op = rng.random()
            if op < 0.4:
                del b[i]
            elif op < 0.7:
                b.insert(i, rng.choice(b"a-\n\0\xc3]"))
            else:
                b[i] = rng.choice(b"aAz0-_ \n\0\x80\xa9\xc3\xff\\]")
            out.add(bytes(b))
    out.add(rng.choice(CANDIDATE_EXTRA))
    raw = pattern.encode()[:12]
    out.add(raw)
    alphabet = sorted(set(raw)) or [ord("a")]
    for _ in range(2):
        out.add(bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 6))))
    out.add(bytes(rng.randrange(256) for _ in range(rng.randint(1, 3))))
    return sorted(out)


CURATED = [
    "fo\\o", "foo\\", "**", "(foo", "f{,2}oo", "fo{", "x{2,1}", "a{1,", "[[:foo:]]", "[a",
    "gtk\\+", "fo[\\o]", "fo{1}o", "[[:alpha:]]oo", "()foo", "a|", "a]", "\\\\",
    "a^b", "^a$", "a$b", "$", "^", "^*", "a**", "a+*?", "(a|)*", "(|a)+", "()", "(|)", "|",
    "a{4294967297}", "a{4294967296}", "a{2147483648}", "a{2147483648,}", "a{4294967295,1}",
    "a{1000}{1000}", "(a{300}){300}", "a{99999}", "a{100000}", "[é-z]", "[a-é]", "[\\x]",
    "[]a]", "[^]a]", "[]", "[^]", "[a-]", "[-a]", "[--0]", "[a--]", "[!--]", "[a-z-0]",
    "[[.hyphen.]]", "[[.-.]]", "[[.a.]-z]", "[[=a=]]", "[[=A=]]", "[[:alpha:]-z]",
    "[[:ALPHA:]]", "[[:w:]]", "[[:alpha]]", "[[.a]]", "[[=a]]", "[[", "[[a]", "\\]", "\\}",
    "}", "{", "a{", "a{1}{2}", "a{,}", "a{1,2,3}", ".", ".*", "(.)", "[.]", "[[:blank:]]",
    "[[:cntrl:]]", "[[:print:]]", "[[:graph:]]", "[[:punct:]]", "[[:xdigit:]]", "[[:s:]]",
    "[[:d:]]", "é", "é+", "[é]", "[é]+", "[^é]", "(a*)*b", "(a|b)*c{2}", "x*y?z+",
]


CURATED_CANDIDATES = [
    b"", b"a", b"A", b"b", b"aa", b"ab", b"aab", b"foo", b"Zoo", b"1oo", b"fo\\", b"fo",
    b"gtk+", b"gtk", b"a]", b"\\", b"-", b"]", b"x", b"xx", b"abc", b"c", b"z", b"\n",
    b"\0", b"\t", b" ", b"_", "é".encode(), "éé".encode(), b"\xc3", b"\xa9", b"\x7f",
]


def gen_case(rng, index):
    if index < len(CURATED):
        pattern = CURATED[index]
        sampler = lambda: pattern.encode()
        candidates = candidates_for(rng, pattern, sampler)
        return pattern, sorted(set(candidates) | set(CURATED_CANDIDATES))
    else:
        k = rng.random()
        if k < 0.75:
            pattern, sampler = gen_seq(rng, 0)
            if rng.random() < 0.2:
                pattern = mutate(rng, pattern)
        else:
            pattern = noise(rng)
            sampler = lambda: pattern.encode()
        if rng.random() < 0.01:
            pattern += "\0"
    return pattern, candidates_for(rng, pattern, sampler)


# Templates for the NFA state limit: the largest accepted count is searched for, and the
# counts around it are tested, so the translator's state count must be exact.
BOUNDARY_TEMPLATES = [
    "a{%d}", "a{%d,}", "a{0,%d}", "a{1,%d}", "(ab){%d}", "(a|b){%d}", "(a*){%d}",
    "(a?){%d}", "(a+b?){%d}", "((a|b)c){%d}", "[ab]{2}{%d}", "(a{3}|b){%d}",
    "(a|b|c|d){0,%d}", "((a|)*){%d}", "(a{2,3}){%d}", "(a{2,}){%d}", "x(y{2}z?){%d}w",
    "^(a$|b){%d}", "a{2}{%d}", "(()){%d}", "(a|(b|c)*){1,%d}", "((a?|b+){2}){%d,}",
    "a{4294967296}{%d}", "(a*|b?){%d}{2}",
]
NESTING_BUILDERS = [
    lambda n: "(" * n + "a" + ")" * n,
    lambda n: "(" * n + "a|b" + ")" * n,
    lambda n: "(" * n + "a" + "|b)" * n,
    lambda n: "(" * n + "a" + ")*" * n,
    lambda n: "(" * n + ")" * n + "a",
]


def big_stack():
    """libstdc++ parses groups recursively; deep nesting needs a big stack (Nix itself raises
    its stack limit to 64 MiB for this)."""
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    wanted = 1 << 30
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_STACK, (wanted, hard))


def oracle_accepts(oracle, pattern):
    line = hexfield(pattern.encode()) + "\n"
    out = subprocess.run([oracle, "1"], input=line.encode(), capture_output=True, check=True,
                         preexec_fn=big_stack)
    return out.stdout[:2] in (b"M ", b"T ")


def largest_accepted(oracle, build, low=0, high=200000):
    if not oracle_accepts(oracle, build(low)):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if oracle_accepts(oracle, build(middle)):
            low = middle
        else:
            high = middle - 1
    return low


def boundary_cases(oracle):
    builders = [lambda n, t=t: t % n for t in BOUNDARY_TEMPLATES] + NESTING_BUILDERS
    patterns = []
    for build in builders:
        limit = largest_accepted(oracle, build)
        if limit is None:
            continue
        print(f"  largest accepted N for {build(2)[:40]!r} (shown with N=2): {limit}",
              file=sys.stderr)
        for n in (limit - 1, limit, limit + 1, limit + 2):
            if n >= 0:
                patterns.append(build(n))
    return patterns


def hexfield(data):
    return "x" + data.hex()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="where to keep cases/results")
    parser.add_argument("--fixture", default=None, help="also write a JSONL fixture here")
    parser.add_argument("--fixture-size", type=int, default=3000)
    parser.add_argument("--time-limit-ms", type=int, default=1000,
                        help="per-pattern matching time limit in the oracle")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    workdir = args.workdir or tempfile.mkdtemp(prefix="ere-oracle-")
    os.makedirs(workdir, exist_ok=True)
    oracle = os.path.join(workdir, "oracle")
    cases_path = os.path.join(workdir, "cases.txt")
    results_path = os.path.join(workdir, "results.txt")

    subprocess.run(["g++", "-std=c++17", "-O2", "-o", oracle,
                    os.path.join(HERE, "oracle.cc")], check=True)

    started = time.time()
    boundary = boundary_cases(oracle)
    print(f"boundary: {len(boundary)} patterns around the state limit "
          f"({time.time() - started:.1f}s)", file=sys.stderr)
    cases = []
    with open(cases_path, "w") as out:
        for index in range(args.count):
            pattern, candidates = gen_case(rng, index)
            if index >= len(CURATED) and index - len(CURATED) < len(boundary):
                pattern = boundary[index - len(CURATED)]
                candidates = sorted({b"", b"a", b"ab", b"aa", b"b", b"xyyw", b"c", b"aaa"})
            cases.append((pattern, candidates))
            fields = [hexfield(pattern.encode())] + [hexfield(c) for c in candidates]
            out.write(" ".join(fields) + "\n")

    started = time.time()
    with open(cases_path) as stdin, open(results_path, "w") as stdout:
        subprocess.run([oracle, str(args.time_limit_ms)], stdin=stdin, stdout=stdout, check=True,
                       preexec_fn=big_stack)
    print(f"oracle: {len(cases)} patterns in {time.time() - started:.1f}s", file=sys.stderr)

    with open(results_path) as results:
        outcomes = [line.rstrip("\n") for line in results]
    assert len(outcomes) == len(cases), "oracle output is short"
    errors = {}
    for outcome in outcomes:
        if outcome.startswith("E "):
            errors[outcome[2:]] = errors.get(outcome[2:], 0) + 1
    accepted = sum(1 for o in outcomes if o[:2] in ("M ", "T "))
    timeouts = sum(1 for o in outcomes if o.startswith("T "))
    candidates = sum(len(c) for _, c in cases)
    positives = sum(o.count("1") for o in outcomes if o.startswith("M "))
    print(f"libstdc++: {accepted} accepted, {len(cases) - accepted} rejected, "
          f"{candidates} candidates, {positives} matches, "
          f"{timeouts} patterns whose matching timed out", file=sys.stderr)
    for message, count in sorted(errors.items(), key=lambda item: -item[1]):
        print(f"  {count:7d}  {message}", file=sys.stderr)

    if args.fixture:
        write_fixture(args.fixture, cases, outcomes, args.fixture_size, args.seed)

    env = dict(os.environ, ERE_ORACLE_CASES=cases_path, ERE_ORACLE_RESULTS=results_path)
    command = ["cargo", "test", "--release", "--lib", "--",
               "selector::ere::tests::agrees_with_libstdcxx_oracle", "--ignored",
               "--exact", "--nocapture"]
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def write_fixture(path, cases, outcomes, size, seed):
    """A representative, UTF-8-only sample: every error message, and accepted patterns that
    match at least one candidate preferred over those that match none."""
    rng = random.Random(seed)
    by_kind = {}
    seen = set()
    for index, ((pattern, candidates), outcome) in enumerate(zip(cases, outcomes)):
        if pattern in seen or outcome[:2] in ("X ", "T "):
            continue
        seen.add(pattern)
        if outcome.startswith("E "):
            kind = outcome
        elif "1" in outcome:
            kind = "M positive"
        else:
            kind = "M negative"
        if index < len(CURATED):
            kind = "curated"
        by_kind.setdefault(kind, []).append(index)
    chosen = set(by_kind.pop("curated", []))
    quotas = {"M positive": size * 45 // 100, "M negative": size * 15 // 100}
    error_kinds = [k for k in by_kind if k.startswith("E ")]
    per_error = max(1, (size * 40 // 100) // max(1, len(error_kinds)))
    for kind, indices in by_kind.items():
        quota = quotas.get(kind, per_error)
        chosen.update(rng.sample(indices, min(quota, len(indices))))
    with open(path, "w") as out:
        for index in sorted(chosen):
            pattern, candidates = cases[index]
            outcome = outcomes[index]
            record = {"pattern": pattern, "error": None, "matches": []}
            if outcome.startswith("E "):
                record["error"] = outcome[2:]
            else:
                for candidate, bit in zip(candidates, outcome[2:]):
                    try:
                        text = candidate.decode("utf-8")
                    except UnicodeDecodeError:
                        continue
                    record["matches"].append([text, bit == "1"])
            out.write(json.dumps(record, ensure_ascii=True) + "\n")
    print(f"fixture: {len(chosen)} cases written to {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
