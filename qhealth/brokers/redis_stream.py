"""A Redis stream read by a consumer group: the group's own bookkeeping.

=================  ==========================================================
depth              entries not yet delivered to the group: its ``lag``
workers            the group's consumers (Redis keeps a consumer until it is
                   deleted with ``XGROUP DELCONSUMER``, so one that died counts)
busy               consumers holding delivered, unacknowledged entries
enqueued           entries ever added to the stream (entries read by the group
                   plus its lag, else the stream's ``entries-added``)
processed          entries delivered to the group and acknowledged
                   (``entries-read`` minus pending)
oldest age         from the id of the first undelivered entry (an id is the
                   time it was added, in milliseconds)
=================  ==========================================================

Redis cannot tell the lag after entries were deleted (``XDEL``) past the
group's position, or for a group created at an arbitrary id. Two cases are
still exact and cheap: a group at the stream's last id has nothing
undelivered, and a group before the stream's first entry has all of it
undelivered. Otherwise the only way to know is to walk the undelivered
entries, which costs as much as the stream is long: the depth is then reported
unknown (no reading, with the reason) until the group moves past the
deletions. Per tick: ``XINFO GROUPS`` and ``XINFO CONSUMERS`` (O(groups),
O(consumers)), then ``XRANGE ... COUNT 1`` for the first undelivered entry
and, only where the group's counters do not tell, ``XINFO STREAM``: each
O(1), O(log n) or O(consumers).

The consumers' idle times (milliseconds since each last read or acknowledged)
are kept in :attr:`RedisStreamSource.consumers` for display.
"""

from __future__ import annotations

import time
from typing import Any

from .._source import Reading
from ._rounds import CannotTell, RedisQueueSource, Round, as_dict

#: Consumers kept for display (their count and busy ones are counted in full).
SHOWN_CONSUMERS = 8

UNKNOWN = {
    "failed_total": "a stream group does not record failures (consumers decide what to acknowledge)",
    "attempts_total": "downstream calls happen in the consumers",
    "rate_limited_total": "downstream calls happen in the consumers",
    "idle_s_total": "Redis keeps the time since each consumer's last read, not its idle time",
}


def parse_id(entry_id: str) -> tuple[int, int]:
    """A stream id (``MS-SEQ``) as a pair that orders like Redis orders ids."""
    ms, _, seq = str(entry_id).partition("-")
    return int(ms), int(seq or 0)


def undelivered_without_lag(group: dict[str, Any], stream: dict[str, Any]) -> int | None:
    """The group's undelivered entries when Redis reports no lag, where that is
    exact at O(1); None where only walking the entries would tell."""
    last = parse_id(group.get("last-delivered-id") or "0-0")
    if int(stream.get("length") or 0) == 0:
        return 0
    if last >= parse_id(stream.get("last-generated-id") or "0-0"):
        return 0
    first = stream.get("first-entry")
    if first and last < parse_id(first[0]):
        return int(stream["length"])
    return None


class RedisStreamSource(RedisQueueSource):
    """What ``XINFO`` shows of one consumer group of a stream."""

    def __init__(self, client: Any, stream: str, group: str) -> None:
        super().__init__(client)
        self.stream = self.name = stream
        self.group = group
        self.consumers: list[tuple[str, int, int]] = []
        """(name, pending, idle ms) of the first consumers at the last read."""
        self._handles: tuple[int, int] = (0, 0)
        self._next: int | None = None
        self._info: int | None = None
        self._group: dict[str, Any] = {}

    def plan(self, first: Round) -> None:
        self._handles = (
            first.call("XINFO", "GROUPS", self.stream),
            first.call("XINFO", "CONSUMERS", self.stream, self.group),
        )

    def plan_more(self, first: Round, second: Round) -> None:
        try:
            found = [g for g in map(as_dict, first.get(self._handles[0])) if g.get("name") == self.group]
        except Exception as exc:
            if "no such key" in str(exc).lower():
                raise LookupError(f"there is no stream {self.stream!r}") from None
            raise
        if not found:
            raise LookupError(f"stream {self.stream!r} has no consumer group {self.group!r}")
        self._group = group = found[0]
        lag, read = group.get("lag"), group.get("entries-read")
        # The stream's own counters are needed only where the group's do not tell:
        # entries added = entries read + lag.
        self._info = second.call("XINFO", "STREAM", self.stream) if lag is None or read is None else None
        last = str(group.get("last-delivered-id") or "0-0")
        undelivered = lag is None or int(lag) > 0
        self._next = second.call("XRANGE", self.stream, f"({last}", "+", "COUNT", 1) if undelivered else None

    def reading(self, first: Round, second: Round) -> Reading:
        group = self._group
        info = as_dict(second.get(self._info)) if self._info is not None else {}
        consumers = [as_dict(c) for c in first.get(self._handles[1])]
        self.consumers = [
            (str(c["name"]), int(c["pending"]), int(c["idle"])) for c in consumers[:SHOWN_CONSUMERS]
        ]
        lag = group.get("lag")
        depth = int(lag) if lag is not None else undelivered_without_lag(group, info)
        if depth is None:
            raise CannotTell(
                f"Redis cannot tell how many entries of stream {self.stream!r} group {self.group!r} are "
                "undelivered (entries were deleted after the group's position); counting them would read "
                "the whole stream, so the depth is unknown until the group reads past the deletions"
            )
        oldest_age = None
        undelivered = second.get(self._next) if self._next is not None and depth > 0 else []
        if undelivered:
            oldest_age = max(0.0, time.time() - parse_id(undelivered[0][0])[0] / 1000)
        pending = int(group.get("pending") or 0)
        read_total = group.get("entries-read")
        if read_total is not None and lag is not None:
            added: Any = int(read_total) + int(lag)
        else:
            added = info.get("entries-added")
        return Reading(
            depth=depth,
            workers=len(consumers),
            busy=sum(1 for c in consumers if int(c["pending"]) > 0),
            enqueued_total=int(added) if added is not None else None,
            processed_total=max(int(read_total) - pending, 0) if read_total is not None else None,
            oldest_age_s=oldest_age,
        )

    @property
    def unknown(self) -> dict[str, str]:
        return dict(UNKNOWN)
