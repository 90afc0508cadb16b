"""qhealth's own OpenTelemetry points (the OTLP path of ``setup_otlp``): the
same metrics as the SDK's instruments would give, rebuilt only for a queue
that ticked, and the messaging conventions only when asked for."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import qhealth
from qhealth._contract import DEFAULT_BUCKETS
from qhealth._otel_points import Messaging, Producer
from qhealth.otel import instrument

from .export_support import busy_monitor, fake_monitor


def _flatten(metrics: list[Any]) -> dict[tuple[str, frozenset[tuple[str, str]]], tuple[Any, ...]]:
    """{(metric, attributes): (unit, kind, monotonic, value or histogram)}."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], tuple[Any, ...]] = {}
    for m in metrics:
        kind = type(m.data).__name__
        for p in m.data.data_points:
            if kind == "Histogram":
                value: Any = (p.count, p.sum, tuple(p.bucket_counts), tuple(p.explicit_bounds), p.min, p.max)
            else:
                value = float(p.value)
            monotonic = getattr(m.data, "is_monotonic", None)
            out[(m.name, frozenset(p.attributes.items()))] = (m.unit, kind, monotonic, value)
    return out


def _via_sdk(monitor: qhealth.Monitor, messaging: Messaging | None = None) -> list[Any]:
    reader = InMemoryMetricReader()
    instrument(monitor, MeterProvider(metric_readers=[reader]), messaging=messaging)
    _last_tick(monitor)
    data = reader.get_metrics_data()
    assert data is not None
    return [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]


def _last_tick(monitor: qhealth.Monitor) -> None:
    probe = monitor.watch("emails")
    probe.observe_duration(0.05)
    probe.observe_duration(2.0)
    probe.observe_wait(0.02)
    monitor.tick(11.0)


@pytest.mark.parametrize("messaging", [None, Messaging("rabbitmq", consumer_group="mailers")])
def test_the_points_are_those_of_the_sdk_instruments(messaging: Messaging | None) -> None:
    """Names, units, kinds, attributes and values, histograms included."""
    sdk_monitor, _ = busy_monitor()
    ours_monitor, _ = busy_monitor()
    producer = Producer(ours_monitor, DEFAULT_BUCKETS, messaging=messaging)
    _last_tick(ours_monitor)
    ours = _flatten(producer.metrics())
    theirs = _flatten(_via_sdk(sdk_monitor, messaging))
    assert set(ours) == set(theirs)
    for key, got in ours.items():
        assert got[:3] == theirs[key][:3], key
        mine, sdk = got[3], theirs[key][3]
        if isinstance(mine, tuple):  # a histogram: counts exact, the sum as floats add up
            assert (mine[0], *mine[2:]) == (sdk[0], *sdk[2:]), key
            assert mine[1] == pytest.approx(sdk[1]), key
        else:
            assert mine == pytest.approx(sdk), key


def test_messaging_conventions_are_off_by_default_and_named_as_opentelemetry_says_when_on() -> None:
    monitor, _ = busy_monitor()
    plain = Producer(monitor, DEFAULT_BUCKETS)
    asked = Producer(monitor, DEFAULT_BUCKETS, messaging=Messaging("redis"))
    _last_tick(monitor)
    assert not [m for m in plain.metrics() if m.name.startswith("messaging.")]
    got = {m.name: m for m in asked.metrics()}
    consumed = got["messaging.client.consumed.messages"]
    assert consumed.unit == "{message}" and consumed.data.is_monotonic
    (point,) = consumed.data.data_points
    assert dict(point.attributes) == {
        "messaging.system": "redis",
        "messaging.destination.name": "emails",
        "messaging.operation.name": "process",
    }
    assert point.value == 10  # every item processed, failed ones included
    duration = got["messaging.process.duration"]
    assert duration.unit == "s"
    (hist,) = duration.data.data_points
    assert hist.count == got["qhealth.item.duration"].data.data_points[0].count
    assert got["qhealth.items.processed"].data.data_points, "qhealth's own names stay beside them"


def test_a_messaging_system_is_required() -> None:
    with pytest.raises(ValueError, match=r"messaging\.system"):
        Messaging(" ")


def test_points_are_built_once_per_tick_and_reused_by_every_export_until_the_next() -> None:
    """The work of an export scales with what changed since the last one."""
    monitor, clock = fake_monitor()
    monitor.watch("idle-q", workers=1)
    busy = monitor.watch("busy-q", workers=1)
    producer = Producer(monitor, DEFAULT_BUCKETS)
    clock.now = 1.0
    monitor.tick()

    def points(queue: str) -> list[Any]:
        return [p for m in producer.metrics() for p in m.data.data_points if p.attributes["queue"] == queue]

    first_idle, first_busy = points("idle-q"), points("busy-q")
    assert all(a is b for a, b in zip(points("idle-q"), first_idle, strict=True))
    assert all(a is b for a, b in zip(points("busy-q"), first_busy, strict=True))
    busy.enqueued(3)
    monitor.tick(2.0)
    assert not any(a is b for a, b in zip(points("busy-q"), first_busy, strict=True))


def test_a_counter_that_falls_starts_anew() -> None:
    """A source that restarted counts from zero: a cumulative series then gets a new start time."""
    totals = {"enqueued": 100}

    class Restarting:
        unknown: ClassVar[dict[str, str]] = {}

        def read(self) -> qhealth.Reading:
            return qhealth.Reading(depth=0, workers=1, enqueued_total=totals["enqueued"])

    monitor, clock = fake_monitor()
    monitor.watch_source("q", Restarting())
    producer = Producer(monitor, DEFAULT_BUCKETS)

    def start() -> int:
        (m,) = [m for m in producer.metrics() if m.name == "qhealth.items.enqueued"]
        return int(m.data.data_points[0].start_time_unix_nano)

    clock.now = 1.0
    monitor.tick()
    before = start()
    totals["enqueued"] = 150
    monitor.tick(2.0)
    assert start() == before
    totals["enqueued"] = 5
    monitor.tick(3.0)
    assert start() > before
