"""One RabbitMQ connection at a time for a broker, replaced whole when anything in it fails.

A *session* is a connection and its three channels: one for declares, one
in confirm mode for publishing, one with the prefetch for consuming. When
any of them fails (a dropped connection, a channel closed by an error) the
session ends: its deliveries are RabbitMQ's again, and :class:`Sessions`
opens the next one with exponential backoff and full jitter, for ever, while
callers that need a session wait for it up to their deadline.

Publishing (:meth:`Sessions.publish`) waits for every publisher confirm and
publishes again, on the next session if need be, whatever was not confirmed:
a duplicate is possible, a loss is not.

Two failures are not outages, and are never retried as one:

* a refused login (a wrong or missing password): :meth:`Sessions.open`
  raises :class:`~src_pool.AuthenticationFailed` at once, in one line, the
  password masked (while reconnecting later, it is logged once a while);
* the server's ``consumer_timeout``: RabbitMQ closes a channel whose
  delivery stayed unacknowledged longer than that (30 min by default). The
  session ends like any other, but the log says which setting did it, since
  a job that always runs longer would otherwise loop for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from qhealth.redact import error_text, redact_url

from .backoff import Backoff, persist
from .broker import AuthenticationFailed, BrokerClosed, BrokerError
from .broker_stats import BrokerStats
from .rabbit_connect import RabbitUnavailable, import_aio_pika, transient_errors
from .rabbit_publish import Message, batching_supported, publish_batch
from .rabbit_topology import Topology, explain_declare_error
from .throttled_log import ThrottledLog

logger = logging.getLogger("src_pool.rabbitmq")

#: Reconnect backoff ceiling: a restarted RabbitMQ takes seconds to accept connections again.
RECONNECT_CAP_S = 5.0
#: What RabbitMQ says when it closes a channel for its consumer_timeout.
CONSUMER_TIMEOUT_TEXT = "delivery acknowledgement on channel"


@dataclass(eq=False)
class Session:
    """One connection and its channels."""

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


def consumer_timed_out(text: str) -> bool:
    return CONSUMER_TIMEOUT_TEXT in text and "timed out" in text


class Sessions:
    """The live session of one broker, and the next one when it is lost.

    ``opened(session, ready, consumers)`` runs as each session opens (the
    broker forgets the last session's deliveries, sets its depth, consumes
    again); ``ended(session)`` as each ends."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        prefetch: int,
        connect_timeout: float,
        options: dict[str, Any],
        stats: BrokerStats,
        opened: Callable[[Session, int, int], Awaitable[None]],
        ended: Callable[[Session], None],
    ) -> None:
        self.url = url
        self.topology = topology
        self.prefetch = prefetch
        self.connect_timeout = connect_timeout
        self.options = options
        self.stats = stats
        self.batching = True  # tests turn it off to run the one-by-one path
        self._opened = opened
        self._ended = ended
        self._log = ThrottledLog(10.0, log=logger)
        self.current: Session | None = None
        self.live = -1
        """Number of the session whose deliveries may be settled (-1: none)."""
        self._count = 0
        self._ready = asyncio.Event()
        self._closed = False
        self.last_error = "not connected yet"
        self._supervisor: asyncio.Task[None] | None = None
        self.transient: tuple[type[BaseException], ...] = ()
        self.precondition: tuple[type[BaseException], ...] = ()
        self._auth: tuple[type[BaseException], ...] = ()
        self.closed_channel: tuple[type[BaseException], ...] = ()

    @property
    def shown_url(self) -> str:
        return redact_url(self.url)

    def error_text(self, exc: BaseException) -> str:
        return error_text(exc, self.url)

    # -- opening ----------------------------------------------------------------

    async def open(self) -> None:
        """Open the first session (:class:`RabbitUnavailable` after
        ``connect_timeout``, :class:`AuthenticationFailed` at once), then keep
        one open in the background."""
        import_aio_pika()  # first: a missing aio-pika says which extra to install
        import aiormq.exceptions as amqp

        self._ready = asyncio.Event()
        self.transient = transient_errors()
        self.precondition = (amqp.ChannelPreconditionFailed, amqp.ChannelAccessRefused)
        self._auth = (amqp.ProbableAuthenticationError,)
        self.closed_channel = (asyncio.CancelledError, *self.transient)
        await self._connect(deadline=time.monotonic() + self.connect_timeout)
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"src_pool.rabbitmq session {self.topology.queue}"
        )

    def refused_login(self) -> AuthenticationFailed:
        return AuthenticationFailed(
            f"RabbitMQ at {self.shown_url} refused the login ({self.last_error}): "
            "check the user and password in the URL, and that the user may use this vhost"
        )

    async def _connect(self, deadline: float | None) -> None:
        """Open a session, retrying with jittered backoff until ``deadline``
        (None: until closed). A refused login, or a queue declared elsewhere
        with other arguments, fails at once when there is a deadline (a person
        must act)."""

        def lost(exc: BaseException) -> None:
            self.last_error = self.error_text(exc)
            if isinstance(exc, self.precondition):
                self.last_error = explain_declare_error(self.topology, self.last_error)
                self._log.warning("declare", "src_pool.rabbitmq %s", self.last_error)
            elif isinstance(exc, self._auth):
                self._log.warning("auth", "src_pool.rabbitmq %s", self.refused_login())
            else:
                self.stats.connection_errors_total += 1
                self._log.warning(
                    "connect", "src_pool.rabbitmq cannot connect to %s: %s; retrying", self.shown_url,
                    self.last_error,
                )  # fmt: skip

        def give_up(exc: BaseException) -> BaseException | None:
            if self._closed:
                return BrokerClosed("the broker closed while connecting")
            if deadline is None:
                return None
            if isinstance(exc, self._auth):
                return self.refused_login()
            if isinstance(exc, self.precondition):
                return BrokerError(
                    f"RabbitMQ at {self.shown_url} refused the queues of {self.topology.queue!r}: "
                    f"{self.last_error}"
                )
            if time.monotonic() >= deadline:
                return RabbitUnavailable(f"RabbitMQ at {self.shown_url} unreachable: {self.last_error}")
            return None

        if self._closed:
            raise BrokerClosed("the broker closed while connecting")
        await persist(
            self._open_session,
            transient=(*self.transient, *self.precondition),
            lost=lost,
            give_up=give_up,
            backoff=Backoff(cap=RECONNECT_CAP_S),
        )

    async def _open_session(self) -> None:
        aio_pika = import_aio_pika()
        loop = asyncio.get_running_loop()
        options = {
            "timeout": min(self.connect_timeout, 10.0),
            "client_properties": {
                "connection_name": f"src_pool {self.topology.queue} {socket.gethostname()}:{os.getpid()}"
            },
            **self.options,
        }
        connection = await aio_pika.connect(self.url, **options)
        lost: asyncio.Future[None] = loop.create_future()

        def mark_lost(_: object = None, reason: object = None, *__: object) -> None:
            if isinstance(reason, BaseException) and consumer_timed_out(str(reason)):
                self.stats.consumer_timeouts_total += 1
                logger.error(
                    "src_pool.rabbitmq queue %s: RabbitMQ closed the consumer channel because a delivery "
                    "stayed unacknowledged past its consumer_timeout (%s). Every item in flight goes back "
                    "to the queue, and a job that always runs longer loops for ever: raise consumer_timeout "
                    "in rabbitmq.conf (default 30 min), or per queue with RabbitBroker(consumer_timeout=...) "
                    "on RabbitMQ 3.12 or later",
                    self.topology.queue,
                    self.error_text(reason),
                )
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
            self.topology.check_server(connection)
            await self.topology.declare(admin)
            await consumer.basic_qos(prefetch_count=self.prefetch)
            consumer.on_consumer_cancel_callbacks.add(mark_lost)
            declared = await admin.queue_declare(self.topology.queue, passive=True)
        except BaseException:
            await close_quietly(connection)
            raise
        if self._closed:  # closed while connecting
            await close_quietly(connection)
            raise BrokerClosed("the broker closed while connecting")
        self._count += 1
        session = Session(self._count, connection, admin, publisher, consumer, lost)
        session.batching = self.batching and batching_supported(publisher)
        self.current = session
        self.live = session.number
        if self._count > 1:
            self.stats.reconnects_total += 1
            logger.info("src_pool.rabbitmq reconnected to %s (queue %s)", self.shown_url, self.topology.queue)
        await self._opened(session, declared.message_count, declared.consumer_count)
        self._ready.set()

    # -- losing -----------------------------------------------------------------

    def lost(self, session: Session, what: str, exc: BaseException | None) -> None:
        """Something in ``session`` failed: end it (the supervisor reconnects)."""
        if exc is not None:
            self.stats.connection_errors_total += 1
            self.last_error = self.error_text(exc)
            self._log.warning(
                f"lost:{what}",
                "src_pool.rabbitmq %s on %s failed: %s; reconnecting with backoff",
                what,
                self.shown_url,
                self.last_error,
            )
        if not session.lost.done():
            session.lost.set_result(None)

    async def _supervise(self) -> None:
        """Wait for the session to end, then open a new one (for ever, with backoff)."""
        while not self._closed:
            session = self.current
            if session is not None:
                await session.lost
                if self.closed:  # (a property: mypy would keep the loop's narrowing of _closed)
                    return
                if self.current is session:
                    self.end(session)
                    await close_quietly(session.connection)
            try:
                await self._connect(deadline=None)
            except BrokerClosed:
                return
            except Exception:  # a bug, or a refusal no backoff will cure: keep trying, loudly
                self._log.exception("supervise", "src_pool.rabbitmq cannot reconnect to %s", self.shown_url)
                await asyncio.sleep(random.uniform(1.0, 5.0))

    def end(self, session: Session) -> None:
        self._ready.clear()
        self.current = None
        self.live = -1
        self._ended(session)
        if session.consuming is not None:
            session.consuming.cancel()

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait(self, deadline: float, what: str) -> Session:
        """The live session, waiting for a reconnect until ``deadline``."""
        while True:
            if self._closed:
                raise BrokerClosed(f"the broker was closed during {what}")
            session = self.current
            if session is not None and session.alive:
                return session
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RabbitUnavailable(
                    f"RabbitMQ at {self.shown_url} unreachable for {what}: {self.last_error}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), remaining)
            if session is not None and not session.alive:
                await asyncio.sleep(0)  # let the supervisor take the lost session down

    # -- publishing -------------------------------------------------------------

    async def publish(self, messages: Sequence[Message], what: str, deadline: float) -> None:
        """Publish and wait for every confirm; publish again, on the next
        session if this one is lost meanwhile, whatever was not confirmed (a
        duplicate is possible, a loss is not). One write per batch where
        aiormq allows it (:mod:`src_pool.rabbit_publish`)."""
        pending = list(messages)
        backoff = Backoff(cap=RECONNECT_CAP_S)

        async def attempt() -> None:
            await self._publish_once(pending, what, deadline, backoff)

        def unconfirmed(exc: BaseException) -> None:
            nonlocal pending
            pending = exc.pending if isinstance(exc, _Unconfirmed) else pending

        def give_up(_: BaseException) -> BaseException | None:
            if time.monotonic() < deadline:
                return None
            return RabbitUnavailable(
                f"RabbitMQ at {self.shown_url}: {what} not confirmed ({len(pending)} of {len(messages)}): "
                f"{self.last_error}"
            )

        await persist(attempt, transient=(_Unconfirmed,), lost=unconfirmed, give_up=give_up, backoff=backoff)

    async def _publish_once(
        self, pending: list[Message], what: str, deadline: float, backoff: Backoff
    ) -> None:
        """One try: returns when every message is confirmed; else
        :class:`_Unconfirmed` with those that were not (the session was given
        up, or the server refused them with a nack)."""
        from pamqp.commands import Basic

        session = await self.wait(deadline, what)
        channel = session.publisher
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + max(0.1, deadline - time.monotonic())):
                if session.batching:
                    futures = await publish_batch(channel, pending)
                    replies = await asyncio.gather(*futures, return_exceptions=True)
                else:
                    calls = map(_publish_one, repeat(channel), pending)
                    replies = await asyncio.gather(*calls, return_exceptions=True)
        except self.transient as exc:
            self.lost(session, what, exc)
            raise _Unconfirmed(pending) from None
        failed: list[Message] = []
        problem: BaseException | None = None
        for message, reply in zip(pending, replies, strict=True):
            if isinstance(reply, Basic.Ack):
                continue
            failed.append(message)
            if isinstance(reply, self.closed_channel):  # the channel closed first
                problem = problem or reply
            elif isinstance(reply, BaseException):
                raise reply
            elif not isinstance(reply, Basic.Nack):  # returned: the queue is gone
                problem = problem or BrokerError(f"unroutable: no queue {message.routing_key!r}")
        if not failed:
            return
        if problem is not None:  # a new session declares the queues again
            self.lost(session, what, problem)
        else:
            self._log.warning(f"nack:{what}", "src_pool.rabbitmq %s refused (nack); retrying", what)
        if len(failed) < len(pending):
            backoff.reset()
        raise _Unconfirmed(failed)

    # -- closing ------------------------------------------------------------------

    async def close(self, also: Session | None = None) -> None:
        """End the live session (and ``also``, the one a caller still held) and disconnect."""
        self._closed = True
        self.live = -1
        if self._supervisor is not None and not self._supervisor.done():
            self._supervisor.cancel()
            await asyncio.wait([self._supervisor])
        for ended in {also, self.current}:
            if ended is not None:
                self.end(ended)
                await close_quietly(ended.connection)


class _Unconfirmed(Exception):
    """Some messages of a publish were not confirmed: the retry loop publishes them again."""

    def __init__(self, pending: list[Message]) -> None:
        super().__init__(f"{len(pending)} messages not confirmed")
        self.pending = pending


async def _publish_one(channel: Any, message: Message) -> Any:
    return await channel.basic_publish(
        message.body,
        exchange=message.exchange,
        routing_key=message.routing_key,
        properties=message.properties,
        mandatory=True,
    )


async def close_quietly(connection: Any) -> None:
    try:
        await asyncio.wait_for(connection.close(), 5.0)
    except Exception:
        logger.debug("src_pool.rabbitmq: closing a connection failed", exc_info=True)
