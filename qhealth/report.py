"""A report for people without Grafana: a trace's story as HTML (and PNG).

For each queue: one lane per condition (as the status page's strips: two
conditions on at once show in two lanes, where a single state would show only
the more severe), then depth, throughput, busy and idle workers, and 429s over
the same time axis, each scaled to its own data with round ticks (the depth
shows the capacity once the queue comes near it), and below, each change with
every condition on, its reasons and fix, and what cleared. The HTML
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
from dataclasses import dataclass, field
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
    whole: bool = False
    """Counts of whole things (items, workers): ticks at whole numbers only."""
    note: str = ""
    """A line of the legend without a line drawn (a capacity far off the scale)."""


@dataclass(frozen=True, slots=True)
class Band:
    t0: float
    t1: float
    state: str


@dataclass(frozen=True, slots=True)
class Run:
    """A stretch of one condition's lane: ``on``, ``warming_up`` (nothing judged
    yet) or ``not_judged`` (a field the source cannot know), with why."""

    t0: float
    t1: float
    kind: str
    why: str = ""


#: The depth chart draws the capacity (and scales to it) once the deepest
#: sample reaches this share of it; below, the line would flatten the data.
NEAR_CAPACITY = 0.5
#: Colours of a lane's stretches that are not the condition itself.
NOT_JUDGED_COLOR = "#e6e6e6"


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
    note = ""
    if capacity is not None:
        if max(x.depth for x in s) >= NEAR_CAPACITY * capacity:
            depth.append(Series("capacity", "#e02f44", [(x.t, float(capacity)) for x in s], dashed=True))
        else:
            note = f"capacity {capacity:,} (off the scale)"

    def idle(x: Sample) -> float | None:
        return None if x.workers is None or x.busy is None else float(x.workers - x.busy)

    return [
        Chart("Depth", "items", depth, whole=True, note=note),
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
            whole=True,
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


def _ends(section: Section) -> list[tuple[float, float]]:
    """Each sample's stretch of time: until the next sample (the last: one interval)."""
    samples, interval = section.samples, section.header.interval_s
    return [
        (x.t, samples[i + 1].t if i + 1 < len(samples) else x.t + interval) for i, x in enumerate(samples)
    ]


def bands(section: Section) -> list[Band]:
    """Runs of one state; each run lasts until the next sample's state differs."""
    out: list[Band] = []
    for (t0, t1), health in zip(_ends(section), section.healths, strict=True):
        if out and out[-1].state == health.state and math.isclose(out[-1].t1, t0):
            out[-1] = Band(out[-1].t0, t1, health.state)
        else:
            out.append(Band(t0, t1, health.state))
    return out


def lanes(section: Section) -> dict[str, list[Run]]:
    """One lane per condition, most severe first, as the status page's strips:
    when it was on (whatever else was on), when nothing was judged yet, and when
    it could not be judged. Several conditions on at once each show in their own lane."""
    out: dict[str, list[Run]] = {}
    for condition in SEVERITY:
        runs: list[Run] = []
        for (t0, t1), health in zip(_ends(section), section.healths, strict=True):
            if health.state == WARMING_UP:
                run = Run(t0, t1, WARMING_UP)
            elif condition in health.conditions:
                run = Run(t0, t1, "on")
            elif condition in health.not_judged:
                run = Run(t0, t1, "not_judged", health.not_judged[condition])
            else:
                continue
            last = runs[-1] if runs else None
            if last and (last.kind, last.why) == (run.kind, run.why) and math.isclose(last.t1, t0):
                runs[-1] = Run(last.t0, t1, run.kind, run.why)
            else:
                runs.append(run)
        out[str(condition)] = runs
    return out


@dataclass(frozen=True, slots=True)
class Change:
    """A change of state, with the reasons of the conditions then active."""

    t: float
    state: str
    reasons: list[tuple[str, str, str]]
    """(condition, reason, fix) for each active condition."""
    cleared: list[str] = field(default_factory=list)
    """Conditions that were on at the previous sample and are off now."""

    @property
    def conditions(self) -> list[str]:
        return [condition for condition, _, _ in self.reasons]


