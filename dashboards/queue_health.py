"""The "Queue health" Grafana dashboard, built with grafanalib.

``python3 -m dashboards`` writes it to ``dashboards/queue-health.json``. The
thresholds drawn on the panels are the classifier's (through
:class:`qhealth.rules.RulesConfig`, the one configuration behind the rules
too), and the window measures are the recorded series of
``alerts/qhealth.rules.yml``: the dashboard shows what the alerts see.

Three rows: an overview of the selected queues, polling efficiency, and a
fleet view of every queue's state now and over time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grafanalib.core import (
    Dashboard,
    RowPanel,
    Stat,
    StateTimeline,
    Target,
    Template,
    Templating,
    Time,
    TimeSeries,
)

from qhealth.conditions import SEVERITY
from qhealth.rules import CONDITION_SERIES, Compiler, RulesConfig

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SELECTED = 'queue=~"$queue"'
RATE = "$__rate_interval"
WIDTH = 24

#: State codes of the fleet view, most severe highest (the classifier's order).
STATE_CODES: dict[str, int] = {"healthy": 0, **{str(c): len(SEVERITY) - i for i, c in enumerate(SEVERITY)}}
STATE_COLORS = {
    "healthy": "green",
    "idle": "blue",
    "boom_bust": "orange",
    "rate_limited": "purple",
    "overflow": "red",
    "stalled": "dark-red",
}


def _target(expr: str, legend: str, ref: str, *, instant: bool = False) -> Target:
    return Target(expr=expr, legendFormat=legend, refId=ref, datasource=DATASOURCE, instant=instant)


def _targets(*queries: tuple[str, str]) -> list[Target]:
    return [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


def _steps(threshold: float | None, color: str = "red") -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if threshold is not None:
        steps.append({"color": color, "value": threshold})
    return steps


def _value_mappings(states: dict[str, int]) -> list[dict[str, Any]]:
    return [
        {
            "type": "value",
            "options": {
                str(code): {"text": state, "color": STATE_COLORS[state], "index": i}
                for i, (state, code) in enumerate(states.items())
            },
        }
    ]


def _ratio_panel(title: str, description: str, expr: str, threshold: float) -> TimeSeries:
    return TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=_targets((expr, "{{queue}}")),
        unit="percentunit",
        valueMin=0,
        valueMax=1,
        thresholds=_steps(threshold),
        thresholdsStyleMode="line",
        legendCalcs=["lastNotNull", "max"],
        legendDisplayMode="table",
    )


def overview(cfg: RulesConfig) -> list[Any]:
    m = Compiler.measure_name
    c = cfg.classifier
    window = f"{cfg.window_s:g} s"
    return [
        StateTimeline(
            title="Conditions",
            description=(
                "The in-process classifier's verdict per condition (qhealth_condition, 1 = active): "
                f"stalled, overflow, rate_limited, boom_bust, idle, judged every tick on a {window} window "
                "with hysteresis. The alerts fire on the Prometheus rules' replay of it (fleet row)."
            ),
            dataSource=DATASOURCE,
            targets=_targets(
                (f"max by (queue, condition) (qhealth_condition{{{SELECTED}}})", "{{queue}} {{condition}}")
            ),
            mappings=[
                {
                    "type": "value",
                    "options": {
                        "0": {"text": "ok", "color": "green", "index": 0},
                        "1": {"text": "active", "color": "red", "index": 1},
                    },
                }
            ],
            showValue="never",
            legendDisplayMode="hidden",
        ),
        TimeSeries(
            title="Depth vs capacity",
            description=(
                "Items waiting in the queue, and the queue's capacity where it is bounded. A depth riding "
                f"{c.overflow_near_capacity:.0%} of capacity is overflow; a saw-tooth that drops to zero at "
                "the poll period is boom-bust."
            ),
            dataSource=DATASOURCE,
            targets=_targets(
                (
                    f"{cfg.depth_aggregation} by (queue) (qhealth_queue_depth{{{SELECTED}}})",
                    "{{queue}} depth",
                ),
                (
                    f"{cfg.depth_aggregation} by (queue) (qhealth_queue_capacity{{{SELECTED}}})",
                    "{{queue}} capacity",
                ),
            ),
            unit="short",
            valueMin=0,
        ),
        TimeSeries(
            title="Throughput",
            description=(
                "Items put on the queue and items whose processing ended (and of those, failed), per "
                "second. Arriving above processed for long is overflow; processed at zero with items "
                "waiting is a stall."
            ),
            dataSource=DATASOURCE,
            targets=_targets(
                (
                    f"sum by (queue) (rate(qhealth_items_enqueued_total{{{SELECTED}}}[{RATE}]))",
                    "{{queue}} arriving",
                ),
                (
                    f"sum by (queue) (rate(qhealth_items_processed_total{{{SELECTED}}}[{RATE}]))",
                    "{{queue}} processed",
                ),
                (
                    f"sum by (queue) (rate(qhealth_items_processed_total"
                    f'{{{SELECTED},outcome="error"}}[{RATE}]))',
                    "{{queue}} failed",
                ),
            ),
            unit="suffix: items/s",
            valueMin=0,
        ),
        TimeSeries(
            title="Busy vs idle workers",
            description=(
                "Workers holding an item (processing it, or sleeping before a retry) and workers with "
                "nothing to do, stacked: the top of the stack is the pool size. Busy swinging between "
                "none and all at the poll period is boom-bust."
            ),
            dataSource=DATASOURCE,
            targets=_targets(
                (f"sum by (queue) (qhealth_workers_busy{{{SELECTED}}})", "{{queue}} busy"),
                (
                    f"sum by (queue) (qhealth_workers{{{SELECTED}}}) - sum by (queue) "
                    f"(qhealth_workers_busy{{{SELECTED}}})",
                    "{{queue}} idle",
                ),
            ),
            unit="short",
            valueMin=0,
            fillOpacity=40,
            stacking={"mode": "normal", "group": "A"},
        ),
        _ratio_panel(
            "Idle ratio",
            f"Idle worker-time / worker-time over the {window} window, summed over every process of the "
            f"queue (the rules' {m('idle_ratio')}). Above the line ({c.idle_on:.0%}) with an empty queue "
            "is idle.",
            f"{m('idle_ratio')}{{{SELECTED}}}",
            c.idle_on,
        ),
        _ratio_panel(
            "429 ratio",
            f"Downstream calls answered 429 (rate limited) / calls over the {window} window "
            f"({m('rate_limited_ratio')}). Above the line ({c.rate_limited_on:.0%}) is a rate-limit storm.",
            f"{m('rate_limited_ratio')}{{{SELECTED}}}",
            c.rate_limited_on,
        ),
        _ratio_panel(
            "Workers idle next to waiting items",
            "Boom-bust, how much: the share of the pool's workers that sat idle while items waited for "
            f"them, over the samples of the {window} window ({m('idle_capacity_share')}). A blocking pool "
            f"stays near zero; above the line ({c.boom_bust_idle_capacity_on:.0%}), while items also wait "
            f"long next to idle workers (at least {c.boom_bust_idle_wait_on:g} s each), is boom-bust.",
            f"{m('idle_capacity_share')}{{{SELECTED}}}",
            c.boom_bust_idle_capacity_on,
        ),
        TimeSeries(
            title="Wait next to idle workers",
            description=(
                "Boom-bust, how long: seconds an item waits while a worker sits idle, by Little's law "
                f"({m('idle_wait_s')}). Consumers that back off for a moment keep it a fraction of a "
                "second; workers that sleep in step keep each cycle's arrivals waiting for seconds."
            ),
            dataSource=DATASOURCE,
            targets=_targets((f"{m('idle_wait_s')}{{{SELECTED}}}", "{{queue}}")),
            unit="s",
            valueMin=0,
            thresholds=_steps(c.boom_bust_idle_wait_on),
            thresholdsStyleMode="line",
        ),
        *(
            TimeSeries(
                title=title,
                description=description,
                dataSource=DATASOURCE,
                targets=_targets(
                    *(
                        (
                            f"histogram_quantile({q}, sum by (queue, le) "
                            f"(rate({metric}_bucket{{{SELECTED}}}[{RATE}])))",
                            f"{{{{queue}}}} p{round(q * 100)}",
                        )
                        for q in (0.5, 0.9, 0.99)
                    )
                ),
                unit="s",
                valueMin=0,
            )
            for title, description, metric in (
                (
                    "Wait latency",
                    "Time from enqueue to the start of processing (qhealth_item_wait_seconds), 50th, 90th "
                    "and 99th percentiles. Climbing with the depth: overflow or a stall; spiking at the "
                    "poll period: boom-bust.",
                    "qhealth_item_wait_seconds",
                ),
                (
                    "Processing latency",
                    "Processing time of an item (qhealth_item_duration_seconds), 50th, 90th and 99th "
                    "percentiles, retries included. A slower downstream shows here first.",
                    "qhealth_item_duration_seconds",
                ),
            )
        ),
    ]


def polling(cfg: RulesConfig) -> list[Any]:
    polls = f"qhealth_polls_total{{{SELECTED}}}"
    return [
        TimeSeries(
            title="Polls: empty vs hit",
            description=(
                "Polls by polling workers that found an item (hit) or nothing (empty), per second, stacked. "
                "Blocking workers do not poll and show nothing here. Many empty polls are wasted broker "
                "calls; empty polls next to a backlog mean workers sleep while work waits."
            ),
            dataSource=DATASOURCE,
            targets=_targets((f"sum by (queue, result) (rate({polls}[{RATE}]))", "{{queue}} {{result}}")),
            unit="suffix: polls/s",
            valueMin=0,
            fillOpacity=40,
            stacking={"mode": "normal", "group": "A"},
        ),
        TimeSeries(
            title="Empty poll share",
            description=(
                "Share of polls that came back empty. Near 100% for long: the pool polls an idle queue "
                "(scale down, or block instead of polling)."
            ),
            dataSource=DATASOURCE,
            targets=_targets(
                (
                    f'sum by (queue) (rate(qhealth_polls_total{{{SELECTED},result="empty"}}[{RATE}])) '
                    f"/ sum by (queue) (rate({polls}[{RATE}]))",
                    "{{queue}}",
                )
            ),
            unit="percentunit",
            valueMin=0,
            valueMax=1,
        ),
    ]


def fleet_state_expr(cfg: RulesConfig) -> str:
    """Each queue's most severe active condition as a code (``STATE_CODES``), 0 when healthy."""
    depth = Compiler(cfg).gauge_name("depth")
    terms = [
        f'{code} * {CONDITION_SERIES}{{condition="{state}"}}' for state, code in STATE_CODES.items() if code
    ]
    terms.append(f"0 * {depth}")
    return "max by (queue) (\n  " + "\nor\n  ".join(terms) + "\n)"


