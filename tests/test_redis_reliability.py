"""The Redis broker never jams or loses work under hostile input and faults
(issue 13, items 8-14), against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest

from src_pool import PayloadError
from tests.broker_fixtures import RedisFactory, redis_brokers, redis_server
from tests.broker_helpers import drain
from tests.redis_server import RedisServer

__all__ = ["redis_brokers", "redis_server"]  # fixtures used by this module

#: Nesting that makes the standard json module raise RecursionError.
DEEP = 200_000


def nested_json(depth: int) -> bytes:
    return b'{"id":"deep","t":0,"p":' + b"[" * depth + b"]" * depth + b"}"


async def test_a_deeply_nested_message_is_dead_lettered_as_malformed_and_the_batch_flows(
    redis_brokers: RedisFactory, redis_server: RedisServer
) -> None:
    async with redis_brokers(batch_size=10) as broker:
        await broker.put("before")
        redis_server.command("RPUSH", f"{broker.prefix}:q:0", b"0|0|" + nested_json(DEEP))
        await broker.put("after")
        assert await drain(broker, 2) == ["before", "after"]
        async with asyncio.timeout(2):
            while not (letters := await broker.dead_letters()):
                await asyncio.sleep(0.02)
        assert letters[0].envelope is None
        assert "RecursionError" in letters[0].error
        assert broker.stats.malformed_total == 1
        assert broker.in_flight == 0


async def test_a_deeply_nested_payload_is_refused_at_put_with_a_payload_error(
    redis_brokers: RedisFactory,
) -> None:
    payload: list[object] = []
    for _ in range(DEEP):
        payload = [payload]
    async with redis_brokers() as broker:
        with pytest.raises(PayloadError, match="cannot travel as JSON: RecursionError"):
            await broker.put(payload)
        assert (await broker.counts()).waiting == 0
