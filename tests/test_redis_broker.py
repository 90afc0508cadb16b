"""The Redis broker against a real redis-server: order, priorities, reliable
delivery, retries, dead letters, payloads, backpressure, connections.

The "Redis queue" defects of ``shared/seed-defects.md`` are regression tests
here (marked "seed:" in their docstrings).
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from qhealth.redact import redact_url
from src_pool import BrokerClosed, Envelope, PayloadError, QueueFull
from src_pool.redis_broker import RedisBroker
from src_pool.redis_connect import RedisUnavailable
from tests.broker_fixtures import RedisFactory, abandon, redis_brokers
from tests.broker_helpers import drain
from tests.redis_server import RedisServer, redis_factory, redis_server, unique_name

__all__ = ["redis_brokers", "redis_factory", "redis_server"]  # fixtures used by this module


@pytest.fixture
def make(redis_brokers: RedisFactory) -> RedisFactory:
    """Brokers on the session's server, one fresh queue per test, closed afterwards."""
    return redis_brokers


# -- order and priorities -------------------------------------------------------


async def test_items_come_out_in_the_order_they_were_put(make: Callable[..., RedisBroker]) -> None:
    """seed: RPUSH + BRPOP is a stack (pushed 1..5, popped 5..1)."""
    async with make() as broker:
        for i in range(1, 6):
            await broker.put(i)
        assert await drain(broker, 5) == [1, 2, 3, 4, 5]


async def test_put_many_keeps_order_across_chunks(make: Callable[..., RedisBroker]) -> None:
    async with make(batch_size=1000) as broker:
        await broker.put_many(range(1200))
        assert await drain(broker, 1200) == list(range(1200))


async def test_a_higher_priority_put_later_is_taken_first(make: Callable[..., RedisBroker]) -> None:
    """seed: "priority" items pushed with LPUSH are popped last."""
    async with make() as broker:
        await broker.put_many(["low-1", "low-2"])
        await broker.put("urgent", priority=9)
        await broker.put("medium", priority=5)
        assert await drain(broker, 4) == ["urgent", "medium", "low-1", "low-2"]


async def test_released_items_go_back_to_the_head_in_their_order(make: Callable[..., RedisBroker]) -> None:
    async with make() as broker:
        await broker.put_many(range(5))
        taken = await broker.fetch(3)
        await broker.release(taken)
        assert await drain(broker, 5) == [0, 1, 2, 3, 4]
        assert taken[0].attempts == 0


async def test_a_bad_priority_is_refused(make: Callable[..., RedisBroker]) -> None:
    async with make() as broker:
        with pytest.raises(ValueError, match="priority must be 0-9"):
            await broker.put("x", priority=10)


# -- blocking, not polling --------------------------------------------------------


def _command_calls(server: RedisServer) -> int:
    stats = server.command("INFO", "commandstats").decode()
    return sum(int(part.split("=")[1]) for line in stats.splitlines() if line.startswith("cmdstat_")
               for part in line.split(":")[1].split(",") if part.startswith("calls="))  # fmt: skip


@pytest.mark.slow
async def test_an_idle_consumer_makes_no_round_trips_while_it_waits(
    make: Callable[..., RedisBroker], redis_server: RedisServer
) -> None:
    """seed: ``wait_for(get(), timeout=1)`` polls (10 idle workers, 50 calls in 5 s)."""
    async with make(visibility_timeout=60.0) as broker:
        waiting = [asyncio.create_task(broker.fetch(1)) for _ in range(10)]
        await asyncio.sleep(0.2)
        before = _command_calls(redis_server)
        await asyncio.sleep(1.5)
        after = _command_calls(redis_server)
        # INFO itself counts as one call; nothing else may have reached the server.
        assert after - before <= 1, f"{after - before} commands while idle"
        await broker.put("wake")
        done, _ = await asyncio.wait(waiting, timeout=2, return_when=asyncio.FIRST_COMPLETED)
        assert [e.payload for t in done for e in t.result()] == ["wake"]
        for task in waiting:
            task.cancel()


async def test_a_blocked_consumer_wakes_for_a_put_from_another_process(
    make: Callable[..., RedisBroker],
) -> None:
    async with make() as consumer, make() as producer:
        fetching = asyncio.create_task(consumer.fetch(1))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await producer.put({"n": 1})
        [envelope] = await asyncio.wait_for(fetching, 2)
        assert envelope.payload == {"n": 1}
        assert time.monotonic() - started < 0.5


