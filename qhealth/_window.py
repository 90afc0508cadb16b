"""The sliding window: the last few dozen samples of one queue, bounded, with running sums.

The classifier judges a queue on the window that ends at the newest sample.
Each sample is kept with the value of every sample series of the definition
(:mod:`qhealth._measures`), computed once when it arrives. When the window
knows its sampling interval and recent part, it also keeps what the measures
are made of (:class:`~qhealth._evaluate.Primitives`) as running sums: a new
sample adds its values, a sample leaving the window (or its recent part)
takes its values out, so a tick costs the same whatever the window's length.
Sums of whole numbers (every sample series is one) are exact; the few
non-integer ones are recomputed from the rows once per window, so rounding
can never build up.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ._evaluate import COUNTER_FIELD, Row, first_index, thirds
from ._measures import Part
from ._sample import Sample

_EPS = 1e-9
_COUNTERS = tuple(COUNTER_FIELD.values())


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


@dataclass(slots=True)
class _Part:
    """Running sums over one part of the window (the whole, or the recent part)."""

    length: float
    sample_start: int = 0
    """Absolute index of the part's first sample for sample measures."""
    counter_start: int = 0
    """Absolute index of the part's first sample for counter measures."""
    sums: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    lost: list[float] = field(default_factory=list)
    """Per counter: the values lost at resets, summed over the counter part."""


