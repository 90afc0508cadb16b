"""The pool core: blocking workers, stopping, failures, 429s, AIMD, qhealth."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from qhealth import Monitor
from src_pool import AIMD, BrokerClosed, MemoryBroker, Pool, PoolClosed, Reject, RetryPolicy, TokenBucket


class RateLimited(Exception):
    """What an HTTP client raises for a 429 (httpx/openai style: ``status_code``, headers)."""

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("429 Too Many Requests")
        self.status_code = 429
        self.headers = {} if retry_after is None else {"Retry-After": str(retry_after)}


def quick_retries(**kwargs: Any) -> RetryPolicy:
    return RetryPolicy(**{"base_delay": 0.001, "max_delay": 0.01, **kwargs})


def make_pool(handler: Any, **kwargs: Any) -> Pool:
    kwargs.setdefault("monitor", False)
    kwargs.setdefault("rng", random.Random(1))
    return Pool(handler, **kwargs)


async def test_every_submitted_item_is_processed_once() -> None:
    seen: list[int] = []

    async def handle(item: int) -> None:
        await asyncio.sleep(0)
        seen.append(item)

    async with make_pool(handle, concurrency=4) as pool:
        for i in range(200):
            await pool.submit(i)
        await pool.join(timeout=5)
        assert sorted(seen) == list(range(200))
        assert pool.broker.acked_total == 200  # type: ignore[attr-defined]


async def test_join_returns_at_once_on_an_idle_pool() -> None:
    async def handle(item: object) -> None:
        pass

    async with make_pool(handle) as pool:
        await pool.join(timeout=1)


async def test_join_waits_for_scheduled_retries() -> None:
    calls: Counter[str] = Counter()

    async def handle(item: str) -> None:
        calls[item] += 1
        if calls[item] == 1:
            raise RuntimeError("first attempt fails")

    policy = RetryPolicy(base_delay=0.2, max_delay=0.2, hold_up_to_s=0.0)  # every retry via the broker
    async with make_pool(handle, retry=policy, rng=random.Random(3)) as pool:
        await pool.submit("a")
        await pool.join(timeout=5)
        assert calls["a"] == 2


async def test_an_idle_pool_never_wakes_up() -> None:
    async def handle(item: object) -> None:
        pass

    loop = asyncio.get_running_loop()
    async with make_pool(handle, concurrency=10):
        await asyncio.sleep(0.05)  # let every worker block
        iterations = 0
        run_once = loop._run_once  # type: ignore[attr-defined]

        def counting() -> None:
            nonlocal iterations
            iterations += 1
            run_once()

        loop._run_once = counting  # type: ignore[attr-defined]
        try:
            await asyncio.sleep(0.5)
        finally:
            del loop._run_once  # type: ignore[attr-defined]
    # The test's own sleep wakes the loop once (plus the iteration that
    # scheduled it); ten polling workers would add at least ten.
    assert iterations <= 3


async def test_stop_lets_in_flight_items_finish_within_the_drain_timeout() -> None:
    done: list[int] = []
    started = asyncio.Event()

    async def handle(item: int) -> None:
        started.set()
        await asyncio.sleep(0.05)
        done.append(item)

    pool = await make_pool(handle, concurrency=2).start()
    await pool.submit(1)
    await started.wait()
    report = await pool.stop(drain_timeout=5)
    assert report.drained
    assert done == [1]
    assert report.released == 0


async def test_stop_hands_unfinished_items_back_and_counts_none_done() -> None:
    started = asyncio.Event()

    async def handle(item: int) -> None:
        started.set()
        await asyncio.sleep(60)

    broker = MemoryBroker()
    pool = await make_pool(handle, broker=broker, concurrency=3).start()
    for i in range(10):
        await pool.submit(i)
    await started.wait()
    await asyncio.sleep(0.01)
    report = await pool.stop(drain_timeout=0.05)
    assert not report.drained
    assert report.released == 3
    assert broker.acked_total == 0
    assert broker.in_flight == 0
    assert sorted(e.payload for e in broker.remaining()) == list(range(10))
    assert [e.payload for e in broker.remaining()][:3] == [0, 1, 2]  # back at the head, in order
    assert pool.probe.processed_total == 0
    assert pool.probe.busy == 0


async def test_stop_leaves_queued_items_in_the_broker() -> None:
    gate = asyncio.Event()

    async def handle(item: int) -> None:
        await gate.wait()

    broker = MemoryBroker()
    pool = await make_pool(handle, broker=broker, concurrency=2).start()
    for i in range(10):
        await pool.submit(i)
    await asyncio.sleep(0.01)
    gate.set()
    await pool.stop(drain_timeout=5)
    assert broker.acked_total + broker.depth() == 10
    assert broker.acked_total == 2


async def test_submit_after_stop_is_broker_closed() -> None:
    async def handle(item: object) -> None:
        pass

    own = await make_pool(handle).start()
    await own.stop()
    with pytest.raises(BrokerClosed):
        await own.submit(1)
    shared = await make_pool(handle, broker=MemoryBroker()).start()
    await shared.stop()
    with pytest.raises(PoolClosed):  # a BrokerClosed too, though the broker stays open for others
        await shared.submit(1)


async def test_a_failing_item_is_retried_then_succeeds() -> None:
    calls: Counter[str] = Counter()

    async def handle(item: str) -> None:
        calls[item] += 1
        if calls[item] < 3:
            raise ConnectionError("flaky")

    async with make_pool(handle, retry=quick_retries()) as pool:
        await pool.submit("x")
        await pool.join(timeout=5)
        assert calls["x"] == 3
        assert pool.probe.attempts_total == 3
        assert pool.probe.processed_total == 1
        assert pool.probe.failed_total == 0


async def test_an_item_that_always_fails_is_dead_lettered_after_max_attempts() -> None:
    calls: Counter[str] = Counter()

    async def handle(item: str) -> None:
        calls[item] += 1
        raise ValueError(f"cannot handle {item}")

    broker = MemoryBroker()
    async with make_pool(handle, broker=broker, retry=quick_retries(max_attempts=4)) as pool:
        await pool.submit("poison")
        await pool.join(timeout=5)
        assert calls["poison"] == 4
        [dead] = broker.dead_letters()
        assert dead.error == "ValueError: cannot handle poison"
        assert dead.envelope.attempts == 4
        assert pool.probe.failed_total == 1


async def test_reject_dead_letters_at_once() -> None:
    calls: list[object] = []

    async def handle(item: object) -> None:
        calls.append(item)
        raise Reject("malformed payload")

    broker = MemoryBroker()
    async with make_pool(handle, broker=broker) as pool:
        await pool.submit({"bad": True})
        await pool.join(timeout=5)
    assert len(calls) == 1
    assert broker.dead_letters()[0].error == "Reject: malformed payload"


async def test_a_long_backoff_goes_back_to_the_broker_and_frees_the_worker() -> None:
    order: list[str] = []

    async def handle(item: str) -> None:
        order.append(item)
        if item == "slow-retry" and order.count(item) == 1:
            raise RateLimited(retry_after=0.3)

    broker = MemoryBroker()
    policy = RetryPolicy(hold_up_to_s=0.1)
    async with make_pool(handle, broker=broker, concurrency=1, retry=policy) as pool:
        await pool.submit("slow-retry")
        await asyncio.sleep(0.02)
        assert broker.delayed == 1
        await pool.submit("other")
        await pool.join(timeout=5)
    assert order == ["slow-retry", "other", "slow-retry"]


async def test_a_429_counts_as_rate_limited_and_honours_retry_after_with_jitter() -> None:
    """The waits the pool asks for (recorded, so a busy machine cannot blur them)."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    attempts: Counter[int] = Counter()

    async def handle(item: int) -> None:
        attempts[item] += 1
        if attempts[item] == 1:
            raise RateLimited(retry_after=0.2)

    async with make_pool(handle, concurrency=5, adaptive=False, rng=random.Random(7), sleep=sleep) as pool:
        for i in range(5):
            await pool.submit(i)
        await pool.join(timeout=5)
        assert pool.probe.rate_limited_total == 5
        assert pool.probe.attempts_total == 10
    assert len(waits) == 5
    assert min(waits) >= 0.2  # never earlier than Retry-After
    assert max(waits) - min(waits) > 0.01  # not all back at the same instant
    assert max(waits) <= 0.2 + 0.1  # jitter bounded by half of Retry-After


