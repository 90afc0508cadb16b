"""``qhealth watch``: the sidecar. Watch a queue from outside, judge it, export it.

It reads the broker every interval (see :mod:`qhealth.sidecar` for what each
kind of queue reveals), prints what it sees (:mod:`.watch_output`), and
optionally serves the metric contract on ``/metrics``, exports it over OTLP,
and records a trace. One process watches one queue or many: ``--queue`` may be
repeated or be a pattern, and all the queues are read together, in two
pipelined round trips per tick on Redis. The broker URL's password is never
printed: pass the URL in ``QHEALTH_WATCH_URL`` to keep it off the process list
too.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._log import ThrottledLog
from .._monitor import Listener, Monitor, QueueSnapshot
from .._record import TraceRecorder
from .._sample import TraceHeader
from .._trace import TraceWriter
from . import UsageError
from ._exports import Asked, add_export_arguments, start_exports
from ._options import add_classifier_arguments, config_from_args, writable_file
from .watch_output import WatchOutput

if TYPE_CHECKING:
    from ..sidecar import Sidecar

DEFAULT_URL = "redis://127.0.0.1:6379/0"
URL_ENV = "QHEALTH_WATCH_URL"

_HELP = "watch a queue from outside (sidecar): Redis list/stream, RQ, arq, Celery"

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

Many queues: repeat --queue, or give a shell pattern ('emails-*'), which finds
queues where the framework records them (RQ's queue registry, kombu's bindings
for Celery on Redis, arq's sorted sets and health-check keys, keys of the
type for lists and streams), at start and every minute. All the queues are
read together: two pipelined round trips per tick on Redis, whatever their
number. A queue that cannot be read is reported in one line a minute, and
its metrics are withdrawn until it reads again.

The broker URL comes from --url, else ${URL_ENV}, else {DEFAULT_URL}; its
password is never printed. A Redis Cluster: redis+cluster://HOST:PORT (any
node; rediss+cluster:// with TLS), read with one pipeline per master per round
(not --kind arq, nor --events).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..sidecar import KINDS

    parser = subparsers.add_parser("watch", help=_HELP, description=_DESCRIPTION)
    _add_source_arguments(parser, KINDS)
    add_export_arguments(
        parser, "serve /metrics and the status page / here (e.g. 127.0.0.1:9808; 0.0.0.0:PORT for all)"
    )
    parser.add_argument(
        "--record",
        metavar="FILE",
        help="also write the samples as a trace (JSON Lines); with several queues, a folder of traces",
    )
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
    )
    _add_source_arguments(record, KINDS)
    record.add_argument("-o", "--output", required=True, metavar="FILE", help="the trace file to write")
    record.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    record.set_defaults(handler=_run_record)


def _add_source_arguments(parser: argparse.ArgumentParser, kinds: tuple[str, ...]) -> None:
    parser.add_argument("--kind", required=True, choices=kinds, help="what the queue is")
    parser.add_argument(
        "--queue",
        required=True,
        action="append",
        metavar="NAME",
        help="queue name or key (see above); repeat it for several, or give a pattern (*, ?, [...])",
    )
    parser.add_argument(
        "--max-queues",
        type=int,
        default=None,
        metavar="N",
        help="watch at most this many queues (default: 10000); patterns matching more are cut",
    )
    parser.add_argument("--url", help=f"broker URL (default: ${URL_ENV}, else {DEFAULT_URL})")
    parser.add_argument("--group", help="consumer group (--kind redis-stream)")
    parser.add_argument(
        "--events", action="store_true", help="count Celery task events (--kind celery; workers need -E)"
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="sampling interval (default: 1)"
    )
    add_classifier_arguments(parser)
    parser.add_argument("--capacity", type=int, help="the queue's maximum size, if it is bounded")


def _run_record(args: argparse.Namespace) -> int:
    args.record = args.output
    args.record_option = "--output"
    args.format = "text"
    args.serve = None
    args.otlp = False
    args.otlp_endpoint = args.otlp_protocol = None
    return run(args)


class _Recorder(Listener):
    def __init__(self, writer: TraceWriter) -> None:
        self._writer = writer

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        self._writer.write(snapshot.sample)


def _positive(name: str, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{name} must be a positive number of seconds, got {value}")


def run(args: argparse.Namespace) -> int:
    from ..sidecar import MAX_QUEUES, Sidecar, redact_url, scrub

    _positive("--interval", args.interval)
    _positive("--duration", args.duration)
    if args.capacity is not None and args.capacity <= 0:
        raise UsageError(f"--capacity must be a positive integer, got {args.capacity}")
    max_queues = MAX_QUEUES if args.max_queues is None else args.max_queues
    if max_queues <= 0:
        raise UsageError(f"--max-queues must be a positive integer, got {max_queues}")
    config = config_from_args(args.window, args.set)
    if args.record:
        _check_record(args)
    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    shown_url = redact_url(url)
    monitor = Monitor(interval=args.interval, config=config)
    # The exports start before the broker is touched: a bad or busy --serve address, or
    # the missing OTLP extra, is said at once rather than after connecting.
    try:
        exports = start_exports(monitor, Asked.of(args))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        try:
            sidecar = Sidecar(args.kind, url, group=args.group, events=args.events)
        except (ValueError, ImportError, ConnectionError) as exc:
            # ConnectionError: a Redis Cluster's client asks for the slot map at once.
            raise UsageError(scrub(str(exc), url)) from None
        try:
            names = _start(sidecar, args.queue, max_queues, shown_url)
        except BaseException:
            sidecar.group.close()
            raise
    except BaseException:
        exports.close()
        raise

    out = sys.stdout
    many = len(names) > 1 or _many_asked(args.queue)
    what = (
        f"queue {names[0]!r}"
        if not many
        else f"{len(names)} queues ({', '.join(map(repr, names[:3]))}" + (", ...)" if len(names) > 3 else ")")
    )
    out.write(
        f"watching {args.kind} {what} at {shown_url} every {args.interval:g} s "
        f"(window {config.span_for(args.interval):g} s)\n"
    )
    first = sidecar.group.sources[names[0]]
    for field, why in first.unknown.items():
        out.write(f"  unknown: {field}: {why}\n")
    for name, problem in sorted(sidecar.group.problems.items())[:3]:
        out.write(f"  not read now: {name!r}: {problem}\n")
    out.flush()

    for name, source in sidecar.group.sources.items():
        monitor.watch_source(name, source, capacity=args.capacity)
    group = sidecar.group
    monitor.add_listener(
        WatchOutput(
            out,
            sys.stderr,
            fmt=args.format,
            kind=args.kind,
            where=shown_url,
            many=many,
            why_down=lambda q: group.error or group.problems.get(q) or "no reading",
            watched=lambda: len(group.sources),
            consumers=lambda q: getattr(group.sources.get(q), "consumers", None),
        )
    )
    closers: list[Any] = [exports.close]
    try:
        if args.record:
            closers.append(_start_recording(monitor, args.record, many, names[0], args))
        for kind, where in exports.running:
            out.write(f"{kind} {where}\n")
        out.flush()
        patterns = [q for q in args.queue if _is_pattern(q)]
        if patterns:
            discovery = _Discovery(sidecar, monitor, args.queue, max_queues, args.capacity)
            closers.append(discovery.start().stop)
        _run_until_stopped(monitor, args.duration)
    finally:
        monitor.stop()
        for close in reversed(closers):
            close()
        sidecar.group.close()
    return 0


def _is_pattern(name: str) -> bool:
    from ..sidecar._discover import is_pattern

    return is_pattern(name)


def _names(sidecar: Sidecar, queues: list[str], max_queues: int) -> tuple[list[str], int]:
    """The queues named or matched (in the order given, each once), cut at
    ``max_queues``; and how many matched in all."""
    names: dict[str, None] = {}
    for queue in queues:
        for name in sidecar.discover(queue) if _is_pattern(queue) else [queue]:
            names[name] = None
    return list(names)[:max_queues], len(names)


def _start(sidecar: Sidecar, queues: list[str], max_queues: int, shown_url: str) -> list[str]:
    """Find the queues, read them once, and refuse to start on what cannot work:
    a broker that cannot be read, or a queue named outright that cannot be."""
    from ..brokers._rounds import CannotTell
    from ..sidecar import scrub

    kind, url = sidecar.kind, sidecar.url
    try:
        names, matched = _names(sidecar, queues, max_queues)
    except ValueError as exc:
        raise UsageError(scrub(str(exc), url)) from None
    except Exception as exc:
        why = scrub(" ".join(str(exc).split()), url) or type(exc).__name__
        raise UsageError(f"cannot find {kind} queues at {shown_url}: {why}") from None
    if not names:
        raise UsageError(f"no {kind} queue at {shown_url} matches {', '.join(map(repr, queues))}")
    if matched > len(names):
        print(
            f"qhealth watch: {matched} queues match; watching the first {len(names)} (--max-queues)",
            file=sys.stderr,
        )
    try:
        for name in names:
            sidecar.watch(name)
    except ValueError as exc:
        raise UsageError(scrub(str(exc), url)) from None
    group = sidecar.group
    group.read()
    if group.error is not None:
        what = f"queue {names[0]!r}" if len(names) == 1 else f"{len(names)} queues"
        raise UsageError(f"cannot read {kind} {what} at {shown_url}: {group.error}")
    failed = {
        name: group.problems[name]
        for name, result in group.results.items()
        if isinstance(result, Exception) and not isinstance(result, CannotTell) and name in queues
    }
    if failed:
        name, why = next(iter(failed.items()))
        raise UsageError(f"cannot read {kind} queue {name!r} at {shown_url}: {why}")
    return names


def _many_asked(queues: list[str]) -> bool:
    return len(set(queues)) > 1 or any(_is_pattern(q) for q in queues)


def _check_record(args: argparse.Namespace) -> None:
    """Refuse a recording that could not be written before connecting: one
    queue is recorded into a file, several into a folder of traces."""
    option, path = getattr(args, "record_option", "--record"), Path(args.record)
    if not _many_asked(args.queue):
        writable_file(option, path)
    elif path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: several queues are recorded into a folder, and this is a file")
    elif not path.exists():
        writable_file(option, path)  # the folder is made in a directory that must exist


def _start_recording(monitor: Monitor, path: str, many: bool, queue: str, args: argparse.Namespace) -> Any:
    option = getattr(args, "record_option", "--record")
    try:
        if many:
            recorder = TraceRecorder(path)
            monitor.add_listener(recorder)
            return recorder.close
        writer = TraceWriter(path, TraceHeader(queue, args.interval, args.capacity))
    except OSError as exc:  # checked before starting; a folder that changed since says so in one line
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None
    monitor.add_listener(_Recorder(writer))
    return writer.close


class _Discovery:
    """Finds the queues the patterns match every minute, off the ticker: new
    ones are watched, ones gone from the registry are dropped."""

    EVERY_S = 60.0

    def __init__(
        self, sidecar: Sidecar, monitor: Monitor, queues: list[str], max_queues: int, capacity: int | None
    ) -> None:
        self._sidecar = sidecar
        self._monitor = monitor
        self._queues = queues
        self._max = max_queues
        self._capacity = capacity
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qhealth-discovery", daemon=True)
        self._log = ThrottledLog(interval_s=self.EVERY_S)

    def start(self) -> _Discovery:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.EVERY_S):
            try:
                self.once()
            except Exception as exc:
                from ..sidecar import scrub

                self._log.warning(
                    "discovery",
                    "qhealth watch: finding queues failed (%s); trying again in a minute",
                    scrub(" ".join(str(exc).split()), self._sidecar.url),
                )

    def once(self) -> None:
        names, _ = _names(self._sidecar, self._queues, self._max)
        group = self._sidecar.group
        watched = set(group.sources)
        for name in names:
            if name not in watched and len(group.sources) < self._max:
                self._monitor.watch_source(name, self._sidecar.watch(name), capacity=self._capacity)
        for name in watched - set(names):
            self._monitor.unwatch(name)
            group.remove(name)


def _run_until_stopped(monitor: Monitor, duration: float | None) -> None:
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        monitor.start()
        stop.wait(duration)
    finally:
        signal.signal(signal.SIGTERM, previous)
