#!/usr/bin/env bash
# User-environment build benchmark: declenv's builder versus nix-env's
# (`builtin:buildenv`) on the same 300 package trees, with `cp -rs` of the
# same trees as a floor.
#
# Usage: bench/env_build.sh [options] [DECLENV_BIN]
#
#   DECLENV_BIN       declenv binary (default: target/release/declenv)
#   --trees DIR       package trees (default: .bench/env/trees); made with
#                     bench/gen_env_trees.py when missing or made from another seed
#   --seed N          seed for gen_env_trees.py (default: 1)
#   --work DIR        both stores and the profiles (default: .bench/env/work);
#                     kept between invocations while the trees are the same
#   --fresh           empty --work first (re-adds every tree to both stores)
#   --runs N          timed rounds (default: 5); each round runs every tool once
#   --warmup N        untimed rounds first (default: 1)
#   --settle S        seconds to wait after preparing each run (default: 0);
#                     see "Filesystems"
#   --out DIR         raw results (default: .bench/env/result)
#
# Setup (once per set of trees): every tree is added to a declenv store
# (`declenv --root WORK/declenv-root store add`; links under its
# gcroots/bench/ keep the packages alive) and to a private Nix store
# (`nix-store --add`, with NIX_STORE_DIR, NIX_STATE_DIR and NIX_LOG_DIR under
# WORK/nix, NIX_REMOTE=local, a private HOME, and
# NIX_CONFIG=$'sandbox = false\nsubstituters =\nbuild-users-group =').
# Without build users the builder runs as root: Nix kills every process of a
# build user before it uses one, and Nix processes of other private stores on
# the machine pick the same `nixbld1`, so their builds kill each other.
#
# Every timed run is a real build on a fresh profile: before it, the profile
# directory is removed and the previous environment and its manifest (and for
# Nix the derivation) are deleted from the store (`declenv gc`;
# `nix-store --delete`), so neither tool can reuse an environment or a
# generation.  The three tools run interleaved, in an order rotated every
# round, so that load from other processes falls on all of them alike.  Wall
# time is measured around `/usr/bin/time`, which also gives the peak RSS of
# each run.
#
# Filesystems: both builders spend most of their time creating symlinks, so
# the filesystem under --work decides the figures.  On ext4 *without* a
# journal (this machine's root filesystem) the inode allocator skips every
# free inode deleted in the last minute (six while its inode table block is
# dirty), reading each one's record, so creating inodes after mass deletions
# (the previous run's environment, other processes' temporary files) costs
# 10-50 times more, by an amount that changes from run to run.  Use a
# journaled ext4 (a loop-mounted image, see BENCHMARKS.md) or a tmpfs for
# comparable figures; --settle S waits S seconds (after a `sync`) between
# preparing and timing each run.
#
# After the first timed round the declenv and nix-env environments are
# compared entry by entry (bench/env_compare.py) and the script fails if they
# differ.  Prints a markdown table and keeps it, with every run's figures
# (runs.tsv), in --out.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

declenv=target/release/declenv
trees=.bench/env/trees
seed=1
work=.bench/env/work
out=.bench/env/result
runs=5
warmup=1
settle=
fresh=0

while (($#)); do
    case $1 in
        --trees) trees=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --fresh) fresh=1; shift ;;
        --runs) runs=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --settle) settle=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        -*) echo "env_build.sh: unknown option $1" >&2; exit 2 ;;
        *) declenv=$1; shift ;;
    esac
done

die() { echo "env_build.sh: $*" >&2; exit 1; }
say() { echo "env_build.sh: $*" >&2; }

for tool in nix-env nix-store python3 cp; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install -y time)"
[[ -x $declenv ]] || die "$declenv does not exist (cargo build --release)"
"$declenv" debug build-environment --help >/dev/null 2>&1 \
    || die "$declenv has no 'debug build-environment' command"
declenv=$(realpath "$declenv")
settle=${settle:-0}

# ---- trees -----------------------------------------------------------------
stats_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
if [[ ! -f $trees/trees.json ]] || [[ $(stats_field "$trees/trees.json" seed) != "$seed" ]]; then
    say "generating trees in $trees (seed $seed)"
    python3 bench/gen_env_trees.py --out "$trees" --seed "$seed" >/dev/null
