"""Connecting to Redis: lazy import, URLs without their password, what counts as a lost connection.

Shared by the Redis broker and the Redis rate limiter. redis-py is imported
here, inside functions, so that ``import src_pool`` needs nothing optional.
A password never leaves this module: every URL that reaches a log line, an
exception or a ``repr`` goes through :func:`redact_url`, and every error text
from the client goes through :func:`scrub`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis

from qhealth.redact import error_text, redact_url, scrub

from .broker import AuthenticationFailed, BrokerError

__all__ = [
    "RedisUnavailable",
    "abandon",
    "auth_errors",
    "check_url",
    "connect",
    "import_redis",
    "redact_url",
    "refused_login",
    "scrub",
    "transient_errors",
]

SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
CLUSTER_SUFFIX = "+cluster"


class RedisUnavailable(BrokerError):
    """Redis could not be reached within the time allowed."""


def import_redis() -> Any:
    """The ``redis.asyncio`` module, or an ImportError saying what to install."""
    try:
        import redis.asyncio
    except ImportError as exc:  # pragma: no cover - exercised only without redis installed
        raise ImportError(
            "src_pool on Redis (broker, rate limiter, semaphore) requires the redis package installed: "
            "pip install 'qhealth[redis]'"
        ) from exc
    return redis.asyncio


def check_url(url: object) -> str:
    if not isinstance(url, str) or not url:
        raise ValueError(f"redis url must be a non-empty string, got {type(url).__name__}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ValueError(
            "redis url must start with redis://, rediss:// (TLS), unix://, or redis+cluster:// "
            f"(rediss+cluster://) for a Redis Cluster, got {redact_url(url)!r}"
        )
    return url


def is_cluster(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return url.split("://", 1)[0].lower().endswith(CLUSTER_SUFFIX)


def connect(url: str, *, blocking: bool, socket_timeout: float, options: dict[str, Any]) -> Redis:
    """A client for ``url`` with redis-py's own retries off: the caller must
    know when a reply was lost (a script may have run), so it retries itself.

    ``blocking`` clients serve BLPOP with no timeout: no socket timeout, one
    connection (per node of a cluster).

    A ``redis+cluster://`` URL (any node of the cluster) gives redis-py's
    cluster client: every key src_pool uses for one queue, limiter or
    semaphore shares a ``{name}`` hash tag, so each script runs on the one
    node that owns the slot, and the client follows the slot to a replica
    promoted by a failover. It answers the same commands (typed as one)."""
    aioredis = import_redis()
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    kwargs: dict[str, Any] = {
        "retry": Retry(NoBackoff(), 0),
        "socket_connect_timeout": min(socket_timeout, 5.0),
        "socket_keepalive": True,
        "health_check_interval": 0,
    }
    if blocking:
        kwargs["socket_timeout"] = None
        kwargs["max_connections"] = 1
    else:
        kwargs["socket_timeout"] = socket_timeout
    kwargs.update(options)
    try:
        if is_cluster(url):
            scheme, rest = url.split("://", 1)
            plain = f"{scheme[: -len(CLUSTER_SUFFIX)]}://{rest}"
            client: Redis = aioredis.RedisCluster.from_url(plain, **kwargs)
        else:
            client = aioredis.Redis.from_url(url, **kwargs)
    except ValueError as exc:  # its message may quote the URL, password included
        raise ValueError(f"bad redis url {redact_url(url)!r}: {scrub(str(exc), url)}") from None
    return client


def abandon(client: Redis) -> None:
    """Close a client whose event loop is gone, without awaiting anything.

    ``aclose()`` needs the loop the connections were made on; once that loop
    has ended (a limiter used by one ``asyncio.run`` and then another), the
    only way left is redis-py's own silent close of each connection. Without
    it the sockets stay open until garbage collection, which then warns.
    """
    pool = getattr(client, "connection_pool", None)
    connections = [*getattr(pool, "_available_connections", ()), *getattr(pool, "_in_use_connections", ())]
    get_nodes = getattr(client, "get_nodes", None)  # a cluster client: each node has its connections
    for node in get_nodes() if callable(get_nodes) else ():
        connections += getattr(node, "_connections", ())
    for connection in connections:
        close = getattr(connection, "_close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()


def transient_errors() -> tuple[type[BaseException], ...]:
    """What a lost or restarting server raises (BusyLoadingError is a
    ConnectionError: the server is reading its append-only file), and what a
    cluster says while a slot has no master yet (a failover under way)."""
    import redis.exceptions as rex

    return (
        rex.ConnectionError,
        rex.TimeoutError,
        ConnectionError,
        OSError,
        rex.ClusterDownError,
        rex.TryAgainError,
        rex.RedisClusterException,
    )


def auth_errors() -> tuple[type[BaseException], ...]:
    """What a refused login raises (a ConnectionError to redis-py, but no
    retry can cure it): a wrong password, or none where one is required."""
    import redis.exceptions as rex

    return (rex.AuthenticationError,)


def refused_login(url: str, exc: BaseException) -> AuthenticationFailed:
    """One clear line for a refused login, the password masked. Redis's own
    words for a missing password ("HELLO must be called with the client
    already authenticated...", "NOAUTH ...") say what to do only to those who
    know the protocol."""
    text = error_text(exc, url)
    if "HELLO must be called" in text or "NOAUTH" in text or "Authentication required" in text:
        return AuthenticationFailed(
            f"redis at {redact_url(url)} requires a password and the URL gives none: "
            "put it in the URL (redis://:PASSWORD@host:port/db, or redis://USER:PASSWORD@... with ACLs)"
        )
    return AuthenticationFailed(
        f"redis at {redact_url(url)} refused the login ({text}): check the user and password in the URL"
    )
