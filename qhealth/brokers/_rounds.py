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

On a Redis Cluster the keys of different queues live in different slots, on
different masters: each round is then one pipeline per master, all written
before any reply is read, so a tick still costs two round trips (in parallel
across the masters), and no command spans two slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._source import Reading
from ._redis import is_cluster_client


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
        self._cluster = False

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
        connection the server closed).

        On a Redis Cluster (redis-py's ``RedisCluster``) the commands go to the
        masters that own their keys, one write to each, all written before any
        reply is read: still one round trip, in parallel (see
        :func:`_cluster_exchange`)."""
        if not self._calls:
            return
        from redis.exceptions import ConnectionError as RedisConnectionError

        self._cluster = is_cluster_client(client)
        if self._cluster:
            self._results = _cluster_exchange(client, self._calls)
            return
        try:
            self._results = _exchange(client.connection_pool, self._calls)
        except RedisConnectionError:
            self._results = _exchange(client.connection_pool, self._calls)

    def get(self, handle: int) -> Any:
        """The reply of a queued command; a command Redis refused raises its error."""
        value = self._results[handle]
        if isinstance(value, Exception):
            raise value if self._cluster else _explained(value)
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


def _explained(error: Exception) -> Exception:
    """A ``MOVED`` reply to a client of one server means the server is a node of
    a Redis Cluster and the key lives on another node: say what to do."""
    if type(error).__name__ != "MovedError":
        return error
    from redis.exceptions import ResponseError

    return ResponseError(
        f"MOVED {str(error).removeprefix('MOVED ')}: the server is a node of a Redis Cluster and the key "
        "lives on another node; watch it with a redis+cluster:// URL"
    )


#: Where the key sits in the commands the readers send (after the command name):
#: ``XINFO GROUPS key``, ``EVALSHA sha numkeys key ...``; elsewhere, first.
_KEY_AT = {"XINFO": 2, "EVALSHA": 3, "EVAL": 3}


#: Each key's hash slot, which never changes: computed once, not on every tick.
#: Cleared when it holds this many (keys of jobs come and go).
_SLOTS: dict[Any, int] = {}
MAX_SLOTS_KEPT = 1_000_000


def _cluster_exchange(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send commands to the masters of a Redis Cluster that own their keys.

    Each command goes to the master of its key's slot (from the client's slot
    map); each master gets its commands in one write on one of its connections,
    and every write happens before the first reply is read, so a round costs
    one round trip in parallel, whatever the number of masters. No ``MULTI``:
    the keys of different queues live in different slots, and a read needs no
    transaction. Replies come back in the order of ``commands``.

    A cluster that changed under the watch is followed once per round: a
    ``MOVED`` reply (a slot moved, a replica promoted) or a master that cannot
    be reached refreshes the slot map and sends the commands concerned again
    (one more round trip); an ``ASK`` reply (a slot being migrated) sends the
    command to the node named, after ``ASKING``. What still fails stays an
    error in its place: those queues are not read this tick, the others are.
    Only when no master answers at all does the round raise.
    """
    from redis.exceptions import AskError, MovedError

    results: list[Any] = [None] * len(commands)
    todo: dict[int, Any] = dict.fromkeys(range(len(commands)))
    for attempt in range(2):
        unreachable, error = _send_by_node(client, commands, todo, results)
        if error is not None and len(unreachable) == len(commands):
            raise error  # not one master answered: the cluster is unreachable
        if attempt == 1:
            break
        moved = [i for i in todo if isinstance(results[i], MovedError)]
        asked = {i: results[i].node_addr for i in todo if type(results[i]) is AskError}
        if not (moved or asked or unreachable):
            break
        if moved or unreachable:
            client.nodes_manager.initialize()
        todo = dict.fromkeys([*moved, *unreachable])
        for i, (host, port) in asked.items():
            todo[i] = client.nodes_manager.get_node(host=host, port=port)
    return results


def _send_by_node(
    client: Any, commands: list[tuple[Any, ...]], todo: dict[int, Any], results: list[Any]
) -> tuple[list[int], BaseException | None]:
    """One round to the masters: the commands ``todo`` names (each mapped to
    the node an ``ASK`` named, else None: its slot's master), replies into
    ``results``. Returns the commands whose master could not be reached (their
    result is the error), and that error."""
    from redis.crc import key_slot
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    lost_connection = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
    nodes = client.nodes_manager
    owners = nodes.slots_cache  # slot -> [master, replicas...]; replaced whole when refreshed
    slots = _SLOTS
    if len(slots) > MAX_SLOTS_KEPT:
        slots.clear()
    batches: dict[str, tuple[Any, list[int], list[tuple[Any, ...]]]] = {}
    for i, asked in todo.items():
        command = commands[i]
        node = asked
        if node is None:
            key = command[_KEY_AT.get(command[0], 1)] if len(command) > 1 else ""
            slot = slots.get(key)
            if slot is None:
                slot = slots[key] = key_slot(key if isinstance(key, bytes) else str(key).encode())
            held = owners.get(slot)
            node = held[0] if held else nodes.get_node_from_slot(slot)  # uncovered: its error says so
        batch = batches.get(node.name)
        if batch is None:
            batch = batches[node.name] = (node, [], [])
        if asked is not None:
            batch[1].append(-1)  # the reply to ASKING: dropped
            batch[2].append(("ASKING",))
        batch[1].append(i)
        batch[2].append(command)
    sent: list[tuple[Any, Any, list[int]]] = []
    unreachable: list[int] = []
    error: BaseException | None = None
    for node, indices, batch_commands in batches.values():
        pool = client.get_redis_connection(node).connection_pool
        connection = None
        try:
            connection = pool.get_connection()
            connection.send_packed_command([pack(batch_commands)])
        except BaseException as exc:
            if connection is not None:
                connection.disconnect()
                pool.release(connection)
            if not isinstance(exc, lost_connection):
                for other_pool, other, _ in sent:  # replies unread: these connections cannot be reused
                    other.disconnect()
                    other_pool.release(other)
                raise
            unreachable += [i for i in indices if i >= 0]
            error = exc
            continue
        sent.append((pool, connection, indices))
    failure: BaseException | None = None
    for pool, connection, indices in sent:
        try:
            for i in indices:
                try:
                    reply = connection.read_response()
                except ResponseError as exc:
                    reply = exc
                if i >= 0:
                    results[i] = reply
        except BaseException as exc:
            connection.disconnect()  # a half-read reply must not reach the next user
            if not isinstance(exc, lost_connection):
                failure = failure or exc
            else:
                unreachable += [i for i in indices if i >= 0]
                error = exc
        finally:
            pool.release(connection)
    if failure is not None:
        raise failure
    for i in unreachable:
        results[i] = error
    return unreachable, error


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