async def test_a_burst_of_429s_is_one_cut_and_parked_workers_stop_counting_as_workers() -> None:
    refused: set[int] = set()
    release = asyncio.Event()

    async def handle(item: int) -> None:
        if item not in refused:
            await asyncio.sleep(0.01)  # eight calls in flight together...
            refused.add(item)
            raise RateLimited(retry_after=0.0)  # ...all refused
        await release.wait()

    monitor = Monitor(interval=1.0, clock=lambda: 0.0)
    pool = make_pool(handle, concurrency=8, monitor=monitor, name="aimd-test")
    async with pool:
        for i in range(8):
            await pool.submit(i)
        await asyncio.sleep(0.05)
        assert pool.aimd is not None
        assert pool.aimd.allowed == 4  # one congestion signal, one cut
        release.set()
        await pool.join(timeout=5)
        await asyncio.sleep(0.01)
        assert pool.active == 4
        assert pool.probe.workers == 4  # parked workers are not counted


async def test_a_429_from_a_call_made_before_the_last_cut_does_not_cut_again() -> None:
    aimd = AIMD(8)
    epoch = aimd.epoch
    assert aimd.on_rate_limited(epoch)
    assert not aimd.on_rate_limited(epoch)  # in flight when the first cut came
    assert aimd.allowed == 4
    assert aimd.on_rate_limited(aimd.epoch)  # a call made after it
    assert aimd.allowed == 2


