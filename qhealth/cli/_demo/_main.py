"""One demo run, end to end: set up, run, stop, account, report, summarise.

Everything optional around the two pools lives here: the views, the trace
recording, the ``/metrics`` server, OTLP, the report. The pools themselves are
in :mod:`._run`. Ctrl-C (SIGINT) or SIGTERM stops the run early: the pools
are stopped the same way as at the end of the duration, and the summary of
what ran so far is printed; a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from qhealth import ClassifierConfig, Monitor, TraceRecorder, read_trace
from qhealth.cli._exports import Asked, start_exports

from ._clock import SimulatedTime
from ._clock import run as run_simulated
from ._log_view import LogView
from ._run import NAIVE, QUEUES, REFERENCE, Account, Settings, run_pools
from ._summary import plain_table, summary_rows
from ._tally import QueueTally, Tally

#: The demo's sampling interval and classifier window: shorter than the
#: defaults (1 s, 60 s) so that a run fits in about a minute. The window stays
#: well above the classifier's minimum of 8 intervals.
INTERVAL_S = 0.5
WINDOW_S = 15.0
DEFAULT_REPORT = Path("qhealth-demo-report.html")


class DemoError(ValueError):
    """The demo cannot start as asked (a bad option, a port in use, a missing extra)."""


@dataclass(frozen=True, slots=True)
class Options:
    settings: Settings
    window_s: float = WINDOW_S
    live: bool = True
    record: Path | None = None
    """Directory for both pools' traces (kept); None: traces go to a temporary directory."""
    report: Path | None = DEFAULT_REPORT
    serve: str | None = None
    otlp: bool = False
    otlp_endpoint: str | None = None
    otlp_protocol: str | None = None
    paced: bool = True
    """Simulated time kept to the wall clock (a 60 s demo takes a minute); False
    runs it as fast as the machine can, with the same results (tests)."""

    @property
    def config(self) -> ClassifierConfig:
        # The API's limit is known here: a pool that calls at it is told that
        # more workers cannot help, even when its own limiter avoids every 429.
        return ClassifierConfig(window_s=self.window_s, downstream_limit=self.settings.limit)


@dataclass
class Outcome:
    """What a run produced."""

    accounts: dict[str, Account]
    tallies: dict[str, QueueTally]
    interrupted: bool
    traces: dict[str, Path] = field(default_factory=dict)
    """Recorded traces (only with ``Options.record``)."""
    report: Path | None = None
    report_error: str | None = None

    @property
    def lost(self) -> int:
        return sum(a.lost for a in self.accounts.values())


def descriptions(settings: Settings) -> dict[str, str]:
    scenario, workers = settings.scenario, settings.workers
    return {
        NAIVE: (
            f"{workers} workers polling every {scenario.poll_interval_s:g} s in step, "
            "no rate limiter, 429s retried at once"
        ),
        REFERENCE: (
            f"src_pool: {workers} workers blocking on the queue, token bucket at {settings.limit:g} calls/s, "
            "AIMD concurrency, Retry-After with jitter"
        ),
    }


def intro(options: Options) -> list[str]:
    """What the reader is about to see, and how it is set up."""
    s = options.settings
    sc, w = s.scenario, s.scenario.workload
    bursts = f" plus bursts of {w.burst_size} about every {w.burst_every_s:g} s" if w.burst_size else ""
    described = descriptions(s)
    return [
        f"qhealth demo: scenario {sc.name}: {sc.title}",
        f"  workload   {w.rate:g} items/s (Poisson){bursts}; the same items at the same instants "
        f"for both pools (seed {s.seed})",
        f"  API        {s.limit:g} calls/s, {sc.latency_s:g} s per call; above the limit it answers 429 with "
        "Retry-After (each pool calls its own copy)",
        f"  naive      {described[NAIVE]}",
        f"  reference  {described[REFERENCE]}",
        f"  qhealth    samples every {INTERVAL_S:g} s and judges a {options.window_s:g} s window "
        "(the defaults are 1 s and 60 s: shortened so the demo fits in a minute); "
        f"the first verdict comes after {options.window_s:g} s",
        f"  running {s.duration_s:g} s; Ctrl-C stops early with the summary so far",
    ]


def _start_exports(options: Options, monitor: Monitor) -> tuple[list[Callable[[], object]], list[str]]:
    """The ``/metrics`` server and OTLP export, if asked: their closers, and lines saying where they are."""
    try:
        exports = start_exports(monitor, Asked.of(options))
    except ValueError as exc:
        raise DemoError(str(exc)) from None
    lines = []
    for kind, where in exports.running:
        if kind == "serving":
            lines.append(f"  serving    {where}/metrics for Prometheus, and a status page at {where}/")
        else:
            lines.append(f"  exporting  {where}")
    return [exports.close], lines


