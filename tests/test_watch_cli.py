"""``qhealth watch`` as a user runs it: a real process against a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
import redis
import rq

from tests import integration_jobs as jobs
from tests.integration_brokers import (
    PYTHON,
    Proc,
    free_port,
    procs,
    redis_url,
    scrape,
    unique,
    wait_until,
    watch,
)
from tests.redis_server import RedisServer, redis_factory

__all__ = ["procs", "redis_factory", "redis_url"]

SECRET = "pw-Zq81xK"


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis that needs a password, so that the URL carries a secret."""
    server = RedisServer(tmp_path_factory.mktemp("locked-redis"), password=SECRET)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.slow
def test_watch_prints_samples_and_never_the_password(locked_redis: str) -> None:
    key = unique("jobs")
    redis.Redis.from_url(locked_redis).rpush(key, 1, 2, 3)
    result = watch(
        "--kind", "redis-list", "--queue", key, "--url", locked_redis,
        "--interval", "0.2", "--duration", "1.1", "--format", "jsonl",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "redis://:***@127.0.0.1" in result.stdout
    samples = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(samples) >= 3
    assert {s["depth"] for s in samples} == {3}
    assert all(s["processed_total"] is None and s["workers"] is None for s in samples)


def test_watch_says_which_fields_it_cannot_know(redis_url: str) -> None:
    result = watch("--kind", "redis-list", "--queue", unique("k"), "--url", redis_url, "--duration", "0.1")
    assert result.returncode == 0, result.stderr
    assert "unknown: processed_total: Redis keeps no count of pops" in result.stdout


def test_a_wrong_password_exits_2_with_one_line_and_no_secret(locked_redis: str) -> None:
    wrong = locked_redis.replace(SECRET, "not-" + SECRET)
    result = watch("--kind", "rq", "--queue", "default", "--url", wrong)
    assert result.returncode == 2
    assert SECRET not in result.stdout + result.stderr
    assert result.stderr.startswith("qhealth watch: cannot read rq queue 'default' at redis://:***@")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_broker_that_is_down_exits_2_naming_it() -> None:
    port = free_port()
    result = watch("--kind", "redis-list", "--queue", "k", "--url", f"redis://127.0.0.1:{port}/0")
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr and "refused" in result.stderr.lower()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "redis-stream", "--queue", "s"], "needs the consumer group (--group)"),
        (["--kind", "rq", "--queue", "q", "--group", "g"], "applies to --kind redis-stream only"),
        (["--kind", "rq", "--queue", "q", "--url", "amqp://mq//"], "needs a redis:// URL"),
        (["--kind", "celery", "--queue", "q", "--url", "http://x"], "must start with redis://"),
        (["--kind", "rq", "--queue", "q", "--interval", "0"], "--interval must be a positive number"),
        (["--kind", "rq", "--queue", "q", "--set", "nope=1"], "unknown classifier setting 'nope'"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(args: list[str], message: str) -> None:
    result = watch(*args)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.slow
def test_watch_serves_the_metric_contract(procs: Callable[..., Proc], redis_url: str) -> None:
    key, port = unique("served"), free_port()
    redis.Redis.from_url(redis_url).rpush(key, *range(7))
    serve = ["--interval", "0.2", "--serve", f"127.0.0.1:{port}", "--duration", "20"]
    sidecar = procs(
        [PYTHON, "-m", "qhealth", "watch", "--kind", "redis-list", "--queue", key, "--url", redis_url, *serve]
    )
    expected = f'qhealth_queue_depth{{queue="{key}"}} 7.0'

    wait_until(lambda: expected in scrape(port), 15, lambda: f"{expected} in /metrics\n{sidecar.output()}")
    body = scrape(port)
    # A bare list knows its depth only: no invented worker or throughput numbers.
    assert f'qhealth_workers{{queue="{key}"}}' not in body
    assert f'qhealth_condition{{condition="stalled",queue="{key}"}}' in body


@pytest.mark.slow
def test_the_first_verdict_names_the_conditions_it_could_not_judge(redis_url: str) -> None:
    key = unique("jobs")
    redis.Redis.from_url(redis_url).rpush(key, 1)
    result = watch(
        "--kind", "redis-list", "--queue", key, "--url", redis_url,
        "--interval", "0.1", "--window", "0.4", "--set", "min_window_intervals=2", "--duration", "1.2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "not judged: stalled: items processed are unknown" in result.stdout
    assert result.stdout.count("not judged: stalled") == 1  # once, not on every line


@pytest.mark.slow
def test_watch_exports_over_otlp(procs: Callable[..., Proc], redis_url: str) -> None:
    from tests.otel_support import OtlpReceiver

    key = unique("otlp")
    redis.Redis.from_url(redis_url).rpush(key, *range(4))
    with OtlpReceiver("http") as receiver:
        args = ["--kind", "redis-list", "--queue", key, "--url", redis_url, "--interval", "0.2"]
        otlp = ["--otlp-endpoint", receiver.endpoint, "--otlp-protocol", "http/protobuf", "--duration", "20"]
        sidecar = procs(
            [PYTHON, "-m", "qhealth", "watch", *args, *otlp], env={"OTEL_METRIC_EXPORT_INTERVAL": "300"}
        )

        def depth_arrived() -> bool:
            return any(p.metric == "qhealth.queue.depth" and p.value == 4 for p in receiver.points())

        wait_until(depth_arrived, 20, lambda: f"qhealth.queue.depth = 4 over OTLP\n{sidecar.output()}")
        assert "exporting over OTLP (http/protobuf)" in sidecar.output()
        assert sidecar.stop() == 0  # SIGTERM: a clean exit, the last export flushed while the receiver is up


def depths(output: str) -> list[int]:
    return [json.loads(line)["depth"] for line in output.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_a_broker_that_dies_mid_watch_gives_one_line_then_the_watch_resumes(
    procs: Callable[..., Proc], redis_factory: Callable[..., RedisServer]
) -> None:
    server = redis_factory(password=SECRET)
    key = unique("jobs")
    redis.Redis.from_url(server.url).rpush(key, 1, 2)
    args = ["--kind", "redis-list", "--queue", key, "--url", server.url, "--interval", "0.2"]
    sidecar = procs([PYTHON, "-m", "qhealth", "watch", *args, "--format", "jsonl", "--duration", "60"])
    wait_until(lambda: depths(sidecar.output()).count(2) >= 2, 20, lambda: f"samples\n{sidecar.output()}")
    server.stop()
    time.sleep(3)  # about 15 ticks with the broker gone
    down = sidecar.output()
    server.start()  # same port, empty (nothing was saved)
    redis.Redis.from_url(server.url).rpush(key, 1, 2, 3, 4)
    wait_until(lambda: 4 in depths(sidecar.output()), 20, lambda: f"depth 4 again\n{sidecar.output()}")
    output = sidecar.output()
    assert SECRET not in output
    assert "Traceback" not in output
    assert down.count("cannot read redis-list queue") == 1, down  # once, not once per tick
    (line,) = [text for text in down.splitlines() if "cannot read" in text]
    assert f"at redis://:***@127.0.0.1:{server.port}/0: " in line and "refused" in line.lower()
    assert f"reading redis-list queue {key!r} again, after " in output
    assert sidecar.stop() == 0


def test_a_misspelled_rq_queue_exits_2_naming_the_queues_rq_knows(redis_url: str) -> None:
    name = unique("emails")
    rq.Queue(name, connection=redis.Redis.from_url(redis_url)).enqueue(jobs.ok, 1)
    typo = name.replace("emails", "emials")
    result = watch("--kind", "rq", "--queue", typo, "--url", redis_url, "--duration", "1")
    assert result.returncode == 2
    assert (
        f"RQ knows no queue {typo!r}: no job was ever enqueued to it and no worker serves it" in result.stderr
    )
    assert repr(name) in result.stderr  # the closest name RQ knows
    assert len(result.stderr.strip().splitlines()) == 1
