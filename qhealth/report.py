"""A report for people without Grafana: a trace's story as HTML (and PNG).

For each queue: depth (and capacity), throughput, busy and idle workers, and
429s over time, with the classifier's conditions drawn as bands behind every
chart and, below, each change of state with the reasons and the fix. The HTML
is one self-contained file with inline SVG (standard library only); the PNG
needs matplotlib (``pip install 'qhealth[report]'``).

``qhealth report TRACE`` uses it for one trace; a program with several queues
(``qhealth demo`` with its two pools) passes one :class:`Section` per queue::

    write_html("report.html", [Section.from_trace(read_trace("run.jsonl"))])
"""

from __future__ import annotations

import html
import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._classifier import HEALTHY, SEVERITY, WARMING_UP, Health, classify
from ._colors import STATE_COLORS
from ._config import ClassifierConfig
from ._sample import Sample, TraceHeader
from ._trace import Trace
from ._window import counter_increase


class ReportError(RuntimeError):
    """The report cannot be made (a missing optional dependency, nothing to draw)."""


@dataclass(frozen=True, slots=True)
class Section:
    """One queue: its samples and the classifier's verdict on each."""

    header: TraceHeader
    samples: Sequence[Sample]
    healths: Sequence[Health]

    def __post_init__(self) -> None:
        if len(self.samples) != len(self.healths):
            raise ValueError(f"{len(self.samples)} samples but {len(self.healths)} verdicts")
        if not self.samples:
            raise ReportError(f"queue {self.header.queue}: the trace has no samples")

    @classmethod
    def from_trace(cls, trace: Trace, config: ClassifierConfig | None = None) -> Section:
        """Classify a trace with the core classifier and keep the verdicts."""
        healths = classify(trace.samples, trace.header.interval_s, config, trace.header.capacity)
        return cls(trace.header, trace.samples, healths)


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    color: str
    points: list[tuple[float, float | None]]
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    unit: str
    series: list[Series]


@dataclass(frozen=True, slots=True)
class Band:
    t0: float
    t1: float
    state: str


# -- what is drawn ------------------------------------------------------------------


def _per_second(samples: Sequence[Sample], field: str) -> list[tuple[float, float | None]]:
    """Per-interval rate of a cumulative counter, at each interval's end."""
    points: list[tuple[float, float | None]] = []
    for a, b in itertools.pairwise(samples):
        increase = counter_increase(getattr(a, field), getattr(b, field))
        points.append((b.t, None if increase is None else increase / (b.t - a.t)))
    return points


def charts(section: Section) -> list[Chart]:
    """The four charts of a queue."""
    s = section.samples
    capacity = section.header.capacity
    depth = [Series("depth", "#1f60c4", [(x.t, float(x.depth)) for x in s])]
    if capacity is not None:
        depth.append(Series("capacity", "#e02f44", [(x.t, float(capacity)) for x in s], dashed=True))

    def idle(x: Sample) -> float | None:
        return None if x.workers is None or x.busy is None else float(x.workers - x.busy)

    return [
        Chart("Depth", "items", depth),
        Chart(
            "Throughput",
            "items/s",
            [
                Series("arriving", "#8ab8ff", _per_second(s, "enqueued_total")),
                Series("processed", "#37872d", _per_second(s, "processed_total")),
                Series("failed", "#e02f44", _per_second(s, "failed_total")),
            ],
        ),
        Chart(
            "Workers",
            "workers",
            [
                Series("busy", "#fa6400", [(x.t, None if x.busy is None else float(x.busy)) for x in s]),
                Series("idle", "#3274d9", [(x.t, idle(x)) for x in s]),
            ],
        ),
        Chart(
            "Downstream calls",
            "calls/s",
            [
                Series("attempts", "#8ab8ff", _per_second(s, "attempts_total")),
                Series("429 (rate limited)", "#8f3bb8", _per_second(s, "rate_limited_total")),
            ],
        ),
    ]


def bands(section: Section) -> list[Band]:
    """Runs of one state; each run lasts until the next sample's state differs."""
    out: list[Band] = []
    samples, healths = section.samples, section.healths
    interval = section.header.interval_s
    for i, health in enumerate(healths):
        end = samples[i + 1].t if i + 1 < len(samples) else samples[i].t + interval
        if out and out[-1].state == health.state and math.isclose(out[-1].t1, samples[i].t):
            out[-1] = Band(out[-1].t0, end, health.state)
        else:
            out.append(Band(samples[i].t, end, health.state))
    return out


@dataclass(frozen=True, slots=True)
class Change:
    """A change of state, with the reasons of the conditions then active."""

    t: float
    state: str
    reasons: list[tuple[str, str, str]]
    """(condition, reason, fix) for each active condition."""


