"""The monitor reads a queue watched from outside (a Source) and judges only what it knows."""

from __future__ import annotations

import logging

import pytest

from qhealth import ClassifierConfig, Condition, Monitor, Reading


class Scripted:
    """A source that returns the readings it was given, one per tick."""

    def __init__(self, readings: list[Reading | Exception | None]) -> None:
        self._readings = list(readings)

    def read(self) -> Reading | None:
        item = self._readings.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    @property
    def unknown(self) -> dict[str, str]:
        return {}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(monitor: Monitor, clock: Clock, ticks: int) -> list[object]:
    out = []
    for _ in range(ticks):
        clock.now += 1.0
        out.append(monitor.tick().get("q"))
    return out


def small_window_monitor(clock: Clock) -> Monitor:
    return Monitor(interval=1.0, config=ClassifierConfig(window_s=5, min_window_intervals=2), clock=clock)


def test_a_depth_only_source_gives_samples_with_unknown_fields() -> None:
    clock = Clock()
    monitor = small_window_monitor(clock)
    monitor.watch_source("q", Scripted([Reading(depth=3)]))
    clock.now += 1
    sample = monitor.tick()["q"].sample
    assert sample.depth == 3
    assert sample.processed_total is None and sample.workers is None and sample.enqueued_total is None


def test_conditions_needing_unknown_fields_are_not_judged_and_say_why() -> None:
    clock = Clock()
    monitor = small_window_monitor(clock)
    monitor.watch_source("q", Scripted([Reading(depth=5)] * 10))
    snapshots = run(monitor, clock, 10)
    health = monitor.health("q")
    assert health is not None and snapshots[-1] is not None
    assert Condition.STALLED in health.not_judged
    assert "processed" in health.not_judged[Condition.STALLED]
    assert Condition.STALLED not in health.conditions


def test_a_source_that_knows_processing_lets_a_stall_be_seen() -> None:
    clock = Clock()
    monitor = small_window_monitor(clock)
    readings = [Reading(depth=4 + i, workers=2, busy=0, processed_total=10) for i in range(10)]
    monitor.watch_source("q", Scripted(list(readings)))
    run(monitor, clock, 10)
    health = monitor.health("q")
    assert health is not None and health.state == "stalled"


def test_a_failing_source_skips_the_sample_and_the_next_tick_still_reads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    monitor = small_window_monitor(clock)
    monitor.watch_source("q", Scripted([ConnectionError("down"), None, Reading(depth=1)]))
    with caplog.at_level(logging.WARNING, logger="qhealth"):
        first, second, third = run(monitor, clock, 3)
    assert first is None and second is None and third is not None
    assert "source of queue 'q' failed" in caplog.text


def test_busy_above_workers_is_clamped_to_the_workers() -> None:
    clock = Clock()
    monitor = small_window_monitor(clock)
    monitor.watch_source("q", Scripted([Reading(depth=0, workers=2, busy=3)]))
    clock.now += 1
    assert monitor.tick()["q"].sample.busy == 2


def test_the_oldest_age_a_source_reads_reaches_the_snapshot() -> None:
    clock = Clock()
    monitor = small_window_monitor(clock)
    monitor.watch_source("q", Scripted([Reading(depth=1, oldest_age_s=7.5)]))
    clock.now += 1
    assert monitor.tick()["q"].oldest_age_s == 7.5


def test_watching_a_source_under_a_taken_name_is_refused() -> None:
    monitor = Monitor()
    monitor.watch("q")
    with pytest.raises(ValueError, match="already watched"):
        monitor.watch_source("q", Scripted([]))


def test_a_source_without_read_is_refused_by_type() -> None:
    with pytest.raises(TypeError, match="read"):
        Monitor().watch_source("q", object())  # type: ignore[arg-type]


def test_a_probe_queue_that_does_not_count_arrivals_reports_them_unknown() -> None:
    clock = Clock()
    monitor = Monitor(clock=clock)
    probe = monitor.watch("workers-only", depth=lambda: 2, workers=1, counts_enqueued=False)
    probe.started()
    probe.succeeded()
    clock.now += 1
    sample = monitor.tick()["workers-only"].sample
    assert sample.enqueued_total is None and sample.processed_total == 1
