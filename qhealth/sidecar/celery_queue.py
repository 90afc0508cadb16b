"""A Celery queue, from its broker, and from Celery's task events when workers send them.

Depth comes from the broker itself:

* Redis: the queue's list, plus the lists kombu keeps for its priority steps
  (``QUEUE\\x06\\x16{3,6,9}``): the sum of their lengths;
* RabbitMQ: a passive ``queue.declare``, whose answer counts the messages
  ready for delivery (not those delivered and unacknowledged).

With ``events=True`` the source also consumes Celery's event stream (workers
started with ``-E``, or ``worker_send_task_events = True``) in a background
thread, and counts processed (succeeded + failed + retried), failed (failed +
retried) and busy (started and not yet ended) from it. Those counts are known
once the first task event arrives: until then no event says the workers send
them at all, and a zero would be a guess. Celery's events carry no queue name,
so these counts cover every task of the broker's workers: use them when the
workers consume this one queue. Without events, only the depth is known.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from typing import Any

from .._log import ThrottledLog
from .._redact import redact_url, scrub
from .._source import Reading
from ..integrations._common import require

KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (3, 6, 9)
#: Tasks remembered as started and not yet ended; beyond this the oldest are
#: forgotten (a task whose end event was lost must not grow memory forever).
MAX_RUNNING = 100_000

UNKNOWN_ALWAYS = {
    "workers": "Celery's broker and events do not tell the workers' pool sizes",
    "enqueued_total": "the broker keeps no count of published tasks",
    "attempts_total": "downstream calls happen inside the tasks",
    "rate_limited_total": "task events carry the exception as text, not its HTTP status",
    "idle_s_total": "Celery keeps no idle time",
}
UNKNOWN_WITHOUT_EVENTS = {
    "busy": "start the watch with --events and the workers with -E to know it",
    "processed_total": "start the watch with --events and the workers with -E to know it",
    "failed_total": "start the watch with --events and the workers with -E to know it",
}

log = logging.getLogger("qhealth.watch")


class RedisDepth:
    """Messages waiting in a Celery queue on a Redis broker."""

    def __init__(self, client: Any, queue: str) -> None:
        self._client = client
        self._keys = [queue, *(f"{queue}{KOMBU_PRIORITY_SEP}{p}" for p in KOMBU_PRIORITY_STEPS)]

    def __call__(self) -> int:
        with self._client.pipeline(transaction=False) as pipe:
            for key in self._keys:
                pipe.llen(key)
            return sum(int(n) for n in pipe.execute())

    def close(self) -> None:
        self._client.close()


class AmqpDepth:
    """Messages ready in a RabbitMQ queue (passive declare: never creates it)."""

    def __init__(self, url: str, queue: str) -> None:
        kombu = require("kombu", extra="celery", who="qhealth watch on RabbitMQ")
        self._url = url
        self._queue = queue
        self._connection = kombu.Connection(url, connect_timeout=5)
        self._channel: Any = None
        self.consumers: int | None = None
        """Consumers of the queue at the last read (one per worker process that consumes)."""

    def __call__(self) -> int:
        try:
            if self._channel is None:
                self._connection.ensure_connection(max_retries=1)
                self._channel = self._connection.channel()
            _, messages, consumers = self._channel.queue_declare(queue=self._queue, passive=True)
        except Exception as exc:
            self._reset()
            raise RuntimeError(scrub(f"cannot read queue {self._queue!r}: {exc}", self._url)) from None
        self.consumers = int(consumers)
        return int(messages)

    def _reset(self) -> None:
        channel, self._channel = self._channel, None
        try:
            if channel is not None:
                channel.close()
        except Exception:  # a channel the broker closed (404) cannot be closed again
            pass
        with contextlib.suppress(Exception):
            self._connection.close()

    def close(self) -> None:
        self._reset()


class TaskEvents:
    """Counts Celery task events from a background thread."""

    def __init__(self, url: str) -> None:
        celery = require("celery", extra="celery", who="qhealth watch --events")
        self._url = url
        self._app = celery.Celery("qhealth-watch", broker=url, set_as_current=False)
        self._lock = threading.Lock()
        self._running: OrderedDict[str, None] = OrderedDict()
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.seen = False
        """Whether any task event has arrived (the workers do send them)."""
        self._receiver: Any = None
        self._stop = threading.Event()
        self._log = ThrottledLog(interval_s=60.0)
        self._thread = threading.Thread(target=self._run, name="qhealth-celery-events", daemon=True)
        self.ready = threading.Event()
        """Set once the event queue is consuming (tests wait on it)."""

    def start(self) -> TaskEvents:
        self._thread.start()
        return self

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                with self._app.connection_for_read() as connection:
                    receiver = self._app.events.Receiver(connection, handlers={"*": self._on_event})
                    self._receiver = receiver
                    consume_ready = receiver.on_consume_ready

                    def on_ready(*args: Any, _original: Any = consume_ready, **kwargs: Any) -> None:
                        _original(*args, **kwargs)
                        self.ready.set()

                    receiver.on_consume_ready = on_ready
                    receiver.capture(limit=None, timeout=None, wakeup=False)
                    delay = 1.0
            except Exception as exc:
                self._log.warning(
                    "celery-events",
                    "qhealth watch: Celery event stream from %s failed (%s); retrying",
                    redact_url(self._url),
                    scrub(str(exc), self._url),
                )
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = str(event.get("type", ""))
        if not kind.startswith("task-"):
            return
        uuid = str(event.get("uuid", ""))
        with self._lock:
            if kind == "task-started":
                self.seen = True
                self._running[uuid] = None
                if len(self._running) > MAX_RUNNING:
                    self._running.popitem(last=False)
            elif kind in ("task-succeeded", "task-failed", "task-retried"):
                self.seen = True
                self._running.pop(uuid, None)
                if kind == "task-succeeded":
                    self.succeeded += 1
                elif kind == "task-failed":
                    self.failed += 1
                else:
                    self.retried += 1
            elif kind in ("task-revoked", "task-rejected"):
                self._running.pop(uuid, None)

    def counts(self) -> tuple[int, int, int] | None:
        """(processed, failed, busy), or None before the first task event."""
        with self._lock:
            if not self.seen:
                return None
            failed = self.failed + self.retried
            return self.succeeded + failed, failed, len(self._running)

    def close(self) -> None:
        self._stop.set()
        receiver = self._receiver
        if receiver is not None:
            receiver.should_stop = True
        self._thread.join(timeout=5)


class CelerySource:
    """Depth from the broker; busy and processed from task events when enabled."""

    def __init__(self, url: str, queue: str, *, events: bool = False, redis_client: Any = None) -> None:
        self.queue = queue
        scheme = url.split(":", 1)[0].lower()
        self._depth: RedisDepth | AmqpDepth
        if scheme in ("redis", "rediss", "unix"):
            if redis_client is None:
                from ._redis import connect

                redis_client = connect(url)
            self._depth = RedisDepth(redis_client, queue)
        elif scheme in ("amqp", "amqps", "pyamqp"):
            self._depth = AmqpDepth(url, queue)
        else:
            raise ValueError(
                f"a Celery broker URL must start with redis://, rediss://, amqp:// or amqps://, "
                f"got {redact_url(url)!r}"
            )
        self.events = TaskEvents(url).start() if events else None

    def read(self) -> Reading:
        depth = self._depth()
        counts = self.events.counts() if self.events is not None else None
        if counts is None:
            return Reading(depth=depth)
        processed, failed, busy = counts
        return Reading(depth=depth, busy=busy, processed_total=processed, failed_total=failed)

    @property
    def consumers(self) -> int | None:
        return self._depth.consumers if isinstance(self._depth, AmqpDepth) else None

    @property
    def unknown(self) -> dict[str, str]:
        unknown = dict(UNKNOWN_ALWAYS)
        if self.events is None:
            unknown.update(UNKNOWN_WITHOUT_EVENTS)
        elif not self.events.seen:
            reason = "no task event has arrived yet (are the workers started with -E?)"
            unknown.update(dict.fromkeys(UNKNOWN_WITHOUT_EVENTS, reason))
        return unknown

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
        self._depth.close()
