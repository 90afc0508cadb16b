"""The sliding window: the last few dozen samples of one queue, bounded.

The classifier judges a queue on the window that ends at the newest sample.
Counters are turned into per-interval increases here, once, with counter
resets handled the way Prometheus ``increase()`` handles them: a counter that
goes down means the process restarted, and the new value is the increase since
the restart.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ._sample import Sample


def counter_increase(before: float | None, after: float | None) -> float | None:
    """Increase of a cumulative counter between two readings, reset-aware."""
    if before is None or after is None:
        return None
    if after >= before:
        return after - before
    return after  # reset: the counter restarted from zero


@dataclass(frozen=True, slots=True)
class Interval:
    """What happened between two consecutive samples."""

    start: Sample
    end: Sample
    dt: float
    enqueued: float | None
    processed: float | None
    failed: float | None
    attempts: float | None
    rate_limited: float | None
    idle_s: float | None

    @classmethod
    def between(cls, a: Sample, b: Sample) -> Interval:
        return cls(
            start=a,
            end=b,
            dt=b.t - a.t,
            enqueued=counter_increase(a.enqueued_total, b.enqueued_total),
            processed=counter_increase(a.processed_total, b.processed_total),
            failed=counter_increase(a.failed_total, b.failed_total),
            attempts=counter_increase(a.attempts_total, b.attempts_total),
            rate_limited=counter_increase(a.rate_limited_total, b.rate_limited_total),
            idle_s=counter_increase(a.idle_s_total, b.idle_s_total),
        )

    @property
    def worker_seconds(self) -> float | None:
        """Worker-time available in the interval (trapezoid over the two
        worker counts, so that a pool that scales is not misjudged)."""
        if self.start.workers is None or self.end.workers is None:
            return None
        return (self.start.workers + self.end.workers) / 2 * self.dt


class Window:
    """The samples of the last ``span_s`` seconds, at most ``max_samples`` of them.

    ``span_s`` is the time the window covers: the oldest sample kept is the
    newest one at least ``span_s`` older than the latest, so the window's
    intervals cover the span exactly when sampling is regular.
    """

    def __init__(self, span_s: float, max_samples: int) -> None:
        if not span_s > 0 or not math.isfinite(span_s):
            raise ValueError(f"window span must be a positive number of seconds, got {span_s!r}")
        if max_samples < 2:
            raise ValueError(f"a window needs room for at least 2 samples, got max_samples={max_samples}")
        self.span_s = span_s
        self._samples: deque[Sample] = deque(maxlen=max_samples)
        self._intervals: deque[Interval] = deque(maxlen=max_samples - 1)

    def append(self, sample: Sample) -> None:
        """Add the newest sample and forget the ones that left the window."""
        samples = self._samples
        if samples:
            last = samples[-1]
            if sample.t <= last.t:
                raise ValueError(f"sample times must increase: t={sample.t} after t={last.t}")
            # Both deques are full together (one interval fewer than samples),
            # so their automatic eviction keeps them aligned.
            self._intervals.append(Interval.between(last, sample))
        samples.append(sample)
        horizon = sample.t - self.span_s
        # Drop the oldest sample while the next one still reaches back to the horizon.
        while len(samples) > 2 and samples[1].t <= horizon + 1e-9:
            samples.popleft()
            self._intervals.popleft()

    def clear(self) -> None:
        self._samples.clear()
        self._intervals.clear()

    @property
    def samples(self) -> Sequence[Sample]:
        return self._samples

    @property
    def intervals(self) -> Sequence[Interval]:
        return self._intervals

    @property
    def latest(self) -> Sample | None:
        return self._samples[-1] if self._samples else None

    @property
    def covered_s(self) -> float:
        """Seconds between the oldest and newest sample held."""
        if len(self._samples) < 2:
            return 0.0
        return self._samples[-1].t - self._samples[0].t

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._samples)
