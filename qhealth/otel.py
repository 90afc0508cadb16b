"""OpenTelemetry export: the metric contract as observable instruments.

The instruments carry the OpenTelemetry names and units of
``shared/spec/metrics.md``; an OpenTelemetry Collector that writes to
Prometheus (or the SDK's own Prometheus reader) turns them into exactly the
names :mod:`qhealth.prometheus` exposes. The gauges and counters are
*observable*: their callbacks read the monitor's latest snapshot of each queue
when the SDK collects, so the pool pays nothing per item. The two latency
histograms are recorded once per tick with the observations the monitor
drained from the probes. (A synchronous ``counter.add`` costs ~10 µs in the
SDK: far too much for a hot path, and never called here.)

Needs the ``otlp`` extra: ``pip install 'qhealth[otlp]'``.

Public API
    :func:`instrument`
        Create the instruments for a monitor on a MeterProvider (the global
        one unless given) and return the :class:`OTelExporter`.
    :func:`setup_otlp`
        Build a MeterProvider that exports over OTLP, configured by the
        standard ``OTEL_EXPORTER_OTLP_*`` variables, instrument the monitor on
        it, and return an :class:`OtlpExport` handle (``.meter_provider``,
        ``.shutdown()``)::

            # OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318  (http/protobuf, the default)
            # OTEL_EXPORTER_OTLP_PROTOCOL=grpc + OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317
            export = qhealth.otel.setup_otlp(monitor)
            ...
            export.shutdown()

Variables read (besides those the OTLP exporters read themselves: endpoint,
headers, timeout, compression, certificates): ``OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`` /
``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf`` or ``grpc``),
``OTEL_METRIC_EXPORT_INTERVAL`` (ms, default 60000), ``OTEL_METRIC_EXPORT_TIMEOUT``,
``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SDK_DISABLED``.

A collector that is down, slow or answering errors never reaches the pool:
exports run on the SDK's own thread; while the collector keeps failing,
exports back off (tried after 1, 2, 4, then every 8 intervals: counters and
histograms are cumulative, so the next export that gets through carries the
totals); a failed export is logged at most once a minute (``log_interval_s``)
with a count of the ones suppressed, and the OTLP exporters' own retry
warnings are throttled the same way while the export is set up.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _contract as c
from ._contract import DEFAULT_BUCKETS, SnapshotSource
from ._log import ThrottledLog
from ._monitor import QueueSnapshot, SourceListener
from ._otel_points import CONSUMED_MESSAGES, PROCESS_DURATION, AttributeCache, Messaging, Producer
from ._redact import redact_url

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter

__all__ = ["Messaging", "OTelExporter", "OtlpExport", "instrument", "setup_otlp"]

logger = logging.getLogger("qhealth.otel")

_INSTALL = "pip install 'qhealth[otlp]'"

#: Loggers of the OTLP exporters whose retry and failure messages are
#: throttled while :func:`setup_otlp` runs an export.
EXPORTER_LOGGERS: tuple[str, ...] = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk.metrics._internal.export",
)


def _require(package: str) -> None:
    try:
        __import__(package)
    except ImportError as exc:
        raise ImportError(
            f"qhealth.otel requires the {exc.name or package} package installed: {_INSTALL}"
        ) from exc


Attributes = Mapping[str, str]


class OTelExporter(SourceListener):
    """The qhealth instruments on one meter, reading one snapshot source.

    Made by :func:`instrument`. Observable callbacks share one cache of each
    queue's observations, rebuilt only when the queue has a new snapshot, with
    attributes built once per queue: the seventeen callbacks of a collection
    cost one pass over the snapshots. ``messaging`` adds OpenTelemetry's
    messaging conventions beside qhealth's names (see :class:`Messaging`).
    :meth:`close` stops recording histograms; the observable instruments stay
    on the meter until its provider shuts down.
    """

    def __init__(
        self,
        source: SnapshotSource,
        meter_provider: MeterProvider | None = None,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        messaging: Messaging | None = None,
    ) -> None:
        _require("opentelemetry.metrics")
        from opentelemetry import metrics

        from . import __version__

        bounds = check_buckets(buckets)
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        self._source = source
        self._messaging = messaging
        self._meter = provider.get_meter("qhealth", __version__)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[QueueSnapshot, dict[str, list[Observation]]]] = {}
        self._attributes = AttributeCache(messaging)
        for spec in c.SAMPLED:
            callback = self._callback(spec.otel)
            if spec.kind is c.Kind.COUNTER:
                self._meter.create_observable_counter(
                    spec.otel, [callback], unit=spec.unit, description=spec.help
                )
            else:
                self._meter.create_observable_gauge(
                    spec.otel, [callback], unit=spec.unit, description=spec.help
                )
        self._histograms = {
            spec.otel: self._meter.create_histogram(
                spec.otel,
                unit=spec.unit,
                description=spec.help,
                explicit_bucket_boundaries_advisory=list(bounds),
            )
            for spec in (c.ITEM_WAIT, c.ITEM_DURATION)
        }
        if messaging is not None:
            name, unit, description = CONSUMED_MESSAGES
            self._meter.create_observable_counter(
                name, [self._callback(name)], unit=unit, description=description
            )
            name, unit, description = PROCESS_DURATION
            self._histograms[name] = self._meter.create_histogram(
                name, unit=unit, description=description, explicit_bucket_boundaries_advisory=list(bounds)
            )
        self._listen_to(source)

    # -- tick side: histograms ------------------------------------------------

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        if not snapshot.waits and not snapshot.durations:
            return
        attributes = self._attributes.of(snapshot.queue, c.ITEM_WAIT, ())
        recorded = [(c.ITEM_WAIT.otel, snapshot.waits, attributes)]
        recorded.append((c.ITEM_DURATION.otel, snapshot.durations, attributes))
        if self._messaging is not None:
            recorded.append(
                (PROCESS_DURATION[0], snapshot.durations, self._attributes.messaging(snapshot.queue))
            )
        for name, observed, attrs in recorded:
            record = self._histograms[name].record
            for v in observed:
                if v >= 0 and math.isfinite(v):
                    record(v, attrs)

    def on_unwatch(self, queue: str) -> None:
        with self._lock:
            self._cache.pop(queue, None)
            self._attributes.drop(queue)

    # -- collection side: observable callbacks ----------------------------------

    def _observations(self, name: str) -> list[Observation]:
        from opentelemetry.metrics import Observation

        out: list[Observation] = []
        snapshots = self._source.snapshots()
        with self._lock:
            for queue in [q for q in self._cache if q not in snapshots]:
                del self._cache[queue]
            for queue, snapshot in snapshots.items():
                cached = self._cache.get(queue)
                if cached is None or cached[0] is not snapshot:
                    by_name: dict[str, list[Observation]] = {}
                    processed: float | None = None
                    for spec, labels, value in c.series_of(snapshot):
                        attributes = self._attributes.of(queue, spec, labels)
                        by_name.setdefault(spec.otel, []).append(Observation(value, attributes))
                        if spec is c.ITEMS_PROCESSED:
                            processed = (processed or 0.0) + value
                    if self._messaging is not None and processed is not None:
                        attributes = self._attributes.messaging(queue)
                        by_name[CONSUMED_MESSAGES[0]] = [Observation(processed, attributes)]
                    cached = (snapshot, by_name)
                    self._cache[queue] = cached
                out.extend(cached[1].get(name, ()))
        return out

    def _callback(self, name: str) -> Any:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return self._observations(name)

        callback.__name__ = f"qhealth_{name}"
        return callback


def instrument(
    source: SnapshotSource,
    meter_provider: MeterProvider | None = None,
    *,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    messaging: Messaging | None = None,
) -> OTelExporter:
    """Create the qhealth instruments for ``source`` (a monitor) on
    ``meter_provider`` (default: the global one, ``metrics.get_meter_provider()``).
    ``messaging`` adds OpenTelemetry's messaging conventions (off by default)."""
    return OTelExporter(source, meter_provider, buckets=buckets, messaging=messaging)


