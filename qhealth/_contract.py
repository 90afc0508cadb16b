"""The metric contract (``shared/spec/metrics.md``) as data, and the values of
one queue snapshot under it.

Both exporters (:mod:`qhealth.prometheus` and :mod:`qhealth.otel`) are built
from this one table and this one function, so the two export paths cannot
drift apart: a name, a unit, a label or the rule that makes a series absent is
written down once. Nothing here imports prometheus_client or OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from ._classifier import SEVERITY
from ._monitor import QueueSnapshot


class SnapshotSource(Protocol):
    """What exporters read: a :class:`~qhealth.Monitor`, or anything else that
    keeps the latest snapshot of each queue (``qhealth serve`` replays traces).

    A source may also have ``add_listener(listener)`` / ``remove_listener``
    (as the monitor does): exporters then receive every tick's snapshot, which
    is how histograms get their observations.
    """

    def snapshots(self) -> Mapping[str, QueueSnapshot]: ...


class Kind(Enum):
    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric of the contract."""

    prometheus: str
    """The Prometheus family name as scraped (counters with ``_total``)."""
    otel: str
    """The OpenTelemetry instrument name."""
    unit: str
    """The OpenTelemetry unit (UCUM; ``{...}`` for counts of things)."""
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    """Labels besides ``queue`` (every series carries ``queue`` first)."""

    def __hash__(self) -> int:
        # The name alone (a str caches its hash): exporters key dicts by spec
        # on every scrape, and the generated hash would rehash every field.
        return hash(self.prometheus)

    @property
    def prometheus_unit(self) -> str:
        """The OpenMetrics unit of the Prometheus family ('' when none)."""
        return "seconds" if self.unit == "s" else ""


def _m(prometheus: str, otel: str, unit: str, kind: Kind, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(prometheus, otel, unit, kind, help, labels)


G, C, H = Kind.GAUGE, Kind.COUNTER, Kind.HISTOGRAM

QUEUE_DEPTH = _m("qhealth_queue_depth", "qhealth.queue.depth", "{item}", G, "Items waiting in the queue.")
QUEUE_CAPACITY = _m(
    "qhealth_queue_capacity",
    "qhealth.queue.capacity",
    "{item}",
    G,
    "Maximum size of the queue (absent when unbounded).",
)
WORKERS = _m("qhealth_workers", "qhealth.workers", "{worker}", G, "Workers that exist.")
WORKERS_BUSY = _m(
    "qhealth_workers_busy", "qhealth.workers.busy", "{worker}", G, "Workers processing an item."
)
QUEUE_OLDEST_AGE = _m(
    "qhealth_queue_oldest_age_seconds",
    "qhealth.queue.oldest_age",
    "s",
    G,
    "Age of the oldest waiting item, where the source knows it.",
)
SOURCE_UP = _m(
    "qhealth_source_up",
    "qhealth.source.up",
    "{status}",
    G,
    "1 when the last read of the queue's source succeeded, 0 when it failed.",
)
LAST_SAMPLE_TIMESTAMP = _m(
    "qhealth_last_sample_timestamp_seconds",
    "qhealth.last_sample.timestamp",
    "s",
    G,
    "Unix time of the queue's last successful sample.",
)
ITEMS_ENQUEUED = _m(
    "qhealth_items_enqueued_total", "qhealth.items.enqueued", "{item}", C, "Items put on the queue."
)
ITEMS_PROCESSED = _m(
    "qhealth_items_processed_total",
    "qhealth.items.processed",
    "{item}",
    C,
    "Items whose processing ended, by outcome (success or error).",
    "outcome",
)
ATTEMPTS = _m("qhealth_attempts_total", "qhealth.attempts", "{call}", C, "Downstream calls attempted.")
RATE_LIMITED = _m(
    "qhealth_rate_limited_total",
    "qhealth.rate_limited",
    "{call}",
    C,
    'Downstream calls answered "rate limited" (HTTP 429 or equivalent).',
)
WORKER_IDLE = _m(
    "qhealth_worker_idle_seconds_total",
    "qhealth.worker.idle",
    "s",
    C,
    "Worker-seconds spent idle, summed over workers.",
)
POLLS = _m(
    "qhealth_polls_total",
    "qhealth.polls",
    "{poll}",
    C,
    "Polls by polling workers, by result (hit or empty); absent for blocking workers.",
    "result",
)
ITEM_WAIT = _m(
    "qhealth_item_wait_seconds", "qhealth.item.wait", "s", H, "Time from enqueue to start of processing."
)
ITEM_DURATION = _m("qhealth_item_duration_seconds", "qhealth.item.duration", "s", H, "Processing time.")
CONDITION = _m(
    "qhealth_condition",
    "qhealth.condition",
    "{condition}",
    G,
    "1 while the condition is active, else 0 (stalled, overflow, rate_limited, boom_bust, idle).",
    "condition",
)
IDLE_RATIO = _m(
    "qhealth_idle_ratio", "qhealth.idle_ratio", "1", G, "Idle worker-time / worker-time over the window."
)
RATE_LIMITED_RATIO = _m(
    "qhealth_rate_limited_ratio",
    "qhealth.rate_limited_ratio",
    "1",
    G,
    "Rate-limited calls / calls over the window.",
)
WORKERS_RECOMMENDED = _m(
    "qhealth_workers_recommended",
    "qhealth.workers.recommended",
    "{worker}",
    G,
    "Workers this queue needs for its observed arrival rate and processing time at the target "
    "utilisation, capped by what the downstream rate limit allows.",
)

#: Every metric of the contract, in the order of the spec.
METRICS: tuple[MetricSpec, ...] = (
    QUEUE_DEPTH,
    QUEUE_CAPACITY,
    WORKERS,
    WORKERS_BUSY,
    QUEUE_OLDEST_AGE,
    SOURCE_UP,
    LAST_SAMPLE_TIMESTAMP,
    ITEMS_ENQUEUED,
    ITEMS_PROCESSED,
    ATTEMPTS,
    RATE_LIMITED,
    WORKER_IDLE,
    POLLS,
    ITEM_WAIT,
    ITEM_DURATION,
    CONDITION,
    IDLE_RATIO,
    RATE_LIMITED_RATIO,
    WORKERS_RECOMMENDED,
)

#: The metrics read from a snapshot at collection time (all but the histograms).
SAMPLED: tuple[MetricSpec, ...] = tuple(m for m in METRICS if m.kind is not Kind.HISTOGRAM)

#: Histogram bucket upper bounds in seconds, for both item waits and durations:
#: from a millisecond (an in-memory hand-off) to ten minutes (a batch job).
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)

