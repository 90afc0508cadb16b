"""The in-memory broker: bounded, FIFO within a priority, higher priorities first.

For pools that live in one process. It keeps the full broker contract
(:mod:`src_pool.broker`) so that a pool moves to Redis by changing one line,
and it is built for the hot path: taking an item is a deque pop and a dict
insert, acknowledging it a dict delete, and no timer or future exists unless
a consumer really waits.

Waking consumers one at a time
    Consumers blocked in :meth:`MemoryBroker.fetch` wait in line. An item
    that arrives wakes the first of them, and only one wake-up is in flight
    at a time: the woken consumer, as it takes its item, wakes the next one
    if more items wait. A producer putting 100 items therefore costs one
    wake-up, not 100 (an ``asyncio.Queue`` wakes a getter per put), while
    consumers still join in one event-loop turn after another as long as
    work is there. A consumer that is already running may take an item first
    (no wake-up at all); one cancelled after it was woken passes the wake-up
    on. Nothing is ever handed to a consumer that is no longer there, so
    cancellation cannot strand an item.

The enqueue time, read once per turn
    Reading the wall clock costs as much as the rest of a put here (~0.2 µs
    on a virtual machine), so the puts of one event-loop turn share one
    reading, for at most ``STAMP_REUSE`` puts: an envelope's ``enqueued_at``
    may be early by the length of that turn, never late. A producer that
    puts without ever yielding to the loop gets a fresh reading every 64
    items.

Envelopes reused, when nobody else holds them
    Making an envelope (and freeing it) costs more than the rest of an item's
    trip through the broker. With ``reuse_envelopes=True`` (what a pool does
    with the broker it makes for itself: its ``submit`` calls :meth:`push`,
    which hands out no envelope) an acknowledged envelope goes to a free
    list, and the next put fills it in again instead of making one; an
    envelope that ``put`` returns is then valid only until its item is
    acknowledged.

Payloads are not serialised: any object goes. Keep them JSON-able if the pool
may move to a networked broker one day.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .backpressure import Watermarks
from .broker import (
    MAX_PRIORITY,
    Broker,
    BrokerClosed,
    Envelope,
    check_positive_int,
    check_priority,
    check_timeout,
)

#: Dead letters kept by default; beyond it the oldest is dropped (and counted).
DEFAULT_DEAD_LETTER_LIMIT = 10_000
#: Puts that may share one reading of the clock, within one event-loop turn.
STAMP_REUSE = 64
#: Acknowledged envelopes kept for reuse, at most (``reuse_envelopes``).
FREE_ENVELOPES = 1024


def _closed() -> BrokerClosed:
    return BrokerClosed("the broker is closed: it accepts no more items")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An item that failed for good, with the error that ended it."""

    envelope: Envelope
    error: str


