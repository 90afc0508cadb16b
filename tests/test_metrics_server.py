"""The metrics server under crowding: slow and idle clients, many scrapers, a
busy status page. Scrapes never starve, and every limit holds at its value."""

from __future__ import annotations

import http.client
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry

from qhealth._http import BACKLOG, HttpServer, Request, Response
from qhealth.prometheus import metrics_route, register

from .export_support import busy_monitor


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    monitor, _ = busy_monitor()
    register(monitor, registry)
    return registry


def _server(registry: CollectorRegistry, **limits: int | float) -> HttpServer:
    server = HttpServer("127.0.0.1:0", **limits)  # type: ignore[arg-type]
    server.add_route("/metrics", metrics_route(registry))
    return server.start()


def _get(server: HttpServer, path: str = "/metrics", timeout: float = 5.0) -> tuple[int, bytes]:
    host, port = server.address
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class Trickler:
    """A client that sends a request one byte at a time, for as long as it is let."""

    def __init__(self, server: HttpServer, every_s: float) -> None:
        self.socket = socket.create_connection(server.address, timeout=5)
        self.every_s = every_s
        self.closed_after: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 10_000
        try:
            for byte in head:
                if self._stop.wait(self.every_s):
                    return
                self.socket.sendall(bytes([byte]))
        except OSError:
            self.closed_after = time.monotonic() - start

    def wait_closed(self, timeout: float) -> float | None:
        self._thread.join(timeout)
        return self.closed_after

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.socket.close()


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.02)


@pytest.fixture
def tricklers() -> Iterator[list[Trickler]]:
    made: list[Trickler] = []
    yield made
    for t in made:
        t.stop()


def test_100_slow_clients_and_20_scrapers_give_no_failed_scrape_and_p99_under_a_second(
    registry: CollectorRegistry, tricklers: list[Trickler]
) -> None:
    server = _server(registry)
    try:
        tricklers.extend(Trickler(server, every_s=0.2) for _ in range(100))
        times: list[float] = []
        failures: list[object] = []
        lock = threading.Lock()

        def scraper() -> None:
            for _ in range(10):
                t0 = time.perf_counter()
                try:
                    status, body = _get(server)
                    ok = status == 200 and b"qhealth_queue_depth" in body
                except OSError as exc:
                    ok, status = False, exc  # type: ignore[assignment]
                with lock:
                    times.append(time.perf_counter() - t0)
                    if not ok:
                        failures.append(status)

        threads = [threading.Thread(target=scraper) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert server.connections >= 100, "the slow clients were still connected"
    finally:
        server.close()
    assert failures == []
    assert len(times) == 200
    p99 = statistics.quantiles(times, n=100)[98]
    assert p99 < 1.0, f"p99 {p99:.3f} s"


@pytest.mark.slow
def test_a_trickling_client_is_cut_at_the_whole_request_deadline(
    registry: CollectorRegistry, tricklers: list[Trickler]
) -> None:
    """A byte every 0.1 s never trips a per-read timeout; the deadline is for the whole request."""
    server = _server(registry, request_deadline_s=1.0)
    try:
        trickler = Trickler(server, every_s=0.1)
        tricklers.append(trickler)
        closed_after = trickler.wait_closed(timeout=5.0)
    finally:
        server.close()
    assert closed_after is not None, "still connected after 5 s"
    assert 0.9 <= closed_after < 3.0


def test_at_the_connection_limit_the_oldest_unfinished_request_makes_room(
    registry: CollectorRegistry,
) -> None:
    server = _server(registry, max_connections=10)
    idle = [socket.create_connection(server.address, timeout=5) for _ in range(10)]
    try:
        eventually(lambda: server.connections == 10)
        status, _ = _get(server)
        assert status == 200
        assert server.dropped == 1
        assert idle[0].recv(1) == b"", "the oldest idle connection was closed"
        assert server.connections <= 10
    finally:
        for s in idle:
            s.close()
        server.close()


def test_a_status_page_that_hangs_never_delays_a_scrape(registry: CollectorRegistry) -> None:
    """Pages have their own threads and queue: when both are full, pages get
    503 at once and /metrics still answers."""
    release = threading.Event()

    def hanging(request: Request) -> Response:
        release.wait(10)
        return Response(b"page")

    server = _server(registry, page_threads=2, lane_queue=4)
    server.add_route("/", hanging)
    hung = [threading.Thread(target=_get, args=(server, "/", 15.0)) for _ in range(4)]
    try:
        for t in hung:
            t.start()
        eventually(lambda: server.waiting["pages"] == 4)
        t0 = time.perf_counter()
        assert _get(server)[0] == 200
        assert time.perf_counter() - t0 < 1.0
        assert _get(server, "/")[0] == 503
        assert server.refused == 1
    finally:
        release.set()
        for t in hung:
            t.join(15)
        server.close()


def test_the_listen_backlog_is_at_least_128(registry: CollectorRegistry) -> None:
    """What the kernel reports for the listening socket (ss's Send-Q)."""
    server = _server(registry)
    try:
        port = server.address[1]
        out = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    finally:
        server.close()
    backlog = int(out.split()[2])
    assert backlog == BACKLOG >= 128


def test_a_kept_alive_connection_serves_request_after_request(registry: CollectorRegistry) -> None:
    server = _server(registry)
    host, port = server.address
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        for _ in range(3):
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            assert response.status == 200 and b"qhealth_workers" in response.read()
        assert server.connections == 1
    finally:
        connection.close()
        server.close()


def test_head_answers_headers_only(registry: CollectorRegistry) -> None:
    server = _server(registry)
    host, port = server.address
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("HEAD", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        assert int(response.headers["Content-Length"]) > 1000
        assert response.read() == b""
    finally:
        connection.close()
        server.close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 413),
        (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"NONSENSE\r\n\r\n", 400),
        (b"POST /metrics HTTP/1.1\r\n\r\n", 405),
        (b"GET /nope HTTP/1.1\r\n\r\n", 404),
    ],
)
def test_bad_requests_get_their_status_and_the_server_goes_on(
    registry: CollectorRegistry, raw: bytes, status: int
) -> None:
    server = _server(registry)
    try:
        with socket.create_connection(server.address, timeout=5) as s:
            s.sendall(raw)
            answer = s.recv(100)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer
        assert _get(server)[0] == 200
    finally:
        server.close()
