"""The queues and exchange one RabbitMQ broker uses, and why each is shaped so.

For a queue named ``jobs``:

``jobs``
    The work queue, durable. By default a *quorum* queue (replicated with
    Raft on a cluster; on one node, still a queue that counts deliveries):
    RabbitMQ counts every delivery that comes back unsettled (its consumer
    died, its connection was cut, or it was released) in the message's
    ``x-delivery-count``, and dead-letters a message once that count passes
    ``x-delivery-limit``, with at-least-once dead-lettering
    (``x-dead-letter-strategy``, which needs ``x-overflow: reject-publish``):
    a poison item that crashes its consumer ends in ``jobs.dead`` instead of
    looping. Priorities: quorum queues have none before RabbitMQ 4.0 (they
    refuse ``x-max-priority``; items go FIFO whatever their priority), and
    two from 4.0 (priorities 5-9 before 0-4). A *classic* queue
    (``queue_type="classic"``) has ``x-max-priority`` 9, the ten levels, and
    counts no deliveries. Either way its ``x-dead-letter-exchange`` is the
    dead-letter exchange, so that a message rejected by any client is kept.

``jobs.dead-letter`` (fanout exchange) -> ``jobs.dead`` (queue)
    Poison and malformed messages, with the error that ended them in a
    header. Bounded by ``x-max-length`` (the oldest dead letter goes first).

``jobs.retry.K`` (K = 0 ... 31)
    Delayed retries: a message waits here with a per-message TTL
    (``expiration``) and RabbitMQ dead-letters it back to ``jobs`` through
    the default exchange when it expires. RabbitMQ only expires the message
    at the *head* of a queue, so one queue for all delays would hold a 1 s
    retry behind a 30 s one; instead tier K holds the delays of
    ``[2**K, 2**(K+1))`` milliseconds, and a message can wait behind another
    only in its own tier: a retry comes back at most twice as late as asked,
    never earlier. Tiers are declared on first use; a tier holds no priority
    (its order is expiry order), the message keeps its priority property and
    takes its place by it when it is back in ``jobs``.

Declaring is idempotent, so every process declares what it uses when it
connects; a queue that exists with other arguments is refused by RabbitMQ
(PRECONDITION_FAILED), and :func:`explain_declare_error` says what to do.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .broker import MAX_PRIORITY

QUEUE_TYPES = ("quorum", "classic")
#: Returns of one delivery a quorum queue allows before it dead-letters the
#: message: every return counts (a crash, a cut connection, a release at shutdown).
DEFAULT_DELIVERY_LIMIT = 20
#: Delays above this (about 49.7 days, 2**32 - 1 ms) are refused: it ends the last tier.
MAX_TIER = 31
MAX_RETRY_DELAY_S = (2 ** (MAX_TIER + 1) - 1) / 1000.0
_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")


def check_name(name: object) -> str:
    """A queue name that leaves room for the suffixes of the other names."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"queue name must be 1-200 characters of A-Z a-z 0-9 _ . : -, got {name!r}")
    if name.startswith("amq."):
        raise ValueError(f"queue names starting with 'amq.' are reserved by RabbitMQ, got {name!r}")
    return name


def delay_ms(delay_s: float) -> int:
    """A retry delay in whole milliseconds (what ``expiration`` takes), rounded up."""
    if not 0 <= delay_s <= MAX_RETRY_DELAY_S:
        raise ValueError(f"retry delay must be from 0 to {MAX_RETRY_DELAY_S:.0f} s, got {delay_s!r}")
    return math.ceil(delay_s * 1000.0 - 1e-9)


def tier_of(ms: int) -> int:
    """The retry tier for a delay of ``ms`` >= 1 milliseconds."""
    return ms.bit_length() - 1


