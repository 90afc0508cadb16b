"""Real brokers and real worker processes for the integration and sidecar tests.

* ``redis_url``: a throwaway ``redis-server`` on a free port, one per test
  session (per xdist worker), nothing saved to disk. Tests keep apart by
  using unique key and queue names (:func:`unique`).
* ``amqp_url``: the machine's RabbitMQ (127.0.0.1:5672, guest/guest). A test
  that needs it fails, never skips, when it is not there, saying how to start it.
* :class:`Proc`: a worker process in its own process group, stopped and killed
  with its children however the test ends.

Import the fixtures into a test module: ``from tests.integration_brokers import redis_url``.
The Redis server is :class:`tests.redis_server.RedisServer`, shared with the broker tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.readme import snippet
from tests.redis_server import RedisServer, free_port, unique_name

__all__ = ["free_port"]  # re-exported for the test modules that import it from here

ROOT = Path(__file__).resolve().parent.parent
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def unique(prefix: str) -> str:
    """A name no other test (or xdist worker) uses."""
    return unique_name(prefix)


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str | Callable[[], str], interval: float = 0.05
) -> None:
    """Poll until ``predicate()`` holds; fail naming ``what`` (a callable is
    called only then, to show the state at the time of failure)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a throwaway redis-server for this test session (see :mod:`tests.redis_server`)."""
    server = RedisServer(tmp_path_factory.mktemp("integration-redis"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def amqp_url() -> str:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            pass
    except OSError:
        pytest.fail(
            "RabbitMQ is not reachable on 127.0.0.1:5672 (guest/guest): start it with "
            "`rabbitmq-server -detached` (apt-get install -y rabbitmq-server if missing)"
        )
    return AMQP_URL


class Proc:
    """A child process (a worker, a sidecar) in its own process group."""

    def __init__(
        self, args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="qhealth-proc-", suffix=".log", delete=False)  # noqa: SIM115
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.popen = subprocess.Popen(
            args,
            env=full_env,
            cwd=cwd or ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            self.signal_group(signal.SIGCONT)
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait(10)
        self.signal_group(signal.SIGKILL)  # any child left behind
        return self.popen.returncode

    def close(self) -> None:
        self.stop()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    """Start processes that are stopped (and their groups killed) after the test."""
    started: list[Proc] = []

    def start(args: list[str], **kwargs: object) -> Proc:
        proc = Proc(args, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.close()


PYTHON = sys.executable


def watch(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``qhealth watch ARGS`` run as a user runs it, to its end: its output captured."""
    return subprocess.run(
        [PYTHON, "-m", "qhealth", "watch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def scrape(port: int) -> str:
    """The text of ``/metrics`` on 127.0.0.1:``port``; empty while nothing serves it yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def readme_snippet(name: str, page: str = "README.md") -> str:
    """The fenced block that follows ``<!-- readme-test: NAME -->`` in README.md, or in another page."""
    return snippet(name, page)


def console_command(snippet: str) -> list[str]:
    """The command of a one-line ``$ ...`` console snippet, split like a shell would."""
    import shlex

    (line,) = [s for s in snippet.splitlines() if s.startswith("$ ")]
    return shlex.split(line[2:])