async def test_successes_grow_the_concurrency_back_and_unpark_workers() -> None:
    async def handle(item: int) -> None:
        if item == 0:
            raise RateLimited(retry_after=0.0)
        await asyncio.sleep(0.001)

    aimd = AIMD(4, increase_every_s=0.01)
    async with make_pool(handle, concurrency=4, adaptive=aimd) as pool:
        await pool.submit(0)
        await asyncio.sleep(0.005)
        assert aimd.allowed == 2
        for i in range(1, 200):
            await pool.submit(i)
        await pool.join(timeout=5)
        assert aimd.allowed == 4
        await asyncio.sleep(0.01)
        assert pool.active == 4
        assert pool.probe.workers == 4


def test_growth_waits_a_full_period_after_a_cut() -> None:
    now = [0.0]
    aimd = AIMD(4, increase_every_s=1.0, clock=lambda: now[0])
    aimd.on_rate_limited()
    now[0] = 0.9
    aimd.on_success()
    assert aimd.allowed == 2
    now[0] = 1.0
    aimd.on_success()
    assert aimd.allowed == 3


async def test_the_limiter_token_is_acquired_while_the_worker_holds_its_item() -> None:
    busy_while_waiting: list[int] = []
    pool: Pool

    class WatchingLimiter:
        def __init__(self) -> None:
            self.inner = TokenBucket(50)

        async def acquire(self, tokens: float = 1.0) -> None:
            busy_while_waiting.append(pool.probe.busy)
            await self.inner.acquire(tokens)

    async def handle(item: int) -> None:
        pass

    pool = make_pool(handle, concurrency=3, limiter=WatchingLimiter())
    async with pool:
        for i in range(6):
            await pool.submit(i)
        await pool.join(timeout=5)
    assert busy_while_waiting[:3] == [1, 2, 3]  # each waiting worker already counts as busy


async def test_a_worker_that_dies_of_a_bug_is_replaced() -> None:
    class BrokenOnce(MemoryBroker):
        broken = True

        def ack(self, envelope: Any) -> None:
            super().ack(envelope)
            if self.broken:
                self.broken = False
                raise RuntimeError("bug in ack")

    async def handle(item: int) -> None:
        pass

    broker = BrokenOnce()
    async with make_pool(handle, broker=broker, concurrency=1) as pool:
        await pool.submit(1)
        await asyncio.sleep(0.3)  # the replacement comes after a short jittered delay
        assert pool.workers == 1
        await pool.submit(2)
        await pool.join(timeout=5)
    assert broker.acked_total == 2


