"""Helpers for the status page tests: a real monitor fed with example traces,
headless Chromium, and a PNG reader (standard library only)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest

import qhealth
from qhealth.replay import TraceSource

from .clocks import FakeClock
from .conftest import TRACES


def replaying_monitor(names: dict[str, str]) -> tuple[qhealth.Monitor, FakeClock, int]:
    """A monitor watching example traces (1 s sampling) under new queue names,
    ``{queue: trace file stem}``. Returns it with its clock and the number of
    ticks that plays the shortest trace to its end (tick it with :func:`play`):
    a trace that has ended has no reading, and its queue would show as stale."""
    clock = FakeClock()
    monitor = qhealth.Monitor(interval=1.0, clock=clock)
    shortest = 0
    for queue, stem in names.items():
        trace = qhealth.read_trace(TRACES / f"{stem}.jsonl")
        assert trace.header.interval_s == 1.0, stem
        monitor.watch_source(queue, TraceSource(trace), capacity=trace.header.capacity)
        shortest = min(shortest, len(trace.samples)) if shortest else len(trace.samples)
    return monitor, clock, shortest


def play(monitor: qhealth.Monitor, clock: FakeClock, ticks: int) -> None:
    for _ in range(ticks):
        clock.now += 1.0
        monitor.tick()


# -- Chromium ------------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "headless Chromium is needed for this test and is not installed: "
            "apt-get install -y chromium (.ci/run installs it)"
        )
    return path


def run_chromium(args: Sequence[str], profile: Path) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with a fresh profile; fail with its output if it fails."""
    result = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"chromium exited {result.returncode}: {result.stderr[-2000:]}")
    return result


# -- PNG -------------------------------------------------------------------------------------


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit, non-interlaced RGB or RGBA PNG."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or color not in (2, 6) or interlace:
                raise ValueError(
                    f"unsupported PNG: depth {depth}, colour type {color}, interlace {interlace}"
                )
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        filter_type = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            upleft = previous[i - channels] if i >= channels else 0
            if filter_type == 1:
                line[i] = (line[i] + left) & 0xFF
            elif filter_type == 2:
                line[i] = (line[i] + up) & 0xFF
            elif filter_type == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif filter_type == 4:
                line[i] = (line[i] + _paeth(left, up, upleft)) & 0xFF
        previous = line
        rgb = bytes(line) if channels == 3 else bytes(b for i, b in enumerate(line) if i % 4 != 3)
        rows.append(rgb)
    return width, height, rows


def count_color(rows: Sequence[bytes], hex_color: str, tolerance: int = 6) -> int:
    """Pixels within ``tolerance`` of ``#rrggbb`` on every channel."""
    target = bytes.fromhex(hex_color.removeprefix("#"))
    count = 0
    for row in rows:
        for x in range(0, len(row), 3):
            r, g, b = row[x], row[x + 1], row[x + 2]
            if (
                abs(r - target[0]) <= tolerance
                and abs(g - target[1]) <= tolerance
                and abs(b - target[2]) <= tolerance
            ):
                count += 1
    return count
