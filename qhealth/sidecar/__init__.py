"""The sidecar: watch a queue from outside, with no change to the pool's code.

:func:`open_source` builds a :class:`~qhealth.Source` for one queue of one
kind of broker; :class:`Sidecar` reads many queues of one broker together (two
pipelined round trips per tick on Redis, whatever their number) and finds them
by pattern; ``Monitor.watch_source`` samples them; ``qhealth watch`` is the
command line around it all. Each source reads what the framework's own keys
reveal and reports every other field as unknown (its ``unknown`` property says
why), so the classifier judges only what can be known. No read walks a queue:
each costs Redis O(1) or O(log n) commands, or work bounded by a constant,
whatever the queue's length (see each module).

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

from .._redact import redact_url, scrub
from .._source import Source
from ._sidecar import KINDS, MAX_QUEUES, Sidecar, check_arguments

__all__ = ["KINDS", "MAX_QUEUES", "Sidecar", "open_source", "redact_url", "scrub"]


def open_source(
    kind: str,
    url: str,
    queue: str,
    *,
    group: str | None = None,
    events: bool = False,
) -> Source:
    """A source for ``queue`` of ``kind`` at ``url``; ``ValueError`` names a bad argument.

    Nothing is read yet: connections open on the first read. To read many
    queues of one broker together, use :class:`Sidecar`.
    """
    check_arguments(kind, url, group=group, events=events)
    if not queue:
        raise ValueError("a queue name is needed")
    if kind == "celery":
        from ..brokers.celery_queue import CelerySource

        return CelerySource(url, queue, events=events)
    source: Source = Sidecar(kind, url, group=group).reader(queue)  # type: ignore[assignment]
    return source
