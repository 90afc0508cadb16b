"""arq: one call on the worker settings.

::

    class WorkerSettings:
        functions = [send_email]
        redis_settings = RedisSettings()

    qhealth.integrations.arq.instrument(WorkerSettings)

``instrument`` chains its own ``on_startup``, ``on_shutdown``,
``on_job_start`` and ``on_job_end`` hooks after yours, and wraps each job
function so that the exception that ended a job reaches ``on_job_end`` (arq
hands that hook the job context only). The queue is watched under arq's queue
name (``arq:queue`` unless the settings name another), with ``max_jobs``
workers: the jobs one arq worker runs at once.

The depth is read on the monitor's tick from arq's sorted set: jobs due now
that no worker holds, and the oldest one's age, at a cost bounded whatever the
queue's length (see :mod:`qhealth.sidecar.arq_queue`), over a synchronous Redis
connection of the monitor's own; a Sentinel set-up (a list of hosts) has no
depth. A job counts from ``on_job_start`` to
``on_job_end``: a failure when the job raised, was cancelled or timed out, or
asked for a retry (``Retry``: the run ended and the job goes back to the
queue); a 429 when the exception says so (the shared detector). Jobs arq
refuses before starting them (expired, unknown function, too many tries) do
not reach these hooks and are not counted. Arrivals are counted by the
producers, not here: reported unknown.

When the worker stops, ``on_shutdown`` writes its final counts to arq's
health-check key, which arq itself deletes at that moment: without it, the jobs
run since arq's last health check (``health_check_interval``, an hour by
default) would never reach ``qhealth watch --kind arq``. Set
``health_check_interval`` to a few seconds for a watch that keeps up while the
worker runs.

The ``arq`` extra cannot share an environment with Celery's Redis transport
(arq 0.28 needs redis-py < 6, kombu 5.7 >= 6.4): install ``qhealth[arq]`` in
the arq workers' own environment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .._log import ThrottledLog
from .._monitor import Monitor, default_monitor
from .._probe import Probe
from ._common import item_ended, require

DEFAULT_QUEUE = "arq:queue"
DEFAULT_MAX_JOBS = 10
#: arq's default ``health_check_interval``: an hour, far too long for ``qhealth watch``.
DEFAULT_HEALTH_CHECK_S = 3600
HEALTH_CHECK_SUFFIX = ":health-check"
#: arq's exceptions that ask for a job to run again.
_RETRIES = ("Retry", "RetryJob")
_HEALTH_COUNT = re.compile(r"\b(j_complete|j_failed|j_retried)=(\d+)")
_ERROR = "qhealth_error"
_T0 = "qhealth_t0"
_MARK = "_qhealth_instrumented"

Hook = Callable[[dict[str, Any]], Awaitable[None]]


def _get(settings: Any, name: str, default: Any = None) -> Any:
    if isinstance(settings, dict):
        return settings.get(name, default)
    return getattr(settings, name, default)


def _set(settings: Any, name: str, value: Any) -> None:
    if isinstance(settings, dict):
        settings[name] = value
    else:
        setattr(settings, name, value)


def _chain(first: Hook | None, then: Callable[[dict[str, Any]], Awaitable[None] | None]) -> Hook:
    async def hook(ctx: dict[str, Any]) -> None:
        if first is not None:
            await first(ctx)
        result = then(ctx)
        if inspect.isawaitable(result):
            await result

    return hook


def _wrap(coroutine: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(coroutine)
    async def job(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await coroutine(ctx, *args, **kwargs)
        except BaseException as exc:
            ctx[_ERROR] = exc
            raise

    return job


def _wrapped_function(function: Any) -> Any:
    arq_worker = require("arq.worker", extra="arq", who="qhealth.integrations.arq")
    if isinstance(function, str):  # a dotted path: arq imports it, keeping the path as its name
        function = arq_worker.func(function, name=function)
    if isinstance(function, arq_worker.Function):
        return dataclasses.replace(function, coroutine=_wrap(function.coroutine))
    if not inspect.iscoroutinefunction(function):
        raise TypeError(f"an arq job function must be a coroutine function, got {function!r}")
    return _wrap(function)


class _QueueReads:
    """Depth and oldest age of an arq queue, from one read per tick (the
    sidecar's bounded walk of the due jobs, see :mod:`qhealth.sidecar.arq_queue`)."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self._oldest: float | None = None

    def depth(self) -> int | None:
        reading = self._source.read()
        self._oldest = reading.oldest_age_s if reading is not None else None
        return reading.depth if reading is not None else None

    def oldest_age(self) -> float | None:
        return self._oldest  # the monitor asks right after depth(), on the same tick


def _queue_reads(settings: Any, queue: str) -> _QueueReads | None:
    from ..brokers.arq_queue import ArqSource

    redis_settings = _get(settings, "redis_settings")
    host = getattr(redis_settings, "host", "localhost")
    if not isinstance(host, str):
        return None  # Sentinel: no single server to ask
    redis = require("redis", extra="arq", who="qhealth.integrations.arq")
    client = redis.Redis(
        host=host,
        port=getattr(redis_settings, "port", 6379),
        db=getattr(redis_settings, "database", 0),
        username=getattr(redis_settings, "username", None),
        password=getattr(redis_settings, "password", None),
        ssl=getattr(redis_settings, "ssl", False),
        unix_socket_path=getattr(redis_settings, "unix_socket_path", None),
        socket_timeout=5,
        socket_connect_timeout=5,
    )
    return _QueueReads(ArqSource(client, queue))


class FinalHealth:
    """Writes a worker's final counts to arq's health-check key when it stops.

    arq rewrites the key every ``health_check_interval`` seconds and deletes it
    when the worker closes, so the jobs of the last interval never reach
    ``qhealth watch --kind arq``, which reads it. arq hands the hooks no worker,
    so this keeps the last record arq wrote (it watches the worker's own Redis
    client, ``ctx['redis']``, for writes to the key) and adds the jobs the
    hooks saw end since; the sum is what arq would have written next. The
    record is written in arq's own format, with arq's expiry (at least a
    minute, so that a sidecar reading every few seconds sees it).
    """

    FIELDS = ("j_complete", "j_failed", "j_retried")

    def __init__(self, key: str, interval_s: float) -> None:
        self._key = key
        self._ttl_ms = int(max(interval_s + 1, 60.0) * 1000)
        self.ended = dict.fromkeys(self.FIELDS, 0)
        """Jobs the hooks saw end, by arq's kind of end."""
        self._written = dict.fromkeys(self.FIELDS, 0)
        self._ended_then = dict.fromkeys(self.FIELDS, 0)

    def job_ended(self, exc: BaseException | None, retries: bool) -> None:
        """Count one job's end the way arq does: complete, retried (``Retry``, or
        cancelled with retries on), or failed."""
        if exc is None:
            self.ended["j_complete"] += 1
        elif retries and (
            type(exc).__name__ in ("Retry", "RetryJob") or isinstance(exc, asyncio.CancelledError)
        ):
            self.ended["j_retried"] += 1
        else:
            self.ended["j_failed"] += 1

    def watch_writes(self, redis: Any) -> None:
        """Remember each record arq writes to the key through ``redis`` (``ctx['redis']``)."""
        psetex = getattr(redis, "psetex", None)
        if psetex is None:
            return

        def remembering_psetex(name: Any, time_ms: Any, value: Any) -> Any:
            if name == self._key:
                self._remember(value)
            return psetex(name, time_ms, value)

        redis.psetex = remembering_psetex

    def _remember(self, value: Any) -> None:
        text = value.decode() if isinstance(value, bytes) else str(value)
        counts = {k: int(v) for k, v in _HEALTH_COUNT.findall(text)}
        if set(self.FIELDS) <= counts.keys():
            self._written = {k: counts[k] for k in self.FIELDS}
            self._ended_then = dict(self.ended)

    def record(self) -> str:
        """The final record: arq's last counts plus the ends seen since."""
        counts = {k: self._written[k] + self.ended[k] - self._ended_then[k] for k in self.FIELDS}
        fields = " ".join(f"{k}={v}" for k, v in counts.items())
        return f"{datetime.now():%b-%d %H:%M:%S} {fields} j_ongoing=0 (final)"

    async def write(self, redis: Any) -> None:
        await redis.psetex(self._key, self._ttl_ms, self.record().encode())


class ArqInstrumentation:
    """The hooks of one worker settings object (see :func:`instrument`)."""

    def __init__(self, settings: Any, monitor: Monitor | None, count_calls: bool) -> None:
        self._settings = settings
        self._monitor = monitor
        self._count_calls = count_calls
        self.queue = str(_get(settings, "queue_name") or DEFAULT_QUEUE)
        self.workers = int(_get(settings, "max_jobs") or DEFAULT_MAX_JOBS)
        self._retries = bool(_get(settings, "retry_jobs", True))
        key = _get(settings, "health_check_key") or self.queue + HEALTH_CHECK_SUFFIX
        interval = _get(settings, "health_check_interval", DEFAULT_HEALTH_CHECK_S)
        seconds = interval.total_seconds() if isinstance(interval, timedelta) else float(interval)
        self.final = FinalHealth(str(key), seconds)
        self._probe: Probe | None = None
        self._log = ThrottledLog(interval_s=60.0)

    def on_startup(self, ctx: dict[str, Any]) -> None:
        monitor = self._monitor or default_monitor()
        reads = _queue_reads(self._settings, self.queue)
        probe = monitor.watch(
            self.queue,
            depth=reads.depth if reads is not None else None,
            oldest_age=reads.oldest_age if reads is not None else None,
            counts_enqueued=False,
        )
        for _ in range(self.workers):
            probe.worker_started()
        self._probe = probe
        if ctx.get("redis") is not None:
            self.final.watch_writes(ctx["redis"])
        monitor.start()

    async def on_shutdown(self, ctx: dict[str, Any]) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            local = probe.local()
            for _ in range(self.workers):
                local.worker_stopped()
        redis = ctx.get("redis")
        if redis is not None:
            try:
                await self.final.write(redis)
            except Exception:  # the worker's shutdown goes on whatever happens here
                self._log.exception("final-health", "qhealth: writing arq's final health check failed")

    def on_job_start(self, ctx: dict[str, Any]) -> None:
        probe = self._probe
        if probe is None:
            return
        probe = probe.local()
        enqueued = ctx.get("enqueue_time")
        if isinstance(enqueued, datetime):  # arq gives an aware UTC time
            enqueued = enqueued if enqueued.tzinfo else enqueued.replace(tzinfo=UTC)
            probe.observe_wait(max(0.0, (datetime.now(UTC) - enqueued).total_seconds()))
        ctx[_T0] = time.monotonic()
        ctx.pop(_ERROR, None)
        probe.started()

    def on_job_end(self, ctx: dict[str, Any]) -> None:
        probe = self._probe
        t0 = ctx.pop(_T0, None)
        if probe is None or t0 is None:
            return
        probe = probe.local()
        probe.observe_duration(time.monotonic() - t0)
        error = ctx.pop(_ERROR, None)
        self.final.job_ended(error, self._retries)
        item_ended(probe, error, count_calls=self._count_calls)


def instrument(settings: Any, *, monitor: Monitor | None = None, count_calls: bool = True) -> Any:
    """Instrument arq worker settings (a class or a dict, changed in place and
    returned). ``count_calls``: each job run is one downstream call, and a run
    ended by a "rate limited" exception one rate-limited call. Instrumenting
    the same settings twice does nothing the second time."""
    require("arq", extra="arq", who="qhealth.integrations.arq")
    if _get(settings, _MARK, False):
        return settings
    functions = _get(settings, "functions")
    if not functions:
        raise ValueError("arq worker settings need a non-empty 'functions' list")
    inst = ArqInstrumentation(settings, monitor, count_calls)
    _set(settings, "functions", [_wrapped_function(f) for f in functions])
    for hook, handler in (
        ("on_startup", inst.on_startup),
        ("on_shutdown", inst.on_shutdown),
        ("on_job_start", inst.on_job_start),
        ("on_job_end", inst.on_job_end),
    ):
        _set(settings, hook, _chain(_get(settings, hook), handler))
    _set(settings, _MARK, True)
    _set(settings, "qhealth", inst)
    return settings
