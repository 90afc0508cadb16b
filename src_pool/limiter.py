"""A token-bucket rate limiter for the workers of one process.

Callers wait in line (FIFO). Only the caller at the head of the line ever
sleeps, for exactly the tokens it still lacks; the others wait on a future
of their own until the head has been served and hands the turn on. That
removes the textbook limiter's failures at once:

* no lock is held, let alone while sleeping: a large request at the head
  waits for its own tokens, and the caller behind it waits for its turn, not
  for a lock that is released only after someone's sleep;
* waiters are served strictly in the order they asked;
* a request larger than the bucket is a ValueError at once instead of a wait
  that never ends;
* the limiter keeps no loop reference (a future exists only while someone
  waits, on that caller's loop), so one made at import time works under any
  event loop, one after the other.

The bucket is counted in *real* time, when a token is actually spent, not in
promised time: if the event loop runs late (a busy neighbour, a long
callback), the callers that were due meanwhile do not all go at once when it
catches up. The bucket holds at most ``burst`` tokens, so at most ``burst``
calls can ever go together, and with the default ``burst=1`` calls stay at
least ``1/rate`` apart, whatever the scheduling. A downstream that counts
calls in a sliding window (no more than ``rate`` in any second) sees at most
``rate`` per second.

The bucket starts **empty** (at ``rate=100`` the first second lets about 100
calls through, not 100 at once plus 100 more) and refills to ``burst`` at most
while idle, so an idle pool resumes at the rate instead of with a spike of
everything that "accrued" while idle. Both are choices a caller can make
explicitly (``start_full=True``, a larger ``burst``), never defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
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

    __slots__ = ("_clock", "_line", "_sleep", "_tokens", "_updated", "burst", "rate")

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
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst if start_full else 0.0
        self._updated = clock()
        self._line: deque[asyncio.Future[None]] = deque()  # waiting callers, head first

    def _refill(self) -> float:
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._tokens, self._updated = tokens, now
        return tokens

    def tokens(self) -> float:
        """Tokens available right now."""
        return self._refill()

    @property
    def waiting(self) -> int:
        """Callers waiting in line."""
        return len(self._line)

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
        tokens = self._check(tokens)
        if self._line or self._refill() < tokens - _EPSILON:
            return False
        self._tokens -= tokens
        return True

    async def acquire(self, tokens: float = 1.0) -> None:
        """Wait for ``tokens``, in line behind every earlier caller."""
        tokens = self._check(tokens)
        line = self._line
        while line and line[0].get_loop().is_closed():  # left behind by a loop that is gone
            line.popleft()
        if not line and self._refill() >= tokens - _EPSILON:
            self._tokens -= tokens
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line.append(turn)
        try:
            if line[0] is not turn:
                await turn  # the caller ahead hands the turn on
            while (missing := tokens - self._refill()) > _EPSILON:
                await self._sleep(missing / self.rate)
            self._tokens -= tokens
        finally:
            with contextlib.suppress(ValueError):  # gone already if its loop closed
                line.remove(turn)
            if line and not line[0].done():
                line[0].set_result(None)  # next, please

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}, burst={self.burst:g})"
