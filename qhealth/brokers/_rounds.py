"""Reading many queues of one Redis in two pipelined round trips, whatever their number.

A watch over 10,000 queues cannot afford a round trip per queue per tick, and a
watch over one deep queue cannot afford a command that walks it. So every queue
kind is a :class:`QueueReader` that reads in phases:

1. :meth:`~QueueReader.plan` queues the commands it needs on the first
   :class:`Round`, shared by every queue of the watch;
2. :meth:`~QueueReader.plan_more` reads the first answers and queues what
   depends on them (RQ's worker hashes, a stream's first undelivered entry) on
   the second round;
3. :meth:`~QueueReader.reading` builds the queue's :class:`~qhealth.Reading`.

:class:`RedisBatch` sends each round as one pipeline: two round trips per tick
for all queues. A command that many queues share (the hash of an RQ worker
that serves many queues) is sent once per round. Readers only queue
commands that cost O(1) or O(log n) in the queue's length, or that are bounded
by a constant: none walks a queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._source import Reading


class CannotTell(Exception):
    """What a queue holds cannot be had cheaply right now; the message says why.

    A reader raises it rather than walk a queue: the queue then has no reading
    (its sample is skipped and it shows as not read), and the reason is shown.
    """


class Round:
    """One pipelined round trip: raw Redis commands queued by any number of
    readers, sent together, answered by index.

    It writes the commands on one connection of the client's pool and reads
    the replies straight off it: redis-py's pipeline costs several times more
    per command in Python than the round trip itself costs, and a watch of
    10,000 queues sends tens of thousands of commands a tick. Replies are
    therefore raw, as the connection's protocol gives them (RESP2 or RESP3; see
    :func:`as_dict`), decoded to ``str`` when the client decodes responses.
    """

    def __init__(self) -> None:
        self._calls: list[tuple[Any, ...]] = []
        self._index: dict[tuple[Any, ...], int] = {}
        self._results: list[Any] = []

    def call(self, *command: Any) -> int:
        """Queue one Redis command (``"LLEN", key``); return the handle of its reply."""
        self._calls.append(command)
        return len(self._calls) - 1

    def call_once(self, *command: Any) -> int:
        """:meth:`call`, but a command already queued in this round (by another
        queue: a worker that serves many) is sent once."""
        index = self._index.get(command)
        if index is None:
            index = self._index[command] = self.call(*command)
        return index

    def __len__(self) -> int:
        return len(self._calls)

    def send(self, client: Any) -> None:
        """Send every queued command in one write, read every reply (no round
        trip when empty). An error reply stays in its place; a broken
        connection raises, after one more try on a fresh connection (a pooled
        connection the server closed)."""
        if not self._calls:
            return
        from redis.exceptions import ConnectionError as RedisConnectionError

        try:
            self._results = _exchange(client.connection_pool, self._calls)
        except RedisConnectionError:
            self._results = _exchange(client.connection_pool, self._calls)

    def get(self, handle: int) -> Any:
        """The reply of a queued command; a command Redis refused raises its error."""
        value = self._results[handle]
        if isinstance(value, Exception):
            raise value
        return value


def _exchange(pool: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    from redis.exceptions import ResponseError

    connection = pool.get_connection()
    try:
        connection.send_packed_command([pack(commands)])
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(connection.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        connection.disconnect()  # a half-read reply must not reach the next user
        raise
    finally:
        pool.release(connection)


def pack(commands: list[tuple[Any, ...]]) -> bytes:
    """Commands in the Redis protocol (RESP): an array of bulk strings each.

    redis-py's own packer costs about 10 µs a command in pure Python (it splits
    large values into chunks, among other things), which a watch of 10,000 queues
    pays tens of thousands of times a tick; these commands are small.
    """
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg if isinstance(arg, bytes) else (arg if isinstance(arg, str) else repr(arg)).encode()
            out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def as_dict(reply: Any) -> dict[str, Any]:
    """A map reply as a dict: RESP3 gives a dict, RESP2 a flat list of keys and values."""
    if isinstance(reply, dict):
        return {_text(k): v for k, v in reply.items()}
    items = list(reply)
    return {_text(k): v for k, v in zip(items[::2], items[1::2], strict=True)}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class QueueReader:
    """One queue, read in at most two shared rounds (see the module docstring).

    Subclasses set :attr:`name` and :attr:`unknown`, and override the phases
    they need.
    """

    name: str = ""
    """The queue as the user named it (the label of its metrics)."""

    def plan(self, first: Round) -> None:
        """Queue the first round's commands."""

    def plan_more(self, first: Round, second: Round) -> None:
        """Read the first round's answers; queue the second round's commands."""

    def reading(self, first: Round, second: Round) -> Reading | None:
        """The queue's reading from both rounds' answers (None: it cannot tell now)."""
        raise NotImplementedError

    @property
    def unknown(self) -> dict[str, str]:
        """The sample fields this queue can never know, and why."""
        return {}


class RedisBatch:
    """Readers of one Redis client, read together: two round trips in all."""

    def __init__(self, client: Any, readers: Sequence[QueueReader]) -> None:
        self.client = client
        self.readers = list(readers)
        self.round_trips = 0
        """Round trips of the latest :meth:`read` (for the benchmark and tests)."""

    def read(self) -> list[Reading | Exception | None]:
        """Each reader's reading, in order; a reader whose queue cannot be read
        gets its exception instead. A broken connection raises."""
        first, second = Round(), Round()
        failed: dict[int, Exception] = {}
        for i, reader in enumerate(self.readers):
            try:
                reader.plan(first)
            except Exception as exc:
                failed[i] = exc
        first.send(self.client)
        for i, reader in enumerate(self.readers):
            if i not in failed:
                try:
                    reader.plan_more(first, second)
                except Exception as exc:
                    failed[i] = exc
        second.send(self.client)
        self.round_trips = (len(first) > 0) + (len(second) > 0)
        results: list[Reading | Exception | None] = []
        for i, reader in enumerate(self.readers):
            if i in failed:
                results.append(failed[i])
                continue
            try:
                results.append(reader.reading(first, second))
            except Exception as exc:
                results.append(exc)
        return results


class RedisQueueSource(QueueReader):
    """A reader that is also a :class:`~qhealth.Source` of its own: a batch of one."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.problem: str | None = None
        """Why the latest read gave no reading (:class:`CannotTell`), else None."""

    def read(self) -> Reading | None:
        (result,) = RedisBatch(self._client, [self]).read()
        self.problem = str(result) if isinstance(result, CannotTell) else None
        if isinstance(result, CannotTell):
            return None
        if isinstance(result, Exception):
            raise result
        return result

    def close(self) -> None:
        self._client.close()
