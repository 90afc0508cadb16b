"""A queue instrumented in its own process, read as one :class:`~qhealth.Source`.

The pool writes its counts into :class:`~qhealth.Probe` objects, one per
writing thread (each probe has one writer, so the hot path takes no lock).
At each tick the monitor reads this source, which sums the probes, asks the
pool's depth and oldest-age callables, and returns one
:class:`~qhealth.Reading`. Nothing here writes a counter the pool owns: a pool
that keeps some counts itself (an instrumented ``asyncio.Queue`` counts its
gets and ``task_done`` calls on the queue object) hands over a ``counts``
callable that the tick reads in their place.

Threads come and go (a thread pool that recycles its threads, gevent,
per-request threads): when a thread has finished, its probe's counts fold
into a retired total and the probe is dropped, so the tick costs the same and
memory stays flat however many threads have ever written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ._probe import Clock, Probe
from ._source import Reading

DepthSource = Callable[[], int | None]
"""Returns the number of items waiting, or None when it cannot tell right now."""

Counts = Callable[[], Mapping[str, int]]
"""Counts a pool keeps itself (``processed_total``, ``busy``, ``enqueued_total``):
read at the tick in place of the probes' own."""

_COUNTERS = (
    "enqueued_total",
    "processed_total",
    "failed_total",
    "attempts_total",
    "rate_limited_total",
    "polls_hit_total",
    "polls_empty_total",
    "busy",
    "workers",
)


@dataclass(slots=True)
class _Retired:
    """What the probes of finished threads counted."""

    counts: dict[str, int]
    idle_base: float = 0.0
    idle_open: int = 0
    idle_known: bool = False


class ProbeSource:
    """The probes of one queue (one per writing thread) and its depth, read as one source.

    ``depth`` returns the items waiting; without it the depth is derived from
    the counts (enqueued - processed - busy). ``oldest_age`` returns the age of
    the oldest waiting item. ``counts_enqueued=False``: the probes never see
    items arrive (a worker-side adapter whose producers run elsewhere), so
    readings report arrivals as unknown instead of a false zero.
    """

    def __init__(
        self,
        name: str,
        *,
        depth: DepthSource | None = None,
        oldest_age: Callable[[], float | None] | None = None,
        counts: Counts | None = None,
        timed: bool = True,
        clock: Clock,
        counts_enqueued: bool = True,
    ) -> None:
        self.name = name
        self._depth = depth
        self._oldest_age = oldest_age
        self._counts = counts
        self._timed = timed
        self._clock = clock
        self._counts_enqueued = counts_enqueued
        self._lock = threading.Lock()
        self._local = threading.local()
        self._probes: list[tuple[threading.Thread, Probe]] = []
        self._retired = _Retired({name: 0 for name in _COUNTERS})

    # -- the pool's side ---------------------------------------------------------

    def probe(self) -> Probe:
        """The calling thread's probe (made, under a lock, the first time a thread asks)."""
        probe: Probe | None = getattr(self._local, "probe", None)
        if probe is None:
            probe = Probe(self.name, timed=self._timed, clock=self._clock, _owner=self)
            with self._lock:
                self._probes = [*self._probes, (threading.current_thread(), probe)]
            self._local.probe = probe
        return probe

    @property
    def probe_count(self) -> int:
        """Probes held now: one per live thread that has written (finished ones are folded)."""
        return len(self._probes)

    # -- the tick's side -----------------------------------------------------------

    @property
    def unknown(self) -> dict[str, str]:
        if self._counts_enqueued:
            return {}
        return {"enqueued_total": "the producers run elsewhere: this process never sees items arrive"}

    def read(self) -> Reading | None:
        """Sum the probes (and the retired counts) into one reading; None when
        the depth source cannot tell right now. Raises what the depth or counts
        callables raise, and ValueError for a depth that is not a count."""
        durations, waits = self._retire_finished()
        now = self._clock()
        retired = self._retired
        totals = dict(retired.counts)
        idle = retired.idle_base + retired.idle_open * now
        idle_known = retired.idle_known
        for _, p in self._probes:
            for name in _COUNTERS:
                totals[name] += getattr(p, name)
            idle += p.idle_seconds(now)
            idle_known = idle_known or p.idle_known
            d, w = p.drain_observations()
            durations += d
            waits += w
        if self._counts is not None:
            totals.update(self._counts())
        busy, workers = max(totals["busy"], 0), totals["workers"]
        if self._depth is not None:
            depth = self._depth()
            if depth is None:
                return None
            if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
                raise ValueError(f"the depth source returned {depth!r}, not a non-negative integer")
        else:
            depth = max(totals["enqueued_total"] - totals["processed_total"] - busy, 0)
        oldest = self._oldest_age() if self._oldest_age is not None else None
        return Reading(
            depth=depth,
            workers=workers if (workers > 0 or idle_known) else None,
            busy=busy,
            enqueued_total=totals["enqueued_total"] if self._counts_enqueued else None,
            processed_total=totals["processed_total"],
            failed_total=totals["failed_total"],
            attempts_total=totals["attempts_total"],
            rate_limited_total=totals["rate_limited_total"],
            idle_s_total=max(idle, 0.0) if idle_known else None,
            oldest_age_s=oldest,
            polls_hit_total=totals["polls_hit_total"],
            polls_empty_total=totals["polls_empty_total"],
            durations=tuple(durations),
            waits=tuple(waits),
        )

    def _retire_finished(self) -> tuple[list[float], list[float]]:
        """Fold the probes of finished threads into the retired total (their
        threads write no more) and forget them; their last latency observations."""
        durations: list[float] = []
        waits: list[float] = []
        if all(thread.is_alive() for thread, _ in self._probes):
            return durations, waits
        with self._lock:
            alive = []
            retired = self._retired
            for thread, probe in self._probes:
                if thread.is_alive():
                    alive.append((thread, probe))
                    continue
                for name in _COUNTERS:
                    retired.counts[name] += getattr(probe, name)
                retired.idle_base += probe._idle_base
                retired.idle_open += probe._idle_open
                retired.idle_known = retired.idle_known or probe.idle_known
                d, w = probe.drain_observations()
                durations += d
                waits += w
            self._probes = alive
        return durations, waits
