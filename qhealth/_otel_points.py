"""qhealth's metrics as OpenTelemetry data points, built straight from the
monitor's snapshots, for the OTLP export that qhealth runs itself.

Why not the SDK's instruments on this path: measured at 100 queues exporting
every second (``bench/export.py``), the SDK spent its time on what qhealth
already has in hand. Every histogram observation went through ``record()``
(about 10 µs each: attribute cleaning, hashing, aggregation, exemplar
reservoirs), and each collection ran seventeen observable callbacks whose
observations were hashed and aggregated again. Here a tick adds each
observation to the queue's bucket counts (a ``bisect``), and an export reuses
the points of every queue that has not ticked since the previous export:
attributes are built once per queue, points once per tick.

The points are those the SDK would produce for the same instruments (the
names, units, kinds and attributes of :mod:`qhealth._contract`; gauges,
monotonic cumulative sums, cumulative explicit-bucket histograms), which a
test checks against the instrument path of :mod:`qhealth.otel`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import _contract as c
from ._contract import MetricSpec, SnapshotSource
from ._histogram import Buckets
from ._monitor import QueueSnapshot, SourceListener

Attributes = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Messaging:
    """OpenTelemetry's messaging semantic conventions, emitted beside
    qhealth's own names when asked for (they are at Development status).

    ``system`` is ``messaging.system`` (``rabbitmq``, ``redis``, ``kafka``,
    ...); ``consumer_group`` is ``messaging.consumer.group.name`` when the
    broker has consumer groups. ``messaging.destination.name`` is the queue.
    """

    system: str
    consumer_group: str | None = None

    def __post_init__(self) -> None:
        if not self.system or not self.system.strip():
            raise ValueError("messaging conventions need messaging.system (e.g. 'rabbitmq'), got nothing")

    def attributes(self, queue: str) -> dict[str, str]:
        attributes = {
            "messaging.system": self.system,
            "messaging.destination.name": queue,
            "messaging.operation.name": "process",
        }
        if self.consumer_group:
            attributes["messaging.consumer.group.name"] = self.consumer_group
        return attributes


#: The two conventions' instruments: (name, unit, description).
PROCESS_DURATION = ("messaging.process.duration", "s", "Duration of processing operation.")
CONSUMED_MESSAGES = (
    "messaging.client.consumed.messages",
    "{message}",
    "Number of messages that were delivered to the application.",
)


def _nanos(seconds: float | None) -> int:
    return int(seconds * 1e9) if seconds is not None else time.time_ns()


class AttributeCache:
    """Each queue's attribute sets, built once: an OpenTelemetry SDK hashes the
    attributes of every point it records, and the same few recur every time."""

    def __init__(self, messaging: Messaging | None) -> None:
        self._messaging = messaging
        self._per_queue: dict[str, dict[tuple[int, tuple[str, ...]], Attributes]] = {}

    def of(self, queue: str, spec: MetricSpec, labels: tuple[str, ...]) -> Attributes:
        """``queue`` and the metric's labels."""
        per_queue = self._per_queue.setdefault(queue, {})
        key = (id(spec), labels)
        found = per_queue.get(key)
        if found is None:
            found = per_queue[key] = {"queue": queue, **dict(zip(spec.labels, labels, strict=True))}
        return found

    def messaging(self, queue: str) -> Attributes:
        """OpenTelemetry's messaging attributes of ``queue`` (needs ``messaging``)."""
        assert self._messaging is not None
        per_queue = self._per_queue.setdefault(queue, {})
        found = per_queue.get((0, ("messaging",)))
        if found is None:
            found = per_queue[(0, ("messaging",))] = self._messaging.attributes(queue)
        return found

    def drop(self, queue: str) -> None:
        self._per_queue.pop(queue, None)


