"""One observation of one queue: the unit everything else is built from.

A :class:`Sample` holds exactly the fields of a trace sample line
(``shared/spec/trace-format.md``). Counters are cumulative, like Prometheus
counters, so a sample converts one-to-one into Prometheus series. A field the
source cannot know is ``None``; only ``t`` and ``depth`` are always numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

TRACE_FORMAT = "qhealth-trace"
TRACE_VERSION = 1

#: Sample fields in the order the spec lists them (and traces are written).
SAMPLE_FIELDS: tuple[str, ...] = (
    "t",
    "depth",
    "workers",
    "busy",
    "enqueued_total",
    "processed_total",
    "failed_total",
    "attempts_total",
    "rate_limited_total",
    "idle_s_total",
)

#: The observed fields: all but the time.
OBSERVED_FIELDS: tuple[str, ...] = SAMPLE_FIELDS[1:]

#: The cumulative fields: they never decrease except on a process restart.
COUNTER_FIELDS: tuple[str, ...] = tuple(name for name in SAMPLE_FIELDS if name.endswith("_total"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Fields:
    """What is observed of a queue at one moment: the trace fields but the time.

    Declared once, here: a :class:`Sample` is these fields at a time, and a
    source's :class:`~qhealth.Reading` is these fields plus what only exporters
    need.
    """

    depth: int
    """Items waiting in the queue."""
    workers: int | None = None
    """Workers that exist."""
    busy: int | None = None
    """Workers holding an item (processing it, or sleeping before a retry)."""
    enqueued_total: int | None = None
    processed_total: int | None = None
    """Items whose processing ended, any outcome."""
    failed_total: int | None = None
    attempts_total: int | None = None
    """Downstream calls attempted (>= processed when retries happen)."""
    rate_limited_total: int | None = None
    """Downstream calls answered "rate limited" (HTTP 429 or equivalent)."""
    idle_s_total: float | None = None
    """Worker-seconds spent idle, summed over workers."""

    def at(self, t: float) -> Sample:
        """These fields as the sample at time ``t``."""
        return Sample(t=t, **{name: getattr(self, name) for name in OBSERVED_FIELDS})


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample(Fields):
    """What the monitor saw of one queue at one sampling tick: a trace sample line."""

    t: float
    """Seconds since the trace (or the monitor) began."""

    def to_dict(self) -> dict[str, float | int | None]:
        """The sample as a trace line object, keys in spec order."""
        return {name: getattr(self, name) for name in SAMPLE_FIELDS}


@dataclass(frozen=True, slots=True)
class TraceHeader:
    """The first line of a trace file."""

    queue: str
    interval_s: float
    capacity: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "format": TRACE_FORMAT,
            "version": TRACE_VERSION,
            "queue": self.queue,
            "interval_s": self.interval_s,
            "capacity": self.capacity,
        }
