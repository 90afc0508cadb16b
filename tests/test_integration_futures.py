"""concurrent.futures adapter: real thread and process pools, counted as a queue."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait

import pytest

from qhealth import Monitor, Sample
from qhealth.integrations.futures import instrument, probe_of


class RateLimited(Exception):
    """What an HTTP client raises on a 429 (only the status matters)."""

    def __init__(self, message: str = "too many requests") -> None:
        super().__init__(message)
        self.status_code = 429


def job(kind: str) -> str:
    if kind == "fail":
        raise ValueError("bad item")
    if kind == "429":
        raise RateLimited()
    return kind


def sample_of(monitor: Monitor, queue: str) -> Sample:
    time.sleep(0.002)  # the monitor's clock must move between two ticks
    snapshot = monitor.tick()[queue]
    return snapshot.sample


KINDS = ["ok"] * 12 + ["fail"] * 5 + ["429"] * 3


def test_thread_pool_counts_every_outcome() -> None:
    monitor = Monitor(interval=0.1)
    with instrument(ThreadPoolExecutor(max_workers=4), "thumbs", monitor=monitor) as pool:
        futures = [pool.submit(job, kind) for kind in KINDS]
        wait(futures)
    sample = sample_of(monitor, "thumbs")
    assert (sample.enqueued_total, sample.processed_total, sample.failed_total) == (20, 20, 8)
    assert (sample.attempts_total, sample.rate_limited_total) == (20, 3)
    assert (sample.depth, sample.busy) == (0, 0)


def test_thread_pool_shows_busy_workers_and_waiting_items() -> None:
    monitor = Monitor(interval=0.1)
    gate = threading.Event()
    pool = instrument(ThreadPoolExecutor(max_workers=3), "blocked", monitor=monitor)
    try:
        futures = [pool.submit(gate.wait, 5) for _ in range(7)]
        deadline = time.monotonic() + 5
        while sum(f.running() for f in futures) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        sample = sample_of(monitor, "blocked")
        assert (sample.workers, sample.busy, sample.depth) == (3, 3, 4)
    finally:
        gate.set()
        pool.shutdown()


def test_thread_pool_times_waits_and_processing() -> None:
    monitor = Monitor(interval=0.1)
    with instrument(ThreadPoolExecutor(max_workers=1), "timed", monitor=monitor) as pool:
        wait([pool.submit(time.sleep, 0.02) for _ in range(3)])
    snapshot = (time.sleep(0.002), monitor.tick()["timed"])[1]
    assert len(snapshot.durations) == 3 and min(snapshot.durations) >= 0.02
    assert len(snapshot.waits) == 3 and max(snapshot.waits) >= 0.02  # the third waited for two


def test_thread_pool_idle_time_is_the_time_workers_held_nothing() -> None:
    monitor = Monitor(interval=0.1)
    pool = instrument(ThreadPoolExecutor(max_workers=2), "idle", monitor=monitor)
    first = sample_of(monitor, "idle")
    pool.submit(time.sleep, 0.2).result()
    time.sleep(0.002)
    snapshot = monitor.tick()["idle"]
    pool.shutdown()
    second = snapshot.sample
    (busy_s,) = snapshot.durations  # the item's own processing time, however long the sleep took
    elapsed = second.t - first.t
    assert first.idle_s_total is not None and second.idle_s_total is not None
    idle = second.idle_s_total - first.idle_s_total
    # two workers for `elapsed` seconds, one of them busy for `busy_s` of it
    assert busy_s >= 0.2
    assert idle == pytest.approx(2 * elapsed - busy_s, abs=0.005)


def test_a_cancelled_item_leaves_the_queue_as_a_failure() -> None:
    monitor = Monitor(interval=0.1)
    gate = threading.Event()
    pool = instrument(ThreadPoolExecutor(max_workers=1), "cancel", monitor=monitor)
    try:
        running = pool.submit(gate.wait, 5)
        queued: Future[object] = pool.submit(job, "ok")
        assert queued.cancel()
        gate.set()
        running.result()
    finally:
        pool.shutdown()
    sample = sample_of(monitor, "cancel")
    assert (sample.processed_total, sample.failed_total, sample.depth, sample.busy) == (2, 1, 0, 0)


def test_process_pool_counts_outcomes_from_the_parent() -> None:
    monitor = Monitor(interval=0.1)
    with instrument(ProcessPoolExecutor(max_workers=2), "procs", monitor=monitor) as pool:
        futures = [pool.submit(job, kind) for kind in KINDS]
        wait(futures)
    sample = sample_of(monitor, "procs")
    assert (sample.enqueued_total, sample.processed_total, sample.failed_total) == (20, 20, 8)
    assert (sample.attempts_total, sample.rate_limited_total) == (20, 3)
    assert (sample.depth, sample.busy, sample.workers) == (0, 0, 0)  # shut down: no workers left


@pytest.mark.slow
def test_process_pool_busy_is_capped_by_its_workers() -> None:
    monitor = Monitor(interval=0.1)
    pool = instrument(ProcessPoolExecutor(max_workers=2), "procs-busy", monitor=monitor)
    try:
        futures = [pool.submit(time.sleep, 0.3) for _ in range(5)]
        sample = sample_of(monitor, "procs-busy")
        assert (sample.workers, sample.busy, sample.depth) == (2, 2, 3)
        wait(futures)
        sample = sample_of(monitor, "procs-busy")
        assert (sample.busy, sample.depth, sample.processed_total) == (0, 0, 5)
    finally:
        pool.shutdown()


def test_count_calls_off_leaves_calls_to_the_code() -> None:
    monitor = Monitor(interval=0.1)
    with instrument(
        ThreadPoolExecutor(max_workers=2), "own-calls", monitor=monitor, count_calls=False
    ) as pool:
        wait([pool.submit(job, kind) for kind in ("ok", "429")])
    sample = sample_of(monitor, "own-calls")
    assert (sample.processed_total, sample.attempts_total, sample.rate_limited_total) == (2, 0, 0)


def test_instrumenting_twice_changes_nothing() -> None:
    monitor = Monitor(interval=0.1)
    pool = ThreadPoolExecutor(max_workers=2)
    assert instrument(pool, "twice", monitor=monitor) is instrument(pool, "twice", monitor=monitor)
    pool.submit(job, "ok").result()
    pool.shutdown()
    assert sample_of(monitor, "twice").processed_total == 1
    assert probe_of(pool).queue == "twice"


def test_an_executor_of_another_kind_is_refused_by_name() -> None:
    class Inline:
        pass

    with pytest.raises(TypeError, match="Inline"):
        instrument(Inline(), "x", monitor=Monitor())  # type: ignore[type-var]
