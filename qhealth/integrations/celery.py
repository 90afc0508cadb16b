"""Celery: one call on the app, in the module the worker imports.

::

    app = Celery("mail", broker="redis://...")
    qhealth.integrations.celery.instrument(app)

In the worker, each queue it consumes is watched under its Celery name. The
adapter listens to Celery's signals:

* ``worker_init`` / ``worker_ready`` / ``worker_shutdown``: the pool's
  workers come and go (threads, solo, eventlet and gevent pools count
  ``concurrency`` workers in the main process);
* ``worker_process_init`` / ``worker_process_shutdown``: with the prefork
  pool, each child process is one worker with a monitor of its own, started
  after the fork (threads do not survive it). Pass ``on_process_start`` to
  attach an exporter there, e.g. prometheus' multiprocess mode
  (``lambda m: qhealth.prometheus.MultiProcessExporter(m)``), which pools the
  children's counters for one scrape;
* ``task_prerun`` / ``task_postrun``: a task started and ended, with its
  processing time;
* ``task_failure`` / ``task_retry``: the exception that ended it, checked by
  the shared 429 detector (a retry's ``exc`` too). A retry counts as a failed
  run: the task goes back to the broker as a new message.

The depth is read from the broker on the monitor's tick: the length of the
queue's list (and its priority lists) on Redis, a passive ``queue.declare``
on RabbitMQ. It counts messages on the broker only: tasks a worker has
prefetched wait inside the worker and are not in it. Run workers with
``worker_prefetch_multiplier = 1`` and ``task_acks_late = True`` for a depth
that tells the whole backlog.

Tasks are published by other processes, so arrivals are reported unknown.

In the producers, :func:`stamp_published` adds the time each task message is
published to its headers, from which ``qhealth watch --kind celery`` on a Redis
broker reads the oldest waiting message's age (Celery's messages carry no such
time of their own).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .._log import ThrottledLog
from .._monitor import Monitor, default_monitor
from .._probe import Probe
from .._ratelimit import is_rate_limited
from ._common import require

#: At most this many queues are watched per process: a routing key nobody
#: declared must not grow label cardinality without bound.
MAX_QUEUES = 64
_POOLS_WITH_CHILD_PROCESSES = ("prefork",)


class _Failed(Exception):
    """Stands for a failure whose exception no signal handed over."""


class CeleryInstrumentation:
    """The signal handlers of one app in one process (see :func:`instrument`)."""

    def __init__(
        self,
        app: Any,
        monitor: Monitor | None,
        count_calls: bool,
        on_process_start: Callable[[Monitor], None] | None,
    ) -> None:
        self.app = app
        self._monitor = monitor
        self._count_calls = count_calls
        self._on_process_start = on_process_start
        self._lock = threading.Lock()
        self._log = ThrottledLog(interval_s=60.0)
        self._main_pid: int | None = None
        self._prefork = False
        self._concurrency = 1
        self._ready_pid: int | None = None
        self._probes: dict[str, Probe] = {}
        self._routes: dict[str, str] = {}
        self._workers = 0
        self._closers: list[Callable[[], None]] = []

    @property
    def monitor(self) -> Monitor:
        if self._monitor is None:
            self._monitor = default_monitor()
        return self._monitor

    # -- set-up per process ------------------------------------------------------

    def _consumed(self) -> dict[str, Any]:
        queues = self.app.amqp.queues
        selected = getattr(queues, "consume_from", None)
        return dict(selected if selected else queues)

    def _depth_source(self, queue: str) -> Callable[[], int] | None:
        from ..sidecar.celery_queue import AmqpDepth, RedisDepth

        connection = self.app.connection_for_read()
        url = connection.as_uri(include_password=True)
        driver = getattr(connection.transport, "driver_type", "")
        if driver == "redis":
            from ..sidecar._redis import connect

            source: RedisDepth | AmqpDepth = RedisDepth(connect(url), queue)
        elif driver == "amqp":
            source = AmqpDepth(url, queue)
        else:
            return None  # a transport we cannot read: depth from the probe's own counts
        self._closers.append(source.close)
        return source

    def _setup_process(self, workers: int) -> None:
        """Watch the consumed queues in this process, with ``workers`` workers each."""
        with self._lock:
            if self._ready_pid == os.getpid():
                return
            self._ready_pid = os.getpid()
            self._probes, self._closers = {}, []
            self._workers = workers
            consumed = self._consumed()
            self._routes = {
                str(getattr(q, "routing_key", name) or name): name for name, q in consumed.items()
            }
            monitor = self.monitor
            for name in list(consumed)[:MAX_QUEUES]:
                self._watch(name)
        if self._on_process_start is not None:
            self._on_process_start(monitor)
        monitor.start()

    def _watch(self, queue: str) -> Probe:
        try:
            depth = self._depth_source(queue)
        except Exception:
            self._log.exception(f"depth:{queue}", "qhealth: cannot read the depth of Celery queue %r", queue)
            depth = None
        probe = self.monitor.watch(queue, depth=depth, counts_enqueued=False)
        for _ in range(self._workers):
            probe.worker_started()
        self._probes[queue] = probe
        return probe

    def _probe_for(self, request: Any) -> Probe | None:
        info = getattr(request, "delivery_info", None) or {}
        key = str(info.get("routing_key") or "")
        queue = self._routes.get(key, key)
        probe = self._probes.get(queue)
        if probe is None:
            with self._lock:
                probe = self._probes.get(queue)
                if probe is None and queue and len(self._probes) < MAX_QUEUES:
                    probe = self._watch(queue)
        return probe.local() if probe is not None else None

    # -- signal handlers -----------------------------------------------------------

    def on_worker_init(self, sender: Any = None, **kwargs: Any) -> None:
        configured = self.app.conf.worker_pool
        if getattr(sender, "app", None) is not self.app:
            return
        self._main_pid = os.getpid()
        pool = str(getattr(sender, "pool_cls", "") or configured or "prefork")
        self._prefork = any(name in pool.lower() for name in _POOLS_WITH_CHILD_PROCESSES)
        self._concurrency = int(getattr(sender, "concurrency", 1) or 1)

    def on_worker_ready(self, sender: Any = None, **kwargs: Any) -> None:
        if self._main_pid != os.getpid() or self._prefork:
            return
        pool = getattr(getattr(sender, "pool", None), "limit", None)
        solo = "solo" in type(getattr(sender, "pool", None)).__module__
        self._setup_process(1 if solo else int(pool or self._concurrency))

    def on_worker_process_init(self, **kwargs: Any) -> None:
        if self._main_pid is not None and os.getpid() != self._main_pid:
            self._setup_process(1)

    def on_shutdown(self, **kwargs: Any) -> None:
        if self._ready_pid != os.getpid():
            return
        for probe in self._probes.values():
            local = probe.local()
            for _ in range(self._workers):
                local.worker_stopped()
        for close in self._closers:
            try:
                close()
            except Exception:
                self._log.exception("close", "qhealth: closing a Celery depth source failed")

    def on_prerun(self, task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
        if task is None or getattr(task, "app", None) is not self.app:
            return
        if self._ready_pid != os.getpid():
            return  # not a worker process set up by us (e.g. task.apply() in a producer)
        request = task.request  # a thread-local stack look-up: once
        try:
            probe = self._probe_for(request)
        except Exception:
            self._log.exception("prerun", "qhealth: Celery task_prerun failed")
            return
        if probe is None:
            return
        probe.started()
        # The request is this run's own context (a retry re-runs the same task
        # id, possibly at once in another thread): keep the run's state on it.
        request.qhealth_run = _Run(probe, time.monotonic())

    def on_failure(self, sender: Any = None, exception: BaseException | None = None, **kwargs: Any) -> None:
        run = getattr(getattr(sender, "request", None), "qhealth_run", None)
        if isinstance(run, _Run) and exception is not None:
            run.error = exception

    def on_retry(self, request: Any = None, reason: Any = None, **kwargs: Any) -> None:
        run = getattr(request, "qhealth_run", None)
        if not isinstance(run, _Run):
            return
        cause = getattr(reason, "exc", None)
        exc = cause if isinstance(cause, BaseException) else reason
        run.error = exc if isinstance(exc, BaseException) else _Failed(str(reason))

    def on_postrun(self, task: Any = None, state: str | None = None, **kwargs: Any) -> None:
        request: Any = getattr(task, "request", None)
        run = getattr(request, "qhealth_run", None)
        if not isinstance(run, _Run):
            return
        request.qhealth_run = None
        probe = run.probe
        probe.observe_duration(time.monotonic() - run.t0)
        error = None if state == "SUCCESS" else run.error or _Failed(str(state))
        if self._count_calls:
            probe.attempted()
        if error is None:
            probe.succeeded()
            return
        probe.failed()
        if self._count_calls and is_rate_limited(error):
            probe.rate_limited()


class _Run:
    """One run of a task: its probe, start time and the exception that ended it."""

    __slots__ = ("error", "probe", "t0")

    def __init__(self, probe: Probe, t0: float) -> None:
        self.probe = probe
        self.t0 = t0
        self.error: BaseException | None = None


_instrumented: dict[int, CeleryInstrumentation] = {}


def instrument(
    app: Any,
    *,
    monitor: Monitor | None = None,
    count_calls: bool = True,
    on_process_start: Callable[[Monitor], None] | None = None,
) -> CeleryInstrumentation:
    """Instrument a Celery app's workers (call it where the worker imports the
    app). ``monitor``: the monitor of each worker process (default: the
    process-wide one). ``count_calls``: each task run is one downstream call,
    and a run ended by a "rate limited" exception one rate-limited call.
    ``on_process_start(monitor)`` runs in each process that executes tasks,
    before its monitor starts. Instrumenting an app twice returns the first
    instrumentation."""
    celery = require("celery", extra="celery", who="qhealth.integrations.celery")
    if not isinstance(app, celery.Celery):
        raise TypeError(f"instrument() takes a Celery app, got {type(app).__name__}")
    existing = _instrumented.get(id(app))
    if existing is not None and existing.app is app:
        return existing
    inst = CeleryInstrumentation(app, monitor, count_calls, on_process_start)
    signals = celery.signals
    uid = f"qhealth-{id(app)}"
    for signal, handler in (
        (signals.worker_init, inst.on_worker_init),
        (signals.worker_ready, inst.on_worker_ready),
        (signals.worker_process_init, inst.on_worker_process_init),
        (signals.worker_shutdown, inst.on_shutdown),
        (signals.worker_process_shutdown, inst.on_shutdown),
        (signals.task_prerun, inst.on_prerun),
        (signals.task_failure, inst.on_failure),
        (signals.task_retry, inst.on_retry),
        (signals.task_postrun, inst.on_postrun),
    ):
        signal.connect(handler, weak=False, dispatch_uid=f"{uid}-{handler.__name__}")
    _instrumented[id(app)] = inst
    return inst


def stamp_published(app: Any) -> None:
    """Stamp every task message this process publishes with the time it was
    published (header ``qhealth-published-at``, Unix seconds), so that
    ``qhealth watch --kind celery`` on a Redis broker can tell how long the
    oldest waiting message has waited. Call it once where tasks are sent (the
    producers: web processes, and workers that send tasks). A retried task is
    stamped again when it is republished. Costs one header per message."""
    celery = require("celery", extra="celery", who="qhealth.integrations.celery.stamp_published")
    if not isinstance(app, celery.Celery):
        raise TypeError(f"stamp_published() takes a Celery app, got {type(app).__name__}")
    from ..sidecar.celery_queue import PUBLISHED_HEADER

    def stamp(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        if isinstance(headers, dict):
            headers[PUBLISHED_HEADER] = time.time()

    # Celery's publish signal is process-wide: one receiver, whatever the number of apps.
    celery.signals.before_task_publish.connect(stamp, weak=False, dispatch_uid="qhealth-stamp-published")
