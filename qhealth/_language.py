"""The language qhealth's definition of measures and conditions is written in.

Plain data, no behaviour: a *sample expression* is computed from one sample
(``Is(Field("depth"), ">=", Const(1))``), a *window measure* aggregates a named
sample series or a counter over the window or its recent part (``Mean``,
``Increase``, ``Ratio``...), a *predicate* compares measures with thresholds
(``at_least(M("idle_ratio"), "idle_on")``), and a :class:`ConditionRule` says
which predicates turn a condition on and keep it on. :mod:`qhealth._measures`
is the definition itself; :mod:`qhealth._evaluate` and :mod:`qhealth.rules`
are the two back ends that give it meaning (Python, PromQL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, TypeAlias

from ._condition import Condition

# -- sample series: computed from one sample ---------------------------------------

FieldName = Literal["depth", "workers", "busy", "capacity"]


@dataclass(frozen=True, slots=True)
class Field:
    """A gauge of the sample (``capacity`` is the queue's, the same in every sample)."""

    name: FieldName


@dataclass(frozen=True, slots=True)
class Const:
    value: float


@dataclass(frozen=True, slots=True)
class Setting:
    """A classifier setting by name (:class:`~qhealth.ClassifierConfig`)."""

    name: str


@dataclass(frozen=True, slots=True)
class _SamplePair:
    a: SampleExpr
    b: SampleExpr


@dataclass(frozen=True, slots=True)
class Minus(_SamplePair):
    """Minus."""


@dataclass(frozen=True, slots=True)
class Times(_SamplePair):
    """Times."""


@dataclass(frozen=True, slots=True)
class Lesser(_SamplePair):
    """The smaller of two values."""


@dataclass(frozen=True, slots=True)
class Over(_SamplePair):
    """``a / b``; unknown when ``b`` is zero."""


CmpOp = Literal[">=", ">", "<", "=="]


@dataclass(frozen=True, slots=True)
class Is:
    """1 when ``a op b`` holds, else 0."""

    a: SampleExpr
    op: CmpOp
    b: SampleExpr


@dataclass(frozen=True, slots=True)
class Both(_SamplePair):
    """1 when both 0/1 values are 1."""


@dataclass(frozen=True, slots=True)
class Either(_SamplePair):
    """1 when either 0/1 value is 1 (both must be known)."""


@dataclass(frozen=True, slots=True)
class Otherwise(_SamplePair):
    """``a`` where it is known, else ``b``."""


SampleExpr: TypeAlias = (
    Field | Const | Setting | Minus | Times | Over | Lesser | Is | Both | Either | Otherwise
)


def operands(expr: SampleExpr) -> tuple[SampleExpr, ...]:
    """The expressions ``expr`` is made of (none for a field, a constant or a setting)."""
    if isinstance(expr, _SamplePair | Is):
        return (expr.a, expr.b)
    return ()


@dataclass(frozen=True, slots=True)
class Series:
    """A named sample series: what window measures aggregate (PromQL records it
    at every evaluation as ``queue:qhealth_<name>:sample``)."""

    name: str
    doc: str
    expr: SampleExpr


# -- window measures -------------------------------------------------------------------


class Part(StrEnum):
    WHOLE = "window"
    RECENT = "recent"


CounterName = Literal["enqueued", "processed", "attempts", "rate_limited", "idle_s"]


@dataclass(frozen=True, slots=True)
class _SeriesPart:
    series: Series
    part: Part


@dataclass(frozen=True, slots=True)
class Mean(_SeriesPart):
    """Mean of a series over the part's samples (those where it is known)."""


@dataclass(frozen=True, slots=True)
class Total(_SeriesPart):
    """Sum of a series over the part's samples."""


@dataclass(frozen=True, slots=True)
class Increase:
    """Increase of a cumulative counter over the part, reset-aware."""

    counter: CounterName
    part: Part


@dataclass(frozen=True, slots=True)
class Seconds:
    """How long the part is."""

    part: Part


@dataclass(frozen=True, slots=True)
class Latest:
    """The series at the newest sample."""

    series: Series


@dataclass(frozen=True, slots=True)
class Earliest(_SeriesPart):
    """The series at the oldest sample of the part."""


@dataclass(frozen=True, slots=True)
class _SeriesFraction:
    series: Series
    fraction: int


@dataclass(frozen=True, slots=True)
class MaxOfFirst(_SeriesFraction):
    """Highest value among the oldest ``1/fraction`` of the window's samples."""


@dataclass(frozen=True, slots=True)
class MinOfLast(_SeriesFraction):
    """Lowest value among the newest ``1/fraction`` of the window's samples."""


@dataclass(frozen=True, slots=True)
class LowQuartile(_SeriesPart):
    """The 25th percentile of a series over the part's samples (interpolated as
    Prometheus' ``quantile_over_time`` does): a value most samples reach."""


@dataclass(frozen=True, slots=True)
class _AggPair:
    a: Agg
    b: Agg


@dataclass(frozen=True, slots=True)
class Ratio(_AggPair):
    """``a / b``; unknown when ``b`` is zero."""


@dataclass(frozen=True, slots=True)
class Diff(_AggPair):
    """Diff."""


@dataclass(frozen=True, slots=True)
class Product(_AggPair):
    """Product."""


@dataclass(frozen=True, slots=True)
class Share:
    """Clamped to [0, 1]: a share that counter jitter, or fields known at
    different samples, pushed out of range."""

    a: Agg


@dataclass(frozen=True, slots=True)
class FirstKnown(_AggPair):
    """``a`` where known, else ``b``."""


@dataclass(frozen=True, slots=True)
class Gated:
    """``a`` only where ``gate`` holds (else unknown)."""

    a: Agg
    gate: Pred


@dataclass(frozen=True, slots=True)
class Number:
    value: float


@dataclass(frozen=True, slots=True)
class M:
    """A measure of the table, by name, over the whole window or its recent part."""

    name: str
    part: Part = Part.WHOLE


Agg: TypeAlias = (
    Mean
    | Total
    | LowQuartile
    | Increase
    | Seconds
    | Latest
    | Earliest
    | MaxOfFirst
    | MinOfLast
    | Ratio
    | Diff
    | Product
    | Share
    | FirstKnown
    | Gated
    | Number
    | Setting
    | M
)


# -- predicates over measures ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """``a op b``; unknown when either side is unknown."""

    a: Agg
    op: CmpOp
    b: Agg


@dataclass(frozen=True, slots=True)
class All:
    """Every predicate holds (unknown when one is unknown and none is false)."""

    preds: tuple[Pred, ...]


@dataclass(frozen=True, slots=True)
class Any_:
    """Some predicate holds (unknown ones count as not holding, as absent series do in PromQL)."""

    preds: tuple[Pred, ...]


@dataclass(frozen=True, slots=True)
class Unless:
    """``a`` holds and ``b`` does not hold (an unknown ``b`` does not veto)."""

    a: Pred
    b: Pred


@dataclass(frozen=True, slots=True)
class Unknown:
    """The measure is unknown (a field the source does not report)."""

    a: Agg


Pred: TypeAlias = Check | All | Any_ | Unless | Unknown


def all_of(*preds: Pred) -> All:
    return All(preds)


def any_of(*preds: Pred) -> Any_:
    return Any_(preds)


def at_least(a: Agg, b: Agg | str | float) -> Check:
    return Check(a, ">=", _operand(b))


def above(a: Agg, b: Agg | str | float) -> Check:
    return Check(a, ">", _operand(b))


def below(a: Agg, b: Agg | str | float) -> Check:
    return Check(a, "<", _operand(b))


def equals(a: Agg, b: Agg | str | float) -> Check:
    return Check(a, "==", _operand(b))


def _operand(b: Agg | str | float) -> Agg:
    if isinstance(b, str):
        return Setting(b)
    if isinstance(b, int | float):
        return Number(float(b))
    return b


# -- the table ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measure:
    """A named window measure, over the whole window and (when ``recent``) its recent part."""

    name: str
    doc: str
    build: Callable[[Part], Agg]
    recent: bool = False
    unit: Literal["ratio", "seconds", "items", "per_second", "calls", "worker_seconds", "samples"] = "ratio"

    def expr(self, part: Part = Part.WHOLE) -> Agg:
        if part is Part.RECENT and not self.recent:
            raise ValueError(f"measure {self.name!r} has no recent part")
        return self.build(part)

    @property
    def parts(self) -> tuple[Part, ...]:
        return (Part.WHOLE, Part.RECENT) if self.recent else (Part.WHOLE,)


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a condition cannot be judged without: sample fields that must be
    known, or a measure that must be known over the window."""

    reason: str
    fields: tuple[str, ...] = ()
    """Sample fields that must all be known (at the newest sample)."""
    any_field: tuple[str, ...] = ()
    """Sample fields of which at least one must be known."""
    measure: str | None = None
    """A measure that must be known over the whole window."""


@dataclass(frozen=True, slots=True)
class ConditionRule:
    """When a condition holds.

    ``on`` turns it on; once on, it stays on while ``hold`` holds (hysteresis:
    ``on`` asks the whole window to cross the ``*_on`` thresholds, ``hold`` the
    recent part to stay above the lower ``*_off`` ones, so that a pool
    hovering at a threshold does not flap and an ended condition clears within
    a window). ``requires`` names the sample fields without which it is not
    judged, with the reason shown to people.
    """

    condition: Condition
    on: Pred
    hold: Pred
    requires: tuple[Requirement, ...] = ()
    """The condition is not judged when one of these is not met; the first
    that applies gives the reason."""
