#!/usr/bin/env bash
# Runs every benchmark (or the ones named: scripts/bench.sh retrieval scale); each prints its
# figures and saves JSON under target/cascade-bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cascade_setup
bundle_version=$(cat scripts/train.py scripts/recdata.py | sha256sum | cut -c1-12)
export CASCADE_TEST_BUNDLE=${CASCADE_TEST_BUNDLE:-$CASCADE_HOME/bundles/test-$bundle_version}
[ -f "$CASCADE_TEST_BUNDLE/metadata.json" ] || { echo "run scripts/test.sh first (it trains the bundle)" >&2; exit 1; }
cargo build --release -p cascade-origin --bin cascade
cascade=$CARGO_TARGET_DIR/release/cascade
bundles=$CASCADE_HOME/bundles
train_version=$(cat scripts/train.py scripts/recdata.py | sha256sum | cut -c1-12)

# The capacity tiers' data: a dim-128 model trained on small generated data, then the Small tier
# (1M users, 100K items, 128 dims) generated with that model, once per version of the generator.
template=$bundles/template-d128-$train_version
if [ ! -f "$template/metadata.json" ]; then
  python scripts/train.py --out "$template.tmp" --dim 128
  rm -rf "$template" && mv "$template.tmp" "$template"
fi
small_spec="users=1000000,items=100000,dim=128"
gen_version=$(cat origin/src/generate.rs origin/src/commands/load.rs | sha256sum | cut -c1-12)
export CASCADE_SMALL_BUNDLE=$bundles/small-$gen_version-$train_version
if [ ! -f "$CASCADE_SMALL_BUNDLE/metadata.json" ]; then
  rm -rf "$CASCADE_SMALL_BUNDLE.tmp"
  "$cascade" load --generate "$small_spec" --out "$CASCADE_SMALL_BUNDLE.tmp" --model-from "$template"
  rm -rf "$CASCADE_SMALL_BUNDLE" && mv "$CASCADE_SMALL_BUNDLE.tmp" "$CASCADE_SMALL_BUNDLE"
fi
export CASCADE_SMALL_SPEC=$small_spec
# The Medium tier (10M users, 1M items), only when asked (about 10 GB of disk): generated with the
# same model, its FAISS index built once (IVF1024,Flat: FAISS trains it on its default sample of
# 256 points per list), with the build's time and peak memory kept beside it.
if [ "${CASCADE_BENCH_MEDIUM:-0}" = 1 ]; then
  export CASCADE_MEDIUM_BUNDLE=$bundles/medium-$gen_version-$train_version
  if [ ! -f "$CASCADE_MEDIUM_BUNDLE/items.faiss" ]; then
    rm -rf "$CASCADE_MEDIUM_BUNDLE.tmp" && mkdir -p "$CASCADE_MEDIUM_BUNDLE.tmp"
    /usr/bin/time -f "%e %M" -o "$bundles/medium-generate.time" \
      "$cascade" load --generate "users=10000000,items=1000000,dim=128" --out "$CASCADE_MEDIUM_BUNDLE.tmp" --model-from "$template"
    mv "$bundles/medium-generate.time" "$CASCADE_MEDIUM_BUNDLE.tmp/generate.time"
    /usr/bin/time -f "%e %M" -o "$CASCADE_MEDIUM_BUNDLE.tmp/index-build.time" \
      "$cascade" index build --bundle "$CASCADE_MEDIUM_BUNDLE.tmp" --factory "${CASCADE_MEDIUM_FACTORY:-IVF1024,Flat}"
    rm -rf "$CASCADE_MEDIUM_BUNDLE" && mv "$CASCADE_MEDIUM_BUNDLE.tmp" "$CASCADE_MEDIUM_BUNDLE"
  fi
fi
# MovieLens (real items) when the data is beside the checkout.
movielens=${CASCADE_MOVIELENS:-../shared/data/ml-latest-small}
if [ -f "$movielens/ratings.csv" ]; then
  export CASCADE_MOVIELENS_BUNDLE=$bundles/movielens-$train_version
  if [ ! -f "$CASCADE_MOVIELENS_BUNDLE/metadata.json" ]; then
    python scripts/train.py --out "$CASCADE_MOVIELENS_BUNDLE.tmp" --movielens "$movielens"
    rm -rf "$CASCADE_MOVIELENS_BUNDLE" && mv "$CASCADE_MOVIELENS_BUNDLE.tmp" "$CASCADE_MOVIELENS_BUNDLE"
  fi
  # The model before the sequence query (scripts/train.py at f441d45), for model_cost's side-by-side.
  previous=f441d45
  export CASCADE_PREVIOUS_BUNDLE=$bundles/movielens-previous-$previous
  if [ ! -f "$CASCADE_PREVIOUS_BUNDLE/metadata.json" ] && git cat-file -e "$previous:scripts/train.py" 2>/dev/null; then
    git show "$previous:scripts/train.py" >"$bundles/train-$previous.py"
    python "$bundles/train-$previous.py" --out "$CASCADE_PREVIOUS_BUNDLE.tmp" --movielens "$movielens"
    rm -rf "$CASCADE_PREVIOUS_BUNDLE" && mv "$CASCADE_PREVIOUS_BUNDLE.tmp" "$CASCADE_PREVIOUS_BUNDLE"
  fi
else
  # A clone elsewhere than beside ../shared (e.g. a fresh clone in /tmp) has no MovieLens.
  echo "bench: no MovieLens at $movielens (CASCADE_MOVIELENS=<path of ml-latest-small> names it): model_cost and retrieval's MovieLens part write that they did not run" >&2
fi
# `scripts/bench.sh` runs every benchmark; `scripts/bench.sh retrieval edge` runs those.
if [ $# -gt 0 ]; then
  for name in "$@"; do CASCADE_BIN=$cascade cargo bench -p cascade-e2e --bench "$name"; done
else
  CASCADE_BIN=$cascade cargo bench -p cascade-e2e
fi
ls -l target/cascade-bench/
