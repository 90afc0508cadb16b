"""Publishing a batch of messages in one write, each with its own publisher confirm.

aiormq's ``basic_publish`` takes a lock, marshals, queues one write and
makes a future for every message: about 120 µs of CPU per message here, most
of it the socket write, so that a ``put_many`` of 500 items makes 500 writes.
:func:`publish_batch` marshals the frames of a whole batch into one write
and registers one confirm per message in the channel the way
``basic_publish`` does (the same attributes: ``lock``, ``delivery_tag``,
``confirmations``, ``message_id_delivery_tag``, ``write_queue``), so that
aiormq's reader settles them (ack, nack, or the message returned as
unroutable) exactly as it settles its own. Measured here: ~26 µs of CPU per
message instead of ~120, and 2.5 times the messages per second.

Those attributes are aiormq's internals (the same from 6.8 to 7.2):
:func:`batching_supported` checks for them, and without them the broker
publishes one message at a time through the public ``basic_publish``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

_REQUIRED = (
    "lock",
    "delivery_tag",
    "confirmations",
    "message_id_delivery_tag",
    "write_queue",
    "number",
    "max_content_size",
    "create_future",
)


class Message(NamedTuple):
    """One message to publish (mandatory: an unroutable one comes back)."""

    exchange: str
    routing_key: str
    body: bytes
    properties: Any
    """pamqp ``Basic.Properties``, with a ``message_id`` (returns are matched by it)."""


def batching_supported(channel: Any) -> bool:
    """Whether ``channel`` (an aiormq channel in confirm mode) has what
    :func:`publish_batch` relies on."""
    try:
        from aiormq.abc import ChannelFrame
    except ImportError:
        return False
    return (
        all(hasattr(channel, name) for name in _REQUIRED)
        and bool(getattr(channel, "publisher_confirms", False))
        and isinstance(channel.confirmations, dict)
        and isinstance(channel.message_id_delivery_tag, dict)
        and isinstance(channel.delivery_tag, int)
        and hasattr(ChannelFrame, "marshall")
    )


async def publish_batch(channel: Any, messages: Sequence[Message]) -> list[asyncio.Future[Any]]:
    """Write every message in one frame and return their confirm futures, in
    order: each resolves to ``Basic.Ack``, ``Basic.Nack``, the returned
    message (unroutable), or an exception when the channel closes first.
    If the write is not queued (cancelled while the connection's write queue
    was full), nothing was sent and the sequence numbers are taken back."""
    from aiormq.abc import ChannelFrame
    from pamqp.body import ContentBody
    from pamqp.commands import Basic
    from pamqp.header import ContentHeader

    frames: list[Any] = []
    registered: list[tuple[int, str, asyncio.Future[Any]]] = []
    limit: int = channel.max_content_size
    async with channel.lock:
        first = channel.delivery_tag
        try:
            for message in messages:
                channel.delivery_tag += 1
                tag: int = channel.delivery_tag
                future: asyncio.Future[Any] = channel.create_future()
                message_id: str = message.properties.message_id
                channel.confirmations[tag] = future
                channel.message_id_delivery_tag[message_id] = tag
                registered.append((tag, message_id, future))
                body = message.body
                frames.append(
                    Basic.Publish(exchange=message.exchange, routing_key=message.routing_key, mandatory=True)
                )
                frames.append(ContentHeader(properties=message.properties, body_size=len(body)))
                frames.extend(ContentBody(body[i : i + limit]) for i in range(0, len(body), limit))
            await channel.write_queue.put(ChannelFrame.marshall(channel_number=channel.number, frames=frames))
        except BaseException:
            for tag, message_id, future in registered:
                channel.confirmations.pop(tag, None)
                if channel.message_id_delivery_tag.get(message_id) == tag:
                    del channel.message_id_delivery_tag[message_id]
                future.cancel()
            channel.delivery_tag = first
            raise
    for tag, message_id, future in registered:
        future.add_done_callback(_forgetter(channel, message_id, tag))
    return [future for _, _, future in registered]


def _forgetter(channel: Any, message_id: str, tag: int) -> Any:
    def forget(_: asyncio.Future[Any]) -> None:
        if channel.message_id_delivery_tag.get(message_id) == tag:
            del channel.message_id_delivery_tag[message_id]

    return forget
