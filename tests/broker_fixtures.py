"""Factories of real Redis and RabbitMQ brokers for the broker tests (a fixture
module: import the fixtures a test module uses, with ``__all__`` naming them).

``redis_brokers(**settings)`` makes brokers on the session's redis-server and
``rabbit_brokers(**settings)`` on the machine's RabbitMQ; both give every test
one fresh queue name (pass ``name=`` for another), close every broker they
made afterwards, and the RabbitMQ one deletes the queues' whole topology.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from src_pool.rabbit_broker import RabbitBroker
from src_pool.redis_broker import RedisBroker
from tests.integration_brokers import amqp_url, unique
from tests.redis_server import RedisServer, redis_server, unique_name

__all__ = ["amqp_url", "redis_server"]  # the fixtures these fixtures need

RedisFactory = Callable[..., RedisBroker]
RabbitFactory = Callable[..., RabbitBroker]


@pytest.fixture
async def redis_brokers(redis_server: RedisServer) -> AsyncIterator[RedisFactory]:
    made: list[RedisBroker] = []
    name = unique_name("b")

    def factory(**kwargs: Any) -> RedisBroker:
        kwargs.setdefault("name", name)
        broker = RedisBroker(kwargs.pop("url", redis_server.url), **kwargs)
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        await broker.close()


@pytest.fixture
async def rabbit_brokers(amqp_url: str) -> AsyncIterator[RabbitFactory]:
    made: list[RabbitBroker] = []
    name = unique("rb")

    def factory(**kwargs: Any) -> RabbitBroker:
        kwargs.setdefault("name", name)
        kwargs.setdefault("connect_timeout", 10.0)
        broker = RabbitBroker(kwargs.pop("url", amqp_url), **kwargs)
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        await broker.close()
    for queue in {b.name for b in made}:
        await RabbitBroker(amqp_url, queue).delete()


async def eventually(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Return once ``predicate()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


async def raw_publish(url: str, queue: str, body: bytes, **props: Any) -> None:
    """Publish as another AMQP client would (no envelope headers)."""
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(aio_pika.Message(body, **props), routing_key=queue)


async def stall(broker: RedisBroker) -> None:
    """Stop a Redis broker's heartbeat while it keeps its connection and its
    fetcher: a consumer whose event loop was blocked past the visibility
    timeout, as the reaper sees it."""
    task = broker._upkeep_task
    assert task is not None
    task.cancel()
    await asyncio.wait([task], timeout=2.0)


async def abandon(broker: RedisBroker) -> None:
    """Make a Redis broker behave like a process that died: no heartbeat, no
    settling, no goodbye, its connections cut (what SIGKILL does, within one
    test process)."""
    broker._closed = True  # close() becomes a no-op: nothing is tidied up
    tasks = [t for t in (broker._pump_task, broker._upkeep_task, broker._acks.task) if t is not None]
    for task in tasks:
        task.cancel()
    # Let them end before the connections go: a task still unwinding could
    # otherwise open a fresh connection on a client already closed.
    if tasks:
        await asyncio.wait(tasks, timeout=2.0)
    await broker._disconnect()
