"""Adaptive polling with full jitter, for sources that can only be polled.

An HTTP API or an SQL table cannot wake a worker when work arrives, so a
worker has to ask. Asking on a fixed interval is the boom-bust pattern:
every worker in step, the queue full between polls and the workers idle at
once. :class:`AdaptivePoller` asks less the longer the source stays empty and
keeps its workers out of step:

* after an empty poll the *ceiling* grows by ``backoff`` (from
  ``min_interval`` up to ``max_interval``), and the sleep is drawn uniformly
  from ``[0, ceiling]`` (full jitter): ``max_interval`` is a real ceiling,
  and the sleeps never collapse onto one value;
* a poll that finds work resets the ceiling and polls again at once, and
  wakes the other pollers of its :class:`PollGroup` (each after its own small
  random delay), so a batch arriving after a long idle spell is picked up by
  every worker within about ``min_interval``, not one worker at a time;
* the very first poll is also jittered, so that workers started together do
  not poll together;
* a failing ``fetch`` counts as an empty poll (logged, throttled) and a
  failing ``handle`` loses nothing: the remaining items of the batch are
  still handled, and the failed one goes to ``on_error``.

Hand the items to a :class:`~src_pool.pool.Pool` (``handle=pool.submit``) to
get retries, dead letters and backpressure for them: a full pool then slows
the poller down instead of dropping anything.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from qhealth import Probe

from .throttled_log import ThrottledLog

logger = logging.getLogger("src_pool.poller")

T = TypeVar("T")


class PollGroup:
    """Pollers of one source in one process: a hit wakes the others."""

    def __init__(self) -> None:
        self._sleepers: set[asyncio.Future[bool]] = set()

    def wake_all(self) -> int:
        """Wake every sleeping poller; returns how many woke."""
        woken = 0
        for sleeper in list(self._sleepers):
            if not sleeper.done():
                sleeper.set_result(True)
                woken += 1
        return woken

    def _add(self, sleeper: asyncio.Future[bool]) -> None:
        self._sleepers.add(sleeper)

    def _discard(self, sleeper: asyncio.Future[bool]) -> None:
        self._sleepers.discard(sleeper)


class AdaptivePoller(Generic[T]):
    """One polling worker: ``fetch()`` returns a batch (empty: nothing to do),
    ``handle(item)`` processes one item.

    ``rng`` and ``sleep`` are injectable (tests run on a fake clock).
    ``probe``: a qhealth probe to report polls and idle time to.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Sequence[T]]],
        handle: Callable[[T], Awaitable[object]],
        *,
        min_interval: float = 0.5,
        max_interval: float = 30.0,
        backoff: float = 2.0,
        group: PollGroup | None = None,
        on_error: Callable[[T, BaseException], object] | None = None,
        probe: Probe | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[object]] | None = None,
    ) -> None:
        for name, value in (("min_interval", min_interval), ("max_interval", max_interval)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ValueError(
                    f"{name} must be a positive number of seconds, got {value!r} "
                    "(0 would poll in a busy loop)"
                )
        if min_interval > max_interval:
            raise ValueError(f"min_interval ({min_interval}) must not exceed max_interval ({max_interval})")
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or not 1 < backoff < math.inf:
            raise ValueError(f"backoff must be a factor above 1 (1 would never back off), got {backoff!r}")
        self.fetch = fetch
        self.handle = handle
        self.min_interval = float(min_interval)
        self.max_interval = float(max_interval)
        self.backoff = float(backoff)
        self.group = group
        self.on_error = on_error
        self.probe = probe
        self.rng = rng or random.Random()
        self._sleep = sleep
        self.ceiling = self.min_interval
        """The current upper bound of a sleep."""
        self.polls = 0
        self.hits = 0
        self.handled = 0
        self.errors = 0
        self._log = ThrottledLog(60.0, log=logger)

    def next_sleep(self) -> float:
        """A full-jitter sleep under the current ceiling."""
        return self.rng.uniform(0.0, self.ceiling)

    async def run(self) -> None:
        """Poll until cancelled."""
        if self.probe is not None:
            self.probe.worker_started()
        try:
            await self._nap(self.rng.uniform(0.0, self.min_interval))  # spread the first polls too
            while True:
                batch = await self._poll()
                if batch:
                    self.ceiling = self.min_interval
                    if self.group is not None:
                        self.group.wake_all()
                    await self._handle_all(batch)
                    continue  # work found: ask again at once
                await self._nap(self.next_sleep())
                self.ceiling = min(self.max_interval, self.ceiling * self.backoff)
        finally:
            if self.probe is not None:
                self.probe.worker_stopped()

    async def _poll(self) -> Sequence[T]:
        self.polls += 1
        try:
            batch = await self.fetch()
        except Exception:
            self._log.exception("fetch", "poller: fetch failed; treated as an empty poll, backing off")
            batch = ()
        if self.probe is not None:
            self.probe.polled(bool(batch))
        if batch:
            self.hits += 1
        return batch

    async def _handle_all(self, batch: Sequence[T]) -> None:
        probe = self.probe
        for item in batch:
            if probe is not None:
                probe.started()
            try:
                await self.handle(item)
            except Exception as exc:
                self.errors += 1
                if probe is not None:
                    probe.failed()
                self._report(item, exc)
            else:
                self.handled += 1
                if probe is not None:
                    probe.succeeded()

    def _report(self, item: T, exc: Exception) -> None:
        if self.on_error is None:
            logger.error("poller: handling an item failed: %s: %s", type(exc).__name__, exc)
            return
        try:
            self.on_error(item, exc)
        except Exception:
            logger.exception("poller: on_error failed")

    async def _nap(self, seconds: float) -> None:
        """Sleep ``seconds`` (idle), or less if another poller of the group
        found work: then poll after a small random delay of our own."""
        probe = self.probe
        if probe is not None:
            probe.idle_begin()
        try:
            if self._sleep is not None:  # an injected clock: no group wake-ups
                await self._sleep(seconds)
                return
            loop = asyncio.get_running_loop()
            waker: asyncio.Future[bool] = loop.create_future()
            timer = loop.call_later(seconds, _resolve, waker, False)
            if self.group is not None:
                self.group._add(waker)
            try:
                woken_by_hit = await waker
            finally:
                timer.cancel()
                if self.group is not None:
                    self.group._discard(waker)
            if woken_by_hit:
                # A sibling found work: reset, and poll after a delay of our own
                # so that the woken pollers do not hit the source in step.
                self.ceiling = self.min_interval
                await asyncio.sleep(self.rng.uniform(0.0, self.min_interval))
        finally:
            if probe is not None:
                probe.idle_end()


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)
