"""The hand-over shared by the Redis and RabbitMQ brokers: buffer, waiting
workers, deliveries in flight (:mod:`src_pool.deliveries`)."""

from __future__ import annotations

import asyncio

import pytest

from src_pool import Envelope
from src_pool.deliveries import Deliveries


class Tag:
    """A receipt compared by identity, as a real delivery's is."""


def items(*payloads: str) -> list[Envelope]:
    return [Envelope(p, p, receipt=Tag()) for p in payloads]


async def test_a_waiting_worker_is_handed_up_to_the_max_items_it_asked_for() -> None:
    deliveries = Deliveries()
    waiting = asyncio.create_task(deliveries.wait(3, lambda: None))
    await asyncio.sleep(0)
    deliveries.add(items("a", "b", "c", "d"))
    assert [e.payload for e in await waiting] == ["a", "b", "c"]
    assert [e.payload for e in deliveries.buffer] == ["d"]


async def test_items_given_back_by_a_cancelled_worker_go_to_the_next_waiter_up_to_its_max_items() -> None:
    """The drift fixed: RabbitMQ once gave each waiter one item here."""
    deliveries = Deliveries()
    deliveries.add(items("a", "b", "c"))
    taken = deliveries.take(3)
    waiting = asyncio.create_task(deliveries.wait(5, lambda: None))
    await asyncio.sleep(0)
    deliveries.unfetch(taken)
    assert [e.payload for e in await waiting] == ["a", "b", "c"]


async def test_a_worker_cancelled_as_items_arrive_gives_them_back_to_the_head_in_order() -> None:
    deliveries = Deliveries()
    waiting = asyncio.create_task(deliveries.wait(2, lambda: None))
    await asyncio.sleep(0)
    deliveries.add(items("a", "b", "c"))
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert [e.payload for e in deliveries.buffer] == ["a", "b", "c"]
    assert not deliveries.inflight


def test_two_deliveries_of_one_item_are_in_flight_and_settled_apart() -> None:
    deliveries = Deliveries()
    one, two = items("same", "same")
    deliveries.add([one, two])
    deliveries.take(2)
    deliveries.settle(one, "acknowledge")
    assert list(deliveries.inflight.values()) == [two]
    deliveries.settle(two, "acknowledge")
    assert not deliveries.inflight


def test_settling_a_delivery_twice_is_a_value_error() -> None:
    deliveries = Deliveries()
    [one] = items("x")
    deliveries.add([one])
    deliveries.take(1)
    deliveries.settle(one, "acknowledge")
    with pytest.raises(ValueError, match="cannot acknowledge item x: it is not in flight"):
        deliveries.settle(one, "acknowledge")


def test_a_settle_under_way_refuses_a_second_one_and_ends_once() -> None:
    deliveries = Deliveries()
    [one] = items("x")
    deliveries.add([one])
    deliveries.take(1)
    deliveries.begin(one, "retry")
    with pytest.raises(ValueError, match="not in flight"):
        deliveries.settle(one, "acknowledge")
    deliveries.end(one)
    assert not deliveries.inflight and not deliveries.settling


def test_beginning_several_settles_begins_none_if_one_is_not_in_flight() -> None:
    deliveries = Deliveries()
    one, two = items("a", "b")
    deliveries.add([one])
    deliveries.take(1)
    with pytest.raises(ValueError, match="cannot release item b"):
        deliveries.begin_all([one, two], "release")
    assert not deliveries.settling
