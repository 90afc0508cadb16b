"""``qhealth watch``: the sidecar. Watch a queue from outside, judge it, export it.

It reads the broker every interval (see :mod:`qhealth.sidecar` for what each
kind of queue reveals), prints one line per sample, and optionally serves the
metric contract on ``/metrics``, exports it over OTLP, and records a trace. The
broker URL's password is never printed: pass the URL in ``QHEALTH_WATCH_URL``
to keep it off the process list too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from typing import Any, TextIO

from .._classifier import SEVERITY, WARMING_UP, Health
from .._monitor import Listener, Monitor, QueueSnapshot
from .._sample import TraceHeader
from .._source import Source
from .._text import finding_lines
from .._trace import TraceWriter
from . import UsageError
from ._exports import add_export_arguments, start_exports
from .classify import config_from_args

DEFAULT_URL = "redis://127.0.0.1:6379/0"
URL_ENV = "QHEALTH_WATCH_URL"

_DESCRIPTION = f"""\
Watch a queue from outside, with no change to the pool's code: read what the
broker shows every interval, classify the pool (stalled, overflow,
rate_limited, boom_bust, idle), print it, and export it.

kinds (--queue is):
  redis-list     the list's key                      knows: depth
  redis-stream   the stream's key, with --group      knows: depth, consumers, busy,
                                                     enqueued, processed, oldest age
  rq             the RQ queue name                   knows: depth, workers, busy,
                                                     processed, failed, oldest age
  arq            arq's queue key (arq:queue)         knows: depth, busy; processed
                                                     and failed from arq's health check
  celery         the Celery queue name, Redis or     knows: depth; with --events (workers
                 RabbitMQ broker                     run with -E): busy, processed, failed

Every other field is reported unknown, and the conditions that need it are
not judged: the first lines of output say which, and why.