def check_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    bounds = tuple(float(b) for b in buckets if not math.isinf(b))
    if not bounds or list(bounds) != sorted(set(bounds)) or not all(math.isfinite(b) for b in bounds):
        raise ValueError(f"histogram buckets must be finite, increasing and not empty, got {buckets!r}")
    return bounds


# -- OTLP set-up ------------------------------------------------------------------------


def _env(*names: str) -> str:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return ""


def _env_interval_s() -> float:
    """``OTEL_METRIC_EXPORT_INTERVAL`` (milliseconds) in seconds; 60 by default."""
    text = _env("OTEL_METRIC_EXPORT_INTERVAL")
    try:
        value = float(text) / 1000 if text else 60.0
    except ValueError:
        raise ValueError(f"OTEL_METRIC_EXPORT_INTERVAL must be milliseconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"OTEL_METRIC_EXPORT_INTERVAL must be positive, got {text!r}")
    return value


def http_metrics_url(endpoint: str) -> str:
    """The URL an HTTP exporter posts to for ``endpoint``, read as the standard
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is: the signal's path ``v1/metrics`` is
    appended to the base URL (``http://collector:4318`` ->
    ``http://collector:4318/v1/metrics``; ``https://gw/otlp`` ->
    ``https://gw/otlp/v1/metrics``). A URL that already ends in ``/v1/metrics``
    is taken as it is, so the full URL works too."""
    url = urllib.parse.urlsplit(endpoint.strip())
    if not url.scheme or not url.netloc:
        shown = endpoint.strip().rpartition("@")[2]  # never echo credentials
        raise ValueError(f"OTLP endpoint must be a URL such as http://collector:4318, got {shown!r}")
    path = url.path.rstrip("/")
    if not path.endswith("/v1/metrics"):
        path += "/v1/metrics"
    return urllib.parse.urlunsplit((url.scheme, url.netloc, path, url.query, url.fragment))


class _ThrottleFilter(logging.Filter):
    """Lets each distinct warning of a logger through at most once per
    interval (the exporters log every retry of every export)."""

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self._interval = interval_s
        self._lock = threading.Lock()
        self._next: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.msg)
        with self._lock:
            if record.created < self._next.get(key, -math.inf):
                return False
            self._next[key] = record.created + self._interval
        return True


