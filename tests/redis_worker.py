"""A worker process for the Redis fault tests: the reference pool on the Redis
broker, recording every item it processes in Redis.

    python -m tests.redis_worker work URL QUEUE RESULTS [--concurrency N] [--work-ms LO HI]
    python -m tests.redis_worker produce URL QUEUE COUNT [--chunk N] [--pause-ms MS]

The handler counts its payload in the hash ``RESULTS`` (``HINCRBY``: one
field per item, the value is how many times it was processed) and, while it
works, marks it in ``RESULTS:started``. Run until killed. The producer puts
the integers ``0..COUNT-1`` in chunks and exits 0 once all were accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from typing import Any

from src_pool.pool import Pool
from src_pool.redis_broker import RedisBroker
from src_pool.redis_connect import connect
from src_pool.retry import RetryPolicy


async def main(args: argparse.Namespace) -> None:
    results = connect(args.url, blocking=False, socket_timeout=5.0, options={})
    rng = random.Random()

    async def handle(payload: Any) -> None:
        item = str(payload)
        await results.hincrby(f"{args.results}:started", item, 1)
        await asyncio.sleep(rng.uniform(args.work_ms[0], args.work_ms[1]) / 1000)
        await results.hincrby(args.results, item, 1)

    broker = RedisBroker(
        args.url,
        args.queue,
        visibility_timeout=args.visibility,
        max_lost_deliveries=1000,  # deaths are the test's doing: never dead-letter for them
        connect_timeout=60.0,
    )
    policy = RetryPolicy(max_attempts=1000, base_delay=0.01, max_delay=0.5)
    async with Pool(handle, broker=broker, concurrency=args.concurrency, retry=policy, monitor=False):
        print("ready", flush=True)
        await asyncio.Event().wait()


async def produce(args: argparse.Namespace) -> None:
    async with RedisBroker(args.url, args.queue, connect_timeout=60.0) as broker:
        for start in range(0, args.count, args.chunk):
            await broker.put_many(range(start, min(start + args.chunk, args.count)))
            await asyncio.sleep(args.pause_ms / 1000)
    print("produced", args.count, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    roles = parser.add_subparsers(dest="role", required=True)
    work = roles.add_parser("work")
    work.add_argument("url")
    work.add_argument("queue")
    work.add_argument("results")
    work.add_argument("--concurrency", type=int, default=10)
    work.add_argument("--work-ms", type=float, nargs=2, default=(1.0, 5.0))
    work.add_argument("--visibility", type=float, default=1.5)
    prod = roles.add_parser("produce")
    prod.add_argument("url")
    prod.add_argument("queue")
    prod.add_argument("count", type=int)
    prod.add_argument("--chunk", type=int, default=100)
    prod.add_argument("--pause-ms", type=float, default=20.0)
    arguments = parser.parse_args()
    asyncio.run(main(arguments) if arguments.role == "work" else produce(arguments))