def fleet(cfg: RulesConfig) -> list[Any]:
    state = fleet_state_expr(cfg)
    about = (
        "From the Prometheus rules (queue:qhealth_condition:active), summed over every process of a queue: "
        "what the alerts fire on. Most severe first: stalled, overflow, rate_limited, boom_bust, idle."
    )
    return [
        Stat(
            title="Queue states now",
            description=f"Every queue's state now. {about}",
            dataSource=DATASOURCE,
            targets=[_target(state, "{{queue}}", "A", instant=True)],
            mappings=_value_mappings(STATE_CODES),
            colorMode="background",
            graphMode="none",
            textMode="value_and_name",
            reduceCalc="lastNotNull",
            format="none",
            noValue="no queues",
            thresholds=_steps(None),
        ),
        Stat(
            title="Queues per condition",
            description=f"How many queues are in each condition now. {about}",
            dataSource=DATASOURCE,
            targets=[
                _target(f"count by (condition) ({CONDITION_SERIES})", "{{condition}}", "A", instant=True)
            ],
            colorMode="value",
            graphMode="none",
            textMode="value_and_name",
            reduceCalc="lastNotNull",
            format="short",
            noValue="0",
            thresholds=_steps(None),
        ),
        StateTimeline(
            title="Queue states over time",
            description=f"Every queue's state over time, one row per queue. {about}",
            dataSource=DATASOURCE,
            targets=_targets((state, "{{queue}}")),
            mappings=_value_mappings(STATE_CODES),
            showValue="never",
            legendDisplayMode="hidden",
        ),
    ]


