"""A bare Redis list used as a queue: its length, and nothing else.

Whatever the producers and consumers are (``LPUSH``/``BRPOP``, ``BLMOVE``
into a processing list, ...), the list itself only shows how many items wait.
Throughput, workers and 429s live in the consumers: instrument them to know
more.
"""

from __future__ import annotations

from typing import Any

from .._source import Reading

UNKNOWN_BEYOND_DEPTH = {
    "workers": "a Redis list does not know its consumers",
    "busy": "a Redis list does not know its consumers",
    "enqueued_total": "Redis keeps no count of pushes",
    "processed_total": "Redis keeps no count of pops",
    "failed_total": "failures happen in the consumers",
    "attempts_total": "downstream calls happen in the consumers",
    "rate_limited_total": "downstream calls happen in the consumers",
    "idle_s_total": "a Redis list does not know its consumers",
}


class RedisListSource:
    """Depth of a Redis list (``LLEN``)."""

    def __init__(self, client: Any, key: str) -> None:
        self._client = client
        self.key = key

    def read(self) -> Reading:
        return Reading(depth=int(self._client.llen(self.key)))

    @property
    def unknown(self) -> dict[str, str]:
        return dict(UNKNOWN_BEYOND_DEPTH)

    def close(self) -> None:
        self._client.close()