async def test_a_worker_cancelled_from_outside_returns_its_item_and_is_replaced() -> None:
    started = asyncio.Event()
    done: list[int] = []

    async def handle(item: int) -> None:
        if not started.is_set():
            started.set()
            await asyncio.sleep(60)
        done.append(item)

    async with make_pool(handle, concurrency=1) as pool:
        await pool.submit(7)
        await started.wait()
        [worker] = list(pool._workers)
        worker.cancel()
        await pool.join(timeout=5)
    assert done == [7]


async def test_the_monitor_sees_workers_items_and_idle_time() -> None:
    now = [0.0]
    monitor = Monitor(interval=1.0, clock=lambda: now[0])

    async def handle(item: int) -> None:
        pass

    async with make_pool(handle, concurrency=3, monitor=monitor, name="instrumented") as pool:
        for i in range(10):
            await pool.submit(i)
        await pool.join(timeout=5)
        now[0] = 2.0
        sample = monitor.tick()["instrumented"].sample
    assert sample.workers == 3
    assert sample.busy == 0
    assert sample.enqueued_total == 10
    assert sample.processed_total == 10
    assert sample.attempts_total == 10
    assert sample.depth == 0
    assert sample.idle_s_total is not None and sample.idle_s_total > 0


def test_two_pools_cannot_share_a_queue_name_on_one_monitor() -> None:
    async def handle(item: object) -> None:
        pass

    monitor = Monitor()
    Pool(handle, name="same", monitor=monitor)
    with pytest.raises(ValueError, match="already watched"):
        Pool(handle, name="same", monitor=monitor)


def test_bad_settings_are_value_errors_naming_them() -> None:
    async def handle(item: object) -> None:
        pass

    with pytest.raises(ValueError, match="concurrency"):
        Pool(handle, concurrency=0, monitor=False)
    with pytest.raises(ValueError, match="min_concurrency"):
        Pool(handle, concurrency=2, min_concurrency=3, monitor=False)
    with pytest.raises(ValueError, match="drain_timeout"):
        Pool(handle, drain_timeout=-1, monitor=False)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


async def test_a_second_stop_waits_for_the_first_and_gets_the_same_report() -> None:
    started = asyncio.Event()

    async def handle(item: int) -> None:
        started.set()
        await asyncio.sleep(0.05)

    pool = await make_pool(handle).start()
    await pool.submit(1)
    await started.wait()
    first, second = await asyncio.gather(pool.stop(drain_timeout=5), pool.stop())
    assert first is second
    assert first.drained


async def test_cancelling_the_caller_of_stop_does_not_stop_the_stopping() -> None:
    started = asyncio.Event()
    done: list[int] = []

    async def handle(item: int) -> None:
        started.set()
        await asyncio.sleep(0.05)
        done.append(item)

    broker = MemoryBroker()
    pool = await make_pool(handle, broker=broker).start()
    await pool.submit(1)
    await started.wait()
    caller = asyncio.create_task(pool.stop(drain_timeout=5))
    await asyncio.sleep(0)
    caller.cancel()
    report = await pool.stop()  # the stop already under way carries on
    assert report.drained
    assert done == [1]
    assert broker.acked_total == 1


async def test_a_pool_that_waits_between_items_times_every_item_and_a_busy_one_a_sample() -> None:
    async def handle(item: int) -> None:
        pass

    now = [0.0]
    monitor = Monitor(interval=1.0, clock=lambda: now[0])
    async with make_pool(handle, concurrency=1, monitor=monitor, name="timed", observe_every=64) as pool:
        await asyncio.sleep(0.01)  # the worker blocks, waiting for work
        for i in range(5):  # one at a time: the worker waits before each
            await pool.submit(i)
            await pool.join(timeout=5)
        now[0] = 1.0
        slow = monitor.tick()["timed"]
        for i in range(640):  # a backlog: the worker never waits
            await pool.submit(i)
        await pool.join(timeout=5)
        now[0] = 2.0
        busy = monitor.tick()["timed"]
    assert len(slow.durations) == 5
    assert len(slow.waits) == 5
    assert 5 <= len(busy.durations) <= 20  # about one in 64, plus the items that ended a wait


