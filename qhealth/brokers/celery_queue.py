"""A Celery queue, from its broker, and from Celery's task events when workers send them.

Depth counts every message of the queue that no task has started on:

* Redis: the queue's list, plus the lists kombu keeps for its priority steps
  (``QUEUE\\x06\\x16{3,6,9}``; a list nobody has pushed to, or that emptied,
  is a missing key: length 0), plus the queue's messages that workers have
  prefetched and not acknowledged, which kombu keeps in its ``unacked`` hash
  (attributed by routing key, which is the queue's name unless you route by
  other keys). With ``task_acks_late`` a running task stays there too: with
  ``events=True`` the tasks seen started are left out, so the depth is what
  really waits; without events it includes them. Reading ``unacked`` is bounded:
  ``HRANDFIELD`` of at most :data:`MAX_UNACKED` delivery tags per tick (shared
  by every queue of the watch) and each new message fetched once; beyond that
  many unacknowledged messages, they are not counted and a warning says so;
* RabbitMQ: a passive ``queue.declare``, whose answer counts the messages
  ready for delivery (not those delivered and unacknowledged: RabbitMQ shows
  those only through its management API).

Celery's messages carry no time they were sent (protocol 2 headers have none).
Producers that call :func:`qhealth.integrations.celery.stamp_published` add one
(header :data:`PUBLISHED_HEADER`): on Redis the oldest waiting message's age is
then read from the tail of each non-empty list (kombu pushes at the head and
pops at the tail) and from the prefetched messages, at most four messages per
queue per tick. A queue whose messages carry no stamp is looked at again only
every :data:`RECHECK_READS` reads, and its oldest age stays unknown.

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
import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from .._log import ThrottledLog
from .._optional import require
from .._redact import redact_url, scrub
from .._source import Reading
from ._rounds import QueueReader, RedisQueueSource, Round

#: Redis URL schemes, a Redis Cluster's (``redis+cluster://``) among them: its keys are read the same way.
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (3, 6, 9)
#: Unacknowledged messages tracked per tick; beyond this many, they are not counted.
MAX_UNACKED = 10_000
UNACKED_KEY = "unacked"
#: Unix time a message was published, in its headers (set by stamp_published in the producers).
PUBLISHED_HEADER = "qhealth-published-at"
#: Reads between two looks at the messages of a queue whose messages carry no stamp.
RECHECK_READS = 60
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
NOT_STAMPED = (
    "Celery's messages carry no time they were sent: call "
    "qhealth.integrations.celery.stamp_published(app) in the producers (Redis brokers only)"
)
UNKNOWN_WITHOUT_EVENTS = {
    "busy": "start the watch with --events and the workers with -E to know it",
    "processed_total": "start the watch with --events and the workers with -E to know it",
    "failed_total": "start the watch with --events and the workers with -E to know it",
}

log = logging.getLogger("qhealth.watch")


def published_at(raw: Any) -> float | None:
    """The publishing time a producer stamped on a kombu message (JSON), if any."""
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # an unacked entry: [message, exchange, routing key]
            message = message[0]
        value = (message.get("headers") or {}).get(PUBLISHED_HEADER)
        return float(value) if value is not None else None
    except (ValueError, TypeError, AttributeError, IndexError):
        return None


class RedisDepth:
    """The length of a Celery queue's lists on a Redis broker, alone: what a
    worker's own integration reads (it cannot tell its running tasks from the
    prefetched ones of other workers in ``unacked``; the sidecar can, with events)."""

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


class Unacked:
    """The messages workers hold unacknowledged on a Redis broker, by queue.

    kombu keeps them in one hash for the whole broker (delivery tag -> message,
    exchange, routing key). One tracker is shared by every queue of a watch:
    per tick it asks for at most :data:`MAX_UNACKED` delivery tags (with the
    hash's length, to know whether that is all of them), and fetches each
    message once, when its tag is new, to learn its routing key and task id.
    """

    def __init__(self, key: str = UNACKED_KEY, limit: int = MAX_UNACKED) -> None:
        self._key = key
        self._limit = limit
        self._by_tag: dict[str, tuple[str, str, float | None]] = {}
        self._planned: Round | None = None
        self._finished: Round | None = None
        self._handles: tuple[int, int] = (0, 0)
        self._new: tuple[list[str], int] | None = None
        self.complete = True
        """Whether the latest read saw every unacknowledged message."""
        self.total = 0
        self._log = ThrottledLog(interval_s=60.0)

    def plan(self, first: Round) -> None:
        if self._planned is first:
            return
        self._planned = first
        self._handles = (first.call("HLEN", self._key), first.call("HRANDFIELD", self._key, self._limit))

    def plan_more(self, first: Round, second: Round) -> None:
        if self._finished is first:
            return
        self._finished = first
        self.total = int(first.get(self._handles[0]))
        tags = [str(t) for t in first.get(self._handles[1]) or []]
        self.complete = self.total <= len(tags)
        if not self.complete:
            self._log.warning(
                "unacked",
                "qhealth watch: %d messages are unacknowledged on the broker, more than the %d tracked; "
                "Celery queue depths leave them out",
                self.total,
                self._limit,
            )
        self._by_tag = {t: self._by_tag[t] for t in tags if t in self._by_tag}
        new = [t for t in tags if t not in self._by_tag]
        self._new = (new, second.call("HMGET", self._key, *new)) if new else None

    def learn(self, second: Round) -> None:
        """Record the routing key and task id of the messages fetched in ``second``."""
        if self._new is None:
            return
        tags, handle = self._new
        self._new = None
        for tag, raw in zip(tags, second.get(handle), strict=True):
            if raw is None:
                continue  # acknowledged between the two rounds
            try:
                message, _exchange, routing_key = json.loads(raw)
                task_id = str((message.get("headers") or {}).get("id") or "")
            except (ValueError, TypeError, AttributeError):
                message, routing_key, task_id = None, "", ""
            self._by_tag[tag] = (str(routing_key), task_id, published_at(raw))

    def waiting(self, queue: str, running: frozenset[str] = frozenset()) -> tuple[int, float | None]:
        """Messages of ``queue`` held unacknowledged whose task has not been seen
        started, and the earliest publishing time stamped on them."""
        count, earliest = 0, None
        for key, task, published in self._by_tag.values():
            if key == queue and task not in running:
                count += 1
                if published is not None and (earliest is None or published < earliest):
                    earliest = published
        return count, earliest


class RedisCeleryQueue(RedisQueueSource):
    """A Celery queue on a Redis broker: its lists, and its unacknowledged messages."""

    def __init__(
        self,
        client: Any,
        queue: str,
        *,
        unacked: Unacked | None = None,
        events: TaskEvents | None = None,
    ) -> None:
        super().__init__(client)
        self.queue = self.name = queue
        self.keys = [queue, *(f"{queue}{KOMBU_PRIORITY_SEP}{p}" for p in KOMBU_PRIORITY_STEPS)]
        self.unacked = unacked or Unacked()
        self.events = events
        self._lengths: list[int] = []
        self._tails: list[int] = []
        self.stamped: bool | None = None
        """Whether the queue's messages carry a publishing time (None: not seen yet)."""
        self._reads_since_look = 0

    def plan(self, first: Round) -> None:
        self._lengths = [first.call("LLEN", key) for key in self.keys]
        self.unacked.plan(first)

    def plan_more(self, first: Round, second: Round) -> None:
        self.unacked.plan_more(first, second)
        self._tails = []
        if self.stamped is False and self._reads_since_look < RECHECK_READS:
            self._reads_since_look += 1
            return
        for key, handle in zip(self.keys, self._lengths, strict=True):
            if int(first.get(handle)):
                self._tails.append(second.call("LINDEX", key, -1))  # the oldest: kombu pops the tail

    def _earliest_listed(self, second: Round) -> float | None:
        seen = False
        earliest: float | None = None
        for handle in self._tails:
            raw = second.get(handle)
            if raw is None:
                continue  # popped between the two rounds
            seen = True
            published = published_at(raw)
            if published is not None and (earliest is None or published < earliest):
                earliest = published
        if seen:
            self.stamped = earliest is not None
            self._reads_since_look = 0
        return earliest

    def reading(self, first: Round, second: Round) -> Reading:
        self.unacked.learn(second)
        now = time.time()
        listed = sum(int(first.get(h)) for h in self._lengths)
        running = self.events.running() if self.events is not None else frozenset()
        held, held_earliest = self.unacked.waiting(self.queue, running)
        stamps = [t for t in (self._earliest_listed(second), held_earliest) if t is not None]
        if held_earliest is not None:
            self.stamped = True
        oldest = max(0.0, now - min(stamps)) if stamps else None
        return reading_of(listed + held, self.events, oldest)

    @property
    def unknown(self) -> dict[str, str]:
        unknown = unknown_of(self.events)
        if not self.stamped:
            unknown["oldest_age_s"] = NOT_STAMPED
        return unknown


def reading_of(depth: int, events: TaskEvents | None, oldest_age_s: float | None = None) -> Reading:
    """A Celery queue's reading: its depth, and the event counts once known."""
    counts = events.counts() if events is not None else None
    if counts is None:
        return Reading(depth=depth, oldest_age_s=oldest_age_s)
    processed, failed, busy = counts
    return Reading(
        depth=depth, busy=busy, processed_total=processed, failed_total=failed, oldest_age_s=oldest_age_s
    )


def unknown_of(events: TaskEvents | None) -> dict[str, str]:
    unknown = dict(UNKNOWN_ALWAYS)
    if events is None:
        unknown.update(UNKNOWN_WITHOUT_EVENTS)
    elif not events.seen:
        reason = "no task event has arrived yet (are the workers started with -E?)"
        unknown.update(dict.fromkeys(UNKNOWN_WITHOUT_EVENTS, reason))
    return unknown


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

    def running(self) -> frozenset[str]:
        """Ids of the tasks seen started and not yet ended."""
        with self._lock:
            return frozenset(self._running)

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


class CelerySource(QueueReader):
    """Depth from the broker; busy and processed from task events when enabled."""

    def __init__(self, url: str, queue: str, *, events: bool = False, redis_client: Any = None) -> None:
        self.queue = self.name = queue
        scheme = url.split(":", 1)[0].lower()
        if scheme not in (*REDIS_SCHEMES, "amqp", "amqps", "pyamqp"):
            raise ValueError(
                f"a Celery broker URL must start with redis://, rediss://, redis+cluster://, amqp:// or "
                f"amqps://, got {redact_url(url)!r}"
            )
        self.events = TaskEvents(url).start() if events else None
        self.redis: RedisCeleryQueue | None = None
        self._amqp: AmqpDepth | None = None
        if scheme in REDIS_SCHEMES:
            if redis_client is None:
                from ._redis import connect

                redis_client = connect(url)
            self.redis = RedisCeleryQueue(redis_client, queue, events=self.events)
        else:
            self._amqp = AmqpDepth(url, queue)

    def read(self) -> Reading | None:
        if self.redis is not None:
            return self.redis.read()
        assert self._amqp is not None
        return reading_of(self._amqp(), self.events)

    @property
    def consumers(self) -> int | None:
        return self._amqp.consumers if self._amqp is not None else None

    @property
    def unknown(self) -> dict[str, str]:
        if self.redis is not None:
            return self.redis.unknown
        unknown = unknown_of(self.events)
        unknown["oldest_age_s"] = "RabbitMQ shows no message without delivering it"
        return unknown

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
        if self.redis is not None:
            self.redis.close()
        if self._amqp is not None:
            self._amqp.close()
