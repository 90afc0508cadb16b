"""Prometheus export: every metric of the contract, read at scrape time.

Names, types, labels and units are those of ``shared/spec/metrics.md`` (see
:mod:`qhealth._contract`). Nothing here runs on the pool's hot path: gauges and
counters are read from the monitor's latest snapshot of each queue when
Prometheus scrapes, and the two latency histograms are fed once per tick with
the observations the monitor drained from the probes.

How to run it (one process, your own registry, multiprocess mode with gunicorn
or Celery prefork, the server's limits) is in ``docs/export.md``.
"""

from __future__ import annotations

import gzip
import math
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import (
    Metric,
)
from prometheus_client.samples import Sample

from . import _contract as c
from . import _exposition as ex
from ._contract import DEFAULT_BUCKETS, MetricSpec, SnapshotSource
from ._histogram import Buckets
from ._http import Handler, HttpServer, Request, Response
from ._log import ThrottledLog
from ._monitor import Listener, QueueSnapshot, SourceListener, listen

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_LISTEN",
    "MultiProcessExporter",
    "QHealthCollector",
    "encode",
    "mark_process_dead",
    "metrics_route",
    "multiprocess_registry",
    "register",
    "serve",
]

DEFAULT_LISTEN = "127.0.0.1:9808"
"""Where :func:`serve` and ``qhealth serve`` listen unless told otherwise."""


def _check_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    bounds = tuple(float(b) for b in buckets if not math.isinf(b))
    if not bounds or any(not math.isfinite(b) for b in bounds) or list(bounds) != sorted(set(bounds)):
        raise ValueError(f"histogram buckets must be finite, increasing and not empty, got {buckets!r}")
    return bounds


