"""Rate-limiter accuracy: src_pool's token bucket vs aiolimiter, 50 eager workers.

A simulated downstream accepts at most ``--limit`` calls in any one-second
window (a sliding window: the strictest reading of "100 per second") and
answers every other call with HTTP 429 and ``Retry-After: 1``; each call takes
20 ms. The reference pool (50 workers, AIMD on, 429s retried after
Retry-After plus jitter) runs against it for ``--seconds`` with a queue that
never runs dry, once per limiter:

* ``TokenBucket(limit)`` (src_pool: starts empty, burst 1, FIFO, counted in
  real time) and ``TokenBucket(0.97 * limit, burst=0.03 * limit)``;
* ``AsyncLimiter(limit, 1)`` (aiolimiter as usually written: its bucket holds a
  whole second's worth and starts full) and ``AsyncLimiter(0.03 * limit,
  0.03 / 0.97)`` (the same rate and burst as the second src_pool row);
* no limiter at all (AIMD and Retry-After alone).

Why 0.97 and a burst of 0.03: a bucket of rate ``r`` and burst ``b`` lets at
most ``r + b`` calls into any one-second window, so ``0.97 L + 0.03 L = L``
never exceeds the downstream's limit ``L``, while the burst lets the pool
catch up, without exceeding it, on the calls that fell due while the event
loop ran late (at burst 1 those are lost, and a busy machine costs rate).

    python3 bench/limiter.py [--limit 100] [--seconds 10]

The last line is ``limiter: 429 share X.XXXX, achieved Y.YY of limit`` for
``TokenBucket(0.97 * limit, burst=0.03 * limit)``, the recommended set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from src_pool import Limiter, Pool, RetryPolicy, TokenBucket

WORKERS = 50
CALL_S = 0.02
HEADROOM = 0.97


class TooManyRequests(Exception):
    """What an HTTP client raises for a 429 (status and headers as httpx has them)."""

    def __init__(self) -> None:
        super().__init__("429 Too Many Requests")
        self.status_code = 429
        self.headers = {"Retry-After": "1"}


class Downstream:
    """At most ``limit`` accepted calls in any one-second window."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.clock = clock
        self.accepted: deque[float] = deque()
        self.accepted_total = 0
        self.rejected_total = 0
        self.counting = True

    async def call(self) -> None:
        now = self.clock()
        while self.accepted and self.accepted[0] <= now - 1.0:
            self.accepted.popleft()
        if len(self.accepted) >= self.limit:
            if self.counting:
                self.rejected_total += 1
            raise TooManyRequests
        self.accepted.append(now)
        if self.counting:
            self.accepted_total += 1
        await asyncio.sleep(CALL_S)


@dataclass(frozen=True)
class Result:
    name: str
    accepted: int
    rejected: int
    first_second: int
    seconds: float
    limit: int

    @property
    def share_429(self) -> float:
        calls = self.accepted + self.rejected
        return self.rejected / calls if calls else 0.0

    @property
    def achieved(self) -> float:
        return self.accepted / (self.limit * self.seconds)


async def run(name: str, make_limiter: Callable[[], Limiter | None], limit: int, seconds: float) -> Result:
    loop = asyncio.get_running_loop()
    downstream = Downstream(limit, loop.time)
    first_second: list[float] = []

    async def handle(item: int) -> None:
        if loop.time() - t0 < 1.0:
            first_second.append(loop.time())
        await downstream.call()

    pool = Pool(
        handle,
        name=f"limiter-{name}",
        capacity=None,
        concurrency=WORKERS,
        limiter=make_limiter(),
        retry=RetryPolicy(max_attempts=50),
        monitor=False,
        rng=random.Random(1),
    )
    t0 = loop.time()
    await pool.start()
    await pool.submit_many(range(int(limit * seconds * 2)))
    await asyncio.sleep(seconds)
    downstream.counting = False
    elapsed = loop.time() - t0
    await pool.stop(drain_timeout=0)
    return Result(
        name,
        downstream.accepted_total,
        downstream.rejected_total,
        len(first_second),
        elapsed,
        limit,
    )


def variants(limit: int) -> dict[str, Callable[[], Limiter | None]]:
    from aiolimiter import AsyncLimiter

    rate, burst = HEADROOM * limit, (1 - HEADROOM) * limit
    return {
        f"src_pool TokenBucket({limit})": lambda: TokenBucket(limit),
        f"src_pool TokenBucket({rate:g}, burst={burst:g})": lambda: TokenBucket(rate, burst=burst),
        f"aiolimiter AsyncLimiter({limit}, 1)": lambda: AsyncLimiter(limit, 1),
        f"aiolimiter AsyncLimiter({burst:g}, {burst / rate:.4f})": lambda: AsyncLimiter(burst, burst / rate),
        "no limiter (AIMD + Retry-After only)": lambda: None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    results = [
        asyncio.run(run(name, make, args.limit, args.seconds)) for name, make in variants(args.limit).items()
    ]
    print_results(results, args.limit, args.seconds, "limiter")


def print_results(results: list[Result], limit: int, seconds: float, summary: str) -> None:
    """The table, then the summary line for the recommended set-up (the second row)."""
    print(
        f"{WORKERS} eager workers, downstream: at most {limit} calls in any 1 s window "
        f"(429 + Retry-After: 1 beyond), {CALL_S * 1000:.0f} ms per call, {seconds:g} s per limiter"
    )
    print()
    print(
        f"{'limiter':44} {'calls in 1st s':>14} {'accepted':>9} {'429s':>6} {'429 share':>10} {'of limit':>9}"
    )
    for r in results:
        print(
            f"{r.name:44} {r.first_second:14d} {r.accepted:9d} {r.rejected:6d} "
            f"{r.share_429:10.4f} {r.achieved:9.2f}"
        )
    recommended = results[1]
    print()
    print(f"{summary}: 429 share {recommended.share_429:.4f}, achieved {recommended.achieved:.2f} of limit")


if __name__ == "__main__":
    main()
