"""Instrumenting asyncio queues: counts what passes, keeps the queue's behaviour."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from qhealth import Condition, Monitor
from qhealth.integrations.asyncio_queue import instrument, instrumented_queue, probe_of

from .clocks import FakeClock


async def drain(queue: asyncio.Queue[Any], workers: int) -> None:
    async def worker() -> None:
        while True:
            item = await queue.get()
            queue.task_done()
            if item is None:
                return

    await asyncio.gather(*(worker() for _ in range(workers)))


async def test_an_instrumented_queue_counts_items_through_it() -> None:
    monitor = Monitor()
    queue = instrumented_queue("jobs", maxsize=10, monitor=monitor, workers=3)
    consumers = asyncio.create_task(drain(queue, 3))
    for i in range(50):
        await queue.put(i)
    for _ in range(3):
        await queue.put(None)
    await consumers
    monitor.tick()
    snapshot = monitor.snapshot("jobs")
    assert snapshot is not None
    sample = snapshot.sample
    assert (sample.enqueued_total, sample.processed_total, sample.busy, sample.depth) == (53, 53, 0, 0)
    assert snapshot.capacity == 10 and sample.workers == 3


async def test_an_existing_queue_is_instrumented_in_place_and_keeps_its_identity() -> None:
    monitor = Monitor()
    queue: asyncio.Queue[int] = asyncio.Queue()
    alias = queue
    probe = instrument(queue, "jobs", monitor=monitor, workers=1)
    assert alias is queue and isinstance(queue, asyncio.Queue)
    assert probe_of(queue) is probe
    queue.put_nowait(1)
    assert queue.get_nowait() == 1
    queue.task_done()
    await queue.join()
    monitor.tick()
    assert monitor.snapshot("jobs").sample.processed_total == 1  # type: ignore[union-attr]


async def test_items_taken_before_instrumenting_count_when_they_are_done() -> None:
    """Done is derived from the queue's own unfinished count: an item a worker held when the
    queue was instrumented counts as processed at its task_done, and never makes a count negative."""
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(3):
        queue.put_nowait(i)
    queue.get_nowait()  # held by a worker, not done yet
    instrument(queue, "jobs", monitor=monitor, workers=2)

    def sample() -> tuple[int | None, int | None, int | None]:
        clock.advance(1.0)
        monitor.tick()
        s = monitor.snapshot("jobs").sample  # type: ignore[union-attr]
        return s.enqueued_total, s.processed_total, s.busy

    assert sample() == (2, 0, 0)  # the two waiting count as enqueued: what instrumenting found
    queue.get_nowait()
    assert sample() == (2, 0, 1)
    queue.task_done()  # the item held before
    assert sample() == (2, 1, 0)
    queue.task_done()
    queue.put_nowait(9)
    assert sample() == (3, 2, 0)


async def test_the_queue_still_behaves_like_a_queue() -> None:
    queue = instrumented_queue("q", maxsize=1, monitor=Monitor())
    queue.put_nowait("a")
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait("b")
    assert queue.get_nowait() == "a"
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    queue.task_done()
    with pytest.raises(ValueError, match="too many times"):
        queue.task_done()
    await asyncio.wait_for(queue.join(), 1)


@pytest.mark.parametrize("kind", [asyncio.PriorityQueue, asyncio.LifoQueue])
async def test_priority_and_lifo_queues_keep_their_order(kind: type[asyncio.Queue[Any]]) -> None:
    queue = instrumented_queue("q", kind=kind, monitor=Monitor())
    for item in (3, 1, 2):
        queue.put_nowait(item)
    taken = [queue.get_nowait() for _ in range(3)]
    assert taken == ([1, 2, 3] if kind is asyncio.PriorityQueue else [2, 1, 3])
    assert isinstance(queue, kind)


async def test_a_user_subclass_keeps_its_own_storage() -> None:
    class Dedup(asyncio.Queue[int]):
        def _put(self, item: int) -> None:
            if item not in self._queue:  # type: ignore[attr-defined]
                super()._put(item)

    queue = instrumented_queue("q", kind=Dedup, monitor=Monitor())
    for item in (1, 1, 2):
        queue.put_nowait(item)
    assert queue.qsize() == 2


async def test_idle_time_is_measured_while_workers_block_on_an_empty_queue() -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    queue = instrumented_queue("q", monitor=monitor)
    probe_of(queue)._clock = clock  # the probe reads the same fake clock
    got = asyncio.Event()

    async def worker() -> None:
        await queue.get()
        queue.task_done()
        got.set()
        await asyncio.Event().wait()  # stays alive, busy with nothing

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    clock.advance(5)
    queue.put_nowait("x")
    await got.wait()
    clock.advance(1)
    sample = monitor.tick()["q"].sample
    assert sample.workers == 1, "the waiting task was counted as a worker"
    assert sample.idle_s_total == pytest.approx(5.0), "idle only while blocked in get()"
    task.cancel()


async def test_a_polling_worker_is_idle_from_an_empty_poll_until_it_takes_an_item() -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock)
    queue = instrumented_queue("q", monitor=monitor, workers=1)
    probe_of(queue)._clock = clock
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    clock.advance(3)  # the worker sleeps between polls
    queue.put_nowait("x")
    assert queue.get_nowait() == "x"
    queue.task_done()
    clock.advance(1)
    snapshot = monitor.tick()["q"]
    assert snapshot.sample.idle_s_total == pytest.approx(3.0)
    assert snapshot.polls_empty_total == 1


async def test_a_cancelled_wait_ends_its_idle_span() -> None:
    monitor = Monitor()
    queue = instrumented_queue("q", monitor=monitor, workers=1)
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert probe_of(queue)._idle_open == 0


async def test_queue_waits_and_durations_are_timed_for_a_few_items_per_tick() -> None:
    monitor = Monitor()
    queue = instrumented_queue("q", monitor=monitor, workers=1, timed_per_tick=4)
    monitor.tick()
    for i in range(10):
        queue.put_nowait(i)
    for _ in range(10):
        queue.get_nowait()
        await asyncio.sleep(0)
        queue.task_done()
    snapshot = monitor.tick()["q"]
    assert len(snapshot.durations) == 4, "the first few items of a round are timed"
    assert 1 <= len(snapshot.waits) <= 4
    assert all(w >= 0 for w in snapshot.waits)


async def test_the_event_loop_arms_the_next_round_of_timing_an_interval_later() -> None:
    """The ticker only reads the queue: timing is re-armed by the loop itself."""
    monitor = Monitor(interval=0.05)
    queue = instrumented_queue("q", monitor=monitor, workers=1, timed_per_tick=2)
    for round_ in range(2):
        for i in range(5):
            queue.put_nowait(i)
            queue.get_nowait()
            queue.task_done()
        assert len(probe_of(queue).durations) == 2 * (round_ + 1), "two timed per round, none after"
        await asyncio.sleep(0.1)  # an interval: the loop arms the next round


async def test_a_queue_cannot_be_instrumented_twice() -> None:
    monitor = Monitor()
    queue: asyncio.Queue[int] = asyncio.Queue()
    instrument(queue, "a", monitor=monitor)
    with pytest.raises(ValueError, match="already instrumented"):
        instrument(queue, "b", monitor=monitor)
    with pytest.raises(TypeError):
        instrument([], "c", monitor=monitor)  # type: ignore[arg-type]


async def _run_pollers(monitor: Monitor, queue: asyncio.Queue[int], poll: str) -> None:
    """Four workers that sleep between polls, in step (the bug), and a producer."""

    async def poller() -> None:
        while True:
            await asyncio.sleep(0.2)
            if poll == "get_nowait":
                while True:
                    try:
                        queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    await asyncio.sleep(0.005)
                    queue.task_done()
            else:
                while not queue.empty():
                    queue.get_nowait()
                    await asyncio.sleep(0.005)
                    queue.task_done()

    async def producer() -> None:
        while True:
            queue.put_nowait(0)
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(poller()) for _ in range(4)] + [asyncio.create_task(producer())]
    ticker = asyncio.create_task(monitor.run())
    try:
        for _ in range(200):
            await asyncio.sleep(0.05)
            health = monitor.health("polled")
            if health is not None and Condition.BOOM_BUST in health.conditions:
                break
        health = monitor.health("polled")
        assert health is not None and Condition.BOOM_BUST in health.conditions, health
    finally:
        for task in [*tasks, ticker]:
            task.cancel()
        await asyncio.gather(*tasks, ticker, return_exceptions=True)


@pytest.mark.slow
async def test_workers_polling_with_get_nowait_in_step_are_seen_as_boom_bust() -> None:
    from qhealth import ClassifierConfig

    monitor = Monitor(interval=0.05, config=ClassifierConfig(window_s=1.0))
    await _run_pollers(monitor, instrumented_queue("polled", monitor=monitor, workers=4), "get_nowait")


@pytest.mark.slow
async def test_workers_polling_with_empty_checks_are_seen_with_transition_timing() -> None:
    from qhealth import ClassifierConfig

    monitor = Monitor(interval=0.05, config=ClassifierConfig(window_s=1.0))
    queue = instrumented_queue("polled", monitor=monitor, workers=4, idle="transitions")
    await _run_pollers(monitor, queue, "empty")


def test_transition_timing_needs_the_worker_count() -> None:
    with pytest.raises(ValueError, match="workers=N"):
        instrumented_queue("q", monitor=Monitor(), idle="transitions")
    with pytest.raises(ValueError, match="idle must be one of"):
        instrumented_queue("q", monitor=Monitor(), idle="sometimes")
