"""The demo's workload: Poisson arrivals plus bursts, the same for both pools.

Arrival times come from a seeded generator, so two generators with the same
seed give the same items at the same instants: each pool gets its own copy of
one workload, and the comparison is fair. Arrivals are generated lazily, one
second at a time, so a long run holds no schedule in memory.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Workload:
    """``rate`` items/s on average (Poisson), plus a burst of ``burst_size``
    items spread over ``burst_spread_s`` about every ``burst_every_s`` seconds
    (exponential gaps: bursts are not periodic, as in real traffic)."""

    rate: float
    burst_size: int = 0
    burst_every_s: float = 10.0
    burst_spread_s: float = 1.0

    def __post_init__(self) -> None:
        if self.rate < 0 or self.burst_size < 0:
            raise ValueError("workload rate and burst size must not be negative")
        if self.burst_every_s <= 0 or self.burst_spread_s <= 0:
            raise ValueError("workload burst period and spread must be positive")

    @property
    def mean_rate(self) -> float:
        """Items per second on average, bursts included."""
        return self.rate + self.burst_size / self.burst_every_s

    def arrivals(self, seed: int) -> Iterator[float]:
        """Arrival times in seconds from the start, increasing, without end."""
        rng = random.Random(seed)
        next_poisson = rng.expovariate(self.rate) if self.rate > 0 else float("inf")
        next_burst = rng.expovariate(1.0 / self.burst_every_s) if self.burst_size else float("inf")
        pending: list[float] = []
        second = 0
        while True:
            end = second + 1.0
            while next_poisson < end:
                pending.append(next_poisson)
                next_poisson += rng.expovariate(self.rate)
            while next_burst < end:
                pending.extend(
                    next_burst + rng.uniform(0.0, self.burst_spread_s) for _ in range(self.burst_size)
                )
                next_burst += rng.expovariate(1.0 / self.burst_every_s)
            pending.sort()
            # Burst items may spill into the next second: keep those for later.
            due = [t for t in pending if t < end]
            pending = [t for t in pending if t >= end]
            yield from due
            second += 1
