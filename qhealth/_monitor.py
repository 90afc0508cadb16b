"""The monitor: one ticker that samples every watched queue and judges it.

At each tick (default every second) the monitor reads each queue's probes and
depth source into a :class:`~qhealth.Sample`, appends it to that queue's
bounded window, classifies the window, and hands a :class:`QueueSnapshot` to
its listeners (exporters, recorders, the demo's live view). One thread (or one
asyncio task) serves all queues; the pool itself never waits for it.

Nothing a listener or a depth source does can break the pool: failures are
logged, at most once per interval and kind, and skipped.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ._classifier import WARMING_UP, Classifier, Health
from ._config import ClassifierConfig
from ._log import ThrottledLog
from ._probe import Clock, Probe, ThreadLocalProbes
from ._sample import Sample
from ._source import Reading, Source

DepthSource = Callable[[], int | None]
"""Returns the number of items waiting, or None when it cannot tell right now."""

DEFAULT_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """Everything known about one queue at one tick: what listeners receive."""

    queue: str
    sample: Sample
    health: Health
    capacity: int | None
    polls_hit_total: int
    polls_empty_total: int
    oldest_age_s: float | None = None
    durations: tuple[float, ...] = ()
    """Processing times observed since the previous tick (bounded per tick)."""
    waits: tuple[float, ...] = ()
    """Queue waits observed since the previous tick (bounded per tick)."""
    interval_s: float = DEFAULT_INTERVAL_S
    source_up: bool = True
    """False when the latest read of the queue's source failed (broker down, key
    gone, wrong password). ``sample`` and ``health`` are then the last good ones,
    kept for reference only: exporters withdraw them instead of serving them as
    current (``shared/spec/metrics.md``)."""
    sampled_at: float | None = None
    """Unix time of ``sample``; None while the queue has never been read."""

    @property
    def sampled(self) -> bool:
        """Whether ``sample`` is a real reading (not the placeholder of a queue
        whose source has failed since it was first watched)."""
        return self.sampled_at is not None


class Listener:
    """Receives every queue's snapshot at every tick. Override what you need;
    an exception raised here is logged and the next listener still runs."""

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        """Called once per queue per tick, from the monitor's ticker."""

    def on_source_down(self, snapshot: QueueSnapshot) -> None:
        """A read of the queue's source failed at this tick. ``snapshot`` has
        ``source_up=False`` and the last good sample (if any): show the queue as
        stale. Called at every tick while the source stays down; ``on_tick``
        resumes when a read succeeds."""

    def on_unwatch(self, queue: str) -> None:
        """The queue is no longer watched: drop what you keep for it."""


@dataclass(eq=False)
class Watched:
    """A queue under watch (internal): its sources, probes and window."""

    name: str
    depth: DepthSource | None
    capacity: int | None
    oldest_age: Callable[[], float | None] | None
    before_tick: Callable[[], None] | None
    classifier: Classifier
    timed: bool
    clock: Clock
    probes: ThreadLocalProbes = field(init=False)
    latest: QueueSnapshot | None = None
    counts_enqueued: bool = True
    source: Source | None = None
    """Read instead of the probes when set (a queue watched from outside)."""

    def __post_init__(self) -> None:
        self.probes = ThreadLocalProbes(
            lambda: Probe(self.name, timed=self.timed, clock=self.clock, _watched=self)
        )

    def probe_for_current_thread(self) -> Probe:
        return self.probes.current()


def _check_queue(queue: object, capacity: object) -> None:
    if not isinstance(queue, str) or not queue:
        raise ValueError("queue name must be a non-empty string")
    if capacity is not None and (
        isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0
    ):
        raise ValueError(f"capacity must be a positive integer or None, got {capacity!r}")