class MemoryBroker(Broker):
    """A bounded in-process queue with priorities 0-9.

    ``capacity`` is the high watermark (None: unbounded, producers never
    wait); ``low_watermark`` where blocked producers resume (default half of
    it). ``dead_letter_limit`` bounds the dead-letter store. ``clock`` gives
    the wall-clock enqueue time of envelopes. ``reuse_envelopes``: refill
    acknowledged envelopes instead of making new ones (see above: only when
    no caller keeps the envelopes ``put`` returns).
    """

    def __init__(
        self,
        capacity: int | None = 1000,
        *,
        low_watermark: int | None = None,
        dead_letter_limit: int = DEFAULT_DEAD_LETTER_LIMIT,
        clock: Callable[[], float] = time.time,
        reuse_envelopes: bool = False,
    ) -> None:
        self._gate = Watermarks.for_capacity(capacity, low_watermark)
        check_positive_int(dead_letter_limit, "dead_letter_limit")
        self._high = capacity if capacity is not None else sys.maxsize
        self._low = self._gate.low if self._gate is not None else -1
        self._capacity = capacity
        self._clock = clock
        self._queues: list[deque[Envelope]] = [deque() for _ in range(MAX_PRIORITY + 1)]
        self._top = 0  # no level above this one holds an item
        self._size = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._waking = 0  # 1 while a woken consumer has not run yet
        self._woken_waiter: asyncio.Future[None]
        self._inflight: dict[str | int, Envelope] = {}
        self._delayed: list[tuple[float, int, Envelope]] = []  # (monotonic due time, seq, envelope)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._seq = itertools.count()
        self._stamp = 0.0
        self._stamp_left = 0  # puts that may still use _stamp (this turn)
        self._reuse = bool(reuse_envelopes)
        self._free: list[Envelope] = []  # acknowledged envelopes to fill in again
        self._pushed: Envelope
        self._dead: deque[DeadLetter] = deque(maxlen=dead_letter_limit)
        self._closed = False
        self._refusal: Callable[[], BaseException] | None = None  # what a put raises, once refused
        self.put_total = 0
        """Items accepted by :meth:`put` (the pool reports it as qhealth's enqueued
        count), and the id of the last one: ids are ints counted from 1, cheap
        per item and unique for the broker's lifetime."""
        self.acked_total = 0
        self.retried_total = 0
        self.released_total = 0
        self.dead_lettered_total = 0
        self.dead_letters_dropped = 0

    # -- producing ------------------------------------------------------------

    @property
    def capacity(self) -> int | None:
        return self._capacity

    async def put(self, payload: Any, *, priority: int = 0, timeout: float | None = None) -> Envelope:
        await self.push(payload, priority=priority, timeout=timeout)
        return self._pushed  # set by push() in the same step: no other task ran in between

    async def push(self, payload: Any, priority: int = 0, timeout: float | None = None) -> None:
        """:meth:`put` without handing the envelope out: what a pool's
        ``submit`` calls (with ``reuse_envelopes``, nobody else then holds it)."""
        if priority.__class__ is not int or priority < 0 or priority > MAX_PRIORITY:
            check_priority(priority)
        if self._refusal is not None:
            raise self._refusal()
        gate = self._gate
        if gate is not None and gate.blocked:
            await gate.wait_for_room(self.depth, timeout)
        elif timeout is not None:
            check_timeout(timeout)
        if self._stamp_left:
            self._stamp_left -= 1
            stamp = self._stamp
        else:
            stamp = self._restamp()
        self.put_total = id_ = self.put_total + 1  # the count of puts is the next id
        if self._free:
            envelope = self._free.pop()
            envelope.id = id_
            envelope.payload = payload
            envelope.priority = priority
            envelope.enqueued_at = stamp
        else:
            envelope = Envelope(id_, payload, 0, priority, stamp)
        self._queues[priority].append(envelope)
        self._size += 1
        if priority > self._top:  # noqa: PLR1730 -- a comparison is cheaper than max() per item
            self._top = priority
        if self._size >= self._high:
            gate.blocked = True  # type: ignore[union-attr] # a finite high watermark has a gate
        if self._waiters and not self._waking:
            self._wake_one()
        self._pushed = envelope

    def refuse_puts(self, error: Callable[[], BaseException]) -> None:
        """From now on every put raises ``error()`` (an owner stopping: a
        pool's own broker refuses with :class:`~src_pool.PoolClosed`); items
        already queued are still handed out."""
        self._refusal = error

    def _restamp(self) -> float:
        """Read the clock for this put and the next ones of this event-loop turn."""
        self._stamp = stamp = self._clock()
        self._stamp_left = STAMP_REUSE - 1
        asyncio.get_running_loop().call_soon(self._stamp_expired)
        return stamp

    def _stamp_expired(self) -> None:
        self._stamp_left = 0

    def _enqueue(self, envelope: Envelope) -> None:
        """Queue an item at the tail (no watermark: it was accepted before)."""
        priority = envelope.priority
        self._queues[priority].append(envelope)
        self._size += 1
        self._top = max(self._top, priority)
        if self._waiters and not self._waking:
            self._wake_one()

    def _wake_one(self) -> None:
        """Wake the longest-waiting consumer (there is no wake-up in flight)."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking = 1
                self._woken_waiter = waiter
                return

    # -- consuming ------------------------------------------------------------

    def get_nowait(self) -> Envelope | None:
        if not self._size or self._closed:
            return None
        queue = self._queues[self._top]
        if not queue:  # that level ran dry: step down to the next one that holds items
            top = self._top
            while not self._queues[top]:
                top -= 1
            self._top = top
            queue = self._queues[top]
        envelope = queue.popleft()
        size = self._size = self._size - 1
        self._inflight[envelope.id] = envelope
        if size and self._waiters and not self._waking:
            self._wake_one()  # more work: the next waiting consumer joins in
        if size <= self._low and self._gate is not None and self._gate.blocked:
            self._gate.notify(size)
        return envelope

    async def fetch(self, max_items: int = 1) -> list[Envelope]:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"max_items must be a positive integer, got {max_items!r}")
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise BrokerClosed("the broker is closed")
            if self._delayed:
                self._promote_due()
            if self._size:
                batch: list[Envelope] = []
                while len(batch) < max_items and (envelope := self.get_nowait()) is not None:
                    batch.append(envelope)
                return batch
            if self._waking and self._woken_waiter.get_loop().is_closed():
                self._waking = 0  # woken on a loop that is gone: it will never run
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            self._stamp_left = 0  # a consumer waits: the turn is over (or the loop is new)
            if self._delayed:
                self._arm_timer()
            try:
                await waiter
            except asyncio.CancelledError:
                if not waiter.done():
                    self._waiters.remove(waiter)
                elif not waiter.cancelled() and waiter.exception() is None:
                    self._woken()  # woken, then cancelled: pass the wake-up on
                    if self.depth() and self._waiters:
                        self._wake_one()
                raise
            self._woken()

    def _woken(self) -> None:
        self._waking = 0

    # -- settling -------------------------------------------------------------

    def _settle(self, envelope: Envelope, verb: str) -> None:
        if self._inflight.pop(envelope.id, None) is None:
            raise ValueError(
                f"cannot {verb} item {envelope.id}: it is not in flight "
                "(already acknowledged, retried, dead-lettered or released)"
            )

    def ack(self, envelope: Envelope) -> None:
        try:
            del self._inflight[envelope.id]
        except KeyError:
            self._settle(envelope, "acknowledge")
        self.acked_total += 1
        if self._reuse and len(self._free) < FREE_ENVELOPES and envelope.attempts == 0:
            envelope.payload = None  # hold no payload longer than its item lives
            self._free.append(envelope)

    async def retry(self, envelope: Envelope, *, delay: float, error: str) -> None:
        delay = check_timeout(delay, "retry delay") or 0.0
        self._settle(envelope, "retry")
        self.retried_total += 1
        envelope = replace(envelope, last_error=error, receipt=None)
        if delay <= 0:
            self._enqueue(envelope)
            return
        heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._seq), envelope))
        self._arm_timer()

    async def dead_letter(self, envelope: Envelope, *, error: str) -> None:
        self._settle(envelope, "dead-letter")
        if len(self._dead) == self._dead.maxlen:
            self.dead_letters_dropped += 1
        self._dead.append(DeadLetter(replace(envelope, last_error=error, receipt=None), error))
        self.dead_lettered_total += 1

    async def release(self, envelopes: Sequence[Envelope]) -> None:
        strangers = [e.id for e in envelopes if e.id not in self._inflight]
        if strangers:
            raise ValueError(f"cannot release items {strangers}: not in flight")
        for envelope in reversed(envelopes):
            del self._inflight[envelope.id]
            self._queues[envelope.priority].appendleft(envelope)
            self._size += 1
            self._top = max(self._top, envelope.priority)
            self.released_total += 1
        if self._waiters and not self._waking:
            self._wake_one()

    # -- delayed retries --------------------------------------------------------

    def _promote_due(self) -> None:
        now = time.monotonic()
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            self._enqueue(heapq.heappop(delayed)[2])

    def _arm_timer(self) -> None:
        """One timer, for the earliest due retry, on the running loop. Re-armed
        when an earlier retry arrives or the loop changed (a closed loop's
        timer never fires; the next fetch on a new loop promotes and re-arms)."""
        if not self._delayed:
            return
        due = self._delayed[0][0]
        loop = asyncio.get_running_loop()
        timer = self._timer
        if (
            timer is not None
            and not timer.cancelled()
            and self._timer_due <= due
            and self._timer_loop is loop
        ):
            return
        if timer is not None:
            timer.cancel()
        self._timer_loop = loop
        self._timer_due = due
        self._timer = loop.call_later(max(0.0, due - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._promote_due()
        if self._delayed:
            self._arm_timer()

    # -- inspection -----------------------------------------------------------

    def depth(self) -> int:
        return self._size

    @property
    def in_flight(self) -> int:
        """Items taken and not yet settled."""
        return len(self._inflight)

    @property
    def delayed(self) -> int:
        """Items waiting for a scheduled retry."""
        return len(self._delayed)

    def dead_letters(self) -> list[DeadLetter]:
        """The dead-letter store, oldest first."""
        return list(self._dead)

    def remaining(self) -> list[Envelope]:
        """Every item not yet settled for good: waiting (in the order they
        would be taken), scheduled for a retry, then in flight. After the
        pool stopped, this is what is left to do: nothing else exists."""
        waiting = [e for level in reversed(self._queues) for e in level]
        later = [e for _, _, e in sorted(self._delayed)]
        return [*waiting, *later, *self._inflight.values()]

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Stop accepting and handing out items. Waiting producers and
        consumers get :class:`BrokerClosed`; scheduled retries become waiting
        items at once, so that :meth:`remaining` shows them in order and a
        later consumer of :meth:`remaining` loses nothing."""
        if self._closed:
            return
        self._closed = True
        self._refusal = self._refusal or _closed
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._delayed:
            envelope = heapq.heappop(self._delayed)[2]
            self._queues[envelope.priority].append(envelope)
            self._size += 1
            self._top = max(self._top, envelope.priority)
        if self._gate is not None:
            self._gate.close()
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(BrokerClosed("the broker was closed while a consumer waited"))
