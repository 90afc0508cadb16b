"""The hot path: what a worker pool calls for every item.

A :class:`Probe` is a handful of integer attributes. Every per-item method is
one or two attribute updates: no lock, no clock read unless idle time is being
timed, no OpenTelemetry or Prometheus call, no allocation. Everything costly
(sampling, classification, export) happens on the monitor's tick, which reads
these attributes.

Idle time
    Idle worker-seconds are integrated from idle *spans*: a span begins when a
    worker stops holding an item (or starts, idle) and ends when it takes one.
    Instead of a timestamp per worker, the probe keeps the sum trick
    ``idle(now) = _idle_base + _idle_open * now`` where a span opening at
    ``t0`` adds ``-t0`` to the base and one to the open count, and closing at
    ``t1`` adds ``+t1`` and minus one. That is exact, O(1), and shards add up.

    There are two ways to feed it, chosen once per probe:

    * ``timed=True`` (default): :meth:`started` and :meth:`succeeded` /
      :meth:`failed` close and open spans themselves, reading the clock once
      each. Exact for any pool, about 0.1 µs per call. Use it for frameworks
      whose own per-item overhead is microseconds or more (Celery, RQ, arq,
      thread pools) and for anything that only has before/after hooks.
    * ``timed=False``: the per-item calls are pure counters and the pool calls
      :meth:`idle_begin` / :meth:`idle_end` around the *blocking wait* only.
      A blocking worker that finds an item waiting never goes idle, so the
      clock is read only when a worker really has nothing to do: free on the
      hot path. The asyncio queue integration and ``src_pool`` work this way.

Threads and event loops
    A probe is *single-writer*: call it from one thread. Any number of asyncio
    tasks on that thread's event loop may share it (the loop runs one at a
    time), and so may successive event loops on the same thread: a probe holds
    no future, lock or loop reference. Code running in several threads (a
    ``ThreadPoolExecutor``, one event loop per thread) calls :meth:`local` in
    each thread and gets that thread's own probe of the same queue; the monitor
    sums them. ``local()`` takes a lock only the first time a thread appears;
    when a thread has finished, the monitor folds its probe's counts into a
    retired total and drops it. Reading (the monitor's tick) happens from
    another thread without a lock: each attribute read is atomic, so a sample
    may be skewed by the items that moved while it was read, never corrupted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

Clock = Callable[[], float]


class _Owner(Protocol):
    """What hands a thread its own probe (a :class:`~qhealth._probes.ProbeSource`)."""

    def probe(self) -> Probe: ...


#: Latency observations kept per probe between two ticks. Beyond this, new
#: observations are counted as dropped: memory stays bounded whatever the rate.
MAX_OBSERVATIONS_PER_TICK = 2048


class Probe:
    """Hot-path counters of one queue as seen by one thread.

    Get one from :meth:`qhealth.Monitor.watch` (or :meth:`local` for another
    thread); a probe made directly (``Probe("name")``) works the same but is
    not sampled by any monitor, which is what unit tests and benchmarks want.
    """

    __slots__ = (
        "_clock",
        "_idle_base",
        "_idle_known",
        "_idle_open",
        "_owner",
        "_timed",
        "attempts_total",
        "busy",
        "durations",
        "enqueued_total",
        "failed_total",
        "observations_dropped",
        "polls_empty_total",
        "polls_hit_total",
        "processed_total",
        "queue",
        "rate_limited_total",
        "waits",
        "workers",
    )

    def __init__(
        self,
        queue: str,
        *,
        timed: bool = True,
        clock: Clock = time.monotonic,
        _owner: _Owner | None = None,
    ) -> None:
        self.queue = queue
        self.enqueued_total = 0
        self.processed_total = 0
        self.failed_total = 0
        self.attempts_total = 0
        self.rate_limited_total = 0
        self.polls_hit_total = 0
        self.polls_empty_total = 0
        self.busy = 0
        """Items held by this thread's workers right now (can go negative in one
        shard when items start in one thread and end in another; the sum is right)."""
        self.workers = 0
        """Workers this thread registered with :meth:`worker_started` (same caveat)."""
        self.durations: list[float] = []
        """Processing times observed since the last tick (bounded)."""
        self.waits: list[float] = []
        """Queue waits (enqueue to start) observed since the last tick (bounded)."""
        self.observations_dropped = 0
        self._timed = timed
        self._clock = clock
        self._idle_base = 0.0
        self._idle_open = 0
        self._idle_known = False
        self._owner = _owner

    # -- per item ---------------------------------------------------------

    def enqueued(self, n: int = 1) -> None:
        """``n`` items were put on the queue."""
        self.enqueued_total += n

    def started(self) -> None:
        """A worker took an item and holds it until :meth:`succeeded` or :meth:`failed`."""
        self.busy += 1
        if self._timed:
            self._idle_base += self._clock()
            self._idle_open -= 1

    def succeeded(self) -> None:
        """The item a worker held was processed successfully."""
        self.busy -= 1
        self.processed_total += 1
        if self._timed:
            self._idle_base -= self._clock()
            self._idle_open += 1

    def failed(self) -> None:
        """The item a worker held ended with an error (it counts as processed too)."""
        self.busy -= 1
        self.processed_total += 1
        self.failed_total += 1
        if self._timed:
            self._idle_base -= self._clock()
            self._idle_open += 1

    def returned(self) -> None:
        """The item a worker held went back to the queue unprocessed (a
        shutdown deadline, a cancelled worker, a retry scheduled by the
        broker): the worker is no longer busy, and nothing counts as processed."""
        self.busy -= 1
        if self._timed:
            self._idle_base -= self._clock()
            self._idle_open += 1

    def attempted(self, n: int = 1) -> None:
        """``n`` downstream calls were made (count every call, including retries
        and the ones answered 429)."""
        self.attempts_total += n

    def rate_limited(self, n: int = 1) -> None:
        """``n`` downstream calls were answered "rate limited" (HTTP 429 or
        equivalent). Count them in :meth:`attempted` as well."""
        self.rate_limited_total += n

    def polled(self, hit: bool) -> None:
        """A polling worker asked its source for work: ``hit`` when it got some.
        Blocking workers never call this."""
        if hit:
            self.polls_hit_total += 1
        else:
            self.polls_empty_total += 1

    # -- latency observations (sampled by the caller) -----------------------

    def observe_duration(self, seconds: float) -> None:
        """Record one processing time for the duration histogram. Call it for
        a sample of items when timing every one would cost too much."""
        if len(self.durations) < MAX_OBSERVATIONS_PER_TICK:
            self.durations.append(seconds)
        else:
            self.observations_dropped += 1

    def observe_wait(self, seconds: float) -> None:
        """Record one queue wait (enqueue to start of processing)."""
        if len(self.waits) < MAX_OBSERVATIONS_PER_TICK:
            self.waits.append(seconds)
        else:
            self.observations_dropped += 1

    def drain_observations(self) -> tuple[list[float], list[float]]:
        """Hand the observations since the last call to the tick (durations, waits)."""
        durations, waits = self.durations, self.waits
        self.durations, self.waits = [], []
        return durations, waits

    # -- workers and idle spans -------------------------------------------

    def worker_started(self) -> None:
        """A worker came into existence. A timed probe counts it idle until it
        takes an item; an untimed one leaves idle time to :meth:`idle_begin`."""
        self.workers += 1
        self._idle_known = True
        if self._timed:
            self._idle_base -= self._clock()
            self._idle_open += 1

    def worker_stopped(self) -> None:
        """An idle worker went away (a worker holding an item finishes it first)."""
        self.workers -= 1
        if self._timed:
            self._idle_base += self._clock()
            self._idle_open -= 1

    def mark_failed(self) -> None:
        """Count one more failed item without touching busy or processed: for
        integrations where completion is counted elsewhere (``task_done``)."""
        self.failed_total += 1

    def idle_begin(self) -> None:
        """A worker blocks waiting for work (``timed=False`` probes).

        Call it only when the wait really blocks: a worker that finds an item
        at once was never idle, and skipping the call keeps the hot path free.
        """
        self._idle_known = True
        self._idle_base -= self._clock()
        self._idle_open += 1

    def idle_end(self) -> None:
        """The blocked worker got an item, or stopped waiting."""
        self._idle_base += self._clock()
        self._idle_open -= 1

    def idle_seconds(self, now: float | None = None) -> float:
        """Idle worker-seconds so far, open spans counted up to ``now``."""
        if now is None:
            now = self._clock()
        return self._idle_base + self._idle_open * now

    @property
    def idle_known(self) -> bool:
        """Whether idle time is being accounted (a worker was registered or an
        idle span reported); otherwise samples report it as unknown."""
        return self._idle_known

    @contextmanager
    def processing(self) -> Iterator[None]:
        """Wrap the processing of one item: busy while inside, the item counts
        as failed if the block raises (the exception propagates), and its
        duration is observed. For a worker loop the pool does not instrument::

            item = await queue.get()
            with probe.processing():
                await handle(item)
        """
        clock = self._clock
        t0 = clock()
        self.started()
        try:
            yield
        except BaseException:
            self.failed()
            raise
        else:
            self.succeeded()
        finally:
            self.observe_duration(clock() - t0)

    # -- threads -----------------------------------------------------------

    def local(self) -> Probe:
        """The probe of the same queue for the calling thread (this one, when
        called from the thread it belongs to, or for a probe not watched by a
        monitor)."""
        if self._owner is None:
            return self
        return self._owner.probe()