class Monitor:
    """Samples and classifies queues.

    ``interval`` is the sampling period in seconds; ``config`` the classifier
    settings (its ``window_s`` is the sliding window). ``clock`` must be
    monotonic; tests pass a fake one and drive :meth:`tick` themselves.
    ``wall_clock`` (Unix time) stamps each sample for
    ``qhealth_last_sample_timestamp_seconds``.
    """

    def __init__(
        self,
        *,
        interval: float = DEFAULT_INTERVAL_S,
        config: ClassifierConfig | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        if not interval > 0 or not math.isfinite(interval):
            raise ValueError(f"monitor interval must be a positive number of seconds, got {interval!r}")
        self.interval = float(interval)
        self.config = config or ClassifierConfig()
        self._clock = clock
        self._wall_clock = wall_clock
        self._t0 = clock()
        self._queues: dict[str, Watched] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()  # guards registration only, never the hot path
        self._log = ThrottledLog(interval_s=max(60.0, self.interval), clock=clock)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- registration --------------------------------------------------------

    def watch(
        self,
        queue: str,
        *,
        depth: DepthSource | None = None,
        capacity: int | None = None,
        workers: int | None = None,
        oldest_age: Callable[[], float | None] | None = None,
        timed: bool = True,
        before_tick: Callable[[], None] | None = None,
        counts_enqueued: bool = True,
    ) -> Probe:
        """Start watching a queue and return its probe for the calling thread.

        ``depth`` returns the items waiting; without it the monitor derives the
        depth from the probe (enqueued - processed - busy). ``workers`` is the
        pool size when it is fixed; pools whose workers come and go call
        :meth:`Probe.worker_started` / :meth:`Probe.worker_stopped` instead.
        ``timed`` chooses how idle time is measured (see :class:`Probe`).
        ``before_tick`` runs on the ticker just before the probes are read: an
        integration that keeps its counters elsewhere (to keep its hot path
        shorter still) copies them into the probe there.
        ``counts_enqueued=False`` says the probes never see items arrive (a
        worker-side adapter whose producers run in other processes): samples
        then report ``enqueued_total`` as unknown instead of a false zero.
        Watching a name twice returns the existing queue's probe.
        """
        _check_queue(queue, capacity)
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise ValueError(f"workers must be a non-negative integer or None, got {workers!r}")
        with self._lock:
            existing = self._queues.get(queue)
            if existing is not None:
                return existing.probe_for_current_thread()
            watched = self._add(
                queue,
                capacity,
                depth=depth,
                oldest_age=oldest_age,
                before_tick=before_tick,
                timed=timed,
                counts_enqueued=counts_enqueued,
            )
        probe = watched.probe_for_current_thread()
        for _ in range(workers or 0):
            probe.worker_started()
        return probe

    def watch_source(self, queue: str, source: Source, *, capacity: int | None = None) -> None:
        """Watch a queue from outside: each tick reads ``source`` (a
        :class:`~qhealth.Source`) instead of probes. Fields the source cannot
        know stay ``None`` in the samples, and the classifier does not judge
        the conditions that need them. Watching a name twice is an error.
        """
        _check_queue(queue, capacity)
        if not callable(getattr(source, "read", None)):
            raise TypeError(f"source must have a read() method, got {type(source).__name__}")
        with self._lock:
            if queue in self._queues:
                raise ValueError(f"queue {queue!r} is already watched")
            self._add(queue, capacity, source=source)

    def _add(self, queue: str, capacity: int | None, **options: Any) -> Watched:
        """Register a queue (the caller holds the lock)."""
        options.setdefault("depth", None)
        options.setdefault("oldest_age", None)
        options.setdefault("before_tick", None)
        options.setdefault("timed", True)
        watched = Watched(
            name=queue,
            capacity=capacity,
            classifier=Classifier(self.interval, self.config, capacity),
            clock=self._clock,
            **options,
        )
        self._queues = {**self._queues, queue: watched}
        return watched

    def unwatch(self, queue: str) -> None:
        with self._lock:
            if queue not in self._queues:
                return
            self._queues = {k: v for k, v in self._queues.items() if k != queue}
        for listener in self._listeners:
            try:
                listener.on_unwatch(queue)
            except Exception:
                self._log.exception(
                    f"listener:{type(listener).__name__}", "qhealth listener %r failed", listener
                )

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = [x for x in self._listeners if x is not listener]

    @property
    def queues(self) -> list[str]:
        return list(self._queues)

    def probe(self, queue: str) -> Probe:
        """The calling thread's probe of a watched queue (KeyError if not watched)."""
        return self._queues[queue].probe_for_current_thread()

    def snapshot(self, queue: str) -> QueueSnapshot | None:
        """The latest snapshot of a queue, None before its first tick."""
        watched = self._queues.get(queue)
        return watched.latest if watched else None

    def snapshots(self) -> Mapping[str, QueueSnapshot]:
        """The latest snapshot of every queue that has one."""
        return {name: w.latest for name, w in self._queues.items() if w.latest is not None}

    def health(self, queue: str) -> Health | None:
        snap = self.snapshot(queue)
        return snap.health if snap else None

    # -- sampling -------------------------------------------------------------

    def tick(self, now: float | None = None) -> dict[str, QueueSnapshot]:
        """Sample and judge every queue once (the ticker calls this)."""
        if now is None:
            now = self._clock()
        results: dict[str, QueueSnapshot] = {}
        for watched in self._queues.values():
            snapshot = self._tick_one(watched, now)
            if snapshot is None:
                continue
            if snapshot.source_up:
                results[watched.name] = snapshot
            for listener in self._listeners:
                try:
                    if snapshot.source_up:
                        listener.on_tick(snapshot)
                    else:
                        listener.on_source_down(snapshot)
                except Exception:
                    self._log.exception(
                        f"listener:{type(listener).__name__}",
                        "qhealth listener %s failed; skipped",
                        type(listener).__name__,
                    )
        return results

    def _down(self, watched: Watched, now: float) -> QueueSnapshot:
        """The snapshot of a queue whose source failed at this tick: the last
        good one marked stale, or a placeholder when there never was one."""
        last = watched.latest
        if last is not None:
            down = replace(last, source_up=False, durations=(), waits=())
        else:
            t = now - self._t0
            down = QueueSnapshot(
                queue=watched.name,
                sample=Sample(t=t, depth=0),
                health=Health(t=t, state=WARMING_UP),
                capacity=watched.capacity,
                polls_hit_total=0,
                polls_empty_total=0,
                interval_s=self.interval,
                source_up=False,
            )
        watched.latest = down
        return down

    def _tick_one(self, watched: Watched, now: float) -> QueueSnapshot | None:
        t = now - self._t0
        last = watched.classifier.window.latest
        if last is not None and t <= last.t:
            return None  # two ticks at the same instant (a fake clock that did not move)
        source = watched.source
        try:
            reading: object = source.read() if source is not None else self._read_probes(watched, now)
        except Exception:
            self._log.exception(
                f"source:{watched.name}", "qhealth: source of queue %r failed; sample skipped", watched.name
            )
            return self._down(watched, now)
        if reading is None:
            return self._down(watched, now)
        if not isinstance(reading, Reading):
            self._log.warning(
                f"source-value:{watched.name}",
                "qhealth: source of queue %r returned %r, not a Reading; sample skipped",
                watched.name,
                type(reading).__name__,
            )
            return self._down(watched, now)
        busy, workers = reading.busy, reading.workers
        sample = Sample(
            t=t,
            depth=reading.depth,
            workers=workers,
            busy=min(busy, workers) if busy is not None and workers is not None else busy,
            enqueued_total=reading.enqueued_total,
            processed_total=reading.processed_total,
            failed_total=reading.failed_total,
            attempts_total=reading.attempts_total,
            rate_limited_total=reading.rate_limited_total,
            idle_s_total=reading.idle_s_total,
        )
        snapshot = QueueSnapshot(
            queue=watched.name,
            sample=sample,
            health=watched.classifier.update(sample),
            capacity=watched.capacity,
            polls_hit_total=reading.polls_hit_total,
            polls_empty_total=reading.polls_empty_total,
            oldest_age_s=reading.oldest_age_s,
            durations=reading.durations,
            waits=reading.waits,
            interval_s=self.interval,
            sampled_at=self._wall_clock(),
        )
        watched.latest = snapshot
        return snapshot

    def _read_probes(self, watched: Watched, now: float) -> Reading | None:
        """A reading of a queue instrumented in process: its probes summed,
        plus its depth and oldest-age sources."""
        if watched.before_tick is not None:
            watched.before_tick()
        enqueued = processed = failed = attempts = limited = hit = empty = busy = workers = 0
        idle = 0.0
        idle_known = False
        durations: list[float] = []
        waits: list[float] = []
        for p in watched.probes.all():
            enqueued += p.enqueued_total
            processed += p.processed_total
            failed += p.failed_total
            attempts += p.attempts_total
            limited += p.rate_limited_total
            hit += p.polls_hit_total
            empty += p.polls_empty_total
            busy += p.busy
            workers += p.workers
            idle += p.idle_seconds(now)
            idle_known = idle_known or p.idle_known
            d, w = p.drain_observations()
            durations += d
            waits += w
        busy = max(busy, 0)
        if watched.depth is not None:
            try:
                depth = watched.depth()
            except Exception:
                self._log.exception(
                    f"depth:{watched.name}",
                    "qhealth: depth source of queue %r failed; sample skipped",
                    watched.name,
                )
                return None
            if depth is None:
                return None
            if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
                self._log.warning(
                    f"depth-value:{watched.name}",
                    "qhealth: depth source of queue %r returned %r, not a non-negative integer; "
                    "sample skipped",
                    watched.name,
                    depth,
                )
                return None
        else:
            depth = max(enqueued - processed - busy, 0)
        oldest: float | None = None
        if watched.oldest_age is not None:
            try:
                oldest = watched.oldest_age()
            except Exception:
                self._log.exception(
                    f"oldest:{watched.name}", "qhealth: oldest-age source of queue %r failed", watched.name
                )
        known_workers = workers if (workers > 0 or idle_known) else None
        return Reading(
            depth=depth,
            workers=known_workers,
            busy=busy,
            enqueued_total=enqueued if watched.counts_enqueued else None,
            processed_total=processed,
            failed_total=failed,
            attempts_total=attempts,
            rate_limited_total=limited,
            idle_s_total=max(idle, 0.0) if idle_known else None,
            oldest_age_s=oldest,
            polls_hit_total=hit,
            polls_empty_total=empty,
            durations=tuple(durations),
            waits=tuple(waits),
        )

    # -- running --------------------------------------------------------------

    def start(self) -> Monitor:
        """Tick in a background daemon thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run_thread, name="qhealth-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run_thread(self) -> None:
        next_at = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self._safe_tick()
            next_at += self.interval
            behind = time.monotonic() - next_at
            if behind > 0:  # a tick took longer than the interval: skip, never burst
                next_at += math.ceil(behind / self.interval) * self.interval

    async def run(self) -> None:
        """Tick on the running event loop until cancelled (an alternative to
        :meth:`start` for programs that prefer no extra thread; depth sources
        then run on the loop and must not block)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self._safe_tick()
            next_at += self.interval
            behind = loop.time() - next_at
            if behind > 0:
                next_at += math.ceil(behind / self.interval) * self.interval

    def _safe_tick(self) -> None:
        try:
            self.tick()
        except Exception:  # never let the ticker die
            self._log.exception("tick", "qhealth: monitor tick failed")

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_default: Monitor | None = None
_default_lock = threading.Lock()


def default_monitor() -> Monitor:
    """The process-wide monitor that integrations use when none is given.

    Made and started (one daemon thread, ticking every second) on first use, the
    way prometheus-client has a default registry. Programs that want another
    interval or window make their own :class:`Monitor` and pass it explicitly.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = Monitor().start()
        return _default
