"""A bare Redis list used as a queue: its length, and nothing else.

Whatever the producers and consumers are (``LPUSH``/``BRPOP``, ``BLMOVE``
into a processing list, ...), the list itself only shows how many items wait
(``LLEN``: O(1)). Its items are the application's own bytes, with no time
attached, so the oldest item's age is unknown too. Throughput, workers and
429s live in the consumers: instrument them to know more.
"""

from __future__ import annotations

from typing import Any

from .._source import Reading
from ._rounds import RedisQueueSource, Round

UNKNOWN_BEYOND_DEPTH = {
    "workers": "a Redis list does not know its consumers",
    "busy": "a Redis list does not know its consumers",
    "enqueued_total": "Redis keeps no count of pushes",
    "processed_total": "Redis keeps no count of pops",
    "failed_total": "failures happen in the consumers",
    "attempts_total": "downstream calls happen in the consumers",
    "rate_limited_total": "downstream calls happen in the consumers",
    "idle_s_total": "a Redis list does not know its consumers",
    "oldest_age_s": "a list item is the application's bytes, with no time Redis could read",
}


class RedisListSource(RedisQueueSource):
    """Depth of a Redis list (``LLEN``)."""

    def __init__(self, client: Any, key: str) -> None:
        super().__init__(client)
        self.key = self.name = key
        self._length = 0

    def plan(self, first: Round) -> None:
        self._length = first.call("LLEN", self.key)

    def reading(self, first: Round, second: Round) -> Reading:
        return Reading(depth=int(first.get(self._length)))

    @property
    def unknown(self) -> dict[str, str]:
        return dict(UNKNOWN_BEYOND_DEPTH)
