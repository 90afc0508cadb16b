"""Turn a labeled trace into a ``promtool test rules`` file.

The Prometheus rules in ``alerts/`` must say what the in-process classifier
says on the same data. A trace (``shared/spec/trace-format.md``) converts
one-to-one into Prometheus series: each sample is one scrape at its ``t``, the
cumulative counters are already Prometheus counters, and a ``null`` field
becomes a missing sample. Its ``.labels.json`` says which conditions hold in
which segments; the test expects, at every labeled sample:

* ``queue:qhealth_condition:active`` (the rules' verdict) to hold exactly the
  labeled conditions, and nothing in a healthy segment;
* each alert on a condition to be firing once the segment has lasted its
  ``for:``, and to be gone from a segment without its condition once
  ``keep_firing_for:`` has passed.

The expectations come from the labels, never from running the rules. The
output is YAML written by hand (the core needs only the standard library);
reading the alerts' ``for:`` durations from a rules file needs PyYAML.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._classifier import SEVERITY
from ._sample import Sample
from ._trace import Trace

CONDITION_SERIES = "queue:qhealth_condition:active"

_ALERT_EXPR = re.compile(r'^\s*queue:qhealth_condition:active\{condition="(\w+)"\}\s*$')
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class PromtoolError(ValueError):
    """Input the converter cannot turn into a test (names the file and the problem)."""


def prom_duration(seconds: float) -> str:
    """A Prometheus duration (``90`` -> ``1m30s``, ``0`` -> ``0s``)."""
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"a duration must be a finite number >= 0, got {seconds!r}")
    ms = round(seconds * 1000)
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as ``1m30s``."""
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return total


@dataclass(frozen=True, slots=True)
class AlertTiming:
    """What the test needs to know of one alert on a condition."""

    name: str
    condition: str
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Segment:
    t0: float
    t1: float
    conditions: frozenset[str]


