#!/usr/bin/env bash
# Catalog query benchmark: `nix-env -qa SELECTOR` versus `declenv search`
# over the same generated catalog (see bench/gen_catalog.py).
#
# Usage: bench/query.sh [options] [DECLENV_BIN]
#
#   DECLENV_BIN          declenv binary (default: target/release/declenv);
#                        skipped with a message if it lacks `search`
#   --catalog DIR        catalog directory (default: .bench/catalog)
#   --selector RE        nix-env selector (default: '.*zip.*')
#   --nix-runs N         timed nix-env runs (default: 5, after 1 warm-up)
#   --runs N             timed warm declenv runs (default: 20, after 3 warm-ups)
#   --cold-runs N        timed cold-cache declenv runs (default: 10)
#   --cache-dir DIR      extra directory to empty before each cold run, if
#                        declenv keeps its cache outside the private XDG dirs
#   --out DIR            raw results (default: .bench/query)
#
# Every tool runs with a private, empty HOME and XDG directories; nix-env
# with NIX_REMOTE=local and no substituters.  "Cold" means declenv's own
# parsed-catalog cache is empty (the OS page cache stays warm for both
# tools: the catalog files were just read).
#
# Prints a markdown table (tool, command, mean wall time, peak RSS,
# matches, speed-up over nix-env) and exits non-zero if the match counts
# differ.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

declenv=target/release/declenv
catalog=.bench/catalog
selector='.*zip.*'
nix_runs=5
runs=20
cold_runs=10
out=.bench/query
extra_cache=

while (($#)); do
    case $1 in
        --catalog) catalog=$2; shift 2 ;;
        --selector) selector=$2; shift 2 ;;
        --nix-runs) nix_runs=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --cold-runs) cold_runs=$2; shift 2 ;;
        --cache-dir) extra_cache=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        -*) echo "query.sh: unknown option $1" >&2; exit 2 ;;
        *) declenv=$1; shift ;;
    esac
done

die() { echo "query.sh: $*" >&2; exit 1; }

for tool in nix-env hyperfine python3; do
    command -v "$tool" >/dev/null || die "$tool not found (hyperfine: apt-get install -y hyperfine)"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install -y time)"
[[ -f $catalog/catalog.nix && -f $catalog/catalog.json ]] \
    || die "no catalog in $catalog; run: python3.11 bench/gen_catalog.py --out $catalog"

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

export NIX_REMOTE=local
export NIX_CONFIG=$'sandbox = false\nsubstituters ='
# Private home and XDG directories: declenv keeps its catalog cache under
# $XDG_DATA_HOME/declenv unless DECLENV_ROOT says otherwise, and a cold run
# empties all of these.  A DECLENV_ROOT from the caller's environment is
# dropped so that its cache is neither used nor wiped.
unset DECLENV_ROOT
export HOME=$work/home
export XDG_CACHE_HOME=$work/xdg/cache XDG_DATA_HOME=$work/xdg/data XDG_STATE_HOME=$work/xdg/state
state_dirs=("$work/xdg" "$HOME/.cache" "$HOME/.local")
[[ -n $extra_cache ]] && state_dirs+=("$extra_cache")
mkdir -p "$HOME" "$XDG_CACHE_HOME" "$XDG_DATA_HOME" "$XDG_STATE_HOME"

have_declenv=0
if [[ ! -x $declenv ]]; then
    echo "query.sh: skipping declenv: $declenv does not exist (cargo build --release)" >&2
elif ! "$declenv" search --help 2>/dev/null | grep -q -- --selector; then
    echo "query.sh: skipping declenv: $declenv has no 'search' command yet" >&2
else
    have_declenv=1
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
nix_cmd=(nix-env -f "$catalog/catalog.nix" -qa "$selector")
dec_cmd=("$declenv" search --source "$catalog/catalog.json" --selector "$selector")
nix_line=$(q "${nix_cmd[@]}")
dec_line=$(q "${dec_cmd[@]}")
wipe_line="rm -rf $(q "${state_dirs[@]}") ; mkdir -p $(q "$XDG_CACHE_HOME" "$XDG_DATA_HOME" "$XDG_STATE_HOME")"
wipe_cache() { bash -c "$wipe_line"; }

# peak RSS in KiB of one run of the given command, output discarded
peak_rss() { /usr/bin/time -f %M -o "$work/rss" "$@" >/dev/null; tail -n1 "$work/rss"; }

