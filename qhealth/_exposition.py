"""The text of a scrape, written the way prometheus-client writes it, at a
fraction of its cost.

Why: prometheus-client formats every sample on every scrape, sorting and
escaping each label set anew: with 100 queues (about 6,500 series, most of them
histogram buckets) that was 26-60 ms per scrape, and it grows with the number
of queues. Here the lines of one queue are written once per tick of that queue
(lazily, by the first scrape that sees the tick), from templates made once per
metric: a scrape joins strings it already has. Nothing is encoded on the
monitor's tick thread, so a queue that nobody scrapes costs nothing.

The output is byte for byte what prometheus-client's own encoders write for
the same families (Prometheus text 0.0.4 and OpenMetrics 1.0): the headers are
produced by those encoders themselves, and a test compares whole scrapes.
Metrics of other collectors in the same registry are handed to
prometheus-client's encoder unchanged.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import cast

from prometheus_client import exposition as text_format
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics import exposition as om_format
from prometheus_client.utils import floatToGoString as _float_to_go_string

from . import _contract as c
from ._contract import MetricSpec

#: prometheus-client's formatting of a value (untyped there).
floatToGoString = cast(Callable[[float], str], _float_to_go_string)

#: prometheus-client's OpenMetrics encoder (untyped there).
om_generate_latest = cast(Callable[[object], bytes], om_format.generate_latest)

#: Set while :func:`encode` collects: the qhealth collector then yields
#: :class:`Encoded` families (text, no samples) instead of sample lists.
ENCODING: contextvars.ContextVar[bool] = contextvars.ContextVar("qhealth_encoding", default=False)


def family(spec: MetricSpec) -> Metric:
    """An empty prometheus-client family for ``spec`` (labels ``queue`` first)."""
    labels = ["queue", *spec.labels]
    unit = spec.prometheus_unit
    if spec.kind is c.Kind.COUNTER:
        return CounterMetricFamily(spec.prometheus, spec.help, labels=labels, unit=unit)
    if spec.kind is c.Kind.HISTOGRAM:
        return HistogramMetricFamily(spec.prometheus, spec.help, labels=labels, unit=unit)
    return GaugeMetricFamily(spec.prometheus, spec.help, labels=labels, unit=unit)


_family_of = functools.cache(family)
"""The empty family of each spec, made once (its name and unit are validated on making)."""


class Encoded(Metric):
    """A family whose sample lines are already written (``text``); its
    ``samples`` list stays empty. Only :func:`encode` ever sees one."""

    def __init__(self, spec: MetricSpec, text: str) -> None:
        template = _family_of(spec)
        super().__init__(template.name, template.documentation, template.type, template.unit)
        self.spec = spec
        self.text = text


class _One:
    """A registry of one metric, to hand a foreign metric to prometheus-client's encoder."""

    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self._metric


_EOF = "# EOF\n"


@functools.cache
def header(spec: MetricSpec, openmetrics: bool) -> str:
    """The ``# HELP`` / ``# TYPE`` (/ ``# UNIT``) lines of ``spec``'s family,
    written by prometheus-client's own encoder."""
    if openmetrics:
        return om_generate_latest(_One(family(spec))).decode().removesuffix(_EOF)
    return text_format.generate_latest(_One(family(spec))).decode()


def encode(registry: object, openmetrics: bool) -> bytes:
    """What prometheus-client's ``generate_latest`` (``openmetrics`` False)
    or its OpenMetrics ``generate_latest`` writes for ``registry``."""
    collect: Callable[[], Iterable[Metric]] = registry.collect  # type: ignore[attr-defined]
    foreign = om_generate_latest if openmetrics else text_format.generate_latest
    out: list[str] = []
    token = ENCODING.set(True)
    try:
        for metric in collect():
            if isinstance(metric, Encoded):
                out.append(header(metric.spec, openmetrics))
                out.append(metric.text)
            else:
                text = foreign(_One(metric)).decode()
                out.append(text.removesuffix(_EOF) if openmetrics else text)
    finally:
        ENCODING.reset(token)
    if openmetrics:
        out.append(_EOF)
    return "".join(out).encode("utf-8")


