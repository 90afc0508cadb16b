"""A concurrency cap shared by every process and host, through Redis.

``asyncio.Semaphore(3)`` caps the calls of one process: two processes, each
with "a cap of 3", made 6 concurrent calls. :class:`RedisSemaphore` keeps the
count on the server, so ``limit`` holds across every process and host that
uses the same ``name``.

Leases
    A holder is a member of a sorted set scored by the end of its lease (the
    server's clock, ``TIME``, so hosts with skewed clocks agree). While a
    process holds slots, one background task renews all of them every
    ``lease_s / 3`` in one round trip, and stops when it holds none (an idle
    semaphore sends nothing). A holder that dies (SIGKILL, a lost host, a
    partition) stops renewing, and its slot comes back when its lease ends:
    a lease must outlast the longest stall of the holder's event loop. A
    lease that lapsed all the same is claimed back at the next renewal if a
    slot is free, else reported lost (a warning, :attr:`lost_total`): that
    call then runs beyond the cap.

Acquiring
    One Lua script drops ended leases, takes a slot when one is free and no
    one waits ahead, and otherwise puts the caller in line: one round trip
    when a slot is free. A retry whose reply was lost finds its slot taken
    already (the same holder id), so a lost reply never costs a slot.

Waiting, without polling
    Waiters line up in a sorted set by arrival: first come, first served
    across processes. Within a process they line up locally, and only the
    first one talks to Redis, so each process has one place in the shared
    line at a time and processes take turns. That waiter blocks in BLPOP on
    its process's wake-up list; a release (and any script that finds free
    slots) pushes a token to the lists of the waiters that may now go. The
    BLPOP's timeout is bounded: until the earliest lease ends (a dead
    holder's slot is taken on time) and at most ``lease_s / 3``, which also
    keeps the waiter's place in line alive. A waiter that died leaves the
    line ``lease_s`` after its last re-check, so no one waits behind it for
    ever; a waiter that times out or is cancelled leaves at once.

Keys
    ``src_pool:sem:{name}:`` ``holders``, ``line``, ``alive`` (sorted sets,
    gone when empty), ``wake:<process>`` (expire after a lease) and ``seq``
    (the arrival counter: one integer that stays).

Connections
    ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs, AUTH in the URL,
    a standalone server (wake-up lists are named by the scripts, like the
    broker's processing lists: every key shares the ``{name}`` hash tag). A
    lost connection is retried with jittered backoff; an acquire gives up
    with :class:`~src_pool.redis_connect.RedisUnavailable` after
    ``connect_timeout`` seconds without the server. The password never
    appears in an error, a log line or a ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .backoff import Backoff
from .broker import check_timeout
from .redis_connect import (
    RedisUnavailable,
    abandon,
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

MAX_LIMIT = 100_000
MIN_LEASE_S = 0.1
MAX_LEASE_S = 86_400.0
#: Shortest BLPOP: Redis counts its timeout in milliseconds, and 0 means for ever.
MIN_WAIT_S = 0.01
_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")

# KEYS (every script): 1 holders (zset: holder id -> end of lease, ms),
# 2 line (zset: ticket -> arrival number), 3 alive (zset: ticket -> end of
# its place in line, ms), 4 the arrival counter, 5 the caller's wake-up list.
# A ticket (and holder id) is "<process instance>|<n>": the scripts find a
# waiter's wake-up list, "<prefix>:wake:<process instance>", from it.
_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Drop ended leases and abandoned places in line; the slots free now.
local function purge(now, limit)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  for _, t in ipairs(gone) do redis.call('ZREM', KEYS[2], t) end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now) end
  return limit - redis.call('ZCARD', KEYS[1])
end
-- Tell the first n waiters in line to try again (one token each, at most one waiting per list).
local function wake(n, ttl, prefix)
  if n <= 0 then return end
  for _, t in ipairs(redis.call('ZRANGE', KEYS[2], 0, n - 1)) do
    local bar = string.find(t, '|', 1, true)
    if bar then
      local key = prefix .. ':wake:' .. string.sub(t, 1, bar - 1)
      redis.call('LPUSH', key, '1')
      redis.call('LTRIM', key, 0, 0)
      redis.call('PEXPIRE', key, ttl)
    end
  end
end
"""

