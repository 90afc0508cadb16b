"""The Prometheus recording and alerting rules, built from :mod:`alerts.config`.

The rules replay the in-process classifier (``qhealth/_classifier.py``) in
PromQL over the exported counters and gauges, aggregated by ``queue`` across
processes and hosts:

* whole-window totals are ``increase()`` over the window, exactly the
  classifier's sums of per-interval increases;
* per-sample shares ("items waiting in 90% of samples") are ``avg_over_time``
  of a 0/1 expression over a subquery at ``resolution_s``;
* the boom-bust measure, idle worker-time that passed *while items waited*,
  needs the idle increase of each interval that had a backlog at both ends. A
  subquery at ``resolution_s`` takes ``idle - idle offset step`` at each step
  and keeps it when the depth was above zero at both ``t`` and ``t - step``.
  Differences of instant lookups telescope, so each scrape interval is counted
  once whatever the scrape interval, and on data sampled every ``resolution_s``
  (or any multiple) the sum equals the classifier's.

Like the classifier, a queue is judged only once its data reaches back a
whole window (``queue:qhealth_window:full``: the depth series existed one
window ago). A measure whose series is absent (a field the source does not
know) leaves its condition unjudged, or, where the classifier falls back on
another measure (boom-bust without busy workers), falls back the same way.

What the rules do not replay is the classifier's hysteresis (a condition held
until the recent part of the window clears): they apply its switch-on rule at
every evaluation, and the alerts' ``for:`` and ``keep_firing_for:`` take the
place of the hold.

Everything lives in one group, in order: the aggregates first, then one
``queue:qhealth_condition:active{condition=...}`` series per condition (1 while
the condition's expression holds, absent otherwise), then the alerts reading
it. Rules of one group are evaluated in order at the same timestamp, so an
alert always reads the aggregates of its own evaluation (rules spread over
several groups are evaluated in no fixed order).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

from qhealth import Condition

from .config import RulesConfig, duration

CONDITION_SERIES = "queue:qhealth_condition:active"


class _Names:
    """Names of the recorded series (they depend on the depth aggregation)."""

    def __init__(self, cfg: RulesConfig) -> None:
        agg = cfg.depth_aggregation
        self.depth = f"queue:qhealth_queue_depth:{agg}"
        self.capacity = f"queue:qhealth_queue_capacity:{agg}"
        self.workers = "queue:qhealth_workers:sum"
        self.busy = "queue:qhealth_workers_busy:sum"
        self.arrival = "queue:qhealth_items_enqueued:rate"
        self.throughput = "queue:qhealth_items_processed:rate"
        self.failed = "queue:qhealth_items_failed:rate"
        self.attempts = "queue:qhealth_attempts:increase"
        self.worker_seconds = "queue:qhealth_worker_seconds:window"
        self.idle_ratio = "queue:qhealth_idle_ratio:window"
        self.idle_ratio_recent = "queue:qhealth_idle_ratio:recent"
        self.rate_limited_ratio = "queue:qhealth_rate_limited_ratio:window"
        self.rate_limited_ratio_recent = "queue:qhealth_rate_limited_ratio:recent"
        self.waiting_idle_ratio = "queue:qhealth_waiting_idle_ratio:window"
        self.waiting_idle_ratio_recent = "queue:qhealth_waiting_idle_ratio:recent"
        self.backlog_idle_share = "queue:qhealth_backlog_idle:share"
        self.backlog_idle_share_recent = "queue:qhealth_backlog_idle:share_recent"
        self.waiting_share = "queue:qhealth_queue_waiting:share"
        self.no_backlog_share = "queue:qhealth_no_backlog:share"
        self.no_backlog_share_recent = "queue:qhealth_no_backlog:share_recent"
        self.full_share = "queue:qhealth_queue_near_capacity:share"
        self.full_share_recent = "queue:qhealth_queue_near_capacity:share_recent"
        self.depth_first_third = "queue:qhealth_queue_depth:max_first_third"
        self.depth_last_third = "queue:qhealth_queue_depth:min_last_third"
        self.window_full = "queue:qhealth_window:full"


def names(cfg: RulesConfig | None = None) -> _Names:
    return _Names(cfg or RulesConfig())


def _indent(text: str, by: int = 2) -> str:
    return "\n".join(" " * by + line for line in text.splitlines())


def _num(value: float) -> str:
    return f"{value:g}"


def _ratio(part: str, whole: str) -> str:
    """part / whole, capped at 1, absent where the whole is zero."""
    return f"clamp_max(\n  {part}\n/\n  ({whole} > 0),\n1)"


def recording_rules(cfg: RulesConfig) -> list[dict[str, Any]]:
    """The window aggregates, one recorded series per queue each."""
    n = _Names(cfg)
    agg = cfg.depth_aggregation
    step = duration(cfg.resolution_s)
    window, recent = cfg.window_s, cfg.recent_s
    w, r = duration(window), duration(recent)
    # Interval measures: steps ending in (t - span, t]; sample measures: samples in [t - span, t].
    w_steps, r_steps = duration(window - cfg.resolution_s / 2), duration(recent - cfg.resolution_s / 2)
    third = window / 3
    third_range = duration(third - cfg.resolution_s)
    first_third_offset = duration(window - third + cfg.resolution_s)

    def raw(metric: str, *matchers: str) -> str:
        parts = [m for m in (cfg.selector, *matchers) if m]
        return metric + ("{" + ",".join(parts) + "}" if parts else "")

    depth = f"{agg} by (queue) ({raw('qhealth_queue_depth')})"
    depth_before = f"{agg} by (queue) ({raw('qhealth_queue_depth')} offset {step})"
    busy = f"sum by (queue) ({raw('qhealth_workers_busy')})"
    workers = f"sum by (queue) ({raw('qhealth_workers')})"
    idle = raw("qhealth_worker_idle_seconds_total")
    near = _num(cfg.classifier.overflow_near_capacity)
    failed = raw("qhealth_items_processed_total", 'outcome="error"')

    def increase(metric: str, span: str) -> str:
        return f"sum by (queue) (increase({raw(metric)}[{span}]))"

    def worker_seconds(span: str, seconds: float) -> str:
        return f"sum by (queue) (avg_over_time({raw('qhealth_workers')}[{span}])) * {_num(seconds)}"

    def waiting_idle(span: str) -> str:
        return (
            "sum_over_time((\n"
            f"    sum by (queue) (clamp_min({idle} - {idle} offset {step}, 0))\n"
            f"  * ({depth} > bool 0)\n"
            f"  * ({depth_before} > bool 0)\n"
            f")[{span}:{step}])"
        )

    def backlog_idle(span: str) -> str:
        # Samples with idle workers next to a backlog that could occupy them all.
        idle_workers = f"({workers} - on (queue) {busy})"
        return (
            f"avg_over_time((\n    ({idle_workers} >= bool 1)\n"
            f"  * on (queue) ({depth} >= bool on (queue) {idle_workers})\n)[{span}:{step}])"
        )

    def no_backlog(span: str) -> str:
        # Samples with an empty queue, or fewer items than idle workers (an item caught
        # between arrival and pickup); just an empty queue where busy workers are unknown.
        idle_workers = f"({workers} - on (queue) {busy})"
        return (
            "avg_over_time((\n"
            f"    clamp_max(({depth} == bool 0) + on (queue) ({depth} < bool on (queue) {idle_workers}), 1)\n"
            f"  or on (queue)\n    ({depth} == bool 0)\n"
            f")[{span}:{step}])"
        )

    return [
        # Like the classifier's warm-up: judge a queue only once its data reaches back a whole window.
        {"record": n.window_full, "expr": f"count by (queue) ({raw('qhealth_queue_depth')} offset {w})"},
        {"record": n.depth, "expr": depth},
        {"record": n.capacity, "expr": f"{agg} by (queue) ({raw('qhealth_queue_capacity')})"},
        {"record": n.workers, "expr": workers},
        {"record": n.busy, "expr": busy},
        {"record": n.arrival, "expr": f"sum by (queue) (rate({raw('qhealth_items_enqueued_total')}[{w}]))"},
        {
            "record": n.throughput,
            "expr": f"sum by (queue) (rate({raw('qhealth_items_processed_total')}[{w}]))",
        },
        {
            "record": n.failed,
            "expr": f"sum by (queue) (rate({failed}[{w}]))",
        },
        {"record": n.attempts, "expr": increase("qhealth_attempts_total", w)},
        {
            "record": n.rate_limited_ratio,
            "expr": _ratio(increase("qhealth_rate_limited_total", w), n.attempts),
        },
        {
            "record": n.rate_limited_ratio_recent,
            "expr": _ratio(increase("qhealth_rate_limited_total", r), increase("qhealth_attempts_total", r)),
        },
        {"record": n.worker_seconds, "expr": worker_seconds(w, window)},
        {
            "record": n.idle_ratio,
            "expr": _ratio(increase("qhealth_worker_idle_seconds_total", w), n.worker_seconds),
        },
        {
            "record": n.idle_ratio_recent,
            "expr": _ratio(increase("qhealth_worker_idle_seconds_total", r), worker_seconds(r, recent)),
        },
        {
            "record": n.waiting_idle_ratio,
            "expr": f"{waiting_idle(w_steps)}\n/\n({n.worker_seconds} > 0)",
        },
        {
            "record": n.waiting_idle_ratio_recent,
            "expr": f"{waiting_idle(r_steps)}\n/\n({worker_seconds(r, recent)} > 0)",
        },
        {"record": n.backlog_idle_share, "expr": backlog_idle(w)},
        {"record": n.backlog_idle_share_recent, "expr": backlog_idle(r)},
        {"record": n.waiting_share, "expr": f"avg_over_time(({depth} > bool 0)[{w}:{step}])"},
        {"record": n.no_backlog_share, "expr": no_backlog(w)},
        {"record": n.no_backlog_share_recent, "expr": no_backlog(r)},
        {
            "record": n.full_share,
            "expr": f"avg_over_time(({depth} >= bool {near} * {n.capacity})[{w}:{step}])",
        },
        {
            "record": n.full_share_recent,
            "expr": f"avg_over_time(({depth} >= bool {near} * {n.capacity})[{r}:{step}])",
        },
        {
            "record": n.depth_first_third,
            "expr": f"max_over_time(({depth})[{third_range}:{step}] offset {first_third_offset})",
        },
        {"record": n.depth_last_third, "expr": f"min_over_time(({depth})[{third_range}:{step}])"},
    ]


def condition_exprs(cfg: RulesConfig) -> dict[Condition, str]:
    """Each condition's expression: the classifier's switch-on rule, one series per queue."""
    n = _Names(cfg)
    c = cfg.classifier
    near = _num(c.overflow_near_capacity)
    window = _num(cfg.window_s)
    return {
        Condition.STALLED: (
            f"    {n.throughput} == 0\n"
            f"  and on (queue)\n    {n.depth} > 0\n"
            f"  and on (queue)\n    {n.waiting_share} >= {_num(c.stalled_waiting_share)}"
        ),
        Condition.OVERFLOW: (
            "    (\n"
            f"        {n.full_share} >= {_num(c.overflow_full_on)}\n"
            f"      and on (queue)\n        {n.full_share_recent} >= {_num(c.overflow_full_off)}\n"
            "    )\n"
            "  or on (queue)\n"
            "    (\n"
            f"        {n.waiting_share} >= {_num(c.overflow_backlog_share)}\n"
            "      and on (queue)\n"
            "        (\n"
            f"            {n.depth_last_third} > on (queue) {n.depth_first_third}\n"
            f"          or on (queue)\n            {n.depth_last_third} >= on (queue) {near} * {n.capacity}\n"
            "        )\n"
            "      and on (queue)\n"
            "        (\n"
            f"            {n.depth_last_third} - on (queue) {n.depth_first_third}\n"
            f"              >= on (queue) {_num(c.overflow_growth_on)} * {window} * {n.throughput}\n"
            f"          or on (queue)\n            {n.throughput} == 0\n"
            f"          or on (queue)\n            {n.depth_last_third} >= on (queue) {near} * {n.capacity}\n"
            "        )\n"
            "      unless on (queue)\n"
            "        (\n"
            f"            {n.arrival} < on (queue) {_num(c.overflow_inflow_on)} * {n.throughput}\n"
            f"          or on (queue)\n            {n.arrival} == 0\n"
            "        )\n"
            "    )"
        ),
        Condition.RATE_LIMITED: (
            f"    {n.attempts} >= {_num(c.rate_limited_min_calls)}\n"
            f"  and on (queue)\n    {n.rate_limited_ratio} >= {_num(c.rate_limited_on)}\n"
            f"  and on (queue)\n    {n.rate_limited_ratio_recent} >= {_num(c.rate_limited_off)}"
        ),
        Condition.BOOM_BUST: (
            "    (\n"
            f"        {n.backlog_idle_share} >= {_num(c.boom_bust_backlog_on)}\n"
            f"      and on (queue)\n"
            f"        {n.backlog_idle_share_recent} >= {_num(c.boom_bust_backlog_off)}\n"
            # Busy workers unknown: idle time accrued while items waited alone.
            f"    or on (queue)\n        {n.waiting_idle_ratio} >= {_num(c.boom_bust_on)}\n"
            f"      unless on (queue)\n        {n.backlog_idle_share}\n"
            "    )\n"
            # Idle time between samples, when known, must confirm it.
            f"  unless on (queue)\n    {n.waiting_idle_ratio} < {_num(c.boom_bust_on)}\n"
            f"  unless on (queue)\n    {n.waiting_idle_ratio_recent} < {_num(c.boom_bust_off)}\n"
            f"  unless on (queue)\n    {n.throughput} == 0"
        ),
        Condition.IDLE: (
            f"    {n.idle_ratio} >= {_num(c.idle_on)}\n"
            f"  and on (queue)\n    {n.idle_ratio_recent} >= {_num(c.idle_off)}\n"
            f"  and on (queue)\n    {n.no_backlog_share} >= {_num(c.idle_empty_share)}\n"
            f"  and on (queue)\n    {n.no_backlog_share_recent} >= {_num(c.idle_empty_share)}"
        ),
    }


def _measures(cfg: RulesConfig) -> dict[str, tuple[str, str]]:
    """Template placeholders -> (recorded series, Go template formatter)."""
    n = _Names(cfg)
    return {
        "depth": (n.depth, "humanize"),
        "capacity": (n.capacity, "humanize"),
        "workers": (n.workers, "humanize"),
        "busy": (n.busy, "humanize"),
        "arrival": (n.arrival, "humanize"),
        "throughput": (n.throughput, "humanize"),
        "attempts": (n.attempts, "humanize"),
        "idle_ratio": (n.idle_ratio, "humanizePercentage"),
        "rate_limited_ratio": (n.rate_limited_ratio, "humanizePercentage"),
        "waiting_idle_ratio": (n.waiting_idle_ratio, "humanizePercentage"),
        "backlog_idle_share": (n.backlog_idle_share, "humanizePercentage"),
    }


def render_template(text: str, cfg: RulesConfig) -> str:
    """Expand ``{{ measure_X }}`` and ``{{ window }}`` into Prometheus template code."""
    measures = _measures(cfg)

    def expand(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "window":
            return duration(cfg.window_s)
        name = key.removeprefix("measure_")
        if not key.startswith("measure_") or name not in measures:
            raise ValueError(f"unknown placeholder {{{{ {key} }}}} in an alert template")
        series, fmt = measures[name]
        return (
            f'{{{{ with printf "{series}{{queue=%q}}" $labels.queue | query }}}}'
            f"{{{{ . | first | value | {fmt} }}}}{{{{ else }}}}unknown{{{{ end }}}}"
        )

    return re.sub(r"\{\{ (window|measure_\w+) \}\}", expand, text)


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
                    "runbook_url": f"{cfg.runbook_url}#{alert.name.lower()}",
                    "dashboard_url": f"{cfg.dashboard_url}?var-queue={{{{ $labels.queue }}}}",
                },
            }
        )
    return rules


def build(cfg: RulesConfig | None = None) -> dict[str, Any]:
    """The whole rules file as a dict (one group; order matters, see the module doc)."""
    cfg = cfg or RulesConfig()
    n = _Names(cfg)
    conditions = [
        {
            "record": CONDITION_SERIES,
            "expr": (
                f"count by (queue) (\n  (\n{_indent(expr)}\n  )\n  and on (queue)\n    {n.window_full}\n)"
            ),
            "labels": {"condition": str(condition)},
        }
        for condition, expr in condition_exprs(cfg).items()
    ]
    return {
        "groups": [
            {
                "name": "qhealth",
                "rules": [*recording_rules(cfg), *conditions, *alerting_rules(cfg)],
            }
        ]
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so the PromQL reads as written."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

HEADER = (
    "# Generated by `python3 -m alerts` from alerts/config.py and the classifier's settings\n"
    "# (qhealth/_config.py): do not edit by hand. A test fails when this file differs from a fresh build.\n"
)


def render(rules: dict[str, Any], header: str = HEADER) -> str:
    dump: Callable[..., str] = yaml.dump
    return header + dump(rules, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
