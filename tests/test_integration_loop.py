"""Any worker loop: ``tracked(probe)`` as a context manager and as a decorator."""

from __future__ import annotations

import asyncio
import threading

import pytest

from qhealth import Monitor, Probe
from qhealth.integrations.loop import tracked


class TooManyRequests(Exception):
    def __init__(self) -> None:
        super().__init__("slow down")
        self.response = type("Response", (), {"status_code": 429})()


def test_a_block_that_ends_counts_one_success_and_one_call() -> None:
    probe = Probe("q")
    with tracked(probe) as held:
        assert held.busy == 1
    assert (probe.busy, probe.processed_total, probe.failed_total, probe.attempts_total) == (0, 1, 0, 1)
    assert len(probe.durations) == 1


def test_a_block_that_raises_counts_a_failure_and_the_exception_propagates() -> None:
    probe = Probe("q")
    with pytest.raises(KeyError), tracked(probe):
        raise KeyError("x")
    assert (probe.busy, probe.processed_total, probe.failed_total, probe.rate_limited_total) == (0, 1, 1, 0)


def test_a_429_on_the_exception_response_counts_a_rate_limited_call() -> None:
    probe = Probe("q")
    with pytest.raises(TooManyRequests), tracked(probe):
        raise TooManyRequests()
    assert (probe.failed_total, probe.attempts_total, probe.rate_limited_total) == (1, 1, 1)


def test_count_calls_off_counts_items_only() -> None:
    probe = Probe("q")
    with pytest.raises(TooManyRequests), tracked(probe, count_calls=False):
        raise TooManyRequests()
    assert (probe.processed_total, probe.attempts_total, probe.rate_limited_total) == (1, 0, 0)


def test_the_decorator_tracks_every_call_of_a_sync_function() -> None:
    probe = Probe("q")

    @tracked(probe)
    def handle(x: int) -> int:
        if x < 0:
            raise ValueError(x)
        return x * 2

    assert handle(2) == 4
    with pytest.raises(ValueError):
        handle(-1)
    assert (probe.processed_total, probe.failed_total, probe.busy) == (2, 1, 0)
    assert handle.__name__ == "handle"


async def test_the_decorator_tracks_coroutines_and_shows_them_busy_while_awaited() -> None:
    probe = Probe("q")
    release = asyncio.Event()

    @tracked(probe)
    async def handle() -> str:
        await release.wait()
        return "done"

    tasks = [asyncio.create_task(handle()) for _ in range(3)]
    await asyncio.sleep(0)
    assert probe.busy == 3
    release.set()
    assert await asyncio.gather(*tasks) == ["done"] * 3
    assert (probe.busy, probe.processed_total) == (0, 3)


def test_threads_count_on_their_own_shards_and_the_monitor_sums_them() -> None:
    monitor = Monitor(interval=0.1)
    probe = monitor.watch("threads", workers=4)

    @tracked(probe)
    def handle() -> None:
        pass

    def worker() -> None:
        for _ in range(500):
            handle()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sample = monitor.tick()["threads"].sample
    assert (sample.processed_total, sample.busy, sample.workers) == (2000, 0, 4)


def test_tracking_something_that_is_not_a_probe_is_refused() -> None:
    with pytest.raises(TypeError, match="Probe"):
        tracked("emails")  # type: ignore[arg-type]
