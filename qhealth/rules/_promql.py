"""The PromQL back end of :mod:`qhealth._measures`.

Each node of the definition becomes the PromQL that computes it from the
exported series, aggregated by ``queue`` across processes, the way the Python
back end (:mod:`qhealth._evaluate`) computes it from a window of samples:

* a sample series is recorded at every evaluation (one evaluation per scrape),
  so a window mean is ``sum_over_time(x[S - I/2]) / count_over_time(...)``:
  the last ``S/I`` samples, the same sum divided by the same count;
* a counter measure is ``sum by (queue) (increase(counter[S]))``: last minus
  first plus resets when the samples reach both ends of the range, as on the
  classifier's window;
* an unknown value is an absent series, and a predicate on it holds nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import _language as lang
from .._language import Part
from .._measures import MEASURE, SERIES
from ._config import RulesConfig, duration

CONDITION_SERIES = "queue:qhealth_condition:active"
WINDOW_FULL = "queue:qhealth_window:full"

RAW_COUNTERS = {
    "enqueued": "qhealth_items_enqueued_total",
    "processed": "qhealth_items_processed_total",
    "attempts": "qhealth_attempts_total",
    "rate_limited": "qhealth_rate_limited_total",
    "idle_s": "qhealth_worker_idle_seconds_total",
}


@dataclass(frozen=True, slots=True)
class _Q:
    """A PromQL expression and whether it is a scalar (a number) or a vector by queue."""

    text: str
    scalar: bool = False


def num(value: float) -> str:
    """A number as PromQL reads it back exactly."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Compiler:
    """Compiles the definition for one rules configuration (scrape interval, selector, ...)."""

    def __init__(self, cfg: RulesConfig) -> None:
        self.cfg = cfg
        self.interval = cfg.scrape_interval_s
        self.span = {Part.WHOLE: cfg.window_s, Part.RECENT: cfg.recent_s}
        self.samples_in_window = max(1, round(cfg.window_s / self.interval))

    # -- names -----------------------------------------------------------------------

    def series_name(self, series: lang.Series) -> str:
        base = {
            "queue_depth": f"queue:qhealth_queue_depth:{self.cfg.depth_aggregation}",
            "queue_capacity": f"queue:qhealth_queue_capacity:{self.cfg.depth_aggregation}",
            "workers": "queue:qhealth_workers:sum",
            "workers_busy": "queue:qhealth_workers_busy:sum",
        }
        return base.get(series.name, f"queue:qhealth_{series.name}:sample")

    def gauge_name(self, field: str) -> str:
        """The recorded series of a gauge (``depth``, ``capacity``, ``workers``, ``busy``)."""
        by_field = {"depth": "queue_depth", "capacity": "queue_capacity", "workers": "workers"}
        return self.series_name(lang.Series(by_field.get(field, "workers_busy"), "", lang.Field("depth")))

    @staticmethod
    def measure_name(name: str, part: Part = Part.WHOLE) -> str:
        return f"queue:qhealth_{name}:{part}"

    def raw(self, metric: str, *matchers: str) -> str:
        parts = [m for m in (self.cfg.selector, *matchers) if m]
        return metric + ("{" + ",".join(parts) + "}" if parts else "")

    # -- sample series ------------------------------------------------------------------

    def field(self, name: str) -> str:
        """The instant expression of a raw gauge, aggregated by queue."""
        agg = self.cfg.depth_aggregation
        metric = {
            "depth": (agg, "qhealth_queue_depth"),
            "capacity": (agg, "qhealth_queue_capacity"),
            "workers": ("sum", "qhealth_workers"),
            "busy": ("sum", "qhealth_workers_busy"),
        }
        how, raw = metric[name]
        return f"{how} by (queue) ({self.raw(raw)})"

    def sample(self, expr: lang.SampleExpr, *, top: bool = False) -> _Q:
        """A sample expression over the recorded gauges (``top``: the raw
        aggregation itself, for the rule that records a gauge)."""
        match expr:
            case lang.Field(name=name):
                return _Q(self.field(name) if top else self.gauge_name(name))
            case lang.Const(value=value):
                return _Q(num(value), scalar=True)
            case lang.Setting(name=name):
                return _Q(num(getattr(self.cfg.classifier, name)), scalar=True)
            case lang.Minus(a=a, b=b):
                return self._arith(self.sample(a), "-", self.sample(b))
            case lang.Times(a=a, b=b):
                return self._arith(self.sample(a), "*", self.sample(b))
            case lang.Over(a=a, b=b):
                x, y = self.sample(a), self.sample(b)
                if y.scalar:
                    return _Q(f"({x.text} / {y.text})")
                return _Q(f"({x.text} / on (queue) ({y.text} > 0))")
            case lang.Both(a=a, b=b):
                return self._arith(self.sample(a), "*", self.sample(b))
            case lang.Lesser(a=a, b=b):
                x, y = self.sample(a), self.sample(b)
                if y.scalar:
                    return _Q(f"clamp_max({x.text}, {y.text})")
                return _Q(f"({x.text} <= on (queue) {y.text} or on (queue) {y.text} < on (queue) {x.text})")
            case lang.Is(a=a, op=op, b=b):
                return self._arith(self.sample(a), f"{op} bool", self.sample(b))
            case lang.Either(a=a, b=b):
                return _Q(f"clamp_max({self._arith(self.sample(a), '+', self.sample(b)).text}, 1)")
            case lang.Otherwise(a=a, b=b):
                return _Q(f"({self.sample(a).text} or on (queue) {self.sample(b).text})")
        raise TypeError(f"not a sample expression: {expr!r}")  # pragma: no cover

    @staticmethod
    def _arith(x: _Q, op: str, y: _Q) -> _Q:
        if x.scalar and y.scalar:
            raise ValueError(f"an operation on two numbers has no series: {x.text} {op} {y.text}")
        match = "" if x.scalar or y.scalar else " on (queue)"
        return _Q(f"({x.text} {op}{match} {y.text})")

    # -- window measures --------------------------------------------------------------------

    def _range(self, part: Part) -> str:
        """The range that holds the part's samples: ``S - I/2``."""
        return duration(self.span[part] - self.interval / 2)

    def agg(self, node: lang.Agg) -> _Q:
        match node:
            case lang.M(name=name, part=part):
                if name not in MEASURE:
                    raise KeyError(f"no measure {name!r}")
                return _Q(self.measure_name(name, part))
            case lang.Number(value=value):
                return _Q(num(value), scalar=True)
            case lang.Setting(name=name):
                return _Q(num(getattr(self.cfg.classifier, name)), scalar=True)
            case lang.Mean(series=series, part=part):
                s, r = self.series_name(series), self._range(part)
                return _Q(f"(sum_over_time({s}[{r}]) / count_over_time({s}[{r}]))")
            case lang.Total(series=series, part=part):
                return _Q(f"sum_over_time({self.series_name(series)}[{self._range(part)}])")
            case lang.LowQuartile(series=series, part=part):
                return _Q(f"quantile_over_time(0.25, {self.series_name(series)}[{self._range(part)}])")
            case lang.Increase(counter=counter, part=part):
                metric = self.raw(RAW_COUNTERS[counter])
                return _Q(f"sum by (queue) (increase({metric}[{duration(self.span[part])}]))")
            case lang.Seconds(part=part):
                return _Q(num(self.span[part]), scalar=True)
            case lang.Latest(series=series):
                return _Q(self.series_name(series))
            case lang.Earliest(series=series, part=part):
                return _Q(f"({self.series_name(series)} offset {duration(self.span[part])})")
            case lang.MaxOfFirst(series=series, fraction=fraction):
                n, i = self.samples_in_window, self.interval
                k = max(1, n // fraction)
                return _Q(
                    f"max_over_time({self.series_name(series)}[{duration(k * i - i / 2)}] "
                    f"offset {duration((n - k) * i)})"
                )
            case lang.MinOfLast(series=series, fraction=fraction):
                n, i = self.samples_in_window, self.interval
                k = max(1, n // fraction)
                return _Q(f"min_over_time({self.series_name(series)}[{duration(k * i - i / 2)}])")
            case lang.Ratio(a=a, b=b):
                x, y = self.agg(a), self.agg(b)
                if y.scalar:
                    return _Q(f"({x.text} / {y.text})")
                match = "" if x.scalar else " on (queue)"
                return _Q(f"({x.text} /{match} ({y.text} > 0))")
            case lang.Diff(a=a, b=b):
                return self._arith(self.agg(a), "-", self.agg(b))
            case lang.Product(a=a, b=b):
                return self._arith(self.agg(a), "*", self.agg(b))
            case lang.Share(a=a):
                return _Q(f"clamp({self.agg(a).text}, 0, 1)")
            case lang.FirstKnown(a=a, b=b):
                return _Q(f"({self.agg(a).text} or on (queue) {self.agg(b).text})")
            case lang.Gated(a=a, gate=gate):
                return _Q(f"({self.agg(a).text} and on (queue) {self.pred(gate)})")
        raise TypeError(f"not a window measure: {node!r}")  # pragma: no cover

    # -- predicates ---------------------------------------------------------------------------

    def pred(self, pred: lang.Pred) -> str:
        """An expression present (for a queue) exactly where the predicate holds."""
        match pred:
            case lang.Check(a=a, op=op, b=b):
                x, y = self.agg(a), self.agg(b)
                if x.scalar and y.scalar:
                    raise ValueError(f"a check between two numbers: {x.text} {op} {y.text}")
                if x.scalar:  # put the series on the left: a filter keeps the left side
                    flipped = {">=": "<=", ">": "<", "<": ">", "==": "=="}[op]
                    return f"({y.text} {flipped} {x.text})"
                match = "" if y.scalar else " on (queue)"
                return f"({x.text} {op}{match} {y.text})"
            case lang.All(preds=preds):
                return "(" + " and on (queue) ".join(self.pred(p) for p in preds) + ")"
            case lang.Any_(preds=preds):
                return "(" + " or on (queue) ".join(self.pred(p) for p in preds) + ")"
            case lang.Unless(a=a, b=b):
                return f"({self.pred(a)} unless on (queue) {self.pred(b)})"
            case lang.Unknown(a=a):
                return f"({WINDOW_FULL} unless on (queue) {self.agg(a).text})"
        raise TypeError(f"not a predicate: {pred!r}")  # pragma: no cover

    # -- the recorded series ----------------------------------------------------------------

    def sample_rules(self) -> list[tuple[str, str]]:
        """(record, expr) of every sample series, the gauges first."""
        out = []
        for series in SERIES:
            out.append((self.series_name(series), self.sample(series.expr, top=True).text))
        return out

    def window_rule(self) -> tuple[str, str]:
        """A queue is judged once its recorded depth reaches back a whole window."""
        depth = self.series_name(SERIES[0])
        full = self.samples_in_window + 1
        return WINDOW_FULL, f"count_over_time({depth}[{duration(self.span[Part.WHOLE])}]) >= {full}"
