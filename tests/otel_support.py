"""A real OTLP metrics receiver for the tests (no tests here), built from
opentelemetry-proto: gRPC ``MetricsService/Export`` and HTTP ``/v1/metrics``.

It can also misbehave the ways a collector does in production: answer slowly,
or answer errors (gRPC UNAVAILABLE, HTTP 503).
"""

from __future__ import annotations

import gzip
import http.server
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

Behaviour = Literal["ok", "slow", "error"]


@dataclass(frozen=True)
class Point:
    """One data point as it arrived."""

    metric: str
    unit: str
    kind: str
    """gauge, sum or histogram."""
    monotonic: bool
    attributes: dict[str, str]
    value: float
    """The value; a histogram's count."""
    histogram_sum: float = 0.0
    bucket_counts: tuple[int, ...] = ()
    bounds: tuple[float, ...] = ()


def _attributes(point: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in point.attributes}


def points_of(request: ExportMetricsServiceRequest) -> Iterator[Point]:
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind == "histogram":
                    for p in m.histogram.data_points:
                        yield Point(
                            m.name,
                            m.unit,
                            kind,
                            False,
                            _attributes(p),
                            float(p.count),
                            p.sum,
                            tuple(p.bucket_counts),
                            tuple(p.explicit_bounds),
                        )
                elif kind in ("gauge", "sum"):
                    data = getattr(m, kind)
                    monotonic = kind == "sum" and data.is_monotonic
                    for p in data.data_points:
                        value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                        yield Point(m.name, m.unit, kind, monotonic, _attributes(p), value)


