"""The Redis broker never jams or loses work under hostile input and faults
(issue 13, items 8-14), against a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from src_pool import AuthenticationFailed, Envelope, PayloadError
from src_pool.redis_broker import RedisBroker
from tests.broker_fixtures import RedisFactory, abandon, redis_brokers, redis_server, stall
from tests.broker_helpers import drain
from tests.redis_server import RedisServer, redis_factory, unique_name

__all__ = ["redis_brokers", "redis_factory", "redis_server"]  # fixtures used by this module

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


FAST = {"visibility_timeout": 0.3, "heartbeat_interval": 0.1}


async def fetch_n(broker: RedisBroker, n: int, timeout: float = 3.0) -> list[Envelope]:
    got: list[Envelope] = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            got += await broker.fetch(n - len(got))
    return got


async def wait_until_waiting(broker: RedisBroker, n: int, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while (await broker.counts()).waiting != n:
            await asyncio.sleep(0.02)


async def taken_then_reaped(slow: RedisBroker, reaper: RedisBroker) -> Envelope:
    """An item ``slow`` took, then held past its visibility timeout (its
    heartbeat stopped) until ``reaper`` gave it back to the queue."""
    await slow.put("slow job")
    [envelope] = await slow.fetch(1)
    await stall(slow)
    await wait_until_waiting(reaper, 1)
    return envelope


# -- item 9: a restarted consumer never adopts its predecessor's items ---------------


async def test_a_consumer_restarted_with_the_same_id_gets_its_predecessors_items_back_counted(
    redis_brokers: RedisFactory,
) -> None:
    first = redis_brokers(consumer_id="worker-1", **FAST)
    await first.put_many(["a", "b", "c"])
    await fetch_n(first, 3)
    await abandon(first)  # killed holding all three
    async with redis_brokers(consumer_id="worker-1", **FAST) as second:
        back = await fetch_n(second, 3)
        assert [(e.payload, e.attempts, e.lost) for e in back] == [("a", 0, 1), ("b", 0, 1), ("c", 0, 1)]
        assert second.stats.reaped_total == 3


# -- item 10: in flight by delivery, not by item id ----------------------------------


async def test_two_copies_of_one_message_are_two_deliveries_each_settled_on_its_own(
    redis_brokers: RedisFactory, redis_server: RedisServer
) -> None:
    """A put whose reply was lost is sent again: the queue then holds two
    identical messages."""
    async with redis_brokers(batch_size=10) as broker:
        await broker.put("twice")
        raw = redis_server.command("LINDEX", f"{broker.prefix}:q:0", 0)
        redis_server.command("RPUSH", f"{broker.prefix}:q:0", raw)
        one, two = await fetch_n(broker, 2)
        assert one.id == two.id
        broker.ack(one)
        broker.ack(two)
        await broker.flush()
        assert broker.in_flight == 0
        assert broker.stats.acked_total == 2
        counts = await broker.counts()
        assert (counts.waiting, counts.in_flight) == (0, 0)


async def test_a_stalled_consumer_that_fetches_its_own_reaped_copy_settles_both_deliveries(
    redis_brokers: RedisFactory,
) -> None:
    async with redis_brokers(**FAST) as slow, redis_brokers(**FAST) as reaper:
        first = await taken_then_reaped(slow, reaper)
        [second] = await slow.fetch(1)
        assert (second.id, second.lost) == (first.id, 1)
        slow.ack(second)
        slow.ack(first)  # late: not a ValueError, not "a worker died"
        await slow.flush()
        assert (slow.stats.acked_total, slow.stats.stale_total) == (1, 1)
        assert slow.in_flight == 0
        counts = await reaper.counts()
        assert (counts.waiting, counts.in_flight) == (0, 0)


# -- item 11: handler failures and consumer deaths are two counts ----------------------


async def test_a_crash_after_handler_failures_requeues_the_item_rather_than_blaming_the_crashes(
    redis_brokers: RedisFactory,
) -> None:
    """Four handler failures, then one crash, with the default limits (5):
    the crash is the first lost delivery, not the fifth."""
    victim = redis_brokers(**FAST)
    await victim.put("fails, then its worker dies")
    for attempt in range(1, 5):
        [envelope] = await fetch_n(victim, 1)
        await victim.retry(replace(envelope, attempts=attempt), delay=0, error=f"ValueError: {attempt}")
    await fetch_n(victim, 1)
    await abandon(victim)
    async with redis_brokers(**FAST) as survivor:
        [back] = await fetch_n(survivor, 1)
        assert (back.attempts, back.lost) == (4, 1)
        assert back.last_error == "ValueError: 4"
        assert (await survivor.counts()).dead == 0


async def test_an_item_dead_lettered_for_lost_deliveries_says_so_and_how_often_its_handler_failed(
    redis_brokers: RedisFactory,
) -> None:
    settings = {**FAST, "max_lost_deliveries": 2}
    first = redis_brokers(**settings)
    await first.put("poison")
    [envelope] = await fetch_n(first, 1)
    await first.retry(replace(envelope, attempts=1), delay=0, error="ValueError: once")
    for _ in range(2):
        victim = redis_brokers(**settings)
        await fetch_n(victim, 1)
        await abandon(victim)
    await abandon(first)
    async with redis_brokers(**settings) as last:
        async with asyncio.timeout(3):
            while (await last.counts()).dead == 0:
                await asyncio.sleep(0.02)
        [letter] = await last.dead_letters()
        assert letter.error == (
            "ConsumerLost: its consumer died 2 time(s) while holding it (max_lost_deliveries 2); "
            "its handler failed 1 time(s)"
        )
        assert letter.envelope is not None
        assert (letter.envelope.attempts, letter.envelope.lost) == (1, 2)


# -- item 12: a reaped consumer's late settle says the item was no longer held -----------


async def test_a_late_ack_from_a_reaped_consumer_is_counted_as_no_longer_held(
    redis_brokers: RedisFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with redis_brokers(**FAST) as slow, redis_brokers(**FAST) as reaper:
        envelope = await taken_then_reaped(slow, reaper)
        with caplog.at_level(logging.WARNING, logger="src_pool"):
            slow.ack(envelope)
            await slow.flush()
        assert (slow.stats.acked_total, slow.stats.stale_total) == (0, 1)
        assert "no longer held the item" in caplog.text
        assert (await reaper.counts()).waiting == 1  # still there for the next consumer


async def test_a_late_dead_letter_from_a_reaped_consumer_changes_nothing_and_is_counted(
    redis_brokers: RedisFactory,
) -> None:
    async with redis_brokers(**FAST) as slow, redis_brokers(**FAST) as reaper:
        envelope = await taken_then_reaped(slow, reaper)
        await slow.dead_letter(envelope, error="Reject: too late")
        assert (slow.stats.dead_lettered_total, slow.stats.stale_total) == (0, 1)
        counts = await reaper.counts()
        assert (counts.waiting, counts.dead) == (1, 0)


# -- item 13: a refused login fails at once, in one line, the password masked -------------


async def test_a_wrong_password_fails_at_once_with_one_clear_line(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory(password="right-one")
    url = server.url.replace("right-one", "hunter2-wrong")
    broker = RedisBroker(url, unique_name("auth"), connect_timeout=30.0)
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed) as refused:
        await broker.start()
    assert time.monotonic() - started < 2.0
    text = str(refused.value)
    assert "refused the login" in text
    assert "hunter2-wrong" not in text and "\n" not in text
    await broker.close()


async def test_a_missing_password_says_the_url_needs_one_instead_of_redis_hello_words(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory(password="right-one")
    broker = RedisBroker(f"redis://127.0.0.1:{server.port}/0", unique_name("auth"), connect_timeout=30.0)
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match="requires a password and the URL gives none") as refused:
        await broker.start()
    assert time.monotonic() - started < 2.0
    assert "HELLO" not in str(refused.value)
    await broker.close()


# -- item 14: put_many is chunked by bytes ------------------------------------------------


async def test_put_many_sends_no_round_trip_over_max_batch_bytes(redis_brokers: RedisFactory) -> None:
    """A spy on the real PUT script records the bytes of every call."""
    limit = 64 * 1024
    async with redis_brokers(max_batch_bytes=limit) as broker:
        script = broker._scripts["PUT"]
        calls: list[int] = []

        async def recording(*, keys: list[str], args: list[Any]) -> Any:
            calls.append(sum(len(a) for a in args[3:]))  # the messages, after the three settings
            return await script(keys=keys, args=args)

        broker._scripts["PUT"] = recording
        await broker.put_many([f"{i:04d}" + "x" * 10_000 for i in range(40)])
        assert len(calls) >= 7  # 40 items of ~10 KB, at most 6 per 64 KiB
        assert max(calls) <= limit
        assert sum(calls) > 40 * 10_000
        assert [p[:4] for p in await drain(broker, 40)] == [f"{i:04d}" for i in range(40)]


async def test_the_shared_rate_limiter_fails_at_once_on_a_refused_login(
    redis_factory: Callable[..., RedisServer],
) -> None:
    from src_pool.redis_limiter import RedisRateLimiter

    server = redis_factory(password="right-one")
    limiter = RedisRateLimiter(
        server.url.replace("right-one", "hunter2-wrong"), "api", rate=10, connect_timeout=30
    )
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match="refused the login") as refused:
        await limiter.acquire()
    assert time.monotonic() - started < 2.0
    assert "hunter2-wrong" not in str(refused.value)
    await limiter.aclose()
