"""How envelopes travel as AMQP messages, and how retry delays map to retry queues (no broker needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from pamqp.commands import Basic

from src_pool import PayloadError
from src_pool.rabbit_message import (
    H_ATTEMPTS,
    H_ENQUEUED_AT,
    MalformedMessage,
    decode,
    encode_payload,
    headers_of,
    properties,
)
from src_pool.rabbit_topology import MAX_RETRY_DELAY_S, MAX_TIER, Topology, delay_ms, tier_of


def delivered(body: bytes, made: Any = None, **props: Any) -> Any:
    """What aiormq hands a consumer: a body and a content header's properties."""
    return SimpleNamespace(body=body, header=SimpleNamespace(properties=made or Basic.Properties(**props)))


def test_an_envelope_survives_the_trip_with_microsecond_timestamps() -> None:
    enqueued_at = 1_795_960_489.028557
    props = properties("id-1", 7, headers_of(enqueued_at, 2, "ValueError: flaky"))
    envelope = decode(delivered(encode_payload({"a": [1, "é"]}, 1000), props), receipt="r")
    assert (envelope.id, envelope.payload, envelope.priority, envelope.attempts) == (
        "id-1",
        {"a": [1, "é"]},
        7,
        2,
    )
    assert envelope.enqueued_at == pytest.approx(enqueued_at, abs=1e-6)
    assert (envelope.last_error, envelope.receipt) == ("ValueError: flaky", "r")
    assert props.delivery_mode == 2 and props.content_type == "application/json"


def test_the_enqueue_time_travels_as_an_integer() -> None:
    """AMQP tables carry floats as 32 bits: a float timestamp would be rounded to minutes."""
    assert isinstance(headers_of(1_795_960_489.028557, 0, None)[H_ENQUEUED_AT], int)


@pytest.mark.parametrize(
    ("body", "props", "message"),
    [
        (b"{not json", {}, "body is not JSON"),
        (b"\xff\xfe", {}, "body is not JSON"),
        (b"1", {"headers": {H_ATTEMPTS: "three"}}, "src-attempts must be a non-negative integer"),
        (b"1", {"headers": {H_ATTEMPTS: -1}}, "src-attempts must be a non-negative integer"),
        (b"1", {"headers": {H_ENQUEUED_AT: 1.5}}, "src-enqueued-us must be integer microseconds"),
    ],
)
def test_a_message_the_pool_cannot_read_is_malformed(
    body: bytes, props: dict[str, Any], message: str
) -> None:
    with pytest.raises(MalformedMessage, match=message):
        decode(delivered(body, **props), receipt=None)


def test_a_foreign_json_message_gets_its_timestamp_and_a_capped_priority() -> None:
    stamp = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    envelope = decode(delivered(b'"hi"', timestamp=stamp, priority=200, message_id="m"), receipt=None)
    assert (envelope.payload, envelope.priority, envelope.attempts) == ("hi", 9, 0)
    assert envelope.enqueued_at == stamp.timestamp()


def test_payloads_are_checked_before_they_travel() -> None:
    with pytest.raises(PayloadError, match="payload too large: 12 bytes encoded, the limit is 10"):
        encode_payload("x" * 10, 10)
    with pytest.raises(PayloadError, match="cannot travel as JSON"):
        encode_payload(float("inf"), 100)


@pytest.mark.parametrize(
    ("seconds", "ms", "tier"),
    [
        (0.001, 1, 0),
        (0.0015, 2, 1),
        (0.05, 50, 5),
        (1.0, 1000, 9),
        (30.0, 30_000, 14),
        (MAX_RETRY_DELAY_S, 2**32 - 1, 31),
    ],
)
def test_a_retry_delay_goes_to_the_tier_of_its_power_of_two_band(seconds: float, ms: int, tier: int) -> None:
    assert delay_ms(seconds) == ms
    assert tier_of(ms) == tier
    assert 2**tier <= ms < 2 ** (tier + 1)  # a message waits at most behind one at most twice as long
    assert tier <= MAX_TIER


def test_a_delay_is_rounded_up_never_down() -> None:
    assert delay_ms(0.0101) == 11
    assert delay_ms(0) == 0


def test_delays_beyond_the_last_tier_are_refused() -> None:
    with pytest.raises(ValueError, match="retry delay must be from 0 to"):
        delay_ms(MAX_RETRY_DELAY_S + 1)


def test_every_name_of_a_topology_derives_from_the_queue_name() -> None:
    topology = Topology("jobs", dead_letter_limit=5)
    assert (topology.dead_letter_exchange, topology.dead_queue, topology.retry_queue(3)) == (
        "jobs.dead-letter",
        "jobs.dead",
        "jobs.retry.3",
    )
    assert topology.queue_arguments()["x-queue-type"] == "quorum"
    assert topology.dead_queue_arguments()["x-max-length"] == 5
    assert topology.retry_queue_arguments()["x-dead-letter-routing-key"] == "jobs"


def test_a_quorum_work_queue_counts_deliveries_and_dead_letters_at_least_once() -> None:
    arguments = Topology("jobs", dead_letter_limit=5, delivery_limit=7).queue_arguments()
    assert arguments["x-delivery-limit"] == 7
    assert (arguments["x-dead-letter-strategy"], arguments["x-overflow"]) == (
        "at-least-once",
        "reject-publish",
    )
    assert "x-max-priority" not in arguments  # quorum queues refuse it before RabbitMQ 4.0


def test_a_classic_work_queue_has_ten_priority_levels_and_no_delivery_limit() -> None:
    arguments = Topology("jobs", dead_letter_limit=5, queue_type="classic").queue_arguments()
    assert arguments["x-max-priority"] == 9
    assert "x-delivery-limit" not in arguments