The broker URL comes from --url, else ${URL_ENV}, else {DEFAULT_URL}; its
password is never printed.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..sidecar import KINDS

    parser = subparsers.add_parser(
        "watch",
        help="watch a queue from outside (sidecar): Redis list/stream, RQ, arq, Celery",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_source_arguments(parser, KINDS)
    add_export_arguments(
        parser, "serve /metrics and the status page / here (e.g. 127.0.0.1:9808; 0.0.0.0:PORT for all)"
    )
    parser.add_argument("--record", metavar="FILE", help="also write the samples as a trace (JSON Lines)")
    parser.add_argument(
        "--format", choices=("text", "jsonl"), default="text", help="output (default: %(default)s)"
    )
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    parser.set_defaults(handler=run)

    record = subparsers.add_parser(
        "record",
        help="record a queue watched from outside as a trace (qhealth watch --record)",
        description="Record what `qhealth watch` sees of a queue as a trace file (JSON Lines, "
        "shared/spec/trace-format.md), for `qhealth classify`, `qhealth report` and `qhealth serve`. "
        "It prints the same lines as `qhealth watch`.\n\n" + _DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_source_arguments(record, KINDS)
    record.add_argument("-o", "--output", required=True, metavar="FILE", help="the trace file to write")
    record.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    record.set_defaults(handler=_run_record)


def _add_source_arguments(parser: argparse.ArgumentParser, kinds: tuple[str, ...]) -> None:
    parser.add_argument("--kind", required=True, choices=kinds, help="what the queue is")
    parser.add_argument("--queue", required=True, help="queue name or key (see above)")
    parser.add_argument("--url", help=f"broker URL (default: ${URL_ENV}, else {DEFAULT_URL})")
    parser.add_argument("--group", help="consumer group (--kind redis-stream)")
    parser.add_argument(
        "--events", action="store_true", help="count Celery task events (--kind celery; workers need -E)"
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="sampling interval (default: 1)"
    )
    parser.add_argument("--window", type=float, metavar="SECONDS", help="classifier window (default: 60)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a classifier setting"
    )
    parser.add_argument("--capacity", type=int, help="the queue's maximum size, if it is bounded")


def _run_record(args: argparse.Namespace) -> int:
    args.record = args.output
    args.format = "text"
    args.serve = None
    args.otlp = False
    args.otlp_endpoint = args.otlp_protocol = None
    return run(args)


class _Printer(Listener):
    """Prints each tick: a line of numbers, and the findings when the state changes."""

    def __init__(self, out: TextIO, fmt: str, source: Source) -> None:
        self._out = out
        self._format = fmt
        self._source = source
        self._last_state: str | None = None
        self._lock = threading.Lock()

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        with self._lock:
            if self._format == "jsonl":
                self._out.write(json.dumps(_as_json(snapshot), separators=(",", ":")) + "\n")
            else:
                self._write_text(snapshot)
            self._out.flush()

    def _write_text(self, snapshot: QueueSnapshot) -> None:
        s, health = snapshot.sample, snapshot.health

        def shown(value: float | None) -> str:
            if value is None:
                return "-"
            return f"{value:.1f}" if isinstance(value, float) and not value.is_integer() else f"{value:.0f}"

        line = (
            f"{s.t:8.1f}  depth {shown(s.depth):>6}  workers {shown(s.workers):>3}  busy {shown(s.busy):>3}"
            f"  processed {shown(s.processed_total):>7}  failed {shown(s.failed_total):>6}"
            f"  {health.state}"
        )
        consumers = getattr(self._source, "consumers", None)
        if isinstance(consumers, list) and consumers:
            line += "  idle ms: " + ", ".join(f"{name}={idle}" for name, _, idle in consumers[:8])
        self._out.write(line + "\n")
        if health.state != self._last_state:
            first_verdict = self._last_state in (None, WARMING_UP) and health.state != WARMING_UP
            self._last_state = health.state
            for text in finding_lines(health, indent=10):
                self._out.write(text + "\n")
            if first_verdict:
                for condition, why in health.not_judged.items():
                    self._out.write(f"          not judged: {condition}: {why}\n")


def _as_json(snapshot: QueueSnapshot) -> dict[str, Any]:
    health: Health = snapshot.health
    return {
        "queue": snapshot.queue,
        **snapshot.sample.to_dict(),
        "oldest_age_s": snapshot.oldest_age_s,
        "state": health.state,
        "conditions": [str(c) for c in SEVERITY if c in health.conditions],
        "not_judged": {str(c): why for c, why in health.not_judged.items()},
    }


class _Recorder(Listener):
    def __init__(self, writer: TraceWriter) -> None:
        self._writer = writer

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        self._writer.write(snapshot.sample)


def _positive(name: str, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{name} must be a positive number of seconds, got {value}")


def run(args: argparse.Namespace) -> int:
    from ..sidecar import open_source, redact_url, scrub

    _positive("--interval", args.interval)
    _positive("--duration", args.duration)
    if args.capacity is not None and args.capacity <= 0:
        raise UsageError(f"--capacity must be a positive integer, got {args.capacity}")
    config = config_from_args(args.window, args.set)
    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    shown_url = redact_url(url)
    try:
        source = open_source(args.kind, url, args.queue, group=args.group, events=args.events)
    except (ValueError, ImportError) as exc:
        raise UsageError(scrub(str(exc), url)) from None
    try:
        source.read()
    except Exception as exc:
        _close(source)
        why = scrub(str(exc), url) or type(exc).__name__
        raise UsageError(f"cannot read {args.kind} queue {args.queue!r} at {shown_url}: {why}") from None

    out = sys.stdout
    out.write(
        f"watching {args.kind} queue {args.queue!r} at {shown_url} every {args.interval:g} s "
        f"(window {config.span_for(args.interval):g} s)\n"
    )
    for field, why in source.unknown.items():
        out.write(f"  unknown: {field}: {why}\n")
    out.flush()

    monitor = Monitor(interval=args.interval, config=config)
    monitor.watch_source(args.queue, source, capacity=args.capacity)
    monitor.add_listener(_Printer(out, args.format, source))
    closers: list[Any] = []
    try:
        if args.record:
            writer = TraceWriter(args.record, TraceHeader(args.queue, args.interval, args.capacity))
            closers.append(writer.close)
            monitor.add_listener(_Recorder(writer))
        try:
            exports = start_exports(
                monitor,
                serve=args.serve,
                otlp=args.otlp,
                otlp_endpoint=args.otlp_endpoint,
                otlp_protocol=args.otlp_protocol,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        closers.append(exports.close)
        for kind, where in exports.running:
            out.write(f"{kind} {where}\n")
        out.flush()
        _run_until_stopped(monitor, args.duration)
    finally:
        monitor.stop()
        for close in reversed(closers):
            close()
        _close(source)
    return 0


def _close(source: Source) -> None:
    close = getattr(source, "close", None)
    if callable(close):
        close()


def _run_until_stopped(monitor: Monitor, duration: float | None) -> None:
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        monitor.start()
        stop.wait(duration)
    finally:
        signal.signal(signal.SIGTERM, previous)
