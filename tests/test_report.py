"""``qhealth report``: a trace's story as HTML with inline SVG, and as PNG."""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qhealth import Sample, Trace, TraceHeader, read_trace
from qhealth.cli import main
from qhealth.report import ReportError, Section, bands, changes, lanes, render_html, write_png

from .conftest import TRACES

POLL_BUG = TRACES / "transition-poll-bug.jsonl"


@pytest.fixture(scope="module")
def poll_bug() -> Section:
    return Section.from_trace(read_trace(POLL_BUG))


@pytest.fixture(scope="module")
def demo_sections(tmp_path_factory: pytest.TempPathFactory) -> list[Section]:
    """The demo's two pools (boom-bust, seed 7), recorded: naive, then reference."""
    import io

    from qhealth.cli._demo import SCENARIOS, Options, Settings, run_demo

    traces = tmp_path_factory.mktemp("demo-traces")
    settings = Settings(SCENARIOS["boom-bust"], duration_s=60)
    options = Options(settings=settings, live=False, report=None, record=traces, paced=False)
    run_demo(options, io.StringIO())
    return [
        Section.from_trace(read_trace(traces / f"{q}.jsonl"), options.config) for q in ("naive", "reference")
    ]


def _svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(svg) for svg in re.findall(r"<svg .*?</svg>", page, flags=re.DOTALL)]


def test_the_page_has_condition_lanes_and_four_charts_of_well_formed_svg(poll_bug: Section) -> None:
    svgs = _svgs(render_html([poll_bug]))
    labels = [svg.get("aria-label") for svg in svgs]
    assert labels == ["conditions over time", "Depth", "Throughput", "Workers", "Downstream calls"]


def test_the_boom_bust_band_covers_the_labeled_segment(poll_bug: Section) -> None:
    labels = json.loads(POLL_BUG.with_name("transition-poll-bug.labels.json").read_text())
    segment = next(s for s in labels["segments"] if s["conditions"] == ["boom_bust"])
    boom = [b for b in bands(poll_bug) if b.state == "boom_bust"]
    assert len(boom) == 1
    assert boom[0].t0 <= segment["t0"] and boom[0].t1 >= segment["t1"]
    (on,) = [r for r in lanes(poll_bug)["boom_bust"] if r.kind == "on"]
    assert (on.t0, on.t1) == (boom[0].t0, boom[0].t1)


def _lane_titles(page: str) -> dict[str, list[str]]:
    """Each lane's coloured stretches, by the title they carry (``boom_bust 175-377 s``)."""
    lanes_svg = _svgs(page)[0]
    out: dict[str, list[str]] = {}
    for group in lanes_svg.iter("{http://www.w3.org/2000/svg}g"):
        titles = [str(el.findtext("{http://www.w3.org/2000/svg}title")) for el in group.iter()]
        out[str(group.get("data-condition"))] = [t for t in titles if t != "None"]
    return out


def test_there_is_one_lane_per_condition_and_conditions_on_together_each_show(
    demo_sections: list[Section],
) -> None:
    """The naive pool of the demo is rate_limited and boom_bust at once: the
    state (the most severe) alone would hide boom_bust; the lanes show both."""
    naive = demo_sections[0]
    page = render_html([naive])
    titles = _lane_titles(page)
    assert list(titles) == ["stalled", "overflow", "rate_limited", "boom_bust", "idle"]
    both = [h for h in naive.healths if {str(c) for c in h.conditions} >= {"rate_limited", "boom_bust"}]
    assert both, "the demo's naive pool has both on at once"
    assert all(h.state == "rate_limited" for h in both)  # what a single state band showed
    assert any(t.startswith("boom_bust ") for t in titles["boom_bust"])
    assert any(t.startswith("rate_limited ") for t in titles["rate_limited"])
    assert not any(t.startswith("idle ") for t in titles["idle"])


def test_a_condition_the_source_cannot_judge_says_so_in_its_lane() -> None:
    samples = [Sample(t=float(t), depth=t % 3) for t in range(90)]
    section = Section.from_trace(Trace(TraceHeader("sidecar", 1.0), samples))
    titles = _lane_titles(render_html([section]))
    assert any(t.startswith("not judged: ") for t in titles["idle"])


def test_charts_shade_the_warm_up_only(poll_bug: Section) -> None:
    for chart in _svgs(render_html([poll_bug]))[1:]:
        titles = {
            el.findtext("{http://www.w3.org/2000/svg}title")
            for el in chart.iter()
            if el.get("class") == "band"
        }
        assert titles == {"warming_up"}


def test_a_change_lists_every_condition_on_and_those_that_cleared(demo_sections: list[Section]) -> None:
    naive = demo_sections[0]
    listed = changes(naive)
    rows = re.findall(r'<tr class="change">.*?</tr>', render_html([naive]), re.S)
    together = next(i for i, c in enumerate(listed) if set(c.conditions) == {"rate_limited", "boom_bust"})
    assert listed[together].state == "rate_limited"  # the state names only the most severe...
    assert "rate_limited<br>" in rows[together] and "boom_bust</td>" in rows[together]  # ...the row both
    after = listed[together + 1]
    assert after.cleared, "the next change ended one of the two"
    assert f"cleared: {', '.join(after.cleared)}" in rows[together + 1]


def test_each_change_of_state_is_listed_with_its_reason_and_fix(poll_bug: Section) -> None:
    page = render_html([poll_bug])
    states = [c.state for c in changes(poll_bug)]
    assert states == ["warming_up", "healthy", "boom_bust", "healthy"]
    assert page.count('<tr class="change">') == 4
    boom = next(c for c in changes(poll_bug) if c.state == "boom_bust")
    condition, reason, fix = boom.reasons[0]
    assert condition == "boom_bust" and "idle" in reason
    assert reason in page and f"fix: {fix}" in page


