"""The status page at ``/``: what it shows, what it never does, where it is served."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import qhealth
from qhealth import prometheus
from qhealth.status_page import COLORS, HISTORY, MAX_QUEUES, StatusPage

from .conftest import TRACES
from .status_page_support import play, replaying_monitor

QUEUES = {
    "cache-warm": "boom-bust-poisson",
    "invoice-render": "rate-limited",
    "ledger-post": "healthy-bursty",
}


@pytest.fixture
def page() -> Iterator[tuple[StatusPage, qhealth.Monitor]]:
    monitor, clock, ticks = replaying_monitor(QUEUES)
    status = StatusPage(monitor)
    play(monitor, clock, ticks)
    yield status, monitor
    status.close()


def _card(html: str, queue: str) -> str:
    match = re.search(rf'<section class="card" data-queue="{re.escape(queue)}".*?</section>', html, re.S)
    assert match, f"no card for {queue}"
    return match.group(0)


def test_every_queue_has_a_card_with_its_state(page: tuple[StatusPage, qhealth.Monitor]) -> None:
    status, monitor = page
    html = status.render()
    for queue in QUEUES:
        state = monitor.snapshots()[queue].health.state
        assert f'data-queue="{queue}" data-state="{state}"' in html
    assert 'data-state="boom_bust"' in _card(html, "cache-warm")
    assert 'data-state="rate_limited"' in _card(html, "invoice-render")
    assert 'data-state="healthy"' in _card(html, "ledger-post")


def test_a_condition_comes_with_its_reason_and_fix(page: tuple[StatusPage, qhealth.Monitor]) -> None:
    status, monitor = page
    card = _card(status.render(), "invoice-render")
    (finding,) = monitor.snapshots()["invoice-render"].health.findings
    assert finding.reason.replace("'", "&#x27;") in card
    assert f"fix: {finding.hint}" in card


def test_the_badge_has_the_colour_of_the_state(page: tuple[StatusPage, qhealth.Monitor]) -> None:
    status, _ = page
    card = _card(status.render(), "cache-warm")
    assert f'<span class="badge" style="background:{COLORS["boom_bust"]}">boom_bust</span>' in card


def test_queues_are_listed_worst_first(page: tuple[StatusPage, qhealth.Monitor]) -> None:
    status, _ = page
    order = re.findall(r'data-queue="([^"]+)"', status.render())
    assert order == ["invoice-render", "cache-warm", "ledger-post"]  # rate_limited, boom_bust, healthy


def test_sparklines_and_the_state_strip_are_drawn_from_the_history(
    page: tuple[StatusPage, qhealth.Monitor],
) -> None:
    status, _ = page
    card = _card(status.render(), "cache-warm")
    assert card.count('<svg class="spark"') == 3
    assert card.count("<polyline") >= 3
    strip = re.search(r'<svg class="strip".*?</svg>', card, re.S)
    assert strip
    assert f'fill="{COLORS["boom_bust"]}"' in strip.group(0)


def test_queue_names_and_reasons_are_escaped() -> None:
    monitor, clock, _ = replaying_monitor({'<script>alert("x")</script>': "rate-limited"})
    status = StatusPage(monitor)
    play(monitor, clock, 120)
    html = status.render()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def test_the_page_loads_nothing_and_refreshes_itself(page: tuple[StatusPage, qhealth.Monitor]) -> None:
    status, _ = page
    html = status.render()
    assert '<meta http-equiv="refresh" content="2">' in html
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "@import" not in html and "url(" not in html


def test_a_queue_still_warming_up_says_so() -> None:
    monitor, clock, _ = replaying_monitor({"q": "healthy-bursty"})
    status = StatusPage(monitor)
    play(monitor, clock, 5)
    card = _card(status.render(), "q")
    assert 'data-state="warming_up"' in card
    assert "collecting the first window" in card


def test_no_queue_yet_gives_a_page_that_says_so() -> None:
    status = StatusPage(qhealth.Monitor())
    assert "No queue sampled yet" in status.render()


def test_history_is_bounded_per_queue(page: tuple[StatusPage, qhealth.Monitor]) -> None:
    status, _ = page
    card = _card(status.render(), "ledger-post")  # 370 samples played
    points = re.search(r'<polyline points="([^"]+)"', card)
    assert points
    assert len(points.group(1).split()) == HISTORY


def test_queues_beyond_the_limit_are_counted_not_drawn() -> None:
    monitor = qhealth.Monitor()
    for i in range(MAX_QUEUES + 3):
        probe = monitor.watch(f"q{i:03d}", workers=1)
        probe.enqueued()
    monitor.tick()
    status = StatusPage(monitor)
    html = status.render()
    assert html.count('<section class="card"') == MAX_QUEUES
    assert "3 more queues not shown" in html


def test_a_source_without_listeners_gets_history_by_polling() -> None:
    """``qhealth serve``'s replay has no listeners: the page polls it."""

    class Latest:
        def __init__(self, monitor: qhealth.Monitor) -> None:
            self.monitor = monitor

        def snapshots(self) -> dict[str, qhealth.QueueSnapshot]:
            return dict(self.monitor.snapshots())

    monitor, clock, _ = replaying_monitor({"q": "healthy-bursty"})
    status = StatusPage(Latest(monitor))
    for _ in range(10):
        play(monitor, clock, 1)
        status.poll()
        status.poll()  # the same sample twice counts once
    points = re.search(r'<polyline points="([^"]+)"', _card(status.render(), "q"))
    assert points
    assert len(points.group(1).split()) == 10


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def test_the_page_mounted_on_the_metrics_server_answers_root_and_metrics_still() -> None:
    monitor, clock, ticks = replaying_monitor(QUEUES)
    page = StatusPage(monitor)
    server = prometheus.serve(
        monitor, listen="127.0.0.1:0", registry=CollectorRegistry(), routes={"/": page.route}
    )
    try:
        play(monitor, clock, ticks)
        status, content_type, body = _get(server.url + "/")
        assert status == 200
        assert content_type == "text/html; charset=utf-8"
        assert 'data-queue="cache-warm" data-state="boom_bust"' in body
        _, _, metrics = _get(server.url + "/metrics")
        assert 'qhealth_condition{condition="boom_bust",queue="cache-warm"} 1.0' in metrics
    finally:
        server.close()


@pytest.mark.slow
def test_qhealth_serve_answers_root_with_the_replayed_conditions(tmp_path: Path) -> None:
    trace = TRACES / "rate-limited.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qhealth", "serve", str(trace), "--listen", "127.0.0.1:0", "--speed", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", first)
        assert match, first
        url = match.group(1)
        body = ""
        for _ in range(50):  # 400 samples at speed 1000: under a second
            _, _, body = _get(url + "/")
            if 'data-state="rate_limited"' in body:
                break
            time.sleep(0.1)
        assert 'data-queue="invoice-render" data-state="rate_limited"' in body
        assert "<polyline" in body
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
