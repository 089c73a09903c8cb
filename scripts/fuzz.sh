#!/usr/bin/env bash
# Coverage-guided fuzzing of the targets in tests/fuzz (visitor tokens and signatures, query and
# segment parsing, the edge's router, event batches, the embedding file decoder, the RESP reader):
#
#   scripts/fuzz.sh [SECONDS] [TARGET ...]     (default: 600 s each, every target)
#
# Runs cargo-fuzz (libFuzzer, address sanitizer) on the nightly toolchain, installing cargo-fuzz
# when it is missing. Without a nightly toolchain it says so and runs the stable smoke runner
# (tests/fuzz/tests/smoke.rs: corpus replay plus generated inputs) for the same time instead.
# New coverage goes to $CASCADE_HOME/fuzz-corpus/<target> (kept between runs, outside the
# repository); a crash is copied into tests/fuzz/corpus/<target>/, where scripts/test.sh replays
# it on every run, and the script exits non-zero. Figures go to target/cascade-bench/fuzz.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export_env
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tokens queries edge_router events edge_bodies embeddings resp)
mkdir -p target/cascade-bench
report=target/cascade-bench/fuzz.json

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "no nightly toolchain: running the stable smoke runner for ${seconds} s per target instead" >&2
  (cd tests/fuzz && CARGO_TARGET_DIR=$PWD/../../target/fuzz FUZZ_SMOKE_SECS=$seconds \
    cargo test --test smoke -- --nocapture)
  exit
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

crashed=0
echo "[" >"$report.partial"
first=1
for target in "${targets[@]}"; do
  work=$CASCADE_HOME/fuzz-corpus/$target
  mkdir -p "$work"
  log=$(mktemp)
  echo "fuzzing $target for $seconds s" >&2
  status=0
  # Per checkout, like the stable one (scripts/test.sh says why).
  CARGO_TARGET_DIR=$PWD/target/fuzz-nightly cargo +nightly fuzz run --fuzz-dir tests/fuzz \
    --features libfuzzer "$target" "$work" "tests/fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  coverage=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  crashes=0
  for artifact in tests/fuzz/artifacts/"$target"/*; do
    [ -f "$artifact" ] || continue
    crashes=$((crashes + 1))
    cp "$artifact" "tests/fuzz/corpus/$target/regression-$(sha256sum "$artifact" | cut -c1-12)"
    rm -f "$artifact"
  done
  if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    crashed=1
    tail -40 "$log" >&2
  fi
  echo "$target: ${runs:-?} runs in $seconds s, coverage ${coverage:-?}, $crashes crash(es), exit $status" >&2
  [ $first -eq 1 ] || echo "," >>"$report.partial"
  first=0
  printf '{"target": "%s", "seconds": %s, "runs": %s, "coverage": %s, "crashes": %s, "exit": %s}' \
    "$target" "$seconds" "${runs:-null}" "${coverage:-null}" "$crashes" "$status" >>"$report.partial"
  rm -f "$log"
done
echo "]" >>"$report.partial"
mv "$report.partial" "$report"
echo "saved $report" >&2
exit $crashed
