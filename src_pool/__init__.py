"""src_pool: the reference worker pool that qhealth's fixes describe.

Workers block on a broker (no sleep loops: an idle pool wakes up zero times),
shut down gracefully without losing or double-acknowledging an item, push back
on producers with high/low watermarks, share a token-bucket rate limit, treat
HTTP 429 as a signal to slow down (Retry-After with jitter, AIMD concurrency),
and report everything to qhealth by default.

The broker contract is in :mod:`src_pool.broker`.
"""

from .broker import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    Broker,
    BrokerClosed,
    BrokerError,
    Envelope,
    PayloadError,
    QueueFull,
)

__all__ = [
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "Broker",
    "BrokerClosed",
    "BrokerError",
    "Envelope",
    "PayloadError",
    "QueueFull",
]
