"""A throwaway RabbitMQ node for the tests that need server settings of their
own (a fixture module: import the fixture into a test module).

``short_consumer_timeout_node`` starts ``rabbitmq-server`` on free ports with
its own data directory, no plugins, ``consumer_timeout`` 1 s and a channel
tick of 250 ms (RabbitMQ checks the timeout on that tick; the default tick,
a minute, would make the test wait that long), and stops it afterwards. It
takes about ten seconds to start: tests that use it are marked slow. A
missing ``rabbitmq-server`` fails the test with how to install it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import free_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
START_TIMEOUT_S = 60.0


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def short_consumer_timeout_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The AMQP URL of a node whose consumer_timeout is 1 s."""
    binary = SERVER if SERVER.exists() else shutil.which("rabbitmq-server")
    if binary is None:
        pytest.fail("rabbitmq-server is not installed: apt-get install -y rabbitmq-server")
    directory = tmp_path_factory.mktemp("rabbitmq-node")
    port, dist_port = free_port(), free_port()
    (directory / "advanced.config").write_text(
        "[{rabbit, [{consumer_timeout, 1000}, {channel_tick_interval, 250}]}].\n"
    )
    (directory / "enabled_plugins").write_text("[].\n")
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": f"qhealth-test-{port}@localhost",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
        "RABBITMQ_LOG_BASE": str(directory / "log"),
        "RABBITMQ_LOGS": str(directory / "rabbit.log"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(directory / "advanced.config"),
        "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(directory / "pid"),
    }
    log = (directory / "out.txt").open("wb")
    node = subprocess.Popen(
        [str(binary)], env=env, cwd=directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _listening(port):
            if node.poll() is not None or time.monotonic() > deadline:
                tail = (directory / "out.txt").read_text(errors="replace")[-2000:]
                pytest.fail(f"the throwaway RabbitMQ node did not start on port {port}:\n{tail}")
            time.sleep(0.2)
        yield f"amqp://guest:guest@127.0.0.1:{port}/"
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        try:
            node.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        log.close()
