"""What the shared concurrency cap (src_pool.redis_semaphore) costs, on a throwaway redis-server.

Three measurements:

* a free slot: one task doing ``async with sem:`` in a loop (acquire and
  release: two round trips), time per pair;
* a hand-off: one semaphore holds the only slot, another waits for it (blocked
  in BLPOP); the time from ``release()`` to the waiter holding the slot;
* for scale, a PING back to back and after ``--call-ms`` of idling;
* a saturated cap: ``--processes`` processes with ``--workers`` workers each
  make calls of ``--call-ms`` behind one cap of ``--limit`` for ``--seconds``;
  the share of the cap's slot-time (``limit * elapsed``) that callers spent
  inside a slot. What is lost is the hand-offs: between one caller leaving a
  slot and the next entering it (a release, a wake-up, an acquire). The
  calls themselves are ``asyncio.sleep`` and overshoot by about a
  millisecond: that counts as used, not lost.

    python3 bench/redis_semaphore.py [--limit 3] [--call-ms 20] [--seconds 5]

The last line is ``redis semaphore: free slot X us per acquire+release,
hand-off Y ms (median), cap used Z``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _redis_server import start_redis

from src_pool.redis_semaphore import RedisSemaphore

ROOT = Path(__file__).resolve().parent.parent


async def free_slot(url: str, pairs: int) -> list[float]:
    sem = RedisSemaphore(url, f"bench-free-{time.time_ns()}", 1)
    times = []
    try:
        for _ in range(pairs):
            started = time.perf_counter()
            async with sem:
                pass
            times.append(time.perf_counter() - started)
    finally:
        await sem.aclose()
    return times[10:]  # the first ones open connections and load the scripts


async def hand_offs(url: str, rounds: int) -> list[float]:
    name = f"bench-hand-off-{time.time_ns()}"
    holder, waiter = RedisSemaphore(url, name, 1), RedisSemaphore(url, name, 1)
    times = []
    try:
        for _ in range(rounds):
            held = await holder.acquire()
            waiting = asyncio.create_task(waiter.acquire())
            await asyncio.sleep(0.005)  # the waiter is in line, blocked in BLPOP
            started = time.perf_counter()
            await holder.release(held)
            slot = await waiting
            times.append(time.perf_counter() - started)
            await waiter.release(slot)
    finally:
        await holder.aclose()
        await waiter.aclose()
    return times[5:]


async def idle_round_trips(url: str, idle_s: float, rounds: int) -> list[float]:
    """PING after ``idle_s`` of idling: for scale. A machine whose processes
    idle (a call in progress) wakes up slower than one in a tight loop, and a
    hand-off in a saturated cap always follows an idle wait."""
    from src_pool.redis_connect import connect

    client = connect(url, blocking=False, socket_timeout=5.0, options={})
    times = []
    try:
        await client.ping()
        for _ in range(rounds):
            await asyncio.sleep(idle_s)
            started = time.perf_counter()
            await client.ping()
            times.append(time.perf_counter() - started)
    finally:
        await client.aclose()
    return times


async def child(url: str, name: str, limit: int, workers: int, call_s: float, start_at: float) -> None:
    """Workers calling from ``start_at`` (wall clock, shared by the processes)
    until ``seconds`` later; prints the calls made and when the last ended."""
    sem = RedisSemaphore(url, name, limit)
    await sem.acquire()  # connections open and scripts loaded before the clock starts
    await sem.release()
    seconds = float(sys.argv[sys.argv.index("--seconds") + 1])
    calls, last_end, inside = 0, start_at, 0.0
    await asyncio.sleep(max(0.0, start_at - time.time()))

    async def worker() -> None:
        nonlocal calls, last_end, inside
        while time.time() < start_at + seconds:
            async with sem:
                entered = time.perf_counter()
                await asyncio.sleep(call_s)  # the call
                inside += time.perf_counter() - entered
                calls += 1
                last_end = max(last_end, time.time())

    await asyncio.gather(*(worker() for _ in range(workers)))
    await sem.aclose()
    print(calls, last_end, inside, flush=True)


def saturated(
    url: str, limit: int, processes: int, workers: int, call_s: float, seconds: float
) -> tuple[int, float, float]:
    """Calls made by every process, the span from the common start to the
    last call's end, and the time spent inside the slot by all callers."""
    name = f"bench-cap-{time.time_ns()}"
    start_at = time.time() + 2.0  # time for the processes to start
    config = json.dumps([url, name, limit, workers, call_s, start_at])
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", config, "--seconds", str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(processes)
    ]
    results = [p.communicate(timeout=seconds + 60)[0].split() for p in procs]
    if any(p.returncode for p in procs):
        sys.exit("a bench process failed")
    calls = sum(int(r[0]) for r in results)
    span = max(float(r[1]) for r in results) - start_at
    return calls, span, sum(float(r[2]) for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--call-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, name, limit, workers, call_s, start_at = json.loads(args.child)
        asyncio.run(child(url, name, limit, workers, call_s, start_at))
        return
    call_s = args.call_ms / 1000
    with tempfile.TemporaryDirectory(prefix="bench-redis-semaphore-") as tmp:
        server, port = start_redis(tmp)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            free = asyncio.run(free_slot(url, 2000))
            hand = asyncio.run(hand_offs(url, 200))
            ping = asyncio.run(idle_round_trips(url, 0.0, 200))
            idle_ping = asyncio.run(idle_round_trips(url, call_s, 100))
            calls, span, inside = saturated(
                url, args.limit, args.processes, args.workers, call_s, args.seconds
            )
        finally:
            server.terminate()
            server.wait(10)
    used = inside / (args.limit * span)
    ms = 1000.0

    def q(values: list[float], p: float) -> float:
        return statistics.quantiles(values, n=100)[p - 1] if p < 100 else max(values)

    print(f"{'measure':52} {'median':>9} {'p90':>9} {'p99':>9}")
    print(
        f"{'free slot: acquire + release (ms)':52} {statistics.median(free) * ms:9.3f} "
        f"{q(free, 90) * ms:9.3f} {q(free, 99) * ms:9.3f}"
    )
    print(
        f"{'hand-off: release() to the waiter holding it (ms)':52} {statistics.median(hand) * ms:9.3f} "
        f"{q(hand, 90) * ms:9.3f} {q(hand, 99) * ms:9.3f}"
    )
    for label, times in (
        ("PING, back to back (ms)", ping),
        (f"PING after {args.call_ms:g} ms idle (ms)", idle_ping),
    ):
        print(
            f"{'for scale: ' + label:52} {statistics.median(times) * ms:9.3f} "
            f"{q(times, 90) * ms:9.3f} {q(times, 99) * ms:9.3f}"
        )
    print()
    print(
        f"cap of {args.limit}, {args.processes} processes x {args.workers} workers, "
        f"{args.call_ms:g} ms calls, {span:.2f} s: {calls} calls "
        f"(at most {args.limit * span / call_s:.0f}), slots held by a caller {used:.2f} of the time"
    )
    print(
        f"redis semaphore: free slot {statistics.median(free) * 1e6:.0f} us per acquire+release, "
        f"hand-off {statistics.median(hand) * ms:.2f} ms (median), cap used {used:.2f}"
    )


if __name__ == "__main__":
    main()