def _y_ticks(chart: ET.Element) -> list[float]:
    return [
        float(str(el.text).replace(",", ""))
        for el in chart.iter()
        if el.get("class") == "tick" and el.get("text-anchor") == "end"
    ]


def test_a_depth_far_below_capacity_is_scaled_to_the_data_and_the_capacity_named(
    demo_sections: list[Section],
) -> None:
    reference = demo_sections[1]
    deepest = max(s.depth for s in reference.samples)
    assert reference.header.capacity == 1000 and deepest < 100
    depth = _svgs(render_html([reference]))[1]
    ticks = _y_ticks(depth)
    assert deepest <= ticks[-1] < 2 * deepest + 10
    notes = [el.text for el in depth.iter() if el.get("class") == "tick note"]
    assert notes == ["capacity 1,000 (off the scale)"]
    assert len([el for el in depth.iter() if el.tag.endswith("polyline")]) == 1  # depth only


def test_tick_labels_are_round_steps_from_zero(demo_sections: list[Section], poll_bug: Section) -> None:
    """0, 10, 20, 30 - never 6.25 or 18.8; whole counts (items, workers) in whole steps."""
    for section in [*demo_sections, poll_bug]:
        for chart in _svgs(render_html([section]))[1:]:
            ticks = _y_ticks(chart)
            step = ticks[1] - ticks[0]
            assert ticks[0] == 0 and all(b - a == pytest.approx(step) for a, b in itertools.pairwise(ticks))
            mantissa = step / 10 ** math.floor(math.log10(step))
            assert round(mantissa, 6) in (1, 2, 5), (chart.get("aria-label"), ticks)
            if chart.get("aria-label") in ("Depth", "Workers"):
                assert step >= 1


def test_the_depth_chart_draws_capacity_for_a_bounded_queue() -> None:
    section = Section.from_trace(read_trace(TRACES / "overflow-bounded.jsonl"))
    depth = _svgs(render_html([section]))[1]
    legend = [
        el.text for el in depth.iter() if el.get("class") == "tick" and el.text in ("depth", "capacity")
    ]
    assert legend == ["depth", "capacity"]


def test_unknown_fields_leave_a_chart_empty_with_a_note() -> None:
    samples = [Sample(t=float(t), depth=t % 3) for t in range(90)]
    section = Section.from_trace(Trace(TraceHeader("sidecar", 1.0), samples))
    workers = _svgs(render_html([section]))[3]
    notes = [el.text for el in workers.iter() if el.text == "unknown to the source"]
    assert notes and not [el for el in workers.iter() if el.tag.endswith("polyline")]


def test_names_are_escaped() -> None:
    samples = [Sample(t=float(t), depth=0, workers=1, busy=0) for t in range(3)]
    page = render_html([Section.from_trace(Trace(TraceHeader("<script>x</script>", 1.0), samples))], "a & b")
    assert "<script>x" not in page and "&lt;script&gt;x" in page and "a &amp; b" in page


def test_several_queues_make_one_page_with_a_part_each(poll_bug: Section) -> None:
    idle = Section.from_trace(read_trace(TRACES / "idle-blocking.jsonl"))
    page = render_html([poll_bug, idle], "demo")
    assert re.findall(r"<h2>queue (\S+)</h2>", page) == ["webhook-dispatch", "video-transcode"]
    assert len(_svgs(page)) == 10


def test_samples_and_verdicts_must_match() -> None:
    samples = [Sample(t=0.0, depth=0)]
    with pytest.raises(ValueError, match="1 samples but 0 verdicts"):
        Section(TraceHeader("q", 1.0), samples, [])


@pytest.mark.slow
def test_png_is_an_image(poll_bug: Section, tmp_path: Path) -> None:
    out = tmp_path / "r.png"
    write_png(out, [poll_bug])
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 800 and height >= 600


def test_png_without_matplotlib_names_the_extra(
    poll_bug: Section, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ReportError, match=r"pip install 'qhealth\[report\]'"):
        write_png(tmp_path / "r.png", [poll_bug])


def test_importing_the_report_module_needs_no_matplotlib() -> None:
    code = "import sys, qhealth.report; assert 'matplotlib' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- the command ---------------------------------------------------------------------


def test_the_command_writes_html_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    html, png = tmp_path / "r.html", tmp_path / "r.png"
    assert main(["report", str(POLL_BUG), "-o", str(html), "--png", str(png)]) == 0
    assert html.read_text().startswith("<!DOCTYPE html>") and png.read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.splitlines() == [f"wrote {html}", f"wrote {png}"]


def test_the_command_passes_classifier_settings(tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    assert main(["report", str(POLL_BUG), "-o", str(html)]) == 0
    assert "boom_bust</td>" in html.read_text()
    # A window longer than the trace: nothing is ever judged.
    assert main(["report", str(POLL_BUG), "-o", str(html), "--set", "window_s=100000"]) == 0
    assert "boom_bust</td>" not in html.read_text()


def test_the_command_needs_an_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(POLL_BUG)]) == 2
    assert "-o report.html and/or --png report.png" in capsys.readouterr().err


def test_the_command_reports_a_bad_trace_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"format":"qhealth-trace","version":1,"queue":"q","interval_s":1}\n{"t":0}\n')
    assert main(["report", str(trace), "-o", str(tmp_path / "r.html")]) == 2
    assert 't.jsonl:2: missing key "depth"' in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