def changes(section: Section) -> list[Change]:
    out: list[Change] = []
    previous: Health | None = None
    for health in section.healths:
        if previous is None or health.conditions != previous.conditions or health.state != previous.state:
            reasons = [(str(f.condition), f.reason, f.hint) for f in health.findings]
            gone = previous.conditions - health.conditions if previous is not None else frozenset()
            cleared = [str(c) for c in SEVERITY if c in gone]
            out.append(Change(health.t, health.state, reasons, cleared))
        previous = health
    return out


def time_in_states(section: Section) -> dict[str, float]:
    """Share of the time in each state (the most severe condition), largest first."""
    shares: dict[str, float] = {}
    for band in bands(section):
        shares[band.state] = shares.get(band.state, 0.0) + band.t1 - band.t0
    total = sum(shares.values()) or 1.0
    return {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}


def time_in_conditions(section: Section) -> dict[str, float]:
    """Share of the time warming up, healthy, and with each condition on
    (conditions overlap: their shares need not add up), in that order."""
    seconds: dict[str, float] = {WARMING_UP: 0.0, HEALTHY: 0.0}
    for (t0, t1), health in zip(_ends(section), section.healths, strict=True):
        if health.state in (WARMING_UP, HEALTHY):
            seconds[health.state] += t1 - t0
        for condition in health.conditions:
            seconds[str(condition)] = seconds.get(str(condition), 0.0) + t1 - t0
    total = sum(t1 - t0 for t0, t1 in _ends(section)) or 1.0
    ordered = [WARMING_UP, HEALTHY, *(str(c) for c in SEVERITY)]
    return {k: seconds[k] / total for k in ordered if k in seconds}


# -- SVG -------------------------------------------------------------------------------

_W, _H = 960, 170
_LEFT, _RIGHT, _TOP, _BOTTOM = 92, 180, 24, 26
_LANE, _LANE_GAP = 13, 3


def _nice_step(raw: float, whole: bool = False) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``raw`` (at least 1 for whole counts)."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    return max(step, 1.0) if whole else step


def _scale(top_value: float, whole: bool) -> tuple[float, float]:
    """(top of the axis, tick step): about four round steps from 0 over the data."""
    step = _nice_step(top_value / 4, whole)
    top = step * max(1, math.ceil(top_value / step - 1e-9))
    return top, step


def _fmt(value: float) -> str:
    if value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _x_ticks(t0: float, t1: float) -> list[float]:
    step = _nice_step((t1 - t0) / 6)
    return [i * step for i in range(math.ceil(t0 / step - 1e-9), math.floor(t1 / step + 1e-9) + 1)]