# -- histograms fed at tick time ---------------------------------------------------


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``0.25``, ``1.0``, ``+Inf``)."""
    return "+Inf" if math.isinf(bound) else repr(bound)


def _append(hist: Buckets, family: Metric, queue: str, les: tuple[str, ...]) -> None:
    """Add the samples of ``hist`` for ``queue`` to ``family`` (what
    ``HistogramMetricFamily.add_metric`` does, without re-deriving the
    bucket labels on every scrape: a third of a scrape's time at 100 queues)."""
    name = family.name
    bucket = name + "_bucket"
    samples = family.samples
    running = 0
    for le, count in zip(les, hist.counts, strict=True):
        running += count
        samples.append(Sample(bucket, {"queue": queue, "le": le}, float(running)))
    samples.append(Sample(name + "_count", {"queue": queue}, float(running)))
    samples.append(Sample(name + "_sum", {"queue": queue}, hist.total))


@dataclass(frozen=True, slots=True)
class _Record:
    snapshot: QueueSnapshot
    waits: Buckets | None
    durations: Buckets | None

    def same(self, other: _Record) -> bool:
        """Whether ``other`` holds the very same values (the same tick)."""
        return (
            self.snapshot is other.snapshot
            and self.waits is other.waits
            and self.durations is other.durations
        )


class _Feeder(Listener):
    """The collector's ear on the monitor: keeps each queue's latest snapshot
    together with its histograms, updated as one record per tick."""

    def __init__(self, collector: QHealthCollector) -> None:
        self._collector = collector

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        self._collector._on_tick(snapshot)

    def on_source_down(self, snapshot: QueueSnapshot) -> None:
        # The record moves to the stale snapshot (gauges withdrawn, conditions
        # 0); it carries no observations, so the histograms stay as they were.
        self._collector._on_tick(snapshot)

    def on_unwatch(self, queue: str) -> None:
        self._collector._forget(queue)


class QHealthCollector:
    """A prometheus-client collector of the qhealth metric contract.

    ``source`` is a :class:`~qhealth.Monitor` (or any object with
    ``snapshots()``; with ``add_listener`` too, histograms are fed from its
    ticks). ``buckets`` are the histogram upper bounds in seconds.
    ``prepare_at_tick`` writes each queue's scrape text on the monitor's tick
    instead of at the first scrape after it: scrapes then only copy text, at
    the cost of writing it at every tick, scraped or not (worth it when
    scrapes come as often as ticks, or scrape latency matters more than CPU). Register it
    with :func:`register` or ``registry.register(collector)``; :meth:`close`
    detaches it from the source.
    """

    def __init__(
        self,
        source: SnapshotSource,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        prepare_at_tick: bool = False,
    ) -> None:
        self._source = source
        self._prepare = prepare_at_tick
        self._bounds = _check_buckets(buckets)
        self._les = tuple(_le(b) for b in (*self._bounds, math.inf))
        self._empty = Buckets.empty(self._bounds)
        self._buckets = {spec: ex.Buckets.of(spec, self._les) for spec in (c.ITEM_WAIT, c.ITEM_DURATION)}
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}
        self._encoded: dict[str, tuple[_Record, tuple[str, ...]]] = {}
        """Per queue, the record last written out and its lines, one string per family."""
        self._leave = listen(source, _Feeder(self))

    @property
    def histograms(self) -> bool:
        """Whether histograms are exported (the source hands over its ticks)."""
        return self._leave is not None

    def close(self) -> None:
        """Stop listening to the source (unregister from the registry yourself)."""
        leave, self._leave = self._leave, None
        if leave is not None:
            leave()

    # -- tick side ----------------------------------------------------------------

    def _on_tick(self, snapshot: QueueSnapshot) -> None:
        with self._lock:
            old = self._records.get(snapshot.queue)
        empty = self._empty
        waits = (old.waits if old and old.waits else empty).add(self._bounds, snapshot.waits)
        durations = (old.durations if old and old.durations else empty).add(self._bounds, snapshot.durations)
        record = _Record(snapshot, waits, durations)
        with self._lock:
            self._records[snapshot.queue] = record
        if self._prepare:
            before = self._encoded.get(snapshot.queue)
            self._encoded[snapshot.queue] = (record, self._lines(snapshot.queue, record, before))

    def _forget(self, queue: str) -> None:
        with self._lock:
            self._records.pop(queue, None)

    # -- scrape side ----------------------------------------------------------------

    def _current(self) -> dict[str, _Record]:
        """One record per queue the source has: the record of the tick the
        histograms were fed with, or the source's snapshot when none yet."""
        with self._lock:
            records = dict(self._records)
        current: dict[str, _Record] = {}
        for queue, snapshot in self._source.snapshots().items():
            record = records.get(queue)
            if record is None or self._leave is None:
                # No tick seen yet (collector made after the monitor ran): the
                # source's snapshot, and histograms with no observations yet;
                # a source that hands over no ticks has no histograms at all.
                empty = self._empty if self._leave is not None else None
                record = _Record(snapshot, empty, empty)
            current[queue] = record
        return current

    def describe(self) -> Iterator[Metric]:
        """The families this collector yields (lets a registry refuse duplicates)."""
        for spec in c.METRICS:
            yield _family(spec)

    def collect(self) -> Iterator[Metric]:
        current = self._current()
        if ex.ENCODING.get():
            yield from self._collect_encoded(current)
            return
        families = {spec: _family(spec) for spec in c.METRICS}
        for queue, record in sorted(current.items()):
            for spec, labels, value in c.series_of(record.snapshot):
                families[spec].add_metric([queue, *labels], value)  # type: ignore[attr-defined]
            for spec, hist in ((c.ITEM_WAIT, record.waits), (c.ITEM_DURATION, record.durations)):
                if hist is not None:
                    _append(hist, families[spec], queue, self._les)
        # A family with no series (no queue yet, or a source without histograms) is left out.
        yield from (family for family in families.values() if family.samples)

    def _collect_encoded(self, current: dict[str, _Record]) -> Iterator[Metric]:
        """The families as text (see :mod:`qhealth._exposition`): each queue's
        lines are written once per tick, by the first scrape that sees it."""
        cache = self._encoded
        fresh: dict[str, tuple[_Record, tuple[str, ...]]] = {}
        for queue, record in sorted(current.items()):
            cached = cache.get(queue)
            if cached is None or not cached[0].same(record):
                cached = (record, self._lines(queue, record, cached))
            fresh[queue] = cached
        self._encoded = fresh  # queues gone from the source leave the cache here
        texts = [lines for _, lines in fresh.values()]
        for i, spec in enumerate(c.METRICS):
            text = "".join([lines[i] for lines in texts])
            if text:  # a family with no series is left out, as above
                yield ex.Encoded(spec, text)

    def _lines(
        self, queue: str, record: _Record, before: tuple[_Record, tuple[str, ...]] | None
    ) -> tuple[str, ...]:
        escaped = ex.label_value(queue)
        per: list[list[str]] = [[] for _ in c.METRICS]
        ex.series_lines(escaped, c.series_of(record.snapshot), per)
        for spec, hist, old in (
            (c.ITEM_WAIT, record.waits, before and before[0].waits),
            (c.ITEM_DURATION, record.durations, before and before[0].durations),
        ):
            at = ex.POSITION[spec]
            if hist is not None and before is not None and hist is old:
                per[at].append(before[1][at])  # no observation since: the same lines
            elif hist is not None:
                per[at].append(self._buckets[spec].lines(escaped, hist.counts, hist.total))
        return tuple(["".join(lines) for lines in per])


