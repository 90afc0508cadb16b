"""One rate limit shared by every process and host, through Redis.

The same algorithm as the local :class:`src_pool.limiter.TokenBucket` (GCRA,
"virtual scheduling"), with the bucket's one number kept in a Redis key and
updated by one Lua script: one round trip per acquire, whatever the number of
waiters. Each caller *reserves* its tokens in that round trip and learns when
they are due, then sleeps on its own: no lock anywhere, waiters served in the
order their reservations reached Redis (FIFO across processes), and a caller
that must wait never asks again.

Time is the Redis server's clock (``TIME``), so hosts with skewed clocks
share one schedule. The bucket starts empty and holds at most ``burst``
tokens (default 1): the first second at ``rate=100`` lets about 100 calls
through, and an idle pause is followed by the rate, not by a spike. The key
expires once the bucket would be full again, so idle limits cost no memory
(and come back empty, which errs on the slow side).

A reserved slot is when a caller *may* go, not when it does: an event loop
that runs late wakes several overdue callers at once, and they would reach
the API together. So after its slot a caller also passes a local,
spend-time gate of the same rate and burst (part 1's :class:`TokenBucket`,
full at start, no round trip): an on-time caller goes straight through, and
callers released together by a late loop go out spaced at the rate.

A caller cancelled while it waits gives its tokens back if nobody reserved
after it (a compare-and-set, one more round trip, only on cancellation).
A lost connection is retried with jittered backoff; a reply lost with it
leaves its reservation unused, which again errs on the slow side.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .backoff import persist
from .limiter import TokenBucket
from .redis_connect import (
    RedisUnavailable,
    abandon,
    auth_errors,
    check_url,
    connect,
    redact_url,
    refused_login,
    scrub,
    transient_errors,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: ARGV: cost (µs), window (µs: burst / rate). The key holds the time (µs,
#: server clock) at which the bucket is empty again after every reservation
#: made so far. Returns {delay µs, previous value, new value} as strings.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
local zero = tonumber(redis.call('GET', KEYS[1]) or now)
local start = math.max(zero, now - window)
local ready = start + tonumber(ARGV[1])
local ttl = math.ceil((ready - now + window) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', ready), 'PX', ttl)
return {string.format('%.0f', ready - now), string.format('%.0f', start), string.format('%.0f', ready)}
"""

#: ARGV: the value this caller set, the value before it. Undo the
#: reservation only if nobody reserved after it.
REFUND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local ttl = redis.call('PTTL', KEYS[1])
  redis.call('SET', KEYS[1], ARGV[2], 'PX', math.max(ttl, 1000))
  return 1
end
return 0
"""


class RedisRateLimiter:
    """``rate`` tokens per second shared by everyone using ``name`` on the
    server at ``url``; at most ``burst`` at a time.

    Holds no event loop until it is used, so it can be made at import time;
    its connection belongs to the loop that first used it (a later loop gets
    its own). ``await limiter.aclose()`` closes the current loop's connection.
    """

    def __init__(
        self,
        url: str,
        name: str,
        rate: float,
        burst: float = 1.0,
        *,
        connect_timeout: float = 10.0,
        redis_options: dict[str, Any] | None = None,
    ) -> None:
        self._url = check_url(url)
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ValueError(f"limiter name must be a non-empty string without spaces, got {name!r}")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not (0 < rate < math.inf):
            raise ValueError(f"rate must be a positive number of tokens per second, got {rate!r}")
        if isinstance(burst, bool) or not isinstance(burst, int | float) or not (0 < burst < math.inf):
            raise ValueError(
                f"burst must be a positive number of tokens (the most spent at once), got {burst!r}"
            )
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be positive, got {connect_timeout!r}")
        self.name = name
        self.key = f"src_pool:limit:{{{name}}}"
        self.rate = float(rate)
        self.burst = float(burst)
        self._interval_us = 1e6 / self.rate
        self._window_us = round(self.burst * self._interval_us)
        self._connect_timeout = connect_timeout
        self._options = dict(redis_options or {})
        self._client: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._acquire: Any = None
        self._refund: Any = None
        self._pacer = TokenBucket(self.rate, self.burst, start_full=True)

    def __repr__(self) -> str:
        url = redact_url(self._url)
        return f"RedisRateLimiter({url!r}, {self.name!r}, rate={self.rate:g}, burst={self.burst:g})"

    def _check(self, tokens: float) -> float:
        if isinstance(tokens, bool) or not isinstance(tokens, int | float) or not tokens > 0:
            raise ValueError(f"tokens must be a positive number, got {tokens!r}")
        if tokens > self.burst:
            raise ValueError(
                f"cannot acquire {tokens:g} tokens at once: more than the bucket holds "
                f"(burst {self.burst:g}); split the request or raise burst"
            )
        return float(tokens)

    def _connection(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            if self._client is not None:
                abandon(self._client)  # its loop has moved on: it cannot be awaited any more
            self._client = connect(self._url, blocking=False, socket_timeout=5.0, options=self._options)
            self._loop = loop
            self._acquire = self._client.register_script(ACQUIRE)
            self._refund = self._client.register_script(REFUND)
        return self._acquire

    async def acquire(self, tokens: float = 1.0) -> None:
        """Wait for ``tokens``, in line behind every earlier reservation."""
        cost = round(self._check(tokens) * self._interval_us)
        script = self._connection()
        deadline = time.monotonic() + self._connect_timeout

        def give_up(exc: BaseException) -> BaseException | None:
            if isinstance(exc, auth_errors()):
                return refused_login(self._url, exc)
            if time.monotonic() < deadline:
                return None
            text = scrub(f"{type(exc).__name__}: {exc}", self._url)
            return RedisUnavailable(f"rate limiter: redis at {redact_url(self._url)} unreachable: {text}")

        delay_us, before, after = await persist(
            lambda: script(keys=[self.key], args=[cost, self._window_us]),
            transient=transient_errors(),
            lost=lambda _: None,
            give_up=give_up,
        )
        delay = int(delay_us) / 1e6
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                # Best effort: an unused reservation only slows the others down.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._refund(keys=[self.key], args=[after, before]))
                raise
        if not self._pacer.try_acquire(tokens):
            await self._pacer.acquire(tokens)

    async def aclose(self) -> None:
        """Close the connection of the current event loop's client."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None
