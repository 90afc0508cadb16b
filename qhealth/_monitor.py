"""The monitor: one ticker that samples every watched queue and judges it.

Every queue is watched through a :class:`~qhealth.Source`: a queue
instrumented in this process is a :class:`~qhealth._probes.ProbeSource` (its
probes summed, its depth asked), a queue watched from outside is a broker
reader (``qhealth.sidecar``), a trace being replayed is a
:class:`~qhealth.replay.TraceSource`. At each tick (default every second) the
monitor reads each source into a :class:`~qhealth.Sample`, appends it to the
queue's bounded window, classifies the window, and hands a
:class:`QueueSnapshot` to its listeners (exporters, recorders, the status
page). One thread (or one asyncio task) serves all queues; the pool itself
never waits for it.

Nothing a listener or a source does can break the pool or another queue: a
failure is logged, at most once a minute per kind, and the queue it hit is
reported down for that tick (``qhealth_source_up`` 0) while the others go on.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from ._classifier import WARMING_UP, Classifier, Health
from ._config import ClassifierConfig
from ._log import ThrottledLog
from ._probe import Clock, Probe
from ._probes import Counts, DepthSource, ProbeSource
from ._redact import error_line
from ._sample import OBSERVED_FIELDS, Sample
from ._source import Reading, Source

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


def listen(source: object, listener: Listener) -> Callable[[], None] | None:
    """Register ``listener`` with ``source`` if the source takes listeners (a
    Monitor does; a bare snapshot source does not). Returns how to stop
    listening, or None when the source took no listener."""
    add = getattr(source, "add_listener", None)
    if not callable(add):
        return None
    add(listener)

    def leave() -> None:
        remove = getattr(source, "remove_listener", None)
        if callable(remove):
            remove(listener)

    return leave


class SourceListener(Listener):
    """A listener that registers with its source when made (if the source takes
    listeners) and leaves it on :meth:`close`."""

    _leave: Callable[[], None] | None = None

    def _listen_to(self, source: object) -> None:
        self._leave = listen(source, self)

    @property
    def listening(self) -> bool:
        return self._leave is not None

    def close(self) -> None:
        """Stop listening to the source."""
        leave, self._leave = self._leave, None
        if leave is not None:
            leave()


@dataclass(eq=False)
class Watched:
    """A queue under watch (internal): its source, capacity and classifier."""

    name: str
    source: Source
    capacity: int | None
    classifier: Classifier
    interval: float
    """Seconds between two reads of this queue (a multiple of the monitor's tick)."""
    latest: QueueSnapshot | None = None
    next_read: float = -math.inf


#: Counters and gauges must stay below this (Prometheus and the trace format hold 64-bit values).
MAX_COUNT = 2**63


def _check_reading(reading: Reading) -> None:
    """A reading the classifier and the exporters can take: whole, non-negative
    counts below 2^63, a finite non-negative idle time. A ValueError names the field."""
    for name in OBSERVED_FIELDS:
        value = getattr(reading, name)
        if value is None:
            continue
        if name == "idle_s_total":
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < MAX_COUNT:
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_COUNT:
            shown = (
                value
                if not isinstance(value, int) or value < MAX_COUNT
                else f"{str(value)[:12]}... ({len(str(value))} digits)"
            )
            raise ValueError(f"{name} must be a whole number in [0, 2^63), got {shown}")


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
        counts: Counts | None = None,
        counts_enqueued: bool = True,
    ) -> Probe:
        """Watch a queue instrumented in this process and return its probe for
        the calling thread.

        ``depth`` returns the items waiting; without it the depth is derived
        from the probes (enqueued - processed - busy). ``workers`` is the pool
        size when it is fixed; pools whose workers come and go call
        :meth:`Probe.worker_started` / :meth:`Probe.worker_stopped` instead.
        ``timed`` chooses how idle time is measured (see :class:`Probe`).
        ``counts`` returns counts the pool keeps itself (``processed_total``,
        ``busy``, ``enqueued_total``), read at the tick instead of the probes'
        own: the tick only ever reads what the pool writes.
        ``counts_enqueued=False`` says the probes never see items arrive (a
        worker-side adapter whose producers run in other processes): samples
        then report ``enqueued_total`` as unknown instead of a false zero.

        Watching a name again returns the calling thread's probe of the queue
        already watched; a name watched through :meth:`watch_source` is a
        ValueError.
        """
        _check_queue(queue, capacity)
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise ValueError(f"workers must be a non-negative integer or None, got {workers!r}")
        with self._lock:
            existing = self._queues.get(queue)
            if existing is not None:
                if not isinstance(existing.source, ProbeSource):
                    raise ValueError(f"queue {queue!r} is already watched through a source")
                return existing.source.probe()
            source = ProbeSource(
                queue,
                depth=depth,
                oldest_age=oldest_age,
                counts=counts,
                timed=timed,
                clock=self._clock,
                counts_enqueued=counts_enqueued,
            )
            self._add(queue, source, capacity)
        probe = source.probe()
        for _ in range(workers or 0):
            probe.worker_started()
        return probe

    def watch_source(
        self, queue: str, source: Source, *, capacity: int | None = None, interval: float | None = None
    ) -> None:
        """Watch a queue through ``source`` (a :class:`~qhealth.Source`): each
        tick reads it, or every ``interval`` seconds (a whole number of the
        monitor's ticks: a source that is costly to read, a trace recorded at
        another pace). Fields the source cannot know stay ``None`` in the
        samples, and the classifier does not judge the conditions that need
        them. Watching a name again with the same source does nothing; with
        another source (or a name watched through :meth:`watch`) it is a
        ValueError.
        """
        _check_queue(queue, capacity)
        every = self.interval if interval is None else interval
        ticks = every / self.interval
        if not math.isfinite(ticks) or ticks < 1 or abs(ticks - round(ticks)) > 1e-6:
            raise ValueError(
                f"interval must be a whole number of the monitor's {self.interval:g} s ticks, "
                f"got {interval!r}"
            )
        if not callable(getattr(source, "read", None)):
            raise TypeError(f"source must have a read() method, got {type(source).__name__}")
        with self._lock:
            existing = self._queues.get(queue)
            if existing is not None:
                if existing.source is source:
                    return
                raise ValueError(f"queue {queue!r} is already watched")
            self._add(queue, source, capacity, every)

    def _add(self, queue: str, source: Source, capacity: int | None, interval: float | None = None) -> None:
        """Register a queue (the caller holds the lock)."""
        every = interval or self.interval
        classifier = Classifier(every, self.config, capacity)
        self._queues = {**self._queues, queue: Watched(queue, source, capacity, classifier, every)}

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
        """The calling thread's probe of a queue watched with :meth:`watch`
        (KeyError if not watched, TypeError if watched through a source)."""
        source = self._queues[queue].source
        if not isinstance(source, ProbeSource):
            raise TypeError(f"queue {queue!r} is watched through a source: it has no probe")
        return source.probe()

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
            if watched.interval > self.interval:  # read less often than the monitor ticks
                if now < watched.next_read:
                    continue
                watched.next_read = now + watched.interval - self.interval / 2
            try:
                snapshot = self._tick_one(watched, now)
            except Exception as exc:  # a bad reading (a counter out of range...) hits its queue only
                self._log.warning(
                    f"tick:{watched.name}",
                    "qhealth: queue %r could not be sampled (%s); sample skipped",
                    watched.name,
                    error_line(exc),
                )
                snapshot = self._down(watched, now)
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
                interval_s=watched.interval,
                source_up=False,
            )
        watched.latest = down
        return down

    def _tick_one(self, watched: Watched, now: float) -> QueueSnapshot | None:
        t = now - self._t0
        last = watched.classifier.window.latest
        if last is not None and t <= last.t:
            return None  # two ticks at the same instant (a fake clock that did not move)
        try:
            reading: object = watched.source.read()
        except Exception as exc:
            self._log.warning(
                f"source:{watched.name}",
                "qhealth: source of queue %r failed (%s); sample skipped",
                watched.name,
                error_line(exc),
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
        _check_reading(reading)
        busy, workers = reading.busy, reading.workers
        if busy is not None and workers is not None and busy > workers:
            reading = replace(reading, busy=workers)
        sample = reading.at(t)
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
            interval_s=watched.interval,
            sampled_at=self._wall_clock(),
        )
        watched.latest = snapshot
        return snapshot

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
