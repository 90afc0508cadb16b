"""Reconnecting without a thundering herd.

Exponential backoff with full jitter: after the n-th consecutive failure,
sleep ``uniform(0, min(cap, base * 2**n))``. Clients that lost the same
server (Redis, RabbitMQ) then come back spread out instead of all at the same
instant. :func:`persist` is the one retry loop of the brokers, the limiter
and the semaphore: try, and on a lost connection report it, decide whether
to go on, back off, and try again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

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


def never(_: BaseException) -> BaseException | None:
    """A ``give_up`` that never gives up."""
    return None


async def persist(
    attempt: Callable[[], Awaitable[T]],
    *,
    transient: tuple[type[BaseException], ...],
    lost: Callable[[BaseException], None],
    give_up: Callable[[BaseException], BaseException | None] = never,
    backoff: Backoff | None = None,
) -> T:
    """``await attempt()`` until it returns. When it raises one of
    ``transient``: ``lost(exc)`` reports it (count, log), then ``give_up(exc)``
    may return an exception to raise instead (a deadline passed, the broker
    closed, a refused login that no retry can cure); otherwise sleep a
    jittered backoff and try again. Anything else propagates at once."""
    backoff = backoff or Backoff()
    while True:
        try:
            return await attempt()
        except transient as exc:
            lost(exc)
            stop = give_up(exc)
            if stop is not None:
                raise stop from None
            await backoff.sleep()