# -- the lines of one queue ------------------------------------------------------------


def label_value(value: str) -> str:
    """A label value escaped as both formats escape it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


#: Where each family goes in a queue's tuple of lines: the order of the contract.
POSITION: dict[MetricSpec, int] = {spec: i for i, spec in enumerate(c.METRICS)}

_templates: dict[tuple[int, tuple[str, ...]], tuple[str, str, int]] = {}


def _template(spec: MetricSpec, values: tuple[str, ...]) -> tuple[str, str, int]:
    """(head, tail, position) of a series line of ``spec`` with extra label
    ``values``: the line is ``head + escaped queue + tail + value + newline``,
    labels sorted by name as prometheus-client writes them. Keyed by the
    spec's identity (the contract's constants), so that a look-up hashes no
    dataclass. Bounded: the extra label values of the contract are a fixed set."""
    key = (id(spec), values)
    found = _templates.get(key)
    if found is None:
        labels = sorted([("queue", None), *zip(spec.labels, values, strict=True)])
        parts = [f'{k}="{label_value(v)}"' if v is not None else f'{k}="' for k, v in labels]
        at = next(i for i, (k, _) in enumerate(labels) if k == "queue")
        head = spec.prometheus + "{" + ",".join(parts[: at + 1])
        tail = '"' + "".join("," + p for p in parts[at + 1 :]) + "} "
        found = _templates[key] = (head, tail, POSITION[spec])
    return found


def go_float(value: float) -> str:
    """``floatToGoString(value)``, the common cases without its function
    call: whole numbers below a million (depths, workers, most totals) and
    what ``repr`` already writes as Go does (the rest goes to it)."""
    if 0 < value < 1_000_000 and value.is_integer():
        return f"{int(value)}.0"
    text = repr(value)
    # inf and nan are spelt otherwise; Go writes 1e+06 and up with an exponent.
    if "n" in text or (value > 0 and text.find(".") > 6):
        return floatToGoString(value)
    return text


@dataclass(frozen=True, slots=True)
class Buckets:
    """The line starts of one histogram family, made once per collector: a
    bucket line is its start, the queue, and the count (measured: joining
    these is 2-3x faster than one ``str.format`` of the whole histogram,
    whose template CPython parses anew at every call)."""

    heads: tuple[str, ...]
    """Per bucket, the line up to the queue's value (``le`` sorts before ``queue``)."""
    count_head: str
    sum_head: str

    @classmethod
    def of(cls, spec: MetricSpec, les: tuple[str, ...]) -> Buckets:
        name = spec.prometheus
        return cls(
            tuple(f'{name}_bucket{{le="{le}",queue="' for le in les),
            f'{name}_count{{queue="',
            f'{name}_sum{{queue="',
        )

    def lines(self, queue: str, counts: tuple[int, ...], total: float) -> str:
        """Cumulative bucket lines, then ``_count`` and ``_sum``."""
        mid = queue + '"} '
        running = list(itertools.accumulate(counts))
        if running[-1] < 1_000_000:  # Go writes these as whole floats
            out = [head + mid + str(n) + ".0\n" for head, n in zip(self.heads, running, strict=True)]
            last = str(running[-1]) + ".0"
        else:
            texts = [floatToGoString(float(n)) for n in running]
            out = [head + mid + text + "\n" for head, text in zip(self.heads, texts, strict=True)]
            last = texts[-1]
        out.append(self.count_head + mid + last + "\n")
        out.append(self.sum_head + mid + go_float(total) + "\n")
        return "".join(out)


def series_lines(queue: str, series: Iterable[c.Series], into: list[list[str]]) -> None:
    """Append the line of each gauge and counter value of ``queue`` (escaped)
    to its family's list in ``into`` (indexed by :data:`POSITION`)."""
    templates = _templates
    for spec, values, value in series:
        head, tail, at = templates.get((id(spec), values)) or _template(spec, values)
        # go_float, inlined: this loop runs for every series of every queue.
        if 0 < value < 1_000_000 and value.is_integer():
            into[at].append(f"{head}{queue}{tail}{int(value)}.0\n")
        else:
            into[at].append(f"{head}{queue}{tail}{go_float(value)}\n")
