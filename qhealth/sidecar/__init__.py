"""The sidecar: watch a queue from outside, with no change to the pool's code.

:func:`open_source` builds a :class:`~qhealth.Source` for one queue of one
kind of broker; ``Monitor.watch_source`` samples it; ``qhealth watch`` is the
command line around both. Each source reads what the framework's own keys
reveal and reports every other field as unknown (its ``unknown`` property says
why), so the classifier judges only what can be known.

=================  ===============================================================
kind               queue is
=================  ===============================================================
``redis-list``     the key of a Redis list (depth only)
``redis-stream``   the key of a Redis stream; ``group`` names the consumer group
``rq``             the RQ queue name (``default``, ...)
``arq``            arq's queue key (``arq:queue`` unless the workers set another)
``celery``         the Celery queue name (``celery``, ...), on a Redis or RabbitMQ
                   broker; ``events=True`` also counts task events
=================  ===============================================================
"""

from __future__ import annotations

from typing import Any

from .._redact import redact_url, scrub
from .._source import Source

KINDS: tuple[str, ...] = ("redis-list", "redis-stream", "rq", "arq", "celery")

__all__ = ["KINDS", "open_source", "redact_url", "scrub"]


def open_source(
    kind: str,
    url: str,
    queue: str,
    *,
    group: str | None = None,
    events: bool = False,
) -> Source:
    """A source for ``queue`` of ``kind`` at ``url``; ``ValueError`` names a bad argument.

    Nothing is read yet: connections open on the first read.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if not queue:
        raise ValueError("a queue name is needed")
    if group is not None and kind != "redis-stream":
        raise ValueError("a consumer group applies to --kind redis-stream only")
    if events and kind != "celery":
        raise ValueError("task events apply to --kind celery only")
    if kind == "celery":
        from .celery_queue import CelerySource

        return CelerySource(url, queue, events=events)
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"--kind {kind} needs a redis:// URL, got {redact_url(url)!r}")
    from ._redis import connect

    client: Any = connect(url)
    if kind == "redis-list":
        from .redis_list import RedisListSource

        return RedisListSource(client, queue)
    if kind == "redis-stream":
        if not group:
            raise ValueError("--kind redis-stream needs the consumer group (--group)")
        from .redis_stream import RedisStreamSource

        return RedisStreamSource(client, queue, group)
    if kind == "rq":
        from .rq_queue import RQSource

        return RQSource(client, queue)
    from .arq_queue import ArqSource

    return ArqSource(client, queue)