class Producer(SourceListener):
    """Keeps each queue's histograms from its ticks and hands out its points."""

    def __init__(
        self, source: SnapshotSource, bounds: Sequence[float], *, messaging: Messaging | None = None
    ) -> None:
        from opentelemetry.sdk.metrics.export import AggregationTemporality

        self._cumulative = AggregationTemporality.CUMULATIVE
        self._source = source
        self._bounds = tuple(bounds)
        self._empty = Buckets.empty(self._bounds)
        self._messaging = messaging
        self._start_ns = time.time_ns()
        self._lock = threading.Lock()
        self._histograms: dict[str, tuple[Buckets, Buckets]] = {}
        """Per queue: waits, durations."""
        self._points: dict[str, tuple[tuple[object, ...], dict[str, list[Any]]]] = {}
        """Per queue: what its points were built from, and its points by metric name."""
        self._attributes = AttributeCache(messaging)
        self._starts: dict[tuple[str, str, tuple[str, ...]], tuple[int, float]] = {}
        """Per cumulative series: its start time and last value (a value that
        falls is a restart of its source: a new start)."""
        self._listen_to(source)

    # -- tick side --------------------------------------------------------------

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        if not snapshot.waits and not snapshot.durations:
            return
        with self._lock:
            waits, durations = self._histograms.get(snapshot.queue, (self._empty, self._empty))
        waits = waits.add(self._bounds, snapshot.waits)
        durations = durations.add(self._bounds, snapshot.durations)
        with self._lock:
            self._histograms[snapshot.queue] = (waits, durations)

    def on_unwatch(self, queue: str) -> None:
        with self._lock:
            self._histograms.pop(queue, None)
            self._points.pop(queue, None)
            self._attributes.drop(queue)
            for key in [k for k in self._starts if k[0] == queue]:
                del self._starts[key]

    # -- export side ------------------------------------------------------------

    def metrics(self) -> list[Any]:
        """Every metric with its points, one per queue and label set (SDK
        ``Metric`` objects, ready for an exporter)."""
        from opentelemetry.sdk.metrics.export import Gauge, Histogram, Metric, Sum

        snapshots = self._source.snapshots()
        by_name: dict[str, list[Any]] = {}
        with self._lock:
            for queue in [q for q in self._points if q not in snapshots]:
                del self._points[queue]
            for queue, snapshot in snapshots.items():
                histograms = self._histograms.get(queue, (self._empty, self._empty))
                key = (snapshot, *histograms)
                cached = self._points.get(queue)
                if cached is None or any(a is not b for a, b in zip(cached[0], key, strict=True)):
                    cached = (key, self._build(queue, snapshot, histograms))
                    self._points[queue] = cached
                for name, points in cached[1].items():
                    by_name.setdefault(name, []).extend(points)
        out = []
        for spec in c.METRICS:
            points = by_name.get(spec.otel, [])
            if not points:
                continue
            data: Any
            if spec.kind is c.Kind.HISTOGRAM:
                data = Histogram(points, self._cumulative)
            elif spec.kind is c.Kind.COUNTER:
                data = Sum(points, self._cumulative, is_monotonic=True)
            else:
                data = Gauge(points)
            out.append(Metric(spec.otel, spec.help, spec.unit, data))
        if self._messaging is not None:
            name, unit, description = PROCESS_DURATION
            if by_name.get(name):
                out.append(Metric(name, description, unit, Histogram(by_name[name], self._cumulative)))
            name, unit, description = CONSUMED_MESSAGES
            if by_name.get(name):
                out.append(Metric(name, description, unit, Sum(by_name[name], self._cumulative, True)))
        return out

    def _start(self, queue: str, name: str, labels: tuple[str, ...], value: float, now: int) -> int:
        key = (queue, name, labels)
        known = self._starts.get(key)
        start = self._start_ns
        if known is not None:
            start = known[0] if value >= known[1] else now
        self._starts[key] = (start, value)
        return start

    def _build(
        self, queue: str, snapshot: QueueSnapshot, histograms: tuple[Buckets, Buckets]
    ) -> dict[str, list[Any]]:
        from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint

        now = _nanos(snapshot.sampled_at)
        points: dict[str, list[Any]] = {}
        processed = 0.0
        for spec, labels, value in c.series_of(snapshot):
            attributes = self._attributes.of(queue, spec, labels)
            if spec.kind is c.Kind.COUNTER:
                start = self._start(queue, spec.otel, labels, value, now)
                if spec is c.ITEMS_PROCESSED:
                    processed += value
            else:
                start = now
            points.setdefault(spec.otel, []).append(NumberDataPoint(attributes, start, now, value))
        # As the SDK's histograms do, a histogram has a point once it has an observation.
        plain = self._attributes.of(queue, c.ITEM_WAIT, ())
        for spec, buckets in zip((c.ITEM_WAIT, c.ITEM_DURATION), histograms, strict=True):
            if buckets.count:
                points[spec.otel] = [self._histogram_point(HistogramDataPoint, plain, now, buckets)]
        if self._messaging is not None:
            attributes = self._attributes.messaging(queue)
            if histograms[1].count:
                point = self._histogram_point(HistogramDataPoint, attributes, now, histograms[1])
                points[PROCESS_DURATION[0]] = [point]
            if any(spec is c.ITEMS_PROCESSED for spec, _, _ in c.series_of(snapshot)):
                start = self._start(queue, CONSUMED_MESSAGES[0], (), processed, now)
                points[CONSUMED_MESSAGES[0]] = [NumberDataPoint(attributes, start, now, processed)]
        return points

    def _histogram_point(self, kind: Any, attributes: Attributes, now: int, buckets: Buckets) -> Any:
        count = buckets.count
        return kind(
            attributes,
            self._start_ns,
            now,
            count,
            buckets.total,
            buckets.counts,
            self._bounds,
            buckets.low if count else math.inf,
            buckets.high if count else -math.inf,
        )
