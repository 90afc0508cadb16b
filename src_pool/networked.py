"""What the Redis and RabbitMQ brokers share: settings, envelopes, the hand-over.

Both keep a queue on a server that many processes share, and differ only in
how they talk to it. :class:`NetworkedBroker` holds what is the same: the
checked settings (watermarks through
:class:`~src_pool.backpressure.Watermarks`, payload and batch bounds, the
dead-letter bound, the connect timeout), item ids and envelopes, the
hand-over of received items to workers (:class:`~src_pool.deliveries.Deliveries`),
one :class:`~src_pool.broker_stats.BrokerStats`, and the password-free URL
every message and ``repr`` shows.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from qhealth.redact import error_text, redact_url

from .backpressure import Watermarks
from .broker import (
    MAX_PRIORITY,
    Broker,
    BrokerClosed,
    Envelope,
    check_positive_int,
    check_priority,
    check_timeout,
)
from .broker_stats import BrokerStats
from .deliveries import Deliveries
from .throttled_log import ThrottledLog


class NetworkedBroker(Broker):
    """The common part of a broker on a server. Subclasses check their URL and
    queue name first, then call this constructor with the rest."""

    def __init__(
        self,
        url: str,
        name: str,
        *,
        capacity: int | None,
        low_watermark: int | None,
        max_payload_bytes: int,
        max_batch_bytes: int,
        dead_letter_limit: int,
        connect_timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self._gate = Watermarks.for_capacity(capacity, low_watermark, name=name)
        check_positive_int(max_payload_bytes, "max_payload_bytes")
        check_positive_int(max_batch_bytes, "max_batch_bytes")
        check_positive_int(dead_letter_limit, "dead_letter_limit")
        connect = check_timeout(connect_timeout, "connect_timeout")
        if not connect:
            raise ValueError(f"connect_timeout must be positive, got {connect_timeout!r}")
        self._url = url
        self.name = name
        self._capacity = capacity
        self._max_bytes = max_payload_bytes
        self._max_batch_bytes = max_batch_bytes
        self._dead_limit = dead_letter_limit
        self._connect_timeout = connect
        self._clock = clock
        self._ids = 0
        self._id_prefix = os.urandom(6).hex() + "-"
        self._started = False
        self._closed = False
        self._deliveries = Deliveries()
        self.stats = BrokerStats()
        self._stale_log = ThrottledLog(10.0, log=logging.getLogger("src_pool"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, name={self.name!r})"

    @property
    def url(self) -> str:
        """The server's URL without its password."""
        return redact_url(self._url)

    @property
    def capacity(self) -> int | None:
        return self._capacity

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_flight(self) -> int:
        """Items this broker handed out and that are not settled yet."""
        return len(self._deliveries.inflight)

    @property
    def buffered(self) -> int:
        """Items received from the server and not yet taken by a worker."""
        return len(self._deliveries.buffer)

    def _no_longer_held(self, n: int, what: str, why: str) -> None:
        """Settles that found their delivery gone (``why``): they changed
        nothing, the item runs again where it went. Counted, and said."""
        self.stats.stale_total += n
        self._stale_log.warning(
            f"stale:{what}",
            "src_pool queue %s: %d %s(s) changed nothing: this consumer no longer held the item (%s; "
            "it went back to the queue, to run again)",
            self.name,
            n,
            what,
            why,
        )

    def _error_text(self, exc: BaseException) -> str:
        return error_text(exc, self._url)

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerClosed("the broker is closed: it accepts and hands out no more items")

    def _deadline(self, timeout: float | None = None) -> float:
        """When a call waiting for the server gives up (monotonic): its own
        ``timeout`` or ``connect_timeout``, whichever is sooner, and never in
        less than a second."""
        limit = self._connect_timeout if timeout is None else min(timeout, self._connect_timeout)
        return time.monotonic() + max(limit, 1.0)

    def _envelope(self, payload: Any, priority: int) -> Envelope:
        """A new item's envelope, with an id unique to this broker (random prefix, counter)."""
        if type(priority) is not int or not 0 <= priority <= MAX_PRIORITY:
            check_priority(priority)
        self._ids += 1
        return Envelope(f"{self._id_prefix}{self._ids}", payload, 0, priority, self._clock())

    def get_nowait(self) -> Envelope | None:
        if self._closed:
            return None
        return self._deliveries.get_nowait()

    async def _fetch_start(self, max_items: int) -> list[Envelope] | None:
        """The checks every fetch begins with, and what is buffered already (or None)."""
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"max_items must be a positive integer, got {max_items!r}")
        self._check_open()
        if not self._started:
            await self.start()
        if self._deliveries.buffer:
            return self._deliveries.take(max_items)
        return None