async def test_a_retry_due_in_half_a_second_wakes_a_blocked_consumer_on_time(
    make: Callable[..., RedisBroker],
) -> None:
    """seed: ``timeout=int(0.5)`` becomes 0, "block forever"."""
    async with make(visibility_timeout=60.0) as broker:
        await broker.put("again")
        [envelope] = await broker.fetch(1)
        envelope.attempts = 1
        await broker.retry(envelope, delay=0.5, error="ValueError: try later")
        started = time.monotonic()
        [back] = await asyncio.wait_for(broker.fetch(1), 3)
        waited = time.monotonic() - started
        assert 0.45 <= waited < 1.5
        assert (back.payload, back.attempts, back.last_error) == ("again", 1, "ValueError: try later")


async def test_a_retry_scheduled_while_every_consumer_waits_is_delivered_when_due(
    make: Callable[..., RedisBroker],
) -> None:
    """A consumer that blocked before the retry existed must still wake for it
    (not at the next heartbeat, seconds later)."""
    async with make(visibility_timeout=60.0) as broker:
        await broker.put("flaky")
        [envelope] = await broker.fetch(1)
        waiting = asyncio.create_task(broker.fetch(1))  # blocks: nothing queued, nothing delayed
        await asyncio.sleep(0.1)
        envelope.attempts = 1
        await broker.retry(envelope, delay=0.3, error="E")
        [again] = await asyncio.wait_for(waiting, 2)
        assert (again.payload, again.attempts) == ("flaky", 1)


async def test_the_next_delivery_of_a_retried_item_can_be_settled_even_if_it_overtook_the_retry(
    make: Callable[..., RedisBroker],
) -> None:
    async with make() as broker:
        await broker.put("item")
        [first] = await broker.fetch(1)
        waiting = asyncio.create_task(broker.fetch(1))
        await asyncio.sleep(0.05)
        await broker.retry(first, delay=0, error="E")  # redelivered at once, maybe before this returns
        [second] = await asyncio.wait_for(waiting, 2)
        assert second.id == first.id
        broker.ack(second)
        await broker.flush()
        assert broker.in_flight == 0
        assert (await broker.counts()).in_flight == 0
        with pytest.raises(ValueError, match="not in flight"):
            broker.ack(first)


async def test_a_cancelled_fetch_leaves_nothing_taken(make: Callable[..., RedisBroker]) -> None:
    async with make() as broker:
        fetching = asyncio.create_task(broker.fetch(1))
        await asyncio.sleep(0.05)
        fetching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetching
        await broker.put("kept")
        assert await drain(broker, 1) == ["kept"]
        assert broker.in_flight == 0


async def test_close_wakes_a_blocked_consumer_with_broker_closed(make: Callable[..., RedisBroker]) -> None:
    broker = make()
    await broker.start()
    fetching = asyncio.create_task(broker.fetch(1))
    await asyncio.sleep(0.05)
    await broker.close()
    with pytest.raises(BrokerClosed):
        await asyncio.wait_for(fetching, 2)


async def test_close_gives_the_prefetched_items_back_to_the_head(make: Callable[..., RedisBroker]) -> None:
    first = make(prefetch=10)
    await first.put_many(range(5))
    [envelope] = await first.fetch(1)  # takes all five: one handed out, four prefetched
    first.ack(envelope)
    held = first.get_nowait()
    assert held is not None and held.payload == 1  # in flight, never settled
    await first.close()
    second = make()
    assert (await second.counts()).in_flight == 1  # left to the reaper
    assert await drain(second, 3) == [2, 3, 4]


# -- reliable delivery ------------------------------------------------------------


async def test_the_items_of_a_dead_consumer_are_requeued_with_a_lost_delivery_counted(
    make: Callable[..., RedisBroker],
) -> None:
    """seed: at-most-once (an item popped by a worker that crashes is gone)."""
    dead = make(visibility_timeout=0.3, heartbeat_interval=0.1)
    await dead.put_many(["a", "b", "c"])
    taken = await dead.fetch(3)
    assert [e.payload for e in taken] == ["a", "b", "c"]
    await abandon(dead)
    async with make(visibility_timeout=0.3, heartbeat_interval=0.1) as survivor:
        back: list[Envelope] = []
        async with asyncio.timeout(3):
            while len(back) < 3:
                back += await survivor.fetch(3)
        assert [(e.payload, e.attempts, e.lost) for e in back] == [("a", 0, 1), ("b", 0, 1), ("c", 0, 1)]
        assert survivor.stats.reaped_total == 3


