#!/usr/bin/env bash
# GPU evidence for the ranker, run on a device machine (no Rust there; PyTorch 2.11 with CUDA).
#
#   here:   scripts/gpu-check.sh prepare      # strips the release binary + copies the test bundle to data/gpu/
#   device: scripts/gpu-check.sh run          # serves on CPU and on CUDA, compares the lists
#   device: scripts/gpu-check.sh bench        # the ranker benchmark on CPU and on CUDA
#
# `run` writes $OUT/gpu-check.json (or ./gpu-check.json) with both devices' answers and timings;
# `bench` writes $OUT/{cpu,cuda}/ranker.json.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  prepare)
    source scripts/env.sh
    mkdir -p data/gpu
    cargo build --release -p cascade-origin --bin cascade
    strip -o data/gpu/cascade "$CARGO_TARGET_DIR/release/cascade"
    bench=$(cargo bench -p cascade-e2e --bench ranker --no-run --message-format=json 2>/dev/null \
      | python -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "ranker" and m.get("executable"):
        print(m["executable"])')
    strip -o data/gpu/ranker-bench "$bench"
    bundle=$CASCADE_HOME/bundles/test-$(cat scripts/train.py scripts/recdata.py | sha256sum | cut -c1-12)
    rm -rf data/gpu/bundle && cp -r "$bundle" data/gpu/bundle && rm -f data/gpu/bundle/items.faiss
    # FAISS links the system BLAS (apt's libopenblas here); the device machine may not have it.
    mkdir -p data/gpu/lib
    for lib in libblas.so.3 liblapack.so.3 libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
      cp -L "$(ldd data/gpu/cascade | awk -v l="$lib" '$1 == l {print $3}')" data/gpu/lib/
    done
    du -sh data/gpu
    ;;
  run)
    out=${OUT:-.}
    torch_dir=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')
    export LD_LIBRARY_PATH=$torch_dir/lib:${LD_LIBRARY_PATH:-}:$PWD/data/gpu/lib
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    key=gpu-check-key-0123456789
    pids=()
    trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
    for device in cpu cuda; do
      port=$([ "$device" = cpu ] && echo 18181 || echo 18182)
      printf '[ranker]\ndevice = "%s"\n' "$device" >"/tmp/cascade-$device.toml"
      CASCADE_BUNDLE=data/gpu/bundle CASCADE_API_KEYS=$key CASCADE_LISTEN=127.0.0.1:$port \
        data/gpu/cascade serve --config "/tmp/cascade-$device.toml" >"$out/serve-$device.log" 2>&1 &
      pids+=($!)
      for _ in $(seq 1 60); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.5; done
      curl -s "127.0.0.1:$port/readyz" >"$out/readyz-$device.json" || { echo "$device: origin did not start"; tail -5 "$out/serve-$device.log"; continue; }
      for user in u0 u1 u2 u3 u4; do
        curl -s -H "Authorization: Bearer $key" "127.0.0.1:$port/v1/users/$user/recs?n=10&page=browse&device=mobile" \
          >"$out/recs-$device-$user.json"
      done
      # 200 sequential requests: per-request latency with each device.
      start=$(date +%s%N)
      for i in $(seq 0 199); do
        curl -s -o /dev/null -H "Authorization: Bearer $key" "127.0.0.1:$port/v1/users/u$((i % 500))/recs?n=20"
      done
      end=$(date +%s%N)
      echo "$device: 200 sequential requests in $(( (end - start) / 1000000 )) ms" | tee -a "$out/timing.txt"
    done
    python3 - "$out" <<'PY'
import json, sys, glob, os
out = sys.argv[1]
report = {"devices": {}, "lists_equal": True, "max_score_diff": 0.0}
def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError) as error:
        report.setdefault("errors", []).append(f"{path}: {error}")
        return None
for dev in ("cpu", "cuda"):
    report["devices"][dev] = (load(f"{out}/readyz-{dev}.json") or {}).get("serving", {})
for user in ("u0", "u1", "u2", "u3", "u4"):
    a = load(f"{out}/recs-cpu-{user}.json"); b = load(f"{out}/recs-cuda-{user}.json")
    if a is None or b is None:
        report["lists_equal"] = False
        continue
    ids_a = [i["id"] for i in a["items"]]; ids_b = [i["id"] for i in b["items"]]
    report["lists_equal"] &= ids_a == ids_b and a["source"] == b["source"] == "realtime"
    for x, y in zip(a["items"], b["items"]):
        report["max_score_diff"] = max(report["max_score_diff"], abs(x["score"] - y["score"]))
report["timing"] = open(f"{out}/timing.txt").read().splitlines() if os.path.exists(f"{out}/timing.txt") else []
json.dump(report, open(f"{out}/gpu-check.json", "w"), indent=1)
print(json.dumps(report, indent=1))
PY
    ;;
  bench)
    out=${OUT:-.}
    torch_dir=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')
    export LD_LIBRARY_PATH=$torch_dir/lib:${LD_LIBRARY_PATH:-}:$PWD/data/gpu/lib
    for device in cuda cpu; do
      mkdir -p "$out/$device"
      CASCADE_TEST_BUNDLE=data/gpu/bundle CASCADE_BENCH_DIR=$out/$device BENCH_DEVICE=$device BENCH_SECS=${BENCH_SECS:-5} \
        data/gpu/ranker-bench 2>&1 | grep -E '"(device|speedup_single_row|speedup_multi_row|ceiling_rows_per_s)"|batched|unbatched' || true
    done
    ;;
  *) echo "usage: $0 prepare|run|bench" >&2; exit 2 ;;
esac
