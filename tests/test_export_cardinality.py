"""10,000 distinct items, error messages and URLs create no new series: no
label ever holds an item, a payload, a URL or an error message, on either
export path."""

from __future__ import annotations

import urllib.error

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

import qhealth
from qhealth._contract import DEFAULT_BUCKETS
from qhealth.integrations.loop import tracked
from qhealth.otel import instrument
from qhealth.prometheus import register

from .clocks import FakeClock
from .export_support import fake_monitor, scrape

SeriesKey = tuple[str, frozenset[tuple[str, str]]]


def _otel_series(reader: InMemoryMetricReader) -> set[SeriesKey]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        (m.name, frozenset(p.attributes.items()))
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
    }


def _item(i: int) -> tuple[str, str, str]:
    """A distinct item id, URL and error message."""
    item = f"item-{i:05d}-{i * 7919 % 100_003}"
    url = f"https://api.example.com/v1/send?to=user{i}@example.com&id={item}"
    return item, url, f"upstream refused {item} at {url}: code {1000 + i}"


def _process(probe: qhealth.Probe, clock: FakeClock, first: int, count: int) -> None:
    """Items through a worker loop instrumented with ``tracked``: a third
    succeed, a third fail with their own message, a third are answered 429."""
    for i in range(first, first + count):
        _, url, message = _item(i)
        probe.enqueued()
        try:
            with tracked(probe):
                if i % 3 == 1:
                    raise ValueError(message)
                if i % 3 == 2:
                    raise urllib.error.HTTPError(url, 429, message, {"Retry-After": str(i)}, None)  # type: ignore[arg-type]
        except (ValueError, urllib.error.HTTPError) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()
        clock.now += 0.001


def test_ten_thousand_distinct_items_errors_and_urls_create_no_new_series() -> None:
    monitor, clock = fake_monitor()
    probe = monitor.watch("sends", workers=4)
    registry = CollectorRegistry()
    register(monitor, registry)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instrument(monitor, provider)
    try:
        _process(probe, clock, 0, 10)
        clock.now = 1.0
        monitor.tick()
        prometheus_before = set(scrape(registry))
        otel_before = _otel_series(reader)

        for tick in range(2, 12):
            _process(probe, clock, 10 + (tick - 2) * 999, 999)
            clock.now = float(tick)
            monitor.tick()
        after = scrape(registry)
        otel_after = _otel_series(reader)
    finally:
        provider.shutdown()

    assert after[("qhealth_items_enqueued_total", frozenset({("queue", "sends")}))] == 10_000
    assert after[("qhealth_rate_limited_total", frozenset({("queue", "sends")}))] > 3000
    assert set(after) == prometheus_before
    assert otel_after == otel_before
    label_values = {v for _, labels in after for _, v in labels} | {v for _, a in otel_after for _, v in a}
    allowed = {"sends", "success", "error", "stalled", "overflow", "rate_limited", "boom_bust", "idle"}
    allowed |= {repr(b) for b in DEFAULT_BUCKETS} | {"+Inf"}
    assert label_values <= allowed, sorted(label_values - allowed)[:5]
