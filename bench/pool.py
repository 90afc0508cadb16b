"""The in-memory reference pool vs a bare asyncio.Queue pool, same no-op jobs.

Both pools: one producer putting ``--items`` no-op items one at a time, ten
workers, a queue bounded at 100 items; the clock runs from the first put until
every item is done (``join()``). The bare pool is the textbook's fix 1
(``await q.get()``, ``await handle(item)``, ``q.task_done()``); the reference
pool adds what makes it safe: envelopes tracked in flight until acknowledged
(nothing lost on cancel or shutdown), watermark backpressure, retry and 429
handling, AIMD, and qhealth instrumentation on (a started monitor ticking
every second). Runs alternate, and medians are compared.

Throughput is measured two ways: items per wall-clock second, and items per
CPU second of the process (``time.process_time()``). Both pools run on one
core; on a machine other jobs share, the wall clock also measures how much CPU
the benchmark was given, so the CPU figure is the one compared.

    python3 bench/pool.py [--items 200000] [--rounds 7]

The last line is ``pool/bare throughput ratio: X.XX`` (median items per CPU
second, reference pool over bare pool).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from qhealth import Monitor
from src_pool import Pool

CAPACITY = 100
WORKERS = 10


async def handle(item: object) -> None:
    """The no-op job."""


async def bare_pool(items: int) -> tuple[float, float]:
    queue: asyncio.Queue[int] = asyncio.Queue(CAPACITY)

    async def worker() -> None:
        while True:
            item = await queue.get()
            await handle(item)
            queue.task_done()

    tasks = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    await asyncio.sleep(0)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(items):
        await queue.put(i)
    await queue.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return wall, cpu


async def reference_pool(items: int, instrumented: bool = True) -> tuple[float, float]:
    monitor = Monitor().start() if instrumented else None
    try:
        pool = Pool(handle, name="bench", capacity=CAPACITY, concurrency=WORKERS, monitor=monitor or False)
        async with pool:
            await asyncio.sleep(0)
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(items):
                await pool.submit(i)
            await pool.join()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert pool.probe.processed_total == items, "the reference pool lost items"
    finally:
        if monitor is not None:
            monitor.stop()
    return wall, cpu


async def reference_pool_uninstrumented(items: int) -> tuple[float, float]:
    return await reference_pool(items, instrumented=False)


VARIANTS: dict[str, Callable[[int], Awaitable[tuple[float, float]]]] = {
    "bare asyncio.Queue pool": bare_pool,
    "reference pool (src_pool)": reference_pool,
    "reference pool, qhealth off": reference_pool_uninstrumented,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpus: dict[str, list[float]] = {name: [] for name in VARIANTS}
    asyncio.run(bare_pool(10_000))  # warm-up
    asyncio.run(reference_pool(10_000))
    for _ in range(args.rounds):
        for name, run in VARIANTS.items():
            wall, cpu = asyncio.run(run(args.items))
            walls[name].append(args.items / wall)
            cpus[name].append(args.items / cpu)
    print(
        f"{args.items:,} no-op items, {WORKERS} workers, queue bound {CAPACITY}, "
        f"{args.rounds} alternated rounds"
    )
    print()
    print(f"{'pool':28} {'items/CPU-s':>12} {'items/s':>10} {'min':>10} {'max':>10}")
    for name in VARIANTS:
        w = walls[name]
        print(
            f"{name:28} {statistics.median(cpus[name]):12,.0f} {statistics.median(w):10,.0f} "
            f"{min(w):10,.0f} {max(w):10,.0f}"
        )
    bare = statistics.median(cpus["bare asyncio.Queue pool"])
    ours = statistics.median(cpus["reference pool (src_pool)"])
    wall_ratio = statistics.median(walls["reference pool (src_pool)"]) / statistics.median(
        walls["bare asyncio.Queue pool"]
    )
    print()
    print(f"(items/s are wall-clock medians, min and max; their ratio this run: {wall_ratio:.2f})")
    print(f"pool/bare throughput ratio: {ours / bare:.2f}")


if __name__ == "__main__":
    main()
