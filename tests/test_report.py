"""``qhealth report``: a trace's story as HTML with inline SVG, and as PNG."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qhealth import Sample, Trace, TraceHeader, read_trace
from qhealth.cli import main
from qhealth.report import ReportError, Section, bands, changes, render_html, write_png

from .conftest import TRACES

POLL_BUG = TRACES / "transition-poll-bug.jsonl"


@pytest.fixture(scope="module")
def poll_bug() -> Section:
    return Section.from_trace(read_trace(POLL_BUG))


def _svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(svg) for svg in re.findall(r"<svg .*?</svg>", page, flags=re.DOTALL)]


def test_the_page_has_a_state_strip_and_four_charts_of_well_formed_svg(poll_bug: Section) -> None:
    svgs = _svgs(render_html([poll_bug]))
    labels = [svg.get("aria-label") for svg in svgs]
    assert labels == ["state over time", "Depth", "Throughput", "Workers", "Downstream calls"]


def test_the_boom_bust_band_covers_the_labeled_segment(poll_bug: Section) -> None:
    labels = json.loads(POLL_BUG.with_name("transition-poll-bug.labels.json").read_text())
    segment = next(s for s in labels["segments"] if s["conditions"] == ["boom_bust"])
    boom = [b for b in bands(poll_bug) if b.state == "boom_bust"]
    assert len(boom) == 1
    assert boom[0].t0 <= segment["t0"] and boom[0].t1 >= segment["t1"]


def test_bands_are_drawn_behind_every_chart(poll_bug: Section) -> None:
    charts = _svgs(render_html([poll_bug]))[1:]
    for chart in charts:
        titles = [
            el.findtext("{http://www.w3.org/2000/svg}title")
            for el in chart.iter()
            if el.get("class") == "band"
        ]
        assert "boom_bust" in titles and "warming_up" in titles


def test_each_change_of_state_is_listed_with_its_reason_and_fix(poll_bug: Section) -> None:
    page = render_html([poll_bug])
    states = [c.state for c in changes(poll_bug)]
    assert states == ["warming_up", "healthy", "boom_bust", "healthy"]
    assert page.count('<tr class="change">') == 4
    boom = next(c for c in changes(poll_bug) if c.state == "boom_bust")
    condition, reason, fix = boom.reasons[0]
    assert condition == "boom_bust" and "idle" in reason
    assert reason in page and f"fix: {fix}" in page


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
    assert main(["report", str(POLL_BUG), "-o", str(html), "--set", "boom_bust_idle_capacity_on=1"]) == 0
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
