"""How long another client waits on Redis while something else runs: PINGs from a process of their own.

``python -m tests.redis_latency PORT SECONDS`` sends PINGs one after another
over a raw socket for SECONDS and prints their latencies in milliseconds as a
JSON list. It runs in its own process so that the test's own threads (and
their share of the GIL) cannot delay a PING: what it measures is Redis.
:class:`PingProbe` starts it and collects the result.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time


def measure(port: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            sock.sendall(b"PING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                reply += sock.recv(64)
            latencies.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.001)
    return latencies


class PingProbe:
    """PINGs a Redis from another process for ``seconds``; :meth:`result` waits for their latencies (ms)."""

    def __init__(self, port: int, seconds: float) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.redis_latency", str(port), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )

    def result(self, timeout: float = 60) -> list[float]:
        out, _ = self._proc.communicate(timeout=timeout)
        if self._proc.returncode != 0:
            raise RuntimeError(f"the PING probe exited {self._proc.returncode}")
        latencies: list[float] = json.loads(out)
        return latencies


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]), float(sys.argv[2]))))
