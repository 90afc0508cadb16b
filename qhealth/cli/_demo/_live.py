"""The demo's live terminal view (rich): both pools side by side.

Rendered from the tally (never from the pools themselves) by rich's own
refresh thread, twice a second: the view costs nothing on the pools' event
loop, and what it shows is exactly what qhealth measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from qhealth._colors import STATE_COLORS
from qhealth.conditions import SEVERITY, WARMING_UP, Finding

from ._tally import QueueTally, Tally
from ._text import number, percent, sparkline

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
    from rich.table import Table
    from rich.text import Text

#: Refreshes per second: a few at most, so the view stays cheap.
REFRESH_PER_SECOND = 2


#: Columns from which the pools are drawn side by side; below, one above the other.
SIDE_BY_SIDE = 120
#: The widest label of a panel's left column (a condition's name).
_LABEL = max(len(s) for s in ("workers", "items/s", *(str(c) for c in SEVERITY)))
#: What a panel's border and padding take of its width.
_FRAME = 4


class LiveView:
    """What ``rich.live.Live`` draws: a header line and one panel per pool,
    laid out for the terminal's width at each refresh (side by side when wide,
    one above the other in 80 columns), sparklines as wide as the room they
    have, always ending on the newest sample."""

    def __init__(
        self,
        tally: Tally,
        descriptions: Mapping[str, str],
        header: str,
        duration_s: float,
    ) -> None:
        self._tally = tally
        self._descriptions = descriptions
        self._header = header
        self._duration = duration_s

    def render(self) -> RenderableType:
        return _Frame(self)

    def frame(self, width: int, *, compact: bool = False) -> RenderableType:
        """The view for a terminal ``width`` columns wide; ``compact``: one line
        of numbers per pool instead of sparklines, for a terminal too short."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        tallies = [self._tally.get(q) for q in self._descriptions]
        elapsed = max((t.latest.sample.t for t in tallies if t.latest is not None), default=0.0)
        top = Text.assemble(
            (self._header, "bold"),
            f"   {elapsed:4.0f} s of {self._duration:g} s   (Ctrl-C stops with the summary so far)",
        )
        if width >= SIDE_BY_SIDE:
            panels = Table.grid(expand=True, padding=(0, 1))
            for _ in tallies:
                panels.add_column(ratio=1)
            panel_width = (width - len(tallies) + 1) // len(tallies)
            panels.add_row(*(self._panel(t, panel_width, described=True, compact=compact) for t in tallies))
            return Group(top, panels)
        # Narrow: one pool above the other, without the set-up (printed above the view).
        return Group(top, *(self._panel(t, width, described=False, compact=compact) for t in tallies))

    def _panel(self, tally: QueueTally, width: int, *, described: bool, compact: bool) -> RenderableType:
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        room = max(width - _FRAME - _LABEL - 1, 10)  # the right-hand column
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim", no_wrap=True, width=_LABEL)
        grid.add_column(width=room)
        snapshot = tally.latest
        title = f"[bold]{tally.queue}[/]"
        if described:
            grid.add_row("pool", Text(self._descriptions[tally.queue], style="dim"))
        if snapshot is None:
            grid.add_row("state", "starting")
            return Panel(grid, title=title, title_align="left", width=width)
        sample, health = snapshot.sample, snapshot.health
        color = STATE_COLORS.get(health.state, "white")
        state = Text(health.state, style=f"bold {color}")
        others = [str(c) for c in health.ordered_conditions[1:]]
        if others:
            state.append(f"  (also {', '.join(others)})", style="dim")
        if health.state == WARMING_UP:
            state.append("  (the first window of samples is being collected)", style="dim")
        grid.add_row("state", state)
        rate = tally.throughput[-1] if tally.throughput else 0.0
        busy, workers = sample.busy or 0, sample.workers or 0
        if compact:
            grid.add_row(
                "now",
                Text(
                    f"depth {sample.depth:,}  busy {busy}/{workers}  {rate:.1f} items/s  "
                    f"429s {number(sample.rate_limited_total)} ({percent(health.rate_limited_ratio)})",
                    no_wrap=True,
                    overflow="ellipsis",
                ),
            )
            _findings(grid, health.findings)
            return Panel(grid, title=title, title_align="left", border_style=color, width=width)
        lead = 8  # a number right-aligned in 6 columns, then 2 spaces
        grid.add_row("depth", _line(f"{sample.depth:>6,}  ", sparkline(tally.depths, room - lead)))
        grid.add_row("workers", _workers(busy, max(workers - busy, 0), room))
        grid.add_row("items/s", _line(f"{rate:6.1f}  ", sparkline(tally.throughput, room - lead)))
        grid.add_row(
            "429s",
            f"{number(sample.rate_limited_total)} in all; "
            f"{percent(health.rate_limited_ratio)} of calls in the window",
        )
        _findings(grid, health.findings)
        return Panel(grid, title=title, title_align="left", border_style=color, width=width)


class _Frame:
    """Renders the view for the width rich offers at each refresh."""

    def __init__(self, view: LiveView) -> None:
        self._view = view

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        full = self._view.frame(options.max_width)
        # Taller than the terminal, the bottom would be cut (a fix half shown): trade the sparklines for it.
        lines = console.render_lines(full, options.update(height=None), pad=False)
        yield self._view.frame(options.max_width, compact=True) if len(lines) > options.size.height else full


def _line(lead: str, spark: str) -> Text:
    """A number and its sparkline on one line that never wraps (the sparkline already fits)."""
    from rich.text import Text

    return Text(lead + spark, no_wrap=True, overflow="crop")


def _workers(busy: int, idle: int, room: int) -> Text:
    """Busy and idle counts, and a bar of one block per worker, scaled down to the room there is."""
    from rich.text import Text

    counts = f"{busy:>3} busy {idle:>3} idle  "
    bar = max(room - len(counts), 0)
    total = busy + idle
    if total > bar:
        busy_cells = round(busy / total * bar) if total else 0
        busy, idle = busy_cells, bar - busy_cells
    return Text.assemble(counts, ("█" * busy, "green"), ("░" * idle, "dim"), no_wrap=True, overflow="crop")


def _findings(grid: Table, findings: Sequence[Finding]) -> None:
    from rich.text import Text

    for finding in findings:
        color = STATE_COLORS.get(str(finding.condition), "white")
        grid.add_row(Text(str(finding.condition), style=color), finding.reason)
        grid.add_row("fix", Text(finding.hint, style="italic"))


def rich_summary(rows: Sequence[tuple[str, ...]], headers: Sequence[str]) -> RenderableType:
    """The summary table for a terminal."""
    from rich.table import Table

    table = Table(title="summary", title_justify="left", show_lines=False)
    table.add_column(headers[0])
    for header in headers[1:]:
        table.add_column(header, justify="right")
    for row in rows:
        style = "bold red" if row[0] == "items lost" and any(c != "0" for c in row[1:]) else None
        table.add_row(*row, style=style)
    return table
