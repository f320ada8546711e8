#!/usr/bin/env bash
# Regenerates the generated seeds (`gen-*`) of the corpora under tests/fuzz/corpus/TARGET/ from
# the demo channel and declenv's own outputs (a plan, a lockfile, a manifest, generation
# metadata, a packed catalog cache) and the NAR seeds (make_nar_seeds.py); the other seeds are
# written by hand. Run after `cargo build`; the files are committed, so the fuzz test
# (tests/fuzz.rs) needs neither this script nor a build of its own.
set -euo pipefail
cd "$(dirname "$0")/../.."
declenv="$PWD/target/debug/declenv"
corpus="$PWD/tests/fuzz/corpus"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

rm -f "$corpus"/*/gen-*
mkdir -p "$corpus"/{spec,lockfile,catalog,channel,plan,manifest,args,nar,packed,metadata}

# The example spec and lockfile, both channels' metadata and a manifest nix-env wrote.
cp examples/profile.toml "$corpus/spec/gen-example.toml"
cp examples/profile.lock "$corpus/lockfile/gen-example.lock"
cp examples/channel/channel.toml "$corpus/channel/gen-demo.toml"
cp tests/fixtures/compat/channel/channel.toml "$corpus/channel/gen-compat.toml"
cp tests/fixtures/adopt/nix-env-manifest.nix "$corpus/manifest/gen-nix-env.nix"

# A real cycle: plan, lockfile, manifest, generation metadata, packed catalog cache.
mkdir -p "$work/dot"
cp -r examples/channel "$work/dot/channel"
cp examples/profile.toml "$work/dot/profile.toml"
run() { "$declenv" --root "$work/root" --file "$work/dot/profile.toml" "$@"; }
run plan -o "$work/plan.json" >/dev/null
cp "$work/plan.json" "$corpus/plan/gen-example.json"
run apply -y >/dev/null 2>&1
cp "$work/dot/profile.lock" "$corpus/lockfile/gen-applied.lock"
cp "$(readlink -f "$work/root/nix/var/nix/profiles/default")/manifest.nix" "$corpus/manifest/gen-declenv.nix"
cp "$(find "$work/root/nix/var/declenv/generations" -name '*.json' | head -1)" "$corpus/metadata/gen-generation.json"
"$declenv" --root "$work/root" search --source tests/fuzz/corpus/catalog/sample.json >/dev/null
cp "$(find "$work/root/nix/var/declenv/cache" -type f -name '*.packed')" "$corpus/packed/gen-sample.packed"
run env -iA demo.fortune-mod >/dev/null 2>&1
cp "$work/dot/profile.toml" "$corpus/spec/gen-after-env-install.toml"

# NARs: well-formed and malformed archives, written by make_nar_seeds.py.
rm -f "$corpus"/nar/*.nar
python3 tests/fuzz/make_nar_seeds.py "$corpus/nar"
echo "$(find "$corpus" -type f | wc -l) seeds under tests/fuzz/corpus"