@pytest.mark.slow
async def test_a_live_consumer_keeps_its_items_past_the_visibility_timeout(
    make: Callable[..., RedisBroker],
) -> None:
    async with (
        make(visibility_timeout=0.3, heartbeat_interval=0.1) as slow,
        make(visibility_timeout=0.3, heartbeat_interval=0.1) as other,
    ):
        await slow.put("long job")
        [envelope] = await slow.fetch(1)
        await asyncio.sleep(1.0)  # three visibility timeouts, heartbeats renewing
        assert (await other.counts()).waiting == 0
        slow.ack(envelope)
        await slow.flush()
        assert (await other.counts()).in_flight == 0


async def test_an_item_whose_consumers_keep_dying_ends_in_the_dead_letter_queue(
    make: Callable[..., RedisBroker],
) -> None:
    """seed: a poison item re-pushed to the same queue loops for ever."""
    settings = {"visibility_timeout": 0.2, "heartbeat_interval": 0.05, "max_lost_deliveries": 3}
    await make(**settings).put("crashes its worker")
    for _ in range(3):
        victim = make(**settings)
        async with asyncio.timeout(3):
            await victim.fetch(1)
        await abandon(victim)
    last = make(**settings)
    await last.start()
    async with asyncio.timeout(3):
        while (await last.counts()).dead == 0:
            await asyncio.sleep(0.05)
    [letter] = await last.dead_letters()
    assert letter.envelope is not None
    assert letter.envelope.payload == "crashes its worker"
    assert (letter.envelope.attempts, letter.envelope.lost) == (0, 3)
    assert "ConsumerLost: its consumer died 3 time(s)" in letter.error
    assert (await last.counts()).waiting == 0


async def test_acknowledging_twice_is_refused(make: Callable[..., RedisBroker]) -> None:
    async with make() as broker:
        await broker.put(1)
        [envelope] = await broker.fetch(1)
        broker.ack(envelope)
        with pytest.raises(ValueError, match="not in flight"):
            broker.ack(envelope)
        with pytest.raises(ValueError, match="not in flight"):
            await broker.release([envelope])


# -- retries and dead letters -----------------------------------------------------


async def test_a_retry_keeps_the_payload_and_counts_the_attempt(make: Callable[..., RedisBroker]) -> None:
    async with make() as broker:
        await broker.put({"job": 7})
        [envelope] = await broker.fetch(1)
        envelope.attempts += 1
        await broker.retry(envelope, delay=0, error="RuntimeError: boom")
        [again] = await broker.fetch(1)
        assert (again.id, again.payload, again.attempts) == (envelope.id, {"job": 7}, 1)
        assert again.last_error == "RuntimeError: boom"


async def test_other_items_are_served_while_a_retry_waits(make: Callable[..., RedisBroker]) -> None:
    async with make() as broker:
        await broker.put("poison")
        await broker.put_many(["ok-1", "ok-2"])
        [poison] = await broker.fetch(1)
        await broker.retry(poison, delay=0.4, error="E")
        assert await drain(broker, 2, timeout=0.3) == ["ok-1", "ok-2"]
        assert (await broker.counts()).delayed == 1


async def test_dead_letters_keep_the_item_and_its_error(make: Callable[..., RedisBroker]) -> None:
    async with make() as broker:
        await broker.put({"bad": True}, priority=3)
        [envelope] = await broker.fetch(1)
        await broker.dead_letter(envelope, error="Reject: not a user")
        [letter] = await broker.dead_letters()
        assert letter.error == "Reject: not a user"
        assert letter.envelope is not None and letter.envelope.payload == {"bad": True}
        assert letter.envelope.priority == 3
        counts = await broker.counts()
        assert (counts.waiting, counts.in_flight, counts.dead) == (0, 0, 1)


async def test_the_dead_letter_queue_is_bounded(make: Callable[..., RedisBroker]) -> None:
    async with make(dead_letter_limit=3) as broker:
        await broker.put_many(range(5))
        for envelope in await broker.fetch(5):
            await broker.dead_letter(envelope, error="E")
        letters = await broker.dead_letters()
        assert [d.envelope.payload for d in letters if d.envelope] == [2, 3, 4]


@pytest.mark.parametrize("raw", [b"not json at all", b"[1, 2, 3]", b'0|0|{"id": 1}', b"0|x|{}"])
async def test_a_malformed_message_goes_to_the_dead_letter_queue_and_the_rest_flows(
    make: Callable[..., RedisBroker], redis_server: RedisServer, raw: bytes
) -> None:
    """seed: a payload that is not JSON (or a JSON list) raises after the item was consumed."""
    async with make() as broker:
        await broker.put("before")
        redis_server.command("RPUSH", f"{broker.prefix}:q:0", raw)
        await broker.put("after")
        assert await drain(broker, 2) == ["before", "after"]
        async with asyncio.timeout(2):
            while not (letters := await broker.dead_letters()):
                await asyncio.sleep(0.02)
        assert letters[0].raw == raw
        assert letters[0].envelope is None
        assert "malformed message" in letters[0].error
        assert broker.stats.malformed_total == 1


