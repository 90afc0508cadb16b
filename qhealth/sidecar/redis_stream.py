"""A Redis stream read by a consumer group: the group's own bookkeeping.

=================  ==========================================================
depth              entries not yet delivered to the group (its ``lag``; when
                   Redis cannot tell after deletions, counted after the last
                   delivered id, up to a bound)
workers            the group's consumers (Redis keeps a consumer until it is
                   deleted with ``XGROUP DELCONSUMER``, so one that died counts)
busy               consumers holding delivered, unacknowledged entries
enqueued           entries ever added to the stream (``entries-added``)
processed          entries delivered to the group and acknowledged
                   (``entries-read`` minus pending)
oldest age         from the id of the oldest undelivered entry
=================  ==========================================================

The consumers' idle times (milliseconds since each last read or acknowledged)
are kept in :attr:`RedisStreamSource.consumers` for display.
"""

from __future__ import annotations

import time
from typing import Any

from .._source import Reading

#: Counting undelivered entries one by one (only when Redis has no lag) stops here.
MAX_COUNTED = 100_000

UNKNOWN = {
    "failed_total": "a stream group does not record failures (consumers decide what to acknowledge)",
    "attempts_total": "downstream calls happen in the consumers",
    "rate_limited_total": "downstream calls happen in the consumers",
    "idle_s_total": "Redis keeps the time since each consumer's last read, not its idle time",
}


def _id_ms(entry_id: str) -> int | None:
    head = entry_id.split("-", 1)[0]
    return int(head) if head.isdigit() else None


class RedisStreamSource:
    """What ``XINFO`` shows of one consumer group of a stream."""

    def __init__(self, client: Any, stream: str, group: str) -> None:
        self._client = client
        self.stream = stream
        self.group = group
        self.consumers: list[tuple[str, int, int]] = []
        """(name, pending, idle ms) of each consumer at the last read."""

    def _group_info(self) -> dict[str, Any]:
        for info in self._client.xinfo_groups(self.stream):
            if info.get("name") == self.group:
                return dict(info)
        raise LookupError(f"stream {self.stream!r} has no consumer group {self.group!r}")

    def read(self) -> Reading | None:
        client = self._client
        group = self._group_info()
        stream = client.xinfo_stream(self.stream)
        consumers = client.xinfo_consumers(self.stream, self.group)
        self.consumers = [(str(c["name"]), int(c["pending"]), int(c["idle"])) for c in consumers]
        last_id = str(group.get("last-delivered-id") or "0-0")
        lag = group.get("lag")
        first_undelivered = client.xrange(self.stream, min=f"({last_id}", count=1)
        if lag is None:
            counted = len(client.xrange(self.stream, min=f"({last_id}", count=MAX_COUNTED + 1))
            if counted > MAX_COUNTED:
                return None  # too many to count, and Redis cannot tell: no guess
            lag = counted
        oldest_age = None
        if first_undelivered:
            ms = _id_ms(first_undelivered[0][0])
            if ms is not None:
                oldest_age = max(0.0, time.time() - ms / 1000)
        pending = int(group.get("pending") or 0)
        read_total = group.get("entries-read")
        added = stream.get("entries-added")
        return Reading(
            depth=int(lag),
            workers=len(self.consumers),
            busy=sum(1 for _, held, _ in self.consumers if held > 0),
            enqueued_total=int(added) if added is not None else None,
            processed_total=max(int(read_total) - pending, 0) if read_total is not None else None,
            oldest_age_s=oldest_age,
        )

    @property
    def unknown(self) -> dict[str, str]:
        return dict(UNKNOWN)

    def close(self) -> None:
        self._client.close()
