"""The queues of one kind on one broker that a watch reads, together.

:class:`Sidecar` checks the arguments once (a clear ``ValueError`` naming the
problem), owns the broker connection, makes a reader per queue, finds queues by
pattern (:mod:`._discover`) and reads them all as one
:class:`~qhealth.sidecar._group.SourceGroup`: two pipelined round trips per tick
on Redis, whatever the number of queues.
"""

from __future__ import annotations

from typing import Any

from .._redact import redact_url
from ..brokers._redis import CLUSTER_SCHEMES
from ..brokers._rounds import QueueReader
from ._group import GroupSource, SourceGroup, one_by_one, redis_reads

KINDS: tuple[str, ...] = ("redis-list", "redis-stream", "rq", "arq", "celery")
REDIS_SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
#: The most queues one watch reads: a pattern matching more is cut here (sorted by name).
MAX_QUEUES = 10_000


def scheme_of(url: str) -> str:
    return url.split(":", 1)[0].lower()


def check_arguments(kind: str, url: str, *, group: str | None, events: bool) -> None:
    """Refuse a bad combination before anything connects, naming the problem."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if group is not None and kind != "redis-stream":
        raise ValueError("a consumer group applies to --kind redis-stream only")
    if kind == "redis-stream" and not group:
        raise ValueError("--kind redis-stream needs the consumer group (--group)")
    if events and kind != "celery":
        raise ValueError("task events apply to --kind celery only")
    scheme = scheme_of(url)
    if kind == "celery":
        if scheme not in REDIS_SCHEMES + AMQP_SCHEMES:
            raise ValueError(
                f"a Celery broker URL must start with redis://, rediss://, redis+cluster://, amqp:// or "
                f"amqps://, got {redact_url(url)!r}"
            )
    elif scheme not in REDIS_SCHEMES:
        raise ValueError(
            f"--kind {kind} needs a redis:// URL (redis+cluster:// for a Redis Cluster), "
            f"got {redact_url(url)!r}"
        )
    if scheme in CLUSTER_SCHEMES:
        _check_cluster(kind, events)


def _check_cluster(kind: str, events: bool) -> None:
    """Refuse, in one line, what cannot work on a Redis Cluster (docs/sidecar.md)."""
    if kind == "arq":
        # arq reads each queue with one Lua script over keys it is not given (the
        # in-progress key of every job it looks at, each in a slot of its own), which a
        # cluster refuses; and arq itself enqueues in a MULTI over keys of different slots.
        raise ValueError(
            "--kind arq cannot watch a Redis Cluster: arq does not run on one (it enqueues in a "
            "transaction across slots), and reading busy jobs needs a script over keys of many slots"
        )
    if events:
        raise ValueError(
            "--events cannot follow a Redis Cluster: Celery's Redis transport (kombu) has no cluster "
            "support, so there is no event stream to consume; watch the depth without --events"
        )


class Sidecar:
    """Queues of ``kind`` at ``url`` read together; nothing connects before the first read.

    ``client`` is a redis-py client to use instead of one made from ``url``
    (strings decoded); ``url`` then only names the broker in messages.

    A ``redis+cluster://`` URL (``rediss+cluster://`` with TLS) names any node
    of a Redis Cluster: the client then learns the cluster's slot map at once
    (a ``ConnectionError`` if no node answers), each tick sends one pipeline
    to each master, and patterns are looked for on every master.
    """

    def __init__(
        self, kind: str, url: str, *, group: str | None = None, events: bool = False, client: Any = None
    ) -> None:
        check_arguments(kind, url, group=group, events=events)
        self.kind = kind
        self.url = url
        self._stream_group = group
        self._events_wanted = events
        self.client: Any = None
        self.events: Any = None
        self._unacked: Any = None
        if scheme_of(url) in REDIS_SCHEMES:
            from ..brokers._redis import connect

            self.client = client if client is not None else connect(url)
            self.group = SourceGroup(url, redis_reads(self.client), close=self._close)
        else:
            self.group = SourceGroup(url, one_by_one, close=self._close)
        self._amqp: list[Any] = []

    def reader(self, name: str) -> QueueReader:
        """A reader for queue ``name`` (not yet read)."""
        if not name:
            raise ValueError("a queue name is needed")
        if self.kind == "redis-list":
            from ..brokers.redis_list import RedisListSource

            return RedisListSource(self.client, name)
        if self.kind == "redis-stream":
            from ..brokers.redis_stream import RedisStreamSource

            assert self._stream_group is not None
            return RedisStreamSource(self.client, name, self._stream_group)
        if self.kind == "rq":
            from ..brokers.rq_queue import RQSource

            return RQSource(self.client, name)
        if self.kind == "arq":
            from ..brokers.arq_queue import ArqSource

            return ArqSource(self.client, name)
        return self._celery_reader(name)

    def _celery_reader(self, name: str) -> QueueReader:
        from ..brokers.celery_queue import CelerySource, RedisCeleryQueue, TaskEvents, Unacked

        if self._events_wanted and self.group.sources:
            raise ValueError("Celery's task events carry no queue name: --events needs a single Celery queue")
        if self._events_wanted and self.events is None:
            self.events = TaskEvents(self.url).start()
        if self.client is None:
            source = CelerySource(self.url, name)
            source.events = self.events
            self._amqp.append(source)
            return source
        if self._unacked is None:
            self._unacked = Unacked()
        return RedisCeleryQueue(self.client, name, unacked=self._unacked, events=self.events)

    def watch(self, name: str) -> GroupSource:
        """Read queue ``name`` with the others from now on; its Source for the monitor."""
        return self.group.add(self.reader(name))

    def discover(self, pattern: str) -> list[str]:
        """Names of the queues ``pattern`` matches (see :mod:`._discover`)."""
        if self.client is None:
            raise ValueError(
                "RabbitMQ does not list its queues over AMQP: name each Celery queue (no pattern)"
            )
        from ._discover import find_queues

        return find_queues(self.kind, self.client, pattern)

    def _close(self) -> None:
        if self.events is not None:
            self.events.close()
        for source in self._amqp:
            source.events = None  # closed above, once
            source.close()
        if self.client is not None:
            self.client.close()
