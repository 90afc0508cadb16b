"""The simulated downstream API: a real rate limit, answered with HTTP 429.

Both pools of the demo call an API like the ones people rate-limit against (an
LLM, a webhook receiver, an email provider): a call takes some time, and a
call above the limit is refused at once with 429 and a ``Retry-After`` header.
The limit is a token bucket on the server side (``burst`` calls at once, then
``rate`` per second), so it is enforced for real, whatever the client does.

A refused call raises :class:`RateLimited`, which carries ``status_code = 429``,
a ``Retry-After`` header and a ``retry_after`` attribute, the way httpx,
requests, openai or anthropic exceptions do: ``qhealth.ratelimit.is_rate_limited`` and
``qhealth.ratelimit.retry_after_s`` recognise it, and so does ``src_pool`` through them.

The API also keeps the ids of the items it served, which is how the demo
proves that no item was lost (or served twice): by identity, not by counts.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


class RateLimited(Exception):
    """HTTP 429 Too Many Requests, with ``Retry-After`` in whole seconds."""

    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"429 Too Many Requests (Retry-After: {retry_after})")
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class SimulatedAPI:
    """A downstream service with a rate limit of ``rate`` calls/s (``burst`` at once).

    A served call takes ``latency_s`` on average (uniformly 0.5x to 1.5x of
    it); a refused one answers after ``reject_latency_s``. ``clock``, ``sleep``
    and ``rng`` are injectable so that tests need not wait.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        latency_s: float = 0.25,
        reject_latency_s: float = 0.05,
        rng: random.Random | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"the API's rate limit must be a positive number of calls/s, got {rate!r}")
        if latency_s < 0 or reject_latency_s < 0:
            raise ValueError("API latencies must not be negative")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, self.rate / 4)
        from src_pool import TokenBucket  # the same algorithm a real API gateway runs (GCRA)

        # The server's bucket starts full, as a real API's does after a quiet spell.
        self._bucket = TokenBucket(self.rate, self.burst, start_full=True, clock=clock)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random(0)
        self.latency_s = latency_s
        self.reject_latency_s = reject_latency_s
        self.calls = 0
        """Calls received, served or refused."""
        self.refused = 0
        """Calls answered 429."""
        self.served: set[int] = set()
        """Ids of the items served (a call that returned)."""
        self.served_twice = 0
        """Calls that served an item already served (at-least-once delivery shows up here)."""

    async def call(self, item: int) -> None:
        """Serve ``item``, or raise :class:`RateLimited` when over the limit."""
        self.calls += 1
        if not self._bucket.try_acquire():
            self.refused += 1
            # Retry-After is whole seconds in HTTP: round the wait up, never down.
            wait = max(0.0, -self._bucket.tokens() + 1.0) / self.rate
            await self._sleep(self.reject_latency_s)
            raise RateLimited(max(1, math.ceil(wait)))
        await self._sleep(self.latency_s * self._rng.uniform(0.5, 1.5))
        if item in self.served:
            self.served_twice += 1
        else:
            self.served.add(item)
