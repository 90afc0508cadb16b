"""A token-bucket rate limiter for the workers of one process.

Every caller *reserves* its tokens the moment it asks, then sleeps until they
have accrued; the bucket is two floats and nothing else. That one decision
removes the textbook limiter's failures at once:

* no lock is ever held, let alone while sleeping: each waiter sleeps on its
  own, so a large request never stalls the event loop's other waiters beyond
  their turn;
* waiters are served strictly in the order they asked (FIFO): a reservation
  is a place in line that nobody can overtake;
* it holds no future, lock or loop reference, so a limiter made at import
  time works under any event loop, one after the other;
* a request larger than the bucket is a ValueError at once instead of a wait
  that never ends;
* it is the same algorithm (GCRA, "virtual scheduling") that a shared Redis
  limiter runs in one Lua script, so the local and the shared limit behave
  alike.

The bucket starts **empty** and holds at most ``burst`` tokens (default 1): at
``rate=100`` the first second lets exactly about 100 calls through, and after
an idle pause the pool resumes at the rate instead of with a spike of
everything that "accrued" while idle. Both are choices a caller can make
explicitly (``start_full=True``, a larger ``burst``), never defaults.

A waiter cancelled before its turn gives its tokens back when nobody has
reserved after it; otherwise they are left unused (the limit errs on the slow
side, never the fast one).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol, Self

#: Rounding slack (seconds): 0.7 + 0.1 + 0.1 + 0.1 is not 1.0 in floating point.
_EPSILON = 1e-9


class Limiter(Protocol):
    """What the pool needs from a rate limiter (local or shared through Redis)."""

    async def acquire(self, tokens: float = 1.0) -> None:
        """Return once ``tokens`` may be spent."""
        ...


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` at a time.

    ``clock`` (monotonic seconds) and ``sleep`` are injectable for tests.
    """

    __slots__ = ("_clock", "_interval", "_sleep", "_window", "_zero_at", "burst", "rate")

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        start_full: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not (0 < rate < math.inf):
            raise ValueError(f"rate must be a positive number of tokens per second, got {rate!r}")
        if isinstance(burst, bool) or not isinstance(burst, int | float) or not (0 < burst < math.inf):
            raise ValueError(
                f"burst must be a positive number of tokens (the most spent at once), got {burst!r}"
            )
        self.rate = float(rate)
        self.burst = float(burst)
        self._interval = 1.0 / self.rate
        self._window = self.burst * self._interval  # seconds to fill an empty bucket
        self._clock = clock
        self._sleep = sleep
        now = clock()
        # The bucket holds min(burst, (now - _zero_at) * rate) tokens; _zero_at in
        # the future means tokens already promised to waiters.
        self._zero_at = now - self._window if start_full else now

    def tokens(self) -> float:
        """Tokens available right now (negative: owed to waiters)."""
        now = self._clock()
        return (now - max(self._zero_at, now - self._window)) * self.rate

    def _check(self, tokens: float) -> float:
        if isinstance(tokens, bool) or not isinstance(tokens, int | float) or not tokens > 0:
            raise ValueError(f"tokens must be a positive number, got {tokens!r}")
        if tokens > self.burst:
            raise ValueError(
                f"cannot acquire {tokens:g} tokens at once: more than the bucket holds "
                f"(burst {self.burst:g}); split the request or raise burst"
            )
        return float(tokens)

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Take ``tokens`` if they are available now and nobody waits ahead."""
        cost = self._check(tokens) * self._interval
        now = self._clock()
        start = max(self._zero_at, now - self._window)
        if start + cost > now + _EPSILON:
            return False
        self._zero_at = start + cost
        return True

    async def acquire(self, tokens: float = 1.0) -> None:
        """Wait for ``tokens``, in line behind every earlier caller."""
        cost = self._check(tokens) * self._interval
        now = self._clock()
        start = max(self._zero_at, now - self._window)
        ready_at = start + cost
        self._zero_at = ready_at
        delay = ready_at - now
        if delay <= _EPSILON:
            return
        try:
            await self._sleep(delay)
        except asyncio.CancelledError:
            if self._zero_at == ready_at:  # nobody reserved after us: give the tokens back
                self._zero_at = start
            raise

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}, burst={self.burst:g})"
