#!/usr/bin/env bash
# Nix-source planning benchmark: `declenv plan` of a spec whose source is a
# Nix expression (`nix = "../pkgs"`), cold and warm, against one evaluation of
# that expression and against `nix-env -iA ... --dry-run` of the same packages.
#
# Usage: bench/nix_source.sh [options] [DECLENV_BIN]
#
#   DECLENV_BIN          declenv binary (default: target/release/declenv); a
#                        copy taken at the start runs, so that a rebuild
#                        meanwhile cannot mix two binaries' figures
#   --count N            derivations in the expression (default: 20000)
#   --packages N         of which the spec selects, by `attr` (default: 300)
#   --seed N             seed for the selection (default: 1)
#   --runs N             timed runs of each case (default: 5, after 1 warm-up;
#                        3 for a case whose warm-up took over 10 s)
#   --warm-runs N        timed runs of the warm plan (default: 20, after 1
#                        warm-up)
#   --out DIR            results and the work directory (default:
#                        .bench/nix-source; DIR/w is made anew each run)
#   --loop               time with the `date` loop even if hyperfine is there
#
# bench/gen_nix_expression.py writes W/pkgs/default.nix, a function
# `{ config ? { }, overlays ? [ ] }: { ATTR = mk NAME DESCRIPTION; ... }` of
# N real `derivation { name; system = builtins.currentSystem; builder =
# "/bin/sh"; args = [ "-c" "echo" ]; } // { meta = { description; }; }`,
# named after the Debian and PyPI packages listed in
# /work/.library/env/packages/, and W/dotfiles/profile.toml, a `backend =
# "nix"` spec with source `nix = "../pkgs"` selecting --packages of them.
#
# Everything runs with a private HOME and XDG directories, a private Nix
# store under W/root (NIX_STORE_DIR, NIX_STATE_DIR, NIX_LOG_DIR,
# NIX_CONF_DIR=W/etc, NIX_REMOTE=local, no sandbox, no substituters, no build
# users) and no NIX_PATH; declenv with `--root W/root --file
# W/dotfiles/profile.toml --profile W/profiles/work` (a profile that does
# not exist yet, so the plan adds every package).  Nothing is built.  Cases:
#
#   (a) eval     nix-env -f W/pkgs -qa '*' --json --out-path --meta: what one
#                evaluation costs (declenv runs the same, with
#                `--arg config '{ }' --arg overlays '[ ]'`, on a cache miss);
#   (b) cold     declenv plan, W/root/nix/var/declenv/cache deleted before
#                each run (so Nix evaluates, and the JSON is parsed and
#                packed again); lockfile present (`declenv lock` ran once);
#   (c) warm     declenv plan, cache and lockfile present: `nix-env
#                --version`, a fingerprint of W/pkgs, the cached catalog;
#   (d) nix-env  nix-env -p W/nixprofile -f W/pkgs -iA ATTR... --dry-run of
#                the same packages: what nix-env costs to plan that profile.
#
# Checks: the expression evaluates to N derivations; the cold and warm plans
# print `Plan: P to add` and their `--json` holds one addition per selected
# attribute; warm runs leave the lockfile as it is; nix-env's dry run installs
# exactly the selected derivations; and, with a `nix-env` wrapper first on
# PATH that logs its arguments, a cold plan runs `-qa` (which shows the
# wrapper is used) and the warm plan after it none.  Timing is by hyperfine when
# installed, else a loop of `date +%s.%N`.  Prints a markdown table (medians,
# means, peak RSS, load) with the warm plan's speed-up over (d), (b) and (a),
# keeps it in OUT/results.md, and exits non-zero if a check fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

declenv=target/release/declenv
count=20000
packages=300
seed=1
runs=5
warm_runs=20
out=.bench/nix-source
loop=0

while (($#)); do
    case $1 in
        --count) count=$2; shift 2 ;;
        --packages) packages=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --warm-runs) warm_runs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --loop) loop=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        -*) echo "nix_source.sh: unknown option $1" >&2; exit 2 ;;
        *) declenv=$1; shift ;;
    esac
done