nix_version=$(nix-env --version | awk '{print $NF}')
echo "query.sh: catalog $catalog: $(du -h "$catalog/catalog.nix" | cut -f1) nix," \
     "$(du -h "$catalog/catalog.json" | cut -f1) json; selector '$selector'" >&2
echo "query.sh: machine: $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB; nix-env $nix_version" >&2

# ---- matches ---------------------------------------------------------------
"${nix_cmd[@]}" >"$out/nix-env.txt"
nix_matches=$(grep -c . "$out/nix-env.txt" || true)
dec_matches=
if ((have_declenv)); then
    wipe_cache
    "${dec_cmd[@]}" >"$out/declenv.txt"
    dec_matches=$(grep -c . "$out/declenv.txt" || true)
    if [[ -z $(find "${state_dirs[@]}" -type f -print -quit 2>/dev/null) ]]; then
        echo "query.sh: warning: declenv wrote no cache file under \$XDG_DATA_HOME," \
             "\$XDG_CACHE_HOME or \$HOME; if its cache lives elsewhere, pass --cache-dir DIR," \
             "or cold and warm runs measure the same thing" >&2
    fi
fi

# ---- peak RSS --------------------------------------------------------------
nix_rss=$(peak_rss "${nix_cmd[@]}")
if ((have_declenv)); then
    wipe_cache
    dec_cold_rss=$(peak_rss "${dec_cmd[@]}")
    dec_warm_rss=$(peak_rss "${dec_cmd[@]}")
fi

# ---- wall time -------------------------------------------------------------
hf=(hyperfine -N --style basic)
echo "query.sh: timing nix-env ($nix_runs runs)" >&2
"${hf[@]}" --warmup 1 --runs "$nix_runs" --export-json "$out/nix-env.json" \
    -n nix-env "$nix_line" >&2
if ((have_declenv)); then
    echo "query.sh: timing declenv, cold cache ($cold_runs runs)" >&2
    "${hf[@]}" --runs "$cold_runs" --prepare "bash -c $(q "$wipe_line")" \
        --export-json "$out/declenv-cold.json" -n "declenv (cold)" "$dec_line" >&2
    echo "query.sh: timing declenv, warm cache ($runs runs)" >&2
    "${dec_cmd[@]}" >/dev/null
    "${hf[@]}" --warmup 3 --runs "$runs" --export-json "$out/declenv-warm.json" \
        -n "declenv (warm)" "$dec_line" >&2
fi

# ---- table -----------------------------------------------------------------
export out nix_line dec_line nix_version nix_matches dec_matches nix_rss have_declenv
export dec_cold_rss=${dec_cold_rss:-} dec_warm_rss=${dec_warm_rss:-}
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
rows = [(f"nix-env {e['nix_version']}", e["nix_line"].strip(), nix_mean, nix_sd,
         e["nix_rss"], e["nix_matches"])]
if e["have_declenv"] == "1":
    for label, name, rss in (("declenv, cold cache", "declenv-cold", e["dec_cold_rss"]),
                             ("declenv, warm cache", "declenv-warm", e["dec_warm_rss"])):
        m, s = mean(name)
        rows.append((label, e["dec_line"].strip(), m, s, rss, e["dec_matches"]))

print("| tool | command | mean wall time | peak RSS | matches | speed-up |")
print("|---|---|---|---|---|---|")
for label, cmd, m, s, rss, n in rows:
    print(f"| {label} | `{cmd}` | {fmt_time(m, s)} | {fmt_rss(rss)} | {n} "
          f"| {nix_mean / m:.1f}× |")
PY

if ((have_declenv)); then
    if [[ $nix_matches != "$dec_matches" ]]; then
        echo "query.sh: MISMATCH: nix-env printed $nix_matches matches, declenv $dec_matches" >&2
        exit 1
    fi
    # Informational: how many of nix-env's names appear as a field of declenv's rows.
    found=$(awk 'NR==FNR { for (i = 1; i <= NF; i++) seen[$i] = 1; next } ($1 in seen) { n++ }
                 END { print n + 0 }' "$out/declenv.txt" "$out/nix-env.txt")
    echo "query.sh: match counts agree ($nix_matches); $found of nix-env's names appear in declenv's rows" >&2
fi
echo "query.sh: raw results in $out/" >&2
