#!/usr/bin/env bash
# Watches a running origin: Prometheus (with Cascade's alert rules) scraping it, the Redis
# exporter for bytes per key when Redis URLs are given, and Grafana with the provisioned dashboard
# when it is installed.
#
#   scripts/observe.sh [ORIGIN_URL (http://127.0.0.1:8080)] [REDIS_URL ...]
#
# Prometheus and prometheus-redis-exporter come from Debian's archive (apt, installed here when
# missing). Grafana is not in the registries this project installs from (Debian's archive, PyPI,
# npm, crates.io), so it is not installed: with `grafana-server` (or `grafana`) on PATH (a
# grafana.com package, or run the grafana/grafana image with deploy/grafana/provisioning mounted)
# this script starts it on :3000 with the datasource and the "Cascade origin" dashboard
# (deploy/grafana/dashboards/cascade.json). Prometheus answers on :9090 (alerts at /alerts).
# Runs until Ctrl-C; everything it starts stops with it.
set -euo pipefail
cd "$(dirname "$0")/.."
origin=${1:-http://127.0.0.1:8080}
shift || true
sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
need() {
  command -v "$1" >/dev/null || {
    echo "observe: apt-get install $2" >&2
    $sudo apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  }
}
need prometheus prometheus
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
target=${origin#*://}; target=${target%%/*}
exporters=""
port=9121
for redis in "$@"; do
  need prometheus-redis-exporter prometheus-redis-exporter
  prometheus-redis-exporter --redis.addr="$redis" --web.listen-address="127.0.0.1:$port" >"$work/redis-$port.log" 2>&1 &
  pids+=($!)
  exporters="$exporters\"127.0.0.1:$port\","
  port=$((port + 1))
done
cp deploy/prometheus/alerts.yml "$work/"
sed -e "s|\"127.0.0.1:8080\"|\"$target\"|" -e "s|\\[\"127.0.0.1:9121\"\\]|[${exporters%,}]|" \
  deploy/prometheus/prometheus.yml >"$work/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address=127.0.0.1:9090 >"$work/prometheus.log" 2>&1 &
pids+=($!)
echo "observe: Prometheus on http://127.0.0.1:9090 scraping $origin (alerts: /alerts)"
grafana=$(command -v grafana-server || command -v grafana || true)
if [ -n "$grafana" ]; then
  GF_PATHS_PROVISIONING=$PWD/deploy/grafana/provisioning GF_PATHS_DATA=$work/grafana \
    GF_AUTH_ANONYMOUS_ENABLED=true GF_SERVER_HTTP_ADDR=127.0.0.1 \
    "$grafana" server >"$work/grafana.log" 2>&1 &
  pids+=($!)
  echo "observe: Grafana on http://127.0.0.1:3000/d/cascade-origin"
else
  echo "observe: Grafana is not installed (not in this project's registries); see the header of $0" >&2
fi
wait
