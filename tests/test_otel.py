"""The OpenTelemetry path: observable instruments and histograms on a given
or the global MeterProvider, with the contract's names, units and attributes,
and the same Prometheus names as the prometheus-client path."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    InMemoryMetricReader,
    Sum,
)
from prometheus_client import CollectorRegistry

import qhealth
from qhealth import _contract as c
from qhealth.otel import instrument
from qhealth.prometheus import register

from .export_support import Sidecar, busy_monitor, fake_monitor, families, scrape, spec_rows
from .fresh_python import run_python
from .otel_support import prometheus_name


class Collected:
    """One collection of an InMemoryMetricReader, flattened."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        data = reader.get_metrics_data()
        self.metrics: dict[str, Any] = {}
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                assert sm.scope.name == "qhealth"
                for m in sm.metrics:
                    self.metrics[m.name] = m

    def value(self, name: str, **attributes: str) -> float:
        for p in self.metrics[name].data.data_points:
            if dict(p.attributes) == attributes:
                return float(p.value)
        raise KeyError((name, attributes))

    def attribute_sets(self, name: str) -> list[dict[str, str]]:
        return [dict(p.attributes) for p in self.metrics[name].data.data_points]


def observe_and_tick(monitor: qhealth.Monitor, probe: qhealth.Probe) -> None:
    """One more tick with latencies: an OpenTelemetry histogram has a series
    only once something was recorded in it."""
    probe.observe_duration(0.05)
    probe.observe_wait(0.02)
    monitor.tick(11.0)


def test_every_instrument_has_the_contract_name_unit_and_kind() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monitor, probe = busy_monitor()
    instrument(monitor, provider)
    observe_and_tick(monitor, probe)
    got = Collected(reader)
    provider.shutdown()
    kinds = {"gauge": Gauge, "counter": Sum, "histogram": Histogram}
    for row in spec_rows():
        metric = got.metrics.get(row.otel)
        assert metric is not None, f"{row.otel} was not exported"
        assert metric.unit == row.unit, row.otel
        assert isinstance(metric.data, kinds[row.kind]), row.otel
        if row.kind == "counter":
            assert metric.data.is_monotonic, row.otel
        for attributes in got.attribute_sets(row.otel):
            assert set(attributes) == {"queue", *row.labels}, row.otel
    assert set(got.metrics) == {r.otel for r in spec_rows()}


def test_observed_values_are_the_monitors_latest_snapshot() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monitor, _ = busy_monitor()
    instrument(monitor, provider)
    got = Collected(reader)
    provider.shutdown()
    snap = monitor.snapshot("emails")
    assert snap is not None
    assert got.value("qhealth.queue.depth", queue="emails") == snap.sample.depth
    assert got.value("qhealth.workers", queue="emails") == 4
    assert got.value("qhealth.queue.capacity", queue="emails") == 100
    assert got.value("qhealth.items.enqueued", queue="emails") == 10
    assert got.value("qhealth.items.processed", queue="emails", outcome="success") == 9
    assert got.value("qhealth.items.processed", queue="emails", outcome="error") == 1
    assert got.value("qhealth.rate_limited", queue="emails") == 5
    assert got.value("qhealth.polls", queue="emails", result="empty") == 1
    conditions = {a["condition"] for a in got.attribute_sets("qhealth.condition")}
    assert conditions == {"stalled", "overflow", "rate_limited", "boom_bust", "idle"}


def test_histograms_are_recorded_at_tick_time_with_the_contract_buckets() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monitor, clock = fake_monitor()
    probe = monitor.watch("lat", workers=1)
    instrument(monitor, provider)
    for d in (0.003, 0.2, 7.0):
        probe.observe_duration(d)
    clock.now = 1.0
    monitor.tick()
    got = Collected(reader)
    provider.shutdown()
    (point,) = got.metrics["qhealth.item.duration"].data.data_points
    assert point.count == 3
    assert point.sum == pytest.approx(7.203)
    assert tuple(point.explicit_bounds) == c.DEFAULT_BUCKETS


def test_unknown_fields_are_not_observed() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instrument(Sidecar(), provider)
    got = Collected(reader)
    provider.shutdown()
    assert set(got.metrics) == {"qhealth.queue.depth", "qhealth.condition", "qhealth.source.up"}


def test_an_unwatched_queue_is_no_longer_observed() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monitor, _ = busy_monitor()
    monitor.watch("other", workers=1)
    monitor.tick(11.0)
    instrument(monitor, provider)
    monitor.unwatch("emails")
    got = Collected(reader)
    provider.shutdown()
    assert {a["queue"] for a in got.attribute_sets("qhealth.queue.depth")} == {"other"}


def test_the_otel_path_gives_the_prometheus_names_of_the_prometheus_client_path() -> None:
    """Through the SDK's Prometheus reader, and through the OpenTelemetry
    Collector's translation rules: the same family names as our collector."""
    monitor, probe = busy_monitor()
    ours = CollectorRegistry()
    register(monitor, ours)

    via_sdk = CollectorRegistry()
    reader = PrometheusMetricReader(disable_target_info=True, registry=via_sdk)
    memory = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader, memory])
    instrument(monitor, provider)
    observe_and_tick(monitor, probe)
    try:
        expected = families(ours)
        assert families(via_sdk) == expected
        sample_keys = {(name, frozenset(k for k, _ in lbls)) for name, lbls in scrape(ours)}
        sdk_keys = {
            (name, frozenset(k for k, _ in lbls if not k.startswith("otel_scope_")))
            for name, lbls in scrape(via_sdk)
        }
        assert {k for k in sdk_keys if not k[0].endswith("_created")} == sample_keys

        translated = set()
        for name, metric in Collected(memory).metrics.items():
            kind = {Gauge: "gauge", Sum: "sum", Histogram: "histogram"}[type(metric.data)]
            monotonic = kind == "sum" and metric.data.is_monotonic
            translated.add(prometheus_name(name, metric.unit, kind, monotonic))
        assert translated == set(expected) == {r.prometheus for r in spec_rows()}
    finally:
        provider.shutdown()


def test_instruments_go_on_the_global_meter_provider_by_default() -> None:
    # In a fresh process: the global provider can be set once per process.
    script = textwrap.dedent(
        """
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        import qhealth, qhealth.otel

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        monitor = qhealth.Monitor(clock=lambda: 1.0)
        monitor.watch("q", workers=2)
        qhealth.otel.instrument(monitor)
        monitor.tick(2.0)
        data = reader.get_metrics_data()
        print(sorted(m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "'qhealth.workers'" in out.stdout and "'qhealth.condition'" in out.stdout


def test_a_missing_opentelemetry_says_which_extra_to_install() -> None:
    script = textwrap.dedent(
        """
        import qhealth, qhealth.otel
        try:
            qhealth.otel.instrument(qhealth.Monitor())
        except ImportError as exc:
            print(exc)
        """
    )
    out = run_python(script, without="opentelemetry")  # as if the otlp extra were not installed
    assert out.returncode == 0, out.stderr
    assert "pip install 'qhealth[otlp]'" in out.stdout


def test_bad_buckets_are_refused() -> None:
    provider = MeterProvider()
    with pytest.raises(ValueError, match="buckets"):
        instrument(qhealth.Monitor(), provider, buckets=())
    provider.shutdown()
