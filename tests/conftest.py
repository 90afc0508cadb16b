"""Shared fixtures. Service fixtures (Redis, Prometheus, ...) live next to the
tests that need them; the ones used across files are here."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
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


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture(autouse=True, scope="session")
def _no_rq_metrics_server_in_test_processes() -> None:
    """An RQ worker made in a test process would serve ``/metrics`` on 9808 and put
    the default monitor in prometheus-client's default registry for good; the
    tests that check that serving start real workers with QHEALTH_RQ_LISTEN set."""
    os.environ.setdefault("QHEALTH_RQ_LISTEN", "off")


@pytest.fixture(autouse=True)
def _default_registry_left_as_found() -> Iterator[None]:
    """A test that puts a collector in prometheus-client's default registry (the
    default of ``register`` and ``serve``) and does not take it out would make the
    next one in the same process fail with "Duplicated timeseries": take out what
    a test left."""
    from prometheus_client import REGISTRY

    before = set(REGISTRY._collector_to_names)
    yield
    for collector in set(REGISTRY._collector_to_names) - before:
        REGISTRY.unregister(collector)
