"""Grafana's provisioned dashboards load, and query only series our processes export.

No maintained package ships a JSON schema for Grafana dashboards: grafana-foundation-sdk's
wheels and npm tarball hold generated builders, not the schemas in its repository, and
@grafana/schema holds TypeScript types. So `structure_problems` spells out what Grafana needs to
load a dashboard. PromQL is parsed by promql-parser (bindings to GreptimeTeam's Rust parser)
once Grafana's template variables are substituted, as Grafana does before it sends a query.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from itertools import chain
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from conftest import ROOT
from exported_metrics import METRIC_MODULES, SCRAPE_SERIES, SUFFIXES, exported_series
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

GRAFANA = ROOT / "deploy/compose/grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning/datasources/prometheus.yml"
PROVIDERS = GRAFANA / "provisioning/dashboards/marketstream.yml"
MOUNTED_AT = "/var/lib/grafana/dashboards"  # where docker-compose.yml mounts ./grafana/dashboards
PROMETHEUS_URL = "http://prometheus:9090"  # the Compose service

SCHEMA_VERSION = 39  # Grafana 11 (the compose file runs 11.4) loads it and migrates it up
GRID_COLUMNS = 24
PANEL_TYPES = frozenset({"row", "timeseries", "stat", "gauge"})
VARIABLE_TYPES = frozenset({"query", "custom", "interval", "constant", "textbox"})
UID = re.compile(r"[A-Za-z0-9_-]{1,40}")  # Grafana refuses longer uids and other characters
TARGET_LABELS = frozenset({"job", "instance", "__name__"})  # Prometheus adds job and instance
# Series Prometheus makes for each target, which carry the target's labels only.
SCRAPE_ONLY_TARGET_LABELS = frozenset({"up", "scrape_duration_seconds"})
# Grafana's built-in variables, each replaced by a value of its kind.
BUILTINS: Mapping[str, str] = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "6h",
    "__interval_ms": "60000",
    "__range_ms": "21600000",
    "__range_s": "21600",
}
# $name, ${name} or ${name:format}, and the deprecated [[name]].
VARIABLE = re.compile(r"\$\{(\w+)(?::[\w-]+)?\}|\$(\w+)|\[\[(\w+)\]\]")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
LABEL_VALUES = re.compile(r"label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\s*\)")

Board = dict[str, Any]


def load(path: Path) -> Board:
    board: Board = json.loads(path.read_text())
    return board


def datasource_uid() -> str:
    """The uid of the one datasource Grafana is provisioned with."""
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    uid: str = source["uid"]
    return uid


def all_panels(board: Board) -> Iterator[dict[str, Any]]:
    """Every panel, with those folded inside collapsed rows."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", []) if panel.get("type") == "row" else ()


def targets(board: Board) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in all_panels(board):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}", target


@cache
def series_labels() -> Mapping[str, frozenset[str] | None]:
    """Each series our processes or Prometheus make -> its label names (None: not known here).

    A series sampled now shows its labels; a labelled metric with no child yet declares them on
    its prometheus_client wrapper only (`_labelnames`). A custom collector with nothing to
    report (acked messages before any send) tells neither, so its labels go unchecked.
    """
    exported = exported_series()  # imports METRIC_MODULES, which register the metrics
    known: dict[str, set[str]] = {name: set() for name in SCRAPE_ONLY_TARGET_LABELS}
    for family in REGISTRY.collect():
        for sample in family.samples:
            known.setdefault(sample.name, set()).update(sample.labels)
    for module in METRIC_MODULES:
        for value in vars(importlib.import_module(module)).values():
            if isinstance(value, MetricWrapperBase):
                for family in value.describe():
                    for suffix in SUFFIXES[family.type]:
                        labels = known.setdefault(family.name + suffix, set())
                        labels.update(value._labelnames, ["le"] if suffix == "_bucket" else [])
    return {
        name: frozenset(known[name]) if name in known else None for name in exported | SCRAPE_SERIES
    }


