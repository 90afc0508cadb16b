"""The Python back end of :mod:`qhealth._measures`: measures and conditions on a window.

Every node of the definition is computed here the way the PromQL back end
(:mod:`qhealth.rules`) computes it from the exported series, so that the two
agree to rounding on the same samples: means are sums divided by counts,
counter increases are ``last - first`` plus the values lost at resets (as
Prometheus' ``increase()`` does on samples that reach both ends of its range),
and an unknown value stays unknown instead of becoming a fake 0.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from . import _language as lang
from ._codegen import COUNTER_FIELD, PRIMITIVE, UNSET, Compiled, SeriesFunction, Value, series_function
from ._config import ClassifierConfig
from ._language import Part
from ._measures import MEASURE, MEASURES, SERIES
from ._sample import Sample

SeriesFn = Callable[[Sample], Value]
_In = TypeVar("_In")
_Out = TypeVar("_Out", float, bool)

#: Tolerance for "a sample at time t belongs to the part": sampling jitter up to this share of the interval.
_EPS = 1e-9


def _compile(expr: lang.SampleExpr, cfg: ClassifierConfig, capacity: int | None) -> SeriesFn:
    """A function of one sample (None when a field it needs is unknown)."""
    match expr:
        case lang.Field(name="capacity"):
            cap = None if capacity is None else float(capacity)
            return lambda s: cap
        case lang.Field(name=name):
            return lambda s: _num(getattr(s, name))
        case lang.Const(value=value):
            return lambda s: value
        case lang.Setting(name=name):
            setting = float(getattr(cfg, name))
            return lambda s: setting
        case lang.Minus(a=a, b=b):
            return _both(_compile(a, cfg, capacity), _compile(b, cfg, capacity), lambda x, y: x - y)
        case lang.Times(a=a, b=b):
            return _both(_compile(a, cfg, capacity), _compile(b, cfg, capacity), lambda x, y: x * y)
        case lang.Over(a=a, b=b):
            over = _both(
                _compile(a, cfg, capacity), _compile(b, cfg, capacity), lambda x, y: x / y if y else _NONE
            )
            return lambda s: None if (v := over(s)) is _NONE else v
        case lang.Lesser(a=a, b=b):
            return _both(_compile(a, cfg, capacity), _compile(b, cfg, capacity), min)
        case lang.Is(a=a, op=op, b=b):
            compare = _COMPARE[op]
            return _both(
                _compile(a, cfg, capacity),
                _compile(b, cfg, capacity),
                lambda x, y: 1.0 if compare(x, y) else 0.0,
            )
        case lang.Both(a=a, b=b):
            return _both(_compile(a, cfg, capacity), _compile(b, cfg, capacity), lambda x, y: x * y)
        case lang.Either(a=a, b=b):
            return _both(_compile(a, cfg, capacity), _compile(b, cfg, capacity), lambda x, y: min(x + y, 1.0))
        case lang.Otherwise(a=a, b=b):
            first, second = _compile(a, cfg, capacity), _compile(b, cfg, capacity)

            def otherwise(s: Sample) -> Value:
                value = first(s)
                return value if value is not None else second(s)

            return otherwise
    raise TypeError(f"not a sample expression: {expr!r}")  # pragma: no cover


_NONE = float("nan")  # a marker for "unknown" inside a binary operation (never a value)


@functools.lru_cache(maxsize=256)
def _series_for(cfg: ClassifierConfig, capacity: int | None) -> SeriesFunction:
    return series_function(SERIES, cfg, capacity)


def _num(value: float | int | None) -> Value:
    return None if value is None else float(value)


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
    """Computes every sample series of the definition for one queue.

    The series depend on the sample's depth, workers and busy workers (and the
    queue's capacity) only; they are compiled once into one generated function
    of those three values, which the window calls for every sample that comes
    and goes: a few hundred nanoseconds, not a walk over the definition. The
    function is shared by every queue of the same configuration and capacity
    (a compiled function costs about 1.5 KB: ten thousand queues share a few).
    """

    def __init__(self, cfg: ClassifierConfig, capacity: int | None) -> None:
        self.values: SeriesFunction = _series_for(cfg, capacity)

    def row(self, sample: Sample) -> Row:
        return Row(sample, self.values(_num(sample.depth), _num(sample.workers), _num(sample.busy)))


INDEX: dict[str, int] = {s.name: i for i, s in enumerate(SERIES)}
"""Where each sample series sits in a row's values."""