die() { echo "nix_source.sh: $*" >&2; exit 1; }
say() { echo "nix_source.sh: $*" >&2; }

for tool in nix-env python3; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[[ -x $declenv ]] || die "$declenv does not exist (cargo build --release)"
have_hyperfine=0
((loop)) || ! command -v hyperfine >/dev/null || have_hyperfine=1
have_time=0
[[ -x /usr/bin/time ]] && have_time=1
real_nix_env=$(command -v nix-env)

mkdir -p "$out"
out=$(cd "$out" && pwd)
W=$out/w
if [[ -e $W ]]; then
    chmod -R u+w "$W" 2>/dev/null || true
    rm -rf "$W"
fi
mkdir -p "$W"/{home,etc,bin,profiles,xdg/cache,xdg/data,xdg/state,xdg/config}
rm -f "$out"/*.json "$out"/*.txt "$out"/*.log "$out"/*.md

# ---- environment -----------------------------------------------------------
unset DECLENV_ROOT DECLENV_FILE DECLENV_BACKEND NIX_PATH
export HOME=$W/home
export XDG_CACHE_HOME=$W/xdg/cache XDG_DATA_HOME=$W/xdg/data XDG_STATE_HOME=$W/xdg/state
export XDG_CONFIG_HOME=$W/xdg/config
root=$W/root
export NIX_STORE_DIR=$root/nix/store NIX_STATE_DIR=$root/nix/var/nix
export NIX_LOG_DIR=$root/nix/var/log/nix NIX_CONF_DIR=$W/etc NIX_REMOTE=local
export NIX_CONFIG=$'sandbox = false\nsubstituters =\nbuild-users-group ='
export NO_COLOR=1

declenv_shown=$declenv
cp "$declenv" "$W/declenv"
declenv=$W/declenv
say "declenv: a copy of $declenv_shown, sha256 $(sha256sum "$declenv" | cut -d' ' -f1)"

# ---- expression and spec -----------------------------------------------------
say "generating $count derivations, $packages selected (seed $seed)"
python3 bench/gen_nix_expression.py --out "$W" --count "$count" --packages "$packages" \
    --seed "$seed" 2>"$out/generator.txt" || { cat "$out/generator.txt" >&2; die "generator failed"; }
cp "$W/expression.json" "$out/expression.json"
spec=$W/dotfiles/profile.toml
lock=$W/dotfiles/profile.lock
pkgs=$W/pkgs
mapfile -t attrs < <(tail -n +2 "$W/selected.tsv" | cut -f1)
((${#attrs[@]} == packages)) || die "selected.tsv holds ${#attrs[@]} attributes, not $packages"
tail -n +2 "$W/selected.tsv" | cut -f2 | sort >"$W/expected-names.txt"
cache=$root/nix/var/declenv/cache

# Command lines, as shell words (hyperfine -N splits them the same way).
q() {
    local a sep=
    for a; do
        if [[ $a =~ ^[A-Za-z0-9_./=:+-]+$ ]]; then printf '%s%s' "$sep" "$a"
        else printf "%s'%s'" "$sep" "${a//\'/\'\\\'\'}"; fi
        sep=' '
    done
}
eval_cmd=(nix-env -f "$pkgs" -qa '*' --json --out-path --meta)
plan_cmd=("$declenv" --root "$root" --file "$spec" --profile "$W/profiles/work" plan)
nix_cmd=(nix-env -p "$W/nixprofile" -f "$pkgs" -iA "${attrs[@]}" --dry-run)
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

nix_version=$(nix-env --version | awk '{print $NF}')
say "machine: $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB; nix-env $nix_version;" \
    "$( ((have_hyperfine)) && hyperfine --version || echo 'no hyperfine: date loop')"
say "expression: $(stat -c %s "$pkgs/default.nix") bytes; load: $(loadavg)"

# ---- checks ------------------------------------------------------------------
# (a): the expression evaluates to COUNT derivations.
"${eval_cmd[@]}" >"$W/eval.json" 2>"$out/eval.stderr" || die "nix-env -qa failed; see $out/eval.stderr"
evaluated=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$W/eval.json")
[[ $evaluated == "$count" ]] || die "nix-env -qa lists $evaluated derivations, not $count"
say "nix-env -qa lists the $evaluated derivations"

# The plan's JSON: one "add" per selected attribute, to the expected derivation.
check_plan_json() {  # FILE
    python3 - "$1" "$W/selected.tsv" <<'PY'
import csv, json, sys
plan = json.load(open(sys.argv[1]))
changes = plan.get("changes") if isinstance(plan, dict) else None
if not isinstance(changes, list):
    sys.exit(f"nix_source.sh: {sys.argv[1]}: no top-level 'changes' array")
want = {(r["attr"], r["name"]) for r in csv.DictReader(open(sys.argv[2]), delimiter="\t")}
got = {((c.get("to") or {}).get("attr_path"), (c.get("to") or {}).get("name"))
       for c in changes if c.get("kind") == "add"}
if len(changes) != len(want) or got != want:
    sys.exit(f"nix_source.sh: {sys.argv[1]}: {len(changes)} changes; missing "
             f"{sorted(want - got)[:3]}, unexpected {sorted(got - want, key=str)[:3]}")
PY
}
check_plan_text() {  # FILE
    grep -q "^Plan: $packages to add" "$1" \
        || die "$1 does not say 'Plan: $packages to add': $(grep -m1 '^Plan' "$1" || echo nothing)"
}

say "declenv lock (untimed)"
"$declenv" --root "$root" --file "$spec" --profile "$W/profiles/work" lock \
    >"$out/lock.txt" 2>&1 || die "declenv lock failed; see $out/lock.txt"
[[ -f $lock ]] || die "declenv lock wrote no $lock"
lock_sum() { sha256sum "$lock" | cut -d' ' -f1; }
sum=$(lock_sum)

rm -rf "$cache"
"${plan_cmd[@]}" >"$out/plan-cold.txt" 2>"$out/plan-cold.stderr" \
    || die "cold declenv plan failed; see $out/plan-cold.stderr"
check_plan_text "$out/plan-cold.txt"
ls "$cache"/catalog-v1/nix-eval/*.json >/dev/null 2>&1 || die "the cold plan left no evaluation in $cache"
"${plan_cmd[@]}" >"$out/plan-warm.txt" 2>"$out/plan-warm.stderr" \
    || die "warm declenv plan failed; see $out/plan-warm.stderr"
check_plan_text "$out/plan-warm.txt"
"${plan_cmd[@]}" --json >"$out/plan-warm.json" 2>>"$out/plan-warm.stderr" \
    || die "declenv plan --json failed; see $out/plan-warm.stderr"
check_plan_json "$out/plan-warm.json"
rm -rf "$cache"
"${plan_cmd[@]}" --json >"$out/plan-cold.json" 2>>"$out/plan-cold.stderr" \
    || die "cold declenv plan --json failed; see $out/plan-cold.stderr"
check_plan_json "$out/plan-cold.json"
[[ $(lock_sum) == "$sum" ]] || die "declenv plan changed an up-to-date $lock"
say "cold and warm plans: $(grep -m1 '^Plan:' "$out/plan-warm.txt")"

# A warm plan runs no evaluation: a logging nix-env first on PATH.
cat >"$W/bin/nix-env" <<EOF
#!/bin/sh
printf '%s\n' "\$*" >>"$W/nix-env-calls.log"
exec $(q "$real_nix_env") "\$@"
EOF
chmod +x "$W/bin/nix-env"
# Cold first (the cache is keyed by the nix-env on PATH, so the wrapper starts cold): it must
# evaluate, which shows the wrapper is used; then warm, which must not.
rm -rf "$cache"
PATH=$W/bin:$PATH "${plan_cmd[@]}" >"$out/plan-wrapped-cold.txt" 2>&1 \
    || die "cold plan with the wrapper failed; see $out/plan-wrapped-cold.txt"
cp "$W/nix-env-calls.log" "$out/nix-env-calls-cold.log" 2>/dev/null || : >"$out/nix-env-calls-cold.log"
grep -q -- '-qa' "$out/nix-env-calls-cold.log" \
    || die "the wrapper saw no evaluation in a cold plan; is it used?"
rm -f "$W/nix-env-calls.log"
PATH=$W/bin:$PATH "${plan_cmd[@]}" >"$out/plan-wrapped-warm.txt" 2>&1 \
    || die "warm plan with the wrapper failed; see $out/plan-wrapped-warm.txt"
check_plan_text "$out/plan-wrapped-warm.txt"
cp "$W/nix-env-calls.log" "$out/nix-env-calls-warm.log" 2>/dev/null || : >"$out/nix-env-calls-warm.log"
if grep -q -- '-qa' "$out/nix-env-calls-warm.log"; then
    die "a warm plan evaluated the expression: $(grep -- '-qa' "$out/nix-env-calls-warm.log")"
fi
warm_calls=$(paste -sd';' "$out/nix-env-calls-warm.log")
say "nix-env calls of a warm plan: ${warm_calls:-none} (a cold one: $(wc -l <"$out/nix-env-calls-cold.log"), with -qa)"

# (d): nix-env's dry run installs exactly the selected derivations.  The first
# run writes their .drv files to the private store.
"${nix_cmd[@]}" >/dev/null 2>"$out/nix-env-dry-run.txt" || die "nix-env -iA --dry-run failed; see $out/nix-env-dry-run.txt"
sed -n "s/^installing '\(.*\)'\$/\1/p" "$out/nix-env-dry-run.txt" | sort >"$W/nix-installs.txt"
diff -u "$W/expected-names.txt" "$W/nix-installs.txt" >"$out/nix-env-vs-expected.diff" \
    || die "nix-env would install other derivations than selected; see $out/nix-env-vs-expected.diff"
[[ ! -e $W/nixprofile ]] || die "nix-env --dry-run created $W/nixprofile"
say "nix-env's dry run installs the $(wc -l <"$W/nix-installs.txt") selected derivations"

# ---- peak RSS ----------------------------------------------------------------
peak_rss() {  # CMD... -> KiB
    if ((have_time)); then
        /usr/bin/time -f %M -o "$W/rss" "$@" >/dev/null 2>&1 || echo "?"
        tail -n1 "$W/rss"
    else
        echo "?"
    fi
}
rss_eval=$(peak_rss "${eval_cmd[@]}")
rm -rf "$cache"
rss_cold=$(peak_rss "${plan_cmd[@]}")
rss_warm=$(peak_rss "${plan_cmd[@]}")
rss_nix=$(peak_rss "${nix_cmd[@]}")

# ---- wall time -----------------------------------------------------------------
# time_case NAME RUNS PREPARE CMD...: one untimed warm-up (its own preparation
# first), then RUNS timed runs, or 3 if the warm-up took over 10 s, each after
# PREPARE (a command line in shell words, or empty).  Writes OUT/time-NAME.json in hyperfine's
# layout (results[0]: mean, stddev, median, min, max, times) plus the load.
time_case() {
    local name=$1 n=$2 prepare=$3; shift 3
    local t0 t1 warm load0
    [[ -z $prepare ]] || eval "$prepare"
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || die "$name: $(q "$@") failed"
    t1=$(date +%s.%N)
    warm=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    if awk -v w="$warm" 'BEGIN { exit !(w > 10) }' && ((n > 3)); then
        say "$name: the warm-up took ${warm} s; 3 runs"
        n=3
    fi
    load0=$(loadavg)
    say "timing $name ($n runs; load $load0)"
    if ((have_hyperfine)); then
        local prep=()
        [[ -n $prepare ]] && prep=(--prepare "$prepare")
        hyperfine -N --style basic --warmup 0 --runs "$n" "${prep[@]}" \
            --export-json "$out/time-$name.json" -n "$name" "$(q "$@")" >&2
    else
        local i times=()
        for ((i = 0; i < n; i++)); do
            [[ -z $prepare ]] || eval "$prepare"
            t0=$(date +%s.%N)
            "$@" >/dev/null 2>&1 || die "$name: $(q "$@") failed"
            t1=$(date +%s.%N)
            times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')")
        done
        python3 - "$out/time-$name.json" "$name" "${times[@]}" <<'PY'
import json, statistics, sys
path, name, *times = sys.argv[1:]
t = [float(x) for x in times]
json.dump({"results": [{"command": name, "times": t, "mean": statistics.mean(t),
           "stddev": statistics.stdev(t) if len(t) > 1 else 0.0,
           "median": statistics.median(t), "min": min(t), "max": max(t)}]},
          open(path, "w"), indent=2)
PY
    fi
    python3 - "$out/time-$name.json" "$load0" "$(loadavg)" <<'PY'
import json, sys
path, before, after = sys.argv[1:]
doc = json.load(open(path))
doc["load"] = {"before": before, "after": after}
json.dump(doc, open(path, "w"), indent=2)
PY
}

time_case eval "$runs" "" "${eval_cmd[@]}"
time_case cold "$runs" "$(q rm -rf "$cache")" "${plan_cmd[@]}"
"${plan_cmd[@]}" >/dev/null 2>&1  # fill the cache again
time_case warm "$warm_runs" "" "${plan_cmd[@]}"
[[ $(lock_sum) == "$sum" ]] || die "the lockfile changed during the timed runs"
ls "$cache"/catalog-v1/nix-eval/*.json >/dev/null 2>&1 || die "the warm runs left no cached evaluation"
time_case nix-env "$runs" "" "${nix_cmd[@]}"

# ---- table -----------------------------------------------------------------------
export out count packages nix_version rss_eval rss_cold rss_warm rss_nix
export eval_show="$(q nix-env -f W/pkgs -qa '*' --json --out-path --meta)"
export plan_show="$(q "$declenv_shown" --root W/root --file W/dotfiles/profile.toml --profile W/profiles/work plan)"
export nix_show="$(q nix-env -p W/nixprofile -f W/pkgs -iA) ATTR×$packages --dry-run"
python3 - <<'PY' | tee "$out/results.md"
import json, os

e = os.environ
out = e["out"]

def result(name):
    doc = json.load(open(f"{out}/time-{name}.json"))
    r = doc["results"][0]
    return r, doc.get("load", {})

def fmt(t):
    return f"{t:.3f} s" if t >= 1 else f"{t * 1000:.1f} ms"

def rss(kib):
    return f"{int(kib) / 1024:.0f} MiB" if kib.isdigit() else "?"

rows = [
    ("(a) one evaluation", e["eval_show"], "eval", e["rss_eval"]),
    ("(b) declenv plan, cold cache", e["plan_show"], "cold", e["rss_cold"]),
    ("(c) declenv plan, warm cache", e["plan_show"], "warm", e["rss_warm"]),
    (f"(d) nix-env {e['nix_version']} dry run", e["nix_show"], "nix-env", e["rss_nix"]),
]
medians = {}
print(f"{e['count']} derivations, {e['packages']} selected; lockfile present in (b) and (c).\n")
print("| case | command | median | mean ± sd | min – max | runs | peak RSS | load (1-min avg, before → after) |")
print("|---|---|---|---|---|---|---|---|")
for label, cmd, name, kib in rows:
    r, load = result(name)
    medians[name] = r["median"]
    print(f"| {label} | `{cmd}` | **{fmt(r['median'])}** | {fmt(r['mean'])} ± {fmt(r['stddev'] or 0)} "
          f"| {fmt(r['min'])} – {fmt(r['max'])} | {len(r['times'])} | {rss(kib)} "
          f"| {load.get('before', '?').split()[0]} → {load.get('after', '?').split()[0]} |")
w = medians["warm"]
print()
print(f"Warm plan (median) vs (d) nix-env dry run: {medians['nix-env'] / w:.1f}× faster; "
      f"vs (b) cold plan: {medians['cold'] / w:.1f}×; vs (a) one evaluation: {medians['eval'] / w:.1f}×. "
      f"Cold plan minus one evaluation: {fmt(medians['cold'] - medians['eval'])}.")
PY
say "raw results in $out/"
