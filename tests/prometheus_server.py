"""A throwaway Prometheus server (the Debian ``prometheus`` binary) for tests.

It scrapes the given targets every second, listens on a free port of
127.0.0.1, keeps its data in the test's temporary directory, and answers
instant queries. A missing binary fails the test with what to install.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from .services import free_port, need_tool, wait_ready


class Prometheus:
    """``prometheus`` scraping ``targets`` (``host:port``) every second."""

    def __init__(self, targets: Sequence[str], directory: Path, *, config_text: str | None = None) -> None:
        """``config_text``: a whole configuration file to run instead (its targets are its own)."""
        binary = need_tool("prometheus", "prometheus")
        self.port = free_port()
        config = directory / "prometheus.yml"
        listed = ", ".join(f"'{t}'" for t in targets)
        config.write_text(
            config_text
            or (
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: pool\n"
                f"    static_configs:\n      - targets: [{listed}]\n"
            ),
            encoding="utf-8",
        )
        log_path = directory / "prometheus.log"
        self._log = log_path.open("w")
        self._proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(f"http://127.0.0.1:{self.port}/-/ready", self._proc, log_path, "Prometheus")
        except BaseException:
            self.close()
            raise

    def query(self, expr: str) -> list[float]:
        """The values of an instant query (one per series of the answer)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return [float(item["value"][1]) for item in body["data"]["result"]]

    def wait_until(
        self, expr: str, accept: Callable[[list[float]], bool], timeout_s: float = 30.0
    ) -> list[float]:
        """Query ``expr`` until ``accept`` takes its answer (the first scrapes of a target
        show up in queries only after ~5 s); fail with the last answer after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        answer: list[float] = []
        while time.monotonic() < deadline:
            answer = self.query(expr)
            if accept(answer):
                return answer
            time.sleep(0.25)
        pytest.fail(f"Prometheus never answered {expr} as expected within {timeout_s:g} s (last: {answer})")

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.close()
