"""``qhealth demo``: the naive pool and the reference pool, side by side, in memory."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import UsageError
from ._exports import add_export_arguments
from ._options import writable_file

if TYPE_CHECKING:
    from ._demo import Options

#: Bounds that keep a mistyped option from turning the demo into a load test.
MAX_WORKERS = 500
MAX_DURATION_S = 24 * 3600.0

_DESCRIPTION = """\
Run, in memory, a simulated downstream API with a real rate limit (429 with
Retry-After above it) and two pools on the same bursty workload, both
instrumented by qhealth:

  naive      the symptom: workers that sleep a fixed interval, then drain the
             queue, all in step; no rate limiter; 429s retried at once
  reference  src_pool: workers block on the queue; a shared token bucket at
             the API's limit; AIMD concurrency; Retry-After with jitter

A live view shows each pool's depth, busy and idle workers, throughput, 429s
and its condition with the reason and a fix. At the end: a side-by-side
summary, and a report file with plots.

scenarios (--scenario):
{scenarios}

qhealth samples every 0.5 s and judges a 15 s window here (--window), instead
of 1 s and 60 s, so that the story fits in a minute. Recorded traces classify
the same way offline: qhealth classify DIR/naive.jsonl --window 15
--set downstream_limit=LIMIT (the API's limit: the demo states it).

The demo runs on simulated time kept to the wall clock: one seed gives one
run, figures included, however busy the machine.

Exit status: 0; 1 if an item was lost (a bug); 130 when stopped by Ctrl-C
(after printing the summary so far); 2 on bad options.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ._demo import DEFAULT_SCENARIO, SCENARIOS, WINDOW_S
    from ._demo._main import DEFAULT_REPORT

    listing = "\n".join(f"  {name:<12}{s.title}" for name, s in SCENARIOS.items())
    parser = subparsers.add_parser(
        "demo",
        help="the problem and the fix side by side: a naive pool and src_pool against a rate-limited API",
        description=_DESCRIPTION.format(scenarios=listing),
    )
    parser.add_argument(
        "--scenario", choices=list(SCENARIOS), default=DEFAULT_SCENARIO, help="default: %(default)s"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to run (default: %(default)g)",
    )
    parser.add_argument("--workers", type=int, default=10, help="workers in each pool (default: %(default)s)")
    parser.add_argument(
        "--rate-limit",
        type=float,
        metavar="CALLS_PER_S",
        help="the API's rate limit (default: the scenario's)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=7,
        help="the workload's random seed: one seed gives one run, figures included (default: %(default)s)",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=WINDOW_S,
        metavar="SECONDS",
        help="classifier window (default: %(default)g; at least 4 s: 8 samples)",
    )
    parser.add_argument("--no-live", action="store_true", help="plain log lines instead of the live view")
    parser.add_argument("--record", metavar="DIR", help="write both pools' traces into DIR")
    parser.add_argument(
        "--report",
        metavar="FILE",
        default=str(DEFAULT_REPORT),
        help="the HTML report with plots (default: %(default)s)",
    )
    parser.add_argument("--no-report", action="store_true", help="write no report")
    add_export_arguments(
        parser, "serve /metrics and the status page / here while the demo runs (e.g. 127.0.0.1:9808)"
    )
    parser.set_defaults(handler=run)


def _positive(option: str, value: float, limit: float = math.inf) -> None:
    if not (value > 0 and math.isfinite(value)) or value > limit:
        bound = f" and at most {limit:g}" if math.isfinite(limit) else ""
        raise UsageError(f"{option} must be a positive number{bound}, got {value:g}")


def options_from(args: argparse.Namespace) -> Options:
    """The demo's options from the command line, checked (UsageError names a bad one)."""
    from ._demo import SCENARIOS, Options, Settings
    from ._demo._main import INTERVAL_S

    _positive("--duration", args.duration, MAX_DURATION_S)
    if not 1 <= args.workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be between 1 and {MAX_WORKERS}, got {args.workers}")
    if args.rate_limit is not None:
        _positive("--rate-limit", args.rate_limit)
    _positive("--window", args.window)
    if not args.no_report:
        writable_file("--report", Path(args.report))
    if args.window < 8 * INTERVAL_S:
        raise UsageError(f"--window must be at least {8 * INTERVAL_S:g} s (8 samples), got {args.window:g}")
    return Options(
        settings=Settings(
            SCENARIOS[args.scenario],
            duration_s=args.duration,
            workers=args.workers,
            rate_limit=args.rate_limit,
            seed=args.seed,
        ),
        window_s=args.window,
        live=not args.no_live,
        record=Path(args.record) if args.record else None,
        report=None if args.no_report else Path(args.report),
        serve=args.serve,
        otlp=args.otlp,
        otlp_endpoint=args.otlp_endpoint,
        otlp_protocol=args.otlp_protocol,
    )


def run(args: argparse.Namespace) -> int:
    from ._demo import DemoError, print_summary, run_demo

    options = options_from(args)
    out = sys.stdout
    try:
        outcome = run_demo(options, out)
    except DemoError as exc:
        raise UsageError(str(exc)) from None
    print_summary(outcome, options, out)
    if outcome.lost:
        return 1
    return 130 if outcome.interrupted else 0
