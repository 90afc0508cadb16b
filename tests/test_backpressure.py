"""Backpressure: producers stop at the high watermark and resume at the low one."""

from __future__ import annotations

import asyncio

import pytest

from src_pool import BrokerClosed, MemoryBroker, QueueFull, Watermarks


async def test_a_producer_blocks_at_the_high_watermark() -> None:
    broker = MemoryBroker(10, low_watermark=5)
    for i in range(10):
        await broker.put(i)
    producer = asyncio.create_task(broker.put(10))
    await asyncio.sleep(0.01)
    assert not producer.done()
    assert broker.depth() == 10
    producer.cancel()


async def test_a_blocked_producer_resumes_only_once_the_depth_falls_to_the_low_watermark() -> None:
    broker = MemoryBroker(10, low_watermark=5)
    for i in range(10):
        await broker.put(i)
    producer = asyncio.create_task(broker.put("late"))
    await asyncio.sleep(0)
    for _ in range(4):  # depth 6: above the low watermark
        envelope = broker.get_nowait()
        assert envelope is not None
        broker.ack(envelope)
    await asyncio.sleep(0.01)
    assert not producer.done()
    envelope = broker.get_nowait()  # depth 5: reopens
    assert envelope is not None
    await asyncio.sleep(0)
    assert producer.done()
    assert broker.depth() == 6


async def test_the_gate_stays_shut_between_the_watermarks_for_new_producers_too() -> None:
    broker = MemoryBroker(4, low_watermark=1)
    for i in range(4):
        await broker.put(i)
    assert broker.get_nowait() is not None  # depth 3: below high, above low
    with pytest.raises(QueueFull):
        await broker.put("x", timeout=0)


async def test_a_producer_gets_queue_full_after_its_timeout() -> None:
    broker = MemoryBroker(1)
    await broker.put(1)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(QueueFull, match=r"after 0\.05 s"):
        await broker.put(2, timeout=0.05)
    assert loop.time() - t0 >= 0.045


async def test_an_unbounded_broker_never_blocks_a_producer() -> None:
    broker = MemoryBroker(None)
    for i in range(5000):
        await broker.put(i, timeout=0)
    assert broker.depth() == 5000


def test_inverted_watermarks_are_refused() -> None:
    with pytest.raises(ValueError, match=r"low watermark \(10\) must be below the high watermark \(5\)"):
        Watermarks(5, 10)


@pytest.mark.parametrize(("high", "low"), [(0, None), (5, -1), (2.5, None), (True, None)])
def test_bad_watermarks_are_value_errors(high: object, low: object) -> None:
    with pytest.raises(ValueError, match="watermark"):
        Watermarks(high, low)  # type: ignore[arg-type]


def test_the_low_watermark_defaults_to_half_the_high_one() -> None:
    assert Watermarks(100).low == 50


async def test_closing_the_gate_wakes_waiting_producers_with_broker_closed() -> None:
    gate = Watermarks(1)
    assert not gate.has_room(1)
    waiter = asyncio.create_task(gate.wait_for_room(lambda: 1))
    await asyncio.sleep(0)
    gate.close()
    with pytest.raises(BrokerClosed):
        await waiter
