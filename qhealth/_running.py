"""The classifier's window: compact columns of numbers, with running sums.

A monitor may watch ten thousand queues, each with a window of a few dozen
samples, judged every second. So the window keeps, per sample, only the nine
numbers the measures are made of (time, depth, workers, busy workers and five
counters) in flat ``array`` columns, about 72 bytes a sample, and keeps the
sums that the measures need (of each sample series, over the whole window and
over its recent part) up to date as samples come and go: a new sample adds its
values, one that leaves a part takes its values out. A tick then costs the
same whatever the window's length.

The sample series are recomputed from the three gauges when a sample leaves
(one generated function call) instead of being stored. Sums of whole numbers
(every sample series is one) are exact; they are recomputed from the columns
once per window anyway, so that no rounding can ever build up. Unknown values
are NaN in the columns and None everywhere else.

:class:`RunningWindow` implements :class:`~qhealth._evaluate.Primitives`; the
tests check it against :class:`~qhealth._evaluate.ScanPrimitives` (a full
recomputation) at every sample of every example trace.
"""

from __future__ import annotations

import math
import operator
from array import array
from collections.abc import Iterator, Sequence

from ._codegen import COUNTER_FIELD, Value
from ._evaluate import INDEX, Row, SeriesComputer, quantile
from ._language import Field, Part
from ._measures import SERIES
from ._sample import Sample

_EPS = 1e-9
_NAN = math.nan
_COUNTERS: tuple[str, ...] = tuple(COUNTER_FIELD.values())
_COUNTER_COLUMN = {name: k for k, name in enumerate(_COUNTERS)}
_GAUGES = ("depth", "workers", "busy")
_read_counters = operator.attrgetter(*_COUNTERS)
#: Sample series that are a gauge as it is (series index -> gauge column).
_GAUGE_SERIES = {
    INDEX[series.name]: _GAUGES.index(series.expr.name)
    for series in SERIES
    if isinstance(series.expr, Field) and series.expr.name in _GAUGES
}


def _value(x: float) -> Value:
    return None if math.isnan(x) else x  # NaN is unknown


class _Part:
    """Running sums over one part of the window (the whole, or the recent part)."""

    __slots__ = ("counter_start", "counts", "length", "lost", "sample_start", "sums")

    def __init__(self, length: float, series: int) -> None:
        self.length = length
        self.sample_start = 0
        """Absolute index of the part's first sample for sample measures."""
        self.counter_start = 0
        """Absolute index of the part's first sample for counter measures."""
        self.sums = array("d", bytes(8 * series))  # an array: no float object per sum
        self.counts = [0] * series
        self.lost = [0.0] * len(_COUNTERS)
        """Per counter, the values lost at resets inside the counter part."""


