"""The README's "Run the reference pool" example runs and prints what the README says."""

from __future__ import annotations

from tests.readme import example, run_example


def test_the_readme_example_runs_the_reference_pool_and_prints_its_counts() -> None:
    program, shown = example("## Run the reference pool")
    assert run_example(program) == shown.splitlines()
