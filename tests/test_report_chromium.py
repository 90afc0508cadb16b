"""The HTML report as a browser lays it out (headless Chromium): labels that
must stay on one line do, and each condition's lane is drawn in its colour
(issue 16, items 7 and 8)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from qhealth import read_trace
from qhealth._colors import STATE_COLORS
from qhealth.cli._demo import SCENARIOS, Options, Settings, run_demo
from qhealth.report import Section, write_html

from .status_page_support import count_color, read_png, run_chromium

pytestmark = pytest.mark.slow

#: Runs in the page after layout: every label that must not wrap, and whether
#: it did (a swatch and its name on different lines, or one text over two lines).
_MEASURE = """<script>
const wrapped = [];
const lineOf = (node) => {
  const range = document.createRange(); range.selectNodeContents(node);
  return [...range.getClientRects()].map((r) => Math.round(r.top));
};
for (const el of document.querySelectorAll("th, td.t, td.state, .legend span")) {
  let swatch = null;
  for (const node of el.childNodes) {
    if (node.nodeType === 1 && node.tagName === "I") { swatch = node.getBoundingClientRect(); continue; }
    if (node.nodeType !== 3 || !node.textContent.trim()) continue;
    const tops = new Set(lineOf(node));
    const apart = swatch && Math.abs(swatch.top - Math.min(...tops)) > 8;
    if (tops.size > 1 || apart) wrapped.push(node.textContent.trim());
    swatch = null;
  }
}
document.body.setAttribute("data-wrapped", JSON.stringify(wrapped));
</script>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's report (boom-bust, seed 7), as the demo writes it."""
    directory = tmp_path_factory.mktemp("report")
    traces = directory / "traces"
    settings = Settings(SCENARIOS["boom-bust"], duration_s=60)
    options = Options(settings=settings, live=False, report=None, record=traces, paced=False)
    run_demo(options, io.StringIO())
    sections = [
        Section.from_trace(read_trace(traces / f"{q}.jsonl"), options.config) for q in ("naive", "reference")
    ]
    path = directory / "report.html"
    write_html(path, sections, title="qhealth demo")
    return path


def test_no_label_wraps_at_the_reports_width(report: Path, tmp_path: Path) -> None:
    page = tmp_path / "measured.html"
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", _MEASURE + "</body>"))
    dom = run_chromium(
        ["--window-size=1040,900", "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        tmp_path / "profile",
    ).stdout
    found = re.search(r'data-wrapped="([^"]*)"', dom)
    assert found, "the measuring script ran"
    assert json.loads(found.group(1).replace("&quot;", '"')) == []


def test_both_conditions_of_the_naive_pool_are_drawn_in_their_colours(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    run_chromium([f"--screenshot={shot}", "--window-size=1040,700", report.as_uri()], tmp_path / "profile")
    _, _, rows = read_png(shot)
    lanes_on_screen = rows[100:300]  # the naive pool's lanes, below the title and the legend
    # Each lane is ~690 px wide: most of it on, for a 60 s run with 45 s judged.
    assert count_color(lanes_on_screen, STATE_COLORS["boom_bust"]) > 5000
    assert count_color(lanes_on_screen, STATE_COLORS["rate_limited"]) > 5000
