"""Connecting to Redis for a queue reader (redis-py, imported on use)."""

from __future__ import annotations

from typing import Any

from .._optional import require

#: A sidecar read is a few round trips: give up quickly rather than pile up ticks.
SOCKET_TIMEOUT_S = 5.0


def connect(url: str) -> Any:
    """A redis-py client for ``url`` (``redis://``, ``rediss://`` or ``unix://``),
    with strings decoded. Connects on first use."""
    redis = require("redis", extra="redis", who="qhealth watch on Redis")
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
    )
