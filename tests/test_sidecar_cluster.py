"""The sidecar on a Redis Cluster (3 masters, 3 replicas, started by the fixture):
``redis+cluster://`` URLs, one pipeline per master per round, patterns found
on every master, a password never shown, and what a cluster cannot do refused
in one line (``pytest -k cluster`` selects these)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import redis
import rq

from qhealth.brokers.celery_queue import KOMBU_PRIORITY_SEP
from qhealth.sidecar import Sidecar
from tests import integration_jobs as jobs
from tests.integration_brokers import free_port, unique, wait_until, watch
from tests.redis_cluster import LocalCluster, fresh_redis_cluster, redis_cluster

__all__ = ["fresh_redis_cluster", "redis_cluster"]  # fixtures used by this module

SECRET = "pw-Cl7uster9Q"


class CountingConnection(redis.Connection):
    """A redis-py connection that counts its writes per node: one write is one
    pipeline (a round's commands for that node go out in one write)."""

    sends: ClassVar[Counter[int]] = Counter()

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends[int(self.port)] += 1
        super().send_packed_command(command, check_health)


def cluster_client(cluster: LocalCluster, **options: Any) -> redis.RedisCluster:
    port = next(p for p in cluster.ports if p in cluster.procs)
    return redis.RedisCluster(host="127.0.0.1", port=port, decode_responses=True, **options)


def masters_of(cluster: LocalCluster, keys: list[str]) -> set[int]:
    """The ports of the masters that hold ``keys`` now."""
    client = cluster_client(cluster)
    try:
        return {int(client.get_node_from_key(k).port) for k in keys}
    finally:
        client.close()


def counting_client(cluster: LocalCluster) -> redis.RedisCluster:
    """A cluster client whose connections count their writes (redis-py's
    cluster client takes no ``connection_class``: each node's pool is set)."""
    client = cluster_client(cluster)
    for node in client.get_nodes():
        pool = client.get_redis_connection(node).connection_pool
        pool.connection_class = CountingConnection
        pool.reset()  # connections made before (the slot map's) are of the plain class
    return client


@pytest.fixture
def sidecars() -> Iterator[list[Sidecar]]:
    """Sidecars a test made, closed after it."""
    made: list[Sidecar] = []
    yield made
    for sidecar in made:
        sidecar.group.close()


def test_cluster_a_redis_list_is_read_through_a_cluster_url(
    redis_cluster: LocalCluster, sidecars: list[Sidecar]
) -> None:
    key = unique("list")
    redis_cluster.client().rpush(key, *range(5))
    sidecars.append(sidecar := Sidecar("redis-list", redis_cluster.url))
    reading = sidecar.watch(key).read()
    assert reading is not None and reading.depth == 5


def test_cluster_rq_queues_on_every_master_are_read_in_one_pipeline_per_master_per_round(
    redis_cluster: LocalCluster, sidecars: list[Sidecar]
) -> None:
    """RQ's own Queue enqueues on a cluster client; the watch finds the queues in
    RQ's registry and reads them all: two writes to each master per tick."""
    prefix = unique("many")
    producer = redis_cluster.client()
    names = [f"{prefix}-{i}" for i in range(30)]
    for name in names:
        rq.Queue(name, connection=producer).enqueue(jobs.ok, 1)
    assert len(masters_of(redis_cluster, [f"rq:queue:{n}" for n in names])) == 3
    client = counting_client(redis_cluster)
    sidecars.append(sidecar := Sidecar("rq", redis_cluster.url, client=client))
    assert sidecar.discover(f"{prefix}-*") == sorted(names)
    sources = [sidecar.watch(name) for name in names]
    for source in sources:  # the first tick opens a connection to each master (a handshake of its own)
        source.read()
    CountingConnection.sends.clear()
    readings = [source.read() for source in sources]  # one tick of a monitor
    assert all(r is not None and r.depth == 1 and r.oldest_age_s is not None for r in readings)
    assert all(r is not None and r.workers == 0 for r in readings)
    masters = {int(node.port) for node in client.get_primaries()}
    assert set(CountingConnection.sends) == masters and set(CountingConnection.sends.values()) == {2}


def test_cluster_a_pattern_finds_lists_on_every_master(
    redis_cluster: LocalCluster, sidecars: list[Sidecar]
) -> None:
    prefix = unique("found")
    keys = [f"{prefix}-{i}" for i in range(20)]
    producer = redis_cluster.client()
    for i, key in enumerate(keys):
        producer.rpush(key, *range(i + 1))
    producer.set(f"{prefix}-not-a-list", 1)
    assert len(masters_of(redis_cluster, keys)) == 3
    sidecars.append(sidecar := Sidecar("redis-list", redis_cluster.url))
    found = sidecar.discover(f"{prefix}-*")
    assert found == sorted(keys)
    depths = {name: sidecar.watch(name).read() for name in found}
    assert {name: r.depth for name, r in depths.items() if r is not None} == {
        k: i + 1 for i, k in enumerate(keys)
    }


def test_cluster_a_stream_group_is_read(redis_cluster: LocalCluster, sidecars: list[Sidecar]) -> None:
    stream, group = unique("stream"), "senders"
    producer = redis_cluster.client()
    for i in range(6):
        producer.xadd(stream, {"n": i})
    producer.xgroup_create(stream, group, id="0")
    producer.xreadgroup(group, "c1", {stream: ">"}, count=2)
    sidecars.append(sidecar := Sidecar("redis-stream", redis_cluster.url, group=group))
    reading = sidecar.watch(stream).read()
    assert reading is not None
    assert (reading.depth, reading.workers, reading.busy, reading.enqueued_total) == (4, 1, 1, 6)
    assert reading.oldest_age_s is not None


def test_cluster_a_celery_queue_sums_its_priority_lists_held_on_different_masters(
    redis_cluster: LocalCluster, sidecars: list[Sidecar]
) -> None:
    """kombu's key layout (lists per priority step, a binding table), written
    by hand: kombu itself has no cluster transport. The queue's four lists sit
    in four slots; the watch finds the queue by its binding and sums them."""
    for _ in range(20):  # a name whose lists land on more than one master
        name = unique("celery")
        lists = [name, *(f"{name}{KOMBU_PRIORITY_SEP}{p}" for p in (3, 6, 9))]
        if len(masters_of(redis_cluster, lists)) > 1:
            break
    producer = redis_cluster.client()
    for n, key in enumerate(lists):
        producer.lpush(key, *(json.dumps({"headers": {"id": f"{key}-{i}"}}) for i in range(n + 1)))
    producer.sadd(f"_kombu.binding.{name}", f"{name}{KOMBU_PRIORITY_SEP}{KOMBU_PRIORITY_SEP}{name}")
    sidecars.append(sidecar := Sidecar("celery", redis_cluster.url))
    assert sidecar.discover(f"{name[:-4]}*") == [name]
    reading = sidecar.watch(name).read()
    assert reading is not None and reading.depth == 1 + 2 + 3 + 4


@pytest.mark.parametrize(
    ("kind", "options", "why"),
    [
        ("arq", {}, "arq does not run on one"),
        ("celery", {"events": True}, "has no cluster support"),
    ],
)
def test_cluster_what_cannot_work_is_refused_in_one_line(
    kind: str, options: dict[str, Any], why: str
) -> None:
    with pytest.raises(ValueError, match=why) as refused:
        Sidecar(kind, "redis+cluster://:s3cret@127.0.0.1:1/0", **options)
    assert "\n" not in str(refused.value) and "s3cret" not in str(refused.value)


def test_cluster_an_unreachable_cluster_is_one_line_without_the_password() -> None:
    url = f"redis+cluster://app:{SECRET}@127.0.0.1:{free_port()}/0"
    with pytest.raises(ConnectionError) as refused:
        Sidecar("redis-list", url)
    text = str(refused.value)
    assert text.startswith("cannot connect to the Redis Cluster at redis+cluster://app:***@127.0.0.1:")
    assert SECRET not in text and "\n" not in text


def test_cluster_a_plain_url_to_one_node_says_to_use_a_cluster_url(
    redis_cluster: LocalCluster, sidecars: list[Sidecar]
) -> None:
    node = redis_cluster.ports[0]
    key = next(k for k in (unique("elsewhere") for _ in range(100)) if redis_cluster.master_of(k) != node)
    sidecars.append(sidecar := Sidecar("redis-list", f"redis://127.0.0.1:{node}/0"))
    source = sidecar.watch(key)
    assert source.read() is None
    assert "watch it with a redis+cluster:// URL" in sidecar.group.problems[key]


@pytest.fixture
def cluster_user(redis_cluster: LocalCluster) -> Iterator[str]:
    """A user with a password on every node (a cluster does not share ACLs): its
    URL carries a secret while the default user, which other tests use, has none."""
    user = f"watcher-{uuid.uuid4().hex[:8]}"
    nodes = [redis.Redis(port=p) for p in redis_cluster.ports]
    for node in nodes:
        node.acl_setuser(user, enabled=True, passwords=[f"+{SECRET}"], keys=["*"], commands=["+@all"])
    yield f"redis+cluster://{user}:{SECRET}@127.0.0.1:{redis_cluster.ports[0]}/0"
    for node in nodes:
        node.acl_deluser(user)
        node.close()


@pytest.mark.slow
def test_cluster_watch_reads_a_list_and_never_shows_the_password(
    redis_cluster: LocalCluster, cluster_user: str
) -> None:
    key = unique("jobs")
    redis_cluster.client().rpush(key, 1, 2, 3)
    result = watch(
        "--kind", "redis-list", "--queue", key, "--url", cluster_user,
        "--interval", "0.2", "--duration", "1.1", "--format", "jsonl",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    user = cluster_user.removeprefix("redis+cluster://").partition(":")[0]
    assert f"redis+cluster://{user}:***@127.0.0.1" in result.stdout
    samples = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(samples) >= 3 and {s["depth"] for s in samples} == {3}


@pytest.mark.slow
def test_cluster_a_wrong_password_exits_2_with_one_line_and_no_secret(
    redis_cluster: LocalCluster, cluster_user: str
) -> None:
    result = watch(
        "--kind", "rq", "--queue", "default", "--url", cluster_user.replace(SECRET, "not-" + SECRET)
    )
    assert result.returncode == 2
    assert SECRET not in result.stdout + result.stderr
    assert result.stderr.startswith("qhealth watch: cannot connect to the Redis Cluster at redis+cluster://")
    assert ":***@127.0.0.1" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_cluster_a_lost_master_downs_only_its_queues_until_its_replica_takes_over(
    fresh_redis_cluster: LocalCluster, sidecars: list[Sidecar]
) -> None:
    cluster = fresh_redis_cluster
    keys = [unique("fo") for _ in range(12)]
    producer = cluster.client()
    for key in keys:
        producer.rpush(key, 1, 2)
    producer.close()
    sidecars.append(sidecar := Sidecar("redis-list", cluster.url))
    for key in keys:
        sidecar.watch(key)
    sidecar.group.read()
    assert all(r is not None and r.depth == 2 for r in sidecar.group.results.values())
    lost = cluster.master_of(keys[0])
    on_lost = {k for k in keys if cluster.master_of(k) == lost}
    cluster.kill(lost)
    sidecar.group.read()
    assert sidecar.group.error is None
    assert set(sidecar.group.problems) == on_lost  # the other masters' queues still read
    cluster.wait_failover(keys[0], lost)

    def all_read() -> bool:
        sidecar.group.read()
        return not sidecar.group.problems

    wait_until(all_read, 20, lambda: f"every queue to read again: {sidecar.group.problems}")
    assert all(r is not None and r.depth == 2 for r in sidecar.group.results.values())
