"""``qhealth demo`` run for real, as a user runs it: a subprocess, real time.

The end-to-end test of the non-live mode (issue 7): the naive pool is
classified boom_bust and/or rate_limited, the reference pool stays healthy
after warm-up, no item is lost, and the recorded traces read back and
classify the same way offline. Then Ctrl-C, ``--serve`` and ``--otlp``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .otel_support import OtlpReceiver

pytestmark = pytest.mark.slow

#: Long enough for the 15 s window to fill and judge for a further ~13 s.
DURATION_S = 28
WINDOW_S = 15
CHANGE = re.compile(r"^\s*(\d+\.\d) s  (naive|reference)\s+now (\w+)", re.M)
LOST_ROW = re.compile(r"^items lost\s+(\d+)\s+(\d+)$", re.M)


def _demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "qhealth", "demo", "--no-live", *args]


def _offline(trace: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "qhealth",
            "classify",
            str(trace),
            "--window",
            str(WINDOW_S),
            "--format",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


def _changes(rows: list[dict[str, object]]) -> list[tuple[str, str]]:
    """(t, state) at every change of state or of the set of conditions, as the demo prints them."""
    out: list[tuple[str, str]] = []
    last: tuple[object, frozenset[str]] | None = None
    for row in rows:
        conditions = row["conditions"]
        assert isinstance(conditions, list)
        key = (row["state"], frozenset(conditions))
        if key != last:
            last = key
            out.append((f"{row['t']:.1f}", str(row["state"])))
    return out


def test_the_non_live_demo_end_to_end(tmp_path: Path) -> None:
    """The naive pool is judged boom_bust and/or rate_limited, the reference
    pool healthy after warm-up, nothing is lost, and the traces classify
    offline exactly as the demo judged them live."""
    traces, report = tmp_path / "traces", tmp_path / "report.html"
    result = subprocess.run(
        _demo("--duration", str(DURATION_S), "--record", str(traces), "--report", str(report)),
        capture_output=True,
        text=True,
        check=False,
        timeout=DURATION_S + 60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    naive, reference = _offline(traces / "naive.jsonl"), _offline(traces / "reference.jsonl")
    judged_naive = [r for r in naive if r["state"] != "warming_up"]
    judged_reference = [r for r in reference if r["state"] != "warming_up"]
    assert len(judged_naive) >= 20 and len(judged_reference) >= 20  # about 10 s of verdicts each

    # The symptom is seen in the naive pool...
    seen = {c for r in judged_naive for c in r["conditions"]}  # type: ignore[attr-defined]
    assert seen & {"boom_bust", "rate_limited"}, seen
    # ...and the reference pool stays healthy once the window is full.
    assert {r["state"] for r in judged_reference} == {"healthy"}

    # Nothing lost, in either pool.
    lost = LOST_ROW.search(result.stdout)
    assert lost, result.stdout[-2000:]
    assert lost.groups() == ("0", "0")

    # Offline, with the same window, the traces give the verdicts the demo printed live.
    live = CHANGE.findall(result.stdout)
    for queue, rows in (("naive", naive), ("reference", reference)):
        assert [(t, s) for t, q, s in live if q == queue] == _changes(rows), queue

    # The report has both pools' plots.
    page = report.read_text(encoding="utf-8")
    assert "queue naive" in page and "queue reference" in page
    assert page.count("<svg") >= 4


def test_ctrl_c_stops_cleanly_with_the_summary_so_far(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _demo("--duration", "60", "--no-report"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    started = time.monotonic()
    for line in proc.stdout:  # running once both pools have been sampled
        if re.search(r"reference\s+now warming_up", line):
            break
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 20
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "stopped after" in rest
    lost = LOST_ROW.search(rest)
    assert lost and lost.groups() == ("0", "0")
    assert re.search(r"^items submitted\s+[1-9]", rest, re.M)


def test_the_live_view_runs_and_ends_with_the_summary(tmp_path: Path) -> None:
    """Without a terminal, rich draws the last frame of the live view, then the table."""
    result = subprocess.run(
        [sys.executable, "-m", "qhealth", "demo", "--duration", "3", "--no-report"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "140"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "naive" in out and "reference" in out and "warming_up" in out
    assert re.search(r"items lost\s+│\s+0\s+│\s+0\s+│", out), out[-2000:]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body.decode()


def test_serve_exposes_metrics_and_the_status_page_while_it_runs(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _demo("--duration", "20", "--no-report", "--serve", "127.0.0.1:0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            match = re.search(r"serving\s+(http://127\.0\.0\.1:\d+)/metrics", line)
            if match:
                url = match.group(1)
                break
        assert url, "the demo did not say where it serves"
        metrics = ""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and 'queue="reference"' not in metrics:
            time.sleep(0.3)
            metrics = _get(url + "/metrics")
        assert 'qhealth_queue_depth{queue="naive"}' in metrics
        assert 'qhealth_queue_depth{queue="reference"}' in metrics
        page = _get(url + "/")
        assert 'data-queue="naive"' in page and 'data-queue="reference"' in page
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 130


def test_otlp_exports_both_pools(tmp_path: Path) -> None:
    with OtlpReceiver("http") as receiver:
        result = subprocess.run(
            _demo(
                "--duration",
                "5",
                "--no-report",
                "--otlp-endpoint",
                receiver.endpoint,
                "--otlp-protocol",
                "http/protobuf",
            ),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"exporting  over OTLP (http/protobuf) to {receiver.endpoint}" in result.stdout
        latest = receiver.latest()
    attempts = {
        dict(attrs).get("queue"): point.value
        for (name, attrs), point in latest.items()
        if name == "qhealth.attempts"
    }
    assert set(attempts) == {"naive", "reference"}
    assert attempts["naive"] > 0 and attempts["reference"] > 0
