"""A small time-stepped simulation of a worker pool, for classifier tests.

It produces traces from mechanics rather than drawn curves: items arrive,
workers take them by blocking or by polling, each item is one downstream call
that may be rate limited, and a monitor samples the pool every ``interval``.
That is how the seed defects were found, so it is how they are tested.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from qhealth import Sample, TraceHeader

Arrivals = Callable[[float, float, random.Random], int]
"""(t0, t1, rng) -> items arriving during [t0, t1)."""


def poisson(rate: float) -> Arrivals:
    def arrivals(t0: float, t1: float, rng: random.Random) -> int:
        lam = rate * (t1 - t0)
        # Knuth's method: fine for the small lam of one step.
        limit, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= rng.random()
            if p <= limit:
                return k
            k += 1

    return arrivals


def batches(size: int, every: float, phase: float = 0.0) -> Arrivals:
    """``size`` items at once every ``every`` seconds."""

    def arrivals(t0: float, t1: float, rng: random.Random) -> int:
        return size * (math.floor((t1 - phase) / every) - math.floor((t0 - phase) / every))

    return arrivals


def combined(*parts: Arrivals) -> Arrivals:
    return lambda t0, t1, rng: sum(p(t0, t1, rng) for p in parts)


def until(stop: float, inner: Arrivals) -> Arrivals:
    return lambda t0, t1, rng: inner(t0, t1, rng) if t0 < stop else 0


def after(start: float, inner: Arrivals) -> Arrivals:
    return lambda t0, t1, rng: inner(t0, t1, rng) if t0 >= start else 0


@dataclass
class Pool:
    workers: int = 10
    service_s: float = 0.1
    """Mean service time (exponential)."""
    arrivals: Arrivals = field(default_factory=lambda: poisson(20.0))
    capacity: int | None = None
    poll_period: float | None = None
    """None: workers block on the queue. Otherwise they sleep this long
    between polls, all in step (the boom-bust bug) unless ``poll_jitter``."""
    poll_jitter: bool = False
    poll_switch_at: float | None = None
    """With ``poll_period``: polling only from this time on (a bad deploy)."""
    poll_until: float | None = None
    """With ``poll_period``: polling stops (the fix) at this time."""
    rate_limit: float | None = None
    """Downstream calls per second above which it answers 429."""
    retry_after_s: float = 1.0
    hang_at: float | None = None
    """From this time on, every downstream call hangs forever."""
    seed: int = 1

    def run(
        self, duration: float, interval: float = 1.0, dt: float = 0.01, queue: str = "sim"
    ) -> tuple[TraceHeader, list[Sample]]:
        rng = random.Random(self.seed)
        waiting: deque[float] = deque()
        # Per worker: time its current hold ends (inf = hung), or None when not holding an item.
        hold_until: list[float | None] = [None] * self.workers
        wake_at = [
            rng.uniform(0, self.poll_period) if self.poll_jitter and self.poll_period else 0.0
            for _ in range(self.workers)
        ]
        counters = {"enqueued": 0, "processed": 0, "failed": 0, "attempts": 0, "limited": 0}
        idle_s = 0.0
        tokens, token_t = 0.0, 0.0
        samples: list[Sample] = []
        next_sample = 0.0
        steps = round(duration / dt)

        def polling(t: float) -> bool:
            if self.poll_period is None:
                return False
            if self.poll_switch_at is not None and t < self.poll_switch_at:
                return False
            return not (self.poll_until is not None and t >= self.poll_until)

        def call(t: float) -> float:
            """One downstream call starting at t; returns when the worker is free."""
            nonlocal tokens, token_t
            counters["attempts"] += 1
            if self.hang_at is not None and t >= self.hang_at:
                return math.inf
            if self.rate_limit is not None:
                tokens = min(self.rate_limit, tokens + (t - token_t) * self.rate_limit)
                token_t = t
                if tokens < 1:
                    counters["limited"] += 1
                    return -(t + self.retry_after_s * rng.uniform(0.5, 1.5))  # negative: retry at
                tokens -= 1
            return t + rng.expovariate(1.0 / self.service_s)

        retry_at: list[float | None] = [None] * self.workers
        for step in range(steps + 1):
            t = step * dt
            if t + 1e-9 >= next_sample:
                busy = sum(1 for h in hold_until if h is not None)
                samples.append(
                    Sample(
                        t=round(t, 6),
                        depth=len(waiting),
                        workers=self.workers,
                        busy=busy,
                        enqueued_total=counters["enqueued"],
                        processed_total=counters["processed"],
                        failed_total=counters["failed"],
                        attempts_total=counters["attempts"],
                        rate_limited_total=counters["limited"],
                        idle_s_total=round(idle_s, 6),
                    )
                )
                next_sample += interval
            for _ in range(self.arrivals(t, (step + 1) * dt, rng)):
                if self.capacity is None or len(waiting) < self.capacity:
                    waiting.append(t)
                    counters["enqueued"] += 1
            for w in range(self.workers):
                # Finish, or retry after a 429.
                if hold_until[w] is not None and retry_at[w] is not None and t >= (retry_at[w] or 0):
                    end = call(t)
                    if end < 0:
                        retry_at[w] = -end
                    else:
                        retry_at[w] = None
                        hold_until[w] = end
                if hold_until[w] is not None and retry_at[w] is None and t >= (hold_until[w] or 0):
                    hold_until[w] = None
                    counters["processed"] += 1
                if hold_until[w] is None:
                    take = bool(waiting)
                    if polling(t):
                        if t < wake_at[w]:
                            take = False
                        elif not waiting:  # empty poll: sleep until the next period
                            if self.poll_jitter:
                                wake_at[w] = t + rng.uniform(0, self.poll_period or 0)
                            else:
                                period = self.poll_period or 1.0
                                wake_at[w] = (math.floor(t / period) + 1) * period
                            take = False
                    if take:
                        waiting.popleft()
                        end = call(t)
                        hold_until[w] = math.inf
                        if end < 0:
                            retry_at[w] = -end
                        else:
                            hold_until[w] = end
            idle_s += sum(1 for h in hold_until if h is None) * dt
        return TraceHeader(queue=queue, interval_s=interval, capacity=self.capacity), samples
