"""The monitor: one ticker for all queues, and nothing it does breaks the pool."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from qhealth import ClassifierConfig, Condition, Listener, Monitor, QueueSnapshot, Reading

from .clocks import FakeClock


class Recorder(Listener):
    def __init__(self) -> None:
        self.snapshots: list[QueueSnapshot] = []
        self.unwatched: list[str] = []

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        self.snapshots.append(snapshot)

    def on_unwatch(self, queue: str) -> None:
        self.unwatched.append(queue)


def test_a_tick_samples_every_queue_with_the_trace_fields() -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    depth = {"value": 7}
    emails = monitor.watch("emails", depth=lambda: depth["value"], capacity=100, workers=4)
    monitor.watch("sms", workers=1)
    emails.enqueued(10)
    emails.started()
    emails.attempted(2)
    emails.rate_limited()
    clock.advance(2)
    snapshots = monitor.tick()
    assert set(snapshots) == {"emails", "sms"}
    sample = snapshots["emails"].sample
    assert (sample.t, sample.depth, sample.workers, sample.busy) == (2, 7, 4, 1)
    assert (sample.enqueued_total, sample.attempts_total, sample.rate_limited_total) == (10, 2, 1)
    assert sample.idle_s_total == pytest.approx(3 * 2), "one of 4 workers busy since t=0"
    assert snapshots["emails"].capacity == 100


def test_idle_time_in_a_sample_comes_from_the_probe_transitions() -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    probe = monitor.watch("q", workers=4)
    clock.advance(1)
    probe.started()  # 4 idle for 1 s, then 3 idle
    clock.advance(2)
    assert monitor.tick()["q"].sample.idle_s_total == pytest.approx(4 + 3 * 2)


def test_without_a_depth_source_depth_is_derived_from_the_counters() -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    probe = monitor.watch("q")
    probe.enqueued(5)
    probe.started()
    probe.started()
    probe.succeeded()
    clock.advance(1)
    assert monitor.tick()["q"].sample.depth == 5 - 1 - 1


def test_fields_the_probe_cannot_know_are_reported_unknown() -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    monitor.watch("q", depth=lambda: 0)
    clock.advance(1)
    sample = monitor.tick()["q"].sample
    assert sample.workers is None and sample.idle_s_total is None


def test_a_failing_depth_source_skips_the_sample_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock)

    def broken() -> int:
        raise ConnectionError("redis://user:secret@host is down")

    monitor.watch("broken", depth=broken)
    monitor.watch("fine", depth=lambda: 1)
    with caplog.at_level(logging.WARNING, logger="qhealth"):
        for _ in range(5):
            clock.advance(1)
            snapshots = monitor.tick()
            assert set(snapshots) == {"fine"}
    failures = [r for r in caplog.records if "source of queue 'broken' failed" in r.getMessage()]
    assert len(failures) == 1, "logged once per interval, not once per tick"
    (line,) = failures
    assert "secret" not in line.getMessage() and "user:***@host" in line.getMessage()
    assert not line.exc_info and "\n" not in line.getMessage(), "one line, no traceback"


def test_a_failed_read_marks_the_queue_down_and_keeps_its_last_sample_as_stale() -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock, wall_clock=lambda: 1_700_000_000.0 + clock.now)
    depth: dict[str, object] = {"value": 3}

    def read() -> int:
        if isinstance(depth["value"], Exception):
            raise depth["value"]
        return int(depth["value"])  # type: ignore[call-overload]

    monitor.watch("emails", depth=read, workers=2)
    heard = Recorder()
    down: list[QueueSnapshot] = []
    heard.on_source_down = down.append  # type: ignore[method-assign]
    monitor.add_listener(heard)
    clock.advance(1)
    good = monitor.tick()["emails"]
    assert good.source_up and good.sampled_at == 1_700_000_000.0 + clock.now

    depth["value"] = ConnectionError("broker down")
    clock.advance(1)
    assert monitor.tick() == {}, "a failed read is no sample"
    stale = monitor.snapshot("emails")
    assert stale is not None and not stale.source_up
    assert stale.sample == good.sample and stale.sampled_at == good.sampled_at
    assert [s.source_up for s in down] == [False] and len(heard.snapshots) == 1

    depth["value"] = 5
    clock.advance(1)
    back = monitor.tick()["emails"]
    assert back.source_up and back.sample.depth == 5 and back.sampled_at == 1_700_000_000.0 + clock.now


def test_a_queue_whose_source_never_answered_is_down_without_a_sample() -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock)

    def broken() -> int:
        raise ConnectionError("refused")

    monitor.watch("q", depth=broken)
    clock.advance(1)
    monitor.tick()
    snapshot = monitor.snapshot("q")
    assert snapshot is not None and not snapshot.source_up and not snapshot.sampled


@pytest.mark.parametrize("bad", [-1, 2.5, "3", True])
def test_a_depth_that_is_not_a_count_is_refused(bad: object) -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    monitor.watch("q", depth=lambda: bad)  # type: ignore[arg-type,return-value]
    clock.advance(1)
    assert monitor.tick() == {}


def test_a_failing_listener_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Listener):
        def on_tick(self, snapshot: QueueSnapshot) -> None:
            raise RuntimeError("exporter down")

    clock = FakeClock()
    monitor = Monitor(clock=clock)
    recorder = Recorder()
    monitor.add_listener(Broken())
    monitor.add_listener(recorder)
    monitor.watch("q", depth=lambda: 0)
    with caplog.at_level(logging.ERROR, logger="qhealth"):
        for _ in range(3):
            clock.advance(1)
            monitor.tick()
    assert len(recorder.snapshots) == 3
    assert sum("Broken" in r.getMessage() for r in caplog.records) == 1


def test_listeners_hear_about_unwatched_queues() -> None:
    monitor = Monitor()
    recorder = Recorder()
    monitor.add_listener(recorder)
    monitor.watch("q")
    monitor.unwatch("q")
    assert recorder.unwatched == ["q"] and monitor.queues == []


def test_watching_a_name_twice_returns_the_same_queue() -> None:
    monitor = Monitor()
    assert monitor.watch("q") is monitor.watch("q")
    source = Scripted()
    monitor.watch_source("s", source)
    monitor.watch_source("s", source)  # the same source again: nothing changes
    assert monitor.queues == ["q", "s"]


@pytest.mark.parametrize("second", ["probe", "another source"])
def test_watching_a_name_in_another_way_is_an_error_naming_it(second: str) -> None:
    monitor = Monitor()
    monitor.watch_source("q", Scripted())
    with pytest.raises(ValueError, match="'q' is already watched"):
        if second == "probe":
            monitor.watch("q")
        else:
            monitor.watch_source("q", Scripted())


def test_a_queue_whose_reading_breaks_the_tick_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A counter out of float range once froze every queue for 5 ticks."""
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    huge = 10**400  # far out of float range
    readings = [Reading(depth=1, workers=1, busy=0, processed_total=huge + i) for i in range(20)]
    monitor.watch_source("broken", Scripted(readings))
    fine = monitor.watch("fine", workers=1)
    with caplog.at_level(logging.WARNING, logger="qhealth"):
        for _ in range(12):
            fine.enqueued()
            fine.started()
            fine.succeeded()
            clock.advance(1)
            snapshots = monitor.tick()
            assert "fine" in snapshots
    assert snapshots["fine"].sample.processed_total == 12
    broken = monitor.snapshot("broken")
    assert broken is not None and not broken.source_up
    assert "'broken' could not be sampled (ValueError: processed_total" in caplog.text


