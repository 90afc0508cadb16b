"""The demo's live terminal view (rich): both pools side by side.

Rendered from the tally (never from the pools themselves) by rich's own
refresh thread, twice a second: the view costs nothing on the pools' event
loop, and what it shows is exactly what qhealth measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from qhealth import WARMING_UP, Finding
from qhealth._colors import STATE_COLORS

from ._tally import QueueTally, Tally
from ._text import number, percent, sparkline

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

#: Refreshes per second: a few at most, so the view stays cheap.
REFRESH_PER_SECOND = 2


class LiveView:
    """What ``rich.live.Live`` draws: a header line and one panel per pool."""

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
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        tallies = [self._tally.get(q) for q in self._descriptions]
        elapsed = max((t.latest.sample.t for t in tallies if t.latest is not None), default=0.0)
        top = Text.assemble(
            (self._header, "bold"),
            f"   {elapsed:4.0f} s of {self._duration:g} s   (Ctrl-C stops with the summary so far)",
        )
        panels = Table.grid(expand=True, padding=(0, 1))
        for _ in tallies:
            panels.add_column(ratio=1)
        panels.add_row(*(self._panel(t) for t in tallies))
        return Group(top, panels)

    def _panel(self, tally: QueueTally) -> RenderableType:
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column()
        snapshot = tally.latest
        title = f"[bold]{tally.queue}[/]"
        grid.add_row("pool", Text(self._descriptions[tally.queue], style="dim"))
        if snapshot is None:
            grid.add_row("state", "starting")
            return Panel(grid, title=title, title_align="left")
        sample, health = snapshot.sample, snapshot.health
        color = STATE_COLORS.get(health.state, "white")
        state = Text(health.state, style=f"bold {color}")
        others = [str(c) for c in health.ordered_conditions[1:]]
        if others:
            state.append(f"  (also {', '.join(others)})", style="dim")
        if health.state == WARMING_UP:
            state.append("  (the first window of samples is being collected)", style="dim")
        grid.add_row("state", state)
        grid.add_row("depth", f"{sample.depth:>5,}  {sparkline(tally.depths)}")
        busy, workers = sample.busy or 0, sample.workers or 0
        grid.add_row(
            "workers",
            Text.assemble(
                f"{busy:>2} busy {max(workers - busy, 0):>2} idle  ",
                ("█" * min(busy, 40), "green"),
                ("░" * min(max(workers - busy, 0), 40), "dim"),
            ),
        )
        rate = tally.throughput[-1] if tally.throughput else 0.0
        grid.add_row("items/s", f"{rate:5.1f}  {sparkline(tally.throughput)}")
        grid.add_row(
            "429s",
            f"{number(sample.rate_limited_total)} in all; "
            f"{percent(health.rate_limited_ratio)} of calls in the window",
        )
        _findings(grid, health.findings)
        return Panel(grid, title=title, title_align="left", border_style=color)


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
