"""Starting real servers in tests: a free port, and waiting until one is ready.

A server that does not come up fails the test with the end of its log, so a
missing or broken binary is never a silent pass.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 20) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if the
    process exits or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
            pytest.fail(f"{what} did not start ({url}): {tail}")
        time.sleep(0.1)


def need_tool(name: str, package: str) -> str:
    """The path of a binary the test runs for real; a clear failure when it is missing."""
    import shutil

    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install -y {package} (.ci/run does this)")
    return path


def run(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
