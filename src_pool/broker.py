"""The broker interface: what the pool needs from a queue, and nothing more.

A broker holds items until a worker takes them, and knows which taken items
are still unfinished. The pool (:mod:`src_pool.pool`) runs on any broker that
implements :class:`Broker`: the in-memory one (:mod:`src_pool.memory`), Redis,
RabbitMQ. The interface is small on purpose, and shaped by what makes a
networked broker fast: items come out in batches, acknowledgements can be
buffered and sent together, and the pool never makes a round trip per item
that the broker could avoid.

Delivery: at least once
    An item taken with :meth:`Broker.get_nowait` or :meth:`Broker.fetch` is
    *in flight*: it stays owned by the broker (a Redis broker keeps it in the
    consumer's processing list, RabbitMQ keeps it unacked) until exactly one of
    these happens to it:

    * :meth:`Broker.ack` -- processed; the broker forgets it;
    * :meth:`Broker.retry` -- failed; it comes back after ``delay`` seconds,
      with the attempt counted;
    * :meth:`Broker.dead_letter` -- failed for good (poison item, malformed
      payload, attempts used up); kept aside with its error, never delivered
      again;
    * :meth:`Broker.release` -- not processed (shutdown, a cancelled worker);
      it goes back to the *head* of its queue without counting an attempt.

    An in-flight item whose consumer dies without doing any of these must come
    back (Redis: a heartbeat and a reaper; RabbitMQ: the channel closes). It
    may then be processed twice: handlers must tolerate duplicates. A broker
    never loses an item it accepted, and never delivers one item to two
    consumers at the same time.

Who does what
    The *pool* decides: it acks after the handler returned, retries or
    dead-letters after it raised, and releases what it did not finish when it
    stops. It never settles an envelope twice. The *broker* keeps order
    (FIFO within a priority, higher priorities first), bounds, attempts, the
    retry schedule and the dead-letter store; it owns any prefetch buffer and
    returns it on :meth:`Broker.close`.

Envelopes
    Every item travels in an :class:`Envelope`: an id unique within the
    broker (a string, or the in-memory broker's count), the payload
    (JSON-able: networked brokers serialise it as JSON, never pickle), the
    attempts already made, its priority, and when it was
    first enqueued (wall-clock seconds, comparable across hosts). ``receipt``
    is the broker's own handle on the delivery (the raw bytes in a processing
    list, a delivery tag) and means nothing to anyone else.

Backpressure
    :meth:`Broker.put` blocks while the broker is at its high watermark and
    resumes once the depth has fallen to the low watermark
    (:class:`src_pool.backpressure.Watermarks`), or raises :class:`QueueFull`
    after ``timeout`` seconds. Retries and released items are never refused:
    they were accepted once already.

Instrumentation
    :meth:`Broker.depth` and :attr:`Broker.capacity` feed qhealth's depth
    source. ``depth()`` is called from the monitor's thread once per tick: it
    must not block or do I/O (a networked broker returns a value it refreshes
    as it goes, or None when it cannot tell).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

#: Priorities run from 0 (the default) to 9; a higher one is taken first.
#: Ten levels are what RabbitMQ recommends and what a Redis broker can keep
#: as one list per level.
MIN_PRIORITY = 0
MAX_PRIORITY = 9


class BrokerError(Exception):
    """Base class of the errors a broker raises."""


class QueueFull(BrokerError):
    """The queue stayed at its high watermark for the whole ``timeout``."""


class BrokerClosed(BrokerError):
    """The broker was closed: it accepts and hands out nothing more."""


class AuthenticationFailed(BrokerError):
    """The server refused the login (a wrong or missing password): no retry
    can cure it, so it is raised at once, never retried as an outage."""


class PayloadError(BrokerError, ValueError):
    """A payload that cannot travel: not JSON-able, too large, or malformed."""


def check_priority(priority: object) -> int:
    """The priority itself, or a ValueError naming what is wrong with it."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(f"priority must be an integer {MIN_PRIORITY}-{MAX_PRIORITY}, got {priority!r}")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be {MIN_PRIORITY}-{MAX_PRIORITY} (higher first), got {priority}")
    return priority


def check_positive_int(value: object, name: str) -> int:
    """``value`` if it is a positive integer, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_timeout(timeout: float | None, what: str = "timeout") -> float | None:
    """``timeout`` if it is None or a non-negative number, else a ValueError."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
        raise ValueError(f"{what} must be a non-negative number of seconds or None, got {timeout!r}")
    return float(timeout)


