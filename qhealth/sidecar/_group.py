"""Many queues of one broker, read together once per tick, each a Source of its own.

The monitor reads its queues one after another, each through its own
:class:`~qhealth.Source`. A :class:`SourceGroup` hands out one such source per
queue (:meth:`SourceGroup.add`); the first of them read in a tick reads every
queue of the group at once (one :class:`~qhealth.sidecar._rounds.RedisBatch`:
two pipelined round trips in all), and the others take their share of that
read. A queue is read again only once it has taken its share, so each tick
costs one batch whatever the number of queues.

A source never raises into the monitor: a queue that cannot be read gives no
reading (the monitor marks it down) and :attr:`SourceGroup.problems` says why,
with the broker's password masked. That is what lets ``qhealth watch`` print one
line about a broker that went away instead of a traceback per queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from .._redact import scrub
from .._source import Reading
from ..brokers._rounds import QueueReader, RedisBatch

ReadAll = Callable[[Sequence[QueueReader]], list[Reading | Exception | None]]
"""Reads queues together: each one's reading, or the exception that stopped it."""


def describe(exc: BaseException, url: str) -> str:
    """One line about a failed read, with the URL's secrets masked."""
    text = " ".join(str(exc).split())
    return scrub(text, url) or type(exc).__name__


class GroupSource:
    """One queue of a :class:`SourceGroup`: a :class:`~qhealth.Source`."""

    def __init__(self, group: SourceGroup, reader: QueueReader) -> None:
        self._group = group
        self.reader = reader
        self.name = reader.name

    def read(self) -> Reading | None:
        return self._group.take(self.name)

    @property
    def unknown(self) -> dict[str, str]:
        return self.reader.unknown

    @property
    def consumers(self) -> Any:
        """What the reader shows of the consumers (a stream group's), for display."""
        return getattr(self.reader, "consumers", None)


class SourceGroup:
    """Queues of one kind on one broker, read together (see the module docstring).

    ``read_all`` reads a list of readers at once; :func:`redis_reads` makes one
    for a Redis client. ``url`` is only used to mask its secrets in messages.
    """

    def __init__(self, url: str, read_all: ReadAll, *, close: Callable[[], None] | None = None) -> None:
        self._url = url
        self._read_all = read_all
        self._close = close
        self._lock = threading.Lock()
        self._sources: dict[str, GroupSource] = {}
        self._results: dict[str, Reading | Exception | None] = {}
        self._taken: set[str] = set()
        self.problems: dict[str, str] = {}
        """Why each queue that gave no reading at its latest read could not be read."""
        self.error: str | None = None
        """Why the latest read of the whole group failed (the broker is unreachable), else None."""
        self.reads = 0
        """How many times the group was read (once per tick)."""

    def add(self, reader: QueueReader) -> GroupSource:
        """Read ``reader``'s queue with the others from the next tick on."""
        source = GroupSource(self, reader)
        with self._lock:
            if reader.name in self._sources:
                raise ValueError(f"queue {reader.name!r} is already in the group")
            self._sources = {**self._sources, reader.name: source}
        return source

    def remove(self, name: str) -> None:
        with self._lock:
            self._sources = {k: v for k, v in self._sources.items() if k != name}
        self.problems.pop(name, None)

    @property
    def sources(self) -> dict[str, GroupSource]:
        return dict(self._sources)

    @property
    def results(self) -> dict[str, Reading | Exception | None]:
        """Each queue's result at the latest read: a reading, or why there is none."""
        return dict(self._results)

    def read(self) -> None:
        """Read every queue of the group now."""
        sources = list(self._sources.values())
        self.reads += 1
        try:
            results = self._read_all([s.reader for s in sources])
        except Exception as exc:
            self.error = describe(exc, self._url)
            results = [exc] * len(sources)
        else:
            self.error = None
        self._results = {s.name: r for s, r in zip(sources, results, strict=True)}
        self._taken = set()
        for source, result in zip(sources, results, strict=True):
            if isinstance(result, Exception):
                self.problems[source.name] = describe(result, self._url)
            elif result is None:
                problem = getattr(source.reader, "problem", None)
                self.problems[source.name] = problem or "the source gave no reading"
            else:
                self.problems.pop(source.name, None)

    def take(self, name: str) -> Reading | None:
        """``name``'s share of the latest read; reads the group again when the
        queue has already had its share of it (the next tick has begun)."""
        if name in self._taken or name not in self._results:
            self.read()
        self._taken.add(name)
        result = self._results.get(name)
        return None if isinstance(result, Exception) else result

    def close(self) -> None:
        if self._close is not None:
            self._close()


def redis_reads(client: Any) -> ReadAll:
    """Read readers of one Redis client in one batch: two pipelined round trips."""

    def read_all(readers: Sequence[QueueReader]) -> list[Reading | Exception | None]:
        return RedisBatch(client, readers).read()

    return read_all


def one_by_one(readers: Sequence[QueueReader]) -> list[Reading | Exception | None]:
    """Read readers that cannot share a round trip (a RabbitMQ queue), each on its own."""
    results: list[Reading | Exception | None] = []
    for reader in readers:
        try:
            results.append(reader.read())  # type: ignore[attr-defined]
        except Exception as exc:
            results.append(exc)
    return results