class RunningWindow:
    """The last ``span_s`` seconds of one queue's samples (at most ``max_samples``),
    judged with the sample series of ``series`` every ``interval_s`` seconds; the
    recent part is the last ``recent_s`` seconds."""

    def __init__(
        self, span_s: float, max_samples: int, series: SeriesComputer, *, interval_s: float, recent_s: float
    ) -> None:
        if not span_s > 0 or not math.isfinite(span_s):
            raise ValueError(f"window span must be a positive number of seconds, got {span_s!r}")
        if max_samples < 2:
            raise ValueError(f"a window needs room for at least 2 samples, got max_samples={max_samples}")
        self.span_s = span_s
        self.interval_s = interval_s
        self._series = series
        self._max = max_samples
        self._t = array("d")
        self._gauges = tuple(array("d") for _ in _GAUGES)
        self._unknown = [0] * len(_GAUGES)  # unknown (NaN) values held, per gauge
        self._counters = tuple(array("d") for _ in _COUNTERS)
        self._base = 0  # absolute index of the oldest sample held
        self._resets: dict[int, tuple[float, ...]] = {}  # absolute index -> value lost, per counter
        self._last_known: list[float] = [_NAN] * len(_COUNTERS)
        width = len(series.values(None, None, None))
        self._parts = {Part.WHOLE: _Part(span_s, width), Part.RECENT: _Part(recent_s, width)}
        self._latest: Sample | None = None
        self._latest_values: tuple[Value, ...] = ()
        self._appended = 0

    # -- adding and forgetting -----------------------------------------------------

    def append(self, sample: Sample) -> None:
        """Add the newest sample and forget what left the window."""
        t = sample.t
        if self._latest is not None and t <= self._latest.t:
            raise ValueError(f"sample times must increase: t={t} after t={self._latest.t}")
        self._latest = sample
        index = self._base + len(self._t)
        self._t.append(t)
        depth, workers, busy = sample.depth, sample.workers, sample.busy
        gauges = (
            _NAN if depth is None else float(depth),
            _NAN if workers is None else float(workers),
            _NAN if busy is None else float(busy),
        )
        for k, (column, value) in enumerate(zip(self._gauges, gauges, strict=True)):
            column.append(value)
            if math.isnan(value):
                self._unknown[k] += 1
        lost: list[float] | None = None
        last = self._last_known
        for k, (column, value) in enumerate(zip(self._counters, _read_counters(sample), strict=True)):
            if value is None:
                column.append(_NAN)
                continue
            column.append(value)
            if value < last[k]:  # a reset (NaN, nothing known yet, compares false)
                lost = lost or [0.0] * len(_COUNTERS)
                lost[k] = last[k]
            last[k] = value
        if lost is not None:
            self._resets[index] = tuple(lost)
        values = self._latest_values = self._series.values(
            None if depth is None else float(depth),
            None if workers is None else float(workers),
            None if busy is None else float(busy),
        )
        for part in self._parts.values():
            sums, counts = part.sums, part.counts
            for i, v in enumerate(values):
                if v is not None:
                    sums[i] += v
                    counts[i] += 1
            if lost is not None:
                for k, v in enumerate(lost):
                    part.lost[k] += v
        self._advance(t)
        self._forget(t)
        self._appended += 1
        if self._appended % self._max == 0:
            self._resync()

    def _values_at(self, i: int) -> tuple[Value, ...]:
        """The sample series of the i-th sample held, recomputed from its gauges."""
        depth, workers, busy = self._gauges
        return self._series.values(_value(depth[i]), _value(workers[i]), _value(busy[i]))

    def _leave_samples(self, part: _Part) -> None:
        """The part's first sample leaves its sample measures."""
        values = self._values_at(part.sample_start - self._base)
        sums, counts = part.sums, part.counts
        for i, v in enumerate(values):
            if v is not None:
                sums[i] -= v
                counts[i] -= 1
        part.sample_start += 1

    def _leave_counters(self, part: _Part) -> None:
        """The part's first sample leaves its counter measures."""
        lost = self._resets.get(part.counter_start)
        if lost is not None:
            for k, v in enumerate(lost):
                part.lost[k] -= v
        part.counter_start += 1

    def _advance(self, latest: float) -> None:
        """Move each part's starts past the samples that left it."""
        half = self.interval_s / 2
        times, base = self._t, self._base
        last = len(times) - 1
        for part in self._parts.values():
            sample_from = latest - part.length + half + _EPS
            while part.sample_start - base < last and times[part.sample_start - base] < sample_from:
                self._leave_samples(part)
            counter_from = latest - part.length - half + _EPS
            while part.counter_start - base < last and times[part.counter_start - base] < counter_from:
                self._leave_counters(part)

    def _forget(self, latest: float) -> None:
        """Drop the oldest sample while no part counts it and the next one still
        reaches back to the window's horizon, or while the window is over its bound."""
        horizon = latest - self.span_s + _EPS
        times = self._t
        while len(times) > 2:
            needed = any(self._base in (p.sample_start, p.counter_start) for p in self._parts.values())
            if len(times) <= self._max and (needed or times[1] > horizon):
                break
            for part in self._parts.values():
                if part.sample_start == self._base:
                    self._leave_samples(part)
                if part.counter_start == self._base:
                    self._leave_counters(part)
            for k, gauge in enumerate(self._gauges):
                if math.isnan(gauge[0]):
                    self._unknown[k] -= 1
            for column in (times, *self._gauges, *self._counters):
                del column[0]
            self._resets.pop(self._base, None)
            self._base += 1

    def _resync(self) -> None:
        """Recompute every running sum from the columns."""
        base = self._base
        for part in self._parts.values():
            part.sums = array("d", bytes(8 * len(part.sums)))
            part.counts = [0] * len(part.counts)
            for i in range(part.sample_start - base, len(self._t)):
                for k, v in enumerate(self._values_at(i)):
                    if v is not None:
                        part.sums[k] += v
                        part.counts[k] += 1
            part.lost = [0.0] * len(_COUNTERS)
            for index, lost in self._resets.items():
                if index >= part.counter_start:
                    for k, v in enumerate(lost):
                        part.lost[k] += v

    def clear(self) -> None:
        width = len(self._parts[Part.WHOLE].sums)
        self.__init__(  # type: ignore[misc]
            self.span_s,
            self._max,
            self._series,
            interval_s=self.interval_s,
            recent_s=self._parts[Part.RECENT].length,
        )
        assert len(self._parts[Part.WHOLE].sums) == width

    # -- reading ----------------------------------------------------------------------

    @property
    def latest(self) -> Sample | None:
        return self._latest

    @property
    def oldest_t(self) -> float:
        return self._t[0]

    @property
    def oldest_depth(self) -> int:
        depth = self._gauges[0][0]
        return 0 if math.isnan(depth) else int(depth)

    def extent(self, gauge: str) -> tuple[float, float] | None:
        k = _GAUGES.index(gauge)
        column = self._gauges[k]
        if not self._unknown[k]:
            return (min(column), max(column)) if column else None
        known = [v for v in column if not math.isnan(v)]
        return (min(known), max(known)) if known else None

    def latest_value(self, index: int) -> Value:
        return self._latest_values[index]

    @property
    def covered_s(self) -> float:
        """Seconds between the oldest and newest sample held."""
        times = self._t
        return times[-1] - times[0] if len(times) >= 2 else 0.0

    def __len__(self) -> int:
        return len(self._t)

    def _sample(self, i: int) -> Sample:
        fields = {name: _value(column[i]) for name, column in zip(_GAUGES, self._gauges, strict=True)}
        fields |= {name: _value(column[i]) for name, column in zip(_COUNTERS, self._counters, strict=True)}
        for name in ("depth", "workers", "busy", "enqueued_total", "processed_total"):
            if fields[name] is not None:
                fields[name] = int(fields[name])  # type: ignore[arg-type]
        for name in ("attempts_total", "rate_limited_total"):
            if fields[name] is not None:
                fields[name] = int(fields[name])  # type: ignore[arg-type]
        fields["depth"] = fields["depth"] or 0
        return Sample(t=self._t[i], **fields)  # type: ignore[arg-type]

    @property
    def samples(self) -> Sequence[Sample]:
        """The samples held, as far as the window keeps them (no ``failed_total``)."""
        return [self._sample(i) for i in range(len(self._t))]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    @property
    def rows(self) -> Sequence[Row]:
        """Each sample with its sample series (built when asked: for reasons and tests)."""
        return [Row(self._sample(i), self._values_at(i)) for i in range(len(self._t))]

    # -- the primitives of the measures (qhealth._evaluate.Primitives) ------------------

    def mean(self, index: int, part: Part) -> Value:
        p = self._parts[part]
        count = p.counts[index]
        return p.sums[index] / count if count else None

    def total(self, index: int, part: Part) -> Value:
        p = self._parts[part]
        return p.sums[index] if p.counts[index] else None

    def increase(self, field: str, part: Part) -> Value:
        k = _COUNTER_COLUMN[field]
        if math.isnan(self._last_known[k]):
            return None  # never reported (a source that does not know it): nothing to look for
        p = self._parts[part]
        column = self._counters[k]
        start = p.counter_start - self._base
        for i in range(start, len(column)):
            first = column[i]
            if not math.isnan(first):
                # Resets after the first known value only: what came before it is outside the part.
                lost = p.lost[k]
                before = self._resets.get(self._base + i)
                if before is not None:
                    lost -= before[k]
                return self._last_known[k] - first + lost
        return None

    def seconds(self, part: Part) -> Value:
        times = self._t
        seconds = times[-1] - times[self._parts[part].counter_start - self._base]
        return seconds if seconds > 0 else None

    def earliest(self, index: int, part: Part) -> Value:
        return self._values_at(self._parts[part].counter_start - self._base)[index]

    def _thirds(self, fraction: int) -> tuple[int, int]:
        count = max(1, round(self.span_s / self.interval_s))
        k = max(1, count // fraction)
        times = self._t
        latest, half = times[-1], self.interval_s / 2
        first_end = _first_at(times, latest - (count - k) * self.interval_s + half + _EPS)
        last_start = _first_at(times, latest - k * self.interval_s + half + _EPS)
        return first_end, last_start

    def _known(self, index: int, start: int, stop: int) -> list[float]:
        """The known values of a series over samples ``start:stop`` (a gauge read straight
        from its column, any other series recomputed)."""
        column = _GAUGE_SERIES.get(index)
        if column is not None:
            gauge = self._gauges[column]
            if not self._unknown[column]:  # every value known: no filtering
                return gauge[start:stop].tolist()
            return [v for v in gauge[start:stop] if not math.isnan(v)]
        return [v for i in range(start, stop) if (v := self._values_at(i)[index]) is not None]

    def low_quartile(self, index: int, part: Part) -> Value:
        start = self._parts[part].sample_start - self._base
        return quantile(0.25, self._known(index, start, len(self._t)))

    def max_of_first(self, index: int, fraction: int) -> Value:
        first_end, _ = self._thirds(fraction)
        known = self._known(index, self._parts[Part.WHOLE].sample_start - self._base, first_end)
        return max(known) if known else None

    def min_of_last(self, index: int, fraction: int) -> Value:
        _, last_start = self._thirds(fraction)
        known = self._known(index, last_start, len(self._t))
        return min(known) if known else None


def _first_at(times: array[float], t_min: float) -> int:
    """The index of the first time at or after ``t_min``."""
    lo, hi = 0, len(times)
    while lo < hi:
        mid = (lo + hi) // 2
        if times[mid] < t_min:
            lo = mid + 1
        else:
            hi = mid
    return min(lo, len(times) - 1)
