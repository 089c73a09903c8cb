#!/usr/bin/env bash
# Takes docs/img/dashboard-live.png: the dashboard's panels (scripts/observe.sh's console page,
# generated from deploy/grafana/dashboards/cascade.json) live over an origin on two Redis shards
# under a bounded mixed load (user lists, segment lists, events, some bad requests), all on
# loopback, then stops everything it started.
#
#   scripts/dashboard-shot.sh [SECONDS (150)]
#
# Needs the test bundle (scripts/test.sh trains it) and the debug `cascade` binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
seconds=${1:-150}
bundle=${CASCADE_TEST_BUNDLE:-$CASCADE_HOME/bundles/test-$(cat scripts/train.py scripts/recdata.py | sha256sum | cut -c1-12)}
cascade=${CASCADE_BIN:-$CARGO_TARGET_DIR/debug/cascade}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
for port in 6391 6392; do
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis-$port.log" 2>&1 &
  pids+=($!)
done
sleep 1
shards=redis://127.0.0.1:6391,redis://127.0.0.1:6392
"$cascade" load --bundle "$bundle" --redis "$shards" --users-only >/dev/null
key=dashboard-shot-key-0123456789
CASCADE_BUNDLE=$bundle CASCADE_REDIS_SHARDS=$shards CASCADE_API_KEYS=$key CASCADE_LISTEN=127.0.0.1:8080 \
  "$cascade" serve >"$work/origin.log" 2>&1 &
pids+=($!)
scripts/observe.sh http://127.0.0.1:8080 redis://127.0.0.1:6391 redis://127.0.0.1:6392 >"$work/observe.log" 2>&1 &
pids+=($!)
until curl -sf http://127.0.0.1:8080/readyz >/dev/null; do sleep 0.5; done
echo "dashboard-shot: load for $seconds s" >&2
python3 - "$seconds" "$key" <<'PY'
import json, random, sys, threading, time, urllib.request, urllib.error
seconds, key = float(sys.argv[1]), sys.argv[2]
deadline = time.time() + seconds
base = "http://127.0.0.1:8080"
def call(path, body=None):
    request = urllib.request.Request(base + path, data=body, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=5).read()
    except urllib.error.HTTPError:
        pass
def worker(seed):
    rng = random.Random(seed)
    n = 0
    while time.time() < deadline and n < 200_000:  # bounded in time and count
        n += 1
        roll = rng.random()
        user = f"u{rng.randint(1, 300)}"
        if roll < 0.6:
            call(f"/v1/users/{user}/recs?n=10&page=home")
        elif roll < 0.8:
            call(f"/v1/segments/home.desktop.zz/recs?n=10")
        elif roll < 0.95:
            event = {"user_id": user, "kind": "click", "item_id": str(rng.randint(1, 500))}
            call("/v1/events", json.dumps({"events": [event]}).encode())
        else:
            call("/v1/users/bad%20id/recs")
        time.sleep(rng.random() * 0.01)
threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
PY
mkdir -p docs/img
profile=$work/chromium
chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --virtual-time-budget=15000 --user-data-dir="$profile" \
  --window-size=1400,1900 --screenshot=docs/img/dashboard-live.png http://127.0.0.1:9090/consoles/cascade.html 2>/dev/null
echo "dashboard-shot: docs/img/dashboard-live.png" >&2