class _Response:
    def __init__(self, status: int, retry_after: str) -> None:
        self.status_code = status
        self.headers = {"Retry-After": retry_after}


class RequestsStyle429(Exception):
    """requests' HTTPError: the status and headers are on ``.response``."""

    def __init__(self) -> None:
        super().__init__("429 Client Error: Too Many Requests")
        self.response = _Response(429, "0.1")


class AiohttpStyle429(Exception):
    """aiohttp's ClientResponseError: ``.status`` and ``.headers``."""

    def __init__(self) -> None:
        super().__init__("429, message='Too Many Requests'")
        self.status = 429
        self.headers = {"Retry-After": "0.1"}


@pytest.mark.parametrize("error", [RateLimited, RequestsStyle429, AiohttpStyle429])
async def test_429s_are_recognised_whatever_client_raised_them(error: Any) -> None:
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def handle(item: int) -> None:
        times.append(loop.time())
        if len(times) == 1:
            raise error(0.1) if error is RateLimited else error()

    async with make_pool(handle, concurrency=1) as pool:
        await pool.submit(1)
        await pool.join(timeout=5)
        assert pool.probe.rate_limited_total == 1
        assert pool.probe.failed_total == 0
    assert times[1] - times[0] >= 0.1  # its Retry-After was honoured


async def _storm(adaptive: bool) -> tuple[int, int]:
    """600 items through 16 workers into a downstream that refuses more than
    3 calls at once (429, Retry-After 10 ms): (429s, 429s in the second half)."""
    in_flight = 0
    refused_at: list[float] = []
    loop = asyncio.get_running_loop()

    async def handle(item: int) -> None:
        nonlocal in_flight
        if in_flight >= 3:
            refused_at.append(loop.time())
            raise RateLimited(retry_after=0.01)
        in_flight += 1
        try:
            await asyncio.sleep(0.01)
        finally:
            in_flight -= 1

    pool = make_pool(
        handle, concurrency=16, adaptive=adaptive, retry=RetryPolicy(max_attempts=1000, base_delay=0.01)
    )
    async with pool:
        t0 = loop.time()
        for i in range(600):
            await pool.submit(i)
        await pool.join(timeout=60)
        elapsed = loop.time() - t0
    return len(refused_at), sum(1 for t in refused_at if t - t0 > elapsed / 2)


@pytest.mark.slow
async def test_aimd_damps_a_429_storm_instead_of_feeding_it() -> None:
    """Without AIMD every round of retries is refused again (about 1,700 429s
    here, half of them in the second half of the run); with it, one cut per
    round of fresh 429s brings the pool under the limit within a few rounds,
    and it then probes upward once a second (4 429s here)."""
    fixed_total, fixed_late = await _storm(adaptive=False)
    aimd_total, aimd_late = await _storm(adaptive=True)
    assert fixed_late > 0.3 * fixed_total  # the storm never ends on its own
    assert aimd_total < 0.05 * fixed_total
    assert aimd_late <= 5  # the odd probe past the limit, no storm


async def test_cancelling_the_task_that_runs_the_pool_stops_it_and_loses_nothing() -> None:
    started = asyncio.Event()
    done: list[int] = []

    async def handle(item: int) -> None:
        started.set()
        await asyncio.sleep(0.02)
        done.append(item)

    broker = MemoryBroker()

    async def service() -> None:
        async with make_pool(handle, broker=broker, concurrency=2, drain_timeout=0.03):
            for i in range(10):
                await broker.put(i)
            await asyncio.sleep(60)

    runner = asyncio.create_task(service())
    await started.wait()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert broker.in_flight == 0
    assert sorted(done + [e.payload for e in broker.remaining()]) == list(range(10))
    assert broker.acked_total == len(done)
