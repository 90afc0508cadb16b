"""The Python back end of :mod:`qhealth._measures`: measures and conditions on a window.

Every node of the definition is computed here the way the PromQL back end
(:mod:`qhealth.rules`) computes it from the exported series, so that the two
agree to rounding on the same samples: means are sums divided by counts,
counter increases are ``last - first`` plus the values lost at resets (as
Prometheus' ``increase()`` does on samples that reach both ends of its range),
and an unknown value stays unknown instead of becoming a fake 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._config import ClassifierConfig
from ._measures import (
    MEASURE,
    SERIES,
    Agg,
    All,
    Any_,
    Both,
    Check,
    Const,
    Diff,
    Earliest,
    Either,
    Field,
    FirstKnown,
    Gated,
    Increase,
    Is,
    Latest,
    Lesser,
    M,
    MaxOfFirst,
    Mean,
    MinOfLast,
    Minus,
    Number,
    Otherwise,
    Part,
    Pred,
    Product,
    Ratio,
    SampleExpr,
    Seconds,
    Series,
    Setting,
    Share,
    Times,
    Total,
    Unknown,
    Unless,
)
from ._sample import Sample

Value = float | None
SeriesFn = Callable[[Sample], Value]

_COUNTER_FIELD = {
    "enqueued": "enqueued_total",
    "processed": "processed_total",
    "attempts": "attempts_total",
    "rate_limited": "rate_limited_total",
    "idle_s": "idle_s_total",
}

#: Tolerance for "a sample at time t belongs to the part": sampling jitter up to this share of the interval.
_EPS = 1e-9


def _compile(expr: SampleExpr, cfg: ClassifierConfig, capacity: int | None) -> SeriesFn:
    """A function of one sample (None when a field it needs is unknown)."""
    match expr:
        case Field(name="capacity"):
            cap = None if capacity is None else float(capacity)
            return lambda s: cap
        case Field(name=name):
            return lambda s: _num(getattr(s, name))
        case Const(value=value):
            return lambda s: value
        case Setting(name=name):
            setting = float(getattr(cfg, name))
            return lambda s: setting
        case Minus(a=a, b=b):
            return _binary(_compile(a, cfg, capacity), _compile(b, cfg, capacity), lambda x, y: x - y)
        case Times(a=a, b=b):
            return _binary(_compile(a, cfg, capacity), _compile(b, cfg, capacity), lambda x, y: x * y)
        case Lesser(a=a, b=b):
            return _binary(_compile(a, cfg, capacity), _compile(b, cfg, capacity), min)
        case Is(a=a, op=op, b=b):
            compare = _COMPARE[op]
            return _binary(
                _compile(a, cfg, capacity),
                _compile(b, cfg, capacity),
                lambda x, y: 1.0 if compare(x, y) else 0.0,
            )
        case Both(a=a, b=b):
            return _binary(_compile(a, cfg, capacity), _compile(b, cfg, capacity), lambda x, y: x * y)
        case Either(a=a, b=b):
            return _binary(
                _compile(a, cfg, capacity), _compile(b, cfg, capacity), lambda x, y: min(x + y, 1.0)
            )
        case Otherwise(a=a, b=b):
            first, second = _compile(a, cfg, capacity), _compile(b, cfg, capacity)

            def otherwise(s: Sample) -> Value:
                value = first(s)
                return value if value is not None else second(s)

            return otherwise
    raise TypeError(f"not a sample expression: {expr!r}")  # pragma: no cover


def _num(value: float | int | None) -> Value:
    return None if value is None else float(value)


def _binary(a: SeriesFn, b: SeriesFn, op: Callable[[float, float], float]) -> SeriesFn:
    def apply(s: Sample) -> Value:
        x = a(s)
        if x is None:
            return None
        y = b(s)
        return None if y is None else op(x, y)

    return apply


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda x, y: x >= y,
    ">": lambda x, y: x > y,
    "<": lambda x, y: x < y,
    "==": lambda x, y: x == y,
}


@dataclass(frozen=True, slots=True)
class Row:
    """One sample of the window with the value of every sample series."""

    sample: Sample
    values: tuple[Value, ...]


class SeriesComputer:
    """Computes every sample series of the definition for one queue."""

    def __init__(self, cfg: ClassifierConfig, capacity: int | None) -> None:
        self._fns = tuple(_compile(s.expr, cfg, capacity) for s in SERIES)

    def row(self, sample: Sample) -> Row:
        return Row(sample, tuple(fn(sample) for fn in self._fns))


_INDEX: dict[str, int] = {s.name: i for i, s in enumerate(SERIES)}


class Evaluation:
    """The measures of one window (ending at its newest row), computed on demand.

    ``interval_s`` is the nominal sampling interval, ``span_s`` the window and
    ``recent_s`` its recent part (see :mod:`qhealth._measures` for which
    samples each part takes).
    """

    def __init__(
        self,
        rows: Sequence[Row],
        cfg: ClassifierConfig,
        *,
        interval_s: float,
        span_s: float,
        recent_s: float,
    ) -> None:
        if not rows:
            raise ValueError("cannot evaluate an empty window")
        self.rows = rows
        self.cfg = cfg
        self.interval_s = interval_s
        self._span = {Part.WHOLE: span_s, Part.RECENT: recent_s}
        latest = rows[-1].sample.t
        half = interval_s / 2
        self._sample_start = {
            part: _first_index(rows, latest - length + half + _EPS) for part, length in self._span.items()
        }
        self._counter_start = {
            part: _first_index(rows, latest - length - half + _EPS) for part, length in self._span.items()
        }
        self._memo: dict[tuple[str, Part], Value] = {}

    # -- measures ---------------------------------------------------------------------

    def measure(self, name: str, part: Part = Part.WHOLE) -> Value:
        key = (name, part)
        if key not in self._memo:
            self._memo[key] = self.agg(MEASURE[name].expr(part))
        return self._memo[key]

    def increase(self, counter: str, part: Part = Part.WHOLE) -> Value:
        """A counter's increase over the part (``enqueued``, ``idle_s``, ...)."""
        return self._increase(_COUNTER_FIELD[counter], self._counter_start[part])

    def per_second(self, counter: str, part: Part = Part.WHOLE) -> Value:
        """A counter's increase per second over the part."""
        count, seconds = self.increase(counter, part), self.agg(Seconds(part))
        return None if count is None or seconds is None else count / seconds

    def agg(self, node: Agg) -> Value:
        match node:
            case M(name=name, part=part):
                return self.measure(name, part)
            case Number(value=value):
                return value
            case Setting(name=name):
                return float(getattr(self.cfg, name))
            case Mean(series=series, part=part):
                known = self._known(series, self._sample_start[part])
                return math.fsum(known) / len(known) if known else None
            case Total(series=series, part=part):
                known = self._known(series, self._sample_start[part])
                return math.fsum(known) if known else None
            case Increase(counter=counter, part=part):
                return self._increase(_COUNTER_FIELD[counter], self._counter_start[part])
            case Seconds(part=part):
                seconds = self.rows[-1].sample.t - self.rows[self._counter_start[part]].sample.t
                return seconds if seconds > 0 else None
            case Latest(series=series):
                return self.rows[-1].values[_INDEX[series.name]]
            case Earliest(series=series, part=part):
                return self.rows[self._counter_start[part]].values[_INDEX[series.name]]
            case MaxOfFirst(series=series, fraction=fraction):
                first, _ = self._thirds(fraction)
                known = self._known(series, self._sample_start[Part.WHOLE], first)
                return max(known) if known else None
            case MinOfLast(series=series, fraction=fraction):
                _, last = self._thirds(fraction)
                known = self._known(series, last)
                return min(known) if known else None
            case Ratio(a=a, b=b):
                x, y = self.agg(a), self.agg(b)
                return None if x is None or y is None or y <= 0 else x / y
            case Diff(a=a, b=b):
                x, y = self.agg(a), self.agg(b)
                return None if x is None or y is None else x - y
            case Product(a=a, b=b):
                x, y = self.agg(a), self.agg(b)
                return None if x is None or y is None else x * y
            case Share(a=a):
                x = self.agg(a)
                return None if x is None else min(max(x, 0.0), 1.0)
            case FirstKnown(a=a, b=b):
                x = self.agg(a)
                return x if x is not None else self.agg(b)
            case Gated(a=a, gate=gate):
                return self.agg(a) if self.holds(gate) else None
        raise TypeError(f"not a window measure: {node!r}")  # pragma: no cover

    def _known(self, series: Series, start: int, stop: int | None = None) -> list[float]:
        index = _INDEX[series.name]
        rows = self.rows
        end = len(rows) if stop is None else stop
        return [v for i in range(start, end) if (v := rows[i].values[index]) is not None]

    def _increase(self, field: str, start: int) -> Value:
        """``last - first`` over the known values, plus the value before each reset."""
        first: float | None = None
        previous = 0.0
        lost = 0.0
        for i in range(start, len(self.rows)):
            value = getattr(self.rows[i].sample, field)
            if value is None:
                continue
            if first is None:
                first = value
            elif value < previous:
                lost += previous
            previous = value
        if first is None:
            return None
        return previous - first + lost

    def _thirds(self, fraction: int) -> tuple[int, int]:
        """Row indexes: end of the window's oldest ``1/fraction`` and start of its newest."""
        span, interval = self._span[Part.WHOLE], self.interval_s
        count = max(1, round(span / interval))
        k = max(1, count // fraction)
        latest = self.rows[-1].sample.t
        first_end = _first_index(self.rows, latest - (count - k) * interval + interval / 2 + _EPS)
        last_start = _first_index(self.rows, latest - k * interval + interval / 2 + _EPS)
        return first_end, last_start

    # -- predicates -------------------------------------------------------------------

    def check(self, pred: Pred) -> bool | None:
        """True, False, or None when a measure it needs is unknown."""
        match pred:
            case Check(a=a, op=op, b=b):
                x, y = self.agg(a), self.agg(b)
                if x is None or y is None:
                    return None
                return _COMPARE[op](x, y)
            case All(preds=preds):
                results = [self.check(p) for p in preds]
                if False in results:
                    return False
                return None if None in results else True
            case Any_(preds=preds):
                results = [self.check(p) for p in preds]
                if True in results:
                    return True
                return None if None in results else False
            case Unless(a=a, b=b):
                held = self.check(a)
                if not held:
                    return held
                return not self.check(b)
            case Unknown(a=a):
                return self.agg(a) is None
        raise TypeError(f"not a predicate: {pred!r}")  # pragma: no cover

    def holds(self, pred: Pred) -> bool:
        return self.check(pred) is True


def _first_index(rows: Sequence[Row], t_min: float) -> int:
    """The index of the first row at or after ``t_min`` (rows are in time order)."""
    lo, hi = 0, len(rows)
    while lo < hi:
        mid = (lo + hi) // 2
        if rows[mid].sample.t < t_min:
            lo = mid + 1
        else:
            hi = mid
    return min(lo, len(rows) - 1)
