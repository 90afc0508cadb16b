"""src_pool: the reference worker pool that qhealth's fixes describe.

Workers block on a broker (no sleep loops: an idle pool wakes up zero times),
shut down gracefully without losing or double-acknowledging an item, push back
on producers with high/low watermarks, share a token-bucket rate limit, treat
HTTP 429 as a signal to slow down (Retry-After with jitter, AIMD concurrency),
and report everything to qhealth by default. Sources that can only be polled
get an adaptive poller with full jitter.

Modules, one idea each: :mod:`~src_pool.broker` (the broker contract),
:mod:`~src_pool.memory` (the in-memory broker), :mod:`~src_pool.pool` (the
workers), :mod:`~src_pool.backpressure`, :mod:`~src_pool.limiter`,
:mod:`~src_pool.aimd`, :mod:`~src_pool.retry`, :mod:`~src_pool.poller`.
"""

from .aimd import AIMD
from .backpressure import Watermarks
from .broker import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    AuthenticationFailed,
    Broker,
    BrokerClosed,
    BrokerError,
    Envelope,
    PayloadError,
    QueueFull,
)
from .limiter import Limiter, TokenBucket
from .memory import DeadLetter, MemoryBroker
from .poller import AdaptivePoller, PollGroup
from .pool import Pool, PoolClosed, StopReport
from .retry import Reject, RetryPolicy

__all__ = [
    "AIMD",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "AdaptivePoller",
    "AuthenticationFailed",
    "Broker",
    "BrokerClosed",
    "BrokerError",
    "DeadLetter",
    "Envelope",
    "Limiter",
    "MemoryBroker",
    "PayloadError",
    "PollGroup",
    "Pool",
    "PoolClosed",
    "QueueFull",
    "Reject",
    "RetryPolicy",
    "StopReport",
    "TokenBucket",
    "Watermarks",
]
