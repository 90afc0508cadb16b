"""The token bucket: exact rate, FIFO, no lock, no spike, clear errors."""

from __future__ import annotations

import asyncio
import threading

import pytest

from src_pool import TokenBucket


class FakeTime:
    """A clock that only moves when told; sleep() records what it was asked."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


def bucket(ft: FakeTime, rate: float = 10.0, **kwargs: object) -> TokenBucket:
    return TokenBucket(rate, clock=ft.clock, sleep=ft.sleep, **kwargs)  # type: ignore[arg-type]


async def test_the_bucket_starts_empty_so_the_first_second_is_not_a_burst() -> None:
    ft = FakeTime()
    limiter = bucket(ft, rate=10)
    await asyncio.gather(*(limiter.acquire() for _ in range(30)))
    granted_in_first_second = sum(1 for s in ft.sleeps if s <= 1.0 + 1e-9)
    assert granted_in_first_second == 10


async def test_waiters_are_served_in_the_order_they_asked_one_interval_apart() -> None:
    ft = FakeTime()
    limiter = bucket(ft, rate=4)
    await asyncio.gather(*(limiter.acquire() for _ in range(4)))
    assert ft.sleeps == pytest.approx([0.25, 0.5, 0.75, 1.0])


async def test_start_full_is_an_explicit_choice() -> None:
    ft = FakeTime()
    limiter = bucket(ft, rate=10, burst=5, start_full=True)
    for _ in range(5):
        assert limiter.try_acquire()
    assert not limiter.try_acquire()


async def test_idle_time_refills_to_the_burst_only_default_one_token() -> None:
    ft = FakeTime()
    limiter = bucket(ft, rate=10)
    ft.now = 300.0  # five idle minutes
    assert limiter.try_acquire()
    assert not limiter.try_acquire()  # no spike of 3,000 accrued tokens


async def test_a_larger_burst_refills_to_that_burst_and_no_more() -> None:
    ft = FakeTime()
    limiter = bucket(ft, rate=10, burst=3)
    ft.now = 300.0
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]


async def test_a_request_larger_than_the_burst_is_refused_at_once() -> None:
    limiter = TokenBucket(10, burst=2)
    with pytest.raises(ValueError, match="cannot acquire 3 tokens at once"):
        await limiter.acquire(3)


async def test_a_refused_large_request_does_not_hold_up_anyone() -> None:
    ft = FakeTime()
    limiter = bucket(ft, rate=10)
    with pytest.raises(ValueError):
        await limiter.acquire(5)
    await limiter.acquire()
    assert ft.sleeps == pytest.approx([0.1])


async def test_a_large_request_delays_a_small_one_only_by_its_own_tokens() -> None:
    ft = FakeTime()
    limiter = bucket(ft, rate=10, burst=5)
    await asyncio.gather(limiter.acquire(5), limiter.acquire(1))
    assert ft.sleeps == pytest.approx([0.5, 0.6])


async def test_waiters_sleep_concurrently_with_no_lock_between_them() -> None:
    limiter = TokenBucket(200)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.gather(*(limiter.acquire() for _ in range(20)))
    # 20 tokens at 200/s: 0.1 s in all, not 20 sleeps one after the other
    # plus lock hand-offs.
    assert 0.09 <= loop.time() - t0 < 0.3


async def test_a_cancelled_last_waiter_gives_its_tokens_back() -> None:
    limiter = TokenBucket(10)
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.tokens() > -0.5


def test_a_slow_rate_keeps_a_whole_token_and_does_not_hang() -> None:
    ft = FakeTime()
    limiter = bucket(ft, rate=0.25)
    assert limiter.burst == 1.0
    asyncio.run(limiter.acquire())
    assert ft.sleeps == pytest.approx([4.0])


@pytest.mark.parametrize("burst", [0, -1, float("inf"), float("nan")])
def test_a_burst_that_is_not_a_positive_number_is_refused(burst: float) -> None:
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(10, burst=burst)


@pytest.mark.parametrize("rate", [0, -5, float("inf"), None])
def test_a_rate_that_is_not_a_positive_number_is_refused(rate: object) -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate)  # type: ignore[arg-type]


SHARED = TokenBucket(1000)  # made at import time, before any event loop


def test_a_limiter_made_at_import_time_works_under_successive_event_loops() -> None:
    async def use() -> None:
        await asyncio.gather(*(SHARED.acquire() for _ in range(5)))

    asyncio.run(use())
    asyncio.run(use())
    thread = threading.Thread(target=asyncio.run, args=(use(),))
    thread.start()
    thread.join()
