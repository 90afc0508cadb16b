"""The pool on the RabbitMQ broker: same pool, same qhealth instrumentation.

What the pool does is specified in test_pool.py on the in-memory broker;
these tests check that it holds on RabbitMQ, where settling goes through
the network: processing, joining, retries through the retry queues, dead
letters, handing items back on stop, and qhealth's depth read from the
broker.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from qhealth import Monitor
from src_pool import Pool, Reject, RetryPolicy
from src_pool.rabbit_broker import RabbitBroker
from tests.integration_brokers import amqp_url, unique

__all__ = ["amqp_url"]  # fixtures used by this module

Factory = Callable[..., RabbitBroker]


@pytest.fixture
async def make(amqp_url: str) -> AsyncIterator[Factory]:
    """Brokers on one fresh queue; closed and deleted (whole topology) afterwards."""
    made: list[RabbitBroker] = []
    name = unique("rp")

    def factory(**kwargs: Any) -> RabbitBroker:
        broker = RabbitBroker(amqp_url, name, connect_timeout=10.0, **kwargs)
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        await broker.close()
    await RabbitBroker(amqp_url, name).delete()


def make_pool(handler: Any, broker: RabbitBroker, **kwargs: Any) -> Pool:
    kwargs.setdefault("monitor", False)
    kwargs.setdefault("rng", random.Random(1))
    kwargs.setdefault("concurrency", broker.concurrency)
    return Pool(handler, broker=broker, **kwargs)


async def test_every_item_is_processed_once_and_join_returns(make: Factory) -> None:
    seen: list[int] = []

    async def handle(item: int) -> None:
        await asyncio.sleep(0)
        seen.append(item)

    broker = make(concurrency=8)
    async with broker, make_pool(handle, broker) as pool:
        await pool.submit_many(range(300))
        await pool.join(timeout=20)
        assert sorted(seen) == list(range(300))
        await broker.flush()
        counts = await broker.counts()
    assert (counts.waiting, counts.delayed, counts.dead) == (0, 0, 0)
    assert broker.stats.acked_total == 300


async def test_the_monitor_sees_the_backlog_rabbitmq_holds_and_the_busy_workers(make: Factory) -> None:
    now = [0.0]
    monitor = Monitor(interval=1.0, clock=lambda: now[0])
    release = asyncio.Event()

    async def handle(item: int) -> None:
        await release.wait()

    async with make() as producer:
        await producer.put_many(range(50))
    broker = make(concurrency=3, refresh_interval=0.1)
    async with broker, make_pool(handle, broker, monitor=monitor, name=broker.name) as pool:
        await asyncio.sleep(0.5)  # the workers take 3 (the prefetch); the refresher reads the rest
        now[0] = 2.0
        sample = monitor.tick()[broker.name].sample
        assert (sample.depth, sample.workers, sample.busy) == (47, 3, 3)
        release.set()
        await pool.join(timeout=20)
        now[0] = 4.0
        sample = monitor.tick()[broker.name].sample
    assert (sample.depth, sample.busy, sample.processed_total) == (0, 0, 50)


async def test_a_failing_item_is_retried_through_rabbitmq_then_dead_lettered(make: Factory) -> None:
    calls: Counter[str] = Counter()

    async def handle(item: str) -> None:
        calls[item] += 1
        if item == "poison":
            raise ValueError("cannot handle it")

    # hold_up_to_s=0: every retry goes back to the broker's retry queues
    policy = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.1, hold_up_to_s=0.0)
    broker = make(concurrency=2)
    async with broker, make_pool(handle, broker, retry=policy) as pool:
        await pool.submit_many(["fine", "poison"])
        await pool.join(timeout=20)
        await broker.flush()
        [dead] = await broker.dead_letters()
    assert calls == {"fine": 1, "poison": 3}
    assert broker.stats.retried_total == 2
    assert dead.envelope is not None
    assert (dead.envelope.payload, dead.envelope.attempts) == ("poison", 3)
    assert dead.error == "ValueError: cannot handle it"


async def test_a_rejected_item_is_dead_lettered_at_once(make: Factory) -> None:
    async def handle(item: str) -> None:
        raise Reject("malformed order")

    broker = make(concurrency=1)
    async with broker, make_pool(handle, broker) as pool:
        await pool.submit("order")
        await pool.join(timeout=20)
        await broker.flush()
        [dead] = await broker.dead_letters()
    assert dead.error == "Reject: malformed order"


async def test_stopping_the_pool_hands_unfinished_items_back_to_rabbitmq_in_order(make: Factory) -> None:
    started = asyncio.Event()

    async def stuck(item: int) -> None:
        started.set()
        await asyncio.Event().wait()

    broker = make(concurrency=2)
    async with broker:
        pool = make_pool(stuck, broker)
        await pool.submit_many(range(10))
        await pool.start()
        await asyncio.wait_for(started.wait(), 10)
        report = await pool.stop(drain_timeout=0.1)
        assert report.released == 2
    taken: list[int] = []
    async with make() as other:
        async with asyncio.timeout(10):
            while len(taken) < 10:
                for envelope in await other.fetch(10):
                    taken.append(envelope.payload)
                    other.ack(envelope)
    assert taken == list(range(10))