fi
trees=$(realpath "$trees")
digest=$(stats_field "$trees/trees.json" digest)
mapfile -t names <"$trees/packages.txt"

# ---- stores ----------------------------------------------------------------
mkdir -p "$work" "$out"
work=$(realpath "$work")
out=$(realpath "$out")
droot=$work/declenv-root
dprofile=$droot/nix/var/nix/profiles/bench/p
nprofile=$work/nix-profiles/p
floor=$work/cp

unset DECLENV_ROOT NIX_PATH
export NIX_REMOTE=local
export NIX_CONFIG=$'sandbox = false\nsubstituters =\nbuild-users-group ='
export HOME=$work/home
export NIX_STORE_DIR=$work/nix/store NIX_STATE_DIR=$work/nix/var/nix NIX_LOG_DIR=$work/nix/var/log/nix

if ((fresh)) || [[ $(cat "$work/stamp" 2>/dev/null) != "$digest" ]]; then
    say "adding ${#names[@]} trees to both stores under $work"
    rm -rf "$work"
    mkdir -p "$work" "$HOME"
    sources=("${names[@]/#/$trees/}")
    start=$EPOCHREALTIME
    "$declenv" --root "$droot" store add "${sources[@]}" >"$work/declenv-paths.txt"
    middle=$EPOCHREALTIME
    nix-store --add "${sources[@]}" >"$work/nix-paths.txt"
    end=$EPOCHREALTIME
    awk -v a="$start" -v b="$middle" -v c="$end" \
        'BEGIN { printf "declenv store add: %.1f s\nnix-store --add: %.1f s\n", b - a, c - b }' \
        | tee "$work/setup.txt" >&2
    mkdir -p "$droot/nix/var/nix/gcroots/bench"
    index=0
    while read -r path; do
        ln -s "$path" "$droot/nix/var/nix/gcroots/bench/$index"
        index=$((index + 1))
    done <"$work/declenv-paths.txt"
    echo "$digest" >"$work/stamp"
