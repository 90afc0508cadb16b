"""The Redis broker: a pool that spans processes and hosts, losing nothing.

It keeps the contract of :mod:`src_pool.broker` on a plain Redis server
(standalone, 6.2 or later), with the scripts of :mod:`src_pool.redis_scripts`:

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
    deadline passed (``visibility_timeout``), counting an attempt, and
    dead-letters an item whose consumers died ``max_attempts`` times holding
    it: a poison item that crashes its worker never loops.

Retries and dead letters
    :meth:`RedisBroker.retry` puts the item, with its attempt counted and its
    error, in a delayed sorted set; scripts move it back to the tail of its
    queue when due. (The pool picks the delay: exponential backoff with full
    jitter.) :meth:`RedisBroker.dead_letter` keeps it in a bounded dead-letter
    list with its error. A message that cannot be decoded (not ours, not
    JSON) goes to the dead-letter list with the decoding error as it is
    fetched: the pool never sees it and keeps running.

Speed: round trips per batch, never per item
    A fetch is one script call for up to ``batch_size`` items; acks are
    buffered and sent together (one script call for all the acks made while
    the previous call was on the wire); puts go in one script call per
    chunk. Concurrent ``fetch()`` calls in one process share one fetcher,
    which asks for all their demand at once.

Blocking, not polling
    A consumer that finds nothing blocks in BLPOP on a *signal* list that
    every put feeds with a token (bounded; cleared whenever a fetch finds the
    queue empty). It wakes when work arrives or a retry is due, never on a
    timer. The one periodic round trip is the upkeep, once per
    ``heartbeat_interval`` per broker (per process, whatever the number of
    workers); it also re-signals a queue whose token was taken by a consumer
    that died.

Connections
    ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs, with AUTH in the
    URL. The password never appears in a log line, an error or a ``repr``.
    A lost connection (a restart, a dropped client) is retried with
    exponential backoff and full jitter; a fetch whose reply was lost is
    reconciled by re-queueing whatever sits in this consumer's processing
    list that it does not know about.

Payloads are JSON (never pickle), at most ``max_payload_bytes`` encoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from . import redis_scripts as lua
from .backoff import Backoff
from .broker import (
    MAX_PRIORITY,
    Broker,
    BrokerClosed,
    BrokerError,
    Envelope,
    PayloadError,
    QueueFull,
    check_positive_int,
    check_priority,
    check_timeout,
)
from .redis_connect import (
    RedisUnavailable,
    check_url,
    connect,
    redact_url,
    scrub,
    transient_errors,
)
from .throttled_log import ThrottledLog

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("src_pool.redis")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_DEAD_LETTER_LIMIT = 10_000
#: Signal tokens kept at most: enough to wake every blocked consumer of a
#: large deployment, few enough that stale ones cost nothing.
SIGNAL_CAP = 1024
#: Items per put script call.
PUT_CHUNK = 500
#: Longest error text kept with a retried or dead-lettered item.
MAX_ERROR_CHARS = 2000
_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
_BAR = 124  # b"|"


class MalformedMessage(PayloadError):
    """A message in the queue that this broker did not write or cannot read."""


@dataclass(frozen=True, slots=True)
class RedisDeadLetter:
    """An entry of the dead-letter list."""

    error: str
    at: float
    """Server time (seconds since the epoch) when it was dead-lettered."""
    raw: bytes
    """The message as it was stored."""
    envelope: Envelope | None
    """The item, or None when the message could not be decoded."""


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """What the queue holds right now, across every consumer."""

    waiting: int
    delayed: int
    in_flight: int
    dead: int
    consumers: int


def decode(raw: bytes) -> Envelope:
    """The envelope in a stored message, or :class:`MalformedMessage`."""
    try:
        priority = raw[0] - 48
        if not 0 <= priority <= MAX_PRIORITY or raw[1] != _BAR:
            raise ValueError("no priority prefix")
        bar = raw.index(b"|", 2)
        attempts = int(raw[2:bar])
        body = json.loads(raw[bar + 1 :])
        if type(body) is not dict or type(body.get("id")) is not str or "p" not in body:
            raise ValueError("not an envelope object")
        return Envelope(
            body["id"], body["p"], attempts, priority, float(body.get("t", 0.0)), body.get("e"), raw
        )
    except (ValueError, IndexError, TypeError) as exc:
        raise MalformedMessage(
            f"malformed message ({type(exc).__name__}: {exc}): {raw[:80]!r}"
            + ("..." if len(raw) > 80 else "")
        ) from None


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
    ``max_attempts``: deliveries lost with a dead consumer before an item is
    dead-lettered (the pool's own retry policy covers handlers that raise).
    ``redis_options`` go to ``redis.asyncio.Redis.from_url`` (TLS files, ...).
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
        max_attempts: int = 5,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
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
        check_positive_int(max_attempts, "max_attempts")
        check_positive_int(max_payload_bytes, "max_payload_bytes")
        check_positive_int(dead_letter_limit, "dead_letter_limit")
        self._socket_timeout = check_timeout(socket_timeout, "socket_timeout") or 10.0
        self._connect_timeout = check_timeout(connect_timeout, "connect_timeout") or 30.0

        self.name = name
        self.prefix = f"src_pool:{{{name}}}"
        self.consumer_id = consumer_id or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        if ":proc:" in self.consumer_id:
            raise ValueError("consumer_id must not contain ':proc:'")
        self._keys = lua.queue_keys(self.prefix, self.consumer_id)
        self._capacity = capacity
        self._high = capacity or 0
        self._low = low
        self._batch = batch_size
        self._prefetch = prefetch
        self._visibility_ms = int(visibility * 1000)
        self._beat = beat
        self._max_attempts = max_attempts
        self._max_bytes = max_payload_bytes
        self._dead_limit = dead_letter_limit
        self._options = dict(redis_options or {})
        self._clock = clock
        self._ids = 0
        self._id_prefix = os.urandom(6).hex() + "-"
        self._log = ThrottledLog(10.0, log=logger)
        self._transient: tuple[type[BaseException], ...] = ()

        self._client: Redis | None = None
        self._blocker: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._started = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

        self._inflight: dict[str, Envelope] = {}
        self._settling: dict[int, bytes] = {}  # id(receipt) -> receipt, while a settle is on the wire
        self._buffer: deque[Envelope] = deque()
        self._waiters: deque[tuple[asyncio.Future[list[Envelope]], int]] = deque()
        self._pump_task: asyncio.Task[None] | None = None
        self._acks: list[bytes] = []
        self._sending: list[list[bytes]] = []
        self._ack_task: asyncio.Task[None] | None = None
        self._upkeep_task: asyncio.Task[None] | None = None
        self._depth: int | None = None
        self._depth_at = 0.0
        self._depth_max_age = 3 * beat
        self._retries_pending = False

        self.acked_total = 0
        self.retried_total = 0
        self.released_total = 0
        self.dead_lettered_total = 0
        self.malformed_total = 0
        self.reaped_total = 0
        self.connection_errors_total = 0

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
        return len(self._inflight)

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
        predecessor's items as soon as their visibility timeout has passed."""
        if self._closed:
            raise BrokerClosed("the broker is closed")
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._transient = transient_errors()
        try:
            self._client = connect(
                self._url, blocking=False, socket_timeout=self._socket_timeout, options=self._options
            )
            self._blocker = connect(
                self._url, blocking=True, socket_timeout=self._socket_timeout, options=self._options
            )
            for name in ("PUT", "FETCH", "ACK", "RELEASE", "RETRY", "DEAD_LETTER", "UPKEEP", "LEAVE"):
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
        return scrub(f"{type(exc).__name__}: {exc}", self._url)

    def _lost(self, what: str, exc: BaseException) -> None:
        self.connection_errors_total += 1
        self._log.warning(
            f"lost:{what}",
            "src_pool.redis %s on %s: %s; reconnecting with backoff",
            what,
            self.url,
            self._error_text(exc),
        )

    async def _run(self, script: str, args: Sequence[Any], what: str, deadline: float | None) -> Any:
        """Run a script, reconnecting with jittered backoff on a lost
        connection until ``deadline`` (monotonic; None: until closed). Every
        script but FETCH is safe to run twice (settling checks the processing
        list; a doubled put is a duplicate, which at-least-once allows)."""
        backoff = Backoff()
        while True:
            try:
                return await self._scripts[script](keys=self._keys, args=args)
            except self._transient as exc:
                self._lost(what, exc)
                if deadline is not None and time.monotonic() >= deadline:
                    raise RedisUnavailable(
                        f"redis at {self.url} unreachable for {what}: {self._error_text(exc)}"
                    ) from None
                if deadline is None and self._closed:
                    raise BrokerClosed(f"the broker closed while {what} could not reach redis") from None
                await backoff.sleep()

    def _deadline(self, timeout: float | None = None) -> float:
        limit = self._connect_timeout if timeout is None else min(timeout, self._connect_timeout)
        return time.monotonic() + max(limit, 1.0)

    def _set_depth(self, depth: int) -> None:
        self._depth = int(depth)
        self._depth_at = time.monotonic()

    # -- producing ------------------------------------------------------------

    def _next_id(self) -> str:
        self._ids += 1
        return f"{self._id_prefix}{self._ids}"

    def _encode(
        self, payload: Any, priority: int, attempts: int, id_: str, at: float, error: str | None
    ) -> bytes:
        body: dict[str, Any] = {"id": id_, "t": at, "p": payload}
        if error is not None:
            body["e"] = error[:MAX_ERROR_CHARS]
        try:
            text = json.dumps(body, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
            return f"{priority}|{attempts}|{text}".encode()
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"payload cannot travel as JSON: {type(exc).__name__}: {exc}") from None

    def _message(self, payload: Any, priority: int) -> tuple[Envelope, bytes]:
        if type(priority) is not int or not 0 <= priority <= MAX_PRIORITY:
            check_priority(priority)
        id_ = self._next_id()
        at = self._clock()
        raw = self._encode(payload, priority, 0, id_, at, None)
        if len(raw) > self._max_bytes:
            raise PayloadError(
                f"payload too large: {len(raw)} bytes encoded, the limit is {self._max_bytes} "
                "(max_payload_bytes)"
            )
        return Envelope(id_, payload, 0, priority, at, None, None), raw

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
        """Enqueue in order, up to 500 items per round trip."""
        check_timeout(timeout)
        made = [self._message(p, priority) for p in payloads]
        self._check_open()
        await self.start()
        raws = [raw for _, raw in made]
        for i in range(0, len(raws), PUT_CHUNK):
            await self._push(raws[i : i + PUT_CHUNK], timeout)
        return [envelope for envelope, _ in made]

    async def _push(self, raws: list[bytes], timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while raws:
            self._check_open()
            pushed, depth = await self._run(
                "PUT", [self._high, self._low, SIGNAL_CAP, *raws], "put", self._deadline(timeout)
            )
            self._set_depth(depth)
            raws = raws[pushed:]
            if raws:
                await self._wait_for_room(deadline)

    async def _wait_for_room(self, deadline: float | None) -> None:
        """Block until consumers brought the depth down to the low watermark
        (their fetch pushes tokens on the room list), re-checking once a
        second in case the tokens went to someone else."""
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise QueueFull(
                f"queue {self.name} full: depth {self._depth} at or above the low watermark {self._low} "
                f"(high watermark {self._high})"
            )
        wait = 1.0 if remaining is None else min(1.0, remaining)
        assert self._client is not None
        try:
            await self._client.blpop([self._keys[lua.ROOM - 1]], timeout=max(wait, 0.01))
        except self._transient as exc:
            self._lost("wait for room", exc)
            await asyncio.sleep(min(wait, 0.1))

    # -- consuming ------------------------------------------------------------

    def get_nowait(self) -> Envelope | None:
        if not self._buffer or self._closed:
            return None
        envelope = self._buffer.popleft()
        self._inflight[envelope.id] = envelope
        return envelope

    async def fetch(self, max_items: int = 1) -> list[Envelope]:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"max_items must be a positive integer, got {max_items!r}")
        self._check_open()
        if not self._started:
            await self.start()
        if self._buffer:
            return self._take(max_items)
        waiter: asyncio.Future[list[Envelope]] = asyncio.get_running_loop().create_future()
        self._waiters.append((waiter, max_items))
        if self._pump_task is None:
            self._pump_task = asyncio.get_running_loop().create_task(
                self._pump(), name=f"src_pool.redis fetch {self.name}"
            )
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._unfetch(waiter.result())  # handed over as we were cancelled: give back
            raise

    def _take(self, n: int) -> list[Envelope]:
        batch: list[Envelope] = []
        buffer, inflight = self._buffer, self._inflight
        while buffer and len(batch) < n:
            envelope = buffer.popleft()
            inflight[envelope.id] = envelope
            batch.append(envelope)
        return batch

    def _unfetch(self, envelopes: list[Envelope]) -> None:
        """Items handed to a consumer that was cancelled: back to the head of
        the local buffer (still in this consumer's processing list), to the
        next waiter, or to Redis on :meth:`close`."""
        for envelope in reversed(envelopes):
            self._inflight.pop(envelope.id, None)
            self._buffer.appendleft(envelope)
        self._serve_waiters()

    def _serve_waiters(self) -> None:
        while self._buffer and self._waiters:
            waiter, n = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(self._take(n))

    async def _pump(self) -> None:
        """The one fetcher of this process: asks Redis for what the waiting
        workers want, hands it out, and blocks on the signal list when the
        queue is empty (until a put, or the next due retry)."""
        backoff = Backoff()
        try:
            while not self._closed:
                while self._waiters and self._waiters[0][0].done():
                    self._waiters.popleft()
                if not self._waiters:
                    return
                want = min(self._batch, sum(n for w, n in self._waiters if not w.done()) + self._prefetch)
                acks, self._acks = self._acks, []
                self._sending.append(acks)
                try:
                    reply = await self._scripts["FETCH"](
                        keys=self._keys,
                        args=[
                            want,
                            self.consumer_id,
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
                if len(reply) > 2:
                    await self._hand_out(reply[2:])
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
            error = BrokerError(f"fetch from redis at {self.url} failed: {self._error_text(exc)}")
            for waiter, _ in self._waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            self._waiters.clear()
        finally:
            self._pump_task = None
            if self._waiters and not self._closed:  # waiters arrived as we were leaving
                self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    async def _hand_out(self, raws: Sequence[bytes]) -> None:
        bad: list[tuple[bytes, str]] = []
        for raw in raws:
            try:
                self._buffer.append(decode(raw))
            except MalformedMessage as exc:
                bad.append((raw, f"MalformedMessage: {exc}"))
        self._serve_waiters()
        for raw, error in bad:
            self.malformed_total += 1
            self.dead_lettered_total += 1
            self._log.warning("malformed", "src_pool.redis dead-lettered a malformed message: %s", error)
            await self._run("DEAD_LETTER", [raw, error, self._dead_limit], "dead-letter", None)

    async def _reconcile(self) -> None:
        """After a fetch whose reply was lost: re-queue, at the head, whatever
        sits in our processing list that we never received."""
        assert self._client is not None
        backoff = Backoff()
        while not self._closed:
            try:
                held = await self._client.lrange(self._keys[lua.PROCESSING - 1], 0, -1)
                break
            except self._transient as exc:
                self._lost("reconcile", exc)
                await backoff.sleep()
        else:
            return
        known = {e.receipt for e in self._inflight.values()}
        known.update(self._settling.values())
        known.update(e.receipt for e in self._buffer)
        known.update(self._acks)
        for batch in self._sending:
            known.update(batch)
        unknown = [raw for raw in held if raw not in known]
        if unknown:
            n = await self._run("RELEASE", [SIGNAL_CAP, *unknown], "re-queue unreceived items", None)
            logger.info("src_pool.redis re-queued %d items whose fetch reply was lost", n)

    # -- settling -------------------------------------------------------------

    def ack(self, envelope: Envelope) -> None:
        held = self._inflight.get(envelope.id)
        if held is None or held.receipt is not envelope.receipt or id(envelope.receipt) in self._settling:
            raise ValueError(
                f"cannot acknowledge item {envelope.id}: it is not in flight "
                "(already acknowledged, retried, dead-lettered or released)"
            )
        del self._inflight[envelope.id]
        self._acks.append(envelope.receipt)
        self.acked_total += 1
        if self._ack_task is None and self._loop is not None:
            self._ack_task = self._loop.create_task(self._send_acks())

    async def _send_acks(self) -> None:
        """Send buffered acks, all those made since the last send in one
        round trip, until none is left."""
        backoff = Backoff()
        try:
            await asyncio.sleep(0)  # let the acks of this loop iteration gather
            while self._acks:
                batch, self._acks = self._acks, []
                self._sending.append(batch)
                try:
                    await self._scripts["ACK"](keys=self._keys, args=batch)
                    backoff.reset()
                except self._transient as exc:
                    self._acks[:0] = batch
                    self._lost("ack", exc)
                    if self._closed and backoff.failures > 8:
                        return  # left in the processing list: the reaper re-queues them
                    await backoff.sleep()
                finally:
                    self._sending.remove(batch)
        finally:
            self._ack_task = None

    async def flush(self) -> None:
        while self._acks or self._ack_task is not None:
            task = self._ack_task
            if task is None:
                self._ack_task = task = asyncio.get_running_loop().create_task(self._send_acks())
            await asyncio.shield(task)

    # A delivery is told apart by its receipt *object* (the bytes read from
    # Redis for it), not by the item's id: a retried item keeps its id, and its
    # next delivery may arrive before the call that scheduled it has returned.

    def _begin_settle(self, envelope: Envelope, verb: str) -> None:
        held = self._inflight.get(envelope.id)
        if held is None or held.receipt is not envelope.receipt or id(envelope.receipt) in self._settling:
            raise ValueError(
                f"cannot {verb} item {envelope.id}: it is not in flight "
                "(already acknowledged, retried, dead-lettered or released)"
            )
        self._settling[id(envelope.receipt)] = envelope.receipt

    def _end_settle(self, envelopes: Iterable[Envelope]) -> None:
        for envelope in envelopes:
            self._settling.pop(id(envelope.receipt), None)
            held = self._inflight.get(envelope.id)
            if held is not None and held.receipt is envelope.receipt:
                del self._inflight[envelope.id]

    async def retry(self, envelope: Envelope, *, delay: float, error: str) -> None:
        delay = check_timeout(delay, "retry delay") or 0.0
        self._begin_settle(envelope, "retry")
        try:
            raw = self._encode(
                envelope.payload,
                envelope.priority,
                envelope.attempts,
                envelope.id,
                envelope.enqueued_at,
                error,
            )
            await self._run(
                "RETRY", [envelope.receipt, raw, int(delay * 1000), SIGNAL_CAP], "retry", self._deadline()
            )
            self.retried_total += 1
            self._retries_pending = self._retries_pending or delay > 0
        finally:
            self._end_settle([envelope])

    async def dead_letter(self, envelope: Envelope, *, error: str) -> None:
        self._begin_settle(envelope, "dead-letter")
        try:
            await self._run(
                "DEAD_LETTER",
                [envelope.receipt, error[:MAX_ERROR_CHARS], self._dead_limit],
                "dead-letter",
                self._deadline(),
            )
            self.dead_lettered_total += 1
        finally:
            self._end_settle([envelope])

    async def release(self, envelopes: Sequence[Envelope]) -> None:
        for i, envelope in enumerate(envelopes):
            try:
                self._begin_settle(envelope, "release")
            except ValueError:
                for begun in envelopes[:i]:
                    self._settling.pop(id(begun.receipt), None)
                raise
        try:
            if envelopes:
                await self._run(
                    "RELEASE", [SIGNAL_CAP, *(e.receipt for e in envelopes)], "release", self._deadline()
                )
            self.released_total += len(envelopes)
        finally:
            self._end_settle(envelopes)

    # -- upkeep ---------------------------------------------------------------

    async def _upkeep_once(self, deadline: float | None) -> None:
        depth, requeued, dead = await self._run(
            "UPKEEP",
            [
                self.consumer_id,
                self._visibility_ms,
                self._max_attempts,
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
            self.reaped_total += requeued + dead
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
            except RedisUnavailable:
                pass  # logged by _run; try again next beat
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
        out = []
        for entry in reversed(entries):
            head, _, raw = entry.partition(b"\n")
            try:
                meta = json.loads(head)
                error, at = str(meta.get("error")), float(meta.get("at", 0)) / 1000.0
            except ValueError:
                error, at = "unreadable dead-letter header", 0.0
            try:
                envelope: Envelope | None = decode(raw)
            except MalformedMessage:
                envelope = None
            out.append(RedisDeadLetter(error, at, raw, envelope))
        return out

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
        if not self._started:
            return
        await self._stop_tasks()
        for waiter, _ in self._waiters:
            if not waiter.done():
                waiter.set_exception(BrokerClosed("the broker was closed while a consumer waited"))
        self._waiters.clear()
        deadline = time.monotonic() + min(self._connect_timeout, 5.0)
        try:
            if self._buffer:
                buffered = list(self._buffer)
                self._buffer.clear()
                await self._run("RELEASE", [SIGNAL_CAP, *(e.receipt for e in buffered)], "release", deadline)
            if self._acks or self._ack_task is not None:
                await asyncio.wait_for(self.flush(), max(0.1, deadline - time.monotonic()))
            if not self._inflight:
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
            held = await self._client.lrange(self._keys[lua.PROCESSING - 1], 0, -1)
        except self._transient:
            return
        known = {e.receipt for e in self._inflight.values()}
        unknown = [raw for raw in held if raw not in known]
        if unknown:
            await self._run("RELEASE", [SIGNAL_CAP, *unknown], "release", deadline)
        await self._run("LEAVE", [self.consumer_id], "leave", deadline)

    async def _disconnect(self) -> None:
        for client in (self._client, self._blocker):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._client = self._blocker = None
