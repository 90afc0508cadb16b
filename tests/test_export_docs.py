"""docs/export.md's "instrument a pool, scrape it" example runs and prints what
the page says it prints."""

from __future__ import annotations

from tests.readme import example, run_example


def test_the_export_example_instruments_a_pool_and_scrapes_it() -> None:
    program, shown = example("## Prometheus, one process (the usual case)", page="docs/export.md")
    assert run_example(program) == shown.splitlines()
