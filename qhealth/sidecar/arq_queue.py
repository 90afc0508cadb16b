"""An arq queue, read from the keys arq keeps in Redis.

arq keeps a queue as one sorted set (job id, score = when to run), a key per
job in progress (``arq:in-progress:ID``) and, per queue, a health-check key
that a worker rewrites every ``health_check_interval`` seconds with its counts
(``j_complete=.. j_failed=.. j_retried=.. j_ongoing=..``).

=================  ==========================================================
depth              jobs due now (score <= now) that no worker holds
busy               jobs due now that a worker holds (an in-progress key)
processed, failed  from the health-check key: complete + failed + retried runs
                   and failed + retried. Known once the key has been seen; a
                   stopped worker's last counts hold. arq has one such key per
                   queue, rewritten by each worker in turn: with one worker it
                   is exact (as of its last check); with several it holds
                   whichever wrote last, so run one worker per queue or treat
                   these two counters as unreliable
=================  ==========================================================

Both depth and busy come from one Lua script that looks at each due job
(O(depth) in Redis, once per tick). arq has no registry of workers, so the
worker count is unknown.
"""

from __future__ import annotations

import re
import time
from typing import Any

from .._source import Reading

DEFAULT_QUEUE = "arq:queue"
IN_PROGRESS_PREFIX = "arq:in-progress:"
HEALTH_CHECK_SUFFIX = ":health-check"

DUE_AND_HELD = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local waiting, held = 0, 0
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[2] .. id) == 1 then held = held + 1 else waiting = waiting + 1 end
end
return {waiting, held}
"""

_COUNT = re.compile(r"\b(j_complete|j_failed|j_retried|j_ongoing)=(\d+)")

UNKNOWN = {
    "workers": "arq keeps no registry of workers",
    "enqueued_total": "arq keeps no count of enqueued jobs",
    "attempts_total": "downstream calls happen inside the jobs",
    "rate_limited_total": "downstream calls happen inside the jobs",
    "idle_s_total": "arq keeps no idle time",
}


def due_jobs(script: Any, queue: str) -> tuple[int, int]:
    """(waiting, held): jobs due now that no worker holds, and that one holds.
    ``script`` is ``client.register_script(DUE_AND_HELD)``."""
    now_ms = int(time.time() * 1000)
    waiting, held = script(keys=[queue], args=[now_ms, IN_PROGRESS_PREFIX])
    return int(waiting), int(held)


class ArqSource:
    """What arq's Redis keys show of one queue."""

    def __init__(self, client: Any, queue: str = DEFAULT_QUEUE) -> None:
        self._client = client
        self.queue = queue
        self._health_key = queue + HEALTH_CHECK_SUFFIX
        self._script = client.register_script(DUE_AND_HELD)
        self._counts: dict[str, int] | None = None

    def read(self) -> Reading:
        waiting, held = due_jobs(self._script, self.queue)
        health = self._client.get(self._health_key)
        if health:
            counts = {k: int(v) for k, v in _COUNT.findall(health)}
            if {"j_complete", "j_failed", "j_retried"} <= counts.keys():
                self._counts = counts
        processed = failed = None
        if self._counts is not None:
            c = self._counts
            processed = c["j_complete"] + c["j_failed"] + c["j_retried"]
            failed = c["j_failed"] + c["j_retried"]
        return Reading(depth=waiting, busy=held, processed_total=processed, failed_total=failed)

    @property
    def unknown(self) -> dict[str, str]:
        unknown = dict(UNKNOWN)
        if self._counts is None:
            reason = f"no worker has written arq's health-check key {self._health_key!r} yet"
            unknown["processed_total"] = unknown["failed_total"] = reason
        return unknown

    def close(self) -> None:
        self._client.close()
