"""Reading what Redis holds for one queue: counts and dead letters.

For operators and tests, never on the hot path (the broker's own
``depth()`` costs no round trip): a few pipelined reads, bounded by the
number of consumers and by ``limit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from . import redis_scripts as lua
from .redis_codec import RedisDeadLetter, dead_letter_entry

if TYPE_CHECKING:
    from redis.asyncio import Redis


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """What the queue holds right now, across every consumer."""

    waiting: int
    delayed: int
    in_flight: int
    dead: int
    consumers: int


async def read_counts(client: Redis, prefix: str, keys: list[str]) -> QueueCounts:
    """Waiting, delayed, in flight (every consumer's processing list) and dead items."""
    pipe = client.pipeline(transaction=False)
    for key in keys[: lua.QUEUE_LEVELS]:
        pipe.llen(key)
    pipe.zcard(keys[lua.DELAYED - 1])
    pipe.llen(keys[lua.DEAD - 1])
    pipe.zrange(keys[lua.CONSUMERS - 1], 0, -1)
    *levels, delayed, dead, consumers = await pipe.execute()
    pipe = client.pipeline(transaction=False)
    for consumer in consumers:
        pipe.llen(lua.processing_key(prefix, consumer.decode()))
    held = await pipe.execute()
    return QueueCounts(sum(levels), delayed, sum(held), dead, len(consumers))


async def read_dead_letters(client: Redis, keys: list[str], limit: int) -> list[RedisDeadLetter]:
    """The newest ``limit`` dead letters, oldest first."""
    entries = cast(list[bytes], await client.lrange(keys[lua.DEAD - 1], 0, limit - 1))
    return [dead_letter_entry(entry) for entry in reversed(entries)]
