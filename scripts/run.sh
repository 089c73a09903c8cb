#!/usr/bin/env bash
# Runs Cascade on the embedded default: the README's run command.
#
#   scripts/run.sh                 # generated data
#   scripts/run.sh --movielens ../shared/data/ml-latest-small
#
# Installs what is missing, trains a bundle (once; kept under $CASCADE_HOME/bundles), builds the
# origin in release mode, starts it with the in-process store, starts the Worker under
# `wrangler dev`, and prints the URL a browser can open. Ctrl-C stops both.
# Set CASCADE_REDIS_SHARDS to serve users from Redis shards loaded by `cascade load`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cascade_setup

movielens=""
if [ "${1:-}" = "--movielens" ]; then
  movielens=${2:?--movielens needs the path of ml-latest-small}
fi
ORIGIN_PORT=${ORIGIN_PORT:-8080}
EDGE_PORT=${EDGE_PORT:-8787}

# One bundle per version of the training code: a changed model is retrained, not served stale.
version=$(cat scripts/train.py scripts/recdata.py | sha256sum | cut -c1-12)
if [ -n "$movielens" ]; then
  bundle=$CASCADE_HOME/bundles/movielens-$version
  train_args=(--movielens "$movielens")
else
  bundle=$CASCADE_HOME/bundles/demo-$version
  train_args=()
fi
if [ ! -f "$bundle/metadata.json" ]; then
  log "training the model bundle into $bundle"
  python scripts/train.py --out "$bundle.tmp" "${train_args[@]}"
  rm -rf "$bundle" && mv "$bundle.tmp" "$bundle"
fi

log "building the origin (release)"
cargo build --release -p cascade-origin --bin cascade

# Development secret shared by the origin and the Worker, made once and kept.
secret_file=$CASCADE_HOME/dev-secret
[ -s "$secret_file" ] || python -c 'import secrets; print(secrets.token_hex(24))' >"$secret_file"
api_key_file=$CASCADE_HOME/dev-api-key
[ -s "$api_key_file" ] || python -c 'import secrets; print(secrets.token_hex(24))' >"$api_key_file"
export CASCADE_SECRET=$(cat "$secret_file") CASCADE_API_KEYS=$(cat "$api_key_file")
export CASCADE_BUNDLE=$bundle CASCADE_LISTEN=127.0.0.1:$ORIGIN_PORT

pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

log "starting the origin on http://127.0.0.1:$ORIGIN_PORT"
setsid "$CARGO_TARGET_DIR/release/cascade" serve &
pids+=($!)
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$ORIGIN_PORT/healthz" >/dev/null && break; sleep 0.5; done
curl -sf "http://127.0.0.1:$ORIGIN_PORT/healthz" >/dev/null || { log "origin did not start"; exit 1; }

# Build the Worker first, in the foreground, with cargo's progress on the terminal: the first
# release build takes minutes on a fresh machine, longer than any fixed wait for `wrangler dev`
# (which then rebuilds from the warm target folder in seconds).
log "building the edge Worker (worker-build --release; minutes the first time)"
(cd edge && worker-build --release) || { log "the edge Worker did not build"; exit 1; }

log "starting the edge Worker (wrangler dev) on http://127.0.0.1:$EDGE_PORT"
setsid wrangler dev --port "$EDGE_PORT" --ip 127.0.0.1 --persist-to "$CASCADE_HOME/wrangler-state" \
  --var "ORIGIN_URL:http://127.0.0.1:$ORIGIN_PORT" --var "ORIGIN_SECRET:$CASCADE_SECRET" \
  --show-interactive-dev-session=false &
pids+=($!)
for _ in $(seq 1 240); do curl -sf "http://127.0.0.1:$EDGE_PORT/healthz" >/dev/null && break; sleep 0.5; done
curl -sf "http://127.0.0.1:$EDGE_PORT/healthz" >/dev/null \
  || { log "edge did not answer /healthz within 120 s of starting (the Worker was already built)"; exit 1; }

# A signed-in visitor token (paste it into the demo page's token field).
demo_user=u1; [ -n "$movielens" ] && demo_user=1
token=$(curl -sf -X POST -H "Authorization: Bearer $CASCADE_API_KEYS" -H 'content-type: application/json' \
  -d "{\"user_id\": \"$demo_user\", \"ttl_secs\": 86400}" "http://127.0.0.1:$ORIGIN_PORT/admin/tokens" \
  | python -c 'import json, sys; print(json.load(sys.stdin)["token"])' || echo "(could not mint one)")

cat <<MSG

  Cascade is running.
    demo page: http://127.0.0.1:$EDGE_PORT/   (user $demo_user's token for it: $token)
    browser:  http://127.0.0.1:$EDGE_PORT/recs?page=home&device=mobile&n=10
    origin:   curl -H 'Authorization: Bearer $CASCADE_API_KEYS' 'http://127.0.0.1:$ORIGIN_PORT/v1/users/u1/recs?n=10'
    health:   http://127.0.0.1:$ORIGIN_PORT/readyz   metrics: http://127.0.0.1:$ORIGIN_PORT/metrics
  Ctrl-C stops both.

MSG
wait
