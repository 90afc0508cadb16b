"""The Redis broker: a pool that spans processes and hosts, losing nothing.

It keeps the contract of :mod:`src_pool.broker` on a plain Redis server
(standalone, 6.2 or later), with the Lua scripts of
:mod:`src_pool.redis_scripts` and the message format of
:mod:`src_pool.redis_codec`. In short (``docs/pool.md`` says why each is so,
``docs/reliability.md`` what is guaranteed):

* one list per priority, FIFO within it, highest priority first;
* a fetch moves items into this consumer's processing list, in one script;
  a heartbeat (the upkeep, once per ``heartbeat_interval``) keeps them there,
  and the reaper gives the items of a consumer whose heartbeat lapsed back to
  the queue, counting a lost delivery (``max_lost_deliveries``, apart from the
  handler's attempts); each start is a new incarnation of the consumer;
* a late settle of an item the reaper gave away changes nothing, counted;
  a message that fails to decode is dead-lettered as it is fetched;
* a round trip per batch, never per item; blocking, never polling;
* lost connections come back with jittered backoff; a refused login fails
  at once; the password never shows; ``replicas=`` makes puts durable.

Payloads are JSON (never pickle), at most ``max_payload_bytes`` encoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from . import redis_scripts as lua
from .backoff import Backoff, persist
from .batches import DEFAULT_MAX_BATCH_BYTES, chunks
from .broker import (
    BrokerClosed,
    BrokerError,
    Envelope,
    PayloadError,
    check_positive_int,
    check_timeout,
)
from .networked import NetworkedBroker
from .redis_acks import AckBatch
from .redis_codec import (
    MAX_ERROR_CHARS,
    MalformedMessage,
    RedisDeadLetter,
    RedisDelivery,
    decode,
    encode,
    unreceived,
)
from .redis_connect import (
    RedisUnavailable,
    auth_errors,
    check_url,
    connect,
    refused_login,
    transient_errors,
)
from .redis_durable import NotReplicated, Replicated
from .redis_inspect import QueueCounts, read_counts, read_dead_letters
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


class RedisBroker(NetworkedBroker):
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
    put round trip. ``replicas``: a put returns only once that many replicas
    have the item (``WAIT``, within ``replica_timeout`` seconds, else it is
    retried): no put that returned is lost in a failover
    (:mod:`src_pool.redis_durable`). ``redis_options`` go to
    ``redis.asyncio.Redis.from_url`` (TLS files, ...). A ``redis+cluster://``
    URL runs on a Redis Cluster.
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
        replicas: int = 0,
        replica_timeout: float = 1.0,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        dead_letter_limit: int = DEFAULT_DEAD_LETTER_LIMIT,
        socket_timeout: float = 10.0,
        connect_timeout: float = 30.0,
        consumer_id: str | None = None,
        redis_options: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"queue name must be 1-200 characters of A-Z a-z 0-9 _ . : -, got {name!r}")
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
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ValueError(f"replicas must be a non-negative integer, got {replicas!r}")
        wait_s = check_timeout(replica_timeout, "replica_timeout") or 0.0
        self._socket_timeout = check_timeout(socket_timeout, "socket_timeout") or 10.0
        self.prefix = f"src_pool:{{{name}}}"
        self.consumer_id = consumer_id or f"{socket.gethostname()}:{os.getpid()}"
        if ":proc:" in self.consumer_id:
            raise ValueError("consumer_id must not contain ':proc:'")
        self._member = f"{self.consumer_id}/{os.urandom(4).hex()}"  # this incarnation
        self._keys = lua.queue_keys(self.prefix, self._member)
        self._high = capacity or 0
        self._low = self._gate.low if self._gate is not None else 0
        self._batch = batch_size
        self._prefetch = prefetch
        self._visibility_ms = int(visibility * 1000)
        self._beat = beat
        self._max_lost = max_lost_deliveries
        self._options = dict(redis_options or {})
        self._replicated = None if not replicas else Replicated(
            self._url, replicas=replicas, timeout_ms=max(1, round(wait_s * 1000)),
            socket_timeout=self._socket_timeout + wait_s, options=self._options,
        )  # fmt: skip
        self._log = ThrottledLog(10.0, log=logger)
        self._transient: tuple[type[BaseException], ...] = ()
        self._auth: tuple[type[BaseException], ...] = ()
        self._client: Redis | None = None
        self._blocker: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._acks = AckBatch(
            lambda: self._scripts["ACK"], self._keys, transient=lambda: self._transient,
            lost=lambda exc: self._lost("ack", exc), settled=self._acks_settled, closed=lambda: self._closed,
        )  # fmt: skip
        self._upkeep_task: asyncio.Task[None] | None = None
        self._depth: int | None = None
        self._depth_at = 0.0
        self._depth_max_age = 3 * beat
        self._retries_pending = False

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

    def _set_depth(self, depth: int) -> None:
        self._depth = int(depth)
        self._depth_at = time.monotonic()

    # -- producing ------------------------------------------------------------

    def _message(self, payload: Any, priority: int) -> tuple[Envelope, bytes]:
        envelope = self._envelope(payload, priority)
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
            pushed, depth = await self._put_script([self._high, self._low, SIGNAL_CAP, *raws], timeout)
            self._set_depth(depth)
            self.stats.put_total += pushed
            raws = raws[pushed:]
            if raws and gate is not None:
                gate.blocked = True  # the server's gate is shut: wait until it reopens

    async def _put_script(self, args: list[Any], timeout: float | None) -> Any:
        deadline = self._deadline(timeout)
        if self._replicated is None:
            return await self._run("PUT", args, "put", deadline)
        put, client = self._replicated.put, self._client
        return await persist(
            lambda: put(client, self._scripts["PUT"], self._keys, args),  # type: ignore[arg-type]
            transient=(*self._transient, NotReplicated),
            lost=lambda exc: self._lost("put", exc),
            give_up=lambda exc: self._give_up("put", exc, deadline),
        )

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

    async def fetch(self, max_items: int = 1) -> list[Envelope]:
        buffered = await self._fetch_start(max_items)
        if buffered is not None:
            return buffered
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
                acks = self._acks.take()
                args = [want, self._member, self._visibility_ms, self._low, SIGNAL_CAP, len(acks), *acks]
                try:
                    reply = await self._scripts["FETCH"](keys=self._keys, args=args)
                except self._transient as exc:
                    self._acks.done(acks, sent=False)
                    self._lost("fetch", exc)
                    await backoff.sleep()
                    await self._reconcile()
                    continue
                self._acks.done(acks, sent=True)
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

    async def _release_unknown(self, deadline: float | None) -> int:
        """Re-queue, at the head, whatever sits in our processing list that
        this process never received (a fetch whose reply was lost). Until
        ``deadline``; None: until the broker is closed."""
        assert self._client is not None
        client, key = self._client, self._keys[lua.PROCESSING - 1]
        try:
            held = await persist(
                lambda: client.lrange(key, 0, -1),
                transient=self._transient,
                lost=lambda exc: self._lost("reconcile", exc),
                give_up=lambda exc: self._give_up("reconcile", exc, deadline),
            )
        except BrokerError:
            return 0
        known = [e.receipt.raw for e in self._deliveries.known()]
        unknown = unreceived(cast(list[bytes], held), known, self._acks.known())
        if not unknown:
            return 0
        return int(await self._run("RELEASE", [SIGNAL_CAP, *unknown], "re-queue unreceived items", deadline))

    async def _reconcile(self) -> None:
        n = await self._release_unknown(None)
        if n:
            logger.info("src_pool.redis re-queued %d items whose fetch reply was lost", n)

    # -- settling -------------------------------------------------------------

    def ack(self, envelope: Envelope) -> None:
        self._deliveries.settle(envelope, "acknowledge")
        self._acks.add(envelope.receipt.raw)

    def _acks_settled(self, sent: int, removed: int) -> None:
        self.stats.acked_total += removed
        if sent > removed:
            self._stale(sent - removed, "acknowledgement")

    def _stale(self, n: int, what: str) -> None:
        self._no_longer_held(n, what, "its heartbeat lapsed past the visibility timeout")

    async def flush(self) -> None:
        await self._acks.flush()

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
        return await read_counts(self._client, self.prefix, self._keys)

    async def dead_letters(self, limit: int = 100) -> list[RedisDeadLetter]:
        """The newest ``limit`` dead letters, oldest first."""
        check_positive_int(limit, "limit")
        self._check_open()
        await self.start()
        assert self._client is not None
        return await read_dead_letters(self._client, self._keys, limit)

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
            if self._acks.pending:
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
        await self._release_unknown(deadline)
        await self._run("LEAVE", [self._member], "leave", deadline)

    async def _disconnect(self) -> None:
        if self._replicated is not None:
            await self._replicated.forget()
        for client in (self._client, self._blocker):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._client = self._blocker = None
