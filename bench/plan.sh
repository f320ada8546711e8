#!/usr/bin/env bash
# Profile planning benchmark: `declenv plan` of a 300-package profile.toml
# versus `nix-env -i --dry-run` of the same 300 packages, over the same
# generated catalog (see bench/gen_catalog.py and bench/gen_profile.py).
#
# Usage: bench/plan.sh [options] [DECLENV_BIN]
#
#   DECLENV_BIN          declenv binary (default: target/release/declenv);
#                        skipped with a message if it lacks `plan --frozen`;
#                        a copy taken at the start runs, so that a rebuild
#                        meanwhile cannot mix two binaries' figures
#   --catalog DIR        catalog directory (default: .bench/catalog)
#   --seed N             seed for gen_profile.py (default: 1)
#   --count N            packages in the profile (default: 300)
#   --constrained N      of which with a version constraint (default: 30)
#   --nix-runs N         timed nix-env runs (default: 5, after 1 warm-up)
#   --runs N             timed runs of each locked declenv case (default: 20,
#                        after 3 warm-ups)
#   --cold-runs N        timed cold-lock declenv runs (default: 10)
#   --out DIR            raw results (default: .bench/plan)
#
# bench/gen_profile.py draws the packages from catalog.json into
# OUT/profile/: profile.toml (for declenv), nix-selectors.txt (the nix-env
# arguments: the name, or for a constrained package the exact NAME-VERSION
# its constraint resolves to, as nix-env has no version ranges) and
# expected.tsv (what each should install).
#
# Every tool runs with a private, empty HOME and XDG directories; nix-env
# with NIX_REMOTE=local and no substituters, on a private profile that does
# not exist yet; declenv with --root in a private directory.  The declenv
# cases, each `declenv --root ROOT --file OUT/profile/profile.toml plan`:
#
#   cold lock   profile.lock deleted before each run, so all 300 packages
#               are resolved and the lock written again; declenv's
#               parsed-catalog cache under ROOT is warm (filled by an untimed
#               run first), as is the OS page cache for both tools;
#   locked      profile.lock present and up to date;
#   frozen      the same with --frozen (the lock used as is).
#
# Checks that nix-env's dry run installs ("installing 'NAME-VERSION'" lines
# on stderr) exactly the expected derivations, and that `plan --json` in
# each case decodes and holds one "add" change per package.  Prints a
# markdown table (tool, command, mean wall time, peak RSS, packages,
# speed-up over nix-env) and exits non-zero if a check fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

declenv=target/release/declenv
catalog=.bench/catalog
seed=1
count=300
constrained=30
nix_runs=5
runs=20
cold_runs=10
out=.bench/plan

while (($#)); do
    case $1 in
        --catalog) catalog=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --count) count=$2; shift 2 ;;
        --constrained) constrained=$2; shift 2 ;;
        --nix-runs) nix_runs=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --cold-runs) cold_runs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        -*) echo "plan.sh: unknown option $1" >&2; exit 2 ;;
        *) declenv=$1; shift ;;
    esac
done

die() { echo "plan.sh: $*" >&2; exit 1; }
say() { echo "plan.sh: $*" >&2; }

for tool in nix-env hyperfine python3; do
    command -v "$tool" >/dev/null || die "$tool not found (hyperfine: apt-get install -y hyperfine)"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install -y time)"
[[ -f $catalog/catalog.nix && -f $catalog/catalog.json ]] \
    || die "no catalog in $catalog; run: python3.11 bench/gen_catalog.py --out $catalog"

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- profile ---------------------------------------------------------------
profile_dir=$out/profile
python3 bench/gen_profile.py --catalog "$catalog" --out "$profile_dir" --seed "$seed" \
    --count "$count" --constrained "$constrained"
