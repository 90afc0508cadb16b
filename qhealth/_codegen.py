"""The definition compiled to Python source: what a tick runs.

A monitor judges every queue it watches every second, so the definition of
:mod:`qhealth._measures` cannot be walked node by node at each tick. Instead,
for one configuration, each window measure and each condition's predicate is
written out once as a Python function whose body is the whole expression
tree, constants folded in, and compiled with :func:`compile`. A tick then runs
one function call per measure it needs and one per primitive of the window
(a mean, a counter's increase), each computed at most once per verdict: the
values are kept in a per-verdict list (``memo``) that every generated
function shares.

The same holds for the sample series: one generated function of a sample's
depth, workers and busy workers returns all of them, run for every sample
that enters or leaves a window.

:class:`qhealth._evaluate.Program` evaluates the same definition node by node
with closures; it is the reference the tests hold the generated code to, on
every example trace.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from . import _language as lang
from ._config import ClassifierConfig
from ._language import Part

Value = float | None
#: A generated measure or predicate: (primitives, memo) -> value.
Generated = Callable[[Any, list[Any]], Any]

#: What a memo slot holds until it is computed (never a value).
UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()

#: The sample field of each counter of the definition.
COUNTER_FIELD = {
    "enqueued": "enqueued_total",
    "processed": "processed_total",
    "attempts": "attempts_total",
    "rate_limited": "rate_limited_total",
    "idle_s": "idle_s_total",
}

#: The method of the window's primitives that computes each aggregate of a series.
PRIMITIVE: dict[type, str] = {
    lang.Mean: "mean",
    lang.Total: "total",
    lang.LowQuartile: "low_quartile",
    lang.Earliest: "earliest",
    lang.MaxOfFirst: "max_of_first",
    lang.MinOfLast: "min_of_last",
}


# -- sample series ------------------------------------------------------------------------

SeriesFunction = Callable[[Value, Value, Value], tuple[Value, ...]]


def series_function(
    series: tuple[lang.Series, ...], cfg: ClassifierConfig, capacity: int | None
) -> SeriesFunction:
    """One function of (depth, workers, busy) returning every series of ``series``
    (None where a field it needs is unknown)."""
    known = {"depth": "depth", "workers": "workers", "busy": "busy"}

    def needs(expr: lang.SampleExpr) -> frozenset[str]:
        match expr:
            case lang.Field(name="capacity"):
                return frozenset()
            case lang.Field(name=name):
                return frozenset({name})
            case lang.Otherwise():
                return frozenset()  # decides by itself what it needs
        return frozenset().union(*map(needs, lang.operands(expr)))

    def has_capacity(expr: lang.SampleExpr) -> bool:
        if isinstance(expr, lang.Field):
            return expr.name == "capacity"
        return any(map(has_capacity, lang.operands(expr)))

    def pure(expr: lang.SampleExpr) -> str:
        """The expression, its inputs known."""
        match expr:
            case lang.Field(name="capacity"):
                return repr(float(capacity)) if capacity is not None else "None"
            case lang.Field(name=name):
                return known[name]
            case lang.Const(value=value):
                return repr(float(value))
            case lang.Setting(name=name):
                return repr(float(getattr(cfg, name)))
            case lang.Minus(a=a, b=b):
                return f"({pure(a)} - {pure(b)})"
            case lang.Times(a=a, b=b) | lang.Both(a=a, b=b):
                return f"({pure(a)} * {pure(b)})"
            case lang.Over(a=a, b=b):
                return f"({pure(a)} / {pure(b)} if {pure(b)} else None)"
            case lang.Lesser(a=a, b=b):
                return f"min({pure(a)}, {pure(b)})"
            case lang.Is(a=a, op=op, b=b):
                return f"(1.0 if {pure(a)} {op} {pure(b)} else 0.0)"
            case lang.Either(a=a, b=b):
                return f"min({pure(a)} + {pure(b)}, 1.0)"
            case lang.Otherwise(a=a, b=b):
                return guarded(a) + " if " + known_test(a) + " else " + guarded(b)
        raise TypeError(f"not a sample expression: {expr!r}")  # pragma: no cover

    def known_test(expr: lang.SampleExpr) -> str:
        if has_capacity(expr) and capacity is None:
            return "False"
        names = sorted(needs(expr))
        return " and ".join(f"{n} is not None" for n in names) or "True"

    def guarded(expr: lang.SampleExpr) -> str:
        if isinstance(expr, lang.Otherwise):
            return f"({pure(expr)})"
        test = known_test(expr)
        if test == "False":
            return "None"
        return f"({pure(expr)} if {test} else None)" if test != "True" else f"({pure(expr)})"

    body = ",\n        ".join(guarded(s.expr) for s in series)
    source = f"def series(depth, workers, busy):\n    return (\n        {body},\n    )\n"
    return _define(source, "series", {}, "<qhealth sample series>")  # type: ignore[no-any-return]


# -- window measures and predicates ---------------------------------------------------


class Compiled:
    """The window measures ``measures`` and, on demand, any predicate over
    them, compiled for ``cfg``; ``index`` places each sample series in a row.

    Each measure and each primitive of the window it reads (``mean(3,
    WHOLE)``, ``increase('processed_total', RECENT)``) has a slot in a
    per-verdict list, ``memo`` (:meth:`new_memo`), filled on first use:
    ``memo[slot[key]]`` once computed, else ``functions[slot[key]](primitives,
    memo)`` computes it (and what it reads).
    """

    def __init__(
        self, measures: dict[tuple[str, Part], lang.Agg], index: dict[str, int], cfg: ClassifierConfig
    ) -> None:
        self._cfg = cfg
        self._index = index
        self.slot = {key: slot for slot, key in enumerate(measures)}
        """The memo slot of each measure ``(name, part)``."""
        self._primitives: dict[str, int] = {}  # a primitive's call, as source -> its slot
        self.functions: list[Generated] = []
        """What fills each slot: ``functions[slot](primitives, memo)``."""
        self._namespace: dict[str, Any] = {"UNSET": UNSET, "F": self.functions}
        self._namespace |= {"WHOLE": Part.WHOLE, "RECENT": Part.RECENT}
        self._names = itertools.count()
        self._preds: dict[int, tuple[lang.Pred, Generated]] = {}
        self._pending: list[tuple[int, str]] = []  # primitives not compiled yet: (slot, call)
        self._lock = threading.Lock()
        names = [f"m{slot}" for slot in range(len(measures))]
        sources = [
            f"def {name}(p, memo):\n    value = memo[{slot}] = {self._agg(expr)}\n    return value\n"
            for (slot, expr), name in zip(enumerate(measures.values()), names, strict=True)
        ]
        self._define(sources, names)

    def new_memo(self) -> list[Any]:
        return [UNSET] * len(self.functions)

    def predicate(self, pred: lang.Pred) -> Generated:
        """The predicate compiled: True, False or None (unknown) of (primitives,
        memo). Cached by identity: the rules' predicates are module constants.
        A predicate may read primitives no measure reads: they get new slots,
        so a memo made before must be extended (:meth:`fit`)."""
        cached = self._preds.get(id(pred))
        if cached is None or cached[0] is not pred:
            with self._lock:  # two monitors' tickers may compile at once: one allocates slots at a time
                if len(self._preds) >= 256:  # bounded: predicates made on the fly come and go
                    self._preds.clear()
                source = f"def predicate(p, memo):\n    return {self._pred(pred)}\n"
                cached = (pred, self._define([source], ["predicate"])[0])
                self._preds[id(pred)] = cached
        return cached[1]

    def fit(self, memo: list[Any]) -> None:
        """Extend a memo with the slots added since it was made."""
        if len(memo) < len(self.functions):
            memo.extend([UNSET] * (len(self.functions) - len(memo)))

    # -- generation --------------------------------------------------------------------

    def _define(self, sources: list[str], names: list[str]) -> list[Generated]:
        """Compile ``sources`` with the primitives they added, whose functions
        join :attr:`functions` (in slot order, after the measures')."""
        added, self._pending = self._pending, []
        sources = sources + [
            f"def q{slot}(p, memo):\n    value = memo[{slot}] = p.{call}\n    return value\n"
            for slot, call in added
        ]
        exec(compile("\n".join(sources), "<qhealth measures>", "exec"), self._namespace)
        defined = [self._namespace[name] for name in names]
        if not self.functions:
            self.functions.extend(defined)  # the measures' slots come first
        self.functions.extend(self._namespace[f"q{slot}"] for slot, _ in added)
        return defined

    def _var(self) -> str:
        return f"v{next(self._names)}"

    def _slot_value(self, slot: int) -> str:
        """The value of a memo slot, computed on first use."""
        v = self._var()
        return f"({v} if ({v} := memo[{slot}]) is not UNSET else F[{slot}](p, memo))"

    def _primitive(self, call: str) -> str:
        slot = self._primitives.get(call)
        if slot is None:
            slot = self._primitives[call] = len(self.slot) + len(self._primitives)
            self._pending.append((slot, call))
        return self._slot_value(slot)

    def _both(self, a: lang.Agg, b: lang.Agg, op: Callable[[str, str], str]) -> str:
        """``op`` of two measures, unknown where either is (``b`` is not computed when ``a`` is unknown)."""
        x, y = self._var(), self._var()
        return f"(None if ({x} := {self._agg(a)}) is None or ({y} := {self._agg(b)}) is None else {op(x, y)})"

    def _agg(self, node: lang.Agg) -> str:
        match node:
            case lang.M(name=name, part=part):
                return self._slot_value(self.slot[(name, part)])
            case lang.Number(value=value):
                return repr(float(value))
            case lang.Setting(name=name):
                return repr(float(getattr(self._cfg, name)))
            case lang.Mean() | lang.Total() | lang.LowQuartile() | lang.Earliest():
                method = PRIMITIVE[type(node)]
                return self._primitive(f"{method}({self._index[node.series.name]}, {_part(node.part)})")
            case lang.MaxOfFirst() | lang.MinOfLast():
                method = PRIMITIVE[type(node)]
                return self._primitive(f"{method}({self._index[node.series.name]}, {node.fraction})")
            case lang.Increase(counter=counter, part=part):
                return self._primitive(f"increase({COUNTER_FIELD[counter]!r}, {_part(part)})")
            case lang.Seconds(part=part):
                return self._primitive(f"seconds({_part(part)})")
            case lang.Latest(series=series):
                return self._primitive(f"latest_value({self._index[series.name]})")
            case lang.Ratio(a=a, b=b):
                return self._both(a, b, lambda x, y: f"({x} / {y} if {y} > 0 else None)")
            case lang.Diff(a=a, b=b):
                return self._both(a, b, lambda x, y: f"{x} - {y}")
            case lang.Product(a=a, b=b):
                return self._both(a, b, lambda x, y: f"{x} * {y}")
            case lang.Share(a=a):
                x = self._var()
                return f"(None if ({x} := {self._agg(a)}) is None else min(max({x}, 0.0), 1.0))"
            case lang.FirstKnown(a=a, b=b):
                x = self._var()
                return f"({x} if ({x} := {self._agg(a)}) is not None else {self._agg(b)})"
            case lang.Gated(a=a, gate=gate):
                return f"({self._agg(a)} if {self._pred(gate)} is True else None)"
        raise TypeError(f"not a window measure: {node!r}")  # pragma: no cover

    def _pred(self, pred: lang.Pred) -> str:
        """An expression worth True, False or None (unknown)."""
        match pred:
            case lang.Check(a=a, op=op, b=b):
                return self._both(a, b, lambda x, y: f"{x} {op} {y}")
            case lang.Unknown(a=a):
                return f"({self._agg(a)} is None)"
            case lang.All(preds=preds) | lang.Any_(preds=preds):
                # The first that gives ``stop`` decides; else unknown if one was
                # unknown (as absent series make an ``and``/``or`` in PromQL).
                stop = isinstance(pred, lang.Any_)
                results = [self._var() for _ in preds]
                tail = f"(None if {' or '.join(f'{r} is None' for r in results)} else {not stop})"
                for r, sub in reversed(list(zip(results, preds, strict=True))):
                    tail = f"({stop} if ({r} := {self._pred(sub)}) is {stop} else {tail})"
                return tail
            case lang.Unless(a=a, b=b):
                r = self._var()
                return f"({r} if not ({r} := {self._pred(a)}) else {self._pred(b)} is not True)"
        raise TypeError(f"not a predicate: {pred!r}")  # pragma: no cover


def _part(part: Part) -> str:
    return "WHOLE" if part is Part.WHOLE else "RECENT"


def _define(source: str, name: str, namespace: dict[str, Any], filename: str) -> Any:
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]
