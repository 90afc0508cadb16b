"""Shared fixtures. Service fixtures (Redis, Prometheus, ...) live next to the
tests that need them; the ones used across files are here."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
TRACES = SHARED / "traces"


@pytest.fixture(scope="session")
def shared_traces() -> Path:
    if not TRACES.is_dir():
        pytest.fail(
            f"the example traces are missing: expected {TRACES} (the shared/ folder beside the project)"
        )
    return TRACES