@dataclass(slots=True, eq=False)
class Envelope:
    """One item on its way through a broker.

    Treat it as read-only; to hand back an envelope with a new attempt count
    use ``dataclasses.replace(envelope, attempts=n, last_error=...)``. (It is
    not a frozen dataclass only because a frozen one costs four times as much
    to create, once per item.)
    """

    id: str | int
    """Unique within the broker (for its lifetime, or for ever when
    persistent): a string on Redis and RabbitMQ; the in-memory broker counts
    (an int: a string made per item costs as much as the rest of a put)."""
    payload: Any
    """What the handler receives. JSON-able for networked brokers."""
    attempts: int = 0
    """Attempts of the handler already made and failed before this delivery
    (counted by the pool): 0 the first time."""
    priority: int = 0
    enqueued_at: float = 0.0
    """``time.time()`` when the item was first put."""
    last_error: str | None = None
    """What the last failed attempt raised, as ``"TypeName: message"``."""
    receipt: Any = field(default=None, repr=False)
    """The broker's own handle on this delivery; opaque to everyone else."""
    lost: int = 0
    """Deliveries of this item lost with a dead consumer before this one
    (counted by brokers that can tell: Redis's reaper). Separate from
    ``attempts``: a crash is not the handler's failure, nor the other way round."""


class Broker(abc.ABC):
    """A queue the pool can run on. See the module docstring for the contract.

    Methods that may block are coroutines; :meth:`get_nowait`, :meth:`ack`
    and :meth:`depth` are plain functions because the pool calls them once
    per item and they must cost next to nothing (a networked broker serves
    them from its prefetch buffer and sends acks in batches, finished by
    :meth:`flush`).
    """

    @property
    @abc.abstractmethod
    def capacity(self) -> int | None:
        """The high watermark (most items waiting), None when unbounded."""

    @abc.abstractmethod
    async def put(self, payload: Any, *, priority: int = 0, timeout: float | None = None) -> Envelope:
        """Enqueue one item and return its envelope.

        Waits while the broker is full (see Backpressure above); raises
        :class:`QueueFull` when ``timeout`` seconds pass first (``0``: answer
        at once), :class:`BrokerClosed` if the broker closes meanwhile,
        :class:`PayloadError` for a payload that cannot travel, ValueError for
        a bad priority.
        """

    async def put_many(
        self, payloads: Iterable[Any], *, priority: int = 0, timeout: float | None = None
    ) -> list[Envelope]:
        """Enqueue several items in order; networked brokers send them in one
        round trip. ``timeout`` applies to each wait for room."""
        return [await self.put(p, priority=priority, timeout=timeout) for p in payloads]

    @abc.abstractmethod
    def get_nowait(self) -> Envelope | None:
        """An item that is available right now without waiting or I/O (from
        the queue in memory, from the prefetch buffer otherwise), or None.
        The item is in flight from here on."""

    @abc.abstractmethod
    async def fetch(self, max_items: int = 1) -> list[Envelope]:
        """Wait until at least one item is available and take up to
        ``max_items`` (never an empty list). Cancellation-safe: if the caller
        is cancelled, nothing stays taken (items handed over at that instant
        go back to the head of the queue). Raises :class:`BrokerClosed` when
        the broker closes."""

    @abc.abstractmethod
    def ack(self, envelope: Envelope) -> None:
        """The item was processed: forget it. May be buffered and sent with
        the next round trip; :meth:`flush` waits until all are sent. Acking an
        envelope that is not in flight (twice, or after :meth:`release`) is a
        bug in the caller: raise ValueError if the broker can tell."""

    async def flush(self) -> None:  # noqa: B027 -- optional hook: nothing to flush by default
        """Wait until every buffered acknowledgement has reached the broker."""

    @abc.abstractmethod
    async def retry(self, envelope: Envelope, *, delay: float, error: str) -> None:
        """The attempt failed and should be made again in ``delay`` seconds.
        ``envelope.attempts`` already counts the failed attempt."""

    @abc.abstractmethod
    async def dead_letter(self, envelope: Envelope, *, error: str) -> None:
        """The item failed for good: keep it, with ``error``, where it is never
        delivered again (the dead-letter queue)."""

    @abc.abstractmethod
    async def release(self, envelopes: Sequence[Envelope]) -> None:
        """Hand unprocessed items back to the head of their queue, in their
        order, without counting an attempt (shutdown, a cancelled worker)."""

    @abc.abstractmethod
    def depth(self) -> int | None:
        """Items waiting to be taken (not in flight, not scheduled for a later
        retry), or None when unknown. Never blocks; callable from any thread."""

    @property
    def in_flight(self) -> int | None:
        """Items this broker handed out that are not settled yet, or None when
        it does not keep count. Optional; with it :meth:`Pool.join
        <src_pool.pool.Pool.join>` knows exactly when the work is done."""
        return None

    @property
    def buffered(self) -> int:
        """Items received from the server (a prefetch, a fetched batch) and not
        yet taken by a worker: neither waiting in the queue's :meth:`depth` nor
        in flight. 0 for a broker that hands items straight over; no I/O."""
        return 0

    @property
    def delayed(self) -> int | None:
        """Retries scheduled for later (0 when none), or None when unknown.
        Optional, like :attr:`in_flight`; no I/O."""
        return None

    async def start(self) -> None:  # noqa: B027 -- optional hook: nothing to connect by default
        """Connect and start background work (heartbeats, reapers). Idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop: release the prefetch buffer, flush acks, wake blocked
        producers and consumers with :class:`BrokerClosed`. Idempotent. In-flight
        items not settled by then are returned by the broker's own recovery
        (at least once), never dropped."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
