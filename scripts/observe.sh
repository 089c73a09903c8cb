#!/usr/bin/env bash
# Watches a running origin: Prometheus (with Cascade's alert rules) scraping it and serving the
# dashboard's panels as a console page (scripts/dashboard_console.py), the Redis exporter for
# bytes per key when Redis URLs are given, and Grafana with the provisioned dashboard when it is
# installed.
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
# The dashboard's panels as a Prometheus console (generated from the Grafana JSON, so they agree),
# drawn with the console library Debian ships among Prometheus's examples.
mkdir -p "$work/consoles"
python3 scripts/dashboard_console.py deploy/grafana/dashboards/cascade.json >"$work/consoles/cascade.html"
libraries=/usr/share/doc/prometheus/examples/console_libraries
[ -f "$libraries/prom.lib" ] || libraries=/etc/prometheus/console_libraries
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.console.templates="$work/consoles" --web.console.libraries="$libraries" \
  --web.listen-address=127.0.0.1:9090 >"$work/prometheus.log" 2>&1 &
pids+=($!)
echo "observe: Prometheus on http://127.0.0.1:9090 scraping $origin (alerts: /alerts)"
echo "observe: the dashboard's panels, live: http://127.0.0.1:9090/consoles/cascade.html"
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
