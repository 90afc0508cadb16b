"""The RabbitMQ broker against the machine's RabbitMQ: order, priorities,
prefetch, reliable delivery, retries, dead letters, payloads, backpressure,
connections.

Every test uses queues of its own name and deletes them (with their retry
and dead-letter queues) afterwards. Without a RabbitMQ on 127.0.0.1:5672
(guest/guest) the tests fail with the command that starts it.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from qhealth.redact import redact_url
from src_pool import AuthenticationFailed, BrokerClosed, BrokerError, Envelope, PayloadError, QueueFull
from src_pool.rabbit_broker import RabbitBroker
from src_pool.rabbit_connect import RabbitUnavailable
from tests.broker_fixtures import eventually, rabbit_brokers, raw_publish
from tests.broker_helpers import drain
from tests.fresh_python import run_python
from tests.integration_brokers import amqp_url, unique
from tests.rabbit_proxy import Proxy
from tests.services import free_port

__all__ = ["amqp_url", "rabbit_brokers"]  # fixtures used by this module

Factory = Callable[..., RabbitBroker]


@pytest.fixture
def make(rabbit_brokers: Factory) -> Factory:
    """Brokers for one fresh queue per test; closed, and the queue's whole
    topology deleted, afterwards."""
    return rabbit_brokers


async def still_on_the_first_session(broker: RabbitBroker) -> None:
    """No channel error: RabbitMQ closes the channel for a bad ack (an
    unknown delivery tag), which would end the session."""
    await asyncio.sleep(0.2)  # a channel.close from RabbitMQ would have arrived
    session = broker._sessions.current
    assert session is not None and session.alive and session.number == 1
    assert broker.stats.stale_total == 0


# -- order and priorities -------------------------------------------------------


async def test_items_come_out_in_the_order_they_were_put(make: Factory) -> None:
    async with make() as broker:
        await broker.put_many(range(1200))  # more than one window of unconfirmed publishes
        assert await drain(broker, 1200) == list(range(1200))


async def test_without_batched_writes_put_many_still_keeps_order(make: Factory) -> None:
    """The one-message-per-write path, for an aiormq without the internals
    that batching relies on."""
    broker = make()
    broker._sessions.batching = False
    async with broker:
        await broker.put_many(range(600))
        assert broker._sessions.current is not None and not broker._sessions.current.batching
        assert await drain(broker, 600) == list(range(600))


async def test_on_a_classic_queue_higher_priorities_come_first_and_each_keeps_its_order(
    make: Factory,
) -> None:
    async with make(queue_type="classic") as producer:
        for i in range(30):
            await producer.put(f"p{i % 3 * 4}-{i}", priority=i % 3 * 4)  # priorities 0, 4, 8 interleaved
    async with make(queue_type="classic") as consumer:
        taken = await drain(consumer, 30)
    expected = [f"p{p}-{i}" for p in (8, 4, 0) for i in range(30) if i % 3 * 4 == p]
    assert taken == expected


async def test_released_items_go_back_to_the_head_in_their_order(make: Factory) -> None:
    async with make() as broker:
        await broker.put_many(range(5))
        taken = [(await broker.fetch(1))[0] for _ in range(3)]
        await broker.release(taken)
        await broker.flush()
        assert await drain(broker, 5) == [0, 1, 2, 3, 4]
        assert taken[0].attempts == 0
        assert broker.stats.released_total == 3


async def test_a_bad_priority_is_refused(make: Factory) -> None:
    async with make() as broker:
        with pytest.raises(ValueError, match="priority must be 0-9"):
            await broker.put("x", priority=10)


# -- prefetch: backpressure from the broker ------------------------------------


@pytest.mark.slow
async def test_a_consumer_never_holds_more_unacked_items_than_its_prefetch(make: Factory) -> None:
    async with make(concurrency=5) as producer:
        await producer.put_many(range(40))
    async with make(concurrency=5) as consumer:
        assert consumer.prefetch == 5
        held = [(await consumer.fetch(1))[0]]
        await eventually(lambda: consumer.buffered + consumer.in_flight == 5, 5, "5 deliveries")
        await asyncio.sleep(0.3)  # RabbitMQ would have sent more by now if it were going to
        assert consumer.buffered + consumer.in_flight == 5
        assert (await consumer.counts()).waiting == 35
        held += [(await consumer.fetch(1))[0], (await consumer.fetch(1))[0]]
        consumer.ack(held[0])
        consumer.ack(held[1])
        await consumer.flush()
        await eventually(lambda: consumer.buffered + consumer.in_flight == 5, 5, "2 more deliveries")
        await asyncio.sleep(0.3)
        assert consumer.buffered + consumer.in_flight == 5
        assert (await consumer.counts()).waiting == 33


async def test_a_producer_only_broker_consumes_nothing(make: Factory) -> None:
    async with make() as producer:
        await producer.put_many(range(3))
        await asyncio.sleep(0.2)
        counts = await producer.counts()
    assert (counts.waiting, counts.consumers) == (3, 0)


# -- blocking and cancellation ----------------------------------------------------


async def test_a_blocked_consumer_wakes_for_a_put_from_another_connection(make: Factory) -> None:
    async with make() as consumer, make() as producer:
        fetching = asyncio.create_task(consumer.fetch(1))
        await asyncio.sleep(0.1)
        assert not fetching.done()
        await producer.put("wake up")
        [envelope] = await asyncio.wait_for(fetching, 5)
        assert envelope.payload == "wake up"


async def test_a_cancelled_fetch_leaves_nothing_taken(make: Factory) -> None:
    async with make() as broker:
        fetching = asyncio.create_task(broker.fetch(1))
        await asyncio.sleep(0.1)
        fetching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetching
        await broker.put("still here")
        assert await drain(broker, 1) == ["still here"]
        assert broker.in_flight == 0


async def test_close_wakes_a_blocked_consumer_with_broker_closed(make: Factory) -> None:
    broker = make()
    await broker.start()
    fetching = asyncio.create_task(broker.fetch(1))
    await asyncio.sleep(0.1)
    await broker.close()
    with pytest.raises(BrokerClosed):
        await asyncio.wait_for(fetching, 5)


async def test_on_a_classic_queue_close_gives_the_prefetched_and_unsettled_items_back_in_order(
    make: Factory,
) -> None:
    """(A quorum queue puts returned messages back in the order they return.)"""
    async with make(concurrency=10, queue_type="classic") as first:
        await first.put_many(range(10))
        [held] = await first.fetch(1)
        await eventually(lambda: first.buffered == 9, 5, "the prefetch buffer to fill")
        assert held.payload == 0
    async with make(queue_type="classic") as second:
        assert await drain(second, 10) == list(range(10))


async def test_acknowledging_twice_is_refused(make: Factory) -> None:
    async with make() as broker:
        await broker.put("once")
        [envelope] = await broker.fetch(1)
        broker.ack(envelope)
        with pytest.raises(ValueError, match="not in flight"):
            broker.ack(envelope)
        with pytest.raises(ValueError, match="not in flight"):
            await broker.release([envelope])


async def test_acks_in_any_order_all_reach_rabbitmq(make: Factory) -> None:
    async with make() as broker:
        await broker.put_many(range(8))
        held = {e.payload: e for e in [(await broker.fetch(1))[0] for _ in range(8)]}
        for i in (
            1,
            3,
            0,
            7,
            2,
            6,
            4,
            5,
        ):  # acks batched as one multiple-ack for a settled prefix, singles after
            broker.ack(held[i])
            if i in (0, 6):
                await broker.flush()
        await broker.flush()
        await still_on_the_first_session(broker)
    async with make() as again:
        assert (await again.counts()).waiting == 0  # nothing came back: every ack arrived


async def test_releases_and_acks_interleaved_settle_exactly_the_right_items(make: Factory) -> None:
    async with make(concurrency=4) as broker:
        await broker.put_many(range(4))
        e0, e1, e2, e3 = [(await broker.fetch(1))[0] for _ in range(4)]
        broker.ack(e1)
        await broker.release([e0])
        broker.ack(e2)
        broker.ack(e3)
        await broker.flush()
        await still_on_the_first_session(broker)
        assert await drain(broker, 1) == [0]
        await asyncio.sleep(0.2)
        assert broker.buffered == 0


# -- retries and dead letters --------------------------------------------------------


async def test_a_retry_comes_back_after_its_delay_with_the_attempt_and_error(make: Factory) -> None:
    async with make() as broker:
        await broker.put({"job": 1})
        [envelope] = await broker.fetch(1)
        started = time.monotonic()
        await broker.retry(replace(envelope, attempts=1), delay=0.4, error="ValueError: flaky")
        assert broker.delayed == 1
        [again] = await asyncio.wait_for(broker.fetch(1), 5)
        waited = time.monotonic() - started
        assert 0.39 <= waited < 1.6  # never early; at most twice as late (the tier's spread)
        assert (again.payload, again.attempts, again.last_error) == ({"job": 1}, 1, "ValueError: flaky")
        assert again.id == envelope.id
        assert again.enqueued_at == pytest.approx(envelope.enqueued_at, abs=1e-5)
        broker.ack(again)
        assert broker.delayed == 0


async def test_a_retried_item_that_fails_again_ends_in_the_dead_letter_queue(make: Factory) -> None:
    async with make() as broker:
        await broker.put("poison")
        [envelope] = await broker.fetch(1)
        await broker.retry(replace(envelope, attempts=1), delay=0.05, error="ValueError: bad 1")
        [again] = await asyncio.wait_for(broker.fetch(1), 5)
        await broker.dead_letter(replace(again, attempts=2), error="ValueError: bad 2")
        await broker.flush()
        counts = await broker.counts()
        [dead] = await broker.dead_letters()
    assert (counts.waiting, counts.delayed, counts.dead) == (0, 0, 1)
    assert dead.error == "ValueError: bad 2"
    assert dead.envelope is not None
    assert (dead.envelope.payload, dead.envelope.attempts) == ("poison", 2)
    assert dead.at == pytest.approx(time.time(), abs=30)


async def test_a_short_retry_does_not_wait_behind_a_long_one(make: Factory) -> None:
    async with make() as broker:
        await broker.put_many(["slow", "fast"])
        slow, fast = (await broker.fetch(1))[0], (await broker.fetch(1))[0]
        started = time.monotonic()
        await broker.retry(slow, delay=30.0, error="E: later")
        await broker.retry(fast, delay=0.1, error="E: soon")
        [back] = await asyncio.wait_for(broker.fetch(1), 5)
        assert back.payload == "fast"
        assert time.monotonic() - started < 1.0
        broker.ack(back)
        assert (await broker.counts()).delayed == 1


async def test_other_items_are_served_while_a_retry_waits(make: Factory) -> None:
    async with make() as broker:
        await broker.put("later")
        [envelope] = await broker.fetch(1)
        await broker.retry(envelope, delay=5.0, error="E: wait")
        await broker.put("now")
        assert await drain(broker, 1, timeout=2) == ["now"]


async def test_dead_letters_keep_the_item_and_its_error_and_are_bounded(make: Factory) -> None:
    async with make(dead_letter_limit=3) as broker:
        await broker.put_many(range(5))
        for _ in range(5):
            [envelope] = await broker.fetch(1)
            await broker.dead_letter(envelope, error=f"Reject: item {envelope.payload}")
        await broker.flush()
        dead = await broker.dead_letters()
        assert [d.error for d in dead] == ["Reject: item 2", "Reject: item 3", "Reject: item 4"]
        assert broker.depth() == 0


async def test_a_malformed_message_goes_to_the_dead_letter_queue_and_the_rest_flows(
    make: Factory, amqp_url: str
) -> None:
    async with make() as broker:
        await broker.put("before")
        await raw_publish(amqp_url, broker.name, b"{not json", message_id="bad-1")
        await broker.put("after")
        assert await drain(broker, 2) == ["before", "after"]
        await eventually(lambda: broker.stats.malformed_total == 1, 5, "the malformed message")
        await broker.flush()
        [dead] = await broker.dead_letters()
    assert dead.body == b"{not json"
    assert dead.envelope is None
    assert dead.error.startswith("MalformedMessage: malformed message (body is not JSON")


async def test_a_json_message_from_another_client_is_welcome(make: Factory, amqp_url: str) -> None:
    async with make() as broker:
        await broker.start()
        sent_at = datetime.now(UTC)
        await raw_publish(
            amqp_url,
            broker.name,
            b'{"from": "elsewhere"}',
            priority=3,
            message_id="theirs-1",
            timestamp=sent_at,
        )
        [envelope] = await asyncio.wait_for(broker.fetch(1), 5)
        broker.ack(envelope)
    assert (envelope.payload, envelope.priority, envelope.attempts) == ({"from": "elsewhere"}, 3, 0)
    assert envelope.id == "theirs-1"
    assert envelope.enqueued_at == pytest.approx(sent_at.timestamp(), abs=1.0)  # AMQP timestamps are seconds


# -- payloads -----------------------------------------------------------------------


async def test_a_payload_over_the_size_limit_is_refused_and_nothing_is_queued(make: Factory) -> None:
    async with make(max_payload_bytes=100) as broker:
        with pytest.raises(PayloadError, match="payload too large: 202 bytes encoded, the limit is 100"):
            await broker.put("x" * 200)
        with pytest.raises(PayloadError):
            await broker.put_many(["ok", "y" * 200])
        assert (await broker.counts()).waiting == 0


@pytest.mark.parametrize("payload", [{1, 2}, float("nan"), object()])
async def test_a_payload_that_is_not_json_is_refused(make: Factory, payload: Any) -> None:
    async with make() as broker:
        with pytest.raises(PayloadError, match="payload cannot travel as JSON"):
            await broker.put(payload)


# -- backpressure -----------------------------------------------------------------------


@pytest.mark.slow
async def test_put_waits_at_the_high_watermark_until_the_low_one(make: Factory) -> None:
    producer = make(capacity=10, low_watermark=3, refresh_interval=0.1)
    async with producer, make(concurrency=1) as consumer:
        await producer.put_many(range(10))
        putting = asyncio.create_task(producer.put("one more"))
        await asyncio.sleep(0.5)
        assert not putting.done()
        await drain(consumer, 5)  # 5 taken, 1 prefetched: 4 ready, still above the low watermark
        await asyncio.sleep(0.5)
        assert not putting.done()
        await drain(consumer, 1)  # 3 ready: the low watermark
        await asyncio.wait_for(putting, 5)


async def test_put_raises_queue_full_after_its_timeout(make: Factory) -> None:
    async with make(capacity=3) as broker:
        await broker.put_many(range(3))
        started = time.monotonic()
        with pytest.raises(QueueFull, match=r"queue .* full after 0\.3 s"):
            await broker.put("no room", timeout=0.3)
        assert time.monotonic() - started < 2
        with pytest.raises(QueueFull):
            await broker.put("no room", timeout=0)


async def test_retries_are_never_refused_by_a_full_queue(make: Factory) -> None:
    async with make(capacity=2) as broker:
        await broker.put_many(range(2))
        [envelope] = await broker.fetch(1)
        await broker.put("fills it again")
        await broker.retry(envelope, delay=0, error="E: again")
        await broker.flush()
        assert (await broker.counts()).waiting + broker.buffered == 3


# -- settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "redis://localhost/0"}, "must look like amqp://"),
        ({"url": "amqp://host:notaport/"}, "cannot be parsed"),
        ({"name": "has space"}, "queue name must be"),
        ({"name": "amq.reserved"}, "reserved by RabbitMQ"),
        ({"concurrency": 0}, "concurrency must be a positive integer"),
        ({"prefetch": 70000}, "at most 65535"),
        ({"capacity": 10, "low_watermark": 10}, "low_watermark must be an integer from 0 to below"),
        ({"capacity": None, "low_watermark": 1}, "low_watermark needs a capacity"),
        ({"refresh_interval": 0}, "refresh_interval must be at least"),
        ({"dead_letter_limit": 0}, "dead_letter_limit must be a positive integer"),
    ],
)
def test_bad_settings_are_refused_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RabbitBroker(**kwargs)


async def test_a_retry_delay_beyond_the_last_tier_is_refused(make: Factory) -> None:
    async with make() as broker:
        await broker.put(1)
        [envelope] = await broker.fetch(1)
        with pytest.raises(ValueError, match="retry delay must be from 0 to"):
            await broker.retry(envelope, delay=60 * 86400, error="E")
        broker.ack(envelope)  # still in flight: the refused retry left it alone


async def test_a_queue_declared_elsewhere_with_other_arguments_is_a_clear_error(
    make: Factory, amqp_url: str
) -> None:
    import aio_pika

    broker = make()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(broker.name, durable=True)  # no priorities, no dead-letter exchange
        with pytest.raises(BrokerError, match="already exists with other settings"):
            await broker.start()


# -- qhealth's view ----------------------------------------------------------------------


async def test_depth_and_consumers_come_from_the_broker_without_io(make: Factory) -> None:
    fast = {"refresh_interval": 0.1, "concurrency": 2}
    async with make(**fast) as producer, make(**fast) as one, make(**fast) as two:
        await producer.put_many(range(6))
        assert producer.depth() == 6  # no round trip: the last refresh plus this process's puts
        await one.fetch(1)
        await two.fetch(1)
        await eventually(lambda: one.buffered + two.buffered == 2, 5, "both prefetches to fill")
        await asyncio.sleep(0.35)  # a few refreshes
        assert producer.depth() == 2
        assert producer.consumers == 2
        assert one.depth() == two.depth() == 2


async def test_depth_is_none_once_the_connection_is_lost(make: Factory, amqp_url: str) -> None:
    async with Proxy(amqp_url) as proxy, make(url=proxy.url, refresh_interval=0.1) as broker:
        await broker.put(1)
        assert broker.depth() == 1
        proxy.stop_accepting()
        await proxy.cut()
        await eventually(lambda: broker.depth() is None, 3, "depth to become unknown")


# -- connections -------------------------------------------------------------------------


async def test_a_waiting_consumer_survives_a_cut_connection(make: Factory, amqp_url: str) -> None:
    async with Proxy(amqp_url) as proxy, make(url=proxy.url) as consumer, make() as producer:
        fetching = asyncio.create_task(consumer.fetch(1))
        await asyncio.sleep(0.2)
        await proxy.cut()
        await asyncio.sleep(0.2)
        await producer.put("after the cut")
        [envelope] = await asyncio.wait_for(fetching, 10)
        assert envelope.payload == "after the cut"
        assert consumer.stats.reconnects_total >= 1
        consumer.ack(envelope)


async def test_items_in_flight_when_the_connection_drops_are_delivered_again(
    make: Factory, amqp_url: str
) -> None:
    async with Proxy(amqp_url) as proxy, make(url=proxy.url, concurrency=3) as consumer:
        await consumer.put_many(["a", "b", "c"])
        held = [(await consumer.fetch(1))[0] for _ in range(3)]
        await proxy.cut()
        await eventually(lambda: consumer.stats.reconnects_total >= 1, 10, "a reconnect")
        for envelope in held:
            consumer.ack(envelope)  # too late: its channel is gone, so the ack is skipped
        assert consumer.stats.stale_total == 3
        assert sorted(await drain(consumer, 3, timeout=10)) == ["a", "b", "c"]


@pytest.mark.slow
async def test_a_put_waits_for_the_reconnect(make: Factory, amqp_url: str) -> None:
    async with Proxy(amqp_url) as proxy, make(url=proxy.url) as producer, make() as consumer:
        await producer.put("first")
        proxy.stop_accepting()
        await proxy.cut()
        putting = asyncio.create_task(producer.put("second"))
        await asyncio.sleep(0.5)
        assert not putting.done()
        proxy.accept_again()
        await asyncio.wait_for(putting, 10)
        assert await drain(consumer, 2) == ["first", "second"]


@pytest.mark.slow
async def test_a_put_many_cut_off_midway_publishes_every_item_at_least_once(
    make: Factory, amqp_url: str
) -> None:
    async with Proxy(amqp_url) as proxy, make(url=proxy.url, capacity=None) as producer:
        putting = asyncio.create_task(producer.put_many(range(5000)))
        await eventually(lambda: producer.stats.put_total >= 500, 10, "the first batch to be confirmed")
        assert not putting.done()
        await proxy.cut()
        await asyncio.wait_for(putting, 20)
        assert producer.stats.reconnects_total >= 1
    async with make(concurrency=100) as consumer:
        waiting = (await consumer.counts()).waiting
        taken = await drain(consumer, waiting, timeout=20)
    assert set(taken) == set(range(5000))  # duplicates allowed (confirms lost with the connection)
    assert len(taken) - 5000 <= 500  # at most the batch that was on the wire


async def test_a_password_never_appears_in_repr_errors_or_logs(
    amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = amqp_url.replace("guest:guest@", "guest:wrong-pw-123@")
    assert redact_url(wrong) == "amqp://guest:***@127.0.0.1:5672//"
    caplog.set_level(logging.DEBUG)
    broker = RabbitBroker(wrong, unique("rb"), connect_timeout=0.5)
    assert "wrong-pw-123" not in repr(broker) + broker.url
    with pytest.raises(AuthenticationFailed) as raised:  # a refused login is no outage: at once
        await broker.put(1)
    await broker.close()
    text = f"{raised.value!r} {raised.value} {caplog.text}"
    assert "amqp://guest:***@127.0.0.1:5672//" in str(raised.value)
    assert "wrong-pw-123" not in text


async def test_an_unreachable_server_gives_a_clear_error_after_the_connect_timeout() -> None:
    broker = RabbitBroker(f"amqp://u:pw@127.0.0.1:{free_port()}/", unique("rb"), connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(RabbitUnavailable, match=r"RabbitMQ at amqp://u:\*\*\*@127\.0\.0\.1:\d+/ unreachable"):
        await broker.put(1)
    assert time.monotonic() - started < 3
    await broker.close()


# -- packaging ------------------------------------------------------------------------------


def test_importing_src_pool_does_not_import_aio_pika() -> None:
    code = "import sys, src_pool, src_pool.rabbit_broker; print('aio_pika' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_aio_pika_the_error_says_which_extra_to_install() -> None:
    code = (
        "import asyncio\n"
        "from src_pool.rabbit_broker import RabbitBroker\n"
        "try:\n    asyncio.run(RabbitBroker().start())\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = run_python(code, without=("aio_pika", "aiormq"))
    assert out.returncode == 0, out.stderr
    assert "pip install 'qhealth[rabbitmq]'" in out.stdout


def test_an_envelope_from_elsewhere_cannot_be_settled(make: Factory) -> None:
    broker = make()
    with pytest.raises(ValueError, match="not delivered by this broker"):
        broker.ack(Envelope("x", 1))
