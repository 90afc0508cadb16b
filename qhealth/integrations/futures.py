"""``concurrent.futures``: instrument a ThreadPoolExecutor or ProcessPoolExecutor in one line.

::

    pool = instrument(ThreadPoolExecutor(max_workers=8), "thumbnails")

``instrument`` returns the same executor, with its ``submit`` (and so ``map``)
and ``shutdown`` wrapped. Items waiting are what was submitted and has not
started; workers are ``max_workers``.

Thread pools are measured exactly: the function runs wrapped in the worker
thread, which counts its start and end on its own probe shard, with the queue
wait and the processing time of every item.

Process pools run the function in another process, where no probe can reach
without shared memory, so they are measured from the parent: an item counts
as started when a worker is free for it (``min(in flight, max_workers)`` items
are busy, which is what the executor's feeder does: an idle worker takes the
next call at once) and as ended when its future resolves. Processing times are
not observed for process pools. The futures' callbacks run on the executor's
management thread; the counts are kept under one lock, which costs nothing
next to pickling an item to another process.

An item cancelled before it started counts as processed with an error: it left
the queue without being done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TypeVar

from .._monitor import Monitor, default_monitor
from .._probe import Probe
from ._common import item_ended

E = TypeVar("E", bound=Executor)

_MARK = "_qhealth_probe"


def instrument(
    executor: E,
    queue: str,
    *,
    monitor: Monitor | None = None,
    count_calls: bool = True,
) -> E:
    """Instrument ``executor`` (a ThreadPoolExecutor or ProcessPoolExecutor,
    or a subclass) as queue ``queue``, and return it. Instrumenting the same
    executor twice does nothing the second time.

    ``count_calls``: each item is one downstream call, and an item that
    raised a "rate limited" exception one rate-limited call (see
    :func:`qhealth.ratelimit.is_rate_limited`); turn it off when the functions count
    their own calls on ``probe.local()``.
    """
    if getattr(executor, _MARK, None) is not None:
        return executor
    if not isinstance(executor, ThreadPoolExecutor | ProcessPoolExecutor):
        raise TypeError(
            f"instrument() takes a ThreadPoolExecutor or ProcessPoolExecutor, got {type(executor).__name__}"
        )
    workers = getattr(executor, "_max_workers", None)
    if not isinstance(workers, int) or workers <= 0:
        raise TypeError(f"cannot tell the number of workers of {type(executor).__name__}")
    probe = (monitor or default_monitor()).watch(queue, workers=workers)
    if isinstance(executor, ThreadPoolExecutor):
        _wrap_thread_pool(executor, probe, count_calls)
    else:
        _wrap_process_pool(executor, probe, workers, count_calls)
    _wrap_shutdown(executor, probe, workers)
    setattr(executor, _MARK, probe)
    return executor


def probe_of(executor: Executor) -> Probe:
    """The probe an instrumented executor reports to (for ``attempted()`` etc.)."""
    probe = getattr(executor, _MARK, None)
    if probe is None:
        raise ValueError("this executor is not instrumented: call instrument(executor, queue) first")
    assert isinstance(probe, Probe)
    return probe


def _count_cancelled(probe: Probe) -> Callable[[Future[Any]], None]:
    def on_done(future: Future[Any]) -> None:
        if future.cancelled():
            local = probe.local()
            local.processed_total += 1
            local.failed_total += 1

    return on_done


def _wrap_thread_pool(executor: ThreadPoolExecutor, probe: Probe, count_calls: bool) -> None:
    submit = executor.submit
    clock = time.monotonic

    def run(fn: Callable[..., Any], submitted: float, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        local = probe.local()
        t0 = clock()
        local.observe_wait(t0 - submitted)
        local.started()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            local.observe_duration(clock() - t0)
            item_ended(local, exc, count_calls=count_calls)
            raise
        local.observe_duration(clock() - t0)
        item_ended(local, None, count_calls=count_calls)
        return result

    on_done = _count_cancelled(probe)

    def instrumented_submit(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = submit(run, fn, clock(), args, kwargs)
        probe.local().enqueued()
        future.add_done_callback(on_done)
        return future

    executor.submit = instrumented_submit  # type: ignore[method-assign]


def _wrap_process_pool(executor: ProcessPoolExecutor, probe: Probe, workers: int, count_calls: bool) -> None:
    submit = executor.submit
    lock = threading.Lock()
    in_flight = 0

    def on_done(future: Future[Any]) -> None:
        nonlocal in_flight
        with lock:
            before = in_flight
            in_flight -= 1
            if future.cancelled():
                if before <= workers:  # it was counted busy while pending
                    probe.failed()
                else:
                    probe.processed_total += 1
                    probe.failed_total += 1
                return
            item_ended(probe, future.exception(), count_calls=count_calls)
            if before > workers:  # the freed worker takes the next item at once
                probe.started()

    def instrumented_submit(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        nonlocal in_flight
        future = submit(fn, *args, **kwargs)
        with lock:
            probe.enqueued()
            in_flight += 1
            if in_flight <= workers:
                probe.started()
        future.add_done_callback(on_done)
        return future

    executor.submit = instrumented_submit  # type: ignore[method-assign]


def _wrap_shutdown(executor: Executor, probe: Probe, workers: int) -> None:
    shutdown = executor.shutdown
    done = False

    def instrumented_shutdown(wait: bool = True, *, cancel_futures: bool = False) -> None:
        nonlocal done
        shutdown(wait=wait, cancel_futures=cancel_futures)
        if not done:
            done = True
            local = probe.local()
            for _ in range(workers):
                local.worker_stopped()

    executor.shutdown = instrumented_shutdown  # type: ignore[method-assign]