def _layout(panels: Sequence[Any], y: int, widths: Sequence[int], height: int) -> tuple[list[Any], int]:
    """Place panels left to right, wrapping at the grid's width."""
    placed, x = [], 0
    for panel, width in zip(panels, widths, strict=True):
        if x + width > WIDTH:
            x, y = 0, y + height
        panel.gridPos = {"h": height, "w": width, "x": x, "y": y}
        placed.append(panel)
        x += width
    return placed, y + height


def build(cfg: RulesConfig | None = None) -> Dashboard:
    cfg = cfg or RulesConfig()
    panels: list[Any] = []
    y = 0
    sections: list[tuple[str, list[Any], list[int], int]] = [
        ("Overview", overview(cfg), [24] + [12] * 9, 8),
        ("Polling efficiency", polling(cfg), [12, 12], 8),
        ("Fleet", fleet(cfg), [16, 8, 24], 8),
    ]
    for title, content, widths, height in sections:
        panels.append(RowPanel(title=title, gridPos={"h": 1, "w": WIDTH, "x": 0, "y": y}))
        placed, y = _layout(content, y + 1, widths, height)
        panels += placed
    queue_values = "label_values(qhealth_queue_depth, queue)"
    return Dashboard(
        title="Queue health",
        uid=cfg.dashboard_uid,
        description=(
            "qhealth: depth, throughput, workers and 429s of worker pools, and the conditions the classifier "
            "and the Prometheus rules see (stalled, overflow, rate_limited, boom_bust, idle)."
        ),
        tags=["qhealth"],
        timezone="browser",
        refresh="30s",
        time=Time("now-1h", "now"),
        schemaVersion=39,
        graphTooltip=1,
        templating=Templating(
            [
                Template(name="datasource", label="Data source", query="prometheus", type="datasource"),
                Template(
                    name="queue",
                    label="Queue",
                    query=queue_values,
                    dataSource=DATASOURCE,
                    multi=True,
                    includeAll=True,
                    allValue=".+",
                    default="$__all",
                    refresh=2,
                ),
            ]
        ),
        panels=panels,
    ).auto_panel_ids()


