"""A status page for people who have no Grafana yet: ``GET /`` on the metrics server.

``qhealth serve``, ``qhealth watch --serve`` and ``qhealth demo --serve`` answer
``/`` with one small HTML page (a program mounts it on :func:`qhealth.prometheus.serve`
with ``routes={"/": StatusPage(monitor).route}``): every queue with its condition, the
reasons and fix hints behind it, and sparklines of depth, busy workers,
throughput and the condition over the last few minutes. It refreshes itself
every few seconds.

Why server-rendered and self-contained: the page must work on an air-gapped
host and behind any proxy, so it loads nothing (no CDN, no script, no font):
inline CSS, SVG drawn here, and a ``<meta http-equiv="refresh">``. Every queue
name, reason and hint is HTML-escaped: a queue name is data from outside.

History for the sparklines comes from being a listener of the source (a
:class:`~qhealth.Monitor` has ``add_listener``); for a source without
listeners (``qhealth serve``'s replay), call :meth:`StatusPage.poll` after
each update of the source instead. Memory is bounded:
:data:`HISTORY` ticks per queue, at most :data:`MAX_QUEUES` queues.
"""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._classifier import HEALTHY, SEVERITY, WARMING_UP
from ._colors import STATE_COLORS
from ._contract import SnapshotSource
from ._http import HttpServer, Request, Response
from ._monitor import QueueSnapshot, SourceListener

#: Ticks of history drawn per queue.
HISTORY = 180
#: Queues kept and shown; more are counted, not drawn (label cardinality stays bounded here too).
MAX_QUEUES = 200
#: Seconds between automatic reloads of the page.
DEFAULT_REFRESH_S = 2

#: One colour per state (the dashboards' and the report's), for badges and the
#: condition strip. A test finds these exact colours in a screenshot of the page.
COLORS: dict[str, str] = STATE_COLORS

_SEVERITY_RANK = {str(c): i for i, c in enumerate(SEVERITY)}


@dataclass(frozen=True, slots=True)
class _Point:
    """What a sparkline needs of one tick."""

    depth: int
    busy: int | None
    workers: int | None
    throughput: float | None
    state: str


class StatusPage(SourceListener):
    """Keeps a short history per queue and renders the page.

    Mount it with ``server.add_route("/", page.route)``; :meth:`close` stops
    listening to the source.
    """

    def __init__(
        self,
        source: SnapshotSource,
        *,
        refresh_s: int = DEFAULT_REFRESH_S,
        title: str = "qhealth",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(refresh_s, bool) or not isinstance(refresh_s, int) or refresh_s < 1:
            raise ValueError(f"refresh_s must be a whole number of seconds >= 1, got {refresh_s!r}")
        self._source = source
        self.refresh_s = refresh_s
        self.title = title
        self._clock = clock
        self._lock = threading.Lock()
        self._history: dict[str, deque[_Point]] = {}
        self._last: dict[str, QueueSnapshot] = {}
        self._listen_to(source)

    # -- listener --------------------------------------------------------------

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        queue = snapshot.queue
        with self._lock:
            history = self._history.get(queue)
            if history is None:
                if len(self._history) >= MAX_QUEUES:
                    return
                history = self._history[queue] = deque(maxlen=HISTORY)
            previous = self._last.get(queue)
            self._last[queue] = snapshot
            history.append(_point(previous, snapshot))

    def on_source_down(self, snapshot: QueueSnapshot) -> None:
        """Nothing to add to the history: the card shows the queue as stale
        (``render`` reads the source's snapshot, which says the source is down)."""

    def poll(self) -> None:
        """Take the source's latest snapshots into the history (for a source
        that has no listeners): each new sample once, an unchanged one not again."""
        for snapshot in self._source.snapshots().values():
            last = self._last.get(snapshot.queue)
            if last is None or last.sample.t != snapshot.sample.t:
                self.on_tick(snapshot)

    def on_unwatch(self, queue: str) -> None:
        with self._lock:
            self._history.pop(queue, None)
            self._last.pop(queue, None)

    # -- serving -----------------------------------------------------------------

    def route(self, request: Request) -> Response:
        """The ``/`` handler."""
        return Response(
            self.render().encode("utf-8"),
            content_type="text/html; charset=utf-8",
            headers=(("Cache-Control", "no-store"),),
        )

    def render(self) -> str:
        """The whole page, as HTML."""
        snapshots = dict(self._source.snapshots())
        with self._lock:
            histories = {q: list(h) for q, h in self._history.items()}
        ordered = sorted(snapshots.values(), key=_sort_key)
        shown, hidden = ordered[:MAX_QUEUES], len(ordered) - MAX_QUEUES
        now = self._clock()
        cards = "\n".join(_card(s, histories.get(s.queue, []), now) for s in shown)
        if not shown:
            cards = '<p class="empty">No queue sampled yet: the first tick comes within one interval.</p>'
        if hidden > 0:
            cards += f'\n<p class="more">{hidden:,} more queues not shown.</p>'
        counts = _state_counts(shown)
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._clock()))
        title = html.escape(self.title)
        return _PAGE.format(
            title=title,
            refresh=self.refresh_s,
            css=_CSS,
            summary=counts,
            updated=html.escape(updated),
            cards=cards,
            legend=_legend(),
        )