# -- payloads -------------------------------------------------------------------


async def test_a_payload_over_the_size_limit_is_refused_and_nothing_is_queued(
    make: Callable[..., RedisBroker],
) -> None:
    async with make(max_payload_bytes=1000) as broker:
        with pytest.raises(PayloadError, match=r"payload too large: .* the limit is 1000"):
            await broker.put("x" * 1000)
        await broker.put("x" * 900)
        assert (await broker.counts()).waiting == 1


@pytest.mark.parametrize("payload", [{1, 2}, float("nan"), object(), b"bytes"])
async def test_a_payload_that_is_not_json_is_refused(make: Callable[..., RedisBroker], payload: Any) -> None:
    async with make() as broker:
        with pytest.raises(PayloadError, match="cannot travel as JSON"):
            await broker.put(payload)


async def test_payloads_travel_as_json_not_pickle(
    make: Callable[..., RedisBroker], redis_server: RedisServer
) -> None:
    async with make() as broker:
        await broker.put({"text": "héllo", "n": 1.5, "list": [1, None]})
        stored = redis_server.command("LINDEX", f"{broker.prefix}:q:0", 0)
        priority, attempts, lost, body = stored.split(b"|", 3)
        assert (priority, attempts, lost) == (b"0", b"0", b"0")
        assert json.loads(body)["p"] == {"text": "héllo", "n": 1.5, "list": [1, None]}


# -- backpressure ---------------------------------------------------------------


async def test_put_waits_at_the_high_watermark_until_the_low_one(make: Callable[..., RedisBroker]) -> None:
    async with make(capacity=4, low_watermark=1) as producer, make() as consumer:
        await producer.put_many(range(4))
        blocked = asyncio.create_task(producer.put("fifth"))
        await asyncio.sleep(0.2)
        assert not blocked.done()
        for envelope in await consumer.fetch(2):  # depth 2: still above the low watermark
            consumer.ack(envelope)
        await asyncio.sleep(0.2)
        assert not blocked.done()
        await consumer.fetch(1)  # depth 1: the gate reopens
        await asyncio.wait_for(blocked, 2)


async def test_put_raises_queue_full_after_its_timeout(make: Callable[..., RedisBroker]) -> None:
    async with make(capacity=2) as broker:
        await broker.put_many([1, 2])
        started = time.monotonic()
        with pytest.raises(QueueFull, match="full"):
            await broker.put(3, timeout=0.3)
        assert 0.25 <= time.monotonic() - started < 1.5
        with pytest.raises(QueueFull):
            await broker.put(3, timeout=0)


