"""A TCP proxy in front of the machine's RabbitMQ, for tests that cut connections."""

from __future__ import annotations

import asyncio
import contextlib

from tests.services import free_port


class Proxy:
    """A TCP proxy in front of RabbitMQ that can cut every connection, as a
    network failure or a broker restart does."""

    def __init__(self, amqp_url: str) -> None:
        self._target = ("127.0.0.1", 5672)
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._server: asyncio.Server | None = None
        self._accepting = True
        self.port = free_port()
        self.url = amqp_url.replace("127.0.0.1:5672", f"127.0.0.1:{self.port}")

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self.cut()

    def stop_accepting(self) -> None:
        self._accepting = False

    def accept_again(self) -> None:
        self._accepting = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._accepting:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._pairs.append((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def cut(self) -> None:
        pairs, self._pairs = self._pairs, []
        for down, up in pairs:
            down.transport.abort()
            up.transport.abort()
        await asyncio.sleep(0)
