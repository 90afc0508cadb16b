"""The RabbitMQ broker: the pool on a message broker, with the same guarantees.

It keeps the contract of :mod:`src_pool.broker` on RabbitMQ 3.8 or later
through aio-pika (``pip install 'qhealth[rabbitmq]'``); the queues it uses
are described in :mod:`src_pool.rabbit_topology`.

::

    broker = RabbitBroker("amqp://app:secret@mq:5672/", "jobs", concurrency=20)
    async with broker, Pool(handle, broker=broker, concurrency=20) as pool:
        await pool.submit({"user": 42})

Reliable delivery
    Manual acknowledgements: an item stays unacknowledged at RabbitMQ from
    delivery until the pool settles it, and RabbitMQ gives it back to the
    queue the moment this consumer's channel closes (a crash, a SIGKILL, a
    dropped connection). Every publish (put, retry, dead letter) waits for
    the publisher confirm, and a retried or dead-lettered item is acked only
    after its copy is confirmed: a crash in between makes a duplicate, never
    a loss.

Backpressure from the broker
    ``basic.qos`` prefetch is the number of items this process may hold
    unacknowledged, and defaults to ``concurrency`` (pass the pool's): once
    every worker holds an item, RabbitMQ stops delivering until one is
    acked. No local queue grows, and other processes get the rest.

Priorities and order
    ``x-max-priority`` 9: higher priorities are delivered first, FIFO
    within a priority (among the items waiting in RabbitMQ; the few a
    process already holds are not overtaken). A released item
    (:meth:`RabbitBroker.release`, basic.nack with requeue) goes back to its
    original place, at the head, and the prefetch buffer goes back with it
    so that nothing behind it overtakes it.

Round trips per burst, never per item
    Acks are buffered and sent once per event-loop turn: one ``multiple``
    ack for the longest run of settled deliveries, single acks for the rest.
    ``put_many`` sends up to 500 publishes in one write, each with its own
    confirm (:mod:`src_pool.rabbit_publish`). Deliveries are pushed by
    RabbitMQ (``basic.consume``): an idle consumer does not poll (the one
    periodic round trip is the depth refresh, once per ``refresh_interval``
    per process), and a process that only produces never consumes.

Retries and dead letters
    :meth:`RabbitBroker.retry` publishes the item, its attempt counted and its
    error attached, to a retry queue with a per-message TTL, which RabbitMQ
    dead-letters back to the work queue when it expires (delay tiers keep a
    short delay from waiting behind a long one). :meth:`RabbitBroker.dead_letter`
    and messages that are not JSON go to the dead-letter exchange and its
    bounded queue, with the error in a header.

Reconnects
    A lost connection (or a channel closed by an error) ends the *session*:
    items buffered or in flight in it are RabbitMQ's again (it redelivers
    them: at least once), and settling one of them later is skipped and
    counted (``stale_total``). The broker reconnects with exponential backoff
    and full jitter, declares its queues again, and resumes consuming;
    blocked consumers keep waiting, puts wait for the new session (up to
    ``connect_timeout``) and publish again a message whose confirm was lost.

Instrumentation
    :meth:`RabbitBroker.depth` is computed without I/O from a passive
    ``queue.declare`` (ready messages and consumers) refreshed every
    ``refresh_interval`` in the background, plus what this process put and
    took since; :attr:`RabbitBroker.consumers` is the consumer count the
    same declare returns. The shared rate limit stays on Redis
    (:mod:`src_pool.redis_limiter`): RabbitMQ has nothing like an atomic
    token bucket that many processes could draw from.

Limits, stated
    Classic queues do not count deliveries, so an item whose consumer dies
    holding it comes back with its attempt count unchanged (a poison item
    that crashes its process is redelivered until someone removes it;
    quorum queues count deliveries but have no priorities before RabbitMQ
    4.0). ``capacity`` is checked by the producer against the depth it
    knows, so producers in several processes may overshoot it by what they
    published since their last refresh; retries never count against it.
    A retry may come back up to twice as late as asked, never earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from .backoff import Backoff
from .broker import (
    MAX_PRIORITY,
    Broker,
    BrokerClosed,
    BrokerError,
    Envelope,
    QueueFull,
    check_positive_int,
    check_priority,
    check_timeout,
)
from .rabbit_connect import (
    RabbitUnavailable,
    check_url,
    import_aio_pika,
    transient_errors,
)
from .rabbit_message import (
    H_DEAD_AT,
    H_ERROR,
    MAX_ERROR_CHARS,
    MalformedMessage,
    decode,
    encode_payload,
    headers_of,
    properties,
    to_us,
)
from .rabbit_publish import Message, batching_supported, publish_batch
from .rabbit_topology import MAX_TIER, Topology, check_name, delay_ms, explain_declare_error, tier_of
from .redact import redact_url, scrub
from .throttled_log import ThrottledLog

logger = logging.getLogger("src_pool.rabbitmq")

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_DEAD_LETTER_LIMIT = 10_000
#: Messages per write, awaiting their confirms together, in :meth:`RabbitBroker.put_many`.
PUBLISH_WINDOW = 500
#: Producers blocked at the high watermark re-read the depth this often (jittered).
ROOM_POLL_S = 0.2
#: Reconnect backoff ceiling: a restarted RabbitMQ takes seconds to accept connections again.
RECONNECT_CAP_S = 5.0


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery: its channel's session and its delivery tag there."""

    session: int
    tag: int


@dataclass(frozen=True, slots=True)
class RabbitCounts:
    """What the broker holds for this queue right now, across every consumer."""

    waiting: int
    """Ready messages in the work queue (not those delivered and unacked)."""
    delayed: int
    """Messages in the retry queues."""
    dead: int
    consumers: int


