"""The shared Redis rate limiter vs the local token bucket, on bench/limiter.py's test bench.

Same set-up as ``bench/limiter.py`` (whose ``run`` this reuses): the reference
pool with 50 eager workers against a downstream that accepts at most
``--limit`` calls in any one-second sliding window and answers 429 with
``Retry-After: 1`` beyond. The limiters:

* ``RedisRateLimiter(limit)`` and ``RedisRateLimiter(0.97 * limit, burst=0.03 * limit)``
  (GCRA in one Lua script, one round trip per acquire, on a throwaway
  ``redis-server`` started here);
* ``TokenBucket`` with the same settings, in memory, for comparison.

The Redis limiter *reserves* a slot in its one round trip and the caller
sleeps until it; a caller whose event loop runs late goes late, and the next
one may go on time, so two calls can land closer than 1/rate. The headroom
of the recommended set-up (97% of the limit, 3% burst) absorbs that.

    python3 bench/redis_limiter.py [--limit 100] [--seconds 10]

The last line is ``redis limiter: 429 share X.XXXX, achieved Y.YY of limit``
for the recommended set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _redis_server import start_redis
from limiter import HEADROOM, Result, print_results, run

from src_pool import Limiter, TokenBucket
from src_pool.redis_limiter import RedisRateLimiter


def variants(limit: int, url: str) -> dict[str, Callable[[], Limiter]]:
    rate, burst = HEADROOM * limit, (1 - HEADROOM) * limit
    return {
        f"RedisRateLimiter({limit})": lambda: RedisRateLimiter(url, f"bench-{time.time_ns()}", limit),
        f"RedisRateLimiter({rate:g}, burst={burst:g})": lambda: RedisRateLimiter(
            url, f"bench-{time.time_ns()}", rate, burst=burst
        ),
        f"src_pool TokenBucket({limit})": lambda: TokenBucket(limit),
        f"src_pool TokenBucket({rate:g}, burst={burst:g})": lambda: TokenBucket(rate, burst=burst),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-redis-limiter-") as tmp:
        server, port = start_redis(tmp)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            results: list[Result] = [
                asyncio.run(run(name, make, args.limit, args.seconds))
                for name, make in variants(args.limit, url).items()
            ]
        finally:
            server.terminate()
            server.wait(10)
    print_results(results, args.limit, args.seconds, "redis limiter")


if __name__ == "__main__":
    main()
