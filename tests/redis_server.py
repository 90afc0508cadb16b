"""Throwaway redis-server processes for tests (a fixture module: import the
fixtures you need into a test module).

``redis_server`` is one server per test session (per xdist worker), started
with ``--save "" --appendonly no`` on a free port of 127.0.0.1; tests keep apart
by using their own queue names (:func:`unique_name`). ``redis_factory`` starts
extra servers for one test (a password, TLS with a throwaway CA, append-only
for a restart test) and stops them afterwards. A missing ``redis-server`` binary fails the test with
how to install it: a Redis test never passes silently.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import free_port

START_TIMEOUT_S = 10.0


def unique_name(prefix: str = "t") -> str:
    """A queue name no other test (or xdist worker) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_certificates(directory: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1 (``openssl`` CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the TLS test needs the openssl command: apt-get install -y openssl")
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "1", "-subj", "/CN=qhealth-test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "1", "-extfile", "ext")  # fmt: skip
    return directory


def _connect(port: int, ca: Path | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=0.5)
    if ca is None:
        return sock
    context = ssl.create_default_context(cafile=str(ca))
    return context.wrap_socket(sock, server_hostname="127.0.0.1")


def _ping(port: int, password: str | None, ca: Path | None = None) -> bool:
    try:
        with _connect(port, ca) as s:
            if password:
                s.sendall(f"AUTH {password}\r\n".encode())
                if not s.recv(64).startswith(b"+OK"):
                    return False
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process; ``restart()`` keeps its port and data dir."""

    def __init__(
        self, directory: Path, *, appendonly: bool = False, password: str | None = None, tls: bool = False
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed: apt-get install -y redis-server (the tests start their own)"
            )
        self.binary = binary
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.password = password
        self.certs = make_certificates(directory / "certs") if tls else None
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def ca(self) -> Path | None:
        """The CA certificate clients must trust (TLS servers only)."""
        return None if self.certs is None else self.certs / "ca.crt"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.certs else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        cmd = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.appendonly:
            cmd += ["--appendfsync", "always"]
        if self.password:
            cmd += ["--requirepass", self.password]
        if self.certs is not None:
            cmd[cmd.index("--port") + 1] = "0"
            cmd += ["--tls-port", str(self.port), "--tls-auth-clients", "no",
                    "--tls-cert-file", str(self.certs / "server.crt"),
                    "--tls-key-file", str(self.certs / "server.key"),
                    "--tls-ca-cert-file", str(self.certs / "ca.crt")]  # fmt: skip
        return cmd

    def start(self) -> None:
        self.proc = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"redis-server exited at start (port {self.port}):\n{log}")
            if _ping(self.port, self.password, self.ca):
                return
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"redis-server did not answer PING within {START_TIMEOUT_S} s on port {self.port}")

    def stop(self) -> None:
        """SIGTERM: a clean shutdown (the append-only file is complete)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def crash(self) -> None:
        """SIGKILL: no shutdown at all (with ``appendonly``, the tests use
        ``appendfsync always``: every acknowledged write is on disk)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self, down_s: float = 0.0, *, crash: bool = False) -> None:
        if crash:
            self.crash()
        else:
            self.stop()
        if down_s:
            time.sleep(down_s)
        self.start()

    def command(self, *args: str | int | bytes) -> bytes:
        """One command over a raw connection (for test set-up: no client needed)."""
        import redis

        tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(self.ca)} if self.ca else {}
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **tls)
        try:
            reply = client.execute_command(*args)  # type: ignore[no-untyped-call]
            return reply if isinstance(reply, bytes) else str(reply).encode()
        finally:
            client.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp(f"redis-{os.getpid()}"))
    yield server
    server.stop()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    started: list[RedisServer] = []

    def make(*, appendonly: bool = False, password: str | None = None, tls: bool = False) -> RedisServer:
        server = RedisServer(
            tmp_path / f"redis-{len(started)}", appendonly=appendonly, password=password, tls=tls
        )
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
