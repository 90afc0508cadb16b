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

Arrivals, downstream calls, 429s and idle time are not in RQ's keys.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from .._source import Reading
from ._counters import WorkerTotals

UNKNOWN = {
    "enqueued_total": "RQ keeps no count of enqueued jobs",
    "attempts_total": "downstream calls happen inside the jobs",
    "rate_limited_total": "downstream calls happen inside the jobs",
    "idle_s_total": "RQ keeps working time per worker, not idle time per queue",
}


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class RQSource:
    """What RQ's Redis keys show of one queue."""

    def __init__(self, client: Any, queue: str, *, prefix: str = "rq") -> None:
        self._client = client
        self.queue = queue
        self._queue_key = f"{prefix}:queue:{queue}"
        self._workers_key = f"{prefix}:workers:{queue}"
        self._wip_key = f"{prefix}:wip:{queue}"
        self._job_prefix = f"{prefix}:job:"
        self._totals = WorkerTotals(("ok", "failed"))
        self.shared_workers = False
        """Whether, at the last read, a worker of this queue also served others."""

    def read(self) -> Reading:
        client = self._client
        now = time.time()
        with client.pipeline(transaction=False) as pipe:
            pipe.llen(self._queue_key)
            pipe.smembers(self._workers_key)
            pipe.zcount(self._wip_key, f"({now}", "+inf")
            pipe.lindex(self._queue_key, 0)
            depth, worker_keys, busy, head = pipe.execute()
        keys = sorted(worker_keys)
        workers: dict[str, dict[str, int]] = {}
        shared = False
        enqueued_at: str | None = None
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, "successful_job_count", "failed_job_count", "queues", "death")
            if head:
                pipe.hget(self._job_prefix + head, "enqueued_at")
            results = pipe.execute()
        if head:
            enqueued_at = results.pop()
        for key, (ok, failed, queues, death) in zip(keys, results, strict=True):
            if queues is None or death is not None:
                continue  # the hash expired, or the worker registered its death
            workers[key] = {"ok": int(ok or 0), "failed": int(failed or 0)}
            if queues.split(",") != [self.queue]:
                shared = True
        self.shared_workers = shared
        totals = self._totals.update(workers)
        enqueued_ts = _parse_time(enqueued_at)
        return Reading(
            depth=int(depth),
            workers=len(workers),
            busy=min(int(busy), len(workers)),
            processed_total=None if shared else totals["ok"] + totals["failed"],
            failed_total=None if shared else totals["failed"],
            oldest_age_s=max(0.0, now - enqueued_ts) if enqueued_ts is not None else None,
        )

    @property
    def unknown(self) -> dict[str, str]:
        unknown = dict(UNKNOWN)
        if self.shared_workers:
            reason = "a worker of this queue also serves other queues, and RQ counts its jobs across all"
            unknown["processed_total"] = unknown["failed_total"] = reason
        return unknown

    def close(self) -> None:
        self._client.close()
