"""An arq queue, read from the keys arq keeps in Redis.

arq keeps a queue as one sorted set (job id, score = when to run, in
milliseconds), a key per job in progress (``arq:in-progress:ID``) and, per
queue, a health-check key that a worker rewrites every ``health_check_interval``
seconds with its counts (``j_complete=.. j_failed=.. j_retried=.. j_ongoing=..``).

=================  ==========================================================
depth              jobs due now (score <= now) that no worker holds
busy               jobs due now that a worker holds (an in-progress key)
oldest age         now minus the score of the first due job no worker holds:
                   how long it has been due (its enqueue time, unless it
                   was deferred)
processed, failed  from the health-check key: complete + failed + retried runs
                   and failed + retried. Known once the key has been seen; a
                   stopped worker's last counts hold. arq has one such key per
                   queue, rewritten by each worker in turn: with one worker it
                   is exact (as of its last check); with several it holds
                   whichever wrote last, so run one worker per queue or treat
                   these two counters as unreliable
=================  ==========================================================

The cost on Redis is bounded whatever the queue's length: ``ZCOUNT`` of the due
jobs (O(log n)), then a walk from the head of the due jobs that checks each
one's in-progress key, in ranks of :data:`CHUNK` (``ZRANGE`` by rank: O(log n)
each). arq workers take jobs from the head, so the held jobs are there: the walk
stops after :data:`WAITING_RUN` jobs in a row that no worker holds, and never
looks at more than :data:`MAX_LOOKED`. It runs as one Lua script, so it costs
one command per queue, with the health-check ``GET``, in one round trip. A
queue with more jobs running at once than :data:`MAX_LOOKED` reports busy as
unknown. arq has no registry of workers, so the worker count is unknown.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from .._source import Reading
from ._rounds import RedisQueueSource, Round

DEFAULT_QUEUE = "arq:queue"
IN_PROGRESS_PREFIX = "arq:in-progress:"
HEALTH_CHECK_SUFFIX = ":health-check"
#: Due jobs looked at per ``ZRANGE`` of the walk.
CHUNK = 32
#: The walk stops after this many due jobs in a row that no worker holds.
WAITING_RUN = 16
#: ... and never looks at more due jobs than this.
MAX_LOOKED = 1000

DUE_AND_HELD = """
local due = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
local chunk, run, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local held, looked, waiting_run, oldest = 0, 0, 0, ''
while looked < due and looked < limit and waiting_run < run do
  local last = math.min(looked + chunk, due, limit) - 1
  local jobs = redis.call('ZRANGE', KEYS[1], looked, last, 'WITHSCORES')
  if #jobs == 0 then break end
  for i = 1, #jobs, 2 do
    looked = looked + 1
    if redis.call('EXISTS', ARGV[2] .. jobs[i]) == 1 then
      held = held + 1
      waiting_run = 0
    else
      if oldest == '' then oldest = jobs[i + 1] end
      waiting_run = waiting_run + 1
      if waiting_run >= run then break end
    end
  end
end
return {due, held, looked, waiting_run, oldest}
"""
SCRIPT_SHA = hashlib.sha1(DUE_AND_HELD.encode()).hexdigest()

_COUNT = re.compile(r"\b(j_complete|j_failed|j_retried|j_ongoing)=(\d+)")

UNKNOWN = {
    "workers": "arq keeps no registry of workers",
    "enqueued_total": "arq keeps no count of enqueued jobs",
    "attempts_total": "downstream calls happen inside the jobs",
    "rate_limited_total": "downstream calls happen inside the jobs",
    "idle_s_total": "arq keeps no idle time",
}


class DueJobs:
    """What the walk found: due jobs, those held, and the oldest waiting one's score."""

    __slots__ = ("busy_known", "due", "held", "oldest_ms")

    def __init__(self, reply: list[Any]) -> None:
        due, held, looked, waiting_run, oldest = reply
        self.due, self.held = int(due), int(held)
        # Cut short by MAX_LOOKED while still finding held jobs: more may be held further on.
        self.busy_known = int(looked) >= self.due or int(waiting_run) >= WAITING_RUN
        self.oldest_ms = float(oldest) if oldest not in ("", b"", None) else None

    @property
    def waiting(self) -> int:
        return self.due - self.held

    def oldest_age_s(self, now: float) -> float | None:
        return None if self.oldest_ms is None else max(0.0, now - self.oldest_ms / 1000)


def _script_args(queue: str, now_ms: int) -> tuple[Any, ...]:
    return (SCRIPT_SHA, 1, queue, now_ms, IN_PROGRESS_PREFIX, CHUNK, WAITING_RUN, MAX_LOOKED)


class ArqSource(RedisQueueSource):
    """What arq's Redis keys show of one queue."""

    def __init__(self, client: Any, queue: str = DEFAULT_QUEUE) -> None:
        super().__init__(client)
        self.queue = self.name = queue
        self._health_key = queue + HEALTH_CHECK_SUFFIX
        self._counts: dict[str, int] | None = None
        self._now = 0.0
        self._due = self._health = 0
        self.due: DueJobs | None = None
        """The walk's result at the last read."""

    def plan(self, first: Round) -> None:
        self._now = time.time()
        self._due = first.call("EVALSHA", *_script_args(self.queue, int(self._now * 1000)))
        self._health = first.call("GET", self._health_key)

    def _due_jobs(self, first: Round) -> DueJobs:
        try:
            return DueJobs(first.get(self._due))
        except Exception as exc:
            if type(exc).__name__ != "NoScriptError":
                raise
        # Redis restarted or its scripts were flushed: load the script again (rare: one more round trip).
        self._client.script_load(DUE_AND_HELD)
        return DueJobs(self._client.evalsha(*_script_args(self.queue, int(self._now * 1000))))

    def reading(self, first: Round, second: Round) -> Reading:
        self.due = due = self._due_jobs(first)
        health = first.get(self._health)
        if health:
            text = health.decode() if isinstance(health, bytes) else str(health)
            counts = {k: int(v) for k, v in _COUNT.findall(text)}
            if {"j_complete", "j_failed", "j_retried"} <= counts.keys():
                self._counts = counts
        processed = failed = None
        if self._counts is not None:
            c = self._counts
            processed = c["j_complete"] + c["j_failed"] + c["j_retried"]
            failed = c["j_failed"] + c["j_retried"]
        return Reading(
            depth=due.waiting,
            busy=due.held if due.busy_known else None,
            processed_total=processed,
            failed_total=failed,
            oldest_age_s=due.oldest_age_s(self._now),
        )

    @property
    def unknown(self) -> dict[str, str]:
        unknown = dict(UNKNOWN)
        if self._counts is None:
            reason = f"no worker has written arq's health-check key {self._health_key!r} yet"
            unknown["processed_total"] = unknown["failed_total"] = reason
        return unknown