#: While the collector keeps failing, an export is tried only after this many
#: intervals at most (1, 2, 4, then every 8): a dead collector costs a failed
#: attempt now and then instead of a new connection every interval.
MAX_SKIPPED_INTERVALS = 8


def _guarded(
    inner: MetricExporter, endpoint: str, interval_s: float, log_interval_s: float
) -> MetricExporter:
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    class GuardedExporter(MetricExporter):
        """Never raises into the SDK; logs failures at most once per
        ``log_interval_s``; backs off while the collector keeps failing.

        Skipping an export loses nothing that matters: counters and histograms
        are cumulative, so the next export that gets through carries the
        totals; only the gauge values of the skipped intervals are not sent.
        """

        def __init__(self) -> None:
            super().__init__(
                preferred_temporality=inner._preferred_temporality,
                preferred_aggregation=inner._preferred_aggregation,
            )
            self.inner = inner
            self.exports = 0
            self.successes = 0
            self.failures = 0
            self.skipped = 0
            self._streak = 0
            self._resume_at = -math.inf
            self._log = ThrottledLog(interval_s=log_interval_s, log=logger)

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            if time.monotonic() < self._resume_at:
                self.skipped += 1
                return MetricExportResult.FAILURE
            self.exports += 1
            try:
                result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            except Exception:
                self._failed()
                self._log.exception("export", "qhealth: OTLP export to %s raised; skipped", endpoint)
                return MetricExportResult.FAILURE
            if result is MetricExportResult.SUCCESS:
                self.successes += 1
                self._streak = 0
                self._resume_at = -math.inf
            else:
                self._failed()
                self._log.warning(
                    "export",
                    "qhealth: OTLP export to %s failed; metrics of this interval dropped, "
                    "retrying after at most %d intervals",
                    endpoint,
                    MAX_SKIPPED_INTERVALS,
                )
            return result

        def _failed(self) -> None:
            self.failures += 1
            self._streak += 1
            skip = min(2 ** (self._streak - 1), MAX_SKIPPED_INTERVALS)
            # The reader calls every interval: resume just before the skip-th call from now.
            self._resume_at = time.monotonic() + (skip - 0.5) * interval_s

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return bool(self.inner.force_flush(timeout_millis=timeout_millis))

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)

    return GuardedExporter()


