"""Reconnecting without a thundering herd.

Exponential backoff with full jitter: after the n-th consecutive failure,
sleep ``uniform(0, min(cap, base * 2**n))``. Clients that lost the same
server (Redis, RabbitMQ) then come back spread out instead of all at the same
instant. Shared by the Redis and RabbitMQ brokers and the Redis limiter.
"""

from __future__ import annotations

import asyncio
import random

#: One generator for every backoff: seeding a Random costs more than the work
#: most backoffs guard (a publish, an acquire).
_RNG = random.Random()


class Backoff:
    __slots__ = ("_rng", "base", "cap", "failures")

    def __init__(self, base: float = 0.05, cap: float = 2.0, rng: random.Random | None = None) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base!r} cap={cap!r}")
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or _RNG

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.failures, 30))
        self.failures += 1
        return self._rng.uniform(0, ceiling)

    async def sleep(self) -> None:
        await asyncio.sleep(self.next_delay())

    def reset(self) -> None:
        self.failures = 0