def mount(
    server: HttpServer, source: SnapshotSource, *, refresh_s: int = DEFAULT_REFRESH_S, title: str = "qhealth"
) -> StatusPage:
    """Serve the status page of ``source`` at ``/`` of ``server``."""
    page = StatusPage(source, refresh_s=refresh_s, title=title)
    server.add_route("/", page.route)
    return page


# -- pieces of the page -------------------------------------------------------------


def _point(previous: QueueSnapshot | None, snapshot: QueueSnapshot) -> _Point:
    sample = snapshot.sample
    throughput: float | None = None
    if previous is not None:
        before = previous.sample
        dt = sample.t - before.t
        if dt > 0 and sample.processed_total is not None and before.processed_total is not None:
            throughput = max(0, sample.processed_total - before.processed_total) / dt
    return _Point(sample.depth, sample.busy, sample.workers, throughput, snapshot.health.state)


def _sort_key(snapshot: QueueSnapshot) -> tuple[int, str]:
    # A queue whose source is down first: nothing else about it can be trusted.
    rank = -1 if not snapshot.source_up else _SEVERITY_RANK.get(snapshot.health.state, len(SEVERITY))
    return rank, snapshot.queue


def _color(state: str) -> str:
    return COLORS.get(state, COLORS[WARMING_UP])


def _badge(state: str) -> str:
    return f'<span class="badge" style="background:{_color(state)}">{html.escape(state)}</span>'


def _judged_badge(state: str, not_judged: int) -> str:
    """The state badge of a card. A queue with conditions not judged gets an
    outlined badge saying how many were judged: "healthy" in solid green would
    claim what was never checked."""
    if not not_judged:
        return _badge(state)
    judged = len(SEVERITY) - not_judged
    return (
        f'<span class="badge partial" style="border-color:{_color(state)};color:{_color(state)}">'
        f"{html.escape(state)}</span>"
        f'<span class="judged">{judged} of {len(SEVERITY)} conditions judged</span>'
    )


def _state_counts(snapshots: Sequence[QueueSnapshot]) -> str:
    counts: dict[str, int] = {}
    for s in snapshots:
        counts[s.health.state] = counts.get(s.health.state, 0) + 1
    if not counts:
        return "no queues"
    order = [*(str(c) for c in SEVERITY), HEALTHY, WARMING_UP]
    parts = [f"{counts[state]} {_badge(state)}" for state in order if state in counts]
    return " ".join(parts)


def _legend() -> str:
    order = [*(str(c) for c in SEVERITY), HEALTHY, WARMING_UP]
    return " ".join(
        f'<span class="key"><i style="background:{_color(s)}"></i>{html.escape(s)}</span>' for s in order
    )


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "?"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value * 100:.0f}%"


