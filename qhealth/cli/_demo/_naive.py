"""The naive pool: the symptom, faithfully reproduced.

This is the pool from the write-up that started qhealth ("workers sit idle,
then spike when refilled"): N workers that each sleep a fixed interval, then
drain the queue, then sleep again. They all start together and sleep the same
interval, so they wake in step; they share no rate limit; and a call answered
429 is retried at once. Nothing here is a strawman: it is the code people
write first, and it works in a unit test.

Two things are added, neither of which changes its behaviour:

* qhealth instruments it, the way a user would with a timed probe: every
  worker is registered, every poll, call, 429 and item is counted, and idle
  time is integrated from the busy/idle transitions;
* immediate retries are bounded (after ``immediate_retries`` refusals the
  item is pushed back on the queue, as the textbook code does with failed
  items), and a worker stopped mid-item puts the item back: the demo must
  lose nothing, so that the comparison is about health, not about bugs that
  lose data.
"""

from __future__ import annotations

import asyncio
from collections import deque

from qhealth import Monitor, Probe
from qhealth.ratelimit import is_rate_limited

from ._api import SimulatedAPI


class NaivePool:
    """``workers`` pollers sleeping ``poll_interval_s`` between drains of an unbounded queue."""

    def __init__(
        self,
        api: SimulatedAPI,
        *,
        name: str = "naive",
        monitor: Monitor | None = None,
        workers: int = 10,
        poll_interval_s: float = 3.0,
        immediate_retries: int = 5,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if poll_interval_s <= 0:
            raise ValueError(f"poll interval must be positive, got {poll_interval_s}")
        self.api = api
        self.queue: deque[int] = deque()
        # Instrumented as a user would: a timed probe, the depth read from the
        # queue (len() of a deque is safe to read from the monitor's thread).
        self.probe = monitor.watch(name, depth=self.depth, timed=True) if monitor is not None else Probe(name)
        self.workers = workers
        self.poll_interval_s = poll_interval_s
        self.immediate_retries = immediate_retries
        self.in_hand: set[int] = set()
        """Items a worker holds right now."""
        self.pushed_back = 0
        """Items put back on the queue after ``immediate_retries`` 429s in a row."""
        self._tasks: list[asyncio.Task[None]] = []

    def depth(self) -> int:
        return len(self.queue)

    def submit(self, item: int) -> None:
        self.queue.append(item)
        self.probe.enqueued()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._work(), name=f"naive-{i}") for i in range(self.workers)]

    async def stop(self) -> None:
        """Cancel the workers; items they held go back to the head of the queue."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def remaining(self) -> list[int]:
        """Items not served: waiting, or (before :meth:`stop`) held by a worker."""
        return [*self.queue, *self.in_hand]

    async def _work(self) -> None:
        probe = self.probe
        probe.worker_started()
        try:
            while True:
                await asyncio.sleep(self.poll_interval_s)  # the fixed interval: every worker in step
                while self.queue:
                    probe.polled(True)
                    item = self.queue.popleft()
                    await self._process(item)
                probe.polled(False)
        finally:
            probe.worker_stopped()

    async def _process(self, item: int) -> None:
        probe = self.probe
        self.in_hand.add(item)
        probe.started()
        try:
            for _ in range(self.immediate_retries + 1):
                probe.attempted()
                try:
                    await self.api.call(item)
                except Exception as exc:
                    if not is_rate_limited(exc):
                        raise
                    probe.rate_limited()
                    continue  # the bug: retry at once, with every other worker doing the same
                probe.succeeded()
                return
            self.pushed_back += 1
            self.queue.append(item)
            probe.returned()
        except BaseException:
            self.queue.appendleft(item)
            probe.returned()
            raise
        finally:
            self.in_hand.discard(item)
