"""The Grafana dashboard in dashboards/: generated, schema-valid, current panel types,
described, with units and the classifier's thresholds, and every query parses."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

import dashboards.__main__ as generator
from dashboards import queue_health
from qhealth import ClassifierConfig
from qhealth.rules import RulesConfig

from .conftest import ROOT, SHARED
from .grafana import panel_queries, panels
from .services import need_tool, run

DASHBOARD_FILE = ROOT / "dashboards" / "queue-health.json"
SCHEMAS = SHARED / "grafana-schema"
PANEL_TYPES = {"row", "timeseries", "stat", "state-timeline"}
PANEL_SCHEMAS = {"timeseries": "timeseries", "stat": "stat", "state-timeline": "statetimeline"}


def _loose(schema: Any) -> Any:
    """The useful check of shared/grafana-schema/README.md: types and enums, without
    ``required`` and ``additionalProperties: false`` (Grafana fills defaults). Without
    those, the branches of a ``oneOf`` overlap, so it becomes ``anyOf``."""
    if isinstance(schema, dict):
        return {
            ("anyOf" if key == "oneOf" else key): _loose(value)
            for key, value in schema.items()
            if key != "required" and not (key == "additionalProperties" and value is False)
        }
    if isinstance(schema, list):
        return [_loose(item) for item in schema]
    return schema


def _validator(name: str, definition: str | None = None) -> Draft7Validator:
    path = SCHEMAS / f"{name}.v11.6.json"
    if not path.exists():
        pytest.fail(f"the Grafana schemas are missing: expected {path}")
    schema = _loose(json.loads(path.read_text(encoding="utf-8")))
    threshold = schema.get("definitions", {}).get("Threshold")
    if threshold is not None:
        # The base step's value is null in Grafana's JSON (the schema says "Nulls
        # currently appear here when serializing -Infinity").
        threshold["properties"]["value"]["type"] = ["number", "null"]
    if definition is not None:
        schema["$ref"] = f"#/definitions/{definition}"
    return Draft7Validator(schema)


def _errors(dashboard: dict[str, Any]) -> list[str]:
    errors = [
        f"dashboard {list(e.path)}: {e.message[:200]}" for e in _validator("dashboard").iter_errors(dashboard)
    ]
    for panel in dashboard["panels"]:
        kind = PANEL_SCHEMAS.get(panel["type"])
        where = f"panel {panel.get('title')!r}"
        if kind is not None:
            errors += [
                f"{where} options {list(e.path)}: {e.message[:200]}"
                for e in _validator(kind, "Options").iter_errors(panel.get("options", {}))
            ]
            if "FieldConfig" in json.loads((SCHEMAS / f"{kind}.v11.6.json").read_text())["definitions"]:
                custom = panel["fieldConfig"]["defaults"].get("custom", {})
                errors += [
                    f"{where} custom {list(e.path)}: {e.message[:200]}"
                    for e in _validator(kind, "FieldConfig").iter_errors(custom)
                ]
        for target in panel.get("targets", []):
            errors += [
                f"{where} target {list(e.path)}: {e.message[:200]}"
                for e in _validator("prometheus").iter_errors(target)
            ]
    return errors


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _by_title(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in dashboard["panels"] if p["title"] == title)


def test_committed_json_is_a_fresh_build() -> None:
    assert DASHBOARD_FILE.read_text(encoding="utf-8") == generator.render(), (
        "dashboards/queue-health.json is stale: run `python3 -m dashboards`"
    )


def test_the_dashboard_validates_against_the_grafana_schemas(dashboard: dict[str, Any]) -> None:
    assert _errors(dashboard) == []


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("panels", 2, "options", "legend", "placement"), "middle"),
        (("panels", 2, "gridPos", "w"), "wide"),
        (("panels", 2, "targets", 0, "editorMode"), "telepathy"),
        (("panels", 2, "fieldConfig", "defaults", "custom", "drawStyle"), "crayon"),
    ],
)
def test_the_schema_check_catches_a_wrong_value(
    dashboard: dict[str, Any], path: tuple[Any, ...], bad: str
) -> None:
    broken = json.loads(json.dumps(dashboard))
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    assert _errors(broken), f"{path} = {bad!r} passed the schema check"


def test_only_current_panel_types_are_used(dashboard: dict[str, Any]) -> None:
    types = {p["type"] for p in dashboard["panels"]}
    assert types <= PANEL_TYPES, f"unexpected panel types {types - PANEL_TYPES} (graph/singlestat are gone)"
    assert dashboard["schemaVersion"] >= 39


def test_datasource_and_queue_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["queue"]["type"] == "query"
    assert variables["queue"]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert "label_values(" in variables["queue"]["query"] and variables["queue"]["multi"]


def test_every_panel_has_a_description_a_datasource_and_queries(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        assert len(panel.get("description", "")) > 40, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_every_timeseries_and_stat_panel_has_a_unit(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        if panel["type"] in ("timeseries", "stat"):
            assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]


def test_the_three_rows_are_there(dashboard: dict[str, Any]) -> None:
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "Polling efficiency", "Fleet"]
    titles = {p["title"] for p in panels(dashboard)}
    assert {
        "Conditions",
        "Depth vs capacity",
        "Throughput",
        "Busy vs idle workers",
        "Idle ratio",
        "429 ratio",
        "Wait latency",
        "Processing latency",
        "Polls: empty vs hit",
        "Queue states now",
        "Queue states over time",
    } <= titles
    assert _by_title(dashboard, "Conditions")["type"] == "state-timeline"


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize(
    ("title", "setting"),
    [
        ("Idle ratio", "idle_on"),
        ("429 ratio", "rate_limited_on"),
        ("Workers idle next to waiting items", "boom_bust_idle_capacity_on"),
        ("Wait next to idle workers", "boom_bust_idle_wait_on"),
    ],
)
def test_thresholds_are_the_classifiers(dashboard: dict[str, Any], title: str, setting: str) -> None:
    steps = _by_title(dashboard, title)["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == getattr(ClassifierConfig(), setting)
    assert steps[0]["value"] is None


def test_a_classifier_setting_moves_the_dashboard_threshold() -> None:
    built = queue_health.to_json_data(
        queue_health.build(RulesConfig(classifier=ClassifierConfig(idle_on=0.97)))
    )
    idle = next(p for p in built["panels"] if p["title"] == "Idle ratio")
    assert idle["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 0.97


def test_window_measures_are_the_recorded_series_the_alerts_read(dashboard: dict[str, Any]) -> None:
    recorded = {
        r["record"]
        for r in yaml.safe_load((ROOT / "alerts" / "qhealth.rules.yml").read_text())["groups"][0]["rules"]
        if "record" in r
    }
    used = {
        name
        for panel in panels(dashboard)
        for target in panel["targets"]
        for name in re.findall(r"queue:qhealth_[a-z_]+:[a-z_]+", target["expr"])
    }
    assert used, "the dashboard reads the rules' aggregates"
    assert used <= recorded, f"not recorded by alerts/qhealth.rules.yml: {used - recorded}"


def test_every_panel_query_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses each query as the expression of a recording rule."""
    queries = panel_queries(dashboard)
    rules = {
        "groups": [
            {
                "name": "panels",
                "rules": [{"record": f"panel_query_{i}", "expr": e} for i, (_, e) in enumerate(queries)],
            }
        ]
    }
    path = tmp_path / "panels.rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = run(need_tool("promtool", "prometheus"), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_a_query_that_does_not_parse_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "bad.rules.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "x", "expr": "sum by (queue"}]}]})
    )
    assert run(need_tool("promtool", "prometheus"), "check", "rules", str(path)).returncode != 0


def test_the_generator_check_mode_reports_a_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "queue-health.json"
    stale.write_text("{}\n", encoding="utf-8")
    monkeypatch.setattr(generator, "DASHBOARD_FILE", stale)
    assert generator.main(["--check"]) == 1
    assert generator.main([]) == 0
    assert generator.main(["--check"]) == 0
