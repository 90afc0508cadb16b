"""The RabbitMQ broker on quorum queues (its default), on the machine's
RabbitMQ: a single node runs quorum queues too. What differs from classic
queues: RabbitMQ counts the returns of every delivery (``x-delivery-count``,
read as ``Envelope.lost``) and dead-letters a message past ``delivery_limit``,
so a poison item that kills its consumer no longer loops; priorities are
gone before RabbitMQ 4.0 (two levels from 4.0)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from src_pool import BrokerError, Envelope, Pool
from src_pool.rabbit_broker import RabbitBroker
from src_pool.rabbit_topology import server_version
from tests.broker_fixtures import RabbitFactory, amqp_url, rabbit_brokers
from tests.broker_helpers import drain
from tests.rabbit_proxy import Proxy

__all__ = ["amqp_url", "rabbit_brokers"]  # fixtures used by this module


async def take(broker: RabbitBroker, n: int, timeout: float = 10.0) -> list[Envelope]:
    got: list[Envelope] = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            got += await broker.fetch(n - len(got))
    return got


async def version(url: str) -> tuple[int, ...]:
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        found = server_version(connection)
    finally:
        await connection.close()
    assert found is not None
    return found


async def test_quorum_is_the_default_and_a_classic_broker_on_the_same_queue_is_told_why_not(
    rabbit_brokers: RabbitFactory,
) -> None:
    async with rabbit_brokers() as broker:
        assert broker.topology.queue_arguments()["x-queue-type"] == "quorum"
        await broker.put("x")
    with pytest.raises(BrokerError, match="already exists with other settings"):
        await rabbit_brokers(queue_type="classic").start()


async def test_quorum_a_delivery_returned_unsettled_comes_back_with_its_return_counted(
    rabbit_brokers: RabbitFactory,
) -> None:
    async with rabbit_brokers() as first:
        await first.put("job")
        await take(first, 1)  # held, never settled: returned as the connection closes
    async with rabbit_brokers() as second:
        [again] = await take(second, 1)
        assert (again.payload, again.attempts, again.lost) == ("job", 0, 1)
        second.ack(again)


async def test_quorum_a_poison_item_whose_consumer_keeps_dying_ends_in_the_dead_letters(
    rabbit_brokers: RabbitFactory,
) -> None:
    """The classic-queue crash loop is gone: past delivery_limit returns,
    RabbitMQ dead-letters the message itself, and says why."""
    limit = 2
    async with rabbit_brokers(delivery_limit=limit) as producer:
        await producer.put("crashes its worker")
    for _ in range(limit + 1):
        async with rabbit_brokers(delivery_limit=limit) as victim:
            await take(victim, 1)  # dies holding it
    async with rabbit_brokers(delivery_limit=limit) as reader:
        async with asyncio.timeout(10):
            while (await reader.counts()).dead == 0:
                await asyncio.sleep(0.05)
        [dead] = await reader.dead_letters()
        assert dead.envelope is not None and dead.envelope.payload == "crashes its worker"
        assert dead.error.startswith("DeliveryLimit:")
        counts = await reader.counts()
        assert (counts.waiting, counts.dead) == (0, 1)


async def test_quorum_priorities_keep_fifo_order_before_rabbitmq_4_and_two_levels_from_it(
    rabbit_brokers: RabbitFactory, amqp_url: str
) -> None:
    async with rabbit_brokers() as broker:
        await broker.put("low", priority=0)
        await broker.put("high", priority=9)
        taken = await drain(broker, 2)
    if await version(amqp_url) >= (4, 0):
        assert taken == ["high", "low"]  # 5-9 before 0-4
    else:
        assert taken == ["low", "high"]  # no priorities on quorum queues before 4.0


async def test_quorum_a_retry_comes_back_after_its_delay_with_its_attempt_and_error(
    rabbit_brokers: RabbitFactory,
) -> None:
    async with rabbit_brokers() as broker:
        await broker.put("flaky")
        [envelope] = await take(broker, 1)
        await broker.retry(replace(envelope, attempts=1), delay=0.2, error="TimeoutError: slow")
        [again] = await take(broker, 1)
        assert (again.payload, again.attempts, again.last_error) == ("flaky", 1, "TimeoutError: slow")
        broker.ack(again)


async def test_quorum_a_dead_letter_of_the_pool_keeps_its_error(rabbit_brokers: RabbitFactory) -> None:
    async with rabbit_brokers() as broker:
        await broker.put("bad")
        [envelope] = await take(broker, 1)
        await broker.dead_letter(envelope, error="Reject: bad input")
        [dead] = await broker.dead_letters()
        assert (dead.error, dead.envelope.payload if dead.envelope else None) == ("Reject: bad input", "bad")


async def test_quorum_released_items_come_back_first_in_the_order_they_were_released(
    rabbit_brokers: RabbitFactory,
) -> None:
    async with rabbit_brokers(concurrency=1) as broker:
        await broker.put_many(["a", "b", "c"])
        [a] = await take(broker, 1)
        await broker.release([a])
        assert await drain(broker, 3) == ["a", "b", "c"]


async def test_quorum_a_connection_cut_mid_batch_loses_no_item(
    rabbit_brokers: RabbitFactory, amqp_url: str
) -> None:
    async with Proxy(amqp_url) as proxy, rabbit_brokers(url=proxy.url, concurrency=20) as consumer:
        await consumer.put_many(range(100))
        first = await take(consumer, 20)
        for envelope in first[:10]:
            consumer.ack(envelope)
        await proxy.cut()  # ten acks may or may not have reached RabbitMQ, ten never settled
        seen = {e.payload for e in first[:10]}
        async with asyncio.timeout(20):
            while len(seen) < 100:
                for envelope in await consumer.fetch(20):
                    seen.add(envelope.payload)
                    consumer.ack(envelope)
        assert seen == set(range(100))
        assert consumer.stats.reconnects_total >= 1


async def test_quorum_a_pool_processes_every_item_once_and_join_returns(
    rabbit_brokers: RabbitFactory,
) -> None:
    done: list[Any] = []

    async def handle(item: int) -> None:
        done.append(item)

    broker = rabbit_brokers(concurrency=10)
    async with broker, Pool(handle, broker=broker, concurrency=10, monitor=False, name=broker.name) as pool:
        await pool.submit_many(range(300))
        await pool.join(timeout=30)
    assert sorted(done) == list(range(300))