fi
mapfile -t dpaths <"$work/declenv-paths.txt"
mapfile -t npaths <"$work/nix-paths.txt"
((${#dpaths[@]} == ${#names[@]} && ${#npaths[@]} == ${#names[@]})) \
    || die "$work holds a partial setup; run again with --fresh"
mkdir -p "$HOME"

# ---- tools -----------------------------------------------------------------
prepare_declenv() {
    rm -rf "$(dirname "$dprofile")"
    "$declenv" --root "$droot" gc >/dev/null 2>&1 || die "declenv gc failed"
    mkdir -p "$(dirname "$dprofile")"
    if compgen -G "$droot/nix/store/*-user-environment" >/dev/null; then
        die "declenv gc left an environment in the store"
    fi
}
prepare_nix() {
    rm -rf "$(dirname "$nprofile")"
    mkdir -p "$(dirname "$nprofile")"
    local paths=()
    mapfile -t paths < <(compgen -G "$NIX_STORE_DIR/*-user-environment*"
                         compgen -G "$NIX_STORE_DIR/*-env-manifest.nix")
    if ((${#paths[@]})); then
        nix-store --delete "${paths[@]}" >/dev/null 2>&1 || die "cannot delete ${paths[*]}"
    fi
}
prepare_cp() {
    rm -rf "$floor"
    mkdir -p "$floor"
}
declenv_command=("$declenv" --root "$droot" --profile "$dprofile" debug build-environment "${dpaths[@]}")
nix_command=(nix-env -p "$nprofile" -i "${npaths[@]}")
cp_command=(cp -rs "${dpaths[@]/%//.}" "$floor/")

declare -A label=(
    [declenv]="declenv debug build-environment"
    [nix]="nix-env -i ($(nix-env --version | awk '{print $NF}'))"
    [cp]="cp -rs (floor)"
)
tools=(declenv nix cp)

# ---- runs ------------------------------------------------------------------
printf 'round\ttool\twall_s\tmax_rss_kib\tuser_s\tsys_s\n' >"$out/runs.tsv"
filesystem=$(df --output=fstype "$work" | tail -n1)
if [[ $filesystem == ext4 ]]; then
    # Whether the ext4 has a journal decides how much each sync costs (see "Filesystems"):
    # the kernel lists the journals it runs under /proc/fs/jbd2.
    device=$(findmnt -n -o SOURCE --target "$work" 2>/dev/null || true)
    device=$(basename "$(realpath "$device" 2>/dev/null || echo "$device")")
    if [[ -d /sys/fs/ext4/$device ]]; then
        if compgen -G "/proc/fs/jbd2/$device-*" >/dev/null; then
            filesystem="ext4 with a journal"
        else
            filesystem="ext4 without a journal"
        fi
    fi
fi
load=$(cut -d' ' -f1-3 /proc/loadavg)
say "$warmup + $runs rounds on $filesystem, ${settle} s settling before each run;" \
    "load: $load"
for ((round = 1 - warmup; round <= runs; round++)); do
    for ((i = 0; i < ${#tools[@]}; i++)); do
        tool=${tools[(i + round + warmup - 1) % ${#tools[@]}]}
        "prepare_$tool"
        sync
        sleep "$settle"
        declare -n command=${tool}_command
        start=$EPOCHREALTIME
        /usr/bin/time -f '%M\t%U\t%S' -o "$out/time.txt" "${command[@]}" \
            >"$out/$tool.stdout" 2>"$out/$tool.stderr" \
            || die "$tool failed in round $round; see $out/$tool.stderr"
        end=$EPOCHREALTIME
        wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
        if ((round >= 1)); then
            printf '%s\t%s\t%s\t%s\n' "$round" "$tool" "$wall" "$(tail -n1 "$out/time.txt")" \
                >>"$out/runs.tsv"
            say "round $round: $tool $wall s"
        else
            say "warm-up: $tool $wall s"
        fi
    done
    if ((round == 1)); then
        [[ $(cat "$out/declenv.stdout") == 1 ]] || die "declenv did not make generation 1"
        python3 "$repo/bench/env_compare.py" "$dprofile" "$nprofile" >"$out/compare.txt" \
            || die "declenv and nix-env built different environments"
        say "environments agree: $(cat "$out/compare.txt")"
    fi
done
rm -f "$out/time.txt"

# ---- table -----------------------------------------------------------------
export out
export label_declenv=${label[declenv]} label_nix=${label[nix]} label_cp=${label[cp]}
export trees_files=$(stats_field "$trees/trees.json" files)
export trees_dirs=$(stats_field "$trees/trees.json" directories)
export trees_links=$(stats_field "$trees/trees.json" symlinks)
export environment=$(cat "$out/compare.txt")
export settle runs filesystem load packages=${#names[@]}
export load_after=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - <<'PY' | tee "$out/results.md"
import csv, os, statistics

e = os.environ
rows = list(csv.DictReader(open(f"{e['out']}/runs.tsv"), delimiter="\t"))
by_tool = {}
for row in rows:
    by_tool.setdefault(row["tool"], []).append(row)

def summary(tool):
    walls = [float(row["wall_s"]) for row in by_tool[tool]]
    return {
        "mean": statistics.mean(walls),
        "sd": statistics.stdev(walls) if len(walls) > 1 else 0.0,
        "min": min(walls),
        "median": statistics.median(walls),
        "rss": max(int(row["max_rss_kib"]) for row in by_tool[tool]),
        "cpu": statistics.mean(float(row["user_s"]) + float(row["sys_s"]) for row in by_tool[tool]),
    }

stats = {tool: summary(tool) for tool in by_tool}
nix = stats["nix"]["mean"]
print(f"{e['packages']} packages: {e['trees_files']} files, {e['trees_dirs']} directories and "
      f"{e['trees_links']} symlinks; environment: {e['environment']}; {e['runs']} runs each on "
      f"{e['filesystem']}, {e['settle']} s settling before each run; load average "
      f"{e['load']} before, {e['load_after']} after")
print()
print("| tool | mean wall time | min | median | CPU (user + sys) | peak RSS | nix-env time / this |")
print("|---|---|---|---|---|---|---|")
for tool in ("declenv", "nix", "cp"):
    s = stats[tool]
    print(f"| {e['label_' + tool]} | {s['mean']:.3f} s ± {s['sd']:.3f} | {s['min']:.3f} s "
          f"| {s['median']:.3f} s | {s['cpu']:.2f} s | {s['rss'] / 1024:.1f} MiB "
          f"| {nix / s['mean']:.2f}× |")
PY
say "raw results in $out/"
