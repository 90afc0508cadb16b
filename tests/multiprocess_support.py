"""Worker processes writing prometheus-client multiprocess files, for the
multiprocess export tests (no tests here)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# One worker process: a monitor with its own share of the pool, exported to
# the multiprocess files, ticked by hand; it stays alive until told to exit.
WORKER = textwrap.dedent(
    """
    import sys
    import qhealth
    from qhealth.prometheus import MultiProcessExporter

    workers, items, failed = (int(a) for a in sys.argv[1:4])
    now = [0.0]
    monitor = qhealth.Monitor(interval=1.0, clock=lambda: now[0])
    probe = monitor.watch("jobs", workers=workers)
    MultiProcessExporter(monitor)
    for i in range(items):
        probe.enqueued()
        probe.started()
        probe.failed() if i < failed else probe.succeeded()
        probe.observe_duration(0.02)
    probe.enqueued(3)  # left waiting
    probe.polled(True)
    now[0] = 1.0
    monitor.tick()
    print("ticked", flush=True)
    sys.stdin.readline()
    """
)


class Worker:
    def __init__(self, directory: Path, workers: int, items: int, failed: int) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(workers), str(items), str(failed)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ticked":
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            pytest.fail(f"worker process failed to start: {err}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exit(self) -> None:
        if self.proc.poll() is None:
            self.proc.communicate("exit\n", timeout=10)
