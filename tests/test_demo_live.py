"""The demo's live view in a terminal of a given size (issue 16, item 13).

Rendered on a fixed-size rich Console from the tally of a real run of the
pools (simulated time, run flat out): in 80 columns and 24 rows nothing is
cut, every fix is shown whole, and each sparkline ends on the newest sample.
"""

from __future__ import annotations

import asyncio
import io
import re

import pytest
from rich.console import Console

from qhealth import Monitor
from qhealth.cli._demo import SCENARIOS, Settings
from qhealth.cli._demo._clock import SimulatedTime, run
from qhealth.cli._demo._live import LiveView
from qhealth.cli._demo._main import INTERVAL_S, Options, descriptions
from qhealth.cli._demo._run import run_pools
from qhealth.cli._demo._tally import Tally
from qhealth.cli._demo._text import sparkline

_BLOCKS = "▁▂▃▄▅▆▇█"


def _ran(scenario: str, seconds: float = 40.0) -> tuple[LiveView, Tally]:
    settings = Settings(SCENARIOS[scenario], duration_s=seconds)
    clock = SimulatedTime(paced=False)
    monitor = Monitor(interval=INTERVAL_S, config=Options(settings=settings).config, clock=clock)
    tally = Tally()
    monitor.add_listener(tally)
    run(run_pools(settings, monitor, asyncio.Event()), clock)
    view = LiveView(tally, descriptions(settings), f"scenario {scenario}", seconds)
    return view, tally


@pytest.fixture(scope="module")
def boom_bust() -> tuple[LiveView, Tally]:
    return _ran("boom-bust")


@pytest.fixture(scope="module")
def overflow() -> tuple[LiveView, Tally]:
    return _ran("overflow")


def _screen(view: LiveView, width: int, height: int = 24) -> list[str]:
    console = Console(record=True, width=width, height=height, file=io.StringIO(), color_system=None)
    console.print(view.render())
    return console.export_text().rstrip("\n").split("\n")


def _flowing(lines: list[str]) -> str:
    """The text inside the panels, as one line (borders and wrapping undone)."""
    inner = (line.strip().strip("│╭╮╰╯─").strip() for line in lines)
    return " ".join(" ".join(inner).split())


@pytest.mark.parametrize("scenario", ["boom_bust", "overflow"])
def test_in_80_by_24_the_view_fits_and_every_fix_is_whole(
    scenario: str, request: pytest.FixtureRequest
) -> None:
    view, tally = request.getfixturevalue(scenario)
    lines = _screen(view, 80)
    assert max(len(line) for line in lines) <= 80
    assert len(lines) <= 24
    shown = _flowing(lines)
    for queue in ("naive", "reference"):
        latest = tally.get(queue).latest
        assert latest is not None
        for finding in latest.health.findings:
            assert " ".join(finding.hint.split()) in shown, finding.hint
            assert " ".join(finding.reason.split()) in shown, finding.reason


def test_sparklines_fill_the_room_and_end_on_the_newest_sample(boom_bust: tuple[LiveView, Tally]) -> None:
    view, tally = boom_bust
    lines = _screen(view, 80)
    rows = [line for line in lines if re.search(r"│ depth\s", line)]
    assert len(rows) == 2  # one per pool, one above the other
    for row, queue in zip(rows, ("naive", "reference"), strict=True):
        found = re.search(f"[{_BLOCKS}]+", row)
        assert found
        drawn = found.group(0)
        assert len(drawn) >= 50  # as wide as the panel allows, not a fixed 30
        depths = list(tally.get(queue).depths)
        assert drawn == sparkline(depths, len(drawn))  # the last values, newest on the right


def test_a_terminal_too_short_for_the_sparklines_keeps_the_fixes(overflow: tuple[LiveView, Tally]) -> None:
    view, _ = overflow
    tall = _screen(view, 80, height=60)
    short = _screen(view, 80, height=24)
    assert len(tall) > 24  # with sparklines, the overflow run does not fit 24 rows...
    assert re.search(f"[{_BLOCKS}]{{20}}", "\n".join(tall))
    assert len(short) <= 24  # ...so they give way to one line of numbers per pool
    assert re.search(r"now depth [\d,]+ busy \d+/\d+", _flowing(short))
    assert _flowing(tall).count("fix ") == _flowing(short).count("fix ")


def test_a_wide_terminal_shows_the_pools_side_by_side_with_their_set_up(
    boom_bust: tuple[LiveView, Tally],
) -> None:
    view, _ = boom_bust
    lines = _screen(view, 160, height=60)
    assert max(len(line) for line in lines) <= 160
    assert any("naive" in line and "reference" in line for line in lines)  # both panel titles on one row
    # Each panel opens with its pool's set-up, both on the same row.
    assert any(line.count("│ pool ") == 2 and "src_pool:" in line for line in lines)