#: Keys grafanalib always writes that current Grafana dropped (see shared/TOOLING.md).
_LEGACY_DASHBOARD_KEYS = ("rows", "style", "sharedCrosshair", "hideControls", "__inputs")
_LEGACY_PANEL_KEYS = ("span", "minSpan", "height", "error", "thresholdType", "maxDataPoints")
_LEGACY_TARGET_KEYS = ("query", "target", "metric", "step", "intervalFactor")
_LEGACY_VARIABLE_KEYS = ("auto", "auto_count", "auto_min", "useTags", "tagsQuery", "tagValuesQuery")


def _clean(value: Any, key: str | None = None) -> Any:
    """Drop explicit nulls (keeping a threshold base step's ``value: null``)."""
    if isinstance(value, dict):
        keep_null = "color" in value and "value" in value
        return {k: _clean(v, k) for k, v in value.items() if v is not None or (keep_null and k == "value")}
    if isinstance(value, list):
        return [_clean(v, key) for v in value]
    return value


def to_json_data(dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's current JSON model, legacy keys stripped."""
    import json

    from grafanalib._gen import DashboardEncoder

    data: dict[str, Any] = json.loads(json.dumps(dashboard.to_json_data(), cls=DashboardEncoder))
    for legacy in _LEGACY_DASHBOARD_KEYS:
        data.pop(legacy, None)
    for variable in data["templating"]["list"]:
        for legacy in _LEGACY_VARIABLE_KEYS:
            variable.pop(legacy, None)
    for panel in data["panels"]:
        steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps")
        if steps == []:  # Grafana needs the base step
            panel["fieldConfig"]["defaults"]["thresholds"]["steps"] = _steps(None)
        for legacy in _LEGACY_PANEL_KEYS:
            panel.pop(legacy, None)
        for target in panel.get("targets", []):
            for legacy in _LEGACY_TARGET_KEYS:
                target.pop(legacy, None)
    cleaned: dict[str, Any] = _clean(data)
    return cleaned
