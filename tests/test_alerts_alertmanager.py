"""The example Alertmanager config: valid, routed by severity, and its inhibitions
checked on a real Alertmanager."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.services import free_port, wait_ready

from .conftest import ROOT
from .services import need_tool, run

CONFIG = ROOT / "alerts" / "alertmanager.yml"


def test_amtool_accepts_the_config() -> None:
    result = run(need_tool("amtool", "prometheus-alertmanager"), "check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=QueueStalled", "severity=critical", "queue=q"], "pager"),
        (["alertname=QueueBoomBust", "severity=warning", "queue=q"], "ops-chat"),
        (["alertname=QueueRateLimitStorm", "severity=warning", "queue=q"], "ops-chat"),
        (["alertname=QueuePersistentlyIdle", "severity=info", "queue=q"], "capacity-tickets"),
        (["alertname=SomethingElse"], "ops-chat"),
    ],
)
def test_alerts_are_routed_by_severity(labels: list[str], receiver: str) -> None:
    result = run(
        need_tool("amtool", "prometheus-alertmanager"),
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={receiver}",
        *labels,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway Alertmanager (no clustering) loaded with the example config."""
    binary = need_tool("prometheus-alertmanager", "prometheus-alertmanager")
    port = free_port()
    workdir = tmp_path_factory.mktemp("alertmanager")
    log = (workdir / "log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={CONFIG}",
            f"--storage.path={workdir}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/-/ready", process, workdir / "log", "Alertmanager", timeout=15)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _post(url: str, alerts: list[dict[str, dict[str, str]]]) -> None:
    request = urllib.request.Request(
        f"{url}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _states(url: str, queue: str, expected: dict[str, str]) -> dict[str, str]:
    """The alerts' states on a queue, once they are as expected or after 10 s: the
    inhibitor learns about new source alerts asynchronously."""
    deadline = time.monotonic() + 10
    while True:
        alerts = _get(f"{url}/api/v2/alerts?filter=queue%3D%22{queue}%22")
        assert isinstance(alerts, list)
        states = {a["labels"]["alertname"]: a["status"]["state"] for a in alerts}
        if states == expected or time.monotonic() > deadline:
            return states
        time.sleep(0.1)


def _alert(name: str, severity: str, queue: str) -> dict[str, dict[str, str]]:
    return {"labels": {"alertname": name, "severity": severity, "queue": queue, "condition": "x"}}


def test_stalled_mutes_the_other_alerts_of_its_queue_only(alertmanager: str) -> None:
    _post(
        alertmanager,
        [
            _alert("QueueStalled", "critical", "a"),
            _alert("QueueOverflow", "warning", "a"),
            _alert("QueuePersistentlyIdle", "info", "a"),
            _alert("QueueOverflow", "warning", "b"),
        ],
    )
    expected = {
        "QueueStalled": "active",
        "QueueOverflow": "suppressed",
        "QueuePersistentlyIdle": "suppressed",
    }
    assert _states(alertmanager, "a", expected) == expected
    expected = {"QueueOverflow": "active"}
    assert _states(alertmanager, "b", expected) == expected


def test_a_rate_limit_storm_mutes_overflow_on_its_queue(alertmanager: str) -> None:
    _post(
        alertmanager,
        [_alert("QueueRateLimitStorm", "warning", "c"), _alert("QueueOverflow", "warning", "c")],
    )
    expected = {"QueueRateLimitStorm": "active", "QueueOverflow": "suppressed"}
    assert _states(alertmanager, "c", expected) == expected


def test_boom_bust_mutes_idle_but_not_the_reverse(alertmanager: str) -> None:
    _post(
        alertmanager,
        [_alert("QueueBoomBust", "warning", "d"), _alert("QueuePersistentlyIdle", "info", "d")],
    )
    expected = {"QueueBoomBust": "active", "QueuePersistentlyIdle": "suppressed"}
    assert _states(alertmanager, "d", expected) == expected