class Window:
    """The samples of the last ``span_s`` seconds, at most ``max_samples`` of them.

    ``span_s`` is the time the window covers: the oldest sample kept is the
    newest one at least ``span_s`` older than the latest, so that counter
    increases cover the span exactly when sampling is regular. ``row`` turns a
    sample into the record kept for it (default: the sample alone). With
    ``interval_s`` and ``recent_s`` the window keeps running sums for the
    measures of its whole span and of its recent part.
    """

    def __init__(
        self,
        span_s: float,
        max_samples: int,
        row: Callable[[Sample], Row] | None = None,
        *,
        interval_s: float | None = None,
        recent_s: float | None = None,
    ) -> None:
        if not span_s > 0 or not math.isfinite(span_s):
            raise ValueError(f"window span must be a positive number of seconds, got {span_s!r}")
        if max_samples < 2:
            raise ValueError(f"a window needs room for at least 2 samples, got max_samples={max_samples}")
        self.span_s = span_s
        self.interval_s = interval_s
        self._row = row or (lambda s: Row(s, ()))
        self._rows: deque[Row] = deque()
        self._max = max_samples
        self._base = 0  # absolute index of self._rows[0]
        self._lost: deque[tuple[float, ...]] = deque()  # per row: the value lost at a reset, per counter
        self._last_known: list[float | None] = [None] * len(_COUNTERS)
        self._parts: dict[Part, _Part] = {}
        self._appended = 0
        if interval_s is not None and recent_s is not None:
            self._parts = {Part.WHOLE: _Part(span_s), Part.RECENT: _Part(recent_s)}

    # -- adding and forgetting -----------------------------------------------------

    def append(self, sample: Sample) -> None:
        """Add the newest sample and forget the ones that left the window."""
        rows = self._rows
        if rows and sample.t <= rows[-1].sample.t:
            raise ValueError(f"sample times must increase: t={sample.t} after t={rows[-1].sample.t}")
        row = self._row(sample)
        rows.append(row)
        self._lost.append(self._resets(sample))
        if self._parts:
            self._add(row)
            self._advance(sample.t)
        horizon = sample.t - self.span_s
        # Drop the oldest sample while the next one still reaches back to the horizon (and no
        # part still counts it), or when the window is full.
        while len(rows) > 2 and (
            (rows[1].sample.t <= horizon + _EPS and not self._needed(self._base)) or len(rows) > self._max
        ):
            self._pop()
        if self._parts:
            self._appended += 1
            if self._appended % self._max == 0:
                self._resync()

    def _resets(self, sample: Sample) -> tuple[float, ...]:
        """What each counter lost at this sample (its previous known value when it went down)."""
        lost = []
        last = self._last_known
        for k, name in enumerate(_COUNTERS):
            value = getattr(sample, name)
            if value is None:
                lost.append(0.0)
                continue
            previous = last[k]
            lost.append(float(previous) if previous is not None and value < previous else 0.0)
            last[k] = value
        return tuple(lost)

    def _add(self, row: Row) -> None:
        lost = self._lost[-1]
        for part in self._parts.values():
            if not part.sums:
                part.sums = [0.0] * len(row.values)
                part.counts = [0] * len(row.values)
                part.lost = [0.0] * len(_COUNTERS)
            sums, counts = part.sums, part.counts
            for i, value in enumerate(row.values):
                if value is not None:
                    sums[i] += value
                    counts[i] += 1
            part_lost = part.lost
            for k, value in enumerate(lost):
                if value:
                    part_lost[k] += value

    def _advance(self, latest: float) -> None:
        """Move each part's starts past the samples that left it."""
        half = (self.interval_s or 0.0) / 2
        rows, base = self._rows, self._base
        for part in self._parts.values():
            sample_from = latest - part.length + half + _EPS
            while (
                part.sample_start - base < len(rows) - 1
                and rows[part.sample_start - base].sample.t < sample_from
            ):
                values = rows[part.sample_start - base].values
                sums, counts = part.sums, part.counts
                for i, value in enumerate(values):
                    if value is not None:
                        sums[i] -= value
                        counts[i] -= 1
                part.sample_start += 1
            counter_from = latest - part.length - half + _EPS
            while (
                part.counter_start - base < len(rows) - 1
                and rows[part.counter_start - base].sample.t < counter_from
            ):
                lost = self._lost[part.counter_start - base]
                for k, value in enumerate(lost):
                    if value:
                        part.lost[k] -= value
                part.counter_start += 1

    def _needed(self, index: int) -> bool:
        return any(index >= p.sample_start or index >= p.counter_start for p in self._parts.values())

    def _pop(self) -> None:
        """Forget the oldest row, taking it out of any part that still counts it."""
        row, lost = self._rows.popleft(), self._lost.popleft()
        for part in self._parts.values():
            if part.sample_start == self._base:
                for i, value in enumerate(row.values):
                    if value is not None:
                        part.sums[i] -= value
                        part.counts[i] -= 1
                part.sample_start += 1
            if part.counter_start == self._base:
                for k, value in enumerate(lost):
                    part.lost[k] -= value
                part.counter_start += 1
        self._base += 1

    def _resync(self) -> None:
        """Recompute the running sums from the rows (sums of floats drift by rounding)."""
        for part in self._parts.values():
            n = len(part.sums)
            part.sums, part.counts = [0.0] * n, [0] * n
            for i in range(part.sample_start - self._base, len(self._rows)):
                for k, value in enumerate(self._rows[i].values):
                    if value is not None:
                        part.sums[k] += value
                        part.counts[k] += 1
            part.lost = [0.0] * len(_COUNTERS)
            for i in range(part.counter_start - self._base, len(self._rows)):
                for k, value in enumerate(self._lost[i]):
                    part.lost[k] += value

    def clear(self) -> None:
        self._rows.clear()
        self._lost.clear()
        self._base = 0
        self._last_known = [None] * len(_COUNTERS)
        if self._parts:
            self._parts = {p: _Part(part.length) for p, part in self._parts.items()}

    # -- reading ------------------------------------------------------------------------

    @property
    def keeps_sums(self) -> bool:
        """Whether the window keeps running sums (it knows its interval and recent part)."""
        return bool(self._parts)

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

    # -- the primitives of the measures (qhealth._evaluate.Primitives) ------------------

    def mean(self, index: int, part: Part) -> float | None:
        p = self._parts[part]
        count = p.counts[index]
        return p.sums[index] / count if count else None

    def total(self, index: int, part: Part) -> float | None:
        p = self._parts[part]
        return p.sums[index] if p.counts[index] else None

    def increase(self, field: str, part: Part) -> float | None:
        k = _COUNTERS.index(field)
        p = self._parts[part]
        rows, base = self._rows, self._base
        first_at = None
        for i in range(p.counter_start - base, len(rows)):
            if getattr(rows[i].sample, field) is not None:
                first_at = i
                break
        if first_at is None:
            return None
        first: float = getattr(rows[first_at].sample, field)
        last = self._last_known[k]
        assert last is not None
        # Resets after the first known value only: what came before it is outside the part.
        lost = p.lost[k] - self._lost[first_at][k]
        return float(last - first + lost)

    def seconds(self, part: Part) -> float | None:
        rows = self._rows
        seconds = rows[-1].sample.t - rows[self._parts[part].counter_start - self._base].sample.t
        return seconds if seconds > 0 else None

    def earliest(self, index: int, part: Part) -> float | None:
        return self._rows[self._parts[part].counter_start - self._base].values[index]

    def max_of_first(self, index: int, fraction: int) -> float | None:
        assert self.interval_s is not None
        first_end, _ = thirds(self._rows, self.interval_s, self.span_s, fraction)
        start = self._parts[Part.WHOLE].sample_start - self._base
        known = [v for i in range(start, first_end) if (v := self._rows[i].values[index]) is not None]
        return max(known) if known else None

    def min_of_last(self, index: int, fraction: int) -> float | None:
        assert self.interval_s is not None
        _, last_start = thirds(self._rows, self.interval_s, self.span_s, fraction)
        known = [
            v for i in range(last_start, len(self._rows)) if (v := self._rows[i].values[index]) is not None
        ]
        return min(known) if known else None


__all__ = ["Window", "counter_increase", "first_index"]
