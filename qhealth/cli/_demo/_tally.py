"""What the demo measures about each pool, tick by tick.

A :class:`Tally` is a monitor listener. From each queue's snapshots it keeps
the few running totals the summary table needs (time in each condition,
throughput mean and variation, idle worker-seconds, the idle ones that passed
while items waited) and a short history for the live view's sparklines. It
keeps no sample list: memory stays flat however long the demo runs.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field, replace

from qhealth import Listener, QueueSnapshot
from qhealth.conditions import SEVERITY, WARMING_UP

#: Ticks of history kept for sparklines.
HISTORY = 60


@dataclass
class Running:
    """Mean and variance of a stream of values (Welford): no list of every value."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, value: float) -> None:
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)

    @property
    def cv(self) -> float | None:
        """Coefficient of variation (standard deviation / mean)."""
        if self.n < 2 or self.mean <= 0:
            return None
        return math.sqrt(self.m2 / (self.n - 1)) / self.mean


#: Seconds per bin of the throughput and arrival variation: longer than a tick,
#: so that Poisson noise in half a second of items does not drown the pattern.
BIN_S = 1.0


@dataclass
class Binned:
    """Counts per :data:`BIN_S`-second bin, fed tick by tick, summarised by :class:`Running`."""

    stats: Running = field(default_factory=Running)
    count: float = 0.0
    seconds: float = 0.0

    def add(self, count: float, dt: float) -> None:
        self.count += count
        self.seconds += dt
        if self.seconds >= BIN_S - 1e-6:
            self.stats.add(self.count / self.seconds)
            self.count = self.seconds = 0.0


@dataclass
class QueueTally:
    """Running measures of one queue (see :class:`Tally`)."""

    queue: str
    latest: QueueSnapshot | None = None
    seconds: float = 0.0
    """Seconds covered by samples."""
    time_in: dict[str, float] = field(default_factory=dict)
    """Seconds spent in each condition, and in ``healthy`` / ``warming_up``
    (conditions can overlap, so the condition times may add up to more)."""
    idle_waiting_s: float = 0.0
    """Idle worker-seconds that passed while items waited (a backlog at both
    ends of the interval): capacity paid for and wasted."""
    throughput: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    """Items processed per second, per tick (recent ticks only)."""
    depths: deque[int] = field(default_factory=lambda: deque(maxlen=HISTORY))
    max_depth: int = 0
    processed: Binned = field(default_factory=Binned)
    """Items processed per second, per bin, over the whole run."""
    arrived: Binned = field(default_factory=Binned)
    """Items enqueued per second, per bin, over the whole run."""

    def add(self, snapshot: QueueSnapshot) -> None:
        previous, self.latest = self.latest, snapshot
        sample, health = snapshot.sample, snapshot.health
        self.depths.append(sample.depth)
        self.max_depth = max(self.max_depth, sample.depth)
        if previous is None:
            return
        before = previous.sample
        dt = sample.t - before.t
        if dt <= 0:
            return
        self.seconds += dt
        keys: list[str]
        if health.state == WARMING_UP:
            keys = [str(WARMING_UP)]
        elif not health.conditions:
            keys = ["healthy"]
        else:
            keys = [str(c) for c in health.conditions]
        for key in keys:
            self.time_in[key] = self.time_in.get(key, 0.0) + dt
        if sample.processed_total is not None and before.processed_total is not None:
            done = max(0, sample.processed_total - before.processed_total)
            self.throughput.append(done / dt)
            self.processed.add(done, dt)
        if sample.enqueued_total is not None and before.enqueued_total is not None:
            self.arrived.add(max(0, sample.enqueued_total - before.enqueued_total), dt)
        if (
            sample.idle_s_total is not None
            and before.idle_s_total is not None
            and sample.depth > 0
            and before.depth > 0
        ):
            self.idle_waiting_s += max(0.0, sample.idle_s_total - before.idle_s_total)

    @property
    def throughput_mean(self) -> float | None:
        """Mean items/s over the ticks seen."""
        stats = self.processed.stats
        return stats.mean if stats.n else None

    @property
    def throughput_cv(self) -> float | None:
        """Coefficient of variation of the per-tick throughput: a pool that
        keeps up with its arrivals varies as much as they do (see
        :attr:`arrivals_cv`), one that surges and stops varies more."""
        return self.processed.stats.cv

    @property
    def arrivals_cv(self) -> float | None:
        return self.arrived.stats.cv

    def copy(self) -> QueueTally:
        return replace(
            self,
            time_in=dict(self.time_in),
            processed=replace(self.processed, stats=replace(self.processed.stats)),
            arrived=replace(self.arrived, stats=replace(self.arrived.stats)),
            throughput=deque(self.throughput, maxlen=HISTORY),
            depths=deque(self.depths, maxlen=HISTORY),
        )

    def share_in(self, key: str) -> float:
        return self.time_in.get(key, 0.0) / self.seconds if self.seconds else 0.0

    @property
    def conditions_seen(self) -> list[str]:
        """Conditions active at some tick, most severe first."""
        return [str(c) for c in SEVERITY if str(c) in self.time_in]


class Tally(Listener):
    """A monitor listener that keeps a :class:`QueueTally` per queue."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, QueueTally] = {}

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        with self._lock:
            tally = self._queues.get(snapshot.queue)
            if tally is None:
                tally = self._queues[snapshot.queue] = QueueTally(snapshot.queue)
            tally.add(snapshot)

    def on_unwatch(self, queue: str) -> None:
        """Keep the tally: the summary is printed after the pools stop."""

    def get(self, queue: str) -> QueueTally:
        """A copy of a queue's tally, safe to read while ticks go on."""
        with self._lock:
            tally = self._queues.get(queue)
            return tally.copy() if tally is not None else QueueTally(queue)
