"""The README's "instrument a pool, scrape it" example runs and prints what
the README says it prints."""

from __future__ import annotations

from tests.readme import example, run_example


def test_the_readme_example_instruments_a_pool_and_scrapes_it() -> None:
    program, shown = example("## Export metrics (Prometheus, OpenTelemetry)")
    assert run_example(program) == shown.splitlines()