def _run_loop(settings: Settings, monitor: Monitor, clock: SimulatedTime) -> tuple[dict[str, Account], bool]:
    """Run the pools on a new event loop on ``clock``: the accounts, and whether a signal stopped them."""
    interrupted = False

    async def main() -> dict[str, Account]:
        nonlocal interrupted
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        handled: list[signal.Signals] = []

        def on_signal() -> None:
            nonlocal interrupted
            interrupted = True
            stop.set()
            for sig in handled:  # a second Ctrl-C interrupts at once
                loop.remove_signal_handler(sig)

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
                handled.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
                pass
        try:
            return await run_pools(settings, monitor, stop)
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    accounts: dict[str, Account] = run_simulated(main(), clock)
    return accounts, interrupted


def _write_report(options: Options, traces: dict[str, Path]) -> tuple[Path | None, str | None]:
    """The report file (HTML with plots) from both pools' traces: one call."""
    if options.report is None:
        return None, None
    from qhealth.report import ReportError, Section, write_html

    try:
        sections = [Section.from_trace(read_trace(traces[q]), options.config) for q in QUEUES]
        s = options.settings
        write_html(
            options.report,
            sections,
            title=f"qhealth demo: {s.scenario.name}, {s.workers} workers, API limit {s.limit:g} calls/s",
        )
    except (ReportError, OSError, ValueError) as exc:
        return None, str(exc)
    return options.report, None


def run_demo(options: Options, out: TextIO) -> Outcome:
    """Run the demo, printing to ``out``; returns what it measured."""
    settings = options.settings
    clock = SimulatedTime(paced=options.paced)
    monitor = Monitor(interval=INTERVAL_S, config=options.config, clock=clock)
    tally = Tally()
    monitor.add_listener(tally)
    scratch: tempfile.TemporaryDirectory[str] | None = None
    if options.record is None:  # the report still needs traces: keep them until it is written
        scratch = tempfile.TemporaryDirectory(prefix="qhealth-demo-")
        trace_dir = Path(scratch.name)
    else:
        trace_dir = options.record
    try:
        try:
            recorder = TraceRecorder(trace_dir)
        except OSError as exc:
            raise DemoError(f"--record {trace_dir}: {exc.strerror or exc}") from None
        monitor.add_listener(recorder)
        closers, where = _start_exports(options, monitor)
        out.write("\n".join([*intro(options), *where]) + "\n")
        out.flush()
        try:
            if options.live:
                accounts, interrupted = _run_live(options, monitor, tally, out, clock)
            else:
                monitor.add_listener(LogView(out))
                accounts, interrupted = _run_loop(settings, monitor, clock)
        finally:
            monitor.stop()
            recorder.close()
            for close in reversed(closers):
                close()
        traces = {q: recorder.path_of(q) for q in QUEUES}
        report, report_error = _write_report(options, traces)
        return Outcome(
            accounts=accounts,
            tallies={q: tally.get(q) for q in QUEUES},
            interrupted=interrupted,
            traces=traces if options.record is not None else {},
            report=report,
            report_error=report_error,
        )
    finally:
        if scratch is not None:
            scratch.cleanup()


def _run_live(
    options: Options, monitor: Monitor, tally: Tally, out: TextIO, clock: SimulatedTime
) -> tuple[dict[str, Account], bool]:
    from rich.console import Console
    from rich.live import Live

    from ._live import REFRESH_PER_SECOND, LiveView

    settings = options.settings
    view = LiveView(tally, descriptions(settings), f"scenario {settings.scenario.name}", settings.duration_s)
    console = Console(file=out)
    with Live(get_renderable=view.render, console=console, refresh_per_second=REFRESH_PER_SECOND):
        return _run_loop(settings, monitor, clock)


def print_summary(outcome: Outcome, options: Options, out: TextIO) -> None:
    """The side-by-side table, then where the traces and the report are."""
    rows = summary_rows(outcome.tallies, outcome.accounts)
    headers = ("", *QUEUES)
    if outcome.interrupted:
        seconds = max((t.latest.sample.t for t in outcome.tallies.values() if t.latest), default=0.0)
        out.write(f"\nstopped after {seconds:.0f} s: the summary so far\n")
    if options.live:
        from rich.console import Console

        from ._live import rich_summary

        console = Console(file=out)
        console.print()
        console.print(rich_summary(rows, headers))
    else:
        out.write("\n" + plain_table(rows, headers) + "\n")
    notes: list[str] = []
    if outcome.lost:
        notes.append(
            f"ITEMS LOST: {outcome.lost} (a bug: every item must be served, dead-lettered or queued)"
        )
    for queue, path in outcome.traces.items():
        notes.append(
            f"trace of {queue}: {path}  (qhealth classify {path} --window {options.window_s:g} "
            f"--set downstream_limit={options.settings.limit:g})"
        )
    if outcome.report is not None:
        notes.append(f"report: {outcome.report}")
    elif outcome.report_error is not None:
        notes.append(f"report: not written: {outcome.report_error}")
    if notes:
        out.write("\n" + "\n".join(notes) + "\n")
    out.flush()
