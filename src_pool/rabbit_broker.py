"""The RabbitMQ broker: the pool on a message broker, with the same guarantees.

It keeps the contract of :mod:`src_pool.broker` on RabbitMQ 3.8 or later
through aio-pika (``pip install 'qhealth[rabbitmq]'``); the queues it uses
are described in :mod:`src_pool.rabbit_topology`, its connection in
:mod:`src_pool.rabbit_session`.

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
    a loss. Deliveries in flight are keyed by delivery tag, never by item id.

Backpressure from the broker
    ``basic.qos`` prefetch is the number of items this process may hold
    unacknowledged, and defaults to ``concurrency`` (pass the pool's): once
    every worker holds an item, RabbitMQ stops delivering until one is
    acked. No local queue grows, and other processes get the rest.
    Producers wait at the high watermark in
    :class:`~src_pool.backpressure.Watermarks`, which re-reads the depth
    (a passive declare, jittered, one reader for all of them).

Priorities and order
    ``x-max-priority`` 9: higher priorities are delivered first, FIFO
    within a priority (among the items waiting in RabbitMQ; the few a
    process already holds are not overtaken). A released item
    (:meth:`RabbitBroker.release`, basic.nack with requeue) goes back to its
    original place, at the head, and the prefetch buffer goes back with it
    so that nothing behind it overtakes it.

Round trips per burst, never per item
    Acks are buffered and sent once per event-loop turn
    (:mod:`src_pool.rabbit_acks`). ``put_many`` sends up to 500 publishes,
    and at most ``max_batch_bytes``, in one write, each with its own confirm
    (:mod:`src_pool.rabbit_publish`). Deliveries are pushed by RabbitMQ
    (``basic.consume``): an idle consumer does not poll (the one periodic
    round trip is the depth refresh, once per ``refresh_interval`` per
    process), and a process that only produces never consumes. A worker
    waiting in ``fetch(max_items)`` is handed up to ``max_items`` of what
    arrived.

Retries and dead letters
    :meth:`RabbitBroker.retry` publishes the item, its attempt counted and its
    error attached, to a retry queue with a per-message TTL, which RabbitMQ
    dead-letters back to the work queue when it expires (delay tiers keep a
    short delay from waiting behind a long one). :meth:`RabbitBroker.dead_letter`
    and messages that cannot be decoded (not JSON, nested too deeply, bad
    headers: whatever the error) go to the dead-letter exchange and its
    bounded queue, with the error in a header.

Reconnects
    A lost connection (or a channel closed by an error) ends the *session*:
    items buffered or in flight in it are RabbitMQ's again (it redelivers
    them: at least once), and settling one of them later is skipped and
    counted (``stats.stale_total``). The broker reconnects with exponential
    backoff and full jitter, declares its queues again, and resumes
    consuming; blocked consumers keep waiting, puts wait for the new session
    (up to ``connect_timeout``) and publish again a message whose confirm was
    lost. A refused login fails at once (:class:`~src_pool.AuthenticationFailed`).

Long jobs
    RabbitMQ closes a channel whose delivery stays unacknowledged past its
    ``consumer_timeout`` (30 min by default), and every item in flight comes
    back: a job that always runs longer loops for ever. The broker logs what
    happened naming the setting, counts it (``stats.consumer_timeouts_total``),
    and with ``consumer_timeout=`` sets the queue's own timeout
    (``x-consumer-timeout``, RabbitMQ 3.12 or later; an older server is a
    clear error at start, naming the rabbitmq.conf setting to raise instead).

Instrumentation
    :meth:`RabbitBroker.depth` is computed without I/O (:mod:`src_pool.rabbit_depth`);
    :attr:`RabbitBroker.consumers` is the consumer count of the last refresh.
    The shared rate limit stays on Redis (:mod:`src_pool.redis_limiter`):
    RabbitMQ has nothing like an atomic token bucket that many processes
    could draw from.

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
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .backpressure import Watermarks
from .batches import DEFAULT_MAX_BATCH_BYTES, chunks
from .broker import (
    MAX_PRIORITY,
    Broker,
    BrokerClosed,
    BrokerError,
    Envelope,
    check_positive_int,
    check_priority,
    check_timeout,
)
from .broker_stats import BrokerStats
from .deliveries import Deliveries
from .rabbit_acks import Settlements
from .rabbit_connect import check_url, import_aio_pika
from .rabbit_depth import DepthEstimate
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
from .rabbit_publish import Message
from .rabbit_session import Session, Sessions, close_quietly
from .rabbit_topology import MAX_TIER, Topology, check_name, delay_ms, explain_declare_error, tier_of
from .redact import redact_url
from .throttled_log import ThrottledLog

logger = logging.getLogger("src_pool.rabbitmq")

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_DEAD_LETTER_LIMIT = 10_000
#: Messages per write, awaiting their confirms together, in :meth:`RabbitBroker.put_many`.
PUBLISH_WINDOW = 500
#: Producers blocked at the high watermark re-read the depth this often (jittered).
ROOM_POLL_S = 0.2


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


class RabbitBroker(Broker):
    """A reliable queue on RabbitMQ shared by any number of processes.

    ``name`` names the queue (see :mod:`src_pool.rabbit_topology` for the
    others). ``concurrency``: the workers of the pool in this process, and the
    default ``prefetch`` (items held unacknowledged at once). ``capacity``:
    the high watermark of waiting items (None: unbounded), ``low_watermark``
    where blocked producers resume (default half). ``dead_letter_limit``
    bounds the dead-letter queue. ``max_batch_bytes`` bounds one write of
    ``put_many``. ``refresh_interval``: seconds between two passive declares
    that refresh :meth:`depth`. ``connect_timeout``: how long :meth:`start`,
    a put or a settle waits for a connection before :class:`RabbitUnavailable`.
    ``consumer_timeout``: seconds a delivery may stay unacknowledged before
    RabbitMQ closes the channel, set on the queue (RabbitMQ 3.12 or later;
    None: the server's own setting). ``connection_options`` go to
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
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        dead_letter_limit: int = DEFAULT_DEAD_LETTER_LIMIT,
        refresh_interval: float = 1.0,
        connect_timeout: float = 30.0,
        consumer_timeout: float | None = None,
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
        self._gate = Watermarks.for_capacity(capacity, low_watermark, name=name)
        check_positive_int(max_payload_bytes, "max_payload_bytes")
        check_positive_int(max_batch_bytes, "max_batch_bytes")
        check_positive_int(dead_letter_limit, "dead_letter_limit")
        refresh = check_timeout(refresh_interval, "refresh_interval")
        if not refresh or refresh < 0.01:
            raise ValueError(f"refresh_interval must be at least 0.01 s, got {refresh_interval!r}")
        connect = check_timeout(connect_timeout, "connect_timeout")
        if not connect:
            raise ValueError(f"connect_timeout must be positive, got {connect_timeout!r}")
        timeout_ms = None
        if consumer_timeout is not None:
            seconds = check_timeout(consumer_timeout, "consumer_timeout")
            if not seconds or seconds < 1:
                raise ValueError(f"consumer_timeout must be at least 1 s, got {consumer_timeout!r}")
            timeout_ms = round(seconds * 1000)

        self.name = name
        self.concurrency = concurrency
        self.prefetch = concurrency if prefetch is None else prefetch
        self._topology = Topology(name, dead_letter_limit, timeout_ms)
        self._capacity = capacity
        self._max_bytes = max_payload_bytes
        self._max_batch_bytes = max_batch_bytes
        self._refresh_interval = refresh
        self._connect_timeout = connect
        self._clock = clock
        self._ids = 0
        self._id_prefix = os.urandom(6).hex() + "-"
        self._log = ThrottledLog(10.0, log=logger)
        self.stats = BrokerStats()
        self._sessions = Sessions(
            self._url,
            self._topology,
            prefetch=self.prefetch,
            connect_timeout=connect,
            options=dict(connection_options or {}),
            stats=self.stats,
            opened=self._session_opened,
            ended=self._session_ended,
        )
        self._settle_errors: tuple[type[BaseException], ...] = ()

        self._starting: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._stopping: asyncio.Event | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._want_consume = False
        self._deliveries = Deliveries()
        self._serving = False
        self._acks = Settlements(lambda: self._sessions.current, self._sessions.lost, lambda: self._transient)
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._depth = DepthEstimate(refresh)

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

    @property
    def _transient(self) -> tuple[type[BaseException], ...]:
        return self._sessions.transient

    @property
    def _live(self) -> int:
        return self._sessions.live

    # -- connecting -------------------------------------------------------------

    async def start(self) -> None:
        """Connect and declare the queues. Idempotent; concurrent callers share
        one attempt. :class:`RabbitUnavailable` after ``connect_timeout``,
        :class:`~src_pool.AuthenticationFailed` at once."""
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
        self._stopping = asyncio.Event()
        await self._sessions.open()
        self._settle_errors = (BrokerError, *self._transient)
        self._started = True
        self._refresher = asyncio.get_running_loop().create_task(
            self._refresh_loop(), name=f"src_pool.rabbitmq depth {self.name}"
        )

    async def _session_opened(self, session: Session, ready: int, consumers: int) -> None:
        self._forget_deliveries()
        self._depth.read(ready, consumers)
        if self._want_consume:
            await self._consume(session)

    def _session_ended(self, _: Session) -> None:
        self._depth.at = None
        self._forget_deliveries()

    def _forget_deliveries(self) -> None:
        """Forget the deliveries of a lost session: RabbitMQ has them back."""
        self._deliveries.clear()
        self._acks.reset()

    def _deadline(self, timeout: float | None = None) -> float:
        limit = self._connect_timeout if timeout is None else min(timeout, self._connect_timeout)
        return time.monotonic() + max(limit, 1.0)

    async def _publish(self, routing_key: str, body: bytes, props: Any, what: str, deadline: float,
                       exchange: str = "") -> None:  # fmt: skip
        await self._sessions.publish([Message(exchange, routing_key, body, props)], what, deadline)

    # -- producing ------------------------------------------------------------

    def _message(self, payload: Any, priority: int) -> tuple[Envelope, bytes, Any]:
        if type(priority) is not int or not 0 <= priority <= MAX_PRIORITY:
            check_priority(priority)
        body = encode_payload(payload, self._max_bytes)
        self._ids += 1
        envelope = Envelope(f"{self._id_prefix}{self._ids}", payload, 0, priority, self._clock())
        props = properties(envelope.id, priority, headers_of(envelope.enqueued_at, 0, None))
        return envelope, body, props

    async def put(self, payload: Any, *, priority: int = 0, timeout: float | None = None) -> Envelope:
        envelope, body, props = self._message(payload, priority)
        check_timeout(timeout)
        if self._closed:
            raise BrokerClosed("the broker is closed: it accepts no more items")
        await self.start()
        await self._wait_for_room(timeout)
        await self._publish(self.name, body, props, "put", self._deadline(timeout))
        self.stats.put_total += 1
        self._depth.delta += 1
        return envelope

    async def put_many(
        self, payloads: Iterable[Any], *, priority: int = 0, timeout: float | None = None
    ) -> list[Envelope]:
        """Enqueue in order, with up to 500 publishes and ``max_batch_bytes``
        awaiting their confirms at once. Every payload is checked before the
        first is sent."""
        check_timeout(timeout)
        made = [self._message(p, priority) for p in payloads]
        if self._closed:
            raise BrokerClosed("the broker is closed: it accepts no more items")
        await self.start()
        for chunk in chunks(made, lambda m: len(m[1]), PUBLISH_WINDOW, self._max_batch_bytes):
            await self._wait_for_room(timeout)
            messages = [Message("", self.name, body, props) for _, body, props in chunk]
            await self._sessions.publish(messages, "put", self._deadline(timeout))
            self.stats.put_total += len(chunk)
            self._depth.delta += len(chunk)
        return [envelope for envelope, _, _ in made]

    async def _wait_for_room(self, timeout: float | None) -> None:
        """Pass while the queue is below its high watermark; when the estimate
        says it is not, ask RabbitMQ, and wait in the gate if it agrees."""
        gate = self._gate
        if gate is None:
            return
        if not gate.blocked:
            if self._depth.estimate() < gate.high:
                return
            depth = await self._refresh_depth()
            if depth is None or depth < gate.high:
                return
            gate.blocked = True
        await gate.wait_for_room(self.depth, timeout, remote=self._read_room)

    async def _read_room(self) -> int | None:
        """The depth for blocked producers: read after a jittered pause."""
        await asyncio.sleep(ROOM_POLL_S * random.uniform(0.5, 1.5))
        return await self._refresh_depth()

    # -- consuming ------------------------------------------------------------

    def get_nowait(self) -> Envelope | None:
        if self._closed:
            return None
        return self._deliveries.get_nowait()

    async def fetch(self, max_items: int = 1) -> list[Envelope]:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"max_items must be a positive integer, got {max_items!r}")
        if self._closed:
            raise BrokerClosed("the broker is closed")
        if not self._started:
            await self.start()
        if not self._deliveries.buffer and not self._want_consume:
            self._want_consume = True
            session = self._sessions.current
            if session is not None and session.alive:
                await self._consume(session)
        if self._deliveries.buffer:
            return self._deliveries.take(max_items)
        return await self._deliveries.wait(max_items, lambda: None)

    async def _consume(self, session: Session) -> None:
        """Start consuming on ``session`` (once; concurrent callers share it)."""
        if session.consuming is None:
            session.consuming = asyncio.get_running_loop().create_task(self._start_consuming(session))
        try:
            await asyncio.shield(session.consuming)
        except self._transient as exc:
            self._sessions.lost(session, "consume", exc)

    async def _start_consuming(self, session: Session) -> None:
        number = session.number

        async def on_delivery(message: Any) -> None:
            if number == self._live:
                self._on_delivery(number, message)

        ok = await session.consumer.basic_consume(self.name, on_delivery)
        session.consumer_tag = ok.consumer_tag

    def _on_delivery(self, number: int, message: Any) -> None:
        tag: int = message.delivery.delivery_tag
        self._acks.delivered(tag)
        self._depth.delta -= 1
        try:
            envelope = decode(message, Receipt(number, tag))
        except MalformedMessage as exc:
            self.stats.malformed_total += 1
            self._log.warning("malformed", "src_pool.rabbitmq dead-letters a malformed message: %s", exc)
            self._spawn(self._dead_letter_malformed(number, tag, message, f"MalformedMessage: {exc}"))
            return
        if self._depth.came_back(envelope.id):
            self._depth.delta += 1  # one of our retries: it was never in our count
        self._deliveries.buffer.append(envelope)
        if self._deliveries.waiters and not self._serving:
            # Serve once the deliveries that arrived together are all buffered:
            # each waiting worker then gets up to the max_items it asked for.
            self._serving = True
            asyncio.get_running_loop().call_soon(self._serve)

    def _serve(self) -> None:
        self._serving = False
        self._deliveries.serve()

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # -- settling -------------------------------------------------------------

    def _receipt(self, envelope: Envelope, verb: str) -> Receipt | None:
        """The delivery to settle, None when its session is gone (RabbitMQ
        has redelivered the item: counted as stale, nothing to do)."""
        receipt = envelope.receipt
        if receipt.__class__ is not Receipt:
            raise ValueError(f"cannot {verb} item {envelope.id}: it was not delivered by this broker")
        if receipt.session != self._live:
            self.stats.stale_total += 1
            return None
        return receipt

    def ack(self, envelope: Envelope) -> None:
        receipt = self._receipt(envelope, "acknowledge")
        if receipt is None:
            return
        self._deliveries.settle(envelope, "acknowledge")
        self._acks.ack(receipt.tag)
        self.stats.acked_total += 1

    async def flush(self) -> None:
        """Wait until every buffered ack, nack and reject is written to RabbitMQ."""
        await self._acks.flush()

    def _end_settle(self, envelope: Envelope, verb: str) -> None:
        """Settle with ``verb`` ("ack", "nack") if the delivery's session still lives."""
        receipt = envelope.receipt
        if receipt.session != self._live:
            return  # forgotten with its session (the tag may name a delivery of the next one)
        self._deliveries.end(envelope)
        if verb == "ack":
            self._acks.ack(receipt.tag)
        else:
            self._acks.nack(receipt.tag)
            self._depth.delta += 1

    async def _republish(self, envelope: Envelope, routing_key: str, props: Any, what: str,
                         exchange: str = "") -> None:  # fmt: skip
        """Publish a copy of a delivered item, then ack the delivery. If the
        copy cannot be confirmed, the delivery goes back to the queue at once
        (nack) instead of waiting, unacked, for the session to end."""
        settled = False
        try:
            body = encode_payload(envelope.payload, max(self._max_bytes, 64 * 1024 * 1024))
            await self._publish(routing_key, body, props, what, self._deadline(), exchange=exchange)
            settled = True
        finally:
            self._end_settle(envelope, "ack" if settled else "nack")

    async def retry(self, envelope: Envelope, *, delay: float, error: str) -> None:
        delay = check_timeout(delay, "retry delay") or 0.0
        ms = delay_ms(delay)
        if self._receipt(envelope, "retry") is None:
            return
        self._deliveries.begin(envelope, "retry")
        headers = headers_of(envelope.enqueued_at, envelope.attempts, error)
        if ms < 1:
            props = properties(envelope.id, envelope.priority, headers)
            await self._republish(envelope, self.name, props, "retry")
            self._depth.delta += 1
        else:
            tier = tier_of(ms)
            try:
                await self._declare_tier(tier)
            except BaseException:
                self._end_settle(envelope, "nack")
                raise
            props = properties(envelope.id, envelope.priority, headers, expiration_ms=ms)
            await self._republish(envelope, self._topology.retry_queue(tier), props, "retry")
            self._depth.schedule(envelope.id, delay)
        self.stats.retried_total += 1

    async def _declare_tier(self, tier: int) -> None:
        deadline = self._deadline()
        while True:
            session = await self._sessions.wait(deadline, "declare a retry queue")
            if tier in session.tiers:
                return
            try:
                await self._topology.declare_retry_queue(session.admin, tier)
            except self._sessions.precondition as exc:
                raise BrokerError(
                    explain_declare_error(self._topology, self._sessions.error_text(exc))
                ) from None
            except self._transient as exc:
                self._sessions.lost(session, "declare a retry queue", exc)
                await asyncio.sleep(0)
                continue
            session.tiers.add(tier)
            return

    async def dead_letter(self, envelope: Envelope, *, error: str) -> None:
        if self._receipt(envelope, "dead-letter") is None:
            return
        self._deliveries.begin(envelope, "dead-letter")
        headers = headers_of(envelope.enqueued_at, envelope.attempts, error)
        headers[H_DEAD_AT] = to_us(time.time())
        props = properties(envelope.id, envelope.priority, headers)
        await self._republish(
            envelope, "", props, "dead-letter", exchange=self._topology.dead_letter_exchange
        )
        self.stats.dead_lettered_total += 1

    async def _dead_letter_malformed(self, number: int, tag: int, message: Any, error: str) -> None:
        """Keep a message we cannot read, as it is, with the error that made
        it unreadable; if even that fails, reject it (the work queue's own
        dead-letter exchange keeps it, without the error)."""
        from pamqp.commands import Basic

        if number != self._live:
            return  # its session ended before this task ran: RabbitMQ has it back
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
        kept = False
        try:
            await self._publish(
                "", message.body, props, "dead-letter", self._deadline(),
                exchange=self._topology.dead_letter_exchange,
            )  # fmt: skip
            kept = True
        except self._settle_errors:
            self._log.warning(
                "malformed-dlx", "src_pool.rabbitmq could not dead-letter a malformed message; rejecting it"
            )
        finally:
            if number == self._live:
                if kept:
                    self._acks.ack(tag)
                else:
                    self._acks.reject(tag)
        self.stats.dead_lettered_total += 1

    async def release(self, envelopes: Sequence[Envelope]) -> None:
        """Back to their places at the head of the queue (basic.nack with
        requeue: RabbitMQ puts a requeued message back where it was), without
        counting an attempt. The prefetch buffer goes back with them: it holds
        the items that came after them, which must not overtake them."""
        live = [e for e in envelopes if self._receipt(e, "release") is not None]
        self._deliveries.begin_all(live, "release")
        for envelope in live:
            self._end_settle(envelope, "nack")
        self.stats.released_total += len(live)
        if live and self._deliveries.buffer:
            self._return_buffer()

    def _return_buffer(self) -> None:
        """Nack every buffered delivery back to its place in the queue."""
        buffer = self._deliveries.buffer
        for envelope in buffer:
            self._acks.nack(envelope.receipt.tag)
        self._depth.delta += len(buffer)
        buffer.clear()

    # -- inspection -----------------------------------------------------------

    async def _refresh_depth(self) -> int | None:
        """Read the queue's ready count and consumers now (passive declare)."""
        session = self._sessions.current
        if session is None or not session.alive:
            return None
        before = self._depth.delta
        try:
            declared = await session.admin.queue_declare(self.name, passive=True)
        except self._transient as exc:
            self._sessions.lost(session, "passive declare", exc)
            return None
        if self._depth.delta == before:  # nothing moved meanwhile: the count is ours to take
            self._depth.read(declared.message_count, declared.consumer_count)
        else:
            self._depth.consumers = int(declared.consumer_count)
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
        return self._depth.value()

    @property
    def consumers(self) -> int | None:
        """Consumers of the queue (every process), as of the last refresh."""
        return self._depth.consumers

    @property
    def in_flight(self) -> int:
        """Items this broker handed out and that are not settled yet."""
        return len(self._deliveries.inflight)

    @property
    def buffered(self) -> int:
        """Items delivered by RabbitMQ and not yet taken by a worker."""
        return len(self._deliveries.buffer)

    @property
    def delayed(self) -> int:
        """Retries this broker scheduled that have not come back yet (those
        another process took are forgotten once overdue)."""
        return self._depth.delayed()

    async def counts(self) -> RabbitCounts:
        """Ready, delayed and dead messages and consumers, read now (passive
        declares on a channel of their own: a retry queue that was never
        declared closes it, and counts 0)."""
        import aiormq.exceptions as amqp

        await self.start()
        session = await self._sessions.wait(self._deadline(), "count")
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
        session = await self._sessions.wait(self._deadline(), "read dead letters")
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
            self._url, timeout=min(self._connect_timeout, 10.0), **self._sessions.options
        )
        try:
            channel = await connection.channel()
            await self._topology.delete(await channel.get_underlay_channel())
        finally:
            await close_quietly(connection)

    # -- stopping -------------------------------------------------------------

    async def close(self) -> None:
        """Stop consuming, wake waiters with :class:`BrokerClosed`, give the
        prefetch buffer back to the head of the queue, send buffered acks,
        and disconnect. Items the pool still holds unsettled go back to the
        queue when the channel closes (RabbitMQ redelivers them)."""
        if self._closed:
            return
        self._closed = True
        self._deliveries.fail_waiters(BrokerClosed("the broker was closed while a consumer waited"))
        if self._gate is not None:
            self._gate.close()
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if not self._started:
            return
        session = self._sessions.current
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
                    self._sessions.error_text(exc),
                )  # fmt: skip
        self._sessions.live = -1  # from here on, a late settle touches nothing
        if self._stopping is not None:
            self._stopping.set()
        if self._refresher is not None:
            await asyncio.wait([self._refresher], timeout=2.0)
        tasks = [
            task
            for task in (self._refresher, self._acks.sender, *self._side_tasks)
            if task is not None and not task.done()
        ]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await self._sessions.close(also=session)
