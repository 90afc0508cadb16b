"""Recording what the monitor sees, as traces (``demo --record``, ``watch --record``).

A :class:`TraceRecorder` is a monitor listener that writes one trace file per
queue, a line per tick, flushed as it goes: a recording cut short by a crash
or Ctrl-C is still a valid trace up to its last line. Read it back with
``qhealth classify`` or ``qhealth report``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ._log import ThrottledLog
from ._monitor import Listener, QueueSnapshot
from ._sample import TraceHeader
from ._trace import TraceWriter

#: One day of 1 s samples (about 15 MB): a recording left running stops there.
DEFAULT_MAX_SAMPLES = 86_400


def trace_filename(queue: str) -> str:
    """A file name for a queue's trace: the name with anything outside
    ``[A-Za-z0-9._-]`` replaced, so that no queue name can escape the folder."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", queue).lstrip(".") or "queue"
    return f"{safe}.jsonl"


class TraceRecorder(Listener):
    """Write every watched queue's samples to ``directory/<queue>.jsonl``."""

    def __init__(self, directory: str | os.PathLike[str], *, max_samples: int = DEFAULT_MAX_SAMPLES) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, got {max_samples!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_samples = max_samples
        self._writers: dict[str, TraceWriter] = {}
        self._counts: dict[str, int] = {}
        self._log = ThrottledLog()

    def path_of(self, queue: str) -> Path:
        return self.directory / trace_filename(queue)

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        queue = snapshot.queue
        count = self._counts.get(queue, 0)
        if count >= self.max_samples:
            self._log.warning(
                f"full:{queue}",
                "qhealth: trace of queue %r reached %d samples; recording stopped",
                queue,
                self.max_samples,
            )
            return
        writer = self._writers.get(queue)
        if writer is None:
            header = TraceHeader(queue=queue, interval_s=snapshot.interval_s, capacity=snapshot.capacity)
            writer = self._writers[queue] = TraceWriter(self.path_of(queue), header)
        writer.write(snapshot.sample)
        self._counts[queue] = count + 1
        if count + 1 >= self.max_samples:
            writer.close()

    def on_unwatch(self, queue: str) -> None:
        writer = self._writers.pop(queue, None)
        self._counts.pop(queue, None)
        if writer is not None:
            writer.close()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
