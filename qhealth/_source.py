"""Queues watched from outside: a source that reads what it can, and says what it cannot.

An instrumented pool knows every sample field from its probes. A sidecar
(``qhealth watch``) only sees what the broker shows: a bare Redis list has a
length and nothing else; RQ also keeps worker counters; a stream group knows
its consumers and what they hold. A :class:`Source` returns a
:class:`Reading` with the fields it knows and ``None`` for the others, and
:meth:`qhealth.Monitor.watch_source` samples it on the monitor's tick instead
of probes. The classifier then judges only the conditions whose fields are
known, and says why it skipped the others: nothing is ever guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._sample import Fields


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading(Fields):
    """What a source saw of a queue at one moment: the sample fields (a sample
    without its time) and what only exporters need.

    Counters are cumulative since the source started (or since whatever the
    broker counts from); a counter that goes down is read as a restart, as in
    Prometheus.
    """

    oldest_age_s: float | None = None
    """Age of the oldest waiting item, in seconds, where the broker shows it."""
    polls_hit_total: int = 0
    polls_empty_total: int = 0
    """Polls by polling workers, by result (0 where nobody polls)."""
    durations: tuple[float, ...] = ()
    """Processing times observed since the previous reading."""
    waits: tuple[float, ...] = ()
    """Queue waits observed since the previous reading."""


@runtime_checkable
class Source(Protocol):
    """Something the monitor can read a queue from, once per tick.

    ``read`` runs on the monitor's ticker thread and may block briefly (a
    network round trip); it returns ``None`` when it cannot read right now (the
    sample is skipped), and may raise (logged, throttled, sample skipped).
    ``unknown`` names the sample fields this source can never know, and why,
    for people reading ``qhealth watch``'s output.
    """

    def read(self) -> Reading | None: ...

    @property
    def unknown(self) -> dict[str, str]: ...