class Primitives(Protocol):
    """What window measures are made of, over the whole window or its recent part.

    Two implementations compute the same numbers: :class:`ScanPrimitives`
    recomputes them from the rows at every call (the reference), and
    :class:`qhealth._running.RunningWindow` keeps running sums as samples come and go
    (what the classifier uses: a tick costs the same whatever the window's length).
    """

    @property
    def rows(self) -> Sequence[Row]:
        """Every sample with its series (may be built when asked: for reasons and tests)."""
        ...

    @property
    def latest(self) -> Sample | None: ...

    @property
    def oldest_t(self) -> float:
        """Time of the oldest sample held."""
        ...

    @property
    def oldest_depth(self) -> int: ...

    def extent(self, gauge: str) -> tuple[float, float] | None:
        """(lowest, highest) of a gauge (``depth``, ``busy``, ``workers``) over the window."""
        ...

    def mean(self, index: int, part: Part) -> Value: ...

    def total(self, index: int, part: Part) -> Value: ...

    def increase(self, field: str, part: Part) -> Value: ...

    def seconds(self, part: Part) -> Value: ...

    def earliest(self, index: int, part: Part) -> Value: ...

    def latest_value(self, index: int) -> Value: ...

    def low_quartile(self, index: int, part: Part) -> Value: ...

    def max_of_first(self, index: int, fraction: int) -> Value: ...

    def min_of_last(self, index: int, fraction: int) -> Value: ...


class ScanPrimitives:
    """The primitives of a window recomputed from its rows (``interval_s`` is
    the nominal sampling interval, ``span_s`` the window, ``recent_s`` its
    recent part; :mod:`qhealth._measures` says which samples each part takes)."""

    def __init__(self, rows: Sequence[Row], *, interval_s: float, span_s: float, recent_s: float) -> None:
        if not rows:
            raise ValueError("cannot evaluate an empty window")
        self._rows = rows
        self.interval_s = interval_s
        self.span_s = span_s
        latest = rows[-1].sample.t
        half = interval_s / 2
        lengths = {Part.WHOLE: span_s, Part.RECENT: recent_s}
        self._sample_start = {p: first_index(rows, latest - n + half + _EPS) for p, n in lengths.items()}
        self._counter_start = {p: first_index(rows, latest - n - half + _EPS) for p, n in lengths.items()}

    @property
    def rows(self) -> Sequence[Row]:
        return self._rows

    @property
    def latest(self) -> Sample:
        return self._rows[-1].sample

    @property
    def oldest_t(self) -> float:
        return self._rows[0].sample.t

    @property
    def oldest_depth(self) -> int:
        return self._rows[0].sample.depth

    def extent(self, gauge: str) -> tuple[float, float] | None:
        known = [v for r in self._rows if (v := getattr(r.sample, gauge)) is not None]
        return (min(known), max(known)) if known else None

    def _known(self, index: int, start: int, stop: int | None = None) -> list[float]:
        rows = self._rows
        end = len(rows) if stop is None else stop
        return [v for i in range(start, end) if (v := rows[i].values[index]) is not None]

    def mean(self, index: int, part: Part) -> Value:
        known = self._known(index, self._sample_start[part])
        return math.fsum(known) / len(known) if known else None

    def total(self, index: int, part: Part) -> Value:
        known = self._known(index, self._sample_start[part])
        return math.fsum(known) if known else None

    def increase(self, field: str, part: Part) -> Value:
        """``last - first`` over the known values, plus the value before each reset."""
        first: float | None = None
        previous = 0.0
        lost = 0.0
        rows = self._rows
        for i in range(self._counter_start[part], len(rows)):
            value = getattr(rows[i].sample, field)
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

    def seconds(self, part: Part) -> Value:
        seconds = self._rows[-1].sample.t - self._rows[self._counter_start[part]].sample.t
        return seconds if seconds > 0 else None

    def earliest(self, index: int, part: Part) -> Value:
        return self._rows[self._counter_start[part]].values[index]

    def latest_value(self, index: int) -> Value:
        return self._rows[-1].values[index]

    def low_quartile(self, index: int, part: Part) -> Value:
        return quantile(0.25, self._known(index, self._sample_start[part]))

    def max_of_first(self, index: int, fraction: int) -> Value:
        first_end, _ = thirds(self._rows, self.interval_s, self.span_s, fraction)
        known = self._known(index, self._sample_start[Part.WHOLE], first_end)
        return max(known) if known else None

    def min_of_last(self, index: int, fraction: int) -> Value:
        _, last_start = thirds(self._rows, self.interval_s, self.span_s, fraction)
        known = self._known(index, last_start)
        return min(known) if known else None


