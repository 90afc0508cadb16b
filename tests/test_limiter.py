"""The token bucket: exact rate, FIFO, no lock, no spike, no catch-up burst, clear errors."""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest

from src_pool import TokenBucket


class FakeTime:
    """A clock that moves only when someone sleeps (by what they asked, plus
    ``late`` seconds: an event loop that runs behind)."""

    def __init__(self, late: float = 0.0) -> None:
        self.now = 0.0
        self.late = late

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds + self.late
        await asyncio.sleep(0)


def bucket(ft: FakeTime, rate: float = 10.0, **kwargs: object) -> TokenBucket:
    return TokenBucket(rate, clock=ft.clock, sleep=ft.sleep, **kwargs)  # type: ignore[arg-type]


async def grant_times(ft: FakeTime, limiter: TokenBucket, requests: list[float]) -> list[float]:
    """Ask for each request in order (concurrently); when each was granted."""
    granted: dict[int, float] = {}

    async def one(i: int, tokens: float) -> None:
        await limiter.acquire(tokens)
        granted[i] = ft.now

    await asyncio.gather(*(one(i, t) for i, t in enumerate(requests)))
    return [granted[i] for i in range(len(requests))]


async def test_the_bucket_starts_empty_so_the_first_second_is_not_a_burst() -> None:
    ft = FakeTime()
    times = await grant_times(ft, bucket(ft, rate=10), [1.0] * 30)
    assert sum(1 for t in times if t <= 1.0 + 1e-9) == 10


async def test_waiters_are_served_in_the_order_they_asked_one_interval_apart() -> None:
    ft = FakeTime()
    times = await grant_times(ft, bucket(ft, rate=4), [1.0] * 4)
    assert times == pytest.approx([0.25, 0.5, 0.75, 1.0])


async def test_a_late_event_loop_does_not_let_the_overdue_callers_go_together() -> None:
    ft = FakeTime(late=0.35)  # every sleep overshoots by 3.5 intervals
    times = await grant_times(ft, bucket(ft, rate=10), [1.0] * 5)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.1 - 1e-9  # never closer than 1/rate: burst 1 means one at a time


async def test_start_full_is_an_explicit_choice() -> None:
    ft = FakeTime()
    limiter = bucket(ft, rate=10, burst=5, start_full=True)
    assert [limiter.try_acquire() for _ in range(6)] == [True] * 5 + [False]


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
    assert await grant_times(ft, limiter, [1.0]) == pytest.approx([0.1])


async def test_a_large_request_delays_a_small_one_only_by_its_own_tokens() -> None:
    ft = FakeTime()
    times = await grant_times(ft, bucket(ft, rate=10, burst=5), [5.0, 1.0])
    assert times == pytest.approx([0.5, 0.6])


async def test_a_large_request_that_gives_up_lets_the_next_one_through_at_once() -> None:
    limiter = TokenBucket(20, burst=10)
    big = asyncio.create_task(limiter.acquire(10))  # at the head: 0.5 s of tokens
    await asyncio.sleep(0.01)
    small = asyncio.create_task(limiter.acquire(1))
    await asyncio.sleep(0.01)
    big.cancel()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(small, 1)
    assert loop.time() - t0 < 0.3  # served on its own tokens, not after the big one's 0.5 s
    assert limiter.waiting == 0


async def test_waiters_sleep_one_at_a_time_with_no_lock_between_them() -> None:
    limiter = TokenBucket(200)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.gather(*(limiter.acquire() for _ in range(20)))
    assert 0.09 <= loop.time() - t0 < 1.0  # 20 tokens at 200/s: 0.1 s in all, not 20 sleeps in a row


def test_a_slow_rate_keeps_a_whole_token_and_does_not_hang() -> None:
    ft = FakeTime()
    limiter = bucket(ft, rate=0.25)
    assert limiter.burst == 1.0
    assert asyncio.run(grant_times(ft, limiter, [1.0])) == pytest.approx([4.0])


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
    assert SHARED.waiting == 0


def test_callers_left_waiting_by_a_closed_loop_do_not_block_the_next_loop() -> None:
    limiter = TokenBucket(5)  # the waiters below are still in line when their loop ends

    async def abandon() -> None:
        for _ in range(3):
            asyncio.get_running_loop().create_task(limiter.acquire())
        await asyncio.sleep(0.01)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(abandon())
    loop.close()  # pending tasks die with it
    assert limiter.waiting == 3

    async def use() -> None:
        await asyncio.wait_for(limiter.acquire(), 2)

    asyncio.run(use())
