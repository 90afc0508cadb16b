"""RQ: a worker class, or one call on a worker you build.

From the command line::

    rq worker --worker-class qhealth.integrations.rq.Worker emails

which also serves the worker's metrics (``/metrics``, and the status page at
``/``) on ``127.0.0.1:9808``, or wherever ``QHEALTH_RQ_LISTEN`` says
(``HOST:PORT``; ``off`` for none: give each worker of a host its own port, or
watch them all from one ``qhealth watch --kind rq``). A port that cannot be
bound is logged, and the worker runs on. Or in code, exporting as you choose::

    worker = instrument(rq.Worker(["emails"], connection=redis))
    worker.work()

Each queue the worker serves is watched under its RQ name. The depth is the
length of RQ's queue key (read on the monitor's tick, over a Redis connection
of its own). A job counts as started when the worker hands it to its work
horse, and as ended when the horse is gone: success when RQ marked the job
finished, failure otherwise (a failed, retried or killed job). Jobs are
counted in the worker process, not in the horse, so a horse that hangs or
is stopped shows as a busy worker that finishes nothing, which the classifier
calls ``stalled``.

A job that raised a "rate limited" exception (:func:`qhealth.ratelimit.is_rate_limited`)
is found by an exception handler that runs in the horse and leaves a mark in
the job's ``meta``, which the worker reads after the job: one Redis round trip
per failed job, none per successful one. Each job also counts as one
downstream call unless ``count_calls=False``.

Enqueued jobs are counted by the producers' processes, not here, so arrivals
are reported unknown. One monitor per worker process; with several worker
processes, export each (Prometheus sums them by queue) or run ``qhealth watch
--kind rq`` beside them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any, TypeVar

try:
    import rq
    from rq.job import JobStatus
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("qhealth.integrations.rq requires the rq package: pip install 'qhealth[rq]'") from exc

from .._monitor import Monitor, default_monitor
from .._probe import Probe
from .._ratelimit import is_rate_limited

W = TypeVar("W", bound=rq.worker.BaseWorker)

#: Where ``Worker`` and ``SimpleWorker`` serve ``/metrics``: ``HOST:PORT``, or ``off``.
LISTEN_ENV = "QHEALTH_RQ_LISTEN"
DEFAULT_LISTEN = "127.0.0.1:9808"
log = logging.getLogger("qhealth")
_serving: list[Any] = []
_serving_lock = threading.Lock()

#: Key of the mark the horse leaves in ``job.meta`` for a rate-limited job.
RATE_LIMITED_META = "qhealth.rate_limited"
_MARK = "_qhealth_instrumented"


def _mark_rate_limited(job: Any, exc_type: Any, exc_value: BaseException | None, tb: Any) -> None:
    """RQ exception handler (runs in the work horse): remember a 429 on the job."""
    try:
        if exc_value is not None and is_rate_limited(exc_value):
            job.meta[RATE_LIMITED_META] = True
            job.save_meta()
    except Exception:  # never break RQ's own failure handling
        pass


def _depth_source(worker: Any, key: str) -> Any:
    """LLEN of a queue key over a connection pool of the monitor's own.

    The worker forks a horse per job; a pool shared with the ticker thread
    could be copied mid-use into the horse. A separate client keeps the two
    apart.
    """
    shared = worker.connection.connection_pool
    pool = type(shared)(connection_class=shared.connection_class, **shared.connection_kwargs)
    client = type(worker.connection)(connection_pool=pool)

    def depth() -> int:
        return int(client.llen(key))

    return depth


def _wait_s(job: Any) -> float | None:
    enqueued = getattr(job, "enqueued_at", None)
    if not isinstance(enqueued, datetime):
        return None
    now = datetime.now(enqueued.tzinfo or UTC)
    if enqueued.tzinfo is None:  # RQ stores naive UTC times
        now = now.replace(tzinfo=None)
    return max(0.0, (now - enqueued).total_seconds())


def instrument(worker: W, *, monitor: Monitor | None = None, count_calls: bool = True) -> W:
    """Instrument an RQ worker (``Worker``, ``SimpleWorker`` or a subclass)
    and return it. Call it before ``work()``; a second call does nothing."""
    if getattr(worker, _MARK, False):
        return worker
    if not isinstance(worker, rq.worker.BaseWorker):
        raise TypeError(f"instrument() takes an RQ worker, got {type(worker).__name__}")
    mon = monitor or default_monitor()
    probes: dict[str, Probe] = {}
    for queue in worker.queues:
        probe = mon.watch(queue.name, depth=_depth_source(worker, queue.key), counts_enqueued=False)
        probe.worker_started()
        probes[queue.name] = probe

    handlers = getattr(worker, "_exc_handlers", None)
    if isinstance(handlers, list):
        handlers.insert(0, _mark_rate_limited)  # first, so no handler can stop the chain before it
    else:  # pragma: no cover - a future RQ without the list
        worker.push_exc_handler(_mark_rate_limited)  # type: ignore[no-untyped-call]

    execute_job = worker.execute_job
    clock = time.monotonic

    def instrumented_execute_job(job: Any, queue: Any) -> Any:
        probe = probes.get(queue.name)
        if probe is None:  # a queue added after instrument()
            probe = probes[queue.name] = mon.watch(
                queue.name, depth=_depth_source(worker, queue.key), counts_enqueued=False
            )
        probe = probe.local()
        wait = _wait_s(job)
        if wait is not None:
            probe.observe_wait(wait)
        t0 = clock()
        probe.started()
        try:
            return execute_job(job, queue)
        finally:
            probe.observe_duration(clock() - t0)
            _job_ended(probe, job, count_calls)

    worker.execute_job = instrumented_execute_job  # type: ignore[method-assign]

    teardown = worker.teardown

    def instrumented_teardown() -> None:
        try:
            teardown()  # type: ignore[no-untyped-call]
        finally:
            for probe in probes.values():
                probe.local().worker_stopped()

    worker.teardown = instrumented_teardown  # type: ignore[method-assign]
    setattr(worker, _MARK, True)
    return worker


def _job_ended(probe: Probe, job: Any, count_calls: bool) -> None:
    try:
        status = job.get_status(refresh=True)
    except Exception:  # the job's key is gone: a finished job with result_ttl=0
        status = JobStatus.FINISHED
    if count_calls:
        probe.attempted()
    if status == JobStatus.FINISHED:
        probe.succeeded()
        return
    probe.failed()
    if count_calls:
        try:
            limited = bool(job.get_meta(refresh=True).get(RATE_LIMITED_META))
        except Exception:
            limited = False
        if limited:
            probe.rate_limited()


def serve_metrics(monitor: Monitor) -> Any:
    """Serve ``monitor`` on ``/metrics`` where ``QHEALTH_RQ_LISTEN`` says (default
    127.0.0.1:9808), once per process; None when turned off or not possible
    (logged: the worker runs on without it)."""
    listen = os.environ.get(LISTEN_ENV, DEFAULT_LISTEN).strip()
    if listen.lower() in ("", "off", "none", "no", "false"):
        return None
    with _serving_lock:
        if _serving:
            return _serving[0]
        try:
            from .. import prometheus

            server = prometheus.serve(monitor, listen=listen)
        except (ImportError, OSError, ValueError) as exc:
            log.warning(
                "qhealth: cannot serve the RQ worker's metrics on %s (%s); set %s to a free HOST:PORT, "
                "or to off",
                listen,
                exc,
                LISTEN_ENV,
            )
            return None
        _serving.append(server)
    log.info("qhealth: serving the RQ worker's metrics on http://%s/metrics", listen)
    return server


class Worker(rq.Worker):
    """``rq.Worker``, instrumented on the default monitor and served on
    ``/metrics`` (``--worker-class``; see :func:`serve_metrics`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instrument(self)
        serve_metrics(default_monitor())


class SimpleWorker(rq.SimpleWorker):
    """``rq.SimpleWorker`` (no fork), instrumented and served like :class:`Worker`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instrument(self)
        serve_metrics(default_monitor())
