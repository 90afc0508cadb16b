"""Backpressure: high and low watermarks in front of a queue.

A producer may put while the queue holds fewer than ``high`` items. At
``high`` the gate closes, and it reopens only once consumers have brought the
depth down to ``low``. The band between the two is what keeps a producer from
waking for every single free slot (the hysteresis that makes a full queue
cheap), and it is event driven: a producer blocked on a full queue wakes the
moment the depth reaches ``low``, never on a timer (the textbook's refill on
fixed 1 s / 5 s sleeps emptied the queue 92% of the time).

:class:`Watermarks` holds no event loop: waiting producers get a future on
whatever loop they run in, so one gate serves successive loops (tests,
``asyncio.run`` called twice).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from .broker import BrokerClosed, QueueFull, check_timeout


class Watermarks:
    """The gate. The broker calls :meth:`has_room` before it adds an item,
    :meth:`wait_for_room` when there is none, and :meth:`notify` after it
    removed items (a cheap attribute test while the gate is open)."""

    __slots__ = ("_closed", "_waiters", "blocked", "high", "low")

    def __init__(self, high: int, low: int | None = None) -> None:
        if isinstance(high, bool) or not isinstance(high, int) or high < 1:
            raise ValueError(f"high watermark must be a positive integer, got {high!r}")
        if low is None:
            low = high // 2
        if isinstance(low, bool) or not isinstance(low, int) or low < 0:
            raise ValueError(f"low watermark must be a non-negative integer, got {low!r}")
        if low >= high:
            raise ValueError(
                f"low watermark ({low}) must be below the high watermark ({high}): "
                "producers resume when the depth falls to the low one"
            )
        self.high = high
        self.low = low
        self.blocked = False
        """True from the moment the depth reached ``high`` until it fell to ``low``."""
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def has_room(self, depth: int) -> bool:
        """Whether a producer may add an item now; closes the gate at ``high``."""
        if self.blocked:
            return False
        if depth >= self.high:
            self.blocked = True
            return False
        return True

    async def wait_for_room(self, depth: Callable[[], int], timeout: float | None = None) -> None:
        """Return once a producer may add an item; :class:`QueueFull` after
        ``timeout`` seconds (0: at once), :class:`BrokerClosed` on :meth:`close`."""
        timeout = check_timeout(timeout)
        if self._closed:
            raise BrokerClosed("the queue is closed")
        if self.has_room(depth()):
            return
        if timeout == 0:
            raise QueueFull(f"queue full: depth {depth()} reached the high watermark {self.high}")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                while not self.has_room(depth()):
                    if self._closed:
                        raise BrokerClosed("the queue was closed while a producer waited for room")
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._waiters.append(waiter)
                    try:
                        await waiter
                    finally:
                        if not waiter.done():
                            self._waiters.remove(waiter)
        except TimeoutError:
            raise QueueFull(
                f"queue full: still at or above the low watermark {self.low} after {timeout:g} s "
                f"(high watermark {self.high}, depth {depth()})"
            ) from None

    def notify(self, depth: int) -> None:
        """Items were removed: reopen the gate at ``low`` and wake every
        waiting producer (each re-checks; none is woken for nothing while the
        gate stays shut)."""
        if self.blocked and depth <= self.low:
            self.blocked = False
            waiters, self._waiters = self._waiters, deque()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def close(self) -> None:
        """Wake every waiting producer with :class:`BrokerClosed`."""
        self._closed = True
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(BrokerClosed("the queue was closed while a producer waited for room"))

    @property
    def waiting(self) -> int:
        """Producers waiting for room right now."""
        return sum(1 for w in self._waiters if not w.done())