Series = tuple[MetricSpec, tuple[str, ...], float]
"""One value: the metric, the values of its extra labels (after ``queue``), the value."""


def series_of(snapshot: QueueSnapshot) -> list[Series]:
    """Every gauge and counter value of one queue snapshot.

    A field the source does not know (``None``) gives no series: absent, never
    a fake 0. ``qhealth_condition`` has one series per condition, always, and
    so has ``qhealth_source_up``. Polls appear once a worker has polled
    (blocking workers never do).

    While the source is down (``snapshot.source_up`` is False) the gauges and
    the classifier's outputs are withdrawn rather than repeated as if current,
    and every condition reads 0; the counters keep their last values (a total
    stays true, it only stops growing), and ``qhealth_last_sample_timestamp_seconds``
    says how old they are.
    """
    s, h = snapshot.sample, snapshot.health
    out: list[Series] = []

    def add(spec: MetricSpec, value: float | None, *labels: str) -> None:
        if value is not None:
            out.append((spec, labels, float(value)))

    up = snapshot.source_up
    add(SOURCE_UP, 1.0 if up else 0.0)
    add(LAST_SAMPLE_TIMESTAMP, snapshot.sampled_at)
    if not up:
        if snapshot.sampled:
            _add_counters(add, snapshot)
        for condition in SEVERITY:
            add(CONDITION, 0.0, str(condition))
        return out
    add(QUEUE_DEPTH, s.depth)
    add(QUEUE_CAPACITY, snapshot.capacity)
    add(WORKERS, s.workers)
    add(WORKERS_BUSY, s.busy)
    add(QUEUE_OLDEST_AGE, snapshot.oldest_age_s)
    _add_counters(add, snapshot)
    for condition in SEVERITY:
        add(CONDITION, 1.0 if condition in h.conditions else 0.0, str(condition))
    add(IDLE_RATIO, h.idle_ratio)
    add(RATE_LIMITED_RATIO, h.rate_limited_ratio)
    add(WORKERS_RECOMMENDED, h.workers_recommended)
    return out


def _add_counters(add: Callable[..., None], snapshot: QueueSnapshot) -> None:
    s = snapshot.sample
    add(ITEMS_ENQUEUED, s.enqueued_total)
    if s.processed_total is not None and s.failed_total is not None:
        add(ITEMS_PROCESSED, max(s.processed_total - s.failed_total, 0), "success")
    add(ITEMS_PROCESSED, s.failed_total, "error")
    add(ATTEMPTS, s.attempts_total)
    add(RATE_LIMITED, s.rate_limited_total)
    add(WORKER_IDLE, s.idle_s_total)
    if snapshot.polls_hit_total or snapshot.polls_empty_total:
        add(POLLS, snapshot.polls_hit_total, "hit")
        add(POLLS, snapshot.polls_empty_total, "empty")
