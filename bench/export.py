"""What exporting costs: scrape time, OpenTelemetry export CPU, and a pool's
pace while its collector is down, slow or failing.

Part 1: one Prometheus scrape with 1, 100 and 10,000 queues, every queue with
all its series and both histograms: prometheus-client's own collect + encode
(the baseline, measured in the same run) against qhealth's prepared lines,
the first scrape after a tick and a repeated one, and a whole HTTP GET.

Part 2: the CPU share of OpenTelemetry export at a 1 s interval, over OTLP
to a real receiver in another process (gRPC and HTTP/protobuf), for 1 and 100
queues: the process's CPU time with export minus the same program's without,
per wall second, for the SDK's instruments (how it was done before) and for
qhealth's own points (``setup_otlp`` now), alternated in one run.

Part 3: an instrumented asyncio pool (no-op items, 10 workers) runs while its
collector is switched between live, dead, slow and failing, alternated
(ABBA), exporting every 0.25 s; each mode is compared with the live stretch
of the same round: throughput per second of wall time, of the pool thread's
own time (wall minus the time the kernel kept it waiting for a CPU: steady
when other programs load the machine, while GIL waits and blocking still
count) and of the process's CPU time.

Part 4: the metrics server crowded by 100 clients that trickle their
request and 20 scrapers, against prometheus-client's own server and the
standard library's ThreadingHTTPServer (what qhealth used before).

    python3 bench/export.py [--quick]

    python3 bench/export.py --parts scrape      # part 1 only
    python3 bench/export.py --parts instructions   # part 1b: callgrind, needs valgrind

It ends with ``otel export cpu share for 100 queues: X.XXX`` (HTTP/protobuf)
and, last, ``scrape ms for 100 queues: X.X``: the median CPU time of the
first scrape after a tick with 100 queues (the wall time on an idle machine).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _callgrind import instructions
from prometheus_client import CollectorRegistry, generate_latest

import qhealth
from qhealth.prometheus import encode, register, serve
from tests.otel_support import (
    MODES,
    SwitchableReceiver,
    paired_ratios,
    pool_while_collector_flips,
)


def _busy_monitor(
    queues: int, clock: list[float], window_s: float = 60.0
) -> tuple[qhealth.Monitor, list[qhealth.Probe]]:
    """Every queue with all its series (a full window, so the classifier's
    outputs exist) and both histograms."""
    config = qhealth.ClassifierConfig(window_s=window_s)
    monitor = qhealth.Monitor(interval=1.0, clock=lambda: clock[0], config=config)
    probes = [
        monitor.watch(f"queue-{i:05d}", workers=8, capacity=1000, oldest_age=lambda: 1.5)
        for i in range(queues)
    ]
    for tick in range(1, int(window_s) + 10):
        _traffic(probes, tick)
        clock[0] = float(tick)
        monitor.tick()
    return monitor, probes


def _traffic(probes: list[qhealth.Probe], tick: int) -> None:
    for n, probe in enumerate(probes):
        probe.enqueued(20)
        for k in range(20):
            probe.started()
            probe.failed() if k == 0 else probe.succeeded()
            probe.observe_duration(0.001 * ((k + n + tick) % 40))
            probe.observe_wait(0.0005 * k)
        probe.attempted(22)
        probe.rate_limited(tick % 3)
        probe.polled(True)


def _cpu_ms(fn: Callable[[CollectorRegistry], object], registry: CollectorRegistry) -> float:
    c0 = time.thread_time()
    fn(registry)
    return (time.thread_time() - c0) * 1000


def scrape_table(sizes: tuple[int, ...], repeat: int) -> dict[int, float]:
    """Per size: the baseline (prometheus-client collecting and encoding every
    sample, as every scrape did before), the first scrape after a tick (every
    queue's lines written anew: what a scrape every 15 s of a monitor ticking
    every second costs), a repeated scrape with no tick between (what every
    scrape costs with ``prepare_at_tick=True``, whose ticks then pay the
    previous column), and a whole HTTP GET of /metrics as Prometheus asks for
    it (OpenMetrics, gzip)."""
    print("Part 1: one scrape, median CPU ms of the scraping thread (the wall time on an idle machine)")
    print(
        f"{'queues':>6}  {'series':>9}  {'bytes':>11}  {'baseline ms':>11}  {'after a tick ms':>15}  "
        f"{'speed-up':>8}  {'repeated ms':>11}  {'HTTP GET ms':>11}"
    )
    medians: dict[int, float] = {}
    for queues in sizes:
        clock = [0.0]
        monitor, probes = _busy_monitor(queues, clock, window_s=60.0 if queues <= 1000 else 5.0)
        registry = CollectorRegistry()
        register(monitor, registry)
        body = generate_latest(registry)
        assert encode(registry)[0] == body, "the prepared scrape must equal prometheus-client's"
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        rounds = repeat if queues < 10_000 else max(3, repeat // 10)
        baseline, fresh, repeated = [], [], []
        for _ in range(rounds):
            clock[0] += 1.0
            _traffic(probes, int(clock[0]))
            monitor.tick()  # new snapshots and histograms: every queue's lines are stale
            fresh.append(_cpu_ms(encode, registry))
            repeated.append(_cpu_ms(encode, registry))
            baseline.append(_cpu_ms(generate_latest, registry))
        server = serve(listen="127.0.0.1:0", registry=registry)
        http_times = []
        request = urllib.request.Request(
            server.url + "/metrics",
            headers={"Accept": "application/openmetrics-text;version=1.0.0", "Accept-Encoding": "gzip"},
        )
        try:
            for _ in range(rounds):
                clock[0] += 1.0
                monitor.tick()
                t0 = time.perf_counter()
                with urllib.request.urlopen(request, timeout=60) as response:
                    response.read()
                http_times.append((time.perf_counter() - t0) * 1000)
        finally:
            server.close()
        medians[queues] = statistics.median(fresh)
        base = statistics.median(baseline)
        print(
            f"{queues:>6}  {series:>9,}  {len(body):>11,}  {base:>11.2f}  {medians[queues]:>15.2f}  "
            f"{base / medians[queues]:>7.1f}x  {statistics.median(repeated):>11.2f}  "
            f"{statistics.median(http_times):>11.2f}"
        )
    return medians


def _trickle(address: tuple[str, int], stop: threading.Event, every_s: float) -> None:
    """A client that sends its request one byte at a time (slowloris)."""
    try:
        with socket.create_connection(address, timeout=30) as s:
            for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000:
                if stop.wait(every_s):
                    return
                s.sendall(bytes([byte]))
    except OSError:
        pass  # cut by the server


def _crowded(address: tuple[str, int], slow: int, scrapers: int, each: int) -> tuple[int, list[float], float]:
    """``slow`` trickling clients, then ``scrapers`` threads scraping ``each``
    times: (failed scrapes, scrape times in s, time for the slow clients to connect)."""
    stop = threading.Event()
    t0 = time.perf_counter()
    slow_threads = [threading.Thread(target=_trickle, args=(address, stop, 0.2)) for _ in range(slow)]
    for t in slow_threads:
        t.start()
    time.sleep(0.5)
    connect_s = time.perf_counter() - t0
    times: list[float] = []
    failed = [0]
    lock = threading.Lock()

    def scraper() -> None:
        for _ in range(each):
            start = time.perf_counter()
            try:
                connection = http.client.HTTPConnection(*address, timeout=10)
                connection.request("GET", "/metrics")
                response = connection.getresponse()
                ok = response.status == 200 and len(response.read()) > 0
                connection.close()
            except OSError:
                ok = False
            with lock:
                times.append(time.perf_counter() - start)
                failed[0] += not ok

    threads = [threading.Thread(target=scraper) for _ in range(scrapers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in slow_threads:
        t.join()
    return failed[0], times, connect_s


def server_table(rounds: int) -> None:
    """qhealth's server against prometheus-client's own (wsgiref, a thread per
    connection, backlog 5) and the standard library's ThreadingHTTPServer
    (qhealth's server before: 8 shared slots), same registry, same crowd."""
    import http.server

    from prometheus_client import start_wsgi_server

    print("\nPart 4: 100 clients trickling their request (a byte per 0.2 s)")
    print("        + 20 scrapers x 10 scrapes of 100 queues")
    print(f"{'server':<34}  {'failed':>6}  {'p50 ms':>8}  {'p99 ms':>8}  {'max ms':>8}")
    clock = [0.0]
    monitor, _ = _busy_monitor(100, clock)
    registry = CollectorRegistry()
    register(monitor, registry)

    def ours() -> tuple[tuple[str, int], Callable[[], None]]:
        server = serve(listen="127.0.0.1:0", registry=registry)
        return server.address, server.close

    def prometheus_client_server() -> tuple[tuple[str, int], Callable[[], None]]:
        httpd, _ = start_wsgi_server(0, addr="127.0.0.1", registry=registry)
        return ("127.0.0.1", httpd.server_address[1]), lambda: (httpd.shutdown(), httpd.server_close())

    def threading_http_server() -> tuple[tuple[str, int], Callable[[], None]]:
        slots = threading.BoundedSemaphore(8)

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10.0

            def do_GET(self) -> None:
                if not slots.acquire(blocking=False):
                    self.send_response(503)
                    self.end_headers()
                    return
                try:
                    body = generate_latest(registry)
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    slots.release()

            def log_message(self, format: str, *args: object) -> None:
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return ("127.0.0.1", httpd.server_address[1]), lambda: (httpd.shutdown(), httpd.server_close())

    for name, start in (
        ("qhealth (asyncio, lanes)", ours),
        ("prometheus-client start_wsgi_server", prometheus_client_server),
        ("ThreadingHTTPServer, 8 shared slots", threading_http_server),
    ):
        failed, times = 0, []
        for _ in range(rounds):
            address, close = start()
            try:
                f, t, _ = _crowded(address, slow=100, scrapers=20, each=10)
            finally:
                close()
            failed += f
            times += t
        q = statistics.quantiles(times, n=100)
        print(
            f"{name:<34}  {failed:>6}  {q[49] * 1000:>8.1f}  {q[98] * 1000:>8.1f}  {max(times) * 1000:>8.1f}"
        )


def _scrape_child(mode: str, scrapes: int) -> None:
    """The callgrind child: 100 busy queues, then ``scrapes`` rounds of
    traffic + tick + one scrape (``none``: no scrape; ``qhealth``: the
    prepared lines; ``baseline``: prometheus-client's collect + encode)."""
    clock = [0.0]
    monitor, probes = _busy_monitor(100, clock, window_s=5.0)
    registry = CollectorRegistry()
    register(monitor, registry)
    for _ in range(scrapes):
        clock[0] += 1.0
        _traffic(probes, int(clock[0]))
        monitor.tick()
        if mode == "qhealth":
            encode(registry)
        elif mode == "baseline":
            generate_latest(registry)


def instructions_table() -> float:
    """Instructions per scrape of 100 queues after a tick, counted by
    callgrind (runs of 6 and 2 rounds, minus the same rounds without a
    scrape): steady whatever else loads the machine. Returns the ratio."""
    print("\nPart 1b: instructions per scrape of 100 queues after a tick")
    print("         (callgrind; 6 - 2 rounds, less the same rounds without a scrape)")
    rounds = {
        mode: instructions(__file__, mode, "6") - instructions(__file__, mode, "2")
        for mode in ("none", "qhealth", "baseline")
    }
    per = {mode: (count - rounds["none"]) / 4 for mode, count in rounds.items() if mode != "none"}
    print(f"{'baseline (prometheus-client)':<30}  {per['baseline'] / 1e6:>8.1f} M")
    print(f"{'qhealth prepared lines':<30}  {per['qhealth'] / 1e6:>8.1f} M")
    print(f"{'ratio':<30}  {per['baseline'] / per['qhealth']:>8.1f}x")
    return per["baseline"] / per["qhealth"]


def _feed(probes: list[qhealth.Probe], stop: threading.Event) -> None:
    """Traffic for the OTel runs, per queue: 50 items a second, the first 16
    of each second timed (wait and duration), as the asyncio integration times
    16 items per tick by default: 32 histogram records per queue per tick."""
    step = 0
    while not stop.wait(0.1):
        for probe in probes:
            probe.enqueued(5)
            for k in range(5):
                probe.started()
                probe.succeeded()
                if (step % 10) * 5 + k < 16:
                    probe.observe_duration(0.01)
                    probe.observe_wait(0.002)
            probe.attempted(5)
        step += 1


def _cpu_of_run(queues: int, seconds: float, mode: str, protocol: str, endpoint: str) -> float:
    """CPU seconds this process spent while a monitor ticked every second for
    ``seconds`` with traffic on ``queues`` queues: without export (``none``),
    exporting through the SDK's instruments (``sdk``: ``qhealth.otel.instrument``
    on a MeterProvider with the SDK's periodic reader and OTLP exporter, how
    setup_otlp worked before) or through qhealth's own points (``qhealth``:
    ``setup_otlp``)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from qhealth.otel import instrument, setup_otlp

    monitor = qhealth.Monitor(interval=1.0)
    probes = [monitor.watch(f"q{i:03d}", workers=4) for i in range(queues)]
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(probes, stop))
    shutdown: Callable[[], object] = lambda: None  # noqa: E731
    failures: Callable[[], int] = lambda: 0  # noqa: E731
    if mode == "qhealth":
        export = setup_otlp(monitor, protocol=protocol, endpoint=endpoint, interval_s=1.0, timeout_s=5.0)
        shutdown, failures = export.shutdown, lambda: export.failures
    elif mode == "sdk":
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
                OTLPMetricExporter,
            )
        url = endpoint if protocol == "grpc" else endpoint + "/v1/metrics"
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=url, timeout=5), 1000)
        provider = MeterProvider(metric_readers=[reader])
        instrument(monitor, provider)
        shutdown = provider.shutdown
    monitor.start()
    feeder.start()
    c0 = time.process_time()
    time.sleep(seconds)
    cpu = time.process_time() - c0
    stop.set()
    feeder.join()
    monitor.stop()
    assert failures() == 0, "exports failed: the figure would not be the cost of exporting"
    shutdown()
    return cpu


def otel_cpu_table(seconds: float, rounds: int) -> float:
    """CPU share of export (CPU s per wall s, with minus without), medians of
    ``rounds`` runs of each mode, the modes alternated; returns qhealth's
    share at 100 queues over HTTP/protobuf."""
    print("\nPart 2: OpenTelemetry export at a 1 s interval to a real OTLP receiver (another process),")
    print(f"        CPU s per wall s of this process, medians of {rounds} alternated runs of {seconds:g} s")
    print(
        f"{'queues':>6}  {'protocol':<13}  {'no export':>9}  {'SDK instruments':>15}  {'qhealth points':>14}"
    )
    share = 0.0
    for protocol_name, receiver_protocol in (("grpc", "grpc"), ("http/protobuf", "http")):
        receiver = SwitchableReceiver(receiver_protocol)  # type: ignore[arg-type]
        receiver.switch("live")
        endpoint = receiver.endpoint.removesuffix("/v1/metrics")
        try:
            for queues in (1, 100):
                runs: dict[str, list[float]] = {"none": [], "sdk": [], "qhealth": []}
                for r in range(rounds):
                    order = ["none", "sdk", "qhealth"]
                    for mode in order if r % 2 == 0 else order[::-1]:
                        runs[mode].append(
                            _cpu_of_run(queues, seconds, mode, protocol_name, endpoint) / seconds
                        )
                base = statistics.median(runs["none"])
                sdk = statistics.median(runs["sdk"]) - base
                ours = statistics.median(runs["qhealth"]) - base
                print(f"{queues:>6}  {protocol_name:<13}  {base:>9.3f}  {sdk:>+15.3f}  {ours:>+14.3f}")
                if queues == 100 and protocol_name == "http/protobuf":
                    share = ours
        finally:
            receiver.close()
    return share


def otel_cycle_table(cycles: int) -> None:
    """Where one export's CPU goes, in one thread with no network (steadier
    than part 2 on a loaded machine): per cycle of 100 queues, the tick's own
    histogram work, collecting the points, and the OTLP exporter's protobuf
    encoding of them; the SDK's instruments against qhealth's points."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        InMemoryMetricReader,
        MetricsData,
        ResourceMetrics,
        ScopeMetrics,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from qhealth._contract import DEFAULT_BUCKETS
    from qhealth._otel_points import Producer
    from qhealth.otel import instrument

    print(f"\nPart 2b: one export cycle of 100 queues, CPU ms in one thread, medians of {cycles}")
    print(f"{'path':<16}  {'tick extra':>10}  {'collect':>8}  {'encode':>8}  {'total':>8}  {'points':>6}")
    resource = Resource.create({})
    scope = InstrumentationScope("qhealth", "bench")
    for path in ("SDK instruments", "qhealth points"):
        clock = [0.0]

        def now(clock: list[float] = clock) -> float:
            return clock[0]

        monitor = qhealth.Monitor(interval=1.0, clock=now)
        probes = [monitor.watch(f"q{i:03d}", workers=4) for i in range(100)]
        plain = qhealth.Monitor(interval=1.0, clock=now)  # the same traffic, no exporter
        plain_probes = [plain.watch(f"q{i:03d}", workers=4) for i in range(100)]
        reader = InMemoryMetricReader()
        producer = None
        if path == "SDK instruments":
            instrument(monitor, MeterProvider(metric_readers=[reader]))
        else:
            producer = Producer(monitor, DEFAULT_BUCKETS)
        rows: dict[str, list[float]] = {"tick": [], "collect": [], "encode": []}
        points = 0
        for cycle in range(cycles + 3):
            for group in (probes, plain_probes):
                for probe in group:
                    probe.enqueued(50)
                    for k in range(50):
                        probe.started()
                        probe.succeeded()
                        if k < 16:
                            probe.observe_duration(0.01 * (k % 7))
                            probe.observe_wait(0.002 * (k % 5))
                    probe.attempted(50)
            clock[0] += 1.0
            t0 = time.thread_time()
            plain.tick()
            t1 = time.thread_time()
            monitor.tick()
            t2 = time.thread_time()
            if producer is not None:
                data = MetricsData(
                    [ResourceMetrics(resource, [ScopeMetrics(scope, producer.metrics(), "")], "")]
                )
            else:
                data = reader.get_metrics_data()
            t3 = time.thread_time()
            request = encode_metrics(data)
            request.SerializeToString()
            t4 = time.thread_time()
            if cycle >= 3:
                rows["tick"].append(((t2 - t1) - (t1 - t0)) * 1000)
                rows["collect"].append((t3 - t2) * 1000)
                rows["encode"].append((t4 - t3) * 1000)
                points = sum(
                    len(getattr(m, m.WhichOneof("data")).data_points)
                    for rm in request.resource_metrics
                    for sm in rm.scope_metrics
                    for m in sm.metrics
                )
        medians = {k: statistics.median(v) for k, v in rows.items()}
        print(
            f"{path:<16}  {medians['tick']:>10.2f}  {medians['collect']:>8.2f}  {medians['encode']:>8.2f}  "
            f"{sum(medians.values()):>8.2f}  {points:>6}"
        )