class Scripted:
    """A source that returns its readings in turn (None once they run out)."""

    def __init__(self, readings: list[Reading] | None = None) -> None:
        self._readings = list(readings or [])

    @property
    def unknown(self) -> dict[str, str]:
        return {}

    def read(self) -> Reading | None:
        return self._readings.pop(0) if self._readings else None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"capacity": 0}, "capacity"), ({"capacity": 2.5}, "capacity"), ({"workers": -1}, "workers")],
)
def test_bad_watch_arguments_are_refused_by_name(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Monitor().watch("q", **kwargs)  # type: ignore[arg-type]


def test_a_condition_turns_on_in_the_monitor_as_in_the_offline_classifier() -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock, config=ClassifierConfig(window_s=10))
    monitor.watch("q", depth=lambda: 0, workers=5)
    health = None
    for _ in range(12):
        clock.advance(1)
        health = monitor.tick()["q"].health
    assert health is not None and health.conditions == {Condition.IDLE}
    assert monitor.health("q") == health


def test_the_ticker_thread_ticks_and_stops() -> None:
    monitor = Monitor(interval=0.02)
    monitor.watch("q", depth=lambda: 0)
    with monitor:
        deadline = time.monotonic() + 5
        while monitor.snapshot("q") is None and time.monotonic() < deadline:
            time.sleep(0.01)
    assert monitor.snapshot("q") is not None
    count = monitor.snapshot("q")
    time.sleep(0.1)
    assert monitor.snapshot("q") is count, "no tick after stop()"


async def test_the_monitor_can_tick_on_the_running_event_loop() -> None:
    monitor = Monitor(interval=0.02)
    monitor.watch("q", depth=lambda: 3)
    task = asyncio.create_task(monitor.run())
    for _ in range(200):
        await asyncio.sleep(0.01)
        if monitor.snapshot("q") is not None:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    snapshot = monitor.snapshot("q")
    assert snapshot is not None and snapshot.sample.depth == 3


def test_latency_observations_reach_listeners_once() -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    recorder = Recorder()
    monitor.add_listener(recorder)
    probe = monitor.watch("q")
    probe.observe_duration(0.5)
    probe.observe_wait(0.1)
    clock.advance(1)
    monitor.tick()
    clock.advance(1)
    monitor.tick()
    assert [s.durations for s in recorder.snapshots] == [(0.5,), ()]
    assert [s.waits for s in recorder.snapshots] == [(0.1,), ()]


def test_a_bad_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        Monitor(interval=0)
