"""What an idle pool costs: wake-ups and CPU seconds while there is no work.

Ten workers and an empty queue, in four pools, each in its own process, all
measured over the same ``--seconds`` (default 30) after one second to settle:

* the reference pool (src_pool), qhealth off;
* the reference pool with qhealth on (a monitor ticking every second in its
  own thread: the event loop stays asleep, the ticker thread does not);
* the textbook's shutdown-flag loop: ``await asyncio.wait_for(q.get(), timeout=1.0)``;
* a fixed-interval poller: ``await asyncio.sleep(5)``, then drain the queue.

Wake-ups are counted by instrumenting the event loop (all per minute): *task
wake-ups* are resumptions of a task (a worker waking up, or a helper task
``wait_for`` made), *callbacks* every callback the loop ran, *loop wake-ups*
the iterations of ``_run_once`` (timers that fire together share one). The
measuring itself is subtracted. Thread switches come from
``/proc/self/task/*/status`` (voluntary context switches of every thread of
the process, so the monitor's ticker counts there).

A second table measures how ten pollers of a poll-only source spread out
(``src_pool.AdaptivePoller``, full jitter, 1 s backing off to 8 s, 60 polls
each, on virtual clocks with fixed seeds) against the same backoff without
jitter: the share of consecutive polls less than 10 ms apart (collisions) and
the coefficient of variation of the gaps between polls (about 1 when spread
out at random; about sqrt(10) when the ten poll in step).

    python3 bench/idle.py [--seconds 30]

The last line is ``idle wake-ups per minute: reference X, wait_for Y, fixed-poll Z``
(task wake-ups of the event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.events
import itertools
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

WORKERS = 10
SETTLE_S = 1.0


def voluntary_switches() -> int:
    total = 0
    for status in Path("/proc/self/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
        except OSError:  # a thread that just ended
            continue
    return total


class Counters:
    """Counts loop iterations, callbacks run and task resumptions while :attr:`on`."""

    def __init__(self) -> None:
        self.iterations = 0
        self.callbacks = 0
        self.resumptions = 0
        self.on = False

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        run_once = loop._run_once  # type: ignore[attr-defined]
        counters = self

        def counting_run_once() -> None:
            if counters.on:
                counters.iterations += 1
            run_once()

        loop._run_once = counting_run_once  # type: ignore[attr-defined]
        handle_run = asyncio.events.Handle._run

        def counting_run(handle: asyncio.events.Handle) -> None:
            if counters.on:
                counters.callbacks += 1
                if isinstance(getattr(handle._callback, "__self__", None), asyncio.Task):  # type: ignore[attr-defined]
                    counters.resumptions += 1
            handle_run(handle)

        asyncio.events.Handle._run = counting_run  # type: ignore[method-assign]


async def noop(item: object) -> None:
    pass


async def reference(monitor_on: bool) -> Callable[[], Awaitable[None]]:
    from qhealth import Monitor
    from src_pool import Pool

    monitor = Monitor().start() if monitor_on else None
    pool = await Pool(noop, name="idle", concurrency=WORKERS, monitor=monitor or False).start()

    async def stop() -> None:
        await pool.stop()
        if monitor is not None:
            monitor.stop()

    return stop


async def wait_for_loop() -> Callable[[], Awaitable[None]]:
    queue: asyncio.Queue[object] = asyncio.Queue()
    running = True

    async def worker() -> None:
        while running:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=1.0)
            except TimeoutError:
                continue
            await noop(item)
            queue.task_done()

    tasks = [asyncio.create_task(worker()) for _ in range(WORKERS)]

    async def stop() -> None:
        nonlocal running
        running = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return stop


async def fixed_poll() -> Callable[[], Awaitable[None]]:
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def worker() -> None:
        while True:
            await asyncio.sleep(5.0)
            while not queue.empty():
                await noop(queue.get_nowait())

    tasks = [asyncio.create_task(worker()) for _ in range(WORKERS)]

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return stop


VARIANTS: dict[str, tuple[str, Callable[[], Awaitable[Callable[[], Awaitable[None]]]]]] = {
    "reference": ("reference pool (src_pool), qhealth off", lambda: reference(False)),
    "reference+qhealth": ("reference pool, qhealth monitor on", lambda: reference(True)),
    "wait_for": ("wait_for(get(), timeout=1) loop", wait_for_loop),
    "fixed-poll": ("fixed 5 s poller", fixed_poll),
}


async def measure(variant: str, seconds: float) -> dict[str, Any]:
    counters = Counters()
    counters.install(asyncio.get_running_loop())
    stop = await VARIANTS[variant][1]()
    await asyncio.sleep(SETTLE_S)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def end() -> None:  # counted itself: one callback in one loop iteration, subtracted below
        counters.on = False
        done.set_result(None)

    switches, cpu, wall = voluntary_switches(), time.process_time(), time.monotonic()
    counters.on = True
    loop.call_later(seconds, end)
    await done
    wall = time.monotonic() - wall
    cpu = time.process_time() - cpu
    switches = voluntary_switches() - switches
    await stop()
    per_min = 60.0 / wall
    return {
        "variant": variant,
        "task_wakeups_per_min": counters.resumptions * per_min,
        "callbacks_per_min": (counters.callbacks - 1) * per_min,
        "loop_wakeups_per_min": (counters.iterations - 1) * per_min,
        "thread_switches_per_min": switches * per_min,
        "cpu_s": cpu,
        "seconds": wall,
    }


def spread(times: list[float]) -> tuple[float, float]:
    """(share of gaps under 10 ms, coefficient of variation of the gaps)."""
    times = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    mean = statistics.fmean(gaps)
    return sum(1 for g in gaps if g < 0.01) / len(gaps), statistics.pstdev(gaps) / mean


async def jittered_poll_times(pollers: int, polls: int) -> list[float]:
    from src_pool import AdaptivePoller

    class Done(BaseException):
        pass

    times: list[float] = []
    for seed in range(pollers):
        now = [0.0]
        mine: list[float] = []

        async def fetch(now: list[float] = now, mine: list[float] = mine) -> list[object]:
            mine.append(now[0])
            if len(mine) >= polls:
                raise Done
            return []

        async def sleep(seconds: float, now: list[float] = now) -> None:
            now[0] += seconds

        poller = AdaptivePoller(
            fetch, noop, min_interval=1.0, max_interval=8.0, rng=random.Random(seed), sleep=sleep
        )
        try:
            await poller.run()
        except Done:
            times += mine
    return times


def fixed_poll_times(pollers: int, polls: int) -> list[float]:
    times = []
    for _ in range(pollers):
        t, interval = 0.0, 1.0
        for _ in range(polls):
            times.append(t)
            t += interval
            interval = min(8.0, interval * 2)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(asyncio.run(measure(args.variant, args.seconds))))
        return
    children = {
        name: subprocess.Popen(
            [sys.executable, __file__, "--variant", name, "--seconds", str(args.seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in VARIANTS
    }
    results = {}
    for name, child in children.items():
        out, _ = child.communicate(timeout=args.seconds + 60)
        if child.returncode != 0:
            raise SystemExit(f"bench/idle.py: variant {name} failed (exit {child.returncode})")
        results[name] = json.loads(out.strip().splitlines()[-1])
    print(f"{WORKERS} idle workers per pool, {args.seconds:g} s each (all four at once, one process each)")
    print()
    print(
        f"{'pool':40} {'task wake-ups':>13} {'callbacks':>10} {'loop wake-ups':>13} "
        f"{'thread switches':>15} {'CPU s':>7}"
    )
    print(f"{'':40} {'(per minute)':>13}")
    for name, (label, _) in VARIANTS.items():
        r = results[name]
        print(
            f"{label:40} {r['task_wakeups_per_min']:13,.0f} {r['callbacks_per_min']:10,.0f} "
            f"{r['loop_wakeups_per_min']:13,.0f} {r['thread_switches_per_min']:15,.0f} {r['cpu_s']:7.3f}"
        )
    print()
    print("10 pollers of one empty source, 1 s backing off to 8 s, 60 polls each")
    print()
    print(f"{'pollers':40} {'polls < 10 ms apart':>20} {'gap CV':>7}")
    for label, times in (
        ("AdaptivePoller (full jitter)", asyncio.run(jittered_poll_times(10, 60))),
        ("same backoff, no jitter", fixed_poll_times(10, 60)),
    ):
        collisions, cv = spread(times)
        print(f"{label:40} {collisions:20.1%} {cv:7.2f}")
    print()
    ref, wait, poll = (results[n]["task_wakeups_per_min"] for n in ("reference", "wait_for", "fixed-poll"))
    print(f"idle wake-ups per minute: reference {ref:.0f}, wait_for {wait:.0f}, fixed-poll {poll:.0f}")


if __name__ == "__main__":
    main()