class OtlpReceiver:
    """Receives OTLP metric exports; ``requests`` holds every one that arrived."""

    def __init__(
        self,
        protocol: Literal["grpc", "http"],
        behaviour: Behaviour = "ok",
        delay_s: float = 2.0,
        port: int = 0,
    ):
        self.protocol = protocol
        self.behaviour = behaviour
        self.delay_s = delay_s
        self.requests: list[ExportMetricsServiceRequest] = []
        self.calls = 0
        self._lock = threading.Lock()
        self._grpc: grpc.Server | None = None
        self._http: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port

    # -- what arrived ----------------------------------------------------------

    def _arrived(self, request: ExportMetricsServiceRequest) -> bool:
        """Count a call; keep the request when the receiver behaves. Returns
        whether to answer with success."""
        with self._lock:
            self.calls += 1
        if self.behaviour == "slow":
            time.sleep(self.delay_s)
        if self.behaviour == "error":
            return False
        with self._lock:
            self.requests.append(request)
        return True

    def points(self) -> list[Point]:
        with self._lock:
            requests = list(self.requests)
        return [p for r in requests for p in points_of(r)]

    def latest(self) -> dict[tuple[str, frozenset[tuple[str, str]]], Point]:
        """The newest point of each series (metric, attributes)."""
        return {(p.metric, frozenset(p.attributes.items())): p for p in self.points()}

    def wait_for(self, names: set[str], timeout_s: float = 15.0) -> dict[str, Point]:
        """Merge exports until every name has arrived; {name: a point of it}."""
        deadline = time.monotonic() + timeout_s
        while True:
            seen = {p.metric: p for p in self.points()}
            if names <= set(seen) or time.monotonic() > deadline:
                missing = names - set(seen)
                assert not missing, f"never arrived at the OTLP receiver: {sorted(missing)}"
                return seen
            time.sleep(0.05)

    # -- serving ---------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """What to give the exporter: host:port URL for gRPC, the full URL for HTTP."""
        if self.protocol == "grpc":
            return f"http://127.0.0.1:{self.port}"
        return f"http://127.0.0.1:{self.port}/v1/metrics"

    def start(self) -> OtlpReceiver:
        if self.protocol == "grpc":
            self._start_grpc()
        else:
            self._start_http()
        return self

    def _start_grpc(self) -> None:
        receiver = self

        class Servicer(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
            def Export(self, request: ExportMetricsServiceRequest, context: Any) -> Any:
                if not receiver._arrived(request):
                    context.abort(grpc.StatusCode.UNAVAILABLE, "the receiver was told to fail")
                return metrics_service_pb2.ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Servicer(), server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._grpc = server

    def _start_http(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/metrics":
                    self._reply(404, b"")
                    return
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                if receiver._arrived(request):
                    self._reply(200, ExportMetricsServiceResponse().SerializeToString())
                else:
                    self._reply(503, b"")

            def _reply(self, status: int, body: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/x-protobuf")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a slow answer the exporter stopped waiting for

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._http = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait(5)
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def dead_endpoint(protocol: Literal["grpc", "http"]) -> str:
    """An endpoint nobody listens on (a port just bound and released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}" + ("" if protocol == "grpc" else "/v1/metrics")


# -- the OTel-to-Prometheus name translation of the OpenTelemetry Collector -------------

_UNIT_SUFFIX = {"s": "seconds", "ms": "milliseconds", "By": "bytes"}


def prometheus_name(name: str, unit: str, kind: str, monotonic: bool) -> str:
    """The Prometheus family name the Collector's Prometheus exporters give an
    OTLP metric (translator with suffixes on): dots to underscores; the unit
    appended (``s`` -> ``seconds``; ``{...}`` units dropped; ``1`` becomes
    ``ratio`` for gauges unless the name has it); ``_total`` for monotonic sums."""
    out = name.replace(".", "_")
    if not (unit.startswith("{") and unit.endswith("}")):
        if unit == "1":
            if kind == "gauge" and "ratio" not in out.split("_"):
                out += "_ratio"
        elif unit:
            suffix = _UNIT_SUFFIX.get(unit, unit)
            if not out.endswith("_" + suffix):
                out += "_" + suffix
    if kind == "sum" and monotonic:
        out += "_total"
    return out


# -- an instrumented asyncio pool, for the failure tests and bench/export.py ------------


async def _drain(queue: Any, items: int, workers: int) -> None:
    import asyncio

    async def worker() -> None:
        while True:
            item = await queue.get()
            if item is None:
                queue.task_done()
                return
            queue.task_done()

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    for i in range(items):
        await queue.put(i)
    for _ in range(workers):
        await queue.put(None)
    await queue.join()
    await asyncio.gather(*tasks)


def pool_throughput(monitor: Any, name: str, items: int = 100_000, workers: int = 10) -> tuple[float, float]:
    """A no-op pool (1 producer, ``workers`` workers, a queue of 100) on an
    instrumented asyncio.Queue watched by ``monitor``: (items per second of
    wall time, items per second of this process's CPU time).

    The second figure counts every thread of the process (the exporter's too,
    which is the cost being looked for) but not the time other processes on
    the machine take: on a shared machine it is the steadier measure."""
    import asyncio

    from qhealth.integrations.asyncio_queue import instrumented_queue

    async def main() -> tuple[float, float]:
        queue = instrumented_queue(name, 100, monitor=monitor, workers=workers)
        t0, c0 = time.perf_counter(), time.process_time()
        await _drain(queue, items, workers)
        t1, c1 = time.perf_counter(), time.process_time()
        return items / (t1 - t0), items / max(c1 - c0, 1e-9)

    return asyncio.run(main())


# -- a receiver in its own process that can go down and come back -----------------------

Mode = Literal["live", "dead", "slow", "error"]
MODES: tuple[Mode, ...] = ("live", "dead", "slow", "error")


def _serve_switchable(protocol: Literal["grpc", "http"], delay_s: float) -> None:
    """Subprocess main: a receiver on one port, switched by commands on stdin
    (a mode per line); answers ``ok`` once the mode is in force."""
    import sys

    port = int(dead_endpoint("grpc").rsplit(":", 1)[1])
    receiver: OtlpReceiver | None = None
    print(port, flush=True)
    for line in sys.stdin:
        mode = line.strip()
        if receiver is not None:
            receiver.close()
            receiver = None
        if mode != "dead":
            behaviour: Behaviour = "ok" if mode == "live" else mode  # type: ignore[assignment]
            for _ in range(50):  # the port can take a moment to free after a close
                try:
                    receiver = OtlpReceiver(protocol, behaviour, delay_s, port=port).start()
                    break
                except (OSError, RuntimeError):
                    time.sleep(0.05)
        print("ok" if mode == "dead" or receiver is not None else "failed", flush=True)


class SwitchableReceiver:
    """An OTLP receiver in a child process (so that its work is not counted
    in the measured process) that goes live, dead (nothing listens on the
    port), slow or failing on command."""

    def __init__(self, protocol: Literal["grpc", "http"], delay_s: float = 1.0) -> None:
        import subprocess
        import sys
        from pathlib import Path

        root = Path(__file__).resolve().parent.parent
        script = (
            f"from tests.otel_support import _serve_switchable; _serve_switchable({protocol!r}, {delay_s})"
        )
        self.protocol = protocol
        self._proc = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline())
        self.mode: Mode = "dead"

    @property
    def endpoint(self) -> str:
        base = f"http://127.0.0.1:{self.port}"
        return base if self.protocol == "grpc" else base + "/v1/metrics"

    def switch(self, mode: Mode) -> None:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(mode + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().strip()
        assert answer == "ok", f"the receiver could not switch to {mode}: {answer!r}"
        self.mode = mode

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except Exception:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def _ready_wait_s() -> float:
    """Seconds the calling thread has spent ready to run but not running
    (Linux schedstat: time on a run queue while other tasks had the CPU)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


@dataclass
class Chunk:
    """One stretch of the pool's work while the collector was in one mode."""

    mode: Mode
    wall: float
    """Items per second of wall time."""
    cpu: float
    """Items per second of this process's CPU time (all its threads)."""
    own: float
    """Items per second of the time the pool's thread ran or waited inside
    this process: wall time minus the time it sat ready to run while the
    kernel ran other programs. Waiting for the GIL held by an exporter thread,
    or blocking on a dead collector, counts; other programs' load does not."""
    exports: int
    """Export attempts made while the pool ran (failing collectors are tried
    less and less often: most of a failing stretch is spent backing off)."""
    failures: int
    met: int
    """Exports that went through (live) or failed (the other modes) since the
    switch, the unmeasured settling included: proof that the mode was in force."""


def pool_while_collector_flips(
    protocol: Literal["grpc", "http"],
    modes: tuple[Mode, ...] = MODES,
    *,
    rounds: int = 10,
    chunk_items: int = 150_000,
    settle_s: float = 0.3,
    interval_s: float = 0.1,
    timeout_s: float = 0.5,
) -> list[Chunk]:
    """An instrumented asyncio pool (1 producer, 10 no-op workers, a queue of
    100) runs without a break while its monitor exports over OTLP every
    ``interval_s`` to a collector that is switched, between stretches of
    ``chunk_items`` items, between the ``modes``: live, dead, slow, failing.
    The modes alternate in forward then reverse order (ABBA), so that the load
    other programs put on the machine falls on every mode alike; after each
    switch the pool works ``settle_s`` unmeasured, so that the exporter is in
    the new mode's steady state (retrying, timing out) when measuring starts.
    """
    import asyncio

    from qhealth import Monitor
    from qhealth.integrations.asyncio_queue import instrumented_queue
    from qhealth.otel import setup_otlp

    receiver = SwitchableReceiver(protocol, delay_s=2 * timeout_s)
    monitor = Monitor(interval=0.05)
    export = setup_otlp(
        monitor,
        protocol="grpc" if protocol == "grpc" else "http/protobuf",
        endpoint=receiver.endpoint,
        interval_s=interval_s,
        timeout_s=timeout_s,
    )
    chunks: list[Chunk] = []

    async def main() -> None:
        queue = instrumented_queue("pool", 100, monitor=monitor, workers=10)

        async def worker() -> None:
            while True:
                item = await queue.get()
                queue.task_done()
                if item is None:
                    return

        tasks = [asyncio.create_task(worker()) for _ in range(10)]
        loop = asyncio.get_running_loop()
        for r in range(rounds):
            for mode in modes if r % 2 == 0 else modes[::-1]:
                await loop.run_in_executor(None, receiver.switch, mode)

                def outcome(live: bool = mode == "live") -> int:
                    return export.successes if live else export.failures

                # Work unmeasured until the exporter has met the new mode (an
                # export went through, or failed) and settle_s has passed.
                seen = outcome()
                settle_until = time.monotonic() + settle_s
                give_up = settle_until + 40 * interval_s
                while time.monotonic() < settle_until or (outcome() == seen and time.monotonic() < give_up):
                    for i in range(1000):
                        await queue.put(i)
                e0, f0 = export.exports, export.failures
                t0, c0, q0 = time.perf_counter(), time.process_time(), _ready_wait_s()
                for i in range(chunk_items):
                    await queue.put(i)
                t1, c1, q1 = time.perf_counter(), time.process_time(), _ready_wait_s()
                chunks.append(
                    Chunk(
                        mode,
                        chunk_items / (t1 - t0),
                        chunk_items / max(c1 - c0, 1e-9),
                        chunk_items / max(t1 - t0 - (q1 - q0), 1e-9),
                        export.exports - e0,
                        export.failures - f0,
                        outcome() - seen,
                    )
                )
        for _ in tasks:
            await queue.put(None)
        await asyncio.gather(*tasks)

    monitor.start()
    try:
        asyncio.run(main())
    finally:
        monitor.stop()
        receiver.switch("live")  # let the last export through, so shutdown does not wait
        export.shutdown(timeout_s=2 * timeout_s + 1)
        receiver.close()
    return chunks


def paired_ratios(chunks: list[Chunk], mode: Mode, measure: str = "cpu") -> list[float]:
    """``mode``/live throughput for each round (the chunks of one round are
    minutes apart at most, so they saw the same machine)."""
    per_round = len({c.mode for c in chunks})
    ratios = []
    for i in range(0, len(chunks), per_round):
        round_ = {c.mode: getattr(c, measure) for c in chunks[i : i + per_round]}
        ratios.append(round_[mode] / round_["live"])
    return ratios
