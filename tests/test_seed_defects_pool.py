"""Regression tests: the textbook's defects (``shared/seed-defects.md``), src_pool's behaviour.

Each test here puts src_pool in the situation where the textbook sample broke.
Defects tested in the module that owns the behaviour:

Adaptive poller (tests/test_poller.py)
    ``max_interval`` not a ceiling -> test_max_interval_is_a_real_ceiling;
    jitter collapsing onto the minimum -> test_sleeps_at_the_minimum_stay_spread_...;
    no jitter at start / back in step after a reset -> test_pollers_started_together_...,
    test_n_pollers_spread_out_...; a batch after idle taken by 2-4 of 10 workers ->
    test_a_batch_after_an_idle_spell_is_taken_up_by_the_whole_group; a failure in
    fetch or process killing the worker -> test_a_failing_fetch_..., test_a_failing_item_...;
    ``min_interval=0`` spins, ``backoff_factor=1`` -> test_settings_that_would_spin_...
Backpressure (tests/test_backpressure.py)
    inverted watermarks accepted -> test_inverted_watermarks_are_refused.
Token bucket (tests/test_limiter.py)
    starts full, refills to full after idle -> test_the_bucket_starts_empty_...,
    test_idle_time_refills_to_the_burst_only_...; more than the burst never returns ->
    test_a_request_larger_than_the_burst_is_refused_at_once, test_a_refused_large_request_...;
    0.25/s rounds the burst to 0, ``burst_size=0`` replaced -> test_a_slow_rate_keeps_...,
    test_a_burst_that_is_not_a_positive_number_is_refused; made at import time ->
    test_a_limiter_made_at_import_time_...; lock held while sleeping ->
    test_waiters_sleep_concurrently_..., test_a_large_request_delays_a_small_one_...
The Redis-queue defects belong to the Redis broker's tests.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from src_pool import BrokerClosed, MemoryBroker, Pool, QueueFull, RetryPolicy, TokenBucket


def make_pool(handler: Any, **kwargs: Any) -> Pool:
    kwargs.setdefault("monitor", False)
    kwargs.setdefault("rng", random.Random(5))
    return Pool(handler, **kwargs)


class CountingBroker(MemoryBroker):
    """Counts the waits for work (the textbook's get() calls)."""

    fetches = 0

    async def fetch(self, max_items: int = 1) -> list[Any]:
        self.fetches += 1
        return await super().fetch(max_items)


# -- Worker pool (fix 1) --------------------------------------------------------------


async def test_cancelling_a_worker_mid_item_does_not_mark_the_item_done() -> None:
    """Textbook: ``task_done`` in ``finally`` -> join() returned and the item was lost."""
    first = asyncio.Event()
    completed: list[int] = []

    async def handle(item: int) -> None:
        if not first.is_set():
            first.set()
            await asyncio.sleep(60)  # interrupted here
        completed.append(item)

    broker = MemoryBroker()
    async with make_pool(handle, broker=broker, concurrency=1) as pool:
        await pool.submit(1)
        await first.wait()
        next(iter(pool._workers)).cancel()
        await asyncio.sleep(0)
        assert broker.acked_total == 0  # the interrupted attempt is not "done"
        await pool.join(timeout=5)  # join waits for the real completion
    assert completed == [1]
    assert broker.acked_total == 1


@pytest.mark.slow
async def test_idle_workers_block_instead_of_polling_get_with_a_timeout() -> None:
    """Textbook: ``wait_for(get(), timeout=1.0)``: 10 idle workers made 50 get() calls in 5 s."""

    async def handle(item: object) -> None:
        pass

    broker = CountingBroker()
    async with make_pool(handle, broker=broker, concurrency=10):
        await asyncio.sleep(0.05)
        waits_after_start = broker.fetches
        await asyncio.sleep(1.0)
        assert broker.fetches == waits_after_start == 10  # one blocking wait each, then nothing


async def test_a_worker_cancelled_right_as_an_item_arrives_stops_and_gives_the_item_back() -> None:
    """Textbook (3.11 ``wait_for``): the cancellation was swallowed, the worker
    processed the item and kept running."""
    processed: list[str] = []

    async def handle(item: str) -> None:
        processed.append(item)

    broker = MemoryBroker()
    pool = await make_pool(handle, broker=broker, concurrency=1).start()
    await asyncio.sleep(0.01)  # the worker blocks in fetch
    [worker] = list(pool._workers)
    pool._stopping = True  # no replacement: we want to see this worker's own fate
    await broker.put("x")  # handed to the blocked worker...
    worker.cancel()  # ...which is cancelled before it resumes
    await asyncio.gather(worker, return_exceptions=True)
    assert worker.cancelled()
    assert processed == []
    assert [e.payload for e in broker.remaining()] == ["x"]
    assert broker.in_flight == 0


async def test_stopping_with_items_queued_returns_and_leaves_them_to_the_broker() -> None:
    """Textbook: the shutdown flag with 10 items queued: 2 processed, 8 left, join() hung."""
    release = asyncio.Event()
    done: list[int] = []

    async def handle(item: int) -> None:
        await release.wait()
        done.append(item)

    broker = MemoryBroker()
    pool = await make_pool(handle, broker=broker, concurrency=2).start()
    for i in range(10):
        await pool.submit(i)
    await asyncio.sleep(0.01)  # two items in flight, eight queued
    stopping = asyncio.create_task(pool.stop(drain_timeout=5))
    await asyncio.sleep(0)
    release.set()
    report = await asyncio.wait_for(stopping, 10)
    assert report.drained
    assert sorted(done) == [0, 1]
    assert [e.payload for e in broker.remaining()] == list(range(2, 10))


async def test_a_producer_blocked_on_a_full_queue_is_answered_at_stop() -> None:
    """Textbook: a producer blocked on a full queue hung forever after shutdown."""
    hold = asyncio.Event()

    async def handle(item: int) -> None:
        await hold.wait()

    pool = await make_pool(handle, capacity=2, concurrency=1, drain_timeout=0.01).start()
    await pool.submit(0)  # taken by the worker
    await asyncio.sleep(0.01)
    await pool.submit(1)
    await pool.submit(2)  # queue at its high watermark
    producer = asyncio.create_task(pool.submit(3))
    await asyncio.sleep(0.01)
    assert not producer.done()
    await pool.stop()
    with pytest.raises(BrokerClosed):
        await asyncio.wait_for(producer, 5)


async def test_a_failing_item_is_retried_and_dead_lettered_not_just_logged() -> None:
    """Textbook: a failure logged ``str(e)``, no retry, no dead letter."""

    async def handle(item: int) -> None:
        raise RuntimeError("downstream 500")

    broker = MemoryBroker()
    async with make_pool(handle, broker=broker, retry=RetryPolicy(max_attempts=3, base_delay=0.001)) as pool:
        await pool.submit(1)
        await pool.join(timeout=5)
    [dead] = broker.dead_letters()
    assert dead.envelope.attempts == 3
    assert dead.error == "RuntimeError: downstream 500"


async def test_an_item_of_the_wrong_type_cannot_kill_the_worker() -> None:
    """Textbook: an item of the wrong type raised inside the ``except`` block
    and killed the worker; dead workers were never replaced."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise TypeError("cannot print me")

    async def handle(item: object) -> None:
        if not isinstance(item, int):
            raise Unprintable
        handled.append(item)

    handled: list[int] = []
    broker = MemoryBroker()
    async with make_pool(handle, broker=broker, concurrency=1, retry=RetryPolicy(max_attempts=1)) as pool:
        await pool.submit(object())
        await pool.submit(2)
        await pool.join(timeout=5)
        assert pool.workers == 1
    assert handled == [2]
    assert broker.dead_letters()[0].error == "Unprintable: <unprintable>"


async def test_priorities_are_honoured_and_need_no_orderable_payloads() -> None:
    """Textbook: ``priority`` ignored; a PriorityQueue of the items raised TypeError."""
    order: list[str] = []
    gate = asyncio.Event()

    async def handle(item: dict[str, str]) -> None:
        await gate.wait()
        order.append(item["name"])

    async with make_pool(handle, concurrency=1) as pool:
        await pool.submit({"name": "blocker"})
        await asyncio.sleep(0.01)
        await pool.submit({"name": "low"}, priority=0)
        await pool.submit({"name": "urgent"}, priority=9)
        await pool.submit({"name": "normal"}, priority=5)
        gate.set()
        await pool.join(timeout=5)
    assert order == ["blocker", "urgent", "normal", "low"]


async def test_a_rate_limiter_stops_the_burst_that_blocking_alone_lets_through() -> None:
    """Textbook: 50 items into 10 idle workers started 10 downstream calls within 20 ms."""
    loop = asyncio.get_running_loop()
    calls: list[float] = []

    async def handle(item: int) -> None:
        calls.append(loop.time())
        await asyncio.sleep(0.05)

    async with make_pool(handle, concurrency=10, limiter=TokenBucket(50)) as pool:
        t0 = loop.time()
        for i in range(20):
            await pool.submit(i)
        await pool.join(timeout=10)
    within_100ms = sum(1 for t in calls if t - t0 <= 0.1)
    assert within_100ms <= 6  # 50/s: 5 calls in 100 ms, not 10 at once
    assert calls[-1] - calls[0] >= 19 / 50 - 0.02  # spread at the limit, not bunched


# -- Backpressure (fix 4) ----------------------------------------------------------------


async def test_submit_respects_the_high_watermark() -> None:
    """Textbook: an unbounded queue with high watermark 10 accepted 1,000 items."""
    hold = asyncio.Event()

    async def handle(item: int) -> None:
        await hold.wait()

    accepted = 0
    async with make_pool(handle, capacity=10, concurrency=1, drain_timeout=0.01) as pool:
        with pytest.raises(QueueFull):
            for i in range(1000):
                await pool.submit(i, timeout=0)
                accepted += 1
                await asyncio.sleep(0)
    assert accepted <= 11  # 10 waiting + the one the worker took


async def test_a_blocked_producer_refills_as_soon_as_there_is_room_not_on_a_timer() -> None:
    """Textbook: the producer refilled on fixed 1 s / 5 s sleeps; with capacity for
    100 items/s it delivered 10/s and the queue sat empty 92% of the time."""
    loop = asyncio.get_running_loop()

    async def handle(item: int) -> None:
        await asyncio.sleep(0.01)  # 10 workers x 100/s = 1,000 items/s of capacity

    async with make_pool(handle, capacity=20, concurrency=10) as pool:
        t0 = loop.time()
        for i in range(300):
            await pool.submit(i)
        await pool.join(timeout=10)
        elapsed = loop.time() - t0
    # 0.3 s at full capacity; refilling on fixed 1 s sleeps would take 15 s (300 items, 20 per refill).
    assert elapsed < 1.5


async def test_handing_a_fetched_batch_back_keeps_every_item() -> None:
    """Textbook: the "put the item back" path dropped the remaining fetched items (7 of 10)."""
    broker = MemoryBroker()
    for i in range(10):
        await broker.put(i)
    batch = await broker.fetch(10)
    await broker.release(batch[3:])  # three handled, seven handed back
    for envelope in batch[:3]:
        broker.ack(envelope)
    assert [e.payload for e in broker.remaining()] == list(range(3, 10))
