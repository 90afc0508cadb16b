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

Tasks are published by other processes, so a worker reports arrivals unknown.

In the producers (web processes, schedulers, workers that send tasks):

* :func:`count_published` counts the tasks each process publishes, per
  queue, on Celery's publish signals: its monitor exports them as
  ``qhealth_items_enqueued_total`` (with the queue's depth read from the
  broker, and nothing else: workers, items processed and calls are the
  workers' to report). Prometheus sums the counters of every process by
  queue, so the rules in ``alerts/`` see the arrivals of the whole fleet.
* :func:`stamp_published` adds the time each task message is published to
  its headers, from which ``qhealth watch --kind celery`` on a Redis broker
  reads the oldest waiting message's age (Celery's messages carry no such
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
from .._source import Reading
from ._common import require

#: At most this many queues are watched per process: a routing key nobody
#: declared must not grow label cardinality without bound.
MAX_QUEUES = 64
_POOLS_WITH_CHILD_PROCESSES = ("prefork",)


class _Failed(Exception):
    """Stands for a failure whose exception no signal handed over."""


def _celery_app(app: Any, who: str) -> Any:
    """The celery module, once ``app`` is known to be a Celery app (TypeError otherwise)."""
    celery = require("celery", extra="celery", who=f"qhealth.integrations.celery.{who}")
    if not isinstance(app, celery.Celery):
        raise TypeError(f"{who}() takes a Celery app, got {type(app).__name__}")
    return celery


class _BrokerDepth:
    """A queue's depth as the broker shows it, and how to let go of the connection."""

    def __init__(self, read: Callable[[], int], close: Callable[[], None]) -> None:
        self.read = read
        self.close = close


def _broker_depth(app: Any, queue: str) -> _BrokerDepth | None:
    """The length of the queue's lists on Redis, a passive ``queue.declare`` on
    RabbitMQ; None on a transport qhealth cannot read. Connects on first read."""
    from ..brokers.celery_queue import AmqpDepth, RedisDepth

    connection = app.connection_for_read()
    url = connection.as_uri(include_password=True)
    driver = getattr(connection.transport, "driver_type", "")
    if driver == "redis":
        from ..brokers._redis import connect

        source: RedisDepth | AmqpDepth = RedisDepth(connect(url), queue)
    elif driver == "amqp":
        source = AmqpDepth(url, queue)
    else:
        return None
    return _BrokerDepth(source, source.close)


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
        depth = _broker_depth(self.app, queue)
        if depth is None:
            return None  # a transport we cannot read: depth from the probe's own counts
        self._closers.append(depth.close)
        return depth.read

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
    celery = _celery_app(app, "instrument")
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
    celery = _celery_app(app, "stamp_published")
    from ..brokers.celery_queue import PUBLISHED_HEADER

    def stamp(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        if isinstance(headers, dict):
            headers[PUBLISHED_HEADER] = time.time()

    # Celery's publish signal is process-wide: one receiver, whatever the number of apps.
    celery.signals.before_task_publish.connect(stamp, weak=False, dispatch_uid="qhealth-stamp-published")


# -- arrivals, counted where tasks are published ----------------------------------------------

#: Why a producer's reading leaves the other fields unknown.
_WORKERS_REPORT = "a producer sees the tasks it publishes, not the workers: their own integration reports it"


class PublishedArrivals:
    """A queue as one producing process sees it (a :class:`~qhealth.Source`):
    the tasks it published there, and the depth the broker shows. Everything
    else is the workers' to report, so it stays unknown here rather than 0:
    no condition is judged on fields this process cannot see."""

    def __init__(self, queue: str, depth: _BrokerDepth) -> None:
        self.queue = queue
        self._depth = depth
        self._lock = threading.Lock()  # publishing threads add; a publish costs far more than the lock
        self._published = 0

    def published(self) -> None:
        with self._lock:
            self._published += 1

    @property
    def total(self) -> int:
        """Tasks published to the queue by this process so far."""
        return self._published

    @property
    def unknown(self) -> dict[str, str]:
        fields = ("workers", "busy", "processed_total", "failed_total", "attempts_total")
        return {name: _WORKERS_REPORT for name in (*fields, "rate_limited_total", "idle_s_total")}

    def read(self) -> Reading:
        return Reading(depth=self._depth.read(), enqueued_total=self._published)

    def close(self) -> None:
        self._depth.close()


class PublishCounter:
    """The publish-signal receivers of one app (see :func:`count_published`).

    ``before_task_publish`` names the queue a message goes to (Celery hands it
    the queue it declares; otherwise the routing key, through the app's queue
    table); ``after_task_publish``, sent only once the broker took the
    message, counts it. A queue is watched by this process's monitor the first
    time the process publishes to it (after a fork too: the child watches
    afresh, with a monitor thread of its own).
    """

    def __init__(
        self, app: Any, monitor: Monitor | None, on_process_start: Callable[[Monitor], None] | None
    ) -> None:
        self.app = app
        self._monitor = monitor
        self._on_process_start = on_process_start
        self._lock = threading.Lock()
        self._log = ThrottledLog(interval_s=60.0)
        self._pending = threading.local()
        self._pid: int | None = None
        self._sources: dict[str, PublishedArrivals | None] = {}
        """Queues seen by this process; None: not counted here (and said why, once)."""
        self._uid = f"qhealth-count-{id(self)}"

    @property
    def monitor(self) -> Monitor:
        if self._monitor is None:
            self._monitor = default_monitor()
        return self._monitor

    def close(self) -> None:
        """Stop counting: disconnect from Celery's signals, stop watching the
        queues counted here and let go of their broker connections."""
        from celery import signals

        signals.before_task_publish.disconnect(dispatch_uid=f"{self._uid}-before")
        signals.after_task_publish.disconnect(dispatch_uid=f"{self._uid}-after")
        if _counters.get(id(self.app)) is self:
            del _counters[id(self.app)]
        with self._lock:
            sources, self._sources = self._sources, {}
        for queue, source in sources.items():
            if source is not None:
                self.monitor.unwatch(queue)
                source.close()

    def count(self, queue: str) -> int | None:
        """Tasks this process published to ``queue`` (None: not counted here)."""
        source = self._sources.get(queue)
        return source.total if source is not None else None

    def _queue_of(self, declare: Any, routing_key: Any) -> str:
        for declared in declare or ():
            name = getattr(declared, "name", None)
            if name:
                return str(name)
        key = str(routing_key or "")
        for name, queue in self.app.amqp.queues.items():
            if key and str(getattr(queue, "routing_key", "") or "") == key:
                return str(name)
        return key

    def on_before_publish(
        self, sender: Any = None, declare: Any = None, routing_key: Any = None, headers: Any = None, **kw: Any
    ) -> None:
        try:
            self._pending.message = (headers, self._queue_of(declare, routing_key))
        except Exception:
            self._pending.message = None
            self._log.exception("before", "qhealth: cannot tell which queue a Celery task goes to")

    def on_after_publish(self, sender: Any = None, headers: Any = None, **kw: Any) -> None:
        pending = getattr(self._pending, "message", None)
        self._pending.message = None
        if pending is None or pending[0] is not headers:
            return  # published before count_published() was called, or by another path
        try:
            source = self._source_for(pending[1])
        except Exception:
            self._log.exception("after", "qhealth: counting a published Celery task failed")
            return
        if source is not None:
            source.published()

    def _source_for(self, queue: str) -> PublishedArrivals | None:
        if self._pid == os.getpid() and queue in self._sources:
            return self._sources[queue]
        with self._lock:
            if self._pid != os.getpid():  # first publish here, or in a child after a fork
                self._start_process()
            if queue not in self._sources:
                self._sources[queue] = self._watch(queue)
            return self._sources[queue]

    def _start_process(self) -> None:
        """Forget what a parent process counted (its monitor thread did not survive the fork)."""
        inherited = [q for q, source in self._sources.items() if source is not None]
        self._sources = {}
        self._pid = os.getpid()
        monitor = self.monitor
        for queue in inherited:
            monitor.unwatch(queue)
        if self._on_process_start is not None:
            self._on_process_start(monitor)
        monitor.start()

    def _watch(self, queue: str) -> PublishedArrivals | None:
        monitor = self.monitor
        if not queue:
            return None
        if len(self._sources) >= MAX_QUEUES:
            self._log.warning(
                "max-queues",
                "qhealth: tasks published to more than %d queues: %r not counted",
                MAX_QUEUES,
                queue,
            )
            return None
        if queue in monitor.queues:
            self._log.warning(
                f"watched:{queue}",
                "qhealth: queue %r is watched in this process as a worker's queue: the tasks this process "
                "publishes to it are not counted (count arrivals in the producers)",
                queue,
            )
            return None
        depth = _broker_depth(self.app, queue)
        if depth is None:
            self._log.warning(
                f"transport:{queue}",
                "qhealth: cannot read queue %r on this broker's transport (Redis and RabbitMQ only): "
                "the tasks published to it are not counted",
                queue,
            )
            return None
        source = PublishedArrivals(queue, depth)
        monitor.watch_source(queue, source)
        return source


_counters: dict[int, PublishCounter] = {}


def count_published(
    app: Any,
    *,
    monitor: Monitor | None = None,
    on_process_start: Callable[[Monitor], None] | None = None,
) -> PublishCounter:
    """Count the tasks this process publishes, per queue, as arrivals
    (``qhealth_items_enqueued_total``). Call it once where tasks are sent:
    the web processes, schedulers (celery beat) and other producers.

    ``monitor``: the monitor that watches the queues published to (default:
    the process-wide one). It reads each queue's depth from the broker (Redis
    or RabbitMQ) and reports nothing else; export it as any monitor.
    ``on_process_start(monitor)`` runs in each process the first time it
    publishes, before its monitor starts: attach an exporter there (for
    gunicorn's worker processes, ``qhealth.prometheus.MultiProcessExporter``).
    Counting an app twice returns the first counter; ``close()`` on it stops counting."""
    celery = _celery_app(app, "count_published")
    existing = _counters.get(id(app))
    if existing is not None and existing.app is app:
        return existing
    counter = PublishCounter(app, monitor, on_process_start)
    # Celery's publish signals are process-wide: one pair of receivers per app.
    uid = counter._uid
    celery.signals.before_task_publish.connect(
        counter.on_before_publish, weak=False, dispatch_uid=f"{uid}-before"
    )
    celery.signals.after_task_publish.connect(
        counter.on_after_publish, weak=False, dispatch_uid=f"{uid}-after"
    )
    _counters[id(app)] = counter
    return counter
