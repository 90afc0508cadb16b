"""Running the two pools side by side, and accounting for every item.

:func:`run_pools` builds both pools on one event loop, each with its own copy
of the simulated API (same limit, same latency, same seed: one pool's 429
storm never spills onto the other) and its own copy of the workload (same
seed: the same items at the same instants). Both are watched by one monitor.
It feeds them until the duration ends or ``stop`` is set, stops them without
losing an item, and returns what became of every item, by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from qhealth import Monitor

from ._api import SimulatedAPI
from ._naive import NaivePool
from ._scenarios import Scenario

NAIVE = "naive"
REFERENCE = "reference"
QUEUES = (NAIVE, REFERENCE)

#: The reference pool's queue bound: producers wait beyond it (backpressure).
REFERENCE_CAPACITY = 1000
#: Seconds the pools get to finish the items they hold when the demo stops.
DRAIN_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Settings:
    """One demo run."""

    scenario: Scenario
    duration_s: float = 60.0
    workers: int = 10
    rate_limit: float | None = None
    """Calls/s the API allows; None: the scenario's."""
    seed: int = 7

    @property
    def limit(self) -> float:
        return self.scenario.rate_limit if self.rate_limit is None else self.rate_limit

    def api(self, clock: Callable[[], float] = time.monotonic) -> SimulatedAPI:
        """A fresh copy of the downstream API (each pool gets its own)."""
        return SimulatedAPI(
            self.limit, latency_s=self.scenario.latency_s, rng=random.Random(self.seed), clock=clock
        )


@dataclass(frozen=True, slots=True)
class Account:
    """What became of the items given to one pool. ``lost`` must be 0."""

    submitted: int
    served: int
    dead_lettered: int
    remaining: int
    """Still queued (or handed back unfinished) when the demo stopped."""
    lost: int
    """Submitted, and neither served, dead-lettered nor remaining."""
    served_twice: int
    calls: int
    refused: int
    """Calls the API answered 429."""


def _account(submitted: int, api: SimulatedAPI, dead: list[int], remaining: list[int]) -> Account:
    accounted = api.served | set(dead) | set(remaining)
    lost = sum(1 for item in range(submitted) if item not in accounted)
    return Account(
        submitted=submitted,
        served=len(api.served),
        dead_lettered=len(dead),
        remaining=len(remaining),
        lost=lost,
        served_twice=api.served_twice,
        calls=api.calls,
        refused=api.refused,
    )


async def _feed(arrivals: Iterator[float], submit: Callable[[int], Awaitable[object] | None]) -> None:
    """Submit item 0, 1, 2, ... at its arrival time, until cancelled."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for item, at in enumerate(arrivals):
        delay = start + at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        pending = submit(item)
        if pending is not None:
            await pending


class _Counter:
    """Counts the items a submit function accepted (a feeder may be cancelled mid-way)."""

    def __init__(self, submit: Callable[[int], Awaitable[object] | None]) -> None:
        self._submit = submit
        self.count = 0

    def __call__(self, item: int) -> Awaitable[object] | None:
        result = self._submit(item)
        if result is None:
            self.count += 1
            return None
        return self._counted(result)

    async def _counted(self, pending: Awaitable[object]) -> None:
        await pending
        self.count += 1


async def run_pools(settings: Settings, monitor: Monitor, stop: asyncio.Event) -> dict[str, Account]:
    """Run both pools until ``settings.duration_s`` passed or ``stop`` is set.

    The monitor ticks on this loop, from here (its last tick is before the
    pools begin to shut down, so traces end on the pools at work). Every clock
    is the loop's: on :class:`~._clock.SimulatedLoop` a seed gives one run.
    """
    from src_pool import AIMD, Pool, TokenBucket

    scenario = settings.scenario
    clock = asyncio.get_running_loop().time
    naive_api, reference_api = settings.api(clock), settings.api(clock)
    naive = NaivePool(
        naive_api,
        name=NAIVE,
        monitor=monitor,
        workers=settings.workers,
        poll_interval_s=scenario.poll_interval_s,
    )
    reference = Pool(
        reference_api.call,
        name=REFERENCE,
        concurrency=settings.workers,
        capacity=REFERENCE_CAPACITY,
        # The API's documented limit, shared by every worker.
        limiter=TokenBucket(settings.limit, clock=clock),
        adaptive=AIMD(settings.workers, clock=clock),
        monitor=monitor,
        drain_timeout=DRAIN_TIMEOUT_S,
        rng=random.Random(settings.seed),
    )
    naive_in, reference_in = _Counter(naive.submit), _Counter(reference.submit)
    ticker = asyncio.create_task(monitor.run(), name="qhealth-monitor")
    naive.start()
    await reference.start()
    feeders = [
        asyncio.create_task(_feed(scenario.workload.arrivals(settings.seed), naive_in)),
        asyncio.create_task(_feed(scenario.workload.arrivals(settings.seed), reference_in)),
    ]
    try:
        async with asyncio.timeout(settings.duration_s):
            await stop.wait()
    except TimeoutError:
        pass
    finally:
        for feeder in feeders:
            feeder.cancel()
        await asyncio.gather(*feeders, return_exceptions=True)
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await naive.stop()
        await reference.stop()
    broker = reference.broker
    dead = [d.envelope.payload for d in broker.dead_letters()]  # type: ignore[attr-defined]
    left = [e.payload for e in broker.remaining()]  # type: ignore[attr-defined]
    return {
        NAIVE: _account(naive_in.count, naive_api, [], naive.remaining()),
        REFERENCE: _account(reference_in.count, reference_api, dead, left),
    }
