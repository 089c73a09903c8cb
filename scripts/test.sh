#!/usr/bin/env bash
# Runs every Cascade test: the README's test command.
#
#   scripts/test.sh
#
# Installs what is missing (scripts/setup.sh), trains the test bundle once per version of
# scripts/train.py (kept under $CASCADE_HOME/bundles), builds the `cascade` binary, then runs:
#   1. the workspace's unit and integration tests (shared, edge, origin),
#   2. shared's golden vectors on wasm32 under Node (wasm-bindgen-test),
#   3. the end-to-end test (two Redis shards, the origin, the Worker under wrangler dev), the
#      fault suite's short run among them (tests/e2e/faults.rs),
#   4. the fuzz targets' corpus and a short generated run, the quality harness's smoke run (Cascade
#      must beat every baseline on ml-100k), and a 15 s soak,
#   5. `wrangler deploy --dry-run`, printing the Worker bundle's gzip size, and the same for the
#      staging and production environments (their rate-limit bindings present).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cascade_setup

step() { printf '\n\033[1;32m==> %s\033[0m\n' "$*" >&2; }

bundle_version=$(cat scripts/train.py scripts/recdata.py | sha256sum | cut -c1-12)
export CASCADE_TEST_BUNDLE=$CASCADE_HOME/bundles/test-$bundle_version
if [ ! -f "$CASCADE_TEST_BUNDLE/metadata.json" ]; then
  step "training the test bundle into $CASCADE_TEST_BUNDLE"
  python scripts/train.py --out "$CASCADE_TEST_BUNDLE.tmp" --users 1000 --items 800 --epochs 10 --ranker-epochs 4
  rm -rf "$CASCADE_TEST_BUNDLE" && mv "$CASCADE_TEST_BUNDLE.tmp" "$CASCADE_TEST_BUNDLE"
fi

step "cargo build (cascade binary)"
cargo build -p cascade-origin --bin cascade

step "OpenAPI: docs/openapi.json and docs/edge-openapi.json are valid OpenAPI 3.1 (the router tests check they are current)"
python -m openapi_spec_validator docs/openapi.json docs/edge-openapi.json

step "Prometheus: deploy/prometheus's config and alert rules are valid, the alerts fire on their test series, the dashboard's console page is complete"
promtool check config deploy/prometheus/prometheus.yml
promtool test rules deploy/prometheus/alerts_test.yml
# The dashboard as a Prometheus console page: one graph per panel, every query carried over.
python3 - <<'PY'
import json, subprocess
dashboard = json.load(open("deploy/grafana/dashboards/cascade.json"))
page = subprocess.run(["python3", "scripts/dashboard_console.py"], check=True, capture_output=True, text=True).stdout
panels = [p for p in dashboard["panels"] if p.get("targets")]
assert page.count("new PromConsole.Graph(") == len(panels), "one console graph per dashboard panel"
for panel in panels:
    for target in panel["targets"]:
        assert json.dumps(target["expr"]) in page, f"{panel['title']}: {target['expr']} missing from the console"
print(f"dashboard console: {len(panels)} panels, every query")
PY

step "Kubernetes: deploy/k8s validates against the Kubernetes 1.30 schemas (strict), and its cascade.toml loads"
kubernetes-validate --quiet --strict -k 1.30.0 deploy/k8s/origin.yaml deploy/k8s/precompute.yaml deploy/k8s/redis-shards.yaml
python - <<'PY' >"$CARGO_TARGET_DIR/k8s-cascade.toml"
import yaml
print(next(yaml.safe_load_all(open("deploy/k8s/origin.yaml")))["data"]["cascade.toml"])
PY
CASCADE_SECRET=k8s-check-secret-0123456789 "$CARGO_TARGET_DIR/debug/cascade" config check "$CARGO_TARGET_DIR/k8s-cascade.toml"

step "cargo test (workspace: unit, integration, end to end)"
cargo test --workspace

step "fuzz targets: their corpus (seeds and regressions) and a short generated run, on stable"
# The long, coverage-guided runs: scripts/fuzz.sh [SECONDS]. tests/fuzz is its own workspace
# (cargo-fuzz's layout) whose path dependencies lie outside it, so cargo hashes them by absolute
# path: its target folder is per checkout (target/fuzz here), never shared between clones.
(cd tests/fuzz && CARGO_TARGET_DIR=$PWD/../../target/fuzz cargo test --locked --test smoke)

step "quality smoke: the harness on ml-100k, one seed, 4 training epochs (the table: python scripts/quality.py)"
python scripts/quality.py --datasets ml-100k --seeds 1 --quick --out "$CARGO_TARGET_DIR/quality-smoke.json" \
  --must-beat mostpop,recentpop,itemknn,ease,transitions

step "soak smoke: 15 s of mixed load (the 10-minute run: SOAK_SECS=600 scripts/bench.sh soak)"
SOAK_SECS=15 CASCADE_BIN=$CARGO_TARGET_DIR/debug/cascade cargo test -p cascade-e2e --bench soak

step "shared golden vectors on wasm32 (Node)"
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  cargo test -p cascade-shared --target wasm32-unknown-unknown --test golden

step "wrangler deploy --dry-run (Worker bundle size)"
dist=$(mktemp -d)
trap 'rm -rf "$dist"' EXIT
wrangler deploy --dry-run --outdir "$dist" >"$dist.log" 2>&1 || { cat "$dist.log"; exit 1; }
wasm=$(find "$dist" -name '*.wasm' | head -1)
total_gzip=$(find "$dist" -type f \( -name '*.wasm' -o -name '*.js' -o -name '*.mjs' \) -exec cat {} + | gzip -9 | wc -c)
echo "worker bundle: $(du -b "$wasm" | cut -f1) bytes wasm, $total_gzip bytes gzipped (all modules)"
if [ "$total_gzip" -gt 1048576 ]; then
  echo "worker bundle is over 1 MB gzipped" >&2
  exit 1
fi
for environment in staging production; do
  step "wrangler deploy --dry-run --env $environment"
  wrangler deploy --dry-run --env "$environment" --outdir "$dist/$environment" >"$dist.$environment.log" 2>&1 \
    || { cat "$dist.$environment.log"; exit 1; }
  grep -q "ADMIN_LIMITER" "$dist.$environment.log" || { echo "$environment: no rate limit bindings" >&2; exit 1; }
done
step "all tests passed"
