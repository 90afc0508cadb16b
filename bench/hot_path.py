"""What instrumentation costs on the hot path.

Part 1: nanoseconds per call of a probe method, next to a bare attribute
increment, prometheus_client ``Counter.inc()`` and an OpenTelemetry
``counter.add()``, all measured in this run.

Part 2: a no-op asyncio.Queue pool (1 producer, 10 workers, bounded queue)
bare vs instrumented, run alternately; the median of each is compared.

    python3 bench/hot_path.py [--items 200000] [--rounds 7] [--no-callgrind]

Part 3, when valgrind is installed (``--no-callgrind`` skips it): CPU
instructions per item counted by valgrind's callgrind (the difference between
a 5,000- and a 25,000-item run, so start-up cancels out). Instruction counts
do not depend on what else the machine is doing, so they back up the timings
on a busy machine.

The last line is ``instrumented/bare throughput ratio: X.XX`` for the
recommended way in (``instrumented_queue``); the line before it,
``instruction ratio: X.XX``, the same by instruction count.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from _callgrind import instructions

import qhealth
from qhealth.integrations.asyncio_queue import instrument, instrumented_queue


class _Bare:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


def _ns_per_call(stmt: Callable[[], object], number: int = 200_000, repeat: int = 5) -> float:
    best = min(timeit.repeat(stmt, number=number, repeat=repeat))
    return best / number * 1e9


def per_call_table() -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    bare = _Bare()

    def incr() -> None:
        bare.n += 1

    rows.append(("bare attribute += 1 (in a function)", _ns_per_call(incr)))
    rows.append(("time.monotonic()", _ns_per_call(time.monotonic)))
    untimed = qhealth.Probe("bench", timed=False)
    timed = qhealth.Probe("bench", timed=True)
    rows.append(("Probe.enqueued()", _ns_per_call(untimed.enqueued)))
    rows.append(("Probe.started() untimed", _ns_per_call(untimed.started)))
    rows.append(("Probe.succeeded() untimed", _ns_per_call(untimed.succeeded)))
    rows.append(("Probe.started() timed (reads the clock)", _ns_per_call(timed.started)))
    rows.append(("Probe.attempted()", _ns_per_call(untimed.attempted)))

    from prometheus_client import CollectorRegistry, Counter

    counter = Counter("bench_items", "bench", registry=CollectorRegistry())
    rows.append(("prometheus_client Counter.inc()", _ns_per_call(counter.inc)))
    labelled = Counter("bench_labelled", "bench", ["queue"], registry=CollectorRegistry())
    child = labelled.labels(queue="q")
    rows.append(("prometheus_client child.inc() (pre-bound labels)", _ns_per_call(child.inc)))

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    otel_counter = provider.get_meter("bench").create_counter("bench.items")
    attrs = {"queue": "q"}
    rows.append(
        (
            "OpenTelemetry counter.add(1, attrs)",
            _ns_per_call(lambda: otel_counter.add(1, attrs), number=20_000),
        )
    )
    provider.shutdown()
    return rows


async def _pool(queue: asyncio.Queue[Any], items: int, workers: int = 10) -> float:
    async def worker() -> None:
        while True:
            item = await queue.get()
            queue.task_done()
            if item is None:
                return

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    start = time.perf_counter()
    put = queue.put
    for i in range(items):
        await put(i)
    for _ in tasks:
        await put(None)
    await queue.join()
    await asyncio.gather(*tasks)
    return items / (time.perf_counter() - start)


def pool_table(items: int, rounds: int) -> dict[str, float]:
    monitor = qhealth.Monitor()  # not started: the ticker would only add noise here
    counter = iter(range(10**9))

    def bare() -> asyncio.Queue[Any]:
        return asyncio.Queue(100)

    def made_instrumented() -> asyncio.Queue[Any]:
        return instrumented_queue(f"q{next(counter)}", 100, monitor=monitor, workers=10)

    def instrumented_in_place() -> asyncio.Queue[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue(100)
        instrument(queue, f"q{next(counter)}", monitor=monitor, workers=10)
        return queue

    variants: dict[str, Callable[[], asyncio.Queue[Any]]] = {
        "bare asyncio.Queue": bare,
        "instrumented_queue(...)": made_instrumented,
        "instrument(existing queue)": instrumented_in_place,
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):  # alternate, so drift in machine load hits all alike
        for name, make in variants.items():
            results[name].append(asyncio.run(_pool(make(), items)))
    return {name: statistics.median(values) for name, values in results.items()}


def _one_pool_run(variant: str, items: int) -> None:
    """A single pool run (the callgrind child process)."""
    monitor = qhealth.Monitor()
    queue: asyncio.Queue[Any] = (
        asyncio.Queue(100) if variant == "bare" else instrumented_queue("q", 100, monitor=monitor, workers=10)
    )
    asyncio.run(_pool(queue, items))


def callgrind_table() -> dict[str, float]:
    per_item = {}
    for variant in ("bare", "instrumented"):
        small, large = instructions(__file__, variant, "5000"), instructions(__file__, variant, "25000")
        per_item[variant] = (large - small) / 20_000
    return per_item


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _one_pool_run(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--callgrind",
        action=argparse.BooleanOptionalAction,
        default=shutil.which("valgrind") is not None,
        help="count instructions per item (default: when valgrind is installed)",
    )
    args = parser.parse_args()
    if args.callgrind and shutil.which("valgrind") is None:
        parser.error("--callgrind needs valgrind (apt-get install valgrind)")

    print("Per call (best of 5 runs):")
    print(f"  {'operation':<52} {'ns/call':>8}")
    for name, ns in per_call_table():
        print(f"  {name:<52} {ns:>8.0f}")

    print(
        f"\nNo-op pool, 1 producer, 10 workers, maxsize 100, {args.items:,} items, "
        f"median of {args.rounds} alternated runs:"
    )
    medians = pool_table(args.items, args.rounds)
    bare = medians["bare asyncio.Queue"]
    print(f"  {'variant':<32} {'items/s':>10} {'ns/item':>8} {'vs bare':>8}")
    for name, rate in medians.items():
        print(f"  {name:<32} {rate:>10,.0f} {1e9 / rate:>8.0f} {rate / bare:>8.2f}")
    if args.callgrind:
        counts = callgrind_table()
        print("\nInstructions per item (callgrind, same pool, 25,000 - 5,000 items):")
        for name, count in counts.items():
            print(f"  {name:<32} {count:>10,.0f} {counts['bare'] / count:>8.2f}")
        print(f"instruction ratio: {counts['bare'] / counts['instrumented']:.2f}")
    else:
        print("instruction ratio: not measured (valgrind is not installed: apt-get install valgrind)")
    print(f"instrumented/bare throughput ratio: {medians['instrumented_queue(...)'] / bare:.2f}")


if __name__ == "__main__":
    main()
