"""``qhealth report TRACE -o report.html [--png report.png]``: a trace's story, drawn."""

from __future__ import annotations

import argparse

from . import UsageError
from ._options import add_classifier_arguments, config_from_args

_HELP = "draw a trace and its conditions as HTML (or PNG)"

_DESCRIPTION = """\
Draw a trace (shared/spec/trace-format.md) for people without Grafana: depth
and capacity, throughput, busy and idle workers, and 429s over time, with one
lane per condition of the classifier and, below, each change with its reasons
and the fix.

  -o FILE     a self-contained HTML file (inline SVG, no dependencies)
  --png FILE  the same charts as a PNG image (needs: pip install 'qhealth[report]')
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("report", help=_HELP, description=_DESCRIPTION)
    parser.add_argument("trace", metavar="TRACE", help="trace file (JSON Lines)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the HTML report here")
    parser.add_argument("--png", metavar="FILE", help="write a PNG image here (needs matplotlib)")
    parser.add_argument("--title", help="report title (default: qhealth report: TRACE)")
    add_classifier_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .._trace import TraceError, read_trace
    from ..report import ReportError, Section, check_png, write_html, write_png

    if not args.output and not args.png:
        raise UsageError("say where to write the report: -o report.html and/or --png report.png")
    config = config_from_args(args.window, args.set)
    if args.png:
        try:
            check_png()  # before the HTML is written: nothing, or everything that was asked
        except ReportError as exc:
            raise UsageError(f"--png {args.png}: {exc}") from None
    try:
        sections = [Section.from_trace(read_trace(args.trace), config)]
        if args.output:
            write_html(args.output, sections, args.title or f"qhealth report: {args.trace}")
        if args.png:
            write_png(args.png, sections)
    except (TraceError, ReportError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"{exc.filename or args.output}: {exc.strerror or exc}") from None
    for path in (args.output, args.png):
        if path:
            print(f"wrote {path}")
    return 0