def changes(section: Section) -> list[Change]:
    out: list[Change] = []
    previous: Health | None = None
    for health in section.healths:
        if previous is None or health.conditions != previous.conditions or health.state != previous.state:
            reasons = [(str(f.condition), f.reason, f.hint) for f in health.findings]
            out.append(Change(health.t, health.state, reasons))
        previous = health
    return out


def time_in_states(section: Section) -> dict[str, float]:
    shares: dict[str, float] = {}
    for band in bands(section):
        shares[band.state] = shares.get(band.state, 0.0) + band.t1 - band.t0
    total = sum(shares.values()) or 1.0
    return {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}


# -- SVG -------------------------------------------------------------------------------

_W, _H = 960, 170
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 150, 24, 26


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.3g}"


def _svg_chart(chart: Chart, band_list: Sequence[Band], t0: float, t1: float) -> str:
    span = max(t1 - t0, 1e-9)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    values = [v for s in chart.series for _, v in s.points if v is not None]
    top = _nice_max(max(values, default=0.0))

    def x(t: float) -> float:
        return _LEFT + (t - t0) / span * plot_w

    def y(v: float) -> float:
        return _TOP + plot_h - v / top * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" role="img" aria-label="{html.escape(chart.title)}">',
        f'<text x="{_LEFT}" y="15" class="title">'
        f"{html.escape(chart.title)} ({html.escape(chart.unit)})</text>",
    ]
    for band in band_list:
        if band.state == HEALTHY:
            continue
        parts.append(
            f'<rect class="band" x="{x(band.t0):.1f}" y="{_TOP}" '
            f'width="{max(x(band.t1) - x(band.t0), 0.5):.1f}" '
            f'height="{plot_h}" fill="{STATE_COLORS.get(band.state, "#999")}" fill-opacity="0.18">'
            f"<title>{html.escape(band.state)}</title></rect>"
        )
    for i in range(5):
        value = top * i / 4
        parts.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" class="grid"/>'
            f'<text x="{_LEFT - 6}" y="{y(value) + 4:.1f}" class="tick" text-anchor="end">'
            f"{_fmt(value)}</text>"
        )
    step = _nice_max(span / 6)
    for i in range(math.ceil(t0 / step), math.floor(t1 / step) + 1):
        t = i * step
        parts.append(
            f'<text x="{x(t):.1f}" y="{_H - 8}" class="tick" text-anchor="middle">{_fmt(t)} s</text>'
        )
    if not values:
        parts.append(
            f'<text x="{_LEFT + 10}" y="{_TOP + plot_h / 2}" class="tick">unknown to the source</text>'
        )
    for n, series in enumerate(chart.series):
        runs: list[list[str]] = [[]]
        for t, v in series.points:
            if v is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(t):.1f},{y(v):.1f}")
        dash = ' stroke-dasharray="6 4"' if series.dashed else ""
        for run in runs:
            if len(run) == 1:
                run.append(run[0])
            if run:
                parts.append(
                    f'<polyline fill="none" stroke="{series.color}" stroke-width="1.5"{dash} '
                    f'points="{" ".join(run)}"/>'
                )
        ly = _TOP + 14 * n + 6
        parts.append(
            f'<line x1="{_W - _RIGHT + 10}" x2="{_W - _RIGHT + 28}" y1="{ly}" y2="{ly}" '
            f'stroke="{series.color}" stroke-width="2"{dash}/>'
            f'<text x="{_W - _RIGHT + 33}" y="{ly + 4}" class="tick">{html.escape(series.label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _svg_states(band_list: Sequence[Band], t0: float, t1: float) -> str:
    span = max(t1 - t0, 1e-9)
    plot_w, height = _W - _LEFT - _RIGHT, 38
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{_W}" height="{height}" '
        f'viewBox="0 0 {_W} {height}" role="img" aria-label="state over time">',
        f'<text x="{_LEFT - 6}" y="22" class="tick" text-anchor="end">state</text>',
    ]
    for band in band_list:
        x0 = _LEFT + (band.t0 - t0) / span * plot_w
        x1 = _LEFT + (band.t1 - t0) / span * plot_w
        parts.append(
            f'<rect class="state" x="{x0:.1f}" y="8" width="{max(x1 - x0, 0.5):.1f}" height="22" '
            f'fill="{STATE_COLORS.get(band.state, "#999")}"><title>{html.escape(band.state)} '
            f"{_fmt(band.t0)}-{_fmt(band.t1)} s</title></rect>"
        )
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1000px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 36px; }
.meta { color: #555; } .chart { display: block; margin: 6px 0; }
.title { font-size: 13px; font-weight: 600; fill: #222; } .tick { font-size: 11px; fill: #555; }
.grid { stroke: #e4e4e4; stroke-width: 1; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }
table { border-collapse: collapse; margin-top: 8px; } td, th { padding: 4px 10px; text-align: left;
vertical-align: top; border-bottom: 1px solid #eee; } .fix { color: #37872d; }
"""


def render_html(sections: Sequence[Section], title: str = "qhealth report") -> str:
    """The whole report: one part per queue."""
    if not sections:
        raise ReportError("nothing to report: no queues")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="legend">'
        + "".join(
            f'<span><i style="background:{STATE_COLORS[s]}"></i>{s}</span>'
            for s in [*(str(c) for c in SEVERITY), WARMING_UP, HEALTHY]
        )
        + "</p>",
    ]
    for section in sections:
        out.append(_render_section(section))
    out.append("</body></html>\n")
    return "\n".join(out)


def _render_section(section: Section) -> str:
    header = section.header
    t0, t1 = section.samples[0].t, section.samples[-1].t + header.interval_s
    band_list = bands(section)
    capacity = f"capacity {header.capacity:,}" if header.capacity else "unbounded"
    shares = ", ".join(f"{state} {share:.0%}" for state, share in time_in_states(section).items())
    parts = [
        f"<h2>queue {html.escape(header.queue)}</h2>",
        f'<p class="meta">sampled every {header.interval_s:g} s, {capacity}, {len(section.samples)} samples '
        f"over {t1 - t0:.0f} s; time in each state: {html.escape(shares)}</p>",
        _svg_states(band_list, t0, t1),
        *(_svg_chart(chart, band_list, t0, t1) for chart in charts(section)),
        "<table><tr><th>t (s)</th><th>state</th><th>why, and what to do</th></tr>",
    ]
    for change in changes(section):
        why = "".join(
            f"<div><b>{html.escape(c)}</b>: {html.escape(reason)}<br>"
            f'<span class="fix">fix: {html.escape(fix)}</span></div>'
            for c, reason, fix in change.reasons
        )
        parts.append(
            f'<tr class="change"><td>{change.t:,.1f}</td>'
            f'<td><i style="color:{STATE_COLORS.get(change.state, "#999")}">&#9632;</i> '
            f"{html.escape(change.state)}</td><td>{why or '-'}</td></tr>"
        )
    parts.append("</table>")
    return "\n".join(parts)


def write_html(
    path: str | os.PathLike[str], sections: Sequence[Section], title: str = "qhealth report"
) -> None:
    Path(path).write_text(render_html(sections, title), encoding="utf-8")


# -- PNG -------------------------------------------------------------------------------


def _matplotlib() -> object:
    try:
        import matplotlib
    except ImportError:
        raise ReportError("the PNG report needs matplotlib: pip install 'qhealth[report]'") from None
    matplotlib.use("Agg")  # files only, never a window
    return matplotlib


def write_png(path: str | os.PathLike[str], sections: Sequence[Section], dpi: int = 100) -> None:
    """The same charts as the HTML, one column per queue, as a PNG image."""
    if not sections:
        raise ReportError("nothing to report: no queues")
    _matplotlib()
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = 1 + len(charts(sections[0]))
    fig, axes = plt.subplots(
        rows,
        len(sections),
        figsize=(11 * len(sections), 2.1 * rows),
        sharex="col",
        squeeze=False,
        gridspec_kw={"height_ratios": [0.35] + [1] * (rows - 1)},
    )
    try:
        for col, section in enumerate(sections):
            band_list = bands(section)
            states_ax = axes[0][col]
            for band in band_list:
                states_ax.axvspan(band.t0, band.t1, color=STATE_COLORS.get(band.state, "#999"), linewidth=0)
            states_ax.set_yticks([])
            states_ax.set_title(f"queue {section.header.queue}", loc="left", fontsize=11)
            for row, chart in enumerate(charts(section), start=1):
                ax = axes[row][col]
                for band in band_list:
                    if band.state != HEALTHY:
                        ax.axvspan(
                            band.t0, band.t1, color=STATE_COLORS.get(band.state, "#999"), alpha=0.18, lw=0
                        )
                for series in chart.series:
                    ts = [t for t, _ in series.points]
                    vs = [math.nan if v is None else v for _, v in series.points]
                    ax.plot(
                        ts,
                        vs,
                        color=series.color,
                        lw=1.2,
                        ls="--" if series.dashed else "-",
                        label=series.label,
                    )
                ax.set_ylabel(chart.unit, fontsize=9)
                ax.set_title(chart.title, loc="left", fontsize=10)
                ax.set_ylim(bottom=0)
                ax.legend(loc="upper right", fontsize=8, frameon=False)
            axes[-1][col].set_xlabel("t (s)")
        labels: list[str] = [*(str(c) for c in SEVERITY), WARMING_UP, HEALTHY]
        handles = [Patch(color=STATE_COLORS[s], label=s) for s in labels]
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        fig.savefig(os.fspath(path), dpi=dpi, format="png")
    finally:
        plt.close(fig)
