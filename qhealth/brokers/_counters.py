"""Summing per-worker counters that the broker forgets when a worker goes away.

Frameworks keep a worker's counts in a key that expires after the worker dies
(RQ's ``rq:worker:NAME`` hash). Summed naively, the total would drop when a
worker leaves, which a reader takes for a restart. :class:`WorkerTotals`
keeps each live worker's last counts and folds a departed worker's into a
retired total, so the sum never goes down and memory stays bounded by the live
workers.
"""

from __future__ import annotations

from collections.abc import Mapping


class WorkerTotals:
    """Monotonic totals over workers that come and go."""

    def __init__(self, fields: tuple[str, ...]) -> None:
        self._fields = fields
        self._live: dict[str, dict[str, int]] = {}
        self._retired = dict.fromkeys(fields, 0)

    def update(self, workers: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
        """Record the counts of the workers seen now; return the totals."""
        for name in list(self._live):
            if name not in workers:
                for f, v in self._live.pop(name).items():
                    self._retired[f] += v
        for name, counts in workers.items():
            previous = self._live.get(name)
            current = {f: int(counts.get(f, 0)) for f in self._fields}
            if previous is not None and any(current[f] < previous[f] for f in self._fields):
                # Same name, lower counts: a new worker reused the name.
                for f, v in previous.items():
                    self._retired[f] += v
            self._live[name] = current
        return {f: self._retired[f] + sum(c[f] for c in self._live.values()) for f in self._fields}
