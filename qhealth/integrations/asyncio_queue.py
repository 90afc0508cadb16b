"""Instrument an existing ``asyncio.Queue`` with one line.

::

    queue = asyncio.Queue(maxsize=100)
    probe = instrument(queue, "emails", workers=10)

From then on the queue counts what goes through it at almost no cost: a get
pays one attribute increment and ``task_done`` another, and neither makes an
extra function call (the counting is folded into the queue's own ``_get`` and
``task_done``). Everything else is derived on the monitor's tick: busy =
started - done, enqueued = started + items waiting. Idle time is measured only
when a worker really blocks on an empty queue (``get()``'s slow path), the
only time a blocking worker is idle. Queue waits and processing times are
timed for a few items per tick (``timed_per_tick``), not for all of them.

What it needs from your code: workers call ``task_done()`` after each item (as
``queue.join()`` already requires); that is when an item counts as processed.
Count failures with ``probe.mark_failed()`` and downstream calls with
``probe.attempted()`` / ``probe.rate_limited()``, from the event loop's thread.

How it works: the queue's class is swapped for a subclass of its own class
(``asyncio.Queue``, ``PriorityQueue``, ``LifoQueue`` or your subclass), so
``isinstance`` checks and every existing reference keep working.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

from .._monitor import Monitor, default_monitor
from .._probe import Probe

DEFAULT_TIMED_PER_TICK = 16
_MAX_TIMING = 256


_classes: dict[type, type] = {}


def _instrumented_class(base: type[asyncio.Queue[Any]]) -> type:
    """A subclass of ``base`` with counting folded into ``_get`` and ``task_done``.

    For the standard classes the storage step is written out in place (one
    frame per call, as in the original); for a user subclass its own
    ``_put``/``_get``/``task_done`` are called, which costs one extra frame.
    """
    cached = _classes.get(base)
    if cached is not None:
        return cached
    base_put, base_get, base_task_done, base_get_async = base._put, base._get, base.task_done, base.get
    fifo = base is asyncio.Queue or not issubclass(base, asyncio.PriorityQueue | asyncio.LifoQueue)
    inline = base in (asyncio.Queue, asyncio.LifoQueue, asyncio.PriorityQueue)

    class Instrumented(base):  # type: ignore[valid-type,misc]
        _qhealth_fifo = fifo

        if base is asyncio.Queue:

            def _put(self, item: Any) -> None:
                self._queue.append(item)
                if self._qh_arm:
                    _time_enqueue(self)

            def _get(self) -> Any:
                self._qh_started += 1
                if self._qh_arm:
                    _time_start(self)
                return self._queue.popleft()

        else:

            def _put(self, item: Any) -> None:
                base_put(self, item)
                if self._qh_arm:
                    _time_enqueue(self)

            def _get(self) -> Any:
                self._qh_started += 1
                if self._qh_arm:
                    _time_start(self)
                return base_get(self)

        if base_task_done is asyncio.Queue.task_done:

            def task_done(self) -> None:
                # asyncio.Queue.task_done, written out (unchanged from 3.4 to 3.13).
                if self._unfinished_tasks <= 0:
                    raise ValueError("task_done() called too many times")
                self._unfinished_tasks -= 1
                if self._unfinished_tasks == 0:
                    self._finished.set()
                self._qh_done += 1
                if self._qh_timing:
                    _time_end(self)

        else:

            def task_done(self) -> None:
                base_task_done(self)
                self._qh_done += 1
                if self._qh_timing:
                    _time_end(self)

        async def get(self) -> Any:
            # An item is waiting: the worker never goes idle. (Standard classes
            # keep their items in _queue; a subclass may store them elsewhere.)
            if (self._queue if inline else not self.empty()):
                return self.get_nowait()
            probe: Probe = self._qh_probe
            if self._qh_waiters is not None:
                _note_worker(self)
            probe.idle_begin()
            try:
                return await base_get_async(self)
            finally:
                probe.idle_end()

    Instrumented.__name__ = Instrumented.__qualname__ = f"Instrumented{base.__name__}"
    _classes[base] = Instrumented
    return Instrumented


# -- timing a few items per tick (off the hot path) -----------------------------


def _time_enqueue(q: Any) -> None:
    if q._qhealth_fifo and len(q._qh_enqueue_times) < _MAX_TIMING:
        # In a FIFO queue the item put now is the (started + qsize)-th ever.
        q._qh_enqueue_times.append((q._qh_started + q.qsize(), time.monotonic()))


def _time_start(q: Any) -> None:
    q._qh_arm -= 1
    now = time.monotonic()
    task = asyncio.current_task()
    if task is not None and len(q._qh_timing) < _MAX_TIMING:
        q._qh_timing[task] = now
    times: list[tuple[int, float]] = q._qh_enqueue_times
    while times and times[0][0] < q._qh_started:
        times.pop(0)
    if times and times[0][0] == q._qh_started:
        q._qh_probe.observe_wait(now - times.pop(0)[1])


def _time_end(q: Any) -> None:
    task = asyncio.current_task()
    t0 = q._qh_timing.pop(task, None) if task is not None else None
    if t0 is not None:
        q._qh_probe.observe_duration(time.monotonic() - t0)


def _note_worker(q: Any) -> None:
    """Count the tasks consuming the queue, when the user did not say how many:
    a task is registered the first time it has to wait."""
    task = asyncio.current_task()
    if task is None or task in q._qh_waiters:
        return
    q._qh_waiters.add(task)
    probe: Probe = q._qh_probe
    probe.worker_started()
    task.add_done_callback(lambda _t: probe.worker_stopped())


def instrumented_queue(
    name: str,
    maxsize: int = 0,
    *,
    kind: type[asyncio.Queue[Any]] = asyncio.Queue,
    monitor: Monitor | None = None,
    workers: int | None = None,
    timed_per_tick: int = DEFAULT_TIMED_PER_TICK,
) -> asyncio.Queue[Any]:
    """A new instrumented queue, watched as ``name``: the fastest way in.

    Replace ``asyncio.Queue(maxsize=100)`` with
    ``instrumented_queue("emails", maxsize=100)``. ``kind`` is the queue class
    (``asyncio.Queue``, ``PriorityQueue``, ``LifoQueue`` or a subclass). The
    result is an instance of a subclass of ``kind``. Get its probe with
    ``probe_of(queue)``.
    """
    queue: asyncio.Queue[Any] = _instrumented_class(kind)(maxsize)
    _attach(queue, name, monitor, workers, timed_per_tick)
    return queue


def instrument(
    queue: asyncio.Queue[Any],
    name: str,
    *,
    monitor: Monitor | None = None,
    workers: int | None = None,
    timed_per_tick: int = DEFAULT_TIMED_PER_TICK,
) -> Probe:
    """Instrument an existing ``queue`` in place and watch it as ``name``;
    returns its probe.

    ``workers`` is the number of tasks consuming the queue. Without it, qhealth
    counts the tasks it sees waiting on the queue (a worker that never had to
    wait is not counted until it does). ``monitor`` defaults to
    :func:`qhealth.default_monitor`. ``timed_per_tick`` items per tick get their
    queue wait and processing time measured. Instrumenting a queue twice is an
    error.

    Cost: changing the class of an object that already exists makes CPython
    3.11+ give up its attribute-access shortcuts for that object, so every
    queue operation gets slower (about 0.4 µs per item here, see
    docs/benchmarks.md): nothing next to an item that does real work, but
    :func:`instrumented_queue` avoids it when you can create the queue.
    """
    if not isinstance(queue, asyncio.Queue):
        raise TypeError(f"instrument() expects an asyncio.Queue, got {type(queue).__name__}")
    if hasattr(queue, "_qh_probe"):
        raise ValueError(f"this queue is already instrumented (as {probe_of(queue).queue!r})")
    probe = _attach(queue, name, monitor, workers, timed_per_tick)
    queue.__class__ = _instrumented_class(type(queue))
    return probe


def probe_of(queue: asyncio.Queue[Any]) -> Probe:
    """The probe of an instrumented queue (ValueError if it is not instrumented)."""
    probe = getattr(queue, "_qh_probe", None)
    if not isinstance(probe, Probe):
        raise ValueError("this queue is not instrumented by qhealth")
    return probe


def _attach(
    queue: asyncio.Queue[Any],
    name: str,
    monitor: Monitor | None,
    workers: int | None,
    timed_per_tick: int,
) -> Probe:
    if timed_per_tick < 0:
        raise ValueError(f"timed_per_tick must not be negative, got {timed_per_tick!r}")
    monitor = monitor or default_monitor()
    q: Any = queue
    q._qh_started = 0
    q._qh_done = 0
    q._qh_arm = 0
    q._qh_timing = {}
    q._qh_enqueue_times = []
    q._qh_waiters = weakref.WeakSet() if workers is None else None

    def before_tick() -> None:
        # Runs on the ticker: copy the queue's counters into its probe and arm
        # timing for the next few items.
        started, done, waiting = q._qh_started, q._qh_done, queue.qsize()
        probe.processed_total = done
        probe.busy = max(started - done, 0)
        probe.enqueued_total = started + waiting
        q._qh_arm = timed_per_tick
        del q._qh_enqueue_times[:-_MAX_TIMING]

    maxsize = queue.maxsize
    probe = monitor.watch(
        name,
        depth=queue.qsize,
        capacity=maxsize if maxsize > 0 else None,
        workers=workers,
        timed=False,
        before_tick=before_tick,
    )
    q._qh_probe = probe
    return probe
