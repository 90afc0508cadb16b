"""An RQ queue, read from the keys RQ keeps in Redis.

=================  ==========================================================
depth              ``LLEN rq:queue:NAME``
workers            workers registered for the queue (``rq:workers:NAME``) whose
                   hash still exists: RQ keeps a stopped worker's hash until
                   its heartbeat TTL runs out, so a hung worker still counts
busy               jobs in the queue's started registry (``rq:wip:NAME``)
                   whose heartbeat has not expired
processed, failed  the sum of the workers' ``successful_job_count`` and
                   ``failed_job_count``: known only while every worker of the
                   queue serves this queue alone (they count all their queues)
oldest age         ``enqueued_at`` of the job at the head of the queue
=================  ==========================================================

A worker that stops (a ``--burst`` worker that ran out of jobs, a warm shutdown)
leaves its queue's worker set at once but keeps its hash, with its final
counts and a ``death`` time, for 60 s: the source reads each departed worker's
hash once more, so the jobs it ran since the previous tick are counted.

A queue name RQ has never seen (no job ever enqueued to it, no worker serving
it: a typo) is an error naming the queues RQ does know, not depth 0 forever.
Per tick and queue: ``LLEN``, ``SMEMBERS`` of the queue's workers and ``LINDEX 0``,
then ``HGET`` of the head job's time, ``ZCOUNT`` of the running jobs (when
workers serve it), ``SISMEMBER`` of the registry (when it has neither jobs nor
workers) and one ``HMGET`` per worker (shared by every queue it serves):
nothing walks the queue.
Arrivals, downstream calls, 429s and idle time are not in RQ's keys.
"""

from __future__ import annotations

import difflib
import time
from datetime import UTC, datetime
from typing import Any

from .._source import Reading
from ._counters import WorkerTotals
from ._rounds import RedisQueueSource, Round

UNKNOWN = {
    "enqueued_total": "RQ keeps no count of enqueued jobs",
    "attempts_total": "downstream calls happen inside the jobs",
    "rate_limited_total": "downstream calls happen inside the jobs",
    "idle_s_total": "RQ keeps working time per worker, not idle time per queue",
}
_WORKER_FIELDS = ("successful_job_count", "failed_job_count", "queues", "death")
#: Queue names shown when a name is unknown: the closest, then the first of the rest.
SHOWN_NAMES = 5


def parse_time(text: str | None) -> float | None:
    """Unix time of an RQ timestamp (ISO 8601, naive times being UTC), or None."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class RQSource(RedisQueueSource):
    """What RQ's Redis keys show of one queue."""

    def __init__(self, client: Any, queue: str, *, prefix: str = "rq") -> None:
        super().__init__(client)
        self.queue = self.name = queue
        self._prefix = prefix
        self._queue_key = f"{prefix}:queue:{queue}"
        self._workers_key = f"{prefix}:workers:{queue}"
        self._wip_key = f"{prefix}:wip:{queue}"
        self._job_prefix = f"{prefix}:job:"
        self._totals = WorkerTotals(("ok", "failed"))
        self._seen: set[str] = set()
        self._now = 0.0
        self._first: tuple[int, int, int] = (0, 0, 0)
        self._hashes: dict[str, int] = {}
        self._registered: set[str] = set()
        self._head: int | None = None
        self._busy: int | None = None
        self._known: int | None = None
        self._unknown_message: str | None = None
        self.shared_workers = False
        """Whether, at the last read, a worker of this queue also served others."""

    def plan(self, first: Round) -> None:
        self._first = (
            first.call("LLEN", self._queue_key),
            first.call("SMEMBERS", self._workers_key),
            first.call("LINDEX", self._queue_key, 0),
        )

    def plan_more(self, first: Round, second: Round) -> None:
        depth, members, head = (first.get(h) for h in self._first)
        self._registered = {str(k) for k in members}
        if not self._registered and not int(depth):
            self._known = second.call("SISMEMBER", f"{self._prefix}:queues", self._queue_key)
        else:
            self._known = None
        self._now = time.time()
        # Started jobs whose heartbeat has not expired: only a live worker holds one.
        self._busy = second.call("ZCOUNT", self._wip_key, f"({self._now}", "+inf") if members else None
        # Workers that left since the previous tick: their hash holds their final counts.
        keys = sorted(self._registered | self._seen)
        self._hashes = {key: second.call_once("HMGET", key, *_WORKER_FIELDS) for key in keys}
        self._head = second.call("HGET", self._job_prefix + str(head), "enqueued_at") if head else None

    def _unknown_queue_message(self) -> str:
        """Why the queue is unknown, naming the closest queues RQ knows (read once:
        one ``SMEMBERS`` of RQ's queue registry, on this error path only)."""
        if self._unknown_message is not None:
            return self._unknown_message
        registry = f"{self._prefix}:queues"
        names = sorted(str(k).removeprefix(f"{self._prefix}:queue:") for k in self._client.smembers(registry))
        close = difflib.get_close_matches(self.queue, names, n=SHOWN_NAMES)
        shown = close + [n for n in names if n not in close][: SHOWN_NAMES - len(close)]
        known = ", ".join(repr(n) for n in shown) + (", ..." if len(names) > len(shown) else "")
        self._unknown_message = (
            f"RQ knows no queue {self.queue!r}: no job was ever enqueued to it and no worker serves it "
            f"(RQ's queues: {known or 'none'}); check the name"
        )
        return self._unknown_message

    def reading(self, first: Round, second: Round) -> Reading:
        if self._known is not None and not int(second.get(self._known)):
            raise LookupError(self._unknown_queue_message())
        depth = first.get(self._first[0])
        busy = second.get(self._busy) if self._busy is not None else 0
        live: dict[str, dict[str, int]] = {}
        counted: dict[str, dict[str, int]] = {}
        shared = False
        for key, handle in self._hashes.items():
            ok, failed, queues, death = second.get(handle)
            if queues is None:
                continue  # the hash expired: its last counts were folded in already
            counted[key] = {"ok": int(ok or 0), "failed": int(failed or 0)}
            if queues.split(",") != [self.queue]:
                shared = True
            if death is None and key in self._registered:
                live[key] = counted[key]
        self._seen = set(self._registered)
        self.shared_workers = shared
        totals = self._totals.update(counted)
        enqueued_ts = parse_time(second.get(self._head)) if self._head is not None else None
        return Reading(
            depth=int(depth),
            workers=len(live),
            busy=min(int(busy), len(live)),
            processed_total=None if shared else totals["ok"] + totals["failed"],
            failed_total=None if shared else totals["failed"],
            oldest_age_s=max(0.0, self._now - enqueued_ts) if enqueued_ts is not None else None,
        )

    @property
    def unknown(self) -> dict[str, str]:
        unknown = dict(UNKNOWN)
        if self.shared_workers:
            reason = "a worker of this queue also serves other queues, and RQ counts its jobs across all"
            unknown["processed_total"] = unknown["failed_total"] = reason
        return unknown
