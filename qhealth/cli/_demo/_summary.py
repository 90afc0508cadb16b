"""The side-by-side summary: the same measures for both pools, in one table.

:func:`summary_rows` computes the rows once; :func:`plain_table` prints them
for logs and CI, and the live view prints them with rich. Every number comes
from what qhealth measured (the tallies of the monitor's snapshots), except
the item accounting, which comes from the items themselves (by id).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

from qhealth.conditions import SEVERITY, WARMING_UP

from ._run import QUEUES, Account
from ._tally import BIN_S, QueueTally
from ._text import number, percent

Row = tuple[str, ...]
"""A label, then one cell per pool."""


def _time_in(tally: QueueTally, key: str) -> str:
    seconds = tally.time_in.get(key, 0.0)
    if not tally.seconds:
        return "-"
    return f"{seconds:.0f} s ({percent(seconds / tally.seconds)})"


def _time_in_cell(tally: QueueTally, queue: str, *, key: str) -> str:
    return _time_in(tally, key)


def summary_rows(
    tallies: Mapping[str, QueueTally],
    accounts: Mapping[str, Account] | None,
    queues: Sequence[str] = QUEUES,
) -> list[Row]:
    """The rows of the summary table, one cell per queue in ``queues``."""
    columns = [tallies[q] for q in queues]
    rows: list[Row] = []

    def row(label: str, cell: Callable[[QueueTally, str], str]) -> None:
        rows.append((label, *(cell(t, q) for t, q in zip(columns, queues, strict=True))))

    def latest(t: QueueTally, name: str) -> float | int | None:
        return getattr(t.latest.sample, name) if t.latest is not None else None

    def ratio(t: QueueTally) -> str:
        calls, limited = latest(t, "attempts_total"), latest(t, "rate_limited_total")
        if not calls or limited is None:
            return number(limited)
        return f"{limited:,} ({percent(limited / calls)} of calls)"

    row("downstream calls", lambda t, q: number(latest(t, "attempts_total")))
    row("429s", lambda t, q: ratio(t))
    row("idle worker-s while items waited", lambda t, q: number(t.idle_waiting_s, 0))
    row("idle worker-s in all", lambda t, q: number(latest(t, "idle_s_total"), 0))
    row("throughput, items/s (mean)", lambda t, q: number(t.throughput_mean, 1))
    row(f"throughput variation (CV per {BIN_S:g} s)", lambda t, q: number(t.throughput_cv, 2))
    row(f"arrivals variation (CV per {BIN_S:g} s)", lambda t, q: number(t.arrivals_cv, 2))
    row("max depth", lambda t, q: number(t.max_depth))
    seen = {c for t in columns for c in t.conditions_seen}
    row("time warming up", lambda t, q: _time_in(t, WARMING_UP))
    row("time healthy", lambda t, q: _time_in(t, "healthy"))
    for condition in (str(c) for c in SEVERITY if str(c) in seen):
        row(f"time {condition}", functools.partial(_time_in_cell, key=condition))
    if accounts is not None:
        row("items submitted", lambda t, q: number(accounts[q].submitted))
        row("items served", lambda t, q: number(accounts[q].served))
        row("items dead-lettered", lambda t, q: number(accounts[q].dead_lettered))
        row("items still queued at the end", lambda t, q: number(accounts[q].remaining))
        row("items served twice", lambda t, q: number(accounts[q].served_twice))
        row("items lost", lambda t, q: number(accounts[q].lost))
    return rows


def plain_table(rows: Sequence[Row], headers: Sequence[str]) -> str:
    """Rows as aligned plain text: the label left, the cells right-aligned."""
    widths = [max(len(r[i]) for r in [tuple(headers), *rows]) for i in range(len(headers))]
    lines = []
    for r in [tuple(headers), *rows]:
        cells = [r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