def failure_table(rounds: int) -> None:
    print(
        f"\nPart 3: pool throughput while the collector is live / dead / slow / failing "
        f"({rounds} rounds, ABBA)"
    )
    print(
        f"{'protocol':<8}  {'mode':<5}  {'wall items/s':>12}  {'own items/s':>11}  {'cpu items/s':>11}  "
        f"{'mode/live: wall':>15}  {'own (quartiles)':>20}  {'cpu (quartiles)':>20}  {'failed exports':>14}"
    )
    for protocol in ("grpc", "http"):
        chunks = pool_while_collector_flips(
            protocol,  # type: ignore[arg-type]
            MODES,
            rounds=rounds,
            chunk_items=500_000,
            settle_s=0.5,
            interval_s=0.25,
        )
        for mode in MODES:
            mine = [c for c in chunks if c.mode == mode]
            medians = [statistics.median(getattr(c, m) for c in mine) for m in ("wall", "own", "cpu")]
            failed = sum(c.failures for c in mine)
            cells = ["-", "-", "-"]
            if mode != "live":
                cells[0] = f"{statistics.median(paired_ratios(chunks, mode, 'wall')):.3f}"
                for i, measure in ((1, "own"), (2, "cpu")):
                    q1, q2, q3 = statistics.quantiles(paired_ratios(chunks, mode, measure), n=4)
                    cells[i] = f"{q2:.3f} ({q1:.2f}-{q3:.2f})"
            print(
                f"{protocol:<8}  {mode:<5}  {medians[0]:>12,.0f}  {medians[1]:>11,.0f}  "
                f"{medians[2]:>11,.0f}  {cells[0]:>15}  {cells[1]:>20}  {cells[2]:>20}  {failed:>14}"
            )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _scrape_child(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--otel-seconds", type=float, default=20.0, help="length of one OTel run")
    parser.add_argument("--otel-rounds", type=int, default=3, help="alternated OTel runs per mode")
    parser.add_argument(
        "--parts", default="scrape,otel,cycle,failure,server", help="which parts to run (default: all)"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n")
    medians: dict[int, float] = {}
    if "scrape" in parts:
        medians = scrape_table((1, 100, 10_000), repeat=5 if args.quick else 30)
    share = None
    if "instructions" in parts:
        if shutil.which("valgrind") is None:
            parser.error("the instructions part needs valgrind (apt-get install valgrind)")
        instructions_table()
    if "otel" in parts:
        share = otel_cpu_table(
            seconds=3.0 if args.quick else args.otel_seconds, rounds=1 if args.quick else args.otel_rounds
        )
    if "cycle" in parts:
        otel_cycle_table(cycles=5 if args.quick else 30)
    if "failure" in parts:
        failure_table(rounds=2 if args.quick else 12)
    if "server" in parts:
        server_table(rounds=1 if args.quick else 3)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    if share is not None:
        print(f"otel export cpu share for 100 queues: {share:.3f}")
    if medians:
        print(f"scrape ms for 100 queues: {medians[100]:.1f}")


if __name__ == "__main__":
    main()
