#!/usr/bin/env bash
# Runs every benchmark; each prints its figures and saves JSON under target/cascade-bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cascade_setup
bundle_version=$(sha256sum scripts/train.py | cut -c1-12)
export CASCADE_TEST_BUNDLE=${CASCADE_TEST_BUNDLE:-$CASCADE_HOME/bundles/test-$bundle_version}
[ -f "$CASCADE_TEST_BUNDLE/metadata.json" ] || { echo "run scripts/test.sh first (it trains the bundle)" >&2; exit 1; }
cargo build --release -p cascade-origin --bin cascade
CASCADE_BIN=$CARGO_TARGET_DIR/release/cascade cargo bench -p cascade-e2e
ls -l target/cascade-bench/