def _svg_chart(chart: Chart, band_list: Sequence[Band], t0: float, t1: float) -> str:
    span = max(t1 - t0, 1e-9)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    values = [v for s in chart.series for _, v in s.points if v is not None]
    top, step = _scale(max(values, default=0.0), chart.whole)

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
    # Nothing is judged while the window fills: shade it. The conditions have lanes of their own above.
    for band in band_list:
        if band.state == WARMING_UP:
            parts.append(
                f'<rect class="band" x="{x(band.t0):.1f}" y="{_TOP}" '
                f'width="{max(x(band.t1) - x(band.t0), 0.5):.1f}" height="{plot_h}" '
                f'fill="{STATE_COLORS[WARMING_UP]}" fill-opacity="0.18"><title>{WARMING_UP}</title></rect>'
            )
    for i in range(round(top / step) + 1):
        value = i * step
        parts.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" class="grid"/>'
            f'<text x="{_LEFT - 6}" y="{y(value) + 4:.1f}" class="tick" text-anchor="end">'
            f"{_fmt(value)}</text>"
        )
    for t in _x_ticks(t0, t1):
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
    if chart.note:
        ly = _TOP + 14 * len(chart.series) + 6
        parts.append(
            f'<text x="{_W - _RIGHT + 10}" y="{ly + 4}" class="tick note">{html.escape(chart.note)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _svg_lanes(lane_runs: dict[str, list[Run]], t0: float, t1: float) -> str:
    """One lane per condition, aligned with the charts' time axis."""
    span = max(t1 - t0, 1e-9)
    plot_w = _W - _LEFT - _RIGHT
    height = 6 + len(lane_runs) * (_LANE + _LANE_GAP)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart lanes" width="{_W}" height="{height}" '
        f'viewBox="0 0 {_W} {height}" role="img" aria-label="conditions over time">',
    ]
    for n, (condition, runs) in enumerate(lane_runs.items()):
        top = 3 + n * (_LANE + _LANE_GAP)
        on = sum(r.t1 - r.t0 for r in runs if r.kind == "on")
        parts.append(
            f'<g class="lane" data-condition="{html.escape(condition)}">'
            f'<text x="{_LEFT - 6}" y="{top + _LANE - 3}" class="tick" text-anchor="end">'
            f"{html.escape(condition)}</text>"
            f'<rect x="{_LEFT}" y="{top}" width="{plot_w}" height="{_LANE}" fill="#f6f6f6"/>'
        )
        for run in runs:
            x0 = _LEFT + (run.t0 - t0) / span * plot_w
            x1 = _LEFT + (run.t1 - t0) / span * plot_w
            if run.kind == "on":
                fill, label = STATE_COLORS.get(condition, "#999"), condition
            elif run.kind == WARMING_UP:
                fill, label = STATE_COLORS[WARMING_UP], WARMING_UP
            else:
                fill, label = NOT_JUDGED_COLOR, f"not judged: {run.why}"
            parts.append(
                f'<rect class="run {run.kind}" x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 0.5):.1f}" '
                f'height="{_LANE}" fill="{fill}"><title>{html.escape(label)} '
                f"{_fmt(run.t0)}-{_fmt(run.t1)} s</title></rect>"
            )
            if run.kind == "not_judged" and x1 - x0 > 90:
                parts.append(
                    f'<text x="{(x0 + x1) / 2:.1f}" y="{top + _LANE - 3}" class="tick" '
                    f'text-anchor="middle">not judged</text>'
                )
        share = on / span
        parts.append(
            f'<text x="{_W - _RIGHT + 10}" y="{top + _LANE - 3}" class="tick">'
            f"{share:.0%} of the time</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1000px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 36px; }
.meta { color: #555; } .chart { display: block; margin: 6px 0; }
.title { font-size: 13px; font-weight: 600; fill: #222; } .tick { font-size: 11px; fill: #555; }
.note { font-style: italic; } .grid { stroke: #e4e4e4; stroke-width: 1; }
.legend span { display: inline-block; margin-right: 14px; white-space: nowrap; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }
table { border-collapse: collapse; margin-top: 8px; } td, th { padding: 4px 10px; text-align: left;
vertical-align: top; border-bottom: 1px solid #eee; } .fix { color: #37872d; }
th, td.t, td.state { white-space: nowrap; } td.t { text-align: right; } .cleared { color: #555; }
"""


def render_html(sections: Sequence[Section], title: str = "qhealth report") -> str:
    """The whole report: one part per queue."""
    if not sections:
        raise ReportError("nothing to report: no queues")
    swatches = [(s, STATE_COLORS[s]) for s in [*(str(c) for c in SEVERITY), WARMING_UP, HEALTHY]]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="legend">'
        + "".join(
            f'<span><i style="background:{color}"></i>{label}</span>'
            for label, color in [*swatches, ("not judged", NOT_JUDGED_COLOR)]
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
    shares = ", ".join(f"{state} {share:.0%}" for state, share in time_in_conditions(section).items())
    parts = [
        f"<h2>queue {html.escape(header.queue)}</h2>",
        f'<p class="meta">sampled every {header.interval_s:g} s, {capacity}, {len(section.samples)} samples '
        f"over {t1 - t0:.0f} s; share of the time: {html.escape(shares)}</p>",
        _svg_lanes(lanes(section), t0, t1),
        *(_svg_chart(chart, band_list, t0, t1) for chart in charts(section)),
        "<table><tr><th>t (s)</th><th>conditions</th><th>why, and what to do</th></tr>",
    ]
    for change in changes(section):
        why = "".join(
            f"<div><b>{html.escape(c)}</b>: {html.escape(reason)}<br>"
            f'<span class="fix">fix: {html.escape(fix)}</span></div>'
            for c, reason, fix in change.reasons
        )
        if change.cleared:
            why += f'<div class="cleared">cleared: {html.escape(", ".join(change.cleared))}</div>'
        # Every condition on, not only the most severe: two at once are two lines.
        shown = change.conditions or [change.state]
        state = "<br>".join(
            f'<i style="color:{STATE_COLORS.get(name, "#999")}">&#9632;</i> {html.escape(name)}'
            for name in shown
        )
        parts.append(
            f'<tr class="change"><td class="t">{change.t:,.1f}</td>'
            f'<td class="state">{state}</td><td>{why or "-"}</td></tr>'
        )
    parts.append("</table>")
    return "\n".join(parts)


def write_html(
    path: str | os.PathLike[str], sections: Sequence[Section], title: str = "qhealth report"
) -> None:
    Path(path).write_text(render_html(sections, title), encoding="utf-8")


# -- PNG -------------------------------------------------------------------------------


def check_png() -> None:
    """Raise :class:`ReportError` now if a PNG cannot be drawn (matplotlib is
    missing), before anything else is written."""
    _matplotlib()


def _matplotlib() -> object:
    try:
        import matplotlib
    except ImportError:
        raise ReportError("the PNG report needs matplotlib: pip install 'qhealth[report]'") from None
    matplotlib.use("Agg")  # files only, never a window
    return matplotlib


def write_png(path: str | os.PathLike[str], sections: Sequence[Section], dpi: int = 100) -> None:
    """The same lanes and charts as the HTML, one column per queue, as a PNG image."""
    if not sections:
        raise ReportError("nothing to report: no queues")
    _matplotlib()
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    rows = 1 + len(charts(sections[0]))
    fig, axes = plt.subplots(
        rows,
        len(sections),
        figsize=(11 * len(sections), 2.1 * rows),
        sharex="col",
        squeeze=False,
        gridspec_kw={"height_ratios": [0.6] + [1] * (rows - 1)},
    )
    try:
        for col, section in enumerate(sections):
            band_list = bands(section)
            lanes_ax = axes[0][col]
            lane_runs = lanes(section)
            for n, (condition, runs) in enumerate(lane_runs.items()):
                y = len(lane_runs) - 1 - n  # most severe on top
                for run in runs:
                    color = {
                        "on": STATE_COLORS.get(condition, "#999"),
                        WARMING_UP: STATE_COLORS[WARMING_UP],
                    }.get(run.kind, NOT_JUDGED_COLOR)
                    lanes_ax.broken_barh([(run.t0, run.t1 - run.t0)], (y + 0.1, 0.8), color=color, lw=0)
            lanes_ax.set_yticks([len(lane_runs) - 1 - n + 0.5 for n in range(len(lane_runs))])
            lanes_ax.set_yticklabels(list(lane_runs), fontsize=8)
            lanes_ax.set_ylim(0, len(lane_runs))
            lanes_ax.tick_params(axis="y", length=0)
            lanes_ax.set_title(f"queue {section.header.queue}", loc="left", fontsize=11)
            for row, chart in enumerate(charts(section), start=1):
                ax = axes[row][col]
                for band in band_list:
                    if band.state == WARMING_UP:
                        ax.axvspan(band.t0, band.t1, color=STATE_COLORS[WARMING_UP], alpha=0.18, lw=0)
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
                if chart.note:
                    ax.plot([], [], " ", label=chart.note)  # a legend line without a line
                ax.set_ylabel(chart.unit, fontsize=9)
                ax.set_title(chart.title, loc="left", fontsize=10)
                ax.set_ylim(bottom=0)
                ax.yaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 5, 10], integer=chart.whole))
                ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
            axes[-1][col].set_xlabel("t (s)")
        labels: list[str] = [*(str(c) for c in SEVERITY), WARMING_UP, HEALTHY]
        handles = [Patch(color=STATE_COLORS[s], label=s) for s in labels]
        handles.append(Patch(color=NOT_JUDGED_COLOR, label="not judged"))
        fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        fig.savefig(os.fspath(path), dpi=dpi, format="png")
    finally:
        plt.close(fig)
