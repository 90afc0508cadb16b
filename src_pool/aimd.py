"""Adaptive concurrency: additive increase, multiplicative decrease (AIMD).

TCP's answer to congestion, applied to a rate-limited downstream: a 429 cuts
the number of workers allowed to take items by ``decrease`` (half, by
default), and while the pool runs without 429s the limit grows back by
``increase`` every ``increase_every_s`` seconds. A 429 storm therefore damps
itself: fewer workers make fewer calls, instead of every rejected call being
retried at once; and the pool probes its way back up slowly, so that at the
edge it costs about one 429 per probe, not a steady stream.

Several 429s usually arrive together: every call in flight when the limit was
crossed gets one. They are one congestion signal. As TCP reacts once per
window, the limit is cut once per *epoch*: a 429 counts only if its call was
made after the last cut (the pool notes the epoch when it makes a call).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from .broker import check_positive_int


class AIMD:
    """The allowed concurrency, between ``minimum`` and ``maximum``."""

    __slots__ = (
        "_clock",
        "_grown_at",
        "decrease",
        "epoch",
        "increase",
        "increase_every_s",
        "limit",
        "maximum",
        "minimum",
    )

    def __init__(
        self,
        maximum: int,
        *,
        minimum: int = 1,
        initial: int | None = None,
        increase: float = 1.0,
        increase_every_s: float = 1.0,
        decrease: float = 0.5,
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
        if not 0 <= increase_every_s < math.inf:
            raise ValueError(f"AIMD increase_every_s must be a non-negative number, got {increase_every_s!r}")
        self.maximum = maximum
        self.minimum = minimum
        self.limit = float(initial)
        self.increase = increase
        self.increase_every_s = increase_every_s
        self.decrease = decrease
        self.epoch = 0
        """Bumped at every cut; a call notes it when it starts."""
        self._clock = clock
        self._grown_at = clock()

    @property
    def allowed(self) -> int:
        """Workers allowed to take items now."""
        return int(self.limit)

    @property
    def growing(self) -> bool:
        """Below the maximum: successes still raise the limit."""
        return self.limit < self.maximum

    def on_success(self) -> None:
        """A call succeeded: grow by ``increase`` if a period passed since the
        last growth (or cut)."""
        now = self._clock()
        if now - self._grown_at >= self.increase_every_s:
            self._grown_at = now
            self.limit = min(float(self.maximum), self.limit + self.increase)

    def on_rate_limited(self, epoch: int | None = None) -> bool:
        """A call made in ``epoch`` (None: now) was answered 429; returns
        whether the limit was cut. A call made before the last cut says
        nothing new and is ignored."""
        if epoch is not None and epoch != self.epoch:
            return False
        self.epoch += 1
        self._grown_at = self._clock()  # growth resumes a full period after a cut
        self.limit = max(float(self.minimum), self.limit * self.decrease)
        return True

    def __repr__(self) -> str:
        return f"AIMD(limit={self.limit:.2f}, minimum={self.minimum}, maximum={self.maximum})"