def read_labels(path: str | os.PathLike[str]) -> list[Segment]:
    """The segments of a ``.labels.json`` file (``shared/traces/README.md``)."""
    source = os.fspath(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PromtoolError(f"{source}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise PromtoolError(f"{source}: not valid JSON ({exc})") from None
    known = {str(c) for c in SEVERITY}
    segments = []
    raw = data.get("segments") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        raise PromtoolError(f'{source}: expected an object with a "segments" list')
    for i, item in enumerate(raw):
        try:
            t0, t1, conditions = float(item["t0"]), float(item["t1"]), item["conditions"]
        except (KeyError, TypeError, ValueError):
            raise PromtoolError(
                f'{source}: segment {i} needs numbers "t0", "t1" and a "conditions" list'
            ) from None
        unknown = set(conditions) - known
        if unknown:
            raise PromtoolError(f"{source}: segment {i} has unknown conditions {sorted(unknown)}")
        if not t0 < t1:
            raise PromtoolError(f"{source}: segment {i} ends before it starts ({t0} >= {t1})")
        segments.append(Segment(t0, t1, frozenset(conditions)))
    return segments


def alerts_from_rules(path: str | os.PathLike[str]) -> list[AlertTiming]:
    """The alerts of a rules file whose expression is one condition of
    ``queue:qhealth_condition:active``, with their ``for:`` and ``keep_firing_for:``."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is in the dev extra
        raise PromtoolError("reading a rules file needs PyYAML: pip install pyyaml") from None
    source = os.fspath(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PromtoolError(f"{source}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise PromtoolError(f"{source}: not valid YAML ({exc})") from None
    alerts = []
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        raise PromtoolError(f'{source}: expected a Prometheus rules file with a "groups" list')
    for group in groups:
        for rule in group.get("rules") or []:
            if "alert" not in rule:
                continue
            match = _ALERT_EXPR.match(str(rule.get("expr", "")))
            if match is None:
                continue
            try:
                alerts.append(
                    AlertTiming(
                        name=str(rule["alert"]),
                        condition=match.group(1),
                        for_s=parse_duration(str(rule.get("for", "0s"))),
                        keep_firing_for_s=parse_duration(str(rule.get("keep_firing_for", "0s"))),
                    )
                )
            except ValueError as exc:
                raise PromtoolError(f"{source}: alert {rule['alert']}: {exc}") from None
    return alerts


# -- series ----------------------------------------------------------------------


def _slots(trace: Trace, source: str) -> dict[int, Sample]:
    """Each sample on the trace's sampling grid: slot k is time k * interval."""
    interval = trace.header.interval_s
    slots: dict[int, Sample] = {}
    for sample in trace.samples:
        slot = round(sample.t / interval)
        if slot < 0 or abs(sample.t - slot * interval) > 0.25 * interval:
            raise PromtoolError(
                f"{source}: sample at t={sample.t} is off the {interval:g} s sampling grid; "
                "promtool series need one sample per interval"
            )
        if slot in slots:
            raise PromtoolError(
                f"{source}: samples at t={slots[slot].t} and t={sample.t} fall in the same "
                f"{interval:g} s interval"
            )
        slots[slot] = sample
    return slots


def _fmt(value: float | None) -> str:
    if value is None:
        return "_"
    if float(value).is_integer():
        return str(int(value))
    return repr(round(float(value), 6))


def _label_set(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())) + "}"


def input_series(trace: Trace, source: str = "<trace>") -> list[dict[str, str]]:
    """The trace as promtool ``input_series`` (the qhealth metric contract's names).

    ``processed_total`` splits into ``outcome="success"`` and ``outcome="error"``
    (``failed_total``); when failures are unknown, every processed item counts as
    a success (the sum over outcomes, which is what the rules read, is right).
    """
    slots = _slots(trace, source)
    last = max(slots) if slots else -1
    samples = [slots.get(k) for k in range(last + 1)]
    queue = {"queue": trace.header.queue}

    def values(get: Any) -> str:
        return " ".join(_fmt(None if s is None else get(s)) for s in samples)

    def success(s: Sample) -> int | None:
        if s.processed_total is None:
            return None
        return s.processed_total - (s.failed_total or 0)

    series: list[tuple[str, dict[str, str], Any]] = [
        ("qhealth_queue_depth", queue, lambda s: s.depth),
        ("qhealth_workers", queue, lambda s: s.workers),
        ("qhealth_workers_busy", queue, lambda s: s.busy),
        ("qhealth_items_enqueued_total", queue, lambda s: s.enqueued_total),
        ("qhealth_items_processed_total", {**queue, "outcome": "success"}, success),
        ("qhealth_items_processed_total", {**queue, "outcome": "error"}, lambda s: s.failed_total),
        ("qhealth_attempts_total", queue, lambda s: s.attempts_total),
        ("qhealth_rate_limited_total", queue, lambda s: s.rate_limited_total),
        ("qhealth_worker_idle_seconds_total", queue, lambda s: s.idle_s_total),
    ]
    capacity = trace.header.capacity
    if capacity is not None:
        series.insert(1, ("qhealth_queue_capacity", queue, lambda s: capacity))
    out = []
    for name, labels, get in series:
        text = values(get)
        if set(text.split()) <= {"_"}:
            continue  # a field the source never knew: no series at all
        out.append({"series": name + _label_set(labels), "values": text})
    return out


# -- expectations ------------------------------------------------------------------


def _labeled_times(
    trace: Trace, segments: Sequence[Segment], every: float | None
) -> list[tuple[float, Segment]]:
    interval = trace.header.interval_s
    stride = max(1, round((every or interval) / interval))
    times = []
    for segment in segments:
        slots = [round(s.t / interval) for s in trace.samples if segment.t0 <= s.t < segment.t1]
        times += [(k * interval, segment) for k in slots[::stride]]
    return times


def build_test(
    trace: Trace,
    segments: Sequence[Segment],
    rule_files: Sequence[str],
    alerts: Iterable[AlertTiming] = (),
    *,
    every: float | None = None,
    name: str | None = None,
    source: str = "<trace>",
) -> dict[str, Any]:
    """The promtool test file (as a dict) for one labeled trace.

    ``every`` thins the checked samples (seconds between checks; default: every
    sample). The rules are evaluated at every sample whatever ``every`` is.
    """
    interval = trace.header.interval_s
    queue = trace.header.queue
    times = _labeled_times(trace, segments, every)
    if not times:
        raise PromtoolError(f"{source}: no sample falls inside a labeled segment")
    alerts = list(alerts)
    expr_tests: list[dict[str, Any]] = []
    for t, segment in times:
        expected = [
            {"labels": CONDITION_SERIES + _label_set({"condition": c, "queue": queue}), "value": 1}
            for c in sorted(segment.conditions)
        ]
        expr_tests.append({"expr": CONDITION_SERIES, "eval_time": prom_duration(t), "exp_samples": expected})
    for alert in alerts:
        for t, segment in times:
            query = f"count by (alertname, alertstate, queue) (ALERTS{_label_set({'alertname': alert.name})})"
            if alert.condition in segment.conditions and t >= segment.t0 + alert.for_s:
                labels = {"alertname": alert.name, "alertstate": "firing", "queue": queue}
                expected = [{"labels": _label_set(labels), "value": 1}]
            elif alert.condition not in segment.conditions and t >= segment.t0 + alert.keep_firing_for_s:
                expected = []
            else:
                continue  # pending, or still firing for keep_firing_for: not determined by the labels
            expr_tests.append({"expr": query, "eval_time": prom_duration(t), "exp_samples": expected})
    return {
        "rule_files": list(rule_files),
        "evaluation_interval": prom_duration(interval),
        "tests": [
            {
                "name": name or queue,
                "interval": prom_duration(interval),
                "input_series": input_series(trace, source),
                "promql_expr_test": expr_tests,
            }
        ],
    }


# -- YAML out ------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _fmt(value)
    if value is None:
        return "null"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def _inline(value: Any) -> str | None:
    """A value written on its key's line, or None for a block below it."""
    if isinstance(value, dict | list):
        return None if value else ("{}" if isinstance(value, dict) else "[]")
    return _scalar(value)


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists and scalars (enough for promtool files)."""
    pad = " " * indent
    if not isinstance(value, dict | list) or not value:
        return f"{pad}{_inline(value)}\n"
    out = []
    if isinstance(value, dict):
        for key, item in value.items():
            inline = _inline(item)
            out.append(
                f"{pad}{key}: {inline}\n"
                if inline is not None
                else f"{pad}{key}:\n{to_yaml(item, indent + 2)}"
            )
    else:
        for item in value:
            inline = _inline(item)
            # A block item starts on the dash's line: drop its own indentation there.
            out.append(
                f"{pad}- {inline}\n"
                if inline is not None
                else f"{pad}- {to_yaml(item, indent + 2)[indent + 2 :]}"
            )
    return "".join(out)
