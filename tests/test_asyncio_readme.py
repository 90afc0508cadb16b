"""The README's asyncio.Queue snippet, run as written."""

from __future__ import annotations

from typing import Any

from qhealth import Monitor
from tests.integration_brokers import readme_snippet


def test_the_asyncio_snippet_counts_every_item() -> None:
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(readme_snippet("asyncio"), "README.md", "exec"), namespace)
    monitor: Monitor = namespace["monitor"]
    try:
        sample = monitor.tick()["emails"].sample
        assert (sample.enqueued_total, sample.processed_total, sample.busy, sample.workers) == (
            1000,
            1000,
            0,
            10,
        )
    finally:
        monitor.stop()