class _ExportLoop:
    """Exports every interval, on its own thread: qhealth's points
    (:class:`~qhealth._otel_points.Producer`) with whatever the provider's own
    instruments hold, pulled from an in-memory reader. Never raises."""

    def __init__(
        self,
        exporter: MetricExporter,
        reader: Any,
        producer: Producer | None,
        resource: Any,
        interval_s: float,
        log_interval_s: float,
    ) -> None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from . import __version__

        self._exporter = exporter
        self._reader = reader
        self.producer = producer
        self._resource = resource
        self._scope = InstrumentationScope("qhealth", __version__)
        self._interval_s = interval_s
        self._log = ThrottledLog(interval_s=log_interval_s, log=logger)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qhealth-otlp", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.export_once()

    def _collect(self) -> Any:
        from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics

        scopes = []
        if self.producer is not None:
            metrics = self.producer.metrics()
            if metrics:
                scopes.append(ScopeMetrics(self._scope, metrics, ""))
        theirs = self._reader.get_metrics_data()
        if theirs is not None:
            scopes += [s for rm in theirs.resource_metrics for s in rm.scope_metrics]
        if not scopes:
            return None
        return MetricsData([ResourceMetrics(self._resource, scopes, self._resource.schema_url or "")])

    def export_once(self) -> None:
        try:
            data = self._collect()
            if data is not None:
                self._exporter.export(data)
        except Exception:
            self._log.exception("collect", "qhealth: collecting metrics for OTLP failed; skipped")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.export_once()
        self._exporter.shutdown()


@dataclass
class OtlpExport:
    """What :func:`setup_otlp` set up; :meth:`shutdown` flushes and stops it."""

    meter_provider: SdkMeterProvider
    """For instruments of your own: exported with qhealth's metrics."""
    protocol: str
    endpoint: str
    """Where metrics go, with any credentials removed."""
    producer: Producer | None = None
    """qhealth's points, when a source was given."""
    _filters: list[tuple[logging.Logger, logging.Filter]] = field(default_factory=list, repr=False)
    _guard: Any = field(default=None, repr=False)
    _loop: _ExportLoop | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def exports(self) -> int:
        """Export attempts so far (each may retry inside the OTLP exporter)."""
        return int(getattr(self._guard, "exports", 0))

    @property
    def failures(self) -> int:
        """Exports that failed so far."""
        return int(getattr(self._guard, "failures", 0))

    @property
    def successes(self) -> int:
        return int(getattr(self._guard, "successes", 0))

    @property
    def skipped(self) -> int:
        """Intervals not exported while backing off from a failing collector."""
        return int(getattr(self._guard, "skipped", 0))

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Export once more, stop, and take the log throttles off. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.producer is not None:
            self.producer.close()
        if self._loop is not None:
            self._loop.stop()  # one last export, then the exporter shuts down
        self.meter_provider.shutdown(timeout_millis=timeout_s * 1000)
        for log, log_filter in self._filters:
            log.removeFilter(log_filter)
        self._filters.clear()


