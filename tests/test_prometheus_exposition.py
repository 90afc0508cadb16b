"""A scrape writes qhealth's families from lines prepared once per tick, and
the bytes are exactly those prometheus-client's own encoders write for the
same data, in both formats, whatever the queue names and values."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

import qhealth
import qhealth.conditions
from qhealth.prometheus import encode, metrics_route, register

from .export_support import fake_monitor

OPENMETRICS = "application/openmetrics-text;version=1.0.0"

#: Queue names are data from outside: quotes, backslashes, line breaks, non-ASCII.
HOSTILE_NAMES = ['quote"d', "back\\slash", "new\nline", "ünïcødé-队列", "sp ace", "{braces}"]


class HandFedSource:
    """A snapshot source with listeners, fed snapshots by the test."""

    def __init__(self) -> None:
        self._snapshots: dict[str, qhealth.QueueSnapshot] = {}
        self._listeners: list[qhealth.Listener] = []

    def snapshots(self) -> Mapping[str, qhealth.QueueSnapshot]:
        return dict(self._snapshots)

    def add_listener(self, listener: qhealth.Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: qhealth.Listener) -> None:
        self._listeners.remove(listener)

    def tick(self, snapshot: qhealth.QueueSnapshot) -> None:
        self._snapshots[snapshot.queue] = snapshot
        for listener in self._listeners:
            listener.on_tick(snapshot)


def _snapshot(queue: str, *, scale: float, durations: tuple[float, ...] = ()) -> qhealth.QueueSnapshot:
    sample = qhealth.Sample(
        t=1.0,
        depth=int(3 * scale),
        workers=4,
        busy=2,
        enqueued_total=int(2_500_000 * scale),  # past a million: Go writes 2.5e+06
        processed_total=int(1_000_000 * scale),
        failed_total=7,
        attempts_total=int(123_456_789 * scale),
        rate_limited_total=0,
        idle_s_total=0.1 + 1e-9 * scale,
    )
    health = qhealth.Health(t=1.0, state=qhealth.conditions.WARMING_UP)
    return qhealth.QueueSnapshot(
        queue,
        sample,
        health,
        capacity=1000,
        polls_hit_total=3,
        polls_empty_total=0,
        oldest_age_s=1.5e-7 * scale,
        durations=durations,
        waits=(0.0, 599.999, 1e9),
        sampled_at=1_764_000_000.123456,
    )


def busy_registry(queues: int = 30) -> tuple[CollectorRegistry, qhealth.Monitor]:
    """Queues with every family, from a real monitor, plus the hostile names."""
    monitor, clock = fake_monitor(window_s=4.0)
    probes = [
        monitor.watch(f"q{i:02d}", workers=3, capacity=50, oldest_age=lambda: 0.25) for i in range(queues)
    ]
    probes += [monitor.watch(name, workers=1) for name in HOSTILE_NAMES]
    registry = CollectorRegistry()
    register(monitor, registry)
    for t in range(1, 8):
        for n, probe in enumerate(probes):
            probe.enqueued(n + t)
            probe.started()
            probe.failed() if (n + t) % 5 == 0 else probe.succeeded()
            probe.observe_duration(0.0007 * n * t)
            probe.observe_wait(0.3 * t)
            probe.attempted(3)
            probe.rate_limited(t % 2)
            probe.polled(n % 2 == 0)
        clock.now = float(t)
        monitor.tick()
    return registry, monitor


def _both(registry: CollectorRegistry) -> None:
    """Ours equals prometheus-client's, in both formats."""
    ours, content_type = encode(registry)
    assert content_type.startswith("text/plain")
    assert ours == generate_latest(registry)
    ours_om, content_type = encode(registry, OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    assert ours_om == openmetrics_latest(registry)


def test_a_scrape_is_byte_for_byte_what_prometheus_client_writes() -> None:
    registry, _ = busy_registry()
    text = encode(registry)[0].decode()
    assert 'queue="quote\\"d"' in text and 'queue="new\\nline"' in text, "hostile names are in it"
    assert "qhealth_item_wait_seconds_bucket{" in text
    _both(registry)


def test_large_counts_small_fractions_and_huge_observations_are_written_as_go_writes_them() -> None:
    source = HandFedSource()
    registry = CollectorRegistry()
    register(source, registry)
    source.tick(_snapshot("big", scale=1.0, durations=(0.5,) * 1_200_000))  # a bucket past a million
    source.tick(_snapshot("small", scale=3.0))
    text = encode(registry)[0].decode()
    assert 'qhealth_items_enqueued_total{queue="big"} 2.5e+06' in text
    assert 'qhealth_item_duration_seconds_count{queue="big"} 1.2e+06' in text
    _both(registry)


def test_the_families_of_other_collectors_keep_their_place_and_their_bytes() -> None:
    registry = CollectorRegistry()
    before = Counter("app_jobs", "Jobs of the application.", ["kind"], registry=registry)
    before.labels('a"b').inc(3)
    monitor, clock = fake_monitor()
    monitor.watch("q", workers=2)
    register(monitor, registry)
    after = Counter("app_late", "Registered after qhealth.", registry=registry)
    after.inc()
    clock.now = 1.0
    monitor.tick()
    text = encode(registry)[0].decode()
    assert text.index("app_jobs_total") < text.index("qhealth_queue_depth") < text.index("app_late_total")
    _both(registry)


def test_a_source_that_is_down_and_one_without_histograms_are_written_alike() -> None:
    monitor, clock = fake_monitor()

    class Flaky:
        up = True
        unknown: Mapping[str, str] = {}

        def read(self) -> qhealth.Reading:
            if not self.up:
                raise ConnectionError("down")
            return qhealth.Reading(depth=4, workers=1)

    source = Flaky()
    monitor.watch_source("flaky", source)
    registry = CollectorRegistry()
    register(monitor, registry)
    clock.now = 1.0
    monitor.tick()
    source.up = False
    clock.now = 2.0
    monitor.tick()
    assert 'qhealth_source_up{queue="flaky"} 0.0' in encode(registry)[0].decode()
    _both(registry)

    class NoListeners:  # a source that hands over no ticks: no histograms at all
        def snapshots(self) -> Mapping[str, qhealth.QueueSnapshot]:
            return {"plain": _snapshot("plain", scale=1.0)}

    plain = CollectorRegistry()
    register(NoListeners(), plain)
    assert b"_bucket" not in encode(plain)[0]
    _both(plain)


def test_each_tick_shows_in_the_next_scrape_and_repeated_scrapes_agree() -> None:
    """Lines are reused only while a queue has no new tick."""
    registry, monitor = busy_registry(queues=3)
    first = encode(registry)[0]
    assert encode(registry)[0] == first
    probe = monitor.watch("q00")
    probe.enqueued(1000)
    monitor.tick(8.0)
    after = encode(registry)[0]  # no observation in that tick: the histogram lines are kept
    assert after != first
    assert after == generate_latest(registry)
    probe.observe_duration(3.0)
    monitor.tick(9.0)
    assert encode(registry)[0] == generate_latest(registry)
    assert 'qhealth_item_duration_seconds_bucket{le="5.0",queue="q00"} 8.0' in encode(registry)[0].decode()


def test_an_unwatched_queue_leaves_the_scrape_and_the_prepared_lines() -> None:
    registry, monitor = busy_registry(queues=2)
    encode(registry)
    monitor.unwatch("q01")
    text = encode(registry)[0].decode()
    assert 'queue="q01"' not in text and 'queue="q00"' in text
    assert text.encode() == generate_latest(registry)


@pytest.mark.parametrize(
    ("accept", "check"),
    [
        ("", lambda body, reg: body == generate_latest(reg)),
        (OPENMETRICS, lambda body, reg: body == openmetrics_latest(reg)),
    ],
)
def test_the_metrics_route_serves_the_prepared_bytes(
    accept: str, check: Callable[[bytes, CollectorRegistry], bool]
) -> None:
    from qhealth._http import Request

    registry, _ = busy_registry(queues=2)
    response = metrics_route(registry)(Request("GET", "/metrics", {}, {"accept": accept}))
    assert check(response.body, registry)


def test_a_restricted_scrape_still_names_only_the_families_asked_for() -> None:
    from qhealth._http import Request

    registry, _ = busy_registry(queues=2)
    request = Request("GET", "/metrics", {"name[]": ["qhealth_workers"]}, {})
    body = metrics_route(registry)(request).body.decode()
    assert {line.split("{")[0] for line in body.splitlines() if not line.startswith("#")} == {
        "qhealth_workers"
    }


def test_lines_prepared_at_tick_time_give_the_same_bytes() -> None:
    monitor, clock = fake_monitor()
    probes = [monitor.watch(name, workers=2) for name in ("a", *HOSTILE_NAMES)]
    registry = CollectorRegistry()
    collector = register(monitor, registry, prepare_at_tick=True)
    for t in range(1, 4):
        for probe in probes:
            probe.enqueued(t)
            probe.observe_duration(0.01 * t)
        clock.now = float(t)
        monitor.tick()
        assert collector._encoded, "written on the tick, before any scrape"
        _both(registry)
