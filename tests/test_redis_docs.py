"""docs/reference-pool.md's "On Redis" example runs, on a throwaway redis-server, and prints what the
page says."""

from __future__ import annotations

import pytest

from tests.readme import example, run_example
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]  # fixtures used by this module

PAGE_URL = "redis://127.0.0.1:6379/0"


@pytest.mark.slow
def test_the_redis_example_runs_and_prints_its_counts(redis_server: RedisServer) -> None:
    program, shown = example("## On Redis", page="docs/reference-pool.md")
    assert PAGE_URL in program
    assert run_example(program.replace(PAGE_URL, redis_server.url)) == shown.splitlines()