toml=$profile_dir/profile.toml
lock=$profile_dir/profile.lock
mapfile -t selectors <"$profile_dir/nix-selectors.txt"
((${#selectors[@]} == count)) || die "gen_profile.py wrote ${#selectors[@]} selectors, not $count"

export NIX_REMOTE=local
export NIX_CONFIG=$'sandbox = false\nsubstituters ='
# Private home and XDG directories, as in query.sh; declenv keeps everything
# under --root.
unset DECLENV_ROOT
export HOME=$work/home
export XDG_CACHE_HOME=$work/xdg/cache XDG_DATA_HOME=$work/xdg/data XDG_STATE_HOME=$work/xdg/state
export XDG_CONFIG_HOME=$work/xdg/config
mkdir -p "$HOME" "$XDG_CACHE_HOME" "$XDG_DATA_HOME" "$XDG_STATE_HOME" "$XDG_CONFIG_HOME" \
    "$work/nix-profile"
root=$work/declenv-root
nix_profile=$work/nix-profile/p

have_declenv=0
if [[ ! -x $declenv ]]; then
    say "skipping declenv: $declenv does not exist (cargo build --release)"
elif ! "$declenv" plan --help 2>/dev/null | grep -q -- --frozen; then
    say "skipping declenv: $declenv has no 'plan --frozen' command yet"
else
    have_declenv=1
    # The figures must come from one binary, even if DECLENV_BIN is rebuilt
    # meanwhile: run a copy of it (the table shows DECLENV_BIN).
    declenv_shown=$declenv
    cp "$declenv" "$work/declenv"
    declenv=$work/declenv
    say "declenv: a copy of $declenv_shown, sha256 $(sha256sum "$declenv" | cut -d' ' -f1)"
fi

# Command lines, as shell words (hyperfine -N splits them the same way).
q() {
    local a sep=
    for a; do
        if [[ $a =~ ^[A-Za-z0-9_./=:+-]+$ ]]; then printf '%s%s' "$sep" "$a"
        else printf "%s'%s'" "$sep" "${a//\'/\'\\\'\'}"; fi
        sep=' '
    done
}
nix_cmd=(nix-env -f "$catalog/catalog.nix" -p "$nix_profile" -i --dry-run "${selectors[@]}")
dec_cmd=("$declenv" --root "$root" --file "$toml" plan)
frozen_cmd=("${dec_cmd[@]}" --frozen)
nix_line=$(q "${nix_cmd[@]}")
dec_line=$(q "${dec_cmd[@]}")
frozen_line=$(q "${frozen_cmd[@]}")
# For the table: PROFILE and ROOT are private directories; the selectors are
# in nix-selectors.txt.
nix_show="$(q nix-env -f "$catalog/catalog.nix" -p PROFILE -i --dry-run) \$(cat $profile_dir/nix-selectors.txt)"
dec_show=$(q "${declenv_shown:-$declenv}" --root ROOT --file "$toml" plan)

# peak RSS in KiB of one run of the given command, output discarded
peak_rss() { /usr/bin/time -f %M -o "$work/rss" "$@" >/dev/null 2>&1; tail -n1 "$work/rss"; }
lock_sum() { sha256sum "$lock" | cut -d' ' -f1; }

nix_version=$(nix-env --version | awk '{print $NF}')
say "catalog $catalog: $(du -h "$catalog/catalog.nix" | cut -f1) nix," \
    "$(du -h "$catalog/catalog.json" | cut -f1) json; $count packages" \
    "($constrained constrained), seed $seed"
say "machine: $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB; nix-env $nix_version;" \
    "load: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- packages --------------------------------------------------------------
# nix-env's dry run writes the 300 derivations (.drv) to /nix/store the first
# time; this run and the warm-up leave later runs only checking them.
"${nix_cmd[@]}" 2>"$out/nix-env.txt" >/dev/null || die "nix-env failed; see $out/nix-env.txt"
sed -n "s/^installing '\(.*\)'\$/\1/p" "$out/nix-env.txt" | sort >"$out/nix-env-installs.txt"
nix_packages=$(grep -c . "$out/nix-env-installs.txt" || true)
tail -n +2 "$profile_dir/expected.tsv" | cut -f4 | sort >"$work/expected.txt"
if ! diff -u "$work/expected.txt" "$out/nix-env-installs.txt" >"$out/nix-env-vs-expected.diff"; then
    die "nix-env would install other derivations than gen_profile.py expected;" \
        "see $out/nix-env-vs-expected.diff"
fi
say "nix-env's dry run installs the $nix_packages expected derivations"

dec_packages=
if ((have_declenv)); then
    # declenv plan --json: a top-level "changes" array, on an empty profile one
    # {"kind": "add", "id": ID, "to": {"name", "version", "attr_path", ...}}
    # per package; each must be the derivation expected.tsv names.
    check_plan() {  # FILE -> number of additions; fails on any other content
        python3 - "$1" "$profile_dir/expected.tsv" <<'PY'
import csv, json, sys

path = sys.argv[1]
plan = json.load(open(path))
changes = plan.get("changes") if isinstance(plan, dict) else None
if not isinstance(changes, list):
    sys.exit(f"plan.sh: {path}: no top-level 'changes' array")
kinds = {}
for c in changes:
    kinds[c.get("kind")] = kinds.get(c.get("kind"), 0) + 1
if set(kinds) != {"add"}:
    sys.exit(f"plan.sh: {path}: changes of kinds {kinds}, expected only 'add'")
expected = {r["name"]: r for r in csv.DictReader(open(sys.argv[2]), delimiter="\t")}
got = {c.get("id"): c.get("to") or {} for c in changes}
wrong = [i for i, r in expected.items()
         if (got.get(i, {}).get("name"), got.get(i, {}).get("attr_path"))
         != (r["drv_name"], r["attr"])]
if len(got) != len(changes) or set(got) != set(expected) or wrong:
    sys.exit(f"plan.sh: {path}: {len(changes)} additions; ids missing: "
             f"{sorted(set(expected) - set(got))[:5]}, unexpected: "
             f"{sorted(set(got) - set(expected), key=str)[:5]}, other derivation than "
             f"expected: {wrong[:5]}")
print(len(changes))
PY
    }
    say "declenv: untimed run to fill the catalog cache"
    rm -f "$lock"
    "${dec_cmd[@]}" >"$out/declenv-first.txt" 2>&1 || die "declenv plan failed; see $out/declenv-first.txt"
    [[ -f $lock ]] || die "declenv plan wrote no $lock"
    run_json() {  # CASE ARG... -> OUT/declenv-CASE.json (stderr beside it), checked
        local case=$1; shift
        "$@" --json >"$out/declenv-$case.json" 2>"$out/declenv-$case.stderr" \
            || die "$(q "$@") --json failed; see $out/declenv-$case.stderr"
        check_plan "$out/declenv-$case.json"
    }
    rm -f "$lock"
    dec_cold_packages=$(run_json cold "${dec_cmd[@]}")
    cp "$lock" "$out/profile.lock.cold"
    sum=$(lock_sum)
    dec_locked_packages=$(run_json locked "${dec_cmd[@]}")
    [[ $(lock_sum) == "$sum" ]] || die "declenv plan changed an up-to-date $lock"
    dec_frozen_packages=$(run_json frozen "${frozen_cmd[@]}")
    [[ $(lock_sum) == "$sum" ]] || die "declenv plan --frozen changed $lock"
    "${dec_cmd[@]}" >"$out/declenv.txt" 2>"$out/declenv.stderr"
    say "declenv plans $dec_cold_packages additions (cold lock), $dec_locked_packages (locked)," \
        "$dec_frozen_packages (frozen); held back by a constraint:" \
        "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["held_back"]))' \
            "$out/declenv-cold.json" 2>/dev/null || echo '?')"
fi

# ---- peak RSS --------------------------------------------------------------
nix_rss=$(peak_rss "${nix_cmd[@]}")
if ((have_declenv)); then
    rm -f "$lock"
    dec_cold_rss=$(peak_rss "${dec_cmd[@]}")
    dec_locked_rss=$(peak_rss "${dec_cmd[@]}")
    dec_frozen_rss=$(peak_rss "${frozen_cmd[@]}")
fi

# ---- wall time -------------------------------------------------------------
hf=(hyperfine -N --style basic)
say "timing nix-env ($nix_runs runs)"
"${hf[@]}" --warmup 1 --runs "$nix_runs" --export-json "$out/nix-env.json" \
    -n nix-env "$nix_line" >&2
if ((have_declenv)); then
    say "timing declenv, cold lock ($cold_runs runs)"
    "${hf[@]}" --runs "$cold_runs" --prepare "$(q rm -f "$lock")" \
        --export-json "$out/declenv-cold-time.json" -n "declenv (cold lock)" "$dec_line" >&2
    say "timing declenv, locked ($runs runs)"
    sum=$(lock_sum)
    "${hf[@]}" --warmup 3 --runs "$runs" --export-json "$out/declenv-locked-time.json" \
        -n "declenv (locked)" "$dec_line" >&2
    say "timing declenv, locked --frozen ($runs runs)"
    "${hf[@]}" --warmup 3 --runs "$runs" --export-json "$out/declenv-frozen-time.json" \
        -n "declenv (frozen)" "$frozen_line" >&2
    [[ $(lock_sum) == "$sum" ]] || die "the lock changed during the locked runs"
fi

# ---- table -----------------------------------------------------------------
export out nix_show dec_show nix_version nix_packages nix_rss have_declenv count
export dec_cold_packages=${dec_cold_packages:-} dec_locked_packages=${dec_locked_packages:-}
export dec_frozen_packages=${dec_frozen_packages:-} dec_cold_rss=${dec_cold_rss:-}
export dec_locked_rss=${dec_locked_rss:-} dec_frozen_rss=${dec_frozen_rss:-}
python3 - <<'PY' | tee "$out/results.md"
import json, os

e = os.environ
out = e["out"]

def mean(name):
    r = json.load(open(f"{out}/{name}.json"))["results"][0]
    return r["mean"], r["stddev"] or 0.0

def fmt_time(m, s):
    if m >= 1:
        return f"{m:.3f} s ± {s:.3f}"
    return f"{m * 1000:.1f} ms ± {s * 1000:.1f}"

def fmt_rss(kib):
    return f"{int(kib) / 1024:.0f} MiB"

nix_mean, nix_sd = mean("nix-env")
rows = [(f"nix-env {e['nix_version']}, `-i --dry-run`", e["nix_show"], nix_mean, nix_sd,
         e["nix_rss"], e["nix_packages"])]
if e["have_declenv"] == "1":
    for label, name, line, rss, n in (
        ("declenv, cold lock", "declenv-cold-time", e["dec_show"], e["dec_cold_rss"],
         e["dec_cold_packages"]),
        ("declenv, locked", "declenv-locked-time", e["dec_show"], e["dec_locked_rss"],
         e["dec_locked_packages"]),
        ("declenv, locked, `--frozen`", "declenv-frozen-time", e["dec_show"] + " --frozen",
         e["dec_frozen_rss"], e["dec_frozen_packages"]),
    ):
        m, s = mean(name)
        rows.append((label, line, m, s, rss, n))

print("| tool | command | mean wall time | peak RSS | packages | speed-up |")
print("|---|---|---|---|---|---|")
for label, cmd, m, s, rss, n in rows:
    print(f"| {label} | `{cmd}` | {fmt_time(m, s)} | {fmt_rss(rss)} | {n} "
          f"| {nix_mean / m:.1f}× |")
PY

if ((have_declenv)); then
    for n in "$dec_cold_packages" "$dec_locked_packages" "$dec_frozen_packages"; do
        [[ $n == "$nix_packages" ]] \
            || die "MISMATCH: nix-env installs $nix_packages packages, declenv plans $n additions"
    done
    say "both tools install the same $nix_packages packages"
fi
say "raw results in $out/"
