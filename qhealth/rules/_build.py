"""The rules file: recording rules that replay the classifier, and the alerts.

Everything lives in one group whose ``interval`` is the scrape interval, in
order: the gauges and sample series of each evaluation, the window gate, every
measure of :mod:`qhealth._measures` over the window and its recent part, one
``queue:qhealth_condition:active{condition=...}`` series per condition, then
the alerts. Rules of one group run in order at the same timestamp, so a rule
always reads what the rules before it recorded at this evaluation (rules
spread over several groups run in no fixed order).

A condition's rule reads its own previous value: it turns on when its ``on``
predicate holds and stays on while its ``hold`` predicate holds, the same
hysteresis as the classifier's.
"""

from __future__ import annotations

import re
from typing import Any

from .._condition import SEVERITY
from .._measures import MEASURES, RULE
from ._config import MONITOR_DOWN, RulesConfig, duration
from ._promql import CONDITION_SERIES, WINDOW_FULL, Compiler, num


def _indent(text: str, by: int = 2) -> str:
    return "\n".join(" " * by + line for line in text.splitlines())


_JOINS = ("and", "or", "unless")


def _pretty(expr: str) -> str:
    """Break a long PromQL expression at its top-level ``and``/``or``/``unless``."""
    if len(expr) <= 100:
        return expr
    depth, out, start = 0, [], 0
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 1 and any(expr.startswith(f" {op} on (queue) ", i) for op in _JOINS):
            out.append(expr[start:i])
            start = i + 1
        i += 1
    out.append(expr[start:])
    return "\n".join(out) if len(out) > 1 else expr


def recording_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    """The sample series, the window gate and every measure, one series per queue each."""
    q = Compiler(cfg)
    rules: list[dict[str, Any]] = [{"record": name, "expr": expr} for name, expr in q.sample_rules()]
    gate, gate_expr = q.window_rule()
    rules.append({"record": gate, "expr": gate_expr})
    for measure in MEASURES:
        for part in measure.parts:
            rules.append(
                {
                    "record": q.measure_name(measure.name, part),
                    "expr": _pretty(q.agg(measure.expr(part)).text),
                }
            )
    return rules


def condition_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    """One series per active condition: on when ``on`` holds, kept while ``hold`` holds."""
    q = Compiler(cfg)
    out = []
    for condition in SEVERITY:
        rule = RULE[condition]
        previous = f'{CONDITION_SERIES}{{condition="{condition}"}}'
        expr = (
            "count by (queue) (\n"
            "  (\n"
            f"{_indent(_pretty(q.pred(rule.on)), 4)}\n"
            "  or on (queue)\n"
            f"    ({previous} and on (queue)\n"
            f"{_indent(_pretty(q.pred(rule.hold)), 6)})\n"
            "  )\n"
            f"  and on (queue) {WINDOW_FULL}\n"
            ")"
        )
        out.append({"record": CONDITION_SERIES, "expr": expr, "labels": {"condition": str(condition)}})
    return out


def _measure_series(cfg: RulesConfig, name: str) -> tuple[str, str]:
    """(series, Go template formatter) of a placeholder ``measure_NAME``."""
    q = Compiler(cfg)
    if name in ("depth", "capacity", "workers", "busy"):
        return q.gauge_name(name), "humanize"
    by_name = {m.name: m for m in MEASURES}
    if name not in by_name:
        raise ValueError(f"unknown placeholder {{{{ measure_{name} }}}} in an alert template")
    measure = by_name[name]
    formatter = "humanizePercentage" if measure.unit == "ratio" else "humanize"
    return q.measure_name(name), formatter


def render_template(text: str, cfg: RulesConfig) -> str:
    """Expand ``{{ measure_X }}`` and ``{{ window }}`` into Prometheus template code."""

    def expand(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "window":
            return duration(cfg.window_s)
        if not key.startswith("measure_"):
            raise ValueError(f"unknown placeholder {{{{ {key} }}}} in an alert template")
        series, fmt = _measure_series(cfg, key.removeprefix("measure_"))
        return (
            f'{{{{ with printf "{series}{{queue=%q}}" $labels.queue | query }}}}'
            f"{{{{ . | first | value | {fmt} }}}}{{{{ else }}}}unknown{{{{ end }}}}"
        )

    return re.sub(r"\{\{ (window|measure_\w+) \}\}", expand, text)


def _links(cfg: RulesConfig, name: str) -> dict[str, str]:
    return {
        "runbook_url": f"{cfg.runbook_url}#{name.lower()}",
        "dashboard_url": f"{cfg.dashboard_url}?var-queue={{{{ $labels.queue }}}}",
    }


def alerting_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    rules = []
    for alert in cfg.alerts:
        rules.append(
            {
                "alert": alert.name,
                "expr": f'{CONDITION_SERIES}{{condition="{alert.condition}"}}',
                "for": duration(alert.for_s),
                "keep_firing_for": duration(cfg.keep_firing_for_s),
                "labels": {"severity": alert.severity},
                "annotations": {
                    "summary": render_template(alert.summary, cfg),
                    "description": render_template(alert.description, cfg),
                    **_links(cfg, alert.name),
                },
            }
        )
    q = Compiler(cfg)
    up = q.raw("qhealth_source_up")
    stamp = q.raw("qhealth_last_sample_timestamp_seconds")
    rules.append(
        {
            "alert": MONITOR_DOWN,
            "expr": (
                f"min by (queue) ({up}) == 0\n"
                f"or on (queue)\n"
                f"time() - max by (queue) ({stamp}) > {num(cfg.stale_after_s)}"
            ),
            "for": duration(cfg.monitor_down_for_s),
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "qhealth cannot read queue {{ $labels.queue }}: its conditions are not judged",
                "description": (
                    "{{ $labels.queue }}: the monitor's reads of the queue's source fail (broker down, key "
                    "gone, wrong password), or its last sample is older than "
                    f"{duration(cfg.stale_after_s)}. Nothing about this queue is judged until it answers "
                    "again: check the monitor's log (one line a minute names the error)."
                ),
                **_links(cfg, MONITOR_DOWN),
            },
        }
    )
    return rules


def build(cfg: RulesConfig | None = None) -> dict[str, Any]:
    """The whole rules file as a dict (one group; order matters, see the module doc)."""
    cfg = cfg or RulesConfig()
    return {
        "groups": [
            {
                "name": "qhealth",
                "interval": duration(cfg.scrape_interval_s),
                "rules": [*recording_rules(cfg), *condition_rules(cfg), *alerting_rules(cfg)],
            }
        ]
    }
