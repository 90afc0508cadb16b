"""Finding the queues a pattern names, from each framework's own registry of queues.

``qhealth watch --queue 'emails-*'`` watches every queue whose name matches
(shell-style: ``*``, ``?``, ``[...]``). Each kind finds its queues where the
framework records them, so that an empty queue (a missing key in Redis) is
found too:

=============  ===============================================================
rq             RQ's queue registry (``SMEMBERS rq:queues``)
celery         kombu's binding tables on Redis (``_kombu.binding.*``: one per
               exchange, listing its queues); the priority lists of each queue
               are counted with it, never as queues of their own
arq            sorted sets whose key matches, and the health-check keys of
               queues whose workers run (arq has no registry)
redis-list     lists whose key matches
redis-stream   streams whose key matches
=============  ===============================================================

Looking by key uses ``SCAN`` with ``COUNT`` (each call bounded; never ``KEYS``),
so finding queues never blocks Redis; it runs when the watch starts and then
every minute, never on the tick. On a Redis Cluster every master is scanned,
each for the slots it owns; a registry (one key) is read on the master of its
slot.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

from ..brokers._redis import is_cluster_client
from ..brokers.arq_queue import HEALTH_CHECK_SUFFIX
from ..brokers.celery_queue import KOMBU_PRIORITY_SEP

#: Keys asked for per SCAN call.
SCAN_COUNT = 1000
#: arq's own sorted set of aborted job ids: not a queue.
ARQ_ABORT_KEY = "arq:abort"


def is_pattern(name: str) -> bool:
    """Whether a ``--queue`` value is a pattern rather than one queue's name."""
    return any(c in name for c in "*?[")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _matching(names: Iterable[str], pattern: str) -> list[str]:
    return sorted({n for n in names if fnmatch.fnmatchcase(n, pattern)})


def _keys(client: Any, match: str, kind: str | None = None) -> list[str]:
    """Keys that match, from every node that holds keys: each master of a
    Redis Cluster keeps its own slots, so each is scanned (never a replica:
    it holds the same keys as its master)."""
    if is_cluster_client(client):
        scan = client.scan_iter(match=match, count=SCAN_COUNT, _type=kind, target_nodes=client.PRIMARIES)
    else:
        scan = client.scan_iter(match=match, count=SCAN_COUNT, _type=kind)
    return [_text(k) for k in scan]


def rq_queues(client: Any, pattern: str, prefix: str = "rq") -> list[str]:
    head = f"{prefix}:queue:"
    keys = (_text(k) for k in client.smembers(f"{prefix}:queues"))
    return _matching((k.removeprefix(head) for k in keys if k.startswith(head)), pattern)


def celery_queues(client: Any, pattern: str) -> list[str]:
    names: set[str] = set()
    tables = _keys(client, "_kombu.binding.*", "set")
    for start in range(0, len(tables), SCAN_COUNT):
        with client.pipeline(transaction=False) as pipe:
            for table in tables[start : start + SCAN_COUNT]:
                pipe.smembers(table)
            for members in pipe.execute():
                names.update(_text(m).split(KOMBU_PRIORITY_SEP)[-1] for m in members)
    return _matching(names, pattern)


def arq_queues(client: Any, pattern: str) -> list[str]:
    names = set(_keys(client, pattern, "zset")) - {ARQ_ABORT_KEY}
    for key in _keys(client, pattern + HEALTH_CHECK_SUFFIX, "string"):
        names.add(key.removesuffix(HEALTH_CHECK_SUFFIX))
    return _matching(names, pattern)


def find_queues(kind: str, client: Any, pattern: str) -> list[str]:
    """The names of the queues of ``kind`` that ``pattern`` matches, sorted."""
    if kind == "rq":
        return rq_queues(client, pattern)
    if kind == "celery":
        return celery_queues(client, pattern)
    if kind == "arq":
        return arq_queues(client, pattern)
    if kind == "redis-list":
        return sorted(_keys(client, pattern, "list"))
    if kind == "redis-stream":
        return sorted(_keys(client, pattern, "stream"))
    raise ValueError(f"cannot find queues of kind {kind!r} by pattern")
