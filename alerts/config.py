"""The one configuration behind the Prometheus rules, the alerts and the dashboard.

Like celery-mixin's ``config.libsonnet``: thresholds, windows, ``for:``
durations, severities and links live here, and ``python3 -m alerts`` /
``python3 -m dashboards`` turn them into the committed YAML and JSON.

The thresholds are not restated: they come from the in-process classifier's own
settings (:class:`qhealth.ClassifierConfig`), so the rules, the dashboard
thresholds and ``qhealth classify`` cannot drift apart. Change a threshold there
(or pass a ``ClassifierConfig`` here) and regenerate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qhealth import ClassifierConfig, Condition


def duration(seconds: float) -> str:
    """A Prometheus duration for a number of seconds (``90`` -> ``1m30s``)."""
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {seconds!r}")
    ms = round(seconds * 1000)
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """One alert: which condition it pages on, how loudly, after how long."""

    name: str
    condition: Condition
    severity: str
    for_s: float
    """The condition's expression must hold this long (on top of its own window)."""
    summary: str
    description: str
    """Go template; ``{{ $labels.queue }}`` and the ``measure`` helpers of
    :mod:`alerts.rules` show the numbers behind the verdict."""


@dataclass(frozen=True, slots=True)
class RulesConfig:
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    resolution_s: float = 1.0
    """Step of the subqueries that replay the classifier's per-sample and
    per-interval measures. Exact for any scrape interval that is a multiple of
    it; finer costs more rule-evaluation time."""
    depth_aggregation: str = "max"
    """How the depth (and capacity) of one queue reported by several processes
    combine. ``max``: processes watching one shared broker queue all report the
    same depth, so summing would multiply it. Use ``sum`` when each process has
    its own in-memory queue under the same name. Every other series (workers,
    counters) is summed: each process counts only its own."""
    selector: str = ""
    """Extra label matchers for every raw qhealth series, e.g. ``job="billing"``."""
    keep_firing_for_s: float = 60.0
    """Alerts keep firing this long after their expression stops holding: the
    rules have no hysteresis of their own, this stands in for the classifier's."""
    runbook_url: str = "https://example.invalid/qhealth/blob/main/docs/runbooks.md"
    dashboard_url: str = "https://grafana.example.invalid/d/qhealth-queue-health/queue-health"
    dashboard_uid: str = "qhealth-queue-health"
    alerts: tuple[AlertSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.depth_aggregation not in ("max", "sum"):
            raise ValueError(f"depth_aggregation must be 'max' or 'sum', got {self.depth_aggregation!r}")
        if not self.resolution_s > 0:
            raise ValueError(f"resolution_s must be positive, got {self.resolution_s!r}")
        if not self.alerts:
            object.__setattr__(self, "alerts", DEFAULT_ALERTS)
        names = [a.name for a in self.alerts]
        if len(set(names)) != len(names):
            raise ValueError(f"alert names must be unique, got {names}")

    @property
    def window_s(self) -> float:
        """The classifier's window (at 1 s sampling; Prometheus data is read at ``resolution_s``)."""
        return self.classifier.span_for(self.resolution_s)

    @property
    def recent_s(self) -> float:
        """The recent part of the window an active condition is re-judged on."""
        return self.window_s * self.classifier.clear_fraction

    def alert_for(self, condition: Condition) -> AlertSpec:
        for alert in self.alerts:
            if alert.condition is condition:
                return alert
        raise KeyError(f"no alert for condition {condition}")


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
            "arriving {{ measure_arrival }}/s, processed {{ measure_throughput }}/s over the last "
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
            "{{ $labels.queue }}: a backlog waited next to idle workers in {{ measure_backlog_idle_share }} "
            "of the last {{ window }}, and workers sat idle while items waited for "
            "{{ measure_waiting_idle_ratio }} of worker-time. Workers poll on a fixed interval."
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
