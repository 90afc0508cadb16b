"""The Redis broker: a pool that spans processes and hosts, losing nothing.

It keeps the contract of :mod:`src_pool.broker` on a plain Redis server
(standalone, 6.2 or later), with the scripts of :mod:`src_pool.redis_scripts`
and the message format of :mod:`src_pool.redis_codec`:

Order
    One list per priority, RPUSH at the tail and LPOP from the head: FIFO
    within a priority (RPUSH + BRPOP would be a stack), and a fetch takes from
    the highest priority first, so a priority really pops first.

Reliable delivery
    A fetch *moves* items into this consumer's processing list, in the same
    script (nothing is ever only in a client's memory). Acks remove them.
    Each consumer renews a heartbeat (a deadline in a sorted set, in the
    server's clock) every ``heartbeat_interval``; the upkeep script that
    renews it also re-queues, at the head, the items of every consumer whose
    deadline passed (``visibility_timeout``), counting a lost delivery, and
    dead-letters an item whose consumers died ``max_lost_deliveries`` times
    holding it: a poison item that crashes its worker never loops. Each start
    registers a new incarnation of the consumer, so a process restarted with
    the same ``consumer_id`` never adopts its predecessor's items unseen.

Settling what is no longer held
    A consumer that stalled past its visibility timeout has had its items
    given to others. Its late ack, retry, dead letter or release then changes
    nothing; the broker says so (a warning) and counts it
    (``stats.stale_total``), and the item runs where it went.

Retries and dead letters
    :meth:`RedisBroker.retry` puts the item, with its attempt counted and its
    error, in a delayed sorted set; scripts move it back to the tail of its
    queue when due. :meth:`RedisBroker.dead_letter` keeps it in a bounded
    dead-letter list with its error. A message that cannot be decoded,
    whatever the reason (not ours, not JSON, nested too deeply), goes to the
    dead-letter list with the decoding error as it is fetched: the pool never
    sees it and keeps running.

Speed: round trips per batch, never per item
    A fetch is one script call for up to ``batch_size`` items; acks are
    buffered and sent together (one script call for all the acks made while
    the previous call was on the wire); puts go in one script call per
    chunk of at most 500 items and ``max_batch_bytes``. Concurrent ``fetch()``
    calls in one process share one fetcher, which asks for all their demand.

Blocking, not polling
    A consumer that finds nothing blocks in BLPOP on a *signal* list that
    every put feeds with a token (bounded; cleared whenever a fetch finds the
    queue empty). It wakes when work arrives or a retry is due, never on a
    timer. The one periodic round trip is the upkeep, once per
    ``heartbeat_interval`` per broker (per process, whatever the number of
    workers); it also re-signals a queue whose token was taken by a consumer
    that died. Producers blocked at the high watermark wait in
    :class:`~src_pool.backpressure.Watermarks`, woken through a *room* list
    that consumers feed when the depth falls to the low watermark.

Connections
    ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs, with AUTH in the
    URL. The password never appears in a log line, an error or a ``repr``.
    A refused login fails at once (:class:`~src_pool.AuthenticationFailed`).
    A lost connection (a restart, a dropped client) is retried with
    exponential backoff and full jitter; a fetch whose reply was lost is
    reconciled by re-queueing whatever sits in this consumer's processing
    list that it does not know about.

Payloads are JSON (never pickle), at most ``max_payload_bytes`` encoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from . import redis_scripts as lua
from .backoff import Backoff, persist
from .backpressure import Watermarks
from .batches import DEFAULT_MAX_BATCH_BYTES, chunks
from .broker import (
    MAX_PRIORITY,
    Broker,
    BrokerClosed,
    BrokerError,
    Envelope,
    PayloadError,
    check_positive_int,
    check_priority,
    check_timeout,
)
from .broker_stats import BrokerStats
from .deliveries import Deliveries
from .redact import error_text
from .redis_codec import (
    MAX_ERROR_CHARS,
    MalformedMessage,
    RedisDeadLetter,
    RedisDelivery,
    dead_letter_entry,
    decode,
    encode,
)
from .redis_connect import (
    RedisUnavailable,
    auth_errors,
    check_url,
    connect,
    redact_url,
    refused_login,
    transient_errors,
)
from .throttled_log import ThrottledLog

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["QueueCounts", "RedisBroker", "RedisDeadLetter", "decode"]

logger = logging.getLogger("src_pool.redis")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_DEAD_LETTER_LIMIT = 10_000
#: Signal tokens kept at most: enough to wake every blocked consumer of a
#: large deployment, few enough that stale ones cost nothing.
SIGNAL_CAP = 1024
#: Items per put script call.
PUT_CHUNK = 500
#: A producer blocked at the high watermark re-reads the gate at least this often.
ROOM_WAIT_S = 1.0
_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
_SCRIPTS = ("PUT", "FETCH", "ACK", "RELEASE", "RETRY", "DEAD_LETTER", "UPKEEP", "LEAVE", "GATE")


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """What the queue holds right now, across every consumer."""

    waiting: int
    delayed: int
    in_flight: int
    dead: int
    consumers: int


class RedisBroker(Broker):
    """A reliable queue on Redis shared by any number of processes.

    ``name`` names the queue (its keys start with ``src_pool:{name}``).
    ``capacity`` is the high watermark of waiting items (None: unbounded),
    ``low_watermark`` where blocked producers resume (default: half).
    ``batch_size`` bounds one fetch; ``prefetch`` extra items a fetch may
    take beyond what workers are waiting for (they wait in this process,
    in flight; 0 keeps every waiting item available to other processes).
    ``visibility_timeout``: how long the items of a consumer that stopped
    heartbeating stay with it before they are re-queued.
    ``max_lost_deliveries``: deliveries lost with a dead consumer before an
    item is dead-lettered (the pool's ``RetryPolicy.max_attempts`` bounds the
    handler's failures, a separate count). ``max_batch_bytes`` bounds one
    put round trip. ``redis_options`` go to ``redis.asyncio.Redis.from_url``
    (TLS files, ...).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        name: str = "default",
        *,
        capacity: int | None = 100_000,
        low_watermark: int | None = None,
        batch_size: int = 100,
        prefetch: int = 0,
        visibility_timeout: float = 30.0,
        heartbeat_interval: float | None = None,
        max_lost_deliveries: int = 5,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        dead_letter_limit: int = DEFAULT_DEAD_LETTER_LIMIT,
        socket_timeout: float = 10.0,
        connect_timeout: float = 30.0,
        consumer_id: str | None = None,
        redis_options: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = check_url(url)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"queue name must be 1-200 characters of A-Z a-z 0-9 _ . : -, got {name!r}")
        self._gate = Watermarks.for_capacity(capacity, low_watermark, name=name)
        check_positive_int(batch_size, "batch_size")
        if batch_size > 1000:
            raise ValueError(f"batch_size must be at most 1000 items per round trip, got {batch_size}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be a non-negative integer, got {prefetch!r}")
        visibility = check_timeout(visibility_timeout, "visibility_timeout")
        if not visibility or visibility < 0.1:
            raise ValueError(f"visibility_timeout must be at least 0.1 s, got {visibility_timeout!r}")
        beat = visibility / 3 if heartbeat_interval is None else check_timeout(heartbeat_interval)
        if not beat or beat >= visibility:
            raise ValueError(
                f"heartbeat_interval must be positive and below visibility_timeout ({visibility:g} s), "
                f"got {heartbeat_interval!r}"
            )
        check_positive_int(max_lost_deliveries, "max_lost_deliveries")
        check_positive_int(max_payload_bytes, "max_payload_bytes")
        check_positive_int(max_batch_bytes, "max_batch_bytes")
        check_positive_int(dead_letter_limit, "dead_letter_limit")
        self._socket_timeout = check_timeout(socket_timeout, "socket_timeout") or 10.0
        self._connect_timeout = check_timeout(connect_timeout, "connect_timeout") or 30.0

        self.name = name
        self.prefix = f"src_pool:{{{name}}}"
        self.consumer_id = consumer_id or f"{socket.gethostname()}:{os.getpid()}"
        if ":proc:" in self.consumer_id:
            raise ValueError("consumer_id must not contain ':proc:'")
        self._member = f"{self.consumer_id}/{os.urandom(4).hex()}"  # this incarnation
        self._keys = lua.queue_keys(self.prefix, self._member)
        self._capacity = capacity
        self._high = capacity or 0
        self._low = self._gate.low if self._gate is not None else 0
        self._batch = batch_size
        self._prefetch = prefetch
        self._visibility_ms = int(visibility * 1000)
        self._beat = beat
        self._max_lost = max_lost_deliveries
        self._max_bytes = max_payload_bytes
        self._max_batch_bytes = max_batch_bytes
        self._dead_limit = dead_letter_limit
        self._options = dict(redis_options or {})
        self._clock = clock
        self._ids = 0
        self._id_prefix = os.urandom(6).hex() + "-"
        self._log = ThrottledLog(10.0, log=logger)
        self._transient: tuple[type[BaseException], ...] = ()
        self._auth: tuple[type[BaseException], ...] = ()

        self._client: Redis | None = None
        self._blocker: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._started = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

        self._deliveries = Deliveries()
        self._pump_task: asyncio.Task[None] | None = None
        self._acks: list[bytes] = []
        self._sending: list[list[bytes]] = []
        self._ack_task: asyncio.Task[None] | None = None
        self._upkeep_task: asyncio.Task[None] | None = None
        self._depth: int | None = None
        self._depth_at = 0.0
        self._depth_max_age = 3 * beat
        self._retries_pending = False
        self.stats = BrokerStats()

    def __repr__(self) -> str:
        return f"RedisBroker({redact_url(self._url)!r}, name={self.name!r})"

    @property
    def url(self) -> str:
        """The server's URL without its password."""
        return redact_url(self._url)

    @property
    def capacity(self) -> int | None:
        return self._capacity

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_flight(self) -> int:
        """Items this broker handed out and that are not settled yet."""
        return len(self._deliveries.inflight)

    @property
    def delayed(self) -> int:
        """1 if retries were scheduled as of the last fetch (or since), else 0:
        what :meth:`src_pool.pool.Pool.join` needs, without I/O. Exact counts:
        :meth:`counts`."""
        return int(self._retries_pending)

    # -- connecting -------------------------------------------------------------

    async def start(self) -> None:
        """Connect and start the heartbeat/reaper. Idempotent. Reaps the items
        of dead consumers once at once, so a restarted worker recovers its
        predecessor's items as soon as their visibility timeout has passed.
        :class:`~src_pool.AuthenticationFailed` at once for a refused login,
        :class:`RedisUnavailable` after ``connect_timeout``."""
        if self._closed:
            raise BrokerClosed("the broker is closed")
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._transient = transient_errors()
        self._auth = auth_errors()
        try:
            self._client = connect(
                self._url, blocking=False, socket_timeout=self._socket_timeout, options=self._options
            )
            self._blocker = connect(
                self._url, blocking=True, socket_timeout=self._socket_timeout, options=self._options
            )
            for name in _SCRIPTS:
                self._scripts[name] = self._client.register_script(getattr(lua, name))
            await self._upkeep_once(deadline=time.monotonic() + self._connect_timeout)
        except BaseException:
            self._started = False
            await self._disconnect()
            raise
        self._upkeep_task = self._loop.create_task(
            self._upkeep_loop(), name=f"src_pool.redis upkeep {self.name}"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerClosed("the broker is closed")

    def _error_text(self, exc: BaseException) -> str:
        return error_text(exc, self._url)

    def _lost(self, what: str, exc: BaseException) -> None:
        """A round trip failed: count it and say so (once in a while)."""
        self.stats.connection_errors_total += 1
        if isinstance(exc, self._auth):
            self._log.warning(f"auth:{what}", "src_pool.redis %s", refused_login(self._url, exc))
            return
        self._log.warning(
            f"lost:{what}",
            "src_pool.redis %s on %s: %s; reconnecting with backoff",
            what,
            self.url,
            self._error_text(exc),
        )

    def _give_up(self, what: str, exc: BaseException, deadline: float | None) -> BaseException | None:
        """Whether a failed round trip ends here: a refused login at once when
        a caller waits for the answer, a lost server at ``deadline``, anything
        once the broker is closed (``deadline`` None: background work)."""
        if deadline is not None and isinstance(exc, self._auth):
            return refused_login(self._url, exc)
        if deadline is not None and time.monotonic() >= deadline:
            return RedisUnavailable(f"redis at {self.url} unreachable for {what}: {self._error_text(exc)}")
        if deadline is None and self._closed:
            return BrokerClosed(f"the broker closed while {what} could not reach redis")
        return None

    async def _run(self, script: str, args: Sequence[Any], what: str, deadline: float | None) -> Any:
        """Run a script, reconnecting with jittered backoff on a lost
        connection until ``deadline`` (monotonic; None: until closed). Every
        script but FETCH is safe to run twice (settling checks the processing
        list; a doubled put is a duplicate, which at-least-once allows)."""
        call = self._scripts[script]
        return await persist(
            lambda: call(keys=self._keys, args=args),
            transient=self._transient,
            lost=lambda exc: self._lost(what, exc),
            give_up=lambda exc: self._give_up(what, exc, deadline),
        )

    def _deadline(self, timeout: float | None = None) -> float:
        limit = self._connect_timeout if timeout is None else min(timeout, self._connect_timeout)
        return time.monotonic() + max(limit, 1.0)

    def _set_depth(self, depth: int) -> None:
        self._depth = int(depth)
        self._depth_at = time.monotonic()

    # -- producing ------------------------------------------------------------

    def _message(self, payload: Any, priority: int) -> tuple[Envelope, bytes]:
        if type(priority) is not int or not 0 <= priority <= MAX_PRIORITY:
            check_priority(priority)
        self._ids += 1
        envelope = Envelope(f"{self._id_prefix}{self._ids}", payload, 0, priority, self._clock())
        raw = encode(envelope, None)
        if len(raw) > self._max_bytes:
            raise PayloadError(
                f"payload too large: {len(raw)} bytes encoded, the limit is {self._max_bytes} "
                "(max_payload_bytes)"
            )
        return envelope, raw

    async def put(self, payload: Any, *, priority: int = 0, timeout: float | None = None) -> Envelope:
        envelope, raw = self._message(payload, priority)
        check_timeout(timeout)
        self._check_open()
        await self.start()
        await self._push([raw], timeout)
        return envelope

    async def put_many(
        self, payloads: Iterable[Any], *, priority: int = 0, timeout: float | None = None
    ) -> list[Envelope]:
        """Enqueue in order, up to 500 items and ``max_batch_bytes`` per round
        trip. Every payload is checked before the first is sent."""
        check_timeout(timeout)
        made = [self._message(p, priority) for p in payloads]
        self._check_open()
        await self.start()
        raws = [raw for _, raw in made]
        for chunk in chunks(raws, len, PUT_CHUNK, self._max_batch_bytes):
            await self._push(list(chunk), timeout)
        return [envelope for envelope, _ in made]

    async def _push(self, raws: list[bytes], timeout: float | None) -> None:
        """Push in order; the script stops at the high watermark, and the rest
        waits for room (``timeout`` per wait)."""
        gate = self._gate
        while raws:
            self._check_open()
            if gate is not None and gate.blocked:
                await gate.wait_for_room(self.depth, timeout, remote=self._read_room)
            pushed, depth = await self._run(
                "PUT", [self._high, self._low, SIGNAL_CAP, *raws], "put", self._deadline(timeout)
            )
            self._set_depth(depth)
            self.stats.put_total += pushed
            raws = raws[pushed:]
            if raws and gate is not None:
                gate.blocked = True  # the server's gate is shut: wait until it reopens

    async def _read_room(self) -> int | None:
        """The depth for producers blocked at the high watermark: read now if
        the server's gate is open, else after waiting (up to ``ROOM_WAIT_S``)
        on the room list that consumers feed when it reopens."""
        shut, depth = await self._run("GATE", [], "wait for room", self._deadline())
        self._set_depth(depth)
        if not shut:
            return min(int(depth), self._low)  # open: for this producer too, whatever its own low watermark
        assert self._client is not None
        try:
            await self._client.blpop([self._keys[lua.ROOM - 1]], timeout=ROOM_WAIT_S)
        except self._transient as exc:
            self._lost("wait for room", exc)
            await asyncio.sleep(0.1)
        return None

    # -- consuming ------------------------------------------------------------

    def get_nowait(self) -> Envelope | None:
        if self._closed:
            return None
        return self._deliveries.get_nowait()

    async def fetch(self, max_items: int = 1) -> list[Envelope]:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"max_items must be a positive integer, got {max_items!r}")
        self._check_open()
        if not self._started:
            await self.start()
        if self._deliveries.buffer:
            return self._deliveries.take(max_items)
        return await self._deliveries.wait(max_items, self._ensure_pump)

    def _ensure_pump(self) -> None:
        if self._pump_task is None:
            self._pump_task = asyncio.get_running_loop().create_task(
                self._pump(), name=f"src_pool.redis fetch {self.name}"
            )

    async def _pump(self) -> None:
        """The one fetcher of this process: asks Redis for what the waiting
        workers want, hands it out, and blocks on the signal list when the
        queue is empty (until a put, or the next due retry)."""
        backoff = Backoff()
        try:
            while not self._closed:
                demand = self._deliveries.prune_waiters()
                if not demand:
                    return
                want = min(self._batch, demand + self._prefetch)
                acks, self._acks = self._acks, []
                self._sending.append(acks)
                try:
                    reply = await self._scripts["FETCH"](
                        keys=self._keys,
                        args=[
                            want,
                            self._member,
                            self._visibility_ms,
                            self._low,
                            SIGNAL_CAP,
                            len(acks),
                            *acks,
                        ],
                    )
                except self._transient as exc:
                    self._acks[:0] = acks
                    self._lost("fetch", exc)
                    await backoff.sleep()
                    await self._reconcile()
                    continue
                finally:
                    self._sending.remove(acks)
                backoff.reset()
                self._set_depth(reply[0])
                due_ms = int(reply[1])
                self._retries_pending = due_ms >= 0
                self._acks_settled(len(acks), int(reply[2]))
                if len(reply) > 3:
                    await self._hand_out(reply[3:])
                    continue
                if self.closed:  # a cancel can get lost inside redis-py as a reply lands
                    return
                # Nothing to take: block until a put signals, or a retry is due.
                timeout = 0.0 if due_ms < 0 else max(due_ms / 1000.0, 0.005)
                assert self._blocker is not None
                try:
                    await self._blocker.blpop([self._keys[lua.SIGNAL - 1]], timeout=timeout)
                except self._transient as exc:
                    self._lost("wait for items", exc)
                    await backoff.sleep()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a server refusing scripts: fail the waiters, never hang them
            self._log.exception("pump", "src_pool.redis fetcher failed on %s", self.url)
            self._deliveries.fail_waiters(
                BrokerError(f"fetch from redis at {self.url} failed: {self._error_text(exc)}")
            )
        finally:
            self._pump_task = None
            if self._deliveries.waiters and not self._closed:  # waiters arrived as we were leaving
                self._ensure_pump()

    async def _hand_out(self, raws: Sequence[bytes]) -> None:
        """Decode a fetched batch: the readable items to the workers, anything
        unreadable (for whatever reason) to the dead-letter list."""
        good: list[Envelope] = []
        bad: list[tuple[bytes, str]] = []
        for raw in raws:
            try:
                good.append(decode(raw))
            except MalformedMessage as exc:
                bad.append((raw, f"MalformedMessage: {exc}"))
        self._deliveries.add(good)
        for raw, error in bad:
            self.stats.malformed_total += 1
            self._log.warning("malformed", "src_pool.redis dead-letters a malformed message: %s", error)
            if await self._run("DEAD_LETTER", [raw, error, self._dead_limit], "dead-letter", None):
                self.stats.dead_lettered_total += 1

    async def _held_by_us(self) -> list[bytes] | None:
        """This consumer's processing list, or None once the broker closed."""
        assert self._client is not None
        client = self._client
        try:
            return cast(
                list[bytes],
                await self._run_command(lambda: client.lrange(self._keys[lua.PROCESSING - 1], 0, -1)),
            )
        except BrokerClosed:
            return None

    async def _run_command(self, command: Callable[[], Any]) -> Any:
        return await persist(
            command,
            transient=self._transient,
            lost=lambda exc: self._lost("reconcile", exc),
            give_up=lambda exc: self._give_up("reconcile", exc, None),
        )

    def _unknown(self, held: list[bytes], *extra: Iterable[bytes]) -> list[bytes]:
        """What the processing list holds beyond what this process knows of
        (counted: two deliveries of equal bytes are two)."""
        known = Counter(e.receipt.raw for e in self._deliveries.known())
        for raws in extra:
            known.update(raws)
        unknown = []
        for raw in held:
            if known[raw] > 0:
                known[raw] -= 1
            else:
                unknown.append(raw)
        return unknown

    async def _reconcile(self) -> None:
        """After a fetch whose reply was lost: re-queue, at the head, whatever
        sits in our processing list that we never received."""
        held = await self._held_by_us()
        if held is None:
            return
        unknown = self._unknown(held, self._acks, *self._sending)
        if unknown:
            n = await self._run("RELEASE", [SIGNAL_CAP, *unknown], "re-queue unreceived items", None)
            logger.info("src_pool.redis re-queued %d items whose fetch reply was lost", n)

    # -- settling -------------------------------------------------------------

    def ack(self, envelope: Envelope) -> None:
        self._deliveries.settle(envelope, "acknowledge")
        self._acks.append(envelope.receipt.raw)
        if self._ack_task is None and self._loop is not None:
            self._ack_task = self._loop.create_task(self._send_acks())

    def _acks_settled(self, sent: int, removed: int) -> None:
        self.stats.acked_total += removed
        if sent > removed:
            self._stale(sent - removed, "acknowledgement")

    def _stale(self, n: int, what: str) -> None:
        """Settles that found their delivery gone: the reaper gave it away."""
        self.stats.stale_total += n
        self._log.warning(
            f"stale:{what}",
            "src_pool.redis queue %s: %d %s(s) changed nothing: this consumer no longer held the item "
            "(its heartbeat lapsed past the visibility timeout and the item went back to the queue, "
            "to run again elsewhere)",
            self.name,
            n,
            what,
        )

    async def _send_acks(self) -> None:
        """Send buffered acks, all those made since the last send in one
        round trip, until none is left. Once the broker is closed, give up
        after a few failures: the reaper re-queues what stays unacked."""
        backoff = Backoff()
        script = self._scripts["ACK"]

        def give_up(exc: BaseException) -> BaseException | None:
            return exc if self._closed and backoff.failures > 8 else None

        try:
            await asyncio.sleep(0)  # let the acks of this loop iteration gather
            while self._acks:
                batch, self._acks = self._acks, []
                self._sending.append(batch)
                try:
                    removed = await persist(
                        functools.partial(script, keys=self._keys, args=batch),
                        transient=self._transient,
                        lost=lambda exc: self._lost("ack", exc),
                        give_up=give_up,
                        backoff=backoff,
                    )
                except self._transient:
                    self._acks[:0] = batch
                    return
                finally:
                    self._sending.remove(batch)
                self._acks_settled(len(batch), int(removed))
        finally:
            self._ack_task = None

    async def flush(self) -> None:
        while self._acks or self._ack_task is not None:
            task = self._ack_task
            if task is None:
                self._ack_task = task = asyncio.get_running_loop().create_task(self._send_acks())
            await asyncio.shield(task)

    async def retry(self, envelope: Envelope, *, delay: float, error: str) -> None:
        delay = check_timeout(delay, "retry delay") or 0.0
        self._deliveries.begin(envelope, "retry")
        try:
            raw = encode(envelope, error)
            receipt = cast(RedisDelivery, envelope.receipt)
            held = await self._run(
                "RETRY", [receipt.raw, raw, int(delay * 1000), SIGNAL_CAP], "retry", self._deadline()
            )
            if not held:
                self._stale(1, "retry")
                return
            self.stats.retried_total += 1
            self._retries_pending = self._retries_pending or delay > 0
        finally:
            self._deliveries.end(envelope)

    async def dead_letter(self, envelope: Envelope, *, error: str) -> None:
        self._deliveries.begin(envelope, "dead-letter")
        try:
            receipt = cast(RedisDelivery, envelope.receipt)
            held = await self._run(
                "DEAD_LETTER",
                [receipt.raw, error[:MAX_ERROR_CHARS], self._dead_limit],
                "dead-letter",
                self._deadline(),
            )
            if not held:
                self._stale(1, "dead letter")
                return
            self.stats.dead_lettered_total += 1
        finally:
            self._deliveries.end(envelope)

    async def release(self, envelopes: Sequence[Envelope]) -> None:
        self._deliveries.begin_all(envelopes, "release")
        try:
            if envelopes:
                raws = [cast(RedisDelivery, e.receipt).raw for e in envelopes]
                n = await self._run("RELEASE", [SIGNAL_CAP, *raws], "release", self._deadline())
                self.stats.released_total += n
                if n < len(envelopes):
                    self._stale(len(envelopes) - n, "release")
        finally:
            for envelope in envelopes:
                self._deliveries.end(envelope)

    # -- upkeep ---------------------------------------------------------------

    async def _upkeep_once(self, deadline: float | None) -> None:
        depth, requeued, dead = await self._run(
            "UPKEEP",
            [
                self._member,
                self._visibility_ms,
                self._max_lost,
                self._dead_limit,
                self._low,
                SIGNAL_CAP,
                self.prefix,
            ],
            "heartbeat",
            deadline,
        )
        self._set_depth(depth)
        if requeued or dead:
            self.stats.reaped_total += requeued + dead
            logger.warning(
                "src_pool.redis queue %s: re-queued %d items of dead consumers, dead-lettered %d",
                self.name,
                requeued,
                dead,
            )

    async def _upkeep_loop(self) -> None:
        """Heartbeat, reaper, due retries, lost signals: one round trip per
        interval, whatever the number of workers."""
        while not self._closed:
            await asyncio.sleep(self._beat)
            try:
                await self._upkeep_once(deadline=time.monotonic() + self._beat)
            except BrokerError:
                pass  # logged as it failed; try again next beat
            except Exception:
                self._log.exception("upkeep", "src_pool.redis upkeep failed on %s", self.url)

    # -- inspection -----------------------------------------------------------

    def depth(self) -> int | None:
        """Waiting items as of the last round trip (every put, fetch and
        heartbeat refreshes it), or None when that is older than three
        heartbeat intervals. No I/O: safe from the monitor's thread."""
        if self._depth is None or time.monotonic() - self._depth_at > self._depth_max_age:
            return None
        return self._depth

    async def counts(self) -> QueueCounts:
        """Waiting, delayed, in-flight (every consumer) and dead items, read now."""
        self._check_open()
        await self.start()
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        for key in self._keys[: lua.QUEUE_LEVELS]:
            pipe.llen(key)
        pipe.zcard(self._keys[lua.DELAYED - 1])
        pipe.llen(self._keys[lua.DEAD - 1])
        pipe.zrange(self._keys[lua.CONSUMERS - 1], 0, -1)
        *levels, delayed, dead, consumers = await pipe.execute()
        pipe = self._client.pipeline(transaction=False)
        for consumer in consumers:
            pipe.llen(lua.processing_key(self.prefix, consumer.decode()))
        held = await pipe.execute()
        return QueueCounts(sum(levels), delayed, sum(held), dead, len(consumers))

    async def dead_letters(self, limit: int = 100) -> list[RedisDeadLetter]:
        """The newest ``limit`` dead letters, oldest first."""
        check_positive_int(limit, "limit")
        self._check_open()
        await self.start()
        assert self._client is not None
        entries = cast(list[bytes], await self._client.lrange(self._keys[lua.DEAD - 1], 0, limit - 1))
        return [dead_letter_entry(entry) for entry in reversed(entries)]

    # -- stopping -------------------------------------------------------------

    async def close(self) -> None:
        """Stop fetching, wake waiters with :class:`BrokerClosed`, give the
        prefetch buffer back to the head of the queue, send buffered acks,
        re-queue anything held but never received, and disconnect. Items the
        pool still holds unsettled stay in the processing list and come back
        through the reaper once the heartbeat has expired."""
        if self._closed:
            return
        self._closed = True
        if self._gate is not None:
            self._gate.close()
        if not self._started:
            return
        await self._stop_tasks()
        self._deliveries.fail_waiters(BrokerClosed("the broker was closed while a consumer waited"))
        deadline = time.monotonic() + min(self._connect_timeout, 5.0)
        try:
            buffered = list(self._deliveries.buffer)
            self._deliveries.buffer.clear()
            if buffered:
                raws = [cast(RedisDelivery, e.receipt).raw for e in buffered]
                await self._run("RELEASE", [SIGNAL_CAP, *raws], "release", deadline)
            if self._acks or self._ack_task is not None:
                await asyncio.wait_for(self.flush(), max(0.1, deadline - time.monotonic()))
            if not self._deliveries.inflight:
                await self._reconcile_on_close(deadline)
        except (RedisUnavailable, TimeoutError, BrokerClosed):
            self._log.warning(
                "close", "src_pool.redis could not tidy up on close (%s): the reaper will recover", self.url
            )
        finally:
            await self._disconnect()

    async def _stop_tasks(self) -> None:
        """Cancel the fetcher and the upkeep. A cancel that lands as a reply
        arrives can be lost inside redis-py; the blocking connection is then
        closed under the fetcher, which ends its read."""
        tasks = [t for t in (self._pump_task, self._upkeep_task) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=1.0)
        if pending and self._blocker is not None:
            await self._blocker.aclose()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                logger.debug("src_pool.redis background task ended with %r", task.exception())

    async def _reconcile_on_close(self, deadline: float) -> None:
        assert self._client is not None
        try:
            held = cast(list[bytes], await self._client.lrange(self._keys[lua.PROCESSING - 1], 0, -1))
        except self._transient:
            return
        unknown = self._unknown(held)
        if unknown:
            await self._run("RELEASE", [SIGNAL_CAP, *unknown], "release", deadline)
        await self._run("LEAVE", [self._member], "leave", deadline)

    async def _disconnect(self) -> None:
        for client in (self._client, self._blocker):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._client = self._blocker = None
