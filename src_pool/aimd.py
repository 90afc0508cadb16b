"""Adaptive concurrency: additive increase, multiplicative decrease (AIMD).

TCP's answer to congestion, applied to a rate-limited downstream: every 429
cuts the number of workers allowed to take items by ``decrease`` (half, by
default), and every success adds ``increase / limit`` so that the limit grows
by about ``increase`` per round of ``limit`` successes. A 429 storm therefore
damps itself: fewer workers make fewer calls, instead of every rejected call
being retried at once.

Several 429s usually arrive together (every call in flight when the limit was
crossed gets one): they are one congestion signal, so after a cut further
429s are ignored for ``cooldown_s`` seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from .broker import check_positive_int


class AIMD:
    """The allowed concurrency, between ``minimum`` and ``maximum``."""

    __slots__ = ("_clock", "_last_cut", "cooldown_s", "decrease", "increase", "limit", "maximum", "minimum")

    def __init__(
        self,
        maximum: int,
        *,
        minimum: int = 1,
        initial: int | None = None,
        increase: float = 1.0,
        decrease: float = 0.5,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_positive_int(maximum, "AIMD maximum")
        check_positive_int(minimum, "AIMD minimum")
        if minimum > maximum:
            raise ValueError(f"AIMD minimum ({minimum}) must not exceed maximum ({maximum})")
        if initial is None:
            initial = maximum
        if not minimum <= initial <= maximum:
            raise ValueError(f"AIMD initial ({initial!r}) must be within [{minimum}, {maximum}]")
        if not 0 < decrease < 1:
            raise ValueError(f"AIMD decrease must be a factor in (0, 1), got {decrease!r}")
        if not 0 < increase < math.inf:
            raise ValueError(f"AIMD increase must be positive, got {increase!r}")
        if not 0 <= cooldown_s < math.inf:
            raise ValueError(f"AIMD cooldown_s must be a non-negative number of seconds, got {cooldown_s!r}")
        self.maximum = maximum
        self.minimum = minimum
        self.limit = float(initial)
        self.increase = increase
        self.decrease = decrease
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._last_cut = -math.inf

    @property
    def allowed(self) -> int:
        """Workers allowed to take items now."""
        return int(self.limit)

    @property
    def growing(self) -> bool:
        """Below the maximum: successes still raise the limit."""
        return self.limit < self.maximum

    def on_success(self) -> None:
        self.limit = min(self.maximum, self.limit + self.increase / self.limit)

    def on_rate_limited(self) -> bool:
        """A call was answered 429; returns whether the limit was cut."""
        now = self._clock()
        if now - self._last_cut < self.cooldown_s:
            return False
        self._last_cut = now
        self.limit = max(float(self.minimum), self.limit * self.decrease)
        return True

    def __repr__(self) -> str:
        return f"AIMD(limit={self.limit:.2f}, minimum={self.minimum}, maximum={self.maximum})"
