"""`qhealth record`: a queue watched from outside, written as a trace that reads back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from qhealth import read_trace
from tests.integration_brokers import PYTHON, redis_url, unique

__all__ = ["redis_url"]


@pytest.mark.slow
def test_record_writes_a_trace_of_what_it_watched(redis_url: str, tmp_path: Path) -> None:
    key = unique("record")
    redis.Redis.from_url(redis_url).rpush(key, *range(5))
    out = tmp_path / "list.jsonl"
    result = subprocess.run(
        [PYTHON, "-m", "qhealth", "record", "--kind", "redis-list", "--queue", key, "--url", redis_url,
         "--interval", "0.2", "--duration", "1.5", "-o", str(out)],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    trace = read_trace(out)
    assert trace.header.queue == key and trace.header.interval_s == 0.2
    assert len(trace.samples) >= 4
    assert {s.depth for s in trace.samples} == {5}
    assert all(s.processed_total is None for s in trace.samples), "a bare list cannot know throughput"


def test_record_needs_an_output_file() -> None:
    result = subprocess.run(
        [PYTHON, "-m", "qhealth", "record", "--kind", "redis-list", "--queue", "k"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "--output" in result.stderr
