"""The in-memory broker keeps the broker contract (src_pool/broker.py)."""

from __future__ import annotations

import asyncio

import pytest

from src_pool import BrokerClosed, MemoryBroker, QueueFull


async def take_all(broker: MemoryBroker) -> list[object]:
    out = []
    while (envelope := broker.get_nowait()) is not None:
        out.append(envelope.payload)
        broker.ack(envelope)
    return out


async def test_items_come_out_in_the_order_they_went_in() -> None:
    broker = MemoryBroker()
    for i in range(1, 6):
        await broker.put(i)
    assert await take_all(broker) == [1, 2, 3, 4, 5]


async def test_higher_priorities_come_out_first_and_fifo_within_a_priority() -> None:
    broker = MemoryBroker()
    await broker.put("low-1")
    await broker.put("high-1", priority=9)
    await broker.put("mid", priority=5)
    await broker.put("low-2")
    await broker.put("high-2", priority=9)
    assert await take_all(broker) == ["high-1", "high-2", "mid", "low-1", "low-2"]


@pytest.mark.parametrize("priority", [-1, 10, 1.5, True, "1"])
async def test_a_priority_outside_0_to_9_is_a_value_error(priority: object) -> None:
    with pytest.raises(ValueError, match="priority"):
        await MemoryBroker().put("x", priority=priority)  # type: ignore[arg-type]


async def test_envelopes_have_unique_ids_and_an_enqueue_time() -> None:
    broker = MemoryBroker(clock=lambda: 1234.5)
    a, b = await broker.put("a"), await broker.put("b")
    assert a.id != b.id
    assert a.enqueued_at == 1234.5
    assert a.attempts == 0


async def test_a_waiting_consumer_is_handed_the_next_item() -> None:
    broker = MemoryBroker()
    consumer = asyncio.create_task(broker.fetch())
    await asyncio.sleep(0)
    await broker.put("x")
    batch = await consumer
    assert [e.payload for e in batch] == ["x"]
    assert broker.depth() == 0
    assert broker.in_flight == 1


async def test_fetch_takes_up_to_max_items_that_are_waiting() -> None:
    broker = MemoryBroker()
    for i in range(5):
        await broker.put(i)
    batch = await broker.fetch(3)
    assert [e.payload for e in batch] == [0, 1, 2]
    assert broker.depth() == 2


async def test_a_consumer_cancelled_as_an_item_is_handed_over_gives_it_back() -> None:
    broker = MemoryBroker()
    consumer = asyncio.create_task(broker.fetch())
    await asyncio.sleep(0)
    await broker.put("x")  # handed to the waiting consumer's future...
    consumer.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert broker.in_flight == 0
    assert [e.payload for e in broker.remaining()] == ["x"]


async def test_a_cancelled_consumer_leaves_no_waiter_behind() -> None:
    broker = MemoryBroker()
    consumer = asyncio.create_task(broker.fetch())
    await asyncio.sleep(0)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    await broker.put("x")
    assert broker.depth() == 1


async def test_acknowledging_twice_is_a_value_error() -> None:
    broker = MemoryBroker()
    await broker.put("x")
    envelope = broker.get_nowait()
    assert envelope is not None
    broker.ack(envelope)
    with pytest.raises(ValueError, match="not in flight"):
        broker.ack(envelope)
    assert broker.acked_total == 1


async def test_released_items_go_back_to_the_head_in_their_order() -> None:
    broker = MemoryBroker()
    for i in range(4):
        await broker.put(i)
    first, second = broker.get_nowait(), broker.get_nowait()
    assert first is not None and second is not None
    await broker.release([first, second])
    assert await take_all(broker) == [0, 1, 2, 3]
    assert broker.released_total == 2


async def test_a_retry_comes_back_after_its_delay_at_the_tail() -> None:
    broker = MemoryBroker()
    await broker.put("poison")
    await broker.put("next")
    poison = broker.get_nowait()
    assert poison is not None
    await broker.retry(poison, delay=0.05, error="boom")
    assert broker.delayed == 1
    assert await take_all(broker) == ["next"]
    batch = await asyncio.wait_for(broker.fetch(), 2)
    assert batch[0].payload == "poison"
    assert batch[0].last_error == "boom"


async def test_dead_letters_are_kept_with_their_error_and_never_delivered_again() -> None:
    broker = MemoryBroker()
    await broker.put("bad")
    envelope = broker.get_nowait()
    assert envelope is not None
    await broker.dead_letter(envelope, error="ValueError: bad")
    assert broker.get_nowait() is None
    [dead] = broker.dead_letters()
    assert dead.envelope.payload == "bad"
    assert dead.error == "ValueError: bad"


async def test_the_dead_letter_store_is_bounded_and_counts_what_it_dropped() -> None:
    broker = MemoryBroker(dead_letter_limit=2)
    for i in range(3):
        await broker.put(i)
        envelope = broker.get_nowait()
        assert envelope is not None
        await broker.dead_letter(envelope, error="x")
    assert [d.envelope.payload for d in broker.dead_letters()] == [1, 2]
    assert broker.dead_letters_dropped == 1


async def test_put_answers_full_at_once_with_timeout_zero() -> None:
    broker = MemoryBroker(2)
    await broker.put(1)
    await broker.put(2)
    with pytest.raises(QueueFull, match="high watermark 2"):
        await broker.put(3, timeout=0)


async def test_close_wakes_waiting_producers_and_consumers_with_broker_closed() -> None:
    full = MemoryBroker(1)
    await full.put(1)
    producer = asyncio.create_task(full.put(2))
    empty = MemoryBroker()
    consumer = asyncio.create_task(empty.fetch())
    await asyncio.sleep(0)
    await full.close()
    await empty.close()
    with pytest.raises(BrokerClosed):
        await producer
    with pytest.raises(BrokerClosed):
        await consumer
    with pytest.raises(BrokerClosed):
        await full.put(3)


async def test_close_turns_scheduled_retries_into_remaining_items() -> None:
    broker = MemoryBroker()
    await broker.put("x")
    envelope = broker.get_nowait()
    assert envelope is not None
    await broker.retry(envelope, delay=60, error="later")
    await broker.close()
    assert [e.payload for e in broker.remaining()] == ["x"]


async def test_a_scheduled_retry_survives_a_change_of_event_loop() -> None:
    broker = MemoryBroker()

    async def schedule() -> None:
        await broker.put("x")
        envelope = broker.get_nowait()
        assert envelope is not None
        await broker.retry(envelope, delay=0.05, error="e")

    def run_in_new_loop(coro: object) -> None:
        import threading

        thread = threading.Thread(target=asyncio.run, args=(coro,))
        thread.start()
        thread.join()

    run_in_new_loop(schedule())
    batch = await asyncio.wait_for(broker.fetch(), 2)  # this loop re-arms the timer
    assert batch[0].payload == "x"


def test_bad_settings_are_value_errors_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="capacity"):
        MemoryBroker(0)
    with pytest.raises(ValueError, match="low watermark"):
        MemoryBroker(10, low_watermark=10)
    with pytest.raises(ValueError, match="dead_letter_limit"):
        MemoryBroker(dead_letter_limit=0)
