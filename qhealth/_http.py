"""A small HTTP server with a route table: ``/metrics`` today, more pages later.

qhealth serves its metrics (and, later, a status page) from one server that
``qhealth serve``, ``qhealth demo --serve`` and :func:`qhealth.prometheus.serve`
share. A route is a path and a function ``Request -> Response``; adding a page
is one :meth:`HttpServer.add_route` call, with no subclassing of
``http.server`` classes.

Why not ``prometheus_client.start_http_server``: it serves one registry and
nothing else. This server binds 127.0.0.1 unless told otherwise, answers at
most :data:`MAX_CONCURRENT` requests at a time (others get 503 at once), gives
each connection a read timeout, and logs a failing handler once per minute
instead of once per request. Standard library only.
"""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ._log import ThrottledLog

DEFAULT_HOST = "127.0.0.1"
MAX_CONCURRENT = 8
"""Requests handled at once; more are answered 503 without waiting."""
REQUEST_TIMEOUT_S = 10.0
"""A client that sends nothing for this long is disconnected."""


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
    except ValueError:  # a host name: let getaddrinfo decide, IPv4 first
        return socket.AF_INET


class HttpServer:
    """Serves a route table from a daemon thread.

    ``routes`` maps exact paths (``"/metrics"``) to handlers; unknown paths get
    404. Start with :meth:`start`, stop with :meth:`close` (or use ``with``).
    """

    def __init__(
        self, listen: str = f"{DEFAULT_HOST}:0", routes: Mapping[str, Handler] | None = None
    ) -> None:
        self._host, self._port = parse_listen(listen)
        self._routes: dict[str, Handler] = dict(routes or {})
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        self._log = ThrottledLog(interval_s=60.0)
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

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
        if self._server is not None:
            return self
        handler_class = self._handler_class()
        server_class = type(
            "_Server",
            (http.server.ThreadingHTTPServer,),
            {"address_family": _family(self._host), "daemon_threads": True},
        )
        try:
            server = server_class((self._host, self._port), handler_class)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {self._host}:{self._port}: {exc.strerror}") from None
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="qhealth-http", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the real port when started with port 0)."""
        if self._server is None:
            return self._host, self._port
        return self._host, int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

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

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        owner = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT_S
            server_version = "qhealth"
            sys_version = ""

            def do_GET(self) -> None:
                self._answer()

            def do_HEAD(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                if not owner._slots.acquire(blocking=False):
                    self._send(Response(b"busy, try again\n", status=503, headers=(("Retry-After", "1"),)))
                    return
                try:
                    url = urllib.parse.urlsplit(self.path)
                    request = Request(
                        method=self.command,
                        path=url.path,
                        query=urllib.parse.parse_qs(url.query),
                        headers={k.lower(): v for k, v in self.headers.items()},
                    )
                    self._send(owner.handle(request))
                finally:
                    owner._slots.release()

            def _send(self, response: Response) -> None:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for name, value in response.headers:
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(response.body)

            def log_message(self, format: str, *args: object) -> None:
                """Access logs stay off: a scrape every second would flood the pool's logs."""

        return _Handler