_family = ex.family


def register(
    source: SnapshotSource,
    registry: CollectorRegistry | None = None,
    *,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    prepare_at_tick: bool = False,
) -> QHealthCollector:
    """Export ``source`` (a monitor) through ``registry`` (default:
    ``prometheus_client.REGISTRY``); see :class:`QHealthCollector` for the
    options. Registering a second collector in the same registry raises
    ``ValueError`` (duplicated series)."""
    collector = QHealthCollector(source, buckets=buckets, prepare_at_tick=prepare_at_tick)
    try:
        (REGISTRY if registry is None else registry).register(collector)
    except ValueError:
        collector.close()
        raise
    return collector


# -- HTTP ------------------------------------------------------------------------------


def encode(registry: Collector | None = None, accept: str = "") -> tuple[bytes, str]:
    """The body and content type of a scrape of ``registry`` (default:
    prometheus-client's) for a scraper that sends ``accept`` (its ``Accept``
    header: Prometheus text or OpenMetrics). Byte for byte what
    prometheus-client's own encoder writes, with qhealth's families written
    from lines prepared once per tick (see :mod:`qhealth._exposition`): use it
    in a ``/metrics`` view of your own."""
    target: Collector = REGISTRY if registry is None else registry
    _, content_type = choose_encoder(accept)
    return ex.encode(target, content_type.startswith("application/openmetrics-text")), content_type


def metrics_route(registry: Collector | None = None) -> Handler:
    """A route handler serving ``registry`` in the format the scraper asks for
    (Prometheus text or OpenMetrics), gzipped when accepted. ``?name[]=...``
    restricts the output to some families, as prometheus-client's own server
    does."""
    target: Collector = REGISTRY if registry is None else registry

    def handler(request: Request) -> Response:
        accept = request.header("accept")
        names = request.query.get("name[]")
        restricted = getattr(target, "restricted_registry", None)
        if names and callable(restricted):
            encoder, content_type = choose_encoder(accept)
            body = encoder(restricted(names))
        else:
            body, content_type = encode(target, accept)
        headers: tuple[tuple[str, str], ...] = ()
        if gzip_accepted(request.header("accept-encoding")):
            body = gzip.compress(body, compresslevel=1)
            headers = (("Content-Encoding", "gzip"),)
        return Response(body, content_type=content_type, headers=headers)

    return handler


def serve(
    source: SnapshotSource | None = None,
    *,
    listen: str = DEFAULT_LISTEN,
    registry: CollectorRegistry | None = None,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    routes: Mapping[str, Handler] | None = None,
) -> HttpServer:
    """Serve ``/metrics`` from a background thread and return the server.

    ``source`` (a monitor), when given, is registered in ``registry`` first.
    ``registry`` defaults to prometheus-client's default registry, so metrics
    you defined there are served too. ``routes`` are more pages to serve
    beside ``/metrics`` (path -> handler), e.g. the status page:
    ``routes={"/": qhealth.status_page.StatusPage(monitor).route}``. ``listen``
    is ``HOST:PORT`` (port 0 for any free port; ``0.0.0.0:PORT`` to accept
    connections from other hosts).
    """
    server = HttpServer(listen, routes=routes)
    collector = register(source, registry, buckets=buckets) if source is not None else None
    server.add_route("/metrics", metrics_route(REGISTRY if registry is None else registry))
    try:
        return server.start()
    except OSError:
        if collector is not None:
            (REGISTRY if registry is None else registry).unregister(collector)
            collector.close()
        raise


# -- multiprocess mode ------------------------------------------------------------------

_GaugeMode = Literal["livesum", "livemax", "livemin"]

#: How each gauge merges across live processes (see the module docstring).
_GAUGE_MODES: dict[MetricSpec, _GaugeMode] = {
    c.QUEUE_DEPTH: "livesum",
    c.QUEUE_CAPACITY: "livesum",
    c.WORKERS: "livesum",
    c.WORKERS_BUSY: "livesum",
    c.QUEUE_OLDEST_AGE: "livemax",
    # Any live process whose source is down makes the queue down; the stalest
    # live process says how old the pooled values are.
    c.SOURCE_UP: "livemin",
    c.LAST_SAMPLE_TIMESTAMP: "livemin",
    c.CONDITION: "livemax",
    c.IDLE_RATIO: "livemax",
    c.RATE_LIMITED_RATIO: "livemax",
    c.WORKERS_RECOMMENDED: "livesum",
}


