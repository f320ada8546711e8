#!/usr/bin/env bash
# Watch latency benchmark: the time from saving profile.toml to the profile
# link pointing at the new generation, with `declenv watch` running on a
# 50-package profile built from a generated channel of small packages.
#
# Usage: bench/watch_latency.sh [options] [DECLENV_BIN]
#
#   DECLENV_BIN          declenv binary (default: target/release/declenv)
#   --packages N         packages in the profile (default: 50)
#   --runs N             timed saves per configuration (default: 20)
#   --out DIR            raw results (default: .bench/watch)
#
# Each save renames a new spec over the old one (as editors do), toggling a
# 51st package in and out, so every save makes one new generation (removals
# are applied: the watcher runs with --allow-destructive).  Measured, per save:
#
#   link    save -> the profile link names the new generation (readlink polled
#           every 0.5 ms; what a shell started after the save would see)
#   event   save -> the watcher's JSON event for that save is read from its
#           stdout (the lockfile is written after the switch, then the event)
#   cycle   the watcher's own duration_ms for the cycle (lock, plan, apply)
#
# Configurations: file system events with the default debounce (300 ms),
# events with --debounce 0 (the cost of a cycle alone), --poll with the
# default interval (500 ms) and debounce; and, with --debounce 0, a save that
# only changes a comment (no new generation: save -> `unchanged` event).
# For reference, without a watcher: the same saves as in the --debounce 0
# configuration, interleaved with them, each followed by a one-shot
# `declenv apply -y` on another root, run to completion.
#
# Prints a markdown table (configuration, measure, mean, median, p95, min,
# max) and writes it to OUT/results.md, the raw timings to OUT/*.json.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

declenv=target/release/declenv
packages=50
runs=20
out=.bench/watch

while (($#)); do
    case $1 in
        --packages) packages=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        -*) echo "watch_latency.sh: unknown option $1" >&2; exit 2 ;;
        *) declenv=$1; shift ;;
    esac
done

die() { echo "watch_latency.sh: $*" >&2; exit 1; }
say() { echo "watch_latency.sh: $*" >&2; }

command -v python3 >/dev/null || die "python3 not found"
[[ -x $declenv ]] || die "$declenv does not exist (cargo build --release)"
"$declenv" watch --help >/dev/null 2>&1 || die "$declenv has no 'watch' command"

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A copy taken now: a rebuild of the original meanwhile cannot mix two binaries' figures.
cp "$declenv" "$work/declenv"
say "binary: $declenv, sha256 $(sha256sum "$declenv" | cut -c1-16)…"
declenv=$work/declenv

# ---- a channel of small packages -------------------------------------------
# pkgNN-1.0/bin/pkgNN (a shell script) and share/doc/pkgNN/README, plus
# extra-1.0, the package each save adds or removes.
channel=$work/dotfiles/channel
mkdir -p "$channel"
make_package() {  # NAME
    local dir=$channel/$1-1.0
    mkdir -p "$dir/bin" "$dir/share/doc/$1"
    printf '#!/bin/sh\necho "%s 1.0"\n' "$1" >"$dir/bin/$1"
    chmod 755 "$dir/bin/$1"
    printf '%s: a generated package for the watch benchmark\n' "$1" >"$dir/share/doc/$1/README"
}
for ((i = 0; i < packages; i++)); do make_package "$(printf 'pkg%02d' "$i")"; done
make_package extra
say "channel: $((packages + 1)) packages in $channel"
say "machine: $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB; $("$declenv" --version);" \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)"

export DECLENV=$declenv WORK=$work PACKAGES=$packages RUNS=$runs OUT=$out
python3 - <<'PY' | tee "$out/results.md"
import atexit, hashlib, json, os, queue, statistics, subprocess, sys, threading, time

declenv = os.environ["DECLENV"]
work = os.environ["WORK"]
packages = int(os.environ["PACKAGES"])
runs = int(os.environ["RUNS"])
out = os.environ["OUT"]
dotfiles = os.path.join(work, "dotfiles")
spec = os.path.join(dotfiles, "profile.toml")

watchers = []

def stop_watchers():
    # Whatever happens, no watcher outlives the benchmark.
    for watcher in watchers:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()

atexit.register(stop_watchers)

def say(*args):
    print("watch_latency.sh:", *args, file=sys.stderr, flush=True)

def spec_text(extra, comment):
    lines = ["version = 1", "", "[sources.bench]", 'channel = "channel"']
    names = [f"pkg{i:02d}" for i in range(packages)] + (["extra"] if extra else [])
    for name in names:
        lines += ["", f"[packages.{name}]", f'attr = "{name}"']
    lines += ["", f"# {comment}", ""]
    return "\n".join(lines)

def save(text):
    temporary = os.path.join(dotfiles, ".profile.toml.tmp")
    with open(temporary, "w") as f:
        f.write(text)
    os.rename(temporary, spec)

def digest(text):
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

