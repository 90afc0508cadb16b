"""The RabbitMQ broker: the pool on a message broker, with the same guarantees.

It keeps the contract of :mod:`src_pool.broker` on RabbitMQ 3.8 or later
through aio-pika (``pip install 'qhealth[rabbitmq]'``); its queues are
described in :mod:`src_pool.rabbit_topology`, its connection in
:mod:`src_pool.rabbit_session`. ``docs/pool.md`` says why each part is so,
``docs/reliability.md`` what is guaranteed.

::

    broker = RabbitBroker("amqp://app:secret@mq:5672/", "jobs", concurrency=20)
    async with broker, Pool(handle, broker=broker, concurrency=20) as pool:
        await pool.submit({"user": 42})

* Manual acks and publisher confirms: an item stays unacknowledged until the
  pool settles it, and comes back the moment its channel closes; a retried or
  dead-lettered item is acked only after its copy is confirmed.
* ``basic.qos`` prefetch (default: ``concurrency``) is the backpressure on
  consumers; producers wait at the high watermark in
  :class:`~src_pool.backpressure.Watermarks`, re-reading the depth.
* A quorum queue by default (deliveries counted: a poison item is
  dead-lettered after ``delivery_limit`` returns; no priorities before
  RabbitMQ 4.0), or a classic one with priorities 0-9
  (``x-max-priority``); on a classic queue a released item goes back to its place
  at the head, with the prefetch buffer behind it.
* Retries wait in TTL retry queues, one per power-of-two delay band; dead
  letters, and any message that fails to decode, go to the dead-letter queue
  with their error.
* A lost session is replaced whole; settles of its deliveries are skipped and
  counted stale (RabbitMQ redelivers them). A refused login fails at once.
* RabbitMQ's ``consumer_timeout`` closing a long job's channel is logged by
  name and counted; ``consumer_timeout=`` sets the queue's own (3.12+).
* :meth:`RabbitBroker.depth` costs no I/O (:mod:`src_pool.rabbit_depth`).
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

from .batches import DEFAULT_MAX_BATCH_BYTES, chunks
from .broker import (
    BrokerClosed,
    BrokerError,
    Envelope,
    check_positive_int,
    check_timeout,
)
from .networked import NetworkedBroker
from .rabbit_acks import Settlements
from .rabbit_connect import check_url, import_aio_pika
from .rabbit_depth import DepthEstimate
from .rabbit_inspect import RabbitCounts, RabbitDeadLetter, read_counts, read_dead_letters
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
from .rabbit_topology import (
    DEFAULT_DELIVERY_LIMIT,
    Topology,
    check_name,
    check_queue_type,
    delay_ms,
    explain_declare_error,
    tier_of,
)
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


class RabbitBroker(NetworkedBroker):
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
    None: the server's own setting). ``queue_type``: "quorum" (the default:
    deliveries counted, a poison item dead-lettered after ``delivery_limit``
    returns; no priorities before RabbitMQ 4.0) or "classic" (ten priority
    levels, no delivery count). ``connection_options`` go to
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
        queue_type: str = "quorum",
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        connection_options: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_name(name)
        super().__init__(
            check_url(url),
            name,
            capacity=capacity,
            low_watermark=low_watermark,
            max_payload_bytes=max_payload_bytes,
            max_batch_bytes=max_batch_bytes,
            dead_letter_limit=dead_letter_limit,
            connect_timeout=connect_timeout,
            clock=clock,
        )
        check_positive_int(concurrency, "concurrency")
        if prefetch is not None:
            check_positive_int(prefetch, "prefetch")
            if prefetch > 65_535:
                raise ValueError(f"prefetch must be at most 65535 (basic.qos), got {prefetch}")
        refresh = check_timeout(refresh_interval, "refresh_interval")
        if not refresh or refresh < 0.01:
            raise ValueError(f"refresh_interval must be at least 0.01 s, got {refresh_interval!r}")
        timeout_ms = None
        if consumer_timeout is not None:
            seconds = check_timeout(consumer_timeout, "consumer_timeout")
            if not seconds or seconds < 1:
                raise ValueError(f"consumer_timeout must be at least 1 s, got {consumer_timeout!r}")
            timeout_ms = round(seconds * 1000)
        self.concurrency = concurrency
        self.prefetch = concurrency if prefetch is None else prefetch
        kind, limit = check_queue_type(queue_type, delivery_limit)
        self._topology = Topology(name, dead_letter_limit, timeout_ms, kind, limit)
        self._refresh_interval = refresh
        self._log = ThrottledLog(10.0, log=logger)
        self._sessions = Sessions(
            self._url,
            self._topology,
            prefetch=self.prefetch,
            connect_timeout=self._connect_timeout,
            options=dict(connection_options or {}),
            stats=self.stats,
            opened=self._session_opened,
            ended=self._session_ended,
        )
        self._settle_errors: tuple[type[BaseException], ...] = ()

        self._starting: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._want_consume = False
        self._serving = False
        self._acks = Settlements(lambda: self._sessions.current, self._sessions.lost, lambda: self._transient)
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._depth = DepthEstimate(refresh)

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

    async def _publish(self, routing_key: str, body: bytes, props: Any, what: str, deadline: float,
                       exchange: str = "") -> None:  # fmt: skip
        await self._sessions.publish([Message(exchange, routing_key, body, props)], what, deadline)

    # -- producing ------------------------------------------------------------

    def _message(self, payload: Any, priority: int) -> tuple[Envelope, bytes, Any]:
        body = encode_payload(payload, self._max_bytes)
        envelope = self._envelope(payload, priority)
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

    async def fetch(self, max_items: int = 1) -> list[Envelope]:
        buffered = await self._fetch_start(max_items)
        if buffered is not None:
            return buffered
        if not self._want_consume:
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
            self._no_longer_held(1, verb, "its channel was lost, and RabbitMQ took its deliveries back")
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
    def delayed(self) -> int:
        """Retries this broker scheduled that have not come back yet (those
        another process took are forgotten once overdue)."""
        return self._depth.delayed()

    async def counts(self) -> RabbitCounts:
        """Ready, delayed and dead messages and consumers, read now."""
        await self.start()
        session = await self._sessions.wait(self._deadline(), "count")
        return await read_counts(session.connection, self._topology)

    async def dead_letters(self, limit: int = 100) -> list[RabbitDeadLetter]:
        """The oldest ``limit`` dead letters, read without removing them."""
        check_positive_int(limit, "limit")
        await self.start()
        session = await self._sessions.wait(self._deadline(), "read dead letters")
        return await read_dead_letters(session.connection, self._topology, limit)

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
