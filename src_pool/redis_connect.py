"""Connecting to Redis: lazy import, URLs without their password, jittered reconnects.

Shared by the Redis broker and the Redis rate limiter. redis-py is imported
here, inside functions, so that ``import src_pool`` needs nothing optional.
A password never leaves this module: every URL that reaches a log line, an
exception or a ``repr`` goes through :func:`redact_url`, and every error text
from the client goes through :func:`scrub`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from redis.asyncio import Redis

from .broker import BrokerError

SCHEMES = ("redis", "rediss", "unix")


class RedisUnavailable(BrokerError):
    """Redis could not be reached within the time allowed."""


def import_redis() -> Any:
    """The ``redis.asyncio`` module, or an ImportError saying what to install."""
    try:
        import redis.asyncio
    except ImportError as exc:  # pragma: no cover - exercised only without redis installed
        raise ImportError(
            "src_pool's Redis broker requires the redis package installed: pip install 'qhealth[redis]'"
        ) from exc
    return redis.asyncio


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (user name and host kept)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable redis url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}"
    port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    if port:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def password_of(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def scrub(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` (raw or URL-quoted) hidden."""
    if not secret:
        return text
    from urllib.parse import quote

    for form in {secret, quote(secret, safe="")}:
        text = text.replace(form, "***")
    return text


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
        raise ValueError(f"bad redis url {redact_url(url)!r}: {scrub(str(exc), password_of(url))}") from None
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


class Backoff:
    """Exponential backoff with full jitter: sleep ``uniform(0, min(cap,
    base * 2**n))`` after the n-th consecutive failure, so that clients that
    lost the same server do not all come back at the same instant."""

    __slots__ = ("_rng", "base", "cap", "failures")

    def __init__(self, base: float = 0.05, cap: float = 2.0, rng: random.Random | None = None) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base!r} cap={cap!r}")
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.failures, 30))
        self.failures += 1
        return self._rng.uniform(0, ceiling)

    async def sleep(self) -> None:
        await asyncio.sleep(self.next_delay())

    def reset(self) -> None:
        self.failures = 0
