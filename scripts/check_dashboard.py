"""Checks deploy/grafana/novacron.json, the Grafana dashboard, without a
Grafana (none is packaged in the registries this project installs from):

- its structure: title, uid, schemaVersion, and panels with unique ids,
  a known type, a title, a grid position inside the 24 columns that
  overlaps no other panel, and targets with unique refIds and an expr;
- that every metric its queries (and deploy/prometheus/alerts.yml's) name
  is one the services export: the names in the one module that holds them,
  services/runtime/src/telemetry.rs (a histogram's _bucket, _sum and _count
  included), so a renamed metric breaks this check, not a dashboard;
- with --rules FILE, writes every query as a recording rule to FILE, for
  `promtool check rules` to parse the PromQL (scripts/check-deploy.sh).

--self-test shows it broken dashboards, which it must refuse.
Exits 1 with one line per problem."""

import copy
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/novacron.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
TELEMETRY = ROOT / "services/runtime/src/telemetry.rs"
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "heatmap", "text"}
# Prometheus's own series, beside the services'.
BUILTIN = {"up"}


def exported_metrics():
    names = set(re.findall(r'pub const [A-Z_]+: &str = "(nova_[a-z_]+)";', TELEMETRY.read_text()))
    if not names:
        raise SystemExit(f"check_dashboard: no metric names found in {TELEMETRY}")
    histogram = {n + s for n in names if n.endswith("_seconds") for s in ("_bucket", "_sum", "_count")}
    return names | histogram | BUILTIN


def metrics_in(expr):
    # Metric names are the identifiers not followed by "(" (functions) and
    # not inside {...} matchers or "by (...)" label lists.
    stripped = re.sub(r"\{[^}]*\}", "", expr)
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    stripped = re.sub(r'"[^"]*"', "", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    idents = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", stripped)
    keywords = {"sum", "rate", "increase", "histogram_quantile", "or", "and", "unless", "vector", "bool", "offset"}
    return {i for i in idents if i not in keywords and not re.fullmatch(r"[0-9.e]+", i)}


def problems_of(dashboard, known):
    out = []
    for key in ("title", "uid"):
        if not isinstance(dashboard.get(key), str) or not dashboard[key]:
            out.append(f"dashboard: {key} must be a non-empty string")
    if not isinstance(dashboard.get("schemaVersion"), int):
        out.append("dashboard: schemaVersion must be an integer")
    panels = dashboard.get("panels")
    if not isinstance(panels, list) or not panels:
        return out + ["dashboard: panels must be a non-empty list"]
    ids, cells = set(), {}
    for n, panel in enumerate(panels):
        where = f"panels[{n}] ({panel.get('title', '?')})"
        if not isinstance(panel.get("id"), int) or panel["id"] in ids:
            out.append(f"{where}: id must be a unique integer")
        ids.add(panel.get("id"))
        if panel.get("type") not in PANEL_TYPES:
            out.append(f"{where}: type {panel.get('type')!r} is not one of {sorted(PANEL_TYPES)}")
        if not panel.get("title"):
            out.append(f"{where}: a panel needs a title")
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "hwxy"):
            out.append(f"{where}: gridPos needs integers h, w, x, y")
        elif grid["x"] < 0 or grid["w"] < 1 or grid["x"] + grid["w"] > 24:
            out.append(f"{where}: gridPos is outside the 24 columns")
        else:
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    if (x, y) in cells:
                        out.append(f"{where}: overlaps {cells[(x, y)]}")
                        break
                    cells[(x, y)] = where
                else:
                    continue
                break
        targets = panel.get("targets")
        if not isinstance(targets, list) or not targets:
            out.append(f"{where}: a panel needs targets")
            continue
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            out.append(f"{where}: refIds must be unique")
        for t in targets:
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                out.append(f"{where}: target {t.get('refId')} has no expr")
                continue
            for metric in sorted(metrics_in(expr) - known):
                out.append(f"{where}: {metric} is not a metric the services export")
    return out


def alert_problems(known):
    out = []
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            for metric in sorted(metrics_in(rule["expr"]) - known):
                out.append(f"alerts.yml {rule.get('alert')}: {metric} is not a metric the services export")
    return out


def exprs(dashboard):
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def self_test(dashboard, known):
    cases = []
    renamed = copy.deepcopy(dashboard)
    renamed["panels"][0]["targets"][0]["expr"] = "sum(rate(nova_samples_in_total[5m]))"
    cases.append(("a metric the services do not export", renamed, "nova_samples_in_total is not a metric"))
    overlapping = copy.deepcopy(dashboard)
    overlapping["panels"][1]["gridPos"] = dict(overlapping["panels"][0]["gridPos"])
    cases.append(("two panels in one place", overlapping, "overlaps"))
    duplicate = copy.deepcopy(dashboard)
    duplicate["panels"][1]["id"] = duplicate["panels"][0]["id"]
    cases.append(("a repeated panel id", duplicate, "unique integer"))
    unknown = copy.deepcopy(dashboard)
    unknown["panels"][0]["type"] = "graphz"
    cases.append(("an unknown panel type", unknown, "is not one of"))
    bad = [name for name, d, want in cases if not any(want in p for p in problems_of(d, known))]
    for name in bad:
        print(f"check_dashboard --self-test: not refused: {name}", file=sys.stderr)
    return not bad


def main(argv):
    dashboard = json.loads(DASHBOARD.read_text())
    known = exported_metrics()
    if "--self-test" in argv and not self_test(dashboard, known):
        return 1
    problems = problems_of(dashboard, known) + alert_problems(known)
    for p in problems:
        print(f"check_dashboard: {p}", file=sys.stderr)
    if problems:
        return 1
    if "--rules" in argv:
        path = pathlib.Path(argv[argv.index("--rules") + 1])
        rules = [{"record": f"novacron:dashboard:{i}", "expr": e} for i, e in enumerate(exprs(dashboard))]
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    print(f"check_dashboard: {len(dashboard['panels'])} panels, {len(exprs(dashboard))} queries, every metric exported")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
