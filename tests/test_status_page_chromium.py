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

import qhealth
from qhealth import prometheus
from qhealth._http import HttpServer, Request, Response
from qhealth.status_page import COLORS, StatusPage

from .status_page_support import count_color, play, read_png, replaying_monitor, run_chromium

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


# -- narrow and wide windows ----------------------------------------------------------------

LONG_NAME = "billing-reconciliation-retries-priority-high-eu-west-1-0123456789abcdef"

#: A page of the test only: the status page in a frame WIDTH px wide (headless
#: Chromium keeps its window at least 500 px wide), measured once it has
#: loaded: every element of every card must lie within its card and the
#: frame. The result goes into attributes of this page's <body>.
MEASURE = """<!doctype html><html><body style="margin:0">
<iframe id="f" src="/" style="width:WIDTHpx;height:900px;border:0"></iframe>
<script>
document.getElementById('f').addEventListener('load', () => {
  const d = document.getElementById('f').contentDocument;
  const vw = d.documentElement.clientWidth;
  const bad = [];
  const cards = [...d.querySelectorAll('.card')];
  for (const card of cards) {
    const c = card.getBoundingClientRect();
    if (c.left < -0.5 || c.right > vw + 0.5) bad.push('card ' + card.dataset.queue);
    for (const el of card.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue;
      if (r.left < c.left - 0.5 || r.right > c.right + 0.5) {
        bad.push(el.tagName + '.' + (el.getAttribute('class') || '') + ' in ' + card.dataset.queue);
      }
    }
  }
  const tops = new Set(cards.map(e => Math.round(e.getBoundingClientRect().top)));
  document.body.setAttribute('data-scroll-width', d.documentElement.scrollWidth);
  document.body.setAttribute('data-viewport', vw);
  document.body.setAttribute('data-rows', tops.size);
  document.body.setAttribute('data-cards', cards.length);
  document.body.setAttribute('data-outside', bad.join('|'));
});
</script></body></html>"""


class KnowsDepthAndTotals:
    """A sidecar-like source: no workers, no attempts, no idle time, so the
    classifier cannot judge every condition."""

    unknown: dict[str, str] = {}  # noqa: RUF012

    def __init__(self) -> None:
        self.n = 0

    def read(self) -> qhealth.Reading:
        self.n += 10
        return qhealth.Reading(depth=2, enqueued_total=self.n, processed_total=self.n)


@pytest.fixture
def crowded() -> Iterator[HttpServer]:
    monitor, clock, ticks = replaying_monitor(
        {"cache-warm": "boom-bust-poisson", LONG_NAME: "rate-limited", "ledger-post": "healthy-bursty"}
    )
    monitor.watch_source("depth-only", KnowsDepthAndTotals())
    page = StatusPage(monitor)

    def measured(request: Request) -> Response:
        width = request.query.get("width", ["420"])[0]
        return Response(MEASURE.replace("WIDTH", width).encode(), content_type="text/html")

    server = prometheus.serve(
        monitor,
        listen="127.0.0.1:0",
        registry=CollectorRegistry(),
        routes={"/": page.route, "/measured": measured},
    )
    play(monitor, clock, ticks)
    yield server
    server.close()


def _measured(server: HttpServer, width: int, tmp_path: Path) -> dict[str, str]:
    url = f"{server.url}/measured?width={width}"
    dom = run_chromium(["--window-size=1600,1000", "--dump-dom", url], tmp_path / "profile").stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', body.group(1)))


@pytest.mark.parametrize("width", [420, 1400])
def test_every_card_fits_the_window_with_nothing_clipped(
    crowded: HttpServer, tmp_path: Path, width: int
) -> None:
    got = _measured(crowded, width, tmp_path)
    assert int(got["cards"]) == 4, got
    assert int(got["viewport"]) == width
    assert got["outside"] == "", got["outside"]
    assert int(got["scroll-width"]) <= int(got["viewport"]), "the page scrolls sideways"
    if width == 1400:
        assert int(got["rows"]) < 4, "wide windows put cards side by side"
    else:
        assert int(got["rows"]) == 4, "narrow windows stack the cards"


def test_a_partly_judged_queue_says_what_was_not_judged_instead_of_a_plain_healthy(
    crowded: HttpServer, tmp_path: Path
) -> None:
    dom = run_chromium(["--window-size=420,900", "--dump-dom", crowded.url + "/"], tmp_path / "p").stdout
    card = re.search(r'<section class="card" data-queue="depth-only".*?</section>', dom, re.S)
    assert card, "the depth-only queue has a card"
    text = html.unescape(re.sub(r"<[^>]+>", " ", card.group(0)))
    assert 'data-state="healthy"' in card.group(0)
    assert 'class="badge partial"' in card.group(0), "no solid healthy badge"
    assert re.search(r"\b[0-4] of 5 conditions judged", text)
    assert re.search(r"boom_bust\s+not judged", text) and re.search(r"rate_limited\s+not judged", text)
    full = re.search(r'<section class="card" data-queue="ledger-post".*?</section>', dom, re.S)
    assert full and 'class="badge partial"' not in full.group(0), "a fully judged queue keeps its badge"


def test_each_sparkline_shows_its_scale_and_the_span_of_time(crowded: HttpServer, tmp_path: Path) -> None:
    dom = run_chromium(["--window-size=1400,900", "--dump-dom", crowded.url + "/"], tmp_path / "p").stdout
    card = re.search(r'<section class="card" data-queue="ledger-post".*?</section>', dom, re.S)
    assert card
    scales = re.findall(r'<span class="scale"[^>]*>0–([\d,.]+)</span>', html.unescape(card.group(0)))
    assert len(scales) == 3, "depth, busy and items/s each have their scale"
    assert re.search(r"last \d+ (s|min), oldest left, newest right", card.group(0))
