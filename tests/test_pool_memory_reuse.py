"""What keeps the in-memory pool near a bare asyncio.Queue: ids counted,
the clock read once per event-loop turn, envelopes reused when nobody else
holds them, and ``submit`` decided once (``bench/pool.py`` measures it)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from src_pool import MemoryBroker, Pool, PoolClosed
from src_pool.memory import STAMP_REUSE


async def test_ids_count_from_one_and_never_repeat() -> None:
    broker = MemoryBroker(None)
    ids = [(await broker.put(i)).id for i in range(5)]
    assert ids == [1, 2, 3, 4, 5]


async def test_puts_of_one_turn_share_one_clock_reading() -> None:
    readings = itertools.count(1000)
    broker = MemoryBroker(None, clock=lambda: float(next(readings)))
    first = [await broker.put(i) for i in range(3)]
    await asyncio.sleep(0)  # the next turn of the event loop
    later = await broker.put("later")
    assert [e.enqueued_at for e in first] == [1000.0, 1000.0, 1000.0]
    assert later.enqueued_at == 1001.0


async def test_a_producer_that_never_yields_reads_the_clock_every_stamp_reuse_puts() -> None:
    readings = itertools.count(0)
    broker = MemoryBroker(None, clock=lambda: float(next(readings)))
    stamps = [(await broker.put(i)).enqueued_at for i in range(STAMP_REUSE + 1)]
    assert stamps[:STAMP_REUSE] == [0.0] * STAMP_REUSE
    assert stamps[STAMP_REUSE] == 1.0


async def test_without_reuse_an_acknowledged_envelope_is_left_alone() -> None:
    broker = MemoryBroker(None)
    kept = await broker.put("mine")
    taken = broker.get_nowait()
    assert taken is kept
    broker.ack(taken)
    await broker.put("next")
    assert (kept.id, kept.payload) == (1, "mine")


async def test_with_reuse_an_acknowledged_envelope_is_filled_in_again() -> None:
    broker = MemoryBroker(None, reuse_envelopes=True)
    await broker.push("first")
    first = broker.get_nowait()
    assert first is not None
    broker.ack(first)
    assert first.payload is None  # no payload held past its item's life
    await broker.push("second")
    second = broker.get_nowait()
    assert second is first
    assert (second.id, second.payload, second.attempts, second.last_error) == (2, "second", 0, None)


async def test_push_hands_out_no_envelope() -> None:
    broker = MemoryBroker(None, reuse_envelopes=True)
    assert await broker.push("x") is None
    assert broker.depth() == 1


async def test_a_refused_broker_raises_the_refusal_and_still_hands_out_what_it_holds() -> None:
    broker = MemoryBroker(None)
    await broker.put("queued")
    broker.refuse_puts(lambda: PoolClosed("stopping"))
    with pytest.raises(PoolClosed, match="stopping"):
        await broker.put("late")
    taken = broker.get_nowait()
    assert taken is not None and taken.payload == "queued"


async def test_a_pool_submit_is_its_own_brokers_push_and_returns_nothing() -> None:
    async def handle(item: object) -> None:
        pass

    async with Pool(handle, monitor=False) as pool:
        assert pool.submit == pool.broker.push  # type: ignore[attr-defined]
        assert await pool.submit("x") is None
        await pool.join()
        assert pool.probe.processed_total == 1


async def test_submitting_to_a_stopping_pool_is_pool_closed_at_once() -> None:
    release = asyncio.Event()

    async def handle(item: object) -> None:
        await release.wait()

    pool = await Pool(handle, monitor=False, concurrency=1).start()
    await pool.submit("busy")
    stopping = asyncio.create_task(pool.stop(drain_timeout=5))
    await asyncio.sleep(0.01)  # stop() is draining the item in progress
    with pytest.raises(PoolClosed):
        await pool.submit("too late")
    release.set()
    assert (await stopping).drained