def quantile(q: float, values: list[float]) -> Value:
    """The ``q`` quantile of ``values``, interpolated exactly as Prometheus'
    ``quantile_over_time`` does (so that both back ends agree to the last bit)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    lower = max(0, math.floor(rank))
    upper = min(len(ordered) - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def thirds(rows: Sequence[Row], interval: float, span: float, fraction: int) -> tuple[int, int]:
    """Row indexes: the end of the window's oldest ``1/fraction`` and the start of its newest."""
    count = max(1, round(span / interval))
    k = max(1, count // fraction)
    latest = rows[-1].sample.t
    first_end = first_index(rows, latest - (count - k) * interval + interval / 2 + _EPS)
    last_start = first_index(rows, latest - k * interval + interval / 2 + _EPS)
    return first_end, last_start


Fn = Callable[["Evaluation"], Value]
PredFn = Callable[["Evaluation"], "bool | None"]


class Program:
    """The definition evaluated node by node for one configuration: every
    measure and predicate a chain of closures over an evaluation's
    primitives. The reference that the generated code
    (:class:`qhealth._codegen.Compiled`) is held to; an evaluation made with
    ``reference=True`` uses it."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        self.cfg = cfg
        self.measures: dict[tuple[str, Part], Fn] = {
            (m.name, part): self.agg(m.expr(part)) for m in MEASURES for part in m.parts
        }
        self._preds: dict[int, tuple[lang.Pred, PredFn]] = {}

    def pred_fn(self, pred: lang.Pred) -> PredFn:
        """The compiled predicate (cached: the rules' predicates are module constants)."""
        cached = self._preds.get(id(pred))
        if cached is None or cached[0] is not pred:
            cached = (pred, self.pred(pred))
            self._preds[id(pred)] = cached
        return cached[1]

    def agg(self, node: lang.Agg) -> Fn:
        match node:
            case lang.M(name=name, part=part):
                key = (name, part)
                return lambda ev: ev.measure_of(key)
            case lang.Number(value=value):
                return lambda ev: value
            case lang.Setting(name=name):
                setting = float(getattr(self.cfg, name))
                return lambda ev: setting
            case lang.Mean() | lang.Total() | lang.LowQuartile() | lang.Earliest():
                call = operator.methodcaller(PRIMITIVE[type(node)], INDEX[node.series.name], node.part)
                return lambda ev: call(ev.primitives)
            case lang.MaxOfFirst() | lang.MinOfLast():
                call = operator.methodcaller(PRIMITIVE[type(node)], INDEX[node.series.name], node.fraction)
                return lambda ev: call(ev.primitives)
            case lang.Increase(counter=counter, part=part):
                name = COUNTER_FIELD[counter]
                return lambda ev: ev.primitives.increase(name, part)
            case lang.Seconds(part=part):
                return lambda ev: ev.primitives.seconds(part)
            case lang.Latest(series=series):
                index = INDEX[series.name]
                return lambda ev: ev.primitives.latest_value(index)
            case lang.Ratio(a=a, b=b):
                return _both(self.agg(a), self.agg(b), lambda x, y: x / y if y > 0 else None)
            case lang.Diff(a=a, b=b):
                return _both(self.agg(a), self.agg(b), lambda x, y: x - y)
            case lang.Product(a=a, b=b):
                return _both(self.agg(a), self.agg(b), lambda x, y: x * y)
            case lang.Share(a=a):
                inner = self.agg(a)

                def share(ev: Evaluation) -> Value:
                    x = inner(ev)
                    return None if x is None else min(max(x, 0.0), 1.0)

                return share
            case lang.FirstKnown(a=a, b=b):
                first, second = self.agg(a), self.agg(b)

                def first_known(ev: Evaluation) -> Value:
                    x = first(ev)
                    return x if x is not None else second(ev)

                return first_known
            case lang.Gated(a=a, gate=gate):
                gated, holds = self.agg(a), self.pred(gate)
                return lambda ev: gated(ev) if holds(ev) is True else None
        raise TypeError(f"not a window measure: {node!r}")  # pragma: no cover

    def pred(self, pred: lang.Pred) -> PredFn:
        match pred:
            case lang.Check(a=a, op=op, b=b):
                return _both(self.agg(a), self.agg(b), _COMPARE[op])
            case lang.All(preds=preds):
                return _until(tuple(self.pred(p) for p in preds), stop=False)
            case lang.Any_(preds=preds):
                return _until(tuple(self.pred(p) for p in preds), stop=True)
            case lang.Unless(a=a, b=b):
                held_fn, veto_fn = self.pred(a), self.pred(b)

                def unless(ev: Evaluation) -> bool | None:
                    held = held_fn(ev)
                    if not held:
                        return held
                    return veto_fn(ev) is not True

                return unless
            case lang.Unknown(a=a):
                value = self.agg(a)
                return lambda ev: value(ev) is None
        raise TypeError(f"not a predicate: {pred!r}")  # pragma: no cover


def _until(fns: tuple[PredFn, ...], *, stop: bool) -> PredFn:
    """All (``stop=False``) or any (``stop=True``) of the predicates: the first
    that gives ``stop`` decides; else unknown if one was unknown (as absent
    series make an ``and``/``or`` in PromQL)."""

    def until(ev: Evaluation) -> bool | None:
        unknown = False
        for fn in fns:
            result = fn(ev)
            if result is stop:
                return stop
            unknown = unknown or result is None
        return None if unknown else not stop

    return until


def _both(
    a: Callable[[_In], Value], b: Callable[[_In], Value], op: Callable[[float, float], _Out | None]
) -> Callable[[_In], _Out | None]:
    """``op`` of ``a`` and ``b``, unknown where either is (``b`` is not asked
    when ``a`` is unknown)."""

    def both(arg: _In) -> _Out | None:
        x = a(arg)
        if x is None:
            return None
        y = b(arg)
        return None if y is None else op(x, y)

    return both


_PROGRAMS: dict[ClassifierConfig, tuple[Compiled, Program]] = {}
#: The last configuration asked for, with its programs: hashing a configuration costs
#: microseconds, and a monitor asks for the same one queue after queue. One tuple, read
#: and replaced whole, so that two threads never pair a configuration with another's programs.
_last: tuple[ClassifierConfig, tuple[Compiled, Program]] | None = None


def program_for(cfg: ClassifierConfig) -> tuple[Compiled, Program]:
    """The definition compiled for ``cfg``, generated and node by node
    (compiled once per configuration, and kept: a process has a handful)."""
    global _last
    last = _last
    if last is not None and last[0] is cfg:
        return last[1]
    programs = _PROGRAMS.get(cfg)
    if programs is None:
        if len(_PROGRAMS) >= 64:
            _PROGRAMS.clear()
        measures = {(m.name, part): m.expr(part) for m in MEASURES for part in m.parts}
        programs = _PROGRAMS[cfg] = (Compiled(measures, INDEX, cfg), Program(cfg))
    _last = (cfg, programs)
    return programs


class Evaluation:
    """The measures of one window (ending at its newest row), computed on demand
    from its primitives, each at most once (``reference``: node by node, as the
    tests compare)."""

    def __init__(self, primitives: Primitives, cfg: ClassifierConfig, *, reference: bool = False) -> None:
        self.primitives = primitives
        latest = primitives.latest
        if latest is None:
            raise ValueError("cannot evaluate an empty window")
        self.latest: Sample = latest
        self.cfg = cfg
        self._compiled, self._program = program_for(cfg)
        self._reference = reference
        self._memo = self._compiled.new_memo()  # each measure's value once computed, by its slot

    @classmethod
    def of_rows(
        cls, rows: Sequence[Row], cfg: ClassifierConfig, *, interval_s: float, span_s: float, recent_s: float
    ) -> Evaluation:
        """An evaluation recomputed from the rows (the reference for the running one)."""
        return cls(ScanPrimitives(rows, interval_s=interval_s, span_s=span_s, recent_s=recent_s), cfg)

    @property
    def rows(self) -> Sequence[Row]:
        """Every sample of the window with its series (built when asked)."""
        return self.primitives.rows

    def measure(self, name: str, part: Part = Part.WHOLE) -> Value:
        if name not in MEASURE:
            raise KeyError(f"no measure {name!r}")
        return self.measure_of((name, part))

    def measure_of(self, key: tuple[str, Part]) -> Value:
        slot = self._compiled.slot[key]
        value = self._memo[slot]
        if value is UNSET:
            if self._reference:
                value = self._memo[slot] = self._program.measures[key](self)
            else:
                value = self._compiled.functions[slot](self.primitives, self._memo)
        return value  # type: ignore[no-any-return]

    def increase(self, counter: str, part: Part = Part.WHOLE) -> Value:
        """A counter's increase over the part (``enqueued``, ``idle_s``, ...)."""
        return self.primitives.increase(COUNTER_FIELD[counter], part)

    def per_second(self, counter: str, part: Part = Part.WHOLE) -> Value:
        """A counter's increase per second over the part."""
        count, seconds = self.increase(counter, part), self.primitives.seconds(part)
        return None if count is None or seconds is None else count / seconds

    def agg(self, node: lang.Agg) -> Value:
        """Any window measure of the definition's kind, evaluated node by node."""
        return self._program.agg(node)(self)

    def check(self, pred: lang.Pred) -> bool | None:
        """True, False, or None when a measure it needs is unknown."""
        if self._reference:
            return self._program.pred_fn(pred)(self)
        predicate = self._compiled.predicate(pred)
        self._compiled.fit(self._memo)
        return predicate(self.primitives, self._memo)  # type: ignore[no-any-return]

    def holds(self, pred: lang.Pred) -> bool:
        return self.check(pred) is True


def first_index(rows: Sequence[Row], t_min: float) -> int:
    """The index of the first row at or after ``t_min`` (rows are in time order)."""
    lo, hi = 0, len(rows)
    while lo < hi:
        mid = (lo + hi) // 2
        if rows[mid].sample.t < t_min:
            lo = mid + 1
        else:
            hi = mid
    return min(lo, len(rows) - 1)
