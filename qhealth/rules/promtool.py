"""Traces as ``promtool test rules`` files.

A trace (``shared/spec/trace-format.md``) converts one-to-one into Prometheus
series: each sample is one scrape at its ``t``, the cumulative counters are
already Prometheus counters, and a ``null`` field is a missing sample. Two kinds
of test are written from it:

* :func:`build_test`, from the trace's labels (``NAME.labels.json``): at every
  labeled sample, ``queue:qhealth_condition:active`` must hold exactly the
  labeled conditions, and each alert on a condition must fire once the segment
  has lasted its ``for:`` (and be gone ``keep_firing_for`` into a segment
  without it). The expectations come from the labels, never from the rules.
* :func:`build_agreement_test`, from the in-process classifier: every measure
  the rules record must equal, within a tolerance, what the classifier
  computed on the same samples, and the conditions must be the classifier's.

:func:`resample` makes a coarser trace (every k-th sample), as a slower
scraper sees the same pool, with labels moved to match the longer window.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .._condition import SEVERITY
from .._sample import Sample
from .._trace import Trace
from ._config import RulesConfig, duration, parse_duration
from ._promql import CONDITION_SERIES, Compiler


class PromtoolError(ValueError):
    """Input that cannot become a test (names the file and the problem)."""


@dataclass(frozen=True, slots=True)
class AlertTiming:
    """What a test needs to know of one alert on a condition."""

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
    raw = data.get("segments") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        raise PromtoolError(f'{source}: expected an object with a "segments" list')
    segments = []
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


def alert_timings(cfg: RulesConfig) -> list[AlertTiming]:
    """The condition alerts of the rules generated from ``cfg``."""
    return [AlertTiming(a.name, str(a.condition), a.for_s, cfg.keep_firing_for_s) for a in cfg.alerts]


def alerts_from_rules(path: str | os.PathLike[str]) -> list[AlertTiming]:
    """The alerts of a rules file (yours, possibly edited) whose expression is one
    condition of ``queue:qhealth_condition:active``. Needs PyYAML
    (``pip install 'qhealth[promtool]'``)."""
    import re

    try:
        import yaml
    except ImportError:
        raise PromtoolError(
            "reading a rules file needs PyYAML: pip install 'qhealth[promtool]' (or pass no --rules "
            "to test the rules qhealth generates for --scrape-interval)"
        ) from None
    source = os.fspath(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PromtoolError(f"{source}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise PromtoolError(f"{source}: not valid YAML ({exc})") from None
    pattern = re.compile(r'^\s*queue:qhealth_condition:active\{condition="(\w+)"\}\s*$')
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        raise PromtoolError(f'{source}: expected a Prometheus rules file with a "groups" list')
    alerts = []
    for group in groups:
        for rule in group.get("rules") or []:
            match = pattern.match(str(rule.get("expr", ""))) if "alert" in rule else None
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


# -- series ------------------------------------------------------------------------


def _origin(trace: Trace) -> float:
    """Where the trace's sampling grid starts: its first sample, moved by the median
    offset of the samples from that grid (a recorder that started at t=0.4 s, or
    jittered sampling, still maps to one sample per slot)."""
    samples, interval = trace.samples, trace.header.interval_s
    if not samples:
        return 0.0
    t0 = samples[0].t
    offsets = sorted(((s.t - t0 + interval / 2) % interval) - interval / 2 for s in samples)
    return t0 + offsets[len(offsets) // 2]


def _slot(t: float, origin: float, interval: float) -> int:
    return round((t - origin) / interval)


def _slots(trace: Trace, source: str) -> dict[int, Sample]:
    """Each sample on the trace's sampling grid: slot k is ``k * interval`` after the
    grid's origin (:func:`_origin`), which becomes time 0 in promtool's series."""
    interval = trace.header.interval_s
    origin = _origin(trace)
    slots: dict[int, Sample] = {}
    for sample in trace.samples:
        slot = _slot(sample.t, origin, interval)
        if slot < 0 or abs(sample.t - origin - slot * interval) > 0.25 * interval:
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


def on_grid(trace: Trace, source: str = "<trace>") -> Trace:
    """The trace with each sample moved to its slot on the sampling grid: the
    samples promtool replays (slot k at time ``k * interval``), for the
    classifier to judge the same data."""
    interval = trace.header.interval_s
    samples = [replace(s, t=k * interval) for k, s in sorted(_slots(trace, source).items())]
    return Trace(trace.header, samples)


def resample(
    trace: Trace, every: int, segments: Sequence[Segment] = (), *, window_shift_s: float = 0.0
) -> tuple[Trace, list[Segment]]:
    """Every ``every``-th sample (a scraper ``every`` times slower), and the
    segments with their starts moved ``window_shift_s`` later (the longer
    window of the slower sampling still reaches back into the previous phase
    until then)."""
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    header = replace(trace.header, interval_s=trace.header.interval_s * every)
    samples = list(trace.samples[::every])
    moved = [
        Segment(s.t0 + window_shift_s, s.t1, s.conditions) for s in segments if s.t0 + window_shift_s < s.t1
    ]
    return Trace(header, samples), moved


def _fmt(value: float | None) -> str:
    if value is None:
        return "_"
    if float(value).is_integer():
        return str(int(value))
    return repr(round(float(value), 6))


def _label_set(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())) + "}"


def input_series(trace: Trace, source: str = "<trace>") -> list[dict[str, str]]:
    """The trace as promtool ``input_series`` (the metric contract's names).

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


def _test_file(
    trace: Trace, rule_files: Sequence[str], name: str, source: str, tests: list[dict[str, Any]]
) -> dict[str, Any]:
    interval = trace.header.interval_s
    return {
        "rule_files": list(rule_files),
        "evaluation_interval": duration(interval),
        "tests": [
            {
                "name": name,
                "interval": duration(interval),
                "input_series": input_series(trace, source),
                "promql_expr_test": tests,
            }
        ],
    }


# -- tests from labels ---------------------------------------------------------------------


def _labeled_times(
    trace: Trace, segments: Sequence[Segment], every: float | None
) -> list[tuple[float, Segment]]:
    interval = trace.header.interval_s
    origin = _origin(trace)
    stride = max(1, round((every or interval) / interval))
    times = []
    for segment in segments:
        slots = [_slot(s.t, origin, interval) for s in trace.samples if segment.t0 <= s.t < segment.t1]
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
    """The promtool test (as a dict) checking the rules against a trace's labels.

    ``every`` thins the checked samples (seconds between checks; default: every
    sample). The rules are evaluated at every sample whatever ``every`` is.
    """
    queue = trace.header.queue
    times = _labeled_times(trace, segments, every)
    if not times:
        raise PromtoolError(f"{source}: no sample falls inside a labeled segment")
    alerts = list(alerts)
    tests: list[dict[str, Any]] = []
    for t, segment in times:
        expected = [
            {"labels": CONDITION_SERIES + _label_set({"condition": c, "queue": queue}), "value": 1}
            for c in sorted(segment.conditions)
        ]
        tests.append({"expr": CONDITION_SERIES, "eval_time": duration(t), "exp_samples": expected})
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
            tests.append({"expr": query, "eval_time": duration(t), "exp_samples": expected})
    return _test_file(trace, rule_files, name or queue, source, tests)


# -- tests from the classifier ---------------------------------------------------------------


def build_agreement_test(
    trace: Trace,
    rule_files: Sequence[str],
    cfg: RulesConfig,
    *,
    every: int = 1,
    tolerance: float = 1e-6,
    name: str | None = None,
    source: str = "<trace>",
) -> dict[str, Any]:
    """A promtool test that the rules compute what the classifier computes.

    The trace is put on its sampling grid and judged by the in-process
    classifier (:func:`on_grid`); at every ``every``-th judged sample, each
    measure the rules record must be within ``tolerance`` of the classifier's
    (relative to the larger of 1 and the value), or absent where the
    classifier's is unknown, and the rules' conditions must be the classifier's.
    """
    from .._classifier import Classifier
    from .._evaluate import Evaluation
    from .._measures import MEASURES

    if cfg.scrape_interval_s != trace.header.interval_s:
        raise PromtoolError(
            f"{source}: the rules are for a {cfg.scrape_interval_s:g} s scrape interval, the trace is "
            f"sampled every {trace.header.interval_s:g} s"
        )
    gridded = on_grid(trace, source)
    classifier = Classifier(trace.header.interval_s, cfg.classifier, trace.header.capacity)
    queue = trace.header.queue
    q = Compiler(cfg)
    tests: list[dict[str, Any]] = []
    judged = 0
    for sample in gridded.samples:
        health = classifier.update(sample)
        if health.state == "warming_up":
            continue
        judged += 1
        if (judged - 1) % every:
            continue
        ev = Evaluation.of_rows(
            classifier.window.rows,
            cfg.classifier,
            interval_s=cfg.scrape_interval_s,
            span_s=cfg.window_s,
            recent_s=cfg.recent_s,
        )
        at = duration(sample.t)
        selector = _label_set({"queue": queue})
        for measure in MEASURES:
            for part in measure.parts:
                value = ev.measure(measure.name, part)
                series = q.measure_name(measure.name, part) + selector
                if value is None or not math.isfinite(value):
                    tests.append({"expr": series, "eval_time": at, "exp_samples": []})
                    continue
                bound = repr(tolerance * max(1.0, abs(value)))
                tests.append(
                    {
                        "expr": f"abs({series} - {value!r}) <= bool {bound}",
                        "eval_time": at,
                        "exp_samples": [{"labels": selector, "value": 1}],
                    }
                )
        expected = [
            {"labels": CONDITION_SERIES + _label_set({"condition": str(c), "queue": queue}), "value": 1}
            for c in sorted(str(c) for c in health.conditions)
        ]
        tests.append({"expr": CONDITION_SERIES, "eval_time": at, "exp_samples": expected})
    if not tests:
        raise PromtoolError(f"{source}: the trace is shorter than one window: nothing is judged")
    return _test_file(gridded, rule_files, name or queue, source, tests)
