"""``qhealth serve``: recorded traces replayed as live metrics and conditions,
or prometheus-client multiprocess files merged, on a loopback /metrics."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import qhealth
from qhealth.cli import main
from qhealth.cli.serve import DEFAULT_LISTEN
from tests.services import free_port

from .export_support import labels
from .multiprocess_support import Worker


def _trace(shared_traces: Path, name: str) -> qhealth.Trace:
    return qhealth.read_trace(shared_traces / f"{name}.jsonl")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give trace files"),
        (["x.jsonl", "--multiprocess-dir", "."], "one of the two"),
        (["nope.jsonl"], "nope.jsonl"),
        (["--listen", ":9808", "x.jsonl"], "--listen"),
        (["--multiprocess-dir", "/nonexistent/dir"], "not a directory"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_it(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_bad_speed_is_refused(shared_traces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(shared_traces / "idle-blocking.jsonl"), "--speed", "0"]) == 2
    assert "speed" in capsys.readouterr().err


def test_it_listens_on_loopback_unless_told_otherwise() -> None:
    assert DEFAULT_LISTEN.startswith("127.0.0.1:")


# -- the command, end to end ----------------------------------------------------------------


class Served:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qhealth", "serve", *args, "--listen", f"127.0.0.1:{self.port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first.startswith("serving "):
            self.proc.kill()
            pytest.fail(f"qhealth serve did not start: {first}{self.proc.communicate()[1]}")
        self.banner = first

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        return self.proc.returncode, out


@pytest.fixture
def storm(shared_traces: Path) -> Iterator[Served]:
    served = Served(str(shared_traces / "transition-429-storm.jsonl"), "--speed", "200")
    try:
        yield served
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.communicate()


@pytest.mark.slow
def test_serve_replays_a_429_storm_until_rate_limited_shows_on_metrics(storm: Served) -> None:
    assert f"127.0.0.1:{storm.port}/metrics" in storm.banner
    key = ("qhealth_condition", labels(queue="event-archive", condition="rate_limited"))
    deadline = time.monotonic() + 20
    while storm.scrape().get(key) != 1.0:
        assert time.monotonic() < deadline, "rate_limited never turned on"
        time.sleep(0.1)
    status, out = storm.stop()
    assert status == 0
    assert "rate_limited: " in out and "fix: " in out, "the change was printed with its reason and fix"


def test_serve_merges_multiprocess_files(tmp_path: Path) -> None:
    workers = [Worker(tmp_path, workers=2, items=4, failed=0), Worker(tmp_path, workers=3, items=6, failed=1)]
    served = Served("--multiprocess-dir", str(tmp_path))
    try:
        got = served.scrape()
        assert got[("qhealth_workers", labels(queue="jobs"))] == 5
        assert got[("qhealth_items_processed_total", labels(queue="jobs", outcome="error"))] == 1
    finally:
        assert served.stop()[0] == 0
        for w in workers:
            w.exit()
