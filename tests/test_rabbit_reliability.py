"""The RabbitMQ broker never jams or loses work under hostile input and faults
(issue 13, items 8-15), against the machine's RabbitMQ."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from src_pool import AuthenticationFailed, PayloadError, rabbit_session
from src_pool.rabbit_broker import RabbitBroker
from tests.broker_fixtures import RabbitFactory, amqp_url, eventually, rabbit_brokers, raw_publish
from tests.broker_helpers import drain
from tests.integration_brokers import unique
from tests.rabbit_node import short_consumer_timeout_node

__all__ = ["amqp_url", "rabbit_brokers", "short_consumer_timeout_node"]  # fixtures used by this module

#: Nesting that makes the standard json module raise RecursionError.
DEEP = 200_000


# -- item 8: a message that cannot be decoded, whatever the error ----------------------


async def test_a_deeply_nested_message_is_dead_lettered_and_frees_its_prefetch_slot(
    rabbit_brokers: RabbitFactory, amqp_url: str
) -> None:
    async with rabbit_brokers(prefetch=1) as broker:
        await broker.put("before")
        await raw_publish(amqp_url, broker.name, b"[" * DEEP + b"]" * DEEP, message_id="deep-1")
        await broker.put("after")
        # With one prefetch slot, "after" arrives only once the nested message is settled.
        assert await drain(broker, 2) == ["before", "after"]
        await eventually(lambda: broker.stats.malformed_total == 1, 5, "the malformed message")
        await broker.flush()
        [dead] = await broker.dead_letters()
        assert dead.envelope is None
        assert "RecursionError" in dead.error
        assert (await broker.counts()).waiting == 0


async def test_a_deeply_nested_payload_is_refused_at_put_with_a_payload_error(
    rabbit_brokers: RabbitFactory,
) -> None:
    payload: list[object] = []
    for _ in range(DEEP):
        payload = [payload]
    async with rabbit_brokers() as broker:
        with pytest.raises(PayloadError, match="cannot travel as JSON: RecursionError"):
            await broker.put(payload)


# -- item 10: two copies of one message are two deliveries --------------------------------


async def test_two_copies_of_one_message_are_two_deliveries_each_acknowledged(
    rabbit_brokers: RabbitFactory, amqp_url: str
) -> None:
    async with rabbit_brokers() as broker:
        for _ in range(2):  # a publish whose confirm was lost is published again
            await raw_publish(amqp_url, broker.name, b'"twice"', message_id="same-id")
        got: list[Any] = []
        async with asyncio.timeout(5):
            while len(got) < 2:
                got += await broker.fetch(2 - len(got))
        assert [e.id for e in got] == ["same-id", "same-id"]
        for envelope in got:
            broker.ack(envelope)
        await broker.flush()
        assert broker.in_flight == 0
        assert broker.stats.acked_total == 2


# -- item 13: a refused login fails at once, in one line -----------------------------------


async def test_a_wrong_password_fails_at_once_with_one_clear_line(amqp_url: str) -> None:
    wrong = amqp_url.replace("guest:guest@", "guest:hunter2-wrong@")
    broker = RabbitBroker(wrong, unique("auth"), connect_timeout=30.0)
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed) as refused:
        await broker.start()
    assert time.monotonic() - started < 5.0
    text = str(refused.value)
    assert "refused the login" in text and "amqp://guest:***@127.0.0.1:5672//" in text
    assert "hunter2-wrong" not in text and "\n" not in text
    await broker.close()


# -- item 14: put_many is chunked by bytes -------------------------------------------------


async def test_put_many_writes_no_batch_over_max_batch_bytes(
    rabbit_brokers: RabbitFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spy on the real batch writer records what each write carries."""
    writes: list[int] = []
    real = rabbit_session.publish_batch

    async def recording(channel: Any, messages: Any) -> Any:
        writes.append(sum(len(m.body) for m in messages))
        return await real(channel, messages)

    monkeypatch.setattr(rabbit_session, "publish_batch", recording)
    limit = 64 * 1024
    async with rabbit_brokers(max_batch_bytes=limit) as broker:
        await broker.put_many([f"{i:04d}" + "x" * 10_000 for i in range(40)])
        assert len(writes) >= 7
        assert max(writes) <= limit
        assert [p[:4] for p in await drain(broker, 40)] == [f"{i:04d}" for i in range(40)]


# -- item 15: RabbitMQ's consumer_timeout and long jobs ------------------------------------------


async def test_a_per_queue_consumer_timeout_on_a_server_that_ignores_it_is_a_clear_error(
    rabbit_brokers: RabbitFactory,
) -> None:
    broker = rabbit_brokers(consumer_timeout=3600)
    version = await server_version(broker)
    if version >= (3, 12):
        await broker.start()  # honoured: the queue carries its own timeout
        assert broker.topology.queue_arguments()["x-consumer-timeout"] == 3_600_000
        return
    with pytest.raises(ValueError, match=r"raise consumer_timeout in rabbitmq\.conf"):
        await broker.start()


async def server_version(broker: RabbitBroker) -> tuple[int, ...]:
    import aio_pika

    from src_pool.rabbit_topology import server_version as version_of

    connection = await aio_pika.connect(broker._url)
    try:
        version = version_of(connection)
    finally:
        await connection.close()
    assert version is not None
    return version


@pytest.mark.slow
async def test_a_channel_closed_by_consumer_timeout_is_named_counted_and_its_item_comes_back(
    short_consumer_timeout_node: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = RabbitBroker(short_consumer_timeout_node, unique("ct"), connect_timeout=10.0)
    async with broker:
        await broker.put("a long job")
        [held] = await broker.fetch(1)
        await eventually(lambda: broker.stats.consumer_timeouts_total == 1, 10, "the consumer timeout")
        assert "consumer_timeout" in caplog.text and "rabbitmq.conf" in caplog.text
        broker.ack(held)  # too late: RabbitMQ took it back with the channel
        assert broker.stats.stale_total == 1
        [again] = await asyncio.wait_for(broker.fetch(1), 10)
        assert again.payload == "a long job"
        broker.ack(again)
        await broker.flush()