@dataclass(frozen=True, slots=True)
class RabbitDeadLetter:
    """A message of the dead-letter queue."""

    error: str
    at: float
    """When it was dead-lettered (seconds since the epoch; 0 if unknown)."""
    body: bytes
    envelope: Envelope | None
    """The item, or None when the message could not be decoded."""


@dataclass(eq=False)
class _Session:
    """One connection and its channels; replaced whole when anything in it fails."""

    number: int
    connection: Any
    admin: Any
    """aiormq channel for declares and passive declares."""
    publisher: Any
    """aiormq channel in confirm mode."""
    consumer: Any
    """aiormq channel with the prefetch; deliveries and their acks."""
    lost: asyncio.Future[None]
    batching: bool = False
    """Publishes of a batch go out in one write (:mod:`src_pool.rabbit_publish`)."""
    tiers: set[int] = field(default_factory=set)
    consumer_tag: str | None = None
    consuming: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return not self.lost.done()


class RabbitBroker(Broker):
    """A reliable queue on RabbitMQ shared by any number of processes.

    ``name`` names the queue (see :mod:`src_pool.rabbit_topology` for the
    others). ``concurrency``: the workers of the pool in this process, and the
    default ``prefetch`` (items held unacknowledged at once). ``capacity``:
    the high watermark of waiting items (None: unbounded), ``low_watermark``
    where blocked producers resume (default half). ``dead_letter_limit``
    bounds the dead-letter queue. ``refresh_interval``: seconds between two
    passive declares that refresh :meth:`depth`. ``connect_timeout``: how long
    :meth:`start`, a put or a settle waits for a connection before
    :class:`RabbitUnavailable`. ``connection_options`` go to
    ``aio_pika.connect`` (TLS context, ...).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        name: str = "default",
        *,
        concurrency: int = 10,
        prefetch: int | None = None,
        capacity: int | None = 100_000,
        low_watermark: int | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        dead_letter_limit: int = DEFAULT_DEAD_LETTER_LIMIT,
        refresh_interval: float = 1.0,
        connect_timeout: float = 30.0,
        connection_options: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = check_url(url)
        check_name(name)
        check_positive_int(concurrency, "concurrency")
        if prefetch is not None:
            check_positive_int(prefetch, "prefetch")
            if prefetch > 65_535:
                raise ValueError(f"prefetch must be at most 65535 (basic.qos), got {prefetch}")
        if capacity is not None:
            check_positive_int(capacity, "capacity")
            low = capacity // 2 if low_watermark is None else low_watermark
            if isinstance(low, bool) or not isinstance(low, int) or not 0 <= low < capacity:
                raise ValueError(
                    f"low_watermark must be an integer from 0 to below capacity ({capacity}), got {low!r}"
                )
        elif low_watermark is not None:
            raise ValueError("low_watermark needs a capacity (the high watermark)")
        else:
            low = 0
        check_positive_int(max_payload_bytes, "max_payload_bytes")
        check_positive_int(dead_letter_limit, "dead_letter_limit")
        refresh = check_timeout(refresh_interval, "refresh_interval")
        if not refresh or refresh < 0.01:
            raise ValueError(f"refresh_interval must be at least 0.01 s, got {refresh_interval!r}")
        connect = check_timeout(connect_timeout, "connect_timeout")
        if not connect:
            raise ValueError(f"connect_timeout must be positive, got {connect_timeout!r}")

        self.name = name
        self.concurrency = concurrency
        self.prefetch = concurrency if prefetch is None else prefetch
        self._topology = Topology(name, dead_letter_limit)
        self._capacity = capacity
        self._low = low
        self._max_bytes = max_payload_bytes
        self._refresh_interval = refresh
        self._connect_timeout = connect
        self._options = dict(connection_options or {})
        self._batching = True  # tests turn it off to run the one-by-one path
        self._clock = clock
        self._ids = 0
        self._id_prefix = os.urandom(6).hex() + "-"
        self._log = ThrottledLog(10.0, log=logger)
        self._transient: tuple[type[BaseException], ...] = ()
        self._precondition: tuple[type[BaseException], ...] = ()
        self._settle_errors: tuple[type[BaseException], ...] = ()
        self._closed_channel: tuple[type[BaseException], ...] = ()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._session: _Session | None = None
        self._sessions = 0
        self._live = -1  # number of the session whose deliveries may be settled
        self._ready: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._last_error = "not connected yet"
        self._supervisor: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._want_consume = False

        # Deliveries of the live session.
        self._buffer: deque[Envelope] = deque()
        self._waiters: deque[asyncio.Future[list[Envelope]]] = deque()
        self._inflight: dict[int, Envelope] = {}
        self._settling: set[int] = set()
        self._order: deque[int] = deque()  # delivery tags not yet settled at RabbitMQ, in order
        self._to_ack: set[int] = set()
        self._sent: set[int] = set()  # settled at RabbitMQ, still in _order
        self._ops: deque[tuple[str, int]] = deque()  # nacks and rejects, in order
        self._sender: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()

        # Depth: the last passive declare, plus what this process did since.
        self._depth_base = 0
        self._delta = 0
        self._depth_at: float | None = None
        self._consumers: int | None = None
        self._scheduled: dict[str, float] = {}  # retries this broker scheduled: id -> due (monotonic)
        self._blocked = False
        self._room_waiters: list[asyncio.Future[None]] = []
        self._room_task: asyncio.Task[None] | None = None

        self.put_total = 0
        """Items accepted by :meth:`put` and :meth:`put_many` (confirmed by RabbitMQ)."""
        self.acked_total = 0
        self.retried_total = 0
        self.released_total = 0
        self.dead_lettered_total = 0
        self.malformed_total = 0
        self.stale_total = 0
        """Settlements skipped because the delivery's channel was lost (RabbitMQ redelivers the item)."""
        self.reconnects_total = 0
        self.connection_errors_total = 0

    def __repr__(self) -> str:
        return f"RabbitBroker({self.url!r}, name={self.name!r})"

    @property
    def url(self) -> str:
        """The broker's URL without its password."""
        return redact_url(self._url)

    @property
    def capacity(self) -> int | None:
        return self._capacity

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def topology(self) -> Topology:
        return self._topology

    # -- connecting -------------------------------------------------------------

    async def start(self) -> None:
        """Connect and declare the queues. Idempotent; concurrent callers share
        one attempt. :class:`RabbitUnavailable` after ``connect_timeout``."""
        if self._closed:
            raise BrokerClosed("the broker is closed")
        if self._started:
            return
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start())
        task = self._starting
        try:
            await asyncio.shield(task)
        except BaseException:
            if task.done() and self._starting is task:
                self._starting = None  # a later call tries again
            raise

    async def _start(self) -> None:
        import_aio_pika()  # first: a missing aio-pika says which extra to install
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()
        import aiormq.exceptions as amqp

        self._transient = transient_errors()
        self._precondition = (amqp.ChannelPreconditionFailed, amqp.ChannelAccessRefused)
        self._settle_errors = (BrokerError, *self._transient)
        self._closed_channel = (asyncio.CancelledError, *self._transient)
        await self._connect(deadline=time.monotonic() + self._connect_timeout)
        self._started = True
        self._supervisor = loop.create_task(self._supervise(), name=f"src_pool.rabbitmq session {self.name}")
        self._refresher = loop.create_task(self._refresh_loop(), name=f"src_pool.rabbitmq depth {self.name}")

    def _error_text(self, exc: BaseException) -> str:
        return scrub(f"{type(exc).__name__}: {exc}", self._url)

    async def _connect(self, deadline: float | None) -> None:
        """Open a session, retrying with jittered backoff until ``deadline``
        (None: until closed). A queue declared elsewhere with other arguments
        fails at once when there is a deadline (a person must act)."""
        backoff = Backoff(cap=RECONNECT_CAP_S)
        while True:
            if self._closed:
                raise BrokerClosed("the broker closed while connecting")
            try:
                await self._open_session()
                return
            except self._precondition as exc:
                text = explain_declare_error(self._topology, self._error_text(exc))
                self._last_error = text
                if deadline is not None:
                    raise BrokerError(
                        f"RabbitMQ at {self.url} refused the queues of {self.name!r}: {text}"
                    ) from None
                self._log.warning("declare", "src_pool.rabbitmq %s", text)
            except self._transient as exc:
                self.connection_errors_total += 1
                self._last_error = self._error_text(exc)
                self._log.warning(
                    "connect",
                    "src_pool.rabbitmq cannot connect to %s: %s; retrying",
                    self.url,
                    self._last_error,
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise RabbitUnavailable(f"RabbitMQ at {self.url} unreachable: {self._last_error}")
            delay = backoff.next_delay()
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(delay)

    async def _open_session(self) -> None:
        aio_pika = import_aio_pika()
        loop = asyncio.get_running_loop()
        options = {
            "timeout": min(self._connect_timeout, 10.0),
            "client_properties": {
                "connection_name": f"src_pool {self.name} {socket.gethostname()}:{os.getpid()}"
            },
            **self._options,
        }
        connection = await aio_pika.connect(self._url, **options)
        lost: asyncio.Future[None] = loop.create_future()

        def mark_lost(*_: object) -> None:
            if not lost.done():
                lost.set_result(None)

        try:
            connection.close_callbacks.add(mark_lost)
            channels = []
            for confirms in (False, True, False):
                channel = await connection.channel(publisher_confirms=confirms)
                channel.close_callbacks.add(mark_lost)
                channels.append(await channel.get_underlay_channel())
            admin, publisher, consumer = channels
            await self._topology.declare(admin)
            await consumer.basic_qos(prefetch_count=self.prefetch)
            consumer.on_consumer_cancel_callbacks.add(mark_lost)
            declared = await admin.queue_declare(self.name, passive=True)
        except BaseException:
            await self._close_quietly(connection)
            raise
        if self._closed:  # closed while connecting
            await self._close_quietly(connection)
            raise BrokerClosed("the broker closed while connecting")
        self._sessions += 1
        session = _Session(self._sessions, connection, admin, publisher, consumer, lost)
        session.batching = self._batching and batching_supported(publisher)
        self._reset_deliveries()
        self._live = session.number
        self._session = session
        self._set_depth(declared.message_count, declared.consumer_count)
        if self._sessions > 1:
            self.reconnects_total += 1
            logger.info("src_pool.rabbitmq reconnected to %s (queue %s)", self.url, self.name)
        if self._want_consume:
            await self._consume(session)
        assert self._ready is not None
        self._ready.set()

    async def _close_quietly(self, connection: Any) -> None:
        try:
            await asyncio.wait_for(connection.close(), 5.0)
        except Exception:
            logger.debug("src_pool.rabbitmq: closing a connection failed", exc_info=True)

    def _reset_deliveries(self) -> None:
        """Forget the deliveries of a lost session: RabbitMQ has them back."""
        self._buffer.clear()
        self._inflight.clear()
        self._settling.clear()
        self._order.clear()
        self._to_ack.clear()
        self._sent.clear()
        self._ops.clear()

    def _session_lost(self, session: _Session, what: str, exc: BaseException | None) -> None:
        """Something in ``session`` failed: end it (the supervisor reconnects)."""
        if exc is not None:
            self.connection_errors_total += 1
            self._last_error = self._error_text(exc)
            self._log.warning(
                f"lost:{what}",
                "src_pool.rabbitmq %s on %s failed: %s; reconnecting with backoff",
                what,
                self.url,
                self._last_error,
            )
        if not session.lost.done():
            session.lost.set_result(None)

    async def _supervise(self) -> None:
        """Wait for the session to end, then open a new one (forever, with backoff)."""
        while not self._closed:
            session = self._session
            if session is not None:
                await session.lost
                if self.closed:  # (a property: mypy would keep the loop's narrowing of _closed)
                    return
                if self._session is session:
                    self._end_session(session)
                    await self._close_quietly(session.connection)
            try:
                await self._connect(deadline=None)
            except BrokerClosed:
                return
            except Exception:  # a bug, or a refusal no backoff will cure: keep trying, loudly
                self._log.exception("supervise", "src_pool.rabbitmq cannot reconnect to %s", self.url)
                await asyncio.sleep(random.uniform(1.0, 5.0))

    def _end_session(self, session: _Session) -> None:
        assert self._ready is not None
        self._ready.clear()
        self._session = None
        self._live = -1
        self._depth_at = None
        self._reset_deliveries()
        if session.consuming is not None:
            session.consuming.cancel()

    async def _wait_session(self, deadline: float, what: str) -> _Session:
        """The live session, waiting for a reconnect until ``deadline``."""
        while True:
            if self._closed:
                raise BrokerClosed(f"the broker was closed during {what}")
            session = self._session
            if session is not None and session.alive:
                return session
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RabbitUnavailable(f"RabbitMQ at {self.url} unreachable for {what}: {self._last_error}")
            assert self._ready is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), remaining)
            if session is not None and not session.alive:
                await asyncio.sleep(0)  # let the supervisor take the lost session down

    def _deadline(self, timeout: float | None = None) -> float:
        limit = self._connect_timeout if timeout is None else min(timeout, self._connect_timeout)
        return time.monotonic() + max(limit, 1.0)

    async def _publish(self, routing_key: str, body: bytes, props: Any, what: str, deadline: float,
                       exchange: str = "") -> None:  # fmt: skip
        await self._publish_many([Message(exchange, routing_key, body, props)], what, deadline)

    @staticmethod
    async def _publish_one(channel: Any, message: Message) -> Any:
        return await channel.basic_publish(
            message.body,
            exchange=message.exchange,
            routing_key=message.routing_key,
            properties=message.properties,
            mandatory=True,
        )

    async def _publish_many(self, messages: Sequence[Message], what: str, deadline: float) -> None:
        """Publish and wait for every confirm; publish again, on the next
        session if this one is lost meanwhile, whatever was not confirmed (a
        duplicate is possible, a loss is not). One write per batch where
        aiormq allows it (:mod:`src_pool.rabbit_publish`)."""
        from pamqp.commands import Basic

        backoff: Backoff | None = None
        pending = list(messages)
        while True:
            session = await self._wait_session(deadline, what)
            channel = session.publisher
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout_at(loop.time() + max(0.1, deadline - time.monotonic())):
                    if session.batching:
                        futures = await publish_batch(channel, pending)
                        replies = await asyncio.gather(*futures, return_exceptions=True)
                    else:
                        calls = map(self._publish_one, repeat(channel), pending)
                        replies = await asyncio.gather(*calls, return_exceptions=True)
            except self._transient as exc:
                self._session_lost(session, what, exc)
            else:
                failed: list[Message] = []
                problem: BaseException | None = None
                for message, reply in zip(pending, replies, strict=True):
                    if isinstance(reply, Basic.Ack):
                        continue
                    failed.append(message)
                    if isinstance(reply, self._closed_channel):  # the channel closed first
                        problem = problem or reply
                    elif isinstance(reply, BaseException):
                        raise reply
                    elif not isinstance(reply, Basic.Nack):  # returned: the queue is gone
                        problem = problem or BrokerError(f"unroutable: no queue {message.routing_key!r}")
                if not failed:
                    return
                if problem is not None:  # a new session declares the queues again
                    self._session_lost(session, what, problem)
                else:
                    self._log.warning(f"nack:{what}", "src_pool.rabbitmq %s refused (nack); retrying", what)
                if len(failed) < len(pending) and backoff is not None:
                    backoff.reset()
                pending = failed
            if time.monotonic() >= deadline:
                raise RabbitUnavailable(
                    f"RabbitMQ at {self.url}: {what} not confirmed ({len(pending)} of {len(messages)}): "
                    f"{self._last_error}"
                )
            backoff = backoff or Backoff(cap=RECONNECT_CAP_S)
            await backoff.sleep()

    # -- producing ------------------------------------------------------------

    def _next_id(self) -> str:
        self._ids += 1
        return f"{self._id_prefix}{self._ids}"

    def _message(self, payload: Any, priority: int) -> tuple[Envelope, bytes, Any]:
        if type(priority) is not int or not 0 <= priority <= MAX_PRIORITY:
            check_priority(priority)
        body = encode_payload(payload, self._max_bytes)
        envelope = Envelope(self._next_id(), payload, 0, priority, self._clock())
        props = properties(envelope.id, priority, headers_of(envelope.enqueued_at, 0, None))
        return envelope, body, props

    async def put(self, payload: Any, *, priority: int = 0, timeout: float | None = None) -> Envelope:
        envelope, body, props = self._message(payload, priority)
        check_timeout(timeout)
        if self._closed:
            raise BrokerClosed("the broker is closed: it accepts no more items")
        await self.start()
        if self._capacity is not None and (self._blocked or self._estimate() >= self._capacity):
            await self._wait_for_room(timeout)
        await self._publish(self.name, body, props, "put", self._deadline(timeout))
        self.put_total += 1
        self._delta += 1
        return envelope

    async def put_many(
        self, payloads: Iterable[Any], *, priority: int = 0, timeout: float | None = None
    ) -> list[Envelope]:
        """Enqueue in order, with up to 500 publishes awaiting their confirms
        at once. Every payload is checked before the first is sent."""
        check_timeout(timeout)
        made = [self._message(p, priority) for p in payloads]
        if self._closed:
            raise BrokerClosed("the broker is closed: it accepts no more items")
        await self.start()
        for i in range(0, len(made), PUBLISH_WINDOW):
            chunk = made[i : i + PUBLISH_WINDOW]
            if self._capacity is not None and (self._blocked or self._estimate() >= self._capacity):
                await self._wait_for_room(timeout)
            await self._publish_many(
                [Message("", self.name, body, props) for _, body, props in chunk],
                "put",
                self._deadline(timeout),
            )
            self.put_total += len(chunk)
            self._delta += len(chunk)
        return [envelope for envelope, _, _ in made]

    async def _wait_for_room(self, timeout: float | None) -> None:
        """Block while the queue is at its high watermark, until the depth
        (read by passive declare) falls to the low one; :class:`QueueFull`
        after ``timeout`` seconds. One poller serves every blocked producer."""
        if not self._blocked:
            depth = await self._refresh_depth()
            if depth is None or depth < (self._capacity or 0):
                return
            self._blocked = True
        if timeout == 0:
            raise QueueFull(self._full_message())
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._room_waiters.append(waiter)
        if self._room_task is None:
            self._room_task = asyncio.get_running_loop().create_task(self._poll_room())
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            raise QueueFull(self._full_message(timeout)) from None
        finally:
            if waiter in self._room_waiters:
                self._room_waiters.remove(waiter)

    def _full_message(self, timeout: float | None = None) -> str:
        waited = "" if timeout is None else f" after {timeout:g} s"
        return (
            f"queue {self.name} full{waited}: depth {self.depth()} has not fallen to the low watermark "
            f"{self._low} (high watermark {self._capacity})"
        )

    async def _poll_room(self) -> None:
        try:
            while self._room_waiters and not self._closed:
                await asyncio.sleep(ROOM_POLL_S * random.uniform(0.5, 1.5))
                try:
                    depth = await self._refresh_depth()
                except BrokerError:
                    continue
                if depth is not None and depth <= self._low:
                    self._blocked = False
                    waiters, self._room_waiters = self._room_waiters, []
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)
        finally:
            self._room_task = None

    # -- consuming ------------------------------------------------------------

    def get_nowait(self) -> Envelope | None:
        if not self._buffer or self._closed:
            return None
        envelope = self._buffer.popleft()
        self._inflight[envelope.receipt.tag] = envelope
        return envelope

    async def fetch(self, max_items: int = 1) -> list[Envelope]:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"max_items must be a positive integer, got {max_items!r}")
        if self._closed:
            raise BrokerClosed("the broker is closed")
        if not self._started:
            await self.start()
        if self._buffer:
            return self._take(max_items)
        if not self._want_consume:
            self._want_consume = True
            session = self._session
            if session is not None and session.alive:
                await self._consume(session)
            if self._buffer:
                return self._take(max_items)
        waiter: asyncio.Future[list[Envelope]] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._unfetch(waiter.result())  # handed over as we were cancelled: give back
            elif not waiter.done():
                self._waiters.remove(waiter)
            raise

    def _take(self, n: int) -> list[Envelope]:
        batch: list[Envelope] = []
        buffer, inflight = self._buffer, self._inflight
        while buffer and len(batch) < n:
            envelope = buffer.popleft()
            inflight[envelope.receipt.tag] = envelope
            batch.append(envelope)
        return batch

    def _unfetch(self, envelopes: list[Envelope]) -> None:
        """Items handed to a consumer that was cancelled: back to the head of
        the buffer (still unacked at RabbitMQ), or to the next waiter."""
        for envelope in reversed(envelopes):
            if envelope.receipt.session == self._live and self._inflight.pop(envelope.receipt.tag, None):
                self._buffer.appendleft(envelope)
        while self._buffer and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(self._take(1))

    async def _consume(self, session: _Session) -> None:
        """Start consuming on ``session`` (once; concurrent callers share it)."""
        if session.consuming is None:
            session.consuming = asyncio.get_running_loop().create_task(self._start_consuming(session))
        try:
            await asyncio.shield(session.consuming)
        except self._transient as exc:
            self._session_lost(session, "consume", exc)

    async def _start_consuming(self, session: _Session) -> None:
        number = session.number

        async def on_delivery(message: Any) -> None:
            if number == self._live:
                self._on_delivery(number, message)

        ok = await session.consumer.basic_consume(self.name, on_delivery)
        session.consumer_tag = ok.consumer_tag

    def _on_delivery(self, number: int, message: Any) -> None:
        tag: int = message.delivery.delivery_tag
        self._order.append(tag)
        self._delta -= 1
        try:
            envelope = decode(message, Receipt(number, tag))
        except MalformedMessage as exc:
            self.malformed_total += 1
            self._log.warning("malformed", "src_pool.rabbitmq dead-letters a malformed message: %s", exc)
            self._spawn(self._dead_letter_malformed(number, tag, message, f"MalformedMessage: {exc}"))
            return
        if self._scheduled and self._scheduled.pop(envelope.id, None) is not None:
            self._delta += 1  # one of our retries, back from its retry queue: it was never in our count
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                self._inflight[tag] = envelope
                waiter.set_result([envelope])
                return
        self._buffer.append(envelope)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # -- settling -------------------------------------------------------------

    def ack(self, envelope: Envelope) -> None:
        receipt = envelope.receipt
        if receipt.__class__ is not Receipt:
            raise ValueError(f"cannot acknowledge item {envelope.id}: it was not delivered by this broker")
        if receipt.session != self._live:
            self.stale_total += 1  # its channel is gone: RabbitMQ has redelivered it
            return
        tag = receipt.tag
        if tag in self._settling or self._inflight.pop(tag, None) is None:
            raise ValueError(
                f"cannot acknowledge item {envelope.id}: it is not in flight "
                "(already acknowledged, retried, dead-lettered or released)"
            )
        self._to_ack.add(tag)
        self.acked_total += 1
        if self._sender is None:
            self._start_sender()

    def _start_sender(self) -> None:
        assert self._loop is not None
        self._sender = self._loop.create_task(self._send_settlements())

    async def _send_settlements(self) -> None:
        """Send nacks and rejects in order, then the acks: one ``multiple``
        ack for the longest settled prefix of deliveries, single acks for the
        rest. Everything settled while the previous frames were on their way
        goes in the next round, so acks cost a frame per burst, not per item."""
        try:
            await asyncio.sleep(0)  # let the acks of this loop iteration gather
            while (self._ops or self._to_ack) and not self._closed_for_settling():
                session = self._session
                assert session is not None
                channel = session.consumer
                # After every await: if the session ended meanwhile, its deliveries were forgotten
                # and the tags now name the next session's deliveries: touch nothing.
                try:
                    while self._ops:
                        verb, tag = self._ops.popleft()
                        if verb == "nack":
                            await channel.basic_nack(tag, requeue=True, wait=False)
                        else:
                            await channel.basic_reject(tag, requeue=False, wait=False)
                        if self._session is not session:
                            return
                        self._sent.add(tag)
                    order, to_ack, sent = self._order, self._to_ack, self._sent
                    last = None
                    while order and (order[0] in to_ack or order[0] in sent):
                        tag = order.popleft()
                        if tag in to_ack:
                            to_ack.discard(tag)
                            last = tag
                        else:
                            sent.discard(tag)
                    singles = sorted(to_ack)
                    to_ack.clear()
                    if last is not None:
                        await channel.basic_ack(last, multiple=True, wait=not singles)
                    for i, tag in enumerate(singles):
                        await channel.basic_ack(tag, wait=i == len(singles) - 1)
                        if self._session is not session:
                            return
                        sent.add(tag)
                except self._transient as exc:
                    self._session_lost(session, "acknowledge", exc)
                    return  # the deliveries are RabbitMQ's again
        finally:
            self._sender = None

    def _closed_for_settling(self) -> bool:
        session = self._session
        return session is None or not session.alive

    async def flush(self) -> None:
        """Wait until every buffered ack, nack and reject is written to RabbitMQ."""
        while (self._ops or self._to_ack or self._sender is not None) and not self._closed_for_settling():
            if self._sender is None:
                self._start_sender()
            assert self._sender is not None
            await asyncio.shield(self._sender)

    def _begin_settle(self, envelope: Envelope, verb: str) -> int | None:
        """The delivery tag to settle, None when its session is gone (then
        RabbitMQ has redelivered the item and there is nothing to do)."""
        receipt = envelope.receipt
        if receipt.__class__ is not Receipt:
            raise ValueError(f"cannot {verb} item {envelope.id}: it was not delivered by this broker")
        if receipt.session != self._live:
            self.stale_total += 1
            return None
        tag: int = receipt.tag
        if tag in self._settling or tag not in self._inflight:
            raise ValueError(
                f"cannot {verb} item {envelope.id}: it is not in flight "
                "(already acknowledged, retried, dead-lettered or released)"
            )
        self._settling.add(tag)
        return tag

    def _end_settle(self, number: int, tag: int, verb: str | None) -> None:
        """Settle ``tag`` with ``verb`` ("ack", "nack", "reject") if its session still lives."""
        if number != self._live:
            return  # forgotten with its session (the tag may name a delivery of the next one)
        self._settling.discard(tag)
        self._inflight.pop(tag, None)
        if verb == "ack":
            self._to_ack.add(tag)
        elif verb is not None:
            self._ops.append((verb, tag))
        if self._sender is None:
            self._start_sender()

    async def _republish(self, envelope: Envelope, tag: int, routing_key: str, props: Any, what: str,
                         exchange: str = "") -> None:  # fmt: skip
        """Publish a copy of a delivered item, then ack the delivery. If the
        copy cannot be confirmed, the delivery goes back to the queue at once
        (nack) instead of waiting, unacked, for the session to end."""
        number = envelope.receipt.session
        settled = False
        try:
            body = encode_payload(envelope.payload, max(self._max_bytes, 64 * 1024 * 1024))
            await self._publish(routing_key, body, props, what, self._deadline(), exchange=exchange)
            settled = True
        finally:
            self._end_settle(number, tag, "ack" if settled else "nack")
            if not settled and number == self._live:
                self._delta += 1

    async def retry(self, envelope: Envelope, *, delay: float, error: str) -> None:
        delay = check_timeout(delay, "retry delay") or 0.0
        ms = delay_ms(delay)
        tag = self._begin_settle(envelope, "retry")
        if tag is None:
            return
        headers = headers_of(envelope.enqueued_at, envelope.attempts, error)
        if ms < 1:
            props = properties(envelope.id, envelope.priority, headers)
            await self._republish(envelope, tag, self.name, props, "retry")
            self._delta += 1
        else:
            tier = tier_of(ms)
            try:
                await self._declare_tier(tier)
            except BaseException:
                self._end_settle(envelope.receipt.session, tag, "nack")
                raise
            props = properties(envelope.id, envelope.priority, headers, expiration_ms=ms)
            await self._republish(envelope, tag, self._topology.retry_queue(tier), props, "retry")
            self._schedule(envelope.id, delay)
        self.retried_total += 1

    async def _declare_tier(self, tier: int) -> None:
        deadline = self._deadline()
        while True:
            session = await self._wait_session(deadline, "declare a retry queue")
            if tier in session.tiers:
                return
            try:
                await self._topology.declare_retry_queue(session.admin, tier)
            except self._precondition as exc:
                raise BrokerError(explain_declare_error(self._topology, self._error_text(exc))) from None
            except self._transient as exc:
                self._session_lost(session, "declare a retry queue", exc)
                await asyncio.sleep(0)
                continue
            session.tiers.add(tier)
            return

    def _schedule(self, id_: str, delay: float) -> None:
        now = time.monotonic()
        self._prune_scheduled(now)
        self._scheduled[id_] = now + delay

    def _prune_scheduled(self, now: float) -> None:
        """Forget retries long overdue: another process took them."""
        grace = 2 * self._refresh_interval + 1.0
        if self._scheduled:
            for id_, due in list(self._scheduled.items()):
                if due + grace < now:
                    del self._scheduled[id_]

    async def dead_letter(self, envelope: Envelope, *, error: str) -> None:
        tag = self._begin_settle(envelope, "dead-letter")
        if tag is None:
            return
        headers = headers_of(envelope.enqueued_at, envelope.attempts, error)
        headers[H_DEAD_AT] = to_us(time.time())
        props = properties(envelope.id, envelope.priority, headers)
        await self._republish(
            envelope, tag, "", props, "dead-letter", exchange=self._topology.dead_letter_exchange
        )
        self.dead_lettered_total += 1

    async def _dead_letter_malformed(self, number: int, tag: int, message: Any, error: str) -> None:
        """Keep a message we cannot read, as it is, with the error that made
        it unreadable; if even that fails, reject it (the work queue's own
        dead-letter exchange keeps it, without the error)."""
        from pamqp.commands import Basic

        if number != self._live:
            return  # its session ended before this task ran: RabbitMQ has it back
        self._settling.add(tag)
        original = message.header.properties
        headers = {k: v for k, v in (original.headers or {}).items() if not k.startswith("x-")}
        headers[H_ERROR] = error[:MAX_ERROR_CHARS]
        headers[H_DEAD_AT] = to_us(time.time())
        props = Basic.Properties(
            content_type=original.content_type,
            content_encoding=original.content_encoding,
            delivery_mode=2,
            priority=original.priority,
            message_id=original.message_id or f"malformed-{os.urandom(8).hex()}",
            headers=headers,
        )
        verb = "reject"
        try:
            await self._publish(
                "", message.body, props, "dead-letter", self._deadline(),
                exchange=self._topology.dead_letter_exchange,
            )  # fmt: skip
            verb = "ack"
        except self._settle_errors:
            self._log.warning(
                "malformed-dlx", "src_pool.rabbitmq could not dead-letter a malformed message; rejecting it"
            )
        finally:
            self._end_settle(number, tag, verb)
        self.dead_lettered_total += 1

    async def release(self, envelopes: Sequence[Envelope]) -> None:
        """Back to their places at the head of the queue (basic.nack with
        requeue: RabbitMQ puts a requeued message back where it was), without
        counting an attempt. The prefetch buffer goes back with them: it holds
        the items that came after them, which must not overtake them."""
        tags: list[int] = []
        try:
            for envelope in envelopes:
                tag = self._begin_settle(envelope, "release")
                if tag is not None:
                    tags.append(tag)
        except ValueError:
            self._settling.difference_update(tags)
            raise
        for tag in tags:
            self._end_settle(self._live, tag, "nack")
        self._delta += len(tags)
        self.released_total += len(tags)
        if tags and self._buffer:
            self._return_buffer()

    def _return_buffer(self) -> None:
        """Nack every buffered delivery back to its place in the queue."""
        for envelope in self._buffer:
            self._ops.append(("nack", envelope.receipt.tag))
        self._delta += len(self._buffer)
        self._buffer.clear()
        if self._sender is None:
            self._start_sender()

    # -- inspection -----------------------------------------------------------

    def _estimate(self) -> int:
        return max(0, self._depth_base + self._delta)

    def _set_depth(self, ready: int, consumers: int) -> None:
        self._depth_base = int(ready)
        self._delta = 0
        self._consumers = int(consumers)
        self._depth_at = time.monotonic()

    async def _refresh_depth(self) -> int | None:
        """Read the queue's ready count and consumers now (passive declare)."""
        session = self._session
        if session is None or not session.alive:
            return None
        before = self._delta
        try:
            declared = await session.admin.queue_declare(self.name, passive=True)
        except self._transient as exc:
            self._session_lost(session, "passive declare", exc)
            return None
        if self._delta == before:  # nothing moved meanwhile: the count is ours to take
            self._set_depth(declared.message_count, declared.consumer_count)
        else:
            self._consumers = int(declared.consumer_count)
        return int(declared.message_count)

    async def _refresh_loop(self) -> None:
        """Refresh the depth every ``refresh_interval``; on close, finish the
        passive declare in progress rather than be cancelled in it (aiormq
        closes a channel whose RPC was cancelled, and says so in the log)."""
        stopping = self._stopping
        assert stopping is not None
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._refresh_interval)
            if stopping.is_set():
                return
            try:
                await self._refresh_depth()
            except Exception:
                self._log.exception("refresh", "src_pool.rabbitmq depth refresh failed on %s", self.url)

    def depth(self) -> int | None:
        """Ready items: the last passive declare plus what this process put,
        released and took since. No I/O: safe from the monitor's thread.
        None while disconnected, or when the last refresh is older than three
        ``refresh_interval``."""
        at = self._depth_at
        if at is None or time.monotonic() - at > 3 * self._refresh_interval:
            return None
        return max(0, self._depth_base + self._delta)

    @property
    def consumers(self) -> int | None:
        """Consumers of the queue (every process), as of the last refresh."""
        return self._consumers

    @property
    def in_flight(self) -> int:
        """Items this broker handed out and that are not settled yet."""
        return len(self._inflight)

    @property
    def buffered(self) -> int:
        """Items delivered by RabbitMQ and not yet taken by a worker."""
        return len(self._buffer)

    @property
    def delayed(self) -> int:
        """Retries this broker scheduled that have not come back yet (those
        another process took are forgotten once overdue)."""
        if self._scheduled:
            self._prune_scheduled(time.monotonic())
        return len(self._scheduled)

    async def counts(self) -> RabbitCounts:
        """Ready, delayed and dead messages and consumers, read now (passive
        declares on a channel of their own: a retry queue that was never
        declared closes it, and counts 0)."""
        import aiormq.exceptions as amqp

        await self.start()
        session = await self._wait_session(self._deadline(), "count")
        channel = None
        try:
            channel = await session.connection.channel()
            raw = await channel.get_underlay_channel()
            main = await raw.queue_declare(self.name, passive=True)
            dead = await raw.queue_declare(self._topology.dead_queue, passive=True)
            delayed = 0
            for tier in range(MAX_TIER + 1):
                try:
                    declared = await raw.queue_declare(self._topology.retry_queue(tier), passive=True)
                    delayed += declared.message_count
                except amqp.ChannelNotFoundEntity:
                    channel = await session.connection.channel()
                    raw = await channel.get_underlay_channel()
            return RabbitCounts(main.message_count, delayed, dead.message_count, main.consumer_count)
        finally:
            if channel is not None and not channel.is_closed:
                await channel.close()

    async def dead_letters(self, limit: int = 100) -> list[RabbitDeadLetter]:
        """The oldest ``limit`` dead letters, read without removing them
        (basic.get, then the channel closes and RabbitMQ requeues them)."""
        check_positive_int(limit, "limit")
        await self.start()
        session = await self._wait_session(self._deadline(), "read dead letters")
        channel = await session.connection.channel()
        out: list[RabbitDeadLetter] = []
        try:
            raw = await channel.get_underlay_channel()
            for _ in range(limit):
                message = await raw.basic_get(self._topology.dead_queue, no_ack=False)
                if message.delivery_tag is None:  # Basic.GetEmpty
                    break
                headers = message.header.properties.headers or {}
                error = headers.get(H_ERROR, "")
                error = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
                at = headers.get(H_DEAD_AT)
                at = at / 1_000_000 if isinstance(at, int) and not isinstance(at, bool) else 0.0
                try:
                    envelope: Envelope | None = decode(message, None)
                except MalformedMessage:
                    envelope = None
                out.append(RabbitDeadLetter(error, at, message.body, envelope))
        finally:
            await channel.close()
        return out

    async def delete(self) -> None:
        """Close, then delete the queue, its retry and dead-letter queues and
        its exchange, with every message in them (on a connection of its
        own). For tests, benches and teardown scripts."""
        await self.close()
        aio_pika = import_aio_pika()
        connection = await aio_pika.connect(
            self._url, timeout=min(self._connect_timeout, 10.0), **self._options
        )
        try:
            channel = await connection.channel()
            await self._topology.delete(await channel.get_underlay_channel())
        finally:
            await self._close_quietly(connection)

    # -- stopping -------------------------------------------------------------

    async def close(self) -> None:
        """Stop consuming, wake waiters with :class:`BrokerClosed`, give the
        prefetch buffer back to the head of the queue, send buffered acks,
        and disconnect. Items the pool still holds unsettled go back to the
        queue when the channel closes (RabbitMQ redelivers them)."""
        if self._closed:
            return
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(BrokerClosed("the broker was closed while a consumer waited"))
        self._waiters.clear()
        for room in self._room_waiters:
            if not room.done():
                room.set_exception(BrokerClosed("the broker was closed while a producer waited for room"))
        self._room_waiters.clear()
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if not self._started:
            return
        session = self._session
        if session is not None and session.alive:
            try:
                async with asyncio.timeout(5.0):
                    if session.consumer_tag is not None:
                        await session.consumer.basic_cancel(session.consumer_tag)
                    if self._side_tasks:
                        await asyncio.wait(set(self._side_tasks))
                    self._return_buffer()
                    await self.flush()
            except self._transient as exc:
                self._log.warning(
                    "close", "src_pool.rabbitmq could not tidy up on close (%s): RabbitMQ requeues the rest",
                    self._error_text(exc),
                )  # fmt: skip
        self._live = -1
        if self._stopping is not None:
            self._stopping.set()
        if self._refresher is not None:
            await asyncio.wait([self._refresher], timeout=2.0)
        tasks = [
            task
            for task in (self._supervisor, self._refresher, self._room_task, self._sender, *self._side_tasks)
            if task is not None and not task.done()
        ]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for ended in {session, self._session}:  # the supervisor may have opened one meanwhile
            if ended is not None:
                self._end_session(ended)
                await self._close_quietly(ended.connection)