def _sparkline(values: Sequence[float | None], color: str, *, width: int = 220, height: int = 34) -> str:
    """A polyline of the known values (gaps where unknown), scaled from 0 to
    its own maximum, which is written beside it (the scale)."""
    known = [v for v in values if v is not None]
    if len(values) < 2 or not known:
        return (
            f'<svg class="spark" viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
            f'role="img" aria-label="no data"></svg><span class="scale">no data</span>'
        )
    top = max(known) or 1.0
    step = width / (len(values) - 1)
    runs: list[list[str]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            if runs[-1]:
                runs.append([])
            continue
        y = height - 2 - (v / top) * (height - 4)
        runs[-1].append(f"{i * step:.1f},{y:.1f}")
    lines = "".join(
        f'<polyline points="{" ".join(run)}" fill="none" stroke="{color}" stroke-width="1.5" '
        'vector-effect="non-scaling-stroke"/>'
        for run in runs
        if len(run) > 1
    )
    grid = (
        f'<line x1="0" y1="{height - 2}" x2="{width}" y2="{height - 2}" stroke="#ccd" stroke-width="1" '
        'vector-effect="non-scaling-stroke"/>'
        f'<line x1="0" y1="2" x2="{width}" y2="2" stroke="#e4e6eb" stroke-width="1" '
        'stroke-dasharray="3 3" vector-effect="non-scaling-stroke"/>'
    )
    return (
        f'<svg class="spark" viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
        f'role="img" aria-label="0 to {_num(top)}">{grid}{lines}</svg>'
        f'<span class="scale" title="the line spans 0 (bottom) to this (top)">0&ndash;{_num(top)}</span>'
    )


def _strip(states: Sequence[str], *, width: int = 220, height: int = 10) -> str:
    """The state at each tick, as coloured runs: when each condition came and went."""
    if not states:
        return ""
    cell = width / len(states)
    runs: list[tuple[int, int, str]] = []  # (first tick, ticks, state)
    for i, state in enumerate(states):
        if runs and runs[-1][2] == state:
            first, count, _ = runs[-1]
            runs[-1] = (first, count + 1, state)
        else:
            runs.append((i, 1, state))
    rects = "".join(
        f'<rect x="{first * cell:.2f}" y="0" width="{count * cell:.2f}" height="{height}" '
        f'fill="{_color(state)}"><title>{html.escape(state)}</title></rect>'
        for first, count, state in runs
    )
    return (
        f'<svg class="strip" viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
        f'shape-rendering="crispEdges" role="img" aria-label="state history">{rects}</svg>'
    )


STALE = "stale"
_STALE_COLOR = "#6b7280"


def _stale_note(snapshot: QueueSnapshot, now: float) -> str:
    if snapshot.sampled_at is None:
        return "<li><b>stale</b>: the source of this queue has failed at every read so far</li>"
    age = max(0.0, now - snapshot.sampled_at)
    return (
        f"<li><b>stale</b>: the last read of this queue's source failed; its last sample is "
        f"{_num(round(age))} s old, and nothing is judged until the source answers again</li>"
    )


def _card(snapshot: QueueSnapshot, history: Sequence[_Point], now: float | None = None) -> str:
    sample, health = snapshot.sample, snapshot.health
    name = html.escape(snapshot.queue)
    if not snapshot.source_up:
        stale_badge = f'<span class="badge" style="background:{_STALE_COLOR}">{STALE}</span>'
        stale = _stale_note(snapshot, time.time() if now is None else now)
        return (
            f'<section class="card" data-queue="{name}" data-state="{STALE}">'
            f"<h2>{name} {stale_badge}</h2>"
            f'<ul class="findings">{stale}</ul>'
            "</section>"
        )
    findings = "".join(
        f'<li><b style="color:{_color(str(f.condition))}">{html.escape(str(f.condition))}</b>: '
        f'{html.escape(f.reason)}<br><span class="fix">fix: {html.escape(f.hint)}</span></li>'
        for f in health.findings
    )
    unjudged = {str(c): why for c, why in health.not_judged.items()}
    if health.state == WARMING_UP:
        findings = "<li>collecting the first window of samples</li>"
    elif not findings and unjudged:
        judged = [str(c) for c in SEVERITY if str(c) not in unjudged]
        findings = f"<li>none of the conditions judged ({html.escape(', '.join(judged))}) is on</li>"
    elif not findings:
        findings = "<li>no condition: healthy</li>"
    not_judged = "".join(
        f"<li><b>{html.escape(c)}</b> not judged: {html.escape(why)}</li>" for c, why in unjudged.items()
    )
    if not_judged:
        not_judged = f'<ul class="notjudged">{not_judged}</ul>'
    busy = (
        f"{_num(sample.busy)}/{_num(sample.workers)}"
        if sample.workers is not None or sample.busy is not None
        else "?"
    )
    capacity = f"/{snapshot.capacity:,}" if snapshot.capacity else ""
    stats = (
        f"<span>depth <b>{sample.depth:,}{capacity}</b></span>"
        f"<span>busy <b>{busy}</b></span>"
        f"<span>processed <b>{_num(health.throughput)}/s</b></span>"
        f"<span>arriving <b>{_num(health.arrival_rate)}/s</b></span>"
        f"<span>429s <b>{_pct(health.rate_limited_ratio)}</b></span>"
        f"<span>idle <b>{_pct(health.idle_ratio)}</b></span>"
        f"<span>workers needed <b>{_num(health.workers_recommended)}</b></span>"
    )
    if history:
        span_s = len(history) * snapshot.interval_s
        sparks = (
            '<div class="sparks">'
            f'<div><span class="label">depth</span>{_sparkline([p.depth for p in history], "#555")}</div>'
            '<div><span class="label">busy</span>'
            f"{_sparkline([p.busy for p in history], '#3b82c4')}</div>"
            '<div><span class="label">items/s</span>'
            f"{_sparkline([p.throughput for p in history], '#2e9d4f')}</div>"
            f'<div><span class="label">state</span>{_strip([p.state for p in history])}</div>'
            f'<div class="span">last {_duration(span_s)}, oldest left, newest right</div>'
            "</div>"
        )
    else:
        sparks = ""
    return (
        f'<section class="card" data-queue="{name}" data-state="{html.escape(health.state)}" '
        f'data-not-judged="{len(unjudged)}">'
        f"<h2>{name} {_judged_badge(health.state, len(unjudged))}</h2>"
        f'<div class="stats">{stats}</div>'
        f'<ul class="findings">{findings}</ul>{not_judged}{sparks}'
        "</section>"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


_CSS = """
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{padding:12px 16px;background:#1d2330;color:#fff}
header h1{font-size:18px;margin:0 0 4px}
header .summary{font-size:13px;display:flex;flex-wrap:wrap;gap:4px 8px;align-items:center}
main{padding:12px;display:grid;grid-template-columns:repeat(auto-fill,minmax(min(520px,100%),1fr));gap:12px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 14px;min-width:0;
overflow-wrap:anywhere}
.card h2{font-size:16px;margin:0 0 6px;word-break:break-all;display:flex;flex-wrap:wrap;gap:6px;
align-items:center}
.badge{display:inline-block;color:#fff;border-radius:4px;padding:2px 10px;font-size:13px;font-weight:600;
min-width:90px;text-align:center;word-break:normal}
.badge.partial{background:#fff;border:2px solid;padding:0 8px}
.judged{font-size:12px;font-weight:600;color:#8a5a00;background:#fff4d6;border-radius:4px;padding:2px 6px;
word-break:normal}
.stats{display:flex;flex-wrap:wrap;gap:2px 14px}
.stats span{color:#555}
.stats b{color:#1d2330}
.findings{margin:8px 0;padding-left:18px}
.fix{color:#555}
.notjudged{color:#8a5a00;font-size:12px;padding-left:18px;margin:4px 0}
.sparks{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:4px 16px;margin-top:6px}
.sparks>div{display:flex;align-items:center;gap:6px;min-width:0}
.sparks .label{flex:0 0 52px;color:#666;font-size:12px}
.sparks .scale{flex:0 0 auto;color:#666;font-size:11px;font-variant-numeric:tabular-nums}
.sparks .span{grid-column:1/-1;color:#888;font-size:11px}
.spark{flex:1 1 auto;min-width:60px;max-width:220px;height:34px}
.strip{flex:1 1 auto;min-width:60px;max-width:220px;height:10px}
.muted,.empty,.more{color:#777}
footer{padding:6px 16px 16px;color:#666;font-size:12px}
.key{margin-right:10px;white-space:nowrap}
.key i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}: queue health</title>
<style>{css}</style>
</head>
<body>
<header><h1>{title}: queue health</h1><div class="summary">{summary}</div></header>
<main>
{cards}
</main>
<footer>{legend}<br>An outlined badge: some conditions could not be judged (the source does not report
what they need); each card lists them. Sparklines span 0 (bottom) to the value written beside them (top).<br>
Updated {updated}; reloads every {refresh} s. Metrics for Prometheus at
<a href="metrics">/metrics</a>.</footer>
</body>
</html>
"""
