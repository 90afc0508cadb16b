"""``qhealth classify TRACE``: judge a recorded trace offline."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import TextIO, cast

from .._classifier import SEVERITY, WARMING_UP, Classifier, Condition, Health
from .._config import ClassifierConfig
from .._sample import Sample, TraceHeader
from .._text import finding_lines, printable
from .._trace import TraceError, iter_trace
from . import UsageError
from ._options import add_classifier_arguments, config_from_args

_HELP = "classify a recorded trace offline"

_DESCRIPTION = """\
Classify every sample of a trace (shared/spec/trace-format.md) on the sliding
window that ends at it: stalled, overflow, rate_limited, boom_bust, idle, or
healthy.

  --format jsonl   one object per sample: {"t": .., "state": .., "conditions": [..]}
  --format table   a timeline of condition changes with reasons and fix hints
                   (the default), then the time spent in each state
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("classify", help=_HELP, description=_DESCRIPTION)
    parser.add_argument("trace", metavar="TRACE", help="trace file (JSON Lines), or - for standard input")
    parser.add_argument(
        "--format", choices=("table", "jsonl"), default="table", help="output format (default: %(default)s)"
    )
    add_classifier_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args.window, args.set)
    if args.trace == "-":
        stream: TextIO = sys.stdin
    else:
        try:
            stream = open(args.trace, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"{args.trace}: {exc.strerror or exc}") from None
    source = "<stdin>" if args.trace == "-" else args.trace
    try:
        whole = True
        if not stream.seekable():  # a pipe: kept aside to be read twice, up to a bound
            stream, whole = _kept_aside(stream)
        if whole:
            # The whole trace is checked first: bad input prints its one error line and nothing else.
            start = stream.tell()
            for _ in iter_trace(stream, source):
                pass
            stream.seek(start)
        return _classify_stream(stream, source, args.format, config)
    except TraceError as exc:
        raise UsageError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{args.trace}: not UTF-8 text ({exc.reason})") from None
    finally:
        if stream is not sys.stdin:
            stream.close()


#: Characters of a piped trace kept aside (in memory up to 8 MB, then on disk) so that it can be checked
#: whole before anything is printed. Beyond, the rest streams unchecked: rows may come before an error.
KEPT_ASIDE = 256 << 20


def _kept_aside(pipe: TextIO) -> tuple[TextIO, bool]:
    """A copy of the pipe's text (True: all of it), or the first :data:`KEPT_ASIDE`
    characters followed by the rest of the pipe (False)."""
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+", encoding="utf-8")  # noqa: SIM115
    copy = cast(TextIO, spool)
    kept = 0
    while kept < KEPT_ASIDE:
        chunk = pipe.read(min(1 << 20, KEPT_ASIDE - kept))
        if not chunk:
            copy.seek(0)
            return copy, True
        copy.write(chunk)
        kept += len(chunk)
    copy.seek(0)
    return cast(TextIO, _Joined(copy, pipe)), False


class _Joined:
    """Lines read from ``first`` to its end, then from ``second`` (a line cut in two joined)."""

    def __init__(self, first: TextIO, second: TextIO) -> None:
        self._first, self._second = first, second
        self._first_done = False

    def readline(self, size: int = -1) -> str:
        if self._first_done:
            return self._second.readline(size)
        line = self._first.readline(size)
        if line.endswith("\n") or (size >= 0 and len(line) >= size):
            return line
        self._first_done = True
        left = -1 if size < 0 else size - len(line)
        return line + (self._second.readline(left) if left != 0 else "")

    def close(self) -> None:
        self._first.close()


def _classify_stream(stream: TextIO, source: str, fmt: str, config: ClassifierConfig) -> int:
    items = iter_trace(stream, source)
    header = next(items)
    assert isinstance(header, TraceHeader)
    classifier = Classifier(header.interval_s, config, header.capacity)
    out = sys.stdout
    if fmt == "jsonl":
        for sample in items:
            assert isinstance(sample, Sample)
            out.write(json.dumps(classifier.update(sample).to_json()) + "\n")
        return 0
    table = _Table(header, classifier.window.span_s, out)
    for sample in items:
        assert isinstance(sample, Sample)
        table.add(classifier.update(sample))
    table.finish()
    return 0


class _Table:
    """A timeline of state changes: one block per change, then a summary."""

    def __init__(self, header: TraceHeader, span_s: float, out: TextIO) -> None:
        self.header = header
        self.out = out
        self.previous: Health | None = None
        self.time_in: dict[str, float] = {}
        self.last_t: float | None = None
        self.count = 0
        self.not_judged: dict[Condition, str] = {}
        self.span_s = span_s
        self.started = False

    def _start(self) -> None:
        """The table's head, written with its first row (never before a bad first sample)."""
        self.started = True
        header = self.header
        capacity = f"capacity {header.capacity:,}" if header.capacity else "unbounded"
        self.out.write(
            f"queue {printable(header.queue)}: sampled every {header.interval_s:g} s, {capacity}, "
            f"window {self.span_s:g} s\n\n"
        )
        self.out.write(f"{'t (s)':>9}  {'state':<13} conditions\n")

    def add(self, health: Health) -> None:
        if not self.started:
            self._start()
        if self.last_t is not None and self.previous is not None:
            state = self.previous.state
            self.time_in[state] = self.time_in.get(state, 0.0) + health.t - self.last_t
        self.last_t = health.t
        self.count += 1
        for condition, why in health.not_judged.items():
            self.not_judged.setdefault(condition, why)
        if (
            self.previous is None
            or health.conditions != self.previous.conditions
            or (health.state != self.previous.state)
        ):
            conditions = ", ".join(health.ordered_conditions) or "-"
            self.out.write(f"{health.t:>9.1f}  {health.state:<13} {conditions}\n")
            for line in finding_lines(health, indent=13):
                self.out.write(line + "\n")
        self.previous = health

    def finish(self) -> None:
        if not self.started:
            self._start()
        out = self.out
        total = sum(self.time_in.values())
        out.write(f"\n{self.count} samples")
        if total > 0:
            shares = ", ".join(
                f"{state} {seconds / total:.0%}"
                for state, seconds in sorted(self.time_in.items(), key=lambda kv: -kv[1])
            )
            out.write(f"; time in each state: {shares}")
        out.write("\n")
        judged_after_warmup = self.previous is not None and self.previous.state != WARMING_UP
        for condition in SEVERITY:
            if condition in self.not_judged:
                out.write(f"not judged: {condition}: {self.not_judged[condition]}\n")
        if not judged_after_warmup:
            out.write("the trace is shorter than one window: nothing could be judged\n")
