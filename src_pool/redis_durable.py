"""Puts that return only once a replica has the item: the Redis broker's durable mode.

Redis replicates asynchronously: a master acknowledges a write, then sends
it to its replicas. A master that dies in between takes the write with it,
and the replica promoted in its place never had it: a failover can lose
items whose put already returned. ``RedisBroker(replicas=1)`` closes that
gap for puts: each put script is followed, on the same connection, by
``WAIT <replicas> <timeout>``, and the put returns only once that many
replicas have acknowledged everything the connection wrote.

Only puts need it. Every other write of the broker moves an item that
already exists (queue to processing list, processing list to queue, delayed
set or dead letters): losing one of those in a failover leaves the item
where it was, and it is delivered again (a duplicate, which at-least-once
allows), never lost.

``WAIT`` counts the replicas of the connection's own node, so on a cluster
the put runs on a plain connection to the node that owns the queue's slot
(found again after a failover). A put that ``WAIT`` does not confirm in
time raises :class:`NotReplicated`, a transient error: the broker retries it
(a duplicate is possible, a loss is not) until its deadline.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from .broker import BrokerError
from .redis_connect import CLUSTER_SUFFIX, connect, is_cluster

if TYPE_CHECKING:
    from redis.asyncio import Redis


class NotReplicated(BrokerError):
    """``WAIT`` returned before enough replicas acknowledged a put."""


class Replicated:
    """Runs a put script and ``WAIT`` on the connection of the node that owns the keys."""

    def __init__(self, url: str, *, replicas: int, timeout_ms: int, socket_timeout: float,
                 options: dict[str, Any]) -> None:  # fmt: skip
        self._url = url
        self._replicas = replicas
        self._timeout_ms = timeout_ms
        self._socket_timeout = socket_timeout
        self._options = options
        self._owner: Redis | None = None
        self._owner_at: tuple[str, int] | None = None

    async def put(self, client: Redis, script: Any, keys: list[str], args: list[Any]) -> Any:
        """The put script's reply, once ``replicas`` replicas have the write;
        :class:`NotReplicated` when they did not within the timeout."""
        target = await self._node(client, keys[0]) if is_cluster(self._url) else client
        try:
            async with target.pipeline(transaction=False) as pipe:  # one connection for both
                await script(keys=keys, args=args, client=pipe)
                pipe.execute_command("WAIT", self._replicas, self._timeout_ms)
                reply, acknowledged = await pipe.execute()
        except BaseException as exc:
            await self.forget()  # the owner may have moved: find it again next time
            if type(exc).__name__ in ("MovedError", "AskError"):
                raise NotReplicated(f"the queue's slot moved ({exc}): retrying on its new owner") from None
            raise
        if int(acknowledged) < self._replicas:
            raise NotReplicated(
                f"put not confirmed by {self._replicas} replica(s) within {self._timeout_ms} ms "
                f"({acknowledged} did): retrying, since a failover now could lose it"
            )
        return reply

    async def _node(self, client: Redis, key: str) -> Redis:
        """A plain client to the node serving ``key``'s slot now."""
        await client.exists(key)  # follows a MOVED, so that the slot map is current
        node = client.get_node_from_key(key)  # type: ignore[attr-defined] # a cluster client
        at = (str(node.host), int(node.port))
        if self._owner is None or self._owner_at != at:
            await self.forget()
            self._owner = connect(self._node_url(*at), blocking=False, socket_timeout=self._socket_timeout,
                                  options=self._options)  # fmt: skip
            self._owner_at = at
        return self._owner

    def _node_url(self, host: str, port: int) -> str:
        parts = urlsplit(self._url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
        return urlunsplit((parts.scheme[: -len(CLUSTER_SUFFIX)], netloc, "/0", "", ""))

    async def forget(self) -> None:
        owner, self._owner, self._owner_at = self._owner, None, None
        if owner is not None:
            with contextlib.suppress(Exception):  # a connection already gone is what we expect here
                await owner.aclose()
