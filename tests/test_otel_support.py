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

    def __init__(self, protocol: Literal["grpc", "http"], behaviour: Behaviour = "ok", delay_s: float = 2.0):
        self.protocol = protocol
        self.behaviour = behaviour
        self.delay_s = delay_s
        self.requests: list[ExportMetricsServiceRequest] = []
        self.calls = 0
        self._lock = threading.Lock()
        self._grpc: grpc.Server | None = None
        self._http: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

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
        self.port = server.add_insecure_port("127.0.0.1:0")
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
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
