"""Connecting to Redis for a queue reader (redis-py, imported on use): one server or a Redis Cluster."""

from __future__ import annotations

from typing import Any

from .._optional import require
from .._redact import redact_url, scrub

#: A sidecar read is a few round trips: give up quickly rather than pile up ticks.
SOCKET_TIMEOUT_S = 5.0
#: URL schemes that name a Redis Cluster (any node of it), as src_pool spells them.
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
CLUSTER_SUFFIX = "+cluster"


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def is_cluster_client(client: Any) -> bool:
    """Whether ``client`` is redis-py's cluster client: its commands must be
    routed to the node that owns each key's slot. Decided by type, without
    importing redis for a client that cannot be one."""
    return any(cls.__name__ == "RedisCluster" for cls in type(client).__mro__)


def connect(url: str) -> Any:
    """A redis-py client for ``url``, with strings decoded.

    ``redis://``, ``rediss://`` and ``unix://`` give a client of one server,
    which connects on first use. ``redis+cluster://`` and ``rediss+cluster://``
    (TLS) name any node of a Redis Cluster and give redis-py's
    ``RedisCluster``, which asks that node for the cluster's slot map at once:
    without it no key can be routed. An unreachable cluster is therefore a
    ``ConnectionError`` here, and a URL the cluster client refuses (a database
    other than 0) a ``ValueError``, both with the password masked.
    """
    redis = require("redis", extra="redis", who="qhealth watch on Redis")
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": SOCKET_TIMEOUT_S,
    }
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **options)
    scheme, rest = url.split("://", 1)
    plain = f"{scheme[: -len(CLUSTER_SUFFIX)]}://{rest}"
    try:
        return redis.RedisCluster.from_url(plain, **options)
    except ValueError as exc:  # its message may quote the URL, password included
        raise ValueError(f"bad Redis Cluster URL {redact_url(url)!r}: {_one_line(exc, url)}") from None
    except (redis.exceptions.RedisClusterException, redis.exceptions.RedisError) as exc:
        why = _one_line(exc, url)
        if "db" in why and "cluster mode" in why:  # redis-py says so as a cluster error
            raise ValueError(f"bad Redis Cluster URL {redact_url(url)!r}: {why}") from None
        raise ConnectionError(f"cannot connect to the Redis Cluster at {redact_url(url)}: {why}") from None


def _one_line(exc: BaseException, url: str) -> str:
    return scrub(" ".join(str(exc).split()), url) or type(exc).__name__
