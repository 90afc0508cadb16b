"""When to try a failed item again, and when to give up.

Exponential backoff with *full jitter* (a delay drawn uniformly from
``[0, min(max_delay, base_delay * 2 ** (attempt - 1))]``): workers that failed
together come back spread out instead of together. A rate-limited call that
carries ``Retry-After`` waits at least that long, plus a random extra of up
to ``retry_after_jitter`` of it (and never less than ``base_delay``), so that
the workers told "come back in 2 s" do not all come back at the same instant.

Attempts are bounded: an item whose ``max_attempts``-th attempt fails goes to
the dead-letter queue, and so does one whose handler raises :class:`Reject`
(a malformed payload will not get better by retrying).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .broker import check_positive_int


class Reject(Exception):
    """Raise from a handler to send the item straight to the dead-letter queue."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the pool retries. ``hold_up_to_s``: a retry due within this many
    seconds is made by the worker that holds the item (it stays busy, and
    keeps its place); a later one goes back to the broker so that the worker
    is free meanwhile."""

    max_attempts: int = 8
    base_delay: float = 0.05
    max_delay: float = 30.0
    retry_after_jitter: float = 0.5
    hold_up_to_s: float = 5.0

    def __post_init__(self) -> None:
        check_positive_int(self.max_attempts, "max_attempts")
        for name in ("base_delay", "max_delay", "retry_after_jitter", "hold_up_to_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.base_delay > self.max_delay:
            raise ValueError(f"base_delay ({self.base_delay}) must not exceed max_delay ({self.max_delay})")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter delay before attempt ``attempt + 1`` (``attempt`` >= 1 failed)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 60))
        return rng.uniform(0.0, ceiling)

    def after_rate_limit(self, retry_after: float | None, attempt: int, rng: random.Random) -> float:
        """Delay after a 429: ``Retry-After`` plus jitter, or backoff without one."""
        if retry_after is None:
            return self.backoff(attempt, rng)
        spread = max(self.base_delay, retry_after * self.retry_after_jitter)
        return retry_after + rng.uniform(0.0, spread)
