"""Reading what RabbitMQ holds for one queue: counts and dead letters.

For operators and tests, never on the hot path: each read opens a channel of
its own, so that what it does (a passive declare of a retry queue that was
never declared closes its channel; ``basic.get`` without an ack holds the
dead letters it reads) never touches the channels the broker works on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .broker import Envelope
from .rabbit_message import H_DEAD_AT, H_ERROR, MalformedMessage, death_reason, decode
from .rabbit_topology import MAX_TIER, Topology


@dataclass(frozen=True, slots=True)
class RabbitCounts:
    """What the broker holds for this queue right now, across every consumer."""

    waiting: int
    """Ready messages in the work queue (not those delivered and unacked)."""
    delayed: int
    """Messages in the retry queues."""
    dead: int
    consumers: int


@dataclass(frozen=True, slots=True)
class RabbitDeadLetter:
    """A message of the dead-letter queue."""

    error: str
    at: float
    """When it was dead-lettered (seconds since the epoch; 0 if unknown)."""
    body: bytes
    envelope: Envelope | None
    """The item, or None when the message could not be decoded."""


async def read_counts(connection: Any, topology: Topology) -> RabbitCounts:
    """Ready, delayed and dead messages and consumers (passive declares; a
    retry queue that was never declared closes the channel, and counts 0)."""
    import aiormq.exceptions as amqp

    channel = None
    try:
        channel = await connection.channel()
        raw = await channel.get_underlay_channel()
        main = await raw.queue_declare(topology.queue, passive=True)
        dead = await raw.queue_declare(topology.dead_queue, passive=True)
        delayed = 0
        for tier in range(MAX_TIER + 1):
            try:
                declared = await raw.queue_declare(topology.retry_queue(tier), passive=True)
                delayed += declared.message_count
            except amqp.ChannelNotFoundEntity:
                channel = await connection.channel()
                raw = await channel.get_underlay_channel()
        return RabbitCounts(main.message_count, delayed, dead.message_count, main.consumer_count)
    finally:
        if channel is not None and not channel.is_closed:
            await channel.close()


async def read_dead_letters(connection: Any, topology: Topology, limit: int) -> list[RabbitDeadLetter]:
    """The oldest ``limit`` dead letters, left in place (basic.get, then the
    channel closes and RabbitMQ requeues them)."""
    channel = await connection.channel()
    out: list[RabbitDeadLetter] = []
    try:
        raw = await channel.get_underlay_channel()
        for _ in range(limit):
            message = await raw.basic_get(topology.dead_queue, no_ack=False)
            if message.delivery_tag is None:  # Basic.GetEmpty
                break
            headers = message.header.properties.headers or {}
            error = headers.get(H_ERROR, "")
            error = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
            error = error or death_reason(headers)
            at = headers.get(H_DEAD_AT)
            at = at / 1_000_000 if isinstance(at, int) and not isinstance(at, bool) else 0.0
            try:
                envelope: Envelope | None = decode(message, None)
            except MalformedMessage:
                envelope = None
            out.append(RabbitDeadLetter(error, at, message.body, envelope))
    finally:
        await channel.close()
    return out
