"""A throwaway ``redis-server`` for the benches: a free port on 127.0.0.1,
nothing saved to disk, stopped by the caller."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def start_redis(directory: str | Path, *, log: bool = False) -> tuple[subprocess.Popen[bytes], int]:
    """Start one and wait until it answers; its process and port. ``log`` keeps
    its log in ``directory/redis.log`` (else its output is dropped). Exits with
    a message when redis-server is missing or does not start."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: apt-get install -y redis-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(directory)]  # fmt: skip
    if log:
        command += ["--logfile", str(Path(directory) / "redis.log")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            pass
        time.sleep(0.02)
    proc.kill()
    sys.exit("redis-server did not start")