def apply_oneshot(name, text):
    """Saves `text` as another spec (same channel) and runs `declenv apply -y` on another
    root to completion; returns the time from the save to its exit."""
    directory = os.path.join(work, "oneshot")
    if not os.path.exists(directory):
        os.makedirs(directory)
        os.symlink(os.path.join(dotfiles, "channel"), os.path.join(directory, "channel"))
    other = os.path.join(directory, "profile.toml")
    env = dict(os.environ, NO_COLOR="1")
    for variable in ("DECLENV_ROOT", "DECLENV_FILE"):
        env.pop(variable, None)
    saved = time.monotonic()
    with open(other, "w") as f:
        f.write(text)
    subprocess.run([declenv, "--root", os.path.join(work, f"root-{name}-oneshot"), "--file",
                    other, "apply", "-y"], check=True, env=env, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - saved

def run_configuration(name, args, comment_only=False, oneshot=False):
    root = os.path.join(work, f"root-{name}")
    profile = os.path.join(root, "nix/var/nix/profiles/default")
    save(spec_text(False, f"{name} start"))
    command = [declenv, "--root", root, "--file", spec, "watch", "--json",
               "--allow-destructive", *args]
    env = dict(os.environ, NO_COLOR="1")
    for variable in ("DECLENV_ROOT", "DECLENV_FILE"):
        env.pop(variable, None)
    log = open(os.path.join(out, f"{name}.stderr"), "w")
    watcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True,
                               stdin=subprocess.DEVNULL, env=env)
    watchers.append(watcher)
    events = queue.Queue()
    def read():
        for line in watcher.stdout:
            events.put((time.monotonic(), json.loads(line)))
    threading.Thread(target=read, daemon=True).start()

    def wait_event(predicate, what):
        deadline = time.monotonic() + 120
        while True:
            try:
                at, event = events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                sys.exit(f"watch_latency.sh: {name}: timed out waiting for {what}")
            if event["event"] == "failed":
                sys.exit(f"watch_latency.sh: {name}: a cycle failed: {event['error']}")
            if predicate(event):
                return at, event

    wait_event(lambda e: e["event"] in ("applied", "unchanged"), "the first cycle")
    if oneshot:
        apply_oneshot(name, spec_text(False, f"{name} start"))
    samples = []
    for run in range(runs):
        # Let the watcher settle: the previous cycle's lockfile write is seen (at the next
        # poll, with --poll) and found to be its own, so no pending burst carries over.
        time.sleep(1.5)
        if comment_only:
            text = spec_text(False, f"{name} run {run}")
        else:
            text = spec_text(run % 2 == 0, f"{name} run {run}")
        before = os.readlink(profile)
        saved = time.monotonic()
        save(text)
        link = None
        if not comment_only:
            deadline = saved + 120
            while True:
                now = time.monotonic()
                if os.readlink(profile) != before:
                    link = now - saved
                    break
                if now > deadline:
                    sys.exit(f"watch_latency.sh: {name}: the profile link did not move")
                time.sleep(0.0005)
        hash_ = digest(text)
        at, event = wait_event(lambda e: e.get("spec_hash") == hash_, "the save's event")
        expected = "unchanged" if comment_only else "applied"
        if event["event"] != expected:
            sys.exit(f"watch_latency.sh: {name}: expected {expected}, got {event['event']}")
        sample = {"link": link, "event": at - saved, "cycle": event["duration_ms"] / 1000.0,
                  "generation": event["generation"]}
        if oneshot:
            # The same save applied by a one-shot command, interleaved with the watched saves
            # so that both see the same machine.
            time.sleep(0.5)
            sample["oneshot"] = apply_oneshot(name, text)
        samples.append(sample)
    watcher.terminate()
    try:
        watcher.wait(timeout=60)
    except subprocess.TimeoutExpired:
        watcher.kill()
        sys.exit(f"watch_latency.sh: {name}: the watcher did not stop on SIGTERM")
    if watcher.returncode != 0:
        sys.exit(f"watch_latency.sh: {name}: the watcher exited with {watcher.returncode}")
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(samples, f, indent=1)
    generations = {s["generation"] for s in samples}
    say(f"{name}: {len(samples)} saves, generations {min(generations)}..{max(generations)}")
    return samples

def fmt(seconds):
    return f"{seconds * 1000:.1f} ms"

def row(configuration, measure, values):
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    print(f"| {configuration} | {measure} | {fmt(statistics.mean(values))} "
          f"| {fmt(statistics.median(values))} | {fmt(p95)} | {fmt(values[0])} "
          f"| {fmt(values[-1])} |")

configurations = [
    ("events-debounce-300", "events, `--debounce 300` (default)", [], False, False),
    ("events-debounce-0", "events, `--debounce 0`", ["--debounce", "0"], False, True),
    ("poll-500", "`--poll` (500 ms), `--debounce 300`", ["--poll"], False, False),
    ("comment-debounce-0", "events, `--debounce 0`, comment-only save", ["--debounce", "0"],
     True, False),
]
results = []
for name, label, args, comment_only, oneshot in configurations:
    say(f"{name}: {runs} saves")
    results.append((label, comment_only,
                    run_configuration(name, args, comment_only, oneshot)))

print(f"| configuration ({packages}-package profile, {runs} saves) | measure | mean "
      "| median | p95 | min | max |")
print("|---|---|---|---|---|---|---|")
for label, comment_only, samples in results:
    if not comment_only:
        row(label, "save → profile link switched", [s["link"] for s in samples])
        row(label, "save → `applied` event", [s["event"] for s in samples])
    else:
        row(label, "save → `unchanged` event", [s["event"] for s in samples])
    row(label, "cycle (`duration_ms`)", [s["cycle"] for s in samples])
    if "oneshot" in samples[0]:
        row("no watcher: the same saves, interleaved", "save → `declenv apply -y` exited",
            [s["oneshot"] for s in samples])
PY
say "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
say "raw results in $out/"