#: ARGV: holder id, lease ms, limit, wait (1: take a place in line), prefix.
#: Returns {1, 0} with the slot taken, or {0, ms until the earliest lease ends}.
ACQUIRE = (
    _COMMON
    + """
local id, lease, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
if redis.call('ZSCORE', KEYS[1], id) then  -- a retry whose reply was lost: the slot is ours
  redis.call('ZADD', KEYS[1], now + lease, id)
  return {1, 0}
end
local free = purge(now, limit)
local rank = redis.call('ZRANK', KEYS[2], id)
local ahead = rank or redis.call('ZCARD', KEYS[2])
if ahead < free then
  redis.call('ZADD', KEYS[1], now + lease, id)
  if rank then
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
  end
  redis.call('DEL', KEYS[5])  -- tokens for this process were for this caller
  wake(free - 1, lease, ARGV[5])
  return {1, 0}
end
if ARGV[4] == '1' then
  if not rank then redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), id) end
  redis.call('ZADD', KEYS[3], now + lease, id)
end
wake(free, lease, ARGV[5])  -- those ahead that may go (a token may have been lost)
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then return {0, tonumber(first[2]) - now} end
return {0, lease}
"""
)

#: ARGV: lease ms, limit, holder ids. Extends each lease; one that lapsed is
#: claimed back if a slot is free. Returns the ids that lost their slot.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('ZSCORE', KEYS[1], id)
      or redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') < limit then
    redis.call('ZADD', KEYS[1], now + lease, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
"""

#: ARGV: holder id (or ticket), limit, lease ms, prefix. Gives the slot (or
#: the place in line) up and wakes the waiters that may now go. Returns 1 if
#: a slot was held.
LEAVE = (
    _COMMON
    + """
local held = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
wake(purge(now_ms(), tonumber(ARGV[2])), tonumber(ARGV[3]), ARGV[4])
return held
"""
)


@dataclass(eq=False)
class _Bound:
    """What belongs to one event loop: connections, waiters and leases."""

    loop: asyncio.AbstractEventLoop
    client: Redis
    blocker: Redis  # BLPOP only: its socket timeout covers the longest wait
    acquire: Any
    renew: Any
    leave: Any
    transient: tuple[type[BaseException], ...]
    line: deque[asyncio.Future[None]] = field(default_factory=deque)
    held: dict[str, asyncio.Task[Any] | None] = field(default_factory=dict)  # holder id -> owner
    lost: set[str] = field(default_factory=set)
    renewer: asyncio.Task[None] | None = None
    leaving: set[asyncio.Task[None]] = field(default_factory=set)  # clean-ups after a failed acquire


def _cancel_check() -> Callable[[], None]:
    """A check that raises CancelledError once the current task has been asked
    to stop since the check was made. Python 3.11's ``asyncio.wait_for``, which
    redis-py uses for its socket timeouts, can swallow a cancellation that lands
    as a command completes (fixed in 3.12): a caller cancelled in line must not
    go on waiting for a slot."""
    task = asyncio.current_task()
    if task is None:
        return lambda: None
    before = task.cancelling()

    def check() -> None:
        if task.cancelling() > before:
            raise asyncio.CancelledError

    return check


class _Failures:
    """Consecutive failures to reach the server: the backoff, and since when."""

    __slots__ = ("backoff", "since")

    def __init__(self) -> None:
        self.since = time.monotonic()
        self.backoff = Backoff()


class RedisSemaphore:
    """At most ``limit`` holders at once among everyone using ``name`` on
    the server at ``url``.

    ``async with sem:`` holds a slot around a block; ``await
    sem.acquire(timeout)`` returns a holder id (``TimeoutError`` after
    ``timeout`` seconds) and ``await sem.release()`` gives back the current
    task's most recent slot (or the one whose id it is given). ``lease_s``:
    how long the slot of a holder that stopped renewing (a dead process)
    stays taken. ``connect_timeout``: how long an acquire keeps trying
    without the server. ``redis_options`` go to
    ``redis.asyncio.Redis.from_url`` (TLS files, ...).

    Holds no event loop until used, so it can be made at import time; its
    connections belong to the loop that uses it (a later loop gets its own:
    use it from one loop at a time). ``await sem.aclose()``, once nobody
    waits, gives back what it holds and closes them.
    """

    def __init__(
        self,
        url: str,
        name: str,
        limit: int,
        *,
        lease_s: float = 10.0,
        connect_timeout: float = 10.0,
        redis_options: dict[str, Any] | None = None,
    ) -> None:
        self._url = check_url(url)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"semaphore name must be 1-200 characters of A-Z a-z 0-9 _ . : -, got {name!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
        if (
            isinstance(lease_s, bool)
            or not isinstance(lease_s, int | float)
            or not MIN_LEASE_S <= lease_s <= MAX_LEASE_S
        ):
            raise ValueError(
                f"lease_s must be a number of seconds from {MIN_LEASE_S:g} to {MAX_LEASE_S:g}, "
                f"got {lease_s!r}"
            )
        if (
            isinstance(connect_timeout, bool)
            or not isinstance(connect_timeout, int | float)
            or not 0 < connect_timeout < math.inf
        ):
            raise ValueError(f"connect_timeout must be a positive number of seconds, got {connect_timeout!r}")
        self.name = name
        self.limit = limit
        self.lease_s = float(lease_s)
        self.prefix = f"src_pool:sem:{{{name}}}"
        instance = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}".replace("|", "_")
        self._instance = instance
        self._keys = [
            f"{self.prefix}:holders",
            f"{self.prefix}:line",
            f"{self.prefix}:alive",
            f"{self.prefix}:seq",
            f"{self.prefix}:wake:{instance}",
        ]
        self._lease_ms = round(self.lease_s * 1000)
        self._recheck_s = self.lease_s / 3  # renewals, and the longest a waiter blocks
        self._connect_timeout = float(connect_timeout)
        self._options = dict(redis_options or {})
        self._ids = 0
        self._bound: _Bound | None = None
        self._log = ThrottledLog(10.0, log=logger)
        self.lost_total = 0
        """Leases that lapsed while held and could not be claimed back."""

    def __repr__(self) -> str:
        return (
            f"RedisSemaphore({redact_url(self._url)!r}, {self.name!r}, limit={self.limit}, "
            f"lease_s={self.lease_s:g})"
        )

    @property
    def held(self) -> int:
        """Slots this semaphore holds now (in the current event loop)."""
        return 0 if self._bound is None else len(self._bound.held)

    @property
    def waiting(self) -> int:
        """Callers of this semaphore waiting for a slot."""
        return 0 if self._bound is None else len(self._bound.line)

    # -- connecting -----------------------------------------------------------

    def _bind(self) -> _Bound:
        loop = asyncio.get_running_loop()
        bound = self._bound
        if bound is not None and bound.loop is loop:
            return bound
        if bound is not None:  # its loop has moved on: nothing of it can be awaited any more
            abandon(bound.client)
            abandon(bound.blocker)
        client = connect(self._url, blocking=False, socket_timeout=5.0, options=self._options)
        blocker = connect(
            self._url, blocking=False, socket_timeout=self._recheck_s + 5.0, options=self._options
        )
        self._bound = bound = _Bound(
            loop,
            client,
            blocker,
            client.register_script(ACQUIRE),
            client.register_script(RENEW),
            client.register_script(LEAVE),
            transient_errors(),
        )
        return bound

    def _error_text(self, exc: BaseException) -> str:
        return scrub(f"{type(exc).__name__}: {exc}", self._url)

    def _lost(self, what: str, exc: BaseException) -> None:
        self._log.warning(
            f"lost:{what}",
            "src_pool.redis semaphore %s %s on %s: %s; retrying with backoff",
            self.name,
            what,
            redact_url(self._url),
            self._error_text(exc),
        )

    def _unavailable(self, exc: BaseException) -> RedisUnavailable:
        return RedisUnavailable(
            f"semaphore {self.name!r}: redis at {redact_url(self._url)} unreachable for "
            f"{self._connect_timeout:g} s: {self._error_text(exc)}"
        )

    def _timed_out(self, timeout: float | None, exc: BaseException | None = None) -> TimeoutError:
        why = "" if exc is None else f" (redis unreachable: {self._error_text(exc)})"
        return TimeoutError(
            f"semaphore {self.name!r} (limit {self.limit}): no slot within {timeout:g} s{why}"
        )

    # -- acquiring --------------------------------------------------------------

    async def acquire(self, timeout: float | None = None) -> str:
        """Wait for a slot, behind every earlier caller; its holder id.
        ``timeout=0`` tries once; TimeoutError when no slot came in time."""
        timeout = check_timeout(timeout)
        bound = self._bind()
        line = bound.line
        if timeout == 0 and line:
            raise self._timed_out(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._ids += 1
        holder = f"{self._instance}|{self._ids}"
        turn: asyncio.Future[None] = bound.loop.create_future()
        line.append(turn)
        asked = False  # Redis may know this holder (a slot, or a place in line)
        try:
            if line[0] is not turn:
                try:
                    async with asyncio.timeout(timeout):
                        await turn  # the caller ahead in this process hands the turn on
                except TimeoutError:
                    raise self._timed_out(timeout) from None
            asked = True
            got = await self._take(bound, holder, timeout, deadline)
        except BaseException:
            if asked:  # timed out, cancelled or cut off: Redis may hold a place in line, even a slot
                self._leave_later(bound, holder)
            raise
        finally:
            with contextlib.suppress(ValueError):
                line.remove(turn)
            if line and not line[0].done():
                line[0].set_result(None)  # next, please
        if not got:  # timeout=0 and no slot: Redis holds nothing of this caller
            raise self._timed_out(timeout)
        bound.held[holder] = asyncio.current_task()
        if bound.renewer is None or bound.renewer.done():
            bound.renewer = bound.loop.create_task(
                self._renew_loop(bound), name=f"src_pool.redis semaphore {self.name} renewer"
            )
        return holder

    async def _take(self, bound: _Bound, holder: str, timeout: float | None, deadline: float | None) -> bool:
        """Ask for a slot; until one is free, block on this process's wake-up
        list. False: no slot, and the caller would not wait (``timeout=0``).
        (Only I/O sits in the ``try`` blocks: TimeoutError is an OSError,
        which counts as a lost connection.)"""
        keys = self._keys
        waits = timeout != 0
        args = [holder, self._lease_ms, self.limit, 1 if waits else 0, self.prefix]
        failures: _Failures | None = None
        cancelled = _cancel_check()
        while True:
            cancelled()
            try:
                got, wait_ms = await bound.acquire(keys=keys, args=args)
            except bound.transient as exc:
                failures = await self._after_failure(exc, failures, timeout, deadline)
                continue
            failures = None
            if got:
                return True
            if not waits:
                return False
            wait = min(self._recheck_s, max(MIN_WAIT_S, int(wait_ms) / 1000 + 0.002))
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._timed_out(timeout)
                wait = max(MIN_WAIT_S, min(wait, left))
            cancelled()
            try:
                await bound.blocker.blpop([keys[4]], timeout=wait)
            except bound.transient as exc:
                failures = await self._after_failure(exc, failures, timeout, deadline)

    async def _after_failure(
        self, exc: BaseException, failures: _Failures | None, timeout: float | None, deadline: float | None
    ) -> _Failures:
        """Back off after a lost connection; give up after ``connect_timeout``
        without the server, or at the caller's deadline."""
        self._lost("acquire", exc)
        failures = failures or _Failures()
        now = time.monotonic()
        if now - failures.since >= self._connect_timeout:
            raise self._unavailable(exc) from None
        delay = min(failures.backoff.next_delay(), failures.since + self._connect_timeout - now)
        if deadline is not None:
            if now >= deadline:
                raise self._timed_out(timeout, exc) from None
            delay = min(delay, deadline - now)
        await asyncio.sleep(delay)
        return failures

    # -- releasing ----------------------------------------------------------------

    async def release(self, holder: str | None = None) -> None:
        """Give back the current task's most recent slot (or ``holder``'s).

        The lease stops being renewed at once; when Redis cannot be reached
        the failure is logged, not raised (the call it guarded did run), and
        the slot comes back when its lease ends."""
        bound = self._bound
        if bound is None or bound.loop is not asyncio.get_running_loop():
            raise RuntimeError(f"semaphore {self.name!r}: release() of a slot not held in this event loop")
        if holder is None:
            task = asyncio.current_task()
            holder = next((h for h, owner in reversed(bound.held.items()) if owner is task), None)
            if holder is None:
                raise RuntimeError(f"semaphore {self.name!r}: release() but this task holds no slot")
        elif holder not in bound.held:
            raise RuntimeError(f"semaphore {self.name!r}: release() of {holder!r}, which it does not hold")
        del bound.held[holder]
        bound.lost.discard(holder)
        if not bound.held and bound.renewer is not None:
            bound.renewer.cancel()  # nothing to renew: an idle semaphore sends nothing
            bound.renewer = None
        try:
            await self._leave(bound, holder, budget=min(self.lease_s, self._connect_timeout))
        except asyncio.CancelledError:
            self._leave_later(bound, holder)  # a cancelled release still gives the slot back
            raise
        except Exception as exc:  # the call it guarded did run: log, never fail it
            self._log_leave_failed(exc)

    async def _leave(self, bound: _Bound, holder: str, budget: float) -> None:
        deadline = time.monotonic() + budget
        backoff: Backoff | None = None
        while True:
            try:
                await bound.leave(keys=self._keys, args=[holder, self.limit, self._lease_ms, self.prefix])
                return
            except bound.transient as exc:
                self._lost("release", exc)
                left = deadline - time.monotonic()
                if left <= 0:
                    self._log.warning(
                        "release",
                        "src_pool.redis semaphore %s could not give a slot (or a place in line) back on %s; "
                        "it comes back when its lease ends (%g s)",
                        self.name,
                        redact_url(self._url),
                        self.lease_s,
                    )
                    return
                backoff = backoff or Backoff()
                await asyncio.sleep(min(backoff.next_delay(), left))

    def _leave_later(self, bound: _Bound, holder: str) -> None:
        """Give up a place in line (or a slot whose reply was lost) in the
        background: a caller that timed out or was cancelled returns at once."""
        task = bound.loop.create_task(self._leave(bound, holder, budget=min(2.0, self._connect_timeout)))
        bound.leaving.add(task)
        task.add_done_callback(bound.leaving.discard)
        task.add_done_callback(self._check_done)

    def _check_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._log_leave_failed(exc)

    def _log_leave_failed(self, exc: BaseException) -> None:
        self._log.warning(
            "leave-failed",
            "src_pool.redis semaphore %s: giving a slot back failed (%s); it comes back when its lease ends",
            self.name,
            self._error_text(exc),
        )

    # -- renewing ------------------------------------------------------------------

    async def _renew_loop(self, bound: _Bound) -> None:
        """Every lease_s / 3, extend every lease held, in one round trip."""
        backoff: Backoff | None = None
        while bound.held:
            await asyncio.sleep(self._recheck_s if backoff is None else backoff.next_delay())
            ids = [h for h in bound.held if h not in bound.lost]
            if not ids:
                continue
            try:
                lost = await bound.renew(keys=self._keys[:1], args=[self._lease_ms, self.limit, *ids])
            except bound.transient as exc:
                self._lost("renew", exc)
                backoff = backoff or Backoff(cap=self._recheck_s)
                continue
            except Exception:
                self._log.exception("renew", "src_pool.redis semaphore %s: renewing failed", self.name)
                backoff = backoff or Backoff(cap=self._recheck_s)
                continue
            backoff = None
            for raw in lost:
                holder = raw.decode() if isinstance(raw, bytes) else str(raw)
                if holder in bound.held and holder not in bound.lost:
                    bound.lost.add(holder)
                    self.lost_total += 1
                    self._log.warning(
                        "lost-lease",
                        "src_pool.redis semaphore %s: a lease ran out while held and its slot was taken; "
                        "that call runs beyond the limit of %d (raise lease_s above the longest stall)",
                        self.name,
                        self.limit,
                    )

    # -- closing ---------------------------------------------------------------------

    async def aclose(self) -> None:
        """Give back every slot still held, stop renewing, close the connections."""
        bound, self._bound = self._bound, None
        if bound is None:
            return
        if bound.loop is not asyncio.get_running_loop():
            abandon(bound.client)
            abandon(bound.blocker)
            return
        if bound.renewer is not None:
            bound.renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await bound.renewer
        if bound.leaving:
            _, late = await asyncio.wait(set(bound.leaving), timeout=2.0)
            for task in late:
                task.cancel()
        for holder in list(bound.held):
            await self._leave(bound, holder, budget=min(2.0, self._connect_timeout))
        bound.held.clear()
        for client in (bound.client, bound.blocker):
            with contextlib.suppress(Exception):
                await client.aclose()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()
