"""Backpressure: high and low watermarks in front of a queue.

A producer may put while the queue holds fewer than ``high`` items. At
``high`` the gate closes, and it reopens only once consumers have brought the
depth down to ``low``. The band between the two is what keeps a producer from
waking for every single free slot (the hysteresis that makes a full queue
cheap), and it is event driven: a producer blocked on a full queue wakes the
moment the depth reaches ``low``, never on a timer (the textbook's refill on
fixed 1 s / 5 s sleeps emptied the queue 92% of the time).

One gate, two kinds of queue
    An in-process queue knows its depth: it calls :meth:`Watermarks.notify`
    as it hands items out, and blocked producers wake at once. A networked
    queue (Redis, RabbitMQ) is drained by other processes, so it passes a
    *remote depth reader* to :meth:`Watermarks.wait_for_room`: while anyone
    waits, one task per gate calls it over and over (the reader paces itself:
    Redis blocks on a list that consumers feed when the gate reopens, RabbitMQ
    sleeps a jittered moment and reads the queue's depth) and feeds each
    answer to :meth:`~Watermarks.notify`. Every producer waits the same way, in
    the same place, with the same timeout and close semantics.

:class:`Watermarks` holds no event loop: waiting producers get a future on
whatever loop they run in, so one gate serves successive loops (tests,
``asyncio.run`` called twice).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from .broker import BrokerClosed, QueueFull, check_positive_int, check_timeout

logger = logging.getLogger("src_pool.backpressure")

#: Reads a networked queue's depth now (or after a short wait it chooses);
#: None when it cannot tell this time.
RemoteDepth = Callable[[], Awaitable[int | None]]

#: After a remote reader raised, the poller waits this long before the next read.
READ_ERROR_PAUSE_S = 0.1


class Watermarks:
    """The gate. The broker calls :meth:`has_room` before it adds an item,
    :meth:`wait_for_room` when there is none, and :meth:`notify` after it
    removed items (a cheap attribute test while the gate is open)."""

    __slots__ = ("_closed", "_poller", "_waiters", "blocked", "high", "low", "name")

    def __init__(self, high: int, low: int | None = None, *, name: str | None = None) -> None:
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
        self.name = name
        """The queue's name, for the messages a person reads."""
        self.blocked = False
        """True from the moment the depth reached ``high`` until it fell to ``low``."""
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    def for_capacity(
        cls, capacity: int | None, low_watermark: int | None, *, name: str | None = None
    ) -> Watermarks | None:
        """The gate of a broker built with ``capacity`` (None: unbounded, no
        gate) and ``low_watermark`` (None: half); a ValueError naming the
        argument that is wrong."""
        if capacity is None:
            if low_watermark is not None:
                raise ValueError("low_watermark needs a capacity (the high watermark)")
            return None
        check_positive_int(capacity, "capacity")
        low = capacity // 2 if low_watermark is None else low_watermark
        if isinstance(low, bool) or not isinstance(low, int) or not 0 <= low < capacity:
            raise ValueError(
                f"low_watermark must be an integer from 0 to below capacity ({capacity}), got {low!r}: "
                "the low watermark is where blocked producers resume"
            )
        return cls(capacity, low, name=name)

    def has_room(self, depth: int) -> bool:
        """Whether a producer may add an item now; closes the gate at ``high``."""
        if self.blocked:
            return False
        if depth >= self.high:
            self.blocked = True
            return False
        return True

    async def wait_for_room(
        self,
        depth: Callable[[], int | None],
        timeout: float | None = None,
        *,
        remote: RemoteDepth | None = None,
    ) -> None:
        """Return once a producer may add an item; :class:`QueueFull` after
        ``timeout`` seconds (0: at once), :class:`BrokerClosed` on :meth:`close`.
        ``depth`` is the depth known without I/O (None: unknown, treated as
        full while the gate is shut); ``remote`` reads it from the server
        while producers wait."""
        timeout = check_timeout(timeout)
        if self._closed:
            raise BrokerClosed("the queue is closed")
        if self._open(depth()):
            return
        queue = "queue" if self.name is None else f"queue {self.name}"
        if timeout == 0:
            raise QueueFull(f"{queue} full: depth {depth()} reached the high watermark {self.high}")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                while not self._open(depth()):
                    if self._closed:
                        raise BrokerClosed("the queue was closed while a producer waited for room")
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._waiters.append(waiter)
                    if remote is not None and (self._poller is None or self._poller.done()):
                        self._poller = loop.create_task(self._poll(remote), name="src_pool room poller")
                    try:
                        await waiter
                    finally:
                        if not waiter.done():
                            self._waiters.remove(waiter)
        except TimeoutError:
            raise QueueFull(
                f"{queue} full after {timeout:g} s: depth {depth()} has not fallen to the low watermark "
                f"{self.low} (high watermark {self.high})"
            ) from None

    def _open(self, depth: int | None) -> bool:
        return not self.blocked if depth is None else self.has_room(depth)

    async def _poll(self, remote: RemoteDepth) -> None:
        """Read the remote depth while producers wait, and let it reopen the gate."""
        while self._waiters and not self._closed:
            try:
                depth = await remote()
            except Exception:
                logger.debug("src_pool: reading the depth for waiting producers failed", exc_info=True)
                await asyncio.sleep(READ_ERROR_PAUSE_S)
                continue
            if depth is not None:
                self.notify(depth)

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
        """Wake every waiting producer with :class:`BrokerClosed`; stop reading the remote depth."""
        self._closed = True
        if self._poller is not None and not self._poller.done():
            self._poller.cancel()
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(BrokerClosed("the queue was closed while a producer waited for room"))

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def waiting(self) -> int:
        """Producers waiting for room right now."""
        return sum(1 for w in self._waiters if not w.done())
