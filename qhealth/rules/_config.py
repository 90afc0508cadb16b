"""What the rules generator is told: the scrape interval, the classifier's
settings, how processes combine, and the alerts (names, severities, ``for:``,
annotations, links).

Like celery-mixin's ``config.libsonnet``: the thresholds are not restated here,
they are the in-process classifier's own settings (:class:`qhealth.ClassifierConfig`),
so the rules, the dashboard and ``qhealth classify`` cannot drift apart.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .._condition import Condition
from .._config import ClassifierConfig

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")


def duration(seconds: float) -> str:
    """A Prometheus duration for a number of seconds (``90`` -> ``1m30s``, ``0`` -> ``0s``)."""
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
    """Seconds in a Prometheus duration such as ``1m30s`` (a bare number is seconds)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if value >= 0 and math.isfinite(value):
            return value
        raise ValueError(f"not a duration: {text!r}")
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return total


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """One alert on a condition: how loudly, after how long, with which words."""

    name: str
    condition: Condition
    severity: str
    for_s: float
    """The condition must hold this long (on top of its own window)."""
    summary: str
    description: str
    """Go template; ``{{ $labels.queue }}``, ``{{ window }}`` and ``{{ measure_NAME }}``
    (any measure of :mod:`qhealth._measures`, or ``depth``, ``workers``, ``busy``,
    ``capacity``) show the numbers behind the verdict."""


@dataclass(frozen=True, slots=True)
class RulesConfig:
    """Everything the generated rules depend on."""

    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    scrape_interval_s: float = 15.0
    """How often Prometheus scrapes qhealth (and evaluates the rules: the
    group's ``interval``). The window is the classifier's for samples this far
    apart: at least ``min_window_intervals`` scrapes."""
    depth_aggregation: str = "max"
    """How the depth (and capacity) of one queue reported by several processes
    combine. ``max``: processes watching one shared broker queue all report the
    same depth, so summing would multiply it. Use ``sum`` when each process has
    its own in-memory queue under the same name. Every other series (workers,
    counters) is summed: each process counts only its own."""
    selector: str = ""
    """Extra label matchers for every raw qhealth series, e.g. ``job="billing"``."""
    keep_firing_for_s: float = 60.0
    """Alerts keep firing this long after their condition clears, so that a
    condition that flickers at its threshold does not page twice."""
    monitor_down_for_s: float = 120.0
    """``QueueMonitorDown`` fires when a queue's source has failed this long."""
    stale_after_s: float = 120.0
    """...or when its last sample is older than this (a monitor that hangs)."""
    runbook_url: str = "https://example.invalid/qhealth/blob/main/docs/runbooks.md"
    dashboard_url: str = "https://grafana.example.invalid/d/qhealth-queue-health/queue-health"
    dashboard_uid: str = "qhealth-queue-health"
    alerts: tuple[AlertSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.depth_aggregation not in ("max", "sum"):
            raise ValueError(f"depth_aggregation must be 'max' or 'sum', got {self.depth_aggregation!r}")
        if not self.scrape_interval_s > 0 or not math.isfinite(self.scrape_interval_s):
            raise ValueError(f"scrape_interval_s must be a positive number, got {self.scrape_interval_s!r}")
        for name in ("keep_firing_for_s", "monitor_down_for_s", "stale_after_s"):
            value = getattr(self, name)
            if not value >= 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if not self.alerts:
            object.__setattr__(self, "alerts", DEFAULT_ALERTS)
        names = [a.name for a in self.alerts]
        if len(set(names)) != len(names) or MONITOR_DOWN in names:
            raise ValueError(f"alert names must be unique (and not {MONITOR_DOWN}), got {names}")

    @property
    def window_s(self) -> float:
        """The classifier's window for samples one scrape interval apart."""
        return self.classifier.span_for(self.scrape_interval_s)

    @property
    def recent_s(self) -> float:
        """The recent part of the window, on which an active condition is re-judged."""
        return self.window_s * self.classifier.clear_fraction

    def alert_for(self, condition: Condition) -> AlertSpec:
        for alert in self.alerts:
            if alert.condition is condition:
                return alert
        raise KeyError(f"no alert for condition {condition}")


MONITOR_DOWN = "QueueMonitorDown"

DEFAULT_ALERTS: tuple[AlertSpec, ...] = (
    AlertSpec(
        name="QueueStalled",
        condition=Condition.STALLED,
        severity="critical",
        for_s=120,
        summary="Queue {{ $labels.queue }} is stalled: items wait and none are processed",
        description=(
            "{{ $labels.queue }}: {{ measure_depth }} items waiting and nothing processed in the last "
            "{{ window }}, with {{ measure_busy }} of {{ measure_workers }} workers busy. Workers are "
            "dead, hung in a call or disconnected from the broker."
        ),
    ),
    AlertSpec(
        name="QueueOverflow",
        condition=Condition.OVERFLOW,
        severity="warning",
        for_s=300,
        summary="Queue {{ $labels.queue }} is overflowing: work arrives faster than it is processed",
        description=(
            "{{ $labels.queue }}: depth {{ measure_depth }} (capacity {{ measure_capacity }}), "
            "arriving {{ measure_arrival_rate }}/s, processed {{ measure_throughput }}/s over the last "
            "{{ window }}."
        ),
    ),
    AlertSpec(
        name="QueueRateLimitStorm",
        condition=Condition.RATE_LIMITED,
        severity="warning",
        for_s=300,
        summary="Queue {{ $labels.queue }}: a storm of 429s from the downstream API",
        description=(
            "{{ $labels.queue }}: {{ measure_rate_limited_ratio }} of {{ measure_attempts }} downstream "
            "calls in the last {{ window }} were answered 429 (rate limited)."
        ),
    ),
    AlertSpec(
        name="QueueBoomBust",
        condition=Condition.BOOM_BUST,
        severity="warning",
        for_s=300,
        summary="Queue {{ $labels.queue }} swings between idle and overloaded (boom-bust)",
        description=(
            "{{ $labels.queue }}: {{ measure_idle_capacity_share }} of the workers sat idle while items "
            "waited for them over the last {{ window }}, each item about {{ measure_idle_wait_s }} s; "
            "items waited next to idle workers in {{ measure_waiting_idle_share }} of samples. Workers "
            "poll on a fixed interval."
        ),
    ),
    AlertSpec(
        name="QueuePersistentlyIdle",
        condition=Condition.IDLE,
        severity="info",
        for_s=900,
        summary="Queue {{ $labels.queue }} is idle: its workers are paid for and not used",
        description=(
            "{{ $labels.queue }}: the queue stayed empty and {{ measure_idle_ratio }} of worker-time was "
            "idle over the last {{ window }} ({{ measure_workers }} workers)."
        ),
    ),
)