@dataclass(frozen=True, slots=True)
class Topology:
    """Every name and argument of one queue's topology."""

    queue: str
    dead_letter_limit: int
    consumer_timeout_ms: int | None = None
    """``x-consumer-timeout`` of the work queue (RabbitMQ 3.12 or later), None: the server's."""
    queue_type: str = "quorum"
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    """``x-delivery-limit`` of a quorum work queue."""

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.queue}.dead-letter"

    @property
    def dead_queue(self) -> str:
        return f"{self.queue}.dead"

    def retry_queue(self, tier: int) -> str:
        return f"{self.queue}.retry.{tier}"

    def queue_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {"x-queue-type": self.queue_type}
        if self.queue_type == "quorum":
            arguments["x-delivery-limit"] = self.delivery_limit
            arguments["x-dead-letter-strategy"] = "at-least-once"
            arguments["x-overflow"] = "reject-publish"
        else:
            arguments["x-max-priority"] = MAX_PRIORITY
        arguments["x-dead-letter-exchange"] = self.dead_letter_exchange
        if self.consumer_timeout_ms is not None:
            arguments["x-consumer-timeout"] = self.consumer_timeout_ms
        return arguments

    def check_server(self, connection: Any) -> None:
        """A ValueError if the server cannot honour these arguments: RabbitMQ
        before 3.12 ignores ``x-consumer-timeout`` without a word, and its
        global ``consumer_timeout`` would go on closing long jobs' channels."""
        if self.consumer_timeout_ms is None:
            return
        version = server_version(connection)
        if version is not None and version < (3, 12):
            raise ValueError(
                f"consumer_timeout per queue needs RabbitMQ 3.12 or later, and this server is "
                f"{'.'.join(map(str, version))}: raise consumer_timeout in rabbitmq.conf instead "
                "(milliseconds; default 1800000, 30 min), and drop RabbitBroker(consumer_timeout=...)"
            )

    def dead_queue_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "classic", "x-max-length": self.dead_letter_limit, "x-overflow": "drop-head"}

    def retry_queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "classic",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.queue,
        }

    async def declare(self, channel: Any) -> None:
        """Declare the work queue and the dead-letter exchange and queue on an
        aiormq channel (retry tiers are declared when first used)."""
        await channel.exchange_declare(self.dead_letter_exchange, exchange_type="fanout", durable=True)
        await channel.queue_declare(self.dead_queue, durable=True, arguments=self.dead_queue_arguments())
        await channel.queue_bind(self.dead_queue, self.dead_letter_exchange, routing_key="")
        await channel.queue_declare(self.queue, durable=True, arguments=self.queue_arguments())

    async def declare_retry_queue(self, channel: Any, tier: int) -> None:
        await channel.queue_declare(
            self.retry_queue(tier), durable=True, arguments=self.retry_queue_arguments()
        )

    async def delete(self, channel: Any) -> None:
        """Delete every queue and the exchange, messages included (tests, benches, teardown)."""
        for tier in range(MAX_TIER + 1):
            await channel.queue_delete(self.retry_queue(tier))
        await channel.queue_delete(self.queue)
        await channel.queue_delete(self.dead_queue)
        await channel.exchange_delete(self.dead_letter_exchange)


def check_queue_type(queue_type: object, delivery_limit: object) -> tuple[str, int]:
    """The queue type and delivery limit, or a ValueError naming what is wrong."""
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"queue_type must be 'quorum' or 'classic', got {queue_type!r}")
    if isinstance(delivery_limit, bool) or not isinstance(delivery_limit, int) or delivery_limit < 1:
        raise ValueError(f"delivery_limit must be a positive integer, got {delivery_limit!r}")
    return str(queue_type), delivery_limit


def server_version(connection: Any) -> tuple[int, ...] | None:
    """The RabbitMQ version an aio-pika connection reports, None if it does not."""
    try:
        text = connection.transport.connection.server_properties["version"]
        text = text.decode() if isinstance(text, bytes) else str(text)
        return tuple(int(part) for part in text.split(".")[:3])
    except Exception:
        return None


def explain_declare_error(topology: Topology, text: str) -> str:
    """What a refused declare means, for the error a person reads."""
    if "PRECONDITION_FAILED" in text and "inequivalent arg" in text:
        return (
            f"{text}: a queue of this name already exists with other settings (made by another tool, "
            f"or another dead_letter_limit); use another queue name, or delete {topology.queue!r} "
            "and its '.dead' and '.retry.*' queues if they hold nothing you need"
        )
    return text
