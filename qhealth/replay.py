"""Recorded traces played back as live queues, through the ordinary monitor.

A :class:`TraceSource` hands out a trace's samples one per read, so a
:class:`~qhealth.Monitor` watching it judges, exports and shows the queue as it
would a live one (``qhealth serve`` puts replayed traces on ``/metrics`` this
way, for trying dashboards and alert rules). With ``loop=True`` the trace
starts again when it ends, its counters carrying on upwards; without, the
source has nothing more to read and the queue is reported down from then on:
no fresh sample is ever passed off as current.

:func:`replay_monitor` watches several traces on one monitor whose clock runs
``speed`` times faster than the wall, each queue read at its own trace's
interval; call its :meth:`~qhealth.Monitor.tick` every ``tick_s`` wall seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce

from ._config import ClassifierConfig
from ._monitor import Monitor
from ._sample import COUNTER_FIELDS, OBSERVED_FIELDS, Sample
from ._source import Reading
from ._trace import Trace


class TraceSource:
    """A :class:`~qhealth.Source` that reads a trace's samples in turn."""

    def __init__(self, trace: Trace, *, loop: bool = False) -> None:
        if not trace.samples:
            raise ValueError(f"trace of queue {trace.header.queue!r} has no samples")
        self.trace = trace
        self.loop = loop
        self.position = 0
        self._offsets: dict[str, float] = {}

    @property
    def unknown(self) -> dict[str, str]:
        first = self.trace.samples[0]
        return {name: "null in the trace" for name in OBSERVED_FIELDS if getattr(first, name) is None}

    @property
    def ended(self) -> bool:
        """Every sample has been read, and the trace does not loop."""
        return not self.loop and self.position >= len(self.trace.samples)

    def read(self) -> Reading | None:
        samples = self.trace.samples
        if self.position >= len(samples):
            if not self.loop:
                return None
            self._wrap()
        sample = samples[self.position]
        self.position += 1
        return _reading(sample, self._offsets)

    def _wrap(self) -> None:
        """Start again, counters shifted so that they carry on upwards."""
        first, last = self.trace.samples[0], self.trace.samples[-1]
        for name in COUNTER_FIELDS:
            a, b = getattr(first, name), getattr(last, name)
            if a is not None and b is not None:
                self._offsets[name] = self._offsets.get(name, 0.0) + b - a
        self.position = 0


def _reading(sample: Sample, offsets: dict[str, float]) -> Reading:
    fields: dict[str, object] = {name: getattr(sample, name) for name in OBSERVED_FIELDS}
    for name, offset in offsets.items():
        value = fields[name]
        if isinstance(value, int | float):
            fields[name] = type(value)(value + offset)
    return Reading(**fields)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Replay:
    """A monitor replaying traces, and how often to tick it."""

    monitor: Monitor
    sources: dict[str, TraceSource]
    tick_s: float
    """Wall seconds between two ticks."""

    @property
    def ended(self) -> bool:
        return all(source.ended for source in self.sources.values())


def replay_monitor(
    traces: Sequence[Trace],
    *,
    speed: float = 1.0,
    loop: bool = False,
    config: ClassifierConfig | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Replay:
    """One monitor watching each trace as a queue, at ``speed`` times the
    recorded pace (``clock`` is the wall clock, for tests). Queue names must
    differ; each trace is read at its own interval, a whole number of the
    monitor's tick."""
    if not (speed > 0 and math.isfinite(speed)):
        raise ValueError(f"speed must be a positive number, got {speed!r}")
    names = [t.header.queue for t in traces]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two traces have the same queue name: {', '.join(duplicates)}")
    if not traces:
        raise ValueError("no trace to replay")
    base = reduce(_common_tick, (t.header.interval_s for t in traces))
    start = clock()
    monitor = Monitor(interval=base, config=config, clock=lambda: start + (clock() - start) * speed)
    sources = {}
    for trace in traces:
        source = TraceSource(trace, loop=loop)
        monitor.watch_source(
            trace.header.queue, source, capacity=trace.header.capacity, interval=trace.header.interval_s
        )
        sources[trace.header.queue] = source
    return Replay(monitor, sources, base / speed)


def _common_tick(a: float, b: float) -> float:
    """The longest interval both are whole multiples of (to the millisecond)."""
    ms = math.gcd(round(a * 1000), round(b * 1000))
    if ms == 0:
        raise ValueError(f"trace intervals {a:g} s and {b:g} s have no common tick")
    return ms / 1000