def substitute(expr: str, values: Mapping[str, str], problems: list[str], where: str) -> str:
    """Replace Grafana's variables with values of their kind; report those never declared."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name in BUILTINS:
            return BUILTINS[name]
        if name not in values:
            problems.append(f"{where}: ${name} is not a variable of the dashboard")
            return "x"
        return values[name]

    return VARIABLE.sub(value, expr)


def variable_values(board: Board) -> dict[str, str]:
    """A value for each dashboard variable: a duration for an interval variable, else a word."""
    values = {}
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "interval":
            values[variable["name"]] = str(variable["query"]).split(",")[0].strip()
        else:
            values[variable["name"]] = "x"
    return values


def nodes(expr: promql_parser.Expr) -> list[promql_parser.Expr]:
    found: list[promql_parser.Expr] = []
    promql_parser.walk(expr, found.append)  # list.append returns None: the walk goes on
    return found


def selectors(expr: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    return [node for node in nodes(expr) if isinstance(node, promql_parser.VectorSelector)]


def metric_name(selector: promql_parser.VectorSelector) -> str | None:
    if selector.name:
        return selector.name
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
            return matcher.value
    return None


def labels_of(found: list[promql_parser.VectorSelector]) -> frozenset[str] | None:
    """The labels the selected series can carry, or None if one of them is not known here."""
    union = set(TARGET_LABELS)
    for selector in found:
        labels = series_labels().get(metric_name(selector) or "")
        if labels is None:
            return None
        union |= labels
    return frozenset(union)


def selector_problems(expr: promql_parser.Expr, where: str) -> list[str]:
    """Metrics we do not export, and labels that their series never carry."""
    problems = []
    for selector in selectors(expr):
        name = metric_name(selector)
        if name is None:
            problems.append(f"{where}: {selector} names no metric")
            continue
        if name not in series_labels():
            problems.append(f"{where}: {name} is not a series our processes export")
            continue
        allowed = labels_of([selector])
        matchers = [
            *selector.matchers.matchers,
            *chain.from_iterable(selector.matchers.or_matchers),
        ]
        for matcher in matchers:
            if allowed is not None and matcher.name not in allowed:
                problems.append(f"{where}: {name} has no label {matcher.name!r}")
    for node in nodes(expr):
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            allowed = labels_of(selectors(node.expr))
            for label in node.modifier.labels:
                if allowed is not None and label not in allowed:
                    problems.append(f"{where}: grouping by {label!r}, which no series below has")
    return problems


def query_problems(board: Board) -> list[str]:
    """Every PromQL expression and variable query that Prometheus could not answer as meant."""
    problems: list[str] = []
    values = variable_values(board)
    for where, target in targets(board):
        text = substitute(str(target.get("expr", "")), values, problems, where)
        try:
            expr = promql_parser.parse(text)
        except ValueError as exc:
            problems.append(f"{where}: {text!r} does not parse: {exc}")
            continue
        problems += selector_problems(expr, where)
        allowed = labels_of(selectors(expr))
        for label in LEGEND_LABEL.findall(str(target.get("legendFormat", ""))):
            if allowed is not None and label not in allowed:
                problems.append(f"{where}: legend names {label!r}, which no series has")
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        where = f"variable {variable.get('name')}"
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query)
        if variable.get("definition", text) != text:
            problems.append(f"{where}: definition and query differ")
        match = LABEL_VALUES.fullmatch(substitute(text, values, problems, where))
        if match is None or match["selector"] is None:
            problems.append(f"{where}: {text!r} is not label_values(<selector>, <label>)")
            continue
        try:
            expr = promql_parser.parse(match["selector"])
        except ValueError as exc:
            problems.append(f"{where}: {match['selector']!r} does not parse: {exc}")
            continue
        problems += selector_problems(expr, where)
        allowed = labels_of(selectors(expr))
        if allowed is not None and match["label"] not in allowed:
            problems.append(f"{where}: no series selected has label {match['label']!r}")
    return problems


def grid_problems(panel: dict[str, Any], where: str) -> list[str]:
    grid = panel.get("gridPos")
    if not isinstance(grid, dict) or not all(isinstance(grid.get(k), int) for k in "hwxy"):
        return [f"{where}: gridPos needs integer h, w, x and y"]
    if grid["w"] < 1 or grid["h"] < 1 or grid["x"] < 0 or grid["y"] < 0:
        return [f"{where}: gridPos {grid} has no area or lies off the grid"]
    if grid["x"] + grid["w"] > GRID_COLUMNS:
        return [f"{where}: gridPos {grid} runs past column {GRID_COLUMNS}"]
    return []


def overlaps(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def structure_problems(board: Board, uid: str) -> list[str]:
    """What would stop Grafana loading the dashboard, or leave a panel without data."""
    problems = []
    source = {"type": "prometheus", "uid": uid}
    if not isinstance(board.get("uid"), str) or not UID.fullmatch(board["uid"]):
        problems.append(f"uid {board.get('uid')!r} is not 1 to 40 letters, digits, - or _")
    if not isinstance(board.get("title"), str) or not board["title"].strip():
        problems.append("no title")
    if board.get("schemaVersion") != SCHEMA_VERSION:
        problems.append(f"schemaVersion {board.get('schemaVersion')!r}, not {SCHEMA_VERSION}")
    time = board.get("time", {})
    if not (isinstance(time.get("from"), str) and isinstance(time.get("to"), str)):
        problems.append("time needs from and to")
    if not isinstance(board.get("annotations", {}).get("list"), list):
        problems.append("annotations needs a list")
    variables = board.get("templating", {}).get("list")
    if not isinstance(variables, list):
        problems.append("templating needs a list")
        variables = []
    names = [variable.get("name") for variable in variables]
    if len(set(names)) != len(names):
        problems.append(f"variable names repeat: {names}")
    for variable in variables:
        where = f"variable {variable.get('name')}"
        if not re.fullmatch(r"\w+", str(variable.get("name"))) or variable["name"] in BUILTINS:
            problems.append(f"{where}: not a name Grafana can substitute")
        if variable.get("type") not in VARIABLE_TYPES:
            problems.append(f"{where}: type {variable.get('type')!r}")
        if variable.get("type") == "query" and variable.get("datasource") != source:
            problems.append(f"{where}: datasource {variable.get('datasource')} is not {source}")
    panels = board.get("panels")
    if not isinstance(panels, list) or not panels:
        return [*problems, "no panels"]
    ids = [panel.get("id") for panel in all_panels(board)]
    if not all(isinstance(i, int) for i in ids) or len(set(ids)) != len(ids):
        problems.append(f"panel ids are not unique integers: {ids}")
    for panel in all_panels(board):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if not isinstance(panel.get("title"), str) or not panel["title"].strip():
            problems.append(f"{where}: no title")
        if panel.get("type") not in PANEL_TYPES:
            problems.append(
                f"{where}: type {panel.get('type')!r} is not one of {sorted(PANEL_TYPES)}"
            )
        problems += grid_problems(panel, where)
        if panel.get("type") == "row":
            if panel.get("targets"):
                problems.append(f"{where}: a row has no queries")
            continue
        if panel.get("datasource") != source:
            problems.append(f"{where}: datasource {panel.get('datasource')} is not {source}")
        queries = panel.get("targets")
        if not isinstance(queries, list) or not queries:
            problems.append(f"{where}: no targets")
            continue
        refs = [target.get("refId") for target in queries]
        if not all(isinstance(ref, str) and ref for ref in refs) or len(set(refs)) != len(refs):
            problems.append(f"{where}: refIds are not unique: {refs}")
        for target in queries:
            if not isinstance(target.get("expr"), str) or not target["expr"].strip():
                problems.append(f"{where} {target.get('refId')}: no expr")
            if target.get("datasource", source) != source:
                problems.append(f"{where} {target.get('refId')}: datasource is not {source}")
    placed = [p for p in panels if not grid_problems(p, "")]
    for i, a in enumerate(placed):
        for b in placed[i + 1 :]:
            if overlaps(a["gridPos"], b["gridPos"]):
                problems.append(f"panels {a.get('id')} and {b.get('id')} overlap")
    return problems


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.stem for path in DASHBOARDS])
def test_dashboard_structure_is_what_grafana_loads(path: Path) -> None:
    assert structure_problems(load(path), datasource_uid()) == []


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.stem for path in DASHBOARDS])
def test_dashboard_queries_parse_and_name_only_exported_series(path: Path) -> None:
    assert query_problems(load(path)) == []


def test_dashboards_five_with_unique_uids_and_titles() -> None:
    boards = [load(path) for path in DASHBOARDS]

    assert len(boards) == 5
    assert len({board["uid"] for board in boards}) == len(boards)
    assert len({board["title"] for board in boards}) == len(boards)


def test_provisioning_points_at_the_dashboards_and_prometheus() -> None:
    sources = yaml.safe_load(DATASOURCES.read_text())
    providers = yaml.safe_load(PROVIDERS.read_text())

    (source,) = sources["datasources"]
    assert sources["apiVersion"] == 1
    assert (source["type"], source["url"], source["access"]) == (
        "prometheus",
        PROMETHEUS_URL,
        "proxy",
    )
    (provider,) = providers["providers"]
    assert providers["apiVersion"] == 1
    assert (provider["type"], provider["options"]["path"]) == ("file", MOUNTED_AT)
    for path in DASHBOARDS:
        uids = {
            panel["datasource"]["uid"] for panel in all_panels(load(path)) if "datasource" in panel
        }
        assert uids == {source["uid"]}, path.name


def test_query_problems_bad_queries_each_reported() -> None:
    board: Board = {
        "templating": {
            "list": [{"name": "job", "type": "query", "query": "label_values(up, jbo)"}]
        },
        "panels": [
            {
                "id": 1,
                "title": "bad",
                "targets": [
                    {"refId": "A", "expr": "rate(trades_publishd_total[$__rate_interval])"},
                    {"refId": "B", "expr": 'sum by (provider) (trades_published_total{sorce="x"})'},
                    {"refId": "C", "expr": 'trades_published_total{job=~"$jbo"}'},
                    {"refId": "D", "expr": "sum(rate(trades_published_total[5m])"},
                    {"refId": "E", "expr": "trades_published_total", "legendFormat": "{{agent}}"},
                ],
            }
        ],
    }

    problems = "\n".join(query_problems(board))

    assert "trades_publishd_total is not a series" in problems
    assert "trades_published_total has no label 'sorce'" in problems
    assert "grouping by 'provider'" in problems
    assert "$jbo is not a variable" in problems
    assert "does not parse" in problems
    assert "legend names 'agent'" in problems
    assert "no series selected has label 'jbo'" in problems


def test_structure_problems_bad_panels_each_reported() -> None:
    source = {"type": "prometheus", "uid": "prometheus"}
    board: Board = {
        "uid": "a uid with spaces",
        "title": "t",
        "schemaVersion": 38,
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "templating": {"list": []},
        "panels": [
            {"id": 1, "type": "graph", "title": "a", "datasource": source, "targets": [],
             "gridPos": {"h": 8, "w": 12, "x": 16, "y": 0}},
            {"id": 1, "type": "stat", "title": "b", "datasource": {"uid": "other"},
             "targets": [{"refId": "A", "expr": "up"}, {"refId": "A", "expr": ""}],
             "gridPos": {"h": 8, "w": 12, "x": 0, "y": 4}},
            {"id": 3, "type": "row", "title": "c", "gridPos": {"h": 1, "w": 24, "x": 0, "y": 5}},
        ],
    }  # fmt: skip

    problems = "\n".join(structure_problems(board, "prometheus"))

    for expected in [
        "uid 'a uid with spaces'",
        "schemaVersion 38",
        "panel ids are not unique",
        "type 'graph'",
        "runs past column 24",
        "no targets",
        "datasource {'uid': 'other'}",
        "refIds are not unique",
        "A: no expr",
        "panels 1 and 3 overlap",
    ]:
        assert expected in problems
