"""The buckets of one histogram of one queue, shared by the Prometheus and
OpenTelemetry exporters: both fold each tick's waits and durations into them."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Buckets:
    """Cumulative observations of one histogram of one queue. Immutable: a tick
    makes a new one, so a scrape never sees half an update, and an export can
    tell by identity whether it changed."""

    counts: tuple[int, ...]
    """Per bucket, not cumulative; the last one above the highest bound."""
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> Buckets:
        return cls((0,) * (len(bounds) + 1))

    @property
    def count(self) -> int:
        return sum(self.counts)

    def add(self, bounds: tuple[float, ...], values: Iterable[float]) -> Buckets:
        # A clock that went backwards or a NaN is left out (NaN fails v >= 0).
        good = [v for v in values if v >= 0 and v != math.inf]
        if not good:
            return self
        counts = list(self.counts)
        where = bisect.bisect_left
        for v in good:
            counts[where(bounds, v)] += 1
        return Buckets(tuple(counts), self.total + sum(good), min(self.low, *good), max(self.high, *good))
