"""What the rules cost Prometheus: evaluation time of the qhealth group by number of queues.

The rules replay per-sample and per-interval measures with 1 s subqueries over
a 60 s window, which costs more than plain ``rate()`` rules. This starts a real
Prometheus (``prometheus`` binary) with ``alerts/qhealth.rules.yml``, scraping
every second a synthetic exporter of N queues whose counters and gauges move,
waits until the window is full, and reads Prometheus's own
last evaluation time of the group (``/api/v1/rules``) once a second for 15 s.

    python3 -m alerts.bench [--queues 1 30 300] [--seconds 75] [--resolution 1]

``--resolution`` builds the rules with another subquery step
(:attr:`alerts.config.RulesConfig.resolution_s`) instead of reading the
committed file.

Prints a table, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RULES = Path(__file__).resolve().parent / "qhealth.rules.yml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def exposition(queues: int, t: float) -> str:
    """N queues of a polling pool: depth swings, counters grow."""
    lines = []
    for q in range(queues):
        label = f'queue="q{q}"'
        depth = int(50 + 50 * math.sin(t / 4 + q))
        lines += [
            f"qhealth_queue_depth{{{label}}} {depth}",
            f"qhealth_queue_capacity{{{label}}} 500",
            f"qhealth_workers{{{label}}} 10",
            f"qhealth_workers_busy{{{label}}} {int(5 + 5 * math.cos(t / 4 + q))}",
            f"qhealth_items_enqueued_total{{{label}}} {int(t * 20)}",
            f'qhealth_items_processed_total{{{label},outcome="success"}} {int(t * 19)}',
            f'qhealth_items_processed_total{{{label},outcome="error"}} {int(t * 0.1)}',
            f"qhealth_attempts_total{{{label}}} {int(t * 21)}",
            f"qhealth_rate_limited_total{{{label}}} {int(t * 2)}",
            f"qhealth_worker_idle_seconds_total{{{label}}} {t * 4:.3f}",
        ]
    return "\n".join(lines) + "\n"


def measure(prometheus: str, rules: Path, queues: int, seconds: float) -> list[float]:
    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition(queues, time.monotonic() - started).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    exporter = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(rules)],
                    "scrape_configs": [
                        {
                            "job_name": "bench",
                            "static_configs": [{"targets": [f"127.0.0.1:{exporter.server_port}"]}],
                        }
                    ],
                }
            )
        )
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(max(seconds - 15, 0))
            durations = []
            url = f"http://127.0.0.1:{port}/api/v1/rules?type=record"
            for _ in range(15):  # the last evaluation's duration, once a second
                with urllib.request.urlopen(url, timeout=10) as response:
                    groups = json.load(response)["data"]["groups"]
                durations += [float(g["evaluationTime"]) for g in groups if g["name"] == "qhealth"]
                time.sleep(1)
            return durations
        finally:
            process.terminate()
            process.wait(10)
            exporter.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m alerts.bench", description=__doc__)
    parser.add_argument("--queues", type=int, nargs="+", default=[1, 30, 300])
    parser.add_argument("--seconds", type=float, default=75.0, help="run time per size (>= window + 15 s)")
    parser.add_argument(
        "--resolution", type=float, help="subquery step in seconds (default: the committed rules)"
    )
    args = parser.parse_args()
    rules_file = RULES
    if args.resolution is not None:
        from . import rules
        from .config import RulesConfig

        rules_file = Path(tempfile.mkdtemp()) / "qhealth.rules.yml"
        rules_file.write_text(rules.render(rules.build(RulesConfig(resolution_s=args.resolution))))
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        raise SystemExit("prometheus is not installed: apt-get install -y prometheus")
    print(f"{'queues':>7} {'series':>7} {'evals':>6} {'median ms':>10} {'max ms':>8} {'ms/queue':>9}")
    medians = {}
    for queues in args.queues:
        durations = measure(prometheus, rules_file, queues, args.seconds)
        if not durations:
            raise SystemExit(f"no rule evaluations recorded for {queues} queues")
        median = statistics.median(durations) * 1000
        medians[queues] = median
        print(
            f"{queues:>7} {queues * 10:>7} {len(durations):>6} {median:>10.1f} "
            f"{max(durations) * 1000:>8.1f} {median / queues:>9.2f}"
        )
    largest = max(medians)
    print(
        f"summary: the qhealth rule group evaluates in {medians[largest]:.1f} ms for {largest} queues "
        f"({medians[largest] / largest:.2f} ms per queue), subquery step "
        f"{args.resolution or 1:g} s, evaluated every 1 s"
    )


if __name__ == "__main__":
    main()
