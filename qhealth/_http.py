"""The metrics server: a route table served so that scrapes never starve.

qhealth serves its metrics and the status page from one server that
``qhealth serve``, ``qhealth watch --serve``, ``qhealth demo --serve`` and
:func:`qhealth.prometheus.serve` share. A route is a path and a function
``Request -> Response``; adding a page is one :meth:`HttpServer.add_route`.

Why not ``http.server`` or prometheus-client's own server (wsgiref): both
give every connection a thread from the moment it is accepted, so a client
that trickles its request holds a thread for as long as it likes (their
timeout is per read), and both listen with a backlog of 5. Measured with 100
such clients holding connections and 20 scrapers (``bench/export.py --parts
server``), their scrapes waited for SYN retries (p99 about 1 s) or were turned
away, and the status page could crowd ``/metrics`` out of shared slots.

What holds here (standard library only, one asyncio loop on a daemon thread):

* a connection costs a coroutine, not a thread, until its request has fully
  arrived; :data:`MAX_CONNECTIONS` are kept at most, and when a new one comes
  at the limit the oldest connection that has not finished sending its
  request is dropped to make room, so idle or trickling clients can never
  lock a scraper out;
* each request has a whole-request deadline, :data:`REQUEST_DEADLINE_S`, to
  arrive (and as long for its answer to be taken), not a per-read timeout;
* handlers run in thread pools by lane: ``/metrics`` has its own
  (:data:`METRICS_THREADS`), every other route shares another
  (:data:`PAGE_THREADS`); a lane with :data:`LANE_QUEUE` requests waiting
  answers 503 at once, so a busy status page never delays a scrape;
* the listen backlog is :data:`BACKLOG`; the server binds 127.0.0.1 unless
  told otherwise, and logs a failing handler once per minute, not per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import http.client
import io
import ipaddress
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus

from ._log import ThrottledLog

DEFAULT_HOST = "127.0.0.1"
MAX_CONNECTIONS = 512
"""Connections kept open at once (the oldest still sending its request makes room for a new one)."""
REQUEST_DEADLINE_S = 10.0
"""A request must have arrived whole within this many seconds of the connection
(or of the previous answer on a kept-alive connection); its answer must be
taken within as long."""
BACKLOG = 128
"""Connections the kernel queues before they are accepted."""
METRICS_THREADS = 2
"""Threads answering ``/metrics``: its own lane, shared with no page."""
PAGE_THREADS = 2
"""Threads answering every other route."""
LANE_QUEUE = 64
"""Requests of one lane being answered or waiting; more are answered 503 at once."""
MAX_HEAD_BYTES = 16 * 1024
"""The request line and headers together; a longer head is answered 431."""
METRICS_PATH = "/metrics"
"""The route with a lane of its own."""


@dataclass(frozen=True, slots=True)
class Request:
    """What a route handler sees of a request."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    """Header names in lower case."""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass(frozen=True, slots=True)
class Response:
    """What a route handler returns."""

    body: bytes = b""
    status: int = 200
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default=())


Handler = Callable[[Request], Response]


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) or a bare ``PORT`` (on 127.0.0.1).

    ``:PORT`` is refused: Prometheus reads it as "every interface", which is
    not a default anyone should get by accident; say ``0.0.0.0:PORT``.
    """
    text = listen.strip()
    if text.isdigit():
        host, port_text = DEFAULT_HOST, text
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ValueError(f"listen address must be HOST:PORT (e.g. 127.0.0.1:9808), got {listen!r}")
        if not host:
            raise ValueError(
                f"listen address {listen!r} has no host: use 127.0.0.1:{port_text}, "
                f"or 0.0.0.0:{port_text} to listen on every interface"
            )
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0-65535, got {port} in {listen!r}")
    return host, port


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a host name: IPv4
        return socket.AF_INET


