"""Any worker loop: a context manager and a decorator around the work on one item.

For pools no adapter knows (a hand-written consumer, a Kafka loop, a cron
batch)::

    probe = monitor.watch("emails", workers=4)

    while True:
        job = source.take()
        with tracked(probe):
            send(job)

or decorate the function that handles one item (sync or async)::

    @tracked(probe)
    async def send(job): ...

Inside, the worker is busy; when the block ends the item counts as processed,
or failed if it raised (the exception propagates unchanged), and its
processing time is observed. By default each item is also one downstream call
and an exception the shared 429 detector recognises one rate-limited call;
pass ``count_calls=False`` when your code counts its own calls with
``probe.attempted()`` / ``probe.rate_limited()``. Polling loops report each
poll with ``probe.polled(hit)``.

Each entry uses the probe of the calling thread (:meth:`~qhealth.Probe.local`),
so one tracker can be shared by the threads of a pool.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast, overload

from .._probe import Probe
from ._common import item_ended

P = ParamSpec("P")
R = TypeVar("R")


class tracked:  # lower case: used like a function, `with tracked(probe):`
    """Track the processing of one item on ``probe``: a context manager (make
    one per ``with`` block, as ``with tracked(probe):`` does), or a decorator
    for sync and async functions (reusable, thread- and task-safe)."""

    __slots__ = ("_count_calls", "_local", "_probe", "_t0")

    def __init__(self, probe: Probe, *, count_calls: bool = True) -> None:
        if not isinstance(probe, Probe):
            raise TypeError(f"tracked() needs a qhealth Probe, got {type(probe).__name__}")
        self._probe = probe
        self._count_calls = count_calls
        self._local = probe
        self._t0 = 0.0

    def __enter__(self) -> Probe:
        local = self._local = self._probe.local()
        self._t0 = time.monotonic()
        local.started()
        return local

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        local = self._local
        local.observe_duration(time.monotonic() - self._t0)
        item_ended(local, exc, count_calls=self._count_calls)

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        probe, count_calls = self._probe, self._count_calls
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                local = probe.local()
                t0 = time.monotonic()
                local.started()
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    item_ended(local, exc, count_calls=count_calls)
                    raise
                finally:
                    local.observe_duration(time.monotonic() - t0)
                item_ended(local, None, count_calls=count_calls)
                return result

            return run_async

        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> Any:
            local = probe.local()
            t0 = time.monotonic()
            local.started()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                item_ended(local, exc, count_calls=count_calls)
                raise
            finally:
                local.observe_duration(time.monotonic() - t0)
            item_ended(local, None, count_calls=count_calls)
            return result

        return cast(Callable[P, Any], run)
