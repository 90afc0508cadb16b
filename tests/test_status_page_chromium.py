"""The status page as a browser renders it: headless Chromium, a screenshot, the DOM.

The page is served by the real ``/metrics`` server over a monitor that played
example traces, so each queue is in a known state. The screenshot check reads
the PNG's pixels: the colour of each state's badge must cover a badge-sized
area, and a page without that state must not show it beyond the legend's
small swatch. A page that failed to render, or rendered without its styles,
would fail it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from qhealth import prometheus
from qhealth._http import HttpServer
from qhealth.status_page import COLORS, StatusPage

from .test_status_page_support import count_color, play, read_png, replaying_monitor, run_chromium

pytestmark = pytest.mark.slow

#: A badge is about 100 x 22 px and the state strip 220 x 10: a state shown
#: on a card covers well over this many pixels of its colour.
SHOWN_PX = 1000
#: The legend's swatch of every state is 10 x 10 px.
LEGEND_PX = 150


def _serve(queues: dict[str, str]) -> HttpServer:
    monitor, clock, ticks = replaying_monitor(queues)
    page = StatusPage(monitor)
    server = prometheus.serve(
        monitor, listen="127.0.0.1:0", registry=CollectorRegistry(), routes={"/": page.route}
    )
    play(monitor, clock, ticks)
    return server


@pytest.fixture
def mixed() -> Iterator[HttpServer]:
    server = _serve(
        {"cache-warm": "boom-bust-poisson", "invoice-render": "rate-limited", "ledger-post": "healthy-bursty"}
    )
    yield server
    server.close()


def _screenshot(url: str, tmp_path: Path) -> list[bytes]:
    shot = tmp_path / "page.png"
    run_chromium([f"--screenshot={shot}", "--window-size=1200,900", url], tmp_path / "profile")
    width, height, rows = read_png(shot)
    assert (width, height) == (1200, 900)
    return rows


def test_the_screenshot_shows_each_state_in_its_colour(mixed: HttpServer, tmp_path: Path) -> None:
    rows = _screenshot(mixed.url + "/", tmp_path)
    for state in ("boom_bust", "rate_limited", "healthy"):
        assert count_color(rows, COLORS[state]) >= SHOWN_PX, state


def test_a_state_no_queue_is_in_shows_only_in_the_legend(tmp_path: Path) -> None:
    server = _serve({"ledger-post": "healthy-bursty"})
    try:
        rows = _screenshot(server.url + "/", tmp_path)
    finally:
        server.close()
    assert count_color(rows, COLORS["healthy"]) >= SHOWN_PX
    for state in ("boom_bust", "rate_limited", "overflow"):
        assert count_color(rows, COLORS[state]) <= LEGEND_PX, state


def test_the_rendered_dom_names_each_queue_its_state_and_the_reason(
    mixed: HttpServer, tmp_path: Path
) -> None:
    result = run_chromium(["--dump-dom", mixed.url + "/"], tmp_path / "profile")
    dom = result.stdout
    cards = dict(re.findall(r'<section class="card" data-queue="([^"]+)" data-state="([^"]+)"', dom))
    assert cards == {"cache-warm": "boom_bust", "invoice-render": "rate_limited", "ledger-post": "healthy"}
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
    assert "downstream calls answered 429" in text
    assert "workers sat idle while items waited" in text
    assert "fix: workers poll on a fixed interval" in text