class _BadRequest(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def _parse_head(head: bytes) -> tuple[str, str, str, email.message.Message]:
    """(method, target, version, headers) of a request head, headers parsed by
    the standard library's own HTTP header parser."""
    line, _, rest = head.partition(b"\r\n")
    try:
        method, target, version = line.decode("latin-1").split(" ")
    except ValueError:
        raise _BadRequest(400, "bad request line") from None
    if not version.startswith("HTTP/1.") or not target.startswith("/"):
        raise _BadRequest(400, "bad request line")
    try:
        headers = http.client.parse_headers(io.BytesIO(rest))
    except http.client.HTTPException:
        raise _BadRequest(400, "bad headers") from None
    return method, target, version, headers


class _Connection:
    """One client connection, known to the server while it is open."""

    __slots__ = ("opened", "reading", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.opened = time.monotonic()
        self.reading = True
        """Waiting for (the rest of) a request: the kind dropped at the limit."""


class HttpServer:
    """Serves a route table from a daemon thread.

    ``routes`` maps exact paths (``"/metrics"``) to handlers; unknown paths get
    404. Start with :meth:`start`, stop with :meth:`close` (or use ``with``).
    The limits are the module's constants unless given.
    """

    def __init__(
        self,
        listen: str = f"{DEFAULT_HOST}:0",
        routes: Mapping[str, Handler] | None = None,
        *,
        max_connections: int = MAX_CONNECTIONS,
        request_deadline_s: float = REQUEST_DEADLINE_S,
        metrics_threads: int = METRICS_THREADS,
        page_threads: int = PAGE_THREADS,
        lane_queue: int = LANE_QUEUE,
        backlog: int = BACKLOG,
    ) -> None:
        self._host, self._port = parse_listen(listen)
        for name, value in (
            ("max_connections", max_connections),
            ("metrics_threads", metrics_threads),
            ("page_threads", page_threads),
            ("lane_queue", lane_queue),
            ("backlog", backlog),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if not request_deadline_s > 0:
            raise ValueError(f"request_deadline_s must be positive, got {request_deadline_s!r}")
        self._routes: dict[str, Handler] = dict(routes or {})
        self.max_connections = max_connections
        self.request_deadline_s = float(request_deadline_s)
        self.lane_queue = lane_queue
        self.backlog = backlog
        self._threads = {"metrics": metrics_threads, "pages": page_threads}
        self._log = ThrottledLog(interval_s=60.0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._stopped: asyncio.Event | None = None
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._waiting: dict[str, int] = {}
        self._connections: dict[_Connection, None] = {}  # insertion-ordered: oldest first
        self.dropped = 0
        """Connections dropped to make room at the connection limit."""
        self.refused = 0
        """Requests answered 503 because their lane was full."""

    # -- routes ---------------------------------------------------------------

    def add_route(self, path: str, handler: Handler) -> None:
        """Serve ``handler`` at ``path`` (replacing any route already there)."""
        if not path.startswith("/"):
            raise ValueError(f"a route path starts with '/', got {path!r}")
        self._routes = {**self._routes, path: handler}

    @property
    def routes(self) -> Mapping[str, Handler]:
        return dict(self._routes)

    # -- running --------------------------------------------------------------

    def start(self) -> HttpServer:
        """Bind and serve in a background thread. Raises ``OSError`` naming the
        address when it cannot bind."""
        if self._thread is not None:
            return self
        sock = socket.socket(_family(self._host), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(self.backlog)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen on {self._host}:{self._port}: {exc.strerror}") from None
        sock.setblocking(False)
        self._socket = sock
        self._executors = {
            lane: ThreadPoolExecutor(threads, thread_name_prefix=f"qhealth-http-{lane}")
            for lane, threads in self._threads.items()
        }
        self._waiting = dict.fromkeys(self._threads, 0)
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(sock, ready), name="qhealth-http", daemon=True
        )
        self._thread.start()
        ready.wait(10.0)
        return self

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(sock, ready))
        finally:
            loop.close()

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(
            self._connection, sock=sock, limit=MAX_HEAD_BYTES, backlog=self.backlog
        )
        ready.set()
        try:
            await self._stopped.wait()
        finally:
            server.close()
            for connection in list(self._connections):
                connection.writer.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

    def close(self) -> None:
        """Stop serving and release the port."""
        loop, thread = self._loop, self._thread
        if thread is None:
            return
        if loop is not None and self._stopped is not None:
            stopped = self._stopped
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stopped.set)
        thread.join(5.0)
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)
        if self._socket is not None:
            self._socket.close()
        self._thread = self._loop = self._socket = self._stopped = None
        self._executors = {}

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the real port when started with port 0)."""
        if self._socket is None:
            return self._host, self._port
        return self._host, int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    @property
    def connections(self) -> int:
        """Connections open right now."""
        return len(self._connections)

    @property
    def waiting(self) -> dict[str, int]:
        """Requests being answered or waiting, per lane (``metrics``, ``pages``)."""
        return dict(self._waiting)

    # -- dispatch -------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one request through the route table (also handy in tests)."""
        handler = self._routes.get(request.path)
        if handler is None:
            return Response(b"not found\n", status=404)
        if request.method not in ("GET", "HEAD"):
            return Response(b"method not allowed\n", status=405, headers=(("Allow", "GET, HEAD"),))
        try:
            return handler(request)
        except Exception:
            self._log.exception(f"route:{request.path}", "qhealth: handler for %s failed", request.path)
            return Response(b"internal error\n", status=500)

    def _make_room(self) -> None:
        """At the limit, drop the oldest connection still sending its request."""
        if len(self._connections) < self.max_connections:
            return
        victim = next((c for c in self._connections if c.reading), None)
        if victim is not None:
            self.dropped += 1
            self._connections.pop(victim, None)
            victim.writer.transport.abort()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._make_room()
        connection = _Connection(writer)
        self._connections[connection] = None
        try:
            if len(self._connections) > self.max_connections:  # every other one is being answered
                await self._send(writer, "HEAD", Response(b"busy, try again\n", 503, headers=_RETRY), False)
                return
            keep_alive = True
            while keep_alive:
                connection.reading = True
                try:
                    async with asyncio.timeout(self.request_deadline_s):
                        head = await reader.readuntil(b"\r\n\r\n")
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return  # too slow, gone, or closed between requests
                except asyncio.LimitOverrunError:
                    await self._send(writer, "GET", Response(b"request head too large\n", 431), False)
                    return
                connection.reading = False
                try:
                    method, target, version, headers = _parse_head(head)
                    if headers.get("Content-Length", "0").strip() not in ("", "0") or headers.get(
                        "Transfer-Encoding"
                    ):
                        raise _BadRequest(413, "a request body is not accepted here")
                except _BadRequest as bad:
                    await self._send(writer, "GET", Response(f"{bad}\n".encode(), bad.status), False)
                    return
                wants_close = (headers.get("Connection", "") or "").lower() == "close"
                keep_alive = version == "HTTP/1.1" and not wants_close
                url = urllib.parse.urlsplit(target)
                request = Request(
                    method=method,
                    path=url.path,
                    query=urllib.parse.parse_qs(url.query),
                    headers={k.lower(): v for k, v in headers.items()},
                )
                response = await self._answer(request)
                if not await self._send(writer, method, response, keep_alive):
                    return
        finally:
            self._connections.pop(connection, None)
            writer.close()

    async def _answer(self, request: Request) -> Response:
        lane = "metrics" if request.path == METRICS_PATH else "pages"
        if self._waiting[lane] >= self.lane_queue:
            self.refused += 1
            return Response(b"busy, try again\n", status=503, headers=_RETRY)
        self._waiting[lane] += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executors[lane], self.handle, request)
        finally:
            self._waiting[lane] -= 1

    async def _send(
        self, writer: asyncio.StreamWriter, method: str, response: Response, keep_alive: bool
    ) -> bool:
        """Write the answer; False when the client did not take it in time."""
        reason = HTTPStatus(response.status).phrase if response.status in _STATUSES else ""
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            "Server: qhealth",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
            *(f"{name}: {value}" for name, value in response.headers),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if method != "HEAD":
            writer.write(response.body)
        try:
            async with asyncio.timeout(self.request_deadline_s):
                await writer.drain()
        except (TimeoutError, ConnectionError):
            return False
        return keep_alive


_RETRY = (("Retry-After", "1"),)
_STATUSES = {s.value for s in HTTPStatus}
