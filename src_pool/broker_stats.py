"""What a networked broker counted: one record, the same for Redis and RabbitMQ.

Every counter only grows, from the broker's construction. They count what
this process did (or saw), not the queue: the queue's own figures are the
brokers' ``counts()``. Operators read them to tell a healthy pool from one
that loses connections, meets poison or hostile messages, or settles items it
no longer holds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class BrokerStats:
    put_total: int = 0
    """Items accepted by ``put`` and ``put_many`` (confirmed by the server)."""
    acked_total: int = 0
    retried_total: int = 0
    released_total: int = 0
    dead_lettered_total: int = 0
    """Items dead-lettered by this process, malformed messages included."""
    malformed_total: int = 0
    """Messages that could not be decoded (whatever the error): dead-lettered, never handed out."""
    reaped_total: int = 0
    """Items of dead consumers that this process re-queued or dead-lettered (Redis)."""
    stale_total: int = 0
    """Settles of deliveries this consumer no longer held: the server took them
    back (a lost channel, a missed heartbeat) and delivers them again, so the
    settle changed nothing."""
    connection_errors_total: int = 0
    reconnects_total: int = 0
    consumer_timeouts_total: int = 0
    """Channels RabbitMQ closed because a delivery stayed unacknowledged past
    its ``consumer_timeout`` (every item in flight went back to the queue)."""