def _multiprocess_dir(path: str | os.PathLike[str] | None) -> str:
    directory = os.fspath(path) if path is not None else os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if not directory:
        raise ValueError(
            "prometheus multiprocess mode needs PROMETHEUS_MULTIPROC_DIR set to a directory "
            "(set it before the server starts and before prometheus_client is imported)"
        )
    if not os.path.isdir(directory):
        raise ValueError(f"PROMETHEUS_MULTIPROC_DIR {directory!r} is not a directory")
    return directory


class MultiProcessExporter(SourceListener):
    """Writes a monitor's values to this process's prometheus-client
    multiprocess files at each tick (one per process; see the module docstring).

    Raises ``ValueError`` when multiprocess mode is not active: when
    ``PROMETHEUS_MULTIPROC_DIR`` is unset, or prometheus_client was imported
    before it was set (its values would silently stay in memory).
    """

    def __init__(
        self,
        monitor: SnapshotSource,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        shared_depth: bool = False,
    ) -> None:
        from prometheus_client import Counter, Gauge, Histogram, values

        _multiprocess_dir(None)
        if getattr(values.ValueClass, "__name__", "") != "MmapedValue":
            raise ValueError(
                "prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set, so it "
                "keeps values in memory: set the variable before the process starts"
            )
        bounds = _check_buckets(buckets)
        self._monitor = monitor
        self._log = ThrottledLog(interval_s=60.0)
        self._lock = threading.Lock()
        self._last: dict[tuple[MetricSpec, str, tuple[str, ...]], float] = {}
        self._gauges: dict[MetricSpec, Gauge] = {}
        self._counters: dict[MetricSpec, Counter] = {}
        for spec in c.SAMPLED:
            labels = ["queue", *spec.labels]
            if spec.kind is c.Kind.COUNTER:
                self._counters[spec] = Counter(
                    spec.prometheus.removesuffix("_total"),
                    spec.help,
                    labels,
                    unit=spec.prometheus_unit,
                    registry=None,
                )
            else:
                mode = _GAUGE_MODES[spec]
                if shared_depth and spec in (c.QUEUE_DEPTH, c.QUEUE_CAPACITY):
                    mode = "livemax"
                self._gauges[spec] = Gauge(
                    spec.prometheus,
                    spec.help,
                    labels,
                    unit=spec.prometheus_unit,
                    registry=None,
                    multiprocess_mode=mode,
                )
        self._histograms = {
            spec: Histogram(
                spec.prometheus, spec.help, ["queue"], unit="seconds", buckets=bounds, registry=None
            )
            for spec in (c.ITEM_WAIT, c.ITEM_DURATION)
        }
        self._listen_to(monitor)

    def on_source_down(self, snapshot: QueueSnapshot) -> None:
        """``qhealth_source_up`` 0 and every condition 0. The other gauges keep
        their last values: prometheus-client cannot remove a series from the
        multiprocess files, so alert on ``qhealth_source_up`` as the rules do."""
        self.on_tick(snapshot)

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        queue = snapshot.queue
        with self._lock:
            for spec, labels, value in c.series_of(snapshot):
                if spec.kind is c.Kind.COUNTER:
                    key = (spec, queue, labels)
                    last = self._last.get(key, 0.0)
                    # A total below the last one is a restart of the source: count it anew.
                    delta = value - last if value >= last else value
                    self._last[key] = value
                    counter = self._counters[spec].labels(queue, *labels)  # a series from 0 on
                    if delta > 0:
                        counter.inc(delta)
                else:
                    self._gauges[spec].labels(queue, *labels).set(value)
            for spec, observed in ((c.ITEM_WAIT, snapshot.waits), (c.ITEM_DURATION, snapshot.durations)):
                histogram = self._histograms[spec].labels(queue)
                for v in observed:
                    if v >= 0 and math.isfinite(v):
                        histogram.observe(v)


def multiprocess_registry(path: str | os.PathLike[str] | None = None) -> CollectorRegistry:
    """A registry that merges every process's files (the scrape side).

    ``path`` defaults to ``PROMETHEUS_MULTIPROC_DIR``; a ``ValueError`` names
    the problem when neither is a directory."""
    from prometheus_client.multiprocess import MultiProcessCollector

    directory = _multiprocess_dir(path)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def mark_process_dead(pid: int, path: str | os.PathLike[str] | None = None) -> None:
    """Drop an exited process's live gauges (call it from gunicorn's
    ``child_exit`` hook or when a Celery child exits)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, _multiprocess_dir(path))  # type: ignore[no-untyped-call]
