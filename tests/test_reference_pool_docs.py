"""docs/reference-pool.md's in-memory example runs and prints what the page says."""

from __future__ import annotations

import pytest

from tests.readme import example, run_example


@pytest.mark.slow
def test_the_example_runs_the_reference_pool_and_prints_its_counts() -> None:
    program, shown = example("## In one process", page="docs/reference-pool.md")
    assert run_example(program) == shown.splitlines()