async def test_retries_are_never_refused_by_a_full_queue(make: Callable[..., RedisBroker]) -> None:
    async with make(capacity=1) as broker:
        await broker.put("only")
        [envelope] = await broker.fetch(1)
        await broker.put("fills it")
        await broker.retry(envelope, delay=0, error="E")
        assert (await broker.counts()).waiting == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capacity": 10, "low_watermark": 10}, "low_watermark"),
        ({"capacity": None, "low_watermark": 3}, "needs a capacity"),
        ({"batch_size": 0}, "batch_size"),
        ({"visibility_timeout": 1.0, "heartbeat_interval": 2.0}, "heartbeat_interval"),
        ({"name": "has space"}, "queue name"),
        ({"url": "http://127.0.0.1:6379"}, "redis://"),
    ],
)
def test_bad_settings_are_refused_at_construction(kwargs: dict[str, Any], message: str) -> None:
    url = kwargs.pop("url", "redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match=message):
        RedisBroker(url, **kwargs)


# -- depth for qhealth ----------------------------------------------------------


@pytest.mark.slow
async def test_depth_is_read_without_io_and_none_once_stale(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    broker = RedisBroker(server.url, unique_name(), visibility_timeout=0.3, heartbeat_interval=0.1)
    try:
        await broker.put_many(range(7))
        assert broker.depth() == 7
        server.stop()
        await asyncio.sleep(1.2)  # the heartbeat cannot refresh it any more
        assert broker.depth() is None
    finally:
        await broker.close()


# -- connections ----------------------------------------------------------------


async def test_a_password_never_appears_in_repr_errors_or_logs(
    redis_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_factory(password="s3cr3t-pw")
    assert redact_url(server.url) == f"redis://:***@127.0.0.1:{server.port}/0"
    async with RedisBroker(server.url, unique_name()) as good:
        await good.put(1)
        assert "s3cr3t-pw" not in repr(good) + good.url
    wrong = server.url.replace("s3cr3t-pw", "wrong-pw-123")
    caplog.set_level(logging.DEBUG)
    broker = RedisBroker(wrong, unique_name(), connect_timeout=0.5)
    with pytest.raises(Exception) as raised:
        await broker.put(1)
    await broker.close()
    text = f"{raised.value!r} {raised.value} {caplog.text}"
    assert "wrong-pw-123" not in text
    assert "s3cr3t-pw" not in text


async def test_rediss_urls_connect_over_tls_with_auth(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory(tls=True, password="tls-pw")
    assert server.url.startswith("rediss://")
    options = {"ssl_ca_certs": str(server.ca)}
    async with RedisBroker(server.url, unique_name(), redis_options=options) as broker:
        await broker.put({"over": "tls"})
        assert await drain(broker, 1) == [{"over": "tls"}]
        assert "tls-pw" not in repr(broker)


async def test_a_malformed_url_is_refused_without_showing_its_password() -> None:
    broker = RedisBroker("redis://:pa55word@127.0.0.1:notaport/0", unique_name())
    with pytest.raises(ValueError) as raised:
        await broker.start()
    assert "pa55word" not in str(raised.value)
    assert "redis://:***@" in str(raised.value)
    await broker.close()


@pytest.mark.slow
async def test_an_unreachable_server_gives_a_clear_error_after_the_connect_timeout() -> None:
    from tests.redis_server import free_port

    broker = RedisBroker(f"redis://:pw@127.0.0.1:{free_port()}/0", unique_name(), connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(RedisUnavailable, match=r"redis at redis://:\*\*\*@127\.0\.0\.1:\d+/0 unreachable"):
        await broker.put(1)
    assert time.monotonic() - started < 3
    await broker.close()


@pytest.mark.slow
async def test_a_consumer_reconnects_after_a_redis_restart(
    redis_factory: Callable[..., RedisServer],
) -> None:
    """seed: a Redis restart kills every worker with ConnectionError; none reconnects."""
    server = redis_factory(appendonly=True)
    async with RedisBroker(server.url, unique_name()) as consumer:
        fetching = asyncio.create_task(consumer.fetch(1))
        await asyncio.sleep(0.1)
        await asyncio.to_thread(server.restart, 0.3)
        async with RedisBroker(server.url, consumer.name) as producer:
            await producer.put("after the restart")
        [envelope] = await asyncio.wait_for(fetching, 10)
        assert envelope.payload == "after the restart"
        assert consumer.stats.connection_errors_total >= 1


async def test_dropped_connections_are_reestablished(
    make: Callable[..., RedisBroker], redis_server: RedisServer
) -> None:
    async with make() as broker:
        await broker.put("one")
        assert await drain(broker, 1) == ["one"]
        fetching = asyncio.create_task(broker.fetch(1))
        await asyncio.sleep(0.1)
        redis_server.command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        await asyncio.sleep(0.1)
        await broker.put("two")
        [envelope] = await asyncio.wait_for(fetching, 5)
        assert envelope.payload == "two"


def test_importing_src_pool_does_not_import_redis() -> None:
    code = "import sys, src_pool, src_pool.redis_broker; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the reference pool on Redis ---------------------------------------------------


async def test_a_poison_item_ends_in_the_dead_letter_queue_after_max_attempts_while_others_flow(
    make: Callable[..., RedisBroker],
) -> None:
    """seed: a poison item re-pushed to the same queue was popped 3,644 times in 2 s."""
    from src_pool.pool import Pool
    from src_pool.retry import RetryPolicy

    attempts: dict[str, int] = {}
    done: list[Any] = []

    async def handle(payload: Any) -> None:
        attempts[str(payload)] = attempts.get(str(payload), 0) + 1
        if payload == "poison":
            raise RuntimeError("cannot handle this one")
        done.append(payload)

    policy = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, hold_up_to_s=0)
    async with (
        make() as broker,
        Pool(handle, broker=broker, concurrency=3, retry=policy, monitor=False) as pool,
    ):
        await pool.submit("poison")
        await pool.submit_many(range(20))
        try:
            async with asyncio.timeout(10):
                while (await broker.counts()).dead == 0 or len(done) < 20:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            pytest.fail(f"done {done}, attempts {attempts}, {await broker.counts()}")
    assert sorted(done) == list(range(20))
    assert attempts["poison"] == 4
    [letter] = await make().dead_letters()
    assert letter.envelope is not None and letter.envelope.payload == "poison"
    assert "RuntimeError: cannot handle this one" in letter.error
