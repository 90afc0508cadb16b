"""A plain sliding window: the samples of the last ``span_s`` seconds of one queue, bounded.

What :func:`qhealth._classifier.judge` and the reference evaluation (a full recomputation
over the window, :class:`~qhealth._evaluate.ScanPrimitives`) read. The
classifier itself keeps a compact window with running sums
(:class:`~qhealth._running.RunningWindow`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from ._evaluate import Row
from ._sample import Sample


def counter_increase(before: float | None, after: float | None) -> float | None:
    """Increase of a cumulative counter between two readings, reset-aware: a
    counter that goes down means the process restarted, and the new value is
    the increase since the restart (as Prometheus ``increase()`` reads it)."""
    if before is None or after is None:
        return None
    if after >= before:
        return after - before
    return after


class _SampleView(Sequence[Sample]):
    """The window's samples, without copying them."""

    def __init__(self, rows: deque[Row]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        return self._rows[index].sample

    def __iter__(self) -> Iterator[Sample]:
        return (row.sample for row in self._rows)


class Window:
    """The samples of the last ``span_s`` seconds, at most ``max_samples`` of them.

    ``span_s`` is the time the window covers: the oldest sample kept is the
    newest one at least ``span_s`` older than the latest, so that counter
    increases cover the span exactly when sampling is regular. ``row`` turns a
    sample into the record kept for it (default: the sample alone).
    """

    def __init__(self, span_s: float, max_samples: int, row: Callable[[Sample], Row] | None = None) -> None:
        if not span_s > 0 or not math.isfinite(span_s):
            raise ValueError(f"window span must be a positive number of seconds, got {span_s!r}")
        if max_samples < 2:
            raise ValueError(f"a window needs room for at least 2 samples, got max_samples={max_samples}")
        self.span_s = span_s
        self._row = row or (lambda s: Row(s, ()))
        self._rows: deque[Row] = deque(maxlen=max_samples)

    def append(self, sample: Sample) -> None:
        """Add the newest sample and forget the ones that left the window."""
        rows = self._rows
        if rows and sample.t <= rows[-1].sample.t:
            raise ValueError(f"sample times must increase: t={sample.t} after t={rows[-1].sample.t}")
        rows.append(self._row(sample))
        horizon = sample.t - self.span_s
        # Drop the oldest sample while the next one still reaches back to the horizon.
        while len(rows) > 2 and rows[1].sample.t <= horizon + 1e-9:
            rows.popleft()

    def clear(self) -> None:
        self._rows.clear()

    @property
    def rows(self) -> Sequence[Row]:
        return self._rows

    @property
    def samples(self) -> Sequence[Sample]:
        return _SampleView(self._rows)

    @property
    def latest(self) -> Sample | None:
        return self._rows[-1].sample if self._rows else None

    @property
    def covered_s(self) -> float:
        """Seconds between the oldest and newest sample held."""
        if len(self._rows) < 2:
            return 0.0
        return self._rows[-1].sample.t - self._rows[0].sample.t

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)
