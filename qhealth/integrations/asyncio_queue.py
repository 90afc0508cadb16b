"""Instrument an existing ``asyncio.Queue`` with one line.

::

    queue = asyncio.Queue(maxsize=100)
    probe = instrument(queue, "emails", workers=10)

From then on the queue counts what goes through it at almost no cost: a get
pays one attribute increment, folded into the queue's own ``_get`` (no extra
function call). Everything else is derived on the monitor's tick from what the
queue keeps anyway: enqueued = started + items waiting; done = enqueued -
the queue's own count of unfinished items (what ``join()`` waits for); busy =
started - done. Queue waits and processing
times are timed for a few items per monitor interval (``timed_per_tick``),
not all; the event loop re-arms the timing itself, so the monitor's ticker
only ever reads the queue.

Idle time, two ways (``idle=``):

* ``"waits"`` (default): a worker is idle while it blocks in ``get()`` on an
  empty queue, and from an empty ``get_nowait()`` poll until it takes an item.
  Exact for workers that block and for pollers that call ``get_nowait()``, and
  free on the hot path: the clock is read only when a worker has nothing to do.
* ``"transitions"``: a worker is idle from its ``task_done()`` until its next
  get, whatever it does in between (checks ``empty()``, sleeps, polls another
  source). Exact for any worker loop; reads the clock twice per item (about
  0.1 µs). Needs ``workers``.

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


_classes: dict[tuple[type, str], type] = {}
IDLE_MODES = ("waits", "transitions")


def _instrumented_class(base: type[asyncio.Queue[Any]], idle: str = "waits") -> type:
    cached = _classes.get((base, idle))
    if cached is not None:
        return cached
    cls = _waits_class(base)
    if idle == "transitions":
        cls = _transitions_class(cls, base)
    _classes[(base, idle)] = cls
    return cls


def _waits_class(base: type[asyncio.Queue[Any]]) -> type:
    """A subclass of ``base`` with counting folded into ``_get`` and ``task_done``.

    For the standard classes the storage step is written out in place (one
    frame per call, as in the original); for a user subclass its own
    ``_put``/``_get``/``task_done`` are called, which costs one extra frame.
    """
    base_put, base_get, base_task_done = base._put, base._get, base.task_done
    base_get_async, base_get_nowait = base.get, base.get_nowait
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
                if self._qh_timing:
                    _time_end(self)

        else:

            def task_done(self) -> None:
                base_task_done(self)
                if self._qh_timing:
                    _time_end(self)

        def get_nowait(self) -> Any:
            # Only code that polls calls this directly (get() below does not):
            # an empty poll means the worker goes idle until it takes an item.
            if not (self._queue if inline else not self.empty()):
                _empty_poll(self)
            elif self._qh_idle:
                _end_poll_idle(self)
            return base_get_nowait(self)

        async def get(self) -> Any:
            # An item is waiting: the worker never goes idle. (Standard classes
            # keep their items in _queue; a subclass may store them elsewhere.)
            if self._queue if inline else not self.empty():
                return base_get_nowait(self)
            # Blocking: idle until the wait ends. The span is kept here, not in
            # the pollers' table, so that a blocking pool never pays for that
            # table on its hot path (a poller already idle keeps its own span).
            probe: Probe = self._qh_probe
            task = asyncio.current_task()
            own_span = task is None or task not in self._qh_idle
            if self._qh_waiters is not None and task is not None:
                _note_worker(self, task)
            if own_span:
                probe.idle_begin()
            try:
                return await base_get_async(self)
            finally:
                if own_span:
                    probe.idle_end()

    Instrumented.__name__ = Instrumented.__qualname__ = f"Instrumented{base.__name__}"
    return Instrumented


def _transitions_class(waits: type, base: type[asyncio.Queue[Any]]) -> type:
    """Idle from ``task_done`` to the next get, with the probe's sum trick:
    no per-worker state, one clock read per transition."""

    class Transitions(waits):  # type: ignore[misc]
        def _get(self) -> Any:
            self._qh_probe.idle_end()
            return super()._get()

        def task_done(self) -> None:
            super().task_done()
            self._qh_probe.idle_begin()

        # No wait or poll bookkeeping: the transitions already cover idle time.
        get_nowait = base.get_nowait
        get = base.get

    Transitions.__name__ = Transitions.__qualname__ = waits.__name__
    return Transitions


# -- timing a few items per tick (off the hot path) -----------------------------


def _time_enqueue(q: Any) -> None:
    if q._qhealth_fifo and len(q._qh_enqueue_times) < _MAX_TIMING:
        # In a FIFO queue the item put now is the (started + qsize)-th ever.
        q._qh_enqueue_times.append((q._qh_started + q.qsize(), time.monotonic()))


def _time_start(q: Any) -> None:
    q._qh_arm -= 1
    if q._qh_arm == 0:
        # The last timed item of this round: the event loop (the queue's one
        # writer) arms the next round an interval from now.
        asyncio.get_running_loop().call_later(q._qh_rearm[1], _rearm, q)
    now = time.monotonic()
    task = asyncio.current_task()
    if task is not None and len(q._qh_timing) < _MAX_TIMING:
        q._qh_timing[task] = now
    times: list[tuple[int, float]] = q._qh_enqueue_times
    while times and times[0][0] < q._qh_started:
        times.pop(0)
    if times and times[0][0] == q._qh_started:
        q._qh_probe.observe_wait(now - times.pop(0)[1])


def _rearm(q: Any) -> None:
    q._qh_arm = q._qh_rearm[0]
    del q._qh_enqueue_times[:-_MAX_TIMING]


def _time_end(q: Any) -> None:
    task = asyncio.current_task()
    t0 = q._qh_timing.pop(task, None) if task is not None else None
    if t0 is not None:
        q._qh_probe.observe_duration(time.monotonic() - t0)


def _empty_poll(q: Any) -> None:
    """A worker polled an empty queue: it is idle until it takes an item
    (a polling worker sleeps between polls where nobody can see it)."""
    q._qh_probe.polls_empty_total += 1
    task = asyncio.current_task()
    if task is None or task in q._qh_idle:
        return
    if q._qh_waiters is not None:
        _note_worker(q, task)
    q._qh_probe.idle_begin()
    q._qh_idle[task] = True
    if task not in q._qh_known:
        q._qh_known.add(task)
        task.add_done_callback(lambda t: _end_poll_idle(q, t))


def _end_poll_idle(q: Any, task: asyncio.Task[Any] | None = None) -> None:
    task = task or asyncio.current_task()
    if task is not None and q._qh_idle.pop(task, False):
        q._qh_probe.idle_end()


def _note_worker(q: Any, task: asyncio.Task[Any]) -> None:
    """Count the tasks consuming the queue, when the user did not say how many:
    a task is registered the first time it waits or polls in vain."""
    if task in q._qh_waiters:
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
    idle: str = "waits",
    timed_per_tick: int = DEFAULT_TIMED_PER_TICK,
) -> asyncio.Queue[Any]:
    """A new instrumented queue, watched as ``name``: the fastest way in.

    Replace ``asyncio.Queue(maxsize=100)`` with
    ``instrumented_queue("emails", maxsize=100)``. ``kind`` is the queue class
    (``asyncio.Queue``, ``PriorityQueue``, ``LifoQueue`` or a subclass). The
    result is an instance of a subclass of ``kind``. Get its probe with
    ``probe_of(queue)``.
    """
    _check_mode(idle, workers)
    queue: asyncio.Queue[Any] = _instrumented_class(kind, idle)(maxsize)
    _attach(queue, name, monitor, workers, idle, timed_per_tick)
    return queue


def instrument(
    queue: asyncio.Queue[Any],
    name: str,
    *,
    monitor: Monitor | None = None,
    workers: int | None = None,
    idle: str = "waits",
    timed_per_tick: int = DEFAULT_TIMED_PER_TICK,
) -> Probe:
    """Instrument an existing ``queue`` in place and watch it as ``name``;
    returns its probe.

    ``workers`` is the number of tasks consuming the queue. Without it, qhealth
    counts the tasks it sees waiting on the queue (a worker that never had to
    wait is not counted until it does). ``idle`` chooses how idle time is
    measured (see the module docstring). ``monitor`` defaults to
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
    _check_mode(idle, workers)
    probe = _attach(queue, name, monitor, workers, idle, timed_per_tick)
    queue.__class__ = _instrumented_class(type(queue), idle)
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
    idle: str,
    timed_per_tick: int,
) -> Probe:
    if timed_per_tick < 0:
        raise ValueError(f"timed_per_tick must not be negative, got {timed_per_tick!r}")
    monitor = monitor or default_monitor()
    q: Any = queue
    q._qh_started = 0
    q._qh_timing = {}
    q._qh_enqueue_times = []
    q._qh_waiters = weakref.WeakSet() if workers is None else None
    # Tasks idle since they polled in vain (a plain dict: its emptiness is
    # checked on every get, so blocking pools keep it empty); a task that ends
    # while idle is removed by a done callback, registered once per task.
    q._qh_idle = {}
    q._qh_known = weakref.WeakSet()

    # Items already taken but not yet done when instrumented: their task_done() is still to
    # come, and counts as processed then.
    in_flight = q._unfinished_tasks - queue.qsize()
    seen = [0, 0]  # the largest enqueued and done counts read so far

    def counts() -> dict[str, int]:
        # Read on the ticker: the queue's own counters, written only by the event loop. Read
        # in this order, a get or put that happens between two reads can make a count low
        # for a tick, never high: the largest value seen is the count (a counter that went
        # down would read as a restart).
        started = q._qh_started
        enqueued = seen[0] = max(seen[0], started + queue.qsize())
        done = seen[1] = max(seen[1], enqueued - q._unfinished_tasks + in_flight)
        return {"processed_total": done, "busy": max(started - done, 0), "enqueued_total": enqueued}

    maxsize = queue.maxsize
    probe = monitor.watch(
        name,
        depth=queue.qsize,
        capacity=maxsize if maxsize > 0 else None,
        workers=workers,
        timed=False,
        counts=counts,
    )
    q._qh_rearm = (timed_per_tick, monitor.interval)
    q._qh_arm = timed_per_tick
    q._qh_probe = probe
    if idle == "transitions":
        for _ in range(workers or 0):  # every worker starts idle
            probe.idle_begin()
    return probe


def _check_mode(idle: str, workers: int | None) -> None:
    if idle not in IDLE_MODES:
        raise ValueError(f"idle must be one of {IDLE_MODES}, got {idle!r}")
    if idle == "transitions" and workers is None:
        raise ValueError('idle="transitions" needs workers=N: every worker starts idle')
