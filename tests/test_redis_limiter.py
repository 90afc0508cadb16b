"""The shared rate limiter (GCRA in one Lua script) against a real redis-server.

The downstream API in these tests answers 429 to calls above its limit the
way real APIs do: a token bucket of ``rate`` per second that holds a tenth of
a second's worth of calls (full when the test starts, as after an idle
period). A limiter that bursts, starts full, or lets each process have its
own limit is caught by it; one that keeps the rate is not.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import subprocess
import sys
import textwrap
import time

import pytest

from src_pool.redis_limiter import RedisRateLimiter
from tests.redis_server import RedisServer, redis_server, unique_name

__all__ = ["redis_server"]  # fixtures used by this module


class Downstream:
    """An API limited to ``rate`` calls/s with a burst of ``rate / 10``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate / 10)
        self.level = self.capacity
        self.last = time.monotonic()
        self.ok = 0
        self.rejected = 0

    def call(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.level = min(self.capacity, self.level + (now - self.last) * self.rate)
        self.last = now
        if self.level >= 1:
            self.level -= 1
            self.ok += 1
            return True
        self.rejected += 1
        return False


@pytest.mark.slow
async def test_fifty_workers_at_100_per_s_get_almost_no_429s_and_95_percent_of_the_limit(
    redis_server: RedisServer,
) -> None:
    limiter = RedisRateLimiter(redis_server.url, unique_name("lim"), rate=100)
    api = Downstream(100)
    duration = 3.0
    started = time.monotonic()
    stamps: list[float] = []

    async def worker() -> None:
        while time.monotonic() - started < duration:
            await limiter.acquire()
            if (now := time.monotonic()) - started < duration:
                api.call(now)
                stamps.append(now)

    await asyncio.gather(*(worker() for _ in range(50)))
    await limiter.aclose()
    calls = api.ok + api.rejected
    assert api.rejected / calls < 0.005, f"{api.rejected} of {calls} calls answered 429"
    # Achieved while running (the first round trips open 50 connections: not the limiter's rate).
    achieved = api.ok / ((stamps[-1] - stamps[0]) * 100 + 1)
    assert achieved >= 0.95, f"{api.ok} calls in {stamps[-1] - stamps[0]:.2f} s at a limit of 100/s"


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from src_pool.redis_limiter import RedisRateLimiter

    async def main(url, name, start_at, duration):
        limiter = RedisRateLimiter(url, name, rate=100)
        # Open the 25 connections (and load the script) before the clock starts.
        warm_up = RedisRateLimiter(url, name + "-warm-up", rate=1e6, burst=100)
        warm_up._connection()
        limiter._client, limiter._loop = warm_up._client, warm_up._loop
        limiter._acquire, limiter._refund = warm_up._acquire, warm_up._refund
        await asyncio.gather(*(warm_up.acquire() for _ in range(25)))
        stamps = []
        ready = time.time()
        while time.time() < start_at:
            await asyncio.sleep(0.005)
        async def worker():
            while time.time() < start_at + duration:
                await limiter.acquire()
                stamps.append(time.time())
        await asyncio.gather(*(worker() for _ in range(25)))
        await limiter.aclose()
        print(json.dumps({"ready": ready, "stamps": stamps}))

    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])))
    """
)


@pytest.mark.slow
def test_two_processes_sharing_the_limit_stay_under_the_joint_limit(redis_server: RedisServer) -> None:
    """seed: a per-process cap let two processes make twice the calls."""
    name = unique_name("lim")
    start_at, duration = time.time() + 4.0, 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_server.url, name, str(start_at), str(duration)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=30)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    reports = [json.loads(out) for out in outputs]
    assert all(r["ready"] < start_at for r in reports), (
        "a worker process started too late (machine overloaded?)"
    )
    per_process = [r["stamps"] for r in reports]
    stamps = sorted(t for stamps in per_process for t in stamps)
    assert all(len(s) > 50 for s in per_process), (
        f"both processes made calls: {[len(s) for s in per_process]}"
    )
    api = Downstream(100)
    api.last = stamps[0] - 1.0  # the API's clock: wall time here
    for t in stamps:
        api.call(now=t)
    busiest = max(bisect.bisect_left(stamps, t + 1.0) - i for i, t in enumerate(stamps))
    assert busiest <= 101, f"{busiest} calls within one second at a joint limit of 100/s"
    span = stamps[-1] - stamps[0]
    assert len(stamps) / (span * 100 + 1) >= 0.95, f"{len(stamps)} calls in {span:.2f} s at 100/s"
    assert api.rejected / len(stamps) < 0.005, f"{api.rejected} of {len(stamps)} calls answered 429"


async def test_the_bucket_starts_empty_and_does_not_spike(redis_server: RedisServer) -> None:
    """seed: the bucket starts full (30 calls in the first second at 10/s)."""
    limiter = RedisRateLimiter(redis_server.url, unique_name("lim"), rate=10)
    done: list[float] = []
    started = time.monotonic()

    async def eager() -> None:
        await limiter.acquire()
        done.append(time.monotonic() - started)

    tasks = [asyncio.create_task(eager()) for _ in range(30)]
    await asyncio.sleep(1.0)
    assert len(done) <= 11
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await limiter.aclose()


async def test_an_idle_pause_is_not_followed_by_a_burst(redis_server: RedisServer) -> None:
    """seed: the bucket refills to full while idle, and spikes after every pause."""
    limiter = RedisRateLimiter(redis_server.url, unique_name("lim"), rate=20, burst=2)
    for _ in range(3):
        await limiter.acquire()
    await asyncio.sleep(1.0)  # idle: a textbook bucket would now hold 20
    started = time.monotonic()
    count = 0

    async def eager() -> None:
        nonlocal count
        while time.monotonic() - started < 0.5:
            await limiter.acquire()
            count += 1

    await asyncio.gather(*(eager() for _ in range(10)))
    assert count <= 2 + 0.5 * 20 + 10  # the burst, the rate, and one reservation per worker at the end
    await limiter.aclose()


async def test_more_tokens_than_the_burst_is_refused_at_once(redis_server: RedisServer) -> None:
    """seed: asking for more than the burst never returns and holds the lock."""
    limiter = RedisRateLimiter(redis_server.url, unique_name("lim"), rate=10, burst=2)
    with pytest.raises(ValueError, match="more than the bucket holds"):
        await limiter.acquire(3)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (10, 0), (-1, 1), (float("inf"), 1)])
def test_bad_rates_and_bursts_are_refused(rate: float, burst: float) -> None:
    """seed: ``burst_size=0`` is silently replaced."""
    with pytest.raises(ValueError, match=r"rate|burst"):
        RedisRateLimiter("redis://127.0.0.1:1/0", "x", rate=rate, burst=burst)


def test_a_limiter_made_outside_any_loop_works_under_two_loops(redis_server: RedisServer) -> None:
    """seed: a limiter created at import time breaks under a second event loop."""
    limiter = RedisRateLimiter(redis_server.url, unique_name("lim"), rate=1000, burst=10)

    async def use() -> None:
        for _ in range(5):
            await limiter.acquire()
        await limiter.aclose()

    asyncio.run(use())
    asyncio.run(use())


async def test_waiters_are_served_in_the_order_they_asked(redis_server: RedisServer) -> None:
    limiter = RedisRateLimiter(redis_server.url, unique_name("lim"), rate=50)
    order: list[int] = []

    async def take(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    tasks = []
    for i in range(8):
        tasks.append(asyncio.create_task(take(i)))
        await asyncio.sleep(0.002)  # each reservation reaches Redis before the next
    await asyncio.gather(*tasks)
    assert order == list(range(8))
    await limiter.aclose()


async def test_a_cancelled_waiter_gives_its_tokens_back(redis_server: RedisServer) -> None:
    limiter = RedisRateLimiter(redis_server.url, unique_name("lim"), rate=4)
    first = asyncio.create_task(limiter.acquire())  # due in 0.25 s
    await asyncio.sleep(0.05)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    started = time.monotonic()
    await limiter.acquire()  # takes the slot the cancelled one left
    assert time.monotonic() - started < 0.3
    await limiter.aclose()


def test_the_password_stays_out_of_repr() -> None:
    limiter = RedisRateLimiter("redis://user:hunter2@127.0.0.1:6379/0", "x", rate=1)
    assert "hunter2" not in repr(limiter)
