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

from .broker import AuthenticationFailed, BrokerError
from .redact import error_text, redact_url, scrub

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

SCHEMES = ("redis", "rediss", "unix")


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
            f"redis url must start with redis://, rediss:// (TLS) or unix://, got {redact_url(url)!r}"
        )
    return url


def connect(url: str, *, blocking: bool, socket_timeout: float, options: dict[str, Any]) -> Redis:
    """A client for ``url`` with redis-py's own retries off: the caller must
    know when a reply was lost (a script may have run), so it retries itself.

    ``blocking`` clients serve BLPOP with no timeout: no socket timeout, one
    connection."""
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
        client: Redis = aioredis.Redis.from_url(url, **kwargs)
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
    pool = client.connection_pool
    connections = [*getattr(pool, "_available_connections", ()), *getattr(pool, "_in_use_connections", ())]
    for connection in connections:
        close = getattr(connection, "_close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()


def transient_errors() -> tuple[type[BaseException], ...]:
    """What a lost or restarting server raises (BusyLoadingError is a
    ConnectionError: the server is reading its append-only file)."""
    import redis.exceptions as rex

    return (rex.ConnectionError, rex.TimeoutError, ConnectionError, OSError)


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
