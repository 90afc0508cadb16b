"""A throwaway Redis Cluster for tests: 3 masters and 3 replicas on 127.0.0.1
(a fixture module: import the fixtures into a test module).

Six ``redis-server --cluster-enabled yes`` processes on free ports (their
cluster bus on free ports too, ``--cluster-port``), nothing saved to disk,
joined by ``redis-cli --cluster create ... --cluster-replicas 1``, a node
timeout of one second so that a replica takes over a killed master within a
few seconds. About two seconds to start. ``redis_cluster`` is one per test
module; ``fresh_redis_cluster`` one per test, for tests that kill a node. A
missing ``redis-server`` or ``redis-cli`` fails the test with how to install
them.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from src_pool import Pool
from src_pool.redis_broker import RedisBroker
from tests.services import free_port

NODES = 6
START_TIMEOUT_S = 20.0


class LocalCluster:
    def __init__(self, directory: Path) -> None:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            pytest.fail(
                "Redis Cluster tests need redis-server and redis-cli: apt-get install -y redis-server"
            )
        self.dir = directory
        self.ports: list[int] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._commands: dict[int, list[str]] = {}
        for _ in range(NODES):
            port, bus = free_port(), free_port()
            node_dir = directory / f"node-{port}"
            node_dir.mkdir(parents=True)
            self._commands[port] = [
                server, "--port", str(port), "--cluster-port", str(bus), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
                 "--repl-diskless-sync-delay", "0",
                 "--dir", str(node_dir), "--logfile", str(node_dir / "redis.log")]  # fmt: skip
            self._spawn(port)
            self.ports.append(port)
        self._wait(lambda: all(self._answers(p) for p in self.ports), "every node to answer PING")
        created = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if created.returncode != 0:
            self.stop()
            pytest.fail(
                f"redis-cli --cluster create failed:\n{created.stdout[-2000:]}{created.stderr[-2000:]}"
            )
        self._wait(lambda: all(self.state(p) == "ok" for p in self.ports), "the cluster to be ok")
        # A replica that never synced cannot take over: wait until every one has.
        self._wait(lambda: all(self._synced(p) for p in self.ports), "every replica to sync with its master")

    def _spawn(self, port: int) -> None:
        self.procs[port] = subprocess.Popen(
            self._commands[port], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def restart(self, port: int) -> None:
        """Start a killed node again: it rejoins (its nodes.conf kept) as a
        replica of the master that took its place, and syncs."""
        self._spawn(port)
        self._wait(lambda: self._answers(port) and self._synced(port), f"the node on port {port} to rejoin")

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming one node (the client finds the others)."""
        alive = next(p for p in self.ports if p in self.procs)
        return f"redis+cluster://127.0.0.1:{alive}/0"

    def client(self) -> redis.RedisCluster:
        alive = next(p for p in self.ports if p in self.procs)
        return redis.RedisCluster(host="127.0.0.1", port=alive, socket_timeout=5)

    def _answers(self, port: int) -> bool:
        try:
            return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def _synced(self, port: int) -> bool:
        try:
            info = redis.Redis(port=port, socket_timeout=0.5).info("replication")
        except redis.RedisError:
            return False
        return info.get("role") == "master" or info.get("master_link_status") == "up"

    def state(self, port: int) -> str:
        try:
            return str(redis.Redis(port=port, socket_timeout=0.5).cluster("INFO")["cluster_state"])
        except (redis.RedisError, KeyError):
            return "down"

    def master_of(self, key: str) -> int:
        """The port of the node serving ``key``'s slot now."""
        client = self.client()
        try:
            return int(client.get_node_from_key(key).port)
        finally:
            client.close()

    def kill(self, port: int) -> None:
        """SIGKILL one node: no shutdown, unreplicated writes lost with it."""
        proc = self.procs.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def wait_failover(self, key: str, dead: int) -> int:
        """Wait until another node serves ``key``'s slot; its port."""
        survivor = next(p for p in self.ports if p in self.procs)

        def promoted() -> bool:
            if self.state(survivor) != "ok":
                return False
            try:
                return self.master_of(key) != dead
            except redis.RedisError:
                return False

        self._wait(promoted, f"a replica to take over {key!r} from the node on port {dead}")
        return self.master_of(key)

    def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not predicate():
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"timed out after {START_TIMEOUT_S} s waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


async def run_through_a_failover(cluster: LocalCluster, items: int, **settings: Any) -> tuple[int, int]:
    """A pool on the cluster while a producer puts ``items`` one by one; the
    master of the queue's slot is SIGKILLed midway, its replica takes over,
    and the killed node comes back as the new master's replica. Returns
    (puts that returned, of those, items never processed)."""
    name = f"fo-{uuid.uuid4().hex[:12]}"
    done: set[int] = set()
    confirmed: list[int] = []

    async def handle(item: int) -> None:
        done.add(item)

    async def produce(broker: RedisBroker) -> None:
        for i in range(items):
            await broker.put(i)
            confirmed.append(i)

    consumer = RedisBroker(cluster.url, name, visibility_timeout=3.0, connect_timeout=30.0)
    producer = RedisBroker(cluster.url, name, connect_timeout=30.0, **settings)
    async with producer, consumer, Pool(handle, broker=consumer, concurrency=10, monitor=False, name=name):
        putting = asyncio.create_task(produce(producer))
        async with asyncio.timeout(30):
            while len(confirmed) < items // 3:
                await asyncio.sleep(0.005)
        key = f"src_pool:{{{name}}}:q:0"
        master = await asyncio.to_thread(cluster.master_of, key)
        await asyncio.to_thread(cluster.kill, master)
        await asyncio.to_thread(cluster.wait_failover, key, master)
        await asyncio.to_thread(cluster.restart, master)  # back as a replica (durable puts need one)
        await asyncio.wait_for(putting, 60)
        async with asyncio.timeout(30):  # everything Redis still holds is processed: nothing jams
            while (c := await consumer.counts()).waiting or c.in_flight or c.delayed:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
    return len(confirmed), len(set(confirmed) - done)


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def fresh_redis_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path / "redis-cluster")
    yield cluster
    cluster.stop()
