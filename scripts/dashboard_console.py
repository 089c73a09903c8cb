#!/usr/bin/env python3
"""Writes the Grafana dashboard (deploy/grafana/dashboards/cascade.json) as a Prometheus console
template: the same panels, queries, legends and units, drawn live by Prometheus's own console
library (rickshaw graphs at /consoles/cascade.html). Grafana is in none of the registries this
project installs from; Prometheus is (Debian's archive), so scripts/observe.sh serves this page
beside the dashboard JSON it is generated from, and the two cannot drift apart.

    python3 scripts/dashboard_console.py [DASHBOARD_JSON] > cascade.html
"""
import html
import json
import re
import sys

# Grafana unit -> (y units suffix, PromConsole number formatter).
UNITS = {
    "reqps": ("/s", "humanizeNoSmallPrefix"),
    "s": ("s", "humanizeNoSmallPrefix"),
    "percentunit": ("", "humanizeNoSmallPrefix"),
    "bytes": ("B", "humanize1024"),
    "short": ("", "humanizeNoSmallPrefix"),
}


def legend(fmt):
    """Grafana's {{label}} legend as PromConsole's [[label]] (None: PromConsole's default)."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", r"[[\1]]", fmt) if fmt else None


def console(dashboard):
    panels = [p for p in dashboard["panels"] if p.get("targets")]
    out = [
        '{{ template "head" . }}',
        '{{ template "prom_content_head" . }}',
        f"<h1>{html.escape(dashboard['title'])}</h1>",
        "<p>Generated from deploy/grafana/dashboards/cascade.json by scripts/dashboard_console.py.</p>",
        '<div class="row">',
    ]
    for index, panel in enumerate(panels):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        suffix, formatter = UNITS.get(unit, UNITS["short"])
        exprs = [t["expr"] for t in panel["targets"]]
        names = [legend(t.get("legendFormat")) for t in panel["targets"]]
        params = {
            "expr": exprs,
            "duration": 300,
            "height": 160,
            "yUnits": suffix,
            "min": 0,
        }
        if all(names):
            params["name"] = names
        script = json.dumps(params)[:-1]
        script += f', "node": document.querySelector("#panel{index}"), '
        script += f'"yAxisFormatter": PromConsole.NumberFormatter.{formatter}, '
        script += f'"yHoverFormatter": PromConsole.NumberFormatter.{formatter}}}'
        out += [
            '<div class="col-6">',
            f"<h5>{html.escape(panel['title'])}</h5>",
            f'<div id="panel{index}"></div>',
            f"<script>new PromConsole.Graph({script});</script>",
            "</div>",
        ]
    out += ["</div>", '{{ template "prom_content_tail" . }}', '{{ template "tail" }}']
    return "\n".join(out) + "\n", len(panels)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "deploy/grafana/dashboards/cascade.json"
    with open(path) as f:
        text, count = console(json.load(f))
    sys.stdout.write(text)
    print(f"dashboard_console: {count} panels", file=sys.stderr)


if __name__ == "__main__":
    main()