def setup_otlp(
    source: SnapshotSource | None = None,
    *,
    protocol: str | None = None,
    endpoint: str | None = None,
    interval_s: float | None = None,
    timeout_s: float | None = None,
    set_global: bool = False,
    log_interval_s: float = 60.0,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    messaging: Messaging | None = None,
) -> OtlpExport:
    """Export over OTLP as configured by the ``OTEL_EXPORTER_OTLP_*`` variables.

    Arguments override the variables: ``protocol`` (``"grpc"`` or
    ``"http/protobuf"``), ``endpoint`` (read as ``OTEL_EXPORTER_OTLP_ENDPOINT``
    is: gRPC ``http://host:4317``; HTTP the collector's base URL, to which
    ``/v1/metrics`` is appended unless it already ends so), ``interval_s``
    (export period). With
    ``source``, its instruments are created on the new provider;
    ``timeout_s`` bounds each export request, retries included (default: the
    exporters' ``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s). ``set_global`` also makes
    the provider the global one. Raises
    ``ValueError`` naming a bad setting, ``ImportError`` naming the extra.
    ``messaging`` adds OpenTelemetry's messaging conventions (off by default;
    ``QHEALTH_OTEL_MESSAGING_SYSTEM=rabbitmq``, with
    ``QHEALTH_OTEL_MESSAGING_CONSUMER_GROUP`` optionally, turns them on for
    the command line's ``--otlp`` too).

    qhealth's own points are built from the snapshots (see
    :mod:`qhealth._otel_points`: no SDK instrument, which cost ~5% of a core
    at 100 queues); instruments you create on ``meter_provider`` are exported
    with them, on the same interval. Counters and histograms are cumulative.
    """
    _require("opentelemetry.sdk")
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource

    chosen = (
        protocol
        or _env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if chosen not in ("grpc", "http/protobuf"):
        raise ValueError(
            f"OTLP protocol must be 'grpc' or 'http/protobuf', got {chosen!r} "
            "(OTEL_EXPORTER_OTLP_PROTOCOL; the Python SDK has no http/json exporter)"
        )
    for what, value in (("interval", interval_s), ("timeout", timeout_s)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ValueError(f"export {what} must be a positive number of seconds, got {value!r}")
    options: dict[str, Any] = {}
    if endpoint:
        options["endpoint"] = endpoint if chosen == "grpc" else http_metrics_url(endpoint)
    if timeout_s is not None:
        options["timeout"] = timeout_s
    resource = Resource.create({"service.name": _env("OTEL_SERVICE_NAME") or "qhealth"})
    disabled = _env("OTEL_SDK_DISABLED").lower() == "true"

    if chosen == "grpc":
        _require("opentelemetry.exporter.otlp.proto.grpc")
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcExporter,
        )

        inner: MetricExporter = GrpcExporter(**options)
        shown = endpoint or _env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
        shown = shown or "http://localhost:4317"
    else:
        _require("opentelemetry.exporter.otlp.proto.http")
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpExporter,
        )

        inner = HttpExporter(**options)
        shown = str(getattr(inner, "_endpoint", endpoint or ""))

    shown = redact_url(shown)
    filters: list[tuple[logging.Logger, logging.Filter]] = []
    if disabled:
        export = OtlpExport(SdkMeterProvider(resource=resource), chosen, shown)
        if set_global:
            metrics.set_meter_provider(export.meter_provider)
        return export
    every_s = interval_s if interval_s is not None else _env_interval_s()
    if messaging is None and _env("QHEALTH_OTEL_MESSAGING_SYSTEM"):
        messaging = Messaging(
            _env("QHEALTH_OTEL_MESSAGING_SYSTEM"), _env("QHEALTH_OTEL_MESSAGING_CONSUMER_GROUP") or None
        )
    guard = _guarded(inner, shown, every_s, log_interval_s)
    reader = InMemoryMetricReader(
        preferred_temporality=inner._preferred_temporality,
        preferred_aggregation=inner._preferred_aggregation,
    )
    provider = SdkMeterProvider(resource=resource, metric_readers=[reader])
    throttle = _ThrottleFilter(log_interval_s)
    for name in EXPORTER_LOGGERS:
        log = logging.getLogger(name)
        log.addFilter(throttle)
        filters.append((log, throttle))
    if set_global:
        metrics.set_meter_provider(provider)
    export = OtlpExport(provider, chosen, shown, _filters=filters, _guard=guard)
    try:
        if source is not None:
            export.producer = Producer(source, check_buckets(buckets), messaging=messaging)
        export._loop = _ExportLoop(guard, reader, export.producer, resource, every_s, log_interval_s)
    except BaseException:
        export.shutdown(timeout_s=1.0)
        raise
    return export
